//! The handle producers and operators use: enqueue, inspect, control.

use std::sync::Arc;
use std::time::Duration;

use fred::types::Builder;
use serde::Serialize;
use tracing::Instrument as _;

use crate::error::{Error, Result};
use crate::job::{Backlog, Cancelled, Counts, Event, Finished, JobId, JobInfo, JobState, Limits};
use crate::memory::MemoryStore;
use crate::options::{Dedup, JobOptions};
use crate::presence::{self, ProcessReport, SeenProcess};
use crate::redis::{RedisOptions, RedisStore, check_prefix};
use crate::store::{
    DeadJobs, FORGET_AFTER, KeyHold, MAX_BACKLOG_GROUPS, NewJob, Settings, Store, check_name,
    millis, random_id,
};
use crate::trace;
use crate::wire::{OLDEST_WIRE_VERSION, SILENT_READER_GRACE, WIRE_VERSION, WireView};
use crate::worker::WorkerBuilder;

pub use crate::caps::MAX_PAYLOAD_BYTES;

/// The most records one [`Queues::jobs`] call returns.
pub const MAX_LISTED: usize = 1_000;
/// How many jobs one bulk round trip carries; larger bulks take several.
const BULK_CHUNK: usize = 1_000;
/// How many payload bytes one bulk round trip carries (at least one job
/// goes in each).
const BULK_BYTES: usize = 16 << 20;

/// Named queues on one backend: enqueue jobs, look at them, pause, resume,
/// cancel, retry and clean, and start [workers](Queues::worker). Cheap to
/// clone; clones share connections.
///
/// ```
/// use seawall_queue::{JobOptions, Queues};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> seawall_queue::Result<()> {
/// let queues = Queues::memory();
/// let id = queues.enqueue("email", &"welcome", &JobOptions::new()).await?;
/// assert_eq!(queues.counts("email").await?.waiting, 1);
/// let job = queues.job("email", &id).await?.expect("kept");
/// assert_eq!(job.payload_as::<String>()?, "welcome");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Queues {
    store: Arc<dyn Store>,
    /// The wire version enqueues write (see [`crate::WIRE_VERSION`]).
    wire: Arc<WireView>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").finish_non_exhaustive()
    }
}

