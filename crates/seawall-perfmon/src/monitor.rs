//! The [`Monitor`]: configuration, metric registration and reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::collector::Collector;
use crate::exposition::{ExpositionFormat, Kind};
use crate::gauge::{GaugeCell, GaugeVec};
use crate::health::{HealthCheck, HealthReport, HealthRules};
use crate::layout::Layout;
use crate::registry::Family;
use crate::series::{Clock, Gathered, Series};
use crate::slowlog::{SlowEntry, SlowKind, SlowLog};
use crate::stats::{LatencyStats, WindowStats, count_above, histogram_of};
use crate::{Error, Result};

/// Name of the built-in HTTP latency histogram (labels `method`, `route`, `status_class`).
pub const HTTP_METRIC: &str = "http_server_request_duration_seconds";
/// Name of the built-in query latency histogram (labels `operation`, `outcome`).
pub const QUERY_METRIC: &str = "db_query_duration_seconds";

/// The bucket bounds a histogram is exposed with unless it was registered
/// with its own ([`Monitor::histogram_with_buckets`]): 0.5 ms to 10 s.
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

/// Configures a [`Monitor`]. Every setting has a default; see each method.
#[derive(Debug, Clone)]
pub struct MonitorBuilder {
    significant_digits: u8,
    highest_trackable: Duration,
    interval: Duration,
    windows: Vec<Duration>,
    max_series: usize,
    slow_query: Duration,
    slow_api: Duration,
    slow_log_capacity: usize,
    namespace: Option<String>,
    rules: HealthRules,
    epoch: Option<Instant>,
}

impl Default for MonitorBuilder {
    fn default() -> Self {
        Self {
            significant_digits: 3,
            highest_trackable: Duration::from_secs(3600),
            interval: Duration::from_secs(5),
            windows: vec![Duration::from_secs(60), Duration::from_secs(300)],
            max_series: 200,
            slow_query: Duration::from_secs(1),
            slow_api: Duration::from_secs(2),
            slow_log_capacity: 100,
            namespace: None,
            rules: HealthRules::default(),
            epoch: None,
        }
    }
}

impl MonitorBuilder {
    /// Decimal digits of precision kept by every histogram (1 to 5; default 3).
    pub fn significant_digits(mut self, digits: u8) -> Self {
        self.significant_digits = digits;
        self
    }

    /// The longest latency kept exactly; longer samples count as this (default 1 hour).
    pub fn highest_trackable(mut self, highest: Duration) -> Self {
        self.highest_trackable = highest;
        self
    }

    /// The granularity of rolling windows (default 5 s). A window of span `w`
    /// covers between `w - interval` and `w` of history.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The rolling windows to report (default the last 1 and 5 minutes). Each must
    /// be a whole number of intervals, at most 100,000 of them.
    pub fn windows(mut self, windows: impl IntoIterator<Item = Duration>) -> Self {
        self.windows = windows.into_iter().collect();
        self
    }

    /// Most series one metric may have (default 200). Further label sets fold into
    /// an overflow series labelled `other` (for the HTTP metric: the route becomes
    /// `other`, method and status class stay), and `perfmon_folded_series_total`
    /// counts each lookup that was folded (for `record_request`, each request).
    pub fn max_series_per_metric(mut self, max: usize) -> Self {
        self.max_series = max;
        self
    }

    /// Queries slower than this enter the slow-query log (default 1 s).
    pub fn slow_query_threshold(mut self, threshold: Duration) -> Self {
        self.slow_query = threshold;
        self
    }

    /// Requests slower than this enter the slow-API log (default 2 s).
    pub fn slow_api_threshold(mut self, threshold: Duration) -> Self {
        self.slow_api = threshold;
        self
    }

    /// How many of the slowest operations each slow log keeps (default 100).
    pub fn slow_log_capacity(mut self, capacity: usize) -> Self {
        self.slow_log_capacity = capacity;
        self
    }

    /// A prefix for every exposed metric name, e.g. `myapp` gives
    /// `myapp_http_server_request_duration_seconds` (default none).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The rules that turn figures into a health status.
    pub fn health_rules(mut self, rules: HealthRules) -> Self {
        self.rules = rules;
        self
    }

