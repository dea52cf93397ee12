//! What a run found: the results, the targets of issue 3 judged against them, the table printed
//! on stdout, the JSON written with `--json`, and the progress bars on stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// The whole report, as written to JSON.
#[derive(Serialize)]
pub struct Report {
    pub chime_version: String,
    pub command: String,
    pub timestamp: String,
    pub machine: Machine,
    /// `sqlite` (embedded, the default) or `postgresql`.
    pub store: String,
    pub plan: serde_json::Value,
    /// The ceiling measured before the first scenario.
    pub ceiling: Option<Ceiling>,
    /// The same measurement after the last scenario: how far the machine's own speed moved
    /// while the run lasted. (It is also measured between scenarios; see `ScenarioResult`.)
    pub ceiling_after: Option<Ceiling>,
    pub scenarios: Vec<ScenarioResult>,
    /// Scenarios (or the ceiling) that could not run, with the reason.
    pub failures: Vec<String>,
    pub targets: Vec<Target>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gb: f64,
    /// File system of the data directories (ext4, xfs, tmpfs, …).
    pub data_fs: String,
    /// Machine-wide busy share over the last minute when the run started (1.0 = one core).
    pub load_average_1m: f64,
}

impl Machine {
    pub fn detect(data_root: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            memory_gb: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            data_fs: fs_type(data_root),
            load_average_1m: load,
        }
    }
}

fn fs_type(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        other => format!("0x{other:x}"),
    }
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// The same load sent straight to the receiver: what this machine can do without chime.
#[derive(Serialize, Clone, Debug)]
pub struct Ceiling {
    pub posts: u64,
    pub posts_per_s: f64,
    pub concurrency: usize,
    pub latency_ms: Percentiles,
    pub errors: u64,
    pub bench_cpu_s: f64,
    pub other_cpu_s: f64,
    pub steal_cpu_s: f64,
    pub wall_s: f64,
}

/// What one ceiling says about the machine at the time: POSTs a second, and the CPU one
/// POST cost, the load generator's and the receiver's together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gauge {
    pub per_s: f64,
    pub cpu_us_per_post: f64,
}

impl Ceiling {
    pub fn gauge(&self) -> Gauge {
        Gauge {
            per_s: self.posts_per_s,
            cpu_us_per_post: self.bench_cpu_s * 1e6 / self.posts.max(1) as f64,
        }
    }
}

/// The CPU of one delivery counted in ceiling POSTs: each process's CPU per delivery over
/// the CPU one POST cost in the ceilings around the scenario. A machine's speed moves both
/// alike, so this compares across machines and days better than rates do. With the machine
/// fully busy the ratio to the ceiling would be `1 / total`: a ratio target `r` needs a
/// total of at most `1 / r`.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuInPosts {
    pub server: f64,
    pub bench: f64,
    /// PostgreSQL's server processes (0 with the embedded store).
    pub database: f64,
    pub total: f64,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct ScenarioResult {
    pub name: String,
    pub events_published: u64,
    pub events_accepted: u64,
    /// Accepted events per second of publishing.
    pub accepted_per_s: f64,
    pub deliveries_expected: u64,
    pub deliveries_completed: u64,
    /// Deliveries received per second (see each scenario for its time span).
    pub delivered_per_s: f64,
    pub publish_latency_ms: Percentiles,
    pub e2e_latency_ms: Percentiles,
    /// CPU seconds the server used from the scenario's first publish to its last delivery.
    pub server_cpu_s: f64,
    pub cpu_s_per_1k_deliveries: f64,
    pub server_peak_rss_mb: f64,
    /// CPU seconds of the bench process (load generator and receiver) in the same span.
    pub bench_cpu_s: f64,
    /// CPU seconds used by every other process on the machine in the same span (a busy
    /// machine makes every number worse: read the results with it).
    pub other_cpu_s: f64,
    /// CPU seconds the hypervisor gave to other guests while this one wanted to run.
    pub steal_cpu_s: f64,
    /// CPU seconds of the PostgreSQL server in the same span (0 with the embedded store).
    pub database_cpu_s: f64,
    pub wall_s: f64,
    pub errors: u64,
    pub error_detail: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    pub duplicates: u64,
    /// The ceiling measured just before this scenario and the one measured just after it.
    pub ceiling_before_per_s: Option<f64>,
    pub ceiling_after_per_s: Option<f64>,
    /// Delivered/s over `ceiling_per_s`.
    pub ratio_to_ceiling: Option<f64>,
    /// Per delivery, against the CPU of a ceiling POST (the mean of the ceilings around it).
    pub cpu_in_posts_per_delivery: Option<CpuInPosts>,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One target of issue 3 and whether this run met it.
#[derive(Serialize, Clone, Debug)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

fn scenario<'a>(r: &'a Report, name: &str) -> Option<&'a ScenarioResult> {
    r.scenarios.iter().find(|s| s.name == name)
}

