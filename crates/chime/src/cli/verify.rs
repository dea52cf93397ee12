//! `chime verify`: check one webhook's signature offline, with the same explanations as
//! `chime listen`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chime_webhooks::Headers;
use clap::Args;

use super::check::{Checker, Scheme, parse_tolerance};
use super::output::{Style, println_safe};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime verify --secret whsec_… -H 'webhook-id: evt_1' -H 'webhook-timestamp: 1700000000' \\\n    \
    -H 'webhook-signature: v1,…' --at 1700000000 < body.json\n  \
    curl -sD headers.txt … ; chime verify --secret whsec_… --headers-file headers.txt --body-file body.json\n  \
    chime verify --scheme github --secret 's3cret' -H 'X-Hub-Signature-256: sha256=…' < payload.json\n\n\
Exit status: 0 when the signature is valid, 1 when it is not (the reason is printed), 2 for \
bad arguments.")]
pub struct VerifyArgs {
    /// The key to check with: whsec_… (v1 HMAC) or whpk_… (v1a Ed25519), or with --scheme the
    /// provider's secret. Repeat it to accept any of several.
    #[arg(
        long,
        short = 's',
        required = true,
        env = "CHIME_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    secret: Vec<String>,
    /// The sender's signature scheme.
    #[arg(long, value_enum, default_value_t = Scheme::Standard)]
    scheme: Scheme,
    /// A request header as `name: value`; repeat for each.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Read headers from a file of `name: value` lines (e.g. `curl -D`, or copied from a log).
    #[arg(long)]
    headers_file: Option<PathBuf>,
    /// Read the body from this file instead of stdin; the bytes must be exactly as received.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// How far the signed timestamp may be from now (`off` to skip the check).
    #[arg(long, default_value = "5m", value_parser = parse_tolerance)]
    tolerance: Duration,
    /// Check as of this unix time (seconds) instead of now, e.g. when the request arrived.
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<i64>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

pub fn main(args: VerifyArgs) -> ExitCode {
    match run(&args) {
        Ok(valid) => ExitCode::from(if valid { 0 } else { 1 }),
        Err(msg) => {
            let s = Style::stderr();
            eprintln!("{} {msg}", s.red(&s.bold("error:")));
            ExitCode::from(2)
        }
    }
}

/// Parses `name: value`; the value may itself contain colons.
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header {text:?} is not `name: value`"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!(
            "header {text:?} has no valid name before the colon"
        ));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

fn read_headers_file(path: &PathBuf) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        // Skip blank lines and a request or status line (`POST /webhook HTTP/1.1`,
        // `HTTP/1.1 200 OK`) as dumps start with one.
        if line.is_empty() || (i == 0 && line.contains("HTTP/")) {
            continue;
        }
        out.push(parse_header(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?);
    }
    Ok(out)
}

fn run(args: &VerifyArgs) -> Result<bool, String> {
    let checker = Checker::new(args.scheme, &args.secret, args.tolerance)?;
    let mut pairs = match &args.headers_file {
        Some(p) => read_headers_file(p)?,
        None => Vec::new(),
    };
    for h in &args.headers {
        pairs.push(parse_header(h)?);
    }
    let body = match &args.body_file {
        Some(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading the body from stdin; end it with Ctrl-D");
            }
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading the body from stdin: {e}"))?;
            buf
        }
    };
    let headers = Headers::from_pairs(pairs);
    let now = args
        .at
        .unwrap_or_else(|| crate::model::now_millis().div_euclid(1000));
    let verdict = checker.check(&headers, &body, now);
    if args.json {
        println_safe(&serde_json::to_string_pretty(&verdict).unwrap_or_default());
        return Ok(verdict.is_valid());
    }
    let s = Style::stdout();
    if verdict.is_valid() {
        let key = verdict
            .key_index
            .map(|i| format!(", matched --secret #{}", i + 1))
            .unwrap_or_default();
        println_safe(&format!(
            "{} ({} scheme{key})",
            s.green("✓ valid signature"),
            args.scheme.as_str()
        ));
    } else {
        println_safe(&format!(
            "{} {}",
            s.red("✗ invalid signature:"),
            verdict.reason.as_deref().unwrap_or("")
        ));
        if let Some(hint) = verdict.hint {
            println_safe(&s.dim(&format!("  hint: {hint}")));
        }
    }
    Ok(verdict.is_valid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_syntax() {
        assert_eq!(
            parse_header("Webhook-Signature: v1,a:b").unwrap(),
            ("Webhook-Signature".into(), "v1,a:b".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
    }
}
