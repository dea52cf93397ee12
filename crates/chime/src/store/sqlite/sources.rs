//! SQLite: inbound sources (`store::Sources`).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use crate::store::rows::{SOURCE_COLS, cursor, paginate, source_settings_json};
use crate::store::{Listed, Page, Result, Source, Sources, StoreError};

use super::{SqliteStore, collect, tenant_exists};

fn source_row(r: &rusqlite::Row) -> rusqlite::Result<(Source, i64)> {
    crate::store::rows::source(r)
}

/// A unique index refusal as the store's `Conflict`.
fn name_taken(e: rusqlite::Error, name: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!("a source named {name:?} exists"))
        }
        other => other.into(),
    }
}

#[async_trait]
impl Sources for SqliteStore {
    async fn create_source(&self, s: Source) -> Result<()> {
        self.writer
            .write(move |c| {
                if !tenant_exists(c, &s.tenant_id)? {
                    return Err(StoreError::NotFound);
                }
                c.prepare_cached(
                    "INSERT INTO sources (id, tenant_id, seq, name, settings, ingest_key,
                                          ingest_key_hash, created_at, updated_at)
                     VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM sources), ?3, ?4,
                             ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    s.id,
                    s.tenant_id,
                    s.name,
                    source_settings_json(&s.settings),
                    s.ingest_key,
                    s.ingest_key_hash,
                    s.created_at,
                    s.updated_at
                ])
                .map_err(|e| name_taken(e, &s.name))?;
                Ok(())
            })
            .await
    }

    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {SOURCE_COLS} FROM sources WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row([id, tenant_id], source_row)
            .optional()?
            .map(|(s, _)| s))
        })
        .await
    }

    async fn list_sources(&self, tenant_id: &str, page: Page) -> Result<Listed<Source>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {SOURCE_COLS} FROM sources WHERE tenant_id = ?1 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3"
                ))?,
                params![tenant_id, cursor(page), page.limit + 1],
                source_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn update_source(&self, s: &Source) -> Result<()> {
        let s = s.clone();
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE sources SET name = ?3, settings = ?4, ingest_key = ?5,
                                ingest_key_hash = ?6, updated_at = ?7
                         WHERE id = ?1 AND tenant_id = ?2",
                    )?
                    .execute(params![
                        s.id,
                        s.tenant_id,
                        s.name,
                        source_settings_json(&s.settings),
                        s.ingest_key,
                        s.ingest_key_hash,
                        s.updated_at
                    ])
                    .map_err(|e| name_taken(e, &s.name))?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM sources WHERE id = ?1 AND tenant_id = ?2")?
                    .execute([id, tenant_id])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn find_source(&self, key_hash: &str) -> Result<Option<Source>> {
        let key_hash = key_hash.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {SOURCE_COLS} FROM sources WHERE ingest_key_hash = ?1"
            ))?
            .query_row([key_hash], source_row)
            .optional()?
            .map(|(s, _)| s))
        })
        .await
    }
}
