//! The store: the one interface through which chime reads and writes its durable state.
//!
//! `Store` is implemented by `sqlite::SqliteStore` (the embedded default, one process) and
//! `postgres::PostgresStore` (several nodes sharing one database). Only modules under
//! `store/` contain SQL. Its behaviour is specified by the conformance suite in
//! `tests/it/store_conformance.rs`, which every backend must pass.
//!
//! Times are `Millis`. Ids are prefixed strings (`evt_…`). Lists are cursor-paginated on an
//! internal monotonic sequence, newest first.

mod plan;
pub mod postgres;
pub mod sqlite;

pub use plan::{Planned, plan, published, subscribers};

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{AttemptId, DeliveryId, EndpointId, EventId, Millis, TraceParent};

/// Errors of the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached right now (connection refused or cut, pool exhausted):
    /// the same call may succeed later without anything being changed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database has no space left (SQLite `SQLITE_FULL`, PostgreSQL 53100): nothing of
    /// the call was stored, and writes fail until an operator frees space.
    #[error("storage full: {0}")]
    Full(String),
    #[error("storage failure: {0}")]
    Backend(String),
    /// A publish met endpoint filters it has no verdict for (`subscribers`): these are all
    /// the filters of the tenant's endpoints, to evaluate before publishing again. Nothing
    /// was written.
    #[error("the event's endpoint filters must be evaluated first")]
    FiltersNeeded(Vec<String>),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) mod rows;

/// Rules both backends apply in their SQL, written once. Each has a conformance case.
pub(crate) mod rules {
    /// A delivery whose event payload retention removed is not sent again (retry, replay):
    /// there is nothing left to send. A condition on a row of `deliveries`.
    pub const NOT_PURGED: &str = "NOT EXISTS (SELECT 1 FROM events e
        WHERE e.id = deliveries.event_id AND e.purged_at IS NOT NULL)";

    /// Why a retry of such a delivery is refused.
    pub const PURGED: &str =
        "the event's payload was removed by retention; it cannot be delivered again";

    /// Pending deliveries due at `$1` (in flight included) and scheduled later: one pass
    /// over the pending deliveries only (`status = 'pending'` is the partial indexes'
    /// condition), whatever the number of finished ones.
    pub const GAUGES_BACKLOG_SQL: &str = "SELECT
            COUNT(*) FILTER (WHERE next_attempt_at <= $1),
            COUNT(*) FILTER (WHERE next_attempt_at > $1)
        FROM deliveries WHERE status = 'pending'";

    /// Endpoints by state: healthy, failing (circuit open), disabled.
    pub const GAUGES_ENDPOINTS_SQL: &str = "SELECT
            COUNT(*) FILTER (WHERE enabled AND failing_since IS NULL),
            COUNT(*) FILTER (WHERE enabled AND failing_since IS NOT NULL),
            COUNT(*) FILTER (WHERE NOT enabled)
        FROM endpoints";

    pub fn gauges(
        due: i64,
        scheduled: i64,
        healthy: i64,
        failing: i64,
        disabled: i64,
    ) -> super::Gauges {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        super::Gauges {
            due: n(due),
            scheduled: n(scheduled),
            endpoints_healthy: n(healthy),
            endpoints_failing: n(failing),
            endpoints_disabled: n(disabled),
        }
    }

    /// A token's `(tenant_id, scope)` columns: a tenant's token names it; the admin token
    /// has neither; a metrics token only its scope.
    pub fn token_columns(scope: super::TokenScope) -> (Option<String>, Option<&'static str>) {
        match scope {
            super::TokenScope::Admin => (None, None),
            super::TokenScope::Tenant(t) => (Some(t), None),
            super::TokenScope::Metrics => (None, Some(super::METRICS_SCOPE)),
        }
    }

    /// The scope of a token row, from its `(tenant_id, scope)` columns. An unknown scope
    /// (written by a newer version) is the narrowest one, never admin.
    pub fn token_scope(tenant: Option<String>, scope: Option<String>) -> super::TokenScope {
        match (tenant, scope) {
            (Some(t), _) => super::TokenScope::Tenant(t),
            (None, None) => super::TokenScope::Admin,
            (None, Some(_)) => super::TokenScope::Metrics,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: Option<String>,
    pub created_at: Millis,
    /// How the portal presents this tenant's product (over the server's branding).
    pub branding: Option<crate::model::Branding>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub tenant_id: String,
    pub url: String,
    /// The event names it subscribes to (`*`, `order.*`, `user_created`), parsed once when
    /// the row is read.
    pub events: crate::model::Subscription,
    pub description: String,
    pub enabled: bool,
    /// `whsec_…`.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_secret_expires_at`.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<Millis>,
    pub settings: EndpointSettings,
    /// Why chime disabled the endpoint (a 410 answer, or failing for too long).
    pub disabled_reason: Option<String>,
    /// Start of the current run of failed attempts; `None` while healthy.
    pub failing_since: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Per-endpoint delivery settings. Stored as one JSON document: they are always read and
/// written together, and new settings need no schema change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EndpointSettings {
    /// Attempts in flight at once to this endpoint (1..=100); `None`: the server default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// At most this many attempts started per second; `None`: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<u32>,
    /// Deliver strictly in the order events were accepted, one at a time.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
    /// Extra request headers sent with every delivery.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// RFC 9535 JSONPath predicate over the envelope; only matching events are delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// TLS beyond the system's roots: a private CA, a client certificate, or none at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::model::TlsSettings>,
    /// How chime authenticates to the receiver (credentials are write-only in the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::model::EndpointAuth>,
    /// An egress proxy of this endpoint's own (`http://host:port`), over the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Receive only events from these sources (`None`: any matching event, API or source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<crate::model::SourceId>>,
    /// A broker the `url` names, and where in it (`None`: an HTTP receiver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<crate::model::Destination>,
    /// JavaScript that reshapes each delivery before its first attempt (`None`: sent as
    /// published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation: Option<crate::model::Transformation>,
}

/// A change of an endpoint's health, made by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthChange {
    /// A run of failures started at this time (no-op if one is already running).
    Failing(Millis),
    /// An attempt succeeded (no-op if the endpoint was healthy).
    Recovered,
    /// Disable the endpoint (no-op if already disabled).
    Disable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub tenant_id: String,
    pub name: String,
    /// The exact bytes that are signed and sent: `{"event":…,"data":…}`.
    pub payload: Bytes,
    pub idempotency_key: Option<String>,
    pub created_at: Millis,
    /// Set when retention removed the payload (`payload` is then empty).
    pub purged_at: Option<Millis>,
    /// The W3C trace the publish request belonged to, sent on each delivery.
    pub traceparent: Option<TraceParent>,
    /// For an event a source received: its source, content type and passed-on headers.
    pub inbound: Option<Arc<crate::model::Inbound>>,
}