impl Queues {
    /// Queues on `store`: the crate's own tests of a backend's insides.
    #[cfg(test)]
    pub(crate) fn on(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            wire: Arc::new(WireView::fixed(WIRE_VERSION)),
        }
    }

    /// Queues in this process's memory, with the default [`Settings`].
    /// **Not durable**: jobs are lost when the process exits. For tests of
    /// code that uses the queue, and for running without Redis.
    pub fn memory() -> Self {
        Self::memory_with(Settings::default())
    }

    /// [`memory`](Queues::memory) with settings of your own.
    pub fn memory_with(settings: Settings) -> Self {
        Self {
            store: Arc::new(MemoryStore::new(settings)),
            wire: Arc::new(WireView::fixed(WIRE_VERSION)),
        }
    }

    /// Queues on Redis (standalone or Cluster), connected through `builder`
    /// (fred's client builder: its config, reconnect policy, timeouts). The
    /// queue's commands time out after at most 10 s (the builder's own
    /// timeout when shorter; fred's default is none), so a command the
    /// client re-sends after a reconnection is re-sent within the 30 s for
    /// which the queue keeps its answer.
    ///
    /// Give the builder a reconnect policy whose longest wait is short
    /// beside the workers' lease (see [`WorkerBuilder::lease`](crate::WorkerBuilder::lease)
    /// for what an outage costs), and fred's check for unresponsive
    /// connections (`UnresponsiveConfig`, a second or so): a connection
    /// whose packets are being dropped otherwise waits out TCP's
    /// retransmissions, and a Cluster client hears of a promoted replica
    /// only once it reconnects. Every call is safe to re-send on the new
    /// connection; an enqueue that waits for replicas is sent once.
    pub fn redis(builder: Builder) -> RedisQueues {
        RedisQueues {
            builder,
            prefix: "seawall".to_owned(),
            settings: Settings::default(),
            blocking_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            replicas: None,
            write_wire: WIRE_VERSION,
            silent_reader_grace: SILENT_READER_GRACE,
            one_slot: false,
        }
    }

    /// Enqueues one job; its payload is stored as JSON. Returns its id, or,
    /// when the options carry an idempotency key already used within its
    /// window, the id of the job that used it (and adds nothing), even if
    /// that job has completed and its record is gone. A key whose job had
    /// another payload or other options fails with
    /// [`Error::IdempotencyMismatch`] and adds nothing.
    ///
    /// A call that the Redis client re-sends after a reconnection adds the
    /// job once. An `Err` of [`Error::Redis`] may still mean the job was
    /// added (Redis ran the call, its answer was lost): retry with an
    /// [idempotency key](JobOptions::idempotency_key) to be sure of one job.
    pub async fn enqueue<T: Serialize + ?Sized>(
        &self,
        queue: &str,
        payload: &T,
        options: &JobOptions,
    ) -> Result<JobId> {
        check_name("queue name", queue)?;
        let span = trace::send_span(queue);
        let job = span.in_scope(|| new_job(payload, options, trace::capture(false)))?;
        let wire = self.wire.version(self.store()).await;
        let mut ids = self
            .store
            .enqueue(queue, &random_id(), vec![job], wire)
            .instrument(span.clone())
            .await?;
        let id = ids
            .pop()
            .map(|(id, _)| id)
            .ok_or_else(|| Error::Protocol("enqueue answered no id".to_owned()))?;
        span.record("messaging.message.id", id.as_str());
        Ok(id)
    }

    /// Enqueues many jobs in one round trip per thousand (or per 16 MiB of
    /// payloads); each payload and its options are checked before anything
    /// is sent, so one bad job enqueues none. Ids come back in order. A
    /// bulk that fails part-way has added the round trips before the
    /// failure, each whole.
    pub async fn enqueue_many<T: Serialize>(
        &self,
        queue: &str,
        jobs: impl IntoIterator<Item = (T, JobOptions)>,
    ) -> Result<Vec<JobId>> {
        check_name("queue name", queue)?;
        let span = trace::send_span(queue);
        let context = span.in_scope(|| trace::capture(true));
        let jobs = jobs
            .into_iter()
            .map(|(payload, options)| new_job(&payload, &options, context.clone()))
            .collect::<Result<Vec<_>>>()?;
        span.record(
            "messaging.batch.message_count",
            i64::try_from(jobs.len()).unwrap_or(i64::MAX),
        );
        let mut ids = Vec::with_capacity(jobs.len());
        for chunk in bulk_chunks(jobs) {
            let wire = self.wire.version(self.store()).await;
            let added = self
                .store
                .enqueue(queue, &random_id(), chunk, wire)
                .instrument(span.clone())
                .await?;
            ids.extend(added.into_iter().map(|(id, _)| id));
        }
        Ok(ids)
    }

    /// The job's record, or `None` if there is none (never enqueued,
    /// cancelled, or removed by retention).
    pub async fn job(&self, queue: &str, id: &JobId) -> Result<Option<JobInfo>> {
        check_name("queue name", queue)?;
        if !is_job_id(id) {
            return Ok(None);
        }
        self.store.job(queue, id).await
    }

    /// The result of job `id` of `queue`, decoded as `T`: what its handler
    /// returned (see [`WorkerBuilder::start`]), once the job completed and
    /// for as long as the queue keeps it. `None` when there is none: the
    /// job is not completed, is no longer kept, or returned nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_queue::{Job, JobError, JobOptions, Queues};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// let id = queues.enqueue("sums", &[1, 2, 3], &JobOptions::new()).await?;
    /// let worker = queues
    ///     .worker("sums")?
    ///     .start(|job: Job<Vec<u64>>| async move { Ok::<_, JobError>(job.payload.iter().sum::<u64>()) });
    /// while queues.counts("sums").await?.completed < 1 {
    ///     tokio::time::sleep(Duration::from_millis(5)).await;
    /// }
    /// assert_eq!(queues.result::<u64>("sums", &id).await?, Some(6));
    /// worker.shutdown(Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn result<T: serde::de::DeserializeOwned>(
        &self,
        queue: &str,
        id: &JobId,
    ) -> Result<Option<T>> {
        match self.job(queue, id).await? {
            Some(job) if job.state == JobState::Completed => job.result_as(),
            _ => Ok(None),
        }
    }

    /// Up to `limit` (at most [`MAX_LISTED`]) records of jobs in `state`:
    /// active jobs by lease deadline, delayed ones by due time, completed
    /// and dead ones newest first. A job that moves on between the listing
    /// and the read of its record is left out.
    ///
    /// Waiting jobs are not listed (they wait in one line per group and
    /// priority); [`counts`](Self::counts) tells how many there are, and
    /// asking for them is [`Error::InvalidOption`].
    pub async fn jobs(&self, queue: &str, state: JobState, limit: usize) -> Result<Vec<JobInfo>> {
        check_name("queue name", queue)?;
        if state == JobState::Waiting {
            return Err(Error::InvalidOption(
                "waiting jobs are not listed; counts() tells how many there are".to_owned(),
            ));
        }
        let ids = self.store.list(queue, state, limit.min(MAX_LISTED)).await?;
        let records =
            futures_util::future::try_join_all(ids.iter().map(|id| self.store.job(queue, id)))
                .await?;
        Ok(records
            .into_iter()
            .flatten()
            .filter(|job| job.state == state)
            .collect())
    }

    /// Succeeds when an enqueue on `queue` would be acknowledged now, without
    /// adding a job: on Redis, the server that holds the queue (its slot's
    /// primary on a Cluster) is reachable, is a primary and takes a write,
    /// and, with [replicated enqueues](RedisQueues::replicated_enqueues),
    /// as many replicas confirm that write within the wait as an enqueue
    /// needs ([`Error::NotReplicated`] otherwise). A readiness check built
    /// on it fails exactly while enqueues would: cut off from the primary,
    /// before a failover has promoted a replica, or without the replicas
    /// the enqueue waits for. It costs a round trip (two when waiting for
    /// replicas) and writes one small key per queue, kept for a minute.
    /// In memory it always succeeds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = seawall_queue::Queues::memory();
    /// queues.check_enqueue("email").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn check_enqueue(&self, queue: &str) -> Result<()> {
        check_name("queue name", queue)?;
        self.store.check_enqueue(queue).await
    }

    /// How many jobs are in each state. Due delayed jobs and expired leases
    /// are moved first, so the answer is current.
    pub async fn counts(&self, queue: &str) -> Result<Counts> {
        check_name("queue name", queue)?;
        self.store.counts(queue).await
    }

    /// The [counts](Self::counts) and how long the oldest waiting job has
    /// waited, in one round trip: what
    /// [`QueueMetrics::record_backlog`](crate::QueueMetrics::record_backlog)
    /// exports. See [`Backlog::oldest_waiting`] for what
    /// the age means exactly; reading it costs a few commands on the
    /// server per group with jobs waiting, for at most
    /// [`MAX_BACKLOG_GROUPS`] groups.
    ///
    /// ```
    /// use seawall_queue::{JobOptions, Queues};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// assert_eq!(queues.backlog("email").await?.oldest_waiting, None);
    /// queues.enqueue("email", &"welcome", &JobOptions::new()).await?;
    /// let backlog = queues.backlog("email").await?;
    /// assert_eq!(backlog.counts.waiting, 1);
    /// assert!(backlog.oldest_waiting.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn backlog(&self, queue: &str) -> Result<Backlog> {
        check_name("queue name", queue)?;
        self.store.backlog(queue, MAX_BACKLOG_GROUPS).await
    }

    /// Stops workers from starting jobs of the queue (running ones finish).
    /// Producers may still enqueue.
    pub async fn pause(&self, queue: &str) -> Result<()> {
        check_name("queue name", queue)?;
        self.store.set_paused(queue, true).await
    }

    /// Lets workers start jobs again, and wakes them.
    pub async fn resume(&self, queue: &str) -> Result<()> {
        check_name("queue name", queue)?;
        self.store.set_paused(queue, false).await
    }

    /// Cancels a job: a waiting or delayed one is removed (and its
    /// idempotency key freed); a running one's handler is asked to stop
    /// (see [`Cancelled::Requested`]).
    pub async fn cancel(&self, queue: &str, id: &JobId) -> Result<Cancelled> {
        check_name("queue name", queue)?;
        if !is_job_id(id) {
            return Ok(Cancelled::NotFound);
        }
        self.store.cancel(queue, id).await
    }

    /// Moves a dead job back to waiting with its attempts reset; `false`
    /// when the job is not dead (or there is no such job).
    pub async fn retry_dead(&self, queue: &str, id: &JobId) -> Result<bool> {
        check_name("queue name", queue)?;
        if !is_job_id(id) {
            return Ok(false);
        }
        Ok(self.store.retry_dead(queue, DeadJobs::One(id)).await? == 1)
    }

    /// Moves every dead job back to waiting, a thousand per round trip;
    /// returns how many.
    pub async fn retry_all_dead(&self, queue: &str) -> Result<u64> {
        check_name("queue name", queue)?;
        let mut moved = 0;
        loop {
            let batch = self
                .store
                .retry_dead(queue, DeadJobs::Oldest(BULK_CHUNK as u64))
                .await?;
            moved += batch;
            if batch < BULK_CHUNK as u64 {
                return Ok(moved);
            }
        }
    }

    /// Removes completed or dead jobs that finished at least `older_than`
    /// ago, always keeping the newest `keep`; returns how many went.
    pub async fn clean(
        &self,
        queue: &str,
        state: Finished,
        older_than: Duration,
        keep: u64,
    ) -> Result<u64> {
        check_name("queue name", queue)?;
        let mut removed = 0;
        loop {
            let batch = self
                .store
                .clean(queue, state, older_than, keep, BULK_CHUNK as u64)
                .await?;
            removed += batch;
            if batch < BULK_CHUNK as u64 {
                return Ok(removed);
            }
        }
    }

    /// At most `max` of `queue`'s jobs start in any window of `per`,
    /// across every worker of every process: each fetch counts the starts
    /// of the last `per` on the server's clock and takes no more than the
    /// room left, in the same call (no extra round trip), and a worker
    /// whose fetch the limit cut short waits until the oldest start leaves
    /// the window. Clocks of the processes play no part; a failover to a
    /// server whose clock differs moves the window by the difference.
    /// `max` from 1 to 1,000,000, `per` from 1 ms to [`MAX_DELAY`]; the
    /// limit replaces any before it.
    ///
    /// [`MAX_DELAY`]: crate::MAX_DELAY
    pub async fn set_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()> {
        check_name("queue name", queue)?;
        check_rate_limit(max, per)?;
        self.store.set_rate_limit(queue, max, per).await
    }

    /// The limits set on `queue` and what they hold back now: its rate
    /// limit and the starts within the window ending now, the group rate
    /// limit, the group concurrency cap, and how much longer a handler's
    /// hold keeps it from starting jobs. One round trip.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_queue::{Queues, RateLimit};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// assert_eq!(queues.limits("sms").await?.rate, None);
    /// queues.set_rate_limit("sms", 10, Duration::from_secs(1)).await?;
    /// let limits = queues.limits("sms").await?;
    /// assert_eq!(limits.rate, Some(RateLimit { max: 10, per: Duration::from_secs(1) }));
    /// assert_eq!(limits.started_in_window, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn limits(&self, queue: &str) -> Result<Limits> {
        check_name("queue name", queue)?;
        self.store.limits(queue).await
    }

    /// At most `max` jobs of each named group of `queue` start in any
    /// window of `per`, across every worker (as
    /// [`set_rate_limit`](Self::set_rate_limit) for the queue, per group):
    /// a group at its limit sits out of the fetch rotation until its oldest
    /// start leaves the window, and the other groups go on. Jobs without a
    /// group are not limited by it. Both limits may be set.
    pub async fn set_group_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()> {
        check_name("queue name", queue)?;
        check_rate_limit(max, per)?;
        self.store.set_group_rate_limit(queue, max, per).await
    }

    /// Removes `queue`'s group rate limit.
    pub async fn clear_group_rate_limit(&self, queue: &str) -> Result<()> {
        check_name("queue name", queue)?;
        self.store
            .set_group_rate_limit(queue, 0, Duration::from_millis(1))
            .await
    }

    /// Removes `queue`'s rate limit.
    pub async fn clear_rate_limit(&self, queue: &str) -> Result<()> {
        check_name("queue name", queue)?;
        self.store
            .set_rate_limit(queue, 0, Duration::from_millis(1))
            .await
    }

    /// Caps how many jobs of one group run at once across all workers
    /// (`None`: no cap). Jobs without a group are never capped.
    pub async fn set_group_limit(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        check_name("queue name", queue)?;
        if limit == Some(0) {
            return Err(Error::InvalidSetting(
                "a group limit must be at least 1 (None removes it)".to_owned(),
            ));
        }
        self.store.set_group_limit(queue, limit.unwrap_or(0)).await
    }

    /// Events after position `after` (from the oldest kept when `None`),
    /// oldest first, from up to `count` stream entries. Jobs that one call
    /// moved together (enqueued in one bulk, taken or completed in one
    /// fetch) share one entry, so their events share its position.
    pub async fn events(
        &self,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Event>> {
        check_name("queue name", queue)?;
        self.store.events(queue, after, count).await
    }

    /// Why jobs may be lost on this backend, if they may: Redis with a
    /// `maxmemory-policy` other than `noeviction` evicts queue keys under
    /// memory pressure, and the memory backend forgets on exit.
    pub async fn durability_warning(&self) -> Result<Option<String>> {
        self.store.durability_warning().await
    }

    /// Calls made to Redis so far by this handle and its workers (every
    /// script, blocking pop and read counts one).
    pub fn round_trips(&self) -> u64 {
        self.store.round_trips()
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The wire version an enqueue writes now (see [`crate::WIRE_VERSION`]).
    pub(crate) async fn wire_version(&self) -> u32 {
        self.wire.version(self.store()).await
    }

    /// A worker for `queue`; set it up, then [start](WorkerBuilder::start)
    /// it with a handler.
    pub fn worker(&self, queue: &str) -> Result<WorkerBuilder> {
        check_name("queue name", queue)?;
        Ok(WorkerBuilder::new(
            Arc::clone(&self.store),
            queue.to_owned(),
        ))
    }
}

/// Whether `id` can name a job at all (see [`JobId::parse`]). Anything
/// else names none, so it never reaches a script.
/// A rate limit of 1 to 1,000,000 starts in 1 ms to [`MAX_DELAY`](crate::MAX_DELAY).
fn check_rate_limit(max: u32, per: Duration) -> Result<()> {
    if !(1..=1_000_000).contains(&max) {
        return Err(Error::InvalidSetting(format!(
            "a rate limit starts 1 to 1000000 jobs per window, got {max}"
        )));
    }
    if per < Duration::from_millis(1) || per > crate::backoff::MAX_DELAY {
        return Err(Error::InvalidSetting(format!(
            "a rate limit's window is 1ms to {:?}, got {per:?}",
            crate::backoff::MAX_DELAY
        )));
    }
    Ok(())
}

pub(crate) fn is_job_id(id: &JobId) -> bool {
    JobId::parse(id.as_str()).is_some()
}

/// Jobs in round trips of at most [`BULK_CHUNK`] jobs and [`BULK_BYTES`]
/// of payload, at least one job each.
fn bulk_chunks(jobs: Vec<NewJob>) -> Vec<Vec<NewJob>> {
    let mut chunks: Vec<Vec<NewJob>> = Vec::new();
    let mut bytes = 0;
    for job in jobs {
        let fits = chunks.last().is_some_and(|chunk| {
            chunk.len() < BULK_CHUNK && bytes + job.payload.len() <= BULK_BYTES
        });
        if !fits {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += job.payload.len();
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(job);
        }
    }
    chunks
}

pub(crate) fn new_job<T: Serialize + ?Sized>(
    payload: &T,
    options: &JobOptions,
    trace: String,
) -> Result<NewJob> {
    let payload = serde_json::to_vec(payload).map_err(Error::Encode)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::InvalidOption(format!(
            "the payload is {} bytes; at most {MAX_PAYLOAD_BYTES} are allowed",
            payload.len()
        )));
    }
    Ok(NewJob {
        payload,
        priority: options.priority_level(),
        max_attempts: options.max_attempts(),
        backoff: options.retry_backoff().encode().unwrap_or_default(),
        timeout_ms: options.attempt_timeout().map_or(0, millis),
        group: options.group_key().unwrap_or_default().to_owned(),
        delay_ms: millis(options.initial_delay()),
        idempotency: options.deduplication().map(|(key, dedup)| {
            let hold = match dedup {
                Dedup::Window(window) => KeyHold::Window(millis(window).max(1)),
                Dedup::UntilStarted => KeyHold::UntilStarted,
                Dedup::UntilCompleted => KeyHold::UntilCompleted,
                Dedup::Debounce => KeyHold::Debounce,
            };
            (key.to_owned(), hold)
        }),
        trace,
        context: options.context_text().unwrap_or_default().to_owned(),
    })
}

