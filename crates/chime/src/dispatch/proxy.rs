//! Deliveries through an egress proxy, so receivers can allow one address. An `https` target
//! is reached through a `CONNECT` tunnel to the address chime resolved and checked itself
//! (the TLS handshake inside still names the host); an `http` target is sent in absolute
//! form to the proxy, with the checked address in the request line (`http::send` rewrites
//! it) and the host in `Host`. Either way the proxy never resolves a name chime has not
//! checked, so the SSRF guard holds behind it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::GuardedResolver;

/// The longest proxy answer head to a `CONNECT` read before giving up on it.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// Hosts that bypass the egress proxy (`egress_no_proxy`): exact names, `.suffix` or
/// `suffix` for a domain and its subdomains, `*` for all, IP literals as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<String>);

impl NoProxy {
    pub fn parse(list: &str) -> Self {
        Self(
            list.split([',', ' '])
                .map(|s| s.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    pub fn bypasses(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.0.iter().any(|rule| {
            rule == "*"
                || host == *rule
                || host
                    .strip_suffix(rule.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }
}

/// Connects through the proxy at `proxy` (an `http://host:port` checked at save).
#[derive(Clone)]
pub(super) struct ProxyConnector {
    pub(super) proxy: http::Uri,
    pub(super) resolver: GuardedResolver,
    pub(super) connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ProxyError {
    #[error("could not reach the egress proxy {0}: {1}")]
    Connect(String, io::Error),
    #[error("the egress proxy {0} refused the tunnel: {1}")]
    Refused(String, String),
}

impl tower::Service<http::Uri> for ProxyConnector {
    type Response = Proxied;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Proxied, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if dst.scheme_str() != Some("https") {
                return Ok(Proxied {
                    io: TokioIo::new(this.reach_proxy().await?),
                    absolute_form: true,
                });
            }
            // The tunnel goes to an address chime checked, never to a name the proxy would
            // resolve on its own; each permitted address in turn, IPv4 first.
            let port = dst.port_u16().unwrap_or(443);
            let mut refusal = None;
            for addr in this
                .resolver
                .allowed(dst.host().unwrap_or_default())
                .await?
            {
                let target = std::net::SocketAddr::new(addr.ip(), port);
                let mut tcp = this.reach_proxy().await?;
                let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
                tcp.write_all(request.as_bytes()).await?;
                let head = read_head(&mut tcp).await?;
                let status_line = head.lines().next().unwrap_or_default().to_owned();
                let ok = status_line
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|code| code.starts_with('2'));
                if ok {
                    return Ok(Proxied {
                        io: TokioIo::new(tcp),
                        absolute_form: false,
                    });
                }
                refusal = Some(ProxyError::Refused(this.name(), status_line));
            }
            Err(refusal
                .unwrap_or_else(|| ProxyError::Refused(this.name(), "no address".into()))
                .into())
        })
    }
}

impl ProxyConnector {
    fn name(&self) -> String {
        self.proxy
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// A TCP connection to the proxy itself (its name is the operator's, resolved as is).
    async fn reach_proxy(&self) -> Result<TcpStream, ProxyError> {
        let host = self.proxy.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.proxy.port_u16().unwrap_or(80);
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ProxyError::Connect(self.name(), io::ErrorKind::TimedOut.into()))?
            .map_err(|e| ProxyError::Connect(self.name(), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| ProxyError::Connect(self.name(), e))?;
        Ok(tcp)
    }
}

/// Reads a response head byte by byte (the tunnel's bytes after it belong to TLS).
async fn read_head(tcp: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(io::Error::other("the proxy's answer head is too long"));
        }
        let byte = tcp.read_u8().await?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A connection to the proxy: a tunnel (`https`) or a plain one that carries absolute-form
/// requests (`http`).
pub(super) struct Proxied {
    io: TokioIo<TcpStream>,
    absolute_form: bool,
}

impl Connection for Proxied {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.absolute_form)
    }
}

impl Read for Proxied {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Proxied {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_names_domains_and_everything() {
        let n = NoProxy::parse("internal.example, .corp.example 10.0.0.7");
        assert!(n.bypasses("internal.example"));
        assert!(!n.bypasses("xinternal.example"));
        assert!(n.bypasses("a.corp.example"));
        assert!(n.bypasses("corp.example"));
        assert!(n.bypasses("10.0.0.7"));
        assert!(!n.bypasses("hooks.example"));
        assert!(NoProxy::parse("*").bypasses("anything"));
        assert!(!NoProxy::default().bypasses("anything"));
    }
}
