//! Workers: take jobs under leases, run a handler on each, and report the
//! outcome; acknowledgements ride on the next fetch.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::job::{ChildInfo, JobId};
use crate::metrics::QueueMetrics;
use crate::pace::{ConcurrencyLimit, RunSample};
use crate::store::{
    AfterFailure, Failure, FetchCall, Fetched, Lease, Store, Taken, bounded_message, random_id,
};
use crate::trace;

/// The most jobs one fetch takes.
const MAX_FETCH: usize = 256;
/// The most payload bytes one fetch takes (past them it takes no further
/// job; the first is always taken).
const MAX_FETCH_BYTES: usize = 16 << 20;
/// The most acknowledgements one call carries; more wait for the next.
const MAX_ACKS: usize = 1_000;
/// The longest a blocked worker waits before it looks again on its own.
const MAX_BLOCK: Duration = Duration::from_secs(5);
/// Fetch calls a worker of concurrency 2 or more keeps in flight, each for
/// up to half its slots: while the server runs one call, the jobs the other
/// took run here, so neither side waits on the other.
const FETCH_LANES: usize = 2;
/// The fewest slots a call may fill when the concurrency has as many:
/// a call's fixed work (about 20 Redis commands: the clock, the caller's
/// last call, the upkeep scans, the retention trim, the events) against 3
/// per job is spread over at least this many jobs. Below twice this, a
/// lane's share is the lesser gain: one call of 8 runs more jobs a second
/// than two calls of 4 in flight at once (docs/benchmarks.md).
const MIN_CALL: usize = 8;

/// Why a handler's attempt failed. Any error converts into one (retried
/// per the job's backoff); [`JobError::permanent`] sends the job straight
/// to the dead set.
pub struct JobError {
    message: String,
    retry: bool,
    /// The downstream limits the handler: hold the queue (or the job's
    /// group, with `true`) this long.
    hold: Option<(Duration, bool)>,
}

impl JobError {
    /// A failure worth retrying.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: true,
            hold: None,
        }
    }

    /// A failure no retry can fix (bad input): the job goes to the dead
    /// set now.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: false,
            hold: None,
        }
    }

    /// The downstream is limiting the handler (a 429 with `Retry-After`, a
    /// provider's quota): the job goes back to the front of its line
    /// without counting as a failed attempt, and the queue starts no job,
    /// on any worker, for `hold` (BullMQ's `RateLimitError`). A hold never
    /// shortens one already running; one longer than [`MAX_DELAY`] holds
    /// for that long.
    ///
    /// [`MAX_DELAY`]: crate::MAX_DELAY
    pub fn rate_limited(hold: Duration, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: true,
            hold: Some((hold.min(crate::backoff::MAX_DELAY), false)),
        }
    }

    /// As [`rate_limited`](Self::rate_limited), holding only the job's
    /// group (a tenant's quota at a provider): the queue's other groups go
    /// on. A job without a group holds the queue.
    pub fn group_rate_limited(hold: Duration, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: true,
            hold: Some((hold.min(crate::backoff::MAX_DELAY), true)),
        }
    }

    /// The message recorded in the job's history.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(error: E) -> Self {
        Self::new(error.to_string())
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("message", &self.message)
            .field("retry", &self.retry)
            .field("hold", &self.hold)
            .finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One run of a job, as its handler sees it.
pub struct Job<T> {
    /// The decoded payload.
    pub payload: T,
    id: JobId,
    run: u32,
    failures: u32,
    max_attempts: u32,
    stalls: u32,
    context: Option<String>,
    cancel: CancellationToken,
    progress: ProgressHandle,
}

#[derive(Clone)]
struct ProgressHandle {
    store: Arc<dyn Store>,
    queue: Arc<str>,
    lease: Lease,
}

