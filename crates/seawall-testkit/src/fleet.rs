//! A whole deployment on loopback: Redis (a Cluster of masters with replicas,
//! or one server), PostgreSQL, several `seawall-api` instances and
//! `seawall-worker` processes, and HAProxy in front of the API instances;
//! or the same with each process on a network host of its own
//! ([`FleetBuilder::hosts`]), so that the network between them can fail.
//!
//! `scripts/fleet` runs this same fixture through the `seawall-fleet` binary.
//!
//! # The fault log
//!
//! Every fault the fleet injects (a partition, an isolation, a one-way link,
//! a heal, a kill, a pause, a resume, a restart, a start, a stop) is appended
//! to `<dir>/faults.jsonl` as one JSON line, once it took effect:
//!
//! ```text
//! {"t": 1718000000123456, "process": "nemesis", "type": "fault", "op": "partition", "value": {"sides": [["redis-1", "api-1"], ["redis-2", "haproxy"]]}}
//! ```
//!
//! `t` is in microseconds since the Unix epoch; `op` is one of `partition`,
//! `isolate`, `one-way`, `heal`, `kill`, `pause`, `resume`, `restart`,
//! `start`, `stop`; `value` is `{"sides": [[host, ...], ...]}` for a
//! partition, `{"from": host, "to": host}` for a one-way link, `{}` for a
//! heal, and `{"host": host}` for the rest (Redis nodes are `redis-1`, ... in
//! the order they were started, also on loopback). [`Fleet::cut_api`] and
//! [`Fleet::restore_api`] are logged as a partition and a heal whose value
//! names the sides, `[["api-N"], ["redis-1"]]`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::error::{Error, Result, io_err};
use crate::haproxy::{Dir, Haproxy, ServerState};
use crate::hosts::{Host, Network};
use crate::process::{self, Spawn, StopSignal, Supervised};
use crate::{Persistence, Postgres, Proxy, RedisCluster, RedisSentinel, RedisServer, Role, http};

/// The admin token of a fleet unless another is chosen.
pub const DEFAULT_TOKEN: &str = "fleet-admin-token-0123456789";

/// How a fleet's Redis is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetRedis {
    /// A Redis Cluster of 3 masters, each with one replica.
    Cluster,
    /// One Redis server. Each API instance reaches it through its own
    /// [`Proxy`], so one instance can be cut off
    /// ([`Fleet::cut_api`]); the workers connect directly.
    Standalone,
    /// A primary and a replica under three Sentinels ([`RedisSentinel`]).
    Sentinel,
}

/// Configures and starts a [`Fleet`]. Create one with [`Fleet::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct FleetBuilder {
    api_binary: Option<PathBuf>,
    worker_binary: Option<PathBuf>,
    dir: Option<PathBuf>,
    instances: usize,
    workers: usize,
    redis: FleetRedis,
    node_timeout: Duration,
    postgres_data: Option<PathBuf>,
    postgres_replicas: usize,
    postgres_settings: Vec<(String, String)>,
    env: Vec<(String, String)>,
    token: String,
    ready_timeout: Duration,
    proxies: bool,
    hosts: bool,
}

impl Default for FleetBuilder {
    fn default() -> Self {
        Self {
            api_binary: None,
            worker_binary: None,
            dir: None,
            instances: 3,
            workers: 2,
            redis: FleetRedis::Cluster,
            node_timeout: Duration::from_secs(3),
            postgres_data: None,
            postgres_replicas: 0,
            postgres_settings: Vec::new(),
            env: Vec::new(),
            token: DEFAULT_TOKEN.to_owned(),
            ready_timeout: Duration::from_secs(180),
            proxies: true,
            hosts: false,
        }
    }
}

