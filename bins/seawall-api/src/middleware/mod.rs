//! The middleware stack every route sits behind, outermost first:
//!
//! 1. `authorization` and `cookie` marked sensitive (never logged);
//! 2. `x-request-id` taken from the client when well-formed (1 to 128 of
//!    `A-Z a-z 0-9 . _ : -`), generated (UUID v4) otherwise, and returned;
//! 3. one tracing span per request: method, route template, request id, then
//!    status and latency; problems built inside carry the request id;
//! 4. the perfmon layer (latency histograms, slow-API log);
//! 5. CORS, when origins are configured;
//! 6. a panic in a handler answered as 500;
//! 7. compression per `Accept-Encoding`, when on (see `compress.rs`);
//! 8. request limits: target length (414), header count and size (431), two
//!    `Authorization` headers (400);
//! 9. the DDoS rate limiter by client IP (429), unless rate limiting is off;
//!    the probes and `/metrics` are exempt;
//! 10. load shedding (see `shed.rs`): at most `server.max_in_flight`
//!     requests at once, the rest wait up to `server.shed_wait` and then get
//!     503 with `Retry-After`; or, with `server.admission = "adaptive"`, a
//!     limit found from latency, filled by priority class, the rest waiting
//!     the same way; the probes and `/metrics` are exempt;
//! 11. the request timeout (503 problem).
//!
//! The layers come from tower-http but for three of our own: the request id
//! (2, with the scope problems read it from), the guard (8 to 11, one
//! service that decides without a boxed future unless it has to wait for
//! Redis or for a place), and the entry to tower-http's compression (7). They
//! are composed with `tower::ServiceBuilder` and given to `Router::layer`
//! once: axum wraps each route in what it is given, boxes the result and
//! clones it for every request, so one composed layer is boxed and cloned
//! once where separate `Router::layer` calls would each add a box, a clone
//! and a boxed future.

mod compress;
mod limits;
mod shed;
mod trace;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use seawall_perfmon::PerfmonLayer;
use seawall_ratelimit::{Decision, IpNet};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};

pub(crate) use limits::Limits;
use shed::Admission;
pub(crate) use shed::{Shedder, Standing};

use crate::config::ServerConfig;
use crate::problem::Problem;
use crate::ratelimit::{self, Ddos, RateLimits};
use trace::X_REQUEST_ID;

/// What the stack needs beyond the configuration.
pub(crate) struct Stack {
    /// Perfmon's layer, when on.
    pub(crate) perfmon: Option<PerfmonLayer>,
    /// The load shedder, shared with the metrics.
    pub(crate) shedder: Shedder,
    /// The rate limiters, unless rate limiting is off.
    pub(crate) ratelimits: Option<RateLimits>,
    /// The proxies whose `traceparent` a request's span follows.
    pub(crate) trace_from: Vec<IpNet>,
}

/// Puts `router` behind the whole stack, as one layer around each route and
/// the fallback (see the module documentation for why one).
pub(crate) fn apply(router: Router, config: &ServerConfig, stack: Stack) -> Router {
    let guard = Guard(Arc::new(GuardConfig {
        limits: Limits::from_config(config),
        ratelimits: stack.ratelimits,
        shedder: stack.shedder,
        timeout: config.request_timeout,
    }));
    let cors = (!config.cors_origins.is_empty()).then(|| cors(&config.cors_origins));
    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ]))
        .layer(trace::RequestLayer {
            trusted: stack.trace_from.into(),
            exporting: seawall_app::telemetry::exporting(),
        })
        .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
        .option_layer(stack.perfmon)
        .option_layer(cors)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(compress::CompressLayer {
            enabled: config.compression,
        })
        .layer(guard);
    router.layer(layers)
}

/// What the guard checks, in one service: the request limits, the DDoS rate
/// limiter, admission among the requests in flight, and the request timeout.
#[derive(Clone)]
struct Guard(Arc<GuardConfig>);

struct GuardConfig {
    limits: Limits,
    ratelimits: Option<RateLimits>,
    shedder: Shedder,
    timeout: Duration,
}

impl<S> Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            guard: self.clone(),
            inner,
        }
    }
}

