//! `/v1/tenants/{tenant}/deliveries`: the delivery log, attempts, and manual retry.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use super::extract::{PageParams, Principal, Query, path_id};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::types::{
    AttemptOut, DeliveryListParams, DeliveryOut, DeliveryPath, ErrorOut, ReplayIn, ReplayOut,
    TenantPath,
};
use super::{AppState, ListOut, visible_tenant};
use crate::model::{DeliveryId, EventId, format_time, now_millis};
use crate::store::{Attempt, Delivery, DeliveryFilter, DeliveryStatus};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(attempts))
        .routes(routes!(retry))
        .routes(routes!(skip))
        .routes(routes!(replay))
}

impl From<Delivery> for DeliveryOut {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id.into(),
            event_id: d.event_id.into(),
            event: d.event_name,
            endpoint_id: d.endpoint_id.into(),
            status: d.status,
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

impl From<Attempt> for AttemptOut {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id.into(),
            delivery_id: a.delivery_id.into(),
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

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/deliveries",
    tag = "deliveries",
    summary = "List deliveries, newest first",
    params(TenantPath, DeliveryListParams),
    responses((status = 200, description = "A page of deliveries", body = ListOut<DeliveryOut>))
)]
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
                ApiError::invalid("status must be one of pending, succeeded, failed, skipped")
            })
        })
        .transpose()?;
    // One word, one meaning: `event` is a name here as in `events?event=` and replay, and a
    // value that is not one is refused rather than matching nothing.
    if let Some(id) = &params.event_id
        && EventId::parse(id).is_err()
    {
        return Err(ApiError::invalid(format!(
            "event_id {id:?} is not an event id (evt_…); filter by name with event="
        )));
    }
    let event_name = params
        .event
        .as_deref()
        .map(crate::model::parse_event_name)
        .transpose()?;
    let filter = DeliveryFilter {
        status,
        endpoint_id: params.endpoint,
        event_id: params.event_id,
        event_name,
        since: params
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: params
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
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
    let id = path_id(DeliveryId::parse, id, "delivery")?;
    state
        .store
        .get_delivery(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/deliveries/{delivery}",
    tag = "deliveries",
    summary = "Show a delivery",
    params(DeliveryPath),
    responses((status = 200, description = "The delivery", body = DeliveryOut))
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<DeliveryOut>> {
    Ok(Json(
        load(&state, &principal, &tenant_id, &id).await?.into(),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/deliveries/{delivery}/attempts",
    tag = "deliveries",
    summary = "List a delivery's attempts",
    params(DeliveryPath, PageParams),
    responses((status = 200, description = "A page of attempts", body = ListOut<AttemptOut>))
)]
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

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/deliveries/{delivery}/retry",
    tag = "deliveries",
    summary = "Attempt a delivery again now",
    params(DeliveryPath),
    responses((status = 202, description = "Queued", body = DeliveryOut), (status = 409, description = "It cannot be retried (in flight, or its payload was purged)", body = ErrorOut))
)]
async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryOut>)> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let id = path_id(DeliveryId::parse, &id, "delivery")?;
    let now = now_millis();
    let d = state
        .store
        .retry_delivery(&tenant_id, &id, now)
        .await
        .map_err(ApiError::or_not_found("delivery"))?;
    state.dispatch.due(&d.endpoint_id, now);
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

/// Gives up on a pending delivery without attempting it (e.g. the failed head that blocks an
/// ordered endpoint). It becomes `skipped` and can be replayed later.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/deliveries/{delivery}/skip",
    tag = "deliveries",
    summary = "Give up a pending delivery without attempting it",
    params(DeliveryPath),
    responses((status = 200, description = "Skipped", body = DeliveryOut), (status = 409, description = "It is not pending", body = ErrorOut))
)]
async fn skip(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<DeliveryOut>> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let id = path_id(DeliveryId::parse, &id, "delivery")?;
    let now = now_millis();
    let d = state
        .store
        .skip_delivery(&tenant_id, &id, now)
        .await
        .map_err(ApiError::or_not_found("delivery"))?;
    // An ordered endpoint's next delivery may go now.
    state.dispatch.due(&d.endpoint_id, now);
    Ok(Json(d.into()))
}

/// Most deliveries one replay call re-queues; call again for the rest.
const REPLAY_LIMIT: u32 = 10_000;

fn parse_time(field: &str, text: &str) -> ApiResult<crate::model::Millis> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| ApiError::invalid(format!("{field} must be an RFC 3339 time: {e}")))
}

/// Re-delivers the deliveries matching a filter, with their original `webhook-id` and a fresh
/// retry schedule; `dry_run` only counts them.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/replay",
    tag = "deliveries",
    summary = "Deliver again what a filter matches (by default the failed deliveries)",
    params(TenantPath),
    request_body = ReplayIn,
    responses((status = 200, description = "Counted or re-queued", body = ReplayOut))
)]
async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    super::extract::JsonBody(body): super::extract::JsonBody<ReplayIn>,
) -> ApiResult<Json<ReplayOut>> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let statuses = match body.status {
        None => vec![DeliveryStatus::Failed],
        Some(list) if list.is_empty() => {
            return Err(ApiError::invalid("status must list at least one status"));
        }
        Some(list) => list
            .iter()
            .map(|s| match DeliveryStatus::parse(s) {
                Some(DeliveryStatus::Pending) | None => Err(ApiError::invalid(format!(
                    "status {s:?}: replay takes failed, skipped or succeeded"
                ))),
                Some(st) => Ok(st),
            })
            .collect::<ApiResult<_>>()?,
    };
    let filter = crate::store::ReplayFilter {
        statuses,
        endpoint_id: body.endpoint_id,
        event_name: body.event,
        since: body
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: body
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
    };
    let now = now_millis();
    let (count, endpoints) = state
        .store
        .replay(&tenant_id, &filter, now, REPLAY_LIMIT, body.dry_run)
        .await?;
    for endpoint_id in &endpoints {
        state.dispatch.due(endpoint_id, now);
    }
    Ok(Json(ReplayOut {
        dry_run: body.dry_run,
        count,
        more: !body.dry_run && count >= REPLAY_LIMIT as u64,
    }))
}
