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
    /// Store URL: sqlite:///path/file.db [default: <data-dir>/chime.db].
    #[arg(long, env = "CHIME_DATABASE_URL")]
    database_url: Option<String>,
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
    /// Time in-flight attempts get to finish at shutdown [default: 10s].
    #[arg(long, env = "CHIME_SHUTDOWN_GRACE")]
    shutdown_grace: Option<String>,
    /// Attempts in flight per endpoint [default: 8].
    #[arg(long, env = "CHIME_ENDPOINT_CONCURRENCY")]
    endpoint_concurrency: Option<u32>,
    /// Attempts in flight in all [default: 1024].
    #[arg(long, env = "CHIME_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// How long a claimed delivery stays reserved [default: 5m].
    #[arg(long, env = "CHIME_LEASE")]
    lease: Option<String>,
    /// Fallback scan period for due deliveries [default: 30s].
    #[arg(long, env = "CHIME_POLL_INTERVAL")]
    poll_interval: Option<String>,
    /// Bytes of each response kept with its attempt [default: 4096].
    #[arg(long, env = "CHIME_RESPONSE_CAPTURE_BYTES")]
    response_capture_bytes: Option<usize>,
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
            allow_targets: self.allow_targets,
            // Only from the environment: a flag would show the token in `ps`.
            admin_token: std::env::var("CHIME_ADMIN_TOKEN").ok(),
            retry_schedule: self.retry_schedule,
            request_timeout: self.request_timeout,
            max_body_bytes: self.max_body_bytes,
            shutdown_grace: self.shutdown_grace,
            endpoint_concurrency: self.endpoint_concurrency,
            max_in_flight: self.max_in_flight,
            lease: self.lease,
            poll_interval: self.poll_interval,
            response_capture_bytes: self.response_capture_bytes,
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
