//! The API commands (`tenant`, `endpoint`, `send`, `events`, `deliveries`) as a user runs them
//! against a real server: `--json` shapes, tables, exit statuses and error messages.

mod cli_support;
mod common;

use cli_support::{chime, closed_port};
use common::{Opts, Receiver, TestServer};
use predicates::prelude::*;
use serde_json::Value;

/// A server on its own runtime, so that the test thread can run commands synchronously.
struct Env {
    rt: tokio::runtime::Runtime,
    server: Option<TestServer>,
    _dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(TestServer::start(dir.path(), Opts::default()));
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
            .env("CHIME_TOKEN", common::ADMIN);
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
    let shown = env.json(&["events", "show", &evt, "--tenant", "acme"]);
    assert_eq!(shown["data"]["order_id"], 1234);
    assert_eq!(shown["deliveries"][0]["id"], delivery.as_str());
    env.chime()
        .args(["events", "show", &evt, "--tenant", "acme"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("succeeded"));

    let deliveries = env.json(&["deliveries", "list", "--tenant", "acme"]);
    assert_eq!(deliveries["data"].as_array().unwrap().len(), 2);
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
        .stdout(predicate::str::contains("previous secret no longer signs"));

    let token = env.json(&["tenant", "token", "acme"]);
    assert!(token["token"].is_string());
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
        format!("{}\n", common::ADMIN),
    )
    .unwrap();
    chime()
        .current_dir(cwd.path())
        .args(["tenant", "list", "--url", &env.server().base, "--json"])
        .assert()
        .code(0);
}
