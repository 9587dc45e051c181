//! The `seawall-worker` process: the processors of the eight queues against
//! Redis, with `/livez`, `/readyz` and `/metrics` on a port of its own.
//!
//! It reads the same configuration as the API (one file and one set of
//! environment variables serve a deployment), connects the database (and
//! migrates it), Redis and the queues, and runs until SIGINT or SIGTERM.
//! Then it stops taking jobs, gives running ones `worker.shutdown_timeout`
//! to finish, gives the rest back to their queues (no attempt counted),
//! and exits with status 0.
//!
//! ```no_run
//! # async fn demo() -> Result<(), seawall_api::Error> {
//! let mut config = seawall_api::Config::default();
//! config.redis.url = Some("redis://127.0.0.1:6379".to_owned());
//! seawall_api::worker::run(config).await
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use seawall_perfmon::{CheckResult, HealthCheck, Monitor};
use tokio::net::TcpListener;

use crate::cache::ApiCache;
use crate::config::{Config, ConfigError, ServerConfig};
use crate::jobs::{Processors, Running};
use crate::problem::Problem;
use crate::routes::health;
use crate::setup::{self, QueueHandle};
use crate::{Error, metrics, server};
use seawall_app::Error as AppError;

/// How long the probes' server lets a scrape finish once the worker stops.
const PROBES_DRAIN: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Probes {
    monitor: Monitor,
    checks: Arc<Vec<Box<dyn HealthCheck>>>,
}

/// Starts logging, connects everything, runs the processors and serves the
/// probes until SIGINT or SIGTERM, then drains.
pub async fn run(config: Config) -> Result<(), Error> {
    setup::init_tracing(&config);
    let masked = serde_json::to_string(&config.masked()).unwrap_or_default();
    tracing::info!(config = %masked, "effective configuration");
    let shutdown = setup::shutdown_signal()?;
    let listener = TcpListener::bind(config.worker.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.worker.listen,
            source,
        })?;
    serve(config, listener, shutdown).await
}

/// [`run`] on a listener that is bound already, until `shutdown`
/// completes. Refuses a configuration without a Redis URL: jobs on the
/// memory backend live in the API's own process.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate()?;
    if config.redis.url.is_none() && config.queue.redis_url.is_none() {
        return Err(AppError::Config(ConfigError::Invalid {
            key: "redis.url",
            value: "none".to_owned(),
            reason: "seawall-worker takes jobs from Redis: set REDIS_URL (or --redis-url, or \
                     queue.redis_url); without Redis the API runs the processors itself"
                .to_owned(),
        })
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
    let mut checks: Vec<Box<dyn HealthCheck>> = vec![Box::new(db.health_check())];
    if let Some(redis) = &redis {
        checks.push(Box::new(redis.health_check()));
        monitor.register_check(redis.health_check());
    }
    checks.push(Box::new(QueuesCheck(queues.clone())));
    monitor.register_check(db.health_check());
    let probes = Probes {
        monitor: monitor.clone(),
        checks: Arc::new(checks),
    };
    let router =
        Router::new()
            .route("/livez", get(|| async { health::alive() }))
            .route(
                "/readyz",
                get(|State(probes): State<Probes>| async move {
                    health::readiness(&probes.checks).await
                }),
            )
            .route(
                "/metrics",
                get(
                    |State(probes): State<Probes>, headers: HeaderMap| async move {
                        health::exposition(&probes.monitor, &headers)
                    },
                ),
            )
            .fallback(|uri: Uri| async move {
                Problem::not_found(format!("nothing is served at {}", uri.path()))
            })
            .with_state(probes);
    let addr = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(%addr, "probes at /livez, /readyz and /metrics");
    let (stop_probes, probes_stopped) = tokio::sync::oneshot::channel::<()>();
    let probe_config = ServerConfig {
        shutdown_timeout: PROBES_DRAIN,
        ..ServerConfig::default()
    };
    let probe_server = tokio::spawn(async move {
        server::serve(listener, router, &probe_config, async {
            let _ = probes_stopped.await;
        })
        .await
    });

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
    let _ = stop_probes.send(());
    match probe_server.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(Error::Serve(error)),
        Err(error) => tracing::warn!(%error, "the probes' server stopped abnormally"),
    }
    db.close().await;
    if let Some(redis) = &redis {
        redis.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Ready once the queues are connected.
struct QueuesCheck(QueueHandle);

#[async_trait]
impl HealthCheck for QueuesCheck {
    fn key(&self) -> String {
        "queues:connected".to_owned()
    }

    async fn check(&self) -> CheckResult {
        match self.0.get() {
            Some(_) => CheckResult::pass().component_type("component"),
            None => CheckResult::fail("the job queues' Redis has not answered yet")
                .component_type("component"),
        }
    }
}