/// An entry of the event-type catalog: a documented event name, optionally with a JSON Schema
/// that published `data` must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    pub name: String,
    pub description: String,
    /// JSON Schema text, validated when saved.
    pub schema: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (now, or a scheduled retry), or in flight.
    Pending,
    Succeeded,
    /// Retries exhausted: the dead-letter list.
    Failed,
    /// Not attempted: its endpoint was disabled when the event arrived, or it was skipped by
    /// an API call (an ordered endpoint's blocking head). Can be replayed.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub tenant_id: String,
    pub event_id: EventId,
    pub event_name: String,
    pub endpoint_id: EndpointId,
    pub status: DeliveryStatus,
    /// Attempts made in all.
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    pub last_attempt_at: Option<Millis>,
    pub last_status_code: Option<u16>,
    pub last_error_kind: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub delivery_id: DeliveryId,
    pub started_at: Millis,
    pub duration_ms: u32,
    pub status_code: Option<u16>,
    /// Stable machine reason of a failure (`timeout`, `connect`, `status`, …); `None` on success.
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// The first bytes of the response body, as text.
    pub response: Option<String>,
    pub succeeded: bool,
}

/// A reservation of deliveries by one node. Completion is fenced by `token`, so a delivery
/// whose lease expired and was claimed again cannot be recorded twice.
///
/// Leases run on the store's clock, not the node's: the backend sets `leased_until` to its
/// own "now" plus `duration` and judges expiry by its own "now" too, so a node with a wrong
/// clock cannot steal or keep deliveries. (Due times of retries are the node's, passed as
/// `now`; a skewed clock only shifts when a retry happens.)
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: Arc<str>,
    pub token: i64,
    pub duration: std::time::Duration,
    /// On publish: which endpoints the dispatcher has room for in memory. Deliveries to the
    /// others are stored unleased (claimed later), not leased and then released at once.
    /// `None` leases every delivery.
    pub admission: Option<Arc<Admission>>,
}

