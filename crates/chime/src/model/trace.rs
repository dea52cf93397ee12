//! W3C Trace Context (`traceparent`): the trace a publish request belongs to, kept with its
//! event and sent on each delivery so receivers continue the trace.
//!
//! Only version `00` is understood, the one the Trace Context recommendation defines. A
//! header that does not parse is ignored, as its processing model asks (a bad header never
//! refuses a request).

use http::HeaderValue;

/// The header's name, on publish requests and on deliveries.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// A valid `traceparent`: `00-<trace id: 32 lowercase hex>-<parent id: 16 lowercase hex>-<flags:
/// 2 lowercase hex>`, neither id all zeros. Held as the header value it is sent as, so a
/// delivery clones a reference count, never the text.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceParent(HeaderValue);

impl TraceParent {
    /// The header's value when it is a valid version-00 `traceparent`; `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let zeros = |s: &[u8]| s.iter().all(|c| *c == b'0');
        let ok = b.len() == 55
            && &b[..3] == b"00-"
            && b[35] == b'-'
            && b[52] == b'-'
            && hex(&b[3..35])
            && !zeros(&b[3..35])
            && hex(&b[36..52])
            && !zeros(&b[36..52])
            && hex(&b[53..]);
        ok.then(|| Self(HeaderValue::from_str(text).expect("hex and dashes are a header value")))
    }

    /// The value of a request's `traceparent` header, if it has one that parses.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        Self::parse(headers.get(TRACEPARENT)?.to_str().ok()?)
    }

    /// A stored value (written by `parse`, so it parses; anything else is dropped).
    pub fn from_stored(text: Option<String>) -> Option<Self> {
        text.as_deref().and_then(Self::parse)
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("parsed as ASCII")
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        &self.as_str()[3..35]
    }

    /// The 16 hex digits of the parent (span) id.
    pub fn parent_id(&self) -> &str {
        &self.as_str()[36..52]
    }

    /// The value as the delivery client sends it.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.as_str(), VALID);
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
        assert_eq!(tp.header_value(), VALID);
        assert_eq!(TraceParent::from_stored(Some(VALID.into())), Some(tp));
    }

    #[test]
    fn refuses_what_the_recommendation_refuses() {
        for bad in [
            "",
            // upper-case hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero trace id, all-zero parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // other versions, short and long fields, wrong separators, trailing data
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        assert_eq!(TraceParent::from_stored(None), None);
        assert_eq!(TraceParent::from_stored(Some("x".into())), None);
    }

    #[test]
    fn reads_the_request_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(TraceParent::from_headers(&h), None);
        h.insert(TRACEPARENT, HeaderValue::from_static("junk"));
        assert_eq!(TraceParent::from_headers(&h), None);
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(TraceParent::from_headers(&h).unwrap().as_str(), VALID);
    }
}
