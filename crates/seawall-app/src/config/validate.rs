//! Validation: the rules a usable configuration follows, checked after every
//! layer is merged, and the masked copy that is safe to log.

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use seawall_perfmon::sanitize::mask_secrets;

use super::error::ConfigError;
use super::schema::{
    Config, DatabaseConfig, DemoConfig, RateLimitConfig, RedisConfig, ReviewWrites, ServerConfig,
};

const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
const SHUTDOWN_TIMEOUT_LIMIT: Duration = Duration::from_secs(60 * 60);
const REQUEST_TIMEOUT_LIMIT: Duration = Duration::from_secs(60 * 60);
const HEADER_READ_TIMEOUT_LIMIT: Duration = Duration::from_secs(10 * 60);
const SHED_WAIT_LIMIT: Duration = Duration::from_secs(10);
/// The longest `cache.degraded_ttl`: past a minute, serving what the other
/// instances may have replaced is no longer a brief degradation.
const DEGRADED_TTL_LIMIT: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS_LIMIT: u32 = 1_000;
/// The most runtime worker threads a setting may ask for: far more than any
/// machine's cores, so a larger number is a typo.
const THREADS_LIMIT: usize = 1_024;
const DEMO_SIZE_LIMIT: u32 = 10_000_000;
const DEMO_HISTORY_ROWS_LIMIT: u64 = 100_000_000;
const ADMIN_TOKEN_MIN_LEN: usize = 16;
const MASK: &str = "***";

/// The Redis URL schemes fred understands; the `rediss` ones use TLS.
const REDIS_SCHEMES: [&str; 6] = [
    "redis://",
    "rediss://",
    "redis-cluster://",
    "rediss-cluster://",
    "redis-sentinel://",
    "rediss-sentinel://",
];

