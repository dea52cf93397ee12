//! W3C trace context: a publish request's `traceparent` is kept with its event and sent on
//! every attempt of every delivery, retries (claimed back from the store) included; an
//! invalid one is ignored, and an event without one is delivered without one. With
//! `otlp_endpoint`, the spans reach an OTLP/HTTP receiver of the test's own, in the
//! publisher's trace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use serde_json::json;
use tokio::sync::Notify;

use crate::support::server::ADMIN;
use crate::support::{Fixture, Opts, on_both_backends};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Publishes `data` to `acme` with `traceparent`, if any; the 202's body.
async fn publish_traced(
    f: &Fixture,
    data: serde_json::Value,
    traceparent: Option<&str>,
) -> serde_json::Value {
    let path = "/v1/tenants/acme/events";
    let mut req = f
        .server
        .http
        .post(f.server.url(path))
        .bearer_auth(ADMIN)
        .json(&json!({ "event": "order.created", "data": data }));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    crate::support::openapi::check("POST", path, status, &body);
    assert_eq!(status, 202, "{body}");
    body
}

async fn the_traceparent_goes_with_every_attempt() {
    let f = Fixture::start(Opts::default(), "/hook").await;
    // The first attempt fails: the retry is claimed from the store, and still carries it.
    f.rx.script(&[500]);
    publish_traced(&f, json!({"n": 1}), Some(TRACEPARENT)).await;
    let got = f.rx.wait_count(2).await;
    for r in &got {
        assert_eq!(r.header("traceparent"), TRACEPARENT);
    }
    f.stop().await;
}

async fn invalid_or_absent_traceparents_send_none() {
    let f = Fixture::start(Opts::default(), "/hook").await;
    // Upper-case hex is not W3C trace context: ignored, the event is still accepted.
    let invalid = TRACEPARENT.to_uppercase();
    publish_traced(&f, json!({"n": 1}), Some(&invalid)).await;
    publish_traced(&f, json!({"n": 2}), None).await;
    let got = f.rx.wait_count(2).await;
    for r in &got {
        assert!(r.headers.get("traceparent").is_none(), "{:?}", r.headers);
    }
    f.stop().await;
}

/// A span as the OTLP receiver decoded it: ids in hex, attribute values as text.
#[derive(Clone, Debug)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

impl ExportedSpan {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1:0: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, as a collector takes it.
#[derive(Clone, Default)]
struct OtlpReceiver {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    arrived: Arc<Notify>,
}

impl OtlpReceiver {
    async fn start() -> (Self, String) {
        let me = Self::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(Self::export))
            .with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (me, url)
    }

    async fn export(
        axum::extract::State(me): axum::extract::State<Self>,
        headers: axum::http::HeaderMap,
        body: bytes::Bytes,
    ) -> impl axum::response::IntoResponse {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut spans = me.spans.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                for s in scope.spans {
                    let attributes = s
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, kv.value.map(text).unwrap_or_default()))
                        .collect();
                    spans.push(ExportedSpan {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes,
                    });
                }
            }
        }
        me.arrived.notify_waiters();
        (
            [("content-type", "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    }

    /// Waits until `pred` holds over the spans received so far.
    async fn wait_for(&self, pred: impl Fn(&[ExportedSpan]) -> bool) -> Vec<ExportedSpan> {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let got = self.spans.lock().unwrap();
                if pred(&got) {
                    return got.clone();
                }
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                panic!(
                    "spans not received in time: {:#?}",
                    self.spans.lock().unwrap()
                );
            }
        }
    }
}

