use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use seawall_perfmon::{HTTP_METRIC, Monitor, PerfmonLayer};
use tower::ServiceExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn app(monitor: &Monitor) -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(650)).await;
                "done"
            }),
        )
        .layer(PerfmonLayer::new(monitor.clone()))
}

async fn send(app: &Router, uri: &str) -> Result<StatusCode, Box<dyn std::error::Error>> {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty())?)
        .await?;
    Ok(response.status())
}

#[tokio::test]
async fn the_layer_records_route_templates_statuses_and_slow_calls() -> TestResult {
    let monitor = Monitor::builder()
        .slow_api_threshold(Duration::from_millis(500))
        .build()?;
    let app = app(&monitor);
    for id in 0..5 {
        assert_eq!(
            send(&app, &format!("/users/{id}?token=secret{id}")).await?,
            StatusCode::OK
        );
    }
    assert_eq!(
        send(&app, "/fail").await?,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(send(&app, "/slow").await?, StatusCode::OK);
    assert_eq!(
        send(&app, "/no/such/path/123").await?,
        StatusCode::NOT_FOUND
    );

    let snapshot = monitor.snapshot();
    let Some(http) = snapshot.histograms.iter().find(|h| h.name == HTTP_METRIC) else {
        panic!("no http metric")
    };
    let routes: Vec<(&str, &str, u64)> = http
        .series
        .iter()
        .map(|s| {
            (
                s.labels["route"].as_str(),
                s.labels["status_class"].as_str(),
                s.lifetime.count,
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/fail", "5xx", 1),
            ("/slow", "2xx", 1),
            ("/users/{id}", "2xx", 5),
            ("unmatched", "4xx", 1)
        ]
    );

    let window = monitor.http_window(Duration::from_secs(60));
    assert_eq!(window.stats.latency.count, 8);
    assert_eq!(window.errors, 1);
    let slow = monitor.slow_apis(10);
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].text, "GET /slow -> 200");
    assert!(slow[0].duration >= Duration::from_millis(650));

    let text = monitor.prometheus();
    assert!(!text.contains("/users/3"), "a raw path became a label");
    assert!(
        !text.contains("secret"),
        "a query string leaked into metrics"
    );
    Ok(())
}

#[tokio::test]
async fn a_custom_route_fn_labels_requests_without_axum_routing() -> TestResult {
    let monitor = Monitor::new();
    let service = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(axum::response::Response::new(Body::empty()))
    });
    let layer = PerfmonLayer::new(monitor.clone())
        .route_fn(|_, uri| uri.path().starts_with("/api/").then(|| "/api/*".to_owned()));
    let service = tower::ServiceBuilder::new().layer(layer).service(service);
    service
        .clone()
        .oneshot(Request::get("/api/a").body(Body::empty())?)
        .await?;
    service
        .oneshot(Request::post("/other").body(Body::empty())?)
        .await?;
    let text = monitor.prometheus();
    assert!(
        text.contains("method=\"GET\",route=\"/api/*\",status_class=\"2xx\""),
        "{text}"
    );
    assert!(
        text.contains("method=\"POST\",route=\"unmatched\",status_class=\"2xx\""),
        "{text}"
    );
    Ok(())
}
