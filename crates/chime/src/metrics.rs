//! Metrics: counters, gauges and histograms kept in atomics, and their Prometheus text
//! exposition (`GET /metrics`).
//!
//! Parts:
//! - [`Metrics`]: every series chime keeps, as fixed arrays of atomics indexed by label
//!   values known at compile time (error codes, statuses, error kinds). Recording is one
//!   atomic add (a histogram: three), never a lock or an allocation, so the hot path
//!   (publish, attempt, record) does not slow down.
//! - [`TenantSeries`]: the opt-in per-tenant series, a fixed table of `cap` slots claimed
//!   once per tenant (lock-free); tenants past the cap share the `_other` series.
//! - The store's counts (`store::Gauges`: the backlog, endpoints by state) are read at
//!   scrape time, within a deadline, and passed to [`Metrics::render`].
//!
//! Invariant: every label's values are bounded: a fixed set, or at most `cap` tenants plus
//! `_other`. No per-event, per-delivery or per-endpoint id is ever a label.

use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::api::error::Code;
use crate::dispatch::http::ErrorKind;
use crate::store::Gauges;

/// Every API error code, in the order of `Code`'s variants (the refused-events label).
const CODES: [Code; 17] = [
    Code::MalformedJson,
    Code::MalformedRequest,
    Code::RequestTimeout,
    Code::UriTooLong,
    Code::HeadersTooLarge,
    Code::Unauthorized,
    Code::Forbidden,
    Code::NotFound,
    Code::MethodNotAllowed,
    Code::Conflict,
    Code::PayloadTooLarge,
    Code::InvalidRequest,
    Code::RefusedTarget,
    Code::InvalidSignature,
    Code::RateLimited,
    Code::Internal,
    Code::Unavailable,
];

/// The attempt's `error_kind` label: `none` for a success, else the stable kind.
const ERROR_KINDS: [Option<ErrorKind>; 12] = [
    None,
    Some(ErrorKind::Timeout),
    Some(ErrorKind::Connect),
    Some(ErrorKind::Dns),
    Some(ErrorKind::Tls),
    Some(ErrorKind::RefusedTarget),
    Some(ErrorKind::Status),
    Some(ErrorKind::Protocol),
    Some(ErrorKind::Auth),
    Some(ErrorKind::Rejected),
    Some(ErrorKind::Transformation),
    Some(ErrorKind::Cancelled),
];

/// The series of an attempt's kind: its place in `ERROR_KINDS`. An exhaustive match, so a
/// new kind does not compile until it has a series (it could otherwise count as a success);
/// a test checks the two agree.
fn error_kind_index(kind: Option<ErrorKind>) -> usize {
    match kind {
        None => 0,
        Some(ErrorKind::Timeout) => 1,
        Some(ErrorKind::Connect) => 2,
        Some(ErrorKind::Dns) => 3,
        Some(ErrorKind::Tls) => 4,
        Some(ErrorKind::RefusedTarget) => 5,
        Some(ErrorKind::Status) => 6,
        Some(ErrorKind::Protocol) => 7,
        Some(ErrorKind::Auth) => 8,
        Some(ErrorKind::Rejected) => 9,
        Some(ErrorKind::Transformation) => 10,
        Some(ErrorKind::Cancelled) => 11,
    }
}

fn error_kind_label(kind: Option<ErrorKind>) -> &'static str {
    kind.map_or("none", ErrorKind::as_str)
}

/// How a delivery ended, the finished-deliveries label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Succeeded,
    /// Retries exhausted (the dead-letter list).
    Failed,
}

/// Which store commit a latency belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// An event and its deliveries (`EventLog::publish`).
    Publish,
    /// A batch of attempt outcomes (`Queue::record`).
    Record,
}

/// Bucket bounds in seconds, from 1 ms to 60 s: wide enough for a local commit and for an
/// attempt at the request timeout.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
];

