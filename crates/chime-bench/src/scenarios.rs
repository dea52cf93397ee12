//! The ceiling and the scenarios of issue 3. Each scenario gets its own receiver, its own
//! `chime serve` on a fresh data directory (so its CPU and peak RSS are its own), sets up a
//! tenant and endpoints through the API, publishes, waits for the deliveries, and reads the
//! server's usage before stopping it.
//!
//! Time spans: accepted/s is over the publish phase (first send to last answer); delivered/s
//! is from the first publish to the last delivery received (backlog: from the resume).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::load::{self, HttpClient, LoadStats, Target, per_s};
use super::report::{Ceiling, Gauge, Percentiles, Progress, ScenarioResult, round2};
use super::server::{self, Server, ServerOpts, Usage};
use super::sink::{HungSink, RecvSummary, Sink, SinkOpts, Tracker};
use super::{Plan, Scenario};

const TENANT: &str = "bench";
/// The isolation scenario's other tenant, whose receivers hang.
const HOSTILE: &str = "hostile";
/// Events per second the hostile tenant publishes, each to all of its hung endpoints.
const HOSTILE_RATE: f64 = 2.0;
/// Time given to the server after the last delivery to record it before its usage is read.
const SETTLE: Duration = Duration::from_millis(250);

pub struct Ctx {
    pub plan: Plan,
    pub server_opts: ServerOpts,
    pub client: HttpClient,
    /// The latest ceiling: what the next scenario is compared with first.
    pub ceiling: Option<Gauge>,
    progress: Progress,
}

/// Usage readings at one moment.
struct Snap {
    server: Usage,
    bench_cpu_s: f64,
    machine: server::MachineCpu,
    database_cpu_s: f64,
    at: Instant,
}

fn snap(server: Option<&Server>) -> Snap {
    Snap {
        server: server.map(Server::usage).unwrap_or_default(),
        bench_cpu_s: server::usage_of("self").unwrap_or_default().cpu_s,
        machine: server::machine_cpu(),
        database_cpu_s: server.map_or(0.0, |s| {
            if s.sqlite_database().is_none() {
                server::postgres_cpu_s()
            } else {
                0.0
            }
        }),
        at: Instant::now(),
    }
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

impl Ctx {
    pub fn new(plan: Plan, server_opts: ServerOpts) -> Self {
        Self {
            plan,
            server_opts,
            client: load::client(),
            ceiling: None,
            progress: Progress::detect(),
        }
    }

    fn sink_opts(&self, slow: Option<(u64, Duration)>) -> SinkOpts {
        SinkOpts {
            delay: self.plan.sink_delay,
            fail_rate: self.plan.sink_fail_rate,
            slow,
            hold_max: self.plan.pause_hold,
            tls: None,
        }
    }

    fn chime_target(&self, server: &Server, route: load::Route) -> Target {
        Target {
            bases: vec![server.base()],
            authorization: Some(
                HeaderValue::from_str(&format!("Bearer {}", server::ADMIN_TOKEN))
                    .expect("a valid header"),
            ),
            expect: StatusCode::ACCEPTED,
            shape: load::Shape::Publish,
            route,
        }
    }

    async fn closed(
        &self,
        label: &str,
        target: &Target,
        tracker: &Arc<Tracker>,
        seqs: Range<u64>,
    ) -> LoadStats {
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        let bar = self.progress.start(
            label,
            "publish",
            seqs.end - seqs.start,
            Arc::new(move || d.load(Relaxed)),
        );
        let stats = load::closed_loop(
            &self.client,
            target,
            tracker,
            seqs,
            self.plan.concurrency,
            &done,
        )
        .await;
        bar.finish();
        stats
    }

    async fn open(
        &self,
        label: &str,
        target: &Target,
        tracker: &Arc<Tracker>,
        seqs: Range<u64>,
    ) -> LoadStats {
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        let bar = self.progress.start(
            label,
            "publish",
            seqs.end - seqs.start,
            Arc::new(move || d.load(Relaxed)),
        );
        let stats =
            load::open_loop(&self.client, target, tracker, seqs, self.plan.rate, &done).await;
        bar.finish();
        stats
    }

    /// Waits until `count` reaches `expected`, or stops moving for the stall timeout.
    async fn wait(
        &self,
        label: &str,
        expected: u64,
        count: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> u64 {
        let bar = self
            .progress
            .start(label, "deliver", expected, count.clone());
        let mut last = count();
        let mut since = Instant::now();
        let reached = loop {
            let c = count();
            if c >= expected {
                break c;
            }
            if c != last {
                last = c;
                since = Instant::now();
            } else if since.elapsed() > self.plan.stall_timeout {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        bar.finish();
        reached
    }

    /// Builds a result from the parts every scenario has.
    #[allow(clippy::too_many_arguments)]
    fn result(
        &self,
        name: &str,
        publish: &LoadStats,
        expected: u64,
        delivered: u64,
        e2e: &RecvSummary,
        delivered_per_s: f64,
        before: &Snap,
        after: &Snap,
        tracker: &Tracker,
    ) -> ScenarioResult {
        let server_cpu_s = (after.server.cpu_s - before.server.cpu_s).max(0.0);
        let bench_cpu_s = (after.bench_cpu_s - before.bench_cpu_s).max(0.0);
        let machine = (after.machine.busy_s - before.machine.busy_s).max(0.0);
        let steal = (after.machine.steal_s - before.machine.steal_s).max(0.0);
        let database_cpu_s = (after.database_cpu_s - before.database_cpu_s).max(0.0);
        let missing = expected.saturating_sub(delivered);
        let malformed = tracker.malformed.load(Relaxed);
        let mut r = ScenarioResult {
            name: name.to_owned(),
            events_published: publish.sent,
            events_accepted: publish.ok,
            accepted_per_s: publish.ok_per_s(),
            deliveries_expected: expected,
            deliveries_completed: delivered,
            delivered_per_s,
            publish_latency_ms: Percentiles::of(&publish.latency_us),
            e2e_latency_ms: Percentiles::of(&e2e.e2e_us),
            server_cpu_s: round2(server_cpu_s),
            cpu_s_per_1k_deliveries: if delivered > 0 {
                server_cpu_s * 1000.0 / delivered as f64
            } else {
                0.0
            },
            server_peak_rss_mb: mb(after.server.peak_rss),
            bench_cpu_s: round2(bench_cpu_s),
            other_cpu_s: round2((machine - server_cpu_s - bench_cpu_s - database_cpu_s).max(0.0)),
            steal_cpu_s: round2(steal),
            database_cpu_s: round2(database_cpu_s),
            wall_s: round2(after.at.duration_since(before.at).as_secs_f64()),
            errors: publish.errors + missing + malformed,
            error_samples: publish.error_samples.clone(),
            duplicates: tracker.duplicates.load(Relaxed),
            ..Default::default()
        };
        // Against the ceiling before it for now; `run` (main.rs) adds the one after it.
        r.set_ceilings(self.ceiling, None);
        r.error_detail
            .insert("publish_errors".into(), publish.errors);
        r.error_detail.insert("missing_deliveries".into(), missing);
        r.error_detail
            .insert("receiver_malformed".into(), malformed);
        for (key, v) in [
            (
                "receiver_injected_500s",
                tracker.injected_failures.load(Relaxed),
            ),
            ("receiver_paused_503s", tracker.paused_rejects.load(Relaxed)),
        ] {
            if v > 0 {
                r.extra.insert(key.into(), json!(v));
            }
        }
        r
    }
}

/// The admin API of one server.
struct Api<'a> {
    client: &'a HttpClient,
    base: String,
}

impl Api<'_> {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let req = http::Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", server::ADMIN_TOKEN),
            )
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("POST {path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn tenant(&self, id: &str) -> anyhow::Result<()> {
        self.post("/v1/tenants", json!({ "id": id })).await?;
        Ok(())
    }

    async fn endpoint_of(&self, tenant: &str, url: &str, pattern: &str) -> anyhow::Result<()> {
        self.post(
            &format!("/v1/tenants/{tenant}/endpoints"),
            json!({ "url": url, "events": [pattern] }),
        )
        .await?;
        Ok(())
    }
}

/// A server with its receiver and tenant, ready to publish to.
struct Setup {
    server: Server,
    sink: Sink,
    tracker: Arc<Tracker>,
    /// The nats scenario's stream and subscriber, removed at teardown.
    nats: Option<NatsReceiver>,
}

/// How the endpoints are reached.
enum Reach {
    /// Plain HTTP to the sink.
    Http,
    /// HTTPS to the sink, with a certificate made for the run (kept-alive connections).
    Https,
    /// A JetStream publish per delivery to the NATS server on 127.0.0.1:4222, read back by a
    /// subscriber of the bench's own.
    Nats,
    /// Plain HTTP, each endpoint with `TRANSFORMATION`.
    Transformed,
}

/// The transform scenario's: two fields renamed (`pad` to `filler`, the event's name into
/// `type`), `seq` kept for the receiver to count.
const TRANSFORMATION: &str = "function handler(w) {
  const d = w.data;
  w.data = { seq: d.seq, filler: d.pad, type: w.event };
  return w;
}";

