//! How `chime endpoint` shows an endpoint on a terminal: aligned `label: value` lines.

use serde_json::Value;

use super::super::client::field;
use super::super::output::Style;

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

pub(super) fn print_endpoint(e: &Value, tenant: &str, out: Style) {
    let enabled = e["enabled"].as_bool().unwrap_or(false);
    println!("{}", out.bold(&field(e, "id")));
    show_line("url", &field(e, "url"));
    show_line("events", &join(&e["events"]));
    let state = match (enabled, e["disabled_reason"].as_str()) {
        (true, _) => out.green("yes"),
        (false, Some(reason)) => out.yellow(&format!("no (disabled by chime: {reason})")),
        (false, None) => out.yellow("no (paused)"),
    };
    show_line("enabled", &state);
    if let Some(since) = e["failing_since"].as_str() {
        show_line(
            "failing since",
            &out.red(&format!(
                "{since} (one probe attempt per probe interval until one succeeds)"
            )),
        );
    }
    if !field(e, "description").is_empty() {
        show_line("description", &field(e, "description"));
    }
    for (label, value) in settings_lines(e, true) {
        show_line(label, &value);
    }
    show_line("created", &field(e, "created_at"));
    show_line("updated", &field(e, "updated_at"));
    if e["secret"].is_string() {
        show_line("secret", &field(e, "secret"));
    }
    let head = &e["blocked_by"];
    if head.is_object() {
        let last = match (
            head["last_status_code"].as_u64(),
            head["last_error_kind"].as_str(),
        ) {
            (Some(code), _) => code.to_string(),
            (None, Some(kind)) => kind.to_owned(),
            (None, None) => "-".to_owned(),
        };
        let next = head["next_attempt_at"]
            .as_str()
            .map(|t| format!(", next try {t}"))
            .unwrap_or_default();
        show_line(
            "blocked by",
            &out.red(&format!(
                "{} ({}, {} attempts, last {last}{next})",
                field(head, "id"),
                field(head, "event"),
                field(head, "attempts"),
            )),
        );
        println!(
            "{}",
            out.dim(&format!(
                "  the deliveries behind it wait; give it up with: chime deliveries skip {} \
                 --tenant {tenant}",
                field(head, "id")
            ))
        );
    }
}

/// The delivery settings as `(label, value)` lines: all of them (`show`), or only those
/// that differ from the defaults (after `add`). Header lines after the first have no label.
pub(super) fn settings_lines(e: &Value, all: bool) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if all {
        lines.push(("signature", field(e, "signature")));
        if let Some(public) = e["public_key"].as_str() {
            lines.push(("public key", public.to_owned()));
        }
    }
    let ordered = e["ordered"].as_bool().unwrap_or(false);
    if all || ordered {
        lines.push((
            "ordered",
            if ordered {
                "yes (one at a time, in acceptance order)".into()
            } else {
                "no".into()
            },
        ));
    }
    match e["max_in_flight"].as_u64() {
        Some(n) => lines.push(("max in flight", n.to_string())),
        None if all && ordered => lines.push(("max in flight", "1 (ordered)".into())),
        None if all => lines.push(("max in flight", "server default".into())),
        None => {}
    }
    match e["rate_limit_per_s"].as_u64() {
        Some(n) => lines.push(("rate limit", format!("{n}/s"))),
        None if all => lines.push(("rate limit", "none".into())),
        None => {}
    }
    let headers = e["headers"].as_object().filter(|h| !h.is_empty());
    match headers {
        Some(h) => {
            for (i, (name, value)) in h.iter().enumerate() {
                let value = format!("{name}: {}", value.as_str().unwrap_or_default());
                lines.push((if i == 0 { "headers" } else { "" }, value));
            }
        }
        None if all => lines.push(("headers", "none".into())),
        None => {}
    }
    match e["filter"].as_str() {
        Some(f) => lines.push(("filter", f.to_owned())),
        None if all => lines.push(("filter", "none (every subscribed event)".into())),
        None => {}
    }
    lines
}

pub(super) fn join(list: &Value) -> String {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub(super) fn yes_no(v: &Value) -> String {
    if v.as_bool().unwrap_or(false) {
        "yes".into()
    } else {
        "no".into()
    }
}
