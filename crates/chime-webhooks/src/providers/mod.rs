//! Verifying webhooks from providers that predate Standard Webhooks.
//!
//! Each module has `verify` (returning the same [`VerifyError`] cases, with
//! the same body-change diagnosis) and a `sign` helper for tests. Provider secrets are used as
//! the raw bytes of the text the provider shows: unlike a Standard Webhooks `whsec_` secret,
//! Stripe's `whsec_…` is *not* base64-decoded.
//!
//! - [`github`]: `X-Hub-Signature-256: sha256=<hex HMAC(secret, body)>`
//! - [`stripe`]: `Stripe-Signature: t=<unix>,v1=<hex HMAC(secret, "{t}.{body}")>`
//! - [`shopify`]: `X-Shopify-Hmac-Sha256: <base64 HMAC(secret, body)>`

pub mod github;
pub mod shopify;
pub mod stripe;

use subtle::ConstantTimeEq;

use crate::error::VerifyError;
use crate::headers::Headers;
use crate::sign::hmac;
use hmac::Mac;

/// HMAC-SHA256 of the concatenated `parts`.
fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac(secret);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn ct_eq(expected: &[u8; 32], got: &[u8]) -> bool {
    bool::from(expected[..].ct_eq(got))
}

fn required<'h>(headers: &'h Headers, name: &'static str) -> Result<&'h str, VerifyError> {
    headers.get(name).ok_or(VerifyError::MissingHeader {
        header: name,
        also_tried: None,
    })
}

/// A 32-byte digest, or why the text is not one.
fn digest_of(
    decoded: Option<Vec<u8>>,
    header: &'static str,
    encoding: &str,
) -> Result<Vec<u8>, VerifyError> {
    let bytes = decoded.ok_or_else(|| {
        VerifyError::malformed(header, format!("the signature is not {encoding}"))
    })?;
    if bytes.len() != 32 {
        return Err(VerifyError::malformed(
            header,
            format!(
                "the signature is {} bytes; HMAC-SHA256 gives 32",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}
