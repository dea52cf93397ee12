//! `chime listen`: a local webhook receiver for development and simple deployments.
//!
//! The request path does only cheap work (verify, de-duplicate, enqueue) and answers at once;
//! printing, recording and forwarding happen elsewhere, so neither a slow terminal, a slow
//! disk nor a slow or stopped local app can delay the sender's 2xx:
//!
//! - a sink thread owns stdout and the record file (`SinkMsg`, `sink.rs`);
//! - a forwarder task drains a bounded queue, a few forwards at a time, with retries
//!   (`forward.rs`).
//!
//! This file: the options, the server, the request path (`receive`) and what it reads from a
//! webhook (`describe`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Args;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::check::{Checker, Scheme, Verdict, parse_tolerance};
use super::client::{self, CliError, root_cause};
use super::output::{self, Style, minify};
use crate::model::{Subscription, format_time, now_millis};

mod forward;
mod routes;
mod sink;

use forward::{ForwardReport, forwarder};
use sink::{Sink, Stats};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime listen --port 5000 --secret whsec_…\n  \
    chime listen --secret whsec_… --forward-to http://localhost:3000/webhooks --record hooks.jsonl\n  \
    chime listen --scheme github --secret 'my gh secret' --reject-invalid\n  \
    chime listen --events 'order.*' --json | jq .data\n\n\
Every POST to --path is answered 200 at once (401 with --reject-invalid when its signature \
fails), before it is printed, recorded or forwarded. The first line of output is the address \
(`Listening on http://…`, or {\"listening\": \"http://…\"} with --json), so --port 0 can be \
used from scripts.")]
pub struct ListenArgs {
    /// Address to bind; 0.0.0.0 accepts webhooks from other machines.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (see the first line of output).
    #[arg(long, short = 'p', default_value_t = 5000)]
    port: u16,
    /// The path webhooks are POSTed to; other paths answer 404.
    #[arg(long, default_value = "/webhook")]
    path: String,
    /// Verify signatures with this key: whsec_… (v1 HMAC) or whpk_… (v1a Ed25519), or with
    /// --scheme the provider's secret. Repeat it to accept several (during a rotation).
    #[arg(
        long,
        short = 's',
        env = "CHIME_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    secret: Vec<String>,
    /// The sender's signature scheme.
    #[arg(long, value_enum, default_value_t = Scheme::Standard)]
    scheme: Scheme,
    /// How far a signed timestamp may be from now (`off` to skip the check).
    #[arg(long, default_value = "5m", value_parser = parse_tolerance)]
    tolerance: Duration,
    /// Answer 401 (with the reason) to webhooks whose signature fails, and do not forward
    /// them. Needs --secret.
    #[arg(long)]
    reject_invalid: bool,
    /// Forward each new webhook (exact body bytes and headers) to this local app URL; or,
    /// as PATTERN=URL, only the events matching PATTERN (`order.*=http://localhost:3000/orders`).
    /// Repeat it: rules are tried in order, the first match wins, a plain URL takes the rest.
    #[arg(long, value_name = "[PATTERN=]URL")]
    forward_to: Vec<String>,
    /// Print the secret this listener verifies with (--secret or CHIME_WEBHOOK_SECRET; the
    /// first, if several) on one line and exit, for scripts.
    #[arg(long)]
    print_secret: bool,
    /// Deadline of one forward attempt.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    forward_timeout: Duration,
    /// Retries of a forward that failed to connect, timed out, or got 408, 429 or 5xx.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10))]
    forward_retries: u32,
    /// Append every received webhook (headers, raw body, verdict, time) to this JSON-lines
    /// file, for `chime replay`.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Show and forward only these events (`order.*`, `user.created`; repeat or separate
    /// with commas). Other webhooks are still answered 200 and recorded.
    #[arg(long, short = 'e', value_delimiter = ',')]
    events: Vec<String>,
    /// One JSON object per webhook on stdout (the default when stdout is not a terminal).
    #[arg(long)]
    json: bool,
}

/// How many webhook ids are remembered for de-duplication.
const SEEN_CAPACITY: usize = 10_000;
/// Webhooks waiting to be forwarded; past this a webhook is answered but not forwarded.
const FORWARD_QUEUE: usize = 1_000;
/// Forwards in flight at once.
const FORWARD_CONCURRENCY: usize = 8;
/// Largest body accepted.
const MAX_BODY: usize = 16 << 20;
/// Waits between forward attempts (the last one repeats).
const FORWARD_BACKOFF: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

