//! The [`Monitor`] façade and its [`MonitorBuilder`]: configuration,
//! metric registration, recording the built-in HTTP and query metrics, and
//! the reads (windows, health, snapshots, expositions), each handed to the
//! module below that does the work.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::collector::{Collector, Kind};
use crate::counter::CounterVec;
use crate::exposition;
use crate::format::ExpositionFormat;
use crate::gauge::GaugeVec;
use crate::health::{self, CheckResult, HealthCheck, HealthReport, HealthRules, HealthStatus};
use crate::histogram::{HistogramVec, own_bounds_us};
use crate::inner::{HTTP_METRIC, Inner, Metric, QUERY_METRIC};
use crate::layout::Layout;
use crate::registry::{Family, validate_name};
use crate::series::{Clock, Series, micros};
use crate::slowlog::{SlowEntry, SlowKind, SlowLog};
use crate::snapshot::{SlowLogSnapshot, Snapshot};
use crate::window::{HttpTotal, HttpWindow, QueryWindow};
use crate::{Error, Result};

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
            validate_name(namespace, false)?;
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
    /// exposed with the [`DEFAULT_BUCKETS`](crate::DEFAULT_BUCKETS) (0.5 ms to 10 s).
    /// Registering the same name again with the same label names returns the
    /// same metric; a different kind or different labels is an error. Names
    /// starting with `perfmon_` and the built-in metric names are reserved.
    pub fn histogram(&self, name: &str, help: &str, label_names: &[&str]) -> Result<HistogramVec> {
        self.register_histogram(name, help, label_names, None)
    }

    /// Same, exposed with these bucket bounds: for durations the default
    /// buckets would lump together above 10 s, such as how long a job
    /// waited in a queue. The bounds are whole microseconds, at least one,
    /// rising, at most [`MAX_BUCKETS`](crate::MAX_BUCKETS) of them, the last no longer than
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
        let bounds_us = own_bounds_us(buckets, self.inner.layout.highest())?;
        self.register_histogram(name, help, label_names, bounds_us)
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
            Metric::Histogram(family) => Ok(HistogramVec::new(
                family,
                self.inner.layout,
                self.inner.clock,
                self.inner.keep,
            )),
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
        if let Some(error) = exposition::check_collector(&self.inner, &*collector)
            .into_iter()
            .next()
        {
            return Err(error);
        }
        self.inner.add_collector(collector);
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
        self.inner.add_check(Arc::new(check));
    }

    /// The configured rolling windows, shortest first.
    pub fn windows(&self) -> &[Duration] {
        &self.inner.windows
    }

    /// HTTP figures over the rolling window of `span`: the last `span / interval`
    /// whole intervals (rounded down, at least one), never more than the longest
    /// configured window.
    pub fn http_window(&self, span: Duration) -> HttpWindow {
        self.inner.http_window(span, Instant::now())
    }

    /// Every HTTP series' counts since it was first recorded, with how
    /// many requests took at most `within(route)`: what an SLO over the
    /// service's lifetime counts, read without touching the request path.
    /// Subtract two readings for the requests in between.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_perfmon::Monitor;
    ///
    /// let monitor = Monitor::new();
    /// monitor.record_request("GET", "/items", 200, Duration::from_millis(20));
    /// monitor.record_request("GET", "/items", 200, Duration::from_millis(900));
    /// let totals = monitor.http_totals(|_| Duration::from_millis(250));
    /// assert_eq!((totals[0].requests, totals[0].within), (2, 1));
    /// ```
    pub fn http_totals(&self, within: impl Fn(&str) -> Duration) -> Vec<HttpTotal> {
        self.inner
            .http
            .all()
            .into_iter()
            .filter_map(|(labels, series)| {
                let [method, route, status_class] = <[String; 3]>::try_from(labels).ok()?;
                let gathered = series.lifetime();
                let bound = micros(within(&route));
                let within = gathered
                    .counts
                    .iter()
                    .take_while(|(index, _)| self.inner.layout.value_at(*index) <= bound)
                    .map(|(_, count)| count)
                    .sum();
                Some(HttpTotal {
                    method,
                    route,
                    status_class,
                    requests: gathered.total(),
                    within,
                })
            })
            .collect()
    }

    /// Query figures over the rolling window of `span`.
    pub fn query_window(&self, span: Duration) -> QueryWindow {
        self.inner.query_window(span, Instant::now())
    }

    /// Runs the registered component checks and applies the health rules to the
    /// shortest rolling window.
    pub async fn health(&self) -> HealthReport {
        let checks = self.inner.checks();
        let mut components = Vec::with_capacity(checks.len());
        for check in checks {
            components.push((check.key(), check.check().await));
        }
        self.evaluate(components)
    }

    /// The health rules alone over the shortest rolling window, without the
    /// component checks: how the traffic itself fares (its error rate, p99
    /// and slow requests and queries), the signal of load. A failing
    /// dependency shows here through the errors and latency it causes; a
    /// check's warning about configuration does not.
    pub fn load_health(&self) -> HealthStatus {
        self.evaluate(Vec::new()).health
    }

    fn evaluate(&self, components: Vec<(String, CheckResult)>) -> HealthReport {
        let span = self
            .inner
            .windows
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(60));
        let rules = &self.inner.rules;
        let now = Instant::now();
        health::evaluate(
            rules,
            &self
                .inner
                .http_window_without(span, now, &rules.ignored_routes),
            &self.inner.query_window(span, now),
            components,
        )
    }

    /// A JSON-ready snapshot of every registered metric, window and slow log
    /// (collectors are read only by the expositions).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.inner, Instant::now())
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
        format.write(&exposition::gather(&self.inner))
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
fn status_class(status: u16) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{DEFAULT_BUCKETS, MAX_BUCKETS};

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
