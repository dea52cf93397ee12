//! The `chime` command line. The binary only calls `main_with_args`; each subcommand lives in
//! its own module and gets parsed arguments.
//!
//! Exit codes: 0 success, 1 runtime failure (or an API error, or an invalid signature for
//! `verify`), 2 usage or configuration error, 3 could not connect to the server.

mod check;
mod client;
mod dashboard;
mod deliveries;
mod endpoint;
mod event_types;
mod events;
mod listen;
mod metrics_token;
mod migrate;
mod output;
mod record;
mod replay;
mod send;
mod serve;
mod source;
mod tenant;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Bring the database schema up to date (chime serve also does at start) and exit.
    Migrate(migrate::MigrateArgs),
    /// Receive webhooks locally: verify, print, de-duplicate, record and forward them.
    Listen(Box<listen::ListenArgs>),
    /// Check one webhook's signature offline (body on stdin); exit 0 valid, 1 invalid.
    Verify(verify::VerifyArgs),
    /// Re-send webhooks recorded by `chime listen --record`, optionally re-signed.
    Replay(replay::ReplayArgs),
    /// Publish events through a running `chime serve` (one, or a JSON-lines file).
    Send(send::SendArgs),
    /// Create and list tenants.
    Tenant(tenant::TenantArgs),
    /// Manage inbound sources: public URLs that providers (Stripe, GitHub, …) post to.
    Source(source::SourceArgs),
    /// Manage endpoints: add, list, show, update, delete, disable, enable, rotate-secret.
    Endpoint(Box<endpoint::EndpointArgs>),
    /// Read published events and their deliveries.
    Events(events::EventsArgs),
    /// Read the delivery log, see attempts, retry, skip and replay deliveries.
    Deliveries(deliveries::DeliveriesArgs),
    /// Manage the event-type catalog: names, descriptions and JSON Schemas for their data.
    EventTypes(event_types::EventTypesArgs),
    /// Create a token that can read GET /metrics and nothing else (needs the admin token).
    MetricsToken(metrics_token::MetricsTokenArgs),
    /// Print (and on a desktop, open) a one-time sign-in link to the dashboard.
    Dashboard(dashboard::DashboardArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main_with_args() -> ExitCode {
    // The settings' defaults live in config.default.toml; --help shows them from there.
    let cmd = Cli::command()
        .mut_subcommand("serve", crate::config::show_defaults)
        .mut_subcommand("migrate", crate::config::show_defaults);
    let cli = Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG_TOML);
            ExitCode::SUCCESS
        }
        Command::Serve(args) => serve::main(*args),
        Command::Migrate(args) => migrate::main(args),
        Command::Listen(args) => listen::main(*args),
        Command::Verify(args) => verify::main(args),
        Command::Replay(args) => replay::main(args),
        Command::Send(args) => send::main(args),
        Command::Tenant(args) => tenant::main(args),
        Command::Source(args) => source::main(args),
        Command::Endpoint(args) => endpoint::main(*args),
        Command::Events(args) => events::main(args),
        Command::Deliveries(args) => deliveries::main(args),
        Command::EventTypes(args) => event_types::main(args),
        Command::MetricsToken(args) => metrics_token::main(args),
        Command::Dashboard(args) => dashboard::main(args),
    }
}

/// Logs to stderr, filtered by `CHIME_LOG` (default `info`): readable lines, coloured only
/// on a terminal, or (`LogFormat::Json`) one JSON object per line with the fields kept
/// apart, for log shippers.
pub(crate) fn init_logging(format: crate::config::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHIME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