    /// The instant intervals are counted from (default: when the monitor is
    /// built). Samples recorded before it count in the first interval.
    pub fn epoch(mut self, epoch: Instant) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Builds the monitor, checking every setting.
    pub fn build(self) -> Result<Monitor> {
        let highest = u64::try_from(self.highest_trackable.as_micros()).unwrap_or(u64::MAX);
        let layout = Layout::new(self.significant_digits, highest)?;
        if self.interval < Duration::from_millis(10) {
            return Err(config(
                "interval",
                format!("must be at least 10 ms, got {:?}", self.interval),
            ));
        }
        let mut windows = self.windows;
        windows.sort_unstable();
        windows.dedup();
        if windows.is_empty() {
            return Err(config(
                "windows",
                "must name at least one window".to_owned(),
            ));
        }
        let interval_nanos = self.interval.as_nanos();
        if let Some(odd) = windows
            .iter()
            .find(|w| w.as_nanos() == 0 || w.as_nanos() % interval_nanos != 0)
        {
            return Err(config(
                "windows",
                format!(
                    "{odd:?} is not a whole number of intervals of {:?}",
                    self.interval
                ),
            ));
        }
        if let Some(long) = windows
            .iter()
            .find(|w| w.as_nanos() / interval_nanos > MAX_INTERVALS_PER_WINDOW)
        {
            return Err(config(
                "windows",
                format!(
                    "{long:?} spans more than {MAX_INTERVALS_PER_WINDOW} intervals of {:?}",
                    self.interval
                ),
            ));
        }
        if self.max_series == 0 {
            return Err(config(
                "max_series_per_metric",
                "must be at least 1".to_owned(),
            ));
        }
        if let Some(namespace) = &self.namespace {
            crate::registry::validate_name(namespace, false)?;
        }
        self.rules.validate()?;
        let clock = Clock::new(self.epoch.unwrap_or_else(Instant::now), self.interval);
        let keep = windows
            .iter()
            .map(|w| clock.intervals_in(*w))
            .max()
            .unwrap_or(1);
        // Methods and status classes are small fixed sets, so folded requests keep
        // them: an outage past the series cap still shows up as 5xx errors.
        let http = Family::new(
            HTTP_METRIC,
            "Latency of HTTP requests served.",
            &["method", "route", "status_class"],
            self.max_series,
        )?
        .keep_on_overflow(&["method", "status_class"]);
        let query = Family::new(
            QUERY_METRIC,
            "Latency of database queries.",
            &["operation", "outcome"],
            self.max_series,
        )?
        .keep_on_overflow(&["operation", "outcome"]);
        let inner = Inner {
            layout,
            clock,
            keep,
            windows,
            max_series: self.max_series,
            namespace: self.namespace,
            rules: self.rules,
            started_at: SystemTime::now(),
            http: Arc::new(http),
            query: Arc::new(query),
            metrics: RwLock::new(BTreeMap::new()),
            collectors: RwLock::new(Vec::new()),
            collector_errors: AtomicU64::new(0),
            slow_queries: SlowLog::new(SlowKind::Query, self.slow_query, self.slow_log_capacity),
            slow_apis: SlowLog::new(SlowKind::Api, self.slow_api, self.slow_log_capacity),
            checks: RwLock::new(Vec::new()),
        };
        Ok(Monitor {
            inner: Arc::new(inner),
        })
    }
}

fn config(field: &'static str, reason: String) -> Error {
    Error::InvalidConfig { field, reason }
}

/// Bounds the ring (and the work of a read) for any one window.
const MAX_INTERVALS_PER_WINDOW: u128 = 100_000;

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

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) clock: Clock,
    keep: u64,
    pub(crate) windows: Vec<Duration>,
    max_series: usize,
    pub(crate) namespace: Option<String>,
    pub(crate) rules: HealthRules,
    started_at: SystemTime,
    pub(crate) http: Arc<Family<Series>>,
    pub(crate) query: Arc<Family<Series>>,
    /// User metrics by their OpenMetrics family name (a counter's without `_total`).
    metrics: RwLock<BTreeMap<String, Metric>>,
    collectors: RwLock<Vec<Arc<dyn Collector>>>,
    /// Collected families and samples left out of scrapes.
    pub(crate) collector_errors: AtomicU64,
    pub(crate) slow_queries: SlowLog,
    pub(crate) slow_apis: SlowLog,
    checks: RwLock<Vec<Arc<dyn HealthCheck>>>,
}

impl Inner {
    fn new_series(&self) -> Series {
        Series::new(self.layout, self.clock, self.keep)
    }

