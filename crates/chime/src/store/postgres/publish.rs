//! Group commit of publishes.
//!
//! A publish used to be its own transaction: two round trips and one WAL flush per event, and
//! per event the tenant's endpoint rows read, sent and parsed again. Under concurrent load
//! PostgreSQL then spent most of its time in per-statement and per-commit overhead (executor
//! set-up, row locks for the foreign keys, waits on the WAL write lock), about 0.4 ms of server
//! CPU per event on the benchmark machine.
//!
//! Here every publish that arrives while earlier batches are being written joins the next
//! batch, which costs two statements and one commit whatever its size: one read of the
//! batch's tenants (with the endpoint rows of those whose endpoints changed since this node
//! last read them, see `EndpointCache`), and one statement that inserts all of the batch's
//! events and deliveries. Each caller is answered after that commit, so a `202` still means
//! stored durably. An idle node writes each publish at once: nothing waits for a batch to fill.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;

/// Batches written at once. One batch waits for its commit (the WAL flush) while the next is
/// read and planned; more than a few only add connections contending for the WAL.
const PUBLISH_WRITERS: usize = 2;
/// Most deliveries one batch stores (a batch takes at least one publish, however large).
const MAX_BATCH_DELIVERIES: usize = 4096;
/// Most events one batch stores.
const MAX_BATCH_EVENTS: usize = 512;

/// One publish waiting for its batch.
pub(super) struct PublishRequest {
    pub event: NewEvent,
    pub lease: Lease,
    pub reply: oneshot::Sender<Result<Stored>>,
}

/// What the batch did with one publish.
pub(super) enum Stored {
    /// Stored now, with these deliveries (each: the delivery, its endpoint row, leased?).
    New {
        event: NewEvent,
        lease: Lease,
        deliveries: Vec<crate::store::Planned>,
    },
    /// The idempotency key was taken (by another event of this batch, or earlier): the
    /// caller answers with what is stored for it.
    Taken(NewEvent),
}

/// Whom a batch wakes. Deliveries a batch stores unleased (the publishing node has no room
/// for them) are work any node may claim; while other nodes are alive, the batch notifies
/// their endpoints in its own transaction, so an idle node claims them at once instead of
/// at its next scan. Alone, a node wakes nobody (its dispatcher already knows them due).
pub(super) struct Wake {
    pub peers: Arc<std::sync::atomic::AtomicU32>,
    pub channel: String,
}

impl Wake {
    /// The distinct endpoints to notify for `planned`: none while no other node is alive.
    fn endpoints<'a>(&self, planned: &'a [PlannedPublish]) -> Vec<&'a str> {
        if self.peers.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return vec![];
        }
        let mut seen = HashSet::new();
        planned
            .iter()
            .flat_map(|p| &p.deliveries)
            .filter(|d| d.status == DeliveryStatus::Pending && !d.leased)
            .map(|d| d.endpoint.id.as_str())
            .filter(|id| seen.insert(*id))
            .collect()
    }
}

/// A tenant's endpoint rows as of `version` (`tenants.endpoints_version`), in `seq` order.
/// The rows are shared: every publish of the tenant hands the same `Arc`s to the dispatcher,
/// which then knows them unchanged without deriving its delivery targets again.
struct TenantEndpoints {
    version: i64,
    endpoints: Vec<Arc<Endpoint>>,
}

/// This node's copy of the endpoint rows of the tenants it publishes to, checked against the
/// database's version at every batch, so it is never older than the batch's read.
#[derive(Default)]
pub(super) struct EndpointCache {
    tenants: Mutex<HashMap<String, Arc<TenantEndpoints>>>,
}

/// Tenants present with their endpoints version; for tenants whose version differs from the
/// one passed (-1: none cached), their endpoint rows too, in `seq` order (NULL endpoint
/// columns: a tenant without endpoints). One snapshot, so rows and version agree.
const TENANTS_SQL: &str = "SELECT e.id, e.tenant_id, e.url, e.events, e.description, e.enabled,
            e.secret, e.created_at, e.updated_at, e.seq, e.previous_secret,
            e.previous_secret_expires_at, e.settings, e.disabled_reason, e.failing_since,
            t.id, t.endpoints_version, t.endpoints_version IS DISTINCT FROM c.version
     FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS c(id, version, ord)
     JOIN tenants t ON t.id = c.id
     LEFT JOIN endpoints e ON e.tenant_id = t.id AND t.endpoints_version IS DISTINCT FROM c.version
     ORDER BY c.ord, e.seq";

