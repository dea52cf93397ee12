//! From an HTTP result to a delivery's next state: a pure function, so retry behaviour is
//! tested without a network.

use std::time::Duration;

use crate::dispatch::http::{ErrorKind, HttpResult};
use crate::retry::{NextStep, next_step};
use crate::store::{Attempt, DeliveryStatus, Job, Outcome};

/// The attempt row and the delivery's new state for one finished try. A `Retry-After` from
/// the receiver (429/503) lengthens the wait, up to `max_retry_after`, but never shortens what
/// the schedule says.
pub fn outcome_of(
    job: &Job,
    res: HttpResult,
    schedule: &[Duration],
    jitter: f64,
    max_retry_after: Duration,
) -> Outcome {
    let duration_ms = res.duration.as_millis().min(u32::MAX as u128) as u32;
    let finished_at = res.started_at_ms + duration_ms as i64;
    let succeeded = res.error_kind.is_none();
    let (status, next_attempt_at, cycle_failures) = if succeeded {
        (DeliveryStatus::Succeeded, None, job.cycle_failures)
    } else if res.error_kind == Some(ErrorKind::Cancelled) {
        (DeliveryStatus::Skipped, None, job.cycle_failures)
    } else {
        let failures = job.cycle_failures + 1;
        match next_step(schedule, failures, jitter) {
            NextStep::RetryIn(delay) => {
                let asked = res
                    .retry_after
                    .map_or(Duration::ZERO, |a| a.min(max_retry_after));
                let delay = delay.max(asked);
                (
                    DeliveryStatus::Pending,
                    Some(finished_at + delay.as_millis() as i64),
                    failures,
                )
            }
            NextStep::GiveUp => (DeliveryStatus::Failed, None, failures),
        }
    };
    Outcome {
        delivery_id: job.delivery_id.clone(),
        lease_token: job.lease_token,
        row: job.row,
        attempt: Attempt {
            id: crate::model::AttemptId::new(),
            delivery_id: job.delivery_id.clone(),
            started_at: res.started_at_ms,
            duration_ms,
            status_code: res.status,
            error_kind: res.error_kind.map(|k| k.as_str().to_owned()),
            error: res.error,
            response: res.response,
            succeeded,
        },
        status,
        next_attempt_at,
        cycle_failures,
        transformed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cycle_failures: u32) -> Job {
        Job {
            delivery_id: crate::model::DeliveryId::from_stored("dlv_1"),
            event_id: crate::model::EventId::from_stored("evt_1"),
            tenant_id: "t".into(),
            endpoint_id: crate::model::EndpointId::from_stored("ep_1"),
            body: bytes::Bytes::from_static(b"{}"),
            cycle_failures,
            lease_token: 7,
            row: None,
            unattempted_since: None,
            traceparent: None,
            inbound: None,
            transformed: None,
            held_since: None,
        }
    }

    fn result(status: Option<u16>, kind: Option<ErrorKind>) -> HttpResult {
        HttpResult {
            started_at_ms: 1_000,
            duration: Duration::from_millis(50),
            status,
            error_kind: kind,
            error: None,
            response: None,
            retry_after: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn success_finishes_the_delivery() {
        let o = outcome_of(
            &job(2),
            result(Some(200), None),
            &[Duration::from_secs(1)],
            0.0,
            HOUR,
        );
        assert_eq!(o.status, DeliveryStatus::Succeeded);
        assert_eq!(o.next_attempt_at, None);
        assert!(o.attempt.succeeded);
        assert_eq!(o.lease_token, 7);
    }

    #[test]
    fn failure_schedules_from_the_end_of_the_attempt() {
        let sched = [Duration::from_secs(10), Duration::from_secs(20)];
        let o = outcome_of(
            &job(0),
            result(Some(500), Some(ErrorKind::Status)),
            &sched,
            0.0,
            HOUR,
        );
        assert_eq!(o.status, DeliveryStatus::Pending);
        assert_eq!(o.next_attempt_at, Some(1_050 + 10_000));
        assert_eq!(o.cycle_failures, 1);
        assert_eq!(o.attempt.error_kind.as_deref(), Some("status"));
        let o = outcome_of(
            &job(1),
            result(None, Some(ErrorKind::Timeout)),
            &sched,
            0.0,
            HOUR,
        );
        assert_eq!(o.next_attempt_at, Some(1_050 + 20_000));
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_the_wait() {
        let sched = [Duration::from_secs(10)];
        let mut r = result(Some(429), Some(ErrorKind::Status));
        r.retry_after = Some(Duration::from_secs(60));
        let o = outcome_of(&job(0), r.clone(), &sched, 0.0, HOUR);
        assert_eq!(o.next_attempt_at, Some(1_050 + 60_000));
        r.retry_after = Some(Duration::from_secs(2));
        let o = outcome_of(&job(0), r.clone(), &sched, 0.0, HOUR);
        assert_eq!(
            o.next_attempt_at,
            Some(1_050 + 10_000),
            "never less than the schedule"
        );
        r.retry_after = Some(Duration::from_secs(86_400));
        let o = outcome_of(&job(0), r, &sched, 0.0, HOUR);
        assert_eq!(o.next_attempt_at, Some(1_050 + 3_600_000), "capped");
    }

    #[test]
    fn exhausted_schedule_fails() {
        let o = outcome_of(
            &job(2),
            result(Some(503), Some(ErrorKind::Status)),
            &[Duration::ZERO; 2],
            0.0,
            HOUR,
        );
        assert_eq!(o.status, DeliveryStatus::Failed);
        assert_eq!(o.next_attempt_at, None);
        assert_eq!(o.cycle_failures, 3);
    }
}
