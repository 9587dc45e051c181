//! Leases bounded by their length: a worker whose renewals cannot reach Redis
//! (its connection cut while the client backs off between reconnections)
//! stops its runs before the lease ends, so the worker that recovers the
//! jobs never runs one while the first still does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_queue::fred::prelude::ReconnectPolicy;
use seawall_queue::{Job, JobError, JobId, JobOptions, JobState, Queues, Settings};
use seawall_testkit::{Proxy, RedisServer, wait};

use crate::support::{builder, unique_prefix};

/// One run of a job, as its handler saw it.
#[derive(Debug, Clone)]
struct Run {
    worker: &'static str,
    job: JobId,
    run: u32,
    started: Instant,
    cancelled: Option<Instant>,
    ended: Option<Instant>,
}

type Runs = Arc<Mutex<Vec<Run>>>;

/// Marks its run ended when dropped: when the handler returns or is
/// aborted.
struct Ending {
    runs: Runs,
    at: usize,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.runs.lock()[self.at].ended = Some(Instant::now());
    }
}

/// A handler's run of one job.
type Running = std::pin::Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// A handler whose first run of a job lasts `first` unless cancelled, and
/// whose later runs are short.
fn handler(
    worker: &'static str,
    runs: &Runs,
    first: Duration,
) -> impl Fn(Job<u64>) -> Running + Send + Sync + 'static {
    let runs = Arc::clone(runs);
    move |job: Job<u64>| {
        let runs = Arc::clone(&runs);
        Box::pin(async move {
            let at = {
                let mut runs = runs.lock();
                runs.push(Run {
                    worker,
                    job: job.id().clone(),
                    run: job.run(),
                    started: Instant::now(),
                    cancelled: None,
                    ended: None,
                });
                runs.len() - 1
            };
            let _ending = Ending {
                runs: Arc::clone(&runs),
                at,
            };
            let work = if job.run() == 1 {
                first
            } else {
                Duration::from_millis(200)
            };
            tokio::select! {
                () = tokio::time::sleep(work) => {}
                () = job.cancellation().cancelled() => {
                    runs.lock()[at].cancelled = Some(Instant::now());
                }
            }
            Ok(())
        })
    }
}

/// A worker of `queues` on `render`, four at a time with `lease`, running
/// [`handler`].
fn start(
    queues: &Queues,
    name: &'static str,
    runs: &Runs,
    lease: Duration,
    first: Duration,
) -> seawall_queue::Worker {
    queues
        .worker("render")
        .and_then(|worker| worker.concurrency(4))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(handler(name, runs, first))
}

/// Waits until every job of `ids` has completed, or one has died.
async fn all_completed(queues: &Queues, ids: &[JobId]) {
    let mut states = Vec::new();
    let began = Instant::now();
    loop {
        states.clear();
        for id in ids {
            let job = queues.job("render", id).await.expect("reads");
            states.push(job.map(|job| job.state));
        }
        if states
            .iter()
            .all(|state| *state == Some(JobState::Completed))
        {
            return;
        }
        assert!(
            !states.contains(&Some(JobState::Dead)),
            "a job died: {states:?}"
        );
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for every job to complete; last states {states:?}",
            wait::patience()
        );
        tokio::time::sleep(wait::POLL).await;
    }
}

async fn queues(builder: seawall_queue::fred::prelude::Builder, prefix: &str) -> Queues {
    Queues::redis(builder)
        .prefix(prefix)
        .settings(Settings::default())
        .connect()
        .await
        .expect("connects")
}

