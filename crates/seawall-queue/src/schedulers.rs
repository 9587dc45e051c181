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

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::{JobId, time_of};
use crate::options::JobOptions;
use crate::queues::{Queues, new_job};
use crate::schedule::{NEVER_MS, Schedule};
use crate::store::{NewJob, StoredScheduler, TickGuard, TicksAdded, check_name, millis, random_id};

/// The most schedulers one look at a queue's due schedulers takes.
const DUE_BATCH: usize = 1_000;
/// Schedulers whose ticks one backend call enqueues.
const TICK_BATCH: usize = 100;
/// Backend calls in flight at once in one runner.
const IN_FLIGHT: usize = 4;
/// How far ahead of its tick a job is enqueued (delayed until the tick):
/// it is in the queue when due, however many schedulers tick at once, as
/// long as the runner keeps up within the lead.
pub(crate) const LEAD: Duration = Duration::from_secs(1);
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
    /// The job already enqueued for the next tick, delayed until then (a
    /// runner enqueues each tick's job up to a second ahead).
    pub next_job: Option<JobId>,
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
        // A tick whose job was enqueued ahead is the next run while it is
        // still to come.
        let now_ms = millis(
            SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let (ahead, last) = match stored.last {
            Some((tick, job)) if tick > now_ms => (Some((tick, job)), stored.previous),
            last => (None, last),
        };
        Ok(Self {
            id: stored.id,
            schedule,
            payload: template.payload.into_bytes(),
            priority: template.priority,
            group: Some(template.group).filter(|group| !group.is_empty()),
            paused: stored.paused,
            next_run: match &ahead {
                Some((tick, _)) => Some(time_of(*tick)),
                None => (stored.next_ms > 0
                    && !stored.paused
                    && stored.next_ms < crate::schedule::NEVER_MS)
                    .then(|| time_of(stored.next_ms)),
            },
            next_job: ahead.map(|(_, job)| job),
            last_run: last.map(|(tick, job)| (time_of(tick), job)),
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
            context: String::new(),
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
        if options.context_text().is_some() {
            return Err(Error::InvalidOption(
                "a scheduler's jobs carry no context".to_owned(),
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

    /// Resumes a paused scheduler from its first tick after now (the
    /// call's time, however late a runner looks at it): the ticks that
    /// passed while it was paused make no job. Whether there is one.
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
    /// [`MAX_LISTED`](crate::MAX_LISTED). One whose stored form this
    /// release cannot read (kept by a later release) is left out with a
    /// warning; [`Queues::scheduler`] answers its error.
    pub async fn schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        check_name("queue name", queue)?;
        let stored = self
            .store()
            .schedulers(queue, "", crate::queues::MAX_LISTED)
            .await?;
        let mut read = Vec::with_capacity(stored.len());
        for scheduler in stored {
            let id = scheduler.id.clone();
            match SchedulerInfo::read(scheduler) {
                Ok(info) => read.push(info),
                // One this release cannot read (kept by a later one, or
                // written by hand) leaves the others listed.
                Err(error) => {
                    tracing::warn!(%error, queue, scheduler = %id, "a scheduler cannot be read; it is left out of the listing");
                }
            }
        }
        Ok(read)
    }

    /// Looks once at `queue`'s schedulers and enqueues the ticks that are
    /// due: what [`Queues::run_schedulers`] does in a loop, for a caller
    /// that drives it itself.
    pub async fn tick_schedulers(&self, queue: &str) -> Result<TickReport> {
        self.tick_schedulers_within(queue, LEAD).await
    }

    /// [`Queues::tick_schedulers`] with another lead than its second: each
    /// scheduler's first tick within `lead` of now is enqueued too, as a
    /// job delayed until the tick (one tick to come at a time per
    /// scheduler). A longer lead leaves a runner more time to keep ahead of
    /// many schedulers ticking at once; a change to a scheduler cancels the
    /// job it enqueued ahead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_queue::{JobOptions, Queues, Schedule};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> seawall_queue::Result<()> {
    /// let queues = Queues::memory();
    /// let hourly = Schedule::every(Duration::from_secs(3600))?;
    /// queues
    ///     .upsert_scheduler("reports", "roll-up", &hourly, &"hour", &JobOptions::new())
    ///     .await?;
    /// let report = queues
    ///     .tick_schedulers_within("reports", Duration::from_secs(2 * 3600))
    ///     .await?;
    /// assert_eq!(report.enqueued, 1);
    /// assert_eq!(queues.counts("reports").await?.delayed, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn tick_schedulers_within(&self, queue: &str, lead: Duration) -> Result<TickReport> {
        check_name("queue name", queue)?;
        let lead_ms = millis(lead).min(crate::store::MAX_SETTING);
        let found = self.store().due_schedulers(queue, DUE_BATCH).await?;
        let wire = self.wire_version().await;
        let now_ms = found.now_ms;
        let full = found.due.len() >= DUE_BATCH;
        let mut first_error = None;
        let mut guards = Vec::with_capacity(found.due.len());
        for stored in found.due {
            match guard(stored, now_ms, lead_ms) {
                Ok(guard) => guards.push(guard),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        // The soonest of the schedulers not looked at and of those just
        // planned; now, when more are due than one look takes.
        let planned = guards
            .iter()
            .map(|guard| guard.due_ms)
            .filter(|due_ms| *due_ms < NEVER_MS)
            .min();
        // Up to IN_FLIGHT calls at once, each for up to TICK_BATCH
        // schedulers.
        let mut outcomes = Vec::with_capacity(guards.len().div_ceil(TICK_BATCH));
        for window in guards.chunks(TICK_BATCH * IN_FLIGHT) {
            let mut calls = Vec::with_capacity(IN_FLIGHT);
            for batch in window.chunks(TICK_BATCH) {
                calls.push(self.tick_batch(queue, batch, wire));
            }
            outcomes.extend(futures_util::future::join_all(calls).await);
        }
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
        for outcome in outcomes {
            match outcome {
                Ok(added) => {
                    for added in added {
                        match added {
                            Some(ids) => report.enqueued += ids.len() as u64,
                            None => report.raced += 1,
                        }
                    }
                }
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

    /// Enqueues the ticks of `batch`, one backend call; when the backend
    /// refuses the call's arguments (a scheduler stored by another release,
    /// say), one call per scheduler, so that the one at fault holds back
    /// only itself.
    async fn tick_batch(&self, queue: &str, batch: &[TickGuard], wire: u32) -> Result<TicksAdded> {
        let whole = self
            .store()
            .enqueue_ticks(queue, &random_id(), batch, wire)
            .await;
        match whole {
            Err(error) if error.is_refusal() && batch.len() > 1 => {
                tracing::warn!(%error, queue, "a look's call was refused; its schedulers are tried one by one");
                let mut added = Vec::with_capacity(batch.len());
                let mut refused = None;
                for guard in batch {
                    match self
                        .store()
                        .enqueue_ticks(queue, &random_id(), std::slice::from_ref(guard), wire)
                        .await
                    {
                        Ok(one) => added.extend(one),
                        Err(error) if error.is_refusal() => {
                            tracing::warn!(%error, queue, scheduler = %guard.scheduler, "a scheduler's tick was refused");
                            refused.get_or_insert(error);
                        }
                        Err(error) => return Err(error),
                    }
                }
                match refused {
                    Some(error) if added.is_empty() => Err(error),
                    _ => Ok(added),
                }
            }
            other => other,
        }
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

/// What one due scheduler's look makes: the ticks to enqueue (the one
/// within `lead_ms` among them, ahead), its next tick, and when to look at
/// it again, under the revision and plan it was found with.
fn guard(stored: StoredScheduler, now_ms: u64, lead_ms: u64) -> Result<TickGuard> {
    let schedule = Schedule::decode(&stored.schedule)?;
    // None planned (new, changed or resumed): from the first tick after the
    // change, not after this look, so the ticks between the two follow
    // the missed-ticks policy rather than being lost; and never a tick at
    // or before the last one that made a job.
    let start = match (stored.next_ms, stored.from_ms) {
        (0, 0) => 0,
        (0, from_ms) => {
            let made = stored.last.as_ref().map_or(0, |(tick, _)| *tick);
            schedule.after(from_ms.max(made))
        }
        (next_ms, _) => next_ms,
    };
    let plan = schedule.plan_ahead(start, now_ms, lead_ms);
    let template = Template::decode(&stored.template)?;
    Ok(TickGuard {
        scheduler: stored.id,
        revision: stored.revision,
        next_ms: stored.next_ms,
        new_next_ms: plan.next_ms,
        due_ms: plan.due_ms,
        ticks: plan.ticks,
        job: template.job(),
    })
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