/// A histogram with fixed buckets: per-bucket counts (not cumulative; summed when rendered),
/// the sum in microseconds and the count.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        // Read after the buckets: `+Inf` is never below the last finite bucket.
        let count = self.count.load(Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// One tenant's opt-in series.
#[derive(Default)]
struct TenantCounters {
    accepted: AtomicU64,
    attempts_ok: AtomicU64,
    attempts_failed: AtomicU64,
}

/// One slot of the per-tenant table: claimed once by a tenant, then read only.
#[derive(Default)]
struct TenantSlot {
    tenant: OnceLock<Box<str>>,
    counters: TenantCounters,
}

/// Per-tenant series, opt-in (`metrics_tenant_series`) and capped: `cap` slots, each claimed
/// by the first tenant that hashes to it (open addressing, lock-free through `OnceLock`);
/// once every slot is taken, other tenants count in `other`. A lookup is a hash and a few
/// string comparisons, with no lock and no allocation after a slot is claimed.
pub struct TenantSeries {
    slots: Box<[TenantSlot]>,
    other: TenantCounters,
}

/// Slots a lookup tries before counting the tenant as `_other`: bounds its cost when the
/// table is full.
const MAX_PROBES: usize = 8;

/// The label of the tenants past the cap.
pub const OTHER_TENANTS: &str = "_other";

impl TenantSeries {
    fn new(cap: usize) -> Self {
        Self {
            slots: (0..cap).map(|_| TenantSlot::default()).collect(),
            other: TenantCounters::default(),
        }
    }

    fn get(&self, tenant: &str) -> Option<&TenantCounters> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let start = (foldhash::fast::FixedState::with_seed(17).hash_one(tenant) as usize) % n;
        for i in 0..n.min(MAX_PROBES) {
            let slot = &self.slots[(start + i) % n];
            let owner = slot.tenant.get_or_init(|| tenant.into());
            if &**owner == tenant {
                return Some(&slot.counters);
            }
        }
        Some(&self.other)
    }

    fn render(&self, out: &mut String) {
        if self.slots.is_empty() {
            return;
        }
        let named = self
            .slots
            .iter()
            .filter_map(|s| s.tenant.get().map(|t| (&**t, &s.counters)));
        let rows: Vec<(&str, &TenantCounters)> =
            named.chain([(OTHER_TENANTS, &self.other)]).collect();
        header(
            out,
            "chime_tenant_events_accepted_total",
            "counter",
            "Events accepted, per tenant (opt-in, capped; the rest count as _other).",
        );
        for (t, c) in &rows {
            let t = escape(t);
            let v = c.accepted.load(Relaxed);
            let _ = writeln!(
                out,
                "chime_tenant_events_accepted_total{{tenant=\"{t}\"}} {v}"
            );
        }
        header(
            out,
            "chime_tenant_attempts_total",
            "counter",
            "Delivery attempts, per tenant and result (opt-in, capped).",
        );
        for (t, c) in &rows {
            let t = escape(t);
            for (result, v) in [("success", &c.attempts_ok), ("failure", &c.attempts_failed)] {
                let v = v.load(Relaxed);
                let _ = writeln!(
                    out,
                    "chime_tenant_attempts_total{{tenant=\"{t}\",result=\"{result}\"}} {v}"
                );
            }
        }
    }
}

