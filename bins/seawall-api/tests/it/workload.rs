//! The reference workload and the operations endpoints over HTTP, on SQLite
//! and on PostgreSQL: every scenario runs on both.

use seawall_testkit::wait;
use serde_json::{Value, json};

use crate::support::{TOKEN, TestApp};

/// Each scenario runs as its own test on a fresh SQLite file, and all of them
/// run in one test against one throwaway PostgreSQL server, each on a fresh
/// database.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&crate::support::TestApp::sqlite().await).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres_runs_every_scenario() {
            let server = tokio::task::spawn_blocking(seawall_testkit::Postgres::start)
                .await
                .expect("join")
                .expect("a throwaway PostgreSQL starts (scripts/setup installs it)");
            $(
                eprintln!("postgres: {}", stringify!($scenario));
                $scenario(&TestApp::postgres(&server).await).await;
            )*
        }
    };
}

on_both_backends!(
    content_pages_through_the_catalogue,
    review_today_lists_due_reviews_in_order,
    stats_aggregate_the_history,
    completing_a_review_writes_history_and_moves_the_schedule,
    concurrent_reviews_are_each_applied_once_in_turn,
    unknown_users_and_schedules_are_404_and_change_nothing,
    bad_query_parameters_are_400,
    bad_bodies_are_rejected_and_change_nothing,
    admin_routes_need_the_token,
    probes_and_metrics_answer,
    unrouted_requests_are_problems,
);

async fn content_pages_through_the_catalogue(app: &TestApp) {
    let first = app.get("/api/content").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json["page"], 1);
    assert_eq!(first.json["page_size"], 20);
    assert_eq!(first.json["total"], 60);
    assert_eq!(first.json["total_pages"], 3);
    let ids = |reply: &crate::support::Reply| -> Vec<i64> {
        reply.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].as_i64().expect("id"))
            .collect()
    };
    assert_eq!(ids(&first), (1..=20).collect::<Vec<_>>());

    let last = app.get("/api/content?page=3&page_size=20").await;
    assert_eq!(ids(&last), (41..=60).collect::<Vec<_>>());
    let past_the_end = app.get("/api/content?page=4").await;
    assert_eq!(past_the_end.status, 200);
    assert_eq!(past_the_end.json["items"], json!([]));
    let all = app.get("/api/content?page_size=100").await;
    assert_eq!(ids(&all).len(), 60);

    let math = app.get("/api/content?category=math&page_size=100").await;
    assert_eq!(math.status, 200);
    let items = math.json["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(items.iter().all(|item| item["category"] == "math"));
    assert_eq!(math.json["total"], items.len());
}

