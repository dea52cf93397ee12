//! The embedded SQLite backend: one file in WAL mode, one writer thread with group commit
//! (`writer`), and a small pool of read-only connections for queries.
//!
//! One process owns a database file at a time (an exclusive lock on `<file>.lock`), which is
//! why leases can live in that process's memory (`leases`) and `reset_leases` may clear every
//! lease at start.

mod admin;
mod checkpoint;
mod event_log;
mod leases;
mod queue;
mod retention;
mod schema;
mod sources;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{
    self, ATTEMPT_COLS, Columns, DELIVERY_COLS, ENDPOINT_COLS, EVENT_COLS, EVENT_TYPE_COLS,
    TENANT_COLS,
};
use tokio::sync::Semaphore;

use super::*;
use crate::model::{DeliveryId, EndpointId, EventId, Millis, TraceParent};
use writer::Writer;

const READERS: usize = 4;

pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    /// Held for the store's lifetime: the lock that makes this process the file's only owner.
    _lock: std::fs::File,
    migrated: crate::store::Migrated,
    /// The database file, whose filesystem's free space decides readiness after a write
    /// failed for lack of space.
    path: PathBuf,
}

/// Free space a filesystem needs, after writes failed for lack of it, before the store says
/// it is ready again: room for a couple of the largest events, so a node does not turn ready
/// with space for one small write and fail the next publish.
const SPACE_HEADROOM: u64 = 2 << 20;

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
fn free_space(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid C string and `st` is written by statvfs only.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

struct Readers {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

/// How long a connection waits for a lock another connection holds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16000;",
    )?;
    // The bundled SQLite has STAT4, which makes the planner look at bound values: every
    // rebind of a parameter compared with an indexed column then expires the statement, and
    // each execution re-parses it (a fifth of the server's CPU in a profile). The plans here
    // do not depend on values, so ask for plan stability instead.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        // A previous owner in this process (a restart in tests) may still be closing: wait a
        // little for its lock before declaring the file busy.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while lock.try_lock().is_err() {
            if std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            anyhow::bail!(
                "{} is in use by another chime process (lock {} is held)",
                path.display(),
                lock_path.display()
            );
        }
        let mut conn = open_conn(path)?;
        let (from, to) = schema::migrate(&mut conn)?;
        if from != to {
            tracing::info!(from, to, "migrated the database schema");
        }
        // Leases live in memory (leases.rs); every connection's SQL can see them.
        let lease_table = leases::Shared::new();
        leases::register(&conn, &lease_table)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = open_conn(path)?;
            r.execute_batch("PRAGMA query_only = ON")?;
            leases::register(&r, &lease_table)?;
            readers.push(r);
        }
        // The writer commits without waiting for the disk; its syncer flushes the WAL before
        // any caller is answered (writer.rs). The WAL file exists once the database is open
        // in WAL mode and stays the same file while connections are open.
        // Foreign keys are declared but enforced by code and cascade by triggers (schema.rs,
        // version 7): enforcing them here would look up a parent per inserted row.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF")?;
        let restart = checkpoint::offload(&mut conn, open_conn(path)?)?;
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(format!("{}-wal", path.display()))?;
        let (writer, _thread) = Writer::spawn(conn, wal, lease_table, restart);
        Ok(Self {
            writer,
            readers: Arc::new(Readers {
                conns: Mutex::new(readers),
                permits: Semaphore::new(READERS),
            }),
            _lock: lock,
            migrated: crate::store::Migrated { from, to },
            path: path.to_path_buf(),
        })
    }

    /// The schema versions `open` found and left.
    pub fn migrated(&self) -> crate::store::Migrated {
        self.migrated
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Backend("store closed".into()))?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers
                .conns
                .lock()
                .expect("reader pool lock")
                .pop()
                .expect("a permit guarantees a connection");
            let result = f(&conn);
            readers.conns.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

// ---- row mapping: the mappers of `store::rows`, for rusqlite's rows ----

