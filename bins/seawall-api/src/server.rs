//! The HTTP server: hyper's connection builder (HTTP/1.1 and HTTP/2) on a
//! tokio listener, with the limits `axum::serve` cannot set, and graceful
//! shutdown with a drain deadline.
//!
//! - A client gets `server.header_read_timeout` to send a request's headers
//!   (HTTP/1.1) and to send its first bytes at all; a slower one is
//!   disconnected without an answer, so a client trickling a header a byte a
//!   second holds a connection for that long at most.
//! - hyper's own hard limits sit above the configured ones, which the
//!   middleware answers with problems: twice `server.max_headers` fields, and
//!   a request head of `64 KiB + 2 × server.max_header_bytes` (a request
//!   target of 64 KiB or more is hyper's 414 whatever the settings). A request
//!   past them, or one that is not HTTP, gets hyper's bare reply: a status
//!   line without a body, then the connection closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::Layer as _;

use crate::config::ServerConfig;

/// The bytes of request target hyper accepts at most (it answers 414 above).
const HYPER_MAX_URI: usize = 64 * 1024;

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every connection finished before the deadline.
    Fully,
    /// The deadline passed with connections still open; they were dropped.
    DeadlinePassed,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and lets open connections finish their requests until
/// `config.shutdown_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Drained> {
    let builder = Arc::new(builder(config));
    let first_bytes_timeout = config.header_read_timeout;
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) if is_per_connection(&error) => {
                    tracing::debug!(%error, "accepting a connection failed");
                    continue;
                }
                Err(error) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(%error, "accepting connections failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let service =
            TowerToHyperService::new(axum::Extension(ConnectInfo(peer)).layer(router.clone()));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            // hyper's protocol detection waits for the first bytes with no
            // time limit; bound it like the header read.
            let mut first = [0_u8; 1];
            match tokio::time::timeout(first_bytes_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: no new connections; draining requests in flight"
    );
    let drained = tokio::select! {
        () = graceful.shutdown() => Drained::Fully,
        () = tokio::time::sleep(config.shutdown_timeout) => Drained::DeadlinePassed,
    };
    if drained == Drained::DeadlinePassed {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight after {}; stopping without them",
            humantime::format_duration(config.shutdown_timeout)
        );
    }
    connections.abort_all();
    Ok(drained)
}

fn builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let head_bytes = HYPER_MAX_URI + 2 * config.max_header_bytes;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(2 * config.max_headers)
        .max_buf_size(head_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

/// Errors that concern one connection only (the client went away before it
/// was accepted), as opposed to the listener.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}
