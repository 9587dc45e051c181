//! Recurring jobs on every backend: each tick of a scheduler makes exactly
//! one job, however many processes run the schedulers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seawall_queue::{Error, JobId, JobOptions, Missed, Queues, Schedule, Settings};
use seawall_testkit::{unique_prefix, wait};

use crate::on_every_backend;
use crate::support::{Backend, all_events};

/// Every job `queue`'s event stream says was enqueued, with the scheduler
/// tick its record names (ms since the epoch).
pub(crate) async fn ticks_enqueued(
    queues: &Queues,
    queue: &str,
) -> BTreeMap<JobId, Option<(String, u64)>> {
    let mut jobs = BTreeMap::new();
    for event in all_events(queues, queue).await {
        if event.kind != "enqueued" {
            continue;
        }
        let info = queues
            .job(queue, &event.job)
            .await
            .expect("reads the job")
            .expect("a job the stream names is kept");
        let tick = info.tick.map(|tick| {
            let at = tick.at.duration_since(UNIX_EPOCH).expect("after the epoch");
            (tick.scheduler, u64::try_from(at.as_millis()).expect("fits"))
        });
        jobs.insert(event.job, tick);
    }
    jobs
}

fn settings() -> Settings {
    Settings {
        events_max_len: 100_000,
        ..Settings::default()
    }
}

/// Three processes run the schedulers of one queue: the ticks from the
/// first to the last make one job each, none twice and none left out.
async fn every_tick_makes_one_job_however_many_processes_run_it(backend: &Backend) {
    let memory = Queues::memory_with(settings());
    let prefix = unique_prefix();
    let first = backend.instance(&memory, &prefix, settings()).await;
    let schedule = Schedule::every(Duration::from_millis(200))
        .expect("valid")
        .missed(Missed::Each { most: 1_000 })
        .expect("valid");
    first
        .upsert_scheduler(
            "reports",
            "often",
            &schedule,
            &"roll up",
            &JobOptions::new(),
        )
        .await
        .expect("upserts");
    let mut runners = Vec::new();
    for _ in 0..3 {
        let queues = backend.instance(&memory, &prefix, settings()).await;
        runners.push(queues.run_schedulers("reports").expect("runs"));
    }
    wait::until_async("eight ticks enqueued", async || {
        first.counts("reports").await.expect("counts").waiting >= 8
    })
    .await;
    let mut raced = 0;
    for runner in runners {
        raced += runner.shutdown().await.raced;
    }
    let jobs = ticks_enqueued(&first, "reports").await;
    let mut ticks: Vec<u64> = jobs
        .values()
        .map(|tick| {
            let (scheduler, at) = tick.clone().expect("every job names its tick");
            assert_eq!(scheduler, "often");
            at
        })
        .collect();
    ticks.sort_unstable();
    let count = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), count, "a tick made two jobs: {jobs:?}");
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 200, "a tick was left out: {ticks:?}");
    }
    assert!(ticks.iter().all(|tick| tick % 200 == 0), "{ticks:?}");
    let info = first
        .scheduler("reports", "often")
        .await
        .expect("reads")
        .expect("kept");
    let (last_tick, last_job) = info.last_run.expect("a last run");
    assert_eq!(
        last_tick,
        UNIX_EPOCH + Duration::from_millis(*ticks.last().expect("ticks"))
    );
    assert!(jobs.contains_key(&last_job));
    // Racing processes do race: not asserted, a quiet machine may let one
    // runner take every tick.
    let _ = raced;
}

/// Two looks at a due scheduler at once: one enqueues the tick, the other
/// nothing.
async fn racing_looks_enqueue_a_tick_once(backend: &Backend) {
    let memory = Queues::memory_with(settings());
    let prefix = unique_prefix();
    let one = backend.instance(&memory, &prefix, settings()).await;
    let other = backend.instance(&memory, &prefix, settings()).await;
    let schedule = Schedule::every(Duration::from_millis(100)).expect("valid");
    one.upsert_scheduler("q", "s", &schedule, &1, &JobOptions::new())
        .await
        .expect("upserts");
    // The first look plans the first tick and enqueues nothing.
    let planned = one.tick_schedulers("q").await.expect("looks");
    assert_eq!(planned.enqueued, 0);
    // The wait until the planned tick, by the backend's clock.
    let wait = planned.next_due_in.expect("a tick is planned");
    assert!(wait <= Duration::from_millis(100), "{planned:?}");
    let planned = async || {
        one.scheduler("q", "s")
            .await
            .expect("reads")
            .and_then(|info| info.next_run)
            .expect("a planned tick")
    };
    let mut next = planned().await;
    for round in 0..5 {
        pass(next).await;
        let (a, b) = tokio::join!(one.tick_schedulers("q"), other.tick_schedulers("q"));
        let (a, b) = (a.expect("looks"), b.expect("looks"));
        assert!(a.enqueued + b.enqueued <= 1, "round {round}: {a:?} {b:?}");
        // Each round passes at least one tick, and Missed::Latest makes one
        // job a round.
        let waiting = one.counts("q").await.expect("counts").waiting;
        assert_eq!(waiting, round + 1, "round {round}: {a:?} {b:?}");
        let following = planned().await;
        assert!(following > next);
        next = following;
    }
}

