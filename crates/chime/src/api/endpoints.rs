//! `/v1/tenants/{tenant}/endpoints`: receivers, their subscriptions and delivery settings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, ApiResult, Code};
use super::extract::{JsonBody, PageParams, Principal, Query, checked_description, path_id};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::transformations::patched_transformation;
use super::types::{
    AuthOut, EndpointDetailOut, EndpointIn, EndpointOut, EndpointPatch, EndpointPath, RotateIn,
    RotatedOut, SecretOut, SignatureScheme, TenantPath, TlsOut,
};
use super::{AppState, ListOut, visible_tenant};
use crate::model::{
    Destination, EndpointAuth, EndpointId, Subscription, format_time, now_millis, parse_target_url,
};
use crate::net_policy::Refusal;
use crate::store::{DeliveryStatus, Endpoint, EndpointSettings};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
        .routes(routes!(secret))
        .routes(routes!(rotate_secret))
}

fn public_key_of(secret: &str) -> Option<String> {
    chime_webhooks::SigningKey::parse(secret)
        .ok()
        .map(|k| k.public_key().to_whpk())
}

impl EndpointOut {
    fn of(e: Endpoint, with_secret: bool) -> Self {
        let public_key = public_key_of(&e.secret);
        Self {
            secret: with_secret.then(|| e.secret.clone()),
            signature: scheme_of(public_key.as_deref()),
            public_key,
            id: e.id.into(),
            tenant_id: e.tenant_id,
            url: e.url,
            events: e.events.to_texts(),
            description: e.description,
            enabled: e.enabled,
            destination: e.settings.destination.clone().unwrap_or(Destination::Http),
            max_in_flight: e.settings.max_in_flight,
            rate_limit_per_s: e.settings.rate_limit_per_s,
            ordered: e.settings.ordered,
            warnings: warnings(&e.settings),
            tls: e.settings.tls.map(|t| TlsOut {
                client_certificate: t.client_cert_pem.is_some(),
                ca_pem: t.ca_pem,
                insecure_skip_verify: t.insecure_skip_verify,
            }),
            auth: e.settings.auth.map(|a| match a {
                EndpointAuth::Basic { username, .. } => AuthOut {
                    kind: "basic".into(),
                    username: Some(username),
                    token_url: None,
                    client_id: None,
                    scope: None,
                    audience: None,
                },
                EndpointAuth::Oauth2ClientCredentials {
                    token_url,
                    client_id,
                    scope,
                    audience,
                    ..
                } => AuthOut {
                    kind: "oauth2_client_credentials".into(),
                    username: None,
                    token_url: Some(token_url),
                    client_id: Some(client_id),
                    scope,
                    audience,
                },
            }),
            proxy: e.settings.proxy,
            sources: e
                .settings
                .sources
                .map(|l| l.into_iter().map(String::from).collect()),
            headers: e.settings.headers,
            filter: e.settings.filter,
            transformation_enabled: e
                .settings
                .transformation
                .as_ref()
                .is_some_and(|t| t.enabled),
            transformation: e.settings.transformation.map(|t| t.code),
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since.map(format_time),
            created_at: format_time(e.created_at),
            updated_at: format_time(e.updated_at),
        }
    }
}

/// Validates a URL, refusing addresses in closed ranges right away (names are checked on
/// every attempt, against the addresses they resolve to then). A broker's URL has the
/// scheme of its `destination`; the same guard applies to it.
fn checked_url(state: &AppState, url: &str, to: Option<&Destination>) -> ApiResult<String> {
    let schemes = to.unwrap_or(&Destination::Http).url_schemes();
    let uri = parse_target_url(url, schemes)?;
    let host = uri.host().unwrap_or_default();
    match state.policy.check_host(host) {
        Ok(()) => Ok(uri.to_string()),
        Err(e @ Refusal::Closed(_)) => Err(ApiError::new(Code::RefusedTarget, e.to_string())),
        Err(e @ Refusal::Malformed(_)) => Err(ApiError::invalid(e.to_string())),
    }
}

