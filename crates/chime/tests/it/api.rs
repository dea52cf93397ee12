//! The REST API's contract: auth and tenant isolation, every error status, idempotency,
//! pagination, and that rejected input changes nothing stored.

use crate::support::{ADMIN, Fixture, Opts, Receiver, TestServer, on_both_backends};
use serde_json::json;

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    (dir, server)
}

async fn tenant_token(server: &TestServer, tenant: &str) -> String {
    let (s, b) = server
        .admin("POST", &format!("/v1/tenants/{tenant}/tokens"), None)
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["tenant_id"], tenant);
    b["token"].as_str().unwrap().to_owned()
}

async fn auth_and_tenant_isolation() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    server.create_tenant("globex").await;
    let acme = tenant_token(&server, "acme").await;

    let (s, b) = server.call("GET", "/healthz", None, None).await;
    assert_eq!((s.as_u16(), b["status"].as_str()), (200, Some("ok")));

    let (s, b) = server.call("GET", "/v1/tenants", None, None).await;
    assert_eq!(s, 401);
    assert_eq!(b["code"], "unauthorized");
    assert!(b["detail"].as_str().unwrap().contains("Bearer"));
    let (s, _) = server
        .call("GET", "/v1/tenants", Some("not-a-token"), None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = server
        .call("GET", "/v1/tenants/acme/endpoints", Some("wrong"), None)
        .await;
    assert_eq!(s, 401);

    // A tenant token sees its tenant and nothing else.
    let (s, b) = server
        .call("GET", "/v1/tenants/acme", Some(&acme), None)
        .await;
    assert_eq!((s.as_u16(), b["id"].as_str()), (200, Some("acme")));
    for (method, path) in [
        ("GET", "/v1/tenants/globex"),
        ("GET", "/v1/tenants/globex/endpoints"),
        ("GET", "/v1/tenants/globex/events"),
        ("GET", "/v1/tenants/globex/deliveries"),
        ("GET", "/v1/tenants/nonexistent/events"),
    ] {
        let (s, b) = server.call(method, path, Some(&acme), None).await;
        assert_eq!(s, 403, "{method} {path}: {b}");
        assert_eq!(b["code"], "forbidden");
    }
    let (s, _) = server
        .call(
            "POST",
            "/v1/tenants/globex/events",
            Some(&acme),
            Some(json!({"event": "x", "data": 1})),
        )
        .await;
    assert_eq!(s, 403);
    // Admin-only operations.
    let (s, _) = server.call("GET", "/v1/tenants", Some(&acme), None).await;
    assert_eq!(s, 403);
    let (s, _) = server
        .call(
            "POST",
            "/v1/tenants",
            Some(&acme),
            Some(json!({"id": "evil"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = server
        .call("POST", "/v1/tenants/acme/tokens", Some(&acme), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = server
        .call("DELETE", "/v1/tenants/acme", Some(&acme), None)
        .await;
    assert_eq!(s, 403);

    // The tenant token works for its own resources, and what globex publishes stays invisible.
    let rx = Receiver::start().await;
    let (s, b) = server
        .call(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(&acme),
            Some(json!({"url": rx.url("/a")})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    server
        .publish("globex", "secret.thing", json!({"x": 1}))
        .await;
    let (s, b) = server
        .call(
            "POST",
            "/v1/tenants/acme/events",
            Some(&acme),
            Some(json!({"event": "mine", "data": {}})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (_, events) = server
        .call("GET", "/v1/tenants/acme/events", Some(&acme), None)
        .await;
    let names: Vec<_> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(names, vec![json!("mine")]);

    // Deleting a tenant revokes its tokens.
    let (s, _) = server.admin("DELETE", "/v1/tenants/acme", None).await;
    assert_eq!(s, 204);
    let (s, _) = server
        .call("GET", "/v1/tenants/acme", Some(&acme), None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = server.admin("GET", "/v1/tenants/acme", None).await;
    assert_eq!(s, 404);
    server.stop().await;
}

async fn each_error_status_has_the_documented_shape() {
    let opts = Opts {
        max_body_bytes: 4096,
        ..Opts::default()
    };
    let fx = Fixture::start(opts, "/h").await;
    let (server, ep) = (&fx.server, &fx.endpoint);

    let raw = |method: &str, path: &str, body: &str| {
        server
            .http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let check = |status: u16, code: &str, resp: reqwest::Response| {
        let code = code.to_owned();
        async move {
            let got = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(got, status, "{body}");
            assert_eq!(body["code"], code.as_str(), "{body}");
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{body}"
            );
        }
    };

    check(
        400,
        "malformed_json",
        raw("POST", "/v1/tenants/acme/events", "{\"event\": ")
            .await
            .unwrap(),
    )
    .await;
    check(
        400,
        "malformed_json",
        raw("POST", "/v1/tenants", "not json").await.unwrap(),
    )
    .await;
    check(
        404,
        "not_found",
        raw("GET", "/v1/tenants/nope", "").await.unwrap(),
    )
    .await;
    check(
        404,
        "not_found",
        raw("GET", "/v1/tenants/acme/endpoints/ep_nope", "")
            .await
            .unwrap(),
    )
    .await;
    check(
        404,
        "not_found",
        raw("GET", "/v1/tenants/acme/events/evt_nope", "")
            .await
            .unwrap(),
    )
    .await;
    check(
        404,
        "not_found",
        raw("GET", "/v1/tenants/acme/deliveries/dlv_nope/attempts", "")
            .await
            .unwrap(),
    )
    .await;
    check(
        404,
        "not_found",
        raw(
            "POST",
            "/v1/tenants/nope/events",
            r#"{"event":"a","data":1}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    check(
        404,
        "not_found",
        raw("GET", "/v2/whatever", "").await.unwrap(),
    )
    .await;
    check(
        405,
        "method_not_allowed",
        raw("PUT", "/v1/tenants", "").await.unwrap(),
    )
    .await;
    check(
        409,
        "conflict",
        raw("POST", "/v1/tenants", r#"{"id":"acme"}"#)
            .await
            .unwrap(),
    )
    .await;
    let big = format!(r#"{{"event":"a","data":"{}"}}"#, "x".repeat(5000));
    check(
        413,
        "payload_too_large",
        raw("POST", "/v1/tenants/acme/events", &big).await.unwrap(),
    )
    .await;
    check(
        413,
        "payload_too_large",
        raw("POST", "/v1/tenants/acme/endpoints", &big)
            .await
            .unwrap(),
    )
    .await;
    for (path, body) in [
        (
            "/v1/tenants/acme/endpoints",
            r#"{"url":"ftp://example.com/"}"#,
        ),
        ("/v1/tenants/acme/endpoints", r#"{"url":"not a url"}"#),
        (
            "/v1/tenants/acme/endpoints",
            r#"{"url":"https://example.com","events":[]}"#,
        ),
        (
            "/v1/tenants/acme/endpoints",
            r#"{"url":"https://example.com","events":["a*b*"]}"#,
        ),
        (
            "/v1/tenants/acme/endpoints",
            r#"{"url":"https://example.com","secret":"whsec_short"}"#,
        ),
        (
            "/v1/tenants/acme/endpoints",
            r#"{"url":"https://example.com","colour":"red"}"#,
        ),
        ("/v1/tenants/acme/events", r#"{"event":"","data":1}"#),
        (
            "/v1/tenants/acme/events",
            r#"{"event":"has space","data":1}"#,
        ),
        ("/v1/tenants/acme/events", r#"{"event":"a"}"#),
        ("/v1/tenants/acme/events", r#"{"event":5,"data":1}"#),
        ("/v1/tenants", r#"{"id":"Bad Id"}"#),
        ("/v1/tenants", r#"{"id":"_chime"}"#),
    ] {
        let resp = raw("POST", path, body).await.unwrap();
        let got = resp.status().as_u16();
        let b: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(got, 422, "{path} {body}: {b}");
        assert_eq!(b["code"], "invalid_request", "{b}");
    }
    check(
        422,
        "invalid_request",
        raw("GET", "/v1/tenants/acme/deliveries?status=lost", "")
            .await
            .unwrap(),
    )
    .await;
    check(
        422,
        "invalid_request",
        raw("GET", "/v1/tenants/acme/events?limit=0", "")
            .await
            .unwrap(),
    )
    .await;
    check(
        422,
        "invalid_request",
        raw("GET", "/v1/tenants/acme/events?cursor=abc", "")
            .await
            .unwrap(),
    )
    .await;

    // A rejected PATCH changes nothing: the valid field in it is not applied either.
    let before = server
        .admin("GET", &format!("/v1/tenants/acme/endpoints/{ep}"), None)
        .await
        .1;
    let resp = raw(
        "PATCH",
        &format!("/v1/tenants/acme/endpoints/{ep}"),
        r#"{"description":"new","url":"gopher://x"}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let after = server
        .admin("GET", &format!("/v1/tenants/acme/endpoints/{ep}"), None)
        .await
        .1;
    assert_eq!(before, after);
    // Rejected events store nothing.
    let (_, events) = server.admin("GET", "/v1/tenants/acme/events", None).await;
    assert!(events["data"].as_array().unwrap().is_empty(), "{events}");
    fx.stop().await;
}

async fn idempotency_key_returns_the_first_result_and_stores_nothing_new() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let (server, rx) = (&fx.server, &fx.rx);
    let send = |body: serde_json::Value| {
        server
            .http
            .post(server.url("/v1/tenants/acme/events"))
            .bearer_auth(ADMIN)
            .header("idempotency-key", "order-1234-created")
            .json(&body)
            .send()
    };
    let first = send(json!({"event": "order.created", "data": {"id": 1234}}))
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send(json!({"event": "order.created", "data": {"id": 1234}}))
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first, again);
    // The same key with another body is a conflict, not a silent replay.
    let other = send(json!({"event": "order.created", "data": {"id": 9}}))
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 409);

    rx.wait_count(1).await;
    let (_, events) = server.admin("GET", "/v1/tenants/acme/events", None).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    assert_eq!(events["data"][0]["idempotency_key"], "order-1234-created");
    let (_, deliveries) = server
        .admin("GET", "/v1/tenants/acme/deliveries", None)
        .await;
    assert_eq!(deliveries["data"].as_array().unwrap().len(), 1);
    fx.stop().await;
}

async fn lists_paginate_newest_first_and_filter() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    for i in 0..7 {
        let name = if i % 2 == 0 { "even" } else { "odd" };
        server.publish("acme", name, json!({ "i": i })).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants/acme/events?limit=3&cursor={c}"),
            None => "/v1/tenants/acme/events?limit=3".to_owned(),
        };
        let (s, page) = server.admin("GET", &path, None).await;
        assert_eq!(s, 200, "{page}");
        for e in page["data"].as_array().unwrap() {
            seen.push(e["data"]["i"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec![6, 5, 4, 3, 2, 1, 0]);
    let (_, odd) = server
        .admin("GET", "/v1/tenants/acme/events?event=odd", None)
        .await;
    let odd: Vec<_> = odd["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(odd, vec![5, 3, 1]);

    let (s, ev) = server
        .admin("GET", "/v1/tenants/acme/events?limit=1", None)
        .await;
    assert_eq!(s, 200);
    let id = ev["data"][0]["id"].as_str().unwrap();
    let (s, one) = server
        .admin("GET", &format!("/v1/tenants/acme/events/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(one["data"], json!({"i": 6}));
    assert!(one["deliveries"].as_array().unwrap().is_empty());
    server.stop().await;
}

async fn endpoint_lifecycle_and_secret() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    let (s, created) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({"url": "https://example.com/hook", "description": "orders", "events": ["order.*"]})),
        )
        .await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let (_, shown) = server
        .admin("GET", &format!("/v1/tenants/acme/endpoints/{id}"), None)
        .await;
    assert!(
        shown.get("secret").is_none(),
        "secrets are not in ordinary reads"
    );
    let (_, s2) = server
        .admin(
            "GET",
            &format!("/v1/tenants/acme/endpoints/{id}/secret"),
            None,
        )
        .await;
    assert_eq!(s2["secret"], secret);
    let (s, patched) = server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{id}"),
            Some(json!({"events": ["*"], "description": "all"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(patched["events"], json!(["*"]));
    assert_eq!(patched["url"], "https://example.com/hook");
    let (_, list) = server
        .admin("GET", "/v1/tenants/acme/endpoints", None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (s, _) = server
        .admin("DELETE", &format!("/v1/tenants/acme/endpoints/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = server
        .admin("DELETE", &format!("/v1/tenants/acme/endpoints/{id}"), None)
        .await;
    assert_eq!(s, 404);

    // Generated tenant ids.
    let (s, t) = server
        .admin("POST", "/v1/tenants", Some(json!({"name": "Initech"})))
        .await;
    assert_eq!(s, 201);
    assert!(t["id"].as_str().unwrap().starts_with("ten_"));
    assert_eq!(t["name"], "Initech");
    server.stop().await;
}

/// A test event goes to its one endpoint, subscribed or not, and nowhere else.
async fn a_test_event_reaches_only_its_endpoint() {
    let (_dir, server) = server().await;
    let rx = Receiver::start().await;
    server.create_tenant("acme").await;
    server.create_tenant("globex").await;
    let (users, _) = server
        .create_endpoint("acme", &rx.url("/users"), json!(["user.*"]))
        .await;
    let (_all, _) = server
        .create_endpoint("acme", &rx.url("/all"), json!(["*"]))
        .await;
    let path = format!("/v1/tenants/acme/endpoints/{users}/test");
    let (s, b) = server
        .admin(
            "POST",
            &path,
            Some(json!({"event": "order.created", "data": {"id": 1}})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["event"], "order.created");
    assert_eq!(b["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(b["deliveries"][0]["endpoint_id"], users.as_str());
    let delivery = b["deliveries"][0]["id"].as_str().unwrap().to_owned();
    server.wait_status("acme", &delivery, "succeeded").await;
    // Without a body: chime.test with {"test": true}.
    let (s, b) = server.admin("POST", &path, None).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["event"], "chime.test");
    let second = b["deliveries"][0]["id"].as_str().unwrap().to_owned();
    server.wait_status("acme", &second, "succeeded").await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "nothing went to the other endpoint");
    assert!(got.iter().all(|r| r.path == "/users"));
    assert_eq!(
        &got[0].body[..],
        br#"{"event":"order.created","data":{"id":1}}"#
    );
    assert!(got[0].headers.contains_key("webhook-signature"));
    assert_eq!(
        &got[1].body[..],
        br#"{"event":"chime.test","data":{"test":true}}"#
    );

    // Another tenant's token, an unknown endpoint, a disabled one, bad input.
    let globex = tenant_token(&server, "globex").await;
    let (s, _) = server.call("POST", &path, Some(&globex), None).await;
    assert_eq!(s, 403);
    let (s, _) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints/ep_01jdoesnotexist0000000000/test",
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, b) = server
        .admin("POST", &path, Some(json!({"event": "Not A Name!"})))
        .await;
    assert_eq!(
        (s.as_u16(), b["code"].as_str()),
        (422, Some("invalid_request"))
    );
    let (s, _) = server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{users}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = server.admin("POST", &path, None).await;
    assert_eq!((s.as_u16(), b["code"].as_str()), (409, Some("conflict")));
    let (_, events) = server.admin("GET", "/v1/tenants/acme/events", None).await;
    assert_eq!(
        events["data"].as_array().unwrap().len(),
        2,
        "refusals stored nothing"
    );
    server.stop().await;
}

// Every test above runs twice: on SQLite (`sqlite::…`) and on PostgreSQL (`postgres::…`).
on_both_backends!(
    a_test_event_reaches_only_its_endpoint,
    auth_and_tenant_isolation,
    each_error_status_has_the_documented_shape,
    idempotency_key_returns_the_first_result_and_stores_nothing_new,
    lists_paginate_newest_first_and_filter,
    endpoint_lifecycle_and_secret,
);
