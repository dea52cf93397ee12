//! The real binary as an operator runs it: first start generates and prints the admin token
//! (file mode 0600), SIGTERM stops gracefully, SIGKILL loses nothing, and a restart on the same
//! data directory completes every pending delivery.

use std::process::Command;
use std::time::Duration;

use crate::support::cli::{command, without_chime_env};
use crate::support::memory::cap_memory;
use crate::support::process::{ChildProcess, served_at};
use crate::support::{Receiver, eventually};
use serde_json::{Value, json};

/// The `chime serve` arguments of these tests.
fn serve_args(cmd: &mut Command, data_dir: &std::path::Path) {
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-targets",
        "127.0.0.0/8",
    ])
    .args(["--retry-schedule", "50ms", "--shutdown-grace", "300ms"])
    .arg("--data-dir")
    .arg(data_dir)
    .env_remove("CHIME_ADMIN_TOKEN")
    .env("CHIME_LOG", "warn");
}

/// `chime serve` on `data_dir`, and the base URL it serves on.
async fn serve_on(data_dir: &std::path::Path) -> (ChildProcess, String) {
    let mut cmd = command();
    serve_args(&mut cmd, data_dir);
    start(cmd).await
}

/// Starts `cmd`, a `chime serve` (perhaps wrapped), and reads the base URL it prints first.
async fn start(cmd: Command) -> (ChildProcess, String) {
    let mut serve = ChildProcess::spawn("chime serve", cmd);
    let first = serve.next_line(Duration::from_secs(20)).await;
    let base = served_at(&first);
    (serve, base)
}

/// The next line `chime serve` prints.
async fn next_line(serve: &mut ChildProcess) -> String {
    serve.next_line(Duration::from_secs(10)).await
}

