//! The scheduler drill on the fleet: three workers on network hosts each
//! run the recurring jobs' schedulers, the statistics' refresh set to
//! every second. Mid-run, the Redis master of its queue is killed (its
//! replica takes over) and worker-1 is cut off from every other host, for
//! 4 s in the test command and 10 s in the full form (`scripts/drills
//! --schedulers`, `SEAWALL_DRILL_FULL=1`, 70 s in all). Once ticks make
//! jobs again, worker-1 is cut off a second time, and meanwhile the
//! scheduler is paused through the admin API and resumed (2 s each in the
//! test command, 5 s in the full form): the runner cut off may hold a plan
//! made before the pause, and the two others must tick from the first tick
//! after the resume. The history (the scheduler resumed at the start,
//! paused and resumed while worker-1 is cut off, and paused at the end,
//! and the faults) is checked with every job the ticks made, as the queue
//! lists them once the fleet is quiet: each tick due while the scheduler
//! ran made one job, none two, none was made while it was paused, and
//! only an outage of the queue's master explains a tick with none (a
//! runner cut off alone explains nothing).

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use seawall_history::{Options, Recorder, Report, Workload};
use seawall_testkit::wait;

use crate::partitions::{Answer, client, drill_dir, finish, host_names, send, unknown};
use crate::support::{self, Running};

const QUEUE: &str = "analytics";
const SCHEDULER: &str = "hourly-analytics";
/// The hash tag of the queue's keys, whose slot's master is killed.
const SLOT: &str = "{analytics}";
const EVERY: Duration = Duration::from_secs(1);
const WORKERS: usize = 3;
/// The most jobs one listing gives.
const LISTED: usize = 200;

/// The run before the faults, how long they hold, and the run after the
/// scheduler got through again.
struct Plan {
    before: Duration,
    hold: Duration,
    after: Duration,
    /// How long the scheduler stays paused while worker-1 is cut off the
    /// second time, and how long it then runs before the heal.
    paused: Duration,
}

fn plan() -> Plan {
    if std::env::var("SEAWALL_DRILL_FULL").is_ok_and(|v| v == "1") {
        Plan {
            before: Duration::from_secs(20),
            hold: Duration::from_secs(10),
            after: Duration::from_secs(30),
            paused: Duration::from_secs(5),
        }
    } else {
        Plan {
            before: Duration::from_secs(2),
            hold: Duration::from_secs(4),
            after: Duration::from_secs(3),
            paused: Duration::from_secs(2),
        }
    }
}

/// The scheduler as `GET /api/queue/analytics/schedulers` lists it;
/// `None` while that does not answer or does not list it.
async fn scheduler(fleet: &Running) -> Option<Value> {
    let Answer::Status(200, body) = send(
        client()
            .get(format!("{}/api/queue/{QUEUE}/schedulers", fleet.url()))
            .bearer_auth(fleet.token()),
    )
    .await
    else {
        return None;
    };
    body["schedulers"]
        .as_array()?
        .iter()
        .find(|scheduler| scheduler["id"] == SCHEDULER)
        .cloned()
}

/// When the scheduler's latest tick that made a job was due, if one did.
fn last_run(scheduler: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(scheduler["last_run"]["at"].as_str()?).ok()
}

