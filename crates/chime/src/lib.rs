//! chime: a webhook delivery service (`chime serve`) and the tools around it.
//!
//! # Layout
//! - `config`: the typed settings and their layered loading.
//! - `model`: the domain's validated types (ids, event names, patterns, URLs, time).
//! - `store`: the storage interface and its SQLite and PostgreSQL backends (the only place
//!   with SQL).
//! - `api`: the REST API v1 (axum), thin handlers over the store and the dispatcher.
//! - `dispatch`: claims due deliveries, POSTs them (signed, SSRF-guarded), records attempts.
//! - `retry`, `net_policy`: pure pieces: retry timing, which hosts deliveries may reach.
//! - `auth`: tokens, their hashes and a short-lived lookup cache over the store.
//! - `transform`: tenants' JavaScript webhook transformations, sandboxed in QuickJS.
//! - `cli`: the `chime` command line (`serve` and friends).
//!
//! `run` is the whole service given a bound listener and a shutdown token; the binary and the
//! tests both go through it.

pub mod api;
pub mod auth;
pub mod batch;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod filter;
pub mod http_server;
pub mod inbox;
pub mod json_rules;
pub mod metrics;
pub mod model;
pub mod net_policy;
pub mod retention;
pub mod retry;
pub mod schema_cost;
pub mod spans;
pub mod store;
pub mod tenant_work;
pub mod transform;
pub mod ui;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::Config;
use dispatch::Dispatcher;
use store::{Store, TokenScope};

/// How the admin token was settled at start-up; what the operator is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// `CHIME_ADMIN_TOKEN` is set.
    FromEnvironment,
    /// Generated now: shown once, and written to this file.
    Generated { token: String, file: PathBuf },
    /// Generated at an earlier start; the file (if still there) holds it.
    Existing { file: PathBuf },
}

const ADMIN_TOKEN_META: &str = "admin_token_generated_at";

/// Generates and stores the admin token on first start, unless one is configured.
async fn settle_admin_token(config: &Config, store: &dyn Store) -> anyhow::Result<AdminToken> {
    if config.admin_token.is_some() {
        return Ok(AdminToken::FromEnvironment);
    }
    let file = config.store.data_dir.join("admin-token");
    let now = model::now_millis();
    if !store
        .put_meta_if_absent(ADMIN_TOKEN_META, &now.to_string())
        .await?
    {
        return Ok(AdminToken::Existing { file });
    }
    let token = auth::generate_token();
    write_secret_file(&file, &token)
        .with_context(|| format!("writing the admin token to {}", file.display()))?;
    store
        .create_token(&auth::hash_token(&token), TokenScope::Admin, now)
        .await?;
    Ok(AdminToken::Generated { token, file })
}

fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// File descriptors kept for everything but API and delivery connections: the database
/// files or connections, the listener, logs.
const SPARE_FILES: u64 = 256;

/// Raises the open-file limit so `max_connections` API connections fit beside
/// `delivery_connections` (one per attempt in flight), and returns the connection cap that
/// does fit when the hard limit is lower.
fn fit_open_files(max_connections: usize, delivery_connections: usize) -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write or read only the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return max_connections;
        }
        let reserved = SPARE_FILES + delivery_connections as u64;
        let wanted = max_connections as u64 + reserved;
        if lim.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = raised.rlim_cur;
            }
        }
        let fits = lim.rlim_cur.saturating_sub(reserved).max(64) as usize;
        if fits < max_connections {
            tracing::warn!(
                max_connections,
                open_file_limit = lim.rlim_cur,
                "the open-file limit allows only {fits} API connections; max_connections lowered"
            );
            return fits;
        }
    }
    max_connections
}

/// Open connections to the `metrics_listen` address at most: scrapers, not clients.
const METRICS_CONNECTIONS: usize = 64;

/// A running service's facts, reported once it is ready.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: std::net::SocketAddr,
    /// The SQLite file, or the PostgreSQL URL without its password.
    pub database: PathBuf,
    pub admin_token: AdminToken,
    /// Where `GET /metrics` is served without auth (`metrics_listen`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The dashboard's address.
    pub dashboard: String,
}

