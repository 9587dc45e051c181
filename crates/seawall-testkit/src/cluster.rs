//! Throwaway Redis Clusters formed with `redis-cli --cluster create`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result, io_err};
use crate::hosts::Host;
use crate::process;
use crate::redis::{
    ClusterNodeSettings, INSTALL_REDIS, Persistence, RedisServer, RedisServerBuilder, Role,
    redis_bin_dirs,
};
use crate::resp::Reply;

/// The number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The hash slot of `key`, honouring `{hash tags}` the way Redis Cluster does.
///
/// ```
/// assert_eq!(seawall_testkit::key_slot(b"foo"), 12182);
/// assert_eq!(seawall_testkit::key_slot(b"{user1}.a"), seawall_testkit::key_slot(b"user1"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            // An empty tag ("{}") does not count: the whole key is hashed.
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOT_COUNT
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Configures and starts a [`RedisCluster`]. Create one with [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas: usize,
    password: Option<String>,
    node_timeout: Duration,
    persistence: Persistence,
    ready_timeout: Duration,
    server_binary: Option<PathBuf>,
    cli_binary: Option<PathBuf>,
    hosts: Vec<Host>,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas: 0,
            password: None,
            node_timeout: Duration::from_secs(2),
            persistence: Persistence::Off,
            ready_timeout: crate::wait::patience(),
            server_binary: None,
            cli_binary: None,
            hosts: Vec::new(),
        }
    }
}

impl RedisClusterBuilder {
    /// Number of masters (default 3, the minimum `redis-cli --cluster create` accepts).
    pub fn masters(mut self, masters: usize) -> Self {
        self.masters = masters;
        self
    }

    /// Replicas per master (default 0).
    pub fn replicas_per_master(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets `requirepass` (and `masterauth`) on every node.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// `cluster-node-timeout` (default 2 s, short so failover tests stay quick).
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// What every node persists (default [`Persistence::Off`]).
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// How long to wait for the cluster to be formed and healthy (default
    /// [`wait::patience`](crate::wait::patience)).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Runs this `redis-server` executable instead of searching for one.
    pub fn server_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.server_binary = Some(path.into());
        self
    }

    /// Runs this `redis-cli` executable instead of searching for one.
    pub fn cli_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.cli_binary = Some(path.into());
        self
    }

    /// Runs node `i` (in [`nodes`](RedisCluster::nodes) order) on `hosts[i]`, on port 6379 of the host's
    /// address, which it announces. Give one host per node.
    pub fn hosts(mut self, hosts: &[Host]) -> Self {
        self.hosts = hosts.to_vec();
        self
    }

    /// Starts the nodes, forms the cluster and waits until every node reports
    /// `cluster_state:ok` and every replica is attached to its master.
    pub fn start(self) -> Result<RedisCluster> {
        let cli = process::resolve_binary(
            self.cli_binary.clone(),
            "redis-cli",
            &redis_bin_dirs(),
            INSTALL_REDIS,
        )?;
        let dir = tempfile::Builder::new()
            .prefix("seawall-redis-cluster-")
            .tempdir()
            .map_err(io_err("creating a temp dir for the redis cluster"))?;
        let total = self.masters * (1 + self.replicas);
        let mut node_builder = RedisServer::builder()
            .persistence(self.persistence)
            .cluster_node(ClusterNodeSettings {
                node_timeout: self.node_timeout,
            });
        if let Some(password) = &self.password {
            node_builder = node_builder.password(password.clone());
        }
        if let Some(binary) = &self.server_binary {
            node_builder = node_builder.binary(binary.clone());
        }
        if !self.hosts.is_empty() && self.hosts.len() != total {
            return Err(Error::Unsupported {
                what: format!(
                    "a cluster of {total} nodes was given {} hosts; give one per node",
                    self.hosts.len()
                ),
            });
        }
        let builders: Vec<RedisServerBuilder> = (0..total)
            .map(|i| match self.hosts.get(i) {
                Some(host) => node_builder.clone().host(host),
                None => node_builder.clone(),
            })
            .collect();
        let nodes = start_nodes(&builders)?;
        let mut cluster = RedisCluster {
            nodes,
            masters: Vec::new(),
            expected_masters: self.masters,
            replicas_per_master: self.replicas,
            dir,
        };
        cluster.create(&cli, self.password.as_deref(), self.ready_timeout)?;
        cluster.wait_until(self.ready_timeout, true)?;
        for (i, node) in cluster.nodes.iter().enumerate() {
            if node.role()? == Role::Master {
                cluster.masters.push(i);
            }
        }
        Ok(cluster)
    }
}

