//! The state every clone of a [`Monitor`](crate::Monitor) shares: its
//! settings, the built-in HTTP and query metrics, the registered metrics
//! (with the name-clash rule), collectors and health checks, and the slow
//! logs; and the rolling-window reads over the built-in metrics.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::collector::{Collector, Kind};
use crate::gauge::GaugeCell;
use crate::health::{HealthCheck, HealthRules};
use crate::layout::Layout;
use crate::registry::Family;
use crate::series::{Clock, Gathered, Series, micros};
use crate::slowlog::SlowLog;
use crate::stats::{LatencyStats, WindowStats, count_above};
use crate::window::{HttpWindow, QueryWindow};
use crate::{Error, Result};

/// Name of the built-in HTTP latency histogram (labels `method`, `route`, `status_class`).
pub const HTTP_METRIC: &str = "http_server_request_duration_seconds";
/// Name of the built-in query latency histogram (labels `operation`, `outcome`).
pub const QUERY_METRIC: &str = "db_query_duration_seconds";

/// Names the crate exposes itself; user metrics may not take them.
pub(crate) const RESERVED_PREFIX: &str = "perfmon_";

/// A registered user metric.
#[derive(Clone)]
pub(crate) enum Metric {
    Histogram(Arc<Family<Series>>),
    Counter(Arc<Family<AtomicU64>>),
    Gauge(Arc<Family<GaugeCell>>),
}

impl Metric {
    fn kind(&self) -> Kind {
        match self {
            Self::Histogram(_) => Kind::Histogram,
            Self::Counter(_) => Kind::Counter,
            Self::Gauge(_) => Kind::Gauge,
        }
    }

    fn same_labels(&self, label_names: &[&str]) -> bool {
        match self {
            Self::Histogram(family) => family.same_labels(label_names),
            Self::Counter(family) => family.same_labels(label_names),
            Self::Gauge(family) => family.same_labels(label_names),
        }
    }
}

/// Built (and checked) by the [`MonitorBuilder`](crate::MonitorBuilder).
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) clock: Clock,
    /// How many closed intervals each series keeps (the longest window).
    pub(crate) keep: u64,
    pub(crate) windows: Vec<Duration>,
    pub(crate) max_series: usize,
    pub(crate) namespace: Option<String>,
    pub(crate) rules: HealthRules,
    pub(crate) started_at: SystemTime,
    pub(crate) http: Arc<Family<Series>>,
    pub(crate) query: Arc<Family<Series>>,
    /// User metrics by their OpenMetrics family name (a counter's without `_total`).
    pub(crate) metrics: RwLock<BTreeMap<String, Metric>>,
    pub(crate) collectors: RwLock<Vec<Arc<dyn Collector>>>,
    /// Collected families and samples left out of scrapes.
    pub(crate) collector_errors: AtomicU64,
    pub(crate) slow_queries: SlowLog,
    pub(crate) slow_apis: SlowLog,
    pub(crate) checks: RwLock<Vec<Arc<dyn HealthCheck>>>,
}

impl Inner {
    pub(crate) fn new_series(&self) -> Series {
        Series::new(self.layout, self.clock, self.keep)
    }

