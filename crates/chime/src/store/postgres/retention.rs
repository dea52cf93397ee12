//! PostgreSQL: removing old payloads and events (`store::Retention`).

use async_trait::async_trait;

use crate::model::Millis;
use crate::store::Retention;

use super::{PostgresStore, purgeable};
use crate::store::Result;

/// The advisory-lock class of partition maintenance ("chpt"); the other key is the schema's
/// hash, as for migrations. One node at a time makes or drops partitions; the others skip.
const PARTITION_LOCK: i32 = 0x6368_7074;

/// Takes the partition-maintenance lock for this transaction, with a bound on how long its
/// DDL may wait for the locks it needs (the hot path's statements queue behind a waiting
/// `DROP`): at most a few seconds, then it fails and the next pass tries again. With `wait`
/// it waits for another node's turn; without, it answers false while another node has it.
async fn partition_lock(tx: &tokio_postgres::Transaction<'_>, wait: bool) -> Result<bool> {
    if wait {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
            &[&PARTITION_LOCK],
        )
        .await?;
        tx.batch_execute("SET LOCAL lock_timeout = '3s'").await?;
        return Ok(true);
    }
    tx.batch_execute("SET LOCAL lock_timeout = '3s'").await?;
    Ok(tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
            &[&PARTITION_LOCK],
        )
        .await?
        .try_get(0)?)
}

impl PostgresStore {
    /// Drops the partitions wholly older than `before` whose deliveries are all finished;
    /// returns how many events went with them. A partition kept for a pending delivery is
    /// logged, with the count, at every pass until it can go.
    async fn drop_partitions(&self, before: Millis) -> Result<u64> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        if !partition_lock(&tx, false).await? {
            return Ok(0);
        }
        let found = tx
            .query(
                "SELECT suffix, pending, events FROM chime_drop_partitions($1)",
                &[&before],
            )
            .await?;
        tx.commit().await?;
        let mut dropped = 0;
        for r in &found {
            let suffix: String = r.try_get(0)?;
            let pending: i64 = r.try_get(1)?;
            let events: i64 = r.try_get(2)?;
            if pending > 0 {
                tracing::warn!(
                    partition = %suffix,
                    pending,
                    "a partition past retention is kept: it has pending deliveries (it is dropped once they finish)"
                );
            } else {
                tracing::info!(partition = %suffix, events, "dropped a partition past retention");
                dropped += events.max(0) as u64;
            }
        }
        Ok(dropped)
    }
}

#[async_trait]
impl Retention for PostgresStore {
    async fn purge_payloads(&self, before: Millis, now: Millis, limit: u32) -> Result<u64> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "UPDATE events SET payload = ''::bytea, purged_at = $2
                 WHERE (tenant_id, seq, created_at) IN ({})",
                purgeable("events", "IS NULL", "$3")
            ))
            .await?;
        Ok(c.execute(&stmt, &[&before, &now, &i64::from(limit)])
            .await?)
    }

    async fn purge_events(&self, before: Millis, limit: u32) -> Result<u64> {
        let dropped = self.drop_partitions(before).await?;
        let c = self.conn().await?;
        // Rows are deleted one by one only in the DEFAULT partition (rows that arrived
        // outside every partition; in a range partition, rows go with it). Deliveries and
        // attempts go with their event (the delete triggers). Purged events first: they are
        // the older ones. Each group is locked by its own CTE (a locking SELECT cannot be a
        // branch of a UNION).
        let stmt = c
            .prepare_cached(&format!(
                "WITH purged AS ({}), kept AS ({})
                 DELETE FROM events
                 WHERE (tenant_id, seq, created_at) IN (
                     SELECT * FROM (SELECT * FROM purged UNION ALL SELECT * FROM kept) g
                     LIMIT $2)",
                purgeable("events_default", "IS NOT NULL", "$2"),
                purgeable("events_default", "IS NULL", "$2")
            ))
            .await?;
        let deleted = c.execute(&stmt, &[&before, &i64::from(limit)]).await?;
        Ok(dropped + deleted)
    }

    async fn ensure_partitions(&self, from: Millis, to: Millis, interval: Millis) -> Result<u32> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Waits for a node making them at the same moment (at start, several may), then
        // finds them made.
        partition_lock(&tx, true).await?;
        let made: i32 = tx
            .query_one(
                "SELECT chime_ensure_partitions($1, $2, $3)",
                &[&from, &to, &interval],
            )
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(u32::try_from(made).unwrap_or(0))
    }

    async fn purge_expired_meta(&self, prefix: &str, now: Millis) -> Result<u64> {
        let c = self.conn().await?;
        // The values under these prefixes are all expiries written by chime (digits only).
        let stmt = c
            .prepare_cached(
                "DELETE FROM meta WHERE starts_with(key, $1::text) AND value::bigint < $2",
            )
            .await?;
        Ok(c.execute(&stmt, &[&prefix, &now]).await?)
    }
}
