//! What the two text formats share: the loop over families, series and
//! samples (histograms as `_bucket`, `_sum` and `_count` lines), label sets
//! and sample values. A [`Dialect`] supplies the rest: the metadata lines,
//! whether a family without series is written, how a bucket bound is spelt,
//! and the order of `_sum` and `_count`.

use std::fmt::Write as _;

use crate::collector::Kind;
use crate::exposed::{Exposed, Value};

/// The parts of a text format that differ between Prometheus and OpenMetrics.
pub(crate) trait Dialect {
    /// Whether a family without series is written (its metadata alone).
    const EMPTY_FAMILIES: bool;
    /// Whether a histogram's `_count` line comes before its `_sum` line.
    const COUNT_BEFORE_SUM: bool;

    /// Writes the metadata lines of `family` (`# HELP`, `# TYPE`, ...).
    fn metadata(out: &mut String, family: &Exposed);

    /// A bucket bound, given in microseconds, as its `le` label value.
    fn bound(micros: u64) -> String;
}

/// The name of a family's samples: a counter's add `_total` to the family
/// name.
pub(crate) fn sample_name(family: &Exposed) -> String {
    match family.kind {
        Kind::Counter => format!("{}_total", family.name),
        Kind::Gauge | Kind::Histogram => family.name.clone(),
    }
}

/// Every family of `families` with its samples, in `D`.
pub(crate) fn write<D: Dialect>(families: &[Exposed]) -> String {
    let mut out = String::with_capacity(4096);
    for family in families {
        if family.points.is_empty() && !D::EMPTY_FAMILIES {
            continue;
        }
        D::metadata(&mut out, family);
        let name = sample_name(family);
        for point in &family.points {
            let plain = labels(&family.label_names, &point.labels, None);
            match &point.value {
                Value::Int(value) => {
                    let _ = writeln!(out, "{name}{plain} {value}");
                }
                Value::Float(value) => {
                    let _ = writeln!(out, "{name}{plain} {}", number(*value));
                }
                Value::Histogram {
                    buckets,
                    count,
                    sum_seconds,
                } => {
                    for (bound, cumulative) in buckets {
                        let le = D::bound(*bound);
                        let bucket = labels(&family.label_names, &point.labels, Some(&le));
                        let _ = writeln!(out, "{name}_bucket{bucket} {cumulative}");
                    }
                    let inf = labels(&family.label_names, &point.labels, Some("+Inf"));
                    let _ = writeln!(out, "{name}_bucket{inf} {count}");
                    if D::COUNT_BEFORE_SUM {
                        let _ = writeln!(out, "{name}_count{plain} {count}");
                        let _ = writeln!(out, "{name}_sum{plain} {}", number(*sum_seconds));
                    } else {
                        let _ = writeln!(out, "{name}_sum{plain} {}", number(*sum_seconds));
                        let _ = writeln!(out, "{name}_count{plain} {count}");
                    }
                }
            }
        }
    }
    out
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
fn escape(value: &str) -> String {
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
}
