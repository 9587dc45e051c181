//! The client's address behind trusted proxies, read the way nginx's
//! `real_ip_header` with `real_ip_recursive` and Rails' `RemoteIp` read it,
//! and the key a client is limited by.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::header::{FORWARDED, HeaderName};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::layer::KeyExtractor;
use crate::net::{IpNet, canonical};

/// The prefix an IPv6 client is keyed by unless told otherwise: one /64,
/// the block a provider hands a single subscriber or link.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The header a trusted proxy names the client in unless told otherwise.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The peer's address, for servers that record it in the request
/// extensions themselves (axum's `ConnectInfo<SocketAddr>` is read too with
/// the `axum` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client's IP address and the key it is limited by.
///
/// The client is the peer, unless the peer is a trusted proxy: then one
/// header, `X-Forwarded-For` unless [`header`](Self::header) names another,
/// is read from the right, entry by entry, skipping trusted proxies, and
/// the first address that is not one is the client. A header from an
/// untrusted peer is never read, and no other header is read at all, so a
/// client cannot choose its key by sending one. An entry that is not an
/// address (junk, `unknown`, an obfuscated `_hidden`) stops the walk: the
/// last address read stands, never the peer's because of bytes further
/// left. When every entry is a trusted proxy, the leftmost is the client.
///
/// An IPv6 client is keyed by its /64 ([`ipv6_prefix`](Self::ipv6_prefix)),
/// since one subscriber holds at least that many addresses; an IPv4-mapped
/// IPv6 address counts as the IPv4 address it carries.
///
/// A request that carries no peer address (a server not started with
/// `into_make_service_with_connect_info::<SocketAddr>()`, nor inserting
/// [`PeerAddr`]) has no key: [`RateLimitLayer`](crate::RateLimitLayer)
/// answers it with 500 rather than let it through unlimited, unless
/// [`unknown_peer`](Self::unknown_peer) names an address for it.
///
/// ```
/// use seawall_ratelimit::ClientIp;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Behind nginx on 10.0.0.0/8 setting `X-Real-IP $remote_addr`.
/// let client = ClientIp::trusting(["10.0.0.0/8".parse()?])
///     .header(http::HeaderName::from_static("x-real-ip"))
///     .ipv6_prefix(56)?;
/// let ip = "2001:db8:1:2ff::9".parse()?;
/// assert_eq!(client.key(ip), "2001:db8:1:200::/56");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Arc<[IpNet]>,
    header: HeaderName,
    ipv6_prefix: u8,
    unknown_peer: Option<IpAddr>,
}

