//! The tower layer in front of an axum router, called in-process.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use http_body_util::BodyExt;
use seawall_ratelimit::{ClientIp, HeaderKey, Limit, Limiter, PeerAddr, RateLimitLayer};
use tower::ServiceExt;

fn app(limiter: Limiter, key: impl seawall_ratelimit::KeyExtractor) -> Router {
    Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .layer(RateLimitLayer::new(limiter, key))
}

async fn send(
    app: &Router,
    peer: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::get("/items/7");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).expect("request");
    request
        .extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().expect("peer")));
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_on_every_decided_response_and_a_problem_when_rejected() {
    let limiter = Limiter::builder("api")
        .limit(Limit::fixed_window(2, Duration::from_secs(3600)).expect("limit"))
        .build()
        .expect("limiter");
    let app = app(limiter, ClientIp::new());
    let (status, headers, _) = send(&app, "203.0.113.9:1000", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["ratelimit-policy"], "\"api\";q=2;w=3600");
    let state = headers["ratelimit"].to_str().expect("ASCII");
    assert!(state.starts_with("\"api\";r=1;t="), "{state}");
    let t: u64 = state
        .rsplit("t=")
        .next()
        .and_then(|t| t.parse().ok())
        .expect("t");
    assert!((1..=3600).contains(&t), "{state}");

    send(&app, "203.0.113.9:1000", &[]).await;
    let (status, headers, body) = send(&app, "203.0.113.9:1000", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry));
    assert!(
        headers["ratelimit"]
            .to_str()
            .expect("ASCII")
            .contains(";r=0;")
    );
    let problem: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["title"], "Too Many Requests");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("retry in"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_never_sends_a_client_back_too_early() {
    let limiter = Limiter::builder("slow")
        .limit(Limit::gcra(1, Duration::from_millis(1500), 1).expect("limit"))
        .build()
        .expect("limiter");
    let app = app(limiter, ClientIp::new());
    for _ in 0..2 {
        assert_eq!(send(&app, "198.51.100.4:1", &[]).await.0, StatusCode::OK);
        let (status, headers, _) = send(&app, "198.51.100.4:1", &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = headers[header::RETRY_AFTER]
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("seconds");
        assert_eq!(retry, 2, "1.5 s rounds up");
        tokio::time::sleep(Duration::from_secs(retry)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let limiter = Limiter::builder("ddos")
        .limit(Limit::fixed_window(2, Duration::from_secs(3600)).expect("limit"))
        .build()
        .expect("limiter");
    let trusted = ["10.0.0.0/8".parse().expect("net")];
    let app = app(limiter, ClientIp::trusting(trusted));
    // One attacker, three made-up addresses: one key.
    let statuses: Vec<StatusCode> =
        statuses_for(&app, "203.0.113.66:9", &["1.1.1.1", "2.2.2.2", "3.3.3.3"]).await;
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Behind the trusted proxy, each real client has its own key.
    let statuses = statuses_for(&app, "10.0.0.5:9", &["1.1.1.1", "2.2.2.2", "3.3.3.3"]).await;
    assert_eq!(statuses, [StatusCode::OK; 3]);
}

async fn statuses_for(app: &Router, peer: &str, forwarded: &[&str]) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for client in forwarded {
        statuses.push(send(app, peer, &[("x-forwarded-for", client)]).await.0);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_key_are_not_limited() {
    let limiter = Limiter::builder("keys")
        .limit(Limit::fixed_window(1, Duration::from_secs(3600)).expect("limit"))
        .build()
        .expect("limiter");
    let app = app(
        limiter,
        HeaderKey::new(header::HeaderName::from_static("x-api-key")),
    );
    for _ in 0..3 {
        let (status, headers, _) = send(&app, "192.0.2.1:1", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("ratelimit").is_none());
    }
    assert_eq!(
        send(&app, "192.0.2.1:1", &[("x-api-key", "k1")]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "192.0.2.1:1", &[("x-api-key", "k1")]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}