async fn setup(
    ctx: &Ctx,
    label: &str,
    tracker: Tracker,
    slow: Option<(u64, Duration)>,
    endpoints: &[String],
) -> anyhow::Result<Setup> {
    setup_reaching(ctx, label, tracker, slow, endpoints, Reach::Http).await
}

async fn setup_reaching(
    ctx: &Ctx,
    label: &str,
    tracker: Tracker,
    slow: Option<(u64, Duration)>,
    endpoints: &[String],
    reach: Reach,
) -> anyhow::Result<Setup> {
    setup_with(
        ctx,
        &ctx.server_opts,
        label,
        tracker,
        slow,
        endpoints,
        reach,
    )
    .await
}

/// `throughput`'s set-up (`events` events over `endpoints` endpoints by plain HTTP) on a
/// server started from `server_opts`.
async fn setup_round_robin(
    ctx: &Ctx,
    server_opts: &ServerOpts,
    label: &str,
    events: u64,
) -> anyhow::Result<Setup> {
    let eps = ctx.plan.endpoints;
    let tracker = Tracker::new(events, 1, eps);
    let patterns = round_robin_patterns(eps);
    setup_with(
        ctx,
        server_opts,
        label,
        tracker,
        None,
        &patterns,
        Reach::Http,
    )
    .await
}

