//! The seawall API service: the reference workload (users, contents, review
//! schedules and history) on SQLite or PostgreSQL, with performance
//! monitoring on every route and query, an admin API behind a bearer token,
//! probes, Prometheus metrics and a dashboard.
//!
//! This crate is the HTTP service only: routes, middleware, the admin
//! token, problem responses, the OpenAPI document and the dashboard. What
//! it serves is the application of `seawall-app` (the configuration, the
//! database, the workload, the queues), which `seawall-worker` runs too.
//!
//! The binary is a thin shell around this library: [`config::load`] reads the
//! configuration and [`run`] serves until SIGINT or SIGTERM. Tests and other
//! binaries build the same service with [`App::build`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), seawall_api::Error> {
//! let mut config = seawall_app::Config::default();
//! config.database.url = "sqlite://demo.db?mode=rwc".to_owned();
//! config.demo.users = 10;
//! let app = seawall_api::App::build(config).await?;
//! let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
//! let listener = tokio::net::TcpListener::bind(addr)
//!     .await
//!     .map_err(|source| seawall_app::Error::Bind { addr, source })?;
//! app.serve(listener, std::future::pending()).await
//! # }
//! ```
//!
//! Every error a client sees is an RFC 9457 problem (`application/problem+json`);
//! see [`problem`].
//!
//! Cargo features: `faults` (off by default, and in production builds) adds
//! fault knobs for benchmarks and tests: with `SEAWALL_FAULT_DB_SLOWDOWN` set
//! to a factor from 2 to 1000, each SIGUSR1 toggles the database between its
//! own speed and answering that many times slower.

mod app;
mod auth;
mod extract;
mod faults;
mod middleware;
mod params;
pub mod problem;
mod ratelimit;
mod read_after;
mod routes;
mod server;
mod state;
mod timeline;

// The application's modules, under the names the service's modules use.
use seawall_app::{Config, ConfigError};
pub(crate) use seawall_app::{cache, config, db, jobs, redis, seed, setup};

pub use app::{App, openapi, with_stack};
#[cfg(feature = "faults")]
pub use faults::FaultError;

/// Why the service could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// What the application's set-up failed with: the configuration, the
    /// database, Redis, the queues, a listen address.
    #[error(transparent)]
    App(#[from] seawall_app::Error),
    /// The operating system's random source failed.
    #[error("could not generate an admin token")]
    Token(#[source] getrandom::Error),
    /// Serving failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// The fault knobs (feature `faults`) are set wrong or could not start.
    #[cfg(feature = "faults")]
    #[error(transparent)]
    Faults(#[from] FaultError),
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Self::App(seawall_app::Error::Config(error))
    }
}

impl From<seawall_perfmon::Error> for Error {
    fn from(error: seawall_perfmon::Error) -> Self {
        Self::App(seawall_app::Error::Perfmon(error))
    }
}

impl seawall_app::process::Failure for Error {
    fn is_usage(&self) -> bool {
        match self {
            Self::App(error) => error.is_usage(),
            #[cfg(feature = "faults")]
            Self::Faults(FaultError::DbSlowdown { .. }) => true,
            _ => false,
        }
    }
}

/// Starts logging, builds the service, prints where it listens and the admin
/// token if one was generated, and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), Error> {
    let telemetry = setup::init_tracing(&config, "seawall-api")?;
    // Before anything is built, so that a bad fault setting stops the
    // service at once.
    let fault_knobs = faults::from_env()?;
    let masked = serde_json::to_string(&config.masked()).unwrap_or_default();
    tracing::info!(config = %masked, "effective configuration");
    let listen = config.server.listen;
    let app = App::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| seawall_app::Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let shutdown = setup::shutdown_signal()?;
    fault_knobs.listen()?;
    tracing::info!(%addr, "listening; dashboard at http://{addr}/");
    if app.admin_token_generated() {
        // Printed once, on stdout and not in the log, so it can be captured
        // apart from log shipping.
        #[allow(clippy::print_stdout)]
        {
            println!(
                "admin token (generated at start; set SEAWALL_ADMIN_TOKEN to choose one): {}",
                app.admin_token()
            );
        }
    }
    let served = app.serve(listener, shutdown).await;
    telemetry.shutdown().await;
    served
}
