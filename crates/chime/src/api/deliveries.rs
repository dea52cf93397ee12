//! `/v1/tenants/{tenant}/deliveries`: the delivery log, attempts, and manual retry.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{PageParams, Principal, Query};
use super::{AppState, ListOut, visible_tenant};
use crate::model::{format_time, now_millis};
use crate::store::{Attempt, Delivery, DeliveryFilter, DeliveryStatus, StoreError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/deliveries", get(list))
        .route("/v1/tenants/{tenant}/deliveries/{delivery}", get(show))
        .route(
            "/v1/tenants/{tenant}/deliveries/{delivery}/attempts",
            get(attempts),
        )
        .route(
            "/v1/tenants/{tenant}/deliveries/{delivery}/retry",
            post(retry),
        )
}

#[derive(Serialize)]
pub struct DeliveryOut {
    id: String,
    event_id: String,
    event: String,
    endpoint_id: String,
    status: &'static str,
    attempts: u32,
    next_attempt_at: Option<String>,
    last_attempt_at: Option<String>,
    last_status_code: Option<u16>,
    last_error_kind: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<Delivery> for DeliveryOut {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            event: d.event_name,
            endpoint_id: d.endpoint_id,
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: d
                .next_attempt_at
                .filter(|_| d.status == DeliveryStatus::Pending)
                .map(format_time),
            last_attempt_at: d.last_attempt_at.map(format_time),
            last_status_code: d.last_status_code,
            last_error_kind: d.last_error_kind,
            created_at: format_time(d.created_at),
            updated_at: format_time(d.updated_at),
        }
    }
}

#[derive(Serialize)]
struct AttemptOut {
    id: String,
    delivery_id: String,
    started_at: String,
    duration_ms: u32,
    succeeded: bool,
    status_code: Option<u16>,
    error_kind: Option<String>,
    error: Option<String>,
    response: Option<String>,
}

impl From<Attempt> for AttemptOut {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id,
            delivery_id: a.delivery_id,
            started_at: format_time(a.started_at),
            duration_ms: a.duration_ms,
            succeeded: a.succeeded,
            status_code: a.status_code,
            error_kind: a.error_kind,
            error: a.error,
            response: a.response,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryListParams {
    limit: Option<u32>,
    cursor: Option<String>,
    status: Option<String>,
    endpoint: Option<String>,
    event: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    Query(params): Query<DeliveryListParams>,
) -> ApiResult<Json<ListOut<DeliveryOut>>> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page()?;
    let status = params
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::invalid("status must be one of pending, succeeded, failed")
            })
        })
        .transpose()?;
    let filter = DeliveryFilter {
        status,
        endpoint_id: params.endpoint,
        event_id: params.event,
    };
    let listed = state
        .store
        .list_deliveries(&tenant_id, &filter, page)
        .await?;
    Ok(Json(ListOut::from_listed(listed, DeliveryOut::from)))
}

async fn load(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    id: &str,
) -> ApiResult<Delivery> {
    visible_tenant(state, principal, tenant_id).await?;
    state
        .store
        .get_delivery(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<DeliveryOut>> {
    Ok(Json(
        load(&state, &principal, &tenant_id, &id).await?.into(),
    ))
}

async fn attempts(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListOut<AttemptOut>>> {
    load(&state, &principal, &tenant_id, &id).await?;
    let listed = state.store.list_attempts(&id, params.page()?).await?;
    Ok(Json(ListOut::from_listed(listed, AttemptOut::from)))
}

async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryOut>)> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let now = now_millis();
    let d = state
        .store
        .retry_delivery(&tenant_id, &id, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("delivery"),
            other => other.into(),
        })?;
    state.dispatch.due(&d.endpoint_id, now);
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}
