//! A short history of HTTP figures for the dashboard's chart: every interval a
//! sampler reads the monitor and keeps the last fifteen minutes of points, so a
//! freshly opened dashboard has a chart at once.
//!
//! A point covers the monitor's previous whole interval plus the elapsed part
//! of the current one (5 to 10 s with the default interval): the monitor's
//! windows always include the interval in progress, and sampling can't be
//! aligned to its boundaries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use seawall_perfmon::Monitor;
use seawall_perfmon::slowlog::rfc3339;
use serde::Serialize;
use tokio::task::JoinHandle;

/// How far back the timeline reaches.
pub(crate) const SPAN: Duration = Duration::from_secs(15 * 60);

/// One point: HTTP figures over the last one to two monitor intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Point {
    /// When it was sampled (RFC 3339).
    pub at: String,
    /// The same moment in Unix milliseconds, for plotting.
    pub at_ms: u64,
    /// Requests finished in the time the point covers.
    pub requests: u64,
    /// Requests per second.
    pub rate_per_sec: f64,
    /// Share of requests answered with 5xx.
    pub error_rate: f64,
    /// Median latency in microseconds.
    pub p50_us: u64,
    /// 95th percentile latency in microseconds.
    pub p95_us: u64,
    /// 99th percentile latency in microseconds.
    pub p99_us: u64,
}

/// The sampled points, oldest first; stops sampling when dropped.
#[derive(Debug)]
pub(crate) struct Timeline {
    points: Arc<Mutex<VecDeque<Point>>>,
    sampler: JoinHandle<()>,
}

impl Timeline {
    /// Starts sampling `monitor` every `interval` (its histogram interval).
    pub(crate) fn start(monitor: Monitor, interval: Duration) -> Self {
        let capacity = usize::try_from(SPAN.as_secs() / interval.as_secs().max(1)).unwrap_or(180);
        let points = Arc::new(Mutex::new(VecDeque::with_capacity(capacity)));
        let sampler = tokio::spawn(sample(monitor, interval, Arc::clone(&points), capacity));
        Self { points, sampler }
    }

    /// A copy of the points, oldest first.
    pub(crate) fn points(&self) -> Vec<Point> {
        self.points.lock().iter().cloned().collect()
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

async fn sample(
    monitor: Monitor,
    interval: Duration,
    points: Arc<Mutex<VecDeque<Point>>>,
    capacity: usize,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate: nothing to read yet
    loop {
        ticks.tick().await;
        let window = monitor.http_window(interval * 2);
        let now = SystemTime::now();
        let latency = window.stats.latency;
        let point = Point {
            at: rfc3339(now),
            at_ms: now.duration_since(UNIX_EPOCH).map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            }),
            requests: latency.count,
            rate_per_sec: window.stats.rate_per_sec,
            error_rate: window.error_rate,
            p50_us: latency.p50_us,
            p95_us: latency.p95_us,
            p99_us: latency.p99_us,
        };
        let mut points = points.lock();
        if points.len() == capacity {
            points.pop_front();
        }
        points.push_back(point);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn samples_each_interval_and_keeps_fifteen_minutes() {
        let monitor = Monitor::new();
        let timeline = Timeline::start(monitor.clone(), Duration::from_secs(5));
        monitor.record_request("GET", "/x", 200, Duration::from_millis(3));
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let points = timeline.points();
        assert_eq!(points.len(), 180);
        assert!(points.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms));
    }
}