/// Change of the ceiling from the start of the run to its end, as a fraction of the first
/// (-0.14: the machine served 14% fewer POSTs at the end).
pub fn ceiling_drift(before: &Ceiling, after: &Ceiling) -> f64 {
    after.posts_per_s / before.posts_per_s.max(f64::MIN_POSITIVE) - 1.0
}

/// A drift past this makes the absolute rates of one run hard to compare with another's.
pub const DRIFT_WARNING: f64 = 0.10;

/// The mean of two measurements, or the one there is.
fn mean(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (a, b) => a.or(b),
    }
}

/// Rounded to two decimals, as the report's seconds and ratios are kept.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl ScenarioResult {
    /// What this scenario is compared with: the mean of the ceilings measured just before
    /// and just after it, or the one before when no later one could be measured. A machine
    /// whose speed moves by tens of percent within a run (BENCHMARKS.md) then moves the
    /// ratio far less than a single ceiling taken minutes away would.
    pub fn ceiling_per_s(&self) -> Option<f64> {
        mean(self.ceiling_before_per_s, self.ceiling_after_per_s)
    }

    /// Records the ceilings around this scenario, its ratio to their mean, and its CPU per
    /// delivery in ceiling POSTs.
    pub fn set_ceilings(&mut self, before: Option<Gauge>, after: Option<Gauge>) {
        self.ceiling_before_per_s = before.map(|g| g.per_s);
        self.ceiling_after_per_s = after.map(|g| g.per_s);
        self.ratio_to_ceiling = self
            .ceiling_per_s()
            .map(|c| round2(self.delivered_per_s / c.max(f64::MIN_POSITIVE)));
        let post_us = mean(
            before.map(|g| g.cpu_us_per_post),
            after.map(|g| g.cpu_us_per_post),
        );
        self.cpu_in_posts_per_delivery = post_us
            .filter(|us| *us > 0.0 && self.deliveries_completed > 0)
            .map(|us| {
                let per = |cpu_s: f64| cpu_s * 1e6 / self.deliveries_completed as f64 / us;
                let (server, bench, database) = (
                    per(self.server_cpu_s),
                    per(self.bench_cpu_s),
                    per(self.database_cpu_s),
                );
                CpuInPosts {
                    server: round2(server),
                    bench: round2(bench),
                    database: round2(database),
                    total: round2(server + bench + database),
                }
            });
    }
}

