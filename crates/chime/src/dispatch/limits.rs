//! The dispatcher's limits as pure rules: when an endpoint's circuit opens, and when a tenant
//! may start another attempt. Kept apart from the actor so they can be read and tested alone.

/// Attempts in a row that ran to the request timeout after which an endpoint is failing,
/// whatever `failure_threshold` says: each held an attempt slot for the whole timeout, so a
/// receiver that accepts and never answers costs the most of any failure, and should cost it
/// only a few times before it is merely probed.
pub const TIMEOUTS_TO_OPEN: u32 = 3;

/// Whether an endpoint with these consecutive failures (of which `timeouts` ran to the
/// request timeout, in a row) becomes failing (circuit open).
pub fn opens_circuit(failures: u32, timeouts: u32, threshold: u32) -> bool {
    failures >= threshold || timeouts >= TIMEOUTS_TO_OPEN.min(threshold)
}

/// Whether a tenant holding `held` attempts in flight may start another, under a cap of
/// `cap` for all its endpoints together. Without it one tenant's hung receivers could hold
/// every slot of `max_in_flight` until their timeouts, and every other tenant would wait.
pub fn tenant_may_start(held: usize, cap: usize) -> bool {
    held < cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_open_the_circuit_sooner_than_other_failures() {
        assert!(!opens_circuit(2, 2, 10));
        assert!(opens_circuit(3, 3, 10));
        assert!(
            !opens_circuit(9, 2, 10),
            "other failures count to the threshold"
        );
        assert!(opens_circuit(10, 0, 10));
        // A threshold lower than the timeout rule wins.
        assert!(opens_circuit(1, 1, 1));
        assert!(opens_circuit(2, 0, 2));
    }

    #[test]
    fn a_tenant_starts_attempts_up_to_its_cap() {
        assert!(tenant_may_start(0, 1));
        assert!(tenant_may_start(255, 256));
        assert!(!tenant_may_start(256, 256));
    }
}
