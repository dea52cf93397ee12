//! Reaching receivers the way they need (issue 20): HTTPS verified against the system's roots
//! or the endpoint's own CA, each TLS failure named; mutual TLS; HTTP basic and OAuth2
//! client credentials; an egress proxy (a real tinyproxy) for http and https targets. Every
//! receiver, token server and proxy is a real process or socket on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::process::ChildProcess;
use crate::support::tls::{Pki, TlsReceiver};
use crate::support::{Opts, Receiver, TestServer};

async fn server(opts: Opts) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), opts).await;
    server.create_tenant("acme").await;
    (dir, server)
}

/// Adds an endpoint with `extra` settings; its id.
async fn endpoint(server: &TestServer, url: &str, extra: Value) -> String {
    let mut body = json!({ "url": url });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (s, b) = server
        .admin("POST", "/v1/tenants/acme/endpoints", Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

/// Publishes one event; the delivery to `endpoint`.
async fn publish_to(server: &TestServer, endpoint: &str) -> String {
    let published = server
        .publish("acme", "order.created", json!({"n": 1}))
        .await;
    crate::support::delivery_to(&published, endpoint)
}

/// The first attempt of a delivery that ended `failed`.
async fn failed_attempt(server: &TestServer, delivery: &str) -> Value {
    server.wait_status("acme", delivery, "failed").await;
    server.attempts("acme", delivery).await.pop().unwrap()
}

async fn https_is_verified_and_each_failure_named() {
    let pki = Pki::new("chime test CA");
    let good = TlsReceiver::start(&pki.leaf(&["localhost"], false), None).await;
    let wrong_host = TlsReceiver::start(&pki.leaf(&["other.example"], false), None).await;
    let expired = TlsReceiver::start(&pki.leaf(&["localhost"], true), None).await;
    let (_dir, server) = server(Opts::default()).await;
    let ca = json!({"tls": {"ca_pem": pki.ca_pem()}});

    let ok = endpoint(&server, &good.url("localhost", "/hook"), ca.clone()).await;
    let unknown = endpoint(&server, &good.url("localhost", "/unknown"), json!({})).await;
    let named = endpoint(&server, &wrong_host.url("localhost", "/h"), ca.clone()).await;
    let old = endpoint(&server, &expired.url("localhost", "/h"), ca.clone()).await;

    let published = server
        .publish("acme", "order.created", json!({"n": 1}))
        .await;
    let of = |ep: &str| {
        published["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["endpoint_id"] == ep)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    server.wait_status("acme", &of(&ok), "succeeded").await;
    let got = good.wait_count(1).await;
    assert!(got[0].headers.contains_key("webhook-signature"));
    assert_eq!(
        &got[0].body[..],
        br#"{"event":"order.created","data":{"n":1}}"#
    );

    for (ep, why) in [
        (&unknown, "unknown issuer"),
        (&named, "not valid for the endpoint's host name"),
        (&old, "expired"),
    ] {
        let a = failed_attempt(&server, &of(ep)).await;
        assert_eq!(a["error_kind"], "tls", "{a}");
        let error = a["error"].as_str().unwrap();
        assert!(error.contains(why), "{why}: {error}");
    }
    assert_eq!(
        good.received().len(),
        1,
        "the unverified endpoint got nothing"
    );

    // Skipping verification works, and says so wherever the endpoint is shown.
    let insecure = endpoint(
        &server,
        &expired.url("localhost", "/insecure"),
        json!({"tls": {"insecure_skip_verify": true}}),
    )
    .await;
    let (_, shown) = server
        .admin(
            "GET",
            &format!("/v1/tenants/acme/endpoints/{insecure}"),
            None,
        )
        .await;
    assert!(
        shown["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not verified"),
        "{shown}"
    );
    let d = publish_to(&server, &insecure).await;
    server.wait_status("acme", &d, "succeeded").await;
    server.stop().await;
}

async fn mutual_tls_presents_the_endpoints_client_certificate() {
    let pki = Pki::new("receiver CA");
    let clients = Pki::new("client CA");
    let receiver =
        TlsReceiver::start(&pki.leaf(&["localhost"], false), Some(&clients.ca_pem())).await;
    let client = clients.leaf(&["chime-client"], false);
    let (_dir, server) = server(Opts::default()).await;
    let with_cert = endpoint(
        &server,
        &receiver.url("localhost", "/mtls"),
        json!({"tls": {"ca_pem": pki.ca_pem(), "client_cert_pem": client.cert,
            "client_key_pem": client.key}}),
    )
    .await;
    let without = endpoint(
        &server,
        &receiver.url("localhost", "/none"),
        json!({"tls": {"ca_pem": pki.ca_pem()}}),
    )
    .await;
    let published = server
        .publish("acme", "order.created", json!({"n": 2}))
        .await;
    for d in published["deliveries"].as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        if d["endpoint_id"] == with_cert.as_str() {
            server.wait_status("acme", id, "succeeded").await;
        } else {
            assert_eq!(d["endpoint_id"], without.as_str());
            let a = failed_attempt(&server, id).await;
            assert_eq!(a["error_kind"], "tls", "{a}");
        }
    }
    assert_eq!(receiver.received().len(), 1);
    // The key is write-only: answers say a certificate is set, never the key.
    let (_, shown) = server
        .admin(
            "GET",
            &format!("/v1/tenants/acme/endpoints/{with_cert}"),
            None,
        )
        .await;
    assert_eq!(shown["tls"]["client_certificate"], true);
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");
    server.stop().await;
}

/// A token endpoint that counts its calls, checks the client's credentials, and can be told
/// to refuse.
struct TokenServer {
    addr: SocketAddr,
    calls: Arc<AtomicU32>,
}

impl TokenServer {
    async fn start(refuse: bool) -> Self {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let calls = counted.clone();
                async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    // client_id "hooks", secret "s3cret" as HTTP Basic (RFC 6749 §2.3.1).
                    let basic = headers["authorization"].to_str().unwrap();
                    assert_eq!(basic, "Basic aG9va3M6czNjcmV0");
                    assert!(body.contains("grant_type=client_credentials"), "{body}");
                    assert!(body.contains("scope=deliveries"), "{body}");
                    if refuse {
                        return (
                            StatusCode::UNAUTHORIZED,
                            r#"{"error":"invalid_client"}"#.to_owned(),
                        );
                    }
                    (
                        StatusCode::OK,
                        json!({"access_token": format!("tok-{n}"), "token_type": "Bearer",
                                "expires_in": 3600})
                        .to_string(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, calls }
    }

    fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

async fn basic_and_oauth2_credentials_are_sent() {
    let rx = Receiver::start().await;
    let tokens = TokenServer::start(false).await;
    let refusing = TokenServer::start(true).await;
    let (_dir, server) = server(Opts::default()).await;
    let oauth = |url: String| {
        json!({"auth": {"type": "oauth2_client_credentials", "token_url": url,
            "client_id": "hooks", "client_secret": "s3cret", "scope": "deliveries"}})
    };
    let basic = endpoint(
        &server,
        &rx.url("/basic"),
        json!({"auth": {"type": "basic", "username": "chime", "password": "pa:ss"}}),
    )
    .await;
    let d = publish_to(&server, &basic).await;
    server.wait_status("acme", &d, "succeeded").await;
    let got = rx.wait_count(1).await;
    // base64("chime:pa:ss")
    assert_eq!(got[0].headers["authorization"], "Basic Y2hpbWU6cGE6c3M=");
    let (_, b) = server
        .admin(
            "DELETE",
            &format!("/v1/tenants/acme/endpoints/{basic}"),
            None,
        )
        .await;
    assert!(b.is_null());

    let ep = endpoint(&server, &rx.url("/oauth"), oauth(tokens.url())).await;
    let (_, shown) = server
        .admin("GET", &format!("/v1/tenants/acme/endpoints/{ep}"), None)
        .await;
    assert_eq!(shown["auth"]["type"], "oauth2_client_credentials");
    assert_eq!(shown["auth"]["client_id"], "hooks");
    assert!(!shown.to_string().contains("s3cret"), "{shown}");

    let d = publish_to(&server, &ep).await;
    server.wait_status("acme", &d, "succeeded").await;
    let got = rx.wait_count(2).await;
    assert_eq!(got[1].headers["authorization"], "Bearer tok-1");
    // Cached: the next delivery reuses it.
    let d = publish_to(&server, &ep).await;
    server.wait_status("acme", &d, "succeeded").await;
    let got = rx.wait_count(3).await;
    assert_eq!(got[2].headers["authorization"], "Bearer tok-1");
    assert_eq!(tokens.calls.load(Ordering::SeqCst), 1);
    // A 401 from the receiver: a new token, and the same attempt sends again with it.
    rx.script(&[401]);
    let d = publish_to(&server, &ep).await;
    let done = server.wait_status("acme", &d, "succeeded").await;
    assert_eq!(done["attempts"], 1, "{done}");
    let got = rx.wait_count(5).await;
    assert_eq!(got[3].headers["authorization"], "Bearer tok-1");
    assert_eq!(got[4].headers["authorization"], "Bearer tok-2");
    assert_eq!(tokens.calls.load(Ordering::SeqCst), 2);

    // A token endpoint that refuses: the attempt fails as `auth`, nothing reaches the receiver.
    let refused = endpoint(&server, &rx.url("/refused"), oauth(refusing.url())).await;
    let d = publish_to(&server, &refused).await;
    let a = failed_attempt(&server, &d).await;
    assert_eq!(a["error_kind"], "auth", "{a}");
    assert!(a["error"].as_str().unwrap().contains("401"), "{a}");
    assert!(rx.received().iter().all(|r| r.path != "/refused"));
    server.stop().await;
}

/// tinyproxy on a free port of 127.0.0.1, logging to a file the test reads.
struct Tinyproxy {
    _child: ChildProcess,
    _dir: tempfile::TempDir,
    port: u16,
    log: std::path::PathBuf,
}

impl Tinyproxy {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A port the kernel hands out, released for tinyproxy to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n\
                 LogLevel Connect\nLogFile \"{}\"\nPidFile \"{}\"\nViaProxyName \"egress\"\n",
                log.display(),
                dir.path().join("tinyproxy.pid").display()
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("tinyproxy");
        cmd.args(["-d", "-c"]).arg(&conf);
        let child = ChildProcess::spawn("tinyproxy", cmd);
        // Ready when it accepts connections.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < until,
                "tinyproxy did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            _child: child,
            _dir: dir,
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn deliveries_leave_through_the_egress_proxy() {
    let proxy = Tinyproxy::start().await;
    let rx = Receiver::start().await;
    let pki = Pki::new("proxied CA");
    let tls_rx = TlsReceiver::start(&pki.leaf(&["localhost"], false), None).await;
    // The server's egress proxy for everything; one endpoint's host bypasses it.
    let opts = Opts {
        egress_proxy: Some(proxy.url()),
        egress_no_proxy: Some("bypass.localhost".into()),
        ..Opts::default()
    };
    let (_dir, server) = server(opts).await;
    endpoint(&server, &rx.url("/via-proxy"), json!({})).await;
    endpoint(
        &server,
        &tls_rx.url("localhost", "/via-tunnel"),
        json!({"tls": {"ca_pem": pki.ca_pem()}}),
    )
    .await;
    let published = server
        .publish("acme", "order.created", json!({"n": 3}))
        .await;
    for d in published["deliveries"].as_array().unwrap() {
        server
            .wait_status("acme", d["id"].as_str().unwrap(), "succeeded")
            .await;
    }
    let got = rx.wait_count(1).await;
    // tinyproxy forwarded the absolute-form request, and named itself in Via.
    let via = got[0].headers["via"].to_str().unwrap();
    assert!(via.contains("egress"), "{via}");
    assert_eq!(
        &got[0].body[..],
        br#"{"event":"order.created","data":{"n":3}}"#
    );
    assert_eq!(tls_rx.wait_count(1).await.len(), 1);
    let log = proxy.log();
    assert!(
        log.contains("CONNECT"),
        "the https delivery went through a tunnel: {log}"
    );
    server.stop().await;

    // An endpoint's own proxy that is down: a connect failure that names the proxy.
    let (_dir, server) = self::server(Opts::default()).await;
    let down = endpoint(
        &server,
        &rx.url("/never"),
        json!({"proxy": "http://127.0.0.1:9"}),
    )
    .await;
    let d = publish_to(&server, &down).await;
    let a = failed_attempt(&server, &d).await;
    assert_eq!(a["error_kind"], "connect", "{a}");
    assert!(a["error"].as_str().unwrap().contains("egress proxy"), "{a}");
    server.stop().await;
}

async fn bad_reach_settings_are_refused_and_nothing_is_stored() {
    let pki = Pki::new("ca");
    let a = pki.leaf(&["localhost"], false);
    let b = pki.leaf(&["localhost"], false);
    let (_dir, server) = server(Opts::default()).await;
    for (settings, field) in [
        (json!({"tls": {"ca_pem": "not pem"}}), "tls.ca_pem"),
        (
            json!({"tls": {"client_cert_pem": a.cert, "client_key_pem": b.key}}),
            "does not match",
        ),
        (json!({"tls": {"client_cert_pem": a.cert}}), "go together"),
        (json!({"auth": {"type": "digest", "username": "u"}}), "auth"),
        (
            json!({"auth": {"type": "oauth2_client_credentials", "token_url": "ftp://x/t",
                "client_id": "c", "client_secret": "s"}}),
            "auth.token_url",
        ),
        (
            json!({"auth": {"type": "oauth2_client_credentials", "token_url": "http://10.1.2.3/t",
                "client_id": "c", "client_secret": "s"}}),
            "auth.token_url",
        ),
        (json!({"proxy": "https://proxy:3128"}), "proxy"),
    ] {
        let mut body = json!({"url": "https://example.com/hook"});
        body.as_object_mut()
            .unwrap()
            .extend(settings.as_object().unwrap().clone());
        let (s, b) = server
            .admin("POST", "/v1/tenants/acme/endpoints", Some(body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{settings}: {b}");
        let detail = b["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{field}: {detail}");
    }
    let (_, list) = server
        .admin("GET", "/v1/tenants/acme/endpoints", None)
        .await;
    assert!(list["data"].as_array().unwrap().is_empty(), "{list}");
    server.stop().await;
}

crate::support::on_both_backends!(
    https_is_verified_and_each_failure_named,
    mutual_tls_presents_the_endpoints_client_certificate,
    basic_and_oauth2_credentials_are_sent,
    deliveries_leave_through_the_egress_proxy,
    bad_reach_settings_are_refused_and_nothing_is_stored,
);
