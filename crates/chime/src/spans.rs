//! Spans exported over OTLP/HTTP (protobuf) when `otlp_endpoint` is set: `publish` (the API
//! request), `store.commit` (the event and its deliveries committed) and `attempt` (one HTTP
//! attempt of a delivery). Their attributes are ids, names, counts and outcomes, never a
//! payload, a URL or a secret.
//!
//! The trace travels with the event as its `traceparent` (`model::TraceParent`): with export
//! on, the event stores the `publish` span's context, so `store.commit` and every `attempt`
//! are its children, and each attempt sends its own span's context; with export off the
//! stored value is the request's own and is sent as it came.
//!
//! The exporter belongs to the running service (built by `run`, flushed when it stops), not
//! to the process: no global tracer provider, so services sharing a process (the tests) each
//! export their own spans. With export off every call here is a no-op that allocates nothing.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::model::TraceParent;

/// How long an export request may take before the batch is dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The service's span source: export on (`otlp`) or off (`default`). Cheap to clone.
#[derive(Clone, Default)]
pub struct Spans {
    export: Option<Arc<Export>>,
}

struct Export {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// A span in progress; ends (and is queued for export) when dropped. Without export, nothing.
pub struct Span {
    inner: Option<opentelemetry_sdk::trace::Span>,
}

impl Spans {
    /// Exports to `endpoint` (an OTLP/HTTP base URL such as `http://127.0.0.1:4318`; spans go
    /// to `<endpoint>/v1/traces`), in batches, from a task of the current Tokio runtime.
    pub fn otlp(endpoint: &str) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        // The async-runtime processor: the hyper client needs the Tokio runtime, which the
        // default processor's own thread does not have.
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("chime")
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("chime");
        Ok(Self {
            export: Some(Arc::new(Export { provider, tracer })),
        })
    }

    /// Starts span `name` as a child of `parent` (a new trace without one). `attributes` is
    /// called only when exporting.
    pub fn start(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: Option<&TraceParent>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        let Some(export) = &self.export else {
            return Span { inner: None };
        };
        let cx = parent.map_or_else(Context::new, |p| {
            Context::new().with_remote_span_context(remote(p))
        });
        let span = export
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes())
            .start_with_context(&export.tracer, &cx);
        Span { inner: Some(span) }
    }

    /// Sends what is queued and stops exporting (at shutdown, after the last attempt).
    pub async fn flush(&self) {
        let Some(export) = self.export.clone() else {
            return;
        };
        // The provider waits for its export task: off the async threads.
        let done = tokio::task::spawn_blocking(move || export.provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }
}

impl Span {
    /// This span's context as a `traceparent`, for the event to store or the attempt to
    /// send; `None` without export.
    pub fn traceparent(&self) -> Option<TraceParent> {
        let cx = self.inner.as_ref()?.span_context();
        TraceParent::parse(&format!(
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8()
        ))
    }

    /// Adds an attribute; `attribute` is called only when exporting.
    pub fn set(&mut self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(span) = &mut self.inner {
            span.set_attribute(attribute());
        }
    }

    /// Marks the span failed, with a short reason (an error code or kind, never input).
    pub fn fail(&mut self, reason: &'static str) {
        if let Some(span) = &mut self.inner {
            span.set_status(Status::error(reason));
        }
    }
}

/// The span context a stored `traceparent` names (parsed, so its ids are valid hex).
fn remote(p: &TraceParent) -> SpanContext {
    let flags = u8::from_str_radix(&p.as_str()[53..], 16).unwrap_or(0);
    SpanContext::new(
        TraceId::from_hex(p.trace_id()).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(p.parent_id()).unwrap_or(SpanId::INVALID),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_spans_are_nothing() {
        let spans = Spans::default();
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let mut span = spans.start("attempt", SpanKind::Client, Some(&parent), || {
            unreachable!("attributes are not built without export")
        });
        span.set(|| unreachable!());
        span.fail("status");
        assert!(span.traceparent().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_continues_its_parents_trace() {
        let spans = Spans::otlp("http://127.0.0.1:9").unwrap();
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = spans.start("attempt", SpanKind::Client, Some(&parent), Vec::new);
        let child = span.traceparent().unwrap();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.parent_id(), parent.parent_id());
        assert!(child.as_str().ends_with("-01"), "sampled, as the parent");
        let root = spans.start("publish", SpanKind::Server, None, Vec::new);
        assert_ne!(root.traceparent().unwrap().trace_id(), parent.trace_id());
        drop((span, root));
        // Nothing listens there: the export fails, and flushing still returns.
        spans.flush().await;
    }
}
