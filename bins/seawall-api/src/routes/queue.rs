//! The admin queue routes: stats per queue and state, enqueue (the payload
//! checked against its queue's rules; a bad one is 422 and nothing is
//! enqueued; an `Idempotency-Key` makes a retried enqueue answer the first
//! job), job listings and details with progress and attempt history,
//! pause, resume, retry, cancel and clean; the schedulers of recurring
//! jobs, with their next runs, paused and resumed; and the rate limits
//! (`limits`).

mod flows;
mod limits;
mod named;

use named::{JobPath, QueuePath, job_id, queue_named, queues};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use seawall_queue::{Cancelled, Counts, Finished, JobInfo, JobState, Queues, SchedulerInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::QueueName;
use crate::extract::{Json, Path};
use crate::jobs::{self, Refusal, ThroughputPoint};
use crate::params::Params;
use crate::problem::{self, Problem};
use crate::state::AppState;
use seawall_app::capacity::BacklogOutlook;
use seawall_app::time::timestamp;

/// The most jobs one listing returns.
const MAX_LISTED: i64 = 200;
/// The oldest age `clean` takes, a year in seconds.
const MAX_AGE_SECONDS: u64 = 31_536_000;
/// The most finished jobs `clean` can be told to keep.
const MAX_KEEP: u64 = 1_000_000;
/// The header that names one logical enqueue across its retries
/// (draft-ietf-httpapi-idempotency-key-header).
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The longest `Idempotency-Key`, in characters.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The next runs a scheduler's view lists.
const NEXT_RUNS: usize = 3;

/// The admin queue routes; the caller puts them behind the token.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    // An enqueue that carries a `Seawall-Read-After` runs as the caller it
    // names: the jobs whose processors read on replicas carry that
    // position.
    let enqueue = OpenApiRouter::new()
        .routes(routes!(enqueue_email))
        .routes(routes!(enqueue_report))
        .routes(routes!(enqueue_schedule))
        .routes(routes!(enqueue_notification))
        .routes(routes!(enqueue_analytics))
        .routes(routes!(enqueue_backup))
        .routes(routes!(enqueue_export))
        .routes(routes!(enqueue_import))
        .route_layer(axum::middleware::from_fn(crate::read_after::carried));
    OpenApiRouter::new()
        .routes(routes!(overview))
        .merge(enqueue)
        .routes(routes!(flows::enqueue_flow))
        .routes(routes!(list))
        .routes(routes!(job, cancel))
        .routes(routes!(flows::children))
        .routes(routes!(retry_one))
        .routes(routes!(retry_all))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(clean))
        .routes(routes!(schedulers))
        .routes(routes!(pause_scheduler))
        .routes(routes!(resume_scheduler))
        .routes(routes!(limits::limits))
        .routes(routes!(limits::set_rate_limit, limits::clear_rate_limit))
        .routes(routes!(
            limits::set_group_rate_limit,
            limits::clear_group_rate_limit
        ))
}

/// One queue's depth per state and its policy.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueRow {
    /// The queue.
    name: String,
    waiting: u64,
    delayed: u64,
    /// Jobs of a flow that wait for their children to finish.
    waiting_children: u64,
    active: u64,
    /// Completed jobs kept (the newest 1,000, for a day).
    completed: u64,
    dead: u64,
    paused: bool,
    /// Jobs one worker process runs at once.
    concurrency: usize,
    /// Tries per job.
    attempts: u32,
    /// Jobs completed over the last minute, by any worker.
    completed_last_minute: u64,
    /// Attempts failed over the last minute (retried or not).
    failed_last_minute: u64,
    /// The waiting jobs an hour ahead and when they pass the queue's
    /// backlog bound, forecast by this instance from the backlog it reads
    /// every 10 s (whichever processes run the jobs); absent until the
    /// first reading.
    backlog_forecast: Option<BacklogOutlook>,
}

/// Every queue at a glance.
#[derive(Debug, Serialize, ToSchema)]
struct Overview {
    /// `memory` (embedded defaults) or `redis`.
    backend: String,
    /// `in-process` (this API runs the processors) or `seawall-worker`.
    processors: String,
    queues: Vec<QueueRow>,
    /// Jobs per second over every queue, from the queues' event streams,
    /// every 5 s over the last 15 minutes, oldest first.
    history: Vec<ThroughputPoint>,
    /// Every process that runs the processors, as each announces itself
    /// on the queue backend every second: all of a fleet's workers (alive
    /// first), or this process on embedded defaults. A process silent for
    /// 5 s is not alive; one silent for 10 minutes is forgotten.
    processes: Vec<ProcessView>,
    /// The schedulers of recurring jobs, of every queue: by queue, then
    /// by id.
    schedulers: Vec<SchedulerView>,
    /// Every queue's limits (its rate limit and the starts in its window,
    /// the group rate limit and cap, a handler's hold), in the order of
    /// `queues`.
    limits: Vec<limits::LimitsView>,
}

