//! The API's request and response bodies: one set of types, read and written by the server's
//! handlers (`api/*.rs`) and by the CLI's client (`cli/*.rs`), so the two cannot disagree on
//! a field's name or type.
//!
//! Requests skip absent fields when serialized (the CLI sends only what the user gave);
//! PATCH bodies tell "absent" (leave it) from `null` (clear it) with `Option<Option<T>>`.
//! Times are RFC 3339 text, as the API shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

pub use crate::store::DeliveryStatus;

/// The shape of every list: `{"data": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListOut<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// For PATCH bodies: a field present as `null` (clear it) and an absent field (leave it)
/// differ. Use with `#[serde(default, deserialize_with = "nullable")]` on `Option<Option<T>>`.
pub fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `?limit=&cursor=`, shared by every list.
#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Rows per page, 1 to 250 (default 50).
    pub limit: Option<u32>,
    /// Where the previous page ended: its `next_cursor`.
    pub cursor: Option<String>,
}

// --- path parameters (documentation only: the handlers read them with axum's `Path`) ---

/// `/v1/tenants/{tenant}…`
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// Tenant id
    pub tenant: String,
}

/// `…/endpoints/{endpoint}…`
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EndpointPath {
    /// Tenant id
    pub tenant: String,
    /// Endpoint id (`ep_…`)
    pub endpoint: String,
}

/// `…/deliveries/{delivery}…`
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeliveryPath {
    /// Tenant id
    pub tenant: String,
    /// Delivery id (`dlv_…`)
    pub delivery: String,
}

/// `…/events/{event}`
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventPath {
    /// Tenant id
    pub tenant: String,
    /// Event id (`evt_…`)
    pub event: String,
}

/// `/v1/event-types/{name}`
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventTypePath {
    /// Event name
    pub name: String,
}

// --- tenants -------------------------------------------------------------------------------

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantIn {
    /// A slug of the caller's choice (e.g. their own customer id); generated if absent.
    pub id: Option<String>,
    pub name: Option<String>,
}

/// `PATCH /v1/tenants/{tenant}`: absent fields are left as they are; `null` clears.
#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default, deserialize_with = "nullable")]
    pub name: Option<Option<String>>,
    /// How the customer portal presents this tenant's product; each part left out (or
    /// `null`) falls back to the server's branding.
    #[serde(default, deserialize_with = "nullable")]
    pub branding: Option<Option<crate::model::Branding>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantOut {
    pub id: String,
    pub name: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<crate::model::Branding>,
}

/// A tenant's API token, shown once, when created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenOut {
    pub token: String,
    pub tenant_id: String,
}

// --- endpoints -----------------------------------------------------------------------------

/// How an endpoint signs: `hmac` (`v1` signatures, `whsec_…` secrets) or `ed25519` (`v1a`,
/// `whsk_…` private keys whose `whpk_…` public key receivers verify with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SignatureScheme {
    Hmac,
    Ed25519,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    /// The receiver: `http(s)://…`, or the broker of a `destination` (`nats://`, `amqp://`,
    /// `redis://`), without credentials (they go in `auth`).
    pub url: String,
    /// What receives the deliveries (default `{"type": "http"}`): a NATS subject, a RabbitMQ
    /// exchange or a Redis stream at the broker `url` names.
    pub destination: Option<crate::model::Destination>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// A secret of the user's own: `whsec_…` (HMAC) or `whsk_…` (Ed25519); generated if absent.
    pub secret: Option<String>,
    /// The scheme of a generated secret (default `hmac`).
    pub signature: Option<SignatureScheme>,
    pub max_in_flight: Option<u32>,
    pub rate_limit_per_s: Option<u32>,
    pub ordered: Option<bool>,
    pub headers: Option<BTreeMap<String, String>>,
    pub filter: Option<String>,
    /// TLS beyond the system's roots: `ca_pem`, `client_cert_pem` + `client_key_pem` (mutual
    /// TLS), or `insecure_skip_verify`.
    pub tls: Option<crate::model::TlsSettings>,
    /// `{"type": "basic", "username", "password"}` or `{"type":
    /// "oauth2_client_credentials", "token_url", "client_id", "client_secret", "scope"?,
    /// "audience"?}`. Write-only: answers show the type and the non-secret parts.
    pub auth: Option<crate::model::EndpointAuth>,
    /// An egress proxy for this endpoint, `http://host:port`.
    pub proxy: Option<String>,
    /// Receive only events from these sources (`src_…`).
    pub sources: Option<Vec<String>>,
    /// JavaScript defining `function handler(webhook) { … return webhook; }`, run on each
    /// delivery before its first attempt (at most 64 KiB; refused with 422, line and column
    /// if it does not compile).
    pub transformation: Option<String>,
    /// Whether the transformation runs (default true); off keeps the code.
    pub transformation_enabled: Option<bool>,
}

