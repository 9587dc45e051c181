//! A rolling upgrade: processes of different releases on one Redis. An
//! acknowledgement the queue refuses (a job whose id this release does not
//! read) is dropped rather than sent again for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use seawall_queue::{Job, JobError, JobOptions, JobState, Queues, Settings};
use seawall_testkit::{RedisServer, wait};

use crate::support::{builder, unique_prefix};

/// An acknowledgement the queue's script refuses (an id of a form this
/// release does not read, as a later release might give) is dropped after
/// a bounded number of calls, and counted; the acknowledgements that rode
/// with it go through, the worker goes on working, and the refused job
/// comes back when its lease runs out (here, with no stall allowed, to the
/// dead set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_acknowledgement_is_dropped_and_the_others_go_through() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let mut conn = redis.connect().expect("connects");
    let settings = Settings {
        max_stalls: 0,
        ..Settings::default()
    };
    let queues = Queues::redis(builder(&redis.url()))
        .prefix(&prefix)
        .settings(settings)
        .connect()
        .await
        .expect("connects");
    let ids = queues
        .enqueue_many("email", (0..8).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    // The first job in line gets an id no script of this release takes.
    let unreadable = format!("{}-1", ids[0]);
    let base = format!("{prefix}:{{email}}:");
    conn.cmd(&[
        "RENAME",
        &format!("{base}j:{}", ids[0]),
        &format!("{base}j:{unreadable}"),
    ])
    .expect("RENAME");
    conn.cmd(&["LSET", &format!("{base}g:"), "0", &unreadable])
        .expect("LSET");

    // Every job ends at once, so their acknowledgements share calls.
    let started = Arc::new(AtomicU32::new(0));
    let all_started = Arc::new(tokio::sync::Notify::new());
    let (count, go) = (Arc::clone(&started), Arc::clone(&all_started));
    let worker = queues
        .worker("email")
        .and_then(|worker| worker.concurrency(8))
        .and_then(|worker| worker.lease(Duration::from_millis(1_500)))
        .expect("valid")
        .start(move |job: Job<u32>| {
            let (count, go) = (Arc::clone(&count), Arc::clone(&go));
            async move {
                let waiting = go.notified();
                if job.run() == 1 && count.fetch_add(1, Ordering::SeqCst) + 1 < 8 {
                    waiting.await;
                } else {
                    go.notify_waiters();
                }
                Ok::<_, JobError>(())
            }
        });
    wait::until_async("the other seven jobs to complete", async || {
        queues.counts("email").await.expect("counts").completed == 7
    })
    .await;
    wait::until_async(
        "the refused job to come back and be dead-lettered",
        async || queues.counts("email").await.expect("counts").dead == 1,
    )
    .await;
    let dead = queues
        .jobs("email", JobState::Dead, 10)
        .await
        .expect("lists");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id.as_str(), unreadable);
    let stats = worker.stats();
    assert_eq!((stats.completed, stats.refused_acks), (7, 1), "{stats:?}");

    // Nothing is sent again for ever: the worker is idle, blocked on Redis.
    let fetches = worker.stats().fetches;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let more = worker.stats().fetches - fetches;
    assert!(more <= 2, "{more} fetch calls in a second of idling");
    // And it goes on working.
    let next = queues
        .enqueue("email", &8_u32, &JobOptions::new())
        .await
        .expect("enqueues");
    wait::until_async("a later job to complete", async || {
        queues
            .job("email", &next)
            .await
            .expect("reads")
            .is_some_and(|job| job.state == JobState::Completed)
    })
    .await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.completed, stats.refused_acks), (8, 1), "{stats:?}");
}
