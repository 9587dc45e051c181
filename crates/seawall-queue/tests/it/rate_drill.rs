//! The rate-limit drill: four workers in two processes share a queue
//! limited to 100 starts a second, with a backlog the whole time. No
//! window of a second (on the Redis server's clock, which stamps both the
//! limit's log and each job's start in the same script) starts more than
//! 100 jobs, and the starts use at least 95 % of what the limit allows.
//!
//! The short form (the test command) runs 5 s of backlog and asks 80 % of
//! the limit used: a busy two-core machine wakes a worker late after each
//! window, and five windows leave no room to average that out. The full
//! form (`scripts/drills --rate-limit`, `SEAWALL_DRILL_FULL=1`) runs 30 s
//! and asks 95 %.
//!
//! Clock skew: every worker process reads the one server's clock, so the
//! workers' clocks add nothing to the bound. A failover to a replica whose
//! clock is behind the old primary's by `s` can admit up to the limit again
//! within `s` of the switch (the replica's log holds the same starts, dated
//! by the old clock); the drill runs without a failover.

use std::time::{Duration, UNIX_EPOCH};

use seawall_queue::{Job, JobError, JobOptions, JobState, Queues, Settings};
use seawall_testkit::{RedisCluster, RedisServer, wait};

use crate::support::{Processes, builder, spawn_role, unique_prefix};

/// Starts a second across the fleet.
const LIMIT: u32 = 100;
/// The limit's window.
const PER: Duration = Duration::from_secs(1);
/// Worker processes, and workers in each.
const PROCESSES: usize = 2;
const WORKERS_EACH: usize = 2;
/// The queue.
const QUEUE: &str = "drill";
/// Set in a worker process: `<redis url> <prefix>`.
const ROLE: &str = "SEAWALL_QUEUE_RATE_DRILL_WORKER";

/// Seconds of backlog, and the share of the limit the starts must use.
fn size() -> (u64, f64) {
    if std::env::var_os("SEAWALL_DRILL_FULL").is_some() {
        (30, 0.95)
    } else {
        (5, 0.80)
    }
}

fn settings(jobs: u64) -> Settings {
    Settings {
        keep_completed: jobs,
        ..Settings::default()
    }
}

/// A worker process: two workers of the queue, until the drill kills it.
async fn work_until_killed(role: &str) -> ! {
    let (url, prefix) = role.split_once(' ').expect("<url> <prefix>");
    let queues = Queues::redis(builder(url))
        .prefix(prefix)
        .settings(settings(u64::from(LIMIT) * 30))
        .connect()
        .await
        .expect("the worker process connects");
    let _workers: Vec<_> = (0..WORKERS_EACH)
        .map(|_| {
            queues
                .worker(QUEUE)
                .expect("a valid name")
                .concurrency(64)
                .expect("valid")
                .start(|_job: Job<u64>| async { Ok::<_, JobError>(()) })
        })
        .collect();
    std::future::pending().await
}

/// The most starts within any window of `per` (ms) over sorted `starts`.
fn most_in_window(starts: &[u64], per: u64) -> usize {
    let mut most = 0;
    let mut from = 0;
    for (to, at) in starts.iter().enumerate() {
        while starts[from] + per <= *at {
            from += 1;
        }
        most = most.max(to + 1 - from);
    }
    most
}

/// The starts against the most the limit allows over the same span: a full
/// window's worth at the first start and again each window after it.
#[allow(clippy::cast_precision_loss)] // counts and ms far below 2^53
fn used(starts: &[u64], limit: u32, per: u64) -> f64 {
    let span = starts.last().copied().unwrap_or(0) - starts.first().copied().unwrap_or(0);
    let allowed = f64::from(limit) * (1.0 + span as f64 / per as f64);
    starts.len() as f64 / allowed
}

/// The drill on `url`, run by the test named `…_on_<on>`.
async fn drill(on: &str, url: &str) {
    if let Ok(role) = std::env::var(ROLE) {
        work_until_killed(&role).await;
    }
    let (seconds, floor) = size();
    let jobs = u64::from(LIMIT) * seconds;
    let prefix = unique_prefix();
    let queues = Queues::redis(builder(url))
        .prefix(&prefix)
        .settings(settings(jobs))
        .connect()
        .await
        .expect("connects");
    queues
        .set_rate_limit(QUEUE, LIMIT, PER)
        .await
        .expect("limits");
    let ids = queues
        .enqueue_many(QUEUE, (0..jobs).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues the backlog");
    let role = format!("{url} {prefix}");
    let test = format!("rate_drill::two_processes_hold_a_rate_limit_on_{on}");
    let _processes = Processes(
        (0..PROCESSES)
            .map(|_| spawn_role(&test, ROLE, &role))
            .collect(),
    );
    wait::until_async("every job of the backlog to complete", async || {
        queues.counts(QUEUE).await.expect("counts").completed == jobs
    })
    .await;

    // Each job's start, read one by one (a listing stops at 1,000).
    let mut starts = Vec::with_capacity(ids.len());
    for id in &ids {
        let job = queues
            .job(QUEUE, id)
            .await
            .expect("reads")
            .expect("a completed job is kept");
        assert_eq!(job.state, JobState::Completed);
        let at = job.started_at.expect("a completed job started");
        starts.push(
            u64::try_from(at.duration_since(UNIX_EPOCH).expect("after").as_millis()).expect("fits"),
        );
    }
    starts.sort_unstable();
    let per = u64::try_from(PER.as_millis()).expect("fits");
    let most = most_in_window(&starts, per);
    let used = used(&starts, LIMIT, per);
    eprintln!(
        "rate-limit drill: {jobs} jobs at {LIMIT}/s by {} workers in {PROCESSES} processes: \
         most starts in a window {most}, {:.1} % of the limit used",
        PROCESSES * WORKERS_EACH,
        used * 100.0
    );
    assert!(
        most <= LIMIT as usize,
        "{most} starts within one window of {PER:?}, above the limit of {LIMIT}"
    );
    assert!(
        used >= floor,
        "{:.1} % of the limit used, below {:.0} %",
        used * 100.0,
        floor * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hold_a_rate_limit_on_redis() {
    drill("redis", &RedisServer::shared().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hold_a_rate_limit_on_a_cluster() {
    drill("a_cluster", &RedisCluster::shared().url()).await;
}

#[test]
fn the_window_count_and_the_share_used_are_right() {
    // [10, 1,010) holds four.
    assert_eq!(most_in_window(&[0, 10, 999, 1_000, 1_001, 2_000], 1_000), 4);
    assert_eq!(most_in_window(&[0, 1_000, 2_000], 1_000), 1);
    // A full window at 0 and at 1,000: all the limit allows.
    let bursts: Vec<u64> = (0..4).map(|n| n / 2 * 1_000).collect();
    assert!((used(&bursts, 2, 1_000) - 1.0).abs() < 1e-9);
    // Half as many starts over the same span.
    assert!((used(&[0, 1_000], 2, 1_000) - 0.5).abs() < 1e-9);
}
