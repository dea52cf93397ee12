//! Inbound sources: `/v1/tenants/{tenant}/sources` to manage them, and `POST /in/{key}`,
//! the public URL a provider posts to. A request that verifies becomes an event of the
//! tenant through the same group commit as `POST …/events` (answered only once durable); its
//! body is kept byte for byte and delivered as it came.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ApiResult, Code};
use super::extract::{JsonBody, PageParams, Principal, Query, path_id, read_body};
use super::transformations::patched_transformation;
use super::types::{
    ErrorOut, ListOut, PublishedOut, RejectionOut, SourceIn, SourceOut, SourcePatch, SourcePath,
    TenantPath,
};
use super::{AppState, visible_tenant};
use crate::inbox::{key_hash, new_key};
use crate::model::{
    EventId, Inbound, Locator, SourceId, format_time, now_millis, parse_event_name,
};
use crate::store::{NewEvent, Source, SourceSettings};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, update, delete))
        .routes(routes!(rotate_url))
        .routes(routes!(rejections))
        .routes(routes!(ingest))
}

/// The longest dedupe key kept as it is; a longer one is hashed.
const MAX_DEDUPE_KEY: usize = 200;

fn ingest_url(state: &AppState, key: &str) -> String {
    format!("{}/in/{key}", state.links.public_url())
}

impl SourceOut {
    fn of(state: &AppState, s: Source) -> Self {
        let verify = &s.settings.verify;
        Self {
            ingest_url: ingest_url(state, &s.ingest_key),
            id: s.id.into(),
            tenant_id: s.tenant_id,
            name: s.name,
            scheme: verify.scheme().to_owned(),
            secrets: verify.secret_count(),
            event_name: s
                .settings
                .event_name
                .clone()
                .unwrap_or_else(|| verify.default_event_name().text()),
            dedupe_key: s
                .settings
                .dedupe_key
                .clone()
                .or_else(|| verify.default_dedupe_key().map(|l| l.text())),
            max_body_bytes: s.settings.max_body_bytes,
            rate_limit_per_s: s.settings.rate_limit_per_s,
            transformation_enabled: s
                .settings
                .transformation
                .as_ref()
                .is_some_and(|t| t.enabled),
            transformation: s.settings.transformation.map(|t| t.code),
            created_at: format_time(s.created_at),
            updated_at: format_time(s.updated_at),
        }
    }
}

fn checked_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name must be 1 to 64 lower-case letters, digits, '-' or '_'",
        ))
    }
}

/// Everything a save must refuse, before anything is stored.
fn checked_settings(state: &AppState, s: SourceSettings) -> ApiResult<SourceSettings> {
    let verify = s.verify.checked().map_err(ApiError::invalid)?;
    for (field, v) in [("event_name", &s.event_name), ("dedupe_key", &s.dedupe_key)] {
        if let Some(text) = v {
            Locator::parse(text).map_err(|e| ApiError::invalid(format!("{field}: {e}")))?;
        }
    }
    if let Some(n) = s.max_body_bytes
        && (n == 0 || n > state.max_body_bytes as u64)
    {
        return Err(ApiError::invalid(format!(
            "max_body_bytes must be between 1 and the server's max_body_bytes ({})",
            state.max_body_bytes
        )));
    }
    if let Some(r) = s.rate_limit_per_s
        && !(1..=100_000).contains(&r)
    {
        return Err(ApiError::invalid(
            "rate_limit_per_s must be between 1 and 100000",
        ));
    }
    Ok(SourceSettings { verify, ..s })
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/sources",
    tag = "sources",
    summary = "Add an inbound source: a public URL a provider posts to",
    params(TenantPath),
    request_body = SourceIn,
    responses((status = 201, description = "Created; `ingest_url` is where the provider posts", body = SourceOut), (status = 409, description = "The tenant has a source of that name", body = ErrorOut))
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    JsonBody(body): JsonBody<SourceIn>,
) -> ApiResult<(StatusCode, Json<SourceOut>)> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    checked_name(&body.name)?;
    let settings = checked_settings(
        &state,
        SourceSettings {
            verify: body.verify,
            event_name: body.event_name,
            dedupe_key: body.dedupe_key,
            max_body_bytes: body.max_body_bytes,
            rate_limit_per_s: body.rate_limit_per_s,
            transformation: patched_transformation(
                &state,
                &tenant_id,
                None,
                body.transformation.map(Some),
                body.transformation_enabled,
            )
            .await?,
        },
    )?;
    let key = new_key();
    let now = now_millis();
    let source = Source {
        id: SourceId::new(),
        tenant_id,
        name: body.name,
        settings,
        ingest_key_hash: key_hash(&key),
        ingest_key: key,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .create_source(source.clone())
        .await
        .map_err(ApiError::or_not_found("tenant"))?;
    Ok((StatusCode::CREATED, Json(SourceOut::of(&state, source))))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/sources",
    tag = "sources",
    summary = "List a tenant's sources",
    params(TenantPath, PageParams),
    responses((status = 200, description = "A page of sources", body = ListOut<SourceOut>))
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<ListOut<SourceOut>>> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let listed = state.store.list_sources(&tenant_id, page.page()?).await?;
    Ok(Json(ListOut::from_listed(listed, |s| {
        SourceOut::of(&state, s)
    })))
}

