//! Throwaway standalone `redis-server` processes.
//!
//! # TLS servers and the control path
//!
//! A server built with [`RedisServerBuilder::tls`] has no plain-text TCP port at all
//! (`port 0`), so a client that forgets TLS fails instead of silently working. The
//! testkit's own traffic (the readiness `PING`, [`RedisServer::connect`],
//! [`RedisServer::role`]) still needs a way in; of the options:
//!
//! - teaching the blocking [`Conn`] TLS would add `rustls` (and a certificate verifier)
//!   to a client whose job is inspecting state, and duplicate what the code under test
//!   already does;
//! - shelling out to `redis-cli --tls --cacert ...` would cost a process per command
//!   and lose [`Conn`]'s typed replies, pipelining and timeouts;
//! - listening on a unix socket in the server's dir (`unixsocket`, `unixsocketperm 700`)
//!   keeps [`Conn`] plain, is reachable only by this user and never by a TCP client.
//!
//! The testkit takes the unix socket. Kill, restart and pause are signals and need no
//! connection.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::error::{Error, Result, io_err};
use crate::hosts::Host;
use crate::process::{self, Spawn, StopSignal, Supervised};
use crate::resp::{Conn, DEFAULT_TIMEOUT, Reply};
use crate::tls::{TlsFiles, TlsMaterial};

pub(crate) const INSTALL_REDIS: &str = "apt-get install -y redis-server";

/// How often a free-port race (another process binding our port first) is retried.
const PORT_ATTEMPTS: u32 = 5;

/// The control socket of a TLS server, in its dir.
const UNIX_SOCKET_FILE: &str = "redis.sock";

/// The longest path a unix socket address holds (`sun_path` is 108 bytes with its NUL).
/// Redis silently truncates a longer one, so it is checked before starting.
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Where `redis-server` and `redis-cli` are looked for after `$PATH`.
pub(crate) fn redis_bin_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")]
}

/// What a server writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Persistence {
    /// No RDB snapshots, no AOF (`save ""`, `appendonly no`): nothing survives a restart.
    #[default]
    Off,
    /// AOF with `appendfsync always`: every acknowledged write survives a SIGKILL.
    AofAlways,
    /// AOF with `appendfsync everysec`: up to about a second of writes may be lost on SIGKILL.
    AofEverySec,
}

/// A server's replication role, as reported by `ROLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A master (primary).
    Master,
    /// A replica of some master.
    Replica,
}

/// Cluster-node settings, set by [`crate::RedisClusterBuilder`].
#[derive(Debug, Clone)]
pub(crate) struct ClusterNodeSettings {
    pub(crate) node_timeout: Duration,
}

/// Configures and starts a [`RedisServer`]. Create one with [`RedisServer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisServerBuilder {
    persistence: Persistence,
    password: Option<String>,
    port: Option<u16>,
    config: Vec<(String, String)>,
    startup_timeout: Duration,
    binary: Option<PathBuf>,
    tls: bool,
    cluster: Option<ClusterNodeSettings>,
    sentinel: bool,
    /// Lines written to the configuration as they are, after the rest.
    raw: Vec<String>,
    host: Option<Host>,
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        Self {
            persistence: Persistence::Off,
            password: None,
            port: None,
            config: Vec::new(),
            startup_timeout: crate::wait::patience(),
            binary: None,
            tls: false,
            cluster: None,
            sentinel: false,
            raw: Vec::new(),
            host: None,
        }
    }
}

impl RedisServerBuilder {
    /// What the server persists (default [`Persistence::Off`]).
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// Sets `requirepass`; [`RedisServer::connect`] and [`RedisServer::url`] then include it.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Uses this port instead of picking a free one. A taken port is then an error
    /// rather than a retry on another port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Adds a raw `redis.conf` directive, e.g. `.config("maxmemory", "10mb")`.
    /// Later directives override earlier ones and the builder's own settings.
    pub fn config(mut self, directive: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((directive.into(), value.into()));
        self
    }