/// Stores a batch: its events (an event whose idempotency key is taken is left out, with its
/// deliveries) and their deliveries, in one statement and so one transaction. Returns the ids
/// of the events inserted. Deliveries are inserted in the order given, so `seq` orders them as
/// the publishes were batched (an ordered endpoint's head is the oldest by `seq`).
/// The endpoints and the tenants are locked FOR KEY SHARE once each, which is what foreign
/// keys did per row: if one was deleted after the batch read it, `chime_all_endpoints` or
/// `chime_all_tenants` fails the statement with a foreign key violation (the caller reads
/// again); one deleted later waits for this commit, and its deliveries or events go with it
/// (`endpoints_deleted`, `tenants_deleted`, schema.rs).
const INSERT_SQL: &str = concat!(
    "WITH locked AS (
         SELECT id FROM endpoints WHERE id = ANY($11::text[]) FOR KEY SHARE
     ), locked_tenants AS (
         SELECT id FROM tenants WHERE id = ANY($2::text[]) FOR KEY SHARE
     ), keys AS (
         -- An idempotency key is unique per tenant across every partition, so it lives in
         -- a table of its own: the event is inserted only if its key was. (The arrays are
         -- read twice rather than through one CTE, which would copy every payload.)
         INSERT INTO event_keys (tenant_id, idempotency_key, event_id, created_at)
         SELECT k.tenant_id, k.key, k.id, k.created_at
         FROM unnest($2::text[], $5::text[], $1::text[], $6::bigint[])
             AS k(tenant_id, key, id, created_at)
         WHERE k.key IS NOT NULL
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING event_id
     ), ev AS (
         INSERT INTO events (id, tenant_id, name, payload, idempotency_key, created_at,
             traceparent, inbound)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[],
                              $6::bigint[], $18::text[], $19::text[])
             AS u(id, tenant_id, name, payload, idempotency_key, created_at, traceparent,
                  inbound)
         WHERE u.idempotency_key IS NULL OR u.id IN (SELECT event_id FROM keys)
         RETURNING id
     ), dl AS (
         INSERT INTO deliveries (id, tenant_id, event_id, event_name, endpoint_id, status,
             next_attempt_at, lease_owner, lease_token, leased_until, created_at, updated_at)
         SELECT d.id, d.tenant_id, d.event_id, d.event_name, d.endpoint_id, d.status,
                d.next_attempt_at, d.owner, d.token,
                CASE WHEN d.owner IS NOT NULL THEN ",
    db_now!(),
    " + d.duration END,
                d.created_at, d.created_at
         FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                     $13::bigint[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[])
             WITH ORDINALITY AS d(id, tenant_id, event_id, event_name, endpoint_id, status,
                                  next_attempt_at, owner, token, duration, created_at, ord)
         WHERE d.event_id IN (SELECT id FROM ev)
         ORDER BY d.ord
     ), woken AS (
         SELECT count(pg_notify($20, x)) FROM unnest($21::text[]) x
     )
     SELECT id FROM ev, woken
     WHERE chime_all_endpoints((SELECT count(*) FROM locked),
                               (SELECT count(DISTINCT x) FROM unnest($11::text[]) x))
       AND chime_all_tenants((SELECT count(*) FROM locked_tenants),
                             (SELECT count(DISTINCT x) FROM unnest($2::text[]) x))"
);

/// Takes publishes off `requests` and writes them in batches, up to `PUBLISH_WRITERS` batches
/// at once. Whatever queued while all writers were busy goes into the next batch.
pub(super) async fn run_publisher(
    pool: Pool,
    cache: Arc<EndpointCache>,
    wake: Wake,
    mut requests: mpsc::UnboundedReceiver<PublishRequest>,
) {
    let writers = Arc::new(Semaphore::new(PUBLISH_WRITERS));
    let wake = Arc::new(wake);
    while let Some(first) = requests.recv().await {
        let Ok(permit) = writers.clone().acquire_owned().await else {
            return;
        };
        let batch =
            crate::batch::gather(first, MAX_BATCH_EVENTS, |_| 1, || requests.try_recv().ok());
        let pool = pool.clone();
        let cache = cache.clone();
        let wake = wake.clone();
        tokio::spawn(async move {
            // The delivery bound is applied once the endpoints are known: a batch too large
            // is written in parts, one after the other.
            write_batches(&pool, &cache, &wake, batch).await;
            drop(permit);
        });
    }
}

/// Writes `batch`, split where it would exceed `MAX_BATCH_DELIVERIES`.
async fn write_batches(
    pool: &Pool,
    cache: &EndpointCache,
    wake: &Wake,
    batch: Vec<PublishRequest>,
) {
    let mut rest = batch;
    while !rest.is_empty() {
        rest = write_batch(pool, cache, wake, rest).await;
    }
}

