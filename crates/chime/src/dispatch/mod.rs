//! The dispatcher: turns stored deliveries into HTTP attempts, fairly and within limits.
//!
//! Parts:
//! - `Dispatcher` (this file): one actor task that owns all in-memory dispatch state, a
//!   bounded queue per endpoint, and starts attempts round-robin across endpoints within
//!   each endpoint's concurrency cap and a global cap.
//! - `http`: the SSRF-guarded, pooled client that signs and POSTs one delivery.
//! - `outcome`: the pure mapping from an HTTP result to the delivery's next state.
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

pub mod http;
pub mod outcome;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{Millis, now_millis};
use crate::store::{Claimed, Endpoint, Job, Lease, Store};
use http::{DeliveryClient, Target};

/// The dispatcher's settings (a slice of `Config`).
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    pub retry_schedule: Vec<Duration>,
    pub endpoint_concurrency: u32,
    pub max_in_flight: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
}

enum Msg {
    /// Leased jobs from publishing, with the endpoint rows read in the same transaction.
    Submit(Vec<Job>, Vec<Endpoint>),
    /// An attempt's HTTP exchange ended: its endpoint has a free slot.
    Finished(Arc<str>),
    /// The store holds unleased deliveries of this endpoint due at this time.
    Due(Arc<str>, Millis),
    Claimed(Arc<str>, crate::store::Result<Claimed>),
    /// The endpoint was changed or deleted through the API: reload it.
    EndpointChanged(Arc<str>),
    TargetLoaded(Arc<str>, Option<Endpoint>),
    Summary(Vec<(String, Millis)>),
}

/// A cheap handle used by the API to feed the dispatcher.
#[derive(Clone)]
pub struct DispatchHandle {
    tx: mpsc::UnboundedSender<Msg>,
    owner: Arc<str>,
    lease: Duration,
}

impl DispatchHandle {
    /// A fresh lease for deliveries this node is about to create.
    pub fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            token: rand::random::<i64>(),
            duration: self.lease,
        }
    }

    /// Hands over deliveries that were just committed, leased with `lease()`.
    pub fn submit(&self, jobs: Vec<Job>, endpoints: Vec<Endpoint>) {
        if !jobs.is_empty() {
            let _ = self.tx.send(Msg::Submit(jobs, endpoints));
        }
    }

    pub fn endpoint_changed(&self, endpoint_id: &str) {
        let _ = self.tx.send(Msg::EndpointChanged(Arc::from(endpoint_id)));
    }

    /// The store has deliveries of this endpoint due at `at` (e.g. after a manual retry).
    pub fn due(&self, endpoint_id: &str, at: Millis) {
        let _ = self.tx.send(Msg::Due(Arc::from(endpoint_id), at));
    }
}

