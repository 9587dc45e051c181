//! The seawall reference application, which both binaries run:
//! `seawall-api` serves it over HTTP and `seawall-worker` processes its job
//! queues. This crate knows nothing of HTTP; its errors are typed, and each
//! binary maps them onto responses or exit statuses. What fails beneath an
//! operation of either workload rather than in its request is a
//! [`ServiceError`], which each workload's error wraps.
//!
//! - [`config`]: the configuration schema, its sources (file, environment,
//!   flags) and its validation;
//! - [`db`]: the database pool, its migrations and its readiness check;
//!   reads on PostgreSQL replicas ([`db::replicas`]) and read-your-writes by
//!   WAL position ([`db::caller`]);
//!   [`seed`]: the demo dataset;
//! - [`redis`]: the Redis client; [`setup`]: logging, signals, the monitor,
//!   the database, Redis and the job queues, set up the same way for both
//!   binaries; [`logging`]: the log format; [`metrics`]: the gauges both
//!   binaries export beside the monitor's; [`capacity`]: the forecasts of
//!   Redis's memory against its limit and of the request rate;
//!   [`process`]: a binary's `main`;
//! - [`workload`]: the reference workload (due reviews, completing a review,
//!   statistics, the catalogue, reviews written behind the cache);
//!   [`cache`]: its cache;
//!   [`jobs`]: the job queues' payloads and processors;
//! - [`promotions`]: the promotions workload (coupon campaigns, point
//!   ledgers, time sales) and its audit;
//! - [`time`] and [`json`]: the clock and the JSON integers both sides read.
//!
//! Cargo features: `faults` (off by default) adds [`faults`], process-wide
//! fault knobs for benchmarks and tests, such as a database that answers N
//! times slower. Production builds leave it off and have no fault knobs.
//!
//! Building the application and answering one request of its workload,
//! the way `seawall-api` does for `GET /api/content`:
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use seawall_app::{setup, workload::Workload};
//!
//! let dir = tempfile::tempdir()?;
//! let mut config = seawall_app::Config::default();
//! config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
//! config.demo.users = 5;
//! config.demo.contents = 20;
//! config.demo.schedules_per_user = 10;
//! config.demo.history_per_user = 20;
//! config.validate()?;
//! let monitor = setup::monitor(&config)?;
//! let db = setup::database(&config, &monitor).await?;
//! seawall_app::seed::ensure(&db, &config.demo, seawall_app::time::now_ms()).await?;
//! let queues = setup::QueueHandle::connect(&config)?;
//! let workload = Workload::new(db, None, queues, &config);
//! let page = serde_json::to_value(workload.contents(1, 10, Some("math")).await?)?;
//! assert_eq!(page["category"], "math");
//! # Ok(())
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #     tokio::runtime::Runtime::new()?.block_on(demo())
//! # }
//! ```

pub mod cache;
pub mod capacity;
mod checks;
pub mod config;
pub mod db;
#[cfg(feature = "faults")]
pub mod faults;
mod group;
pub mod jobs;
pub mod json;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod promotions;
pub mod redis;
mod reviews;
pub mod seed;
pub mod setup;
pub mod slo;
pub mod telemetry;
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
    /// The span exporter could not be built.
    #[error("could not set up the span exporter: {0}")]
    Telemetry(String),
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

/// What failed beneath a workload's operation: not the request, but the
/// service's own parts (its database, job queues, cache) or the service
/// itself. [`WorkloadError`](workload::WorkloadError) and
/// [`PromoError`](promotions::PromoError) wrap it, so a caller answers
/// these the same way for both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A statement failed; [`db::fault`] tells an unavailable or busy
    /// database from a fault.
    #[error("the database failed")]
    Database(#[source] std::sync::Arc<sqlx::Error>),
    /// The job queues' Redis has not answered since start.
    #[error("the job queues' Redis has not answered yet")]
    QueuesConnecting,
    /// The job queues failed.
    #[error("the job queues failed")]
    Queue(#[source] seawall_queue::Error),
    /// A read through the cache failed: its load failed (the loader's
    /// error, a [`WorkloadError`](workload::WorkloadError) or a
    /// [`PromoError`](promotions::PromoError), is the cache error's
    /// [`loader_error`](seawall_cache::Error::loader_error)) or took too
    /// long.
    #[error("a cached read failed")]
    Cache(#[source] seawall_cache::Error),
    /// A fault of the service itself, described for the log.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// A failed statement.
    #[allow(clippy::needless_pass_by_value)] // used as `map_err(ServiceError::database)`
    pub fn database(error: sqlx::Error) -> Self {
        Self::Database(std::sync::Arc::new(error))
    }
}

/// An error and its sources joined with `: `, the way the binaries report a
/// failure: `could not open and migrate the database: error returned from
/// database: …`. A source whose text its error already ends with (`redis:
/// IO Error: …` and the client's `IO Error: …`) is not repeated.
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
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
