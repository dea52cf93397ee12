//! The real binary as an operator runs it: first start generates and prints the admin token
//! (file mode 0600), SIGTERM stops gracefully, SIGKILL loses nothing, and a restart on the same
//! data directory completes every pending delivery.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::Receiver;
use serde_json::{Value, json};

/// A `chime serve` child process, killed on drop so a failing test leaves nothing behind.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

impl Serve {
    fn start(data_dir: &std::path::Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chime"));
        serve_args(&mut cmd, data_dir);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = crate::support::memory::cap_memory(&mut cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chime serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("chime serve printed its address");
        let base = first.rsplit(' ').next().unwrap().to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{first}");
        Self { child, lines, base }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("another line of output")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, with a deadline.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chime serve did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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
    let mut serve = Serve::start(&data);
    assert!(serve.next_line().contains("data:"));
    let token_line = serve.next_line();
    let token = token_line
        .trim()
        .strip_prefix("admin token: ")
        .expect(&token_line)
        .to_owned();
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

    let base = serve.base.clone();
    let (s, _) = call(
        &base,
        &token,
        "POST",
        "/v1/tenants",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call(
        &base,
        &token,
        "POST",
        "/v1/tenants/acme/endpoints",
        Some(json!({"url": rx.url("/h")})),
    )
    .await;
    assert_eq!(s, 201);
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
    assert!(serve.wait_exit().success());
    drop(serve);

    // Second start: the token is not shown again; SIGKILL it while it delivers.
    let mut serve = Serve::start(&data);
    serve.next_line();
    let line = serve.next_line();
    assert!(
        line.contains("admin-token") && !line.contains(&token),
        "{line}"
    );
    rx.wait_count(2).await;
    serve.signal("-KILL");
    serve.wait_exit();
    drop(serve);

    // Third start: everything still pending is delivered.
    rx.release();
    let serve = Serve::start(&data);
    let base = serve.base.clone();
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
    let out = Command::new(env!("CARGO_BIN_EXE_chime"))
        .args(["serve", "--retry-schedule", "5 parsecs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retry_schedule"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_chime"))
        .arg("default-config")
        .output()
        .unwrap();
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chime"));
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
    let mut cmd = Command::new("unshare");
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
    let serve = Serve::spawn(cmd);
    let token = "full-disk-admin-token-0123456789";
    let base = serve.base.clone();
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
    let ballast = format!("/proc/{}/root{}/ballast", serve.child.id(), data.display());
    std::fs::remove_file(&ballast).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(std::time::Instant::now() < until, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