impl FleetBuilder {
    /// The `seawall-api` executable (default: the one [`workspace_binary`] finds).
    pub fn api_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.api_binary = Some(path.into());
        self
    }

    /// The `seawall-worker` executable (default: the one [`workspace_binary`] finds).
    pub fn worker_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_binary = Some(path.into());
        self
    }

    /// The run dir (created if missing, never deleted) for every process's log,
    /// HAProxy's configuration, the job files and `fleet.env`; a temp dir by default.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How many API instances (default 3).
    pub fn instances(mut self, instances: usize) -> Self {
        self.instances = instances;
        self
    }

    /// How many worker processes (default 2; 0 for none).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The Redis layout (default [`FleetRedis::Cluster`]).
    pub fn redis(mut self, redis: FleetRedis) -> Self {
        self.redis = redis;
        self
    }

    /// With [`FleetRedis::Standalone`], whether each API instance reaches
    /// Redis through a proxy of its own (default true, so it can be cut
    /// off); false connects it directly, as a measurement wants.
    pub fn redis_proxies(mut self, proxies: bool) -> Self {
        self.proxies = proxies;
        self
    }

    /// The Cluster's `cluster-node-timeout` (default 3 s): how long a master
    /// may be silent before its replica takes over.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Keeps PostgreSQL's data in `dir`, so the demo dataset is written once
    /// and found again by the next fleet on the same dir.
    pub fn postgres_data(mut self, dir: impl Into<PathBuf>) -> Self {
        self.postgres_data = Some(dir.into());
        self
    }

    /// Adds a setting of the PostgreSQL primary (`-c name=value`), e.g.
    /// `synchronous_standby_names` for synchronous replication to its
    /// [replicas](Self::postgres_replicas).
    pub fn postgres_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.postgres_settings.push((name.into(), value.into()));
        self
    }

    /// How many streaming replicas of PostgreSQL to run (default 0), each
    /// from a base backup of the primary with a replication slot of its
    /// own; the API instances read on them (`SEAWALL_DATABASE_REPLICAS`).
    /// With [`hosts`](Self::hosts), each on a host of its own,
    /// `postgres-replica-1`, `postgres-replica-2`, …, which the network's
    /// faults can cut off.
    pub fn postgres_replicas(mut self, replicas: usize) -> Self {
        self.postgres_replicas = replicas;
        self
    }

    /// Sets an environment variable for every API instance and worker, after
    /// the fleet's own (so it can override them).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The admin token (default [`DEFAULT_TOKEN`]).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// How long the whole start may take (default 3 minutes; the first start on a
    /// kept PostgreSQL dir writes the demo dataset).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Whether each process runs on a network host of its own (default
    /// false: everything on loopback). The hosts are Linux network
    /// namespaces on one bridge (a [`Network`], which needs root, `ip` and
    /// `nft`): `redis-1` to `redis-6` for a Cluster (`redis-1` for a
    /// standalone Redis, reached directly, without proxies), `postgres`
    /// (and `postgres-replica-1`, … with
    /// [`postgres_replicas`](Self::postgres_replicas)),
    /// `api-1` to `api-N`, `worker-1` to `worker-N` and `haproxy`, each
    /// process listening on its host's address (Redis on 6379, PostgreSQL on
    /// 5432, the instances and HAProxy on 8080, the workers' probes on
    /// 9090), so that [`Fleet::partition`], [`Fleet::isolate`] and
    /// [`Fleet::one_way`] can cut them apart. The test process reaches every
    /// host. Not with [`FleetRedis::Sentinel`].
    pub fn hosts(mut self, hosts: bool) -> Self {
        self.hosts = hosts;
        self
    }

    /// Starts everything, each part once the parts it needs are ready, and
    /// returns when HAProxy sends requests to every instance.
    pub fn start(self) -> Result<Fleet> {
        let deadline = Instant::now() + self.ready_timeout;
        if self.hosts && self.redis == FleetRedis::Sentinel {
            return Err(Error::Unsupported {
                what: String::from(
                    "a fleet on network hosts runs a Redis Cluster or a standalone Redis, \
                     not Sentinel",
                ),
            });
        }
        // Declared first, so on a failed start it goes after every process.
        let mut network = if self.hosts {
            Some(Network::new()?)
        } else {
            None
        };
        let plan = match &mut network {
            Some(network) => Some(self.plan_hosts(network)?),
            None => None,
        };
        let api_binary = match &self.api_binary {
            Some(path) => path.clone(),
            None => workspace_binary("seawall-api")?,
        };
        let worker_binary = match &self.worker_binary {
            Some(path) => path.clone(),
            None => workspace_binary("seawall-worker")?,
        };
        let dir = match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("creating {}", dir.display())))?;
                Dir::Kept(dir.clone())
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("seawall-fleet-")
                    .tempdir()
                    .map_err(io_err("creating a temp dir for the fleet"))?,
            ),
        };
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).map_err(io_err(format!("creating {}", files.display())))?;
        // Redis and PostgreSQL come up side by side.
        let (redis, postgres) = thread::scope(|scope| {
            let redis = scope.spawn(|| self.start_redis(plan.as_ref().map(|p| &p.redis[..])));
            let mut postgres = Postgres::builder().setting("max_connections", "300");
            for (name, value) in &self.postgres_settings {
                postgres = postgres.setting(name.clone(), value.clone());
            }
            if let Some(data) = &self.postgres_data {
                postgres = postgres.data_dir(data);
            }
            if let Some(plan) = &plan {
                postgres = postgres.host(&plan.postgres);
            }
            let postgres = postgres.start();
            let redis = redis
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (redis, postgres)
        });
        let (redis, postgres) = (redis?, postgres?);
        link_log(dir.path(), "postgres.log", &postgres.log_path());
        let mut postgres_replicas = Vec::with_capacity(self.postgres_replicas);
        if self.postgres_replicas > 0 {
            // A kept data dir holds the slots of earlier fleets' replicas,
            // gone now: the primary would keep their WAL for ever.
            postgres.psql(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE NOT active",
            )?;
        }
        for n in 1..=self.postgres_replicas {
            let mut replica = Postgres::builder()
                .setting("max_connections", "300")
                .replica_of(&postgres);
            if let Some(plan) = &plan {
                replica = replica.host(&plan.postgres_replicas[n - 1]);
            }
            let replica = replica.start()?;
            link_log(
                dir.path(),
                &format!("postgres-replica-{n}.log"),
                &replica.log_path(),
            );
            postgres_replicas.push(replica);
        }
        for node in redis.servers() {
            link_log(
                dir.path(),
                &format!("redis-{}.log", node.port()),
                &node.log_path(),
            );
        }
        for sentinel in redis.sentinels() {
            link_log(
                dir.path(),
                &format!("sentinel-{}.log", sentinel.port()),
                &sentinel.log_path(),
            );
        }
        let hosts = plan.as_ref().map(HostPlan::hosts).unwrap_or_default();
        let mut fleet = Fleet {
            apis: Vec::new(),
            workers: Vec::new(),
            proxies: Vec::new(),
            haproxy: None,
            redis,
            postgres,
            postgres_replicas,
            token: self.token.clone(),
            hosts,
            network,
            dir,
        };
        // HAProxy's address: the client's is in X-Forwarded-For.
        let balancer = plan
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, |plan| plan.haproxy.addr());
        let common = fleet.common_env(&self, &files, balancer);
        for n in 1..=self.instances {
            let mut env = common.clone();
            let host = plan.as_ref().map(|plan| &plan.apis[n - 1]);
            let redis_url = match &fleet.redis {
                // A host cannot reach a proxy on the test process's loopback.
                Layout::Standalone(server) if self.proxies && host.is_none() => {
                    let proxy = Proxy::start(server.addr())?;
                    let url = proxy.url();
                    fleet.proxies.push(proxy);
                    Some(url)
                }
                Layout::Standalone(_) | Layout::Cluster(_) | Layout::Sentinel(_) => None,
            };
            if let Some(url) = redis_url {
                env.push(("SEAWALL_REDIS_URL".into(), url.into()));
            }
            let addr = match host {
                Some(host) => SocketAddr::from((host.addr(), API_HOST_PORT)),
                None => SocketAddr::from((Ipv4Addr::LOCALHOST, process::pick_port(false)?)),
            };
            env.push(("SEAWALL_LISTEN".into(), addr.to_string().into()));
            fleet.apis.push(Service::new(
                Kind::Api,
                n,
                api_binary.clone(),
                addr,
                host,
                env,
                &self.env,
                fleet.dir.path(),
            ));
        }
        for n in 1..=self.workers {
            let mut env = common.clone();
            let host = plan.as_ref().map(|plan| &plan.workers[n - 1]);
            let addr = match host {
                Some(host) => SocketAddr::from((host.addr(), WORKER_HOST_PORT)),
                None => SocketAddr::from((Ipv4Addr::LOCALHOST, process::pick_port(false)?)),
            };
            env.push(("SEAWALL_WORKER_LISTEN".into(), addr.to_string().into()));
            fleet.workers.push(Service::new(
                Kind::Worker,
                n,
                worker_binary.clone(),
                addr,
                host,
                env,
                &self.env,
                fleet.dir.path(),
            ));
        }
        // All at once, as an orchestrator starts them: the instances agree
        // among themselves which one writes the demo dataset.
        let dir = fleet.dir.path().to_owned();
        start_all(&mut fleet.apis, &dir, deadline)?;
        start_all(&mut fleet.workers, &dir, deadline)?;
        let mut haproxy = Haproxy::builder().dir(&dir);
        if let Some(plan) = &plan {
            haproxy = haproxy.host(&plan.haproxy);
        }
        for api in &fleet.apis {
            haproxy = haproxy.server(api.name(), api.addr());
        }
        let haproxy = haproxy.start()?;
        haproxy.wait_all_up(deadline.saturating_duration_since(Instant::now()))?;
        fleet.haproxy = Some(haproxy);
        let env_file = fleet.env_file();
        std::fs::write(&env_file, fleet.env_text())
            .map_err(io_err(format!("writing {}", env_file.display())))?;
        Ok(fleet)
    }

    fn start_redis(&self, hosts: Option<&[Host]>) -> Result<Layout> {
        match self.redis {
            FleetRedis::Cluster => RedisCluster::builder()
                .masters(3)
                .replicas_per_master(1)
                .node_timeout(self.node_timeout)
                .persistence(Persistence::AofEverySec)
                .hosts(hosts.unwrap_or_default())
                .start()
                .map(Layout::Cluster),
            FleetRedis::Standalone => {
                let mut server = RedisServer::builder().persistence(Persistence::AofEverySec);
                if let Some(host) = hosts.and_then(<[Host]>::first) {
                    server = server.host(host);
                }
                server.start().map(Layout::Standalone)
            }
            FleetRedis::Sentinel => RedisSentinel::start().map(Layout::Sentinel),
        }
    }

    /// Adds a host for every process the fleet will run.
    fn plan_hosts(&self, network: &mut Network) -> Result<HostPlan> {
        let redis_nodes = match self.redis {
            FleetRedis::Cluster => 6,
            FleetRedis::Standalone | FleetRedis::Sentinel => 1,
        };
        let mut add = |name: String| network.add_host(&name);
        let redis = (1..=redis_nodes)
            .map(|n| add(format!("redis-{n}")))
            .collect::<Result<Vec<_>>>()?;
        let postgres = add(String::from("postgres"))?;
        let postgres_replicas = (1..=self.postgres_replicas)
            .map(|n| add(format!("postgres-replica-{n}")))
            .collect::<Result<Vec<_>>>()?;
        let apis = (1..=self.instances)
            .map(|n| add(format!("api-{n}")))
            .collect::<Result<Vec<_>>>()?;
        let workers = (1..=self.workers)
            .map(|n| add(format!("worker-{n}")))
            .collect::<Result<Vec<_>>>()?;
        let haproxy = add(String::from("haproxy"))?;
        Ok(HostPlan {
            redis,
            postgres,
            postgres_replicas,
            apis,
            workers,
            haproxy,
        })
    }
}