/// One publish planned: its deliveries, decided from the endpoint rows read for the batch.
struct PlannedPublish {
    request: PublishRequest,
    deliveries: Vec<crate::store::Planned>,
}

/// Writes a prefix of `batch` in one transaction and answers its callers; returns the rest
/// (what did not fit under `MAX_BATCH_DELIVERIES`) for the next transaction.
async fn write_batch(
    pool: &Pool,
    cache: &EndpointCache,
    wake: &Wake,
    mut batch: Vec<PublishRequest>,
) -> Vec<PublishRequest> {
    let mut tries = 0;
    loop {
        tries += 1;
        let conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                let e = StoreError::from(e);
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
                return vec![];
            }
        };
        let endpoints = match read_endpoints(&conn, cache, &batch).await {
            Ok(found) => found,
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
                return vec![];
            }
        };
        let (planned, rest) = plan(batch, &endpoints);
        let started = std::time::Instant::now();
        match insert(&conn, wake, &planned).await {
            Ok(inserted) => {
                tracing::debug!(
                    events = planned.len(),
                    deliveries = planned.iter().map(|p| p.deliveries.len()).sum::<usize>(),
                    took_us = started.elapsed().as_micros() as u64,
                    "publish batch stored"
                );
                for p in planned {
                    let stored = if inserted.contains(p.request.event.id.as_str()) {
                        Stored::New {
                            event: p.request.event,
                            lease: p.request.lease,
                            deliveries: p.deliveries,
                        }
                    } else {
                        Stored::Taken(p.request.event)
                    };
                    let _ = p.request.reply.send(Ok(stored));
                }
                return rest;
            }
            // A tenant or endpoint was deleted after the read (their rows are then gone,
            // and the next read sees it): read again and store what it finds. Or a row was
            // routed to the DEFAULT partition as the partition for it was being made (a
            // check violation of the default's new bound): the next try routes it there.
            // Or it lost a deadlock to partition maintenance (which locks the parent
            // tables): rolled back whole, so written again as it is.
            Err(e)
                if (e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
                    || e.code() == Some(&SqlState::CHECK_VIOLATION)
                    || is_transient_lock_error(&e))
                    && tries < 3 =>
            {
                batch = planned.into_iter().map(|p| p.request).chain(rest).collect();
            }
            Err(e) => {
                let e = StoreError::from(e);
                if planned.len() > 1 && !matches!(e, StoreError::Unavailable(_)) {
                    // Something in one publish the database refused: write each alone, so
                    // only that one fails.
                    drop(conn);
                    for p in planned {
                        Box::pin(write_batches(pool, cache, wake, vec![p.request])).await;
                    }
                } else {
                    for p in planned {
                        let _ = p.request.reply.send(Err(e.clone()));
                    }
                }
                return rest;
            }
        }
    }
}

/// The endpoint rows of every tenant of the batch, from the cache where still current.
/// A tenant absent from the answer does not exist.
async fn read_endpoints(
    conn: &deadpool_postgres::Object,
    cache: &EndpointCache,
    batch: &[PublishRequest],
) -> Result<HashMap<String, Arc<TenantEndpoints>>> {
    let mut seen = HashSet::new();
    let tenants: Vec<&str> = batch
        .iter()
        .map(|r| r.event.tenant_id.as_str())
        .filter(|t| seen.insert(*t))
        .collect();
    let cached: Vec<Option<Arc<TenantEndpoints>>> = {
        let map = cache.tenants.lock().expect("endpoint cache lock");
        tenants.iter().map(|t| map.get(*t).cloned()).collect()
    };
    let versions: Vec<i64> = cached
        .iter()
        .map(|c| c.as_ref().map_or(-1, |c| c.version))
        .collect();
    let stmt = conn.prepare_cached(TENANTS_SQL).await?;
    let rows = conn.query(&stmt, &[&tenants, &versions]).await?;
    let mut found: HashMap<String, Arc<TenantEndpoints>> = HashMap::new();
    let mut fresh: HashMap<String, TenantEndpoints> = HashMap::new();
    for r in &rows {
        let tenant: String = r.try_get(15)?;
        let version: i64 = r.try_get(16)?;
        let changed: bool = r.try_get(17)?;
        if !changed {
            let i = tenants.iter().position(|t| *t == tenant);
            if let Some(c) = i.and_then(|i| cached[i].clone()) {
                found.insert(tenant, c);
            }
            continue;
        }
        let entry = fresh.entry(tenant).or_insert_with(|| TenantEndpoints {
            version,
            endpoints: vec![],
        });
        if r.try_get::<_, Option<String>>(0)?.is_some() {
            entry.endpoints.push(Arc::new(endpoint_row(r)?.0));
        }
    }
    if !fresh.is_empty() {
        let mut map = cache.tenants.lock().expect("endpoint cache lock");
        for (tenant, rows) in fresh {
            let rows = Arc::new(rows);
            map.insert(tenant.clone(), rows.clone());
            found.insert(tenant, rows);
        }
    }
    Ok(found)
}

