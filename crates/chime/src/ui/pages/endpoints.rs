//! A tenant's endpoints: the list with a form to add one, and each endpoint with its edit
//! form and actions (enable, disable, delete, reveal and rotate the secret, send a test
//! event).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::or_failed;
use crate::api::types::{
    EndpointDetailOut, EndpointOut, EventTypeOut, ListOut, PublishedOut, RotatedOut, SecretOut,
    TenantOut,
};
use crate::ui::UiState;
use crate::ui::call::{Answer, Api, Failed, seg};
use crate::ui::layout::{confirm, csrf, page, when};
use crate::ui::web::{Fields, Post, Session, html};

/// The catalog, for choosing event types (first page: the catalog is short by nature).
async fn catalog(api: &Api) -> Answer<Vec<EventTypeOut>> {
    let l: ListOut<EventTypeOut> = api.get("/v1/event-types?limit=250").await?;
    Ok(l.data)
}

/// The subscription chosen in a form: ticked catalog types plus typed patterns.
fn chosen_events(f: &Fields) -> Option<Vec<String>> {
    let mut events = f.all("events");
    if let Some(more) = f.get("more_events") {
        events.extend(
            more.split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    (!events.is_empty()).then_some(events)
}

/// The event-type picker: each catalogued type with its description, schema and an example.
fn event_picker(types: &[EventTypeOut], chosen: &[String]) -> Markup {
    html! {
        fieldset {
            legend { "Event types" }
            @if types.is_empty() {
                p.muted { "The catalog is empty: type the event names or patterns below." }
            }
            @for t in types {
                div.choice {
                    input type="checkbox" name="events" value=(t.name) id={ "ev-" (t.name) } checked[chosen.contains(&t.name)];
                    label for={ "ev-" (t.name) } { code { (t.name) } " " (t.description) }
                    @if let Some(schema) = &t.schema {
                        details {
                            summary { "Schema and example" }
                            pre { (serde_json::to_string_pretty(schema).unwrap_or_default()) }
                            p { "Example payload:" }
                            pre { (serde_json::to_string_pretty(&json!({"event": t.name, "data": example(schema)})).unwrap_or_default()) }
                        }
                    }
                }
            }
            label for="more-events" { "Other names or patterns (comma separated; " code { "*" } " for all, " code { "order.*" } ")" }
            input #more-events name="more_events" type="text" value=(chosen.iter().filter(|c| !types.iter().any(|t| &&t.name == c)).cloned().collect::<Vec<_>>().join(", "));
        }
    }
}

/// A value that a simple JSON Schema accepts, for showing what an event looks like:
/// `examples`/`default`/`const`/`enum` if given, otherwise a value of each property's type.
pub fn example(schema: &Value) -> Value {
    for key in ["const", "default"] {
        if let Some(v) = schema.get(key) {
            return v.clone();
        }
    }
    if let Some(v) = schema.get("examples").and_then(|e| e.get(0)) {
        return v.clone();
    }
    if let Some(v) = schema.get("enum").and_then(|e| e.get(0)) {
        return v.clone();
    }
    let ty = schema.get("type").and_then(|t| match t {
        Value::Array(a) => a.first().and_then(Value::as_str),
        other => other.as_str(),
    });
    match ty {
        Some("object") | None if schema.get("properties").is_some() => {
            let mut out = serde_json::Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, v) in props.iter().take(50) {
                    out.insert(k.clone(), example(v));
                }
            }
            Value::Object(out)
        }
        Some("object") => json!({}),
        Some("array") => json!([example(schema.get("items").unwrap_or(&Value::Null))]),
        Some("string") => json!("string"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        _ => Value::Null,
    }
}

/// A numeric setting as the API's patch takes it: empty clears it (`null`); anything else is
/// passed on as typed, a number or, if it is not one, the text for the API to refuse.
fn number(f: &Fields, name: &str) -> Value {
    match f.get(name) {
        None => Value::Null,
        Some(t) => t
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(t)),
    }
}

fn health(e: &EndpointOut) -> Markup {
    html! {
        @if !e.enabled {
            span.status.failed { "disabled" }
            @if let Some(why) = &e.disabled_reason { " — " (why) }
        } @else if let Some(since) = &e.failing_since {
            span.status.pending { "failing" } " since " (when(since))
        } @else {
            span.status.succeeded { "healthy" }
        }
    }
}

