//! The processors of the nine queues, each doing its work against the
//! reference database or files, and how they are started on a set of
//! queues. `seawall-worker` runs them against Redis; on embedded defaults
//! the API runs them itself, on the memory backend. A process that runs
//! them also keeps the [`recurring`] jobs' schedulers.
//!
//! Every processor reports progress, and turns what goes wrong into a
//! [`JobError`](seawall_queue::JobError) with a message that says what and where: a database error,
//! a file that cannot be read or written, a malformed import. Those are
//! retried per the queue's policy; a job that cannot succeed however often
//! it runs (a learner that does not exist) goes to the dead set at once.

mod files;
pub mod payload;
pub mod presence;
mod processors;
pub mod recurring;
#[cfg(test)]
mod tests;
mod throughput;
mod work;

use std::time::Duration;

use seawall_perfmon::Monitor;
use seawall_queue::{QueueMetrics, Queues, Worker, WorkerBuilder, WorkerStats};
use seawall_ratelimit::{AdaptiveLimiter, Gradient};

use crate::config::{QueueConfig, QueueName, QueuePolicy};

pub use payload::{
    AnalyticsJob, BackupJob, Channel, EmailJob, EmailTemplate, ExportJob, ExportTable, ImportJob,
    NotificationJob, OrderJob, ReportJob, ReviewWrite, ScheduleJob,
};
pub use processors::Processors;
pub use throughput::{Throughput, ThroughputPoint};

/// How often the depth, pause and oldest-waiting gauges are refreshed.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// The workers of every queue, started together and stopped together,
/// the task that keeps the queues' depth gauges current, and the
/// recurring jobs' schedulers.
pub struct Running {
    workers: Vec<(QueueName, Worker)>,
    recurring: recurring::Schedulers,
    depth: tokio::task::JoinHandle<()>,
    /// Announces this process to the queue backend.
    presence: tokio::task::JoinHandle<()>,
    queues: Queues,
    id: String,
}

impl Running {
    /// Starts one worker per queue with the queue's concurrency, its
    /// metrics in `monitor`, and its processor, announces the process
    /// every second (see [`presence`]), and keeps the [`recurring`] jobs'
    /// schedulers: upserted (or removed when `off`) in a task that tries
    /// again while the backend fails, then run.
    pub fn start(
        queues: &Queues,
        config: &QueueConfig,
        monitor: &Monitor,
        processors: &Processors,
    ) -> Result<Self, seawall_queue::Error> {
        let mut workers = Vec::with_capacity(QueueName::ALL.len());
        let mut gauges = Vec::with_capacity(QueueName::ALL.len());
        for queue in QueueName::ALL {
            let metrics = QueueMetrics::register(monitor, queue.as_str())?;
            let policy = config.policy(queue);
            metrics.set_backlog_bound(policy.backlog);
            let mut builder = queues
                .worker(queue.as_str())?
                .concurrency(policy.concurrency)?
                .lease(config.lease)?
                .backoff(policy.backoff.to_backoff())
                .metrics(metrics.clone());
            if policy.adaptive {
                builder = builder.concurrency_limit(adaptive_limit(queue, policy, monitor)?);
            }
            let worker = start_worker(queue, builder, processors.clone());
            workers.push((queue, worker));
            gauges.push((queue, metrics));
        }
        let depth = tokio::spawn(record_depth(queues.clone(), gauges));
        let recurring = recurring::Schedulers::start(queues, config);
        let started_ms = crate::time::now_ms().max(0).unsigned_abs();
        let id = presence::process_id(&presence::host_name(), started_ms);
        let watches = workers
            .iter()
            .map(|(queue, worker)| (*queue, worker.watch()))
            .collect();
        let presence = tokio::spawn(presence::announce(
            queues.clone(),
            id.clone(),
            started_ms,
            config.clone(),
            watches,
        ));
        Ok(Self {
            workers,
            recurring,
            depth,
            presence,
            queues: queues.clone(),
            id,
        })
    }

    /// This process's id among the announced ones.
    pub fn process_id(&self) -> &str {
        &self.id
    }

    /// Jobs running now, over every queue.
    pub fn running(&self) -> usize {
        self.workers
            .iter()
            .map(|(_, worker)| worker.running())
            .sum()
    }

