//! One suite for every backend: memory, Redis and Redis Cluster give the
//! same answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_queue::{
    Backoff, Cancelled, Counts, Error, Finished, Job, JobError, JobId, JobOptions, JobState,
    Queues, Settings,
};

use seawall_testkit::wait;

use crate::on_every_backend;
use crate::support::Backend;

/// Payloads in the order their handler saw them.
type Seen = Arc<Mutex<Vec<u64>>>;

fn recorder(seen: &Seen) -> impl Fn(Job<u64>) -> std::future::Ready<Result<(), JobError>> + use<> {
    let seen = Arc::clone(seen);
    move |job: Job<u64>| {
        seen.lock().push(job.payload);
        std::future::ready(Ok(()))
    }
}

/// Waits until `queue`'s counts satisfy `check`, which `what` names in the
/// failure message, with the last counts seen.
async fn counts_reach(queues: &Queues, queue: &str, what: &str, check: impl Fn(&Counts) -> bool) {
    let began = Instant::now();
    loop {
        let counts = queues.counts(queue).await.expect("counts");
        if check(&counts) {
            return;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for {what} in {queue}; last counts {counts:?}",
            wait::patience()
        );
        tokio::time::sleep(wait::POLL).await;
    }
}

async fn completed(queues: &Queues, queue: &str, jobs: u64) {
    let what = format!("{jobs} completed jobs");
    counts_reach(queues, queue, &what, |counts| counts.completed >= jobs).await;
}

fn options() -> JobOptions {
    JobOptions::new()
}

async fn every_job_is_completed_once(backend: &Backend) {
    let queues = backend.queues().await;
    for n in 0..60_u64 {
        queues
            .enqueue("email", &n, &options())
            .await
            .expect("enqueues");
    }
    assert_eq!(queues.counts("email").await.expect("counts").waiting, 60);
    let seen = Seen::default();
    let worker = queues
        .worker("email")
        .expect("a valid name")
        .concurrency(4)
        .expect("valid")
        .start(recorder(&seen));
    completed(&queues, "email", 60).await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.completed, 60, "{stats:?}");
    let mut seen = seen.lock().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
    let counts = queues.counts("email").await.expect("counts");
    assert_eq!(
        (counts.waiting, counts.active, counts.completed),
        (0, 0, 60)
    );
}

/// A worker keeps two fetch calls in flight, each for up to half its
/// slots (at 20, more than the fewest a call may fill): together they fill
/// the slots, and never run more jobs at once than the concurrency.
async fn a_worker_fills_its_concurrency_and_never_passes_it(backend: &Backend) {
    const CONCURRENCY: usize = 20;
    const JOBS: u64 = 60;
    let queues = backend.queues().await;
    for n in 0..JOBS {
        queues
            .enqueue("render", &n, &options())
            .await
            .expect("enqueues");
    }
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let worker = queues
        .worker("render")
        .expect("a valid name")
        .concurrency(CONCURRENCY)
        .expect("valid")
        .start({
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            move |_job: Job<u64>| {
                let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                async move {
                    peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), JobError>(())
                }
            }
        });
    completed(&queues, "render", JOBS).await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.completed, JOBS, "{stats:?}");
    let peak = peak.load(Ordering::SeqCst);
    // A call takes at most half the slots: a peak above half means more
    // than one call's jobs ran at once.
    assert!(
        peak <= CONCURRENCY && peak > CONCURRENCY / 2,
        "{peak} jobs ran at once"
    );
}

async fn priorities_run_first_and_each_level_in_order(backend: &Backend) {
    let queues = backend.queues().await;
    queues.pause("q").await.expect("pauses");
    let levels = [3_u8, 0, 7, 0, 3, 1, 7, 1];
    for (n, level) in (0_u64..).zip(levels) {
        let options = options().priority(level).expect("valid");
        queues.enqueue("q", &n, &options).await.expect("enqueues");
    }
    let seen = Seen::default();
    let worker = queues
        .worker("q")
        .expect("valid")
        .concurrency(1)
        .expect("valid");
    let worker = worker.start(recorder(&seen));
    queues.resume("q").await.expect("resumes");
    completed(&queues, "q", 8).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*seen.lock(), [1, 3, 5, 7, 0, 4, 2, 6]);
}

async fn a_paused_queue_starts_nothing_until_resumed(backend: &Backend) {
    let queues = backend.queues().await;
    queues.pause("q").await.expect("pauses");
    let seen = Seen::default();
    let worker = queues.worker("q").expect("valid").start(recorder(&seen));
    queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = queues.counts("q").await.expect("counts");
    assert!(counts.paused);
    assert_eq!((counts.waiting, counts.completed), (1, 0));
    queues.resume("q").await.expect("resumes");
    completed(&queues, "q", 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_delayed_job_waits_for_its_time(backend: &Backend) {
    let queues = backend.queues().await;
    let seen = Seen::default();
    let worker = queues.worker("q").expect("valid").start(recorder(&seen));
    let enqueued = Instant::now();
    let delay = Duration::from_millis(400);
    let id = queues
        .enqueue("q", &1_u64, &options().delay(delay).expect("valid"))
        .await
        .expect("enqueues");
    let job = queues.job("q", &id).await.expect("reads").expect("exists");
    assert_eq!(job.state, JobState::Delayed);
    completed(&queues, "q", 1).await;
    assert!(
        enqueued.elapsed() >= delay,
        "ran after {:?}",
        enqueued.elapsed()
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn failures_retry_with_backoff_then_go_to_the_dead_set_with_their_history(backend: &Backend) {
    let queues = backend.queues().await;
    let options = options()
        .attempts(3)
        .and_then(|options| options.backoff(Backoff::fixed(Duration::from_millis(100))))
        .expect("valid");
    let id = queues
        .enqueue("q", &7_u64, &options)
        .await
        .expect("enqueues");
    let runs = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&runs);
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(move |job: Job<u64>| {
            seen.lock()
                .push((Instant::now(), job.run(), job.failures()));
            let run = job.run();
            async move { Err::<(), _>(JobError::new(format!("boom {run}"))) }
        });
    counts_reach(&queues, "q", "the job dead", |counts| counts.dead == 1).await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.failed, stats.dead), (3, 1), "{stats:?}");
    let runs = runs.lock().clone();
    assert_eq!(
        runs.iter()
            .map(|(_, run, failures)| (*run, *failures))
            .collect::<Vec<_>>(),
        [(1, 0), (2, 1), (3, 2)]
    );
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(90),
            "backoff kept"
        );
    }
    let job = queues.job("q", &id).await.expect("reads").expect("kept");
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.failures, 3);
    let errors: Vec<_> = job
        .errors
        .iter()
        .map(|e| (e.attempt, e.error.as_str()))
        .collect();
    assert_eq!(errors, [(1, "boom 1"), (2, "boom 2"), (3, "boom 3")]);
    let kinds: Vec<String> = queues
        .events("q", None, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|event| event.kind)
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(
        (count("failed"), count("retried"), count("dead")),
        (3, 2, 1),
        "{kinds:?}"
    );
}

