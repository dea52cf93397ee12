//! The real server on 127.0.0.1:0, in-process (through `chime::run`), on SQLite in a data
//! directory or, under `on_postgres`, on a PostgreSQL schema of its own; and `Fixture`, the
//! start most delivery tests share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Receiver, eventually, postgres};

pub const ADMIN: &str = "test-admin-token-0123456789";

/// Overrides for one test server.
#[derive(Clone)]
pub struct Opts {
    pub allow_local: bool,
    pub retry_schedule: &'static str,
    pub request_timeout: &'static str,
    pub shutdown_grace: &'static str,
    pub max_body_bytes: usize,
    pub endpoint_concurrency: u32,
    pub max_in_flight: usize,
    pub tenant_max_in_flight: usize,
    pub failure_threshold: u32,
    pub probe_interval: &'static str,
    pub auto_disable_after: &'static str,
    pub max_connections: usize,
    pub header_timeout: &'static str,
    pub body_timeout: &'static str,
    /// The store; `None` means SQLite in the data directory, unless the test runs under
    /// `on_postgres`, which gives each data directory a PostgreSQL schema of its own.
    pub database_url: Option<String>,
    /// Serve /metrics without auth on a second address of its own (`TestServer::metrics_addr`).
    pub metrics_listen: bool,
    pub metrics_tenant_series: usize,
    /// Origins that may frame the portal (`portal_frame_ancestors`).
    pub portal_frame_ancestors: Option<String>,
    /// Export spans over OTLP/HTTP to this base URL (a receiver of the test's own).
    pub otlp_endpoint: Option<String>,
    /// Every delivery through this proxy (`egress_proxy`), but for these hosts.
    pub egress_proxy: Option<String>,
    pub egress_no_proxy: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            allow_local: true,
            retry_schedule: "20ms,40ms",
            request_timeout: "5s",
            shutdown_grace: "2s",
            max_body_bytes: 1 << 20,
            endpoint_concurrency: 8,
            max_in_flight: 1024,
            tenant_max_in_flight: 256,
            failure_threshold: 10,
            probe_interval: "30s",
            auto_disable_after: "5d",
            max_connections: 4096,
            header_timeout: "10s",
            body_timeout: "30s",
            database_url: None,
            metrics_listen: false,
            metrics_tenant_series: 0,
            portal_frame_ancestors: None,
            otlp_endpoint: None,
            egress_proxy: None,
            egress_no_proxy: None,
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// Where /metrics is served without auth, with `Opts::metrics_listen`.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn config_for(data_dir: &Path, opts: &Opts) -> chime::config::Config {
    let layer = chime::config::Layer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.to_path_buf()),
        allow_targets: Some(if opts.allow_local {
            "127.0.0.0/8,::1".into()
        } else {
            String::new()
        }),
        admin_token: Some(ADMIN.into()),
        retry_schedule: Some(opts.retry_schedule.into()),
        request_timeout: Some(opts.request_timeout.into()),
        shutdown_grace: Some(opts.shutdown_grace.into()),
        max_body_bytes: Some(opts.max_body_bytes),
        endpoint_concurrency: Some(opts.endpoint_concurrency),
        max_in_flight: Some(opts.max_in_flight),
        tenant_max_in_flight: Some(opts.tenant_max_in_flight),
        failure_threshold: Some(opts.failure_threshold),
        probe_interval: Some(opts.probe_interval.into()),
        auto_disable_after: Some(opts.auto_disable_after.into()),
        max_connections: Some(opts.max_connections),
        header_timeout: Some(opts.header_timeout.into()),
        body_timeout: Some(opts.body_timeout.into()),
        poll_interval: Some("1s".into()),
        database_url: opts.database_url.clone(),
        metrics_listen: opts.metrics_listen.then(|| "127.0.0.1:0".into()),
        metrics_tenant_series: Some(opts.metrics_tenant_series),
        portal_frame_ancestors: opts.portal_frame_ancestors.clone(),
        otlp_endpoint: opts.otlp_endpoint.clone(),
        egress_proxy: opts.egress_proxy.clone(),
        egress_no_proxy: opts.egress_no_proxy.clone(),
        ..Default::default()
    };
    chime::config::Config::from_layer(layer).expect("valid test config")
}

tokio::task_local! {
    /// Set while a test runs on PostgreSQL: the schema of each data directory, so a server
    /// restarted on the same directory finds the same data. Dropped (schemas and all) when
    /// the test ends.
    static POSTGRES: Mutex<std::collections::HashMap<PathBuf, postgres::PgSchema>>;
}