pub fn main(args: ListenArgs) -> ExitCode {
    // Before any thread exists: the local offset cannot be read safely afterwards.
    output::init_local_offset();
    client::run(listen(args))
}

/// Remembers the last `SEEN_CAPACITY` webhook ids.
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True when `id` is new.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// What the request handler needs.
struct Shared {
    path: String,
    checker: Option<Checker>,
    filter: Option<Subscription>,
    reject_invalid: bool,
    seen: Mutex<Seen>,
    sink: std::sync::mpsc::Sender<SinkMsg>,
    forward: Option<tokio::sync::mpsc::Sender<Arc<Webhook>>>,
    routes: Option<Arc<routes::Routes>>,
}

/// One received webhook, as shown, recorded and forwarded.
struct Webhook {
    received_at_ms: i64,
    received_at: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    header_map: HeaderMap,
    body: Bytes,
    webhook_id: Option<String>,
    event: Option<String>,
    data: Data,
    verdict: Verdict,
    repeat: bool,
    rejected: bool,
    /// Passes --events.
    shown: bool,
}

/// What happens about forwarding one webhook.
enum ForwardPlan {
    /// No --forward-to.
    Off,
    /// Not forwarded, for this reason.
    Skipped(&'static str),
    /// Queued; a `SinkMsg::Forwarded` follows.
    Queued,
}

enum SinkMsg {
    Webhook(Arc<Webhook>, ForwardPlan),
    Forwarded(Arc<Webhook>, ForwardReport),
    /// A line for stderr (requests to other paths, record write failures).
    Notice(String),
}

async fn listen(args: ListenArgs) -> Result<(), CliError> {
    if args.print_secret {
        return match args.secret.first() {
            Some(s) => {
                println!("{s}");
                Ok(())
            }
            None => Err(CliError::usage(
                "no secret to print: give --secret or set CHIME_WEBHOOK_SECRET \
                 (chime endpoint show ID --secret prints an endpoint's)",
            )),
        };
    }
    if !args.path.starts_with('/') {
        return Err(CliError::usage(format!(
            "--path {:?} must start with /",
            args.path
        )));
    }
    let checker = if args.secret.is_empty() {
        if args.reject_invalid {
            return Err(CliError::usage("--reject-invalid needs --secret"));
        }
        None
    } else {
        Some(Checker::new(args.scheme, &args.secret, args.tolerance).map_err(CliError::Usage)?)
    };
    let filter = if args.events.is_empty() {
        None
    } else {
        Some(
            Subscription::parse(&args.events)
                .map_err(|e| CliError::usage(format!("--events: {e}")))?,
        )
    };
    let forward_url = routes::Routes::parse(&args.forward_to)
        .map_err(CliError::Usage)?
        .map(Arc::new);
    let record = args
        .record
        .as_ref()
        .map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| CliError::usage(format!("--record {}: {e}", p.display())))
        })
        .transpose()?;

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot listen on {}:{}: {} (--port 0 picks a free port)",
                args.host,
                args.port,
                root_cause(&e)
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("reading the bound address: {e}")))?;
    let url = format!("http://{addr}{}", args.path);

    let json_mode = args.json || !output::stdout_is_terminal();
    let (sink_tx, sink_rx) = std::sync::mpsc::channel();
    let sink = Sink {
        json: json_mode,
        style: Style::stdout(),
        record: record.map(std::io::BufWriter::new),
        record_failed: false,
        stats: Stats::default(),
    };
    // The first line, before anything can arrive: scripts read the address from it.
    if json_mode {
        output::println_safe(&json!({ "listening": url }).to_string());
    } else {
        print_banner(&args, &url, checker.as_ref(), forward_url.as_ref());
    }
    let sink_thread = std::thread::spawn(move || sink.run(sink_rx));

    let (forward_tx, forwarder) = match forward_url.clone() {
        Some(target) => {
            let (tx, rx) = tokio::sync::mpsc::channel(FORWARD_QUEUE);
            let http = reqwest::Client::builder()
                .timeout(args.forward_timeout)
                .connect_timeout(args.forward_timeout.min(Duration::from_secs(5)))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| CliError::Failed(format!("cannot build the HTTP client: {e}")))?;
            let task = tokio::spawn(forwarder(
                rx,
                target,
                http,
                args.forward_retries,
                args.forward_timeout,
                sink_tx.clone(),
            ));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };

    let shared = Arc::new(Shared {
        path: args.path.clone(),
        checker,
        filter,
        reject_invalid: args.reject_invalid,
        seen: Mutex::new(Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        }),
        sink: sink_tx,
        forward: forward_tx,
        routes: forward_url,
    });
    let app = axum::Router::new()
        .fallback(receive)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await;
    // The router (and with it the queue's sender) is gone: let queued forwards finish, for a
    // bounded time, then let the sink print its summary.
    if let Some(task) = forwarder {
        let grace = args.forward_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, task).await.is_err() {
            eprintln!("some forwards were still running at exit");
            return served.map_err(|e| CliError::Failed(format!("the server failed: {e}")));
        }
    }
    let _ = sink_thread.join();
    served.map_err(|e| CliError::Failed(format!("the server failed: {e}")))
}

