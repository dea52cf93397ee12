//! Standard Webhooks verification against the spec's test vectors and its rules.

use std::time::Duration;

use chime_webhooks::{
    BodyChange, Headers, JsonLayout, PublicKey, Secret, SecretError, SigningKey, Verifier,
    VerifyError, VerifyKey, sign, sign_v1a, verify,
};

/// The vectors, vendored in `tests/vectors/` (source: the Standard Webhooks spec
/// repository's library tests, MIT; see the README there).
fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("vectors/standard-webhooks.json"))
        .expect("vectors file is JSON")
}

struct Case {
    secret: String,
    id: String,
    timestamp: i64,
    payload: String,
    signature: String,
}

fn valid_cases() -> Vec<Case> {
    let v = vectors();
    let cases = v["valid"].as_array().expect("valid is a list");
    assert_eq!(cases.len(), 2, "the file has two valid vectors");
    cases
        .iter()
        .map(|c| Case {
            secret: c["secret"].as_str().unwrap().to_owned(),
            id: c["id"].as_str().unwrap().to_owned(),
            timestamp: c["timestamp"].as_i64().unwrap(),
            payload: c["payload"].as_str().unwrap().to_owned(),
            signature: c["signature"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn headers(id: &str, timestamp: i64, signature: &str) -> Headers {
    Headers::from_pairs([
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature.to_owned()),
    ])
}

fn verifier(secret: &str) -> Verifier {
    Verifier::new(Secret::parse(secret).unwrap())
}

#[test]
fn valid_vectors_sign_and_verify() {
    for case in valid_cases() {
        let secret = Secret::parse(&case.secret).unwrap();
        assert_eq!(
            sign(&secret, &case.id, case.timestamp, case.payload.as_bytes()),
            case.signature
        );
        let msg = verifier(&case.secret)
            .verify_at(
                &headers(&case.id, case.timestamp, &case.signature),
                case.payload.as_bytes(),
                case.timestamp,
            )
            .unwrap();
        assert_eq!(msg.id, case.id);
        assert_eq!(msg.timestamp, case.timestamp);
        assert_eq!(msg.key_index, 0);
    }
}

#[test]
fn every_invalid_vector_is_refused() {
    let case = &valid_cases()[0];
    let v = vectors();
    let invalid = v["invalid_for_first_valid_case"].as_array().unwrap();
    assert_eq!(invalid.len(), 4);
    for sig in invalid {
        let sig = sig.as_str().unwrap();
        let err = verifier(&case.secret)
            .verify_at(
                &headers(&case.id, case.timestamp, sig),
                case.payload.as_bytes(),
                case.timestamp,
            )
            .unwrap_err();
        if sig.starts_with("v2,") {
            assert!(
                matches!(err, VerifyError::NoUsableSignature { .. }),
                "{sig}: {err}"
            );
            assert!(err.to_string().contains("\"v2\""), "{err}");
        } else {
            assert!(
                matches!(err, VerifyError::NoMatchingSignature { .. }),
                "{sig}: {err}"
            );
        }
    }
}

#[test]
fn rotation_any_one_signature_matching_is_enough() {
    let case = &valid_cases()[0];
    let v = vectors();
    let mut list: Vec<String> = v["invalid_for_first_valid_case"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    list.insert(2, case.signature.clone());
    let header = list.join(" ");
    let msg = verifier(&case.secret)
        .verify_at(
            &headers(&case.id, case.timestamp, &header),
            case.payload.as_bytes(),
            case.timestamp,
        )
        .unwrap();
    assert_eq!(msg.id, case.id);
}

#[test]
fn rotation_several_keys_report_which_matched() {
    let old = Secret::generate();
    let new = Secret::generate();
    let body = b"{}";
    let header = format!(
        "{} {}",
        sign(&new, "m", 100, body),
        sign(&old, "m", 100, body)
    );
    let only_old = Verifier::new(Secret::generate()).with_key(old.clone());
    assert_eq!(
        only_old
            .verify_at(&headers("m", 100, &header), body, 100)
            .unwrap()
            .key_index,
        1
    );
    let both = Verifier::from_keys([VerifyKey::Secret(new), VerifyKey::Secret(old)]);
    assert_eq!(
        both.verify_at(&headers("m", 100, &header), body, 100)
            .unwrap()
            .key_index,
        0
    );
}

#[test]
fn tolerance_past_and_future() {
    let case = &valid_cases()[0];
    let h = headers(&case.id, case.timestamp, &case.signature);
    let body = case.payload.as_bytes();
    let v = verifier(&case.secret);

    // The edges are inside the window.
    assert!(v.verify_at(&h, body, case.timestamp + 300).is_ok());
    assert!(v.verify_at(&h, body, case.timestamp - 300).is_ok());

    let err = v.verify_at(&h, body, case.timestamp + 412).unwrap_err();
    assert_eq!(
        err,
        VerifyError::TimestampTooOld {
            age_secs: 412,
            tolerance_secs: 300
        }
    );
    assert_eq!(
        err.to_string(),
        "timestamp is 412 s in the past; tolerance is 300 s"
    );

    let err = v.verify_at(&h, body, case.timestamp - 301).unwrap_err();
    assert_eq!(
        err,
        VerifyError::TimestampInFuture {
            ahead_secs: 301,
            tolerance_secs: 300
        }
    );
    assert_eq!(
        err.to_string(),
        "timestamp is 301 s in the future; tolerance is 300 s"
    );

    let narrow = v.clone().with_tolerance(Duration::from_secs(10));
    assert!(matches!(
        narrow.verify_at(&h, body, case.timestamp + 11),
        Err(VerifyError::TimestampTooOld {
            age_secs: 11,
            tolerance_secs: 10
        })
    ));
    let off = v.with_tolerance(Duration::MAX);
    assert!(off.verify_at(&h, body, i64::MAX).is_ok());
}

#[test]
fn system_clock_refuses_the_2021_vector() {
    let case = &valid_cases()[0];
    let err = verify(
        &Secret::parse(&case.secret).unwrap(),
        &headers(&case.id, case.timestamp, &case.signature),
        case.payload.as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::TimestampTooOld { .. }), "{err}");
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    let v = Verifier::new(Secret::generate());
    let far_future = Headers::new()
        .with("webhook-id", "m")
        .with("webhook-timestamp", i64::MAX.to_string())
        .with("webhook-signature", "v1,AAAA");
    assert!(matches!(
        v.verify_at(&far_future, b"", i64::MIN),
        Err(VerifyError::TimestampInFuture {
            ahead_secs: u64::MAX,
            ..
        })
    ));
    let too_big = Headers::from_pairs([
        ("webhook-id", "m"),
        ("webhook-timestamp", "99999999999999999999"),
        ("webhook-signature", "v1,AAAA"),
    ]);
    assert!(matches!(
        v.verify_at(&too_big, b"", 0),
        Err(VerifyError::MalformedHeader { .. })
    ));
}

#[test]
fn missing_headers_are_named() {
    let secret = Secret::generate();
    let v = Verifier::new(secret.clone());
    let sig = sign(&secret, "m", 100, b"");
    let full = [
        ("webhook-id", "m"),
        ("webhook-timestamp", "100"),
        ("webhook-signature", sig.as_str()),
    ];
    for (skip, name, alias) in [
        (0, "webhook-id", "svix-id"),
        (1, "webhook-timestamp", "svix-timestamp"),
        (2, "webhook-signature", "svix-signature"),
    ] {
        let partial: Headers = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, p)| *p)
            .collect();
        let err = v.verify_at(&partial, b"", 100).unwrap_err();
        assert_eq!(
            err,
            VerifyError::MissingHeader {
                header: name,
                also_tried: Some(alias)
            }
        );
        assert_eq!(
            err.to_string(),
            format!("the {name} header is missing (and there is no {alias} header)")
        );
    }
}

#[test]
fn malformed_headers_say_what_is_wrong() {
    let secret = Secret::generate();
    let v = Verifier::new(secret.clone());
    let sig = sign(&secret, "m", 100, b"");

    let err = v.verify_at(&headers("", 100, &sig), b"", 100).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the webhook-id header is malformed: it is empty"
    );

    for bad in ["yesterday", "1.5", "-100", "+100", ""] {
        let h = Headers::from_pairs([
            ("webhook-id", "m"),
            ("webhook-timestamp", bad),
            ("webhook-signature", &sig),
        ]);
        let err = v.verify_at(&h, b"", 100).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::MalformedHeader {
                    header: "webhook-timestamp",
                    ..
                }
            ),
            "{bad}: {err}"
        );
        assert!(
            err.to_string().contains("not a whole number of seconds"),
            "{err}"
        );
    }

    for garbage in ["garbage", "v1 g0hM9SsE", "   ", "v1;abc"] {
        let err = v
            .verify_at(&headers("m", 100, garbage), b"", 100)
            .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::MalformedHeader {
                    header: "webhook-signature",
                    ..
                }
            ),
            "{garbage:?}: {err}"
        );
    }

    // Garbage next to a valid entry is skipped.
    assert!(
        v.verify_at(
            &headers("m", 100, &format!("garbage {sig} ,,, v1,!!!")),
            b"",
            100
        )
        .is_ok()
    );
    // A forged header cannot ask for unbounded work; a rotation never needs this many.
    let many = vec!["v1,AAAA"; 16].join(" ");
    let err = v
        .verify_at(&headers("m", 100, &format!("{many} {sig}")), b"", 100)
        .unwrap_err();
    assert!(
        err.to_string().contains("17 signatures; at most 16"),
        "{err}"
    );
    let fifteen = vec!["v1,AAAA"; 15].join(" ");
    assert!(
        v.verify_at(&headers("m", 100, &format!("{fifteen} {sig}")), b"", 100)
            .is_ok()
    );

    // A v1 entry that is not base64 is simply a non-matching signature.
    assert!(matches!(
        v.verify_at(&headers("m", 100, "v1,!!!not-base64!!!"), b"", 100),
        Err(VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        })
    ));
}