/// A route behind the [`Guard`].
#[derive(Clone)]
struct Guarded<S> {
    guard: Guard,
    inner: S,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Decides at once when it can (the limits, a DDoS limiter in memory, a
    /// free place); only waiting for Redis or for a place takes a boxed
    /// future.
    fn call(&mut self, request: Request) -> Self::Future {
        let guard = Arc::clone(&self.guard.0);
        if let Some(problem) = limits::violation(&guard.limits, &request) {
            return GuardFuture::done(problem.into_response());
        }
        let ddos = match &guard.ratelimits {
            None => Ddos::Admit(None),
            Some(ratelimits) => ratelimit::ddos(ratelimits, &request),
        };
        let ddos = match ddos {
            Ddos::Admit(decision) => decision,
            Ddos::Reject(response) => return GuardFuture::done(response),
            remote @ Ddos::Remote(_) => {
                let class = guard.shedder.class_of(&request);
                return self.wait(guard, request, remote, Err(class));
            }
        };
        let class = guard.shedder.class_of(&request);
        match guard.shedder.try_admit(class) {
            Ok(admission) => GuardFuture::Admitted {
                handling: tokio::time::timeout(guard.timeout, self.inner.call(request)),
                admission,
                ddos,
                limit: guard.timeout,
            },
            Err(full) => self.wait(guard, request, Ddos::Admit(ddos), Ok(full)),
        }
    }
}

impl<S> Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// The rest of the guard, for a request that has to wait: for the DDoS
    /// limiter on Redis (`ddos` is [`Ddos::Remote`], and `place` the
    /// request's class, to admit it by afterwards) or for a place (`place`
    /// is the shedder's answer that it had none at once).
    fn wait(
        &mut self,
        guard: Arc<GuardConfig>,
        request: Request,
        ddos: Ddos,
        place: Result<shed::Full, shed::Class>,
    ) -> GuardFuture<S::Future> {
        // The service that was made ready answers; its clone waits for the
        // next request.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        GuardFuture::Waiting {
            future: Box::pin(async move {
                let ddos = match (&guard.ratelimits, ddos) {
                    (Some(ratelimits), Ddos::Remote(ip)) => {
                        ratelimit::ddos_remote(ratelimits, &ip).await
                    }
                    (_, ddos) => ddos,
                };
                let decision = match ddos {
                    Ddos::Admit(decision) => decision,
                    Ddos::Reject(response) => return Ok(response),
                    Ddos::Remote(_) => None,
                };
                let admitted = match place {
                    Ok(full) => guard.shedder.wait_for(full).await.map(Some),
                    Err(class) => guard.shedder.admit(class).await,
                };
                let admission = match admitted {
                    Ok(admission) => admission,
                    Err(mut shed) => {
                        if let Some(decision) = &decision {
                            seawall_ratelimit::set_headers(shed.headers_mut(), decision);
                        }
                        return Ok(shed);
                    }
                };
                // Admitted: the rest is what an admission at once does.
                GuardFuture::Admitted {
                    handling: tokio::time::timeout(guard.timeout, inner.call(request)),
                    admission,
                    ddos: decision,
                    limit: guard.timeout,
                }
                .await
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Guarded`].
    #[project = GuardProj]
    pub(crate) enum GuardFuture<F> {
        /// Answered by the guard itself.
        Done { response: Option<Response> },
        /// Admitted at once: the handler, within the request timeout.
        Admitted {
            #[pin]
            handling: tokio::time::Timeout<F>,
            admission: Option<Admission>,
            ddos: Option<Decision>,
            limit: Duration,
        },
        /// Waiting for Redis or for a place.
        Waiting { future: Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>> },
    }
}

impl<F> GuardFuture<F> {
    fn done(response: Response) -> Self {
        Self::Done {
            response: Some(response),
        }
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // Polled again after completing: a contract breach, answered 500.
            GuardProj::Done { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Problem::internal().into_response()))),
            GuardProj::Admitted {
                handling,
                admission,
                ddos,
                limit,
            } => {
                let mut response = match ready!(handling.poll(cx)) {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    // Marked as the service's own refusal: an overload.
                    Err(_) => timed_out(*limit),
                };
                if let Some(admission) = admission.take() {
                    admission.finish(&response);
                }
                if let Some(decision) = ddos.take() {
                    seawall_ratelimit::set_headers(response.headers_mut(), &decision);
                }
                Poll::Ready(Ok(response))
            }
            GuardProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
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

/// The 503 problem for a request that took longer than `limit`
/// (`server.request_timeout`); its handler's future has been dropped.
fn timed_out(limit: Duration) -> Response {
    tracing::warn!(timeout = %humantime::format_duration(limit), "request timed out");
    Problem::unavailable(format!(
        "the request took longer than {} and was stopped",
        humantime::format_duration(limit)
    ))
    .shed()
    .into_response()
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