impl Lease {
    /// Whether a delivery just published to `endpoint_id` should be leased and handed over.
    pub fn admits(&self, endpoint_id: &str) -> bool {
        self.admission
            .as_ref()
            .is_none_or(|a| a.admits(endpoint_id))
    }
    /// A new delivery's status, and whether it is leased to this node at publish (both
    /// backends). Disabled: recorded as skipped, replayable later. Ordered: left unleased, so
    /// the dispatcher claims it in sequence order. Otherwise leased and handed over in memory,
    /// unless the dispatcher has no room for the endpoint: then it waits in the store rather
    /// than being leased and released again.
    pub fn initial_state(&self, ep: &Endpoint) -> (DeliveryStatus, bool) {
        if !ep.enabled {
            (DeliveryStatus::Skipped, false)
        } else if ep.settings.ordered {
            (DeliveryStatus::Pending, false)
        } else {
            (DeliveryStatus::Pending, self.admits(&ep.id))
        }
    }
}

/// The endpoints a dispatcher cannot take new work for in memory right now: its queue is
/// full, older work of theirs waits in the store, or they are failing or disabled. Kept by
/// the dispatcher, read by publishing. Only a hint: a stale answer costs a lease released
/// or a claim made, never a delivery.
#[derive(Debug, Default)]
pub struct Admission {
    saturated: std::sync::RwLock<std::collections::HashSet<Arc<str>>>,
}

impl Admission {
    pub fn admits(&self, endpoint_id: &str) -> bool {
        !self.saturated.read().is_ok_and(|s| s.contains(endpoint_id))
    }

    pub fn set(&self, endpoint_id: &Arc<str>, saturated: bool) {
        if let Ok(mut s) = self.saturated.write() {
            if saturated {
                s.insert(endpoint_id.clone());
            } else {
                s.remove(endpoint_id);
            }
        }
    }
}

/// One delivery reserved for this node, with everything needed to attempt it.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub tenant_id: String,
    pub endpoint_id: EndpointId,
    pub body: Bytes,
    /// Failed attempts since the schedule last started (retry position).
    pub cycle_failures: u32,
    pub lease_token: i64,
    /// Where the backend finds the delivery's row faster than by its id alone, and it goes
    /// back to the store with the job's outcome: SQLite's row number (the rowid, which also
    /// keys its lease table); PostgreSQL's partition key (`created_at`), so a record or a
    /// release reaches one partition instead of probing all of them.
    pub row: Option<i64>,
    /// When the delivery was created (its event accepted), while it has had no attempt yet:
    /// the wait its first attempt reports (`chime_publish_to_first_attempt_seconds`).
    pub unattempted_since: Option<Millis>,
    /// The event's `traceparent`, sent with each attempt.
    pub traceparent: Option<TraceParent>,
    /// A source event's content type and passed-on headers (`None`: JSON from the API).
    pub inbound: Option<Arc<crate::model::Inbound>>,
    /// What the endpoint's transformation made of this delivery at an earlier attempt
    /// (`transform::Transformed` as JSON), sent again as it is: every retry sends the same
    /// bytes even if the transformation was edited meanwhile. `None`: not transformed yet.
    pub transformed: Option<Arc<str>>,
    /// When the lease began, by this process's clock (a little after it did: the job is made
    /// once the store answered): the dispatcher never starts an attempt the lease would not
    /// cover. `None`: not known.
    pub held_since: Option<std::time::Instant>,
}

