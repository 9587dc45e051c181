//! The built-in metrics read over one rolling window: [`HttpWindow`] and
//! [`QueryWindow`], all series of the metric together.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::WindowStats;

/// HTTP figures over one rolling window, all series together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpWindow {
    /// Requests, rate and latency.
    #[serde(flatten)]
    pub stats: WindowStats,
    /// Requests by status class (`2xx`, `4xx`, `5xx`, ...).
    pub by_status_class: BTreeMap<String, u64>,
    /// Requests answered with a 5xx status.
    pub errors: u64,
    /// `errors / requests`, 0 when there were none.
    pub error_rate: f64,
    /// Requests slower than the slow-API threshold.
    pub slow: u64,
    /// `slow / requests`.
    pub slow_rate: f64,
}

impl HttpWindow {
    /// The figures of a window whose requests are `stats`, counted by status
    /// class in `by_status_class`, `slow` of them over the slow-API threshold.
    pub(crate) fn new(
        stats: WindowStats,
        by_status_class: BTreeMap<String, u64>,
        slow: u64,
    ) -> Self {
        let requests = stats.latency.count;
        let errors = by_status_class.get("5xx").copied().unwrap_or(0);
        Self {
            stats,
            by_status_class,
            errors,
            error_rate: ratio(errors, requests),
            slow,
            slow_rate: ratio(slow, requests),
        }
    }
}

/// Query figures over one rolling window, all operations together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryWindow {
    /// Queries, rate and latency.
    #[serde(flatten)]
    pub stats: WindowStats,
    /// Queries that failed.
    pub errors: u64,
    /// Queries slower than the slow-query threshold.
    pub slow: u64,
    /// `slow / queries`.
    pub slow_rate: f64,
}

impl QueryWindow {
    /// The figures of a window whose queries are `stats`, counted by outcome
    /// (`ok`, `error`) in `by_outcome`, `slow` of them over the slow-query
    /// threshold.
    pub(crate) fn new(stats: WindowStats, by_outcome: &BTreeMap<String, u64>, slow: u64) -> Self {
        let queries = stats.latency.count;
        Self {
            stats,
            errors: by_outcome.get("error").copied().unwrap_or(0),
            slow,
            slow_rate: ratio(slow, queries),
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // display value
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
