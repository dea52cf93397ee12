//! `chime replay`: re-send webhooks recorded by `chime listen --record`, in order, optionally
//! re-signed with fresh timestamps so that receivers with a timestamp tolerance accept them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chime_webhooks::providers::{github, shopify, stripe};
use chime_webhooks::{Secret, SigningKey};
use clap::Args;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::check::Scheme;
use super::client::{self, CliError, root_cause};
use super::output::{Style, println_safe, progress_bar};
use super::record::{HOP_HEADERS, RecordIn};
use crate::model::{Subscription, new_id, now_millis};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime replay hooks.jsonl --to http://localhost:3000/webhook\n  \
    chime replay hooks.jsonl --to http://localhost:3000/webhook --secret whsec_… --events 'order.*' --rate 5/s\n\n\
Without --secret the recorded headers are sent unchanged, so a receiver that checks \
timestamps will refuse webhooks older than its tolerance. With --secret each webhook gets a \
fresh timestamp and signature (same webhook id and body). Exit status: 0 when every webhook \
got a 2xx, 1 otherwise, 3 when the target cannot be reached at all.")]
pub struct ReplayArgs {
    /// A JSON-lines file written by `chime listen --record`.
    file: PathBuf,
    /// Where to send them.
    #[arg(long)]
    to: String,
    /// Re-sign with this key and the current time: whsec_… (v1) or whsk_… (v1a), or with
    /// --scheme the provider's secret.
    #[arg(
        long,
        short = 's',
        env = "CHIME_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// The scheme to re-sign with.
    #[arg(long, value_enum, default_value_t = Scheme::Standard)]
    scheme: Scheme,
    /// Only these events (`order.*`, `user.created`; repeat or separate with commas).
    #[arg(long, short = 'e', value_delimiter = ',')]
    events: Vec<String>,
    /// At most this many webhooks per second (`10`, `10/s`, `30/m`) [default: as fast as the
    /// target answers, one at a time].
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Deadline of one request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// One JSON object per replayed webhook on stdout.
    #[arg(long)]
    json: bool,
}

/// `N`, `N/s` or `N/m` as webhooks per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    let (num, per) = match s.trim().split_once('/') {
        Some((n, unit)) => (n, unit.trim()),
        None => (s.trim(), "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate such as 10/s"))?;
    let per_second = match per {
        "s" | "sec" => n,
        "m" | "min" => n / 60.0,
        other => return Err(format!("unknown unit {other:?}; use /s or /m")),
    };
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err("the rate must be above zero".into());
    }
    Ok(per_second)
}

/// How to re-sign, parsed once.
enum Signer {
    Hmac(Secret),
    Ed25519(SigningKey),
    Provider(Scheme, String),
}

impl Signer {
    fn parse(scheme: Scheme, key: &str) -> Result<Self, CliError> {
        let key = key.trim();
        match scheme {
            Scheme::Standard if key.starts_with(chime_webhooks::SIGNING_KEY_PREFIX) => {
                SigningKey::parse(key)
                    .map(Signer::Ed25519)
                    .map_err(|e| CliError::usage(format!("--secret: {e}")))
            }
            Scheme::Standard if key.starts_with(chime_webhooks::PUBLIC_KEY_PREFIX) => {
                Err(CliError::usage(
                    "--secret: a whpk_ public key can verify but not sign; re-signing v1a \
                     needs the whsk_ signing key",
                ))
            }
            Scheme::Standard => Secret::parse(key)
                .map(Signer::Hmac)
                .map_err(|e| CliError::usage(format!("--secret: {e}"))),
            _ if key.is_empty() => Err(CliError::usage("--secret is empty")),
            other => Ok(Signer::Provider(other, key.to_owned())),
        }
    }

    /// Replaces the signature headers with fresh ones over `body`.
    fn sign(&self, headers: &mut Vec<(String, String)>, body: &[u8], now: i64) {
        let has = |h: &Vec<(String, String)>, name: &str| {
            h.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let drop = |h: &mut Vec<(String, String)>, names: &[&str]| {
            h.retain(|(n, _)| !names.iter().any(|x| n.eq_ignore_ascii_case(x)));
        };
        match self {
            Signer::Hmac(_) | Signer::Ed25519(_) => {
                // Keep the family of names the sender used (svix-* or webhook-*).
                let svix = !has(headers, "webhook-id") && has(headers, "svix-id");
                let prefix = if svix { "svix" } else { "webhook" };
                let id = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&format!("{prefix}-id")))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| new_id("msg"));
                drop(
                    headers,
                    &[
                        "webhook-id",
                        "webhook-timestamp",
                        "webhook-signature",
                        "svix-id",
                        "svix-timestamp",
                        "svix-signature",
                    ],
                );
                let signature = match self {
                    Signer::Hmac(secret) => chime_webhooks::sign(secret, &id, now, body),
                    Signer::Ed25519(key) => key.sign(&id, now, body),
                    Signer::Provider(..) => unreachable!("matched above"),
                };
                headers.push((format!("{prefix}-id"), id));
                headers.push((format!("{prefix}-timestamp"), now.to_string()));
                headers.push((format!("{prefix}-signature"), signature));
            }
            Signer::Provider(scheme, secret) => {
                let (name, value) = match scheme {
                    Scheme::Github => {
                        // The legacy SHA-1 header would no longer match; drop it.
                        drop(headers, &["x-hub-signature"]);
                        (github::HEADER, github::sign(secret, body))
                    }
                    Scheme::Stripe => (stripe::HEADER, stripe::sign(secret, now, body)),
                    Scheme::Shopify => (shopify::HEADER, shopify::sign(secret, body)),
                    Scheme::Standard => unreachable!("standard keys are Hmac or Ed25519"),
                };
                drop(headers, &[name]);
                headers.push((name.to_ascii_lowercase(), value));
            }
        }
    }
}

