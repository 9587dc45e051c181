//! The contract between the queue's front (producers, workers, operators)
//! and where jobs live: Redis, or memory for tests. Every method is one
//! atomic step; the conformance suite holds both backends to the same
//! answers.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::job::{
    Backlog, Cancelled, ChildFailure, ChildInfo, Counts, Event, Finished, JobId, JobInfo, JobState,
    Limits,
};

/// The longest queue name, in bytes.
pub const MAX_QUEUE_NAME_BYTES: usize = 128;

/// The most named groups whose lines [`Queues::backlog`](crate::Queues::backlog)
/// looks at (see [`Backlog::oldest_waiting`]). Each costs the server three
/// commands, two more per priority level other than the default that has
/// jobs waiting in it, and the step holds Redis while it runs.
pub const MAX_BACKLOG_GROUPS: usize = 100;

/// How a queue keeps its finished jobs, its events and its stalled jobs.
/// Bounded by default, so a queue's memory does not grow with its history.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Completed jobs kept, newest first (default 1,000; 0 removes a job
    /// as it completes).
    pub keep_completed: u64,
    /// Completed jobs older than this are removed (default a day; zero
    /// keeps them until the count pushes them out). They are removed as
    /// later jobs complete, up to 1,000 at each completion, not by a timer:
    /// a queue in which nothing completes keeps its last completed jobs,
    /// and their results, past this age until something does (or until
    /// [`Queues::clean`](crate::Queues::clean) removes them).
    pub keep_completed_for: Duration,
    /// Dead jobs kept, newest first (default 10,000).
    pub keep_dead: u64,
    /// How often a job may lose its worker (a crash, a lease not renewed)
    /// and be run again before it is dead-lettered (default 1).
    pub max_stalls: u32,
    /// The approximate length the event stream is trimmed to (default
    /// 10,000; 0 writes no events).
    pub events_max_len: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keep_completed: 1_000,
            keep_completed_for: Duration::from_secs(24 * 3600),
            keep_dead: 10_000,
            max_stalls: 1,
            events_max_len: 10_000,
        }
    }
}

impl Settings {
    /// Refuses retention counts and ages past what the scripts take
    /// ([`MAX_SETTING`], and as many ms, about 34 years).
    pub(crate) fn check(&self) -> Result<()> {
        const MOST: u64 = MAX_SETTING;
        let counts = [
            ("keep_completed", self.keep_completed),
            ("keep_completed_for (ms)", millis(self.keep_completed_for)),
            ("keep_dead", self.keep_dead),
            ("events_max_len", self.events_max_len),
        ];
        for (name, value) in counts {
            if value > MOST {
                return Err(Error::InvalidSetting(format!(
                    "{name} is {value}; at most {MOST} is allowed"
                )));
            }
        }
        Ok(())
    }
}

/// The largest count or retention the scripts take (2^40; durations in
/// ms), as `MAX_SETTING` in the scripts (`caps.rs` defines it for them).
pub(crate) use crate::caps::MAX_SETTING;

/// A job as the producer hands it to a backend.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub(crate) payload: Vec<u8>,
    pub(crate) priority: u8,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: String,
    pub(crate) timeout_ms: u64,
    pub(crate) group: String,
    pub(crate) delay_ms: u64,
    /// The deduplication key and how it holds (see [`Dedup`](crate::Dedup)).
    pub(crate) idempotency: Option<(String, KeyHold)>,
    /// The trace context stored with it (see `trace`); empty for none.
    pub(crate) trace: String,
    /// Its [context](crate::JobOptions::context); empty for none.
    pub(crate) context: String,
}

/// The longest a key held [until](crate::Dedup::UntilStarted) a job starts
/// or completes, or for a [debounce](crate::Dedup::Debounce), holds: a job
/// still waiting after this frees its key. Such a key is freed (its Redis
/// key deleted) once its job completes, dies or is removed; this bound only
/// ends keys whose jobs went another way.
pub const MAX_KEY_HOLD: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a job's deduplication key holds, as a backend keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyHold {
    /// For this many ms (at least 1) from the enqueue.
    Window(u64),
    UntilStarted,
    UntilCompleted,
    Debounce,
}

impl KeyHold {
    /// How long the key is kept at most, in ms.
    pub(crate) fn kept_ms(self) -> u64 {
        match self {
            Self::Window(ms) => ms,
            Self::UntilStarted | Self::UntilCompleted | Self::Debounce => millis(MAX_KEY_HOLD),
        }
    }
}

/// A job id with the lease token of one run of it. Tokens are unique per
/// run, also across a Redis that lost its last writes: a token names the
/// fetch call that took the job (a random request id) and the job's place
/// in that call's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Lease {
    pub(crate) id: JobId,
    pub(crate) token: String,
}

