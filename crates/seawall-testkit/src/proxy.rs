//! A TCP proxy that can cut the connections of the clients behind it: a
//! network partition between one client and a server, which the server itself
//! cannot produce for one client alone.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};

/// How often the accept loop looks at its flags between connections.
const POLL: Duration = Duration::from_millis(5);

/// A loopback TCP proxy in front of one address.
///
/// [`cut`](Proxy::cut) closes every connection through it and refuses new ones
/// until [`restore`](Proxy::restore); clients see their sockets reset, as on
/// a partition that ends with the peer's state lost. Dropping the proxy stops
/// it and closes its connections.
///
/// ```
/// use seawall_testkit::{Proxy, RedisServer};
///
/// # fn main() -> seawall_testkit::Result<()> {
/// let server = RedisServer::builder().start()?;
/// let proxy = Proxy::start(server.addr())?;
/// assert!(proxy.url().starts_with("redis://127.0.0.1:"));
/// proxy.cut(); // every client of proxy.url() loses its connection
/// proxy.restore(); // and may connect again
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Where new connections go.
    target: Mutex<SocketAddr>,
    cut: AtomicBool,
    stopped: AtomicBool,
    /// What the server sends is held, not forwarded, while set.
    held: AtomicBool,
    /// Both ends of every live connection, so a cut can shut them down.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
}

impl Shared {
    fn close_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(PoisonError::into_inner));
        for (inbound, outbound) in open {
            let _ = inbound.shutdown(Shutdown::Both);
            let _ = outbound.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `target`.
    pub fn start(target: SocketAddr) -> Result<Self> {
        let io_error = |context: &str, source| Error::Io {
            context: format!("{context} (proxy to {target})"),
            source,
        };
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|source| io_error("binding", source))?;
        listener
            .set_nonblocking(true)
            .map_err(|source| io_error("configuring the listener", source))?;
        let addr = listener
            .local_addr()
            .map_err(|source| io_error("reading the listener's address", source))?;
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            held: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &accepting))
            .map_err(|source| io_error("starting the accept thread", source))?;
        Ok(Self { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://` and the proxy's address.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Sends new connections to `target` from now on, and closes every
    /// connection to the old one: as a Service that follows a database's
    /// primary moves to the new one after a failover.
    pub fn retarget(&self, target: SocketAddr) {
        *self
            .shared
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = target;
        self.shared.close_all();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the proxy is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Holds back what the server sends on every connection until
    /// [`release`](Proxy::release), keeping the connections open: the
    /// server runs what the clients send, and its replies reach them late,
    /// as over a link that stalls on the way back and then recovers.
    ///
    /// ```
    /// use std::io::{Read as _, Write as _};
    /// use seawall_testkit::{Proxy, RedisServer};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = RedisServer::builder().start()?;
    /// let proxy = Proxy::start(server.addr())?;
    /// let mut client = std::net::TcpStream::connect(proxy.addr())?;
    /// proxy.hold();
    /// client.write_all(b"SET held yes\r\n")?;
    /// // The server took the write, though its reply is held.
    /// seawall_testkit::wait::until("the write", || {
    ///     server.connect().and_then(|mut conn| conn.cmd(&["EXISTS", "held"])).ok()
    ///         .and_then(|reply| reply.as_int()) == Some(1)
    /// });
    /// proxy.release();
    /// let mut reply = [0_u8; 5];
    /// client.read_exact(&mut reply)?;
    /// assert_eq!(&reply, b"+OK\r\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn hold(&self) {
        self.shared.held.store(true, Ordering::SeqCst);
    }

    /// Forwards what the server sends again, what was held first.
    pub fn release(&self) {
        self.shared.held.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inbound, _)) => {
                if shared.cut.load(Ordering::SeqCst) {
                    // Dropped at once: the client sees its connection closed.
                    continue;
                }
                let target = *shared.target.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = forward(inbound, target, shared);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Connects to `target` and copies both ways on two threads until either
/// side closes or the proxy shuts the sockets down.
fn forward(inbound: TcpStream, target: SocketAddr, shared: &Arc<Shared>) -> io::Result<()> {
    inbound.set_nonblocking(false)?;
    let outbound = TcpStream::connect(target)?;
    for stream in [&inbound, &outbound] {
        stream.set_nodelay(true)?;
    }
    {
        let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        // A cut that came while connecting must not miss this connection.
        if shared.cut.load(Ordering::SeqCst) || shared.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        open.push((inbound.try_clone()?, outbound.try_clone()?));
    }
    let (client_reader, server_writer) = (inbound.try_clone()?, outbound.try_clone()?);
    thread::Builder::new()
        .name("proxy-up".into())
        .spawn(move || copy(client_reader, server_writer, None))?;
    let holder = Arc::clone(shared);
    thread::Builder::new()
        .name("proxy-down".into())
        .spawn(move || copy(outbound, inbound, Some(&holder)))?;
    Ok(())
}

/// Copies `from` to `to` until either closes; while `holder` is held, what
/// was read waits (a cut or the proxy's end shuts both down meanwhile).
fn copy(mut from: TcpStream, mut to: TcpStream, holder: Option<&Shared>) {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                while let Some(holder) = holder
                    && holder.held.load(Ordering::SeqCst)
                    && !holder.cut.load(Ordering::SeqCst)
                    && !holder.stopped.load(Ordering::SeqCst)
                {
                    thread::sleep(Duration::from_millis(1));
                }
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
