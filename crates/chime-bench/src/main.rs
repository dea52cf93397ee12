//! `chime-bench`: the project's reproducible benchmark.
//!
//! It drives chime only from outside: as a `chime serve` process and through its HTTP API
//! (the one exception: `chime::store::sqlite::explain_claim`, public for this, reads the
//! SQLite query plan of the claim query from the server's database file). The server is the
//! `chime` binary next to this one unless `--server-exe` names another.
//!
//! One run starts everything it measures on this machine:
//! - `server`: a `chime serve` child process per scenario, on a fresh data directory, so its
//!   CPU time and peak RSS are its own (read from `/proc`);
//! - `sink`: a built-in receiver (hyper, answers 200 at once) that records when each delivery
//!   arrives;
//! - `load`: publishers that POST 500-byte events through the public API, closed loop (C
//!   publishers) or open loop (a fixed offered rate);
//! - `scenarios`: the ceiling (the same load straight to the sink) and the scenarios;
//! - `report`: the table on stdout, the targets, and the JSON file.
//!
//! Publish→receive latency is measured in this process on one monotonic clock: the send
//! instant is taken just before a publish leaves, the receive instant when the sink accepts the
//! delivery. The sink finds the event by the `seq` the publisher wrote into the body.

// The same allocator as the `chime` binary, which ran this benchmark before it was a
// binary of its own: the load generator and the ceiling it measures keep their speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cpu_cap;
mod load;
mod report;
mod scenarios;
mod server;
mod sink;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// A benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Closed loop: C publishers, each event to one endpoint.
    Throughput,
    /// `throughput` through a Stripe source: signed bodies POSTed to its ingest URL.
    Source,
    /// `throughput` to an HTTPS receiver.
    Https,
    /// `throughput` to NATS JetStream destinations (needs NATS on 127.0.0.1:4222).
    Nats,
    /// `throughput` with a small transformation (two fields renamed) on every endpoint.
    Transform,
    /// One event to every one of 100 endpoints.
    Fanout,
    /// Open loop at a fixed offered rate.
    Latency,
    /// Publish with the receivers paused, then resume and drain.
    Backlog,
    /// A slow endpoint with a queue beside a healthy one under steady load.
    Isolation,
    /// `throughput` with one, two, then three `chime serve` nodes on one PostgreSQL
    /// database, the publishes spread over them (needs --database-url postgres://…).
    Nodes,
    /// Millions of deliveries with retention running, reported every tenth: rate, p99, table
    /// sizes, dead tuples, autovacuum runs (the last three on PostgreSQL only).
    Soak,
}