/// Sets up [`Queues`] on Redis; [`connect`](RedisQueues::connect) finishes.
#[derive(Debug)]
#[must_use]
pub struct RedisQueues {
    builder: Builder,
    prefix: String,
    settings: Settings,
    blocking_connections: u32,
    acquire_timeout: Duration,
    replicas: Option<(u32, Duration)>,
    write_wire: u32,
    silent_reader_grace: Duration,
    one_slot: bool,
}

impl RedisQueues {
    /// Answers an enqueue only once `replicas` replicas of the queue's
    /// primary have the job (`WAIT`), waiting up to `timeout`. Fewer in
    /// time, the call's jobs are taken back while no worker has taken one,
    /// and the call fails with [`Error::NotReplicated`] (nothing queued);
    /// when they cannot be, with [`Error::EnqueueOutcomeUnknown`] (they may
    /// run: retry with the same idempotency key). Redis replicates
    /// asynchronously, so without this an acknowledged enqueue can vanish
    /// with a primary that dies before its replica has it. Off by default;
    /// it costs one more round trip per enqueue call (two when `WAIT`
    /// falls short).
    pub fn replicated_enqueues(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Keeps every queue's keys in one Cluster slot, the prefix's
    /// (`{prefix}:queue:…` rather than `prefix:{queue}:…`), as a
    /// [flow](Queues::enqueue_flow) whose jobs span queues needs on a
    /// Cluster: its jobs are added, and each child tells its parent, in
    /// one script, which may touch one slot only. The queues then share
    /// one primary rather than spreading over the Cluster (BullMQ asks the
    /// same of its flows, through a hash tag in its prefix). Without a
    /// Cluster it changes only the keys' names. Every process of a fleet
    /// must agree on it: the two layouts are different queues.
    pub fn one_slot(mut self) -> Self {
        self.one_slot = true;
        self
    }

    /// The first part of every key (default `seawall`): queue `q`'s keys
    /// are `<prefix>:{q}:…`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Retention, stalls and events; see [`Settings`].
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The most dedicated connections for blocking fetches (default 16):
    /// one per idle worker of this process.
    pub fn blocking_connections(mut self, connections: u32) -> Self {
        self.blocking_connections = connections;
        self
    }

    /// How long a worker waits for a blocking connection (default 5 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The newest [wire version](crate::WIRE_VERSION) enqueues write
    /// (default [`WIRE_VERSION`](crate::WIRE_VERSION); at least
    /// [`OLDEST_WIRE_VERSION`](crate::OLDEST_WIRE_VERSION)).
    ///
    /// Enqueues write the newest form that every live process on the
    /// [announced list](Queues::processes) reads, read again every 2 s
    /// at most: workers of the release before this one, while any is
    /// alive, keep getting job ids of digits alone. Processes that do not
    /// announce themselves are not on that list: while one of the release
    /// before runs workers or takes job ids, set `write_wire(1)` on every
    /// process of this release, and drop it once none is left.
    pub fn write_wire(mut self, version: u32) -> Self {
        self.write_wire = version;
        self
    }

    /// How long past its report's ttl a worker of an older release that
    /// stopped announcing itself without withdrawing still holds enqueues
    /// to its form (default [`SILENT_READER_GRACE`](crate::SILENT_READER_GRACE),
    /// at most 10 minutes, after which a silent process is forgotten). Silent
    /// is not gone: a worker that was frozen or cut off from Redis comes back
    /// and fetches what was enqueued meanwhile, and a job id of a form it
    /// refuses fails its whole renewal call, so every job it holds stalls.
    /// One that withdrew (a clean stop) holds nothing back.
    pub fn silent_reader_grace(mut self, grace: Duration) -> Self {
        self.silent_reader_grace = grace;
        self
    }

    /// Checks the settings and connects the shared client (blocking
    /// connections open on first use).
    pub async fn connect(self) -> Result<Queues> {
        check_prefix(&self.prefix)?;
        self.settings.check()?;
        if self.blocking_connections == 0 {
            return Err(Error::InvalidSetting(
                "at least one blocking connection is needed".to_owned(),
            ));
        }
        if !(OLDEST_WIRE_VERSION..=WIRE_VERSION).contains(&self.write_wire) {
            return Err(Error::InvalidSetting(format!(
                "wire version {} is not written by this release; {OLDEST_WIRE_VERSION} to {WIRE_VERSION} are",
                self.write_wire
            )));
        }
        if self.silent_reader_grace > FORGET_AFTER {
            return Err(Error::InvalidSetting(format!(
                "the silent reader grace is {:?}; at most {FORGET_AFTER:?} (a silent process is forgotten then)",
                self.silent_reader_grace
            )));
        }
        if let Some((_, timeout)) = self.replicas
            && (timeout.is_zero() || timeout > Duration::from_secs(60))
        {
            return Err(Error::InvalidSetting(format!(
                "the replication timeout is {timeout:?}; 1 ms to 60 s is allowed"
            )));
        }
        let options = RedisOptions {
            prefix: self.prefix,
            blocking_connections: self.blocking_connections,
            acquire_timeout: self.acquire_timeout,
            replicas: self.replicas,
            one_slot: self.one_slot,
        };
        let store = RedisStore::connect(self.builder, options, self.settings).await?;
        Ok(Queues {
            store: Arc::new(store),
            wire: Arc::new(WireView::following(
                self.write_wire,
                self.silent_reader_grace,
            )),
        })
    }
}

/// Presence: the processes of a fleet, as they announce themselves.
impl Queues {
    /// Records `report` as the latest word of its process. Processes that
    /// have not announced for ten minutes are forgotten on the way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_queue::{ProcessReport, Queues, WIRE_VERSION};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// let report = ProcessReport {
    ///     id: "host-a:4242:1".into(),
    ///     host: "host-a".into(),
    ///     pid: 4242,
    ///     started_ms: 1,
    ///     ttl_ms: 5_000,
    ///     completed_per_second: 0.0,
    ///     queues: Vec::new(),
    ///     wire_version: WIRE_VERSION,
    /// };
    /// queues.announce(&report).await?;
    /// let seen = queues.processes().await?;
    /// assert!(seen[0].alive && seen[0].report == report);
    /// queues.withdraw(&report.id).await?;
    /// assert!(queues.processes().await?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn announce(&self, report: &ProcessReport) -> Result<()> {
        presence::check_id(&report.id)?;
        let bytes = serde_json::to_vec(report)
            .map_err(|error| Error::Protocol(format!("encoding a process report: {error}")))?;
        self.store().announce(&report.id, &bytes).await
    }

    /// Takes a process off the list (at a clean shutdown).
    pub async fn withdraw(&self, id: &str) -> Result<()> {
        presence::check_id(id)?;
        self.store().withdraw(id).await
    }

    /// Every process that announced itself in the last ten minutes, alive
    /// ones first, each by id.
    pub async fn processes(&self) -> Result<Vec<SeenProcess>> {
        presence::seen(self.store()).await
    }
}
