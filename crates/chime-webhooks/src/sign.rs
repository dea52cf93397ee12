//! Producing `v1` (HMAC-SHA256) signatures: the sender's half of the Standard Webhooks scheme.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 instance keyed with `key`.
pub(crate) fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC hashes over-long keys and pads short ones, so no key length is an error.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

/// The `"{id}.{timestamp}."` that precedes the body in the signed content.
pub(crate) fn content_prefix(msg_id: &str, timestamp: i64) -> String {
    format!("{msg_id}.{timestamp}.")
}

/// The raw `v1` MAC over `prefix` followed by `body`.
pub(crate) fn v1_mac(key: &[u8], prefix: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(prefix);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The `v1,<base64>` signature of one message: pure, allocation of one small string.
///
/// ```
/// use chime_webhooks::{Secret, sign};
/// let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
/// assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// ```
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = hmac(secret.as_bytes());
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 44);
    out.push_str("v1,");
    STANDARD.encode_string(digest, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors_sign() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn split_mac_equals_sign() {
        let secret = Secret::from_bytes(b"0123456789abcdef01234567");
        let prefix = content_prefix("msg_1", -5);
        let mac = v1_mac(secret.as_bytes(), prefix.as_bytes(), b"{}");
        assert_eq!(
            format!("v1,{}", STANDARD.encode(mac)),
            sign(&secret, "msg_1", -5, b"{}")
        );
    }
}
