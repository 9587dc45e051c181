//! The seawall API service: the reference workload (users, contents, review
//! schedules and history) on SQLite or PostgreSQL, with performance
//! monitoring on every route and query, an admin API behind a bearer token,
//! probes, Prometheus metrics and a dashboard.
//!
//! The library also holds what `seawall-worker` shares with the API: the
//! configuration ([`config`]), the set-up of logging, the database, Redis
//! and the queues, and the processors of the eight job queues ([`jobs`]);
//! [`worker::run`] is the worker process.
//!
//! The binary is a thin shell around this library: [`config::load`] reads the
//! configuration and [`run`] serves until SIGINT or SIGTERM. Tests and other
//! binaries build the same service with [`App::build`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), seawall_api::Error> {
//! let mut config = seawall_api::Config::default();
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

mod app;
mod auth;
mod extract;
mod metrics;
mod middleware;
mod params;
pub mod problem;
mod ratelimit;
mod routes;
mod server;
mod state;
mod timeline;
pub mod worker;

// The application's modules, under the names the service's modules use.
pub use seawall_app::{
    Config, ConfigError, RedisError, config, error_chain, jobs, log_subscriber, seed,
};
pub(crate) use seawall_app::{cache, db, redis, setup};

pub use app::{App, openapi, with_stack};
pub use seawall_app::db::Backend;

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

/// How long dropping the runtime waits for blocking tasks once the process
/// has drained; a stuck task must not keep it alive.
const RUNTIME_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole `main` of `seawall-api` and `seawall-worker`: loads the
/// configuration for `program`, then runs it on a multi-threaded tokio
/// runtime until SIGINT or SIGTERM.
///
/// Exit status: 0 after a clean shutdown (and for `--help` and
/// `--version`), 1 when the process fails, 2 when the command line or
/// configuration is invalid.
pub fn main_for(program: config::Program) -> std::process::ExitCode {
    use std::process::ExitCode;
    let name = program.name();
    let config = match config::load_for(program) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {}", error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!(
                "{name}: cannot start the tokio runtime: {}",
                error_chain(&error)
            );
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match program {
            config::Program::Api => run(config).await,
            config::Program::Worker => worker::run(config).await,
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {}", error_chain(&error));
            match error {
                Error::App(seawall_app::Error::Config(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Starts logging, builds the service, prints where it listens and the admin
/// token if one was generated, and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), Error> {
    setup::init_tracing(&config);
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
    app.serve(listener, shutdown).await
}
