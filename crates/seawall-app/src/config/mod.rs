//! Configuration: embedded defaults, then a TOML file, then environment
//! variables, then command-line flags; each layer overrides the one before it.
//!
//! - [`schema`]: the structs with their defaults, and [`SETTINGS`], the table
//!   of every key with its environment variables, flag and help text;
//! - [`sources`]: the file, the environment and the command line, layered;
//! - `validate`: the rules the merged configuration must follow, and the
//!   masked copy that is safe to log.
//!
//! The TOML file is read only when `--config PATH` or `SEAWALL_CONFIG` names
//! it; there is no implicit lookup. Every key is optional, unknown keys are an
//! error. A file showing every section:
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//! shutdown_timeout = "30s"   # humantime: "250ms", "1m 30s", ...
//! request_timeout = "10s"
//! header_read_timeout = "5s"
//! max_body_bytes = 65536
//! max_uri_bytes = 4096
//! max_headers = 64
//! max_header_bytes = 8192
//! max_in_flight = 256
//! shed_wait = "50ms"
//! admission = "adaptive"   # the default; or "static"
//! compression = true
//! cors_origins = ["https://app.example.com"]
//! threads = 8   # leave out for one worker thread per core
//!
//! [database]
//! url = "postgres://seawall:secret@localhost:5432/seawall"   # or "sqlite://seawall.db?mode=rwc"
//! max_connections = 16   # leave out: SQLite one reader per core, PostgreSQL 16
//! # Streaming replicas that take reads (PostgreSQL only); see seawall_app::db::replicas.
//! replicas = ["postgres://seawall:secret@replica-1:5432/seawall"]
//! replica_max_lag = "1s"            # not current as of this long ago: no reads
//! replica_max_lag_bytes = 16777216  # this much WAL behind: no reads
//! replica_wait = "20ms"             # a cache fill waits this long for a current replica
//!
//! [redis]
//! url = "rediss://:secret@redis.internal:6380/0"   # leave out for in-memory backends
//! tls_ca_file = "/etc/seawall/redis-ca.pem"
//!
//! [admin]
//! token = "at-least-16-visible-ascii-chars"   # better: SEAWALL_ADMIN_TOKEN
//!
//! [demo]
//! seed = true
//! users = 1000
//! contents = 5000
//! schedules_per_user = 200
//! history_per_user = 1000
//!
//! [cache]
//! enabled = true
//! l1_entries = 200000
//! review_writes = "write-behind"   # or "direct"
//!
//! [queue]
//! redis_url = "redis://:secret@queue-redis.internal:6379/0"   # else redis.url
//! prefix = "seawall"
//! files = "/var/lib/seawall/files"
//! email = "concurrency=16 attempts=8 backoff=5s..30m timeout=20s"
//! import = "backoff=fixed:1m"   # keys left out keep the queue's default
//! nightly_backup = "cron 30 2 * * * Europe/Berlin"   # 5 or 6 cron fields, then a time zone
//! hourly_analytics = "every 30m"   # 1s to 1day
//! daily_report = "off"
//! daily_report_user = 7
//!
//! [worker]
//! listen = "0.0.0.0:8081"
//! shutdown_timeout = "1m"
//!
//! [perfmon]
//! http_layer = true
//! slow_query = "1s"
//! slow_api = "2s"
//!
//! [log]
//! filter = "seawall_api=debug,info"
//! format = "json"   # or "text"
//! ```
//!
//! The environment variables and flags are listed in [`SETTINGS`], by
//! `seawall-api --help` and in the README's table, which is generated from
//! the same list. The admin token has no flag: command lines are visible to
//! every local user through `ps`.
//!
//! ```
//! use seawall_app::config::{self, ConfigError};
//!
//! let env = |name: &str| {
//!     (name == "DATABASE_URL").then(|| "postgres://app:secret@db:5432/seawall".to_owned())
//! };
//! let config = config::from_sources(["seawall-api", "--listen", "0.0.0.0:9000"], env)?;
//! assert!(config.is_postgres());
//! assert_eq!(config.server.listen.port(), 9000);
//! assert_eq!(config.masked().database.url, "postgres://app:***@db:5432/seawall");
//! # Ok::<(), ConfigError>(())
//! ```

mod error;
pub mod queue;
pub mod schema;
pub mod sources;
#[cfg(test)]
mod test_support;
mod validate;

pub use error::ConfigError;
pub use queue::{QueueName, QueuePolicy, Recurring, RetryBackoff};
pub use schema::{
    AbuseMode, AdminConfig, Admission, CacheConfig, Config, DatabaseConfig, DemoConfig, Flag,
    LogConfig, LogFormat, OtelConfig, PerfmonConfig, Profile, QueueConfig, RateLimitConfig,
    RedisConfig, ReviewWrites, SETTINGS, ServerConfig, Setting, WorkerConfig, reference_table,
};
pub use sources::{
    Program, command, command_for, env_vars, from_sources, from_sources_for, load, load_for,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doc_example_file_is_valid() {
        let source = include_str!("mod.rs");
        let start = source
            .find("//! ```toml\n")
            .expect("the module docs hold a TOML example");
        let text: String = source[start..]
            .lines()
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .map(|line| format!("{}\n", line.trim_start_matches("//!").trim_start()))
            .collect();
        let config: Config = toml::from_str(&text).expect("the example parses");
        config.validate().expect("the example validates");
        // Every section is set to something other than its default.
        let defaults = Config::default();
        assert_ne!(config.server, defaults.server);
        assert_ne!(config.database, defaults.database);
        assert_ne!(config.redis, defaults.redis);
        assert_ne!(config.admin, defaults.admin);
        assert_ne!(config.cache, defaults.cache);
        assert_ne!(config.queue, defaults.queue);
        assert_ne!(config.worker, defaults.worker);
        assert_ne!(config.log, defaults.log);
    }

    #[test]
    fn errors_are_send_sync_and_static() {
        fn assert_traits<T: Send + Sync + 'static>() {}
        assert_traits::<ConfigError>();
    }
}
