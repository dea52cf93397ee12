//! The PostgreSQL backend: any number of `chime serve` nodes share one database.
//!
//! - Connections come from a pool (`deadpool-postgres`); statements are prepared once per
//!   connection (`prepare_cached`). A connection that died (server restart, terminated
//!   backend) is dropped when it is next taken from the pool and a fresh one is opened, so
//!   the node recovers without a restart; meanwhile calls fail with `Unavailable`.
//! - Claims lease rows with `FOR UPDATE SKIP LOCKED`, so nodes claiming the same endpoint at
//!   once take disjoint deliveries without waiting on each other.
//! - Leases run on the database's clock (`db_now!`): `leased_until` is set to the database's
//!   "now" plus the lease's duration and judged against the database's "now", so a node with a
//!   wrong clock can neither steal nor keep deliveries. The `now` parameters of `claim` and
//!   `retry_delivery` are the node's and only say what is due.
//! - Every write that makes deliveries claimable by others (`release`, `release_owner`,
//!   `retry_delivery`) also `pg_notify`s the endpoint id in its transaction; `notify` listens.
//! - Round trips are few: a claim is the endpoint's row, then one statement pipelined with
//!   the next due time; the records of many attempts are one statement and one commit
//!   (`run_batches`); so are releases; the publishes of a moment are stored together, two statements and one
//!   commit for all of them (`publish.rs`), with the endpoint rows kept in memory between
//!   batches and checked by a version.
//!
//! Unlike SQLite, no process owns the data alone, so leases are never reset at start: a
//! node that died loses its deliveries only when their leases expire.

mod notify;
mod schema;

use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::rows::{
    self, ATTEMPT_COLS, Columns, DELIVERY_COLS, ENDPOINT_COLS, EVENT_COLS, EVENT_TYPE_COLS,
    TENANT_COLS,
};

use super::*;
use crate::model::{DeliveryId, EndpointId, Millis, TraceParent, millis_of};

/// "Now" on the database's clock, in milliseconds since the epoch: the clock of leases.
/// `now()` is the start of the current transaction, which for one statement is its start.
macro_rules! db_now {
    () => {
        "(extract(epoch from now()) * 1000)::bigint"
    };
}

// The role implementations use `db_now!`, so they are declared after it.
mod admin;
mod event_log;
mod queue;
mod retention;
mod sources;

// After `db_now!`, which it uses.
mod publish;

/// How long a caller waits for a free pooled connection (or a new one) before the call fails
/// with `Unavailable`; bounds every call while the database is unreachable.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Deadline of opening one connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PostgresStore {
    pool: Pool,
    /// For the LISTEN connection, which lives outside the pool.
    config: tokio_postgres::Config,
    /// The notification channel: one per schema, so schemas of one database (tests) do not
    /// wake each other.
    channel: String,
    /// The group-commit tasks of `record` and `release` (`run_batches`); they stop with the
    /// store.
    recorder: mpsc::UnboundedSender<RecordRequest>,
    releaser: mpsc::UnboundedSender<ReleaseRequest>,
    /// The group-commit task of `publish` (`publish::run_publisher`).
    publisher: mpsc::UnboundedSender<publish::PublishRequest>,
    /// Other nodes seen alive at this node's last heartbeat (`live_nodes`). While there are
    /// any, a publish that leaves deliveries unleased wakes them (`publish::Wake`).
    peers: Arc<std::sync::atomic::AtomicU32>,
    migrated: crate::store::Migrated,
}

