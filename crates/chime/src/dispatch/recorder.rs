//! The recorder: finished attempts are recorded in batches (every outcome that arrives while
//! one batch is written goes into the next, as one store call), then their follow-ups (retry
//! timers, the next ordered claim, `chime.delivery.exhausted`) go back to the actor.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::Msg;
use super::emitter::Emitter;
use crate::metrics::{Commit, Finished, Metrics};
use crate::model::{Millis, SYSTEM_TENANT, now_millis};
use crate::store::{DeliveryStatus, Queue};

/// What follows once an attempt's record is committed.
pub(super) struct AfterRecord {
    pub(super) endpoint: Arc<str>,
    pub(super) delivery_id: crate::model::DeliveryId,
    pub(super) tenant_id: String,
    pub(super) retry_at: Option<Millis>,
    pub(super) ordered: bool,
    /// The `chime.delivery.exhausted` event's data, when the schedule is used up.
    pub(super) exhausted: Option<serde_json::Value>,
}

pub(super) type RecordRequest = (
    crate::store::Outcome,
    AfterRecord,
    tokio::sync::oneshot::Sender<()>,
    // Held until the attempt is recorded (see `MAX_UNRECORDED`).
    OwnedSemaphorePermit,
);

/// Attempts finished or running but not yet recorded. Past this the dispatcher starts no new
/// attempt until records catch up: HTTP can run far ahead of the store's writes, and every
/// unrecorded outcome is memory (and, if the store falls behind for long, leases that
/// expire). Measured: without the bound, a full-size fanout grew the server to 3.9 GB while
/// its writer fell behind.
pub(super) const MAX_UNRECORDED: usize = 4096;

/// Records finished attempts in batches: every outcome that arrives while one batch is being
/// written goes into the next, as one store call (one writer job, one statement loop) instead
/// of one call each.
pub(super) fn spawn(
    store: Arc<dyn Queue>,
    tx: mpsc::UnboundedSender<Msg>,
    emitter: Emitter,
    metrics: Arc<Metrics>,
) -> mpsc::UnboundedSender<RecordRequest> {
    let (requests, mut rx) = mpsc::unbounded_channel::<RecordRequest>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = crate::batch::gather(first, 512, |_| 1, || rx.try_recv().ok());
            let (outcomes, rest): (Vec<_>, Vec<_>) = batch
                .drain(..)
                .map(|(o, a, d, p)| {
                    let finished = match o.status {
                        DeliveryStatus::Succeeded => Some(Finished::Succeeded),
                        DeliveryStatus::Failed => Some(Finished::Failed),
                        _ => None,
                    };
                    (o, (a, d, p, finished))
                })
                .unzip();
            let started = std::time::Instant::now();
            let applied = record_with_retries(store.as_ref(), outcomes).await;
            metrics.commit(Commit::Record, started.elapsed());
            for ((after, done, _permit, finished), ok) in rest.into_iter().zip(applied) {
                if ok {
                    if let Some(how) = finished {
                        metrics.delivery_finished(how);
                    }
                    follow_up(&tx, &emitter, after);
                } else {
                    tracing::info!(delivery = %after.delivery_id, "attempt not recorded: the delivery's lease was lost, it was removed, or the store failed");
                }
                let _ = done.send(());
            }
            // The batch's permits are released: the dispatcher may start attempts again.
            let _ = tx.send(Msg::Recorded);
        }
    });
    requests
}

/// Records a batch, retrying a failing store a few times: a record that is given up leaves
/// its deliveries to be sent again when their leases expire (a duplicate the receiver sees),
/// so a passing database hiccup is better waited out here.
async fn record_with_retries(store: &dyn Queue, outcomes: Vec<crate::store::Outcome>) -> Vec<bool> {
    let count = outcomes.len();
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match store.record(outcomes.clone()).await {
            Ok(applied) => return applied,
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, count, attempt, "recording attempts failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, count, "could not record attempts; those deliveries will be sent again when their leases expire");
            }
        }
    }
    vec![false; count]
}

fn follow_up(tx: &mpsc::UnboundedSender<Msg>, emitter: &Emitter, after: AfterRecord) {
    if let Some(at) = after.retry_at {
        let _ = tx.send(Msg::Due(after.endpoint.clone(), at));
    }
    if after.ordered {
        // The head moved on (or is scheduled): the next claim may proceed.
        let _ = tx.send(Msg::Due(after.endpoint.clone(), now_millis()));
    }
    if let Some(data) = after.exhausted {
        tracing::warn!(delivery = %after.delivery_id, endpoint = %after.endpoint, "delivery failed: retries exhausted");
        // The system tenant's own failures are not announced again (no loops).
        if after.tenant_id != SYSTEM_TENANT {
            emitter.emit("chime.delivery.exhausted", data);
        }
    }
}
