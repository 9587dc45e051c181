//! The request span: method, route template and request id when the request
//! arrives, status and latency when the response leaves. Every log line
//! written while the request is handled carries these fields.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;
use tower_http::trace::{MakeSpan, OnResponse};
use tracing::Span;

use crate::problem;

fn request_id(extensions: &axum::http::Extensions) -> Option<&str> {
    extensions
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
}

/// Makes the `request` span. The route is the template (`/api/content`),
/// never the raw path, and `unmatched` for requests no route takes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &axum::http::Request<B>) -> Span {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        tracing::info_span!(
            "request",
            method = %request.method(),
            route,
            request_id = request_id(request.extensions()).unwrap_or("-"),
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        )
    }
}

/// Records status and latency on the span and logs one line per request:
/// at `info` for 5xx and `debug` otherwise, so a busy service's log is not
/// one line per request unless asked for.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordResponse;

impl<B> OnResponse<B> for RecordResponse {
    fn on_response(self, response: &axum::http::Response<B>, latency: Duration, span: &Span) {
        let status = response.status().as_u16();
        span.record("status", status);
        span.record("latency_ms", latency.as_secs_f64() * 1000.0);
        if response.status().is_server_error() {
            tracing::info!(parent: span, status, "request failed");
        } else {
            tracing::debug!(parent: span, status, "request finished");
        }
    }
}

/// Runs the rest of the request with its id in scope, so problems built
/// anywhere inside carry it.
pub(super) async fn scope_request_id(request: Request, next: Next) -> Response {
    let id: Box<str> = request_id(request.extensions()).unwrap_or("").into();
    problem::scope_request_id(id, next.run(request)).await
}