/// A scheduler of recurring jobs: at each tick of its schedule, one job
/// with its payload is enqueued on its queue, by whichever process runs
/// the queue's schedulers.
#[derive(Debug, Serialize, ToSchema)]
struct SchedulerView {
    /// Its queue.
    queue: String,
    /// Its id, unique in its queue.
    #[schema(example = "nightly-backup")]
    id: String,
    /// When it ticks: `every <interval>` (on the interval's whole
    /// multiples since the Unix epoch) or `cron "<expression>" in <zone>`,
    /// with what missed ticks make when that is not one job for the
    /// latest.
    #[schema(example = "cron \"0 3 * * *\" in UTC")]
    schedule: String,
    /// Whether it is paused: its ticks make no job until it is resumed.
    paused: bool,
    /// Its next ticks, soonest first, at most three; none while it is
    /// paused (resumed, it starts from its first tick after then).
    next_runs: Vec<String>,
    /// The job already enqueued for its next run, delayed until then
    /// (each tick's job is enqueued up to a second ahead); `null` when
    /// none is yet.
    next_job: Option<String>,
    /// Its last tick that made a job, and that job; `null` until one did.
    last_run: Option<LastRunView>,
    /// The payload of its jobs.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

/// A scheduler's last tick that made a job.
#[derive(Debug, Serialize, ToSchema)]
struct LastRunView {
    /// When the tick was due.
    at: String,
    /// The job it made.
    job_id: String,
}

/// The schedulers of one queue.
#[derive(Debug, Serialize, ToSchema)]
struct SchedulerList {
    queue: String,
    /// By id.
    schedulers: Vec<SchedulerView>,
}

fn scheduler_view(queue: QueueName, info: SchedulerInfo) -> SchedulerView {
    let next_runs = if info.paused {
        Vec::new()
    } else {
        info.next_runs(NEXT_RUNS).into_iter().map(time).collect()
    };
    SchedulerView {
        queue: queue.as_str().to_owned(),
        schedule: info.schedule.to_string(),
        paused: info.paused,
        next_runs,
        next_job: info.next_job.map(|job| job.to_string()),
        last_run: info.last_run.map(|(at, job)| LastRunView {
            at: time(at),
            job_id: job.to_string(),
        }),
        payload: serde_json::from_slice(&info.payload).unwrap_or(serde_json::Value::Null),
        id: info.id,
    }
}

/// A process that runs the processors.
#[derive(Debug, Serialize, ToSchema)]
struct ProcessView {
    /// Host, pid and start time.
    id: String,
    host: String,
    pid: u32,
    started_at: String,
    /// Whether it announced itself within the last 5 s.
    alive: bool,
    /// Seconds since its last announcement.
    seen_seconds_ago: f64,
    /// Jobs it completed per second over its last minute.
    completed_per_second: f64,
    /// What it runs, per queue.
    queues: Vec<ProcessQueue>,
    /// The newest wire version of the queue's data it reads: 1 for the
    /// release before job ids carried an epoch. While a process that
    /// reads only 1 is alive, enqueues give ids of digits alone.
    wire_version: u32,
}

/// One queue in a process.
#[derive(Debug, Serialize, ToSchema)]
struct ProcessQueue {
    queue: String,
    /// The most jobs it runs at once.
    concurrency: usize,
    /// Jobs it runs now.
    running: usize,
    /// Jobs it completed since it started.
    completed: u64,
    /// Attempts that failed since it started.
    failed: u64,
}

fn process_view(seen: seawall_queue::SeenProcess) -> ProcessView {
    let report = seen.report;
    ProcessView {
        id: report.id,
        host: report.host,
        pid: report.pid,
        started_at: timestamp(i64::try_from(report.started_ms).unwrap_or(i64::MAX)),
        alive: seen.alive,
        seen_seconds_ago: seen.since.as_secs_f64(),
        completed_per_second: report.completed_per_second,
        queues: report
            .queues
            .into_iter()
            .map(|queue| ProcessQueue {
                queue: queue.queue,
                concurrency: queue.concurrency,
                running: queue.running,
                completed: queue.completed,
                failed: queue.failed,
            })
            .collect(),
        wire_version: report.wire_version,
    }
}

/// A job as the queue keeps it.
#[derive(Debug, Serialize, ToSchema)]
struct JobView {
    queue: String,
    id: String,
    /// `waiting`, `delayed`, `active`, `completed` or `dead`
    /// (`waiting-children` for a flow's job whose children have not all
    /// finished).
    state: String,
    /// The payload as enqueued.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// Failed attempts so far.
    failures: u32,
    /// The most failures before the job goes to the dead set.
    max_attempts: u32,
    /// Times a worker took it.
    runs: u32,
    /// Times a worker lost it without finishing (a crash).
    stalls: u32,
    created_at: String,
    /// When it became (or becomes) ready to run.
    ready_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    progress: Option<ProgressView>,
    /// The last failed attempts, oldest first.
    errors: Vec<AttemptView>,
    /// Why it went to the dead set, while it is dead: its last attempt's
    /// error, its stalls, or, for a flow job that never ran, its child's
    /// failure.
    dead_reason: Option<String>,
    cancel_requested: bool,
    /// What its handler returned, once it completed, if anything: any
    /// JSON value.
    result: Option<serde_json::Value>,
    /// The recurring job's tick it was enqueued for, if a scheduler
    /// enqueued it.
    tick: Option<TickView>,
    /// What the job carries beside its payload, if anything: the WAL
    /// position its reads must see (`read-after=16/B374D848`), for an
    /// email, report or notification job enqueued for a caller.
    context: Option<String>,
}

/// A scheduler's tick.
#[derive(Debug, Serialize, ToSchema)]
struct TickView {
    /// The scheduler's id.
    scheduler: String,
    /// When the tick was due.
    at: String,
}

/// A handler's last progress report.
#[derive(Debug, Serialize, ToSchema)]
struct ProgressView {
    /// 0 to 100.
    percent: u8,
    message: String,
}

/// One failed attempt.
#[derive(Debug, Serialize, ToSchema)]
struct AttemptView {
    attempt: u32,
    at: String,
    error: String,
}

/// Jobs of one state.
#[derive(Debug, Serialize, ToSchema)]
struct JobList {
    queue: String,
    state: String,
    jobs: Vec<JobView>,
}

/// A job enqueued.
#[derive(Debug, Serialize, ToSchema)]
struct Enqueued {
    queue: String,
    /// `<sequence>-<epoch>`: unique in its queue, also across a Redis
    /// failover; ids of one primary sort by sequence in enqueue order.
    #[schema(example = "31556926000000-9f86d081884c7d65")]
    id: String,
}

/// What a cancellation did: `cancelled` (it was waiting or delayed and is
/// gone) or `requested` (it is running; its handler is told, and the job is
/// dropped when the handler returns).
#[derive(Debug, Serialize, ToSchema)]
struct CancelOutcome {
    queue: String,
    id: String,
    outcome: String,
}

/// How many jobs an action moved or removed.
#[derive(Debug, Serialize, ToSchema)]
struct Affected {
    queue: String,
    count: u64,
}

/// Which finished jobs to remove.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CleanRequest {
    /// Which finished jobs.
    state: FinishedState,
    /// Remove only jobs finished at least this many seconds ago (at most
    /// a year); default 0.
    #[serde(default, deserialize_with = "seawall_app::json::optional_integer")]
    #[schema(minimum = 0, maximum = 31_536_000)]
    older_than_seconds: Option<i64>,
    /// Keep the newest this many in any case, at most 1,000,000; default 0.
    #[serde(default, deserialize_with = "seawall_app::json::optional_integer")]
    #[schema(minimum = 0, maximum = 1_000_000)]
    keep: Option<i64>,
}