pub(super) async fn load(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    id: &str,
) -> ApiResult<Source> {
    visible_tenant(state, principal, tenant_id).await?;
    let id = path_id(SourceId::parse, id, "source")?;
    state
        .store
        .get_source(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("source"))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/sources/{source}",
    tag = "sources",
    summary = "Show a source",
    params(SourcePath),
    responses((status = 200, description = "The source", body = SourceOut))
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<SourceOut>> {
    let s = load(&state, &principal, &tenant_id, &id).await?;
    Ok(Json(SourceOut::of(&state, s)))
}

#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}/sources/{source}",
    tag = "sources",
    summary = "Change a source's name, verification or limits",
    params(SourcePath),
    request_body = SourcePatch,
    responses((status = 200, description = "The source as changed", body = SourceOut))
)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
    JsonBody(patch): JsonBody<SourcePatch>,
) -> ApiResult<Json<SourceOut>> {
    let mut s = load(&state, &principal, &tenant_id, &id).await?;
    if let Some(name) = patch.name {
        checked_name(&name)?;
        s.name = name;
    }
    let mut settings = s.settings.clone();
    if let Some(v) = patch.verify {
        settings.verify = v;
    }
    if let Some(v) = patch.event_name {
        settings.event_name = v;
    }
    if let Some(v) = patch.dedupe_key {
        settings.dedupe_key = v;
    }
    if let Some(v) = patch.max_body_bytes {
        settings.max_body_bytes = v;
    }
    if let Some(v) = patch.rate_limit_per_s {
        settings.rate_limit_per_s = v;
    }
    settings.transformation = patched_transformation(
        &state,
        &tenant_id,
        settings.transformation.take(),
        patch.transformation,
        patch.transformation_enabled,
    )
    .await?;
    s.settings = checked_settings(&state, settings)?;
    s.updated_at = now_millis();
    state
        .store
        .update_source(&s)
        .await
        .map_err(ApiError::or_not_found("source"))?;
    state.inbox.forget(&s);
    Ok(Json(SourceOut::of(&state, s)))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/sources/{source}",
    tag = "sources",
    summary = "Delete a source (its URL stops answering; its events stay)",
    params(SourcePath),
    responses((status = 204, description = "Deleted"))
)]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let s = load(&state, &principal, &tenant_id, &id).await?;
    state
        .store
        .delete_source(&tenant_id, &s.id)
        .await
        .map_err(ApiError::or_not_found("source"))?;
    state.inbox.forget(&s);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/sources/{source}/rotate-url",
    tag = "sources",
    summary = "Give the source a new ingest URL; the old one stops answering",
    params(SourcePath),
    responses((status = 200, description = "The source with its new `ingest_url`", body = SourceOut))
)]
async fn rotate_url(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<SourceOut>> {
    let mut s = load(&state, &principal, &tenant_id, &id).await?;
    state.inbox.forget(&s);
    let key = new_key();
    s.ingest_key_hash = key_hash(&key);
    s.ingest_key = key;
    s.updated_at = now_millis();
    state
        .store
        .update_source(&s)
        .await
        .map_err(ApiError::or_not_found("source"))?;
    Ok(Json(SourceOut::of(&state, s)))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/sources/{source}/rejections",
    tag = "sources",
    summary = "The requests this source refused lately (on this node), newest first",
    params(SourcePath),
    responses((status = 200, description = "Up to 100 rejections", body = ListOut<RejectionOut>))
)]
async fn rejections(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<ListOut<RejectionOut>>> {
    let s = load(&state, &principal, &tenant_id, &id).await?;
    let data = state
        .inbox
        .rejections(&s.id)
        .into_iter()
        .map(|r| RejectionOut {
            at: r.at,
            code: r.code.to_owned(),
            detail: r.detail,
        })
        .collect();
    Ok(Json(ListOut {
        data,
        next_cursor: None,
    }))
}

/// A source event as its transformation reshaped it: name, body and content type; `None`
/// when the transformation cancelled it. A failed run refuses the request (422,
/// `transformation_failed`, kept in the source's rejections) so the provider sends it again.
async fn transformed(
    state: &AppState,
    source: &Source,
    t: &crate::model::Transformation,
    name: String,
    body: &bytes::Bytes,
    passed: &[(String, String)],
) -> ApiResult<Option<(String, bytes::Bytes, String)>> {
    use crate::transform::{Input, TransformKey};
    let input = Input {
        event: name,
        data: crate::dispatch::transformed::json_or_text(body),
        headers: passed.iter().cloned().collect(),
        url: String::new(),
    };
    let key = TransformKey {
        owner: source.id.to_string(),
        version: t.version(),
    };
    let failed = |why: String| ApiError::new(Code::TransformationFailed, why);
    let out = state
        .transforms
        .run(key, std::sync::Arc::from(t.code.as_str()), input)
        .await
        .map_err(|e| failed(format!("the source's transformation: {e}")))?;
    match reshaped(out).map_err(|why| failed(format!("the source's transformation {why}")))? {
        Reshaped::Cancel(_) => Ok(None),
        Reshaped::Store {
            name,
            body,
            content_type,
        } => Ok(Some((
            name,
            bytes::Bytes::from(body),
            content_type.to_owned(),
        ))),
    }
}

/// What a source's transformation made of a request.
pub(super) enum Reshaped {
    /// Dropped, for this reason.
    Cancel(String),
    /// Stored as this event: its name, body and content type.
    Store {
        name: String,
        body: String,
        content_type: &'static str,
    },
}

/// A source transformation's result, checked: its event's name must be one chime accepts
/// (`Err` says why, after "the source's transformation"). Ingest and the test endpoint
/// both read a result through this.
pub(super) fn reshaped(out: crate::transform::Output) -> Result<Reshaped, String> {
    if let Some(why) = out.cancel {
        return Ok(Reshaped::Cancel(why));
    }
    let name = parse_event_name(&out.event).map_err(|e| format!("named the event: {e}"))?;
    let (body, content_type) = crate::dispatch::transformed::body_of(out.body);
    Ok(Reshaped::Store {
        name,
        body,
        content_type,
    })
}

/// The key of an ingest URL.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct IngestPath {
    /// The unguessable part of the source's `ingest_url`.
    key: String,
}

