//! The outbound HTTP side of a delivery: one pooled client whose resolver refuses internal
//! addresses, and `attempt`, which signs and POSTs one delivery and classifies the result.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use crate::model::{TRACEPARENT, TraceParent};
use crate::net_policy::TargetPolicy;
use crate::spans::Spans;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// A key that signs deliveries: a shared `whsec_` secret (`v1`, HMAC-SHA256) or an Ed25519
/// `whsk_` signing key (`v1a`), whose public key receivers verify with.
#[derive(Debug, Clone)]
pub enum Signer {
    Hmac(chime_webhooks::Secret),
    Ed25519(chime_webhooks::SigningKey),
}

impl Signer {
    /// Reads a stored secret; its prefix says which scheme it is.
    pub fn parse(text: &str) -> Option<Self> {
        if text.starts_with(chime_webhooks::SIGNING_KEY_PREFIX) {
            chime_webhooks::SigningKey::parse(text)
                .ok()
                .map(Self::Ed25519)
        } else {
            chime_webhooks::Secret::parse(text).ok().map(Self::Hmac)
        }
    }

    fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            Self::Hmac(secret) => chime_webhooks::sign(secret, msg_id, timestamp, body),
            Self::Ed25519(key) => chime_webhooks::sign_v1a(key, msg_id, timestamp, body),
        }
    }
}

/// Where and how to deliver for one endpoint, as the dispatcher caches it.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint_id: Arc<str>,
    pub tenant_id: Arc<str>,
    pub uri: http::Uri,
    /// The keys that sign, each with the time it stops signing (`None`: never). Several
    /// overlap while a rotated secret's grace period runs.
    pub signers: Vec<(Signer, Option<i64>)>,
    /// The endpoint's own extra headers (validated when saved).
    pub headers: http::HeaderMap,
    pub enabled: bool,
    /// Attempts in flight at once.
    pub max_in_flight: u32,
    pub rate_limit_per_s: Option<u32>,
    /// One at a time, in acceptance order (claimed from the store, never taken from publish).
    pub ordered: bool,
    /// When the endpoint became "failing" (circuit opened), for auto-disable.
    pub failing_since: Option<i64>,
}

/// The result of one HTTP try, before it is turned into a delivery state.
#[derive(Debug, Clone)]
pub struct HttpResult {
    pub started_at_ms: i64,
    pub duration: Duration,
    pub status: Option<u16>,
    /// `None` when the receiver answered 2xx.
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    pub response: Option<String>,
    /// What a 429 or 503 answer's `Retry-After` asked for.
    pub retry_after: Option<Duration>,
}

/// Stable, documented reasons of a failed attempt (shown in the API as `error_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No complete answer within the request timeout.
    Timeout,
    /// TCP connection failed (refused, unreachable, reset while connecting).
    Connect,
    /// The host name did not resolve.
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// The target resolved to an address closed by the target policy.
    RefusedTarget,
    /// The receiver answered with a non-2xx status (redirects included: never followed).
    Status,
    /// The connection broke or the receiver spoke malformed HTTP.
    Protocol,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::RefusedTarget => "refused_target",
            Self::Status => "status",
            Self::Protocol => "protocol",
        }
    }
}

/// Why the resolver refused a name; found again in the error chain to classify the attempt.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("{0} resolves only to addresses closed to delivery")]
    Refused(String),
    #[error("could not resolve {0}: {1}")]
    Lookup(String, std::io::Error),
}

/// A DNS resolver that drops addresses the policy closes, so a name cannot be used to reach
/// an internal address and there is no window between check and connect.
#[derive(Clone)]
struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveError::Lookup(host.clone(), e))?
                .collect();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(ResolveError::Refused(host));
            }
            Ok(allowed.into_iter())
        })
    }
}

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The shared delivery client: keep-alive connections pooled per endpoint host.
#[derive(Clone)]
pub struct DeliveryClient {
    client: Client<HttpsConnector, Full<Bytes>>,
    policy: Arc<TargetPolicy>,
    timeout: Duration,
    capture: usize,
    user_agent: http::HeaderValue,
    /// The `attempt` spans (export off by default).
    spans: Spans,
}

