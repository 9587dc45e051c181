//! The `seawall-worker` binary as an operator runs it, beside an API on the
//! same database and Redis: it takes the jobs the API enqueues, serves its
//! probes and metrics, drains on SIGTERM and exits with status 0.

use seawall_app::Config;
use seawall_testkit::RedisServer;
use serde_json::{Value, json};

use crate::support::{ServedApi, TOKEN, Worker, shared_config, until, worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_what_the_api_enqueues_and_drains_on_sigterm() {
    let redis = RedisServer::start().expect("redis-server starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = shared_config(dir.path(), &redis.url());
    // The API first: it writes the demo dataset the worker's jobs read.
    let served = ServedApi::start(&config).await;
    let api = served.base.clone();

    let worker = Worker::start(worker(&config));
    let client = reqwest::Client::new();
    assert_eq!(
        until(&client, &worker.url("/livez"), |status, _| status == 200).await,
        r#"{"status":"pass"}"#
    );
    until(&client, &worker.url("/readyz"), |status, _| status == 200).await;

    let overview = until(&client, &format!("{api}/api/queue"), |status, _| {
        status == 200
    })
    .await;
    let overview: Value = serde_json::from_str(&overview).expect("JSON");
    assert_eq!(overview["processors"], "seawall-worker");
    let enqueued = client
        .post(format!("{api}/api/queue/email"))
        .bearer_auth(TOKEN)
        .json(&json!({"user_id": 2, "template": "reminder"}))
        .send()
        .await
        .expect("enqueues");
    assert_eq!(enqueued.status().as_u16(), 202);
    let id = enqueued.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let job = until(
        &client,
        &format!("{api}/api/queue/email/jobs/{id}"),
        |_, body| body.contains(r#""state":"completed""#),
    )
    .await;
    assert!(job.contains("queued for"), "{job}");
    let metrics = until(&client, &worker.url("/metrics"), |_, body| {
        body.contains(r#"queue_jobs_total{queue="email",outcome="completed"} 1"#)
    })
    .await;
    assert!(metrics.contains("db_pool_connections"), "{metrics}");
    for gauge in [
        r#"queue_paused{queue="email"} 0"#,
        r#"queue_oldest_waiting_age_seconds{queue="email"} "#,
    ] {
        assert!(metrics.contains(gauge), "{gauge} in {metrics}");
    }

    let (status, log) = worker.terminate();
    assert_eq!(status, 0, "{}", log.join("\n"));
    assert!(
        log.iter().any(|line| line.contains("draining")),
        "{}",
        log.join("\n")
    );
    served.stop().await;
}

#[test]
fn without_a_redis_url_the_worker_exits_two_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    config.queue.files = dir.path().join("files");
    let output = worker(&config).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("seawall-worker takes jobs from Redis"),
        "{stderr}"
    );
}