/// Which jobs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query `Params` reads
struct ListQuery {
    /// The state.
    #[param(inline)]
    state: ListedState,
    /// How many, 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// The states whose jobs are listed (waiting jobs are counted only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ListedState {
    Active,
    Delayed,
    Completed,
    Dead,
}

/// The two states a job ends in.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum FinishedState {
    Completed,
    Dead,
}

/// A scheduler a path names.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SchedulerPath {
    /// The queue.
    queue: String,
    /// The scheduler's id: `nightly-backup` (backup), `hourly-analytics`
    /// (analytics) and `daily-report` (report) are the application's own.
    #[param(example = "nightly-backup")]
    id: String,
}

/// The request's `Idempotency-Key`, if it sent one: 1 to
/// [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters, taken as they are
/// (a structured-field string's quotes included). Two of them is a 400
/// like two `Authorization` headers: which one counts would be a guess.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "the request has more than one Idempotency-Key header; send exactly one",
        )
        .with_param(IDEMPOTENCY_KEY.as_str(), "is sent more than once"));
    }
    let bytes = value.as_bytes();
    if (1..=MAX_IDEMPOTENCY_KEY).contains(&bytes.len())
        && bytes.iter().all(|b| (b'!'..=b'~').contains(b))
    {
        return Ok(Some(String::from_utf8_lossy(bytes).into_owned()));
    }
    Err(Problem::bad_header(
        IDEMPOTENCY_KEY.as_str(),
        format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
    ))
}

fn time(at: SystemTime) -> String {
    let ms = at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    });
    timestamp(ms)
}

