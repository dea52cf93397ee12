//! Input a hostile tenant or a careless admin controls: payload filters, JSON Schemas and the
//! JSON of the body itself. Each is refused with `{code, detail}` when its cost cannot be
//! bounded, and a refused request stores nothing.

use crate::support::{ADMIN, Opts, Receiver, TestServer, on_both_backends};
use serde_json::{Value, json};

async fn server() -> (tempfile::TempDir, TestServer) {
    server_with(Opts::default()).await
}

async fn server_with(opts: Opts) -> (tempfile::TempDir, TestServer) {
    crate::support::cap_this_process_memory();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), opts).await;
    (dir, server)
}

/// POSTs `body` as it is (not re-serialized), with the admin token.
async fn post_raw(server: &TestServer, path: &str, body: String) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn event_count(server: &TestServer, tenant: &str) -> usize {
    let (s, b) = server
        .admin("GET", &format!("/v1/tenants/{tenant}/events"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"].as_array().unwrap().len()
}

fn nested_arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

async fn filters_whose_cost_is_unbounded_are_refused() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    let rx = Receiver::start().await;
    for filter in [
        "$..*..*..*..*..*",
        "$..*..*",
        "$..a[?@..b]",
        "$[0,0,0,0,0,0,0,0][0,0,0,0,0,0,0,0][0,0]",
    ] {
        let (s, b) = server
            .admin(
                "POST",
                "/v1/tenants/acme/endpoints",
                Some(json!({"url": rx.url("/h"), "filter": filter})),
            )
            .await;
        assert_eq!(s, 422, "{filter}: {b}");
        assert_eq!(b["code"], "invalid_request");
        assert!(b["detail"].as_str().unwrap().contains("filter"), "{b}");
    }
    let (s, b) = server
        .admin("GET", "/v1/tenants/acme/endpoints", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"], json!([]), "nothing was saved");

    // The reported event, 120 nested arrays, is refused before any filter sees it.
    let body = format!(r#"{{"event":"x","data":{}}}"#, nested_arrays(120));
    let (s, b) = post_raw(&server, "/v1/tenants/acme/events", body).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "malformed_json");
    assert!(b["detail"].as_str().unwrap().contains("nested"), "{b}");
    assert_eq!(event_count(&server, "acme").await, 0);
    server.stop().await;
}

/// Filters are evaluated by the publisher, not the store: a new or changed filter is asked
/// for by the store, evaluated, and the publish goes through with the right verdicts.
async fn filters_follow_changes_between_publishes() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    let rx = Receiver::start().await;
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({"url": rx.url("/big"), "filter": "$[?@.data.amount > 100]"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let ep = b["id"].as_str().unwrap().to_owned();
    let small = server.publish("acme", "order", json!({"amount": 5})).await;
    assert_eq!(small["deliveries"], json!([]), "{small}");
    let big = server
        .publish("acme", "order", json!({"amount": 500}))
        .await;
    assert_eq!(big["deliveries"].as_array().unwrap().len(), 1, "{big}");

    // The filter changes: the next publish uses the new one.
    let (s, b) = server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{ep}"),
            Some(json!({"filter": "$[?@.data.amount < 10]"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let small = server.publish("acme", "order", json!({"amount": 5})).await;
    assert_eq!(small["deliveries"].as_array().unwrap().len(), 1, "{small}");
    let big = server
        .publish("acme", "order", json!({"amount": 500}))
        .await;
    assert_eq!(big["deliveries"], json!([]), "{big}");

    // One descendant segment is allowed, over data as deep as chime accepts.
    let (s, b) = server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{ep}"),
            Some(json!({"filter": "$..*[?@ == 'needle']"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let deep = format!(
        r#"{{"event":"deep","data":{}"needle"{}}}"#,
        "[".repeat(60),
        "]".repeat(60)
    );
    let (s, b) = post_raw(&server, "/v1/tenants/acme/events", deep).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["deliveries"].as_array().unwrap().len(), 1, "{b}");
    rx.wait_count(3).await;
    server.stop().await;
}

/// `levels` levels of `anyOf` over two `$ref`s to the level below, ending in a string.
fn any_of_tower(levels: usize) -> Value {
    let mut defs = serde_json::Map::new();
    defs.insert("l0".into(), json!({"type": "string", "minLength": 2}));
    for l in 1..=levels {
        let below = format!("#/$defs/l{}", l - 1);
        defs.insert(
            format!("l{l}"),
            json!({"anyOf": [{"$ref": below}, {"$ref": below}]}),
        );
    }
    json!({"$defs": defs, "$ref": format!("#/$defs/l{levels}")})
}

async fn schemas_whose_validation_is_unbounded_are_refused() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    for (name, schema) in [
        ("tower22", any_of_tower(22)),
        ("tower20", any_of_tower(20)),
        ("itself", json!({"$ref": "#"})),
        ("remote", json!({"$ref": "https://example.com/s.json"})),
        (
            "doubling",
            json!({"$defs": {
                "x": {"anyOf": [{"$ref": "#/$defs/y"}, {"$ref": "#/$defs/y"}]},
                "y": {"items": {"$ref": "#/$defs/x"}}
            }, "$ref": "#/$defs/x"}),
        ),
    ] {
        let (s, b) = server
            .admin(
                "POST",
                "/v1/event-types",
                Some(json!({"name": name, "schema": schema})),
            )
            .await;
        assert_eq!(s, 422, "{name}: {b}");
        assert_eq!(b["code"], "invalid_request");
    }
    // The reported publish of "x" to such a type: the type was never saved, so it is
    // accepted without a schema; a bounded schema still validates.
    let (s, b) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "tower5", "schema": any_of_tower(5)})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/events",
            Some(json!({"event": "tower5", "data": "x"})),
        )
        .await;
    assert_eq!(s, 422, "too short for minLength 2: {b}");
    server.publish("acme", "tower5", json!("xy")).await;
    // A backtracking pattern runs in linear time (the `regex` engine).
    let (s, b) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "redos", "schema": {"type": "string", "pattern": "^(a+)+$"}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/events",
            Some(json!({"event": "redos", "data": format!("{}!", "a".repeat(50_000))})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(event_count(&server, "acme").await, 1);

    // Large data against a multiplying (but accepted) schema: every value fails every branch.
    // Listing all violations once took 24 GB for a 1 MB event; now the first is reported.
    let mut tower = any_of_tower(4);
    tower["$defs"]["l0"] = json!({"type": ["number", "array"], "maximum": 0});
    tower["$defs"]["all"] =
        json!({"allOf": [{"$ref": "#/$defs/l4"}], "items": {"$ref": "#/$defs/all"}});
    tower["$ref"] = json!("#/$defs/all");
    let (s, b) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "wide", "schema": tower})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let row = format!("[{}]", vec!["1"; 1000].join(","));
    let data = format!("[{}]", vec![row.as_str(); 200].join(","));
    let body = format!(r#"{{"event":"wide","data":{data}}}"#);
    let (s, b) = post_raw(&server, "/v1/tenants/acme/events", body).await;
    assert_eq!(s, 422, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("/0/0"), "{b}");
    // Too much data for the schema's cost: refused before validating.
    let data = format!("[{}]", vec![row.as_str(); 500].join(","));
    let (s, b) = post_raw(
        &server,
        "/v1/tenants/acme/events",
        format!(r#"{{"event":"wide","data":{data}}}"#),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("too large to validate"),
        "{b}"
    );
    assert_eq!(event_count(&server, "acme").await, 1);
    server.stop().await;
}

async fn json_outside_what_chime_accepts_is_refused_everywhere() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    let (s, b) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "payment", "schema": {
                "type": "object", "required": ["amount"],
                "properties": {"amount": {"type": "number", "maximum": 100}}
            }})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let deep_pad = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for data in [
        r#"{"amount": 5000}"#.to_owned(),
        r#"{"amount": 5000, "pad": 1e999}"#.to_owned(),
        format!(r#"{{"amount": 5000, "pad": {deep_pad}}}"#),
        r#"{"amount": 5, "amount": 5000}"#.to_owned(),
        r#"{"amount": 5, "pad": "\ud800"}"#.to_owned(),
        format!(r#"{{"amount": 5, "pad": {}}}"#, "9".repeat(100_000)),
        format!(r#"{{"amount": 5, "pad": {}}}"#, nested_arrays(100_000)),
    ] {
        let body = format!(r#"{{"event":"payment","data":{data}}}"#);
        let (s, b) = post_raw(&server, "/v1/tenants/acme/events", body).await;
        assert!(s == 400 || s == 422, "{s} {b} for {:.80}", data);
        assert!(b["code"].is_string() && b["detail"].is_string(), "{b}");
    }
    assert_eq!(event_count(&server, "acme").await, 0, "nothing was stored");
    // The same rule holds for every body, not only events.
    let (s, b) = post_raw(&server, "/v1/tenants", r#"{"id": "x", "id": "y"}"#.into()).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("malformed_json")),
        "{b}"
    );
    let (s, b) = post_raw(
        &server,
        "/v1/tenants",
        format!(r#"{{"id": "deep", "name": {}}}"#, nested_arrays(65)),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("malformed_json")),
        "{b}"
    );
    // What is accepted: paired surrogates, 1e-999 (reads as 0), the deepest nesting allowed.
    let ok = format!(
        r#"{{"event":"payment","data":{{"amount":1,"s":"\ud83d\ude00","t":1e-999,"u":{}}}}}"#,
        nested_arrays(62)
    );
    let (s, b) = post_raw(&server, "/v1/tenants/acme/events", ok).await;
    assert_eq!(s, 202, "{b}");
    server.stop().await;
}

on_both_backends!(
    filters_whose_cost_is_unbounded_are_refused,
    filters_follow_changes_between_publishes,
    schemas_whose_validation_is_unbounded_are_refused,
    json_outside_what_chime_accepts_is_refused_everywhere,
);

/// Custom endpoint headers hold visible ASCII only, under a short token name.
#[tokio::test]
async fn custom_headers_are_checked_as_documented() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    for headers in [
        json!({"X-A": "ü"}),
        json!({"X-A": "a\u{7f}b"}),
        json!({"X-A": "a\nb"}),
        json!({ "x".repeat(10_002): "1" }),
        json!({"X A": "1"}),
        json!({"X-A": "1", "x-a": "2"}),
    ] {
        let (s, b) = server
            .admin(
                "POST",
                "/v1/tenants/acme/endpoints",
                Some(json!({"url": "https://example.com/h", "headers": headers})),
            )
            .await;
        assert_eq!(s, 422, "{headers}: {b}");
        assert_eq!(b["code"], "invalid_request");
        assert!(b["detail"].as_str().unwrap().len() < 400, "{b}");
    }
    let (s, b) = server
        .admin(
            "POST",
            "/v1/tenants/acme/endpoints",
            Some(json!({"url": "https://example.com/h", "headers": {"X-Api-Key": "k 1\t~"}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, listed) = server
        .admin("GET", "/v1/tenants/acme/endpoints", None)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// Writes `request` on a fresh connection and reads until the server closes it.
async fn raw_exchange(server: &TestServer, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = conn.read_to_end(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the server answers and closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn status_and_body(answer: &str) -> (u16, Value) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Requests HTTP itself forbids get `{code, detail}` like every other refusal, not hyper's
/// empty answer.
#[tokio::test]
async fn malformed_http_is_refused_with_code_and_detail() {
    let (_dir, server) = server().await;
    server.create_tenant("acme").await;
    let publish = |key: &[u8]| {
        let mut r =
            b"POST /v1/tenants/acme/events HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a".to_vec();
        r.extend_from_slice(key);
        r.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\n{}");
        r
    };
    let many_headers: String = (0..2000).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (publish(b"\0b"), 400, "malformed_request"),
        (publish(b"\x7fb"), 400, "malformed_request"),
        (
            b"GET /v1/tenants/\xff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let answer = raw_exchange(&server, &request).await;
        let (got, body) = status_and_body(&answer);
        assert_eq!(got, status, "{answer}");
        assert_eq!(body["code"], code, "{answer}");
        assert!(body["detail"].is_string(), "{answer}");
    }
    assert_eq!(event_count(&server, "acme").await, 0);
    server.stop().await;
}

/// A client that sends half a request head is disconnected at the header deadline, and one
/// that stops sending its body is answered 408; neither stores anything.
#[tokio::test]
async fn slow_clients_are_cut_off() {
    let (_dir, server) = server_with(Opts {
        header_timeout: "1s",
        body_timeout: "1s",
        ..Opts::default()
    })
    .await;
    server.create_tenant("acme").await;

    let answer = raw_exchange(
        &server,
        b"POST /v1/tenants/acme/events HTTP/1.1\r\nHost: x\r\nContent-Le",
    )
    .await;
    assert_eq!(answer, "", "a half head is closed without an answer");

    let mut request = format!(
        "POST /v1/tenants/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(br#"{"event":""#);
    let answer = raw_exchange(&server, &request).await;
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 408, "{answer}");
    assert_eq!(body["code"], "request_timeout");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(event_count(&server, "acme").await, 0);
    server.stop().await;
}

/// Past `max_connections`, a new connection is answered 503 at once; when a connection
/// closes, its place is free again.
#[tokio::test]
async fn connections_past_the_cap_are_refused_with_503() {
    let (_dir, server) = server_with(Opts {
        max_connections: 8,
        header_timeout: "60s",
        ..Opts::default()
    })
    .await;
    // The test's own client may hold pooled connections: hold the rest with idle ones.
    let mut held = Vec::new();
    let answer = loop {
        let conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        held.push(conn);
        assert!(held.len() <= 9, "the cap of 8 was not enforced");
        let mut probe = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = probe.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("HTTP/1.1 503") {
            break text;
        }
    };
    let (_, body) = status_and_body(&answer);
    assert_eq!(body["code"], "unavailable", "{answer}");
    // Free one place: a new connection is served again once the server sees it closed.
    held.pop();
    let client = reqwest::Client::new();
    loop {
        let resp = client.get(server.url("/healthz")).send().await;
        if resp.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::task::yield_now().await;
    }
    drop(held);
    server.stop().await;
}
