//! Wiring: the state handlers share, the router, and serving with graceful
//! shutdown.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use seawall_perfmon::{HealthCheck, Monitor, PerfmonLayer};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::{self, AdminToken};
use crate::config::Config;
use crate::db::Db;
use crate::problem::Problem;
use crate::redis::Redis;
use crate::seed::{self, SeedOutcome};
use crate::timeline::Timeline;
use crate::{Error, dashboard, ops, workload};

/// The monitor's histogram interval; the timeline samples at the same pace.
const MONITOR_INTERVAL: Duration = Duration::from_secs(5);

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

struct Shared {
    db: Db,
    redis: Option<Redis>,
    monitor: Monitor,
    admin_token: AdminToken,
    timeline: Timeline,
    readiness: Vec<Box<dyn HealthCheck>>,
}

impl AppState {
    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    pub(crate) fn monitor(&self) -> &Monitor {
        &self.0.monitor
    }

    pub(crate) fn admin_token(&self) -> &AdminToken {
        &self.0.admin_token
    }

    pub(crate) fn timeline(&self) -> &Timeline {
        &self.0.timeline
    }

    pub(crate) fn readiness_checks(&self) -> &[Box<dyn HealthCheck>] {
        &self.0.readiness
    }
}

/// The service, built from a [`Config`]: connected, migrated, seeded, ready to
/// serve.
pub struct App {
    state: AppState,
    router: Router,
    config: Config,
    seed: SeedOutcome,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config.masked())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Connects to the database (and Redis when configured), runs the
    /// migrations, writes the demo dataset into an empty database, and builds
    /// the router. Needs a tokio runtime.
    pub async fn build(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let monitor = Monitor::builder()
            .interval(MONITOR_INTERVAL)
            .slow_query_threshold(config.perfmon.slow_query)
            .slow_api_threshold(config.perfmon.slow_api)
            .build()?;
        let admin_token = AdminToken::new(config.admin.token.as_deref()).map_err(Error::Token)?;
        let db = Db::connect(&config.database, monitor.clone())
            .await
            .map_err(Error::Database)?;
        let seed = seed::ensure(&db, &config.demo, workload::now_ms())
            .await
            .map_err(Error::Seed)?;
        match &seed {
            SeedOutcome::Disabled => tracing::info!("demo dataset: seeding is off"),
            SeedOutcome::Present(dataset) => {
                tracing::info!(?dataset, "demo dataset: already present");
            }
            SeedOutcome::ForeignData => {
                tracing::info!("demo dataset: the database already holds users; left alone");
            }
            SeedOutcome::Written(_) => {}
        }
        let redis = match &config.redis.url {
            Some(url) => Some(Redis::connect(url).await.map_err(Error::Redis)?),
            None => None,
        };

        let mut readiness: Vec<Box<dyn HealthCheck>> = vec![Box::new(db.health_check())];
        monitor.register_check(db.health_check());
        if let Some(redis) = &redis {
            readiness.push(Box::new(redis.health_check()));
            monitor.register_check(redis.health_check());
        }
        let state = AppState(Arc::new(Shared {
            timeline: Timeline::start(monitor.clone(), MONITOR_INTERVAL),
            db,
            redis,
            monitor,
            admin_token,
            readiness,
        }));
        let router = router(state.clone(), &config);
        Ok(Self {
            state,
            router,
            config,
            seed,
        })
    }

    /// The router, for serving or for calling in tests with `tower::ServiceExt`.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        self.state.admin_token().as_str()
    }

    /// Whether the admin token was generated at start (none was configured).
    pub fn admin_token_generated(&self) -> bool {
        self.state.admin_token().is_generated()
    }

    /// The monitor every route and query reports to.
    pub fn monitor(&self) -> &Monitor {
        self.state.monitor()
    }

    /// What the demo seed found or wrote.
    pub fn seed_outcome(&self) -> &SeedOutcome {
        &self.seed
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting,
    /// lets in-flight requests finish for up to `server.shutdown_timeout`, and
    /// closes the database and Redis connections.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let deadline = self.config.server.shutdown_timeout;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, self.router.clone())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections; draining requests in flight");
                let _ = stopping_tx.send(());
            })
            .into_future();
        let mut server = tokio::spawn(server);
        let mut drained = true;
        let outcome = tokio::select! {
            finished = &mut server => finished,
            _ = stopping_rx => match tokio::time::timeout(deadline, &mut server).await {
                Ok(finished) => finished,
                Err(_) => {
                    tracing::warn!(
                        "requests still in flight after {}; stopping without them",
                        humantime::format_duration(deadline)
                    );
                    server.abort();
                    drained = false;
                    Ok(Ok(()))
                }
            },
        };
        // Closing the pool waits for connections in use; past the deadline,
        // requests still holding one must not keep the process alive.
        let close_within = if drained {
            deadline
        } else {
            Duration::from_secs(1)
        };
        if tokio::time::timeout(close_within, self.close())
            .await
            .is_err()
        {
            tracing::warn!("connections still in use; not waiting for them to close");
        }
        match outcome {
            Ok(Ok(())) => {
                tracing::info!("stopped");
                Ok(())
            }
            Ok(Err(error)) => Err(Error::Serve(error)),
            Err(join) => Err(Error::Serve(std::io::Error::other(join))),
        }
    }

    async fn close(&self) {
        self.state.db().close().await;
        if let Some(redis) = &self.state.0.redis {
            redis.close().await;
        }
    }
}

fn router(state: AppState, config: &Config) -> Router {
    let admin = ops::admin_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    let router = Router::new()
        .merge(workload::routes())
        .merge(ops::public_routes())
        .merge(admin)
        .merge(dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.server.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response));
    let router = if config.perfmon.http_layer {
        router.layer(PerfmonLayer::new(state.monitor().clone()))
    } else {
        router
    };
    router.with_state(state)
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("nothing is served at {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A handler that panicked answers 500 like any other failure; the panic is
/// logged, and the service keeps serving.
#[allow(clippy::needless_pass_by_value)] // the signature CatchPanicLayer calls
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    Problem::internal().into_response()
}