/// `setup_reaching` with a server started from `server_opts`.
async fn setup_with(
    ctx: &Ctx,
    server_opts: &ServerOpts,
    label: &str,
    tracker: Tracker,
    slow: Option<(u64, Duration)>,
    endpoints: &[String],
    reach: Reach,
) -> anyhow::Result<Setup> {
    let tracker = Arc::new(tracker);
    let mut opts = ctx.sink_opts(slow);
    let mut ca_pem = None;
    if let Reach::Https = reach {
        let (config, pem) = super::sink::localhost_tls()?;
        opts.tls = Some(config);
        ca_pem = Some(pem);
    }
    let sink = Sink::start(tracker.clone(), opts)
        .await
        .context("starting the receiver")?;
    let nats = match reach {
        Reach::Nats => Some(
            NatsReceiver::start(tracker.clone())
                .await
                .context("NATS on 127.0.0.1:4222 (the nats scenario needs it, with JetStream)")?,
        ),
        _ => None,
    };
    let server = Server::start(server_opts, label, &ctx.client).await?;
    let api = Api {
        client: &ctx.client,
        base: server.base(),
    };
    api.tenant(TENANT).await?;
    for (k, pattern) in endpoints.iter().enumerate() {
        let k = k as u64;
        let body = match (&nats, &ca_pem) {
            (Some(n), _) => json!({
                "url": "nats://127.0.0.1:4222",
                "events": [pattern],
                "destination": {"type": "nats", "subject": n.subject(k), "jetstream": true},
            }),
            (None, Some(pem)) => {
                json!({ "url": sink.url(k), "events": [pattern], "tls": {"ca_pem": pem} })
            }
            (None, None) if matches!(reach, Reach::Transformed) => json!({
                "url": sink.url(k),
                "events": [pattern],
                "transformation": TRANSFORMATION,
            }),
            (None, None) => json!({ "url": sink.url(k), "events": [pattern] }),
        };
        api.post(&format!("/v1/tenants/{TENANT}/endpoints"), body)
            .await?;
    }
    Ok(Setup {
        server,
        sink,
        tracker,
        nats,
    })
}

/// A memory stream taking the run's subjects, and a core subscription to them that counts
/// each message as a delivery (its endpoint from the subject, its `seq` from the body).
struct NatsReceiver {
    client: async_nats::Client,
    stream: String,
    prefix: String,
    task: tokio::task::JoinHandle<()>,
}

impl NatsReceiver {
    async fn start(tracker: Arc<Tracker>) -> anyhow::Result<Self> {
        use futures_util::StreamExt;
        let run: u32 = rand::random();
        let prefix = format!("chime.bench.r{run}");
        let stream = format!("CHIME_BENCH_{run}");
        let client = async_nats::connect("nats://127.0.0.1:4222").await?;
        let js = async_nats::jetstream::new(client.clone());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            max_messages: 1_000_000,
            ..Default::default()
        })
        .await?;
        let mut sub = client.subscribe(format!("{prefix}.>")).await?;
        client.flush().await?;
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let endpoint = m
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|e| e.strip_prefix('e'))
                    .and_then(|e| e.parse::<u64>().ok());
                let has_id = m
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get("webhook-id").is_some());
                match (endpoint, super::sink::parse_seq(&m.payload), has_id) {
                    (Some(e), Some(seq), true) => {
                        tracker.mark_received(e, seq, Instant::now());
                    }
                    _ => {
                        tracker.malformed.fetch_add(1, Relaxed);
                    }
                }
            }
        });
        Ok(Self {
            client,
            stream,
            prefix,
            task,
        })
    }

    fn subject(&self, endpoint: u64) -> String {
        format!("{}.e{endpoint}", self.prefix)
    }

    async fn stop(self) {
        self.task.abort();
        let _ = async_nats::jetstream::new(self.client)
            .delete_stream(&self.stream)
            .await;
    }
}

/// Stops the server; a failure to stop cleanly is one more error of the scenario.
async fn teardown(s: Setup, r: &mut ScenarioResult) {
    drop(s.sink);
    if let Some(n) = s.nats {
        n.stop().await;
    }
    if let Err(e) = s.server.stop().await {
        r.errors += 1;
        r.error_detail.insert("server_stop".into(), 1);
        r.error_samples.push(format!("{e:#}"));
    }
}

fn publish_path() -> String {
    format!("/v1/tenants/{TENANT}/events")
}

/// `seq` goes to endpoint `seq mod n`, whose subscription is its own event name.
fn round_robin(n: u64) -> load::Route {
    let path = publish_path();
    Arc::new(move |seq| (path.clone(), format!("bench.e{}", seq % n)))
}

fn round_robin_patterns(n: u64) -> Vec<String> {
    (0..n).map(|k| format!("bench.e{k}")).collect()
}

fn span(from: Instant, to: Option<Instant>) -> Duration {
    to.map_or(Duration::ZERO, |t| t.saturating_duration_since(from))
}

/// What the isolation scenario's hung phase saw.
struct HungPhase {
    load: LoadStats,
    hostile_published: u64,
    connections: u64,
}

/// The healthy load once more, while tenant `HOSTILE` publishes `HOSTILE_RATE` events/s to
/// `isolation_hung` endpoints that accept and never answer: each attempt holds its slot until
/// the request timeout, which is what filled the global cap before per-tenant shares.
async fn hung_phase(
    ctx: &Ctx,
    s: &Setup,
    target: &Target,
    seqs: Range<u64>,
    delivered_before: u64,
    healthy: Arc<dyn Fn() -> u64 + Send + Sync>,
) -> anyhow::Result<HungPhase> {
    let n = ctx.plan.isolation_hung;
    let sink = HungSink::start()
        .await
        .context("starting the hung receiver")?;
    let api = Api {
        client: &ctx.client,
        base: s.server.base(),
    };
    api.tenant(HOSTILE).await?;
    for k in 0..n {
        api.endpoint_of(HOSTILE, &sink.url(k), "*").await?;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let hostile = async {
        let mut published = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / HOSTILE_RATE));
        let path = format!("/v1/tenants/{HOSTILE}/events");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return published,
                _ = tick.tick() => {
                    let event = json!({"event": "hostile.ping", "data": {"n": published}});
                    if api.post(&path, event).await.is_ok() {
                        published += 1;
                    }
                }
            }
        }
    };
    let measured = async {
        // Measure once every hung endpoint holds a connection: the attempts are then
        // waiting out their timeouts, as in a long-running incident.
        let until = Instant::now() + Duration::from_secs(30);
        while sink.accepted() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let load = ctx.open("iso-hung", target, &s.tracker, seqs.clone()).await;
        ctx.wait("iso-hung", delivered_before + load.ok, healthy)
            .await;
        stop.cancel();
        load
    };
    let (hostile_published, load) = tokio::join!(hostile, measured);
    let connections = sink.accepted();
    // Closing the hung connections ends their attempts now rather than at shutdown.
    drop(sink);
    Ok(HungPhase {
        load,
        hostile_published,
        connections,
    })
}

