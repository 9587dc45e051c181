//! Metric families: named metrics with label names and a capped set of series.

use std::hash::{Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use hashbrown::{Equivalent, HashMap};

use crate::{Error, Result};

/// The label value every label of the overflow series carries.
pub const OVERFLOW_LABEL: &str = "other";

/// Series by their label values; looked up with borrowed values
/// ([`LabelValues`]), so recording allocates nothing once a series exists.
type SeriesMap<S> = HashMap<Vec<String>, Arc<S>, RandomState>;

/// Label values as a caller passes them: hashes as the owned key does (a
/// slice of strings hashes its length, then each string).
struct LabelValues<'a>(&'a [&'a str]);

impl Hash for LabelValues<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Equivalent<Vec<String>> for LabelValues<'_> {
    fn equivalent(&self, key: &Vec<String>) -> bool {
        key.len() == self.0.len() && key.iter().zip(self.0).all(|(a, b)| a == b)
    }
}

/// A named metric with fixed label names and at most `max_series` series.
pub(crate) struct Family<S> {
    name: String,
    help: String,
    label_names: Vec<String>,
    /// Per label: whether it becomes [`OVERFLOW_LABEL`] when a label set is folded.
    /// Labels with few possible values (an HTTP method, a status class) keep theirs.
    folds: Vec<bool>,
    max_series: usize,
    series: RwLock<SeriesMap<S>>,
    overflow: RwLock<SeriesMap<S>>,
    folded: AtomicU64,
    /// A histogram's bucket bounds in µs, when not the exposition's default.
    bounds_us: Option<Vec<u64>>,
}

impl<S> Family<S> {
    pub(crate) fn new(
        name: &str,
        help: &str,
        label_names: &[&str],
        max_series: usize,
    ) -> Result<Self> {
        validate_name(name, false)?;
        validate_label_names(label_names)?;
        Ok(Self {
            name: name.to_owned(),
            help: help.to_owned(),
            label_names: label_names.iter().map(|l| (*l).to_owned()).collect(),
            folds: vec![true; label_names.len()],
            max_series: max_series.max(1),
            series: RwLock::new(HashMap::default()),
            overflow: RwLock::new(HashMap::default()),
            folded: AtomicU64::new(0),
            bounds_us: None,
        })
    }

    /// A histogram family exposed with these bucket bounds (µs) rather than
    /// the default ones.
    pub(crate) fn with_bounds(mut self, bounds_us: Option<Vec<u64>>) -> Self {
        self.bounds_us = bounds_us;
        self
    }

    /// The bucket bounds (µs) it is exposed with, when not the default.
    pub(crate) fn bounds_us(&self) -> Option<&[u64]> {
        self.bounds_us.as_deref()
    }

    /// Labels that keep their value when a label set is folded; only for labels
    /// whose values are a small fixed set, since each combination gets its own
    /// overflow series.
    pub(crate) fn keep_on_overflow(mut self, labels: &[&str]) -> Self {
        for (name, folds) in self.label_names.iter().zip(&mut self.folds) {
            *folds = !labels.contains(&name.as_str());
        }
        self
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn help(&self) -> &str {
        &self.help
    }

    pub(crate) fn label_names(&self) -> &[String] {
        &self.label_names
    }

    /// How many lookups were folded into an overflow series.
    pub(crate) fn folded(&self) -> u64 {
        self.folded.load(Relaxed)
    }

    pub(crate) fn same_labels(&self, label_names: &[&str]) -> bool {
        self.label_names.len() == label_names.len()
            && self
                .label_names
                .iter()
                .zip(label_names)
                .all(|(a, b)| a == b)
    }

    /// The series for `values`, created with `make` if new. Past the cap, new
    /// label sets go to an overflow series whose folding labels read
    /// [`OVERFLOW_LABEL`] (the others keep their values).
    pub(crate) fn get(&self, values: &[&str], make: impl Fn() -> S) -> Result<Arc<S>> {
        if values.len() != self.label_names.len() {
            return Err(Error::LabelCount {
                name: self.name.clone(),
                expected: self.label_names.clone(),
                got: values.len(),
            });
        }
        let is_overflow_set = values
            .iter()
            .zip(&self.folds)
            .all(|(value, folds)| !folds || *value == OVERFLOW_LABEL);
        if is_overflow_set {
            // Already the overflow label set; keep it a single series.
            return Ok(self.overflow_series(values, &make));
        }
        let query = LabelValues(values);
        {
            let map = read(&self.series);
            if let Some(series) = map.get(&query) {
                return Ok(Arc::clone(series));
            }
            // At the cap, skip the write lock: a flood of new label sets must not
            // serialise every recording thread.
            if map.len() >= self.max_series {
                drop(map);
                self.folded.fetch_add(1, Relaxed);
                return Ok(self.overflow_series(values, &make));
            }
        }
        let mut map = write(&self.series);
        if let Some(series) = map.get(&query) {
            return Ok(Arc::clone(series));
        }
        if map.len() < self.max_series {
            let series = Arc::new(make());
            map.insert(owned(values), Arc::clone(&series));
            return Ok(series);
        }
        drop(map);
        self.folded.fetch_add(1, Relaxed);
        Ok(self.overflow_series(values, &make))
    }

    /// The overflow series `values` fold into.
    fn overflow_series(&self, values: &[&str], make: &impl Fn() -> S) -> Arc<S> {
        let folded: Vec<&str> = values
            .iter()
            .zip(&self.folds)
            .map(|(value, folds)| if *folds { OVERFLOW_LABEL } else { value })
            .collect();
        let query = LabelValues(&folded);
        if let Some(series) = read(&self.overflow).get(&query) {
            return Arc::clone(series);
        }
        Arc::clone(
            write(&self.overflow)
                .entry(owned(&folded))
                .or_insert_with(|| Arc::new(make())),
        )
    }

    /// Every series with its label values, overflow series last; sorted so
    /// output is stable.
    pub(crate) fn all(&self) -> Vec<(Vec<String>, Arc<S>)> {
        let sorted = |map: &SeriesMap<S>| {
            let mut all: Vec<_> = map
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let mut all = sorted(&read(&self.series));
        all.extend(sorted(&read(&self.overflow)));
        all
    }
}

fn owned(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks label names: each valid, none twice.
pub(crate) fn validate_label_names(label_names: &[&str]) -> Result<()> {
    for (i, label) in label_names.iter().enumerate() {
        validate_name(label, true)?;
        if label_names[..i].contains(label) {
            return Err(Error::InvalidName {
                name: (*label).to_owned(),
                reason: "label names must be unique",
            });
        }
    }
    Ok(())
}

/// Checks a Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or label name
/// (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`).
pub(crate) fn validate_name(name: &str, label: bool) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return invalid("must not be empty");
    };
    let allowed = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (!label && c == ':')
            || (!first && c.is_ascii_digit())
    };
    if !allowed(first, true) || !chars.all(|c| allowed(c, false)) {
        return invalid(if label {
            "label names match [a-zA-Z_][a-zA-Z0-9_]*"
        } else {
            "metric names match [a-zA-Z_:][a-zA-Z0-9_:]*"
        });
    }
    if label && name.starts_with("__") {
        return invalid("label names starting with `__` are reserved");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_past_the_cap_fold_into_other() -> Result<()> {
        let family: Family<AtomicU64> = Family::new("requests_total", "help", &["route"], 2)?;
        let a = family.get(&["/a"], || AtomicU64::new(0))?;
        let a_again = family.get(&["/a"], || AtomicU64::new(0))?;
        assert!(Arc::ptr_eq(&a, &a_again));
        family.get(&["/b"], || AtomicU64::new(0))?;
        let c = family.get(&["/c"], || AtomicU64::new(0))?;
        let d = family.get(&["/d"], || AtomicU64::new(0))?;
        assert!(Arc::ptr_eq(&c, &d));
        assert_eq!(family.folded(), 2);
        let labels: Vec<_> = family
            .all()
            .into_iter()
            .map(|(labels, _)| labels.join(","))
            .collect();
        assert_eq!(labels, ["/a", "/b", OVERFLOW_LABEL]);
        Ok(())
    }

    #[test]
    fn folding_keeps_the_labels_marked_as_bounded() -> Result<()> {
        let family: Family<AtomicU64> =
            Family::new("http", "help", &["route", "class"], 1)?.keep_on_overflow(&["class"]);
        family.get(&["/a", "2xx"], || AtomicU64::new(0))?;
        let ok = family.get(&["/b", "2xx"], || AtomicU64::new(0))?;
        let error = family.get(&["/c", "5xx"], || AtomicU64::new(0))?;
        let error_again = family.get(&["/d", "5xx"], || AtomicU64::new(0))?;
        assert!(!Arc::ptr_eq(&ok, &error));
        assert!(Arc::ptr_eq(&error, &error_again));
        let labels: Vec<_> = family.all().into_iter().map(|(l, _)| l.join(",")).collect();
        assert_eq!(labels, ["/a,2xx", "other,2xx", "other,5xx"]);
        assert_eq!(family.folded(), 3);
        Ok(())
    }

    #[test]
    fn wrong_label_counts_and_bad_names_are_errors() -> Result<()> {
        let family: Family<AtomicU64> = Family::new("x", "help", &["a", "b"], 2)?;
        assert!(matches!(
            family.get(&["1"], || AtomicU64::new(0)),
            Err(Error::LabelCount { got: 1, .. })
        ));
        assert!(Family::<AtomicU64>::new("1x", "", &[], 1).is_err());
        assert!(Family::<AtomicU64>::new("x", "", &["__a"], 1).is_err());
        assert!(Family::<AtomicU64>::new("x", "", &["a", "a"], 1).is_err());
        assert!(Family::<AtomicU64>::new("x", "", &["a:b"], 1).is_err());
        assert!(Family::<AtomicU64>::new("ns:x_total", "", &["le_x"], 1).is_ok());
        Ok(())
    }
}
