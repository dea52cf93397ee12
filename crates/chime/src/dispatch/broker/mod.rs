//! Destinations that are not HTTP: a delivery published to a broker instead of POSTed.
//!
//! One trait, `Connection` (publish one message, say whether the broker took it), and one
//! file per broker: `nats.rs` (core NATS or JetStream), `amqp.rs` (RabbitMQ with publisher
//! confirms), `redis_stream.rs` (`XADD`). `Brokers` holds one connection per broker address
//! and credentials, made on first use to the address the SSRF guard allowed, dropped when it
//! breaks (the next attempt connects again, so a restarted broker is reached again) or when
//! the pool is full and it is the least recently used.
//!
//! The message is the delivery chime would POST: the exact body bytes and the `webhook-*`
//! headers (with the content type, the endpoint's own headers and a source's passed headers),
//! so a consumer verifies it with any Standard Webhooks library. A broker that refuses or
//! does not acknowledge makes a failed attempt, retried like any other.

mod amqp;
mod nats;
mod redis_stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::http::{ErrorKind, GuardedResolver};
use crate::model::Destination;

/// Broker connections kept at once; past it the least recently used one is closed. Bounds
/// what a tenant creating endpoints to many brokers can hold open.
const MAX_CONNECTIONS: usize = 256;

/// One message as a broker carries it.
pub(super) struct Message<'a> {
    pub body: &'a Bytes,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`, `content-type`, then the
    /// endpoint's and the source's headers: names in lower case, as HTTP/2 sends them.
    pub headers: &'a [(String, String)],
    /// The event id (`webhook-id`), where a broker has a message id of its own.
    pub id: &'a str,
    /// The delivery's id: the same on each retry, another on a replay. JetStream
    /// de-duplicates on it.
    pub delivery_id: &'a str,
    pub content_type: &'a str,
}

/// What went wrong with a publish, and whether the connection is still good.
#[derive(Debug)]
pub(super) struct PublishError {
    pub kind: ErrorKind,
    pub text: String,
    /// The connection is broken or closed: drop it, connect again next time.
    pub broken: bool,
}

impl PublishError {
    pub fn rejected(text: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Rejected,
            text: text.into(),
            broken: false,
        }
    }

    pub fn broken(kind: ErrorKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
            broken: true,
        }
    }
}

/// A connection to one broker. Publishing through it is safe from many tasks at once.
#[async_trait::async_trait]
pub(super) trait Connection: Send + Sync {
    /// Publishes `msg` where `to` says; `Ok` once the broker acknowledged it.
    async fn publish(&self, to: &Destination, msg: &Message<'_>) -> Result<(), PublishError>;
}

/// The user name and password a broker is given (an endpoint's basic `auth`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Where an endpoint's messages go: the broker's URL (checked when saved), credentials, and
/// the place in the broker.
#[derive(Debug, Clone)]
pub struct BrokerTarget {
    pub url: http::Uri,
    pub credentials: Option<Credentials>,
    pub destination: Destination,
}

impl BrokerTarget {
    fn key(&self, tenant: &Arc<str>) -> Key {
        Key {
            tenant: tenant.clone(),
            kind: self.destination.kind(),
            url: self.url.to_string(),
            credentials: self.credentials.clone(),
            exchange: match &self.destination {
                Destination::Rabbitmq { exchange, .. } => exchange.clone(),
                _ => String::new(),
            },
        }
    }
}

/// What one kept connection serves. A tenant's connections are its own, so nothing another
/// tenant's endpoint does to a connection (a publish that makes RabbitMQ close the channel)
/// touches it; within a tenant, RabbitMQ channels are per exchange for the same reason.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: Arc<str>,
    kind: &'static str,
    url: String,
    credentials: Option<Credentials>,
    exchange: String,
}

struct Entry {
    conn: Arc<dyn Connection>,
    used: Instant,
}

