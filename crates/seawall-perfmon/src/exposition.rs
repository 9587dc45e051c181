//! What a scrape exposes, gathered once and then written in either text
//! format (`prometheus.rs`, `openmetrics.rs`), and the choice between them.
//!
//! Histograms are exposed with lifetime (monotonic) counts in fixed `le`
//! buckets, in seconds. A sample counts in a bucket when the lowest value of
//! its HDR bucket is at or below the bound: with the default 3 significant
//! digits, bounds under 2 ms (where HDR buckets are one microsecond wide) are
//! exact and larger ones are within 0.1 %.
//!
//! Every family and sample name is exposed once: registration refuses a
//! metric whose names would clash with another's, and a collected family that
//! cannot be exposed is left out (and counted) rather than breaking the scrape.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use crate::collector::{CollectedFamily, Collector};
use crate::monitor::{DEFAULT_BUCKETS, Inner, RESERVED_PREFIX};
use crate::registry::{validate_label_names, validate_name};
use crate::{Error, Result};

/// Base units (OpenMetrics, "Units and Base Units"): a family whose name ends
/// in `_<unit>` declares that unit.
const BASE_UNITS: [&str; 9] = [
    "seconds", "bytes", "joules", "grams", "meters", "ratio", "volts", "amperes", "celsius",
];

/// The families the crate exposes about itself, all counters.
const FOLDED: &str = "perfmon_folded_series";
const SLOW: &str = "perfmon_slow_operations";
const COLLECTOR_ERRORS: &str = "perfmon_collector_errors";

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

/// The unit a family name declares by its suffix, if any.
pub(crate) fn unit_of(family: &str) -> Option<&'static str> {
    BASE_UNITS.into_iter().find(|unit| {
        family
            .strip_suffix(unit)
            .and_then(|rest| rest.strip_suffix('_'))
            .is_some_and(|rest| !rest.is_empty())
    })
}

/// One family, ready to write.
#[derive(Debug)]
pub(crate) struct Exposed {
    /// The OpenMetrics family name, namespace included: a counter's samples
    /// add `_total` to it.
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) kind: Kind,
    pub(crate) label_names: Vec<String>,
    pub(crate) points: Vec<Point>,
}

/// One series of a family.
#[derive(Debug)]
pub(crate) struct Point {
    pub(crate) labels: Vec<String>,
    pub(crate) value: Value,
}

#[derive(Debug)]
pub(crate) enum Value {
    Int(u64),
    Float(f64),
    Histogram {
        /// Upper bound in microseconds and cumulative count, `+Inf` excluded.
        buckets: Vec<(u64, u64)>,
        count: u64,
        sum_seconds: f64,
    },
}

/// Families in the order they are written, and the names they take.
struct Exposition {
    families: Vec<Exposed>,
    claimed: HashSet<String>,
}

/// Everything a scrape exposes. Runs every registered collector.
pub(crate) fn gather(inner: &Inner) -> Vec<Exposed> {
    let mut errors = Vec::new();
    let mut exposition = Exposition::registered(inner);
    for collector in inner.collectors() {
        exposition.add_collected(inner, collector.collect(), &mut errors);
    }
    let dropped = u64::try_from(errors.len()).unwrap_or(u64::MAX);
    inner.collector_errors.fetch_add(dropped, Relaxed);
    exposition.finish(inner)
}

/// What `collector` would report that cannot be exposed, next to the metrics
/// and collectors registered now.
pub(crate) fn check_collector(inner: &Inner, collector: &dyn Collector) -> Vec<Error> {
    let mut exposition = Exposition::registered(inner);
    for existing in inner.collectors() {
        exposition.add_collected(inner, existing.collect(), &mut Vec::new());
    }
    let mut errors = Vec::new();
    exposition.add_collected(inner, collector.collect(), &mut errors);
    errors
}