    /// Stops the recurring jobs' schedulers and fetching everywhere, gives
    /// running jobs up to `deadline` to finish, and gives the rest back to
    /// their queues. Answers the stats per queue.
    pub async fn shutdown(self, deadline: Duration) -> Vec<(QueueName, WorkerStats)> {
        self.depth.abort();
        let failures = self.recurring.failures();
        for (queue, stats) in self.recurring.shutdown().await {
            tracing::debug!(%queue, enqueued = stats.enqueued, raced = stats.raced, failed = stats.failed, failures, "schedulers stopped");
        }
        let stopping = self
            .workers
            .into_iter()
            .map(|(queue, worker)| async move { (queue, worker.shutdown(deadline).await) });
        let stopped = futures_util::future::join_all(stopping).await;
        // Off the list once nothing runs: a clean stop is not a crash. The
        // announcing task is gone first, so no late announcement follows.
        self.presence.abort();
        let _ = self.presence.await;
        if let Err(error) = self.queues.withdraw(&self.id).await {
            tracing::debug!(%error, "withdrawing this worker process failed");
        }
        stopped
    }
}

/// The adaptive limit of a queue whose policy says `adaptive=on`: found
/// from the runs' latency (Gradient2, as the API's in-flight limit), from
/// 1 to the queue's concurrency, starting at it; its metrics are
/// `adaptive_*{limiter="queue.<name>"}`.
fn adaptive_limit(
    queue: QueueName,
    policy: &QueuePolicy,
    monitor: &Monitor,
) -> Result<AdaptiveLimiter, seawall_queue::Error> {
    let most = policy.concurrency as u64;
    AdaptiveLimiter::builder(Gradient::new())
        .bounds(1, most)
        .initial(most)
        .metrics(monitor, &format!("queue.{queue}"))
        .build()
        .map_err(|error| seawall_queue::Error::InvalidSetting(error.to_string()))
}

/// Starts `builder` with the processor of `queue`.
fn start_worker(queue: QueueName, builder: WorkerBuilder, processors: Processors) -> Worker {
    macro_rules! run {
        ($process:path) => {
            builder.start(move |job| {
                let processors = processors.clone();
                async move { $process(&processors, job).await }
            })
        };
    }
    match queue {
        QueueName::Email => run!(work::email),
        QueueName::Report => run!(work::report),
        QueueName::Schedule => run!(work::schedule),
        QueueName::Notification => run!(work::notification),
        QueueName::Analytics => run!(work::analytics),
        QueueName::Backup => run!(files::backup),
        QueueName::Export => run!(files::export),
        QueueName::Import => run!(files::import),
        QueueName::Order => run!(work::order),
    }
}

/// Refreshes every queue's depth, pause and oldest-waiting gauges every
/// [`DEPTH_EVERY`], from the first tick on: one round trip per queue.
async fn record_depth(queues: Queues, gauges: Vec<(QueueName, QueueMetrics)>) {
    let mut every = tokio::time::interval(DEPTH_EVERY);
    loop {
        every.tick().await;
        for (queue, metrics) in &gauges {
            match queues.backlog(queue.as_str()).await {
                Ok(backlog) => metrics.record_backlog(&backlog),
                Err(error) => tracing::debug!(%queue, %error, "queue depth not read"),
            }
        }
    }
}

/// Why a job was not enqueued.
#[derive(Debug)]
pub enum Refusal {
    /// The payload breaks a rule of its queue; nothing was enqueued.
    Invalid(payload::Refused),
    /// The queue backend failed.
    Queue(seawall_queue::Error),
}

