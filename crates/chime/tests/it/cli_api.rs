//! The API commands (`tenant`, `endpoint`, `send`, `events`, `deliveries`, `event-types`) as a
//! user runs them against a real server: `--json` shapes, tables, exit statuses and error
//! messages.

use crate::support::cli::chime;
use crate::support::closed_port;
use crate::support::{Opts, Receiver, TestServer};
use predicates::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;

/// A server on its own runtime, so that the test thread can run commands synchronously.
struct Env {
    rt: tokio::runtime::Runtime,
    server: Option<TestServer>,
    _dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Self {
        Self::start_with(Opts::default())
    }

    fn start_with(opts: Opts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(TestServer::start(dir.path(), opts));
        Self {
            rt,
            server: Some(server),
            _dir: dir,
        }
    }

    fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    /// `chime` pointed at this server with the admin token.
    fn chime(&self) -> assert_cmd::Command {
        let mut cmd = chime();
        cmd.env("CHIME_URL", &self.server().base)
            .env("CHIME_TOKEN", crate::support::ADMIN);
        cmd
    }

    /// Runs `chime ARGS… --json`, expects success, and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let out = self
            .chime()
            .args(args)
            .arg("--json")
            .assert()
            .code(0)
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        })
    }

    fn receiver(&self) -> Receiver {
        self.rt.block_on(Receiver::start())
    }

    fn wait_delivery(&self, tenant: &str, id: &str, status: &str) -> Value {
        self.rt
            .block_on(self.server().wait_status(tenant, id, status))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
    }
}