/// Starts the nodes concurrently: each start is mostly waiting for the process to come up.
fn start_nodes(builders: &[RedisServerBuilder]) -> Result<Vec<RedisServer>> {
    thread::scope(|scope| {
        let handles: Vec<_> = builders
            .iter()
            .map(|builder| scope.spawn(|| builder.clone().start()))
            .collect();
        let mut nodes = Vec::with_capacity(builders.len());
        let mut first_err = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(node)) => nodes.push(node),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(nodes),
        }
    })
}

/// The variable naming a running cluster's masters (`host:port,…`) that
/// [`RedisCluster::shared`] uses instead of starting one, as
/// [`SHARED_REDIS_ENV`](crate::SHARED_REDIS_ENV) does for a server.
pub const SHARED_CLUSTER_ENV: &str = "SEAWALL_TESTKIT_REDIS_CLUSTER";

/// A Redis Cluster of `127.0.0.1` nodes, each a [`RedisServer`] with its own dir.
///
/// All nodes are killed and their dirs deleted on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: Vec<usize>,
    expected_masters: usize,
    replicas_per_master: usize,
    // Declared last so the nodes are gone before the dir is deleted.
    dir: TempDir,
}

impl RedisCluster {
    /// Starts a cluster of 3 masters without replicas.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder for a cluster with replicas, a password or other settings.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// All nodes, in the order they were given to `redis-cli --cluster create`.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// All nodes, mutably, to [`kill`](RedisServer::kill) or
    /// [`restart`](RedisServer::restart) them.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Indices into [`nodes`](Self::nodes) of the nodes that were masters when the
    /// cluster formed. After a failover, ask [`RedisServer::role`] instead.
    pub fn master_indices(&self) -> &[usize] {
        &self.masters
    }

