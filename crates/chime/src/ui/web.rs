//! The request side of the pages: the session (`Session`), checked form posts (`Post`:
//! CSRF, read-only), cookies, the security headers every page carries, and error pages.

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::UiState;
use super::call::{Api, Failed};
use super::session::{Area, Claims};

pub const DASHBOARD_COOKIE: &str = "chime_session";
pub const PORTAL_COOKIE: &str = "chime_portal";

/// The session cookie's name in an area.
pub fn cookie_name(area: Area) -> &'static str {
    match area {
        Area::Dashboard => DASHBOARD_COOKIE,
        Area::Portal => PORTAL_COOKIE,
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: never readable by scripts, sent only to this area's paths,
/// `SameSite=Strict` (a portal embedded over TLS needs `None`, with `Partitioned`, to be
/// sent inside another site's frame; CSRF tokens guard its forms either way), `Secure` when
/// the server is reached over TLS. `max_age` 0 deletes it.
pub fn set_cookie(state: &UiState, name: &str, value: &str, max_age_s: i64) -> HeaderValue {
    let mut c = format!(
        "{name}={value}; Path={}; HttpOnly; Max-Age={}",
        state.base(),
        max_age_s.max(0)
    );
    match (state.area, state.settings.secure_cookies) {
        (Area::Portal, true) => c.push_str("; SameSite=None; Partitioned"),
        _ => c.push_str("; SameSite=Strict"),
    }
    if state.settings.secure_cookies {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are base64 and ASCII")
}

/// The signed-in session of this area, checked on every request (signature, expiry,
/// sign-out).
#[derive(Clone)]
pub struct Session {
    pub claims: Claims,
    /// The CSRF token its forms carry.
    pub csrf: String,
    pub api: Api,
    /// How its pages present the product: the server's branding, in the portal overlaid
    /// with the tenant's own.
    pub brand: super::Brand,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.claims.tenant.is_none()
    }
}

impl FromRequestParts<UiState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, Response> {
        let refused = |why: String| match state.area {
            Area::Dashboard => Redirect::to("/ui/login").into_response(),
            Area::Portal => error_page(state, StatusCode::UNAUTHORIZED, &why),
        };
        let Some(value) = cookie(&parts.headers, cookie_name(state.area)) else {
            return Err(refused(
                "You are not signed in: open the link you were given.".into(),
            ));
        };
        let claims = state
            .keys
            .session(state.app.store.as_ref(), value)
            .await
            .map_err(|e| refused(format!("{e}.")))?;
        if claims.area != state.area {
            return Err(refused("This session is for other pages.".into()));
        }
        let mut brand = state.settings.brand.clone();
        if state.area == Area::Portal
            && let Some(t) = &claims.tenant
            && let Ok(Some(tenant)) = state.app.store.get_tenant(t).await
            && let Some(own) = &tenant.branding
        {
            brand = brand.overlay(own);
        }
        Ok(Session {
            csrf: state.keys.csrf(&claims.id),
            api: Api::new(state.api.clone(), claims.principal()),
            claims,
            brand,
        })
    }
}

/// A form's fields, in order (a field may repeat, such as `events`).
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of a field, trimmed, if not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn confirmed(&self) -> bool {
        self.get("confirm") == Some("yes")
    }
}

/// A form post by a signed-in session, with its CSRF token checked (403 otherwise) and
/// refused (403) for a read-only session: every change in the pages comes through here.
pub struct Post {
    pub session: Session,
    pub fields: Fields,
    /// The path posted to, for a confirmation form that posts again.
    pub path: String,
}

/// Largest form accepted.
const MAX_FORM_BYTES: usize = 256 * 1024;

impl FromRequest<UiState> for Post {
    type Rejection = Response;

    async fn from_request(req: Request, state: &UiState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                error_page(
                    state,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The form is too large.",
                )
            })?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            error_page(
                state,
                StatusCode::BAD_REQUEST,
                "The form could not be read.",
            )
        })?;
        let fields = Fields(fields);
        let csrf_ok = fields
            .0
            .iter()
            .find(|(k, _)| k == "csrf")
            .is_some_and(|(_, v)| state.keys.csrf_ok(&session.claims.id, v));
        if !csrf_ok {
            return Err(error_page(
                state,
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or wrong. Reload the page and try again.",
            ));
        }
        if session.claims.read_only {
            return Err(error_page(
                state,
                StatusCode::FORBIDDEN,
                "This session is read-only: it can look, not change.",
            ));
        }
        Ok(Post {
            session,
            fields,
            path: parts.uri.path().to_owned(),
        })
    }
}

/// The `Content-Security-Policy` of an area: nothing from elsewhere, scripts and styles
/// only from our own files (no inline script), forms only to us, and framing by nobody
/// (dashboard) or only by the origins the operator listed (portal).
pub fn csp(state: &UiState) -> String {
    let ancestors = match state.area {
        Area::Portal if !state.settings.portal_frame_ancestors.is_empty() => {
            state.settings.portal_frame_ancestors.join(" ")
        }
        _ => "'none'".to_owned(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
}

/// Adds the security headers to every answer of the pages.
pub async fn security_headers(State(state): State<UiState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp(&state)).expect("ASCII policy"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Links carry one-time tokens: never pass a URL on.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if state.area == Area::Dashboard || state.settings.portal_frame_ancestors.is_empty() {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A page saying what went wrong, with the status it stands for.
pub fn error_page(state: &UiState, status: StatusCode, detail: &str) -> Response {
    let body = super::layout::bare(
        &state.settings.brand,
        state.base(),
        status.canonical_reason().unwrap_or("Error"),
        maud::html! {
            p role="alert" { (detail) }
            @if state.area == Area::Dashboard {
                p { a href="/ui" { "Back to the dashboard" } }
            }
        },
    );
    (status, html(body)).into_response()
}

/// An API refusal as a page.
pub fn failed(state: &UiState, f: Failed) -> Response {
    error_page(state, f.status, &f.detail)
}

pub fn html(m: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

pub async fn not_found(State(state): State<UiState>) -> Response {
    error_page(&state, StatusCode::NOT_FOUND, "There is no such page.")
}

const CSS: &str = include_str!("assets/chime.css");
const JS: &str = include_str!("assets/chime.js");

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

pub async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

/// The accent colour as a stylesheet of its own (the CSP allows no inline style). The
/// colour comes in the query (`?accent=4b57d1`, as `layout` links it) so a tenant's own
/// accent needs no session here; only `#rgb`/`#rrggbb` ever reaches the CSS.
pub async fn brand_css(Query(q): Query<BrandCss>) -> Response {
    let css = q
        .accent
        .map(|hex| format!("#{hex}"))
        .filter(|c| crate::model::check_accent(c).is_ok())
        .map(|c| format!(":root {{ --accent: {c}; }}\n"))
        .unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        css,
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
pub struct BrandCss {
    accent: Option<String>,
}
