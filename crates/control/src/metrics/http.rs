//! The smallest HTTP/1.1 server that Prometheus needs: `GET /metrics`, one
//! request per connection. Request heads are bounded ([`MAX_HEAD`]), each
//! connection has a deadline ([`CONNECTION_TIMEOUT`]), and at most
//! [`MAX_CONNECTIONS`] are served at once; others wait in the kernel's
//! backlog. The server loop is asked for a [`Snapshot`] through a small
//! queue that never blocks it: when the queue is full the scrape gets 503.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info};

use super::{Snapshot, render};

/// Longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a connection may take, from accept to the last byte of the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Scrapes waiting for the server loop at once.
const PENDING_SCRAPES: usize = 4;

/// A scrape waiting for the server loop's numbers.
pub type ScrapeRequest = oneshot::Sender<Snapshot>;

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (`head`: HEAD, no body wanted).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Not `METHOD TARGET HTTP/1.x`, or not UTF-8.
    Malformed,
    /// Longer than [`MAX_HEAD`] without its blank line.
    TooLarge,
}

/// Parse a request head: the bytes up to and including its blank line.
pub fn parse_request(head: &[u8]) -> Result<Request, BadRequest> {
    if head.len() > MAX_HEAD {
        return Err(BadRequest::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed)?;
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(BadRequest::Malformed);
    }
    let path = target.split('?').next().unwrap_or_default();
    Ok(match (method, path) {
        ("GET", "/metrics") => Request::Metrics { head: false },
        ("HEAD", "/metrics") => Request::Metrics { head: true },
        (_, "/metrics") => Request::MethodNotAllowed,
        _ => Request::NotFound,
    })
}

/// Bind `addr` and serve scrapes; the server loop answers what arrives on
/// the returned queue.
pub async fn start(
    addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, mpsc::Receiver<ScrapeRequest>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    info!("metrics endpoint listening on http://{local}/metrics");
    let (tx, rx) = mpsc::channel(PENDING_SCRAPES);
    tokio::spawn(accept_loop(listener, tx));
    Ok((local, rx))
}

async fn accept_loop(listener: TcpListener, scrapes: mpsc::Sender<ScrapeRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // The server instance that reads the scrapes is gone (it restarted):
        // close the listener so that the next instance can bind it again.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = scrapes.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                debug!("metrics: accept: {e}");
                // EMFILE and the like: give the table a moment.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let served = tokio::time::timeout(CONNECTION_TIMEOUT, serve(stream, &scrapes)).await;
            match served {
                Ok(Err(e)) => debug!("metrics: {peer}: {e}"),
                Err(_) => debug!("metrics: {peer}: timed out"),
                Ok(Ok(())) => {}
            }
            drop(slot);
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    scrapes: &mpsc::Sender<ScrapeRequest>,
) -> std::io::Result<()> {
    let head = match read_head(&mut stream).await? {
        Some(h) => h,
        None => return Ok(()),
    };
    let (status, body) = match parse_request(&head) {
        Ok(Request::Metrics { head }) => match snapshot(scrapes).await {
            Some(s) => {
                let text = render(&s);
                ("200 OK", if head { String::new() } else { text })
            }
            None => ("503 Service Unavailable", "busy, try again\n".into()),
        },
        Ok(Request::NotFound) => ("404 Not Found", "see /metrics\n".into()),
        Ok(Request::MethodNotAllowed) => ("405 Method Not Allowed", "GET only\n".into()),
        Err(BadRequest::TooLarge) => ("431 Request Header Fields Too Large", String::new()),
        Err(BadRequest::Malformed) => ("400 Bad Request", String::new()),
    };
    let content_type = if status.starts_with("200") {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

/// The request head, up to its blank line; what comes past [`MAX_HEAD`]
/// is not read. `None` when the peer closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end + 4);
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            // parse_request answers TooLarge.
            return Ok(Some(head));
        }
    }
}

/// The next scrape waiting for numbers; never resolves without an endpoint.
pub async fn next_scrape(rx: &mut Option<mpsc::Receiver<ScrapeRequest>>) -> Option<ScrapeRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Ask the server loop for its numbers, without ever waiting on a full queue.
async fn snapshot(scrapes: &mpsc::Sender<ScrapeRequest>) -> Option<Snapshot> {
    let (tx, rx) = oneshot::channel();
    scrapes.try_send(tx).ok()?;
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let ok = |s: &str| parse_request(s.as_bytes());
        assert_eq!(
            ok("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Request::Metrics { head: false })
        );
        assert_eq!(
            ok("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Ok(Request::Metrics { head: false })
        );
        assert_eq!(
            ok("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Ok(Request::Metrics { head: true })
        );
        assert_eq!(ok("GET / HTTP/1.1\r\n\r\n"), Ok(Request::NotFound));
        assert_eq!(
            ok("POST /metrics HTTP/1.1\r\n\r\n"),
            Ok(Request::MethodNotAllowed)
        );
        for bad in [
            "",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 x\r\n\r\n",
        ] {
            assert_eq!(ok(bad), Err(BadRequest::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse_request(&[b'a'; MAX_HEAD + 1]),
            Err(BadRequest::TooLarge)
        );
        assert_eq!(
            parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(BadRequest::Malformed)
        );
    }
}