/// The same load straight to the receiver: no chime in between.
pub async fn ceiling(ctx: &Ctx) -> anyhow::Result<Ceiling> {
    let p = &ctx.plan;
    let n = p.events;
    let eps = p.endpoints;
    let tracker = Arc::new(Tracker::new(n, 1, eps));
    let mut opts = ctx.sink_opts(None);
    opts.fail_rate = 0.0;
    let sink = Sink::start(tracker.clone(), opts).await?;
    let target = Target {
        bases: vec![sink.base()],
        authorization: None,
        expect: StatusCode::OK,
        shape: load::Shape::Delivery,
        route: Arc::new(move |seq| (format!("/e/{}", seq % eps), format!("bench.e{}", seq % eps))),
    };
    let before = snap(None);
    let stats = ctx.closed("ceiling", &target, &tracker, 0..n).await;
    let after = snap(None);
    let bench = after.bench_cpu_s - before.bench_cpu_s;
    let machine = after.machine.busy_s - before.machine.busy_s;
    if stats.ok == 0 {
        bail!(
            "no POST to the receiver succeeded: {}",
            stats.error_samples.join("; ")
        );
    }
    Ok(Ceiling {
        posts: stats.ok,
        posts_per_s: stats.ok_per_s(),
        concurrency: p.concurrency,
        latency_ms: Percentiles::of(&stats.latency_us),
        errors: stats.errors,
        bench_cpu_s: round2(bench),
        other_cpu_s: round2((machine - bench).max(0.0)),
        steal_cpu_s: round2((after.machine.steal_s - before.machine.steal_s).max(0.0)),
        wall_s: round2(stats.elapsed().as_secs_f64()),
    })
}

pub async fn run(ctx: &Ctx, s: Scenario) -> anyhow::Result<ScenarioResult> {
    match s {
        Scenario::Throughput => throughput(ctx).await,
        Scenario::Source => source(ctx).await,
        Scenario::Https => https(ctx).await,
        Scenario::Nats => nats(ctx).await,
        Scenario::Transform => closed_reaching(ctx, "transform", Reach::Transformed).await,
        Scenario::Fanout => fanout(ctx).await,
        Scenario::Latency => latency(ctx).await,
        Scenario::Backlog => backlog(ctx).await,
        Scenario::Isolation => isolation(ctx).await,
        Scenario::Nodes => nodes(ctx).await,
        Scenario::Soak => soak(ctx).await,
    }
}

/// Closed loop, C publishers, each event to one of `endpoints` endpoints.
async fn throughput(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    closed_reaching(ctx, "throughput", Reach::Http).await
}

/// `throughput` to an HTTPS receiver (kept-alive TLS connections).
async fn https(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    closed_reaching(ctx, "https", Reach::Https).await
}

/// `throughput` to NATS JetStream destinations: a publish acknowledged by the stream per
/// delivery.
async fn nats(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    closed_reaching(ctx, "nats", Reach::Nats).await
}

async fn closed_reaching(ctx: &Ctx, label: &str, reach: Reach) -> anyhow::Result<ScenarioResult> {
    let (n, eps) = (ctx.plan.events, ctx.plan.endpoints);
    let s = setup_reaching(
        ctx,
        label,
        Tracker::new(n, 1, eps),
        None,
        &round_robin_patterns(eps),
        reach,
    )
    .await?;
    let target = ctx.chime_target(&s.server, round_robin(eps));
    closed_measured(ctx, label, s, &target).await
}

/// Publishes `events` through `target` closed loop, waits for the deliveries, measures.
async fn closed_measured(
    ctx: &Ctx,
    label: &str,
    s: Setup,
    target: &Target,
) -> anyhow::Result<ScenarioResult> {
    let n = ctx.plan.events;
    let before = snap(Some(&s.server));
    let publish = ctx.closed(label, target, &s.tracker, 0..n).await;
    let t = s.tracker.clone();
    let delivered = ctx
        .wait(
            label,
            publish.ok,
            Arc::new(move || t.received.load(Relaxed)),
        )
        .await;
    tokio::time::sleep(SETTLE).await;
    let after = snap(Some(&s.server));
    let sum = s.tracker.summary(0..n);
    let rate = per_s(sum.deliveries, span(publish.started, sum.last_recv));
    let mut r = ctx.result(
        label, &publish, publish.ok, delivered, &sum, rate, &before, &after, &s.tracker,
    );
    teardown(s, &mut r).await;
    Ok(r)
}