impl Scenario {
    /// What a run without named scenarios runs: all but `nats`, which needs a NATS server,
    /// `nodes`, which needs PostgreSQL, and `soak`, which runs for hours at full size.
    pub const ALL: [Scenario; 8] = [
        Scenario::Throughput,
        Scenario::Source,
        Scenario::Https,
        Scenario::Transform,
        Scenario::Fanout,
        Scenario::Latency,
        Scenario::Backlog,
        Scenario::Isolation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Source => "source",
            Scenario::Https => "https",
            Scenario::Nats => "nats",
            Scenario::Transform => "transform",
            Scenario::Fanout => "fanout",
            Scenario::Latency => "latency",
            Scenario::Backlog => "backlog",
            Scenario::Isolation => "isolation",
            Scenario::Nodes => "nodes",
            Scenario::Soak => "soak",
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "chime-bench",
    version,
    about = "Benchmark chime on this machine: a chime serve, a receiver and a load generator in one run",
    long_about = "Starts a `chime serve` child process per scenario (fresh data directory, default \
durability: a 202 means the event and its deliveries are on disk), a built-in receiver and a load \
generator that publishes 500-byte events through the public API. Measures the ceiling (the same \
load straight to the receiver) first and again after each scenario, so that each scenario is compared \
with the machine's speed of its own minutes; prints a table; --json writes the same numbers with the \
machine's description.\n\n\
The server is the `chime` binary next to this one (`cargo build --release` builds both), \
or the one --server-exe names.\n\n\
Examples:\n  chime-bench                       every scenario at full size (several minutes)\n  \
chime-bench --quick               every scenario, shrunk to about a minute\n  \
chime-bench throughput fanout     two scenarios\n  \
chime-bench --quick --json bench.json"
)]
pub struct BenchArgs {
    /// Scenarios to run, in this order [default: all but nats, nodes and soak]: throughput, source, https, nats, transform, fanout, latency, backlog, isolation, nodes, soak.
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Also selects a scenario (repeatable); the same as naming it.
    #[arg(long = "scenario", value_enum)]
    scenario_flags: Vec<Scenario>,
    /// Shrinks every size so the whole run takes about a minute (explicit sizes still win).
    #[arg(long)]
    quick: bool,
    /// Events published in the throughput and source scenarios and POSTs of the ceiling [default: 200000; quick: 20000]; the soak's deliveries [default: 10000000; quick: 200000].
    #[arg(long)]
    events: Option<u64>,
    /// The soak reports every this many deliveries [default: a tenth of its deliveries].
    #[arg(long)]
    soak_every: Option<u64>,
    /// The soak's server keeps events and payloads this long, with retention
    /// running every tenth of it and partitions a quarter of it long, so old data is removed
    /// while the soak runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    soak_retention: Duration,
    /// Concurrent publishers of the closed-loop phases and of the ceiling.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Endpoints of the throughput, source, latency and backlog scenarios; event n goes to endpoint n mod this.
    #[arg(long, default_value_t = 16)]
    endpoints: u64,
    /// Events published in the fanout scenario [default: 10000; quick: 500].
    #[arg(long)]
    fanout_events: Option<u64>,
    /// Endpoints every fanout event goes to.
    #[arg(long, default_value_t = 100)]
    fanout_endpoints: u64,
    /// Offered rate of the latency scenario and of the isolation scenario's healthy load, events/s.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long the latency scenario offers its rate [default: 30s; quick: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Events published while the receivers are paused in the backlog scenario [default: 1000000; quick: 50000].
    #[arg(long)]
    backlog_events: Option<u64>,
    /// Events queued for the slow endpoint in the isolation scenario [default: 20000; quick: 2000].
    #[arg(long)]
    isolation_queued: Option<u64>,
    /// How long the slow endpoint takes to answer [default: 5s; quick: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    isolation_delay: Option<Duration>,
    /// Endpoints of another tenant on a receiver that accepts and never answers, in the
    /// isolation scenario's last phase [default: 200; quick: 20].
    #[arg(long)]
    isolation_hung: Option<u64>,
    /// Length of each steady-load phase of the isolation scenario [default: 30s; quick: 3s].
    #[arg(long, value_parser = humantime::parse_duration)]
    isolation_duration: Option<Duration>,
    /// Every receiver answers after this delay (e.g. 5ms).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    sink_delay: Duration,
    /// Share of deliveries the receiver answers 500 (0.0–1.0); chime retries them on its schedule.
    #[arg(long, default_value_t = 0.0)]
    sink_fail_rate: f64,
    /// While paused, the receiver holds a request at most this long, then answers 503; keep it
    /// under the server's request_timeout (15s) so paused receivers do not look like timeouts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "12s")]
    pause_hold: Duration,
    /// Give up waiting for deliveries after this long without progress.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    stall_timeout: Duration,
    /// Store of every `chime serve`; default: the embedded SQLite file in a fresh data
    /// directory. With postgres://user@host/db, each scenario gets a fresh database made (and
    /// dropped) through that server, so the user needs CREATEDB; a sqlite:// file is shared by
    /// every scenario of the run.
    #[arg(long)]
    database_url: Option<String>,
    /// Where the fresh data directories are made [default: the system temp directory].
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Keep each scenario's data directory (database and server log) instead of removing it.
    #[arg(long)]
    keep_data: bool,
    /// Extra argument for every `chime serve`, repeatable: --server-arg=--endpoint-concurrency=16.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// The `chime` binary to run as the server [default: the `chime` next to this
    /// executable]; an older build, to measure a change before and after with the same load
    /// generator.
    #[arg(long)]
    server_exe: Option<PathBuf>,
    /// Caps every `chime serve` process at this many CPUs (a cgroup CPU quota: Linux, as
    /// root or in a delegated cgroup). With `nodes`, each node gets the same budget, so that
    /// one, two and three nodes are compared as on machines with cores of their own rather
    /// than taking each other's.
    #[arg(long, value_name = "CPUS")]
    server_cpus: Option<f64>,
    /// Skip the ceiling measurements (no ratios are reported).
    #[arg(long)]
    no_ceiling: bool,
    /// Writes the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Resolved sizes and settings of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenarios: Vec<Scenario>,
    pub quick: bool,
    pub concurrency: usize,
    pub endpoints: u64,
    pub events: u64,
    pub fanout_events: u64,
    pub fanout_endpoints: u64,
    pub rate: f64,
    pub duration: Duration,
    pub backlog_events: u64,
    pub isolation_queued: u64,
    pub isolation_delay: Duration,
    pub isolation_duration: Duration,
    pub isolation_hung: u64,
    pub soak_events: u64,
    pub soak_every: u64,
    pub soak_retention: Duration,
    pub sink_delay: Duration,
    pub sink_fail_rate: f64,
    pub pause_hold: Duration,
    pub stall_timeout: Duration,
    pub ceiling: bool,
    pub server_cpus: Option<f64>,
}