/// A worker cut off from Redis for longer than its 10 s lease (until the
/// other worker has taken its jobs over), on a client that waits 2 s for a
/// command and backs off up to 25 s between reconnections: its runs hear of
/// the cancellation and end before its leases do, so the other worker,
/// which takes the jobs over once the leases have run out, never runs one
/// of them at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_renew_stops_its_runs_before_the_lease_ends() {
    let redis = RedisServer::shared();
    let proxy = Proxy::start(redis.addr()).expect("a proxy");
    let prefix = unique_prefix();
    let direct = queues(builder(&redis.url()), &prefix).await;
    // A lease of 10 s, cancelled by the worker at four fifths of it: 2 s
    // between the cancelled run's end and the lease's, which no scheduling
    // delay of a loaded machine comes near, while the client's back-off
    // between reconnections still outlasts the lease.
    let mut slow = builder(&proxy.url());
    slow.set_policy(ReconnectPolicy::new_exponential(0, 100, 25_000, 2));
    let through = queues(slow, &prefix).await;
    let lease = Duration::from_secs(10);
    let mut ids = Vec::new();
    for n in 0..3_u64 {
        let id = direct
            .enqueue("render", &n, &JobOptions::new())
            .await
            .expect("enqueues");
        ids.push(id);
    }
    let runs: Runs = Arc::default();
    let cut_off = start(&through, "cut off", &runs, lease, lease * 4);
    wait::until_async("the cut-off worker to take every job", async || {
        runs.lock().len() == 3
    })
    .await;
    let healthy = start(&direct, "healthy", &runs, lease, lease * 4);
    proxy.cut();
    // Restored only once the healthy worker has taken over every job, so
    // none of the first runs can have heard of its lost lease from Redis.
    wait::until_async("the healthy worker to take every job over", async || {
        runs.lock().len() == 6
    })
    .await;
    proxy.restore();

    all_completed(&direct, &ids).await;
    let cut_off = cut_off.shutdown(Duration::from_secs(2)).await;
    let healthy = healthy.shutdown(Duration::from_secs(2)).await;
    let runs = runs.lock().clone();
    assert_eq!(cut_off.lost_leases, 3, "{cut_off:?}");
    assert_eq!((healthy.completed, healthy.dead), (3, 0), "{healthy:?}");

    for id in &ids {
        let mut of_job: Vec<&Run> = runs.iter().filter(|run| run.job == *id).collect();
        of_job.sort_by_key(|run| run.started);
        assert_eq!(of_job.len(), 2, "{of_job:#?}");
        let (first, second) = (of_job[0], of_job[1]);
        assert_eq!((first.worker, first.run), ("cut off", 1), "{of_job:#?}");
        assert_eq!((second.worker, second.run), ("healthy", 2), "{of_job:#?}");
        let cancelled = first
            .cancelled
            .expect("the first run heard of its lost lease");
        let ended = first.ended.expect("the first run ended");
        // The second run starts only once the first run's lease has run out
        // on the server: the first had heard of it, still cut off, and
        // stopped before.
        assert!(
            cancelled <= ended && ended <= second.started,
            "two runs of {id} at once: {of_job:#?}"
        );
    }
}

/// A cut shorter than the lease costs nothing: renewals are retried
/// promptly while the client reconnects, and every job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_shorter_than_the_lease_runs_no_job_twice() {
    let redis = RedisServer::shared();
    let proxy = Proxy::start(redis.addr()).expect("a proxy");
    let prefix = unique_prefix();
    let direct = queues(builder(&redis.url()), &prefix).await;
    let through = queues(builder(&proxy.url()), &prefix).await;
    // Cut off for a quarter of it, while a run is cancelled only at four
    // fifths of it with no renewal through: seconds to spare for a renewal
    // held up on a loaded machine.
    let lease = Duration::from_secs(6);
    let mut ids = Vec::new();
    for n in 0..3_u64 {
        let id = direct
            .enqueue("render", &n, &JobOptions::new())
            .await
            .expect("enqueues");
        ids.push(id);
    }
    let runs: Runs = Arc::default();
    let cut_off = start(&through, "cut off", &runs, lease, lease * 2);
    wait::until_async("the worker to take every job", async || {
        runs.lock().len() == 3
    })
    .await;
    let healthy = start(&direct, "healthy", &runs, lease, lease * 2);
    tokio::time::sleep(lease / 4).await;
    proxy.cut();
    tokio::time::sleep(lease / 4).await;
    proxy.restore();

    all_completed(&direct, &ids).await;
    let cut_off = cut_off.shutdown(Duration::from_secs(2)).await;
    let healthy = healthy.shutdown(Duration::from_secs(2)).await;
    let runs = runs.lock().clone();
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert!(runs.iter().all(|run| run.cancelled.is_none()), "{runs:#?}");
    assert_eq!(
        (cut_off.completed, cut_off.lost_leases),
        (3, 0),
        "{cut_off:?}"
    );
    assert_eq!(healthy.completed, 0, "{healthy:?}");
}

