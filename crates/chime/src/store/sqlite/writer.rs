//! The single writer thread: every write runs here, and concurrent writes share one
//! transaction and one fsync (group commit). Callers are answered only after the commit is
//! durable.
//!
//! Writes do not get a savepoint each: savepoints make SQLite copy every page a write touches
//! into a statement journal, which a profile showed to be a large share of the writer's work.
//! Instead a write that fails before changing anything (the usual case: a check such as "no
//! such tenant") simply reports its error, and the batch goes on; a write that fails after
//! changing rows would leave part of itself behind, so it poisons the batch: the whole
//! transaction is rolled back and every write in it is answered with an error. (SQLite itself
//! undoes a failed statement's partial effects.)

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::{Result, StoreError};

/// Answers one caller once the batch's commit is known.
type Reply = Box<dyn FnOnce(bool) + Send>;
/// Runs one write; says whether it failed after changing rows (which poisons the batch).
type WriteJob = Box<dyn FnOnce(&Connection) -> (Reply, bool) + Send>;

/// Most writes applied in one transaction; bounds commit latency under load.
const MAX_BATCH: usize = 1024;

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteJob>,
}

impl Writer {
    /// Starts the thread that owns `conn`. It stops when every `Writer` handle is dropped.
    pub fn spawn(conn: Connection) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<WriteJob>(8192);
        let handle = std::thread::Builder::new()
            .name("chime-sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .expect("spawn writer thread");
        (Self { tx }, handle)
    }

    /// Runs `f` in the next group commit and returns its result once committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let before = conn.total_changes();
            let result = f(conn);
            let poisoned = result.is_err() && conn.total_changes() != before;
            let reply: Reply = Box::new(move |committed| {
                let result = if committed {
                    result
                } else {
                    result.and(Err(StoreError::Backend("commit failed".into())))
                };
                let _ = reply_tx.send(result);
            });
            (reply, poisoned)
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

fn run(conn: Connection, mut rx: mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = began {
            // Without a transaction nothing can be applied safely: refuse the whole batch.
            tracing::error!(error = %e, "could not begin a write transaction");
            for job in batch.drain(..) {
                let (reply, _) = job_without_connection(job, &conn);
                reply(false);
            }
            continue;
        }
        let mut poisoned = false;
        for job in batch.drain(..) {
            let (reply, bad) = job(&conn);
            poisoned |= bad;
            replies.push(reply);
        }
        let committed = if poisoned {
            tracing::warn!("a write failed part-way; its whole batch is rolled back");
            let _ = conn.execute_batch("ROLLBACK");
            super::forget_endpoints();
            false
        } else {
            match conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
            {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(error = %e, "group commit failed; the batch is rolled back");
                    let _ = conn.execute_batch("ROLLBACK");
                    super::forget_endpoints();
                    false
                }
            }
        };
        for reply in replies.drain(..) {
            reply(committed);
        }
    }
}

/// Answers a job that cannot run: it still has to be called to get its reply, so it runs
/// inside a transaction that is rolled back at once.
fn job_without_connection(job: WriteJob, conn: &Connection) -> (Reply, bool) {
    let _ = conn.execute_batch("SAVEPOINT refused");
    let out = job(conn);
    let _ = conn.execute_batch("ROLLBACK TO refused; RELEASE refused");
    out
}
