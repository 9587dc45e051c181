//! What both binaries set up the same way: logging, the signals that stop
//! them, the monitor, the database, Redis and the job queues.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use seawall_perfmon::{HealthStatus, Monitor};
use seawall_queue::Queues;
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::db::Db;
use crate::logging::traced_subscriber;
use crate::redis::{self, Redis};
use crate::telemetry::Telemetry;
use crate::{Error, log_subscriber};

/// The monitor's histogram interval; the API's timeline samples at the
/// same pace.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(5);

/// The longest wait between two attempts to reach the queues' Redis.
const QUEUE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Installs the log subscriber the configuration asks for, unless one is
/// installed already (a test, or an embedding program), and bridges the
/// `log` records of fred and sqlx into it. With `otel.endpoint` set, the
/// subscriber also records spans for export over OTLP, their service named
/// `name` unless `otel.service_name` says otherwise; the [`Telemetry`]
/// returned flushes them at shutdown.
///
/// # Errors
///
/// [`Error::Telemetry`] when the span exporter cannot be built.
pub fn init_tracing(config: &Config, name: &'static str) -> Result<Telemetry, Error> {
    let ansi = std::io::stderr().is_terminal();
    let (telemetry, subscriber) = match Telemetry::start(&config.otel, name)? {
        Some((telemetry, tracer)) => {
            let subscriber = traced_subscriber(
                &config.log,
                std::io::stderr,
                ansi,
                &config.otel.filter,
                tracer,
            );
            (telemetry, subscriber)
        }
        None => (
            Telemetry::default(),
            log_subscriber(&config.log, std::io::stderr, ansi),
        ),
    };
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        telemetry.installed();
        let level = tracing::level_filters::LevelFilter::current();
        let bridged = tracing_log::LogTracer::builder()
            .with_max_level(tracing_log::AsLog::as_log(&level))
            .init();
        drop(bridged);
    }
    Ok(telemetry)
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are
/// installed when this is called, not when the future is first polled, so a
/// signal that arrives as soon as the process says it is up still stops it
/// gracefully instead of killing it.
#[cfg(unix)]
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

/// A future that completes on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    })
}

/// The monitor, with the configured slow-query and slow-API thresholds.
/// Its health rules leave out the probes and the scraper: `/readyz`
/// answers 503 on purpose while an instance starts or drains, which is no
/// error of the service (and the rate limits tighten on the health).
pub fn monitor(config: &Config) -> Result<Monitor, Error> {
    let rules = seawall_perfmon::HealthRules {
        ignored_routes: ["/livez", "/readyz", "/metrics"]
            .map(str::to_owned)
            .to_vec(),
        ..seawall_perfmon::HealthRules::default()
    };
    Ok(Monitor::builder()
        .interval(MONITOR_INTERVAL)
        .slow_query_threshold(config.perfmon.slow_query)
        .slow_api_threshold(config.perfmon.slow_api)
        .health_rules(rules)
        .build()?)
}

/// The database, connected and migrated.
pub async fn database(config: &Config, monitor: &Monitor) -> Result<Db, Error> {
    Db::connect(&config.database, monitor.clone())
        .await
        .map_err(Error::Database)
}

/// The Redis client when a URL is set (reconnecting in the background if
/// the server is not there yet).
pub async fn redis(config: &Config) -> Result<Option<Redis>, Error> {
    match &config.redis.url {
        Some(url) => Ok(Some(
            Redis::connect(&config.redis, url)
                .await
                .map_err(Error::Redis)?,
        )),
        None => Ok(None),
    }
}

/// The job queues, once connected: on Redis when a URL is set
/// (`queue.redis_url`, else `redis.url`), connected in the background until
/// the server answers; in memory otherwise, at once.
#[derive(Clone)]
pub struct QueueHandle {
    queues: Arc<OnceCell<Queues>>,
    memory: bool,
}

