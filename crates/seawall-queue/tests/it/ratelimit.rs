//! Rate-limited queues on every backend: no window of the limit's length
//! starts more jobs than the limit, across workers of several processes,
//! and a handler can hold its queue while its downstream limits it.

use std::time::{Duration, UNIX_EPOCH};

use seawall_queue::{Error, Job, JobError, JobOptions, Queues, Settings};
use seawall_testkit::{unique_prefix, wait};

use crate::on_every_backend;
use crate::support::Backend;

/// When each completed job of `queue` started, by the backend's clock, in
/// ms since the epoch, sorted.
async fn starts(queues: &Queues, queue: &str) -> Vec<u64> {
    let mut starts: Vec<u64> = queues
        .jobs(queue, seawall_queue::JobState::Completed, 1_000)
        .await
        .expect("lists")
        .into_iter()
        .map(|job| {
            let at = job.started_at.expect("a completed job started");
            u64::try_from(at.duration_since(UNIX_EPOCH).expect("after").as_millis()).expect("fits")
        })
        .collect();
    starts.sort_unstable();
    starts
}

/// Four workers in two processes share a limit of 5 starts in 400 ms: no
/// window of 400 ms holds more than 5 starts.
async fn a_rate_limit_caps_every_window_across_processes(backend: &Backend) {
    let memory = Queues::memory_with(Settings::default());
    let prefix = unique_prefix();
    let one = backend
        .instance(&memory, &prefix, Settings::default())
        .await;
    let other = backend
        .instance(&memory, &prefix, Settings::default())
        .await;
    let per = Duration::from_millis(400);
    one.set_rate_limit("calls", 5, per).await.expect("limits");
    one.enqueue_many("calls", (0..20_u64).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    let mut workers = Vec::new();
    for queues in [&one, &other, &one, &other] {
        workers.push(
            queues
                .worker("calls")
                .expect("a valid name")
                .concurrency(8)
                .expect("valid")
                .start(|_job: Job<u64>| async { Ok::<_, JobError>(()) }),
        );
    }
    wait::until_async("20 completed jobs", async || {
        one.counts("calls").await.expect("counts").completed == 20
    })
    .await;
    for worker in workers {
        worker.shutdown(Duration::from_secs(5)).await;
    }
    let starts = starts(&one, "calls").await;
    assert_eq!(starts.len(), 20);
    let window = u64::try_from(per.as_millis()).expect("fits");
    for (index, first) in starts.iter().enumerate() {
        let within = starts[index..]
            .iter()
            .take_while(|at| **at < first + window)
            .count();
        assert!(
            within <= 5,
            "{within} starts within {per:?} of {first}: {starts:?}"
        );
    }
    // 20 starts at 5 a window take at least three windows after the first.
    assert!(starts[19] - starts[0] >= 3 * window, "{starts:?}");

    // Cleared, the rest start at once.
    one.clear_rate_limit("calls").await.expect("clears");
    one.enqueue_many("calls", (0..10_u64).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    let worker = one
        .worker("calls")
        .expect("a valid name")
        .concurrency(10)
        .expect("valid")
        .start(|_job: Job<u64>| async { Ok::<_, JobError>(()) });
    wait::until_async("30 completed jobs", async || {
        one.counts("calls").await.expect("counts").completed == 30
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
}

/// A handler that answers "rate limited" puts its job back without an
/// attempt counted, and nothing starts on the queue for the hold.
async fn a_handler_can_hold_its_queue(backend: &Backend) {
    let queues = backend.queues().await;
    let hold = Duration::from_millis(400);
    let id = queues
        .enqueue(
            "sms",
            &1_u64,
            &JobOptions::new().attempts(1).expect("valid"),
        )
        .await
        .expect("enqueues");
    let worker =
        queues
            .worker("sms")
            .expect("a valid name")
            .start(move |job: Job<u64>| async move {
                if job.run() == 1 {
                    return Err(JobError::rate_limited(hold, "the provider answered 429"));
                }
                Ok(())
            });
    wait::until_async("the job to complete on its second run", async || {
        queues.counts("sms").await.expect("counts").completed == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let info = queues.job("sms", &id).await.expect("reads").expect("kept");
    assert_eq!(info.runs, 2);
    assert_eq!(info.failures, 0, "a hold is not a failed attempt");
    assert!(info.errors.is_empty(), "{:?}", info.errors);
    // By the backend's clock: the second run started a hold after the hold.
    let events = queues.events("sms", None, 100).await.expect("reads events");
    let ms = |position: &str| -> u64 {
        position
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .expect("a stream position")
    };
    let held = events
        .iter()
        .find(|event| event.kind == "held")
        .expect("a held event");
    let second = events
        .iter()
        .filter(|event| event.kind == "active")
        .nth(1)
        .expect("a second start");
    let hold_ms = u64::try_from(hold.as_millis()).expect("fits");
    assert!(
        ms(&second.position) >= ms(&held.position) + hold_ms,
        "{events:?}"
    );
}

/// Each group's starts by the backend's clock (ms since the epoch), sorted,
/// of the completed jobs of `queue`.
async fn starts_by_group(
    queues: &Queues,
    queue: &str,
) -> std::collections::BTreeMap<Option<String>, Vec<u64>> {
    let mut by_group = std::collections::BTreeMap::<Option<String>, Vec<u64>>::new();
    for job in queues
        .jobs(queue, seawall_queue::JobState::Completed, 1_000)
        .await
        .expect("lists")
    {
        let at = job.started_at.expect("a completed job started");
        let ms =
            u64::try_from(at.duration_since(UNIX_EPOCH).expect("after").as_millis()).expect("fits");
        by_group.entry(job.group.clone()).or_default().push(ms);
    }
    for starts in by_group.values_mut() {
        starts.sort_unstable();
    }
    by_group
}

/// A group rate limit caps each named group on its own: no window of its
/// length starts more of one group than the limit, while jobs without a
/// group are not held to it.
async fn a_group_rate_limit_caps_each_group_on_its_own(backend: &Backend) {
    let queues = backend.queues().await;
    let per = Duration::from_millis(400);
    queues
        .set_group_rate_limit("calls", 2, per)
        .await
        .expect("limits");
    for group in ["a", "b"] {
        let options = JobOptions::new().group(group).expect("valid");
        queues
            .enqueue_many("calls", (0..6_u64).map(|n| (n, options.clone())))
            .await
            .expect("enqueues");
    }
    queues
        .enqueue_many("calls", (0..4_u64).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    let worker = queues
        .worker("calls")
        .expect("a valid name")
        .concurrency(8)
        .expect("valid")
        .start(|_job: Job<u64>| async { Ok::<_, JobError>(()) });
    wait::until_async("16 completed jobs", async || {
        queues.counts("calls").await.expect("counts").completed == 16
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let window = u64::try_from(per.as_millis()).expect("fits");
    let by_group = starts_by_group(&queues, "calls").await;
    for group in ["a", "b"] {
        let starts = &by_group[&Some(group.to_owned())];
        assert_eq!(starts.len(), 6);
        for (index, first) in starts.iter().enumerate() {
            let within = starts[index..]
                .iter()
                .take_while(|at| **at < first + window)
                .count();
            assert!(
                within <= 2,
                "group {group}: {within} starts within {per:?}: {starts:?}"
            );
        }
        assert!(starts[5] - starts[0] >= 2 * window, "{group}: {starts:?}");
    }
    assert_eq!(by_group[&None].len(), 4);
    let refused = queues.set_group_rate_limit("calls", 0, per).await;
    assert!(
        matches!(refused, Err(Error::InvalidSetting(_))),
        "{refused:?}"
    );
    queues
        .clear_group_rate_limit("calls")
        .await
        .expect("clears");
}

/// Holds `queue`'s first job's group (`a`) for `hold` on its first run;
/// answers the job's id and the worker.
async fn holding_worker(
    queues: &Queues,
    queue: &str,
    hold: Duration,
) -> (seawall_queue::JobId, seawall_queue::Worker) {
    let held = queues
        .enqueue(queue, &1_u64, &JobOptions::new().group("a").expect("valid"))
        .await
        .expect("enqueues");
    let worker = queues
        .worker(queue)
        .expect("a valid name")
        .concurrency(4)
        .expect("valid")
        .start(move |job: Job<u64>| async move {
            if job.payload == 1 && job.run() == 1 {
                return Err(JobError::group_rate_limited(hold, "tenant a's quota"));
            }
            Ok(())
        });
    wait::until_async("the hold", async || {
        queues
            .events(queue, None, 100)
            .await
            .expect("reads events")
            .iter()
            .any(|event| event.kind == "held")
    })
    .await;
    (held, worker)
}

/// A handler can hold its job's group alone: while it is held, the other
/// groups go on and the held group's jobs wait, none counted as failed;
/// after the hold, they run.
async fn a_handler_can_hold_its_group(backend: &Backend) {
    let queues = backend.queues().await;
    // Held for longer than the test: the other group's job completes while
    // the held group's wait.
    let (held, worker) = holding_worker(&queues, "sms-long", Duration::from_secs(600)).await;
    let same = queues
        .enqueue(
            "sms-long",
            &3_u64,
            &JobOptions::new().group("a").expect("valid"),
        )
        .await
        .expect("enqueues");
    queues
        .enqueue(
            "sms-long",
            &2_u64,
            &JobOptions::new().group("b").expect("valid"),
        )
        .await
        .expect("enqueues");
    wait::until_async("the other group's job to complete", async || {
        queues.counts("sms-long").await.expect("counts").completed == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    for id in [&held, &same] {
        let info = queues
            .job("sms-long", id)
            .await
            .expect("reads")
            .expect("kept");
        assert_eq!(info.state, seawall_queue::JobState::Waiting, "{info:?}");
        assert_eq!(info.failures, 0, "a hold is not a failure");
    }

    // A short hold: the held group's jobs start once it ends, by the
    // backend's clock.
    let hold = Duration::from_millis(300);
    let (held, worker) = holding_worker(&queues, "sms", hold).await;
    let same = queues
        .enqueue("sms", &3_u64, &JobOptions::new().group("a").expect("valid"))
        .await
        .expect("enqueues");
    wait::until_async("both of the held group's jobs to complete", async || {
        queues.counts("sms").await.expect("counts").completed == 2
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let events = queues.events("sms", None, 100).await.expect("reads events");
    let ms = |position: &str| -> u64 {
        position
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .expect("a stream position")
    };
    let held_at = ms(&events
        .iter()
        .find(|event| event.kind == "held")
        .expect("held")
        .position);
    let hold_ms = u64::try_from(hold.as_millis()).expect("fits");
    for id in [&held, &same] {
        let started = events
            .iter()
            .filter(|event| event.kind == "active" && event.job == *id)
            .map(|event| ms(&event.position))
            .next_back()
            .expect("started");
        assert!(started >= held_at + hold_ms, "{events:?}");
    }
}

/// Limits out of range are typed errors.
async fn bad_rate_limits_are_refused(backend: &Backend) {
    let queues = backend.queues().await;
    for (max, per) in [
        (0, Duration::from_secs(1)),
        (1_000_001, Duration::from_secs(1)),
        (1, Duration::ZERO),
        (1, Duration::from_secs(400 * 24 * 3600)),
    ] {
        let refused = queues.set_rate_limit("q", max, per).await;
        assert!(
            matches!(refused, Err(Error::InvalidSetting(_))),
            "{max} per {per:?}: {refused:?}"
        );
    }
    let refused = queues
        .set_rate_limit("a b", 1, Duration::from_secs(1))
        .await;
    assert!(matches!(refused, Err(Error::InvalidName(_))), "{refused:?}");
}

/// The limits read back as set, with the starts of the window ending now
/// and a handler's hold while it lasts.
async fn the_limits_read_back(backend: &Backend) {
    let queues = backend.queues().await;
    let none = queues.limits("mail").await.expect("reads");
    assert_eq!(none, seawall_queue::Limits::default());

    let second = Duration::from_secs(1);
    let minute = Duration::from_secs(60);
    queues
        .set_rate_limit("mail", 3, minute)
        .await
        .expect("limits");
    queues
        .set_group_rate_limit("mail", 2, second)
        .await
        .expect("limits");
    queues.set_group_limit("mail", Some(4)).await.expect("caps");
    queues
        .enqueue_many("mail", (0..5_u64).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    let worker = queues
        .worker("mail")
        .expect("a valid name")
        .concurrency(5)
        .expect("valid")
        .start(|_job: Job<u64>| async { Ok::<_, JobError>(()) });
    wait::until_async("three jobs to complete", async || {
        queues.counts("mail").await.expect("counts").completed == 3
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let limits = queues.limits("mail").await.expect("reads");
    assert_eq!(
        limits.rate,
        Some(seawall_queue::RateLimit {
            max: 3,
            per: minute
        })
    );
    assert_eq!(
        limits.started_in_window, 3,
        "the window of a minute holds the three starts"
    );
    assert_eq!(
        limits.group_rate,
        Some(seawall_queue::RateLimit {
            max: 2,
            per: second
        })
    );
    assert_eq!(limits.group_concurrency, Some(4));
    assert_eq!(limits.held_for, None);

    // A handler's hold shows while it lasts.
    queues.clear_rate_limit("mail").await.expect("clears");
    let hold = Duration::from_secs(30);
    let worker =
        queues
            .worker("mail")
            .expect("a valid name")
            .start(move |_job: Job<u64>| async move {
                Err::<(), _>(JobError::rate_limited(hold, "429"))
            });
    wait::until_async("a hold", async || {
        queues
            .limits("mail")
            .await
            .expect("reads")
            .held_for
            .is_some()
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let limits = queues.limits("mail").await.expect("reads");
    assert_eq!(limits.rate, None);
    assert_eq!(limits.started_in_window, 0);
    assert!(
        limits.held_for.is_some_and(|left| left <= hold),
        "{limits:?}"
    );

    queues.clear_group_rate_limit("mail").await.expect("clears");
    queues.set_group_limit("mail", None).await.expect("uncaps");
    let limits = queues.limits("mail").await.expect("reads");
    assert_eq!((limits.group_rate, limits.group_concurrency), (None, None));
    assert!(matches!(
        queues.limits("bad name").await,
        Err(Error::InvalidName(_))
    ));
}

on_every_backend!(
    the_limits_read_back,
    a_group_rate_limit_caps_each_group_on_its_own,
    a_handler_can_hold_its_group,
    a_rate_limit_caps_every_window_across_processes,
    a_handler_can_hold_its_queue,
    bad_rate_limits_are_refused,
);
