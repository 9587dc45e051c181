//! Real, throwaway servers for seawall's tests: `redis-server` (plain or TLS-only),
//! Redis Cluster, a Sentinel-managed primary and replica ([`RedisSentinel`]),
//! PostgreSQL and HAProxy ([`Haproxy`]) processes on free `127.0.0.1` ports, fault
//! injection (kill, restart, pause, and a TCP [`Proxy`] that cuts one client off), a
//! tiny blocking RESP2 client for inspecting Redis state, network hosts in Linux
//! network namespaces with partitions between them ([`Network`]), and a whole
//! deployment ([`Fleet`]: Redis, PostgreSQL, API instances, workers and HAProxy, on
//! loopback or each on a host of its own) that the fleet drills and `scripts/fleet`
//! run. [`tracing_capture`] records what a library tells a `tracing` subscriber;
//! [`wait`] polls for a state a test can observe, naming it when it never comes.
//! [`unique_prefix`] names a test's keys apart from every other test's on a
//! shared server, and, with the `fred` feature, `client` connects to one as
//! the libraries' tests do.
//!
//! ```
//! use std::time::Duration;
//! use seawall_testkit::{Persistence, RedisServer, Reply};
//!
//! # fn main() -> seawall_testkit::Result<()> {
//! let mut server = RedisServer::builder()
//!     .persistence(Persistence::AofAlways)
//!     .password("s3cret")
//!     .start()?;
//! assert!(server.url().starts_with("redis://:s3cret@127.0.0.1:"));
//!
//! let mut conn = server.connect()?; // already authenticated
//! assert_eq!(conn.cmd(&["SET", "greeting", "hello"])?, Reply::Simple("OK".into()));
//!
//! server.kill()?; // SIGKILL
//! assert!(server.connect().is_err());
//! server.restart()?; // same port and dir, so the AOF is replayed
//! assert_eq!(server.connect()?.cmd(&["GET", "greeting"])?.as_str(), Some("hello"));
//!
//! server.pause(Duration::from_millis(50))?; // SIGSTOP, then SIGCONT
//! # Ok(())
//! # }
//! ```
//!
//! # Shared servers
//!
//! [`RedisServer::shared`] and [`RedisCluster::shared`] hand every test of a
//! process the same server, started on first use. Where each test is a
//! process of its own (`cargo nextest`), `seawall-testkit-shared` starts one
//! server and one cluster for the whole run and prints [`SHARED_REDIS_ENV`]
//! and [`SHARED_CLUSTER_ENV`]; with those set, `shared()` attaches to them
//! instead of starting its own (`scripts/test` does this).
//!
//! # TLS
//!
//! [`RedisServerBuilder::tls`] starts a server that speaks TLS only on its port, with a
//! certificate for `localhost` and `127.0.0.1` signed by a throwaway CA (generated
//! in-process with `rcgen`, once per test process). Point the client under test at
//! [`RedisServer::url`] and have it trust [`RedisServer::ca_cert_path`]:
//!
//! ```
//! use seawall_testkit::RedisServer;
//!
//! # fn main() -> seawall_testkit::Result<()> {
//! let mut server = RedisServer::builder().tls().password("s3cret").start()?;
//! assert!(server.url().starts_with("rediss://:s3cret@127.0.0.1:"));
//! assert!(server.ca_cert_path().is_some_and(|ca| ca.is_file()));
//!
//! // The testkit's own connections go over a unix socket in the server's dir, in
//! // plain text; the TCP port answers only a TLS client.
//! assert_eq!(server.connect()?.cmd(&["PING"])?.as_str(), Some("PONG"));
//!
//! server.kill()?;
//! server.restart()?; // same port, same certificate files
//! # Ok(())
//! # }
//! ```
//!
//! # Requirements
//!
//! `redis-server` and `redis-cli` (`apt-get install -y redis-server`) and, for
//! [`Postgres`], the PostgreSQL server binaries (`apt-get install -y postgresql`), or the
//! project's `scripts/setup`. When one is missing, starting fails with
//! [`Error::MissingBinary`], whose message says what to install; nothing is skipped.
//! [TLS](RedisServerBuilder::tls) needs a `redis-server` built with TLS, as Debian's is.
//!
//! # Cleanup
//!
//! Every server is stopped and its temp dir deleted when its handle is dropped, which
//! also happens while a failing test unwinds. So that a server cannot outlive a test
//! process that is killed outright (SIGKILL, a CI timeout), it is started by a small
//! `sh` supervisor whose stdin is a pipe from the test process: the supervisor starts
//! the server in the background, reports its pid and blocks reading stdin. When the
//! test process exits for any reason the kernel closes the pipe, the read returns and
//! the supervisor kills the server.
//!
//! A [`Network`]'s namespaces, bridge and veths are removed when it is dropped, and
//! by a janitor process (the same pipe trick) when its owner dies first.
//!
//! # Network hosts
//!
//! [`Network`] needs root, `ip` (iproute2) and `nft` (nftables). A server is put on
//! one of its hosts with its builder's `host` ([`RedisServerBuilder::host`],
//! [`RedisClusterBuilder::hosts`], [`PostgresBuilder::host`], [`HaproxyBuilder::host`])
//! and then listens on the host's address, on its standard port; a whole fleet with
//! [`FleetBuilder::hosts`].
//!
//! # Ports
//!
//! Ports are picked at random from 12000..22000 (so a cluster node's bus port, port +
//! 10000, is free and below the kernel's ephemeral range too), never 6379. If another
//! process takes the port before the server binds it, the start is retried on a new one,
//! so tests can start servers in parallel. A server on a network host has the host's
//! ports to itself and takes its standard one.

#[cfg(feature = "fred")]
pub mod client;
mod cluster;
mod error;
mod fleet;
mod haproxy;
mod hosts;
pub mod http;
mod otlp;
mod postgres;
mod prefix;
mod process;
mod proxy;
mod redis;
mod resp;
mod sentinel;
mod tls;
pub mod tracing_capture;
pub mod wait;

pub use cluster::{RedisCluster, RedisClusterBuilder, SHARED_CLUSTER_ENV, SLOT_COUNT, key_slot};
pub use error::{Error, Result};
pub use fleet::{
    DEFAULT_TOKEN, Fleet, FleetBuilder, FleetHost, FleetRedis, HostRole, ProcessState,
    workspace_binary,
};
pub use haproxy::{Haproxy, HaproxyBuilder, ServerState};
pub use hosts::{Host, Network};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::{Postgres, PostgresBuilder};
pub use prefix::unique_prefix;
pub use proxy::Proxy;
pub use redis::{Pause, Persistence, RedisServer, RedisServerBuilder, Role, SHARED_REDIS_ENV};
pub use resp::{Conn, DEFAULT_TIMEOUT, Reply};
pub use sentinel::{RedisSentinel, RedisSentinelBuilder, SERVICE as SENTINEL_SERVICE};
