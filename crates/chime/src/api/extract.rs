//! Request extractors whose rejections are `ApiError`s: the bearer token (`Principal`), a
//! JSON body (`JsonBody`) that tells malformed JSON (400) from invalid fields (422) and
//! over-size bodies (413), query strings (`Query`), and list pagination (`PageQuery`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::{ApiError, Code};
use crate::store::{Page, TokenScope};

/// Who is calling, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Tenant(String),
}

impl Principal {
    /// Admin tokens reach every tenant; a tenant token only its own (403 otherwise, without
    /// saying whether the other tenant exists).
    pub fn check_tenant(&self, tenant_id: &str) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(t) if t == tenant_id => Ok(()),
            Principal::Tenant(_) => Err(ApiError::forbidden()),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(ApiError::new(
                Code::Forbidden,
                "this operation needs the admin token",
            )),
        }
    }
}

/// A caller the server itself vouches for: the dashboard and the portal call the API
/// in-process (`ui::call`) with their session's principal in the request's extensions,
/// which no client can set. Everything else about the call is the API's own path.
#[derive(Debug, Clone)]
pub struct Delegated(pub Principal);

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Delegated(principal)) = parts.extensions.get::<Delegated>() {
            return Ok(principal.clone());
        }
        match bearer_scope(parts, state).await? {
            TokenScope::Admin => Ok(Principal::Admin),
            TokenScope::Tenant(t) => Ok(Principal::Tenant(t)),
            TokenScope::Metrics => Err(metrics_only()),
        }
    }
}

fn metrics_only() -> ApiError {
    ApiError::new(
        Code::Forbidden,
        "a metrics token can read GET /metrics and nothing else",
    )
}

/// The bearer token of a request, as `Principal` and `MetricsReader` read it.
async fn bearer_scope(parts: &Parts, state: &AppState) -> Result<TokenScope, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthorized,
                "missing Authorization: Bearer <token> header",
            )
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthorized,
                "the Authorization header must be Bearer <token>",
            )
        })?;
    state
        .auth
        .lookup(token)
        .await?
        .ok_or_else(|| ApiError::new(Code::Unauthorized, "the token is not valid"))
}

/// A caller that may read `GET /metrics`: the admin token or a metrics token. Tenant tokens
/// may not: the series cover every tenant.
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer_scope(parts, state).await? {
            TokenScope::Admin | TokenScope::Metrics => Ok(MetricsReader),
            TokenScope::Tenant(_) => Err(ApiError::new(
                Code::Forbidden,
                "metrics need the admin token or a metrics token",
            )),
        }
    }
}

/// A JSON request body. An empty body reads as `{}`, so optional-only bodies can be omitted.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state, "request body").await?;
        parse_json(if bytes.is_empty() { b"{}" } else { &bytes }).map(JsonBody)
    }
}

/// Reads a whole request body within the size limit (413) and the body deadline (408): a
/// client trickling its body cannot hold a handler, or the connection, for longer.
pub async fn read_body(req: Request, state: &AppState, what: &str) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(state.body_timeout, Bytes::from_request(req, state)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "the {what} is larger than the limit of {} bytes",
                    state.max_body_bytes
                ),
            ))
        }
        Ok(Err(rejection)) => Err(ApiError::new(
            Code::MalformedJson,
            format!("could not read the {what}: {rejection}"),
        )),
        Err(_) => Err(ApiError::new(
            Code::RequestTimeout,
            format!(
                "the {what} did not arrive within {:?} (body_timeout)",
                state.body_timeout
            ),
        )),
    }
}

/// Every JSON body the API reads comes through here, so `json_rules` (what JSON chime accepts)
/// holds for all of them before a parser or a tenant's filter or schema sees the document.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let malformed = |e: &dyn std::fmt::Display| {
        ApiError::new(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    };
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(&e))?;
    crate::json_rules::check(text).map_err(|e| {
        ApiError::new(
            Code::MalformedJson,
            format!("the body is not JSON as chime accepts it (I-JSON, RFC 7493): {e}"),
        )
    })?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => malformed(&e),
    })
}

/// A query string parsed into `T`; unknown or ill-typed parameters answer 422.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(Query)
            .map_err(|e| ApiError::invalid(format!("bad query parameters: {e}")))
    }
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 250;

pub use super::types::PageParams;

impl PageParams {
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ApiError::invalid("cursor is not one this API returned"))?,
            ),
        };
        Ok(Page { limit, cursor })
    }
}

/// Longest description of an endpoint or an event type, in characters.
pub const MAX_DESCRIPTION: usize = 1024;

pub fn checked_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::invalid(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        ))),
        other => Ok(other),
    }
}

/// An id from the request's path, parsed at the edge: a value that cannot be an id of that
/// kind names nothing, so it is answered as `what` not found, like an id that does not exist.
pub fn path_id<T>(
    parse: fn(&str) -> Result<T, crate::model::Invalid>,
    text: &str,
    what: &str,
) -> Result<T, ApiError> {
    parse(text).map_err(|_| ApiError::not_found(what))
}