    fn new_family<S>(
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn metrics(&self) -> Vec<Metric> {
        self.metrics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn register(
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
        let mut metrics = self
            .metrics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    pub(crate) fn merged_window(
        &self,
        family: &Family<Series>,
        window: Duration,
        now: Instant,
        by: usize,
    ) -> (Gathered, BTreeMap<String, u64>, Duration) {
        let mut merged = Gathered::empty(&self.layout);
        let mut per_label = BTreeMap::new();
        let intervals = self.clock.intervals_in(window).min(self.keep);
        for (labels, series) in family.all() {
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
}

/// Collects latency histograms, counters, slow-operation logs and health checks
/// for one service. Cheap to clone: clones share the same metrics.
#[derive(Clone)]
pub struct Monitor {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("significant_digits", &self.inner.layout.sigfig())
            .field("interval", &self.inner.clock.interval())
            .field("windows", &self.inner.windows)
            .field("max_series", &self.inner.max_series)
            .finish_non_exhaustive()
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// A monitor with the default settings of [`MonitorBuilder`].
    pub fn new() -> Self {
        // The defaults are valid by construction; building them cannot fail.
        match MonitorBuilder::default().build() {
            Ok(monitor) => monitor,
            Err(error) => unreachable!("default monitor settings are valid: {error}"),
        }
    }

    /// Starts configuring a monitor.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::default()
    }

    /// The longest duration a histogram tells apart
    /// ([`MonitorBuilder::highest_trackable`]); longer ones count as this.
    pub fn highest_trackable(&self) -> Duration {
        Duration::from_micros(self.inner.layout.highest())
    }

    /// Registers (or looks up) a latency histogram with the given label names,
    /// exposed with the [`DEFAULT_BUCKETS`] (0.5 ms to 10 s).
    /// Registering the same name again with the same label names returns the
    /// same metric; a different kind or different labels is an error. Names
    /// starting with `perfmon_` and the built-in metric names are reserved.
    pub fn histogram(&self, name: &str, help: &str, label_names: &[&str]) -> Result<HistogramVec> {
        self.register_histogram(name, help, label_names, None)
    }

    /// Same, exposed with these bucket bounds: for durations the default
    /// buckets would lump together above 10 s, such as how long a job
    /// waited in a queue. The bounds are whole microseconds, at least one,
    /// rising, at most [`MAX_BUCKETS`] of them, the last no longer than
    /// [`MonitorBuilder::highest_trackable`]. Registering the name again
    /// with other bounds is an error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_perfmon::{DEFAULT_BUCKETS, ExpositionFormat, Monitor};
    ///
    /// # fn main() -> seawall_perfmon::Result<()> {
    /// let monitor = Monitor::new();
    /// let mut buckets = DEFAULT_BUCKETS.to_vec();
    /// buckets.extend([60, 600, 3600].map(Duration::from_secs));
    /// let help = "From ready to started.";
    /// let waits = monitor.histogram_with_buckets("job_wait_seconds", help, &["queue"], &buckets)?;
    /// waits.with_labels(&["mail"])?.record(Duration::from_secs(90));
    /// let text = monitor.render(ExpositionFormat::Prometheus);
    /// assert!(text.contains(r#"job_wait_seconds_bucket{queue="mail",le="600"} 1"#));
    /// assert!(text.contains(r#"job_wait_seconds_bucket{queue="mail",le="60"} 0"#));
    /// # Ok(())
    /// # }
    /// ```
    pub fn histogram_with_buckets(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
        buckets: &[Duration],
    ) -> Result<HistogramVec> {
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
            if us > self.inner.layout.highest() {
                return Err(invalid(format!(
                    "{bound:?} is past the highest trackable value, {:?}",
                    Duration::from_micros(self.inner.layout.highest())
                )));
            }
            bounds_us.push(us);
        }
        // The default bounds are the default: the same metric as `histogram`.
        let default = DEFAULT_BUCKETS
            .iter()
            .map(|bound| u64::try_from(bound.as_micros()).unwrap_or(u64::MAX));
        let own = !bounds_us.iter().copied().eq(default);
        self.register_histogram(name, help, label_names, own.then_some(bounds_us))
    }

    fn register_histogram(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
        bounds_us: Option<Vec<u64>>,
    ) -> Result<HistogramVec> {
        if label_names.contains(&"le") {
            return Err(Error::InvalidName {
                name: "le".to_owned(),
                reason: "`le` is the bucket label of a histogram",
            });
        }
        let wanted = bounds_us.clone();
        let make = || {
            let family: Family<Series> =
                Family::new(name, help, label_names, self.inner.max_series)?;
            Ok(Metric::Histogram(Arc::new(family.with_bounds(bounds_us))))
        };
        match self
            .inner
            .register(Kind::Histogram, name, label_names, make)?
        {
            Metric::Histogram(family) if family.bounds_us() != wanted.as_deref() => {
                Err(Error::Conflict {
                    name: name.to_owned(),
                    what: "buckets",
                })
            }
            Metric::Histogram(family) => Ok(HistogramVec {
                family,
                monitor: Arc::clone(&self.inner),
            }),
            Metric::Counter(_) | Metric::Gauge(_) => Err(Error::Conflict {
                name: name.to_owned(),
                what: "kind",
            }),
        }
    }

    /// Registers (or looks up) a monotonic counter with the given label names.
    /// It is exposed as `<name>_total` (`name` may already end in `_total`;
    /// `jobs` and `jobs_total` are the same counter), and its OpenMetrics
    /// family is `<name>` without `_total`.
    pub fn counter(&self, name: &str, help: &str, label_names: &[&str]) -> Result<CounterVec> {
        let make = || {
            Ok(Metric::Counter(self.inner.new_family(
                name,
                help,
                label_names,
            )?))
        };
        match self
            .inner
            .register(Kind::Counter, name, label_names, make)?
        {
            Metric::Counter(family) => Ok(CounterVec { family }),
            Metric::Histogram(_) | Metric::Gauge(_) => Err(Error::Conflict {
                name: name.to_owned(),
                what: "kind",
            }),
        }
    }

    /// Registers (or looks up) a gauge, a value that goes up and down, with
    /// the given label names. Same rules as [`counter`](Self::counter): name
    /// validation, the per-metric series cap, conflicts.
    ///
    /// ```
    /// use seawall_perfmon::Monitor;
    ///
    /// # fn main() -> Result<(), seawall_perfmon::Error> {
    /// let monitor = Monitor::builder().namespace("app").build()?;
    /// let in_flight = monitor
    ///     .gauge("http_requests_in_flight", "Requests being served.", &[])?
    ///     .with_labels(&[])?;
    /// in_flight.inc();
    /// in_flight.inc();
    /// in_flight.dec();
    /// assert_eq!(in_flight.get(), 1.0);
    /// assert!(monitor.prometheus().contains("\napp_http_requests_in_flight 1\n"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn gauge(&self, name: &str, help: &str, label_names: &[&str]) -> Result<GaugeVec> {
        let make = || {
            Ok(Metric::Gauge(self.inner.new_family(
                name,
                help,
                label_names,
            )?))
        };
        match self.inner.register(Kind::Gauge, name, label_names, make)? {
            Metric::Gauge(family) => Ok(GaugeVec { family }),
            Metric::Histogram(_) | Metric::Counter(_) => Err(Error::Conflict {
                name: name.to_owned(),
                what: "kind",
            }),
        }
    }

    /// Exposes build information as the gauge `build_info` (with the
    /// namespace, `<namespace>_build_info`), one series whose labels are
    /// `labels` and whose value is always 1, as Prometheus exporters do. Call
    /// it once at start-up; each call with other values adds a series.
    ///
    /// ```
    /// use seawall_perfmon::Monitor;
    ///
    /// # fn main() -> Result<(), seawall_perfmon::Error> {
    /// let monitor = Monitor::builder().namespace("app").build()?;
    /// monitor.build_info(&[("version", env!("CARGO_PKG_VERSION")), ("revision", "1a2b3c4")])?;
    /// let version = env!("CARGO_PKG_VERSION");
    /// assert!(monitor.prometheus().contains(&format!(
    ///     "app_build_info{{version=\"{version}\",revision=\"1a2b3c4\"}} 1"
    /// )));
    /// # Ok(())
    /// # }
    /// ```
    pub fn build_info(&self, labels: &[(&str, &str)]) -> Result<()> {
        let names: Vec<&str> = labels.iter().map(|(name, _)| *name).collect();
        let values: Vec<&str> = labels.iter().map(|(_, value)| *value).collect();
        self.gauge(
            "build_info",
            "Build information about the running binary; the value is always 1.",
            &names,
        )?
        .with_labels(&values)?
        .set(1.0);
        Ok(())
    }

    /// Registers a [`Collector`], whose families are read at every scrape and
    /// exposed after the registered metrics.
    ///
    /// The collector is called once here to check what it reports: any family
    /// or sample that could not be exposed (see [`CollectedFamily`]; names
    /// taken by registered metrics and other collectors included) is an
    /// error, and the collector is not registered. At scrape time such a
    /// family or sample is left out of that scrape and counted in
    /// `perfmon_collector_errors_total`; the rest is exposed.
    ///
    /// [`CollectedFamily`]: crate::CollectedFamily
    pub fn register_collector(&self, collector: impl Collector + 'static) -> Result<()> {
        let collector: Arc<dyn Collector> = Arc::new(collector);
        if let Some(error) = crate::exposition::check_collector(&self.inner, &*collector)
            .into_iter()
            .next()
        {
            return Err(error);
        }
        self.inner
            .collectors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(collector);
        Ok(())
    }

    /// Records one served HTTP request that finished now. `route` must be a
    /// route template (`/users/{id}`), never a raw path, to keep cardinality bounded.
    pub fn record_request(&self, method: &str, route: &str, status: u16, latency: Duration) {
        self.record_request_at(method, route, status, latency, Instant::now());
    }

    /// [`record_request`](Self::record_request) for a request that finished at `at`
    /// (an instant the caller already read; not one in the future).
    pub fn record_request_at(
        &self,
        method: &str,
        route: &str,
        status: u16,
        latency: Duration,
        at: Instant,
    ) {
        let method = normalize_method(method);
        let class = status_class(status);
        if let Ok(series) = self
            .inner
            .http
            .get(&[method, route, class], || self.inner.new_series())
        {
            series.record(micros(latency), at);
        }
        offer_slow(&self.inner.slow_apis, latency, || {
            format!("{method} {route} -> {status}")
        });
    }

    /// Records one database query. `sql` is only kept (sanitised: literals
    /// replaced, secrets masked) when the query enters the slow-query log.
    pub fn record_query(&self, sql: &str, latency: Duration, succeeded: bool) {
        let operation = query_operation(sql);
        let outcome = if succeeded { "ok" } else { "error" };
        if let Ok(series) = self
            .inner
            .query
            .get(&[operation, outcome], || self.inner.new_series())
        {
            series.record(micros(latency), Instant::now());
        }
        offer_slow(&self.inner.slow_queries, latency, || sql.to_owned());
    }

    /// The slowest queries kept, slowest first, at most `limit`.
    pub fn slow_queries(&self, limit: usize) -> Vec<SlowEntry> {
        self.inner.slow_queries.top(limit)
    }

    /// The slowest requests kept, slowest first, at most `limit`.
    pub fn slow_apis(&self, limit: usize) -> Vec<SlowEntry> {
        self.inner.slow_apis.top(limit)
    }

    /// The slow-query log with its threshold and total, at most `limit` entries.
    pub fn slow_query_log(&self, limit: usize) -> SlowLogSnapshot {
        SlowLogSnapshot::of(&self.inner.slow_queries, limit)
    }

    /// The slow-API log with its threshold and total, at most `limit` entries.
    pub fn slow_api_log(&self, limit: usize) -> SlowLogSnapshot {
        SlowLogSnapshot::of(&self.inner.slow_apis, limit)
    }

    /// Registers a component check run on every [`health`](Self::health) call.
    pub fn register_check(&self, check: impl HealthCheck + 'static) {
        self.inner
            .checks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::new(check));
    }

    /// The configured rolling windows, shortest first.
    pub fn windows(&self) -> &[Duration] {
        &self.inner.windows
    }

    /// HTTP figures over the rolling window of `span`: the last `span / interval`
    /// whole intervals (rounded down, at least one), never more than the longest
    /// configured window.
    pub fn http_window(&self, span: Duration) -> HttpWindow {
        self.http_window_at(span, Instant::now())
    }

    pub(crate) fn http_window_at(&self, span: Duration, now: Instant) -> HttpWindow {
        let inner = &self.inner;
        let (merged, by_class, covered) = inner.merged_window(&inner.http, span, now, 2);
        let latency = LatencyStats::from_gathered(&inner.layout, &merged);
        let slow_threshold = micros(inner.slow_apis.threshold());
        let slow = count_above(&inner.layout, &merged, slow_threshold);
        let errors = by_class.get("5xx").copied().unwrap_or(0);
        HttpWindow {
            stats: WindowStats::new(span, covered, latency),
            by_status_class: by_class,
            errors,
            error_rate: ratio(errors, latency.count),
            slow,
            slow_rate: ratio(slow, latency.count),
        }
    }

    /// Query figures over the rolling window of `span`.
    pub fn query_window(&self, span: Duration) -> QueryWindow {
        let inner = &self.inner;
        let now = Instant::now();
        let (merged, by_outcome, covered) = inner.merged_window(&inner.query, span, now, 1);
        let latency = LatencyStats::from_gathered(&inner.layout, &merged);
        let slow = count_above(
            &inner.layout,
            &merged,
            micros(inner.slow_queries.threshold()),
        );
        let errors = by_outcome.get("error").copied().unwrap_or(0);
        QueryWindow {
            stats: WindowStats::new(span, covered, latency),
            errors,
            slow,
            slow_rate: ratio(slow, latency.count),
        }
    }

    /// Runs the registered component checks and applies the health rules to the
    /// shortest rolling window.
    pub async fn health(&self) -> HealthReport {
        let checks: Vec<Arc<dyn HealthCheck>> = self
            .inner
            .checks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut components = Vec::with_capacity(checks.len());
        for check in checks {
            components.push((check.key(), check.check().await));
        }
        let span = self
            .inner
            .windows
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(60));
        crate::health::evaluate(
            &self.inner.rules,
            &self.http_window(span),
            &self.query_window(span),
            components,
        )
    }

