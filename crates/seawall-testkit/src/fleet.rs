//! A whole deployment on loopback: Redis (a Cluster of masters with replicas,
//! or one server), PostgreSQL, several `seawall-api` instances and
//! `seawall-worker` processes, and HAProxy in front of the API instances.
//!
//! `scripts/fleet` runs this same fixture through the `seawall-fleet` binary.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::{Error, Result, io_err};
use crate::haproxy::{Dir, Haproxy, ServerState};
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
    env: Vec<(String, String)>,
    token: String,
    ready_timeout: Duration,
    proxies: bool,
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
            env: Vec::new(),
            token: DEFAULT_TOKEN.to_owned(),
            ready_timeout: Duration::from_secs(180),
            proxies: true,
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

    /// Starts everything, each part once the parts it needs are ready, and
    /// returns when HAProxy sends requests to every instance.
    pub fn start(self) -> Result<Fleet> {
        let deadline = Instant::now() + self.ready_timeout;
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
            let redis = scope.spawn(|| self.start_redis());
            let mut postgres = Postgres::builder().setting("max_connections", "300");
            if let Some(data) = &self.postgres_data {
                postgres = postgres.data_dir(data);
            }
            let postgres = postgres.start();
            let redis = redis
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (redis, postgres)
        });
        let (redis, postgres) = (redis?, postgres?);
        link_log(dir.path(), "postgres.log", &postgres.log_path());
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
        let mut fleet = Fleet {
            apis: Vec::new(),
            workers: Vec::new(),
            proxies: Vec::new(),
            haproxy: None,
            redis,
            postgres,
            token: self.token.clone(),
            dir,
        };
        let common = fleet.common_env(&self, &files);
        for n in 1..=self.instances {
            let mut env = common.clone();
            let redis_url = match &fleet.redis {
                Layout::Standalone(server) if self.proxies => {
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
            let port = process::pick_port(false)?;
            env.push((
                "SEAWALL_LISTEN".into(),
                SocketAddr::from((Ipv4Addr::LOCALHOST, port))
                    .to_string()
                    .into(),
            ));
            fleet.apis.push(Service::new(
                Kind::Api,
                n,
                api_binary.clone(),
                port,
                env,
                &self.env,
                fleet.dir.path(),
            ));
        }
        for n in 1..=self.workers {
            let mut env = common.clone();
            let port = process::pick_port(false)?;
            env.push((
                "SEAWALL_WORKER_LISTEN".into(),
                SocketAddr::from((Ipv4Addr::LOCALHOST, port))
                    .to_string()
                    .into(),
            ));
            fleet.workers.push(Service::new(
                Kind::Worker,
                n,
                worker_binary.clone(),
                port,
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

    fn start_redis(&self) -> Result<Layout> {
        match self.redis {
            FleetRedis::Cluster => RedisCluster::builder()
                .masters(3)
                .replicas_per_master(1)
                .node_timeout(self.node_timeout)
                .persistence(Persistence::AofEverySec)
                .start()
                .map(Layout::Cluster),
            FleetRedis::Standalone => RedisServer::builder()
                .persistence(Persistence::AofEverySec)
                .start()
                .map(Layout::Standalone),
            FleetRedis::Sentinel => RedisSentinel::start().map(Layout::Sentinel),
        }
    }
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
    port: u16,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    proc: Option<Supervised>,
}

impl Service {
    fn new(
        kind: Kind,
        index: usize,
        binary: PathBuf,
        port: u16,
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
            port,
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
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
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
                    waited: Duration::ZERO,
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
    token: String,
    // Declared last so every process is gone before a temp dir is deleted.
    dir: Dir,
}

impl Fleet {
    /// A builder.
    pub fn builder() -> FleetBuilder {
        FleetBuilder::default()
    }

    fn common_env(&self, builder: &FleetBuilder, files: &Path) -> Vec<(OsString, OsString)> {
        let env: Vec<(OsString, OsString)> = vec![
            ("SEAWALL_DATABASE_URL".into(), self.postgres.url().into()),
            ("SEAWALL_REDIS_URL".into(), self.redis.url().into()),
            ("SEAWALL_ADMIN_TOKEN".into(), builder.token.clone().into()),
            ("SEAWALL_FILES".into(), files.into()),
            // HAProxy's address: the client's is in X-Forwarded-For.
            ("SEAWALL_TRUSTED_PROXIES".into(), "127.0.0.1/32".into()),
            // Readiness fails first, HAProxy's next check (every 200 ms)
            // takes the instance out, then the listener closes.
            ("SEAWALL_SHUTDOWN_DRAIN".into(), "1s".into()),
        ];
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
        self.stop_api(n)?;
        self.start_api(n)
    }

    /// Stops API instance `n` with SIGTERM and waits for it to exit.
    pub fn stop_api(&mut self, n: usize) -> Result<()> {
        self.api(n)?.stop()
    }

    /// Starts API instance `n` again after [`stop_api`](Self::stop_api) and
    /// waits until it is ready and HAProxy sends it requests.
    pub fn start_api(&mut self, n: usize) -> Result<()> {
        let dir = self.dir().to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
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
        Ok(pid)
    }

    /// Stops worker `n` with SIGTERM (it drains) and waits for it to exit.
    pub fn stop_worker(&mut self, n: usize) -> Result<()> {
        self.worker(n)?.stop()
    }

    /// Starts worker `n` (after it was killed or stopped) and waits until it is ready.
    pub fn start_worker(&mut self, n: usize) -> Result<()> {
        let dir = self.dir().to_owned();
        let worker = self.worker(n)?;
        if worker.pid().is_none() {
            worker.spawn(&dir)?;
        }
        worker.wait_ready(Instant::now() + Duration::from_secs(60))
    }

    /// SIGKILLs one Redis master (the first node that is a master now) and
    /// returns its address; its replica takes over after the node timeout.
    /// Under Sentinel, kills the primary the Sentinels name; with a
    /// standalone Redis, kills that server.
    pub fn kill_master(&mut self) -> Result<SocketAddr> {
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
                return sentinel.restart(addr);
            }
        }
        .ok_or_else(|| Error::NotRunning {
            what: format!("a Redis node on {addr}"),
        })?;
        node.restart()
    }

    /// Cuts API instance `n` off from Redis (every connection through its
    /// proxy dropped, new ones refused), with [`FleetRedis::Standalone`].
    pub fn cut_api(&self, n: usize) -> Result<()> {
        self.proxy(n)?.cut();
        Ok(())
    }

    /// Lets API instance `n` reach Redis again.
    pub fn restore_api(&self, n: usize) -> Result<()> {
        self.proxy(n)?.restore();
        Ok(())
    }

    fn proxy(&self, n: usize) -> Result<&Proxy> {
        self.proxies
            .get(n.wrapping_sub(1))
            .ok_or_else(|| Error::NotRunning {
                what: format!(
                    "a Redis proxy for API instance {n} (only with a standalone Redis, \
                     for instances 1 to {})",
                    self.proxies.len()
                ),
            })
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
        for node in self.redis.servers() {
            states.push(ProcessState {
                name: format!("redis-{}", node.port()),
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
    /// `api-1`, `worker-2`, `redis-<port>`, `postgres`.
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
