//! The publish plan, decided once for both backends: which of a tenant's endpoints get a
//! delivery, in which state each starts, and what the publish answers once the plan is
//! stored. Each backend only writes the plan inside its transaction.

use std::sync::Arc;

use super::{
    DeliveryStatus, Endpoint, Job, Lease, NewEvent, Published, PublishedDelivery, Result,
    StoreError,
};
use crate::model::{DeliveryId, Millis};

/// One delivery a publish creates.
#[derive(Debug, Clone)]
pub struct Planned {
    pub id: DeliveryId,
    /// The endpoint row as read in the publishing transaction.
    pub endpoint: Arc<Endpoint>,
    pub status: DeliveryStatus,
    /// Leased to the publishing node and handed to its dispatcher in memory.
    pub leased: bool,
}

impl Planned {
    /// When it is first due: at once, unless it starts skipped.
    pub fn next_attempt_at(&self, event: &NewEvent) -> Option<Millis> {
        (self.status == DeliveryStatus::Pending).then_some(event.created_at)
    }
}

/// The deliveries publishing `event` creates among the tenant's `endpoints` (`subscribers`),
/// each in the state `Lease::initial_state` gives it.
pub fn plan(endpoints: &[Arc<Endpoint>], event: &NewEvent, lease: &Lease) -> Result<Vec<Planned>> {
    Ok(subscribers(endpoints, event)?
        .into_iter()
        .map(|ep| {
            let (status, leased) = lease.initial_state(ep);
            Planned {
                id: DeliveryId::new(),
                endpoint: ep.clone(),
                status,
                leased,
            }
        })
        .collect())
}

/// What a publish answers once its plan is stored: the deliveries, the leased ones as jobs
/// for the dispatcher, and the endpoints with unleased pending work. `rows` gives each
/// planned delivery's row number, for a backend that keys leases by it (`Job::row`).
pub fn published(
    event: NewEvent,
    lease: &Lease,
    plan: Vec<Planned>,
    mut rows: impl FnMut(usize) -> Option<i64>,
) -> Published {
    let mut deliveries = Vec::with_capacity(plan.len());
    let mut jobs = Vec::with_capacity(plan.len());
    let mut endpoints = Vec::with_capacity(plan.len());
    let mut due_endpoints = Vec::new();
    let held_since = std::time::Instant::now();
    for (i, p) in plan.into_iter().enumerate() {
        if p.leased {
            jobs.push(Job {
                delivery_id: p.id.clone(),
                event_id: event.id.clone(),
                tenant_id: event.tenant_id.clone(),
                endpoint_id: p.endpoint.id.clone(),
                body: event.payload.clone(),
                cycle_failures: 0,
                lease_token: lease.token,
                row: rows(i),
                unattempted_since: Some(event.created_at),
                traceparent: event.traceparent.clone(),
                inbound: event.inbound.clone(),
                transformed: None,
                held_since: Some(held_since),
            });
        } else if p.status == DeliveryStatus::Pending {
            due_endpoints.push(p.endpoint.id.clone());
        }
        deliveries.push(PublishedDelivery {
            id: p.id,
            endpoint_id: p.endpoint.id.clone(),
            status: p.status,
        });
        if p.leased {
            endpoints.push(p.endpoint);
        }
    }
    Published {
        event: event.into_stored(),
        deliveries,
        jobs,
        endpoints,
        due_endpoints,
        repeated: false,
    }
}