fn print_banner(
    args: &ListenArgs,
    url: &str,
    checker: Option<&Checker>,
    fwd: Option<&Arc<routes::Routes>>,
) {
    let s = Style::stdout();
    output::println_safe(&format!("Listening on {}", s.bold(url)));
    let mut lines = Vec::new();
    match checker {
        Some(c) => lines.push(format!(
            "  verifying {} signatures with {} key{} (tolerance {}){}",
            c.scheme().as_str(),
            args.secret.len(),
            if args.secret.len() == 1 { "" } else { "s" },
            if args.tolerance == Duration::MAX {
                "off".to_owned()
            } else {
                humantime::format_duration(args.tolerance).to_string()
            },
            if args.reject_invalid {
                "; invalid ones get 401"
            } else {
                ""
            }
        )),
        None => lines.push(s.dim("  not verifying signatures (pass --secret to check them)")),
    }
    if let Some(f) = fwd {
        lines.extend(f.lines());
    }
    if let Some(r) = &args.record {
        lines.push(format!("  recording to {}", r.display()));
    }
    if !args.events.is_empty() {
        lines.push(format!("  showing only {}", args.events.join(", ")));
    }
    lines.push(s.dim(&format!(
        "  send webhooks here with: chime endpoint add {url} --tenant T"
    )));
    lines.push(s.dim("  waiting for webhooks; Ctrl-C to stop"));
    output::println_safe(&lines.join("\n"));
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Every request lands here. Only POSTs to the path are webhooks.
async fn receive(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() != s.path {
        let _ = s.sink.send(SinkMsg::Notice(format!(
            "{method} {}: answered 404 (webhooks are received on {})",
            uri.path(),
            s.path
        )));
        return (
            StatusCode::NOT_FOUND,
            format!("chime listen receives webhooks on POST {}\n", s.path),
        )
            .into_response();
    }
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(axum::http::header::ALLOW, "POST")],
            "chime listen receives webhooks as POST requests\n",
        )
            .into_response();
    }

    let received_at_ms = now_millis();
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let verdict = match &s.checker {
        Some(c) => c.check(
            &chime_webhooks::Headers::from(&headers),
            &body,
            received_at_ms.div_euclid(1000),
        ),
        None => Verdict::unchecked(),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (event, data) = describe(&headers, parsed.as_ref(), &body);
    let webhook_id = webhook_id(&headers, parsed.as_ref());
    let shown = match (&s.filter, &event) {
        (None, _) => true,
        (Some(f), Some(name)) => f.matches(name),
        (Some(_), None) => false,
    };
    let rejected = s.reject_invalid && verdict.is_invalid();
    // A rejected webhook is not remembered: its id may be forged, and must not shadow the
    // genuine one.
    let repeat = !rejected
        && webhook_id.as_deref().is_some_and(|id| {
            let mut seen = s.seen.lock().unwrap_or_else(|p| p.into_inner());
            !seen.insert(id)
        });
    let hook = Arc::new(Webhook {
        received_at_ms,
        received_at: format_time(received_at_ms),
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: pairs,
        header_map: headers,
        body,
        webhook_id,
        event,
        data,
        verdict,
        repeat,
        rejected,
        shown,
    });

    let plan = match &s.forward {
        None => ForwardPlan::Off,
        Some(_) if !hook.shown => ForwardPlan::Skipped("not in --events"),
        Some(_) if hook.rejected => ForwardPlan::Skipped("invalid signature"),
        Some(_) if hook.repeat => ForwardPlan::Skipped("repeat of an earlier webhook"),
        Some(_)
            if s.routes
                .as_ref()
                .is_some_and(|r| r.pick(hook.event.as_deref()).is_none()) =>
        {
            ForwardPlan::Skipped("no --forward-to route for this event")
        }
        Some(queue) => match queue.try_send(hook.clone()) {
            Ok(()) => ForwardPlan::Queued,
            Err(_) => ForwardPlan::Skipped("the forward queue is full"),
        },
    };
    // A quick forward may report before this message is sent; the sink copes with either
    // order (see `Sink::run`).
    let _ = s.sink.send(SinkMsg::Webhook(hook.clone(), plan));

    if hook.rejected {
        let body = json!({
            "error": "invalid_signature",
            "code": hook.verdict.code,
            "detail": hook.verdict.reason,
        });
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    (StatusCode::OK, axum::Json(json!({ "ok": true }))).into_response()
}

/// The data of a webhook as received: JSON in the sender's own key order (whitespace
/// outside strings removed, so it fits one line), or the text of a body that is not JSON.
#[derive(Debug, PartialEq)]
enum Data {
    Json(String),
    Text(String),
}

impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Written verbatim by serde_json's serializer (the key order survives).
            Data::Json(text) => match RawValue::from_string(text.clone()) {
                Ok(raw) => raw.serialize(s),
                Err(_) => s.serialize_str(text),
            },
            Data::Text(text) => s.serialize_str(text),
        }
    }
}

