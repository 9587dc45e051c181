//! The `seawall-worker` process: the processors of the nine job queues
//! against Redis, with `/livez`, `/readyz` and `/metrics` on a port of its
//! own (`worker.listen`).
//!
//! It reads the same configuration as `seawall-api` (one file and one set of
//! environment variables serve a deployment), connects the database (and
//! migrates it), Redis and the queues, and runs until SIGINT or SIGTERM.
//! Then it stops taking jobs, gives running ones `worker.shutdown_timeout`
//! to finish, gives the rest back to their queues (no attempt counted),
//! and exits with status 0.
//!
//! Exit status: 0 after a clean drain (and for `--help` and `--version`),
//! 1 when the worker fails, 2 when the command line or configuration is
//! invalid (a missing Redis URL included).

mod probes;

use std::process::ExitCode;

use seawall_app::cache::ApiCache;
use seawall_app::config::{Config, ConfigError, Program};
use seawall_app::jobs::{Processors, Running};
use seawall_app::process::Failure;
use seawall_app::setup::{self, QueueHandle};
use seawall_app::{Error as AppError, metrics};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    seawall_app::process::main_with(Program::Worker, run)
}

/// Why the worker could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// The configuration, the database, Redis, the queues or the probes'
    /// address.
    #[error(transparent)]
    App(#[from] AppError),
    /// The probes' server failed.
    #[error("the probes' server failed")]
    Probes(#[source] std::io::Error),
}

impl Failure for Error {
    fn is_usage(&self) -> bool {
        matches!(self, Self::App(error) if error.is_usage())
    }
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Self::App(AppError::Config(error))
    }
}

impl From<seawall_perfmon::Error> for Error {
    fn from(error: seawall_perfmon::Error) -> Self {
        Self::App(AppError::Perfmon(error))
    }
}

/// Starts logging, binds the probes' address, and works until SIGINT or
/// SIGTERM.
async fn run(config: Config) -> Result<(), Error> {
    let telemetry = setup::init_tracing(&config, "seawall-worker")?;
    let masked = serde_json::to_string(&config.masked()).unwrap_or_default();
    tracing::info!(config = %masked, "effective configuration");
    let shutdown = setup::shutdown_signal()?;
    let listener = TcpListener::bind(config.worker.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.worker.listen,
            source,
        })?;
    let worked = work(config, listener, shutdown).await;
    telemetry.shutdown().await;
    worked
}

/// Connects everything, runs the processors and serves the probes on
/// `listener` until `shutdown` completes, then drains. Refuses a
/// configuration without a Redis URL: jobs on the memory backend live in
/// the API's own process.
async fn work(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate()?;
    if config.redis.url.is_none() && config.queue.redis_url.is_none() {
        return Err(ConfigError::Invalid {
            key: "redis.url",
            value: "none".to_owned(),
            reason: "seawall-worker takes jobs from Redis: set REDIS_URL (or --redis-url, or \
                     queue.redis_url); without Redis the API runs the processors itself"
                .to_owned(),
        }
        .into());
    }
    let monitor = setup::monitor(&config)?;
    let db = setup::database(&config, &monitor).await?;
    let redis = setup::redis(&config).await?;
    metrics::register(&monitor, &db, redis.as_ref())?;
    // Invalidations the processors make reach every API instance through
    // the cache's Redis stream.
    let cache =
        ApiCache::build(&config.cache, redis.as_ref(), &monitor).map_err(AppError::Cache)?;
    let queues = QueueHandle::connect(&config)?;
    let probes = probes::Probes::new(&monitor, &db, redis.as_ref(), &queues);
    let probes = probes::serve(listener, probes).map_err(Error::Probes)?;

    let processors = Processors::new(db.clone(), cache, config.queue.files.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    let queues = tokio::select! {
        queues = queues.connected() => Some(queues),
        () = &mut shutdown => None,
    };
    if let Some(queues) = queues {
        let running = Running::start(&queues, &config.queue, &monitor, &processors)
            .map_err(AppError::Queue)?;
        monitor.register_check(seawall_queue::DurabilityCheck::new(queues.clone()));
        tracing::info!(
            "processing the email, report, schedule, notification, analytics, backup, export and import queues"
        );
        shutdown.await;
        tracing::info!(
            running = running.running(),
            deadline = ?config.worker.shutdown_timeout,
            "draining: no new jobs; running ones get until the deadline"
        );
        for (queue, stats) in running.shutdown(config.worker.shutdown_timeout).await {
            if stats.requeued > 0 {
                tracing::warn!(%queue, requeued = stats.requeued, "unfinished jobs went back to their queue");
            }
            tracing::info!(%queue, completed = stats.completed, failed = stats.failed, dead = stats.dead, "queue stopped");
        }
    }
    probes.stop().await.map_err(Error::Probes)?;
    db.close().await;
    if let Some(redis) = &redis {
        redis.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}
