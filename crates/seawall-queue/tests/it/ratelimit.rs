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

on_every_backend!(
    a_rate_limit_caps_every_window_across_processes,
    a_handler_can_hold_its_queue,
    bad_rate_limits_are_refused,
);
