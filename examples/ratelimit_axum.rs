//! An axum service protected by seawall-ratelimit: a GCRA limit per client
//! address on every route (with a penalty block), and a quota of two sliding
//! windows per API key on `/api/`, with `RateLimit` headers on every answer
//! and 429 problems when a limit is used up. State is in memory, or in Redis
//! (shared by every instance) when `REDIS_URL` is set.
//!
//! Run: `cargo run -p seawall-examples --example ratelimit_axum`, then
//! `for i in $(seq 12); do curl -si -H 'x-api-key: k1' localhost:8080/api/hello | head -1; done`.
//! `SEAWALL_LISTEN` changes the address (default `127.0.0.1:8080`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderName;
use axum::routing::get;
use seawall_perfmon::Monitor;
use seawall_ratelimit::{
    ClientIp, FailurePolicy, HeaderKey, Limit, Limiter, MemoryStore, Quota, RateLimitLayer,
    RedisStore, Store,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let monitor = Monitor::new();

    // Memory by default; with REDIS_URL every instance shares the counts.
    let store = || -> Result<Store, Box<dyn std::error::Error>> {
        Ok(match std::env::var("REDIS_URL") {
            Ok(url) => {
                let client =
                    fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&url)?)
                        .with_performance_config(|p| {
                            p.default_command_timeout = Duration::from_secs(1)
                        })
                        .build()?;
                fred::prelude::ClientLike::connect(&client);
                RedisStore::new(client).into()
            }
            Err(_) => MemoryStore::new().into(),
        })
    };

    // 50 requests a second per address, bursts of 100; a client over it is
    // blocked for ten seconds.
    let per_address = Limiter::builder("per_address")
        .limit(Limit::gcra(50, Duration::from_secs(1), 100)?)
        .penalty(Duration::from_secs(10))
        .store(store()?)
        .on_store_failure(FailurePolicy::Insurance { instances: 1 })
        .monitor(&monitor)
        .build()?;

    // Ten requests a minute per API key, and at most 100 an hour.
    let minute = Duration::from_secs(60);
    let per_key = Limiter::builder("per_key")
        .quota(
            Quota::builder()
                .rule("minute", Limit::sliding_window(10, minute)?)?
                .rule("hour", Limit::sliding_window(100, 60 * minute)?)?
                .build()?,
        )
        .store(store()?)
        .monitor(&monitor)
        .build()?;

    let api = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .layer(RateLimitLayer::new(
            per_key,
            HeaderKey::new(HeaderName::from_static("x-api-key")),
        ));
    let metrics = monitor.clone();
    let app = Router::new()
        .nest("/api", api)
        .route("/metrics", get(move || async move { metrics.prometheus() }))
        // Behind a proxy, trust it here: ClientIp::trusting(["10.0.0.0/8".parse()?]).
        .layer(RateLimitLayer::new(per_address, ClientIp::new()));

    let listen = std::env::var("SEAWALL_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(
        "listening on http://{}: try /api/hello with an x-api-key header",
        listener.local_addr()?
    );
    // The peer address reaches ClientIp through axum's ConnectInfo.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