impl Config {
    /// Checks every rule a usable configuration follows: URL schemes, size
    /// and time limits, demo dataset bounds, the admin token's shape and a
    /// non-empty, parseable log filter. Error values have secrets masked.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_database()?;
        self.validate_redis()?;
        self.validate_admin()?;
        self.validate_demo()?;
        self.validate_perfmon()?;
        self.validate_ratelimit()?;
        self.validate_cache()?;
        self.validate_queue()?;
        self.validate_log()?;
        self.validate_otel()
    }

    fn validate_ratelimit(&self) -> Result<(), ConfigError> {
        let RateLimitConfig {
            enabled: _,
            trusted_proxies,
            client_ip_header,
            ipv6_prefix,
            ddos,
            api,
            auth,
            report,
            health_degraded,
            health_unhealthy,
            health_recover,
            store_timeout,
            abuse: _,
            abuse_interval,
            abuse_min_requests,
            abuse_burst,
            abuse_tighten_for,
            abuse_block_for,
            abuse_allow,
        } = &self.ratelimit;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(abuse_interval) {
            return Err(invalid(
                "ratelimit.abuse_interval",
                humantime::format_duration(*abuse_interval),
                "must be 1s to 1h",
            ));
        }
        if !(1..=1_000_000).contains(abuse_min_requests) {
            return Err(invalid(
                "ratelimit.abuse_min_requests",
                abuse_min_requests,
                "must be 1 to 1000000",
            ));
        }
        if !(abuse_burst.is_finite() && (1.0..=1000.0).contains(abuse_burst)) {
            return Err(invalid(
                "ratelimit.abuse_burst",
                abuse_burst,
                "must be 1 to 1000",
            ));
        }
        for (key, duration) in [
            ("ratelimit.abuse_tighten_for", abuse_tighten_for),
            ("ratelimit.abuse_block_for", abuse_block_for),
        ] {
            if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(duration) {
                return Err(invalid(
                    key,
                    humantime::format_duration(*duration),
                    "must be 1s to 1d",
                ));
            }
        }
        for entry in abuse_allow {
            if entry.contains('/') && entry.parse::<seawall_ratelimit::IpNet>().is_err() {
                return Err(invalid(
                    "ratelimit.abuse_allow",
                    entry,
                    "a network must be an address and a prefix length, such as 10.0.0.0/8",
                ));
            }
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(10)).contains(store_timeout) {
            return Err(invalid(
                "ratelimit.store_timeout",
                humantime::format_duration(*store_timeout),
                "must be 1ms to 10s",
            ));
        }
        if !(0.01..=1.0).contains(health_degraded) {
            return Err(invalid(
                "ratelimit.health_degraded",
                health_degraded,
                "must be 0.01 to 1: the share of each limit admitted while degraded",
            ));
        }
        if !(0.01..=*health_degraded).contains(health_unhealthy) {
            return Err(invalid(
                "ratelimit.health_unhealthy",
                health_unhealthy,
                "must be 0.01 to ratelimit.health_degraded: an unhealthy service admits no more than a degraded one",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(health_recover) {
            return Err(invalid(
                "ratelimit.health_recover",
                humantime::format_duration(*health_recover),
                "must be 1s to 1h",
            ));
        }
        for proxy in trusted_proxies {
            let Ok(net) = proxy.parse::<seawall_ratelimit::IpNet>() else {
                return Err(invalid(
                    "ratelimit.trusted_proxies",
                    format!("{proxy:?}"),
                    "each entry is an IP address or a CIDR network such as 10.1.2.3/32",
                ));
            };
            // Every address a proxy: every client would pick its own
            // identity, address and trace.
            if net.prefix() == 0 {
                return Err(invalid(
                    "ratelimit.trusted_proxies",
                    format!("{proxy:?}"),
                    "a network of every address would believe every client's X-User-Id, \
                     X-Tenant-Id and client-IP header; list the proxies' own addresses",
                ));
            }
        }
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if client_ip_header.is_empty()
            || client_ip_header.len() > 64
            || !client_ip_header.bytes().all(token)
        {
            return Err(invalid(
                "ratelimit.client_ip_header",
                format!("{client_ip_header:?}"),
                "must be a header name of 1 to 64 letters, digits and -",
            ));
        }
        if !(32..=128).contains(ipv6_prefix) {
            return Err(invalid(
                "ratelimit.ipv6_prefix",
                ipv6_prefix,
                "must be 32 to 128: a shorter prefix puts a whole provider's clients under one key",
            ));
        }
        for (key, profile) in [
            ("ratelimit.ddos", ddos),
            ("ratelimit.api", api),
            ("ratelimit.auth", auth),
            ("ratelimit.report", report),
        ] {
            if profile.limit == 0 || profile.limit > 1_000_000 {
                return Err(invalid(key, profile, "the limit is 1 to 1000000"));
            }
            if profile.period < Duration::from_millis(1)
                || profile.period > Duration::from_secs(86_400)
            {
                return Err(invalid(key, profile, "the period is 1ms to 1 day"));
            }
            if profile.block > Duration::from_secs(86_400) {
                return Err(invalid(key, profile, "a block lasts at most 1 day"));
            }
        }
        Ok(())
    }

    fn validate_queue(&self) -> Result<(), ConfigError> {
        let prefix = &self.queue.prefix;
        let bad = |c: char| c.is_control() || c.is_whitespace() || c == '{' || c == '}';
        if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(bad) {
            return Err(invalid(
                "queue.prefix",
                format!("{prefix:?}"),
                "must be 1 to 64 bytes without braces, whitespace or control characters",
            ));
        }
        if self.queue.files.as_os_str().is_empty() {
            return Err(invalid("queue.files", "\"\"", "names no directory"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.queue.lease) {
            return Err(invalid(
                "queue.lease",
                humantime::format_duration(self.queue.lease),
                "must be 1s to 10m",
            ));
        }
        if self.queue.wait_replicas > 5 {
            return Err(invalid(
                "queue.wait_replicas",
                self.queue.wait_replicas,
                "must be 0 to 5",
            ));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&self.queue.wait_timeout)
        {
            return Err(invalid(
                "queue.wait_timeout",
                humantime::format_duration(self.queue.wait_timeout),
                "must be 1ms to 1m",
            ));
        }
        for (key, recurring) in [
            ("queue.nightly_backup", &self.queue.nightly_backup),
            ("queue.hourly_analytics", &self.queue.hourly_analytics),
            ("queue.daily_report", &self.queue.daily_report),
        ] {
            if let Err(error) = recurring.schedule() {
                return Err(invalid(key, recurring, error.to_string()));
            }
        }
        if self.queue.daily_report_user < 1 {
            return Err(invalid(
                "queue.daily_report_user",
                self.queue.daily_report_user,
                "must be a user id, at least 1",
            ));
        }
        check_threads("worker.threads", self.worker.threads)?;
        if self.worker.shutdown_timeout > SHUTDOWN_TIMEOUT_LIMIT {
            return Err(invalid(
                "worker.shutdown_timeout",
                humantime::format_duration(self.worker.shutdown_timeout),
                "must be at most 1h",
            ));
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let ServerConfig {
            listen: _,
            shutdown_timeout,
            shutdown_drain,
            max_body_bytes,
            request_timeout,
            header_read_timeout,
            max_uri_bytes,
            max_headers,
            max_header_bytes,
            max_in_flight,
            shed_wait,
            admission: _,
            compression: _,
            cors_origins,
            threads,
        } = &self.server;
        check_threads("server.threads", *threads)?;
        in_range(
            "server.max_body_bytes",
            *max_body_bytes,
            1,
            MAX_BODY_BYTES_LIMIT,
        )?;
        in_range("server.max_uri_bytes", *max_uri_bytes, 64, 32 * 1024)?;
        in_range("server.max_headers", *max_headers, 8, 500)?;
        in_range(
            "server.max_header_bytes",
            *max_header_bytes,
            1024,
            256 * 1024,
        )?;
        in_range("server.max_in_flight", *max_in_flight, 1, 100_000)?;
        for (key, value, min, max) in [
            (
                "server.shutdown_timeout",
                *shutdown_timeout,
                Duration::ZERO,
                SHUTDOWN_TIMEOUT_LIMIT,
            ),
            (
                "server.shutdown_drain",
                *shutdown_drain,
                Duration::ZERO,
                Duration::from_secs(300),
            ),
            (
                "server.request_timeout",
                *request_timeout,
                Duration::from_millis(1),
                REQUEST_TIMEOUT_LIMIT,
            ),
            (
                "server.header_read_timeout",
                *header_read_timeout,
                Duration::from_millis(1),
                HEADER_READ_TIMEOUT_LIMIT,
            ),
            (
                "server.shed_wait",
                *shed_wait,
                Duration::ZERO,
                SHED_WAIT_LIMIT,
            ),
        ] {
            if value < min || value > max {
                let range = if min.is_zero() {
                    format!("must be at most {}", humantime::format_duration(max))
                } else {
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    )
                };
                return Err(invalid(key, humantime::format_duration(value), range));
            }
        }
        for origin in cors_origins {
            if let Err(reason) = check_origin(origin) {
                return Err(invalid(
                    "server.cors_origins",
                    format!("{origin:?}"),
                    reason,
                ));
            }
        }
        Ok(())
    }

    fn validate_database(&self) -> Result<(), ConfigError> {
        let DatabaseConfig {
            url,
            max_connections,
            replicas,
            replica_max_lag,
            replica_max_lag_bytes,
            replica_wait,
        } = &self.database;
        let rest = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme));
        match rest {
            None => {
                return Err(invalid(
                    "database.url",
                    format!("{:?}", mask_secrets(url)),
                    "the scheme must be sqlite:, postgres:// or postgresql://",
                ));
            }
            Some("") => {
                return Err(invalid(
                    "database.url",
                    format!("{url:?}"),
                    "nothing follows the scheme",
                ));
            }
            Some(_) => {}
        }
        if let Some(size) = max_connections
            && !(1..=MAX_CONNECTIONS_LIMIT).contains(size)
        {
            return Err(invalid(
                "database.max_connections",
                size,
                format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        for replica in replicas {
            if !["postgres://", "postgresql://"].iter().any(|scheme| {
                replica
                    .strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty())
            }) {
                return Err(invalid(
                    "database.replicas",
                    format!("{:?}", mask_secrets(replica)),
                    "each replica must be a postgres:// or postgresql:// URL",
                ));
            }
        }
        if !replicas.is_empty() && url.starts_with("sqlite:") {
            return Err(invalid(
                "database.replicas",
                replicas.len(),
                "replicas are PostgreSQL's: database.url must be postgres:// too",
            ));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3_600)).contains(replica_max_lag) {
            return Err(invalid(
                "database.replica_max_lag",
                humantime::format_duration(*replica_max_lag),
                "must be between 10ms and 1h",
            ));
        }
        if *replica_max_lag_bytes == 0 {
            return Err(invalid(
                "database.replica_max_lag_bytes",
                replica_max_lag_bytes,
                "must be at least 1",
            ));
        }
        if *replica_wait > Duration::from_secs(1) {
            return Err(invalid(
                "database.replica_wait",
                humantime::format_duration(*replica_wait),
                "must be at most 1s",
            ));
        }
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let RedisConfig {
            url,
            tls_ca_file,
            tls_insecure,
        } = &self.redis;
        let queue_scheme = match &self.queue.redis_url {
            Some(queue_url) => Some(redis_scheme("queue.redis_url", queue_url)?),
            None => None,
        };
        let Some(url) = url else {
            let queue_tls = queue_scheme.is_some_and(|scheme| scheme.starts_with("rediss"));
            if (tls_ca_file.is_some() || *tls_insecure) && !queue_tls {
                return Err(invalid(
                    "redis.url",
                    "none",
                    "redis.tls_ca_file and redis.tls_insecure need a rediss:// URL",
                ));
            }
            return Ok(());
        };
        let scheme = redis_scheme("redis.url", url)?;
        let tls = scheme.starts_with("rediss");
        if !tls && (tls_ca_file.is_some() || *tls_insecure) {
            return Err(invalid(
                "redis.url",
                format!("{:?}", mask_secrets(url)),
                "redis.tls_ca_file and redis.tls_insecure apply only to TLS (rediss) URLs",
            ));
        }
        if tls_ca_file.is_some() && *tls_insecure {
            return Err(invalid(
                "redis.tls_insecure",
                "true",
                "checks no certificate, so a CA file (redis.tls_ca_file) makes no sense with it",
            ));
        }
        Ok(())
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let Some(token) = &self.admin.token else {
            return Ok(());
        };
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(invalid(
                "admin.token",
                MASK,
                "must hold only visible ASCII characters (no whitespace)",
            ));
        }
        if token.len() < ADMIN_TOKEN_MIN_LEN {
            return Err(invalid(
                "admin.token",
                MASK,
                format!(
                    "must be at least {ADMIN_TOKEN_MIN_LEN} characters long, is {}",
                    token.len()
                ),
            ));
        }
        Ok(())
    }

    fn validate_demo(&self) -> Result<(), ConfigError> {
        let DemoConfig {
            seed: _,
            users,
            contents,
            schedules_per_user,
            history_per_user,
        } = self.demo;
        for (key, value) in [
            ("demo.users", users),
            ("demo.contents", contents),
            ("demo.schedules_per_user", schedules_per_user),
            ("demo.history_per_user", history_per_user),
        ] {
            if value > DEMO_SIZE_LIMIT {
                return Err(invalid(
                    key,
                    value,
                    format!("must be at most {DEMO_SIZE_LIMIT}"),
                ));
            }
        }
        if users == 0 {
            return Err(invalid("demo.users", users, "must be at least 1"));
        }
        if contents == 0 {
            return Err(invalid("demo.contents", contents, "must be at least 1"));
        }
        if schedules_per_user == 0 && history_per_user > 0 {
            return Err(invalid(
                "demo.schedules_per_user",
                schedules_per_user,
                "must be at least 1 when demo.history_per_user is not 0: every review is of a scheduled content",
            ));
        }
        if schedules_per_user > contents {
            return Err(invalid(
                "demo.schedules_per_user",
                schedules_per_user,
                format!(
                    "must be at most demo.contents ({contents}): each schedule is for a distinct content"
                ),
            ));
        }
        let history_rows = u64::from(users).checked_mul(u64::from(history_per_user));
        if history_rows.is_none_or(|rows| rows > DEMO_HISTORY_ROWS_LIMIT) {
            return Err(invalid(
                "demo.history_per_user",
                history_per_user,
                format!(
                    "demo.users × demo.history_per_user ({users} × {history_per_user}) must be at most {DEMO_HISTORY_ROWS_LIMIT}"
                ),
            ));
        }
        Ok(())
    }

    fn validate_perfmon(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("perfmon.slow_query", self.perfmon.slow_query),
            ("perfmon.slow_api", self.perfmon.slow_api),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    key,
                    humantime::format_duration(value),
                    "must be greater than 0",
                ));
            }
        }
        Ok(())
    }

    fn validate_cache(&self) -> Result<(), ConfigError> {
        let entries = self.cache.l1_entries;
        if !(1..=100_000_000).contains(&entries) {
            return Err(invalid(
                "cache.l1_entries",
                entries,
                "must be between 1 and 100000000",
            ));
        }
        if self.cache.warm_hot > 100_000 {
            return Err(invalid(
                "cache.warm_hot",
                self.cache.warm_hot,
                "must be between 0 and 100000",
            ));
        }
        if self.cache.degraded_ttl > DEGRADED_TTL_LIMIT {
            return Err(invalid(
                "cache.degraded_ttl",
                humantime::format_duration(self.cache.degraded_ttl),
                "must be at most 1m",
            ));
        }
        if self.cache.review_writes == ReviewWrites::WriteBehind && !self.cache.enabled {
            return Err(invalid(
                "cache.review_writes",
                "write-behind",
                "needs the cache (cache.enabled): reads see a review before the database has it only through the cache",
            ));
        }
        Ok(())
    }

    fn validate_log(&self) -> Result<(), ConfigError> {
        let filter = &self.log.filter;
        if filter.trim().is_empty() {
            return Err(invalid(
                "log.filter",
                format!("{filter:?}"),
                "must not be empty",
            ));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(filter) {
            return Err(invalid(
                "log.filter",
                format!("{filter:?}"),
                error.to_string(),
            ));
        }
        Ok(())
    }

    fn validate_otel(&self) -> Result<(), ConfigError> {
        let otel = &self.otel;
        if let Some(endpoint) = &otel.endpoint {
            let rest = endpoint.strip_prefix("http://").unwrap_or_default();
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if host.is_empty()
                || endpoint
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    "otel.endpoint",
                    format!("{:?}", mask_secrets(endpoint)),
                    "must be an http:// URL with a host, such as http://collector:4318 \
                     (spans are sent in the clear: a collector on the host or its network \
                     forwards them over TLS)",
                ));
            }
        }
        if let Some(name) = &otel.service_name
            && (name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control))
        {
            return Err(invalid(
                "otel.service_name",
                format!("{name:?}"),
                "must be 1 to 256 bytes of text without control characters",
            ));
        }
        let filter = &otel.filter;
        if filter.trim().is_empty() {
            return Err(invalid(
                "otel.filter",
                format!("{filter:?}"),
                "must not be empty",
            ));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(filter) {
            return Err(invalid(
                "otel.filter",
                format!("{filter:?}"),
                error.to_string(),
            ));
        }
        Ok(())
    }

    /// A copy that is safe to log: passwords in the database and Redis URLs
    /// and the admin token are replaced by `***`.
    ///
    /// URLs go through [`mask_secrets`], the masking the slow-request log
    /// uses: the password of the user info (found even when it holds an
    /// unescaped `@`, `/`, `?` or `#`) and the values of secret query
    /// parameters such as `password` or `sslpassword` become `***`.
    #[must_use]
    pub fn masked(&self) -> Self {
        let mut masked = self.clone();
        masked.database.url = mask_secrets(&self.database.url);
        masked.redis.url = self.redis.url.as_deref().map(mask_secrets);
        masked.queue.redis_url = self.queue.redis_url.as_deref().map(mask_secrets);
        masked.otel.endpoint = self.otel.endpoint.as_deref().map(mask_secrets);
        if masked.admin.token.is_some() {
            masked.admin.token = Some(MASK.to_owned());
        }
        masked
    }

    /// Whether the database is PostgreSQL (`postgres://` or `postgresql://`).
    pub fn is_postgres(&self) -> bool {
        self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://")
    }

    /// Whether the database is SQLite (`sqlite:`).
    pub fn is_sqlite(&self) -> bool {
        self.database.url.starts_with("sqlite:")
    }

    /// The file of a SQLite database, if the database is one (not one in
    /// memory).
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        let url = &self.database.url;
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let (path, options) = rest.split_once('?').unwrap_or((rest, ""));
        let in_memory = path.is_empty()
            || path == ":memory:"
            || options.split('&').any(|option| option == "mode=memory");
        (!in_memory).then(|| PathBuf::from(path))
    }

    /// Where this instance keeps its learned hot keys over a restart:
    /// `cache.hot_keys_file`, else beside a SQLite file; `None` with Redis
    /// (the keys live there), on PostgreSQL without a file named, and when
    /// the cache or its learning is off.
    pub fn hot_keys_file(&self) -> Option<PathBuf> {
        if !self.cache.enabled || self.cache.warm_hot == 0 || self.redis.url.is_some() {
            return None;
        }
        self.cache.hot_keys_file.clone().or_else(|| {
            self.sqlite_file().map(|file| {
                let mut name = file.into_os_string();
                name.push(".hot-keys.json");
                PathBuf::from(name)
            })
        })
    }
}

