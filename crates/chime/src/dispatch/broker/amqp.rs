//! RabbitMQ (AMQP 0-9-1): one channel in confirm mode per connection; a publish is mandatory,
//! so a message no queue takes comes back and the attempt fails rather than vanishing.
//! Success is the broker's ack. A closed channel or connection is dropped and made again on
//! the next attempt.

use std::net::SocketAddr;
use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};

use super::{Connection, Credentials, Message, PublishError, chain};
use crate::dispatch::http::ErrorKind;
use crate::model::Destination;

struct Amqp {
    // Kept so the connection lives as long as its channel.
    _connection: lapin::Connection,
    channel: lapin::Channel,
}

/// `url`'s path is the virtual host (`/` or empty: the default, `/`).
pub(super) async fn connect(
    addr: SocketAddr,
    url: &http::Uri,
    creds: Option<&Credentials>,
) -> Result<Arc<dyn Connection>, PublishError> {
    let vhost = match url.path() {
        "" | "/" => "/".to_owned(),
        p => percent_decode(&p[1..]),
    };
    let mut uri = lapin::uri::AMQPUri::default();
    uri.authority.host = addr.ip().to_string();
    uri.authority.port = addr.port();
    uri.vhost = vhost;
    if let Some(c) = creds {
        uri.authority.userinfo.username = c.username.clone();
        uri.authority.userinfo.password = c.password.clone();
    }
    let broken = |e: lapin::Error| {
        PublishError::broken(ErrorKind::Connect, format!("RabbitMQ: {}", chain(&e)))
    };
    let connection = lapin::Connection::connect_uri(uri, lapin::ConnectionProperties::default())
        .await
        .map_err(broken)?;
    let channel = connection.create_channel().await.map_err(broken)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broken)?;
    Ok(Arc::new(Amqp {
        _connection: connection,
        channel,
    }))
}

/// `%2f` and the like in a virtual host's name.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait::async_trait]
impl Connection for Amqp {
    async fn publish(&self, to: &Destination, msg: &Message<'_>) -> Result<(), PublishError> {
        let Destination::Rabbitmq {
            exchange,
            routing_key,
        } = to
        else {
            return Err(PublishError::rejected("not a RabbitMQ destination"));
        };
        let mut table = FieldTable::default();
        for (name, value) in msg.headers {
            table.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        }
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from(msg.content_type))
            .with_message_id(ShortString::from(msg.id))
            // Persistent: a durable queue keeps it across a broker restart.
            .with_delivery_mode(2)
            .with_headers(table);
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        // A channel the broker closed (an exchange that does not exist, say) is unusable:
        // the connection is made again next time, and the reason is the broker's.
        let closed = |e: lapin::Error| {
            PublishError::broken(ErrorKind::Rejected, format!("RabbitMQ: {}", chain(&e)))
        };
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(exchange.as_str()),
                ShortString::from(routing_key.as_str()),
                options,
                msg.body,
                properties,
            )
            .await
            .map_err(closed)?
            .await
            .map_err(closed)?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(PublishError::rejected(format!(
                    "RabbitMQ returned the message: {} {} (no queue is bound for exchange {exchange:?}, routing key {routing_key:?})",
                    returned.reply_code, returned.reply_text
                )))
            }
            Confirmation::Nack(None) => Err(PublishError::rejected(
                "RabbitMQ refused the message (nack)",
            )),
            Confirmation::NotRequested => Err(PublishError::broken(
                ErrorKind::Protocol,
                "RabbitMQ: the channel is not in confirm mode",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn virtual_hosts_are_percent_decoded() {
        assert_eq!(super::percent_decode("%2f"), "/");
        assert_eq!(super::percent_decode("tenants%2Facme"), "tenants/acme");
        assert_eq!(super::percent_decode("plain"), "plain");
        assert_eq!(super::percent_decode("bad%zz"), "bad%zz");
    }
}
