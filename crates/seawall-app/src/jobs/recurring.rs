//! The recurring jobs the configuration names: a backup, a refresh of the
//! last day's statistics and a learner's report over the last day
//! (`queue.nightly_backup`, `queue.hourly_analytics`, `queue.daily_report`).
//!
//! Each is a scheduler of its queue, kept with the queue in its backend.
//! Every process that runs the processors keeps them: when it starts, it
//! upserts the configured schedulers (one unchanged is left as it is,
//! paused or not) and removes those configured `off`, then runs the
//! schedulers of the three queues. However many processes run them, each
//! tick is enqueued once. Redis may not answer yet when a worker starts: the
//! upserts are tried again, a little later each time, until they are done.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use super::payload::{AnalyticsJob, BackupJob, ReportJob};
use crate::config::{QueueConfig, QueueName, Recurring};
use seawall_queue::{Queues, SchedulerRunner, SchedulerStats};

/// The scheduler of the backup, on the `backup` queue.
pub const NIGHTLY_BACKUP: &str = "nightly-backup";
/// The scheduler of the statistics' refresh, on the `analytics` queue.
pub const HOURLY_ANALYTICS: &str = "hourly-analytics";
/// The scheduler of the learner's report, on the `report` queue.
pub const DAILY_REPORT: &str = "daily-report";

/// The queues of the recurring jobs, whose schedulers a process that runs
/// the processors runs.
pub const QUEUES: [QueueName; 3] = [QueueName::Backup, QueueName::Analytics, QueueName::Report];

/// The first wait before the upserts are tried again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two tries.
const RETRY_MOST: Duration = Duration::from_secs(5);

/// The job a recurring job's ticks enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RecurringJob {
    /// A backup.
    Backup(BackupJob),
    /// A refresh of the daily statistics.
    Analytics(AnalyticsJob),
    /// A learner's report.
    Report(ReportJob),
}

/// One recurring job as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    /// Its queue.
    pub queue: QueueName,
    /// Its scheduler's id in that queue.
    pub id: &'static str,
    /// When it runs.
    pub recurring: Recurring,
    /// The job each tick enqueues.
    pub job: RecurringJob,
}

/// The recurring jobs `config` names, each on or `off`.
pub fn configured(config: &QueueConfig) -> [Recurrence; 3] {
    [
        Recurrence {
            queue: QueueName::Backup,
            id: NIGHTLY_BACKUP,
            recurring: config.nightly_backup.clone(),
            job: RecurringJob::Backup(BackupJob {}),
        },
        Recurrence {
            queue: QueueName::Analytics,
            id: HOURLY_ANALYTICS,
            recurring: config.hourly_analytics.clone(),
            job: RecurringJob::Analytics(AnalyticsJob { days: 1 }),
        },
        Recurrence {
            queue: QueueName::Report,
            id: DAILY_REPORT,
            recurring: config.daily_report.clone(),
            job: RecurringJob::Report(ReportJob {
                user_id: config.daily_report_user,
                days: 1,
            }),
        },
    ]
}

/// The recurring jobs' schedulers as one process keeps them: the task that
/// upserts them, then runs them until [`Schedulers::shutdown`].
pub(crate) struct Schedulers {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<(QueueName, SchedulerStats)>>,
    failures: Arc<AtomicU32>,
}

impl Schedulers {
    /// Starts keeping the schedulers `config` names, in a task of the
    /// current runtime.
    pub(crate) fn start(queues: &Queues, config: &QueueConfig) -> Self {
        let (stop, stopped) = oneshot::channel();
        let failures = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(keep(
            queues.clone(),
            config.clone(),
            stopped,
            Arc::clone(&failures),
        ));
        Self {
            stop,
            task,
            failures,
        }
    }

    /// How many times the upserts failed and were tried again.
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Stops running the schedulers (after the look in progress, if any)
    /// and answers what each queue's runner did; empty when the upserts
    /// never succeeded.
    pub(crate) async fn shutdown(self) -> Vec<(QueueName, SchedulerStats)> {
        // The task is gone only if it panicked; its error says so below.
        let _ = self.stop.send(());
        match self.task.await {
            Ok(stats) => stats,
            Err(error) => {
                tracing::error!(%error, "the recurring jobs' task ended abnormally");
                Vec::new()
            }
        }
    }
}

/// Upserts the schedulers until the backend takes them, then runs them
/// until `stopped`.
async fn keep(
    queues: Queues,
    config: QueueConfig,
    mut stopped: oneshot::Receiver<()>,
    failures: Arc<AtomicU32>,
) -> Vec<(QueueName, SchedulerStats)> {
    let recurrences = configured(&config);
    let mut wait = RETRY_FIRST;
    while let Err(error) = apply(&queues, &config, &recurrences).await {
        failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            %error,
            retry_in = ?wait,
            "the recurring jobs' schedulers could not be kept; trying again"
        );
        tokio::select! {
            _ = &mut stopped => return Vec::new(),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MOST);
    }
    let mut runners: Vec<(QueueName, SchedulerRunner)> = Vec::with_capacity(QUEUES.len());
    for queue in QUEUES {
        match queues.run_schedulers(queue.as_str()) {
            Ok(runner) => runners.push((queue, runner)),
            // The queue names are the application's own, which the queue
            // takes.
            Err(error) => tracing::error!(%error, %queue, "the queue's schedulers do not run"),
        }
    }
    // A dropped sender stops the runners as well.
    let _ = stopped.await;
    let stopping = runners
        .into_iter()
        .map(|(queue, runner)| async move { (queue, runner.shutdown().await) });
    futures_util::future::join_all(stopping).await
}

