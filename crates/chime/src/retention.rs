//! Retention: a background task that removes old event payloads, then old events, in small
//! batches so the writer is never held for long.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::now_millis;
use crate::store::Retention;

/// Rows touched per statement: small, so publishing never waits long behind retention.
const BATCH: u32 = 500;
/// Batches of each kind in one pass: 100,000 rows, then the pass ends and the next goes on.
const MAX_BATCHES: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Payloads older than this are removed.
    pub payloads: Duration,
    /// Events older than this are deleted.
    pub events: Duration,
    /// How often to run.
    pub every: Duration,
    /// The time range of one partition, where the store is partitioned (PostgreSQL).
    pub partition: Duration,
}

impl Policy {
    /// How far ahead of now partitions are made: past the next two passes and two partition
    /// intervals, so an event never has to wait for its partition.
    pub fn partitions_ahead(&self) -> Duration {
        self.every * 2 + self.partition * 2
    }
}

/// Makes the partitions from now to `Policy::partitions_ahead` (a store that is not
/// partitioned has nothing to do). Returns how many it made.
pub async fn prepare(store: &dyn Retention, policy: Policy) -> crate::store::Result<u32> {
    let now = now_millis();
    let interval = policy.partition.as_millis() as i64;
    let ahead = policy.partitions_ahead().as_millis() as i64;
    store.ensure_partitions(now, now + ahead, interval).await
}

/// One pass: partitions made ahead, then old events deleted, then old payloads purged, each
/// until nothing old is left or `MAX_BATCHES` batches (the next pass goes on), so that a pass
/// always ends and the next one makes the partitions that new events need, however fast
/// they arrive. Events before payloads: a payload is not purged from an event about to go.
/// Returns (payloads purged, events deleted).
pub async fn pass(store: &dyn Retention, policy: Policy) -> crate::store::Result<(u64, u64)> {
    prepare(store, policy).await?;
    let now = now_millis();
    let payload_cutoff = now - policy.payloads.as_millis() as i64;
    let event_cutoff = now - policy.events.as_millis() as i64;
    let mut deleted = 0;
    for _ in 0..MAX_BATCHES {
        let n = store.purge_events(event_cutoff, BATCH).await?;
        deleted += n;
        if n < BATCH as u64 {
            break;
        }
    }
    let mut purged = 0;
    for _ in 0..MAX_BATCHES {
        let n = store.purge_payloads(payload_cutoff, now, BATCH).await?;
        purged += n;
        if n < BATCH as u64 {
            break;
        }
    }
    for prefix in crate::ui::session::EXPIRING_META {
        store.purge_expired_meta(prefix, now).await?;
    }
    Ok((purged, deleted))
}

/// Runs `pass` every `policy.every` until `stop`.
pub async fn run(
    store: Arc<dyn Retention>,
    policy: Policy,
    metrics: Arc<crate::metrics::Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(policy.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pass(store.as_ref(), policy).await {
            Ok((0, 0)) => {}
            Ok((purged, deleted)) => {
                metrics.retention(purged, deleted);
                tracing::info!(purged, deleted, "retention removed old payloads and events")
            }
            Err(e) => tracing::error!(error = %e, "retention pass failed; trying again later"),
        }
    }
}
