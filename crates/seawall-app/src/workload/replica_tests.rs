//! The cache is never filled from the past: with a replica whose replay is
//! paused (within the lag limits, so it still takes reads), a review
//! written through one instance and the statistics then read through
//! another, whose fill could read the replica, are current, and so is what
//! the fill left in the cache for every instance.

use std::time::Duration;

use seawall_testkit::{Postgres, RedisServer, wait};

use super::{CompleteReview, Workload};
use crate::cache::ApiCache;
use crate::config::Config;
use crate::setup::{self, QueueHandle};

/// One API instance's workload over the shared primary, replica and Redis.
async fn instance(config: &Config) -> Workload {
    let monitor = setup::monitor(config).expect("a monitor");
    let db = setup::database(config, &monitor)
        .await
        .expect("the database");
    let redis = setup::redis(config).await.expect("redis");
    let cache = ApiCache::build(&config.cache, redis.as_ref(), &monitor).expect("the cache");
    assert!(cache.is_some(), "the cache is on");
    let queues = QueueHandle::connect(config).expect("queues");
    Workload::new(db, cache, queues, config)
}

async fn reviews_in_stats(workload: &Workload, user: i64) -> i64 {
    let stats = workload.stats(user).await.expect("statistics");
    serde_json::to_value(&stats).expect("JSON")["totals"]["reviews"]
        .as_i64()
        .expect("a count")
}

fn replica_reads(workload: &Workload) -> u64 {
    workload.db().replicas().expect("replicas").states()[0].reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_through_a_paused_replica_caches_nothing_stale() {
    let primary = Postgres::start().expect("the primary starts");
    let replica = Postgres::builder()
        .replica_of(&primary)
        .start()
        .expect("the replica starts");
    let redis = RedisServer::start().expect("redis starts");
    let mut config = Config::default();
    config.database.url = primary.url();
    config.database.max_connections = Some(4);
    config.database.replicas = vec![replica.url()];
    // Paused for the whole test, the replica stays within the limits: it
    // still takes reads that need not be current.
    config.database.replica_max_lag = Duration::from_secs(3_600);
    config.database.replica_wait = Duration::from_secs(1);
    config.redis.url = Some(redis.url());
    config.demo.users = 4;
    config.demo.contents = 20;
    config.demo.schedules_per_user = 5;
    config.demo.history_per_user = 10;
    let writer = instance(&config).await;
    crate::seed::ensure(writer.db(), &config.demo, crate::time::now_ms())
        .await
        .expect("seeds");
    let reader = instance(&config).await;
    replica
        .caught_up_with(&primary)
        .expect("the replica catches up");
    wait::until_async("the replica in rotation", async || {
        reader.db().replicas().expect("replicas").states()[0].in_rotation
    })
    .await;
    // Not vacuous: the reader's fills do read the replica while it keeps up.
    let before = reviews_in_stats(&reader, 2).await;
    assert!(before > 0);
    assert!(replica_reads(&reader) > 0, "a fill read the replica");

    replica.pause_replay().expect("pauses");
    let (content,): (i64,) =
        sqlx::query_as("SELECT content_id FROM review_schedules WHERE user_id = 1 LIMIT 1")
            .fetch_one(&writer.db().pool())
            .await
            .expect("a scheduled content");
    let (written,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM review_history WHERE user_id = 1")
            .fetch_one(&writer.db().pool())
            .await
            .expect("a count");
    let review: CompleteReview = serde_json::from_value(serde_json::json!({
        "user_id": 1, "content_id": content, "rating": 4
    }))
    .expect("a review");
    writer.complete(review).await.expect("completes");
    // The reader's fill begins after the write returned: it must see it,
    // although the replica it may read has not replayed it.
    assert_eq!(reviews_in_stats(&reader, 1).await, written + 1);
    // What that fill cached is current too, here and on the writer.
    assert_eq!(reviews_in_stats(&reader, 1).await, written + 1);
    assert_eq!(reviews_in_stats(&writer, 1).await, written + 1);
    assert!(
        replica
            .psql("SELECT COUNT(*) FROM review_history WHERE user_id = 1")
            .expect("counts")
            .parse::<i64>()
            .expect("a number")
            == written,
        "the replica is still behind: the check above was not vacuous"
    );
    replica.resume_replay().expect("resumes");
}

/// A review reads the schedule it moves on a replica where it can, and a
/// replica behind the primary never makes it move a schedule from the
/// past: the second of two reviews of one schedule, read on a replica
/// paused before the first, still moves the schedule the first left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_read_on_a_lagging_replica_moves_the_schedule_as_the_primary_has_it() {
    let primary = Postgres::start().expect("the primary starts");
    let replica = Postgres::builder()
        .replica_of(&primary)
        .start()
        .expect("the replica starts");
    let mut config = Config::default();
    config.database.url = primary.url();
    config.database.max_connections = Some(4);
    config.database.replicas = vec![replica.url()];
    config.database.replica_max_lag = Duration::from_secs(3_600);
    config.cache.enabled = false;
    config.demo.users = 2;
    config.demo.contents = 10;
    config.demo.schedules_per_user = 3;
    config.demo.history_per_user = 2;
    let monitor = setup::monitor(&config).expect("a monitor");
    let db = setup::database(&config, &monitor)
        .await
        .expect("the database");
    crate::seed::ensure(&db, &config.demo, crate::time::now_ms())
        .await
        .expect("seeds");
    let workload = Workload::new(
        db,
        None,
        QueueHandle::connect(&config).expect("queues"),
        &config,
    );
    replica
        .caught_up_with(&primary)
        .expect("the replica catches up");
    wait::until_async("the replica in rotation", async || {
        workload.db().replicas().expect("replicas").states()[0].in_rotation
    })
    .await;
    let schedule = |content: i64| {
        let pool = workload.db().pool();
        async move {
            let (repetitions, reviews): (i64, i64) = sqlx::query_as(
                "SELECT repetitions, (SELECT COUNT(*) FROM review_history \
                 WHERE user_id = 1 AND content_id = $1) \
                 FROM review_schedules WHERE user_id = 1 AND content_id = $1",
            )
            .bind(content)
            .fetch_one(&pool)
            .await
            .expect("the schedule");
            (repetitions, reviews)
        }
    };
    let (content,): (i64,) =
        sqlx::query_as("SELECT content_id FROM review_schedules WHERE user_id = 1 LIMIT 1")
            .fetch_one(&workload.db().pool())
            .await
            .expect("a scheduled content");
    let review = || -> CompleteReview {
        serde_json::from_value(serde_json::json!({
            "user_id": 1, "content_id": content, "rating": 5
        }))
        .expect("a review")
    };
    let (repetitions, reviews) = schedule(content).await;

    replica.pause_replay().expect("pauses");
    let reads = replica_reads(&workload);
    workload.complete(review()).await.expect("the first review");
    workload
        .complete(review())
        .await
        .expect("the second review");
    // Both reviews landed, each on the schedule the one before left: two
    // passed reviews in a row count two repetitions.
    assert_eq!(schedule(content).await, (repetitions + 2, reviews + 2));
    // Not vacuous: the reviews read the replica, and the replica still
    // has the schedule as it was before both.
    assert!(
        replica_reads(&workload) >= reads + 2,
        "the reviews read the replica"
    );
    assert_eq!(
        replica
            .psql(&format!(
                "SELECT repetitions FROM review_schedules WHERE user_id = 1 AND content_id = {content}"
            ))
            .expect("reads")
            .parse::<i64>()
            .expect("a number"),
        repetitions,
        "the replica is behind both reviews"
    );
    replica.resume_replay().expect("resumes");
}
