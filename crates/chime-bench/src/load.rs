//! The load generator: POSTs 500-byte events over kept-alive HTTP/1.1 connections (hyper-util's
//! pooled client), either closed loop (C publishers, each waiting for its answer) or open loop
//! (a fixed offered rate, whatever the answers do).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use super::sink::{Tracker, histogram};

/// Size of every published event body.
pub const EVENT_BYTES: usize = 500;
/// Most open-loop requests outstanding at once; beyond it the generator falls behind its
/// schedule (reported as lag) rather than opening connections without bound.
const OPEN_LOOP_MAX_OUTSTANDING: usize = 2048;
const ERROR_SAMPLES: usize = 5;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(usize::MAX)
        .build(conn)
}

/// `{"event":"<name>","data":{"seq":<seq>,"pad":"xxx…"}}`, padded to exactly `EVENT_BYTES`.
pub fn event_body(seq: u64, name: &str) -> Bytes {
    padded(&format!(
        "{{\"event\":\"{name}\",\"data\":{{\"seq\":{seq},\"pad\":\""
    ))
}

/// `head`, then `x`s, then `"}}`: exactly `EVENT_BYTES` (or `head` closed, if it is longer).
fn padded(head: &str) -> Bytes {
    let tail = b"\"}}";
    let pad = EVENT_BYTES.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(EVENT_BYTES);
    out.extend_from_slice(head.as_bytes());
    out.resize(head.len() + pad, b'x');
    out.extend_from_slice(tail);
    Bytes::from(out)
}

/// `{"id":"evt_<seq>","object":"event","type":"<name>","data":{"seq":<seq>,"pad":"xxx…"}}`,
/// Stripe's shape (`type` names the event, `id` is the delivery id a source dedupes on),
/// padded to exactly `EVENT_BYTES`.
pub fn stripe_body(seq: u64, name: &str) -> Bytes {
    padded(&format!(
        "{{\"id\":\"evt_{seq:020}\",\"object\":\"event\",\"type\":\"{name}\",\"data\":{{\"seq\":{seq},\"pad\":\""
    ))
}

/// Maps an event's `seq` to the path it is POSTed to and the event name it carries.
pub type Route = Arc<dyn Fn(u64) -> (String, String) + Send + Sync>;

/// Where the publishers send, and what counts as success.
#[derive(Clone)]
pub struct Target {
    /// `http://127.0.0.1:port`, one per node: request `seq` goes to `bases[seq % len]`.
    pub bases: Vec<String>,
    pub authorization: Option<HeaderValue>,
    pub expect: StatusCode,
    pub shape: Shape,
    pub route: Route,
}

/// What each request looks like besides its path.
#[derive(Clone)]
pub enum Shape {
    /// An event published to chime's API: `{"event","data"}`.
    Publish,
    /// What chime itself sends: the event with the three `webhook-*` headers (the ceiling).
    Delivery,
    /// A Stripe event signed with `secret` (`Stripe-Signature`), as Stripe posts to a source.
    Stripe { secret: Arc<str> },
}

/// What one load phase did.
pub struct LoadStats {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub latency_us: Histogram<u64>,
    /// Open loop only: how late requests left relative to their schedule.
    pub lag_us: Histogram<u64>,
    pub started: Instant,
    pub finished: Instant,
}

impl LoadStats {
    fn new(started: Instant) -> Self {
        Self {
            sent: 0,
            ok: 0,
            errors: 0,
            error_samples: Vec::new(),
            latency_us: histogram(),
            lag_us: histogram(),
            started,
            finished: started,
        }
    }

    fn note(&mut self, result: Result<Duration, String>) {
        self.sent += 1;
        match result {
            Ok(took) => {
                self.ok += 1;
                let _ = self.latency_us.record((took.as_micros() as u64).max(1));
            }
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < ERROR_SAMPLES {
                    self.error_samples.push(e);
                }
            }
        }
    }

    pub fn merge(&mut self, other: LoadStats) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.errors += other.errors;
        for e in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(e);
            }
        }
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.lag_us.add(&other.lag_us);
        self.started = self.started.min(other.started);
        self.finished = self.finished.max(other.finished);
    }

    pub fn elapsed(&self) -> Duration {
        self.finished.saturating_duration_since(self.started)
    }

    pub fn ok_per_s(&self) -> f64 {
        per_s(self.ok, self.elapsed())
    }
}

