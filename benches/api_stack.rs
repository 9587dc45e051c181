//! The whole seawall-api middleware stack (`seawall_api::with_stack` with the
//! shipped `ServerConfig::default()`) against the same handlers without it,
//! in one run:
//!
//! - `api_stack/http_*`: throughput over loopback HTTP/1.1, both variants
//!   served by `axum::serve` on a `TcpListener`, so only the layers differ;
//!   the client keeps [`CONNECTIONS`] connections alive and sends requests on
//!   all of them at once. The stack / bare throughput ratio is the figure the
//!   ≤ 10 % target applies to.
//! - `api_stack/in_process_*`: the same routers called through
//!   `tower::ServiceExt::oneshot` on one thread, which gives the stack's
//!   absolute cost per request without sockets.
//!
//! - `api_stack/gate_content`: the whole service (`seawall_api::App` on
//!   SQLite, its embedded defaults with a small demo dataset) in process,
//!   three times: with the abuse watch off, observing (the default) and
//!   acting. A request for a user's points balance goes through every
//!   layer and the workload gate with its limiters in memory, from one of
//!   1,024 addresses in turn (the limits raised so that none is refused).
//!   The three services take requests in turn and each variant times only
//!   its own, so that the machine's drift falls on all three alike: what
//!   detection costs a request, the figure the ≤ 5 % target applies to.
//!
//! Two handlers: `trivial` answers a static `{"status":"ok"}`; `realistic`
//! parses a query, builds 20 structs and serialises them (about 2.2 KB of JSON).
//!
//! The requests carry no `x-request-id`, so the stack generates one, and no
//! `Accept-Encoding`, so compression passes the body through. Logging is the
//! service's own default (`info`, text) written to a sink, so the request span
//! is created and recorded as it is in production. Rate limiting is not part
//! of `with_stack`, so it is not measured here.
//!
//! Run: `cargo bench -p seawall-benches --bench api_stack`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{Request, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

/// Keep-alive connections the HTTP client sends on concurrently. With 8 the
/// bare server sat partly idle on two cores, waiting for round trips, so the
/// comparison measured latency more than capacity.
const CONNECTIONS: usize = 32;
/// Requests per connection in one iteration: an iteration is
/// `CONNECTIONS * REQUESTS_PER_CONNECTION` requests.
const REQUESTS_PER_CONNECTION: usize = 4;
/// Distinct query strings the realistic handler is asked for, in turn.
const USERS: u64 = 16;

const TRIVIAL_PATH: &str = "/status";
const REALISTIC_PATH: &str = "/reviews";

async fn trivial() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

#[derive(Deserialize)]
struct ReviewQuery {
    user_id: u64,
}

/// One due review, shaped like the reference workload's; 20 of them make
/// about 2.2 KB of JSON.
#[derive(Serialize)]
struct Review {
    content_id: u64,
    title: String,
    category: &'static str,
    due: String,
    interval_days: u32,
    ease: f64,
}

const CATEGORIES: [&str; 5] = ["math", "science", "history", "language", "music"];

async fn realistic(Query(query): Query<ReviewQuery>) -> Json<Vec<Review>> {
    let reviews = (0..20_u64)
        .map(|i| {
            let content_id = (query.user_id * 37 + i * 101) % 5000 + 1;
            let days = u32::try_from(content_id % 60).unwrap_or(0);
            Review {
                content_id,
                title: format!("Card {content_id}"),
                category: CATEGORIES[usize::try_from(content_id % 5).unwrap_or(0)],
                due: format!("2026-12-{:02}", 1 + days % 28),
                interval_days: days,
                ease: (130 + content_id % 170) as f64 / 100.0,
            }
        })
        .collect();
    Json(reviews)
}

fn bare_router() -> Router {
    Router::new()
        .route(TRIVIAL_PATH, get(trivial))
        .route(REALISTIC_PATH, get(realistic))
}

fn stack_router() -> Router {
    // A monitor per router: `with_stack` registers its metrics once per monitor.
    let monitor = seawall_perfmon::Monitor::new();
    let server = seawall_app::config::ServerConfig::default();
    seawall_api::with_stack(bare_router(), &server, &monitor).unwrap_or_else(|e| panic!("{e}"))
}

