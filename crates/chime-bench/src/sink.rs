//! The built-in receiver and the record of what was sent and received.
//!
//! `Tracker` holds, per published event (`seq`), the instant its publish left, and per
//! delivery slot (`seq`, or `seq × fanout + endpoint` in fan-out) the instant it first arrived.
//! Both are atomics indexed by number, so the hot paths of the load generator and the sink take
//! no lock and allocate nothing.
//!
//! `Sink` is a hyper HTTP/1.1 server on 127.0.0.1:0 whose paths are `/e/{endpoint}`. It answers
//! 200 at once (or after `delay`, or 500 at `fail_rate`), and can be paused: while paused, a
//! request is held until resumed (then recorded and answered), or answered 503 after
//! `hold_max`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Microsecond histogram bounds: 1 µs to one hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn atomics(n: u64) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Send and receive instants of one scenario, on one monotonic clock.
pub struct Tracker {
    t0: Instant,
    events: u64,
    fanout: u64,
    send_ns: Box<[AtomicU64]>,
    recv_ns: Box<[AtomicU64]>,
    per_endpoint: Box<[AtomicU64]>,
    /// Unique deliveries received.
    pub received: AtomicU64,
    /// Deliveries received again (at least once delivery: retries after a lost answer).
    pub duplicates: AtomicU64,
    pub requests: AtomicU64,
    /// Answered 500 on purpose (`--sink-fail-rate`).
    pub injected_failures: AtomicU64,
    /// Answered 503 because the receiver was paused for longer than `hold_max`.
    pub paused_rejects: AtomicU64,
    /// Not a delivery of this run: wrong path, no `webhook-id`, no `seq` in the body.
    pub malformed: AtomicU64,
}

/// What arrived for a range of events.
pub struct RecvSummary {
    pub deliveries: u64,
    pub last_recv: Option<Instant>,
    pub e2e_us: Histogram<u64>,
}

