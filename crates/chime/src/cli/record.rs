//! The JSON-lines format that `chime listen --record` writes and `chime replay` reads: one
//! received webhook per line, with its headers in order and its body byte for byte.
//!
//! ```json
//! {"received_at":"2026-01-02T03:04:05.678Z","method":"POST","path":"/webhook",
//!  "headers":[["content-type","application/json"],["webhook-id","evt_…"],…],
//!  "body":"{\"event\":…}","webhook_id":"evt_…","event":"order.created",
//!  "signature":{"status":"valid","scheme":"standard"},"repeat":false,"rejected":false}
//! ```
//!
//! A body that is not UTF-8 is stored as `body_base64` instead of `body`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::check::Verdict;

/// Headers that describe one hop, not the webhook: never forwarded or replayed (the HTTP
/// client sets its own).
pub const HOP_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    // The answer is only read for its status; compression would just cost time.
    "accept-encoding",
];

#[derive(Serialize)]
pub struct RecordOut<'a> {
    pub received_at: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub webhook_id: Option<&'a str>,
    pub event: Option<&'a str>,
    pub signature: &'a Verdict,
    pub repeat: bool,
    pub rejected: bool,
}

impl<'a> RecordOut<'a> {
    /// Sets `body` or `body_base64`, whichever keeps the bytes exactly.
    pub fn with_body(mut self, bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.body = Some(text),
            Err(_) => self.body_base64 = Some(STANDARD.encode(bytes)),
        }
        self
    }
}

/// A recorded webhook as `replay` reads it; unknown fields are ignored so that records from
/// newer versions still replay.
#[derive(Deserialize)]
pub struct RecordIn {
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub body_base64: Option<String>,
    pub webhook_id: Option<String>,
    pub event: Option<String>,
}

impl RecordIn {
    /// The exact body bytes.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.body, &self.body_base64) {
            (Some(text), _) => Ok(text.as_bytes().to_vec()),
            (None, Some(b64)) => STANDARD
                .decode(b64)
                .map_err(|e| format!("body_base64 is not base64: {e}")),
            (None, None) => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_exactly() {
        let verdict = Verdict::unchecked();
        let headers = vec![("webhook-id".to_owned(), "evt_1".to_owned())];
        for body in [&b"{\"a\": 1}\n"[..], &[0xff, 0x00, 0x80][..]] {
            let line = serde_json::to_string(
                &RecordOut {
                    received_at: "t",
                    method: "POST",
                    path: "/webhook",
                    headers: &headers,
                    body: None,
                    body_base64: None,
                    webhook_id: Some("evt_1"),
                    event: None,
                    signature: &verdict,
                    repeat: false,
                    rejected: false,
                }
                .with_body(body),
            )
            .unwrap();
            let back: RecordIn = serde_json::from_str(&line).unwrap();
            assert_eq!(back.body_bytes().unwrap(), body);
            assert_eq!(back.headers, headers);
        }
    }
}