/// Judges the targets that this run's scenarios can speak to.
pub fn evaluate_targets(r: &Report) -> Vec<Target> {
    let mut out = Vec::new();
    let mut push = |target: &str, measured: String, pass: bool| {
        out.push(Target {
            target: target.to_owned(),
            measured,
            pass,
        })
    };
    let throughput = scenario(r, "throughput");
    if let Some((t, c)) = throughput.and_then(|t| Some((t, t.ceiling_per_s()?))) {
        let ratio = t.delivered_per_s / c.max(f64::MIN_POSITIVE);
        // The bar for PostgreSQL (one node, local server) is half the embedded one.
        let (label, bar) = if r.store == "postgresql" {
            (
                "throughput (PostgreSQL): delivered/s >= 0.15 x ceiling",
                0.15,
            )
        } else {
            ("throughput: delivered/s >= 0.30 x ceiling", 0.30)
        };
        push(
            label,
            format!(
                "{:.0}/s = {ratio:.2} x {:.0}/s{}{}",
                t.delivered_per_s,
                c,
                match (t.ceiling_before_per_s, t.ceiling_after_per_s) {
                    (Some(b), Some(a)) => format!(" (ceiling {b:.0}/s before, {a:.0}/s after)"),
                    _ => String::new(),
                },
                match t.cpu_in_posts_per_delivery {
                    Some(cpu) => format!(
                        "; CPU per delivery {:.2} ceiling POSTs, at most {:.2} with the machine fully busy",
                        cpu.total,
                        1.0 / bar
                    ),
                    None => String::new(),
                }
            ),
            ratio >= bar,
        );
    }
    if let (Some(s), Some(t)) = (scenario(r, "source"), throughput) {
        let ratio = s.cpu_s_per_1k_deliveries / t.cpu_s_per_1k_deliveries.max(f64::MIN_POSITIVE);
        push(
            "source: server CPU per delivery <= 1.10 x throughput's",
            format!(
                "{:.3} s vs {:.3} s per 1000 = {ratio:.2} x ({:.0}/s vs {:.0}/s delivered)",
                s.cpu_s_per_1k_deliveries,
                t.cpu_s_per_1k_deliveries,
                s.delivered_per_s,
                t.delivered_per_s
            ),
            s.deliveries_completed > 0 && ratio <= 1.10,
        );
    }
    if let (Some(h), Some(t)) = (scenario(r, "https"), throughput) {
        let ratio = h.cpu_s_per_1k_deliveries / t.cpu_s_per_1k_deliveries.max(f64::MIN_POSITIVE);
        push(
            "https: server CPU per delivery < 1.5 x plain HTTP's",
            format!(
                "{:.3} s vs {:.3} s per 1000 = {ratio:.2} x ({:.0}/s vs {:.0}/s delivered)",
                h.cpu_s_per_1k_deliveries,
                t.cpu_s_per_1k_deliveries,
                h.delivered_per_s,
                t.delivered_per_s
            ),
            h.deliveries_completed > 0 && ratio < 1.5,
        );
    }
    if let Some(b) = scenario(r, "backlog") {
        push(
            "ingest with receivers paused >= 30,000 events/s",
            format!("{:.0}/s", b.accepted_per_s),
            b.accepted_per_s >= 30_000.0,
        );
    }
    if let Some(f) = scenario(r, "fanout") {
        push(
            "fanout >= 30,000 deliveries/s",
            format!("{:.0}/s", f.delivered_per_s),
            f.delivered_per_s >= 30_000.0,
        );
    }
    if let Some(n) = scenario(r, "nodes")
        && let Some((one, three)) = nodes_rates(n)
    {
        let budget = match r.plan.get("server_cpus").and_then(|c| c.as_f64()) {
            Some(c) => format!("each node capped at {c} CPUs"),
            None => "uncapped nodes sharing the machine".to_owned(),
        };
        push(
            "nodes: three nodes deliver more than one (issue 19)",
            format!(
                "{three:.0}/s against {one:.0}/s = {:.2} x ({budget})",
                three / one.max(f64::MIN_POSITIVE)
            ),
            three > one,
        );
    }
    if let Some(l) = scenario(r, "latency") {
        let e = l.e2e_latency_ms;
        push(
            "latency: publish->receive p50 <= 2 ms",
            format!("{:.2} ms", e.p50),
            e.count > 0 && e.p50 <= 2.0,
        );
        push(
            "latency: publish->receive p99 <= 10 ms",
            format!("{:.2} ms", e.p99),
            e.count > 0 && e.p99 <= 10.0,
        );
    }
    if let Some(b) = scenario(r, "backlog") {
        push(
            "backlog: server peak RSS <= 150 MB",
            format!(
                "{:.1} MB with {} pending",
                b.server_peak_rss_mb, b.events_accepted
            ),
            b.server_peak_rss_mb <= 150.0,
        );
        if let Some(t) = throughput {
            let ratio = b.delivered_per_s / t.delivered_per_s.max(f64::MIN_POSITIVE);
            push(
                "backlog: drain rate within 20% of throughput",
                format!(
                    "{:.0}/s = {ratio:.2} x {:.0}/s",
                    b.delivered_per_s, t.delivered_per_s
                ),
                ratio >= 0.8,
            );
        }
        if let Some(plan) = b.extra.get("claim_plan").and_then(|p| p.as_array()) {
            let lines: Vec<&str> = plan.iter().filter_map(|l| l.as_str()).collect();
            push(
                "backlog: the claim query uses an index",
                lines.join(" / "),
                plan_uses_index(&lines),
            );
        }
    }
    if let Some(i) = scenario(r, "isolation") {
        let base = i
            .extra
            .get("healthy_p99_baseline_ms")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let loaded = i
            .extra
            .get("healthy_p99_with_slow_ms")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let ratio = loaded / base.max(f64::MIN_POSITIVE);
        push(
            "isolation: healthy p99 with slow endpoint <= 2 x without",
            format!("{loaded:.2} ms vs {base:.2} ms = {ratio:.2} x"),
            base > 0.0 && ratio <= 2.0,
        );
        if let Some(hung) = i
            .extra
            .get("healthy_p99_with_hung_ms")
            .and_then(|v| v.as_f64())
        {
            let n = i
                .extra
                .get("hung_endpoints")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let ratio = hung / base.max(f64::MIN_POSITIVE);
            push(
                &format!(
                    "isolation: healthy p99 with {n} hung endpoints of another tenant <= 2 x without"
                ),
                format!("{hung:.2} ms vs {base:.2} ms = {ratio:.2} x"),
                base > 0.0 && ratio <= 2.0,
            );
        }
    }
    out
}