/// `throughput`'s load through a Stripe source: each request a Stripe-signed event POSTed to the
/// source's ingest URL, which chime verifies, names (`/type`), dedupes (`/id`), commits and
/// delivers as it is, each to one of `endpoints` endpoints.
async fn source(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let (n, eps) = (ctx.plan.events, ctx.plan.endpoints);
    let label = "source";
    let s = setup(
        ctx,
        label,
        Tracker::new(n, 1, eps),
        None,
        &round_robin_patterns(eps),
    )
    .await?;
    let api = Api {
        client: &ctx.client,
        base: s.server.base(),
    };
    let secret: Arc<str> = Arc::from("whsec_bench_0123456789abcdef");
    let created = api
        .post(
            &format!("/v1/tenants/{TENANT}/sources"),
            json!({ "name": "stripe-bench", "verify": { "scheme": "stripe", "secret": &*secret } }),
        )
        .await?;
    let path = created["ingest_url"]
        .as_str()
        .and_then(|u| u.find("/in/").map(|at| u[at..].to_owned()))
        .context("the created source has no ingest_url")?;
    let target = Target {
        shape: load::Shape::Stripe { secret },
        route: Arc::new(move |seq| (path.clone(), format!("bench.e{}", seq % eps))),
        ..ctx.chime_target(&s.server, round_robin(eps))
    };
    closed_measured(ctx, label, s, &target).await
}

/// Every event to every one of `fanout_endpoints` endpoints.
async fn fanout(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let (n, f) = (ctx.plan.fanout_events, ctx.plan.fanout_endpoints);
    let label = "fanout";
    let patterns: Vec<String> = (0..f).map(|_| "*".to_owned()).collect();
    let s = setup(ctx, label, Tracker::new(n, f, f), None, &patterns).await?;
    let path = publish_path();
    let target = ctx.chime_target(
        &s.server,
        Arc::new(move |_| (path.clone(), "bench.fanout".to_owned())),
    );
    let before = snap(Some(&s.server));
    let publish = ctx.closed(label, &target, &s.tracker, 0..n).await;
    let t = s.tracker.clone();
    let expected = publish.ok * f;
    let delivered = ctx
        .wait(label, expected, Arc::new(move || t.received.load(Relaxed)))
        .await;
    tokio::time::sleep(SETTLE).await;
    let after = snap(Some(&s.server));
    let sum = s.tracker.summary(0..n);
    let rate = per_s(sum.deliveries, span(publish.started, sum.last_recv));
    let mut r = ctx.result(
        label, &publish, expected, delivered, &sum, rate, &before, &after, &s.tracker,
    );
    r.extra.insert("fanout_endpoints".into(), json!(f));
    teardown(s, &mut r).await;
    Ok(r)
}

/// Open loop at `rate` events/s for `duration`.
async fn latency(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let eps = ctx.plan.endpoints;
    let n = ((ctx.plan.rate * ctx.plan.duration.as_secs_f64()).round() as u64).max(1);
    let label = "latency";
    let s = setup(
        ctx,
        label,
        Tracker::new(n, 1, eps),
        None,
        &round_robin_patterns(eps),
    )
    .await?;
    let target = ctx.chime_target(&s.server, round_robin(eps));
    let before = snap(Some(&s.server));
    let publish = ctx.open(label, &target, &s.tracker, 0..n).await;
    let t = s.tracker.clone();
    let delivered = ctx
        .wait(
            label,
            publish.ok,
            Arc::new(move || t.received.load(Relaxed)),
        )
        .await;
    tokio::time::sleep(SETTLE).await;
    let after = snap(Some(&s.server));
    let sum = s.tracker.summary(0..n);
    let rate = per_s(sum.deliveries, span(publish.started, sum.last_recv));
    let mut r = ctx.result(
        label, &publish, publish.ok, delivered, &sum, rate, &before, &after, &s.tracker,
    );
    r.extra.insert("offered_per_s".into(), json!(ctx.plan.rate));
    r.extra.insert(
        "publish_lag_p99_ms".into(),
        json!(Percentiles::of(&publish.lag_us).p99),
    );
    teardown(s, &mut r).await;
    Ok(r)
}

/// Publish with every receiver paused, show the claim plan, then resume and drain.
async fn backlog(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let (n, eps) = (ctx.plan.backlog_events, ctx.plan.endpoints);
    let label = "backlog";
    let s = setup(
        ctx,
        label,
        Tracker::new(n, 1, eps),
        None,
        &round_robin_patterns(eps),
    )
    .await?;
    let target = ctx.chime_target(&s.server, round_robin(eps));
    s.sink.pause();
    let before = snap(Some(&s.server));
    let publish = ctx.closed(label, &target, &s.tracker, 0..n).await;
    let published = s.server.usage();
    let claim_plan = match s.server.sqlite_database() {
        Some(db) => {
            match tokio::task::spawn_blocking(move || chime::store::sqlite::explain_claim(&db))
                .await
            {
                Ok(Ok(lines)) => Some(lines),
                Ok(Err(e)) => {
                    eprintln!("chime-bench: could not explain the claim query: {e:#}");
                    None
                }
                Err(e) => {
                    eprintln!("chime-bench: could not explain the claim query: {e}");
                    None
                }
            }
        }
        None => None,
    };
    let resumed = Instant::now();
    s.sink.resume();
    let t = s.tracker.clone();
    let delivered = ctx
        .wait(
            label,
            publish.ok,
            Arc::new(move || t.received.load(Relaxed)),
        )
        .await;
    tokio::time::sleep(SETTLE).await;
    let after = snap(Some(&s.server));
    let sum = s.tracker.summary(0..n);
    let drain = per_s(sum.deliveries, span(resumed, sum.last_recv));
    let mut r = ctx.result(
        label, &publish, publish.ok, delivered, &sum, drain, &before, &after, &s.tracker,
    );
    r.extra
        .insert("ingest_per_s".into(), json!(publish.ok_per_s().round()));
    r.extra.insert("drain_per_s".into(), json!(drain.round()));
    r.extra
        .insert("pending_after_publish".into(), json!(publish.ok));
    r.extra
        .insert("rss_after_publish_mb".into(), json!(mb(published.rss)));
    if let Some(plan) = claim_plan {
        r.extra.insert("claim_plan".into(), json!(plan));
    }
    teardown(s, &mut r).await;
    Ok(r)
}

