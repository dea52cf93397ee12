//! SQLite: claims, records, releases, health and nodes: the dispatcher's side (`store::Queue`).

use async_trait::async_trait;
use rusqlite::params;

use crate::model::{EndpointId, Millis};
use crate::store::{Claimed, Endpoint, HealthChange, Job, Lease, Outcome, Queue};

use super::{
    ENDPOINT_COLS, SqliteStore, claim_tx, collect, endpoint_row, forget_endpoints, leases,
    next_due, record_tx, row_of,
};
use crate::store::Result;
use rusqlite::OptionalExtension;

#[async_trait]
impl Queue for SqliteStore {
    async fn get_endpoint_by_id(&self, id: &str) -> Result<Option<Endpoint>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = ?1"
            ))?
            .query_row([id], endpoint_row)
            .optional()?
            .map(|(e, _)| e))
        })
        .await
    }

    async fn claim(
        &self,
        endpoint_id: &str,
        limit: u32,
        now: Millis,
        lease: &Lease,
    ) -> Result<Claimed> {
        let (endpoint_id, lease) = (endpoint_id.to_owned(), lease.clone());
        self.writer
            .write(move |c| claim_tx(c, &endpoint_id, limit, now, &lease))
            .await
    }

    async fn record(&self, outcomes: Vec<Outcome>) -> Result<Vec<bool>> {
        self.writer.write(move |c| record_tx(c, outcomes)).await
    }

    async fn release(&self, jobs: Vec<Job>) -> Result<()> {
        self.writer
            .write(move |c| {
                for job in jobs {
                    if let Some(seq) = row_of(c, job.row, &job.delivery_id)? {
                        leases::take(seq, job.lease_token);
                    }
                }
                Ok(())
            })
            .await
    }

    async fn release_owner(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.writer
            .write(move |_| {
                leases::release_owner(&owner);
                Ok(())
            })
            .await
    }

    async fn reset_leases(&self) -> Result<()> {
        self.writer
            .write(|c| {
                leases::clear();
                // Leases live in memory now (`leases.rs`); this clears any a version that
                // wrote them into rows left behind.
                c.execute_batch(
                    "UPDATE deliveries SET lease_owner = NULL, lease_token = NULL,
                         leased_until = NULL
                     WHERE status = 'pending' AND lease_owner IS NOT NULL",
                )?;
                Ok(())
            })
            .await
    }

    async fn change_health(
        &self,
        endpoint_id: &str,
        change: HealthChange,
        now: Millis,
    ) -> Result<bool> {
        let id = endpoint_id.to_owned();
        self.writer
            .write(move |c| {
                forget_endpoints();
                let n = match change {
                    HealthChange::Failing(since) => c
                        .prepare_cached(
                            "UPDATE endpoints SET failing_since = ?2
                             WHERE id = ?1 AND failing_since IS NULL",
                        )?
                        .execute(params![id, since])?,
                    HealthChange::Recovered => c
                        .prepare_cached(
                            "UPDATE endpoints SET failing_since = NULL
                             WHERE id = ?1 AND failing_since IS NOT NULL",
                        )?
                        .execute([id])?,
                    HealthChange::Disable(reason) => c
                        .prepare_cached(
                            "UPDATE endpoints SET enabled = 0, disabled_reason = ?2,
                                 updated_at = ?3
                             WHERE id = ?1 AND enabled = 1",
                        )?
                        .execute(params![id, reason, now])?,
                };
                Ok(n == 1)
            })
            .await
    }

    async fn due_summary(&self, _now: Millis) -> Result<Vec<(EndpointId, Millis)>> {
        self.read(move |c| {
            let ids: Vec<EndpointId> =
                collect(c.prepare_cached("SELECT id FROM endpoints")?, [], |r| {
                    r.get(0)
                })?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(due) = next_due(c, &id)? {
                    out.push((id, due));
                }
            }
            Ok(out)
        })
        .await
    }
}