/// Sleeps until the clock is past `at`.
async fn pass(at: SystemTime) {
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
}

/// The ticks that passed while nobody ran the schedulers follow the
/// scheduler's policy.
async fn missed_ticks_follow_the_policy(backend: &Backend) {
    let queues = backend.queues_with(settings()).await;
    let every = Duration::from_millis(100);
    let latest = Schedule::every(every).expect("valid");
    let each = latest
        .clone()
        .missed(Missed::Each { most: 1_000 })
        .expect("valid");
    for (queue, schedule) in [("latest", &latest), ("each", &each)] {
        queues
            .upsert_scheduler(queue, "s", schedule, &0, &JobOptions::new())
            .await
            .expect("upserts");
        queues.tick_schedulers(queue).await.expect("plans");
    }
    let planned = queues
        .scheduler("each", "s")
        .await
        .expect("reads")
        .and_then(|info| info.next_run)
        .expect("planned");
    // At least three ticks pass with nobody looking.
    pass(planned + 2 * every).await;
    queues.tick_schedulers("latest").await.expect("looks");
    queues.tick_schedulers("each").await.expect("looks");
    assert_eq!(queues.counts("latest").await.expect("counts").waiting, 1);
    let each_jobs = ticks_enqueued(&queues, "each").await;
    assert!(each_jobs.len() >= 3, "{each_jobs:?}");
    let mut ticks: Vec<u64> = each_jobs
        .values()
        .map(|tick| tick.clone().expect("a tick").1)
        .collect();
    ticks.sort_unstable();
    let planned_ms = u64::try_from(
        planned
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("fits");
    assert_eq!(
        ticks[0], planned_ms,
        "the catch-up starts at the planned tick"
    );
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 100, "{ticks:?}");
    }
}

