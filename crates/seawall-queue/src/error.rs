//! The crate's error type.

use fred::error::ErrorKind;

/// Why a queue setting or operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backoff policy that cannot work (a factor below 1, a cap below the
    /// first delay, a delay that is not finite).
    #[error("invalid backoff: {0}")]
    InvalidBackoff(String),
    /// A job option out of its range (a priority above the lowest level,
    /// no attempts, an empty or over-long group key).
    #[error("invalid job option: {0}")]
    InvalidOption(String),
    /// A queue name or key prefix that cannot name Redis keys (empty, too
    /// long, or with braces or control characters).
    #[error("invalid queue name: {0}")]
    InvalidName(String),
    /// A worker or queue setting out of its range (no concurrency, a lease
    /// too short to renew).
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// A schedule that cannot run: a cron expression that does not parse
    /// or never matches, an unknown time zone, an interval out of range.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
    /// A payload that could not be encoded as JSON.
    #[error("the payload cannot be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    /// Redis refused a command, did not answer in time, or could not be
    /// reached; the error's [`kind`](fred::error::Error::kind) and
    /// [`details`](fred::error::Error::details) say which. Nothing the call
    /// was to change is half done: every change is one script.
    #[error("redis: {0}")]
    Redis(#[source] fred::error::Error),
    /// No blocking connection could be had from the pool in time.
    #[error("no blocking connection within {0:?}")]
    PoolTimeout(std::time::Duration),
    /// The Redis server is too old for the queue's scripts (it needs 6.2
    /// or newer).
    #[error("unsupported server: {0}")]
    Unsupported(String),
    /// Fewer replicas than asked for acknowledged the enqueue in time
    /// ([`RedisQueues::replicated_enqueues`](crate::RedisQueues::replicated_enqueues)),
    /// and its jobs were taken back before any worker took one, a
    /// take-back as many replicas confirmed in time: nothing was queued,
    /// also after a failover. A retry, with or without an idempotency key,
    /// queues the jobs once.
    #[error(
        "only {acked} of {wanted} replicas acknowledged the enqueue in time; nothing was queued"
    )]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// Fewer replicas than asked for acknowledged the enqueue in time, and
    /// its jobs could not be taken back (a worker took one already, or the
    /// primary stopped answering), or too few replicas confirmed the
    /// take-back in time (one that got the jobs but not the take-back
    /// brings them back if it is promoted): they may be queued, may run,
    /// and may be lost in a failover. Only a retry with the same
    /// idempotency key is sure to queue each job at most once.
    #[error(
        "only {acked} of {wanted} replicas acknowledged the enqueue in time; whether it is queued is unknown"
    )]
    EnqueueOutcomeUnknown {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// The idempotency key is held, within its window, by an earlier job
    /// with another payload or other options (priority, attempts, backoff,
    /// timeout, group, delay). Nothing was enqueued.
    #[error("idempotency key {key:?} was first used for a different job")]
    IdempotencyMismatch {
        /// The key.
        key: String,
    },
    /// The call was not sent: a call to the same Redis node found it down
    /// moments ago (no connection, no answer in time), and its circuit
    /// breaker holds calls back until a probe, one call per second, finds
    /// it up (or the client reconnects). Nothing was changed; the call may
    /// be sent again after `retry_in`. A worker's own transitions (fetch,
    /// acknowledgement, renewal) are never held back.
    #[error(
        "the queue's Redis was found down moments ago; the call was not sent (the next try goes in {retry_in:?})"
    )]
    Unavailable {
        /// How long until the breaker lets the next call through as its
        /// probe (zero: a probe is out now).
        retry_in: std::time::Duration,
    },
    /// A [flow](crate::Queues::enqueue_flow) was refused before anything
    /// was written: a worker of the release before flows may be running
    /// (an announced process that is alive reads only wire version
    /// `reads`, or [`RedisQueues::write_wire`](crate::RedisQueues::write_wire)
    /// holds enqueues to it). Such a worker completes a flow's child without
    /// telling its parent, which would then wait for ever. Flows are taken
    /// again within a few seconds of the last such worker stopping (see
    /// [`crate::WIRE_VERSION`]); plain jobs are taken meanwhile.
    #[error(
        "a worker of an older release, which cannot run flows, may be running (it reads wire version {reads}); nothing was queued"
    )]
    OlderWorkers {
        /// The oldest wire version a live process reads.
        reads: u32,
    },
    /// Redis answered something this crate's scripts never return (another
    /// program wrote the queue's keys).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The memory store refused a call past one of the caps the Redis
    /// scripts hold every call to (they answer [`Error::Redis`] with the
    /// same words); nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
}