/// Bytes of a response read in all; past that the connection is dropped rather than drained.
const DRAIN_LIMIT: usize = 64 * 1024;

// Built once: a header name given as text is parsed, and a non-standard one allocated, on
// every request.
const WEBHOOK_ID: http::HeaderName = http::HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: http::HeaderName = http::HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: http::HeaderName = http::HeaderName::from_static("webhook-signature");
const APPLICATION_JSON: http::HeaderValue = http::HeaderValue::from_static("application/json");

impl DeliveryClient {
    /// `timeout` bounds a whole attempt; `connect_timeout` (at most `timeout`) its connect.
    pub fn new(
        policy: TargetPolicy,
        timeout: Duration,
        connect_timeout: Duration,
        capture: usize,
    ) -> Self {
        let policy = Arc::new(policy);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout.min(timeout)));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring provider supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(tls);
        Self {
            client,
            policy,
            timeout,
            capture,
            user_agent: http::HeaderValue::from_static(concat!(
                "chime/",
                env!("CARGO_PKG_VERSION")
            )),
            spans: Spans::default(),
        }
    }

    /// Exports a span per attempt through `spans` (and sends its context as `traceparent`).
    pub fn with_spans(self, spans: Spans) -> Self {
        Self { spans, ..self }
    }

    pub fn spans(&self) -> &Spans {
        &self.spans
    }

    /// One attempt (`send`) in its `attempt` span, a child of the event's `traceparent`.
    /// The receiver gets the span's context, or without export the event's `traceparent` as
    /// it was stored, or none.
    pub async fn attempt(
        &self,
        target: &Target,
        msg_id: &str,
        body: Bytes,
        traceparent: Option<&TraceParent>,
    ) -> HttpResult {
        let mut span = self
            .spans
            .start("attempt", SpanKind::Client, traceparent, || {
                vec![
                    KeyValue::new("chime.tenant", target.tenant_id.to_string()),
                    KeyValue::new("chime.endpoint", target.endpoint_id.to_string()),
                    KeyValue::new("chime.event.id", msg_id.to_owned()),
                ]
            });
        let own = span.traceparent();
        let result = self
            .send(target, msg_id, body, own.as_ref().or(traceparent))
            .await;
        if let Some(status) = result.status {
            span.set(|| KeyValue::new("http.response.status_code", i64::from(status)));
        }
        if let Some(kind) = result.error_kind {
            span.set(|| KeyValue::new("chime.error_kind", kind.as_str()));
            span.fail(kind.as_str());
        }
        result
    }

    /// Signs and POSTs one delivery, with `traceparent` if there is one (it replaces an
    /// endpoint's own header of that name). Never fails: every problem becomes an
    /// `HttpResult`.
    async fn send(
        &self,
        target: &Target,
        msg_id: &str,
        body: Bytes,
        traceparent: Option<&TraceParent>,
    ) -> HttpResult {
        let started_at_ms = crate::model::now_millis();
        let started = Instant::now();
        let finish =
            |status, kind: Option<ErrorKind>, error: Option<String>, response| HttpResult {
                started_at_ms,
                duration: started.elapsed(),
                status,
                error_kind: kind,
                error,
                response,
                retry_after: None,
            };

        if let Err(refusal) = self
            .policy
            .check_host(target.uri.host().unwrap_or_default())
        {
            return finish(
                None,
                Some(ErrorKind::RefusedTarget),
                Some(refusal.to_string()),
                None,
            );
        }

        let timestamp = started_at_ms / 1000;
        let signing = target
            .signers
            .iter()
            .filter(|(_, until)| until.is_none_or(|u| u > started_at_ms))
            .map(|(s, _)| s);
        let signature = signature_header(signing, msg_id, timestamp, &body);
        let mut request = http::Request::post(target.uri.clone());
        if let Some(headers) = request.headers_mut() {
            headers.extend(target.headers.clone());
            if let Some(tp) = traceparent {
                // A clone of the stored header value: a reference count, no allocation.
                headers.insert(TRACEPARENT, tp.header_value().clone());
            }
        }
        let request = request
            .header(http::header::CONTENT_TYPE, APPLICATION_JSON)
            .header(http::header::USER_AGENT, self.user_agent.clone())
            .header(WEBHOOK_ID, msg_id)
            .header(WEBHOOK_TIMESTAMP, timestamp)
            .header(WEBHOOK_SIGNATURE, signature)
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => return finish(None, Some(ErrorKind::Protocol), Some(e.to_string()), None),
        };

        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| response.headers().get(http::header::RETRY_AFTER))
                .flatten()
                .and_then(|v| parse_retry_after(v.to_str().ok()?, std::time::SystemTime::now()));
            let captured = read_capped(response.into_body(), self.capture).await;
            Ok::<_, hyper_util::client::legacy::Error>((status, captured, retry_after))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => finish(
                None,
                Some(ErrorKind::Timeout),
                Some(format!("no complete answer within {:?}", self.timeout)),
                None,
            ),
            Ok(Err(e)) => {
                let (kind, text) = classify(&e);
                finish(None, Some(kind), Some(text), None)
            }
            Ok(Ok((status, captured, retry_after))) => {
                let kind = (!status.is_success()).then_some(ErrorKind::Status);
                let error = kind.map(|_| format!("the receiver answered {status}"));
                HttpResult {
                    retry_after,
                    ..finish(Some(status.as_u16()), kind, error, Some(captured))
                }
            }
        }
    }
}

