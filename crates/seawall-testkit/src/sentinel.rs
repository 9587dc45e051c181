//! A Sentinel-managed Redis: a primary, a replica and three Sentinels that
//! promote the replica when the primary stops answering.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::redis::{RedisServer, Role};
use crate::resp::Reply;

/// The name the Sentinels know the primary by.
pub const SERVICE: &str = "seawall";

/// Configures and starts a [`RedisSentinel`]. Create one with [`RedisSentinel::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisSentinelBuilder {
    down_after: Duration,
    failover_timeout: Duration,
    ready_timeout: Duration,
}

impl Default for RedisSentinelBuilder {
    fn default() -> Self {
        Self {
            down_after: Duration::from_secs(1),
            failover_timeout: Duration::from_secs(5),
            ready_timeout: crate::wait::patience(),
        }
    }
}

impl RedisSentinelBuilder {
    /// How long the primary may be silent before the Sentinels call it down
    /// (`down-after-milliseconds`, default 1 s).
    pub fn down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// `failover-timeout` (default 5 s).
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// Starts the primary, its replica and three Sentinels (quorum two), and
    /// waits until the replica is attached and every Sentinel knows both.
    pub fn start(self) -> Result<RedisSentinel> {
        let primary = RedisServer::builder().start()?;
        let replica = primary.start_replica(self.ready_timeout)?;
        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            sentinels.push(
                RedisServer::builder()
                    .sentinel([
                        format!("monitor {SERVICE} 127.0.0.1 {} 2", primary.port()),
                        format!(
                            "down-after-milliseconds {SERVICE} {}",
                            self.down_after.as_millis()
                        ),
                        format!(
                            "failover-timeout {SERVICE} {}",
                            self.failover_timeout.as_millis()
                        ),
                    ])
                    .start()?,
            );
        }
        let set = RedisSentinel {
            servers: vec![primary, replica],
            sentinels,
        };
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let problem = set.problem();
            let Some(problem) = problem else {
                return Ok(set);
            };
            if Instant::now() >= deadline {
                return Err(Error::ClusterNotReady {
                    waited: self.ready_timeout,
                    problem,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A primary and a replica under three Sentinels, on `127.0.0.1`; every
/// process stops when it is dropped.
///
/// ```no_run
/// use seawall_testkit::RedisSentinel;
///
/// # fn main() -> seawall_testkit::Result<()> {
/// let mut sentinel = RedisSentinel::start()?;
/// let url = sentinel.url(); // redis-sentinel://…?sentinelServiceName=seawall&node=…
/// let old = sentinel.kill_primary()?;
/// let new = sentinel.wait_for_new_primary(old, seawall_testkit::wait::patience())?;
/// assert_ne!(old, new);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    /// The primary, then the replica, as they started.
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinel {
    /// Starts one with the default settings.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder.
    pub fn builder() -> RedisSentinelBuilder {
        RedisSentinelBuilder::default()
    }

    /// The data servers: the one that started as primary, then its replica.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The data servers, mutably, to kill or restart them.
    pub fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.servers
    }

    /// The Sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// A `redis-sentinel://` URL naming every Sentinel and the service.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.sentinels[1..]
            .iter()
            .map(|sentinel| format!("&node={}", sentinel.addr()))
            .collect();
        format!(
            "redis-sentinel://{}/0?sentinelServiceName={SERVICE}{}",
            self.sentinels[0].addr(),
            nodes.concat()
        )
    }

    /// The primary's address, as the first Sentinel that answers says.
    pub fn primary(&self) -> Result<SocketAddr> {
        let mut last = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let reply = sentinel
                .connect()
                .and_then(|mut conn| conn.cmd(&["SENTINEL", "get-master-addr-by-name", SERVICE]))
                .and_then(Reply::into_result);
            match reply {
                Ok(reply) => {
                    let addr = reply.as_array().and_then(|items| {
                        let host = items.first()?.as_str()?;
                        let port = items.get(1)?.as_str()?;
                        format!("{host}:{port}").parse().ok()
                    });
                    return addr.ok_or_else(|| Error::UnexpectedReply {
                        command: String::from("SENTINEL get-master-addr-by-name"),
                        reply: reply.to_string(),
                    });
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::NotRunning {
            what: String::from("a Sentinel"),
        }))
    }

    /// SIGKILLs the current primary and returns its address.
    pub fn kill_primary(&mut self) -> Result<SocketAddr> {
        let primary = self.primary()?;
        let server = self
            .servers
            .iter_mut()
            .find(|server| server.addr() == primary)
            .ok_or_else(|| Error::NotRunning {
                what: format!("the primary on {primary}"),
            })?;
        server.kill()?;
        Ok(primary)
    }

    /// Starts a killed data server again; the Sentinels make it a replica of
    /// the current primary.
    pub fn restart(&mut self, addr: SocketAddr) -> Result<()> {
        let server = self
            .servers
            .iter_mut()
            .find(|server| server.addr() == addr)
            .ok_or_else(|| Error::NotRunning {
                what: format!("a Redis server on {addr}"),
            })?;
        server.restart()
    }

    /// Waits until the Sentinels name a primary other than `old` that says
    /// it is one, and returns it.
    pub fn wait_for_new_primary(&self, old: SocketAddr, timeout: Duration) -> Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(primary) = self.primary()
                && primary != old
                && self
                    .servers
                    .iter()
                    .find(|server| server.addr() == primary)
                    .is_some_and(|server| server.role().ok() == Some(Role::Master))
            {
                return Ok(primary);
            }
            if Instant::now() >= deadline {
                return Err(Error::ClusterNotReady {
                    waited: timeout,
                    problem: format!("the Sentinels still name {old} (or nobody) as primary"),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `None` when the replica is attached and every Sentinel knows the
    /// primary and the replica; otherwise what is missing.
    fn problem(&self) -> Option<String> {
        if !self.servers[1].is_linked_replica() {
            return Some(String::from("the replica is not attached"));
        }
        for sentinel in &self.sentinels {
            let known = sentinel
                .connect()
                .and_then(|mut conn| conn.cmd(&["SENTINEL", "replicas", SERVICE]))
                .is_ok_and(|reply| {
                    reply
                        .as_array()
                        .is_some_and(|replicas| !replicas.is_empty())
                });
            let peers = sentinel
                .connect()
                .and_then(|mut conn| conn.cmd(&["SENTINEL", "sentinels", SERVICE]))
                .is_ok_and(|reply| reply.as_array().is_some_and(|peers| peers.len() == 2));
            if !known || !peers {
                return Some(format!(
                    "the Sentinel on {} does not know the replica and both other Sentinels yet",
                    sentinel.addr()
                ));
            }
        }
        None
    }
}
