//! The outbound HTTP side of a delivery: pooled clients whose resolver refuses internal
//! addresses (one for plain endpoints, one per distinct TLS and proxy setting), and
//! `attempt`, which signs and POSTs one delivery, authenticates it, and classifies the result.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::dns::Name;

use super::broker::{BrokerTarget, Brokers, Message};
use super::clients::{AnyClient, Clients};
use super::oauth::{self, OAuthConfig, TokenTransport, Tokens};
use super::proxy::NoProxy;
use crate::model::{Inbound, TRACEPARENT, TlsSettings, TraceParent};
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
    /// TLS beyond the system's roots (`None`: the system's, no client certificate).
    pub tls: Option<Arc<TlsSettings>>,
    /// The endpoint's own egress proxy (`None`: the server's, if it has one).
    pub proxy: Option<http::Uri>,
    /// OAuth2 client credentials (HTTP basic is a fixed header, in `headers`).
    pub oauth: Option<Arc<OAuthConfig>>,
    /// A broker to publish to instead of POSTing to `uri` (`None`: HTTP).
    pub broker: Option<Arc<BrokerTarget>>,
    /// The endpoint's transformation, when it has one that is on.
    pub transformation: Option<Arc<super::transformed::Spec>>,
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
    /// No credentials to send: the OAuth2 token endpoint refused or failed.
    Auth,
    /// The connection broke or the receiver spoke malformed HTTP.
    Protocol,
    /// A broker refused the message or did not acknowledge it (no stream or queue takes
    /// it, a nack, an error answer).
    Rejected,
    /// The endpoint's transformation failed (a limit, an exception, a result that cannot
    /// be sent): nothing was sent.
    Transformation,
    /// The endpoint's transformation cancelled the delivery: nothing was sent, and the
    /// delivery is skipped.
    Cancelled,
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
            Self::Auth => "auth",
            Self::Protocol => "protocol",
            Self::Rejected => "rejected",
            Self::Transformation => "transformation",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why the resolver refused a name; found again in the error chain to classify the attempt.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResolveError {
    #[error("{0} resolves only to addresses closed to delivery")]
    Refused(String),
    #[error("could not resolve {0}: {1}")]
    Lookup(String, std::io::Error),
}