impl Exposition {
    /// The registered metrics, with the crate's own names reserved.
    fn registered(inner: &Inner) -> Self {
        let mut this = Self {
            families: Vec::new(),
            claimed: HashSet::new(),
        };
        for own in [FOLDED, SLOW, COLLECTOR_ERRORS] {
            this.claim(Kind::Counter, &inner.prefixed(own));
        }
        let default_bounds: Vec<u64> = DEFAULT_BUCKETS
            .iter()
            .map(|bound| u64::try_from(bound.as_micros()).unwrap_or(u64::MAX))
            .collect();
        for family in inner.histogram_families() {
            let bounds = family.bounds_us().unwrap_or(&default_bounds);
            let points = family
                .all()
                .into_iter()
                .map(|(labels, series)| {
                    let gathered = series.lifetime();
                    let mut cumulative = 0_u64;
                    let mut counts = gathered.counts.iter().peekable();
                    let buckets = bounds
                        .iter()
                        .map(|&bound| {
                            while let Some((_, count)) =
                                counts.next_if(|(index, _)| inner.layout.value_at(*index) <= bound)
                            {
                                cumulative = cumulative.saturating_add(count);
                            }
                            (bound, cumulative)
                        })
                        .collect();
                    #[allow(clippy::cast_precision_loss)] // exposition value
                    let sum_seconds = gathered.sum as f64 / 1e6;
                    Point {
                        labels,
                        value: Value::Histogram {
                            buckets,
                            count: gathered.total(),
                            sum_seconds,
                        },
                    }
                })
                .collect();
            this.push(Exposed {
                name: inner.prefixed(family.name()),
                help: family.help().to_owned(),
                kind: Kind::Histogram,
                label_names: family.label_names().to_vec(),
                points,
            });
        }
        for family in inner.counter_families() {
            this.push(Exposed {
                name: inner.prefixed(Kind::Counter.family_name(family.name())),
                help: family.help().to_owned(),
                kind: Kind::Counter,
                label_names: family.label_names().to_vec(),
                points: family
                    .all()
                    .into_iter()
                    .map(|(labels, value)| Point {
                        labels,
                        value: Value::Int(value.load(Relaxed)),
                    })
                    .collect(),
            });
        }
        for family in inner.gauge_families() {
            this.push(Exposed {
                name: inner.prefixed(family.name()),
                help: family.help().to_owned(),
                kind: Kind::Gauge,
                label_names: family.label_names().to_vec(),
                points: family
                    .all()
                    .into_iter()
                    .map(|(labels, cell)| Point {
                        labels,
                        value: Value::Float(cell.get()),
                    })
                    .collect(),
            });
        }
        this
    }

    fn claim(&mut self, kind: Kind, family: &str) {
        self.claimed.extend(kind.names(family));
    }

    fn push(&mut self, family: Exposed) {
        self.claim(family.kind, &family.name);
        self.families.push(family);
    }

    /// Adds what a collector reported, leaving out (and listing in `errors`)
    /// each family and sample that cannot be exposed.
    fn add_collected(
        &mut self,
        inner: &Inner,
        families: Vec<CollectedFamily>,
        errors: &mut Vec<Error>,
    ) {
        for family in families {
            match self.check(inner, family, errors) {
                Ok(exposed) => self.push(exposed),
                Err(error) => errors.push(error),
            }
        }
    }

    fn check(
        &self,
        inner: &Inner,
        family: CollectedFamily,
        errors: &mut Vec<Error>,
    ) -> Result<Exposed> {
        let CollectedFamily {
            kind,
            name,
            help,
            label_names,
            samples,
            namespaced,
        } = family;
        let given = kind.family_name(&name);
        validate_name(given, false)?;
        if given.starts_with(RESERVED_PREFIX) {
            return Err(Error::Conflict {
                name,
                what: "kind: the name is reserved for built-in metrics",
            });
        }
        let label_refs: Vec<&str> = label_names.iter().map(String::as_str).collect();
        validate_label_names(&label_refs)?;
        let full = if namespaced {
            inner.prefixed(given)
        } else {
            given.to_owned()
        };
        if kind.names(&full).iter().any(|n| self.claimed.contains(n)) {
            return Err(Error::Conflict {
                name: full,
                what: "kind: its family or sample names are another metric's",
            });
        }
        let mut seen = HashSet::new();
        let mut points = Vec::with_capacity(samples.len());
        for (labels, value) in samples {
            let invalid = |reason: String| Error::InvalidCollected {
                name: full.clone(),
                reason,
            };
            if labels.len() != label_names.len() {
                errors.push(Error::LabelCount {
                    name: full.clone(),
                    expected: label_names.clone(),
                    got: labels.len(),
                });
            } else if kind == Kind::Counter && (value.is_nan() || value < 0.0) {
                errors.push(invalid(format!(
                    "counter value {value} for {labels:?} is negative or NaN"
                )));
            } else if !seen.insert(labels.clone()) {
                errors.push(invalid(format!("series {labels:?} is reported twice")));
            } else {
                points.push(Point {
                    labels,
                    value: Value::Float(value),
                });
            }
        }
        Ok(Exposed {
            name: full,
            help,
            kind,
            label_names,
            points,
        })
    }

    /// Adds the crate's own families, last.
    fn finish(mut self, inner: &Inner) -> Vec<Exposed> {
        let metric = vec!["metric".to_owned()];
        let histograms = inner.histogram_families();
        let folded = histograms
            .iter()
            .map(|f| (f.name().to_owned(), f.folded()))
            .chain(
                inner
                    .counter_families()
                    .iter()
                    .map(|f| (f.name().to_owned(), f.folded())),
            )
            .chain(
                inner
                    .gauge_families()
                    .iter()
                    .map(|f| (f.name().to_owned(), f.folded())),
            )
            .map(|(name, folded)| Point {
                labels: vec![name],
                value: Value::Int(folded),
            })
            .collect();
        self.families.push(Exposed {
            name: inner.prefixed(FOLDED),
            help: "Series lookups folded into an overflow series because a metric reached its series cap."
                .to_owned(),
            kind: Kind::Counter,
            label_names: metric,
            points: folded,
        });
        self.families.push(Exposed {
            name: inner.prefixed(SLOW),
            help: "Operations slower than their slow-log threshold.".to_owned(),
            kind: Kind::Counter,
            label_names: vec!["kind".to_owned()],
            points: vec![
                Point {
                    labels: vec!["query".to_owned()],
                    value: Value::Int(inner.slow_queries.total()),
                },
                Point {
                    labels: vec!["api".to_owned()],
                    value: Value::Int(inner.slow_apis.total()),
                },
            ],
        });
        self.families.push(Exposed {
            name: inner.prefixed(COLLECTOR_ERRORS),
            help: "Families and samples reported by collectors that were left out of a scrape because they could not be exposed."
                .to_owned(),
            kind: Kind::Counter,
            label_names: Vec::new(),
            points: vec![Point {
                labels: Vec::new(),
                value: Value::Int(inner.collector_errors.load(Relaxed)),
            }],
        });
        self.families
    }
}

