//! The harness every module of the test binary shares, compiled once: the in-process server
//! (`server`), the test receiver (`receiver`), PostgreSQL schemas and databases (`postgres`),
//! the `chime` binary as a command (`cli`), child processes killed when the test ends
//! (`process`), and memory caps (`memory`). Tests synchronise on received requests, output
//! lines and conditions with a deadline, never on sleeps.

pub mod browser;
pub mod cli;
pub mod memory;
pub mod openapi;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod server;
pub mod tls;

use std::time::Duration;

pub use memory::cap_this_process_memory;
pub use receiver::{Received, Receiver};
pub(crate) use server::on_both_backends;
pub use server::{ADMIN, Fixture, Opts, TestServer};

/// Re-evaluates `check` until it yields a value or the deadline passes. For state that only
/// the API can show (the store's), this is the condition-with-deadline the tests wait on.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Now, in seconds since the Unix epoch (a webhook timestamp).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The id of the delivery to `endpoint` among those a publish answered with.
pub fn delivery_to(published: &serde_json::Value, endpoint: &str) -> String {
    published["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["endpoint_id"] == endpoint)
        .unwrap_or_else(|| panic!("no delivery to {endpoint}: {published}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}
