//! A durable job queue for Rust services, on Redis (standalone, Sentinel or
//! Cluster) or, for tests, in memory.
//!
//! - **Nothing lost.** Every transition (enqueue, fetch, complete, fail,
//!   retry, promote, recover) is one Lua script, so no crash between two
//!   commands can drop or duplicate a job. A running job is held under a
//!   lease its worker renews; when a worker dies, its jobs return to the
//!   queue as the lease runs out, recovered by whichever worker looks next.
//! - **No double completion.** Each run of a job carries a lease token; a
//!   worker that lost its lease cannot complete, fail or retry the job
//!   another worker now runs, and its late result is discarded and counted.
//! - **One round trip for many jobs.** A worker acknowledges its finished
//!   jobs and takes the next ones in one script call, so a deep queue
//!   costs less than one round trip per job; an idle worker blocks on a
//!   dedicated connection instead of polling.
//! - **Acknowledged means replicated, if asked.** With
//!   [`RedisQueues::replicated_enqueues`] an enqueue is answered only once
//!   a replica has the job, so it survives the failover of its primary; a
//!   refused one is taken back before any worker takes it, or says that
//!   its outcome is unknown.
//! - Delays, retries with [backoff](Backoff), a dead-letter set with each
//!   job's errors, priorities, groups fetched round-robin with an optional
//!   per-group cap, pause and resume, cancellation, progress,
//!   [deduplication keys](Dedup) (a window, until the job starts or
//!   completes, or a debounce), an event stream, bounded retention, the age of the
//!   [oldest waiting job](Queues::backlog), worker processes that
//!   [announce](Queues::announce) themselves so any process lists a fleet's
//!   workers, and [metrics](QueueMetrics) through seawall-perfmon.
//! - A [rate limit](Queues::set_rate_limit) per queue, and
//!   [per group](Queues::set_group_rate_limit), across every worker,
//!   enforced in the fetch itself, and handlers that
//!   [hold](JobError::rate_limited) their queue or
//!   [group](JobError::group_rate_limited) while a downstream limits them.
//! - A worker's concurrency can [follow a limit](WorkerBuilder::concurrency_limit)
//!   that moves with how its runs go (an adaptive limit with the
//!   `adaptive` feature), so a slow downstream gets fewer jobs at once.
//! - A handler's return value is the job's [result](Queues::result), kept
//!   with the completed job as long as the queue keeps it.
//! - [Flows](Flow): a tree of jobs over any queues, added all or nothing,
//!   in which a parent runs after its children and reads their results.
//! - [Recurring jobs](#recurring-jobs): schedulers kept with the queue,
//!   every interval or on a cron expression in a time zone, each tick
//!   enqueued exactly once however many processes run them.
//!
//! ```
//! use std::time::Duration;
//! use seawall_queue::{JobError, JobOptions, Queues};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome {
//!     user: u64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> seawall_queue::Result<()> {
//! // Queues::redis(builder).connect().await? for the durable backend.
//! let queues = Queues::memory();
//! let options = JobOptions::new().attempts(5)?;
//! queues.enqueue("email", &Welcome { user: 7 }, &options).await?;
//!
//! let worker = queues
//!     .worker("email")?
//!     .concurrency(4)?
//!     .start(|job: seawall_queue::Job<Welcome>| async move {
//!         if job.payload.user == 0 {
//!             return Err(JobError::permanent("no such user"));
//!         }
//!         job.progress(100, "sent").await;
//!         Ok(())
//!     });
//!
//! while queues.counts("email").await?.completed < 1 {
//!     tokio::time::sleep(Duration::from_millis(5)).await;
//! }
//! let stats = worker.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(stats.completed, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery
//!
//! At least once: a handler may run again after a crash or a lost lease
//! (see [`Settings::max_stalls`]), so handlers should be idempotent. A job
//! whose run succeeded is completed exactly once.
//!
//! Also when Redis misbehaves: every call the client re-sends after a
//! reconnection, or that ran although its answer timed out, answers its
//! first result instead of acting twice; job ids and lease tokens never
//! repeat, even after Redis lost its last writes (a failover, an fsync
//! window); and every script checks all its arguments before its first
//! write, so a refused call changes nothing. A worker never sends a call
//! the queue refused again unchanged: should it hold a job whose
//! acknowledgement the queue refuses (an id of a form its release does not
//! read), it sends the call's other acknowledgements apart and drops that
//! one, with an error logged and [counted](WorkerStats::refused_acks), and
//! the job runs again when its lease runs out.
//!
//! When a Redis node is down, producers learn it at once: the Redis
//! backend keeps a circuit breaker per node (seawall-ratelimit's), opened
//! the moment the client's connection to the node ends or a call finds no
//! connection or no answer in time. While it is open, an enqueue, a flow,
//! a cancel, a listing or a count for that node fails with
//! [`Error::Unavailable`] without being sent (nothing was changed), one
//! call a second goes through as a probe, and the client's reconnection
//! closes it. A worker's own calls (its fetches, acknowledgements,
//! renewals, progress and presence) are never held back: they reach Redis
//! the moment it is back, while their leases hold.
//!
//! # Recurring jobs
//!
//! [`Queues::upsert_scheduler`] keeps a scheduler with its queue: a
//! [`Schedule`] ([every](Schedule::every) interval, or a
//! [cron](Schedule::cron) expression in a time zone) and the payload and
//! options of the job each tick makes. Any process may run a queue's
//! schedulers ([`Queues::run_schedulers`]), and any number may at once:
//! a tick is enqueued by one atomic step that finds the scheduler still
//! planned for that tick and plans the next, so racing processes, a call
//! re-sent after a reconnection, or a change made meanwhile never make a
//! tick's job twice. The job's record names its tick ([`JobInfo::tick`]).
//! Each tick's job is enqueued up to a second ahead, delayed until the tick
//! (one tick to come per scheduler; [`Queues::tick_schedulers_within`]
//! takes another lead), many schedulers' ticks to one script call, so the
//! job is in the queue when its tick comes however many schedulers tick on
//! the same second; a change to the scheduler (a new schedule or template,
//! a pause, its removal) cancels the job it enqueued ahead.
//! What ticks missed while no process ran the schedulers make is the
//! schedule's [`Missed`] policy: one run for the latest (the default),
//! none, or one for each. A new, changed or resumed scheduler starts from
//! its first tick after the call (by the backend's clock), however late a
//! runner looks at it; the ticks between follow the same policy.
//!
//! A tick makes at most one job, also when the backend's clock steps back
//! (a failover to a replica whose clock is behind): the atomic step makes
//! no job for a tick at or before the latest that made one, and a change
//! cancels only a job still waiting for its tick. Revisions never repeat in
//! a queue, so a look planned for a scheduler that was then removed and
//! added again makes nothing.
//!
//! Where this differs from BullMQ's job schedulers on purpose: BullMQ adds
//! the next tick's job as a delayed job when the current one is processed,
//! so a scheduler advances only while a worker processes its queue, and a
//! job removed by hand stops its scheduler. Here the plan is kept with the
//! scheduler and ticks are enqueued by whichever process runs them,
//! independent of the queue's workers; a tick's job is an ordinary job,
//! removable and retried as any other.
//!
//! # Upgrading
//!
//! A release runs beside the one before it, so a fleet is upgraded one
//! process at a time. Each release reads its own [wire version](WIRE_VERSION)
//! (the form of the queue's data and script arguments) and the one before,
//! and writes the newer form only once no live process that reads only the
//! older one is [announced](Queues::announce) (see
//! [`ProcessReport::wire_version`]). An enqueue on Redis reads the process
//! list at most every 2 s, not once per call, and gives job ids of the
//! oldest form a live process reads: digits alone while a worker of the
//! release before ids carried an epoch is alive, or went silent without
//! withdrawing less than [`SILENT_READER_GRACE`] past its report's ttl
//! (frozen or cut off, it would come back to ids it refuses). Processes that do not
//! announce themselves are not on that list; while one of the release
//! before runs, hold enqueues to its form with [`RedisQueues::write_wire`].
//!
//! Flows need every worker of a flow's queues on this release or a later
//! one: a worker of an earlier release completes a flow's child without
//! telling its parent, which would then wait for ever. So while such a
//! worker may run (by the same process list, or `write_wire`), an
//! [`enqueue_flow`](Queues::enqueue_flow) is refused with
//! [`Error::OlderWorkers`] before anything is written; plain jobs are
//! taken meanwhile. Rate limits
//! and holds are kept by this release's fetches only: while a worker of an
//! earlier release runs, it starts jobs past them.
//!
//! Schedulers may run on processes of both releases at once: each tick is
//! still enqueued once (both check the scheduler's revision and planned
//! tick). A change made through an earlier release does not cancel the job
//! this release enqueued ahead for the coming tick, so that tick runs with
//! the scheduler as it was; the changes take effect from the tick after.
//!
//! A job's [context](JobOptions::context) is a field of its own that a
//! worker of an earlier release does not read: such a worker runs the job
//! as a job without one.
//!
//! # Job context
//!
//! What a producer knows about the request behind a job, and its handler
//! must honour, need not be part of the payload: [`JobOptions::context`]
//! gives a job up to [`MAX_CONTEXT_BYTES`] of text that every run reads with
//! [`Job::context`] and [`JobInfo::context`] shows. A payload stays the
//! job's own data, and its type can refuse unknown fields while the context
//! changes form; an enqueue of jobs without one sends nothing for it. The
//! seawall application carries the WAL position its reads must reach this
//! way, so that a job reads the writes of the request that enqueued it on a
//! database replica.
//!
//! # Tracing
//!
//! Every enqueue runs in a `queue.send` span and every run of a job in a
//! `queue.process` span, both at `info` and named and attributed after the
//! OpenTelemetry messaging conventions (`otel.name` `send <queue>` /
//! `process <queue>`, `otel.kind` producer / consumer,
//! `messaging.system` `seawall`, `messaging.destination.name`,
//! `messaging.message.id`, `messaging.batch.message_count` for a bulk
//! enqueue), with `seawall.job.run` (1 for the first run) and
//! `seawall.job.outcome` (`completed`, `failed`, `dead`, `requeued`,
//! `cancelled`; `otel.status_code` `ERROR` for the two failures). The
//! handler's future runs inside the run's span, so what it logs carries the
//! queue and the job id. With no subscriber listening, a span costs one
//! disabled-callsite check.
//!
//! With the `opentelemetry` feature and a [`tracing-opentelemetry`] layer
//! in the application's subscriber, an enqueue also stores the W3C
//! `traceparent` and `tracestate` of its `queue.send` span with each job
//! (about 60 bytes a job; nothing when no trace is being recorded), and a
//! run's span continues that trace: as a child of the enqueue for a job
//! enqueued with [`Queues::enqueue`], linked to it for one of
//! [`Queues::enqueue_many`], whose one producer span stands for many jobs.
//! A request that enqueues a job and the job's runs on another process are
//! then one trace, and the run's span also carries the trace's id as its
//! `trace_id` field, so every line the handler logs names its trace. The
//! layer's filter must let `seawall_queue` spans at `info` through.
//!
//! [`tracing-opentelemetry`]: https://docs.rs/tracing-opentelemetry
//!
//! # Features
//!
//! - `opentelemetry` (off by default): the trace context stored with each
//!   job and followed by its runs (see [Tracing](#tracing)); pulls in
//!   `opentelemetry` (its trace API only, no SDK) and
//!   `tracing-opentelemetry`.
//! - `adaptive` (off by default): seawall-ratelimit's `AdaptiveLimiter` as
//!   a worker's [`ConcurrencyLimit`], so the jobs a worker runs at once
//!   follow their latency; pulls in seawall-ratelimit.
//!
//! `fred` (re-exported as [`fred`]), `bb8` and seawall-perfmon are always
//! built.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.95.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod caps;
mod error;
mod flow;
mod health;
mod job;
mod memory;
mod metrics;
mod options;
mod pace;
mod presence;
mod queues;
mod redis;
mod schedule;
mod schedulers;
mod store;
#[cfg(test)]
mod testing;
mod trace;
mod wire;
mod worker;