impl Plan {
    fn from_args(a: &BenchArgs) -> Result<Plan, String> {
        let q = a.quick;
        let pick =
            |v: Option<u64>, full: u64, quick: u64| v.unwrap_or(if q { quick } else { full });
        let pick_d = |v: Option<Duration>, full: u64, quick: u64| {
            v.unwrap_or(Duration::from_secs(if q { quick } else { full }))
        };
        let mut scenarios: Vec<Scenario> = Vec::new();
        for s in a.scenarios.iter().chain(&a.scenario_flags) {
            if !scenarios.contains(s) {
                scenarios.push(*s);
            }
        }
        if scenarios.is_empty() {
            scenarios = Scenario::ALL.to_vec();
        }
        let plan = Plan {
            scenarios,
            quick: q,
            concurrency: a.concurrency,
            endpoints: a.endpoints,
            events: pick(a.events, 200_000, 20_000),
            fanout_events: pick(a.fanout_events, 10_000, 500),
            fanout_endpoints: a.fanout_endpoints,
            rate: a.rate,
            duration: pick_d(a.duration, 30, 5),
            backlog_events: pick(a.backlog_events, 1_000_000, 50_000),
            isolation_queued: pick(a.isolation_queued, 20_000, 2_000),
            isolation_delay: pick_d(a.isolation_delay, 5, 1),
            isolation_duration: pick_d(a.isolation_duration, 30, 3),
            isolation_hung: pick(a.isolation_hung, 200, 20),
            soak_events: pick(a.events, 10_000_000, 200_000),
            soak_every: 0,
            soak_retention: a.soak_retention,
            sink_delay: a.sink_delay,
            sink_fail_rate: a.sink_fail_rate,
            pause_hold: a.pause_hold,
            stall_timeout: a.stall_timeout,
            ceiling: !a.no_ceiling,
            server_cpus: a.server_cpus,
        };
        let mut plan = plan;
        plan.soak_every = a.soak_every.unwrap_or(plan.soak_events / 10).max(1);
        if plan.soak_retention < Duration::from_secs(10) {
            return Err("--soak-retention must be at least 10s".into());
        }
        if plan
            .server_cpus
            .is_some_and(|c| !(c.is_finite() && c >= 0.01))
        {
            return Err("--server-cpus must be a number of CPUs of at least 0.01".into());
        }
        if plan.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if plan.endpoints == 0 || plan.fanout_endpoints == 0 {
            return Err("--endpoints and --fanout-endpoints must be at least 1".into());
        }
        if plan.events == 0
            || plan.fanout_events == 0
            || plan.backlog_events == 0
            || plan.isolation_queued == 0
        {
            return Err("event counts must be at least 1".into());
        }
        if !(plan.rate.is_finite() && plan.rate > 0.0) {
            return Err("--rate must be a positive number of events per second".into());
        }
        if !(0.0..=1.0).contains(&plan.sink_fail_rate) {
            return Err("--sink-fail-rate must be between 0 and 1".into());
        }
        if plan.duration.is_zero() || plan.isolation_duration.is_zero() {
            return Err("durations must be longer than zero".into());
        }
        Ok(plan)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenarios": self.scenarios,
            "quick": self.quick,
            "concurrency": self.concurrency,
            "endpoints": self.endpoints,
            "events": self.events,
            "event_bytes": load::EVENT_BYTES,
            "fanout_events": self.fanout_events,
            "fanout_endpoints": self.fanout_endpoints,
            "rate": self.rate,
            "duration_s": self.duration.as_secs_f64(),
            "backlog_events": self.backlog_events,
            "isolation_queued": self.isolation_queued,
            "isolation_delay_s": self.isolation_delay.as_secs_f64(),
            "isolation_duration_s": self.isolation_duration.as_secs_f64(),
            "isolation_hung": self.isolation_hung,
            "soak_events": self.soak_events,
            "soak_every": self.soak_every,
            "soak_retention_s": self.soak_retention.as_secs_f64(),
            "sink_delay_s": self.sink_delay.as_secs_f64(),
            "sink_fail_rate": self.sink_fail_rate,
            "server_cpus": self.server_cpus,
        })
    }
}

