//! Performance monitoring for Rust services: latency histograms over rolling
//! windows, throughput and error rates, counters and gauges, scrape-time
//! collectors (process metrics among them), slow-operation logs, health
//! scoring, and Prometheus / OpenMetrics / JSON exposition.
//!
//! ```
//! use std::time::Duration;
//! use seawall_perfmon::{CollectedFamily, Monitor, ProcessCollector};
//!
//! # fn main() -> Result<(), seawall_perfmon::Error> {
//! let monitor = Monitor::builder()
//!     .namespace("app")
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
//! // Counters, gauges and build information.
//! let shed = monitor.counter("requests_shed", "Requests refused under load.", &[])?.with_labels(&[])?;
//! shed.inc();
//! let in_flight = monitor.gauge("requests_in_flight", "Requests being served.", &[])?.with_labels(&[])?;
//! in_flight.inc();
//! monitor.build_info(&[("version", "1.4.0"), ("revision", "1a2b3c4")])?;
//!
//! // Values read at every scrape: the process, and state kept elsewhere.
//! monitor.register_collector(ProcessCollector::new())?;
//! monitor.register_collector(|| {
//!     vec![CollectedFamily::gauge("redis_connected", "1 when Redis is connected.", &[]).sample(&[], 1.0)]
//! })?;
//!
//! let last_minute = monitor.http_window(Duration::from_secs(60));
//! assert_eq!(last_minute.stats.latency.count, 2);
//! assert_eq!(last_minute.errors, 1);
//! assert!(last_minute.stats.latency.p99_us >= 40_000);
//!
//! // Prometheus text, or OpenMetrics when the scraper asks for it.
//! let text = monitor.prometheus();
//! assert!(text.contains("app_job_duration_seconds_count{queue=\"email\"} 1"));
//! assert!(text.contains("app_requests_shed_total 1"));
//! let (content_type, body) = monitor.negotiate(Some("application/openmetrics-text; version=1.0.0"));
//! assert_eq!(content_type, seawall_perfmon::OPENMETRICS_CONTENT_TYPE);
//! assert!(body.contains("# TYPE app_requests_shed counter"));
//! assert!(body.contains("app_build_info{version=\"1.4.0\",revision=\"1a2b3c4\"} 1"));
//! assert!(body.ends_with("# EOF\n"));
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
//! - [`Gauge`]s keep an `f64` in an atomic; [`Collector`]s are called at each
//!   scrape for values that live elsewhere (a pool's size, a client's
//!   connection); [`ProcessCollector`] reads `/proc` on Linux for the standard
//!   `process_*` metrics.
//! - [`Monitor::prometheus`] writes the Prometheus text format 0.0.4,
//!   [`Monitor::openmetrics`] OpenMetrics 1.0, and [`Monitor::negotiate`]
//!   picks one from an `Accept` header. A histogram is exposed in the
//!   [`DEFAULT_BUCKETS`] (0.5 ms to 10 s) or, registered with
//!   [`Monitor::histogram_with_buckets`], in its own (a queue's wait, for
//!   one, up to an hour); its quantiles come from the HDR counts whatever
//!   the buckets. No two metrics share a family or sample
//!   name: registration refuses a clash, and a collected family that cannot be
//!   exposed is left out of the scrape and counted in
//!   `perfmon_collector_errors_total`.
//! - Slow queries (over 1 s) and slow requests (over 2 s) are kept in bounded
//!   top-N logs; query text is sanitised (literals become `?`) and secrets are
//!   masked before anything is stored.
//! - [`TopKeys`] ranks the keys seen most in a fixed number of counters
//!   (space-saving), fed from a hot path through [`one_in`], a thread-local
//!   random sample: the rate limiter's heaviest callers and the cache's hot
//!   keys use it.
//! - [`Monitor::health`] grades the shortest window (error rate, p99, share of
//!   slow operations) and runs registered [`HealthCheck`]s, producing an
//!   `application/health+json` report.
//!
//! # Features
//!
//! None is on by default.
//!
//! - `tower`: [`PerfmonLayer`], a tower layer recording every request.
//!   Pulls in `tower-layer`, `tower-service`, `http`, `http-body` and
//!   `pin-project-lite`.
//! - `axum`: the layer labels requests with axum's `MatchedPath`, and the
//!   [`probes`] module answers `/livez`, `/readyz` and `/metrics`. Turns on
//!   `tower` and pulls in `axum` (its `matched-path` feature).
//! - `sqlx`: [`TimedQuery`](crate::sqlx::TimedQuery), timing sqlx queries
//!   into the slow-query log. Pulls in `sqlx`, without its default features.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.95.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod anomaly;
mod collector;
mod counter;
mod counts;
mod error;
mod exposed;
mod exposition;
pub mod forecast;
mod format;
mod gauge;
mod health;
mod histogram;
mod inner;
mod layout;
mod monitor;
mod openmetrics;
mod process;
mod prometheus;
mod registry;
pub mod sanitize;
mod series;
mod slot;
pub mod slowlog;
mod snapshot;
mod stats;
mod text;
mod topkeys;
mod window;

#[cfg(feature = "tower")]
mod layer;
#[cfg(feature = "axum")]
pub mod probes;
#[cfg(feature = "sqlx")]
pub mod sqlx;

pub use collector::{CollectedFamily, Collector};
pub use counter::{Counter, CounterVec};
pub use error::{Error, Result};
pub use format::ExpositionFormat;
pub use gauge::{Gauge, GaugeVec};
pub use health::{
    CheckResult, HEALTH_JSON, HealthCheck, HealthReport, HealthRules, HealthStatus, ShutdownCheck,
};
pub use histogram::{DEFAULT_BUCKETS, Histogram, HistogramVec, MAX_BUCKETS};
pub use inner::{HTTP_METRIC, QUERY_METRIC};
pub use monitor::{Monitor, MonitorBuilder};
pub use openmetrics::OPENMETRICS_CONTENT_TYPE;
pub use process::ProcessCollector;
pub use prometheus::PROMETHEUS_CONTENT_TYPE;
pub use registry::OVERFLOW_LABEL;
pub use slowlog::{SlowEntry, SlowKind};
pub use snapshot::{
    CounterSeries, CounterSnapshot, GaugeSeries, GaugeSnapshot, HistogramSnapshot, SeriesSnapshot,
    SlowLogSnapshot, Snapshot,
};
pub use stats::{LatencyStats, WindowStats};
pub use topkeys::{KeyCount, TopKeys, one_in};
pub use window::{HttpTotal, HttpWindow, QueryWindow};

#[cfg(feature = "tower")]
pub use layer::{PerfmonFuture, PerfmonLayer, PerfmonService, RouteFn};

/// The README's quick start, compiled and run with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
