//! The flow drill: flows of one parent (queue `assemble`) and 10 children
//! (queue `parts`), run by three worker processes killed at random, with
//! Redis taken out once midway: killed and restarted on its append-only
//! file (`appendfsync always`), or, through Sentinel, its primary killed
//! and its replica promoted. Every parent completes, and only after its 10
//! children completed (its last run started after the last child finished,
//! on the server's clock), with all 10 results: its result is the sum of
//! theirs, which it returns only when it reads 10 completed children with
//! results. No child is left unfinished, completes twice or dies; no
//! parent is left waiting.
//!
//! Each parent's run that got as far as its result writes a row (the job,
//! when, and which worker process), and the drill records each flow's
//! enqueue and every kill as a seawall-history history; `seawall-check`'s
//! queue check then holds the parents to running once, a repeat excused
//! only by a kill on the path of the run it lost (the worker that ran it,
//! or a Redis primary that held the queue: a failover can lose what the
//! old primary acknowledged in its last moments, as replication is
//! asynchronous) within the lease and a second of that run's row.
//!
//! The short form (the test command) runs 100 flows (1,100 jobs); the full
//! form (`scripts/drills --flows`, `SEAWALL_DRILL_FULL=1`) runs 1,000
//! (11,000 jobs). Each run leaves its history, final state and report
//! under `target/tmp/drills/flows-<outage>/`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seawall_history::{FinalState, History, Options, Recorder, Report, Workload};
use seawall_queue::{
    ChildOutcome, Flow, FlowIds, Job, JobError, JobOptions, JobState, Queues, Settings,
};
use seawall_testkit::{Persistence, RedisSentinel, RedisServer, wait};
use serde_json::json;

use crate::support::{Processes, builder, completions, spawn_role, unique_prefix};

/// Children per flow.
const CHILDREN: u64 = 10;
/// Worker processes.
const PROCESSES: usize = 3;
/// Set in a worker process: `<redis url> <prefix> <rows file> <host>`.
const ROLE: &str = "SEAWALL_QUEUE_FLOW_DRILL_WORKER";
/// How long a worker holds a job without renewing its lease.
const LEASE: Duration = Duration::from_secs(2);

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

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// Appends a parent's row to `rows`: one line, in one write, so that a
/// process killed mid-row leaves a whole line or none.
fn write_row(rows: &Path, job: &str, flow: u64, host: &str) {
    let line = json!({
        "job": format!("assemble:{job}"),
        "idempotency_key": format!("flow-{flow}"),
        "at_ms": now_ms(),
        "worker": host,
    });
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(rows)
        .expect("the rows file opens");
    file.write_all(format!("{line}\n").as_bytes())
        .expect("a row is written");
}

/// A worker process: a worker of each queue, until the drill kills it.
async fn work_until_killed(role: &str) -> ! {
    let mut parts = role.split(' ');
    let (Some(url), Some(prefix), Some(rows), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("<url> <prefix> <rows> <host>: {role}");
    };
    let (rows, host) = (PathBuf::from(rows), host.to_owned());
    let queues = Queues::redis(builder(url))
        .prefix(prefix)
        .settings(settings())
        .connect()
        .await
        .expect("the worker process connects");
    let lease = LEASE;
    let _parts = queues
        .worker("parts")
        .and_then(|worker| worker.concurrency(8))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(|job: Job<u64>| async move {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..30))).await;
            Ok::<_, JobError>(part(job.payload))
        });
    let _assemble = queues
        .worker("assemble")
        .and_then(|worker| worker.concurrency(4))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(move |job: Job<u64>| {
            let (rows, host) = (rows.clone(), host.clone());
            async move {
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
                write_row(&rows, &job.id().to_string(), job.payload, &host);
                Ok(sum)
            }
        });
    std::future::pending().await
}

/// How Redis is taken out midway.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// One server SIGKILLed, and restarted on its append-only file 3 s
    /// later (longer than the clients' 2 s command timeout, so calls fail).
    Restart,
    /// Under Sentinel, the primary SIGKILLed: its replica is promoted.
    Failover,
}

/// The Redis the drill runs on.
enum Deployment {
    Server(Box<RedisServer>),
    Sentinel(RedisSentinel),
}

