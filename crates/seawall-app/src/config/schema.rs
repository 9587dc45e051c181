//! The shape of the configuration and its defaults, and [`SETTINGS`]: the one
//! table that names every setting's TOML key, environment variables, flag and
//! help text. The command line, the environment layer, `--help` and the
//! README's table of keys are all produced from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::queue::{QueueName, QueuePolicy, Recurring};

/// The service's whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// The relational database.
    pub database: DatabaseConfig,
    /// Redis, when configured; in-memory backends stand in otherwise.
    pub redis: RedisConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// The demo dataset written into an empty database.
    pub demo: DemoConfig,
    /// Performance monitoring.
    pub perfmon: PerfmonConfig,
    /// Rate limiting.
    pub ratelimit: RateLimitConfig,
    /// The tiered cache in front of the reference workload.
    pub cache: CacheConfig,
    /// The job queues.
    pub queue: QueueConfig,
    /// The `seawall-worker` process.
    pub worker: WorkerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Traces exported over OTLP.
    pub otel: OtelConfig,
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGINT or SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// How long the service keeps serving after SIGINT or SIGTERM while
    /// `/readyz` already fails, so a load balancer stops sending it requests
    /// before the listener closes.
    #[serde(with = "duration")]
    pub shutdown_drain: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long one request may take, body included, before it is answered
    /// with 503.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers; a slower one
    /// is disconnected.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Longest accepted request target (path and query), in bytes.
    pub max_uri_bytes: usize,
    /// Most header fields one request may carry.
    pub max_headers: usize,
    /// Largest total size of one request's header fields, in bytes.
    pub max_header_bytes: usize,
    /// Most requests served at once (adaptive admission: the highest its
    /// limit goes, and where it starts); the rest wait up to `shed_wait`
    /// for a place, then get 503.
    pub max_in_flight: usize,
    /// How long a request waits for a place before it is shed.
    #[serde(with = "duration")]
    pub shed_wait: Duration,
    /// How requests in flight are limited: a limit found from their
    /// latency, by priority class (the default), or `max_in_flight` at
    /// once.
    pub admission: Admission,
    /// Compress responses (gzip, brotli) per `Accept-Encoding`.
    pub compression: bool,
    /// Origins allowed to call the API from a browser (CORS); empty is off.
    pub cors_origins: Vec<String>,
    /// Worker threads of the service's runtime; `None`: one per core
    /// available to the process.
    pub threads: Option<usize>,
}

/// The relational database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user:password@host/db`.
    pub url: String,
    /// Pool size: on a SQLite file, the readers' pool (writes have one
    /// connection of their own). `None`: see
    /// [`DatabaseConfig::pool_size`].
    pub max_connections: Option<u32>,
    /// PostgreSQL streaming replicas of `url` that take reads (see
    /// [`crate::db::replicas`]); each has a pool of `max_connections`. One
    /// found promoted becomes the primary, without a restart.
    /// Empty: every statement goes to `url`.
    pub replicas: Vec<String>,
    /// A replica not known to be current as of this long ago takes no
    /// reads.
    #[serde(with = "duration")]
    pub replica_max_lag: Duration,
    /// A replica this many bytes of WAL or more behind the primary takes
    /// no reads.
    pub replica_max_lag_bytes: u64,
    /// How long a read that must see everything committed before it began
    /// (a cache fill) waits for a replica to be found current before it
    /// goes to the primary; zero sends them all to the primary.
    #[serde(with = "duration")]
    pub replica_wait: Duration,
}

/// How stale the service's L1 may answer by default while Redis is out of
/// reach (`cache.degraded_ttl`): longer than the library's 1 s, since every
/// key read is loaded again once per bound meanwhile, and at 1 s the
/// statistics of 1,000 users, each recomputed every second, kept 8 % of
/// their goodput on two cores; at 10 s the mixed load kept all of it
/// (docs/benchmarks.md, "Redis killed under load").
pub const DEFAULT_DEGRADED_TTL: Duration = Duration::from_secs(10);

/// The most readers a SQLite file gets when no pool size is configured:
/// on 12 cores a reader per core spent 1.4–1.5× the CPU per request of the
/// best pool for no more throughput, and 8 readers served as much as any
/// (docs/benchmarks.md, the 16-core learning row).
pub const SQLITE_DEFAULT_READERS_MAX: u32 = 8;

/// `database.replica_max_lag` by default: a replica whose newest moment
/// known current is older takes no reads. Reads that must be current
/// (cache fills) check more strictly; this bounds what the others see.
pub const DEFAULT_REPLICA_MAX_LAG: Duration = Duration::from_secs(1);

/// `database.replica_max_lag_bytes` by default: 16 MiB of WAL.
pub const DEFAULT_REPLICA_MAX_LAG_BYTES: u64 = 16 << 20;

/// `database.replica_wait` by default: long enough for the replicas'
/// monitor to look twice.
pub const DEFAULT_REPLICA_WAIT: Duration = Duration::from_millis(20);

/// The pool size on PostgreSQL when none is configured. With 8, cache
/// misses queued for a connection under the mixed workload at 200
/// connections; 32 starved the database of CPU on two cores
/// (scripts/cache-workload, docs/benchmarks.md).
pub const POSTGRES_DEFAULT_POOL: u32 = 16;

impl DatabaseConfig {
    /// The pool size: `max_connections` when set; otherwise, on SQLite, one
    /// reader per core available to the process, at most
    /// [`SQLITE_DEFAULT_READERS_MAX`] (readers use the CPU and nothing else
    /// once the file is memory-mapped, so more readers than cores only add
    /// page caches and contention, and past about 8 they cost CPU and buy
    /// nothing), and
    /// [`POSTGRES_DEFAULT_POOL`] on PostgreSQL, whose connections wait on
    /// the network and the server.
    pub fn pool_size(&self) -> u32 {
        if let Some(size) = self.max_connections {
            return size;
        }
        if self.url.starts_with("sqlite:") {
            std::thread::available_parallelism()
                .map_or(1, |cores| u32::try_from(cores.get()).unwrap_or(u32::MAX))
                .clamp(1, SQLITE_DEFAULT_READERS_MAX)
        } else {
            POSTGRES_DEFAULT_POOL
        }
    }
}

/// Redis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` (TLS), `redis-cluster://`, `redis-sentinel://`
    /// and their TLS forms; `None` means in-memory backends.
    pub url: Option<String>,
    /// PEM file of the certificate authorities a TLS server's certificate is
    /// checked against, instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any TLS server certificate: for development only.
    pub tls_insecure: bool,
}

/// The admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The bearer token admin routes require; generated at start when `None`.
    pub token: Option<String>,
}

/// The demo dataset: written once into an empty database, deterministic for
/// given sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Write the dataset when the database holds none.
    pub seed: bool,
    /// Number of users.
    pub users: u32,
    /// Number of contents.
    pub contents: u32,
    /// Review schedules per user (each for a distinct content).
    pub schedules_per_user: u32,
    /// Review-history rows per user.
    pub history_per_user: u32,
}

/// Performance monitoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerfmonConfig {
    /// Put the perfmon layer on the HTTP routes (off only to measure its cost).
    pub http_layer: bool,
    /// Queries slower than this enter the slow-query log.
    #[serde(with = "duration")]
    pub slow_query: Duration,
    /// Requests slower than this enter the slow-API log.
    #[serde(with = "duration")]
    pub slow_api: Duration,
}

