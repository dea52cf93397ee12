//! `/v1/tenants` and tenant tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PageParams, Principal, Query};
use super::{AppState, ListOut, visible_tenant};
use crate::model::{format_time, new_id, now_millis, parse_tenant_id};
use crate::store::{Page, Tenant, TokenScope};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tenants/{tenant}", get(show).delete(delete))
        .route("/v1/tenants/{tenant}/tokens", post(create_token))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantIn {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Serialize)]
struct TenantOut {
    id: String,
    name: Option<String>,
    created_at: String,
}

impl From<Tenant> for TenantOut {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: format_time(t.created_at),
        }
    }
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<TenantIn>,
) -> ApiResult<(StatusCode, Json<TenantOut>)> {
    principal.require_admin()?;
    let id = match body.id {
        Some(id) => parse_tenant_id(&id)?,
        None => new_id("ten"),
    };
    if let Some(name) = &body.name
        && name.chars().count() > 256
    {
        return Err(ApiError::invalid("name must be at most 256 characters"));
    }
    let tenant = Tenant {
        id,
        name: body.name,
        created_at: now_millis(),
    };
    state.store.create_tenant(tenant.clone()).await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListOut<TenantOut>>> {
    principal.require_admin()?;
    let page: Page = params.page()?;
    let listed = state.store.list_tenants(page).await?;
    Ok(Json(ListOut::from_listed(listed, TenantOut::from)))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
) -> ApiResult<Json<TenantOut>> {
    Ok(Json(
        visible_tenant(&state, &principal, &tenant_id).await?.into(),
    ))
}

async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    if tenant_id == crate::model::SYSTEM_TENANT {
        return Err(ApiError::new(
            super::error::Code::Conflict,
            "the system tenant holds chime's operational events and cannot be deleted",
        ));
    }
    // Collect the endpoints first, so the dispatcher can drop their in-memory work.
    let mut endpoint_ids = Vec::new();
    let mut page = Page {
        limit: 250,
        cursor: None,
    };
    loop {
        let listed = state.store.list_endpoints(&tenant_id, page).await?;
        endpoint_ids.extend(listed.rows.into_iter().map(|e| e.id));
        match listed.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    state
        .store
        .delete_tenant(&tenant_id)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::not_found("tenant"),
            other => other.into(),
        })?;
    state.auth.forget_tenant(&tenant_id);
    for id in endpoint_ids {
        state.dispatch.endpoint_changed(&id);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct TokenOut {
    token: String,
    tenant_id: String,
}

async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
) -> ApiResult<(StatusCode, Json<TokenOut>)> {
    principal.require_admin()?;
    let token =
        crate::auth::issue_token(state.store.as_ref(), TokenScope::Tenant(tenant_id.clone()))
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => ApiError::not_found("tenant"),
                other => other.into(),
            })?;
    Ok((StatusCode::CREATED, Json(TokenOut { token, tenant_id })))
}
