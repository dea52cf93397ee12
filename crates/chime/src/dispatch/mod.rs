//! The dispatcher: turns stored deliveries into HTTP attempts, fairly and within limits.
//!
//! Parts:
//! - `Dispatcher` (this file): one actor task that owns all in-memory dispatch state: a
//!   bounded queue per endpoint, attempts started round-robin across endpoints within each
//!   endpoint's concurrency cap, rate limit and circuit breaker, and a global cap.
//! - `handle`: `DispatchHandle`, how the API reaches the actor, and the one publish path.
//! - `endpoint_state`: what the actor knows of one endpoint; `target`: its delivery target.
//! - `recorder`: records finished attempts in batches and sends their follow-ups back.
//! - `emitter`: publishes the `_chime` tenant's operational events.
//! - `http`: the SSRF-guarded, pooled client that signs and POSTs one delivery.
//! - `outcome`, `limits`, `pace`: pure policy: an HTTP result → the delivery's next state;
//!   when a circuit opens and a tenant may start; rate-limit spacing.
//!
//! How work arrives, without polling on the fast path:
//! - publishing hands the just-committed (already leased) deliveries over in memory;
//! - a delivery's retry wakes a timer for its endpoint at the retry time; the store is then
//!   asked for that endpoint's due deliveries (`claim`);
//! - a fallback scan (`poll_interval`) finds anything else (e.g. work left at the last stop).
//!
//! An endpoint's in-memory queue is bounded; what does not fit stays in the store (overflow
//! from publishing is released at once) and is claimed as the queue drains, so memory stays
//! flat however large the backlog.
//!
//! Endpoint health: after `failure_threshold` consecutive failures an endpoint is "failing"
//! (circuit open): its queued work goes back to the store and only one probe attempt is made
//! per `probe_interval` until one succeeds, so a dead endpoint does not burn every delivery's
//! retries. A 410 answer, or failing for `auto_disable_after`, disables the endpoint. Those
//! transitions are emitted as operational events of the `_chime` tenant.
//!
//! Ordered endpoints never take the fast path: their deliveries are claimed one at a time in
//! acceptance order (`Store::claim` returns only the head), the next only after the previous
//! one's outcome is recorded.

mod broker;
pub mod circuit;
mod clients;
mod emitter;
mod endpoint_state;
mod handle;
pub mod http;
pub mod limits;
mod oauth;
pub mod outcome;
pub mod pace;
pub mod proxy;
mod recorder;
mod target;
pub mod transformed;
pub use target::target_of;
mod tls;

pub use handle::DispatchHandle;

/// Lease time kept in reserve beyond one attempt's timeout when deciding whether a held job
/// may still start (clocks, the record's round trip).
const LEASE_MARGIN: Duration = Duration::from_secs(1);

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::model::{Millis, format_time, new_id, now_millis};
use crate::store::{
    Admission, Claimed, DeliveryStatus, Endpoint, HealthChange, Job, Lease, Queue, Store,
};
use circuit::{AfterFailure, Circuit, MayStart};
use emitter::{Emitter, endpoint_data};
use endpoint_state::{EndpointState, adopt_failing, hold_bound, share};
use http::{DeliveryClient, Target};
use recorder::{AfterRecord, MAX_UNRECORDED, RecordRequest};

pub use crate::config::DispatchConfig;

/// What an attempt says about its endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ok,
    Failed,
    /// Failed at the request timeout: it held its slot all that time.
    TimedOut,
    /// 410 Gone: the receiver asks never to be called again.
    Gone,
    /// The receiver was not asked (a transformation cancelled the delivery): nothing is
    /// known of its health.
    Untouched,
}