fn text(v: AnyValue) -> String {
    match v.value {
        Some(Value::StringValue(s)) => s,
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// A fixture whose server exports its spans to an OTLP receiver of the test's own.
async fn exporting() -> (OtlpReceiver, Fixture) {
    let (otlp, url) = OtlpReceiver::start().await;
    let opts = Opts {
        otlp_endpoint: Some(url),
        ..Opts::default()
    };
    (otlp, Fixture::start(opts, "/hook").await)
}

async fn spans_are_exported_in_the_publishers_trace() {
    let (otlp, f) = exporting().await;
    f.rx.script(&[500]);
    let marker = "payload-marker-7f3a";
    let published = publish_traced(&f, json!({ "secret": marker }), Some(TRACEPARENT)).await;
    let got = f.rx.wait_count(2).await;
    let trace_id = &TRACEPARENT[3..35];
    let parent_id = &TRACEPARENT[36..52];
    // Each attempt sends its own span's context, in the publisher's trace.
    let sent: Vec<&str> = got.iter().map(|r| r.header("traceparent")).collect();
    for tp in &sent {
        assert_eq!(tp.len(), TRACEPARENT.len(), "{tp}");
        assert_eq!(&tp[3..35], trace_id, "{tp}");
        assert_ne!(&tp[36..52], parent_id, "{tp}");
    }
    assert_ne!(sent[0], sent[1], "one span per attempt");
    // Stopping flushes what is queued.
    let (tenant_endpoint, secret) = (f.endpoint.clone(), f.secret.clone());
    f.stop().await;
    let spans = otlp
        .wait_for(|s| s.iter().filter(|s| s.name == "attempt").count() >= 2)
        .await;
    let in_trace: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();

    let publish = in_trace
        .iter()
        .find(|s| s.name == "publish")
        .expect("a publish span");
    assert_eq!(
        publish.parent_span_id, parent_id,
        "a child of the request's span"
    );
    assert_eq!(publish.attr("chime.tenant"), "acme");
    assert_eq!(publish.attr("chime.event.name"), "order.created");
    assert_eq!(
        publish.attr("chime.event.id"),
        published["id"].as_str().unwrap()
    );
    assert_eq!(publish.attr("chime.deliveries"), "1");

    let commit = in_trace
        .iter()
        .find(|s| s.name == "store.commit")
        .expect("a commit span");
    assert_eq!(commit.parent_span_id, publish.span_id);
    assert_eq!(commit.attr("chime.tenant"), "acme");

    let mut attempts: Vec<&&ExportedSpan> =
        in_trace.iter().filter(|s| s.name == "attempt").collect();
    attempts.sort_by_key(|s| s.attr("http.response.status_code").to_owned());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (a, status) in attempts.iter().zip(["200", "500"]) {
        assert_eq!(a.parent_span_id, publish.span_id);
        assert_eq!(a.attr("chime.tenant"), "acme");
        assert_eq!(a.attr("chime.endpoint"), tenant_endpoint);
        assert_eq!(a.attr("http.response.status_code"), status);
        assert!(
            sent.iter().any(|tp| tp[36..52] == a.span_id),
            "the receiver got its context"
        );
    }
    assert_eq!(attempts[0].attr("chime.error_kind"), "");
    assert_eq!(attempts[1].attr("chime.error_kind"), "status");

    // Nothing of the payload or the secret is in any attribute.
    for s in &spans {
        for v in s.attributes.values() {
            assert!(!v.contains(marker) && !v.contains(&secret), "{s:?}");
        }
    }
}

/// With export on and no `traceparent` on the request, the publish span starts the trace and
/// the receiver still gets a context in it.
async fn without_a_traceparent_export_starts_the_trace() {
    let (otlp, f) = exporting().await;
    publish_traced(&f, json!({"n": 1}), None).await;
    let got = f.rx.wait_count(1).await;
    let sent = got[0].header("traceparent").to_owned();
    f.stop().await;
    let spans = otlp
        .wait_for(|s| s.iter().any(|s| s.name == "attempt"))
        .await;
    let publish = spans.iter().find(|s| s.name == "publish").unwrap();
    assert_eq!(publish.parent_span_id, "", "a root span");
    let attempt = spans.iter().find(|s| s.name == "attempt").unwrap();
    assert_eq!(attempt.trace_id, publish.trace_id);
    assert_eq!(attempt.parent_span_id, publish.span_id);
    assert_eq!(sent[3..35], publish.trace_id, "{sent}");
    assert_eq!(sent[36..52], attempt.span_id, "{sent}");
}

on_both_backends!(
    the_traceparent_goes_with_every_attempt,
    invalid_or_absent_traceparents_send_none,
    spans_are_exported_in_the_publishers_trace,
    without_a_traceparent_export_starts_the_trace,
);