/// `{name="value",...}` with values escaped, the `le` label last if given;
/// empty when there are no labels.
pub(crate) fn labels(names: &[String], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as both formats read it: `+Inf`, `-Inf`, `NaN`, plain
/// decimals for ordinary magnitudes, and scientific notation for the others
/// (which plain decimals would spell out in hundreds of digits).
pub(crate) fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value == 0.0 || (1e-4..1e15).contains(&value.abs()) {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

/// Which text format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpositionFormat {
    /// The Prometheus text format, version 0.0.4
    /// ([`PROMETHEUS_CONTENT_TYPE`](crate::PROMETHEUS_CONTENT_TYPE)).
    Prometheus,
    /// OpenMetrics 1.0 text ([`OPENMETRICS_CONTENT_TYPE`](crate::OPENMETRICS_CONTENT_TYPE)).
    OpenMetrics,
}

impl ExpositionFormat {
    /// The format to answer a request with this `Accept` header (`None` when
    /// the request has none; join several headers with `,`).
    ///
    /// OpenMetrics when the header lists `application/openmetrics-text`
    /// (without a `version`, or `version=1.0.0`) with a non-zero `q` at least
    /// that of any range covering `text/plain` (`text/plain`, `text/*`,
    /// `*/*`); the Prometheus text format otherwise, which is also what an
    /// absent or unreadable header gets. Prometheus servers list OpenMetrics
    /// first, so they get OpenMetrics.
    ///
    /// ```
    /// use seawall_perfmon::ExpositionFormat;
    ///
    /// let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
    ///                   text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// assert_eq!(ExpositionFormat::from_accept(Some(prometheus)), ExpositionFormat::OpenMetrics);
    /// assert_eq!(ExpositionFormat::from_accept(Some("*/*")), ExpositionFormat::Prometheus);
    /// assert_eq!(ExpositionFormat::from_accept(None), ExpositionFormat::Prometheus);
    /// assert_eq!(
    ///     ExpositionFormat::from_accept(Some("application/openmetrics-text;q=0")),
    ///     ExpositionFormat::Prometheus
    /// );
    /// ```
    pub fn from_accept(accept: Option<&str>) -> Self {
        let mut openmetrics = 0.0_f64;
        let mut text = 0.0_f64;
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0;
            let mut version = None;
            let mut valid = true;
            for param in parts {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => match value.parse::<f64>() {
                        Ok(parsed) if (0.0..=1.0).contains(&parsed) => q = parsed,
                        _ => valid = false,
                    },
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            if !valid {
                continue;
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if version.as_deref().is_none_or(|v| v == "1.0.0") =>
                {
                    openmetrics = openmetrics.max(q);
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => crate::PROMETHEUS_CONTENT_TYPE,
            Self::OpenMetrics => crate::OPENMETRICS_CONTENT_TYPE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let names = vec!["route".to_owned()];
        let values = vec!["a\"b\\c\nd".to_owned()];
        assert_eq!(labels(&names, &values, None), r#"{route="a\"b\\c\nd"}"#);
        assert_eq!(labels(&[], &[], Some("+Inf")), r#"{le="+Inf"}"#);
        assert_eq!(labels(&[], &[], None), "");
    }

    #[test]
    fn numbers_are_readable_in_both_formats() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(3.336), "3.336");
        assert_eq!(number(1_234_567.0), "1234567");
        assert_eq!(number(-2.5), "-2.5");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1.5e-7), "1.5e-7");
        assert_eq!(number(1.8e19), "1.8e19");
    }

    #[test]
    fn units_come_from_the_name_suffix() {
        assert_eq!(unit_of("process_cpu_seconds"), Some("seconds"));
        assert_eq!(unit_of("process_resident_memory_bytes"), Some("bytes"));
        assert_eq!(unit_of("cache_hit_ratio"), Some("ratio"));
        assert_eq!(unit_of("seconds"), None);
        assert_eq!(unit_of("_seconds"), None);
        assert_eq!(unit_of("jobs_processed"), None);
        assert_eq!(unit_of("milliseconds"), None);
    }

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