enum Msg {
    /// Leased jobs from publishing, with the endpoint rows read in the same transaction.
    Submit(Vec<Job>, Vec<Arc<Endpoint>>),
    /// An attempt's HTTP exchange ended: its endpoint (and its tenant) has a free slot.
    Finished(Arc<str>, Arc<str>, Health),
    /// The store holds unleased deliveries of this endpoint due at this time.
    Due(Arc<str>, Millis),
    Claimed(Arc<str>, crate::store::Result<Claimed>),
    /// The endpoint was changed or deleted through the API: reload it.
    EndpointChanged(Arc<str>),
    TargetLoaded(Arc<str>, Option<Endpoint>),
    Summary(Vec<(crate::model::EndpointId, Millis)>),
    /// How many nodes share the store (per-endpoint limits are shared out among them).
    Nodes(u32),
    /// A batch of attempts was recorded: their `MAX_UNRECORDED` permits are free again.
    Recorded,
}

pub struct Dispatcher {
    store: Arc<dyn Queue>,
    recorder: mpsc::UnboundedSender<RecordRequest>,
    client: DeliveryClient,
    cfg: DispatchConfig,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    owner: Arc<str>,
    emitter: Emitter,
    endpoints: HashMap<Arc<str>, EndpointState>,
    /// Endpoints that may be able to start an attempt, served round-robin.
    ready: VecDeque<Arc<str>>,
    timers: BinaryHeap<Reverse<(Millis, Arc<str>)>>,
    in_flight: usize,
    /// Attempts in flight per tenant (`tenant_max_in_flight`), and the endpoints that had
    /// work but waited for their tenant's slots, to be served again when one frees.
    tenant_in_flight: HashMap<Arc<str>, usize>,
    tenant_waiting: HashMap<Arc<str>, std::collections::HashSet<Arc<str>>>,
    /// Nodes sharing the store, this one included; 1 for a store owned alone.
    nodes: u32,
    tracker: TaskTracker,
    /// Cancelled when the shutdown grace period is over: abandons attempts still running.
    abandon: CancellationToken,
    /// Tells publishing which endpoints have no room in memory (see `update_admission`).
    admission: Arc<Admission>,
    /// One permit per attempt started and not yet recorded (`MAX_UNRECORDED`).
    record_slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        client: DeliveryClient,
        cfg: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> (Self, DispatchHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let owner: Arc<str> = Arc::from(new_id("node").as_str());
        let admission = Arc::new(Admission::default());
        let handle = DispatchHandle::new(
            tx.clone(),
            owner.clone(),
            cfg.lease,
            admission.clone(),
            store.clone(),
            metrics.clone(),
            client.spans().clone(),
        );
        let emitter = Emitter {
            handle: handle.clone(),
        };
        let recorder = recorder::spawn(store.clone(), tx.clone(), emitter.clone(), metrics.clone());
        let d = Self {
            recorder,
            store,
            client,
            cfg,
            tx,
            rx,
            owner,
            emitter,
            endpoints: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            in_flight: 0,
            tenant_in_flight: HashMap::new(),
            tenant_waiting: HashMap::new(),
            nodes: 1,
            tracker: TaskTracker::new(),
            abandon: CancellationToken::new(),
            admission,
            record_slots: Arc::new(Semaphore::new(MAX_UNRECORDED)),
            metrics,
        };
        (d, handle)
    }

    /// Jobs held in memory for an endpoint (queued plus in flight): enough to keep its slots
    /// busy between claims, few enough that the last one starts well within its lease even
    /// when every attempt before it runs to the request timeout, and with other nodes, no
    /// more than this node's part (`hold_bound`).
    fn queue_bound(&self, target: Option<&Target>) -> usize {
        let cap = target.map_or(self.cfg.endpoint_concurrency, |t| t.max_in_flight);
        hold_bound(cap, self.nodes)
    }

    /// Tells publishing whether to hand this endpoint's new deliveries over in memory: not
    /// when they would only overflow (`accept_submitted` would release them again, a second
    /// write per delivery) or when older work of the endpoint waits in the store. A backlog
    /// then costs one insert per delivery and one claim per batch.
    fn update_admission(&mut self, id: &Arc<str>) {
        if !self.endpoints.contains_key(id) {
            return;
        }
        let now = now_millis();
        let bound = {
            let target = self.ep(id).target.clone();
            self.queue_bound(target.as_deref())
        };
        let ep = self.ep(id);
        let saturated = !ep.has_room(bound, now);
        if saturated != ep.saturated {
            ep.saturated = saturated;
            self.admission.set(id, saturated);
        }
    }

