//! Operational events (`chime.endpoint.disabled`, `…recovered`, `chime.delivery.exhausted`):
//! ordinary events of the reserved `_chime` tenant, published through the one publish path
//! so operators subscribe to them like to any others.

use serde_json::json;

use super::handle::DispatchHandle;
use super::http::Target;
use crate::model::{SYSTEM_TENANT, now_millis};
use crate::store::NewEvent;

/// Publishes operational events to the system tenant.
#[derive(Clone)]
pub(super) struct Emitter {
    pub(super) handle: DispatchHandle,
}

impl Emitter {
    /// Publishes in the background: the dispatcher never waits for its own events.
    pub(super) fn emit(&self, name: &'static str, data: serde_json::Value) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let data = serde_json::value::to_raw_value(&data).expect("a JSON value serializes");
            let event = NewEvent {
                id: crate::model::EventId::new(),
                tenant_id: SYSTEM_TENANT.to_owned(),
                name: name.to_owned(),
                payload: crate::model::envelope(name, &data),
                idempotency_key: None,
                created_at: now_millis(),
                filters: Default::default(),
                traceparent: None,
                only_endpoint: None,
                inbound: None,
            };
            if let Err(e) = handle.publish(event).await {
                tracing::warn!(event = name, error = %e, "could not emit an operational event");
            }
        });
    }
}

/// The data of an endpoint's operational event.
pub(super) fn endpoint_data(t: &Target, reason: Option<&str>) -> serde_json::Value {
    json!({
        "tenant_id": &*t.tenant_id,
        "endpoint_id": &*t.endpoint_id,
        "url": t.uri.to_string(),
        "reason": reason,
    })
}