/// A healthy endpoint under steady open-loop load, measured alone, then again with a slow
/// endpoint (answering after `isolation_delay`) holding `isolation_queued` deliveries, then
/// again while another tenant publishes to `isolation_hung` endpoints on a receiver that
/// never answers.
async fn isolation(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let p = &ctx.plan;
    let phase = ((p.rate * p.isolation_duration.as_secs_f64()).round() as u64).max(1);
    let q = p.isolation_queued;
    let (base, slow, loaded) = (0..phase, phase..phase + q, phase + q..2 * phase + q);
    let with_hung = 2 * phase + q..3 * phase + q;
    let label = "isolation";
    let s = setup(
        ctx,
        label,
        Tracker::new(3 * phase + q, 1, 2),
        Some((1, p.isolation_delay)),
        &["iso.healthy".to_owned(), "iso.slow".to_owned()],
    )
    .await?;
    let path = publish_path();
    let slow_range = slow.clone();
    let target = ctx.chime_target(
        &s.server,
        Arc::new(move |seq| {
            let name = if slow_range.contains(&seq) {
                "iso.slow"
            } else {
                "iso.healthy"
            };
            (path.clone(), name.to_owned())
        }),
    );
    let healthy = {
        let t = s.tracker.clone();
        Arc::new(move || t.received_by(0)) as Arc<dyn Fn() -> u64 + Send + Sync>
    };
    let before = snap(Some(&s.server));
    let pub_base = ctx
        .open("iso-alone", &target, &s.tracker, base.clone())
        .await;
    ctx.wait("iso-alone", pub_base.ok, healthy.clone()).await;
    let pub_slow = ctx
        .closed("iso-slow", &target, &s.tracker, slow.clone())
        .await;
    let pub_loaded = ctx
        .open("iso-shared", &target, &s.tracker, loaded.clone())
        .await;
    let expected = pub_base.ok + pub_loaded.ok;
    let delivered = ctx.wait("iso-shared", expected, healthy.clone()).await;
    let hung = hung_phase(ctx, &s, &target, with_hung.clone(), expected, healthy).await?;
    tokio::time::sleep(SETTLE).await;
    let after = snap(Some(&s.server));
    let sum_base = s.tracker.summary(base);
    let sum_loaded = s.tracker.summary(loaded);
    let slow_delivered = s.tracker.received_by(1);
    let rate = per_s(
        sum_loaded.deliveries,
        span(pub_loaded.started, sum_loaded.last_recv),
    );
    let mut r = ctx.result(
        label,
        &pub_loaded,
        expected,
        delivered,
        &sum_loaded,
        rate,
        &before,
        &after,
        &s.tracker,
    );
    let all = delivered + slow_delivered;
    if all > 0 {
        r.cpu_s_per_1k_deliveries = r.server_cpu_s * 1000.0 / all as f64;
    }
    let errors_elsewhere = pub_base.errors + pub_slow.errors;
    r.errors += errors_elsewhere;
    *r.error_detail.entry("publish_errors".into()).or_default() += errors_elsewhere;
    r.error_samples
        .extend(pub_base.error_samples.iter().cloned());
    r.error_samples
        .extend(pub_slow.error_samples.iter().cloned());
    let base_p = Percentiles::of(&sum_base.e2e_us);
    let loaded_p = Percentiles::of(&sum_loaded.e2e_us);
    let hung_p = Percentiles::of(&s.tracker.summary(with_hung).e2e_us);
    r.extra
        .insert("healthy_p99_with_hung_ms".into(), json!(hung_p.p99));
    r.extra
        .insert("healthy_e2e_with_hung_ms".into(), json!(hung_p));
    r.extra
        .insert("hung_endpoints".into(), json!(p.isolation_hung));
    r.extra.insert(
        "hostile_events_published".into(),
        json!(hung.hostile_published),
    );
    r.extra
        .insert("hung_connections".into(), json!(hung.connections));
    r.errors += hung.load.errors;
    r.error_samples
        .extend(hung.load.error_samples.iter().cloned());
    r.extra
        .insert("healthy_p99_baseline_ms".into(), json!(base_p.p99));
    r.extra
        .insert("healthy_p99_with_slow_ms".into(), json!(loaded_p.p99));
    r.extra
        .insert("healthy_e2e_baseline_ms".into(), json!(base_p));
    r.extra.insert("slow_queued".into(), json!(pub_slow.ok));
    r.extra
        .insert("slow_delivered".into(), json!(slow_delivered));
    r.extra.insert(
        "slow_delay_s".into(),
        json!(p.isolation_delay.as_secs_f64()),
    );
    teardown(s, &mut r).await;
    Ok(r)
}

/// The store's footprint at one moment (PostgreSQL): the traffic tables (a partitioned
/// table's partitions counted under it), their sizes, dead tuples and autovacuum runs so far.
#[derive(Default, Clone, Copy)]
struct Footprint {
    table_bytes: i64,
    index_bytes: i64,
    live_deliveries: i64,
    dead_tuples: i64,
    autovacuums: i64,
    database_bytes: i64,
    /// WAL written since the server's start: its growth between two readings is the write
    /// volume (and so the disk bandwidth) the deliveries in between cost.
    wal_bytes: i64,
}

