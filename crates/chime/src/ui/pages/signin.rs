//! Signing in (an API token exchanged once for a session cookie, or a one-time link) and out.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use crate::store::TokenScope;
use crate::ui::layout::bare;
use crate::ui::session::{Area, Claims, nonce};
use crate::ui::web::{Session, cookie, cookie_name, error_page, html, set_cookie};
use crate::ui::{DASHBOARD_SESSION_LIFETIME, UiState};

/// The sign-in form's nonce cookie: its CSRF token is bound to it.
const LOGIN_COOKIE: &str = "chime_login";

pub async fn login_form(State(state): State<UiState>) -> Response {
    let n = nonce();
    let csrf = state.keys.csrf(&format!("login.{n}"));
    let page = bare(
        &state.settings.brand,
        state.base(),
        "Sign in",
        html! {
            form.card method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "API token (admin: every tenant; a tenant token: that tenant)" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
            }
            p { "Or run " code { "chime dashboard" } " for a one-time sign-in link." }
        },
    );
    let mut res = html(page);
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, &n, 600),
    );
    res
}

pub async fn login(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    };
    let csrf_ok = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|n| state.keys.csrf_ok(&format!("login.{n}"), field("csrf")));
    if !csrf_ok {
        return error_page(
            &state,
            StatusCode::FORBIDDEN,
            "The sign-in form expired or its CSRF token is wrong. Open the sign-in page again.",
        );
    }
    let token = field("token");
    let scope = if token.is_empty() || token.len() > 256 {
        None
    } else {
        match state.app.auth.lookup(token).await {
            Ok(s) => s,
            Err(e) => return error_page(&state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    };
    let tenant = match scope {
        Some(TokenScope::Admin) => None,
        Some(TokenScope::Tenant(t)) => Some(t),
        // A metrics token reads /metrics and nothing else: no pages either.
        Some(TokenScope::Metrics) => {
            return error_page(
                &state,
                StatusCode::FORBIDDEN,
                "A metrics token can read /metrics only; sign in with an admin or tenant token.",
            );
        }
        None => {
            return error_page(&state, StatusCode::UNAUTHORIZED, "That token is not valid.");
        }
    };
    let life = DASHBOARD_SESSION_LIFETIME.as_millis() as i64;
    let claims = Claims::new(
        Area::Dashboard,
        tenant,
        false,
        crate::model::now_millis() + life,
    );
    signed_in(&state, &claims, StatusCode::SEE_OTHER)
}

/// Answers with the session cookie set and a way on to the area's first page. A `303` after
/// the sign-in form; after a link, a page that moves on by itself (`meta refresh`), since a
/// `SameSite=Strict` cookie set during a navigation that began on another site is not sent
/// on that navigation's redirects.
fn signed_in(state: &UiState, claims: &Claims, how: StatusCode) -> Response {
    let value = state.keys.session_cookie(claims);
    let max_age = (claims.expires_at - crate::model::now_millis()) / 1000;
    let cookie = set_cookie(state, cookie_name(state.area), &value, max_age);
    let next = state.base().to_owned();
    let mut res = if how == StatusCode::SEE_OTHER {
        Redirect::to(&next).into_response()
    } else {
        html(html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta http-equiv="refresh" content={ "0; url=" (next) };
                    title { "Signed in" }
                }
                body { main { h1 { "Signed in" } p { a href=(next) { "Continue" } } } }
            }
        })
    };
    res.headers_mut().append(header::SET_COOKIE, cookie);
    res
}

#[derive(serde::Deserialize)]
pub struct LinkQuery {
    token: Option<String>,
}

/// A one-time link: works once, before it expires, for its own area only.
pub async fn redeem_link(State(state): State<UiState>, Query(q): Query<LinkQuery>) -> Response {
    let Some(token) = q.token.filter(|t| t.len() <= 2048) else {
        return error_page(&state, StatusCode::BAD_REQUEST, "The link has no token.");
    };
    let claims = match state.keys.redeem(state.app.store.as_ref(), &token).await {
        Ok(c) if c.area == state.area => c,
        Ok(_) => {
            return error_page(
                &state,
                StatusCode::FORBIDDEN,
                "This link is for other pages.",
            );
        }
        Err(e) => return error_page(&state, StatusCode::GONE, &format!("Refused: {e}.")),
    };
    // The session gets an id of its own (the link's is spent) and, in the portal, the
    // link's expiry: the customer's access ends when the link said it would.
    let expires_at = match state.area {
        Area::Portal => claims.expires_at,
        Area::Dashboard => {
            crate::model::now_millis() + DASHBOARD_SESSION_LIFETIME.as_millis() as i64
        }
    };
    let session = Claims::new(state.area, claims.tenant, claims.read_only, expires_at);
    signed_in(&state, &session, StatusCode::OK)
}

pub async fn logout(
    State(state): State<UiState>,
    session: Session,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let given = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !state.keys.csrf_ok(&session.claims.id, given) {
        return error_page(
            &state,
            StatusCode::FORBIDDEN,
            "The form's CSRF token is wrong.",
        );
    }
    if let Err(e) = state
        .keys
        .revoke(state.app.store.as_ref(), &session.claims)
        .await
    {
        return error_page(&state, StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let mut res = match state.area {
        Area::Dashboard => Redirect::to("/ui/login").into_response(),
        Area::Portal => html(bare(
            &state.settings.brand,
            state.base(),
            "Signed out",
            html! { p { "You are signed out. Open a new link to come back." } },
        )),
    };
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, cookie_name(state.area), "", 0),
    );
    res
}
