//! `chime listen` end to end: the real server (in-process) delivers to a `chime listen` child
//! process, which forwards to a test app. Also de-duplication, signature explanations,
//! `--reject-invalid`, `--events`, and `--record` followed by `chime replay`.

use crate::support::cli::{chime, command};
use crate::support::process::ChildProcess;
use crate::support::{Opts, Receiver, TestServer, closed_port, now};
use chime_webhooks::{Secret, sign};
use serde_json::{Value, json};

/// Starts `chime listen --port 0 --json ARGS…` and returns it with its URL.
async fn listen(args: &[&str]) -> (ChildProcess, String) {
    let mut cmd = command();
    cmd.args(["listen", "--port", "0", "--json"]).args(args);
    let mut child = ChildProcess::spawn("chime listen", cmd);
    let first = child.next_json().await;
    let url = first["listening"]
        .as_str()
        .unwrap_or_else(|| panic!("first line is not the address: {first}"))
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/webhook"),
        "{url}"
    );
    (child, url)
}

/// Registers `url` with our own `secret` (so `chime listen` could be started with it first).
async fn endpoint_with_secret(server: &TestServer, tenant: &str, url: &str, secret: &str) {
    let (s, b) = server
        .admin(
            "POST",
            &format!("/v1/tenants/{tenant}/endpoints"),
            Some(json!({ "url": url, "secret": secret })),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{b}");
}

/// Publishes with exact bytes (odd spacing on purpose: it must survive to the app).
async fn publish_raw(server: &TestServer, tenant: &str, body: &'static str) -> Value {
    let resp = server
        .http
        .post(server.url(&format!("/v1/tenants/{tenant}/events")))
        .bearer_auth(crate::support::ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    resp.json().await.unwrap()
}

/// A webhook signed the Standard Webhooks way, as a sender would POST it.
async fn post_signed(
    url: &str,
    secret: &Secret,
    id: &str,
    ts: i64,
    signed_body: &str,
    sent_body: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign(secret, id, ts, signed_body.as_bytes()),
        )
        .body(sent_body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delivers_through_listen_to_the_app_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let app = Receiver::start().await;
    let secret = Secret::generate().to_whsec();
    let (mut listener, url) =
        listen(&["--secret", &secret, "--forward-to", &app.url("/app/hook")]).await;
    server.create_tenant("acme").await;
    endpoint_with_secret(&server, "acme", &url, &secret).await;

    let published = publish_raw(
        &server,
        "acme",
        r#"{"event": "order.created", "data": {"order_id": 1234,  "amount":50}}"#,
    )
    .await;
    let event_id = published["id"].as_str().unwrap();

    let got = app.wait_count(1).await;
    assert_eq!(got[0].path, "/app/hook");
    assert_eq!(
        &got[0].body[..],
        br#"{"event":"order.created","data":{"order_id": 1234,  "amount":50}}"#
    );
    assert_eq!(got[0].header("webhook-id"), event_id);
    // The forwarded headers still carry chime's signature, valid for the original bytes.
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .expect("the app can verify the forwarded webhook");

    let line = listener.next_json().await;
    assert_eq!(line["webhook_id"], event_id);
    assert_eq!(line["event"], "order.created");
    assert_eq!(line["data"], json!({"order_id": 1234, "amount": 50}));
    assert_eq!(line["signature"]["status"], "valid", "{line}");
    assert_eq!(line["repeat"], false);
    assert_eq!(line["forward"]["ok"], true);
    assert_eq!(line["forward"]["status_code"], 200);
    assert_eq!(line["forward"]["attempts"], 1);

    let delivery = published["deliveries"][0]["id"].as_str().unwrap();
    server.wait_status("acme", delivery, "succeeded").await;
    drop(listener);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_or_stopped_app_does_not_delay_the_senders_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    server.create_tenant("acme").await;

    // 1. The app accepts the connection and never answers (until released).
    let app = Receiver::start().await;
    app.hold();
    let (mut held, url) = listen(&["--forward-to", &app.url("/hook")]).await;
    let (_, _) = server.create_endpoint("acme", &url, json!(["*"])).await;
    let published = server
        .publish("acme", "order.created", json!({"n": 1}))
        .await;
    let delivery = published["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = server.wait_status("acme", &delivery, "succeeded").await;
    assert_eq!(d["last_status_code"], 200);
    // The forward reached the app and is still waiting for its answer…
    app.wait_count(1).await;
    // …while chime's attempt got its 200 quickly (the held forward would take 10 s).
    let attempts = server.attempts("acme", &delivery).await;
    assert_eq!(attempts.len(), 1);
    let ms = attempts[0]["duration_ms"].as_u64().unwrap();
    assert!(ms < 1000, "listen answered after {ms} ms");
    app.release();
    let line = held.next_json().await;
    assert_eq!(line["forward"]["ok"], true, "{line}");
    drop(held);

    // 2. Nothing listens at the app's address: retried, reported, and the sender is fine.
    let port = closed_port();
    let down = format!("http://127.0.0.1:{port}/hook");
    let (mut refused, url) = listen(&["--forward-to", &down, "--forward-retries", "1"]).await;
    server.create_tenant("beta").await;
    let (_, _) = server.create_endpoint("beta", &url, json!(["*"])).await;
    let published = server
        .publish("beta", "user.created", json!({"id": 7}))
        .await;
    let delivery = published["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_status("beta", &delivery, "succeeded").await;
    let line = refused.next_json().await;
    assert_eq!(line["event"], "user.created");
    assert_eq!(line["forward"]["ok"], false, "{line}");
    assert_eq!(line["forward"]["attempts"], 2);
    let error = line["forward"]["error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("refused"), "{error}");
    drop(refused);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_shown_once_as_repeats_and_forwarded_once() {
    let app = Receiver::start().await;
    let secret = Secret::generate();
    let (mut listener, url) = listen(&[
        "--secret",
        &secret.to_whsec(),
        "--forward-to",
        &app.url("/hook"),
    ])
    .await;
    let body = r#"{"event":"order.created","data":{"id":1}}"#;
    let ts = now();
    for _ in 0..2 {
        let r = post_signed(&url, &secret, "evt_same", ts, body, body).await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let mut lines = [listener.next_json().await, listener.next_json().await];
    lines.sort_by_key(|l| l["repeat"].as_bool());
    assert_eq!(lines[0]["repeat"], false);
    assert_eq!(lines[0]["forward"]["ok"], true);
    assert_eq!(lines[1]["repeat"], true);
    assert_eq!(lines[1]["webhook_id"], "evt_same");
    assert_eq!(
        lines[1]["forward"]["skipped"],
        "repeat of an earlier webhook"
    );
    // Both lines are out, so the one forward has finished and no other was queued.
    assert_eq!(app.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_explained_and_rejected_with_reject_invalid() {
    let secret = Secret::generate();
    let (mut listener, url) = listen(&["--secret", &secret.to_whsec(), "--reject-invalid"]).await;
    let body = r#"{"event": "order.created", "data": {"id": 1}}"#;

    // Signed with another secret.
    let other = Secret::generate();
    let r = post_signed(&url, &other, "evt_1", now(), body, body).await;
    assert_eq!(r.status().as_u16(), 401);
    let answer: Value = r.json().await.unwrap();
    assert!(answer["detail"].as_str().unwrap().contains("wrong secret"));
    let line = listener.next_json().await;
    assert_eq!(line["signature"]["code"], "no_matching_signature");
    assert_eq!(line["rejected"], true);

    // The right secret, but the body was re-serialized on the way.
    let compact = r#"{"event":"order.created","data":{"id":1}}"#;
    let r = post_signed(&url, &secret, "evt_2", now(), body, compact).await;
    assert_eq!(r.status().as_u16(), 401);
    let line = listener.next_json().await;
    let reason = line["signature"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("body differs from what was signed"),
        "{reason}"
    );

    // Too old, by how much.
    let r = post_signed(&url, &secret, "evt_3", now() - 3600, body, body).await;
    assert_eq!(r.status().as_u16(), 401);
    let line = listener.next_json().await;
    let reason = line["signature"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("s in the past; tolerance is 300 s"),
        "{reason}"
    );

    // No signature at all.
    let r = reqwest::Client::new()
        .post(&url)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let line = listener.next_json().await;
    let reason = line["signature"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("no signature header"), "{reason}");

    // A rejected id is not remembered: the genuine webhook with id evt_1 is not a repeat.
    let r = post_signed(&url, &secret, "evt_1", now(), body, body).await;
    assert_eq!(r.status().as_u16(), 200);
    let line = listener.next_json().await;
    assert_eq!(line["signature"]["status"], "valid");
    assert_eq!(line["repeat"], false);

    // Other paths and methods are not webhooks.
    let base = url.trim_end_matches("/webhook");
    let r = reqwest::Client::new()
        .post(format!("{base}/elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_filter_and_record_then_replay_resigned() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("hooks.jsonl");
    let app = Receiver::start().await;
    let record_arg = record.to_str().unwrap().to_owned();
    let (mut listener, url) = listen(&[
        "--events",
        "order.*",
        "--record",
        &record_arg,
        "--forward-to",
        &app.url("/live"),
    ])
    .await;
    let old_secret = Secret::generate();
    let bodies = [
        r#"{"event":"user.created","data":{"id":7}}"#,
        r#"{"event":"order.created","data":{"id": 1}}"#,
    ];
    let ts = now() - 3600;
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("evt_{i}");
        let r = post_signed(&url, &old_secret, &id, ts, body, body).await;
        assert_eq!(
            r.status().as_u16(),
            200,
            "filtered webhooks are still answered 2xx"
        );
    }
    // Only the order is shown and forwarded.
    let line = listener.next_json().await;
    assert_eq!(line["event"], "order.created");
    assert_eq!(line["signature"]["status"], "unchecked");
    let live = app.received();
    assert_eq!(live.len(), 1);
    assert_eq!(&live[0].body[..], bodies[1].as_bytes());
    drop(listener);

    // Both were recorded, byte for byte.
    let text = std::fs::read_to_string(&record).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["body"], bodies[0]);
    assert_eq!(records[0]["webhook_id"], "evt_0");
    assert!(records[0]["headers"].as_array().unwrap().len() >= 3);

    // Replayed with a new secret and fresh timestamps, all of them, in order.
    let new_secret = Secret::generate().to_whsec();
    let target = app.url("/replayed");
    let key = new_secret.clone();
    let stdout = tokio::task::spawn_blocking(move || {
        chime()
            .args([
                "replay",
                &record_arg,
                "--to",
                &target,
                "--secret",
                &key,
                "--json",
            ])
            .assert()
            .code(0)
            .get_output()
            .stdout
            .clone()
    })
    .await
    .unwrap();
    let sent: Vec<Value> = String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["status_code"], 200);
    let replayed: Vec<_> = app
        .received()
        .into_iter()
        .filter(|r| r.path == "/replayed")
        .collect();
    assert_eq!(replayed.len(), 2);
    for (r, body) in replayed.iter().zip(bodies) {
        assert_eq!(&r.body[..], body.as_bytes());
        standardwebhooks::Webhook::new(&new_secret)
            .unwrap()
            .verify(&r.body, &r.headers)
            .expect("re-signed with a fresh timestamp");
    }
    assert_eq!(replayed[0].header("webhook-id"), "evt_0");

    // --events on replay; a dead target is exit status 3.
    let record_arg = record.to_str().unwrap().to_owned();
    let dead = format!("http://127.0.0.1:{}/x", closed_port());
    let target = app.url("/filtered");
    tokio::task::spawn_blocking(move || {
        chime()
            .args(["replay", &record_arg, "--to", &target, "--events", "user.*"])
            .assert()
            .code(0);
        chime()
            .args(["replay", &record_arg, "--to", &dead])
            .assert()
            .code(3)
            .stderr(predicates::str::contains("could not connect"));
    })
    .await
    .unwrap();
    let filtered: Vec<_> = app
        .received()
        .into_iter()
        .filter(|r| r.path == "/filtered")
        .collect();
    assert_eq!(filtered.len(), 1);
    assert_eq!(&filtered[0].body[..], bodies[0].as_bytes());
}

/// `--forward-to PATTERN=URL` rules: the first match wins, a plain URL takes the rest, and
/// without a default an unmatched event is shown but not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_routes_send_each_event_to_its_app() {
    let orders = Receiver::start().await;
    let rest = Receiver::start().await;
    let secret = Secret::generate();
    let rule = format!("order.*={}", orders.url("/orders"));
    let (mut listener, url) = listen(&[
        "--secret",
        &secret.to_whsec(),
        "--forward-to",
        &rule,
        "--forward-to",
        &rest.url("/rest"),
    ])
    .await;
    let ts = now();
    for (id, body) in [
        ("evt_1", r#"{"event":"order.created","data":{}}"#),
        ("evt_2", r#"{"event":"user.created","data":{}}"#),
    ] {
        let r = post_signed(&url, &secret, id, ts, body, body).await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let lines = [listener.next_json().await, listener.next_json().await];
    assert!(
        lines.iter().all(|l| l["forward"]["ok"] == true),
        "{lines:?}"
    );
    assert_eq!(orders.received().len(), 1);
    assert_eq!(orders.received()[0].path, "/orders");
    assert_eq!(rest.received().len(), 1);
    assert_eq!(rest.received()[0].path, "/rest");

    let (mut only, url) = listen(&["--forward-to", &rule]).await;
    let body = r#"{"event":"user.deleted","data":{}}"#;
    let r = post_signed(&url, &secret, "evt_3", ts, body, body).await;
    assert_eq!(r.status().as_u16(), 200);
    let line = only.next_json().await;
    assert_eq!(
        line["forward"]["skipped"],
        "no --forward-to route for this event"
    );
    assert_eq!(orders.received().len(), 1);
}

/// `--print-secret` prints the secret it verifies with and exits; without one it says how.
#[test]
fn print_secret_prints_the_secret_for_scripts() {
    chime()
        .args([
            "listen",
            "--print-secret",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ])
        .assert()
        .code(0)
        .stdout("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    chime()
        .env_remove("CHIME_WEBHOOK_SECRET")
        .args(["listen", "--print-secret"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no secret to print"));
}