/// The endpoints among `endpoints` that receive the event: subscribed to its name, and whose
/// filter (if any) selected something; for a test event, its one endpoint. Both backends match with this, inside their publish
/// transaction; an endpoint whose filter has no verdict in `event.filters` makes it answer
/// `FiltersNeeded` with every filter of the tenant's endpoints, before anything is written.
pub fn subscribers<'a>(
    endpoints: &'a [Arc<Endpoint>],
    event: &NewEvent,
) -> Result<Vec<&'a Arc<Endpoint>>> {
    if let Some(only) = &event.only_endpoint {
        return Ok(endpoints.iter().filter(|e| e.id == *only).collect());
    }
    let mut out = Vec::new();
    let source = event.inbound.as_ref().map(|i| &i.source_id);
    for ep in endpoints {
        if !ep.events.matches(&event.name) {
            continue;
        }
        // An endpoint limited to some sources takes only their events.
        if let Some(allowed) = &ep.settings.sources
            && !source.is_some_and(|s| allowed.contains(s))
        {
            continue;
        }
        let verdict = match ep.settings.filter.as_deref() {
            None => true,
            Some(f) => match event.filters.get(f) {
                Some(v) => v,
                None => {
                    let filters = endpoints
                        .iter()
                        .filter_map(|e| e.settings.filter.clone())
                        .collect::<std::collections::BTreeSet<_>>();
                    return Err(StoreError::FiltersNeeded(filters.into_iter().collect()));
                }
            },
        };
        if verdict {
            out.push(ep);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointId, Subscription};
    use crate::store::{Admission, EndpointSettings};

    fn endpoint(id: &str, patterns: &[&str], enabled: bool, ordered: bool) -> Arc<Endpoint> {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Arc::new(Endpoint {
            id: EndpointId::from_stored(id),
            tenant_id: "acme".into(),
            url: "http://127.0.0.1:1/h".into(),
            events: Subscription::parse(&patterns).unwrap(),
            description: String::new(),
            enabled,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            previous_secret: None,
            previous_secret_expires_at: None,
            settings: EndpointSettings {
                ordered,
                ..Default::default()
            },
            disabled_reason: None,
            failing_since: None,
            created_at: 0,
            updated_at: 0,
        })
    }

    fn event(name: &str) -> NewEvent {
        NewEvent {
            id: crate::model::EventId::from_stored("evt_1"),
            tenant_id: "acme".into(),
            name: name.into(),
            payload: bytes::Bytes::from_static(b"{}"),
            idempotency_key: None,
            created_at: 7,
            filters: Default::default(),
            traceparent: None,
            only_endpoint: None,
            inbound: None,
        }
    }

    fn lease(admission: Option<Arc<Admission>>) -> Lease {
        Lease {
            owner: Arc::from("node_1"),
            token: 3,
            duration: std::time::Duration::from_secs(60),
            admission,
        }
    }

    /// Unsubscribed: nothing. Disabled: skipped, not leased. Ordered: pending, claimed in
    /// sequence later. Saturated: pending, waits in the store. Otherwise: leased at once.
    #[test]
    fn each_endpoint_gets_the_state_its_settings_call_for() {
        let eps = vec![
            endpoint("ep_other", &["user.*"], true, false),
            endpoint("ep_off", &["*"], false, false),
            endpoint("ep_ordered", &["*"], true, true),
            endpoint("ep_full", &["order.*"], true, false),
            endpoint("ep_fast", &["order.created"], true, false),
        ];
        let admission = Arc::new(Admission::default());
        admission.set(&Arc::from("ep_full"), true);
        let ev = event("order.created");
        let lease = lease(Some(admission));
        let plan = plan(&eps, &ev, &lease).unwrap();
        let states: Vec<_> = plan
            .iter()
            .map(|p| {
                (
                    p.endpoint.id.as_str(),
                    p.status,
                    p.leased,
                    p.next_attempt_at(&ev),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("ep_off", DeliveryStatus::Skipped, false, None),
                ("ep_ordered", DeliveryStatus::Pending, false, Some(7)),
                ("ep_full", DeliveryStatus::Pending, false, Some(7)),
                ("ep_fast", DeliveryStatus::Pending, true, Some(7)),
            ]
        );

        let ids: Vec<DeliveryId> = plan.iter().map(|p| p.id.clone()).collect();
        let out = published(ev, &lease, plan, |i| Some(100 + i as i64));
        assert_eq!(out.jobs.len(), 1);
        assert_eq!(out.jobs[0].delivery_id, ids[3]);
        assert_eq!(out.jobs[0].row, Some(103));
        assert_eq!(out.jobs[0].lease_token, 3);
        assert_eq!(out.endpoints.len(), 1);
        assert_eq!(out.due_endpoints, ["ep_ordered", "ep_full"]);
        assert_eq!(out.deliveries.len(), 4);
        assert!(!out.repeated);
    }

    /// A test event reaches its one endpoint, even one not subscribed to its name.
    #[test]
    fn a_test_event_reaches_only_its_endpoint() {
        let eps = vec![
            endpoint("ep_other", &["user.*"], true, false),
            endpoint("ep_all", &["*"], true, false),
        ];
        let ev = NewEvent {
            only_endpoint: Some(EndpointId::from_stored("ep_other")),
            inbound: None,
            ..event("order.created")
        };
        let got: Vec<_> = subscribers(&eps, &ev)
            .unwrap()
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        assert_eq!(got, ["ep_other"]);
    }
}