pub fn per_s(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn send_one(
    client: &HttpClient,
    target: &Target,
    tracker: &Tracker,
    seq: u64,
) -> Result<Duration, String> {
    let (path, name) = (target.route)(seq);
    let base = &target.bases[seq as usize % target.bases.len()];
    let uri: Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| format!("bad uri: {e}"))?;
    let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &target.authorization {
        req = req.header(header::AUTHORIZATION, auth.clone());
    }
    let body = match &target.shape {
        Shape::Publish => event_body(seq, &name),
        Shape::Delivery => {
            req = req
                .header("webhook-id", format!("evt_bench{seq:020}"))
                .header("webhook-timestamp", "1732700000")
                .header(
                    "webhook-signature",
                    "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
                );
            event_body(seq, &name)
        }
        Shape::Stripe { secret } => {
            let body = stripe_body(seq, &name);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            req = req.header(
                "stripe-signature",
                chime_webhooks::providers::stripe::sign(secret.as_bytes(), now, &body),
            );
            body
        }
    };
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let start = Instant::now();
    tracker.mark_sent(seq, start);
    let resp = client.request(req).await.map_err(|e| error_text(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| error_text(&e))?
        .to_bytes();
    let took = start.elapsed();
    if status != target.expect {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("{status}: {snippet}"));
    }
    Ok(took)
}

/// `concurrency` publishers send the events `seqs`, each waiting for its answer before the
/// next. `done` counts successful publishes as they happen (for progress).
pub async fn closed_loop(
    client: &HttpClient,
    target: &Target,
    tracker: &Arc<Tracker>,
    seqs: Range<u64>,
    concurrency: usize,
    done: &Arc<AtomicU64>,
) -> LoadStats {
    let next = Arc::new(AtomicU64::new(seqs.start));
    let end = seqs.end;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, target, tracker) = (client.clone(), target.clone(), tracker.clone());
        let (next, done) = (next.clone(), done.clone());
        tasks.spawn(async move {
            let mut stats = LoadStats::new(started);
            loop {
                let seq = next.fetch_add(1, Relaxed);
                if seq >= end {
                    break;
                }
                let r = send_one(&client, &target, &tracker, seq).await;
                if r.is_ok() {
                    done.fetch_add(1, Relaxed);
                }
                stats.note(r);
            }
            stats
        });
    }
    let mut total = LoadStats::new(started);
    while let Some(r) = tasks.join_next().await {
        if let Ok(stats) = r {
            total.merge(stats);
        }
    }
    total.finished = Instant::now();
    total
}

/// Sends the events `seqs` at `rate` per second on a fixed schedule, not waiting for answers.
/// Latency counts from when each request actually left; how late that was against the
/// schedule is kept in `lag_us`.
pub async fn open_loop(
    client: &HttpClient,
    target: &Target,
    tracker: &Arc<Tracker>,
    seqs: Range<u64>,
    rate: f64,
    done: &Arc<AtomicU64>,
) -> LoadStats {
    let started = Instant::now();
    let interval_ns = 1e9 / rate;
    let limit = Arc::new(Semaphore::new(OPEN_LOOP_MAX_OUTSTANDING));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Result<Duration, String>, u64)>();
    let mut total = LoadStats::new(started);
    for (i, seq) in seqs.enumerate() {
        let at = started + Duration::from_nanos((i as f64 * interval_ns) as u64);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = limit.clone().acquire_owned().await.expect("never closed");
        let lag = Instant::now().saturating_duration_since(at);
        let (client, target, tracker) = (client.clone(), target.clone(), tracker.clone());
        let (tx, done) = (tx.clone(), done.clone());
        tokio::spawn(async move {
            let r = send_one(&client, &target, &tracker, seq).await;
            if r.is_ok() {
                done.fetch_add(1, Relaxed);
            }
            drop(permit);
            let _ = tx.send((r, lag.as_micros() as u64));
        });
        while let Ok((r, lag)) = rx.try_recv() {
            total.note(r);
            let _ = total.lag_us.record(lag.max(1));
        }
    }
    drop(tx);
    while let Some((r, lag)) = rx.recv().await {
        total.note(r);
        let _ = total.lag_us.record(lag.max(1));
    }
    total.finished = Instant::now();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_exactly_500_bytes_of_json() {
        for (seq, name) in [(0, "bench.e0"), (999_999, "bench.e15"), (7, "iso.healthy")] {
            let b = event_body(seq, name);
            assert_eq!(b.len(), EVENT_BYTES);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["event"], name);
            assert_eq!(v["data"]["seq"], seq);
            assert_eq!(super::super::sink::parse_seq(&b), Some(seq));
            let s = stripe_body(seq, name);
            assert_eq!(s.len(), EVENT_BYTES);
            let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
            assert_eq!(v["type"], name);
            assert_eq!(v["id"], format!("evt_{seq:020}"));
            assert_eq!(super::super::sink::parse_seq(&s), Some(seq));
        }
    }
}
