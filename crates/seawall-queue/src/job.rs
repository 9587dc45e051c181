//! What the queue tells about jobs: ids, states, records, counts, events.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A job's id, unique within its queue: `<sequence>-<epoch>`, such as
/// `31556926000000-9f86d081884c7d65`.
///
/// The sequence is a decimal number that grows in enqueue order, not one
/// by one: the last one plus one, or the server's clock in microseconds
/// since 2026, whichever is larger. The epoch is 16 hex digits drawn at
/// random by the server that gave the id (the first digits of its Redis
/// replication id, new when a server starts and when a replica is
/// promoted; the memory backend draws its own). Ids of one primary share
/// its epoch, so they sort by sequence in enqueue order, as text while
/// the sequences have as many digits, and always by
/// [`sequence`](Self::sequence).
///
/// A server that lost its last writes (a failover to a replica that
/// missed them, an fsync window) may give a sequence again, since neither
/// its last sequence nor its clock can be trusted then, but with another
/// epoch: an id never comes back, whatever the clocks say, unless two
/// servers that were the queue's primary drew the same 64-bit epoch (a
/// chance of one in 2⁶⁴ for each pair of them, about 3 × 10⁻¹⁴ over a
/// thousand failovers) and gave overlapping sequences.
///
/// Ids of queues written before ids carried an epoch are digits alone;
/// they keep working. So are the ids given while a worker of the release
/// before epochs is alive (see the crate's
/// [Upgrading](crate#upgrading)): that release reads no other form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

/// The most bytes of an id: a sequence of up to 20 digits, `-`, an epoch
/// of up to 19 hex digits.
const MAX_ID_BYTES: usize = 40;

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `text` as an id if it has the form of one (`<sequence>-<epoch>`, or
    /// digits alone as older ids are), for ids that come from outside,
    /// such as a URL; `None` for anything else. It does not say the job
    /// exists.
    pub fn parse(text: &str) -> Option<Self> {
        let (sequence, epoch) = match text.split_once('-') {
            Some((sequence, epoch)) => (sequence, Some(epoch)),
            None => (text, None),
        };
        let digits = |part: &str, check: fn(&u8) -> bool| {
            !part.is_empty() && part.bytes().all(|byte| check(&byte))
        };
        let well_formed = text.len() <= MAX_ID_BYTES
            && digits(sequence, u8::is_ascii_digit)
            && epoch.is_none_or(|epoch| digits(epoch, u8::is_ascii_hexdigit));
        well_formed.then(|| Self(text.to_owned()))
    }

    /// The id's sequence: its place in enqueue order among the ids of one
    /// epoch; `None` when the id was not given by this crate.
    pub fn sequence(&self) -> Option<u64> {
        let sequence = self
            .0
            .split_once('-')
            .map_or(self.0.as_str(), |(sequence, _)| sequence);
        sequence.parse().ok()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for JobId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for JobId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Ready to run, in line within its group by priority, then age.
    Waiting,
    /// Waiting for its delay or its retry backoff to pass.
    Delayed,
    /// Held by a worker under a lease.
    Active,
    /// Ran successfully; kept until the queue's retention removes it.
    Completed,
    /// Out of attempts, stalled too often, or undecodable: kept with its
    /// errors until retried, cleaned, or pushed out by the dead-set cap.
    Dead,
    /// A flow's job whose children have not all finished (see
    /// [`Queues::enqueue_flow`](crate::Queues::enqueue_flow)).
    WaitingChildren,
}

impl JobState {
    /// The state's name: `waiting`, `delayed`, `active`, `completed`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Dead => "dead",
            Self::WaitingChildren => "waiting-children",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "waiting" => Self::Waiting,
            "delayed" => Self::Delayed,
            "active" => Self::Active,
            "completed" => Self::Completed,
            "dead" => Self::Dead,
            "waiting-children" => Self::WaitingChildren,
            _ => return None,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two states a job ends in, for [`Queues::clean`](crate::Queues::clean).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Completed jobs.
    Completed,
    /// Dead jobs.
    Dead,
}

/// A handler's last report of how far its job got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// What the handler said it is doing.
    pub message: String,
}

/// One failed attempt in a job's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AttemptError {
    /// Which run of the job failed, counting from 1.
    pub attempt: u32,
    /// When it failed (milliseconds since the Unix epoch, server time).
    #[serde(rename = "at")]
    pub at_ms: u64,
    /// The handler's error, or why the queue ended the attempt.
    pub error: String,
}