/// One fetch call: the acknowledgements it carries and what it takes.
///
/// A call that fails (a timeout, a dropped connection) may still have run
/// on the server. Re-sent unchanged (the same `request`), it answers the
/// first run's result; the backend keeps the last call of each `caller`.
#[derive(Debug, Clone)]
pub(crate) struct FetchCall {
    /// A worker and its lane of calls (one call at a time per caller).
    pub(crate) caller: String,
    /// Random per call, hex.
    pub(crate) request: String,
    pub(crate) lease: Duration,
    pub(crate) want: usize,
    /// Past this many payload bytes no further job is taken (the first
    /// always is).
    pub(crate) max_bytes: usize,
    pub(crate) acks: Vec<Lease>,
    /// The handlers' results of the acknowledged runs, by position in
    /// `acks` (JSON; empty, or missing at the end, for none), kept with
    /// each completed job.
    pub(crate) results: Vec<Vec<u8>>,
}

/// A random id, hex: 64 bits, for requests and workers.
pub(crate) fn random_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The longest error or progress message kept, in bytes; longer ones are
/// cut at a character boundary.
pub(crate) const MAX_MESSAGE_BYTES: usize = 4096;

/// `message` cut to [`MAX_MESSAGE_BYTES`] at a character boundary, with an
/// ellipsis when cut.
pub(crate) fn bounded_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &message[..end]))
}

/// One job a worker took.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub(crate) lease: Lease,
    pub(crate) payload: Vec<u8>,
    pub(crate) ready_at_ms: u64,
    pub(crate) failures: u32,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: String,
    pub(crate) timeout_ms: u64,
    pub(crate) stalls: u32,
    /// Which run of the job this is, from 1.
    pub(crate) run: u32,
    /// The trace context stored with it; empty for none.
    pub(crate) trace: String,
    /// Its [context](crate::JobOptions::context); empty for none.
    pub(crate) context: String,
}

/// What one fetch call did.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// The store's clock when it ran, in ms since the epoch.
    pub(crate) now_ms: u64,
    /// When a delayed job falls due or a lease runs out, whichever is first.
    pub(crate) next_wake: Option<Duration>,
    /// Acknowledgements refused because the lease was no longer theirs.
    pub(crate) rejected: u32,
    /// What is left of the leases of the jobs answered: the whole lease,
    /// unless the call is a replay, whose leases began when it first ran.
    pub(crate) lease_left: Duration,
    pub(crate) jobs: Vec<Taken>,
}

/// How an attempt that did not succeed ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failure {
    /// Counted; retried after the delay unless out of attempts.
    Retry(Duration),
    /// Counted; straight to the dead set.
    Dead,
    /// Not counted: back to waiting (a worker shutting down).
    Requeue,
    /// A stall, not an attempt: the run lost its lease before it ended
    /// (no renewal reached the queue in time), and the worker gives the job
    /// back as the queue's own check would once the lease ran out: back to
    /// waiting, or to the dead set past the queue's stalls.
    Stalled,
    /// Not counted: back to the front of its line, and the queue starts
    /// nothing for this long (the handler's downstream limits it).
    Hold(Duration),
    /// As `Hold`, for the job's group only (the whole queue for a job
    /// without one).
    HoldGroup(Duration),
    /// Dropped: its cancellation was asked.
    Cancelled,
}

/// Where the job went after [`Store::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// The lease was no longer the caller's: nothing changed.
    Lost,
    Waiting,
    Delayed,
    Dead,
    Cancelled,
}

impl AfterFailure {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "lost" => Self::Lost,
            "waiting" => Self::Waiting,
            "delayed" => Self::Delayed,
            "dead" => Self::Dead,
            "cancelled" => Self::Cancelled,
            other => return Err(Error::Protocol(format!("fail answered {other:?}"))),
        })
    }
}

/// What a lease renewal learnt, as positions in the leases it was given.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Renewed {
    /// Leases that are no longer the worker's.
    pub(crate) lost: Vec<usize>,
    /// Leases whose job's cancellation was asked.
    pub(crate) cancel: Vec<usize>,
}

/// Which dead jobs [`Store::retry_dead`] moves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeadJobs<'a> {
    One(&'a JobId),
    Oldest(u64),
}

