//! Checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the WAL threshold, on
//! the committing connection: here that is the single writer, which then stops applying
//! writes while pages are copied from the WAL into the database and the database is fsync'd.
//! Under load a profile showed that stall at ~70 ms every ~300 ms, a fifth of the writer's
//! time, and the p99 publish latency was made of it. So the writer's automatic checkpoint is
//! replaced by a hook that only counts WAL pages, and a thread with its own connection runs
//! `PASSIVE` checkpoints, which never block the writer (WAL mode lets one checkpoint run
//! beside one writer). The writer restarts the WAL from its beginning on its next
//! transaction once a checkpoint has copied all of it, as with automatic checkpoints.
//!
//! Durability is unchanged: a checkpoint syncs the WAL before copying from it and syncs the
//! database before the WAL may be reused.

use std::sync::mpsc as std_mpsc;

use rusqlite::Connection;

/// WAL pages after a commit that start a checkpoint (~40 MB of WAL). A checkpoint copies
/// each page once, its newest version, however many commits rewrote it; the hot pages (the
/// right edges of every index) are rewritten by almost every commit, so a longer WAL copies
/// them far less often. Measured on a 300,000-event paused ingest: SQLite's default of 1,000
/// gave 18,600–19,400 events/s, 8,000 gave 20,300–21,900/s and 32,000 gave 20,600–22,900/s
/// (server CPU per event −4 to −12%); the WAL file stays at this size once reached.
const CHECKPOINT_PAGES: i32 = 10_000;

/// Makes `writer` leave checkpoints to a new thread that owns `checkpointer` (a connection
/// to the same database). The thread stops when `writer` is closed.
pub fn offload(writer: &mut Connection, checkpointer: Connection) -> rusqlite::Result<()> {
    let (tx, rx) = std_mpsc::sync_channel::<()>(1);
    // Replaces the automatic checkpoint: SQLite installs that as this same hook.
    writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages >= CHECKPOINT_PAGES {
            // Full means a checkpoint is already asked for; it will see these pages too.
            let _ = tx.try_send(());
        }
        Ok(())
    }))?;
    std::thread::Builder::new()
        .name("chime-sqlite-ckpt".into())
        .spawn(move || run(checkpointer, rx))
        .expect("spawn checkpoint thread");
    Ok(())
}

fn run(conn: Connection, rx: std_mpsc::Receiver<()>) {
    while rx.recv().is_ok() {
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((log, copied)) => tracing::trace!(log, copied, "checkpointed the WAL"),
            Err(e) => tracing::warn!(error = %e, "checkpointing the WAL failed"),
        }
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

    #[test]
    fn a_commit_past_the_threshold_is_checkpointed_by_the_checkpoint_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut writer = open(&path);
        writer
            .execute_batch("CREATE TABLE t (v BLOB NOT NULL)")
            .unwrap();
        offload(&mut writer, open(&path)).unwrap();
        let db_len = || std::fs::metadata(&path).unwrap().len();
        let before = db_len();
        // Pages of 4 KiB in the WAL, in one commit: past the threshold.
        let tx = writer.unchecked_transaction().unwrap();
        for _ in 0..CHECKPOINT_PAGES + 200 {
            tx.execute("INSERT INTO t (v) VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        tx.commit().unwrap();
        // The hook replaced the automatic checkpoint, so only the checkpoint thread can
        // copy these pages into the database file.
        let deadline = Instant::now() + Duration::from_secs(20);
        while db_len() < CHECKPOINT_PAGES as u64 * 4096 {
            assert!(Instant::now() < deadline, "the WAL was never checkpointed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(before < CHECKPOINT_PAGES as u64 * 4096);
    }
}