#[test]
fn unpadded_base64_signature_and_secret() {
    let case = &valid_cases()[0];
    let unpadded_sig = case.signature.trim_end_matches('=');
    assert_ne!(unpadded_sig, case.signature);
    let secret_text = Secret::parse(&case.secret).unwrap().to_whsec();
    let padded_secret = Secret::from_bytes(Secret::parse(&case.secret).unwrap().as_bytes());
    assert_eq!(secret_text, padded_secret.to_whsec());
    let v = verifier(&case.secret);
    assert!(
        v.verify_at(
            &headers(&case.id, case.timestamp, unpadded_sig),
            case.payload.as_bytes(),
            case.timestamp
        )
        .is_ok()
    );

    // A 32-byte key has padding in its whsec_ form; without it the secret still works.
    let key = Secret::from_bytes(&[42u8; 32]);
    let unpadded = key.to_whsec().trim_end_matches('=').to_owned();
    assert_ne!(unpadded, key.to_whsec());
    let sig = sign(&key, "m", 1, b"x");
    assert!(
        verifier(&unpadded)
            .verify_at(&headers("m", 1, &sig), b"x", 1)
            .is_ok()
    );
}

#[test]
fn secret_with_and_without_prefix() {
    for case in valid_cases() {
        let bare = case.secret.strip_prefix("whsec_").unwrap();
        assert!(
            verifier(bare)
                .verify_at(
                    &headers(&case.id, case.timestamp, &case.signature),
                    case.payload.as_bytes(),
                    case.timestamp
                )
                .is_ok()
        );
    }
}

