//! The contract between the queue's front (producers, workers, operators)
//! and where jobs live: Redis, or memory for tests. Every method is one
//! atomic step; the conformance suite holds both backends to the same
//! answers.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::job::{Cancelled, Counts, Event, Finished, JobId, JobInfo, JobState};

/// The longest queue name, in bytes.
pub const MAX_QUEUE_NAME_BYTES: usize = 128;

/// How a queue keeps its finished jobs, its events and its stalled jobs.
/// Bounded by default, so a queue's memory does not grow with its history.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Completed jobs kept, newest first (default 1,000; 0 removes a job
    /// as it completes).
    pub keep_completed: u64,
    /// Completed jobs older than this are removed (default a day; zero
    /// keeps them until the count pushes them out).
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
    pub(crate) idempotency: Option<(String, u64)>,
}

/// A job id with the lease token of one run of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) id: JobId,
    pub(crate) token: u64,
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

/// What a lease renewal learnt.
#[derive(Debug, Default)]
pub(crate) struct Renewed {
    /// Leases that are no longer the worker's.
    pub(crate) lost: Vec<JobId>,
    /// Jobs whose cancellation was asked.
    pub(crate) cancel: Vec<JobId>,
}

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    async fn enqueue(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<(JobId, bool)>>;
    /// Acknowledges `acks` as completed, promotes due jobs, recovers
    /// expired leases, then takes up to `want` jobs under `lease`.
    async fn fetch(
        &self,
        queue: &str,
        lease: Duration,
        want: usize,
        acks: &[Lease],
    ) -> Result<Fetched>;
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
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()>;
    async fn counts(&self, queue: &str) -> Result<Counts>;
    async fn cancel(&self, queue: &str, id: &JobId) -> Result<Cancelled>;
    /// Moves one dead job (or up to `limit` of the oldest) back to waiting.
    async fn retry_dead(&self, queue: &str, id: Option<&JobId>, limit: u64) -> Result<u64>;
    async fn clean(
        &self,
        queue: &str,
        state: Finished,
        older_than: Duration,
        keep: u64,
        limit: u64,
    ) -> Result<u64>;
    async fn set_group_limit(&self, queue: &str, limit: u32) -> Result<()>;
    async fn job(&self, queue: &str, id: &JobId) -> Result<Option<JobInfo>>;
    /// Up to `limit` ids of jobs in `state` (not waiting): active by lease
    /// deadline, delayed by due time, completed and dead newest first.
    async fn list(&self, queue: &str, state: JobState, limit: usize) -> Result<Vec<JobId>>;
    async fn events(&self, queue: &str, after: Option<&str>, count: usize) -> Result<Vec<Event>>;
    /// Why the backend cannot promise durability, if it cannot.
    async fn durability_warning(&self) -> Result<Option<String>>;
    /// Calls made to the backend's server so far (0 for memory).
    fn round_trips(&self) -> u64;
}

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
