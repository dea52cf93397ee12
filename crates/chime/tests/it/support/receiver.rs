//! A programmable webhook receiver: records every request, answers from a script, and can
//! hold requests unanswered. Tests synchronise on what it received, never on sleeps.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::{Notify, watch};

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived.
    pub at: std::time::Instant,
    pub path: String,
    /// The query string, if the request had one.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every request. It answers from a script of
/// statuses (then `default_status`), and can hold requests until released.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<ReceiverInner>,
}

struct ReceiverInner {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    default_status: Mutex<u16>,
    /// Sent as `Retry-After` with 429 and 503 answers, when set.
    retry_after: Mutex<Option<String>>,
    arrived: Notify,
    /// While false, requests wait before answering.
    open: watch::Sender<bool>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a request out of `in_flight` when its answer is sent or its client goes away.
struct InFlight(Arc<ReceiverInner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let (open, _) = watch::channel(true);
        let inner = Arc::new(ReceiverInner {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default_status: Mutex::new(200),
            retry_after: Mutex::new(None),
            arrived: Notify::new(),
            open,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let state = inner.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    state.peak.fetch_max(now, Ordering::SeqCst);
                    let _counted = InFlight(state.clone());
                    let status = {
                        let mut received = state.received.lock().unwrap();
                        received.push(Received {
                            at: std::time::Instant::now(),
                            path: uri.path().to_owned(),
                            query: uri.query().map(str::to_owned),
                            headers,
                            body,
                        });
                        state
                            .script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or(*state.default_status.lock().unwrap())
                    };
                    state.arrived.notify_waiters();
                    let mut open = state.open.subscribe();
                    let _ = open.wait_for(|o| *o).await;
                    let mut headers = HeaderMap::new();
                    if matches!(status, 429 | 503)
                        && let Some(ra) = state.retry_after.lock().unwrap().clone()
                    {
                        headers.insert("retry-after", ra.parse().unwrap());
                    }
                    (
                        StatusCode::from_u16(status).unwrap(),
                        headers,
                        "receiver says hi",
                    )
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers these statuses to the next requests, in order.
    pub fn script(&self, statuses: &[u16]) {
        self.inner.script.lock().unwrap().extend(statuses);
    }

    /// `Retry-After` value sent with 429 and 503 answers.
    pub fn set_retry_after(&self, value: Option<&str>) {
        *self.inner.retry_after.lock().unwrap() = value.map(str::to_owned);
    }

    pub fn set_default(&self, status: u16) {
        *self.inner.default_status.lock().unwrap() = status;
    }

    /// Requests wait (unanswered) until `release`.
    pub fn hold(&self) {
        self.inner.open.send_replace(false);
    }

    pub fn release(&self) {
        self.inner.open.send_replace(true);
    }

    /// The most requests that were ever being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Waits until `pred` holds over the requests received so far (re-checked at each arrival).
    pub async fn wait_for(
        &self,
        deadline: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.inner.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let got = self.inner.received.lock().unwrap();
                if pred(&got) {
                    return got.clone();
                }
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                let got = self.received();
                panic!(
                    "receiver condition not met before the deadline; got {} requests",
                    got.len()
                );
            }
        }
    }

    pub async fn wait_count(&self, n: usize) -> Vec<Received> {
        self.wait_for(Duration::from_secs(20), |r| r.len() >= n)
            .await
    }
}
