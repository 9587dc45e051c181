//! The workload through the cache: the admin routes, and two instances on
//! one Redis where a write on one is never followed by the old list on the
//! other, even with a Redis connection cut mid-run.

use seawall_testkit::{Proxy, wait};
use serde_json::{Value, json};

use crate::support::TestApp;

fn class<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .find(|class| class["class"] == name)
        .expect("the class is listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_hit_the_cache_and_the_admin_routes_report_and_invalidate() {
    let app = TestApp::sqlite().await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/review/today?user_id=3").await.status, 200);
        assert_eq!(app.get("/api/analytics/stats?user_id=3").await.status, 200);
        assert_eq!(app.get("/api/content?page=2").await.status, 200);
    }
    let stats = app.admin_get("/api/cache").await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json["enabled"], true);
    assert_eq!(stats.json["redis"], false);
    assert_eq!(stats.json["breaker"], "absent");
    for name in ["schedule", "api"] {
        let row = class(&stats.json, name);
        assert_eq!(row["loads"], 1, "{name}: {row}");
        assert_eq!(row["l1_hits"], 2, "{name}: {row}");
    }
    // The statistics, and once the learners' counts they are measured
    // against: two keys of the computation class, each loaded once.
    let computation = class(&stats.json, "computation");
    assert_eq!(computation["loads"], 2, "{computation}");
    assert_eq!(computation["l1_hits"], 2, "{computation}");
    let stats_of_another = app.get("/api/analytics/stats?user_id=4").await;
    assert_eq!(stats_of_another.status, 200);
    let computation = class(&app.admin_get("/api/cache").await.json, "computation").clone();
    assert_eq!(
        computation["loads"], 3,
        "user 4 reuses the learners' counts: {computation}"
    );
    assert_eq!(computation["l1_hits"], 3, "{computation}");

    // An unknown type changes nothing.
    let refused = app
        .admin_send(
            "DELETE",
            "/api/cache",
            Some(&json!({"pattern": "*", "type": "everything"})),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    let unknown_field = app
        .admin_send(
            "DELETE",
            "/api/cache",
            Some(&json!({"pattern": "*", "type": "api", "x": 1})),
        )
        .await;
    assert_eq!(unknown_field.status, 422, "{}", unknown_field.text());
    app.get("/api/review/today?user_id=3").await;
    assert_eq!(
        class(&app.admin_get("/api/cache").await.json, "schedule")["loads"],
        1
    );

    // Dropping user 3's schedules makes the next read load again; the
    // statistics stay cached.
    let dropped = app
        .admin_send(
            "DELETE",
            "/api/cache",
            Some(&json!({"pattern": "3:*", "type": "schedule"})),
        )
        .await;
    assert_eq!(dropped.status, 200, "{}", dropped.text());
    assert_eq!(dropped.json["patterns"], json!(["today:3:*"]));
    app.get("/api/review/today?user_id=3").await;
    app.get("/api/analytics/stats?user_id=3").await;
    let after = app.admin_get("/api/cache").await.json;
    assert_eq!(class(&after, "schedule")["loads"], 2);
    assert_eq!(class(&after, "computation")["loads"], 3);

    // Warm-up loads every user's entries in the background.
    let started = app
        .admin_send("POST", "/api/cache?action=warmup&users=10", None)
        .await;
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(started.json["total"], 25);
    let progress = wait::until_some_async("the warm-up to finish", async || {
        let progress = app.admin_get("/api/cache").await.json["warm_up"].clone();
        (progress["state"] == "done").then_some(progress)
    })
    .await;
    assert_eq!(progress["done"], 25, "{progress}");
    assert_eq!(progress["failed"], 0);
    let bad_action = app
        .admin_send("POST", "/api/cache?action=explode", None)
        .await;
    assert_eq!(bad_action.status, 400, "{}", bad_action.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_reads_work_and_the_admin_routes_say_so() {
    let app = TestApp::sqlite_with(|config| config.cache.enabled = false).await;
    assert_eq!(app.get("/api/review/today?user_id=3").await.status, 200);
    let stats = app.admin_get("/api/cache").await;
    assert_eq!(stats.json["enabled"], false, "{}", stats.text());
    let warm = app
        .admin_send("POST", "/api/cache?action=warmup", None)
        .await;
    assert_eq!(warm.status, 409, "{}", warm.text());
    let delete = app
        .admin_send(
            "DELETE",
            "/api/cache",
            Some(&json!({"pattern": "*", "type": "all"})),
        )
        .await;
    assert_eq!(delete.status, 409, "{}", delete.text());
}

/// The content ids due for `user` on `app`.
async fn due(app: &TestApp, user: i64) -> Vec<i64> {
    let reply = app
        .get(&format!("/api/review/today?user_id={user}&limit=500"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["content_id"].as_i64().expect("id"))
        .collect()
}

/// Completes reviews on `writer` and reads on `reader` right after each:
/// the reader never lists a review the writer already moved past today.
async fn writes_on_one_are_seen_by_the_other(
    writer: &TestApp,
    reader: &TestApp,
    user: i64,
    rounds: usize,
) {
    for round in 0..rounds {
        let before = due(reader, user).await;
        let Some(&content) = before.first() else {
            break;
        };
        let reply = writer
            .post_json(
                "/api/review/complete",
                &json!({"user_id": user, "content_id": content, "rating": 5}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // The announcement travels through Redis; once it has arrived, the
        // old list never comes back.
        wait::until_async(
            format!("round {round}: the other instance to stop listing {content}"),
            async || !due(reader, user).await.contains(&content),
        )
        .await;
        for _ in 0..5 {
            assert!(
                !due(reader, user).await.contains(&content),
                "round {round}: {content} came back"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_never_serve_the_old_list() {
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let a = TestApp::sqlite_with(|config| config.redis.url = Some(redis.url())).await;
    let b = a.another_instance(|_| {}).await;
    let stats = b.admin_get("/api/cache").await;
    assert_eq!(stats.json["redis"], true, "{}", stats.text());
    // Each counts the invalidations it receives once it follows them.
    following_becomes(&a, true, "a to follow the invalidations").await;
    following_becomes(&b, true, "b to follow the invalidations").await;
    writes_on_one_are_seen_by_the_other(&a, &b, 4, 8).await;
    writes_on_one_are_seen_by_the_other(&b, &a, 5, 8).await;
    assert!(b.admin_get("/api/cache").await.json["invalidations_received"].as_u64() > Some(0));
}

/// Waits until `app`'s cache reports `following` as `want`; `what` names
/// the wait.
async fn following_becomes(app: &TestApp, want: bool, what: &str) {
    wait::until_async(what, async || {
        app.admin_get("/api/cache").await.json["following"] == want
    })
    .await;
}

/// The same with one instance's Redis connection cut and restored mid-run.
/// Cut off, that instance answers from the database (its degraded TTL is
/// zero: L1 answers nothing while it cannot follow the invalidations), so
/// the other's writes show at once; its own write reaches the other
/// instance once it is back; after the reconnect, writes on either side
/// are seen by the other again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_redis_connection_never_brings_back_the_old_list() {
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let proxy = Proxy::start(redis.addr()).expect("the proxy starts");
    let a = TestApp::sqlite_with(|config| config.redis.url = Some(redis.url())).await;
    let b = a
        .another_instance(|config| {
            config.redis.url = Some(proxy.url());
            config.cache.degraded_ttl = std::time::Duration::ZERO;
        })
        .await;
    following_becomes(&b, true, "b to follow the invalidations").await;
    writes_on_one_are_seen_by_the_other(&a, &b, 4, 3).await;
    // Both instances hold the lists of users 6 and 7 when b is cut off.
    let _ = (due(&a, 6).await, due(&b, 6).await, due(&b, 7).await);
    let listed = due(&a, 7).await;

    proxy.cut();
    following_becomes(&b, false, "b to notice the cut").await;
    writes_on_one_are_seen_by_the_other(&a, &b, 6, 3).await;
    // A write on the cut-off instance: its own reads see it at once.
    let content = *listed.first().expect("user 7 has reviews due");
    let reply = b
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 7, "content_id": content, "rating": 5}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!due(&b, 7).await.contains(&content));

    proxy.restore();
    following_becomes(&b, true, "b to follow again after the restore").await;
    // The invalidation b could not send while cut off reaches a.
    wait::until_async(
        format!("a to stop listing {content} once b was back"),
        async || !due(&a, 7).await.contains(&content),
    )
    .await;
    for _ in 0..5 {
        assert!(!due(&a, 7).await.contains(&content), "{content} came back");
    }
    writes_on_one_are_seen_by_the_other(&a, &b, 8, 3).await;
    writes_on_one_are_seen_by_the_other(&b, &a, 9, 3).await;
    let b_stats = b.admin_get("/api/cache").await;
    assert!(
        b_stats.json["redis_errors"].as_u64() > Some(0),
        "{}",
        b_stats.text()
    );
}

/// The keys read most are learned and listed per family, and loaded again
/// once whole families are dropped: the next reads of them are hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_read_most_are_loaded_again_after_a_drop() {
    let app = TestApp::sqlite().await;
    let paths = [
        "/api/review/today?user_id=5",
        "/api/analytics/stats?user_id=5",
        "/api/content?page=3",
    ];
    // One read in 8 is counted, at random: each key is read often enough
    // that it is, whatever the draw.
    for _ in 0..100 {
        for path in paths {
            assert_eq!(app.get(path).await.status, 200, "{path}");
        }
    }
    let stats = app.admin_get("/api/cache").await;
    assert_eq!(stats.json["warm_hot"], 1000, "{}", stats.text());
    for (family, key) in [
        ("today", "today:5:"),
        ("stats", "stats:5"),
        ("content", "content:3:20:"),
    ] {
        let hot = stats.json["hot_keys"][family]
            .as_array()
            .expect("a list per family");
        assert!(
            hot.iter().any(
                |hot| hot["key"].as_str().is_some_and(|hot| hot.starts_with(key))
                    && hot["reads"].as_f64() > Some(0.0)
            ),
            "{family}: {hot:?}"
        );
    }
    let loads = |stats: &Value| {
        ["schedule", "computation", "api"].map(|name| class(stats, name)["loads"].clone())
    };

    let dropped = app
        .admin_send(
            "DELETE",
            "/api/cache",
            Some(&json!({"pattern": "*", "type": "all"})),
        )
        .await;
    assert_eq!(dropped.status, 200, "{}", dropped.text());
    wait::until_async("the learned warm-up after the drop", async || {
        app.admin_get("/api/cache").await.json["learned_warm_up"]["reason"] == "dropped"
    })
    .await;
    let warmed = app.admin_get("/api/cache").await;
    // The three keys read (the learners' standing, read with the
    // statistics, is no key a warm-up can load by itself).
    let last = &warmed.json["learned_warm_up"];
    assert_eq!(
        (
            last["keys"].as_u64(),
            last["loaded"].as_u64(),
            last["failed"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{last}"
    );
    let before = loads(&warmed.json);
    for path in paths {
        assert_eq!(app.get(path).await.status, 200, "{path}");
    }
    let after = app.admin_get("/api/cache").await;
    assert_eq!(
        loads(&after.json),
        before,
        "every read after the warm-up is a hit"
    );
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("cache_learned_warm_ups")
                && line.contains("reason=\"dropped\"")
                && line.ends_with(" 1")),
        "{metrics}"
    );
}