/// What publishing stored (or, for a repeated idempotency key, what it had stored before).
#[derive(Debug, Clone)]
pub struct Published {
    pub event: Event,
    pub deliveries: Vec<PublishedDelivery>,
    /// The deliveries as leased jobs, ready for the dispatcher; empty for a repeat.
    pub jobs: Vec<Job>,
    /// The endpoints the jobs go to, as read in the publishing transaction.
    /// Shared, so a backend can hand out the rows it caches and the dispatcher can tell an
    /// unchanged row (the same `Arc`) without comparing it.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Endpoints given new pending deliveries that were NOT leased (ordered endpoints, which
    /// are claimed in sequence): the dispatcher must be told they have due work.
    pub due_endpoints: Vec<EndpointId>,
    /// True when the idempotency key was seen before and nothing new was stored.
    pub repeated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedDelivery {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
    /// `Pending`, or `Skipped` for a disabled endpoint.
    pub status: DeliveryStatus,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub tenant_id: String,
    pub name: String,
    pub payload: Bytes,
    pub idempotency_key: Option<String>,
    pub created_at: Millis,
    /// The tenant's endpoint filters, evaluated against `payload` before the store is called:
    /// the store never runs a filter (`filter.rs` says why). Publish through
    /// `filter::KnownFilters::publish`, which fills this in.
    pub filters: crate::filter::Verdicts,
    /// The publish request's valid `traceparent`, if any.
    pub traceparent: Option<TraceParent>,
    /// A test event (`POST …/endpoints/{id}/test`): this endpoint alone receives it,
    /// whatever its subscription and filter.
    pub only_endpoint: Option<crate::model::EndpointId>,
    /// Set for an event a source received (`payload` is then the request's exact bytes).
    pub inbound: Option<Arc<crate::model::Inbound>>,
}

impl NewEvent {
    /// The event as stored by a publish (not purged).
    pub fn into_stored(self) -> Event {
        Event {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name,
            payload: self.payload,
            idempotency_key: self.idempotency_key,
            created_at: self.created_at,
            purged_at: None,
            traceparent: self.traceparent,
            inbound: self.inbound,
        }
    }
}

impl Published {
    /// The answer to a publish whose idempotency key was seen before: what was stored then,
    /// and nothing new to deliver.
    pub fn repeat(event: Event, deliveries: Vec<PublishedDelivery>) -> Self {
        Self {
            event,
            deliveries,
            jobs: vec![],
            endpoints: vec![],
            due_endpoints: vec![],
            repeated: true,
        }
    }
}

/// The result of one attempt, to be recorded with the delivery's new state in one transaction.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: DeliveryId,
    pub lease_token: i64,
    /// The job's `row`.
    pub row: Option<i64>,
    pub attempt: Attempt,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<Millis>,
    pub cycle_failures: u32,
    /// A transformation's result made by this attempt, kept with the delivery for the
    /// attempts after it (`None`: nothing new to keep).
    pub transformed: Option<Arc<str>>,
}

/// Whether a claim took all it was allowed. Its `next_due` is then its `now`, not looked up:
/// looking costs a scan past every delivery in flight (a profile of a PostgreSQL fanout had it
/// ahead of the claims themselves), and the answer is almost always "now". If nothing else is
/// due, the next claim comes back short and looks then.
pub fn claim_is_full(taken: usize, limit: u32) -> bool {
    taken >= limit as usize
}

pub struct Claimed {
    pub jobs: Vec<Job>,
    pub endpoint: Option<Endpoint>,
    /// Earliest due time of this endpoint's pending, unleased deliveries still in the store.
    /// A claim that took all it was allowed answers its `now` without looking (see
    /// `claim_is_full`): more are probably due, and the next claim will say.
    pub next_due: Option<Millis>,
}

/// Cursor pagination: `limit` rows strictly older than `cursor`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<i64>,
}

pub struct Listed<T> {
    pub rows: Vec<T>,
    pub next_cursor: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    pub event_name: Option<String>,
    /// Created at or after.
    pub since: Option<Millis>,
    /// Created before.
    pub until: Option<Millis>,
}

/// News from the writers sharing a store (`Store::notifications`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// This endpoint's stored deliveries were made claimable (`release`, `release_owner`,
    /// `retry_delivery`, …): claim them now rather than at the next fallback scan.
    Due(String),
    /// This tenant was deleted, and its tokens with it: drop whatever is cached of it.
    TenantDeleted(String),
    /// Notifications may have been missed (the connection was re-established): caches that
    /// rely on them must be emptied.
    Resync,
}

