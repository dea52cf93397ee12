//! Transformations (issue 21): an endpoint's JavaScript reshapes each delivery in a sandbox.
//! What the receiver gets (body, headers, path, signature), cancelling, refusals when saved
//! and when run, each limit, retries sending the stored bytes, edits and replays, and a slow
//! transformation beside another endpoint's deliveries. Real server, real receiver, both
//! stores.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Opts, Receiver, TestServer, delivery_to};

const SLACK: &str = r#"
function handler(webhook) {
  webhook.data = { text: `Order ${webhook.data.order_id}: ${webhook.data.amount} EUR` };
  return webhook;
}"#;

async fn server(opts: Opts) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), opts).await;
    server.create_tenant("acme").await;
    (dir, server)
}

/// Adds an endpoint of `acme` for every event, with `code` as its transformation; its id and
/// secret.
async fn endpoint(server: &TestServer, url: &str, code: Option<&str>) -> (String, String) {
    let mut body = json!({ "url": url });
    if let Some(code) = code {
        body["transformation"] = json!(code);
    }
    let (s, b) = server
        .admin("POST", "/v1/tenants/acme/endpoints", Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        b["id"].as_str().unwrap().to_owned(),
        b["secret"].as_str().unwrap().to_owned(),
    )
}

async fn patch(server: &TestServer, endpoint: &str, body: Value) -> (StatusCode, Value) {
    server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{endpoint}"),
            Some(body),
        )
        .await
}

