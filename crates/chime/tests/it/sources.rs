//! Inbound sources (issue 18) against a real server: a provider-signed POST to the ingest URL
//! is verified, committed and delivered byte for byte to the tenant's endpoints, signed with
//! each endpoint's own secret; the provider's retries are de-duplicated; bad signatures,
//! oversized bodies and floods are refused; non-JSON bodies pass untouched.

use axum::http::StatusCode;
use chime_webhooks::providers::{github, stripe};
use serde_json::{Value, json};

use crate::support::{Opts, Receiver, TestServer};

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    server.create_tenant("acme").await;
    (dir, server)
}

async fn source(server: &TestServer, body: Value) -> Value {
    let (s, b) = server
        .admin("POST", "/v1/tenants/acme/sources", Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(b["id"].as_str().unwrap().starts_with("src_"));
    b
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs `body` to an ingest URL with `headers`; status, JSON answer, response headers.
async fn post(
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let h = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        h,
    )
}

/// The status a POST to `url` declaring `length` bytes gets before any of them is sent.
async fn status_of_head(url: &str, length: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tcp.read(&mut answer).await.unwrap();
    let line = String::from_utf8_lossy(&answer[..n]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

async fn a_stripe_event_reaches_every_endpoint_byte_for_byte_and_once() {
    let (_dir, server) = server().await;
    let rx = Receiver::start().await;
    let (_orders, secret) = server
        .create_endpoint("acme", &rx.url("/orders"), json!(["charge.*"]))
        .await;
    let (_audit, _) = server
        .create_endpoint("acme", &rx.url("/audit"), json!(["*"]))
        .await;
    let (_users, _) = server
        .create_endpoint("acme", &rx.url("/users"), json!(["user.*"]))
        .await;
    // The internal app is down for the first attempts.
    rx.script(&[503, 503]);
    let src = source(
        &server,
        json!({"name": "stripe-prod", "verify": {"scheme": "stripe", "secret": "whsec_test"}}),
    )
    .await;
    let url = src["ingest_url"].as_str().unwrap().to_owned();
    assert!(url.contains("/in/"), "{url}");
    assert_eq!(src["event_name"], "/type");
    assert!(
        !src.to_string().contains("whsec_test"),
        "secrets never shown"
    );

    let body = br#"{"id":"evt_1Abc","type":"charge.succeeded","data":{"object":{"amount":2000}}}"#;
    let sig = stripe::sign("whsec_test", now(), body);
    let headers = [
        ("stripe-signature", sig),
        ("content-type", "application/json".to_owned()),
    ];
    let (s, published, _) = post(&url, &headers, body.to_vec()).await;
    assert_eq!(s, 202, "{published}");
    assert_eq!(published["event"], "charge.succeeded");
    let deliveries = published["deliveries"].as_array().unwrap().clone();
    assert_eq!(
        deliveries.len(),
        2,
        "orders and audit, not users: {published}"
    );
    for d in &deliveries {
        server
            .wait_status("acme", d["id"].as_str().unwrap(), "succeeded")
            .await;
    }
    let got = rx.received();
    let ok: Vec<_> = got.iter().filter(|r| r.path != "/users").collect();
    assert!(ok.iter().all(|r| &r.body[..] == body), "exact bytes");
    assert!(
        ok.iter()
            .all(|r| r.headers["content-type"] == "application/json")
    );
    assert!(
        ok.iter()
            .all(|r| !r.headers.contains_key("stripe-signature")),
        "the provider's signature is not passed on"
    );
    // Signed with the endpoint's own secret.
    let to_orders = ok.iter().rfind(|r| r.path == "/orders").unwrap();
    let h = chime_webhooks::Headers::from_pairs(
        to_orders
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap().to_owned())),
    );
    let secret = chime_webhooks::Secret::parse(&secret).unwrap();
    chime_webhooks::verify(&secret, &h, body).unwrap();

    // The provider retries the same delivery: 2xx, nothing new.
    let sig = stripe::sign("whsec_test", now(), body);
    let again = [
        ("stripe-signature", sig),
        ("content-type", "application/json".to_owned()),
    ];
    let (s, repeat, h) = post(&url, &again, body.to_vec()).await;
    assert_eq!(s, 200, "{repeat}");
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(repeat["id"], published["id"]);
    let (_, events) = server.admin("GET", "/v1/tenants/acme/events", None).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    let shown = &events["data"][0];
    assert_eq!(shown["source_id"], src["id"]);
    assert_eq!(shown["data"]["data"]["object"]["amount"], 2000);

    // A bad signature: 401 in words, nothing stored, kept in the rejections.
    let forged = stripe::sign("whsec_other", now(), body);
    let (s, e, _) = post(&url, &[("stripe-signature", forged)], body.to_vec()).await;
    assert_eq!(s, 401, "{e}");
    assert_eq!(e["code"], "invalid_signature");
    let (s, e, _) = post(&url, &[], body.to_vec()).await;
    assert_eq!(s, 401, "{e}");
    let path = format!(
        "/v1/tenants/acme/sources/{}/rejections",
        src["id"].as_str().unwrap()
    );
    let (_, rejected) = server.admin("GET", &path, None).await;
    assert_eq!(rejected["data"].as_array().unwrap().len(), 2, "{rejected}");
    assert_eq!(rejected["data"][0]["code"], "invalid_signature");
    // Too large: 413 before it is read. Only the head is sent: the server answers from the
    // declared length (a client still writing the body would race the closed connection).
    assert_eq!(status_of_head(&url, 2 << 20).await, 413);
    // An unknown key: 404.
    let (s, _, _) = post(&server.url("/in/nope"), &[], b"{}".to_vec()).await;
    assert_eq!(s, 404);
    let (_, events) = server.admin("GET", "/v1/tenants/acme/events", None).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "nothing new");
    server.stop().await;
}

