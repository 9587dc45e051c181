//! The request span: method, route template and request id, set when the
//! request arrives. Every log line written while the request is handled
//! carries these fields (written only when a line is, see
//! [`seawall_app::logging`]); the closing line adds status and latency.
//!
//! The span is also the request's server span when the process exports
//! traces ([`seawall_app::telemetry::exporting`]): named `GET /api/content`
//! (method and route template), with the method, route and response status
//! as attributes, recorded only then. A `traceparent` (and `tracestate`)
//! from a trusted proxy (`ratelimit.trusted_proxies`, as for client
//! addresses) makes it a child of the caller's span; from anyone else it is
//! ignored, so a client cannot join or flood another's trace. The trace's
//! id is among the request's log fields (`trace_id`) whenever there is
//! one: the exported trace's, or a trusted caller's when nothing is
//! exported.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use seawall_app::logging::RequestFields;
use seawall_ratelimit::IpNet;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tower_http::request_id::RequestId;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The request-id header.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a client's `x-request-id` is short and plain enough to keep and
/// log as it is.
fn is_plain_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The request's log fields. The route is the template (`/api/content`),
/// never the raw path, and `unmatched` for requests no route takes.
fn request_fields<B>(request: &Request<B>, request_id: Box<str>) -> RequestFields {
    let route: Cow<'static, str> = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(Cow::Borrowed("unmatched"), |path| {
            Cow::Owned(path.as_str().to_owned())
        });
    RequestFields::new(method_name(request.method()), route, request_id)
}

/// A method's name, without allocating for the standard ones.
fn method_name(method: &Method) -> Cow<'static, str> {
    let name = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Cow::Owned(method.as_str().to_owned()),
    };
    Cow::Borrowed(name)
}

/// The closing line, in the request's span: at `info` for 5xx and `debug`
/// otherwise, so a busy service's log is not one line per request unless
/// asked for. Status and latency are the line's own fields: no line written
/// before it could show them.
fn log_response(status: StatusCode, latency: Duration) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let code = status.as_u16();
    if status.is_server_error() {
        tracing::info!(status = code, latency_ms, "request failed");
    } else {
        tracing::debug!(status = code, latency_ms, "request finished");
    }
}

/// A request's headers as W3C trace context carriers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The caller's span, from the W3C `traceparent` and `tracestate` headers
/// of a request that comes straight from one of `trusted`; `None` for any
/// other request, and for headers that are not valid trace context.
fn trusted_parent<B>(request: &Request<B>, trusted: &[IpNet]) -> Option<SpanContext> {
    if trusted.is_empty() || !request.headers().contains_key("traceparent") {
        return None;
    }
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    if !trusted.iter().any(|net| net.contains(peer.ip())) {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let span = context.span();
    let parent = span.span_context();
    parent.is_valid().then(|| parent.clone())
}

/// The request's id and log fields, as one layer. A client's
/// `x-request-id` is kept when it is one plain value (see [`is_plain_id`]),
/// otherwise one is generated; it is set on the request (header and
/// extension) and returned on the response. The rest of the stack runs in
/// the request's span, holding its [`request_fields`] (so that every line
/// logged inside carries them), and with them in scope (so that every
/// problem built inside carries the id); it ends with the closing line. The
/// span has no fields of its own unless traces are exported: nothing is
/// formatted for a request unless a line is written.
#[derive(Debug, Clone)]
pub(super) struct RequestLayer {
    /// Proxies whose trace context is followed.
    pub(super) trusted: Arc<[IpNet]>,
    /// Whether the process exports traces.
    pub(super) exporting: bool,
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            trusted: Arc::clone(&self.trusted),
            exporting: self.exporting,
        }
    }
}

/// The service made by [`RequestLayer`].
#[derive(Debug, Clone)]
pub(super) struct RequestService<S> {
    inner: S,
    trusted: Arc<[IpNet]>,
    exporting: bool,
}

