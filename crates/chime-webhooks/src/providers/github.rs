//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! GitHub signs neither a timestamp nor the delivery id, so nothing here stops a replay; use
//! the `X-GitHub-Delivery` id to de-duplicate.

use crate::error::VerifyError;
use crate::headers::Headers;
use crate::verify::{mismatch, preview};

use super::{ct_eq, digest_of, hmac_sha256, required};

/// The signature header GitHub sends.
pub const HEADER: &str = "X-Hub-Signature-256";

/// The `sha256=<hex>` header value GitHub would send for `body`.
///
/// ```
/// use chime_webhooks::providers::github;
/// let sig = github::sign("It's a Secret to Everybody", b"Hello, World!");
/// assert_eq!(sig, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
/// ```
pub fn sign(secret: impl AsRef<[u8]>, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_ref(), &[body]))
    )
}

/// Verifies a GitHub webhook: `secret` is the text configured in GitHub, `body` the raw bytes.
///
/// ```
/// use chime_webhooks::{Headers, VerifyError, providers::github};
/// let body = br#"{"zen":"Keep it logically awesome."}"#;
/// let headers = Headers::new().with(github::HEADER, github::sign("s3cret", body));
/// assert!(github::verify("s3cret", &headers, body).is_ok());
/// assert!(matches!(
///     github::verify("wrong", &headers, body),
///     Err(VerifyError::NoMatchingSignature { .. })
/// ));
/// ```
pub fn verify(secret: impl AsRef<[u8]>, headers: &Headers, body: &[u8]) -> Result<(), VerifyError> {
    let secret = secret.as_ref();
    let value = required(headers, HEADER)?;
    let hex_digest = value.strip_prefix("sha256=").ok_or_else(|| {
        VerifyError::malformed(
            HEADER,
            format!("{} does not start with sha256=", preview(value)),
        )
    })?;
    let got = digest_of(hex::decode(hex_digest).ok(), HEADER, "hex")?;
    let matches = |body: &[u8]| ct_eq(&hmac_sha256(secret, &[body]), &got);
    if matches(body) {
        Ok(())
    } else {
        Err(mismatch(body, 1, 1, matches))
    }
}