async fn permanent_errors_and_undecodable_payloads_go_straight_to_the_dead_set(backend: &Backend) {
    let queues = backend.queues().await;
    let bad = queues
        .enqueue("q", &"not a number", &options())
        .await
        .expect("enqueues");
    let refused = queues
        .enqueue("q", &0_u64, &options())
        .await
        .expect("enqueues");
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(move |job: Job<u64>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let payload = job.payload;
            async move {
                Err::<(), _>(JobError::permanent(format!(
                    "user {payload} does not exist"
                )))
            }
        });
    counts_reach(&queues, "q", "both jobs dead", |counts| counts.dead == 2).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the undecodable job never ran"
    );
    let bad = queues.job("q", &bad).await.expect("reads").expect("kept");
    assert_eq!((bad.state, bad.failures), (JobState::Dead, 1));
    assert!(
        bad.errors[0].error.contains("cannot be decoded"),
        "{:?}",
        bad.errors
    );
    let refused = queues
        .job("q", &refused)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(refused.errors[0].error, "user 0 does not exist");
}

async fn an_idempotency_key_answers_with_the_first_job_within_its_window(backend: &Backend) {
    let queues = backend.queues().await;
    // Seconds more than the calls below take on a loaded machine, all of
    // which must fall within it.
    let window = Duration::from_secs(3);
    let keyed = |key: &str| options().idempotency_key(key, window).expect("valid");
    let first = queues
        .enqueue("q", &1_u64, &keyed("order-1"))
        .await
        .expect("enqueues");
    let again = queues
        .enqueue("q", &1_u64, &keyed("order-1"))
        .await
        .expect("enqueues");
    let other = queues
        .enqueue("q", &3_u64, &keyed("order-2"))
        .await
        .expect("enqueues");
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_eq!(queues.counts("q").await.expect("counts").waiting, 2);
    let job = queues.job("q", &first).await.expect("reads").expect("kept");
    assert_eq!(
        job.payload_as::<u64>().expect("decodes"),
        1,
        "the first payload stays"
    );
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    let later = queues
        .enqueue("q", &4_u64, &keyed("order-1"))
        .await
        .expect("enqueues");
    assert_ne!(later, first, "the window has passed");
    let many = queues
        .enqueue_many("q", [(5_u64, keyed("order-3")), (5, keyed("order-3"))])
        .await
        .expect("enqueues");
    assert_eq!(many[0], many[1], "a key repeated within one bulk");
}

fn refused_for<T>(result: &Result<T, Error>, key: &str) -> bool {
    matches!(result, Err(Error::IdempotencyMismatch { key: held }) if held == key)
}

/// An idempotency key promises one job: the same key with another payload
/// or other options is refused, as the IETF idempotency-key draft answers
/// 422, and adds nothing, also within one bulk.
async fn an_idempotency_key_refuses_a_different_job(backend: &Backend) {
    let queues = backend.queues().await;
    let window = Duration::from_secs(60);
    let keyed = |key: &str| options().idempotency_key(key, window).expect("valid");
    let first = queues
        .enqueue("q", &1_u64, &keyed("order-1"))
        .await
        .expect("enqueues");
    let other_payload = queues.enqueue("q", &2_u64, &keyed("order-1")).await;
    assert!(refused_for(&other_payload, "order-1"), "{other_payload:?}");
    let urgent = keyed("order-1").priority(1).expect("valid");
    let other_options = queues.enqueue("q", &1_u64, &urgent).await;
    assert!(refused_for(&other_options, "order-1"), "{other_options:?}");
    let same = queues
        .enqueue("q", &1_u64, &keyed("order-1"))
        .await
        .expect("answers");
    assert_eq!(same, first);

    let bulk = queues
        .enqueue_many("q", [(3_u64, keyed("order-2")), (4, keyed("order-1"))])
        .await;
    assert!(refused_for(&bulk, "order-1"), "{bulk:?}");
    let within = queues
        .enqueue_many("q", [(5_u64, keyed("order-3")), (6, keyed("order-3"))])
        .await;
    assert!(refused_for(&within, "order-3"), "{within:?}");
    assert_eq!(
        queues.counts("q").await.expect("counts").waiting,
        1,
        "nothing of a refused call was added"
    );
}

async fn a_bulk_enqueue_keeps_order_and_adds_nothing_when_one_job_is_bad(backend: &Backend) {
    let queues = backend.queues().await;
    let ids = queues
        .enqueue_many("q", (0..2_500_u64).map(|n| (n, options())))
        .await
        .expect("enqueues");
    assert_eq!(ids.len(), 2_500);
    let numbers: Vec<u64> = ids
        .iter()
        .map(|id| id.sequence().expect("a sequence"))
        .collect();
    assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(queues.counts("q").await.expect("counts").waiting, 2_500);

    // A map with non-text keys cannot be JSON.
    let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let good: HashMap<(u8, u8), u8> = HashMap::new();
    let refused = queues
        .enqueue_many("q", [(good, options()), (bad, options())])
        .await;
    assert!(matches!(refused, Err(Error::Encode(_))), "{refused:?}");
    let huge = "x".repeat(seawall_queue::MAX_PAYLOAD_BYTES);
    let refused = queues.enqueue("q", &huge, &options()).await;
    assert!(
        matches!(refused, Err(Error::InvalidOption(_))),
        "{refused:?}"
    );
    for name in ["", "a{b}", "with space", &"q".repeat(200)] {
        let refused = queues.enqueue(name, &1_u64, &options()).await;
        assert!(matches!(refused, Err(Error::InvalidName(_))), "{name:?}");
    }
    assert_eq!(queues.counts("q").await.expect("counts").waiting, 2_500);
}

