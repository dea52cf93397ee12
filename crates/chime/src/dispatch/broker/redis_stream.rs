//! Redis streams: `XADD stream [MAXLEN ~ n] * body <bytes> webhook-id … content-type …`.
//! Success is the entry id Redis answers. One multiplexed connection per server and
//! credentials; an I/O failure drops it and the next attempt connects again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::MultiplexedConnection;

use super::{Connection, Credentials, Message, PublishError, chain};
use crate::dispatch::http::ErrorKind;
use crate::model::Destination;

struct RedisStream {
    conn: MultiplexedConnection,
}

/// `url`'s path is the database number (`/` or empty: 0).
pub(super) async fn connect(
    addr: SocketAddr,
    url: &http::Uri,
    creds: Option<&Credentials>,
    timeout: Duration,
) -> Result<Arc<dyn Connection>, PublishError> {
    let db: i64 = match url.path().trim_start_matches('/') {
        "" => 0,
        n => n.parse().map_err(|_| {
            PublishError::rejected(format!(
                "Redis: the URL's path {n:?} is not a database number"
            ))
        })?,
    };
    let broken = |e: redis::RedisError| {
        PublishError::broken(ErrorKind::Connect, format!("Redis: {}", chain(&e)))
    };
    let info = format!("redis://{addr}/")
        .into_connection_info()
        .map_err(broken)?;
    let mut settings = info.redis_settings().clone().set_db(db);
    if let Some(c) = creds {
        settings = settings.set_username(&c.username).set_password(&c.password);
    }
    let client = redis::Client::open(info.set_redis_settings(settings)).map_err(broken)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(broken)?;
    Ok(Arc::new(RedisStream { conn }))
}

#[async_trait::async_trait]
impl Connection for RedisStream {
    async fn publish(&self, to: &Destination, msg: &Message<'_>) -> Result<(), PublishError> {
        let Destination::RedisStream { stream, maxlen } = to else {
            return Err(PublishError::rejected("not a Redis stream destination"));
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream.as_str());
        if let Some(n) = maxlen {
            cmd.arg("MAXLEN").arg("~").arg(*n);
        }
        cmd.arg("*").arg("body").arg(&msg.body[..]);
        for (name, value) in msg.headers {
            cmd.arg(name.as_str()).arg(value.as_str());
        }
        let mut conn = self.conn.clone();
        match cmd.query_async::<String>(&mut conn).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => Err(
                PublishError::broken(ErrorKind::Connect, format!("Redis: {}", chain(&e))),
            ),
            // An answer from Redis (WRONGTYPE, OOM, NOAUTH…) leaves the connection usable.
            Err(e) => Err(PublishError::rejected(format!("Redis: {}", chain(&e)))),
        }
    }
}