    pub(crate) fn new_family<S>(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<Arc<Family<S>>> {
        Ok(Arc::new(Family::new(
            name,
            help,
            label_names,
            self.max_series,
        )?))
    }

    /// `name` with the namespace prefixed, if there is one.
    pub(crate) fn prefixed(&self, name: &str) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}_{name}"),
            None => name.to_owned(),
        }
    }

    pub(crate) fn collectors(&self) -> Vec<Arc<dyn Collector>> {
        self.collectors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn add_collector(&self, collector: Arc<dyn Collector>) {
        self.collectors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(collector);
    }

    pub(crate) fn checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        self.checks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn add_check(&self, check: Arc<dyn HealthCheck>) {
        self.checks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(check);
    }

    fn metrics(&self) -> Vec<Metric> {
        self.metrics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Every histogram family, built-in ones first.
    pub(crate) fn histogram_families(&self) -> Vec<Arc<Family<Series>>> {
        let user = self
            .metrics()
            .into_iter()
            .filter_map(|metric| match metric {
                Metric::Histogram(family) => Some(family),
                Metric::Counter(_) | Metric::Gauge(_) => None,
            });
        [Arc::clone(&self.http), Arc::clone(&self.query)]
            .into_iter()
            .chain(user)
            .collect()
    }

    pub(crate) fn counter_families(&self) -> Vec<Arc<Family<AtomicU64>>> {
        self.metrics()
            .into_iter()
            .filter_map(|metric| match metric {
                Metric::Counter(family) => Some(family),
                Metric::Histogram(_) | Metric::Gauge(_) => None,
            })
            .collect()
    }

    pub(crate) fn gauge_families(&self) -> Vec<Arc<Family<GaugeCell>>> {
        self.metrics()
            .into_iter()
            .filter_map(|metric| match metric {
                Metric::Gauge(family) => Some(family),
                Metric::Histogram(_) | Metric::Counter(_) => None,
            })
            .collect()
    }

    /// Registers a user metric `name` of `kind`, or returns the one already
    /// there if it matches. Refuses a metric whose family or sample names
    /// (`_total`, `_bucket`, `_count`, `_sum`, `_created`) another metric
    /// takes, since the two could not be told apart in an exposition.
    pub(crate) fn register(
        &self,
        kind: Kind,
        name: &str,
        label_names: &[&str],
        make: impl FnOnce() -> Result<Metric>,
    ) -> Result<Metric> {
        let family = kind.family_name(name);
        if family.is_empty() {
            return Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "a counter needs a name before `_total`",
            });
        }
        let names = kind.names(family);
        let builtin = [HTTP_METRIC, QUERY_METRIC]
            .into_iter()
            .flat_map(|builtin| Kind::Histogram.names(builtin))
            .any(|taken| names.contains(&taken));
        if builtin || family.starts_with(RESERVED_PREFIX) {
            return Err(Error::Conflict {
                name: name.to_owned(),
                what: "kind: the name is reserved for built-in metrics",
            });
        }
        let mut metrics = self.metrics.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = metrics.get(family) {
            return match (existing.kind() == kind, existing.same_labels(label_names)) {
                (true, true) => Ok(existing.clone()),
                (false, _) => Err(Error::Conflict {
                    name: name.to_owned(),
                    what: "kind",
                }),
                (true, false) => Err(Error::Conflict {
                    name: name.to_owned(),
                    what: "label names",
                }),
            };
        }
        let clash = metrics.iter().any(|(other, metric)| {
            metric
                .kind()
                .names(other)
                .iter()
                .any(|taken| names.contains(taken))
        });
        if clash {
            return Err(Error::Conflict {
                name: name.to_owned(),
                what: "kind: its family or sample names are another metric's",
            });
        }
        let metric = make()?;
        metrics.insert(family.to_owned(), metric.clone());
        Ok(metric)
    }

    /// Counts of every series of `family` within `window`, added together, with
    /// the per-label-value totals of label `by` and the time covered.
    fn merged_window(
        &self,
        family: &Family<Series>,
        window: Duration,
        now: Instant,
        by: usize,
        skip: impl Fn(&[String]) -> bool,
    ) -> (Gathered, BTreeMap<String, u64>, Duration) {
        let mut merged = Gathered::empty(&self.layout);
        let mut per_label = BTreeMap::new();
        let intervals = self.clock.intervals_in(window).min(self.keep);
        for (labels, series) in family.all() {
            if skip(&labels) {
                continue;
            }
            let gathered = series.window(intervals, now);
            let total = gathered.total();
            if total == 0 {
                continue;
            }
            if let Some(value) = labels.get(by) {
                *per_label.entry(value.clone()).or_insert(0) += total;
            }
            merged.merge(&gathered);
        }
        (merged, per_label, self.clock.covered(intervals, now))
    }

    /// HTTP figures over the rolling window of `span`, as of `now`.
    pub(crate) fn http_window(&self, span: Duration, now: Instant) -> HttpWindow {
        self.http_window_without(span, now, &[])
    }

    /// [`http_window`](Self::http_window) without the requests of the
    /// routes in `routes`.
    pub(crate) fn http_window_without(
        &self,
        span: Duration,
        now: Instant,
        routes: &[String],
    ) -> HttpWindow {
        // Labels: method, route, status class.
        let skip = |labels: &[String]| labels.get(1).is_some_and(|route| routes.contains(route));
        let (merged, by_class, covered) = self.merged_window(&self.http, span, now, 2, skip);
        let latency = LatencyStats::from_gathered(&self.layout, &merged);
        let slow_threshold = micros(self.slow_apis.threshold());
        let slow = count_above(&self.layout, &merged, slow_threshold);
        HttpWindow::new(WindowStats::new(span, covered, latency), by_class, slow)
    }

    /// Query figures over the rolling window of `span`, as of `now`.
    pub(crate) fn query_window(&self, span: Duration, now: Instant) -> QueryWindow {
        let (merged, by_outcome, covered) =
            self.merged_window(&self.query, span, now, 1, |_| false);
        let latency = LatencyStats::from_gathered(&self.layout, &merged);
        let slow = count_above(&self.layout, &merged, micros(self.slow_queries.threshold()));
        QueryWindow::new(WindowStats::new(span, covered, latency), &by_outcome, slow)
    }
}
