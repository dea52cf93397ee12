//! The words of the domain as validated types: ids, event names, subscription patterns,
//! endpoint URLs and timestamps. Everything arriving at the API edge is parsed into these
//! ("parse, don't validate"), so code further in can trust them.

use std::fmt;

mod branding;
mod destination;
mod ids;
mod source;
mod trace;
mod transformation;
mod transport;

pub use branding::{Branding, check_accent, check_logo_url, check_name};
pub use destination::Destination;
pub use ids::{AttemptId, DeliveryId, EndpointId, EventId, SourceId, looks_like_id, new_id};
pub use source::{Inbound, Locator, SourceVerify};
pub use trace::{TRACEPARENT, TraceParent};
pub use transformation::Transformation;
pub use transport::{EndpointAuth, TlsSettings, check_proxy_url};

/// Milliseconds since the Unix epoch: the one time unit stored and passed around.
pub type Millis = i64;

/// A duration in milliseconds (saturating: a duration past `Millis::MAX` is `Millis::MAX`).
pub fn millis_of(d: std::time::Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// The wall clock in milliseconds. One function so that every stored time comes from one place.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 text of a stored time, as the API shows it.
pub fn format_time(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The envelope `{"event": name, "data": …}` exactly as stored and sent, for published and
/// operational events alike: built once, never re-serialized later, `data`'s bytes as given.
pub fn envelope(name: &str, data: &serde_json::value::RawValue) -> bytes::Bytes {
    let name_json = serde_json::to_string(name).expect("a string serializes");
    let mut out = Vec::with_capacity(name_json.len() + data.get().len() + 20);
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(name_json.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.get().as_bytes());
    out.push(b'}');
    bytes::Bytes::from(out)
}

/// The reserved tenant that receives chime's own operational events (endpoint disabled or
/// recovered, delivery exhausted), so operators can subscribe to them like any other events.
pub const SYSTEM_TENANT: &str = "_chime";

/// Why an input was refused; the text is shown to the API user as the error detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(msg.into()))
}

/// Tenant ids: a slug chosen by the user (so it can be their own customer id) or generated.
/// Ids starting with `_` are reserved for chime itself (the `_chime` system tenant).
pub fn parse_tenant_id(s: &str) -> Result<String, Invalid> {
    if s.is_empty() || s.len() > 64 {
        return invalid("tenant id must be 1 to 64 characters");
    }
    if s.starts_with('_') {
        return invalid("tenant ids starting with '_' are reserved");
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return invalid("tenant id may contain only lower-case letters, digits, '-' and '_'");
    }
    Ok(s.to_owned())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':' | b'/')
}

/// An event name such as `order_created` or `order.created`.
pub fn parse_event_name(s: &str) -> Result<String, Invalid> {
    check_event_name(s).map(str::to_owned)
}

/// `parse_event_name` without the copy.
fn check_event_name(s: &str) -> Result<&str, Invalid> {
    if s.is_empty() {
        return invalid("event name must not be empty");
    }
    if s.len() > 128 {
        return invalid("event name must be at most 128 characters");
    }
    if !s.bytes().all(is_name_byte) {
        return invalid(format!(
            "event name {s:?} may contain only letters, digits and '_', '.', '-', ':', '/'"
        ));
    }
    Ok(s)
}

/// One subscription pattern: `*` (everything), an exact name, or a prefix ending in `*`
/// such as `order.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPattern {
    All,
    Exact(String),
    Prefix(String),
}

impl EventPattern {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s == "*" {
            return Ok(Self::All);
        }
        if s.trim_end_matches('*').contains('*') || s.ends_with("**") {
            return invalid(format!(
                "pattern {s:?}: '*' may only end a pattern (such as order.*), once"
            ));
        }
        match s.strip_suffix('*') {
            Some(prefix) => parse_event_name(prefix)
                .map(Self::Prefix)
                .map_err(|e| Invalid(format!("pattern {s:?}: {e}"))),
            None => parse_event_name(s).map(Self::Exact),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Exact(n) => n == name,
            Self::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    pub fn as_text(&self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Exact(n) => n.clone(),
            Self::Prefix(p) => format!("{p}*"),
        }
    }
}

/// What an endpoint subscribes to: any of its patterns matching is enough. Stored and shown
/// as the list of its patterns' texts; the default (a stored list that no longer parses)
/// matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription(Vec<EventPattern>);