impl<T> Job<T> {
    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Which run of the job this is, counting from 1 (retries and runs
    /// after a stall count).
    pub fn run(&self) -> u32 {
        self.run
    }

    /// How many earlier attempts failed.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How many failures the job may have in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a failure of this run sends the job to the dead set.
    pub fn is_last_attempt(&self) -> bool {
        self.failures + 1 >= self.max_attempts
    }

    /// How many earlier runs were lost with their worker (a crash, a lease
    /// not renewed).
    pub fn stalls(&self) -> u32 {
        self.stalls
    }

    /// The [context](crate::JobOptions::context) the producer gave the job,
    /// if any.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// This flow job's children, with how each finished and its result
    /// (see [`Queues::enqueue_flow`](crate::Queues::enqueue_flow)); empty
    /// for a job that has none.
    pub async fn children(&self) -> Result<Vec<ChildInfo>> {
        self.progress
            .store
            .children(&self.progress.queue, &self.id)
            .await
    }

    /// Fires when the job is cancelled, its lease is lost (another worker
    /// may now run it), or the worker's shutdown deadline passes. A handler
    /// with long work should stop soon after.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Records how far the job got (`percent` is clamped to 100; the
    /// message is cut at 4 KiB), readable by id and sent as a `progress`
    /// event. Progress is advisory: `false` when it was not recorded, because
    /// the lease is no longer this run's or Redis did not answer (logged at
    /// debug level), and either way the run goes on.
    pub async fn progress(&self, percent: u8, message: &str) -> bool {
        let handle = &self.progress;
        match handle
            .store
            .progress(&handle.queue, &handle.lease, percent.min(100), message)
            .await
        {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::debug!(queue = %handle.queue, job = %handle.lease.id, %error, "progress not recorded");
                false
            }
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("run", &self.run)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

/// Sets up a worker of one queue; [`start`](WorkerBuilder::start) runs it.
#[must_use]
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    queue: String,
    concurrency: usize,
    lease: Duration,
    backoff: Option<Backoff>,
    metrics: Option<QueueMetrics>,
    limit: Option<Arc<dyn ConcurrencyLimit>>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(store: Arc<dyn Store>, queue: String) -> Self {
        Self {
            store,
            queue,
            concurrency: 8,
            lease: Duration::from_secs(30),
            backoff: None,
            metrics: None,
            limit: None,
        }
    }

    /// How many jobs run at once (default 8; 1 to 10,000). From 2 on, the
    /// worker keeps two fetch calls in flight, each taking up to half the
    /// slots but at least 8 (all of them below 8), so the server runs one
    /// while the other's jobs run here, and a call's fixed work is shared
    /// by several jobs; an idle worker still blocks on one connection.
    pub fn concurrency(mut self, jobs: usize) -> Result<Self> {
        if !(1..=10_000).contains(&jobs) {
            return Err(Error::InvalidSetting(format!(
                "concurrency must be 1 to 10,000, got {jobs}"
            )));
        }
        self.concurrency = jobs;
        Ok(self)
    }

    /// How long a job stays this worker's without a renewal (default 30 s,
    /// at least 300 ms). Leases are renewed every third of it while the
    /// handler runs; a worker that stops renewing (a crash, a frozen
    /// process) loses its jobs to other workers once the lease runs out.
    ///
    /// Renewal is bounded by the lease, not by the client's command timeout
    /// or reconnection backoff: each call gets until the last fifth of the
    /// lease, and a failed one is tried again within 250 ms, or at once
    /// when a lost connection to Redis comes back. A run whose lease no
    /// renewal reached by then has its cancellation token fired, and is
    /// aborted when the lease ends, before another worker can take the job;
    /// its job goes back without an attempt counted.
    ///
    /// So a Redis outage costs no run if it ends, and the client has
    /// reconnected, before four fifths of the lease have passed since the
    /// last renewal: an outage up to `0.8 × lease − reconnection` when it
    /// begins right after a renewal, `0.47 × lease − reconnection` at the
    /// worst moment. Give the client a reconnect policy whose longest wait
    /// is well inside that (the service uses 250 ms).
    pub fn lease(mut self, lease: Duration) -> Result<Self> {
        if lease < Duration::from_millis(300) {
            return Err(Error::InvalidSetting(format!(
                "a lease must be at least 300 ms, got {lease:?}"
            )));
        }
        self.lease = lease;
        Ok(self)
    }

    /// A retry policy for every job of this worker, in place of the one
    /// each job was enqueued with; the place for a
    /// [custom](Backoff::custom) function.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Runs at most as many jobs at once as `limit` says, a limit that
    /// moves with how the runs go, up to the
    /// [`concurrency`](Self::concurrency), which becomes its ceiling: each
    /// finished run is a [`RunSample`] for it, given before the run's slot
    /// is free, so the next fetch takes the new limit. Off by default.
    ///
    /// ```
    /// # #[cfg(feature = "adaptive")] {
    /// use seawall_queue::Queues;
    /// use seawall_ratelimit::{AdaptiveLimiter, Gradient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Up to 32 mails at once, fewer when the mail server slows down.
    /// let limit = AdaptiveLimiter::builder(Gradient::new()).bounds(1, 32).build()?;
    /// let worker = Queues::memory()
    ///     .worker("email")?
    ///     .concurrency(32)?
    ///     .concurrency_limit(limit)
    ///     .start(|_job: seawall_queue::Job<String>| async { Ok(()) });
    /// worker.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// # }
    /// ```
    pub fn concurrency_limit(mut self, limit: impl ConcurrencyLimit) -> Self {
        self.limit = Some(Arc::new(limit));
        self
    }

    /// Records wait time, run time and outcomes of this worker's jobs in
    /// `monitor` (see [`QueueMetrics`]).
    pub fn metrics(mut self, metrics: QueueMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Starts fetching and running jobs on the current Tokio runtime. The
    /// handler gets each job with its payload decoded as `T`; a payload
    /// that does not decode sends its job to the dead set with the decoding
    /// error, without calling the handler.
    ///
    /// What the handler returns with `Ok` is the job's result: encoded as
    /// JSON, kept with the completed job for as long as the queue keeps it
    /// (see [`Settings`](crate::Settings)), and read with
    /// [`Queues::result`](crate::Queues::result). A result that encodes as
    /// `null` (`()`, `None`) is not stored; one over
    /// [`MAX_RESULT_BYTES`] is not stored either, with an error logged (the
    /// job still completes: its work is done).
    pub fn start<T, R, H, F>(self, handler: H) -> Worker
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Fn(Job<T>) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
    {
        let lanes = if self.concurrency > 1 { FETCH_LANES } else { 1 };
        let shared = Arc::new(Shared {
            store: self.store,
            queue: Arc::from(self.queue.as_str()),
            concurrency: self.concurrency,
            limit: self.limit,
            lease: self.lease,
            backoff: self.backoff,
            held: Mutex::new(Runs::default()),
            acks: Mutex::new(Vec::new()),
            results: Mutex::new(HashMap::new()),
            suspect_acks: Mutex::new(Vec::new()),
            fetch_lanes: (0..lanes).map(|_| Lane::new()).collect(),
            ack_lane: Lane::new(),
            running: AtomicUsize::new(0),
            reserved: Mutex::new(0),
            watching: AtomicBool::new(false),
            resume: Notify::new(),
            idle: AtomicBool::new(false),
            slot_freed: Notify::new(),
            all_done: Notify::new(),
            stats: Counters::default(),
            metrics: self.metrics,
            stop_fetching: CancellationToken::new(),
            stopped: CancellationToken::new(),
            renew_soon: Notify::new(),
        });
        let handler: Arc<Handler<T>> = Arc::new(move |job: Job<T>| {
            let id = job.id.clone();
            let run = handler(job);
            Box::pin(async move { run.await.map(|result| encode_result(&id, &result)) })
        });
        let fetchers = (0..lanes)
            .map(|lane| tokio::spawn(fetch_loop(Arc::clone(&shared), Arc::clone(&handler), lane)))
            .collect();
        let renewer = tokio::spawn(renew_loop(Arc::clone(&shared)));
        Worker {
            shared,
            fetchers,
            renewer,
        }
    }
}

/// What a run ended with: its result as JSON (empty for none), or why it
/// failed.
type Outcome = std::result::Result<Vec<u8>, JobError>;

/// The largest result kept with a job, in bytes (as JSON).
pub const MAX_RESULT_BYTES: usize = 1 << 20;

/// A handler's result as stored: JSON, or nothing for `null` and for one
/// that cannot be encoded or is too large (with an error logged).
fn encode_result<R: Serialize>(id: &JobId, result: &R) -> Vec<u8> {
    match serde_json::to_vec(result) {
        Ok(json) if json == b"null" => Vec::new(),
        Ok(json) if json.len() > MAX_RESULT_BYTES => {
            tracing::error!(job = %id, bytes = json.len(),
                "the handler's result is over {MAX_RESULT_BYTES} bytes as JSON; it is not kept");
            Vec::new()
        }
        Ok(json) => json,
        Err(error) => {
            tracing::error!(job = %id, %error, "the handler's result cannot be encoded as JSON; it is not kept");
            Vec::new()
        }
    }
}
type Handler<T> =
    dyn Fn(Job<T>) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync;

/// A run of a job as the worker tracks it, under its lease (id and token):
/// one process may hold two runs of one job when its own fetch recovered
/// the job after the first run's lease ran out.
struct Held {
    cancel: CancellationToken,
    task: Option<tokio::task::AbortHandle>,
    /// The handler has returned; only its outcome's report is outstanding.
    finished: bool,
    /// The lease is gone (a renewal found it lost, or this worker's own
    /// fetch took the job again): the run's result will be discarded.
    lost: bool,
    /// An operator asked to cancel the job.
    cancel_requested: bool,
    /// The worker is shutting down: the run gives its job back.
    requeue: bool,
    /// The latest the lease is known to last: when the fetch that took the
    /// job was last sent, plus what it answered is left of the lease; or
    /// when the last renewal that went through was sent, plus the lease.
    /// The server's deadline is never earlier.
    renewed_until: Instant,
    /// No renewal went through in time: the run was cancelled at the
    /// renewal margin and is aborted at `renewed_until`.
    expired: bool,
}

/// The runs a worker holds, by job id, then lease token: almost always one
/// run per job, two when the worker's own fetch took back a job whose
/// earlier run here lost its lease.
#[derive(Default)]
struct Runs(HashMap<JobId, Vec<(String, Held)>>);

impl Runs {
    fn get(&self, lease: &Lease) -> Option<&Held> {
        let runs = self.0.get(&lease.id)?;
        runs.iter()
            .find(|(token, _)| *token == lease.token)
            .map(|(_, held)| held)
    }

    fn get_mut(&mut self, lease: &Lease) -> Option<&mut Held> {
        let runs = self.0.get_mut(&lease.id)?;
        runs.iter_mut()
            .find(|(token, _)| *token == lease.token)
            .map(|(_, held)| held)
    }

    /// Adds a run; returns the other runs of the same job.
    fn insert(&mut self, lease: Lease, held: Held) -> impl Iterator<Item = &mut Held> {
        let runs = self.0.entry(lease.id).or_default();
        runs.push((lease.token, held));
        let last = runs.len() - 1;
        runs[..last].iter_mut().map(|(_, held)| held)
    }

    fn remove(&mut self, lease: &Lease) {
        if let Some(runs) = self.0.get_mut(&lease.id) {
            runs.retain(|(token, _)| *token != lease.token);
            if runs.is_empty() {
                self.0.remove(&lease.id);
            }
        }
    }

    fn runs_mut(&mut self) -> impl Iterator<Item = &mut Held> {
        self.0.values_mut().flatten().map(|(_, held)| held)
    }

    /// The leases of the runs still to renew, and the earliest time one
    /// of them is known to last to.
    fn to_renew(&self) -> (Vec<Lease>, Option<Instant>) {
        let mut earliest: Option<Instant> = None;
        let leases = self
            .0
            .iter()
            .flat_map(|(id, runs)| {
                runs.iter()
                    .filter(|(_, held)| !held.lost)
                    .map(move |(token, held)| (id, token, held.renewed_until))
            })
            .map(|(id, token, until)| {
                earliest = Some(earliest.map_or(until, |earliest| earliest.min(until)));
                Lease {
                    id: id.clone(),
                    token: token.clone(),
                }
            })
            .collect();
        (leases, earliest)
    }

    /// The next time [`expire`](Runs::expire) has something to do.
    fn next_expiry(&self, margin: Duration) -> Option<Instant> {
        self.0
            .values()
            .flatten()
            .filter_map(|(_, held)| {
                if !held.lost {
                    Some(
                        held.renewed_until
                            .checked_sub(margin)
                            .unwrap_or(held.renewed_until),
                    )
                } else if held.expired && held.task.is_some() && !held.finished {
                    Some(held.renewed_until)
                } else {
                    None
                }
            })
            .min()
    }

    /// Gives up on the leases no renewal reached in time: a run within
    /// `margin` of its lease's end is cancelled (its handler hears of it
    /// while the job is still this worker's), and aborted at the end.
    /// Returns the ids of the runs cancelled now.
    fn expire(&mut self, now: Instant, margin: Duration) -> Vec<JobId> {
        let mut cancelled = Vec::new();
        for (id, runs) in &mut self.0 {
            for (_, held) in runs {
                let cutoff = held
                    .renewed_until
                    .checked_sub(margin)
                    .unwrap_or(held.renewed_until);
                if !held.lost && cutoff <= now {
                    held.lost = true;
                    // A finished run's lease ends with its outcome's own call.
                    if !held.finished {
                        held.expired = true;
                        held.cancel.cancel();
                        cancelled.push(id.clone());
                    }
                }
                if held.expired
                    && !held.finished
                    && held.renewed_until <= now
                    && let Some(task) = held.task.take()
                {
                    task.abort();
                }
            }
        }
        cancelled
    }

    /// Records a renewal sent at `sent` that went through.
    fn renewed(&mut self, leases: &[Lease], sent: Instant, lease: Duration) {
        for renewed in leases {
            if let Some(held) = self.get_mut(renewed)
                && !held.lost
            {
                held.renewed_until = held.renewed_until.max(sent + lease);
            }
        }
    }
}

/// How renewal paces itself against the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseTiming {
    /// Between renewals that went through.
    every: Duration,
    /// Before the end of a lease no renewal reached, its run is cancelled;
    /// at the end it is aborted. A renewal call gets until then.
    margin: Duration,
    /// Between tries of a renewal that failed or ran out of time.
    retry: Duration,
}

impl LeaseTiming {
    fn new(lease: Duration) -> Self {
        Self {
            every: lease / 3,
            margin: lease / 5,
            retry: (lease / 20).clamp(Duration::from_millis(20), Duration::from_millis(250)),
        }
    }
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    discarded: AtomicU64,
    lost_leases: AtomicU64,
    cancelled: AtomicU64,
    requeued: AtomicU64,
    fetches: AtomicU64,
    refused_acks: AtomicU64,
}

struct Shared {
    store: Arc<dyn Store>,
    queue: Arc<str>,
    concurrency: usize,
    /// The limit that moves the concurrency below its ceiling, if any.
    limit: Option<Arc<dyn ConcurrencyLimit>>,
    lease: Duration,
    backoff: Option<Backoff>,
    held: Mutex<Runs>,
    /// Completed jobs whose acknowledgement has not been sent.
    acks: Mutex<Vec<Lease>>,
    /// The handlers' results (JSON) of runs whose acknowledgement is not
    /// through yet; a run whose handler returned nothing (`null`) has none.
    results: Mutex<HashMap<Lease, Vec<u8>>>,
    /// Acknowledgements of a call the queue's script refused, in groups
    /// that are each sent in a call of their own, before any new
    /// acknowledgement (see [`refused`]).
    suspect_acks: Mutex<Vec<Vec<Lease>>>,
    /// The fetch loops' calls (one loop per lane), and the acknowledgements
    /// sent while the fetchers wait: one call at a time each.
    fetch_lanes: Vec<Lane>,
    ack_lane: Lane,
    running: AtomicUsize,
    /// Slots promised to fetch calls in flight: with `running`, never more
    /// than the concurrency, so two lanes never take more jobs than it.
    reserved: Mutex<usize>,
    /// A fetch loop is blocked on Redis waiting for work; the other lanes
    /// park on `resume` until a lane finds more than one call's share
    /// waiting, so a worker holds one blocking connection at most.
    watching: AtomicBool,
    resume: Notify,
    /// The fetchers wait for work: handlers send their own
    /// acknowledgements.
    idle: AtomicBool,
    slot_freed: Notify,
    all_done: Notify,
    stats: Counters,
    metrics: Option<QueueMetrics>,
    stop_fetching: CancellationToken,
    stopped: CancellationToken,
    /// A run came in whose lease has run a renewal round or more already (a
    /// re-sent fetch call): the renewal task renews at once.
    renew_soon: Notify,
}

impl Shared {
    /// The most jobs to run at once now: the concurrency, or less while a
    /// [`ConcurrencyLimit`] says so (at least one).
    fn cap(&self) -> usize {
        match &self.limit {
            Some(limit) => limit.limit().clamp(1, self.concurrency),
            None => self.concurrency,
        }
    }

    /// Tells the concurrency limit, if any, how a run went.
    fn finished(&self, took: Duration, running: usize, overloaded: bool) {
        if let Some(limit) = &self.limit {
            limit.finished(RunSample {
                took,
                running,
                overloaded,
            });
        }
    }
}

/// A sequence of fetch calls under one caller id. A call that failed stays
/// pending and is re-sent unchanged before anything else, so a call that
/// did run on the server answers its first result instead of leasing jobs
/// to nobody or counting its acknowledgements as rejected. The answer says
/// how much of its leases is left: a call that never ran before takes
/// them now, a replay answers leases that began when it first ran.
struct Lane {
    caller: String,
    /// The call that failed.
    pending: tokio::sync::Mutex<Option<FetchCall>>,
}

impl Lane {
    fn new() -> Self {
        Self {
            caller: random_id(),
            pending: tokio::sync::Mutex::new(None),
        }
    }
}

/// What a worker has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs whose handler succeeded and whose completion was recorded.
    pub completed: u64,
    /// Failed attempts (retried or not).
    pub failed: u64,
    /// Jobs this worker sent to the dead set.
    pub dead: u64,
    /// Results refused because the lease was no longer this worker's: the
    /// job had stalled and another worker owns it now.
    pub discarded: u64,
    /// Leases lost: found lost by a renewal, run out with no renewal
    /// through, or run out before the fetch that took them was answered
    /// (the job is then not started here).
    pub lost_leases: u64,
    /// Running jobs dropped at a cancellation request.
    pub cancelled: u64,
    /// Jobs given back to the queue without counting an attempt: at
    /// shutdown, or when their lease ran out here with no renewal through.
    pub requeued: u64,
    /// Fetch calls (each also carries acknowledgements).
    pub fetches: u64,
    /// Acknowledgements the queue refused as malformed (an id or token of
    /// a form this release does not read), each logged as an error and
    /// dropped once it was alone in a refused call: its job runs again
    /// when its lease runs out. The other acknowledgements of the refused
    /// calls go through.
    pub refused_acks: u64,
}

/// Reads a [`Worker`]'s counts; see [`Worker::watch`]. Cheap to clone.
#[derive(Clone)]
pub struct WorkerWatch {
    shared: Arc<Shared>,
}

impl fmt::Debug for WorkerWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerWatch")
            .field("queue", &self.shared.queue)
            .finish_non_exhaustive()
    }
}

