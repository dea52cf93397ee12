//! `/v1/event-types`: the catalog of event names, with optional JSON Schemas that published
//! `data` must satisfy. Everyone authenticated may read it; only the admin may change it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PageParams, Principal, Query, checked_description};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::types::{ErrorOut, EventTypeIn, EventTypeOut, EventTypePatch, EventTypePath};
use super::{AppState, ListOut};
use crate::model::{format_time, now_millis, parse_event_name};
use crate::store::EventType;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
}

const MAX_SCHEMA_BYTES: usize = 64 * 1024;

impl From<EventType> for EventTypeOut {
    fn from(t: EventType) -> Self {
        Self {
            schema: t.schema.and_then(|s| serde_json::from_str(&s).ok()),
            name: t.name,
            description: t.description,
            created_at: format_time(t.created_at),
            updated_at: format_time(t.updated_at),
        }
    }
}

/// A schema must compile before it is stored, so publishing never meets a broken one.
fn checked_schema(schema: Option<serde_json::Value>) -> ApiResult<Option<String>> {
    let Some(schema) = schema else {
        return Ok(None);
    };
    let text = serde_json::to_string(&schema).expect("a JSON value serializes");
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(ApiError::invalid(format!(
            "schema must be at most {MAX_SCHEMA_BYTES} bytes"
        )));
    }
    crate::catalog::compile(&schema).map_err(ApiError::invalid)?;
    Ok(Some(text))
}

#[utoipa::path(
    post,
    path = "/v1/event-types",
    tag = "event-types",
    summary = "Add an event type to the catalog (admin)",
    request_body = EventTypeIn,
    responses((status = 201, description = "Created", body = EventTypeOut), (status = 409, description = "It exists", body = ErrorOut))
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<EventTypeIn>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    principal.require_admin()?;
    let now = now_millis();
    let t = EventType {
        name: parse_event_name(&body.name)?,
        description: checked_description(body.description)?.unwrap_or_default(),
        schema: checked_schema(body.schema)?,
        created_at: now,
        updated_at: now,
    };
    state.store.create_event_type(t.clone()).await?;
    state.catalog.forget(&t.name);
    Ok((StatusCode::CREATED, Json(t.into())))
}

#[utoipa::path(
    get,
    path = "/v1/event-types",
    tag = "event-types",
    summary = "List the event-type catalog",
    params(PageParams),
    responses((status = 200, description = "A page of event types", body = ListOut<EventTypeOut>))
)]
async fn list(
    State(state): State<AppState>,
    _principal: Principal,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListOut<EventTypeOut>>> {
    let listed = state.store.list_event_types(params.page()?).await?;
    Ok(Json(ListOut::from_listed(listed, EventTypeOut::from)))
}

#[utoipa::path(
    get,
    path = "/v1/event-types/{name}",
    tag = "event-types",
    summary = "Show an event type",
    params(EventTypePath),
    responses((status = 200, description = "The event type", body = EventTypeOut))
)]
async fn show(
    State(state): State<AppState>,
    _principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<EventTypeOut>> {
    let t = state
        .store
        .get_event_type(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("event type"))?;
    Ok(Json(t.into()))
}

#[utoipa::path(
    patch,
    path = "/v1/event-types/{name}",
    tag = "event-types",
    summary = "Change an event type (admin); null removes the schema",
    params(EventTypePath),
    request_body = EventTypePatch,
    responses((status = 200, description = "The event type as changed", body = EventTypeOut))
)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<EventTypePatch>,
) -> ApiResult<Json<EventTypeOut>> {
    principal.require_admin()?;
    let mut t = state
        .store
        .get_event_type(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("event type"))?;
    let description = checked_description(patch.description)?;
    if let Some(schema) = patch.schema {
        t.schema = checked_schema(schema)?;
    }
    if let Some(d) = description {
        t.description = d;
    }
    t.updated_at = now_millis();
    state
        .store
        .update_event_type(t.clone())
        .await
        .map_err(ApiError::or_not_found("event type"))?;
    state.catalog.forget(&t.name);
    Ok(Json(t.into()))
}

#[utoipa::path(
    delete,
    path = "/v1/event-types/{name}",
    tag = "event-types",
    summary = "Remove an event type from the catalog (admin)",
    params(EventTypePath),
    responses((status = 204, description = "Deleted"))
)]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state
        .store
        .delete_event_type(&name)
        .await
        .map_err(ApiError::or_not_found("event type"))?;
    state.catalog.forget(&name);
    Ok(StatusCode::NO_CONTENT)
}