/// Every series of one `chime serve`. Shared (`Arc`) by the API, the dispatcher, the
/// recorder and retention; never a process-global.
pub struct Metrics {
    accepted: AtomicU64,
    refused: [AtomicU64; CODES.len()],
    /// Refusals that carried no `Code` (axum's own path rejections).
    refused_other: AtomicU64,
    finished: [AtomicU64; 2],
    /// `[succeeded?][error kind]`; a success has kind `none`, a failure never has.
    attempts: [AtomicU64; ERROR_KINDS.len()],
    attempt_duration: Histogram,
    publish_duration: Histogram,
    publish_to_first_attempt: Histogram,
    in_flight: AtomicI64,
    /// Nodes sharing the store, as this node last counted them.
    nodes: AtomicU64,
    commit: [Histogram; 2],
    payloads_purged: AtomicU64,
    events_deleted: AtomicU64,
    tenants: TenantSeries,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Metrics {
    /// `tenant_series`: how many tenants get series of their own (0: none).
    pub fn new(tenant_series: usize) -> Self {
        Self {
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            refused_other: AtomicU64::new(0),
            finished: Default::default(),
            attempts: Default::default(),
            attempt_duration: Histogram::default(),
            publish_duration: Histogram::default(),
            publish_to_first_attempt: Histogram::default(),
            in_flight: AtomicI64::new(0),
            nodes: AtomicU64::new(1),
            commit: Default::default(),
            payloads_purged: AtomicU64::new(0),
            events_deleted: AtomicU64::new(0),
            tenants: TenantSeries::new(tenant_series),
        }
    }

    /// A publish request was answered 202 after `took`.
    pub fn event_accepted(&self, tenant: &str, took: Duration) {
        self.accepted.fetch_add(1, Relaxed);
        self.publish_duration.observe(took);
        if let Some(t) = self.tenants.get(tenant) {
            t.accepted.fetch_add(1, Relaxed);
        }
    }

    /// A publish request was refused with `code` (`None`: a refusal without one).
    pub fn event_refused(&self, code: Option<Code>) {
        match code.and_then(|c| CODES.iter().position(|k| *k == c)) {
            Some(i) => self.refused[i].fetch_add(1, Relaxed),
            None => self.refused_other.fetch_add(1, Relaxed),
        };
    }

    /// An attempt's HTTP exchange ended.
    pub fn attempt(&self, tenant: &str, error_kind: Option<ErrorKind>, took: Duration) {
        self.attempts[error_kind_index(error_kind)].fetch_add(1, Relaxed);
        self.attempt_duration.observe(took);
        if let Some(t) = self.tenants.get(tenant) {
            let c = if error_kind.is_none() {
                &t.attempts_ok
            } else {
                &t.attempts_failed
            };
            c.fetch_add(1, Relaxed);
        }
    }

    /// A delivery's first attempt started `after` its event was accepted.
    pub fn first_attempt(&self, after: Duration) {
        self.publish_to_first_attempt.observe(after);
    }

    pub fn attempt_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    pub fn attempt_ended(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// The dispatcher counted the nodes sharing the store (itself included).
    pub fn set_nodes(&self, n: u32) {
        self.nodes.store(u64::from(n), Relaxed);
    }

    /// A delivery's final state was recorded.
    pub fn delivery_finished(&self, how: Finished) {
        self.finished[how as usize].fetch_add(1, Relaxed);
    }

    pub fn commit(&self, which: Commit, took: Duration) {
        self.commit[which as usize].observe(took);
    }

    pub fn retention(&self, payloads_purged: u64, events_deleted: u64) {
        self.payloads_purged.fetch_add(payloads_purged, Relaxed);
        self.events_deleted.fetch_add(events_deleted, Relaxed);
    }

    /// The exposition in Prometheus's text format (version 0.0.4).
    pub fn render(&self, store: Option<Gauges>) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let o = &mut out;
        header(
            o,
            "chime_build_info",
            "gauge",
            "The running chime's version.",
        );
        let _ = writeln!(
            o,
            "chime_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        header(
            o,
            "chime_events_accepted_total",
            "counter",
            "Events accepted (answered 202).",
        );
        counter_line(o, "chime_events_accepted_total", "", &self.accepted);
        header(
            o,
            "chime_events_refused_total",
            "counter",
            "Publish requests refused, by API error code.",
        );
        for (code, n) in CODES.iter().zip(&self.refused) {
            let labels = format!("code=\"{}\"", code.as_str());
            counter_line(o, "chime_events_refused_total", &labels, n);
        }
        counter_line(
            o,
            "chime_events_refused_total",
            "code=\"other\"",
            &self.refused_other,
        );

        header(
            o,
            "chime_deliveries_finished_total",
            "counter",
            "Deliveries that reached a final state, by status.",
        );
        for (status, n) in ["succeeded", "failed"].iter().zip(&self.finished) {
            let labels = format!("status=\"{status}\"");
            counter_line(o, "chime_deliveries_finished_total", &labels, n);
        }

        header(
            o,
            "chime_attempts_total",
            "counter",
            "Delivery attempts, by result and error kind.",
        );
        for (kind, n) in ERROR_KINDS.iter().zip(&self.attempts) {
            let result = if kind.is_none() { "success" } else { "failure" };
            let labels = format!(
                "result=\"{result}\",error_kind=\"{}\"",
                error_kind_label(*kind)
            );
            counter_line(o, "chime_attempts_total", &labels, n);
        }

        for (name, help, h) in [
            (
                "chime_attempt_duration_seconds",
                "Duration of delivery attempts (connect to response captured).",
                &self.attempt_duration,
            ),
            (
                "chime_publish_duration_seconds",
                "Time to accept an event: request received to 202 (durable).",
                &self.publish_duration,
            ),
            (
                "chime_publish_to_first_attempt_seconds",
                "Time from an event's acceptance to the start of a delivery's first attempt.",
                &self.publish_to_first_attempt,
            ),
        ] {
            header(o, name, "histogram", help);
            h.render(o, name, "");
        }
        header(
            o,
            "chime_store_commit_seconds",
            "histogram",
            "Store commit latency, by operation (publish: one event; record: a batch of attempts).",
        );
        for (op, h) in ["publish", "record"].iter().zip(&self.commit) {
            h.render(o, "chime_store_commit_seconds", &format!("op=\"{op}\""));
        }

        header(
            o,
            "chime_attempts_in_flight",
            "gauge",
            "Delivery attempts in flight on this node.",
        );
        let _ = writeln!(
            o,
            "chime_attempts_in_flight {}",
            self.in_flight.load(Relaxed).max(0)
        );

        header(
            o,
            "chime_nodes",
            "gauge",
            "Nodes sharing the store, this one included, at this node's last count; each takes its share of an endpoint's limits.",
        );
        let _ = writeln!(o, "chime_nodes {}", self.nodes.load(Relaxed));

        header(
            o,
            "chime_store_up",
            "gauge",
            "1 if the store answered this scrape's counts within the deadline.",
        );
        let _ = writeln!(o, "chime_store_up {}", u8::from(store.is_some()));
        if let Some(s) = store {
            header(
                o,
                "chime_deliveries_pending",
                "gauge",
                "Pending deliveries: due now (in flight included) or scheduled for a retry.",
            );
            let _ = writeln!(o, "chime_deliveries_pending{{state=\"due\"}} {}", s.due);
            let _ = writeln!(
                o,
                "chime_deliveries_pending{{state=\"scheduled\"}} {}",
                s.scheduled
            );
            header(o, "chime_endpoints", "gauge", "Endpoints, by state.");
            for (state, n) in [
                ("healthy", s.endpoints_healthy),
                ("failing", s.endpoints_failing),
                ("disabled", s.endpoints_disabled),
            ] {
                let _ = writeln!(o, "chime_endpoints{{state=\"{state}\"}} {n}");
            }
        }

        header(
            o,
            "chime_retention_payloads_purged_total",
            "counter",
            "Event payloads removed by retention.",
        );
        counter_line(
            o,
            "chime_retention_payloads_purged_total",
            "",
            &self.payloads_purged,
        );
        header(
            o,
            "chime_retention_events_deleted_total",
            "counter",
            "Events deleted by retention, with their deliveries and attempts.",
        );
        counter_line(
            o,
            "chime_retention_events_deleted_total",
            "",
            &self.events_deleted,
        );
        self.tenants.render(o);
        out
    }
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter_line(out: &mut String, name: &str, labels: &str, n: &AtomicU64) {
    let v = n.load(Relaxed);
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {v}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// A label value as the text format writes it (tenant ids are validated, but the format's
/// escapes cost nothing to apply).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_kind_counts_in_its_own_series() {
        for (i, kind) in ERROR_KINDS.iter().enumerate() {
            assert_eq!(error_kind_index(*kind), i, "{kind:?}");
        }
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120));
        let mut out = String::new();
        h.render(&mut out, "x", "op=\"a\"");
        assert!(
            out.contains("x_bucket{op=\"a\",le=\"0.0025\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{op=\"a\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{op=\"a\",le=\"60\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{op=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{op=\"a\"} 120.006\n"), "{out}");
        assert!(out.contains("x_count{op=\"a\"} 3\n"), "{out}");
    }

    #[test]
    fn tenant_series_are_capped() {
        let m = Metrics::new(2);
        for t in ["a", "b", "c", "d", "a"] {
            m.event_accepted(t, Duration::ZERO);
        }
        let out = m.render(None);
        assert!(out.contains("chime_tenant_events_accepted_total{tenant=\"a\"} 2"));
        assert!(out.contains("chime_tenant_events_accepted_total{tenant=\"b\"} 1"));
        assert!(out.contains("chime_tenant_events_accepted_total{tenant=\"_other\"} 2"));
        assert!(!out.contains("tenant=\"c\""));
        assert!(!Metrics::new(0).render(None).contains("chime_tenant_"));
    }

    #[test]
    fn labels_come_from_fixed_sets() {
        let m = Metrics::default();
        m.event_refused(Some(Code::Unauthorized));
        m.event_refused(None);
        m.attempt("t", Some(ErrorKind::Timeout), Duration::from_millis(5));
        m.attempt("t", None, Duration::from_millis(5));
        m.delivery_finished(Finished::Failed);
        let out = m.render(Some(Gauges {
            due: 3,
            ..Default::default()
        }));
        assert!(out.contains("chime_events_refused_total{code=\"unauthorized\"} 1"));
        assert!(out.contains("chime_events_refused_total{code=\"other\"} 1"));
        assert!(out.contains("chime_attempts_total{result=\"failure\",error_kind=\"timeout\"} 1"));
        assert!(out.contains("chime_attempts_total{result=\"success\",error_kind=\"none\"} 1"));
        assert!(out.contains("chime_deliveries_finished_total{status=\"failed\"} 1"));
        assert!(out.contains("chime_deliveries_pending{state=\"due\"} 3"));
        assert!(out.contains("chime_store_up 1"));
        assert!(!out.contains("tenant="), "no tenant series unless opted in");
    }
}
