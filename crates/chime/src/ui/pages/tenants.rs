//! Tenants (admin): the list and a form to create one.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
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