impl Tracker {
    /// Room for `events` events, each delivered to `fanout` endpoints (1: to one endpoint,
    /// whichever it is), among `endpoints` endpoints.
    pub fn new(events: u64, fanout: u64, endpoints: u64) -> Self {
        Self {
            t0: Instant::now(),
            events,
            fanout: fanout.max(1),
            send_ns: atomics(events),
            recv_ns: atomics(events * fanout.max(1)),
            per_endpoint: atomics(endpoints.max(fanout)),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
            paused_rejects: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_nanos() as u64 + 1
    }

    fn instant(&self, ns: u64) -> Instant {
        self.t0 + Duration::from_nanos(ns - 1)
    }

    /// Notes that event `seq` is about to be published.
    pub fn mark_sent(&self, seq: u64, at: Instant) {
        if let Some(slot) = self.send_ns.get(seq as usize) {
            slot.store(self.ns(at), Relaxed);
        }
    }

    /// Notes a delivery of `seq` to `endpoint`; false when it is not one of this run's.
    pub fn mark_received(&self, endpoint: u64, seq: u64, at: Instant) -> bool {
        if seq >= self.events || endpoint >= self.per_endpoint.len() as u64 {
            return false;
        }
        let slot = if self.fanout > 1 {
            if endpoint >= self.fanout {
                return false;
            }
            seq * self.fanout + endpoint
        } else {
            seq
        };
        let first = self.recv_ns[slot as usize]
            .compare_exchange(0, self.ns(at), Relaxed, Relaxed)
            .is_ok();
        if first {
            self.per_endpoint[endpoint as usize].fetch_add(1, Relaxed);
            self.received.fetch_add(1, Relaxed);
        } else {
            self.duplicates.fetch_add(1, Relaxed);
        }
        true
    }

    /// Unique deliveries received by one endpoint.
    pub fn received_by(&self, endpoint: u64) -> u64 {
        self.per_endpoint
            .get(endpoint as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Deliveries of the events `seqs`, their last arrival and publish→receive latencies.
    pub fn summary(&self, seqs: Range<u64>) -> RecvSummary {
        let mut h = histogram();
        let mut deliveries = 0;
        let mut last = 0u64;
        for seq in seqs.start..seqs.end.min(self.events) {
            let sent = self.send_ns[seq as usize].load(Relaxed);
            for j in 0..self.fanout {
                let r = self.recv_ns[(seq * self.fanout + j) as usize].load(Relaxed);
                if r == 0 {
                    continue;
                }
                deliveries += 1;
                last = last.max(r);
                if sent != 0 {
                    let _ = h.record((r.saturating_sub(sent) / 1000).max(1));
                }
            }
        }
        RecvSummary {
            deliveries,
            last_recv: (last != 0).then(|| self.instant(last)),
            e2e_us: h,
        }
    }
}

/// How the receiver answers.
#[derive(Clone, Debug, Default)]
pub struct SinkOpts {
    pub delay: Duration,
    pub fail_rate: f64,
    /// This endpoint answers after this delay instead (the isolation scenario's slow one).
    pub slow: Option<(u64, Duration)>,
    pub hold_max: Duration,
    /// Serve HTTPS with this configuration (the https scenario).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

struct State {
    tracker: Arc<Tracker>,
    opts: SinkOpts,
    paused: watch::Sender<bool>,
}

/// A running receiver; stops (with its connections) when dropped.
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sink {
    pub async fn start(tracker: Arc<Tracker>, opts: SinkOpts) -> std::io::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (paused, _) = watch::channel(false);
        let state = Arc::new(State {
            tracker,
            opts,
            paused,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Ok(Sink { addr, state, stop })
    }

    pub fn base(&self) -> String {
        match self.state.opts.tls {
            // The certificate names localhost, which the server resolves to the address.
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    pub fn url(&self, endpoint: u64) -> String {
        format!("{}/e/{endpoint}", self.base())
    }

    pub fn pause(&self) {
        self.state.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.state.paused.send_replace(false);
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors or a reset before accept: back off a little.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            match state.opts.tls.clone() {
                Some(config) => {
                    let accepted = tokio::select! {
                        r = tokio_rustls::TlsAcceptor::from(config).accept(stream) => r,
                        _ = stop.cancelled() => return,
                    };
                    if let Ok(tls) = accepted {
                        serve(tls, state, stop).await;
                    }
                }
                None => serve(stream, state, stop).await,
            }
        });
    }
}

/// Serves one connection, HTTP/1.1 kept alive, until it closes or the sink stops.
async fn serve<S>(stream: S, state: Arc<State>, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(state.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = stop.cancelled() => {}
    }
}

/// A self-signed certificate for `localhost`: the server configuration that serves it, and
/// its PEM for the endpoints to trust (`tls.ca_pem`).
pub fn localhost_tls() -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let pem = made.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("the generated key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![made.cert.der().clone()], key)?;
    Ok((Arc::new(config), pem))
}

fn answer(status: StatusCode) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    Ok(r)
}

/// The `seq` the load generator wrote into the event: `…"seq":123,…`.
pub fn parse_seq(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"seq\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let t = &state.tracker;
    t.requests.fetch_add(1, Relaxed);
    let endpoint = req
        .uri()
        .path()
        .strip_prefix("/e/")
        .and_then(|s| s.parse::<u64>().ok());
    let has_id = req
        .headers()
        .get("webhook-id")
        .is_some_and(|v| !v.is_empty());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(StatusCode::BAD_REQUEST),
    };
    let (Some(endpoint), Some(seq), true) = (endpoint, parse_seq(&body), has_id) else {
        t.malformed.fetch_add(1, Relaxed);
        return answer(StatusCode::BAD_REQUEST);
    };
    if *state.paused.borrow() {
        let mut rx = state.paused.subscribe();
        let resumed = tokio::time::timeout(state.opts.hold_max, rx.wait_for(|p| !*p)).await;
        if resumed.is_err() {
            t.paused_rejects.fetch_add(1, Relaxed);
            return answer(StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    if state.opts.fail_rate > 0.0 && rand::random::<f64>() < state.opts.fail_rate {
        t.injected_failures.fetch_add(1, Relaxed);
        return answer(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if !t.mark_received(endpoint, seq, Instant::now()) {
        t.malformed.fetch_add(1, Relaxed);
        return answer(StatusCode::NOT_FOUND);
    }
    let delay = match state.opts.slow {
        Some((slow, d)) if slow == endpoint => d,
        _ => state.opts.delay,
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    answer(StatusCode::OK)
}

/// A receiver that accepts connections and never answers, as a hung service does: every
/// attempt to it waits for its timeout. Its connections close when it is dropped.
pub struct HungSink {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
}

impl Drop for HungSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HungSink {
    pub async fn start() -> std::io::Result<HungSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (count, until) = (accepted.clone(), stop.clone());
        tokio::spawn(async move {
            // Held, never read: the request sits in the socket buffer unanswered.
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    _ = until.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok((stream, _)) => {
                            held.push(stream);
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                }
            }
        });
        Ok(HungSink {
            addr,
            accepted,
            stop,
        })
    }

    pub fn url(&self, endpoint: u64) -> String {
        format!("http://{}/hung/{endpoint}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_found_in_the_body() {
        assert_eq!(
            parse_seq(br#"{"event":"a","data":{"seq":4711,"pad":"xx"}}"#),
            Some(4711)
        );
        assert_eq!(parse_seq(br#"{"event":"a","data":{}}"#), None);
        assert_eq!(parse_seq(br#"{"seq":}"#), None);
    }

    #[test]
    fn tracker_counts_unique_deliveries_per_slot() {
        let t = Tracker::new(10, 3, 3);
        let now = Instant::now();
        t.mark_sent(2, now);
        assert!(t.mark_received(0, 2, now + Duration::from_millis(1)));
        assert!(t.mark_received(2, 2, now + Duration::from_millis(3)));
        assert!(t.mark_received(2, 2, now + Duration::from_millis(4)));
        assert!(!t.mark_received(3, 2, now));
        assert!(!t.mark_received(0, 10, now));
        assert_eq!(t.received.load(Relaxed), 2);
        assert_eq!(t.duplicates.load(Relaxed), 1);
        assert_eq!(t.received_by(2), 1);
        let s = t.summary(0..10);
        assert_eq!(s.deliveries, 2);
        assert_eq!(s.e2e_us.len(), 2);
        assert!(s.e2e_us.max() >= 2_900);
    }
}
