//! The store's behaviour, specified once and run against every backend.
//!
//! Each case is a function over `Arc<dyn Store>`; `conformance!` instantiates all of them for a
//! backend. A new backend passes when its instantiation does.

use std::sync::Arc;

use bytes::Bytes;
use chime::model::Millis;
use chime::store::*;

pub(crate) fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: Some(format!("{id} inc")),
        created_at: 1_000,
        branding: None,
    }
}

pub(crate) fn endpoint(tenant_id: &str, events: &[&str], enabled: bool) -> Endpoint {
    Endpoint {
        id: chime::model::EndpointId::new(),
        tenant_id: tenant_id.into(),
        url: "https://example.com/hook".into(),
        events: chime::model::Subscription::parse(
            &events.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap(),
        description: String::new(),
        enabled,
        secret: chime_webhooks::Secret::generate().to_whsec(),
        previous_secret: None,
        previous_secret_expires_at: None,
        settings: EndpointSettings::default(),
        disabled_reason: None,
        failing_since: None,
        created_at: 1_000,
        updated_at: 1_000,
    }
}

pub(crate) fn event(tenant_id: &str, name: &str, key: Option<&str>, at: Millis) -> NewEvent {
    NewEvent {
        id: chime::model::EventId::new(),
        tenant_id: tenant_id.into(),
        name: name.into(),
        payload: Bytes::from(format!(r#"{{"event":"{name}","data":{{}}}}"#)),
        idempotency_key: key.map(str::to_owned),
        created_at: at,
        filters: Default::default(),
        traceparent: None,
        only_endpoint: None,
        inbound: None,
    }
}

/// Leases run on the store's clock: 0 ms is already expired, `HELD` outlives any test.
const EXPIRED: u64 = 0;
pub(crate) const HELD: u64 = 3_600_000;

pub(crate) fn lease(owner: &str, token: i64, duration_ms: u64) -> Lease {
    Lease {
        owner: Arc::from(owner),
        token,
        duration: std::time::Duration::from_millis(duration_ms),
        admission: None,
    }
}

fn page(limit: u32) -> Page {
    Page {
        limit,
        cursor: None,
    }
}

/// Tenant "a" with one endpoint for every event, and one event (`x`, at 100) published to it
/// under `l`: the endpoint, and the job of its one delivery.
async fn one_delivery(s: &Arc<dyn Store>, l: Lease) -> (Endpoint, Job) {
    s.create_tenant(tenant("a")).await.unwrap();
    let e = endpoint("a", &["*"], true);
    s.create_endpoint(e.clone()).await.unwrap();
    let p = s.publish(event("a", "x", None, 100), l).await.unwrap();
    (e, p.jobs[0].clone())
}

pub(crate) fn outcome(job: &Job, ok: bool, next: Option<Millis>, at: Millis) -> Outcome {
    Outcome {
        delivery_id: job.delivery_id.clone(),
        lease_token: job.lease_token,
        row: job.row,
        attempt: Attempt {
            id: chime::model::AttemptId::new(),
            delivery_id: job.delivery_id.clone(),
            started_at: at,
            duration_ms: 5,
            status_code: Some(if ok { 200 } else { 500 }),
            error_kind: (!ok).then(|| "status".into()),
            error: None,
            response: Some("r".into()),
            succeeded: ok,
        },
        status: if ok {
            DeliveryStatus::Succeeded
        } else if next.is_some() {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Failed
        },
        next_attempt_at: next,
        cycle_failures: if ok {
            job.cycle_failures
        } else {
            job.cycle_failures + 1
        },
        transformed: None,
    }
}

pub async fn tenants_are_created_listed_and_deleted(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_tenant(tenant("b")).await.unwrap();
    s.create_tenant(tenant("c")).await.unwrap();
    assert!(matches!(
        s.create_tenant(tenant("a")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_tenant("a").await.unwrap(), Some(tenant("a")));
    assert_eq!(s.get_tenant("zz").await.unwrap(), None);
    let first = s.list_tenants(page(2)).await.unwrap();
    let ids: Vec<_> = first.rows.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["c", "b"]);
    let rest = s
        .list_tenants(Page {
            limit: 2,
            cursor: first.next_cursor,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.rows.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(rest.next_cursor, None);
    s.delete_tenant("b").await.unwrap();
    assert!(matches!(
        s.delete_tenant("b").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.list_tenants(page(10)).await.unwrap().rows.len(), 2);
    // Name and branding change; an empty branding is stored as none.
    let mut a = tenant("a");
    a.name = Some("Acme".into());
    a.branding = Some(chime::model::Branding {
        name: Some("Acme Hooks".into()),
        logo_url: None,
        accent: Some("#0a0".into()),
    });
    s.update_tenant(&a).await.unwrap();
    assert_eq!(s.get_tenant("a").await.unwrap(), Some(a.clone()));
    a.branding = Some(Default::default());
    s.update_tenant(&a).await.unwrap();
    assert_eq!(s.get_tenant("a").await.unwrap().unwrap().branding, None);
    assert!(matches!(
        s.update_tenant(&tenant("b")).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn tokens_resolve_to_scopes_and_die_with_their_tenant(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_token("h-admin", TokenScope::Admin, 1)
        .await
        .unwrap();
    s.create_token("h-a", TokenScope::Tenant("a".into()), 1)
        .await
        .unwrap();
    assert!(matches!(
        s.create_token("h-x", TokenScope::Tenant("nope".into()), 1)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        s.find_token("h-admin").await.unwrap(),
        Some(TokenScope::Admin)
    );
    assert_eq!(
        s.find_token("h-a").await.unwrap(),
        Some(TokenScope::Tenant("a".into()))
    );
    assert_eq!(s.find_token("h-none").await.unwrap(), None);
    s.create_token("h-m", TokenScope::Metrics, 1).await.unwrap();
    assert_eq!(
        s.find_token("h-m").await.unwrap(),
        Some(TokenScope::Metrics)
    );
    s.delete_tenant("a").await.unwrap();
    assert_eq!(s.find_token("h-a").await.unwrap(), None);
    // A tenant created again with the same id is a new tenant: the old token stays dead.
    s.create_tenant(tenant("a")).await.unwrap();
    assert_eq!(s.find_token("h-a").await.unwrap(), None);
    assert!(s.put_meta_if_absent("k", "v1").await.unwrap());
    assert!(!s.put_meta_if_absent("k", "v2").await.unwrap());
    assert_eq!(s.get_meta("k").await.unwrap().as_deref(), Some("v1"));
}

pub async fn endpoints_are_scoped_to_their_tenant(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_tenant(tenant("b")).await.unwrap();
    assert!(matches!(
        s.create_endpoint(endpoint("nope", &["*"], true)).await,
        Err(StoreError::NotFound)
    ));
    let mut e = endpoint("a", &["order.*"], true);
    s.create_endpoint(e.clone()).await.unwrap();
    assert_eq!(s.get_endpoint("a", &e.id).await.unwrap(), Some(e.clone()));
    assert_eq!(s.get_endpoint("b", &e.id).await.unwrap(), None);
    assert_eq!(s.get_endpoint_by_id(&e.id).await.unwrap(), Some(e.clone()));
    e.url = "https://example.org/x".into();
    e.enabled = false;
    e.previous_secret = Some(e.secret.clone());
    e.previous_secret_expires_at = Some(99);
    s.update_endpoint(e.clone()).await.unwrap();
    assert_eq!(s.get_endpoint("a", &e.id).await.unwrap(), Some(e.clone()));
    let mut other = e.clone();
    other.tenant_id = "b".into();
    assert!(matches!(
        s.update_endpoint(other).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.list_endpoints("a", page(10)).await.unwrap().rows.len(), 1);
    assert!(
        s.list_endpoints("b", page(10))
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    assert!(matches!(
        s.delete_endpoint("b", &e.id).await,
        Err(StoreError::NotFound)
    ));
    s.delete_endpoint("a", &e.id).await.unwrap();
    assert_eq!(s.get_endpoint("a", &e.id).await.unwrap(), None);
}

pub async fn publish_fans_out_to_matching_enabled_endpoints_leased(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let orders = endpoint("a", &["order.*"], true);
    let all = endpoint("a", &["*"], true);
    let off = endpoint("a", &["*"], false);
    for e in [&orders, &all, &off] {
        s.create_endpoint(e.clone()).await.unwrap();
    }
    let l = lease("node-1", 42, HELD);
    let p = s
        .publish(event("a", "order.created", None, 1_000), l.clone())
        .await
        .unwrap();
    assert!(!p.repeated);
    let mut pending: Vec<_> = p
        .deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .map(|d| d.endpoint_id.clone())
        .collect();
    pending.sort();
    let mut want = vec![orders.id.clone(), all.id.clone()];
    want.sort();
    assert_eq!(pending, want);
    // The disabled endpoint's delivery is recorded as skipped (replayable), not dropped.
    let skipped: Vec<_> = p
        .deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Skipped)
        .map(|d| d.endpoint_id.clone())
        .collect();
    assert_eq!(skipped, vec![off.id.clone()]);
    assert_eq!(p.deliveries.len(), 3);
    assert_eq!(p.jobs.len(), 2);
    assert!(
        p.jobs
            .iter()
            .all(|j| j.lease_token == 42 && j.cycle_failures == 0)
    );
    assert!(p.jobs.iter().all(|j| j.body == p.event.payload));
    assert_eq!(p.endpoints.len(), 2);
    // Leased: nothing to claim until the lease ends.
    let c = s
        .claim(&all.id, 10, 5_000, &lease("node-2", 7, HELD))
        .await
        .unwrap();
    assert!(c.jobs.is_empty());
    let short = s
        .publish(
            event("a", "order.paid", None, 1_000),
            lease("node-1", 43, EXPIRED),
        )
        .await
        .unwrap();
    let c = s
        .claim(&all.id, 10, 10_000, &lease("node-2", 7, HELD))
        .await
        .unwrap();
    assert_eq!(
        c.jobs.len(),
        1,
        "an expired lease can be claimed by another node"
    );
    assert_eq!(c.jobs[0].event_id, short.event.id);

    let p2 = s
        .publish(event("a", "user.created", None, 1_001), l.clone())
        .await
        .unwrap();
    assert_eq!(
        p2.jobs.len(),
        1,
        "only the catch-all endpoint takes user.created"
    );
    assert_eq!(p2.deliveries.len(), 2, "plus the disabled one, skipped");
    assert!(matches!(
        s.publish(event("zz", "x", None, 1), l).await,
        Err(StoreError::NotFound)
    ));
    let events = s.list_events("a", None, page(10)).await.unwrap();
    assert_eq!(events.rows.len(), 3);
    assert_eq!(events.rows[0].id, p2.event.id, "newest first");
    let named = s
        .list_events("a", Some("order.created"), page(10))
        .await
        .unwrap();
    assert_eq!(named.rows.len(), 1);
    assert_eq!(
        s.get_event("a", &p.event.id)
            .await
            .unwrap()
            .unwrap()
            .payload,
        p.event.payload
    );
    assert_eq!(s.get_event("b", &p.event.id).await.unwrap(), None);
}

pub async fn idempotency_keys_return_the_first_result(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_tenant(tenant("b")).await.unwrap();
    s.create_endpoint(endpoint("a", &["*"], true))
        .await
        .unwrap();
    let l = lease("n", 1, HELD);
    let first = s
        .publish(event("a", "x", Some("k1"), 1), l.clone())
        .await
        .unwrap();
    let again = s
        .publish(event("a", "x", Some("k1"), 2), l.clone())
        .await
        .unwrap();
    assert!(again.repeated);
    assert!(again.jobs.is_empty());
    assert_eq!(again.event.id, first.event.id);
    assert_eq!(again.deliveries, first.deliveries);
    let other = s.publish(event("a", "y", Some("k1"), 3), l.clone()).await;
    assert!(
        matches!(other, Err(StoreError::Conflict(_))),
        "same key, other body"
    );
    // Keys are per tenant.
    let b = s.publish(event("b", "x", Some("k1"), 4), l).await.unwrap();
    assert!(!b.repeated);
    assert_eq!(
        s.list_events("a", None, page(10)).await.unwrap().rows.len(),
        1
    );
    let all = s
        .list_deliveries("a", &DeliveryFilter::default(), page(10))
        .await
        .unwrap();
    assert_eq!(all.rows.len(), 1);
}

pub async fn claims_take_due_unleased_deliveries_oldest_first(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let e = endpoint("a", &["*"], true);
    s.create_endpoint(e.clone()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let p = s
            .publish(event("a", "x", None, 100 + i), lease("n", 1, EXPIRED))
            .await
            .unwrap();
        ids.push(p.deliveries[0].id.clone());
    }
    // Leases that ended at 0 are free; claim in two batches.
    let c = s
        .claim(&e.id, 3, 1_000, &lease("n2", 2, HELD))
        .await
        .unwrap();
    assert_eq!(
        c.jobs
            .iter()
            .map(|j| j.delivery_id.clone())
            .collect::<Vec<_>>(),
        ids[..3]
    );
    assert_eq!(
        c.endpoint.as_ref().map(|e| e.id.clone()),
        Some(e.id.clone())
    );
    // A full claim does not look further: "due now", and the next claim says.
    assert_eq!(c.next_due, Some(1_000));
    let c2 = s
        .claim(&e.id, 10, 1_000, &lease("n2", 3, HELD))
        .await
        .unwrap();
    assert_eq!(c2.jobs.len(), 2);
    assert_eq!(c2.next_due, None);
    assert!(
        s.claim(&e.id, 10, 1_000, &lease("n3", 4, HELD))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );

    // A retry in the future is not due yet; next_due says when.
    let job = &c.jobs[0];
    assert_eq!(
        s.record(vec![outcome(job, false, Some(9_000), 1_000)])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(
        s.due_summary(1_000).await.unwrap(),
        vec![(e.id.clone(), 9_000)]
    );
    let c3 = s
        .claim(&e.id, 10, 2_000, &lease("n", 5, HELD))
        .await
        .unwrap();
    assert!(c3.jobs.is_empty());
    assert_eq!(c3.next_due, Some(9_000));
    let c4 = s
        .claim(&e.id, 10, 9_000, &lease("n", 6, HELD))
        .await
        .unwrap();
    assert_eq!(
        c4.jobs.len(),
        1,
        "only the retry; the others are still leased"
    );
    assert_eq!(c4.jobs[0].cycle_failures, 1);
    let c5 = s
        .claim("ep_gone", 10, 9_000, &lease("n", 6, HELD))
        .await
        .unwrap();
    assert!(c5.endpoint.is_none() && c5.jobs.is_empty());
}

pub async fn records_are_fenced_by_the_lease(s: Arc<dyn Store>) {
    let (e, stale) = one_delivery(&s, lease("n1", 11, EXPIRED)).await;
    // The lease expires and another node claims the delivery.
    let fresh = s
        .claim(&e.id, 1, 600, &lease("n2", 22, HELD))
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(fresh.delivery_id, stale.delivery_id);
    let applied = s
        .record(vec![
            outcome(&stale, true, None, 700),
            outcome(&fresh, true, None, 710),
        ])
        .await
        .unwrap();
    assert_eq!(applied, [false, true], "the stale holder cannot record");
    let d = s
        .get_delivery("a", &fresh.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_status_code, Some(200));
    let attempts = s.list_attempts(&fresh.delivery_id, page(10)).await.unwrap();
    assert_eq!(attempts.rows.len(), 1, "one attempt recorded, not two");
    // Recording again with the same (now cleared) lease does nothing.
    assert_eq!(
        s.record(vec![outcome(&fresh, true, None, 720)])
            .await
            .unwrap(),
        [false]
    );
}

/// A delivery's attempts across its retries list newest first, page by page, each exactly
/// as recorded (whatever rows or partitions the store keeps them in).
pub async fn attempts_list_newest_first_across_retries(s: Arc<dyn Store>) {
    let (e, first) = one_delivery(&s, lease("n", 1, HELD)).await;
    let id = first.delivery_id.clone();
    let mut recorded = vec![outcome(&first, false, Some(1_000), 200)];
    s.record(vec![recorded[0].clone()]).await.unwrap();
    for (token, (ok, next, at)) in [(false, Some(3_000), 1_100), (true, None, 3_100)]
        .into_iter()
        .enumerate()
    {
        let job = s
            .claim(&e.id, 1, at, &lease("n", 10 + token as i64, HELD))
            .await
            .unwrap()
            .jobs
            .remove(0);
        let o = outcome(&job, ok, next, at);
        assert_eq!(s.record(vec![o.clone()]).await.unwrap(), [true]);
        recorded.push(o);
    }
    let d = s.get_delivery("a", &id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Succeeded, 3));

    let first = s.list_attempts(&id, page(2)).await.unwrap();
    let rest = s
        .list_attempts(
            &id,
            Page {
                limit: 2,
                cursor: first.next_cursor,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.next_cursor, None);
    let listed: Vec<_> = first.rows.iter().chain(&rest.rows).cloned().collect();
    let expected: Vec<_> = recorded.iter().rev().map(|o| o.attempt.clone()).collect();
    assert_eq!(listed, expected, "newest first, each as recorded");
}

pub async fn failures_move_through_pending_to_failed_and_retry_resets(s: Arc<dyn Store>) {
    let (e, job) = one_delivery(&s, lease("n", 1, HELD)).await;
    // In flight: a manual retry is refused.
    assert!(matches!(
        s.retry_delivery("a", &job.delivery_id, 200).await,
        Err(StoreError::Conflict(_))
    ));
    s.record(vec![outcome(&job, false, None, 200)])
        .await
        .unwrap();
    let d = s
        .get_delivery("a", &job.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.last_error_kind.as_deref(), Some("status"));
    let failed = DeliveryFilter {
        status: Some(DeliveryStatus::Failed),
        ..Default::default()
    };
    assert_eq!(
        s.list_deliveries("a", &failed, page(10))
            .await
            .unwrap()
            .rows
            .len(),
        1
    );
    assert!(matches!(
        s.retry_delivery("b", &job.delivery_id, 300).await,
        Err(StoreError::NotFound)
    ));
    let d = s.retry_delivery("a", &job.delivery_id, 300).await.unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.next_attempt_at, Some(300));
    let c = s.claim(&e.id, 10, 300, &lease("n", 2, HELD)).await.unwrap();
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(
        c.jobs[0].cycle_failures, 0,
        "a manual retry starts a fresh schedule"
    );
    let by_endpoint = DeliveryFilter {
        endpoint_id: Some(e.id.to_string()),
        ..Default::default()
    };
    assert_eq!(
        s.list_deliveries("a", &by_endpoint, page(10))
            .await
            .unwrap()
            .rows
            .len(),
        1
    );
    let by_event = DeliveryFilter {
        event_id: Some("evt_other".into()),
        ..Default::default()
    };
    assert!(
        s.list_deliveries("a", &by_event, page(10))
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    for (name, found) in [(d.event_name.clone(), 1), ("no.such.event".to_owned(), 0)] {
        let by_name = DeliveryFilter {
            event_name: Some(name),
            ..Default::default()
        };
        let rows = s
            .list_deliveries("a", &by_name, page(10))
            .await
            .unwrap()
            .rows;
        assert_eq!(rows.len(), found);
    }
    // The event was published at 100: the range is [since, until).
    for (since, until, found) in [
        (Some(100), None, 1),
        (Some(101), None, 0),
        (None, Some(101), 1),
        (None, Some(100), 0),
        (Some(50), Some(150), 1),
    ] {
        let in_range = DeliveryFilter {
            since,
            until,
            ..Default::default()
        };
        let rows = s
            .list_deliveries("a", &in_range, page(10))
            .await
            .unwrap()
            .rows;
        assert_eq!(rows.len(), found, "since {since:?} until {until:?}");
    }
}

/// A transformation's result is kept with its delivery by the outcome that made it, comes
/// back with every later claim (a later outcome without one keeps it), and is dropped by a
/// manual retry or a replay, which run the current transformation.
pub async fn a_transformed_result_is_kept_until_a_retry_or_replay(s: Arc<dyn Store>) {
    let (e, job) = one_delivery(&s, lease("n", 1, HELD)).await;
    assert_eq!(job.transformed, None);
    let mut first = outcome(&job, false, Some(150), 120);
    first.transformed = Some(Arc::from(r#"{"body":"v1"}"#));
    assert_eq!(s.record(vec![first]).await.unwrap(), vec![true]);
    let c = s.claim(&e.id, 10, 200, &lease("n", 2, HELD)).await.unwrap();
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(c.jobs[0].transformed.as_deref(), Some(r#"{"body":"v1"}"#));
    // A later attempt that made nothing new keeps what is stored.
    let again = outcome(&c.jobs[0], false, None, 210);
    assert_eq!(s.record(vec![again]).await.unwrap(), vec![true]);
    s.retry_delivery("a", &job.delivery_id, 300).await.unwrap();
    let c = s.claim(&e.id, 10, 300, &lease("n", 3, HELD)).await.unwrap();
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(
        c.jobs[0].transformed, None,
        "a manual retry transforms afresh"
    );
    let mut made = outcome(&c.jobs[0], true, None, 310);
    made.transformed = Some(Arc::from(r#"{"body":"v2"}"#));
    assert_eq!(s.record(vec![made]).await.unwrap(), vec![true]);
    let filter = ReplayFilter {
        statuses: vec![DeliveryStatus::Succeeded],
        ..Default::default()
    };
    let (n, _) = s.replay("a", &filter, 400, 10, false).await.unwrap();
    assert_eq!(n, 1);
    let c = s.claim(&e.id, 10, 400, &lease("n", 4, HELD)).await.unwrap();
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(c.jobs[0].transformed, None, "a replay transforms afresh");
}

pub async fn releases_make_deliveries_claimable_again(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let e = endpoint("a", &["*"], true);
    s.create_endpoint(e.clone()).await.unwrap();
    let far = HELD;
    let p1 = s
        .publish(event("a", "x", None, 100), lease("n1", 1, far))
        .await
        .unwrap();
    let _p2 = s
        .publish(event("a", "x", None, 101), lease("n1", 2, far))
        .await
        .unwrap();
    let _p3 = s
        .publish(event("a", "x", None, 102), lease("n2", 3, far))
        .await
        .unwrap();
    let l = lease("n9", 9, far);
    assert!(s.claim(&e.id, 10, 200, &l).await.unwrap().jobs.is_empty());
    let mut stale = p1.jobs[0].clone();
    stale.lease_token = 999;
    s.release(vec![stale]).await.unwrap();
    assert!(
        s.claim(&e.id, 10, 200, &l).await.unwrap().jobs.is_empty(),
        "wrong token: kept"
    );
    s.release(vec![p1.jobs[0].clone()]).await.unwrap();
    assert_eq!(s.claim(&e.id, 10, 200, &l).await.unwrap().jobs.len(), 1);
    s.release_owner("n1").await.unwrap();
    assert_eq!(
        s.claim(&e.id, 10, 200, &l).await.unwrap().jobs.len(),
        1,
        "n1's other lease"
    );
    assert_eq!(
        s.due_summary(200).await.unwrap(),
        vec![],
        "n2 and n9 still hold theirs"
    );
    s.reset_leases().await.unwrap();
    assert_eq!(s.claim(&e.id, 10, 200, &l).await.unwrap().jobs.len(), 3);
}

pub async fn deleting_an_endpoint_or_tenant_removes_its_deliveries(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let e1 = endpoint("a", &["*"], true);
    let e2 = endpoint("a", &["*"], true);
    s.create_endpoint(e1.clone()).await.unwrap();
    s.create_endpoint(e2.clone()).await.unwrap();
    let p = s
        .publish(event("a", "x", None, 1), lease("n", 1, EXPIRED))
        .await
        .unwrap();
    s.record(vec![outcome(&p.jobs[0], true, None, 2)])
        .await
        .unwrap();
    s.delete_endpoint("a", &e1.id).await.unwrap();
    let left = s
        .list_deliveries("a", &DeliveryFilter::default(), page(10))
        .await
        .unwrap();
    assert_eq!(left.rows.len(), 1);
    assert_eq!(left.rows[0].endpoint_id, e2.id);
    s.delete_tenant("a").await.unwrap();
    assert!(s.get_event("a", &p.event.id).await.unwrap().is_none());
    assert!(
        s.list_deliveries("a", &DeliveryFilter::default(), page(10))
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    assert!(s.due_summary(10).await.unwrap().is_empty());
}

pub async fn ordered_endpoints_claim_only_their_head(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let mut e = endpoint("a", &["*"], true);
    e.settings.ordered = true;
    s.create_endpoint(e.clone()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let p = s
            .publish(event("a", "x", None, 100 + i), lease("n", 1, HELD))
            .await
            .unwrap();
        assert!(
            p.jobs.is_empty(),
            "ordered deliveries are not handed over leased"
        );
        assert_eq!(p.due_endpoints, vec![e.id.clone()]);
        ids.push(p.deliveries[0].id.clone());
    }
    let head = s.pending_head(&e.id).await.unwrap().unwrap();
    assert_eq!(head.id, ids[0]);
    let c = s
        .claim(&e.id, 10, 1_000, &lease("n", 2, HELD))
        .await
        .unwrap();
    assert_eq!(c.jobs.len(), 1, "only the head");
    assert_eq!(c.jobs[0].delivery_id, ids[0]);
    // While the head is leased, nothing else goes.
    let c2 = s
        .claim(&e.id, 10, 1_000, &lease("n", 3, HELD))
        .await
        .unwrap();
    assert!(c2.jobs.is_empty());
    // A failed head scheduled for later blocks the ones behind it, even though they are due.
    s.record(vec![outcome(&c.jobs[0], false, Some(5_000), 1_000)])
        .await
        .unwrap();
    let c3 = s
        .claim(&e.id, 10, 2_000, &lease("n", 4, HELD))
        .await
        .unwrap();
    assert!(c3.jobs.is_empty());
    assert_eq!(c3.next_due, Some(5_000));
    // Skipping the head lets the next one through.
    let skipped = s.skip_delivery("a", &ids[0], 2_000).await.unwrap();
    assert_eq!(skipped.status, DeliveryStatus::Skipped);
    assert!(matches!(
        s.skip_delivery("a", &ids[0], 2_000).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.skip_delivery("b", &ids[1], 2_000).await,
        Err(StoreError::NotFound)
    ));
    let c4 = s
        .claim(&e.id, 10, 2_000, &lease("n", 5, HELD))
        .await
        .unwrap();
    assert_eq!(c4.jobs.len(), 1);
    assert_eq!(c4.jobs[0].delivery_id, ids[1]);
}

/// A delivery deleted while in flight leaves nothing behind that touches later ones: its late
/// record changes nothing, and deliveries stored after it are claimed and recorded normally.
/// (SQLite gives a new row the number of the newest row once that row is deleted, and keys
/// its leases by that number.)
pub async fn a_deleted_deliverys_lease_touches_nothing_after_it(s: Arc<dyn Store>) {
    let (gone, late) = one_delivery(&s, lease("n", 1, HELD)).await;
    s.delete_endpoint("a", &gone.id).await.unwrap();

    // Stored unleased (ordered endpoints are claimed), then leased by a claim.
    let mut ordered = endpoint("a", &["*"], true);
    ordered.settings.ordered = true;
    s.create_endpoint(ordered.clone()).await.unwrap();
    let p2 = s
        .publish(event("a", "x", None, 200), lease("n", 2, HELD))
        .await
        .unwrap();
    let c = s
        .claim(&ordered.id, 10, 1_000, &lease("n", 3, HELD))
        .await
        .unwrap();
    assert_eq!(c.jobs.len(), 1, "the new delivery is not held up");
    assert_eq!(c.jobs[0].delivery_id, p2.deliveries[0].id);

    assert_eq!(
        s.record(vec![outcome(&late, true, None, 1_100)])
            .await
            .unwrap(),
        vec![false],
        "the deleted delivery's record is refused"
    );
    let d = s
        .get_delivery("a", &p2.deliveries[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 0);
    assert_eq!(
        s.record(vec![outcome(&c.jobs[0], true, None, 1_200)])
            .await
            .unwrap(),
        vec![true]
    );
    let d = s
        .get_delivery("a", &p2.deliveries[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts, 1);
}

/// A delivery whose payload retention removed is not sent again: a retry is refused with a
/// conflict saying why, and a replay (or its dry run) passes over it. (PostgreSQL once
/// re-sent such deliveries with an empty body.)
pub async fn a_purged_payload_is_never_sent_again(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_endpoint(endpoint("a", &["*"], true))
        .await
        .unwrap();
    let mut delivered = Vec::new();
    for (at, token) in [(100, 1), (10_000, 2)] {
        let p = s
            .publish(event("a", "x", None, at), lease("n", token, HELD))
            .await
            .unwrap();
        s.record(vec![outcome(&p.jobs[0], true, None, at + 1)])
            .await
            .unwrap();
        delivered.push(p.jobs[0].delivery_id.clone());
    }
    assert_eq!(s.purge_payloads(1_000, 5_000, 10).await.unwrap(), 1);
    match s.retry_delivery("a", &delivered[0], 6_000).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("retention"), "{why}"),
        other => panic!("a purged delivery was retried: {other:?}"),
    }
    let d = s.get_delivery("a", &delivered[0]).await.unwrap().unwrap();
    assert_eq!(
        d.status,
        DeliveryStatus::Succeeded,
        "the refusal changed nothing"
    );
    let all = ReplayFilter {
        statuses: vec![DeliveryStatus::Succeeded],
        ..ReplayFilter::default()
    };
    let (n, _) = s.replay("a", &all, 6_000, 100, true).await.unwrap();
    assert_eq!(n, 1, "the dry run counts only the unpurged one");
    let (n, _) = s.replay("a", &all, 6_000, 100, false).await.unwrap();
    assert_eq!(n, 1);
    let d = s.get_delivery("a", &delivered[0]).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    let d = s.get_delivery("a", &delivered[1]).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    // The unpurged one can be retried as usual.
    let _ = s.retry_delivery("a", &delivered[1], 6_000).await.unwrap();
}

/// Retention purges payloads, then events, in batches of at most its limit, and never an
/// event with a pending delivery; once that delivery finishes, a later pass takes it. Purged
/// and unpurged events are read through different indexes, so both groups are exercised.
pub async fn retention_purges_payloads_then_events(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_endpoint(endpoint("a", &["*"], true))
        .await
        .unwrap();
    let delivered = |at: Millis, token: i64| {
        let s = s.clone();
        async move {
            let p = s
                .publish(event("a", "x", None, at), lease("n", token, HELD))
                .await
                .unwrap();
            s.record(vec![outcome(&p.jobs[0], true, None, at + 1)])
                .await
                .unwrap();
            p.event.id
        }
    };
    let old1 = delivered(100, 1).await;
    let old2 = delivered(150, 2).await;
    let pinned = s
        .publish(event("a", "x", None, 200), lease("n", 3, HELD))
        .await
        .unwrap();
    let young = delivered(10_000, 4).await;

    assert_eq!(s.purge_payloads(1_000, 5_000, 1).await.unwrap(), 1);
    assert_eq!(s.purge_payloads(1_000, 5_000, 10).await.unwrap(), 1);
    assert_eq!(s.purge_payloads(1_000, 5_000, 10).await.unwrap(), 0);
    for id in [&old1, &old2] {
        let e = s.get_event("a", id).await.unwrap().unwrap();
        assert_eq!(e.purged_at, Some(5_000));
        assert!(e.payload.is_empty());
    }
    let e = s.get_event("a", &pinned.event.id).await.unwrap().unwrap();
    assert_eq!(e.purged_at, None, "a pending delivery keeps its payload");

    assert_eq!(s.purge_events(1_000, 1).await.unwrap(), 1);
    assert_eq!(s.purge_events(1_000, 10).await.unwrap(), 1);
    assert_eq!(
        s.purge_events(1_000, 10).await.unwrap(),
        0,
        "the pending one stays"
    );
    assert!(s.get_event("a", &old1).await.unwrap().is_none());
    assert!(s.get_event("a", &old2).await.unwrap().is_none());

    s.record(vec![outcome(&pinned.jobs[0], true, None, 300)])
        .await
        .unwrap();
    assert_eq!(s.purge_events(1_000, 10).await.unwrap(), 1);
    assert!(s.get_event("a", &pinned.event.id).await.unwrap().is_none());
    assert!(s.get_event("a", &young).await.unwrap().is_some());
    assert_eq!(
        s.list_deliveries("a", &DeliveryFilter::default(), page(10))
            .await
            .unwrap()
            .rows
            .len(),
        1,
        "deliveries go with their events"
    );
}

/// The ordered head follows the endpoint's setting, whenever it changes: deliveries already
/// pending when an endpoint becomes ordered, and a finished delivery retried or replayed
/// afterwards, are in its queue; turning it back off releases them to ordinary claims.
pub async fn ordered_heads_follow_the_setting_when_it_changes(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let mut e = endpoint("a", &["*"], true);
    s.create_endpoint(e.clone()).await.unwrap();
    let (mut ids, mut jobs) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let p = s
            .publish(event("a", "x", None, 100 + i), lease("n", 1, HELD))
            .await
            .unwrap();
        ids.push(p.deliveries[0].id.clone());
        jobs.extend(p.jobs);
    }
    assert_eq!(jobs.len(), 4, "handed over leased");
    // The first two succeed while the endpoint is unordered; the others stay pending
    // (their leases released).
    s.record(vec![
        outcome(&jobs[0], true, None, 1_000),
        outcome(&jobs[1], true, None, 1_000),
    ])
    .await
    .unwrap();
    s.release(jobs[2..].to_vec()).await.unwrap();
    // Turned ordered: the oldest pending one is the head, and only it is claimed.
    e.settings.ordered = true;
    s.update_endpoint(e.clone()).await.unwrap();
    assert_eq!(s.pending_head(&e.id).await.unwrap().unwrap().id, ids[2]);
    // A finished delivery made pending again is older than both: it becomes the head.
    s.retry_delivery("a", &ids[0], 2_000).await.unwrap();
    assert_eq!(s.pending_head(&e.id).await.unwrap().unwrap().id, ids[0]);
    let c = s
        .claim(&e.id, 10, 2_000, &lease("n", 3, HELD))
        .await
        .unwrap();
    assert_eq!(c.jobs.len(), 1, "only the head");
    assert_eq!(c.jobs[0].delivery_id, ids[0]);
    s.record(vec![outcome(&c.jobs[0], true, None, 2_100)])
        .await
        .unwrap();
    assert_eq!(s.pending_head(&e.id).await.unwrap().unwrap().id, ids[2]);
    // So does one replayed (the second, finished while the endpoint was unordered).
    let second = ReplayFilter {
        statuses: vec![DeliveryStatus::Succeeded],
        endpoint_id: Some(e.id.to_string()),
        event_name: None,
        since: Some(101),
        until: Some(102),
    };
    let (n, _) = s.replay("a", &second, 2_200, 100, false).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(s.pending_head(&e.id).await.unwrap().unwrap().id, ids[1]);
    // Back to unordered: every due delivery is claimable again.
    e.settings.ordered = false;
    s.update_endpoint(e.clone()).await.unwrap();
    let c = s
        .claim(&e.id, 10, 3_000, &lease("n", 4, HELD))
        .await
        .unwrap();
    assert_eq!(c.jobs.len(), 3);
}

pub async fn health_changes_apply_once(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let e = endpoint("a", &["*"], true);
    s.create_endpoint(e.clone()).await.unwrap();
    assert!(
        s.change_health(&e.id, HealthChange::Failing(500), 500)
            .await
            .unwrap()
    );
    assert!(
        !s.change_health(&e.id, HealthChange::Failing(600), 600)
            .await
            .unwrap()
    );
    let got = s.get_endpoint("a", &e.id).await.unwrap().unwrap();
    assert_eq!(got.failing_since, Some(500));
    assert!(
        s.change_health(&e.id, HealthChange::Recovered, 700)
            .await
            .unwrap()
    );
    assert!(
        !s.change_health(&e.id, HealthChange::Recovered, 700)
            .await
            .unwrap()
    );
    let reason = "the receiver answered 410 Gone".to_owned();
    assert!(
        s.change_health(&e.id, HealthChange::Disable(reason.clone()), 800)
            .await
            .unwrap()
    );
    assert!(
        !s.change_health(&e.id, HealthChange::Disable(reason.clone()), 900)
            .await
            .unwrap()
    );
    let got = s.get_endpoint("a", &e.id).await.unwrap().unwrap();
    assert!(!got.enabled);
    assert_eq!(got.disabled_reason, Some(reason));
    assert_eq!(got.failing_since, None);
}

pub async fn replay_requeues_matching_finished_deliveries(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let e = endpoint("a", &["*"], true);
    let off = endpoint("a", &["*"], false);
    s.create_endpoint(e.clone()).await.unwrap();
    s.create_endpoint(off.clone()).await.unwrap();
    let p1 = s
        .publish(event("a", "x", None, 100), lease("n", 1, EXPIRED))
        .await
        .unwrap();
    let p2 = s
        .publish(event("a", "y", None, 200), lease("n", 2, EXPIRED))
        .await
        .unwrap();
    s.record(vec![outcome(&p1.jobs[0], false, None, 300)])
        .await
        .unwrap();
    s.record(vec![outcome(&p2.jobs[0], true, None, 300)])
        .await
        .unwrap();
    let failed = ReplayFilter {
        statuses: vec![DeliveryStatus::Failed],
        endpoint_id: None,
        event_name: None,
        since: None,
        until: None,
    };
    let (n, eps) = s.replay("a", &failed, 400, 100, true).await.unwrap();
    assert_eq!(
        (n, eps.len()),
        (1, 0),
        "a dry run counts and changes nothing"
    );
    let d = s
        .get_delivery("a", &p1.jobs[0].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(
        s.replay("b", &failed, 400, 100, false).await.unwrap().0,
        0,
        "per tenant"
    );
    let (n, eps) = s.replay("a", &failed, 400, 100, false).await.unwrap();
    assert_eq!((n, eps), (1, vec![e.id.clone()]));
    let d = s
        .get_delivery("a", &p1.jobs[0].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.next_attempt_at, Some(400));
    // Skipped ones (the disabled endpoint's), narrowed by event name and time window.
    let skipped = ReplayFilter {
        statuses: vec![DeliveryStatus::Skipped, DeliveryStatus::Succeeded],
        endpoint_id: None,
        event_name: Some("y".into()),
        since: Some(150),
        until: Some(250),
    };
    let (n, mut eps) = s.replay("a", &skipped, 500, 100, false).await.unwrap();
    eps.sort();
    let mut want = vec![e.id.clone(), off.id.clone()];
    want.sort();
    assert_eq!((n, eps), (2, want));
    let limited = ReplayFilter {
        statuses: vec![DeliveryStatus::Pending],
        ..failed
    };
    assert_eq!(s.replay("a", &limited, 500, 1, true).await.unwrap().0, 3);
}

/// The store never runs a tenant's filter: it matches with the verdicts the event carries, and
/// asks for the filters it has none for before writing anything.
pub async fn publish_matches_filters_by_the_verdicts_it_is_given(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let mut big = endpoint("a", &["*"], true);
    big.settings.filter = Some("$[?@.data.amount > 100]".into());
    let mut eur = endpoint("a", &["order.*"], true);
    eur.settings.filter = Some("$[?@.data.currency == 'EUR']".into());
    let plain = endpoint("a", &["*"], true);
    for e in [&big, &eur, &plain] {
        s.create_endpoint(e.clone()).await.unwrap();
    }
    let ev = event("a", "order.created", None, 2_000);
    match s.publish(ev.clone(), lease("n1", 1, HELD)).await {
        Err(StoreError::FiltersNeeded(mut filters)) => {
            filters.sort();
            assert_eq!(
                filters,
                ["$[?@.data.amount > 100]", "$[?@.data.currency == 'EUR']"]
            );
        }
        other => panic!("expected FiltersNeeded, got {other:?}"),
    }
    assert!(
        s.list_events("a", None, page(10))
            .await
            .unwrap()
            .rows
            .is_empty(),
        "nothing was written"
    );
    // Verdicts as the publisher computes them: the store follows them, whatever the payload.
    let mut ev = ev;
    ev.payload = Bytes::from_static(br#"{"event":"order.created","data":{"amount":5}}"#);
    let mut verdicts = chime::filter::Verdicts::default();
    verdicts.evaluate(
        ["$[?@.data.amount > 100]", "$[?@.data.currency == 'EUR']"],
        br#"{"data":{"amount":500}}"#,
    );
    ev.filters = verdicts;
    let published = s.publish(ev, lease("n1", 1, HELD)).await.unwrap();
    let mut to: Vec<_> = published
        .deliveries
        .iter()
        .map(|d| d.endpoint_id.clone())
        .collect();
    to.sort();
    let mut want = vec![big.id.clone(), plain.id.clone()];
    want.sort();
    assert_eq!(to, want);
}

pub async fn gauges_count_the_backlog_and_endpoints_by_state(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    let healthy = endpoint("a", &["*"], true);
    let failing = endpoint("a", &["*"], true);
    s.create_endpoint(healthy.clone()).await.unwrap();
    s.create_endpoint(failing.clone()).await.unwrap();
    s.create_endpoint(endpoint("a", &["*"], false))
        .await
        .unwrap();
    assert!(
        s.change_health(&failing.id, HealthChange::Failing(50), 50)
            .await
            .unwrap()
    );
    for at in [100, 200] {
        s.publish(event("a", "x", None, at), lease("n", 1, EXPIRED))
            .await
            .unwrap();
    }
    // One of the healthy endpoint's deliveries fails once and waits for its retry.
    let c = s
        .claim(&healthy.id, 1, 1_000, &lease("n", 2, HELD))
        .await
        .unwrap();
    assert_eq!(c.jobs[0].unattempted_since, Some(100), "never attempted");
    let failed = outcome(&c.jobs[0], false, Some(5_000), 1_000);
    assert_eq!(s.record(vec![failed]).await.unwrap(), vec![true]);
    let g = s.gauges(1_000).await.unwrap();
    assert_eq!(
        g,
        Gauges {
            due: 3,
            scheduled: 1,
            endpoints_healthy: 1,
            endpoints_failing: 1,
            endpoints_disabled: 1,
        }
    );
    let c = s
        .claim(&healthy.id, 5, 6_000, &lease("n", 3, HELD))
        .await
        .unwrap();
    let since: Vec<_> = c.jobs.iter().map(|j| j.unattempted_since).collect();
    assert_eq!(
        since,
        vec![Some(200), None],
        "attempted once: no longer first"
    );
}

/// A publish's `traceparent` is stored with its event and comes back on every job made from
/// it: at publish, from a claim and from an ordered endpoint's head; an event without one has
/// none.
pub async fn traceparents_survive_publish_and_claim(s: Arc<dyn Store>) {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tp = chime::model::TraceParent::parse(TP).unwrap();
    s.create_tenant(tenant("a")).await.unwrap();
    let plain = endpoint("a", &["*"], true);
    s.create_endpoint(plain.clone()).await.unwrap();
    let mut ordered = endpoint("a", &["*"], true);
    ordered.settings.ordered = true;
    s.create_endpoint(ordered.clone()).await.unwrap();

    let traced = NewEvent {
        traceparent: Some(tp.clone()),
        ..event("a", "x", None, 100)
    };
    let p = s.publish(traced, lease("n", 1, HELD)).await.unwrap();
    assert_eq!(p.event.traceparent.as_ref(), Some(&tp));
    assert_eq!(p.jobs.len(), 1, "the plain endpoint's delivery, leased");
    assert_eq!(p.jobs[0].traceparent.as_ref(), Some(&tp));
    let stored = s.get_event("a", &p.event.id).await.unwrap().unwrap();
    assert_eq!(stored.traceparent.as_ref(), Some(&tp));

    // Released, then claimed: the claim reads it from the event.
    s.release(vec![p.jobs[0].clone()]).await.unwrap();
    let c = s
        .claim(&plain.id, 10, 1_000, &lease("n", 2, HELD))
        .await
        .unwrap();
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(c.jobs[0].traceparent.as_ref(), Some(&tp));
    let head = s
        .claim(&ordered.id, 10, 1_000, &lease("n", 3, HELD))
        .await
        .unwrap();
    assert_eq!(head.jobs.len(), 1);
    assert_eq!(head.jobs[0].traceparent.as_ref(), Some(&tp));

    let untraced = s
        .publish(event("a", "x", None, 200), lease("n", 4, HELD))
        .await
        .unwrap();
    assert_eq!(untraced.event.traceparent, None);
    assert_eq!(untraced.jobs[0].traceparent, None);
}

/// Markers holding an expiry go once it has passed; others under the prefix and other keys
/// stay.
pub async fn expired_meta_markers_are_purged(s: Arc<dyn Store>) {
    for (key, value) in [
        ("ui_link_used:old", "100"),
        ("ui_link_used:new", "300"),
        ("ui_link_usedx", "1"),
        ("ui_session_key", "1"),
    ] {
        assert!(s.put_meta_if_absent(key, value).await.unwrap());
    }
    assert_eq!(s.purge_expired_meta("ui_link_used:", 200).await.unwrap(), 1);
    assert_eq!(s.get_meta("ui_link_used:old").await.unwrap(), None);
    for kept in ["ui_link_used:new", "ui_link_usedx", "ui_session_key"] {
        assert!(s.get_meta(kept).await.unwrap().is_some(), "{kept}");
    }
    assert_eq!(s.purge_expired_meta("ui_link_used:", 200).await.unwrap(), 0);
}

/// Sources: one name per tenant, found by the hash of their key, gone with their tenant.
pub async fn sources_are_scoped_named_and_found_by_key(s: Arc<dyn Store>) {
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_tenant(tenant("b")).await.unwrap();
    let make = |t: &str, name: &str, hash: &str| Source {
        id: chime::model::SourceId::new(),
        tenant_id: t.into(),
        name: name.into(),
        settings: SourceSettings {
            verify: chime::model::SourceVerify::None,
            event_name: Some("/type".into()),
            dedupe_key: None,
            max_body_bytes: Some(1000),
            rate_limit_per_s: None,
            transformation: None,
        },
        ingest_key: format!("key-{hash}"),
        ingest_key_hash: hash.into(),
        created_at: 5,
        updated_at: 5,
    };
    let one = make("a", "stripe", "h1");
    s.create_source(one.clone()).await.unwrap();
    assert!(matches!(
        s.create_source(make("a", "stripe", "h2")).await,
        Err(StoreError::Conflict(_))
    ));
    s.create_source(make("b", "stripe", "h3")).await.unwrap();
    assert!(matches!(
        s.create_source(make("zz", "x", "h4")).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.get_source("a", &one.id).await.unwrap(), Some(one.clone()));
    assert_eq!(s.get_source("b", &one.id).await.unwrap(), None);
    assert_eq!(s.find_source("h1").await.unwrap(), Some(one.clone()));
    assert_eq!(s.find_source("nope").await.unwrap(), None);
    let mut changed = one.clone();
    changed.ingest_key_hash = "h9".into();
    changed.name = "stripe-prod".into();
    s.update_source(&changed).await.unwrap();
    assert_eq!(s.find_source("h1").await.unwrap(), None);
    assert_eq!(s.find_source("h9").await.unwrap(), Some(changed.clone()));
    assert_eq!(
        s.list_sources("a", page(10)).await.unwrap().rows,
        [changed.clone()]
    );
    s.delete_source("a", &one.id).await.unwrap();
    assert!(matches!(
        s.delete_source("a", &one.id).await,
        Err(StoreError::NotFound)
    ));
    s.delete_tenant("b").await.unwrap();
    assert_eq!(s.find_source("h3").await.unwrap(), None);
}

macro_rules! conformance {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;
            conformance!(@cases $make;
                tenants_are_created_listed_and_deleted,
                tokens_resolve_to_scopes_and_die_with_their_tenant,
                endpoints_are_scoped_to_their_tenant,
                publish_fans_out_to_matching_enabled_endpoints_leased,
                idempotency_keys_return_the_first_result,
                claims_take_due_unleased_deliveries_oldest_first,
                records_are_fenced_by_the_lease,
                failures_move_through_pending_to_failed_and_retry_resets,
                attempts_list_newest_first_across_retries,
                releases_make_deliveries_claimable_again,
                deleting_an_endpoint_or_tenant_removes_its_deliveries,
                ordered_endpoints_claim_only_their_head,
                ordered_heads_follow_the_setting_when_it_changes,
                a_deleted_deliverys_lease_touches_nothing_after_it,
                retention_purges_payloads_then_events,
                a_purged_payload_is_never_sent_again,
                health_changes_apply_once,
                replay_requeues_matching_finished_deliveries,
                publish_matches_filters_by_the_verdicts_it_is_given,
                gauges_count_the_backlog_and_endpoints_by_state,
                traceparents_survive_publish_and_claim,
                expired_meta_markers_are_purged,
                sources_are_scoped_named_and_found_by_key,
                a_transformed_result_is_kept_until_a_retry_or_replay,
            );
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                super::$case(store).await;
            }
        )*
    };
}

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = chime::store::sqlite::SqliteStore::open(&dir.path().join("chime.db")).unwrap();
    (Arc::new(store), dir)
}

conformance!(sqlite_backend, sqlite);

/// A fresh schema per case on the test server (`CHIME_TEST_DATABASE_URL`, or the local
/// default); the guard drops it. Never skipped: an unreachable server fails the case.
async fn postgres() -> (Arc<dyn Store>, crate::support::postgres::PgSchema) {
    let schema = crate::support::postgres::PgSchema::create().await;
    let store = chime::store::postgres::PostgresStore::connect(&schema.url, 4)
        .await
        .unwrap_or_else(|e| panic!("opening the PostgreSQL store: {e:#}"));
    (Arc::new(store), schema)
}

conformance!(postgres_backend, postgres);
