//! The embedded SQLite backend: one file in WAL mode, one writer thread with group commit
//! (`writer`), and a small pool of read-only connections for queries.
//!
//! One process owns a database file at a time (an exclusive lock on `<file>.lock`), which is
//! why leases can live in that process's memory (`leases`) and `reset_leases` may clear every
//! lease at start.

mod checkpoint;
mod leases;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::Semaphore;

use super::rules::{self, NOT_PURGED};
use super::*;
use crate::model::{Millis, new_id};
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

// ---- row mapping ----

const TENANT_COLS: &str = "id, name, created_at, seq";
fn tenant_row(r: &Row) -> rusqlite::Result<(Tenant, i64)> {
    Ok((
        Tenant {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: r.get(2)?,
        },
        r.get(3)?,
    ))
}

const ENDPOINT_COLS: &str = "id, tenant_id, url, events, description, enabled, secret, created_at, updated_at, seq, \
     previous_secret, previous_secret_expires_at, settings, disabled_reason, failing_since";
fn endpoint_row(r: &Row) -> rusqlite::Result<(Endpoint, i64)> {
    let events: String = r.get(3)?;
    Ok((
        Endpoint {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            url: r.get(2)?,
            events: serde_json::from_str(&events).unwrap_or_default(),
            description: r.get(4)?,
            enabled: r.get(5)?,
            secret: r.get(6)?,
            created_at: r.get(7)?,
            updated_at: r.get(8)?,
            previous_secret: r.get(10)?,
            previous_secret_expires_at: r.get(11)?,
            settings: serde_json::from_str(&r.get::<_, String>(12)?).unwrap_or_default(),
            disabled_reason: r.get(13)?,
            failing_since: r.get(14)?,
        },
        r.get(9)?,
    ))
}

const EVENT_COLS: &str =
    "id, tenant_id, name, payload, idempotency_key, created_at, seq, purged_at";
fn event_row(r: &Row) -> rusqlite::Result<(Event, i64)> {
    let payload: Vec<u8> = r.get(3)?;
    Ok((
        Event {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            name: r.get(2)?,
            payload: Bytes::from(payload),
            idempotency_key: r.get(4)?,
            created_at: r.get(5)?,
            purged_at: r.get(7)?,
        },
        r.get(6)?,
    ))
}

const DELIVERY_COLS: &str = "id, tenant_id, event_id, event_name, endpoint_id, status, attempts, \
     next_attempt_at, last_attempt_at, last_status_code, last_error_kind, created_at, updated_at, seq";
fn delivery_row(r: &Row) -> rusqlite::Result<(Delivery, i64)> {
    let status: String = r.get(5)?;
    Ok((
        Delivery {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            event_id: r.get(2)?,
            event_name: r.get(3)?,
            endpoint_id: r.get(4)?,
            status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
            attempts: r.get(6)?,
            next_attempt_at: r.get(7)?,
            last_attempt_at: r.get(8)?,
            last_status_code: r.get(9)?,
            last_error_kind: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
        },
        r.get(13)?,
    ))
}

const ATTEMPT_COLS: &str = "id, delivery_id, started_at, duration_ms, status_code, error_kind, error, response, succeeded, seq";
fn attempt_row(r: &Row) -> rusqlite::Result<(Attempt, i64)> {
    Ok((
        Attempt {
            id: r.get(0)?,
            delivery_id: r.get(1)?,
            started_at: r.get(2)?,
            duration_ms: r.get(3)?,
            status_code: r.get(4)?,
            error_kind: r.get(5)?,
            error: r.get(6)?,
            response: r.get(7)?,
            succeeded: r.get(8)?,
        },
        r.get(9)?,
    ))
}

/// Turns `limit + 1` fetched rows into a page and the cursor of the next one.
fn paginate<T>(mut rows: Vec<(T, i64)>, limit: u32) -> Listed<T> {
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|(_, seq)| *seq)
    } else {
        None
    };
    Listed {
        rows: rows.into_iter().map(|(t, _)| t).collect(),
        next_cursor,
    }
}

