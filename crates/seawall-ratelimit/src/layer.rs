//! A tower layer that rate-limits HTTP requests: a key from each request,
//! a check, and a 429 problem (RFC 9457) with `Retry-After` when rejected;
//! `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-
//! headers) on every response the limiter decided.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::decision::Decision;
use crate::error::{Error, Result};
use crate::limiter::RateLimiter;

/// `RateLimit-Policy`: the quota policies that apply.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: where the request stands in each policy.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Takes the key a request is limited by; `Ok(None)` leaves the request
/// unlimited by this layer (no API key header, say), and an error refuses
/// it (a client address that cannot be known, say).
pub trait KeyExtractor: Clone + Send + Sync + 'static {
    /// The key of `request`.
    fn extract(&self, request: &http::request::Parts) -> Result<Option<String>>;
}

/// A closure never refuses a request: `None` leaves it unlimited.
impl<F> KeyExtractor for F
where
    F: Fn(&http::request::Parts) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn extract(&self, request: &http::request::Parts) -> Result<Option<String>> {
        Ok(self(request))
    }
}

/// The value of a request header (an API key, a user id): requests without
/// it are not limited by this layer.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// The value of header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl KeyExtractor for HeaderKey {
    fn extract(&self, request: &http::request::Parts) -> Result<Option<String>> {
        let value = request
            .headers
            .get(&self.name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim);
        Ok(value.filter(|value| !value.is_empty()).map(str::to_owned))
    }
}

/// The matched route template (`/api/items/{id}`), so each route has its
/// own limit; requests no route matched are not limited by this layer.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteKey;

#[cfg(feature = "axum")]
impl KeyExtractor for RouteKey {
    fn extract(&self, request: &http::request::Parts) -> Result<Option<String>> {
        Ok(request
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|path| path.as_str().to_owned()))
    }
}

/// Rate-limits requests by the key `K` takes from them.
///
/// A request the key extractor refuses ([`ClientIp`](crate::ClientIp)
/// without a peer address) is answered with 500 and never reaches the
/// service: a layer that cannot tell clients apart does not let everyone
/// through unlimited.
///
/// A leaky queue admits a request with a [`wait`](Decision::wait): the layer
/// holds the request that long before passing it on, as long as the queue
/// asks (at most its capacity's worth of intervals) unless
/// [`max_wait`](Self::max_wait) sets a shorter bound.
///
/// ```
/// use std::time::Duration;
/// use seawall_ratelimit::{ClientIp, Limit, Limiter, RateLimitLayer};
///
/// # fn main() -> Result<(), seawall_ratelimit::Error> {
/// let limiter = Limiter::builder("ddos")
///     .limit(Limit::gcra(1000, Duration::from_secs(1), 1000)?)
///     .build()?;
/// let trusted = ["10.0.0.0/8".parse()?];
/// let layer = RateLimitLayer::new(limiter, ClientIp::trusting(trusted));
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<K> {
    limiter: Arc<dyn RateLimiter>,
    key: K,
    max_wait: Duration,
}

impl<K> std::fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl<K: KeyExtractor> RateLimitLayer<K> {
    /// Checks every request against `limiter` by the key `key` takes, at a
    /// cost of one.
    pub fn new(limiter: impl RateLimiter + 'static, key: K) -> Self {
        Self::shared(Arc::new(limiter), key)
    }

    /// Same, with a limiter already shared.
    pub fn shared(limiter: Arc<dyn RateLimiter>, key: K) -> Self {
        Self {
            limiter,
            key,
            max_wait: Duration::MAX,
        }
    }

    /// Holds a request a leaky queue delays for at most `max_wait`
    /// (`Duration::ZERO`: never); a request whose turn is further away is
    /// answered with 429 and a `Retry-After` of its turn. Such a request has
    /// taken its place in the queue all the same (a limiter cannot give a
    /// place back), so a queue that often holds requests past the bound
    /// serves fewer than its rate: size the queue to drain within the
    /// bound (capacity × period / rate ≤ `max_wait`) and keep this as the
    /// backstop.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

impl<S, K: Clone> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            max_wait: self.max_wait,
        }
    }
}

/// The service [`RateLimitLayer`] makes.
#[derive(Clone)]
pub struct RateLimit<S, K> {
    inner: S,
    limiter: Arc<dyn RateLimiter>,
    key: K,
    max_wait: Duration,
}