/// How every refusal of the queue's scripts begins (`refuse` in
/// `prelude/base.lua`).
const REFUSED: &str = "ERR seawall: ";

impl Error {
    /// Whether the enqueue that failed with this error certainly queued
    /// nothing: it was refused before or by its script, never sent (no
    /// pooled connection in time), or [taken back](Error::NotReplicated).
    /// `false` when the jobs may be queued ([`Error::Redis`] for a lost
    /// connection or a timeout, [`Error::EnqueueOutcomeUnknown`], an
    /// unexpected reply): a caller holding something for the job (a
    /// reserved unit of stock) must then keep holding it, since the job may
    /// still run.
    ///
    /// ```
    /// use seawall_queue::Error;
    ///
    /// assert!(Error::NotReplicated { acked: 0, wanted: 1 }.queued_nothing());
    /// assert!(!Error::EnqueueOutcomeUnknown { acked: 0, wanted: 1 }.queued_nothing());
    /// let reset = fred::error::Error::new(fred::error::ErrorKind::IO, "connection reset");
    /// assert!(!Error::Redis(reset).queued_nothing());
    /// ```
    pub fn queued_nothing(&self) -> bool {
        match self {
            Self::InvalidBackoff(_)
            | Self::InvalidOption(_)
            | Self::InvalidName(_)
            | Self::InvalidSetting(_)
            | Self::InvalidSchedule(_)
            | Self::Encode(_)
            | Self::PoolTimeout(_)
            | Self::Unsupported(_)
            | Self::NotReplicated { .. }
            | Self::Unavailable { .. }
            | Self::IdempotencyMismatch { .. }
            | Self::OlderWorkers { .. }
            | Self::Refused(_) => true,
            Self::Redis(_) => self.is_refusal(),
            Self::EnqueueOutcomeUnknown { .. } | Self::Protocol(_) => false,
        }
    }

    /// Whether one of the queue's scripts (or the memory store's caps)
    /// refused the call for its arguments: the call changed nothing, and
    /// sent again unchanged it is refused again, so it is not worth a
    /// retry. A connection error, a timeout or a server that is busy,
    /// loading or read-only is not a refusal.
    ///
    /// ```
    /// use seawall_queue::Error;
    ///
    /// let refused = fred::error::Error::new(
    ///     fred::error::ErrorKind::Unknown,
    ///     "ERR seawall: the queue holds 100000 schedulers, the most it may",
    /// );
    /// assert!(Error::Redis(refused).is_refusal());
    /// let reset = fred::error::Error::new(fred::error::ErrorKind::IO, "connection reset");
    /// assert!(!Error::Redis(reset).is_refusal());
    /// ```
    pub fn is_refusal(&self) -> bool {
        // fred reads every error reply it has no kind of its own for (`ERR
        // …`, as a script's refusal) as `Unknown`, the reply its details.
        match self {
            Self::Redis(error) => {
                *error.kind() == ErrorKind::Unknown && error.details().contains(REFUSED)
            }
            Self::Refused(_) => true,
            _ => false,
        }
    }
}

impl From<fred::error::Error> for Error {
    fn from(error: fred::error::Error) -> Self {
        Self::Redis(error)
    }
}

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
