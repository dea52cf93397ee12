//! The delivery log (filters, cursor pages, live updates), each delivery with its attempts,
//! retry and skip, and replay ("recover") with a dry-run count first.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::json;

use super::or_failed;
use crate::api::types::{AttemptOut, DeliveryOut, EndpointDetailOut, EventOut, ListOut, ReplayOut};
use crate::store::DeliveryStatus;
use crate::ui::UiState;
use crate::ui::call::{Answer, Api, Failed, seg};
use crate::ui::layout::{confirm, csrf, page, status, when};
use crate::ui::web::{Post, Session, html};

/// The log's filters, as the page's query string and the API's.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "blank")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    event: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    event_id: Option<String>,
    /// RFC 3339, created at or after.
    #[serde(default, skip_serializing_if = "blank")]
    since: Option<String>,
    /// RFC 3339, created before.
    #[serde(default, skip_serializing_if = "blank")]
    until: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    cursor: Option<String>,
}

fn blank(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(|s| s.trim().is_empty())
}

impl Filters {
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    fn without_cursor(&self) -> Self {
        Self {
            cursor: None,
            ..self.clone()
        }
    }
}

async fn page_of(api: &Api, tenant: &str, f: &Filters) -> Answer<ListOut<DeliveryOut>> {
    api.get(&format!(
        "/v1/tenants/{}/deliveries?limit=50&{}",
        seg(tenant),
        f.query()
    ))
    .await
}

/// The table's rows: also what the live stream sends.
fn rows(base: &str, tenant: &str, list: &[DeliveryOut]) -> Markup {
    html! {
        @for d in list {
            tr {
                td { a href={ (base) "/t/" (seg(tenant)) "/deliveries/" (seg(&d.id)) } { (d.id) } }
                td { code { (d.event) } }
                td { (d.endpoint_id) }
                td { (status(d.status)) }
                td.num { (d.attempts) }
                td { (d.last_status_code.map(|c| c.to_string()).or_else(|| d.last_error_kind.clone()).unwrap_or_default()) }
                td { (when(&d.created_at)) }
            }
        }
    }
}