#[utoipa::path(
    post,
    path = "/in/{key}",
    tag = "sources",
    summary = "Where a provider posts (public: the source's verification is the check)",
    description = "Verified, then committed through the same group commit as POST …/events before the answer: 202 with the event, or 200 with `Idempotent-Replayed: true` when the provider's delivery id was seen before (nothing new is stored). Any body is accepted (JSON, form-encoded, XML) and delivered byte for byte with its content type.",
    security(()),
    params(IngestPath),
    request_body(content = String, content_type = "*/*"),
    responses(
        (status = 202, description = "Stored durably; deliveries start", body = PublishedOut),
        (status = 200, description = "Seen before: nothing new stored", body = PublishedOut),
        (status = 401, description = "The signature or credentials did not verify (`invalid_signature`)", body = ErrorOut),
        (status = 429, description = "Over the source's rate (`rate_limited`), with `Retry-After`", body = ErrorOut))
)]
async fn ingest(
    State(state): State<AppState>,
    Path(key): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let Some(source) = state.inbox.source(state.store.as_ref(), &key).await? else {
        return Err(ApiError::not_found("source"));
    };
    let answer = receive(&state, &source, req).await;
    if let Err(e) = &answer {
        state.metrics.event_refused(Some(e.code));
        if e.code != Code::Internal && e.code != Code::Unavailable {
            state
                .inbox
                .reject(&source.id, e.code.as_str(), e.detail.clone());
        }
    }
    answer
}