impl<S, B, ResB> Service<Request<B>> for RequestService<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let mut values = request.headers().get_all(&X_REQUEST_ID).iter();
        let id = match (values.next(), values.next()) {
            (Some(value), None) if is_plain_id(value.as_bytes()) => value.clone(),
            _ => fresh_id(),
        };
        request.headers_mut().insert(X_REQUEST_ID, id.clone());
        request.extensions_mut().insert(RequestId::new(id.clone()));
        // A plain id or a UUID: ASCII either way.
        let mut fields = request_fields(&request, id.to_str().unwrap_or_default().into());
        let parent = trusted_parent(&request, &self.trusted);
        let span = tracing::info_span!(
            "request",
            otel.name = Empty,
            otel.kind = Empty,
            otel.status_code = Empty,
            http.request.method = Empty,
            http.route = Empty,
            http.response.status_code = Empty,
        );
        let exported = self.exporting && !span.is_disabled();
        if exported {
            let method = request.method().as_str();
            match request.extensions().get::<MatchedPath>() {
                Some(route) => {
                    span.record("otel.name", format_args!("{method} {}", route.as_str()));
                    span.record("http.route", route.as_str());
                }
                None => {
                    span.record("otel.name", method);
                }
            }
            span.record("otel.kind", "server");
            span.record("http.request.method", method);
            if let Some(parent) = &parent {
                let context =
                    opentelemetry::Context::new().with_remote_span_context(parent.clone());
                // Fails only without an OpenTelemetry layer, which exporting rules out.
                let _ = span.set_parent(context);
            }
            let context = span.context();
            let own = context.span();
            if own.span_context().is_valid() {
                fields = fields.with_trace_id(own.span_context().trace_id().to_string());
            }
        } else if let Some(parent) = &parent {
            fields = fields.with_trace_id(parent.trace_id().to_string());
        }
        fields.attach(&span);
        let inner = span.in_scope(|| fields.clone().sync_scope(|| self.inner.call(request)));
        RequestFuture {
            inner: fields.scope(inner),
            id: Some(id),
            span,
            exported,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestService`].
    pub(super) struct RequestFuture<F: Future> {
        #[pin]
        inner: TaskLocalFuture<RequestFields, F>,
        id: Option<HeaderValue>,
        span: Span,
        exported: bool,
        started: Instant,
    }
}

impl<F, ResB, E> Future for RequestFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = this.span.enter();
        let mut result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            log_response(response.status(), this.started.elapsed());
            if *this.exported {
                let status = response.status();
                this.span
                    .record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    this.span.record("otel.status_code", "ERROR");
                }
            }
        }
        drop(entered);
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        Poll::Ready(result)
    }
}

/// A random UUID v4 from a per-thread generator seeded from the standard
/// library's random hasher keys: no system call per request.
fn fresh_id() -> HeaderValue {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::time::Instant::now()));
    }
    // splitmix64: a bijection of the counter, so a thread never repeats.
    let next = || {
        STATE.with(|state| {
            let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    let bits = (u128::from(next()) << 64) | u128::from(next());
    // Version 4, variant 10.
    let bits = (bits & !(0xf_u128 << 76) | (0x4_u128 << 76)) & !(0x3_u128 << 62) | (0x2_u128 << 62);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut nibbles = (0..32)
        .rev()
        .map(|shift| HEX[((bits >> (shift * 4)) & 0xf) as usize]);
    for (i, byte) in text.iter_mut().enumerate() {
        if !matches!(i, 8 | 13 | 18 | 23) {
            *byte = nibbles.next().unwrap_or(b'0');
        }
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
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

    #[test]
    fn generated_ids_are_uuid_v4_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| fresh_id().to_str().expect("ASCII").to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let parsed: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parsed.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parsed[2].starts_with('4'), "{id}");
            assert!(matches!(&parsed[3][..1], "8" | "9" | "a" | "b"), "{id}");
        }
    }
}