pub async fn list(
    State(state): State<UiState>,
    s: Session,
    Path(tenant): Path<String>,
    Query(f): Query<Filters>,
) -> Response {
    let r = async {
        let list = page_of(&s.api, &tenant, &f).await?;
        let base = state.base();
        let here = format!("{base}/t/{}/deliveries", seg(&tenant));
        let live = f.cursor.is_none().then(|| {
            format!("{here}/live?{}", f.without_cursor().query())
        });
        Ok(html(page(
            &state,
            &s,
            &format!("Deliveries of {tenant}"),
            html! {
                form.filters method="get" action=(here) role="search" {
                    label for="f-status" { "Status" }
                    select #f-status name="status" {
                        option value="" { "any" }
                        @for st in ["pending", "succeeded", "failed", "skipped"] {
                            option value=(st) selected[f.status.as_deref() == Some(st)] { (st) }
                        }
                    }
                    label for="f-event" { "Event name" }
                    input #f-event name="event" type="text" value=(f.event.as_deref().unwrap_or(""));
                    label for="f-endpoint" { "Endpoint id" }
                    input #f-endpoint name="endpoint" type="text" value=(f.endpoint.as_deref().unwrap_or(""));
                    label for="f-event-id" { "Event id" }
                    input #f-event-id name="event_id" type="text" value=(f.event_id.as_deref().unwrap_or(""));
                    label for="f-since" { "From (RFC 3339)" }
                    input #f-since name="since" type="text" placeholder="2026-12-01T00:00:00Z" value=(f.since.as_deref().unwrap_or(""));
                    label for="f-until" { "Before (RFC 3339)" }
                    input #f-until name="until" type="text" placeholder="2026-12-02T00:00:00Z" value=(f.until.as_deref().unwrap_or(""));
                    button type="submit" { "Filter" }
                }
                @if live.is_some() {
                    p.muted aria-live="polite" { "Updates live as deliveries happen." }
                }
                table {
                    thead { tr {
                        th scope="col" { "Delivery" } th scope="col" { "Event" } th scope="col" { "Endpoint" }
                        th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Last answer" } th scope="col" { "Created" }
                    } }
                    tbody #deliveries data-live=[live] { (rows(base, &tenant, &list.data)) }
                }
                @if let Some(c) = &list.next_cursor {
                    p { a href={ (here) "?" (Filters { cursor: Some(c.clone()), ..f.clone() }.query()) } { "Older deliveries →" } }
                }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}

/// How long one live stream lasts; the browser's `EventSource` reconnects by itself.
const LIVE_FOR: Duration = Duration::from_secs(300);
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// Server-sent events: the log's first page as table rows, sent whenever it changed.
pub async fn live(
    State(state): State<UiState>,
    s: Session,
    Path(tenant): Path<String>,
    Query(f): Query<Filters>,
) -> Response {
    // Refused now (403/404) rather than as an empty stream.
    if let Err(e) = page_of(&s.api, &tenant, &f).await {
        return crate::ui::web::failed(&state, e);
    }
    let base = state.base();
    stream(&state, LIVE_EVERY, move || {
        let (api, tenant, f) = (s.api.clone(), tenant.clone(), f.clone());
        async move {
            page_of(&api, &tenant, &f)
                .await
                .ok()
                .map(|l| rows(base, &tenant, &l.data).into_string())
        }
    })
}

/// A stream that sends what `render` makes whenever it differs from the last sent, until
/// shutdown or `LIVE_FOR`.
pub fn stream<F, Fut>(state: &UiState, every: Duration, render: F) -> Response
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send + 'static,
{
    let stop = state.shutdown.clone();
    let s = async_stream(render, every, stop);
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

fn async_stream<F, Fut>(
    render: F,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let end = tokio::time::Instant::now() + LIVE_FOR;
        let mut last = String::new();
        loop {
            if let Some(html) = render().await
                && html != last
            {
                let event = Event::default().event("html").data(html.replace('\n', " "));
                if tx.send(Ok(event)).await.is_err() {
                    break;
                }
                last = html;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tx.closed() => break,
                _ = tokio::time::sleep_until(end) => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The headers chime sends with each attempt, as far as they are known after the fact: the
/// signature differs per attempt and is not stored.
fn request_headers(
    d: &DeliveryOut,
    a: &AttemptOut,
    ep: Option<&EndpointDetailOut>,
) -> Vec<(String, String)> {
    let ts = time::OffsetDateTime::parse(
        &a.started_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| t.unix_timestamp().to_string())
    .unwrap_or_default();
    let mut h = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "user-agent".to_owned(),
            format!("chime/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("webhook-id".to_owned(), d.event_id.clone()),
        ("webhook-timestamp".to_owned(), ts),
        (
            "webhook-signature".to_owned(),
            "v1,… (signed with the endpoint's secret; not stored)".to_owned(),
        ),
    ];
    if let Some(ep) = ep {
        h.extend(
            ep.endpoint
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    h
}

pub async fn show(
    State(state): State<UiState>,
    s: Session,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    let r = async {
        let t = seg(&tenant);
        let d: DeliveryOut = s
            .api
            .get(&format!("/v1/tenants/{t}/deliveries/{}", seg(&id)))
            .await?;
        let attempts: ListOut<AttemptOut> = s
            .api
            .get(&format!("/v1/tenants/{t}/deliveries/{}/attempts?limit=250", seg(&id)))
            .await?;
        let event: Option<EventOut> = s
            .api
            .get(&format!("/v1/tenants/{t}/events/{}", seg(&d.event_id)))
            .await
            .ok();
        let ep: Option<EndpointDetailOut> = s
            .api
            .get(&format!("/v1/tenants/{t}/endpoints/{}", seg(&d.endpoint_id)))
            .await
            .ok();
        let body = event.as_ref().map(|e| {
            String::from_utf8_lossy(&crate::model::envelope(&e.event, &e.data)).into_owned()
        });
        let base = format!("{}/t/{t}/deliveries/{}", state.base(), seg(&d.id));
        Ok(html(page(
            &state,
            &s,
            &format!("Delivery {}", d.id),
            html! {
                dl.facts {
                    dt { "Status" } dd #delivery-status { (status(d.status)) }
                    dt { "Event" } dd { code { (d.event) } " " (d.event_id) }
                    dt { "Endpoint" } dd { a href={ (state.base()) "/t/" (t) "/endpoints/" (seg(&d.endpoint_id)) } { (d.endpoint_id) } @if let Some(ep) = &ep { " " span.url { (ep.endpoint.url) } } }
                    dt { "Attempts" } dd { (d.attempts) }
                    @if let Some(n) = &d.next_attempt_at { dt { "Next attempt" } dd { (when(n)) } }
                    dt { "Created" } dd { (when(&d.created_at)) }
                }
                @if !s.claims.read_only {
                    div.actions {
                        @if d.status != DeliveryStatus::Pending || d.attempts > 0 {
                            form method="post" action={ (base) "/retry" } { (csrf(&s)) button #retry type="submit" { "Retry now" } }
                        }
                        @if d.status == DeliveryStatus::Pending {
                            form method="post" action={ (base) "/skip" } { (csrf(&s)) button.danger type="submit" { "Skip" } }
                        }
                    }
                }
                h2 { "Request body" }
                @match &body {
                    Some(b) if event.as_ref().is_some_and(|e| e.purged_at.is_none()) => { pre.body { (b) } }
                    _ => { p.muted { "The payload was removed by retention." } }
                }
                h2 { "Attempts" }
                @if attempts.data.is_empty() { p.muted { "No attempt yet." } }
                ol.attempts {
                    @for a in &attempts.data {
                        li {
                            h3 {
                                (when(&a.started_at)) " — "
                                @if a.succeeded { span.status.succeeded { "succeeded" } } @else { span.status.failed { "failed" } }
                            }
                            dl.facts {
                                dt { "Status code" } dd { (a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "none".into())) }
                                @if let Some(k) = &a.error_kind { dt { "Error kind" } dd { code { (k) } } }
                                @if let Some(e) = &a.error { dt { "Error" } dd { (e) } }
                                dt { "Duration" } dd { (a.duration_ms) " ms" }
                            }
                            details {
                                summary { "Request headers" }
                                table { tbody { @for (k, v) in request_headers(&d, a, ep.as_ref()) { tr { th scope="row" { (k) } td { code { (v) } } } } } }
                            }
                            h4 { "Response (captured)" }
                            pre.body { (a.response.as_deref().unwrap_or("")) }
                        }
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
    let here = format!(
        "{}/t/{}/deliveries/{}",
        state.base(),
        seg(&tenant),
        seg(&id)
    );
    let r: Answer<Response> = async {
        match action.as_str() {
            "skip" if !p.fields.confirmed() => {
                return Ok(html(confirm(
                    &state,
                    &p.session,
                    &p.path,
                    &p.fields,
                    "Skip this delivery? It will not be attempted (it can be replayed later).",
                    &here,
                )));
            }
            "retry" | "skip" => {
                let _: DeliveryOut = p
                    .session
                    .api
                    .post(
                        &format!(
                            "/v1/tenants/{}/deliveries/{}/{action}",
                            seg(&tenant),
                            seg(&id)
                        ),
                        json!({}),
                    )
                    .await?;
            }
            _ => return Err(Failed::no_such_action()),
        }
        Ok(Redirect::to(&here).into_response())
    }
    .await;
    or_failed(&state, r)
}

fn replay_fields(state: &UiState, s: &Session, tenant: &str, since: &str) -> Markup {
    html! {
        form.card method="post" action={ (state.base()) "/t/" (seg(tenant)) "/replay" } {
            (csrf(s))
            label for="since" { "Failed since (RFC 3339, e.g. 2026-12-01T00:00:00Z; empty: all)" }
            input #since name="since" type="text" value=(since);
            label for="r-endpoint" { "Endpoint id (optional)" }
            input #r-endpoint name="endpoint_id" type="text";
            label for="r-event" { "Event name (optional)" }
            input #r-event name="event" type="text";
            button type="submit" { "Count what would be replayed" }
        }
    }
}

pub async fn replay_form(
    State(state): State<UiState>,
    s: Session,
    Path(tenant): Path<String>,
) -> Response {
    let since = crate::model::format_time(crate::model::now_millis() - 24 * 3600 * 1000);
    let body = html! {
        p { "Deliver again every delivery that failed since a time, with its original " code { "webhook-id" } ". First you see how many match." }
        @if s.claims.read_only { p.muted { "This session is read-only." } } @else { (replay_fields(&state, &s, &tenant, &since)) }
    };
    html(page(&state, &s, "Recover failed deliveries", body))
}

pub async fn replay(State(state): State<UiState>, Path(tenant): Path<String>, p: Post) -> Response {
    let dry_run = !p.fields.confirmed();
    let body = json!({
        "since": p.fields.get("since"),
        "endpoint_id": p.fields.get("endpoint_id"),
        "event": p.fields.get("event"),
        "dry_run": dry_run,
    });
    let r = async {
        let out: ReplayOut = p
            .session
            .api
            .post(&format!("/v1/tenants/{}/replay", seg(&tenant)), body)
            .await?;
        let back = format!("{}/t/{}/replay", state.base(), seg(&tenant));
        if dry_run {
            return Ok(html(confirm(
                &state,
                &p.session,
                &p.path,
                &p.fields,
                &format!("{} failed deliveries match. Deliver them again?", out.count),
                &back,
            )));
        }
        Ok(html(page(
            &state,
            &p.session,
            "Replayed",
            html! {
                p role="status" { (out.count) " deliveries are queued again." @if out.more { " More match: run it again for the rest." } }
                p { a href={ (state.base()) "/t/" (seg(&tenant)) "/deliveries" } { "To the delivery log" } }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}
