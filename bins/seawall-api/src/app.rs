//! Wiring: connects the parts into the shared state, assembles the route
//! modules and the OpenAPI document into one router behind the middleware
//! stack, and serves with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::{Extension, Router};
use seawall_perfmon::{Monitor, PerfmonLayer};
use tokio::net::TcpListener;
use utoipa::{Modify as _, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;

use crate::Error;
use crate::auth::{self, AdminGuard, AdminToken};
use crate::cache::ApiCache;
use crate::config::{Config, QueueName, ServerConfig};
use crate::jobs::{Processors, Running, Throughput};
use crate::middleware::{self, Shedder, Stack};
use crate::params::{QueryRules, QueryRulesLayer};
use crate::problem::Problem;
use crate::ratelimit::{self, Gate, RateLimits};
use crate::routes::docs::{ApiDoc, ApiDocument, Conventions};
use crate::routes::{
    cache as cache_routes, dashboard, docs, health, keys as keys_routes, performance, promotions,
    queue as queue_routes, ratelimit as ratelimit_routes, workload,
};
use crate::seed::{self, SeedOutcome};
use crate::server::{self, Drained};
use crate::setup::QueueHandle;
use crate::setup::{self, MONITOR_INTERVAL};
use crate::state::{AppState, Parts};
use crate::timeline::Timeline;
use seawall_app::Error as AppError;
use seawall_app::db::caller::Positions;
use seawall_app::metrics;
use seawall_app::promotions::{Promotions, Scenarios};
use seawall_app::workload::Workload;

/// The service, built from a [`Config`]: connected, migrated, seeded, ready to
/// serve.
pub struct App {
    state: AppState,
    router: Router,
    config: Config,
    seed: SeedOutcome,
    /// The queue processors, when this process runs them.
    processors: parking_lot::Mutex<Option<Running>>,
    /// The task that warms the cache with its learned hot keys.
    warming: Option<tokio::task::AbortHandle>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(warming) = &self.warming {
            warming.abort();
        }
    }
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
        let monitor = setup::monitor(&config)?;
        let admin_token = AdminToken::new(config.admin.token.as_deref()).map_err(Error::Token)?;
        let db = setup::database(&config, &monitor).await?;
        let seed = seed::ensure(&db, &config.demo, seawall_app::time::now_ms())
            .await
            .map_err(AppError::Seed)?;
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
        let redis = setup::redis(&config).await?;
        monitor.register_check(db.health_check());
        if let Some(redis) = &redis {
            monitor.register_check(redis.health_check());
        }
        metrics::register(&monitor, &db, redis.as_ref())?;
        // Forecast only: Redis's memory against its limit, the request rate.
        let capacity = seawall_app::capacity::Capacity::start(&monitor, redis.as_ref()).await?;
        let shedder = Shedder::new(
            config.server.max_in_flight,
            config.server.shed_wait,
            config.server.admission,
            Some(admin_token.clone()),
            &monitor,
        )?;
        let cache =
            ApiCache::build(&config.cache, redis.as_ref(), &monitor).map_err(AppError::Cache)?;
        let ratelimits = RateLimits::build(
            &config.ratelimit,
            redis.as_ref(),
            &monitor,
            db.clone(),
            cache.clone(),
        )
        .map_err(AppError::RateLimit)?;
        if let Some(cache) = &cache {
            // Until it follows other instances' invalidations, L1 answers no
            // read; it catches up in the background if Redis is slow to come.
            if !cache.cache().wait_following(Duration::from_secs(2)).await {
                tracing::warn!(
                    "the cache does not follow invalidations yet: L1 is bypassed until it does"
                );
            }
        }
        let timeline = Timeline::start(monitor.clone(), MONITOR_INTERVAL);
        let queues = QueueHandle::connect(&config)?;
        // Each queue's waiting jobs an hour ahead, for the queue panel,
        // whichever processes run them.
        capacity.watch_queues(
            queues.clone(),
            QueueName::ALL
                .iter()
                .map(|&queue| {
                    (
                        queue.as_str().to_owned(),
                        config.queue.policy(queue).backlog,
                    )
                })
                .collect(),
        );
        // Without Redis the queues live in this process, and so do their
        // processors.
        let processors = match (queues.is_memory(), queues.get()) {
            (true, Some(memory)) => {
                let processors =
                    Processors::new(db.clone(), cache.clone(), config.queue.files.clone());
                let running = Running::start(memory, &config.queue, &monitor, &processors)
                    .map_err(AppError::Queue)?;
                tracing::info!("the queue processors run in this process, on the memory backend");
                Some(running)
            }
            _ => None,
        };
        if !queues.is_memory() {
            // Redis's eviction policy decides whether queued jobs survive
            // memory pressure: part of the health report once connected.
            let (queues, monitor) = (queues.clone(), monitor.clone());
            tokio::spawn(async move {
                let queues = queues.connected().await;
                monitor.register_check(seawall_queue::DurabilityCheck::new(queues));
            });
        }
        let promotions = Promotions::new(
            db.clone(),
            redis.as_ref(),
            cache.clone(),
            queues.clone(),
            &config,
            &monitor,
        )?;
        monitor.register_check(promotions.reconciliation_check());
        // The route classes' objectives, read from the monitor's counts.
        let slo = seawall_app::slo::Slo::start(monitor.clone());
        let state = AppState::new(Parts {
            throughput: Throughput::start(queues.clone()),
            scenarios: Scenarios::new(promotions.clone()),
            promotions,
            workload: Workload::new(db, cache, queues, &config),
            redis,
            monitor,
            admin_token,
            timeline,
            capacity,
            slo,
            ratelimits,
            shedder: shedder.clone(),
            shutdown: seawall_perfmon::ShutdownCheck::new(),
        });
        let router = router(&state, &config, shedder);
        let warming = state.workload().cache().is_some().then(|| {
            let keep_warm = state.workload().clone().keep_warm(config.hot_keys_file());
            tokio::spawn(keep_warm).abort_handle()
        });
        Ok(Self {
            state,
            router,
            config,
            seed,
            processors: parking_lot::Mutex::new(processors),
            warming,
        })
    }

    /// The router, for serving or for calling in tests with `tower::ServiceExt`.
    ///
    /// The limits count requests by their client address, which the router
    /// reads from axum's `ConnectInfo<SocketAddr>`: serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` (as
    /// [`serve`](Self::serve) does), or give each request one. With rate
    /// limiting on, a request without one is refused (500), never served
    /// unlimited; the probes answer regardless.
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

    /// Serves on `listener` until `shutdown` completes; then fails `/readyz`
    /// while still serving for `server.shutdown_drain` (a load balancer takes
    /// the instance out meanwhile), stops accepting, lets in-flight requests
    /// finish for up to `server.shutdown_timeout`, and closes the database
    /// and Redis connections.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let state = self.state.clone();
        let drain = self.config.server.shutdown_drain;
        let shutdown = async move {
            shutdown.await;
            state.begin_shutdown();
            if !drain.is_zero() {
                tracing::info!(drain = %humantime::format_duration(drain), "draining: /readyz fails while requests are still served");
                tokio::time::sleep(drain).await;
            }
        };
        let drained = server::serve(listener, self.router.clone(), &self.config.server, shutdown)
            .await
            .map_err(Error::Serve)?;
        // Closing the pool waits for connections in use; past the deadline,
        // requests still holding one must not keep the process alive.
        let close_within = match drained {
            Drained::Fully => self.config.server.shutdown_timeout,
            Drained::DeadlinePassed => Duration::from_secs(1),
        };
        if tokio::time::timeout(close_within, self.close())
            .await
            .is_err()
        {
            tracing::warn!("connections still in use; not waiting for them to close");
        }
        tracing::info!("stopped");
        Ok(())
    }

    async fn close(&self) {
        if let Some(warming) = &self.warming {
            warming.abort();
        }
        if let (Some(cache), Some(file)) =
            (self.state.workload().cache(), self.config.hot_keys_file())
        {
            match cache.save_hot_keys(&file) {
                Ok(keys) => tracing::info!(file = %file.display(), keys, "hot keys kept"),
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "the hot keys cannot be kept");
                }
            }
        }
        let processors = self.processors.lock().take();
        if let Some(processors) = processors {
            for (queue, stats) in processors
                .shutdown(self.config.worker.shutdown_timeout)
                .await
            {
                if stats.requeued > 0 {
                    tracing::warn!(%queue, requeued = stats.requeued, "unfinished jobs were dropped with the memory backend");
                }
            }
        }
        self.state.db().close().await;
        if let Some(redis) = self.state.redis() {
            redis.close().await;
        }
    }
}

