//! The API's listener: HTTP/1.1 connections under a cap, each with a deadline for its request
//! heads, and the refusals hyper makes itself (a malformed head, too many headers, a URI too
//! long) answered as `{code, detail}` like every other error.
//!
//! Why not `axum::serve`: it has no header deadline and no connection cap, so 500 clients
//! sending half a request head held 500 connections for as long as they liked. HTTP/2 is not
//! served: hyper-util's protocol detection reads the first bytes without any deadline, and
//! chime's callers (services publishing events, the CLI) speak HTTP/1.1.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::error::{ApiError, Code};

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown`, then lets open requests finish (idle
/// connections close at once, a slow one at its deadline) before returning.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Past the cap: say so in one write and close, rather than leave the client in
            // the kernel's backlog. A client not reading it loses only this answer.
            let _ = stream.try_write(&busy());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let closing = closing.clone();
        connections.spawn(async move {
            let _permit = permit;
            let io = TokioIo::new(RefusalsAsJson::new(stream));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of `accept` that concern one connection are skipped; others (such as running out
/// of file descriptors) are waited out, not spun on.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return;
    }
    tracing::error!(error = %e, "could not accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The whole answer to a connection past the cap.
fn busy() -> Vec<u8> {
    let error = ApiError::new(
        Code::Unavailable,
        "the server has too many open connections; retry shortly",
    );
    response(
        "503 Service Unavailable",
        "retry-after: 1\r\n",
        &error.body_text(),
    )
}

fn response(status_line: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\nconnection: close\r\n\
         {extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The error that stands for an answer hyper sends on its own, by status.
fn refusal(status: &[u8]) -> Option<ApiError> {
    let (code, detail) = match status {
        b"400" => (
            Code::MalformedRequest,
            "the request is not valid HTTP/1.1: its request line or a header holds bytes HTTP does not allow (such as NUL, DEL or a non-ASCII byte in the path)",
        ),
        b"431" => (
            Code::HeadersTooLarge,
            "the request has more than 100 headers, or a head larger than the server accepts",
        ),
        b"414" => (
            Code::UriTooLong,
            "the request URI is longer than the server accepts",
        ),
        _ => return None,
    };
    Some(ApiError::new(code, detail))
}

/// If `head` is one of hyper's own bodiless refusals, the same response with a JSON body.
/// Handler responses never match: every API answer with these statuses has a JSON body, so
/// it has a content type.
pub fn rewrite_refusal(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let error = refusal(status)?;
    if !head.ends_with(b"\r\n\r\n")
        || contains(head, b"content-type")
        || !contains(head, b"\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let status_line = std::str::from_utf8(&head[b"HTTP/1.1 ".len()..line_end]).ok()?;
    Some(response(status_line, "", &error.body_text()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A connection whose writes pass through untouched, except hyper's own refusals, which are
/// replaced by [`rewrite_refusal`]. A refusal is always the connection's last response.
struct RefusalsAsJson {
    inner: TcpStream,
    /// A replacement being written, how much of it is written, and the length of the write
    /// it stands for (reported once the replacement is out).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl RefusalsAsJson {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }

    fn write_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, stands_for)) = &mut self.replacing {
            if *written == bytes.len() {
                let n = *stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(n));
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(0))
    }

    fn start_replacing(&mut self, buf: &[u8]) -> bool {
        if self.replacing.is_none()
            && buf.starts_with(b"HTTP/1.1 4")
            && let Some(json) = rewrite_refusal(buf)
        {
            self.replacing = Some((json, 0, buf.len()));
            return true;
        }
        false
    }
}

impl AsyncRead for RefusalsAsJson {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RefusalsAsJson {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_some() || self.start_replacing(buf) {
            return self.write_replacement(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next())
            && (self.replacing.is_some() || self.start_replacing(only))
        {
            return self.write_replacement(cx);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_refusals_get_a_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 07:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_refusal(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "headers_too_large");
        assert!(
            rewrite_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some()
        );
        let busy = busy();
        let busy = String::from_utf8_lossy(&busy);
        let (_, body) = busy.split_once("\r\n\r\n").unwrap();
        assert!(busy.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn handler_responses_pass_untouched() {
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 40\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        ] {
            assert!(rewrite_refusal(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }
}