/// Rate limiting: the limiter profiles of the brief, each kept in memory, or
/// in Redis (shared by every instance) when a Redis URL is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Limit requests at all (off only to measure the service without it).
    pub enabled: bool,
    /// Proxies (CIDR networks) whose `client_ip_header` names the client;
    /// other peers' headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// The one header a trusted proxy names the client in, read from the
    /// right past trusted proxies: `x-forwarded-for`, `forwarded` (RFC
    /// 7239), `x-real-ip` or another list of addresses.
    pub client_ip_header: String,
    /// IPv6 clients are limited by their network of this many leading bits
    /// (a /64 is one subscriber; 128: each address).
    pub ipv6_prefix: u8,
    /// Requests per client IP on every route but the probes and `/metrics`.
    pub ddos: Profile,
    /// Requests per API key (`X-Api-Key`), else per user (`X-User-Id`, from a
    /// trusted proxy), else per client address, on `/api/`.
    pub api: Profile,
    /// Failed authentications (admin token, API key) per client IP.
    pub auth: Profile,
    /// Reports (`/api/analytics/stats`) per API key, user or client IP.
    pub report: Profile,
    /// The share of the `api` and `report` limits and of each tenant's
    /// quota admitted while the service's health is degraded (1: they do
    /// not tighten).
    pub health_degraded: f64,
    /// The share admitted while it is unhealthy, at most `health_degraded`.
    pub health_unhealthy: f64,
    /// How long the health must hold better before the limits loosen by
    /// one level (unhealthy to degraded, degraded to healthy).
    #[serde(with = "duration")]
    pub health_recover: Duration,
    /// How long a check waits for the limits' Redis before it counts as
    /// failed and the limit is decided in memory (and the store's breaker
    /// opens): what a request may wait for a stalled Redis, once.
    #[serde(with = "duration")]
    pub store_timeout: Duration,
    /// Abuse detection (`seawall_ratelimit::abuse`): off, observe (each
    /// finding is logged, counted and listed; nothing is done) or act (a
    /// client is tightened, then blocked, each for a while).
    pub abuse: AbuseMode,
    /// How often the abuse watch judges what it counted.
    #[serde(with = "duration")]
    pub abuse_interval: Duration,
    /// The fewest requests in an interval for a client or a route to be
    /// judged at all.
    pub abuse_min_requests: u64,
    /// How many times its usual share of all requests a client must send
    /// for an alarm on its rate to be a finding (a burst).
    pub abuse_burst: f64,
    /// How long a tightened client's requests cost four times as much of
    /// its limits.
    #[serde(with = "duration")]
    pub abuse_tighten_for: Duration,
    /// How long a block the abuse watch asks for lasts.
    #[serde(with = "duration")]
    pub abuse_block_for: Duration,
    /// Clients never acted on (only observed): keys as the limits count
    /// callers (`key:<id>`, `user:<id>`, an address), or networks.
    pub abuse_allow: Vec<String>,
}

/// What the service does about abuse it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbuseMode {
    /// No watch: nothing is counted.
    Off,
    /// Findings are logged, counted and listed, and nothing is done (a
    /// shadow mode, to learn what acting would do).
    #[default]
    Observe,
    /// A client is tightened on its first finding and blocked on one while
    /// tightened.
    Act,
}

/// The tiered cache: L1 in process, and Redis as L2 when a Redis URL is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache the reference workload's reads (off only to measure the
    /// service without it).
    pub enabled: bool,
    /// Most entries L1 holds.
    pub l1_entries: usize,
    /// How completed reviews are written: directly, or behind the cache
    /// through the `schedule` queue.
    pub review_writes: ReviewWrites,
    /// How many of the hottest keys of each cached family (due reviews,
    /// statistics, catalogue pages) a learned warm-up loads after a
    /// start, after a failover that cleared L1, and after a clear; 0
    /// learns nothing and warms nothing.
    pub warm_hot: usize,
    /// How stale L1 may answer while this instance cannot follow the other
    /// instances' invalidations (Redis is out of reach): a value is served
    /// at most this long after another instance replaced it, or after the
    /// stream was lost; zero serves nothing from L1 meanwhile (see
    /// `seawall_cache::TieredCacheBuilder::degraded_ttl`).
    #[serde(with = "duration")]
    pub degraded_ttl: Duration,
    /// Where an instance without Redis keeps the hot keys it learned over
    /// a restart; `None`: beside a SQLite database file
    /// (`<file>.hot-keys.json`), nowhere on PostgreSQL. With Redis they
    /// are kept there, shared by every instance.
    pub hot_keys_file: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            l1_entries: 100_000,
            review_writes: ReviewWrites::Direct,
            warm_hot: 1_000,
            degraded_ttl: DEFAULT_DEGRADED_TTL,
            hot_keys_file: None,
        }
    }
}

/// How the service limits the requests it serves at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    /// At most `server.max_in_flight`; the rest wait up to
    /// `server.shed_wait` for a place, then get 503.
    Static,
    /// A limit found from the requests' latency (starting at
    /// `server.max_in_flight`, which it never passes), filled by priority
    /// class: the probes and `/metrics` are never limited, the admin API
    /// with the admin token uses the whole limit, the rest of the API
    /// (reads and writes) and the dashboard most of it, the statistics,
    /// unknown paths and admin calls without the token half; a request with no room
    /// waits up to `server.shed_wait` for one (the highest class first),
    /// then gets 503. The default.
    #[default]
    Adaptive,
}

/// How `POST /api/review/complete` writes a review.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReviewWrites {
    /// Into the database before answering (write-through for the
    /// database; the user's cached reads are invalidated).
    #[default]
    Direct,
    /// Into the cache at once; the database write is a job on the
    /// `schedule` queue, applied by a worker once per review.
    WriteBehind,
}

/// The job queues: on Redis when a Redis URL is set (`queue.redis_url`,
/// else `redis.url`; the API produces, `seawall-worker` consumes), in
/// memory otherwise (the API runs the processors itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawQueueConfig")]
pub struct QueueConfig {
    /// The queues' own Redis, apart from the cache and rate limits (which
    /// want an evicting instance while queue data must never be evicted);
    /// `None` puts them on `redis.url`.
    pub redis_url: Option<String>,
    /// The Redis key prefix of every queue.
    pub prefix: String,
    /// The directory file jobs work in: exports and backups are written
    /// under it, imports read from it.
    pub files: PathBuf,
    /// How long a running job stays its worker's without a renewal (renewed
    /// every third of it): after a worker crashes, its jobs wait this long
    /// before another worker takes them. 1 s to 10 min.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Replicas an enqueue waits for (`WAIT`) before it is answered, so an
    /// acknowledged job survives the failover of its primary; a time-sale
    /// reservation waits for them too. 0 (the default) answers once the
    /// primary has it. 0 to 5.
    pub wait_replicas: u32,
    /// How long an enqueue waits for those replicas before it fails (503,
    /// retry with the same idempotency key). 1ms to 1m.
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
    /// The `email` queue's policy.
    pub email: QueuePolicy,
    /// The `report` queue's policy.
    pub report: QueuePolicy,
    /// The `schedule` queue's policy.
    pub schedule: QueuePolicy,
    /// The `notification` queue's policy.
    pub notification: QueuePolicy,
    /// The `analytics` queue's policy.
    pub analytics: QueuePolicy,
    /// The `backup` queue's policy.
    pub backup: QueuePolicy,
    /// The `export` queue's policy.
    pub export: QueuePolicy,
    /// The `import` queue's policy.
    pub import: QueuePolicy,
    /// The `order` queue's policy.
    pub order: QueuePolicy,
    /// When a backup (`BackupJob`) is enqueued on the `backup` queue, by
    /// its scheduler `nightly-backup`.
    pub nightly_backup: Recurring,
    /// When a refresh of the last day's statistics (`AnalyticsJob`) is
    /// enqueued on the `analytics` queue, by its scheduler
    /// `hourly-analytics`.
    pub hourly_analytics: Recurring,
    /// When a report over the last day for [`daily_report_user`](Self::daily_report_user)
    /// (`ReportJob`) is enqueued on the `report` queue, by its scheduler
    /// `daily-report`.
    pub daily_report: Recurring,
    /// The learner the daily report is for: a user id, at least 1.
    pub daily_report_user: i64,
}