fn view(queue: QueueName, job: JobInfo) -> JobView {
    JobView {
        queue: queue.as_str().to_owned(),
        id: job.id.to_string(),
        state: job.state.as_str().to_owned(),
        payload: serde_json::from_slice(&job.payload).unwrap_or(serde_json::Value::Null),
        failures: job.failures,
        max_attempts: job.max_attempts,
        runs: job.runs,
        stalls: job.stalls,
        created_at: time(job.created_at),
        ready_at: time(job.ready_at),
        started_at: job.started_at.map(time),
        finished_at: job.finished_at.map(time),
        progress: job.progress.map(|progress| ProgressView {
            percent: progress.percent,
            message: progress.message,
        }),
        errors: job
            .errors
            .into_iter()
            .map(|error| AttemptView {
                attempt: error.attempt,
                at: timestamp(i64::try_from(error.at_ms).unwrap_or(i64::MAX)),
                error: error.error,
            })
            .collect(),
        dead_reason: job.dead_reason,
        cancel_requested: job.cancel_requested,
        result: job
            .result
            .as_deref()
            .and_then(|json| serde_json::from_slice(json).ok()),
        tick: job.tick.map(|tick| TickView {
            scheduler: tick.scheduler,
            at: time(tick.at),
        }),
        context: job.context,
    }
}

pub(crate) fn row(state: &AppState, queue: QueueName, counts: &Counts) -> QueueRow {
    let policy = state.queue_config().policy(queue);
    let minute = state.throughput().last_minute(queue);
    QueueRow {
        name: queue.as_str().to_owned(),
        waiting: counts.waiting,
        delayed: counts.delayed,
        waiting_children: counts.waiting_children,
        active: counts.active,
        completed: counts.completed,
        dead: counts.dead,
        paused: counts.paused,
        concurrency: policy.concurrency,
        attempts: policy.attempts,
        completed_last_minute: minute.completed,
        failed_last_minute: minute.failed,
        backlog_forecast: state.capacity().backlog_outlook(queue.as_str()),
    }
}

/// Every queue's depth per state, whether it is paused, and its policy.
#[utoipa::path(get, path = "/api/queue", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every queue at a glance", body = Overview),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn overview(State(state): State<AppState>) -> Result<Json<Overview>, Problem> {
    let queues = queues(&state)?;
    // Every queue's counts at once: one round trip's wait, not nine.
    let counted = async {
        let counts = futures_util::future::try_join_all(
            QueueName::ALL.map(|queue| async move { queues.counts(queue.as_str()).await }),
        )
        .await?;
        Ok::<_, Problem>(
            QueueName::ALL
                .into_iter()
                .zip(&counts)
                .map(|(queue, counts)| row(&state, queue, counts))
                .collect::<Vec<_>>(),
        )
    };
    let (rows, schedulers, limits) =
        tokio::join!(counted, all_schedulers(queues), limits::all_limits(queues));
    let rows = rows?;
    // The list of processes is a view; the counts above are what the
    // overview is for, so a failure here leaves the list empty.
    let processes = match queues.processes().await {
        Ok(processes) => processes.into_iter().map(process_view).collect(),
        Err(error) => {
            tracing::warn!(%error, "listing the worker processes failed");
            Vec::new()
        }
    };
    let in_process = state.processes_jobs();
    Ok(Json(Overview {
        backend: if in_process { "memory" } else { "redis" }.to_owned(),
        processors: if in_process {
            "in-process"
        } else {
            "seawall-worker"
        }
        .to_owned(),
        queues: rows,
        history: state.throughput().history(),
        processes,
        schedulers,
        limits,
    }))
}

/// The schedulers of every queue, listed at once. Like the processes, a
/// view: a queue whose list fails is left out of it.
async fn all_schedulers(queues: &Queues) -> Vec<SchedulerView> {
    let lists = futures_util::future::join_all(
        QueueName::ALL.map(|queue| async move { (queue, queues.schedulers(queue.as_str()).await) }),
    )
    .await;
    let mut views = Vec::new();
    for (queue, listed) in lists {
        match listed {
            Ok(listed) => views.extend(listed.into_iter().map(|info| scheduler_view(queue, info))),
            Err(error) => tracing::warn!(%error, %queue, "listing the queue's schedulers failed"),
        }
    }
    views
}