impl serde::Serialize for Subscription {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(EventPattern::as_text))
    }
}

impl<'de> serde::Deserialize<'de> for Subscription {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        Subscription::parse(&texts).map_err(serde::de::Error::custom)
    }
}

impl Subscription {
    pub const MAX_PATTERNS: usize = 100;

    pub fn all() -> Self {
        Self(vec![EventPattern::All])
    }

    pub fn parse(patterns: &[String]) -> Result<Self, Invalid> {
        if patterns.is_empty() {
            return invalid("events must list at least one pattern (use [\"*\"] for all)");
        }
        if patterns.len() > Self::MAX_PATTERNS {
            return invalid(format!(
                "events may list at most {} patterns",
                Self::MAX_PATTERNS
            ));
        }
        patterns
            .iter()
            .map(|p| EventPattern::parse(p))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.matches(name))
    }

    pub fn to_texts(&self) -> Vec<String> {
        self.0.iter().map(EventPattern::as_text).collect()
    }
}

/// Most extra headers an endpoint (or its transformation) may add.
pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_VALUE: usize = 1024;
pub const MAX_HEADER_NAME: usize = 128;

/// Extra request headers an endpoint sends, as its settings or its transformation give
/// them: at most `MAX_HEADERS`, each a token name (kept in lower case) that chime does not
/// set itself, with a visible-ASCII value. The same rule for both, in one place.
pub fn checked_headers(
    headers: impl IntoIterator<Item = (String, String)>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for (name, value) in headers {
        if out.len() == MAX_HEADERS {
            return Err(format!("at most {MAX_HEADERS} custom headers"));
        }
        let lower = name.to_ascii_lowercase();
        if name.len() > MAX_HEADER_NAME || !is_token(&lower) {
            return Err(format!(
                "header name {:?} must be 1 to {MAX_HEADER_NAME} token characters (letters, digits and !#$%&'*+-.^_`|~)",
                truncated(&name)
            ));
        }
        if reserved_header(&lower) {
            return Err(format!(
                "header {name:?} is set by chime or by the connection and cannot be configured"
            ));
        }
        if value.len() > MAX_HEADER_VALUE || !is_visible_ascii(&value) {
            return Err(format!(
                "header {name:?}: the value must be visible ASCII (spaces and tabs allowed), at most {MAX_HEADER_VALUE} bytes"
            ));
        }
        if out.insert(lower, value).is_some() {
            return Err(format!(
                "header {name:?} is given twice (header names are case-insensitive)"
            ));
        }
    }
    Ok(out)
}

/// An RFC 9110 token, the grammar of a header name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Printable ASCII, space and tab: what a header value may hold without being read
/// differently by different HTTP stacks (no obs-text, no control bytes).
fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' '..=b'~' | b'\t'))
}

/// The start of a long name, for an error message that stays readable.
fn truncated(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Headers chime sets itself or that belong to the connection are not an endpoint's to set
/// (`name` in lower case).
pub fn reserved_header(name: &str) -> bool {
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "user-agent",
    ];
    name.starts_with("webhook-") || name.starts_with("content-") || HOP_BY_HOP.contains(&name)
}

/// An endpoint URL: absolute http(s), with a host (a name, or an address in a form the
/// resolver reads the same way, see `net_policy::classify_host`), a port in 1–65535 when one
/// is given, without credentials, at most 2 KiB.
pub fn parse_endpoint_url(s: &str) -> Result<http::Uri, Invalid> {
    parse_target_url(s, Destination::Http.url_schemes())
}

/// A URL of one of `schemes` (a broker's, for a destination that is not HTTP), by the rules
/// of `parse_endpoint_url`: credentials go in the endpoint's `auth`, never in the URL.
pub fn parse_target_url(s: &str, schemes: &[&str]) -> Result<http::Uri, Invalid> {
    if s.len() > 2048 {
        return invalid("url must be at most 2048 characters");
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|e| Invalid(format!("url is not a valid URL: {e}")))?;
    let listed = schemes.join(" or ");
    match uri.scheme_str() {
        Some(scheme) if schemes.contains(&scheme) => {}
        Some(other) => return invalid(format!("url scheme must be {listed}, not {other:?}")),
        None => return invalid(format!("url must be absolute ({listed})")),
    }
    let Some(authority) = uri.authority() else {
        return invalid("url must have a host");
    };
    if authority.as_str().contains('@') {
        return invalid("url must not contain credentials");
    }
    let host = authority.host();
    if host.is_empty() {
        return invalid("url must have a host");
    }
    crate::net_policy::classify_host(host).map_err(Invalid)?;
    // `http::Uri` keeps a port it cannot read as u16 and then reports none, so a URL with
    // `:99999` would be delivered to the scheme's default port: refuse it here.
    let port = &authority.as_str()[host.len()..];
    if let Some(port) = port.strip_prefix(':')
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return invalid(format!(
            "url port {port:?} must be a number from 1 to 65535"
        ));
    }
    Ok(uri)
}