    /// A JSON-ready snapshot of every registered metric, window and slow log
    /// (collectors are read only by the expositions).
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let inner = &self.inner;
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
        Snapshot {
            uptime_secs: now
                .saturating_duration_since(inner.clock.start())
                .as_secs_f64(),
            started_at: crate::slowlog::rfc3339(inner.started_at),
            http: inner
                .windows
                .iter()
                .map(|span| self.http_window_at(*span, now))
                .collect(),
            histograms,
            counters,
            gauges,
            slow_queries: SlowLogSnapshot::of(&inner.slow_queries, usize::MAX),
            slow_apis: SlowLogSnapshot::of(&inner.slow_apis, usize::MAX),
        }
    }

    /// The snapshot as JSON.
    pub fn snapshot_json(&self) -> String {
        serde_json::to_string(&self.snapshot())
            .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4),
    /// to serve as [`PROMETHEUS_CONTENT_TYPE`](crate::PROMETHEUS_CONTENT_TYPE).
    /// Runs the registered collectors.
    pub fn prometheus(&self) -> String {
        self.render(ExpositionFormat::Prometheus)
    }

    /// Every metric in the OpenMetrics 1.0 text format, ending with `# EOF`,
    /// to serve as [`OPENMETRICS_CONTENT_TYPE`](crate::OPENMETRICS_CONTENT_TYPE).
    /// Runs the registered collectors.
    ///
    /// ```
    /// use seawall_perfmon::Monitor;
    ///
    /// # fn main() -> Result<(), seawall_perfmon::Error> {
    /// let monitor = Monitor::builder().namespace("app").build()?;
    /// monitor.counter("jobs_processed", "Jobs done.", &[])?.with_labels(&[])?.inc();
    /// let text = monitor.openmetrics();
    /// // The family has no `_total`; its sample does.
    /// assert!(text.contains("# TYPE app_jobs_processed counter\n"));
    /// assert!(text.contains("\napp_jobs_processed_total 1\n"));
    /// assert!(text.ends_with("# EOF\n"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn openmetrics(&self) -> String {
        self.render(ExpositionFormat::OpenMetrics)
    }

    /// Every metric in `format`. Runs the registered collectors.
    pub fn render(&self, format: ExpositionFormat) -> String {
        let families = crate::exposition::gather(&self.inner);
        match format {
            ExpositionFormat::Prometheus => crate::prometheus::write(&families),
            ExpositionFormat::OpenMetrics => crate::openmetrics::write(&families),
        }
    }

    /// The content type and body answering a scrape whose `Accept` header is
    /// `accept` (`None` without one): OpenMetrics when the client asks for it,
    /// the Prometheus text format otherwise. See
    /// [`ExpositionFormat::from_accept`].
    ///
    /// ```
    /// use seawall_perfmon::{Monitor, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
    ///
    /// let monitor = Monitor::new();
    /// let (content_type, body) = monitor.negotiate(Some("application/openmetrics-text; version=1.0.0"));
    /// assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
    /// assert!(body.ends_with("# EOF\n"));
    /// let (content_type, _) = monitor.negotiate(None);
    /// assert_eq!(content_type, PROMETHEUS_CONTENT_TYPE);
    /// ```
    pub fn negotiate(&self, accept: Option<&str>) -> (&'static str, String) {
        let format = ExpositionFormat::from_accept(accept);
        (format.content_type(), self.render(format))
    }
}

