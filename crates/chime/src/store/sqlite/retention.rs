//! SQLite: removing old payloads and events (`store::Retention`).

use async_trait::async_trait;
use rusqlite::params;

use crate::model::Millis;
use crate::store::Retention;

use super::{SqliteStore, purgeable};
use crate::store::Result;

#[async_trait]
impl Retention for SqliteStore {
    async fn purge_payloads(&self, before: Millis, now: Millis, limit: u32) -> Result<u64> {
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(&format!(
                        "UPDATE events SET payload = X'', purged_at = ?2
                         WHERE seq IN ({})",
                        purgeable("IS NULL", "?3")
                    ))?
                    .execute(params![before, now, limit])?;
                Ok(n as u64)
            })
            .await
    }

    async fn purge_events(&self, before: Millis, limit: u32) -> Result<u64> {
        self.writer
            .write(move |c| {
                // Deliveries and attempts go with their event (the delete triggers). Purged
                // events first: they are the older ones.
                let n = c
                    .prepare_cached(&format!(
                        "DELETE FROM events
                         WHERE seq IN (SELECT seq FROM ({}) UNION ALL SELECT seq FROM ({})
                                       LIMIT ?2)",
                        purgeable("IS NOT NULL", "?2"),
                        purgeable("IS NULL", "?2")
                    ))?
                    .execute(params![before, limit])?;
                Ok(n as u64)
            })
            .await
    }

    async fn purge_expired_meta(&self, prefix: &str, now: Millis) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "DELETE FROM meta WHERE substr(key, 1, length(?1)) = ?1
                           AND CAST(value AS INTEGER) < ?2",
                    )?
                    .execute(params![prefix, now])?;
                Ok(n as u64)
            })
            .await
    }
}