/// The connections to brokers, one per address and credentials.
pub(super) struct Brokers {
    resolver: GuardedResolver,
    connect_timeout: Duration,
    pool: Mutex<HashMap<Key, Entry>>,
    /// One connect at a time per key: the attempts in flight to a broker not yet connected
    /// wait for one connection instead of each making its own. Emptied as connects finish.
    connecting: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl Brokers {
    pub fn new(resolver: GuardedResolver, connect_timeout: Duration) -> Self {
        Self {
            resolver,
            connect_timeout,
            pool: Mutex::default(),
            connecting: Mutex::default(),
        }
    }

    /// Publishes `msg` to `target`, connecting first if no connection is kept. Never waits
    /// longer than the caller's own timeout around it allows.
    pub async fn publish(
        &self,
        tenant: &Arc<str>,
        target: &BrokerTarget,
        msg: &Message<'_>,
    ) -> Result<(), PublishError> {
        let key = target.key(tenant);
        let conn = match self.kept(&key) {
            Some(c) => c,
            None => self.connect_once(&key, target).await?,
        };
        let result = conn.publish(&target.destination, msg).await;
        if let Err(e) = &result
            && e.broken
        {
            self.forget(&key, &conn);
        }
        result
    }

    /// The connection for `key`, made by this call or by the one it waited for.
    async fn connect_once(
        &self,
        key: &Key,
        target: &BrokerTarget,
    ) -> Result<Arc<dyn Connection>, PublishError> {
        let turn = self
            .connecting
            .lock()
            .expect("never poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let made = {
            let _held = turn.lock().await;
            match self.kept(key) {
                Some(c) => Ok(c),
                None => self.connect(target).await.inspect(|c| {
                    self.keep(key.clone(), c.clone());
                }),
            }
        };
        let mut connecting = self.connecting.lock().expect("never poisoned");
        // The last one out removes the key's lock (the map holds one reference, `turn` one).
        if Arc::strong_count(&turn) == 2 {
            connecting.remove(key);
        }
        made
    }

    fn kept(&self, key: &Key) -> Option<Arc<dyn Connection>> {
        let mut pool = self.pool.lock().expect("never poisoned");
        let entry = pool.get_mut(key)?;
        entry.used = Instant::now();
        Some(entry.conn.clone())
    }

    fn keep(&self, key: Key, conn: Arc<dyn Connection>) {
        let mut pool = self.pool.lock().expect("never poisoned");
        if pool.len() >= MAX_CONNECTIONS
            && !pool.contains_key(&key)
            && let Some(oldest) = pool
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
        {
            pool.remove(&oldest);
        }
        pool.insert(
            key,
            Entry {
                conn,
                used: Instant::now(),
            },
        );
    }

    /// Drops `conn` if it is still the one kept for `key` (another task may have replaced it).
    fn forget(&self, key: &Key, conn: &Arc<dyn Connection>) {
        let mut pool = self.pool.lock().expect("never poisoned");
        if pool.get(key).is_some_and(|e| Arc::ptr_eq(&e.conn, conn)) {
            pool.remove(key);
        }
    }

    /// Resolves the broker's host through the SSRF guard and connects to the first address
    /// it allows: the broker library never resolves a name itself.
    async fn connect(&self, target: &BrokerTarget) -> Result<Arc<dyn Connection>, PublishError> {
        let host = target.url.host().unwrap_or_default();
        let port = target
            .url
            .port_u16()
            .unwrap_or(target.destination.default_port());
        let addr = match self.resolver.allowed(host).await {
            Ok(addrs) => SocketAddr::new(addrs[0].ip(), port),
            Err(e) => {
                let kind = super::http::resolve_kind(&e);
                return Err(PublishError::broken(kind, e.to_string()));
            }
        };
        let creds = target.credentials.as_ref();
        let t = self.connect_timeout;
        let made = tokio::time::timeout(t, async {
            match &target.destination {
                Destination::Nats { .. } => nats::connect(addr, creds, t).await,
                Destination::Rabbitmq { .. } => amqp::connect(addr, &target.url, creds).await,
                Destination::RedisStream { .. } => {
                    redis_stream::connect(addr, &target.url, creds, t).await
                }
                Destination::Http => Err(PublishError::rejected("not a broker destination")),
            }
        })
        .await;
        match made {
            Ok(r) => r,
            Err(_) => Err(PublishError::broken(
                ErrorKind::Connect,
                format!("no connection to {addr} within {t:?}"),
            )),
        }
    }
}

/// The error chain of `e` in one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
