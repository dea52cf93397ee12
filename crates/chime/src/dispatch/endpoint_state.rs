//! What the dispatcher knows of one endpoint, and the pure rules about it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::circuit::Circuit;
use super::http::Target;
use super::pace::Pace;
use crate::model::{Millis, now_millis};
use crate::store::{Endpoint, Job};

/// In-memory state of one endpoint.
#[derive(Default)]
pub(super) struct EndpointState {
    pub(super) target: Option<Arc<Target>>,
    /// The row `target` was derived from on the publish path (see `Msg::Submit`).
    pub(super) row: Option<Arc<Endpoint>>,
    /// Leased jobs waiting for a slot, oldest first.
    pub(super) queue: VecDeque<Job>,
    pub(super) in_flight: u32,
    /// Earliest due time of deliveries of this endpoint left in the store, if any.
    pub(super) stored_due: Option<Millis>,
    pub(super) claiming: bool,
    /// Due times learned while a claim was running: the claim's own answer may predate them.
    pub(super) due_while_claiming: Option<Millis>,
    pub(super) loading: bool,
    pub(super) in_ready: bool,
    /// Open while the endpoint is failing: then only probes.
    pub(super) circuit: Circuit,
    /// Rate limit: when the next attempt may start.
    pub(super) pace: Pace,
    /// Published in `Dispatcher::admission`: new deliveries should wait in the store.
    pub(super) saturated: bool,
}

impl EndpointState {
    /// Whether a newly published job may wait in this endpoint's memory queue: work already
    /// due in the store goes first, the queue stays within `bound`, and a failing or disabled
    /// endpoint takes no new work in memory. (Publishing learns the answer through
    /// `Dispatcher::update_admission`; `accept_submitted` applies it to what still arrives.)
    pub(super) fn has_room(&self, bound: usize, now: Millis) -> bool {
        let older_due = self.stored_due.is_some_and(|d| d <= now);
        let blocked = self.circuit.is_open() || self.target.as_ref().is_some_and(|t| !t.enabled);
        let held = self.queue.len() + self.in_flight as usize;
        !older_due && !blocked && held < bound
    }
}

/// An endpoint's concurrency cap shared out among the nodes serving it (at least 1 each), so
/// that with several nodes the receiver still sees about its configured cap.
pub(super) fn share(cap: u32, nodes: u32) -> u32 {
    (cap / nodes.max(1)).max(1)
}

/// Jobs one node holds in memory for an endpoint (queued plus in flight). Alone, eight times
/// the cap: enough to keep its slots busy between claims. With other nodes, twice this node's
/// share: whatever it accepted beyond that stays in the store, where any node with a free
/// slot claims it, so the endpoint's whole cap is used whichever node accepted the work.
pub(super) fn hold_bound(cap: u32, nodes: u32) -> usize {
    if nodes <= 1 {
        cap as usize * 8
    } else {
        share(cap, nodes) as usize * 2
    }
}

/// The store says another node found this endpoint failing: probe it here too rather than
/// deliver at full rate. (Only fresh reads are trusted for this; closing the circuit again
/// takes a successful probe of this node's own.)
pub(super) fn adopt_failing(ep: &mut EndpointState, target: Option<&Target>) {
    if let Some(t) = target
        && t.enabled
        && t.failing_since.is_some()
    {
        ep.circuit.adopt_open(now_millis());
    }
}

#[cfg(test)]
mod tests {
    use super::{hold_bound, share};

    #[test]
    fn caps_are_shared_out_among_nodes() {
        assert_eq!(share(8, 1), 8);
        assert_eq!(share(8, 2), 4);
        assert_eq!(share(8, 3), 2);
        assert_eq!(share(1, 4), 1, "every node may still make progress");
        assert_eq!(share(8, 0), 8);
    }

    #[test]
    fn with_other_nodes_a_node_holds_little_beyond_its_share() {
        assert_eq!(hold_bound(8, 1), 64);
        assert_eq!(hold_bound(8, 0), 64);
        // Two nodes: four in flight and four waiting here; the rest is for the other node.
        assert_eq!(hold_bound(8, 2), 8);
        assert_eq!(hold_bound(8, 3), 4);
        assert_eq!(
            hold_bound(1, 3),
            2,
            "every node may still hold one and the next"
        );
    }
}