impl Columns for Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i32> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i32>> {
        self.get(i)
    }
    fn bigint(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_bigint(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn boolean(&self, i: usize) -> rusqlite::Result<bool> {
        self.get(i)
    }
    fn bytes(&self, i: usize) -> rusqlite::Result<Vec<u8>> {
        self.get(i)
    }
}

fn tenant_row(r: &Row) -> rusqlite::Result<(Tenant, i64)> {
    rows::tenant(r)
}

fn endpoint_row(r: &Row) -> rusqlite::Result<(Endpoint, i64)> {
    rows::endpoint(r)
}

fn event_row(r: &Row) -> rusqlite::Result<(Event, i64)> {
    rows::event(r)
}

fn event_type_row(r: &Row) -> rusqlite::Result<(EventType, i64)> {
    rows::event_type(r)
}

fn delivery_row(r: &Row) -> rusqlite::Result<(Delivery, i64)> {
    rows::delivery(r)
}

fn attempt_row(r: &Row) -> rusqlite::Result<(Attempt, i64)> {
    rows::attempt(r)
}

fn collect<T>(
    mut stmt: rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    f: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    Ok(stmt
        .query_map(params, f)?
        .collect::<rusqlite::Result<Vec<T>>>()?)
}

/// Sets `ordered` for a delivery that becomes pending again, as publishing does: from its
/// endpoint's setting. A delivery already pending keeps its own (the `endpoints_ordered`
/// trigger keeps it current). SQLite evaluates it against the row before the update.
const REPENDING_ORDERED: &str = "ordered = CASE WHEN status = 'pending' THEN ordered
         ELSE coalesce((SELECT json_extract(settings, '$.ordered') FROM endpoints
                        WHERE id = deliveries.endpoint_id), 0) END";

fn event_purged(conn: &Connection, event_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM events WHERE id = ?1 AND purged_at IS NOT NULL")?
        .exists([event_id])?)
}

/// Events created before ?1 in one retention group (`purged`: `IS NULL` or `IS NOT NULL`,
/// each group read through its own index, schema.rs), oldest first, none of whose
/// deliveries is still pending: safe to purge. At most `limit` (a parameter).
fn purgeable(purged: &str, limit: &str) -> String {
    format!(
        "SELECT e.seq FROM events e
         WHERE e.purged_at {purged} AND e.created_at < ?1
           AND NOT EXISTS (SELECT 1 FROM deliveries d
                           WHERE d.event_id = e.id AND d.status = 'pending')
         ORDER BY e.created_at LIMIT {limit}"
    )
}

/// One tenant's endpoints as publishing needs them; `None` when there is no such tenant.
type TenantEndpoints = Option<std::rc::Rc<Vec<Arc<Endpoint>>>>;

thread_local! {
    /// The writer thread's copy of each tenant's endpoints (`None`: no such tenant), for
    /// publishing: read and parsed once, not once per event. Every tenant or endpoint write
    /// runs on the writer thread and clears it (`forget_endpoints`), as does a rolled-back batch.
    static TENANT_ENDPOINTS: std::cell::RefCell<std::collections::HashMap<String, TenantEndpoints>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// A tenant's endpoints, or `None` if the tenant does not exist.
fn tenant_endpoints(conn: &Connection, tenant_id: &str) -> Result<TenantEndpoints> {
    if let Some(hit) = TENANT_ENDPOINTS.with(|c| c.borrow().get(tenant_id).cloned()) {
        return Ok(hit);
    }
    let found = if tenant_exists(conn, tenant_id)? {
        let rows: Vec<Arc<Endpoint>> = collect(
            conn.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE tenant_id = ?1 ORDER BY seq"
            ))?,
            [tenant_id],
            endpoint_row,
        )?
        .into_iter()
        .map(|(e, _)| Arc::new(e))
        .collect();
        Some(std::rc::Rc::new(rows))
    } else {
        None
    };
    TENANT_ENDPOINTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(tenant_id.to_owned(), found.clone());
    });
    Ok(found)
}

/// Drops the writer thread's endpoint cache; called by every write that changes endpoints.
pub(super) fn forget_endpoints() {
    TENANT_ENDPOINTS.with(|c| c.borrow_mut().clear());
}