/// A scheduler as a backend keeps it (see `crate::schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredScheduler {
    pub(crate) id: String,
    /// The schedule and what missed ticks do, as text.
    pub(crate) schedule: String,
    /// The template of its jobs, encoded.
    pub(crate) template: Vec<u8>,
    /// Bumped by every change, so a tick planned before one is refused.
    pub(crate) revision: u64,
    /// When its next tick is due, in ms since the epoch; 0 while none is
    /// planned (a new or changed schedule, a resumed scheduler).
    pub(crate) next_ms: u64,
    pub(crate) paused: bool,
    /// Its latest tick that made a job, and that job: a tick still to come
    /// when its job was enqueued ahead, delayed until then.
    pub(crate) last: Option<(u64, JobId)>,
    /// The tick that made a job before `last`, and that job.
    pub(crate) previous: Option<(u64, JobId)>,
    /// When a runner looks at it next, in ms since the epoch (see
    /// [`TickGuard::due_ms`]); 0 while it is paused.
    pub(crate) due_ms: u64,
    /// When its schedule last changed or it was resumed, by the backend's
    /// clock: while none is planned, its next tick is the first after
    /// then. 0 when not known (kept by an earlier release): the first
    /// after the runner's look.
    pub(crate) from_ms: u64,
}

/// What [`Store::due_schedulers`] found.
#[derive(Debug, Default)]
pub(crate) struct DueSchedulers {
    /// The backend's clock, in ms since the epoch.
    pub(crate) now_ms: u64,
    /// Schedulers whose next tick is due (or not yet planned).
    pub(crate) due: Vec<StoredScheduler>,
    /// When the first scheduler not among them is due.
    pub(crate) next_due_ms: Option<u64>,
}

/// The condition and effect of a scheduler's enqueue: it adds a job per
/// tick only while the scheduler still holds `revision` and `next_ms`, and
/// then plans `new_next_ms`, to be looked at again at `due_ms`.
#[derive(Debug, Clone)]
pub(crate) struct TickGuard {
    pub(crate) scheduler: String,
    pub(crate) revision: u64,
    pub(crate) next_ms: u64,
    pub(crate) new_next_ms: u64,
    /// When a runner should look at the scheduler again: ahead of
    /// `new_next_ms`, so that tick's job is in the queue before it is due,
    /// but not before the last of `ticks`, so at most one tick to come has
    /// a job.
    pub(crate) due_ms: u64,
    /// The ticks to make a job for, oldest first. A tick still to come
    /// makes a delayed job, ready at the tick (plus the template's delay).
    pub(crate) ticks: Vec<u64>,
    /// The job each tick makes.
    pub(crate) job: NewJob,
}

/// What [`Store::enqueue_ticks`] added, per guard: the jobs, or `None` for
/// a stale guard.
pub(crate) type TicksAdded = Vec<Option<Vec<JobId>>>;

/// One job of a flow as a backend adds it, parents before their children.
#[derive(Debug, Clone)]
pub(crate) struct FlowNode {
    pub(crate) queue: String,
    /// Its parent's place among the flow's jobs; `None` for the root.
    pub(crate) parent: Option<usize>,
    pub(crate) on_failure: ChildFailure,
    pub(crate) job: NewJob,
}

pub use crate::caps::MAX_FLOW_JOBS;

