//! `/v1/tenants/{tenant}/endpoints`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult, Code};
use super::extract::{JsonBody, PageParams, Principal, Query};
use super::{AppState, ListOut, visible_tenant};
use crate::model::{Subscription, format_time, ip_literal, new_id, now_millis, parse_endpoint_url};
use crate::store::Endpoint;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/endpoints", get(list).post(create))
        .route(
            "/v1/tenants/{tenant}/endpoints/{endpoint}",
            get(show).patch(update).delete(delete),
        )
        .route(
            "/v1/tenants/{tenant}/endpoints/{endpoint}/secret",
            get(secret),
        )
        .route(
            "/v1/tenants/{tenant}/endpoints/{endpoint}/secret/rotate",
            axum::routing::post(rotate_secret),
        )
}

const MAX_DESCRIPTION: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointIn {
    url: String,
    events: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
    /// A secret of the user's own (`whsec_` + base64 of 24–64 bytes); generated if absent.
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointPatch {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

#[derive(Serialize)]
struct EndpointOut {
    id: String,
    tenant_id: String,
    url: String,
    events: Vec<String>,
    description: String,
    enabled: bool,
    created_at: String,
    updated_at: String,
    /// Shown on creation only; afterwards via `GET …/secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl EndpointOut {
    fn of(e: Endpoint, with_secret: bool) -> Self {
        Self {
            secret: with_secret.then(|| e.secret.clone()),
            id: e.id,
            tenant_id: e.tenant_id,
            url: e.url,
            events: e.events,
            description: e.description,
            enabled: e.enabled,
            created_at: format_time(e.created_at),
            updated_at: format_time(e.updated_at),
        }
    }
}

/// Validates a URL, refusing IP literals in closed ranges right away (names are checked on
/// every attempt, against the addresses they resolve to then).
fn checked_url(state: &AppState, url: &str) -> ApiResult<String> {
    let uri = parse_endpoint_url(url)?;
    if let Some(ip) = ip_literal(&uri)
        && !state.policy.permits(ip)
    {
        return Err(ApiError::new(
            Code::RefusedTarget,
            format!(
                "{ip} is in a range closed to delivery; an operator can open it with --allow-targets"
            ),
        ));
    }
    Ok(uri.to_string())
}

fn checked_events(events: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let sub = match events {
        Some(list) => Subscription::parse(&list)?,
        None => Subscription::all(),
    };
    Ok(sub.to_texts())
}

fn checked_description(d: Option<String>) -> ApiResult<Option<String>> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::invalid(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        ))),
        other => Ok(other),
    }
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    JsonBody(body): JsonBody<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let secret = match body.secret {
        Some(s) => chime_webhooks::Secret::parse_strict(&s)
            .map_err(|e| ApiError::invalid(format!("secret: {e}")))?,
        None => chime_webhooks::Secret::generate(),
    };
    let now = now_millis();
    let endpoint = Endpoint {
        id: new_id("ep"),
        tenant_id,
        url: checked_url(&state, &body.url)?,
        events: checked_events(body.events)?,
        description: checked_description(body.description)?.unwrap_or_default(),
        enabled: body.enabled.unwrap_or(true),
        secret: secret.to_whsec(),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: now,
        updated_at: now,
    };
    state.store.create_endpoint(endpoint.clone()).await?;
    Ok((StatusCode::CREATED, Json(EndpointOut::of(endpoint, true))))
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListOut<EndpointOut>>> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let listed = state
        .store
        .list_endpoints(&tenant_id, params.page()?)
        .await?;
    Ok(Json(ListOut::from_listed(listed, |e| {
        EndpointOut::of(e, false)
    })))
}

async fn load(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    id: &str,
) -> ApiResult<Endpoint> {
    visible_tenant(state, principal, tenant_id).await?;
    state
        .store
        .get_endpoint(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<EndpointOut>> {
    let e = load(&state, &principal, &tenant_id, &id).await?;
    Ok(Json(EndpointOut::of(e, false)))
}

#[derive(Serialize)]
struct SecretOut {
    secret: String,
}

async fn secret(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<SecretOut>> {
    let e = load(&state, &principal, &tenant_id, &id).await?;
    Ok(Json(SecretOut { secret: e.secret }))
}

/// Longest overlap a rotation may ask for.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;
const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateIn {
    /// How long the old secret keeps signing beside the new one; 0 stops it at once.
    grace_period_seconds: Option<u64>,
}

#[derive(Serialize)]
struct RotatedOut {
    secret: String,
    previous_secret_expires_at: Option<String>,
}

async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RotateIn>,
) -> ApiResult<Json<RotatedOut>> {
    let grace = body.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid(format!(
            "grace_period_seconds must be at most {MAX_GRACE_SECONDS} (30 days)"
        )));
    }
    let mut e = load(&state, &principal, &tenant_id, &id).await?;
    let now = now_millis();
    let old = std::mem::replace(&mut e.secret, chime_webhooks::Secret::generate().to_whsec());
    if grace == 0 {
        e.previous_secret = None;
        e.previous_secret_expires_at = None;
    } else {
        e.previous_secret = Some(old);
        e.previous_secret_expires_at = Some(now + grace as i64 * 1000);
    }
    e.updated_at = now;
    state.store.update_endpoint(e.clone()).await?;
    state.dispatch.endpoint_changed(&e.id);
    Ok(Json(RotatedOut {
        secret: e.secret,
        previous_secret_expires_at: e.previous_secret_expires_at.map(format_time),
    }))
}

async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
    JsonBody(patch): JsonBody<EndpointPatch>,
) -> ApiResult<Json<EndpointOut>> {
    let mut e = load(&state, &principal, &tenant_id, &id).await?;
    // Validate everything before changing anything.
    let url = patch
        .url
        .as_deref()
        .map(|u| checked_url(&state, u))
        .transpose()?;
    let events = match patch.events {
        Some(list) => Some(checked_events(Some(list))?),
        None => None,
    };
    let description = checked_description(patch.description)?;
    if let Some(url) = url {
        e.url = url;
    }
    if let Some(events) = events {
        e.events = events;
    }
    if let Some(d) = description {
        e.description = d;
    }
    if let Some(enabled) = patch.enabled {
        e.enabled = enabled;
    }
    e.updated_at = now_millis();
    state.store.update_endpoint(e.clone()).await?;
    state.dispatch.endpoint_changed(&e.id);
    Ok(Json(EndpointOut::of(e, false)))
}

async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    state
        .store
        .delete_endpoint(&tenant_id, &id)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::not_found("endpoint"),
            other => other.into(),
        })?;
    state.dispatch.endpoint_changed(&id);
    Ok(StatusCode::NO_CONTENT)
}
