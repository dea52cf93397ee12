//! The sink thread: it alone writes stdout and the record file, so a slow terminal or disk
//! never delays an answer to the sender.

use std::io::Write;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::Serialize;

use super::super::check::Verdict;
use super::super::output::{self, Style, clock_time, truncate};
use super::super::record::RecordOut;
use super::forward::ForwardReport;
use super::{Data, ForwardPlan, SinkMsg, Webhook};

#[derive(Default)]
pub(super) struct Stats {
    pub(super) received: u64,
    pub(super) invalid: u64,
    pub(super) repeats: u64,
    pub(super) forwarded: u64,
    pub(super) forward_failed: u64,
}

/// Owns stdout and the record file.
pub(super) struct Sink {
    pub(super) json: bool,
    pub(super) style: Style,
    pub(super) record: Option<std::io::BufWriter<std::fs::File>>,
    pub(super) record_failed: bool,
    pub(super) stats: Stats,
}

impl Sink {
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<SinkMsg>) {
        // A forward can finish before the handler's own message is read; its result then
        // waits here until the webhook itself has been shown (keyed by pointer identity).
        let mut early: Vec<(Arc<Webhook>, ForwardReport)> = Vec::new();
        let mut queued: Vec<Arc<Webhook>> = Vec::new();
        for msg in rx {
            match msg {
                SinkMsg::Notice(text) => eprintln!("{}", self.style.dim(&text)),
                SinkMsg::Webhook(hook, plan) => {
                    self.record(&hook);
                    self.count(&hook);
                    if !hook.shown {
                        continue;
                    }
                    let queued_now = matches!(plan, ForwardPlan::Queued);
                    self.show(&hook, &plan);
                    if queued_now {
                        if let Some(i) = early.iter().position(|(h, _)| Arc::ptr_eq(h, &hook)) {
                            let (h, report) = early.swap_remove(i);
                            self.forwarded(&h, &report);
                        } else {
                            queued.push(hook);
                        }
                    }
                }
                SinkMsg::Forwarded(hook, report) => {
                    if let Some(i) = queued.iter().position(|h| Arc::ptr_eq(h, &hook)) {
                        queued.swap_remove(i);
                        self.forwarded(&hook, &report);
                    } else {
                        early.push((hook, report));
                    }
                }
            }
        }
        if !self.json {
            let s = &self.stats;
            eprintln!(
                "\nstopped: {} webhook{} received ({} invalid, {} repeats; {} forwarded, {} \
                 forwards failed)",
                s.received,
                if s.received == 1 { "" } else { "s" },
                s.invalid,
                s.repeats,
                s.forwarded,
                s.forward_failed
            );
        }
    }

    fn count(&mut self, hook: &Webhook) {
        self.stats.received += 1;
        if hook.verdict.is_invalid() {
            self.stats.invalid += 1;
        }
        if hook.repeat {
            self.stats.repeats += 1;
        }
    }

    fn record(&mut self, hook: &Webhook) {
        let Some(file) = self.record.as_mut() else {
            return;
        };
        let line = RecordOut {
            received_at: &hook.received_at,
            method: &hook.method,
            path: &hook.path,
            headers: &hook.headers,
            body: None,
            body_base64: None,
            webhook_id: hook.webhook_id.as_deref(),
            event: hook.event.as_deref(),
            signature: &hook.verdict,
            repeat: hook.repeat,
            rejected: hook.rejected,
        }
        .with_body(&hook.body);
        let written = serde_json::to_writer(&mut *file, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all(b"\n"))
            // Flushed per line: a killed listener must not lose what it already answered.
            .and_then(|()| file.flush());
        if let Err(e) = written
            && !self.record_failed
        {
            self.record_failed = true;
            eprintln!("warning: writing the record file failed: {e}");
        }
    }

    /// Prints a webhook on arrival: a block on a terminal; in JSON mode one line, unless a
    /// forward is queued, whose result completes the line later.
    fn show(&mut self, hook: &Webhook, plan: &ForwardPlan) {
        if self.json {
            let forward = match plan {
                ForwardPlan::Off => None,
                ForwardPlan::Queued => return,
                ForwardPlan::Skipped(why) => Some(ForwardReport {
                    url: String::new(),
                    ok: false,
                    status_code: None,
                    attempts: 0,
                    duration_ms: None,
                    error: None,
                    skipped: Some(why),
                }),
            };
            self.json_line(hook, forward.as_ref());
            return;
        }
        let s = self.style;
        let mut out = String::new();
        let title = match &hook.event {
            Some(name) => format!("Received event: {}", s.bold(&s.cyan(name))),
            None => s.bold("Received webhook"),
        };
        let repeat = if hook.repeat {
            format!(" {}", s.yellow("(repeat)"))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "\n{title}{repeat}  {}\n",
            s.dim(&clock_time(hook.received_at_ms))
        ));
        out.push_str(&format!("Data: {}\n", truncate(hook.data.text(), 1000)));
        let signature = match hook.verdict.status {
            "valid" => s.green("✓ valid"),
            "invalid" => s.red(&format!(
                "✗ invalid: {}",
                hook.verdict.reason.as_deref().unwrap_or("")
            )),
            _ => s.dim("not checked (no --secret)"),
        };
        out.push_str(&format!(
            "  id: {}   signature: {signature}\n",
            hook.webhook_id.as_deref().unwrap_or("-")
        ));
        if let Some(hint) = hook.verdict.hint.filter(|_| hook.verdict.is_invalid()) {
            out.push_str(&format!("  {}\n", s.dim(&format!("hint: {hint}"))));
        }
        if hook.rejected {
            out.push_str(&format!("  {}\n", s.red("answered 401 (--reject-invalid)")));
        }
        if let ForwardPlan::Skipped(why) = plan {
            out.push_str(&format!(
                "  {}\n",
                s.yellow(&format!("not forwarded: {why}"))
            ));
        } else if hook.repeat {
            out.push_str(&format!(
                "  {}\n",
                s.yellow("repeat of an earlier webhook with this id")
            ));
        }
        output::println_safe(out.trim_end_matches('\n'));
    }

    fn forwarded(&mut self, hook: &Webhook, report: &ForwardReport) {
        if report.ok {
            self.stats.forwarded += 1;
        } else {
            self.stats.forward_failed += 1;
        }
        if self.json {
            self.json_line(hook, Some(report));
            return;
        }
        let s = self.style;
        let id = hook.webhook_id.as_deref().unwrap_or("webhook");
        let tries = if report.attempts > 1 {
            format!(" (after {} attempts)", report.attempts)
        } else {
            String::new()
        };
        let line = match (report.status_code, &report.error) {
            (Some(code), _) => {
                let status = StatusCode::from_u16(code)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|_| code.to_string());
                let status = if report.ok {
                    s.green(&status)
                } else {
                    s.red(&status)
                };
                format!(
                    "  → forwarded {id} to {}: {status} in {} ms{tries}",
                    report.url,
                    report.duration_ms.unwrap_or(0)
                )
            }
            (None, error) => s.red(&format!(
                "  → forward of {id} to {} failed after {} attempt{}: {}",
                report.url,
                report.attempts,
                if report.attempts == 1 { "" } else { "s" },
                error.as_deref().unwrap_or("unknown error")
            )),
        };
        output::println_safe(&line);
    }

    fn json_line(&self, hook: &Webhook, forward: Option<&ForwardReport>) {
        // A struct, not `json!`: a `Value` would re-sort the data's keys.
        #[derive(Serialize)]
        struct Line<'a> {
            received_at: &'a str,
            webhook_id: Option<&'a str>,
            event: Option<&'a str>,
            data: &'a Data,
            signature: &'a Verdict,
            repeat: bool,
            rejected: bool,
            forward: Option<&'a ForwardReport>,
        }
        let line = Line {
            received_at: &hook.received_at,
            webhook_id: hook.webhook_id.as_deref(),
            event: hook.event.as_deref(),
            data: &hook.data,
            signature: &hook.verdict,
            repeat: hook.repeat,
            rejected: hook.rejected,
            forward,
        };
        output::println_safe(&serde_json::to_string(&line).unwrap_or_default());
    }
}