    /// The nodes that were masters when the cluster formed.
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.masters.iter().map(|&i| &self.nodes[i]).collect()
    }

    /// The nodes that were replicas when the cluster formed.
    pub fn replicas(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.masters.contains(i))
            .map(|(_, node)| node)
            .collect()
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// One `redis-cluster://` URL naming every node as a seed, the form
    /// fred's `Config::from_url` takes (no password: use
    /// [`seed_urls`](Self::seed_urls) for a cluster that has one).
    pub fn url(&self) -> String {
        let addrs = self.addrs();
        let others: Vec<String> = addrs[1..]
            .iter()
            .map(|addr| format!("node={addr}"))
            .collect();
        format!("redis-cluster://{}?{}", addrs[0], others.join("&"))
    }

    /// One cluster of 3 masters per test process, started on first use and
    /// shared by every test in it (each should use keys of its own).
    ///
    /// # Panics
    ///
    /// When the cluster cannot start (see [`start`](Self::start)): the
    /// error says what is missing.
    ///
    /// Where [`SHARED_CLUSTER_ENV`] names a running cluster's masters, the
    /// handle is that cluster's, shared with other test processes.
    pub fn shared() -> &'static Self {
        static CLUSTER: std::sync::OnceLock<RedisCluster> = std::sync::OnceLock::new();
        CLUSTER.get_or_init(|| {
            if let Some(addrs) = std::env::var_os(SHARED_CLUSTER_ENV) {
                return match Self::attached(&addrs.to_string_lossy()) {
                    Ok(cluster) => cluster,
                    Err(error) => panic!("{SHARED_CLUSTER_ENV}: {error}"),
                };
            }
            match Self::start() {
                Ok(cluster) => cluster,
                Err(error) => panic!("the shared Redis Cluster cannot start: {error}"),
            }
        })
    }

    /// A handle on a cluster of masters (no replicas) that another process
    /// started and stops, given as `host:port,host:port,…`.
    fn attached(addrs: &str) -> Result<Self> {
        let nodes = addrs
            .split(',')
            .map(RedisServer::attached)
            .collect::<Result<Vec<_>>>()?;
        if nodes.is_empty() {
            return Err(Error::Unsupported {
                what: String::from("no node addresses"),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("seawall-redis-cluster-attached-")
            .tempdir()
            .map_err(io_err("creating a temp dir for an attached redis cluster"))?;
        Ok(Self {
            masters: (0..nodes.len()).collect(),
            expected_masters: nodes.len(),
            replicas_per_master: 0,
            nodes,
            dir,
        })
    }

    /// Every node's `redis://` URL (with the password, if set): seed URLs for a cluster client.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The dir holding the `redis-cli --cluster create` output.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The address of the master serving `key`'s hash slot now, as a running
    /// node's `CLUSTER SLOTS` says (so after a failover, the promoted replica).
    pub fn master_of(&self, key: &str) -> Result<SocketAddr> {
        let slot = i64::from(key_slot(key.as_bytes()));
        let node = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .ok_or_else(|| Error::NotRunning {
                what: String::from("a Redis Cluster node"),
            })?;
        let reply = node.connect()?.cmd(&["CLUSTER", "SLOTS"])?.into_result()?;
        let unexpected = || Error::UnexpectedReply {
            command: String::from("CLUSTER SLOTS"),
            reply: reply.to_string(),
        };
        for range in reply.as_array().ok_or_else(unexpected)? {
            let fields = range.as_array().ok_or_else(unexpected)?;
            let (Some(start), Some(end), Some(master)) = (
                fields.first().and_then(Reply::as_int),
                fields.get(1).and_then(Reply::as_int),
                fields.get(2).and_then(Reply::as_array),
            ) else {
                return Err(unexpected());
            };
            if (start..=end).contains(&slot) {
                let ip = master
                    .first()
                    .and_then(Reply::as_str)
                    .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                    .ok_or_else(unexpected)?;
                let port = master
                    .get(1)
                    .and_then(Reply::as_int)
                    .and_then(|port| u16::try_from(port).ok())
                    .ok_or_else(unexpected)?;
                return Ok(SocketAddr::from((ip, port)));
            }
        }
        Err(unexpected())
    }

    /// Waits until every running node reports `cluster_state:ok` and every running
    /// replica's link to its master is up, e.g. after killing or restarting a node.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, false)
    }

    fn create(&self, cli: &Path, password: Option<&str>, timeout: Duration) -> Result<()> {
        let log_path = self.dir.path().join("redis-cli-cluster-create.log");
        let log =
            File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log_path.display())))?;
        let mut cmd = Command::new(cli);
        if let Some(password) = password {
            cmd.args(["-a", password, "--no-auth-warning"]);
        }
        cmd.args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| n.addr().to_string()))
            .args(["--cluster-replicas", &self.replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().map_err(io_err(format!("running {command}")))?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!("killed after {timeout:?}");
                }
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("waiting for {command}"),
                        source,
                    });
                }
            }
        };
        Err(Error::CommandFailed {
            command,
            status,
            output: process::log_tail(&log_path, 40),
        })
    }

    fn wait_until(&self, timeout: Duration, forming: bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let problem = match self.health_problem(forming) {
                Ok(None) => return Ok(()),
                Ok(Some(problem)) => problem,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::ClusterNotReady {
                    waited: timeout,
                    problem,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `None` when healthy, otherwise what is wrong. When `forming`, also checks that every
    /// node knows every other one and that roles match the requested topology.
    fn health_problem(&self, forming: bool) -> Result<Option<String>> {
        let mut masters = 0;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let mut conn = node.connect()?;
            let info = bulk_text(conn.cmd(&["CLUSTER", "INFO"])?)?;
            if info_field(&info, "cluster_state") != Some("ok") {
                return Ok(Some(format!(
                    "{} reports {:?}",
                    node.addr(),
                    first_line(&info)
                )));
            }
            let known = info_field(&info, "cluster_known_nodes").unwrap_or("?");
            if forming && known != self.nodes.len().to_string() {
                return Ok(Some(format!("{} knows {known} nodes", node.addr())));
            }
            let replication = bulk_text(conn.cmd(&["INFO", "replication"])?)?;
            match info_field(&replication, "role") {
                Some("master") => {
                    masters += 1;
                    let replicas = info_field(&replication, "connected_slaves").unwrap_or("?");
                    if forming && replicas != self.replicas_per_master.to_string() {
                        return Ok(Some(format!(
                            "master {} has {replicas} replicas",
                            node.addr()
                        )));
                    }
                }
                _ => {
                    if info_field(&replication, "master_link_status") != Some("up") {
                        return Ok(Some(format!(
                            "replica {} has no link to its master",
                            node.addr()
                        )));
                    }
                }
            }
        }
        if forming && masters != self.expected_masters {
            return Ok(Some(format!(
                "{masters} masters instead of {}",
                self.expected_masters
            )));
        }
        Ok(None)
    }
}

fn bulk_text(reply: Reply) -> Result<String> {
    let reply = reply.into_result()?;
    reply
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::UnexpectedReply {
            command: String::from("INFO"),
            reply: reply.to_string(),
        })
}

fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % SLOT_COUNT
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