fn tenant_exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM tenants WHERE id = ?1")?
        .exists([id])?)
}

/// The store's clock, for leases. SQLite runs inside this process, so it is the system clock.
fn clock() -> Millis {
    crate::model::now_millis()
}

fn lease_end(lease: &Lease, now: Millis) -> Millis {
    now + lease.duration.as_millis() as i64
}

/// When the endpoint's earliest unleased pending delivery is due (the lease table is read
/// through `chime_leased`, on any of the store's connections).
fn next_due(conn: &Connection, endpoint_id: &str) -> Result<Option<Millis>> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM deliveries
             WHERE endpoint_id = ?1 AND status = 'pending' AND NOT chime_leased(seq, ?2)",
        )?
        .query_row(params![endpoint_id, clock()], |r| r.get(0))?)
}

/// The row number of delivery `id`: the job's `row`, which this backend always sets, or
/// looked up for a job built without it (the lease table is keyed by row number).
fn row_of(conn: &Connection, row: Option<i64>, id: &str) -> Result<Option<i64>> {
    if row.is_some() {
        return Ok(row);
    }
    Ok(conn
        .prepare_cached("SELECT seq FROM deliveries WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

fn publish_tx(conn: &Connection, ev: NewEvent, lease: &Lease) -> Result<Published> {
    if let Some(key) = &ev.idempotency_key {
        let existing = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE tenant_id = ?1 AND idempotency_key = ?2"
            ))?
            .query_row(params![ev.tenant_id, key], event_row)
            .optional()?;
        if let Some((event, _)) = existing {
            if event.payload != ev.payload {
                return Err(StoreError::Conflict(
                    "this Idempotency-Key was already used with a different body".into(),
                ));
            }
            let deliveries = collect(
                conn.prepare_cached(
                    "SELECT id, endpoint_id, status FROM deliveries WHERE event_id = ?1
                     ORDER BY seq",
                )?,
                [&event.id],
                |r| {
                    Ok(PublishedDelivery {
                        id: r.get(0)?,
                        endpoint_id: r.get(1)?,
                        status: DeliveryStatus::parse(&r.get::<_, String>(2)?)
                            .unwrap_or(DeliveryStatus::Pending),
                    })
                },
            )?;
            return Ok(Published::repeat(event, deliveries));
        }
    }
    let Some(all) = tenant_endpoints(conn, &ev.tenant_id)? else {
        return Err(StoreError::NotFound);
    };
    let plan = crate::store::plan(&all, &ev, lease)?;

    conn.prepare_cached(
        "INSERT INTO events (id, tenant_id, name, payload, idempotency_key, created_at,
             traceparent, inbound)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        ev.id,
        ev.tenant_id,
        ev.name,
        &ev.payload[..],
        ev.idempotency_key,
        ev.created_at,
        ev.traceparent.as_ref().map(TraceParent::as_str),
        ev.inbound.as_ref().map(|i| i.to_stored())
    ])?;

    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, tenant_id, event_id, event_name, endpoint_id, status,
             next_attempt_at, created_at, updated_at, ordered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?7, ?6, ?8, ?8, ?9)",
    )?;
    let now = clock();
    let until = lease_end(lease, now);
    let mut seqs = Vec::with_capacity(plan.len());
    for d in &plan {
        insert.execute(params![
            d.id,
            ev.tenant_id,
            ev.id,
            ev.name,
            d.endpoint.id,
            d.next_attempt_at(&ev),
            d.status.as_str(),
            ev.created_at,
            // Read from the endpoint in this transaction: the head index (schema.rs) relies
            // on it.
            d.endpoint.settings.ordered
        ])?;
        let seq = conn.last_insert_rowid();
        if d.leased {
            leases::hold(seq, &lease.owner, lease.token, until, now);
        } else {
            leases::forget(seq);
        }
        seqs.push(seq);
    }
    Ok(crate::store::published(ev, lease, plan, |i| {
        seqs.get(i).copied()
    }))
}

