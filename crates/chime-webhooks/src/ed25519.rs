//! Ed25519 (`v1a`) keys and signatures from the Standard Webhooks spec.
//!
//! With a symmetric secret anyone who can verify can also forge. With `v1a` the sender keeps a
//! [`SigningKey`] (`whsk_…`) and hands out only its [`PublicKey`] (`whpk_…`), which verifies but
//! cannot sign. The signed content is the same `"{id}.{timestamp}.{body}"` as for `v1`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer};
use rand::RngCore;

use crate::secret::{SecretError, decode_base64_lenient};
use crate::sign::content_prefix;

/// Prefix of an Ed25519 secret key.
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
/// Prefix of an Ed25519 public key.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// Why a `whsk_…` / `whpk_…` key (or, via [`VerifyKey::parse`], a `whsec_…` one) is unusable.
///
/// [`VerifyKey::parse`]: crate::VerifyKey::parse
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Nothing after the prefix.
    #[error("the {prefix} key is empty")]
    Empty {
        /// The key's prefix.
        prefix: &'static str,
    },
    /// The text after the prefix is not standard base64.
    #[error("the key is not valid base64 after its {prefix} prefix")]
    NotBase64 {
        /// The key's prefix.
        prefix: &'static str,
    },
    /// The decoded key has the wrong size.
    #[error("the {prefix} key decodes to {got} bytes; {expected} are required")]
    BadLength {
        /// The key's prefix.
        prefix: &'static str,
        /// The decoded size.
        got: usize,
        /// The sizes accepted, in words.
        expected: &'static str,
    },
    /// A 64-byte `whsk_` key whose second half is not the public key of its first half.
    #[error("the whsk_ key's last 32 bytes are not the public key of its first 32")]
    KeypairMismatch,
    /// Not a point on the curve, or one of the weak points that would let anyone sign.
    #[error("the whpk_ key is not a usable Ed25519 public key")]
    InvalidPublicKey,
    /// A symmetric secret that failed to parse.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// An Ed25519 signing key: the sender's half of a `v1a` key pair.
///
/// `Debug` never prints the key.
///
/// ```
/// use chime_webhooks::SigningKey;
/// let key = SigningKey::generate();
/// let text = key.to_whsk();
/// assert!(text.starts_with("whsk_"));
/// assert_eq!(SigningKey::parse(&text).unwrap().public_key(), key.public_key());
/// ```
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey(whsk_…, public {})",
            self.public_key().to_whpk()
        )
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        // rand 0.9 and ed25519-dalek 2 use different rand_core majors, so draw the seed directly.
        rand::rng().fill_bytes(&mut seed);
        Self::from_seed(&seed)
    }

    /// The key derived from a 32-byte seed (RFC 8032's "secret key").
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            inner: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// Parses `whsk_<base64>` of a 64-byte key pair (seed then public key) or of a 32-byte seed.
    /// The prefix is optional.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let prefix = SIGNING_KEY_PREFIX;
        let bytes = decode_prefixed(s, prefix)?;
        if let Ok(seed) = <&[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(Self::from_seed(seed));
        }
        let pair = <&[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| KeyError::BadLength {
            prefix,
            got: bytes.len(),
            expected: "64 (key pair) or 32 (seed)",
        })?;
        ed25519_dalek::SigningKey::from_keypair_bytes(pair)
            .map(|inner| Self { inner })
            .map_err(|_| KeyError::KeypairMismatch)
    }

    /// The `whsk_…` text form, as a 64-byte key pair (what libsodium-style tools expect).
    pub fn to_whsk(&self) -> String {
        format!(
            "{SIGNING_KEY_PREFIX}{}",
            STANDARD.encode(self.inner.to_keypair_bytes())
        )
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: self.inner.verifying_key(),
        }
    }

    /// The `v1a,<base64>` signature of one message; see [`sign_v1a`].
    pub fn sign(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
        sign_v1a(self, msg_id, timestamp, payload)
    }
}

/// The `v1a,<base64>` Ed25519 signature of `"{msg_id}.{timestamp}.{payload}"`.
///
/// ```
/// use chime_webhooks::{Headers, SigningKey, Verifier, sign_v1a};
/// let key = SigningKey::generate();
/// let sig = sign_v1a(&key, "msg_1", 1_700_000_000, b"{}");
/// assert!(sig.starts_with("v1a,"));
///
/// let headers = Headers::from_pairs([
///     ("webhook-id", "msg_1"),
///     ("webhook-timestamp", "1700000000"),
///     ("webhook-signature", sig.as_str()),
/// ]);
/// let verifier = Verifier::new(key.public_key());
/// assert!(verifier.verify_at(&headers, b"{}", 1_700_000_000).is_ok());
/// assert!(verifier.verify_at(&headers, b"{ }", 1_700_000_000).is_err());
/// ```
pub fn sign_v1a(key: &SigningKey, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut content = content_prefix(msg_id, timestamp).into_bytes();
    content.extend_from_slice(payload);
    let signature = key.inner.sign(&content);
    let mut out = String::with_capacity(4 + 88);
    out.push_str("v1a,");
    STANDARD.encode_string(signature.to_bytes(), &mut out);
    out
}

/// An Ed25519 public key: what a receiver of `v1a` signatures configures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: ed25519_dalek::VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_whpk())
    }
}