/// The enqueue operation of one queue: the body is a job of that queue's
/// schema, checked against its rules; the job gets the queue's attempts,
/// backoff and timeout, and the request's `Idempotency-Key` if it has one.
macro_rules! enqueue_route {
    ($handler:ident, $queue:ident, $path:literal, $payload:ty, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(post, path = $path, tag = "admin",
            security(("admin_token" = [])),
            params(
                ("Idempotency-Key" = Option<String>, Header,
                    description = "Names this enqueue across its retries: another with the same \
                        key on this queue within 24 hours enqueues nothing and answers the \
                        first job's id. Send one to retry after a 503 or a timeout without \
                        a second job. Not with `dedupe`.",
                    nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
                    example = "order-7-confirmation"),
                ("Seawall-Read-After" = Option<String>, Header,
                    description = "A `Seawall-Read-After` a workload response gave: with \
                        database replicas, an email, report or notification job then reads \
                        only on a replica that has replayed the database that far (the writes \
                        that response's caller had made), else on the primary. Without it, \
                        such a job reads as of when its reads begin.",
                    nullable = false, pattern = "^([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}|[0-9A-Fa-f]{1,16})$",
                    example = "16/B374D848"),
                DedupeQuery,
            ),
            request_body(content = $payload, content_type = "application/json"),
            responses(
                (status = 202, description = "Enqueued; or, for an `Idempotency-Key` already \
                    used on this queue within 24 hours, the job it enqueued (nothing new is)",
                    body = Enqueued),
                (status = 400, description = "`Idempotency-Key` is empty, longer than 255 \
                    characters, not visible ASCII or sent twice; `Seawall-Read-After` is not \
                    a WAL position or sent twice; `dedupe`, `key` or `debounce_ms` is \
                    malformed or out of range; or two `Authorization` headers",
                    body = Problem, content_type = "application/problem+json"),
                (status = 422, description = "The payload breaks the queue's rules, the \
                    `Idempotency-Key` was first used on this queue for a different job, or \
                    `dedupe`, `key` and `debounce_ms` do not go together (`key` needs \
                    `dedupe`, `debounce_ms` needs `dedupe=debounce` and the reverse, and \
                    `dedupe` is not taken with an `Idempotency-Key`); nothing was enqueued",
                    body = Problem, content_type = "application/problem+json"),
                (status = 503, description = "The queues' Redis does not answer, or (with \
                    `queue.wait_replicas`) no replica confirmed the job in time. The detail \
                    says which: not queued (taken back before it ran, as the replicas \
                    confirmed), or unknown, when the job may have been enqueued all the same, \
                    so retry with the same `Idempotency-Key`",
                    body = Problem, content_type = "application/problem+json"),
            ),
        )]
        async fn $handler(
            State(state): State<AppState>,
            headers: HeaderMap,
            params: Params,
            body: Result<Json<serde_json::Value>, Problem>,
        ) -> Result<(StatusCode, Json<Enqueued>), Problem> {
            enqueue(&state, QueueName::$queue, &headers, &params, body).await
        }
    };
}

enqueue_route!(
    enqueue_email,
    Email,
    "/api/queue/email",
    jobs::EmailJob,
    "Enqueues a mail to a learner, written to the outbox."
);
enqueue_route!(
    enqueue_report,
    Report,
    "/api/queue/report",
    jobs::ReportJob,
    "Enqueues a learner's review report over a period."
);
enqueue_route!(
    enqueue_schedule,
    Schedule,
    "/api/queue/schedule",
    jobs::ScheduleJob,
    "Enqueues a schedule recomputation, or a review written behind the cache."
);
enqueue_route!(
    enqueue_notification,
    Notification,
    "/api/queue/notification",
    jobs::NotificationJob,
    "Enqueues a notification to a channel."
);
enqueue_route!(
    enqueue_analytics,
    Analytics,
    "/api/queue/analytics",
    jobs::AnalyticsJob,
    "Enqueues a refresh of the daily statistics."
);
enqueue_route!(
    enqueue_backup,
    Backup,
    "/api/queue/backup",
    jobs::BackupJob,
    "Enqueues a backup: one snapshot of every table, as JSON lines."
);
enqueue_route!(
    enqueue_export,
    Export,
    "/api/queue/export",
    jobs::ExportJob,
    "Enqueues the export of a table as CSV."
);
enqueue_route!(
    enqueue_import,
    Import,
    "/api/queue/import",
    jobs::ImportJob,
    "Enqueues the import of contents from a CSV file."
);

/// How an enqueue keeps its job from being queued twice, besides an
/// `Idempotency-Key` (BullMQ's deduplication modes).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query `Params` reads
struct DedupeQuery {
    /// `until-started`: while a job enqueued with `key` has not started,
    /// an enqueue with it adds nothing and answers that job's id;
    /// `until-completed`: the same until it completed or died; `debounce`:
    /// the job runs `debounce_ms` after the last of a burst of enqueues
    /// with `key` (one waiting for its delay takes the later payload and
    /// waits again; its id is answered).
    #[param(inline)]
    dedupe: Option<DedupeMode>,
    /// The key, 1 to 255 visible ASCII characters; with `dedupe` only.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$",
        example = "report-7"
    )]
    key: Option<String>,
    /// A debounce's delay in ms, 1 to a day; with `dedupe=debounce` only.
    #[param(minimum = 1, maximum = 86_400_000, example = 2000)]
    debounce_ms: Option<i64>,
}