impl QueueConfig {
    /// The policy of `queue`.
    pub fn policy(&self, queue: QueueName) -> &QueuePolicy {
        match queue {
            QueueName::Email => &self.email,
            QueueName::Report => &self.report,
            QueueName::Schedule => &self.schedule,
            QueueName::Notification => &self.notification,
            QueueName::Analytics => &self.analytics,
            QueueName::Backup => &self.backup,
            QueueName::Export => &self.export,
            QueueName::Import => &self.import,
            QueueName::Order => &self.order,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            prefix: "seawall".to_owned(),
            files: PathBuf::from("seawall-files"),
            lease: Duration::from_secs(30),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            email: QueueName::Email.default_policy(),
            report: QueueName::Report.default_policy(),
            schedule: QueueName::Schedule.default_policy(),
            notification: QueueName::Notification.default_policy(),
            analytics: QueueName::Analytics.default_policy(),
            backup: QueueName::Backup.default_policy(),
            export: QueueName::Export.default_policy(),
            import: QueueName::Import.default_policy(),
            order: QueueName::Order.default_policy(),
            nightly_backup: Recurring::Cron {
                expression: "0 3 * * *".to_owned(),
                zone: "UTC".to_owned(),
            },
            hourly_analytics: Recurring::Every(Duration::from_secs(3600)),
            daily_report: Recurring::Cron {
                expression: "0 6 * * *".to_owned(),
                zone: "UTC".to_owned(),
            },
            // The first learner the demo seed writes.
            daily_report_user: 1,
        }
    }
}

/// `[queue]` as the file spells it: each policy is text read over its
/// queue's default, each recurring job's schedule text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueueConfig {
    redis_url: Option<String>,
    prefix: Option<String>,
    files: Option<PathBuf>,
    #[serde(default, with = "optional_duration")]
    lease: Option<Duration>,
    wait_replicas: Option<u32>,
    #[serde(default, with = "optional_duration")]
    wait_timeout: Option<Duration>,
    email: Option<String>,
    report: Option<String>,
    schedule: Option<String>,
    notification: Option<String>,
    analytics: Option<String>,
    backup: Option<String>,
    export: Option<String>,
    import: Option<String>,
    order: Option<String>,
    nightly_backup: Option<String>,
    hourly_analytics: Option<String>,
    daily_report: Option<String>,
    daily_report_user: Option<i64>,
}

impl TryFrom<RawQueueConfig> for QueueConfig {
    type Error = String;

    fn try_from(raw: RawQueueConfig) -> Result<Self, Self::Error> {
        let read = |queue: QueueName, text: Option<String>| match text {
            None => Ok(queue.default_policy()),
            Some(text) => QueuePolicy::parse_over(queue.default_policy(), &text)
                .map_err(|error| format!("queue.{queue}: {error}")),
        };
        let recurring = |key: &str, text: Option<String>, default: Recurring| match text {
            None => Ok(default),
            Some(text) => Recurring::parse(&text).map_err(|error| format!("queue.{key}: {error}")),
        };
        let defaults = Self::default();
        Ok(Self {
            nightly_backup: recurring(
                "nightly_backup",
                raw.nightly_backup,
                defaults.nightly_backup,
            )?,
            hourly_analytics: recurring(
                "hourly_analytics",
                raw.hourly_analytics,
                defaults.hourly_analytics,
            )?,
            daily_report: recurring("daily_report", raw.daily_report, defaults.daily_report)?,
            daily_report_user: raw.daily_report_user.unwrap_or(defaults.daily_report_user),
            redis_url: raw.redis_url,
            prefix: raw.prefix.unwrap_or(defaults.prefix),
            files: raw.files.unwrap_or(defaults.files),
            lease: raw.lease.unwrap_or(defaults.lease),
            wait_replicas: raw.wait_replicas.unwrap_or(defaults.wait_replicas),
            wait_timeout: raw.wait_timeout.unwrap_or(defaults.wait_timeout),
            email: read(QueueName::Email, raw.email)?,
            report: read(QueueName::Report, raw.report)?,
            schedule: read(QueueName::Schedule, raw.schedule)?,
            notification: read(QueueName::Notification, raw.notification)?,
            analytics: read(QueueName::Analytics, raw.analytics)?,
            backup: read(QueueName::Backup, raw.backup)?,
            export: read(QueueName::Export, raw.export)?,
            import: read(QueueName::Import, raw.import)?,
            order: read(QueueName::Order, raw.order)?,
        })
    }
}

/// The `seawall-worker` process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub listen: SocketAddr,
    /// How long running jobs get to finish after SIGINT or SIGTERM; the
    /// rest go back to their queue.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Worker threads of the worker's runtime; `None`: one per core
    /// available to the process.
    pub threads: Option<usize>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            shutdown_timeout: Duration::from_secs(30),
            threads: None,
        }
    }
}

/// A limiter profile: `LIMIT/PERIOD`, then optionally `block DURATION`, the
/// time a key stays blocked once it exceeds the limit (`100/1m block 1m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Profile {
    /// Requests admitted per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
    /// How long a key is blocked after exceeding the limit (zero: not at all).
    pub block: Duration,
}