impl Default for ClientIp {
    fn default() -> Self {
        Self {
            trusted: Arc::new([]),
            header: X_FORWARDED_FOR,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            unknown_peer: None,
        }
    }
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
            ..Self::default()
        }
    }

    /// Reads the client from header `name` (`x-forwarded-for` by default):
    /// `forwarded` is read as RFC 7239 (its `for=` parameters), any other
    /// header as a comma-separated list of addresses, as `X-Forwarded-For`
    /// and, with its single address, `X-Real-IP` are written. Name the
    /// header your nearest proxy sets and overwrites.
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// Keys IPv6 clients by their first `prefix` bits, 1 to 128 (128: by
    /// the whole address); an [`Error::InvalidConfig`] otherwise.
    pub fn ipv6_prefix(mut self, prefix: u8) -> Result<Self> {
        if !(1..=128).contains(&prefix) {
            return Err(Error::InvalidConfig(format!(
                "an IPv6 key prefix is /1 to /128, not /{prefix}"
            )));
        }
        self.ipv6_prefix = prefix;
        Ok(self)
    }

    /// Takes a request without a peer address as coming from `peer` (a
    /// server on a unix socket behind a local proxy: `127.0.0.1`, trusted),
    /// instead of refusing it.
    pub fn unknown_peer(mut self, peer: IpAddr) -> Self {
        self.unknown_peer = Some(peer);
        self
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

    /// The key of client `ip`: an IPv4 address as it is written
    /// (`192.0.2.7`), an IPv6 address as its network (`2001:db8:1:2::/64`),
    /// or whole with a prefix of 128.
    pub fn key(&self, ip: IpAddr) -> String {
        match canonical(ip) {
            ip @ IpAddr::V6(_) if self.ipv6_prefix < 128 => IpNet::new(ip, self.ipv6_prefix)
                .map_or_else(|_| ip.to_string(), |net| net.to_string()),
            ip => ip.to_string(),
        }
    }

    /// The [`key`](Self::key) of a whole request's client, if its peer is
    /// known.
    pub fn key_of<B>(&self, request: &http::Request<B>) -> Option<String> {
        self.client_ip_of(request).map(|ip| self.key(ip))
    }

    fn client_ip_from(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<IpAddr> {
        let peer = peer_addr(extensions).map(|addr| addr.ip());
        let peer = canonical(peer.or(self.unknown_peer)?);
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let forwarded = self.header == FORWARDED;
        let mut client = peer;
        // Nearest hop first: the last field line's last entry.
        for line in headers.get_all(&self.header).iter().rev() {
            for entry in split_list(line.as_bytes(), b',', forwarded)
                .into_iter()
                .rev()
            {
                let entry = trim(entry);
                if entry.is_empty() {
                    continue; // RFC 9110 § 5.6.1: empty list elements are ignored.
                }
                let hop = if forwarded {
                    forwarded_for(entry)
                } else {
                    parse_node(entry)
                };
                // Not an address: the chain cannot be followed past it, and
                // the last hop a trusted proxy vouched for stands.
                let Some(ip) = hop else {
                    return Some(client);
                };
                client = canonical(ip);
                if !self.is_trusted(client) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }
}

impl KeyExtractor for ClientIp {
    /// The client's [`key`](Self::key); [`Error::UnknownPeer`] when the
    /// request carries no peer address and no
    /// [`unknown_peer`](Self::unknown_peer) stands in for it.
    fn extract(&self, request: &http::request::Parts) -> Result<Option<String>> {
        match self.client_ip(request) {
            Some(ip) => Ok(Some(self.key(ip))),
            None => Err(Error::UnknownPeer),
        }
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

/// The items of a list separated by `separator`; with `quoted`, a
/// separator inside a quoted string (`"a,b"`, with `\` escapes) does not
/// split.
fn split_list(value: &[u8], separator: u8, quoted: bool) -> SmallVec<[&[u8]; 4]> {
    let (mut in_quotes, mut escaped) = (false, false);
    value
        .split(|&byte| {
            if escaped {
                escaped = false;
                return false;
            }
            match byte {
                b'\\' if in_quotes => escaped = true,
                b'"' if quoted => in_quotes = !in_quotes,
                _ => return byte == separator && !in_quotes,
            }
            false
        })
        .collect()
}

/// `bytes` without the blanks around it.
fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// The node of a `Forwarded` element's `for=` parameter; `None` when it has
/// none or it is not an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let node = split_list(element, b';', true)
        .into_iter()
        .find_map(|pair| {
            let mut halves = trim(pair).splitn(2, |&byte| byte == b'=');
            let name = halves.next()?;
            name.eq_ignore_ascii_case(b"for").then(|| halves.next())?
        })?;
    let node = trim(node);
    let node = node
        .strip_prefix(b"\"")
        .and_then(|inner| inner.strip_suffix(b"\""))
        .unwrap_or(node);
    parse_node(node)
}

/// An address as a proxy writes it: `192.0.2.1`, `192.0.2.1:443`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443` (a port may be
/// obfuscated, `_a1`, as RFC 7239 allows).
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (ip, port) = match node.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed.split_once(']')?;
            let port = match rest {
                "" => None,
                rest => Some(rest.strip_prefix(':')?),
            };
            (ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)?, port)
        }
        None => {
            let (ip, port) = node.split_once(':')?;
            (IpAddr::V4(ip.parse::<Ipv4Addr>().ok()?), Some(port))
        }
    };
    port.is_none_or(is_port).then_some(ip)
}

