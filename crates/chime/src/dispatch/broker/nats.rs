//! NATS: a core publish confirmed by a flush (the server has read it; core NATS acknowledges
//! nothing more), or a JetStream publish confirmed by the stream's acknowledgement. The
//! client reconnects by itself after a server restart, to the same checked address only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;

use super::{Connection, Credentials, Message, PublishError, chain};
use crate::dispatch::http::ErrorKind;
use crate::model::Destination;

struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

pub(super) async fn connect(
    addr: SocketAddr,
    creds: Option<&Credentials>,
    timeout: Duration,
) -> Result<Arc<dyn Connection>, PublishError> {
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        // The servers a cluster announces were never checked by the SSRF guard.
        .ignore_discovered_servers()
        .name(concat!("chime/", env!("CARGO_PKG_VERSION")));
    if let Some(c) = creds {
        options = options.user_and_password(c.username.clone(), c.password.clone());
    }
    let client = options
        .connect(format!("nats://{addr}"))
        .await
        .map_err(|e| PublishError::broken(ErrorKind::Connect, format!("NATS: {}", chain(&e))))?;
    let jetstream = jetstream::new(client.clone());
    Ok(Arc::new(Nats { client, jetstream }))
}

/// A JetStream publish that failed: only a broken pipe says the connection is gone.
fn refused(subject: &str, e: jetstream::context::PublishError) -> PublishError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => {
            PublishError::rejected(format!("JetStream: no stream takes subject {subject:?}"))
        }
        PublishErrorKind::TimedOut => PublishError {
            kind: ErrorKind::Timeout,
            text: "JetStream: no acknowledgement in time".into(),
            broken: false,
        },
        PublishErrorKind::BrokenPipe => {
            PublishError::broken(ErrorKind::Connect, format!("JetStream: {}", chain(&e)))
        }
        _ => PublishError::rejected(format!("JetStream: {}", chain(&e))),
    }
}

fn headers(msg: &Message<'_>) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    for (name, value) in msg.headers {
        h.insert(name.as_str(), value.as_str());
    }
    h
}

#[async_trait::async_trait]
impl Connection for Nats {
    async fn publish(&self, to: &Destination, msg: &Message<'_>) -> Result<(), PublishError> {
        let Destination::Nats { subject, jetstream } = to else {
            return Err(PublishError::rejected("not a NATS destination"));
        };
        if *jetstream {
            // A publish the client buffered while the server was away goes out when it is
            // back, after its attempt timed out and a retry went too: the stream keeps one
            // of the two (within its duplicate window, 2 minutes by default).
            let mut h = headers(msg);
            h.insert("Nats-Msg-Id", msg.delivery_id);
            let ack = self
                .jetstream
                .publish_with_headers(subject.clone(), h, msg.body.clone())
                .await
                .map_err(|e| refused(subject, e))?;
            return ack.await.map(drop).map_err(|e| refused(subject, e));
        }
        self.client
            .publish_with_headers(subject.clone(), headers(msg), msg.body.clone())
            .await
            .map_err(|e| match e.kind() {
                async_nats::client::PublishErrorKind::Send => {
                    PublishError::broken(ErrorKind::Connect, format!("NATS: {}", chain(&e)))
                }
                _ => PublishError::rejected(format!("NATS: {}", chain(&e))),
            })?;
        self.client
            .flush()
            .await
            .map_err(|e| PublishError::broken(ErrorKind::Connect, format!("NATS: {}", chain(&e))))
    }
}