/// `url` without its password, for logs and the start-up banner.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// The channel name for a schema; PostgreSQL limits identifiers to 63 bytes.
fn channel_for(schema: Option<&str>) -> String {
    let mut name = match schema {
        Some(s) if s != "public" => format!("chime_due.{s}"),
        _ => "chime_due".to_owned(),
    };
    while name.len() > 63 {
        name.pop();
    }
    name
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Lost or refused connections, a server shutting down or out of resources (class 53:
        // too many connections, out of memory) and a database closed to connections (55000,
        // `ALLOW_CONNECTIONS false`) are transient: the pool opens a fresh connection on a
        // later call.
        let transient = e.is_closed()
            || e.code().is_some_and(|c| {
                c.code().starts_with("08")
                    || c.code().starts_with("53")
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
            })
            || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let text = match e.as_db_error() {
            Some(db) => format!("{db}"),
            None => e.to_string(),
        };
        if e.code() == Some(&SqlState::DISK_FULL) {
            StoreError::Full(text)
        } else if transient {
            StoreError::Unavailable(text)
        } else {
            StoreError::Backend(text)
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            // Opening a connection failed: whatever the server said (refused, not accepting
            // connections, too many clients), the database cannot be reached right now.
            PoolError::Backend(e) => match StoreError::from(e) {
                StoreError::Backend(text) => StoreError::Unavailable(text),
                other => other,
            },
            PoolError::Timeout(_) | PoolError::Closed => {
                StoreError::Unavailable(format!("no database connection: {e}"))
            }
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// The connections of the group-commit writers (`record_batch`, `release_batch`), which
/// plan for batches: their statements join a batch (up to `MAX_RELEASE_BATCH` rows) to the
/// rows it names, and the generic plan PostgreSQL caches for a prepared statement is made
/// once, often while the day's partition is still empty, when a nested loop looks cheapest.
/// Over a full batch that nested loop compares every row with every other (a fanout's
/// batches are the largest: it made fanout three times slower). With nested loops, merge
/// joins and sequential scans off, the only plan left reads each partition once by the id
/// index and hashes the batch: linear whatever the statistics said when it was made. Only
/// these connections plan this way; every other statement keeps the planner's choice.
fn batch_pool(config: &tokio_postgres::Config) -> anyhow::Result<Pool> {
    let mut config = config.clone();
    let planner = "-c enable_nestloop=off -c enable_mergejoin=off -c enable_seqscan=off";
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {planner}"),
        _ => planner.to_owned(),
    };
    config.options(&options);
    // The record and release writers each write one batch at a time.
    pool_of(config, 2)
}

/// A pool of up to `size` connections made from `config`.
fn pool_of(config: tokio_postgres::Config, size: usize) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| anyhow::anyhow!("database pool: {e}"))
}

/// Brings the schema at `url` to migration `version` and no further: how a test builds a
/// database of an older shape to upgrade.
pub async fn migrate_until(url: &str, version: usize) -> anyhow::Result<()> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    schema::migrate_until(&mut client, version).await?;
    Ok(())
}

impl PostgresStore {
    /// Connects to `url`, migrates its schema, and keeps up to `pool_size` connections.
    /// Fails at once if the database cannot be reached: a node should not report itself
    /// started against a database it has never seen.
    pub async fn connect(url: &str, pool_size: usize) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database_url {}: {e}", redact(url)))?;
        if config.get_application_name().is_none() {
            config.application_name("chime");
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        // Notice a dead peer (a network cut rather than a closed socket) within about a minute.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let pool = pool_of(config.clone(), pool_size)?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact(url)))?;
        let (found, now) = schema::migrate(&mut client)
            .await
            .map_err(|e| anyhow::anyhow!("migrating {}: {}", redact(url), StoreError::from(e)))?;
        if found != now {
            tracing::info!(from = found, to = now, "migrated the database schema");
        }
        let schema: Option<String> = client
            .query_one("SELECT current_schema()::text", &[])
            .await
            .map_err(StoreError::from)?
            .get(0);
        drop(client);
        let batch_pool = batch_pool(&config)?;
        let (recorder, requests) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(
            batch_pool.clone(),
            requests,
            MAX_RECORD_BATCH,
            record_batch,
        ));
        let channel = channel_for(schema.as_deref());
        let (releaser, requests) = mpsc::unbounded_channel();
        let release_channel = channel.clone();
        tokio::spawn(run_batches(
            batch_pool,
            requests,
            MAX_RELEASE_BATCH,
            move |pool, jobs| release_batch(pool, jobs, release_channel.clone()),
        ));
        let (publisher, requests) = mpsc::unbounded_channel();
        let peers = Arc::new(std::sync::atomic::AtomicU32::new(0));
        tokio::spawn(publish::run_publisher(
            pool.clone(),
            Arc::default(),
            publish::Wake {
                peers: peers.clone(),
                channel: channel.clone(),
            },
            requests,
        ));
        Ok(Self {
            pool,
            config,
            channel,
            recorder,
            releaser,
            publisher,
            peers,
            migrated: crate::store::Migrated {
                from: found,
                to: now,
            },
        })
    }

    /// The schema versions `connect` found and left.
    pub fn migrated(&self) -> crate::store::Migrated {
        self.migrated
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// `EXPLAIN` of the claim query for `endpoint_id`, one line per plan line: evidence that
    /// a claim reads an index range however large the backlog. `generic` shows the plan a
    /// prepared statement falls back to after a few executions (it does not know the values).
    pub async fn explain_claim(&self, endpoint_id: &str, generic: bool) -> Result<Vec<String>> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let mode = if generic {
            "force_generic_plan"
        } else {
            "force_custom_plan"
        };
        tx.batch_execute(&format!("SET LOCAL plan_cache_mode = {mode}"))
            .await?;
        let stmt = tx.prepare(&format!("EXPLAIN {CLAIM_SQL}")).await?;
        let now = crate::model::now_millis();
        let rows = tx
            .query(
                &stmt,
                &[&endpoint_id, &now, &64i64, &"explain", &0i64, &0i64],
            )
            .await?;
        let lines = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        tx.rollback().await?;
        Ok(lines)
    }
}

