//! The `chime` command line. The binary only calls `main_with_args`; each subcommand lives in
//! its own module and gets parsed arguments.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chime",
    version,
    about = "Webhook delivery: send signed webhooks with retries, and receive, verify and replay them.",
    long_about = "chime sends webhooks (`chime serve`: a REST API, a durable queue on embedded SQLite, \
signed deliveries with retries) and helps receive them.\n\n\
Quick start:\n  chime serve --allow-targets 127.0.0.0/8\n\n\
Every setting can also come from a CHIME_* environment variable or a config file; \
see `chime serve --help`."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the delivery service: REST API, durable queue and delivery workers.
    Serve(Box<serve::ServeArgs>),
    /// Print the commented default configuration (a starting point for --config).
    DefaultConfig,
}

/// Parses the command line and runs the subcommand.
pub fn main_with_args() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG_TOML);
            ExitCode::SUCCESS
        }
        Command::Serve(args) => serve::main(*args),
    }
}

/// Logs to stderr, filtered by `CHIME_LOG` (default `info`), coloured only on a terminal.
pub(crate) fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHIME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
