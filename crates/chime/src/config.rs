//! Settings: one typed, validated `Config` in slices (`http`, `store`, `delivery`,
//! `dispatch`, `retention`), built from layers: the commented defaults in
//! `config.default.toml`, then a config file, then `CHIME_*` environment variables and flags.
//!
//! A setting is declared once, as a field of [`Layer`]: that one struct is the TOML file's
//! schema, the `chime serve` flags and the `CHIME_*` variables (clap reads those), and its
//! doc comment is the flag's help. Its default is written once, in `config.default.toml`,
//! and `--help` shows it from there ([`show_defaults`]). `Config::from_layer` validates it
//! into its slice.
//!
//! Recipe, a new setting: a field in `Layer` (doc, `#[arg(long, env = "CHIME_…")]`), its
//! default with a comment in `config.default.toml`, its typed field in the slice that uses
//! it, one line in `from_layer`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The defaults, which are also the documentation of every setting.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config.default.toml");

/// The validated settings of one `chime serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub dispatch: DispatchConfig,
    pub retention: crate::retention::Policy,
    /// Fixed admin token; `None` means generate one on first start.
    pub admin_token: Option<String>,
    /// Refuse events whose name is not in the event-type catalog.
    pub strict_event_types: bool,
    pub observability: ObservabilityConfig,
    pub ui: UiConfig,
}

/// Metrics, traces and logs.
#[derive(Clone, Debug)]
pub struct ObservabilityConfig {
    /// A second listener serving only `GET /metrics`, without auth; `None`: /metrics is
    /// served on the API listener only, to the admin token or a metrics token.
    pub metrics_listen: Option<SocketAddr>,
    /// Tenants that get series of their own (0: none); the rest share `_other`.
    pub metrics_tenant_series: usize,
    pub log_format: LogFormat,
    /// Where spans are exported over OTLP/HTTP (a base URL: spans go to `/v1/traces` under
    /// it); `None`: no export.
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per record (coloured on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The dashboard and the portal.
#[derive(Clone, Debug)]
pub struct UiConfig {
    /// `None`: http:// and the listen address, known once bound.
    pub public_url: Option<String>,
    pub portal_frame_ancestors: Vec<String>,
    pub brand_name: String,
    pub brand_logo_url: Option<String>,
    pub brand_accent: Option<String>,
}

/// The API listener.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where the REST API listens.
    pub listen: SocketAddr,
    /// API request body limit.
    pub max_body_bytes: usize,
    /// Open API connections at most; past it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// Deadline for a request's head to arrive (also how long a kept-alive connection may
    /// sit idle).
    pub header_timeout: Duration,
    /// Deadline for a request's whole body to arrive once its handler reads it.
    pub body_timeout: Duration,
}

/// Where the data lives.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Holds the SQLite file and the generated admin token.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; `None` means `<data_dir>/chime.db`.
    pub database_url: Option<String>,
    /// Most connections a PostgreSQL store keeps open.
    pub db_pool_size: usize,
}

/// How one attempt reaches a receiver.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Internal ranges opened for delivery.
    pub allow_targets: Vec<IpNet>,
    /// Deadline of one attempt.
    pub request_timeout: Duration,
    /// Deadline of an attempt's TCP (and TLS) connect; at most `request_timeout`.
    pub connect_timeout: Duration,
    /// Bytes of a response kept with its attempt.
    pub response_capture_bytes: usize,
    /// Every delivery leaves through this proxy (`http://host:port`), unless its endpoint has
    /// its own or its host is in `egress_no_proxy`.
    pub egress_proxy: Option<http::Uri>,
    pub egress_no_proxy: crate::dispatch::proxy::NoProxy,
    /// Threads that run endpoints' transformations.
    pub transform_workers: usize,
    /// What one run of a transformation may use.
    pub transform_limits: crate::transform::Limits,
}