impl Data {
    fn text(&self) -> &str {
        match self {
            Data::Json(t) | Data::Text(t) => t,
        }
    }
}

/// The event name and data, read the way the common senders lay them out: chime and the
/// classic example use `{"event", "data"}`; Svix-style and Stripe use `{"type", "data"}`;
/// GitHub and Shopify put the name in a header.
fn describe(headers: &HeaderMap, parsed: Option<&Value>, body: &[u8]) -> (Option<String>, Data) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(value) = parsed else {
        return (None, Data::Text(String::from_utf8_lossy(body).into_owned()));
    };
    // The body parsed as JSON, so it is UTF-8.
    let whole = || Data::Json(minify(&String::from_utf8_lossy(body)));
    let named = value["event"].as_str().or(value["type"].as_str());
    if let Some(name) = named {
        // The data member's own bytes, not a re-serialization of the parsed value.
        let data = serde_json::from_slice::<HashMap<String, &RawValue>>(body)
            .ok()
            .and_then(|members| members.get("data").map(|raw| Data::Json(minify(raw.get()))))
            .unwrap_or_else(whole);
        return (Some(name.to_owned()), data);
    }
    if let Some(gh) = header("x-github-event") {
        let name = match value["action"].as_str() {
            Some(action) => format!("{gh}.{action}"),
            None => gh,
        };
        return (Some(name), whole());
    }
    (header("x-shopify-topic"), whole())
}

/// The id a sender keeps across retries, which is what de-duplication keys on.
fn webhook_id(headers: &HeaderMap, parsed: Option<&Value>) -> Option<String> {
    const ID_HEADERS: [&str; 4] = [
        "webhook-id",
        "svix-id",
        "x-github-delivery",
        "x-shopify-webhook-id",
    ];
    for name in ID_HEADERS {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
            && !v.trim().is_empty()
        {
            return Some(v.trim().to_owned());
        }
    }
    // Stripe keeps the event id in the body; only trust a body id from Stripe, as other
    // payloads' "id" is usually a domain id (an order's) that repeats legitimately.
    if headers.contains_key("stripe-signature") {
        return parsed.and_then(|v| v["id"].as_str()).map(str::to_owned);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_forgets_the_oldest() {
        let mut seen = Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        };
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for i in 0..SEEN_CAPACITY {
            seen.insert(&i.to_string());
        }
        assert_eq!(seen.set.len(), SEEN_CAPACITY);
        assert!(seen.insert("a"), "the oldest id was forgotten");
    }

    #[test]
    fn describe_reads_common_layouts() {
        let h = HeaderMap::new();
        let d = |h: &HeaderMap, body: &str| {
            let v: Option<Value> = serde_json::from_str(body).ok();
            describe(h, v.as_ref(), body.as_bytes())
        };
        // The data keeps the sender's key order; only whitespace between tokens goes.
        assert_eq!(
            d(
                &h,
                "{\"event\": \"order_created\",\n \"data\": {\"z\": 1, \"a\": \"x y\"}}"
            ),
            (
                Some("order_created".into()),
                Data::Json(r#"{"z":1,"a":"x y"}"#.into())
            )
        );
        assert_eq!(
            d(&h, r#"{"type":"invoice.paid","id":"evt_1"}"#)
                .0
                .as_deref(),
            Some("invoice.paid")
        );
        let mut gh = HeaderMap::new();
        gh.insert("x-github-event", "issues".parse().unwrap());
        assert_eq!(
            d(&gh, r#"{"action":"opened"}"#).0.as_deref(),
            Some("issues.opened")
        );
        assert_eq!(d(&h, "plain"), (None, Data::Text("plain".into())));
    }
}