/// Decides each publish's deliveries; answers publishes to missing tenants (`NotFound`).
/// Returns the publishes planned for this transaction and those left for the next one.
fn plan(
    batch: Vec<PublishRequest>,
    endpoints: &HashMap<String, Arc<TenantEndpoints>>,
) -> (Vec<PlannedPublish>, Vec<PublishRequest>) {
    let mut planned = Vec::with_capacity(batch.len());
    let mut count = 0;
    let mut rest = Vec::new();
    for request in batch {
        if !rest.is_empty() {
            rest.push(request);
            continue;
        }
        let Some(tenant) = endpoints.get(&request.event.tenant_id) else {
            let _ = request.reply.send(Err(StoreError::NotFound));
            continue;
        };
        let deliveries = match crate::store::plan(&tenant.endpoints, &request.event, &request.lease)
        {
            Ok(deliveries) => deliveries,
            Err(e) => {
                let _ = request.reply.send(Err(e));
                continue;
            }
        };
        if !planned.is_empty() && count + deliveries.len() > MAX_BATCH_DELIVERIES {
            rest.push(request);
            continue;
        }
        count += deliveries.len();
        planned.push(PlannedPublish {
            request,
            deliveries,
        });
    }
    (planned, rest)
}

/// Runs `INSERT_SQL` for the planned publishes; the ids of the events stored.
async fn insert(
    conn: &deadpool_postgres::Object,
    wake: &Wake,
    planned: &[PlannedPublish],
) -> std::result::Result<HashSet<String>, tokio_postgres::Error> {
    let n = planned.len();
    let mut ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut traceparents = Vec::with_capacity(n);
    let mut inbounds: Vec<Option<String>> = Vec::with_capacity(n);
    let m: usize = planned.iter().map(|p| p.deliveries.len()).sum();
    let mut d_ids = Vec::with_capacity(m);
    let mut d_tenants = Vec::with_capacity(m);
    let mut d_events = Vec::with_capacity(m);
    let mut d_names = Vec::with_capacity(m);
    let mut d_endpoints = Vec::with_capacity(m);
    let mut d_statuses = Vec::with_capacity(m);
    let mut d_next = Vec::with_capacity(m);
    let mut d_owners = Vec::with_capacity(m);
    let mut d_tokens = Vec::with_capacity(m);
    let mut d_durations = Vec::with_capacity(m);
    let mut d_created = Vec::with_capacity(m);
    for p in planned {
        let ev = &p.request.event;
        let lease = &p.request.lease;
        ids.push(ev.id.as_str());
        tenants.push(ev.tenant_id.as_str());
        names.push(ev.name.as_str());
        payloads.push(&ev.payload[..]);
        keys.push(ev.idempotency_key.as_deref());
        created.push(ev.created_at);
        traceparents.push(ev.traceparent.as_ref().map(TraceParent::as_str));
        inbounds.push(ev.inbound.as_ref().map(|i| i.to_stored()));
        for d in &p.deliveries {
            let leased = d.leased;
            d_ids.push(d.id.as_str());
            d_tenants.push(ev.tenant_id.as_str());
            d_events.push(ev.id.as_str());
            d_names.push(ev.name.as_str());
            d_endpoints.push(d.endpoint.id.as_str());
            d_statuses.push(d.status.as_str());
            d_next.push(d.next_attempt_at(ev));
            d_owners.push(leased.then_some(&*lease.owner));
            d_tokens.push(leased.then_some(lease.token));
            d_durations.push(leased.then(|| millis_of(lease.duration)));
            d_created.push(ev.created_at);
        }
    }
    let woken = wake.endpoints(planned);
    let stmt = conn.prepare_cached(INSERT_SQL).await?;
    let rows = conn
        .query(
            &stmt,
            &[
                &ids,
                &tenants,
                &names,
                &payloads,
                &keys,
                &created,
                &d_ids,
                &d_tenants,
                &d_events,
                &d_names,
                &d_endpoints,
                &d_statuses,
                &d_next,
                &d_owners,
                &d_tokens,
                &d_durations,
                &d_created,
                &traceparents,
                &inbounds,
                &wake.channel,
                &woken,
            ],
        )
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}
