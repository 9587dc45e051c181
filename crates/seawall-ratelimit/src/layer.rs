//! A tower layer that rate-limits HTTP requests: a key from each request,
//! a check, and a 429 problem (RFC 9457) with `Retry-After` when rejected;
//! `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-
//! headers) on every response the limiter decided.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::decision::Decision;
use crate::error::Error;
use crate::limiter::RateLimiter;
use crate::net::{IpNet, canonical};

/// `RateLimit-Policy`: the quota policies that apply.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: where the request stands in each policy.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Takes the key a request is limited by; `None` leaves the request
/// unlimited by this layer (no API key header, say).
pub trait KeyExtractor: Clone + Send + Sync + 'static {
    /// The key of `request`.
    fn extract(&self, request: &http::request::Parts) -> Option<String>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&http::request::Parts) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn extract(&self, request: &http::request::Parts) -> Option<String> {
        self(request)
    }
}

/// The peer's address, for servers that record it in the request
/// extensions themselves (axum's `ConnectInfo<SocketAddr>` is read too with
/// the `axum` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client's IP address: the peer's, or, when the peer is a trusted
/// proxy, the nearest address in `Forwarded` / `X-Forwarded-For` that is not
/// a trusted proxy itself. Headers from an untrusted peer are ignored, so a
/// client cannot choose its own key by sending them.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Arc<[IpNet]>,
}

impl ClientIp {
    /// The peer's address only: no proxy is trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the proxies in `networks`.
    pub fn trusting(networks: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            trusted: networks.into_iter().collect(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client address of `request`, if its peer is known.
    pub fn client_ip(&self, request: &http::request::Parts) -> Option<IpAddr> {
        self.client_ip_from(&request.headers, &request.extensions)
    }

    /// [`client_ip`](Self::client_ip) of a whole request.
    pub fn client_ip_of<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        self.client_ip_from(request.headers(), request.extensions())
    }

    fn client_ip_from(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<IpAddr> {
        let peer = canonical(peer_addr(extensions)?.ip());
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        // Nearest hop first: walk the chain from the right.
        let chain = forwarded_chain(headers);
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.is_trusted(client) {
                        return Some(client);
                    }
                }
                // An obfuscated or unparsable hop: the chain cannot be
                // followed past it; the last trusted hop's view stands.
                None => return Some(client),
            }
        }
        Some(client)
    }
}

impl KeyExtractor for ClientIp {
    fn extract(&self, request: &http::request::Parts) -> Option<String> {
        self.client_ip(request).map(|ip| ip.to_string())
    }
}

fn peer_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0);
    }
    None
}

/// The addresses of `Forwarded` (RFC 7239) when present, else of
/// `X-Forwarded-For`, in order (client first). `None` marks a hop that is not
/// an address.
fn forwarded_chain(headers: &http::HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|value| value.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, node)| parse_node(node.trim().trim_matches('"')))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// An address as a proxy writes it: `192.0.2.1`, `192.0.2.1:443`,
/// `[2001:db8::1]`, `[2001:db8::1]:443` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|ip| ip.parse().ok())
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
    fn extract(&self, request: &http::request::Parts) -> Option<String> {
        let value = request.headers.get(&self.name)?.to_str().ok()?.trim();
        (!value.is_empty()).then(|| value.to_owned())
    }
}

/// The matched route template (`/api/items/{id}`), so each route has its
/// own limit; requests no route matched are not limited by this layer.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteKey;

#[cfg(feature = "axum")]
impl KeyExtractor for RouteKey {
    fn extract(&self, request: &http::request::Parts) -> Option<String> {
        request
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|path| path.as_str().to_owned())
    }
}

/// Rate-limits requests by the key `K` takes from them.
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
        Self {
            limiter: Arc::new(limiter),
            key,
        }
    }

    /// Same, with a limiter already shared.
    pub fn shared(limiter: Arc<dyn RateLimiter>, key: K) -> Self {
        Self { limiter, key }
    }
}

impl<S, K: Clone> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] makes.
#[derive(Clone)]
pub struct RateLimit<S, K> {
    inner: S,
    limiter: Arc<dyn RateLimiter>,
    key: K,
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
        let limiter = self.limiter.clone();
        let (parts, body) = request.into_parts();
        let key = self.key.extract(&parts);
        let request = Request::from_parts(parts, body);
        Box::pin(async move {
            let Some(key) = key else {
                return inner.call(request).await;
            };
            let decision = match limiter.check(&key, 1).await {
                Ok(decision) => decision,
                Err(error) => return Ok(error_response(&error)),
            };
            if !decision.allowed {
                return Ok(rejection(&decision));
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
        state.push_str(&format!(
            "\"{name}\";r={remaining};t={}",
            ceil_seconds(rule.reset_after)
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

fn error_response<B: From<String>>(error: &Error) -> Response<B> {
    match error {
        Error::InvalidKey(reason) => problem(StatusCode::BAD_REQUEST, reason),
        Error::Redis(_) | Error::Unavailable => {
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

    fn parts(peer: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = Request::builder().uri("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).expect("request").into_parts();
        parts
            .extensions
            .insert(PeerAddr(peer.parse().expect("peer")));
        parts
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let ip = ClientIp::trusting(nets(&["10.0.0.0/8"]));
        let spoofed = parts("203.0.113.9:5000", &[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(ip.extract(&spoofed).as_deref(), Some("203.0.113.9"));
        let no_trust = ClientIp::new();
        let behind = parts("10.0.0.2:5000", &[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(no_trust.extract(&behind).as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn a_trusted_proxy_chain_is_followed_to_the_first_untrusted_hop() {
        let ip = ClientIp::trusting(nets(&["10.0.0.0/8", "2001:db8::/32"]));
        // The client prepended a fake hop; the proxies appended the truth.
        let request = parts(
            "10.0.0.2:5000",
            &[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.9")],
        );
        assert_eq!(ip.extract(&request).as_deref(), Some("198.51.100.7"));
        let forwarded = parts(
            "[2001:db8::2]:443",
            &[
                (
                    "forwarded",
                    "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
                ),
                ("x-forwarded-for", "6.6.6.6"),
            ],
        );
        assert_eq!(ip.extract(&forwarded).as_deref(), Some("192.0.2.60"));
        let hidden = parts(
            "10.0.0.2:5000",
            &[("forwarded", "for=_hidden, for=10.0.0.8")],
        );
        assert_eq!(ip.extract(&hidden).as_deref(), Some("10.0.0.8"));
        let only_proxies = parts("10.0.0.2:5000", &[("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(ip.extract(&only_proxies).as_deref(), Some("10.1.1.1"));
    }

    #[test]
    fn retry_after_is_never_early() {
        assert_eq!(ceil_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ceil_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ceil_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_seconds(Duration::ZERO), 0);
    }
}
