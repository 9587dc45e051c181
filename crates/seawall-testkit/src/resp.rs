//! A tiny blocking RESP2 client, just enough for tests to poke at Redis state.
//!
//! It speaks plain text only, over TCP or, for a TLS server, over the server's unix
//! socket (see [`crate::RedisServerBuilder::tls`]).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// Connect, read and write timeout used by [`Conn::connect`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bulk strings larger than Redis' own `proto-max-bulk-len` default are certainly garbage.
const MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reply {
    /// A simple string, e.g. `OK` or `PONG`.
    Simple(String),
    /// An error reply, e.g. `NOAUTH Authentication required.` or `MOVED 3999 127.0.0.1:12001`.
    Error(String),
    /// An integer reply.
    Integer(i64),
    /// A bulk string (binary safe).
    Bulk(Vec<u8>),
    /// The nil bulk string or nil array, e.g. `GET` of a missing key.
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a simple string, or of a bulk string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) => Some(s),
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(s) => Some(s.as_bytes()),
            Reply::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of an array reply.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The message of an error reply.
    pub fn as_error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is the nil reply.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }

    /// Turns an error reply into [`Error::Server`], so `?` can propagate it.
    pub fn into_result(self) -> Result<Reply> {
        match self {
            Reply::Error(message) => Err(Error::Server { message }),
            other => Ok(other),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => f.write_str(s),
            Reply::Error(e) => write!(f, "(error) {e}"),
            Reply::Integer(i) => write!(f, "(integer) {i}"),
            Reply::Bulk(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Reply::Nil => f.write_str("(nil)"),
            Reply::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A blocking RESP2 connection. It does not follow cluster redirects: a `MOVED` or `ASK`
/// comes back as a [`Reply::Error`]. It has no TLS: [`RedisServer::connect`] reaches a
/// TLS server over its unix socket instead.
///
/// After a timeout or I/O error the connection is out of step with the server (a late
/// reply could be mistaken for the answer to the next command), so every later call
/// fails with [`Error::Broken`]; open a new connection instead.
///
/// [`RedisServer::connect`]: crate::RedisServer::connect
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    stream: BufReader<Stream>,
    timeout: Duration,
    broken: bool,
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
            Stream::Unix(s) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

impl Conn {
    /// Connects to `addr` with [`DEFAULT_TIMEOUT`] for connecting, reading and writing.
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        Self::connect_timeout(addr, DEFAULT_TIMEOUT)
    }

    /// Connects to `addr`, using `timeout` for connecting and for every read and write.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|source| Error::Io {
            context: format!("connecting to {addr}"),
            source,
        })?;
        // Without NODELAY, Nagle's algorithm delays small pipelined writes.
        stream.set_nodelay(true).map_err(|source| Error::Io {
            context: format!("configuring the connection to {addr}"),
            source,
        })?;
        Self::with_stream(addr, Stream::Tcp(stream), timeout)
    }

    /// Connects to the unix socket at `path` of the server listening on `addr`, which
    /// errors then name. Connecting a local socket does not wait, so `timeout` applies to
    /// reads and writes only.
    pub(crate) fn connect_unix(path: &Path, addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = UnixStream::connect(path).map_err(|source| Error::Io {
            context: format!(
                "connecting to {addr} over its unix socket {}",
                path.display()
            ),
            source,
        })?;
        Self::with_stream(addr, Stream::Unix(stream), timeout)
    }

    fn with_stream(addr: SocketAddr, stream: Stream, timeout: Duration) -> Result<Self> {
        let mut conn = Self {
            addr,
            stream: BufReader::new(stream),
            timeout,
            broken: false,
        };
        conn.set_timeout(timeout)?;
        Ok(conn)
    }

    /// The server address. For a connection over a TLS server's unix socket, this is
    /// the server's TLS address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the read and write timeout for later commands.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.stream
            .get_ref()
            .set_timeouts(timeout)
            .map_err(|source| Error::Io {
                context: format!(
                    "setting a {timeout:?} timeout on the connection to {}",
                    self.addr
                ),
                source,
            })?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends `AUTH password` and fails unless the server answers `OK`.
    pub fn auth(&mut self, password: &str) -> Result<()> {
        match self.cmd(&["AUTH", password])? {
            Reply::Simple(ok) if ok == "OK" => Ok(()),
            Reply::Error(message) => Err(Error::Server { message }),
            other => Err(Error::UnexpectedReply {
                command: String::from("AUTH"),
                reply: other.to_string(),
            }),
        }
    }

    /// Sends one command and reads its reply. Error replies are returned as
    /// [`Reply::Error`], not as `Err`; use [`Reply::into_result`] to turn them into one.
    ///
    /// ```
    /// use seawall_testkit::{Conn, RedisServer, Reply};
    /// # fn main() -> seawall_testkit::Result<()> {
    /// let server = RedisServer::start()?;
    /// let mut conn = Conn::connect(server.addr())?;
    /// assert_eq!(conn.cmd(&["SET", "k", "v"])?, Reply::Simple("OK".into()));
    /// assert_eq!(conn.cmd(&["GET", "k"])?.as_str(), Some("v"));
    /// assert!(conn.cmd(&["GET", "missing"])?.is_nil());
    /// assert!(conn.cmd(&["NOSUCHCMD"])?.as_error().is_some());
    /// # Ok(()) }
    /// ```
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply> {
        let mut replies = self.pipeline(&[args])?;
        replies.pop().ok_or_else(|| Error::Protocol {
            addr: self.addr,
            detail: String::from("no reply was read"),
        })
    }

    /// Sends several commands in one write, then reads one reply per command.
    pub fn pipeline<C, A>(&mut self, commands: &[C]) -> Result<Vec<Reply>>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        if self.broken {
            return Err(Error::Broken { addr: self.addr });
        }
        let mut buf = Vec::new();
        for command in commands {
            encode(&mut buf, command.as_ref());
        }
        // Until every reply is read, a failure leaves unread replies behind.
        self.broken = true;
        self.stream
            .get_mut()
            .write_all(&buf)
            .map_err(|e| self.map_io(e, "sending a command"))?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            let reply =
                read_reply(&mut self.stream).map_err(|e| self.map_io(e, "reading a reply"))?;
            replies.push(reply);
        }
        self.broken = false;
        Ok(replies)
    }

    fn map_io(&self, e: io::Error, doing: &str) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                addr: self.addr,
                timeout: self.timeout,
            },
            io::ErrorKind::InvalidData => Error::Protocol {
                addr: self.addr,
                detail: e.to_string(),
            },
            _ => Error::Io {
                context: format!("{doing} on the connection to {}", self.addr),
                source: e,
            },
        }
    }
}

