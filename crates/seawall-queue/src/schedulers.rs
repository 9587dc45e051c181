//! Recurring jobs: schedulers kept with a queue, and the loop that enqueues
//! their ticks.
//!
//! A scheduler is kept in the backend beside its queue (its schedule, the
//! template of its jobs, and its next tick), so every process sees the same
//! schedulers and any number of them may run the loop. Each tick makes at
//! most one job: a tick is enqueued by one atomic step that finds the
//! scheduler still planned for that tick and plans the next one, so a
//! process that races another, or a call replayed after a reconnection,
//! enqueues nothing more. On Redis the step is the enqueue script itself:
//! a failover that loses the tick's job loses the plan's move too, so the
//! new primary's tick is enqueued again, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::{JobId, time_of};
use crate::options::JobOptions;
use crate::queues::{Queues, new_job};
use crate::schedule::{NEVER_MS, Schedule};
use crate::store::{NewJob, StoredScheduler, TickGuard, check_name, random_id};

/// The most schedulers one look at a queue's due schedulers takes.
const DUE_BATCH: usize = 1_000;
/// Ticks enqueued at once by one runner.
const IN_FLIGHT: usize = 32;
/// The longest a runner waits before it looks again: how soon it sees a
/// scheduler another process added or changed.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A scheduler as [`Queues::schedulers`] lists it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerInfo {
    /// Its id, unique in its queue.
    pub id: String,
    /// When it ticks.
    pub schedule: Schedule,
    /// The payload of its jobs, as JSON.
    pub payload: Vec<u8>,
    /// The priority of its jobs.
    pub priority: u8,
    /// The group of its jobs.
    pub group: Option<String>,
    /// Whether it is paused (its ticks make no job).
    pub paused: bool,
    /// When its next tick is due; `None` until a runner planned it (a new,
    /// changed or resumed scheduler), or while it is paused.
    pub next_run: Option<SystemTime>,
    /// Its last tick that made a job, and that job.
    pub last_run: Option<(SystemTime, JobId)>,
    /// Bumped by every change to it.
    pub revision: u64,
}

impl SchedulerInfo {
    /// The next `count` ticks: from the planned one, or after now when
    /// none is planned yet.
    pub fn next_runs(&self, count: usize) -> Vec<SystemTime> {
        match self.next_run {
            Some(next) if count > 0 => {
                let mut runs = vec![next];
                runs.extend(self.schedule.next_runs(next, count - 1));
                runs
            }
            _ => self.schedule.next_runs(SystemTime::now(), count),
        }
    }

    fn read(stored: StoredScheduler) -> Result<Self> {
        let schedule = Schedule::decode(&stored.schedule)?;
        let template = Template::decode(&stored.template)?;
        Ok(Self {
            id: stored.id,
            schedule,
            payload: template.payload.into_bytes(),
            priority: template.priority,
            group: Some(template.group).filter(|group| !group.is_empty()),
            paused: stored.paused,
            next_run: (stored.next_ms > 0
                && !stored.paused
                && stored.next_ms < crate::schedule::NEVER_MS)
                .then(|| time_of(stored.next_ms)),
            last_run: stored.last.map(|(tick, job)| (time_of(tick), job)),
            revision: stored.revision,
        })
    }
}

/// The job a scheduler's tick makes, as stored with the scheduler.
#[derive(Debug, Serialize, Deserialize)]
struct Template {
    payload: String,
    priority: u8,
    attempts: u32,
    backoff: String,
    timeout_ms: u64,
    group: String,
    delay_ms: u64,
}

impl Template {
    fn new(job: NewJob) -> Result<Self> {
        Ok(Self {
            payload: String::from_utf8(job.payload).map_err(|_| {
                Error::Protocol("a payload encoded as JSON is not UTF-8".to_owned())
            })?,
            priority: job.priority,
            attempts: job.max_attempts,
            backoff: job.backoff,
            timeout_ms: job.timeout_ms,
            group: job.group,
            delay_ms: job.delay_ms,
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|error| Error::Protocol(format!("a scheduler's template: {error}")))
    }

    fn job(&self) -> NewJob {
        NewJob {
            payload: self.payload.clone().into_bytes(),
            priority: self.priority,
            max_attempts: self.attempts,
            backoff: self.backoff.clone(),
            timeout_ms: self.timeout_ms,
            group: self.group.clone(),
            delay_ms: self.delay_ms,
            idempotency: None,
            trace: String::new(),
        }
    }
}

/// What one look at a queue's due schedulers did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickReport {
    /// Jobs enqueued for ticks.
    pub enqueued: u64,
    /// Ticks another process enqueued first, or that a change to their
    /// scheduler made void: nothing was enqueued for them here.
    pub raced: u64,
    /// When the next tick not yet looked at is due, as far as the backend
    /// knows now.
    pub next_due: Option<SystemTime>,
    /// How long until then by the backend's clock (zero when more are due
    /// now): how long to wait before looking again, whatever this
    /// process's clock says.
    pub next_due_in: Option<Duration>,
}