/// Runs `chime serve` until `shutdown` is cancelled, then shuts down gracefully: stop taking
/// requests, let in-flight attempts finish within the grace period, release the rest.
/// `on_start` is told where it listens and how to get the admin token.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    on_start: impl FnOnce(&Started),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.store.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            config.store.data_dir.display()
        )
    })?;
    let database = config.store.database();
    let opened = store::open(&database, config.store.db_pool_size).await?;
    let store = opened.store;
    if opened.exclusive {
        // One process owns the SQLite file (it holds the lock), so every lease is stale.
        // Never on a shared database: other nodes' leases are live, and a dead node's
        // deliveries are taken over when their leases expire.
        store.reset_leases().await?;
    }
    // The partitions of now and the next while exist before the first publish (retention
    // keeps them ahead from then on): a row that lands in the DEFAULT partition can race
    // with the partition being made for it.
    retention::prepare(store.as_ref(), config.retention).await?;
    let admin_token = settle_admin_token(&config, store.as_ref()).await?;
    // The system tenant that receives operational events; it always exists.
    match store
        .create_tenant(store::Tenant {
            id: model::SYSTEM_TENANT.to_owned(),
            name: Some("chime operational events".to_owned()),
            created_at: model::now_millis(),
            branding: None,
        })
        .await
    {
        Ok(()) | Err(store::StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }

    let spans = match &config.observability.otlp_endpoint {
        None => spans::Spans::default(),
        Some(endpoint) => spans::Spans::otlp(endpoint)
            .with_context(|| format!("cannot export spans to {endpoint} (otlp_endpoint)"))?,
    };
    let policy = net_policy::TargetPolicy::new(config.delivery.allow_targets.clone());
    // Transformations run on threads of their own, never on the runtime's workers.
    let transforms = transform::Engine::new(
        config.delivery.transform_workers,
        config.delivery.transform_limits,
    );
    let client = dispatch::http::DeliveryClient::new(
        policy.clone(),
        config.delivery.request_timeout,
        config.delivery.connect_timeout,
        config.delivery.response_capture_bytes,
        transforms.clone(),
    )
    .with_egress_proxy(
        config.delivery.egress_proxy.clone(),
        config.delivery.egress_no_proxy.clone(),
    )
    .with_spans(spans.clone());
    let metrics = Arc::new(metrics::Metrics::new(
        config.observability.metrics_tenant_series,
    ));
    let (dispatcher, handle) = Dispatcher::new(
        store.clone(),
        client,
        config.dispatch.clone(),
        metrics.clone(),
    );
    let due_handle = handle.clone();
    let auth = Arc::new(auth::Authenticator::new(
        store.clone(),
        config.admin_token.as_deref(),
    ));
    let addr = listener.local_addr()?;
    let keys = ui::session::Keys::load(store.as_ref()).await?;
    let public_url = config
        .ui
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let state = api::AppState {
        store: store.clone(),
        dispatch: handle,
        auth: auth.clone(),
        policy: Arc::new(policy),
        catalog: Arc::new(catalog::Catalog::new(
            store.clone(),
            config.strict_event_types,
        )),
        max_body_bytes: config.http.max_body_bytes,
        body_timeout: config.http.body_timeout,
        metrics: metrics.clone(),
        links: Arc::new(ui::LinkIssuer::new(keys.clone(), &public_url)),
        spans: spans.clone(),
        inbox: Arc::default(),
        transforms,
    };
    let api_router = api::router(state.clone());
    let app = ui::router(ui::UiState {
        app: state,
        api: api_router.clone(),
        keys,
        settings: Arc::new(ui::Settings::from_config(&config.ui, &public_url)),
        area: ui::session::Area::Dashboard,
        shutdown: shutdown.clone(),
    })
    .merge(api_router);

    let dispatcher_stop = CancellationToken::new();
    // Another node made deliveries claimable (released or retried them): claim at once
    // rather than at the next fallback scan. Another node deleted a tenant: its tokens stop
    // working here too. The task ends with the dispatcher's stop.
    if let Some(mut notes) = store.notifications() {
        let handle = due_handle;
        let stop = dispatcher_stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    note = notes.recv() => match note {
                        Some(store::Notification::Due(id)) => handle.due(&id, model::now_millis()),
                        Some(store::Notification::TenantDeleted(t)) => auth.forget_tenant(&t),
                        Some(store::Notification::Resync) => auth.forget_all(),
                        None => break,
                    },
                }
            }
        });
    }
    let dispatcher_task = tokio::spawn(dispatcher.run(dispatcher_stop.clone()));
    tokio::spawn(retention::run(
        store.clone(),
        config.retention,
        metrics.clone(),
        dispatcher_stop.clone(),
    ));
    let limits = http_server::Limits {
        max_connections: fit_open_files(config.http.max_connections, config.dispatch.max_in_flight),
        header_timeout: config.http.header_timeout,
    };
    let metrics_addr = match config.observability.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics_listen)"))?;
            let bound = listener.local_addr()?;
            let app = api::metrics::standalone(metrics.clone(), store.clone());
            let limits = http_server::Limits {
                max_connections: METRICS_CONNECTIONS,
                ..limits
            };
            tokio::spawn(http_server::serve(listener, app, limits, shutdown.clone()));
            Some(bound)
        }
    };

    on_start(&Started {
        addr,
        dashboard: format!("{}/ui", public_url.trim_end_matches('/')),
        database: PathBuf::from(database.display()),
        admin_token,
        metrics_addr,
    });

    let served = http_server::serve(listener, app, limits, shutdown.clone()).await;
    tracing::info!("stopped taking requests; finishing in-flight deliveries");
    dispatcher_stop.cancel();
    dispatcher_task
        .await
        .context("the dispatcher task failed")?;
    // After the last attempt: its span is in the batch sent now.
    spans.flush().await;
    drop(store);
    served.context("the HTTP server failed")?;
    Ok(())
}