async fn call(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Tenant `acme` with one endpoint at `url`.
async fn acme_delivering_to(base: &str, token: &str, url: &str) {
    let (s, _) = call(
        base,
        token,
        "POST",
        "/v1/tenants",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_eq!(s, 201);
    let endpoint = json!({ "url": url });
    let (s, _) = call(
        base,
        token,
        "POST",
        "/v1/tenants/acme/endpoints",
        Some(endpoint),
    )
    .await;
    assert_eq!(s, 201);
}

async fn all_succeeded(base: &str, token: &str, ids: &[String]) -> bool {
    for id in ids {
        let (s, d) = call(
            base,
            token,
            "GET",
            &format!("/v1/tenants/acme/deliveries/{id}"),
            None,
        )
        .await;
        if s != 200 || d["status"] != "succeeded" {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_signals_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rx = Receiver::start().await;
    rx.hold();

    // First start: the token is printed once and written to a private file.
    let (mut serve, base) = serve_on(&data).await;
    assert!(next_line(&mut serve).await.contains("data:"));
    let token_line = next_line(&mut serve).await;
    let token = token_line
        .trim()
        .strip_prefix("admin token: ")
        .expect(&token_line)
        .to_owned();
    assert!(next_line(&mut serve).await.contains("shown once"));
    let dashboard = next_line(&mut serve).await;
    assert!(
        dashboard.contains(&format!("dashboard:   {base}/ui ")),
        "{dashboard}"
    );
    let file = data.join("admin-token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    acme_delivering_to(&base, &token, &rx.url("/h")).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (s, ev) = call(
            &base,
            &token,
            "POST",
            "/v1/tenants/acme/events",
            Some(json!({"event": "e", "data": i})),
        )
        .await;
        assert_eq!(s, 202);
        ids.push(ev["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    rx.wait_count(1).await;

    // SIGTERM: graceful, exit status 0, with attempts still held by the receiver.
    serve.signal("-TERM");
    assert!(serve.wait_exit(Duration::from_secs(20)).await.success());
    drop(serve);

    // Second start: the token is not shown again; SIGKILL it while it delivers.
    let (mut serve, _) = serve_on(&data).await;
    next_line(&mut serve).await;
    let line = next_line(&mut serve).await;
    assert!(
        line.contains("admin-token") && !line.contains(&token),
        "{line}"
    );
    rx.wait_count(2).await;
    serve.signal("-KILL");
    serve.wait_exit(Duration::from_secs(20)).await;
    drop(serve);

    // Third start: everything still pending is delivered.
    rx.release();
    let (serve, base) = serve_on(&data).await;
    let done = crate::support::eventually(Duration::from_secs(20), || async {
        all_succeeded(&base, &token, &ids).await.then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "every delivery succeeded after the restarts"
    );
    let seen: std::collections::HashSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(seen.len(), 20);
    drop(serve);
}

#[test]
fn bad_configuration_exits_with_status_2_and_says_why() {
    let out = command()
        .args(["serve", "--retry-schedule", "5 parsecs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retry_schedule"), "{err}");
    let out = command().arg("default-config").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("retry_schedule = \"5s,5m,30m,2h,5h,10h,10h\"")
    );
}

/// `chime migrate` says what it did: it creates an empty data directory's schema, then finds
/// nothing to do; `--json` says the same for scripts.
#[test]
fn chime_migrate_says_whether_it_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = |json: bool| {
        let mut cmd = command();
        cmd.arg("migrate")
            .arg("--data-dir")
            .arg(dir.path())
            .env("CHIME_LOG", "warn");
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = migrate(false);
    assert!(first.contains("created the schema (version "), "{first}");
    let second = migrate(false);
    assert!(second.contains("already up to date"), "{second}");
    let json: serde_json::Value = serde_json::from_str(&migrate(true)).unwrap();
    assert_eq!(json["migrated"], false);
    assert_eq!(json["from"], json["to"]);
    assert!(json["to"].as_u64().unwrap() > 0);
}

/// On a full disk a publish is answered 503 `unavailable` with a clear detail (never 500),
/// and `/readyz` says not ready; once space is freed both recover without a restart, and
/// every event accepted before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_unavailable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A 4 MiB filesystem of its own (in a mount namespace of its own), 3 MiB of which is a
    // ballast file the test removes to free space.
    let script = r#"mount -t tmpfs -o size=4m tmpfs "$1" \
        && dd if=/dev/zero of="$1/ballast" bs=1024 count=3072 status=none \
        && shift && exec "$@""#;
    // The wrapper gets the environment and memory cap every chime process gets.
    let mut cmd = Command::new("unshare");
    without_chime_env(&mut cmd);
    cap_memory(&mut cmd);
    cmd.args([
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&data)
    .arg(env!("CARGO_BIN_EXE_chime"));
    serve_args(&mut cmd, &data);
    cmd.env("CHIME_ADMIN_TOKEN", "full-disk-admin-token-0123456789");
    let (serve, base) = start(cmd).await;
    let token = "full-disk-admin-token-0123456789";
    let (s, _) = call(
        &base,
        token,
        "POST",
        "/v1/tenants",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_eq!(s, 201);

    let filler = "x".repeat(60_000);
    let mut accepted = Vec::new();
    let refusal = loop {
        let (s, b) = call(
            &base,
            token,
            "POST",
            "/v1/tenants/acme/events",
            Some(json!({"event": "fill", "data": {"pad": filler}})),
        )
        .await;
        match s {
            202 => accepted.push(b["id"].as_str().unwrap().to_owned()),
            _ => break (s, b),
        }
        assert!(accepted.len() < 200, "4 MiB never filled up");
    };
    assert_eq!(refusal.0, 503, "{refusal:?}");
    assert_eq!(refusal.1["code"], "unavailable");
    assert!(
        refusal.1["detail"]
            .as_str()
            .unwrap()
            .contains("no space left"),
        "{refusal:?}"
    );
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("no space left"),
        "{body}"
    );

    // Free the space, seen from inside the server's mount namespace.
    let ballast = format!("/proc/{}/root{}/ballast", serve.id(), data.display());
    std::fs::remove_file(&ballast).unwrap();
    let ready = eventually(Duration::from_secs(30), || async {
        let status = reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status();
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "never ready again");
    let (s, b) = call(
        &base,
        token,
        "POST",
        "/v1/tenants/acme/events",
        Some(json!({"event": "after", "data": {}})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    for id in &accepted {
        let (s, _) = call(
            &base,
            token,
            "GET",
            &format!("/v1/tenants/acme/events/{id}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "accepted event {id} is still there");
    }
}

/// `--log-format json`: every line on stderr is one JSON object with the level, the message
/// and the fields apart, as log shippers read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut cmd = command();
    serve_args(&mut cmd, &dir.path().join("data"));
    cmd.args(["--log-format", "json"])
        .env("CHIME_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let (mut serve, _base) = start(cmd).await;
    serve.signal("-TERM");
    assert!(serve.wait_exit(Duration::from_secs(20)).await.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["message"] == "shutdown requested"),
        "{text}"
    );
    assert!(lines.iter().all(|l| l["timestamp"].is_string()), "{text}");
}

/// Issue 18: a source's 2xx means committed. Twenty provider-signed requests answered, the
/// process SIGKILLed at once (its receiver held, so nothing was delivered yet), a restart on
/// the same data directory delivers every one, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_ingest_survives_a_sigkill() {
    use chime_webhooks::providers::stripe;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rx = Receiver::start().await;
    rx.hold();
    let (mut serve, base) = serve_on(&data).await;
    next_line(&mut serve).await;
    let token = next_line(&mut serve)
        .await
        .trim()
        .strip_prefix("admin token: ")
        .expect("the first start prints the token")
        .to_owned();
    acme_delivering_to(&base, &token, &rx.url("/app")).await;
    let (s, src) = call(
        &base,
        &token,
        "POST",
        "/v1/tenants/acme/sources",
        Some(json!({"name": "stripe", "verify": {"scheme": "stripe", "secret": "whsec_k"}})),
    )
    .await;
    assert_eq!(s, 201, "{src}");
    let url = src["ingest_url"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let mut sent = std::collections::BTreeSet::new();
    for i in 0..20 {
        let body = format!(r#"{{"id":"evt_{i}","type":"charge.succeeded","data":{{"n":{i}}}}}"#);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let r = http
            .post(&url)
            .header(
                "stripe-signature",
                stripe::sign("whsec_k", now, body.as_bytes()),
            )
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        sent.insert(body);
    }
    serve.signal("-KILL");
    serve.wait_exit(Duration::from_secs(20)).await;
    drop(serve);

    rx.release();
    let (serve, _) = serve_on(&data).await;
    let bodies = |got: &[crate::support::Received]| -> std::collections::BTreeSet<String> {
        got.iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    };
    // At most a few attempts were held when it died: the rest can only come from the restart.
    let got = rx
        .wait_for(Duration::from_secs(20), |got| {
            bodies(got).len() >= sent.len()
        })
        .await;
    let got = Some(bodies(&got));
    assert_eq!(
        got.as_ref(),
        Some(&sent),
        "every answered request, byte for byte"
    );
    drop(serve);
}
