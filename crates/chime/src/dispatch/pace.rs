//! An endpoint's rate limit as pacing: attempts start at least `1 / rate` apart, so a limit of
//! N per second holds in every one-second window, the first included. (A token bucket that
//! starts full lets a burst of N through and then refills: nearly 2N in the first second.)
//! Pure: the caller passes the clock.

use std::time::{Duration, Instant};

/// When the next attempt of one endpoint may start.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pace {
    next: Option<Instant>,
}

impl Pace {
    /// Takes a start at `now` if the pace allows one (`Ok`), or says how long to wait. An idle
    /// endpoint does not bank starts: after a pause the next one is spaced from `now`.
    pub fn try_start(&mut self, per_s: f64, now: Instant) -> Result<(), Duration> {
        if let Some(next) = self.next
            && now < next
        {
            return Err(next - now);
        }
        self.next = Some(now + interval(per_s));
        Ok(())
    }
}

/// The spacing of `per_s` starts a second (a limit shared among nodes can be fractional).
fn interval(per_s: f64) -> Duration {
    Duration::from_secs_f64(1.0 / per_s.max(1e-3))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts in `[0, span)` when an attempt is tried every millisecond.
    fn starts_within(per_s: f64, span: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        let mut starts = Vec::new();
        let mut at = Duration::ZERO;
        while at < span {
            if pace.try_start(per_s, t0 + at).is_ok() {
                starts.push(at);
            }
            at += Duration::from_millis(1);
        }
        starts
    }

    #[test]
    fn a_limit_holds_in_every_one_second_window_the_first_included() {
        for rate in [1.0, 5.0, 20.0, 250.0] {
            let starts = starts_within(rate, Duration::from_secs(3));
            for (i, from) in starts.iter().enumerate() {
                let in_window = starts[i..]
                    .iter()
                    .take_while(|t| **t < *from + Duration::from_secs(1))
                    .count();
                assert!(
                    in_window as f64 <= rate,
                    "{rate}/s: {in_window} from {from:?}"
                );
            }
            let first = starts
                .iter()
                .filter(|t| **t < Duration::from_secs(1))
                .count();
            assert_eq!(
                first as f64,
                rate.ceil().min(rate),
                "{rate}/s in the first second"
            );
        }
    }

    #[test]
    fn a_refusal_says_how_long_to_wait_and_idle_time_is_not_banked() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        assert!(pace.try_start(5.0, t0).is_ok());
        assert_eq!(
            pace.try_start(5.0, t0 + Duration::from_millis(50)),
            Err(Duration::from_millis(150))
        );
        // After ten idle seconds, one start, then the spacing again: no burst.
        let later = t0 + Duration::from_secs(10);
        assert!(pace.try_start(5.0, later).is_ok());
        assert!(
            pace.try_start(5.0, later + Duration::from_millis(1))
                .is_err()
        );
    }
}
