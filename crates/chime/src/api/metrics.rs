//! `GET /metrics` (Prometheus text format) and `/v1/metrics-tokens`, the tokens that can read
//! it and nothing else.
//!
//! On the API listener, /metrics needs the admin token or a metrics token. With
//! `metrics_listen`, [`standalone`] serves it on a second address without auth.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::error::ApiResult;
use super::extract::{MetricsReader, Principal};
use super::types::MetricsTokenOut;
use crate::metrics::Metrics;
use crate::model::now_millis;
use crate::store::{Admin, TokenScope};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(scrape))
        .routes(routes!(create_token))
}

/// `GET /metrics` alone, without auth, for `metrics_listen`.
pub fn standalone(metrics: Arc<Metrics>, store: Arc<dyn Admin>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, store) = (metrics.clone(), store.clone());
            async move { exposition(&metrics, store.as_ref()).await }
        }),
    )
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    summary = "Prometheus metrics (text exposition format); admin or metrics token",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String))
)]
async fn scrape(State(state): State<AppState>, _reader: MetricsReader) -> Response {
    exposition(&state.metrics, state.store.as_ref()).await
}

/// How long a scrape waits for the store's counts; past it they are left out and
/// `chime_store_up` is 0, so a slow database does not make the scrape itself time out.
const STORE_DEADLINE: Duration = Duration::from_secs(2);

async fn exposition(metrics: &Metrics, store: &dyn Admin) -> Response {
    let gauges = match tokio::time::timeout(STORE_DEADLINE, store.gauges(now_millis())).await {
        Ok(Ok(g)) => Some(g),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the store's counts are unavailable");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: the store's counts took longer than {STORE_DEADLINE:?}");
            None
        }
    };
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        metrics.render(gauges),
    )
        .into_response()
}

/// A new metrics token (admin only): it reads `GET /metrics` and nothing else.
#[utoipa::path(
    post,
    path = "/v1/metrics-tokens",
    tag = "metrics",
    summary = "Create a token that can read /metrics and nothing else (admin); shown once",
    responses((status = 201, description = "Created", body = MetricsTokenOut))
)]
async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<(StatusCode, Json<MetricsTokenOut>)> {
    principal.require_admin()?;
    let token = crate::auth::issue_token(state.store.as_ref(), TokenScope::Metrics).await?;
    Ok((
        StatusCode::CREATED,
        Json(MetricsTokenOut {
            token,
            scope: crate::store::METRICS_SCOPE.to_owned(),
        }),
    ))
}