async fn cancel_removes_waiting_and_delayed_jobs_and_stops_running_ones(backend: &Backend) {
    let queues = backend.queues().await;
    let waiting = queues
        .enqueue("idle", &1_u64, &options())
        .await
        .expect("enqueues");
    let delay = options().delay(Duration::from_secs(60)).expect("valid");
    let delayed = queues
        .enqueue("idle", &2_u64, &delay)
        .await
        .expect("enqueues");
    assert_eq!(
        queues.cancel("idle", &waiting).await.expect("cancels"),
        Cancelled::Removed
    );
    assert_eq!(
        queues.cancel("idle", &delayed).await.expect("cancels"),
        Cancelled::Removed
    );
    assert!(queues.job("idle", &waiting).await.expect("reads").is_none());
    let counts = queues.counts("idle").await.expect("counts");
    assert_eq!((counts.waiting, counts.delayed), (0, 0));
    let unknown = JobId::from("999999");
    assert_eq!(
        queues.cancel("idle", &unknown).await.expect("answers"),
        Cancelled::NotFound
    );

    let running = queues
        .enqueue("busy", &3_u64, &options())
        .await
        .expect("enqueues");
    // The request reaches the run with the next renewal, every third of
    // the lease; a lease of seconds leaves a renewal held up on a loaded
    // machine seconds to spare (a lapsed lease would drop the job as
    // stalled, not cancelled).
    let worker = queues
        .worker("busy")
        .and_then(|worker| worker.lease(Duration::from_secs(9)))
        .expect("valid")
        .start(|job: Job<u64>| async move {
            job.cancellation().cancelled().await;
            Err::<(), _>(JobError::new("stopped on request"))
        });
    counts_reach(&queues, "busy", "the job active", |counts| {
        counts.active == 1
    })
    .await;
    assert_eq!(
        queues.cancel("busy", &running).await.expect("cancels"),
        Cancelled::Requested
    );
    wait::until_async(
        "the cancelled job to be dropped once its handler stopped",
        async || queues.job("busy", &running).await.expect("reads").is_none(),
    )
    .await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.cancelled, stats.failed), (1, 0), "{stats:?}");

    let done = queues
        .enqueue("busy", &4_u64, &options())
        .await
        .expect("enqueues");
    let seen = Seen::default();
    let worker = queues.worker("busy").expect("valid").start(recorder(&seen));
    completed(&queues, "busy", 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        queues.cancel("busy", &done).await.expect("answers"),
        Cancelled::AlreadyFinished(JobState::Completed)
    );
}

/// A worker in "another process" (a runtime of its own in another thread,
/// with connections of its own on Redis) whose handler blocks that whole
/// runtime, lease renewals included, from when it takes a job until the
/// test thaws it: a frozen process, as a long pause or SIGSTOP would leave
/// it. The test thaws it once it has seen what the freeze led to, so how
/// long that took does not matter.
struct Frozen {
    took: Arc<AtomicBool>,
    thaw: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<seawall_queue::WorkerStats>,
}

impl Frozen {
    fn start(backend: &Backend, queues: &Queues, prefix: &str, settings: &Settings) -> Self {
        let (backend, queues, prefix, settings) = (
            backend.clone(),
            queues.clone(),
            prefix.to_owned(),
            settings.clone(),
        );
        let took = Arc::new(AtomicBool::new(false));
        let (thaw, thawed) = std::sync::mpsc::channel::<()>();
        let (took_it, thawed) = (Arc::clone(&took), Mutex::new(thawed));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let queues = backend.instance(&queues, &prefix, settings).await;
                let worker = queues
                    .worker("q")
                    .and_then(|worker| worker.lease(Duration::from_millis(400)))
                    .expect("valid")
                    .start(move |_job: Job<u64>| {
                        took_it.store(true, Ordering::SeqCst);
                        // Returns once the sender is dropped: at the thaw,
                        // and at once for any later run.
                        let _ = thawed.lock().recv();
                        std::future::ready(Ok(()))
                    });
                wait::until_async("the thawed worker to report its run", async || {
                    let stats = worker.stats();
                    stats.discarded + stats.completed > 0
                })
                .await;
                worker.shutdown(Duration::from_secs(5)).await
            })
        });
        Self { took, thaw, thread }
    }

    /// Waits until the handler holds a job (and the worker is frozen).
    async fn frozen(&self) {
        wait::until_async("the frozen worker to take the job", async || {
            self.took.load(Ordering::SeqCst)
        })
        .await;
    }

    /// Lets the worker go on, and returns its counts once it has reported
    /// its run and shut down.
    fn thaw(self) -> seawall_queue::WorkerStats {
        drop(self.thaw);
        self.thread.join().expect("the frozen worker ends")
    }
}

/// Queues under a prefix the test knows, to open a second instance on.
async fn known(backend: &Backend, settings: &Settings) -> (Queues, String) {
    let prefix = crate::support::unique_prefix();
    let memory = Queues::memory_with(settings.clone());
    (
        backend.instance(&memory, &prefix, settings.clone()).await,
        prefix,
    )
}

async fn a_worker_that_lost_its_lease_cannot_complete_the_job(backend: &Backend) {
    let settings = Settings::default();
    let (queues, prefix) = known(backend, &settings).await;
    let id = queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    let frozen = Frozen::start(backend, &queues, &prefix, &settings);
    frozen.frozen().await;
    let seen = Seen::default();
    let other = queues.worker("q").expect("valid").start(recorder(&seen));
    // Once the frozen lease has run out, the other worker recovers the job
    // and runs it; only then does the frozen one report its run.
    wait::until_async("the other worker to take the job over", async || {
        queues
            .job("q", &id)
            .await
            .expect("reads")
            .is_some_and(|job| job.runs == 2)
    })
    .await;
    let stale = frozen.thaw();
    completed(&queues, "q", 1).await;
    let taken = other.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stale.completed, stale.discarded), (0, 1), "{stale:?}");
    assert_eq!(taken.completed, 1, "{taken:?}");
    let job = queues.job("q", &id).await.expect("reads").expect("kept");
    assert_eq!(
        (job.state, job.stalls, job.runs),
        (JobState::Completed, 1, 2)
    );
    let events = queues.events("q", None, 100).await.expect("events");
    let completions = events
        .iter()
        .filter(|event| event.kind == "completed")
        .count();
    assert_eq!(completions, 1, "exactly one completion recorded");
    assert!(events.iter().any(|event| event.kind == "stalled"));
}

async fn a_job_that_stalls_too_often_is_dead_lettered(backend: &Backend) {
    let settings = Settings {
        max_stalls: 0,
        ..Settings::default()
    };
    let (queues, prefix) = known(backend, &settings).await;
    let id = queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    let frozen = Frozen::start(backend, &queues, &prefix, &settings);
    frozen.frozen().await;
    // Counts recover expired leases.
    counts_reach(&queues, "q", "the stalled job dead", |counts| {
        counts.dead == 1
    })
    .await;
    let stale = frozen.thaw();
    assert_eq!(stale.discarded, 1);
    let job = queues.job("q", &id).await.expect("reads").expect("kept");
    assert_eq!((job.state, job.stalls), (JobState::Dead, 1));
    let events = queues.events("q", None, 100).await.expect("events");
    let dead = events
        .iter()
        .find(|event| event.kind == "dead")
        .expect("a dead event");
    assert!(
        dead.fields
            .iter()
            .any(|(name, value)| name == "error" && value.contains("stalled"))
    );
}

