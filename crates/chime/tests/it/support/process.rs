//! A child process a test starts (`chime serve`, `chime listen`, …): its stdout is read line
//! by line into a channel the test reads with a deadline; it can be signalled and waited for
//! with a deadline; and it is killed when the test ends, pass or fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// A running child process, killed (and reaped) on drop.
pub struct ChildProcess {
    name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl ChildProcess {
    /// Starts `cmd` with stdin closed and stdout piped. Stderr goes where `cmd` sends it:
    /// inherited unless set, so a failing test shows what the child said. `name` names it in
    /// panics.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        // Drain stdout for the process's whole life, whether the test reads it or not: a
        // full or closed pipe would block or fail the child's next print.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or `None` if none comes within `deadline` (or stdout closed).
    pub async fn try_next_line(&mut self, deadline: Duration) -> Option<String> {
        tokio::time::timeout(deadline, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next stdout line, or a panic after `deadline`.
    pub async fn next_line(&mut self, deadline: Duration) -> String {
        match tokio::time::timeout(deadline, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{} exited before printing the expected line", self.name),
            Err(_) => panic!("no line from {} within {deadline:?}", self.name),
        }
    }

    /// The next stdout line parsed as JSON (5 s deadline).
    pub async fn next_json(&mut self) -> Value {
        let line = self.next_line(Duration::from_secs(5)).await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Sends `sig` ("-TERM", "-KILL", …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {}", self.name);
    }

    /// Waits for the process to exit, with a deadline.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{} did not exit within {deadline:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The base URL in the first line `chime serve` prints ("… http://127.0.0.1:PORT").
pub fn served_at(first_line: &str) -> String {
    let base = first_line.rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first_line}");
    base
}
