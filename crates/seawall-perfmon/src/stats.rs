//! Read-side summaries of latency series, as served in JSON snapshots.

use std::time::Duration;

use serde::Serialize;

use crate::layout::Layout;
use crate::series::Gathered;

/// Latency distribution of a set of samples, in microseconds.
///
/// Quantiles come from an `hdrhistogram::Histogram` and are exact to the
/// histogram's precision (3 significant digits by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Arithmetic mean of the samples.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
}

impl LatencyStats {
    /// Summarises an hdrhistogram; `sum` is the exact sum of the samples.
    pub fn from_histogram(histogram: &hdrhistogram::Histogram<u64>, sum: u64) -> Self {
        let count = histogram.len();
        if count == 0 {
            return Self::default();
        }
        Self {
            count,
            min_us: histogram.min(),
            max_us: histogram.max(),
            #[allow(clippy::cast_precision_loss)] // display value
            mean_us: sum as f64 / count as f64,
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p95_us: histogram.value_at_quantile(0.95),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
        }
    }

    pub(crate) fn from_gathered(layout: &Layout, gathered: &Gathered) -> Self {
        Self::from_histogram(&histogram_of(layout, gathered), gathered.sum)
    }
}

/// Builds an `hdrhistogram::Histogram` from gathered counts.
pub(crate) fn histogram_of(layout: &Layout, gathered: &Gathered) -> hdrhistogram::Histogram<u64> {
    layout.build(gathered.counts.iter())
}

/// A rolling window's figures for one series or an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowStats {
    /// The window's configured span in seconds (e.g. 60).
    pub window_secs: u64,
    /// The time the samples actually cover: less than the span just after start-up.
    pub covered_secs: f64,
    /// Samples per second over `covered_secs`.
    pub rate_per_sec: f64,
    /// The latency distribution within the window.
    pub latency: LatencyStats,
}

impl WindowStats {
    pub(crate) fn new(span: Duration, covered: Duration, latency: LatencyStats) -> Self {
        let covered_secs = covered.as_secs_f64();
        #[allow(clippy::cast_precision_loss)] // display value
        let rate_per_sec = if covered_secs > 0.0 {
            latency.count as f64 / covered_secs
        } else {
            0.0
        };
        Self {
            window_secs: span.as_secs(),
            covered_secs,
            rate_per_sec,
            latency,
        }
    }
}

/// Count of samples strictly above `threshold_us`, read from bucketed counts:
/// a bucket counts when its lowest value is above the threshold.
pub(crate) fn count_above(layout: &Layout, gathered: &Gathered, threshold_us: u64) -> u64 {
    let from = layout.index(threshold_us.saturating_add(1));
    let from = if layout.value_at(from) > threshold_us {
        from
    } else {
        from + 1
    };
    gathered
        .counts
        .iter()
        .filter(|(index, _)| *index >= from)
        .fold(0, |total, (_, count)| total.saturating_add(count))
}