impl<S, K> std::fmt::Debug for RateLimit<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    K: KeyExtractor,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (limiter, max_wait) = (self.limiter.clone(), self.max_wait);
        let (parts, body) = request.into_parts();
        let key = self.key.extract(&parts);
        let request = Request::from_parts(parts, body);
        Box::pin(async move {
            let key = match key {
                Ok(Some(key)) => key,
                Ok(None) => return inner.call(request).await,
                Err(error) => return Ok(error_response(&error)),
            };
            let decision = match limiter.check(&key, 1).await {
                Ok(decision) => decision,
                Err(error) => return Ok(error_response(&error)),
            };
            if !decision.allowed {
                return Ok(rejection(&decision));
            }
            if decision.wait > max_wait {
                return Ok(queue_too_long(&decision));
            }
            if !decision.wait.is_zero() {
                tokio::time::sleep(decision.wait).await;
            }
            let mut response = inner.call(request).await?;
            set_headers(response.headers_mut(), &decision);
            Ok(response)
        })
    }
}

/// Whole seconds, rounded up: a client told to wait `n` seconds is never
/// sent back before it would be admitted.
pub fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Adds `decision` to the `RateLimit-Policy` and `RateLimit` headers, one
/// item per rule, named after the limiter (and the rule, for a quota of
/// several): `"api";q=100;w=60` and `"api";r=12;t=37`, or
/// `"tenant.minute";q=60;w=60, "tenant.hour";q=1000;w=3600`. Items already
/// there (from another limiter) are kept.
pub fn set_headers(headers: &mut http::HeaderMap, decision: &Decision) {
    let mut policy = String::new();
    let mut state = String::new();
    for rule in &decision.rules {
        if !policy.is_empty() {
            policy.push_str(", ");
            state.push_str(", ");
        }
        let name = if decision.rules.len() == 1 {
            decision.limiter.to_string()
        } else {
            format!("{}.{}", decision.limiter, rule.name)
        };
        let window = ceil_seconds(rule.limit.policy_window()).max(1);
        policy.push_str(&format!(
            "\"{name}\";q={};w={window}",
            rule.limit.capacity()
        ));
        let remaining = if decision.blocked_for.is_some() {
            0
        } else {
            rule.remaining
        };
        // A blocked key gets nothing back before its block ends, whatever
        // the rule would have reset to: `t` says so, as `Retry-After` does.
        let reset = rule
            .reset_after
            .max(decision.blocked_for.unwrap_or_default());
        state.push_str(&format!(
            "\"{name}\";r={remaining};t={}",
            ceil_seconds(reset)
        ));
    }
    append(headers, RATELIMIT_POLICY, policy);
    append(headers, RATELIMIT, state);
}

fn append(headers: &mut http::HeaderMap, name: HeaderName, items: String) {
    let value = match headers.get(&name).and_then(|value| value.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, {items}"),
        _ => items,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

fn rejection<B: From<String>>(decision: &Decision) -> Response<B> {
    let retry = ceil_seconds(decision.retry_after.unwrap_or(Duration::from_secs(1))).max(1);
    let detail = match decision.blocked_for {
        Some(_) => format!("this client is blocked; retry in {retry} s"),
        None => format!("the rate limit is exhausted; retry in {retry} s"),
    };
    let mut response = problem(StatusCode::TOO_MANY_REQUESTS, &detail);
    set_headers(response.headers_mut(), decision);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry));
    response
}

/// A 429 for a request a leaky queue admitted with a longer wait than the
/// layer holds requests: its turn is `Retry-After` away.
fn queue_too_long<B: From<String>>(decision: &Decision) -> Response<B> {
    let retry = ceil_seconds(decision.wait).max(1);
    let detail = format!("the queue is longer than this server waits; retry in {retry} s");
    let mut response = problem(StatusCode::TOO_MANY_REQUESTS, &detail);
    set_headers(response.headers_mut(), decision);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry));
    response
}

fn error_response<B: From<String>>(error: &Error) -> Response<B> {
    match error {
        Error::InvalidKey(reason) => problem(StatusCode::BAD_REQUEST, reason),
        Error::UnknownPeer => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server cannot tell this client's address",
        ),
        // The store cannot decide now but will shortly: a full memory store
        // frees keys as they go idle, a broken Redis is probed again.
        Error::Redis(_) | Error::Unavailable | Error::StoreFull { .. } => {
            let mut response = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the rate limiter cannot decide right now; retry shortly",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        _ => problem(StatusCode::INTERNAL_SERVER_ERROR, "the rate limiter failed"),
    }
}

fn problem<B: From<String>>(status: StatusCode, detail: &str) -> Response<B> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = Response::new(B::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_never_early() {
        assert_eq!(ceil_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ceil_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ceil_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_seconds(Duration::ZERO), 0);
    }
}
