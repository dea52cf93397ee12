//! Delivery that respects receivers and isolates endpoints (issue 6): Retry-After, 410 Gone,
//! the circuit breaker and auto-disable, rate limits, ordered endpoints, Ed25519 signatures,
//! custom headers, payload filters, isolation, operational events and replay.

use std::time::Duration;

use crate::support::{Fixture, Opts, Receiver, TestServer, eventually, on_both_backends};
use serde_json::{Value, json};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

async fn endpoint_with(server: &TestServer, tenant: &str, body: Value) -> Value {
    let (s, b) = server
        .admin(
            "POST",
            &format!("/v1/tenants/{tenant}/endpoints"),
            Some(body),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

/// Waits until chime has disabled the endpoint, and returns it as the API shows it.
async fn wait_disabled(server: &TestServer, tenant: &str, ep: &str) -> Value {
    let path = format!("/v1/tenants/{tenant}/endpoints/{ep}");
    eventually(Duration::from_secs(10), || async {
        let (_, e) = server.admin("GET", &path, None).await;
        (e["enabled"] == false).then_some(e)
    })
    .await
    .expect("the endpoint was disabled")
}

async fn system_events(server: &TestServer, name: &str) -> Vec<Value> {
    let (s, b) = server
        .admin(
            "GET",
            &format!("/v1/tenants/_chime/events?event={name}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"].as_array().unwrap().clone()
}

async fn retry_after_on_429_delays_the_next_attempt() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let (server, rx) = (&fx.server, &fx.rx);
    rx.script(&[429]);
    rx.set_retry_after(Some("1"));
    let ev = server.publish("acme", "ping", json!({})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    server.wait_status("acme", id, "succeeded").await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    // The schedule says 20 ms; the receiver asked for 1 s, and was obeyed.
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "second attempt after {gap:?}"
    );
    fx.stop().await;
}

async fn gone_410_disables_the_endpoint_and_says_so() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let (server, rx, ep) = (&fx.server, &fx.rx, &fx.endpoint);
    rx.set_default(410);
    server.publish("acme", "ping", json!(1)).await;
    let disabled = wait_disabled(server, "acme", ep).await;
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{disabled}"
    );
    assert_eq!(rx.received().len(), 1, "no attempt after the 410");
    // New events for it are recorded as skipped.
    let ev = server.publish("acme", "ping", json!(2)).await;
    assert_eq!(ev["deliveries"][0]["status"], "skipped");
    // And the operator's system tenant has the event.
    let events = eventually(Duration::from_secs(10), || async {
        let e = system_events(server, "chime.endpoint.disabled").await;
        (!e.is_empty()).then_some(e)
    })
    .await
    .expect("an endpoint.disabled event");
    assert_eq!(events[0]["data"]["endpoint_id"], ep.as_str());
    assert_eq!(events[0]["data"]["tenant_id"], "acme");
    fx.stop().await;
}