#[derive(Serialize)]
struct Sent<'a> {
    line: usize,
    webhook_id: Option<&'a str>,
    event: Option<&'a str>,
    ok: bool,
    status_code: Option<u16>,
    duration_ms: u64,
    error: Option<String>,
}

pub fn main(args: ReplayArgs) -> ExitCode {
    client::run(replay(args))
}

fn load(path: &PathBuf, filter: Option<&Subscription>) -> Result<Vec<(usize, RecordIn)>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    let mut records = Vec::new();
    let mut bad = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RecordIn>(line) {
            Ok(r) => {
                let keep = match (filter, &r.event) {
                    (None, _) => true,
                    (Some(f), Some(name)) => f.matches(name),
                    (Some(_), None) => false,
                };
                if keep {
                    records.push((i + 1, r));
                }
            }
            // A listener killed mid-write leaves a torn last line: skip, do not give up.
            Err(e) => {
                bad += 1;
                if bad <= 3 {
                    eprintln!(
                        "warning: {}:{}: not a chime listen record ({e}); skipped",
                        path.display(),
                        i + 1
                    );
                }
            }
        }
    }
    Ok(records)
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if HOP_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

async fn replay(args: ReplayArgs) -> Result<(), CliError> {
    let target = reqwest::Url::parse(args.to.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| CliError::usage(format!("--to {:?} is not an http(s) URL", args.to)))?;
    let signer = args
        .secret
        .as_deref()
        .map(|k| Signer::parse(args.scheme, k))
        .transpose()?;
    let filter = if args.events.is_empty() {
        None
    } else {
        Some(
            Subscription::parse(&args.events)
                .map_err(|e| CliError::usage(format!("--events: {e}")))?,
        )
    };
    let records = load(&args.file, filter.as_ref())?;
    let http = reqwest::Client::builder()
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::Failed(format!("cannot build the HTTP client: {e}")))?;

    let bar = progress_bar(Some(records.len() as u64), "webhooks");
    let mut pace = args.rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let err_style = Style::stderr();
    let (mut ok, mut failed) = (0usize, 0usize);
    for (n, (line, record)) in records.iter().enumerate() {
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        let body = match record.body_bytes() {
            Ok(b) => b,
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("line {line}: {e}"));
                bar.inc(1);
                continue;
            }
        };
        let mut pairs = record.headers.clone();
        if let Some(s) = &signer {
            s.sign(&mut pairs, &body, now_millis().div_euclid(1000));
        }
        let started = Instant::now();
        let result = http
            .post(target.clone())
            .headers(header_map(&pairs))
            .body(body)
            .send()
            .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status_code, error) = match result {
            Ok(resp) => {
                let status = resp.status();
                let _ = resp.bytes().await;
                (Some(status.as_u16()), None)
            }
            // Nothing can reach the target: say so once instead of failing every line.
            Err(e) if e.is_connect() && n == 0 => {
                bar.finish_and_clear();
                return Err(CliError::Connect {
                    url: target.to_string(),
                    reason: root_cause(&e),
                });
            }
            Err(e) => (None, Some(root_cause(&e))),
        };
        let success = status_code.is_some_and(|c| (200..300).contains(&c));
        if success {
            ok += 1;
        } else {
            failed += 1;
        }
        let sent = Sent {
            line: *line,
            webhook_id: record.webhook_id.as_deref(),
            event: record.event.as_deref(),
            ok: success,
            status_code,
            duration_ms,
            error,
        };
        if args.json {
            bar.suspend(|| println_safe(&serde_json::to_string(&sent).unwrap_or_default()));
        } else if !success {
            let what = match (&sent.status_code, &sent.error) {
                (Some(c), _) => format!("answered {c}"),
                (None, Some(e)) => e.clone(),
                (None, None) => "failed".into(),
            };
            bar.suspend(|| {
                eprintln!(
                    "{} line {line} ({}): {what}",
                    err_style.red("✗"),
                    sent.webhook_id.or(sent.event).unwrap_or("webhook")
                )
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = format!(
        "Replayed {} webhook{} to {target}: {ok} answered 2xx, {failed} failed.",
        records.len(),
        if records.len() == 1 { "" } else { "s" }
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        println_safe(&summary);
    }
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} of {} webhooks were not accepted",
            records.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10").unwrap(), 10.0);
        assert_eq!(parse_rate("10/s").unwrap(), 10.0);
        assert_eq!(parse_rate("30/m").unwrap(), 0.5);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten").is_err());
        assert!(parse_rate("1/h").is_err());
    }

    #[test]
    fn resigning_keeps_id_and_family() {
        let secret = Secret::generate();
        let signer = Signer::Hmac(secret.clone());
        let mut h = vec![
            ("svix-id".to_owned(), "msg_1".to_owned()),
            ("svix-timestamp".to_owned(), "1".to_owned()),
            ("svix-signature".to_owned(), "v1,old".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        signer.sign(&mut h, b"{}", 1_700_000_000);
        let headers = chime_webhooks::Headers::from_pairs(h.clone());
        assert_eq!(headers.get("svix-id"), Some("msg_1"));
        assert_eq!(headers.get("svix-timestamp"), Some("1700000000"));
        assert_eq!(headers.get_all("svix-signature").count(), 1);
        assert!(
            chime_webhooks::Verifier::new(secret)
                .verify_at(&headers, b"{}", 1_700_000_000)
                .is_ok()
        );
    }
}