// ---- row mapping ----

// The mappers of `store::rows`, for tokio-postgres rows.
impl Columns for Row {
    type Error = tokio_postgres::Error;
    fn text(&self, i: usize) -> std::result::Result<String, Self::Error> {
        self.try_get(i)
    }
    fn opt_text(&self, i: usize) -> std::result::Result<Option<String>, Self::Error> {
        self.try_get(i)
    }
    fn int(&self, i: usize) -> std::result::Result<i32, Self::Error> {
        self.try_get(i)
    }
    fn opt_int(&self, i: usize) -> std::result::Result<Option<i32>, Self::Error> {
        self.try_get(i)
    }
    fn bigint(&self, i: usize) -> std::result::Result<i64, Self::Error> {
        self.try_get(i)
    }
    fn opt_bigint(&self, i: usize) -> std::result::Result<Option<i64>, Self::Error> {
        self.try_get(i)
    }
    fn boolean(&self, i: usize) -> std::result::Result<bool, Self::Error> {
        self.try_get(i)
    }
    fn bytes(&self, i: usize) -> std::result::Result<Vec<u8>, Self::Error> {
        self.try_get(i)
    }
}

fn tenant_row(r: &Row) -> Result<(Tenant, i64)> {
    Ok(rows::tenant(r)?)
}

fn endpoint_row(r: &Row) -> Result<(Endpoint, i64)> {
    Ok(rows::endpoint(r)?)
}

fn event_row(r: &Row) -> Result<(Event, i64)> {
    Ok(rows::event(r)?)
}

fn event_type_row(r: &Row) -> Result<(EventType, i64)> {
    Ok(rows::event_type(r)?)
}

fn delivery_row(r: &Row) -> Result<(Delivery, i64)> {
    Ok(rows::delivery(r)?)
}

