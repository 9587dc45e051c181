//! A rolling upgrade: processes of this release beside those of the one
//! before it, on one Redis. Enqueues write job ids the previous release
//! reads while one of its workers is alive; this release's workers run
//! jobs of either form; and an acknowledgement the queue refuses is
//! dropped rather than sent again for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use seawall_queue::{
    Error, Flow, Job, JobError, JobId, JobOptions, JobState, OLDEST_WIRE_VERSION, Queues, Settings,
    WIRE_VERSION,
};
use seawall_testkit::{Conn, RedisServer, wait};
use serde::Serialize;

use crate::support::{builder, connect, unique_prefix};

/// The presence script, which the release before wire versions ran as it
/// is: its `announce` and `withdraw` are unchanged since.
const PROCESSES_LUA: &str = include_str!("../../src/redis/processes.lua");

/// A process report as the release before wire versions wrote it: its
/// `ProcessReport`, serialized with serde_json, had these fields and no
/// `wire_version`.
#[derive(Serialize)]
struct PreviousReport {
    id: String,
    host: String,
    pid: u32,
    started_ms: u64,
    ttl_ms: u64,
    completed_per_second: f64,
    queues: Vec<PreviousActivity>,
}

#[derive(Serialize)]
struct PreviousActivity {
    queue: String,
    concurrency: usize,
    running: usize,
    completed: u64,
    failed: u64,
}

/// Announces a worker process of the previous release under `prefix`, as
/// its `Queues::announce` did: the report's JSON through `processes.lua`.
fn announce_previous_release(conn: &mut Conn, prefix: &str, id: &str, ttl: Duration) {
    let report = PreviousReport {
        id: id.to_owned(),
        host: "old-host".to_owned(),
        pid: 4242,
        started_ms: 1,
        ttl_ms: u64::try_from(ttl.as_millis()).expect("a short ttl"),
        completed_per_second: 0.0,
        queues: vec![PreviousActivity {
            queue: "email".to_owned(),
            concurrency: 8,
            running: 0,
            completed: 0,
            failed: 0,
        }],
    };
    let json = serde_json::to_string(&report).expect("encodes");
    let reports = format!("{{{prefix}}}:processes");
    let times = format!("{reports}:at");
    conn.cmd(&[
        "EVAL",
        PROCESSES_LUA,
        "2",
        &reports,
        &times,
        "announce",
        id,
        &json,
        "600000",
    ])
    .expect("announces");
}

/// The job-id check of the release before wire versions, as its
/// `prelude.lua` had it (`shaped(index, '^%d+$', 24, 'a job id')`): digits
/// alone, at most 24 bytes. Its renew, acknowledgement, failure and
/// progress scripts refused any other id.
fn previous_release_reads(id: &JobId) -> bool {
    let id = id.as_str();
    !id.is_empty() && id.len() <= 24 && id.bytes().all(|byte| byte.is_ascii_digit())
}

/// Gives `first`, the first waiting job of `email` under `prefix`, an id no
/// script of this release takes (as a later release might give); answers
/// that id.
fn make_unreadable(conn: &mut Conn, prefix: &str, first: &JobId) -> String {
    let unreadable = format!("{first}-1");
    let base = format!("{prefix}:{{email}}:");
    conn.cmd(&[
        "RENAME",
        &format!("{base}j:{first}"),
        &format!("{base}j:{unreadable}"),
    ])
    .expect("RENAME");
    conn.cmd(&["LSET", &format!("{base}g:"), "0", &unreadable])
        .expect("LSET");
    unreadable
}

/// Queues that heed a silent worker of the previous release for `grace`
/// past its report's ttl.
async fn connect_with_grace(url: &str, prefix: &str, grace: Duration) -> Queues {
    Queues::redis(builder(url))
        .prefix(prefix)
        .silent_reader_grace(grace)
        .connect()
        .await
        .expect("connects")
}

async fn enqueue(queues: &Queues) -> JobId {
    queues
        .enqueue("email", &"hello", &JobOptions::new())
        .await
        .expect("enqueues")
}

