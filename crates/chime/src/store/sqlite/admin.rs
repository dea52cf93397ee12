//! SQLite: tokens, tenants, endpoints, event types, settings (`store::Admin`).

use async_trait::async_trait;
use rusqlite::params;

use crate::model::Millis;
use crate::store::rules::{GAUGES_BACKLOG_SQL, GAUGES_ENDPOINTS_SQL};
use crate::store::{
    Admin, Endpoint, EventType, Gauges, Listed, Page, StoreError, Tenant, TokenScope,
};

use super::{
    ENDPOINT_COLS, EVENT_TYPE_COLS, SPACE_HEADROOM, SqliteStore, TENANT_COLS, collect,
    endpoint_row, event_type_row, forget_endpoints, free_space, tenant_exists, tenant_row,
};
use crate::store::Result;
use crate::store::rows::{cursor, paginate, settings_json};
use rusqlite::OptionalExtension;

#[async_trait]
impl Admin for SqliteStore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<bool> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)")?
                    .execute([key, value])?;
                Ok(n == 1)
            })
            .await
    }

    async fn create_token(&self, hash: &str, scope: TokenScope, now: Millis) -> Result<()> {
        let hash = hash.to_owned();
        let (tenant, stored_scope) = crate::store::rules::token_columns(scope);
        self.writer
            .write(move |c| {
                if let Some(t) = &tenant
                    && !tenant_exists(c, t)?
                {
                    return Err(StoreError::NotFound);
                }
                c.prepare_cached(
                    "INSERT INTO tokens (hash, tenant_id, created_at, scope) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![hash, tenant, now, stored_scope])?;
                Ok(())
            })
            .await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenScope>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            let row: Option<(Option<String>, Option<String>)> = c
                .prepare_cached("SELECT tenant_id, scope FROM tokens WHERE hash = ?1")?
                .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.map(|(tenant, scope)| crate::store::rules::token_scope(tenant, scope)))
        })
        .await
    }

    async fn create_tenant(&self, t: Tenant) -> Result<()> {
        self.writer
            .write(move |c| {
                forget_endpoints();
                if tenant_exists(c, &t.id)? {
                    return Err(StoreError::Conflict(format!(
                        "tenant {:?} already exists",
                        t.id
                    )));
                }
                c.prepare_cached(
                    "INSERT INTO tenants (id, seq, name, created_at, branding)
                     VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tenants), ?2, ?3, ?4)",
                )?
                .execute(params![
                    t.id,
                    t.name,
                    t.created_at,
                    crate::store::rows::branding_text(&t)
                ])?;
                Ok(())
            })
            .await
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let t = t.clone();
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached("UPDATE tenants SET name = ?2, branding = ?3 WHERE id = ?1")?
                    .execute(params![t.id, t.name, crate::store::rows::branding_text(&t)])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))?
                    .query_row([id], tenant_row)
                    .optional()?
                    .map(|(t, _)| t),
            )
        })
        .await
    }

    async fn list_tenants(&self, page: Page) -> Result<Listed<Tenant>> {
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {TENANT_COLS} FROM tenants WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
                ))?,
                params![cursor(page), page.limit + 1],
                tenant_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn delete_tenant(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |c| {
                forget_endpoints();
                // Deliveries reference the tenant only by value; remove them explicitly.
                c.prepare_cached("DELETE FROM deliveries WHERE tenant_id = ?1")?
                    .execute([&id])?;
                let n = c
                    .prepare_cached("DELETE FROM tenants WHERE id = ?1")?
                    .execute([&id])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn create_endpoint(&self, e: Endpoint) -> Result<()> {
        self.writer
            .write(move |c| {
                forget_endpoints();
                if !tenant_exists(c, &e.tenant_id)? {
                    return Err(StoreError::NotFound);
                }
                c.prepare_cached(
                    "INSERT INTO endpoints (id, tenant_id, url, events, description, enabled,
                         secret, created_at, updated_at, previous_secret,
                         previous_secret_expires_at, settings, disabled_reason, failing_since)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?
                .execute(params![
                    e.id,
                    e.tenant_id,
                    e.url,
                    serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into()),
                    e.description,
                    e.enabled,
                    e.secret,
                    e.created_at,
                    e.updated_at,
                    e.previous_secret,
                    e.previous_secret_expires_at,
                    settings_json(&e.settings),
                    e.disabled_reason,
                    e.failing_since
                ])?;
                Ok(())
            })
            .await
    }

    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row([id, tenant_id], endpoint_row)
            .optional()?
            .map(|(e, _)| e))
        })
        .await
    }

    async fn list_endpoints(&self, tenant_id: &str, page: Page) -> Result<Listed<Endpoint>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLS} FROM endpoints WHERE tenant_id = ?1 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3"
                ))?,
                params![tenant_id, cursor(page), page.limit + 1],
                endpoint_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn update_endpoint(&self, e: Endpoint) -> Result<()> {
        self.writer
            .write(move |c| {
                forget_endpoints();
                let n = c
                    .prepare_cached(
                        "UPDATE endpoints SET url = ?1, events = ?2, description = ?3,
                             enabled = ?4, secret = ?5, updated_at = ?6, previous_secret = ?9,
                             previous_secret_expires_at = ?10, settings = ?11,
                             disabled_reason = ?12, failing_since = ?13
                         WHERE id = ?7 AND tenant_id = ?8",
                    )?
                    .execute(params![
                        e.url,
                        serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into()),
                        e.description,
                        e.enabled,
                        e.secret,
                        e.updated_at,
                        e.id,
                        e.tenant_id,
                        e.previous_secret,
                        e.previous_secret_expires_at,
                        settings_json(&e.settings),
                        e.disabled_reason,
                        e.failing_since
                    ])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.writer
            .write(move |c| {
                forget_endpoints();
                let n = c
                    .prepare_cached("DELETE FROM endpoints WHERE id = ?1 AND tenant_id = ?2")?
                    .execute([id, tenant_id])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn create_event_type(&self, t: EventType) -> Result<()> {
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO event_types
                             (name, seq, description, schema, created_at, updated_at)
                         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM event_types),
                                 ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        t.name,
                        t.description,
                        t.schema,
                        t.created_at,
                        t.updated_at
                    ])?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!(
                        "event type {:?} already exists",
                        t.name
                    )));
                }
                Ok(())
            })
            .await
    }

    async fn update_event_type(&self, t: EventType) -> Result<()> {
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE event_types SET description = ?2, schema = ?3, updated_at = ?4
                         WHERE name = ?1",
                    )?
                    .execute(params![t.name, t.description, t.schema, t.updated_at])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {EVENT_TYPE_COLS} FROM event_types WHERE name = ?1"
            ))?
            .query_row([name], event_type_row)
            .optional()?
            .map(|(t, _)| t))
        })
        .await
    }

    async fn list_event_types(&self, page: Page) -> Result<Listed<EventType>> {
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {EVENT_TYPE_COLS} FROM event_types WHERE seq < ?1
                     ORDER BY seq DESC LIMIT ?2"
                ))?,
                params![cursor(page), page.limit + 1],
                event_type_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn delete_event_type(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM event_types WHERE name = ?1")?
                    .execute([name])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn gauges(&self, now: Millis) -> Result<Gauges> {
        self.read(move |c| {
            let (due, scheduled): (i64, i64) = c
                .prepare_cached(GAUGES_BACKLOG_SQL)?
                .query_row([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let (healthy, failing, disabled): (i64, i64, i64) = c
                .prepare_cached(GAUGES_ENDPOINTS_SQL)?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(crate::store::rules::gauges(
                due, scheduled, healthy, failing, disabled,
            ))
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        if self.writer.out_of_space() {
            // Not ready while writes fail for lack of space. Nothing else may be writing
            // (a load balancer stops sending traffic), so once there is room again, probe
            // with a real write: a commit that fits clears the state.
            let free = free_space(&self.path).unwrap_or(0);
            if free < SPACE_HEADROOM {
                return Err(StoreError::Full(format!(
                    "{free} bytes free beside {}",
                    self.path.display()
                )));
            }
            let now = crate::model::now_millis().to_string();
            return self
                .writer
                .write(move |c| {
                    c.prepare_cached(
                        "INSERT INTO meta (key, value) VALUES ('space_probe', ?1) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([now])?;
                    Ok(())
                })
                .await;
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}