pub use backoff::Backoff;
pub use backoff::MAX_DELAY;
pub use error::{Error, Result};
pub use flow::{Flow, FlowIds};
pub use health::DurabilityCheck;
pub use job::{
    AttemptError, Backlog, Cancelled, ChildFailure, ChildInfo, ChildOutcome, Counts, Event,
    Finished, JobId, JobInfo, JobState, Limits, Progress, RateLimit, Tick,
};
pub use metrics::{BACKLOG_RUNS_OUT_HORIZON, DEFAULT_BACKLOG_BOUND, QueueMetrics};
pub use options::{
    DEFAULT_PRIORITY, Dedup, JobOptions, LOWEST_PRIORITY, MAX_CONTEXT_BYTES, MAX_KEY_BYTES,
};
pub use pace::{ConcurrencyLimit, RunSample};
pub use presence::{ProcessReport, QueueActivity, SeenProcess};
pub use queues::{MAX_LISTED, MAX_PAYLOAD_BYTES, Queues, RedisQueues};
pub use schedule::{MAX_CATCH_UP, MIN_INTERVAL, Missed, ON_TIME, Schedule};
pub use schedulers::{SchedulerInfo, SchedulerRunner, SchedulerStats, TickReport};
pub use store::{
    MAX_BACKLOG_GROUPS, MAX_FLOW_JOBS, MAX_KEY_HOLD, MAX_QUEUE_NAME_BYTES, MAX_SCHEDULERS, Settings,
};
pub use wire::{OLDEST_WIRE_VERSION, SILENT_READER_GRACE, WIRE_VERSION};
pub use worker::{
    Job, JobError, MAX_RESULT_BYTES, Worker, WorkerBuilder, WorkerStats, WorkerWatch,
};

/// The Redis client crate, re-exported so the version matches.
pub use fred;

/// The README's quick start, compiled and run with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
