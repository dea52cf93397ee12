//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>[,v1=…]`.
//!
//! Several `v1` entries appear while a secret is being rolled; any one matching is enough.
//! Other schemes (`v0`, test-mode extras) are ignored, as Stripe's own libraries do.

use std::time::Duration;

use crate::error::VerifyError;
use crate::headers::Headers;
use crate::verify::{
    DEFAULT_TOLERANCE, check_timestamp, mismatch, now_unix, parse_timestamp, preview,
};

use super::{ct_eq, hmac_sha256, required};

/// The signature header Stripe sends.
pub const HEADER: &str = "Stripe-Signature";

/// The header value Stripe would send for `body` at `timestamp`.
///
/// `secret` is the endpoint's `whsec_…` text used as is: Stripe does not base64-decode it.
pub fn sign(secret: impl AsRef<[u8]>, timestamp: i64, body: &[u8]) -> String {
    let prefix = format!("{timestamp}.");
    let mac = hmac_sha256(secret.as_ref(), &[prefix.as_bytes(), body]);
    format!("t={timestamp},v1={}", hex::encode(mac))
}

/// Verifies a Stripe webhook with the system clock and a 300 s tolerance; returns the signed
/// timestamp.
///
/// ```
/// use chime_webhooks::{Headers, providers::stripe};
/// let secret = "whsec_test_secret";
/// let body = br#"{"id":"evt_1","object":"event"}"#;
/// let now = std::time::SystemTime::now()
///     .duration_since(std::time::UNIX_EPOCH)
///     .unwrap()
///     .as_secs() as i64;
/// let headers = Headers::new().with(stripe::HEADER, stripe::sign(secret, now, body));
/// assert_eq!(stripe::verify(secret, &headers, body).unwrap(), now);
/// ```
pub fn verify(
    secret: impl AsRef<[u8]>,
    headers: &Headers,
    body: &[u8],
) -> Result<i64, VerifyError> {
    verify_at(secret, headers, body, DEFAULT_TOLERANCE, now_unix())
}

/// [`verify`] with the tolerance and `now` (unix seconds) given.
pub fn verify_at(
    secret: impl AsRef<[u8]>,
    headers: &Headers,
    body: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<i64, VerifyError> {
    let secret = secret.as_ref();
    let value = required(headers, HEADER)?;

    let mut timestamp_text = None;
    let mut signatures: Vec<Option<Vec<u8>>> = Vec::new();
    let mut other_schemes: Vec<&str> = Vec::new();
    for item in value.split(',') {
        let Some((key, val)) = item.split_once('=') else {
            return Err(VerifyError::malformed(
                HEADER,
                format!("{} is not a key=value item", preview(item.trim())),
            ));
        };
        match key.trim() {
            // Stripe sends one t. Should a second appear, the first decides: a signature only
            // matches the timestamp it was made over, so the choice cannot let a forgery through.
            "t" => {
                timestamp_text.get_or_insert(val.trim());
            }
            // Undecodable hex never matches, like any other wrong signature.
            "v1" => signatures.push(hex::decode(val.trim()).ok()),
            other => other_schemes.push(other),
        }
    }
    let timestamp_text = timestamp_text
        .ok_or_else(|| VerifyError::malformed(HEADER, "there is no t=<timestamp> item"))?;
    let timestamp = parse_timestamp(HEADER, timestamp_text)?;
    check_timestamp(timestamp, now, tolerance)?;
    if signatures.is_empty() {
        return Err(if other_schemes.is_empty() {
            VerifyError::malformed(HEADER, "there is no v1=<hex> item")
        } else {
            VerifyError::NoUsableSignature {
                header: HEADER,
                found: other_schemes
                    .iter()
                    .map(|s| preview(s))
                    .collect::<Vec<_>>()
                    .join(", "),
                checks: "v1 (HMAC-SHA256)".to_owned(),
            }
        });
    }

    let prefix = format!("{timestamp}.");
    let matches = |body: &[u8]| {
        let expected = hmac_sha256(secret, &[prefix.as_bytes(), body]);
        signatures
            .iter()
            .any(|sig| sig.as_deref().is_some_and(|got| ct_eq(&expected, got)))
    };
    if matches(body) {
        Ok(timestamp)
    } else {
        Err(mismatch(body, signatures.len(), 1, matches))
    }
}
