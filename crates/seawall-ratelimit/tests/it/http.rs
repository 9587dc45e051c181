//! The tower layer in front of an axum router, called in-process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::routing::get;
use http_body_util::BodyExt;
use seawall_ratelimit::{
    ClientIp, Clock, HeaderKey, KeyExtractor, Limit, Limiter, ManualClock, MemoryStore, PeerAddr,
    RateLimitLayer,
};
use tower::ServiceExt;

/// A memory store on a clock that moves only when told: what these tests
/// read is exact to the millisecond, which a real clock would not keep
/// still between two requests on a loaded machine.
fn still_store() -> (ManualClock, MemoryStore) {
    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .clock(Clock::Manual(clock.clone()))
        .build();
    (clock, store)
}

fn app(limiter: Limiter, key: impl KeyExtractor) -> Router {
    routes(RateLimitLayer::new(limiter, key))
}

fn routes<K: KeyExtractor>(layer: RateLimitLayer<K>) -> Router {
    Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .layer(layer)
}

type Answer = (StatusCode, axum::http::HeaderMap, String);

async fn send(app: &Router, peer: &str, headers: &[(&str, &str)]) -> Answer {
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_bytes()))
        .collect();
    send_bytes(app, Some(peer), &headers).await
}

/// A request from `peer` (none: the server recorded no peer address) with
/// header values of any bytes a client may send.
async fn send_bytes(app: &Router, peer: Option<&str>, headers: &[(&str, &[u8])]) -> Answer {
    let mut request = Request::get("/items/7");
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).expect("field value"));
    }
    let mut request = request.body(Body::empty()).expect("request");
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().expect("peer")));
    }
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
    let (clock, store) = still_store();
    let limiter = Limiter::builder("slow")
        .limit(Limit::gcra(1, Duration::from_millis(1500), 1).expect("limit"))
        .store(store)
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
        clock.advance(Duration::from_secs(retry));
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

