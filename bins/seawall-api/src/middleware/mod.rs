//! The middleware stack every route sits behind, outermost first:
//!
//! 1. `authorization` and `cookie` marked sensitive (never logged);
//! 2. `x-request-id` taken from the client when well-formed (1 to 128 of
//!    `A-Z a-z 0-9 . _ : -`), generated (UUID v4) otherwise, and returned;
//! 3. one tracing span per request: method, route template, request id, then
//!    status and latency; problems built inside carry the request id;
//! 4. the perfmon layer (latency histograms, slow-API log);
//! 5. CORS, when origins are configured;
//! 6. compression per `Accept-Encoding`, when on;
//! 7. request limits: target length (414), header count and size (431), two
//!    `Authorization` headers (400);
//! 8. the DDoS rate limiter by client IP (429), unless rate limiting is off;
//!    the probes and `/metrics` are exempt;
//! 9. load shedding: at most `server.max_in_flight` requests at once, the
//!    rest wait up to `server.shed_wait` and then get 503 with `Retry-After`;
//!    `/livez` and `/metrics` are exempt;
//! 10. the request timeout (503 problem), then a panic in a handler as 500.
//!
//! The rest comes from tower-http, but for two `axum::middleware::from_fn`
//! functions: the request id (2, with the scope problems read it from), and
//! the guard (7 to 10, one function, since each `from_fn` layer clones the
//! stack inside it and boxes its future on every request).

mod limits;
mod shed;
mod trace;

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use seawall_perfmon::PerfmonLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::trace::TraceLayer;

pub(crate) use limits::Limits;
pub(crate) use shed::Shedder;

use crate::config::ServerConfig;
use crate::problem::Problem;
use crate::ratelimit::{self, RateLimits};

/// The request-id header.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the stack needs beyond the configuration.
pub(crate) struct Stack {
    /// Perfmon's layer, when on.
    pub(crate) perfmon: Option<PerfmonLayer>,
    /// The load shedder, shared with the metrics.
    pub(crate) shedder: Shedder,
    /// The rate limiters, unless rate limiting is off.
    pub(crate) ratelimits: Option<RateLimits>,
}

/// Puts `router` behind the whole stack. Layers are added innermost first;
/// each `Router::layer` wraps every route and the fallback.
pub(crate) fn apply(router: Router, config: &ServerConfig, stack: Stack) -> Router {
    let guard = Guard {
        limits: Limits::from_config(config),
        ratelimits: stack.ratelimits,
        shedder: stack.shedder,
        timeout: config.request_timeout,
    };
    let mut router = router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(guard, guard_request));
    if config.compression {
        router = router.layer(CompressionLayer::new().gzip(true).br(true));
    }
    if !config.cors_origins.is_empty() {
        router = router.layer(cors(&config.cors_origins));
    }
    if let Some(perfmon) = stack.perfmon {
        router = router.layer(perfmon);
    }
    router
        .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(trace::RequestSpan)
                .on_request(())
                .on_response(trace::RecordResponse)
                .on_failure(()),
        )
        .layer(middleware::from_fn(trace::request_id_scope))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ]))
}

/// What the guard checks, in one layer (each `from_fn` layer clones the
/// whole stack inside it and boxes its future on every request, so the
/// checks share one): the request limits, the DDoS rate limiter, admission
/// among the requests in flight, and the request timeout.
#[derive(Clone)]
struct Guard {
    limits: Limits,
    ratelimits: Option<RateLimits>,
    shedder: Shedder,
    timeout: Duration,
}

async fn guard_request(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if let Some(problem) = limits::violation(&guard.limits, &request) {
        return problem.into_response();
    }
    let (request, ddos) = match &guard.ratelimits {
        Some(ratelimits) => match ratelimit::ddos(ratelimits, request).await {
            (request, Ok(decision)) => (request, decision),
            (_, Err(rejection)) => return rejection,
        },
        None => (request, None),
    };
    let mut response = match guard.shedder.admit(request.uri().path()).await {
        Ok(admission) => {
            let response = deadline(guard.timeout, next.run(request)).await;
            drop(admission);
            response
        }
        Err(shed) => shed,
    };
    if let Some(decision) = ddos {
        seawall_ratelimit::set_headers(response.headers_mut(), &decision);
    }
    response
}

fn cors(origins: &[String]) -> CorsLayer {
    // Validation has checked that every origin is a header value.
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, X_REQUEST_ID])
        .expose_headers([X_REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// Whether a client's `x-request-id` is short and plain enough to keep and
/// log as it is.
pub(super) fn is_plain_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Answers 503 with a problem when `handling` takes longer than `limit`
/// (`server.request_timeout`); the handler's future is dropped.
async fn deadline(limit: Duration, handling: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limit, handling).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout = %humantime::format_duration(limit), "request timed out");
            Problem::unavailable(format!(
                "the request took longer than {} and was stopped",
                humantime::format_duration(limit)
            ))
            .into_response()
        }
    }
}

/// A handler that panicked answers 500 like any other failure; the panic is
/// logged, and the service keeps serving.
#[allow(clippy::needless_pass_by_value)] // the signature CatchPanicLayer calls
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    Problem::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_only() {
        for id in ["a", "0b6c4bd6-3f4e-4d8e-9d71-2f0c8e1d5a47", "trace:1.2_3"] {
            assert!(is_plain_id(id.as_bytes()), "{id}");
        }
        let long = "x".repeat(129);
        for id in ["", "a b", "a\"b", "naïve", long.as_str(), "a\nb"] {
            assert!(!is_plain_id(id.as_bytes()), "{id:?}");
        }
    }
}