impl WorkerWatch {
    /// Counts of what the worker did.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats()
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }
}

/// A running worker. Dropping it stops nothing; call
/// [`shutdown`](Worker::shutdown).
pub struct Worker {
    shared: Arc<Shared>,
    fetchers: Vec<JoinHandle<()>>,
    renewer: JoinHandle<()>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.shared.queue)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Counts of what the worker did.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats()
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// A handle that reads this worker's counts and running jobs while the
    /// worker itself is owned elsewhere (by whatever will shut it down).
    pub fn watch(&self) -> WorkerWatch {
        WorkerWatch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops fetching, lets running jobs finish for up to `deadline`, then
    /// cancels the rest and gives them back to the queue (their attempt
    /// does not count). Returns the final counts.
    pub async fn shutdown(self, deadline: Duration) -> WorkerStats {
        let Self {
            shared,
            fetchers,
            renewer,
        } = self;
        shared.stop_fetching.cancel();
        for fetcher in fetchers {
            let _ = fetcher.await;
        }
        let drained = tokio::time::timeout(deadline, wait_until_idle(&shared))
            .await
            .is_ok();
        if !drained {
            requeue_running(&shared).await;
        }
        for lane in &shared.fetch_lanes {
            give_back_pending_fetch(&shared, lane).await;
        }
        flush_acks(&shared).await;
        shared.stopped.cancel();
        let _ = renewer.await;
        shared.stats()
    }
}

