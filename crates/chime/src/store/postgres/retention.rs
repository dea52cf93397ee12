//! PostgreSQL: removing old payloads and events (`store::Retention`).

use async_trait::async_trait;

use crate::model::Millis;
use crate::store::Retention;

use super::{PostgresStore, purgeable};
use crate::store::Result;

#[async_trait]
impl Retention for PostgresStore {
    async fn purge_payloads(&self, before: Millis, now: Millis, limit: u32) -> Result<u64> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "UPDATE events SET payload = ''::bytea, purged_at = $2
                 WHERE seq IN ({})",
                purgeable("IS NULL", "$3")
            ))
            .await?;
        Ok(c.execute(&stmt, &[&before, &now, &i64::from(limit)])
            .await?)
    }

    async fn purge_events(&self, before: Millis, limit: u32) -> Result<u64> {
        let c = self.conn().await?;
        // Deliveries and attempts go with their event (the delete triggers). Purged events
        // first: they are the older ones. Each group is locked by its own CTE (a locking
        // SELECT cannot be a branch of a UNION).
        let stmt = c
            .prepare_cached(&format!(
                "WITH purged AS ({}), kept AS ({})
                 DELETE FROM events
                 WHERE seq IN (SELECT seq FROM (SELECT seq FROM purged
                                                UNION ALL SELECT seq FROM kept) g
                               LIMIT $2)",
                purgeable("IS NOT NULL", "$2"),
                purgeable("IS NULL", "$2")
            ))
            .await?;
        Ok(c.execute(&stmt, &[&before, &i64::from(limit)]).await?)
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
