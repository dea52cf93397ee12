//! An endpoint's circuit breaker, pure: failures in a row open it (`limits::opens_circuit`),
//! while it is open one probe attempt is made per interval, and a success closes it. The
//! actor applies what it decides (timers, releasing queued work, operational events).

use super::limits;
use crate::model::Millis;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    failures: u32,
    /// Of `failures`, those that ran to the request timeout, in a row.
    timeouts: u32,
    /// Set while open: the earliest next probe.
    probe_at: Option<Millis>,
}

/// What a failed attempt did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Still closed: the failure was counted.
    Counted,
    /// This failure opened it; the first probe is due at the time given.
    Opened(Millis),
    /// A probe failed; the next one is due at the time given.
    ProbeFailed(Millis),
}

/// Whether an attempt may start now, with the circuit in its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MayStart {
    Yes,
    /// Open, and this start is the probe: the next one is not before `probe` from now.
    AsProbe,
    /// Open, and the probe is not due (or one is running): ask again at this time.
    At(Millis),
}

impl Circuit {
    pub fn is_open(&self) -> bool {
        self.probe_at.is_some()
    }

    /// The next probe's time while open.
    pub fn probe_at(&self) -> Option<Millis> {
        self.probe_at
    }

    /// A success closes the circuit; true when it was open.
    pub fn succeeded(&mut self) -> bool {
        let was_open = self.is_open();
        *self = Self::default();
        was_open
    }

    /// A failed attempt at `now`, which `timed_out` or not; `threshold` failures in a row
    /// open the circuit, and an open circuit is probed every `probe` ms.
    pub fn failed(
        &mut self,
        timed_out: bool,
        now: Millis,
        threshold: u32,
        probe: i64,
    ) -> AfterFailure {
        self.failures += 1;
        self.timeouts = if timed_out { self.timeouts + 1 } else { 0 };
        if self.probe_at.is_some() {
            self.probe_at = Some(now + probe);
            AfterFailure::ProbeFailed(now + probe)
        } else if limits::opens_circuit(self.failures, self.timeouts, threshold) {
            self.probe_at = Some(now + probe);
            AfterFailure::Opened(now + probe)
        } else {
            AfterFailure::Counted
        }
    }

    /// Another node found the endpoint failing: probe here too, at once, unless this node
    /// already has failures of its own to go by.
    pub fn adopt_open(&mut self, now: Millis) {
        if self.probe_at.is_none() && self.failures == 0 {
            self.probe_at = Some(now);
        }
    }

    /// Whether an attempt may start at `now` with `in_flight` attempts running; a probe
    /// pushes the next one `probe` ms later.
    pub fn may_start(&mut self, now: Millis, in_flight: u32, probe: i64) -> MayStart {
        match self.probe_at {
            None => MayStart::Yes,
            Some(at) if now < at || in_flight > 0 => MayStart::At(at.max(now)),
            Some(_) => {
                self.probe_at = Some(now + probe);
                MayStart::AsProbe
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_open_it_probes_keep_it_open_a_success_closes_it() {
        let mut c = Circuit::default();
        assert_eq!(c.failed(false, 0, 3, 100), AfterFailure::Counted);
        assert_eq!(c.failed(false, 1, 3, 100), AfterFailure::Counted);
        assert_eq!(c.failed(false, 2, 3, 100), AfterFailure::Opened(102));
        assert!(c.is_open());
        // Not before the probe time, and never beside a running attempt.
        assert_eq!(c.may_start(50, 0, 100), MayStart::At(102));
        assert_eq!(c.may_start(102, 1, 100), MayStart::At(102));
        assert_eq!(c.may_start(102, 0, 100), MayStart::AsProbe);
        assert_eq!(c.probe_at(), Some(202));
        assert_eq!(c.failed(false, 150, 3, 100), AfterFailure::ProbeFailed(250));
        assert!(c.succeeded());
        assert!(!c.is_open());
        assert_eq!(c.may_start(0, 5, 100), MayStart::Yes);
        assert!(!c.succeeded(), "closing a closed circuit changes nothing");
    }

    #[test]
    fn timeouts_open_it_sooner_and_another_failure_breaks_their_run() {
        let mut c = Circuit::default();
        assert_eq!(c.failed(true, 0, 10, 100), AfterFailure::Counted);
        assert_eq!(c.failed(false, 0, 10, 100), AfterFailure::Counted);
        assert_eq!(c.failed(true, 0, 10, 100), AfterFailure::Counted);
        assert_eq!(c.failed(true, 0, 10, 100), AfterFailure::Counted);
        assert_eq!(c.failed(true, 7, 10, 100), AfterFailure::Opened(107));
    }

    #[test]
    fn another_nodes_verdict_is_adopted_only_without_failures_of_our_own() {
        let mut c = Circuit::default();
        c.adopt_open(5);
        assert_eq!(c.probe_at(), Some(5));
        let mut counted = Circuit::default();
        counted.failed(false, 0, 10, 100);
        counted.adopt_open(5);
        assert!(!counted.is_open());
    }
}