/// One `v1,…` or `v1a,…` value per signing key, space separated, as the spec asks.
pub fn signature_header<'a>(
    signers: impl Iterator<Item = &'a Signer>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut out = String::with_capacity(96);
    for (i, signer) in signers.enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&signer.sign(msg_id, timestamp, body));
    }
    out
}

/// `Retry-After` as delay seconds or an HTTP date (RFC 9110 §10.2.3). A date in the past
/// means "now"; garbage means no hint.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads the first `capture` bytes of a body as text, then drains up to `DRAIN_LIMIT` so the
/// connection can be reused; a longer body is abandoned (and its connection closed).
async fn read_capped(mut body: hyper::body::Incoming, capture: usize) -> String {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while seen <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    seen += data.len();
                    if kept.len() < capture {
                        let take = (capture - kept.len()).min(data.len());
                        kept.extend_from_slice(&data[..take]);
                    }
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn classify(e: &hyper_util::client::legacy::Error) -> (ErrorKind, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = e.to_string();
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<ResolveError>() {
            let kind = match r {
                ResolveError::Refused(_) => ErrorKind::RefusedTarget,
                ResolveError::Lookup(..) => ErrorKind::Dns,
            };
            return (kind, r.to_string());
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return (ErrorKind::Tls, format!("TLS: {tls}"));
        }
        // rustls reports through io::Error, whose `source()` skips the wrapped error itself.
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return (ErrorKind::Tls, format!("TLS: {tls}"));
        }
        if err.source().is_none() {
            text = format!("{e}: {err}");
        }
        source = err.source();
    }
    if e.is_connect() {
        (ErrorKind::Connect, text)
    } else {
        (ErrorKind::Protocol, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn signature_header_lists_every_signer() {
        let a = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let key = chime_webhooks::SigningKey::generate();
        let b = Signer::parse(&key.to_whsk()).unwrap();
        let h = signature_header(
            [&a, &b].into_iter(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let parts: Vec<_> = h.split(' ').collect();
        assert_eq!(parts[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(parts[1].starts_with("v1a,"));
    }
}