fn attempt_row(r: &Row) -> Result<(Attempt, i64)> {
    Ok(rows::attempt(r)?)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Events of `table` (`events`, or one of its partitions) created before $1 in one retention group (`purged`: `IS NULL` or `IS NOT NULL`,
/// each group read through its own index, schema.rs), oldest first, none of whose
/// deliveries is pending: what retention may purge. At most `limit` (a parameter), locked;
/// SKIP LOCKED: two nodes running retention at once take disjoint batches.
fn purgeable(table: &str, purged: &str, limit: &str) -> String {
    format!(
        "SELECT e.tenant_id, e.seq, e.created_at FROM {table} e
         WHERE e.purged_at {purged} AND e.created_at < $1
           AND NOT EXISTS (SELECT 1 FROM deliveries d
                           WHERE d.event_id = e.id AND d.created_at = e.created_at
                             AND d.status = 'pending')
         ORDER BY e.created_at LIMIT {limit} FOR UPDATE SKIP LOCKED"
    )
}

fn rows<T>(rows: &[Row], f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

fn fetch(page: Page) -> i64 {
    i64::from(page.limit) + 1
}

fn status_of(text: &str) -> DeliveryStatus {
    DeliveryStatus::parse(text).unwrap_or(DeliveryStatus::Pending)
}

/// The claim statement. Parameters: $1 endpoint id, $2 the node's now (due-ness), $3 limit,
/// $4 lease owner, $5 lease token, $6 lease duration (ms). (No hot statement names the
/// tenant: with `tenant_id = …`, generic plans made on empty partitions read the primary
/// key, which leads with the tenant, instead of the index meant, and a benchmark's
/// deliveries then took minutes to drain.) One statement: picks the oldest due,
/// unleased rows (skipping rows another node is claiming this instant), leases them on the
/// database's clock, and returns them with their bodies. Shared with `explain_claim`.
pub const CLAIM_SQL: &str = concat!(
    "WITH picked AS (
         SELECT id, created_at FROM deliveries
         WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at <= $2
           AND (leased_until IS NULL OR leased_until <= ",
    db_now!(),
    ")
         ORDER BY next_attempt_at, seq
         LIMIT $3
         FOR UPDATE SKIP LOCKED
     ), leased AS (
         UPDATE deliveries d
         SET lease_owner = $4::text, lease_token = $5::bigint, leased_until = ",
    db_now!(),
    " + $6::bigint
         FROM picked WHERE d.id = picked.id AND d.created_at = picked.created_at
         RETURNING d.id, d.event_id, d.tenant_id, d.cycle_failures, d.next_attempt_at, d.seq,
                   CASE WHEN d.attempts = 0 THEN d.created_at END AS unattempted_since,
                   d.created_at, d.transformed
     )
     -- The body (and traceparent) by a lookup per row, not a plain join: a prepared
     -- statement's generic plan cannot tell that LIMIT $3 is small and would hash-join all
     -- of events. The LIMIT 1 keeps the lateral subquery from being flattened into one.
     SELECT l.id, l.event_id, l.tenant_id, l.cycle_failures, e.payload, l.unattempted_since,
            e.traceparent, e.inbound, l.created_at, l.transformed
     FROM leased l
     CROSS JOIN LATERAL (SELECT payload, traceparent, inbound FROM events
                         WHERE id = l.event_id AND created_at = l.created_at LIMIT 1) e
     ORDER BY l.next_attempt_at, l.seq"
);

/// Earliest due time of an endpoint's pending deliveries that nobody holds. $1 endpoint id.
const NEXT_DUE_SQL: &str = concat!(
    "SELECT min(next_attempt_at) FROM deliveries
     WHERE endpoint_id = $1 AND status = 'pending'
       AND (leased_until IS NULL OR leased_until <= ",
    db_now!(),
    ")"
);

/// Records a batch of outcomes in one statement: each delivery is updated only if its lease
/// token still holds, and an attempt row is inserted only for the deliveries updated.
/// Returns the 1-based positions of the outcomes applied.
const RECORD_SQL: &str = "WITH o AS (
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::bigint[],
                              $6::bigint[], $7::int[], $8::text[], $9::bigint[], $19::bigint[],
                              $20::text[])
             WITH ORDINALITY AS o(id, token, status, cycle_failures, next_attempt_at,
                                  started_at, status_code, error_kind, finished_at, created_at,
                                  transformed, ord)
     ), applied AS (
         UPDATE deliveries d
         SET status = o.status, attempts = d.attempts + 1, cycle_failures = o.cycle_failures,
             next_attempt_at = o.next_attempt_at, lease_owner = NULL, lease_token = NULL,
             leased_until = NULL, last_attempt_at = o.started_at,
             last_status_code = o.status_code, last_error_kind = o.error_kind,
             updated_at = o.finished_at, transformed = coalesce(o.transformed, d.transformed)
         FROM o
         WHERE d.id = o.id AND d.created_at = o.created_at AND d.lease_token = o.token
           -- The same rows again as an array: each partition is read once by the id
           -- index, then joined to `o` by hashing (see `batch_pool`).
           AND d.id = ANY($1::text[]) AND d.created_at = ANY($19::bigint[])
         RETURNING o.ord, d.tenant_id, d.created_at
     ), inserted AS (
         INSERT INTO attempts (id, delivery_id, started_at, duration_ms, status_code,
                               error_kind, error, response, succeeded, tenant_id, created_at)
         SELECT a.id, a.delivery_id, a.started_at, a.duration_ms, a.status_code,
                a.error_kind, a.error, a.response, a.succeeded, applied.tenant_id,
                applied.created_at
         FROM unnest($10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::int[],
                     $15::text[], $16::text[], $17::text[], $18::bool[])
             WITH ORDINALITY AS a(id, delivery_id, started_at, duration_ms, status_code,
                                  error_kind, error, response, succeeded, ord)
         JOIN applied ON applied.ord = a.ord
     )
     SELECT ord FROM applied";

/// Items waiting for a group-commit task (`run_batches`), each call's with the channel of
/// its answer (one answer per item).
type BatchRequest<T, A> = (Vec<T>, oneshot::Sender<Result<Vec<A>>>);
type RecordRequest = BatchRequest<Outcome, bool>;
type ReleaseRequest = BatchRequest<Job, ()>;

/// Most outcomes written by one statement.
const MAX_RECORD_BATCH: usize = 512;
/// Most leases given back by one statement.
const MAX_RELEASE_BATCH: usize = 4096;

/// Group commit: the items of every call that arrived while the previous batch was being
/// written go into one `write` (one statement, one commit), so under load an item costs a
/// fraction of a round trip and of a WAL flush instead of one each. An idle node writes
/// each call at once: nothing waits for a batch to fill. Used for `record` (the dispatcher
/// records each attempt as it ends) and `release` (under a backlog, the dispatcher gives back
/// the deliveries of nearly every publish, one call each).
async fn run_batches<T, A, F, Fut>(
    pool: Pool,
    mut requests: mpsc::UnboundedReceiver<BatchRequest<T, A>>,
    max: usize,
    write: F,
) where
    A: Clone,
    F: Fn(Pool, Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<A>>>,
{
    while let Some(first) = requests.recv().await {
        let batch = crate::batch::gather(first, max, |r| r.0.len(), || requests.try_recv().ok());
        let count = batch.iter().map(|r| r.0.len()).sum();
        let mut sizes = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(count);
        let mut replies = Vec::with_capacity(batch.len());
        for (o, reply) in batch {
            sizes.push(o.len());
            items.extend(o);
            replies.push(reply);
        }
        match write(pool.clone(), items).await {
            Ok(answers) => {
                let mut rest = &answers[..];
                for (size, reply) in sizes.into_iter().zip(replies) {
                    let (mine, others) = rest.split_at(size.min(rest.len()));
                    rest = others;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Records a batch of outcomes in one statement; per outcome, whether it was applied.
async fn record_batch(pool: Pool, outcomes: Vec<Outcome>) -> Result<Vec<bool>> {
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut cycles = Vec::with_capacity(n);
    let mut nexts = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut finished = Vec::with_capacity(n);
    let mut attempt_ids = Vec::with_capacity(n);
    let mut attempt_deliveries = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut responses = Vec::with_capacity(n);
    let mut succeeded = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut transformed: Vec<Option<Arc<str>>> = Vec::with_capacity(n);
    for o in outcomes {
        let a = o.attempt;
        created.push(o.row);
        transformed.push(o.transformed);
        ids.push(o.delivery_id);
        tokens.push(o.lease_token);
        statuses.push(o.status.as_str());
        cycles.push(i32::try_from(o.cycle_failures).unwrap_or(i32::MAX));
        nexts.push(o.next_attempt_at);
        started.push(a.started_at);
        codes.push(a.status_code.map(i32::from));
        kinds.push(a.error_kind);
        finished.push(a.started_at + i64::from(a.duration_ms));
        attempt_ids.push(a.id);
        attempt_deliveries.push(a.delivery_id);
        durations.push(i64::from(a.duration_ms));
        errors.push(a.error);
        responses.push(a.response);
        succeeded.push(a.succeeded);
    }
    let clock = std::time::Instant::now();
    let c = pool.get().await?;
    let stmt = c.prepare_cached(RECORD_SQL).await?;
    let transformed: Vec<Option<&str>> = transformed.iter().map(|t| t.as_deref()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 20] = [
        &ids,
        &tokens,
        &statuses,
        &cycles,
        &nexts,
        &started,
        &codes,
        &kinds,
        &finished,
        &attempt_ids,
        &attempt_deliveries,
        &started,
        &durations,
        &codes,
        &kinds,
        &errors,
        &responses,
        &succeeded,
        &created,
        &transformed,
    ];
    let mut tries = 0;
    let applied_rows = loop {
        tries += 1;
        match c.query(&stmt, &params).await {
            Ok(rows) => break rows,
            // Retention dropping or making a partition locks the parent tables; a batch that
            // met it in the other order is the deadlock's victim, rolled back whole and safe
            // to write again (it is fenced by the lease tokens).
            Err(e) if is_transient_lock_error(&e) && tries < 3 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    tracing::debug!(
        outcomes = n,
        took_us = clock.elapsed().as_micros() as u64,
        "record batch stored"
    );
    let mut applied = vec![false; n];
    for r in &applied_rows {
        let ord: i64 = r.try_get(0)?;
        if let Some(slot) = usize::try_from(ord)
            .ok()
            .and_then(|o| o.checked_sub(1))
            .and_then(|i| applied.get_mut(i))
        {
            *slot = true;
        }
    }
    Ok(applied)
}

/// A statement that lost a deadlock (or waited past a lock timeout) to partition
/// maintenance: rolled back whole, worth one more try.
fn is_transient_lock_error(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}

/// Gives back the leases of a batch of deliveries (each only if its token still holds), in
/// one statement, which also wakes, on its commit, whichever nodes serve their endpoints:
/// one notification per endpoint per batch, not per delivery or per call.
async fn release_batch(pool: Pool, jobs: Vec<Job>, channel: String) -> Result<Vec<()>> {
    let n = jobs.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    for j in jobs {
        ids.push(j.delivery_id);
        tokens.push(j.lease_token);
        created.push(j.row);
    }
    let c = pool.get().await?;
    let stmt = c
        .prepare_cached(
            "WITH released AS (
                 UPDATE deliveries d
                 SET lease_owner = NULL, lease_token = NULL, leased_until = NULL
                 FROM unnest($1::text[], $2::bigint[], $4::bigint[]) AS j(id, token, created_at)
                 WHERE d.id = j.id AND d.created_at = j.created_at AND d.lease_token = j.token
                   -- As in RECORD_SQL: each partition read once by the id index.
                   AND d.id = ANY($1::text[]) AND d.created_at = ANY($4::bigint[])
                 RETURNING d.endpoint_id
             )
             SELECT pg_notify($3, endpoint_id)
             FROM (SELECT DISTINCT endpoint_id FROM released) r",
        )
        .await?;
    c.execute(&stmt, &[&ids, &tokens, &channel, &created])
        .await?;
    Ok(vec![(); n])
}

impl PostgresStore {
    /// An ordered endpoint's claim: its head (oldest pending delivery by acceptance order)
    /// and nothing else. A head that is leased or waiting for its retry blocks everything
    /// behind it. One statement; the head's row lock makes two nodes claiming at once take
    /// turns, and the second then finds it leased.
    async fn claim_head(
        &self,
        c: &deadpool_postgres::Object,
        ep: EndpointId,
        endpoint: Endpoint,
        now: Millis,
        lease: &Lease,
        duration: i64,
    ) -> Result<Claimed> {
        let stmt = c
            .prepare_cached(concat!(
                "WITH head AS (
                     SELECT id, created_at, next_attempt_at,
                            (leased_until IS NOT NULL AND leased_until > ",
                db_now!(),
                ") AS held
                     FROM deliveries
                     WHERE endpoint_id = $1 AND status = 'pending'
                     ORDER BY seq LIMIT 1
                     FOR UPDATE
                 ), leased AS (
                     UPDATE deliveries d
                     SET lease_owner = $3::text, lease_token = $4::bigint, leased_until = ",
                db_now!(),
                " + $5::bigint
                     FROM head
                     WHERE d.id = head.id AND d.created_at = head.created_at AND NOT head.held
                       AND coalesce(head.next_attempt_at, $2) <= $2
                     RETURNING d.id, d.event_id, d.tenant_id, d.cycle_failures,
                               CASE WHEN d.attempts = 0 THEN d.created_at END AS unattempted_since,
                               d.created_at, d.transformed
                 )
                 SELECT head.held, head.next_attempt_at, l.id, l.event_id, l.tenant_id,
                        l.cycle_failures,
                        e.payload, l.unattempted_since, e.traceparent, e.inbound, l.created_at,
                        l.transformed
                 FROM head
                 LEFT JOIN leased l ON true
                 LEFT JOIN LATERAL (SELECT payload, traceparent, inbound FROM events
                                    WHERE id = l.event_id AND created_at = l.created_at
                                    LIMIT 1) e ON true"
            ))
            .await?;
        let row = c
            .query_opt(
                &stmt,
                &[&&*ep, &now, &&*lease.owner, &lease.token, &duration],
            )
            .await?;
        let mut claimed = Claimed {
            jobs: vec![],
            endpoint: Some(endpoint),
            next_due: None,
        };
        let Some(row) = row else {
            return Ok(claimed);
        };
        let held: bool = row.try_get(0)?;
        let next: Option<Millis> = row.try_get(1)?;
        match row.try_get::<_, Option<DeliveryId>>(2)? {
            Some(delivery_id) => {
                let payload: Vec<u8> = row.try_get(6)?;
                claimed.jobs.push(Job {
                    delivery_id,
                    event_id: row.try_get(3)?,
                    tenant_id: row.try_get(4)?,
                    endpoint_id: ep,
                    body: Bytes::from(payload),
                    cycle_failures: to_u32(row.try_get::<_, i32>(5)?.into()),
                    lease_token: lease.token,
                    row: row.try_get(10)?,
                    unattempted_since: row.try_get(7)?,
                    traceparent: TraceParent::from_stored(row.try_get(8)?),
                    inbound: crate::model::Inbound::from_stored(row.try_get(9)?),
                    transformed: row.try_get::<_, Option<String>>(11)?.map(Arc::from),
                    held_since: Some(std::time::Instant::now()),
                });
            }
            None if !held => claimed.next_due = next.filter(|due| *due > now),
            None => {}
        }
        Ok(claimed)
    }

    /// The stored result for an idempotency key that is taken. `Conflict` if the stored
    /// event's body differs from this one.
    async fn repeated(&self, c: &deadpool_postgres::Object, ev: NewEvent) -> Result<Published> {
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events
                 WHERE (tenant_id, id, created_at) = (SELECT tenant_id, event_id, created_at
                                                      FROM event_keys
                                                      WHERE tenant_id = $1
                                                        AND idempotency_key = $2)"
            ))
            .await?;
        let Some(row) = c
            .query_opt(&stmt, &[&ev.tenant_id, &ev.idempotency_key])
            .await?
        else {
            // Taken and gone again (its tenant was deleted meanwhile): nothing to repeat.
            return Err(StoreError::Conflict(
                "this Idempotency-Key was used by an event that no longer exists".into(),
            ));
        };
        let event = event_row(&row)?.0;
        if event.payload != ev.payload {
            return Err(StoreError::Conflict(
                "this Idempotency-Key was already used with a different body".into(),
            ));
        }
        let stmt = c
            .prepare_cached(
                "SELECT id, endpoint_id, status FROM deliveries WHERE event_id = $1 ORDER BY seq",
            )
            .await?;
        let found = c.query(&stmt, &[&event.id]).await?;
        let deliveries = rows(&found, |r| {
            Ok(PublishedDelivery {
                id: r.try_get(0)?,
                endpoint_id: r.try_get(1)?,
                status: status_of(r.try_get(2)?),
            })
        })?;
        Ok(Published::repeat(event, deliveries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://chime:s3cret@db:5432/chime?sslmode=disable"),
            "postgres://chime:***@db:5432/chime?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://postgres@127.0.0.1/test"),
            "postgresql://postgres@127.0.0.1/test"
        );
        assert_eq!(redact("postgres:///test"), "postgres:///test");
    }

    #[test]
    fn channels_fit_an_identifier() {
        assert_eq!(channel_for(None), "chime_due");
        assert_eq!(channel_for(Some("public")), "chime_due");
        assert_eq!(channel_for(Some("t1")), "chime_due.t1");
        assert_eq!(channel_for(Some(&"x".repeat(80))).len(), 63);
    }
}