impl QueueHandle {
    /// Starts connecting. Fails only on settings that cannot work.
    pub fn connect(config: &Config) -> Result<Self, Error> {
        let Some(url) = config
            .queue
            .redis_url
            .as_ref()
            .or(config.redis.url.as_ref())
        else {
            let handle = Self {
                queues: Arc::new(OnceCell::new_with(Some(Queues::memory()))),
                memory: true,
            };
            return Ok(handle);
        };
        let handle = Self {
            queues: Arc::new(OnceCell::new()),
            memory: false,
        };
        let builder = redis::builder(&config.redis, url).map_err(Error::Redis)?;
        let prefix = config.queue.prefix.clone();
        let (replicas, replica_timeout) = (config.queue.wait_replicas, config.queue.wait_timeout);
        let cell = Arc::clone(&handle.queues);
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                let connecting = Queues::redis(builder.clone())
                    .prefix(prefix.clone())
                    .replicated_enqueues(replicas, replica_timeout)
                    .connect()
                    .await;
                match connecting {
                    Ok(queues) => {
                        if let Some(warning) = queues.durability_warning().await.ok().flatten() {
                            tracing::warn!(%warning, "the queues' Redis may lose jobs");
                        }
                        let _ = cell.set(queues);
                        tracing::info!("connected to the job queues");
                        return;
                    }
                    Err(seawall_queue::Error::Unsupported(why)) => {
                        tracing::error!(%why, "the job queues cannot run on this Redis");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?wait, "the job queues' Redis is not reachable yet");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(QUEUE_RETRY_MAX);
                    }
                }
            }
        });
        Ok(handle)
    }

    /// The queues, if connected.
    pub fn get(&self) -> Option<&Queues> {
        self.queues.get()
    }

    /// Whether the queues are in this process's memory (no Redis URL).
    pub fn is_memory(&self) -> bool {
        self.memory
    }

    /// A readiness check that passes while an enqueue on every queue would
    /// be acknowledged ([`Queues::check_enqueue`]); see [`EnqueueCheck`].
    pub fn enqueue_check(&self) -> EnqueueCheck {
        EnqueueCheck {
            handle: self.clone(),
            last: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Waits until the queues are connected.
    pub async fn connected(&self) -> Queues {
        loop {
            if let Some(queues) = self.queues.get() {
                return queues.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How long one answer of an [`EnqueueCheck`] is reused: probes come from
/// every load balancer and orchestrator at once, the queues are asked at
/// most this often.
const ENQUEUE_CHECK_REUSE: Duration = Duration::from_millis(250);

/// Readiness of the enqueue path (`queues:enqueue`), each queue asked
/// within a second: `pass` while an enqueue on every one of the service's
/// queues would be acknowledged; `fail` while the queues are not connected
/// or an enqueue could not reach its Redis primary (this instance is cut
/// off from it, or a failover has not promoted a replica yet); `warn` while
/// a primary takes the write but fewer replicas confirm it than
/// `queue.wait_replicas` asks. Enqueues are refused (503) then too, but
/// every instance finds the same primary short of the same replicas: a
/// readiness that failed would take them all out of rotation at once (a
/// Kubernetes Service then has no endpoint, reads included), and send
/// nothing to a better one, since there is none. One check runs at a time
/// and its answer serves the probes of the next 250 ms; its `time` says
/// when it started.
#[derive(Clone)]
pub struct EnqueueCheck {
    handle: QueueHandle,
    last: Arc<tokio::sync::Mutex<Option<(std::time::Instant, seawall_perfmon::CheckResult)>>>,
}

impl std::fmt::Debug for EnqueueCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnqueueCheck").finish_non_exhaustive()
    }
}

impl EnqueueCheck {
    async fn probe(&self) -> seawall_perfmon::CheckResult {
        let Some(queues) = self.handle.get() else {
            return seawall_perfmon::CheckResult::fail(
                "the job queues' Redis has not answered yet",
            )
            .component_type("component");
        };
        let probes = crate::config::QueueName::ALL.map(|queue| async move {
            let component = format!("enqueue on {}", queue.as_str());
            let mut short = None;
            let result = crate::checks::timed_ping(&component, async {
                match queues.check_enqueue(queue.as_str()).await {
                    Err(seawall_queue::Error::NotReplicated { acked, wanted }) => {
                        short = Some((acked, wanted));
                        Ok(())
                    }
                    other => other,
                }
            })
            .await;
            match short {
                Some((acked, wanted)) => seawall_perfmon::CheckResult::with_status(
                    HealthStatus::Degraded,
                )
                .output(format!(
                    "{component}: the primary took the write, but {acked} of the \
                             {wanted} replicas queue.wait_replicas asks for confirmed it in \
                             time; enqueues are refused until they do, on every instance alike"
                )),
                None => result,
            }
        });
        let results = futures_util::future::join_all(probes).await;
        let slowest = results
            .iter()
            .filter_map(|result| result.observed_value.as_ref()?.as_f64())
            .fold(0.0_f64, f64::max);
        // The worst of them: a failure, else a warning, else a pass.
        [HealthStatus::Unhealthy, HealthStatus::Degraded]
            .into_iter()
            .find_map(|status| results.iter().find(|result| result.status == status))
            .cloned()
            .unwrap_or_else(|| seawall_perfmon::CheckResult::pass().observed(slowest, "ms"))
            .component_type("component")
    }
}

#[async_trait::async_trait]
impl seawall_perfmon::HealthCheck for EnqueueCheck {
    fn key(&self) -> String {
        "queues:enqueue".to_owned()
    }

    async fn check(&self) -> seawall_perfmon::CheckResult {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < ENQUEUE_CHECK_REUSE
        {
            return result.clone();
        }
        let read_at = std::time::SystemTime::now();
        let result = self.probe().await.read_at(read_at);
        *last = Some((std::time::Instant::now(), result.clone()));
        result
    }
}
