//! An endpoint's transformation editor: the code, whether it runs, and a sample to run it on
//! (through `POST …/transformation/test`, the same sandbox and limits as deliveries) before
//! saving it.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::endpoints::{endpoint_api, endpoint_page};
use super::or_failed;
use crate::api::types::{EndpointDetailOut, EndpointOut, TransformationTestOut};
use crate::ui::UiState;
use crate::ui::call::{Answer, Failed};
use crate::ui::layout::{csrf, page};
use crate::ui::web::{Post, Session, html};

/// What a new transformation starts from.
const STARTER: &str = "function handler(webhook) {
  // webhook: { event, data, headers, url }. Change what you like and return it:
  // data is the body sent (or set body to a string), headers are added,
  // url may change its path and query, cancel = true skips the delivery.
  return webhook;
}";

/// What the editor shows: the code and sample as typed, and the last run's result.
struct Draft<'a> {
    code: &'a str,
    enabled: bool,
    event: &'a str,
    data: &'a str,
    result: Option<TransformationTestOut>,
}

pub async fn editor(
    State(state): State<UiState>,
    s: Session,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    let r = async {
        let d: EndpointDetailOut = s.api.get(&endpoint_api(&tenant, &id)).await?;
        let e = d.endpoint;
        let draft = Draft {
            code: e.transformation.as_deref().unwrap_or(STARTER),
            enabled: e.transformation.is_none() || e.transformation_enabled,
            event: "chime.test",
            data: "{\"order_id\": 42, \"amount\": 10}",
            result: None,
        };
        Ok(editor_page(&state, &s, &tenant, &e, draft))
    }
    .await;
    or_failed(&state, r)
}

/// `save` stores the code (empty: removes it) and whether it runs; `try` runs the code as
/// typed on the sample and shows the editor again with the result.
pub async fn act(
    State(state): State<UiState>,
    Path((tenant, id, action)): Path<(String, String, String)>,
    p: Post,
) -> Response {
    let api = &p.session.api;
    let path = endpoint_api(&tenant, &id);
    // Browsers send a textarea's lines ended by CRLF: kept as the editor showed them, LF.
    let code = p.fields.get("code").map(|c| c.replace("\r\n", "\n"));
    let code = code.as_deref();
    let enabled = p.fields.get("enabled") == Some("on");
    let r: Answer<Response> = async {
        match action.as_str() {
            "save" => {
                let body = match code {
                    Some(c) => json!({ "transformation": c, "transformation_enabled": enabled }),
                    None => json!({ "transformation": null }),
                };
                let _: EndpointOut = api.patch(&path, body).await?;
                let editor = endpoint_page(&state, &tenant, &id) + "/transformation";
                Ok(Redirect::to(&editor).into_response())
            }
            "try" => {
                let event = p.fields.get("event").unwrap_or("chime.test");
                let data_text = p.fields.get("data").unwrap_or("{}");
                let data: Value = serde_json::from_str(data_text).map_err(|e| {
                    Failed::new(
                        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                        format!("the sample data is not JSON: {e}"),
                    )
                })?;
                let result: TransformationTestOut = api
                    .post(
                        &format!("{path}/transformation/test"),
                        json!({ "event": event, "data": data, "code": code.unwrap_or("") }),
                    )
                    .await?;
                let d: EndpointDetailOut = api.get(&path).await?;
                let draft = Draft {
                    code: code.unwrap_or(""),
                    enabled,
                    event,
                    data: data_text,
                    result: Some(result),
                };
                Ok(editor_page(&state, &p.session, &tenant, &d.endpoint, draft))
            }
            _ => Err(Failed::no_such_action()),
        }
    }
    .await;
    or_failed(&state, r)
}

fn editor_page(
    state: &UiState,
    s: &Session,
    tenant: &str,
    e: &EndpointOut,
    draft: Draft<'_>,
) -> Response {
    let base = endpoint_page(state, tenant, &e.id);
    let writable = !s.claims.read_only;
    let limits = state.app.transforms.limits();
    html(page(
        state,
        s,
        &format!("Transformation of {}", e.id),
        html! {
            p { a href=(base) { "Back to the endpoint" } " · " (e.url) }
            p {
                "JavaScript run on each delivery before its first attempt, in a sandbox with no "
                "network, files or timers, at most " (limits.time.as_millis()) " ms and "
                (limits.memory_bytes >> 20) " MiB a run (this server's limits). What it returns "
                "is kept with the delivery: retries send the same bytes."
            }
            @if let Some(r) = &draft.result { (result(r)) }
            form.card method="post" action={ (base) "/transformation/try" } {
                (csrf(s))
                label for="code" { "Code (defines " code { "handler(webhook)" } ")" }
                textarea #code.code name="code" rows="16" spellcheck="false" { (draft.code) }
                label {
                    input type="checkbox" name="enabled" checked[draft.enabled];
                    " Runs on deliveries (off keeps the code)"
                }
                h2 { "Sample" }
                label for="sample-event" { "Event type" }
                input #sample-event name="event" type="text" value=(draft.event);
                label for="sample-data" { "Data (JSON)" }
                textarea #sample-data.code name="data" rows="5" spellcheck="false" { (draft.data) }
                div.actions {
                    button #try-transformation type="submit" { "Run on the sample" }
                    @if writable {
                        button #save-transformation type="submit" formaction={ (base) "/transformation/save" } { "Save" }
                    }
                }
            }
        },
    ))
}

fn result(r: &TransformationTestOut) -> Markup {
    html! {
        section.card #transformation-result aria-live="polite" {
            h2 { "Result " small { (format!("{:.2} ms", r.took_ms)) } }
            @if let Some(err) = &r.error {
                p.warning role="alert" {
                    (err.kind) ": " (err.message)
                    @if let (Some(l), Some(c)) = (err.line, err.column) { " (line " (l) ", column " (c) ")" }
                }
            }
            @if let Some(why) = &r.cancelled { p { "Cancelled: the delivery would be skipped (" (why) ")." } }
            @if r.ok && r.cancelled.is_none() {
                dl.facts {
                    @if let Some(ev) = &r.event { dt { "Event" } dd { (ev) } }
                    @if let Some(u) = &r.url { dt { "URL" } dd.url { (u) } }
                    @if let Some(ct) = &r.content_type { dt { "Content type" } dd { (ct) } }
                    @if let Some(h) = &r.headers {
                        @for (k, v) in h { dt { (k) } dd { (v) } }
                    }
                }
                pre.code {
                    @if let Some(p) = &r.payload { (serde_json::to_string_pretty(p).unwrap_or_default()) }
                    @if let Some(b) = &r.body { (b) }
                }
            }
            @if !r.logs.is_empty() {
                h3 { "Logs" }
                pre.code { @for l in &r.logs { (l) "\n" } }
            }
        }
    }
}
