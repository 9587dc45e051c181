//! Worker processes SIGKILLed at random moments while 2,000 jobs run: every
//! job's effect lands, and only jobs in flight at a kill run again.
//!
//! The worker processes are this test binary itself, running this same
//! test again with [`ROLE`] set: then it is a worker, until it is killed. Each handler records its run in PostgreSQL (`runs`, one row per
//! run, with the process id) and its effect in `done`, whose primary key
//! makes a second effect of the same job impossible.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use seawall_queue::{Job, JobError, JobOptions, Queues, Settings};
use seawall_testkit::{Postgres, wait};
use sqlx::postgres::PgPoolOptions;

use crate::support::{builder, completions, unique_prefix};

const JOBS: i64 = 2_000;
const WORKERS: usize = 3;
const CONCURRENCY: usize = 8;
/// Set in a worker process: `<redis url> <key prefix> <database url>`.
const ROLE: &str = "SEAWALL_QUEUE_CRASH_WORKER";

fn settings() -> Settings {
    Settings {
        // A job may be caught by several kills; none of them is its fault.
        max_stalls: 50,
        keep_completed: 10_000,
        // Every event of the run, to count completions per job.
        events_max_len: 1_000_000,
        ..Settings::default()
    }
}

/// A worker process of [`workers_killed_at_random_lose_nothing`], as
/// [`ROLE`] describes it: works the queue until it is killed.
async fn work_until_killed(role: &str) -> ! {
    let [redis, prefix, database] = role.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{ROLE} holds a Redis URL, a prefix and a database URL");
    };
    let db = PgPoolOptions::new()
        .max_connections(4)
        .connect(database)
        .await
        .expect("the database");
    let queues = Queues::redis(builder(redis))
        .prefix(prefix)
        .settings(settings())
        .connect()
        .await
        .expect("redis");
    let pid = i32::try_from(std::process::id()).expect("a pid fits");
    // A killed worker's jobs wait out the lease before they run again; a
    // live worker's must not lapse for a renewal held up on a loaded
    // machine (a job run again after its process survived fails the test).
    let _worker = queues
        .worker("crash")
        .and_then(|worker| worker.concurrency(CONCURRENCY))
        .and_then(|worker| worker.lease(Duration::from_secs(5)))
        .expect("valid")
        .start(move |job: Job<i64>| {
            let db = db.clone();
            async move {
                let run: i64 = sqlx::query_scalar(
                    "INSERT INTO runs (job, pid, finished) VALUES ($1, $2, false) RETURNING id",
                )
                .bind(job.payload)
                .bind(pid)
                .fetch_one(&db)
                .await?;
                tokio::time::sleep(Duration::from_millis(fastrand::u64(5..40))).await;
                let mut tx = db.begin().await?;
                sqlx::query("INSERT INTO done (job) VALUES ($1) ON CONFLICT (job) DO NOTHING")
                    .bind(job.payload)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE runs SET finished = true WHERE id = $1")
                    .bind(run)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await.map_err(JobError::from)
            }
        });
    std::future::pending().await
}

fn spawn_worker(role: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["crash::workers_killed_at_random_lose_nothing", "--exact"])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("a worker process starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_lose_nothing() {
    if let Ok(role) = std::env::var(ROLE) {
        work_until_killed(&role).await;
    }
    let postgres = Postgres::start().expect("PostgreSQL starts (scripts/setup installs it)");
    postgres
        .psql(
            "CREATE TABLE runs (id bigserial PRIMARY KEY, job bigint NOT NULL, pid integer NOT NULL, finished boolean NOT NULL);
             CREATE TABLE done (job bigint PRIMARY KEY);",
        )
        .expect("tables");
    let prefix = unique_prefix();
    let redis = seawall_testkit::RedisServer::shared().url();
    let queues = Queues::redis(builder(&redis))
        .prefix(&prefix)
        .settings(settings())
        .connect()
        .await
        .expect("redis");
    let options = JobOptions::new().attempts(10).expect("valid");
    queues
        .enqueue_many("crash", (0..JOBS).map(|n| (n, options.clone())))
        .await
        .expect("enqueues");

    let role = format!("{redis} {prefix} {}", postgres.url());
    let mut workers: Vec<Child> = (0..WORKERS).map(|_| spawn_worker(&role)).collect();
    let mut killed = HashSet::new();
    let began = Instant::now();
    loop {
        let counts = queues.counts("crash").await.expect("counts");
        if counts.completed + counts.dead >= JOBS.unsigned_abs() {
            break;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for every job to complete or die; stuck at {counts:?}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..600))).await;
        let victim = fastrand::usize(..WORKERS);
        killed.insert(i32::try_from(workers[victim].id()).expect("a pid fits"));
        workers[victim].kill().expect("SIGKILL");
        workers[victim].wait().expect("reaped");
        workers[victim] = spawn_worker(&role);
    }
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }

    let counts = queues.counts("crash").await.expect("counts");
    assert_eq!(
        (counts.completed, counts.dead),
        (JOBS.unsigned_abs(), 0),
        "no job dead-lettered: {counts:?}"
    );
    let completed = completions(&queues, "crash").await;
    assert_eq!(completed.len(), usize::try_from(JOBS).expect("fits"));
    let twice: Vec<_> = completed.iter().filter(|(_, times)| **times > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres.url())
        .await
        .expect("the database");
    let done: Vec<i64> = sqlx::query_scalar("SELECT job FROM done ORDER BY job")
        .fetch_all(&db)
        .await
        .expect("reads");
    assert_eq!(
        done,
        (0..JOBS).collect::<Vec<_>>(),
        "every job's effect, once"
    );
    let runs: Vec<(i64, i32, bool)> =
        sqlx::query_as("SELECT job, pid, finished FROM runs ORDER BY id")
            .fetch_all(&db)
            .await
            .expect("reads");
    let mut by_job: HashMap<i64, Vec<(i32, bool)>> = HashMap::new();
    for (job, pid, finished) in runs {
        by_job.entry(job).or_default().push((pid, finished));
    }
    let mut again = 0;
    for (job, runs) in &by_job {
        // Every run but the last was cut short by a kill of its process
        // (mid-handler, or after the effect but before the acknowledgement).
        for (pid, _) in &runs[..runs.len() - 1] {
            assert!(
                killed.contains(pid),
                "job {job} ran again after {pid} survived: {runs:?}"
            );
        }
        again += runs.len() - 1;
    }
    assert!(!killed.is_empty());
    assert!(
        again <= killed.len() * CONCURRENCY,
        "{again} re-runs for {} kills of {CONCURRENCY} jobs each",
        killed.len()
    );
    eprintln!(
        "{} kills; {again} of {JOBS} jobs ran again (all in flight at a kill)",
        killed.len()
    );
}
