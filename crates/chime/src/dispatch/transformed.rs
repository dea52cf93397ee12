//! An endpoint's transformation applied to one delivery: the webhook the JavaScript sees,
//! and what chime makes of what it returns (checked like the endpoint's own settings), kept
//! with the delivery so that every retry sends the same bytes.
//!
//! With a transformation the body sent is what `data` holds, as JSON (or `body`, when the
//! transformation sets it to a string): a receiver that wants `{"text": …}` gets exactly
//! that. To keep chime's envelope, a transformation returns it in `data`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::http::Target;
use crate::model::Inbound;
use crate::transform::{self, Body, Input, Output};

/// Most bytes of a transformed URL (as for an endpoint's own).
const MAX_URL: usize = 2048;

/// An endpoint's transformation as its target carries it (only when it is on).
#[derive(Debug)]
pub struct Spec {
    /// The endpoint and the code's version: what the sandbox caches the compiled code by.
    pub key: transform::TransformKey,
    pub code: Arc<str>,
    /// The endpoint's own extra headers, which the transformation sees (not the
    /// credentials chime adds: those stay out of tenant code and its logs).
    pub headers: BTreeMap<String, String>,
}

impl Spec {
    pub fn of(endpoint: &crate::store::Endpoint) -> Option<Arc<Self>> {
        let t = endpoint
            .settings
            .transformation
            .as_ref()
            .filter(|t| t.enabled)?;
        Some(Arc::new(Self {
            key: transform::TransformKey {
                owner: endpoint.id.to_string(),
                version: t.version(),
            },
            code: Arc::from(t.code.as_str()),
            headers: endpoint.settings.headers.clone(),
        }))
    }
}

/// What a transformation made of a delivery, as it is stored (`deliveries.transformed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transformed {
    /// The event's name after the transformation.
    pub event: String,
    /// The exact body sent.
    pub body: String,
    pub content_type: String,
    /// The extra headers, over the endpoint's own (checked by `model::checked_headers`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Where it goes: the endpoint's URL, or another path or query of the same origin.
    pub url: String,
}

/// What to do with the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    Send(Transformed),
    /// Not sent: the delivery is skipped, for this reason.
    Cancel(String),
}

/// Why a transformation's result cannot be sent; fails the attempt like an error thrown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The webhook the transformation sees: the event's name and `data` (a source event's
/// whole body, as JSON when it parses, else as text), the endpoint's extra headers and URL.
pub fn input_of(body: &[u8], inbound: Option<&Inbound>, spec: &Spec, target: &Target) -> Input {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        event: String,
        data: Option<Box<RawValue>>,
    }
    let (event, data) = match inbound {
        None => match serde_json::from_slice::<Envelope>(body) {
            Ok(e) => (e.event, e.data.unwrap_or_else(null)),
            Err(_) => (String::new(), text_of(body)),
        },
        Some(i) => (i.event.clone(), json_or_text(body)),
    };
    Input {
        event,
        data,
        headers: spec.headers.clone(),
        url: target.uri.to_string(),
    }
}

/// The body as JSON when it is JSON, else as a JSON string of its text.
pub fn json_or_text(body: &[u8]) -> Box<RawValue> {
    match std::str::from_utf8(body) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            RawValue::from_string(text.to_owned()).unwrap_or_else(|_| text_of(body))
        }
        _ => text_of(body),
    }
}