/// The port the API instances listen on, on their hosts.
const API_HOST_PORT: u16 = 8080;

/// The port of the workers' probes, on their hosts.
const WORKER_HOST_PORT: u16 = 9090;

/// The host of every process of a fleet on network hosts.
#[derive(Debug)]
struct HostPlan {
    redis: Vec<Host>,
    postgres: Host,
    postgres_replicas: Vec<Host>,
    apis: Vec<Host>,
    workers: Vec<Host>,
    haproxy: Host,
}

impl HostPlan {
    fn hosts(&self) -> Vec<FleetHost> {
        let with = |role: HostRole| move |host: &Host| FleetHost::new(host, role);
        let mut hosts: Vec<FleetHost> = self.redis.iter().map(with(HostRole::Redis)).collect();
        hosts.push(FleetHost::new(&self.postgres, HostRole::Postgres));
        hosts.extend(self.postgres_replicas.iter().map(with(HostRole::Postgres)));
        hosts.extend(self.apis.iter().map(with(HostRole::Api)));
        hosts.extend(self.workers.iter().map(with(HostRole::Worker)));
        hosts.push(FleetHost::new(&self.haproxy, HostRole::Haproxy));
        hosts
    }
}

/// One network host of a fleet, as [`Fleet::hosts`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHost {
    /// `redis-1`, `postgres`, `api-1`, `worker-1`, `haproxy`, ...
    pub name: String,
    /// Its address; its process listens there.
    pub addr: Ipv4Addr,
    /// What runs on it.
    pub role: HostRole,
}

impl FleetHost {
    fn new(host: &Host, role: HostRole) -> Self {
        Self {
            name: host.name().to_owned(),
            addr: host.addr(),
            role,
        }
    }
}

/// What runs on a [`FleetHost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostRole {
    /// A Redis node (a Cluster's master or replica, or the one server).
    Redis,
    /// PostgreSQL, the primary or a replica.
    Postgres,
    /// A `seawall-api` instance.
    Api,
    /// A `seawall-worker` process.
    Worker,
    /// The load balancer.
    Haproxy,
}

