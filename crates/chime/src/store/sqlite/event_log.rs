//! SQLite: publishing and the event and delivery log (`store::EventLog`).

use async_trait::async_trait;
use rusqlite::params;

use crate::model::{EndpointId, Millis};
use crate::store::rules::NOT_PURGED;
use crate::store::{
    Attempt, Delivery, DeliveryFilter, DeliveryStatus, Event, EventLog, Lease, Listed, NewEvent,
    Page, Published, ReplayFilter, StoreError, rules,
};

use super::clock;
use super::{
    ATTEMPT_COLS, DELIVERY_COLS, EVENT_COLS, REPENDING_ORDERED, SqliteStore, attempt_row, collect,
    delivery_row, event_purged, event_row, publish_tx,
};
use crate::store::Result;
use crate::store::rows::{cursor, paginate};
use rusqlite::OptionalExtension;

#[async_trait]
impl EventLog for SqliteStore {
    async fn publish(&self, event: NewEvent, lease: Lease) -> Result<Published> {
        self.writer
            .write(move |c| publish_tx(c, event, &lease))
            .await
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row([id, tenant_id], event_row)
            .optional()?
            .map(|(e, _)| e))
        })
        .await
    }

    async fn list_events(
        &self,
        tenant_id: &str,
        name: Option<&str>,
        page: Page,
    ) -> Result<Listed<Event>> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.map(str::to_owned));
        self.read(move |c| {
            let rows = match name {
                Some(name) => collect(
                    c.prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM events
                         WHERE tenant_id = ?1 AND name = ?2 AND seq < ?3
                         ORDER BY seq DESC LIMIT ?4"
                    ))?,
                    params![tenant_id, name, cursor(page), page.limit + 1],
                    event_row,
                )?,
                None => collect(
                    c.prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM events WHERE tenant_id = ?1 AND seq < ?2
                         ORDER BY seq DESC LIMIT ?3"
                    ))?,
                    params![tenant_id, cursor(page), page.limit + 1],
                    event_row,
                )?,
            };
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<Delivery>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row([id, tenant_id], delivery_row)
            .optional()?
            .map(|(d, _)| d))
        })
        .await
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
        page: Page,
    ) -> Result<Listed<Delivery>> {
        let tenant_id = tenant_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| {
            // Optional filters as `(?n IS NULL OR col = ?n)` keep one cached statement.
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLS} FROM deliveries
                     WHERE tenant_id = ?1 AND seq < ?2
                       AND (?3 IS NULL OR status = ?3)
                       AND (?4 IS NULL OR endpoint_id = ?4)
                       AND (?5 IS NULL OR event_id = ?5)
                       AND (?7 IS NULL OR event_name = ?7)
                       AND (?8 IS NULL OR created_at >= ?8)
                       AND (?9 IS NULL OR created_at < ?9)
                     ORDER BY seq DESC LIMIT ?6"
                ))?,
                params![
                    tenant_id,
                    cursor(page),
                    filter.status.map(DeliveryStatus::as_str),
                    filter.endpoint_id,
                    filter.event_id,
                    page.limit + 1,
                    filter.event_name,
                    filter.since,
                    filter.until
                ],
                delivery_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn list_attempts(&self, delivery_id: &str, page: Page) -> Result<Listed<Attempt>> {
        let delivery_id = delivery_id.to_owned();
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = ?1 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3"
                ))?,
                params![delivery_id, cursor(page), page.limit + 1],
                attempt_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn retry_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(&format!(
                        "UPDATE deliveries SET {REPENDING_ORDERED}, status = 'pending',
                             cycle_failures = 0, next_attempt_at = ?1, updated_at = ?1,
                             transformed = NULL
                         WHERE id = ?2 AND tenant_id = ?3 AND NOT chime_leased(seq, ?4)
                           AND {NOT_PURGED}"
                    ))?
                    .execute(params![now, id, tenant_id, clock()])?;
                let row = c
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1 AND tenant_id = ?2"
                    ))?
                    .query_row([&id, &tenant_id], delivery_row)
                    .optional()?;
                match (n, row) {
                    (_, None) => Err(StoreError::NotFound),
                    (0, Some((d, _))) => {
                        Err(StoreError::Conflict(if event_purged(c, &d.event_id)? {
                            rules::PURGED.into()
                        } else {
                            "the delivery is being attempted right now".into()
                        }))
                    }
                    (_, Some((d, _))) => Ok(d),
                }
            })
            .await
    }

    async fn pending_head(&self, endpoint_id: &str) -> Result<Option<Delivery>> {
        let id = endpoint_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries
                 WHERE endpoint_id = ?1 AND status = 'pending' AND ordered = 1
                 ORDER BY seq LIMIT 1"
            ))?
            .query_row([id], delivery_row)
            .optional()?
            .map(|(d, _)| d))
        })
        .await
    }

    async fn skip_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL,
                             updated_at = ?1
                         WHERE id = ?2 AND tenant_id = ?3 AND status = 'pending'
                           AND NOT chime_leased(seq, ?4)",
                    )?
                    .execute(params![now, id, tenant_id, clock()])?;
                let row = c
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1 AND tenant_id = ?2"
                    ))?
                    .query_row([&id, &tenant_id], delivery_row)
                    .optional()?;
                match (n, row) {
                    (_, None) => Err(StoreError::NotFound),
                    (0, Some((d, _))) => Err(StoreError::Conflict(format!(
                        "only a pending delivery that is not being attempted can be skipped; \
                         this one is {}",
                        if d.status == DeliveryStatus::Pending {
                            "in flight"
                        } else {
                            d.status.as_str()
                        }
                    ))),
                    (_, Some((d, _))) => Ok(d),
                }
            })
            .await
    }

    async fn replay(
        &self,
        tenant_id: &str,
        filter: &ReplayFilter,
        now: Millis,
        limit: u32,
        dry_run: bool,
    ) -> Result<(u64, Vec<EndpointId>)> {
        let tenant_id = tenant_id.to_owned();
        let filter = filter.clone();
        let statuses = serde_json::to_string(
            &filter
                .statuses
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        self.writer
            .write(move |c| {
                // Replaying a delivery that is being attempted would race its record: skip those.
                let where_ = format!(
                    "tenant_id = ?1
                       AND status IN (SELECT value FROM json_each(?2))
                       AND (?3 IS NULL OR endpoint_id = ?3)
                       AND (?4 IS NULL OR event_name = ?4)
                       AND (?5 IS NULL OR created_at >= ?5)
                       AND (?6 IS NULL OR created_at < ?6)
                       AND NOT chime_leased(seq, ?7)
                       AND {NOT_PURGED}"
                );
                let where_ = where_.as_str();
                if dry_run {
                    let n: i64 = c
                        .prepare_cached(&format!("SELECT COUNT(*) FROM deliveries WHERE {where_}"))?
                        .query_row(
                            params![
                                tenant_id,
                                statuses,
                                filter.endpoint_id,
                                filter.event_name,
                                filter.since,
                                filter.until,
                                clock()
                            ],
                            |r| r.get(0),
                        )?;
                    return Ok((n as u64, vec![]));
                }
                let rows: Vec<(String, EndpointId)> = collect(
                    c.prepare_cached(&format!(
                        "SELECT id, endpoint_id FROM deliveries WHERE {where_} ORDER BY seq LIMIT ?8"
                    ))?,
                    params![
                        tenant_id,
                        statuses,
                        filter.endpoint_id,
                        filter.event_name,
                        filter.since,
                        filter.until,
                        clock(),
                        limit
                    ],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, EndpointId>(1)?)),
                )?;
                let mut update = c.prepare_cached(&format!(
                    "UPDATE deliveries SET {REPENDING_ORDERED}, status = 'pending',
                         cycle_failures = 0, next_attempt_at = ?1, updated_at = ?1,
                             transformed = NULL
                     WHERE id = ?2"
                ))?;
                let mut endpoints = Vec::new();
                for (id, endpoint_id) in &rows {
                    update.execute(params![now, id])?;
                    if !endpoints.contains(endpoint_id) {
                        endpoints.push(endpoint_id.clone());
                    }
                }
                Ok((rows.len() as u64, endpoints))
            })
            .await
    }
}