    /// How long to wait for the server to answer `PING` (default
    /// [`wait::patience`](crate::wait::patience): a loaded machine can take
    /// many times longer than a quiet one to start a server).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Runs this `redis-server` executable instead of searching `$PATH`, `/usr/bin`
    /// and `/usr/local/bin`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Serves TLS only: the port speaks TLS (`tls-port`, with `port 0`), so a plain-text
    /// client gets no reply. The server certificate is for `localhost` and `127.0.0.1`
    /// and is signed by a throwaway CA, generated once per test process; clients verify
    /// it with [`RedisServer::ca_cert_path`] (or [`ca_cert_pem`](RedisServer::ca_cert_pem)
    /// / [`ca_cert_der`](RedisServer::ca_cert_der)) and need no certificate of their own
    /// (`tls-auth-clients no`). [`RedisServer::url`] then starts with `rediss://`.
    ///
    /// The testkit's own connections ([`RedisServer::connect`], the readiness `PING`)
    /// use a unix socket in the server's dir instead of the TLS port.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Runs the server as a Sentinel (`--sentinel`) with these `sentinel ...`
    /// lines (each several words, written unquoted).
    pub(crate) fn sentinel(mut self, lines: impl IntoIterator<Item = String>) -> Self {
        self.sentinel = true;
        self.raw
            .extend(lines.into_iter().map(|line| format!("sentinel {line}")));
        self
    }

    /// Runs the server in a [`Host`] of a [`crate::Network`], listening on the
    /// host's address (port 6379 unless [`port`](Self::port) says otherwise);
    /// a cluster node announces that address. Not with [`tls`](Self::tls),
    /// whose certificate names loopback only.
    pub fn host(mut self, host: &Host) -> Self {
        self.host = Some(host.clone());
        self
    }

    pub(crate) fn cluster_node(mut self, settings: ClusterNodeSettings) -> Self {
        self.cluster = Some(settings);
        self
    }