async fn review_today_lists_due_reviews_in_order(app: &TestApp) {
    let reply = app.get("/api/review/today?user_id=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let due_before = reply.json["due_before"]
        .as_str()
        .expect("due_before")
        .to_owned();
    let items = reply.json["items"].as_array().expect("items");
    assert!(
        !items.is_empty(),
        "the demo dataset has reviews due: {}",
        reply.text()
    );
    assert_eq!(reply.json["count"], items.len());
    let due: Vec<&str> = items
        .iter()
        .map(|item| item["due_at"].as_str().expect("due_at"))
        .collect();
    assert!(
        due.windows(2).all(|pair| pair[0] <= pair[1]),
        "ordered by due time: {due:?}"
    );
    assert!(due.iter().all(|at| *at < due_before.as_str()));
    for item in items {
        assert!(
            item["title"]
                .as_str()
                .is_some_and(|title| !title.is_empty())
        );
        assert!((1..=5).contains(&item["difficulty"].as_i64().expect("difficulty")));
        assert!(item["ease"].as_f64().expect("ease") >= 1.3);
    }

    let one = app.get("/api/review/today?user_id=1&limit=1").await;
    assert_eq!(one.json["count"], 1);
    assert_eq!(one.json["items"][0], items[0]);

    let category = items[0]["category"].as_str().expect("category").to_owned();
    let filtered = app
        .get(&format!("/api/review/today?user_id=1&category={category}"))
        .await;
    assert_eq!(filtered.status, 200);
    let filtered_items = filtered.json["items"].as_array().expect("items");
    assert!(!filtered_items.is_empty());
    assert!(
        filtered_items
            .iter()
            .all(|item| item["category"] == category.as_str())
    );
    let expected = items
        .iter()
        .filter(|item| item["category"] == category.as_str())
        .count();
    assert_eq!(filtered_items.len(), expected);
}

async fn stats_aggregate_the_history(app: &TestApp) {
    let reply = app.get("/api/analytics/stats?user_id=3").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = &reply.json;
    assert_eq!(stats["user_id"], 3);
    assert_eq!(stats["totals"]["reviews"], 120);
    let passed = stats["totals"]["passed"].as_i64().expect("passed");
    let accuracy = stats["totals"]["accuracy"].as_f64().expect("accuracy");
    assert!((accuracy - passed as f64 / 120.0).abs() < 1e-9);
    let average = stats["totals"]["average_rating"].as_f64().expect("average");
    assert!((0.0..=5.0).contains(&average));
    let by_category: i64 = stats["by_category"]
        .as_array()
        .expect("by_category")
        .iter()
        .map(|row| row["reviews"].as_i64().expect("reviews"))
        .sum();
    assert_eq!(by_category, 120);
    assert_eq!(stats["daily"].as_array().expect("daily").len(), 30);
    assert_eq!(stats["schedules"]["total"], 30);
    let percentile = stats["standing"]["percentile"]
        .as_f64()
        .expect("percentile");
    assert!((0.0..=1.0).contains(&percentile));
    assert!(stats["totals"]["first_review_at"].as_str().is_some());
}

async fn completing_a_review_writes_history_and_moves_the_schedule(app: &TestApp) {
    let due = app.get("/api/review/today?user_id=2").await;
    let content_id = due.json["items"][0]["content_id"]
        .as_i64()
        .expect("a due review");
    let before = app.get("/api/analytics/stats?user_id=2").await;

    let reply = app
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 2, "content_id": content_id, "rating": 5, "duration_ms": 4200}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json["content_id"], content_id);
    assert!(
        reply.json["next"]["interval_days"]
            .as_i64()
            .expect("interval")
            >= 1
    );
    assert!(reply.json["next"]["due_at"].as_str() > reply.json["reviewed_at"].as_str());

    let after = app.get("/api/analytics/stats?user_id=2").await;
    let count = |stats: &Value, period: &str| stats[period]["reviews"].as_i64().expect("reviews");
    assert_eq!(
        count(&after.json, "totals"),
        count(&before.json, "totals") + 1
    );
    assert_eq!(
        count(&after.json, "last_7_days"),
        count(&before.json, "last_7_days") + 1
    );
    let study = |stats: &Value| {
        stats["totals"]["study_time_ms"]
            .as_i64()
            .expect("study time")
    };
    assert_eq!(study(&after.json), study(&before.json) + 4200);

    let still_due = app.get("/api/review/today?user_id=2&limit=500").await;
    assert!(
        still_due.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|item| item["content_id"] != content_id),
        "the completed review moved past today"
    );

    // A failed review brings the content back tomorrow with the streak reset.
    let failed = app
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 2, "content_id": content_id, "rating": 1}),
        )
        .await;
    assert_eq!(failed.status, 200, "{}", failed.text());
    assert_eq!(failed.json["next"]["interval_days"], 1);
    assert_eq!(failed.json["next"]["repetitions"], 0);
}

async fn history_count(app: &TestApp, user_id: i64) -> i64 {
    let stats = app
        .get(&format!("/api/analytics/stats?user_id={user_id}"))
        .await;
    stats.json["totals"]["reviews"].as_i64().expect("reviews")
}

