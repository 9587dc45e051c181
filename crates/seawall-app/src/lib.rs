//! The seawall reference application, which both binaries run:
//! `seawall-api` serves it over HTTP and `seawall-worker` processes its job
//! queues. This crate knows nothing of HTTP; its errors are typed, and each
//! binary maps them onto responses or exit statuses.
//!
//! - [`config`]: the configuration schema, its sources (file, environment,
//!   flags) and its validation;
//! - [`db`]: the database pool, its migrations and its readiness check;
//!   [`seed`]: the demo dataset;
//! - [`redis`]: the Redis client; [`setup`]: logging, signals, the monitor,
//!   the database, Redis and the job queues, set up the same way for both
//!   binaries; [`logging`]: the log format; [`metrics`]: the gauges both
//!   binaries export beside the monitor's; [`process`]: a binary's `main`;
//! - [`workload`]: the reference workload (due reviews, completing a review,
//!   statistics, the catalogue, reviews written behind the cache);
//!   [`cache`]: its cache; [`reviews`]: SM-2 and the review write;
//!   [`jobs`]: the job queues' payloads and processors;
//! - [`time`] and [`json`]: the clock and the JSON integers both sides read.
//!
//! ```
//! # async fn demo() -> Result<(), seawall_app::Error> {
//! let mut config = seawall_app::Config::default();
//! config.database.url = "sqlite::memory:".to_owned();
//! let monitor = seawall_app::setup::monitor(&config)?;
//! let db = seawall_app::setup::database(&config, &monitor).await?;
//! assert_eq!(db.backend(), seawall_app::db::Backend::Sqlite);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

pub mod cache;
mod checks;
pub mod config;
pub mod db;
pub mod jobs;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod redis;
pub mod reviews;
pub mod seed;
pub mod setup;
pub mod time;
pub mod workload;

pub use config::{Config, ConfigError};
pub use logging::log_subscriber;
pub use redis::RedisError;

/// Why the application could not start, or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The performance monitor rejected its settings.
    #[error("invalid monitoring settings")]
    Perfmon(#[from] seawall_perfmon::Error),
    /// The database could not be opened or migrated.
    #[error("could not open and migrate the database")]
    Database(#[source] sqlx::Error),
    /// The demo dataset could not be written.
    #[error("could not write the demo dataset")]
    Seed(#[source] sqlx::Error),
    /// The Redis URL or TLS settings are unusable.
    #[error("could not set up the Redis client")]
    Redis(#[source] RedisError),
    /// The rate limiters could not be built.
    #[error("could not set up rate limiting")]
    RateLimit(#[source] seawall_ratelimit::Error),
    /// The cache could not be built.
    #[error("could not set up the cache")]
    Cache(#[source] seawall_cache::Error),
    /// The job queues could not be set up.
    #[error("could not set up the job queues")]
    Queue(#[source] seawall_queue::Error),
    /// The SIGINT / SIGTERM handlers could not be installed.
    #[error("could not listen for SIGINT and SIGTERM")]
    Signals(#[source] std::io::Error),
    /// A listen address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An error and its sources joined with `: `, the way the binaries report a
/// failure: `could not open and migrate the database: error returned from
/// database: …`.
///
/// ```
/// let error = seawall_app::Error::Signals(std::io::Error::other("no signals here"));
/// assert_eq!(
///     seawall_app::error_chain(&error),
///     "could not listen for SIGINT and SIGTERM: no signals here"
/// );
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