/// The claim query: one endpoint's due, unleased deliveries, oldest due first. Parameters:
/// ?1 endpoint id, ?2 due time (ms), ?3 limit, ?4 now (ms). Shared with `explain_claim`, so
/// the plan shown by `chime-bench` is the plan of the query that runs.
pub const CLAIM_SQL: &str = "SELECT d.seq, d.id, d.event_id, d.tenant_id, d.cycle_failures,
            e.payload, CASE WHEN d.attempts = 0 THEN d.created_at END, e.traceparent, e.inbound,
            d.transformed
     FROM deliveries d JOIN events e ON e.id = d.event_id
     WHERE d.endpoint_id = ?1 AND d.status = 'pending' AND d.next_attempt_at <= ?2
     AND NOT chime_leased(d.seq, ?4)
     ORDER BY d.next_attempt_at, d.seq LIMIT ?3";

/// `EXPLAIN QUERY PLAN` of `CLAIM_SQL` against the database at `path`, opened read-only; one
/// line per plan step, indented by depth. Evidence that claims use an index however large the
/// backlog.
///
/// Public for the benchmark (`crates/chime-bench`): its backlog scenario prints this plan,
/// read from the data directory of the `chime serve` it runs, while the deliveries wait. It is
/// the one function of this library the benchmark calls; everything else it does through a
/// `chime serve` process and the HTTP API. Keep it public and its output plain text lines.
pub fn explain_claim(path: &Path) -> anyhow::Result<Vec<String>> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // The query names the lease function; this process holds no leases.
    leases::register(&conn, &leases::Shared::new())?;
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_SQL}"))?;
    let now = crate::model::now_millis();
    let steps = stmt
        .query_map(params!["ep_bench", now, 64, now], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut depth: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    Ok(steps
        .into_iter()
        .map(|(id, parent, detail)| {
            let d = depth.get(&parent).map_or(0, |d| d + 1);
            depth.insert(id, d);
            format!("{}{detail}", "  ".repeat(d))
        })
        .collect())
}

/// A claimable delivery as both claim queries return it: their first ten columns.
struct ClaimRow {
    seq: i64,
    id: DeliveryId,
    event_id: EventId,
    tenant_id: String,
    cycle_failures: u32,
    payload: Vec<u8>,
    unattempted_since: Option<Millis>,
    traceparent: Option<String>,
    inbound: Option<String>,
    transformed: Option<String>,
}

fn claim_row(r: &Row) -> rusqlite::Result<ClaimRow> {
    Ok(ClaimRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        event_id: r.get(2)?,
        tenant_id: r.get(3)?,
        cycle_failures: r.get(4)?,
        payload: r.get(5)?,
        unattempted_since: r.get(6)?,
        traceparent: r.get(7)?,
        inbound: r.get(8)?,
        transformed: r.get(9)?,
    })
}

/// Leases a claimed delivery to `lease` until `until` and makes its job.
fn lease_job(row: ClaimRow, ep: EndpointId, lease: &Lease, until: Millis, now: Millis) -> Job {
    leases::hold(row.seq, &lease.owner, lease.token, until, now);
    Job {
        delivery_id: row.id,
        event_id: row.event_id,
        tenant_id: row.tenant_id,
        endpoint_id: ep,
        body: Bytes::from(row.payload),
        cycle_failures: row.cycle_failures,
        lease_token: lease.token,
        row: Some(row.seq),
        unattempted_since: row.unattempted_since,
        traceparent: TraceParent::from_stored(row.traceparent),
        inbound: crate::model::Inbound::from_stored(row.inbound),
        transformed: row.transformed.map(Arc::from),
        held_since: Some(std::time::Instant::now()),
    }
}