/// The scope of an API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Admin,
    Tenant(String),
    /// Reads `GET /metrics` and nothing else (stored as `tokens.scope = 'metrics'`).
    Metrics,
}

/// The stored `tokens.scope` of a metrics token (`NULL` for the others, whose scope the
/// tenant column tells).
pub const METRICS_SCOPE: &str = "metrics";

/// Counts read at scrape time for `GET /metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Pending deliveries whose next attempt is due (including those in flight).
    pub due: u64,
    /// Pending deliveries waiting for a later retry time.
    pub scheduled: u64,
    /// Enabled endpoints with a closed circuit.
    pub endpoints_healthy: u64,
    /// Enabled endpoints marked failing (circuit open, probed only).
    pub endpoints_failing: u64,
    pub endpoints_disabled: u64,
}

/// Tokens, tenants, endpoints, the event-type catalog and settings: what the API's
/// administration calls read and write.
#[async_trait]
pub trait Admin: Send + Sync + 'static {
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    /// Sets `key` unless it is set already; returns whether it was set now.
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> Result<bool>;

    async fn create_token(&self, hash: &str, scope: TokenScope, now: Millis) -> Result<()>;

    async fn find_token(&self, hash: &str) -> Result<Option<TokenScope>>;

    /// `Conflict` if the id exists.
    async fn create_tenant(&self, tenant: Tenant) -> Result<()>;

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Sets a tenant's name and branding (the rest is fixed at creation); `NotFound` if it
    /// does not exist.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<()>;

    async fn list_tenants(&self, page: Page) -> Result<Listed<Tenant>>;

    /// Deletes the tenant and everything it owns. `NotFound` if absent.
    async fn delete_tenant(&self, id: &str) -> Result<()>;

    /// `NotFound` if the tenant does not exist.
    async fn create_endpoint(&self, endpoint: Endpoint) -> Result<()>;

    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>>;

    async fn list_endpoints(&self, tenant_id: &str, page: Page) -> Result<Listed<Endpoint>>;

    /// Replaces the mutable fields. `NotFound` if absent.
    async fn update_endpoint(&self, endpoint: Endpoint) -> Result<()>;

    /// Deletes the endpoint with its deliveries and attempts. `NotFound` if absent.
    async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<()>;

    /// Succeeds when the store answers a trivial query: the readiness probe (`GET /readyz`).
    async fn ping(&self) -> Result<()>;

    /// The backlog (pending deliveries due at `now` or later) and endpoints by state, for
    /// `GET /metrics`: counts over the pending deliveries' partial index and the endpoints.
    async fn gauges(&self, now: Millis) -> Result<Gauges>;

    /// `Conflict` if the name exists.
    async fn create_event_type(&self, t: EventType) -> Result<()>;

    /// `NotFound` if absent.
    async fn update_event_type(&self, t: EventType) -> Result<()>;

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>>;

    async fn list_event_types(&self, page: Page) -> Result<Listed<EventType>>;

    /// `NotFound` if absent.
    async fn delete_event_type(&self, name: &str) -> Result<()>;
}

/// Events and their deliveries as the API sees them: publishing, reading the log, and the
/// operator's retry, skip and replay.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Stores the event and one delivery per matching enabled endpoint in one transaction,
    /// the deliveries leased to the caller (the fast path hands them to the dispatcher
    /// without another read). A known idempotency key returns the stored result instead
    /// (`Conflict` if the payload differs). `NotFound` if the tenant does not exist.
    async fn publish(&self, event: NewEvent, lease: Lease) -> Result<Published>;

    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>>;

    async fn list_events(
        &self,
        tenant_id: &str,
        name: Option<&str>,
        page: Page,
    ) -> Result<Listed<Event>>;

    async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<Delivery>>;

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
        page: Page,
    ) -> Result<Listed<Delivery>>;

    async fn list_attempts(&self, delivery_id: &str, page: Page) -> Result<Listed<Attempt>>;

    /// Makes a delivery due at `now` with a fresh retry schedule. `Conflict` while it is leased.
    async fn retry_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery>;

    /// The oldest pending delivery of an endpoint (the head, for ordered endpoints).
    async fn pending_head(&self, endpoint_id: &str) -> Result<Option<Delivery>>;

    /// Marks a pending, unleased delivery `skipped`. `Conflict` if it is not pending or is
    /// being attempted.
    async fn skip_delivery(&self, tenant_id: &str, id: &str, now: Millis) -> Result<Delivery>;

    /// Makes the deliveries matching `filter` due at `now` with a fresh schedule (at most
    /// `limit`), or with `dry_run` only counts them. Returns the count and, when replayed, the
    /// endpoints that now have due work.
    async fn replay(
        &self,
        tenant_id: &str,
        filter: &ReplayFilter,
        now: Millis,
        limit: u32,
        dry_run: bool,
    ) -> Result<(u64, Vec<EndpointId>)>;
}

