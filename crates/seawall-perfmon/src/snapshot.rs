//! The JSON-ready [`Snapshot`] of a monitor: every registered metric, the
//! HTTP windows and the slow logs, as of one moment.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use serde::Serialize;

use crate::inner::Inner;
use crate::slowlog::{SlowEntry, SlowLog, rfc3339};
use crate::stats::{LatencyStats, WindowStats};
use crate::window::HttpWindow;

/// Everything a dashboard shows, as of one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Seconds since the monitor was created.
    pub uptime_secs: f64,
    /// When the monitor was created (RFC 3339, UTC).
    pub started_at: String,
    /// HTTP figures for each configured window, shortest first.
    pub http: Vec<HttpWindow>,
    /// Every latency histogram, built-in ones first.
    pub histograms: Vec<HistogramSnapshot>,
    /// Every counter.
    pub counters: Vec<CounterSnapshot>,
    /// Every registered gauge (collectors are read only by the expositions).
    pub gauges: Vec<GaugeSnapshot>,
    /// The slow-query log.
    pub slow_queries: SlowLogSnapshot,
    /// The slow-API log.
    pub slow_apis: SlowLogSnapshot,
}

impl Snapshot {
    /// Every registered metric, window and slow log of `inner` as of `now`.
    pub(crate) fn of(inner: &Inner, now: Instant) -> Self {
        let histograms = inner
            .histogram_families()
            .iter()
            .map(|family| HistogramSnapshot {
                name: family.name().to_owned(),
                help: family.help().to_owned(),
                series: family
                    .all()
                    .into_iter()
                    .map(|(labels, series)| SeriesSnapshot {
                        labels: family.label_names().iter().cloned().zip(labels).collect(),
                        lifetime: LatencyStats::from_gathered(&inner.layout, &series.lifetime()),
                        windows: inner
                            .windows
                            .iter()
                            .map(|span| {
                                let (gathered, covered) = series.window_span(*span, now);
                                WindowStats::new(
                                    *span,
                                    covered,
                                    LatencyStats::from_gathered(&inner.layout, &gathered),
                                )
                            })
                            .collect(),
                    })
                    .collect(),
                folded: family.folded(),
            })
            .collect();
        let counters = inner
            .counter_families()
            .iter()
            .map(|family| CounterSnapshot {
                name: family.name().to_owned(),
                help: family.help().to_owned(),
                series: family
                    .all()
                    .into_iter()
                    .map(|(labels, value)| CounterSeries {
                        labels: family.label_names().iter().cloned().zip(labels).collect(),
                        value: value.load(Relaxed),
                    })
                    .collect(),
                folded: family.folded(),
            })
            .collect();
        let gauges = inner
            .gauge_families()
            .iter()
            .map(|family| GaugeSnapshot {
                name: family.name().to_owned(),
                help: family.help().to_owned(),
                series: family
                    .all()
                    .into_iter()
                    .map(|(labels, cell)| GaugeSeries {
                        labels: family.label_names().iter().cloned().zip(labels).collect(),
                        value: cell.get(),
                    })
                    .collect(),
                folded: family.folded(),
            })
            .collect();
        Self {
            uptime_secs: now
                .saturating_duration_since(inner.clock.start())
                .as_secs_f64(),
            started_at: rfc3339(inner.started_at),
            http: inner
                .windows
                .iter()
                .map(|span| inner.http_window(*span, now))
                .collect(),
            histograms,
            counters,
            gauges,
            slow_queries: SlowLogSnapshot::of(&inner.slow_queries, usize::MAX),
            slow_apis: SlowLogSnapshot::of(&inner.slow_apis, usize::MAX),
        }
    }
}

/// One histogram metric in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct HistogramSnapshot {
    /// Metric name (without namespace).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Its series.
    pub series: Vec<SeriesSnapshot>,
    /// Label-set lookups folded into the `other` series because of the cap.
    pub folded: u64,
}

/// One series of a histogram in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSnapshot {
    /// Label names and values.
    pub labels: BTreeMap<String, String>,
    /// Since the series was created.
    pub lifetime: LatencyStats,
    /// Each configured window, shortest first.
    pub windows: Vec<WindowStats>,
}

/// One counter metric in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct CounterSnapshot {
    /// Metric name (without namespace).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Its series.
    pub series: Vec<CounterSeries>,
    /// Label-set lookups folded into the `other` series because of the cap.
    pub folded: u64,
}

/// One series of a counter in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct CounterSeries {
    /// Label names and values.
    pub labels: BTreeMap<String, String>,
    /// The count.
    pub value: u64,
}

/// One gauge metric in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct GaugeSnapshot {
    /// Metric name (without namespace).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Its series.
    pub series: Vec<GaugeSeries>,
    /// Label-set lookups folded into the `other` series because of the cap.
    pub folded: u64,
}

/// One series of a gauge in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct GaugeSeries {
    /// Label names and values.
    pub labels: BTreeMap<String, String>,
    /// The value (`null` in JSON when it is not finite).
    pub value: f64,
}

/// A slow log in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct SlowLogSnapshot {
    /// Operations slower than this are logged.
    pub threshold_ms: f64,
    /// Slow operations seen since start, kept or not.
    pub total: u64,
    /// The slowest kept, slowest first.
    pub entries: Vec<SlowEntry>,
}

impl SlowLogSnapshot {
    /// `log`, with at most `limit` of its entries.
    pub(crate) fn of(log: &SlowLog, limit: usize) -> Self {
        Self {
            threshold_ms: log.threshold().as_secs_f64() * 1000.0,
            total: log.total(),
            entries: log.top(limit),
        }
    }
}
