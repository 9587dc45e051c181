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

/// One HTTP series' counts since it was first recorded: its requests, and
/// how many of them finished within a bound ([`Monitor::http_totals`]).
///
/// [`Monitor::http_totals`]: crate::Monitor::http_totals
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpTotal {
    /// The request method, as recorded.
    pub method: String,
    /// The route template.
    pub route: String,
    /// The status class (`2xx`, `5xx`, ...).
    pub status_class: String,
    /// Requests recorded.
    pub requests: u64,
    /// Of them, those that took at most the bound asked for, counted as
    /// the exposition's `le` bucket of that bound counts them.
    pub within: u64,
}