/// The scheme of a Redis URL, one of [`REDIS_SCHEMES`], with something
/// after it.
fn redis_scheme(key: &'static str, url: &str) -> Result<&'static str, ConfigError> {
    let Some(scheme) = REDIS_SCHEMES
        .iter()
        .find(|scheme| url.starts_with(**scheme))
    else {
        return Err(invalid(
            key,
            format!("{:?}", mask_secrets(url)),
            format!("the scheme must be one of {}", REDIS_SCHEMES.join(", ")),
        ));
    };
    if url.len() == scheme.len() {
        return Err(invalid(
            key,
            format!("{url:?}"),
            "nothing follows the scheme",
        ));
    }
    Ok(scheme)
}

/// A runtime's worker threads: unset (one per core), or 1 to
/// [`THREADS_LIMIT`].
fn check_threads(key: &'static str, threads: Option<usize>) -> Result<(), ConfigError> {
    match threads {
        Some(count) if !(1..=THREADS_LIMIT).contains(&count) => Err(invalid(
            key,
            count,
            format!(
                "must be between 1 and {THREADS_LIMIT}; leave it unset for one thread per core"
            ),
        )),
        _ => Ok(()),
    }
}

fn in_range(key: &'static str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            value,
            format!("must be between {min} and {max}"),
        ))
    }
}

