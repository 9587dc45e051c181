//! Performance monitoring for Rust services: latency histograms over rolling
//! windows, throughput and error rates, slow-operation logs, health scoring,
//! and Prometheus / JSON exposition.
//!
//! ```
//! use std::time::Duration;
//! use seawall_perfmon::Monitor;
//!
//! # fn main() -> Result<(), seawall_perfmon::Error> {
//! let monitor = Monitor::builder()
//!     .windows([Duration::from_secs(60), Duration::from_secs(300)])
//!     .slow_api_threshold(Duration::from_secs(2))
//!     .build()?;
//!
//! // HTTP requests, labelled by route template (never a raw path).
//! monitor.record_request("GET", "/api/users/{id}", 200, Duration::from_millis(12));
//! monitor.record_request("GET", "/api/users/{id}", 503, Duration::from_millis(40));
//!
//! // Any other latency, through a handle that records without a lookup.
//! let jobs = monitor.histogram("job_duration_seconds", "Time to run a job.", &["queue"])?;
//! let email = jobs.with_labels(&["email"])?;
//! email.record(Duration::from_millis(250));
//!
//! let last_minute = monitor.http_window(Duration::from_secs(60));
//! assert_eq!(last_minute.stats.latency.count, 2);
//! assert_eq!(last_minute.errors, 1);
//! assert!(last_minute.stats.latency.p99_us >= 40_000);
//!
//! let text = monitor.prometheus();
//! assert!(text.contains("job_duration_seconds_count{queue=\"email\"} 1"));
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - Latencies are kept in microseconds in HDR histograms (`hdrhistogram`),
//!   3 significant digits by default: quantiles are exact to 0.1 %.
//! - Each recording thread counts into its own shard with plain atomic loads and
//!   stores; readers merge shards. Recording through a [`Histogram`] handle takes
//!   no lock except once per interval per thread, when the thread moves its counts
//!   into the ring. [`Monitor::record_request`] first finds its series by labels
//!   in a read-locked map; keep a handle where that lookup matters.
//! - Time is cut into intervals (5 s by default). Rolling windows (the last 1 and
//!   5 minutes by default) add up the intervals they span, so a dashboard shows
//!   the last minute, not an average since boot; lifetime totals feed Prometheus.
//! - Every metric caps its series (200 by default); label sets past the cap
//!   fold into an overflow series labelled `other` (the HTTP metric keeps the
//!   method and status class, so errors past the cap still count), and
//!   `perfmon_folded_series_total` counts the lookups that were folded.
//! - Slow queries (over 1 s) and slow requests (over 2 s) are kept in bounded
//!   top-N logs; query text is sanitised (literals become `?`) and secrets are
//!   masked before anything is stored.
//! - [`Monitor::health`] grades the shortest window (error rate, p99, share of
//!   slow operations) and runs registered [`HealthCheck`]s, producing an
//!   `application/health+json` report.
//!
//! # Features
//!
//! - `tower`: [`PerfmonLayer`], a tower layer recording every request.
//! - `axum`: the layer labels requests with axum's `MatchedPath`.
//! - `sqlx`: [`TimedQuery`](crate::sqlx::TimedQuery), timing sqlx queries into the slow-query log.

mod counts;
mod error;
mod health;
mod layout;
mod monitor;
mod prometheus;
mod registry;
pub mod sanitize;
mod series;
mod slot;
pub mod slowlog;
mod stats;

#[cfg(feature = "tower")]
mod layer;
#[cfg(feature = "sqlx")]
pub mod sqlx;

pub use error::{Error, Result};
pub use health::{CheckResult, HEALTH_JSON, HealthCheck, HealthReport, HealthRules, HealthStatus};
pub use monitor::{
    Counter, CounterSeries, CounterSnapshot, CounterVec, HTTP_METRIC, Histogram, HistogramSnapshot,
    HistogramVec, HttpWindow, Monitor, MonitorBuilder, QUERY_METRIC, QueryWindow, SeriesSnapshot,
    SlowLogSnapshot, Snapshot,
};
pub use prometheus::PROMETHEUS_CONTENT_TYPE;
pub use registry::OVERFLOW_LABEL;
pub use slowlog::{SlowEntry, SlowKind};
pub use stats::{LatencyStats, WindowStats};

#[cfg(feature = "tower")]
pub use layer::{PerfmonFuture, PerfmonLayer, PerfmonService, RouteFn};