    /// Starts the server and waits until it answers `PING`.
    pub fn start(self) -> Result<RedisServer> {
        let binary = process::resolve_binary(
            self.binary.clone(),
            "redis-server",
            &redis_bin_dirs(),
            INSTALL_REDIS,
        )?;
        let dir = tempfile::Builder::new()
            .prefix("seawall-redis-")
            .tempdir()
            .map_err(io_err("creating a temp dir for redis-server"))?;
        let tls = if self.tls {
            Some(ServerTls::prepare(dir.path())?)
        } else {
            None
        };
        let with_bus = self.cluster.is_some();
        // A host's ports are its own: the default one is free.
        let port = self
            .port
            .or_else(|| self.host.as_ref().map(|_| DEFAULT_HOST_PORT));
        let attempts = if port.is_some() { 1 } else { PORT_ATTEMPTS };
        let mut server = RedisServer {
            port: 0,
            ip: self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, Host::addr),
            netns: self.host.as_ref().map(|host| host.netns().to_owned()),
            password: self.password.clone(),
            binary,
            startup_timeout: self.startup_timeout,
            proc: None,
            live_pid: Arc::new(AtomicU32::new(0)),
            tls,
            sentinel: self.sentinel,
            attached: false,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = match port {
                Some(port) => port,
                None => process::pick_port(with_bus)?,
            };
            let conf = self.render_config(
                server.ip,
                server.port,
                server.dir.path(),
                server.tls.as_ref(),
            );
            std::fs::write(server.config_path(), conf).map_err(io_err(format!(
                "writing {}",
                server.config_path().display()
            )))?;
            // A fresh log per attempt, so a retry's error shows that attempt's failure.
            let _ = std::fs::remove_file(server.log_path());
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                // Another process bound the port between our check and the server's bind.
                Err(Error::Exited { log_tail, .. })
                    if attempt < attempts && log_tail.contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn render_config(
        &self,
        ip: Ipv4Addr,
        port: u16,
        dir: &Path,
        tls: Option<&ServerTls>,
    ) -> String {
        let mut lines = match tls {
            None => vec![(String::from("port"), port.to_string())],
            Some(tls) => vec![
                // No plain-text TCP listener at all.
                (String::from("port"), String::from("0")),
                ("tls-port".into(), port.to_string()),
                ("tls-cert-file".into(), path_value(&tls.files.server_cert)),
                ("tls-key-file".into(), path_value(&tls.files.server_key)),
                ("tls-ca-cert-file".into(), path_value(&tls.files.ca_cert)),
                ("tls-auth-clients".into(), "no".into()),
                ("unixsocket".into(), path_value(&tls.socket)),
                ("unixsocketperm".into(), "700".into()),
            ],
        };
        lines.extend([
            ("bind".into(), ip.to_string()),
            ("dir".into(), dir.display().to_string()),
            ("daemonize".into(), "no".into()),
            // Logging to stdout lands in redis.log via the supervisor's redirect.
            ("logfile".into(), String::new()),
            ("save".into(), String::new()),
            ("enable-debug-command".into(), "local".into()),
        ]);
        let fsync = match self.persistence {
            Persistence::Off => None,
            Persistence::AofAlways => Some("always"),
            Persistence::AofEverySec => Some("everysec"),
        };
        match fsync {
            None => lines.push(("appendonly".into(), "no".into())),
            Some(fsync) => {
                lines.push(("appendonly".into(), "yes".into()));
                lines.push(("appendfsync".into(), fsync.into()));
            }
        }
        if let Some(password) = &self.password {
            lines.push(("requirepass".into(), password.clone()));
        }
        if self.host.is_some() {
            // Clients come from other hosts; the network ends at the bridge.
            lines.push(("protected-mode".into(), "no".into()));
        }
        if let Some(cluster) = &self.cluster {
            lines.push(("cluster-enabled".into(), "yes".into()));
            lines.push(("cluster-config-file".into(), "nodes.conf".into()));
            lines.push((
                "cluster-node-timeout".into(),
                cluster.node_timeout.as_millis().to_string(),
            ));
            // The 7.0 default waits 5 s before a diskless full sync, which would make
            // every replica take 5 s to attach.
            lines.push(("repl-diskless-sync-delay".into(), "0".into()));
            if self.host.is_some() {
                // The address the slot map gives clients and the other nodes.
                lines.push(("cluster-announce-ip".into(), ip.to_string()));
            }
            if let Some(password) = &self.password {
                lines.push(("masterauth".into(), password.clone()));
            }
        }
        lines.extend(self.config.iter().cloned());
        let mut out = String::new();
        for (directive, value) in lines {
            let _ = writeln!(out, "{directive} {}", quote_config(&value));
        }
        for line in &self.raw {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

fn path_value(path: &Path) -> String {
    path.display().to_string()
}

/// A TLS server's certificate files and control socket, all in its dir.
#[derive(Debug)]
struct ServerTls {
    material: Arc<TlsMaterial>,
    files: TlsFiles,
    socket: PathBuf,
}

impl ServerTls {
    fn prepare(dir: &Path) -> Result<Self> {
        let socket = dir.join(UNIX_SOCKET_FILE);
        let len = socket.as_os_str().len();
        if len > MAX_UNIX_SOCKET_PATH {
            return Err(Error::Io {
                context: format!(
                    "placing the control socket of a TLS redis-server at {}",
                    socket.display()
                ),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "the path is {len} bytes, a unix socket allows {MAX_UNIX_SOCKET_PATH}; \
                         point TMPDIR at a shorter dir"
                    ),
                ),
            });
        }
        let material = TlsMaterial::shared()?;
        let files = material.write_to(dir)?;
        Ok(Self {
            material,
            files,
            socket,
        })
    }
}

/// Quotes a value for `redis.conf`, whose parser understands C-style escapes in "...".
fn quote_config(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Percent-encodes a URL userinfo component.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The port of a server on a [`Host`] unless the builder names another.
const DEFAULT_HOST_PORT: u16 = 6379;

/// A `redis-server` process on a free `127.0.0.1` port (or on a [`Host`]'s
/// address), in its own temp dir.
///
/// The process is SIGKILLed and the dir deleted on drop, including during a panic.
/// If the test process itself dies, the server's supervisor kills it (see the crate docs).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    ip: Ipv4Addr,
    /// The namespace of the [`Host`] it runs in.
    netns: Option<String>,
    password: Option<String>,
    binary: PathBuf,
    startup_timeout: Duration,
    proc: Option<Supervised>,
    /// The running server's pid, or 0; lets a background resume skip a server that
    /// has since been killed, whose pid the OS might have reused.
    live_pid: Arc<AtomicU32>,
    tls: Option<ServerTls>,
    sentinel: bool,
    /// Started by another process ([`shared`](Self::shared) under
    /// [`SHARED_REDIS_ENV`]): this handle neither stops nor restarts it.
    attached: bool,
    // Declared last so the process is gone before its dir is deleted.
    dir: TempDir,
}

/// The variable naming a running server (`host:port`) that
/// [`RedisServer::shared`] uses instead of starting one, so that tests run
/// one process each (as `cargo nextest` runs them) share one server, as
/// the tests of one binary under `cargo test` do. The `seawall-testkit-shared`
/// binary starts one and prints the variable.
pub const SHARED_REDIS_ENV: &str = "SEAWALL_TESTKIT_REDIS";

impl RedisServer {
    /// Starts a server with default settings (no persistence, no password).
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// One default server per test process, started on first use and
    /// shared by every test in it (each should use keys of its own; never
    /// kill or restart it).
    ///
    /// # Panics
    ///
    /// When the server cannot start (see [`start`](Self::start)): the error
    /// says what to install.
    ///
    /// Where [`SHARED_REDIS_ENV`] names a running server, the handle is
    /// that server's, shared with other test processes.
    pub fn shared() -> &'static Self {
        static SERVER: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
        SERVER.get_or_init(|| {
            if let Some(addr) = std::env::var_os(SHARED_REDIS_ENV) {
                return match Self::attached(&addr.to_string_lossy()) {
                    Ok(server) => server,
                    Err(error) => panic!("{SHARED_REDIS_ENV}: {error}"),
                };
            }
            match Self::start() {
                Ok(server) => server,
                Err(error) => panic!("the shared redis-server cannot start: {error}"),
            }
        })
    }

    /// A handle on a server another process started and stops, at `addr`
    /// (`127.0.0.1:port`), without a password: it answers `PING` or this
    /// fails.
    pub(crate) fn attached(addr: &str) -> Result<Self> {
        let addr: SocketAddr = addr.trim().parse().map_err(|_| Error::Unsupported {
            what: format!("not an address (host:port): {addr:?}"),
        })?;
        let SocketAddr::V4(v4) = addr else {
            return Err(Error::Unsupported {
                what: format!("not an IPv4 address: {addr}"),
            });
        };
        let server = RedisServer {
            port: v4.port(),
            ip: *v4.ip(),
            netns: None,
            password: None,
            binary: PathBuf::new(),
            startup_timeout: Duration::ZERO,
            proc: None,
            live_pid: Arc::new(AtomicU32::new(0)),
            tls: None,
            sentinel: false,
            attached: true,
            dir: tempfile::Builder::new()
                .prefix("seawall-redis-attached-")
                .tempdir()
                .map_err(io_err("creating a temp dir for an attached redis-server"))?,
        };
        server.connect()?.cmd(&["PING"])?.into_result()?;
        Ok(server)
    }

    /// A builder for a server with non-default settings.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The TCP port (for a [TLS](RedisServerBuilder::tls) server, its TLS port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, or the [host](RedisServerBuilder::host)'s address and port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// `redis://127.0.0.1:port`, or `redis://:password@127.0.0.1:port` with a password;
    /// the scheme is `rediss://` for a [TLS](RedisServerBuilder::tls) server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(password) => format!("{scheme}://:{}@{}", percent_encode(password), self.addr()),
            None => format!("{scheme}://{}", self.addr()),
        }
    }

    /// Whether the server serves TLS only (see [`RedisServerBuilder::tls`]).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The PEM file of the CA that signed a [TLS](RedisServerBuilder::tls) server's
    /// certificate, in the server's dir; `None` for a plain-text server.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.files.ca_cert.as_path())
    }

    /// The CA certificate of a [TLS](RedisServerBuilder::tls) server, PEM-encoded.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|tls| tls.material.ca_cert_pem())
    }

    /// The CA certificate of a [TLS](RedisServerBuilder::tls) server, DER-encoded
    /// (what a `rustls` root store takes).
    pub fn ca_cert_der(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|tls| tls.material.ca_cert_der())
    }

    /// The `requirepass` password, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's working dir (`dir`), holding its config, log, AOF and `nodes.conf`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file (its stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last `lines` lines of the server's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path(), lines)
    }

    /// The `redis-server` process id, or `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Supervised::pid)
    }

    /// Whether the process is running (a paused process counts as running).
    pub fn is_running(&self) -> bool {
        self.attached || self.proc.as_ref().is_some_and(Supervised::is_alive)
    }

    /// Opens a connection, authenticated if the server has a password. A
    /// [TLS](RedisServerBuilder::tls) server is reached over its unix socket, in plain text.
    pub fn connect(&self) -> Result<Conn> {
        let mut conn = self.control_conn(DEFAULT_TIMEOUT)?;
        if let Some(password) = &self.password {
            conn.auth(password)?;
        }
        Ok(conn)
    }

    fn control_conn(&self, timeout: Duration) -> Result<Conn> {
        match &self.tls {
            None => Conn::connect_timeout(self.addr(), timeout),
            Some(tls) => Conn::connect_unix(&tls.socket, self.addr(), timeout),
        }
    }

    /// Whether this server is a replica whose link to its primary is up.
    pub fn is_linked_replica(&self) -> bool {
        self.connect()
            .and_then(|mut conn| conn.cmd(&["INFO", "replication"]))
            .is_ok_and(|info| {
                info.as_str()
                    .unwrap_or_default()
                    .contains("master_link_status:up")
            })
    }

    /// Starts a replica of this server (`replicaof`) and waits until its
    /// link is up, at most `timeout`.
    pub fn start_replica(&self, timeout: Duration) -> Result<RedisServer> {
        let replica = RedisServer::builder()
            .config("replicaof", format!("{} {}", self.ip, self.port()))
            .start()?;
        let deadline = Instant::now() + timeout;
        while !replica.is_linked_replica() {
            if Instant::now() >= deadline {
                return Err(Error::ClusterNotReady {
                    waited: timeout,
                    problem: format!("the replica of {} never synced", self.addr()),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(replica)
    }

    /// Asks the server for its replication role (`ROLE`).
    pub fn role(&self) -> Result<Role> {
        let reply = self.connect()?.cmd(&["ROLE"])?.into_result()?;
        match reply
            .as_array()
            .and_then(|items| items.first())
            .and_then(Reply::as_str)
        {
            Some("master") => Ok(Role::Master),
            Some("slave") => Ok(Role::Replica),
            _ => Err(Error::UnexpectedReply {
                command: String::from("ROLE"),
                reply: reply.to_string(),
            }),
        }
    }

    /// SIGKILLs the server and waits until it is dead. Its port and dir are kept for
    /// [`restart`](Self::restart). Killing a killed server does nothing.
    pub fn kill(&mut self) -> Result<()> {
        self.live_pid.store(0, Ordering::SeqCst);
        match self.proc.take() {
            Some(proc) => proc.stop(),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port with the same dir and config, so an AOF
    /// (or a cluster node's `nodes.conf`) is reloaded, and waits until it answers `PING`.
    /// A TLS server keeps its certificate files. A still-running server is killed first.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_and_wait()
    }

    /// Freezes the server with SIGSTOP for `duration`, then resumes it with SIGCONT;
    /// returns after the resume. Connections stay open but get no answers meanwhile.
    pub fn pause(&self, duration: Duration) -> Result<()> {
        let proc = self.running()?;
        proc.signal(Signal::SIGSTOP)?;
        thread::sleep(duration);
        proc.signal(Signal::SIGCONT)
    }

    /// Freezes the server with SIGSTOP and returns at once; a background thread resumes
    /// it after `duration`. Dropping the returned [`Pause`] does not cut the pause short.
    pub fn pause_in_background(&self, duration: Duration) -> Result<Pause> {
        let proc = self.running()?;
        proc.signal(Signal::SIGSTOP)?;
        Ok(Pause::spawn(
            proc.pid(),
            Arc::clone(&self.live_pid),
            duration,
        ))
    }

    fn running(&self) -> Result<&Supervised> {
        self.proc
            .as_ref()
            .ok_or_else(|| Error::NotRunning { what: self.what() })
    }

    fn what(&self) -> String {
        let tls = if self.tls.is_some() { " (TLS)" } else { "" };
        format!("redis-server{tls} on {}", self.addr())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let mut args = vec![OsString::from(self.config_path())];
        if self.sentinel {
            args.push(OsString::from("--sentinel"));
        }
        let log = self.log_path();
        let proc = Supervised::spawn(&Spawn {
            netns: self.netns.as_deref(),
            ..Spawn::server(&self.binary, &args, self.dir.path(), &log, StopSignal::Kill)
        })?;
        let proc = process::await_ready(
            proc,
            self.startup_timeout,
            self.what(),
            &self.log_path(),
            || self.probe(),
        )?;
        self.live_pid.store(proc.pid(), Ordering::SeqCst);
        self.proc = Some(proc);
        Ok(())
    }

    /// One readiness check: connect, authenticate, `PING`. Redis binds a TLS server's
    /// TLS port before its unix socket, so a `PONG` over the socket means both are up.
    fn probe(&self) -> Result<(), String> {
        let mut conn = self
            .control_conn(Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        if let Some(password) = &self.password {
            conn.auth(password).map_err(|e| e.to_string())?;
        }
        match conn.cmd(&["PING"]).map_err(|e| e.to_string())? {
            Reply::Simple(pong) if pong == "PONG" => Ok(()),
            // e.g. LOADING while an AOF is replayed.
            other => Err(format!("PING answered {other}")),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A server frozen by [`RedisServer::pause_in_background`]; it resumes when the pause
/// ends, when [`resume`](Self::resume) is called, or, if the server is killed first, never.
#[derive(Debug)]
pub struct Pause {
    wake: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    until: Instant,
}

impl Pause {
    fn spawn(pid: u32, live_pid: Arc<AtomicU32>, duration: Duration) -> Self {
        let until = Instant::now() + duration;
        let (wake, woken) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if let Err(RecvTimeoutError::Disconnected) = woken.recv_timeout(duration) {
                // The handle was dropped: keep the promised pause length.
                thread::sleep(until.saturating_duration_since(Instant::now()));
            }
            if live_pid.load(Ordering::SeqCst) == pid {
                let _ = process::send_signal(pid, Signal::SIGCONT);
            }
        });
        Self {
            wake,
            thread: Some(thread),
            until,
        }
    }

    /// When the server will be resumed.
    pub fn until(&self) -> Instant {
        self.until
    }

    /// Blocks until the server has been resumed.
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Resumes the server now and returns once it has been sent SIGCONT.
    pub fn resume(mut self) {
        let _ = self.wake.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
