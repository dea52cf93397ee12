//! `/v1/event-types`: the catalog of event names, with optional JSON Schemas that published
//! `data` must satisfy. Everyone authenticated may read it; only the admin may change it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PageParams, Principal, Query, checked_description};
use super::types::{EventTypeIn, EventTypeOut, EventTypePatch};
use super::{AppState, ListOut};
use crate::model::{format_time, now_millis, parse_event_name};
use crate::store::{EventType, StoreError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/event-types", get(list).post(create))
        .route(
            "/v1/event-types/{name}",
            get(show).patch(update).delete(delete),
        )
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

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("event type"),
        other => other.into(),
    }
}

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

async fn list(
    State(state): State<AppState>,
    _principal: Principal,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListOut<EventTypeOut>>> {
    let listed = state.store.list_event_types(params.page()?).await?;
    Ok(Json(ListOut::from_listed(listed, EventTypeOut::from)))
}

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
        .map_err(not_found)?;
    state.catalog.forget(&t.name);
    Ok(Json(t.into()))
}

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
        .map_err(not_found)?;
    state.catalog.forget(&name);
    Ok(StatusCode::NO_CONTENT)
}