/// The deduplication modes an enqueue takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
enum DedupeMode {
    UntilStarted,
    UntilCompleted,
    Debounce,
}

/// The longest debounce, in ms: a day.
const MAX_DEBOUNCE_MS: i64 = 86_400_000;

/// The deduplication the request asks for: its `Idempotency-Key`, or its
/// `dedupe` with `key` (and `debounce_ms`), not both. A malformed value is
/// a 400; parameters that are well-formed one by one but do not go
/// together are a 422.
fn dedupe<'r>(
    headers: &HeaderMap,
    params: &'r Params,
    idempotency: &'r Option<String>,
) -> Result<jobs::Dedupe<'r>, Problem> {
    let mode = params.choice("dedupe", &["until-started", "until-completed", "debounce"])?;
    let key = params.optional("key");
    if let Some(key) = key {
        let bytes = key.as_bytes();
        if !((1..=MAX_IDEMPOTENCY_KEY).contains(&bytes.len())
            && bytes.iter().all(|b| (b'!'..=b'~').contains(b)))
        {
            return Err(Problem::bad_parameter(
                "key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            ));
        }
    }
    let debounce_ms = params
        .optional("debounce_ms")
        .map(|_| params.int("debounce_ms", 1..=MAX_DEBOUNCE_MS, None))
        .transpose()?;
    let Some(mode) = mode else {
        if key.is_some() || debounce_ms.is_some() {
            let name = if key.is_some() { "key" } else { "debounce_ms" };
            return Err(Problem::unprocessable_parameter(
                name,
                "is taken only with dedupe",
            ));
        }
        return Ok(idempotency
            .as_deref()
            .map_or(jobs::Dedupe::None, jobs::Dedupe::Idempotency));
    };
    if headers.contains_key(&IDEMPOTENCY_KEY) {
        return Err(Problem::unprocessable_parameter(
            "dedupe",
            "is not taken with an Idempotency-Key: send one or the other",
        ));
    }
    let key =
        key.ok_or_else(|| Problem::unprocessable_parameter("key", "is required with dedupe"))?;
    Ok(match (mode, debounce_ms) {
        ("debounce", Some(ms)) => {
            jobs::Dedupe::Debounce(key, Duration::from_millis(ms.unsigned_abs()))
        }
        ("debounce", None) => {
            return Err(Problem::unprocessable_parameter(
                "debounce_ms",
                "is required with dedupe=debounce",
            ));
        }
        (_, Some(_)) => {
            return Err(Problem::unprocessable_parameter(
                "debounce_ms",
                "is taken only with dedupe=debounce",
            ));
        }
        ("until-started", None) => jobs::Dedupe::UntilStarted(key),
        _ => jobs::Dedupe::UntilCompleted(key),
    })
}

async fn enqueue(
    state: &AppState,
    queue: QueueName,
    headers: &HeaderMap,
    params: &Params,
    body: Result<Json<serde_json::Value>, Problem>,
) -> Result<(StatusCode, Json<Enqueued>), Problem> {
    let key = idempotency_key(headers)?;
    let dedupe = dedupe(headers, params, &key)?;
    let Json(payload) = body?;
    let queues = queues(state)?;
    match jobs::enqueue_with(queues, state.queue_config(), queue, payload, dedupe).await {
        Ok(id) => Ok((
            StatusCode::ACCEPTED,
            Json(Enqueued {
                queue: queue.as_str().to_owned(),
                id: id.to_string(),
            }),
        )),
        Err(Refusal::Invalid(refused)) => {
            Err(Problem::invalid_field(&refused.field, refused.reason))
        }
        Err(Refusal::Queue(error)) => Err(Problem::from(error)),
    }
}

/// Jobs of one state, at most `limit` (default 50, at most 200): active by
/// lease deadline, delayed by due time, completed and dead newest first.
/// Waiting jobs are counted, not listed.
#[utoipa::path(get, path = "/api/queue/{queue}/jobs", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath, ListQuery),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 400, description = "A parameter is unknown, missing or out of range",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn list(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    params: Params,
) -> Result<Json<JobList>, Problem> {
    let queue = queue_named(&queue)?;
    let job_state = match params.choice("state", &["active", "delayed", "completed", "dead"])? {
        Some("active") => JobState::Active,
        Some("delayed") => JobState::Delayed,
        Some("completed") => JobState::Completed,
        Some(_) => JobState::Dead,
        None => return Err(Problem::bad_parameter("state", "is required")),
    };
    let limit = params.int("limit", 1..=MAX_LISTED, Some(50))?;
    let queues = queues(&state)?;
    let jobs = queues
        .jobs(
            queue.as_str(),
            job_state,
            usize::try_from(limit).unwrap_or(50),
        )
        .await?;
    Ok(Json(JobList {
        queue: queue.as_str().to_owned(),
        state: job_state.as_str().to_owned(),
        jobs: jobs.into_iter().map(|job| view(queue, job)).collect(),
    }))
}