async fn unknown_users_and_schedules_are_404_and_change_nothing(app: &TestApp) {
    for uri in [
        "/api/review/today?user_id=999",
        "/api/analytics/stats?user_id=999",
    ] {
        let detail = app.get(uri).await.assert_problem(404);
        assert!(detail.contains("999"), "{detail}");
    }
    let before = history_count(app, 1).await;
    // User 1's 30 schedules are for contents (37 + k) mod 60 + 1: 38 to 60 and
    // 1 to 7, so content 30 has none.
    let reply = app
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 1, "content_id": 30, "rating": 4}),
        )
        .await;
    reply.assert_problem(404);
    let reply = app
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 999, "content_id": 1, "rating": 4}),
        )
        .await;
    reply.assert_problem(404);
    assert_eq!(history_count(app, 1).await, before);
}

async fn bad_query_parameters_are_400(app: &TestApp) {
    let cases = [
        ("/api/review/today", "user_id"),
        ("/api/review/today?user_id=abc", "user_id"),
        ("/api/review/today?user_id=-1", "user_id"),
        ("/api/review/today?user_id=0", "user_id"),
        ("/api/review/today?user_id=1.5", "user_id"),
        (
            "/api/review/today?user_id=99999999999999999999999",
            "user_id",
        ),
        ("/api/review/today?user_id=1&category=cooking", "category"),
        ("/api/review/today?user_id=1&limit=0", "limit"),
        ("/api/review/today?user_id=1&limit=100000", "limit"),
        ("/api/review/today?userid=1", "userid"),
        ("/api/review/today?user_id=1&user_id=2", "user_id"),
        ("/api/analytics/stats", "user_id"),
        ("/api/analytics/stats?user_id=", "user_id"),
        ("/api/analytics/stats?user_id=1&extra=1", "extra"),
        ("/api/content?page=0", "page"),
        ("/api/content?page=-3", "page"),
        ("/api/content?page=100000000", "page"),
        ("/api/content?page=1e3", "page"),
        ("/api/content?page_size=0", "page_size"),
        ("/api/content?page_size=101", "page_size"),
        ("/api/content?page_size=-5", "page_size"),
        ("/api/content?category=%00", "category"),
    ];
    for (uri, parameter) in cases {
        let reply = app.get(uri).await;
        let detail = reply.assert_problem(400);
        assert!(detail.contains(parameter), "{uri}: {detail}");
        assert_eq!(reply.json["invalid_params"][0]["name"], parameter, "{uri}");
    }
}

async fn bad_bodies_are_rejected_and_change_nothing(app: &TestApp) {
    let before = history_count(app, 4).await;
    let uri = "/api/review/complete";
    let valid = json!({"user_id": 4, "content_id": 1, "rating": 3}).to_string();

    app.post(uri, None, valid.clone()).await.assert_problem(415);
    app.post(uri, Some("text/plain"), valid.clone())
        .await
        .assert_problem(415);
    app.post(uri, Some("application/x-www-form-urlencoded"), "user_id=4")
        .await
        .assert_problem(415);

    let unprocessable = [
        "{",
        "",
        "not json",
        "[]",
        "null",
        r#"{"user_id": "four", "content_id": 1, "rating": 3}"#,
        r#"{"user_id": 4, "content_id": 1}"#,
        r#"{"user_id": 4, "content_id": 1, "rating": 3, "bonus": true}"#,
        r#"{"user_id": 4, "content_id": 1, "rating": 3.5}"#,
        r#"{"user_id": 4, "content_id": 1, "rating": 6}"#,
        r#"{"user_id": 4, "content_id": 1, "rating": -1}"#,
        r#"{"user_id": 4, "content_id": 1, "rating": 3, "duration_ms": -10}"#,
        r#"{"user_id": 4, "content_id": 1, "rating": 3, "duration_ms": 999999999999}"#,
        r#"{"user_id": 0, "content_id": 1, "rating": 3}"#,
        r#"{"user_id": 4, "content_id": -1, "rating": 3}"#,
        r#"{"user_id": 4, "content_id": 1, "rating": 99999999999999999999999}"#,
    ];
    for body in unprocessable {
        let reply = app.post(uri, Some("application/json"), body).await;
        reply.assert_problem(422);
    }
    let field = app
        .post(
            uri,
            Some("application/json"),
            r#"{"user_id": 4, "content_id": 1, "rating": 6}"#,
        )
        .await;
    assert_eq!(field.json["invalid_params"][0]["name"], "rating");

    let huge = format!(
        r#"{{"user_id": 4, "content_id": 1, "rating": 3, "padding": "{}"}}"#,
        "x".repeat(64 * 1024)
    );
    app.post(uri, Some("application/json"), huge)
        .await
        .assert_problem(413);

    assert_eq!(
        history_count(app, 4).await,
        before,
        "no rejected request wrote anything"
    );
}

