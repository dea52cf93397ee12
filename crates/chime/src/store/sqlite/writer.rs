//! The single writer thread: every write runs here, and concurrent writes share one
//! transaction and one fsync (group commit). Callers are answered only after the commit is
//! durable.
//!
//! Durability is pipelined: the writer connection commits with `synchronous = NORMAL` (the
//! commit is in the WAL, in the page cache, not yet on disk) and hands the batch's replies to
//! a syncer thread, which `fdatasync`s the WAL file and only then answers them. Meanwhile the
//! writer already applies the next writes in a new transaction, which it commits when that
//! flush is done: the disk flush and the next batch's work overlap instead of alternating,
//! and there is one commit per flush (each commit writes whole pages to the WAL, so fewer,
//! larger commits write far less). A reply therefore still means "on disk"; what changes is
//! that other connections may *read* a committed batch a fraction of a millisecond before it
//! is flushed (nothing acts on such a read without a write of its own, which waits for its
//! flush). SQLite itself syncs the WAL before every checkpoint copies it into the database,
//! as in `synchronous = FULL`.
//!
//! Writes do not get a savepoint each: savepoints make SQLite copy every page a write touches
//! into a statement journal, which a profile showed to be a large share of the writer's work.
//! Instead a write that fails before changing anything (the usual case: a check such as "no
//! such tenant") simply reports its error, and the batch goes on; a write that fails after
//! changing rows would leave part of itself behind, so it poisons the batch: the whole
//! transaction is rolled back and every write in it is answered with an error. (SQLite itself
//! undoes a failed statement's partial effects.)

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::{Result, StoreError};

/// Answers one caller once the batch's commit is known: `Ok` when it is durable, else why
/// the batch failed.
type Reply = Box<dyn FnOnce(std::result::Result<(), &StoreError>) + Send>;
/// Runs one write; says whether it failed after changing rows (which poisons the batch).
type WriteJob = Box<dyn FnOnce(&Connection) -> Applied + Send>;

/// What applying one write did.
struct Applied {
    reply: Reply,
    /// It failed after changing rows, which poisons the batch.
    poisoned: bool,
    /// It failed for lack of disk space.
    full: bool,
}

