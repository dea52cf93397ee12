//! Settings: one typed `Config`, built from the commented defaults in `config.default.toml`,
//! then a config file, then `CHIME_*` environment variables and flags; validated once here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The defaults, which are also the documentation of every setting.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config.default.toml");

/// The validated settings of one `chime serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the REST API listens.
    pub listen: SocketAddr,
    /// Holds the SQLite file and the generated admin token.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; `None` means `<data_dir>/chime.db`.
    pub database_url: Option<String>,
    /// Most connections a PostgreSQL store keeps open.
    pub db_pool_size: usize,
    /// Internal ranges opened for delivery.
    pub allow_targets: Vec<IpNet>,
    /// Fixed admin token; `None` means generate one on first start.
    pub admin_token: Option<String>,
    /// Delays before each retry.
    pub retry_schedule: Vec<Duration>,
    /// Deadline of one attempt.
    pub request_timeout: Duration,
    /// Deadline of an attempt's TCP (and TLS) connect; at most `request_timeout`.
    pub connect_timeout: Duration,
    /// API request body limit.
    pub max_body_bytes: usize,
    /// Open API connections at most; past it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// Deadline for a request's head to arrive (also how long a kept-alive connection may
    /// sit idle).
    pub header_timeout: Duration,
    /// Deadline for a request's whole body to arrive once its handler reads it.
    pub body_timeout: Duration,
    /// How long in-flight attempts may finish at shutdown.
    pub shutdown_grace: Duration,
    /// Attempts in flight per endpoint.
    pub endpoint_concurrency: u32,
    /// Attempts in flight in all.
    pub max_in_flight: usize,
    /// Attempts in flight for the endpoints of one tenant; at most `max_in_flight`.
    pub tenant_max_in_flight: usize,
    /// Reservation time of a claimed delivery.
    pub lease: Duration,
    /// Fallback scan period.
    pub poll_interval: Duration,
    /// Bytes of a response kept with its attempt.
    pub response_capture_bytes: usize,
    /// Longest wait a receiver's `Retry-After` can impose.
    pub max_retry_after: Duration,
    /// Consecutive failed attempts that make an endpoint "failing" (circuit open).
    pub failure_threshold: u32,
    /// While failing, one probe attempt per this interval.
    pub probe_interval: Duration,
    /// A failing endpoint with no success for this long is disabled.
    pub auto_disable_after: Duration,
    /// Refuse events whose name is not in the event-type catalog.
    pub strict_event_types: bool,
    /// Event payloads older than this are removed (their metadata stays).
    pub payload_retention: Duration,
    /// Events older than this are deleted with their deliveries and attempts.
    pub event_retention: Duration,
    /// How often the retention task runs.
    pub retention_interval: Duration,
}

/// One layer of settings as written in a file or given by flags/environment: every field
/// optional, so layers can be merged.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub db_pool_size: Option<usize>,
    pub allow_targets: Option<String>,
    pub admin_token: Option<String>,
    pub retry_schedule: Option<String>,
    pub request_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub endpoint_concurrency: Option<u32>,
    pub max_in_flight: Option<usize>,
    pub tenant_max_in_flight: Option<usize>,
    pub lease: Option<String>,
    pub poll_interval: Option<String>,
    pub response_capture_bytes: Option<usize>,
    pub max_retry_after: Option<String>,
    pub failure_threshold: Option<u32>,
    pub probe_interval: Option<String>,
    pub auto_disable_after: Option<String>,
    pub strict_event_types: Option<bool>,
    pub payload_retention: Option<String>,
    pub event_retention: Option<String>,
    pub retention_interval: Option<String>,
}

