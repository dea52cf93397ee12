//! PostgreSQL: inbound sources (`store::Sources`).

use async_trait::async_trait;

use crate::store::rows::{SOURCE_COLS, cursor, paginate, source_settings_json};
use crate::store::{Listed, Page, Result, Source, Sources, StoreError};

use super::{PostgresStore, fetch, rows};

fn source_row(r: &tokio_postgres::Row) -> Result<(Source, i64)> {
    Ok(crate::store::rows::source(r)?)
}

/// A unique index refusal (the tenant's source names) as the store's `Conflict`.
fn name_taken(e: tokio_postgres::Error, name: &str) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict(format!("a source named {name:?} exists"));
    }
    if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
        return StoreError::NotFound;
    }
    e.into()
}

#[async_trait]
impl Sources for PostgresStore {
    async fn create_source(&self, s: Source) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO sources (id, tenant_id, name, settings, ingest_key, ingest_key_hash,
                                      created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await?;
        c.execute(
            &stmt,
            &[
                &s.id,
                &s.tenant_id,
                &s.name,
                &source_settings_json(&s.settings),
                &s.ingest_key,
                &s.ingest_key_hash,
                &s.created_at,
                &s.updated_at,
            ],
        )
        .await
        .map_err(|e| name_taken(e, &s.name))?;
        Ok(())
    }

    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {SOURCE_COLS} FROM sources WHERE id = $1 AND tenant_id = $2"
            ))
            .await?;
        match c.query_opt(&stmt, &[&id, &tenant_id]).await? {
            Some(r) => Ok(Some(source_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn list_sources(&self, tenant_id: &str, page: Page) -> Result<Listed<Source>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {SOURCE_COLS} FROM sources WHERE tenant_id = $1 AND seq < $2
                 ORDER BY seq DESC LIMIT $3"
            ))
            .await?;
        let found = c
            .query(&stmt, &[&tenant_id, &cursor(page), &fetch(page)])
            .await?;
        Ok(paginate(rows(&found, source_row)?, page.limit))
    }

    async fn update_source(&self, s: &Source) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE sources SET name = $3, settings = $4, ingest_key = $5,
                        ingest_key_hash = $6, updated_at = $7
                 WHERE id = $1 AND tenant_id = $2",
            )
            .await?;
        let n = c
            .execute(
                &stmt,
                &[
                    &s.id,
                    &s.tenant_id,
                    &s.name,
                    &source_settings_json(&s.settings),
                    &s.ingest_key,
                    &s.ingest_key_hash,
                    &s.updated_at,
                ],
            )
            .await
            .map_err(|e| name_taken(e, &s.name))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("DELETE FROM sources WHERE id = $1 AND tenant_id = $2")
            .await?;
        match c.execute(&stmt, &[&id, &tenant_id]).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn find_source(&self, key_hash: &str) -> Result<Option<Source>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {SOURCE_COLS} FROM sources WHERE ingest_key_hash = $1"
            ))
            .await?;
        match c.query_opt(&stmt, &[&key_hash]).await? {
            Some(r) => Ok(Some(source_row(&r)?.0)),
            None => Ok(None),
        }
    }
}
