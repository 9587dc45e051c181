//! The queue's numbers in seawall-perfmon: wait time, run time and outcomes
//! per queue, depth per state, the oldest waiting job's age, whether the
//! queue is paused, and a forecast of its waiting jobs an hour ahead.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use seawall_perfmon::anomaly::Season;
use seawall_perfmon::forecast::{ForecastOptions, Forecaster};
use seawall_perfmon::{Counter, DEFAULT_BUCKETS, Gauge, Histogram, Monitor};

use crate::error::{Error, Result};
use crate::job::{Backlog, Counts};
use crate::store::AfterFailure;

/// The wait and run histograms' buckets past the default ones (which end at
/// 10 s), in seconds.
const LONG_BUCKETS_S: [u64; 5] = [30, 60, 300, 900, 3_600];
/// How far ahead the waiting jobs are forecast.
const FORECAST_AHEAD: Duration = Duration::from_secs(3600);
/// The forecaster takes one observation a minute: the mean of the minute's
/// readings (an hour ahead is then 60 of its steps).
const FORECAST_STEP_S: i64 = 60;

/// The waiting jobs a queue is meant to hold at most, until
/// [`QueueMetrics::set_backlog_bound`] says otherwise.
pub const DEFAULT_BACKLOG_BOUND: u64 = 10_000;

/// How far ahead `queue_backlog_runs_out_seconds` looks for the bound.
pub const BACKLOG_RUNS_OUT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// The forecast of one queue's waiting jobs: the minute being read, and the
/// forecaster that learns from each minute's mean.
struct WaitingForecast {
    forecaster: Forecaster,
    /// The minute being read (Unix seconds / 60), the sum of its readings
    /// and how many there were.
    minute: i64,
    sum: f64,
    readings: u32,
    /// The waiting jobs the queue is meant to hold at most.
    bound: u64,
}

