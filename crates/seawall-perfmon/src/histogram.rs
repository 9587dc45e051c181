//! Latency histograms: the handles that record into a `Series`, and the
//! bucket bounds a histogram is exposed with.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::layout::Layout;
use crate::registry::Family;
use crate::series::{Clock, Series, micros};
use crate::stats::{LatencyStats, WindowStats, histogram_of};
use crate::{Error, Result};

/// The bucket bounds a histogram is exposed with unless it was registered
/// with its own ([`Monitor::histogram_with_buckets`](crate::Monitor::histogram_with_buckets)):
/// 0.5 ms to 10 s.
pub const DEFAULT_BUCKETS: [Duration; 15] = [
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2_500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_millis(2_500),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// The most bucket bounds a histogram may have (each is a series per label
/// set).
pub const MAX_BUCKETS: usize = 64;

/// The [`DEFAULT_BUCKETS`] in microseconds.
pub(crate) fn default_bounds_us() -> Vec<u64> {
    DEFAULT_BUCKETS
        .iter()
        .map(|bound| u64::try_from(bound.as_micros()).unwrap_or(u64::MAX))
        .collect()
}

/// The bounds of `buckets` in microseconds, or `None` when they are the
/// [`DEFAULT_BUCKETS`]. Refuses bounds that are not whole microseconds, at
/// least one, rising, at most [`MAX_BUCKETS`] of them, the last at most
/// `highest` microseconds.
pub(crate) fn own_bounds_us(buckets: &[Duration], highest: u64) -> Result<Option<Vec<u64>>> {
    let invalid = |reason: String| Error::InvalidConfig {
        field: "buckets",
        reason,
    };
    if buckets.is_empty() || buckets.len() > MAX_BUCKETS {
        return Err(invalid(format!(
            "must be 1 to {MAX_BUCKETS} bounds, got {}",
            buckets.len()
        )));
    }
    let mut bounds_us = Vec::with_capacity(buckets.len());
    for bound in buckets {
        let us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        if bound.subsec_nanos() % 1_000 != 0 || us == 0 {
            return Err(invalid(format!(
                "a bound is a whole number of microseconds, at least one: {bound:?}"
            )));
        }
        if bounds_us.last().is_some_and(|&last| last >= us) {
            return Err(invalid(format!("bounds must rise: {buckets:?}")));
        }
        if us > highest {
            return Err(invalid(format!(
                "{bound:?} is past the highest trackable value, {:?}",
                Duration::from_micros(highest)
            )));
        }
        bounds_us.push(us);
    }
    // The default bounds are the default: the same metric as `histogram`.
    let own = bounds_us != default_bounds_us();
    Ok(own.then_some(bounds_us))
}

/// A latency histogram metric with labels; pick a series with [`with_labels`](Self::with_labels).
#[derive(Clone)]
pub struct HistogramVec {
    family: Arc<Family<Series>>,
    /// What every new series of the monitor is made with.
    layout: Layout,
    clock: Clock,
    keep: u64,
}

impl fmt::Debug for HistogramVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramVec")
            .field("name", &self.family.name())
            .finish_non_exhaustive()
    }
}

impl HistogramVec {
    /// The handle on `family`, whose new series count in `layout`, cut time
    /// with `clock` and keep `keep` closed intervals.
    pub(crate) fn new(
        family: Arc<Family<Series>>,
        layout: Layout,
        clock: Clock,
        keep: u64,
    ) -> Self {
        Self {
            family,
            layout,
            clock,
            keep,
        }
    }

    /// The series for these label values (in the order of the label names).
    /// Keep the handle to record without a lookup.
    pub fn with_labels(&self, values: &[&str]) -> Result<Histogram> {
        let series = self
            .family
            .get(values, || Series::new(self.layout, self.clock, self.keep))?;
        Ok(Histogram { series })
    }
}

/// One latency series. Recording is lock-free: each thread counts into its own
/// shard, merged when read.
#[derive(Clone)]
pub struct Histogram {
    series: Arc<Series>,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram").finish_non_exhaustive()
    }
}

impl Histogram {
    /// Records a latency observed now.
    pub fn record(&self, latency: Duration) {
        self.series.record(micros(latency), Instant::now());
    }

    /// Records a latency observed at `at`. Use it when the caller already read the
    /// clock (to compute `latency`), which saves a second clock read. `at` should
    /// be that reading: a sample stamped later than its thread's previous one moves
    /// the thread on to that interval, and one stamped earlier counts in the
    /// thread's current interval.
    #[inline]
    pub fn record_at(&self, latency: Duration, at: Instant) {
        self.series.record(micros(latency), at);
    }

    /// Latency figures since the series was created.
    pub fn lifetime(&self) -> LatencyStats {
        LatencyStats::from_gathered(self.series.layout(), &self.series.lifetime())
    }

    /// Latency figures over the last `span`: whole intervals, rounded down, never
    /// more than the longest configured window.
    pub fn window(&self, span: Duration) -> WindowStats {
        self.window_at(span, Instant::now())
    }

    /// [`window`](Self::window) as of `now`.
    pub fn window_at(&self, span: Duration, now: Instant) -> WindowStats {
        let (gathered, covered) = self.series.window_span(span, now);
        WindowStats::new(
            span,
            covered,
            LatencyStats::from_gathered(self.series.layout(), &gathered),
        )
    }

    /// The lifetime samples as an `hdrhistogram::Histogram`, for analyses this crate does not offer.
    pub fn to_hdr(&self) -> hdrhistogram::Histogram<u64> {
        histogram_of(self.series.layout(), &self.series.lifetime())
    }
}
