//! Retry timing: a pure function of the schedule, the attempt count and a random draw.

use std::time::Duration;

/// Parses a schedule such as `5s,5m,30m,2h,5h,10h,10h` (or `10ms,20ms` in tests).
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let steps: Vec<Duration> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| humantime::parse_duration(p).map_err(|e| format!("retry step {p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    if steps.len() > 50 {
        return Err("a retry schedule may have at most 50 steps".into());
    }
    Ok(steps)
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again after this delay.
    RetryIn(Duration),
    /// The schedule is used up: the delivery fails (the dead-letter list).
    GiveUp,
}

/// After the `failed_in_cycle`-th consecutive failed attempt (1-based) of a delivery, when is
/// the next one? `jitter` in `[-1, 1]` spreads retries by ±20% so that many deliveries failing
/// together do not come back together.
pub fn next_step(schedule: &[Duration], failed_in_cycle: u32, jitter: f64) -> NextStep {
    let Some(base) = schedule.get(failed_in_cycle.saturating_sub(1) as usize) else {
        return NextStep::GiveUp;
    };
    let factor = 1.0 + 0.2 * jitter.clamp(-1.0, 1.0);
    NextStep::RetryIn(base.mul_f64(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_parses() {
        let s = parse_schedule("5s,5m,30m,2h,5h,10h,10h").unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s[0], Duration::from_secs(5));
        assert_eq!(s[6], Duration::from_secs(36_000));
        assert_eq!(
            parse_schedule("10ms, 20ms").unwrap()[1],
            Duration::from_millis(20)
        );
        assert!(parse_schedule("5x").is_err());
        assert!(parse_schedule("").unwrap().is_empty());
    }

    #[test]
    fn steps_follow_schedule_with_bounded_jitter() {
        let s = [Duration::from_secs(10), Duration::from_secs(100)];
        assert_eq!(
            next_step(&s, 1, 0.0),
            NextStep::RetryIn(Duration::from_secs(10))
        );
        assert_eq!(
            next_step(&s, 2, 1.0),
            NextStep::RetryIn(Duration::from_secs(120))
        );
        assert_eq!(
            next_step(&s, 2, -1.0),
            NextStep::RetryIn(Duration::from_secs(80))
        );
        assert_eq!(
            next_step(&s, 2, 7.0),
            NextStep::RetryIn(Duration::from_secs(120))
        );
        assert_eq!(next_step(&s, 3, 0.0), NextStep::GiveUp);
        assert_eq!(next_step(&[], 1, 0.0), NextStep::GiveUp);
    }
}
