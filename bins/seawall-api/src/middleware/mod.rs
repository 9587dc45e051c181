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
//! Everything comes from tower-http except the small pieces it has no layer
//! for (limits, shedding with a bounded wait, the timeout's problem body),
//! which are `axum::middleware::from_fn` functions here.

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
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
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
    let mut router = router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(
            config.request_timeout,
            deadline,
        ))
        .layer(middleware::from_fn_with_state(stack.shedder, shed::admit));
    if let Some(ratelimits) = stack.ratelimits {
        router = router.layer(middleware::from_fn_with_state(ratelimits, ratelimit::ddos));
    }
    router = router.layer(middleware::from_fn_with_state(
        Limits::from_config(config),
        limits::check,
    ));
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
        .layer(middleware::from_fn(trace::scope_request_id))
        .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(trace::RequestSpan)
                .on_request(())
                .on_response(trace::RecordResponse)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(drop_malformed_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ]))
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

/// A client's `x-request-id` is kept only when it is short and plain, so it
/// can go into logs and headers as it is; otherwise one is generated.
async fn drop_malformed_request_id(mut request: Request, next: Next) -> Response {
    let mut values = request.headers().get_all(&X_REQUEST_ID).iter();
    let acceptable = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => is_plain_id(value.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !acceptable {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    next.run(request).await
}

fn is_plain_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Answers 503 with a problem when the rest of the stack takes longer than
/// `server.request_timeout`; the handler's future is dropped.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
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