/// The dispatcher's settings.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Delays before each retry.
    pub retry_schedule: Vec<Duration>,
    /// Attempts in flight per endpoint.
    pub endpoint_concurrency: u32,
    /// Attempts in flight in all.
    pub max_in_flight: usize,
    /// Attempts in flight for the endpoints of one tenant together; at most `max_in_flight`.
    pub tenant_max_in_flight: usize,
    /// Reservation time of a claimed delivery.
    pub lease: Duration,
    /// The longest one attempt takes (`request_timeout`): a held job starts only while its
    /// lease has at least this much left.
    pub attempt_timeout: Duration,
    /// Fallback scan period.
    pub poll_interval: Duration,
    /// How long in-flight attempts may finish at shutdown.
    pub shutdown_grace: Duration,
    /// Longest wait a receiver's `Retry-After` can impose.
    pub max_retry_after: Duration,
    /// Consecutive failed attempts that make an endpoint "failing" (circuit open).
    pub failure_threshold: u32,
    /// While failing, one probe attempt per this interval.
    pub probe_interval: Duration,
    /// A failing endpoint with no success for this long is disabled.
    pub auto_disable_after: Duration,
}

/// One layer of settings as written in a file or given by flags and `CHIME_*` variables:
/// every field optional, so layers can be merged. Each field's doc is its `--help`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Address the REST API listens on.
    #[arg(long, env = "CHIME_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the embedded database and the generated admin token.
    #[arg(long, env = "CHIME_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store URL: sqlite:///path/file.db or postgres://user@host/db (empty: the SQLite file
    /// in the data directory).
    #[arg(long, env = "CHIME_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL only: most connections this node keeps open.
    #[arg(long, env = "CHIME_DB_POOL_SIZE")]
    pub db_pool_size: Option<usize>,
    /// Comma-separated CIDRs that deliveries may reach although internal, e.g. 127.0.0.0/8.
    #[arg(long, env = "CHIME_ALLOW_TARGETS")]
    pub allow_targets: Option<String>,
    /// The admin token: from CHIME_ADMIN_TOKEN or the config file only, never a flag (a
    /// flag would show it in `ps`).
    #[arg(skip)]
    pub admin_token: Option<String>,
    /// Delays between attempts, e.g. 5s,5m,30m.
    #[arg(long, env = "CHIME_RETRY_SCHEDULE")]
    pub retry_schedule: Option<String>,
    /// Deadline of one delivery attempt.
    #[arg(long, env = "CHIME_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Deadline of an attempt's TCP and TLS connect, at most the request timeout.
    #[arg(long, env = "CHIME_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// Send every delivery through this HTTP proxy, e.g. http://proxy:3128 (CONNECT for
    /// https targets), so receivers see one address.
    #[arg(long, env = "CHIME_EGRESS_PROXY")]
    pub egress_proxy: Option<String>,
    /// Hosts that bypass the egress proxy: names, .domains, IP literals, or * (comma or space
    /// separated).
    #[arg(long, env = "CHIME_EGRESS_NO_PROXY")]
    pub egress_no_proxy: Option<String>,
    /// Largest API request body in bytes (413 above).
    #[arg(long, env = "CHIME_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Open API connections at most; more are answered 503 and closed.
    #[arg(long, env = "CHIME_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Deadline for a request's head to arrive, and for an idle kept-alive connection.
    #[arg(long, env = "CHIME_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Deadline for a request's body to arrive; a late body is answered 408.
    #[arg(long, env = "CHIME_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// Time in-flight attempts get to finish at shutdown.
    #[arg(long, env = "CHIME_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Attempts in flight per endpoint.
    #[arg(long, env = "CHIME_ENDPOINT_CONCURRENCY")]
    pub endpoint_concurrency: Option<u32>,
    /// Attempts in flight in all.
    #[arg(long, env = "CHIME_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Attempts in flight for one tenant's endpoints together, so one tenant's hung
    /// receivers cannot fill max-in-flight.
    #[arg(long, env = "CHIME_TENANT_MAX_IN_FLIGHT")]
    pub tenant_max_in_flight: Option<usize>,
    /// How long a claimed delivery stays reserved.
    #[arg(long, env = "CHIME_LEASE")]
    pub lease: Option<String>,
    /// Fallback scan period for due deliveries.
    #[arg(long, env = "CHIME_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// Bytes of each response kept with its attempt.
    #[arg(long, env = "CHIME_RESPONSE_CAPTURE_BYTES")]
    pub response_capture_bytes: Option<usize>,
    /// Threads that run endpoints' transformations (1-64).
    #[arg(long, env = "CHIME_TRANSFORM_WORKERS")]
    pub transform_workers: Option<usize>,
    /// CPU time one run of a transformation may take.
    #[arg(long, env = "CHIME_TRANSFORM_TIME_LIMIT")]
    pub transform_time_limit: Option<String>,
    /// Memory one run of a transformation may use, in MiB (1-1024).
    #[arg(long, env = "CHIME_TRANSFORM_MEMORY_MIB")]
    pub transform_memory_mib: Option<usize>,
    /// Longest wait a receiver's Retry-After can impose.
    #[arg(long, env = "CHIME_MAX_RETRY_AFTER")]
    pub max_retry_after: Option<String>,
    /// Consecutive failures that make an endpoint "failing" (probed only).
    #[arg(long, env = "CHIME_FAILURE_THRESHOLD")]
    pub failure_threshold: Option<u32>,
    /// While an endpoint is failing, one probe attempt per this interval.
    #[arg(long, env = "CHIME_PROBE_INTERVAL")]
    pub probe_interval: Option<String>,
    /// Disable an endpoint failing this long with no success.
    #[arg(long, env = "CHIME_AUTO_DISABLE_AFTER")]
    pub auto_disable_after: Option<String>,
    /// Refuse events whose name is not in the event-type catalog.
    #[arg(long, env = "CHIME_STRICT_EVENT_TYPES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub strict_event_types: Option<bool>,
    /// Remove event payloads older than this.
    #[arg(long, env = "CHIME_PAYLOAD_RETENTION")]
    pub payload_retention: Option<String>,
    /// Delete events (with deliveries and attempts) older than this.
    #[arg(long, env = "CHIME_EVENT_RETENTION")]
    pub event_retention: Option<String>,
    /// How often retention runs.
    #[arg(long, env = "CHIME_RETENTION_INTERVAL")]
    pub retention_interval: Option<String>,
    /// PostgreSQL: the time range of one partition of events, deliveries and attempts
    /// (whole seconds; retention drops whole partitions).
    #[arg(long, env = "CHIME_PARTITION_INTERVAL")]
    pub partition_interval: Option<String>,
    /// Also serve GET /metrics, without auth, on this address (e.g. 127.0.0.1:9090).
    #[arg(long, env = "CHIME_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Tenants that get metric series of their own (0: none); the rest count as _other.
    #[arg(long, env = "CHIME_METRICS_TENANT_SERIES")]
    pub metrics_tenant_series: Option<usize>,
    /// Log line format: text or json.
    #[arg(long, env = "CHIME_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Where browsers reach this server, e.g. https://chime.example.com (empty: http:// and
    /// the listen address). Links of the portal and the dashboard start with it; https://
    /// makes the session cookies Secure.
    #[arg(long, env = "CHIME_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Space-separated origins allowed to embed the customer portal in an iframe, e.g.
    /// https://app.example.com (empty: none).
    #[arg(long, env = "CHIME_PORTAL_FRAME_ANCESTORS")]
    pub portal_frame_ancestors: Option<String>,
    /// The product name the dashboard and the portal show.
    #[arg(long, env = "CHIME_BRAND_NAME")]
    pub brand_name: Option<String>,
    /// An https:// URL of a logo shown beside the name (empty: none).
    #[arg(long, env = "CHIME_BRAND_LOGO_URL")]
    pub brand_logo_url: Option<String>,
    /// The pages' accent colour, #rgb or #rrggbb.
    #[arg(long, env = "CHIME_BRAND_ACCENT")]
    pub brand_accent: Option<String>,
    /// Export spans over OTLP/HTTP to this base URL (e.g. http://127.0.0.1:4318); empty: off.
    #[arg(long, env = "CHIME_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Layer {
    pub fn parse_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The layer of a config file, or an empty one without a file.
    pub fn from_file(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Layer::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Layer::parse_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` wins where it has a value. (Through the TOML form, so no field is forgotten:
    /// unset fields are left out of it.)
    pub fn over(self, base: Layer) -> Layer {
        let mut merged = toml::Table::try_from(&base).expect("a layer is a TOML table");
        merged.extend(toml::Table::try_from(&self).expect("a layer is a TOML table"));
        merged.try_into().expect("a merged layer reads back")
    }
}

/// Appends each setting's default (from `config.default.toml`) to its flag's help, so the
/// defaults are written in one place.
pub fn show_defaults(cmd: clap::Command) -> clap::Command {
    let defaults: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).expect("default config parses");
    cmd.mut_args(|arg| {
        let key = arg.get_id().as_str().to_owned();
        let Some(value) = defaults.get(&key) else {
            return arg;
        };
        let shown = match value {
            toml::Value::String(s) if s.is_empty() => return arg,
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        arg.help(format!("{help} [default: {shown}]"))
    })
}

fn duration(name: &str, v: Option<String>) -> Result<Duration, String> {
    let v = v.ok_or_else(|| format!("{name} is not set"))?;
    humantime::parse_duration(v.trim()).map_err(|e| format!("{name} = {v:?}: {e}"))
}

/// A partition's range: whole seconds (partitions are named after their first second), at
/// least one.
fn partition_interval(d: Duration) -> Result<Duration, String> {
    if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err(format!(
            "partition_interval = {}: must be whole seconds, at least 1s",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

fn required<T>(name: &str, v: Option<T>) -> Result<T, String> {
    v.ok_or_else(|| format!("{name} is not set"))
}

impl Config {
    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        Self::from_layer(Layer::default()).expect("the default config is valid")
    }

    /// Validates a layer merged over the defaults.
    pub fn from_layer(layer: Layer) -> Result<Self, String> {
        let defaults = Layer::parse_toml(DEFAULT_CONFIG_TOML).expect("default config parses");
        let l = layer.over(defaults);
        let listen_text = required("listen", l.listen)?;
        let listen = listen_text.parse().map_err(|_| {
            format!("listen = {listen_text:?} is not an address such as 127.0.0.1:8088")
        })?;
        let database_url = l.database_url.filter(|s| !s.trim().is_empty());
        if let Some(url) = &database_url {
            let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !postgres && !url.starts_with("sqlite://") {
                return Err(format!(
                    "database_url {:?}: use sqlite:///path/file.db or postgres://user@host/db",
                    crate::store::postgres::redact(url)
                ));
            }
        }
        let db_pool_size = required("db_pool_size", l.db_pool_size)?;
        if !(1..=1000).contains(&db_pool_size) {
            return Err("db_pool_size must be between 1 and 1000".into());
        }
        let allow_targets =
            crate::net_policy::parse_cidr_list(&l.allow_targets.unwrap_or_default())
                .map_err(|e| format!("allow_targets: {e}"))?;
        let retry_schedule =
            crate::retry::parse_schedule(&required("retry_schedule", l.retry_schedule)?)
                .map_err(|e| format!("retry_schedule: {e}"))?;
        let request_timeout = duration("request_timeout", l.request_timeout)?;
        let lease = duration("lease", l.lease)?;
        if lease <= request_timeout + Duration::from_secs(5) {
            return Err(format!(
                "lease ({lease:?}) must exceed request_timeout ({request_timeout:?}) by more than 5s"
            ));
        }
        let endpoint_concurrency = required("endpoint_concurrency", l.endpoint_concurrency)?;
        if !(1..=100).contains(&endpoint_concurrency) {
            return Err("endpoint_concurrency must be between 1 and 100".into());
        }
        let max_in_flight = required("max_in_flight", l.max_in_flight)?;
        if max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        let tenant_max_in_flight = required("tenant_max_in_flight", l.tenant_max_in_flight)?;
        if tenant_max_in_flight == 0 {
            return Err("tenant_max_in_flight must be at least 1".into());
        }
        let max_connections = required("max_connections", l.max_connections)?;
        if max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        let header_timeout = duration("header_timeout", l.header_timeout)?;
        let body_timeout = duration("body_timeout", l.body_timeout)?;
        if header_timeout.is_zero() || body_timeout.is_zero() {
            return Err("header_timeout and body_timeout must be longer than 0s".into());
        }
        // A connect may not outlast the attempt it belongs to.
        let connect_timeout = duration("connect_timeout", l.connect_timeout)?.min(request_timeout);
        let egress_proxy = match l.egress_proxy.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                Some(crate::model::check_proxy_url(text).map_err(|e| format!("egress_{e}"))?)
            }
        };
        let egress_no_proxy =
            crate::dispatch::proxy::NoProxy::parse(l.egress_no_proxy.as_deref().unwrap_or(""));
        let admin_token = l.admin_token.filter(|t| !t.is_empty());
        if let Some(t) = &admin_token
            && t.len() < 16
        {
            return Err("the admin token must be at least 16 characters".into());
        }
        let metrics_listen = match l.metrics_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| {
                format!("metrics_listen = {text:?} is not an address such as 127.0.0.1:9090")
            })?),
        };
        let metrics_tenant_series = required("metrics_tenant_series", l.metrics_tenant_series)?;
        if metrics_tenant_series > MAX_TENANT_SERIES {
            return Err(format!(
                "metrics_tenant_series must be at most {MAX_TENANT_SERIES}"
            ));
        }
        let transform_workers = required("transform_workers", l.transform_workers)?;
        if !(1..=64).contains(&transform_workers) {
            return Err("transform_workers must be between 1 and 64".into());
        }
        let transform_memory_mib = required("transform_memory_mib", l.transform_memory_mib)?;
        if !(1..=1024).contains(&transform_memory_mib) {
            return Err("transform_memory_mib must be between 1 and 1024".into());
        }
        let transform_time = duration("transform_time_limit", l.transform_time_limit.clone())?;
        if transform_time.is_zero() || transform_time > Duration::from_secs(10) {
            return Err("transform_time_limit must be more than 0 and at most 10s".into());
        }
        let transform_limits = crate::transform::Limits {
            memory_bytes: transform_memory_mib << 20,
            time: transform_time,
            ..crate::transform::Limits::default()
        };
        Ok(Config {
            http: HttpConfig {
                listen,
                max_body_bytes: required("max_body_bytes", l.max_body_bytes)?,
                max_connections,
                header_timeout,
                body_timeout,
            },
            store: StoreConfig {
                data_dir: required("data_dir", l.data_dir)?,
                database_url,
                db_pool_size,
            },
            delivery: DeliveryConfig {
                allow_targets,
                request_timeout,
                connect_timeout,
                response_capture_bytes: required(
                    "response_capture_bytes",
                    l.response_capture_bytes,
                )?,
                egress_proxy,
                egress_no_proxy,
                transform_workers,
                transform_limits,
            },
            dispatch: DispatchConfig {
                retry_schedule,
                endpoint_concurrency,
                max_in_flight,
                tenant_max_in_flight: tenant_max_in_flight.min(max_in_flight),
                lease,
                attempt_timeout: request_timeout,
                poll_interval: duration("poll_interval", l.poll_interval)?,
                shutdown_grace: duration("shutdown_grace", l.shutdown_grace)?,
                max_retry_after: duration("max_retry_after", l.max_retry_after)?,
                failure_threshold: required("failure_threshold", l.failure_threshold)?.max(1),
                probe_interval: duration("probe_interval", l.probe_interval)?,
                auto_disable_after: duration("auto_disable_after", l.auto_disable_after)?,
            },
            retention: crate::retention::Policy {
                payloads: duration("payload_retention", l.payload_retention)?,
                events: duration("event_retention", l.event_retention)?,
                every: duration("retention_interval", l.retention_interval)?,
                partition: partition_interval(duration(
                    "partition_interval",
                    l.partition_interval,
                )?)?,
            },
            admin_token,
            strict_event_types: l.strict_event_types.unwrap_or(false),
            observability: ObservabilityConfig {
                metrics_listen,
                metrics_tenant_series,
                log_format: LogFormat::parse(&required("log_format", l.log_format)?)?,
                otlp_endpoint: otlp_endpoint(&required("otlp_endpoint", l.otlp_endpoint)?)?,
            },
            ui: ui_config(
                l.public_url,
                l.portal_frame_ancestors,
                l.brand_name,
                l.brand_logo_url,
                l.brand_accent,
            )?,
        })
    }
}

/// Most tenants `metrics_tenant_series` may give series of their own: each costs a few
/// series per scrape, and a scrape of thousands of tenants defeats the cap's purpose.
pub const MAX_TENANT_SERIES: usize = 1000;

/// `otlp_endpoint`: empty for none, else an `http://` URL (the exporter speaks plain HTTP,
/// to a collector nearby).
fn otlp_endpoint(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
            Ok(Some(text.to_owned()))
        }
        _ => Err(format!(
            "otlp_endpoint = {text:?}: use an http:// URL such as http://127.0.0.1:4318, or \"\" for none"
        )),
    }
}

