//! Single-use sign-in links: `POST /v1/tenants/{tenant}/portal-sessions` (a tenant's customer
//! portal) and `POST /v1/dashboard-links` (the operator's dashboard, for `chime dashboard`).
//! The links are signed, expire, and work once (`ui::session`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Principal};
use super::types::{ErrorOut, PortalSessionIn, SignInLinkOut};
use super::{AppState, visible_tenant};
use crate::ui::session::Area;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(portal_session))
        .routes(routes!(dashboard_link))
}

/// Longest life of a portal link: 7 days.
pub const MAX_PORTAL_SECONDS: u64 = 7 * 24 * 3600;
const DEFAULT_PORTAL_SECONDS: u64 = 3600;

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/portal-sessions",
    tag = "portal",
    summary = "A single-use link to this tenant's customer portal, to send or embed in an iframe",
    params(("tenant" = String, Path, description = "Tenant id")),
    request_body = PortalSessionIn,
    responses(
        (status = 201, description = "Created", body = SignInLinkOut),
        (status = 422, description = "expires_in_s is out of range", body = ErrorOut))
)]
async fn portal_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    JsonBody(body): JsonBody<PortalSessionIn>,
) -> ApiResult<(StatusCode, Json<SignInLinkOut>)> {
    let seconds = body.expires_in_s.unwrap_or(DEFAULT_PORTAL_SECONDS);
    if !(1..=MAX_PORTAL_SECONDS).contains(&seconds) {
        return Err(ApiError::invalid(format!(
            "expires_in_s must be between 1 and {MAX_PORTAL_SECONDS} (7 days)"
        )));
    }
    let tenant = visible_tenant(&state, &principal, &tenant_id).await?;
    let link = state.links.issue(
        Area::Portal,
        Some(tenant.id),
        body.read_only.unwrap_or(false),
        std::time::Duration::from_secs(seconds),
    );
    Ok((StatusCode::CREATED, Json(link)))
}

#[utoipa::path(
    post,
    path = "/v1/dashboard-links",
    tag = "portal",
    summary = "A single-use sign-in link to the operator dashboard (admin); expires in minutes",
    responses((status = 201, description = "Created", body = SignInLinkOut))
)]
async fn dashboard_link(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<(StatusCode, Json<SignInLinkOut>)> {
    principal.require_admin()?;
    let link = state.links.issue(
        Area::Dashboard,
        None,
        false,
        crate::ui::DASHBOARD_LINK_LIFETIME,
    );
    Ok((StatusCode::CREATED, Json(link)))
}
