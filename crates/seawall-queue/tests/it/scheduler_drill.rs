//! The scheduler drill: three processes run the schedulers of one queue,
//! whose scheduler ticks every second. One process is frozen (SIGSTOP) for
//! a while, so that when it wakes it acts on what it read before, as a
//! process cut off from Redis does when the cut heals; Redis is killed and
//! restarted on its append-only file (`appendfsync always`) in the middle.
//! Every tick makes at most one job (0 duplicated), each job's tick is a
//! tick of the schedule, and the only ticks with no job are those missed
//! while Redis was down, which the default policy (`Missed::Latest`) turns
//! into one job for the latest once a process gets through again.
//!
//! The short form (the test command) runs 14 s with a 6 s freeze; the full
//! form (`scripts/drills --schedulers`, `SEAWALL_DRILL_FULL=1`) runs 60 s
//! with a 10 s freeze.

use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seawall_queue::{JobOptions, Queues, Schedule, Settings};
use seawall_testkit::{Persistence, RedisServer};

use crate::schedulers::ticks_enqueued;
use crate::support::{Processes, builder, spawn_role, unique_prefix};

/// Processes that run the schedulers.
const PROCESSES: usize = 3;
const QUEUE: &str = "beat";
const SCHEDULER: &str = "every-second";
const EVERY: Duration = Duration::from_secs(1);
/// Set in a scheduler process: `<redis url> <prefix>`.
const ROLE: &str = "SEAWALL_QUEUE_SCHEDULER_DRILL_PROCESS";
const TEST: &str = "scheduler_drill::every_tick_makes_one_job_through_a_freeze_and_a_redis_kill";

/// The run's length, when the freeze starts and how long it lasts, and
/// when Redis is killed (for 3 s), from the start.
struct Plan {
    length: Duration,
    freeze_at: Duration,
    freeze_for: Duration,
    kill_at: Duration,
}

fn plan() -> Plan {
    if std::env::var_os("SEAWALL_DRILL_FULL").is_some() {
        Plan {
            length: Duration::from_secs(60),
            freeze_at: Duration::from_secs(10),
            freeze_for: Duration::from_secs(10),
            kill_at: Duration::from_secs(30),
        }
    } else {
        Plan {
            length: Duration::from_secs(14),
            freeze_at: Duration::from_secs(2),
            freeze_for: Duration::from_secs(6),
            kill_at: Duration::from_secs(5),
        }
    }
}

fn settings() -> Settings {
    Settings {
        events_max_len: 100_000,
        ..Settings::default()
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("fits")
}

/// A process that runs the queue's schedulers until the drill kills it.
async fn run_until_killed(role: &str) -> ! {
    let (url, prefix) = role.split_once(' ').expect("<url> <prefix>");
    let queues = Queues::redis(builder(url))
        .prefix(prefix)
        .settings(settings())
        .connect()
        .await
        .expect("the scheduler process connects");
    let _runner = queues.run_schedulers(QUEUE).expect("a valid name");
    std::future::pending().await
}

fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {signal} {}", child.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_makes_one_job_through_a_freeze_and_a_redis_kill() {
    if let Ok(role) = std::env::var(ROLE) {
        run_until_killed(&role).await;
    }
    let plan = plan();
    let mut server = RedisServer::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .expect("redis-server starts");
    let prefix = unique_prefix();
    let queues = Queues::redis(builder(&server.url()))
        .prefix(&prefix)
        .settings(settings())
        .connect()
        .await
        .expect("connects");
    queues
        .upsert_scheduler(
            QUEUE,
            SCHEDULER,
            &Schedule::every(EVERY).expect("valid"),
            &"beat",
            &JobOptions::new(),
        )
        .await
        .expect("upserts");
    let role = format!("{} {prefix}", server.url());
    let processes = Processes(
        (0..PROCESSES)
            .map(|_| spawn_role(TEST, ROLE, &role))
            .collect(),
    );
    let began = now_ms();
    let at = |offset: Duration| began + u64::try_from(offset.as_millis()).expect("fits");
    let sleep_until =
        |ms: u64| tokio::time::sleep(Duration::from_millis(ms.saturating_sub(now_ms())));

    sleep_until(at(plan.freeze_at)).await;
    signal(&processes.0[0], "-STOP");
    sleep_until(at(plan.kill_at)).await;
    let killed_at = now_ms();
    server.kill().expect("SIGKILL");
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().expect("restarts on its AOF");
    let restarted_at = now_ms();
    sleep_until(at(plan.freeze_at + plan.freeze_for)).await;
    signal(&processes.0[0], "-CONT");
    sleep_until(at(plan.length)).await;
    drop(processes);
    let ended = now_ms();

    let jobs = ticks_enqueued(&queues, QUEUE).await;
    let mut ticks: Vec<u64> = jobs
        .values()
        .map(|tick| {
            let (scheduler, at) = tick.clone().expect("every job of the queue is a tick's");
            assert_eq!(scheduler, SCHEDULER);
            at
        })
        .collect();
    ticks.sort_unstable();
    let every = u64::try_from(EVERY.as_millis()).expect("fits");
    let mut duplicated = 0;
    for pair in ticks.windows(2) {
        if pair[0] == pair[1] {
            duplicated += 1;
        }
    }
    ticks.dedup();
    assert!(
        ticks.iter().all(|at| at % every == 0),
        "a tick off the schedule: {ticks:?}"
    );
    // The ticks with no job: only those due while Redis was down (a tick
    // due just before the kill may not have got through), until a process
    // gets through again and the latest of them makes a job. A tick whose
    // job was enqueued ahead before the kill kept it (the AOF has it).
    let first_after = ticks
        .iter()
        .copied()
        .find(|at| *at > restarted_at)
        .expect("ticks made jobs after Redis came back");
    let mut missing = Vec::new();
    for pair in ticks.windows(2) {
        missing.extend((pair[0] + every..pair[1]).step_by(usize::try_from(every).expect("fits")));
    }
    let unexplained: Vec<u64> = missing
        .iter()
        .copied()
        .filter(|at| !(killed_at.saturating_sub(every) < *at && *at < first_after))
        .collect();
    let first = ticks.first().copied().expect("ticks");
    let last = ticks.last().copied().expect("ticks");
    eprintln!(
        "scheduler drill: {} jobs for ticks over {:.1} s by {PROCESSES} processes, one frozen \
         for {:?}, Redis down {:.1} s: {duplicated} duplicated, {} missing while Redis was \
         down, {} missing otherwise",
        jobs.len(),
        (last - first) as f64 / 1000.0,
        plan.freeze_for,
        (restarted_at - killed_at) as f64 / 1000.0,
        missing.len() - unexplained.len(),
        unexplained.len()
    );
    assert_eq!(duplicated, 0, "a tick made more than one job: {jobs:?}");
    assert!(
        unexplained.is_empty(),
        "ticks with no job outside the outage ({killed_at}..{first_after}): {unexplained:?}"
    );
    // The schedulers ran from the start to the end.
    assert!(
        first <= at(Duration::from_secs(2)),
        "the first tick came late: {first}"
    );
    assert!(
        last + 2 * every >= ended,
        "the ticks stopped early: {last} of {ended}"
    );
}