/// One job: its state, payload, progress and attempt history.
#[utoipa::path(get, path = "/api/queue/{queue}/jobs/{id}", tag = "admin",
    security(("admin_token" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such queue or job (or it was removed by retention)",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn job(
    State(state): State<AppState>,
    Path(JobPath { queue, id }): Path<JobPath>,
) -> Result<Json<JobView>, Problem> {
    let queue = queue_named(&queue)?;
    let id = job_id(&id)?;
    let found = queues(&state)?.job(queue.as_str(), &id).await?;
    found
        .map(|job| Json(view(queue, job)))
        .ok_or_else(|| Problem::not_found(format!("there is no job {id} in {queue}")))
}

/// Cancels a job: a waiting or delayed one is removed; a running one's
/// handler is told to stop.
#[utoipa::path(delete, path = "/api/queue/{queue}/jobs/{id}", tag = "admin",
    security(("admin_token" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The job was waiting or delayed and is gone", body = CancelOutcome),
        (status = 202, description = "The job is running; its handler is told to stop", body = CancelOutcome),
        (status = 404, description = "No such queue or job",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has finished; nothing changed",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn cancel(
    State(state): State<AppState>,
    Path(JobPath { queue, id }): Path<JobPath>,
) -> Result<(StatusCode, Json<CancelOutcome>), Problem> {
    let queue = queue_named(&queue)?;
    let id = job_id(&id)?;
    let outcome = queues(&state)?.cancel(queue.as_str(), &id).await?;
    let (status, outcome) = match outcome {
        Cancelled::Removed => (StatusCode::OK, "cancelled"),
        Cancelled::Requested => (StatusCode::ACCEPTED, "requested"),
        Cancelled::AlreadyFinished(finished) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                format!("job {id} is {finished}; there is nothing to cancel"),
            ));
        }
        Cancelled::NotFound => {
            return Err(Problem::not_found(format!(
                "there is no job {id} in {queue}"
            )));
        }
    };
    tracing::info!(%queue, %id, %outcome, "job cancellation");
    Ok((
        status,
        Json(CancelOutcome {
            queue: queue.as_str().to_owned(),
            id: id.to_string(),
            outcome: outcome.to_owned(),
        }),
    ))
}

/// Sends a dead job back to waiting, its failures reset.
#[utoipa::path(post, path = "/api/queue/{queue}/jobs/{id}/retry", tag = "admin",
    security(("admin_token" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "Retried", body = Affected),
        (status = 404, description = "No such queue or job",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not dead",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn retry_one(
    State(state): State<AppState>,
    Path(JobPath { queue, id }): Path<JobPath>,
) -> Result<Json<Affected>, Problem> {
    let queue = queue_named(&queue)?;
    let id = job_id(&id)?;
    let queues = queues(&state)?;
    if queues.retry_dead(queue.as_str(), &id).await? {
        tracing::info!(%queue, %id, "dead job retried");
        return Ok(Json(Affected {
            queue: queue.as_str().to_owned(),
            count: 1,
        }));
    }
    match queues.job(queue.as_str(), &id).await? {
        Some(job) => Err(Problem::new(
            StatusCode::CONFLICT,
            format!("job {id} is {}, not dead", job.state),
        )),
        None => Err(Problem::not_found(format!(
            "there is no job {id} in {queue}"
        ))),
    }
}

/// Sends every dead job of the queue back to waiting.
#[utoipa::path(post, path = "/api/queue/{queue}/retry", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "How many were retried", body = Affected),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn retry_all(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Json<Affected>, Problem> {
    let queue = queue_named(&queue)?;
    let count = queues(&state)?.retry_all_dead(queue.as_str()).await?;
    tracing::info!(%queue, count, "dead jobs retried");
    Ok(Json(Affected {
        queue: queue.as_str().to_owned(),
        count,
    }))
}

/// Stops workers from starting the queue's jobs; running ones finish and
/// producers may still enqueue.
#[utoipa::path(post, path = "/api/queue/{queue}/pause", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "The queue, paused", body = QueueRow),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn pause(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Json<QueueRow>, Problem> {
    set_paused(&state, &queue, true).await
}

/// Lets workers start the queue's jobs again.
#[utoipa::path(post, path = "/api/queue/{queue}/resume", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "The queue, running", body = QueueRow),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn resume(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Json<QueueRow>, Problem> {
    set_paused(&state, &queue, false).await
}

async fn set_paused(
    state: &AppState,
    queue: &str,
    paused: bool,
) -> Result<Json<QueueRow>, Problem> {
    let queue = queue_named(queue)?;
    let queues = queues(state)?;
    let name = queue.as_str();
    if paused {
        queues.pause(name).await?;
    } else {
        queues.resume(name).await?;
    }
    tracing::info!(%queue, paused, "queue paused or resumed");
    let counts = queues.counts(name).await?;
    Ok(Json(row(state, queue, &counts)))
}