/// The host of a URL as an IP address, when the URL names one (in any form the resolver
/// would read as an address).
pub fn ip_literal(uri: &http::Uri) -> Option<std::net::IpAddr> {
    match crate::net_policy::classify_host(uri.host()?) {
        Ok(crate::net_policy::Host::Ip(ip)) => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let sub = Subscription::parse(&["order.*".into(), "user_created".into()]).unwrap();
        assert!(sub.matches("order.created"));
        assert!(sub.matches("order.refunded"));
        assert!(sub.matches("user_created"));
        assert!(!sub.matches("user_deleted"));
        assert!(!sub.matches("orders"));
        assert!(Subscription::all().matches("anything"));
        assert!(EventPattern::parse("a*b*").is_err());
        for bad in ["order.*.v2", "*.created", "order.**"] {
            let e = EventPattern::parse(bad).unwrap_err();
            assert!(e.0.contains("'*' may only end a pattern"), "{bad}: {e}");
        }
        assert!(EventPattern::parse("").is_err());
        assert!(Subscription::parse(&[]).is_err());
    }

    #[test]
    fn tenant_ids() {
        assert!(parse_tenant_id("acme").is_ok());
        assert!(parse_tenant_id("acme-2_x").is_ok());
        assert!(parse_tenant_id("_chime").is_err());
        assert!(parse_tenant_id("Acme").is_err());
        assert!(parse_tenant_id("").is_err());
        assert!(parse_tenant_id("a b").is_err());
    }

    #[test]
    fn urls() {
        assert!(parse_endpoint_url("https://example.com/hook").is_ok());
        assert!(parse_endpoint_url("ftp://example.com/").is_err());
        assert!(parse_endpoint_url("nats://example.com/").is_err());
        assert!(parse_target_url("nats://example.com:4222", &["nats"]).is_ok());
        assert!(parse_target_url("amqp://guest:guest@example.com/", &["amqp"]).is_err());
        assert!(parse_endpoint_url("/relative").is_err());
        assert!(parse_endpoint_url("http://user:pw@example.com/").is_err());
        for bad_port in ["99999", "65536", "-1", "0", "", "+80", "8o"] {
            let url = format!("http://localhost:{bad_port}/x");
            assert!(parse_endpoint_url(&url).is_err(), "{url}");
        }
        assert!(parse_endpoint_url("http://localhost:65535/x").is_ok());
        assert!(parse_endpoint_url("http://[fe80::1%25lo]/x").is_err());
        assert_eq!(
            ip_literal(&parse_endpoint_url("http://0x7f.1/").unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
        let u = parse_endpoint_url("http://[::1]:8080/x").unwrap();
        assert_eq!(ip_literal(&u), Some("::1".parse().unwrap()));
        let u = parse_endpoint_url("http://10.1.2.3/x").unwrap();
        assert_eq!(ip_literal(&u), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            ip_literal(&parse_endpoint_url("http://example.com").unwrap()),
            None
        );
    }

    #[test]
    fn envelope_keeps_data_bytes() {
        let data: &serde_json::value::RawValue =
            serde_json::from_str(r#"{"order_id": 1234,  "amount":50}"#).unwrap();
        let env = envelope("order_created", data);
        assert_eq!(
            &env[..],
            br#"{"event":"order_created","data":{"order_id": 1234,  "amount":50}}"#
        );
    }

    #[test]
    fn ids_are_prefixed_and_ordered() {
        let a = new_id("evt");
        assert!(a.starts_with("evt_"));
        assert!(looks_like_id(&a, "evt"));
        assert!(!looks_like_id(&a, "ep"));
        assert!(!looks_like_id("order.created", "evt"));
        assert_eq!(a.len(), 4 + 26);
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }
}