async fn form_bodies_pass_untouched_floods_get_429_and_sources_can_be_chosen() {
    let (_dir, server) = server().await;
    let rx = Receiver::start().await;
    let forms = source(
        &server,
        json!({"name": "forms", "rate_limit_per_s": 2, "verify": {"scheme": "hmac",
            "header": "X-Signature", "algorithm": "sha256", "encoding": "hex",
            "prefix": "sha256=", "secret": "k3y"}}),
    )
    .await;
    let other = source(
        &server,
        json!({"name": "other", "verify": {"scheme": "none"}}),
    )
    .await;
    // Only the forms source reaches this endpoint; API events do not either.
    let (s, only) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({"url": rx.url("/forms"), "sources": [forms["id"]]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{only}");
    let (s, e) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({"url": rx.url("/x"), "sources": ["src_01jdoesnotexist000000000000"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    let body = b"a=1&text=hello+world%21&amount=20.00".to_vec();
    let sig = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let headers = [
        ("x-signature", sig),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    let url = forms["ingest_url"].as_str().unwrap();
    let (s, published, _) = post(url, &headers, body.clone()).await;
    assert_eq!(s, 202, "{published}");
    assert_eq!(
        published["event"], "source.forms",
        "no JSON: the source's name"
    );
    let d = published["deliveries"][0]["id"].as_str().unwrap();
    server.wait_status("acme", d, "succeeded").await;
    let got = rx.wait_count(1).await;
    assert_eq!(&got[0].body[..], &body[..]);
    assert_eq!(
        got[0].headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    // The other source's event and an API event skip that endpoint.
    let (s, p, _) = post(other["ingest_url"].as_str().unwrap(), &[], b"{}".to_vec()).await;
    assert_eq!(s, 202, "{p}");
    assert!(p["deliveries"].as_array().unwrap().is_empty(), "{p}");
    let api = server.publish("acme", "source.forms", json!({})).await;
    assert!(api["deliveries"].as_array().unwrap().is_empty(), "{api}");

    // A flood beyond 2/s: some answered 429 with Retry-After.
    let mut limited = None;
    for _ in 0..6 {
        let (s, e, h) = post(url, &headers, body.clone()).await;
        if s == 429 {
            limited = Some((e, h));
            break;
        }
    }
    let (e, h) = limited.expect("the rate was enforced");
    assert_eq!(e["code"], "rate_limited");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    server.stop().await;
}

async fn github_events_are_named_and_their_headers_passed_on() {
    let (_dir, server) = server().await;
    let rx = Receiver::start().await;
    server
        .create_endpoint("acme", &rx.url("/gh"), json!(["issues.*"]))
        .await;
    let src = source(
        &server,
        json!({"name": "gh", "verify": {"scheme": "github", "secrets": ["old", "new"]}}),
    )
    .await;
    assert_eq!(src["secrets"], 2);
    let body = br#"{"action":"opened","issue":{"number":7}}"#;
    let headers = [
        ("x-hub-signature-256", github::sign("new", body)),
        ("x-github-event", "issues".to_owned()),
        (
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
        ),
        ("content-type", "application/json".to_owned()),
    ];
    let url = src["ingest_url"].as_str().unwrap();
    let (s, p, _) = post(url, &headers, body.to_vec()).await;
    assert_eq!(s, 202, "{p}");
    assert_eq!(p["event"], "issues.opened");
    server
        .wait_status(
            "acme",
            p["deliveries"][0]["id"].as_str().unwrap(),
            "succeeded",
        )
        .await;
    let got = rx.wait_count(1).await;
    assert_eq!(got[0].headers["x-github-event"], "issues");
    assert_eq!(
        got[0].headers["x-github-delivery"],
        "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    );
    assert!(!got[0].headers.contains_key("x-hub-signature-256"));
    let (s, _, _) = post(url, &headers, body.to_vec()).await;
    assert_eq!(s, 200, "the same delivery id: not stored again");
    // The dashboard names the source of an event.
    let mut admin = crate::ui_http::admin_visitor(&server).await;
    let page = admin.get("/ui/t/acme/events").await;
    assert!(
        page.text
            .contains(&format!("from source {}", src["id"].as_str().unwrap())),
        "{}",
        page.text
    );

    // Another tenant sees none of it.
    server.create_tenant("globex").await;
    let (_, t) = server
        .admin("POST", "/v1/tenants/globex/tokens", None)
        .await;
    let token = t["token"].as_str().unwrap();
    let id = src["id"].as_str().unwrap();
    let (s, _) = server
        .call(
            "GET",
            &format!("/v1/tenants/acme/sources/{id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = server
        .call(
            "GET",
            &format!("/v1/tenants/globex/sources/{id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Rotating the URL retires the old one.
    let (s, rotated) = server
        .admin(
            "POST",
            &format!("/v1/tenants/acme/sources/{id}/rotate-url"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    assert_ne!(rotated["ingest_url"], src["ingest_url"]);
    let (s, _, _) = post(url, &headers, body.to_vec()).await;
    assert_eq!(s, 404, "the old URL no longer answers");
    server.stop().await;
}

crate::support::on_both_backends!(
    a_stripe_event_reaches_every_endpoint_byte_for_byte_and_once,
    form_bodies_pass_untouched_floods_get_429_and_sources_can_be_chosen,
    github_events_are_named_and_their_headers_passed_on,
);

/// Requests signed by the providers' own libraries (tests/fixtures/sources, made by
/// generate.py): each verifies; a changed body, a wrong secret, a missing signature and, where
/// the scheme is timestamped, a stale one do not.
#[test]
fn provider_signed_fixtures_verify_and_tampered_ones_do_not() {
    let fixtures: Vec<Value> =
        serde_json::from_str(include_str!("../fixtures/sources/sources.json")).unwrap();
    assert!(fixtures.len() >= 5);
    for f in &fixtures {
        let scheme = f["scheme"].as_str().unwrap();
        let verify = |secret: &str| -> chime::model::SourceVerify {
            serde_json::from_value(json!({"scheme": scheme, "secret": secret})).unwrap()
        };
        let headers = |skip: Option<&str>| -> http::HeaderMap {
            f["headers"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != skip)
                .map(|(k, v)| {
                    (
                        http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        http::HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
                    )
                })
                .collect()
        };
        let secret = f["secret"].as_str().unwrap();
        let body = f["body"].as_str().unwrap().as_bytes();
        let now = f["now"].as_i64().unwrap();
        let what = format!("{scheme} ({})", f["library"]);
        verify(secret)
            .verify(&headers(None), body, now)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut changed = body.to_vec();
        changed.push(b' ');
        assert!(
            verify(secret)
                .verify(&headers(None), &changed, now)
                .is_err(),
            "{what}"
        );
        let wrong = if scheme == "standard" {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        } else {
            "not the secret"
        };
        assert!(
            verify(wrong).verify(&headers(None), body, now).is_err(),
            "{what}"
        );
        let missing = f["signature_header"].as_str().unwrap();
        assert!(
            verify(secret)
                .verify(&headers(Some(missing)), body, now)
                .is_err(),
            "{what}"
        );
        if f["expires"] == true {
            let e = verify(secret)
                .verify(&headers(None), body, now + 3600)
                .unwrap_err();
            assert!(!e.is_empty(), "{what}");
        }
    }
}
