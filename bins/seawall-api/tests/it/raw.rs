//! Requests written byte for byte over TCP: what an HTTP client library will
//! not send (oversized or malformed heads, repeated headers, a body that
//! never finishes, headers trickled a byte at a time), and the server's bare
//! replies read as they come.

use std::net::SocketAddr;

use seawall_testkit::wait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
#[derive(Debug)]
pub(crate) struct RawReply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawReply {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Asserts a problem+json reply with `status`; returns its body.
    #[track_caller]
    pub(crate) fn assert_problem(&self, status: u16) -> serde_json::Value {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{self:?} {text}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let json = self.json();
        assert_eq!(json["status"], status, "{text}");
        json
    }

    /// Asserts hyper's bare reply: `status`, no body.
    #[track_caller]
    pub(crate) fn assert_bare(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(self.body.is_empty(), "a bare reply has no body: {self:?}");
        assert_eq!(self.header("content-type"), None, "{self:?}");
    }
}

/// Sends `request` on a new connection and reads until the server closes it
/// (send `Connection: close`), within [`wait::patience`]. A server that
/// answers and closes before taking the whole request makes the write fail;
/// the reply is still read.
pub(crate) async fn exchange(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_reply(&mut stream).await
}

/// Reads one reply up to the end of the connection and parses it.
pub(crate) async fn read_reply(stream: &mut TcpStream) -> RawReply {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(wait::patience(), async {
        let mut chunk = [0_u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "waited {:?} for the end of the reply: {bytes:?}",
        wait::patience()
    );
    parse(&bytes)
}

/// Parses a complete HTTP/1.1 response, undoing chunked transfer coding.
pub(crate) fn parse(bytes: &[u8]) -> RawReply {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {bytes:?}"));
    let head = std::str::from_utf8(&bytes[..head_end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let raw_body = &bytes[head_end + 4..];
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size = std::str::from_utf8(&bytes[..line_end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        let end = (start + size).min(bytes.len());
        body.extend_from_slice(&bytes[start..end]);
        bytes = bytes.get(end + 2..).unwrap_or_default();
    }
}

/// A GET with `extra` header lines (each ending in `\r\n`).
pub(crate) fn get(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\r\n").into_bytes()
}
