//! `/v1/tenants/{tenant}/events`: publishing (the start of the hot path) and reading events.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use serde_json::value::RawValue;

use super::error::{ApiError, ApiResult};
use super::extract::{PageParams, Principal, Query, parse_json, read_body};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::types::{
    DeliveryOut, EndpointPath, ErrorOut, EventIn, EventListParams, EventOut, EventPath,
    PublishedDeliveryOut, PublishedOut, TenantPath, TestEventIn,
};
use super::{AppState, ListOut};
use crate::model::{EndpointId, EventId, TraceParent, format_time, now_millis, parse_event_name};
use crate::spans::Span;
use crate::store::{Delivery, DeliveryFilter, DeliveryStatus, Event, NewEvent, Page};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, publish))
        .routes(routes!(show))
        .routes(routes!(send_test))
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            ApiError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    Ok(Some(key.to_owned()))
}

/// Publishes, and counts the answer: accepted (with the time to the 202) or refused by code.
/// The principal is extracted here, not by axum, so refused tokens are counted too.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/events",
    tag = "events",
    summary = "Publish an event to every subscribed endpoint",
    params(TenantPath, ("Idempotency-Key" = Option<String>, Header, description = "Publishing again with the same key stores the event once"), ("traceparent" = Option<String>, Header, description = "W3C Trace Context: kept with the event and sent on each delivery, so receivers continue the trace. A value that is not a valid version-00 traceparent is ignored")),
    request_body = EventIn,
    responses((status = 202, description = "Stored durably; deliveries start. A repeated Idempotency-Key answers what was stored the first time, with `Idempotent-Replayed: true`", body = PublishedOut, headers(("Idempotent-Replayed" = String, description = "`true` when the key was seen before and nothing new was stored"))))
)]
async fn publish(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Path(tenant_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let mut p = Publishing::begin(&state, &tenant_id, req.headers());
    let answer = publish_event(&state, principal, tenant_id, req, &mut p).await;
    p.end(&state, answer)
}

/// One publish as it is observed, whatever its kind (an API event, a test event): its
/// `publish` span, when it started, and the trace context its event carries.
pub(super) struct Publishing {
    span: Span,
    started: std::time::Instant,
    traceparent: Option<TraceParent>,
}

impl Publishing {
    pub(super) fn begin(state: &AppState, tenant_id: &str, headers: &HeaderMap) -> Self {
        let started = std::time::Instant::now();
        // An invalid traceparent is ignored, not refused (W3C Trace Context processing model).
        let incoming = TraceParent::from_headers(headers);
        let span = state
            .spans
            .start("publish", SpanKind::Server, incoming.as_ref(), || {
                vec![KeyValue::new("chime.tenant", tenant_id.to_owned())]
            });
        // The event carries the publish span's context when spans are exported (so the
        // store's commit and the attempts are its children), else the request's own.
        let traceparent = span.traceparent().or(incoming);
        Self {
            span,
            started,
            traceparent,
        }
    }

    /// Counts a refusal (metrics and span) and passes the answer on.
    pub(super) fn end(
        mut self,
        state: &AppState,
        answer: ApiResult<Response>,
    ) -> ApiResult<Response> {
        if let Err(e) = &answer {
            state.metrics.event_refused(Some(e.code));
            self.span.fail(e.code.as_str());
        }
        answer
    }
}

async fn publish_event(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    tenant_id: String,
    req: Request,
    p: &mut Publishing,
) -> ApiResult<Response> {
    principal?.check_tenant(&tenant_id)?;
    // Read from the request itself: a `HeaderMap` extractor would copy every header first.
    let key = idempotency_key(req.headers())?;
    let body = read_body(req, state, "event").await?;
    let input: EventIn = parse_json(&body)?;
    accept(state, tenant_id, input, key, None, p).await
}

/// Checks an event against the catalog and stores it (through the dispatcher's group
/// commit): what a publish and a test event share.
async fn accept(
    state: &AppState,
    tenant_id: String,
    input: EventIn<'_>,
    key: Option<String>,
    only_endpoint: Option<EndpointId>,
    p: &mut Publishing,
) -> ApiResult<Response> {
    let span = &mut p.span;
    let name = parse_event_name(&input.event)?;
    span.set(|| KeyValue::new("chime.event.name", name.clone()));
    state
        .catalog
        .check(&name, input.data.get())
        .await
        .map_err(|r| match r {
            crate::catalog::Rejection::Uncatalogued => ApiError::invalid(format!(
                "event type {name:?} is not in the catalog (this server accepts only catalogued events)"
            )),
            crate::catalog::Rejection::Invalid(errors) => ApiError::invalid(format!(
                "data does not match the schema of {name:?}: {}",
                errors.join("; ")
            )),
            crate::catalog::Rejection::Unenforceable(why) => ApiError::invalid(format!(
                "the stored schema of {name:?} cannot be enforced ({why}); save the event type with a schema this server accepts"
            )),
            crate::catalog::Rejection::Store(e) => e.into(),
        })?;
    let payload = crate::model::envelope(&name, input.data);
    let new = NewEvent {
        id: EventId::new(),
        tenant_id,
        name,
        payload,
        idempotency_key: key,
        created_at: now_millis(),
        filters: Default::default(),
        traceparent: p.traceparent.clone(),
        only_endpoint,
        inbound: None,
    };
    let published = state
        .dispatch
        .publish(new)
        .await
        .map_err(ApiError::or_not_found("tenant"))?;
    let repeated = published.repeated;
    span.set(|| KeyValue::new("chime.event.id", published.event.id.to_string()));
    span.set(|| KeyValue::new("chime.deliveries", published.deliveries.len() as i64));
    span.set(|| KeyValue::new("chime.idempotent_replay", repeated));
    state
        .metrics
        .event_accepted(&published.event.tenant_id, p.started.elapsed());
    Ok(published_answer(published, StatusCode::ACCEPTED))
}

/// What a publish answers: `202` with the event and its deliveries. A repeat (its
/// idempotency key seen before) answers what the first call answered, with
/// `Idempotent-Replayed: true` and `repeat_status`.
pub(super) fn published_answer(
    published: crate::store::Published,
    repeat_status: StatusCode,
) -> Response {
    let repeated = published.repeated;
    let out = PublishedOut {
        id: published.event.id.into(),
        event: published.event.name,
        timestamp: format_time(published.event.created_at),
        deliveries: published
            .deliveries
            .into_iter()
            .map(|d| PublishedDeliveryOut {
                id: d.id.into(),
                endpoint_id: d.endpoint_id.into(),
                // A repeat answers what the first call answered: deliveries start pending (or
                // skipped), whatever became of them since.
                status: match d.status {
                    DeliveryStatus::Skipped => DeliveryStatus::Skipped,
                    _ => DeliveryStatus::Pending,
                },
            })
            .collect(),
    };
    let status = if repeated {
        repeat_status
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, Json(out)).into_response();
    if repeated {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/endpoints/{endpoint}/test",
    tag = "endpoints",
    summary = "Send a test event to this endpoint alone",
    description = "Stored and delivered like any event (signed, retried, in the delivery log), but only this endpoint receives it, whatever its subscription and filter. `event` defaults to `chime.test` and `data` to `{\"test\": true}`; with `strict_event_types`, the event must be in the catalog.",
    params(EndpointPath),
    request_body = TestEventIn,
    responses((status = 202, description = "Stored; its one delivery starts", body = PublishedOut), (status = 409, description = "The endpoint is disabled", body = ErrorOut))
)]
async fn send_test(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Path((tenant_id, endpoint_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let mut p = Publishing::begin(&state, &tenant_id, req.headers());
    let answer = async {
        let principal = principal?;
        let endpoint = super::endpoints::load(&state, &principal, &tenant_id, &endpoint_id).await?;
        if !endpoint.enabled {
            return Err(ApiError::new(
                super::error::Code::Conflict,
                "the endpoint is disabled: enable it to send it a test event",
            ));
        }
        let body = read_body(req, &state, "test event").await?;
        let input: TestEventIn = if body.is_empty() {
            TestEventIn::default()
        } else {
            parse_json(&body)?
        };
        let default_data = RawValue::from_string(r#"{"test":true}"#.into()).expect("JSON");
        let input = EventIn {
            event: input
                .event
                .unwrap_or(std::borrow::Cow::Borrowed("chime.test")),
            data: input.data.unwrap_or(&default_data),
        };
        accept(&state, tenant_id, input, None, Some(endpoint.id), &mut p).await
    }
    .await;
    p.end(&state, answer)
}

#[derive(serde::Deserialize)]
struct Envelope {
    data: Box<RawValue>,
}

impl EventOut {
    fn of(e: Event, deliveries: Option<Vec<Delivery>>) -> Self {
        let null = || RawValue::from_string("null".into()).expect("null is JSON");
        let data = match &e.inbound {
            // A source event is its body: JSON as it came, anything else as text.
            Some(_) if e.purged_at.is_some() => null(),
            Some(_) => serde_json::from_slice::<Box<RawValue>>(&e.payload).unwrap_or_else(|_| {
                serde_json::value::to_raw_value(&String::from_utf8_lossy(&e.payload))
                    .unwrap_or_else(|_| null())
            }),
            None => serde_json::from_slice::<Envelope>(&e.payload)
                .map(|env| env.data)
                .unwrap_or_else(|_| null()),
        };
        Self {
            id: e.id.into(),
            event: e.name,
            timestamp: format_time(e.created_at),
            idempotency_key: e.idempotency_key,
            data,
            purged_at: e.purged_at.map(format_time),
            deliveries: deliveries.map(|ds| ds.into_iter().map(DeliveryOut::from).collect()),
            source_id: e.inbound.as_ref().map(|i| i.source_id.to_string()),
            content_type: e.inbound.as_ref().map(|i| i.content_type.clone()),
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/events",
    tag = "events",
    summary = "List events, newest first",
    params(TenantPath, EventListParams),
    responses((status = 200, description = "A page of events", body = ListOut<EventOut>))
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant_id): Path<String>,
    Query(params): Query<EventListParams>,
) -> ApiResult<Json<ListOut<EventOut>>> {
    super::visible_tenant(&state, &principal, &tenant_id).await?;
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page()?;
    let name = params.event.as_deref().map(parse_event_name).transpose()?;
    let listed = state
        .store
        .list_events(&tenant_id, name.as_deref(), page)
        .await?;
    Ok(Json(ListOut::from_listed(listed, |e| {
        EventOut::of(e, None)
    })))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/events/{event}",
    tag = "events",
    summary = "Show an event with its deliveries",
    params(EventPath),
    responses((status = 200, description = "The event", body = EventOut))
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
) -> ApiResult<Json<EventOut>> {
    super::visible_tenant(&state, &principal, &tenant_id).await?;
    let id = super::extract::path_id(EventId::parse, &id, "event")?;
    let event = state
        .store
        .get_event(&tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let filter = DeliveryFilter {
        event_id: Some(id.into()),
        ..Default::default()
    };
    let deliveries = state
        .store
        .list_deliveries(
            &tenant_id,
            &filter,
            Page {
                limit: 250,
                cursor: None,
            },
        )
        .await?;
    Ok(Json(EventOut::of(event, Some(deliveries.rows))))
}
