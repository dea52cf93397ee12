//! The outbound pipeline end to end: real server, real SQLite, real HTTP to a test receiver.

use crate::support::{Fixture, Opts, Receiver, TestServer, on_both_backends};
use serde_json::json;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

async fn fan_out_respects_event_filters_and_signs_verifiably() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let rx = Receiver::start().await;
    server.create_tenant("acme").await;
    let (ep_orders, secret_orders) = server
        .create_endpoint("acme", &rx.url("/orders"), json!(["order.*"]))
        .await;
    let (ep_all, secret_all) = server
        .create_endpoint("acme", &rx.url("/all"), json!(["*"]))
        .await;

    let created = server
        .publish(
            "acme",
            "order.created",
            json!({"order_id": 1234, "amount": 50}),
        )
        .await;
    let user = server
        .publish("acme", "user.created", json!({"id": 7}))
        .await;
    assert_eq!(created["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(user["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(user["deliveries"][0]["endpoint_id"], ep_all.as_str());

    let got = rx.wait_count(3).await;
    let to_orders: Vec<_> = got.iter().filter(|r| r.path == "/orders").collect();
    let to_all: Vec<_> = got.iter().filter(|r| r.path == "/all").collect();
    assert_eq!(to_orders.len(), 1);
    assert_eq!(to_all.len(), 2);
    assert_eq!(
        &to_orders[0].body[..],
        br#"{"event":"order.created","data":{"amount":50,"order_id":1234}}"#
    );
    assert_eq!(
        to_orders[0].header("webhook-id"),
        created["id"].as_str().unwrap()
    );
    assert_eq!(to_orders[0].header("content-type"), "application/json");
    assert!(to_orders[0].header("user-agent").starts_with("chime/"));

    // Each delivery verifies with the independent standardwebhooks crate and its own secret.
    for r in &got {
        let secret = if r.path == "/orders" {
            &secret_orders
        } else {
            &secret_all
        };
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&r.body, &r.headers)
            .unwrap_or_else(|e| panic!("signature of {} did not verify: {e}", r.path));
        let other = if r.path == "/orders" {
            &secret_all
        } else {
            &secret_orders
        };
        assert!(
            standardwebhooks::Webhook::new(other)
                .unwrap()
                .verify(&r.body, &r.headers)
                .is_err()
        );
    }
    let _ = ep_orders;
    server.stop().await;
}

async fn failure_then_success_keeps_webhook_id_and_records_both_attempts() {
    let fx = Fixture::start(Opts::default(), "/hook").await;
    let (server, rx) = (&fx.server, &fx.rx);
    rx.script(&[500]);
    let ev = server
        .publish("acme", "order.created", json!({"n": 1}))
        .await;
    let delivery_id = ev["deliveries"][0]["id"].as_str().unwrap();

    let got = rx.wait_count(2).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[0].body, got[1].body);

    let d = server.wait_status("acme", delivery_id, "succeeded").await;
    assert_eq!(d["attempts"], 2);
    let attempts = server.attempts("acme", delivery_id).await;
    assert_eq!(attempts.len(), 2);
    // Newest first.
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["succeeded"], true);
    assert_eq!(attempts[1]["status_code"], 500);
    assert_eq!(attempts[1]["error_kind"], "status");
    assert_eq!(attempts[1]["response"], "receiver says hi");
    fx.stop().await;
}

async fn exhausted_delivery_fails_and_manual_retry_delivers_it() {
    let fx = Fixture::start(Opts::default(), "/hook").await;
    let (server, rx) = (&fx.server, &fx.rx);
    rx.set_default(503);
    let ev = server.publish("acme", "ping", json!(null)).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();

    // One attempt plus one per schedule step (two steps).
    let d = server.wait_status("acme", id, "failed").await;
    assert_eq!(d["attempts"], 3);
    assert_eq!(rx.received().len(), 3);
    let (s, dead) = server
        .admin("GET", "/v1/tenants/acme/deliveries?status=failed", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(dead["data"].as_array().unwrap().len(), 1);

    rx.set_default(200);
    let (s, b) = server
        .admin(
            "POST",
            &format!("/v1/tenants/acme/deliveries/{id}/retry"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let d = server.wait_status("acme", id, "succeeded").await;
    assert_eq!(d["attempts"], 4);
    let got = rx.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == ev["id"].as_str().unwrap())
    );
    fx.stop().await;
}

/// Saving an endpoint at `url` is refused 422 with `code`.
async fn refused_with(server: &TestServer, url: &str, code: &str) {
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({ "url": url })),
        )
        .await;
    assert_eq!(s, 422, "{url}: {b}");
    assert_eq!(b["code"], code, "{url}");
}