    /// Runs until `shutdown`, then lets in-flight attempts finish within the grace period and
    /// gives every lease back so a restart resumes the rest.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(self.cfg.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.pump();
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match next_timer {
                    Some(at) => {
                        let wait = (at - now_millis()).max(0) as u64;
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(msg) = self.rx.recv() => {
                    self.handle(msg);
                    // Drain what is already queued before pumping: batches work per wake-up.
                    while let Ok(msg) = self.rx.try_recv() {
                        self.handle(msg);
                    }
                }
                _ = sleep => self.fire_timers(),
                _ = poll.tick() => self.scan(),
            }
        }
        self.drain().await;
    }

    async fn drain(self) {
        self.tracker.close();
        let in_flight = self.tracker.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "waiting for in-flight attempts to finish");
        }
        if tokio::time::timeout(self.cfg.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                abandoned = self.tracker.len(),
                "shutdown grace period over; abandoning attempts still in flight"
            );
            self.abandon.cancel();
            self.tracker.wait().await;
        }
        if let Err(e) = self.store.release_owner(&self.owner).await {
            tracing::error!(error = %e, "could not release leases at shutdown; they expire on their own");
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Submit(jobs, endpoints) => {
                for row in endpoints {
                    let id: Arc<str> = Arc::from(row.id.as_str());
                    // The store hands out the same row until the endpoint changes: only a
                    // new row needs its target derived again (URL, keys, headers).
                    if self
                        .ep(&id)
                        .row
                        .as_ref()
                        .is_some_and(|r| Arc::ptr_eq(r, &row))
                    {
                        continue;
                    }
                    let target = target::target_of(&row, self.cfg.endpoint_concurrency);
                    let ep = self.ep(&id);
                    ep.target = target;
                    ep.row = Some(row);
                }
                self.accept_submitted(jobs);
            }
            Msg::Finished(id, tenant, health) => {
                self.tenant_finished(&tenant);
                self.finished(&id, health);
                self.update_admission(&id);
            }
            Msg::Due(id, at) => {
                self.set_due(&id, at);
                self.update_admission(&id);
            }
            Msg::Claimed(id, result) => {
                let target = match &result {
                    Ok(claimed) => claimed
                        .endpoint
                        .as_ref()
                        .and_then(|r| target::target_of(r, self.cfg.endpoint_concurrency)),
                    Err(_) => None,
                };
                let ep = self.ep(&id);
                ep.claiming = false;
                match result {
                    Ok(claimed) => {
                        adopt_failing(ep, target.as_deref());
                        ep.target = target;
                        ep.queue.extend(claimed.jobs);
                        ep.stored_due = None;
                        let learned = ep.due_while_claiming.take();
                        if claimed.endpoint.is_none() {
                            self.forget(&id);
                            return;
                        }
                        for at in claimed.next_due.into_iter().chain(learned) {
                            self.set_due(&id, at);
                        }
                        self.mark_ready(&id);
                    }
                    Err(e) => {
                        tracing::error!(endpoint = %id, error = %e, "claiming deliveries failed; retrying later");
                        let retry_at = now_millis() + 1_000;
                        self.set_due(&id, retry_at);
                    }
                }
                self.update_admission(&id);
            }
            Msg::EndpointChanged(id) => self.load_target(&id),
            Msg::TargetLoaded(id, row) => {
                self.ep(&id).loading = false;
                match row {
                    // Deleted: its deliveries are gone from the store too.
                    None => self.forget(&id),
                    Some(row) => {
                        let target = target::target_of(&row, self.cfg.endpoint_concurrency);
                        let ep = self.ep(&id);
                        let enabled = row.enabled;
                        if enabled && row.failing_since.is_none() {
                            // Re-enabled or reset by an operator: start afresh.
                            ep.circuit = Circuit::default();
                        }
                        adopt_failing(ep, target.as_deref());
                        ep.target = target;
                        if enabled {
                            // Work may have waited in the store while it was disabled.
                            self.set_due(&id, now_millis());
                            self.mark_ready(&id);
                        } else {
                            self.release_queue(&id);
                        }
                    }
                }
                self.update_admission(&id);
            }
            Msg::Summary(rows) => {
                for (id, at) in rows {
                    let id = Arc::from(id.as_str());
                    self.set_due(&id, at);
                    self.update_admission(&id);
                }
            }
            // Nothing to do but run `pump` again, which the loop does after every message.
            Msg::Recorded => {}
            Msg::Nodes(n) => {
                if n != self.nodes {
                    tracing::info!(
                        nodes = n,
                        "nodes sharing the store changed; per-endpoint limits are shared out among them"
                    );
                }
                let more = n > self.nodes;
                self.nodes = n.max(1);
                self.metrics.set_nodes(self.nodes);
                if more {
                    self.shed_excess();
                }
            }
        }
    }

    fn ep(&mut self, id: &Arc<str>) -> &mut EndpointState {
        self.endpoints.entry(id.clone()).or_default()
    }

    /// Drops an endpoint that no longer exists; attempts still in flight finish on their own
    /// (their records are fenced out, since the rows are gone).
    fn forget(&mut self, id: &Arc<str>) {
        self.admission.set(id, false);
        if let Some(ep) = self.endpoints.get_mut(id) {
            if ep.in_flight == 0 {
                self.endpoints.remove(id);
            } else {
                ep.queue.clear();
                ep.target = None;
            }
        }
    }

    /// A tenant's attempt ended: if it was at its cap, its waiting endpoints may go again.
    fn tenant_finished(&mut self, tenant: &Arc<str>) {
        if let Some(n) = self.tenant_in_flight.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.tenant_in_flight.remove(tenant);
            }
        }
        if let Some(waiting) = self.tenant_waiting.remove(tenant) {
            for id in waiting {
                if self.endpoints.contains_key(&id) {
                    self.mark_ready(&id);
                }
            }
        }
    }

    fn finished(&mut self, id: &Arc<str>, health: Health) {
        self.in_flight -= 1;
        let now = now_millis();
        let threshold = self.cfg.failure_threshold;
        let probe = self.cfg.probe_interval.as_millis() as i64;
        let auto_disable = self.cfg.auto_disable_after.as_millis() as i64;
        let ep = self.ep(id);
        ep.in_flight -= 1;
        match health {
            Health::Ok => {
                let was_failing = ep.circuit.succeeded()
                    || ep
                        .target
                        .as_ref()
                        .is_some_and(|t| t.failing_since.is_some());
                if was_failing {
                    if let Some(t) = &mut ep.target {
                        Arc::make_mut(t).failing_since = None;
                    }
                    let target = ep.target.clone();
                    self.health_change(id, HealthChange::Recovered, move |emitter| {
                        if let Some(t) = target {
                            emitter.emit("chime.endpoint.recovered", endpoint_data(&t, None));
                        }
                    });
                    // Work released while it was failing waits in the store.
                    self.set_due(id, now);
                }
            }
            Health::Failed | Health::TimedOut => {
                let timed_out = health == Health::TimedOut;
                match ep.circuit.failed(timed_out, now, threshold, probe) {
                    AfterFailure::Counted => {}
                    AfterFailure::ProbeFailed(next) => {
                        self.timers.push(Reverse((next, id.clone())));
                    }
                    AfterFailure::Opened(next) => {
                        let mut newly_failing = false;
                        if let Some(t) = &mut ep.target
                            && t.failing_since.is_none()
                        {
                            Arc::make_mut(t).failing_since = Some(now);
                            newly_failing = true;
                        }
                        tracing::warn!(endpoint = %id, "endpoint is failing; probing it instead of delivering at full rate");
                        self.timers.push(Reverse((next, id.clone())));
                        if newly_failing {
                            self.health_change(id, HealthChange::Failing(now), |_| {});
                        }
                        self.release_queue(id);
                    }
                }
                let since = self
                    .endpoints
                    .get(id)
                    .and_then(|ep| ep.target.as_ref())
                    .and_then(|t| t.failing_since);
                if let Some(since) = since
                    && now - since >= auto_disable
                {
                    self.disable(
                        id,
                        format!(
                            "failing since {} with no successful attempt",
                            format_time(since)
                        ),
                    );
                }
            }
            Health::Gone => self.disable(id, "the receiver answered 410 Gone".to_owned()),
            Health::Untouched => {}
        }
        self.mark_ready(id);
        self.maybe_claim(id);
    }

    /// Persists a health change; `then` runs (with the emitter) only if it changed something,
    /// so each transition is announced once even with several nodes.
    fn health_change(
        &self,
        id: &Arc<str>,
        change: HealthChange,
        then: impl FnOnce(&Emitter) + Send + 'static,
    ) {
        let store = self.store.clone();
        let emitter = self.emitter.clone();
        let id = id.clone();
        tokio::spawn(async move {
            match store.change_health(&id, change, now_millis()).await {
                Ok(true) => then(&emitter),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(endpoint = %id, error = %e, "could not record endpoint health")
                }
            }
        });
    }

    fn disable(&mut self, id: &Arc<str>, reason: String) {
        let ep = self.ep(id);
        let Some(t) = &mut ep.target else { return };
        if !t.enabled {
            return;
        }
        Arc::make_mut(t).enabled = false;
        let target = t.clone();
        tracing::warn!(endpoint = %id, reason = %reason, "endpoint disabled");
        self.release_queue(id);
        let data_reason = reason.clone();
        self.health_change(id, HealthChange::Disable(reason), move |emitter| {
            emitter.emit(
                "chime.endpoint.disabled",
                endpoint_data(&target, Some(&data_reason)),
            );
        });
    }

    /// Gives an endpoint's queued (not started) jobs back to the store, where they wait
    /// without spending retries.
    fn release_queue(&mut self, id: &Arc<str>) {
        let now = now_millis();
        let ep = self.ep(id);
        if ep.queue.is_empty() {
            return;
        }
        let jobs: Vec<Job> = ep.queue.drain(..).collect();
        ep.stored_due = Some(ep.stored_due.map_or(now, |d| d.min(now)));
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.release(jobs).await {
                tracing::error!(error = %e, "could not release queued deliveries; their leases expire on their own");
            }
        });
    }

    fn accept_submitted(&mut self, jobs: Vec<Job>) {
        let now = now_millis();
        let mut overflow: Vec<Job> = Vec::new();
        let mut overflowed: Vec<Arc<str>> = Vec::new();
        let mut touched: Vec<Arc<str>> = Vec::new();
        for job in jobs {
            let id: Arc<str> = job.endpoint_id.clone().into();
            let bound = {
                let ep = self.ep(&id);
                let target = ep.target.clone();
                self.queue_bound(target.as_deref())
            };
            let ep = self.ep(&id);
            if !ep.has_room(bound, now) {
                overflow.push(job);
                if overflowed.last() != Some(&id) {
                    overflowed.push(id.clone());
                }
            } else {
                ep.queue.push_back(job);
                self.mark_ready(&id);
            }
            if touched.last() != Some(&id) {
                touched.push(id);
            }
        }
        for id in &touched {
            self.update_admission(id);
        }
        self.release_overflow(overflow, overflowed);
    }

    /// Gives jobs this node cannot hold back to the store, where any node may claim them
    /// (`release` wakes the other nodes), and claims them again here when there is room.
    fn release_overflow(&self, overflow: Vec<Job>, endpoints: Vec<Arc<str>>) {
        if overflow.is_empty() {
            return;
        }
        let store = self.store.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Err(e) = store.release(overflow).await {
                tracing::error!(error = %e, "could not release overflow deliveries; they are retried when their lease expires");
            }
            let now = now_millis();
            for id in endpoints {
                let _ = tx.send(Msg::Due(id, now));
            }
        });
    }

    /// More nodes now share the store: what this node queued beyond its new bound goes back
    /// to the store for them, newest first, so the endpoint's cap is used across the nodes.
    fn shed_excess(&mut self) {
        let mut overflow = Vec::new();
        let mut endpoints = Vec::new();
        let ids: Vec<Arc<str>> = self.endpoints.keys().cloned().collect();
        for id in ids {
            let bound = {
                let target = self.ep(&id).target.clone();
                self.queue_bound(target.as_deref())
            };
            let ep = self.ep(&id);
            let before = overflow.len();
            while ep.queue.len() + ep.in_flight as usize > bound {
                let Some(job) = ep.queue.pop_back() else {
                    break;
                };
                overflow.push(job);
            }
            if overflow.len() > before {
                endpoints.push(id.clone());
                self.update_admission(&id);
            }
        }
        self.release_overflow(overflow, endpoints);
    }

    fn set_due(&mut self, id: &Arc<str>, at: Millis) {
        let ep = self.ep(id);
        if ep.claiming {
            ep.due_while_claiming = Some(ep.due_while_claiming.map_or(at, |d| d.min(at)));
        }
        let earlier = ep.stored_due.is_none_or(|d| at < d);
        if earlier {
            ep.stored_due = Some(at);
            self.timers.push(Reverse((at, id.clone())));
        }
        if at <= now_millis() {
            self.maybe_claim(id);
        }
    }

    fn fire_timers(&mut self) {
        let now = now_millis();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, id)) = self.timers.pop().expect("peeked");
            // Timers serve retries, probes and rate limits alike: re-check everything.
            self.mark_ready(&id);
            self.maybe_claim(&id);
        }
    }

    fn scan(&mut self) {
        let store = self.store.clone();
        let tx = self.tx.clone();
        let owner = self.owner.clone();
        // A node is counted live for three scan periods after its last heartbeat.
        let ttl = self.cfg.poll_interval * 3;
        tokio::spawn(async move {
            match store.live_nodes(&owner, ttl).await {
                Ok(n) => {
                    let _ = tx.send(Msg::Nodes(n));
                }
                Err(e) => tracing::warn!(error = %e, "could not count the nodes sharing the store"),
            }
            match store.due_summary(now_millis()).await {
                Ok(rows) => {
                    let _ = tx.send(Msg::Summary(rows));
                }
                Err(e) => tracing::error!(error = %e, "scan for due deliveries failed"),
            }
        });
    }

    fn maybe_claim(&mut self, id: &Arc<str>) {
        let now = now_millis();
        let bound = {
            let Some(ep) = self.endpoints.get(id) else {
                return;
            };
            self.queue_bound(ep.target.as_deref())
        };
        let Some(ep) = self.endpoints.get_mut(id) else {
            return;
        };
        let due = matches!(ep.stored_due, Some(at) if at <= now);
        if !due || ep.claiming || ep.target.as_ref().is_some_and(|t| !t.enabled) {
            return;
        }
        let held = ep.queue.len() + ep.in_flight as usize;
        let one_at_a_time = ep.circuit.is_open() || ep.target.as_ref().is_some_and(|t| t.ordered);
        let limit = if one_at_a_time {
            // A probe, or an ordered endpoint's next delivery: only when nothing else is held.
            if held > 0 || ep.circuit.probe_at().is_some_and(|p| now < p) {
                return;
            }
            1
        } else {
            // Claim when half the room is free, so claims come in batches, not one by one.
            if held > bound / 2 {
                return;
            }
            (bound - held) as u32
        };
        ep.claiming = true;
        // Built only when a claim really goes out: this runs after every started attempt.
        let lease = Lease {
            owner: self.owner.clone(),
            token: rand::random::<i64>(),
            duration: self.cfg.lease,
            admission: None,
        };
        let store = self.store.clone();
        let tx = self.tx.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let result = store.claim(&id, limit, now, &lease).await;
            let _ = tx.send(Msg::Claimed(id, result));
        });
    }

    fn load_target(&mut self, id: &Arc<str>) {
        let ep = self.ep(id);
        if ep.loading {
            return;
        }
        ep.loading = true;
        let store = self.store.clone();
        let tx = self.tx.clone();
        let id = id.clone();
        tokio::spawn(async move {
            match store.get_endpoint_by_id(&id).await {
                Ok(row) => {
                    let _ = tx.send(Msg::TargetLoaded(id, row));
                }
                Err(e) => {
                    tracing::error!(endpoint = %id, error = %e, "could not load endpoint");
                }
            }
        });
    }

    fn mark_ready(&mut self, id: &Arc<str>) {
        let ep = self.ep(id);
        if !ep.in_ready && !ep.queue.is_empty() {
            ep.in_ready = true;
            self.ready.push_back(id.clone());
        }
    }

    /// Starts attempts, one per endpoint per turn, until the global cap is reached or no
    /// endpoint can start one.
    fn pump(&mut self) {
        let probe = self.cfg.probe_interval.as_millis() as i64;
        let mut stale: Vec<Job> = Vec::new();
        while self.in_flight < self.cfg.max_in_flight {
            let Ok(permit) = self.record_slots.clone().try_acquire_owned() else {
                break;
            };
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let now = now_millis();
            let Some(ep) = self.endpoints.get_mut(&id) else {
                continue;
            };
            ep.in_ready = false;
            let Some(target) = ep.target.clone() else {
                self.load_target(&id);
                continue;
            };
            // Each `continue` below leaves the endpoint out of the ring until something
            // changes for it: a finished attempt, a timer, a reload.
            let cap = share(target.max_in_flight, self.nodes);
            if !target.enabled || ep.in_flight >= cap {
                continue;
            }
            let tenant_held = self.tenant_in_flight.get(&target.tenant_id).copied();
            if !limits::tenant_may_start(tenant_held.unwrap_or(0), self.cfg.tenant_max_in_flight) {
                self.tenant_waiting
                    .entry(target.tenant_id.clone())
                    .or_default()
                    .insert(id.clone());
                continue;
            }
            if let MayStart::At(at) = ep.circuit.may_start(now, ep.in_flight, probe) {
                self.timers.push(Reverse((at, id.clone())));
                continue;
            }
            if let Some(rate) = target.rate_limit_per_s {
                let per_node = rate as f64 / self.nodes as f64;
                if let Err(wait) = ep.pace.try_start(per_node, Instant::now()) {
                    let wait = wait.as_millis().max(1) as i64;
                    self.timers.push(Reverse((now + wait, id.clone())));
                    continue;
                }
            }
            // A job whose lease could end before its attempt does goes back to the store
            // (a node slowed down too much to start it in time): another claim, with a fresh
            // lease, sends it once, where starting it now could send it twice.
            let room = self
                .cfg
                .lease
                .saturating_sub(self.cfg.attempt_timeout + LEASE_MARGIN);
            let mut job = None;
            while let Some(next) = ep.queue.pop_front() {
                if next.held_since.is_some_and(|at| at.elapsed() > room) {
                    stale.push(next);
                } else {
                    job = Some(next);
                    break;
                }
            }
            if !stale.is_empty() {
                ep.stored_due = Some(ep.stored_due.map_or(now, |d| d.min(now)));
            }
            let Some(job) = job else {
                continue;
            };
            ep.in_flight += 1;
            self.in_flight += 1;
            *self
                .tenant_in_flight
                .entry(target.tenant_id.clone())
                .or_default() += 1;
            if !ep.queue.is_empty() && ep.in_flight < cap {
                ep.in_ready = true;
                self.ready.push_back(id.clone());
            }
            self.start(job, target, permit);
            self.maybe_claim(&id);
        }
        if !stale.is_empty() {
            tracing::warn!(
                jobs = stale.len(),
                "deliveries held too long to start within their lease were given back"
            );
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.release(stale).await {
                    tracing::error!(error = %e, "could not release stale deliveries; their leases expire on their own");
                }
            });
        }
    }

    fn start(&self, job: Job, target: Arc<Target>, permit: OwnedSemaphorePermit) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let tx = self.tx.clone();
        let schedule = self.cfg.retry_schedule.clone();
        let max_retry_after = self.cfg.max_retry_after;
        let abandon = self.abandon.clone();
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            let endpoint: Arc<str> = job.endpoint_id.clone().into();
            if let Some(since) = job.unattempted_since {
                let waited = (now_millis() - since).max(0) as u64;
                metrics.first_attempt(Duration::from_millis(waited));
            }
            metrics.attempt_started();
            let attempt = async {
                let started_at_ms = now_millis();
                let started = std::time::Instant::now();
                let not_sent = |kind, error: String| http::HttpResult {
                    started_at_ms,
                    duration: started.elapsed(),
                    status: None,
                    error_kind: Some(kind),
                    error: Some(error),
                    response: None,
                    retry_after: None,
                };
                match transformed::prepare(client.transforms(), &job, &target).await {
                    transformed::Prepared::Send {
                        target,
                        body,
                        inbound,
                        keep,
                    } => {
                        let r = client.attempt(
                            &target,
                            &job.event_id,
                            &job.delivery_id,
                            body,
                            job.traceparent.as_ref(),
                            inbound.as_deref(),
                        );
                        (r.await, keep)
                    }
                    transformed::Prepared::Cancelled(why) => (
                        not_sent(
                            http::ErrorKind::Cancelled,
                            format!("cancelled by the transformation: {why}"),
                        ),
                        None,
                    ),
                    transformed::Prepared::Failed(why) => {
                        (not_sent(http::ErrorKind::Transformation, why), None)
                    }
                }
            };
            let (result, keep) = tokio::select! {
                r = attempt => r,
                _ = abandon.cancelled() => {
                    metrics.attempt_ended();
                    return;
                }
            };
            metrics.attempt_ended();
            metrics.attempt(&job.tenant_id, result.error_kind, result.duration);
            let health = match (result.error_kind, result.status) {
                (None, _) => Health::Ok,
                (Some(http::ErrorKind::Cancelled), _) => Health::Untouched,
                (_, Some(410)) => Health::Gone,
                (Some(http::ErrorKind::Timeout), _) => Health::TimedOut,
                _ => Health::Failed,
            };
            let _ = tx.send(Msg::Finished(
                endpoint.clone(),
                target.tenant_id.clone(),
                health,
            ));
            let jitter = rand::random::<f64>() * 2.0 - 1.0;
            let mut outcome = outcome::outcome_of(&job, result, &schedule, jitter, max_retry_after);
            outcome.transformed = keep;
            let retry_at = outcome.next_attempt_at;
            tracing::debug!(
                delivery = %outcome.delivery_id,
                endpoint = %endpoint,
                status = outcome.status.as_str(),
                error_kind = outcome.attempt.error_kind.as_deref().unwrap_or(""),
                "attempt finished"
            );
            let exhausted = (outcome.status == DeliveryStatus::Failed).then(|| {
                json!({
                    "tenant_id": job.tenant_id,
                    "endpoint_id": &*endpoint,
                    "delivery_id": job.delivery_id,
                    "event_id": job.event_id,
                    "attempts_in_schedule": outcome.cycle_failures,
                    "last_status_code": outcome.attempt.status_code,
                    "last_error_kind": outcome.attempt.error_kind,
                })
            });
            let after = AfterRecord {
                endpoint,
                delivery_id: job.delivery_id,
                tenant_id: job.tenant_id,
                retry_at,
                ordered: target.ordered,
                exhausted,
            };
            // Wait for the commit, so a graceful shutdown (which waits for this task) records
            // every attempt that finished.
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            if recorder.send((outcome, after, done_tx, permit)).is_ok() {
                let _ = done_rx.await;
            }
        });
    }
}
