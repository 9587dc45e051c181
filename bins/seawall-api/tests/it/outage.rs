//! Redis killed under the service: a dead dependency, not an overload.
//! What needs Redis (a review written behind the cache, through the job
//! queues) answers 503 with `Retry-After` at once, says why, and writes
//! nothing; what does not (the reads, from L1 and the database) keeps
//! answering; and the adaptive limit stays at its ceiling, since a fast
//! failure of a dependency says nothing of how much the service can have
//! in flight.

use seawall_app::config::ReviewWrites;
use seawall_testkit::{RedisServer, wait};
use serde_json::json;

use crate::support::TestApp;

/// The `adaptive_limit{limiter="http"}` gauge of `app`'s `/metrics`.
async fn adaptive_limit(app: &TestApp) -> f64 {
    let metrics = app.get("/metrics").await.text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("adaptive_limit{limiter=\"http\"} "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no adaptive limit in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_writes_that_need_it_fail_at_once_and_the_rest_is_served() {
    let mut redis = RedisServer::start().expect("redis-server starts");
    let app = TestApp::sqlite_with(|config| {
        config.redis.url = Some(redis.url());
        config.cache.review_writes = ReviewWrites::WriteBehind;
    })
    .await;
    let ceiling = app.app.config().server.max_in_flight as f64;
    let due = app.get("/api/review/today?user_id=1&limit=500").await;
    assert_eq!(due.status, 200, "{}", due.text());
    let contents: Vec<i64> = due.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["content_id"].as_i64().expect("id"))
        .collect();
    assert!(contents.len() >= 2, "user 1 has reviews due");
    let review = |content: i64| json!({"user_id": 1, "content_id": content, "rating": 4});
    // The queues connect in the background: written behind once they have.
    wait::until_async("a review written behind through the queues", async || {
        app.post_json("/api/review/complete", &review(contents[0]))
            .await
            .status
            == 200
    })
    .await;

    redis.kill().expect("SIGKILL");
    // A write finds Redis gone (the first may wait for the client to); from
    // then on the queues' breaker answers at once.
    let refused = wait::until_some_async("a write refused by the open breaker", async || {
        let reply = app
            .post_json("/api/review/complete", &review(contents[1]))
            .await;
        assert_ne!(reply.status, 200, "written behind with Redis killed");
        (reply.status == 503
            && reply.json["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("found down moments ago")))
        .then_some(reply)
    })
    .await;
    let detail = refused.assert_problem(503);
    assert!(detail.contains("nothing was queued"), "{detail}");
    let retry_after: u32 = refused.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");

    // Two hundred more: each refused, none written, and the limit, which
    // a tenth off per window of them would have taken toward its floor,
    // stays at its ceiling.
    for _ in 0..200 {
        let reply = app
            .post_json("/api/review/complete", &review(contents[1]))
            .await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        let stats = app.get("/api/analytics/stats?user_id=2").await;
        assert_eq!(stats.status, 200, "{}", stats.text());
    }
    let limit = adaptive_limit(&app).await;
    assert!(
        limit >= 0.8 * ceiling,
        "the adaptive limit fell to {limit} of {ceiling}"
    );
    // The reads that need only the database and L1 are served.
    for uri in [
        "/api/review/today?user_id=1",
        "/api/content?page=1&page_size=20",
        "/api/analytics/stats?user_id=1",
    ] {
        let reply = app.get(uri).await;
        assert_eq!(reply.status, 200, "{uri}: {}", reply.text());
    }
    // The refused review was written nowhere: content 1 is still due.
    let due = app.get("/api/review/today?user_id=1&limit=500").await;
    assert!(
        due.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|item| item["content_id"] == contents[1]),
        "a refused review was applied: {}",
        due.text()
    );

    // Redis back: the breaker closes by itself.
    redis.restart().expect("restarts");
    wait::until_async("a write behind once Redis is back", async || {
        app.post_json("/api/review/complete", &review(contents[1]))
            .await
            .status
            == 200
    })
    .await;
}

/// A primary short of the replicas `queue.wait_replicas` asks for is a
/// fault every instance shares: enqueues are refused (503, taken back,
/// `Retry-After`), but `/readyz` stays 200, its enqueue check a `warn` that
/// says why. Failing it would take every instance out of rotation at once
/// (a Kubernetes Service would be left with no endpoint, reads included),
/// for a fault that no other instance lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_short_of_replicas_refuses_enqueues_but_keeps_the_instance_ready() {
    // A standalone server: no replica will ever confirm a write.
    let redis = RedisServer::start().expect("redis-server starts");
    let app = TestApp::sqlite_with(|config| {
        config.redis.url = Some(redis.url());
        config.cache.review_writes = ReviewWrites::WriteBehind;
        config.queue.wait_replicas = 1;
        config.queue.wait_timeout = std::time::Duration::from_millis(50);
    })
    .await;
    // The queues connect in the background; then the check has its answer.
    let readyz = wait::until_some_async("the enqueue check to have reached Redis", async || {
        let readyz = app.get("/readyz").await;
        let check = &readyz.json["checks"]["queues:enqueue"][0];
        let output = check["output"].as_str().unwrap_or_default();
        (check["status"] == "pass" || output.contains("replicas")).then_some(readyz)
    })
    .await;
    let check = &readyz.json["checks"]["queues:enqueue"][0];
    assert_eq!(check["status"], "warn", "{}", readyz.text());
    assert!(
        check["output"]
            .as_str()
            .is_some_and(|output| output.contains("0 of the 1 replicas")),
        "{}",
        readyz.text()
    );
    assert_eq!(readyz.status, 200, "{}", readyz.text());
    assert_eq!(readyz.json["status"], "warn", "{}", readyz.text());

    // The write that needs the queue is refused, and says why.
    let due = app.get("/api/review/today?user_id=1").await;
    let content = due.json["items"][0]["content_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("user 1 has a review due: {}", due.text()));
    let reply = app
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 1, "content_id": content, "rating": 4}),
        )
        .await;
    let detail = reply.assert_problem(503);
    assert!(detail.contains("no replica confirmed it"), "{detail}");
    assert!(reply.headers.contains_key("retry-after"));
    // The reads are served.
    let stats = app.get("/api/analytics/stats?user_id=1").await;
    assert_eq!(stats.status, 200, "{}", stats.text());
}