fn text_of(body: &[u8]) -> Box<RawValue> {
    serde_json::value::to_raw_value(&String::from_utf8_lossy(body)).unwrap_or_else(|_| null())
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// Checks what the transformation returned and makes the request's parts of it: headers by
/// the rule endpoint headers follow, a URL only within the endpoint's origin (and none but
/// the endpoint's own for a broker), the body as JSON or text.
pub fn made_of(out: Output, target: &Target) -> Result<Made, Refused> {
    if let Some(reason) = out.cancel {
        return Ok(Made::Cancel(reason));
    }
    let headers = crate::model::checked_headers(out.headers).map_err(Refused)?;
    let url = checked_url(&out.url, target)?;
    let (body, content_type) = body_of(out.body);
    Ok(Made::Send(Transformed {
        event: out.event,
        body,
        content_type: content_type.to_owned(),
        headers,
        url,
    }))
}

/// The bytes a transformation's body becomes and their content type: JSON as the handler
/// left `data`, or the text it set as `body`.
pub fn body_of(body: Body) -> (String, &'static str) {
    match body {
        Body::Json(raw) => (raw.get().to_owned(), "application/json"),
        Body::Text(t) => (t, "text/plain; charset=utf-8"),
    }
}

/// The endpoint's URL or one of the same scheme, host and port: a transformation chooses
/// the path and the query, never the receiver.
fn checked_url(url: &str, target: &Target) -> Result<String, Refused> {
    let own = &target.uri;
    if *own == *url {
        return Ok(url.to_owned());
    }
    if target.broker.is_some() {
        return Err(Refused(
            "url: a broker destination's URL cannot be changed by a transformation".into(),
        ));
    }
    if url.len() > MAX_URL {
        return Err(Refused(format!("url: at most {MAX_URL} bytes")));
    }
    let new: http::Uri = url
        .parse()
        .map_err(|e| Refused(format!("url {url:?} is not a URL: {e}")))?;
    let same = new.scheme() == own.scheme()
        && new.host().map(str::to_ascii_lowercase) == own.host().map(str::to_ascii_lowercase)
        && new.port_u16() == own.port_u16()
        && new.authority().is_some_and(|a| !a.as_str().contains('@'));
    if !same {
        return Err(Refused(format!(
            "url {url:?} leaves the endpoint's origin ({}://{}): a transformation may change only the path and the query",
            own.scheme_str().unwrap_or("http"),
            own.authority().map_or("", |a| a.as_str())
        )));
    }
    Ok(new.to_string())
}

/// The request a transformed delivery makes: the endpoint's target with the URL and headers
/// changed, the body, and its content type (carried as a source event's would be).
pub fn apply(
    t: &Transformed,
    target: &Arc<Target>,
    inbound: Option<&Arc<Inbound>>,
) -> (Arc<Target>, Bytes, Option<Arc<Inbound>>) {
    let mut changed = Target::clone(target);
    if let Ok(uri) = t.url.parse() {
        changed.uri = uri;
    }
    for (name, value) in &t.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            changed.headers.insert(n, v);
        }
    }
    // The dispatcher reads a source event's content type and passed-on headers from its
    // `Inbound`; a transformed delivery's travel the same way.
    let carried = Inbound {
        source_id: inbound.map_or_else(
            || crate::model::SourceId::from_stored(""),
            |i| i.source_id.clone(),
        ),
        content_type: t.content_type.clone(),
        headers: inbound.map_or_else(Vec::new, |i| i.headers.clone()),
        event: t.event.clone(),
    };
    (
        Arc::new(changed),
        Bytes::from(t.body.clone().into_bytes()),
        Some(Arc::new(carried)),
    )
}

/// How a failed run is recorded on the attempt: which limit, the exception and where, or
/// what chime refused of its result.
fn error_text(e: impl std::fmt::Display) -> String {
    format!("transformation: {e}")
}

/// A delivery made ready for its attempt.
pub enum Prepared {
    /// This request: as stored, or transformed (now, or at an earlier attempt); `keep` is
    /// the result to store with the delivery when this attempt made it.
    Send {
        target: Arc<Target>,
        body: Bytes,
        inbound: Option<Arc<Inbound>>,
        keep: Option<Arc<str>>,
    },
    /// The transformation cancelled the delivery.
    Cancelled(String),
    /// The transformation failed (a limit, an exception, a result chime will not send).
    Failed(String),
}

/// Runs the endpoint's transformation for `job` on the sandbox's pool (never on the
/// dispatcher's workers), or reuses what an earlier attempt stored.
pub async fn prepare(
    engine: &transform::Engine,
    job: &crate::store::Job,
    target: &Arc<Target>,
) -> Prepared {
    let Some(spec) = &target.transformation else {
        return Prepared::Send {
            target: target.clone(),
            body: job.body.clone(),
            inbound: job.inbound.clone(),
            keep: None,
        };
    };
    if let Some(stored) = &job.transformed
        && let Ok(t) = serde_json::from_str::<Transformed>(stored)
    {
        let (target, body, inbound) = apply(&t, target, job.inbound.as_ref());
        return Prepared::Send {
            target,
            body,
            inbound,
            keep: None,
        };
    }
    let input = input_of(&job.body, job.inbound.as_deref(), spec, target);
    let out = match engine.run(spec.key.clone(), spec.code.clone(), input).await {
        Ok(out) => out,
        Err(e) => return Prepared::Failed(error_text(e)),
    };
    match made_of(out, target) {
        Ok(Made::Cancel(reason)) => Prepared::Cancelled(reason),
        Ok(Made::Send(t)) => {
            let (changed, body, inbound) = apply(&t, target, job.inbound.as_ref());
            let keep = serde_json::to_string(&t).ok().map(Arc::from);
            Prepared::Send {
                target: changed,
                body,
                inbound,
                keep,
            }
        }
        Err(refused) => Prepared::Failed(error_text(refused)),
    }
}