/// The dispatcher's side: claiming due deliveries under a lease, recording attempts,
/// releasing, endpoint health, the nodes sharing the store and their wake-ups.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Leases up to `limit` pending deliveries of one endpoint that are due at `now` and not
    /// leased (on the store's clock), oldest due first.
    async fn claim(
        &self,
        endpoint_id: &str,
        limit: u32,
        now: Millis,
        lease: &Lease,
    ) -> Result<Claimed>;

    /// Records attempts and the deliveries' new states; each is applied only if its lease
    /// token still holds. Returns, per outcome, whether it was applied.
    async fn record(&self, outcomes: Vec<Outcome>) -> Result<Vec<bool>>;

    /// Gives leased deliveries back (makes them claimable at once), each only if its job's
    /// lease token still holds.
    async fn release(&self, jobs: Vec<Job>) -> Result<()>;

    /// Gives back every lease held by `owner`.
    async fn release_owner(&self, owner: &str) -> Result<()>;

    /// Clears every lease: used at start by a backend whose data one process owns alone.
    async fn reset_leases(&self) -> Result<()>;

    /// Per endpoint with pending, unleased deliveries: the earliest due time (`now` is not
    /// used as a bound: future retries are reported too).
    async fn due_summary(&self, now: Millis) -> Result<Vec<(EndpointId, Millis)>>;

    async fn get_endpoint_by_id(&self, id: &str) -> Result<Option<Endpoint>>;

    /// Applies a health change; returns whether anything changed (so an operational event is
    /// emitted once, by the node that made the change).
    async fn change_health(
        &self,
        endpoint_id: &str,
        change: HealthChange,
        now: Millis,
    ) -> Result<bool>;

    /// What writers that may be other nodes sharing this store did, as it happens
    /// (`Notification`). `None` for a backend that one process owns alone (its own writes
    /// already reach its dispatcher and its caches). Meant to be called once; the stream also
    /// carries this node's own writes, and it may miss some while the connection is
    /// re-established, after which it says `Resync`.
    fn notifications(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Notification>> {
        None
    }

    /// Records that `node` is alive and returns how many nodes were seen alive within
    /// `ttl` (this one included). Per-endpoint limits are shared out among them, so they hold
    /// across nodes. A backend one process owns alone answers 1.
    async fn live_nodes(&self, _node: &str, _ttl: std::time::Duration) -> Result<u32> {
        Ok(1)
    }
}

/// Removing old payloads and events.
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Removes the payload of up to `limit` events created before `before` whose deliveries
    /// are all finished (none pending); their rows stay, marked purged. Returns how many.
    async fn purge_payloads(&self, before: Millis, now: Millis, limit: u32) -> Result<u64>;

    /// Deletes events created before `before`, with their deliveries and attempts, when none
    /// of their deliveries is pending. Returns how many events. Row by row, at most `limit`;
    /// a store partitioned by time (PostgreSQL) first drops each whole partition older than
    /// `before` whose deliveries are all finished, however many events it holds, and keeps
    /// the events of a partition that `before` falls inside until the partition is past it
    /// (so an event goes at most one partition interval after `before` says it may). The
    /// rule both keep: nothing younger than `before`, and nothing with a pending delivery,
    /// is ever deleted.
    async fn purge_events(&self, before: Millis, limit: u32) -> Result<u64>;

    /// Makes sure the partitions for events created in `[from, to)` exist, `interval` long
    /// each, and moves into them any row that had landed outside every partition. Returns
    /// how many it made. A store that is not partitioned (SQLite) has nothing to do.
    async fn ensure_partitions(&self, from: Millis, to: Millis, interval: Millis) -> Result<u32> {
        let _ = (from, to, interval);
        Ok(0)
    }

    /// Deletes the meta rows under `prefix` whose value, an expiry in milliseconds, is
    /// before `now` (markers that outlive what they mark: used sign-in links, revoked
    /// sessions). Returns how many.
    async fn purge_expired_meta(&self, prefix: &str, now: Millis) -> Result<u64>;
}