fn encode<A: AsRef<[u8]>>(buf: &mut Vec<u8>, args: &[A]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}

fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid(format!(
            "line not terminated by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(digits: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad integer {:?}", String::from_utf8_lossy(digits))))
}

fn read_reply<R: BufRead>(r: &mut R) -> io::Result<Reply> {
    let line = read_line(r)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(invalid(String::from("empty reply line")));
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Reply::Simple(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => parse_int(rest).map(Reply::Integer),
        b'$' => {
            let len = parse_int(rest)?;
            if len == -1 {
                return Ok(Reply::Nil);
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_BULK_LEN)
                .ok_or_else(|| invalid(format!("bad bulk length {len}")))?;
            let mut data = vec![0; len + 2];
            r.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(invalid(String::from("bulk string not terminated by CRLF")));
            }
            data.truncate(len);
            Ok(Reply::Bulk(data))
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len == -1 {
                return Ok(Reply::Nil);
            }
            let len =
                usize::try_from(len).map_err(|_| invalid(format!("bad array length {len}")))?;
            // Cap the pre-allocation: the length comes from the wire.
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                items.push(read_reply(r)?);
            }
            Ok(Reply::Array(items))
        }
        other => Err(invalid(format!(
            "unknown reply type byte {:?}",
            char::from(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> io::Result<Reply> {
        read_reply(&mut io::Cursor::new(wire))
    }

    fn ok(wire: &[u8]) -> Reply {
        parse(wire).expect("valid RESP")
    }

    #[test]
    fn encodes_binary_safe_arrays() {
        let mut buf = Vec::new();
        encode(&mut buf, &["SET", "k", "a\r\nb"]);
        assert_eq!(buf, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(ok(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(ok(b"-ERR x\r\n"), Reply::Error("ERR x".into()));
        assert_eq!(ok(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(ok(b"$0\r\n\r\n"), Reply::Bulk(vec![]));
        assert_eq!(ok(b"$4\r\na\r\nb\r\n"), Reply::Bulk(b"a\r\nb".to_vec()));
        assert_eq!(ok(b"$-1\r\n"), Reply::Nil);
        assert_eq!(ok(b"*-1\r\n"), Reply::Nil);
        assert_eq!(ok(b"*0\r\n"), Reply::Array(vec![]));
        assert_eq!(
            ok(b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n"),
            Reply::Array(vec![
                Reply::Integer(1),
                Reply::Array(vec![Reply::Bulk(b"x".to_vec())]),
                Reply::Nil,
            ])
        );
    }

    #[test]
    fn rejects_malformed_input() {
        for wire in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b"$3\r\nabcd\r\n",
            b"+OK\n",
            b"$-2\r\n",
            b"*-5\r\n",
        ] {
            let err = parse(wire).expect_err("malformed");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{wire:?}");
        }
        for wire in [&b""[..], b"$5\r\nab", b"*2\r\n:1\r\n"] {
            let err = parse(wire).expect_err("truncated");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{wire:?}");
        }
    }

    #[test]
    fn reply_accessors() {
        assert_eq!(Reply::Bulk(b"v".to_vec()).as_str(), Some("v"));
        assert_eq!(Reply::Bulk(vec![0xff]).as_str(), None);
        assert_eq!(Reply::Integer(3).as_int(), Some(3));
        assert!(Reply::Nil.is_nil());
        assert!(matches!(
            Reply::Error("ERR no".into()).into_result(),
            Err(Error::Server { message }) if message == "ERR no"
        ));
        assert_eq!(
            Reply::Array(vec![Reply::Integer(1), Reply::Nil]).to_string(),
            "[(integer) 1, (nil)]"
        );
    }
}
