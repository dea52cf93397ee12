//! Retention: a background task that removes old event payloads, then old events, in small
//! batches so the writer is never held for long.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{Millis, millis_of, now_millis};
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
    /// Payloads of events created before this are purged, at `now`. Events past
    /// `event_retention` are event retention's to remove: a store that partitions by time
    /// keeps such an event until its whole partition is old enough to drop, at most one
    /// partition interval later, and purging its payload meanwhile would rewrite its row (an
    /// UPDATE per event, so with payloads kept as long as events, nearly every event's row
    /// written once more just before it goes). So a payload that is past its own retention
    /// only because it is past its event's is left to go with its event, unless the event
    /// has outstayed its partition's interval too (its partition kept for a pending
    /// delivery: the payloads beside it are purged then). On a store that deletes events row
    /// by row, nothing is left past `event_retention` but events with a pending delivery,
    /// whose payloads are never purged: the rule changes nothing there.
    pub fn payload_cutoff(&self, now: Millis) -> Millis {
        let payloads = now.saturating_sub(millis_of(self.payloads));
        let events = now.saturating_sub(millis_of(self.events));
        if payloads > events {
            // Payloads go before their events: every one past its retention is purged
            // (those about to go with their event were purged long ago).
            payloads
        } else {
            payloads.min(events.saturating_sub(millis_of(self.partition)))
        }
    }

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
    let interval = millis_of(policy.partition);
    let ahead = millis_of(policy.partitions_ahead());
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
    let payload_cutoff = policy.payload_cutoff(now);
    let event_cutoff = now.saturating_sub(millis_of(policy.events));
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const NOW: Millis = 1_000_000_000;

    fn policy(payloads: u64, events: u64, partition: u64) -> Policy {
        Policy {
            payloads: S * payloads as u32,
            events: S * events as u32,
            every: S * 10,
            partition: S * partition as u32,
        }
    }

    #[test]
    fn payloads_shorter_than_events_are_purged_at_their_own_age() {
        assert_eq!(policy(30, 90, 20).payload_cutoff(NOW), NOW - 30_000);
    }

    #[test]
    fn payloads_as_long_as_events_go_with_them() {
        // Past event retention by less than a partition: left to the partition's drop.
        assert_eq!(policy(120, 120, 30).payload_cutoff(NOW), NOW - 150_000);
    }

    #[test]
    fn payloads_longer_than_events_wait_for_the_later_of_both() {
        assert_eq!(policy(200, 120, 30).payload_cutoff(NOW), NOW - 200_000);
        assert_eq!(policy(130, 120, 30).payload_cutoff(NOW), NOW - 150_000);
    }

    #[test]
    fn durations_past_the_clock_do_not_overflow() {
        let p = Policy {
            payloads: Duration::MAX,
            events: Duration::MAX,
            every: S,
            partition: Duration::MAX,
        };
        assert!(p.payload_cutoff(NOW) < 0);
    }
}
