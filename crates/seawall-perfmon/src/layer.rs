//! A tower layer that records method, route template, status and latency of
//! every request into a [`Monitor`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Extensions, Method, Request, Response, Uri};
use tower_layer::Layer;
use tower_service::Service;

use crate::Monitor;

/// Finds the route template of a request (`/users/{id}`), or `None` when the
/// request matched no route (it is then labelled `unmatched`).
pub type RouteFn = Arc<dyn Fn(&Extensions, &Uri) -> Option<String> + Send + Sync>;

/// Label for requests without a route template.
const UNMATCHED: &str = "unmatched";

/// Records every request passing through it. Latency runs from the call to the
/// response head; requests whose future is dropped (client gone) are not recorded,
/// and inner-service errors count as status 500.
///
/// With the `axum` feature the route is axum's `MatchedPath`; add the layer with
/// `Router::layer` so routing has run. Without it, give a [`RouteFn`]; raw paths
/// are never used as labels.
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::{Router, routing::get};
/// use seawall_perfmon::{Monitor, PerfmonLayer};
///
/// let monitor = Monitor::new();
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "hello" }))
///     .layer(PerfmonLayer::new(monitor.clone()));
/// # }
/// ```
#[derive(Clone)]
pub struct PerfmonLayer {
    monitor: Monitor,
    /// `None`: axum's `MatchedPath`, kept without copying it.
    route: Option<RouteFn>,
}

impl fmt::Debug for PerfmonLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerfmonLayer")
            .field("monitor", &self.monitor)
            .finish_non_exhaustive()
    }
}

impl PerfmonLayer {
    /// A layer recording into `monitor`, with routes from axum's `MatchedPath`
    /// (feature `axum`) or labelled `unmatched` otherwise.
    pub fn new(monitor: Monitor) -> Self {
        Self {
            monitor,
            route: None,
        }
    }

    /// Uses `route` to find each request's route template.
    pub fn route_fn(
        mut self,
        route: impl Fn(&Extensions, &Uri) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.route = Some(Arc::new(route));
        self
    }
}

/// A request's route template, as found when the request arrived.
enum Route {
    /// axum's `MatchedPath` (a shared string, so cloning it copies nothing).
    #[cfg(feature = "axum")]
    Matched(axum::extract::MatchedPath),
    /// From a [`RouteFn`].
    Found(String),
    /// No route took the request.
    Unmatched,
}

impl Route {
    fn find(route_fn: Option<&RouteFn>, extensions: &Extensions, uri: &Uri) -> Self {
        match route_fn {
            Some(route_fn) => route_fn(extensions, uri).map_or(Self::Unmatched, Self::Found),
            #[cfg(feature = "axum")]
            None => extensions
                .get::<axum::extract::MatchedPath>()
                .map_or(Self::Unmatched, |path| Self::Matched(path.clone())),
            #[cfg(not(feature = "axum"))]
            None => Self::Unmatched,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            #[cfg(feature = "axum")]
            Self::Matched(path) => path.as_str(),
            Self::Found(route) => route,
            Self::Unmatched => UNMATCHED,
        }
    }
}

impl<S> Layer<S> for PerfmonLayer {
    type Service = PerfmonService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PerfmonService {
            inner,
            monitor: self.monitor.clone(),
            route: self.route.clone(),
        }
    }
}

/// The service made by [`PerfmonLayer`].
#[derive(Clone)]
pub struct PerfmonService<S> {
    inner: S,
    monitor: Monitor,
    route: Option<RouteFn>,
}

impl<S: fmt::Debug> fmt::Debug for PerfmonService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerfmonService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PerfmonService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = PerfmonFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let method = request.method().clone();
        let route = Route::find(self.route.as_ref(), request.extensions(), request.uri());
        PerfmonFuture {
            inner: self.inner.call(request),
            record: Some(Pending {
                monitor: self.monitor.clone(),
                start,
                method,
                route,
            }),
        }
    }
}

struct Pending {
    monitor: Monitor,
    start: Instant,
    method: Method,
    route: Route,
}

impl Pending {
    fn finish(self, status: u16) {
        let end = Instant::now();
        self.monitor.record_request_at(
            self.method.as_str(),
            self.route.as_str(),
            status,
            end.saturating_duration_since(self.start),
            end,
        );
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`PerfmonService`].
    pub struct PerfmonFuture<F> {
        #[pin]
        inner: F,
        record: Option<Pending>,
    }
}

impl<F, ResBody, E> Future for PerfmonFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(pending) = this.record.take() {
            let status = match &result {
                Ok(response) => response.status().as_u16(),
                Err(_) => 500,
            };
            pending.finish(status);
        }
        Poll::Ready(result)
    }
}