impl Queues {
    /// Adds a scheduler to `queue`, or changes the one with this `id`: at
    /// each tick of `schedule` (from the first after now), a job with
    /// `payload` and `options` is enqueued, as long as some process runs
    /// [`Queues::run_schedulers`] for the queue.
    ///
    /// Changing a scheduler takes effect at its next tick: a new schedule
    /// drops the tick planned by the old one and starts from its own first
    /// tick after the change; a new payload or options alone keep the
    /// planned tick. Upserting a scheduler unchanged (as every process may
    /// do when it starts) changes nothing. An idempotency key is refused in
    /// `options`: each tick is already enqueued once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_queue::{JobOptions, Queues, Schedule};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// let nightly = Schedule::cron("0 3 * * *", "Europe/Berlin")?;
    /// queues
    ///     .upsert_scheduler("maintenance", "backup", &nightly, &"full", &JobOptions::new())
    ///     .await?;
    /// let schedulers = queues.schedulers("maintenance").await?;
    /// assert_eq!(schedulers[0].id, "backup");
    /// assert_eq!(schedulers[0].next_runs(3).len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upsert_scheduler<T: Serialize + ?Sized>(
        &self,
        queue: &str,
        id: &str,
        schedule: &Schedule,
        payload: &T,
        options: &JobOptions,
    ) -> Result<()> {
        check_name("queue name", queue)?;
        check_name("scheduler id", id)?;
        if options.deduplication().is_some() {
            return Err(Error::InvalidOption(
                "a scheduler's jobs take no idempotency, unique or debounce key: each tick is enqueued once".to_owned(),
            ));
        }
        let template = Template::new(new_job(payload, options, String::new())?)?;
        let template = serde_json::to_vec(&template).map_err(Error::Encode)?;
        self.store()
            .upsert_scheduler(queue, id, &schedule.encode(), &template)
            .await?;
        Ok(())
    }

    /// Removes a scheduler; its planned tick makes no job. Whether there
    /// was one.
    pub async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        check_name("queue name", queue)?;
        check_name("scheduler id", id)?;
        self.store().remove_scheduler(queue, id).await
    }

    /// Pauses a scheduler: its ticks make no job until it is resumed.
    /// Whether there is one.
    pub async fn pause_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        check_name("queue name", queue)?;
        check_name("scheduler id", id)?;
        self.store().pause_scheduler(queue, id, true).await
    }

    /// Resumes a paused scheduler from its first tick after now: the ticks
    /// that passed while it was paused make no job. Whether there is one.
    pub async fn resume_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        check_name("queue name", queue)?;
        check_name("scheduler id", id)?;
        self.store().pause_scheduler(queue, id, false).await
    }

    /// One scheduler of `queue`.
    pub async fn scheduler(&self, queue: &str, id: &str) -> Result<Option<SchedulerInfo>> {
        check_name("queue name", queue)?;
        if check_name("scheduler id", id).is_err() {
            return Ok(None);
        }
        self.store()
            .scheduler(queue, id)
            .await?
            .map(SchedulerInfo::read)
            .transpose()
    }

    /// The schedulers of `queue`, in the order of their ids, at most
    /// [`MAX_LISTED`](crate::MAX_LISTED).
    pub async fn schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        check_name("queue name", queue)?;
        self.store()
            .schedulers(queue, "", crate::queues::MAX_LISTED)
            .await?
            .into_iter()
            .map(SchedulerInfo::read)
            .collect()
    }

    /// Looks once at `queue`'s schedulers and enqueues the ticks that are
    /// due: what [`Queues::run_schedulers`] does in a loop, for a caller
    /// that drives it itself.
    pub async fn tick_schedulers(&self, queue: &str) -> Result<TickReport> {
        check_name("queue name", queue)?;
        let found = self.store().due_schedulers(queue, DUE_BATCH).await?;
        let wire = self.wire_version().await;
        let now_ms = found.now_ms;
        let full = found.due.len() >= DUE_BATCH;
        let outcomes: Vec<Result<(Option<u64>, u64)>> = futures_util::stream::iter(found.due)
            .map(|stored| self.tick_one(queue, stored, now_ms, wire))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        // The soonest of the schedulers not looked at and of the ticks just
        // planned; now, when more are due than one look takes.
        let planned = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .map(|(_, next_ms)| *next_ms)
            .filter(|next_ms| *next_ms < NEVER_MS)
            .min();
        let next_due_ms = if full {
            Some(now_ms)
        } else {
            found.next_due_ms.into_iter().chain(planned).min()
        };
        let mut report = TickReport {
            next_due: next_due_ms.map(time_of),
            next_due_in: next_due_ms.map(|due| Duration::from_millis(due.saturating_sub(now_ms))),
            ..TickReport::default()
        };
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Ok((Some(enqueued), _)) => report.enqueued += enqueued,
                Ok((None, _)) => report.raced += 1,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if report.enqueued == 0 => Err(error),
            Some(error) => {
                tracing::warn!(%error, queue, "a scheduler's tick failed; it is tried again");
                Ok(report)
            }
            None => Ok(report),
        }
    }

    /// Enqueues what one due scheduler's ticks make and plans its next:
    /// the jobs enqueued, or `None` when the scheduler was no longer as
    /// found; and the next tick planned.
    async fn tick_one(
        &self,
        queue: &str,
        stored: StoredScheduler,
        now_ms: u64,
        wire: u32,
    ) -> Result<(Option<u64>, u64)> {
        let schedule = Schedule::decode(&stored.schedule)?;
        let plan = schedule.plan(stored.next_ms, now_ms);
        let jobs = if plan.ticks.is_empty() {
            Vec::new()
        } else {
            let template = Template::decode(&stored.template)?;
            plan.ticks.iter().map(|_| template.job()).collect()
        };
        let guard_next = plan.next_ms;
        let guard = TickGuard {
            scheduler: stored.id,
            revision: stored.revision,
            next_ms: stored.next_ms,
            new_next_ms: plan.next_ms,
            ticks: plan.ticks,
        };
        let added = self
            .store()
            .enqueue_ticks(queue, &random_id(), &guard, jobs, wire)
            .await?;
        Ok((added.map(|ids| ids.len() as u64), guard_next))
    }

    /// Runs `queue`'s schedulers in a task of the current Tokio runtime
    /// until [`SchedulerRunner::shutdown`]: it sleeps until the next tick
    /// is due, or at most a second (how soon it sees a scheduler another
    /// process added), enqueues the ticks that are due, and looks again.
    /// Any number of processes may run a queue's schedulers: each tick is
    /// enqueued once. A backend that fails is tried again a second later.
    pub fn run_schedulers(&self, queue: &str) -> Result<SchedulerRunner> {
        check_name("queue name", queue)?;
        let cancel = CancellationToken::new();
        let stats = Arc::new(Counters::default());
        let task = tokio::spawn(run(
            self.clone(),
            queue.to_owned(),
            cancel.clone(),
            Arc::clone(&stats),
        ));
        Ok(SchedulerRunner {
            cancel,
            stats,
            task: Some(task),
        })
    }
}

