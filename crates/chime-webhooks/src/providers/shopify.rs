//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`.
//!
//! Like GitHub, Shopify signs no timestamp; de-duplicate on `X-Shopify-Webhook-Id`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::VerifyError;
use crate::headers::Headers;
use crate::secret::decode_base64_lenient;
use crate::verify::mismatch;

use super::{ct_eq, digest_of, hmac_sha256, required};

/// The signature header Shopify sends.
pub const HEADER: &str = "X-Shopify-Hmac-Sha256";

/// The base64 header value Shopify would send for `body`.
pub fn sign(secret: impl AsRef<[u8]>, body: &[u8]) -> String {
    STANDARD.encode(hmac_sha256(secret.as_ref(), &[body]))
}

/// Verifies a Shopify webhook: `secret` is the app's client secret, `body` the raw bytes.
///
/// ```
/// use chime_webhooks::{Headers, providers::shopify};
/// let body = br#"{"id":820982911946154508}"#;
/// let headers = Headers::new().with(shopify::HEADER, shopify::sign("hush", body));
/// assert!(shopify::verify("hush", &headers, body).is_ok());
/// assert!(shopify::verify("hush", &headers, b"{}").is_err());
/// ```
pub fn verify(secret: impl AsRef<[u8]>, headers: &Headers, body: &[u8]) -> Result<(), VerifyError> {
    let secret = secret.as_ref();
    let value = required(headers, HEADER)?;
    let got = digest_of(decode_base64_lenient(value), HEADER, "base64")?;
    let matches = |body: &[u8]| ct_eq(&hmac_sha256(secret, &[body]), &got);
    if matches(body) {
        Ok(())
    } else {
        Err(mismatch(body, 1, 1, matches))
    }
}