/// Upserts each scheduler that is on and removes each one that is `off`.
/// A backend that fails is the caller's to try again; a scheduler the
/// queue refuses (a queue at its most schedulers, or a scheduler another
/// release stored in a form this one refuses) is logged and left as it
/// was, and the others are kept.
async fn apply(
    queues: &Queues,
    config: &QueueConfig,
    recurrences: &[Recurrence],
) -> Result<(), seawall_queue::Error> {
    for recurrence in recurrences {
        let (queue, id) = (recurrence.queue.as_str(), recurrence.id);
        let done = match recurrence.recurring.schedule() {
            Ok(Some(schedule)) => {
                let options = config.policy(recurrence.queue).job_options();
                queues
                    .upsert_scheduler(queue, id, &schedule, &recurrence.job, &options)
                    .await
            }
            Ok(None) => queues.remove_scheduler(queue, id).await.map(|_| ()),
            Err(error) => Err(error),
        };
        match done {
            Ok(()) => {
                tracing::info!(queue, scheduler = id, schedule = %recurrence.recurring, "recurring job kept");
            }
            // A refusal (a queue at its most schedulers, say) would be
            // refused again: it is logged below, not tried for ever.
            Err(
                error @ (seawall_queue::Error::Redis(_)
                | seawall_queue::Error::PoolTimeout(_)
                | seawall_queue::Error::Unavailable { .. }),
            ) if !error.is_refusal() => return Err(error),
            Err(error) => {
                tracing::error!(%error, queue, scheduler = id, "a recurring job's scheduler was refused; it is left as it was");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use seawall_testkit::{RedisServer, wait};

    use super::*;
    use crate::config::RedisConfig;

    /// Waits until `queue` holds its one recurring job's scheduler.
    async fn until_kept(queues: &Queues, queue: QueueName) {
        wait::until_async(format!("the {queue} queue's scheduler"), async || {
            queues
                .schedulers(queue.as_str())
                .await
                .is_ok_and(|schedulers| schedulers.len() == 1)
        })
        .await;
    }

    /// Redis that does not answer when the process starts: the upserts
    /// fail, are tried again, and the schedulers are kept once it answers;
    /// then they run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_schedulers_are_kept_once_redis_answers() {
        let mut server = RedisServer::start().expect("redis-server starts");
        let builder = crate::redis::builder(&RedisConfig::default(), &server.url()).expect("valid");
        let queues = Queues::redis(builder).connect().await.expect("connects");
        server.kill().expect("SIGKILL");
        let config = QueueConfig {
            hourly_analytics: Recurring::parse("every 1s").expect("valid"),
            ..QueueConfig::default()
        };
        let keeper = Schedulers::start(&queues, &config);
        wait::until_async("a failed upsert", async || keeper.failures() > 0).await;
        server.restart().expect("restarts");
        for queue in QUEUES {
            until_kept(&queues, queue).await;
        }
        wait::until_async("a tick of the statistics' refresh", async || {
            queues
                .counts("analytics")
                .await
                .is_ok_and(|counts| counts.waiting > 0)
        })
        .await;
        let stats = keeper.shutdown().await;
        let analytics = stats
            .iter()
            .find(|(queue, _)| *queue == QueueName::Analytics)
            .map(|(_, stats)| stats.enqueued);
        assert!(analytics.is_some_and(|enqueued| enqueued >= 1), "{stats:?}");
    }

    /// A scheduler the queue refuses (here the statistics' queue holds the
    /// most schedulers it may) is logged and left, not tried for ever: the
    /// other recurring jobs are kept, and nothing is retried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_scheduler_is_not_tried_for_ever() {
        let server = RedisServer::start().expect("redis-server starts");
        let mut conn = server.connect().expect("connects");
        let mut full = vec!["ZADD".to_owned(), "seawall:{analytics}:sids".to_owned()];
        for n in 0..seawall_queue::MAX_SCHEDULERS {
            full.extend(["0".to_owned(), format!("other-{n}")]);
        }
        conn.cmd(&full).expect("ZADD");
        let builder = crate::redis::builder(&RedisConfig::default(), &server.url()).expect("valid");
        let queues = Queues::redis(builder).connect().await.expect("connects");
        let keeper = Schedulers::start(&queues, &QueueConfig::default());
        for queue in [QueueName::Backup, QueueName::Report] {
            until_kept(&queues, queue).await;
        }
        assert_eq!(keeper.failures(), 0, "a refusal was tried again");
        keeper.shutdown().await;
    }
}
