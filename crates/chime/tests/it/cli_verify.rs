//! `chime verify` as a user runs it: known-good examples for each scheme, each failure
//! explained in words, exit statuses and the `--json` shape.

use crate::support::cli::chime;
use crate::support::now;
use chime_webhooks::providers::{shopify, stripe};
use chime_webhooks::{Secret, SigningKey, sign};
use predicates::prelude::*;
use serde_json::Value;

/// The Standard Webhooks spec's own example.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TS: &str = "1614265330";
const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn spec_headers() -> Vec<String> {
    vec![
        "-H".into(),
        format!("webhook-id: {SPEC_ID}"),
        "-H".into(),
        format!("webhook-timestamp: {SPEC_TS}"),
        "-H".into(),
        format!("webhook-signature: {SPEC_SIG}"),
    ]
}

#[test]
fn standard_spec_example_is_valid_as_of_its_time() {
    chime()
        .args(["verify", "--secret", SPEC_SECRET, "--at", SPEC_TS])
        .args(spec_headers())
        .write_stdin(SPEC_BODY)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("✓ valid signature"));
}

#[test]
fn old_timestamp_is_explained_with_its_age() {
    let at = 1614265330 + 412;
    chime()
        .args(["verify", "--secret", SPEC_SECRET, "--at", &at.to_string()])
        .args(spec_headers())
        .write_stdin(SPEC_BODY)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "timestamp is 412 s in the past; tolerance is 300 s",
        ))
        .stdout(predicate::str::contains("chime replay"));
}

#[test]
fn wrong_secret_and_rewritten_body_are_told_apart() {
    let other = Secret::generate().to_whsec();
    chime()
        .args(["verify", "--secret", &other, "--at", SPEC_TS])
        .args(spec_headers())
        .write_stdin(SPEC_BODY)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("wrong secret"));
    // The same JSON re-serialized compactly, as a framework that parsed it would.
    chime()
        .args(["verify", "--secret", SPEC_SECRET, "--at", SPEC_TS])
        .args(spec_headers())
        .write_stdin(r#"{"test":2432232314}"#)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "body differs from what was signed",
        ))
        .stdout(predicate::str::contains("raw request body"));
}

#[test]
fn missing_signature_is_named() {
    chime()
        .args(["verify", "--secret", SPEC_SECRET])
        .args(["-H", "content-type: application/json"])
        .write_stdin(SPEC_BODY)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("no signature header"))
        .stdout(predicate::str::contains("--scheme"));
}

#[test]
fn json_verdict_shape() {
    let out = chime()
        .args([
            "verify",
            "--json",
            "--secret",
            SPEC_SECRET,
            "--at",
            "1714265330",
        ])
        .args(spec_headers())
        .write_stdin(SPEC_BODY)
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["status"], "invalid");
    assert_eq!(v["scheme"], "standard");
    assert_eq!(v["code"], "timestamp_too_old");
    assert!(v["reason"].as_str().unwrap().contains("in the past"));
    assert!(v["hint"].is_string());

    let out = chime()
        .args(["verify", "--json", "--secret", SPEC_SECRET, "--at", SPEC_TS])
        .args(spec_headers())
        .write_stdin(SPEC_BODY)
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "valid", "scheme": "standard"})
    );
}

#[test]
fn unusable_secret_is_a_usage_error() {
    chime()
        .args(["verify", "--secret", "whsec_not base64!"])
        .args(spec_headers())
        .write_stdin(SPEC_BODY)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--secret"))
        .stderr(predicate::str::contains("base64"));
    chime()
        .args(["verify", "--secret", SPEC_SECRET, "-H", "no colon here"])
        .write_stdin(SPEC_BODY)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("name: value"));
}

#[test]
fn svix_headers_ed25519_and_rotation() {
    let key = SigningKey::generate();
    let public = key.public_key().to_whpk();
    let ts = now().to_string();
    let body = r#"{"type":"invoice.paid"}"#;
    let sig = key.sign("msg_1", now(), body.as_bytes());
    // Two keys (a rotation): the old HMAC secret and the Ed25519 public key.
    chime()
        .args(["verify", "--secret", SPEC_SECRET, "--secret", &public])
        .args([
            "-H",
            "svix-id: msg_1",
            "-H",
            &format!("svix-timestamp: {ts}"),
        ])
        .args(["-H", &format!("svix-signature: {sig}")])
        .write_stdin(body)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("matched --secret #2"));
}

#[test]
fn headers_file_from_a_dump() {
    let dir = tempfile::tempdir().unwrap();
    let secret = Secret::generate();
    let body = br#"{"event":"order.created","data":{}}"#;
    let ts = now();
    let dump = format!(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nwebhook-id: evt_1\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {}\r\n\r\n",
        sign(&secret, "evt_1", ts, body)
    );
    let headers = dir.path().join("headers.txt");
    let body_file = dir.path().join("body.json");
    std::fs::write(&headers, dump).unwrap();
    std::fs::write(&body_file, body).unwrap();
    chime()
        .args(["verify", "--secret", &secret.to_whsec()])
        .arg("--headers-file")
        .arg(&headers)
        .arg("--body-file")
        .arg(&body_file)
        .assert()
        .code(0);
}

/// GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
#[test]
fn github_documented_example() {
    let header = "X-Hub-Signature-256: \
                  sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    chime()
        .args([
            "verify",
            "--scheme",
            "github",
            "--secret",
            "It's a Secret to Everybody",
        ])
        .args(["-H", header])
        .write_stdin("Hello, World!")
        .assert()
        .code(0);
    chime()
        .args(["verify", "--scheme", "github", "--secret", "not it"])
        .args(["-H", header])
        .write_stdin("Hello, World!")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("wrong secret"));
    // A Standard Webhooks check of a GitHub delivery says what is missing and what to do.
    chime()
        .args(["verify", "--secret", SPEC_SECRET, "-H", header])
        .write_stdin("Hello, World!")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("no signature header"))
        .stdout(predicate::str::contains("pass --scheme github"));
}

#[test]
fn stripe_and_shopify() {
    let body = r#"{"id":"evt_1","object":"event","type":"invoice.paid"}"#;
    let secret = "whsec_stripe_test";
    let stripe_header = stripe::sign(secret, now(), body.as_bytes());
    chime()
        .args(["verify", "--scheme", "stripe", "--secret", secret])
        .args(["-H", &format!("Stripe-Signature: {stripe_header}")])
        .write_stdin(body)
        .assert()
        .code(0);
    let old = stripe::sign(secret, now() - 3600, body.as_bytes());
    chime()
        .args(["verify", "--scheme", "stripe", "--secret", secret])
        .args(["-H", &format!("Stripe-Signature: {old}")])
        .write_stdin(body)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("s in the past"));

    let shopify_header = shopify::sign("hush", body.as_bytes());
    chime()
        .args(["verify", "--scheme", "shopify", "--secret", "hush"])
        .args(["-H", &format!("X-Shopify-Hmac-Sha256: {shopify_header}")])
        .write_stdin(body)
        .assert()
        .code(0);
}