#[test]
fn quickstart_without_curl() {
    let env = Env::start();
    let rx = env.receiver();

    let t = env.json(&["tenant", "create", "acme", "--name", "Acme Inc."]);
    assert_eq!(t["id"], "acme");
    assert_eq!(t["name"], "Acme Inc.");
    let list = env.json(&["tenant", "list"]);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "acme"),
        "{list}"
    );
    assert!(list["next_cursor"].is_null());
    env.chime()
        .args(["tenant", "list"])
        .assert()
        .code(0)
        .stdout(predicate::str::is_match(r"(?m)^ID\s+NAME\s+CREATED$").unwrap())
        .stdout(predicate::str::is_match(r"(?m)^acme\s+Acme Inc\.\s+\d{4}-").unwrap());

    let hook = rx.url("/hook");
    let ep = env.json(&[
        "endpoint",
        "add",
        &hook,
        "--tenant",
        "acme",
        "--events",
        "order.*,user.created",
    ]);
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    assert!(ep["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(ep["events"], serde_json::json!(["order.*", "user.created"]));
    let list = env.json(&["endpoint", "list", "--tenant", "acme"]);
    assert_eq!(list["data"][0]["id"], ep_id.as_str());
    assert!(list["data"][0].get("secret").is_none());
    let shown = env.json(&["endpoint", "show", &ep_id, "--tenant", "acme", "--secret"]);
    assert_eq!(shown["secret"], ep["secret"]);
    env.chime()
        .args(["endpoint", "show", &ep_id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(hook.as_str()))
        .stdout(predicate::str::contains("whsec_").not());

    let off = env.json(&["endpoint", "disable", &ep_id, "--tenant", "acme"]);
    assert_eq!(off["enabled"], false);
    // A delivery to a disabled endpoint is skipped, and the terminal says so.
    env.chime()
        .args(["send", "order.paused", "{}", "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(format!(
            "to endpoint {ep_id} (skipped"
        )));
    let on = env.json(&["endpoint", "enable", &ep_id, "--tenant", "acme"]);
    assert_eq!(on["enabled"], true);

    // The tenant comes from CHIME_TENANT as well as --tenant.
    let sent = {
        let out = env
            .chime()
            .env("CHIME_TENANT", "acme")
            .args([
                "send",
                "order.created",
                r#"{"order_id": 1234, "amount": 50}"#,
                "--json",
            ])
            .assert()
            .code(0)
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice::<Value>(&out).unwrap()
    };
    let evt = sent["id"].as_str().unwrap().to_owned();
    assert!(evt.starts_with("evt_"));
    assert_eq!(sent["event"], "order.created");
    assert_eq!(sent["deliveries"][0]["endpoint_id"], ep_id.as_str());
    let delivery = sent["deliveries"][0]["id"].as_str().unwrap().to_owned();
    env.wait_delivery("acme", &delivery, "succeeded");
    let got = rx.received();
    assert_eq!(
        &got[0].body[..],
        br#"{"event":"order.created","data":{"order_id": 1234, "amount": 50}}"#
    );

    // The terminal form names the event and its delivery.
    env.chime()
        .args(["send", "user.created", r#"{"id": 7}"#, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("Published evt_"))
        .stdout(predicate::str::contains(format!("to endpoint {ep_id}")));
    env.chime()
        .args(["send", "invoice.paid", "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("no deliveries"));

    let events = env.json(&[
        "events",
        "list",
        "--tenant",
        "acme",
        "--event",
        "order.created",
    ]);
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    assert_eq!(events["data"][0]["id"], evt.as_str());
    // `--event` is a name for deliveries too; an id goes by `--event-id`.
    for args in [["--event", "order.created"], ["--event-id", evt.as_str()]] {
        let found =
            env.json(&[&["deliveries", "list", "--tenant", "acme"][..], &args[..]].concat());
        assert_eq!(found["data"].as_array().unwrap().len(), 1, "{args:?}");
    }
    env.chime()
        .args([
            "deliveries",
            "list",
            "--tenant",
            "acme",
            "--event-id",
            "order.created",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not an event id"));
    // A time range: everything so far is after 2020 and nothing before it.
    for (args, found) in [
        (["--since", "2020-01-01T00:00:00Z"], 3),
        (["--until", "2020-01-01T00:00:00Z"], 0),
    ] {
        let got = env.json(&[&["deliveries", "list", "--tenant", "acme"][..], &args[..]].concat());
        assert_eq!(got["data"].as_array().unwrap().len(), found, "{args:?}");
    }
    env.chime()
        .args([
            "deliveries",
            "list",
            "--tenant",
            "acme",
            "--since",
            "yesterday",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("since must be an RFC 3339 time"));
    let shown = env.json(&["events", "show", &evt, "--tenant", "acme"]);
    assert_eq!(shown["data"]["order_id"], 1234);
    assert_eq!(shown["deliveries"][0]["id"], delivery.as_str());
    env.chime()
        .args(["events", "show", &evt, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("succeeded"));

    let deliveries = env.json(&["deliveries", "list", "--tenant", "acme"]);
    assert_eq!(
        deliveries["data"].as_array().unwrap().len(),
        3,
        "two sent and one skipped"
    );
    let one = env.json(&["deliveries", "show", &delivery, "--tenant", "acme"]);
    assert_eq!(one["status"], "succeeded");
    assert_eq!(one["attempts"][0]["status_code"], 200);

    let rotated = env.json(&[
        "endpoint",
        "rotate-secret",
        &ep_id,
        "--tenant",
        "acme",
        "--grace",
        "1h",
    ]);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(rotated["secret"], ep["secret"]);
    assert!(rotated["previous_secret_expires_at"].is_string());
    env.chime()
        .args([
            "endpoint",
            "rotate-secret",
            &ep_id,
            "--tenant",
            "acme",
            "--grace",
            "0s",
        ])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("previous key no longer signs"));

    let token = env.json(&["tenant", "token", "acme"]);
    assert!(token["token"].is_string());

    let metrics = env.json(&["metrics-token"]);
    assert!(metrics["token"].as_str().unwrap().starts_with("chime_"));
    assert_eq!(metrics["scope"], "metrics");
}

#[test]
fn dead_letters_are_listed_and_retried() {
    let env = Env::start();
    let rx = env.receiver();
    rx.set_default(500);
    env.json(&["tenant", "create", "acme"]);
    env.json(&["endpoint", "add", &rx.url("/hook"), "--tenant", "acme"]);
    let sent = env.json(&["send", "order.created", "{}", "--tenant", "acme"]);
    let delivery = sent["deliveries"][0]["id"].as_str().unwrap().to_owned();
    // The test server retries after 20 ms and 40 ms, then gives up.
    env.wait_delivery("acme", &delivery, "failed");

    let failed = env.json(&["deliveries", "list", "--tenant", "acme", "--failed"]);
    assert_eq!(failed["data"][0]["id"], delivery.as_str());
    assert_eq!(failed["data"][0]["last_status_code"], 500);
    env.chime()
        .args(["deliveries", "list", "--tenant", "acme", "--failed"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("failed"))
        .stdout(predicate::str::contains("500"));

    rx.set_default(200);
    let retried = env.json(&["deliveries", "retry", &delivery, "--tenant", "acme"]);
    assert_eq!(retried["status"], "pending");
    env.wait_delivery("acme", &delivery, "succeeded");
    let none = env.json(&["deliveries", "list", "--tenant", "acme", "--failed"]);
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
}

#[test]
fn bulk_send_summarises_and_reports_bad_lines() {
    let env = Env::start();
    let rx = env.receiver();
    env.json(&["tenant", "create", "acme"]);
    env.json(&["endpoint", "add", &rx.url("/hook"), "--tenant", "acme"]);
    let dir = tempfile::tempdir().unwrap();

    let good = dir.path().join("good.jsonl");
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!(
            "{{\"event\": \"order.created\", \"data\": {{\"n\": {k}}}, \"idempotency_key\": \"k{k}\"}}\n\n",
            k = i % 25
        ));
    }
    std::fs::write(&good, text).unwrap();
    let summary = env.json(&[
        "send",
        "--file",
        good.to_str().unwrap(),
        "--tenant",
        "acme",
        "--concurrency",
        "4",
    ]);
    assert_eq!(summary["published"], 30);
    assert_eq!(summary["errors"], 0);
    assert!(summary["rate_per_second"].as_f64().unwrap() > 0.0);
    // 30 lines, 25 distinct idempotency keys: 25 events.
    let events = env.json(&["events", "list", "--tenant", "acme", "--limit", "100"]);
    assert_eq!(events["data"].as_array().unwrap().len(), 25);

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"event\": \"a.b\", \"data\": 1}\nnot json\n{\"event\": \"has space\", \"data\": 1}\n",
    )
    .unwrap();
    let out = env
        .chime()
        .args([
            "send",
            "--file",
            bad.to_str().unwrap(),
            "--tenant",
            "acme",
            "--json",
        ])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let summary: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(summary["published"], 1);
    assert_eq!(summary["errors"], 2);
    let failures = summary["failures"].as_array().unwrap();
    let mut by_line: Vec<(u64, &str)> = failures
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["code"].as_str().unwrap()))
        .collect();
    by_line.sort();
    assert_eq!(by_line, vec![(2, "invalid_line"), (3, "invalid_request")]);
    env.chime()
        .args(["send", "--file", bad.to_str().unwrap(), "--tenant", "acme"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("Published 1 events"))
        .stdout(predicate::str::contains("line 2: invalid_line"));
}

#[test]
fn errors_are_clear_with_distinct_exit_statuses() {
    let env = Env::start();
    env.json(&["tenant", "create", "acme"]);

    // A bad token: the server's code and detail, exit 1.
    env.chime()
        .env("CHIME_TOKEN", "not-a-token")
        .args(["tenant", "list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: unauthorized: the token is not valid",
        ))
        .stderr(predicate::str::contains("CHIME_TOKEN"));

    // The README exports CHIME_ADMIN_TOKEN for the server; the CLI takes it too, and
    // CHIME_TOKEN (a tenant's, say) wins over it.
    chime()
        .env("CHIME_URL", &env.server().base)
        .env_remove("CHIME_TOKEN")
        .env("CHIME_ADMIN_TOKEN", crate::support::ADMIN)
        .args(["tenant", "list"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("acme"));
    env.chime()
        .env("CHIME_ADMIN_TOKEN", "not-a-token")
        .args(["tenant", "list"])
        .assert()
        .code(0);

    // Something that does not exist.
    env.chime()
        .args(["endpoint", "show", "ep_nope", "--tenant", "acme"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: not_found: endpoint not found",
        ));
    env.chime()
        .args(["endpoint", "add", "ftp://x", "--tenant", "acme"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: invalid_request:"));

    // Nothing listening: exit 3, with the URL and what to do.
    let url = format!("http://127.0.0.1:{}", closed_port());
    chime()
        .args(["tenant", "list", "--url", &url, "--token", "x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "could not connect to {url}"
        )))
        .stderr(predicate::str::contains("chime serve"));

    // Usage errors: exit 2, before any request.
    env.chime()
        .args(["send", "order.created", "{not json", "--tenant", "acme"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("DATA is not valid JSON"));
    env.chime()
        .args(["endpoint", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--tenant"));
    env.chime()
        .args(["tenant", "list", "--url", "not a url"])
        .assert()
        .code(2);

    // No token anywhere: say where one comes from. With the file `chime serve` writes, it works.
    let cwd = tempfile::tempdir().unwrap();
    chime()
        .current_dir(cwd.path())
        .args(["tenant", "list", "--url", &env.server().base])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no API token"));
    std::fs::create_dir(cwd.path().join("chime-data")).unwrap();
    std::fs::write(
        cwd.path().join("chime-data/admin-token"),
        format!("{}\n", crate::support::ADMIN),
    )
    .unwrap();
    chime()
        .current_dir(cwd.path())
        .args(["tenant", "list", "--url", &env.server().base, "--json"])
        .assert()
        .code(0);
}

/// `chime ARGS…` fails with `code`, and stderr contains `text`.
fn fails(cmd: &mut assert_cmd::Command, args: &[&str], code: i32, text: &str) {
    cmd.args(args)
        .assert()
        .code(code)
        .stderr(predicate::str::contains(text));
}

#[test]
fn endpoint_settings_are_set_shown_updated_and_deleted() {
    let env = Env::start();
    let rx = env.receiver();
    env.json(&["tenant", "create", "acme"]);
    let hook = rx.url("/hook");
    let filter = "$[?@.data.amount > 100]";

    // An ordered endpoint with headers, a filter and a rate limit.
    let ep = env.json(&[
        "endpoint",
        "add",
        &hook,
        "--tenant",
        "acme",
        "--ordered",
        "--header",
        "X-Api-Key: k1",
        "-H",
        "X-Team:payments",
        "--filter",
        filter,
        "--rate-limit",
        "5",
        "--description",
        "big orders",
    ]);
    let id = ep["id"].as_str().unwrap().to_owned();
    assert_eq!(ep["ordered"], true);
    assert_eq!(
        ep["headers"],
        json!({"x-api-key": "k1", "x-team": "payments"})
    );
    assert_eq!(ep["filter"], filter);
    assert_eq!(ep["rate_limit_per_s"], 5);
    assert_eq!(ep["max_in_flight"], Value::Null);
    assert_eq!(ep["signature"], "hmac");
    assert_eq!(ep["description"], "big orders");
    assert!(ep["secret"].as_str().unwrap().starts_with("whsec_"));
    let shown = env.json(&["endpoint", "show", &id, "--tenant", "acme"]);
    for key in [
        "ordered",
        "headers",
        "filter",
        "rate_limit_per_s",
        "signature",
    ] {
        assert_eq!(shown[key], ep[key], "{key}");
    }
    assert!(shown.get("blocked_by").is_none(), "{shown}");
    assert!(shown.get("public_key").is_none(), "{shown}");
    let re = |p: &str| predicate::str::is_match(p).unwrap();
    env.chime()
        .args(["endpoint", "show", &id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(re(r"(?m)^  signature:\s+hmac$"))
        .stdout(re(r"(?m)^  ordered:\s+yes "))
        .stdout(re(r"(?m)^  max in flight:\s+1 \(ordered\)$"))
        .stdout(re(r"(?m)^  rate limit:\s+5/s$"))
        .stdout(re(r"(?m)^  headers:\s+x-api-key: k1\n\s+x-team: payments$"))
        .stdout(re(r"(?m)^  filter:\s+\$\[\?@\.data\.amount > 100\]$"))
        .stdout(re(r"(?m)^  description:\s+big orders$"))
        .stdout(predicate::str::contains("blocked by").not());

    // The filter decides which events go there, and the headers go with each delivery.
    let small = env.json(&[
        "send",
        "order.created",
        r#"{"amount": 50}"#,
        "--tenant",
        "acme",
    ]);
    assert_eq!(small["deliveries"], json!([]));
    let big = env.json(&[
        "send",
        "order.created",
        r#"{"amount": 500}"#,
        "--tenant",
        "acme",
    ]);
    let delivery = big["deliveries"][0]["id"].as_str().unwrap().to_owned();
    env.wait_delivery("acme", &delivery, "succeeded");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-api-key"), "k1");
    assert_eq!(got[0].header("x-team"), "payments");

    // Ed25519: the answer and `show` give the public key receivers verify with.
    let ed = env.json(&[
        "endpoint",
        "add",
        &hook,
        "--tenant",
        "acme",
        "--signature",
        "ed25519",
        "--max-in-flight",
        "3",
        "--disabled",
    ]);
    let ed_id = ed["id"].as_str().unwrap().to_owned();
    assert_eq!(ed["signature"], "ed25519");
    assert_eq!(ed["enabled"], false);
    assert_eq!(ed["max_in_flight"], 3);
    assert!(ed["secret"].as_str().unwrap().starts_with("whsk_"));
    let public = ed["public_key"].as_str().unwrap();
    assert!(public.starts_with("whpk_"));
    env.chime()
        .args(["endpoint", "show", &ed_id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(re(r"(?m)^  signature:\s+ed25519$"))
        .stdout(predicate::str::contains(format!("public key:    {public}")))
        .stdout(re(r"(?m)^  enabled:\s+no \(paused\)$"))
        .stdout(re(r"(?m)^  max in flight:\s+3$"))
        .stdout(predicate::str::contains("whsk_").not());
    // Rotating an Ed25519 key shows the public key receivers need, never the private one.
    env.chime()
        .args(["endpoint", "rotate-secret", &ed_id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(re(
            r"(?m)^New public key \(receivers verify with it\): whpk_",
        ))
        .stdout(predicate::str::contains("whsk_").not());
    // The terminal form of `add` names the settings and what to verify with.
    env.chime()
        .args([
            "endpoint",
            "add",
            &hook,
            "--tenant",
            "acme",
            "--signature",
            "ed25519",
            "-H",
            "X-A: 1",
            "-H",
            "X-B: 2",
            "--ordered",
        ])
        .assert()
        .code(0)
        .stdout(re(r"(?m)^Added endpoint ep_\S+ → http://"))
        .stdout(re(r"(?m)^  secret: whsk_"))
        .stdout(re(r"(?m)^  public key: whpk_"))
        .stdout(re(r"(?m)^  ordered: yes"))
        .stdout(re(r"(?m)^  headers: x-a: 1\n {11}x-b: 2$"))
        .stdout(re(r"chime listen --secret whpk_"));

    // Update: every setting, and the ones that clear.
    let v2 = rx.url("/v2");
    let up = env.json(&[
        "endpoint",
        "update",
        &id,
        "--tenant",
        "acme",
        "--target",
        &v2,
        "--events",
        "order.*,user.created",
        "--unordered",
        "--max-in-flight",
        "2",
        "--clear-filter",
        "--clear-rate-limit",
        "--header",
        "X-Api-Key: k2",
    ]);
    assert_eq!(up["id"], id.as_str());
    assert_eq!(up["url"], v2.as_str());
    assert_eq!(up["events"], json!(["order.*", "user.created"]));
    assert_eq!(up["ordered"], false);
    assert_eq!(up["max_in_flight"], 2);
    assert_eq!(up["filter"], Value::Null);
    assert_eq!(up["rate_limit_per_s"], Value::Null);
    assert_eq!(up["headers"], json!({"x-api-key": "k2"}));
    assert_eq!(up["description"], "big orders", "what is not given stays");
    assert_eq!(up["enabled"], true);
    env.chime()
        .args([
            "endpoint",
            "update",
            &id,
            "--tenant",
            "acme",
            "--clear-max-in-flight",
            "--clear-headers",
            "--disabled",
            "--description",
            "all orders",
        ])
        .assert()
        .code(0)
        .stdout(re(&format!(r"(?m)^Updated endpoint {id}$")))
        .stdout(re(r"(?m)^  enabled:\s+no \(paused\)$"))
        .stdout(re(r"(?m)^  max in flight:\s+server default$"))
        .stdout(re(r"(?m)^  headers:\s+none$"))
        .stdout(re(r"(?m)^  description:\s+all orders$"));
    let shown = env.json(&["endpoint", "show", &id, "--tenant", "acme"]);
    assert_eq!(shown["headers"], json!({}));
    assert_eq!(shown["max_in_flight"], Value::Null);
    assert_eq!(shown["enabled"], false);
    let on = env.json(&["endpoint", "update", &id, "--tenant", "acme", "--enabled"]);
    assert_eq!(on["enabled"], true);

    // Mistakes: caught here (exit 2) or refused by the server (exit 1), changing nothing.
    let upd = ["endpoint", "update", id.as_str(), "--tenant", "acme"];
    fails(&mut env.chime(), &upd, 2, "nothing to change");
    fails(
        &mut env.chime(),
        &[&upd[..], &["--header", "X-Api-Key k3"]].concat(),
        2,
        "is not 'Name: value'",
    );
    fails(
        &mut env.chime(),
        &[&upd[..], &["--filter", "$[?"]].concat(),
        1,
        "error: invalid_request: filter is not a valid JSONPath",
    );
    fails(
        &mut env.chime(),
        &[&upd[..], &["--ordered", "--max-in-flight", "4"]].concat(),
        1,
        "error: invalid_request: an ordered endpoint delivers one at a time",
    );
    fails(
        &mut env.chime(),
        &[&upd[..], &["--ordered", "--unordered"]].concat(),
        2,
        "cannot be used with",
    );
    fails(
        &mut env.chime(),
        &[&upd[..], &["--filter", filter, "--clear-filter"]].concat(),
        2,
        "cannot be used with",
    );
    fails(
        &mut env.chime(),
        &[
            "endpoint",
            "add",
            &hook,
            "--tenant",
            "acme",
            "--signature",
            "rsa",
        ],
        2,
        "invalid value 'rsa'",
    );
    fails(
        &mut env.chime(),
        &[
            "endpoint",
            "add",
            &hook,
            "--tenant",
            "acme",
            "--signature",
            "hmac",
            "--secret",
            "whsec_x",
        ],
        2,
        "cannot be used with",
    );
    fails(
        &mut env.chime(),
        &[
            "endpoint",
            "add",
            &hook,
            "--tenant",
            "acme",
            "--rate-limit",
            "0",
        ],
        1,
        "error: invalid_request: rate_limit_per_s must be between",
    );
    // `--url` is chime's own address; after `update` it would read as the endpoint's.
    fails(
        &mut env.chime(),
        &[&upd[..], &["--url", &v2, "--events", "order.*"]].concat(),
        2,
        "use --target URL",
    );
    let shown = env.json(&["endpoint", "show", &id, "--tenant", "acme"]);
    assert_eq!(shown["max_in_flight"], Value::Null);
    assert_eq!(shown["filter"], Value::Null);
    assert_eq!(shown["events"], json!(["order.*", "user.created"]));
    // Before `update`, --url still points the command at a chime server.
    let base = env.server().base.clone();
    let named = env.json(&[
        "endpoint",
        "--url",
        &base,
        "update",
        &id,
        "--tenant",
        "acme",
        "--description",
        "via --url",
    ]);
    assert_eq!(named["description"], "via --url");

    // Delete: --json says what went; then it is gone.
    let gone = env.json(&["endpoint", "delete", &id, "--tenant", "acme"]);
    assert_eq!(gone, json!({"id": id, "deleted": true}));
    fails(
        &mut env.chime(),
        &["endpoint", "show", &id, "--tenant", "acme"],
        1,
        "error: not_found: endpoint not found",
    );
    fails(
        &mut env.chime(),
        &["endpoint", "delete", &id, "--tenant", "acme"],
        1,
        "error: not_found: endpoint not found",
    );
    env.chime()
        .args(["endpoint", "delete", &ed_id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(format!("Deleted endpoint {ed_id}, with its deliveries.\n"));
    let left = env.json(&["endpoint", "list", "--tenant", "acme"]);
    assert_eq!(left["data"].as_array().unwrap().len(), 1, "{left}");
}

#[test]
fn ordered_endpoint_head_is_skipped_then_replayed() {
    // One retry, an hour away: a failed first attempt leaves the head pending and blocking.
    let env = Env::start_with(Opts {
        retry_schedule: "1h",
        ..Opts::default()
    });
    let rx = env.receiver();
    rx.script(&[500]);
    env.json(&["tenant", "create", "acme"]);
    let ep = env.json(&[
        "endpoint",
        "add",
        &rx.url("/hook"),
        "--tenant",
        "acme",
        "--ordered",
    ]);
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let head = env.json(&["send", "seq", "0", "--tenant", "acme"]);
    let head_id = head["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let next = env.json(&["send", "seq", "1", "--tenant", "acme"]);
    let next_id = next["deliveries"][0]["id"].as_str().unwrap().to_owned();

    // `endpoint show` names the failed head, and how to give it up.
    let path = format!("/v1/tenants/acme/endpoints/{ep_id}");
    env.rt
        .block_on(crate::support::eventually(
            Duration::from_secs(10),
            || async {
                let (_, e) = env.server().admin("GET", &path, None).await;
                (e["blocked_by"]["id"] == head_id.as_str()).then_some(())
            },
        ))
        .expect("the failed head is shown as blocking");
    let shown = env.json(&["endpoint", "show", &ep_id, "--tenant", "acme"]);
    assert_eq!(shown["blocked_by"]["id"], head_id.as_str());
    assert_eq!(shown["blocked_by"]["attempts"], 1);
    assert_eq!(shown["blocked_by"]["last_status_code"], 500);
    env.chime()
        .args(["endpoint", "show", &ep_id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(
            predicate::str::is_match(format!(
                r"(?m)^  blocked by:\s+{head_id} \(seq, 1 attempts, last 500, next try \d{{4}}-"
            ))
            .unwrap(),
        )
        .stdout(predicate::str::contains(format!(
            "chime deliveries skip {head_id} --tenant acme"
        )));
    assert_eq!(rx.received().len(), 1, "nothing behind the head was sent");

    // Skip it: the next one goes at once.
    let skipped = env.json(&["deliveries", "skip", &head_id, "--tenant", "acme"]);
    assert_eq!(skipped["id"], head_id.as_str());
    assert_eq!(skipped["status"], "skipped");
    env.wait_delivery("acme", &next_id, "succeeded");
    fails(
        &mut env.chime(),
        &["deliveries", "skip", &head_id, "--tenant", "acme"],
        1,
        "error: conflict: only a pending delivery that is not being attempted can be skipped",
    );
    fails(
        &mut env.chime(),
        &["deliveries", "skip", "dlv_nope", "--tenant", "acme"],
        1,
        "error: not_found: delivery not found",
    );

    // Replay it: a dry run counts and changes nothing; the real one re-delivers with the
    // original webhook-id.
    let dry = env.json(&[
        "deliveries",
        "replay",
        "--tenant",
        "acme",
        "--status",
        "skipped",
        "--dry-run",
    ]);
    assert_eq!(dry, json!({"dry_run": true, "count": 1, "more": false}));
    env.chime()
        .args([
            "deliveries",
            "replay",
            "--tenant",
            "acme",
            "--status",
            "skipped",
            "--endpoint",
            &ep_id,
            "--dry-run",
        ])
        .assert()
        .code(0)
        .stdout("Would replay 1 delivery.\n");
    let still = env.json(&["deliveries", "show", &head_id, "--tenant", "acme"]);
    assert_eq!(still["status"], "skipped");
    env.chime()
        .args([
            "deliveries",
            "replay",
            "--tenant",
            "acme",
            "--status",
            "skipped",
        ])
        .assert()
        .code(0)
        .stdout("Replayed 1 delivery.\n");
    env.wait_delivery("acme", &head_id, "succeeded");
    let got = env.rt.block_on(rx.wait_count(3));
    assert_eq!(got[2].header("webhook-id"), got[0].header("webhook-id"));
    assert_eq!(&got[2].body[..], &got[0].body[..]);

    // Every filter at once, and --json of a real replay.
    let replayed = env.json(&[
        "deliveries",
        "replay",
        "--tenant",
        "acme",
        "--status",
        "succeeded,failed",
        "--status",
        "skipped",
        "--endpoint",
        &ep_id,
        "--event",
        "seq",
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2999-01-01T00:00:00+01:00",
    ]);
    assert_eq!(
        replayed,
        json!({"dry_run": false, "count": 2, "more": false})
    );
    env.rt.block_on(rx.wait_count(5));
    env.chime()
        .args([
            "deliveries",
            "replay",
            "--tenant",
            "acme",
            "--status",
            "succeeded",
            "--event",
            "other",
            "--dry-run",
        ])
        .assert()
        .code(0)
        .stdout("Would replay 0 deliveries.\n");
    fails(
        &mut env.chime(),
        &[
            "deliveries",
            "replay",
            "--tenant",
            "acme",
            "--since",
            "yesterday",
        ],
        2,
        "not an RFC 3339 time",
    );
    fails(
        &mut env.chime(),
        &[
            "deliveries",
            "replay",
            "--tenant",
            "acme",
            "--status",
            "pending",
        ],
        2,
        "invalid value 'pending'",
    );
}

#[test]
fn dead_letters_are_replayed() {
    let env = Env::start();
    let rx = env.receiver();
    rx.set_default(500);
    env.json(&["tenant", "create", "acme"]);
    env.json(&["endpoint", "add", &rx.url("/hook"), "--tenant", "acme"]);
    let mut ids = Vec::new();
    for event in ["order.created", "user.created"] {
        let sent = env.json(&["send", event, "{}", "--tenant", "acme"]);
        ids.push(sent["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    // The test server retries after 20 ms and 40 ms, then gives up.
    for id in &ids {
        env.wait_delivery("acme", id, "failed");
    }

    // Failed is the default status.
    let dry = env.json(&["deliveries", "replay", "--tenant", "acme", "--dry-run"]);
    assert_eq!(dry, json!({"dry_run": true, "count": 2, "more": false}));
    let dry = env.json(&[
        "deliveries",
        "replay",
        "--tenant",
        "acme",
        "--event",
        "user.created",
        "--dry-run",
    ]);
    assert_eq!(dry["count"], 1);

    rx.set_default(200);
    env.chime()
        .args(["deliveries", "replay", "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout("Replayed 2 deliveries.\n");
    for id in &ids {
        env.wait_delivery("acme", id, "succeeded");
    }
    let again = env.json(&["deliveries", "replay", "--tenant", "acme"]);
    assert_eq!(again, json!({"dry_run": false, "count": 0, "more": false}));
}

#[test]
fn event_types_with_a_schema_guard_publishing() {
    let env = Env::start();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("order.schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}"#,
    )
    .unwrap();
    let schema = schema.to_str().unwrap();

    let t = env.json(&[
        "event-types",
        "create",
        "order.paid",
        "--description",
        "An order was paid",
        "--schema",
        schema,
    ]);
    assert_eq!(t["name"], "order.paid");
    assert_eq!(t["description"], "An order was paid");
    assert_eq!(t["schema"]["required"], json!(["amount"]));
    assert!(t["created_at"].is_string());
    env.chime()
        .args(["event-types", "create", "order.refunded", "--schema", "-"])
        .write_stdin(r#"{"type": "object"}"#)
        .assert()
        .code(0)
        .stdout("Created event type order.refunded: the data of order.refunded events must match its schema.\n");
    env.chime()
        .args(["event-types", "create", "user.created"])
        .assert()
        .code(0)
        .stdout("Created event type user.created (no schema).\n");

    let list = env.json(&["event-types", "list"]);
    let mut names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["order.paid", "order.refunded", "user.created"]);
    assert!(list["next_cursor"].is_null());
    env.chime()
        .args(["event-types", "list"])
        .assert()
        .code(0)
        .stdout(predicate::str::is_match(r"(?m)^NAME\s+SCHEMA\s+DESCRIPTION\s+UPDATED$").unwrap())
        .stdout(
            predicate::str::is_match(r"(?m)^order\.paid\s+yes\s+An order was paid\s+\d{4}-")
                .unwrap(),
        )
        .stdout(predicate::str::is_match(r"(?m)^user\.created\s+-\s+\d{4}-").unwrap());
    assert_eq!(env.json(&["event-types", "show", "order.paid"]), t);
    env.chime()
        .args(["event-types", "show", "order.paid"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("description: An order was paid"))
        .stdout(predicate::str::contains(r#""required": ["#));

    // Publishing data that breaks the schema: exit 1 with the server's reason.
    env.json(&["tenant", "create", "acme"]);
    env.chime()
        .args([
            "send",
            "order.paid",
            r#"{"amount": "lots"}"#,
            "--tenant",
            "acme",
        ])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            r#"error: invalid_request: data does not match the schema of "order.paid": /amount: "#,
        ));
    env.json(&[
        "send",
        "order.paid",
        r#"{"amount": 12.5}"#,
        "--tenant",
        "acme",
    ]);

    // Update: without the schema, anything goes again.
    let up = env.json(&["event-types", "update", "order.paid", "--clear-schema"]);
    assert_eq!(up["schema"], Value::Null);
    assert_eq!(up["description"], "An order was paid");
    env.json(&[
        "send",
        "order.paid",
        r#"{"amount": "lots"}"#,
        "--tenant",
        "acme",
    ]);
    let up = env.json(&["event-types", "update", "order.paid", "--schema", schema]);
    assert_eq!(up["schema"]["required"], json!(["amount"]));
    env.chime()
        .args([
            "event-types",
            "update",
            "order.paid",
            "--description",
            "Paid in full",
        ])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("Updated event type order.paid"))
        .stdout(predicate::str::contains("description: Paid in full"))
        .stdout(predicate::str::contains(r#""amount""#));

    // Mistakes.
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "{type: object}").unwrap();
    let not_json = not_json.to_str().unwrap();
    fails(
        &mut env.chime(),
        &["event-types", "update", "order.paid"],
        2,
        "nothing to change",
    );
    fails(
        &mut env.chime(),
        &[
            "event-types",
            "update",
            "order.paid",
            "--schema",
            schema,
            "--clear-schema",
        ],
        2,
        "cannot be used with",
    );
    fails(
        &mut env.chime(),
        &["event-types", "create", "a.b", "--schema", not_json],
        2,
        "is not JSON",
    );
    fails(
        &mut env.chime(),
        &[
            "event-types",
            "create",
            "a.b",
            "--schema",
            "/nonexistent/schema.json",
        ],
        2,
        "cannot read /nonexistent/schema.json",
    );
    env.chime()
        .args(["event-types", "create", "a.b", "--schema", "-"])
        .write_stdin(r#"{"type": 5}"#)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: invalid_request: schema is not a valid JSON Schema",
        ));
    fails(
        &mut env.chime(),
        &["event-types", "create", "order.paid"],
        1,
        "error: conflict:",
    );
    let token = env.json(&["tenant", "token", "acme"]);
    fails(
        env.chime()
            .env("CHIME_TOKEN", token["token"].as_str().unwrap()),
        &["event-types", "delete", "order.paid"],
        1,
        "error: forbidden:",
    );

    // Delete.
    let gone = env.json(&["event-types", "delete", "order.paid"]);
    assert_eq!(gone, json!({"name": "order.paid", "deleted": true}));
    fails(
        &mut env.chime(),
        &["event-types", "show", "order.paid"],
        1,
        "error: not_found: event type not found",
    );
    env.chime()
        .args(["event-types", "delete", "user.created"])
        .assert()
        .code(0)
        .stdout("Deleted event type user.created.\n");
}

#[test]
fn endpoint_show_says_why_chime_stopped_delivering() {
    // One failure makes an endpoint failing; a 410 disables it at once.
    let env = Env::start_with(Opts {
        failure_threshold: 1,
        ..Opts::default()
    });
    let (gone, down) = (env.receiver(), env.receiver());
    gone.set_default(410);
    down.set_default(500);
    env.json(&["tenant", "create", "acme"]);
    let gone_ep = env.json(&["endpoint", "add", &gone.url("/h"), "--tenant", "acme"]);
    let down_ep = env.json(&["endpoint", "add", &down.url("/h"), "--tenant", "acme"]);
    let (gone_id, down_id) = (
        gone_ep["id"].as_str().unwrap().to_owned(),
        down_ep["id"].as_str().unwrap().to_owned(),
    );
    env.json(&["send", "order.created", "{}", "--tenant", "acme"]);
    let shown = |id: &str, key: &str| {
        let path = format!("/v1/tenants/acme/endpoints/{id}");
        let key = key.to_owned();
        env.rt
            .block_on(crate::support::eventually(
                Duration::from_secs(10),
                || async {
                    let (_, e) = env.server().admin("GET", &path, None).await;
                    e[&key].is_string().then_some(e)
                },
            ))
            .unwrap_or_else(|| panic!("{id} never had {key}"))
    };
    let e = shown(&gone_id, "disabled_reason");
    assert_eq!(e["enabled"], false);
    let reason = e["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("410"), "{reason}");
    env.chime()
        .args(["endpoint", "show", &gone_id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(format!(
            "enabled:       no (disabled by chime: {reason})"
        )));

    let e = shown(&down_id, "failing_since");
    let since = e["failing_since"].as_str().unwrap();
    env.chime()
        .args(["endpoint", "show", &down_id, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(format!(
            "failing since: {since} ("
        )))
        .stdout(predicate::str::is_match(r"(?m)^  enabled:\s+yes$").unwrap());
    assert_eq!(
        env.json(&["endpoint", "show", &down_id, "--tenant", "acme"])["failing_since"],
        since
    );

    // Enabling it again by hand forgets why it was disabled.
    let on = env.json(&[
        "endpoint",
        "update",
        &gone_id,
        "--tenant",
        "acme",
        "--enabled",
    ]);
    assert_eq!(on["enabled"], true);
    assert_eq!(on["disabled_reason"], Value::Null);
}

#[test]
fn dashboard_prints_a_sign_in_link_that_works_once() {
    let env = Env::start();
    let out = env
        .chime()
        .args(["dashboard", "--no-open"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .assert()
        .code(0)
        .stderr(predicate::str::contains("signs you in once"))
        .get_output()
        .stdout
        .clone();
    let url = String::from_utf8(out).unwrap().trim().to_owned();
    assert!(
        url.starts_with(&format!("{}/ui/link?token=", env.server().base)),
        "{url}"
    );
    let statuses = env.rt.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut out = vec![];
        for _ in 0..2 {
            out.push(http.get(&url).send().await.unwrap().status().as_u16());
        }
        out
    });
    assert_eq!(statuses, [200, 410], "the link works once");
    // Only the admin token makes one.
    env.json(&["tenant", "create", "acme"]);
    let token = env.json(&["tenant", "token", "acme"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    env.chime()
        .args(["dashboard", "--no-open"])
        .env("CHIME_TOKEN", token)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("admin"));
}

/// `chime source`: create (the ingest URL to give the provider), list, show, rotate the URL,
/// read rejections, update, delete; a bad scheme setting is a usage error before any call.
#[test]
fn sources_are_managed_from_the_command_line() {
    let env = Env::start();
    env.rt.block_on(env.server().create_tenant("acme"));
    let created = env.json(&[
        "source",
        "create",
        "stripe-prod",
        "--tenant",
        "acme",
        "--scheme",
        "stripe",
        "--secret",
        "whsec_test",
    ]);
    let id = created["id"].as_str().unwrap().to_owned();
    let url = created["ingest_url"].as_str().unwrap().to_owned();
    assert!(url.contains("/in/"), "{created}");
    assert_eq!(created["secrets"], 1);
    env.chime()
        .args(["source", "list", "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("stripe-prod"))
        .stdout(predicate::str::contains(&url));
    let shown = env.json(&["source", "show", &id, "--tenant", "acme"]);
    assert_eq!(shown["event_name"], "/type");
    assert!(!shown.to_string().contains("whsec_test"));
    let rotated = env.json(&["source", "rotate-url", &id, "--tenant", "acme"]);
    assert_ne!(rotated["ingest_url"], url.as_str());
    let rejections = env.json(&["source", "rejections", &id, "--tenant", "acme"]);
    assert!(rejections["data"].as_array().unwrap().is_empty());
    // update: two secrets during a rotation, a rate limit; the rest stays.
    let updated = env.json(&[
        "source",
        "update",
        &id,
        "--tenant",
        "acme",
        "--scheme",
        "stripe",
        "--secret",
        "whsec_new",
        "--secret",
        "whsec_test",
        "--rate-limit",
        "50",
    ]);
    assert_eq!(updated["secrets"], 2, "{updated}");
    assert_eq!(updated["rate_limit_per_s"], 50);
    assert_eq!(updated["name"], "stripe-prod");
    let cleared = env.json(&[
        "source",
        "update",
        &id,
        "--tenant",
        "acme",
        "--clear-rate-limit",
    ]);
    assert!(cleared["rate_limit_per_s"].is_null(), "{cleared}");
    assert_eq!(cleared["secrets"], 2);
    env.chime()
        .args(["source", "update", &id, "--tenant", "acme", "--secret", "s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--scheme"));
    env.chime()
        .args([
            "source", "create", "x", "--tenant", "acme", "--scheme", "hmac", "--secret", "k",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("header"));
    env.chime()
        .args(["source", "delete", &id, "--tenant", "acme"])
        .assert()
        .code(0);
    let list = env.json(&["source", "list", "--tenant", "acme"]);
    assert!(list["data"].as_array().unwrap().is_empty());
}
