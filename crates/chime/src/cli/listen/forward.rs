//! Forwarding received webhooks to the local app (`--forward-to`): a bounded queue drained a
//! few at a time, with retries, reported to the sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Serialize;

use super::super::client::root_cause;
use super::super::record::HOP_HEADERS;
use super::{FORWARD_BACKOFF, FORWARD_CONCURRENCY, SinkMsg, Webhook};

/// The result of forwarding one webhook, as printed.
#[derive(Serialize)]
pub(super) struct ForwardReport {
    pub(super) url: String,
    pub(super) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_code: Option<u16>,
    pub(super) attempts: u32,
    /// Duration of the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) skipped: Option<&'static str>,
}

pub(super) async fn forwarder(
    mut rx: tokio::sync::mpsc::Receiver<Arc<Webhook>>,
    routes: Arc<super::routes::Routes>,
    http: reqwest::Client,
    retries: u32,
    timeout: Duration,
    sink: std::sync::mpsc::Sender<SinkMsg>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(FORWARD_CONCURRENCY));
    while let Some(hook) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        // Planned only when a route exists (`receive` checks), so there is one.
        let Some(target) = routes.pick(hook.event.as_deref()).cloned() else {
            continue;
        };
        let (http, sink) = (http.clone(), sink.clone());
        tokio::spawn(async move {
            let report = forward_one(&http, &target, &hook, retries, timeout).await;
            let _ = sink.send(SinkMsg::Forwarded(hook, report));
            drop(permit);
        });
    }
    // Wait for the forwards in flight.
    let _ = slots.acquire_many(FORWARD_CONCURRENCY as u32).await;
}

pub(super) async fn forward_one(
    http: &reqwest::Client,
    target: &reqwest::Url,
    hook: &Webhook,
    retries: u32,
    timeout: Duration,
) -> ForwardReport {
    let mut headers = hook.header_map.clone();
    for name in HOP_HEADERS {
        headers.remove(name);
    }
    let mut report = ForwardReport {
        url: target.to_string(),
        ok: false,
        status_code: None,
        attempts: 0,
        duration_ms: None,
        error: None,
        skipped: None,
    };
    for attempt in 0..=retries {
        if attempt > 0 {
            let wait = FORWARD_BACKOFF[(attempt as usize - 1).min(FORWARD_BACKOFF.len() - 1)];
            tokio::time::sleep(wait).await;
        }
        report.attempts = attempt + 1;
        let started = Instant::now();
        let result = http
            .post(target.clone())
            .headers(headers.clone())
            .body(hook.body.clone())
            .send()
            .await;
        report.duration_ms = Some(started.elapsed().as_millis() as u64);
        match result {
            Ok(resp) => {
                let status = resp.status();
                // Read the answer so the connection can be reused.
                let _ = resp.bytes().await;
                report.status_code = Some(status.as_u16());
                report.ok = status.is_success();
                report.error = None;
                let retryable = status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                if !retryable {
                    return report;
                }
            }
            Err(e) => {
                report.status_code = None;
                report.error = Some(if e.is_timeout() {
                    format!("no answer within {}", humantime::format_duration(timeout))
                } else {
                    root_cause(&e)
                });
            }
        }
    }
    report
}