async fn the_examples_reshape_what_is_sent() {
    let (_dir, server) = server(Opts::default()).await;
    let rx = Receiver::start().await;
    let (slack, secret) = endpoint(&server, &rx.url("/slack"), Some(SLACK)).await;
    let published = server
        .publish(
            "acme",
            "order_created",
            json!({"order_id": 42, "amount": 10}),
        )
        .await;
    let got = rx.wait_count(1).await;
    assert_eq!(&got[0].body[..], br#"{"text":"Order 42: 10 EUR"}"#);
    assert_eq!(got[0].header("content-type"), "application/json");
    // Signed over the bytes sent, not the event as published.
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .expect("the transformed body is what is signed");
    server
        .wait_status("acme", &delivery_to(&published, &slack), "succeeded")
        .await;
    let (s, b) = server
        .admin(
            "DELETE",
            &format!("/v1/tenants/acme/endpoints/{slack}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");

    // Renamed fields, a header, a path and a query within the origin, a new event name.
    let rename = r#"
function handler(webhook) {
  const { order_id, amount, ...rest } = webhook.data;
  webhook.data = { ...rest, id: order_id, total: amount };
  webhook.event = "legacy." + webhook.event;
  webhook.headers["x-legacy"] = "yes";
  webhook.url = webhook.url + "/v1?source=chime";
  console.log("renamed", order_id);
  return webhook;
}"#;
    let (legacy, _) = endpoint(&server, &rx.url("/hooks"), Some(rename)).await;
    server
        .publish(
            "acme",
            "order_created",
            json!({"order_id": 7, "amount": 3, "note": "n"}),
        )
        .await;
    let got = rx.wait_count(2).await;
    let body: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body, json!({"id": 7, "total": 3, "note": "n"}));
    assert_eq!(got[1].header("x-legacy"), "yes");
    assert_eq!(got[1].path, "/hooks/v1");
    assert_eq!(got[1].query.as_deref(), Some("source=chime"));

    // A text body for a receiver that does not read JSON.
    let text = r#"function handler(w) { w.body = "order " + w.data.order_id; return w; }"#;
    let (s, b) = patch(&server, &legacy, json!({ "transformation": text })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["transformation"], text);
    assert_eq!(b["transformation_enabled"], true);
    server
        .publish("acme", "order_created", json!({"order_id": 8}))
        .await;
    let got = rx.wait_count(3).await;
    assert_eq!(&got[2].body[..], b"order 8");
    assert_eq!(got[2].header("content-type"), "text/plain; charset=utf-8");

    // Turned off, the code stays and deliveries go as published; on again, it runs.
    let (s, b) = patch(&server, &legacy, json!({ "transformation_enabled": false })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["transformation"], text);
    assert_eq!(b["transformation_enabled"], false);
    server
        .publish("acme", "order_created", json!({"order_id": 9}))
        .await;
    let got = rx.wait_count(4).await;
    let body: Value = serde_json::from_slice(&got[3].body).unwrap();
    assert_eq!(
        body,
        json!({"event": "order_created", "data": {"order_id": 9}})
    );
    // Removed with null.
    let (s, b) = patch(&server, &legacy, json!({ "transformation": null })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("transformation").is_none(), "{b}");
    server.stop().await;
}

async fn cancelling_skips_the_delivery_with_the_reason() {
    let (_dir, server) = server(Opts::default()).await;
    let rx = Receiver::start().await;
    let code = r#"
function handler(w) {
  if (w.data.test) { w.cancel = true; return w; }
  return w;
}"#;
    let (ep, _) = endpoint(&server, &rx.url("/"), Some(code)).await;
    let skipped = server
        .publish("acme", "order_created", json!({"test": true}))
        .await;
    let sent = server
        .publish("acme", "order_created", json!({"test": false}))
        .await;
    server
        .wait_status("acme", &delivery_to(&sent, &ep), "succeeded")
        .await;
    let id = delivery_to(&skipped, &ep);
    server.wait_status("acme", &id, "skipped").await;
    let attempts = server.attempts("acme", &id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["error_kind"], "cancelled", "{attempts:?}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("cancelled by the transformation"),
        "{attempts:?}"
    );
    assert_eq!(rx.received().len(), 1, "only the other event was sent");
    server.stop().await;
}

async fn bad_code_is_refused_when_saved_and_nothing_changes() {
    let (_dir, server) = server(Opts::default()).await;
    let rx = Receiver::start().await;
    let (ep, _) = endpoint(&server, &rx.url("/"), Some(SLACK)).await;
    let syntax = "function handler(w) {\n  return w +;\n}";
    let (s, b) = patch(&server, &ep, json!({ "transformation": syntax })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let detail = b["detail"].as_str().unwrap();
    assert!(detail.contains("line 2"), "{detail}");
    assert!(detail.contains("column"), "{detail}");
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({ "url": rx.url("/"), "transformation": syntax })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let big = format!(
        "function handler(w) {{ return w; }}\n//{}",
        "x".repeat(70 * 1024)
    );
    let (s, b) = patch(&server, &ep, json!({ "transformation": big })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (s, b) = patch(&server, &ep, json!({ "transformation": "const x = 1;" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("handler"), "{b}");
    let (s, b) = patch(&server, &ep, json!({ "transformation": "while (true) {}" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    // None of it was stored.
    let (_, shown) = server
        .admin("GET", &format!("/v1/tenants/acme/endpoints/{ep}"), None)
        .await;
    assert_eq!(shown["transformation"], SLACK);
    // No transformation to turn on.
    let (other, _) = endpoint(&server, &rx.url("/"), None).await;
    let (s, b) = patch(&server, &other, json!({ "transformation_enabled": true })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    server.stop().await;
}

/// The first attempt of the delivery of a fresh event to `ep`, once it failed.
async fn first_failure(server: &TestServer, ep: &str) -> Value {
    let published = server
        .publish("acme", "order_created", json!({"order_id": 1}))
        .await;
    let id = delivery_to(&published, ep);
    let attempt = crate::support::eventually(Duration::from_secs(20), || async {
        server.attempts("acme", &id).await.pop()
    })
    .await
    .expect("an attempt");
    assert_eq!(attempt["error_kind"], "transformation", "{attempt}");
    attempt
}

async fn each_limit_and_refusal_fails_the_attempt_and_says_which() {
    let (_dir, server) = server(Opts {
        retry_schedule: "1h",
        ..Opts::default()
    })
    .await;
    let rx = Receiver::start().await;
    let cases = [
        ("function handler(w) { while (true) {} }", "time"),
        (
            "function handler(w) { const a = []; while (true) a.push(new Array(1e6).fill(1)); }",
            "memory",
        ),
        (
            "function handler(w) { w.body = 'x'.repeat(2 * 1024 * 1024); return w; }",
            "larger than the limit",
        ),
        (
            "function handler(w) { throw new Error('no order id'); }",
            "no order id",
        ),
        (
            "function handler(w) { w.headers['webhook-id'] = 'x'; return w; }",
            "webhook-id",
        ),
        (
            "function handler(w) { w.headers['transfer-encoding'] = 'chunked'; return w; }",
            "transfer-encoding",
        ),
        (
            "function handler(w) { w.url = 'http://169.254.169.254/latest'; return w; }",
            "origin",
        ),
        ("function handler(w) { return 42; }", "object"),
    ];
    for (code, says) in cases {
        let (ep, _) = endpoint(&server, &rx.url("/"), Some(code)).await;
        let attempt = first_failure(&server, &ep).await;
        let error = attempt["error"].as_str().unwrap().to_lowercase();
        assert!(error.contains(says), "{code}: {error}");
        let (s, b) = server
            .admin("DELETE", &format!("/v1/tenants/acme/endpoints/{ep}"), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }
    assert!(rx.received().is_empty(), "nothing was sent");
    server.stop().await;
}

async fn retries_send_the_stored_bytes_and_replays_use_the_current_code() {
    let (_dir, server) = server(Opts {
        retry_schedule: "50ms,50ms,50ms,1s,1s,1s,1s,1s",
        ..Opts::default()
    })
    .await;
    let rx = Receiver::start().await;
    rx.script(&[500]);
    // Different output at each run: only a stored result sends the same bytes twice.
    let v1 = "function handler(w) { w.data = { v: 1, r: Math.random() }; return w; }";
    let (ep, _) = endpoint(&server, &rx.url("/"), Some(v1)).await;
    let published = server
        .publish("acme", "order_created", json!({"order_id": 1}))
        .await;
    let id = delivery_to(&published, &ep);
    rx.wait_count(1).await;
    let v2 = "function handler(w) { w.data = { v: 2 }; return w; }";
    let (s, b) = patch(&server, &ep, json!({ "transformation": v2 })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    server.wait_status("acme", &id, "succeeded").await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body, "the retry sent the same bytes");
    assert!(got[0].body.starts_with(br#"{"v":1,"#));

    // A manual retry is a new start: the current transformation.
    let (s, b) = server
        .admin(
            "POST",
            &format!("/v1/tenants/acme/deliveries/{id}/retry"),
            None,
        )
        .await;
    assert!(s.is_success(), "{s} {b}");
    let got = rx.wait_count(3).await;
    assert_eq!(&got[2].body[..], br#"{"v":2}"#);

    // A run that failed keeps nothing: the next attempt runs the code as edited meanwhile.
    let broken = "function handler(w) { throw new Error('not yet'); }";
    let (s, b) = patch(&server, &ep, json!({ "transformation": broken })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let published = server
        .publish("acme", "order_created", json!({"order_id": 2}))
        .await;
    let id = delivery_to(&published, &ep);
    crate::support::eventually(Duration::from_secs(20), || async {
        (!server.attempts("acme", &id).await.is_empty()).then_some(())
    })
    .await
    .expect("a failed attempt");
    let fixed = "function handler(w) { w.data = { fixed: w.data.order_id }; return w; }";
    let (s, b) = patch(&server, &ep, json!({ "transformation": fixed })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = server.wait_status("acme", &id, "succeeded").await;
    assert!(d["attempts"].as_u64().unwrap() >= 2, "{d}");
    let got = rx.wait_count(4).await;
    assert_eq!(&got[3].body[..], br#"{"fixed":2}"#);
    server.stop().await;
}

async fn a_slow_transformation_does_not_hold_up_another_endpoint() {
    let (_dir, server) = server(Opts::default()).await;
    let slow_rx = Receiver::start().await;
    let fast_rx = Receiver::start().await;
    // 40 ms of CPU per run, inside the 50 ms limit: it succeeds, slowly.
    let slow = "function handler(w) { const end = Date.now() + 40; while (Date.now() < end) {} return w; }";
    let fast = "function handler(w) { w.data = { ok: true }; return w; }";
    let (slow_ep, _) = endpoint(&server, &slow_rx.url("/"), Some(slow)).await;
    let (fast_ep, _) = endpoint(&server, &fast_rx.url("/"), Some(fast)).await;
    // Both endpoints subscribe to everything: route by event name with filters instead.
    for (ep, name) in [(&slow_ep, "slow"), (&fast_ep, "fast")] {
        let (s, b) = patch(&server, ep, json!({ "events": [name] })).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let slow_events = 60;
    for i in 0..slow_events {
        server.publish("acme", "slow", json!({ "i": i })).await;
    }
    for i in 0..5 {
        server.publish("acme", "fast", json!({ "i": i })).await;
    }
    fast_rx.wait_count(5).await;
    // The fast endpoint's five went while the slow one's were still being transformed.
    assert!(
        slow_rx.received().len() < slow_events,
        "the slow endpoint finished first: {}",
        slow_rx.received().len()
    );
    slow_rx
        .wait_for(Duration::from_secs(60), |r| r.len() >= slow_events)
        .await;
    server.stop().await;
}

async fn the_test_endpoint_runs_a_sample() {
    let (_dir, server) = server(Opts::default()).await;
    let rx = Receiver::start().await;
    let (ep, _) = endpoint(&server, &rx.url("/"), Some(SLACK)).await;
    let path = format!("/v1/tenants/acme/endpoints/{ep}/transformation/test");
    let (s, b) = server
        .admin(
            "POST",
            &path,
            Some(json!({"event": "order_created", "data": {"order_id": 5, "amount": 2}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(b["payload"], json!({"text": "Order 5: 2 EUR"}));
    assert!(b["took_ms"].as_f64().unwrap() >= 0.0);
    // Code not yet saved, with a log line.
    let (s, b) = server
        .admin(
            "POST",
            &path,
            Some(json!({"event": "order_created", "data": {}, "code": "function handler(w) { console.log('seen', w.event); w.cancel = true; return w; }"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["logs"], json!(["seen order_created"]), "{b}");
    assert!(b["cancelled"].is_string(), "{b}");
    // A runtime error, with where it was thrown.
    let (s, b) = server
        .admin(
            "POST",
            &path,
            Some(json!({"event": "order_created", "data": {}, "code": "function handler(w) {\n  return w.data.x.y;\n}"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["ok"], false, "{b}");
    assert_eq!(b["error"]["kind"], "runtime", "{b}");
    assert_eq!(b["error"]["line"], 2, "{b}");
    // Another tenant cannot test this tenant's endpoint.
    server.create_tenant("other").await;
    let (s, _) = server
        .admin(
            "POST",
            &format!("/v1/tenants/other/endpoints/{ep}/transformation/test"),
            Some(json!({"event": "order_created", "data": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    server.stop().await;
}

async fn a_source_transformation_names_and_reshapes_the_event() {
    let (_dir, server) = server(Opts::default()).await;
    let rx = Receiver::start().await;
    let (_ep, _) = server
        .create_endpoint("acme", &rx.url("/internal"), json!(["payment.*"]))
        .await;
    // A GitHub-like payload becomes an internal event with a clean name and two fields;
    // pings are dropped.
    let code = r#"
function handler(w) {
  if (w.data.zen) { w.cancel = true; return w; }
  w.event = "payment." + w.data.type.split(".")[1];
  w.data = { id: w.data.id, cents: w.data.data.amount };
  return w;
}"#;
    let (s, src) = server
        .admin(
            "POST",
            "/v1/tenants/acme/sources",
            Some(json!({"name": "psp", "verify": {"scheme": "none"}, "transformation": code})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{src}");
    assert_eq!(src["transformation_enabled"], true, "{src}");
    let url = src["ingest_url"].as_str().unwrap().to_owned();
    let source = format!("/v1/tenants/acme/sources/{}", src["id"].as_str().unwrap());
    let post = |body: Value| {
        let url = url.clone();
        async move {
            let res = reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, published) = post(
        json!({"id": "evt_1", "type": "charge.succeeded", "data": {"amount": 500, "card": "4242"}}),
    )
    .await;
    assert_eq!(s, 202, "{published}");
    assert_eq!(published["event"], "payment.succeeded", "{published}");
    let got = rx.wait_count(1).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body, json!({"id": "evt_1", "cents": 500}));
    // The same code on a sample, through the source's test endpoint.
    let (s, tried) = server
        .admin(
            "POST",
            &format!("{source}/transformation/test"),
            Some(json!({"event": "charge.succeeded",
                "data": {"id": "evt_9", "type": "charge.refunded", "data": {"amount": 70}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{tried}");
    assert_eq!(tried["event"], "payment.refunded", "{tried}");
    assert_eq!(
        tried["payload"],
        json!({"id": "evt_9", "cents": 70}),
        "{tried}"
    );
    // Cancelled: accepted, nothing stored.
    let (s, answer) = post(json!({"zen": "Keep it simple."})).await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["cancelled"], true, "{answer}");
    // A failing run refuses the request (the provider sends it again) and is kept among the
    // source's rejections.
    let (s, b) = server
        .admin(
            "PATCH",
            &source,
            Some(json!({"transformation": "function handler(w) { return w.data.missing.field; }"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, refused) = post(json!({"id": "evt_2", "type": "charge.failed"})).await;
    assert_eq!(s, 422, "{refused}");
    assert_eq!(refused["code"], "transformation_failed", "{refused}");
    let (_, rejections) = server
        .admin("GET", &format!("{source}/rejections"), None)
        .await;
    assert_eq!(
        rejections["data"][0]["code"], "transformation_failed",
        "{rejections}"
    );
    assert_eq!(rx.received().len(), 1);
    server.stop().await;
}

crate::support::on_both_backends!(
    the_examples_reshape_what_is_sent,
    cancelling_skips_the_delivery_with_the_reason,
    bad_code_is_refused_when_saved_and_nothing_changes,
    each_limit_and_refusal_fails_the_attempt_and_says_which,
    retries_send_the_stored_bytes_and_replays_use_the_current_code,
    a_slow_transformation_does_not_hold_up_another_endpoint,
    the_test_endpoint_runs_a_sample,
    a_source_transformation_names_and_reshapes_the_event,
);