/// An origin as browsers send it: `http` or `https`, a host, maybe a port;
/// no path, no trailing slash, no wildcard.
fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty() {
        return Err("names no host".to_owned());
    }
    if rest.contains(['/', '?', '#', '*', '@']) || rest.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(
            "must be scheme://host[:port] only: no path, wildcard, user or blanks".to_owned(),
        );
    }
    if origin.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("is not a valid header value".to_owned())
    }
}

fn invalid(key: &'static str, value: impl Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::DemoConfig;
    use crate::config::test_support::*;

    const FULL_FILE: &str = r#"
        [database]
        url = "postgres://file:filepw@db/file"

        [admin]
        token = "file-token-0123456789"
    "#;

    #[test]
    fn the_hot_keys_file_sits_beside_a_sqlite_file_unless_redis_keeps_them() {
        let file = |args: &[&str]| load_with(args, &[]).expect("valid").hot_keys_file();
        assert_eq!(
            file(&["--database-url", "sqlite://data/app.db?mode=rwc"]),
            Some(PathBuf::from("data/app.db.hot-keys.json"))
        );
        assert_eq!(
            file(&["--database-url", "sqlite:app.db"]),
            Some(PathBuf::from("app.db.hot-keys.json"))
        );
        for in_memory in ["sqlite::memory:", "sqlite://x.db?mode=memory&cache=shared"] {
            assert_eq!(file(&["--database-url", in_memory]), None, "{in_memory}");
        }
        assert_eq!(file(&["--database-url", "postgres://h/db"]), None);
        assert_eq!(
            file(&[
                "--database-url",
                "postgres://h/db",
                "--cache-hot-keys-file",
                "/var/hot.json"
            ]),
            Some(PathBuf::from("/var/hot.json"))
        );
        for args in [
            ["--redis-url", "redis://127.0.0.1:6379"],
            ["--cache-warm-hot", "0"],
        ] {
            assert_eq!(
                file(&[&["--database-url", "sqlite://app.db"], &args[..]].concat()),
                None,
                "{args:?}"
            );
        }
        expect_invalid(
            load_with(&["--cache-warm-hot", "100001"], &[]),
            "cache.warm_hot",
        );
        assert_eq!(load_with(&[], &[]).expect("defaults").cache.warm_hot, 1_000);
        assert_eq!(
            load_with(&[], &[]).expect("defaults").cache.degraded_ttl,
            Duration::from_secs(10)
        );
        assert_eq!(
            load_with(&["--cache-degraded-ttl", "0s"], &[])
                .expect("zero serves nothing")
                .cache
                .degraded_ttl,
            Duration::ZERO
        );
        expect_invalid(
            load_with(&["--cache-degraded-ttl", "61s"], &[]),
            "cache.degraded_ttl",
        );
    }

    #[test]
    fn database_and_redis_schemes() {
        for url in [
            "sqlite://x.db",
            "sqlite::memory:",
            "postgres://h/db",
            "postgresql://u:p@h:5432/db",
        ] {
            load_with(&["--database-url", url], &[]).expect(url);
        }
        for url in [
            "mysql://h/db",
            "postgres:/h",
            "http://h",
            "",
            "sqlite:",
            "postgres://",
            "SQLITE://x.db",
        ] {
            expect_invalid(
                load_with(&[], &[("SEAWALL_DATABASE_URL", "sqlite://ok.db")]).and_then(
                    |mut config| {
                        config.database.url = url.to_owned();
                        config.validate().map(|()| config)
                    },
                ),
                "database.url",
            );
        }
        let message = expect_invalid(
            load_with(&["--database-url", "mysql://app:hunter2@h/db"], &[]),
            "database.url",
        );
        assert!(
            !message.contains("hunter2"),
            "the error masks the password: {message}"
        );

        for url in ["redis://h:6379", "rediss://:pw@h:6380/1"] {
            load_with(&["--redis-url", url], &[]).expect(url);
        }
        for url in ["http://h", "redis:/h", "redis://", "valkey://h"] {
            expect_invalid(load_with(&["--redis-url", url], &[]), "redis.url");
        }
        let file = toml_file("[redis]\nurl = \"\"\n");
        expect_invalid(load_with(&["--config", path_of(&file)], &[]), "redis.url");
    }

    #[test]
    fn otel_rules() {
        let config = load_with(
            &["--otel-endpoint", "http://collector:4318/"],
            &[("OTEL_SERVICE_NAME", "api-eu1")],
        )
        .expect("an http endpoint and a name");
        assert_eq!(
            config.otel.endpoint.as_deref(),
            Some("http://collector:4318/")
        );
        assert_eq!(config.otel.service_name.as_deref(), Some("api-eu1"));
        let config = load_with(
            &[],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")],
        )
        .expect("the standard variable");
        assert_eq!(
            config.otel.endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(load_with(&[], &[]).expect("defaults").otel.endpoint, None);
        for endpoint in [
            "https://collector:4318",
            "http://",
            "collector:4318",
            "http://a b",
        ] {
            expect_invalid(
                load_with(&["--otel-endpoint", endpoint], &[]),
                "otel.endpoint",
            );
        }
        let message = expect_invalid(
            load_with(&["--otel-endpoint", "https://user:s3cret@collector"], &[]),
            "otel.endpoint",
        );
        assert!(
            !message.contains("s3cret"),
            "the error hides the password: {message}"
        );
        for name in [" ", "a\nb"] {
            expect_invalid(
                load_with(&["--otel-service-name", name], &[]),
                "otel.service_name",
            );
        }
        for filter in ["", "info,[", "seawall=loud"] {
            expect_invalid(load_with(&["--otel-filter", filter], &[]), "otel.filter");
        }
    }

    #[test]
    fn admin_token_rules() {
        load_with(&[], &[("SEAWALL_ADMIN_TOKEN", "0123456789abcdef")]).expect("16 characters");
        for token in [
            "short",
            "0123456789abcde",
            "0123456789 abcdef",
            "0123456789abcdef\n",
            "0123456789abcdéf",
        ] {
            let message = expect_invalid(
                load_with(&[], &[("SEAWALL_ADMIN_TOKEN", token)]),
                "admin.token",
            );
            assert!(
                !message.contains(token.trim()),
                "the error hides the token: {message}"
            );
        }
        let file = toml_file("[admin]\ntoken = \"\"\n");
        expect_invalid(load_with(&["--config", path_of(&file)], &[]), "admin.token");
    }

    #[test]
    fn replicas_are_postgres_urls_beside_a_postgres_primary() {
        let primary = ["--database-url", "postgres://app@db-1/app"];
        let config = load_with(
            &[
                &primary[..],
                &[
                    "--database-replicas",
                    "postgres://app@db-2/app, postgresql://app@db-3/app",
                ],
            ]
            .concat(),
            &[],
        )
        .expect("two replicas");
        assert_eq!(
            config.database.replicas,
            ["postgres://app@db-2/app", "postgresql://app@db-3/app"]
        );
        assert_eq!(config.database.replica_max_lag, Duration::from_secs(1));
        for (args, key) in [
            (
                &["--database-replicas", "mysql://db-2"][..],
                "database.replicas",
            ),
            (&["--database-replicas", "postgres://"], "database.replicas"),
            (
                &["--database-replica-max-lag", "5ms"],
                "database.replica_max_lag",
            ),
            (
                &["--database-replica-max-lag", "2h"],
                "database.replica_max_lag",
            ),
            (
                &["--database-replica-max-lag-bytes", "0"],
                "database.replica_max_lag_bytes",
            ),
            (&["--database-replica-wait", "2s"], "database.replica_wait"),
        ] {
            expect_invalid(load_with(&[&primary[..], args].concat(), &[]), key);
        }
        let message = expect_invalid(
            load_with(
                &[
                    &primary[..],
                    &["--database-replicas", "mysql://app:s3cret@db-2"],
                ]
                .concat(),
                &[],
            ),
            "database.replicas",
        );
        assert!(!message.contains("s3cret"), "{message}");
        // The embedded SQLite has no replicas.
        expect_invalid(
            load_with(&["--database-replicas", "postgres://app@db-2/app"], &[]),
            "database.replicas",
        );
    }

    #[test]
    fn size_and_time_limits() {
        for (args, key) in [
            (&["--max-body-bytes", "0"][..], "server.max_body_bytes"),
            (&["--max-body-bytes", "67108865"], "server.max_body_bytes"),
            (&["--shutdown-timeout", "1h 1s"], "server.shutdown_timeout"),
            (&["--queue-lease", "500ms"], "queue.lease"),
            (&["--queue-lease", "11m"], "queue.lease"),
            (&["--db-max-connections", "0"], "database.max_connections"),
            (
                &["--db-max-connections", "1001"],
                "database.max_connections",
            ),
            (&["--slow-query", "0s"], "perfmon.slow_query"),
            (&["--slow-api", "0ms"], "perfmon.slow_api"),
            (&["--log", ""], "log.filter"),
            (&["--log", "  "], "log.filter"),
            (&["--log", "=="], "log.filter"),
        ] {
            expect_invalid(load_with(args, &[]), key);
        }
        for args in [
            &["--max-body-bytes", "1"][..],
            &["--max-body-bytes", "67108864"],
            &["--shutdown-timeout", "1h"],
            &["--shutdown-timeout", "0s"],
            &["--db-max-connections", "1"],
            &["--db-max-connections", "1000"],
            &["--slow-query", "1ns"],
            &["--log", "seawall_api=debug,info"],
        ] {
            load_with(args, &[]).expect(args[1]);
        }
    }

    #[test]
    fn runtime_threads() {
        use crate::config::{Program, from_sources_for};
        use crate::process::runtime_threads;

        let config = load_with(&[], &[]).expect("defaults");
        assert_eq!(config.server.threads, None, "one per core by default");
        assert_eq!(runtime_threads(Program::Api, &config), None);
        for (args, env, threads) in [
            (&["--threads", "1"][..], &[][..], 1),
            (&["--threads", "1024"], &[], 1024),
            (&[], &[("SEAWALL_THREADS", "4")], 4),
            (&["--threads", "2"], &[("SEAWALL_THREADS", "4")], 2),
        ] {
            let config = load_with(args, env).expect("a thread count");
            assert_eq!(config.server.threads, Some(threads));
            assert_eq!(runtime_threads(Program::Api, &config), Some(threads));
        }
        let file = toml_file("[server]\nthreads = 3\n[worker]\nthreads = 5\n");
        let config = load_with(&["--config", path_of(&file)], &[]).expect("from the file");
        assert_eq!(runtime_threads(Program::Api, &config), Some(3));
        assert_eq!(runtime_threads(Program::Worker, &config), Some(5));
        let worker = from_sources_for(
            Program::Worker,
            ["seawall-worker", "--worker-threads", "6"],
            env(&[]),
        )
        .expect("the worker's flag");
        assert_eq!(runtime_threads(Program::Worker, &worker), Some(6));

        for (args, env) in [
            (&["--threads", "0"][..], &[][..]),
            (&["--threads", "1025"], &[]),
            (&[], &[("SEAWALL_THREADS", "0")]),
        ] {
            let message = expect_invalid(load_with(args, env), "server.threads");
            assert!(message.contains("between 1 and 1024"), "{message}");
        }
        let file = toml_file("[server]\nthreads = 0\n");
        expect_invalid(
            load_with(&["--config", path_of(&file)], &[]),
            "server.threads",
        );
        expect_invalid(
            load_with(&[], &[("SEAWALL_WORKER_THREADS", "100000")]),
            "worker.threads",
        );
        for text in ["-1", "four", "1.5"] {
            assert!(
                matches!(
                    load_with(&[], &[("SEAWALL_THREADS", text)]),
                    Err(ConfigError::Env {
                        name: "SEAWALL_THREADS",
                        ..
                    })
                ),
                "{text}"
            );
            assert!(load_with(&["--threads", text], &[]).is_err(), "{text}");
        }
        let file = toml_file("[server]\nthreads = -2\n");
        assert!(matches!(
            load_with(&["--config", path_of(&file)], &[]),
            Err(ConfigError::ParseFile { .. })
        ));
    }

    #[test]
    fn client_address_settings() {
        let config = load_with(&[], &[]).expect("defaults");
        assert_eq!(config.ratelimit.client_ip_header, "x-forwarded-for");
        assert_eq!(config.ratelimit.ipv6_prefix, 64);
        let config = load_with(
            &["--client-ip-header", "X-Real-IP"],
            &[("SEAWALL_IPV6_PREFIX", "128")],
        )
        .expect("a header and a prefix");
        assert_eq!(config.ratelimit.client_ip_header, "X-Real-IP");
        assert_eq!(config.ratelimit.ipv6_prefix, 128);
        let (header, prefix) = ("ratelimit.client_ip_header", "ratelimit.ipv6_prefix");
        for (args, key) in [
            (&["--client-ip-header", ""][..], header),
            (&["--client-ip-header", "x forwarded"], header),
            (&["--client-ip-header", "x-forwarded-for:"], header),
            (&["--client-ip-header", "caf\u{e9}"], header),
            (&["--ipv6-prefix", "31"], prefix),
            (&["--ipv6-prefix", "129"], prefix),
        ] {
            expect_invalid(load_with(args, &[]), key);
        }
        assert!(load_with(&["--ipv6-prefix", "300"], &[]).is_err());
    }

    #[test]
    fn the_abuse_watch_observes_by_default_and_its_settings_have_ranges() {
        let config = load_with(&[], &[]).expect("defaults");
        assert_eq!(config.ratelimit.abuse, crate::config::AbuseMode::Observe);
        assert_eq!(config.ratelimit.abuse_interval, Duration::from_secs(20));
        assert_eq!(config.ratelimit.abuse_min_requests, 20);
        assert!((config.ratelimit.abuse_burst - 3.0).abs() < f64::EPSILON);
        let config = load_with(
            &[
                "--ratelimit-abuse",
                "act",
                "--ratelimit-abuse-allow",
                "key:7, 10.0.0.0/8",
            ],
            &[
                ("SEAWALL_RATELIMIT_ABUSE_BLOCK_FOR", "2m"),
                ("SEAWALL_RATELIMIT_ABUSE_BURST", "4.5"),
            ],
        )
        .expect("abuse settings");
        assert!((config.ratelimit.abuse_burst - 4.5).abs() < f64::EPSILON);
        assert_eq!(config.ratelimit.abuse, crate::config::AbuseMode::Act);
        assert_eq!(config.ratelimit.abuse_allow, ["key:7", "10.0.0.0/8"]);
        assert_eq!(config.ratelimit.abuse_block_for, Duration::from_secs(120));
        assert!(load_with(&["--ratelimit-abuse", "block"], &[]).is_err());
        for (flag, value, key) in [
            (
                "--ratelimit-abuse-interval",
                "500ms",
                "ratelimit.abuse_interval",
            ),
            (
                "--ratelimit-abuse-min-requests",
                "0",
                "ratelimit.abuse_min_requests",
            ),
            ("--ratelimit-abuse-burst", "0.5", "ratelimit.abuse_burst"),
            ("--ratelimit-abuse-burst", "NaN", "ratelimit.abuse_burst"),
            (
                "--ratelimit-abuse-tighten-for",
                "2d",
                "ratelimit.abuse_tighten_for",
            ),
            (
                "--ratelimit-abuse-block-for",
                "0s",
                "ratelimit.abuse_block_for",
            ),
            (
                "--ratelimit-abuse-allow",
                "10.0.0.0/99",
                "ratelimit.abuse_allow",
            ),
        ] {
            expect_invalid(load_with(&[flag, value], &[]), key);
        }
    }

    #[test]
    fn health_scales_are_shares_in_order() {
        let config = load_with(&[], &[]).expect("defaults");
        assert_eq!(config.ratelimit.health_degraded, 0.5);
        assert_eq!(config.ratelimit.health_unhealthy, 0.25);
        assert_eq!(config.ratelimit.health_recover, Duration::from_secs(30));
        assert_eq!(config.ratelimit.store_timeout, Duration::from_millis(250));
        let config =
            load_with(&["--ratelimit-store-timeout", "40ms"], &[]).expect("a store timeout");
        assert_eq!(config.ratelimit.store_timeout, Duration::from_millis(40));
        for timeout in ["0s", "11s"] {
            expect_invalid(
                load_with(&["--ratelimit-store-timeout", timeout], &[]),
                "ratelimit.store_timeout",
            );
        }
        let config = load_with(
            &[
                "--ratelimit-health-degraded",
                "1",
                "--ratelimit-health-unhealthy",
                "0.1",
            ],
            &[("SEAWALL_RATELIMIT_HEALTH_RECOVER", "2m")],
        )
        .expect("shares and a wait");
        assert_eq!(config.ratelimit.health_degraded, 1.0);
        assert_eq!(config.ratelimit.health_unhealthy, 0.1);
        assert_eq!(config.ratelimit.health_recover, Duration::from_secs(120));
        let (degraded, unhealthy, recover) = (
            "ratelimit.health_degraded",
            "ratelimit.health_unhealthy",
            "ratelimit.health_recover",
        );
        for (args, key) in [
            (&["--ratelimit-health-degraded", "0"][..], degraded),
            (&["--ratelimit-health-degraded", "1.5"], degraded),
            (&["--ratelimit-health-degraded", "NaN"], degraded),
            (&["--ratelimit-health-unhealthy", "0.6"], unhealthy),
            (&["--ratelimit-health-unhealthy", "0.001"], unhealthy),
            (&["--ratelimit-health-recover", "500ms"], recover),
            (&["--ratelimit-health-recover", "2h"], recover),
        ] {
            expect_invalid(load_with(args, &[]), key);
        }
        assert!(load_with(&["--ratelimit-health-degraded", "half"], &[]).is_err());
    }

    #[test]
    fn trusted_proxies_name_proxies_not_everyone() {
        let config = load_with(
            &["--trusted-proxies", "10.1.2.3/32, 10.9.0.0/16, fd00::1"],
            &[],
        )
        .expect("addresses and networks");
        assert_eq!(config.ratelimit.trusted_proxies.len(), 3);
        for every in ["0.0.0.0/0", "::/0", "10.1.2.3/32,0.0.0.0/0"] {
            let message = expect_invalid(
                load_with(&["--trusted-proxies", every], &[]),
                "ratelimit.trusted_proxies",
            );
            assert!(message.contains("every address"), "{message}");
        }
        expect_invalid(
            load_with(&[], &[("SEAWALL_TRUSTED_PROXIES", "proxy.local")]),
            "ratelimit.trusted_proxies",
        );
    }

    #[test]
    fn demo_size_limits() {
        for (args, key) in [
            (&["--demo-users", "0"][..], "demo.users"),
            (
                &["--demo-contents", "0", "--demo-schedules-per-user", "0"],
                "demo.contents",
            ),
            (
                &["--demo-contents", "10", "--demo-schedules-per-user", "11"],
                "demo.schedules_per_user",
            ),
            (&["--demo-users", "10000001"], "demo.users"),
            (&["--demo-contents", "4294967295"], "demo.contents"),
            (
                &["--demo-history-per-user", "10000001"],
                "demo.history_per_user",
            ),
            // 10^7 × 10^7 = 10^14 rows; u32 arithmetic would overflow.
            (
                &[
                    "--demo-users",
                    "10000000",
                    "--demo-history-per-user",
                    "10000000",
                ],
                "demo.history_per_user",
            ),
            (
                &["--demo-users", "100001", "--demo-history-per-user", "1000"],
                "demo.history_per_user",
            ),
        ] {
            expect_invalid(load_with(args, &[]), key);
        }
        load_with(
            &["--demo-users", "100000", "--demo-history-per-user", "1000"],
            &[],
        )
        .expect("exactly the limit");
        load_with(
            &[
                "--demo-users",
                "1",
                "--demo-contents",
                "1",
                "--demo-schedules-per-user",
                "1",
            ],
            &[],
        )
        .expect("the smallest dataset");

        // Values past every limit go through validate without panicking.
        let mut config = Config {
            demo: DemoConfig {
                seed: true,
                users: u32::MAX,
                contents: u32::MAX,
                schedules_per_user: u32::MAX,
                history_per_user: u32::MAX,
            },
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { .. })
        ));
        config.demo.users = DEMO_SIZE_LIMIT;
        config.demo.contents = DEMO_SIZE_LIMIT;
        config.demo.schedules_per_user = DEMO_SIZE_LIMIT;
        config.demo.history_per_user = DEMO_SIZE_LIMIT;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                key: "demo.history_per_user",
                ..
            })
        ));
    }

    #[test]
    fn recurring_jobs_are_read_from_every_layer_and_bad_text_names_its_key() {
        use crate::config::Recurring;

        let defaults = load_with(&[], &[]).expect("defaults");
        assert_eq!(
            defaults.queue.nightly_backup.to_string(),
            "cron 0 3 * * * UTC"
        );
        assert_eq!(defaults.queue.hourly_analytics.to_string(), "every 1h");
        assert_eq!(
            defaults.queue.daily_report.to_string(),
            "cron 0 6 * * * UTC"
        );
        assert_eq!(defaults.queue.daily_report_user, 1);

        let file = toml_file(
            "[queue]\nnightly_backup = \"off\"\ndaily_report = \"cron 0 7 * * 1 Europe/Paris\"\n",
        );
        let config = load_with(
            &["--config", path_of(&file), "--queue-daily-report-user", "3"],
            &[("SEAWALL_QUEUE_HOURLY_ANALYTICS", "every 15m")],
        )
        .expect("valid");
        assert_eq!(config.queue.nightly_backup, Recurring::Off);
        assert_eq!(
            config.queue.hourly_analytics,
            Recurring::Every(Duration::from_secs(900))
        );
        assert_eq!(
            config.queue.daily_report.to_string(),
            "cron 0 7 * * 1 Europe/Paris"
        );
        assert_eq!(config.queue.daily_report_user, 3);

        let file = toml_file("[queue]\nhourly_analytics = \"every 5ms\"\n");
        match load_with(&["--config", path_of(&file)], &[]) {
            Err(ConfigError::ParseFile { message, .. }) => assert!(
                message.contains("queue.hourly_analytics") && message.contains("1s to 1day"),
                "{message}"
            ),
            other => panic!("expected a file error, got {other:?}"),
        }
        match load_with(
            &[],
            &[("SEAWALL_QUEUE_DAILY_REPORT", "cron 0 6 * * * Mars/Base")],
        ) {
            Err(error @ ConfigError::Env { name, .. }) => {
                assert_eq!(name, "SEAWALL_QUEUE_DAILY_REPORT");
                let source = std::error::Error::source(&error).map(ToString::to_string);
                assert!(
                    source
                        .as_deref()
                        .is_some_and(|text| text.contains("unknown time zone")),
                    "{source:?}"
                );
            }
            other => panic!("expected an environment error, got {other:?}"),
        }
        assert!(matches!(
            load_with(&["--queue-nightly-backup", "nightly"], &[]),
            Err(ConfigError::Cli(_))
        ));
        expect_invalid(
            load_with(&["--queue-daily-report-user", "0"], &[]),
            "queue.daily_report_user",
        );
        let mut built = Config::default();
        built.queue.hourly_analytics = Recurring::Every(Duration::from_millis(10));
        match built.validate() {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "queue.hourly_analytics"),
            other => panic!("expected an invalid queue.hourly_analytics, got {other:?}"),
        }
    }

    #[test]
    fn the_queues_redis_url_is_checked_and_masked() {
        let config = load_with(
            &["--queue-redis-url", "redis://:q5ecret@queues:6379/0"],
            &[],
        )
        .expect("valid");
        let masked = config.masked().queue.redis_url.unwrap_or_default();
        assert!(
            !masked.contains("q5ecret") && masked.contains("queues:6379"),
            "{masked}"
        );
        expect_invalid(
            load_with(&["--queue-redis-url", "http://queues:6379"], &[]),
            "queue.redis_url",
        );
    }

    #[test]
    fn masked_hides_passwords_and_the_token_only() {
        let config = load_with(
            &[
                "--database-url",
                "postgres://app:s3cret@db:5432/seawall",
                "--redis-url",
                "redis://:r3dis@cache:6379/0",
            ],
            &[("SEAWALL_ADMIN_TOKEN", "0123456789abcdef-secret")],
        )
        .expect("loads");
        let masked = config.masked();
        assert_eq!(masked.database.url, "postgres://app:***@db:5432/seawall");
        assert_eq!(
            masked.redis.url.as_deref(),
            Some("redis://:***@cache:6379/0")
        );
        assert_eq!(masked.admin.token.as_deref(), Some("***"));

        let mut unmasked = masked.clone();
        unmasked.database.url.clone_from(&config.database.url);
        unmasked.redis.url.clone_from(&config.redis.url);
        unmasked.admin.token.clone_from(&config.admin.token);
        assert_eq!(unmasked, config, "nothing else changes");

        assert_eq!(Config::default().masked(), Config::default());
    }

    #[test]
    fn masking_urls() {
        for (url, expected) in [
            (
                "postgres://app:pw@db:5432/seawall",
                "postgres://app:***@db:5432/seawall",
            ),
            (
                "postgres://app@db:5432/seawall",
                "postgres://app@db:5432/seawall",
            ),
            ("postgres://app:@db/seawall", "postgres://app:@db/seawall"),
            ("postgres://db:5432/seawall", "postgres://db:5432/seawall"),
            ("postgresql://app:p:w@db/x", "postgresql://app:***@db/x"),
            ("postgres://app:p@ss@db/x", "postgres://app:***@db/x"),
            (
                "postgres://app:pw@db/x?user=a@b",
                "postgres://app:***@db/x?user=a@b",
            ),
            // Unescaped `/`, `#` or `?` in the password: mask up to the last `@`.
            ("postgres://app:pa/ss@db/x", "postgres://app:***@db/x"),
            ("postgres://app:pa#ss@db/x", "postgres://app:***@db/x"),
            ("postgres://app:p?a/s@s@db/x", "postgres://app:***@db/x"),
            (
                "postgres://db/x?password=pw&sslmode=require",
                "postgres://db/x?password=***&sslmode=require",
            ),
            (
                "postgres://db/x?sslmode=require&PassWord=pw#frag",
                "postgres://db/x?sslmode=require&PassWord=***",
            ),
            ("redis://:pw@cache:6379", "redis://:***@cache:6379"),
            ("redis://user:pw@cache", "redis://user:***@cache"),
            ("redis://cache:6379/0", "redis://cache:6379/0"),
            (
                "sqlite://seawall.db?mode=rwc",
                "sqlite://seawall.db?mode=rwc",
            ),
            ("sqlite:///tmp/a@b.db", "sqlite:///tmp/a@b.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("", ""),
            ("://", "://"),
            ("://:@", "://:@"),
            ("x://é:ü@ö", "x://é:***@ö"),
        ] {
            assert_eq!(mask_secrets(url), expected, "{url}");
        }
    }

    #[test]
    fn the_masked_config_serializes() {
        let file = toml_file(FULL_FILE);
        let config = load_with(&["--config", path_of(&file)], &[]).expect("loads");
        let masked = config.masked();

        let text = toml::to_string(&masked).expect("TOML");
        assert!(
            !text.contains("filepw") && !text.contains("file-token"),
            "{text}"
        );
        let back: Config = toml::from_str(&text).expect("the TOML reads back");
        assert_eq!(back, masked);

        let json = serde_json::to_string(&masked).expect("JSON");
        assert!(
            !json.contains("filepw") && !json.contains("file-token"),
            "{json}"
        );
        let back: Config = serde_json::from_str(&json).expect("the JSON reads back");
        assert_eq!(back, masked);

        // `None` fields serialize too.
        let text = toml::to_string(&Config::default().masked()).expect("TOML of the defaults");
        assert_eq!(
            toml::from_str::<Config>(&text).expect("reads back"),
            Config::default()
        );
    }
}
