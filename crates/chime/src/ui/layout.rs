//! The frame of every page: skip link, header with the product's name, navigation, main
//! landmark, and the one stylesheet and script (no inline code: the CSP forbids it).

use maud::{DOCTYPE, Markup, html};

use super::Brand;
use super::UiState;
use super::session::Area;
use super::web::Session;

fn head(base: &str, title: &str, brand: &Brand) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            title { (title) " · " (brand.name) }
            link rel="stylesheet" href={ (base) "/assets/chime.css" };
            link rel="stylesheet" href={ (base) "/assets/brand.css" @if let Some(a) = &brand.accent { "?accent=" (a.trim_start_matches('#')) } };
            script src={ (base) "/assets/chime.js" } defer {}
        }
    }
}

fn banner(base: &str, brand: &Brand) -> Markup {
    html! {
        a.brand href=(base) {
            @if let Some(logo) = &brand.logo_url {
                img src=(logo) alt="" height="24";
            }
            span { (brand.name) }
        }
    }
}

/// A page without a session (sign-in, errors).
pub fn bare(brand: &Brand, base: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, title, brand))
            body {
                header.top { (banner(base, brand)) }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page of a signed-in session.
pub fn page(state: &UiState, s: &Session, title: &str, body: Markup) -> Markup {
    let base = state.base();
    let brand = &s.brand;
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, title, brand))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    (banner(base, brand))
                    nav aria-label="Main" {
                        ul {
                            @if s.is_admin() {
                                li { a href=(base) { "Overview" } }
                                li { a href={ (base) "/tenants" } { "Tenants" } }
                                li { a href={ (base) "/t/_chime/events" } { "Operational events" } }
                            } @else if let Some(t) = &s.claims.tenant {
                                @if state.area == Area::Dashboard {
                                    li { a href=(base) { "Overview" } }
                                }
                                li { a href={ (base) "/t/" (t) } { "Endpoints" } }
                                li { a href={ (base) "/t/" (t) "/deliveries" } { "Deliveries" } }
                                li { a href={ (base) "/t/" (t) "/events" } { "Events" } }
                                @if state.area == Area::Dashboard {
                                    li { a href={ (base) "/t/" (t) "/sources" } { "Sources" } }
                                }
                                li { a href={ (base) "/t/" (t) "/replay" } { "Recover" } }
                            }
                            li { a href={ (base) "/event-types" } { "Event types" } }
                            @if state.area == Area::Dashboard {
                                li { a href={ (base) "/api" } { "API reference" } }
                            }
                        }
                    }
                    form.signout method="post" action={ (base) "/logout" } {
                        input type="hidden" name="csrf" value=(s.csrf);
                        @if s.claims.read_only { span.badge { "read-only" } " " }
                        button type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A form that posts `fields` again with `confirm=yes`: how every destructive action asks
/// first.
pub fn confirm(
    state: &UiState,
    s: &Session,
    path: &str,
    fields: &super::web::Fields,
    question: &str,
    back: &str,
) -> Markup {
    page(
        state,
        s,
        "Are you sure?",
        html! {
            p role="alert" { (question) }
            form method="post" action=(path) {
                @for (k, v) in &fields.0 {
                    @if k != "csrf" && k != "confirm" {
                        input type="hidden" name=(k) value=(v);
                    }
                }
                (csrf(s))
                input type="hidden" name="confirm" value="yes";
                button.danger type="submit" { "Yes, do it" }
                " "
                a href=(back) { "Cancel" }
            }
        },
    )
}

/// A time as people read it: `2026-12-03 10:01:53Z` from RFC 3339.
pub fn when(rfc3339: &str) -> String {
    rfc3339
        .split_once('.')
        .map(|(a, _)| format!("{a}Z"))
        .unwrap_or_else(|| rfc3339.to_owned())
        .replacen('T', " ", 1)
}

/// Status as a word with a class for its colour (never colour alone).
pub fn status(s: crate::store::DeliveryStatus) -> Markup {
    html! { span class={ "status " (s.as_str()) } { (s.as_str()) } }
}
