//! The operator's dashboard (`/ui`) and the tenant's customer portal (`/portal`): HTML
//! rendered by the server (maud, auto-escaping), one stylesheet and one small script embedded
//! in the binary, charts drawn as SVG by the server.
//!
//! # Layout
//! - `session`: signed session cookies, CSRF tokens and one-time links (no table).
//! - `call`: the pages' only way to data and actions: the API router itself, called
//!   in-process as the session's principal, so the UI can do nothing the API would refuse.
//! - `web`: the request side: extractors (`Session`, `Post`), cookies, security headers,
//!   error pages.
//! - `layout`, `chart`: the page frame and the SVG charts.
//! - `pages/*`: one module per noun; `routes` below lists them for both areas.
//!
//! The same pages serve both areas. The dashboard's session may be the admin (every tenant)
//! or a tenant; the portal's is always one tenant, so every call it makes is checked by the
//! API's `visible_tenant` like a tenant token's.

pub mod call;
pub mod chart;
pub mod layout;
pub mod pages;
pub mod session;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::api::types::SignInLinkOut;
use crate::model::{format_time, now_millis};
use session::{Area, Claims, Keys};

/// How long a link made by `chime dashboard` works.
pub const DASHBOARD_LINK_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long a dashboard session lasts.
pub const DASHBOARD_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The settings of the pages (`config::UiConfig`, resolved at start).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where browsers reach this server (`public_url`, else `http://<listen address>`), for
    /// the links the API hands out.
    pub public_url: String,
    /// `Secure` on cookies: the server is reached over TLS (`public_url` is `https://…`).
    pub secure_cookies: bool,
    /// The origins allowed to embed the portal in an `<iframe>` (`frame-ancestors`).
    pub portal_frame_ancestors: Vec<String>,
    pub brand: Brand,
}

impl Settings {
    pub fn from_config(c: &crate::config::UiConfig, public_url: &str) -> Self {
        Self {
            public_url: public_url.to_owned(),
            secure_cookies: public_url.starts_with("https://"),
            portal_frame_ancestors: c.portal_frame_ancestors.clone(),
            brand: Brand {
                name: c.brand_name.clone(),
                logo_url: c.brand_logo_url.clone(),
                accent: c.brand_accent.clone(),
            },
        }
    }
}

/// The product as the pages name it.
#[derive(Debug, Clone, Default)]
pub struct Brand {
    pub name: String,
    pub logo_url: Option<String>,
    /// A CSS colour such as `#4b57d1`.
    pub accent: Option<String>,
}

impl Brand {
    /// This branding with a tenant's own parts in place of the server's.
    pub fn overlay(mut self, own: &crate::model::Branding) -> Self {
        if let Some(n) = &own.name {
            self.name = n.clone();
        }
        if own.logo_url.is_some() {
            self.logo_url = own.logo_url.clone();
        }
        if own.accent.is_some() {
            self.accent = own.accent.clone();
        }
        self
    }
}

/// Signs the one-time links the API hands out.
pub struct LinkIssuer {
    keys: Keys,
    public_url: String,
}

impl LinkIssuer {
    pub fn new(keys: Keys, public_url: &str) -> Self {
        Self {
            keys,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Where browsers and providers reach this server, without a trailing `/`.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn issue(
        &self,
        area: Area,
        tenant: Option<String>,
        read_only: bool,
        life: Duration,
    ) -> SignInLinkOut {
        let expires_at = now_millis() + life.as_millis() as i64;
        let token = self
            .keys
            .link_token(&Claims::new(area, tenant, read_only, expires_at));
        let base = match area {
            Area::Dashboard => "/ui",
            Area::Portal => "/portal",
        };
        SignInLinkOut {
            url: format!("{}{base}/link?token={token}", self.public_url),
            expires_at: format_time(expires_at),
        }
    }
}

/// What every page handler reaches.
#[derive(Clone)]
pub struct UiState {
    pub app: crate::api::AppState,
    /// The API, called in-process (`call`).
    pub api: Router,
    pub keys: Keys,
    pub settings: Arc<Settings>,
    pub area: Area,
    /// Ends live streams at shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl UiState {
    /// Where this area's pages live.
    pub fn base(&self) -> &'static str {
        match self.area {
            Area::Dashboard => "/ui",
            Area::Portal => "/portal",
        }
    }
}

/// The dashboard under `/ui` and the portal under `/portal`, beside the API.
pub fn router(state: UiState) -> Router {
    let dashboard = UiState {
        area: Area::Dashboard,
        ..state.clone()
    };
    let portal = UiState {
        area: Area::Portal,
        ..state
    };
    Router::new()
        .nest("/ui", routes(dashboard.clone()))
        .nest("/portal", routes(portal))
        // Nested, a router's "/" is "/ui" itself; the address with a slash leads there too.
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/portal/", get(|| async { Redirect::permanent("/portal") }))
}

fn routes(state: UiState) -> Router {
    use pages::{
        deliveries, endpoints, event_types, events, overview, reference, signin, sources, tenants,
        transformation,
    };
    let area = state.area;
    let mut r = Router::new()
        .route("/assets/chime.css", get(web::css))
        .route("/assets/chime.js", get(web::js))
        .route("/assets/brand.css", get(web::brand_css))
        .route("/link", get(signin::redeem_link))
        .route("/logout", post(signin::logout))
        .route("/", get(overview::home))
        .route("/overview/live", get(overview::live))
        .route("/t/{tenant}", get(endpoints::list))
        .route("/t/{tenant}/endpoints", post(endpoints::create))
        .route("/t/{tenant}/endpoints/{endpoint}", get(endpoints::show))
        .route(
            "/t/{tenant}/endpoints/{endpoint}/{action}",
            post(endpoints::act),
        )
        .route(
            "/t/{tenant}/endpoints/{endpoint}/transformation",
            get(transformation::editor),
        )
        .route(
            "/t/{tenant}/endpoints/{endpoint}/transformation/{action}",
            post(transformation::act),
        )
        .route("/t/{tenant}/events", get(events::list))
        .route("/t/{tenant}/deliveries", get(deliveries::list))
        .route("/t/{tenant}/deliveries/live", get(deliveries::live))
        .route("/t/{tenant}/deliveries/{delivery}", get(deliveries::show))
        .route(
            "/t/{tenant}/deliveries/{delivery}/{action}",
            post(deliveries::act),
        )
        .route(
            "/t/{tenant}/replay",
            get(deliveries::replay_form).post(deliveries::replay),
        )
        .route("/event-types", get(event_types::list));
    if area == Area::Dashboard {
        r = r
            .route("/login", get(signin::login_form).post(signin::login))
            .route("/tenants", get(tenants::list).post(tenants::create))
            .route("/t/{tenant}/branding", post(tenants::branding))
            .route("/t/{tenant}/sources", get(sources::list))
            .route("/api", get(reference::show))
            .route("/event-types", post(event_types::create))
            .route("/event-types/{name}/edit", post(event_types::edit))
            .route("/event-types/{name}/delete", post(event_types::delete));
    }
    r.fallback(web::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::security_headers,
        ))
        .with_state(state)
}