/// Most writes applied in one transaction; bounds commit latency under load.
const MAX_BATCH: usize = 1024;

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteJob>,
    /// A write failed for lack of disk space and none has committed since.
    out_of_space: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the thread that owns `conn` (which must be in WAL mode with `synchronous =
    /// NORMAL`) and the syncer that flushes `wal` (its WAL file, kept open). They stop when
    /// every `Writer` handle is dropped.
    pub fn spawn(
        conn: Connection,
        wal: File,
        leases: super::leases::Shared,
        restart: super::checkpoint::Restart,
    ) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<WriteJob>(8192);
        let out_of_space = Arc::new(AtomicBool::new(false));
        let space = out_of_space.clone();
        // At most one batch is being flushed at a time (see `run`).
        let (sync_tx, sync_rx) = std_mpsc::sync_channel::<Vec<Reply>>(1);
        let (flushed_tx, flushed_rx) = std_mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("chime-sqlite-sync".into())
            .spawn(move || sync(wal, sync_rx, flushed_tx))
            .expect("spawn syncer thread");
        let handle = std::thread::Builder::new()
            .name("chime-sqlite-writer".into())
            .spawn(move || {
                super::leases::adopt(leases);
                run(conn, rx, sync_tx, flushed_rx, restart, space)
            })
            .expect("spawn writer thread");
        (Self { tx, out_of_space }, handle)
    }

    /// Whether the last write that ended failed for lack of disk space.
    pub fn out_of_space(&self) -> bool {
        self.out_of_space.load(Ordering::Relaxed)
    }

    /// Runs `f` in the next group commit and returns its result once committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let before = (conn.total_changes(), super::leases::changes());
            let result = f(conn);
            let full = matches!(result, Err(StoreError::Full(_)));
            // Lease changes count as changes: they are part of the transaction too.
            let poisoned =
                result.is_err() && (conn.total_changes(), super::leases::changes()) != before;
            let reply: Reply = Box::new(move |committed| {
                let result = match committed {
                    Ok(()) => result,
                    Err(batch) => result.and(Err(batch.clone())),
                };
                let _ = reply_tx.send(result);
            });
            Applied {
                reply,
                poisoned,
                full,
            }
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("the store is closed".into()))?;
        reply_rx
            .await
            .map_err(|_| StoreError::Backend("the store writer stopped".into()))?
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<WriteJob>,
    sync_tx: std_mpsc::SyncSender<Vec<Reply>>,
    flushed_rx: std_mpsc::Receiver<()>,
    restart: super::checkpoint::Restart,
    out_of_space: Arc<AtomicBool>,
) {
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    // A committed batch is with the syncer and its flush has not finished.
    let mut flushing = false;
    while let Some(first) = rx.blocking_recv() {
        let began = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = began {
            // Without a transaction nothing can be applied safely: refuse what is queued.
            tracing::error!(error = %e, "could not begin a write transaction");
            let failure = StoreError::from(e);
            let reply = job_without_connection(first, &conn).reply;
            reply(Err(&failure));
            while let Ok(job) = rx.try_recv() {
                let reply = job_without_connection(job, &conn).reply;
                reply(Err(&failure));
            }
            continue;
        }
        let apply = |job: WriteJob, replies: &mut Vec<Reply>| {
            let Applied {
                reply,
                poisoned: bad,
                full,
            } = job(&conn);
            if full {
                out_of_space.store(true, Ordering::Relaxed);
            }
            replies.push(reply);
            bad
        };
        let mut poisoned = apply(first, &mut replies);
        // Keep applying writes to the open transaction while the disk is busy with the
        // previous batch: one commit per flush, so batches grow with the load and the work
        // of one batch overlaps the flush of the one before. A poisoned transaction takes no
        // more writes: they would only be rolled back with it.
        loop {
            while replies.len() < MAX_BATCH && !poisoned {
                match rx.try_recv() {
                    Ok(job) => poisoned |= apply(job, &mut replies),
                    Err(_) => break,
                }
            }
            if !flushing || poisoned || replies.len() >= MAX_BATCH {
                break;
            }
            let _ = flushed_rx.recv();
            flushing = false;
        }
        if flushing {
            let _ = flushed_rx.recv();
            flushing = false;
        }
        let committed = if poisoned {
            tracing::warn!("a write failed part-way; its whole batch is rolled back");
            roll_back(&conn);
            Err(StoreError::Backend(
                "another write of the same transaction failed part-way; retry".into(),
            ))
        } else {
            match conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
            {
                Ok(_) => {
                    super::leases::committed();
                    out_of_space.store(false, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "group commit failed; the batch is rolled back");
                    roll_back(&conn);
                    let e = StoreError::from(e);
                    if matches!(e, StoreError::Full(_)) {
                        out_of_space.store(true, Ordering::Relaxed);
                    }
                    Err(e)
                }
            }
        };
        if committed.is_ok() {
            // Answered by the syncer once the WAL is on disk.
            let batch = std::mem::replace(&mut replies, Vec::with_capacity(MAX_BATCH));
            match sync_tx.send(batch) {
                Ok(()) => flushing = true,
                Err(std_mpsc::SendError(batch)) => {
                    let stopped = StoreError::Backend("the WAL syncer stopped".into());
                    for reply in batch {
                        reply(Err(&stopped));
                    }
                }
            }
        } else if let Err(failure) = &committed {
            for reply in replies.drain(..) {
                reply(Err(failure));
            }
        }
        // Between two transactions: the only moment the WAL can be started over.
        super::checkpoint::finish(&conn, &restart);
    }
}

/// Rolls the open transaction back, with what lives beside it on this thread: the cached
/// endpoint rows it may have read, and its lease changes.
fn roll_back(conn: &Connection) {
    let _ = conn.execute_batch("ROLLBACK");
    super::forget_endpoints();
    super::leases::rolled_back();
}

/// The syncer thread: flushes the WAL after each committed batch, answers the batch's
/// callers, then tells the writer the disk is free.
fn sync(wal: File, rx: std_mpsc::Receiver<Vec<Reply>>, flushed_tx: std_mpsc::SyncSender<()>) {
    while let Ok(batch) = rx.recv() {
        let flushed = wal.sync_data().map_err(|e| {
            // The kernel may have dropped the dirty pages: these writes are not known to be
            // on disk, so their callers get an error rather than a false promise.
            tracing::error!(error = %e, "flushing the SQLite WAL failed");
            if e.kind() == std::io::ErrorKind::StorageFull {
                StoreError::Full(format!("flushing the WAL: {e}"))
            } else {
                StoreError::Backend(format!("flushing the WAL: {e}"))
            }
        });
        for reply in batch {
            reply(flushed.as_ref().copied());
        }
        let _ = flushed_tx.send(());
    }
}

/// Answers a job that cannot run: it still has to be called to get its reply, so it runs
/// inside a transaction that is rolled back at once.
fn job_without_connection(job: WriteJob, conn: &Connection) -> Applied {
    let _ = conn.execute_batch("SAVEPOINT refused");
    let out = job(conn);
    let _ = conn.execute_batch("ROLLBACK TO refused; RELEASE refused");
    super::leases::rolled_back();
    out
}