/// Puts `router` behind the middleware stack the service's own routes sit
/// behind (request ids, tracing, the perfmon layer recording into `monitor`,
/// CORS, compression, request limits, load shedding, the request timeout and
/// panic recovery), configured by `server`; rate limiting is left out, since
/// it needs the service's limiters. The shedding metrics are
/// registered on `monitor`, so call this once per monitor.
///
/// ```
/// use axum::{Router, routing::get};
///
/// let monitor = seawall_perfmon::Monitor::new();
/// let server = seawall_app::config::ServerConfig::default();
/// let router = Router::new().route("/hello", get(|| async { "hello" }));
/// let router = seawall_api::with_stack(router, &server, &monitor)?;
/// # Ok::<(), seawall_api::Error>(())
/// ```
pub fn with_stack(
    router: Router,
    server: &ServerConfig,
    monitor: &Monitor,
) -> Result<Router, Error> {
    // No admin token here: no call is in the admin class.
    let shedder = Shedder::new(
        server.max_in_flight,
        server.shed_wait,
        server.admission,
        None,
        monitor,
    )?;
    let perfmon = Some(PerfmonLayer::new(monitor.clone()));
    Ok(middleware::apply(
        router,
        server,
        Stack {
            perfmon,
            shedder,
            ratelimits: None,
            trace_from: Vec::new(),
        },
    ))
}