/// Offers an operation to a slow log, reading the wall clock only when the
/// operation is over the threshold: most are not, and this runs per request.
fn offer_slow(log: &SlowLog, latency: Duration, text: impl FnOnce() -> String) {
    if latency > log.threshold() {
        log.offer(latency, SystemTime::now(), text);
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

/// Whole microseconds, saturating.
#[inline]
pub(crate) fn micros(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(duration.subsec_micros()))
}

/// Standard methods keep their name; anything else is `OTHER`, so a client
/// cannot grow the label set.
fn normalize_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(method))
        .unwrap_or("OTHER")
}

/// `1xx` to `5xx`, or `other` for codes outside 100-599.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The statement's leading keyword, from a fixed set.
fn query_operation(sql: &str) -> &'static str {
    const KNOWN: [&str; 10] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK", "CREATE",
        "ALTER",
    ];
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    KNOWN
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(first))
        .unwrap_or("OTHER")
}

/// A latency histogram metric with labels; pick a series with [`with_labels`](Self::with_labels).
#[derive(Clone)]
pub struct HistogramVec {
    family: Arc<Family<Series>>,
    monitor: Arc<Inner>,
}

impl fmt::Debug for HistogramVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramVec")
            .field("name", &self.family.name())
            .finish_non_exhaustive()
    }
}