async fn internal_targets_are_refused_unless_allowed() {
    let dir = tempdir();
    let server = TestServer::start(
        dir.path(),
        Opts {
            allow_local: false,
            ..Opts::default()
        },
    )
    .await;
    let rx = Receiver::start().await;
    server.create_tenant("acme").await;

    // An IP literal in a closed range is refused when the endpoint is saved.
    for url in [
        rx.url("/x"),
        "http://10.0.0.1/hook".to_owned(),
        "http://[::1]:9/hook".to_owned(),
        "http://[::ffff:127.0.0.1]:9/".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        // IPv4-translated, NAT64 local-use, and the resolver's numeric IPv4 spellings.
        "http://[::ffff:0:7f00:1]/".to_owned(),
        "http://[64:ff9b:1::7f00:1]/".to_owned(),
        "http://[64:ff9b::a9fe:a9fe]/".to_owned(),
        "http://2130706433/".to_owned(),
        "http://0x7f.1/".to_owned(),
        "http://0177.0.0.1/".to_owned(),
        "http://127.1/".to_owned(),
    ] {
        refused_with(&server, &url, "refused_target").await;
    }
    // Forms that are not a delivery target at all: zone ids, ports out of range.
    for url in [
        "http://[fe80::1%25lo]/",
        "http://[::1%lo]/",
        "http://[fe80::1%25eth0]:8080/",
        "http://localhost:99999/x",
        "http://localhost:65536/x",
        "http://localhost:-1/x",
        "http://localhost:0/x",
        "http://256.1.1.1/",
    ] {
        refused_with(&server, url, "invalid_request").await;
    }
    let (_, listed) = server
        .admin("GET", "/v1/tenants/acme/endpoints", None)
        .await;
    assert_eq!(
        listed["data"],
        json!([]),
        "a refused endpoint is not stored"
    );

    // A name is checked on the addresses it resolves to, at every attempt.
    let url = format!("http://localhost:{}/hook", rx.addr.port());
    server.create_endpoint("acme", &url, json!(["*"])).await;
    let ev = server.publish("acme", "ping", json!({})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    server.wait_status("acme", id, "failed").await;
    let attempts = server.attempts("acme", id).await;
    assert!(
        attempts.iter().all(|a| a["error_kind"] == "refused_target"),
        "{attempts:?}"
    );
    assert!(
        rx.received().is_empty(),
        "nothing may reach an internal address"
    );
    server.stop().await;
}

async fn redirects_are_failures_and_not_followed() {
    let fx = Fixture::start(Opts::default(), "/hook").await;
    let (server, rx) = (&fx.server, &fx.rx);
    rx.set_default(307);
    let ev = server.publish("acme", "ping", json!({})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    server.wait_status("acme", id, "failed").await;
    let attempts = server.attempts("acme", id).await;
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a["status_code"] == 307 && a["error_kind"] == "status")
    );
    assert_eq!(rx.received().len(), 3);
    fx.stop().await;
}

async fn unreachable_receiver_is_a_connect_failure() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let port = crate::support::closed_port();
    server.create_tenant("acme").await;
    server
        .create_endpoint("acme", &format!("http://127.0.0.1:{port}/"), json!(["*"]))
        .await;
    let ev = server.publish("acme", "ping", json!({})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    let d = server.wait_status("acme", id, "failed").await;
    assert_eq!(d["last_error_kind"], "connect");
    server.stop().await;
}