#[test]
fn empty_secrets_are_rejected() {
    assert_eq!(Secret::parse(""), Err(SecretError::Empty));
    assert_eq!(Secret::parse("whsec_"), Err(SecretError::Empty));
    assert!(VerifyKey::parse("whsec_").is_err());
    assert!(VerifyKey::parse("").is_err());
}

#[test]
fn svix_header_aliases() {
    for case in valid_cases() {
        let h = Headers::from_pairs([
            ("Svix-Id", case.id.clone()),
            ("Svix-Timestamp", case.timestamp.to_string()),
            ("Svix-Signature", case.signature.clone()),
        ]);
        assert!(
            verifier(&case.secret)
                .verify_at(&h, case.payload.as_bytes(), case.timestamp)
                .is_ok()
        );
    }
    // Errors name the header that was actually used.
    let h = Headers::from_pairs([
        ("svix-id", "m"),
        ("svix-timestamp", "soon"),
        ("svix-signature", "v1,AAAA"),
    ]);
    assert!(matches!(
        Verifier::new(Secret::generate()).verify_at(&h, b"", 0),
        Err(VerifyError::MalformedHeader {
            header: "svix-timestamp",
            ..
        })
    ));
}

#[test]
fn header_map_input() {
    let case = &valid_cases()[1];
    let mut map = http::HeaderMap::new();
    map.insert("webhook-id", case.id.parse().unwrap());
    map.insert(
        "webhook-timestamp",
        case.timestamp.to_string().parse().unwrap(),
    );
    // A proxy may split one signature list over two header lines.
    map.append("webhook-signature", "v1,AAAA".parse().unwrap());
    map.append("webhook-signature", case.signature.parse().unwrap());
    let msg = verifier(&case.secret)
        .verify_at(
            &Headers::from(&map),
            case.payload.as_bytes(),
            case.timestamp,
        )
        .unwrap();
    assert_eq!(msg.id, case.id);
}