/// Aborts the handlers still running; each run then gives its job back
/// (see [`run_job`]). Waits until they have, for up to one lease.
async fn requeue_running(shared: &Shared) {
    {
        let mut held = shared.held.lock();
        for job in held.runs_mut().filter(|job| !job.finished) {
            job.requeue = true;
            job.cancel.cancel();
            if let Some(task) = job.task.take() {
                task.abort();
            }
        }
    }
    let _ = tokio::time::timeout(shared.lease, wait_until_idle(shared)).await;
}

async fn wait_until_idle(shared: &Shared) {
    while shared.running.load(Ordering::SeqCst) > 0 {
        let done = shared.all_done.notified();
        if shared.running.load(Ordering::SeqCst) == 0 {
            break;
        }
        done.await;
    }
}

impl Shared {
    fn stats(&self) -> WorkerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let stats = &self.stats;
        WorkerStats {
            completed: read(&stats.completed),
            failed: read(&stats.failed),
            dead: read(&stats.dead),
            discarded: read(&stats.discarded),
            lost_leases: read(&stats.lost_leases),
            cancelled: read(&stats.cancelled),
            requeued: read(&stats.requeued),
            fetches: read(&stats.fetches),
            refused_acks: read(&stats.refused_acks),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Up to [`MAX_ACKS`] acknowledgements not sent yet, oldest first.
fn take_acks(shared: &Shared) -> Vec<Lease> {
    let mut acks = shared.acks.lock();
    let count = acks.len().min(MAX_ACKS);
    acks.drain(..count).collect()
}

/// A new call of `lane`.
fn new_call(shared: &Shared, lane: &Lane, want: usize, acks: Vec<Lease>) -> FetchCall {
    let results = {
        let held = shared.results.lock();
        if held.is_empty() {
            Vec::new()
        } else {
            acks.iter()
                .map(|ack| held.get(ack).cloned().unwrap_or_default())
                .collect()
        }
    };
    FetchCall {
        results,
        caller: lane.caller.clone(),
        request: random_id(),
        lease: shared.lease,
        want,
        max_bytes: MAX_FETCH_BYTES,
        acks,
    }
}

/// Sends the acknowledgements not sent yet, taking nothing new: first the
/// ack lane's pending call, if one failed, then those of refused calls,
/// then the rest. A call that fails stays pending for the next flush.
async fn flush_acks(shared: &Shared) {
    let mut pending = shared.ack_lane.pending.lock().await;
    loop {
        let call = match pending.take() {
            Some(pending) => pending,
            None => {
                let acks = next_suspect(shared).unwrap_or_else(|| take_acks(shared));
                if acks.is_empty() {
                    return;
                }
                new_call(shared, &shared.ack_lane, 0, acks)
            }
        };
        match shared.store.fetch(&shared.queue, &call).await {
            Ok(fetched) => acknowledged(shared, &call.acks, fetched.rejected),
            Err(error) if error.is_refusal() => refused(shared, call.acks, &error),
            Err(error) => {
                tracing::debug!(queue = %shared.queue, %error, "acknowledgements not sent; they will be re-sent");
                *pending = Some(call);
                return;
            }
        }
    }
}

/// At shutdown: a fetch call that failed may have leased jobs on the server;
/// re-sent, it answers them, and they go back to the queue at once rather
/// than when their leases run out.
async fn give_back_pending_fetch(shared: &Shared, lane: &Lane) {
    let Some(call) = lane.pending.lock().await.take() else {
        return;
    };
    match shared.store.fetch(&shared.queue, &call).await {
        Ok(fetched) => {
            acknowledged(shared, &call.acks, fetched.rejected);
            for job in fetched.jobs {
                report_failure(shared, &job.lease, Failure::Requeue, "the worker shut down").await;
            }
        }
        Err(error) if error.is_refusal() => refused(shared, call.acks, &error),
        Err(error) => {
            shared.acks.lock().extend(call.acks);
            tracing::warn!(queue = %shared.queue, %error,
                "a fetch call may have taken jobs that no one runs; they return when their leases run out");
        }
    }
}

/// The next group of acknowledgements of a refused call, if any waits.
fn next_suspect(shared: &Shared) -> Option<Vec<Lease>> {
    shared.suspect_acks.lock().pop()
}

/// A call the queue's script refused (an argument it does not read, such
/// as an id of a form this release does not know) changed nothing, and
/// sent again unchanged it would be refused again, for ever. So it is not:
/// its acknowledgements are sent again in halves, each half in a call of
/// its own without new ones, until a refused one stands alone. That one
/// is dropped with an error: its job's lease runs out and the job runs
/// again (at least once, as after a crash). An acknowledgement is thus in
/// at most 11 refused calls (a first of up to [`MAX_ACKS`], then one per
/// halving), and the others of its first call go through.
fn refused(shared: &Shared, mut acks: Vec<Lease>, error: &Error) {
    match acks.len() {
        0 => {
            tracing::error!(queue = %shared.queue, %error,
                "the queue refused a fetch call that acknowledged nothing");
        }
        1 => {
            let ack = &acks[0];
            // No longer renewed: its lease runs out and the job returns.
            shared.held.lock().remove(ack);
            shared.results.lock().remove(ack);
            bump(&shared.stats.refused_acks);
            if let Some(metrics) = &shared.metrics {
                metrics.refused(1);
            }
            tracing::error!(queue = %shared.queue, job = %ack.id, %error,
                "the queue refused this job's acknowledgement; it is dropped, and the job runs again when its lease runs out");
        }
        count => {
            let second = acks.split_off(count / 2);
            tracing::debug!(queue = %shared.queue, %error, count,
                "the queue refused a call's acknowledgements; sending them again in halves to find the refused one");
            let mut suspect = shared.suspect_acks.lock();
            suspect.push(second);
            suspect.push(acks);
        }
    }
}

/// Records the outcome of sent acknowledgements.
fn acknowledged(shared: &Shared, acks: &[Lease], rejected: u32) {
    let mut held = shared.held.lock();
    for ack in acks {
        held.remove(ack);
    }
    drop(held);
    let mut results = shared.results.lock();
    if !results.is_empty() {
        for ack in acks {
            results.remove(ack);
        }
    }
    drop(results);
    let accepted = (acks.len() as u64).saturating_sub(u64::from(rejected));
    shared
        .stats
        .completed
        .fetch_add(accepted, Ordering::Relaxed);
    shared
        .stats
        .discarded
        .fetch_add(u64::from(rejected), Ordering::Relaxed);
    if let Some(metrics) = &shared.metrics {
        metrics.completed(accepted);
        metrics.discarded(u64::from(rejected));
    }
}

/// One lane's fetch loop. A call reserves the slots it may fill (at most
/// the lane's share of the concurrency) until its answer's jobs are
/// running; a call that failed keeps its reservation, as it is re-sent
/// unchanged.
async fn fetch_loop<T>(shared: Arc<Shared>, handler: Arc<Handler<T>>, lane: usize)
where
    T: DeserializeOwned + Send + 'static,
{
    let lanes = &shared.fetch_lanes;
    let share = call_share(shared.concurrency, lanes.len());
    let lane = &lanes[lane];
    let mut retry_in = Duration::from_millis(50);
    // Failed calls in a row: the first is a warning, the rest of the same
    // outage are not, and the end of the outage is said once.
    let mut failures = 0_u32;
    while !shared.stop_fetching.is_cancelled() {
        let pending = lane.pending.lock().await.take();
        let suspect = if pending.is_none() {
            next_suspect(&shared)
        } else {
            None
        };
        let call = match (pending, suspect) {
            (Some(pending), _) => pending,
            (None, Some(acks)) => new_call(&shared, lane, 0, acks),
            (None, None) => {
                let freed = shared.slot_freed.notified();
                let free = reserve(&shared, share);
                let acks = take_acks(&shared);
                if free == 0 && acks.is_empty() {
                    tokio::select! {
                        () = freed => {}
                        () = shared.stop_fetching.cancelled() => {}
                    }
                    continue;
                }
                new_call(&shared, lane, free, acks)
            }
        };
        bump(&shared.stats.fetches);
        // The server runs the call after this, so its leases run out no
        // earlier than this plus what it says is left of them.
        let sending = Instant::now();
        let fetched = match shared.store.fetch(&shared.queue, &call).await {
            Ok(fetched) => {
                if failures > 0 {
                    tracing::info!(queue = %shared.queue, failures, "fetching works again");
                }
                failures = 0;
                retry_in = Duration::from_millis(50);
                fetched
            }
            Err(error) if error.is_refusal() => {
                // Nothing ran: the slots the call reserved are free again.
                unreserve(&shared, call.want);
                let acknowledging = !call.acks.is_empty();
                refused(&shared, call.acks, &error);
                if !acknowledging {
                    tokio::select! {
                        () = tokio::time::sleep(retry_in) => {}
                        () = shared.stop_fetching.cancelled() => {}
                    }
                    retry_in = (retry_in * 2).min(Duration::from_secs(2));
                }
                continue;
            }
            Err(error) => {
                *lane.pending.lock().await = Some(call);
                failures += 1;
                if failures == 1 {
                    tracing::warn!(queue = %shared.queue, %error, "fetch failed; retrying until Redis answers");
                } else {
                    tracing::debug!(queue = %shared.queue, %error, retry_in = ?retry_in, "fetch failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(retry_in) => {}
                    () = shared.stop_fetching.cancelled() => {}
                }
                retry_in = (retry_in * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let Fetched {
            now_ms,
            next_wake,
            rejected,
            lease_left,
            jobs,
        } = fetched;
        acknowledged(&shared, &call.acks, rejected);
        let taken = jobs.len();
        let lease_until = sending + lease_left;
        let margin = LeaseTiming::new(shared.lease).margin;
        if !jobs.is_empty() && lease_until.checked_sub(margin).unwrap_or(sending) <= Instant::now()
        {
            // The answer came back (a call re-sent after an outage, a link
            // that stalled on the way back) so late that the leases it took
            // may have run out, and another worker may hold the jobs now: a
            // run would be cancelled at once anyway. None starts; each job
            // runs again once its lease is recovered, as a stall.
            for job in &jobs {
                bump(&shared.stats.lost_leases);
                tracing::warn!(queue = %shared.queue, job = %job.lease.id,
                    "a fetch was answered after the lease it took had run out; the job is left to run again once the lease is recovered");
            }
        } else {
            for job in jobs {
                spawn_job(&shared, &handler, job, now_ms, lease_until);
            }
        }
        unreserve(&shared, call.want);
        if taken >= call.want {
            // A full share: more may be waiting, so a lane parked below
            // looks too.
            if call.want > 0 {
                shared.resume.notify_waiters();
            }
            continue;
        }
        let timeout = next_wake.unwrap_or(MAX_BLOCK).min(MAX_BLOCK);
        if timeout.is_zero() {
            // Cut short by the byte budget, or something is due now: more
            // is waiting, so look again at once, and a parked lane too.
            shared.resume.notify_waiters();
            continue;
        }
        // The queue has nothing more for now: one lane blocks until it has,
        // or a delayed job or a lease is due; the others park until a lane
        // finds more than one call's share, so a wake-up does not start
        // every lane. Handlers acknowledge on their own meanwhile.
        let resumed = shared.resume.notified();
        tokio::pin!(resumed);
        resumed.as_mut().enable();
        if shared.watching.swap(true, Ordering::SeqCst) {
            tokio::select! {
                () = resumed => {}
                () = shared.stop_fetching.cancelled() => {}
            }
            continue;
        }
        shared.idle.store(true, Ordering::SeqCst);
        flush_acks(&shared).await;
        tokio::select! {
            waited = shared.store.wait(&shared.queue, timeout) => {
                if let Err(error) = waited {
                    tracing::debug!(queue = %shared.queue, %error, "blocking wait failed");
                    tokio::time::sleep(retry_in).await;
                }
            }
            () = shared.stop_fetching.cancelled() => {}
        }
        shared.idle.store(false, Ordering::SeqCst);
        shared.watching.store(false, Ordering::SeqCst);
    }
    flush_acks(&shared).await;
}

/// The most slots one of `lanes` fetch lanes fills in a call, at
/// `concurrency`: an even share, but at least [`MIN_CALL`] (all of them
/// when fewer).
fn call_share(concurrency: usize, lanes: usize) -> usize {
    concurrency
        .div_ceil(lanes)
        .max(concurrency.min(MIN_CALL))
        .min(MAX_FETCH)
}

/// Reserves up to `most` of the slots neither running nor promised to
/// another call; returns how many.
fn reserve(shared: &Shared, most: usize) -> usize {
    let mut reserved = shared.reserved.lock();
    let busy = shared.running.load(Ordering::SeqCst) + *reserved;
    let free = shared.cap().saturating_sub(busy).min(most);
    *reserved += free;
    free
}

/// Gives back a call's reservation once the jobs it took are running (and
/// counted in `running`); slots it did not fill are free for another lane.
fn unreserve(shared: &Shared, slots: usize) {
    {
        let mut reserved = shared.reserved.lock();
        *reserved = reserved.saturating_sub(slots);
    }
    shared.slot_freed.notify_one();
}

/// Starts a run of `job`, whose lease runs out no earlier than
/// `lease_until`.
fn spawn_job<T>(
    shared: &Arc<Shared>,
    handler: &Arc<Handler<T>>,
    job: Taken,
    now_ms: u64,
    lease_until: Instant,
) where
    T: DeserializeOwned + Send + 'static,
{
    let running = shared.running.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(metrics) = &shared.metrics {
        let waited = Duration::from_millis(now_ms.saturating_sub(job.ready_at_ms));
        metrics.waited(waited);
    }
    let cancel = CancellationToken::new();
    let mut held = shared.held.lock();
    let run = Held {
        cancel: cancel.clone(),
        task: None,
        finished: false,
        lost: false,
        cancel_requested: false,
        requeue: false,
        renewed_until: lease_until,
        expired: false,
    };
    // An older run of the same job in this process lost its lease: the
    // job came back through recovery, so that run's result would be
    // refused. Cancel it and stop renewing it.
    for older in held.insert(job.lease.clone(), run) {
        if !older.lost {
            older.lost = true;
            if !older.finished {
                bump(&shared.stats.lost_leases);
                tracing::warn!(queue = %shared.queue, job = %job.lease.id,
                    "lease lost while the job ran here (the process froze or Redis was away longer than the lease); the job runs again and this run is cancelled");
                older.cancel.cancel();
            }
        }
    }
    drop(held);
    // A call re-sent after an outage can answer leases taken when it first
    // ran: renew them now rather than at the next round.
    let left = lease_until.saturating_duration_since(Instant::now());
    if left + LeaseTiming::new(shared.lease).every < shared.lease {
        shared.renew_soon.notify_one();
    }
    let span = trace::process_span(&shared.queue, job.lease.id.as_str(), job.run, &job.trace);
    let run = run_job(
        Arc::clone(shared),
        Arc::clone(handler),
        job,
        (cancel, running),
        span.clone(),
    );
    drop(tokio::spawn(run.instrument(span)));
}

async fn run_job<T>(
    shared: Arc<Shared>,
    handler: Arc<Handler<T>>,
    job: Taken,
    (cancel, running): (CancellationToken, usize),
    span: tracing::Span,
) where
    T: DeserializeOwned + Send + 'static,
{
    let lease = job.lease.clone();
    let started = Instant::now();
    let mut timed_out = false;
    let outcome = match serde_json::from_slice::<T>(&job.payload) {
        Err(error) => Err(JobError::permanent(format!(
            "the payload cannot be decoded as {}: {error}",
            std::any::type_name::<T>()
        ))),
        Ok(payload) => {
            let run = Job {
                payload,
                id: lease.id.clone(),
                run: job.run,
                failures: job.failures,
                max_attempts: job.max_attempts,
                stalls: job.stalls,
                context: (!job.context.is_empty()).then(|| job.context.clone()),
                cancel: cancel.clone(),
                progress: ProgressHandle {
                    store: Arc::clone(&shared.store),
                    queue: Arc::clone(&shared.queue),
                    lease: lease.clone(),
                },
            };
            let shutting_down = shared
                .held
                .lock()
                .get(&lease)
                .is_none_or(|held| held.requeue);
            let task =
                (!shutting_down).then(|| tokio::spawn(handler(run).instrument(span.clone())));
            if let Some(task) = &task
                && let Some(held) = shared.held.lock().get_mut(&lease)
            {
                if held.requeue {
                    // Shutdown came between the check and the spawn.
                    task.abort();
                } else {
                    held.task = Some(task.abort_handle());
                }
            }
            let Some(task) = task else {
                report_failure(&shared, &lease, Failure::Requeue, "the worker shut down").await;
                trace::finish(&span, "requeued");
                shared.held.lock().remove(&lease);
                release_slot(&shared);
                return;
            };
            let timeout = (job.timeout_ms > 0).then(|| Duration::from_millis(job.timeout_ms));
            let (outcome, ran_out) = supervise(task, timeout, &cancel).await;
            timed_out = ran_out;
            outcome
        }
    };
    let took = started.elapsed();
    // From here on a lost lease is expected (the outcome's own call may
    // end it first), not news.
    if let Some(held) = shared.held.lock().get_mut(&lease) {
        held.finished = true;
    }
    if let Some(metrics) = &shared.metrics {
        metrics.ran(took);
    }
    match outcome {
        // A handler that finished its job completes it, even if a
        // cancellation came in meanwhile.
        Ok(result) => {
            trace::finish(&span, "completed");
            if !result.is_empty() {
                shared.results.lock().insert(lease.clone(), result);
            }
            shared.acks.lock().push(lease);
            shared.finished(took, running, false);
            release_slot(&shared);
            // While the fetcher blocks, nobody else sends the
            // acknowledgement.
            if shared.idle.load(Ordering::SeqCst) {
                flush_acks(&shared).await;
            }
        }
        Err(error) => {
            let failure = match &error {
                // The run was stopped here for want of a renewal, through no
                // fault of the job: if the lease is still its own, the job
                // goes back without an attempt counted, as a stall (the run
                // was lost to its lease, as the queue's own check would say
                // once the lease ran out), a shutdown meanwhile or not.
                _ if lease_expired(&shared, &lease) => Failure::Stalled,
                _ if requeue_asked(&shared, &lease) => Failure::Requeue,
                _ if cancel_requested(&shared, &lease) => Failure::Cancelled,
                JobError {
                    hold: Some((hold, false)),
                    ..
                } => Failure::Hold(*hold),
                JobError {
                    hold: Some((hold, true)),
                    ..
                } => Failure::HoldGroup(*hold),
                error if !error.retry => Failure::Dead,
                _ => {
                    let attempt = job.failures + 1;
                    let policy = shared
                        .backoff
                        .clone()
                        .or_else(|| Backoff::decode(&job.backoff));
                    Failure::Retry(policy.map_or(Duration::ZERO, |policy| policy.delay(attempt)))
                }
            };
            trace::finish(
                &span,
                match failure {
                    Failure::Retry(_) => "failed",
                    Failure::Dead => "dead",
                    Failure::Requeue
                    | Failure::Stalled
                    | Failure::Hold(_)
                    | Failure::HoldGroup(_) => "requeued",
                    Failure::Cancelled => "cancelled",
                },
            );
            // A run past its time, one stopped for want of a renewal, and a
            // handler holding its queue for a downstream all say the work is
            // more than what it calls can take now.
            let overloaded = timed_out
                || matches!(
                    failure,
                    Failure::Stalled | Failure::Hold(_) | Failure::HoldGroup(_)
                );
            shared.finished(took, running, overloaded);
            report_failure(&shared, &lease, failure, &error.message).await;
            shared.held.lock().remove(&lease);
            release_slot(&shared);
        }
    }
}

fn requeue_asked(shared: &Shared, lease: &Lease) -> bool {
    shared
        .held
        .lock()
        .get(lease)
        .is_some_and(|held| held.requeue)
}

fn lease_expired(shared: &Shared, lease: &Lease) -> bool {
    shared
        .held
        .lock()
        .get(lease)
        .is_some_and(|held| held.expired)
}

fn cancel_requested(shared: &Shared, lease: &Lease) -> bool {
    shared
        .held
        .lock()
        .get(lease)
        .is_some_and(|held| held.cancel_requested)
}

/// Runs the handler's task to its end, its timeout, or its panic; true
/// with the outcome when the timeout ended it. At the timeout the run's
/// cancellation token fires before its task is aborted, so work the
/// handler spawned or blocks on hears of it too.
async fn supervise(
    mut task: JoinHandle<Outcome>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> (Outcome, bool) {
    let joined = match timeout {
        None => task.await,
        Some(limit) => match tokio::time::timeout(limit, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                cancel.cancel();
                task.abort();
                return (
                    Err(JobError::new(format!("timed out after {limit:?}"))),
                    true,
                );
            }
        },
    };
    let outcome = match joined {
        Ok(outcome) => outcome,
        Err(error) if error.is_panic() => {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_owned());
            Err(JobError::new(format!("the handler panicked: {message}")))
        }
        Err(_) => Err(JobError::new("the handler was aborted")),
    };
    (outcome, false)
}

/// Records a failed attempt, retrying the call while Redis is away for up
/// to one lease: past that the lease has run out and the job comes back as
/// stalled anyway. A call that ran but whose answer was lost answers the
/// same when re-sent; one the queue refused (see [`refused`]) is not sent
/// again.
async fn report_failure(shared: &Shared, lease: &Lease, failure: Failure, message: &str) {
    let message = bounded_message(message);
    let message = message.as_ref();
    let give_up = Instant::now() + shared.lease;
    let mut retry_in = Duration::from_millis(50);
    loop {
        match shared
            .store
            .fail(&shared.queue, lease, failure, message)
            .await
        {
            Ok(after) => {
                let stats = &shared.stats;
                match after {
                    AfterFailure::Lost => bump(&stats.discarded),
                    AfterFailure::Cancelled => bump(&stats.cancelled),
                    // A stall is no failed attempt, though past the queue's
                    // stalls it sends the job to the dead set.
                    AfterFailure::Dead if matches!(failure, Failure::Stalled) => {
                        bump(&stats.dead);
                    }
                    AfterFailure::Dead => {
                        bump(&stats.failed);
                        bump(&stats.dead);
                    }
                    AfterFailure::Waiting
                        if matches!(failure, Failure::Requeue | Failure::Stalled) =>
                    {
                        bump(&stats.requeued);
                    }
                    AfterFailure::Waiting | AfterFailure::Delayed => bump(&stats.failed),
                }
                if let Some(metrics) = &shared.metrics {
                    metrics.failed(
                        after,
                        matches!(failure, Failure::Requeue | Failure::Stalled),
                    );
                }
                return;
            }
            Err(error) if error.is_refusal() => {
                tracing::error!(queue = %shared.queue, job = %lease.id, %error,
                    "the queue refused this job's failure; the job returns when its lease runs out");
                return;
            }
            Err(error) if Instant::now() + retry_in < give_up => {
                tracing::debug!(queue = %shared.queue, job = %lease.id, %error, "could not record a failure; retrying");
                tokio::time::sleep(retry_in).await;
                retry_in = (retry_in * 2).min(Duration::from_secs(1));
            }
            Err(error) => {
                tracing::warn!(queue = %shared.queue, job = %lease.id, %error,
                    "could not record a failure; the job returns when its lease runs out");
                return;
            }
        }
    }
}

fn release_slot(shared: &Shared) {
    if shared.running.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.all_done.notify_waiters();
    }
    shared.slot_freed.notify_one();
}

/// Renews the leases of running jobs every third of a lease, and passes
/// cancellations and lost leases to their handlers.
///
/// Renewal is bounded by the lease, whatever the client's command timeout
/// and reconnection backoff: a call gets until the earliest lease it carries
/// is within the margin of its end, one that failed or ran out of time is
/// tried again after a short pause, and a run whose lease no renewal reached
/// in time is cancelled at the margin and aborted at the lease's end, before
/// any other worker can take its job.
async fn renew_loop(shared: Arc<Shared>) {
    let timing = LeaseTiming::new(shared.lease);
    let mut next_renewal = Instant::now() + timing.every;
    // Failed calls in a row: the first is a warning, the rest of the same
    // outage are not.
    let mut failures = 0_u32;
    let mut reconnections = shared.store.reconnections();
    loop {
        let wake = shared
            .held
            .lock()
            .next_expiry(timing.margin)
            .map_or(next_renewal, |expiry| expiry.min(next_renewal));
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = shared.renew_soon.notified() => next_renewal = Instant::now(),
            // The backend is reachable again: a renewal that failed while
            // it was not goes now, not after the pause between tries.
            Ok(()) = reconnected(&mut reconnections) => {
                if failures > 0 {
                    next_renewal = Instant::now();
                }
            }
            () = shared.stopped.cancelled() => return,
        }
        expire(&shared, timing.margin);
        let now = Instant::now();
        if now < next_renewal {
            continue;
        }
        let (held, earliest) = shared.held.lock().to_renew();
        let Some(earliest) = earliest else {
            next_renewal = now + timing.every;
            continue;
        };
        let budget = earliest
            .checked_sub(timing.margin)
            .unwrap_or(earliest)
            .saturating_duration_since(now);
        let sent = Instant::now();
        let answer = tokio::time::timeout(budget, renew_apart(&shared, &held)).await;
        let renewed = match answer {
            Ok(Ok(renewed)) => renewed,
            Ok(Err(error)) => {
                failures += 1;
                renewal_failed(&shared, failures, &error);
                next_renewal = Instant::now() + timing.retry;
                continue;
            }
            Err(_) => {
                failures += 1;
                renewal_failed(&shared, failures, &format!("no answer within {budget:?}"));
                next_renewal = Instant::now() + timing.retry;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(queue = %shared.queue, failures, "lease renewal works again");
        }
        failures = 0;
        next_renewal = sent + timing.every;
        let mut jobs = shared.held.lock();
        jobs.renewed(&held, sent, shared.lease);
        for lease in renewed.lost.iter().filter_map(|&at| held.get(at)) {
            if let Some(job) = jobs.get_mut(lease) {
                job.lost = true;
                // A finished run's lease ends with its outcome's own call.
                if !job.finished {
                    bump(&shared.stats.lost_leases);
                    tracing::warn!(queue = %shared.queue, job = %lease.id,
                        "lease lost (not renewed in time): another worker may run the job; this run's result will be discarded");
                    job.cancel.cancel();
                }
            }
        }
        for lease in renewed.cancel.iter().filter_map(|&at| held.get(at)) {
            if let Some(job) = jobs.get_mut(lease) {
                job.cancel_requested = true;
                job.cancel.cancel();
            }
        }
    }
}

/// Renews `held` in one call; when the queue's script refuses the call (a
/// lease of an id it cannot read: a job written by a later release, or an
/// earlier release's worker meeting ids of a newer form), in halves, each
/// on its own, until a refused lease stands alone. That one is answered as
/// lost, so its run is cancelled and its job returns when the lease runs
/// out, and the others are renewed: one unreadable job never lets every
/// lease of the worker run out. A lease is thus in at most
/// 1 + log2(held) calls.
async fn renew_apart(shared: &Shared, held: &[Lease]) -> Result<crate::store::Renewed> {
    let mut renewed = crate::store::Renewed::default();
    // Spans of `held` still to send, as (start, end).
    let mut spans = vec![(0, held.len())];
    while let Some((start, end)) = spans.pop() {
        match shared
            .store
            .renew(&shared.queue, shared.lease, &held[start..end])
            .await
        {
            Ok(part) => {
                renewed.lost.extend(part.lost.iter().map(|at| start + at));
                renewed
                    .cancel
                    .extend(part.cancel.iter().map(|at| start + at));
            }
            Err(error) if error.is_refusal() && end - start > 1 => {
                let middle = start + (end - start) / 2;
                tracing::debug!(queue = %shared.queue, %error, count = end - start,
                    "the queue refused a renewal call; its leases are sent again in halves");
                spans.push((middle, end));
                spans.push((start, middle));
            }
            Err(error) if error.is_refusal() => {
                tracing::error!(queue = %shared.queue, job = %held[start].id, %error,
                    "the queue refused this job's lease renewal; its run is cancelled, and the job returns when its lease runs out");
                renewed.lost.push(start);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(renewed)
}

/// Returns when the backend's connection comes back after it was lost;
/// never for a backend without reconnections, or once it is gone.
async fn reconnected(
    reconnections: &mut Option<tokio::sync::watch::Receiver<u64>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match reconnections {
        Some(receiver) => receiver.changed().await,
        None => std::future::pending().await,
    }
}

fn renewal_failed(shared: &Shared, failures: u32, error: &dyn fmt::Display) {
    if failures == 1 {
        tracing::warn!(queue = %shared.queue, %error, "lease renewal failed; retrying until the leases run out");
    } else {
        tracing::debug!(queue = %shared.queue, %error, "lease renewal failed");
    }
}

/// Cancels the runs whose lease no renewal reached in time, and aborts
/// those whose lease has ended.
fn expire(shared: &Shared, margin: Duration) {
    let cancelled = shared.held.lock().expire(Instant::now(), margin);
    for id in cancelled {
        bump(&shared.stats.lost_leases);
        tracing::warn!(queue = %shared.queue, job = %id,
            "lease lost (no renewal reached Redis in time): the run is cancelled now and aborted when its lease ends; another worker may run the job");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_fills_half_the_slots_but_at_least_the_fewest_worth_a_call() {
        let shares: Vec<usize> = [1, 4, 8, 12, 16, 32, 10_000]
            .iter()
            .map(|&concurrency| call_share(concurrency, FETCH_LANES))
            .collect();
        assert_eq!(shares, [1, 4, 8, 8, 8, 16, MAX_FETCH]);
        assert_eq!(call_share(1, 1), 1, "one lane at concurrency 1");
    }
}