/// Waits until a tick due after `since` made a job.
async fn ticking_after(fleet: &Running, since: SystemTime) {
    let began = Instant::now();
    loop {
        if let Some(at) = scheduler(fleet).await.as_ref().and_then(last_run)
            && at > since
        {
            return;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for a tick of {SCHEDULER} after {since:?} to make a job",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resumes or pauses the scheduler through the admin API (`op`), recorded:
/// 200 is ok, a 4xx fail, anything else info. Tried until it is ok.
async fn steer(recorder: &Recorder, fleet: &Running, op: &str) {
    let began = Instant::now();
    loop {
        let mut value = json!({"queue": QUEUE, "scheduler": SCHEDULER});
        if op == "resume" {
            value["every_ms"] = json!(EVERY.as_millis());
        }
        let handle = recorder
            .invoke("admin", Workload::Schedule, op, value)
            .expect("records");
        let answer = send(
            client()
                .post(format!(
                    "{}/api/queue/{QUEUE}/schedulers/{SCHEDULER}/{op}",
                    fleet.url()
                ))
                .bearer_auth(fleet.token()),
        )
        .await;
        match &answer {
            Answer::Status(200, body) => {
                handle.ok(body.clone()).expect("records");
                return;
            }
            Answer::Status(status, _) if (400..500).contains(status) => {
                handle.fail(unknown(&answer)).expect("records");
            }
            _ => handle.info(unknown(&answer)).expect("records"),
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} to {op} {SCHEDULER}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every job of the queue a tick made, completed or dead (the queue is
/// idle, so no other state holds one), as the schedule section lists them.
async fn tick_jobs(fleet: &Running, resumed: SystemTime) -> Vec<Value> {
    let mut jobs = Vec::new();
    for state in ["completed", "dead"] {
        let listed = support::admin_get(
            &support::client(),
            fleet,
            &format!(
                "{}/api/queue/{QUEUE}/jobs?state={state}&limit={LISTED}",
                fleet.url()
            ),
        )
        .await;
        let listed = listed["jobs"].as_array().cloned().unwrap_or_default();
        let ticks: Vec<SystemTime> = listed
            .iter()
            .filter_map(|job| humantime::parse_rfc3339(job["tick"]["at"].as_str()?).ok())
            .collect();
        // Newest first: a full listing must reach back past the resume, or
        // ticks the check judges could be missing from it.
        assert!(
            listed.len() < LISTED || ticks.last().is_some_and(|oldest| *oldest < resumed),
            "{LISTED} {state} jobs do not reach back to the resume"
        );
        for job in listed {
            let (Some(id), Some(tick)) = (job["id"].as_str(), job["tick"].as_object()) else {
                continue;
            };
            let at = humantime::parse_rfc3339(tick["at"].as_str().expect("a tick's time"))
                .expect("an RFC 3339 time");
            let tick_ms = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis();
            jobs.push(json!({
                "job": format!("{QUEUE}:{id}"),
                "scheduler": tick["scheduler"],
                "tick_ms": u64::try_from(tick_ms).expect("fits"),
            }));
        }
    }
    jobs
}

/// Runs the drill and checks what it recorded; the report is written under
/// `target/tmp/drills/schedulers/` with the history and the state.
async fn master_killed_and_runner_cut_off(plan: &Plan) -> Report {
    let dir = drill_dir("schedulers");
    let mut fleet = support::start(
        support::builder()
            .hosts(true)
            .workers(WORKERS)
            .env("SEAWALL_RATELIMIT", "false")
            .env("SEAWALL_QUEUE_HOURLY_ANALYTICS", "every 1s"),
    )
    .await;
    // The workers keep the scheduler once one of them got through: wait
    // for its first job.
    ticking_after(&fleet, SystemTime::UNIX_EPOCH).await;
    let master = fleet.master_host_of(SLOT).expect("the queue's master");
    let replica = fleet.replica_host_of(SLOT).expect("the master's replica");

    let recorder = Recorder::create(dir.join("clients.jsonl")).expect("a recorder");
    let resumed = SystemTime::now();
    steer(&recorder, &fleet, "resume").await;
    tokio::time::sleep(plan.before).await;
    fleet.isolate("worker-1").expect("isolates");
    fleet.kill_master_of(SLOT).expect("kills the master");
    println!(
        "worker-1 cut off and {master} killed ({replica} takes over) for {:?}",
        plan.hold
    );
    tokio::time::sleep(plan.hold).await;
    fleet.heal().expect("heals");
    let healed = SystemTime::now();
    ticking_after(&fleet, healed).await;
    println!(
        "a tick made a job again {:?} after the heal",
        healed.elapsed().unwrap_or_default()
    );
    // A pause and a resume for real while a runner is cut off: the runner
    // may have planned ticks before the pause and offer them after it.
    fleet.isolate("worker-1").expect("isolates");
    steer(&recorder, &fleet, "pause").await;
    println!(
        "worker-1 cut off and {SCHEDULER} paused for {:?}",
        plan.paused
    );
    tokio::time::sleep(plan.paused).await;
    steer(&recorder, &fleet, "resume").await;
    let resumed_again = SystemTime::now();
    ticking_after(&fleet, resumed_again).await;
    tokio::time::sleep(plan.paused).await;
    fleet.heal().expect("heals");
    println!("{SCHEDULER} resumed and worker-1 back");
    tokio::time::sleep(plan.after).await;
    steer(&recorder, &fleet, "pause").await;
    drop(recorder);

    let began = Instant::now();
    while !support::queues_idle(&support::client(), &fleet, &[QUEUE]).await {
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for the {QUEUE} queue to drain",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = json!({
        "hosts": host_names(&fleet),
        "schedule": {
            "masters": {QUEUE: [master, replica]},
            "runners": (1..=WORKERS).map(|n| format!("worker-{n}")).collect::<Vec<_>>(),
            "jobs": tick_jobs(&fleet, resumed).await,
        },
    });
    let report = finish(&dir, &fleet, &state, &Options::default());
    support::stop(fleet).await;
    report
}

/// Every tick due while the scheduler ran made exactly one job, through a
/// master kill and a runner cut off, and through a pause and a resume
/// while a runner was cut off; none was made while it was paused; only
/// the master's outage may leave ticks without one (the queue's policy makes one job for the latest once
/// a runner gets through).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tick_makes_one_job_through_a_master_kill_and_a_runner_cut_off() {
    let plan = plan();
    let report = master_killed_and_runner_cut_off(&plan).await;
    assert_eq!(report.anomalies(), 0, "{report}");
    let schedule = report.schedule.as_ref().expect("a schedule section");
    let judged = (plan.before + plan.hold + plan.after + plan.paused).as_secs();
    // The scheduler ran from the resume to the last pause but for the
    // pause in between: longer than the plan, by how long the ticks took
    // to come back after the heal and after the resume.
    assert!(
        schedule.ticks as u64 >= judged - 1,
        "{} ticks judged over {judged} s:\n{report}",
        schedule.ticks
    );
    println!(
        "scheduler drill: {} ticks judged, {} missed while the master was out, 0 duplicated",
        schedule.ticks, schedule.missed_in_outage.count
    );
}