async fn shutdown_gives_unfinished_jobs_back_without_counting_an_attempt(backend: &Backend) {
    let queues = backend.queues().await;
    let id = queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(|_job: Job<u64>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
    counts_reach(&queues, "q", "the job active", |counts| counts.active == 1).await;
    let stats = worker.shutdown(Duration::from_millis(200)).await;
    assert_eq!(stats.requeued, 1, "{stats:?}");
    let job = queues.job("q", &id).await.expect("reads").expect("kept");
    assert_eq!((job.state, job.failures), (JobState::Waiting, 0));
}

async fn timeouts_and_panics_are_failures_not_crashes(backend: &Backend) {
    let queues = backend.queues().await;
    let once = options().attempts(1).expect("valid");
    let slow = queues
        .enqueue(
            "q",
            &1_u64,
            &once
                .clone()
                .timeout(Duration::from_millis(100))
                .expect("valid"),
        )
        .await
        .expect("enqueues");
    let panics = queues.enqueue("q", &2_u64, &once).await.expect("enqueues");
    let fine = queues.enqueue("q", &3_u64, &once).await.expect("enqueues");
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(|job: Job<u64>| async move {
            match job.payload {
                1 => tokio::time::sleep(Duration::from_secs(30)).await,
                2 => panic!("index out of bounds"),
                _ => {}
            }
            Ok(())
        });
    counts_reach(&queues, "q", "two jobs dead and one completed", |counts| {
        counts.dead == 2 && counts.completed == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let error = |id: JobId| {
        let queues = queues.clone();
        async move {
            let job = queues.job("q", &id).await.expect("reads").expect("kept");
            job.errors[0].error.clone()
        }
    };
    assert!(error(slow).await.starts_with("timed out after"));
    assert!(error(panics).await.contains("index out of bounds"));
    let fine = queues.job("q", &fine).await.expect("reads").expect("kept");
    assert_eq!(fine.state, JobState::Completed);
}

async fn groups_take_turns(backend: &Backend) {
    let queues = backend.queues().await;
    queues.pause("q").await.expect("pauses");
    let grouped = |group: &str| options().group(group).expect("valid");
    let mut jobs = Vec::new();
    for n in 0..30_u64 {
        jobs.push((n, grouped("big")));
    }
    for n in 100..103_u64 {
        jobs.push((n, grouped("small-a")));
    }
    for n in 200..203_u64 {
        jobs.push((n, grouped("small-b")));
    }
    queues.enqueue_many("q", jobs).await.expect("enqueues");
    let seen = Seen::default();
    let worker = queues
        .worker("q")
        .and_then(|w| w.concurrency(1))
        .expect("valid");
    let worker = worker.start(recorder(&seen));
    queues.resume("q").await.expect("resumes");
    completed(&queues, "q", 36).await;
    worker.shutdown(Duration::from_secs(5)).await;
    let seen = seen.lock().clone();
    let last_small = seen
        .iter()
        .rposition(|n| *n >= 100)
        .expect("small groups ran");
    assert!(
        last_small < 9,
        "the small groups finished within three turns: {seen:?}"
    );
    let big: Vec<u64> = seen.iter().copied().filter(|n| *n < 100).collect();
    assert_eq!(big, (0..30).collect::<Vec<_>>(), "FIFO within a group");
}

async fn a_group_limit_caps_the_group_across_workers(backend: &Backend) {
    let queues = backend.queues().await;
    queues.set_group_limit("q", Some(1)).await.expect("sets");
    assert!(matches!(
        queues.set_group_limit("q", Some(0)).await,
        Err(Error::InvalidSetting(_))
    ));
    let running: Arc<Mutex<HashMap<String, (usize, usize)>>> = Arc::default();
    let mut jobs = Vec::new();
    for n in 0..12_u64 {
        let group = if n % 2 == 0 { "a" } else { "b" };
        jobs.push((
            (group.to_owned(), n),
            options().group(group).expect("valid"),
        ));
    }
    queues.enqueue_many("q", jobs).await.expect("enqueues");
    let start = |running: &Arc<Mutex<HashMap<String, (usize, usize)>>>| {
        let running = Arc::clone(running);
        queues
            .worker("q")
            .and_then(|w| w.concurrency(4))
            .expect("valid")
            .start(move |job: Job<(String, u64)>| {
                let running = Arc::clone(&running);
                async move {
                    let group = job.payload.0.clone();
                    {
                        let mut running = running.lock();
                        let (now, most) = running.entry(group.clone()).or_default();
                        *now += 1;
                        *most = (*most).max(*now);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.lock().entry(group).or_default().0 -= 1;
                    Ok(())
                }
            })
    };
    let (one, two) = (start(&running), start(&running));
    completed(&queues, "q", 12).await;
    one.shutdown(Duration::from_secs(5)).await;
    two.shutdown(Duration::from_secs(5)).await;
    let running = running.lock();
    assert_eq!(running["a"].1, 1, "{running:?}");
    assert_eq!(running["b"].1, 1, "{running:?}");
}

async fn progress_is_readable_by_id_and_sent_as_events(backend: &Backend) {
    let queues = backend.queues().await;
    let id = queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    let (reported, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (told, wait) = (Arc::clone(&reported), Arc::clone(&release));
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(move |job: Job<u64>| {
            let (told, wait) = (Arc::clone(&told), Arc::clone(&wait));
            async move {
                assert!(job.progress(150, "half way").await);
                told.notify_one();
                wait.notified().await;
                Ok(())
            }
        });
    reported.notified().await;
    let job = queues.job("q", &id).await.expect("reads").expect("kept");
    assert_eq!(job.state, JobState::Active);
    let progress = job.progress.expect("reported");
    assert_eq!(
        (progress.percent, progress.message.as_str()),
        (100, "half way")
    );
    release.notify_one();
    completed(&queues, "q", 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
    let events = queues.events("q", None, 100).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["enqueued", "active", "progress", "completed"]);
    assert!(events.iter().all(|event| event.job == id));
    let after = queues
        .events("q", Some(&events[1].position), 100)
        .await
        .expect("events");
    assert_eq!(after.len(), 2, "reading on from a position");
}

async fn dead_jobs_can_be_retried_and_finished_ones_cleaned(backend: &Backend) {
    let queues = backend.queues().await;
    let ids = queues
        .enqueue_many("q", (0..3_u64).map(|n| (n, options())))
        .await
        .expect("enqueues");
    let healthy = Arc::new(AtomicUsize::new(0));
    let start = |healthy: &Arc<AtomicUsize>| {
        let healthy = Arc::clone(healthy);
        queues
            .worker("q")
            .expect("valid")
            .start(move |_job: Job<u64>| {
                let ok = healthy.load(Ordering::SeqCst) > 0;
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err(JobError::permanent("the mail server refused"))
                    }
                }
            })
    };
    let worker = start(&healthy);
    counts_reach(&queues, "q", "every job dead", |counts| counts.dead == 3).await;
    worker.shutdown(Duration::from_secs(5)).await;
    healthy.store(1, Ordering::SeqCst);
    assert!(queues.retry_dead("q", &ids[0]).await.expect("retries"));
    assert!(
        !queues.retry_dead("q", &ids[0]).await.expect("answers"),
        "no longer dead"
    );
    assert_eq!(queues.retry_all_dead("q").await.expect("retries"), 2);
    let job = queues
        .job("q", &ids[1])
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!((job.state, job.failures), (JobState::Waiting, 0));
    let worker = start(&healthy);
    completed(&queues, "q", 3).await;
    worker.shutdown(Duration::from_secs(5)).await;
    let kept = queues
        .clean("q", Finished::Completed, Duration::from_secs(3600), 0)
        .await
        .expect("cleans");
    assert_eq!(kept, 0, "nothing is an hour old");
    let removed = queues
        .clean("q", Finished::Completed, Duration::ZERO, 1)
        .await
        .expect("cleans");
    assert_eq!(removed, 2, "all but the newest");
    assert_eq!(queues.counts("q").await.expect("counts").completed, 1);
}

async fn jobs_are_listed_by_state(backend: &Backend) {
    let queues = backend.queues().await;
    let later = options().delay(Duration::from_secs(3600)).expect("valid");
    let delayed = queues
        .enqueue("q", &100_u64, &later)
        .await
        .expect("enqueues");
    let ids = queues
        .enqueue_many("q", (0..4_u64).map(|n| (n, options())))
        .await
        .expect("enqueues");
    // 0 completes, 1 dies, 2 and 3 hang until released.
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&release);
    let worker = queues
        .worker("q")
        .and_then(|worker| worker.concurrency(4))
        .expect("valid")
        .start(move |job: Job<u64>| {
            let gate = Arc::clone(&gate);
            async move {
                match job.payload {
                    0 => Ok(()),
                    1 => Err(JobError::permanent("refused")),
                    _ => {
                        job.progress(40, "halfway").await;
                        gate.notified().await;
                        Ok(())
                    }
                }
            }
        });
    counts_reach(
        &queues,
        "q",
        "two jobs active, one dead, one completed",
        |c| c.active == 2 && c.dead == 1 && c.completed == 1,
    )
    .await;
    let listed = |state| {
        let queues = queues.clone();
        async move {
            let jobs = queues.jobs("q", state, 10).await.expect("lists");
            assert!(jobs.iter().all(|job| job.state == state), "{jobs:?}");
            jobs.into_iter().map(|job| job.id).collect::<Vec<_>>()
        }
    };
    let mut active = listed(JobState::Active).await;
    active.sort();
    assert_eq!(active, [ids[2].clone(), ids[3].clone()]);
    assert_eq!(listed(JobState::Completed).await, [ids[0].clone()]);
    assert_eq!(listed(JobState::Dead).await, [ids[1].clone()]);
    assert_eq!(listed(JobState::Delayed).await, [delayed]);
    let dead = queues.jobs("q", JobState::Dead, 1).await.expect("lists");
    assert_eq!(
        dead[0].errors.last().map(|e| e.error.as_str()),
        Some("refused")
    );
    wait::until_async("both running jobs' progress", async || {
        let running = queues.jobs("q", JobState::Active, 10).await.expect("lists");
        running
            .iter()
            .all(|job| job.progress.as_ref().is_some_and(|p| p.percent == 40))
    })
    .await;
    assert_eq!(
        queues
            .jobs("q", JobState::Active, 1)
            .await
            .expect("lists")
            .len(),
        1
    );
    assert!(matches!(
        queues.jobs("q", JobState::Waiting, 10).await,
        Err(Error::InvalidOption(_))
    ));
    release.notify_waiters();
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn retention_bounds_the_finished_sets(backend: &Backend) {
    let settings = Settings {
        keep_completed: 5,
        keep_dead: 2,
        ..Settings::default()
    };
    let queues = backend.queues_with(settings).await;
    let ids = queues
        .enqueue_many(
            "q",
            (0..20_u64).map(|n| (n, options().attempts(1).expect("valid"))),
        )
        .await
        .expect("enqueues");
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(|job: Job<u64>| async move {
            if job.payload.is_multiple_of(4) {
                Err(JobError::new("every fourth fails"))
            } else {
                Ok(())
            }
        });
    wait::until_async("every job to complete or die", async || {
        queues.counts("q").await.expect("counts").active == 0
            && worker.stats().completed + worker.stats().dead == 20
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let counts = queues.counts("q").await.expect("counts");
    assert_eq!((counts.completed, counts.dead), (5, 2));
    // The records past the bounds are gone, whichever jobs finished last
    // (the worker runs several at once, so they need not finish in order).
    let mut kept = 0;
    for id in &ids {
        if queues.job("q", id).await.expect("reads").is_some() {
            kept += 1;
        }
    }
    assert_eq!(kept, 5 + 2, "the records of the others are removed");
}

/// A queue that keeps no dead jobs keeps no trace of one: the retention
/// that removes the record as the job dies leaves nothing behind (the
/// failure's outcome, kept for a re-sent call, was written after it and
/// left a record with no state, which a read answered with an error).
async fn a_queue_that_keeps_no_dead_jobs_leaves_no_record_of_one(backend: &Backend) {
    let settings = Settings {
        keep_dead: 0,
        ..Settings::default()
    };
    let queues = backend.queues_with(settings).await;
    let id = queues
        .enqueue("q", &1_u64, &options().attempts(1).expect("valid"))
        .await
        .expect("enqueues");
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(|_: Job<u64>| async move { Err::<(), _>(JobError::new("fails")) });
    wait::until_async("the job to die", async || worker.stats().dead == 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(queues.counts("q").await.expect("counts").dead, 0);
    assert!(
        queues.job("q", &id).await.expect("reads").is_none(),
        "the record of a job no dead set keeps"
    );
}

async fn custom_worker_backoff_overrides_the_jobs_own(backend: &Backend) {
    let queues = backend.queues().await;
    let options = options()
        .attempts(2)
        .and_then(|options| options.backoff(Backoff::fixed(Duration::from_secs(3600))))
        .expect("valid");
    queues
        .enqueue("q", &1_u64, &options)
        .await
        .expect("enqueues");
    let tries = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&tries);
    let worker = queues
        .worker("q")
        .expect("valid")
        .backoff(Backoff::custom(|attempt| {
            Duration::from_millis(u64::from(attempt) * 10)
        }))
        .start(move |_job: Job<u64>| {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err(JobError::new("flaky"))
                } else {
                    Ok(())
                }
            }
        });
    // Retried after 10 ms, not an hour.
    completed(&queues, "q", 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(tries.load(Ordering::SeqCst), 2);
}

async fn many_workers_share_a_queue_without_running_a_job_twice(backend: &Backend) {
    let queues = backend.queues().await;
    queues
        .enqueue_many("q", (0..1_000_u64).map(|n| (n, options())))
        .await
        .expect("enqueues");
    let seen = Seen::default();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            queues
                .worker("q")
                .and_then(|w| w.concurrency(16))
                .expect("valid")
                .start(recorder(&seen))
        })
        .collect();
    completed(&queues, "q", 1_000).await;
    let mut total = 0;
    for worker in workers {
        total += worker.shutdown(Duration::from_secs(5)).await.completed;
    }
    assert_eq!(total, 1_000);
    let seen = seen.lock();
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1_000);
    assert_eq!(seen.len(), 1_000, "no job ran twice");
}

async fn a_flooding_group_cannot_starve_the_others(backend: &Backend) {
    let settings = Settings {
        events_max_len: 100_000,
        ..Settings::default()
    };
    let queues = backend.queues_with(settings).await;
    queues.pause("q").await.expect("pauses");
    let flood = (0..10_000_u64).map(|n| (n, options().group("flood").expect("valid")));
    let flood: HashSet<JobId> = queues
        .enqueue_many("q", flood)
        .await
        .expect("enqueues")
        .into_iter()
        .collect();
    let mut small = Vec::new();
    for group in 1..=9_u64 {
        let name = format!("tenant-{group}");
        for n in 0..10 {
            small.push((group * 100_000 + n, options().group(&name).expect("valid")));
        }
    }
    queues.enqueue_many("q", small).await.expect("enqueues");
    let seen = Seen::default();
    let worker = queues
        .worker("q")
        .and_then(|w| w.concurrency(8))
        .expect("valid");
    let worker = worker.start(recorder(&seen));
    queues.resume("q").await.expect("resumes");
    wait::until_async("the small groups' 90 jobs to run", async || {
        seen.lock().iter().filter(|n| **n >= 100_000).count() == 90
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    // The order the queue handed jobs out in.
    let mut taken = Vec::new();
    let mut after = None;
    loop {
        let events = queues
            .events("q", after.as_deref(), 5_000)
            .await
            .expect("events");
        let Some(last) = events.last() else { break };
        after = Some(last.position.clone());
        taken.extend(
            events
                .into_iter()
                .filter(|e| e.kind == "active")
                .map(|e| e.job),
        );
    }
    let last_small = taken
        .iter()
        .rposition(|id| !flood.contains(id))
        .expect("ran");
    // Ten groups take turns: the 90 small jobs go out within ten rounds of ten.
    assert!(
        last_small < 100,
        "the last small job went out {}th",
        last_small + 1
    );
}

async fn metrics_count_outcomes_and_depth(backend: &Backend) {
    let queues = backend.queues().await;
    let monitor = seawall_perfmon::Monitor::new();
    let metrics = seawall_queue::QueueMetrics::register(&monitor, "q").expect("registers");
    let once = options().attempts(1).expect("valid");
    let jobs = (0..5_u64).map(|n| (n, once.clone()));
    queues.enqueue_many("q", jobs).await.expect("enqueues");
    let worker = queues
        .worker("q")
        .expect("valid")
        .metrics(metrics.clone())
        .start(|job: Job<u64>| async move {
            if job.payload < 2 {
                Err(JobError::new("no"))
            } else {
                Ok(())
            }
        });
    completed(&queues, "q", 3).await;
    counts_reach(&queues, "q", "the failed jobs dead", |counts| {
        counts.dead == 2
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    metrics.record_depth(&queues.counts("q").await.expect("counts"));
    let text = monitor.prometheus();
    for line in [
        "queue_jobs_total{queue=\"q\",outcome=\"completed\"} 3",
        "queue_jobs_total{queue=\"q\",outcome=\"dead\"} 2",
        "queue_depth{queue=\"q\",state=\"completed\"} 3",
        "queue_depth{queue=\"q\",state=\"waiting\"} 0",
        "queue_job_wait_seconds_count{queue=\"q\"} 5",
        "queue_job_run_seconds_count{queue=\"q\"} 5",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let check = seawall_queue::DurabilityCheck::new(queues.clone());
    monitor.register_check(check);
    let report = monitor.health().await;
    let expected = match backend {
        // The memory backend loses jobs on exit; the test servers run
        // redis-server's default policy, noeviction.
        Backend::Memory => seawall_perfmon::HealthStatus::Degraded,
        Backend::Redis(_) | Backend::Cluster(_) => seawall_perfmon::HealthStatus::Healthy,
    };
    assert_eq!(report.status, expected, "{report:?}");
}

/// The clock's slack between a backend and the test: both read whole
/// milliseconds.
const SLACK: Duration = Duration::from_millis(2);

async fn oldest_waiting(queues: &Queues, queue: &str) -> Option<Duration> {
    queues
        .backlog(queue)
        .await
        .expect("reads the backlog")
        .oldest_waiting
}

async fn the_oldest_waiting_age_grows_while_a_job_waits(backend: &Backend) {
    let queues = backend.queues().await;
    assert_eq!(oldest_waiting(&queues, "q").await, None, "nothing waits");
    let enqueued = Instant::now();
    queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    let first = oldest_waiting(&queues, "q").await.expect("a job waits");
    assert!(first <= enqueued.elapsed() + SLACK, "{first:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backlog = queues.backlog("q").await.expect("reads the backlog");
    let later = backlog.oldest_waiting.expect("a job waits");
    assert!(
        later >= first + Duration::from_millis(300),
        "{first:?}, then {later:?}"
    );
    assert!(later <= enqueued.elapsed() + SLACK, "{later:?}");
    assert_eq!(backlog.counts, queues.counts("q").await.expect("counts"));

    let worker = queues
        .worker("q")
        .expect("valid")
        .start(recorder(&Seen::default()));
    completed(&queues, "q", 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(oldest_waiting(&queues, "q").await, None, "nothing waits");
}

/// A delayed job counts once it is due, from when it became ready, not
/// from when it was enqueued.
async fn a_delayed_job_counts_for_the_oldest_waiting_age_once_due(backend: &Backend) {
    let queues = backend.queues().await;
    let delay = Duration::from_millis(400);
    queues
        .enqueue("q", &1_u64, &options().delay(delay).expect("valid"))
        .await
        .expect("enqueues");
    let backlog = queues.backlog("q").await.expect("reads the backlog");
    assert_eq!((backlog.counts.delayed, backlog.oldest_waiting), (1, None));
    tokio::time::sleep(delay + Duration::from_millis(300)).await;
    let due = Instant::now();
    let backlog = queues.backlog("q").await.expect("reads the backlog");
    assert_eq!(backlog.counts.waiting, 1, "{backlog:?}");
    let age = backlog.oldest_waiting.expect("the job waits");
    assert!(age <= due.elapsed() + SLACK, "{age:?}");
}

/// The head of every line counts: of each group, and of each priority
/// level within a group, also one behind a level that runs first.
async fn the_oldest_waiting_age_is_the_oldest_head_of_every_group_and_priority(backend: &Backend) {
    let queues = backend.queues().await;
    let gap = Duration::from_millis(150);
    let low = options()
        .group("tenant-a")
        .and_then(|options| options.priority(7))
        .expect("valid");
    let low = queues.enqueue("q", &1_u64, &low).await.expect("enqueues");
    tokio::time::sleep(gap).await;
    let second = Instant::now();
    let grouped = options().group("tenant-b").expect("valid");
    let grouped = queues
        .enqueue("q", &2_u64, &grouped)
        .await
        .expect("enqueues");
    tokio::time::sleep(gap).await;
    let third = Instant::now();
    let high = options()
        .group("tenant-a")
        .and_then(|options| options.priority(0))
        .expect("valid");
    let high = queues.enqueue("q", &3_u64, &high).await.expect("enqueues");
    let plain = queues
        .enqueue("q", &4_u64, &options())
        .await
        .expect("enqueues");

    let age = oldest_waiting(&queues, "q").await.expect("jobs wait");
    assert!(age >= gap * 2, "the low-priority job of tenant-a: {age:?}");
    queues.cancel("q", &low).await.expect("cancels");
    let age = oldest_waiting(&queues, "q").await.expect("jobs wait");
    assert!(age >= gap, "the job of tenant-b: {age:?}");
    assert!(
        age <= second.elapsed() + SLACK,
        "the job of tenant-b: {age:?}"
    );
    queues.cancel("q", &grouped).await.expect("cancels");
    let age = oldest_waiting(&queues, "q").await.expect("jobs wait");
    assert!(age <= third.elapsed() + SLACK, "{age:?}");
    for id in [high, plain] {
        queues.cancel("q", &id).await.expect("cancels");
    }
    assert_eq!(oldest_waiting(&queues, "q").await, None, "nothing waits");
}

/// A paused queue reports its oldest waiting job all the same, and that it
/// is paused.
async fn a_paused_queue_reports_its_oldest_job_and_its_pause(backend: &Backend) {
    let queues = backend.queues().await;
    queues.pause("q").await.expect("pauses");
    queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backlog = queues.backlog("q").await.expect("reads the backlog");
    assert!(backlog.counts.paused, "{backlog:?}");
    let age = backlog.oldest_waiting.expect("the job waits");
    assert!(age >= Duration::from_millis(300), "{age:?}");
    queues.resume("q").await.expect("resumes");
    let backlog = queues.backlog("q").await.expect("reads the backlog");
    assert!(!backlog.counts.paused, "{backlog:?}");
    assert!(backlog.oldest_waiting >= Some(age), "{backlog:?}");
}

/// The oldest waiting age and the pause are exported from registration on,
/// at 0, and follow each recorded backlog.
async fn metrics_export_the_oldest_waiting_age_and_the_pause(backend: &Backend) {
    let queues = backend.queues().await;
    let monitor = seawall_perfmon::Monitor::new();
    let metrics = seawall_queue::QueueMetrics::register(&monitor, "q").expect("registers");
    let exported = |name: &str| {
        let text = monitor.prometheus();
        let prefix = format!("{name}{{queue=\"q\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    assert_eq!(exported("queue_oldest_waiting_age_seconds"), 0.0);
    assert_eq!(exported("queue_paused"), 0.0);

    queues.pause("q").await.expect("pauses");
    queues
        .enqueue("q", &1_u64, &options())
        .await
        .expect("enqueues");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backlog = queues.backlog("q").await.expect("reads the backlog");
    metrics.record_backlog(&backlog);
    let age = backlog.oldest_waiting.expect("the job waits");
    assert!(age >= Duration::from_millis(300), "{age:?}");
    assert_eq!(
        exported("queue_oldest_waiting_age_seconds"),
        age.as_secs_f64()
    );
    assert_eq!(exported("queue_paused"), 1.0);
    let depth = "queue_depth{queue=\"q\",state=\"waiting\"} 1";
    assert!(
        monitor.prometheus().contains(depth),
        "the depth is recorded too"
    );

    queues.resume("q").await.expect("resumes");
    let worker = queues
        .worker("q")
        .expect("valid")
        .start(recorder(&Seen::default()));
    completed(&queues, "q", 1).await;
    worker.shutdown(Duration::from_secs(5)).await;
    metrics.record_backlog(&queues.backlog("q").await.expect("reads the backlog"));
    assert_eq!(
        exported("queue_oldest_waiting_age_seconds"),
        0.0,
        "nothing waits"
    );
    assert_eq!(exported("queue_paused"), 0.0);
}

/// Worker processes announce themselves and every handle on the same
/// backend lists them; a silent one is listed as not alive, a withdrawn one
/// not at all.
async fn processes_announce_themselves(backend: &Backend) {
    let prefix = crate::support::unique_prefix();
    let memory = Queues::memory();
    let one = backend
        .instance(&memory, &prefix, Settings::default())
        .await;
    let two = backend
        .instance(&memory, &prefix, Settings::default())
        .await;
    let report = |id: &str, ttl_ms: u64| seawall_queue::ProcessReport {
        id: id.to_owned(),
        host: "host-a".to_owned(),
        pid: 7,
        started_ms: 1,
        ttl_ms,
        completed_per_second: 12.5,
        queues: vec![seawall_queue::QueueActivity {
            queue: "email".to_owned(),
            concurrency: 8,
            running: 3,
            completed: 40,
            failed: 1,
        }],
        wire_version: seawall_queue::WIRE_VERSION,
    };
    one.announce(&report("a", 60_000)).await.expect("announces");
    two.announce(&report("b", 50)).await.expect("announces");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let seen = one.processes().await.expect("lists");
    let listed: Vec<(&str, bool)> = seen
        .iter()
        .map(|process| (process.report.id.as_str(), process.alive))
        .collect();
    assert_eq!(listed, [("a", true), ("b", false)]);
    assert_eq!(seen[0].report, report("a", 60_000));
    assert!(
        seen[1].since >= Duration::from_millis(100),
        "{:?}",
        seen[1].since
    );
    one.withdraw("b").await.expect("withdraws");
    let seen = two.processes().await.expect("lists");
    assert_eq!(seen.len(), 1);
    assert!(one.announce(&report("", 1)).await.is_err());
}

/// What a handler returns is its job's result, read by id once the job
/// completed; `None` (JSON `null`) keeps nothing, a failed job has none,
/// and a queue that keeps no completed job keeps no result.
async fn a_handler_s_result_is_kept_with_its_completed_job(backend: &Backend) {
    let queues = backend.queues().await;
    let mut ids = Vec::new();
    for n in 0..6_u64 {
        ids.push(
            queues
                .enqueue("sums", &n, &options())
                .await
                .expect("enqueues"),
        );
    }
    let failing = queues
        .enqueue("sums", &99_u64, &options().attempts(1).expect("valid"))
        .await
        .expect("enqueues");
    let worker = queues
        .worker("sums")
        .expect("a valid name")
        .concurrency(3)
        .expect("valid")
        .start(|job: Job<u64>| async move {
            match job.payload {
                99 => Err(JobError::permanent("no")),
                n if n % 2 == 0 => Ok(Some(vec![n, n * 10])),
                _ => Ok(None),
            }
        });
    counts_reach(&queues, "sums", "six completed and one dead", |counts| {
        counts.completed == 6 && counts.dead == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    for (n, id) in (0_u64..).zip(&ids) {
        let result = queues.result::<Vec<u64>>("sums", id).await.expect("reads");
        let expected = (n % 2 == 0).then(|| vec![n, n * 10]);
        assert_eq!(result, expected, "job {n}");
        let info = queues.job("sums", id).await.expect("reads").expect("kept");
        assert_eq!(info.result_as::<Vec<u64>>().expect("decodes"), expected);
    }
    assert_eq!(
        queues.result::<u64>("sums", &failing).await.expect("reads"),
        None
    );
    assert_eq!(
        queues
            .result::<u64>("sums", &JobId::from("12345-00"))
            .await
            .expect("reads"),
        None
    );
    // A result read as the wrong type is a typed error.
    let wrong = queues.result::<String>("sums", &ids[0]).await;
    assert!(matches!(wrong, Err(Error::Encode(_))), "{wrong:?}");

    let forgetful = backend
        .queues_with(Settings {
            keep_completed: 0,
            ..Settings::default()
        })
        .await;
    let id = forgetful
        .enqueue("sums", &2_u64, &options())
        .await
        .expect("enqueues");
    let worker = forgetful
        .worker("sums")
        .expect("a valid name")
        .start(|job: Job<u64>| async move { Ok::<_, JobError>(job.payload) });
    wait::until_async("the job to complete", async || {
        worker.stats().completed == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        forgetful.result::<u64>("sums", &id).await.expect("reads"),
        None
    );
}

/// A queue that has used no priority other than the default takes the
/// fast way through a fetch, but a job of a higher priority whose delay
/// ended is still taken first by the call that lines it up.
async fn a_due_job_of_a_higher_priority_goes_first_in_the_call_that_lines_it_up(backend: &Backend) {
    let queues = backend.queues().await;
    queues
        .enqueue("q", &"default", &options())
        .await
        .expect("enqueues");
    let urgent = options()
        .priority(1)
        .expect("valid")
        .delay(Duration::from_millis(30))
        .expect("valid");
    queues
        .enqueue("q", &"urgent", &urgent)
        .await
        .expect("enqueues");
    // Nothing reads the queue before the worker: its first fetch finds
    // the delayed job due and lines it up itself.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&order);
    let worker = queues
        .worker("q")
        .expect("valid")
        .concurrency(1)
        .expect("valid")
        .start(move |job: Job<String>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().push(job.payload);
                Ok::<_, JobError>(())
            }
        });
    wait::until_async("both jobs to run", async || order.lock().len() == 2).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*order.lock(), ["urgent", "default"]);
}

on_every_backend!(
    a_due_job_of_a_higher_priority_goes_first_in_the_call_that_lines_it_up,
    a_handler_s_result_is_kept_with_its_completed_job,
    the_oldest_waiting_age_grows_while_a_job_waits,
    a_delayed_job_counts_for_the_oldest_waiting_age_once_due,
    the_oldest_waiting_age_is_the_oldest_head_of_every_group_and_priority,
    a_paused_queue_reports_its_oldest_job_and_its_pause,
    metrics_export_the_oldest_waiting_age_and_the_pause,
    processes_announce_themselves,
    a_flooding_group_cannot_starve_the_others,
    metrics_count_outcomes_and_depth,
    every_job_is_completed_once,
    a_worker_fills_its_concurrency_and_never_passes_it,
    priorities_run_first_and_each_level_in_order,
    a_paused_queue_starts_nothing_until_resumed,
    a_delayed_job_waits_for_its_time,
    failures_retry_with_backoff_then_go_to_the_dead_set_with_their_history,
    permanent_errors_and_undecodable_payloads_go_straight_to_the_dead_set,
    an_idempotency_key_answers_with_the_first_job_within_its_window,
    an_idempotency_key_refuses_a_different_job,
    a_bulk_enqueue_keeps_order_and_adds_nothing_when_one_job_is_bad,
    cancel_removes_waiting_and_delayed_jobs_and_stops_running_ones,
    a_worker_that_lost_its_lease_cannot_complete_the_job,
    a_job_that_stalls_too_often_is_dead_lettered,
    shutdown_gives_unfinished_jobs_back_without_counting_an_attempt,
    timeouts_and_panics_are_failures_not_crashes,
    groups_take_turns,
    a_group_limit_caps_the_group_across_workers,
    progress_is_readable_by_id_and_sent_as_events,
    dead_jobs_can_be_retried_and_finished_ones_cleaned,
    retention_bounds_the_finished_sets,
    a_queue_that_keeps_no_dead_jobs_leaves_no_record_of_one,
    jobs_are_listed_by_state,
    custom_worker_backoff_overrides_the_jobs_own,
    many_workers_share_a_queue_without_running_a_job_twice,
);