impl PublicKey {
    /// Parses `whpk_<base64 of 32 bytes>`; the prefix is optional.
    ///
    /// ```
    /// use chime_webhooks::{KeyError, PublicKey, SigningKey};
    /// let public = SigningKey::generate().public_key();
    /// assert_eq!(PublicKey::parse(&public.to_whpk()).unwrap(), public);
    /// assert!(matches!(PublicKey::parse("whpk_AAAA"), Err(KeyError::BadLength { got: 3, .. })));
    /// ```
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let prefix = PUBLIC_KEY_PREFIX;
        let bytes = decode_prefixed(s, prefix)?;
        let raw = <&[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::BadLength {
            prefix,
            got: bytes.len(),
            expected: "32",
        })?;
        Self::from_bytes(raw)
    }

    /// A public key from its 32 raw bytes.
    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, KeyError> {
        let inner =
            ed25519_dalek::VerifyingKey::from_bytes(raw).map_err(|_| KeyError::InvalidPublicKey)?;
        if inner.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(Self { inner })
    }

    /// The `whpk_…` text form.
    pub fn to_whpk(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            STANDARD.encode(self.inner.as_bytes())
        )
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.inner.as_bytes()
    }

    /// Whether `signature` (raw bytes, not the `v1a,` text) signs `content`.
    pub(crate) fn verifies(&self, content: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        // Strict verification refuses malleable signatures and small-order keys.
        self.inner.verify_strict(content, &signature).is_ok()
    }
}

fn decode_prefixed(s: &str, prefix: &'static str) -> Result<Vec<u8>, KeyError> {
    let b64 = s.trim().strip_prefix(prefix).unwrap_or(s.trim());
    if b64.trim_end_matches('=').is_empty() {
        return Err(KeyError::Empty { prefix });
    }
    decode_base64_lenient(b64).ok_or(KeyError::NotBase64 { prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 section 7.1, TEST 1.
    const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn rfc_seed() -> [u8; 32] {
        hex::decode(RFC_SEED).unwrap().try_into().unwrap()
    }

    #[test]
    fn rfc8032_public_key_derivation() {
        let key = SigningKey::from_seed(&rfc_seed());
        assert_eq!(hex::encode(key.public_key().as_bytes()), RFC_PUBLIC);
    }

    #[test]
    fn whsk_accepts_seed_and_key_pair() {
        let seed = rfc_seed();
        let from_seed = SigningKey::parse(&format!("whsk_{}", STANDARD.encode(seed))).unwrap();
        let text = from_seed.to_whsk();
        let pair = STANDARD
            .decode(text.strip_prefix("whsk_").unwrap())
            .unwrap();
        assert_eq!(pair.len(), 64);
        assert_eq!(&pair[..32], &seed);
        assert_eq!(hex::encode(&pair[32..]), RFC_PUBLIC);
        let from_pair = SigningKey::parse(&text).unwrap();
        assert_eq!(from_pair.public_key(), from_seed.public_key());
        // Unprefixed and unpadded forms parse too.
        let bare = text.strip_prefix("whsk_").unwrap().trim_end_matches('=');
        assert_eq!(
            SigningKey::parse(bare).unwrap().public_key(),
            from_seed.public_key()
        );
    }

    #[test]
    fn whsk_rejects_bad_keys() {
        let mut pair = SigningKey::from_seed(&rfc_seed()).inner.to_keypair_bytes();
        pair[63] ^= 1;
        let text = format!("whsk_{}", STANDARD.encode(pair));
        assert_eq!(
            SigningKey::parse(&text).unwrap_err(),
            KeyError::KeypairMismatch
        );
        assert_eq!(
            SigningKey::parse("whsk_").unwrap_err(),
            KeyError::Empty { prefix: "whsk_" }
        );
        assert!(matches!(
            SigningKey::parse("whsk_AAAA").unwrap_err(),
            KeyError::BadLength { got: 3, .. }
        ));
        assert_eq!(
            SigningKey::parse("whsk_!!").unwrap_err(),
            KeyError::NotBase64 { prefix: "whsk_" }
        );
    }

    #[test]
    fn whpk_round_trip_and_weak_keys() {
        let public = SigningKey::generate().public_key();
        let text = public.to_whpk();
        assert!(text.starts_with("whpk_"));
        assert_eq!(PublicKey::parse(&text).unwrap(), public);
        // The identity point has small order: anyone could forge signatures for it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(&identity).unwrap_err(),
            KeyError::InvalidPublicKey
        );
    }

    #[test]
    fn debug_hides_the_signing_key() {
        let key = SigningKey::generate();
        let whsk = key.to_whsk();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&whsk[5..20]));
        assert!(shown.contains(&key.public_key().to_whpk()));
    }

    #[test]
    fn sign_v1a_verifies_and_detects_tampering() {
        let key = SigningKey::generate();
        let sig = sign_v1a(&key, "msg_1", 1_700_000_000, b"{\"a\":1}");
        let raw = STANDARD.decode(sig.strip_prefix("v1a,").unwrap()).unwrap();
        let public = key.public_key();
        assert!(public.verifies(b"msg_1.1700000000.{\"a\":1}", &raw));
        assert!(!public.verifies(b"msg_1.1700000000.{\"a\":2}", &raw));
        assert!(!public.verifies(b"msg_1.1700000000.{\"a\":1}", &raw[..63]));
        assert!(
            !SigningKey::generate()
                .public_key()
                .verifies(b"msg_1.1700000000.{\"a\":1}", &raw)
        );
    }
}
