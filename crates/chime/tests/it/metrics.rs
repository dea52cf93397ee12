//! `GET /metrics`: Prometheus's own `promtool check metrics` accepts the exposition, the
//! hot path's counters and histograms count what happened, and who may read it (the admin
//! token, a metrics token, anyone on `metrics_listen`; not tenant tokens).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{ADMIN, Fixture, Opts, eventually, on_both_backends};

on_both_backends!(metrics_count_the_hot_path_and_pass_promtool);

/// Runs `promtool check metrics` over `text`. Fails, never skips, without promtool: the
/// format is checked by Prometheus itself or not at all (`.ci/run` installs the Debian
/// package `prometheus`, which ships it).
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed to check /metrics (apt-get install prometheus): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- exposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// The value of the sample `series` (name with its labels, as written), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn scrape(url: &str, token: Option<&str>) -> (StatusCode, String, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

async fn metrics_count_the_hot_path_and_pass_promtool() {
    let f = Fixture::start(
        Opts {
            metrics_tenant_series: 2,
            ..Opts::default()
        },
        "/hook",
    )
    .await;
    let s = &f.server;
    s.publish("acme", "order.created", json!({"n": 1})).await;
    s.publish("acme", "order.created", json!({"n": 2})).await;
    let (status, _) = s
        .call(
            "POST",
            "/v1/tenants/acme/events",
            Some("wrong-token"),
            Some(json!({"event": "x", "data": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .admin(
            "POST",
            "/v1/tenants/acme/events",
            Some(json!({"event": "bad name!", "data": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    f.rx.wait_count(2).await;

    let url = s.url("/metrics");
    let text = eventually(Duration::from_secs(20), || async {
        let (status, content_type, text) = scrape(&url, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        let done = sample(
            &text,
            "chime_deliveries_finished_total{status=\"succeeded\"}",
        );
        // A scrape reads the store's counts before the node's counters, so one scrape may
        // count a delivery finished that its store counts still had pending a moment before.
        let due = sample(&text, "chime_deliveries_pending{state=\"due\"}");
        (done == Some(2.0) && due == Some(0.0)).then_some(text)
    })
    .await
    .expect("both deliveries counted as succeeded and none left pending");
    promtool_check(&text);

    let expect = [
        ("chime_events_accepted_total", 2.0),
        ("chime_events_refused_total{code=\"unauthorized\"}", 1.0),
        ("chime_events_refused_total{code=\"invalid_request\"}", 1.0),
        ("chime_events_refused_total{code=\"not_found\"}", 0.0),
        (
            "chime_attempts_total{result=\"success\",error_kind=\"none\"}",
            2.0,
        ),
        (
            "chime_attempts_total{result=\"failure\",error_kind=\"status\"}",
            0.0,
        ),
        ("chime_attempt_duration_seconds_count", 2.0),
        ("chime_publish_duration_seconds_count", 2.0),
        ("chime_publish_to_first_attempt_seconds_count", 2.0),
        ("chime_store_commit_seconds_count{op=\"publish\"}", 2.0),
        ("chime_attempts_in_flight", 0.0),
        ("chime_nodes", 1.0),
        ("chime_store_up", 1.0),
        ("chime_deliveries_pending{state=\"due\"}", 0.0),
        ("chime_deliveries_pending{state=\"scheduled\"}", 0.0),
        ("chime_endpoints{state=\"healthy\"}", 1.0),
        ("chime_endpoints{state=\"failing\"}", 0.0),
        ("chime_endpoints{state=\"disabled\"}", 0.0),
        ("chime_retention_payloads_purged_total", 0.0),
        ("chime_tenant_events_accepted_total{tenant=\"acme\"}", 2.0),
        (
            "chime_tenant_attempts_total{tenant=\"acme\",result=\"success\"}",
            2.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    let records = sample(&text, "chime_store_commit_seconds_count{op=\"record\"}").unwrap();
    assert!((1.0..=2.0).contains(&records), "{text}");
    assert!(text.contains(&format!(
        "chime_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // No per-event or per-delivery id is ever a label.
    assert!(!text.contains("evt_") && !text.contains("dlv_") && !text.contains("ep_"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_or_a_metrics_token_or_the_metrics_listener() {
    let f = Fixture::start(
        Opts {
            metrics_listen: true,
            ..Opts::default()
        },
        "/hook",
    )
    .await;
    let s = &f.server;
    let url = s.url("/metrics");
    assert_eq!(scrape(&url, None).await.0, StatusCode::UNAUTHORIZED);
    let (_, tenant) = s.admin("POST", "/v1/tenants/acme/tokens", None).await;
    let tenant = tenant["token"].as_str().unwrap().to_owned();
    assert_eq!(scrape(&url, Some(&tenant)).await.0, StatusCode::FORBIDDEN);

    // Only the admin creates metrics tokens.
    let (status, _) = s
        .call("POST", "/v1/metrics-tokens", Some(&tenant), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created) = s.admin("POST", "/v1/metrics-tokens", None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["scope"], "metrics");
    let token = created["token"].as_str().unwrap();
    let (status, _, text) = scrape(&url, Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    promtool_check(&text);
    // A metrics token reads /metrics and nothing else.
    for (method, path) in [
        ("GET", "/v1/tenants"),
        ("GET", "/v1/tenants/acme/events"),
        ("POST", "/v1/metrics-tokens"),
    ] {
        let (status, body) = s.call(method, path, Some(token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
    }
    let (status, _) = s
        .call(
            "POST",
            "/v1/tenants/acme/events",
            Some(token),
            Some(json!({"event": "x", "data": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The metrics listener serves /metrics without auth, and nothing else.
    let open = format!("http://{}", s.metrics_addr.expect("metrics_listen bound"));
    let (status, _, text) = scrape(&format!("{open}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("chime_events_refused_total{code=\"forbidden\"} 1"));
    let (status, _, _) = scrape(&format!("{open}/v1/tenants"), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.stop().await;
}