/// A run that lost its lease while cut off, and whose worker gives the job
/// back once Redis answers again (its handler ended with an error when the
/// run was cancelled), counts a stall, as the queue's own check counts one
/// for a lease that runs out: the job's record says its first run was lost
/// to its lease, whichever of the two reached the job first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_given_back_after_its_lease_was_lost_counts_a_stall() {
    let redis = RedisServer::shared();
    let proxy = Proxy::start(redis.addr()).expect("a proxy");
    let prefix = unique_prefix();
    let direct = queues(builder(&redis.url()), &prefix).await;
    let through = queues(builder(&proxy.url()), &prefix).await;
    let id = direct
        .enqueue("render", &1_u64, &JobOptions::new())
        .await
        .expect("enqueues");
    let started = Arc::new(tokio::sync::Notify::new());
    let cancelled = Arc::new(tokio::sync::Notify::new());
    let worker = through
        .worker("render")
        .and_then(|worker| worker.lease(Duration::from_secs(6)))
        .expect("valid")
        .start({
            let (started, cancelled) = (Arc::clone(&started), Arc::clone(&cancelled));
            move |job: Job<u64>| {
                let (started, cancelled) = (Arc::clone(&started), Arc::clone(&cancelled));
                async move {
                    if job.run() > 1 {
                        return Ok(());
                    }
                    started.notify_one();
                    job.cancellation().cancelled().await;
                    cancelled.notify_one();
                    Err(JobError::new("stopped: the lease was lost"))
                }
            }
        });
    started.notified().await;
    proxy.cut();
    cancelled.notified().await;
    proxy.restore();
    all_completed(&direct, std::slice::from_ref(&id)).await;
    let stats = worker.shutdown(Duration::from_secs(2)).await;
    let record = direct
        .job("render", &id)
        .await
        .expect("reads")
        .expect("the job");
    assert_eq!(
        (record.runs, record.stalls, record.failures),
        (2, 1, 0),
        "{record:?}"
    );
    assert_eq!((stats.lost_leases, stats.failed), (1, 0), "{stats:?}");
}

/// A fetch whose answer comes back only after the lease it took has run
/// out (the link to Redis stalled on the way back, then recovered) starts
/// nothing: the job may be another worker's by then. The worker counts a
/// lost lease, and the job runs once its lease is recovered, as a stall.
/// A partition drill saw a worker write a job's row 8 s after taking it
/// under a 5 s lease, the row of its rerun 50 ms later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answered_after_its_lease_ran_out_starts_nothing() {
    let redis = RedisServer::shared();
    let proxy = Proxy::start(redis.addr()).expect("a proxy");
    let prefix = unique_prefix();
    let direct = queues(builder(&redis.url()), &prefix).await;
    // Commands wait far longer than the reply is held: the answer comes
    // late, not as a timeout.
    let through = queues(
        seawall_testkit::client::builder(&proxy.url(), Duration::from_secs(30)),
        &prefix,
    )
    .await;
    // The scripts loaded first: a fetch that found its script missing
    // would wait for that answer, held, before it ran.
    let warm = direct
        .enqueue("warm", &0_u64, &JobOptions::new())
        .await
        .expect("enqueues");
    let warmer = direct
        .worker("warm")
        .expect("valid")
        .start(|_: Job<u64>| async { Ok::<_, JobError>(()) });
    wait::until_async("the warm-up job", async || {
        direct
            .job("warm", &warm)
            .await
            .expect("reads")
            .is_some_and(|job| job.state == JobState::Completed)
    })
    .await;
    warmer.shutdown(Duration::from_secs(2)).await;
    let lease = Duration::from_millis(600);
    let id = direct
        .enqueue("render", &1_u64, &JobOptions::new())
        .await
        .expect("enqueues");
    let runs: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
    proxy.hold();
    let worker = through
        .worker("render")
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start({
            let runs = Arc::clone(&runs);
            move |job: Job<u64>| {
                let runs = Arc::clone(&runs);
                async move {
                    runs.lock().push((job.run(), job.stalls()));
                    Ok::<_, JobError>(())
                }
            }
        });
    wait::until_async("the held fetch to take the job", async || {
        direct.counts("render").await.expect("counts").active == 1
    })
    .await;
    // Taken as the fetch ran: its lease is over once this has passed,
    // however late the answer reaches the worker.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    proxy.release();

    all_completed(&direct, std::slice::from_ref(&id)).await;
    let stats = worker.shutdown(Duration::from_secs(2)).await;
    let runs = runs.lock().clone();
    assert!(
        runs.iter().all(|&(run, stalls)| run > 1 && stalls > 0),
        "a run started under a lease that had run out: (run, stalls) {runs:?}"
    );
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((stats.completed, stats.lost_leases), (1, 1), "{stats:?}");
}
