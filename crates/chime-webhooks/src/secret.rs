//! The symmetric `whsec_…` secret shared by sender and receiver, and the lenient base64 decoding
//! that secrets and signatures both need.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use rand::RngCore;

/// Prefix of a symmetric secret, as the Standard Webhooks spec writes it.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a secret could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Nothing after the optional `whsec_` prefix.
    #[error("the secret is empty")]
    Empty,
    /// The text after the prefix is not standard base64.
    #[error("the secret is not valid base64 after the whsec_ prefix")]
    NotBase64,
    /// The key is shorter or longer than [`Secret::parse_strict`] allows.
    #[error("the secret decodes to {0} bytes; 24 to 64 are required")]
    BadLength(usize),
}

/// A symmetric signing key (the decoded bytes of a `whsec_…` secret).
///
/// `Debug` never prints the key, so a secret cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`; the prefix is optional, as the spec allows.
    ///
    /// ```
    /// use chime_webhooks::{Secret, SecretError};
    /// let with = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    /// let without = Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    /// assert_eq!(with, without);
    /// assert_eq!(Secret::parse("whsec_"), Err(SecretError::Empty));
    /// ```
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        if b64.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = decode_base64_lenient(b64).ok_or(SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { key })
    }

    /// Parses a secret and also enforces the 24–64 byte key length chime generates.
    pub fn parse_strict(s: &str) -> Result<Self, SecretError> {
        let secret = Self::parse(s)?;
        if !(24..=64).contains(&secret.key.len()) {
            return Err(SecretError::BadLength(secret.key.len()));
        }
        Ok(secret)
    }

    /// A new random 32-byte secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    /// Builds a secret from raw key bytes.
    pub fn from_bytes(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// The `whsec_…` text form: what users copy into their receivers.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.key
    }
}

/// Decodes standard base64, padded or not (senders differ on padding).
pub(crate) fn decode_base64_lenient(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    STANDARD_NO_PAD.decode(trimmed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trip_and_debug_hides_key() {
        let s = Secret::generate();
        let text = s.to_whsec();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse_strict(&text).unwrap(), s);
        assert!(!format!("{s:?}").contains(&text[6..]));
    }

    #[test]
    fn empty_secrets_rejected() {
        assert_eq!(Secret::parse(""), Err(SecretError::Empty));
        assert_eq!(Secret::parse("whsec_"), Err(SecretError::Empty));
        // Only padding is still nothing.
        assert_eq!(Secret::parse("whsec_=="), Err(SecretError::Empty));
    }

    #[test]
    fn prefix_is_optional() {
        let with = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let without = Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(with, without);
        assert_eq!(with.as_bytes().len(), 24);
    }

    #[test]
    fn unpadded_secret_accepted() {
        // 32 bytes encode to 43 characters plus one `=`.
        let s = Secret::from_bytes(&[7u8; 32]);
        let padded = s.to_whsec();
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(Secret::parse(unpadded).unwrap(), s);
        assert_eq!(Secret::parse(&padded).unwrap(), s);
    }

    #[test]
    fn bad_secrets_rejected() {
        assert_eq!(
            Secret::parse("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        assert_eq!(
            Secret::parse_strict("whsec_AAAA"),
            Err(SecretError::BadLength(3))
        );
        let too_long = Secret::from_bytes(&[1u8; 65]).to_whsec();
        assert_eq!(
            Secret::parse_strict(&too_long),
            Err(SecretError::BadLength(65))
        );
    }
}