/// The most schedulers one queue holds.
pub const MAX_SCHEDULERS: u64 = 100_000;

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Adds `jobs`; `request` (random per call) makes a re-sent call
    /// answer the first one's ids instead of adding them again. Ids take
    /// the form of wire version `wire` (see [`crate::WIRE_VERSION`]): digits
    /// alone for 1, `<sequence>-<epoch>` from 2; the memory backend, whose
    /// processes are all this one, always gives the newest.
    async fn enqueue(
        &self,
        queue: &str,
        request: &str,
        jobs: Vec<NewJob>,
        wire: u32,
    ) -> Result<Vec<(JobId, bool)>>;
    /// Enqueues the ticks of each scheduler that is as its guard planned
    /// it, all in one step; per guard, the jobs added, or `None`, with
    /// nothing changed for that scheduler, when it is not (another process
    /// enqueued the ticks, or it changed). `request` as for
    /// [`Store::enqueue`].
    async fn enqueue_ticks(
        &self,
        queue: &str,
        request: &str,
        guards: &[TickGuard],
        wire: u32,
    ) -> Result<TicksAdded>;
    /// Adds a flow, all its jobs or none: each waits until its children
    /// finished (a job without any is released at once). Answers the ids
    /// in the order of `nodes`; `request` as for [`Store::enqueue`].
    async fn enqueue_flow(
        &self,
        request: &str,
        nodes: &[FlowNode],
        wire: u32,
    ) -> Result<Vec<JobId>>;
    /// The children of flow job `id`, with how each finished.
    async fn children(&self, queue: &str, id: &JobId) -> Result<Vec<ChildInfo>>;
    /// Adds or changes a scheduler; a changed schedule plans anew, a
    /// changed template alone keeps the planned tick. Answers the revision.
    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: &str,
        template: &[u8],
    ) -> Result<u64>;
    /// Whether there was such a scheduler.
    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool>;
    /// Whether there is such a scheduler; a resumed one plans anew.
    async fn pause_scheduler(&self, queue: &str, id: &str, paused: bool) -> Result<bool>;
    async fn scheduler(&self, queue: &str, id: &str) -> Result<Option<StoredScheduler>>;
    /// Up to `limit` schedulers in the order of their ids, after `after`
    /// (empty: from the first).
    async fn schedulers(
        &self,
        queue: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredScheduler>>;
    /// Up to `limit` schedulers whose tick is due, by due time.
    async fn due_schedulers(&self, queue: &str, limit: usize) -> Result<DueSchedulers>;
    /// Acknowledges the call's acks as completed, promotes due jobs,
    /// recovers expired leases, then takes jobs (see [`FetchCall`]).
    async fn fetch(&self, queue: &str, call: &FetchCall) -> Result<Fetched>;
    /// Returns when work may have arrived, or after `timeout`.
    async fn wait(&self, queue: &str, timeout: Duration) -> Result<()>;
    async fn fail(
        &self,
        queue: &str,
        lease: &Lease,
        failure: Failure,
        error: &str,
    ) -> Result<AfterFailure>;
    async fn renew(&self, queue: &str, lease: Duration, held: &[Lease]) -> Result<Renewed>;
    async fn progress(
        &self,
        queue: &str,
        lease: &Lease,
        percent: u8,
        message: &str,
    ) -> Result<bool>;
    /// Succeeds when an enqueue on `queue` would be acknowledged now: the
    /// server that holds the queue takes a write, and as many replicas
    /// confirm it as an enqueue waits for.
    async fn check_enqueue(&self, queue: &str) -> Result<()>;
    /// Changes each time a connection to the backend comes back after it
    /// was lost (never, in memory): a renewal that failed meanwhile is
    /// tried again at once.
    fn reconnections(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()>;
    async fn counts(&self, queue: &str) -> Result<Counts>;
    /// The counts, and how long the oldest head of a line has waited,
    /// looking at the lines of at most `most_groups` named groups (see
    /// [`Backlog::oldest_waiting`]).
    async fn backlog(&self, queue: &str, most_groups: usize) -> Result<Backlog>;
    async fn cancel(&self, queue: &str, id: &JobId) -> Result<Cancelled>;
    /// Moves one dead job (or up to a number of the oldest) back to waiting.
    async fn retry_dead(&self, queue: &str, which: DeadJobs<'_>) -> Result<u64>;
    async fn clean(
        &self,
        queue: &str,
        state: Finished,
        older_than: Duration,
        keep: u64,
        limit: u64,
    ) -> Result<u64>;
    /// At most `max` jobs start in any `per`, across every worker; 0 for
    /// no limit.
    async fn set_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()>;
    /// At most `max` jobs of each named group start in any `per`; 0 for no
    /// limit.
    async fn set_group_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()>;
    async fn set_group_limit(&self, queue: &str, limit: u32) -> Result<()>;
    /// The limits set on `queue` and what they hold back now.
    async fn limits(&self, queue: &str) -> Result<Limits>;
    async fn job(&self, queue: &str, id: &JobId) -> Result<Option<JobInfo>>;
    /// Up to `limit` ids of jobs in `state` (not waiting): active by lease
    /// deadline, delayed by due time, completed and dead newest first.
    async fn list(&self, queue: &str, state: JobState, limit: usize) -> Result<Vec<JobId>>;
    async fn events(&self, queue: &str, after: Option<&str>, count: usize) -> Result<Vec<Event>>;
    /// Why the backend cannot promise durability, if it cannot.
    async fn durability_warning(&self) -> Result<Option<String>>;
    /// Calls made to the backend's server so far (0 for memory).
    fn round_trips(&self) -> u64;
    /// Stores a process's report under `id`, stamped with the backend's
    /// time; forgets processes silent for [`FORGET_AFTER`].
    async fn announce(&self, id: &str, report: &[u8]) -> Result<()>;
    /// Forgets a process.
    async fn withdraw(&self, id: &str) -> Result<()>;
    /// Every remembered report with the ms since it was stored.
    async fn processes(&self) -> Result<Vec<(Vec<u8>, u64)>>;
}

/// How long a process stays listed after its last announcement, marked not
/// alive, before it is forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A queue name of 1 to [`MAX_QUEUE_NAME_BYTES`] bytes without braces,
/// whitespace or control characters.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = |c: char| c.is_control() || c.is_whitespace() || c == '{' || c == '}';
    if name.is_empty() || name.len() > MAX_QUEUE_NAME_BYTES || name.chars().any(bad) {
        return Err(Error::InvalidName(format!(
            "a {what} must be 1 to {MAX_QUEUE_NAME_BYTES} bytes without braces, whitespace or control characters, got {name:?}"
        )));
    }
    Ok(())
}

/// Whole milliseconds, saturating: how every duration reaches a job record
/// or a script.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