/// `PATCH …/endpoints/{id}`: absent fields are left as they are; `null` clears a setting.
#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub url: Option<String>,
    /// Replaces the destination (`null`: HTTP); checked together with the `url`.
    #[serde(default, deserialize_with = "nullable")]
    pub destination: Option<Option<crate::model::Destination>>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_in_flight: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    pub rate_limit_per_s: Option<Option<u32>>,
    pub ordered: Option<bool>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub filter: Option<Option<String>>,
    /// Replaces all TLS settings (`null`: the system's roots only).
    #[serde(default, deserialize_with = "nullable")]
    pub tls: Option<Option<crate::model::TlsSettings>>,
    /// Replaces the authentication (`null`: none).
    #[serde(default, deserialize_with = "nullable")]
    pub auth: Option<Option<crate::model::EndpointAuth>>,
    #[serde(default, deserialize_with = "nullable")]
    pub proxy: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub sources: Option<Option<Vec<String>>>,
    /// Replaces the transformation's code (`null`: removes it).
    #[serde(default, deserialize_with = "nullable")]
    pub transformation: Option<Option<String>>,
    /// Turns the transformation on or off, keeping its code.
    pub transformation_enabled: Option<bool>,
}

/// `POST …/endpoints/{id}/transformation/test`: a sample to run the transformation on.
#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformationTestIn {
    /// The sample's event name.
    pub event: String,
    /// The sample's `data`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Code to try instead of the endpoint's saved transformation (what an editor sends
    /// before saving); the endpoint's is used when absent.
    pub code: Option<String>,
}

/// What a transformation made of a sample, or why it failed; `logs` and `took_ms` either way.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransformationTestOut {
    /// True when the run returned a webhook that chime would send (or cancel).
    pub ok: bool,
    /// The event name after the transformation.
    pub event: Option<String>,
    /// The JSON body that would be sent (`{"event", "data"}`), when it is JSON.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// The body that would be sent, when the transformation set `body` to a string.
    pub body: Option<String>,
    pub content_type: Option<String>,
    /// The extra headers that would be sent (the endpoint's with the transformation's).
    pub headers: Option<BTreeMap<String, String>>,
    pub url: Option<String>,
    /// Set when the transformation cancels the delivery: why.
    pub cancelled: Option<String>,
    /// Why the run failed: the limit it hit, or the exception with its line and column.
    pub error: Option<TransformationErrorOut>,
    /// What `console.log` (and `.info`, `.warn`, `.error`) wrote, in order.
    pub logs: Vec<String>,
    pub took_ms: f64,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransformationErrorOut {
    /// `compile`, `runtime`, `time_limit`, `memory_limit`, `output_too_large`,
    /// `code_too_large`, `bad_result` or `invalid_output`.
    pub kind: String,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// An endpoint's TLS settings as answers show them: never the private key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TlsOut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// A client certificate and key are set (mutual TLS).
    pub client_certificate: bool,
    pub insecure_skip_verify: bool,
}