async fn failing_endpoint_is_probed_and_its_deliveries_keep_their_retries() {
    let opts = Opts {
        retry_schedule: "10ms,10ms,10ms",
        failure_threshold: 3,
        probe_interval: "200ms",
        endpoint_concurrency: 1,
        ..Opts::default()
    };
    let fx = Fixture::start(opts, "/h").await;
    let (server, rx) = (&fx.server, &fx.rx);
    rx.set_default(500);
    // The operator listens to the system tenant with an endpoint of their own.
    let ops = Receiver::start().await;
    server
        .create_endpoint("_chime", &ops.url("/ops"), json!(["chime.endpoint.*"]))
        .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let ev = server.publish("acme", "ping", json!(i)).await;
        ids.push(ev["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    // Three failures open the circuit; then only probes, one per interval. Without the
    // breaker the 10 deliveries × 4 attempts would all have failed within a few dozen ms.
    rx.wait_count(3 + 3).await;
    for id in &ids {
        let d = server.delivery("acme", id).await;
        assert_ne!(
            d["status"], "failed",
            "a delivery spent its retries on a dead endpoint: {d}"
        );
    }
    assert!(
        rx.received().len() < 20,
        "probes only: {}",
        rx.received().len()
    );

    // The receiver recovers: the next probe succeeds and everything is delivered.
    rx.set_default(200);
    for id in &ids {
        server.wait_status("acme", id, "succeeded").await;
    }
    ops.wait_for(Duration::from_secs(10), |r| {
        r.iter().any(|r| {
            std::str::from_utf8(&r.body)
                .unwrap()
                .contains("chime.endpoint.recovered")
        })
    })
    .await;
    // Operational events come in the same envelope as every other delivery: `event` first.
    for r in ops.received() {
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.starts_with(r#"{"event":"chime.endpoint."#), "{body}");
    }
    fx.stop().await;
}

async fn endpoint_failing_too_long_is_disabled() {
    let opts = Opts {
        retry_schedule: "10ms,10ms,10ms,10ms,10ms,10ms",
        failure_threshold: 2,
        probe_interval: "100ms",
        auto_disable_after: "300ms",
        ..Opts::default()
    };
    let fx = Fixture::start(opts, "/h").await;
    let (server, rx, ep) = (&fx.server, &fx.rx, &fx.endpoint);
    rx.set_default(503);
    server.publish("acme", "ping", json!(1)).await;
    let e = wait_disabled(server, "acme", ep).await;
    assert!(
        e["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failing since"),
        "{e}"
    );
    fx.stop().await;
}

async fn rate_limit_spaces_attempts() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let rx = Receiver::start().await;
    server.create_tenant("acme").await;
    endpoint_with(
        &server,
        "acme",
        json!({"url": rx.url("/h"), "rate_limit_per_s": 5}),
    )
    .await;
    for i in 0..10 {
        server.publish("acme", "ping", json!(i)).await;
    }
    let got = rx.wait_count(10).await;
    // A burst of at most 5, then 5 per second: the 10th cannot come before ~1 s.
    let span = got[9].at - got[0].at;
    assert!(
        span >= Duration::from_millis(800),
        "10 attempts in {span:?} at 5/s"
    );
    server.stop().await;
}

async fn ordered_endpoint_delivers_in_acceptance_order_through_retries_and_restarts() {
    let dir = tempdir();
    let opts = Opts {
        retry_schedule: "50ms,50ms,50ms",
        ..Opts::default()
    };
    let server = TestServer::start(dir.path(), opts.clone()).await;
    let rx = Receiver::start().await;
    rx.script(&[500, 500]);
    server.create_tenant("acme").await;
    let ep = endpoint_with(
        &server,
        "acme",
        json!({"url": rx.url("/h"), "ordered": true}),
    )
    .await;
    assert_eq!(ep["ordered"], true);
    for i in 0..5 {
        server.publish("acme", "seq", json!(i)).await;
    }
    // Part-way through, stop and restart the server on the same data.
    rx.wait_count(4).await;
    server.stop().await;
    let server = TestServer::start(dir.path(), opts).await;
    for i in 5..8 {
        server.publish("acme", "seq", json!(i)).await;
    }
    let got = rx.wait_count(2 + 8).await;
    let order: Vec<i64> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["data"]
                .as_i64()
                .unwrap()
        })
        .collect();
    // The head failed twice and was retried before anything behind it went out.
    assert_eq!(order, vec![0, 0, 0, 1, 2, 3, 4, 5, 6, 7]);
    server.stop().await;
}

async fn ordered_endpoint_shows_its_blocking_head_which_can_be_skipped() {
    let dir = tempdir();
    let opts = Opts {
        retry_schedule: "1h",
        ..Opts::default()
    };
    let server = TestServer::start(dir.path(), opts).await;
    let rx = Receiver::start().await;
    rx.script(&[500]);
    server.create_tenant("acme").await;
    let ep = endpoint_with(
        &server,
        "acme",
        json!({"url": rx.url("/h"), "ordered": true}),
    )
    .await;
    let ep = ep["id"].as_str().unwrap();
    let head = server.publish("acme", "seq", json!(0)).await;
    let head_id = head["deliveries"][0]["id"].as_str().unwrap();
    server.publish("acme", "seq", json!(1)).await;
    let shown = eventually(Duration::from_secs(10), || async {
        let (_, e) = server
            .admin("GET", &format!("/v1/tenants/acme/endpoints/{ep}"), None)
            .await;
        (e["blocked_by"]["id"] == head_id).then_some(e)
    })
    .await
    .expect("the failed head is shown as blocking");
    assert_eq!(shown["blocked_by"]["attempts"], 1);
    assert_eq!(rx.received().len(), 1, "nothing behind the head was sent");

    let (s, d) = server
        .admin(
            "POST",
            &format!("/v1/tenants/acme/deliveries/{head_id}/skip"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["status"], "skipped");
    let got = rx.wait_count(2).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got[1].body).unwrap()["data"],
        1
    );
    let (s, _) = server
        .admin(
            "POST",
            &format!("/v1/tenants/acme/deliveries/{head_id}/skip"),
            None,
        )
        .await;
    assert_eq!(s, 409, "only pending deliveries can be skipped");
    server.stop().await;
}

