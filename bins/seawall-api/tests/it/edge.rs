//! The shipped edge (`deploy/haproxy.cfg`, run by the testkit's HAProxy with
//! its frontend as it is) in front of the service: what a client says of
//! itself in identity, address and trace headers never reaches an instance,
//! which believes those headers from the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Uri};
use reqwest::{Method, StatusCode};
use seawall_testkit::{Haproxy, wait};

use crate::support::TestServer;

/// Headers a client might send to pass for someone else, or to join a trace.
const SPOOFED: [(&str, &str); 8] = [
    ("x-user-id", "admin"),
    ("x-tenant-id", "demo-premium"),
    ("x-forwarded-for", "203.0.113.9"),
    ("forwarded", "for=203.0.113.9"),
    ("x-real-ip", "203.0.113.9"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("tracestate", "vendor=spoofed"),
    ("baggage", "user=admin"),
];

/// HAProxy with the shipped frontend in front of `server`, once it has
/// taken the server into its rotation.
async fn edge_in_front_of(server: SocketAddr) -> Haproxy {
    tokio::task::spawn_blocking(move || {
        let haproxy = Haproxy::builder()
            .server("api-1", server)
            .start()
            .expect("haproxy starts");
        haproxy
            .wait_all_up(wait::patience())
            .expect("the server joins the rotation");
        haproxy
    })
    .await
    .expect("the blocking start does not panic")
}

/// What a server received: each request's path and headers.
type Received = Arc<Mutex<Vec<(String, HeaderMap)>>>;

/// A server that answers 200 to everything (HAProxy's checks included) and
/// keeps what it received.
async fn recording_server() -> (SocketAddr, Received) {
    let seen: Received = Arc::default();
    let record = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let record = Arc::clone(&record);
        async move {
            record
                .lock()
                .expect("not poisoned")
                .push((uri.path().to_owned(), headers));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_edge_deletes_what_a_client_says_of_itself() {
    let (addr, seen) = recording_server().await;
    let edge = edge_in_front_of(addr).await;
    let client = reqwest::Client::new();
    let mut request = client.get(format!("http://{}/api/content", edge.addr()));
    for (name, value) in SPOOFED {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("the edge answers");
    assert_eq!(response.status(), StatusCode::OK);

    let seen = seen.lock().expect("not poisoned").clone();
    let forwarded = seen
        .iter()
        .find_map(|(path, headers)| (path == "/api/content").then_some(headers))
        .expect("the request reached the server");
    for (name, _) in SPOOFED {
        if name == "x-forwarded-for" {
            continue;
        }
        assert!(
            !forwarded.contains_key(name),
            "{name} went through the edge: {forwarded:?}"
        );
    }
    // The client's address, as the edge saw the connection, and nothing
    // the client wrote.
    let addresses: Vec<&str> = forwarded
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().expect("ASCII"))
        .collect();
    assert_eq!(addresses, ["127.0.0.1"], "{forwarded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_shipped_edge_a_client_cannot_pick_its_identity() {
    // The instance trusts the edge's address, as the shipped deployments
    // trust theirs.
    let server = TestServer::start_with(|config| {
        config.ratelimit.api = "5/1m".parse().expect("profile");
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let edge = edge_in_front_of(server.addr).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..8 {
        // A fresh user on every request, and another tenant's id.
        let response = client
            .request(Method::GET, format!("http://{}/api/content", edge.addr()))
            .header("x-user-id", format!("u-{i}"))
            .header("x-tenant-id", "demo-premium")
            .send()
            .await
            .expect("the edge answers");
        statuses.push(response.status().as_u16());
    }
    // Counted as one client, by its address: the API limit refuses from the
    // sixth on.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
}
