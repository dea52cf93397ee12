//! Property-based fuzzing of the signature headers a sender (or an attacker) controls: every
//! input either verifies or is refused with a `VerifyError`, never a panic; and a valid
//! signature stops verifying when any byte of what it signs changes.
//!
//! CI runs proptest's default number of cases; run longer with
//! `PROPTEST_CASES=100000 cargo test -p chime-webhooks --test fuzz_signatures --release`.

use chime_webhooks::{Headers, Secret, Verifier, providers};
use proptest::prelude::*;

const NOW: i64 = 1_732_700_000;

fn secret() -> Secret {
    Secret::from_bytes(&[7u8; 32])
}

/// Header values as they arrive: printable text, signature-like lists, and arbitrary bytes
/// read lossily.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        "(v1a?,[A-Za-z0-9+/=]{0,100} ?){0,5}",
        "[0-9-]{0,25}",
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn standard_webhooks_headers_never_panic(
        id in header_value(),
        ts in header_value(),
        sig in header_value(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let headers = Headers::new()
            .with("webhook-id", &id)
            .with("webhook-timestamp", &ts)
            .with("webhook-signature", &sig);
        let verifier = Verifier::new(secret());
        let _ = verifier.verify_at(&headers, &body, NOW);
        let svix = Headers::new()
            .with("svix-id", &id)
            .with("svix-timestamp", &ts)
            .with("svix-signature", &sig);
        let _ = verifier.verify_at(&svix, &body, NOW);
    }

    #[test]
    fn provider_headers_never_panic(
        sig in header_value(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let h = Headers::new()
            .with("x-hub-signature-256", &sig)
            .with("stripe-signature", &sig)
            .with("x-shopify-hmac-sha256", &sig);
        let _ = providers::github::verify(b"k", &h, &body);
        let _ = providers::shopify::verify(b"k", &h, &body);
        let _ = providers::stripe::verify_at(b"k", &h, &body, std::time::Duration::from_secs(300), NOW);
    }

    #[test]
    fn a_changed_body_or_id_never_verifies(
        id in "[a-z0-9_]{1,40}",
        body in proptest::collection::vec(any::<u8>(), 1..256),
        flip in any::<prop::sample::Index>(),
    ) {
        let s = secret();
        let sig = chime_webhooks::sign(&s, &id, NOW, &body);
        let headers = Headers::new()
            .with("webhook-id", &id)
            .with("webhook-timestamp", NOW.to_string())
            .with("webhook-signature", &sig);
        let verifier = Verifier::new(s);
        prop_assert!(verifier.verify_at(&headers, &body, NOW).is_ok());
        let mut changed = body.clone();
        let i = flip.index(changed.len());
        changed[i] ^= 1;
        prop_assert!(verifier.verify_at(&headers, &changed, NOW).is_err());
        let moved = Headers::new()
            .with("webhook-id", format!("{id}x"))
            .with("webhook-timestamp", NOW.to_string())
            .with("webhook-signature", &sig);
        prop_assert!(verifier.verify_at(&moved, &body, NOW).is_err());
    }
}