async fn ed25519_endpoints_sign_with_v1a_verifiable_by_public_key() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let rx = Receiver::start().await;
    server.create_tenant("acme").await;
    let ep = endpoint_with(
        &server,
        "acme",
        json!({"url": rx.url("/h"), "signature": "ed25519"}),
    )
    .await;
    assert_eq!(ep["signature"], "ed25519");
    assert!(ep["secret"].as_str().unwrap().starts_with("whsk_"));
    let public = ep["public_key"].as_str().unwrap().to_owned();
    assert!(public.starts_with("whpk_"));
    let (_, shown) = server
        .admin(
            "GET",
            &format!("/v1/tenants/acme/endpoints/{}", ep["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        shown["public_key"],
        public.as_str(),
        "readable without the secret"
    );
    server.publish("acme", "ping", json!({"x": 1})).await;
    let got = rx.wait_count(1).await;
    assert!(got[0].header("webhook-signature").starts_with("v1a,"));
    let verifier =
        chime_webhooks::Verifier::new(chime_webhooks::VerifyKey::parse(&public).unwrap());
    let headers = chime_webhooks::Headers::from(&got[0].headers);
    verifier
        .verify(&headers, &got[0].body)
        .expect("verifies with the public key");
    server.stop().await;
}

async fn custom_headers_and_payload_filters() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let rx = Receiver::start().await;
    server.create_tenant("acme").await;
    for bad in [
        json!({"url": rx.url("/h"), "headers": {"webhook-id": "x"}}),
        json!({"url": rx.url("/h"), "headers": {"Content-Type": "text/plain"}}),
        json!({"url": rx.url("/h"), "headers": {"Host": "evil"}}),
        json!({"url": rx.url("/h"), "headers": {"Transfer-Encoding": "chunked"}}),
        json!({"url": rx.url("/h"), "headers": {"X-Ok": "a\nb"}}),
        json!({"url": rx.url("/h"), "filter": "$[?@.data.amount >"}),
        json!({"url": rx.url("/h"), "max_in_flight": 0}),
        json!({"url": rx.url("/h"), "ordered": true, "max_in_flight": 4}),
    ] {
        let (s, b) = server
            .admin("POST", "/v1/tenants/acme/endpoints", Some(bad.clone()))
            .await;
        assert_eq!(s, 422, "{bad}: {b}");
    }
    endpoint_with(
        &server,
        "acme",
        json!({
            "url": rx.url("/big"),
            "headers": {"X-Api-Key": "k-123"},
            "filter": "$[?@.data.amount > 100]"
        }),
    )
    .await;
    let small = server
        .publish("acme", "order.created", json!({"amount": 50}))
        .await;
    assert!(
        small["deliveries"].as_array().unwrap().is_empty(),
        "filtered out"
    );
    let big = server
        .publish("acme", "order.created", json!({"amount": 150}))
        .await;
    assert_eq!(big["deliveries"].as_array().unwrap().len(), 1);
    let got = rx.wait_count(1).await;
    assert_eq!(got[0].header("x-api-key"), "k-123");
    server.stop().await;
}