async fn admin_routes_need_the_token(app: &TestApp) {
    let missing = app.get("/api/performance").await;
    missing.assert_problem(401);
    assert!(missing.headers.contains_key("www-authenticate"));

    let with = |value: &'static str| {
        axum::http::Request::get("/api/performance")
            .header("authorization", value)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    app.send(with("Bearer wrong-token-wrong-token"))
        .await
        .assert_problem(403);
    app.send(with("Bearer ")).await.assert_problem(401);
    app.send(with("Basic dXNlcjpwYXNz"))
        .await
        .assert_problem(401);
    app.send(with("test-admin-token-0123456789"))
        .await
        .assert_problem(401);
    let almost = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let request = axum::http::Request::get("/api/performance")
        .header("authorization", almost)
        .body(axum::body::Body::empty())
        .expect("request");
    app.send(request).await.assert_problem(403);

    app.get("/api/content").await;
    let snapshot = app.admin_get("/api/performance").await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text());
    assert!(
        snapshot.json["http"]
            .as_array()
            .is_some_and(|windows| !windows.is_empty())
    );
    assert!(snapshot.json["timeline"].is_array());
    let routes: Vec<&str> = snapshot.json["histograms"]
        .as_array()
        .expect("histograms")
        .iter()
        .filter(|family| family["name"] == "http_server_request_duration_seconds")
        .flat_map(|family| family["series"].as_array().expect("series"))
        .filter_map(|series| series["labels"]["route"].as_str())
        .collect();
    assert!(
        routes.contains(&"/api/content"),
        "the perfmon layer saw the route: {routes:?}"
    );

    // The database check's ping has a second to answer, which a busy
    // machine can miss now and then: it passes once it answers in time.
    let health = wait::until_some_async("the health report's database check to pass", async || {
        let health = app.admin_get("/api/performance?type=health").await;
        (health.json["checks"]["database:responseTime"][0]["status"] == "pass").then_some(health)
    })
    .await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.content_type(), "application/health+json");

    let slow = app
        .admin_get("/api/performance?type=slow-queries&limit=5")
        .await;
    assert_eq!(slow.status, 200);
    assert!(slow.json["entries"].is_array());
    assert_eq!(slow.json["threshold_ms"], 1000.0);
    let slow = app.admin_get("/api/performance?type=slow-apis").await;
    assert_eq!(slow.status, 200);

    for uri in [
        "/api/performance?type=everything",
        "/api/performance?limit=0",
        "/api/performance?type=slow-apis&limit=abc",
        "/api/performance?limit=5000",
    ] {
        app.admin_get(uri).await.assert_problem(400);
    }
}

async fn probes_and_metrics_answer(app: &TestApp) {
    let live = app.get("/livez").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.content_type(), "application/health+json");
    assert_eq!(live.json["status"], "pass");

    // Its checks' pings have a second to answer, which a busy machine can
    // miss now and then: ready once they answer in time.
    let ready = wait::until_some_async("/readyz to pass", async || {
        let ready = app.get("/readyz").await;
        (ready.status == 200).then_some(ready)
    })
    .await;
    assert_eq!(ready.content_type(), "application/health+json");
    assert_eq!(ready.json["status"], "pass");
    assert_eq!(
        ready.json["checks"]["database:responseTime"][0]["status"],
        "pass"
    );

    app.get("/api/content?page=2").await;
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.content_type().starts_with("text/plain"),
        "{}",
        metrics.content_type()
    );
    let text = metrics.text();
    assert!(
        text.lines().any(
            |line| line.starts_with("http_server_request_duration_seconds_count")
                && line.contains("route=\"/api/content\"")
        ),
        "{text}"
    );
    assert!(
        text.contains("db_query_duration_seconds"),
        "queries are timed: {text}"
    );
}

