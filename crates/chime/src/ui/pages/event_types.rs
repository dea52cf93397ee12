//! The event-type catalog: every session reads it (the portal chooses from it); the admin
//! adds, edits and deletes types with their JSON Schemas.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde_json::{Value, json};

use super::endpoints::example;
use super::or_failed;
use crate::api::types::{EventTypeOut, ListOut};
use crate::ui::UiState;
use crate::ui::call::{Failed, seg};
use crate::ui::layout::{confirm, csrf, page};
use crate::ui::web::{Post, Session, html};

pub async fn list(State(state): State<UiState>, s: Session) -> Response {
    let r = async {
        let types: ListOut<EventTypeOut> = s.api.get("/v1/event-types?limit=250").await?;
        let base = state.base();
        Ok(html(page(
            &state,
            &s,
            "Event types",
            html! {
                @if types.data.is_empty() { p.muted { "The catalog is empty." } }
                @for t in &types.data {
                    section.card {
                        h2 { code { (t.name) } }
                        p { (t.description) }
                        @if let Some(schema) = &t.schema {
                            details {
                                summary { "Schema" }
                                pre { (serde_json::to_string_pretty(schema).unwrap_or_default()) }
                            }
                            details {
                                summary { "Example payload" }
                                pre { (serde_json::to_string_pretty(&json!({"event": t.name, "data": example(schema)})).unwrap_or_default()) }
                            }
                        }
                        @if s.is_admin() && state.area == crate::ui::session::Area::Dashboard {
                            details {
                                summary { "Edit" }
                                form method="post" action={ (base) "/event-types/" (seg(&t.name)) "/edit" } {
                                    (csrf(&s))
                                    label for={ "d-" (t.name) } { "Description" }
                                    input id={ "d-" (t.name) } name="description" type="text" value=(t.description);
                                    label for={ "s-" (t.name) } { "JSON Schema of data (empty: none)" }
                                    textarea id={ "s-" (t.name) } name="schema" rows="8" {
                                        (t.schema.as_ref().map(|v| serde_json::to_string_pretty(v).unwrap_or_default()).unwrap_or_default())
                                    }
                                    button type="submit" { "Save " (t.name) }
                                }
                            }
                            form method="post" action={ (base) "/event-types/" (seg(&t.name)) "/delete" } {
                                (csrf(&s)) button.danger type="submit" { "Delete " (t.name) }
                            }
                        }
                    }
                }
                @if s.is_admin() && state.area == crate::ui::session::Area::Dashboard {
                    h2 { "Add an event type" }
                    form.card method="post" action={ (base) "/event-types" } {
                        (csrf(&s))
                        label for="et-name" { "Name" }
                        input #et-name name="name" type="text" required;
                        label for="et-description" { "Description" }
                        input #et-description name="description" type="text";
                        label for="et-schema" { "JSON Schema of data (optional)" }
                        textarea #et-schema name="schema" rows="6" {}
                        button type="submit" { "Add event type" }
                    }
                }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}

/// The schema field: empty is none.
fn schema_field(p: &Post) -> Result<Option<Value>, Failed> {
    p.fields
        .get("schema")
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                Failed::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the schema is not JSON: {e}"),
                )
            })
        })
        .transpose()
}

pub async fn create(State(state): State<UiState>, p: Post) -> Response {
    let r = async {
        let schema = schema_field(&p)?;
        let _: EventTypeOut = p
            .session
            .api
            .post(
                "/v1/event-types",
                json!({
                    "name": p.fields.get("name").unwrap_or(""),
                    "description": p.fields.get("description"),
                    "schema": schema,
                }),
            )
            .await?;
        Ok(Redirect::to(&format!("{}/event-types", state.base())).into_response())
    }
    .await;
    or_failed(&state, r)
}

/// Saves a type's description and schema (an emptied schema field removes the schema).
pub async fn edit(State(state): State<UiState>, Path(name): Path<String>, p: Post) -> Response {
    let r = async {
        let schema = schema_field(&p)?;
        let _: EventTypeOut = p
            .session
            .api
            .patch(
                &format!("/v1/event-types/{}", seg(&name)),
                json!({
                    "description": p.fields.get("description").unwrap_or(""),
                    "schema": schema,
                }),
            )
            .await?;
        Ok(Redirect::to(&format!("{}/event-types", state.base())).into_response())
    }
    .await;
    or_failed(&state, r)
}

pub async fn delete(State(state): State<UiState>, Path(name): Path<String>, p: Post) -> Response {
    let back = format!("{}/event-types", state.base());
    if !p.fields.confirmed() {
        return html(confirm(
            &state,
            &p.session,
            &p.path,
            &p.fields,
            &format!("Delete the event type {name}? Endpoints keep their subscriptions."),
            &back,
        ));
    }
    let r = async {
        p.session
            .api
            .delete(&format!("/v1/event-types/{}", seg(&name)))
            .await?;
        Ok(Redirect::to(&back).into_response())
    }
    .await;
    or_failed(&state, r)
}