/// The request targets a benchmark cycles through.
fn targets(path: &str) -> Vec<Uri> {
    if path == TRIVIAL_PATH {
        return vec![Uri::from_static(TRIVIAL_PATH)];
    }
    (1..=USERS)
        .map(|user| {
            format!("{path}?user_id={user}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// Logs as the service does by default (its own subscriber, `info`, text),
/// into a sink.
fn install_service_logging() {
    let log = seawall_app::config::LogConfig::default();
    let installed = tracing::subscriber::set_global_default(seawall_app::log_subscriber(
        &log,
        std::io::sink,
        false,
    ));
    drop(installed);
}

/// A server on its own multi-threaded runtime (one worker per core, as the
/// service runs); dropping it stops the server.
struct Server {
    addr: SocketAddr,
    _runtime: Runtime,
}

impl Server {
    fn start(router: Router) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-server")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = runtime
            .block_on(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        runtime.spawn(async move { axum::serve(listener, router).await });
        Self {
            addr,
            _runtime: runtime,
        }
    }
}

struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

async fn connect(addr: SocketAddr) -> Connection {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stream.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let driver = tokio::spawn(async move {
        // Ends with an error only when the server goes away, which the next
        // request then reports.
        let _ = connection.await;
    });
    Connection { sender, driver }
}

/// Sends one GET and reads the whole body; returns whether the response
/// carries an `x-request-id`, and the body.
async fn get_once(sender: &mut SendRequest<Empty<Bytes>>, target: &Uri) -> (bool, Bytes) {
    sender.ready().await.unwrap_or_else(|e| panic!("{e}"));
    let request = Request::get(target.clone())
        .header(header::HOST, "127.0.0.1")
        .body(Empty::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {target}");
    let has_request_id = response.headers().contains_key("x-request-id");
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    (has_request_id, body)
}

/// Checks that the variant answers as intended before it is measured: the
/// stack adds a request id, the bare router does not, and bodies are JSON of
/// the expected size (not compressed).
fn check(client: &Runtime, addr: SocketAddr, target: &Uri, stacked: bool) {
    client.block_on(async {
        let mut connection = connect(addr).await;
        let (has_request_id, body) = get_once(&mut connection.sender, target).await;
        assert_eq!(has_request_id, stacked, "x-request-id on GET {target}");
        if target.path() == TRIVIAL_PATH {
            assert_eq!(&body[..], br#"{"status":"ok"}"#);
        } else {
            assert!(
                body.starts_with(b"[{") && (1500..3000).contains(&body.len()),
                "{body:?}"
            );
        }
        drop(connection.sender);
        let _ = connection.driver.await;
    });
}

/// `iters` iterations of `CONNECTIONS * REQUESTS_PER_CONNECTION` requests over
/// fresh keep-alive connections; connecting is not timed.
fn http_iterations(client: &Runtime, addr: SocketAddr, targets: &[Uri], iters: u64) -> Duration {
    client.block_on(async {
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            connections.push(connect(addr).await);
        }
        let per_connection = usize::try_from(iters).unwrap_or(usize::MAX) * REQUESTS_PER_CONNECTION;
        // On this one-threaded runtime the tasks start running only once
        // this future waits for them, after the clock has been read.
        let (senders, drivers): (Vec<_>, Vec<_>) = connections
            .into_iter()
            .map(|connection| (connection.sender, connection.driver))
            .unzip();
        let tasks: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(n, mut sender)| {
                let targets = targets.to_vec();
                tokio::spawn(async move {
                    for i in 0..per_connection {
                        let target = &targets[(i + n) % targets.len()];
                        std::hint::black_box(get_once(&mut sender, target).await);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for task in tasks {
            task.await.unwrap_or_else(|e| panic!("{e}"));
        }
        let elapsed = start.elapsed();
        // The senders are gone with their tasks, so the connections close.
        for driver in drivers {
            let _ = driver.await;
        }
        elapsed
    })
}

/// A runtime on the calling thread.
fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `request` through `router` in process, its body read to the end; its
/// status.
async fn answer(router: &Router, request: Request<Body>) -> StatusCode {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    std::hint::black_box(body);
    status
}

fn http(c: &mut Criterion) {
    install_service_logging();
    // The client has one thread, like `wrk -t1`; the servers' runtimes have
    // one worker per core. Client and server share the cores.
    let client = current_thread();
    let bare = Server::start(bare_router());
    let stack = Server::start(stack_router());
    for (handler, path) in [("trivial", TRIVIAL_PATH), ("realistic", REALISTIC_PATH)] {
        let targets = targets(path);
        check(&client, bare.addr, &targets[0], false);
        check(&client, stack.addr, &targets[0], true);
        let mut group = c.benchmark_group(format!("api_stack/http_{handler}"));
        group.throughput(Throughput::Elements(
            (CONNECTIONS * REQUESTS_PER_CONNECTION) as u64,
        ));
        // An iteration takes milliseconds; 50 samples fit the measurement time.
        group.sample_size(50);
        for (variant, server) in [("bare", &bare), ("stack", &stack)] {
            group.bench_function(variant, |b| {
                b.iter_custom(|iters| http_iterations(&client, server.addr, &targets, iters));
            });
        }
        group.finish();
    }
}

fn in_process(c: &mut Criterion) {
    install_service_logging();
    let runtime = current_thread();
    // `with_state` turns every handler into its finished route once, as
    // `axum::serve` does for each connection; a router called without it
    // would build each route, layers included, again for every request.
    let routers = [
        ("bare", bare_router().with_state(())),
        ("stack", stack_router().with_state(())),
    ];
    for (handler, path) in [("trivial", TRIVIAL_PATH), ("realistic", REALISTIC_PATH)] {
        let targets = targets(path);
        let mut group = c.benchmark_group(format!("api_stack/in_process_{handler}"));
        group.throughput(Throughput::Elements(1));
        for (variant, router) in &routers {
            group.bench_function(*variant, |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for i in 0..iters {
                            let target = &targets[usize::try_from(i).unwrap_or(0) % targets.len()];
                            let request = Request::get(target.clone())
                                .body(Body::empty())
                                .unwrap_or_else(|e| panic!("{e}"));
                            answer(router, request).await;
                        }
                        start.elapsed()
                    })
                });
            });
        }
        group.finish();
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service on its embedded defaults, on a fresh SQLite file in `dir`,
/// with the abuse watch `abuse` and limits no request of the bench reaches.
async fn service(dir: &std::path::Path, abuse: seawall_app::config::AbuseMode) -> seawall_api::App {
    use seawall_app::config::Recurring;
    let mut config = seawall_app::Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.join("seawall.db").display());
    config.queue.files = dir.join("files");
    config.admin.token = Some("api-stack-bench-admin-token".to_owned());
    config.demo.users = 20;
    config.demo.contents = 60;
    config.demo.schedules_per_user = 30;
    config.demo.history_per_user = 120;
    config.queue.nightly_backup = Recurring::Off;
    config.queue.hourly_analytics = Recurring::Off;
    config.queue.daily_report = Recurring::Off;
    for profile in [&mut config.ratelimit.ddos, &mut config.ratelimit.api] {
        profile.limit = 1_000_000;
        profile.period = Duration::from_secs(1);
    }
    // The limits stay as configured whatever the machine's load.
    config.ratelimit.health_degraded = 1.0;
    config.ratelimit.health_unhealthy = 1.0;
    config.ratelimit.abuse = abuse;
    seawall_api::App::build(config)
        .await
        .unwrap_or_else(|e| panic!("the service builds: {e}"))
}

/// One of 1,024 client addresses, in the benchmarking range.
fn client(i: u64) -> SocketAddr {
    let [.., c, d] = (i % 1024).to_be_bytes();
    SocketAddr::from(([198, 18, c, d], 40_000))
}

async fn gate_request(router: &Router, i: u64) -> StatusCode {
    let mut request = Request::get(GATE_PATH)
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(client(i)));
    answer(router, request).await
}

/// A user's points balance, as the attack traces' readers ask for it.
const GATE_PATH: &str = "/api/points/balance?user_id=1";

/// How long each service is served before any is measured.
const GATE_SETTLE: Duration = Duration::from_secs(10);

fn gate(c: &mut Criterion) {
    use seawall_app::config::AbuseMode;
    install_service_logging();
    let runtime = current_thread();
    let mut dirs = Vec::new();
    let mut services = Vec::new();
    let variants = [
        ("abuse_off", AbuseMode::Off),
        ("abuse_observe", AbuseMode::Observe),
        ("abuse_act", AbuseMode::Act),
    ];
    for (variant, mode) in variants {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "seawall-api-stack-{}-{variant}",
            std::process::id()
        )));
        std::fs::create_dir_all(&dir.0).unwrap_or_else(|e| panic!("{e}"));
        let app = runtime.block_on(service(&dir.0, mode));
        let router = app.router().with_state(());
        // Every address once: each is counted from then on.
        for i in 0..1024 {
            let status = runtime.block_on(gate_request(&router, i));
            assert_eq!(
                status,
                StatusCode::OK,
                "{variant}: {GATE_PATH} answered {status}"
            );
        }
        dirs.push(dir);
        services.push((app, router));
    }
    let routers: Vec<&Router> = services.iter().map(|(_, router)| router).collect();
    // Then served for a while, so that what a fresh service does once (its
    // first health reads, its first judged interval) is behind them.
    runtime.block_on(async {
        let settled = Instant::now() + GATE_SETTLE;
        let mut i = 0;
        while Instant::now() < settled {
            for router in &routers {
                gate_request(router, i).await;
            }
            i += 1;
        }
    });
    // The three services take requests in turn (each round in another
    // order) and each variant counts only its own requests' time: what the
    // machine and the services' background work (one runtime drives all
    // three) do meanwhile falls on every variant alike.
    let mut group = c.benchmark_group("api_stack/gate_content");
    group.throughput(Throughput::Elements(1));
    for (measured, (variant, _)) in variants.iter().enumerate() {
        group.bench_function(*variant, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut own = Duration::ZERO;
                    for i in 0..iters {
                        let first = usize::try_from(i % 3).unwrap_or(0);
                        for turn in 0..routers.len() {
                            let which = (first + turn) % routers.len();
                            let start = Instant::now();
                            let status = gate_request(routers[which], i).await;
                            if which == measured {
                                own += start.elapsed();
                            }
                            debug_assert_eq!(status, StatusCode::OK);
                        }
                    }
                    own
                })
            });
        });
    }
    group.finish();
    // The services go before their directories.
    drop(routers);
    drop(services);
    drop(dirs);
}

criterion_group!(benches, http, in_process, gate);
criterion_main!(benches);