/// An unchanged upsert changes nothing; a new template keeps the planned
/// tick, a new schedule plans anew; a paused scheduler makes no job; a
/// removed one is gone.
async fn schedulers_are_changed_paused_and_removed(backend: &Backend) {
    let queues = backend.queues_with(settings()).await;
    let hourly = Schedule::every(Duration::from_secs(3600)).expect("valid");
    let options = JobOptions::new().priority(1).expect("valid");
    let info = async |queues: &Queues| {
        queues
            .scheduler("q", "s")
            .await
            .expect("reads")
            .expect("kept")
    };
    queues
        .upsert_scheduler("q", "s", &hourly, &"a", &options)
        .await
        .expect("upserts");
    queues.tick_schedulers("q").await.expect("plans");
    let first = info(&queues).await;
    assert_eq!(first.schedule, hourly);
    assert_eq!(first.payload, b"\"a\"");
    assert_eq!(first.priority, 1);
    let next = first.next_run.expect("planned");
    assert_eq!(
        next.duration_since(UNIX_EPOCH).expect("after").as_secs() % 3600,
        0
    );
    assert_eq!(first.next_runs(2)[1], next + Duration::from_secs(3600));

    queues
        .upsert_scheduler("q", "s", &hourly, &"a", &options)
        .await
        .expect("upserts");
    assert_eq!(info(&queues).await.revision, first.revision);

    queues
        .upsert_scheduler("q", "s", &hourly, &"b", &options)
        .await
        .expect("upserts");
    let changed = info(&queues).await;
    assert_eq!(changed.revision, first.revision + 1);
    assert_eq!(
        changed.next_run,
        Some(next),
        "a new template keeps the tick"
    );
    assert_eq!(changed.payload, b"\"b\"");

    let cron = Schedule::cron("0 0 * * *", "Asia/Seoul").expect("valid");
    queues
        .upsert_scheduler("q", "s", &cron, &"b", &options)
        .await
        .expect("upserts");
    assert_eq!(
        info(&queues).await.next_run,
        None,
        "a new schedule plans anew"
    );
    queues.tick_schedulers("q").await.expect("plans");
    let midnight = info(&queues).await.next_run.expect("planned");
    assert_eq!(
        midnight
            .duration_since(UNIX_EPOCH)
            .expect("after")
            .as_secs()
            % 86_400,
        15 * 3600,
        "midnight in Seoul is 15:00 UTC"
    );

    assert!(queues.pause_scheduler("q", "s").await.expect("pauses"));
    assert!(info(&queues).await.paused);
    assert_eq!(info(&queues).await.next_run, None);
    assert!(queues.resume_scheduler("q", "s").await.expect("resumes"));
    assert!(!info(&queues).await.paused);

    queues
        .upsert_scheduler("q", "t", &hourly, &"c", &JobOptions::new())
        .await
        .expect("upserts");
    let ids: Vec<String> = queues
        .schedulers("q")
        .await
        .expect("lists")
        .into_iter()
        .map(|info| info.id)
        .collect();
    assert_eq!(ids, ["s", "t"]);
    assert!(queues.remove_scheduler("q", "s").await.expect("removes"));
    assert!(!queues.remove_scheduler("q", "s").await.expect("removes"));
    assert!(queues.scheduler("q", "s").await.expect("reads").is_none());
    assert!(!queues.pause_scheduler("q", "s").await.expect("pauses"));
    assert_eq!(queues.schedulers("q").await.expect("lists").len(), 1);
    assert_eq!(queues.counts("q").await.expect("counts").waiting, 0);
}

/// A paused scheduler's ticks make no job, and resumed it starts after now.
async fn a_paused_scheduler_makes_no_job(backend: &Backend) {
    let queues = backend.queues_with(settings()).await;
    let schedule = Schedule::every(Duration::from_millis(100))
        .expect("valid")
        .missed(Missed::Each { most: 1_000 })
        .expect("valid");
    queues
        .upsert_scheduler("q", "s", &schedule, &0, &JobOptions::new())
        .await
        .expect("upserts");
    queues.tick_schedulers("q").await.expect("plans");
    assert!(queues.pause_scheduler("q", "s").await.expect("pauses"));
    let paused_at = SystemTime::now();
    pass(paused_at + Duration::from_millis(300)).await;
    let report = queues.tick_schedulers("q").await.expect("looks");
    assert_eq!(report.enqueued, 0);
    assert!(queues.resume_scheduler("q", "s").await.expect("resumes"));
    queues.tick_schedulers("q").await.expect("plans");
    assert_eq!(queues.counts("q").await.expect("counts").waiting, 0);
    let resumed = queues
        .scheduler("q", "s")
        .await
        .expect("reads")
        .and_then(|info| info.next_run)
        .expect("planned");
    assert!(resumed > paused_at + Duration::from_millis(300));
}

/// What a scheduler cannot take is a typed error, and nothing is kept.
async fn bad_schedulers_are_refused(backend: &Backend) {
    let queues = backend.queues_with(settings()).await;
    let hourly = Schedule::every(Duration::from_secs(3600)).expect("valid");
    let keyed = JobOptions::new()
        .idempotency_key("k", Duration::from_secs(1))
        .expect("valid");
    let refused = queues.upsert_scheduler("q", "s", &hourly, &0, &keyed).await;
    assert!(
        matches!(refused, Err(Error::InvalidOption(_))),
        "{refused:?}"
    );
    for id in ["", "a b", "{s}", &"s".repeat(129)] {
        let refused = queues
            .upsert_scheduler("q", id, &hourly, &0, &JobOptions::new())
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidName(_))),
            "{id:?}: {refused:?}"
        );
    }
    assert!(queues.schedulers("q").await.expect("lists").is_empty());
    assert!(queues.scheduler("q", "a b").await.expect("reads").is_none());
}

on_every_backend!(
    every_tick_makes_one_job_however_many_processes_run_it,
    racing_looks_enqueue_a_tick_once,
    missed_ticks_follow_the_policy,
    schedulers_are_changed_paused_and_removed,
    a_paused_scheduler_makes_no_job,
    bad_schedulers_are_refused,
);