/// Starts every service of `services` at once and waits until each is ready.
fn start_all(services: &mut [Service], dir: &Path, deadline: Instant) -> Result<()> {
    for service in services.iter_mut() {
        service.spawn(dir)?;
    }
    for service in services.iter() {
        service.wait_ready(deadline)?;
    }
    Ok(())
}

/// A symlink `dir/name` to a log that lives elsewhere, so every log of the
/// fleet can be found in its run dir. Best effort: a missing link loses nothing.
fn link_log(dir: &Path, name: &str, target: &Path) {
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    let _ = std::os::unix::fs::symlink(target, link);
}

#[derive(Debug)]
enum Layout {
    Cluster(RedisCluster),
    Standalone(RedisServer),
    Sentinel(RedisSentinel),
}

impl Layout {
    /// The servers that hold data.
    fn servers(&self) -> Vec<&RedisServer> {
        match self {
            Layout::Cluster(cluster) => cluster.nodes().iter().collect(),
            Layout::Standalone(server) => vec![server],
            Layout::Sentinel(sentinel) => sentinel.servers().iter().collect(),
        }
    }

    /// The Sentinels, if any.
    fn sentinels(&self) -> &[RedisServer] {
        match self {
            Layout::Sentinel(sentinel) => sentinel.sentinels(),
            _ => &[],
        }
    }

