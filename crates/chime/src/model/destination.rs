//! Where an endpoint's deliveries go when it is not an HTTP receiver: a NATS subject
//! (optionally through JetStream, acknowledged), a RabbitMQ exchange (publisher confirms) or a
//! Redis stream. The endpoint's `url` names the broker (`nats://`, `amqp://`, `redis://`);
//! these settings say where in it. Checked once, at the API edge.

use serde::{Deserialize, Serialize};

/// The longest subject, exchange, routing key or stream name.
pub const MAX_NAME_BYTES: usize = 255;

/// What kind of receiver an endpoint is, and where in a broker its messages go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// An HTTP receiver at the endpoint's `url` (the default; stored as no destination).
    Http,
    /// A NATS subject. With `jetstream`, success is the stream's acknowledgement; without, it
    /// is the server having read the message (a flush), as core NATS acknowledges nothing.
    Nats {
        subject: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        jetstream: bool,
    },
    /// A RabbitMQ exchange (`""`: the default exchange, which routes to the queue named by
    /// the routing key). Success is the broker's publisher confirm; a message no queue takes
    /// (published as mandatory) is a failed attempt.
    Rabbitmq {
        #[serde(default)]
        exchange: String,
        routing_key: String,
    },
    /// A Redis stream (`XADD`), trimmed to about `maxlen` entries when set. Success is the
    /// entry id Redis answers.
    RedisStream {
        stream: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maxlen: Option<u64>,
    },
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Nats { .. } => "nats",
            Self::Rabbitmq { .. } => "rabbitmq",
            Self::RedisStream { .. } => "redis_stream",
        }
    }

    /// In words, for people: `NATS subject orders (JetStream)`; `None` for HTTP.
    pub fn describe(&self) -> Option<String> {
        Some(match self {
            Self::Http => return None,
            Self::Nats { subject, jetstream } => format!(
                "NATS subject {subject}{}",
                if *jetstream { " (JetStream)" } else { "" }
            ),
            Self::Rabbitmq {
                exchange,
                routing_key,
            } => format!("RabbitMQ exchange {exchange:?}, routing key {routing_key}"),
            Self::RedisStream { stream, maxlen } => match maxlen {
                Some(n) => format!("Redis stream {stream} (about {n} entries kept)"),
                None => format!("Redis stream {stream}"),
            },
        })
    }

    /// The URL schemes the endpoint's `url` may have for this destination.
    pub fn url_schemes(&self) -> &'static [&'static str] {
        match self {
            Self::Http => &["http", "https"],
            Self::Nats { .. } => &["nats"],
            Self::Rabbitmq { .. } => &["amqp"],
            Self::RedisStream { .. } => &["redis"],
        }
    }

    /// The broker's port when the URL names none.
    pub fn default_port(&self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Nats { .. } => 4222,
            Self::Rabbitmq { .. } => 5672,
            Self::RedisStream { .. } => 6379,
        }
    }

    /// Names within the broker: lengths, characters, and what each broker refuses.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Http => Ok(()),
            Self::Nats { subject, .. } => {
                name("destination.subject", subject, false)?;
                let tokens_ok = subject
                    .split('.')
                    .all(|t| !t.is_empty() && t != "*" && t != ">");
                if !tokens_ok || subject.contains(char::is_whitespace) {
                    return Err(format!(
                        "destination.subject {subject:?} must be dot-separated non-empty tokens, without wildcards (* or >) or spaces"
                    ));
                }
                Ok(())
            }
            Self::Rabbitmq {
                exchange,
                routing_key,
            } => {
                name("destination.exchange", exchange, true)?;
                if !exchange
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                {
                    return Err(format!(
                        "destination.exchange {exchange:?} may hold letters, digits, '-', '_', '.' and ':' only"
                    ));
                }
                name("destination.routing_key", routing_key, !exchange.is_empty())?;
                if exchange.is_empty() && routing_key.is_empty() {
                    return Err(
                        "destination.routing_key names the queue when exchange is the default (\"\"): it must not be empty"
                            .into(),
                    );
                }
                Ok(())
            }
            Self::RedisStream { stream, maxlen } => {
                name("destination.stream", stream, false)?;
                if maxlen.is_some_and(|n| n == 0 || n > 1_000_000_000) {
                    return Err("destination.maxlen must be between 1 and 1000000000".into());
                }
                Ok(())
            }
        }
    }

    /// `Http` is stored as no destination at all, the way endpoints were stored before.
    pub fn stored(self) -> Option<Self> {
        (self != Self::Http).then_some(self)
    }
}

fn name(field: &str, value: &str, may_be_empty: bool) -> Result<(), String> {
    if value.is_empty() && !may_be_empty {
        return Err(format!("{field} must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(format!(
            "{field} must be at most {MAX_NAME_BYTES} bytes, without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Destination, String> {
        let d: Destination = serde_json::from_str(json).map_err(|e| e.to_string())?;
        d.check()?;
        Ok(d)
    }

    #[test]
    fn names_are_checked_per_broker() {
        parse(r#"{"type":"nats","subject":"orders.created","jetstream":true}"#).unwrap();
        parse(r#"{"type":"rabbitmq","exchange":"","routing_key":"orders"}"#).unwrap();
        parse(r#"{"type":"rabbitmq","exchange":"hooks","routing_key":""}"#).unwrap();
        parse(r#"{"type":"redis_stream","stream":"hooks","maxlen":1000}"#).unwrap();
        for bad in [
            r#"{"type":"nats","subject":"orders.*"}"#,
            r#"{"type":"nats","subject":"orders.>"}"#,
            r#"{"type":"nats","subject":"a..b"}"#,
            r#"{"type":"nats","subject":"a b"}"#,
            r#"{"type":"nats","subject":""}"#,
            r#"{"type":"nats"}"#,
            r#"{"type":"rabbitmq","exchange":"","routing_key":""}"#,
            r#"{"type":"rabbitmq","exchange":"a/b","routing_key":"k"}"#,
            r#"{"type":"redis_stream","stream":"s","maxlen":0}"#,
            r#"{"type":"redis_stream","stream":"s\u0000"}"#,
            r#"{"type":"kafka","topic":"t"}"#,
            r#"{"type":"nats","subject":"a","extra":1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(parse(&format!(r#"{{"type":"redis_stream","stream":"{long}"}}"#)).is_err());
    }

    #[test]
    fn http_is_stored_as_nothing() {
        assert_eq!(Destination::Http.stored(), None);
        let n = Destination::Nats {
            subject: "a".into(),
            jetstream: false,
        };
        assert_eq!(n.clone().stored(), Some(n));
    }
}