/// The OpenAPI document of every route the service has.
pub fn openapi() -> utoipa::openapi::OpenApi {
    // Not served: the query rules it is built with do not matter.
    let mut document = api_routes(None, None, None, &QueryRules::default()).into_openapi();
    Conventions.modify(&mut document);
    document
}

/// Every route with its OpenAPI entry, behind `rules`; the admin ones
/// behind the token and the workload behind its gate (API keys and rate
/// limits) when given (the document depends on none of them). The query
/// rules sit inside the token and the gate: a request is authenticated
/// before its query string is judged.
fn api_routes(
    guard: Option<AdminGuard>,
    gate: Option<Gate>,
    positions: Option<Positions>,
    rules: &QueryRules,
) -> OpenApiRouter<AppState> {
    let rules = || QueryRulesLayer(rules.clone());
    let mut admin = performance::routes()
        .merge(queue_routes::routes())
        .merge(ratelimit_routes::routes())
        .merge(cache_routes::routes())
        .merge(promotions::admin_routes())
        .merge(keys_routes::routes())
        .route_layer(rules());
    if let Some(guard) = guard {
        admin = admin.route_layer(axum::middleware::from_fn_with_state(
            guard,
            auth::require_admin,
        ));
    }
    // Each workload request is one caller of the database: it reads its
    // own writes, and those of the position it carried.
    let mut workload = workload::routes()
        .merge(promotions::routes())
        .route_layer(rules())
        .route_layer(axum::middleware::from_fn_with_state(
            positions,
            crate::read_after::scope,
        ));
    if let Some(gate) = gate {
        workload = workload.route_layer(axum::middleware::from_fn_with_state(
            gate,
            ratelimit::workload,
        ));
    }
    let open = health::routes()
        .merge(docs::routes())
        .merge(dashboard::routes())
        .route_layer(rules());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(workload)
        .merge(open)
        .merge(admin)
}

fn router(state: &AppState, config: &Config, shedder: Shedder) -> Router {
    let guard = AdminGuard::new(state.admin_token().clone(), state.ratelimits().cloned());
    // Every route accepts the query parameters its operation declares and
    // no other (the fallbacks answer 404 whatever the query).
    let query_rules = QueryRules::from_document(&openapi());
    let gate = Gate::new(
        state.db().clone(),
        state.cache().cloned(),
        state.ratelimits().cloned(),
    );
    // Where the positions of callers that carry none are kept: with
    // replicas and Redis, as long as a replica in rotation may lag.
    let positions = state
        .redis()
        .filter(|_| state.db().replicas().is_some())
        .map(|redis| {
            Positions::new(
                redis.client().clone(),
                (config.database.replica_max_lag * 2).max(Duration::from_secs(1)),
            )
        });
    let (router, mut document) = api_routes(Some(guard), Some(gate), positions, &query_rules)
        .with_state(state.clone())
        .split_for_parts();
    Conventions.modify(&mut document);
    let json = document.to_json().unwrap_or_default();
    let router = router
        .layer(Extension(ApiDocument(Arc::from(json))))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.server.max_body_bytes));
    let perfmon = config
        .perfmon
        .http_layer
        .then(|| PerfmonLayer::new(state.monitor().clone()));
    let ratelimits = state.ratelimits().cloned();
    // Validation has parsed every one of them.
    let trace_from = crate::ratelimit::trusted_proxies(&config.ratelimit).unwrap_or_default();
    middleware::apply(
        router,
        &config.server,
        Stack {
            perfmon,
            shedder,
            ratelimits,
            trace_from,
        },
    )
}

// Neither fallback repeats the path: a secret put in it by mistake (an API
// key where its id belongs) would come back in the answer, and in whatever
// logs or caches keep answers.
async fn not_found() -> Problem {
    Problem::not_found("nothing is served at this path")
}

async fn method_not_allowed(method: Method) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on this path"),
    )
}