async fn a_slow_endpoint_does_not_hold_up_a_healthy_one() {
    let dir = tempdir();
    // Long enough that no held request times out (and is retried) during the test.
    let opts = Opts {
        request_timeout: "120s",
        ..Opts::default()
    };
    let server = TestServer::start(dir.path(), opts).await;
    let slow = Receiver::start().await;
    slow.hold();
    let healthy = Receiver::start().await;
    server.create_tenant("acme").await;
    server
        .create_endpoint("acme", &slow.url("/slow"), json!(["slow.*"]))
        .await;
    server
        .create_endpoint("acme", &healthy.url("/ok"), json!(["ok.*"]))
        .await;
    // A deep backlog for the slow endpoint, far beyond its concurrency and queue.
    for i in 0..400 {
        server.publish("acme", "slow.thing", json!(i)).await;
    }
    let mut ids = Vec::new();
    for i in 0..50 {
        let ev = server.publish("acme", "ok.thing", json!(i)).await;
        ids.push(ev["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    // Every healthy delivery completes while the slow receiver still holds its requests.
    for id in &ids {
        server.wait_status("acme", id, "succeeded").await;
    }
    assert_eq!(healthy.received().len(), 50);
    assert!(
        slow.received().len() <= 8,
        "the slow endpoint's cap holds: {}",
        slow.received().len()
    );
    slow.release();
    server.stop().await;
}

/// Issue 15: one tenant's receivers that accept and never answer held every slot of
/// `max_in_flight` until their timeouts, and every other tenant waited. A tenant now holds at
/// most `tenant_max_in_flight`, so another tenant's deliveries start at once.
async fn a_tenants_hung_receivers_do_not_hold_up_other_tenants() {
    let dir = tempdir();
    let opts = Opts {
        // Far longer than the test: a hung attempt never ends on its own here.
        request_timeout: "120s",
        max_in_flight: 16,
        tenant_max_in_flight: 8,
        ..Opts::default()
    };
    let server = TestServer::start(dir.path(), opts).await;
    let hung = Receiver::start().await;
    hung.hold();
    let healthy = Receiver::start().await;
    server.create_tenant("hog").await;
    server.create_tenant("calm").await;
    for i in 0..6 {
        server
            .create_endpoint("hog", &hung.url(&format!("/h{i}")), json!(["*"]))
            .await;
    }
    server
        .create_endpoint("calm", &healthy.url("/ok"), json!(["*"]))
        .await;
    // 60 deliveries that want 48 slots (6 endpoints x 8) of the 16 there are.
    for i in 0..10 {
        server.publish("hog", "stuck", json!(i)).await;
    }
    eventually(Duration::from_secs(10), || async {
        (hung.received().len() >= 8).then_some(())
    })
    .await
    .expect("the hung receiver holds the tenant's attempts");
    let mut ids = Vec::new();
    for i in 0..5 {
        let ev = server.publish("calm", "fine", json!(i)).await;
        ids.push(ev["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        server.wait_status("calm", id, "succeeded").await;
    }
    assert_eq!(
        hung.received().len(),
        8,
        "the hung tenant holds its cap and no more"
    );
    hung.release();
    server.stop().await;
}

/// Attempts that run to the request timeout open the circuit after `TIMEOUTS_TO_OPEN` in a
/// row, sooner than `failure_threshold`: each held a slot for the whole timeout.
async fn timeouts_open_the_circuit_after_three() {
    let dir = tempdir();
    let opts = Opts {
        request_timeout: "300ms",
        retry_schedule: "20ms,20ms,20ms,20ms,20ms",
        ..Opts::default()
    };
    let server = TestServer::start(dir.path(), opts).await;
    let hung = Receiver::start().await;
    hung.hold();
    server.create_tenant("acme").await;
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({"url": hung.url("/h"), "max_in_flight": 1})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let ep = b["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        server.publish("acme", "x", json!(i)).await;
    }
    let shown = eventually(Duration::from_secs(20), || async {
        let (_, e) = server
            .admin("GET", &format!("/v1/tenants/acme/endpoints/{ep}"), None)
            .await;
        e["failing_since"].is_string().then_some(e)
    })
    .await
    .expect("the endpoint becomes failing");
    assert_eq!(
        hung.received().len(),
        chime::dispatch::limits::TIMEOUTS_TO_OPEN as usize,
        "{shown}"
    );
    hung.release();
    server.stop().await;
}

async fn exhausted_deliveries_are_announced_and_replayed_with_the_same_webhook_id() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let (server, rx, ep) = (&fx.server, &fx.rx, &fx.endpoint);
    rx.set_default(500);
    let ev = server
        .publish("acme", "order.created", json!({"n": 1}))
        .await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    server.wait_status("acme", id, "failed").await;
    let exhausted = eventually(Duration::from_secs(10), || async {
        let e = system_events(server, "chime.delivery.exhausted").await;
        (!e.is_empty()).then_some(e)
    })
    .await
    .expect("a delivery.exhausted event");
    assert_eq!(exhausted[0]["data"]["delivery_id"], id);

    rx.set_default(200);
    let (s, r) = server
        .admin(
            "POST",
            "/v1/tenants/acme/replay",
            Some(json!({"endpoint_id": ep, "event": "order.created", "since": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["count"], 1);
    server.wait_status("acme", id, "succeeded").await;
    let got = rx.received();
    assert_eq!(
        got.last().unwrap().header("webhook-id"),
        ev["id"].as_str().unwrap()
    );
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/replay",
            Some(json!({"status": ["pending"]})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    fx.stop().await;
}

async fn event_type_schemas_validate_published_data() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    server.create_tenant("acme").await;
    let schema = json!({
        "type": "object",
        "required": ["order_id", "amount"],
        "properties": {"order_id": {"type": "integer"}, "amount": {"type": "number", "minimum": 0}}
    });
    let (s, t) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "order_created", "description": "an order was placed", "schema": schema})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, b) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "bad", "schema": {"type": 12}})),
        )
        .await;
    assert_eq!(s, 422, "an invalid schema is refused: {b}");
    let (s, _) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "order_created"})),
        )
        .await;
    assert_eq!(s, 409);

    server
        .publish("acme", "order_created", json!({"order_id": 1, "amount": 5}))
        .await;
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/events",
            Some(json!({"event": "order_created", "data": {"order_id": "x", "amount": -1}})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let detail = b["detail"].as_str().unwrap();
    assert!(
        detail.contains("/order_id") && detail.contains("/amount"),
        "{detail}"
    );
    // Names outside the catalog are accepted (the server is not strict).
    server.publish("acme", "anything.else", json!(1)).await;

    // The schema can be removed; then anything goes.
    let (s, _) = server
        .admin(
            "PATCH",
            "/v1/event-types/order_created",
            Some(json!({"schema": null})),
        )
        .await;
    assert_eq!(s, 200);
    server
        .publish("acme", "order_created", json!({"order_id": "x"}))
        .await;
    let (s, list) = server.admin("GET", "/v1/event-types", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_payloads_and_says_so() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let ev = fx
        .server
        .publish("acme", "ping", json!({"secret": "data"}))
        .await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    fx.server.wait_status("acme", id, "succeeded").await;
    fx.server.stop().await;
    let dir = fx.dir;

    // The store as the retention task sees it, with "old" meaning "before now".
    let store = chime::store::sqlite::SqliteStore::open(&dir.path().join("chime.db")).unwrap();
    let policy = chime::retention::Policy {
        payloads: Duration::ZERO,
        events: Duration::from_secs(3600),
        every: Duration::from_secs(3600),
        partition: Duration::from_secs(86_400),
    };
    let (purged, deleted) = chime::retention::pass(&store, policy).await.unwrap();
    assert_eq!((purged, deleted), (1, 0));
    drop(store);

    let server = TestServer::start(dir.path(), Opts::default()).await;
    let (s, e) = server
        .admin(
            "GET",
            &format!("/v1/tenants/acme/events/{}", ev["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{e}");
    assert!(e["data"].is_null() && e["purged_at"].is_string(), "{e}");
    assert_eq!(
        e["deliveries"][0]["status"], "succeeded",
        "the delivery log remains"
    );
    let (s, b) = server
        .admin(
            "POST",
            &format!("/v1/tenants/acme/deliveries/{id}/retry"),
            None,
        )
        .await;
    assert_eq!(s, 409, "a purged event cannot be sent again: {b}");
    assert!(b["detail"].as_str().unwrap().contains("retention"));
    server.stop().await;
}

// Every case on SQLite and on PostgreSQL (retention above opens the SQLite file itself).
on_both_backends!(
    retry_after_on_429_delays_the_next_attempt,
    gone_410_disables_the_endpoint_and_says_so,
    failing_endpoint_is_probed_and_its_deliveries_keep_their_retries,
    endpoint_failing_too_long_is_disabled,
    rate_limit_spaces_attempts,
    ordered_endpoint_delivers_in_acceptance_order_through_retries_and_restarts,
    ordered_endpoint_shows_its_blocking_head_which_can_be_skipped,
    ed25519_endpoints_sign_with_v1a_verifiable_by_public_key,
    custom_headers_and_payload_filters,
    a_slow_endpoint_does_not_hold_up_a_healthy_one,
    a_tenants_hung_receivers_do_not_hold_up_other_tenants,
    timeouts_open_the_circuit_after_three,
    exhausted_deliveries_are_announced_and_replayed_with_the_same_webhook_id,
    event_type_schemas_validate_published_data,
);