    /// The URL the services connect with.
    fn url(&self) -> String {
        match self {
            Layout::Cluster(cluster) => cluster.url(),
            Layout::Standalone(server) => server.url(),
            Layout::Sentinel(sentinel) => sentinel.url(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Api,
    Worker,
}

/// One `seawall-api` or `seawall-worker` process of the fleet.
#[derive(Debug)]
struct Service {
    kind: Kind,
    index: usize,
    binary: PathBuf,
    addr: SocketAddr,
    /// The namespace of its host, on a fleet on network hosts.
    netns: Option<String>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    proc: Option<Supervised>,
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        index: usize,
        binary: PathBuf,
        addr: SocketAddr,
        host: Option<&Host>,
        mut env: Vec<(OsString, OsString)>,
        extra: &[(String, String)],
        dir: &Path,
    ) -> Self {
        env.extend(
            extra
                .iter()
                .map(|(name, value)| (name.into(), value.into())),
        );
        let mut service = Self {
            kind,
            index,
            binary,
            addr,
            netns: host.map(|host| host.netns().to_owned()),
            env,
            log: PathBuf::new(),
            proc: None,
        };
        service.log = dir.join(format!("{}.log", service.name()));
        service
    }

    fn name(&self) -> String {
        match self.kind {
            Kind::Api => format!("api-{}", self.index),
            Kind::Worker => format!("worker-{}", self.index),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn spawn(&mut self, dir: &Path) -> Result<()> {
        // Room for the service's own drain and shutdown timeouts.
        let stop = StopSignal::TermThenKill(Duration::from_secs(45));
        let proc = Supervised::spawn(&Spawn {
            envs: &self.env,
            owns_dir: false,
            netns: self.netns.as_deref(),
            ..Spawn::server(&self.binary, &[], dir, &self.log, stop)
        })?;
        self.proc = Some(proc);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.proc
            .as_ref()
            .filter(|p| p.is_alive())
            .map(Supervised::pid)
    }

    /// Polls `/readyz` until it answers 200; fails at once when the process died.
    fn wait_ready(&self, deadline: Instant) -> Result<()> {
        let what = format!("{} on {}", self.name(), self.addr());
        let began = Instant::now();
        loop {
            if self.pid().is_none() {
                return Err(Error::Exited {
                    what,
                    log: self.log.clone(),
                    log_tail: process::log_tail(&self.log, 30),
                });
            }
            let last_problem = match http::get(self.addr(), "/readyz", &[]) {
                Ok(response) if response.status == 200 => return Ok(()),
                Ok(response) => format!("/readyz answered {}: {}", response.status, response.body),
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::StartTimeout {
                    what,
                    waited: began.elapsed(),
                    last_problem,
                    log: self.log.clone(),
                    log_tail: process::log_tail(&self.log, 30),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        self.pid().is_some()
            && http::get(self.addr(), "/readyz", &[]).is_ok_and(|response| response.status == 200)
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL past its grace).
    fn stop(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(proc) => proc.stop(),
            None => Ok(()),
        }
    }

    fn kill(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(proc) => {
                // Already gone is fine: the point is that it is gone.
                let _ = proc.signal(Signal::SIGKILL);
                proc.stop()
            }
            None => Ok(()),
        }
    }
}

/// A running fleet; every process stops when it is dropped (and, like every
/// testkit server, when the process holding it dies).
///
/// ```no_run
/// use seawall_testkit::Fleet;
///
/// # fn main() -> seawall_testkit::Result<()> {
/// let mut fleet = Fleet::builder().instances(3).workers(2).start()?;
/// let response = seawall_testkit::http::get(fleet.addr(), "/readyz", &[])?;
/// assert_eq!(response.status, 200);
/// let killed = fleet.kill_master()?; // a replica takes over within a few seconds
/// println!("killed the master on {killed}");
/// fleet.restart_api(1)?; // SIGTERM, drain, start again, wait until HAProxy sends to it
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Fleet {
    apis: Vec<Service>,
    workers: Vec<Service>,
    /// One per API instance with a standalone Redis.
    proxies: Vec<Proxy>,
    haproxy: Option<Haproxy>,
    redis: Layout,
    postgres: Postgres,
    /// Streaming replicas of `postgres`, if asked for.
    postgres_replicas: Vec<Postgres>,
    token: String,
    /// Empty on loopback.
    hosts: Vec<FleetHost>,
    /// After the processes, so they are gone before their hosts.
    network: Option<Network>,
    // Declared last so every process is gone before a temp dir is deleted.
    dir: Dir,
}

impl Fleet {
    /// A builder.
    pub fn builder() -> FleetBuilder {
        FleetBuilder::default()
    }

    fn common_env(
        &self,
        builder: &FleetBuilder,
        files: &Path,
        balancer: Ipv4Addr,
    ) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("SEAWALL_DATABASE_URL".into(), self.postgres.url().into()),
            ("SEAWALL_REDIS_URL".into(), self.redis.url().into()),
            ("SEAWALL_ADMIN_TOKEN".into(), builder.token.clone().into()),
            ("SEAWALL_FILES".into(), files.into()),
            // HAProxy's address: the client's is in X-Forwarded-For.
            (
                "SEAWALL_TRUSTED_PROXIES".into(),
                format!("{balancer}/32").into(),
            ),
            // Readiness fails first, HAProxy's next check (every 200 ms)
            // takes the instance out, then the listener closes.
            ("SEAWALL_SHUTDOWN_DRAIN".into(), "1s".into()),
        ];
        if !self.postgres_replicas.is_empty() {
            let urls: Vec<String> = self.postgres_replicas.iter().map(Postgres::url).collect();
            env.push(("SEAWALL_DATABASE_REPLICAS".into(), urls.join(",").into()));
        }
        env
    }

    /// HAProxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.haproxy().addr()
    }

    /// `http://` + HAProxy's address: where clients send requests.
    pub fn url(&self) -> String {
        self.haproxy().url()
    }

    /// HAProxy.
    pub fn haproxy(&self) -> &Haproxy {
        self.haproxy
            .as_ref()
            .unwrap_or_else(|| unreachable!("a started fleet has HAProxy"))
    }

    /// The admin token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The API instances' addresses, in order (instance 1 first).
    pub fn instance_addrs(&self) -> Vec<SocketAddr> {
        self.apis.iter().map(Service::addr).collect()
    }

    /// The API instances' URLs, in order.
    pub fn instance_urls(&self) -> Vec<String> {
        self.apis.iter().map(Service::url).collect()
    }

    /// The workers' probe addresses (`/livez`, `/readyz`, `/metrics`), in order.
    pub fn worker_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(Service::addr).collect()
    }

    /// The pid of worker `n` (from 1), if it runs.
    pub fn worker_pid(&self, n: usize) -> Option<u32> {
        self.workers.get(n.wrapping_sub(1)).and_then(Service::pid)
    }

    /// The pid of API instance `n` (from 1), if it runs.
    pub fn api_pid(&self, n: usize) -> Option<u32> {
        self.apis.get(n.wrapping_sub(1)).and_then(Service::pid)
    }

    /// The URL the services use for Redis.
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// One Redis node's `redis://` URL, a seed for a Cluster client.
    pub fn redis_seed_url(&self) -> String {
        self.redis.servers()[0].url()
    }

    /// The Redis Cluster, with [`FleetRedis::Cluster`].
    pub fn cluster(&self) -> Option<&RedisCluster> {
        match &self.redis {
            Layout::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// The Redis server, with [`FleetRedis::Standalone`].
    pub fn redis_server(&self) -> Option<&RedisServer> {
        match &self.redis {
            Layout::Standalone(server) => Some(server),
            _ => None,
        }
    }

    /// The Sentinel-managed primary and replica, with [`FleetRedis::Sentinel`].
    pub fn sentinel(&self) -> Option<&RedisSentinel> {
        match &self.redis {
            Layout::Sentinel(sentinel) => Some(sentinel),
            _ => None,
        }
    }

    /// PostgreSQL.
    pub fn postgres(&self) -> &Postgres {
        &self.postgres
    }

    /// PostgreSQL, to fault (kill, restart).
    pub fn postgres_mut(&mut self) -> &mut Postgres {
        &mut self.postgres
    }

    /// PostgreSQL's streaming replicas, in the order the API instances
    /// name them (see [`FleetBuilder::postgres_replicas`]).
    pub fn postgres_replicas(&self) -> &[Postgres] {
        &self.postgres_replicas
    }

    /// A replica of PostgreSQL, to fault (kill, restart): `n` from 1.
    pub fn postgres_replica_mut(&mut self, n: usize) -> Option<&mut Postgres> {
        self.postgres_replicas.get_mut(n.wrapping_sub(1))
    }

    /// The run dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `dir/fleet.env`: what [`env_text`](Self::env_text) says, for scripts to source.
    pub fn env_file(&self) -> PathBuf {
        self.dir().join("fleet.env")
    }

    /// `url=`, `token=`, `instances=`, `redis=`, `postgres=`, `workers=` and
    /// `dir=` lines.
    pub fn env_text(&self) -> String {
        let workers: Vec<String> = self.workers.iter().map(Service::url).collect();
        format!(
            "url={}\ntoken={}\ninstances={}\nredis={}\npostgres={}\nworkers={}\ndir={}\n",
            self.url(),
            self.token,
            self.instance_urls().join(","),
            self.redis_seed_url(),
            self.postgres.url(),
            workers.join(","),
            self.dir().display(),
        )
    }

    fn api(&mut self, n: usize) -> Result<&mut Service> {
        let count = self.apis.len();
        self.apis
            .get_mut(n.wrapping_sub(1))
            .ok_or_else(|| no_such("API instance", n, count))
    }

    fn worker(&mut self, n: usize) -> Result<&mut Service> {
        let count = self.workers.len();
        self.workers
            .get_mut(n.wrapping_sub(1))
            .ok_or_else(|| no_such("worker", n, count))
    }

    /// Stops API instance `n` (from 1) with SIGTERM, waits for it to exit,
    /// starts it again on the same port, and returns once HAProxy sends it
    /// requests again.
    pub fn restart_api(&mut self, n: usize) -> Result<()> {
        self.api(n)?.stop()?;
        self.start_api_quietly(n)?;
        self.record("restart", &host_value(&format!("api-{n}")))
    }

    /// Stops API instance `n` with SIGTERM and waits for it to exit.
    pub fn stop_api(&mut self, n: usize) -> Result<()> {
        self.api(n)?.stop()?;
        self.record("stop", &host_value(&format!("api-{n}")))
    }

    /// Starts API instance `n` again after [`stop_api`](Self::stop_api) and
    /// waits until it is ready and HAProxy sends it requests.
    pub fn start_api(&mut self, n: usize) -> Result<()> {
        self.start_api_quietly(n)?;
        self.record("start", &host_value(&format!("api-{n}")))
    }

    /// [`start_api`](Self::start_api) without its line in the fault log.
    fn start_api_quietly(&mut self, n: usize) -> Result<()> {
        let dir = self.dir().to_owned();
        let deadline = Instant::now() + crate::wait::patience();
        let api = self.api(n)?;
        if api.pid().is_none() {
            api.spawn(&dir)?;
        }
        api.wait_ready(deadline)?;
        let name = api.name();
        self.haproxy().wait_until(
            deadline.saturating_duration_since(Instant::now()),
            &format!("{name} up"),
            |states| states.iter().any(|s| s.name == name && s.is_up()),
        )
    }

    /// SIGKILLs worker `n` (from 1) and returns its pid.
    pub fn kill_worker(&mut self, n: usize) -> Result<u32> {
        let worker = self.worker(n)?;
        let pid = worker.pid().ok_or_else(|| Error::NotRunning {
            what: worker.name(),
        })?;
        worker.kill()?;
        self.record("kill", &host_value(&format!("worker-{n}")))?;
        Ok(pid)
    }

    /// Stops worker `n` with SIGTERM (it drains) and waits for it to exit.
    pub fn stop_worker(&mut self, n: usize) -> Result<()> {
        self.worker(n)?.stop()?;
        self.record("stop", &host_value(&format!("worker-{n}")))
    }

    /// Starts worker `n` (after it was killed or stopped) and waits until it is ready.
    pub fn start_worker(&mut self, n: usize) -> Result<()> {
        let dir = self.dir().to_owned();
        let worker = self.worker(n)?;
        if worker.pid().is_none() {
            worker.spawn(&dir)?;
        }
        worker.wait_ready(Instant::now() + crate::wait::patience())?;
        self.record("start", &host_value(&format!("worker-{n}")))
    }

    /// SIGKILLs one Redis master (the first node that is a master now) and
    /// returns its address; its replica takes over after the node timeout.
    /// Under Sentinel, kills the primary the Sentinels name; with a
    /// standalone Redis, kills that server.
    pub fn kill_master(&mut self) -> Result<SocketAddr> {
        let addr = self.kill_master_quietly()?;
        self.record("kill", &host_value(&self.redis_name(addr)))?;
        Ok(addr)
    }

    /// [`kill_master`](Self::kill_master) without its line in the fault log.
    fn kill_master_quietly(&mut self) -> Result<SocketAddr> {
        match &mut self.redis {
            Layout::Cluster(cluster) => {
                let node = cluster
                    .nodes_mut()
                    .iter_mut()
                    .find(|node| node.is_running() && node.role().ok() == Some(Role::Master))
                    .ok_or_else(|| Error::NotRunning {
                        what: String::from("a Redis master"),
                    })?;
                node.kill()?;
                Ok(node.addr())
            }
            Layout::Standalone(server) => {
                server.kill()?;
                Ok(server.addr())
            }
            Layout::Sentinel(sentinel) => sentinel.kill_primary(),
        }
    }

    /// SIGKILLs the Cluster master that serves `key` (e.g. `{email}`, to hit
    /// a queue) and returns its address.
    pub fn kill_master_of(&mut self, key: &str) -> Result<SocketAddr> {
        let Layout::Cluster(cluster) = &mut self.redis else {
            return self.kill_master();
        };
        let addr = cluster.master_of(key)?;
        let node = cluster
            .nodes_mut()
            .iter_mut()
            .find(|node| node.addr() == addr)
            .ok_or_else(|| Error::NotRunning {
                what: format!("the master on {addr}"),
            })?;
        node.kill()?;
        self.record("kill", &host_value(&self.redis_name(addr)))?;
        Ok(addr)
    }

    /// Starts a killed Redis node again on its address (with its AOF and, in
    /// a Cluster, its node file: it rejoins as a replica of whoever took over).
    pub fn restart_redis(&mut self, addr: SocketAddr) -> Result<()> {
        let node = match &mut self.redis {
            Layout::Cluster(cluster) => cluster
                .nodes_mut()
                .iter_mut()
                .find(|node| node.addr() == addr),
            Layout::Standalone(server) => Some(server).filter(|server| server.addr() == addr),
            Layout::Sentinel(sentinel) => {
                sentinel.restart(addr)?;
                return self.record("restart", &host_value(&self.redis_name(addr)));
            }
        }
        .ok_or_else(|| Error::NotRunning {
            what: format!("a Redis node on {addr}"),
        })?;
        node.restart()?;
        self.record("restart", &host_value(&self.redis_name(addr)))
    }

    /// Cuts API instance `n` off from Redis (every connection through its
    /// proxy dropped, new ones refused), with [`FleetRedis::Standalone`].
    pub fn cut_api(&self, n: usize) -> Result<()> {
        self.proxy(n)?.cut();
        self.record("partition", &cut_value(n))
    }

    /// Lets API instance `n` reach Redis again.
    pub fn restore_api(&self, n: usize) -> Result<()> {
        self.proxy(n)?.restore();
        self.record("heal", &cut_value(n))
    }

    fn proxy(&self, n: usize) -> Result<&Proxy> {
        self.proxies
            .get(n.wrapping_sub(1))
            .ok_or_else(|| Error::NotRunning {
                what: format!(
                    "a Redis proxy for API instance {n} (only with a standalone Redis \
                     on loopback, for instances 1 to {})",
                    self.proxies.len()
                ),
            })
    }

    /// The fleet's network hosts, in the order they were made (the Redis
    /// nodes, PostgreSQL, the instances, the workers, HAProxy); empty on
    /// loopback.
    pub fn hosts(&self) -> Vec<FleetHost> {
        self.hosts.clone()
    }

    /// The hosts' [`Network`], on a fleet on network hosts.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// `dir/faults.jsonl`, where every fault is logged (see the module docs).
    pub fn faults_path(&self) -> PathBuf {
        self.dir().join("faults.jsonl")
    }

    /// Cuts the hosts on each side off from those on every other side, both
    /// ways, e.g. `partition(&[&["redis-1", "api-1"], &["redis-2", "haproxy"]])`.
    /// Hosts on no side keep reaching every host; the test process reaches
    /// every host whatever the faults. Faults add up until [`heal`](Self::heal).
    pub fn partition(&mut self, sides: &[&[&str]]) -> Result<()> {
        self.network_mut("partition")?.partition(sides)?;
        let sides: Vec<String> = sides.iter().map(|side| json_list(side)).collect();
        self.record(
            "partition",
            &format!("{{\"sides\": [{}]}}", sides.join(", ")),
        )
    }

    /// Cuts `host` off from every other host, both ways.
    pub fn isolate(&mut self, host: &str) -> Result<()> {
        self.network_mut("isolate")?.isolate(host)?;
        self.record("isolate", &host_value(host))
    }

    /// Drops what `from` sends to `to` (and only that direction): a
    /// half-dead link.
    pub fn one_way(&mut self, from: &str, to: &str) -> Result<()> {
        self.network_mut("one_way")?.one_way(from, to)?;
        self.record(
            "one-way",
            &format!(
                "{{\"from\": {}, \"to\": {}}}",
                json_string(from),
                json_string(to)
            ),
        )
    }

    /// Removes every partition, isolation and one-way link.
    pub fn heal(&mut self) -> Result<()> {
        self.network_mut("heal")?.heal()?;
        self.record("heal", "{}")
    }

    /// Freezes the process of `host` with SIGSTOP (on loopback too: the
    /// names are the same, Redis nodes `redis-1`, ... in start order).
    pub fn pause(&mut self, host: &str) -> Result<()> {
        process::send_signal(self.pid_of(host)?, Signal::SIGSTOP)?;
        self.record("pause", &host_value(host))
    }

    /// Lets the process of `host` run again with SIGCONT.
    pub fn resume(&mut self, host: &str) -> Result<()> {
        process::send_signal(self.pid_of(host)?, Signal::SIGCONT)?;
        self.record("resume", &host_value(host))
    }

    /// The host (`redis-N`) of the Redis master serving `key`'s slot now.
    pub fn master_host_of(&self, key: &str) -> Result<String> {
        let addr = match &self.redis {
            Layout::Cluster(cluster) => cluster.master_of(key)?,
            Layout::Standalone(server) => server.addr(),
            Layout::Sentinel(_) => return Err(cluster_only("master_host_of")),
        };
        Ok(self.redis_name(addr))
    }

    /// The host (`redis-N`) of a replica of the Redis master serving
    /// `key`'s slot now, as the master itself says (`INFO replication`:
    /// another node's `CLUSTER NODES` may not have heard of a replica that
    /// attached a moment ago).
    pub fn replica_host_of(&self, key: &str) -> Result<String> {
        let Layout::Cluster(cluster) = &self.redis else {
            return Err(cluster_only("replica_host_of"));
        };
        let master = cluster.master_of(key)?;
        let node = cluster
            .nodes()
            .iter()
            .find(|node| node.is_running() && node.addr() == master)
            .ok_or_else(|| Error::NotRunning {
                what: format!("the Redis master {master}"),
            })?;
        let reply = node
            .connect()?
            .cmd(&["INFO", "replication"])?
            .into_result()?;
        let text = reply.as_str().unwrap_or_default().to_owned();
        // slave0:ip=10.200.7.3,port=6379,state=online,offset=…,lag=0
        let replica = text
            .lines()
            .filter_map(|line| line.strip_prefix("slave")?.split_once(':'))
            .find_map(|(_, fields)| {
                let (mut ip, mut port) = (None, None);
                for field in fields.split(',') {
                    match field.split_once('=') {
                        Some(("ip", value)) => ip = value.parse::<std::net::IpAddr>().ok(),
                        Some(("port", value)) => port = value.parse::<u16>().ok(),
                        _ => {}
                    }
                }
                Some(SocketAddr::new(ip?, port?))
            })
            .ok_or_else(|| Error::UnexpectedReply {
                command: String::from("INFO replication"),
                reply: format!("no replica of {master} in:\n{text}"),
            })?;
        Ok(self.redis_name(replica))
    }

    fn network_mut(&mut self, what: &str) -> Result<&mut Network> {
        self.network.as_mut().ok_or_else(|| Error::Unsupported {
            what: format!(
                "{what} needs a fleet on network hosts (FleetBuilder::hosts(true), \
                 scripts/fleet start --hosts); this one runs on loopback"
            ),
        })
    }

    /// `redis-N`: the node's place in start order, from 1.
    fn redis_name(&self, addr: SocketAddr) -> String {
        self.redis
            .servers()
            .iter()
            .position(|node| node.addr() == addr)
            .map_or_else(|| addr.to_string(), |i| format!("redis-{}", i + 1))
    }

    /// The pid of the process called `name`, as in [`hosts`](Self::hosts).
    fn pid_of(&self, name: &str) -> Result<u32> {
        let numbered = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
        };
        let found = if name == "haproxy" {
            Some(self.haproxy().pid())
        } else if name == "postgres" {
            Some(self.postgres.pid())
        } else if let Some(i) = numbered("postgres-replica-") {
            self.postgres_replicas.get(i).map(Postgres::pid)
        } else if let Some(i) = numbered("api-") {
            self.apis.get(i).map(Service::pid)
        } else if let Some(i) = numbered("worker-") {
            self.workers.get(i).map(Service::pid)
        } else if let Some(i) = numbered("redis-") {
            self.redis.servers().get(i).map(|node| node.pid())
        } else {
            None
        };
        match found {
            Some(Some(pid)) => Ok(pid),
            Some(None) => Err(Error::NotRunning {
                what: name.to_owned(),
            }),
            None => Err(Error::UnknownHost {
                name: name.to_owned(),
                known: self.process_names().join(", "),
            }),
        }
    }

    fn process_names(&self) -> Vec<String> {
        let mut names: Vec<String> = (1..=self.redis.servers().len())
            .map(|n| format!("redis-{n}"))
            .collect();
        names.push(String::from("postgres"));
        names.extend((1..=self.postgres_replicas.len()).map(|n| format!("postgres-replica-{n}")));
        names.extend(self.apis.iter().chain(&self.workers).map(Service::name));
        names.push(String::from("haproxy"));
        names
    }

    /// Appends one fault to [`faults_path`](Self::faults_path).
    fn record(&self, op: &str, value: &str) -> Result<()> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros());
        let line = format!(
            "{{\"t\": {t}, \"process\": \"nemesis\", \"type\": \"fault\", \"op\": {}, \"value\": {value}}}\n",
            json_string(op)
        );
        let path = self.faults_path();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(io_err(format!("appending to {}", path.display())))
    }

