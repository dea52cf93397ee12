//! The single writer thread: every write runs here, and concurrent writes share one
//! transaction and one fsync (group commit). Each write runs in its own savepoint, so one
//! failing write does not undo the others in its batch. Callers are answered only after the
//! commit is durable.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::{Result, StoreError};

/// Answers one caller once the batch's commit is known.
type Reply = Box<dyn FnOnce(bool) + Send>;
type WriteJob = Box<dyn FnOnce(&Connection) -> Reply + Send>;

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
            let result = in_savepoint(conn, f);
            Box::new(move |committed| {
                let result = if committed {
                    result
                } else {
                    result.and(Err(StoreError::Backend("commit failed".into())))
                };
                let _ = reply_tx.send(result);
            })
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

/// Runs `f` in a savepoint. The savepoint statements are prepared once and cached: at tens of
/// thousands of writes per second, re-parsing them each time is measurable.
fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.prepare_cached("SAVEPOINT w")?.execute([])?;
    let result = f(conn);
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO w")?.execute([])?;
    }
    conn.prepare_cached("RELEASE w")?.execute([])?;
    result
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
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = began {
            tracing::error!(error = %e, "could not begin a write transaction");
            for job in batch.drain(..) {
                // The savepoint still isolates each job; without BEGIN each commits alone.
                replies.push(job(&conn));
            }
            for reply in replies.drain(..) {
                reply(true);
            }
            continue;
        }
        for job in batch.drain(..) {
            replies.push(job(&conn));
        }
        let committed = match conn.execute_batch("COMMIT") {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; the batch is rolled back");
                let _ = conn.execute_batch("ROLLBACK");
                false
            }
        };
        for reply in replies.drain(..) {
            reply(committed);
        }
    }
}
