//! A worker whose concurrency follows a limit that moves: it never runs
//! more jobs at once than the limit says, takes more when it rises, and
//! tells it how each run went.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use seawall_queue::{ConcurrencyLimit, Job, JobError, JobOptions, RunSample};
use seawall_testkit::wait;
use tokio::sync::Semaphore;

use crate::on_every_backend;
use crate::support::Backend;

/// A limit the test sets by hand, keeping the samples it is told.
#[derive(Clone, Default)]
struct Dial {
    limit: Arc<AtomicUsize>,
    samples: Arc<Mutex<Vec<RunSample>>>,
}

impl ConcurrencyLimit for Dial {
    fn limit(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    fn finished(&self, run: RunSample) {
        self.samples.lock().push(run);
    }
}

/// Jobs running now and the most that ever ran at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Running {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Thirty jobs held at a gate the test opens one job at a time: with a
/// limit of 3 under a concurrency of 16, three run at once and never more;
/// raised to 8, eight do once a run has finished (the limit is read at each
/// fetch); every run is a sample, none of them overloaded.
async fn a_worker_runs_no_more_jobs_at_once_than_its_limit(backend: &Backend) {
    let queues = backend.queues().await;
    queues
        .enqueue_many("paced", (0..30_u64).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    let dial = Dial::default();
    dial.limit.store(3, Ordering::SeqCst);
    let gate = Arc::new(Semaphore::new(0));
    let running = Arc::new(Running::default());
    let worker = {
        let (gate, running) = (Arc::clone(&gate), Arc::clone(&running));
        queues
            .worker("paced")
            .expect("a valid name")
            .concurrency(16)
            .expect("valid")
            .concurrency_limit(dial.clone())
            .start(move |_job: Job<u64>| {
                let (gate, running) = (Arc::clone(&gate), Arc::clone(&running));
                async move {
                    running.enter();
                    gate.acquire().await.expect("open").forget();
                    running.leave();
                    Ok::<_, JobError>(())
                }
            })
    };
    let completed = async |n: u64| {
        wait::until_async(format!("{n} completed jobs"), async || {
            queues.counts("paced").await.expect("counts").completed >= n
        })
        .await;
    };
    wait::until_async("three jobs at the gate", async || {
        running.now.load(Ordering::SeqCst) == 3
    })
    .await;
    for n in 1..=10 {
        gate.add_permits(1);
        completed(n).await;
        wait::until_async("three jobs at the gate again", async || {
            running.now.load(Ordering::SeqCst) == 3
        })
        .await;
    }
    assert_eq!(running.most.load(Ordering::SeqCst), 3, "the limit held");

    dial.limit.store(8, Ordering::SeqCst);
    gate.add_permits(1);
    wait::until_async("eight jobs at the gate", async || {
        running.now.load(Ordering::SeqCst) == 8
    })
    .await;
    gate.add_permits(19);
    completed(30).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        running.most.load(Ordering::SeqCst),
        8,
        "the raised limit held"
    );
    let samples = dial.samples.lock().clone();
    assert_eq!(samples.len(), 30, "one sample per run");
    assert!(samples.iter().all(|run| !run.overloaded), "{samples:?}");
    assert!(
        samples.iter().all(|run| (1..=8).contains(&run.running)),
        "{samples:?}"
    );
}

/// A run past its timeout and a handler holding its queue for a downstream
/// are overloads; a plain failure and a success are not.
async fn timeouts_and_holds_are_overloads(backend: &Backend) {
    let queues = backend.queues().await;
    let once = JobOptions::new().attempts(1).expect("valid");
    // Only the slow job has a timeout a loaded machine could reach.
    let slow = once
        .clone()
        .timeout(Duration::from_millis(50))
        .expect("valid");
    for (kind, options) in [("slow", &slow), ("hold", &once), ("fail", &once)] {
        queues
            .enqueue("outcomes", &kind.to_owned(), options)
            .await
            .expect("enqueues");
    }
    let dial = Dial::default();
    dial.limit.store(1, Ordering::SeqCst);
    let worker = queues
        .worker("outcomes")
        .expect("a valid name")
        .concurrency_limit(dial.clone())
        .start(|job: Job<String>| async move {
            match job.payload.as_str() {
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
                // Held on its first run, done on its second.
                "hold" if job.run() == 1 => Err(JobError::rate_limited(
                    Duration::from_millis(1),
                    "the downstream said to wait",
                )),
                "hold" => Ok(()),
                _ => Err(JobError::permanent("a bad payload")),
            }
        });
    // Four runs: the timeout, the hold, the plain failure, and the held
    // job's second run, which succeeds.
    wait::until_async("four samples", async || dial.samples.lock().len() == 4).await;
    worker.shutdown(Duration::from_secs(5)).await;
    let samples = dial.samples.lock().clone();
    let overloads = samples.iter().filter(|run| run.overloaded).count();
    assert_eq!(overloads, 2, "the timeout and the hold: {samples:?}");
    assert!(
        samples.iter().all(|run| run.running == 1),
        "one at a time under a limit of 1: {samples:?}"
    );
}

/// seawall-ratelimit's adaptive limit as the worker's: the holds of a
/// downstream that says to wait bring it down, and the queue still drains
/// under the lower limit.
#[cfg(feature = "adaptive")]
async fn an_adaptive_limit_falls_while_the_downstream_holds(backend: &Backend) {
    use std::sync::atomic::AtomicU64;

    use seawall_ratelimit::{AdaptiveLimiter, Aimd};

    let queues = backend.queues().await;
    queues
        .enqueue_many("mail", (0..40_u64).map(|n| (n, JobOptions::new())))
        .await
        .expect("enqueues");
    let limiter = AdaptiveLimiter::builder(Aimd::new())
        .bounds(1, 16)
        .initial(16)
        .window(Duration::ZERO, 1)
        .build()
        .expect("valid bounds");
    let holds = Arc::new(AtomicUsize::new(0));
    // The lowest limit a run saw when it started.
    let lowest = Arc::new(AtomicU64::new(u64::MAX));
    let worker = {
        let (holds, lowest, seen) = (Arc::clone(&holds), Arc::clone(&lowest), limiter.clone());
        queues
            .worker("mail")
            .expect("a valid name")
            .concurrency(16)
            .expect("valid")
            .concurrency_limit(limiter.clone())
            .start(move |_job: Job<u64>| {
                lowest.fetch_min(seen.limit(), Ordering::SeqCst);
                let holds = Arc::clone(&holds);
                async move {
                    // The first ten runs find the mail server busy.
                    if holds.fetch_add(1, Ordering::SeqCst) < 10 {
                        return Err(JobError::rate_limited(
                            Duration::from_millis(1),
                            "421 try again later",
                        ));
                    }
                    Ok::<_, JobError>(())
                }
            })
    };
    wait::until_async("every job completed", async || {
        queues.counts("mail").await.expect("counts").completed == 40
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    // Under a steady stream of quick successes the limit climbs back, so
    // what the later runs saw is the evidence.
    let lowest = lowest.load(Ordering::SeqCst);
    assert!(lowest < 16, "the holds brought the limit down: {lowest}");
}

#[cfg(feature = "adaptive")]
on_every_backend!(
    a_worker_runs_no_more_jobs_at_once_than_its_limit,
    timeouts_and_holds_are_overloads,
    an_adaptive_limit_falls_while_the_downstream_holds,
);

#[cfg(not(feature = "adaptive"))]
on_every_backend!(
    a_worker_runs_no_more_jobs_at_once_than_its_limit,
    timeouts_and_holds_are_overloads,
);
