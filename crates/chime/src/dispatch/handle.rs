//! `DispatchHandle`: how the rest of chime reaches the dispatcher actor, and the one publish
//! path. The API's publishes and chime's own operational events (`emitter`) both go through
//! [`DispatchHandle::publish`]: filters evaluated outside the store, the event and its
//! deliveries committed leased to this node, then the leased deliveries handed to the actor
//! in memory and the ones left in the store announced as due.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Msg;
use crate::filter::KnownFilters;
use crate::metrics::{Commit, Metrics};
use crate::model::{Millis, now_millis};
use crate::spans::Spans;
use crate::store::{Admission, EventLog, Lease, NewEvent, Published, StoreError};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// A cheap, cloneable handle to the dispatcher.
#[derive(Clone)]
pub struct DispatchHandle {
    tx: mpsc::UnboundedSender<Msg>,
    owner: Arc<str>,
    lease: Duration,
    admission: Arc<Admission>,
    store: Arc<dyn EventLog>,
    /// Each tenant's endpoint filters, evaluated before a publish reaches the store.
    filters: Arc<KnownFilters>,
    metrics: Arc<Metrics>,
    /// The `store.commit` spans.
    spans: Spans,
}

impl DispatchHandle {
    pub(super) fn new(
        tx: mpsc::UnboundedSender<Msg>,
        owner: Arc<str>,
        lease: Duration,
        admission: Arc<Admission>,
        store: Arc<dyn EventLog>,
        metrics: Arc<Metrics>,
        spans: Spans,
    ) -> Self {
        Self {
            tx,
            owner,
            lease,
            admission,
            store,
            filters: Arc::default(),
            metrics,
            spans,
        }
    }

    /// Publishes `event`: stores it with its deliveries and starts delivering them. What the
    /// caller gets back is what was stored (`jobs` and `endpoints` already handed over).
    pub async fn publish(&self, event: NewEvent) -> Result<Published, StoreError> {
        let started = std::time::Instant::now();
        let mut span = self.spans.start(
            "store.commit",
            SpanKind::Internal,
            event.traceparent.as_ref(),
            || {
                vec![
                    KeyValue::new("chime.tenant", event.tenant_id.clone()),
                    KeyValue::new("chime.event.id", event.id.to_string()),
                ]
            },
        );
        let published = self
            .filters
            .publish(self.store.as_ref(), event, self.fresh_lease())
            .await;
        let mut published = match published {
            Ok(p) => p,
            Err(e) => {
                span.fail("store_error");
                return Err(e);
            }
        };
        drop(span);
        self.metrics.commit(Commit::Publish, started.elapsed());
        let now = now_millis();
        for id in &published.due_endpoints {
            self.due(id, now);
        }
        if !published.jobs.is_empty() {
            let jobs = std::mem::take(&mut published.jobs);
            let endpoints = std::mem::take(&mut published.endpoints);
            let _ = self.tx.send(Msg::Submit(jobs, endpoints));
        }
        Ok(published)
    }

    /// A fresh lease for deliveries this node is about to create; `admission` tells the
    /// store which endpoints have no room in memory, whose deliveries stay in the store.
    fn fresh_lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            token: rand::random::<i64>(),
            duration: self.lease,
            admission: Some(self.admission.clone()),
        }
    }

    pub fn endpoint_changed(&self, endpoint_id: &str) {
        let _ = self.tx.send(Msg::EndpointChanged(Arc::from(endpoint_id)));
    }

    /// The store has deliveries of this endpoint due at `at` (e.g. after a manual retry).
    pub fn due(&self, endpoint_id: &str, at: Millis) {
        let _ = self.tx.send(Msg::Due(Arc::from(endpoint_id), at));
    }
}
