//! What a producer can ask of one job: when it may run, how urgent it is,
//! how often and how long it may be tried, its group, and its idempotency key.

use std::time::Duration;

use crate::backoff::{Backoff, MAX_DELAY};
use crate::error::{Error, Result};

/// Priority levels: 0 runs first, [`LOWEST_PRIORITY`] last.
pub const LOWEST_PRIORITY: u8 = 7;
/// The level of a job that names none.
pub const DEFAULT_PRIORITY: u8 = 3;
pub use crate::caps::{MAX_CONTEXT_BYTES, MAX_KEY_BYTES};

/// How one job is enqueued. Every setter checks its value, so options that
/// exist are valid.
///
/// ```
/// use std::time::Duration;
/// use seawall_queue::{Backoff, JobOptions};
///
/// # fn main() -> seawall_queue::Result<()> {
/// let options = JobOptions::new()
///     .delay(Duration::from_secs(30))?
///     .priority(1)?
///     .attempts(5)?
///     .backoff(Backoff::exponential(Duration::from_secs(1)).full_jitter())?
///     .timeout(Duration::from_secs(60))?
///     .group("tenant-42")?
///     .idempotency_key("invoice-2026-0117", Duration::from_secs(3600))?;
/// assert_eq!(options.max_attempts(), 5);
/// assert_eq!(options.group_key(), Some("tenant-42"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct JobOptions {
    delay: Duration,
    priority: u8,
    attempts: u32,
    backoff: Backoff,
    timeout: Option<Duration>,
    group: Option<String>,
    idempotency: Option<(String, Dedup)>,
    context: Option<String>,
}