fn fixed(name: &str, limit: u64) -> Limiter {
    Limiter::builder(name)
        .limit(Limit::fixed_window(limit, Duration::from_secs(3600)).expect("limit"))
        .build()
        .expect("limiter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_x_forwarded_for_proxy_a_client_cannot_choose_its_key() {
    let trusted = ["10.0.0.0/8".parse().expect("net")];
    let app = app(fixed("xff", 1), ClientIp::trusting(trusted));
    let proxy = Some("10.0.0.5:9");
    // The proxy appends the client's address to X-Forwarded-For; whatever
    // the client sends besides (its own Forwarded, bytes that are not
    // ASCII) leaves that key alone.
    let tries: [&[(&str, &[u8])]; 3] = [
        &[("x-forwarded-for", b"198.51.100.20")],
        &[
            ("forwarded", b"for=192.0.2.1"),
            ("x-forwarded-for", b"198.51.100.20"),
        ],
        &[("x-forwarded-for", b"\xe9vil, 198.51.100.20")],
    ];
    let mut statuses = Vec::new();
    for headers in tries {
        statuses.push(send_bytes(&app, proxy, headers).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Junk from one client is not the proxy's key: a neighbour behind the
    // same proxy still gets through.
    let neighbour: &[(&str, &[u8])] = &[("x-forwarded-for", b"198.51.100.21")];
    assert_eq!(send_bytes(&app, proxy, neighbour).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_client_is_one_key_for_its_whole_64() {
    let app = app(fixed("v6", 2), ClientIp::new());
    let mut statuses = Vec::new();
    for peer in [
        "[2001:db8:7:1::1]:9",
        "[2001:db8:7:1::2]:9",
        "[2001:db8:7:1:ff::3]:9",
    ] {
        statuses.push(send(&app, peer, &[]).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        send(&app, "[2001:db8:7:2::1]:9", &[]).await.0,
        StatusCode::OK,
        "the next /64 is another subscriber"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaky_queue_holds_requests_up_to_max_wait() {
    // One request every 200 ms, at most 5 waiting; the layer holds one for
    // at most 300 ms. The store's clock stands still, so the three requests
    // are 0, 200 and 400 ms from their turns however far apart they come.
    let (_clock, store) = still_store();
    let limiter = Limiter::builder("queue")
        .limit(Limit::leaky_queue(1, Duration::from_millis(200), 5).expect("limit"))
        .store(store)
        .build()
        .expect("limiter");
    let app =
        routes(RateLimitLayer::new(limiter, ClientIp::new()).max_wait(Duration::from_millis(300)));
    let started = Instant::now();
    let timed = |app: Router| async move {
        let answer = send(&app, "192.0.2.50:1", &[]).await;
        (answer, started.elapsed())
    };
    let (first, second, third) =
        tokio::join!(timed(app.clone()), timed(app.clone()), timed(app.clone()));
    let mut answers = [first, second, third];
    answers.sort_by_key(|((status, ..), elapsed)| (*status, *elapsed));
    let [(served_now, _), (served_later, waited), (refused, _)] = &answers;
    assert_eq!(served_now.0, StatusCode::OK);
    assert_eq!(served_later.0, StatusCode::OK);
    assert!(
        *waited >= Duration::from_millis(190),
        "the second request waits its turn, not {waited:?}"
    );
    assert_eq!(
        refused.0,
        StatusCode::TOO_MANY_REQUESTS,
        "400 ms is past 300 ms"
    );
    let retry: u64 = refused.1[header::RETRY_AFTER]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert_eq!(retry, 1, "its turn is 400 ms away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_peer_address_is_refused_not_let_through() {
    let direct = app(fixed("no-peer", 1), ClientIp::new());
    for _ in 0..2 {
        let (status, _, body) =
            send_bytes(&direct, None, &[("x-forwarded-for", b"192.0.2.1")]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("client's address"), "{body}");
    }
    // A server on a unix socket behind a local proxy names the peer.
    let trusted = ["127.0.0.1".parse().expect("net")];
    let local = ClientIp::trusting(trusted).unknown_peer("127.0.0.1".parse().expect("ip"));
    let unix = app(fixed("unix", 1), local);
    let from = |client: &'static [u8]| [("x-forwarded-for", client)];
    assert_eq!(
        send_bytes(&unix, None, &from(b"192.0.2.1")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send_bytes(&unix, None, &from(b"192.0.2.1")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send_bytes(&unix, None, &from(b"192.0.2.2")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_key_hears_the_same_wait_from_ratelimit_and_retry_after() {
    let limiter = Limiter::builder("penalty")
        .limit(Limit::fixed_window(1, Duration::from_secs(10)).expect("limit"))
        .penalty(Duration::from_secs(300))
        .build()
        .expect("limiter");
    let app = app(limiter, ClientIp::new());
    assert_eq!(send(&app, "192.0.2.60:1", &[]).await.0, StatusCode::OK);
    for _ in 0..2 {
        let (status, headers, _) = send(&app, "192.0.2.60:1", &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let retry = headers[header::RETRY_AFTER].to_str().expect("ASCII");
        assert_eq!(retry, "300");
        assert_eq!(headers["ratelimit"], "\"penalty\";r=0;t=300");
    }
}

/// A full memory store that may not forget a key, under a limiter whose
/// failure policy is to report it, answers 503 with `Retry-After`: it will
/// decide once keys go idle, as a stalled Redis would once it answers.
#[tokio::test]
async fn a_full_store_answers_503_with_retry_after() {
    let store = seawall_ratelimit::MemoryStore::builder()
        .max_keys(1)
        .shards(1)
        .build();
    let limiter = Limiter::builder("full")
        .limit(Limit::fixed_window(10, Duration::from_secs(60)).expect("limit"))
        .store(store)
        .on_store_failure(seawall_ratelimit::FailurePolicy::Error)
        .build()
        .expect("limiter");
    let app = app(limiter, ClientIp::new());
    let (status, _, _) = send(&app, "192.0.2.1:5000", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = send(&app, "192.0.2.2:5000", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
}
