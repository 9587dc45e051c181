//! The flow drill: flows of one parent (queue `assemble`) and 10 children
//! (queue `parts`), run by three worker processes killed at random, with
//! Redis killed once midway and restarted on its append-only file
//! (`appendfsync always`). Every parent completes exactly once, and only
//! after its 10 children completed (its last run started after the last
//! child finished, on the server's clock), with all 10 results: its result
//! is the sum of theirs, which it returns only when it reads 10 completed
//! children with results. No child is left unfinished, completes twice or
//! dies; no parent is left waiting.
//!
//! The short form (the test command) runs 100 flows (1,100 jobs); the full
//! form (`scripts/drills --flows`, `SEAWALL_DRILL_FULL=1`) runs 1,000
//! (11,000 jobs). A failover to a replica instead of a restart can lose
//! what the old primary acknowledged in its last moments (replication is
//! asynchronous), a child's completion among it: that child runs again and
//! its parent still waits for it, but a parent's own completion lost so
//! runs the parent again. The fleet's drills cover failovers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use seawall_queue::{
    ChildOutcome, Flow, FlowIds, Job, JobError, JobOptions, JobState, Queues, Settings,
};
use seawall_testkit::{Persistence, RedisServer, wait};

use crate::support::{Processes, builder, completions, spawn_role, unique_prefix};

/// Children per flow.
const CHILDREN: u64 = 10;
/// Worker processes.
const PROCESSES: usize = 3;
/// Set in a worker process: `<redis url> <prefix>`.
const ROLE: &str = "SEAWALL_QUEUE_FLOW_DRILL_WORKER";
const TEST: &str = "flow_drill::flows_survive_worker_kills_and_a_redis_kill";

fn flows() -> u64 {
    if std::env::var_os("SEAWALL_DRILL_FULL").is_some() {
        1_000
    } else {
        100
    }
}

fn settings() -> Settings {
    Settings {
        // A job may be caught by several kills; none of them is its fault.
        max_stalls: 50,
        keep_completed: 20_000,
        // Every event of the run, to count completions per job.
        events_max_len: 1_000_000,
        ..Settings::default()
    }
}

/// A child's result: twice its payload.
fn part(payload: u64) -> u64 {
    payload * 2
}

/// What flow `n`'s parent returns: the sum of its children's results.
fn expected_sum(n: u64) -> u64 {
    (0..CHILDREN).map(|k| part(n * CHILDREN + k)).sum()
}

