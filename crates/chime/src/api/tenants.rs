//! `/v1/tenants` and tenant tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PageParams, Principal, Query};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::types::{ErrorOut, TenantIn, TenantOut, TenantPatch, TenantPath, TokenOut};
use super::{AppState, ListOut, visible_tenant};
use crate::model::{format_time, new_id, now_millis, parse_tenant_id};
use crate::store::{Page, Tenant, TokenScope};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, update, delete))
        .routes(routes!(create_token))
}

impl From<Tenant> for TenantOut {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: format_time(t.created_at),
            branding: t.branding,
        }
    }
}

fn check_name(name: &Option<String>) -> ApiResult<()> {
    if let Some(name) = name
        && name.chars().count() > 256
    {
        return Err(ApiError::invalid("name must be at most 256 characters"));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    summary = "Create a tenant (admin)",
    request_body = TenantIn,
    responses((status = 201, description = "Created", body = TenantOut), (status = 409, description = "The id is taken", body = ErrorOut))
)]
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
    check_name(&body.name)?;
    let tenant = Tenant {
        id,
        name: body.name,
        created_at: now_millis(),
        branding: None,
    };
    state.store.create_tenant(tenant.clone()).await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    summary = "List tenants (admin)",
    params(PageParams),
    responses((status = 200, description = "A page of tenants", body = ListOut<TenantOut>))
)]
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

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    summary = "Show a tenant",
    params(TenantPath),
    responses((status = 200, description = "The tenant", body = TenantOut))
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
) -> ApiResult<Json<TenantOut>> {
    Ok(Json(
        visible_tenant(&state, &principal, &tenant_id).await?.into(),
    ))
}

#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    summary = "Rename a tenant or set its portal branding (admin)",
    params(TenantPath),
    request_body = TenantPatch,
    responses((status = 200, description = "The tenant as it is now", body = TenantOut))
)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    JsonBody(body): JsonBody<TenantPatch>,
) -> ApiResult<Json<TenantOut>> {
    principal.require_admin()?;
    let mut tenant = visible_tenant(&state, &principal, &tenant_id).await?;
    if let Some(name) = body.name {
        check_name(&name)?;
        tenant.name = name;
    }
    if let Some(branding) = body.branding {
        tenant.branding = branding
            .map(|b| {
                b.checked()
                    .map_err(|e| ApiError::invalid(format!("branding: {e}")))
            })
            .transpose()?
            .filter(|b| !b.is_empty());
    }
    state
        .store
        .update_tenant(&tenant)
        .await
        .map_err(ApiError::or_not_found("tenant"))?;
    Ok(Json(tenant.into()))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    summary = "Delete a tenant with everything it holds (admin)",
    params(TenantPath),
    responses((status = 204, description = "Deleted"))
)]
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
        .map_err(ApiError::or_not_found("tenant"))?;
    state.auth.forget_tenant(&tenant_id);
    for id in endpoint_ids {
        state.dispatch.endpoint_changed(&id);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/tokens",
    tag = "tenants",
    summary = "Create a token that reaches this tenant only (admin); shown once",
    params(TenantPath),
    responses((status = 201, description = "Created", body = TokenOut))
)]
async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
) -> ApiResult<(StatusCode, Json<TokenOut>)> {
    principal.require_admin()?;
    let token =
        crate::auth::issue_token(state.store.as_ref(), TokenScope::Tenant(tenant_id.clone()))
            .await
            .map_err(ApiError::or_not_found("tenant"))?;
    Ok((StatusCode::CREATED, Json(TokenOut { token, tenant_id })))
}
