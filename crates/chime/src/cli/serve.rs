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
    #[command(flatten)]
    settings: Layer,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, String> {
        let file = Layer::from_file(self.config.as_deref())?;
        let mut given = self.settings;
        // Only from the environment: a flag would show the token in `ps`.
        given.admin_token = std::env::var("CHIME_ADMIN_TOKEN").ok();
        Config::from_layer(given.over(file))
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
    super::init_logging(config.observability.log_format);
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
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
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
        println!(
            "  dashboard:   {} (sign in with a token, or run `chime dashboard`)",
            s.dashboard
        );
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