#[test]
fn body_modified_is_told_apart_from_wrong_secret() {
    let cases = valid_cases();

    // Vector 2 was signed compact; a framework handed the handler a pretty-printed copy.
    let c = &cases[1];
    let value: serde_json::Value = serde_json::from_str(&c.payload).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    let h = headers(&c.id, c.timestamp, &c.signature);
    let err = verifier(&c.secret)
        .verify_at(&h, &pretty, c.timestamp)
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::BodyModified {
            change: BodyChange::Reformatted {
                signed_as: JsonLayout::Compact
            }
        }
    );
    let text = err.to_string();
    assert!(
        text.starts_with("the body differs from what was signed"),
        "{text}"
    );
    assert!(text.contains("framework"), "{text}");

    // Vector 1 was signed with Python's ", "/": " separators; the handler got it compacted.
    let c = &cases[0];
    let h = headers(&c.id, c.timestamp, &c.signature);
    let compact =
        serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(&c.payload).unwrap())
            .unwrap();
    assert_eq!(
        verifier(&c.secret)
            .verify_at(&h, &compact, c.timestamp)
            .unwrap_err(),
        VerifyError::BodyModified {
            change: BodyChange::Reformatted {
                signed_as: JsonLayout::Spaced
            }
        }
    );

    // A newline appended on the way.
    let mut with_newline = c.payload.clone().into_bytes();
    with_newline.push(b'\n');
    assert_eq!(
        verifier(&c.secret)
            .verify_at(&h, &with_newline, c.timestamp)
            .unwrap_err(),
        VerifyError::BodyModified {
            change: BodyChange::WhitespaceAdded
        }
    );

    // Keys reordered by a map that does not keep insertion order.
    let secret = Secret::generate();
    let signed = br#"{"a":1,"b":2}"#;
    let sig = sign(&secret, "m", 5, signed);
    assert_eq!(
        Verifier::new(secret.clone())
            .verify_at(&headers("m", 5, &sig), br#"{"b":2,"a":1}"#, 5)
            .unwrap_err(),
        VerifyError::BodyModified {
            change: BodyChange::KeysReordered {
                signed_as: JsonLayout::Compact
            }
        }
    );

    // The right body with the wrong secret, and a changed value with the right secret, are
    // indistinguishable: both get the plain explanation.
    let wrong = Verifier::new(Secret::generate())
        .verify_at(&h, c.payload.as_bytes(), c.timestamp)
        .unwrap_err();
    assert_eq!(
        wrong,
        VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        }
    );
    assert!(
        wrong
            .to_string()
            .contains("wrong secret, or the body was changed")
    );
    let changed = verifier(&c.secret)
        .verify_at(&h, br#"{"test": 2432232315}"#, c.timestamp)
        .unwrap_err();
    assert_eq!(
        changed,
        VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        }
    );
    // A wrong secret on a reformatted body stays "no match", never "body modified".
    assert!(matches!(
        Verifier::new(Secret::generate()).verify_at(&h, &compact, c.timestamp),
        Err(VerifyError::NoMatchingSignature { .. })
    ));
}

#[test]
fn no_keys_is_an_error_not_a_pass() {
    let case = &valid_cases()[0];
    let err = Verifier::from_keys([])
        .verify_at(
            &headers(&case.id, case.timestamp, &case.signature),
            case.payload.as_bytes(),
            case.timestamp,
        )
        .unwrap_err();
    assert_eq!(err, VerifyError::NoKeys);
}

// RFC 8032 TEST 1 seed; the signature was computed independently with Python's cryptography:
//   Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEED)).sign(b'msg_1.1700000000.{"a":1}')
// base64-encoded, and the public key as whpk_ + base64 of its raw 32 bytes.
const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PY_WHPK: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const PY_V1A: &str =
    "v1a,0pYc3grQLAYTYYtSm9Z+VOqkyvPhiL3xzHrpcxS6/6sXV93wWnX+gE4ZSgyOhnhCp3VTI/jx2HUyQVOO3T5OCg==";

fn rfc_key() -> SigningKey {
    let seed: [u8; 32] = hex::decode(RFC_SEED).unwrap().try_into().unwrap();
    SigningKey::from_seed(&seed)
}