/// Everything the queue keeps about one job.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Where it is now.
    pub state: JobState,
    /// The payload as enqueued (JSON).
    pub payload: Vec<u8>,
    /// Its priority level.
    pub priority: u8,
    /// Its group, if it has one.
    pub group: Option<String>,
    /// How many failed attempts count against [`max_attempts`](JobInfo::max_attempts).
    pub failures: u32,
    /// How many times a worker lost it by ceasing to renew its lease.
    pub stalls: u32,
    /// How many times a worker has taken it.
    pub runs: u32,
    /// The most failures it may have.
    pub max_attempts: u32,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// When it last became ready to run (or will, while delayed).
    pub ready_at: SystemTime,
    /// When its current or last run started.
    pub started_at: Option<SystemTime>,
    /// When it completed or died.
    pub finished_at: Option<SystemTime>,
    /// The handler's last progress report.
    pub progress: Option<Progress>,
    /// The last failed attempts, oldest first (at most 10).
    pub errors: Vec<AttemptError>,
    /// Why it went to the dead set, while it is dead: its last attempt's
    /// error, its stalls, or, for a flow job that never ran, the failure
    /// of the child that failed it (which no attempt lists).
    pub dead_reason: Option<String>,
    /// Whether a cancellation was asked while it ran.
    pub cancel_requested: bool,
    /// The scheduler tick it was enqueued for, if a
    /// [scheduler](crate::Queues::upsert_scheduler) enqueued it.
    pub tick: Option<Tick>,
    /// What its handler returned, as JSON, once it completed (see
    /// [`WorkerBuilder::start`](crate::WorkerBuilder::start)); kept as long
    /// as the completed job is.
    pub result: Option<Vec<u8>>,
    /// The [context](crate::JobOptions::context) it carries, if any.
    pub context: Option<String>,
}

/// The tick of a scheduler that a job was enqueued for: each tick of a
/// scheduler makes at most one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The scheduler's id.
    pub scheduler: String,
    /// When the tick was due.
    pub at: SystemTime,
}

impl Tick {
    /// Reads a job record's `<tick ms>:<scheduler>`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (at, scheduler) = text.split_once(':')?;
        Some(Self {
            scheduler: scheduler.to_owned(),
            at: time_of(at.parse().ok()?),
        })
    }
}

impl JobInfo {
    /// Its handler's result decoded as `T`; `None` when there is none.
    pub fn result_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.result
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .map_err(Error::Encode)
    }

    /// The payload decoded as `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(Error::Encode)
    }
}

/// How many jobs a queue holds in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Ready to run.
    pub waiting: u64,
    /// Waiting for a delay or a retry backoff.
    pub delayed: u64,
    /// Running under a lease.
    pub active: u64,
    /// Completed and still kept.
    pub completed: u64,
    /// Dead and still kept.
    pub dead: u64,
    /// Whether the queue is paused.
    pub paused: bool,
    /// Flow jobs waiting for their children.
    pub waiting_children: u64,
}

/// A rate limit: at most `max` jobs start in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The most starts in one window.
    pub max: u32,
    /// The window's length.
    pub per: std::time::Duration,
}

/// What limits a queue's starts, read by
/// [`Queues::limits`](crate::Queues::limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The queue's rate limit
    /// ([`set_rate_limit`](crate::Queues::set_rate_limit)).
    pub rate: Option<RateLimit>,
    /// How many jobs started within the rate limit's window that ends now,
    /// on the backend's clock (0 without a limit).
    pub started_in_window: u64,
    /// The rate limit each named group has on its own
    /// ([`set_group_rate_limit`](crate::Queues::set_group_rate_limit)).
    pub group_rate: Option<RateLimit>,
    /// The most jobs of one named group that run at once
    /// ([`set_group_limit`](crate::Queues::set_group_limit)).
    pub group_concurrency: Option<u32>,
    /// How much longer a handler's hold
    /// ([`JobError::rate_limited`](crate::JobError::rate_limited)) keeps
    /// the queue from starting jobs, on the backend's clock.
    pub held_for: Option<std::time::Duration>,
}

