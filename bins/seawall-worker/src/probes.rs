//! The worker's probes on `worker.listen`: `/livez`, `/readyz` (the
//! database, Redis, and the queues connected) and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use seawall_app::db::Db;
use seawall_app::redis::Redis;
use seawall_app::setup::QueueHandle;
use seawall_perfmon::{CheckResult, HealthCheck, Monitor, probes};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long the probes' server lets a scrape finish once the worker stops.
const DRAIN: Duration = Duration::from_secs(2);

/// What the probes read: the monitor, and the checks readiness runs.
#[derive(Clone)]
pub(crate) struct Probes {
    monitor: Monitor,
    checks: Arc<Vec<Box<dyn HealthCheck>>>,
}

impl Probes {
    /// Readiness over the database, Redis when configured, and the queues'
    /// connection; the database and Redis checks also go on `monitor`'s
    /// health report.
    pub(crate) fn new(
        monitor: &Monitor,
        db: &Db,
        redis: Option<&Redis>,
        queues: &QueueHandle,
    ) -> Self {
        let mut checks: Vec<Box<dyn HealthCheck>> = vec![Box::new(db.health_check())];
        if let Some(redis) = redis {
            checks.push(Box::new(redis.health_check()));
            monitor.register_check(redis.health_check());
        }
        checks.push(Box::new(QueuesCheck(queues.clone())));
        monitor.register_check(db.health_check());
        Self {
            monitor: monitor.clone(),
            checks: Arc::new(checks),
        }
    }
}

/// The probes' server, running.
pub(crate) struct Serving {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Stops taking connections and lets requests in flight finish for up
    /// to two seconds; past that, a scrape still running does not hold the
    /// exit.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        match tokio::time::timeout(DRAIN, &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => {
                tracing::warn!(%error, "the probes' server stopped abnormally");
                Ok(())
            }
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }
}

/// Serves the probes on `listener` in the background.
pub(crate) fn serve(listener: TcpListener, probes: Probes) -> std::io::Result<Serving> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "probes at /livez, /readyz and /metrics");
    let router =
        Router::new()
            .route("/livez", get(|| async { probes::liveness() }))
            .route(
                "/readyz",
                get(
                    |axum::extract::State(probes): axum::extract::State<Probes>| async move {
                        probes::readiness(&probes.checks).await
                    },
                ),
            )
            .route(
                "/metrics",
                get(
                    |axum::extract::State(probes): axum::extract::State<Probes>,
                     headers: HeaderMap| async move {
                        probes::metrics(&probes.monitor, &headers)
                    },
                ),
            )
            .fallback(|uri: Uri| async move { not_found(&uri) })
            .with_state(probes);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Serving { stop, task })
}

/// An RFC 9457 problem, as the API answers for a path it does not serve.
fn not_found(uri: &Uri) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": format!("nothing is served at {}", uri.path()),
    });
    let mut response = (StatusCode::NOT_FOUND, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
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