/// An inbound source: a public URL (`/in/{ingest_key}`) that a provider posts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub id: crate::model::SourceId,
    pub tenant_id: String,
    pub name: String,
    pub settings: SourceSettings,
    /// The unguessable part of the ingest URL (shown to the tenant, as a webhook URL is).
    pub ingest_key: String,
    /// Its SHA-256: what a request is looked up by, so no lookup compares the key itself.
    pub ingest_key_hash: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A source's settings, stored as one JSON column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceSettings {
    pub verify: crate::model::SourceVerify,
    /// Where the event name is (`Locator::text`); `None`: the scheme's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Where the provider's delivery id is; `None`: the scheme's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<u32>,
    /// JavaScript that reshapes each verified request before it is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation: Option<crate::model::Transformation>,
}

/// Inbound sources: their settings and the lookup of a request's key.
#[async_trait]
pub trait Sources: Send + Sync + 'static {
    /// `Conflict` if the tenant has a source of that name; `NotFound` without the tenant.
    async fn create_source(&self, source: Source) -> Result<()>;
    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>>;
    async fn list_sources(&self, tenant_id: &str, page: Page) -> Result<Listed<Source>>;
    /// Name, settings and key; `NotFound` if absent, `Conflict` if the name is taken.
    async fn update_source(&self, source: &Source) -> Result<()>;
    /// `NotFound` if absent.
    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<()>;
    /// The source whose ingest key hashes to `key_hash`.
    async fn find_source(&self, key_hash: &str) -> Result<Option<Source>>;
}

/// The whole storage interface, by role: a backend implements the four role traits, and
/// `Arc<dyn Store>` reaches them all. Code that needs one role takes that trait (the
/// dispatcher holds a `dyn Queue`, retention a `dyn Retention`).
pub trait Store: Admin + EventLog + Queue + Retention + Sources {}

impl<T: Admin + EventLog + Queue + Retention + Sources> Store for T {}

/// Where the data lives, from `database_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded SQLite file; one process owns it.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`), shared by any number of nodes.
    Postgres(String),
}

impl Database {
    /// The location for people: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => postgres::redact(url),
        }
    }
}

/// The schema versions an open found and left: equal when there was nothing to migrate,
/// `from` 0 when the database was empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: usize,
    pub to: usize,
}

/// An open store and how it must be started.
pub struct Opened {
    pub store: Arc<dyn Store>,
    /// True when this process owns the data alone, so every lease found at start is stale.
    pub exclusive: bool,
    pub migrated: Migrated,
}

/// Opens (and migrates) the store named by `database`. `pool_size` bounds the connections
/// of a PostgreSQL store.
pub async fn open(database: &Database, pool_size: usize) -> anyhow::Result<Opened> {
    match database {
        Database::Sqlite(path) => {
            let path = path.clone();
            let store =
                tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path)).await??;
            Ok(Opened {
                migrated: store.migrated(),
                store: Arc::new(store),
                exclusive: true,
            })
        }
        Database::Postgres(url) => {
            let store = postgres::PostgresStore::connect(url, pool_size).await?;
            Ok(Opened {
                migrated: store.migrated(),
                store: Arc::new(store),
                exclusive: false,
            })
        }
    }
}

/// Which deliveries a replay re-delivers.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub statuses: Vec<DeliveryStatus>,
    pub endpoint_id: Option<String>,
    pub event_name: Option<String>,
    /// Created at or after.
    pub since: Option<Millis>,
    /// Created before.
    pub until: Option<Millis>,
}
