//! Identity: API keys issued, listed and revoked through the admin API and
//! verified on every workload request; identity headers believed only from
//! trusted proxies; and no Redis state for an identity the service did not
//! issue.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, header};
use reqwest::{Method, StatusCode};
use seawall_testkit::wait;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::{Reply, TestApp, TestServer};

async fn issue(app: &TestApp, tenant: &str) -> Reply {
    app.admin_send(
        "POST",
        "/api/keys",
        Some(&json!({"tenant_id": tenant, "name": "billing"})),
    )
    .await
}

async fn content_with_key(app: &TestApp, key: &str) -> Reply {
    let request = Request::get("/api/content?page_size=1")
        .header("x-api-key", key)
        .body(Body::empty())
        .expect("request");
    app.send(request).await
}

/// The sum of the `/metrics` samples whose line `picks`.
async fn metric_sum(server: &TestServer, picks: impl Fn(&str) -> bool) -> f64 {
    let exposition = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    exposition
        .lines()
        .filter(|line| picks(line))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The decisions the limiters made without Redis, as `/metrics` counts
/// them.
async fn degraded_decisions(server: &TestServer) -> f64 {
    metric_sum(server, |line| {
        line.starts_with("ratelimit_degraded_decisions_total")
    })
    .await
}

/// The API cache's identity loads (each a database read), as `/metrics`
/// counts them.
async fn identity_loads(server: &TestServer) -> f64 {
    metric_sum(server, |line| {
        line.starts_with("cache_loads_total{")
            && line.contains(r#"cache="api""#)
            && line.contains(r#"class="identity""#)
    })
    .await
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", fastrand_byte()))
        .collect()
}

fn fastrand_byte() -> u8 {
    let mut byte = [0_u8; 1];
    getrandom::fill(&mut byte).expect("random");
    byte[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_shown_once_stored_hashed_and_revoked_on_every_instance() {
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    let a = TestApp::sqlite_with(move |config| config.redis.url = Some(url)).await;
    let b = a.another_instance(|_| {}).await;

    let issued = issue(&a, "demo-basic").await;
    assert_eq!(issued.status, 201, "{}", issued.text());
    assert_eq!(
        issued
            .headers
            .get(header::CACHE_CONTROL)
            .map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "the answer that holds the key is never cached"
    );
    let key = issued.json["key"].as_str().expect("the key").to_owned();
    let id = issued.json["id"].as_str().expect("an id").to_owned();
    assert!(key.starts_with("swk_") && key.len() == 68, "{key}");
    assert_eq!(issued.json["tenant_id"], "demo-basic");
    assert_eq!(issued.json["prefix"], key[..12]);

    // Listed without the key; stored as its SHA-256 only.
    let listed = a.admin_get("/api/keys").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["keys"][0]["id"], id.as_str());
    assert!(!listed.text().contains(&key), "{}", listed.text());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(a.database_url())
        .await
        .expect("connect");
    let (digest,): (String,) = sqlx::query_as("SELECT digest FROM api_keys WHERE id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .expect("the key's row");
    let expected: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(digest, expected);
    pool.close().await;

    // The key is its tenant's: the basic tier's quota applies, on both.
    for app in [&a, &b] {
        let reply = content_with_key(app, &key).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let policy = reply.headers["ratelimit-policy"].to_str().expect("ASCII");
        assert!(policy.contains("\"tenant.minute\";q=120"), "{policy}");
    }

    // Revoked through one instance, refused by both.
    let revoked = a
        .admin_send("DELETE", &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(revoked.json["revoked_ms"].is_i64(), "{}", revoked.text());
    let refused = content_with_key(&a, &key).await;
    refused.assert_problem(401);
    assert!(refused.headers.contains_key(header::WWW_AUTHENTICATE));
    // The other instance hears of it as a cache invalidation, through Redis.
    wait::until_async("the other instance to refuse the revoked key", async || {
        content_with_key(&b, &key).await.status == 401
    })
    .await;
    // Revoking again changes nothing; an unknown key is not found.
    let again = b
        .admin_send("DELETE", &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(again.json["revoked_ms"], revoked.json["revoked_ms"]);
    a.admin_send("DELETE", "/api/keys/k-none", None)
        .await
        .assert_problem(404);
    // A key put where its id belongs is not repeated back, nor by the
    // fallbacks of a path or a method nothing serves.
    for (method, path) in [
        ("DELETE", format!("/api/keys/{key}")),
        ("GET", format!("/api/no-such/{key}")),
        ("PUT", format!("/api/keys/{key}")),
    ] {
        let reply = a.admin_send(method, &path, None).await;
        assert!(
            reply.status == 404 || reply.status == 405,
            "{method} {path}: {}",
            reply.status
        );
        assert!(
            !reply.text().contains(&key[4..]),
            "{method}: {}",
            reply.text()
        );
    }

    // Refusals: a tenant that does not exist, a bad name, an unknown field.
    a.admin_send(
        "POST",
        "/api/keys",
        Some(&json!({"tenant_id": "ghost", "name": "x"})),
    )
    .await
    .assert_problem(404);
    for body in [
        json!({"tenant_id": "bad id!", "name": "x"}),
        json!({"tenant_id": "demo-free", "name": ""}),
        json!({"tenant_id": "demo-free", "name": "a\u{7}b"}),
        json!({"tenant_id": "demo-free", "name": "x", "tier": "free"}),
    ] {
        let reply = a.admin_send("POST", "/api/keys", Some(&body)).await;
        reply.assert_problem(422);
    }
    let listed = a.admin_get("/api/keys").await;
    assert_eq!(listed.json["keys"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_keys_and_tenant_ids_leave_nothing_in_redis() {
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    let server = TestServer::start_with(move |config| {
        config.redis.url = Some(url);
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
        // The wait below asks from one address until Redis is taken up,
        // which on a loaded machine can outlast the default 100 a minute;
        // the made-up keys below are failed authentications, counted by
        // the auth limiter (5 a minute by default).
        config.ratelimit.api = "100000/1m".parse().expect("profile");
        config.ratelimit.auth = "100000/1m".parse().expect("profile");
    })
    .await;
    let keys = || -> BTreeSet<String> {
        let mut conn = redis.connect().expect("connect");
        let reply = conn.cmd(&["KEYS", "*"]).expect("KEYS");
        reply
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|key| key.as_str().map(str::to_owned))
            .collect()
    };
    // Until Redis answers (start-up goes on without it after a few
    // seconds), the cache keeps to its L1 and the limiters decide in
    // memory: nothing a request does could show in Redis. The limiters
    // share one store, so one decided on Redis shows for all: the API
    // limiter's count of the caller's address, kept a minute, and no new
    // degraded decision. (The DDoS limiter's state, at 1,000 a second,
    // expires a millisecond after each request: nothing to wait for.)
    let own_count = "{seawall:rl:api:127.0.0.1}";
    wait::until_async(
        "the cache to follow Redis and a request decided by the limiters on Redis",
        async || {
            let degraded = degraded_decisions(&server).await;
            let first = server
                .request(Method::GET, "/api/content?page_size=1")
                .send()
                .await
                .expect("request");
            assert_eq!(first.status(), StatusCode::OK);
            let cache: Value = server.admin_json("/api/cache").await;
            // The service's own reads of every queue's backlog (for their
            // forecasts, every 10 s) have made what they make.
            let queues: Value = server.admin_json("/api/queue").await;
            let forecast = queues["queues"]
                .as_array()
                .is_some_and(|rows| rows.iter().all(|row| !row["backlog_forecast"].is_null()));
            cache["following"] == true
                && cache["breaker"] == "closed"
                && forecast
                && degraded_decisions(&server).await == degraded
                && keys().iter().any(|key| key.starts_with(own_count))
        },
    )
    .await;
    let before = keys();
    let mut statuses = BTreeSet::new();
    for i in 0..50 {
        let key = if i % 2 == 0 {
            format!("swk_{}", random_hex(32))
        } else {
            format!("made-up-{}", random_hex(8))
        };
        let response = server
            .request(Method::GET, "/api/content?page_size=1")
            .header("x-api-key", key)
            .send()
            .await
            .expect("request");
        statuses.insert(("x-api-key", response.status().as_u16()));
        let response = server
            .request(Method::GET, "/api/content?page_size=1")
            .header("x-tenant-id", format!("t-{}", random_hex(8)))
            .send()
            .await
            .expect("request");
        statuses.insert(("x-tenant-id", response.status().as_u16()));
    }
    let after = keys();
    // The caller's own address is a real client: its keys may expire and
    // come back (the DDoS limiter's a millisecond after each request).
    let new: Vec<&String> = after
        .difference(&before)
        .filter(|key| !key.contains("127.0.0.1"))
        .collect();
    assert!(new.is_empty(), "new Redis keys: {new:?}");
    assert_eq!(
        statuses,
        BTreeSet::from([("x-api-key", 401), ("x-tenant-id", 403)])
    );
}

/// A made-up key is a failed authentication: counted by client address
/// before it is verified, so 1,000 of them, 25 at a time, reach the
/// database at most the auth limit's number of times, and the address is
/// then blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_keys_reach_the_database_at_most_the_auth_limits_number_of_times() {
    let server = TestServer::start_with(|config| {
        // Only the auth limiter (5 a minute, block 15 minutes) may refuse.
        config.ratelimit.ddos = "1000000/1s".parse().expect("profile");
        config.ratelimit.api = "1000000/1m".parse().expect("profile");
    })
    .await;
    let before = identity_loads(&server).await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..40 {
        let sent = (0..25).map(|_| {
            server
                .request(Method::GET, "/api/content?page_size=1")
                .header("x-api-key", format!("swk_{}", random_hex(32)))
                .send()
        });
        for reply in futures_util::future::join_all(sent).await {
            *statuses
                .entry(reply.expect("request").status().as_u16())
                .or_default() += 1;
        }
    }
    let loads = identity_loads(&server).await - before;
    assert!(
        loads <= 5.0,
        "{loads} made-up keys were read from the database"
    );
    assert_eq!(
        statuses,
        std::collections::BTreeMap::from([(401, 5), (429, 995)])
    );
    let blocked = server
        .request(Method::GET, "/api/content?page_size=1")
        .header("x-api-key", format!("swk_{}", random_hex(32)))
        .send()
        .await
        .expect("request");
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = blocked.json().await.expect("problem");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("blocked"),
        "{body}"
    );
}

/// A request the router gets with no peer address (served without one)
/// cannot be counted by its client address, so it is refused with a 500,
/// as the rate limiter's own layer refuses it: never let through
/// unlimited. The probes, which no limit counts, still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_no_peer_address_is_refused_not_let_through_unlimited() {
    let app = TestApp::sqlite().await;
    let bare = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
    let content = app.send_as_is(bare("/api/content?page_size=1")).await;
    content.assert_problem(500);
    let admin = Request::get("/api/keys")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", crate::support::TOKEN),
        )
        .body(Body::empty())
        .expect("request");
    app.send_as_is(admin).await.assert_problem(500);
    assert_eq!(app.send_as_is(bare("/livez")).await.status, 200);
    // The same request from an address is served.
    assert_eq!(app.get("/api/content?page_size=1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_believed_only_from_a_trusted_proxy() {
    let untrusted = TestServer::start_with(|config| {
        config.ratelimit.api = "3/1m".parse().expect("profile");
    })
    .await;
    // A fresh user id per request does not dodge the limit: from an
    // untrusted peer the caller is its address.
    for i in 0..3 {
        let response = untrusted
            .request(Method::GET, "/api/content")
            .header("x-user-id", format!("u-{i}"))
            .header("x-tenant-id", "nobody")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = untrusted
        .request(Method::GET, "/api/content")
        .header("x-user-id", "u-99")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = response.json().await.expect("problem");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("client address"),
        "{body}"
    );

    // Behind a trusted proxy, each user has its own count and the tenant
    // is checked.
    let trusted = TestServer::start_with(|config| {
        config.ratelimit.api = "3/1m".parse().expect("profile");
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let as_user = |user: &str| {
        trusted
            .request(Method::GET, "/api/content")
            .header("x-user-id", user)
    };
    for user in ["u-1", "u-2"] {
        for _ in 0..3 {
            let status = as_user(user).send().await.expect("request").status();
            assert_eq!(status, StatusCode::OK);
        }
        let status = as_user(user).send().await.expect("request").status();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    let status = trusted
        .request(Method::GET, "/api/content")
        .header("x-tenant-id", "nobody")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_header_sent_twice_is_a_400() {
    let server = TestServer::start_with(|config| {
        config.ratelimit.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let issued = server
        .admin(Method::POST, "/api/keys")
        .json(&json!({"tenant_id": "demo-basic", "name": "twice"}))
        .send()
        .await
        .expect("request");
    assert_eq!(issued.status(), StatusCode::CREATED);
    let issued: Value = issued.json().await.expect("JSON");
    let key = issued["key"].as_str().expect("the key").to_owned();
    for (name, first, second) in [
        ("x-api-key", key.as_str(), "swk_not-a-key"),
        ("x-api-key", "swk_not-a-key", key.as_str()),
        ("x-user-id", "u-1", "u-2"),
        ("x-tenant-id", "demo-basic", "demo-premium"),
    ] {
        // reqwest appends: two header lines of the same name.
        let response = server
            .request(Method::GET, "/api/content?page_size=1")
            .header(name, first)
            .header(name, second)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let body: Value = response.json().await.expect("problem");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("more than one"),
            "{body}"
        );
    }
    // One of each is fine.
    let response = server
        .request(Method::GET, "/api/content?page_size=1")
        .header("x-api-key", key.as_str())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Made-up keys sent from one address to two instances at once: each
/// instance may let several pass the auth limiter's peek in the same
/// moment (each then reads the database once), but a verdict on a key is
/// answered only after the failed attempt took its unit in the shared
/// limiter, atomically in Redis; so the address learns at most the
/// limit's number of verdicts however the attempts interleave, and the
/// rest are refused with 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_keys_on_two_instances_at_once_learn_at_most_the_limit_of_verdicts() {
    const LIMIT: usize = 3;
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    let a = TestApp::sqlite_with(move |config| {
        config.redis.url = Some(url);
        config.ratelimit.auth = format!("{LIMIT}/1h").parse().expect("profile");
    })
    .await;
    let b = a.another_instance(|_| {}).await;
    // Until an instance's limiters reach Redis they decide in memory, each
    // alone: wait until a request on each is decided there.
    let degraded = async |app: &TestApp| -> f64 {
        app.get("/metrics")
            .await
            .text()
            .lines()
            .filter(|line| line.starts_with("ratelimit_degraded_decisions_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    wait::until_async("both instances' limiters to decide on Redis", async || {
        for app in [&a, &b] {
            let before = degraded(app).await;
            let reply = app.get("/api/content?page_size=1").await;
            if reply.status != StatusCode::OK || degraded(app).await != before {
                return false;
            }
        }
        true
    })
    .await;
    // One client address for every attempt.
    let client = std::net::SocketAddr::from(([198, 19, 255, 7], 40_000));
    let attempts = (0..24).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let request = Request::get("/api/content?page_size=1")
            .header("x-api-key", format!("swk_{}", random_hex(32)))
            .extension(axum::extract::ConnectInfo(client))
            .body(Body::empty())
            .expect("request");
        async move { app.send(request).await.status }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let verdicts = statuses
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(verdicts <= LIMIT, "{verdicts} verdicts: {statuses:?}");
    assert_eq!(verdicts + refused, statuses.len(), "{statuses:?}");
}