/// What a job's key deduplicates: while it holds, an enqueue with the same
/// key on the same queue adds no job and answers the holder's id.
///
/// Whether a key holds is judged by the enqueue that asks, by its own
/// mode, from the state of the job that took the key: an until-started
/// enqueue is answered by a job with the key that has not started, a
/// debounce only by one still waiting for its delay. So enqueues of one key
/// under two modes may make two jobs (a debounce whose key is held by an
/// until-started job that waits with no delay makes a job of its own, and
/// takes the key over); and an until-completed enqueue is answered by a
/// running job whatever mode took the key. So a key other than a window is
/// kept until its job completes, dies or is removed, and deleted then: Redis
/// keeps only the keys of jobs not yet finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dedup {
    /// For a window from the first enqueue, whatever became of the job
    /// (BullMQ's throttle mode); a second enqueue of a different job with
    /// the key is [`Error::IdempotencyMismatch`].
    Window(Duration),
    /// Until the job starts (its first run is taken); a later enqueue is
    /// answered with the waiting job, whatever its payload.
    UntilStarted,
    /// Until the job completes or is dead-lettered.
    UntilCompleted,
    /// While the job waits for its delay: a later enqueue replaces its
    /// payload and starts its delay again from now (BullMQ's debounce).
    Debounce,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl JobOptions {
    /// Run as soon as possible, at the default priority, tried up to three
    /// times with exponential backoff from one second, no timeout, no group.
    pub fn new() -> Self {
        Self {
            delay: Duration::ZERO,
            priority: DEFAULT_PRIORITY,
            attempts: 3,
            backoff: Backoff::exponential(Duration::from_secs(1)),
            timeout: None,
            group: None,
            idempotency: None,
            context: None,
        }
    }

    /// Not before `delay` from now; at most [`MAX_DELAY`].
    pub fn delay(mut self, delay: Duration) -> Result<Self> {
        if delay > MAX_DELAY {
            return Err(Error::InvalidOption(format!(
                "a delay of {delay:?} is longer than the most allowed, {MAX_DELAY:?}"
            )));
        }
        self.delay = delay;
        Ok(self)
    }

    /// The job's level: 0 runs first, [`LOWEST_PRIORITY`] last; jobs of
    /// one level run in the order they were enqueued.
    pub fn priority(mut self, priority: u8) -> Result<Self> {
        if priority > LOWEST_PRIORITY {
            return Err(Error::InvalidOption(format!(
                "priority {priority} is outside 0 to {LOWEST_PRIORITY}"
            )));
        }
        self.priority = priority;
        Ok(self)
    }

    /// How many times the job may run in all, the first included: 1 means
    /// no retry.
    pub fn attempts(mut self, attempts: u32) -> Result<Self> {
        if attempts == 0 {
            return Err(Error::InvalidOption(
                "a job needs at least one attempt".to_owned(),
            ));
        }
        self.attempts = attempts;
        Ok(self)
    }

    /// The wait before each retry. The policy is stored with the job, so
    /// it must be a built-in one: a [custom](Backoff::custom) function
    /// cannot travel to the worker and is refused here; set it on the
    /// worker instead ([`WorkerBuilder::backoff`](crate::WorkerBuilder::backoff)).
    pub fn backoff(mut self, backoff: Backoff) -> Result<Self> {
        if backoff.encode().is_none() {
            return Err(Error::InvalidOption(
                "a custom backoff cannot be stored with a job; set it on the worker".to_owned(),
            ));
        }
        self.backoff = backoff;
        Ok(self)
    }

    /// How long one attempt may run before its cancellation token fires,
    /// its task is aborted and the attempt counts as a failure; more than
    /// zero and at most [`MAX_DELAY`].
    pub fn timeout(mut self, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() || timeout > MAX_DELAY {
            return Err(Error::InvalidOption(format!(
                "a timeout must be longer than zero and at most {MAX_DELAY:?}, got {timeout:?}"
            )));
        }
        self.timeout = Some(timeout);
        Ok(self)
    }

    /// The group (a tenant, say) the job is fetched under, round-robin with
    /// the other groups.
    pub fn group(mut self, group: impl Into<String>) -> Result<Self> {
        self.group = Some(checked_key("group", group.into())?);
        Ok(self)
    }

    /// A second enqueue with the same key within `window` (more than zero,
    /// at most [`MAX_DELAY`]) adds nothing and answers the first job's id.
    pub fn idempotency_key(mut self, key: impl Into<String>, window: Duration) -> Result<Self> {
        if window.is_zero() || window > MAX_DELAY {
            return Err(Error::InvalidOption(format!(
                "an idempotency window must be longer than zero and at most {MAX_DELAY:?}, got {window:?}"
            )));
        }
        self.idempotency = Some((
            checked_key("idempotency key", key.into())?,
            Dedup::Window(window),
        ));
        Ok(self)
    }

    /// While a job enqueued with `key` has not started, an enqueue with the
    /// same key adds nothing and answers that job's id (at most
    /// [`MAX_KEY_HOLD`](crate::MAX_KEY_HOLD)). Replaces any other key.
    pub fn unique_until_started(mut self, key: impl Into<String>) -> Result<Self> {
        self.idempotency = Some((checked_key("unique key", key.into())?, Dedup::UntilStarted));
        Ok(self)
    }

    /// While a job enqueued with `key` has not completed (or died), an
    /// enqueue with the same key adds nothing and answers that job's id (at
    /// most [`MAX_KEY_HOLD`](crate::MAX_KEY_HOLD)). Replaces any other key.
    pub fn unique_until_completed(mut self, key: impl Into<String>) -> Result<Self> {
        self.idempotency = Some((
            checked_key("unique key", key.into())?,
            Dedup::UntilCompleted,
        ));
        Ok(self)
    }

    /// Runs the job `delay` after the last of a burst of enqueues with
    /// `key`: while a job with the key waits for its delay, an enqueue with
    /// the key replaces that job's payload and starts its delay again from
    /// now, answering its id; once it started, the next enqueue makes a new
    /// job. Sets the delay (more than zero) and replaces any other key.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_queue::{JobOptions, Queues};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// let options = JobOptions::new().debounce("reindex:7", Duration::from_secs(2))?;
    /// let first = queues.enqueue("search", &"edit 1", &options).await?;
    /// let second = queues.enqueue("search", &"edit 2", &options).await?;
    /// assert_eq!(first, second);
    /// let job = queues.job("search", &first).await?.expect("kept");
    /// assert_eq!(job.payload_as::<String>()?, "edit 2");
    /// # Ok(())
    /// # }
    /// ```
    pub fn debounce(mut self, key: impl Into<String>, delay: Duration) -> Result<Self> {
        if delay.is_zero() {
            return Err(Error::InvalidOption(
                "a debounce needs a delay longer than zero".to_owned(),
            ));
        }
        let key = checked_key("debounce key", key.into())?;
        self = self.delay(delay)?;
        self.idempotency = Some((key, Dedup::Debounce));
        Ok(self)
    }

    /// A short text (1 to [`MAX_CONTEXT_BYTES`] bytes) that travels with
    /// the job to every run of it, outside its payload: what the producer
    /// knows of the request that enqueued it and the handler should honour
    /// (a position to read after, a tenant, a locale), as Sidekiq's current
    /// attributes or a message's headers do. Its handler reads it with
    /// [`Job::context`](crate::Job::context). The queue stores it only when
    /// set, and a worker of a release that knows no context runs the job as
    /// before, without it. It is not part of what an idempotency key
    /// compares; a [debounce](Self::debounce)'s later enqueue replaces it
    /// with the payload. A [`Flow`](crate::Flow)'s jobs and a
    /// [scheduler](crate::Queues::upsert_scheduler)'s take none.
    ///
    /// ```
    /// use seawall_queue::{JobOptions, Queues};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// let options = JobOptions::new().context("read-after=16/B374D848")?;
    /// let id = queues.enqueue("reports", &7, &options).await?;
    /// let job = queues.job("reports", &id).await?.expect("kept");
    /// assert_eq!(job.context.as_deref(), Some("read-after=16/B374D848"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn context(mut self, context: impl Into<String>) -> Result<Self> {
        let context = context.into();
        if context.is_empty() || context.len() > MAX_CONTEXT_BYTES {
            return Err(Error::InvalidOption(format!(
                "a job's context must be 1 to {MAX_CONTEXT_BYTES} bytes, got {}",
                context.len()
            )));
        }
        self.context = Some(context);
        Ok(self)
    }

    /// The delay before the first run.
    pub fn initial_delay(&self) -> Duration {
        self.delay
    }

    /// The priority level.
    pub fn priority_level(&self) -> u8 {
        self.priority
    }

    /// How many times the job may run in all.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// The retry policy.
    pub fn retry_backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The timeout of one attempt, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The group, if any.
    pub fn group_key(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The idempotency key and its window, if the options carry one (see
    /// [`deduplication`](Self::deduplication) for every kind of key).
    pub fn idempotency(&self) -> Option<(&str, Duration)> {
        match &self.idempotency {
            Some((key, Dedup::Window(window))) => Some((key.as_str(), *window)),
            _ => None,
        }
    }

    /// The key that deduplicates the job and how, if any.
    pub fn deduplication(&self) -> Option<(&str, Dedup)> {
        self.idempotency
            .as_ref()
            .map(|(key, dedup)| (key.as_str(), *dedup))
    }

    /// The [context](Self::context) the job carries, if any.
    pub fn context_text(&self) -> Option<&str> {
        self.context.as_deref()
    }
}

/// A key of 1 to [`MAX_KEY_BYTES`] bytes without control characters.
fn checked_key(what: &str, key: String) -> Result<String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(Error::InvalidOption(format!(
            "a {what} must be 1 to {MAX_KEY_BYTES} bytes without control characters"
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_now_at_the_middle_level_three_times() {
        let options = JobOptions::default();
        assert_eq!(options.initial_delay(), Duration::ZERO);
        assert_eq!(options.priority_level(), DEFAULT_PRIORITY);
        assert_eq!(options.max_attempts(), 3);
        assert_eq!(options.retry_backoff().ceiling(2), Duration::from_secs(2));
        assert_eq!(options.attempt_timeout(), None);
        assert_eq!(options.group_key(), None);
        assert_eq!(options.idempotency(), None);
    }

    #[test]
    fn out_of_range_values_are_typed_errors() {
        let refused = [
            JobOptions::new().delay(MAX_DELAY + Duration::from_secs(1)),
            JobOptions::new().priority(LOWEST_PRIORITY + 1),
            JobOptions::new().attempts(0),
            JobOptions::new().timeout(Duration::ZERO),
            JobOptions::new().group(""),
            JobOptions::new().group("a".repeat(MAX_KEY_BYTES + 1)),
            JobOptions::new().group("tenant\n42"),
            JobOptions::new().idempotency_key("k", Duration::ZERO),
            JobOptions::new().idempotency_key("k", Duration::MAX),
            JobOptions::new().idempotency_key("k", MAX_DELAY + Duration::from_millis(1)),
            JobOptions::new().timeout(Duration::MAX),
            JobOptions::new().idempotency_key("", Duration::from_secs(1)),
            JobOptions::new().backoff(Backoff::custom(|_| Duration::ZERO)),
        ];
        for result in refused {
            assert!(matches!(result, Err(Error::InvalidOption(_))), "{result:?}");
        }
        assert!(JobOptions::new().group("a".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(JobOptions::new().priority(0).is_ok());
        assert!(JobOptions::new().delay(MAX_DELAY).is_ok());
        assert!(JobOptions::new().idempotency_key("k", MAX_DELAY).is_ok());
        assert!(JobOptions::new().timeout(MAX_DELAY).is_ok());
    }
}