impl WaitingForecast {
    /// Seconds until the forecast passes the bound, looked for within
    /// [`BACKLOG_RUNS_OUT_HORIZON`]: 0 once `waiting` is at it, infinite
    /// while the forecast stays under it (and while it learns).
    fn runs_out(&self, waiting: u64) -> f64 {
        if waiting >= self.bound {
            return 0.0;
        }
        // Bounds stay far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let bound = self.bound as f64;
        self.forecaster
            .passes(bound, BACKLOG_RUNS_OUT_HORIZON)
            .map_or(f64::INFINITY, |when| when.as_secs_f64())
    }
}

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
///   only;
/// - `queue_waiting_forecast{queue,bound}`: the waiting jobs forecast an
///   hour ahead (`bound="value"`) and its 90 % interval (`"low"`, `"high"`),
///   from [`record_backlog`](QueueMetrics::record_backlog)'s readings: each
///   minute's mean feeds seawall-perfmon's
///   [`Forecaster`](seawall_perfmon::forecast::Forecaster) (a level and a
///   trend, no season). Until it has learned 50 minutes, all
///   three are the latest minute's mean. A forecast, not a promise: it drives
///   nothing; an alert reads it.
/// - `queue_backlog_bound{queue}`: the waiting jobs the queue is meant to
///   hold at most ([`set_backlog_bound`](QueueMetrics::set_backlog_bound),
///   [`DEFAULT_BACKLOG_BOUND`] until then);
/// - `queue_backlog_runs_out_seconds{queue}`: how long until that forecast
///   passes the bound, looked for up to a week ahead: `0` once as many
///   wait, `+Inf` while the forecast stays under it within the week and
///   while it learns. Updated at each reading.
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
    /// `queue_waiting_forecast`: value, low, high.
    forecast_gauges: [Gauge; 3],
    backlog_bound: Gauge,
    runs_out: Gauge,
    forecast: Arc<Mutex<WaitingForecast>>,
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
        let forecasts = monitor
            .gauge(
                "queue_waiting_forecast",
                "Waiting jobs forecast an hour ahead (value) and its 90 % interval (low, high).",
                &["queue", "bound"],
            )
            .map_err(perfmon)?;
        let bound = |name: &str| forecasts.with_labels(&[queue, name]).map_err(perfmon);
        let backlog_bound = monitor
            .gauge(
                "queue_backlog_bound",
                "The waiting jobs the queue is meant to hold at most.",
                &["queue"],
            )
            .and_then(|family| family.with_labels(&[queue]))
            .map_err(perfmon)?;
        let runs_out = monitor
            .gauge(
                "queue_backlog_runs_out_seconds",
                "How long until the waiting jobs' forecast passes queue_backlog_bound, looked for a week ahead: 0 at the bound, +Inf when not within the week or while learning.",
                &["queue"],
            )
            .and_then(|family| family.with_labels(&[queue]))
            .map_err(perfmon)?;
        // Bounds stay far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        backlog_bound.set(DEFAULT_BACKLOG_BOUND as f64);
        runs_out.set(f64::INFINITY);
        Ok(Self {
            forecast_gauges: [bound("value")?, bound("low")?, bound("high")?],
            backlog_bound,
            runs_out,
            forecast: Arc::new(Mutex::new(WaitingForecast {
                // No season: a backlog's next hour is its trend's.
                forecaster: Forecaster::new(ForecastOptions::default().season(Season::None)),
                minute: i64::MIN,
                sum: 0.0,
                readings: 0,
                bound: DEFAULT_BACKLOG_BOUND,
            })),
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

    /// Sets the waiting jobs the queue is meant to hold at most, which
    /// `queue_backlog_runs_out_seconds` forecasts the backlog against (at
    /// least 1).
    pub fn set_backlog_bound(&self, bound: u64) {
        let bound = bound.max(1);
        self.forecast.lock().bound = bound;
        // Bounds stay far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        self.backlog_bound.set(bound as f64);
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
            });
        self.record_backlog_at(backlog, now);
    }

    /// [`record_backlog`](Self::record_backlog) read at `time` (Unix
    /// seconds): the forecast takes the minute's readings by it.
    pub fn record_backlog_at(&self, backlog: &Backlog, time: i64) {
        self.record_depth(&backlog.counts);
        let age = backlog.oldest_waiting.unwrap_or_default();
        self.oldest_waiting.set(age.as_secs_f64());
        // Depths stay far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let waiting = backlog.counts.waiting as f64;
        let mut forecast = self.forecast.lock();
        let minute = time.div_euclid(FORECAST_STEP_S);
        if minute != forecast.minute {
            if forecast.readings > 0 {
                let mean = forecast.sum / f64::from(forecast.readings);
                let at = forecast.minute.saturating_mul(FORECAST_STEP_S);
                forecast.forecaster.observe(at, mean);
                let [value, low, high] = &self.forecast_gauges;
                match forecast.forecaster.forecast(FORECAST_AHEAD) {
                    Some(ahead) => {
                        // A backlog is never below zero.
                        value.set(ahead.value.max(0.0));
                        low.set(ahead.low.max(0.0));
                        high.set(ahead.high.max(0.0));
                    }
                    None => {
                        for gauge in [value, low, high] {
                            gauge.set(mean);
                        }
                    }
                }
            }
            forecast.minute = minute;
            forecast.sum = 0.0;
            forecast.readings = 0;
        }
        forecast.sum += waiting;
        forecast.readings += 1;
        self.runs_out.set(forecast.runs_out(backlog.counts.waiting));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line of `text` for `queue_waiting_forecast{queue="q",bound=...}`,
    /// as a number.
    fn forecast(text: &str, bound: &str) -> f64 {
        let wanted = format!("queue_waiting_forecast{{queue=\"q\",bound=\"{bound}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(wanted.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {wanted} in:\n{text}"))
    }

    fn backlog(waiting: u64) -> Backlog {
        Backlog {
            counts: Counts {
                waiting,
                ..Counts::default()
            },
            ..Backlog::default()
        }
    }

    /// Read every 5 s, a backlog growing by 10 jobs a minute is forecast an
    /// hour ahead at about 600 more, within its interval; before the
    /// forecaster has learned, the forecast is the latest minute's mean.
    #[test]
    fn a_growing_backlog_is_forecast_an_hour_ahead() {
        let monitor = Monitor::new();
        let metrics = QueueMetrics::register(&monitor, "q").expect("registers");
        // A whole minute (1,800,000,000 is 30,000,000 minutes).
        let start = 1_800_000_000;
        let read = |seconds: i64| {
            // 1,000 jobs, 10 more each minute, read at `seconds` from start.
            let waiting = 1000 + u64::try_from(seconds / 6).expect("positive");
            metrics.record_backlog_at(&backlog(waiting), start + seconds);
        };
        for seconds in (0..120).step_by(5) {
            read(seconds);
        }
        let text = monitor.prometheus();
        // Learning: the mean of the first minute, the one closed (its
        // readings at 0..55 s: 1,000 and 50 / 12 more).
        for bound in ["value", "low", "high"] {
            assert!(
                (forecast(&text, bound) - (1000.0 + 50.0 / 12.0)).abs() < 1e-9,
                "{text}"
            );
        }
        for seconds in (120..300 * 60).step_by(5) {
            read(seconds);
        }
        let text = monitor.prometheus();
        let (value, low, high) = (
            forecast(&text, "value"),
            forecast(&text, "low"),
            forecast(&text, "high"),
        );
        // The last minute closed is minute 298: its mean about 1,000 +
        // 10 × 298.5; an hour past it, 600 more.
        assert!(
            (value - (1000.0 + 10.0 * 298.5 + 600.0)).abs() < 60.0,
            "{value}"
        );
        assert!(low <= value && value <= high, "{low} {value} {high}");
    }

    /// The line of `text` for `name{queue="q"}`, as a number.
    fn gauge(text: &str, name: &str) -> f64 {
        let wanted = format!("{name}{{queue=\"q\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(wanted.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {wanted} in:\n{text}"))
    }

    /// A backlog growing by 50 jobs a minute runs out of a bound of 10,000
    /// when its forecast says: about 82 minutes after the last minute
    /// closed at 5,900; a bound it is already at has run out; one it never
    /// nears within the week, and any while the forecaster learns, never.
    #[test]
    fn a_growing_backlog_runs_out_of_its_bound_when_the_forecast_passes_it() {
        let monitor = Monitor::new();
        let metrics = QueueMetrics::register(&monitor, "q").expect("registers");
        let start = 1_800_000_000;
        let text = monitor.prometheus();
        assert_eq!(gauge(&text, "queue_backlog_bound"), 10_000.0);
        assert_eq!(
            gauge(&text, "queue_backlog_runs_out_seconds"),
            f64::INFINITY
        );
        let read = |seconds: i64| {
            let waiting = 50 * u64::try_from(seconds / 60).expect("positive");
            metrics.record_backlog_at(&backlog(waiting), start + seconds);
        };
        for seconds in (0..10 * 60).step_by(10) {
            read(seconds);
        }
        let learning = gauge(&monitor.prometheus(), "queue_backlog_runs_out_seconds");
        assert_eq!(learning, f64::INFINITY, "while learning");
        for seconds in (10 * 60..120 * 60).step_by(10) {
            read(seconds);
        }
        let minutes = gauge(&monitor.prometheus(), "queue_backlog_runs_out_seconds") / 60.0;
        assert!((minutes - 82.0).abs() < 8.0, "{minutes} minutes");

        metrics.set_backlog_bound(5_000);
        read(120 * 60);
        let text = monitor.prometheus();
        assert_eq!(gauge(&text, "queue_backlog_bound"), 5_000.0);
        assert_eq!(gauge(&text, "queue_backlog_runs_out_seconds"), 0.0);

        metrics.set_backlog_bound(100_000_000);
        read(120 * 60 + 10);
        let never = gauge(&monitor.prometheus(), "queue_backlog_runs_out_seconds");
        assert_eq!(never, f64::INFINITY, "not within the week");
    }
}
