//! The API reference, rendered from the OpenAPI document the API serves (`/v1/openapi.json`):
//! every operation by tag with its parameters, body and answers, and the schemas.

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use crate::ui::UiState;
use crate::ui::layout::page;
use crate::ui::web::{Session, html};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `#/components/schemas/EndpointOut` → `EndpointOut`, or a short description of an inline
/// schema.
fn schema_name(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    match s.get("type").and_then(Value::as_str) {
        Some("array") => format!("[{}]", schema_name(&s["items"])),
        Some(t) => t.to_owned(),
        None => s
            .get("allOf")
            .or_else(|| s.get("oneOf"))
            .and_then(|v| v.get(0))
            .map(schema_name)
            .unwrap_or_else(|| "JSON".into()),
    }
}

fn body_schema(v: &Value) -> Option<String> {
    v.get("content")?
        .get("application/json")?
        .get("schema")
        .map(schema_name)
}

fn operation(method: &str, path: &str, op: &Value) -> Markup {
    html! {
        section.card.op id=(op["operationId"].as_str().unwrap_or("")) {
            h3 { code { (method.to_uppercase()) " " (path) } }
            p { (op["summary"].as_str().unwrap_or("")) }
            @if let Some(params) = op["parameters"].as_array() {
                table {
                    caption { "Parameters" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "In" } th scope="col" { "Required" } th scope="col" { "Description" } } }
                    tbody {
                        @for p in params {
                            tr {
                                td { code { (p["name"].as_str().unwrap_or("")) } }
                                td { (p["in"].as_str().unwrap_or("")) }
                                td { (if p["required"].as_bool().unwrap_or(false) { "yes" } else { "no" }) }
                                td { (p["description"].as_str().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
            @if let Some(body) = op.get("requestBody").and_then(body_schema) {
                p { "Body: " a href={ "#schema-" (body) } { code { (body) } } }
            }
            @if let Some(responses) = op["responses"].as_object() {
                ul {
                    @for (code, r) in responses {
                        li {
                            code { (code) } " " (r["description"].as_str().unwrap_or(""))
                            @if let Some(s) = body_schema(r) { " → " code { (s) } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn show(State(state): State<UiState>, s: Session) -> Response {
    let doc = serde_json::to_value(crate::api::openapi_document()).unwrap_or_default();
    let mut by_tag: std::collections::BTreeMap<String, Vec<Markup>> = Default::default();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for m in METHODS {
                if let Some(op) = item.get(m) {
                    let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
                    by_tag.entry(tag).or_default().push(operation(m, path, op));
                }
            }
        }
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    html(page(
        &state,
        &s,
        "API reference",
        html! {
            p { (doc["info"]["description"].as_str().unwrap_or("")) }
            p { "The machine-readable document: " a href="/v1/openapi.json" { "/v1/openapi.json" } " (OpenAPI 3.1)." }
            nav aria-label="API sections" { ul { @for tag in by_tag.keys() { li { a href={ "#tag-" (tag) } { (tag) } } } li { a href="#schemas" { "schemas" } } } }
            @for (tag, ops) in &by_tag {
                h2 id={ "tag-" (tag) } { (tag) }
                @for op in ops { (op) }
            }
            h2 #schemas { "Schemas" }
            @for (name, schema) in &schemas {
                details id={ "schema-" (name) } {
                    summary { code { (name) } }
                    pre { (serde_json::to_string_pretty(schema).unwrap_or_default()) }
                }
            }
        },
    ))
}