/// A queue's [`Counts`] and how long its oldest waiting job has waited,
/// read in one step by [`Queues::backlog`](crate::Queues::backlog).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// How many jobs are in each state, and whether the queue is paused.
    pub counts: Counts,
    /// How long the oldest job at the head of a line has waited, on the
    /// backend's clock, counted from its [`ready_at`]; `None` when no job
    /// waits. Reported while the queue is paused too.
    ///
    /// A group's waiting jobs stand in one line per priority level, in the
    /// order workers take them (jobs without a group form a group of their
    /// own); the figure is the oldest among the heads of those lines. It
    /// is not always the oldest waiting job: a job that came back to the
    /// front of its line (its worker stopped or shut down, or it failed
    /// and is retried without a backoff), or to its old place in a line
    /// of a level other than the default (retried after a backoff), became
    /// ready later than the jobs behind it, and those are not looked at.
    /// A line that does not move makes the figure grow without bound,
    /// which is what it is for. A delayed or backed-off job counts from
    /// when the queue moves it to waiting: the first fetch, lease renewal
    /// or count at or after its due time.
    ///
    /// The lines of every group are looked at while at most
    /// [`MAX_BACKLOG_GROUPS`](crate::MAX_BACKLOG_GROUPS) named groups have
    /// jobs waiting; past that, those of jobs without a group and of the
    /// first [`MAX_BACKLOG_GROUPS`](crate::MAX_BACKLOG_GROUPS) named groups
    /// of the fetch rotation (a group at its
    /// [cap](crate::Queues::set_group_limit) is out of the rotation).
    ///
    /// [`ready_at`]: JobInfo::ready_at
    pub oldest_waiting: Option<Duration>,
}

/// What [`Queues::cancel`](crate::Queues::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was waiting or delayed and is gone.
    Removed,
    /// The job is running: its handler's cancellation token fires at the
    /// worker's next lease renewal, and the job is dropped when the handler
    /// returns (or when its lease runs out).
    Requested,
    /// The job already completed or died; nothing changed.
    AlreadyFinished(JobState),
    /// No such job.
    NotFound,
}

/// One event of a queue's stream. Events of jobs that one call moved
/// together share their stream entry and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The entry's position in the stream; pass it as `after` to read on.
    pub position: String,
    /// What happened: `enqueued`, `active`, `progress`, `completed`,
    /// `failed`, `retried`, `dead`, `stalled`, `cancelled` or `requeued`.
    pub kind: String,
    /// The job it happened to.
    pub job: JobId,
    /// What else the event carries: `error` for failed and dead, `delay`
    /// (ms) for retried, `percent` and `message` for progress.
    pub fields: Vec<(String, String)>,
}

/// Milliseconds since the Unix epoch as a time.
pub(crate) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// What a flow job's failure, once final (dead-lettered or cancelled), does
/// to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChildFailure {
    /// The parent is dead-lettered too, with the child's error, and so on
    /// up the tree (the default).
    #[default]
    FailParent,
    /// The parent runs once its other children finished, and sees the
    /// failure among its children's outcomes.
    Ignore,
    /// The parent runs once its other children finished, as if this child
    /// had never been one of them.
    Drop,
}

impl ChildFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::FailParent => "fail",
            Self::Ignore => "ignore",
            Self::Drop => "drop",
        }
    }
}

/// One child of a flow job, as its parent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildInfo {
    /// The child's queue.
    pub queue: String,
    /// The child's id in it.
    pub id: JobId,
    /// How it finished, if it has.
    pub outcome: ChildOutcome,
}

impl ChildInfo {
    /// The child's result decoded as `T`: `None` unless it completed with
    /// one.
    pub fn result_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match &self.outcome {
            ChildOutcome::Completed(Some(json)) => serde_json::from_slice(json)
                .map(Some)
                .map_err(Error::Encode),
            _ => Ok(None),
        }
    }
}

/// A parent's children in a stable order: by queue, then as they were
/// added (by id sequence), whichever backend read them.
pub(crate) fn sort_children(children: &mut [ChildInfo]) {
    children.sort_by(|a, b| (&a.queue, a.id.sequence()).cmp(&(&b.queue, b.id.sequence())));
}

/// How a flow job's child finished.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildOutcome {
    /// Not yet.
    Pending,
    /// Completed, with its handler's result if it returned one (as JSON).
    Completed(Option<Vec<u8>>),
    /// Dead-lettered or cancelled, with why; only a child whose failure
    /// does not fail its parent is seen so by a running parent.
    Failed(String),
}
