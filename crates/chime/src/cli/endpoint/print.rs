//! How `chime endpoint` shows an endpoint on a terminal: aligned `label: value` lines.

use super::super::deliveries::result_cell;
use super::super::output::Style;
use crate::api::types::{EndpointDetailOut, EndpointOut, SignatureScheme};

/// One `label: value` line of `endpoint show`, values aligned.
/// An empty label continues the line above (the second header, say).
fn show_line(label: &str, value: &str) {
    let label = if label.is_empty() {
        String::new()
    } else {
        format!("{label}:")
    };
    println!("  {label:<15}{value}");
}

pub(super) fn print_endpoint(detail: &EndpointDetailOut, tenant: &str, out: Style) {
    let e = &detail.endpoint;
    println!("{}", out.bold(&e.id));
    show_line("url", &e.url);
    show_line("events", &e.events.join(","));
    let state = match (e.enabled, &e.disabled_reason) {
        (true, _) => out.green("yes"),
        (false, Some(reason)) => out.yellow(&format!("no (disabled by chime: {reason})")),
        (false, None) => out.yellow("no (paused)"),
    };
    show_line("enabled", &state);
    if let Some(since) = &e.failing_since {
        show_line(
            "failing since",
            &out.red(&format!(
                "{since} (one probe attempt per probe interval until one succeeds)"
            )),
        );
    }
    if !e.description.is_empty() {
        show_line("description", &e.description);
    }
    for (label, value) in settings_lines(e, true) {
        show_line(label, &value);
    }
    show_line("created", &e.created_at);
    show_line("updated", &e.updated_at);
    if let Some(secret) = &e.secret {
        show_line("secret", secret);
    }
    if let Some(head) = &detail.blocked_by {
        let last = result_cell(head.last_status_code, head.last_error_kind.as_deref());
        let next = head
            .next_attempt_at
            .as_ref()
            .map(|t| format!(", next try {t}"))
            .unwrap_or_default();
        show_line(
            "blocked by",
            &out.red(&format!(
                "{} ({}, {} attempts, last {last}{next})",
                head.id, head.event, head.attempts,
            )),
        );
        println!(
            "{}",
            out.dim(&format!(
                "  the deliveries behind it wait; give it up with: chime deliveries skip {} \
                 --tenant {tenant}",
                head.id
            ))
        );
    }
}

/// The delivery settings as `(label, value)` lines: all of them (`show`), or only those
/// that differ from the defaults (after `add`). Header lines after the first have no label.
pub(super) fn settings_lines(e: &EndpointOut, all: bool) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if all {
        let scheme = match e.signature {
            SignatureScheme::Hmac => "hmac",
            SignatureScheme::Ed25519 => "ed25519",
        };
        lines.push(("signature", scheme.to_owned()));
        if let Some(public) = &e.public_key {
            lines.push(("public key", public.clone()));
        }
    }
    if all || e.ordered {
        lines.push((
            "ordered",
            if e.ordered {
                "yes (one at a time, in acceptance order)".into()
            } else {
                "no".into()
            },
        ));
    }
    match e.max_in_flight {
        Some(n) => lines.push(("max in flight", n.to_string())),
        None if all && e.ordered => lines.push(("max in flight", "1 (ordered)".into())),
        None if all => lines.push(("max in flight", "server default".into())),
        None => {}
    }
    match e.rate_limit_per_s {
        Some(n) => lines.push(("rate limit", format!("{n}/s"))),
        None if all => lines.push(("rate limit", "none".into())),
        None => {}
    }
    if !e.headers.is_empty() {
        for (i, (name, value)) in e.headers.iter().enumerate() {
            lines.push((
                if i == 0 { "headers" } else { "" },
                format!("{name}: {value}"),
            ));
        }
    } else if all {
        lines.push(("headers", "none".into()));
    }
    match (&e.transformation, e.transformation_enabled) {
        (Some(code), on) => lines.push((
            "transformation",
            format!(
                "{} ({} lines of JavaScript)",
                if on { "on" } else { "off" },
                code.lines().count()
            ),
        )),
        (None, _) if all => lines.push(("transformation", "none".into())),
        (None, _) => {}
    }
    match &e.filter {
        Some(f) => lines.push(("filter", f.clone())),
        None if all => lines.push(("filter", "none (every subscribed event)".into())),
        None => {}
    }
    if let Some(t) = &e.tls {
        let mut parts = Vec::new();
        if t.ca_pem.is_some() {
            parts.push("own CA");
        }
        if t.client_certificate {
            parts.push("client certificate (mutual TLS)");
        }
        if t.insecure_skip_verify {
            parts.push("NOT VERIFIED");
        }
        lines.push(("tls", parts.join(", ")));
    }
    if let Some(a) = &e.auth {
        let who = a
            .username
            .clone()
            .or_else(|| a.client_id.clone())
            .unwrap_or_default();
        lines.push(("auth", format!("{} ({who}; secret set)", a.kind)));
    }
    if let Some(p) = &e.proxy {
        lines.push(("proxy", p.clone()));
    }
    if let Some(d) = e.destination.describe() {
        lines.push(("destination", d));
    }
    for w in &e.warnings {
        lines.push(("warning", w.clone()));
    }
    lines
}

pub(super) fn yes_no(v: bool) -> String {
    if v { "yes" } else { "no" }.into()
}
