//! PostgreSQL: tokens, tenants, endpoints, event types, settings (`store::Admin`).

use async_trait::async_trait;

use crate::model::Millis;
use crate::store::rules::{GAUGES_BACKLOG_SQL, GAUGES_ENDPOINTS_SQL};
use crate::store::{
    Admin, Endpoint, EventType, Gauges, Listed, Page, StoreError, Tenant, TokenScope,
};

use super::{
    ENDPOINT_COLS, EVENT_TYPE_COLS, PostgresStore, TENANT_COLS, endpoint_row, event_type_row,
    fetch, notify, rows, tenant_row,
};
use crate::store::Result;
use crate::store::rows::{cursor, paginate, settings_json};

#[async_trait]
impl Admin for PostgresStore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("SELECT value FROM meta WHERE key = $1")
            .await?;
        Ok(match c.query_opt(&stmt, &[&key]).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<bool> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .await?;
        Ok(c.execute(&stmt, &[&key, &value]).await? == 1)
    }

    async fn create_token(&self, hash: &str, scope: TokenScope, now: Millis) -> Result<()> {
        let (tenant, stored_scope) = crate::store::rules::token_columns(scope);
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO tokens (hash, tenant_id, created_at, scope)
                 SELECT $1::text, $2::text, $3::bigint, $4::text
                 WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM tenants WHERE id = $2::text)",
            )
            .await?;
        match c
            .execute(&stmt, &[&hash, &tenant, &now, &stored_scope])
            .await?
        {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenScope>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("SELECT tenant_id, scope FROM tokens WHERE hash = $1")
            .await?;
        Ok(match c.query_opt(&stmt, &[&hash]).await? {
            None => None,
            Some(r) => Some(crate::store::rules::token_scope(
                r.try_get(0)?,
                r.try_get(1)?,
            )),
        })
    }

    async fn create_tenant(&self, t: Tenant) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO tenants (id, name, created_at, branding) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let branding = crate::store::rows::branding_text(&t);
        match c
            .execute(&stmt, &[&t.id, &t.name, &t.created_at, &branding])
            .await?
        {
            0 => Err(StoreError::Conflict(format!(
                "tenant {:?} already exists",
                t.id
            ))),
            _ => Ok(()),
        }
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("UPDATE tenants SET name = $2, branding = $3 WHERE id = $1")
            .await?;
        let branding = crate::store::rows::branding_text(t);
        match c.execute(&stmt, &[&t.id, &t.name, &branding]).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .await?;
        match c.query_opt(&stmt, &[&id]).await? {
            Some(r) => Ok(Some(tenant_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn list_tenants(&self, page: Page) -> Result<Listed<Tenant>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {TENANT_COLS} FROM tenants WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
            ))
            .await?;
        let found = c.query(&stmt, &[&cursor(page), &fetch(page)]).await?;
        Ok(paginate(rows(&found, tenant_row)?, page.limit))
    }

    async fn delete_tenant(&self, id: &str) -> Result<()> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Deliveries reference the tenant only by value; removing them first by their tenant
        // index is cheaper than letting the cascades find them one event at a time.
        let deliveries = tx
            .prepare_cached("DELETE FROM deliveries WHERE tenant_id = $1")
            .await?;
        let tenant = tx
            .prepare_cached("DELETE FROM tenants WHERE id = $1")
            .await?;
        tx.execute(&deliveries, &[&id]).await?;
        if tx.execute(&tenant, &[&id]).await? == 0 {
            return Err(StoreError::NotFound);
        }
        // Every node drops its cached tokens of the tenant when this commits (`notify`).
        let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        tx.execute(&notify, &[&self.channel, &notify::tenant_deleted(id)])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_endpoint(&self, e: Endpoint) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO endpoints (id, tenant_id, url, events, description, enabled,
                     secret, created_at, updated_at, previous_secret, previous_secret_expires_at,
                     settings, disabled_reason, failing_since)
                 SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::bool, $7::text,
                        $8::bigint, $9::bigint, $10::text, $11::bigint, $12::text, $13::text,
                        $14::bigint
                 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2::text)",
            )
            .await?;
        let events = serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into());
        let n = c
            .execute(
                &stmt,
                &[
                    &e.id,
                    &e.tenant_id,
                    &e.url,
                    &events,
                    &e.description,
                    &e.enabled,
                    &e.secret,
                    &e.created_at,
                    &e.updated_at,
                    &e.previous_secret,
                    &e.previous_secret_expires_at,
                    &settings_json(&e.settings),
                    &e.disabled_reason,
                    &e.failing_since,
                ],
            )
            .await?;
        match n {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = $1 AND tenant_id = $2"
            ))
            .await?;
        match c.query_opt(&stmt, &[&id, &tenant_id]).await? {
            Some(r) => Ok(Some(endpoint_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn list_endpoints(&self, tenant_id: &str, page: Page) -> Result<Listed<Endpoint>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE tenant_id = $1 AND seq < $2
                 ORDER BY seq DESC LIMIT $3"
            ))
            .await?;
        let found = c
            .query(&stmt, &[&tenant_id, &cursor(page), &fetch(page)])
            .await?;
        Ok(paginate(rows(&found, endpoint_row)?, page.limit))
    }

    async fn update_endpoint(&self, e: Endpoint) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE endpoints SET url = $1, events = $2, description = $3, enabled = $4,
                     secret = $5, updated_at = $6, previous_secret = $9,
                     previous_secret_expires_at = $10, settings = $11, disabled_reason = $12,
                     failing_since = $13
                 WHERE id = $7 AND tenant_id = $8",
            )
            .await?;
        let events = serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into());
        let n = c
            .execute(
                &stmt,
                &[
                    &e.url,
                    &events,
                    &e.description,
                    &e.enabled,
                    &e.secret,
                    &e.updated_at,
                    &e.id,
                    &e.tenant_id,
                    &e.previous_secret,
                    &e.previous_secret_expires_at,
                    &settings_json(&e.settings),
                    &e.disabled_reason,
                    &e.failing_since,
                ],
            )
            .await?;
        match n {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("DELETE FROM endpoints WHERE id = $1 AND tenant_id = $2")
            .await?;
        match c.execute(&stmt, &[&id, &tenant_id]).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn create_event_type(&self, t: EventType) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO event_types (name, description, schema, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            )
            .await?;
        let n = c
            .execute(
                &stmt,
                &[
                    &t.name,
                    &t.description,
                    &t.schema,
                    &t.created_at,
                    &t.updated_at,
                ],
            )
            .await?;
        match n {
            0 => Err(StoreError::Conflict(format!(
                "event type {:?} already exists",
                t.name
            ))),
            _ => Ok(()),
        }
    }

    async fn update_event_type(&self, t: EventType) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE event_types SET description = $2, schema = $3, updated_at = $4
                 WHERE name = $1",
            )
            .await?;
        match c
            .execute(&stmt, &[&t.name, &t.description, &t.schema, &t.updated_at])
            .await?
        {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_TYPE_COLS} FROM event_types WHERE name = $1"
            ))
            .await?;
        match c.query_opt(&stmt, &[&name]).await? {
            Some(r) => Ok(Some(event_type_row(&r)?.0)),
            None => Ok(None),
        }
    }

    async fn list_event_types(&self, page: Page) -> Result<Listed<EventType>> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_TYPE_COLS} FROM event_types WHERE seq < $1
                 ORDER BY seq DESC LIMIT $2"
            ))
            .await?;
        let found = c.query(&stmt, &[&cursor(page), &fetch(page)]).await?;
        Ok(paginate(rows(&found, event_type_row)?, page.limit))
    }

    async fn delete_event_type(&self, name: &str) -> Result<()> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("DELETE FROM event_types WHERE name = $1")
            .await?;
        match c.execute(&stmt, &[&name]).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn gauges(&self, now: Millis) -> Result<Gauges> {
        let c = self.conn().await?;
        let backlog = c.prepare_cached(GAUGES_BACKLOG_SQL).await?;
        let endpoints = c.prepare_cached(GAUGES_ENDPOINTS_SQL).await?;
        let b = c.query_one(&backlog, &[&now]).await?;
        let e = c.query_one(&endpoints, &[]).await?;
        Ok(crate::store::rules::gauges(
            b.try_get(0)?,
            b.try_get(1)?,
            e.try_get(0)?,
            e.try_get(1)?,
            e.try_get(2)?,
        ))
    }

    async fn ping(&self) -> Result<()> {
        let c = self.conn().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }
}