/// How long an idempotency key answers for the job it first enqueued: a
/// day, so that a producer retrying after an outage, a timeout or a
/// restart of its own is covered, while keys do not pile up in Redis for
/// longer than the completed jobs they name are kept. The OpenAPI
/// document, the README and docs/operations.md say "24 hours".
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How an enqueue keeps a job from being queued twice; keys are each
/// queue's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dedupe<'a> {
    /// Every enqueue adds a job.
    #[default]
    None,
    /// An enqueue with the same key within [`IDEMPOTENCY_WINDOW`] adds
    /// nothing and answers the first job's id, so a producer may retry a
    /// call whose answer it never got (Redis may have run it).
    Idempotency(&'a str),
    /// While a job enqueued with the key has not started, an enqueue with
    /// it adds nothing and answers that job's id.
    UntilStarted(&'a str),
    /// The same, until that job completed or was dead-lettered.
    UntilCompleted(&'a str),
    /// The job runs the delay after the last of a burst of enqueues with
    /// the key: while one waits for its delay, an enqueue with the key
    /// replaces its payload, starts the delay again and answers its id.
    Debounce(&'a str, Duration),
}

/// Checks `payload` against `queue`'s rules, then enqueues it with the
/// queue's attempts, backoff and timeout; with an `idempotency_key`, as
/// [`Dedupe::Idempotency`] (see [`enqueue_with`]).
pub async fn enqueue(
    queues: &Queues,
    config: &QueueConfig,
    queue: QueueName,
    payload: serde_json::Value,
    idempotency_key: Option<&str>,
) -> Result<seawall_queue::JobId, Refusal> {
    let dedupe = idempotency_key.map_or(Dedupe::None, Dedupe::Idempotency);
    enqueue_with(queues, config, queue, payload, dedupe).await
}

/// Checks `payload` against `queue`'s rules, then enqueues it with the
/// queue's attempts, backoff and timeout, kept from being queued twice as
/// `dedupe` says. The key replaces any the queue's options carry: the
/// caller's is what it must recognise. A job of a queue whose processor
/// reads on replicas, enqueued for a [caller](crate::db::caller::Caller),
/// carries the caller's position, so that it reads the caller's writes
/// (see docs/operations.md, "Read-your-writes in jobs").
pub async fn enqueue_with(
    queues: &Queues,
    config: &QueueConfig,
    queue: QueueName,
    payload: serde_json::Value,
    dedupe: Dedupe<'_>,
) -> Result<seawall_queue::JobId, Refusal> {
    let payload = payload::validate(queue, payload).map_err(Refusal::Invalid)?;
    let options = config.policy(queue).job_options();
    let options = match dedupe {
        Dedupe::None => Ok(options),
        Dedupe::Idempotency(key) => options.idempotency_key(key, IDEMPOTENCY_WINDOW),
        Dedupe::UntilStarted(key) => options.unique_until_started(key),
        Dedupe::UntilCompleted(key) => options.unique_until_completed(key),
        Dedupe::Debounce(key, delay) => options.debounce(key, delay),
    }
    .map_err(Refusal::Queue)?;
    let options = match read_after(queue).await {
        Some(context) => options.context(context).map_err(Refusal::Queue)?,
        None => options,
    };
    queues
        .enqueue(queue.as_str(), &payload, &options)
        .await
        .map_err(Refusal::Queue)
}

/// The context of a job of `queue` enqueued now: for a queue whose
/// processor reads on replicas (email, report, notification), enqueued
/// for a [caller](crate::db::caller::Caller), `read-after=` the position
/// the caller's writes reach (`0/0` for none), which the job's reads wait
/// for as the caller's own would. Outside a caller, nothing: the job then
/// reads as of when its reads begin, which is after everything committed
/// before its enqueue.
async fn read_after(queue: QueueName) -> Option<String> {
    if !matches!(
        queue,
        QueueName::Email | QueueName::Report | QueueName::Notification
    ) {
        return None;
    }
    let position = crate::db::caller::handed_on().await?;
    Some(format!("{}{position}", processors::READ_AFTER))
}

/// A job of a flow as asked for: its queue and payload, what its final
/// failure does to its parent (ignored at the root), and its children.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowJob {
    /// Its queue.
    pub queue: QueueName,
    /// Its payload, checked against the queue's rules.
    pub payload: serde_json::Value,
    /// What its final failure does to its parent.
    pub on_failure: seawall_queue::ChildFailure,
    /// The jobs that must finish before it runs.
    pub children: Vec<FlowJob>,
}

/// Checks every payload of the tree against its queue's rules, then
/// enqueues the tree with each queue's attempts, backoff and timeout, all
/// or nothing (see [`Queues::enqueue_flow`]). A refused payload names its
/// place in the tree (`children[1].children[0].payload.user_id`).
pub async fn enqueue_flow(
    queues: &Queues,
    config: &QueueConfig,
    flow: FlowJob,
) -> Result<seawall_queue::FlowIds, Refusal> {
    fn build(job: FlowJob, config: &QueueConfig, at: &str) -> Result<seawall_queue::Flow, Refusal> {
        let payload = payload::validate(job.queue, job.payload).map_err(|mut refused| {
            refused.field = if refused.field == "payload" {
                format!("{at}payload")
            } else {
                format!("{at}payload.{}", refused.field)
            };
            Refusal::Invalid(refused)
        })?;
        let options = config.policy(job.queue).job_options();
        let mut flow = seawall_queue::Flow::new(job.queue.as_str(), &payload, &options)
            .map_err(Refusal::Queue)?;
        for (n, child) in job.children.into_iter().enumerate() {
            let on_failure = child.on_failure;
            let child = build(child, config, &format!("{at}children[{n}]."))?;
            flow = flow.child_with(child, on_failure);
        }
        Ok(flow)
    }
    let flow = build(flow, config, "")?;
    queues.enqueue_flow(flow).await.map_err(Refusal::Queue)
}