impl Deployment {
    fn start(outage: Outage) -> Self {
        match outage {
            Outage::Restart => Self::Server(Box::new(
                RedisServer::builder()
                    .persistence(Persistence::AofAlways)
                    .start()
                    .expect("redis-server starts"),
            )),
            Outage::Failover => {
                Self::Sentinel(RedisSentinel::start().expect("a Sentinel deployment starts"))
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Sentinel(sentinel) => sentinel.url(),
        }
    }

    /// Takes Redis out and brings it (or its replica) back, recording the
    /// faults; answers the hosts of the primaries that held the queues
    /// (`redis-1` first; `redis-2` is the replica).
    fn outage(&mut self, recorder: &Recorder) -> Vec<String> {
        let host = |n: usize| json!({"host": format!("redis-{n}")});
        match self {
            Self::Server(server) => {
                server.kill().expect("SIGKILL");
                recorder.fault("kill", host(1)).expect("records");
                std::thread::sleep(Duration::from_secs(3));
                server.restart().expect("restarts on its AOF");
                recorder.fault("restart", host(1)).expect("records");
                vec!["redis-1".to_owned()]
            }
            Self::Sentinel(sentinel) => {
                let old = sentinel.kill_primary().expect("SIGKILL");
                recorder.fault("kill", host(1)).expect("records");
                sentinel
                    .wait_for_new_primary(old, wait::patience())
                    .expect("the replica is promoted");
                vec!["redis-1".to_owned(), "redis-2".to_owned()]
            }
        }
    }
}

/// Where a drill's files go, emptied first.
fn drill_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("drills")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the drill's directory");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_survive_worker_kills_and_a_redis_kill() {
    if let Ok(role) = std::env::var(ROLE) {
        work_until_killed(&role).await;
    }
    drill(
        Outage::Restart,
        "flow_drill::flows_survive_worker_kills_and_a_redis_kill",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_survive_worker_kills_and_a_failover() {
    if let Ok(role) = std::env::var(ROLE) {
        work_until_killed(&role).await;
    }
    drill(
        Outage::Failover,
        "flow_drill::flows_survive_worker_kills_and_a_failover",
    )
    .await;
}

/// Runs the drill with `outage` midway; `test` is the test whose binary
/// the worker processes run.
async fn drill(outage: Outage, test: &str) {
    let flows = flows();
    let name = match outage {
        Outage::Restart => "flows-restart",
        Outage::Failover => "flows-failover",
    };
    let dir = drill_dir(name);
    let recorder = Recorder::create(dir.join("clients.jsonl")).expect("a recorder");
    let rows = dir.join("rows.jsonl");
    let mut redis = Deployment::start(outage);
    let prefix = unique_prefix();
    let queues = Queues::redis(builder(&redis.url()))
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
        let enqueue = recorder
            .invoke(
                "producer",
                Workload::Queue,
                "enqueue",
                json!({"queue": "assemble", "key": format!("flow-{n}")}),
            )
            .expect("records");
        let flow = queues.enqueue_flow(flow).await.expect("enqueues the flow");
        enqueue
            .ok(json!({"job": format!("assemble:{}", flow.id)}))
            .expect("records");
        ids.push(flow);
    }

    // The Sentinels' address, or the server's: the same after the outage.
    let url = redis.url();
    let role = |slot: usize| format!("{url} {prefix} {} worker-{}", rows.display(), slot + 1);
    let mut workers = Processes(
        (0..PROCESSES)
            .map(|slot| spawn_role(test, ROLE, &role(slot)))
            .collect(),
    );
    let mut kills = 0;
    let mut masters = None;
    let began = Instant::now();
    let kill_gap = || Duration::from_millis(fastrand::u64(150..600));
    let mut next_kill = Instant::now() + kill_gap();
    // The counts are looked at often, so that the outage comes while half
    // the parents are done and the rest are to do: the whole run takes
    // about a second in the short form.
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
        if masters.is_none() && counts.is_some_and(|counts| counts.completed >= flows / 2) {
            masters = Some(redis.outage(&recorder));
            continue;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Instant::now() < next_kill {
            continue;
        }
        next_kill = Instant::now() + kill_gap();
        let victim = fastrand::usize(..PROCESSES);
        workers.0[victim].kill().expect("SIGKILL");
        workers.0[victim].wait().expect("reaped");
        recorder
            .fault("kill", json!({"host": format!("worker-{}", victim + 1)}))
            .expect("records");
        workers.0[victim] = spawn_role(test, ROLE, &role(victim));
        kills += 1;
    }
    drop(workers);
    let masters = masters.expect("Redis was taken out midway");

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
    drop(recorder);

    let report = checked(&dir, &queues, &ids, &rows, masters).await;
    let counts = report.counts();
    eprintln!(
        "flow drill ({outage:?}): {flows} flows of 1 + {CHILDREN} jobs, {kills} worker kills \
         in {:.1?}: every parent completed, after its children, with their results; runs again \
         after a kill: {reruns:?}; parents' rows {}, run twice (explained) {}",
        began.elapsed(),
        report.queue.as_ref().map_or(0, |queue| queue.rows),
        counts["queue.run_twice_explained"],
    );
    assert_eq!(report.anomalies(), 0, "{report}");
}

/// Checks the drill's history (the flows' enqueues and the kills) with the
/// parents' rows and what the queue says of each parent, writes the
/// state and the report into `dir`, and answers the report.
async fn checked(
    dir: &Path,
    queues: &Queues,
    ids: &[FlowIds],
    rows: &Path,
    masters: Vec<String>,
) -> Report {
    let text = std::fs::read_to_string(rows).unwrap_or_default();
    // A line cut short by a kill is no row: its run got no further.
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let mut jobs = Vec::with_capacity(ids.len());
    for flow in ids {
        let parent = queues
            .job("assemble", &flow.id)
            .await
            .expect("reads")
            .expect("a completed parent is kept");
        jobs.push(json!({
            "job": format!("assemble:{}", flow.id),
            "runs": parent.runs,
            "stalls": parent.stalls,
        }));
    }
    let state = json!({"queue": {
        "queues": {"assemble": {
            "lease_ms": u64::try_from(LEASE.as_millis()).expect("fits"),
            "masters": masters,
        }},
        "rows": rows,
        "jobs": jobs,
    }});
    let state: FinalState = serde_json::from_value(state).expect("a final state");
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_string_pretty(&state).expect("JSON"),
    )
    .expect("writes");
    let history = History::read(&[dir.join("clients.jsonl")]).expect("the history reads back");
    let report =
        seawall_history::check(&history, &state, &Options::default()).expect("a full state");
    std::fs::write(dir.join("report.txt"), report.to_string()).expect("writes");
    report
}