/// Removes finished jobs of one state: those finished at least
/// `older_than` ago, always keeping the newest `keep`.
#[utoipa::path(post, path = "/api/queue/{queue}/clean", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    request_body(content = CleanRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many were removed", body = Affected),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON or a field is wrong",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn clean(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    body: Result<Json<CleanRequest>, Problem>,
) -> Result<Json<Affected>, Problem> {
    let queue = queue_named(&queue)?;
    let Json(request) = body?;
    let finished = match request.state {
        FinishedState::Completed => Finished::Completed,
        FinishedState::Dead => Finished::Dead,
    };
    let older_than = request.older_than_seconds.unwrap_or(0);
    let older_than = u64::try_from(older_than)
        .ok()
        .filter(|seconds| *seconds <= MAX_AGE_SECONDS)
        .ok_or_else(|| {
            Problem::invalid_field(
                "older_than_seconds",
                format!("must be 0 to {MAX_AGE_SECONDS} (a year)"),
            )
        })?;
    let keep = request.keep.unwrap_or(0);
    let keep = u64::try_from(keep)
        .ok()
        .filter(|keep| *keep <= MAX_KEEP)
        .ok_or_else(|| Problem::invalid_field("keep", format!("must be 0 to {MAX_KEEP}")))?;
    let older_than = Duration::from_secs(older_than);
    let count = queues(&state)?
        .clean(queue.as_str(), finished, older_than, keep)
        .await?;
    tracing::info!(%queue, state = ?request.state, count, "finished jobs cleaned");
    Ok(Json(Affected {
        queue: queue.as_str().to_owned(),
        count,
    }))
}

/// The queue's schedulers of recurring jobs, with their next runs.
#[utoipa::path(get, path = "/api/queue/{queue}/schedulers", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "The schedulers", body = SchedulerList),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn schedulers(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Json<SchedulerList>, Problem> {
    let queue = queue_named(&queue)?;
    let listed = queues(&state)?.schedulers(queue.as_str()).await?;
    Ok(Json(SchedulerList {
        queue: queue.as_str().to_owned(),
        schedulers: listed
            .into_iter()
            .map(|info| scheduler_view(queue, info))
            .collect(),
    }))
}

/// Pauses a scheduler: its ticks make no job until it is resumed. It stays
/// paused when the processes that keep it restart.
#[utoipa::path(post, path = "/api/queue/{queue}/schedulers/{id}/pause", tag = "admin",
    security(("admin_token" = [])),
    params(SchedulerPath),
    responses(
        (status = 200, description = "The scheduler, paused", body = SchedulerView),
        (status = 404, description = "No such queue or scheduler",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn pause_scheduler(
    State(state): State<AppState>,
    Path(SchedulerPath { queue, id }): Path<SchedulerPath>,
) -> Result<Json<SchedulerView>, Problem> {
    set_scheduler_paused(&state, &queue, &id, true).await
}

/// Resumes a paused scheduler, from its first tick after now: the ticks
/// that passed while it was paused make no job.
#[utoipa::path(post, path = "/api/queue/{queue}/schedulers/{id}/resume", tag = "admin",
    security(("admin_token" = [])),
    params(SchedulerPath),
    responses(
        (status = 200, description = "The scheduler, running", body = SchedulerView),
        (status = 404, description = "No such queue or scheduler",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn resume_scheduler(
    State(state): State<AppState>,
    Path(SchedulerPath { queue, id }): Path<SchedulerPath>,
) -> Result<Json<SchedulerView>, Problem> {
    set_scheduler_paused(&state, &queue, &id, false).await
}

async fn set_scheduler_paused(
    state: &AppState,
    queue: &str,
    id: &str,
    paused: bool,
) -> Result<Json<SchedulerView>, Problem> {
    let queue = queue_named(queue)?;
    let queues = queues(state)?;
    let name = queue.as_str();
    let changed = if paused {
        queues.pause_scheduler(name, id).await
    } else {
        queues.resume_scheduler(name, id).await
    };
    let found = match changed {
        Ok(found) => found,
        // The queue's name is known good: an id that cannot be one names
        // no scheduler.
        Err(seawall_queue::Error::InvalidName(_)) => false,
        Err(error) => return Err(error.into()),
    };
    if !found {
        return Err(problem::queue::no_scheduler(name, id));
    }
    tracing::info!(%queue, scheduler = id, paused, "scheduler paused or resumed");
    // Removed in between: gone all the same.
    let info = queues
        .scheduler(name, id)
        .await?
        .ok_or_else(|| problem::queue::no_scheduler(name, id))?;
    Ok(Json(scheduler_view(queue, info)))
}