/// An ordered endpoint's claim: its head (oldest pending delivery by acceptance order) and
/// nothing else. A head that is leased or waiting for its retry blocks everything behind it.
fn claim_head(
    conn: &Connection,
    ep: EndpointId,
    endpoint: Option<Endpoint>,
    now: Millis,
    lease: &Lease,
) -> Result<Claimed> {
    let head: Option<(ClaimRow, Option<Millis>, bool)> = conn
        .prepare_cached(
            "SELECT d.seq, d.id, d.event_id, d.tenant_id, d.cycle_failures, e.payload,
                    CASE WHEN d.attempts = 0 THEN d.created_at END, e.traceparent, e.inbound,
                    d.transformed, d.next_attempt_at, chime_leased(d.seq, ?2)
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.endpoint_id = ?1 AND d.status = 'pending' AND d.ordered = 1
             ORDER BY d.seq LIMIT 1",
        )?
        .query_row(params![&*ep, clock()], |r| {
            Ok((claim_row(r)?, r.get(10)?, r.get(11)?))
        })
        .optional()?;
    let mut claimed = Claimed {
        jobs: vec![],
        endpoint,
        next_due: None,
    };
    let Some((row, next, leased)) = head else {
        return Ok(claimed);
    };
    if leased {
        return Ok(claimed);
    }
    let due = next.unwrap_or(now);
    if due > now {
        claimed.next_due = Some(due);
        return Ok(claimed);
    }
    let now_clock = clock();
    let until = lease_end(lease, now_clock);
    claimed
        .jobs
        .push(lease_job(row, ep, lease, until, now_clock));
    Ok(claimed)
}

fn claim_tx(
    conn: &Connection,
    endpoint_id: &str,
    limit: u32,
    now: Millis,
    lease: &Lease,
) -> Result<Claimed> {
    let endpoint = conn
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = ?1"
        ))?
        .query_row([endpoint_id], endpoint_row)
        .optional()?
        .map(|(e, _)| e);
    if endpoint.is_none() {
        return Ok(Claimed {
            jobs: vec![],
            endpoint: None,
            next_due: None,
        });
    }
    let ep = EndpointId::from_stored(endpoint_id);
    if endpoint.as_ref().is_some_and(|e| e.settings.ordered) {
        return claim_head(conn, ep, endpoint, now, lease);
    }
    let rows = collect(
        conn.prepare_cached(CLAIM_SQL)?,
        params![endpoint_id, now, limit, clock()],
        claim_row,
    )?;
    let now_clock = clock();
    let until = lease_end(lease, now_clock);
    let jobs: Vec<Job> = rows
        .into_iter()
        .map(|row| lease_job(row, ep.clone(), lease, until, now_clock))
        .collect();
    let due = if claim_is_full(jobs.len(), limit) {
        Some(now)
    } else {
        next_due(conn, endpoint_id)?
    };
    Ok(Claimed {
        jobs,
        endpoint,
        next_due: due,
    })
}

fn record_tx(conn: &Connection, outcomes: Vec<Outcome>) -> Result<Vec<bool>> {
    // Found by row number (the job's `row`), not through the id index. The id must match
    // too: a row number comes back into use when the newest row is deleted (leases.rs).
    let mut update = conn.prepare_cached(
        "UPDATE deliveries SET status = ?1, attempts = attempts + 1, cycle_failures = ?2,
             next_attempt_at = ?3, last_attempt_at = ?4, last_status_code = ?5,
             last_error_kind = ?6, updated_at = ?7, transformed = coalesce(?10, transformed)
         WHERE seq = ?8 AND id = ?9",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO attempts (id, delivery_id, started_at, duration_ms, status_code, error_kind,
             error, response, succeeded)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut applied = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        // Fenced by the lease: an attempt whose lease was taken over records nothing.
        let seq = match row_of(conn, o.row, &o.delivery_id)? {
            Some(seq) if leases::take(seq, o.lease_token) => seq,
            _ => {
                applied.push(false);
                continue;
            }
        };
        let a = &o.attempt;
        let finished_at = a.started_at + a.duration_ms as i64;
        let n = update.execute(params![
            o.status.as_str(),
            o.cycle_failures,
            o.next_attempt_at,
            a.started_at,
            a.status_code,
            a.error_kind,
            finished_at,
            seq,
            o.delivery_id,
            o.transformed.as_deref()
        ])?;
        if n == 1 {
            insert.execute(params![
                a.id,
                a.delivery_id,
                a.started_at,
                a.duration_ms,
                a.status_code,
                a.error_kind,
                a.error,
                a.response,
                a.succeeded
            ])?;
        }
        applied.push(n == 1);
    }
    Ok(applied)
}