impl LogFormat {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log_format = {other:?}: use text or json")),
        }
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// An origin as CSP's `frame-ancestors` takes it: `https://host[:port]` or `http://…`.
fn is_origin(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b))
    })
}

fn ui_config(
    public_url: Option<String>,
    ancestors: Option<String>,
    name: Option<String>,
    logo: Option<String>,
    accent: Option<String>,
) -> Result<UiConfig, String> {
    let public_url = nonempty(public_url);
    if let Some(u) = &public_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(format!(
            "public_url = {u:?} must start with http:// or https://"
        ));
    }
    let portal_frame_ancestors: Vec<String> = nonempty(ancestors)
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = portal_frame_ancestors.iter().find(|o| !is_origin(o)) {
        return Err(format!(
            "portal_frame_ancestors: {bad:?} is not an origin such as https://app.example.com"
        ));
    }
    let brand_name = nonempty(name).unwrap_or_else(|| "chime".into());
    crate::model::check_name(&brand_name).map_err(|e| format!("brand_{e}"))?;
    let brand_logo_url = nonempty(logo);
    if let Some(l) = &brand_logo_url {
        crate::model::check_logo_url(l).map_err(|e| format!("brand_{e}"))?;
    }
    let brand_accent = nonempty(accent);
    if let Some(a) = &brand_accent {
        crate::model::check_accent(a).map_err(|e| format!("brand_{e}"))?;
    }
    Ok(UiConfig {
        public_url,
        portal_frame_ancestors,
        brand_name,
        brand_logo_url,
        brand_accent,
    })
}