fn tenant_path(tenant: &str) -> String {
    format!("/v1/tenants/{}", seg(tenant))
}

/// An endpoint in the API.
pub(super) fn endpoint_api(tenant: &str, id: &str) -> String {
    format!("{}/endpoints/{}", tenant_path(tenant), seg(id))
}

/// An endpoint's page.
pub(super) fn endpoint_page(state: &UiState, tenant: &str, id: &str) -> String {
    format!("{}/t/{}/endpoints/{}", state.base(), seg(tenant), seg(id))
}

pub async fn list(
    State(state): State<UiState>,
    s: Session,
    Path(tenant): Path<String>,
) -> Response {
    let r = async {
        let t: TenantOut = s.api.get(&tenant_path(&tenant)).await?;
        let eps: ListOut<EndpointOut> = s
            .api
            .get(&format!("{}/endpoints?limit=250", tenant_path(&tenant)))
            .await?;
        let types = catalog(&s.api).await?;
        let base = format!("{}/t/{}", state.base(), seg(&t.id));
        let writable = !s.claims.read_only;
        Ok(html(page(
            &state,
            &s,
            &format!("Endpoints of {}", t.name.as_deref().unwrap_or(&t.id)),
            html! {
                p { a href={ (base) "/deliveries" } { "Delivery log" } " · " a href={ (base) "/events" } { "Events" } " · " a href={ (base) "/replay" } { "Recover failed deliveries" } @if state.area == crate::ui::session::Area::Dashboard { " · " a href={ (base) "/sources" } { "Sources" } } }
                @if eps.data.is_empty() {
                    p.muted { "No endpoints yet." }
                } @else {
                    table #endpoints {
                        thead { tr { th scope="col" { "Endpoint" } th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "Health" } } }
                        tbody {
                            @for e in &eps.data {
                                tr {
                                    td { a href={ (base) "/endpoints/" (seg(&e.id)) } { (e.id) } @if !e.description.is_empty() { br; small { (e.description) } } }
                                    td.url { (e.url) }
                                    td { (e.events.join(", ")) }
                                    td { (health(e)) }
                                }
                            }
                        }
                    }
                }
                @if writable {
                    h2 { "Add an endpoint" }
                    form.card #add-endpoint method="post" action={ (base) "/endpoints" } {
                        (csrf(&s))
                        label for="url" { "URL" }
                        input #url name="url" type="url" required placeholder="https://example.com/webhooks";
                        label for="description" { "Description" }
                        input #description name="description" type="text";
                        (event_picker(&types, &[]))
                        button type="submit" { "Add endpoint" }
                    }
                }
                @if s.is_admin() && state.area == crate::ui::session::Area::Dashboard {
                    (super::tenants::branding_form(&state, &s, &t))
                }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}

pub async fn create(State(state): State<UiState>, Path(tenant): Path<String>, p: Post) -> Response {
    let body = json!({
        "url": p.fields.get("url").unwrap_or(""),
        "description": p.fields.get("description"),
        "events": chosen_events(&p.fields),
    });
    let r = async {
        let e: EndpointOut = p
            .session
            .api
            .post(&format!("{}/endpoints", tenant_path(&tenant)), body)
            .await?;
        Ok(secret_page(
            &state,
            &p.session,
            &tenant,
            &e.id,
            "Endpoint added",
            e.secret.as_deref().unwrap_or(""),
        ))
    }
    .await;
    or_failed(&state, r)
}

fn secret_page(
    state: &UiState,
    s: &Session,
    tenant: &str,
    id: &str,
    title: &str,
    secret: &str,
) -> Response {
    let back = endpoint_page(state, tenant, id);
    html(page(
        state,
        s,
        title,
        html! {
            p { "The endpoint's signing secret. Keep it in the receiver's configuration; it verifies the " code { "webhook-signature" } " header." }
            p { label for="secret" { "Secret" } input #secret type="text" readonly value=(secret); }
            p { a href=(back) { "Back to the endpoint" } }
        },
    ))
}

pub async fn show(
    State(state): State<UiState>,
    s: Session,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    let r = async {
        let d: EndpointDetailOut = s
            .api
            .get(&endpoint_api(&tenant, &id))
            .await?;
        let types = catalog(&s.api).await?;
        let e = &d.endpoint;
        let base = endpoint_page(&state, &tenant, &e.id);
        let writable = !s.claims.read_only;
        Ok(html(page(
            &state,
            &s,
            &format!("Endpoint {}", e.id),
            html! {
                @for w in &e.warnings { p.warning role="alert" { (w) } }
                dl.facts {
                    dt { "URL" } dd.url { (e.url) }
                    @if let Some(d) = e.destination.describe() { dt { "Destination" } dd { (d) } }
                    dt { "Events" } dd { (e.events.join(", ")) }
                    dt { "Health" } dd { (health(e)) }
                    dt { "Signature" } dd { (format!("{:?}", e.signature).to_lowercase()) }
                    @if let Some(t) = &e.tls {
                        dt { "TLS" } dd {
                            @if t.ca_pem.is_some() { "own CA. " }
                            @if t.client_certificate { "Client certificate set (mutual TLS). " }
                            @if t.insecure_skip_verify { strong { "Certificates NOT verified." } }
                        }
                    }
                    @if let Some(a) = &e.auth {
                        dt { "Authentication" } dd {
                            (a.kind) " (" (a.username.as_deref().or(a.client_id.as_deref()).unwrap_or("")) "; secret set)"
                        }
                    }
                    @if let Some(p) = &e.proxy { dt { "Proxy" } dd { (p) } }
                    dt { "Transformation" } dd {
                        @match (&e.transformation, e.transformation_enabled) {
                            (None, _) => "none. ",
                            (Some(_), true) => "on. ",
                            (Some(_), false) => "off (code kept). ",
                        }
                        a href={ (base) "/transformation" } { (if e.transformation.is_some() { "Edit and try it" } else { "Write one" }) }
                    }
                    dt { "Created" } dd { (when(&e.created_at)) }
                    @if let Some(b) = &d.blocked_by { dt { "Blocked by" } dd { (b.id) } }
                }
                p { a href={ (state.base()) "/t/" (seg(&tenant)) "/deliveries?endpoint=" (seg(&e.id)) } { "Deliveries to this endpoint" } }
                @if writable {
                    div.actions {
                        form method="post" action={ (base) "/" (if e.enabled { "disable" } else { "enable" }) } {
                            (csrf(&s))
                            button type="submit" { (if e.enabled { "Disable" } else { "Enable" }) }
                        }
                        form method="post" action={ (base) "/reveal" } { (csrf(&s)) button type="submit" { "Reveal secret" } }
                        form method="post" action={ (base) "/rotate" } { (csrf(&s)) button type="submit" { "Rotate secret" } }
                        form method="post" action={ (base) "/delete" } { (csrf(&s)) button.danger type="submit" { "Delete" } }
                    }
                    h2 { "Edit" }
                    form.card method="post" action={ (base) "/edit" } {
                        (csrf(&s))
                        label for="url" { "URL" }
                        input #url name="url" type="url" required value=(e.url);
                        label for="description" { "Description" }
                        input #description name="description" type="text" value=(e.description);
                        (event_picker(&types, &e.events))
                        label for="max-in-flight" { "Attempts in flight at once (1–100; empty: the server's default)" }
                        input #max-in-flight name="max_in_flight" type="text" inputmode="numeric" value=(e.max_in_flight.map(|n| n.to_string()).unwrap_or_default());
                        label for="rate-limit" { "Attempts started per second at most (empty: no limit)" }
                        input #rate-limit name="rate_limit_per_s" type="text" inputmode="numeric" value=(e.rate_limit_per_s.map(|n| n.to_string()).unwrap_or_default());
                        label for="filter" { "Payload filter (JSONPath, e.g. " code { "$.data[?@.amount > 100]" } "; empty: every event)" }
                        input #filter name="filter" type="text" value=(e.filter.as_deref().unwrap_or(""));
                        button type="submit" { "Save" }
                    }
                    h2 { "Send a test event" }
                    form.card method="post" action={ (base) "/test" } {
                        (csrf(&s))
                        label for="test-event" { "Event type (only this endpoint receives it)" }
                        input #test-event name="event" type="text" required list="catalog" value=(types.first().map(|t| t.name.as_str()).unwrap_or("chime.test"));
                        datalist #catalog { @for t in &types { option value=(t.name) {} } }
                        label for="test-data" { "Data (JSON)" }
                        textarea #test-data name="data" rows="4" { (types.first().and_then(|t| t.schema.as_ref()).map(|s| example(s).to_string()).unwrap_or_else(|| "{\"test\":true}".into())) }
                        button type="submit" { "Send test event" }
                    }
                }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}

pub async fn act(
    State(state): State<UiState>,
    Path((tenant, id, action)): Path<(String, String, String)>,
    p: Post,
) -> Response {
    let api = &p.session.api;
    let path = endpoint_api(&tenant, &id);
    let back = endpoint_page(&state, &tenant, &id);
    let ask = |q: &str| html(confirm(&state, &p.session, &p.path, &p.fields, q, &back));
    let r: Answer<Response> = async {
        match action.as_str() {
            "enable" | "disable" => {
                let _: EndpointOut = api
                    .patch(&path, json!({ "enabled": action == "enable" }))
                    .await?;
            }
            "edit" => {
                let _: EndpointOut = api
                    .patch(
                        &path,
                        json!({
                            "url": p.fields.get("url"),
                            "description": p.fields.get("description").unwrap_or(""),
                            "events": chosen_events(&p.fields).unwrap_or_default(),
                            "max_in_flight": number(&p.fields, "max_in_flight"),
                            "rate_limit_per_s": number(&p.fields, "rate_limit_per_s"),
                            "filter": p.fields.get("filter"),
                        }),
                    )
                    .await?;
            }
            "delete" if !p.fields.confirmed() => {
                return Ok(ask(&format!(
                    "Delete endpoint {id} with its deliveries and attempts? This cannot be undone."
                )));
            }
            "delete" => {
                api.delete(&path).await?;
                return Ok(
                    Redirect::to(&format!("{}/t/{}", state.base(), seg(&tenant))).into_response(),
                );
            }
            "reveal" => {
                let s: SecretOut = api.get(&format!("{path}/secret")).await?;
                return Ok(secret_page(
                    &state, &p.session, &tenant, &id, "Secret", &s.secret,
                ));
            }
            "rotate" if !p.fields.confirmed() => {
                return Ok(ask(
                    "Rotate the secret? The old one keeps signing for 24 hours, then stops.",
                ));
            }
            "rotate" => {
                let r: RotatedOut = api
                    .post(&format!("{path}/secret/rotate"), json!({}))
                    .await?;
                return Ok(secret_page(
                    &state,
                    &p.session,
                    &tenant,
                    &id,
                    "Secret rotated",
                    &r.secret,
                ));
            }
            "test" => {
                let data: Value = serde_json::from_str(p.fields.get("data").unwrap_or("{}"))
                    .map_err(|e| {
                        Failed::new(
                            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                            format!("the data is not JSON: {e}"),
                        )
                    })?;
                let published: PublishedOut = api
                    .post(
                        &format!("{path}/test"),
                        json!({ "event": p.fields.get("event").unwrap_or(""), "data": data }),
                    )
                    .await?;
                return Ok(Redirect::to(&format!(
                    "{}/t/{}/deliveries?event_id={}",
                    state.base(),
                    seg(&tenant),
                    seg(&published.id)
                ))
                .into_response());
            }
            _ => return Err(Failed::no_such_action()),
        }
        Ok(Redirect::to(&back).into_response())
    }
    .await;
    or_failed(&state, r)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn examples_follow_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"},
            "kind": {"enum": ["a", "b"]}, "tags": {"type": "array", "items": {"type": "string"}}
        }});
        assert_eq!(
            super::example(&schema),
            json!({"id": 1, "name": "string", "kind": "a", "tags": ["string"]})
        );
        assert_eq!(
            super::example(&json!({"examples": [{"x": 1}]})),
            json!({"x": 1})
        );
    }
}