/// The `nodes` scenario's rates with one node and with three (`by_nodes`), when both ran.
fn nodes_rates(n: &ScenarioResult) -> Option<(f64, f64)> {
    let rate = |count: u64| {
        n.extra
            .get("by_nodes")?
            .as_array()?
            .iter()
            .find(|r| r.get("nodes").and_then(|v| v.as_u64()) == Some(count))?
            .get("delivered_per_s")?
            .as_f64()
    };
    Some((rate(1)?, rate(3)?))
}

/// True when the plan reads deliveries through an index and scans no table.
pub fn plan_uses_index(lines: &[&str]) -> bool {
    let bare_scan = lines.iter().any(|l| {
        let l = l.trim_start_matches([' ', '|', '-', '`']);
        l.starts_with("SCAN") && !l.contains("USING")
    });
    let index = lines
        .iter()
        .any(|l| l.contains("deliveries_due") || (l.contains(" d ") && l.contains("INDEX")));
    index && !bare_scan
}

fn fmt_rate(v: f64) -> String {
    if v <= 0.0 {
        return "-".into();
    }
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn fmt_ms(v: f64, count: u64) -> String {
    if count == 0 {
        return "-".into();
    }
    if v >= 1000.0 {
        format!("{:.1}s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The table and the targets, as printed on stdout.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "\nchime {} bench, {} store, on {} cores ({}), {} GB, data on {}; {}",
        r.chime_version,
        r.store,
        m.cores,
        m.cpu_model,
        m.memory_gb,
        m.data_fs,
        if r.plan["quick"] == true {
            "quick sizes"
        } else {
            "full sizes"
        }
    );
    let header = [
        "scenario",
        "accepted/s",
        "delivered/s",
        "pub p50",
        "pub p99",
        "e2e p50",
        "e2e p90",
        "e2e p99",
        "e2e max",
        "CPU s/1k",
        "RSS MB",
        "errors",
        "x ceiling",
    ];
    let widths = [10, 11, 12, 8, 8, 8, 8, 8, 8, 9, 7, 7, 9];
    let mut rows: Vec<Vec<String>> = Vec::new();
    // The ceiling's row; `ratio` is its rate over the first ceiling's.
    let ceiling_row = |label: &str, c: &Ceiling, ratio: f64| {
        let mut row = vec![
            label.to_owned(),
            "-".into(),
            fmt_rate(c.posts_per_s),
            fmt_ms(c.latency_ms.p50, c.latency_ms.count),
            fmt_ms(c.latency_ms.p99, c.latency_ms.count),
        ];
        row.extend(std::iter::repeat_n("-".to_owned(), 6));
        row.extend([c.errors.to_string(), format!("{ratio:.2}")]);
        row
    };
    if let Some(c) = &r.ceiling {
        rows.push(ceiling_row("ceiling", c, 1.0));
    }
    for s in &r.scenarios {
        let (p, e) = (s.publish_latency_ms, s.e2e_latency_ms);
        rows.push(vec![
            s.name.clone(),
            fmt_rate(s.accepted_per_s),
            fmt_rate(s.delivered_per_s),
            fmt_ms(p.p50, p.count),
            fmt_ms(p.p99, p.count),
            fmt_ms(e.p50, e.count),
            fmt_ms(e.p90, e.count),
            fmt_ms(e.p99, e.count),
            fmt_ms(e.max, e.count),
            format!("{:.3}", s.cpu_s_per_1k_deliveries),
            format!("{:.0}", s.server_peak_rss_mb),
            s.errors.to_string(),
            s.ratio_to_ceiling
                .map_or_else(|| "-".into(), |v| format!("{v:.2}")),
        ]);
    }
    if let (Some(first), Some(c)) = (&r.ceiling, &r.ceiling_after) {
        rows.push(ceiling_row("ceiling end", c, 1.0 + ceiling_drift(first, c)));
    }
    let line = |out: &mut String, cells: &[String]| {
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(out, "{c:<w$}");
            } else {
                let _ = write!(out, " {c:>w$}");
            }
        }
        out.push('\n');
    };
    line(
        &mut out,
        &header.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    for row in &rows {
        line(&mut out, row);
    }
    let _ = writeln!(
        out,
        "(latencies in ms; e2e = publish->receive; CPU s/1k = server CPU seconds per 1,000 deliveries;\n \
         x ceiling = delivered/s over the mean of the ceilings measured just before and after the scenario;\n \
         CPU per delivery in ceiling POSTs = each process's CPU per delivery over the CPU one ceiling POST cost)"
    );
    if let Some(c) = &r.ceiling {
        let _ = writeln!(
            out,
            "  ceiling: bench {:.1} CPU s, other processes {:.1} CPU s, steal {:.1} s in {:.1} s",
            c.bench_cpu_s, c.other_cpu_s, c.steal_cpu_s, c.wall_s
        );
    }
    if let (Some(first), Some(last)) = (&r.ceiling, &r.ceiling_after) {
        let drift = ceiling_drift(first, last);
        let _ = writeln!(
            out,
            "  ceiling end: {:+.0}% against the start{}",
            drift * 100.0,
            if drift.abs() > DRIFT_WARNING {
                ": the machine's speed moved during the run; compare runs by CPU s/1k, or rerun"
            } else {
                ""
            }
        );
    }
    for s in &r.scenarios {
        let mut notes = Vec::new();
        for key in [
            "ingest_per_s",
            "drain_per_s",
            "rss_after_publish_mb",
            "healthy_p99_baseline_ms",
            "healthy_p99_with_slow_ms",
            "slow_delivered",
            "publish_lag_p99_ms",
        ] {
            if let Some(v) = s.extra.get(key) {
                notes.push(format!("{key} {v}"));
            }
        }
        if s.database_cpu_s > 0.0 {
            notes.insert(0, format!("PostgreSQL {:.1} CPU s", s.database_cpu_s));
        }
        if let Some(cpu) = s.cpu_in_posts_per_delivery {
            let database = if s.database_cpu_s > 0.0 {
                format!(", PostgreSQL {:.2}", cpu.database)
            } else {
                String::new()
            };
            notes.insert(
                0,
                format!(
                    "CPU per delivery {:.2} ceiling POSTs (server {:.2}, bench {:.2}{database})",
                    cpu.total, cpu.server, cpu.bench
                ),
            );
        }
        let _ = writeln!(
            out,
            "  {}: server {:.1} CPU s, bench {:.1} CPU s, other processes {:.1} CPU s, steal {:.1} s in {:.1} s{}{}",
            s.name,
            s.server_cpu_s,
            s.bench_cpu_s,
            s.other_cpu_s,
            s.steal_cpu_s,
            s.wall_s,
            if notes.is_empty() { "" } else { "; " },
            notes.join(", ")
        );
        for e in &s.error_samples {
            let _ = writeln!(out, "    error: {e}");
        }
    }
    if let Some(plan) = r
        .scenarios
        .iter()
        .find_map(|s| s.extra.get("claim_plan"))
        .and_then(|p| p.as_array())
    {
        let _ = writeln!(out, "\nclaim query plan (backlog, after publishing):");
        for l in plan {
            let _ = writeln!(out, "  {}", l.as_str().unwrap_or_default());
        }
    }
    if !r.targets.is_empty() {
        let _ = writeln!(out, "\ntargets:");
        for t in &r.targets {
            let _ = writeln!(
                out,
                "  {:<4} {:<58} {}",
                if t.pass { "PASS" } else { "MISS" },
                t.target,
                t.measured
            );
        }
    }
    for f in &r.failures {
        let _ = writeln!(out, "FAILED: {f}");
    }
    out
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// This process's command line, quoted for a POSIX shell where needed.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

type Counter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Progress bars on stderr when it is a terminal; one line per finished phase otherwise.
#[derive(Clone, Copy)]
pub struct Progress {
    terminal: bool,
}

pub struct PhaseBar {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    label: String,
    what: String,
    total: u64,
    count: Counter,
    started: Instant,
}

impl Progress {
    pub fn detect() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn start(&self, label: &str, what: &str, total: u64, count: Counter) -> PhaseBar {
        let (bar, ticker) = if self.terminal {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} {msg:<9} [{bar:30}] {human_pos:>9}/{human_len:<9} {per_sec:>11} {elapsed:>4}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar.set_message(what.to_owned());
            let (b, c) = (bar.clone(), count.clone());
            let ticker = tokio::spawn(async move {
                loop {
                    b.set_position(c());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            (Some(bar), Some(ticker))
        } else {
            (None, None)
        };
        PhaseBar {
            bar,
            ticker,
            label: label.to_owned(),
            what: what.to_owned(),
            total,
            count,
            started: Instant::now(),
        }
    }
}

impl PhaseBar {
    pub fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        let n = (self.count)();
        match self.bar {
            Some(bar) => {
                bar.set_position(n);
                bar.finish();
            }
            None => eprintln!(
                "{:>10}: {} {n}/{} in {:.1}s",
                self.label,
                self.what,
                self.total,
                self.started.elapsed().as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_rates_reads_one_and_three_from_by_nodes() {
        let mut n = ScenarioResult::default();
        assert_eq!(nodes_rates(&n), None);
        n.extra.insert(
            "by_nodes".into(),
            serde_json::json!([
                {"nodes": 1, "delivered_per_s": 2112.0},
                {"nodes": 2, "delivered_per_s": 3337.0},
                {"nodes": 3, "delivered_per_s": 3842.0},
            ]),
        );
        assert_eq!(nodes_rates(&n), Some((2112.0, 3842.0)));
    }

    #[test]
    fn plan_check_wants_the_index_and_no_scan() {
        assert!(plan_uses_index(&[
            "SEARCH d USING INDEX deliveries_due (endpoint_id=? AND next_attempt_at<?)",
            "SEARCH e USING INDEX sqlite_autoindex_events_1 (id=?)",
            "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY",
        ]));
        assert!(!plan_uses_index(&[
            "SCAN d",
            "SEARCH e USING INDEX sqlite_autoindex_events_1 (id=?)",
        ]));
    }

    #[test]
    fn drift_is_the_end_ceiling_against_the_first() {
        let at = |posts_per_s| Ceiling {
            posts: 1,
            posts_per_s,
            concurrency: 64,
            latency_ms: Percentiles::default(),
            errors: 0,
            bench_cpu_s: 0.0,
            other_cpu_s: 0.0,
            steal_cpu_s: 0.0,
            wall_s: 1.0,
        };
        assert!((ceiling_drift(&at(81_806.0), &at(70_159.0)) + 0.1424).abs() < 1e-3);
        assert!((ceiling_drift(&at(50_000.0), &at(55_000.0)) - 0.10).abs() < 1e-9);
        assert!(ceiling_drift(&at(0.0), &at(1.0)).is_finite());
    }

    #[test]
    fn a_scenario_is_compared_with_the_ceilings_around_it() {
        let mut s = ScenarioResult {
            name: "throughput".into(),
            delivered_per_s: 6_000.0,
            ..Default::default()
        };
        let g = |per_s| Gauge {
            per_s,
            cpu_us_per_post: 20.0,
        };
        s.set_ceilings(Some(g(35_000.0)), Some(g(45_000.0)));
        assert_eq!(s.ceiling_per_s(), Some(40_000.0));
        assert_eq!(s.ratio_to_ceiling, Some(0.15));
        // No later measurement: the one before stands alone.
        s.set_ceilings(Some(g(30_000.0)), None);
        assert_eq!(s.ratio_to_ceiling, Some(0.2));
        s.set_ceilings(None, None);
        assert_eq!(s.ratio_to_ceiling, None);

        // The target is judged against the same mean.
        s.set_ceilings(Some(g(18_000.0)), Some(g(22_000.0)));
        let report = Report {
            chime_version: String::new(),
            command: String::new(),
            timestamp: String::new(),
            machine: Machine::detect(Path::new(".")),
            store: "sqlite".into(),
            plan: serde_json::Value::Null,
            ceiling: None,
            ceiling_after: None,
            scenarios: vec![s],
            failures: Vec::new(),
            targets: Vec::new(),
        };
        let targets = evaluate_targets(&report);
        let t = &targets[0];
        assert!(t.pass, "{t:?}");
        assert!(t.measured.starts_with("6000/s = 0.30 x 20000/s"), "{t:?}");
    }

    #[test]
    fn cpu_per_delivery_is_counted_in_ceiling_posts() {
        let mut s = ScenarioResult {
            name: "throughput".into(),
            deliveries_completed: 100_000,
            server_cpu_s: 5.0,
            bench_cpu_s: 2.0,
            database_cpu_s: 1.0,
            ..Default::default()
        };
        // A POST cost 16 and 24 µs in the ceilings around it: 20 on average.
        let before = Gauge {
            per_s: 120_000.0,
            cpu_us_per_post: 16.0,
        };
        let after = Gauge {
            per_s: 80_000.0,
            cpu_us_per_post: 24.0,
        };
        s.set_ceilings(Some(before), Some(after));
        // Per delivery: server 50 µs, bench 20, PostgreSQL 10.
        assert_eq!(
            s.cpu_in_posts_per_delivery,
            Some(CpuInPosts {
                server: 2.5,
                bench: 1.0,
                database: 0.5,
                total: 4.0
            })
        );
        // Nothing delivered: nothing to divide.
        s.deliveries_completed = 0;
        s.set_ceilings(Some(before), Some(after));
        assert_eq!(s.cpu_in_posts_per_delivery, None);
    }

    #[test]
    fn a_ceiling_gauges_the_cpu_of_one_post() {
        let c = Ceiling {
            posts: 200_000,
            posts_per_s: 100_000.0,
            concurrency: 64,
            latency_ms: Percentiles::default(),
            errors: 0,
            bench_cpu_s: 4.0,
            other_cpu_s: 0.0,
            steal_cpu_s: 0.0,
            wall_s: 2.0,
        };
        assert_eq!(
            c.gauge(),
            Gauge {
                per_s: 100_000.0,
                cpu_us_per_post: 20.0
            }
        );
    }

    #[test]
    fn rates_have_thousands_separators() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_rate(0.0), "-");
    }
}