/// An endpoint's authentication as answers show it: never the password or client secret.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuthOut {
    /// `basic` or `oauth2_client_credentials`.
    #[serde(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub destination: crate::model::Destination,
    pub signature: SignatureScheme,
    /// The Ed25519 public key receivers verify with (`whpk_…`); not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    pub max_in_flight: Option<u32>,
    pub rate_limit_per_s: Option<u32>,
    pub ordered: bool,
    pub headers: BTreeMap<String, String>,
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOut>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOut>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// The transformation's JavaScript, if the endpoint has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation: Option<String>,
    /// Whether it runs (false when there is none).
    pub transformation_enabled: bool,
    /// What an operator should know about its settings (e.g. certificates not verified).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why chime disabled it (a 410 answer, or failing too long).
    pub disabled_reason: Option<String>,
    /// Since when it has been failing (probed only), if it is.
    pub failing_since: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Shown on creation only; afterwards via `GET …/secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// An endpoint, and for an ordered one, the delivery at the head of its queue when that head
/// has failed attempts: the one blocking everything behind it (skip it with
/// `POST …/deliveries/{id}/skip`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointDetailOut {
    #[serde(flatten)]
    pub endpoint: EndpointOut,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<DeliveryOut>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretOut {
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// How long the old secret keeps signing beside the new one; 0 stops it at once.
    pub grace_period_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotatedOut {
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    pub previous_secret_expires_at: Option<String>,
}

// --- events --------------------------------------------------------------------------------

/// `POST …/endpoints/{endpoint}/test`: an event for one endpoint; both fields optional.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEventIn<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub data: Option<&'a RawValue>,
}

/// `POST …/events`. `data` stays raw JSON: it is stored and sent with its bytes as given.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn<'a> {
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    #[schema(value_type = serde_json::Value)]
    pub data: &'a RawValue,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishedDeliveryOut {
    pub id: String,
    pub endpoint_id: String,
    /// `pending`, or `skipped` for a disabled endpoint (replayable later).
    pub status: DeliveryStatus,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishedOut {
    pub id: String,
    pub event: String,
    pub timestamp: String,
    pub deliveries: Vec<PublishedDeliveryOut>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventOut {
    pub id: String,
    pub event: String,
    pub timestamp: String,
    pub idempotency_key: Option<String>,
    /// `null` once retention purged the payload (see `purged_at`).
    #[schema(value_type = serde_json::Value)]
    pub data: Box<RawValue>,
    /// When retention removed the payload; the event and its delivery log remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryOut>>,
    /// The source that received it (absent for events published through the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// A source event's content type; its `data` is the body (JSON, or the text of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// An event name.
    pub event: Option<String>,
}

// --- deliveries ----------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryOut {
    pub id: String,
    pub event_id: String,
    /// The event's name.
    pub event: String,
    pub endpoint_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error_kind: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptOut {
    pub id: String,
    pub delivery_id: String,
    pub started_at: String,
    pub duration_ms: u32,
    pub succeeded: bool,
    pub status_code: Option<u16>,
    /// Stable machine reason of a failure (`timeout`, `connect`, `status`, …).
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// The first bytes of the response body, as text.
    pub response: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub status: Option<String>,
    pub endpoint: Option<String>,
    /// An event id (`evt_…`).
    pub event_id: Option<String>,
    /// An event name, as everywhere else in the API.
    pub event: Option<String>,
    /// RFC 3339; deliveries created at or after.
    pub since: Option<String>,
    /// RFC 3339; deliveries created before.
    pub until: Option<String>,
}

/// `POST …/replay`: which deliveries to send again.
#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// Which deliveries: `failed` (default: the dead letters), `skipped`, `succeeded`.
    pub status: Option<Vec<String>>,
    pub endpoint_id: Option<String>,
    /// An event name.
    pub event: Option<String>,
    /// RFC 3339; deliveries created at or after.
    pub since: Option<String>,
    /// RFC 3339; deliveries created before.
    pub until: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayOut {
    pub dry_run: bool,
    /// Deliveries that match (dry run) or were re-queued.
    pub count: u64,
    /// True when the limit per call was reached and more deliveries may match.
    pub more: bool,
}

// --- event types ---------------------------------------------------------------------------

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeIn {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema that published `data` must satisfy.
    pub schema: Option<serde_json::Value>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypePatch {
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub schema: Option<Option<serde_json::Value>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventTypeOut {
    pub name: String,
    pub description: String,
    pub schema: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// A metrics token, shown once, when created: it reads `GET /metrics` and nothing else.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricsTokenOut {
    pub token: String,
    /// Always `metrics`.
    pub scope: String,
}

// --- sign-in links: the customer portal and the dashboard ----------------------------------

#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionIn {
    /// How long the link (and the session it opens) lasts: 1 s to 7 days; 3600 if absent.
    pub expires_in_s: Option<u64>,
    /// A read-only portal shows everything and changes nothing.
    pub read_only: Option<bool>,
}

/// A single-use sign-in link: the portal for a tenant's customer, or the dashboard.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignInLinkOut {
    /// Open it once; it is exchanged for a session cookie and refused afterwards.
    pub url: String,
    pub expires_at: String,
}

/// Every error: `{"code": "invalid_request", "detail": "…"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorOut {
    pub code: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the CLI sends is what the handler reads: absent stays absent, a cleared setting
    /// travels as `null`.
    #[test]
    fn patch_bodies_keep_absent_apart_from_null() {
        let patch = EndpointPatch {
            filter: Some(None),
            max_in_flight: Some(Some(4)),
            ..Default::default()
        };
        let text = serde_json::to_string(&patch).unwrap();
        assert_eq!(text, r#"{"max_in_flight":4,"filter":null}"#);
        let back: EndpointPatch = serde_json::from_str(&text).unwrap();
        assert_eq!(back.filter, Some(None));
        assert_eq!(back.max_in_flight, Some(Some(4)));
        assert_eq!(back.rate_limit_per_s, None);
        assert_eq!(back.url, None);
    }

    #[test]
    fn event_data_keeps_its_bytes() {
        let text = r#"{"id":"evt_1","event":"a","timestamp":"t","idempotency_key":null,"data":{"z":1,"a":[ 2 ]}}"#;
        let e: EventOut = serde_json::from_str(text).unwrap();
        assert_eq!(e.data.get(), r#"{"z":1,"a":[ 2 ]}"#);
    }

    #[test]
    fn unknown_request_fields_are_refused_and_unknown_answer_fields_ignored() {
        assert!(serde_json::from_str::<TenantIn>(r#"{"nmae":"x"}"#).is_err());
        let t: TenantOut =
            serde_json::from_str(r#"{"id":"a","name":null,"created_at":"t","new":1}"#).unwrap();
        assert_eq!(t.id, "a");
    }
}

// --- sources ---------------------------------------------------------------------------------

/// `…/sources/{source}`
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SourcePath {
    /// Tenant id
    pub tenant: String,
    /// Source id (`src_…`)
    pub source: String,
}

/// `POST …/sources`: a public URL a provider posts to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceIn {
    /// Lower-case letters, digits, `-` and `_`, at most 64; unique in the tenant.
    pub name: String,
    /// `{"scheme": "stripe"|"github"|"shopify"|"standard"|"hmac"|"basic"|"none", …}`.
    pub verify: crate::model::SourceVerify,
    /// Where the event name is: a JSON pointer (`/type`) or `header:Name`; default per scheme.
    pub event_name: Option<String>,
    /// Where the provider's delivery id is (for de-duplication); default per scheme.
    pub dedupe_key: Option<String>,
    /// Largest body accepted (at most the server's `max_body_bytes`, the default).
    pub max_body_bytes: Option<u64>,
    /// Requests per second accepted; more get 429 with `Retry-After`.
    pub rate_limit_per_s: Option<u32>,
    /// JavaScript defining `handler(webhook)`, run on each verified request before it is
    /// stored: `data` (the body, parsed when JSON) becomes the event's body, `event` its
    /// name; `cancel = true` accepts the request and stores nothing.
    #[serde(default)]
    pub transformation: Option<String>,
    /// Whether the transformation runs (default true); off keeps the code.
    #[serde(default)]
    pub transformation_enabled: Option<bool>,
}

/// `PATCH …/sources/{source}`: absent fields stay; `null` clears.
#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcePatch {
    pub name: Option<String>,
    /// Replaces the verification (and its secrets).
    pub verify: Option<crate::model::SourceVerify>,
    #[serde(default, deserialize_with = "nullable")]
    pub event_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub dedupe_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_body_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub rate_limit_per_s: Option<Option<u32>>,
    /// Replaces the transformation's code (`null`: removes it).
    #[serde(default, deserialize_with = "nullable")]
    pub transformation: Option<Option<String>>,
    /// Turns the transformation on or off, keeping its code.
    pub transformation_enabled: Option<bool>,
}

/// A source as answers show it: the scheme and how many secrets, never the secrets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SourceOut {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub scheme: String,
    pub secrets: usize,
    /// Where the event name is read (the setting, or the scheme's default).
    pub event_name: String,
    pub dedupe_key: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub rate_limit_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation: Option<String>,
    #[serde(default)]
    pub transformation_enabled: bool,
    /// Where the provider posts: `{public_url}/in/{key}`.
    pub ingest_url: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A request a source refused (kept per node, newest first, at most 100).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RejectionOut {
    pub at: String,
    pub code: String,
    pub detail: String,
}
