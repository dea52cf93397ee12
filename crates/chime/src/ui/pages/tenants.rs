//! Tenants (admin): the list, a form to create one, and a tenant's portal branding.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::json;

use super::or_failed;
use crate::api::types::{ListOut, TenantOut};
use crate::ui::UiState;
use crate::ui::call::seg;
use crate::ui::layout::{csrf, page, when};
use crate::ui::web::{Post, Session, html};

#[derive(serde::Deserialize, Default)]
pub struct CursorQuery {
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<UiState>,
    s: Session,
    Query(q): Query<CursorQuery>,
) -> Response {
    let path = match &q.cursor {
        Some(c) => format!("/v1/tenants?limit=50&cursor={}", seg(c)),
        None => "/v1/tenants?limit=50".to_owned(),
    };
    let r = async {
        let tenants: ListOut<TenantOut> = s.api.get(&path).await?;
        let base = state.base();
        Ok(html(page(
            &state,
            &s,
            "Tenants",
            html! {
                table {
                    thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Created" } } }
                    tbody {
                        @for t in &tenants.data {
                            tr {
                                td { a href={ (base) "/t/" (seg(&t.id)) } { (t.id) } }
                                td { (t.name.as_deref().unwrap_or("")) }
                                td { (when(&t.created_at)) }
                            }
                        }
                    }
                }
                @if let Some(c) = &tenants.next_cursor {
                    p { a href={ (base) "/tenants?cursor=" (seg(c)) } { "Older tenants →" } }
                }
                h2 { "Create a tenant" }
                form.card method="post" action={ (base) "/tenants" } {
                    (csrf(&s))
                    label for="tenant-id" { "Id (optional; letters, digits, - and _)" }
                    input #tenant-id name="id" type="text" autocomplete="off";
                    label for="tenant-name" { "Name (optional)" }
                    input #tenant-name name="name" type="text";
                    button type="submit" { "Create tenant" }
                }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}

pub async fn create(State(state): State<UiState>, p: Post) -> Response {
    let body = json!({ "id": p.fields.get("id"), "name": p.fields.get("name") });
    let r = async {
        let t: TenantOut = p.session.api.post("/v1/tenants", body).await?;
        Ok(Redirect::to(&format!("{}/t/{}", state.base(), seg(&t.id))).into_response())
    }
    .await;
    or_failed(&state, r)
}

/// The admin's form for how a tenant's portal presents the product (empty: the server's).
pub fn branding_form(state: &UiState, s: &Session, t: &TenantOut) -> Markup {
    let b = t.branding.clone().unwrap_or_default();
    html! {
        details.card {
            summary { "Portal branding" }
            form method="post" action={ (state.base()) "/t/" (seg(&t.id)) "/branding" } {
                (csrf(s))
                p.muted { "How this tenant's customer portal names the product; empty fields use the server's." }
                label for="brand-name" { "Product name" }
                input #brand-name name="name" type="text" maxlength="64" value=(b.name.unwrap_or_default());
                label for="brand-logo" { "Logo URL (https://)" }
                input #brand-logo name="logo_url" type="url" value=(b.logo_url.unwrap_or_default());
                label for="brand-accent" { "Accent colour (#rgb or #rrggbb)" }
                input #brand-accent name="accent" type="text" pattern="#([0-9a-fA-F]{3}){1,2}" value=(b.accent.unwrap_or_default());
                button type="submit" { "Save branding" }
            }
        }
    }
}

pub async fn branding(
    State(state): State<UiState>,
    Path(tenant): Path<String>,
    p: Post,
) -> Response {
    let body = json!({ "branding": {
        "name": p.fields.get("name"),
        "logo_url": p.fields.get("logo_url"),
        "accent": p.fields.get("accent"),
    }});
    let r = async {
        let t: TenantOut = p
            .session
            .api
            .patch(&format!("/v1/tenants/{}", seg(&tenant)), body)
            .await?;
        Ok(Redirect::to(&format!("{}/t/{}", state.base(), seg(&t.id))).into_response())
    }
    .await;
    or_failed(&state, r)
}