#[test]
fn ed25519_matches_an_independent_implementation() {
    let key = rfc_key();
    assert_eq!(key.public_key().to_whpk(), PY_WHPK);
    assert_eq!(
        sign_v1a(&key, "msg_1", 1_700_000_000, br#"{"a":1}"#),
        PY_V1A
    );
    let v = Verifier::new(PublicKey::parse(PY_WHPK).unwrap());
    assert!(
        v.verify_at(
            &headers("msg_1", 1_700_000_000, PY_V1A),
            br#"{"a":1}"#,
            1_700_000_000
        )
        .is_ok()
    );
}

#[test]
fn ed25519_round_trip_and_tampered_body() {
    let key = SigningKey::parse(&SigningKey::generate().to_whsk()).unwrap();
    let public = PublicKey::parse(&key.public_key().to_whpk()).unwrap();
    let body = br#"{"event":"order_created","data":{"order_id":1234}}"#;
    let sig = key.sign("evt_1", 1_700_000_000, body);
    let h = headers("evt_1", 1_700_000_000, &sig);
    let v = Verifier::new(public);
    assert_eq!(v.verify_at(&h, body, 1_700_000_000).unwrap().id, "evt_1");

    let tampered = br#"{"event":"order_created","data":{"order_id":1235}}"#;
    assert_eq!(
        v.verify_at(&h, tampered, 1_700_000_000).unwrap_err(),
        VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        }
    );
    // A different id or timestamp is tampering too.
    assert!(
        v.verify_at(&headers("evt_2", 1_700_000_000, &sig), body, 1_700_000_000)
            .is_err()
    );
    assert!(
        v.verify_at(&headers("evt_1", 1_700_000_001, &sig), body, 1_700_000_000)
            .is_err()
    );
    // Unpadded base64 is fine for v1a too.
    assert!(
        v.verify_at(
            &headers("evt_1", 1_700_000_000, sig.trim_end_matches('=')),
            body,
            1_700_000_000
        )
        .is_ok()
    );
    // Body-change diagnosis works for v1a as well.
    // Written by hand: serde_json::Value would also sort the keys, losing the signed order.
    let spaced = br#"{"event": "order_created", "data": {"order_id": 1234}}"#;
    assert_eq!(
        v.verify_at(&h, spaced, 1_700_000_000).unwrap_err(),
        VerifyError::BodyModified {
            change: BodyChange::Reformatted {
                signed_as: JsonLayout::Compact
            }
        }
    );
}

#[test]
fn each_key_kind_checks_only_its_own_version() {
    let signing = SigningKey::generate();
    let secret = Secret::generate();
    let body = b"{}";
    let v1a = signing.sign("m", 9, body);
    let v1 = sign(&secret, "m", 9, body);

    let symmetric_only = Verifier::new(secret.clone());
    let err = symmetric_only
        .verify_at(&headers("m", 9, &v1a), body, 9)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::NoUsableSignature { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("v1 (symmetric secret)"), "{err}");

    let public_only = Verifier::new(signing.public_key());
    assert!(matches!(
        public_only.verify_at(&headers("m", 9, &v1), body, 9),
        Err(VerifyError::NoUsableSignature { .. })
    ));

    // A mixed verifier accepts either, and reports which key matched.
    let mixed = Verifier::new(secret).with_key(signing.public_key());
    assert_eq!(
        mixed
            .verify_at(&headers("m", 9, &v1a), body, 9)
            .unwrap()
            .key_index,
        1
    );
    assert_eq!(
        mixed
            .verify_at(&headers("m", 9, &format!("{v1a} {v1}")), body, 9)
            .unwrap()
            .key_index,
        0
    );

    // A v1a signature's bytes presented as v1 do not match a secret, and vice versa.
    let relabelled = v1a.replacen("v1a,", "v1,", 1);
    assert!(
        mixed
            .verify_at(&headers("m", 9, &relabelled), body, 9)
            .is_err()
    );
}

#[test]
fn verify_key_parse_accepts_every_key_text() {
    let signing = SigningKey::generate();
    assert_eq!(
        VerifyKey::parse(&signing.to_whsk()).unwrap(),
        VerifyKey::PublicKey(signing.public_key())
    );
    assert_eq!(
        VerifyKey::parse(&signing.public_key().to_whpk()).unwrap(),
        VerifyKey::PublicKey(signing.public_key())
    );
    let secret = Secret::generate();
    assert_eq!(
        VerifyKey::parse(&secret.to_whsec()).unwrap(),
        VerifyKey::Secret(secret)
    );
    assert!(VerifyKey::parse("whpk_AAAA").is_err());
}