/// The `chime` binary in this executable's directory (`target/release/chime` beside
/// `target/release/chime-bench`), or why there is none.
fn sibling_chime() -> Result<PathBuf, String> {
    let me = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable's directory: {e}"))?;
    let exe = me.with_file_name(format!("chime{}", std::env::consts::EXE_SUFFIX));
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "no chime binary at {}: build it with `cargo build --release` (which builds chime \
             and chime-bench), or pass --server-exe PATH",
            exe.display()
        ))
    }
}

/// Runs `chime-bench`.
fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let plan = match Plan::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chime-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let exe = match args.server_exe.clone().map_or_else(sibling_chime, Ok) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chime-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let data_root = args.data_root.clone().unwrap_or_else(std::env::temp_dir);
    if let Err(e) = std::fs::create_dir_all(&data_root) {
        eprintln!("chime-bench: cannot create {}: {e}", data_root.display());
        return ExitCode::from(1);
    }
    let server_opts = server::ServerOpts {
        exe,
        data_root,
        database_url: args.database_url.clone(),
        extra_args: args.server_args.clone(),
        keep_data: args.keep_data,
        cpus: args.server_cpus,
    };
    // One worker per core, set here rather than left to tokio's default, which reads
    // TOKIO_WORKER_THREADS: a setting meant for the server under test (the child inherits
    // it) must not also change the load generator and so the ceiling it measures.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chime-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(plan, server_opts, args.json.clone())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chime-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the ceiling and the scenarios; prints and writes the report. `Ok(false)` when a
/// scenario could not run (the others still do).
async fn run(
    plan: Plan,
    server_opts: server::ServerOpts,
    json: Option<PathBuf>,
) -> anyhow::Result<bool> {
    let machine = report::Machine::detect(&server_opts.data_root);
    if machine.data_fs == "tmpfs" {
        eprintln!(
            "chime-bench: warning: {} is on tmpfs, where fsync costs nothing; pass --data-root on a disk",
            server_opts.data_root.display()
        );
    }
    if server_opts
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("sqlite://"))
    {
        eprintln!(
            "chime-bench: note: a sqlite:// --database-url is shared by every scenario of this \
             run; start each run on an empty file, or run one scenario per run"
        );
    }
    let started_at = report::now_rfc3339();
    let ctx = scenarios::Ctx::new(plan.clone(), server_opts);
    let mut outcome = report::Report {
        chime_version: env!("CARGO_PKG_VERSION").to_owned(),
        command: report::command_line(),
        timestamp: started_at,
        machine,
        store: match ctx.server_opts.database_url.as_deref() {
            Some(u) if u.starts_with("postgres") => "postgresql".into(),
            _ => "sqlite".into(),
        },
        plan: plan.to_json(),
        ceiling: None,
        ceiling_after: None,
        scenarios: Vec::new(),
        failures: Vec::new(),
        targets: Vec::new(),
    };
    let mut ctx = ctx;
    if plan.ceiling {
        match scenarios::ceiling(&ctx).await {
            Ok(c) => {
                ctx.ceiling = Some(c.gauge());
                outcome.ceiling = Some(c);
            }
            Err(e) => {
                eprintln!("chime-bench: the ceiling could not be measured: {e:#}");
                outcome.failures.push(format!("ceiling: {e:#}"));
            }
        }
    }
    for s in &plan.scenarios {
        match scenarios::run(&ctx, *s).await {
            Ok(mut r) => {
                // Again after each scenario: a run takes minutes and a machine's speed can
                // move by tens of percent meanwhile, so each scenario is compared with the
                // ceilings measured on either side of it (and the next one starts from this).
                if ctx.ceiling.is_some() {
                    match scenarios::ceiling(&ctx).await {
                        Ok(c) => {
                            let after = Some(c.gauge());
                            r.set_ceilings(ctx.ceiling, after);
                            ctx.ceiling = after;
                            outcome.ceiling_after = Some(c);
                        }
                        Err(e) => {
                            eprintln!("chime-bench: the ceiling could not be measured again: {e:#}")
                        }
                    }
                }
                outcome.scenarios.push(r);
            }
            Err(e) => {
                eprintln!("chime-bench: scenario {} failed: {e:#}", s.name());
                outcome.failures.push(format!("{}: {e:#}", s.name()));
            }
        }
    }
    outcome.targets = report::evaluate_targets(&outcome);
    print!("{}", report::render(&outcome));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&outcome)?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("chime-bench: wrote {}", path.display());
    }
    Ok(outcome.failures.is_empty())
}