/// Reads the `Footprint` of the database at `url`.
async fn footprint(url: &str) -> anyhow::Result<Footprint> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    // Partitions are named after their table (`deliveries_20261204t000000`,
    // `deliveries_default`); a table unpartitioned counts as itself.
    let row = client
        .query_one(
            "SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint,
                    coalesce(sum(pg_indexes_size(relid)), 0)::bigint,
                    coalesce(sum(n_live_tup) FILTER (WHERE relname ~ '^deliveries($|_)'), 0)::bigint,
                    coalesce(sum(n_dead_tup), 0)::bigint,
                    coalesce(sum(autovacuum_count), 0)::bigint,
                    pg_database_size(current_database()),
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
             FROM pg_stat_user_tables
             WHERE relname ~ '^(events|deliveries|attempts)($|_)'",
            &[],
        )
        .await?;
    Ok(Footprint {
        table_bytes: row.get(0),
        index_bytes: row.get(1),
        live_deliveries: row.get(2),
        dead_tuples: row.get(3),
        autovacuums: row.get(4),
        database_bytes: row.get(5),
        wal_bytes: row.get(6),
    })
}

/// Issue 19's soak: `soak_events` events, one delivery each, published closed loop in steps
/// of `soak_every`, with retention keeping `soak_retention` of events and payloads (in
/// partitions a quarter of that long, on PostgreSQL). After each step: the
/// step's deliveries/s and p99 publish→receive, and on PostgreSQL the traffic tables' sizes
/// per retained delivery, dead tuples and autovacuum runs, so that a table that bloats or a
/// rate that sinks as the tables grow shows step by step.
async fn soak(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let p = &ctx.plan;
    let (n, every, eps) = (p.soak_events, p.soak_every, p.endpoints);
    let label = "soak";
    let mut opts = ctx.server_opts.clone();
    let keep = p.soak_retention;
    opts.extra_args.extend([
        // Payloads as long as events: purging a payload rewrites its row (an UPDATE),
        // which is not what this soak measures.
        format!("--event-retention={}s", keep.as_secs()),
        format!("--payload-retention={}s", keep.as_secs()),
        format!("--retention-interval={}s", (keep / 10).as_secs().max(1)),
    ]);
    // Partitions (PostgreSQL) a quarter of the retention long, so they rotate; an older
    // server (`--server-exe`, for a before/after) has none and deletes rows instead.
    if serve_knows(&opts.exe, "--partition-interval") {
        opts.extra_args.push(format!(
            "--partition-interval={}s",
            (keep / 4).as_secs().max(1)
        ));
    }
    let s = setup_round_robin(ctx, &opts, label, n).await?;
    let target = ctx.chime_target(&s.server, round_robin(eps));
    let pg = s.server.postgres_url();
    let before = snap(Some(&s.server));
    let mut steps = Vec::new();
    let mut whole: Option<LoadStats> = None;
    let mut start = 0;
    let mut wal = match &pg {
        Some(url) => footprint(url).await.map(|f| f.wal_bytes).unwrap_or(0),
        None => 0,
    };
    eprintln!(
        "{:>12} {:>10} {:>9} {:>12} {:>12} {:>10} {:>9} {:>10} {:>10}",
        "deliveries",
        "per_s",
        "p99_ms",
        "B/delivery",
        "kept",
        "dead",
        "autovac",
        "db_MB",
        "WAL_B/dlv"
    );
    while start < n {
        let end = (start + every).min(n);
        let publish = ctx.closed(label, &target, &s.tracker, start..end).await;
        let t = s.tracker.clone();
        let expected = start + publish.ok;
        let reached = ctx
            .wait(label, expected, Arc::new(move || t.received.load(Relaxed)))
            .await;
        let sum = s.tracker.summary(start..end);
        let rate = per_s(sum.deliveries, span(publish.started, sum.last_recv));
        let p99_ms = sum.e2e_us.value_at_quantile(0.99) as f64 / 1000.0;
        let f = match &pg {
            Some(url) => footprint(url).await.unwrap_or_else(|e| {
                eprintln!("chime-bench: could not read the database's sizes: {e:#}");
                Footprint::default()
            }),
            None => Footprint::default(),
        };
        let per_delivery = if f.live_deliveries > 0 {
            (f.table_bytes + f.index_bytes) / f.live_deliveries
        } else {
            0
        };
        let wal_per_delivery = if f.wal_bytes > 0 && sum.deliveries > 0 {
            (f.wal_bytes - wal) / sum.deliveries as i64
        } else {
            0
        };
        wal = f.wal_bytes;
        eprintln!(
            "{:>12} {:>10.0} {:>9.1} {:>12} {:>12} {:>10} {:>9} {:>10.1} {:>10}",
            end,
            rate,
            p99_ms,
            per_delivery,
            f.live_deliveries,
            f.dead_tuples,
            f.autovacuums,
            mb(f.database_bytes.max(0) as u64),
            wal_per_delivery
        );
        steps.push(json!({
            "deliveries": end,
            "delivered_per_s": rate.round(),
            "p99_ms": round2(p99_ms),
            "table_bytes": f.table_bytes,
            "index_bytes": f.index_bytes,
            "deliveries_kept": f.live_deliveries,
            "bytes_per_kept_delivery": per_delivery,
            "dead_tuples": f.dead_tuples,
            "autovacuum_runs": f.autovacuums,
            "database_bytes": f.database_bytes,
            "wal_bytes_per_delivery": wal_per_delivery,
        }));
        match &mut whole {
            None => whole = Some(publish),
            Some(w) => w.merge(publish),
        }
        if reached < expected {
            break;
        }
        start = end;
    }
    tokio::time::sleep(SETTLE).await;
    let after = snap(Some(&s.server));
    let sum = s.tracker.summary(0..n);
    let whole = whole.context("the soak published nothing")?;
    let rate = per_s(sum.deliveries, span(whole.started, sum.last_recv));
    let mut r = ctx.result(
        label,
        &whole,
        whole.ok,
        s.tracker.received.load(Relaxed),
        &sum,
        rate,
        &before,
        &after,
        &s.tracker,
    );
    let rate_of = |i: usize| steps.get(i).and_then(|s| s["delivered_per_s"].as_f64());
    if let (Some(a), Some(b)) = (rate_of(0), rate_of(steps.len().saturating_sub(1))) {
        r.extra
            .insert("end_vs_start".into(), json!(round2(b / a.max(1.0))));
    }
    r.extra.insert("steps".into(), json!(steps));
    r.extra
        .insert("retention_s".into(), json!(keep.as_secs_f64()));
    teardown(s, &mut r).await;
    Ok(r)
}

