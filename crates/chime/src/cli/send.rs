//! `chime send`: publish one event, or a JSON-lines file of them, through a running
//! `chime serve`.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::client::{self, ApiArgs, CliError, Client, TenantArg};
use super::output::{Style, print_json, progress_bar};
use crate::api::types::{DeliveryStatus, PublishedOut};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime send order.created '{\"order_id\": 1234, \"amount\": 50}' --tenant acme\n  \
    echo '{\"id\": 7}' | chime send user.created - --tenant acme --idempotency-key user-7\n  \
    chime send --file events.jsonl --tenant acme --concurrency 16\n\n\
Each line of an --file holds one event: {\"event\": \"order.created\", \"data\": {…}} and \
optionally \"idempotency_key\": \"…\". Blank lines are skipped.")]
pub struct SendArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    tenant: TenantArg,
    /// The event name, e.g. order.created.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    event: Option<String>,
    /// The event's data as JSON, sent byte for byte; `-` reads it from stdin [default: {}].
    #[arg(conflicts_with = "file")]
    data: Option<String>,
    /// Publishing twice with the same key stores the event once (safe retries).
    #[arg(long, conflicts_with = "file")]
    idempotency_key: Option<String>,
    /// Publish every event in this JSON-lines file (`-` for stdin) instead.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Requests in flight at once with --file.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
}

pub fn main(args: SendArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        match &args.file {
            Some(path) => bulk(&api, &args, path).await,
            None => single(&api, &args).await,
        }
    })
}

/// `{"event": name, "data": raw}` with the data bytes kept as given: the envelope the
/// server stores and sends.
fn envelope(event: &str, data: &RawValue) -> Vec<u8> {
    crate::model::envelope(event, data).to_vec()
}

async fn single(api: &Client, args: &SendArgs) -> Result<(), CliError> {
    let event = args
        .event
        .as_deref()
        .ok_or_else(|| CliError::usage("EVENT is required (or use --file)"))?;
    let data_text = match args.data.as_deref() {
        None => "{}".to_owned(),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::usage(format!("reading the data from stdin: {e}")))?;
            s
        }
        Some(d) => d.to_owned(),
    };
    let data: &RawValue = serde_json::from_str(data_text.trim())
        .map_err(|e| CliError::usage(format!("DATA is not valid JSON: {e}")))?;
    let mut headers = Vec::new();
    if let Some(k) = &args.idempotency_key {
        headers.push(("idempotency-key", k.as_str()));
    }
    let out = api
        .post_raw::<PublishedOut>(
            &["v1", "tenants", &args.tenant.tenant, "events"],
            envelope(event, data),
            &headers,
        )
        .await?;
    if args.api.json {
        print_json(&out);
        return Ok(());
    }
    let style = Style::stdout();
    println!("Published {} ({})", style.bold(&out.id), out.event);
    let deliveries = &out.deliveries;
    if deliveries.is_empty() {
        println!(
            "  no deliveries: no enabled endpoint of {} subscribes to {event}",
            args.tenant.tenant
        );
    }
    for d in deliveries {
        // A disabled endpoint's delivery is recorded as skipped, not sent: say so.
        let note = if d.status == DeliveryStatus::Skipped {
            style.yellow(" (skipped: the endpoint is disabled; replay it once enabled)")
        } else {
            String::new()
        };
        println!("  → delivery {} to endpoint {}{note}", d.id, d.endpoint_id);
    }
    Ok(())
}

/// One line of a bulk file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    idempotency_key: Option<String>,
}

#[derive(Serialize)]
struct Failure {
    line: u64,
    code: String,
    detail: String,
}

#[derive(Serialize)]
struct Summary {
    published: u64,
    errors: u64,
    seconds: f64,
    rate_per_second: f64,
    /// The first failures to happen (at most `MAX_SHOWN`), by line.
    failures: Vec<Failure>,
}

const MAX_SHOWN: usize = 20;