/// While a worker of the previous release is alive, enqueues give ids of
/// digits alone, which its id check takes; once it has withdrawn, or has
/// stopped announcing itself for longer than its report's ttl and the
/// grace past it, they give ids with an epoch again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_stay_digits_alone_while_a_worker_of_the_previous_release_is_alive() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let mut conn = redis.connect().expect("connects");
    let producer = connect(&redis.url(), &prefix).await;

    // A fresh deployment, no process of the previous release about.
    let fresh = enqueue(&producer).await;
    assert!(!previous_release_reads(&fresh), "{fresh}");
    assert!(fresh.as_str().contains('-'), "{fresh}");

    announce_previous_release(&mut conn, &prefix, "old:1", Duration::from_secs(60));
    let seen = producer.processes().await.expect("lists");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].alive);
    assert_eq!(seen[0].report.wire_version, 1, "{seen:?}");
    // A producer that starts now never gives the old worker an id it
    // refuses; one running from before heeds it within its view's age.
    let started_now = connect(&redis.url(), &prefix).await;
    for _ in 0..20 {
        let id = enqueue(&started_now).await;
        assert!(previous_release_reads(&id), "{id}");
    }
    wait::until_async(
        "the running producer to give ids of digits alone",
        async || previous_release_reads(&enqueue(&producer).await),
    )
    .await;
    let ids = producer
        .enqueue_many("email", (0..50).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    assert!(ids.iter().all(previous_release_reads), "{ids:?}");

    // The old worker stops cleanly: it withdraws.
    producer.withdraw("old:1").await.expect("withdraws");
    wait::until_async("ids with an epoch after the withdrawal", async || {
        enqueue(&producer).await.as_str().contains('-')
    })
    .await;

    // Another old worker goes silent without withdrawing: once its report's
    // ttl has passed it is no longer alive, but it may only be frozen or
    // cut off, and would come back to ids it refuses; it is heeded for the
    // grace past its ttl (30 s by default), and no longer after.
    announce_previous_release(&mut conn, &prefix, "old:2", Duration::from_millis(500));
    let late = connect_with_grace(&redis.url(), &prefix, Duration::from_secs(1)).await;
    let id = enqueue(&late).await;
    assert!(previous_release_reads(&id), "{id}");
    wait::until_async("the old worker to be silent past its ttl", async || {
        late.processes()
            .await
            .expect("lists")
            .iter()
            .all(|process| !process.alive)
    })
    .await;
    let within_grace = connect(&redis.url(), &prefix).await;
    let id = enqueue(&within_grace).await;
    assert!(
        previous_release_reads(&id),
        "a silent old worker is heeded for the grace past its ttl: {id}"
    );
    wait::until_async(
        "ids with an epoch once the old worker is silent past its grace",
        async || enqueue(&late).await.as_str().contains('-'),
    )
    .await;
    // A process of this release does not hold ids back.
    let report = seawall_queue::ProcessReport {
        id: "new:1".to_owned(),
        host: "new-host".to_owned(),
        pid: 7,
        started_ms: 1,
        ttl_ms: 60_000,
        completed_per_second: 0.0,
        queues: Vec::new(),
        wire_version: WIRE_VERSION,
    };
    late.announce(&report).await.expect("announces");
    let another = connect_with_grace(&redis.url(), &prefix, Duration::from_secs(1)).await;
    assert!(enqueue(&another).await.as_str().contains('-'));
}

/// `write_wire` holds enqueues to an older form for deployments whose old
/// processes do not announce themselves, and takes only a version this
/// release writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_wire_holds_ids_to_the_previous_form() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let held = Queues::redis(builder(&redis.url()))
        .prefix(&prefix)
        .write_wire(OLDEST_WIRE_VERSION)
        .connect()
        .await
        .expect("connects");
    for _ in 0..5 {
        let id = enqueue(&held).await;
        assert!(previous_release_reads(&id), "{id}");
    }
    for version in [0, WIRE_VERSION + 1] {
        let refused = Queues::redis(builder(&redis.url()))
            .prefix(&prefix)
            .write_wire(version)
            .connect()
            .await;
        assert!(
            matches!(&refused, Err(Error::InvalidSetting(why)) if why.contains("wire version")),
            "{version}: {refused:?}"
        );
    }
}

