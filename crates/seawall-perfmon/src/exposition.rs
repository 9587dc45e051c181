//! What a scrape exposes: the registered metrics, then the collected
//! families, then the crate's own `perfmon_*` counters, gathered once into
//! the families of `exposed.rs` that either text format writes; and the check
//! of a collector before it is registered.
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

use crate::collector::{CollectedFamily, Collector, Kind};
use crate::exposed::{Exposed, Point, Value};
use crate::histogram::default_bounds_us;
use crate::inner::{Inner, RESERVED_PREFIX};
use crate::registry::{validate_label_names, validate_name};
use crate::{Error, Result};

/// The families the crate exposes about itself, all counters.
const FOLDED: &str = "perfmon_folded_series";
const SLOW: &str = "perfmon_slow_operations";
const COLLECTOR_ERRORS: &str = "perfmon_collector_errors";

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
        let default_bounds = default_bounds_us();
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