fn cursor(page: Page) -> i64 {
    page.cursor.unwrap_or(i64::MAX)
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

const EVENT_TYPE_COLS: &str = "name, description, schema, created_at, updated_at, seq";
fn event_type_row(r: &Row) -> rusqlite::Result<(EventType, i64)> {
    Ok((
        EventType {
            name: r.get(0)?,
            description: r.get(1)?,
            schema: r.get(2)?,
            created_at: r.get(3)?,
            updated_at: r.get(4)?,
        },
        r.get(5)?,
    ))
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

fn settings_json(settings: &EndpointSettings) -> String {
    serde_json::to_string(settings).unwrap_or_else(|_| "{}".into())
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
            return Ok(Published {
                event,
                deliveries,
                jobs: vec![],
                endpoints: vec![],
                due_endpoints: vec![],
                repeated: true,
            });
        }
    }
    let Some(all) = tenant_endpoints(conn, &ev.tenant_id)? else {
        return Err(StoreError::NotFound);
    };
    let endpoints: Vec<Arc<Endpoint>> = crate::store::subscribers(&all, &ev)?
        .into_iter()
        .cloned()
        .collect();

    conn.prepare_cached(
        "INSERT INTO events (id, tenant_id, name, payload, idempotency_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        ev.id,
        ev.tenant_id,
        ev.name,
        &ev.payload[..],
        ev.idempotency_key,
        ev.created_at
    ])?;

    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, tenant_id, event_id, event_name, endpoint_id, status,
             next_attempt_at, created_at, updated_at, ordered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?7, ?6, ?8, ?8, ?9)",
    )?;
    let now = clock();
    let until = lease_end(lease, now);
    let mut deliveries = Vec::with_capacity(endpoints.len());
    let mut jobs = Vec::with_capacity(endpoints.len());
    let mut due_endpoints = Vec::new();
    let mut leased_endpoints = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        let id = new_id("dlv");
        let (status, leased) = lease.initial_state(&ep);
        let next = (status == DeliveryStatus::Pending).then_some(ev.created_at);
        insert.execute(params![
            id,
            ev.tenant_id,
            ev.id,
            ev.name,
            ep.id,
            next,
            status.as_str(),
            ev.created_at,
            // Read from `ep` in this transaction: the head index (schema.rs) relies on it.
            ep.settings.ordered
        ])?;
        let seq = conn.last_insert_rowid();
        deliveries.push(PublishedDelivery {
            id: id.clone(),
            endpoint_id: ep.id.clone(),
            status,
        });
        if leased {
            leases::hold(seq, &lease.owner, lease.token, until, now);
            jobs.push(Job {
                delivery_id: id,
                event_id: ev.id.clone(),
                tenant_id: ev.tenant_id.clone(),
                endpoint_id: Arc::from(ep.id.as_str()),
                body: ev.payload.clone(),
                cycle_failures: 0,
                lease_token: lease.token,
                row: Some(seq),
            });
            leased_endpoints.push(ep);
        } else {
            leases::forget(seq);
            if status == DeliveryStatus::Pending {
                due_endpoints.push(ep.id.clone());
            }
        }
    }
    Ok(Published {
        event: Event {
            id: ev.id,
            tenant_id: ev.tenant_id,
            name: ev.name,
            payload: ev.payload,
            idempotency_key: ev.idempotency_key,
            created_at: ev.created_at,
            purged_at: None,
        },
        deliveries,
        jobs,
        endpoints: leased_endpoints,
        due_endpoints,
        repeated: false,
    })
}

/// The claim query: one endpoint's due, unleased deliveries, oldest due first. Parameters:
/// ?1 endpoint id, ?2 due time (ms), ?3 limit, ?4 now (ms). Shared with `explain_claim`, so
/// the plan shown by `chime-bench` is the plan of the query that runs.
pub const CLAIM_SQL: &str = "SELECT d.seq, d.id, d.event_id, d.tenant_id, d.cycle_failures,
            e.payload
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

