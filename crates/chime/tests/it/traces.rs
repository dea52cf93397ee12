//! W3C trace context: a publish request's `traceparent` is kept with its event and sent on
//! every attempt of every delivery, retries (claimed back from the store) included; an
//! invalid one is ignored, and an event without one is delivered without one.

use serde_json::json;

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

on_both_backends!(
    the_traceparent_goes_with_every_attempt,
    invalid_or_absent_traceparents_send_none,
);
