//! Deduplication keys on every backend: unique until the job starts, until
//! it completes, and debounce (the idempotency window has its own tests in
//! the conformance suite).

use std::sync::Arc;
use std::time::Duration;

use seawall_queue::{Cancelled, Error, Job, JobError, JobOptions, Queues};
use seawall_testkit::{RedisServer, wait};
use tokio::sync::Semaphore;

use crate::on_every_backend;
use crate::support::{Backend, connect, unique_prefix};

/// A worker whose handler runs until `gate` gives it a permit, recording
/// each payload.
fn gated(queues: &Queues, queue: &str, gate: &Arc<Semaphore>) -> seawall_queue::Worker {
    let gate = Arc::clone(gate);
    queues
        .worker(queue)
        .expect("a valid name")
        .start(move |_job: Job<String>| {
            let gate = Arc::clone(&gate);
            async move {
                gate.acquire().await.expect("open").forget();
                Ok::<_, JobError>(())
            }
        })
}

async fn active(queues: &Queues, queue: &str, jobs: u64) {
    wait::until_async(format!("{jobs} active in {queue}"), async || {
        queues.counts(queue).await.expect("counts").active == jobs
    })
    .await;
}

/// Runs a worker whose handler fails for good until `queue` holds one dead
/// job.
async fn run_one_to_death(queues: &Queues, queue: &str) {
    let worker = queues
        .worker(queue)
        .expect("a valid name")
        .start(|_job: Job<String>| async { Err::<(), _>(JobError::permanent("no")) });
    wait::until_async("the job to die", async || {
        queues.counts(queue).await.expect("counts").dead == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn completed(queues: &Queues, queue: &str, jobs: u64) {
    wait::until_async(format!("{jobs} completed in {queue}"), async || {
        queues.counts(queue).await.expect("counts").completed == jobs
    })
    .await;
}

/// Until started: a second enqueue answers the waiting job, whatever its
/// payload; once the job runs, the key is free.
async fn a_unique_key_holds_until_its_job_starts(backend: &Backend) {
    let queues = backend.queues().await;
    let options = JobOptions::new()
        .unique_until_started("sync:7")
        .expect("valid");
    let first = queues
        .enqueue("sync", "a", &options)
        .await
        .expect("enqueues");
    let again = queues
        .enqueue("sync", "b", &options)
        .await
        .expect("enqueues");
    assert_eq!(again, first);
    assert_eq!(queues.counts("sync").await.expect("counts").waiting, 1);
    let job = queues
        .job("sync", &first)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(
        job.payload_as::<String>().expect("decodes"),
        "a",
        "the first payload stays"
    );

    let gate = Arc::new(Semaphore::new(0));
    let worker = gated(&queues, "sync", &gate);
    active(&queues, "sync", 1).await;
    let after_start = queues
        .enqueue("sync", "c", &options)
        .await
        .expect("enqueues");
    assert_ne!(after_start, first, "a started job frees its key");
    gate.add_permits(2);
    completed(&queues, "sync", 2).await;
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Until completed: the key holds while the job runs, and frees once it
/// completed, died or was cancelled.
async fn a_unique_key_holds_until_its_job_completes(backend: &Backend) {
    let queues = backend.queues().await;
    let options = JobOptions::new()
        .unique_until_completed("report:7")
        .expect("valid")
        .attempts(1)
        .expect("valid");
    let first = queues
        .enqueue("report", "a", &options)
        .await
        .expect("enqueues");
    let gate = Arc::new(Semaphore::new(0));
    let worker = gated(&queues, "report", &gate);
    active(&queues, "report", 1).await;
    let while_running = queues
        .enqueue("report", "b", &options)
        .await
        .expect("enqueues");
    assert_eq!(while_running, first, "a running job holds its key");
    gate.add_permits(1);
    completed(&queues, "report", 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
    let after = queues
        .enqueue("report", "c", &options)
        .await
        .expect("enqueues");
    assert_ne!(after, first, "a completed job frees its key");

    // Cancelled: free at once.
    assert_eq!(
        queues.cancel("report", &after).await.expect("cancels"),
        Cancelled::Removed
    );
    let next = queues
        .enqueue("report", "d", &options)
        .await
        .expect("enqueues");
    assert_ne!(next, after, "a cancelled job frees its key");

    // Dead: free too.
    run_one_to_death(&queues, "report").await;
    let after_dead = queues
        .enqueue("report", "e", &options)
        .await
        .expect("enqueues");
    assert_ne!(after_dead, next, "a dead job frees its key");
}

/// Debounce: a burst of enqueues makes one job with the last payload, its
/// start pushed back by each; once it started, the next makes a new job.
async fn a_debounce_runs_the_last_of_a_burst_once(backend: &Backend) {
    let queues = backend.queues().await;
    let options = JobOptions::new()
        .debounce("reindex:7", Duration::from_millis(300))
        .expect("valid");
    let first = queues
        .enqueue("search", "1", &options)
        .await
        .expect("enqueues");
    let ready_first = queues
        .job("search", &first)
        .await
        .expect("reads")
        .expect("kept")
        .ready_at;
    for edit in ["2", "3"] {
        let again = queues
            .enqueue("search", edit, &options)
            .await
            .expect("enqueues");
        assert_eq!(again, first);
    }
    let job = queues
        .job("search", &first)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(job.payload_as::<String>().expect("decodes"), "3");
    assert!(
        job.ready_at >= ready_first,
        "the start is pushed back, never forward"
    );
    let counts = queues.counts("search").await.expect("counts");
    assert_eq!((counts.delayed, counts.waiting), (1, 0), "{counts:?}");

    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let worker = {
        let seen = Arc::clone(&seen);
        queues
            .worker("search")
            .expect("a valid name")
            .start(move |job: Job<String>| {
                seen.lock().push(job.payload.clone());
                async { Ok::<_, JobError>(()) }
            })
    };
    completed(&queues, "search", 1).await;
    assert_eq!(*seen.lock(), ["3"]);
    let later = queues
        .enqueue("search", "4", &options)
        .await
        .expect("enqueues");
    assert_ne!(later, first, "after the job started, a new burst begins");
    completed(&queues, "search", 2).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*seen.lock(), ["3", "4"]);

    let refused = JobOptions::new().debounce("k", Duration::ZERO);
    assert!(
        matches!(refused, Err(Error::InvalidOption(_))),
        "{refused:?}"
    );
}

/// A key held until its job starts, until it completes, or for a
/// debounce goes from Redis once its job completes or dies, rather than
/// living out its 30-day backstop expiry: a queue fed distinct keys keeps
/// only those of jobs not yet finished. (Until then it may still hold: an
/// until-completed enqueue of the same key is answered by the running job,
/// whatever mode took the key.) The memory store frees them at the same
/// steps; its own test is in `memory.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_freed_when_its_job_finishes() {
    let server = RedisServer::shared();
    let prefix = unique_prefix();
    let queues = connect(&server.url(), &prefix).await;
    let mut conn = server.connect().expect("connects");
    let mut exists = |key: &str| {
        conn.cmd(&["EXISTS", &format!("{prefix}:{{keys}}:u:{key}")])
            .expect("EXISTS")
            .as_int()
            == Some(1)
    };

    let started = JobOptions::new().unique_until_started("s").expect("valid");
    let until_done = JobOptions::new()
        .unique_until_completed("c")
        .expect("valid");
    let debounce = JobOptions::new()
        .debounce("d", Duration::from_millis(20))
        .expect("valid");
    queues
        .enqueue("keys", "a", &started)
        .await
        .expect("enqueues");
    queues
        .enqueue("keys", "b", &until_done)
        .await
        .expect("enqueues");
    queues
        .enqueue("keys", "c", &debounce)
        .await
        .expect("enqueues");
    let gate = Arc::new(Semaphore::new(0));
    let worker = gated(&queues, "keys", &gate);
    active(&queues, "keys", 3).await;
    assert!(exists("c"), "a running job holds its until-completed key");
    gate.add_permits(3);
    completed(&queues, "keys", 3).await;
    worker.shutdown(Duration::from_secs(5)).await;
    for key in ["s", "c", "d"] {
        assert!(!exists(key), "the key {key} of a completed job is gone");
    }

    // A job that dies frees its key too.
    let once = JobOptions::new()
        .unique_until_completed("x")
        .expect("valid")
        .attempts(1)
        .expect("valid");
    queues.enqueue("keys", "e", &once).await.expect("enqueues");
    assert!(exists("x"), "a waiting job holds its key");
    run_one_to_death(&queues, "keys").await;
    assert!(!exists("x"), "a dead job's key is gone");
}

on_every_backend!(
    a_unique_key_holds_until_its_job_starts,
    a_unique_key_holds_until_its_job_completes,
    a_debounce_runs_the_last_of_a_burst_once,
);
