//! Scrape-time metrics: values read from elsewhere (a connection pool, a
//! client, `/proc`) each time the exposition is rendered; and `Kind`, the
//! type of a metric family with the names it takes, which registered metrics
//! share.

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }

    /// The OpenMetrics family name of a metric registered as `name`: a
    /// counter's drops its `_total`.
    pub(crate) fn family_name(self, name: &str) -> &str {
        match self {
            Self::Counter => name.strip_suffix("_total").unwrap_or(name),
            Self::Gauge | Self::Histogram => name,
        }
    }

    /// Every name a family `family` of this kind takes in either format: its
    /// family name and its sample names (`_created` included, which clients
    /// may expose).
    pub(crate) fn names(self, family: &str) -> Vec<String> {
        let suffixes: &[&str] = match self {
            Self::Counter => &["", "_total", "_created"],
            Self::Gauge => &[""],
            Self::Histogram => &["", "_bucket", "_count", "_sum", "_created"],
        };
        suffixes.iter().map(|s| format!("{family}{s}")).collect()
    }
}

/// A source of metrics read at every scrape, registered with
/// [`Monitor::register_collector`](crate::Monitor::register_collector).
///
/// Any `Fn() -> Vec<CollectedFamily> + Send + Sync` closure is a collector.
/// `collect` runs on the thread rendering the exposition: keep it cheap, and
/// never block or panic in it.
///
/// ```
/// use seawall_perfmon::{CollectedFamily, Monitor};
///
/// # fn main() -> Result<(), seawall_perfmon::Error> {
/// let monitor = Monitor::builder().namespace("app").build()?;
/// // In a service, these would be read from the pool and the client.
/// let (idle, in_use, redis_up) = (3.0, 1.0, true);
/// monitor.register_collector(move || {
///     vec![
///         CollectedFamily::gauge("db_pool_connections", "Connections in the pool.", &["state"])
///             .sample(&["idle"], idle)
///             .sample(&["in_use"], in_use),
///         CollectedFamily::gauge("redis_connected", "1 when the Redis client is connected.", &[])
///             .sample(&[], if redis_up { 1.0 } else { 0.0 }),
///     ]
/// })?;
///
/// let text = monitor.prometheus();
/// assert!(text.contains("app_db_pool_connections{state=\"idle\"} 3"));
/// assert!(text.contains("app_redis_connected 1"));
/// # Ok(())
/// # }
/// ```
pub trait Collector: Send + Sync {
    /// The families to expose now.
    fn collect(&self) -> Vec<CollectedFamily>;
}

impl<F> Collector for F
where
    F: Fn() -> Vec<CollectedFamily> + Send + Sync,
{
    fn collect(&self) -> Vec<CollectedFamily> {
        self()
    }
}

/// One metric family reported by a [`Collector`]: a gauge or a counter, with
/// label names and one sample per label set.
///
/// Names follow the rules of the monitor's own metrics: the monitor's namespace
/// is prefixed (unless [`without_namespace`](Self::without_namespace)), a
/// counter is exposed as `<name>_total`, and a name ending in a base unit
/// (`_seconds`, `_bytes`, ...) gets a `# UNIT` line in OpenMetrics. A family
/// that cannot be exposed (an invalid name or label name, a family or sample
/// name another metric takes) is left out of the scrape and counted in
/// `perfmon_collector_errors_total`; so is a sample with the wrong number of
/// label values, a label set already reported, or a counter value that is
/// negative or NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedFamily {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) label_names: Vec<String>,
    pub(crate) samples: Vec<(Vec<String>, f64)>,
    pub(crate) namespaced: bool,
}

impl CollectedFamily {
    /// A gauge family: values that go up and down.
    pub fn gauge(name: &str, help: &str, label_names: &[&str]) -> Self {
        Self::new(Kind::Gauge, name, help, label_names)
    }

    /// A counter family: values that only go up while the process lives. It is
    /// exposed as `<name>_total` (`name` may already end in `_total`).
    pub fn counter(name: &str, help: &str, label_names: &[&str]) -> Self {
        Self::new(Kind::Counter, name, help, label_names)
    }

    fn new(kind: Kind, name: &str, help: &str, label_names: &[&str]) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            help: help.to_owned(),
            label_names: label_names.iter().map(|l| (*l).to_owned()).collect(),
            samples: Vec::new(),
            namespaced: true,
        }
    }

    /// Adds the sample for these label values (in the order of the label names).
    #[must_use]
    pub fn sample(mut self, label_values: &[&str], value: f64) -> Self {
        self.samples.push((
            label_values.iter().map(|v| (*v).to_owned()).collect(),
            value,
        ));
        self
    }

    /// Exposes the family under its name as given, without the monitor's
    /// namespace: for standard names such as the `process_*` metrics.
    #[must_use]
    pub fn without_namespace(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// The name as given (without namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The samples so far: label values and value.
    pub fn samples(&self) -> &[(Vec<String>, f64)] {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_their_samples() {
        assert_eq!(Kind::Counter.family_name("jobs_total"), "jobs");
        assert_eq!(Kind::Counter.family_name("jobs"), "jobs");
        assert_eq!(Kind::Gauge.family_name("x_total"), "x_total");
        assert_eq!(
            Kind::Histogram.names("h"),
            ["h", "h_bucket", "h_count", "h_sum", "h_created"]
        );
    }
}