fn checked_events(events: Option<Vec<String>>) -> ApiResult<Subscription> {
    match events {
        Some(list) => Ok(Subscription::parse(&list)?),
        None => Ok(Subscription::all()),
    }
}

fn checked_headers(headers: BTreeMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    crate::model::checked_headers(headers).map_err(ApiError::invalid)
}

/// Source ids that are the tenant's own sources.
async fn checked_sources(
    state: &AppState,
    tenant_id: &str,
    ids: Option<Vec<String>>,
) -> ApiResult<Option<Vec<crate::model::SourceId>>> {
    let Some(ids) = ids else { return Ok(None) };
    if ids.len() > 50 {
        return Err(ApiError::invalid("sources: at most 50"));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let parsed = crate::model::SourceId::parse(&id)
            .map_err(|_| ApiError::invalid(format!("sources: {id:?} is not a source id")))?;
        if state.store.get_source(tenant_id, &parsed).await?.is_none() {
            return Err(ApiError::invalid(format!(
                "sources: {id} is not a source of this tenant"
            )));
        }
        out.push(parsed);
    }
    Ok(Some(out))
}

/// What the endpoint's view warns about.
fn warnings(s: &EndpointSettings) -> Vec<String> {
    let mut w = Vec::new();
    if s.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
        w.push(INSECURE.to_owned());
    }
    w
}

const INSECURE: &str = "tls.insecure_skip_verify: the receiver's certificate is not verified, \
     so anyone on the network path can read and change deliveries";

fn checked_settings(state: &AppState, s: EndpointSettings) -> ApiResult<EndpointSettings> {
    let tls = s.tls.filter(|t| !t.is_empty());
    if let Some(t) = &tls {
        t.check().map_err(ApiError::invalid)?;
    }
    if let Some(a) = &s.auth {
        a.check().map_err(ApiError::invalid)?;
        if let EndpointAuth::Oauth2ClientCredentials { token_url, .. } = a {
            checked_url(state, token_url, None).map_err(|e| e.prefixed("auth.token_url: "))?;
        }
    }
    let destination = match s.destination {
        Some(d) => {
            d.check().map_err(ApiError::invalid)?;
            d.stored()
        }
        None => None,
    };
    if let Some(d) = &destination {
        // A broker is reached over its own protocol: the HTTP-only settings would be ignored,
        // so they are refused rather than stored to mislead.
        let kind = d.kind();
        if tls.is_some() || s.proxy.is_some() {
            return Err(ApiError::invalid(format!(
                "tls and proxy apply to http destinations, not {kind}"
            )));
        }
        if matches!(s.auth, Some(EndpointAuth::Oauth2ClientCredentials { .. })) {
            return Err(ApiError::invalid(format!(
                "auth: a {kind} destination takes {{\"type\": \"basic\"}} (the broker's user name and password), not OAuth2"
            )));
        }
    }
    if let Some(p) = &s.proxy {
        crate::model::check_proxy_url(p).map_err(ApiError::invalid)?;
    }
    let s = EndpointSettings {
        tls,
        destination,
        ..s
    };
    if let Some(n) = s.max_in_flight
        && !(1..=100).contains(&n)
    {
        return Err(ApiError::invalid("max_in_flight must be between 1 and 100"));
    }
    if let Some(n) = s.rate_limit_per_s
        && !(1..=100_000).contains(&n)
    {
        return Err(ApiError::invalid(
            "rate_limit_per_s must be between 1 and 100000",
        ));
    }
    if s.ordered && s.max_in_flight.is_some_and(|n| n > 1) {
        return Err(ApiError::invalid(
            "an ordered endpoint delivers one at a time: max_in_flight must be 1 or absent",
        ));
    }
    if let Some(f) = &s.filter {
        crate::filter::compile(f)?;
    }
    Ok(EndpointSettings {
        headers: checked_headers(s.headers)?,
        ..s
    })
}