impl StoreConfig {
    /// Where the data lives: the SQLite file, or a PostgreSQL database.
    pub fn database(&self) -> crate::store::Database {
        match &self.database_url {
            Some(url) if !url.starts_with("sqlite://") => {
                crate::store::Database::Postgres(url.clone())
            }
            _ => crate::store::Database::Sqlite(self.sqlite_path()),
        }
    }

    /// Path of the SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        match &self.database_url {
            Some(url) => PathBuf::from(url.trim_start_matches("sqlite://")),
            None => self.data_dir.join("chime.db"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::defaults();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8088");
        assert_eq!(c.store.data_dir, PathBuf::from("./chime-data"));
        assert_eq!(c.dispatch.retry_schedule.len(), 7);
        assert_eq!(c.delivery.request_timeout, Duration::from_secs(15));
        assert_eq!(c.http.max_body_bytes, 1 << 20);
        assert!(c.delivery.allow_targets.is_empty());
        assert!(c.admin_token.is_none());
        assert_eq!(c.observability.metrics_listen, None);
        assert_eq!(c.observability.metrics_tenant_series, 0);
        assert_eq!(c.observability.log_format, LogFormat::Text);
        assert_eq!(c.observability.otlp_endpoint, None);
    }

    #[test]
    fn observability_settings_validate() {
        let c = Config::from_layer(Layer {
            metrics_listen: Some("127.0.0.1:0".into()),
            log_format: Some("json".into()),
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(c.observability.metrics_listen.is_some());
        assert_eq!(c.observability.log_format, LogFormat::Json);
        assert_eq!(
            c.observability.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        for bad in [
            Layer {
                log_format: Some("xml".into()),
                ..Default::default()
            },
            Layer {
                metrics_listen: Some("nowhere".into()),
                ..Default::default()
            },
            Layer {
                metrics_tenant_series: Some(MAX_TENANT_SERIES + 1),
                ..Default::default()
            },
            Layer {
                otlp_endpoint: Some("https://collector:4318".into()),
                ..Default::default()
            },
            Layer {
                otlp_endpoint: Some("collector".into()),
                ..Default::default()
            },
        ] {
            assert!(Config::from_layer(bad).is_err());
        }
    }

    #[test]
    fn layers_override_and_validate() {
        let file =
            Layer::parse_toml("retry_schedule = \"10ms,20ms\"\nendpoint_concurrency = 2").unwrap();
        let cli = Layer {
            endpoint_concurrency: Some(3),
            ..Default::default()
        };
        let c = Config::from_layer(cli.over(file)).unwrap();
        assert_eq!(c.dispatch.endpoint_concurrency, 3);
        assert_eq!(
            c.dispatch.retry_schedule,
            vec![Duration::from_millis(10), Duration::from_millis(20)]
        );
        assert!(Layer::parse_toml("nonsense = 1").is_err());
        let bad = Layer {
            request_timeout: Some("1h".into()),
            ..Default::default()
        };
        assert!(Config::from_layer(bad).unwrap_err().contains("lease"));
        let bad = Layer {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        };
        assert!(Config::from_layer(bad).is_err());
        for bad in ["500ms", "1500ms", "0s"] {
            let layer = Layer {
                partition_interval: Some(bad.into()),
                ..Default::default()
            };
            let err = Config::from_layer(layer).unwrap_err();
            assert!(err.contains("whole seconds"), "{bad}: {err}");
        }
        let c = Config::from_layer(Layer {
            partition_interval: Some("30s".into()),
            retention_interval: Some("10s".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.retention.partitions_ahead(),
            Duration::from_secs(80),
            "past two passes and two partitions"
        );
    }

    #[test]
    fn every_setting_has_a_documented_default_and_a_variable() {
        // Each key of the defaults file is a Layer field (deny_unknown_fields), and each
        // Layer field but the admin token has a default there.
        let defaults: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let all = Layer::parse_toml(DEFAULT_CONFIG_TOML).unwrap();
        let fields = toml::Table::try_from(&all).unwrap();
        assert_eq!(fields.len(), defaults.len());
        let cmd = show_defaults(<Layer as clap::Args>::augment_args(clap::Command::new("t")));
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let env = arg.get_env().unwrap().to_string_lossy().to_string();
            assert_eq!(env, format!("CHIME_{}", id.to_uppercase()), "{id}");
            let help = arg.get_help().unwrap().to_string();
            let empty_by_default = [
                "database_url",
                "allow_targets",
                "metrics_listen",
                "public_url",
                "portal_frame_ancestors",
                "brand_logo_url",
                "brand_accent",
                "otlp_endpoint",
                "egress_proxy",
                "egress_no_proxy",
            ];
            if !empty_by_default.contains(&id) {
                assert!(help.contains("[default: "), "{id}: {help}");
            }
        }
    }

    #[test]
    fn layers_merge_field_by_field() {
        let base = Layer {
            listen: Some("127.0.0.1:1".into()),
            lease: Some("1m".into()),
            ..Default::default()
        };
        let top = Layer {
            lease: Some("2m".into()),
            strict_event_types: Some(true),
            ..Default::default()
        };
        let merged = top.over(base);
        assert_eq!(merged.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(merged.lease.as_deref(), Some("2m"));
        assert_eq!(merged.strict_event_types, Some(true));
        assert_eq!(merged.max_in_flight, None);
    }

    #[test]
    fn postgres_urls_select_the_postgres_store() {
        use crate::store::Database;
        for url in ["postgres://u@h/db", "postgresql://u:p@h:5433/db?options=x"] {
            let c = Config::from_layer(Layer {
                database_url: Some(url.into()),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(c.store.database(), Database::Postgres(url.into()));
        }
        let c = Config::from_layer(Layer {
            database_url: Some("sqlite:///tmp/x.db".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.store.database(), Database::Sqlite("/tmp/x.db".into()));
        assert_eq!(
            Config::defaults().store.database(),
            Database::Sqlite(PathBuf::from("./chime-data/chime.db"))
        );
        assert_eq!(Config::defaults().store.db_pool_size, 16);
        let bad = Layer {
            db_pool_size: Some(0),
            ..Default::default()
        };
        assert!(Config::from_layer(bad).is_err());
    }
}
