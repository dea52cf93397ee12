//! PostgreSQL: publishing and the event and delivery log (`store::EventLog`).

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::model::{EndpointId, Millis};
use crate::store::rules::NOT_PURGED;
use crate::store::{
    Attempt, Delivery, DeliveryFilter, DeliveryStatus, Event, EventLog, Lease, Listed, NewEvent,
    Page, Published, ReplayFilter, Result, StoreError,
    rows::{cursor, paginate},
    rules,
};

use super::{
    ATTEMPT_COLS, DELIVERY_COLS, EVENT_COLS, PostgresStore, attempt_row, delivery_row, event_row,
    fetch, publish, rows,
};

#[async_trait]
impl EventLog for PostgresStore {
    async fn publish(&self, ev: NewEvent, lease: Lease) -> Result<Published> {
        // Stored by the group-commit task (`publish::run_publisher`): this publish and the
        // others of the moment in one transaction, answered after its commit. What it stores
        // was decided from the endpoint rows as read for its batch: as if published then.
        let (reply, answer) = oneshot::channel();
        self.publisher
            .send(publish::PublishRequest {
                event: ev,
                lease,
                reply,
            })
            .map_err(|_| StoreError::Backend("the publisher has stopped".into()))?;
        let stored = answer
            .await
            .map_err(|_| StoreError::Backend("the publisher has stopped".into()))??;
        let (ev, lease, deliveries) = match stored {
            publish::Stored::New {
                event,
                lease,
                deliveries,
            } => (event, lease, deliveries),
            publish::Stored::Taken(event) => {
                // The idempotency key is taken (possibly by another node a moment ago, whose
                // insert this one waited for): answer with what it stored.
                let c = self.conn().await?;
                return self.repeated(&c, event).await;
            }
        };
        // A job's `row` is its delivery's partition key, so that records and releases
        // reach its partition directly.
        let created_at = ev.created_at;
        Ok(crate::store::published(ev, &lease, deliveries, |_| {
            Some(created_at)
        }))
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE id = $1 AND tenant_id = $2"
            ))
            .await?;
        match c.query_opt(&stmt, &[&id, &tenant_id]).await? {
            Some(r) => Ok(Some(event_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn list_events(
        &self,
        tenant_id: &str,
        name: Option<&str>,
        page: Page,
    ) -> Result<Listed<Event>> {
        let c = self.conn().await?;
        let found = match name {
            Some(name) => {
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM events
                         WHERE tenant_id = $1 AND name = $2 AND seq < $3
                         ORDER BY seq DESC LIMIT $4"
                    ))
                    .await?;
                c.query(&stmt, &[&tenant_id, &name, &cursor(page), &fetch(page)])
                    .await?
            }
            None => {
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM events WHERE tenant_id = $1 AND seq < $2
                         ORDER BY seq DESC LIMIT $3"
                    ))
                    .await?;
                c.query(&stmt, &[&tenant_id, &cursor(page), &fetch(page)])
                    .await?
            }
        };
        Ok(paginate(rows(&found, event_row)?, page.limit))
    }

    async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<Delivery>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = $1 AND tenant_id = $2"
            ))
            .await?;
        match c.query_opt(&stmt, &[&id, &tenant_id]).await? {
            Some(r) => Ok(Some(delivery_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
        page: Page,
    ) -> Result<Listed<Delivery>> {
        let c = self.conn().await?;
        // Optional filters as `($n IS NULL OR col = $n)` keep one prepared statement.
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries
                 WHERE tenant_id = $1 AND seq < $2
                   AND ($3::text IS NULL OR status = $3::text)
                   AND ($4::text IS NULL OR endpoint_id = $4::text)
                   AND ($5::text IS NULL OR event_id = $5::text)
                   AND ($7::text IS NULL OR event_name = $7::text)
                   AND ($8::bigint IS NULL OR created_at >= $8::bigint)
                   AND ($9::bigint IS NULL OR created_at < $9::bigint)
                 ORDER BY seq DESC LIMIT $6"
            ))
            .await?;
        let found = c
            .query(
                &stmt,
                &[
                    &tenant_id,
                    &cursor(page),
                    &filter.status.map(DeliveryStatus::as_str),
                    &filter.endpoint_id,
                    &filter.event_id,
                    &fetch(page),
                    &filter.event_name,
                    &filter.since,
                    &filter.until,
                ],
            )
            .await?;
        Ok(paginate(rows(&found, delivery_row)?, page.limit))
    }

    async fn list_attempts(&self, delivery_id: &str, page: Page) -> Result<Listed<Attempt>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = $1 AND seq < $2
                 ORDER BY seq DESC LIMIT $3"
            ))
            .await?;
        let found = c
            .query(&stmt, &[&delivery_id, &cursor(page), &fetch(page)])
            .await?;
        Ok(paginate(rows(&found, attempt_row)?, page.limit))
    }

    async fn retry_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let update = tx
            .prepare_cached(&format!(
                "UPDATE deliveries SET status = 'pending', cycle_failures = 0,
                     next_attempt_at = $1, updated_at = $1, transformed = NULL
                 WHERE id = $2 AND tenant_id = $3
                   AND (leased_until IS NULL OR leased_until <= {})
                   AND {NOT_PURGED}
                 RETURNING {DELIVERY_COLS}",
                db_now!()
            ))
            .await?;
        let Some(row) = tx.query_opt(&update, &[&now, &id, &tenant_id]).await? else {
            let exists = tx
                .prepare_cached(&format!(
                    "SELECT NOT {NOT_PURGED} FROM deliveries WHERE id = $1 AND tenant_id = $2"
                ))
                .await?;
            return match tx.query_opt(&exists, &[&id, &tenant_id]).await? {
                None => Err(StoreError::NotFound),
                Some(row) if row.try_get::<_, bool>(0)? => {
                    Err(StoreError::Conflict(rules::PURGED.into()))
                }
                Some(_) => Err(StoreError::Conflict(
                    "the delivery is being attempted right now".into(),
                )),
            };
        };
        let delivery = delivery_row(&row)?.0;
        // Other nodes may be the ones with room for this endpoint: wake them on commit.
        let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        tx.execute(&notify, &[&self.channel, &delivery.endpoint_id])
            .await?;
        tx.commit().await?;
        Ok(delivery)
    }

    async fn pending_head(&self, endpoint_id: &str) -> Result<Option<Delivery>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries
                 WHERE endpoint_id = $1 AND status = 'pending' ORDER BY seq LIMIT 1"
            ))
            .await?;
        match c.query_opt(&stmt, &[&endpoint_id]).await? {
            Some(r) => Ok(Some(delivery_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn skip_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let update = tx
            .prepare_cached(&format!(
                "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL,
                     updated_at = $1
                 WHERE id = $2 AND tenant_id = $3 AND status = 'pending'
                   AND (leased_until IS NULL OR leased_until <= {})
                 RETURNING {DELIVERY_COLS}",
                db_now!()
            ))
            .await?;
        if let Some(row) = tx.query_opt(&update, &[&now, &id, &tenant_id]).await? {
            let delivery = delivery_row(&row)?.0;
            // An ordered endpoint's head moved on: whichever node serves it may claim the next.
            let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
            tx.execute(&notify, &[&self.channel, &delivery.endpoint_id])
                .await?;
            tx.commit().await?;
            return Ok(delivery);
        }
        let current = tx
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = $1 AND tenant_id = $2"
            ))
            .await?;
        match tx.query_opt(&current, &[&id, &tenant_id]).await? {
            None => Err(StoreError::NotFound),
            Some(row) => {
                let d = delivery_row(&row)?.0;
                Err(StoreError::Conflict(format!(
                    "only a pending delivery that is not being attempted can be skipped; \
                     this one is {}",
                    if d.status == DeliveryStatus::Pending {
                        "in flight"
                    } else {
                        d.status.as_str()
                    }
                )))
            }
        }
    }

    async fn replay(
        &self,
        tenant_id: &str,
        filter: &ReplayFilter,
        now: Millis,
        limit: u32,
        dry_run: bool,
    ) -> Result<(u64, Vec<EndpointId>)> {
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        // Replaying a delivery that is being attempted would race its record: skip those.
        let where_ = format!(
            "tenant_id = $1 AND status = ANY($2::text[])
               AND ($3::text IS NULL OR endpoint_id = $3::text)
               AND ($4::text IS NULL OR event_name = $4::text)
               AND ($5::bigint IS NULL OR created_at >= $5::bigint)
               AND ($6::bigint IS NULL OR created_at < $6::bigint)
               AND (leased_until IS NULL OR leased_until <= {})
               AND {NOT_PURGED}",
            db_now!()
        );
        let c = self.conn().await?;
        if dry_run {
            let stmt = c
                .prepare_cached(&format!("SELECT count(*) FROM deliveries WHERE {where_}"))
                .await?;
            let n: i64 = c
                .query_one(
                    &stmt,
                    &[
                        &tenant_id,
                        &statuses,
                        &filter.endpoint_id,
                        &filter.event_name,
                        &filter.since,
                        &filter.until,
                    ],
                )
                .await?
                .try_get(0)?;
            return Ok((u64::try_from(n).unwrap_or(0), vec![]));
        }
        // One statement: pick (skipping rows another node holds this instant), reset, and
        // wake whichever nodes serve the endpoints, on commit.
        let stmt = c
            .prepare_cached(&format!(
                "WITH picked AS (
                     SELECT id FROM deliveries WHERE {where_}
                     ORDER BY seq LIMIT $7 FOR UPDATE SKIP LOCKED
                 ), replayed AS (
                     UPDATE deliveries d SET status = 'pending', cycle_failures = 0,
                         next_attempt_at = $8, updated_at = $8, transformed = NULL
                     FROM picked WHERE d.id = picked.id
                     RETURNING d.endpoint_id, d.seq
                 ), endpoints AS (
                     SELECT endpoint_id, min(seq) AS first FROM replayed GROUP BY endpoint_id
                 )
                 SELECT endpoint_id, (SELECT count(*) FROM replayed), pg_notify($9, endpoint_id)::text
                 FROM endpoints ORDER BY first"
            ))
            .await?;
        let found = c
            .query(
                &stmt,
                &[
                    &tenant_id,
                    &statuses,
                    &filter.endpoint_id,
                    &filter.event_name,
                    &filter.since,
                    &filter.until,
                    &i64::from(limit),
                    &now,
                    &self.channel,
                ],
            )
            .await?;
        let count = match found.first() {
            Some(r) => u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
            None => 0,
        };
        let endpoints = rows(&found, |r| Ok(r.try_get(0)?))?;
        Ok((count, endpoints))
    }
}
