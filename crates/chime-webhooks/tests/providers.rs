//! GitHub, Stripe and Shopify verification.
//!
//! Expected values were computed independently with Python's standard library, e.g.
//!   python3 -c 'import hmac,hashlib; print(hmac.new(KEY, MSG, hashlib.sha256).hexdigest())'
//! (base64.b64encode(....digest()) for Shopify), and pasted here.

use std::time::Duration;

use chime_webhooks::providers::{github, shopify, stripe};
use chime_webhooks::{BodyChange, Headers, JsonLayout, VerifyError};

// GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_known_vector() {
    assert_eq!(github::sign(GH_SECRET, GH_BODY), GH_SIG);
    let h = Headers::new().with("x-hub-signature-256", GH_SIG);
    assert_eq!(github::verify(GH_SECRET, &h, GH_BODY), Ok(()));
    // Upper-case hex is still the same digest.
    let upper = format!("sha256={}", GH_SIG["sha256=".len()..].to_uppercase());
    assert_eq!(
        github::verify(
            GH_SECRET,
            &Headers::new().with(github::HEADER, upper),
            GH_BODY
        ),
        Ok(())
    );
}

#[test]
fn github_failures() {
    let h = Headers::new().with(github::HEADER, GH_SIG);
    assert_eq!(
        github::verify("another secret", &h, GH_BODY),
        Err(VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        })
    );
    assert_eq!(
        github::verify(GH_SECRET, &Headers::new(), GH_BODY)
            .unwrap_err()
            .to_string(),
        "the X-Hub-Signature-256 header is missing"
    );
    for (value, says) in [
        (
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "does not start with sha256=",
        ),
        ("sha1=757107ea", "does not start with sha256="),
        ("sha256=zz", "not hex"),
        ("sha256=7571", "2 bytes"),
    ] {
        let err = github::verify(
            GH_SECRET,
            &Headers::new().with(github::HEADER, value),
            GH_BODY,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::MalformedHeader {
                    header: github::HEADER,
                    ..
                }
            ),
            "{value}: {err}"
        );
        assert!(err.to_string().contains(says), "{value}: {err}");
    }
}

#[test]
fn github_body_modified() {
    let signed = br#"{"action":"opened","number":1}"#;
    let h = Headers::new().with(github::HEADER, github::sign("s", signed));
    assert_eq!(
        github::verify("s", &h, b"{\n  \"action\": \"opened\",\n  \"number\": 1\n}"),
        Err(VerifyError::BodyModified {
            change: BodyChange::Reformatted {
                signed_as: JsonLayout::Compact
            }
        })
    );
}

// Stripe: secret "whsec_test_secret" used as raw bytes, t=1700000000,
// message b'1700000000.{"id":"evt_test","object":"event"}'.
const STRIPE_SECRET: &str = "whsec_test_secret";
const STRIPE_BODY: &[u8] = br#"{"id":"evt_test","object":"event"}"#;
const STRIPE_T: i64 = 1_700_000_000;
const STRIPE_V1: &str = "8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724";
// The same message under "whsec_old_secret", as during a secret roll.
const STRIPE_V1_OLD: &str = "a1dd24cd166a5ec1b320e88ebfc7df18408a2dc13ab12ccf1d9e392d099b1dc1";

fn stripe_headers(value: &str) -> Headers {
    Headers::new().with("stripe-signature", value)
}

