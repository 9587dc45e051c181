//! The queue's numbers in seawall-perfmon: wait time, run time and outcomes
//! per queue, depth per state, the oldest waiting job's age, and whether the
//! queue is paused.

use std::time::Duration;

use seawall_perfmon::{Counter, DEFAULT_BUCKETS, Gauge, Histogram, Monitor};

use crate::error::{Error, Result};
use crate::job::{Backlog, Counts};
use crate::store::AfterFailure;

/// The wait and run histograms' buckets past the default ones (which end at
/// 10 s), in seconds.
const LONG_BUCKETS_S: [u64; 5] = [30, 60, 300, 900, 3_600];

/// One queue's metrics in a [`Monitor`]:
///
/// - `queue_job_wait_seconds{queue}`: from ready to started, a histogram
///   whose buckets go on past the default 10 s to 30 s, 1, 5 and 15 min and
///   1 h;
/// - `queue_job_run_seconds{queue}`: the handler's run time, in the same
///   buckets;
/// - `queue_jobs_total{queue,outcome}`: `completed`, `retried`, `dead`,
///   `cancelled`, `discarded` (a result refused because the lease was
///   lost), `requeued` (given back at shutdown), `refused` (an
///   acknowledgement the queue refused as malformed and the worker
///   dropped: the job runs again when its lease runs out);
/// - `queue_depth{queue,state}`: jobs per state, set by
///   [`record_depth`](QueueMetrics::record_depth) and
///   [`record_backlog`](QueueMetrics::record_backlog);
/// - `queue_paused{queue}`: 1 while the queue is paused, else 0, set by
///   both too;
/// - `queue_oldest_waiting_age_seconds{queue}`: how long the oldest job at
///   the head of a line has waited (see [`Backlog::oldest_waiting`]), 0
///   when none waits, set by [`record_backlog`](QueueMetrics::record_backlog)
///   only.
///
/// The gauges are exported, at 0, from [`register`](QueueMetrics::register)
/// on.
#[derive(Clone)]
pub struct QueueMetrics {
    wait: Histogram,
    run: Histogram,
    completed: Counter,
    retried: Counter,
    dead: Counter,
    cancelled: Counter,
    discarded: Counter,
    requeued: Counter,
    refused: Counter,
    depth: [Gauge; 5],
    paused: Gauge,
    oldest_waiting: Gauge,
}

impl std::fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMetrics").finish_non_exhaustive()
    }
}

impl QueueMetrics {
    /// Registers (or finds) the metrics of `queue` in `monitor`.
    pub fn register(monitor: &Monitor, queue: &str) -> Result<Self> {
        let perfmon = |error: seawall_perfmon::Error| Error::InvalidSetting(error.to_string());
        // A job can wait, or run, for minutes: the default buckets, then up
        // to an hour (the monitor's highest trackable value by default).
        let mut buckets = DEFAULT_BUCKETS.to_vec();
        buckets.extend(LONG_BUCKETS_S.map(Duration::from_secs));
        buckets.retain(|bound| *bound <= monitor.highest_trackable());
        let wait = monitor
            .histogram_with_buckets(
                "queue_job_wait_seconds",
                "Time from ready to started.",
                &["queue"],
                &buckets,
            )
            .and_then(|family| family.with_labels(&[queue]))
            .map_err(perfmon)?;
        let run = monitor
            .histogram_with_buckets(
                "queue_job_run_seconds",
                "Handler run time.",
                &["queue"],
                &buckets,
            )
            .and_then(|family| family.with_labels(&[queue]))
            .map_err(perfmon)?;
        let jobs = monitor
            .counter("queue_jobs", "Jobs by outcome.", &["queue", "outcome"])
            .map_err(perfmon)?;
        let outcome = |name: &str| jobs.with_labels(&[queue, name]).map_err(perfmon);
        let states = monitor
            .gauge("queue_depth", "Jobs in each state.", &["queue", "state"])
            .map_err(perfmon)?;
        let state = |name: &str| states.with_labels(&[queue, name]).map_err(perfmon);
        let paused = monitor
            .gauge("queue_paused", "1 while the queue is paused.", &["queue"])
            .and_then(|family| family.with_labels(&[queue]))
            .map_err(perfmon)?;
        let oldest_waiting = monitor
            .gauge(
                "queue_oldest_waiting_age_seconds",
                "How long the oldest job at the head of a line has waited; 0 when none waits.",
                &["queue"],
            )
            .and_then(|family| family.with_labels(&[queue]))
            .map_err(perfmon)?;
        Ok(Self {
            wait,
            run,
            completed: outcome("completed")?,
            retried: outcome("retried")?,
            dead: outcome("dead")?,
            cancelled: outcome("cancelled")?,
            discarded: outcome("discarded")?,
            requeued: outcome("requeued")?,
            refused: outcome("refused")?,
            depth: [
                state("waiting")?,
                state("delayed")?,
                state("active")?,
                state("completed")?,
                state("dead")?,
            ],
            paused,
            oldest_waiting,
        })
    }

    pub(crate) fn waited(&self, waited: Duration) {
        self.wait.record(waited);
    }

    pub(crate) fn ran(&self, ran: Duration) {
        self.run.record(ran);
    }

    pub(crate) fn completed(&self, jobs: u64) {
        self.completed.inc_by(jobs);
    }

    pub(crate) fn discarded(&self, jobs: u64) {
        self.discarded.inc_by(jobs);
    }

    pub(crate) fn refused(&self, acks: u64) {
        self.refused.inc_by(acks);
    }

    pub(crate) fn failed(&self, after: AfterFailure, requeued: bool) {
        match after {
            AfterFailure::Waiting if requeued => self.requeued.inc(),
            AfterFailure::Lost => self.discarded.inc(),
            AfterFailure::Cancelled => self.cancelled.inc(),
            AfterFailure::Dead => self.dead.inc(),
            AfterFailure::Waiting | AfterFailure::Delayed => self.retried.inc(),
        }
    }

    /// Sets the depth gauges and `queue_paused` from `counts` (call it with
    /// [`Queues::counts`](crate::Queues::counts) every few seconds, or call
    /// [`record_backlog`](Self::record_backlog) instead).
    pub fn record_depth(&self, counts: &Counts) {
        let values = [
            counts.waiting,
            counts.delayed,
            counts.active,
            counts.completed,
            counts.dead,
        ];
        for (gauge, value) in self.depth.iter().zip(values) {
            // Gauges are f64; queue depths stay far below 2^53.
            #[allow(clippy::cast_precision_loss)]
            gauge.set(value as f64);
        }
        self.paused.set(if counts.paused { 1.0 } else { 0.0 });
    }

    /// Sets what [`record_depth`](Self::record_depth) sets and the oldest
    /// waiting job's age from `backlog` (call it with
    /// [`Queues::backlog`](crate::Queues::backlog) every few seconds: one
    /// round trip for both).
    pub fn record_backlog(&self, backlog: &Backlog) {
        self.record_depth(&backlog.counts);
        let age = backlog.oldest_waiting.unwrap_or_default();
        self.oldest_waiting.set(age.as_secs_f64());
    }
}