/// In-memory state of one endpoint.
#[derive(Default)]
struct Ep {
    target: Option<Arc<Target>>,
    /// Leased jobs waiting for a slot, oldest first.
    queue: VecDeque<Job>,
    in_flight: u32,
    /// Earliest due time of deliveries of this endpoint left in the store, if any.
    stored_due: Option<Millis>,
    claiming: bool,
    /// Due times learned while a claim was running: the claim's own answer may predate them.
    due_while_claiming: Option<Millis>,
    loading: bool,
    in_ready: bool,
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    client: DeliveryClient,
    cfg: DispatchConfig,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    owner: Arc<str>,
    endpoints: HashMap<Arc<str>, Ep>,
    /// Endpoints that may be able to start an attempt, served round-robin.
    ready: VecDeque<Arc<str>>,
    timers: BinaryHeap<Reverse<(Millis, Arc<str>)>>,
    in_flight: usize,
    tracker: TaskTracker,
    /// Cancelled when the shutdown grace period is over: abandons attempts still running.
    abandon: CancellationToken,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        client: DeliveryClient,
        cfg: DispatchConfig,
    ) -> (Self, DispatchHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let owner: Arc<str> = Arc::from(crate::model::new_id("node").as_str());
        let handle = DispatchHandle {
            tx: tx.clone(),
            owner: owner.clone(),
            lease: cfg.lease,
        };
        let d = Self {
            store,
            client,
            cfg,
            tx,
            rx,
            owner,
            endpoints: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            in_flight: 0,
            tracker: TaskTracker::new(),
            abandon: CancellationToken::new(),
        };
        (d, handle)
    }

    /// Jobs held in memory per endpoint (queued plus in flight): enough to keep its slots busy
    /// between claims, small enough that a huge backlog stays in the store.
    fn queue_bound(&self) -> usize {
        (self.cfg.endpoint_concurrency as usize * 8).max(64)
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
                    let target = target_of(&row);
                    self.ep(&id).target = target;
                }
                self.accept_submitted(jobs);
            }
            Msg::Finished(id) => {
                self.in_flight -= 1;
                let ep = self.ep(&id);
                ep.in_flight -= 1;
                self.mark_ready(&id);
                self.maybe_claim(&id);
            }
            Msg::Due(id, at) => self.set_due(&id, at),
            Msg::Claimed(id, result) => {
                let ep = self.ep(&id);
                ep.claiming = false;
                match result {
                    Ok(claimed) => {
                        ep.target = claimed.endpoint.as_ref().and_then(target_of);
                        ep.queue.extend(claimed.jobs);
                        ep.stored_due = None;
                        let learned = ep.due_while_claiming.take();
                        for at in claimed.next_due.into_iter().chain(learned) {
                            self.set_due(&id, at);
                        }
                        if claimed.endpoint.is_none() {
                            self.endpoints.remove(&id);
                            return;
                        }
                        self.mark_ready(&id);
                    }
                    Err(e) => {
                        tracing::error!(endpoint = %id, error = %e, "claiming deliveries failed; retrying later");
                        let retry_at = now_millis() + 1_000;
                        self.set_due(&id, retry_at);
                    }
                }
            }
            Msg::EndpointChanged(id) => self.load_target(&id),
            Msg::TargetLoaded(id, row) => {
                let ep = self.ep(&id);
                ep.loading = false;
                match row {
                    // Deleted: its deliveries are gone from the store too.
                    None => {
                        if ep.in_flight == 0 {
                            self.endpoints.remove(&id);
                        } else {
                            ep.queue.clear();
                            ep.target = None;
                        }
                    }
                    Some(row) => {
                        ep.target = target_of(&row);
                        self.mark_ready(&id);
                        self.maybe_claim(&id);
                    }
                }
            }
            Msg::Summary(rows) => {
                for (id, at) in rows {
                    self.set_due(&Arc::from(id.as_str()), at);
                }
            }
        }
    }

    fn ep(&mut self, id: &Arc<str>) -> &mut Ep {
        self.endpoints.entry(id.clone()).or_default()
    }

    fn accept_submitted(&mut self, jobs: Vec<Job>) {
        let bound = self.queue_bound();
        let now = now_millis();
        let mut overflow: Vec<(String, i64)> = Vec::new();
        let mut overflowed: Vec<Arc<str>> = Vec::new();
        for job in jobs {
            let id = job.endpoint_id.clone();
            let ep = self.ep(&id);
            // Work already due in the store goes first; and the queue stays bounded.
            let older_due = ep.stored_due.is_some_and(|d| d <= now);
            if older_due || ep.queue.len() + ep.in_flight as usize >= bound {
                overflow.push((job.delivery_id, job.lease_token));
                if overflowed.last() != Some(&id) {
                    overflowed.push(id);
                }
            } else {
                ep.queue.push_back(job);
                self.mark_ready(&id);
            }
        }
        if !overflow.is_empty() {
            let store = self.store.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                if let Err(e) = store.release(overflow).await {
                    tracing::error!(error = %e, "could not release overflow deliveries; they are retried when their lease expires");
                }
                let now = now_millis();
                for id in overflowed {
                    let _ = tx.send(Msg::Due(id, now));
                }
            });
        }
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
            self.maybe_claim(&id);
        }
    }

    fn scan(&mut self) {
        let store = self.store.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            match store.due_summary(now_millis()).await {
                Ok(rows) => {
                    let _ = tx.send(Msg::Summary(rows));
                }
                Err(e) => tracing::error!(error = %e, "scan for due deliveries failed"),
            }
        });
    }

    fn maybe_claim(&mut self, id: &Arc<str>) {
        let bound = self.queue_bound();
        let now = now_millis();
        let lease = Lease {
            owner: self.owner.clone(),
            token: rand::random::<i64>(),
            duration: self.cfg.lease,
        };
        let Some(ep) = self.endpoints.get_mut(id) else {
            return;
        };
        let due = matches!(ep.stored_due, Some(at) if at <= now);
        let held = ep.queue.len() + ep.in_flight as usize;
        // Claim when half the room is free, so claims come in batches rather than one by one.
        if !due || ep.claiming || held > bound / 2 {
            return;
        }
        if ep.target.as_ref().is_some_and(|t| !t.enabled) {
            return;
        }
        ep.claiming = true;
        let limit = (bound - held) as u32;
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
        let cap = self.cfg.endpoint_concurrency;
        while self.in_flight < self.cfg.max_in_flight {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(ep) = self.endpoints.get_mut(&id) else {
                continue;
            };
            ep.in_ready = false;
            let Some(target) = ep.target.clone() else {
                self.load_target(&id);
                continue;
            };
            if !target.enabled || ep.in_flight >= cap {
                // Finished or EndpointChanged puts it back in the ring.
                continue;
            }
            let Some(job) = ep.queue.pop_front() else {
                continue;
            };
            ep.in_flight += 1;
            self.in_flight += 1;
            if !ep.queue.is_empty() && ep.in_flight < cap {
                ep.in_ready = true;
                self.ready.push_back(id.clone());
            }
            self.start(job, target);
            self.maybe_claim(&id);
        }
    }

    fn start(&self, job: Job, target: Arc<Target>) {
        let client = self.client.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        let schedule = self.cfg.retry_schedule.clone();
        let abandon = self.abandon.clone();
        self.tracker.spawn(async move {
            let endpoint = job.endpoint_id.clone();
            let attempt = client.attempt(&target, &job.event_id, job.body.clone());
            let result = tokio::select! {
                r = attempt => r,
                _ = abandon.cancelled() => return,
            };
            let _ = tx.send(Msg::Finished(endpoint.clone()));
            let jitter = rand::random::<f64>() * 2.0 - 1.0;
            let outcome = outcome::outcome_of(&job, result, &schedule, jitter);
            let retry_at = outcome.next_attempt_at;
            tracing::debug!(
                delivery = %outcome.delivery_id,
                endpoint = %endpoint,
                status = outcome.status.as_str(),
                error_kind = outcome.attempt.error_kind.as_deref().unwrap_or(""),
                "attempt finished"
            );
            if outcome.status == crate::store::DeliveryStatus::Failed {
                tracing::warn!(
                    delivery = %outcome.delivery_id,
                    endpoint = %endpoint,
                    "delivery failed: retries exhausted"
                );
            }
            match store.record(vec![outcome]).await {
                Ok(applied) => {
                    if let (Some(at), Some(true)) = (retry_at, applied.first()) {
                        let _ = tx.send(Msg::Due(endpoint, at));
                    }
                }
                Err(e) => {
                    tracing::error!(delivery = %job.delivery_id, error = %e, "could not record an attempt; the delivery will be retried");
                }
            }
        });
    }
}

fn target_of(row: &Endpoint) -> Option<Arc<Target>> {
    let uri = row.url.parse().ok()?;
    let mut secrets = vec![(chime_webhooks::Secret::parse(&row.secret).ok()?, None)];
    if let (Some(prev), Some(until)) = (&row.previous_secret, row.previous_secret_expires_at)
        && let Ok(prev) = chime_webhooks::Secret::parse(prev)
    {
        secrets.push((prev, Some(until)));
    }
    Some(Arc::new(Target {
        endpoint_id: Arc::from(row.id.as_str()),
        uri,
        secrets,
        enabled: row.enabled,
    }))
}
