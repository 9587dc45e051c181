//! Refusals by the rate limiters, and limiters that failed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use seawall_ratelimit::Decision;
use std::time::Duration;

use super::Problem;

/// A 429 problem for `who` with `Retry-After` and the rate-limit headers.
pub(crate) fn too_many(decision: &Decision, who: &str) -> Response {
    let retry =
        seawall_ratelimit::ceil_seconds(decision.retry_after.unwrap_or(Duration::from_secs(1)))
            .max(1);
    let detail = if decision.blocked_for.is_some() {
        format!("{who} is blocked for exceeding its rate limit; retry in {retry} s")
    } else {
        format!("{who} has used up its rate limit; retry in {retry} s")
    };
    let mut response = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail)
        .with_retry_after(u32::try_from(retry).unwrap_or(u32::MAX))
        .into_response();
    seawall_ratelimit::set_headers(response.headers_mut(), decision);
    response
}

/// The answer to a request whose client address the service cannot know
/// (no peer address: the router served without one), when rate limiting is
/// on: a 500, as the rate limiter's own layer answers, never a request let
/// through unlimited. The service's own server always supplies the address
/// (`App::serve`); an embedder serves the router with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub(crate) fn unknown_client() -> Response {
    tracing::error!(
        "a request came with no peer address, so its rate limits cannot be kept; \
         serve the router with its peers' addresses"
    );
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the service cannot tell this request's client address, so it cannot keep its rate limits",
    )
    .into_response()
}

/// A limiter a route asked failed (the admin routes: the gate lets a
/// request through instead): 503, `Retry-After: 1`.
impl From<seawall_ratelimit::Error> for Problem {
    fn from(error: seawall_ratelimit::Error) -> Self {
        tracing::warn!(%error, "a rate limiter failed");
        Self::unavailable("the rate-limit store is not answering; retry shortly")
            .with_retry_after(1)
    }
}

/// A query of the rate-limit admin routes (tiers, tenants) failed: 500.
#[allow(clippy::needless_pass_by_value)] // the shape `map_err` takes
pub(crate) fn admin_query_failed(error: sqlx::Error) -> Problem {
    tracing::error!(%error, "a rate-limit admin query failed");
    Problem::internal()
}