/// A new secret of the scheme asked for (`hmac` unless said otherwise).
/// An endpoint signs with Ed25519 exactly when its secret has a public key.
fn scheme_of(public_key: Option<&str>) -> SignatureScheme {
    match public_key {
        Some(_) => SignatureScheme::Ed25519,
        None => SignatureScheme::Hmac,
    }
}

fn generate_secret(scheme: Option<SignatureScheme>) -> String {
    match scheme.unwrap_or(SignatureScheme::Hmac) {
        SignatureScheme::Hmac => chime_webhooks::Secret::generate().to_whsec(),
        SignatureScheme::Ed25519 => chime_webhooks::SigningKey::generate().to_whsk(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/endpoints",
    tag = "endpoints",
    summary = "Add an endpoint; its secret is shown in this answer only",
    params(TenantPath),
    request_body = EndpointIn,
    responses((status = 201, description = "Created", body = EndpointOut))
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    JsonBody(body): JsonBody<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    visible_tenant(&state, &principal, &tenant_id).await?;
    let secret = match body.secret {
        Some(s) if s.starts_with(chime_webhooks::SIGNING_KEY_PREFIX) => {
            chime_webhooks::SigningKey::parse(&s)
                .map_err(|e| ApiError::invalid(format!("secret: {e}")))?
                .to_whsk()
        }
        Some(s) => chime_webhooks::Secret::parse_strict(&s)
            .map_err(|e| ApiError::invalid(format!("secret: {e}")))?
            .to_whsec(),
        None => generate_secret(body.signature),
    };
    let settings = checked_settings(
        &state,
        EndpointSettings {
            max_in_flight: body.max_in_flight,
            rate_limit_per_s: body.rate_limit_per_s,
            ordered: body.ordered.unwrap_or(false),
            headers: body.headers.unwrap_or_default(),
            filter: body.filter,
            tls: body.tls,
            auth: body.auth,
            proxy: body.proxy,
            sources: checked_sources(&state, &tenant_id, body.sources).await?,
            destination: body.destination,
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
    let now = now_millis();
    let endpoint = Endpoint {
        id: EndpointId::new(),
        tenant_id,
        url: checked_url(&state, &body.url, settings.destination.as_ref())?,
        events: checked_events(body.events)?,
        description: checked_description(body.description)?.unwrap_or_default(),
        enabled: body.enabled.unwrap_or(true),
        secret,
        previous_secret: None,
        previous_secret_expires_at: None,
        settings,
        disabled_reason: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    state.store.create_endpoint(endpoint.clone()).await?;
    Ok((StatusCode::CREATED, Json(EndpointOut::of(endpoint, true))))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/endpoints",
    tag = "endpoints",
    summary = "List endpoints",
    params(TenantPath, PageParams),
    responses((status = 200, description = "A page of endpoints", body = ListOut<EndpointOut>))
)]
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

pub(super) async fn load(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    id: &str,
) -> ApiResult<Endpoint> {
    visible_tenant(state, principal, tenant_id).await?;
    let id = path_id(EndpointId::parse, id, "endpoint")?;
    state
        .store
        .get_endpoint(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/endpoints/{endpoint}",
    tag = "endpoints",
    summary = "Show an endpoint (and the delivery blocking an ordered one)",
    params(EndpointPath),
    responses((status = 200, description = "The endpoint", body = EndpointDetailOut))
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<EndpointDetailOut>> {
    let e = load(&state, &principal, &tenant_id, &id).await?;
    let blocked_by = if e.settings.ordered {
        state
            .store
            .pending_head(&e.id)
            .await?
            .filter(|d| d.status == DeliveryStatus::Pending && d.attempts > 0)
            .map(Into::into)
    } else {
        None
    };
    Ok(Json(EndpointDetailOut {
        endpoint: EndpointOut::of(e, false),
        blocked_by,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/endpoints/{endpoint}/secret",
    tag = "endpoints",
    summary = "Reveal the signing secret",
    params(EndpointPath),
    responses((status = 200, description = "The secret", body = SecretOut))
)]
async fn secret(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<SecretOut>> {
    let e = load(&state, &principal, &tenant_id, &id).await?;
    Ok(Json(SecretOut {
        public_key: public_key_of(&e.secret),
        secret: e.secret,
    }))
}

/// Longest overlap a rotation may ask for.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;
const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/endpoints/{endpoint}/secret/rotate",
    tag = "endpoints",
    summary = "Rotate the signing secret; the old one keeps signing for the grace period",
    params(EndpointPath),
    request_body = RotateIn,
    responses((status = 200, description = "The new secret", body = RotatedOut))
)]
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
    // A rotation keeps the scheme: an Ed25519 endpoint gets a new key pair.
    let scheme = scheme_of(public_key_of(&e.secret).as_deref());
    let old = std::mem::replace(&mut e.secret, generate_secret(Some(scheme)));
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
        public_key: public_key_of(&e.secret),
        secret: e.secret,
        previous_secret_expires_at: e.previous_secret_expires_at.map(format_time),
    }))
}

#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}/endpoints/{endpoint}",
    tag = "endpoints",
    summary = "Change an endpoint; absent fields stay, null clears",
    params(EndpointPath),
    request_body = EndpointPatch,
    responses((status = 200, description = "The endpoint as changed", body = EndpointOut))
)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
    JsonBody(patch): JsonBody<EndpointPatch>,
) -> ApiResult<Json<EndpointOut>> {
    let mut e = load(&state, &principal, &tenant_id, &id).await?;
    // Validate everything before changing anything.
    let events = match patch.events {
        Some(list) => Some(checked_events(Some(list))?),
        None => None,
    };
    let description = checked_description(patch.description)?;
    let mut settings = e.settings.clone();
    if let Some(v) = patch.max_in_flight {
        settings.max_in_flight = v;
    }
    if let Some(v) = patch.rate_limit_per_s {
        settings.rate_limit_per_s = v;
    }
    if let Some(v) = patch.ordered {
        settings.ordered = v;
    }
    if let Some(v) = patch.headers {
        settings.headers = v;
    }
    if let Some(v) = patch.filter {
        settings.filter = v;
    }
    if let Some(v) = patch.tls {
        settings.tls = v;
    }
    if let Some(v) = patch.auth {
        settings.auth = v;
    }
    if let Some(v) = patch.proxy {
        settings.proxy = v;
    }
    if let Some(v) = patch.sources {
        settings.sources = checked_sources(&state, &tenant_id, v).await?;
    }
    settings.transformation = patched_transformation(
        &state,
        &tenant_id,
        settings.transformation.take(),
        patch.transformation,
        patch.transformation_enabled,
    )
    .await?;
    let new_destination = patch.destination.is_some();
    if let Some(v) = patch.destination {
        settings.destination = v;
    }
    let settings = checked_settings(&state, settings)?;
    // The URL and the destination are checked together: a URL of the old scheme does not
    // stay behind a new destination, nor the reverse.
    if patch.url.is_some() || new_destination {
        let url = patch.url.as_deref().unwrap_or(&e.url);
        e.url = checked_url(&state, url, settings.destination.as_ref())?;
    }
    e.settings = settings;
    if let Some(events) = events {
        e.events = events;
    }
    if let Some(d) = description {
        e.description = d;
    }
    if let Some(enabled) = patch.enabled {
        if enabled && !e.enabled {
            // Re-enabled by a person: forget why and since when it was failing.
            e.disabled_reason = None;
            e.failing_since = None;
        }
        e.enabled = enabled;
    }
    e.updated_at = now_millis();
    state.store.update_endpoint(e.clone()).await?;
    state.dispatch.endpoint_changed(&e.id);
    Ok(Json(EndpointOut::of(e, false)))
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/endpoints/{endpoint}",
    tag = "endpoints",
    summary = "Delete an endpoint with its deliveries",
    params(EndpointPath),
    responses((status = 204, description = "Deleted"))
)]
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
        .map_err(ApiError::or_not_found("endpoint"))?;
    state.dispatch.endpoint_changed(&id);
    Ok(StatusCode::NO_CONTENT)
}
