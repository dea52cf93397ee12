//! Wake-ups between nodes: LISTEN on one dedicated connection (outside the pool: a pooled
//! connection is shared, and LISTEN is a property of the session).
//!
//! Writers call `pg_notify(channel, payload)` inside their transaction, so the notification
//! is delivered on commit, and only then. A payload is an endpoint id whose deliveries became
//! due, or `tenant-deleted:<id>` (`tenant_deleted`). The listener forwards each as a
//! `Notification`. When the connection drops it reconnects with capped exponential backoff;
//! notifications sent meanwhile are lost, so after every successful LISTEN it says `Resync`
//! (caches are emptied; the dispatcher's fallback scan covers due deliveries).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::Notification;

const TENANT_DELETED: &str = "tenant-deleted:";

/// The payload that announces a tenant's deletion. Endpoint ids (`ep_…`) never look like it.
pub fn tenant_deleted(tenant_id: &str) -> String {
    format!("{TENANT_DELETED}{tenant_id}")
}

/// Reads a payload back.
fn parse(payload: &str) -> Notification {
    match payload.strip_prefix(TENANT_DELETED) {
        Some(tenant) => Notification::TenantDeleted(tenant.to_owned()),
        None => Notification::Due(payload.to_owned()),
    }
}

/// Backoff between reconnection attempts: doubles from the first value up to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Starts the listener task; it ends when the returned receiver is dropped.
pub fn spawn(
    config: tokio_postgres::Config,
    channel: String,
) -> mpsc::UnboundedReceiver<Notification> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut backoff = BACKOFF.0;
        loop {
            let listened = tokio::select! {
                r = listen(&config, &channel, &tx, &mut backoff) => r,
                _ = tx.closed() => return,
            };
            match listened {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "lost the database notification connection; reconnecting");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    });
    rx
}

/// One connection's life: LISTEN, then forward notifications until the connection ends
/// (an error) or the receiver is gone (`Ok`). Resets `backoff` once LISTEN succeeded.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    tx: &mpsc::UnboundedSender<Notification>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    // The connection object must be polled for the client to make progress and to see
    // notifications: drive it in its own task and pass notifications over a channel.
    let (note_tx, mut note_rx) = mpsc::unbounded_channel::<String>();
    let mut driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if note_tx.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await
            .map_err(|e| e.to_string())?;
        *backoff = BACKOFF.0;
        tracing::debug!(channel, "listening for wake-ups from other nodes");
        // Whatever was sent before this LISTEN (or while reconnecting) is lost.
        if tx.send(Notification::Resync).is_err() {
            return Ok(());
        }
        loop {
            tokio::select! {
                note = note_rx.recv() => match note {
                    Some(payload) => {
                        if tx.send(parse(&payload)).is_err() {
                            return Ok(());
                        }
                    }
                    // The driver ended: the connection is gone.
                    None => break,
                },
                ended = &mut driver => {
                    return Err(match ended {
                        Ok(Err(e)) => e.to_string(),
                        _ => "the connection closed".into(),
                    });
                }
            }
        }
        Err("the connection closed".into())
    }
    .await;
    driver.abort();
    result
}

/// `"name"`, with embedded quotes doubled: a channel name as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_say_what_happened() {
        use super::*;
        assert_eq!(
            parse(&tenant_deleted("acme")),
            Notification::TenantDeleted("acme".into())
        );
        assert_eq!(parse("ep_01abc"), Notification::Due("ep_01abc".into()));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("chime_due"), "\"chime_due\"");
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