async fn slow_receiver_times_out() {
    let opts = Opts {
        request_timeout: "300ms",
        retry_schedule: "",
        ..Opts::default()
    };
    let fx = Fixture::start(opts, "/slow").await;
    let (server, rx) = (&fx.server, &fx.rx);
    rx.hold();
    let ev = server.publish("acme", "ping", json!({})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    let d = server.wait_status("acme", id, "failed").await;
    assert_eq!(d["last_error_kind"], "timeout");
    rx.release();
    fx.stop().await;
}

async fn stopped_server_resumes_every_pending_delivery_after_restart() {
    let dir = tempdir();
    let opts = Opts {
        shutdown_grace: "200ms",
        retry_schedule: "20ms",
        ..Opts::default()
    };
    let server = TestServer::start(dir.path(), opts.clone()).await;
    let rx = Receiver::start().await;
    rx.hold();
    server.create_tenant("acme").await;
    server
        .create_endpoint("acme", &rx.url("/a"), json!(["*"]))
        .await;
    server
        .create_endpoint("acme", &rx.url("/b"), json!(["*"]))
        .await;
    let mut deliveries = Vec::new();
    for i in 0..30 {
        let ev = server
            .publish("acme", "order.created", json!({ "i": i }))
            .await;
        for d in ev["deliveries"].as_array().unwrap() {
            deliveries.push(d["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(deliveries.len(), 60);
    // Some attempts are in flight (held by the receiver), the rest queued, when the server stops.
    rx.wait_count(1).await;
    server.stop().await;
    rx.release();

    let server = TestServer::start(dir.path(), opts).await;
    for id in &deliveries {
        server.wait_status("acme", id, "succeeded").await;
    }
    let (_, pending) = server
        .admin("GET", "/v1/tenants/acme/deliveries?status=pending", None)
        .await;
    assert!(pending["data"].as_array().unwrap().is_empty());
    let ids: std::collections::HashSet<(String, String)> = rx
        .received()
        .iter()
        .map(|r| (r.path.clone(), r.header("webhook-id").to_owned()))
        .collect();
    assert_eq!(ids.len(), 60, "every (endpoint, webhook-id) pair arrived");
    server.stop().await;
}

async fn disabled_endpoint_records_skipped_deliveries_that_replay_after_enabling() {
    let fx = Fixture::start(Opts::default(), "/hook").await;
    let (server, rx, ep) = (&fx.server, &fx.rx, &fx.endpoint);
    let (s, b) = server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{ep}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["enabled"], false);
    // Recorded as skipped, not dropped.
    let skipped = server.publish("acme", "ping", json!({"n": 1})).await;
    assert_eq!(skipped["deliveries"][0]["status"], "skipped");
    let skipped_id = skipped["deliveries"][0]["id"].as_str().unwrap().to_owned();
    server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{ep}"),
            Some(json!({"enabled": true})),
        )
        .await;
    let ev = server.publish("acme", "ping", json!({"n": 2})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap();
    server.wait_status("acme", id, "succeeded").await;
    assert_eq!(rx.received().len(), 1);

    // The skipped one is replayed on request, with its original webhook-id.
    let (s, dry) = server
        .admin(
            "POST",
            "/v1/tenants/acme/replay",
            Some(json!({"status": ["skipped"], "dry_run": true})),
        )
        .await;
    assert_eq!(s, 200, "{dry}");
    assert_eq!(dry["count"], 1);
    assert_eq!(
        server.delivery("acme", &skipped_id).await["status"],
        "skipped",
        "a dry run changes nothing"
    );
    let (s, done) = server
        .admin(
            "POST",
            "/v1/tenants/acme/replay",
            Some(json!({"status": ["skipped"]})),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["count"], 1);
    server.wait_status("acme", &skipped_id, "succeeded").await;
    let got = rx.wait_count(2).await;
    assert_eq!(got[1].header("webhook-id"), skipped["id"].as_str().unwrap());
    fx.stop().await;
}

async fn delivered_body_is_the_published_data_byte_for_byte() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let (server, rx, secret) = (&fx.server, &fx.rx, &fx.secret);
    // Key order, spacing and number spelling are the producer's and must survive.
    let raw = r#"{ "event": "order_created", "data": {"order_id": 1234,  "amount": 50.10, "z": [1, 2] } }"#;
    let resp = server
        .http
        .post(server.url("/v1/tenants/acme/events"))
        .bearer_auth(crate::support::ADMIN)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let got = rx.wait_count(1).await;
    assert_eq!(
        std::str::from_utf8(&got[0].body).unwrap(),
        r#"{"event":"order_created","data":{"order_id": 1234,  "amount": 50.10, "z": [1, 2] }}"#
    );
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .unwrap();
    fx.stop().await;
}

async fn rotated_secret_signs_beside_the_old_one_for_the_grace_period() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let (server, rx, ep, old) = (&fx.server, &fx.rx, &fx.endpoint, fx.secret.clone());
    let rotate = |grace: u64| {
        let path = format!("/v1/tenants/acme/endpoints/{ep}/secret/rotate");
        async move {
            let (s, b) = server
                .admin(
                    "POST",
                    &path,
                    Some(json!({ "grace_period_seconds": grace })),
                )
                .await;
            assert_eq!(s, 200, "{b}");
            b
        }
    };
    let verifies = |secret: &str, r: &crate::support::Received| {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&r.body, &r.headers)
            .is_ok()
    };

    let rotated = rotate(3600).await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    server.publish("acme", "ping", json!(1)).await;
    let got = rx.wait_count(1).await;
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(&old, &got[0]) && verifies(&new, &got[0]));

    // A grace period of 0 stops the previous secret at once.
    let newest = rotate(0).await;
    assert!(newest["previous_secret_expires_at"].is_null());
    let newest = newest["secret"].as_str().unwrap().to_owned();
    server.publish("acme", "ping", json!(2)).await;
    let got = rx.wait_count(2).await;
    assert_eq!(got[1].header("webhook-signature").split(' ').count(), 1);
    assert!(verifies(&newest, &got[1]) && !verifies(&new, &got[1]));
    let (s, b) = server
        .admin(
            "POST",
            &format!("/v1/tenants/acme/endpoints/{ep}/secret/rotate"),
            Some(json!({ "grace_period_seconds": 99999999 })),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    fx.stop().await;
}

// Every test above runs twice: on SQLite (`sqlite::…`) and on PostgreSQL (`postgres::…`).
on_both_backends!(
    fan_out_respects_event_filters_and_signs_verifiably,
    failure_then_success_keeps_webhook_id_and_records_both_attempts,
    exhausted_delivery_fails_and_manual_retry_delivers_it,
    internal_targets_are_refused_unless_allowed,
    redirects_are_failures_and_not_followed,
    unreachable_receiver_is_a_connect_failure,
    slow_receiver_times_out,
    stopped_server_resumes_every_pending_delivery_after_restart,
    disabled_endpoint_records_skipped_deliveries_that_replay_after_enabling,
    delivered_body_is_the_published_data_byte_for_byte,
    rotated_secret_signs_beside_the_old_one_for_the_grace_period,
);
