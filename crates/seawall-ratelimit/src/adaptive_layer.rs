//! A tower layer that admits HTTP requests under an [`AdaptiveLimiter`]:
//! each request takes a place, or is answered at once with a 503 problem
//! and `Retry-After: 1`; its answer is the sample. Requests are sorted
//! into classes first: exempt ones (probes, the metrics scrape) never
//! take a place, and each other class may fill only its share of the
//! limit, so the lowest class is refused first as the service fills.
//!
//! What an answer tells the limit is decided in one place,
//! [`outcome_of`]: only the service's own refusals for want of room
//! (marked [`Shed`]), timeouts (504, or an answer that never came) and
//! latency move it down. A 503 from a dependency that failed fast (a
//! dead Redis) is no overload of this service: counted as one, a tenth
//! off the limit per window, it would take the limit to its floor within
//! seconds and leave the requests that do not need the dependency a few
//! places.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::adaptive::{AdaptiveLimiter, Outcome};

/// A response extension that marks an answer as the service's own
/// refusal for want of capacity: a request shed by admission, one stopped
/// by the request timeout, one that waited too long for a pooled
/// connection. [`outcome_of`] counts it as overload whatever its status;
/// an unmarked 503 (a dependency that is down) is not.
///
/// ```
/// use http::{Response, StatusCode};
/// use seawall_ratelimit::{Outcome, Shed, outcome_of};
///
/// let mut shed = Response::new(());
/// *shed.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
/// shed.extensions_mut().insert(Shed);
/// assert_eq!(outcome_of(shed.status(), shed.extensions()), Outcome::Overloaded);
///
/// let mut down = Response::new(());
/// *down.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
/// assert_eq!(outcome_of(down.status(), down.extensions()), Outcome::Ignored);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shed;

/// What an HTTP answer with `status` and `extensions` tells an adaptive
/// limit: [`Outcome::Overloaded`] for the service's own refusals (marked
/// [`Shed`]) and for 504 (a timeout); [`Outcome::Ignored`] for the
/// caller's mistakes (4xx) and for the other failures (5xx: a dependency
/// that is down, a defect), which say nothing of how much this service
/// can have in flight; [`Outcome::Served`], a latency sample, for the
/// rest. A request that got no answer within its timeout is
/// [`Outcome::Overloaded`] too; it has no status to ask with.
pub fn outcome_of(status: StatusCode, extensions: &http::Extensions) -> Outcome {
    if extensions.get::<Shed>().is_some() || status == StatusCode::GATEWAY_TIMEOUT {
        Outcome::Overloaded
    } else if status.is_client_error() || status.is_server_error() {
        Outcome::Ignored
    } else {
        Outcome::Served
    }
}

/// How much of the limit a request may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Never limited, never counted (a liveness probe, the metrics scrape).
    Exempt,
    /// Admitted while fewer than this share (0 to 1) of the limit are in
    /// flight.
    Share(f64),
}

/// Sorts a request into its [`Admission`].
type Classifier = dyn Fn(&http::request::Parts) -> Admission + Send + Sync;

/// Adds adaptive admission to a service: each request takes a place in an
/// [`AdaptiveLimiter`] by its class, or is answered at once with a 503
/// problem and `Retry-After: 1`. Each answer is reported as
/// [`outcome_of`] reads it (an error from the service is a drop): an inner
/// layer marks its own refusals [`Shed`].
///
/// ```
/// use seawall_ratelimit::{AdaptiveLayer, AdaptiveLimiter, Admission, Gradient};
///
/// let limiter = AdaptiveLimiter::builder(Gradient::new()).bounds(4, 512).build()?;
/// let layer = AdaptiveLayer::new(limiter).classify(|request| match request.uri.path() {
///     "/livez" | "/metrics" => Admission::Exempt,
///     "/api/reports" => Admission::Share(0.5),
///     _ => Admission::Share(1.0),
/// });
/// # let _ = layer;
/// # Ok::<(), seawall_ratelimit::Error>(())
/// ```
#[derive(Clone)]
pub struct AdaptiveLayer {
    limiter: AdaptiveLimiter,
    classify: Arc<Classifier>,
}

impl std::fmt::Debug for AdaptiveLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLayer").finish_non_exhaustive()
    }
}

impl AdaptiveLayer {
    /// Every request uses the whole limit.
    pub fn new(limiter: AdaptiveLimiter) -> Self {
        Self {
            limiter,
            classify: Arc::new(|_| Admission::Share(1.0)),
        }
    }

    /// Sorts each request into its admission class.
    #[must_use]
    pub fn classify(
        mut self,
        classify: impl Fn(&http::request::Parts) -> Admission + Send + Sync + 'static,
    ) -> Self {
        self.classify = Arc::new(classify);
        self
    }
}

impl<S> Layer<S> for AdaptiveLayer {
    type Service = Adaptive<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Adaptive {
            inner,
            limiter: self.limiter.clone(),
            classify: Arc::clone(&self.classify),
        }
    }
}

/// The service [`AdaptiveLayer`] makes.
#[derive(Clone)]
pub struct Adaptive<S> {
    inner: S,
    limiter: AdaptiveLimiter,
    classify: Arc<Classifier>,
}

impl<S> std::fmt::Debug for Adaptive<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adaptive").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Adaptive<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
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
        let (parts, body) = request.into_parts();
        let admission = (self.classify)(&parts);
        let request = Request::from_parts(parts, body);
        let token = match admission {
            Admission::Exempt => None,
            Admission::Share(share) => match self.limiter.try_acquire_share(share) {
                Some(token) => Some(token),
                None => return Box::pin(async { Ok(overloaded()) }),
            },
        };
        Box::pin(async move {
            let answer = inner.call(request).await;
            if let Some(token) = token {
                token.report(match &answer {
                    Ok(response) => outcome_of(response.status(), response.extensions()),
                    Err(_) => Outcome::Overloaded,
                });
            }
            answer
        })
    }
}

/// The answer to a request the limit has no room for: a 503 problem that
/// says to come back in a second.
fn overloaded<B: From<String>>() -> Response<B> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the service is at its limit of requests in flight; retry shortly",
    });
    let mut response = Response::new(B::from(body.to_string()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response.extensions_mut().insert(Shed);
    response
}