/// Whether `chime serve --help` of `exe` lists `flag`.
fn serve_knows(exe: &std::path::Path, flag: &str) -> bool {
    std::process::Command::new(exe)
        .args(["serve", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// `throughput` with 1, 2 and 3 nodes on one PostgreSQL database (a fresh one per count),
/// the publishes spread round-robin over the nodes, every node delivering. The result is the
/// three-node run's; `by_nodes` has each count's rate and CPU split.
async fn nodes(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let mut by_nodes = Vec::new();
    let mut last = None;
    for n in 1..=3 {
        let r = nodes_run(ctx, n).await?;
        let cpu = |k: &str| r.extra.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        eprintln!(
            "nodes={n}: {:.0} deliveries/s; CPU s chime {:.1}, PostgreSQL {:.1}, bench {:.1}",
            r.delivered_per_s,
            cpu("server_cpu_s"),
            cpu("database_cpu_s"),
            cpu("bench_cpu_s"),
        );
        by_nodes.push(json!({
            "nodes": n,
            "delivered_per_s": r.delivered_per_s.round(),
            "server_cpu_s": cpu("server_cpu_s"),
            "database_cpu_s": cpu("database_cpu_s"),
            "bench_cpu_s": cpu("bench_cpu_s"),
        }));
        last = Some(r);
    }
    let mut r = last.context("no node count ran")?;
    r.extra.insert("by_nodes".into(), json!(by_nodes));
    Ok(r)
}

async fn nodes_run(ctx: &Ctx, n: usize) -> anyhow::Result<ScenarioResult> {
    let (events, eps) = (ctx.plan.events, ctx.plan.endpoints);
    let label = "nodes";
    // Nodes learn of each other from heartbeats at each scan: a short one, so they share
    // the endpoints' limits from the first seconds on.
    let mut opts = ctx.server_opts.clone();
    opts.extra_args.push("--poll-interval=1s".into());
    let s = setup_round_robin(ctx, &opts, label, events).await?;
    let mut others = Vec::new();
    for _ in 1..n {
        others.push(Server::join(&s.server, &opts, label, &ctx.client).await?);
    }
    let mut target = ctx.chime_target(&s.server, round_robin(eps));
    target.bases.extend(others.iter().map(Server::base));
    let all = |s: &Setup| -> Vec<Usage> {
        std::iter::once(s.server.usage())
            .chain(others.iter().map(Server::usage))
            .collect()
    };
    let mut before = snap(Some(&s.server));
    before.server = sum_usage(&all(&s));
    let publish = ctx.closed(label, &target, &s.tracker, 0..events).await;
    let t = s.tracker.clone();
    let delivered = ctx
        .wait(
            label,
            publish.ok,
            Arc::new(move || t.received.load(Relaxed)),
        )
        .await;
    tokio::time::sleep(SETTLE).await;
    let mut after = snap(Some(&s.server));
    after.server = sum_usage(&all(&s));
    let sum = s.tracker.summary(0..events);
    let rate = per_s(sum.deliveries, span(publish.started, sum.last_recv));
    let mut r = ctx.result(
        label, &publish, publish.ok, delivered, &sum, rate, &before, &after, &s.tracker,
    );
    r.extra.insert("nodes".into(), json!(n));
    r.extra.insert(
        "server_cpu_s".into(),
        json!(round2(after.server.cpu_s - before.server.cpu_s)),
    );
    r.extra.insert(
        "database_cpu_s".into(),
        json!(round2(after.database_cpu_s - before.database_cpu_s)),
    );
    r.extra.insert(
        "bench_cpu_s".into(),
        json!(round2(after.bench_cpu_s - before.bench_cpu_s)),
    );
    for o in others {
        if let Err(e) = o.stop().await {
            r.errors += 1;
            r.error_samples.push(format!("{e:#}"));
        }
    }
    teardown(s, &mut r).await;
    Ok(r)
}

/// The processes' usage together: CPU added up, the largest RSS.
fn sum_usage(all: &[Usage]) -> Usage {
    let mut u = Usage::default();
    for x in all {
        u.cpu_s += x.cpu_s;
        u.rss = u.rss.max(x.rss);
        u.peak_rss = u.peak_rss.max(x.peak_rss);
    }
    u
}