/// A DNS resolver that drops addresses the policy closes, so a name cannot be used to reach
/// an internal address and there is no window between check and connect.
#[derive(Clone)]
pub(super) struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl GuardedResolver {
    /// The addresses of `host` (a name or an IP literal, bracketed or not) the policy
    /// permits, IPv4 first: where a proxy is asked to connect.
    pub(super) async fn allowed(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut allowed: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| ResolveError::Lookup(host.to_owned(), e))?
            .filter(|a| self.policy.permits(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(ResolveError::Refused(host.to_owned()));
        }
        allowed.sort_by_key(|a| a.is_ipv6());
        Ok(allowed)
    }
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

/// The delivery client: pooled clients per TLS and proxy setting, the OAuth2 tokens, and
/// how an attempt is bounded and captured.
#[derive(Clone)]
pub struct DeliveryClient {
    clients: Arc<Clients>,
    brokers: Arc<Brokers>,
    tokens: Arc<Tokens>,
    policy: Arc<TargetPolicy>,
    timeout: Duration,
    capture: usize,
    user_agent: http::HeaderValue,
    /// The `attempt` spans (export off by default).
    spans: Spans,
    /// Where endpoints' transformations run (a pool of threads of its own).
    transforms: crate::transform::Engine,
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
    /// `timeout` bounds a whole attempt; `connect_timeout` (at most `timeout`) its connect;
    /// endpoints' transformations run on `transforms` (shared with the API, which tests and
    /// checks them).
    pub fn new(
        policy: TargetPolicy,
        timeout: Duration,
        connect_timeout: Duration,
        capture: usize,
        transforms: crate::transform::Engine,
    ) -> Self {
        let policy = Arc::new(policy);
        let resolver = GuardedResolver {
            policy: policy.clone(),
        };
        let connect_timeout = connect_timeout.min(timeout);
        Self {
            brokers: Arc::new(Brokers::new(resolver.clone(), connect_timeout)),
            clients: Arc::new(Clients::new(
                resolver,
                connect_timeout,
                None,
                NoProxy::default(),
            )),
            tokens: Arc::default(),
            policy,
            timeout,
            capture,
            user_agent: http::HeaderValue::from_static(concat!(
                "chime/",
                env!("CARGO_PKG_VERSION")
            )),
            spans: Spans::default(),
            transforms,
        }
    }

    pub fn transforms(&self) -> &crate::transform::Engine {
        &self.transforms
    }

    /// Every delivery leaves through `proxy` (`egress_proxy`) unless its host is listed in
    /// `no_proxy` or its endpoint has a proxy of its own.
    pub fn with_egress_proxy(self, proxy: Option<http::Uri>, no_proxy: NoProxy) -> Self {
        let resolver = self.clients.resolver().clone();
        let connect_timeout = self.clients.connect_timeout();
        Self {
            clients: Arc::new(Clients::new(resolver, connect_timeout, proxy, no_proxy)),
            ..self
        }
    }

    /// Drops what is cached for an endpoint (its OAuth2 token) when it changes.
    pub fn forget(&self, endpoint_id: &str) {
        self.tokens.forget(endpoint_id);
    }

    /// Exports a span per attempt through `spans` (and sends its context as `traceparent`).
    pub fn with_spans(self, spans: Spans) -> Self {
        Self { spans, ..self }
    }

    pub fn spans(&self) -> &Spans {
        &self.spans
    }

    /// One attempt (`send`) of delivery `delivery_id` of event `msg_id`, in its `attempt`
    /// span, a child of the event's `traceparent`.
    /// The receiver gets the span's context, or without export the event's `traceparent` as
    /// it was stored, or none.
    pub async fn attempt(
        &self,
        target: &Target,
        msg_id: &str,
        delivery_id: &str,
        body: Bytes,
        traceparent: Option<&TraceParent>,
        inbound: Option<&Inbound>,
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
            .send(
                target,
                msg_id,
                delivery_id,
                body,
                own.as_ref().or(traceparent),
                inbound,
            )
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
        delivery_id: &str,
        body: Bytes,
        traceparent: Option<&TraceParent>,
        inbound: Option<&Inbound>,
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

        if let Some(broker) = &target.broker {
            let timestamp = started_at_ms / 1000;
            let signature =
                signature_header(signing(target, started_at_ms), msg_id, timestamp, &body);
            let content_type = inbound.map_or("application/json", |i| i.content_type.as_str());
            let headers = broker_headers(
                target,
                [
                    ("webhook-id", msg_id),
                    ("webhook-timestamp", &timestamp.to_string()),
                    ("webhook-signature", &signature),
                    ("content-type", content_type),
                ],
                traceparent,
                inbound,
            );
            let msg = Message {
                body: &body,
                headers: &headers,
                id: msg_id,
                delivery_id,
                content_type,
            };
            return match tokio::time::timeout(
                self.timeout,
                self.brokers.publish(&target.tenant_id, broker, &msg),
            )
            .await
            {
                Err(_) => finish(
                    None,
                    Some(ErrorKind::Timeout),
                    Some(format!("no acknowledgement within {:?}", self.timeout)),
                    None,
                ),
                Ok(Err(e)) => finish(None, Some(e.kind), Some(e.text), None),
                Ok(Ok(())) => finish(None, None, None, None),
            };
        }

        let proxy = self
            .clients
            .proxy_for(target.proxy.as_ref(), target.uri.host().unwrap_or_default());
        let client = match self.clients.client(target.tls.as_ref(), proxy.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                let text = format!("TLS settings: {e}");
                return finish(None, Some(ErrorKind::Tls), Some(text), None);
            }
        };
        let via_proxy = proxy.is_some();
        // Through a proxy an http target is named in the request line: name it by the address
        // chime checked, so the proxy resolves nothing itself.
        let pinned = match pin_if_proxied(&target.uri, via_proxy, self.clients.resolver()).await {
            Ok(pinned) => pinned,
            Err(e) => {
                let kind = resolve_kind(&e);
                return finish(None, Some(kind), Some(e.to_string()), None);
            }
        };
        let (uri, host) = match &pinned {
            Some((uri, host)) => (uri, Some(host)),
            None => (&target.uri, None),
        };

        let timestamp = started_at_ms / 1000;
        let signing = signing(target, started_at_ms);
        // A header value once (the text's bytes, not a copy), cloned by reference count if a
        // refused OAuth2 token makes the request go twice.
        let signature = match http::HeaderValue::try_from(signature_header(
            signing, msg_id, timestamp, &body,
        )) {
            Ok(v) => v,
            Err(e) => return finish(None, Some(ErrorKind::Protocol), Some(e.to_string()), None),
        };
        let build = |authorization: Option<&http::HeaderValue>| {
            let mut request = http::Request::post(uri.clone());
            if let Some(headers) = request.headers_mut() {
                headers.extend(target.headers.clone());
                if let Some(tp) = traceparent {
                    // A clone of the stored header value: a reference count, no allocation.
                    headers.insert(TRACEPARENT, tp.header_value().clone());
                }
                if let Some(h) = host {
                    headers.insert(http::header::HOST, h.clone());
                }
                if let Some(a) = authorization {
                    headers.insert(http::header::AUTHORIZATION, a.clone());
                }
                // A source event goes as it came: its content type, and the provider's
                // identifying headers under their own names.
                if let Some(i) = inbound {
                    for (name, value) in &i.headers {
                        if let (Ok(n), Ok(v)) = (
                            http::HeaderName::from_bytes(name.as_bytes()),
                            http::HeaderValue::from_str(value),
                        ) {
                            headers.insert(n, v);
                        }
                    }
                }
            }
            let content_type = inbound
                .and_then(|i| http::HeaderValue::from_str(&i.content_type).ok())
                .unwrap_or(APPLICATION_JSON);
            request
                .header(http::header::CONTENT_TYPE, content_type)
                .header(http::header::USER_AGENT, self.user_agent.clone())
                .header(WEBHOOK_ID, msg_id)
                .header(WEBHOOK_TIMESTAMP, timestamp)
                .header(WEBHOOK_SIGNATURE, signature.clone())
                .body(Full::new(body.clone()))
                .map_err(Failure::Build)
        };

        let exchange = async {
            let tokens = TokenVia {
                client: &client,
                resolver: self.clients.resolver(),
                via_proxy,
                user_agent: &self.user_agent,
            };
            let mut bearer = None;
            if let Some(cfg) = &target.oauth {
                let b = self
                    .tokens
                    .bearer(&target.endpoint_id, cfg, None, &tokens)
                    .await
                    .map_err(Failure::Auth)?;
                bearer = Some(b);
            }
            let mut response = client.request(build(bearer.as_ref())?).await?;
            // A refused token is fetched again, once per attempt.
            if response.status() == http::StatusCode::UNAUTHORIZED
                && let Some(cfg) = &target.oauth
            {
                let fresh = self
                    .tokens
                    .bearer(&target.endpoint_id, cfg, bearer.as_ref(), &tokens)
                    .await
                    .map_err(Failure::Auth)?;
                response = client.request(build(Some(&fresh))?).await?;
            }
            let status = response.status();
            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| response.headers().get(http::header::RETRY_AFTER))
                .flatten()
                .and_then(|v| parse_retry_after(v.to_str().ok()?, std::time::SystemTime::now()));
            let captured = read_capped(response.into_body(), self.capture).await;
            Ok::<_, Failure>((status, captured, retry_after))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => finish(
                None,
                Some(ErrorKind::Timeout),
                Some(format!("no complete answer within {:?}", self.timeout)),
                None,
            ),
            Ok(Err(Failure::Http(e))) => {
                let (kind, text) = classify(&e);
                finish(None, Some(kind), Some(text), None)
            }
            Ok(Err(Failure::Auth(text))) => finish(
                None,
                Some(ErrorKind::Auth),
                Some(format!("OAuth2: {text}")),
                None,
            ),
            Ok(Err(Failure::Build(e))) => {
                finish(None, Some(ErrorKind::Protocol), Some(e.to_string()), None)
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

/// The keys that sign at `at_ms`: the current one, and a rotated one in its grace period.
fn signing(target: &Target, at_ms: i64) -> impl Iterator<Item = &Signer> {
    target
        .signers
        .iter()
        .filter(move |(_, until)| until.is_none_or(|u| u > at_ms))
        .map(|(s, _)| s)
}

/// The headers a broker message carries, as an HTTP delivery would: the endpoint's own,
/// `traceparent`, a source's passed headers, then chime's (`webhook-*`, `content-type`),
/// each name once, the later winning.
fn broker_headers(
    target: &Target,
    chime: [(&str, &str); 4],
    traceparent: Option<&TraceParent>,
    inbound: Option<&Inbound>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: &str, value: &str| {
        let name = name.to_ascii_lowercase();
        out.retain(|(n, _)| *n != name);
        out.push((name, value.to_owned()));
    };
    for (name, value) in &target.headers {
        if let Ok(v) = value.to_str() {
            put(name.as_str(), v);
        }
    }
    if let Some(tp) = traceparent
        && let Ok(v) = tp.header_value().to_str()
    {
        put(TRACEPARENT.as_str(), v);
    }
    for (name, value) in inbound.map(|i| &i.headers[..]).unwrap_or_default() {
        put(name, value);
    }
    for (name, value) in chime {
        put(name, value);
    }
    out
}

/// Why an exchange produced no answer.
enum Failure {
    Http(hyper_util::client::legacy::Error),
    /// No token to send.
    Auth(String),
    Build(http::Error),
}

impl From<hyper_util::client::legacy::Error> for Failure {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        Self::Http(e)
    }
}

pub(super) fn resolve_kind(e: &ResolveError) -> ErrorKind {
    match e {
        ResolveError::Refused(_) => ErrorKind::RefusedTarget,
        ResolveError::Lookup(..) => ErrorKind::Dns,
    }
}

/// For an http target sent through a proxy: the URI with the checked address in place of the
/// host, and the `Host` header that names it. `None`: send to the URI as it is.
async fn pin_if_proxied(
    uri: &http::Uri,
    via_proxy: bool,
    resolver: &GuardedResolver,
) -> Result<Option<(http::Uri, http::HeaderValue)>, ResolveError> {
    if !via_proxy || uri.scheme_str() == Some("https") {
        return Ok(None);
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let addr = resolver.allowed(uri.host().unwrap_or_default()).await?[0];
    let addr = SocketAddr::new(addr.ip(), uri.port_u16().unwrap_or(80));
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let pinned = format!("http://{addr}{path}")
        .parse()
        .map_err(|_| ResolveError::Refused(authority.to_owned()))?;
    let host = http::HeaderValue::from_str(authority)
        .map_err(|_| ResolveError::Refused(authority.to_owned()))?;
    Ok(Some((pinned, host)))
}

/// OAuth2 token requests, sent the way the endpoint's deliveries go (its TLS trust, its
/// proxy, the same address guard).
struct TokenVia<'a> {
    client: &'a AnyClient,
    resolver: &'a GuardedResolver,
    via_proxy: bool,
    user_agent: &'a http::HeaderValue,
}

impl TokenTransport for TokenVia<'_> {
    async fn post_form(
        &self,
        url: &http::Uri,
        authorization: http::HeaderValue,
        body: String,
    ) -> Result<(u16, Bytes), String> {
        let (uri, host) = match pin_if_proxied(url, self.via_proxy, self.resolver)
            .await
            .map_err(|e| format!("token URL: {e}"))?
        {
            Some((uri, host)) => (uri, Some(host)),
            None => (url.clone(), None),
        };
        let mut request = http::Request::post(uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, self.user_agent.clone())
            .header(http::header::AUTHORIZATION, authorization);
        if let Some(h) = host {
            request = request.header(http::header::HOST, h);
        }
        let request = request
            .body(oauth::form_body(body))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("token request: {}", classify(&e).1))?;
        let status = response.status().as_u16();
        let body = oauth::read_answer(response.into_body()).await?;
        Ok((status, body))
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

/// The rustls error in `err`, looking through io::Errors wrapped in io::Errors (as the TLS
/// connector reports a handshake failure): their `source()` skips the wrapped error itself.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut at = err;
    loop {
        if let Some(tls) = at.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = at
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            at = inner;
        } else {
            return at.source().and_then(rustls_error);
        }
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> (ErrorKind, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = e.to_string();
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<ResolveError>() {
            return (resolve_kind(r), r.to_string());
        }
        if let Some(p) = err.downcast_ref::<super::proxy::ProxyError>() {
            return (ErrorKind::Connect, p.to_string());
        }
        if let Some(tls) = rustls_error(err) {
            return (ErrorKind::Tls, super::tls::explain(tls));
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