/// A claimable delivery as both claim queries return it: their first six columns.
struct ClaimRow {
    seq: i64,
    id: String,
    event_id: String,
    tenant_id: String,
    cycle_failures: u32,
    payload: Vec<u8>,
}

fn claim_row(r: &Row) -> rusqlite::Result<ClaimRow> {
    Ok(ClaimRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        event_id: r.get(2)?,
        tenant_id: r.get(3)?,
        cycle_failures: r.get(4)?,
        payload: r.get(5)?,
    })
}

/// Leases a claimed delivery to `lease` until `until` and makes its job.
fn lease_job(row: ClaimRow, ep: Arc<str>, lease: &Lease, until: Millis, now: Millis) -> Job {
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
    }
}

/// An ordered endpoint's claim: its head (oldest pending delivery by acceptance order) and
/// nothing else. A head that is leased or waiting for its retry blocks everything behind it.
fn claim_head(
    conn: &Connection,
    ep: Arc<str>,
    endpoint: Option<Endpoint>,
    now: Millis,
    lease: &Lease,
) -> Result<Claimed> {
    let head: Option<(ClaimRow, Option<Millis>, bool)> = conn
        .prepare_cached(
            "SELECT d.seq, d.id, d.event_id, d.tenant_id, d.cycle_failures, e.payload,
                    d.next_attempt_at, chime_leased(d.seq, ?2)
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.endpoint_id = ?1 AND d.status = 'pending' AND d.ordered = 1
             ORDER BY d.seq LIMIT 1",
        )?
        .query_row(params![&*ep, clock()], |r| {
            Ok((claim_row(r)?, r.get(6)?, r.get(7)?))
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
    let ep: Arc<str> = Arc::from(endpoint_id);
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
             last_error_kind = ?6, updated_at = ?7
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
            o.delivery_id
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

#[async_trait]
impl Store for SqliteStore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<bool> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)")?
                    .execute([key, value])?;
                Ok(n == 1)
            })
            .await
    }

    async fn create_token(&self, hash: &str, scope: TokenScope, now: Millis) -> Result<()> {
        let hash = hash.to_owned();
        let tenant = match scope {
            TokenScope::Admin => None,
            TokenScope::Tenant(t) => Some(t),
        };
        self.writer
            .write(move |c| {
                if let Some(t) = &tenant
                    && !tenant_exists(c, t)?
                {
                    return Err(StoreError::NotFound);
                }
                c.prepare_cached(
                    "INSERT INTO tokens (hash, tenant_id, created_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![hash, tenant, now])?;
                Ok(())
            })
            .await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenScope>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            let row: Option<Option<String>> = c
                .prepare_cached("SELECT tenant_id FROM tokens WHERE hash = ?1")?
                .query_row([hash], |r| r.get(0))
                .optional()?;
            Ok(row.map(|t| match t {
                None => TokenScope::Admin,
                Some(t) => TokenScope::Tenant(t),
            }))
        })
        .await
    }

    async fn create_tenant(&self, t: Tenant) -> Result<()> {
        self.writer
            .write(move |c| {
                forget_endpoints();
                if tenant_exists(c, &t.id)? {
                    return Err(StoreError::Conflict(format!(
                        "tenant {:?} already exists",
                        t.id
                    )));
                }
                c.prepare_cached(
                    "INSERT INTO tenants (id, seq, name, created_at)
                     VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tenants), ?2, ?3)",
                )?
                .execute(params![t.id, t.name, t.created_at])?;
                Ok(())
            })
            .await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))?
                    .query_row([id], tenant_row)
                    .optional()?
                    .map(|(t, _)| t),
            )
        })
        .await
    }

    async fn list_tenants(&self, page: Page) -> Result<Listed<Tenant>> {
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {TENANT_COLS} FROM tenants WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
                ))?,
                params![cursor(page), page.limit + 1],
                tenant_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn delete_tenant(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |c| {
                forget_endpoints();
                // Deliveries reference the tenant only by value; remove them explicitly.
                c.prepare_cached("DELETE FROM deliveries WHERE tenant_id = ?1")?
                    .execute([&id])?;
                let n = c
                    .prepare_cached("DELETE FROM tenants WHERE id = ?1")?
                    .execute([&id])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn create_endpoint(&self, e: Endpoint) -> Result<()> {
        self.writer
            .write(move |c| {
                forget_endpoints();
                if !tenant_exists(c, &e.tenant_id)? {
                    return Err(StoreError::NotFound);
                }
                c.prepare_cached(
                    "INSERT INTO endpoints (id, tenant_id, url, events, description, enabled,
                         secret, created_at, updated_at, previous_secret,
                         previous_secret_expires_at, settings, disabled_reason, failing_since)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?
                .execute(params![
                    e.id,
                    e.tenant_id,
                    e.url,
                    serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into()),
                    e.description,
                    e.enabled,
                    e.secret,
                    e.created_at,
                    e.updated_at,
                    e.previous_secret,
                    e.previous_secret_expires_at,
                    settings_json(&e.settings),
                    e.disabled_reason,
                    e.failing_since
                ])?;
                Ok(())
            })
            .await
    }

    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row([id, tenant_id], endpoint_row)
            .optional()?
            .map(|(e, _)| e))
        })
        .await
    }

    async fn get_endpoint_by_id(&self, id: &str) -> Result<Option<Endpoint>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = ?1"
            ))?
            .query_row([id], endpoint_row)
            .optional()?
            .map(|(e, _)| e))
        })
        .await
    }

    async fn list_endpoints(&self, tenant_id: &str, page: Page) -> Result<Listed<Endpoint>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLS} FROM endpoints WHERE tenant_id = ?1 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3"
                ))?,
                params![tenant_id, cursor(page), page.limit + 1],
                endpoint_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn update_endpoint(&self, e: Endpoint) -> Result<()> {
        self.writer
            .write(move |c| {
                forget_endpoints();
                let n = c
                    .prepare_cached(
                        "UPDATE endpoints SET url = ?1, events = ?2, description = ?3,
                             enabled = ?4, secret = ?5, updated_at = ?6, previous_secret = ?9,
                             previous_secret_expires_at = ?10, settings = ?11,
                             disabled_reason = ?12, failing_since = ?13
                         WHERE id = ?7 AND tenant_id = ?8",
                    )?
                    .execute(params![
                        e.url,
                        serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into()),
                        e.description,
                        e.enabled,
                        e.secret,
                        e.updated_at,
                        e.id,
                        e.tenant_id,
                        e.previous_secret,
                        e.previous_secret_expires_at,
                        settings_json(&e.settings),
                        e.disabled_reason,
                        e.failing_since
                    ])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.writer
            .write(move |c| {
                forget_endpoints();
                let n = c
                    .prepare_cached("DELETE FROM endpoints WHERE id = ?1 AND tenant_id = ?2")?
                    .execute([id, tenant_id])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn publish(&self, event: NewEvent, lease: Lease) -> Result<Published> {
        self.writer
            .write(move |c| publish_tx(c, event, &lease))
            .await
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row([id, tenant_id], event_row)
            .optional()?
            .map(|(e, _)| e))
        })
        .await
    }

    async fn list_events(
        &self,
        tenant_id: &str,
        name: Option<&str>,
        page: Page,
    ) -> Result<Listed<Event>> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.map(str::to_owned));
        self.read(move |c| {
            let rows = match name {
                Some(name) => collect(
                    c.prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM events
                         WHERE tenant_id = ?1 AND name = ?2 AND seq < ?3
                         ORDER BY seq DESC LIMIT ?4"
                    ))?,
                    params![tenant_id, name, cursor(page), page.limit + 1],
                    event_row,
                )?,
                None => collect(
                    c.prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM events WHERE tenant_id = ?1 AND seq < ?2
                         ORDER BY seq DESC LIMIT ?3"
                    ))?,
                    params![tenant_id, cursor(page), page.limit + 1],
                    event_row,
                )?,
            };
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<Delivery>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row([id, tenant_id], delivery_row)
            .optional()?
            .map(|(d, _)| d))
        })
        .await
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
        page: Page,
    ) -> Result<Listed<Delivery>> {
        let tenant_id = tenant_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| {
            // Optional filters as `(?n IS NULL OR col = ?n)` keep one cached statement.
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLS} FROM deliveries
                     WHERE tenant_id = ?1 AND seq < ?2
                       AND (?3 IS NULL OR status = ?3)
                       AND (?4 IS NULL OR endpoint_id = ?4)
                       AND (?5 IS NULL OR event_id = ?5)
                       AND (?7 IS NULL OR event_name = ?7)
                     ORDER BY seq DESC LIMIT ?6"
                ))?,
                params![
                    tenant_id,
                    cursor(page),
                    filter.status.map(DeliveryStatus::as_str),
                    filter.endpoint_id,
                    filter.event_id,
                    page.limit + 1,
                    filter.event_name
                ],
                delivery_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn list_attempts(&self, delivery_id: &str, page: Page) -> Result<Listed<Attempt>> {
        let delivery_id = delivery_id.to_owned();
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = ?1 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3"
                ))?,
                params![delivery_id, cursor(page), page.limit + 1],
                attempt_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn retry_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(&format!(
                        "UPDATE deliveries SET {REPENDING_ORDERED}, status = 'pending',
                             cycle_failures = 0, next_attempt_at = ?1, updated_at = ?1
                         WHERE id = ?2 AND tenant_id = ?3 AND NOT chime_leased(seq, ?4)
                           AND {NOT_PURGED}"
                    ))?
                    .execute(params![now, id, tenant_id, clock()])?;
                let row = c
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1 AND tenant_id = ?2"
                    ))?
                    .query_row([&id, &tenant_id], delivery_row)
                    .optional()?;
                match (n, row) {
                    (_, None) => Err(StoreError::NotFound),
                    (0, Some((d, _))) => {
                        Err(StoreError::Conflict(if event_purged(c, &d.event_id)? {
                            rules::PURGED.into()
                        } else {
                            "the delivery is being attempted right now".into()
                        }))
                    }
                    (_, Some((d, _))) => Ok(d),
                }
            })
            .await
    }

    async fn claim(
        &self,
        endpoint_id: &str,
        limit: u32,
        now: Millis,
        lease: &Lease,
    ) -> Result<Claimed> {
        let (endpoint_id, lease) = (endpoint_id.to_owned(), lease.clone());
        self.writer
            .write(move |c| claim_tx(c, &endpoint_id, limit, now, &lease))
            .await
    }

    async fn record(&self, outcomes: Vec<Outcome>) -> Result<Vec<bool>> {
        self.writer.write(move |c| record_tx(c, outcomes)).await
    }

    async fn release(&self, jobs: Vec<Job>) -> Result<()> {
        self.writer
            .write(move |c| {
                for job in jobs {
                    if let Some(seq) = row_of(c, job.row, &job.delivery_id)? {
                        leases::take(seq, job.lease_token);
                    }
                }
                Ok(())
            })
            .await
    }

    async fn release_owner(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.writer
            .write(move |_| {
                leases::release_owner(&owner);
                Ok(())
            })
            .await
    }

    async fn reset_leases(&self) -> Result<()> {
        self.writer
            .write(|c| {
                leases::clear();
                // Leases live in memory now (`leases.rs`); this clears any a version that
                // wrote them into rows left behind.
                c.execute_batch(
                    "UPDATE deliveries SET lease_owner = NULL, lease_token = NULL,
                         leased_until = NULL
                     WHERE status = 'pending' AND lease_owner IS NOT NULL",
                )?;
                Ok(())
            })
            .await
    }

    async fn change_health(
        &self,
        endpoint_id: &str,
        change: HealthChange,
        now: Millis,
    ) -> Result<bool> {
        let id = endpoint_id.to_owned();
        self.writer
            .write(move |c| {
                forget_endpoints();
                let n = match change {
                    HealthChange::Failing(since) => c
                        .prepare_cached(
                            "UPDATE endpoints SET failing_since = ?2
                             WHERE id = ?1 AND failing_since IS NULL",
                        )?
                        .execute(params![id, since])?,
                    HealthChange::Recovered => c
                        .prepare_cached(
                            "UPDATE endpoints SET failing_since = NULL
                             WHERE id = ?1 AND failing_since IS NOT NULL",
                        )?
                        .execute([id])?,
                    HealthChange::Disable(reason) => c
                        .prepare_cached(
                            "UPDATE endpoints SET enabled = 0, disabled_reason = ?2,
                                 updated_at = ?3
                             WHERE id = ?1 AND enabled = 1",
                        )?
                        .execute(params![id, reason, now])?,
                };
                Ok(n == 1)
            })
            .await
    }

    async fn pending_head(&self, endpoint_id: &str) -> Result<Option<Delivery>> {
        let id = endpoint_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries
                 WHERE endpoint_id = ?1 AND status = 'pending' AND ordered = 1
                 ORDER BY seq LIMIT 1"
            ))?
            .query_row([id], delivery_row)
            .optional()?
            .map(|(d, _)| d))
        })
        .await
    }

    async fn skip_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL,
                             updated_at = ?1
                         WHERE id = ?2 AND tenant_id = ?3 AND status = 'pending'
                           AND NOT chime_leased(seq, ?4)",
                    )?
                    .execute(params![now, id, tenant_id, clock()])?;
                let row = c
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1 AND tenant_id = ?2"
                    ))?
                    .query_row([&id, &tenant_id], delivery_row)
                    .optional()?;
                match (n, row) {
                    (_, None) => Err(StoreError::NotFound),
                    (0, Some((d, _))) => Err(StoreError::Conflict(format!(
                        "only a pending delivery that is not being attempted can be skipped; \
                         this one is {}",
                        if d.status == DeliveryStatus::Pending {
                            "in flight"
                        } else {
                            d.status.as_str()
                        }
                    ))),
                    (_, Some((d, _))) => Ok(d),
                }
            })
            .await
    }

    async fn replay(
        &self,
        tenant_id: &str,
        filter: &ReplayFilter,
        now: Millis,
        limit: u32,
        dry_run: bool,
    ) -> Result<(u64, Vec<String>)> {
        let tenant_id = tenant_id.to_owned();
        let filter = filter.clone();
        let statuses = serde_json::to_string(
            &filter
                .statuses
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        self.writer
            .write(move |c| {
                // Replaying a delivery that is being attempted would race its record: skip those.
                let where_ = format!(
                    "tenant_id = ?1
                       AND status IN (SELECT value FROM json_each(?2))
                       AND (?3 IS NULL OR endpoint_id = ?3)
                       AND (?4 IS NULL OR event_name = ?4)
                       AND (?5 IS NULL OR created_at >= ?5)
                       AND (?6 IS NULL OR created_at < ?6)
                       AND NOT chime_leased(seq, ?7)
                       AND {NOT_PURGED}"
                );
                let where_ = where_.as_str();
                if dry_run {
                    let n: i64 = c
                        .prepare_cached(&format!("SELECT COUNT(*) FROM deliveries WHERE {where_}"))?
                        .query_row(
                            params![
                                tenant_id,
                                statuses,
                                filter.endpoint_id,
                                filter.event_name,
                                filter.since,
                                filter.until,
                                clock()
                            ],
                            |r| r.get(0),
                        )?;
                    return Ok((n as u64, vec![]));
                }
                let rows: Vec<(String, String)> = collect(
                    c.prepare_cached(&format!(
                        "SELECT id, endpoint_id FROM deliveries WHERE {where_} ORDER BY seq LIMIT ?8"
                    ))?,
                    params![
                        tenant_id,
                        statuses,
                        filter.endpoint_id,
                        filter.event_name,
                        filter.since,
                        filter.until,
                        clock(),
                        limit
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let mut update = c.prepare_cached(&format!(
                    "UPDATE deliveries SET {REPENDING_ORDERED}, status = 'pending',
                         cycle_failures = 0, next_attempt_at = ?1, updated_at = ?1
                     WHERE id = ?2"
                ))?;
                let mut endpoints = Vec::new();
                for (id, endpoint_id) in &rows {
                    update.execute(params![now, id])?;
                    if !endpoints.contains(endpoint_id) {
                        endpoints.push(endpoint_id.clone());
                    }
                }
                Ok((rows.len() as u64, endpoints))
            })
            .await
    }

    async fn create_event_type(&self, t: EventType) -> Result<()> {
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO event_types
                             (name, seq, description, schema, created_at, updated_at)
                         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM event_types),
                                 ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        t.name,
                        t.description,
                        t.schema,
                        t.created_at,
                        t.updated_at
                    ])?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!(
                        "event type {:?} already exists",
                        t.name
                    )));
                }
                Ok(())
            })
            .await
    }

    async fn update_event_type(&self, t: EventType) -> Result<()> {
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE event_types SET description = ?2, schema = ?3, updated_at = ?4
                         WHERE name = ?1",
                    )?
                    .execute(params![t.name, t.description, t.schema, t.updated_at])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {EVENT_TYPE_COLS} FROM event_types WHERE name = ?1"
            ))?
            .query_row([name], event_type_row)
            .optional()?
            .map(|(t, _)| t))
        })
        .await
    }

    async fn list_event_types(&self, page: Page) -> Result<Listed<EventType>> {
        self.read(move |c| {
            let rows = collect(
                c.prepare_cached(&format!(
                    "SELECT {EVENT_TYPE_COLS} FROM event_types WHERE seq < ?1
                     ORDER BY seq DESC LIMIT ?2"
                ))?,
                params![cursor(page), page.limit + 1],
                event_type_row,
            )?;
            Ok(paginate(rows, page.limit))
        })
        .await
    }

    async fn delete_event_type(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM event_types WHERE name = ?1")?
                    .execute([name])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn purge_payloads(&self, before: Millis, now: Millis, limit: u32) -> Result<u64> {
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(&format!(
                        "UPDATE events SET payload = X'', purged_at = ?2
                         WHERE seq IN ({})",
                        purgeable("IS NULL", "?3")
                    ))?
                    .execute(params![before, now, limit])?;
                Ok(n as u64)
            })
            .await
    }

    async fn purge_events(&self, before: Millis, limit: u32) -> Result<u64> {
        self.writer
            .write(move |c| {
                // Deliveries and attempts go with their event (the delete triggers). Purged
                // events first: they are the older ones.
                let n = c
                    .prepare_cached(&format!(
                        "DELETE FROM events
                         WHERE seq IN (SELECT seq FROM ({}) UNION ALL SELECT seq FROM ({})
                                       LIMIT ?2)",
                        purgeable("IS NOT NULL", "?2"),
                        purgeable("IS NULL", "?2")
                    ))?
                    .execute(params![before, limit])?;
                Ok(n as u64)
            })
            .await
    }

    async fn due_summary(&self, _now: Millis) -> Result<Vec<(String, Millis)>> {
        self.read(move |c| {
            let ids: Vec<String> =
                collect(c.prepare_cached("SELECT id FROM endpoints")?, [], |r| {
                    r.get(0)
                })?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(due) = next_due(c, &id)? {
                    out.push((id, due));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        if self.writer.out_of_space() {
            // Not ready while writes fail for lack of space. Nothing else may be writing
            // (a load balancer stops sending traffic), so once there is room again, probe
            // with a real write: a commit that fits clears the state.
            let free = free_space(&self.path).unwrap_or(0);
            if free < SPACE_HEADROOM {
                return Err(StoreError::Full(format!(
                    "{free} bytes free beside {}",
                    self.path.display()
                )));
            }
            let now = crate::model::now_millis().to_string();
            return self
                .writer
                .write(move |c| {
                    c.prepare_cached(
                        "INSERT INTO meta (key, value) VALUES ('space_probe', ?1) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([now])?;
                    Ok(())
                })
                .await;
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}
