//! Checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the WAL threshold, on
//! the committing connection: here that is the single writer, which then stops applying
//! writes while pages are copied from the WAL into the database and the database is fsync'd.
//! Under load a profile showed that stall at ~70 ms every ~300 ms, a fifth of the writer's
//! time, and the p99 publish latency was made of it. So the writer's automatic checkpoint is
//! replaced by a hook that only counts WAL pages, and a thread with its own connection runs
//! `PASSIVE` checkpoints, which never block the writer (WAL mode lets one checkpoint run
//! beside one writer).
//!
//! A passive checkpoint alone never lets the WAL start over under steady load. SQLite
//! restarts the WAL from its beginning only when a write transaction begins with every frame
//! already copied, and the writer begins its next transaction right after each commit,
//! before any checkpoint can have copied that commit's frames. Measured: the WAL kept
//! growing past the threshold, so every commit asked for another checkpoint (about 30 a
//! second, each syncing the WAL beside the syncer's flush and then the database), and the
//! WAL file kept growing (a growing file's flush also writes its new size). So once a
//! passive pass has copied the bulk, the writer finishes the job between two of its
//! transactions (`finish`): a `RESTART` checkpoint of the few frames committed since, which
//! makes its next transaction write the WAL from the start again.
//!
//! Durability is unchanged: a checkpoint syncs the WAL before copying from it and syncs the
//! database before the WAL may be reused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// WAL pages after a commit that start a checkpoint (~40 MB of WAL). A checkpoint copies
/// each page once, its newest version, however many commits rewrote it; the hot pages (the
/// right edges of every index) are rewritten by almost every commit, so a longer WAL copies
/// them far less often. Measured on a 300,000-event paused ingest: SQLite's default of 1,000
/// gave 18,600–19,400 events/s, 8,000 gave 20,300–21,900/s and 32,000 gave 20,600–22,900/s
/// (server CPU per event −4 to −12%); the WAL file stays at this size once reached.
const CHECKPOINT_PAGES: i32 = 10_000;

/// How long the writer's `RESTART` waits for readers still on the old WAL: a reader in the
/// middle of a long listing must not stall every write; the next pass tries again.
const RESTART_WAIT: Duration = Duration::from_millis(5);

/// Set by the checkpoint thread once a passive pass has copied the bulk of the WAL, cleared
/// by the writer when it finishes the checkpoint (`finish`).
#[derive(Clone, Default)]
pub struct Restart(Arc<AtomicBool>);

/// Makes `writer` leave checkpoints to a new thread that owns `checkpointer` (a connection
/// to the same database). The thread stops when `writer` is closed. The writer calls
/// `finish` with the returned flag between its transactions.
pub fn offload(writer: &mut Connection, checkpointer: Connection) -> rusqlite::Result<Restart> {
    let restart = Restart::default();
    let (tx, rx) = std_mpsc::sync_channel::<()>(1);
    let asked = restart.clone();
    // Replaces the automatic checkpoint: SQLite installs that as this same hook.
    writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
        // While the writer is due to finish a pass, another pass would only copy the few
        // frames that `finish` copies anyway, and sync both files once more.
        if pages >= CHECKPOINT_PAGES && !asked.0.load(Ordering::Acquire) {
            // Full means a checkpoint is already asked for; it will see these pages too.
            let _ = tx.try_send(());
        }
        Ok(())
    }))?;
    let done = restart.clone();
    std::thread::Builder::new()
        .name("chime-sqlite-ckpt".into())
        .spawn(move || run(checkpointer, rx, done))
        .expect("spawn checkpoint thread");
    Ok(restart)
}

fn run(conn: Connection, rx: std_mpsc::Receiver<()>, restart: Restart) {
    while rx.recv().is_ok() {
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((log, copied)) => {
                tracing::trace!(log, copied, "checkpointed the WAL");
                restart.0.store(true, Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "checkpointing the WAL failed"),
        }
        // Asked for during the pass: `finish` covers those frames.
        while rx.try_recv().is_ok() {}
    }
}

/// Run by the writer between two transactions: once a passive pass has copied most of the
/// WAL, copies the rest and waits (briefly) for readers to leave it, so the writer's next
/// transaction starts the WAL over. Costs the writer one sync of each file and the copy of
/// the frames committed since the pass.
pub fn finish(writer: &Connection, restart: &Restart) {
    if !restart.0.swap(false, Ordering::AcqRel) {
        return;
    }
    let _ = writer.busy_timeout(RESTART_WAIT);
    let done = writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
    let _ = writer.busy_timeout(super::BUSY_TIMEOUT);
    match done {
        // Readers held on: the WAL goes on, and the next commit asks for another pass.
        Ok(1) => tracing::debug!("WAL restart deferred: readers still on it"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "checkpointing the WAL failed"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn open(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
            .unwrap();
        conn
    }

    /// A writer whose checkpoints are offloaded, after one commit of more pages (4 KiB
    /// each) than the threshold.
    fn offloaded_past_threshold(path: &std::path::Path) -> (Connection, Restart) {
        let mut writer = open(path);
        writer
            .execute_batch("CREATE TABLE t (v BLOB NOT NULL)")
            .unwrap();
        let restart = offload(&mut writer, open(path)).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..CHECKPOINT_PAGES + 200 {
            writer
                .execute("INSERT INTO t (v) VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        writer.execute_batch("COMMIT").unwrap();
        (writer, restart)
    }

    #[test]
    fn a_commit_past_the_threshold_is_checkpointed_by_the_checkpoint_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let db_len = || std::fs::metadata(&path).unwrap().len();
        let (_writer, _) = offloaded_past_threshold(&path);
        // The hook replaced the automatic checkpoint, so only the checkpoint thread can
        // copy these pages into the database file.
        let deadline = Instant::now() + Duration::from_secs(20);
        while db_len() < CHECKPOINT_PAGES as u64 * 4096 {
            assert!(Instant::now() < deadline, "the WAL was never checkpointed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The WAL's salt-1 (header bytes 16..20): SQLite changes it each time the WAL is
    /// started over from its beginning.
    fn wal_salt(path: &std::path::Path) -> u32 {
        use std::io::Read;
        let mut header = [0u8; 20];
        std::fs::File::open(path.with_extension("db-wal"))
            .unwrap()
            .read_exact(&mut header)
            .unwrap();
        u32::from_be_bytes(header[16..20].try_into().unwrap())
    }

    #[test]
    fn under_steady_writes_the_writer_starts_a_long_wal_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let (writer, restart) = offloaded_past_threshold(&path);
        let salt = wal_salt(&path);
        // As the writer thread does under load: the next transaction begins right after
        // each commit, before any checkpoint could have copied that commit's frames, so
        // only `finish` (between the two) lets the WAL start over.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut small = 0;
        loop {
            small += 1;
            writer.execute_batch("BEGIN IMMEDIATE").unwrap();
            writer
                .execute("INSERT INTO t (v) VALUES (zeroblob(100))", [])
                .unwrap();
            writer.execute_batch("COMMIT").unwrap();
            if wal_salt(&path) != salt {
                break;
            }
            assert!(Instant::now() < deadline, "the WAL was never started over");
            finish(&writer, &restart);
        }
        assert_eq!(
            writer
                .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            i64::from(CHECKPOINT_PAGES) + 200 + small,
            "nothing is lost when the WAL starts over"
        );
    }
}