    /// The state of every API instance and worker (pid, ready), every Redis
    /// node (role), and each server as HAProxy sees it.
    pub fn status(&self) -> Vec<ProcessState> {
        let mut states = Vec::new();
        let haproxy = self.haproxy().stats().unwrap_or_default();
        for service in self.apis.iter().chain(&self.workers) {
            let name = service.name();
            let balancer = haproxy
                .iter()
                .find(|s| s.name == name)
                .map(|s: &ServerState| s.status.clone());
            states.push(ProcessState {
                name,
                addr: service.addr(),
                pid: service.pid(),
                state: if service.is_ready() {
                    String::from("ready")
                } else if service.pid().is_some() {
                    String::from("not ready")
                } else {
                    String::from("stopped")
                },
                balancer,
            });
        }
        for (i, node) in self.redis.servers().into_iter().enumerate() {
            states.push(ProcessState {
                name: if self.network.is_some() {
                    format!("redis-{}", i + 1)
                } else {
                    format!("redis-{}", node.port())
                },
                addr: node.addr(),
                pid: node.pid(),
                state: match node.role() {
                    Ok(Role::Master) => String::from("master"),
                    Ok(Role::Replica) => String::from("replica"),
                    Err(_) => String::from("stopped"),
                },
                balancer: None,
            });
        }
        for sentinel in self.redis.sentinels() {
            states.push(ProcessState {
                name: format!("sentinel-{}", sentinel.port()),
                addr: sentinel.addr(),
                pid: sentinel.pid(),
                state: String::from(if sentinel.is_running() {
                    "sentinel"
                } else {
                    "stopped"
                }),
                balancer: None,
            });
        }
        states.push(ProcessState {
            name: String::from("postgres"),
            addr: self.postgres.addr(),
            pid: self.postgres.pid(),
            state: String::from(if self.postgres.psql("SELECT 1").is_ok() {
                "ready"
            } else {
                "not ready"
            }),
            balancer: None,
        });
        states
    }

