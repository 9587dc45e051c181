//! A tower layer that admits HTTP requests under an [`AdaptiveLimiter`]:
//! each request takes a place, or is answered at once with a 503 problem
//! and `Retry-After: 1`; its answer is the sample. Requests are sorted
//! into classes first: exempt ones (probes, the metrics scrape) never
//! take a place, and each other class may fill only its share of the
//! limit, so the lowest class is refused first as the service fills.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::adaptive::AdaptiveLimiter;

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
/// problem and `Retry-After: 1`. A 503 or 504 from the service (or an
/// error) is a drop, a 4xx says nothing of capacity, any other answer is a
/// sample of its latency.
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
                match &answer {
                    // What the service could not serve in time, or said it
                    // had no room for, is overload.
                    Ok(response)
                        if matches!(
                            response.status(),
                            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                        ) =>
                    {
                        token.dropped();
                    }
                    // The caller's own mistakes say nothing of capacity.
                    Ok(response) if response.status().is_client_error() => token.ignore(),
                    Ok(_) => token.success(),
                    Err(_) => token.dropped(),
                }
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
    response
}
