//! Keep-alive HTTP/1.1 connections to one plain-`http://` upstream, each driven by the task
//! that makes the call.
//!
//! A pooled client (reqwest, hyper-util) runs every connection as its own spawned task and
//! hands requests to it through a channel: each call is two cross-task wake-ups, and on a
//! multi-threaded runtime the connection task often sits on another worker, so each wake-up
//! wakes an idle core. At one request at a time that was ~50–70 µs of the ~120 µs verdict
//! spent calling a `return 200` upstream (docs/BENCHMARKS.md). Here the caller polls hyper's
//! connection future itself while its request is in flight, so a call is one task; an idle
//! connection is polled by nobody and waits in the pool.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::TcpStream;

/// How long opening a connection may take (as the TLS client's connect timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept per upstream.
const MAX_IDLE: usize = 64;

type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// One open connection: the request side and the future that does its I/O.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be opened (refused, unreachable, connect timeout).
    Connect(String),
    /// The connection broke while the request or its response was in flight.
    Broken(String),
}

/// A status and a whole body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: hyper::StatusCode,
    /// The response body.
    pub body: Bytes,
}

/// The connections to one upstream.
#[derive(Debug)]
pub struct Pool {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    authority: String,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

/// The error and its causes on one line (Display of hyper's and reqwest's errors hides the
/// interesting part).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl Pool {
    /// A pool for `host` (as in a URL: `[::1]` for IPv6) and `port`.
    pub fn new(host: &str, port: u16, default_port: bool) -> Self {
        Self {
            addr: format!("{host}:{port}"),
            authority: if default_port {
                host.to_owned()
            } else {
                format!("{host}:{port}")
            },
            idle: Mutex::new(Vec::new()),
        }
    }

    /// POSTs `body` as JSON to `path` (with its query). A pooled connection that turns out
    /// broken (the server closed it, or restarted) is retried once on a new connection, and
    /// the other pooled ones are dropped, since a restart broke them all: inference is a pure
    /// function of the body, so sending it twice is safe.
    pub async fn post(&self, path: &str, body: Bytes) -> Result<Response, CallError> {
        if let Some(conn) = self.take() {
            match self.send(conn, path, body.clone()).await {
                Ok(r) => return Ok(r),
                Err(_) => self.lock().clear(),
            }
        }
        let conn = self.connect().await?;
        self.send(conn, path, body).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        // A panic while holding the lock leaves only a Vec of connections: still usable.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection that is still open: one poll of its driver
    /// reads a close the server sent while it sat idle.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(mut conn) = idle.pop() {
            let mut cx = Context::from_waker(Waker::noop());
            if conn.driver.as_mut().poll(&mut cx).is_pending() && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, CallError> {
        let connect = async {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connecting to {}: {}", self.addr, chain(&e)))?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("connecting to {}: {}", self.addr, chain(&e)))
        };
        let (sender, driver) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                CallError::Connect(format!(
                    "connecting to {}: timed out after {CONNECT_TIMEOUT:?}",
                    self.addr
                ))
            })?
            .map_err(CallError::Connect)?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
        })
    }

    /// Sends one request on `conn`, driving the connection until the whole body is in; puts
    /// the connection back unless it closed.
    async fn send(&self, conn: Conn, path: &str, body: Bytes) -> Result<Response, CallError> {
        let Conn {
            mut sender,
            mut driver,
        } = conn;
        let request = hyper::Request::post(path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| CallError::Broken(format!("building the request: {e}")))?;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Response { status, body })
        };
        let (result, open) = drive(&mut driver, exchange).await;
        if open && result.is_ok() {
            let mut idle = self.lock();
            if idle.len() < MAX_IDLE {
                idle.push(Conn { sender, driver });
            }
        }
        result
    }
}

/// Polls `exchange` and the connection's driver together until `exchange` ends; says whether
/// the connection is still open.
async fn drive<T>(
    driver: &mut Driver,
    exchange: impl Future<Output = Result<T, hyper::Error>>,
) -> (Result<T, CallError>, bool) {
    let mut exchange = std::pin::pin!(exchange);
    let mut closed: Option<String> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
            let r = r.map_err(|e| CallError::Broken(chain(&e)));
            return Poll::Ready((r, closed.is_none()));
        }
        if closed.is_none() {
            if let Poll::Ready(r) = driver.as_mut().poll(cx) {
                closed = Some(match r {
                    Ok(()) => "the server closed the connection".to_owned(),
                    Err(e) => chain(&e),
                });
                // The driver's end fails or completes the exchange: look at it once more.
                if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                    let r = r.map_err(|e| CallError::Broken(chain(&e)));
                    return Poll::Ready((r, false));
                }
                let why = closed.clone().unwrap_or_default();
                return Poll::Ready((Err(CallError::Broken(why)), false));
            }
        }
        Poll::Pending
    })
    .await
}
