//! Rows as both backends read them: the column lists and the mapping from a row to a row
//! type, written once over [`Columns`], a narrow row-access trait each backend implements for
//! its own row type (`sqlite::SqliteRow`-style adapters in `sqlite/mod.rs` and
//! `postgres/mod.rs`). Widths follow the PostgreSQL schema (INTEGER is `i32`, BIGINT
//! `i64`); SQLite reads any integer at any width.

use bytes::Bytes;

use crate::model::{AttemptId, DeliveryId, EndpointId, EventId, SourceId, TraceParent};

use super::{
    Attempt, Delivery, DeliveryStatus, Endpoint, EndpointSettings, Event, EventType, Listed, Page,
    Source, SourceSettings, Tenant,
};

/// Typed reads of a row's columns by position.
pub trait Columns {
    type Error;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, i: usize) -> Result<i32, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i32>, Self::Error>;
    fn bigint(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_bigint(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn boolean(&self, i: usize) -> Result<bool, Self::Error>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, Self::Error>;
}

/// A row type with the `seq` that orders and pages it.
pub type WithSeq<T> = (T, i64);

pub const TENANT_COLS: &str = "id, name, created_at, seq, branding";
pub fn tenant<R: Columns>(r: &R) -> Result<WithSeq<Tenant>, R::Error> {
    Ok((
        Tenant {
            id: r.text(0)?,
            name: r.opt_text(1)?,
            created_at: r.bigint(2)?,
            branding: r.opt_text(4)?.and_then(|b| serde_json::from_str(&b).ok()),
        },
        r.bigint(3)?,
    ))
}

/// A tenant's branding as its column holds it (JSON; NULL when there is none).
pub fn branding_text(t: &Tenant) -> Option<String> {
    t.branding
        .as_ref()
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::to_string(b).expect("branding serializes"))
}

pub const SOURCE_COLS: &str =
    "id, tenant_id, name, settings, ingest_key, ingest_key_hash, created_at, updated_at, seq";
pub fn source<R: Columns>(r: &R) -> Result<WithSeq<Source>, R::Error> {
    let settings: Option<SourceSettings> = serde_json::from_str(&r.text(3)?).ok();
    Ok((
        Source {
            id: SourceId::from_stored(r.text(0)?),
            tenant_id: r.text(1)?,
            name: r.text(2)?,
            // Written by this code from a checked value; unreadable only if edited by hand,
            // and then it lets nothing in (`SourceVerify::verify` refuses an empty basic
            // user; scheme none is never the fallback).
            settings: settings.unwrap_or(SourceSettings {
                verify: crate::model::SourceVerify::Basic {
                    username: String::new(),
                    password: String::new(),
                },
                event_name: None,
                dedupe_key: None,
                max_body_bytes: None,
                rate_limit_per_s: None,
                transformation: None,
            }),
            ingest_key: r.text(4)?,
            ingest_key_hash: r.text(5)?,
            created_at: r.bigint(6)?,
            updated_at: r.bigint(7)?,
        },
        r.bigint(8)?,
    ))
}

pub fn source_settings_json(s: &SourceSettings) -> String {
    serde_json::to_string(s).expect("source settings serialize")
}

pub const ENDPOINT_COLS: &str = "id, tenant_id, url, events, description, enabled, secret, created_at, updated_at, seq, \
     previous_secret, previous_secret_expires_at, settings, disabled_reason, failing_since";
pub fn endpoint<R: Columns>(r: &R) -> Result<WithSeq<Endpoint>, R::Error> {
    Ok((
        Endpoint {
            id: EndpointId::from_stored(r.text(0)?),
            tenant_id: r.text(1)?,
            url: r.text(2)?,
            events: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
            description: r.text(4)?,
            enabled: r.boolean(5)?,
            secret: r.text(6)?,
            created_at: r.bigint(7)?,
            updated_at: r.bigint(8)?,
            previous_secret: r.opt_text(10)?,
            previous_secret_expires_at: r.opt_bigint(11)?,
            settings: serde_json::from_str(&r.text(12)?).unwrap_or_default(),
            disabled_reason: r.opt_text(13)?,
            failing_since: r.opt_bigint(14)?,
        },
        r.bigint(9)?,
    ))
}