async fn run(queues: Queues, queue: String, cancel: CancellationToken, stats: Arc<Counters>) {
    // A backend that fails is logged once at warn, then at debug until it
    // answers again, which is logged at info.
    let mut failing = false;
    while !cancel.is_cancelled() {
        let wait = match queues.tick_schedulers(&queue).await {
            Ok(report) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(queue, "the due schedulers are read again");
                }
                stats.enqueued.fetch_add(report.enqueued, Ordering::Relaxed);
                stats.raced.fetch_add(report.raced, Ordering::Relaxed);
                // By the backend's clock: one ahead of this process's would
                // otherwise have it look again and again until then.
                report
                    .next_due_in
                    .map_or(LOOK_EVERY, |wait| wait.min(LOOK_EVERY))
            }
            Err(error) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if std::mem::replace(&mut failing, true) {
                    tracing::debug!(%error, queue, "looking at the due schedulers failed again");
                } else {
                    tracing::warn!(%error, queue,
                        "looking at the due schedulers failed; trying again every second");
                }
                LOOK_EVERY
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    enqueued: AtomicU64,
    raced: AtomicU64,
    failed: AtomicU64,
}

/// What a [`SchedulerRunner`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Jobs it enqueued for ticks.
    pub enqueued: u64,
    /// Ticks another process enqueued first, or that a change made void.
    pub raced: u64,
    /// Looks at the due schedulers that failed (and were tried again).
    pub failed: u64,
}

/// The loop of [`Queues::run_schedulers`]; dropping it stops the loop too.
#[derive(Debug)]
pub struct SchedulerRunner {
    cancel: CancellationToken,
    stats: Arc<Counters>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SchedulerRunner {
    /// What it did so far.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            enqueued: self.stats.enqueued.load(Ordering::Relaxed),
            raced: self.stats.raced.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops the loop, after the look in progress if any, and answers what
    /// it did.
    pub async fn shutdown(mut self) -> SchedulerStats {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::error!(%error, "a scheduler runner's task ended abnormally");
        }
        self.stats()
    }
}

impl Drop for SchedulerRunner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
