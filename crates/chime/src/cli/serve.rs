//! `chime serve`: the delivery service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Layer};

#[derive(Args)]
pub struct ServeArgs {
    /// Config file (TOML) overriding the defaults; see `chime default-config`.
    #[arg(long, env = "CHIME_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8088].
    #[arg(long, env = "CHIME_LISTEN")]
    listen: Option<String>,
    /// Directory for the embedded database and the generated admin token [default: ./chime-data].
    #[arg(long, env = "CHIME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: sqlite:///path/file.db or postgres://user@host/db [default: <data-dir>/chime.db].
    #[arg(long, env = "CHIME_DATABASE_URL")]
    database_url: Option<String>,
    /// PostgreSQL only: most connections this node keeps open [default: 16].
    #[arg(long, env = "CHIME_DB_POOL_SIZE")]
    db_pool_size: Option<usize>,
    /// Comma-separated CIDRs that deliveries may reach although internal, e.g. 127.0.0.0/8.
    #[arg(long, env = "CHIME_ALLOW_TARGETS")]
    allow_targets: Option<String>,
    /// Delays between attempts [default: 5s,5m,30m,2h,5h,10h,10h].
    #[arg(long, env = "CHIME_RETRY_SCHEDULE")]
    retry_schedule: Option<String>,
    /// Deadline of one delivery attempt [default: 15s].
    #[arg(long, env = "CHIME_REQUEST_TIMEOUT")]
    request_timeout: Option<String>,
    /// Largest API request body in bytes [default: 1048576].
    #[arg(long, env = "CHIME_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Open API connections at most; more are answered 503 and closed [default: 4096].
    #[arg(long, env = "CHIME_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Deadline for a request's head to arrive, and for an idle kept-alive connection
    /// [default: 10s].
    #[arg(long, env = "CHIME_HEADER_TIMEOUT")]
    header_timeout: Option<String>,
    /// Deadline for a request's body to arrive; a late body is answered 408 [default: 30s].
    #[arg(long, env = "CHIME_BODY_TIMEOUT")]
    body_timeout: Option<String>,
    /// Time in-flight attempts get to finish at shutdown [default: 10s].
    #[arg(long, env = "CHIME_SHUTDOWN_GRACE")]
    shutdown_grace: Option<String>,
    /// Attempts in flight per endpoint [default: 8].
    #[arg(long, env = "CHIME_ENDPOINT_CONCURRENCY")]
    endpoint_concurrency: Option<u32>,
    /// Attempts in flight in all [default: 1024].
    #[arg(long, env = "CHIME_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Attempts in flight for one tenant's endpoints together, so one tenant's hung
    /// receivers cannot fill max-in-flight [default: 256].
    #[arg(long, env = "CHIME_TENANT_MAX_IN_FLIGHT")]
    tenant_max_in_flight: Option<usize>,
    /// Deadline of an attempt's TCP and TLS connect, at most the request timeout [default: 5s].
    #[arg(long, env = "CHIME_CONNECT_TIMEOUT")]
    connect_timeout: Option<String>,
    /// How long a claimed delivery stays reserved [default: 5m].
    #[arg(long, env = "CHIME_LEASE")]
    lease: Option<String>,
    /// Fallback scan period for due deliveries [default: 30s].
    #[arg(long, env = "CHIME_POLL_INTERVAL")]
    poll_interval: Option<String>,
    /// Bytes of each response kept with its attempt [default: 4096].
    #[arg(long, env = "CHIME_RESPONSE_CAPTURE_BYTES")]
    response_capture_bytes: Option<usize>,
    /// Longest wait a receiver's Retry-After can impose [default: 1h].
    #[arg(long, env = "CHIME_MAX_RETRY_AFTER")]
    max_retry_after: Option<String>,
    /// Consecutive failures that make an endpoint "failing" (probed only) [default: 10].
    #[arg(long, env = "CHIME_FAILURE_THRESHOLD")]
    failure_threshold: Option<u32>,
    /// While an endpoint is failing, one probe attempt per this interval [default: 30s].
    #[arg(long, env = "CHIME_PROBE_INTERVAL")]
    probe_interval: Option<String>,
    /// Disable an endpoint failing this long with no success [default: 5d].
    #[arg(long, env = "CHIME_AUTO_DISABLE_AFTER")]
    auto_disable_after: Option<String>,
    /// Refuse events whose name is not in the event-type catalog.
    #[arg(long, env = "CHIME_STRICT_EVENT_TYPES")]
    strict_event_types: bool,
    /// Remove event payloads older than this [default: 30d].
    #[arg(long, env = "CHIME_PAYLOAD_RETENTION")]
    payload_retention: Option<String>,
    /// Delete events (with deliveries and attempts) older than this [default: 90d].
    #[arg(long, env = "CHIME_EVENT_RETENTION")]
    event_retention: Option<String>,
    /// How often retention runs [default: 1h].
    #[arg(long, env = "CHIME_RETENTION_INTERVAL")]
    retention_interval: Option<String>,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                Layer::parse_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => Layer::default(),
        };
        let cli = Layer {
            listen: self.listen,
            data_dir: self.data_dir,
            database_url: self.database_url,
            db_pool_size: self.db_pool_size,
            allow_targets: self.allow_targets,
            // Only from the environment: a flag would show the token in `ps`.
            admin_token: std::env::var("CHIME_ADMIN_TOKEN").ok(),
            retry_schedule: self.retry_schedule,
            request_timeout: self.request_timeout,
            max_body_bytes: self.max_body_bytes,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            shutdown_grace: self.shutdown_grace,
            endpoint_concurrency: self.endpoint_concurrency,
            max_in_flight: self.max_in_flight,
            tenant_max_in_flight: self.tenant_max_in_flight,
            connect_timeout: self.connect_timeout,
            lease: self.lease,
            poll_interval: self.poll_interval,
            response_capture_bytes: self.response_capture_bytes,
            max_retry_after: self.max_retry_after,
            failure_threshold: self.failure_threshold,
            probe_interval: self.probe_interval,
            auto_disable_after: self.auto_disable_after,
            // A flag can only turn it on; off is the default or the config file's word.
            strict_event_types: self.strict_event_types.then_some(true),
            payload_retention: self.payload_retention,
            event_retention: self.event_retention,
            retention_interval: self.retention_interval,
        };
        Config::from_layer(cli.over(file))
    }
}

/// Runs the service until SIGINT/SIGTERM.
pub fn main(args: ServeArgs) -> ExitCode {
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chime: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    super::init_logging();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chime: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    crate::run(config, listener, shutdown, |s| {
        println!(
            "chime {} serving on http://{}",
            env!("CARGO_PKG_VERSION"),
            s.addr
        );
        println!("  data:        {}", s.database.display());
        match &s.admin_token {
            crate::AdminToken::FromEnvironment => {
                println!("  admin token: from CHIME_ADMIN_TOKEN")
            }
            crate::AdminToken::Generated { token, file } => {
                println!("  admin token: {token}");
                println!(
                    "               (shown once; also written to {})",
                    file.display()
                );
            }
            crate::AdminToken::Existing { file } => {
                println!(
                    "  admin token: in {} (generated at first start)",
                    file.display()
                )
            }
        }
        println!("  stop with Ctrl-C");
    })
    .await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