async fn unrouted_requests_are_problems(app: &TestApp) {
    app.get("/no/such/route").await.assert_problem(404);
    let request = axum::http::Request::delete("/api/content")
        .body(axum::body::Body::empty())
        .expect("request");
    app.send(request).await.assert_problem(405);
    app.get("/api/review/complete").await.assert_problem(405);
    // A path that is not UTF-8 once decoded.
    app.get("/assets/%FF").await.assert_problem(400);
    app.get("/assets/nothing-here.js").await.assert_problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_queries_reach_the_slow_query_log_sanitised() {
    let app = TestApp::sqlite_with(|config| {
        config.perfmon.slow_query = std::time::Duration::from_nanos(1);
    })
    .await;
    app.get("/api/review/today?user_id=5&category=math").await;
    app.get("/api/analytics/stats?user_id=5").await;
    let slow = app
        .admin_get("/api/performance?type=slow-queries&limit=100")
        .await;
    assert_eq!(slow.status, 200, "{}", slow.text());
    let texts: Vec<&str> = slow.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["text"].as_str().expect("text"))
        .collect();
    assert!(
        texts
            .iter()
            .any(|text| text.contains("FROM review_schedules s JOIN contents c")),
        "{texts:?}"
    );
    // The statistics SQL holds literals (`rating >= 3`, `86400000`); the log
    // keeps its shape with every literal as `?`.
    let stats: Vec<&&str> = texts
        .iter()
        .filter(|text| text.contains("FROM review_history"))
        .collect();
    assert!(!stats.is_empty(), "{texts:?}");
    assert!(
        stats.iter().any(|text| text.contains("rating >= ?")),
        "{stats:?}"
    );
    assert!(
        stats
            .iter()
            .all(|text| !text.contains(">= 3") && !text.contains("86400000")),
        "{stats:?}"
    );

    // Every query is now "slow", so health is failing; the admin report still
    // answers 200 (a 503 would feed the error rate it reports), /readyz does not
    // care (the database answers), and the report says why.
    // Distinct pages: each is a cache miss, so each runs its queries.
    for page in 1..=30 {
        app.get(&format!("/api/content?page={page}")).await;
    }
    let health = app.admin_get("/api/performance?type=health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json["health"], "unhealthy", "{}", health.text());
    assert!(
        health.json["output"]
            .as_str()
            .is_some_and(|output| output.contains("slowRate"))
    );
    assert_eq!(app.get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_that_fails_halfway_writes_nothing() {
    let app = TestApp::sqlite().await;
    let due = app.get("/api/review/today?user_id=6").await;
    let content_id = due.json["items"][0]["content_id"]
        .as_i64()
        .expect("a due review");
    let before = history_count(&app, 6).await;

    // A fault the database raises after the history row is written: the
    // schedule update is refused.
    let faults = sqlx::SqlitePool::connect(app.database_url())
        .await
        .expect("connect");
    sqlx::query(
        "CREATE TRIGGER refuse_schedule_updates BEFORE UPDATE ON review_schedules \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .execute(&faults)
    .await
    .expect("create trigger");

    let reply = app
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 6, "content_id": content_id, "rating": 5}),
        )
        .await;
    let detail = reply.assert_problem(500);
    assert!(
        !detail.contains("injected"),
        "causes stay in the log: {detail}"
    );
    assert_eq!(
        history_count(&app, 6).await,
        before,
        "the history row was rolled back"
    );

    sqlx::query("DROP TRIGGER refuse_schedule_updates")
        .execute(&faults)
        .await
        .expect("drop trigger");
    let reply = app
        .post_json(
            "/api/review/complete",
            &json!({"user_id": 6, "content_id": content_id, "rating": 5}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(history_count(&app, 6).await, before + 1);
}

/// Reviews completed at the same moment land with the effects of one
/// transaction each, in turn (on SQLite in group commits; on PostgreSQL
/// each read-then-move, read again when another review moved the schedule
/// first): every one of 40 concurrent reviews of one content moves the
/// schedule one step further, and the unscheduled ones among them are 404
/// and write nothing.
async fn concurrent_reviews_are_each_applied_once_in_turn(app: &TestApp) {
    let due = app.get("/api/review/today?user_id=8").await;
    let content_id = due.json["items"][0]["content_id"]
        .as_i64()
        .expect("a due review");
    let before = history_count(app, 8).await;
    let replies = futures_util::future::join_all((0..50).map(|i| {
        // Every fifth asks for a content that is not scheduled.
        let content = if i % 5 == 4 { 999_999 } else { content_id };
        let body = json!({"user_id": 8, "content_id": content, "rating": 5});
        async move { app.post_json("/api/review/complete", &body).await }
    }))
    .await;
    let mut repetitions = Vec::new();
    let mut missing = 0;
    for reply in replies {
        match reply.status.as_u16() {
            200 => repetitions.push(reply.json["next"]["repetitions"].as_i64().expect("count")),
            404 => missing += 1,
            status => panic!("unexpected {status}: {}", reply.text()),
        }
    }
    assert_eq!(missing, 10);
    repetitions.sort_unstable();
    let first = repetitions[0];
    assert_eq!(
        repetitions,
        (first..first + 40).collect::<Vec<_>>(),
        "each review saw the one before it"
    );
    assert_eq!(history_count(app, 8).await, before + 40);
}

/// A PostgreSQL primary and a streaming replica of it.
async fn primary_and_replica() -> (seawall_testkit::Postgres, seawall_testkit::Postgres) {
    tokio::task::spawn_blocking(|| {
        let primary = seawall_testkit::Postgres::start().expect("the primary starts");
        let replica = seawall_testkit::Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("the replica starts");
        (primary, replica)
    })
    .await
    .expect("join")
}

/// With a streaming replica, the statistics' fills read on it while it
/// keeps up, and the admin report says where the reads went and what each
/// replica's state is; paused, the replica leaves rotation and the reads
/// go to the primary, with the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_the_fills_and_the_report_says_where_reads_went() {
    let (primary, replica) = primary_and_replica().await;
    let app = TestApp::postgres_with(primary.url(), |config| {
        config.database.replicas = vec![replica.url()];
        config.database.replica_max_lag = std::time::Duration::from_millis(200);
        config.database.replica_wait = std::time::Duration::from_secs(1);
    })
    .await;
    let report = async || app.admin_get("/api/performance").await.json["database"].clone();
    wait::until_async("the replica in rotation", async || {
        report().await["replicas"][0]["in_rotation"] == json!(true)
    })
    .await;
    let first = app.get("/api/analytics/stats?user_id=3").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let database = report().await;
    assert_eq!(
        database["replicas"][0]["name"],
        json!(replica.addr().to_string())
    );
    assert!(
        database["replicas"][0]["reads"].as_u64() > Some(0),
        "{database}"
    );
    assert!(
        database["replicas"][0]["replayed"]
            .as_str()
            .is_some_and(|lsn| lsn.contains('/'))
    );

    let paused = replica.psql("SELECT pg_wal_replay_pause()");
    paused.expect("pauses");
    // A write on the primary puts the paused replica behind, out of rotation.
    primary
        .psql("CREATE TABLE behind (n BIGINT)")
        .expect("writes");
    wait::until_async("the paused replica out of rotation", async || {
        report().await["replicas"][0]["in_rotation"] == json!(false)
    })
    .await;
    let primary_reads = report().await["primary_reads"].as_u64().unwrap_or(0);
    let again = app.get("/api/analytics/stats?user_id=4").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(report().await["primary_reads"].as_u64().unwrap_or(0) > primary_reads);
    replica
        .psql("SELECT pg_wal_replay_resume()")
        .expect("resumes");
}

/// Read-your-writes by WAL position, across instances, with no fixed
/// delay: with the cache off and the replica's replay paused, a change of
/// points answers with its `Seawall-Read-After`; another instance, sent
/// that position back, reads the change (from the primary, the replica
/// being behind it), and so does a read from the same client that sends
/// nothing (its identity's record in Redis), while another client that
/// carries nothing reads the replica (within the lag limits, here long).
/// Once the replica has replayed the change, a read carrying the position
/// goes to it. A position that is no position is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_back_its_position_reads_its_writes_on_any_instance() {
    let (primary, replica) = primary_and_replica().await;
    let redis = seawall_testkit::RedisServer::shared();
    let first = TestApp::postgres_with(primary.url(), |config| {
        config.redis.url = Some(redis.url());
        config.cache.enabled = false;
        config.database.replicas = vec![replica.url()];
        config.database.replica_max_lag = std::time::Duration::from_secs(600);
    })
    .await;
    let second = first.another_instance(|_| {}).await;
    let report = async || second.admin_get("/api/performance").await.json["database"].clone();
    wait::until_async("the replica in rotation", async || {
        report().await["replicas"][0]["in_rotation"] == json!(true)
    })
    .await;
    // Two clients, each from an address of its own.
    let (client, stranger) = (crate::support::peer(), crate::support::peer());
    let balance = async |position: Option<&str>, from: std::net::SocketAddr| {
        let mut request = axum::http::Request::get("/api/points/balance?user_id=5")
            .extension(axum::extract::ConnectInfo(from));
        if let Some(position) = position {
            request = request.header("seawall-read-after", position);
        }
        let reply = second
            .send(request.body(axum::body::Body::empty()).expect("a request"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json["balance"].as_i64().expect("a balance")
    };
    assert_eq!(balance(None, stranger).await, 0);

    replica.pause_replay().expect("pauses");
    let earned = first
        .send(
            axum::http::Request::post("/api/points/earn")
                .header("content-type", "application/json")
                .extension(axum::extract::ConnectInfo(client))
                .body(axum::body::Body::from(
                    json!({"user_id": 5, "amount": 10}).to_string(),
                ))
                .expect("a request"),
        )
        .await;
    assert_eq!(earned.status, 201, "{}", earned.text());
    let position = earned
        .headers
        .get("seawall-read-after")
        .expect("the write's position")
        .to_str()
        .expect("ASCII")
        .to_owned();
    let primary_reads = report().await["primary_reads"].as_u64().expect("a count");
    assert_eq!(balance(Some(&position), stranger).await, 10);
    assert_eq!(balance(None, client).await, 10, "the client's own record");
    assert_eq!(
        report().await["primary_reads"].as_u64(),
        Some(primary_reads + 2),
        "the replica has not replayed the change: the primary reads"
    );
    let replica_reads = report().await["replicas"][0]["reads"]
        .as_u64()
        .expect("a count");
    assert_eq!(
        balance(None, stranger).await,
        0,
        "nothing carried, nothing written: the paused replica reads"
    );
    assert_eq!(
        report().await["replicas"][0]["reads"].as_u64(),
        Some(replica_reads + 1)
    );

    replica.resume_replay().expect("resumes");
    let wanted: seawall_app::db::replicas::Lsn = position.parse().expect("a position");
    wait::until_async("the replica to replay the change", async || {
        report().await["replicas"][0]["replayed"]
            .as_str()
            .and_then(|lsn| lsn.parse::<seawall_app::db::replicas::Lsn>().ok())
            .is_some_and(|replayed| replayed >= wanted)
    })
    .await;
    let replica_reads = report().await["replicas"][0]["reads"]
        .as_u64()
        .expect("a count");
    assert_eq!(balance(Some(&position), stranger).await, 10);
    assert_eq!(
        report().await["replicas"][0]["reads"].as_u64(),
        Some(replica_reads + 1),
        "replayed: the replica reads"
    );

    let refused = second
        .send(
            axum::http::Request::get("/api/points/balance?user_id=5")
                .header("seawall-read-after", "yesterday")
                .body(axum::body::Body::empty())
                .expect("a request"),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(
        refused.json["invalid_params"][0]["name"],
        json!("Seawall-Read-After"),
        "{}",
        refused.text()
    );
}
