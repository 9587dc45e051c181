//! Response compression per `Accept-Encoding`, by tower-http, entered only
//! by requests that send the header.
//!
//! tower-http's compressed body holds the state of every encoder it could
//! use inline (about 6 KB with gzip and brotli), and a response is moved by
//! value through every layer above it, so passing every response through it
//! costs kilobytes of copying per request even when nothing is compressed.
//! A request without `Accept-Encoding` gets what tower-http would give it,
//! the identity encoding with `Vary: accept-encoding` on a compressible
//! response, without entering it; a compressed response is boxed once, as
//! axum boxes every body anyway.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, Request, Response, header};
use tower::{Layer, Service};
use tower_http::BoxError;
use tower_http::compression::predicate::{DefaultPredicate, Predicate as _};
use tower_http::compression::{Compression, CompressionLayer};

/// Compresses responses when `enabled`, with gzip and brotli.
#[derive(Debug, Clone, Copy)]
pub(super) struct CompressLayer {
    pub(super) enabled: bool,
}

impl<S> Layer<S> for CompressLayer {
    type Service = Compress<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Compress {
            compression: CompressionLayer::new().gzip(true).br(true).layer(inner),
            enabled: self.enabled,
        }
    }
}

/// The service made by [`CompressLayer`].
#[derive(Clone)]
pub(super) struct Compress<S> {
    compression: Compression<S>,
    enabled: bool,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Compress<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: HttpBody<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = CompressFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.compression.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        if !self.enabled {
            return CompressFuture::Plain {
                inner: self.compression.get_mut().call(request),
            };
        }
        if request.headers().contains_key(header::ACCEPT_ENCODING) {
            CompressFuture::Negotiated {
                inner: self.compression.call(request),
            }
        } else {
            CompressFuture::Identity {
                inner: self.compression.get_mut().call(request),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Compress`].
    #[project = CompressProj]
    pub(super) enum CompressFuture<F> {
        /// Compression is off.
        Plain { #[pin] inner: F },
        /// No `Accept-Encoding`: the identity encoding.
        Identity { #[pin] inner: F },
        /// Negotiated by tower-http.
        Negotiated { #[pin] inner: tower_http::compression::ResponseFuture<F, DefaultPredicate> },
    }
}

impl<F, B, E> Future for CompressFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project() {
            CompressProj::Plain { inner } => ready!(inner.poll(cx))?.map(Body::new),
            CompressProj::Identity { inner } => {
                let mut response = ready!(inner.poll(cx))?;
                if compressible(&response) {
                    vary_on_accept_encoding(response.headers_mut());
                }
                response.map(Body::new)
            }
            CompressProj::Negotiated { inner } => ready!(inner.poll(cx))?.map(Body::new),
        };
        Poll::Ready(Ok(response))
    }
}

/// Whether tower-http would compress `response` for a client that asked.
fn compressible<B: HttpBody>(response: &Response<B>) -> bool {
    !response.headers().contains_key(header::CONTENT_ENCODING)
        && !response.headers().contains_key(header::CONTENT_RANGE)
        && DefaultPredicate::new().should_compress(response)
}

/// Adds `Vary: accept-encoding` unless a `Vary` value names it already: the
/// response depends on the header even when the client sent none.
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let named = headers.get_all(header::VARY).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"))
    });
    if !named {
        headers.append(header::VARY, header::ACCEPT_ENCODING.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::convert::Infallible;
    use tower::ServiceExt as _;

    /// A compressible JSON response, well over tower-http's 32-byte minimum.
    async fn json(_: Request<Body>) -> Result<Response<Body>, Infallible> {
        let body = format!("[{}]", vec!["{\"id\":1}"; 50].join(","));
        Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("a response"))
    }

    async fn answer(enabled: bool, accept_encoding: Option<&str>) -> Response<Body> {
        let service = CompressLayer { enabled }.layer(tower::service_fn(json));
        let mut request = Request::builder();
        if let Some(value) = accept_encoding {
            request = request.header(header::ACCEPT_ENCODING, value);
        }
        let request = request.body(Body::empty()).expect("a request");
        service.oneshot(request).await.expect("infallible")
    }

    #[tokio::test]
    async fn without_accept_encoding_the_identity_with_vary_as_tower_http_gives() {
        let response = answer(true, None).await;
        assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
        assert_eq!(response.headers()[header::VARY], "accept-encoding");
        // tower-http itself, for a client that accepts only the identity.
        let tower_http = CompressionLayer::new()
            .layer(tower::service_fn(json))
            .oneshot(
                Request::builder()
                    .header(header::ACCEPT_ENCODING, "identity")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("infallible");
        assert_eq!(
            tower_http
                .headers()
                .get_all(header::VARY)
                .iter()
                .collect::<Vec<_>>(),
            response
                .headers()
                .get_all(header::VARY)
                .iter()
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn gzip_when_asked_and_nothing_when_off() {
        let response = answer(true, Some("gzip")).await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let response = answer(false, Some("gzip")).await;
        assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
        assert!(!response.headers().contains_key(header::VARY));
    }

    #[test]
    fn vary_is_added_once() {
        let mut headers = HeaderMap::new();
        vary_on_accept_encoding(&mut headers);
        vary_on_accept_encoding(&mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().count(), 1);

        let mut headers = HeaderMap::new();
        headers.insert(
            header::VARY,
            HeaderValue::from_static("origin, Accept-Encoding"),
        );
        vary_on_accept_encoding(&mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().count(), 1);

        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        vary_on_accept_encoding(&mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().count(), 2);
    }
}
