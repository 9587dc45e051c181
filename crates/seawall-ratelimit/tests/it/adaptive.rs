//! The adaptive layer in front of an axum router whose handlers wait until
//! the test lets them go: what is admitted and what is shed follows from
//! the requests held in flight, not from timing.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use http_body_util::BodyExt;
use seawall_ratelimit::{AdaptiveLayer, AdaptiveLimiter, Admission, Aimd, Gradient, Shed};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A limiter fixed at `limit` (its bounds allow nothing else).
fn fixed(limit: u64) -> AdaptiveLimiter {
    AdaptiveLimiter::builder(Aimd::new())
        .bounds(limit, limit)
        .initial(limit)
        .build()
        .expect("valid")
}

/// `/high` uses the whole limit, `/low` half of it, `/livez` none; `/high`
/// and `/low` answer once `gate` gives them a permit; `/busy` answers 503
/// marked as the service's own refusal ([`Shed`]), `/down` a plain 503, as
/// a route whose dependency is down does.
fn app(limiter: &AdaptiveLimiter, gate: &Arc<Semaphore>) -> Router {
    let held = |gate: Arc<Semaphore>| {
        move || async move {
            gate.acquire().await.expect("open").forget();
            "done"
        }
    };
    Router::new()
        .route("/high", get(held(Arc::clone(gate))))
        .route("/low", get(held(Arc::clone(gate))))
        .route("/livez", get(|| async { "alive" }))
        .route(
            "/busy",
            get(|| async {
                let mut response = axum::response::IntoResponse::into_response((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                ));
                response.extensions_mut().insert(Shed);
                response
            }),
        )
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "a dependency is down") }),
        )
        .layer(
            AdaptiveLayer::new(limiter.clone()).classify(|request| match request.uri.path() {
                "/livez" => Admission::Exempt,
                "/low" => Admission::Share(0.5),
                _ => Admission::Share(1.0),
            }),
        )
}

async fn get_status(app: &Router, path: &str) -> (StatusCode, Option<String>) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let status = response.status();
    let _ = response.into_body().collect().await;
    (status, retry_after)
}

/// Starts a request to `path` that stays in flight until the gate lets it
/// go, and waits until the limiter counts it.
async fn hold(
    app: &Router,
    limiter: &AdaptiveLimiter,
    path: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, Option<String>)> {
    let before = limiter.in_flight();
    let app = app.clone();
    let task = tokio::spawn(async move { get_status(&app, path).await });
    seawall_testkit::wait::until_async(format!("{path} in flight"), async || {
        limiter.in_flight() > before
    })
    .await;
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_class_is_shed_before_a_higher_one_and_a_probe_never() {
    let limiter = fixed(4);
    let gate = Arc::new(Semaphore::new(0));
    let app = app(&limiter, &gate);

    // Two low requests fill the low class's half.
    let mut held = vec![
        hold(&app, &limiter, "/low").await,
        hold(&app, &limiter, "/low").await,
    ];
    assert_eq!(
        get_status(&app, "/low").await,
        (StatusCode::SERVICE_UNAVAILABLE, Some("1".to_owned())),
        "the low class is shed at its share"
    );
    // High requests still fit, up to the whole limit.
    held.push(hold(&app, &limiter, "/high").await);
    held.push(hold(&app, &limiter, "/high").await);
    assert_eq!(limiter.in_flight(), 4);
    assert_eq!(
        get_status(&app, "/high").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the high class is shed at the whole limit"
    );
    // The probe is never limited nor counted.
    for _ in 0..10 {
        assert_eq!(get_status(&app, "/livez").await.0, StatusCode::OK);
    }
    assert_eq!(limiter.in_flight(), 4);
    assert_eq!(limiter.rejected(), 2);

    gate.add_permits(held.len());
    for task in held {
        assert_eq!(task.await.expect("joins").0, StatusCode::OK);
    }
    assert_eq!(limiter.in_flight(), 0);
}

/// A loss-based limit at 50 of 1 to 100 that sees every answer as a window
/// of its own, so each answer could move it.
fn at_fifty() -> AdaptiveLimiter {
    AdaptiveLimiter::builder(Aimd::new())
        .bounds(1, 100)
        .initial(50)
        .window(std::time::Duration::ZERO, 1)
        .build()
        .expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_answers_it_is_overloaded_brings_the_limit_down() {
    let limiter = at_fifty();
    let app = app(&limiter, &Arc::new(Semaphore::new(0)));
    for _ in 0..5 {
        assert_eq!(
            get_status(&app, "/busy").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert!(limiter.limit() < 50, "{}", limiter.limit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_fails_fast_leaves_the_limit_alone() {
    let limiter = at_fifty();
    let app = app(&limiter, &Arc::new(Semaphore::new(0)));
    for _ in 0..20 {
        assert_eq!(
            get_status(&app, "/down").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(limiter.limit(), 50);
}

/// The service the mixed load below runs against: one request in ten
/// answers 503 in about a millisecond (its dependency is down), the rest
/// 200 after about two.
fn mixed(limiter: &AdaptiveLimiter) -> Router {
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Router::new()
        .route(
            "/mixed",
            get(move || {
                let served = Arc::clone(&served);
                async move {
                    let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n.is_multiple_of(10) {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the queues are not available",
                        )
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .layer(AdaptiveLayer::new(limiter.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_failures_of_a_dependency_keep_the_limit_near_its_ceiling() {
    // The service's own settings: Gradient2 between 4 and 512, starting at
    // the ceiling, windows of 100 ms. 50 clients for 5 s, one answer in ten
    // a fast 503: counted as drops, each window's would take a tenth off
    // the limit, to its floor within the run.
    let limiter = AdaptiveLimiter::builder(Gradient::new())
        .bounds(4, 512)
        .initial(512)
        .build()
        .expect("valid");
    let app = mixed(&limiter);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let (mut ok, mut unavailable) = (0_u64, 0_u64);
                while tokio::time::Instant::now() < until {
                    match get_status(&app, "/mixed").await.0 {
                        StatusCode::OK => ok += 1,
                        StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
                        other => panic!("unexpected {other}"),
                    }
                }
                (ok, unavailable)
            })
        })
        .collect();
    let (mut ok, mut unavailable) = (0, 0);
    for client in clients {
        let (o, u) = client.await.expect("client");
        ok += o;
        unavailable += u;
    }
    assert!(
        unavailable > 0 && ok > unavailable,
        "{ok} ok, {unavailable} unavailable"
    );
    assert!(
        limiter.limit() >= 512 * 8 / 10,
        "the limit fell to {} of 512 ({ok} ok, {unavailable} unavailable)",
        limiter.limit()
    );
    assert_eq!(limiter.rejected(), 0);
}