impl HistogramVec {
    /// The series for these label values (in the order of the label names).
    /// Keep the handle to record without a lookup.
    pub fn with_labels(&self, values: &[&str]) -> Result<Histogram> {
        let series = self.family.get(values, || self.monitor.new_series())?;
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

/// A counter metric with labels; pick a series with [`with_labels`](Self::with_labels).
#[derive(Clone)]
pub struct CounterVec {
    family: Arc<Family<AtomicU64>>,
}

impl fmt::Debug for CounterVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterVec")
            .field("name", &self.family.name())
            .finish_non_exhaustive()
    }
}

impl CounterVec {
    /// The counter for these label values (in the order of the label names).
    pub fn with_labels(&self, values: &[&str]) -> Result<Counter> {
        Ok(Counter {
            value: self.family.get(values, || AtomicU64::new(0))?,
        })
    }
}

/// A monotonic counter.
#[derive(Debug, Clone)]
pub struct Counter {
    value: Arc<AtomicU64>,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.value.fetch_add(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.value.load(Relaxed)
    }
}

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
    fn of(log: &SlowLog, limit: usize) -> Self {
        Self {
            threshold_ms: log.threshold().as_secs_f64() * 1000.0,
            total: log.total(),
            entries: log.top(limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_status_classes_and_operations_are_bounded() {
        assert_eq!(normalize_method("get"), "GET");
        assert_eq!(normalize_method("BREW"), "OTHER");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(42), "other");
        assert_eq!(query_operation("  select 1"), "SELECT");
        assert_eq!(query_operation("(SELECT 1) UNION (SELECT 2)"), "SELECT");
        assert_eq!(query_operation("VACUUM"), "OTHER");
        assert_eq!(query_operation(""), "OTHER");
    }

    #[test]
    fn builder_rejects_bad_settings() {
        assert!(Monitor::builder().significant_digits(0).build().is_err());
        assert!(
            Monitor::builder()
                .interval(Duration::from_millis(1))
                .build()
                .is_err()
        );
        assert!(Monitor::builder().windows([]).build().is_err());
        assert!(
            Monitor::builder()
                .windows([Duration::from_secs(1)])
                .build()
                .is_err()
        );
        assert!(
            Monitor::builder()
                .windows([Duration::from_secs(62)])
                .build()
                .is_err()
        );
        assert!(
            Monitor::builder()
                .interval(Duration::from_millis(10))
                .windows([Duration::from_secs(3600)])
                .build()
                .is_err()
        );
        assert!(Monitor::builder().max_series_per_metric(0).build().is_err());
        assert!(Monitor::builder().namespace("bad name").build().is_err());
        assert!(
            Monitor::builder()
                .highest_trackable(Duration::from_micros(10))
                .build()
                .is_err()
        );
    }

    #[test]
    fn a_histogram_takes_its_own_buckets_and_keeps_them() -> Result<()> {
        let monitor = Monitor::new();
        let long = [Duration::from_secs(1), Duration::from_secs(60)];
        let waits = monitor.histogram_with_buckets("wait_seconds", "help", &["queue"], &long)?;
        waits
            .with_labels(&["mail"])?
            .record(Duration::from_secs(30));
        let text = monitor.render(ExpositionFormat::Prometheus);
        let buckets: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("wait_seconds_bucket"))
            .collect();
        assert_eq!(
            buckets,
            [
                r#"wait_seconds_bucket{queue="mail",le="1"} 0"#,
                r#"wait_seconds_bucket{queue="mail",le="60"} 1"#,
                r#"wait_seconds_bucket{queue="mail",le="+Inf"} 1"#,
            ]
        );
        // The same bounds find the same metric; others, or none, conflict.
        assert!(
            monitor
                .histogram_with_buckets("wait_seconds", "help", &["queue"], &long)
                .is_ok()
        );
        for conflicting in [
            monitor.histogram_with_buckets("wait_seconds", "help", &["queue"], &long[..1]),
            monitor.histogram("wait_seconds", "help", &["queue"]),
        ] {
            assert!(
                matches!(
                    conflicting,
                    Err(Error::Conflict {
                        what: "buckets",
                        ..
                    })
                ),
                "{conflicting:?}"
            );
        }
        monitor.histogram_with_buckets("plain_seconds", "help", &[], &DEFAULT_BUCKETS)?;
        assert!(monitor.histogram("plain_seconds", "help", &[]).is_ok());
        Ok(())
    }

    #[test]
    fn bucket_bounds_must_rise_within_what_is_tracked() {
        let monitor = Monitor::new();
        let second = Duration::from_secs(1);
        let too_many = vec![second; MAX_BUCKETS + 1];
        for bounds in [
            &[][..],
            &too_many[..],
            &[second, second][..],
            &[Duration::from_secs(2), second][..],
            &[Duration::ZERO][..],
            &[Duration::from_nanos(1_500)][..],
            &[Duration::from_secs(3601)][..],
        ] {
            let refused = monitor.histogram_with_buckets("refused_seconds", "help", &[], bounds);
            assert!(
                matches!(
                    refused,
                    Err(Error::InvalidConfig {
                        field: "buckets",
                        ..
                    })
                ),
                "{bounds:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn metric_kinds_and_labels_cannot_conflict() -> Result<()> {
        let monitor = Monitor::new();
        monitor.histogram("job_seconds", "help", &["queue"])?;
        assert!(monitor.histogram("job_seconds", "help", &["queue"]).is_ok());
        assert!(matches!(
            monitor.histogram("job_seconds", "help", &["other"]),
            Err(Error::Conflict { .. })
        ));
        // A counter `job_seconds` would be the OpenMetrics family `job_seconds` too.
        assert!(matches!(
            monitor.counter("job_seconds", "help", &["queue"]),
            Err(Error::Conflict { .. })
        ));
        // Nor may a gauge take a histogram's sample names.
        assert!(matches!(
            monitor.gauge("job_seconds_count", "help", &[]),
            Err(Error::Conflict { .. })
        ));
        monitor.counter("retries", "help", &[])?;
        assert!(matches!(
            monitor.histogram("retries_total", "help", &["queue"]),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            monitor.gauge("retries", "help", &[]),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            monitor.counter("_total", "help", &[]),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            monitor.histogram(HTTP_METRIC, "help", &[]),
            Err(Error::Conflict { .. })
        ));
        let jobs = monitor
            .counter("jobs_total", "help", &[])?
            .with_labels(&[])?;
        jobs.inc();
        jobs.inc_by(2);
        assert_eq!(jobs.get(), 3);
        assert!(matches!(
            monitor.histogram("jobs_total", "help", &[]),
            Err(Error::Conflict { .. })
        ));
        // `jobs` and `jobs_total` are both exposed as `jobs_total`.
        assert!(monitor.counter("jobs", "help", &[]).is_ok());
        assert!(matches!(
            monitor.counter("jobs", "help", &["x"]),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            monitor.counter("perfmon_slow_operations", "help", &[]),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            monitor.histogram("perfmon_x_seconds", "help", &[]),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            monitor.histogram("size_seconds", "help", &["le"]),
            Err(Error::InvalidName { .. })
        ));
        Ok(())
    }
}