fn open_input(path: &PathBuf) -> Result<Box<dyn BufRead + Send>, CliError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let f = std::fs::File::open(path)
        .map_err(|e| CliError::usage(format!("cannot open {}: {e}", path.display())))?;
    Ok(Box::new(BufReader::new(f)))
}

/// The number of non-blank lines, for the progress bar; `None` for stdin (cannot read twice).
fn count_lines(path: &PathBuf) -> Option<u64> {
    if path.as_os_str() == "-" {
        return None;
    }
    let f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    for line in BufReader::new(f).lines() {
        if !line.ok()?.trim().is_empty() {
            n += 1;
        }
    }
    Some(n)
}

async fn bulk(api: &Client, args: &SendArgs, path: &PathBuf) -> Result<(), CliError> {
    let tenant = args.tenant.tenant.clone();
    let input = open_input(path)?;
    let bar = progress_bar(count_lines(path), "events");
    let started = Instant::now();
    let mut tasks: tokio::task::JoinSet<(u64, Result<(), CliError>)> = tokio::task::JoinSet::new();
    let mut published = 0u64;
    let mut failures: Vec<Failure> = Vec::new();
    let mut errors = 0u64;
    let mut record = |line: u64, result: Result<(), CliError>| -> Result<(), CliError> {
        match result {
            Ok(()) => published += 1,
            // Nothing will get through: stop at once with the connection error.
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => {
                errors += 1;
                if failures.len() < MAX_SHOWN {
                    let (code, detail) = match e {
                        CliError::Api { code, detail, .. } => (code, detail),
                        CliError::Usage(d) => ("invalid_line".into(), d),
                        CliError::Failed(d) => ("failed".into(), d),
                        CliError::Connect { reason, .. } => ("connect".into(), reason),
                    };
                    failures.push(Failure { line, code, detail });
                }
            }
        }
        bar.inc(1);
        Ok(())
    };

    for (i, line) in input.lines().enumerate() {
        let line_no = i as u64 + 1;
        let text = line.map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))?;
        if text.trim().is_empty() {
            continue;
        }
        while tasks.len() >= usize::from(args.concurrency) {
            if let Some(Ok((n, r))) = tasks.join_next().await {
                record(n, r)?;
            }
        }
        let parsed = serde_json::from_str::<Line>(&text)
            .map(|l| (envelope(&l.event, l.data), l.idempotency_key));
        let (body, key) = match parsed {
            Ok(p) => p,
            Err(e) => {
                record(
                    line_no,
                    Err(CliError::usage(format!("not an event line: {e}"))),
                )?;
                continue;
            }
        };
        let api = api.clone();
        let tenant = tenant.clone();
        tasks.spawn(async move {
            let headers: Vec<(&str, &str)> = key
                .as_deref()
                .map(|k| vec![("idempotency-key", k)])
                .unwrap_or_default();
            let r = api
                .post_raw::<PublishedOut>(&["v1", "tenants", &tenant, "events"], body, &headers)
                .await
                .map(drop);
            (line_no, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((n, r)) = joined {
            record(n, r)?;
        }
    }
    bar.finish_and_clear();
    failures.sort_by_key(|f| f.line);

    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        published,
        errors,
        seconds: (seconds * 1000.0).round() / 1000.0,
        rate_per_second: if seconds > 0.0 {
            (published as f64 / seconds).round()
        } else {
            0.0
        },
        failures,
    };
    if args.api.json {
        print_json(&summary);
    } else {
        let style = Style::stdout();
        println!(
            "Published {} events in {:.2} s ({}/s); {} errors.",
            summary.published,
            summary.seconds,
            summary.rate_per_second,
            if errors == 0 {
                style.green("0")
            } else {
                style.red(&errors.to_string())
            }
        );
        for f in &summary.failures {
            println!("  line {}: {}: {}", f.line, f.code, f.detail);
        }
        if errors as usize > summary.failures.len() {
            println!("  … and {} more", errors as usize - summary.failures.len());
        }
    }
    if errors > 0 {
        return Err(CliError::Failed(format!(
            "{errors} of {} events were not published",
            published + errors
        )));
    }
    Ok(())
}
