//! Destinations that are not HTTP (issue 20): NATS (core and JetStream), RabbitMQ and Redis
//! streams, against the real servers this machine runs (NATS 4222, RabbitMQ 5672, Redis
//! 6379), each read back by an independent client in the test: every event arrives once per
//! acknowledgement, a refused publish fails the attempt and is retried, an ordered endpoint
//! keeps the order, and a consumer verifies the signature with a Standard Webhooks library.
//! Restarts use servers the test starts itself (nats-server, redis-server) and kills with
//! SIGKILL, so the machine's own brokers are never disturbed.

use std::time::Duration;

use axum::http::StatusCode;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::process::ChildProcess;
use crate::support::{Opts, TestServer, eventually};

/// Retries spread over seconds, so a test can fix the broker between two attempts.
fn opts() -> Opts {
    Opts {
        retry_schedule: "50ms,100ms,200ms,400ms,800ms,1s,1s,2s,2s,4s",
        request_timeout: "3s",
        ..Opts::default()
    }
}

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), opts()).await;
    server.create_tenant("acme").await;
    (dir, server)
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", rand::random::<u64>())
}

/// Adds a broker endpoint; its id and secret.
async fn endpoint(server: &TestServer, body: Value) -> (String, String) {
    let (s, b) = server
        .admin("POST", "/v1/tenants/acme/endpoints", Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        b["id"].as_str().unwrap().to_owned(),
        b["secret"].as_str().unwrap().to_owned(),
    )
}

/// Publishes event `n`; its delivery's id.
async fn publish(server: &TestServer, n: u32) -> String {
    let p = server
        .publish("acme", "order.created", json!({ "n": n }))
        .await;
    p["deliveries"][0]["id"].as_str().unwrap().to_owned()
}

/// Publishes events 1 to 19 after event 0 succeeded, and waits until each has.
async fn publish_the_rest(server: &TestServer) {
    let mut ids = Vec::new();
    for n in 1..20 {
        ids.push(publish(server, n).await);
    }
    for id in &ids {
        server.wait_status("acme", id, "succeeded").await;
    }
}

/// Waits for a delivery's first failed attempt; that attempt.
async fn first_failure(server: &TestServer, delivery: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        server
            .attempts("acme", delivery)
            .await
            .into_iter()
            .find(|a| !a["error_kind"].is_null())
    })
    .await
    .unwrap_or_else(|| panic!("no failed attempt of {delivery}"))
}