pub const EVENT_COLS: &str = "id, tenant_id, name, payload, idempotency_key, created_at, seq, purged_at, traceparent, inbound";
pub fn event<R: Columns>(r: &R) -> Result<WithSeq<Event>, R::Error> {
    Ok((
        Event {
            id: EventId::from_stored(r.text(0)?),
            tenant_id: r.text(1)?,
            name: r.text(2)?,
            payload: Bytes::from(r.bytes(3)?),
            idempotency_key: r.opt_text(4)?,
            created_at: r.bigint(5)?,
            purged_at: r.opt_bigint(7)?,
            traceparent: TraceParent::from_stored(r.opt_text(8)?),
            inbound: crate::model::Inbound::from_stored(r.opt_text(9)?),
        },
        r.bigint(6)?,
    ))
}

pub const EVENT_TYPE_COLS: &str = "name, description, schema, created_at, updated_at, seq";
pub fn event_type<R: Columns>(r: &R) -> Result<WithSeq<EventType>, R::Error> {
    Ok((
        EventType {
            name: r.text(0)?,
            description: r.text(1)?,
            schema: r.opt_text(2)?,
            created_at: r.bigint(3)?,
            updated_at: r.bigint(4)?,
        },
        r.bigint(5)?,
    ))
}

pub const DELIVERY_COLS: &str = "id, tenant_id, event_id, event_name, endpoint_id, status, attempts, \
     next_attempt_at, last_attempt_at, last_status_code, last_error_kind, created_at, updated_at, seq";
pub fn delivery<R: Columns>(r: &R) -> Result<WithSeq<Delivery>, R::Error> {
    Ok((
        Delivery {
            id: DeliveryId::from_stored(r.text(0)?),
            tenant_id: r.text(1)?,
            event_id: EventId::from_stored(r.text(2)?),
            event_name: r.text(3)?,
            endpoint_id: EndpointId::from_stored(r.text(4)?),
            status: DeliveryStatus::parse(&r.text(5)?).unwrap_or(DeliveryStatus::Pending),
            attempts: u32::try_from(r.int(6)?).unwrap_or(0),
            next_attempt_at: r.opt_bigint(7)?,
            last_attempt_at: r.opt_bigint(8)?,
            last_status_code: r.opt_int(9)?.and_then(|c| u16::try_from(c).ok()),
            last_error_kind: r.opt_text(10)?,
            created_at: r.bigint(11)?,
            updated_at: r.bigint(12)?,
        },
        r.bigint(13)?,
    ))
}

pub const ATTEMPT_COLS: &str = "id, delivery_id, started_at, duration_ms, status_code, error_kind, error, response, succeeded, seq";
pub fn attempt<R: Columns>(r: &R) -> Result<WithSeq<Attempt>, R::Error> {
    Ok((
        Attempt {
            id: AttemptId::from_stored(r.text(0)?),
            delivery_id: DeliveryId::from_stored(r.text(1)?),
            started_at: r.bigint(2)?,
            duration_ms: u32::try_from(r.bigint(3)?.max(0)).unwrap_or(u32::MAX),
            status_code: r.opt_int(4)?.and_then(|c| u16::try_from(c).ok()),
            error_kind: r.opt_text(5)?,
            error: r.opt_text(6)?,
            response: r.opt_text(7)?,
            succeeded: r.boolean(8)?,
        },
        r.bigint(9)?,
    ))
}

/// Turns `limit + 1` fetched rows into a page and the cursor of the next one.
pub fn paginate<T>(mut rows: Vec<(T, i64)>, limit: u32) -> Listed<T> {
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|(_, seq)| *seq)
    } else {
        None
    };
    Listed {
        rows: rows.into_iter().map(|(t, _)| t).collect(),
        next_cursor,
    }
}

/// The `seq` bound of a page: rows before the cursor, newest first.
pub fn cursor(page: Page) -> i64 {
    page.cursor.unwrap_or(i64::MAX)
}

/// An endpoint's settings as stored (a JSON column in both backends).
pub fn settings_json(settings: &EndpointSettings) -> String {
    serde_json::to_string(settings).unwrap_or_else(|_| "{}".into())
}
