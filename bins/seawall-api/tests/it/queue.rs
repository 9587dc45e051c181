//! `/api/queue` on embedded defaults: the API runs the processors itself,
//! on the memory backend.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use seawall_testkit::wait;
use serde_json::{Value, json};

use crate::support::{Reply, TOKEN, TestApp, recurring_jobs_on};

/// The job once it has completed or died.
async fn finished(app: &TestApp, queue: &str, id: &str) -> Value {
    let uri = format!("/api/queue/{queue}/jobs/{id}");
    let began = Instant::now();
    loop {
        let reply = app.admin_get(&uri).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if matches!(reply.json["state"].as_str(), Some("completed" | "dead")) {
            return reply.json;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for {queue} job {id} to finish; last seen: {}",
            wait::patience(),
            reply.text()
        );
        tokio::time::sleep(wait::POLL).await;
    }
}

async fn enqueue(app: &TestApp, queue: &str, payload: &Value) -> String {
    let reply = app
        .admin_send("POST", &format!("/api/queue/{queue}"), Some(payload))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json["queue"], queue);
    reply.json["id"].as_str().expect("an id").to_owned()
}

/// An enqueue runs as the caller its `Seawall-Read-After` names: a job
/// whose processor reads on replicas carries the position, the others
/// carry nothing, and a position that is not one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_hands_the_position_it_carries_to_the_jobs_that_read() {
    let app = TestApp::sqlite().await;
    let send = async |queue: &str, payload: Value, position: &str| {
        let request = Request::post(format!("/api/queue/{queue}"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Seawall-Read-After", position)
            .body(Body::from(payload.to_string()))
            .expect("request");
        app.send(request).await
    };
    let report = send("report", json!({"user_id": 2, "days": 30}), "16/B374D848").await;
    assert_eq!(report.status, 202, "{}", report.text());
    assert_eq!(
        report.headers.get("seawall-read-after"),
        Some(&HeaderValue::from_static("16/B374D848"))
    );
    let id = report.json["id"].as_str().expect("an id");
    let job = finished(&app, "report", id).await;
    assert_eq!(job["context"], "read-after=16/B374D848", "{job}");
    assert_eq!(job["state"], "completed", "{job}");

    let backup = send("backup", json!({}), "16B374D848").await;
    assert_eq!(backup.status, 202, "{}", backup.text());
    let id = backup.json["id"].as_str().expect("an id");
    assert_eq!(finished(&app, "backup", id).await["context"], Value::Null);

    let plain = enqueue(&app, "email", &json!({"user_id": 1, "template": "welcome"})).await;
    assert_eq!(
        finished(&app, "email", &plain).await["context"],
        Value::Null
    );

    let refused = send("report", json!({"user_id": 2, "days": 30}), "yesterday").await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let listed = app
        .admin_get("/api/queue/report/jobs?state=completed")
        .await;
    assert_eq!(
        listed.json["jobs"].as_array().map(Vec::len),
        Some(1),
        "nothing enqueued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_every_queue_run_in_process_and_report_progress() {
    let app = TestApp::sqlite().await;
    let overview = app.admin_get("/api/queue").await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    assert_eq!(overview.json["backend"], "memory");
    assert_eq!(overview.json["processors"], "in-process");
    assert_eq!(overview.json["queues"].as_array().map(Vec::len), Some(9));

    for (queue, payload) in [
        ("email", json!({"user_id": 1, "template": "welcome"})),
        ("report", json!({"user_id": 2, "days": 30})),
        ("schedule", json!({"kind": "recompute", "user_id": 3})),
        (
            "notification",
            json!({"user_id": 4, "channel": "sms", "message": "due"}),
        ),
        ("analytics", json!({"days": 30})),
        ("backup", json!({})),
        ("export", json!({"table": "users", "file": "users.csv"})),
    ] {
        let id = enqueue(&app, queue, &payload).await;
        let job = finished(&app, queue, &id).await;
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["payload"], payload);
        assert_eq!(job["progress"]["percent"], 100, "{job}");
        assert!(job["finished_at"].is_string());
    }
    let listed = app.admin_get("/api/queue/email/jobs?state=completed").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json["jobs"].as_array().map(Vec::len), Some(1));
    let overview = app.admin_get("/api/queue").await;
    let email = &overview.json["queues"][0];
    assert_eq!(
        (email["name"].as_str(), email["completed"].as_u64()),
        (Some("email"), Some(1))
    );
}