/// Verifies a message as a consumer would, with the `standardwebhooks` crate.
fn verify(secret: &str, body: &[u8], headers: &[(String, String)]) {
    let mut map = http::HeaderMap::new();
    for (n, v) in headers {
        map.insert(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(body, &map)
        .unwrap_or_else(|e| panic!("signature does not verify: {e:?} {headers:?}"));
    assert_eq!(
        map["content-type"], "application/json",
        "the content type travels with the message"
    );
}

/// The `n` of each body, in the order given.
fn ns(bodies: &[Vec<u8>]) -> Vec<u64> {
    bodies
        .iter()
        .map(|b| {
            serde_json::from_slice::<Value>(b).unwrap()["data"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

async fn nats_jetstream_acknowledges_retries_and_keeps_order() {
    let (_dir, server) = server().await;
    let subject = unique("chime.test.");
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let (ep, secret) = endpoint(
        &server,
        json!({"url": "nats://127.0.0.1:4222", "ordered": true,
               "destination": {"type": "nats", "subject": subject, "jetstream": true}}),
    )
    .await;

    // No stream takes the subject yet: the publish is refused, and retried.
    let first = publish(&server, 0).await;
    let a = first_failure(&server, &first).await;
    assert_eq!(a["error_kind"], "rejected", "{a}");
    assert!(a["error"].as_str().unwrap().contains("no stream"), "{a}");
    let stream_name = unique("CHIME_TEST_");
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    server.wait_status("acme", &first, "succeeded").await;

    publish_the_rest(&server).await;
    // Read back with a consumer of the test's own.
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(100).messages().await.unwrap();
    let mut bodies = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        let m = m.unwrap();
        let headers: Vec<(String, String)> = m
            .headers
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_string(), v[0].to_string()))
            .collect();
        verify(&secret, &m.payload, &headers);
        bodies.push(m.payload.to_vec());
    }
    assert_eq!(
        ns(&bodies),
        (0..20).collect::<Vec<_>>(),
        "once each, in order"
    );
    assert_eq!(stream.info().await.unwrap().state.messages, 20);
    js.delete_stream(&stream_name).await.unwrap();

    // Core NATS: a subscriber of the test's own gets the message with its headers.
    let core_subject = unique("chime.core.");
    let mut sub = client.subscribe(core_subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let (s, b) = server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{ep}"),
            Some(json!({"destination": {"type": "nats", "subject": core_subject}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["destination"]["type"], "nats", "{b}");
    let id = publish(&server, 99).await;
    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    let headers: Vec<(String, String)> = m
        .headers
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_string(), v[0].to_string()))
        .collect();
    verify(&secret, &m.payload, &headers);
    assert_eq!(ns(&[m.payload.to_vec()]), [99]);
    server.wait_status("acme", &id, "succeeded").await;
    server.stop().await;
}

async fn rabbitmq_confirms_retries_and_keeps_order() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
    let (_dir, server) = server().await;
    let queue = unique("chime-test-");
    let (_, secret) = endpoint(
        &server,
        json!({"url": "amqp://127.0.0.1:5672/%2f", "ordered": true, "events": ["order.created"],
               "auth": {"type": "basic", "username": "guest", "password": "guest"},
               "destination": {"type": "rabbitmq", "exchange": "", "routing_key": queue}}),
    )
    .await;
    // An exchange that does not exist closes the channel: a failure of that endpoint only.
    let (missing, _) = endpoint(
        &server,
        json!({"url": "amqp://127.0.0.1:5672", "events": ["never.sent"],
               "auth": {"type": "basic", "username": "guest", "password": "guest"},
               "destination": {"type": "rabbitmq", "exchange": unique("missing-"), "routing_key": "k"}}),
    )
    .await;

    // No queue is bound to the routing key yet: the mandatory message comes back.
    let first = publish(&server, 0).await;
    let a = first_failure(&server, &first).await;
    assert_eq!(a["error_kind"], "rejected", "{a}");
    assert!(a["error"].as_str().unwrap().contains("no queue"), "{a}");

    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    server.wait_status("acme", &first, "succeeded").await;
    publish_the_rest(&server).await;
    let mut bodies = Vec::new();
    while let Some(m) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let props = &m.delivery.properties;
        let mut headers: Vec<(String, String)> = props
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .iter()
            .map(|(k, v)| match v {
                lapin::types::AMQPValue::LongString(s) => (
                    k.to_string(),
                    String::from_utf8(s.as_bytes().to_vec()).unwrap(),
                ),
                other => panic!("{k}: {other:?}"),
            })
            .collect();
        headers.retain(|(k, _)| k != "content-type");
        headers.push((
            "content-type".into(),
            props.content_type().as_ref().unwrap().to_string(),
        ));
        verify(&secret, &m.delivery.data, &headers);
        bodies.push(m.delivery.data.clone());
    }
    assert_eq!(
        ns(&bodies),
        (0..20).collect::<Vec<_>>(),
        "once each, in order"
    );
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    // The endpoint on a missing exchange: refused by the broker, with its reason.
    let p = server
        .publish("acme", "never.sent", json!({ "n": 1 }))
        .await;
    let deliveries = p["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{p}");
    assert_eq!(deliveries[0]["endpoint_id"], missing.as_str());
    let a = first_failure(&server, deliveries[0]["id"].as_str().unwrap()).await;
    assert_eq!(a["error_kind"], "rejected", "{a}");
    assert!(a["error"].as_str().unwrap().contains("NOT_FOUND"), "{a}");
    server.stop().await;
}

async fn redis_streams_take_each_event_once_in_order() {
    let (_dir, server) = server().await;
    let stream = unique("chime:test:");
    let redis = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    // A key of another type where the stream should be: Redis refuses the XADD.
    let _: () = redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_, secret) = endpoint(
        &server,
        json!({"url": "redis://127.0.0.1:6379/0", "ordered": true,
               "destination": {"type": "redis_stream", "stream": stream, "maxlen": 1000}}),
    )
    .await;
    let first = publish(&server, 0).await;
    let a = first_failure(&server, &first).await;
    assert_eq!(a["error_kind"], "rejected", "{a}");
    assert!(a["error"].as_str().unwrap().contains("WRONGTYPE"), "{a}");
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    server.wait_status("acme", &first, "succeeded").await;
    publish_the_rest(&server).await;
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async::<Vec<(String, Vec<Vec<u8>>)>>(&mut conn)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for (_, fields) in &entries {
        let mut body = None;
        let mut headers = Vec::new();
        for pair in fields.chunks(2) {
            let name = String::from_utf8(pair[0].clone()).unwrap();
            if name == "body" {
                body = Some(pair[1].clone());
            } else {
                headers.push((name, String::from_utf8(pair[1].clone()).unwrap()));
            }
        }
        let body = body.expect("a body field");
        verify(&secret, &body, &headers);
        bodies.push(body);
    }
    assert_eq!(
        ns(&bodies),
        (0..20).collect::<Vec<_>>(),
        "once each, in order"
    );
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    server.stop().await;
}

async fn all_succeed(server: &TestServer, published: &Value) {
    for d in published["deliveries"].as_array().unwrap() {
        server
            .wait_status("acme", d["id"].as_str().unwrap(), "succeeded")
            .await;
    }
}

/// A broker process of the test's own on a free port, restartable on the same port.
struct OwnBroker {
    program: &'static str,
    args: Vec<String>,
    port: u16,
    child: Option<ChildProcess>,
}

impl OwnBroker {
    async fn start(program: &'static str, args: impl Fn(u16) -> Vec<String>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Self {
            program,
            args: args(port),
            port,
            child: None,
        };
        b.run().await;
        b
    }

    async fn run(&mut self) {
        let mut cmd = std::process::Command::new(self.program);
        cmd.args(&self.args).stderr(std::process::Stdio::null());
        self.child = Some(ChildProcess::spawn(self.program, cmd));
        let port = self.port;
        let up = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        assert!(up.is_some(), "{} did not start", self.program);
    }

    async fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.signal("-KILL");
        child.wait_exit(Duration::from_secs(10)).await;
    }
}

