//! The service's rate limits over real TCP: the DDoS limiter by client
//! address (and trusted proxies), the API, report and tenant limits, failed
//! admin authentications, and the admin routes that manage them.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use seawall_app::config::Profile;
use seawall_testkit::wait;
use serde_json::{Value, json};

use crate::support::{TestApp, TestServer};

fn profile(text: &str) -> Profile {
    text.parse().expect("a valid profile")
}

async fn status(request: RequestBuilder) -> StatusCode {
    request.send().await.expect("request").status()
}

/// Waits until `server` is ready, Redis included. Start-up goes on without
/// Redis after a few seconds, and until it connects the limiters count in
/// this instance's memory alone.
async fn wait_until_ready(server: &TestServer) {
    wait::until_async("/readyz to pass, Redis connected", async || {
        status(server.request(Method::GET, "/readyz")).await == StatusCode::OK
    })
    .await;
}

/// Asserts a 429 problem with a whole-second `Retry-After` of at least
/// `at_least` and the rate-limit headers; returns the detail.
async fn assert_429(request: RequestBuilder, at_least: u64) -> String {
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("whole seconds");
    assert!(retry >= at_least, "Retry-After {retry} < {at_least}");
    assert!(headers.contains_key("ratelimit-policy"), "{headers:?}");
    assert!(headers.contains_key("ratelimit"), "{headers:?}");
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], 429);
    assert!(body["request_id"].is_string());
    body["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ddos_limit_holds_per_client_address_and_spares_the_probes() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.ddos = profile("3/1m block 30s");
    })
    .await;
    for _ in 0..3 {
        let response = server
            .request(Method::GET, "/api/content")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let policy = response.headers()["ratelimit-policy"]
            .to_str()
            .expect("ASCII");
        assert_eq!(policy, "\"api\";q=100;w=60, \"ddos\";q=3;w=60");
    }
    // A made-up X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = server
        .request(Method::GET, "/api/content")
        .header("x-forwarded-for", "198.51.100.77");
    let detail = assert_429(spoofed, 29).await;
    assert!(detail.contains("blocked"), "{detail}");
    for probe in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(
            status(server.request(Method::GET, probe)).await,
            StatusCode::OK,
            "{probe}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
        config.ratelimit.ddos = profile("2/1m");
    })
    .await;
    let from = |client: &str| {
        server
            .request(Method::GET, "/api/content")
            .header("x-forwarded-for", client)
    };
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(status(from(client)).await, StatusCode::OK);
        assert_eq!(status(from(client)).await, StatusCode::OK);
        assert_429(from(client), 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_report_limits_count_per_caller() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.api = profile("3/1m");
        config.ratelimit.report = profile("2/1h");
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let issue = || async {
        let response = server
            .admin(Method::POST, "/api/keys")
            .json(&json!({"tenant_id": "demo-enterprise", "name": "client"}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let issued: Value = response.json().await.expect("JSON");
        issued["key"].as_str().expect("a key").to_owned()
    };
    let (k1, k2) = (issue().await, issue().await);
    let with_key = |key: &str| {
        server
            .request(Method::GET, "/api/content")
            .header("x-api-key", key)
    };
    for _ in 0..3 {
        assert_eq!(status(with_key(&k1)).await, StatusCode::OK);
    }
    assert_429(with_key(&k1), 1).await;
    assert_eq!(status(with_key(&k2)).await, StatusCode::OK);
    // Without a key or user the caller is counted by its address.
    let anonymous = || {
        server
            .request(Method::GET, "/api/content")
            .header("x-forwarded-for", "198.51.100.8")
    };
    for _ in 0..3 {
        assert_eq!(status(anonymous()).await, StatusCode::OK);
    }
    let detail = assert_429(anonymous(), 1).await;
    assert!(detail.contains("client address"), "{detail}");
    // Reports: two an hour per user.
    let report = || {
        server
            .request(Method::GET, "/api/analytics/stats?user_id=1")
            .header("x-user-id", "u-9")
    };
    assert_eq!(status(report()).await, StatusCode::OK);
    assert_eq!(status(report()).await, StatusCode::OK);
    let detail = assert_429(report(), 60).await;
    assert!(detail.contains("report"), "{detail}");
}

async fn add_tier_and_tenant(server: &TestServer) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.database_url)
        .await
        .expect("connect");
    sqlx::query("INSERT INTO tiers (name, per_minute, per_hour, per_day, max_users) VALUES ('tiny', 2, 10, 100, 1)")
        .execute(&pool)
        .await
        .expect("insert tier");
    sqlx::query("INSERT INTO tenants (id, tier) VALUES ('acme', 'tiny')")
        .execute(&pool)
        .await
        .expect("insert tenant");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_quota_follows_its_tier_and_a_tier_change_applies_at_once() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    add_tier_and_tenant(&server).await;
    let as_tenant = |tenant: &str| {
        server
            .request(Method::GET, "/api/content")
            .header("x-tenant-id", tenant)
    };
    assert_eq!(status(as_tenant("acme")).await, StatusCode::OK);
    let response = as_tenant("acme").send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()["ratelimit-policy"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(
        policy,
        "\"tenant.minute\";q=2;w=60, \"tenant.hour\";q=10;w=3600, \"tenant.day\";q=100;w=86400, \
         \"api\";q=100;w=60, \"ddos\";q=1000;w=1"
    );
    let detail = assert_429(as_tenant("acme"), 1).await;
    assert!(
        detail.contains("acme") && detail.contains("tiny"),
        "{detail}"
    );
    assert_eq!(status(as_tenant("nobody")).await, StatusCode::FORBIDDEN);
    assert_eq!(status(as_tenant("bad id!")).await, StatusCode::BAD_REQUEST);

    // Upgrade: the count so far stays, the enterprise quota applies at once.
    let upgrade = server
        .admin(Method::POST, "/api/rate-limit")
        .json(&json!({"tenantId": "acme", "tier": "enterprise"}));
    let response = upgrade.send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("JSON"),
        json!({"tenantId": "acme", "tier": "enterprise"})
    );
    assert_eq!(status(as_tenant("acme")).await, StatusCode::OK);

    let change = |body: Value| server.admin(Method::POST, "/api/rate-limit").json(&body);
    assert_eq!(
        status(change(json!({"tenantId": "acme", "tier": "platinum"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        status(change(json!({"tenantId": "ghost", "tier": "free"}))).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(change(
            json!({"tenantId": "acme", "tier": "free", "extra": 1})
        ))
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_admin_logins_block_the_address_not_the_admin() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
        config.ratelimit.auth = profile("2/1m block 15m");
    })
    .await;
    let attacker = |token: &str| {
        server
            .request(Method::GET, "/api/performance")
            .header("x-forwarded-for", "203.0.113.50")
            .bearer_auth(token)
    };
    assert_eq!(
        status(attacker("wrong-token-1")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(attacker("wrong-token-2")).await,
        StatusCode::FORBIDDEN
    );
    assert_429(attacker("wrong-token-3"), 14 * 60).await;
    // Blocked whatever it sends, the right token included.
    let right = server.admin_token.clone();
    assert_429(attacker(&right), 14 * 60).await;
    // Requests without any token are not attempts; the admin elsewhere is fine.
    assert_eq!(
        status(server.admin(Method::GET, "/api/performance")).await,
        StatusCode::OK
    );

    let stats: Value = server.admin_json("/api/rate-limit").await;
    let auth = stats["limiters"]
        .as_array()
        .expect("limiters")
        .iter()
        .find(|limiter| limiter["name"] == "auth")
        .expect("the auth limiter");
    assert_eq!(auth["blocked"][0]["key"], "203.0.113.50", "{auth}");
    assert_eq!(auth["top_rejected"][0]["key"], "203.0.113.50", "{auth}");

    let reset = server.admin(
        Method::DELETE,
        "/api/rate-limit?limiter=auth&key=203.0.113.50",
    );
    assert_eq!(status(reset).await, StatusCode::OK);
    assert_eq!(status(attacker(&right)).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_attempts_are_taken_before_they_are_answered() {
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    let server = TestServer::start_with(move |config| {
        config.redis.url = Some(url);
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
        config.ratelimit.auth = profile("5/1m block 15m");
    })
    .await;
    wait_until_ready(&server).await;
    let attempt = |client: &str, token: &str| {
        server
            .request(Method::GET, "/api/performance")
            .header("x-forwarded-for", client)
            .bearer_auth(token)
    };

    // A concurrent burst of wrong tokens: five verdicts, the rest 429.
    let burst = (0..60).map(|i| attempt("203.0.113.60", &format!("wrong-{i}")).send());
    let mut forbidden = 0;
    for reply in futures_util::future::join_all(burst).await {
        match reply.expect("request").status() {
            StatusCode::FORBIDDEN => forbidden += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    assert!((1..=5).contains(&forbidden), "{forbidden} verdicts");

    // Past the limit the right token is not answered either: a sixth guess
    // that happens to be right tells the guesser nothing.
    for i in 0..5 {
        let wrong = attempt("203.0.113.61", &format!("wrong-{i}"));
        assert_eq!(status(wrong).await, StatusCode::FORBIDDEN);
    }
    let right = server.admin_token.clone();
    assert_429(attempt("203.0.113.61", &right), 1).await;

    // The admin's own requests, however many at once, use up nothing.
    let admin = (0..20).map(|_| attempt("203.0.113.62", &right).send());
    for reply in futures_util::future::join_all(admin).await {
        assert_eq!(reply.expect("request").status(), StatusCode::OK);
    }
    assert_eq!(
        status(attempt("203.0.113.62", "wrong")).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_blocks_and_unblocks_a_key() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let client = || {
        server
            .request(Method::GET, "/api/content")
            .header("x-forwarded-for", "192.0.2.44")
    };
    assert_eq!(status(client()).await, StatusCode::OK);
    let block = server
        .admin(Method::POST, "/api/rate-limit/block")
        .json(&json!({"limiter": "ddos", "key": "192.0.2.44", "seconds": 600}));
    let response = block.send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let state: Value = response.json().await.expect("JSON");
    assert_eq!(state["blocked_seconds"], 600.0, "{state}");
    assert_429(client(), 590).await;

    let unblock = server.admin(
        Method::DELETE,
        "/api/rate-limit/block?limiter=ddos&key=192.0.2.44",
    );
    assert_eq!(status(unblock).await, StatusCode::OK);
    assert_eq!(status(client()).await, StatusCode::OK);

    for (body, expected) in [
        (
            json!({"limiter": "nope", "key": "k", "seconds": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"limiter": "ddos", "key": "", "seconds": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"limiter": "ddos", "key": "k", "seconds": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"limiter": "ddos", "key": "k", "seconds": 90000}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let response = server
            .admin(Method::POST, "/api/rate-limit/block")
            .json(&body);
        assert_eq!(status(response).await, expected, "{body}");
    }
    let bad = server.admin(Method::DELETE, "/api/rate-limit?limiter=nope&key=k");
    assert_eq!(status(bad).await, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rate_limiting_off_nothing_is_limited_and_changes_are_refused() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.enabled = false;
        config.ratelimit.api = profile("1/1m");
    })
    .await;
    for _ in 0..3 {
        let response = server
            .request(Method::GET, "/api/content")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("ratelimit").is_none());
    }
    let stats: Value = server.admin_json("/api/rate-limit").await;
    assert_eq!(stats["enabled"], false);
    assert_eq!(stats["tiers"].as_array().map(Vec::len), Some(4));
    let reset = server.admin(Method::DELETE, "/api/rate-limit?limiter=api&key=k");
    assert_eq!(status(reset).await, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_redis_share_their_limits() {
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let start = || {
        let url = redis.url();
        TestServer::start_with(move |config| {
            config.redis.url = Some(url);
            config.ratelimit.api = profile("3/1m");
        })
    };
    let (a, b) = tokio::join!(start(), start());
    wait_until_ready(&a).await;
    wait_until_ready(&b).await;
    let call = |server: &TestServer| {
        server
            .request(Method::GET, "/api/content")
            .header("x-user-id", "shared-user")
    };
    assert_eq!(status(call(&a)).await, StatusCode::OK);
    assert_eq!(status(call(&b)).await, StatusCode::OK);
    assert_eq!(status(call(&a)).await, StatusCode::OK);
    assert_429(call(&b), 1).await;
    let stats: Value = a.admin_json("/api/rate-limit").await;
    assert_eq!(stats["limiters"][0]["store"], "redis", "{stats}");
}

/// Records `count` requests answered `status` in the service's monitor,
/// as its HTTP layer does: what its health rules judge.
fn record(app: &TestApp, status: u16, count: usize) {
    for _ in 0..count {
        app.app
            .monitor()
            .record_request("GET", "/api/content", status, Duration::from_millis(2));
    }
}

/// The capacity of the `api` limiter's rule as `GET /api/rate-limit`
/// shows it, with the `health` object.
async fn api_capacity(app: &TestApp) -> (u64, Value) {
    let stats = app.admin_get("/api/rate-limit").await.json;
    let api = stats["limiters"]
        .as_array()
        .expect("limiters")
        .iter()
        .find(|limiter| limiter["name"] == "api")
        .expect("the api limiter")
        .clone();
    (
        api["rules"][0]["capacity"].as_u64().expect("a capacity"),
        stats["health"].clone(),
    )
}

/// When the service's requests fail (its health rules find it unhealthy)
/// the per-caller limit falls to its unhealthy share at the next reading,
/// a caller sees the smaller limit in its headers, and once the health is
/// back the limit returns a level at a time, each after `health_recover`;
/// every change is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_tighten_when_health_falls_and_loosen_a_level_at_a_time() {
    let app = TestApp::sqlite_with(|config| {
        config.ratelimit.api = profile("100/1m");
        config.ratelimit.health_degraded = 0.5;
        config.ratelimit.health_unhealthy = 0.2;
        config.ratelimit.health_recover = Duration::from_secs(1);
    })
    .await;
    let (capacity, health) = api_capacity(&app).await;
    assert_eq!(capacity, 100);
    assert_eq!(health["level"], "healthy");
    assert_eq!(health["scale"], 1.0);

    // A storm of 5xx: over a quarter of the window's requests failed.
    record(&app, 500, 100);
    let health = wait::until_some_async("the limits to tighten", async || {
        let (capacity, health) = api_capacity(&app).await;
        (capacity == 20).then_some(health)
    })
    .await;
    assert_eq!(health["level"], "unhealthy");
    assert_eq!(health["scale"], 0.2);
    assert_eq!(health["tightened"], 1);
    let reply = app.get("/api/content?page=1&page_size=1").await;
    assert_eq!(reply.status, 200);
    let policy = reply.headers["ratelimit-policy"].to_str().expect("ASCII");
    assert!(policy.contains("q=20"), "{policy}");
    let metrics = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("ratelimit_health_scale 0.2\n"), "{text}");

    // Healthy again (100 errors in 2,100 requests, under 5 %): degraded
    // first (half), then the whole limit.
    record(&app, 200, 2_000);
    let mut seen = Vec::new();
    wait::until_async("the limits to loosen all the way", async || {
        let (capacity, _) = api_capacity(&app).await;
        if seen.last() != Some(&capacity) {
            seen.push(capacity);
        }
        capacity == 100
    })
    .await;
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "the limit only grew on the way back: {seen:?}"
    );
    let (_, health) = api_capacity(&app).await;
    assert_eq!(health["level"], "healthy");
    assert_eq!(health["tightened"], 1, "{health}");
    assert_eq!(health["loosened"], 2, "a level at a time: {health}");
    let metrics = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("ratelimit_health_changes_total{direction=\"loosen\"} 2\n"),
        "{text}"
    );
}

/// A request for `uri` from `address`, as the service's own server would
/// hand it over.
fn from(address: [u8; 4], uri: &str) -> axum::http::Request<axum::body::Body> {
    let mut request = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .expect("request");
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            address, 40_000,
        ))));
    request
}

/// What the API limiter says is left for a response's caller.
fn api_remaining(reply: &crate::support::Reply) -> i64 {
    remaining(reply, "api")
}

/// What the tenant quota's minute says is left for a response's tenant.
fn tenant_remaining(reply: &crate::support::Reply) -> i64 {
    remaining(reply, "tenant.minute")
}

/// The remaining count of a response's `RateLimit` item `name`.
fn remaining(reply: &crate::support::Reply, name: &str) -> i64 {
    let prefix = format!("\"{name}\";r=");
    reply
        .headers
        .get_all("ratelimit")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(", "))
        .find_map(|item| item.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(';').next())
        .and_then(|remaining| remaining.parse().ok())
        .unwrap_or_else(|| panic!("no RateLimit item {name}"))
}

/// With abuse detection acting: a client walking the catalogue page by
/// page is found by its distinct paths and tightened (each of its requests
/// then takes 4 of its limit), listed with its reason, and pardoned by an
/// admin; a client reading one page again and again, as often, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_is_found_tightened_listed_and_pardoned() {
    const SCRAPER: [u8; 4] = [203, 0, 113, 77];
    const READER: [u8; 4] = [203, 0, 113, 78];
    let app = TestApp::sqlite_with(|config| {
        config.ratelimit.abuse = seawall_app::config::AbuseMode::Act;
        config.ratelimit.abuse_interval = Duration::from_secs(1);
        config.ratelimit.abuse_min_requests = 20;
        config.ratelimit.api = profile("100000/1m");
    })
    .await;
    let mut page = 0;
    let found = loop {
        for _ in 0..30 {
            page += 1;
            let reply = app
                .send(from(SCRAPER, &format!("/api/content?page={page}")))
                .await;
            assert_eq!(reply.status, 200);
            let reply = app.send(from(READER, "/api/content?page=1")).await;
            assert_eq!(reply.status, 200);
        }
        let state = app.admin_get("/api/rate-limit/abuse").await;
        assert_eq!(state.status, 200, "{}", state.text());
        let findings = state.json["findings"].as_array().expect("findings").clone();
        assert!(
            findings.iter().all(|f| f["key"] != "203.0.113.78"),
            "the reader was found: {findings:?}"
        );
        if let Some(finding) = findings.into_iter().find(|f| f["key"] == "203.0.113.77") {
            break finding;
        }
        assert!(page < 30_000, "the scraper was never found");
    };
    assert_eq!(found["signal"], "paths", "{found}");
    assert_eq!(found["action"], "tighten", "{found}");
    assert!(
        found["reason"]
            .as_str()
            .is_some_and(|r| r.contains("distinct paths")),
        "{found}"
    );
    let state = app.admin_get("/api/rate-limit/abuse").await;
    assert_eq!(state.json["mode"], "act");
    let action = &state.json["actions"][0];
    assert_eq!(
        (&action["key"], &action["action"], &action["cost"]),
        (&json!("203.0.113.77"), &json!("tighten"), &json!(4))
    );
    // Each of its requests now takes four of its limit; the reader's one.
    let scraper = || app.send(from(SCRAPER, "/api/content?page=1"));
    let reader = || app.send(from(READER, "/api/content?page=1"));
    let (before, after) = (
        api_remaining(&scraper().await),
        api_remaining(&scraper().await),
    );
    assert!((3..=5).contains(&(before - after)), "{before} then {after}");
    let (before, after) = (
        api_remaining(&reader().await),
        api_remaining(&reader().await),
    );
    assert!((0..=2).contains(&(before - after)), "{before} then {after}");
    // An admin pardons it.
    let pardon = app
        .admin_send("DELETE", "/api/rate-limit/abuse?key=203.0.113.77", None)
        .await;
    assert_eq!(pardon.status, 200, "{}", pardon.text());
    assert_eq!(pardon.json, json!({"key": "203.0.113.77", "ended": true}));
    let (before, after) = (
        api_remaining(&scraper().await),
        api_remaining(&scraper().await),
    );
    assert!((0..=2).contains(&(before - after)), "{before} then {after}");
    let bad = app
        .admin_send("DELETE", "/api/rate-limit/abuse?key=%07", None)
        .await;
    assert_eq!(bad.status, 422);
}

/// With abuse detection acting: a tenant whose users each ask once for a
/// learner that does not exist (an enumeration spread over many users) is
/// judged as a tenant: no user reaches the minimum of requests, the tenant
/// does, and is found by its errors and tightened (each of its requests
/// then takes 4 of its quota), then pardoned. Before, only each caller and
/// address was judged, and the tenant went unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_judged_on_what_its_users_do_together() {
    const PROXY: [u8; 4] = [203, 0, 113, 90];
    let app = TestApp::sqlite_with(|config| {
        config.ratelimit.abuse = seawall_app::config::AbuseMode::Act;
        config.ratelimit.abuse_interval = Duration::from_secs(1);
        config.ratelimit.abuse_min_requests = 20;
        config.ratelimit.api = profile("100000/1m");
        config.ratelimit.trusted_proxies = vec!["203.0.113.0/24".to_owned()];
    })
    .await;
    let as_user = |user: u32, uri: &str| {
        let mut request = from(PROXY, uri);
        let headers = request.headers_mut();
        headers.insert("x-tenant-id", "demo-enterprise".parse().expect("a header"));
        headers.insert("x-user-id", format!("u{user}").parse().expect("a header"));
        request
    };
    let mut user = 0;
    let found = loop {
        // 25 a batch, one a user, a batch an interval and a half: within
        // the enterprise tier's 1,000 a minute.
        for _ in 0..25 {
            user += 1;
            let reply = app
                .send(as_user(user, "/api/review/today?user_id=999999999"))
                .await;
            assert_eq!(reply.status, 404, "{}", reply.text());
        }
        let state = app.admin_get("/api/rate-limit/abuse").await;
        assert_eq!(state.status, 200, "{}", state.text());
        let findings = state.json["findings"].as_array().expect("findings").clone();
        assert!(
            findings.iter().all(|f| !f["key"]
                .as_str()
                .is_some_and(|key| key.starts_with("user:"))),
            "a user was found: {findings:?}"
        );
        if let Some(finding) = findings
            .into_iter()
            .find(|f| f["key"] == "tenant:demo-enterprise")
        {
            break finding;
        }
        assert!(user < 5_000, "the tenant was never found");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    assert_eq!(found["signal"], "errors", "{found}");
    assert_eq!(found["action"], "tighten", "{found}");
    // Each of its requests now takes four of its quota.
    let (before, after) = (
        tenant_remaining(&app.send(as_user(1, "/api/content?page=1")).await),
        tenant_remaining(&app.send(as_user(2, "/api/content?page=1")).await),
    );
    assert!((3..=5).contains(&(before - after)), "{before} then {after}");
    let pardon = app
        .admin_send(
            "DELETE",
            "/api/rate-limit/abuse?key=tenant:demo-enterprise",
            None,
        )
        .await;
    assert_eq!(pardon.status, 200, "{}", pardon.text());
    assert_eq!(pardon.json["ended"], true);
    let (before, after) = (
        tenant_remaining(&app.send(as_user(1, "/api/content?page=1")).await),
        tenant_remaining(&app.send(as_user(2, "/api/content?page=1")).await),
    );
    assert!((0..=2).contains(&(before - after)), "{before} then {after}");
}

/// A client tightened under a limit smaller than the tightening's cost (an
/// API limit of 3 a minute against a cost of 4) is charged the whole limit
/// and refused, not let through: a cost past the limit's capacity is an
/// error to the limiter, which the gate answers by letting the request
/// through. The client is found by the 429s it keeps asking for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tightened_under_a_small_limit_is_refused_not_let_through() {
    const CLIENT: [u8; 4] = [203, 0, 113, 91];
    let app = TestApp::sqlite_with(|config| {
        config.ratelimit.abuse = seawall_app::config::AbuseMode::Act;
        config.ratelimit.abuse_interval = Duration::from_secs(1);
        config.ratelimit.abuse_min_requests = 20;
        config.ratelimit.api = profile("3/1m");
    })
    .await;
    let mut sent = 0;
    loop {
        for _ in 0..25 {
            sent += 1;
            let reply = app.send(from(CLIENT, "/api/content?page=1")).await;
            assert!(
                reply.status == 200 || reply.status == 429,
                "{}",
                reply.text()
            );
        }
        let state = app.admin_get("/api/rate-limit/abuse").await;
        let tightened = state.json["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|action| action["key"] == "203.0.113.91" && action["action"] == "tighten");
        if tightened {
            break;
        }
        assert!(sent < 25_000, "the client was never tightened");
        // Well under the DDoS limit (1,000 a second), which would block it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = app.send(from(CLIENT, "/api/content?page=1")).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
}

/// With abuse detection off, its routes say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_abuse_detection_off_its_routes_answer_409() {
    let app = TestApp::sqlite_with(|config| {
        config.ratelimit.abuse = seawall_app::config::AbuseMode::Off;
    })
    .await;
    let state = app.admin_get("/api/rate-limit/abuse").await;
    assert_eq!(state.status, 409);
    assert!(state.assert_problem(409).contains("ratelimit.abuse = off"));
    let pardon = app
        .admin_send("DELETE", "/api/rate-limit/abuse?key=k", None)
        .await;
    assert_eq!(pardon.status, 409);
}