async fn receive(state: &AppState, source: &Arc<Source>, req: Request) -> ApiResult<Response> {
    let started = std::time::Instant::now();
    let settings = &source.settings;
    let limit = settings.max_body_bytes.map_or(state.max_body_bytes, |n| {
        (n as usize).min(state.max_body_bytes)
    });
    let too_large = || {
        ApiError::new(
            Code::PayloadTooLarge,
            format!("the body is larger than this source's {limit} bytes"),
        )
    };
    // Refused before the body is read when its length says so.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if let Some(rate) = settings.rate_limit_per_s
        && let Err(wait) = state.inbox.admit(&source.id, rate)
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            Code::RateLimited,
            format!("more than {rate} requests per second to this source; retry in {secs} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        // Not a rejection of the provider's request as such: counted, not kept.
        state.metrics.event_refused(Some(Code::RateLimited));
        return Ok(response);
    }
    let headers = req.headers().clone();
    let body = read_body(req, state, "webhook").await?;
    if body.len() > limit {
        return Err(too_large());
    }
    settings
        .verify
        .verify(&headers, &body, now_millis() / 1000)
        .map_err(|why| ApiError::new(Code::InvalidSignature, why))?;

    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    // Read as JSON where it is, for the name and the dedupe key; kept as bytes either way.
    let json: Option<serde_json::Value> = content_type
        .contains("json")
        .then(|| serde_json::from_slice(&body).ok())
        .flatten();
    let verify = &settings.verify;
    let name_at = match &settings.event_name {
        Some(t) => Locator::parse(t).unwrap_or_else(|_| verify.default_event_name()),
        None => verify.default_event_name(),
    };
    let name = name_at
        .find(&headers, json.as_ref())
        .and_then(|n| parse_event_name(&n).ok())
        .unwrap_or_else(|| format!("source.{}", source.name));
    let dedupe_at = match &settings.dedupe_key {
        Some(t) => Locator::parse(t).ok(),
        None => verify.default_dedupe_key(),
    };
    let idempotency_key = dedupe_at
        .and_then(|l| l.find(&headers, json.as_ref()))
        .filter(|k| !k.is_empty())
        .map(|k| {
            let k = if k.len() > MAX_DEDUPE_KEY {
                crate::inbox::key_hash(&k)
            } else {
                k
            };
            format!("src:{}:{k}", source.id)
        });
    let passed: Vec<(String, String)> = verify
        .passed_headers()
        .iter()
        .filter_map(|h| Some(((*h).to_owned(), headers.get(*h)?.to_str().ok()?.to_owned())))
        .collect();
    // The source's transformation reshapes the event before it is stored (after the
    // provider's delivery id was read from the bytes as they came).
    let (name, body, content_type) = match &settings.transformation {
        Some(t) if t.enabled => match transformed(state, source, t, name, &body, &passed).await? {
            Some(reshaped) => reshaped,
            None => {
                return Ok((
                    StatusCode::OK,
                    Json(serde_json::json!({ "cancelled": true })),
                )
                    .into_response());
            }
        },
        _ => (name, body, content_type),
    };
    let new = NewEvent {
        id: EventId::new(),
        tenant_id: source.tenant_id.clone(),
        name: name.clone(),
        payload: body,
        idempotency_key,
        created_at: now_millis(),
        filters: Default::default(),
        traceparent: crate::model::TraceParent::from_headers(&headers),
        only_endpoint: None,
        inbound: Some(Arc::new(Inbound {
            source_id: source.id.clone(),
            content_type,
            headers: passed,
            event: name,
        })),
    };
    let published = state
        .dispatch
        .publish(new)
        .await
        .map_err(ApiError::or_not_found("tenant"))?;
    state
        .metrics
        .event_accepted(&published.event.tenant_id, started.elapsed());
    // A provider's retry of what is stored: 200, so it stops retrying; nothing new.
    Ok(super::events::published_answer(published, StatusCode::OK))
}