#[test]
fn stripe_known_vector() {
    assert_eq!(
        stripe::sign(STRIPE_SECRET, STRIPE_T, STRIPE_BODY),
        format!("t={STRIPE_T},v1={STRIPE_V1}")
    );
    let h = stripe_headers(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
    assert_eq!(
        stripe::verify_at(
            STRIPE_SECRET,
            &h,
            STRIPE_BODY,
            Duration::from_secs(300),
            STRIPE_T
        ),
        Ok(STRIPE_T)
    );
}

#[test]
fn stripe_several_v1_and_other_schemes() {
    let h = stripe_headers(&format!(
        "t={STRIPE_T}, v1={STRIPE_V1_OLD}, v1={STRIPE_V1}, v0=abcdef"
    ));
    let tol = Duration::from_secs(300);
    assert_eq!(
        stripe::verify_at(STRIPE_SECRET, &h, STRIPE_BODY, tol, STRIPE_T),
        Ok(STRIPE_T)
    );
    assert_eq!(
        stripe::verify_at("whsec_old_secret", &h, STRIPE_BODY, tol, STRIPE_T),
        Ok(STRIPE_T)
    );
    assert_eq!(
        stripe::verify_at("whsec_other", &h, STRIPE_BODY, tol, STRIPE_T),
        Err(VerifyError::NoMatchingSignature {
            signatures: 2,
            keys: 1
        })
    );
    let only_v0 = stripe_headers(&format!("t={STRIPE_T},v0={STRIPE_V1}"));
    assert!(matches!(
        stripe::verify_at(STRIPE_SECRET, &only_v0, STRIPE_BODY, tol, STRIPE_T),
        Err(VerifyError::NoUsableSignature { .. })
    ));
}

#[test]
fn stripe_tolerance() {
    let h = stripe_headers(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
    let tol = Duration::from_secs(300);
    assert_eq!(
        stripe::verify_at(STRIPE_SECRET, &h, STRIPE_BODY, tol, STRIPE_T + 412)
            .unwrap_err()
            .to_string(),
        "timestamp is 412 s in the past; tolerance is 300 s"
    );
    assert!(matches!(
        stripe::verify_at(STRIPE_SECRET, &h, STRIPE_BODY, tol, STRIPE_T - 301),
        Err(VerifyError::TimestampInFuture {
            ahead_secs: 301,
            tolerance_secs: 300
        })
    ));
    // The system clock is long past 2023.
    assert!(matches!(
        stripe::verify(STRIPE_SECRET, &h, STRIPE_BODY),
        Err(VerifyError::TimestampTooOld { .. })
    ));
}

#[test]
fn stripe_malformed_headers() {
    let tol = Duration::from_secs(300);
    assert_eq!(
        stripe::verify_at(STRIPE_SECRET, &Headers::new(), STRIPE_BODY, tol, STRIPE_T),
        Err(VerifyError::MissingHeader {
            header: stripe::HEADER,
            also_tried: None
        })
    );
    for (value, says) in [
        (format!("v1={STRIPE_V1}"), "no t=<timestamp>"),
        (format!("t=soon,v1={STRIPE_V1}"), "not a whole number"),
        (format!("t={STRIPE_T}"), "no v1=<hex>"),
        (format!("t={STRIPE_T},garbage"), "not a key=value"),
    ] {
        let err = stripe::verify_at(
            STRIPE_SECRET,
            &stripe_headers(&value),
            STRIPE_BODY,
            tol,
            STRIPE_T,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::MalformedHeader {
                    header: stripe::HEADER,
                    ..
                }
            ),
            "{value}: {err}"
        );
        assert!(err.to_string().contains(says), "{value}: {err}");
    }
    // Bad hex in a v1 entry is a signature that does not match.
    assert_eq!(
        stripe::verify_at(
            STRIPE_SECRET,
            &stripe_headers(&format!("t={STRIPE_T},v1=xyz")),
            STRIPE_BODY,
            tol,
            STRIPE_T
        ),
        Err(VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        })
    );
}

#[test]
fn stripe_body_modified() {
    let h = stripe_headers(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
    let pretty = b"{\n  \"id\": \"evt_test\",\n  \"object\": \"event\"\n}";
    assert_eq!(
        stripe::verify_at(
            STRIPE_SECRET,
            &h,
            pretty,
            Duration::from_secs(300),
            STRIPE_T
        ),
        Err(VerifyError::BodyModified {
            change: BodyChange::Reformatted {
                signed_as: JsonLayout::Compact
            }
        })
    );
}

// Shopify: secret "hush", body b'{"id":820982911946154508}', base64 of the HMAC digest.
const SHOPIFY_SIG: &str = "qBvrsZF7RfB1iS6BX6IHqJTp5L911P7intnPeTPsH0I=";
const SHOPIFY_BODY: &[u8] = br#"{"id":820982911946154508}"#;

#[test]
fn shopify_known_vector() {
    assert_eq!(shopify::sign("hush", SHOPIFY_BODY), SHOPIFY_SIG);
    let h = Headers::new().with("X-Shopify-Hmac-SHA256", SHOPIFY_SIG);
    assert_eq!(shopify::verify("hush", &h, SHOPIFY_BODY), Ok(()));
    let unpadded = Headers::new().with(shopify::HEADER, SHOPIFY_SIG.trim_end_matches('='));
    assert_eq!(shopify::verify(b"hush", &unpadded, SHOPIFY_BODY), Ok(()));
}

#[test]
fn shopify_failures() {
    let h = Headers::new().with(shopify::HEADER, SHOPIFY_SIG);
    assert_eq!(
        shopify::verify("hush!", &h, SHOPIFY_BODY),
        Err(VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        })
    );
    assert!(matches!(
        shopify::verify("hush", &Headers::new(), SHOPIFY_BODY),
        Err(VerifyError::MissingHeader { .. })
    ));
    for (value, says) in [("not base64!", "not base64"), ("AAAA", "3 bytes")] {
        let err = shopify::verify(
            "hush",
            &Headers::new().with(shopify::HEADER, value),
            SHOPIFY_BODY,
        )
        .unwrap_err();
        assert!(err.to_string().contains(says), "{value}: {err}");
    }
    assert_eq!(
        shopify::verify("hush", &h, br#"{"id": 820982911946154508}"#),
        Err(VerifyError::BodyModified {
            change: BodyChange::Reformatted {
                signed_as: JsonLayout::Compact
            }
        })
    );
}
