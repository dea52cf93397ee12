//! The small REST client that the API commands (`send`, `tenant`, `endpoint`, `events`,
//! `deliveries`, `event-types`) share: where the server is, which token to use, and one error
//! type whose cases map onto the documented exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::types::{ErrorOut, ListOut};

use super::output::Style;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8088";

/// Where the API is and how to authenticate; shared by every API command.
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// Base URL of a running `chime serve`.
    #[arg(long, env = "CHIME_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// API token (admin or tenant). Without it or CHIME_TOKEN: CHIME_ADMIN_TOKEN (the one
    /// `chime serve` was given), else the admin token that `chime serve` wrote to
    /// ./chime-data/admin-token (or $CHIME_DATA_DIR/admin-token) when that file exists.
    #[arg(long, env = "CHIME_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Every way a client command can fail, each with its exit status.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or local input (exit 2).
    Usage(String),
    /// The server answered with an error (exit 1).
    Api { code: String, detail: String },
    /// No connection to the server (exit 3).
    Connect { url: String, reason: String },
    /// Anything else that went wrong at run time (exit 1).
    Failed(String),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(msg.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Api { .. } | CliError::Failed(_) => ExitCode::from(1),
            CliError::Connect { .. } => ExitCode::from(3),
        }
    }

    /// Writes the error to stderr as `error: …`, with a hint where one helps.
    pub fn report(&self) {
        let style = Style::stderr();
        let label = style.red(&style.bold("error:"));
        match self {
            CliError::Usage(msg) | CliError::Failed(msg) => eprintln!("{label} {msg}"),
            CliError::Api { code, detail, .. } => {
                eprintln!("{label} {code}: {detail}");
                if code == "unauthorized" {
                    eprintln!(
                        "  hint: pass --token or set CHIME_TOKEN (the admin token is printed \
                         by the first `chime serve` and kept in chime-data/admin-token)"
                    );
                }
            }
            CliError::Connect { url, reason } => {
                eprintln!("{label} could not connect to {url}: {reason}");
                eprintln!(
                    "  hint: is `chime serve` running there? Start it, or point --url / \
                     CHIME_URL at it."
                );
            }
        }
    }
}

/// Runs an async command body on a fresh runtime and turns its result into the exit status.
pub fn run<F>(body: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), CliError>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}

/// A successful answer: parsed into the API's own type (`api::types`), and the text as the
/// server wrote it, so `--json` shows event data with its keys in the order they were
/// published.
pub struct Reply<T> {
    pub value: T,
    text: String,
}

impl<T> std::ops::Deref for Reply<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> serde::Serialize for Reply<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.text.clone())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// An authenticated client of one chime server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: String,
}

/// Where `chime serve` writes the generated admin token (same default as `--data-dir`).
fn admin_token_file() -> PathBuf {
    std::env::var_os("CHIME_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chime-data"))
        .join("admin-token")
}

impl Client {
    pub fn new(args: &ApiArgs) -> Result<Self, CliError> {
        let base = reqwest::Url::parse(args.url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "--url {:?} is not an http(s) URL such as {DEFAULT_URL}",
                    args.url
                ))
            })?;
        let given = args
            .token
            .clone()
            .or_else(|| std::env::var("CHIME_ADMIN_TOKEN").ok());
        let token = match given.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => {
                let file = admin_token_file();
                match std::fs::read_to_string(&file) {
                    Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
                    _ => {
                        return Err(CliError::usage(format!(
                            "no API token: pass --token, set CHIME_TOKEN or CHIME_ADMIN_TOKEN, \
                             or run where {} exists (written by the first `chime serve`)",
                            file.display()
                        )));
                    }
                }
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("chime-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Failed(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The URL of `segments` under the base, each segment percent-encoded, so user-given ids
    /// cannot change the path or add a query.
    pub fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// GET with a query: a struct of `api::types` (`…Params`) or `(name, value)` pairs.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &(impl Serialize + ?Sized),
    ) -> Result<Reply<T>, CliError> {
        let req = self.http.get(self.url(segments)).query(query);
        self.send(req).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply<T>, CliError> {
        self.send(self.http.post(self.url(segments)).json(body))
            .await
    }

    /// POST without a body.
    pub async fn post_empty<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Reply<T>, CliError> {
        self.send(self.http.post(self.url(segments))).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply<T>, CliError> {
        self.send(self.http.patch(self.url(segments)).json(body))
            .await
    }

    /// DELETE; the server answers 204 with no body.
    pub async fn delete(&self, segments: &[&str]) -> Result<(), CliError> {
        self.send::<()>(self.http.delete(self.url(segments)))
            .await
            .map(drop)
    }

    /// POSTs raw JSON bytes (event data is sent exactly as the user wrote it).
    pub async fn post_raw<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<Reply<T>, CliError> {
        let mut req = self
            .http
            .post(self.url(segments))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Reply<T>, CliError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let mut text = resp.text().await.map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            if text.trim().is_empty() {
                text = "null".into();
            }
            return match serde_json::from_str(&text) {
                Ok(value) => Ok(Reply { value, text }),
                Err(e) => Err(CliError::Failed(format!(
                    "the server answered {status} with a body this chime does not understand \
                     ({e}): {}",
                    super::output::truncate(&text, 200)
                ))),
            };
        }
        // The API's errors are {"code","detail"}; anything else (a proxy's HTML page, say) is
        // shown as the status and the start of the body.
        let (code, detail) = match serde_json::from_str::<ErrorOut>(&text) {
            Ok(e) => (e.code, e.detail),
            Err(_) => (
                format!("http_{}", status.as_u16()),
                format!(
                    "{status} from {}: {}",
                    self.base,
                    super::output::truncate(text.trim(), 200)
                ),
            ),
        };
        Err(CliError::Api { code, detail })
    }

    fn transport_error(&self, e: reqwest::Error) -> CliError {
        let url = self.base.as_str().trim_end_matches('/').to_owned();
        if e.is_connect() {
            CliError::Connect {
                url,
                reason: root_cause(&e),
            }
        } else if e.is_timeout() {
            CliError::Failed(format!("{url} did not answer in time"))
        } else {
            CliError::Failed(format!("request to {url} failed: {}", root_cause(&e)))
        }
    }
}

/// The innermost error's text (reqwest's own is "error sending request for url …", which
/// hides the useful part: "Connection refused").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    // std's io errors read "Connection refused (os error 111)"; the number helps nobody.
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The tenant a command works on.
#[derive(Args, Clone, Debug)]
pub struct TenantArg {
    /// Tenant id.
    #[arg(long, short = 't', env = "CHIME_TENANT")]
    pub tenant: String,
}

/// `--limit` and `--cursor` of a list command.
#[derive(Args, Clone, Debug)]
pub struct PageArgs {
    /// Rows per page (1 to 250; the server's default is 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue a list where the previous page ended (printed under the table).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `--limit` / `--cursor` as query pairs.
pub fn page_query(page: &PageArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(l) = page.limit {
        q.push(("limit", l.to_string()));
    }
    if let Some(c) = &page.cursor {
        q.push(("cursor", c.clone()));
    }
    q
}

/// Tells a terminal user how to get the next page of a list.
pub fn print_next_cursor<T>(list: &ListOut<T>) {
    if let Some(c) = &list.next_cursor {
        let style = Style::stderr();
        eprintln!("{}", style.dim(&format!("more: add --cursor {c}")));
    }
}

/// An optional value as a table cell: empty when absent.
pub fn cell(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}
