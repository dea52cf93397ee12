//! Helpers for testing the `chime` binary as a user runs it: commands with a clean
//! environment, and long-running children (`chime listen`) whose stdout lines are read with
//! a deadline and which are killed when the test ends, pass or fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The `chime` binary with every `CHIME_*` variable removed, so a developer's or CI's
/// environment cannot leak into a test.
pub fn chime() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_chime"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHIME_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.timeout(Duration::from_secs(30));
    cmd
}

/// A running child process, killed on drop.
pub struct ChildGuard {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ChildGuard {
    /// Starts `chime ARGS…` with stdout piped (read line by line) and stderr inherited (so a
    /// failing test shows what the child said).
    pub fn spawn(args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chime"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CHIME_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chime");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next stdout line, or a panic after `deadline`.
    pub async fn next_line(&mut self, deadline: Duration) -> String {
        match tokio::time::timeout(deadline, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("chime exited before printing the expected line"),
            Err(_) => panic!("no line from chime within {deadline:?}"),
        }
    }

    /// The next stdout line parsed as JSON (5 s deadline).
    pub async fn next_json(&mut self) -> Value {
        let line = self.next_line(Duration::from_secs(5)).await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