/// A port as RFC 7239 writes it: a number up to 65535, or `_` and an
/// obfuscated token.
fn is_port(port: &str) -> bool {
    let digits = port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    let obfuscated = port.strip_prefix('_').is_some_and(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    digits || obfuscated
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parts(peer: &str, headers: &[(&str, &[u8])]) -> http::request::Parts {
        let mut request = http::Request::builder().uri("/");
        for (name, value) in headers {
            let value = HeaderValue::from_bytes(value).expect("a field value");
            request = request.header(*name, value);
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

    fn key(ip: &ClientIp, request: &http::request::Parts) -> Option<String> {
        ip.extract(request).expect("a peer")
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let ip = ClientIp::trusting(nets(&["10.0.0.0/8"]));
        let spoofed = parts(
            "203.0.113.9:5000",
            &[
                ("x-forwarded-for", b"198.51.100.1"),
                ("forwarded", b"for=1.2.3.4"),
            ],
        );
        assert_eq!(key(&ip, &spoofed).as_deref(), Some("203.0.113.9"));
        let no_trust = ClientIp::new();
        let behind = parts("10.0.0.2:5000", &[("x-forwarded-for", b"198.51.100.1")]);
        assert_eq!(key(&no_trust, &behind).as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn a_trusted_proxy_chain_is_followed_to_the_first_untrusted_hop() {
        let ip = ClientIp::trusting(nets(&["10.0.0.0/8", "2001:db8::/32"]));
        // The client prepended a fake hop; the proxies appended the truth.
        let request = parts(
            "10.0.0.2:5000",
            &[("x-forwarded-for", b"1.2.3.4, 198.51.100.7, 10.0.0.9")],
        );
        assert_eq!(key(&ip, &request).as_deref(), Some("198.51.100.7"));
        // Field lines are one list, in order.
        let split = parts(
            "10.0.0.2:5000",
            &[
                ("x-forwarded-for", b"198.51.100.8"),
                ("x-forwarded-for", b"10.0.0.7,,"),
            ],
        );
        assert_eq!(key(&ip, &split).as_deref(), Some("198.51.100.8"));
        let only_proxies = parts("10.0.0.2:5000", &[("x-forwarded-for", b"10.1.1.1")]);
        assert_eq!(key(&ip, &only_proxies).as_deref(), Some("10.1.1.1"));
        let none = parts("10.0.0.2:5000", &[]);
        assert_eq!(key(&ip, &none).as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = ClientIp::trusting(nets(&["10.0.0.0/8"]));
        let both = parts(
            "10.0.0.2:5000",
            &[
                ("forwarded", b"for=1.2.3.4"),
                ("x-forwarded-for", b"198.51.100.7"),
                ("x-real-ip", b"5.6.7.8"),
            ],
        );
        assert_eq!(key(&xff, &both).as_deref(), Some("198.51.100.7"));
        let real_ip = xff.clone().header(HeaderName::from_static("x-real-ip"));
        assert_eq!(key(&real_ip, &both).as_deref(), Some("5.6.7.8"));
        let forwarded = xff.header(FORWARDED);
        assert_eq!(key(&forwarded, &both).as_deref(), Some("1.2.3.4"));
    }

    #[test]
    fn forwarded_is_read_as_rfc_7239_writes_it() {
        let ip = ClientIp::trusting(nets(&["10.0.0.0/8", "2001:db8::/32"])).header(FORWARDED);
        let request = parts(
            "[2001:db8::2]:443",
            &[(
                "forwarded",
                b"for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\"",
            )],
        );
        assert_eq!(key(&ip, &request).as_deref(), Some("192.0.2.60"));
        // A quoted comma does not split an element.
        let quoted = parts(
            "10.0.0.2:5000",
            &[("forwarded", b"for=198.51.100.3;host=\"a,for=9.9.9.9\"")],
        );
        assert_eq!(key(&ip, &quoted).as_deref(), Some("198.51.100.3"));
        let hidden = parts(
            "10.0.0.2:5000",
            &[("forwarded", b"for=_hidden, for=10.0.0.8")],
        );
        assert_eq!(key(&ip, &hidden).as_deref(), Some("10.0.0.8"));
        let no_for = parts("10.0.0.2:5000", &[("forwarded", b"proto=https")]);
        assert_eq!(key(&ip, &no_for).as_deref(), Some("10.0.0.2"));
        let port = parts(
            "10.0.0.2:5000",
            &[("forwarded", b"for=\"198.51.100.4:_p1\"")],
        );
        assert_eq!(key(&ip, &port).as_deref(), Some("198.51.100.4"));
    }

    #[test]
    fn junk_stops_the_walk_where_it_stands() {
        let ip = ClientIp::trusting(nets(&["10.0.0.0/8"]));
        // Bytes a client made up, left of the address its proxy appended.
        let junk_left = parts(
            "10.0.0.2:5000",
            &[("x-forwarded-for", b"\xff\xfe, 198.51.100.7, 10.0.0.9")],
        );
        assert_eq!(key(&ip, &junk_left).as_deref(), Some("198.51.100.7"));
        // Reached past the trusted hops: the last one read stands.
        let junk_reached = parts(
            "10.0.0.2:5000",
            &[("x-forwarded-for", b"198.51.100.7, caf\xc3\xa9, 10.0.0.9")],
        );
        assert_eq!(key(&ip, &junk_reached).as_deref(), Some("10.0.0.9"));
        for bad in [
            &b"1.2.3.4:99999"[..],
            b"1.2.3.4:",
            b"[::1",
            b"[::1]x",
            b"fe80::1%eth0",
            b"unknown",
            b"\"",
            b"=;,\\",
        ] {
            let request = parts("10.0.0.2:5000", &[("x-forwarded-for", bad)]);
            assert_eq!(key(&ip, &request).as_deref(), Some("10.0.0.2"), "{bad:?}");
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let ip = ClientIp::trusting(nets(&["10.0.0.0/8"]));
        let a = parts("[2001:db8:1:2::a]:1", &[]);
        let b = parts("[2001:db8:1:2:ffff::b]:1", &[]);
        let other = parts("[2001:db8:1:3::a]:1", &[]);
        assert_eq!(key(&ip, &a).as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(key(&ip, &a), key(&ip, &b));
        assert_ne!(key(&ip, &a), key(&ip, &other));
        // Named by a trusted proxy, and mapped IPv4.
        let forwarded = parts(
            "10.0.0.2:1",
            &[("x-forwarded-for", b"[2001:db8:1:2::77]:443")],
        );
        assert_eq!(key(&ip, &forwarded).as_deref(), Some("2001:db8:1:2::/64"));
        let mapped = parts("[::ffff:192.0.2.7]:1", &[]);
        assert_eq!(key(&ip, &mapped).as_deref(), Some("192.0.2.7"));
        let mapped_proxy = parts("[::ffff:10.0.0.2]:1", &[("x-forwarded-for", b"192.0.2.8")]);
        assert_eq!(key(&ip, &mapped_proxy).as_deref(), Some("192.0.2.8"));

        let whole = ip.clone().ipv6_prefix(128).expect("a prefix");
        assert_eq!(key(&whole, &a).as_deref(), Some("2001:db8:1:2::a"));
        let site = ip.clone().ipv6_prefix(48).expect("a prefix");
        assert_eq!(key(&site, &other).as_deref(), Some("2001:db8:1::/48"));
        assert!(ip.clone().ipv6_prefix(0).is_err());
        assert!(ip.ipv6_prefix(129).is_err());
    }

    #[test]
    fn a_request_without_a_peer_has_no_key_unless_one_stands_in() {
        let (parts, ()) = http::Request::builder()
            .header("x-forwarded-for", "198.51.100.7")
            .body(())
            .expect("request")
            .into_parts();
        let ip = ClientIp::trusting(nets(&["127.0.0.1"]));
        assert!(matches!(ip.extract(&parts), Err(Error::UnknownPeer)));
        let local = ip.unknown_peer("127.0.0.1".parse().expect("ip"));
        assert_eq!(key(&local, &parts).as_deref(), Some("198.51.100.7"));
    }
}