/// Runs a test with every `TestServer` on PostgreSQL (one schema per data directory).
pub async fn on_postgres<F: std::future::Future>(test: F) -> F::Output {
    POSTGRES
        .scope(Mutex::new(std::collections::HashMap::new()), test)
        .await
}

/// The database URL a server on `data_dir` uses: the test's choice, else a PostgreSQL schema
/// under `on_postgres`, else none (SQLite in the data directory).
async fn database_url(data_dir: &Path, opts: &Opts) -> Option<String> {
    if opts.database_url.is_some() {
        return opts.database_url.clone();
    }
    let known = POSTGRES
        .try_with(|m| m.lock().unwrap().get(data_dir).map(|s| s.url.clone()))
        .ok()?;
    if known.is_some() {
        return known;
    }
    let schema = postgres::PgSchema::create().await;
    let url = schema.url.clone();
    POSTGRES.with(|m| m.lock().unwrap().insert(data_dir.to_path_buf(), schema));
    Some(url)
}

/// Instantiates each listed `async fn name()` test twice: `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case().await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::support::server::on_postgres(super::$case()).await
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

impl TestServer {
    pub async fn start(data_dir: &Path, mut opts: Opts) -> Self {
        opts.database_url = database_url(data_dir, &opts).await;
        let config = config_for(data_dir, &opts);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(chime::run(config, listener, shutdown.clone(), move |s| {
            let _ = ready_tx.send(s.metrics_addr);
        }));
        let metrics_addr = ready_rx.await.expect("server started");
        Self {
            base: format!("http://{addr}"),
            addr,
            http: reqwest::Client::new(),
            metrics_addr,
            shutdown,
            task: Some(task),
        }
    }

    /// Graceful stop, as SIGTERM does; waits until the store is closed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        super::openapi::check(method, path, status.as_u16(), &value);
        (status, value)
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    pub async fn create_tenant(&self, id: &str) {
        let (s, b) = self
            .admin("POST", "/v1/tenants", Some(json!({ "id": id })))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    /// Creates an endpoint and returns (id, secret).
    pub async fn create_endpoint(
        &self,
        tenant: &str,
        url: &str,
        events: Value,
    ) -> (String, String) {
        let (s, b) = self
            .admin(
                "POST",
                &format!("/v1/tenants/{tenant}/endpoints"),
                Some(json!({ "url": url, "events": events })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        (
            b["id"].as_str().unwrap().to_owned(),
            b["secret"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn publish(&self, tenant: &str, event: &str, data: Value) -> Value {
        let (s, b) = self
            .admin(
                "POST",
                &format!("/v1/tenants/{tenant}/events"),
                Some(json!({ "event": event, "data": data })),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        b
    }

    pub async fn delivery(&self, tenant: &str, id: &str) -> Value {
        let (s, b) = self
            .admin(
                "GET",
                &format!("/v1/tenants/{tenant}/deliveries/{id}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    pub async fn attempts(&self, tenant: &str, id: &str) -> Vec<Value> {
        let (s, b) = self
            .admin(
                "GET",
                &format!("/v1/tenants/{tenant}/deliveries/{id}/attempts"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["data"].as_array().unwrap().clone()
    }

    /// Waits until the delivery reaches `status`, re-checking its state until a deadline.
    pub async fn wait_status(&self, tenant: &str, id: &str, status: &str) -> Value {
        eventually(Duration::from_secs(20), || async {
            let d = self.delivery(tenant, id).await;
            (d["status"] == status).then_some(d)
        })
        .await
        .unwrap_or_else(|| panic!("delivery {id} never became {status}"))
    }
}

/// Where most delivery tests start: a server on a data directory of its own, tenant `acme`,
/// a test receiver, and one endpoint of `acme` on it for every event (`*`).
pub struct Fixture {
    /// The data directory, for tests that restart the server or open its store.
    pub dir: tempfile::TempDir,
    pub server: TestServer,
    pub rx: Receiver,
    /// The endpoint's id and signing secret.
    pub endpoint: String,
    pub secret: String,
}

impl Fixture {
    /// A server with `opts`; the endpoint's URL is the receiver's `path`.
    pub async fn start(opts: Opts, path: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path(), opts).await;
        server.create_tenant("acme").await;
        let rx = Receiver::start().await;
        let (endpoint, secret) = server
            .create_endpoint("acme", &rx.url(path), json!(["*"]))
            .await;
        Self {
            dir,
            server,
            rx,
            endpoint,
            secret,
        }
    }

    /// Stops the server gracefully; the data directory goes after it.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}
