//! Sign and verify webhooks per the [Standard Webhooks] scheme, plus GitHub, Stripe and Shopify.
//!
//! This crate has no server dependencies: the chime server uses it to sign deliveries, and
//! `chime listen` / `chime verify` (and any Rust receiver) use it to verify them. An axum
//! extractor is available behind the `axum` feature.
//!
//! The signed content is `"{id}.{timestamp}.{body}"`; a `v1` signature is
//! `base64(HMAC-SHA256(key, content))` where `key` is the base64-decoded part of a
//! `whsec_…` secret, and a `v1a` signature is the Ed25519 signature of the same content.
//!
//! # Signing
//!
//! ```
//! use chime_webhooks::{Secret, sign};
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
//! assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//! ```
//!
//! # Verifying
//!
//! A failure says why in words, and tells a body rewritten on the way (typically by a framework
//! that parsed the JSON) apart from a wrong secret:
//!
//! ```
//! use chime_webhooks::{Headers, Secret, Verifier, VerifyError};
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let verifier = Verifier::new(secret);
//! let headers = Headers::from_pairs([
//!     ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
//!     ("webhook-timestamp", "1614265330"),
//!     ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
//! ]);
//! let now = 1614265330 + 10;
//!
//! let msg = verifier.verify_at(&headers, br#"{"test": 2432232314}"#, now).unwrap();
//! assert_eq!(msg.id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
//!
//! // The same JSON, re-serialized compactly by some framework: the secret is right.
//! let err = verifier.verify_at(&headers, br#"{"test":2432232314}"#, now).unwrap_err();
//! assert!(matches!(err, VerifyError::BodyModified { .. }));
//! println!("{err}");
//!
//! // Different content: nothing to say but "wrong secret, or the body was changed".
//! let err = verifier.verify_at(&headers, br#"{"test": 1}"#, now).unwrap_err();
//! assert!(err.to_string().contains("wrong secret"));
//! ```
//!
//! # Ed25519 (`v1a`)
//!
//! ```
//! use chime_webhooks::{Headers, PublicKey, SigningKey, Verifier};
//! let signing = SigningKey::generate(); // the sender keeps `signing.to_whsk()`
//! let public = PublicKey::parse(&signing.public_key().to_whpk()).unwrap(); // receivers get this
//! let headers = Headers::new()
//!     .with("webhook-id", "msg_1")
//!     .with("webhook-timestamp", "1700000000")
//!     .with("webhook-signature", signing.sign("msg_1", 1_700_000_000, b"{}"));
//! assert!(Verifier::new(public).verify_at(&headers, b"{}", 1_700_000_000).is_ok());
//! ```
//!
//! # Layout
//!
//! - `secret`: the `whsec_` symmetric [`Secret`].
//! - `sign`: [`sign`], the `v1` signature.
//! - `ed25519`: [`SigningKey`] (`whsk_`), [`PublicKey`] (`whpk_`) and [`sign_v1a`].
//! - `headers`: [`Headers`], the input every verifier reads.
//! - `verify`: [`Verifier`], [`VerifyKey`], [`verify`] and the header names.
//! - `error`: [`VerifyError`], every reason for a refusal.
//! - `body_change`: [`BodyChange`], the diagnosis of a body rewritten after signing.
//! - [`providers`]: GitHub, Stripe and Shopify schemes.
//! - `axum` (feature `axum`): the `VerifiedWebhook` extractor.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body_change;
mod ed25519;
mod error;
mod headers;
mod secret;
mod sign;
mod verify;

#[cfg(feature = "axum")]
pub mod axum;
pub mod providers;

pub use body_change::{BodyChange, JsonLayout};
pub use ed25519::{
    KeyError, PUBLIC_KEY_PREFIX, PublicKey, SIGNING_KEY_PREFIX, SigningKey, sign_v1a,
};
pub use error::VerifyError;
pub use headers::Headers;
pub use secret::{SECRET_PREFIX, Secret, SecretError};
pub use sign::sign;
pub use verify::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SVIX_HEADER_ID,
    SVIX_HEADER_SIGNATURE, SVIX_HEADER_TIMESTAMP, VerifiedMessage, Verifier, VerifyKey, verify,
};