async fn broker_restarts_are_survived() {
    let (_dir, server) = server().await;
    let store = tempfile::tempdir().unwrap();
    let store_dir = store.path().display().to_string();
    let mut nats = OwnBroker::start("nats-server", move |port| {
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            store_dir.clone(),
        ]
    })
    .await;
    let mut redis = OwnBroker::start("redis-server", |port| {
        vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ]
    })
    .await;
    let nats_url = format!("nats://127.0.0.1:{}", nats.port);
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let js = async_nats::jetstream::new(async_nats::connect(&nats_url).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "RESTART".into(),
        subjects: vec!["restart.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    endpoint(
        &server,
        json!({"url": nats_url, "destination": {"type": "nats", "subject": "restart.one", "jetstream": true}}),
    )
    .await;
    endpoint(
        &server,
        json!({"url": redis_url, "destination": {"type": "redis_stream", "stream": "restart"}}),
    )
    .await;
    let p = server
        .publish("acme", "order.created", json!({"n": 1}))
        .await;
    all_succeed(&server, &p).await;

    // Both brokers die: attempts fail while they are down, and succeed once they are back,
    // over connections made again.
    nats.kill().await;
    redis.kill().await;
    let p = server
        .publish("acme", "order.created", json!({"n": 2}))
        .await;
    for d in p["deliveries"].as_array().unwrap() {
        let a = first_failure(&server, d["id"].as_str().unwrap()).await;
        assert!(
            ["connect", "timeout"].contains(&a["error_kind"].as_str().unwrap()),
            "{a}"
        );
    }
    nats.run().await;
    redis.run().await;
    all_succeed(&server, &p).await;

    let js = async_nats::jetstream::new(async_nats::connect(&nats_url).await.unwrap());
    let mut s = js.get_stream("RESTART").await.unwrap();
    assert_eq!(
        s.info().await.unwrap().state.messages,
        2,
        "both events, once: the one buffered while the server was away and its retry are one"
    );
    let mut conn = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("restart")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        len, 1,
        "the event published after the restart (the first died with it)"
    );
    server.stop().await;
}

async fn broker_settings_are_checked_and_nothing_is_stored() {
    let (_dir, server) = server().await;
    for (body, says) in [
        (
            json!({"url": "http://127.0.0.1:4222", "destination": {"type": "nats", "subject": "a"}}),
            "nats",
        ),
        (
            json!({"url": "nats://127.0.0.1:4222", "destination": {"type": "nats", "subject": "a.*"}}),
            "wildcards",
        ),
        (
            json!({"url": "amqp://guest:guest@127.0.0.1:5672", "destination":
                {"type": "rabbitmq", "routing_key": "q"}}),
            "credentials",
        ),
        (
            json!({"url": "amqp://127.0.0.1:5672", "destination": {"type": "rabbitmq", "routing_key": ""}}),
            "routing_key",
        ),
        (
            json!({"url": "redis://127.0.0.1:6379", "destination": {"type": "redis_stream", "stream": "s"},
                   "tls": {"insecure_skip_verify": true}}),
            "tls and proxy",
        ),
        (
            json!({"url": "redis://127.0.0.1:6379", "destination": {"type": "redis_stream", "stream": "s"},
                   "auth": {"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1/t",
                            "client_id": "c", "client_secret": "s"}}),
            "OAuth2",
        ),
        (
            json!({"url": "redis://127.0.0.1:6379", "destination": {"type": "kafka", "topic": "t"}}),
            "kafka",
        ),
        (
            json!({"url": "nats://10.1.2.3:4222", "destination": {"type": "nats", "subject": "a"}}),
            "10.1.2.3",
        ),
    ] {
        let (s, b) = server
            .admin("POST", "/v1/tenants/acme/endpoints", Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
        let detail = b["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{says}: {detail}");
    }
    // A change of destination is checked against the URL it would keep.
    let (ep, _) = endpoint(
        &server,
        json!({"url": "redis://127.0.0.1:6379", "destination": {"type": "redis_stream", "stream": "s"}}),
    )
    .await;
    let (s, b) = server
        .admin(
            "PATCH",
            &format!("/v1/tenants/acme/endpoints/{ep}"),
            Some(json!({"destination": null})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (_, list) = server
        .admin("GET", "/v1/tenants/acme/endpoints", None)
        .await;
    let list = list["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["destination"]["type"], "redis_stream");
    server.stop().await;
}

crate::support::on_both_backends!(
    nats_jetstream_acknowledges_retries_and_keeps_order,
    rabbitmq_confirms_retries_and_keeps_order,
    redis_streams_take_each_event_once_in_order,
    broker_restarts_are_survived,
    broker_settings_are_checked_and_nothing_is_stored,
);
