//! The REST API v1: thin handlers that extract (auth, tenant, body), call the store or the
//! dispatcher, and map rows to `…Out` DTOs. One module per resource.
//!
//! Architecture invariant: the API never makes outbound HTTP; it only stores and hands
//! deliveries to the dispatcher.

mod deliveries;
mod endpoints;
pub mod error;
mod event_types;
mod events;
mod extract;
mod links;
pub mod metrics;
mod openapi;
mod sources;
mod tenants;
mod transformations;
pub mod types;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Authenticator;
use crate::dispatch::DispatchHandle;
use crate::net_policy::TargetPolicy;
use crate::store::{Listed, Store};
use error::{ApiError, Code};
pub use extract::{Delegated, Principal};
pub use types::ListOut;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub dispatch: DispatchHandle,
    pub auth: Arc<Authenticator>,
    pub policy: Arc<TargetPolicy>,
    pub catalog: Arc<crate::catalog::Catalog>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Spans exported over OTLP (or none): the `publish` span.
    pub spans: crate::spans::Spans,
    pub max_body_bytes: usize,
    /// Deadline for a request body to arrive once a handler reads it.
    pub body_timeout: std::time::Duration,
    /// Signs the one-time links of the portal and the dashboard.
    pub links: Arc<crate::ui::LinkIssuer>,
    /// This node's state of the inbound sources (lookups, rates, rejections).
    pub inbox: Arc<crate::inbox::Inbox>,
    /// Where transformations are checked, tested and run (shared with the dispatcher).
    pub transforms: crate::transform::Engine,
}

/// The routes of the API with the OpenAPI document their handlers describe: one list, so no
/// route can be served without being documented.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
        .merge(tenants::routes())
        .merge(endpoints::routes())
        .merge(transformations::routes())
        .merge(events::routes())
        .merge(deliveries::routes())
        .merge(event_types::routes())
        .merge(metrics::routes())
        .merge(links::routes())
        .merge(sources::routes())
}

/// The OpenAPI 3.1 document of this API, as `GET /v1/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::finish(documented().into_openapi())
}

/// The document as served: built once, on first request.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    summary = "This API's OpenAPI 3.1 document",
    security(()),
    responses((status = 200, description = "The document", body = serde_json::Value)))]
async fn openapi_json() -> impl axum::response::IntoResponse {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = TEXT.get_or_init(|| {
        openapi_document()
            .to_pretty_json()
            .expect("the document serializes")
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text.as_str(),
    )
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let router: Router<AppState> = documented().into();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Liveness: the process answers. No auth.
#[utoipa::path(get, path = "/healthz", tag = "health", summary = "Liveness",
    security(()),
    responses((status = 200, description = "The process is up", body = Status)))]
async fn healthz() -> axum::Json<Status> {
    axum::Json(Status { status: "ok" })
}

/// Ready when the store answers a trivial query within a short deadline; a load balancer
/// sends no traffic to a node that answers 503 here (e.g. while its database is unreachable),
/// and the node turns ready again by itself when the database is back. No auth, like
/// `/healthz`.
#[utoipa::path(get, path = "/readyz", tag = "health", summary = "Readiness: the store answers",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready: the database is unavailable or full", body = types::ErrorOut)))]
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<Status>, ApiError> {
    let unavailable = |detail: String| ApiError::new(Code::Unavailable, detail);
    match tokio::time::timeout(READY_DEADLINE, state.store.ping()).await {
        Ok(Ok(())) => Ok(axum::Json(Status { status: "ready" })),
        Ok(Err(crate::store::StoreError::Full(e))) => {
            tracing::warn!(error = %e, "not ready: the database is out of space");
            Err(unavailable(
                "the database has no space left; writes fail until space is freed".into(),
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            Err(unavailable("the database is unavailable".into()))
        }
        Err(_) => Err(unavailable(format!(
            "the database did not answer within {READY_DEADLINE:?}"
        ))),
    }
}

/// `{"status": "ok"}` of `/healthz`, `{"status": "ready"}` of `/readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Status {
    status: &'static str,
}

/// How long `/readyz` waits for the store.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

impl<T> ListOut<T> {
    pub fn from_listed<R>(listed: Listed<R>, f: impl FnMut(R) -> T) -> Self {
        Self {
            data: listed.rows.into_iter().map(f).collect(),
            next_cursor: listed.next_cursor.map(|c| c.to_string()),
        }
    }
}

/// Loads a tenant after checking the caller may see it: 403 for another tenant's token,
/// 404 when an admin names a tenant that does not exist.
pub async fn visible_tenant(
    state: &AppState,
    principal: &extract::Principal,
    tenant_id: &str,
) -> Result<crate::store::Tenant, ApiError> {
    principal.check_tenant(tenant_id)?;
    state
        .store
        .get_tenant(tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))
}