/// POSTs `payload` to `queue` with one `Idempotency-Key` header per value.
/// A queue whose policy says `adaptive=on` runs its jobs under an adaptive
/// limit, from 1 to its concurrency, shown with the API's in the metrics;
/// the other queues have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_queue_runs_its_jobs_under_a_limit_in_the_metrics() {
    let app = TestApp::sqlite_with(|config| {
        config.queue.email = seawall_app::config::QueuePolicy::parse_over(
            config.queue.email,
            "adaptive=on concurrency=12",
        )
        .expect("a valid policy");
    })
    .await;
    let mut ids = Vec::new();
    for user in 1..=20 {
        let payload = json!({"user_id": user, "template": "welcome"});
        ids.push(enqueue(&app, "email", &payload).await);
    }
    for id in &ids {
        let job = finished(&app, "email", id).await;
        assert_eq!(job["state"], "completed", "{job}");
    }
    let metrics = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let limit = text
        .lines()
        .find_map(|line| line.strip_prefix("adaptive_limit{limiter=\"queue.email\"} "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(
        limit.is_some_and(|limit| (1.0..=12.0).contains(&limit)),
        "the email queue's limit: {limit:?}"
    );
    assert!(
        !text.contains("limiter=\"queue.report\""),
        "a queue without adaptive=on has no limit"
    );
}

async fn enqueue_with_keys(
    app: &TestApp,
    queue: &str,
    payload: &Value,
    keys: &[HeaderValue],
) -> Reply {
    let mut request = Request::post(format!("/api/queue/{queue}"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json");
    for key in keys {
        request = request.header("idempotency-key", key.clone());
    }
    app.send(
        request
            .body(Body::from(payload.to_string()))
            .expect("request"),
    )
    .await
}

/// Jobs of `queue` in any state.
async fn jobs_in(app: &TestApp, queue: &str) -> u64 {
    let overview = app.admin_get("/api/queue").await;
    let row = overview.json["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|row| row["name"] == queue)
        .expect("the queue's row")
        .clone();
    ["waiting", "delayed", "active", "completed", "dead"]
        .iter()
        .map(|state| row[state].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_retried_enqueue_answer_the_first_job() {
    let app = TestApp::sqlite().await;
    let mail = json!({"user_id": 1, "template": "welcome"});
    let key = |text: &str| HeaderValue::from_str(text).expect("a header value");

    let first = enqueue_with_keys(&app, "email", &mail, &[key("signup-1")]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.json["id"].as_str().expect("an id").to_owned();
    let retried = enqueue_with_keys(&app, "email", &mail, &[key("signup-1")]).await;
    assert_eq!(retried.status, 202, "{}", retried.text());
    assert_eq!(
        retried.json["id"],
        id.as_str(),
        "the retry answers the first job"
    );
    assert_eq!(
        jobs_in(&app, "email").await,
        1,
        "the retry enqueued nothing"
    );

    let other = enqueue_with_keys(&app, "email", &mail, &[key("signup-2")]).await;
    assert_eq!(other.status, 202, "{}", other.text());
    assert_ne!(other.json["id"], id.as_str(), "another key is another job");
    let longest = enqueue_with_keys(&app, "email", &mail, &[key(&"k".repeat(255))]).await;
    assert_eq!(longest.status, 202, "{}", longest.text());
    assert_eq!(jobs_in(&app, "email").await, 3);
    // Keys are per queue: the same key elsewhere is that queue's first use.
    let notice = json!({"user_id": 1, "channel": "push", "message": "hello"});
    let elsewhere = enqueue_with_keys(&app, "notification", &notice, &[key("signup-1")]).await;
    assert_eq!(elsewhere.status, 202, "{}", elsewhere.text());
    assert_eq!(jobs_in(&app, "notification").await, 1);

    // The same key for a different job is refused (422, as the IETF
    // idempotency-key draft answers), and enqueues nothing.
    let changed = json!({"user_id": 2, "template": "welcome"});
    let mismatch = enqueue_with_keys(&app, "email", &changed, &[key("signup-1")]).await;
    let detail = mismatch.assert_problem(422);
    assert!(detail.contains("signup-1"), "{detail}");
    assert_eq!(
        mismatch.json["invalid_params"][0]["name"],
        "idempotency-key",
        "{}",
        mismatch.text()
    );
    assert_eq!(
        jobs_in(&app, "email").await,
        3,
        "the refusal enqueued nothing"
    );

    // Still the first job once it has run.
    let job = finished(&app, "email", &id).await;
    assert_eq!(job["state"], "completed", "{job}");
    let late = enqueue_with_keys(&app, "email", &mail, &[key("signup-1")]).await;
    assert_eq!(late.json["id"], id.as_str(), "{}", late.text());

    let malformed = [
        vec![key("")],
        vec![key(&"k".repeat(256))],
        vec![key("two words")],
        vec![key("tab\there")],
        vec![HeaderValue::from_bytes("clé".as_bytes()).expect("obs-text")],
        vec![key("signup-3"), key("signup-4")],
    ];
    for keys in malformed {
        let reply = enqueue_with_keys(&app, "email", &mail, &keys).await;
        let detail = reply.assert_problem(400);
        assert!(
            detail.to_ascii_lowercase().contains("idempotency-key"),
            "{detail}"
        );
        assert_eq!(
            reply.json["invalid_params"][0]["name"], "idempotency-key",
            "{keys:?}"
        );
    }
    assert_eq!(
        jobs_in(&app, "email").await,
        3,
        "a refused key enqueues nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_is_refused_and_nothing_is_enqueued() {
    let app = TestApp::sqlite().await;
    for (queue, payload, field) in [
        (
            "email",
            json!({"user_id": 1, "template": "spam"}),
            "payload",
        ),
        ("report", json!({"user_id": 1, "days": 9999}), "days"),
        (
            "export",
            json!({"table": "users", "file": "../../etc/passwd"}),
            "file",
        ),
        ("import", json!({"file": "a.csv", "extra": true}), "payload"),
    ] {
        let reply = app
            .admin_send("POST", &format!("/api/queue/{queue}"), Some(&payload))
            .await;
        reply.assert_problem(422);
        assert_eq!(
            reply.json["invalid_params"][0]["name"],
            field,
            "{}",
            reply.text()
        );
    }
    let reply = app.admin_get("/api/queue/sms/jobs?state=dead").await;
    assert!(reply.assert_problem(404).contains("the queues are email"));
    let overview = app.admin_get("/api/queue").await;
    for queue in overview.json["queues"].as_array().expect("queues") {
        let total: u64 = ["waiting", "delayed", "active", "completed", "dead"]
            .iter()
            .map(|state| queue[state].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(total, 0, "{queue}");
    }
    let unauthenticated = app.get("/api/queue").await;
    unauthenticated.assert_problem(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_keep_their_errors_and_can_be_retried_cancelled_and_cleaned() {
    let app = TestApp::sqlite().await;
    // No such learner: dead at the first attempt.
    let id = enqueue(&app, "report", &json!({"user_id": 999_999, "days": 7})).await;
    let job = finished(&app, "report", &id).await;
    assert_eq!(job["state"], "dead");
    assert!(
        job["errors"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no user 999999")),
        "{job}"
    );
    let dead = app
        .admin_get("/api/queue/report/jobs?state=dead&limit=5")
        .await;
    assert_eq!(dead.json["jobs"][0]["id"], id.as_str());

    let retried = app
        .admin_send("POST", &format!("/api/queue/report/jobs/{id}/retry"), None)
        .await;
    assert_eq!(
        (retried.status.as_u16(), retried.json["count"].as_u64()),
        (200, Some(1)),
        "{}",
        retried.text()
    );
    let job = finished(&app, "report", &id).await;
    assert_eq!(job["state"], "dead", "dead again, for the same reason");
    let all = app
        .admin_send("POST", "/api/queue/report/retry", None)
        .await;
    assert_eq!(all.json["count"], 1, "{}", all.text());
    finished(&app, "report", &id).await;

    let done = enqueue(&app, "email", &json!({"user_id": 1, "template": "digest"})).await;
    finished(&app, "email", &done).await;
    let again = app
        .admin_send("POST", &format!("/api/queue/email/jobs/{done}/retry"), None)
        .await;
    assert!(again.assert_problem(409).contains("completed"));
    let cancelled = app
        .admin_send("DELETE", &format!("/api/queue/email/jobs/{done}"), None)
        .await;
    assert!(cancelled.assert_problem(409).contains("nothing to cancel"));
    app.admin_send("DELETE", "/api/queue/email/jobs/424242", None)
        .await
        .assert_problem(404);
    app.admin_get("/api/queue/email/jobs/not-a-number")
        .await
        .assert_problem(404);

    let paused = app.admin_send("POST", "/api/queue/email/pause", None).await;
    assert_eq!(paused.json["paused"], true, "{}", paused.text());
    let waiting = enqueue(&app, "email", &json!({"user_id": 2, "template": "welcome"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = app
        .admin_get(&format!("/api/queue/email/jobs/{waiting}"))
        .await;
    assert_eq!(
        job.json["state"], "waiting",
        "a paused queue starts nothing"
    );
    let resumed = app
        .admin_send("POST", "/api/queue/email/resume", None)
        .await;
    assert_eq!(resumed.json["paused"], false);
    finished(&app, "email", &waiting).await;

    let cleaned = app
        .admin_send(
            "POST",
            "/api/queue/email/clean",
            Some(&json!({"state": "completed", "keep": 1})),
        )
        .await;
    assert_eq!(cleaned.json["count"], 1, "{}", cleaned.text());
    let bad = app
        .admin_send(
            "POST",
            "/api/queue/email/clean",
            Some(&json!({"state": "waiting"})),
        )
        .await;
    bad.assert_problem(422);
    app.admin_get("/api/queue/email/jobs?state=waiting")
        .await
        .assert_problem(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_written_behind_is_read_at_once_and_written_once() {
    let app = TestApp::sqlite_with(|config| {
        config.cache.review_writes = seawall_app::config::ReviewWrites::WriteBehind;
    })
    .await;
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(app.database_url())
        .await
        .expect("connects");
    let history = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM review_history WHERE user_id = 2")
            .fetch_one(&db)
            .await
            .expect("counts")
    };
    let before = history().await;
    // No worker takes the writes until the queue is resumed.
    let paused = app
        .admin_send("POST", "/api/queue/schedule/pause", None)
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let due = app.get("/api/review/today?user_id=2").await;
    let content_id = due.json["items"][0]["content_id"]
        .as_i64()
        .expect("a due review");
    let complete = json!({"user_id": 2, "content_id": content_id, "rating": 5, "duration_ms": 900});
    let first = app.post_json("/api/review/complete", &complete).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = app.post_json("/api/review/complete", &complete).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let repetitions = |reply: &crate::support::Reply| reply.json["next"]["repetitions"].as_i64();
    assert_eq!(
        repetitions(&second),
        repetitions(&first).map(|r| r + 1),
        "the second review starts from the first, not from the database"
    );

    let due = app.get("/api/review/today?user_id=2").await;
    let listed = |reply: &crate::support::Reply| {
        reply.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|item| item["content_id"] == content_id)
    };
    assert!(
        !listed(&due),
        "the reviewed content left today's list: {}",
        due.text()
    );
    assert_eq!(history().await, before, "nothing is in the database yet");
    let queued = app.admin_get("/api/queue").await;
    let schedule = &queued.json["queues"][2];
    assert_eq!(
        (schedule["name"].as_str(), schedule["waiting"].as_u64()),
        (Some("schedule"), Some(2))
    );

    app.admin_send("POST", "/api/queue/schedule/resume", None)
        .await;
    wait::until_async("the worker to write both reviews", async || {
        history().await >= before + 2
    })
    .await;
    assert_eq!(history().await, before + 2, "each review written once");
    let stored: i64 = sqlx::query_scalar(
        "SELECT repetitions FROM review_schedules WHERE user_id = 2 AND content_id = $1",
    )
    .bind(content_id)
    .fetch_one(&db)
    .await
    .expect("a schedule");
    assert_eq!(Some(stored), repetitions(&second));
    let due = app.get("/api/review/today?user_id=2").await;
    assert!(!listed(&due), "{}", due.text());
}

/// The queue's schedulers once the processors' task has upserted `count`.
async fn schedulers_of(app: &TestApp, queue: &str, count: usize) -> Vec<Value> {
    let uri = format!("/api/queue/{queue}/schedulers");
    wait::until_some_async(format!("{count} schedulers of {queue}"), async || {
        let reply = app.admin_get(&uri).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json["queue"], queue);
        let listed = reply.json["schedulers"].as_array()?.clone();
        (listed.len() == count).then_some(listed)
    })
    .await
}

/// RFC 3339 timestamps as the API writes them, soonest first.
fn next_runs(scheduler: &Value) -> Vec<String> {
    let runs: Vec<String> = scheduler["next_runs"]
        .as_array()
        .expect("next_runs")
        .iter()
        .map(|run| run.as_str().expect("a timestamp").to_owned())
        .collect();
    for run in &runs {
        assert!(
            run.len() == 24 && run.as_bytes()[10] == b'T' && run.ends_with('Z'),
            "{run}"
        );
    }
    assert!(runs.is_sorted(), "{runs:?}");
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recurring_jobs_are_listed_with_their_next_runs_paused_and_resumed() {
    let app = TestApp::sqlite_with(|config| {
        recurring_jobs_on(config);
        config.queue.hourly_analytics =
            seawall_app::config::Recurring::parse("every 1s").expect("valid");
        config.queue.daily_report_user = 3;
    })
    .await;
    let backup = schedulers_of(&app, "backup", 1).await.remove(0);
    assert_eq!(backup["id"], "nightly-backup");
    assert_eq!(backup["queue"], "backup");
    assert_eq!(backup["schedule"], r#"cron "0 3 * * *" in UTC"#);
    assert_eq!(backup["paused"], false);
    assert_eq!(backup["payload"], json!({}));
    assert!(backup["last_run"].is_null(), "{backup}");
    let runs = next_runs(&backup);
    assert_eq!(runs.len(), 3, "{backup}");
    assert!(
        runs.iter().all(|run| run.ends_with("T03:00:00.000Z")),
        "{runs:?}"
    );
    let report = schedulers_of(&app, "report", 1).await.remove(0);
    assert_eq!(report["id"], "daily-report");
    assert_eq!(report["payload"], json!({"user_id": 3, "days": 1}));
    assert!(
        next_runs(&report)
            .iter()
            .all(|run| run.ends_with("T06:00:00.000Z")),
        "{report}"
    );
    assert!(
        schedulers_of(&app, "email", 0).await.is_empty(),
        "no recurring email"
    );

    // Every second, the statistics' refresh: its last run names its job.
    let uri = "/api/queue/analytics/schedulers";
    let last = wait::until_some_async("a run of the statistics' refresh", async || {
        let reply = app.admin_get(uri).await;
        let last = reply.json["schedulers"][0]["last_run"].clone();
        (!last.is_null()).then_some(last)
    })
    .await;
    let job = app
        .admin_get(&format!(
            "/api/queue/analytics/jobs/{}",
            last["job_id"].as_str().expect("a job id")
        ))
        .await;
    assert_eq!(job.status, 200, "{}", job.text());
    assert_eq!(job.json["payload"], json!({"days": 1}));
    assert!(
        last["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{last}"
    );
    // The job names the tick it was made for.
    assert_eq!(
        job.json["tick"]["scheduler"],
        "hourly-analytics",
        "{}",
        job.text()
    );
    assert_eq!(job.json["tick"]["at"], last["at"], "{}", job.text());

    // The job enqueued ahead for the next run is named, made for a tick
    // after the last run's.
    let (next_job, next_run) =
        wait::until_some_async("a job enqueued ahead of its tick", async || {
            let reply = app.admin_get(uri).await;
            let scheduler = &reply.json["schedulers"][0];
            let job = scheduler["next_job"].as_str()?.to_owned();
            Some((job, scheduler["next_runs"][0].clone()))
        })
        .await;
    let ahead = app
        .admin_get(&format!("/api/queue/analytics/jobs/{next_job}"))
        .await;
    assert_eq!(ahead.status, 200, "{}", ahead.text());
    assert_eq!(ahead.json["tick"]["scheduler"], "hourly-analytics");
    assert_eq!(ahead.json["tick"]["at"], next_run, "{}", ahead.text());

    // The overview lists every queue's, by queue in the overview's order.
    let overview = app.admin_get("/api/queue").await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    let listed: Vec<(&str, &str)> = overview.json["schedulers"]
        .as_array()
        .expect("schedulers")
        .iter()
        .map(|s| {
            (
                s["queue"].as_str().unwrap_or(""),
                s["id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("report", "daily-report"),
            ("analytics", "hourly-analytics"),
            ("backup", "nightly-backup"),
        ]
    );

    let paused = app
        .admin_send(
            "POST",
            "/api/queue/backup/schedulers/nightly-backup/pause",
            None,
        )
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    assert_eq!(paused.json["id"], "nightly-backup");
    assert_eq!(paused.json["paused"], true);
    assert_eq!(paused.json["next_runs"], json!([]), "no run while paused");
    let listed = schedulers_of(&app, "backup", 1).await.remove(0);
    assert_eq!(listed["paused"], true);
    let resumed = app
        .admin_send(
            "POST",
            "/api/queue/backup/schedulers/nightly-backup/resume",
            None,
        )
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(resumed.json["paused"], false);
    assert_eq!(next_runs(&resumed.json).len(), 3);
    let overview = app.admin_get("/api/queue").await;
    assert_eq!(overview.json["schedulers"][2]["paused"], false);

    // Unknown queues and ids are 404, whatever the id holds.
    app.admin_get("/api/queue/sms/schedulers")
        .await
        .assert_problem(404);
    let long = "x".repeat(300);
    for path in [
        "/api/queue/sms/schedulers/nightly-backup/pause",
        "/api/queue/analytics/schedulers/nightly-backup/pause",
        "/api/queue/backup/schedulers/weekly-backup/resume",
        "/api/queue/backup/schedulers/two%20words/pause",
        "/api/queue/backup/schedulers/%7Bbraced%7D/resume",
        "/api/queue/backup/schedulers/tab%09bed/pause",
        &format!("/api/queue/backup/schedulers/{long}/pause"),
    ] {
        let reply = app.admin_send("POST", path, None).await;
        reply.assert_problem(404);
    }
    let detail = app
        .admin_send(
            "POST",
            "/api/queue/analytics/schedulers/nightly-backup/pause",
            None,
        )
        .await
        .assert_problem(404);
    assert!(detail.contains("no scheduler"), "{detail}");
    app.get("/api/queue/backup/schedulers")
        .await
        .assert_problem(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queues_rate_limits_are_set_read_and_cleared() {
    let app = TestApp::sqlite().await;
    let limits = app.admin_get("/api/queue/email/limits").await;
    assert_eq!(limits.status, 200, "{}", limits.text());
    assert_eq!(
        limits.json,
        json!({"queue": "email", "rate_limit": null, "started_in_window": 0,
               "group_rate_limit": null, "group_concurrency": null, "held_for_ms": null})
    );

    let set = app
        .admin_send(
            "PUT",
            "/api/queue/email/rate-limit",
            Some(&json!({"max": 2, "per_ms": 60_000})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json["rate_limit"], json!({"max": 2, "per_ms": 60_000}));
    let grouped = app
        .admin_send(
            "PUT",
            "/api/queue/email/group-rate-limit",
            Some(&json!({"max": 5, "per_ms": 1_000})),
        )
        .await;
    assert_eq!(grouped.status, 200, "{}", grouped.text());
    assert_eq!(
        grouped.json["group_rate_limit"],
        json!({"max": 5, "per_ms": 1_000})
    );
    assert_eq!(
        grouped.json["rate_limit"],
        json!({"max": 2, "per_ms": 60_000})
    );

    // Three emails: two start within the minute, the third waits.
    for n in 0..3 {
        enqueue(
            &app,
            "email",
            &json!({"user_id": n + 1, "template": "welcome"}),
        )
        .await;
    }
    wait::until_async("two emails to start", async || {
        app.admin_get("/api/queue/email/limits").await.json["started_in_window"] == 2
    })
    .await;
    let overview = app.admin_get("/api/queue").await;
    let email = overview.json["limits"]
        .as_array()
        .expect("limits")
        .iter()
        .find(|limits| limits["queue"] == "email")
        .cloned()
        .expect("the email queue's limits");
    assert_eq!(
        email["rate_limit"],
        json!({"max": 2, "per_ms": 60_000}),
        "{email}"
    );
    let counts = &overview.json["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|row| row["name"] == "email")
        .cloned()
        .expect("the email queue");
    assert_eq!(
        counts["waiting"], 1,
        "the third waits for the window: {counts}"
    );

    // Cleared, the third starts.
    let cleared = app
        .admin_send("DELETE", "/api/queue/email/rate-limit", None)
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    assert!(cleared.json["rate_limit"].is_null(), "{}", cleared.text());
    wait::until_async("the third email to leave the line", async || {
        app.admin_get("/api/queue").await.json["queues"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["name"] == "email").cloned())
            .is_some_and(|row| row["waiting"] == 0)
    })
    .await;
    let cleared = app
        .admin_send("DELETE", "/api/queue/email/group-rate-limit", None)
        .await;
    assert!(
        cleared.json["group_rate_limit"].is_null(),
        "{}",
        cleared.text()
    );

    // Bad limits are problems, and nothing changes.
    for body in [
        json!({"max": 0, "per_ms": 1_000}),
        json!({"max": 1_000_001, "per_ms": 1_000}),
        json!({"max": 1, "per_ms": 0}),
        json!({"max": 1, "per_ms": 31_536_000_001_i64}),
        json!({"max": 1}),
        json!({"max": 1, "per_ms": 1_000, "burst": 2}),
    ] {
        let refused = app
            .admin_send("PUT", "/api/queue/email/rate-limit", Some(&body))
            .await;
        assert_eq!(refused.status, 422, "{body}: {}", refused.text());
        assert_eq!(
            refused.headers["content-type"].to_str().ok(),
            Some("application/problem+json"),
            "{body}"
        );
    }
    assert!(
        app.admin_get("/api/queue/email/limits").await.json["rate_limit"].is_null(),
        "a refused limit changes nothing"
    );
    let unknown = app.admin_get("/api/queue/sms/limits").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
}

/// A route under a queue that is not one answers 404 whatever its body, as
/// the route is what is missing: a bad body does not turn it into a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_queue_is_not_found_whatever_the_body() {
    let app = TestApp::sqlite().await;
    let good = json!({"max": 2, "per_ms": 60_000});
    let bad = json!({"max": 0, "per_ms": "soon"});
    for (method, uri, good) in [
        ("PUT", "/api/queue/sms/rate-limit", &good),
        ("PUT", "/api/queue/sms/group-rate-limit", &good),
        (
            "POST",
            "/api/queue/sms/clean",
            &json!({"state": "completed"}),
        ),
    ] {
        for body in [Some(good), Some(&bad), Some(&json!([1, 2])), None] {
            let reply = app.admin_send(method, uri, body).await;
            let shown = body.map_or("no body".to_owned(), Value::to_string);
            assert_eq!(
                reply.status,
                404,
                "{method} {uri} {shown}: {}",
                reply.text()
            );
        }
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{not json"))
            .expect("request");
        let reply = app.send(request).await;
        assert_eq!(
            reply.status,
            404,
            "{method} {uri} not JSON: {}",
            reply.text()
        );
    }
}

/// The row of `queue` in `/api/queue`.
async fn queue_row(app: &TestApp, queue: &str) -> Value {
    let overview = app.admin_get("/api/queue").await;
    overview.json["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|row| row["name"] == queue)
        .expect("the queue's row")
        .clone()
}

/// A learner's report that waits for the statistics' refresh and a mail
/// (whose failure the report passes over).
pub(crate) fn report_flow() -> Value {
    json!({
        "queue": "report",
        "payload": {"user_id": 2, "days": 7},
        "children": [
            {"queue": "analytics", "payload": {"days": 7}},
            {"queue": "email", "payload": {"user_id": 1, "template": "welcome"},
             "on_failure": "ignore"},
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_runs_its_parent_after_its_children_and_lists_them() {
    let app = TestApp::sqlite().await;
    // The statistics' refresh waits while its queue is paused: the report
    // waits for it.
    let paused = app
        .admin_send("POST", "/api/queue/analytics/pause", None)
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let flow = report_flow();
    let reply = app
        .admin_send("POST", "/api/queue/flows", Some(&flow))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json["queue"], "report");
    let parent = reply.json["id"].as_str().expect("an id").to_owned();
    let children = reply.json["children"].as_array().expect("children").clone();
    assert_eq!(
        children
            .iter()
            .map(|child| child["queue"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["analytics", "email"]
    );
    let email = children[1]["id"].as_str().expect("an id");
    finished(&app, "email", email).await;

    let uri = format!("/api/queue/report/jobs/{parent}");
    let waiting = app.admin_get(&uri).await;
    assert_eq!(
        waiting.json["state"],
        "waiting-children",
        "{}",
        waiting.text()
    );
    assert_eq!(queue_row(&app, "report").await["waiting_children"], 1);
    let listed = app.admin_get(&format!("{uri}/children")).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let outcomes: Vec<(&str, &str)> = listed.json["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|child| {
            (
                child["queue"].as_str().unwrap_or(""),
                child["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(outcomes, [("analytics", "pending"), ("email", "completed")]);

    let resumed = app
        .admin_send("POST", "/api/queue/analytics/resume", None)
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let report = finished(&app, "report", &parent).await;
    assert_eq!(report["state"], "completed", "{report}");
    let listed = app.admin_get(&format!("{uri}/children")).await;
    assert!(
        listed.json["children"]
            .as_array()
            .expect("children")
            .iter()
            .all(|child| child["outcome"] == "completed"),
        "{}",
        listed.text()
    );
    assert_eq!(queue_row(&app, "report").await["waiting_children"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_with_one_bad_job_is_refused_whole() {
    // A body large enough for more jobs than a flow holds.
    let app = TestApp::sqlite_with(|config| config.server.max_body_bytes = 1 << 20).await;
    let before = (
        jobs_in(&app, "report").await,
        jobs_in(&app, "analytics").await,
    );
    for (flow, status, field) in [
        (
            json!({"queue": "report", "payload": {"user_id": 2, "days": 7},
                   "children": [{"queue": "analytics", "payload": {"days": 7}},
                                {"queue": "analytics", "payload": {"days": 0}}]}),
            422,
            "children[1].payload.days",
        ),
        (
            json!({"queue": "report", "payload": {"user_id": 2, "days": 7},
                   "children": [{"queue": "sms", "payload": {}}]}),
            422,
            "children[0].queue",
        ),
        (
            json!({"queue": "report", "payload": {"user_id": 2, "days": 7},
                   "on_failure": "ignore"}),
            422,
            "on_failure",
        ),
        (
            json!({"queue": "report", "payload": [2, 7]}),
            422,
            "payload",
        ),
    ] {
        let reply = app
            .admin_send("POST", "/api/queue/flows", Some(&flow))
            .await;
        assert_eq!(reply.status, status, "{flow}: {}", reply.text());
        assert_eq!(
            reply.json["invalid_params"][0]["name"],
            field,
            "{flow}: {}",
            reply.text()
        );
    }
    // More jobs than a flow holds.
    let many: Vec<Value> = (0..1_000)
        .map(|_| json!({"queue": "analytics", "payload": {"days": 1}}))
        .collect();
    let too_many = json!({"queue": "report", "payload": {"user_id": 2, "days": 7},
                          "children": many});
    let reply = app
        .admin_send("POST", "/api/queue/flows", Some(&too_many))
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    // Not a tree of jobs at all.
    let reply = app
        .admin_send(
            "POST",
            "/api/queue/flows",
            Some(&json!({"queue": "report"})),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert_eq!(
        (
            jobs_in(&app, "report").await,
            jobs_in(&app, "analytics").await
        ),
        before,
        "nothing was enqueued"
    );
    let missing = app
        .admin_get("/api/queue/report/jobs/31556926000000-9f86d081884c7d65/children")
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_is_debounced_or_kept_unique_as_asked() {
    let app = TestApp::sqlite().await;
    // A debounce: the second enqueue replaces the waiting job's payload.
    let debounce = "/api/queue/analytics?dedupe=debounce&key=refresh&debounce_ms=600000";
    let first = app
        .admin_send("POST", debounce, Some(&json!({"days": 1})))
        .await;
    assert_eq!(first.status, 202, "{}", first.text());
    let second = app
        .admin_send("POST", debounce, Some(&json!({"days": 2})))
        .await;
    assert_eq!(second.status, 202, "{}", second.text());
    assert_eq!(first.json["id"], second.json["id"]);
    let job = app
        .admin_get(&format!(
            "/api/queue/analytics/jobs/{}",
            first.json["id"].as_str().expect("an id")
        ))
        .await;
    assert_eq!(job.json["state"], "delayed", "{}", job.text());
    assert_eq!(job.json["payload"], json!({"days": 2}));

    // Unique until started: the email queue is paused, so the first job
    // waits and the second enqueue answers it.
    let paused = app.admin_send("POST", "/api/queue/email/pause", None).await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    for mode in ["until-started", "until-completed"] {
        let uri = format!("/api/queue/email?dedupe={mode}&key=welcome-{mode}");
        let payload = json!({"user_id": 1, "template": "welcome"});
        let first = app.admin_send("POST", &uri, Some(&payload)).await;
        let second = app.admin_send("POST", &uri, Some(&payload)).await;
        assert_eq!(
            (first.status.as_u16(), second.status.as_u16()),
            (202, 202),
            "{}",
            second.text()
        );
        assert_eq!(first.json["id"], second.json["id"], "{mode}");
    }
    assert_eq!(queue_row(&app, "email").await["waiting"], 2);

    // Malformed values are 400; values that do not go together, 422.
    let email = "/api/queue/email";
    for (query, idempotency, status, parameter) in [
        ("key=k", false, 422, "key"),
        ("debounce_ms=5", false, 422, "debounce_ms"),
        ("dedupe=until-started", false, 422, "key"),
        ("dedupe=debounce&key=k", false, 422, "debounce_ms"),
        (
            "dedupe=until-started&key=k&debounce_ms=5",
            false,
            422,
            "debounce_ms",
        ),
        ("dedupe=until-started&key=k", true, 422, "dedupe"),
        (
            "dedupe=debounce&key=k&debounce_ms=0",
            false,
            400,
            "debounce_ms",
        ),
        ("dedupe=sometimes&key=k", false, 400, "dedupe"),
        ("dedupe=until-started&key=%20", false, 400, "key"),
    ] {
        let uri = format!("{email}?{query}");
        let mut request = Request::post(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        if idempotency {
            request = request.header("idempotency-key", "once");
        }
        let reply = app
            .send(
                request
                    .body(Body::from(
                        json!({"user_id": 1, "template": "welcome"}).to_string(),
                    ))
                    .expect("request"),
            )
            .await;
        assert_eq!(reply.status.as_u16(), status, "{uri}: {}", reply.text());
        assert_eq!(
            reply.json["invalid_params"][0]["name"],
            parameter,
            "{uri}: {}",
            reply.text()
        );
    }
    assert_eq!(queue_row(&app, "email").await["waiting"], 2, "nothing more");
}