/// A worker process: a worker of each queue, until the drill kills it.
async fn work_until_killed(role: &str) -> ! {
    let (url, prefix) = role.split_once(' ').expect("<url> <prefix>");
    let queues = Queues::redis(builder(url))
        .prefix(prefix)
        .settings(settings())
        .connect()
        .await
        .expect("the worker process connects");
    let lease = Duration::from_secs(2);
    let _parts = queues
        .worker("parts")
        .and_then(|worker| worker.concurrency(8))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(|job: Job<u64>| async move {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(1..15))).await;
            Ok::<_, JobError>(part(job.payload))
        });
    let _assemble = queues
        .worker("assemble")
        .and_then(|worker| worker.concurrency(4))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(|job: Job<u64>| async move {
            let children = job.children().await?;
            let mut sum = 0;
            let mut results = 0;
            for child in &children {
                if let Some(result) = child.result_as::<u64>()? {
                    results += 1;
                    sum += result;
                }
            }
            if results != CHILDREN {
                return Err(JobError::new(format!(
                    "flow {} read {results} results of {} children",
                    job.payload,
                    children.len()
                )));
            }
            Ok(sum)
        });
    std::future::pending().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_survive_worker_kills_and_a_redis_kill() {
    if let Ok(role) = std::env::var(ROLE) {
        work_until_killed(&role).await;
    }
    let flows = flows();
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
    // A parent that reads fewer results fails for good, and shows.
    let once = JobOptions::new().attempts(1).expect("valid");
    let parts = JobOptions::new().attempts(5).expect("valid");
    let mut ids: Vec<FlowIds> = Vec::new();
    for n in 0..flows {
        let mut flow = Flow::new("assemble", &n, &once).expect("a flow");
        for k in 0..CHILDREN {
            flow = flow.child(Flow::new("parts", &(n * CHILDREN + k), &parts).expect("a child"));
        }
        ids.push(queues.enqueue_flow(flow).await.expect("enqueues the flow"));
    }

    let role = format!("{} {prefix}", server.url());
    let mut workers = Processes(
        (0..PROCESSES)
            .map(|_| spawn_role(TEST, ROLE, &role))
            .collect(),
    );
    let mut kills = 0;
    let mut redis_killed = false;
    let began = Instant::now();
    loop {
        // Counts fail while Redis is down; the loop goes on.
        let counts = queues.counts("assemble").await.ok();
        if counts.is_some_and(|counts| counts.completed + counts.dead >= flows) {
            break;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for every parent to finish; stuck at {counts:?}",
            wait::patience()
        );
        if !redis_killed && counts.is_some_and(|counts| counts.completed >= flows / 2) {
            server.kill().expect("SIGKILL");
            // Longer than the clients' 2 s command timeout, so calls fail.
            tokio::time::sleep(Duration::from_secs(3)).await;
            server.restart().expect("restarts on its AOF");
            redis_killed = true;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..600))).await;
        let victim = fastrand::usize(..PROCESSES);
        workers.0[victim].kill().expect("SIGKILL");
        workers.0[victim].wait().expect("reaped");
        workers.0[victim] = spawn_role(TEST, ROLE, &role);
        kills += 1;
    }
    drop(workers);
    assert!(redis_killed, "Redis was killed midway");

    let assemble = queues.counts("assemble").await.expect("counts");
    let parts_counts = queues.counts("parts").await.expect("counts");
    assert_eq!(
        (assemble.completed, assemble.dead, assemble.waiting_children),
        (flows, 0, 0),
        "every parent completed, none dead, none waiting: {assemble:?}"
    );
    assert_eq!(
        (
            parts_counts.completed,
            parts_counts.dead,
            parts_counts.waiting + parts_counts.delayed + parts_counts.active
        ),
        (flows * CHILDREN, 0, 0),
        "every child completed, none dead or left: {parts_counts:?}"
    );
    for queue in ["assemble", "parts"] {
        let completed = completions(&queues, queue).await;
        let twice: Vec<_> = completed.iter().filter(|(_, times)| **times > 1).collect();
        assert!(
            twice.is_empty(),
            "{queue}: completed more than once: {twice:?}"
        );
    }
    let mut reruns: HashMap<&str, u32> = HashMap::new();
    for (n, flow) in (0..flows).zip(&ids) {
        let parent = queues
            .job("assemble", &flow.id)
            .await
            .expect("reads")
            .expect("a completed parent is kept");
        assert_eq!(parent.state, JobState::Completed, "flow {n}");
        assert_eq!(
            parent.result_as::<u64>().expect("decodes"),
            Some(expected_sum(n)),
            "flow {n}: its parent read all {CHILDREN} results"
        );
        *reruns.entry("assemble").or_default() += parent.runs - 1;
        let started = parent.started_at.expect("started");
        let children = queues
            .children("assemble", &flow.id)
            .await
            .expect("reads the children");
        assert_eq!(children.len() as u64, CHILDREN, "flow {n}");
        for child in &children {
            assert!(
                matches!(child.outcome, ChildOutcome::Completed(Some(_))),
                "flow {n}: {child:?}"
            );
            let info = queues
                .job("parts", &child.id)
                .await
                .expect("reads")
                .expect("a completed child is kept");
            let finished = info.finished_at.expect("finished");
            assert!(
                started >= finished,
                "flow {n}: the parent's run started before child {} finished",
                child.id
            );
            *reruns.entry("parts").or_default() += info.runs - 1;
        }
    }
    eprintln!(
        "flow drill: {flows} flows of 1 + {CHILDREN} jobs, {kills} worker kills and a Redis kill \
         in {:.1?}: every parent once, after its children, with their results; runs again \
         after a kill: {reruns:?}",
        began.elapsed()
    );
}