impl Layer {
    pub fn parse_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `self` wins where it has a value.
    pub fn over(self, base: Layer) -> Layer {
        Layer {
            listen: self.listen.or(base.listen),
            data_dir: self.data_dir.or(base.data_dir),
            database_url: self.database_url.or(base.database_url),
            db_pool_size: self.db_pool_size.or(base.db_pool_size),
            allow_targets: self.allow_targets.or(base.allow_targets),
            admin_token: self.admin_token.or(base.admin_token),
            retry_schedule: self.retry_schedule.or(base.retry_schedule),
            request_timeout: self.request_timeout.or(base.request_timeout),
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            max_body_bytes: self.max_body_bytes.or(base.max_body_bytes),
            max_connections: self.max_connections.or(base.max_connections),
            header_timeout: self.header_timeout.or(base.header_timeout),
            body_timeout: self.body_timeout.or(base.body_timeout),
            shutdown_grace: self.shutdown_grace.or(base.shutdown_grace),
            endpoint_concurrency: self.endpoint_concurrency.or(base.endpoint_concurrency),
            max_in_flight: self.max_in_flight.or(base.max_in_flight),
            tenant_max_in_flight: self.tenant_max_in_flight.or(base.tenant_max_in_flight),
            lease: self.lease.or(base.lease),
            poll_interval: self.poll_interval.or(base.poll_interval),
            response_capture_bytes: self.response_capture_bytes.or(base.response_capture_bytes),
            max_retry_after: self.max_retry_after.or(base.max_retry_after),
            failure_threshold: self.failure_threshold.or(base.failure_threshold),
            probe_interval: self.probe_interval.or(base.probe_interval),
            auto_disable_after: self.auto_disable_after.or(base.auto_disable_after),
            strict_event_types: self.strict_event_types.or(base.strict_event_types),
            payload_retention: self.payload_retention.or(base.payload_retention),
            event_retention: self.event_retention.or(base.event_retention),
            retention_interval: self.retention_interval.or(base.retention_interval),
        }
    }
}

fn duration(name: &str, v: Option<String>) -> Result<Duration, String> {
    let v = v.ok_or_else(|| format!("{name} is not set"))?;
    humantime::parse_duration(v.trim()).map_err(|e| format!("{name} = {v:?}: {e}"))
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
        let admin_token = l.admin_token.filter(|t| !t.is_empty());
        if let Some(t) = &admin_token
            && t.len() < 16
        {
            return Err("the admin token must be at least 16 characters".into());
        }
        Ok(Config {
            listen,
            data_dir: required("data_dir", l.data_dir)?,
            database_url,
            db_pool_size,
            allow_targets,
            admin_token,
            retry_schedule,
            request_timeout,
            connect_timeout,
            max_body_bytes: required("max_body_bytes", l.max_body_bytes)?,
            max_connections,
            header_timeout,
            body_timeout,
            shutdown_grace: duration("shutdown_grace", l.shutdown_grace)?,
            endpoint_concurrency,
            max_in_flight,
            tenant_max_in_flight: tenant_max_in_flight.min(max_in_flight),
            lease,
            poll_interval: duration("poll_interval", l.poll_interval)?,
            response_capture_bytes: required("response_capture_bytes", l.response_capture_bytes)?,
            max_retry_after: duration("max_retry_after", l.max_retry_after)?,
            failure_threshold: required("failure_threshold", l.failure_threshold)?.max(1),
            probe_interval: duration("probe_interval", l.probe_interval)?,
            auto_disable_after: duration("auto_disable_after", l.auto_disable_after)?,
            strict_event_types: l.strict_event_types.unwrap_or(false),
            payload_retention: duration("payload_retention", l.payload_retention)?,
            event_retention: duration("event_retention", l.event_retention)?,
            retention_interval: duration("retention_interval", l.retention_interval)?,
        })
    }

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
        assert_eq!(c.listen.to_string(), "127.0.0.1:8088");
        assert_eq!(c.data_dir, PathBuf::from("./chime-data"));
        assert_eq!(c.retry_schedule.len(), 7);
        assert_eq!(c.request_timeout, Duration::from_secs(15));
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert!(c.allow_targets.is_empty());
        assert!(c.admin_token.is_none());
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
        assert_eq!(c.endpoint_concurrency, 3);
        assert_eq!(
            c.retry_schedule,
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
            assert_eq!(c.database(), Database::Postgres(url.into()));
        }
        let c = Config::from_layer(Layer {
            database_url: Some("sqlite:///tmp/x.db".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.database(), Database::Sqlite("/tmp/x.db".into()));
        assert_eq!(
            Config::defaults().database(),
            Database::Sqlite(PathBuf::from("./chime-data/chime.db"))
        );
        assert_eq!(Config::defaults().db_pool_size, 16);
        let bad = Layer {
            db_pool_size: Some(0),
            ..Default::default()
        };
        assert!(Config::from_layer(bad).is_err());
    }
}