    /// [`status`](Self::status) as text, one process per line.
    pub fn status_text(&self) -> String {
        let mut text = String::new();
        for state in self.status() {
            let pid = state
                .pid
                .map_or_else(|| String::from("-"), |p| p.to_string());
            let _ = write!(
                text,
                "{:<12} {:<21} pid {:<8} {}",
                state.name, state.addr, pid, state.state
            );
            if let Some(balancer) = state.balancer {
                let _ = write!(text, " (haproxy: {balancer})");
            }
            text.push('\n');
        }
        text
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Front to back: the balancer, then the services (which drain), then
        // what they depend on.
        drop(self.haproxy.take());
        thread::scope(|scope| {
            for service in self.apis.iter_mut().chain(self.workers.iter_mut()) {
                scope.spawn(move || service.stop());
            }
        });
    }
}

/// One process of a [`Fleet`], as [`Fleet::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    /// `api-1`, `worker-2`, `redis-<port>` (`redis-1`, ... on network hosts), `postgres`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its pid, while it runs.
    pub pid: Option<u32>,
    /// `ready`, `not ready` or `stopped` for a service, `master`, `replica`
    /// or `stopped` for a Redis node.
    pub state: String,
    /// HAProxy's status of an API instance.
    pub balancer: Option<String>,
}