/// A job of each id form on one queue: each is fetched, keeps its lease
/// through renewals, reports progress, fails once, and is acknowledged on
/// its second run by a worker of this release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_jobs_of_both_id_forms() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let old_form = Queues::redis(builder(&redis.url()))
        .prefix(&prefix)
        .write_wire(1)
        .connect()
        .await
        .expect("connects");
    let queues = connect(&redis.url(), &prefix).await;
    let options = JobOptions::new()
        .attempts(2)
        .and_then(|options| options.backoff(seawall_queue::Backoff::fixed(Duration::ZERO)))
        .expect("valid");
    let digits = old_form
        .enqueue("email", &"digits", &options)
        .await
        .expect("enqueues");
    let epoch = queues
        .enqueue("email", &"epoch", &options)
        .await
        .expect("enqueues");
    assert!(previous_release_reads(&digits), "{digits}");
    assert!(!previous_release_reads(&epoch), "{epoch}");

    let lease = Duration::from_millis(1_500);
    let worker = queues
        .worker("email")
        .and_then(|worker| worker.concurrency(2))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(move |job: Job<String>| async move {
            if job.run() == 1 {
                // Longer than the lease: only renewals keep the job.
                tokio::time::sleep(lease * 2).await;
                assert!(job.progress(50, "half").await, "progress of {}", job.id());
                return Err(JobError::new("first run fails"));
            }
            Ok(())
        });
    wait::until_async("both jobs to complete", async || {
        queues.counts("email").await.expect("counts").completed == 2
    })
    .await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.completed, stats.failed), (2, 2), "{stats:?}");
    assert_eq!((stats.lost_leases, stats.discarded), (0, 0), "{stats:?}");
    for id in [&digits, &epoch] {
        let job = queues.job("email", id).await.expect("reads").expect("kept");
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert_eq!((job.runs, job.failures, job.stalls), (2, 1, 0), "{job:?}");
        assert_eq!(
            job.progress.as_ref().map(|progress| progress.percent),
            Some(50)
        );
    }
}

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
    let unreadable = make_unreadable(&mut conn, &prefix, &ids[0]);

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

/// A lease renewal the queue's script refuses (one job of the call has an
/// id of a form this release does not read) is sent again in halves: the
/// other jobs' leases are renewed and their runs complete without a stall,
/// and only the unreadable job's run is cancelled as a lost lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_holds_back_only_its_own_job() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let mut conn = redis.connect().expect("connects");
    let queues = Queues::redis(builder(&redis.url()))
        .prefix(&prefix)
        .connect()
        .await
        .expect("connects");
    let ids = queues
        .enqueue_many("email", (0..4).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    make_unreadable(&mut conn, &prefix, &ids[0]);
    // Each run outlasts its lease three times over: only renewals keep it.
    let lease = Duration::from_millis(600);
    let worker = queues
        .worker("email")
        .and_then(|worker| worker.concurrency(4))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(move |job: Job<u32>| async move {
            tokio::select! {
                () = tokio::time::sleep(3 * lease) => Ok::<_, JobError>(()),
                () = job.cancellation().cancelled() => Err(JobError::new("cancelled")),
            }
        });
    wait::until_async("the three readable jobs to complete", async || {
        queues.counts("email").await.expect("counts").completed == 3
    })
    .await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    for id in &ids[1..] {
        let job = queues.job("email", id).await.expect("reads").expect("kept");
        assert_eq!((job.runs, job.stalls), (1, 0), "job {id}: {job:?}");
    }
    // The unreadable job's runs, each taken again once its lease ran out.
    assert!(stats.lost_leases >= 1, "{stats:?}");
}

/// A flow is refused, and nothing of it written, while a worker of the
/// release before flows may run (an announced one is alive, or
/// `write_wire` holds enqueues to its form): that worker would complete a
/// child without telling its parent, which would wait for ever. Plain jobs
/// are taken meanwhile; flows again once the old worker is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_waits_for_the_last_worker_of_the_previous_release() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let mut conn = redis.connect().expect("connects");
    let flow = || {
        Flow::new("email", &"parent", &JobOptions::new())
            .expect("valid")
            .child(Flow::new("email", &"child", &JobOptions::new()).expect("valid"))
    };

    announce_previous_release(&mut conn, &prefix, "old:1", Duration::from_secs(60));
    let producer = connect(&redis.url(), &prefix).await;
    let refused = producer.enqueue_flow(flow()).await;
    assert!(
        matches!(refused, Err(Error::OlderWorkers { reads: 1 })),
        "{refused:?}"
    );
    assert!(refused.expect_err("refused").queued_nothing());
    let counts = producer.counts("email").await.expect("counts");
    assert_eq!(
        (counts.waiting, counts.waiting_children),
        (0, 0),
        "nothing of the flow was written: {counts:?}"
    );
    let plain = enqueue(&producer).await;
    assert!(previous_release_reads(&plain), "{plain}");

    // `write_wire(1)` says the same for processes that announce nothing.
    let held = Queues::redis(builder(&redis.url()))
        .prefix(unique_prefix())
        .write_wire(OLDEST_WIRE_VERSION)
        .connect()
        .await
        .expect("connects");
    let refused = held.enqueue_flow(flow()).await;
    assert!(
        matches!(refused, Err(Error::OlderWorkers { .. })),
        "{refused:?}"
    );

    producer.withdraw("old:1").await.expect("withdraws");
    wait::until_async("flows taken once the old worker withdrew", async || {
        producer.enqueue_flow(flow()).await.is_ok()
    })
    .await;
}
