//! Where tenant-controlled work runs: filters and JSON Schemas evaluated over an event. Both are
//! bounded per evaluation (`filter::compile`, `schema_cost`, `json_rules`), but an evaluation
//! over a large event still takes up to about a second and a few hundred megabytes. So they
//! run on blocking threads, never on the runtime's workers that serve every tenant, and at
//! most `LARGE_AT_ONCE` evaluations over large documents run at once, which bounds the memory
//! many concurrent large publishes can take. Small documents never wait for large ones.

use tokio::sync::Semaphore;

/// Documents larger than this, in bytes, count as large.
pub const LARGE: usize = 64 * 1024;
/// Evaluations over large documents that may run at once (one per core of a small machine).
pub const LARGE_AT_ONCE: usize = 2;

static LARGE_PERMITS: Semaphore = Semaphore::const_new(LARGE_AT_ONCE);

/// Runs `work` over a document of `size` bytes on a blocking thread, waiting for a permit
/// first when the document is large.
pub async fn run<T: Send + 'static>(size: usize, work: impl FnOnce() -> T + Send + 'static) -> T {
    let _permit = if size > LARGE {
        Some(
            LARGE_PERMITS
                .acquire()
                .await
                .expect("the semaphore is never closed"),
        )
    } else {
        None
    };
    tokio::task::spawn_blocking(work)
        .await
        .expect("tenant work does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_work_waits_for_a_permit_and_small_work_never_does() {
        // Hold every permit with large work that blocks until released.
        let mut releases = Vec::new();
        let mut held = Vec::new();
        for _ in 0..LARGE_AT_ONCE {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let (started_tx, started) = tokio::sync::oneshot::channel();
            releases.push(release);
            held.push(tokio::spawn(run(LARGE + 1, move || {
                let _ = started_tx.send(());
                let _ = wait.recv();
            })));
            started.await.unwrap();
        }
        assert_eq!(LARGE_PERMITS.available_permits(), 0);
        // Small work runs meanwhile.
        assert_eq!(run(LARGE, || 7).await, 7);
        // More large work cannot start until a permit is returned.
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let third = tokio::spawn(run(LARGE + 1, move || flag.store(true, Ordering::SeqCst)));
        tokio::task::yield_now().await;
        assert!(!started.load(Ordering::SeqCst));
        releases.pop().unwrap().send(()).unwrap();
        third.await.unwrap();
        assert!(started.load(Ordering::SeqCst));
        for r in releases {
            r.send(()).unwrap();
        }
        for h in held {
            h.await.unwrap();
        }
    }
}