impl Profile {
    const fn new(limit: u64, period_secs: u64, block_secs: u64) -> Self {
        Self {
            limit,
            period: Duration::from_secs(period_secs),
            block: Duration::from_secs(block_secs),
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed =
            || format!("{text:?} is not LIMIT/PERIOD [block DURATION], such as 100/1m block 1m");
        let mut words = text.split_whitespace();
        let rate = words.next().ok_or_else(malformed)?;
        let (limit, period) = rate.split_once('/').ok_or_else(malformed)?;
        let limit = limit.parse::<u64>().map_err(|_| malformed())?;
        let period = humantime::parse_duration(period).map_err(|_| malformed())?;
        let block = match (words.next(), words.next(), words.next()) {
            (None, _, _) => Duration::ZERO,
            (Some("block"), Some(block), None) => {
                humantime::parse_duration(block).map_err(|_| malformed())?
            }
            _ => return Err(malformed()),
        };
        Ok(Self {
            limit,
            period,
            block,
        })
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            humantime::format_duration(self.period)
        )?;
        if !self.block.is_zero() {
            write!(f, " block {}", humantime::format_duration(self.block))?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Profile {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Profile> for String {
    fn from(profile: Profile) -> Self {
        profile.to_string()
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: Vec::new(),
            client_ip_header: "x-forwarded-for".to_owned(),
            ipv6_prefix: 64,
            ddos: Profile::new(1000, 1, 10),
            api: Profile::new(100, 60, 60),
            auth: Profile::new(5, 60, 15 * 60),
            report: Profile::new(10, 3600, 5 * 60),
            health_degraded: 0.5,
            health_unhealthy: 0.25,
            health_recover: Duration::from_secs(30),
            store_timeout: seawall_ratelimit::DEFAULT_TIMEOUT,
            abuse: AbuseMode::Observe,
            abuse_interval: Duration::from_secs(20),
            abuse_min_requests: 20,
            abuse_burst: 3.0,
            abuse_tighten_for: Duration::from_secs(10 * 60),
            abuse_block_for: Duration::from_secs(15 * 60),
            abuse_allow: Vec::new(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `seawall_api=debug,info`.
    pub filter: String,
    /// Human-readable text or one JSON object per line.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout: Duration::from_secs(30),
            shutdown_drain: Duration::ZERO,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            max_in_flight: 512,
            shed_wait: Duration::from_millis(100),
            admission: Admission::Adaptive,
            compression: true,
            cors_origins: Vec::new(),
            threads: None,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://seawall.db?mode=rwc".to_owned(),
            max_connections: None,
            replicas: Vec::new(),
            replica_max_lag: DEFAULT_REPLICA_MAX_LAG,
            replica_max_lag_bytes: DEFAULT_REPLICA_MAX_LAG_BYTES,
            replica_wait: DEFAULT_REPLICA_WAIT,
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            seed: true,
            users: 1_000,
            contents: 5_000,
            schedules_per_user: 200,
            history_per_user: 1_000,
        }
    }
}

impl Default for PerfmonConfig {
    fn default() -> Self {
        Self {
            http_layer: true,
            slow_query: Duration::from_secs(1),
            slow_api: Duration::from_secs(2),
        }
    }
}

/// Traces exported over OTLP (OpenTelemetry), off unless an endpoint is
/// set. The exporter also reads the standard variables this does not name:
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// `OTEL_TRACES_SAMPLER` and its argument, `OTEL_RESOURCE_ATTRIBUTES`, and
/// the batch processor's `OTEL_BSP_*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtelConfig {
    /// The OTLP/HTTP base URL (`http://collector:4318`): spans go to its
    /// `/v1/traces` as protobuf. `None`: no spans are exported.
    pub endpoint: Option<String>,
    /// The `service.name` of the spans; `None`: the binary's name.
    pub service_name: Option<String>,
    /// Which spans are exported: a `tracing` filter as `log.filter` is, on
    /// its own (debug spans can be exported while the log stays at info).
    pub filter: String,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: None,
            filter: "info".to_owned(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// The error a setting's parser gives for text it cannot read.
pub type ParseError = Box<dyn std::error::Error + Send + Sync>;

/// How a setting is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// No flag: file or environment only (secrets, which `ps` would show).
    None,
    /// `--name VALUE`.
    Value {
        /// The flag without its dashes.
        long: &'static str,
        /// The placeholder `--help` shows for the value.
        value_name: &'static str,
    },
    /// `--name` alone sets the setting to `value` (`--no-seed` sets
    /// `demo.seed` to `false`).
    Switch {
        /// The flag without its dashes.
        long: &'static str,
        /// What the switch sets, as the text the environment would hold.
        value: &'static str,
    },
}

/// One setting: its TOML key, the environment variables and the flag that set
/// it, and how its text is read and shown.
pub struct Setting {
    /// `section.key` in the TOML file.
    pub key: &'static str,
    /// Environment variables, the first set (and non-empty) one wins.
    pub env: &'static [&'static str],
    /// The command-line flag.
    pub flag: Flag,
    /// One line for `--help` and the README.
    pub help: &'static str,
    /// What the default means when the value alone does not say it.
    pub default_note: Option<&'static str>,
    pub(crate) show: fn(&Config) -> Option<String>,
    pub(crate) parse: fn(&mut Config, &str) -> Result<(), ParseError>,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("key", &self.key)
            .field("env", &self.env)
            .field("flag", &self.flag)
            .finish_non_exhaustive()
    }
}

impl Setting {
    /// The value in `config` as the environment would spell it; `None` when
    /// unset.
    pub fn show(&self, config: &Config) -> Option<String> {
        (self.show)(config)
    }

    /// Reads `text` (as the environment or a flag holds it) into `config`.
    pub fn apply(&self, config: &mut Config, text: &str) -> Result<(), ParseError> {
        (self.parse)(config, text)
    }

    /// The default as `--help` and the README show it.
    pub fn default_text(&self) -> String {
        let value = self.show(&Config::default());
        match (value, self.default_note) {
            (Some(value), Some(note)) => format!("{value} ({note})"),
            (Some(value), None) => value,
            (None, Some(note)) => note.to_owned(),
            (None, None) => "none".to_owned(),
        }
    }
}

/// A value a setting holds, read from and shown as environment text.
pub(crate) trait SettingValue: Sized {
    fn read(text: &str) -> Result<Self, ParseError>;
    fn show(&self) -> Option<String>;
}

macro_rules! from_str_values {
    ($($ty:ty),*) => {$(
        impl SettingValue for $ty {
            fn read(text: &str) -> Result<Self, ParseError> {
                Ok(text.parse()?)
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
from_str_values!(SocketAddr, usize, u32, u64, u8, i64, f64, String, Profile);

impl SettingValue for Recurring {
    fn read(text: &str) -> Result<Self, ParseError> {
        Ok(Self::parse(text)?)
    }
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl SettingValue for PathBuf {
    fn read(text: &str) -> Result<Self, ParseError> {
        Ok(Self::from(text))
    }
    fn show(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl SettingValue for Duration {
    fn read(text: &str) -> Result<Self, ParseError> {
        Ok(humantime::parse_duration(text)?)
    }
    fn show(&self) -> Option<String> {
        Some(humantime::format_duration(*self).to_string())
    }
}

impl SettingValue for bool {
    fn read(text: &str) -> Result<Self, ParseError> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("expected true, false, 1 or 0".into()),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl SettingValue for LogFormat {
    fn read(text: &str) -> Result<Self, ParseError> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected text or json".into()),
        }
    }
    fn show(&self) -> Option<String> {
        Some(
            match self {
                Self::Text => "text",
                Self::Json => "json",
            }
            .to_owned(),
        )
    }
}

impl SettingValue for Admission {
    fn read(text: &str) -> Result<Self, ParseError> {
        match text.to_ascii_lowercase().as_str() {
            "static" => Ok(Self::Static),
            "adaptive" => Ok(Self::Adaptive),
            _ => Err("expected static or adaptive".into()),
        }
    }
    fn show(&self) -> Option<String> {
        Some(
            match self {
                Self::Static => "static",
                Self::Adaptive => "adaptive",
            }
            .to_owned(),
        )
    }
}

impl SettingValue for AbuseMode {
    fn read(text: &str) -> Result<Self, ParseError> {
        match text.to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "observe" => Ok(Self::Observe),
            "act" => Ok(Self::Act),
            _ => Err("expected off, observe or act".into()),
        }
    }
    fn show(&self) -> Option<String> {
        Some(
            match self {
                Self::Off => "off",
                Self::Observe => "observe",
                Self::Act => "act",
            }
            .to_owned(),
        )
    }
}

impl SettingValue for ReviewWrites {
    fn read(text: &str) -> Result<Self, ParseError> {
        match text.to_ascii_lowercase().as_str() {
            "direct" => Ok(Self::Direct),
            "write-behind" => Ok(Self::WriteBehind),
            _ => Err("expected direct or write-behind".into()),
        }
    }
    fn show(&self) -> Option<String> {
        Some(
            match self {
                Self::Direct => "direct",
                Self::WriteBehind => "write-behind",
            }
            .to_owned(),
        )
    }
}

/// A comma-separated list; blanks around items are dropped.
impl SettingValue for Vec<String> {
    fn read(text: &str) -> Result<Self, ParseError> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect())
    }
    fn show(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(","))
    }
}

impl<T: SettingValue> SettingValue for Option<T> {
    fn read(text: &str) -> Result<Self, ParseError> {
        T::read(text).map(Some)
    }
    fn show(&self) -> Option<String> {
        self.as_ref().and_then(T::show)
    }
}

/// A [`Setting`] for the field at `$section.$field`, whose TOML key is that
/// same path, so the table and the structs cannot disagree.
macro_rules! setting {
    ($section:ident . $field:ident, env: [$($env:literal),+], flag: $flag:expr, help: $help:literal $(, default: $note:literal)? $(,)?) => {
        Setting {
            key: concat!(stringify!($section), ".", stringify!($field)),
            env: &[$($env),+],
            flag: $flag,
            help: $help,
            default_note: setting!(@note $($note)?),
            show: |config| SettingValue::show(&config.$section.$field),
            parse: |config, text| {
                config.$section.$field = SettingValue::read(text)?;
                Ok(())
            },
        }
    };
    (@note) => { None };
    (@note $note:literal) => { Some($note) };
}

/// The [`Setting`] of one queue's policy, read over that queue's default.
macro_rules! queue_policy {
    ($queue:ident, $variant:ident, env: $env:literal, flag: $flag:literal, help: $help:literal) => {
        Setting {
            key: concat!("queue.", stringify!($queue)),
            env: &[$env],
            flag: value($flag, "POLICY"),
            help: $help,
            default_note: None,
            show: |config| Some(config.queue.$queue.to_string()),
            parse: |config, text| {
                config.queue.$queue =
                    QueuePolicy::parse_over(QueueName::$variant.default_policy(), text)?;
                Ok(())
            },
        }
    };
}

const fn value(long: &'static str, value_name: &'static str) -> Flag {
    Flag::Value { long, value_name }
}

/// Every setting, in the order `--help` and the README list them.
pub static SETTINGS: &[Setting] = &[
    setting!(server.listen, env: ["SEAWALL_LISTEN"], flag: value("listen", "ADDR"),
        help: "Address to listen on, IP:PORT"),
    setting!(server.shutdown_timeout, env: ["SEAWALL_SHUTDOWN_TIMEOUT"],
        flag: value("shutdown-timeout", "DURATION"),
        help: "Time in-flight requests get to finish after SIGINT or SIGTERM, at most 1h"),
    setting!(server.shutdown_drain, env: ["SEAWALL_SHUTDOWN_DRAIN"],
        flag: value("shutdown-drain", "DURATION"),
        help: "Time the service keeps serving after SIGINT or SIGTERM with /readyz failing, so a load balancer drains it first; at most 5m"),
    setting!(server.request_timeout, env: ["SEAWALL_REQUEST_TIMEOUT"],
        flag: value("request-timeout", "DURATION"),
        help: "Time one request may take before it is answered with 503, 1ms to 1h"),
    setting!(server.header_read_timeout, env: ["SEAWALL_HEADER_READ_TIMEOUT"],
        flag: value("header-read-timeout", "DURATION"),
        help: "Time a client gets to send a request's headers before it is disconnected, 1ms to 10m"),
    setting!(server.max_body_bytes, env: ["SEAWALL_MAX_BODY_BYTES"],
        flag: value("max-body-bytes", "N"),
        help: "Largest accepted request body in bytes, 1 to 67108864 (413 above)"),
    setting!(server.max_uri_bytes, env: ["SEAWALL_MAX_URI_BYTES"],
        flag: value("max-uri-bytes", "N"),
        help: "Longest accepted request target (path and query) in bytes, 64 to 32768 (414 above)"),
    setting!(server.max_headers, env: ["SEAWALL_MAX_HEADERS"], flag: value("max-headers", "N"),
        help: "Most header fields one request may carry, 8 to 500 (431 above)"),
    setting!(server.max_header_bytes, env: ["SEAWALL_MAX_HEADER_BYTES"],
        flag: value("max-header-bytes", "N"),
        help: "Largest total size of a request's header fields in bytes, 1024 to 262144 (431 above)"),
    setting!(server.max_in_flight, env: ["SEAWALL_MAX_IN_FLIGHT"],
        flag: value("max-in-flight", "N"),
        help: "Most requests served at once (adaptive admission: the most its limit reaches), 1 to 100000; the probes and /metrics are not counted"),
    setting!(server.shed_wait, env: ["SEAWALL_SHED_WAIT"], flag: value("shed-wait", "DURATION"),
        help: "How long a request waits for a place before it is shed with 503, at most 10s"),
    setting!(server.admission, env: ["SEAWALL_ADMISSION"], flag: value("admission", "MODE"),
        help: "How requests in flight are limited: static (server.max_in_flight, waiting up to server.shed_wait) or adaptive (a limit found from latency, at most server.max_in_flight, by priority class, the rest waiting the same way)"),
    setting!(server.compression, env: ["SEAWALL_COMPRESSION"],
        flag: Flag::Switch { long: "no-compression", value: "false" },
        help: "Compress responses (gzip, br) per Accept-Encoding; --no-compression turns it off"),
    setting!(server.cors_origins, env: ["SEAWALL_CORS_ORIGINS"],
        flag: value("cors-origins", "ORIGINS"),
        help: "Comma-separated origins allowed to call the API from a browser, such as https://app.example.com",
        default: "none: CORS is off"),
    setting!(server.threads, env: ["SEAWALL_THREADS"], flag: value("threads", "N"),
        help: "Worker threads of the service's runtime, 1 to 1024",
        default: "one per core available"),
    setting!(database.url, env: ["SEAWALL_DATABASE_URL", "DATABASE_URL"],
        flag: value("database-url", "URL"),
        help: "Database URL, sqlite:... or postgres://..."),
    setting!(database.max_connections, env: ["SEAWALL_DB_MAX_CONNECTIONS"],
        flag: value("db-max-connections", "N"),
        help: "Database pool size, 1 to 1000; on a SQLite file the readers' pool, writes having one connection of their own",
        default: "SQLite: one reader per core available, at most 8; PostgreSQL: 16"),
    setting!(database.replicas, env: ["SEAWALL_DATABASE_REPLICAS"],
        flag: value("database-replicas", "URLS"),
        help: "Comma-separated postgres:// URLs of streaming replicas of database.url that take reads, each with a pool of database.max_connections; one found promoted becomes the primary",
        default: "none: every statement goes to database.url"),
    setting!(database.replica_max_lag, env: ["SEAWALL_DATABASE_REPLICA_MAX_LAG"],
        flag: value("database-replica-max-lag", "DURATION"),
        help: "A replica not known to be current as of this long ago takes no reads, 10ms to 1h"),
    setting!(database.replica_max_lag_bytes, env: ["SEAWALL_DATABASE_REPLICA_MAX_LAG_BYTES"],
        flag: value("database-replica-max-lag-bytes", "N"),
        help: "A replica this many bytes of WAL or more behind the primary takes no reads, at least 1"),
    setting!(database.replica_wait, env: ["SEAWALL_DATABASE_REPLICA_WAIT"],
        flag: value("database-replica-wait", "DURATION"),
        help: "How long a read that must see every write before it (a cache fill) waits for a current replica before it goes to the primary, at most 1s; it waits only while a replica has lately caught up within this time; 0 sends those to the primary"),
    setting!(redis.url, env: ["SEAWALL_REDIS_URL", "REDIS_URL"], flag: value("redis-url", "URL"),
        help: "Redis URL: redis://, rediss:// (TLS), redis-cluster://, redis-sentinel:// or their rediss- forms",
        default: "none: in-memory backends"),
    setting!(redis.tls_ca_file, env: ["SEAWALL_REDIS_TLS_CA_FILE"],
        flag: value("redis-tls-ca-file", "PATH"),
        help: "PEM file of the CAs a rediss:// server's certificate is checked against",
        default: "the system's roots"),
    setting!(redis.tls_insecure, env: ["SEAWALL_REDIS_TLS_INSECURE"],
        flag: Flag::Switch { long: "redis-tls-insecure", value: "true" },
        help: "Accept any certificate from a rediss:// server: for development only"),
    setting!(admin.token, env: ["SEAWALL_ADMIN_TOKEN"], flag: Flag::None,
        help: "The admin bearer token, at least 16 visible ASCII characters; no flag, since ps shows command lines",
        default: "generated at start and printed once"),
    setting!(demo.seed, env: ["SEAWALL_DEMO_SEED"],
        flag: Flag::Switch { long: "no-seed", value: "false" },
        help: "Write the demo dataset into an empty database; --no-seed turns it off"),
    setting!(demo.users, env: ["SEAWALL_DEMO_USERS"], flag: value("demo-users", "N"),
        help: "Demo dataset: number of users"),
    setting!(demo.contents, env: ["SEAWALL_DEMO_CONTENTS"], flag: value("demo-contents", "N"),
        help: "Demo dataset: number of contents"),
    setting!(demo.schedules_per_user, env: ["SEAWALL_DEMO_SCHEDULES_PER_USER"],
        flag: value("demo-schedules-per-user", "N"),
        help: "Demo dataset: review schedules per user, at most the number of contents"),
    setting!(demo.history_per_user, env: ["SEAWALL_DEMO_HISTORY_PER_USER"],
        flag: value("demo-history-per-user", "N"),
        help: "Demo dataset: review-history rows per user"),
    setting!(perfmon.http_layer, env: ["SEAWALL_PERFMON_LAYER"],
        flag: Flag::Switch { long: "no-perfmon-layer", value: "false" },
        help: "Put the perfmon layer on the HTTP routes; --no-perfmon-layer leaves it off, to measure its cost"),
    setting!(perfmon.slow_query, env: ["SEAWALL_SLOW_QUERY"], flag: value("slow-query", "DURATION"),
        help: "Queries slower than this enter the slow-query log"),
    setting!(perfmon.slow_api, env: ["SEAWALL_SLOW_API"], flag: value("slow-api", "DURATION"),
        help: "Requests slower than this enter the slow-API log"),
    setting!(ratelimit.enabled, env: ["SEAWALL_RATELIMIT"],
        flag: Flag::Switch { long: "no-ratelimit", value: "false" },
        help: "Rate-limit requests; --no-ratelimit turns every limiter off"),
    setting!(ratelimit.trusted_proxies, env: ["SEAWALL_TRUSTED_PROXIES"],
        flag: value("trusted-proxies", "CIDRS"),
        help: "Comma-separated addresses or networks of the proxies believed on the client-IP header, X-User-Id, X-Tenant-Id and traceparent: each must delete what clients sent in them; name the proxy's own address (10.1.2.3/32), not a network other peers share",
        default: "none: the peer address is the client"),
    setting!(ratelimit.client_ip_header, env: ["SEAWALL_CLIENT_IP_HEADER"],
        flag: value("client-ip-header", "NAME"),
        help: "The one header a trusted proxy names the client in, read from the right past trusted proxies: x-forwarded-for, forwarded (RFC 7239), x-real-ip or another"),
    setting!(ratelimit.ipv6_prefix, env: ["SEAWALL_IPV6_PREFIX"],
        flag: value("ipv6-prefix", "BITS"),
        help: "IPv6 clients are limited by their network of this many bits, 32 to 128 (128: each address)"),
    setting!(ratelimit.ddos, env: ["SEAWALL_RATELIMIT_DDOS"],
        flag: value("ratelimit-ddos", "PROFILE"),
        help: "Requests per client IP on every route but the probes and /metrics: LIMIT/PERIOD [block DURATION]"),
    setting!(ratelimit.api, env: ["SEAWALL_RATELIMIT_API"], flag: value("ratelimit-api", "PROFILE"),
        help: "Requests per API key, else per X-User-Id from a trusted proxy, else per client IP, on /api/"),
    setting!(ratelimit.auth, env: ["SEAWALL_RATELIMIT_AUTH"],
        flag: value("ratelimit-auth", "PROFILE"),
        help: "Failed authentications (admin token, API key) per client IP"),
    setting!(ratelimit.report, env: ["SEAWALL_RATELIMIT_REPORT"],
        flag: value("ratelimit-report", "PROFILE"),
        help: "Reports (/api/analytics/stats) per API key, user or client IP"),
    setting!(ratelimit.health_degraded, env: ["SEAWALL_RATELIMIT_HEALTH_DEGRADED"],
        flag: value("ratelimit-health-degraded", "SHARE"),
        help: "Share of the api and report limits and of each tenant's quota admitted while the service's health is degraded, 0.01 to 1 (1: no tightening)"),
    setting!(ratelimit.health_unhealthy, env: ["SEAWALL_RATELIMIT_HEALTH_UNHEALTHY"],
        flag: value("ratelimit-health-unhealthy", "SHARE"),
        help: "Share of those limits admitted while the service is unhealthy, 0.01 to ratelimit.health_degraded"),
    setting!(ratelimit.health_recover, env: ["SEAWALL_RATELIMIT_HEALTH_RECOVER"],
        flag: value("ratelimit-health-recover", "DURATION"),
        help: "How long the health must hold better before tightened limits loosen by one level, 1s to 1h"),
    setting!(ratelimit.store_timeout, env: ["SEAWALL_RATELIMIT_STORE_TIMEOUT"],
        flag: value("ratelimit-store-timeout", "DURATION"),
        help: "How long a rate-limit check waits for Redis before the limit is decided in memory (once per outage: the store's breaker then answers at once), 1ms to 10s"),
    setting!(ratelimit.abuse, env: ["SEAWALL_RATELIMIT_ABUSE"],
        flag: value("ratelimit-abuse", "MODE"),
        help: "Abuse detection (bursts, scraping, credential stuffing, creeping route errors): off, observe (findings are logged, counted and listed at GET /api/rate-limit/abuse; nothing is done) or act (a client is tightened, then blocked, each for a while)"),
    setting!(ratelimit.abuse_interval, env: ["SEAWALL_RATELIMIT_ABUSE_INTERVAL"],
        flag: value("ratelimit-abuse-interval", "DURATION"),
        help: "How often the abuse watch judges what it counted, 1s to 1h"),
    setting!(ratelimit.abuse_min_requests, env: ["SEAWALL_RATELIMIT_ABUSE_MIN_REQUESTS"],
        flag: value("ratelimit-abuse-min-requests", "N"),
        help: "The fewest requests in an interval for a client or a route to be judged, 1 to 1000000"),
    setting!(ratelimit.abuse_burst, env: ["SEAWALL_RATELIMIT_ABUSE_BURST"],
        flag: value("ratelimit-abuse-burst", "FACTOR"),
        help: "How many times its usual share of all requests a client must send for its rate to be a finding, 1 to 1000"),
    setting!(ratelimit.abuse_tighten_for, env: ["SEAWALL_RATELIMIT_ABUSE_TIGHTEN_FOR"],
        flag: value("ratelimit-abuse-tighten-for", "DURATION"),
        help: "How long a tightened client's requests cost four times as much of its limits, 1s to 1d"),
    setting!(ratelimit.abuse_block_for, env: ["SEAWALL_RATELIMIT_ABUSE_BLOCK_FOR"],
        flag: value("ratelimit-abuse-block-for", "DURATION"),
        help: "How long a block the abuse watch asks for lasts, 1s to 1d"),
    setting!(ratelimit.abuse_allow, env: ["SEAWALL_RATELIMIT_ABUSE_ALLOW"],
        flag: value("ratelimit-abuse-allow", "LIST"),
        help: "Comma-separated clients the abuse watch never acts on (only observes): key:<id>, user:<id>, addresses or networks",
        default: "none"),
    setting!(cache.enabled, env: ["SEAWALL_CACHE"],
        flag: Flag::Switch { long: "no-cache", value: "false" },
        help: "Cache the reference workload's reads; --no-cache reads the database every time"),
    setting!(cache.l1_entries, env: ["SEAWALL_CACHE_L1_ENTRIES"],
        flag: value("cache-l1-entries", "N"),
        help: "Most entries the in-process cache holds, 1 to 100000000"),
    setting!(cache.warm_hot, env: ["SEAWALL_CACHE_WARM_HOT"],
        flag: value("cache-warm-hot", "N"),
        help: "How many of each cached family's hottest keys a warm-up loads after a start, a failover that cleared L1, or a clear, as the cache learned them from its reads; 0 to 100000 (0: learn nothing)"),
    setting!(cache.degraded_ttl, env: ["SEAWALL_CACHE_DEGRADED_TTL"],
        flag: value("cache-degraded-ttl", "DURATION"),
        help: "How stale the in-process cache may answer while Redis is out of reach (the other instances' invalidations cannot be followed): a value another instance replaced is served at most this long after the write, or after the loss; 0s to 1m (0s: none is served meanwhile)"),
    setting!(cache.hot_keys_file, env: ["SEAWALL_CACHE_HOT_KEYS_FILE"],
        flag: value("cache-hot-keys-file", "PATH"),
        help: "Where an instance without Redis keeps the hot keys it learned over a restart (with Redis they are kept there)",
        default: "beside a SQLite file: <file>.hot-keys.json"),
    setting!(cache.review_writes, env: ["SEAWALL_REVIEW_WRITES"],
        flag: value("review-writes", "MODE"),
        help: "How completed reviews are written: direct, or write-behind (cache at once, database through the schedule queue)"),
    setting!(queue.redis_url, env: ["SEAWALL_QUEUE_REDIS_URL"],
        flag: value("queue-redis-url", "URL"),
        help: "Redis URL of the job queues when they live apart from the cache and rate limits (a noeviction instance), same schemes as redis.url",
        default: "redis.url"),
    setting!(queue.prefix, env: ["SEAWALL_QUEUE_PREFIX"], flag: value("queue-prefix", "PREFIX"),
        help: "Redis key prefix of the job queues"),
    setting!(queue.files, env: ["SEAWALL_FILES"], flag: value("files", "DIR"),
        help: "Directory of file jobs: exports and backups are written under it, imports read from it"),
    setting!(queue.lease, env: ["SEAWALL_QUEUE_LEASE"], flag: value("queue-lease", "DURATION"),
        help: "How long a running job stays its worker's without a renewal: a crashed worker's jobs go to another after this, 1s to 10m"),
    setting!(queue.wait_replicas, env: ["SEAWALL_QUEUE_WAIT_REPLICAS"],
        flag: value("queue-wait-replicas", "N"),
        help: "Replicas an enqueue (and a time-sale reservation) waits for before it is answered, so an acknowledged job or order survives a failover; 0 to 5"),
    setting!(queue.wait_timeout, env: ["SEAWALL_QUEUE_WAIT_TIMEOUT"],
        flag: value("queue-wait-timeout", "DURATION"),
        help: "How long an enqueue or a reservation waits for those replicas before it fails with 503, 1ms to 1m"),
    queue_policy!(email, Email, env: "SEAWALL_QUEUE_EMAIL", flag: "queue-email",
        help: "email queue: concurrency=N adaptive=on|off attempts=N backoff=BASE..CAP|fixed:DELAY timeout=DURATION backlog=N, keys left out keep their default (adaptive=on: at most concurrency at once, fewer while the runs slow down; backlog: the waiting jobs it is meant to hold, which the backlog forecast is judged against, 10000 by default)"),
    queue_policy!(report, Report, env: "SEAWALL_QUEUE_REPORT", flag: "queue-report",
        help: "report queue policy, as for email"),
    queue_policy!(schedule, Schedule, env: "SEAWALL_QUEUE_SCHEDULE", flag: "queue-schedule",
        help: "schedule queue policy (also review writes behind the cache)"),
    queue_policy!(notification, Notification, env: "SEAWALL_QUEUE_NOTIFICATION",
        flag: "queue-notification", help: "notification queue policy"),
    queue_policy!(analytics, Analytics, env: "SEAWALL_QUEUE_ANALYTICS", flag: "queue-analytics",
        help: "analytics queue policy"),
    queue_policy!(backup, Backup, env: "SEAWALL_QUEUE_BACKUP", flag: "queue-backup",
        help: "backup queue policy"),
    queue_policy!(export, Export, env: "SEAWALL_QUEUE_EXPORT", flag: "queue-export",
        help: "export queue policy"),
    queue_policy!(import, Import, env: "SEAWALL_QUEUE_IMPORT", flag: "queue-import",
        help: "import queue policy"),
    queue_policy!(order, Order, env: "SEAWALL_QUEUE_ORDER", flag: "queue-order",
        help: "order queue policy (time-sale orders written to the database)"),
    setting!(queue.nightly_backup, env: ["SEAWALL_QUEUE_NIGHTLY_BACKUP"],
        flag: value("queue-nightly-backup", "SCHEDULE"),
        help: "When a backup is enqueued (scheduler nightly-backup of the backup queue): off, every DURATION (1s to 1day, on its multiples since the epoch) or cron FIELDS ZONE (5 or 6 cron fields, then an IANA time zone)"),
    setting!(queue.hourly_analytics, env: ["SEAWALL_QUEUE_HOURLY_ANALYTICS"],
        flag: value("queue-hourly-analytics", "SCHEDULE"),
        help: "When the last day's statistics are refreshed (scheduler hourly-analytics of the analytics queue), as for queue.nightly_backup"),
    setting!(queue.daily_report, env: ["SEAWALL_QUEUE_DAILY_REPORT"],
        flag: value("queue-daily-report", "SCHEDULE"),
        help: "When a report over the last day for queue.daily_report_user is enqueued (scheduler daily-report of the report queue), as for queue.nightly_backup"),
    setting!(queue.daily_report_user, env: ["SEAWALL_QUEUE_DAILY_REPORT_USER"],
        flag: value("queue-daily-report-user", "USER_ID"),
        help: "The learner the daily report is for, a user id of at least 1",
        default: "the demo seed's first learner"),
    setting!(worker.listen, env: ["SEAWALL_WORKER_LISTEN"], flag: value("worker-listen", "ADDR"),
        help: "seawall-worker: address of /livez, /readyz and /metrics, IP:PORT"),
    setting!(worker.shutdown_timeout, env: ["SEAWALL_WORKER_SHUTDOWN_TIMEOUT"],
        flag: value("worker-shutdown-timeout", "DURATION"),
        help: "seawall-worker: time running jobs get to finish after SIGINT or SIGTERM, at most 1h; the rest go back to their queue"),
    setting!(worker.threads, env: ["SEAWALL_WORKER_THREADS"], flag: value("worker-threads", "N"),
        help: "seawall-worker: worker threads of its runtime, 1 to 1024",
        default: "one per core available"),
    setting!(log.filter, env: ["SEAWALL_LOG", "RUST_LOG"], flag: value("log", "FILTER"),
        help: "Log filter such as info or seawall_api=debug,info"),
    setting!(log.format, env: ["SEAWALL_LOG_FORMAT"], flag: value("log-format", "FORMAT"),
        help: "Log line format: text, or json for one object per line"),
    setting!(otel.endpoint, env: ["SEAWALL_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
        flag: value("otel-endpoint", "URL"),
        help: "OTLP/HTTP base URL spans are exported to (protobuf, to its /v1/traces), such as http://collector:4318",
        default: "none: no export"),
    setting!(otel.service_name, env: ["SEAWALL_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"],
        flag: value("otel-service-name", "NAME"),
        help: "The service.name of exported spans",
        default: "the binary's name"),
    setting!(otel.filter, env: ["SEAWALL_OTEL_FILTER"], flag: value("otel-filter", "FILTER"),
        help: "Which spans are exported, a filter as for the log, such as info or seawall_cache=debug,info"),
];

/// The README's table of settings, produced from [`SETTINGS`].
pub fn reference_table() -> String {
    let mut table = String::from(
        "| key (TOML) | environment | flag | default | meaning |\n|---|---|---|---|---|\n",
    );
    table.push_str(
        "| | `SEAWALL_CONFIG` | `--config PATH` | none: no file is read | the TOML file to read |\n",
    );
    for setting in SETTINGS {
        let env = setting
            .env
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", then ");
        let flag = match setting.flag {
            Flag::None => String::new(),
            Flag::Value { long, value_name } => format!("`--{long} {value_name}`"),
            Flag::Switch { long, .. } => format!("`--{long}`"),
        };
        let default = setting.default_text().replace('|', "\\|");
        let help = setting.help.replace('|', "\\|");
        table.push_str(&format!(
            "| `{}` | {env} | {flag} | `{default}` | {help} |\n",
            setting.key
        ));
    }
    table
}

/// Durations as human-readable strings (`"30s"`, `"1m 30s"`, `"250ms"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// An optional humantime duration, for the raw sections.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Dotted paths of every leaf of a JSON value.
    fn leaves(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match value.as_object() {
            Some(map) if !prefix.contains('.') => {
                for (key, inner) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(inner, &path, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }

    #[test]
    fn every_field_has_exactly_one_setting() {
        let json = serde_json::to_value(Config::default()).expect("serialises");
        let mut fields = BTreeSet::new();
        leaves(&json, "", &mut fields);
        let keys: Vec<&str> = SETTINGS.iter().map(|setting| setting.key).collect();
        let unique: BTreeSet<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        assert_eq!(unique.len(), keys.len(), "a key is listed twice");
        assert_eq!(unique, fields);
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut envs = BTreeSet::new();
        let mut flags = BTreeSet::new();
        for setting in SETTINGS {
            for name in setting.env {
                assert!(envs.insert(*name), "{name} is used twice");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
            }
            let long = match setting.flag {
                Flag::None => continue,
                Flag::Value { long, .. } | Flag::Switch { long, .. } => long,
            };
            assert!(flags.insert(long), "--{long} is used twice");
        }
    }

    #[test]
    fn every_default_reads_back() {
        let defaults = Config::default();
        for setting in SETTINGS {
            if let Some(text) = setting.show(&defaults) {
                let mut config = Config::default();
                setting.apply(&mut config, &text).expect(setting.key);
                assert_eq!(config, defaults, "{} = {text}", setting.key);
            }
        }
    }

    #[test]
    fn switches_set_values_their_setting_reads() {
        for setting in SETTINGS {
            if let Flag::Switch { value, .. } = setting.flag {
                let mut config = Config::default();
                setting.apply(&mut config, value).expect(setting.key);
                assert_ne!(config, Config::default(), "{} changes nothing", setting.key);
            }
        }
    }

    #[test]
    fn lists_split_on_commas() {
        let setting = SETTINGS
            .iter()
            .find(|setting| setting.key == "server.cors_origins")
            .expect("listed");
        let mut config = Config::default();
        setting
            .apply(&mut config, " https://a.example , https://b.example:8443,,")
            .expect("reads");
        assert_eq!(
            config.server.cors_origins,
            ["https://a.example", "https://b.example:8443"]
        );
        assert_eq!(
            setting.show(&config).as_deref(),
            Some("https://a.example,https://b.example:8443")
        );
    }

    #[test]
    fn the_readme_table_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let (begin, end) = ("<!-- settings:begin -->\n", "<!-- settings:end -->");
        let start = readme.find(begin).expect("README has the settings markers") + begin.len();
        let stop = readme.find(end).expect("README has the settings markers");
        let table = reference_table();
        if readme[start..stop] != table {
            if std::env::var_os("SEAWALL_UPDATE_README").is_some() {
                let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
                std::fs::write(path, updated).expect("write README.md");
            } else {
                panic!(
                    "README.md's table of settings is out of date; rewrite it with \
                     `SEAWALL_UPDATE_README=1 cargo test -p seawall-app --lib readme_table`"
                );
            }
        }
    }
}