fn cluster_only(what: &str) -> Error {
    Error::Unsupported {
        what: format!("{what} needs a Redis Cluster or a standalone Redis"),
    }
}

/// A JSON string.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|item| json_string(item)).collect();
    format!("[{}]", items.join(", "))
}

fn host_value(host: &str) -> String {
    format!("{{\"host\": {}}}", json_string(host))
}

/// The value of [`Fleet::cut_api`]'s and [`Fleet::restore_api`]'s faults.
fn cut_value(n: usize) -> String {
    format!("{{\"sides\": [[\"api-{n}\"], [\"redis-1\"]]}}")
}

fn no_such(what: &str, n: usize, count: usize) -> Error {
    Error::NotRunning {
        what: format!("{what} {n} (the fleet has 1 to {count})"),
    }
}

/// The workspace's `name` binary: beside the running executable, or one dir
/// up (a test runs from `target/<profile>/deps`). `cargo test --workspace`
/// and `cargo build --workspace` build it.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_err("finding the running executable"))?;
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let dirs: Vec<&Path> = exe.ancestors().skip(1).take(2).collect();
    dirs.iter()
        .map(|dir| dir.join(&file))
        .find(|path| process::is_executable(path))
        .ok_or_else(|| Error::MissingBinary {
            binary: file.clone(),
            searched: format!(
                "looked beside {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            install: "cargo build --workspace --bins",
        })
}
