//! Recurring jobs on every backend: each tick of a scheduler makes exactly
//! one job, however many processes run the schedulers, enqueued ahead of
//! its tick (delayed until then) so that it is in the queue when due.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seawall_queue::{Error, JobId, JobOptions, Missed, Queues, Schedule, Settings};
use seawall_testkit::{unique_prefix, wait};

use crate::on_every_backend;
use crate::support::{Backend, all_events};

/// Every job `queue`'s event stream says was enqueued and not cancelled
/// (a change to a scheduler cancels the job it enqueued ahead), with the
/// scheduler tick its record names (ms since the epoch).
pub(crate) async fn ticks_enqueued(
    queues: &Queues,
    queue: &str,
) -> BTreeMap<JobId, Option<(String, u64)>> {
    let mut jobs = BTreeMap::new();
    let events = all_events(queues, queue).await;
    let cancelled: std::collections::HashSet<JobId> = events
        .iter()
        .filter(|event| event.kind == "cancelled")
        .map(|event| event.job.clone())
        .collect();
    for event in events {
        if event.kind != "enqueued" || cancelled.contains(&event.job) {
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
    // Nobody fetches, so the jobs of ticks that came stay delayed too.
    wait::until_async("eight ticks enqueued", async || {
        let counts = first.counts("reports").await.expect("counts");
        counts.waiting + counts.delayed >= 8
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
    // The latest tick with a job: the next run, enqueued ahead, while it
    // is still to come; else the last run.
    let latest = UNIX_EPOCH + Duration::from_millis(*ticks.last().expect("ticks"));
    let (latest_tick, latest_job) = match (info.next_run, info.next_job.clone()) {
        (Some(tick), Some(job)) => (tick, job),
        _ => info.last_run.clone().expect("a last run"),
    };
    assert_eq!(latest_tick, latest, "{info:?}");
    assert!(jobs.contains_key(&latest_job));
    if let Some((last_tick, last_job)) = info.last_run.clone() {
        assert!(last_tick <= latest);
        assert!(jobs.contains_key(&last_job));
    }
    // Racing processes do race: not asserted, a quiet machine may let one
    // runner take every tick.
    let _ = raced;
}

/// Two looks at a due scheduler at once: one enqueues its ticks, the
/// other nothing.
async fn racing_looks_enqueue_a_tick_once(backend: &Backend) {
    let memory = Queues::memory_with(settings());
    let prefix = unique_prefix();
    let one = backend.instance(&memory, &prefix, settings()).await;
    let other = backend.instance(&memory, &prefix, settings()).await;
    let schedule = Schedule::every(Duration::from_millis(100)).expect("valid");
    one.upsert_scheduler("q", "s", &schedule, &1, &JobOptions::new())
        .await
        .expect("upserts");
    // The first look enqueues the first tick ahead, delayed until it; and,
    // on a machine slow enough that a tick after the upsert has passed by
    // the look (a tick is 100 ms), that tick too.
    let planned = one.tick_schedulers("q").await.expect("looks");
    assert!((1..=2).contains(&planned.enqueued), "{planned:?}");
    // The wait until that tick, by the backend's clock: then the tick
    // after it is enqueued ahead.
    let planned_first = planned.enqueued;
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
    let mut jobs = planned_first;
    for round in 0..5 {
        pass(next).await;
        let (a, b) = tokio::join!(one.tick_schedulers("q"), other.tick_schedulers("q"));
        let (a, b) = (a.expect("looks"), b.expect("looks"));
        // One look takes the plan; the other finds it moved on.
        assert!(
            a.enqueued == 0 || b.enqueued == 0,
            "round {round}: {a:?} {b:?}"
        );
        // The tick to come, and one that passed unseen if the looks came
        // late (Missed::Latest).
        let enqueued = a.enqueued + b.enqueued;
        assert!((1..=2).contains(&enqueued), "round {round}: {a:?} {b:?}");
        jobs += enqueued;
        let counts = one.counts("q").await.expect("counts");
        assert_eq!(counts.waiting + counts.delayed, jobs, "round {round}");
        let following = planned().await;
        assert!(following > next);
        next = following;
    }
    let ticks = ticks_enqueued(&one, "q").await;
    let mut distinct: Vec<u64> = ticks
        .values()
        .map(|tick| tick.clone().expect("a tick").1)
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len() as u64,
        jobs,
        "a tick made two jobs: {ticks:?}"
    );
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
    // The first look enqueued the first tick ahead; and the one that passed
    // too, when a tick went by between the upsert and the look (a loaded
    // machine can take 100 ms between two calls).
    let ticks_of = async |queue: &str| -> Vec<u64> {
        let mut ticks: Vec<u64> = ticks_enqueued(&queues, queue)
            .await
            .values()
            .map(|tick| tick.clone().expect("a tick").1)
            .collect();
        ticks.sort_unstable();
        ticks
    };
    let first = ticks_of("each").await;
    let latest_first = ticks_of("latest").await;
    for ticks in [&first, &latest_first] {
        assert!((1..=2).contains(&ticks.len()), "{ticks:?}");
    }
    let planned_ms = first[0];
    let ahead = UNIX_EPOCH + Duration::from_millis(first[first.len() - 1]);
    let latest_ahead = latest_first[latest_first.len() - 1];
    // At least two more ticks of each scheduler pass with nobody looking
    // (the "latest" scheduler was looked at first: its ticks are never
    // later than the other's).
    pass(ahead + 2 * every).await;
    queues.tick_schedulers("latest").await.expect("looks");
    queues.tick_schedulers("each").await.expect("looks");
    // Missed::Latest: past the first look's, only the latest tick that
    // passed and the one to come, ahead.
    let latest_ticks: Vec<u64> = ticks_of("latest")
        .await
        .into_iter()
        .filter(|tick| !latest_first.contains(tick))
        .collect();
    assert_eq!(
        latest_ticks.len(),
        2,
        "{latest_first:?} then {latest_ticks:?}"
    );
    assert!(
        latest_ticks[0] >= latest_ahead + 2 * 100,
        "the ticks between were skipped: {latest_first:?} then {latest_ticks:?}"
    );
    assert_eq!(latest_ticks[1], latest_ticks[0] + 100, "{latest_ticks:?}");
    let each_jobs = ticks_enqueued(&queues, "each").await;
    assert!(each_jobs.len() >= 4, "{each_jobs:?}");
    let mut ticks: Vec<u64> = each_jobs
        .values()
        .map(|tick| tick.clone().expect("a tick").1)
        .collect();
    ticks.sort_unstable();
    assert_eq!(
        ticks[0], planned_ms,
        "the catch-up starts at the planned tick"
    );
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 100, "{ticks:?}");
    }
}

/// Scheduler `s` of queue `q`.
async fn info(queues: &Queues) -> seawall_queue::SchedulerInfo {
    queues
        .scheduler("q", "s")
        .await
        .expect("reads")
        .expect("kept")
}

/// An unchanged upsert changes nothing; a new template keeps the planned
/// tick, a new schedule plans anew; a paused scheduler makes no job; a
/// removed one is gone.
async fn schedulers_are_changed_paused_and_removed(backend: &Backend) {
    let queues = backend.queues_with(settings()).await;
    let hourly = Schedule::every(Duration::from_secs(3600)).expect("valid");
    let options = JobOptions::new().priority(1).expect("valid");
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
    // No tick of the pause made a job: the one enqueued ahead before it
    // was cancelled unless its tick had come.
    let paused_ms = u64::try_from(
        paused_at
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("fits");
    let ticks = ticks_enqueued(&queues, "q").await;
    assert!(
        ticks.values().all(|tick| {
            let at = tick.clone().expect("a tick").1;
            at <= paused_ms || at > paused_ms + 300
        }),
        "{ticks:?}"
    );
    let resumed = queues
        .scheduler("q", "s")
        .await
        .expect("reads")
        .and_then(|info| info.next_run)
        .expect("planned");
    assert!(resumed > paused_at + Duration::from_millis(300));
}

fn ms(at: SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("fits")
}

/// A new, changed or resumed scheduler runs from its first tick after the
/// call, not after the runner's next look: the ticks between the call and
/// a look that comes later follow the missed-ticks policy (here, each one
/// runs) instead of being lost.
async fn the_first_tick_after_a_change_runs_however_late_the_look(backend: &Backend) {
    let queues = backend.queues_with(settings()).await;
    let every = Duration::from_millis(100);
    let schedule = Schedule::every(every)
        .expect("valid")
        .missed(Missed::Each { most: 1_000 })
        .expect("valid");
    let first_tick_after = |at: SystemTime| (ms(at) / 100 + 1) * 100;
    queues
        .upsert_scheduler("q", "s", &schedule, &0, &JobOptions::new())
        .await
        .expect("upserts");
    // By then the backend took the call: its first tick after is at most
    // this one's.
    let created = SystemTime::now();
    // The look comes three ticks later.
    pass(created + 3 * every + Duration::from_millis(50)).await;
    queues.tick_schedulers("q").await.expect("looks");
    let mut ticks: Vec<u64> = ticks_enqueued(&queues, "q")
        .await
        .into_values()
        .map(|tick| tick.expect("a tick").1)
        .collect();
    ticks.sort_unstable();
    assert!(
        ticks
            .first()
            .is_some_and(|first| *first <= first_tick_after(created)),
        "the first tick after the upsert ({}) made a job: {ticks:?}",
        first_tick_after(created)
    );

    assert!(queues.pause_scheduler("q", "s").await.expect("pauses"));
    let paused = SystemTime::now();
    assert!(queues.resume_scheduler("q", "s").await.expect("resumes"));
    let resumed = SystemTime::now();
    pass(resumed + 3 * every + Duration::from_millis(50)).await;
    queues.tick_schedulers("q").await.expect("looks");
    let after_resume: Vec<u64> = ticks_enqueued(&queues, "q")
        .await
        .into_values()
        .map(|tick| tick.expect("a tick").1)
        .filter(|tick| *tick > ms(paused))
        .collect();
    assert!(
        after_resume
            .iter()
            .min()
            .is_some_and(|first| *first <= first_tick_after(resumed)),
        "the first tick after the resume (at most {}) made a job: {after_resume:?}",
        first_tick_after(resumed)
    );
}

/// A tick to come within the lead has its job in the queue already,
/// delayed until the tick; a change to the scheduler (a new template, a
/// pause, its removal) cancels that job, and a new template makes it again
/// for the same tick.
async fn a_tick_to_come_is_enqueued_ahead_and_a_change_cancels_it(backend: &Backend) {
    let queues = backend.queues_with(settings()).await;
    let hourly = Schedule::every(Duration::from_secs(3600)).expect("valid");
    let lead = Duration::from_secs(2 * 3600);
    queues
        .upsert_scheduler("q", "s", &hourly, &"a", &JobOptions::new())
        .await
        .expect("upserts");
    let report = queues
        .tick_schedulers_within("q", lead)
        .await
        .expect("looks");
    assert_eq!(report.enqueued, 1);
    let ahead = info(&queues).await;
    let tick = ahead.next_run.expect("the next tick");
    assert_eq!(
        tick.duration_since(UNIX_EPOCH).expect("after").as_secs() % 3600,
        0
    );
    let job = ahead.next_job.clone().expect("its job, enqueued ahead");
    assert_eq!(ahead.last_run, None);
    let held = queues.job("q", &job).await.expect("reads").expect("kept");
    assert_eq!(held.state, seawall_queue::JobState::Delayed);
    assert_eq!(held.ready_at, tick, "ready at its tick");
    assert_eq!(held.payload, b"\"a\"");
    // Looked at again before that tick: nothing more (one tick ahead).
    let again = queues
        .tick_schedulers_within("q", lead)
        .await
        .expect("looks");
    assert_eq!((again.enqueued, again.raced), (0, 0));

    // A new template: the job goes, and the tick is made again from it.
    queues
        .upsert_scheduler("q", "s", &hourly, &"b", &JobOptions::new())
        .await
        .expect("upserts");
    assert!(queues.job("q", &job).await.expect("reads").is_none());
    let changed = info(&queues).await;
    assert_eq!(
        (changed.next_run, changed.next_job.clone()),
        (Some(tick), None)
    );
    queues
        .tick_schedulers_within("q", lead)
        .await
        .expect("looks");
    let remade = info(&queues).await;
    assert_eq!(remade.next_run, Some(tick));
    let job = remade.next_job.expect("made again");
    let held = queues.job("q", &job).await.expect("reads").expect("kept");
    assert_eq!(held.payload, b"\"b\"");
    assert_eq!(held.ready_at, tick);

    // Paused: the job goes; resumed, the tick is planned anew.
    assert!(queues.pause_scheduler("q", "s").await.expect("pauses"));
    assert!(queues.job("q", &job).await.expect("reads").is_none());
    assert!(queues.resume_scheduler("q", "s").await.expect("resumes"));
    queues
        .tick_schedulers_within("q", lead)
        .await
        .expect("looks");
    let job = info(&queues).await.next_job.expect("made again");

    // Removed: the job goes too.
    assert!(queues.remove_scheduler("q", "s").await.expect("removes"));
    assert!(queues.job("q", &job).await.expect("reads").is_none());
    assert_eq!(queues.counts("q").await.expect("counts").delayed, 0);
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
    the_first_tick_after_a_change_runs_however_late_the_look,
    a_tick_to_come_is_enqueued_ahead_and_a_change_cancels_it,
    bad_schedulers_are_refused,
);
