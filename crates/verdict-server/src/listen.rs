//! The HTTP listener: verdict's own accept loop over hyper, so that no client can hold the
//! server.
//!
//! * A connection must send a request's headers within [`HttpLimits::header_read`]; the
//!   same bound applies while a keep-alive connection sits idle between requests (hyper
//!   starts the header timer as soon as a connection waits for its next request).
//! * A request's body must arrive whole within [`HttpLimits::body_read`] (408 otherwise),
//!   and is bounded by the body limit (413): [`read_body`] buffers every body up front.
//! * At most [`HttpLimits::max_connections`] connections are served at once; one more gets
//!   a JSON 503 and is closed, so the file descriptors left for the store, snapshots and
//!   model servers are never taken by idle sockets.
//! * On shutdown the listener stops accepting, lets requests in flight finish and closes
//!   idle connections; whatever is still open after [`HttpLimits::shutdown_grace`] is cut.
//!
//! HTTP/1.1 only: TLS and HTTP/2 belong to the proxy in front.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use verdict_app::health::Health;

use crate::error::ApiError;

/// The component the listener reports as (down while `accept` fails, e.g. EMFILE).
pub const LISTENER: &str = "listener";

/// Bounds on what one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a request's headers, and longest idle time of a keep-alive
    /// connection between requests.
    pub header_read: Duration,
    /// Longest time to receive a whole request body.
    pub body_read: Duration,
    /// Most connections served at once; more are refused with 503.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight before closing their connections.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` flips, then drains (see the
/// module doc). Returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    health.register(LISTENER);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true);
    let permits = std::sync::Arc::new(Semaphore::new(limits.max_connections));
    // Refusals answer politely while few are in flight; beyond that a flood is closed at
    // once, so refusing can never take the descriptors it protects.
    let refusals = std::sync::Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let mut last_failure: Option<tokio::time::Instant> = None;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut accept_failures = 0u32;
    loop {
        let accepted = tokio::select! {
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            // One client gave up during the handshake: nothing wrong with the listener.
            Err(e) if per_connection(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE: nothing to accept with until a descriptor frees up.
                accept_failures += 1;
                last_failure = Some(tokio::time::Instant::now());
                health.down(LISTENER, format!("accepting connections: {e}"));
                let pause = Duration::from_millis(10 << accept_failures.min(6));
                tokio::select! {
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        accept_failures = 0;
        // Up again once accepting has worked for a while, so the outage stays visible.
        if last_failure.is_some_and(|t| t.elapsed() >= verdict_app::health::SETTLE) {
            last_failure = None;
            health.up(LISTENER);
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Ok(slot) = refusals.clone().try_acquire_owned() {
                connections.spawn(async move {
                    refuse(stream, peer, limits.max_connections).await;
                    drop(slot);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            // A client that vanishes or times out ends only its own connection.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                open = limits.max_connections - permits.available_permits(),
                grace_s = limits.shutdown_grace.as_secs_f64(),
                "shutdown deadline reached: closing connections still open"
            );
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Refusals answered at once; more connections beyond the limit are closed unanswered.
const REFUSALS_IN_FLIGHT: usize = 64;

/// Accept errors that concern one connection, not the listener.
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

/// Answers a connection beyond the limit with a JSON 503 and closes it, within a second
/// whatever the client does.
async fn refuse(mut stream: TcpStream, peer: SocketAddr, limit: usize) {
    tracing::warn!(%peer, limit, "connection limit reached: refusing a connection");
    let body = format!(
        r#"{{"error":{{"code":"too_many_connections","message":"the server is serving its limit of {limit} connections; retry shortly","details":{{"max_connections":{limit}}}}}}}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain what the client sent, so closing does not reset the answer away.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// Middleware: reads the whole request body within `body_read` and at most `limit` bytes
/// before any handler runs (408 / 413 with a JSON error naming the body), so a client
/// that trickles a body holds no handler and no lock. A declared length over the limit is
/// refused before reading, and with API keys an API body is read only for a request that
/// presents a valid key (strangers cannot make the server hold bodies).
pub async fn read_body(
    body_read: Duration,
    limit: usize,
    keys: std::sync::Arc<[crate::auth::ApiKey]>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the configured limit of {limit} bytes"),
        ));
    }
    let has_body = declared.is_some_and(|n| n > 0)
        || req
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    if has_body && req.uri().path().starts_with("/api/") {
        // Any valid key; the route checks its role after.
        crate::auth::check(&keys, req.headers(), crate::auth::Role::Read)?;
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(body_read, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            return Err(if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body exceeds the configured limit of {limit} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("reading the request body: {e}"),
                )
            });
        }
        Err(_) => {
            let mut err = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    body_read.as_secs_f64()
                ),
            );
            err.details = serde_json::json!({"field": "body"});
            return Err(err);
        }
    };
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}
