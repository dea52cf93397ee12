//! PostgreSQL: claims, records, releases, health and nodes: the dispatcher's side (`store::Queue`).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::model::{EndpointId, Millis, TraceParent};
use crate::store::{
    Claimed, Endpoint, HealthChange, Job, Lease, Outcome, Queue, Result, StoreError, claim_is_full,
};

use super::{
    CLAIM_SQL, ENDPOINT_COLS, NEXT_DUE_SQL, PostgresStore, endpoint_row, millis_of, notify, rows,
    to_u32,
};

#[async_trait]
impl Queue for PostgresStore {
    async fn claim(
        &self,
        endpoint_id: &str,
        limit: u32,
        now: Millis,
        lease: &Lease,
    ) -> Result<Claimed> {
        let c = self.conn().await?;
        let endpoint_stmt = c
            .prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = $1"
            ))
            .await?;
        let Some(endpoint) = c.query_opt(&endpoint_stmt, &[&endpoint_id]).await? else {
            return Ok(Claimed {
                jobs: vec![],
                endpoint: None,
                next_due: None,
            });
        };
        let endpoint = endpoint_row(&endpoint)?.0;
        let ep = EndpointId::from_stored(endpoint_id);
        let duration = millis_of(lease.duration);
        if endpoint.settings.ordered {
            return self
                .claim_head(&c, ep, endpoint, now, lease, duration)
                .await;
        }
        let claim_stmt = c.prepare_cached(CLAIM_SQL).await?;
        let limit_sql = i64::from(limit);
        let owner: &str = &lease.owner;
        let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &endpoint_id,
            &now,
            &limit_sql,
            &owner,
            &lease.token,
            &duration,
        ];
        // Each statement is its own transaction: the next due time, when it is looked up, is
        // read after the claim committed, so it skips what this claim just leased.
        let claimed = c.query(&claim_stmt, &claim_params).await?;
        let due = if claim_is_full(claimed.len(), limit) {
            Some(now)
        } else {
            let due_stmt = c.prepare_cached(NEXT_DUE_SQL).await?;
            c.query_one(&due_stmt, &[&endpoint_id]).await?.try_get(0)?
        };
        let jobs = rows(&claimed, |r| {
            let payload: Vec<u8> = r.try_get(4)?;
            Ok(Job {
                delivery_id: r.try_get(0)?,
                event_id: r.try_get(1)?,
                tenant_id: r.try_get(2)?,
                endpoint_id: ep.clone(),
                body: Bytes::from(payload),
                cycle_failures: to_u32(r.try_get::<_, i32>(3)?.into()),
                lease_token: lease.token,
                row: r.try_get(8)?,
                unattempted_since: r.try_get(5)?,
                traceparent: TraceParent::from_stored(r.try_get(6)?),
                inbound: crate::model::Inbound::from_stored(r.try_get(7)?),
                transformed: r.try_get::<_, Option<String>>(9)?.map(std::sync::Arc::from),
                held_since: Some(std::time::Instant::now()),
            })
        })?;
        Ok(Claimed {
            jobs,
            endpoint: Some(endpoint),
            next_due: due,
        })
    }

    async fn record(&self, outcomes: Vec<Outcome>) -> Result<Vec<bool>> {
        if outcomes.is_empty() {
            return Ok(vec![]);
        }
        let (reply, answer) = oneshot::channel();
        self.recorder
            .send((outcomes, reply))
            .map_err(|_| StoreError::Backend("the recorder has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the recorder has stopped".into()))?
    }

    async fn release(&self, jobs: Vec<Job>) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.releaser
            .send((jobs, reply))
            .map_err(|_| StoreError::Backend("the releaser has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the releaser has stopped".into()))??;
        Ok(())
    }

    async fn release_owner(&self, owner: &str) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "WITH released AS (
                     UPDATE deliveries
                     SET lease_owner = NULL, lease_token = NULL, leased_until = NULL
                     WHERE status = 'pending' AND lease_owner = $1
                     RETURNING endpoint_id
                 )
                 SELECT pg_notify($2, endpoint_id)
                 FROM (SELECT DISTINCT endpoint_id FROM released) r",
            )
            .await?;
        c.execute(&stmt, &[&owner, &self.channel]).await?;
        Ok(())
    }

    async fn reset_leases(&self) -> Result<()> {
        // Never called at start on this backend (other nodes' leases are live); kept for
        // the contract and for an operator's tools.
        let c = self.conn().await?;
        c.execute(
            "UPDATE deliveries SET lease_owner = NULL, lease_token = NULL, leased_until = NULL
             WHERE status = 'pending' AND lease_owner IS NOT NULL",
            &[],
        )
        .await?;
        Ok(())
    }

    async fn due_summary(&self, _now: Millis) -> Result<Vec<(EndpointId, Millis)>> {
        let c = self.conn().await?;
        // Per endpoint, one probe of the partial index from its oldest due time: cheap however
        // many deliveries are queued, unlike a GROUP BY over all pending rows.
        let stmt = c
            .prepare_cached(concat!(
                "SELECT e.id, m.due
                 FROM endpoints e CROSS JOIN LATERAL (
                     SELECT min(d.next_attempt_at) AS due FROM deliveries d
                     WHERE d.endpoint_id = e.id AND d.status = 'pending'
                       AND (d.leased_until IS NULL OR d.leased_until <= ",
                db_now!(),
                ")
                 ) m
                 WHERE m.due IS NOT NULL
                 ORDER BY e.seq"
            ))
            .await?;
        let found = c.query(&stmt, &[]).await?;
        rows(&found, |r| Ok((r.try_get(0)?, r.try_get(1)?)))
    }

    async fn get_endpoint_by_id(&self, id: &str) -> Result<Option<Endpoint>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = $1"
            ))
            .await?;
        match c.query_opt(&stmt, &[&id]).await? {
            Some(r) => Ok(Some(endpoint_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn change_health(
        &self,
        endpoint_id: &str,
        change: HealthChange,
        now: Millis,
    ) -> Result<bool> {
        let c = self.conn().await?;
        // Each change is conditional on the current state, so when several nodes see the
        // same failure only one of them changes it (and emits the operational event).
        let n = match change {
            HealthChange::Failing(since) => {
                let stmt = c
                    .prepare_cached(
                        "UPDATE endpoints SET failing_since = $2
                         WHERE id = $1 AND failing_since IS NULL",
                    )
                    .await?;
                c.execute(&stmt, &[&endpoint_id, &since]).await?
            }
            HealthChange::Recovered => {
                let stmt = c
                    .prepare_cached(
                        "UPDATE endpoints SET failing_since = NULL
                         WHERE id = $1 AND failing_since IS NOT NULL",
                    )
                    .await?;
                c.execute(&stmt, &[&endpoint_id]).await?
            }
            HealthChange::Disable(reason) => {
                let stmt = c
                    .prepare_cached(
                        "UPDATE endpoints SET enabled = false, disabled_reason = $2,
                             updated_at = $3
                         WHERE id = $1 AND enabled",
                    )
                    .await?;
                c.execute(&stmt, &[&endpoint_id, &reason, &now]).await?
            }
        };
        Ok(n == 1)
    }

    fn notifications(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::Notification>> {
        Some(notify::spawn(self.config.clone(), self.channel.clone()))
    }

    async fn live_nodes(&self, node: &str, ttl: Duration) -> Result<u32> {
        let c = self.conn().await?;
        let ttl = millis_of(ttl);
        // One statement: the heartbeat, the count, and forgetting long-dead nodes.
        let row = c
            .query_one(
                concat!(
                    "WITH beat AS (INSERT INTO nodes (id, seen_at) VALUES ($1, ",
                    db_now!(),
                    ") ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at),
                     gone AS (DELETE FROM nodes WHERE seen_at < ",
                    db_now!(),
                    " - 100 * $2::bigint)
                     SELECT count(*) FROM nodes WHERE id <> $1 AND seen_at >= ",
                    db_now!(),
                    " - $2::bigint"
                ),
                &[&node, &ttl],
            )
            .await?;
        let others = row.try_get::<_, i64>(0)?.max(0) as u32;
        self.peers
            .store(others, std::sync::atomic::Ordering::Relaxed);
        Ok(1 + others)
    }
}
