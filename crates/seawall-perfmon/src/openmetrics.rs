//! The OpenMetrics 1.0 text exposition.
//!
//! Metadata comes in the order the standard recommends, `# TYPE`, `# UNIT`,
//! `# HELP`. A counter's family name has no `_total` (its samples do); a
//! family whose name ends in a base unit gets a `# UNIT` line; `le` bounds
//! are canonical numbers (`0.5`, `1.0`, `10.0`); families without series are
//! left out; the exposition ends with `# EOF`.

use std::fmt::Write as _;

use crate::exposition::{Exposed, Kind, Value, labels, number, unit_of};

/// The content type of [`Monitor::openmetrics`](crate::Monitor::openmetrics).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) fn write(families: &[Exposed]) -> String {
    let mut out = String::with_capacity(4096);
    for family in families.iter().filter(|f| !f.points.is_empty()) {
        let name = &family.name;
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        if let Some(unit) = unit_of(name) {
            let _ = writeln!(out, "# UNIT {name} {unit}");
        }
        if !family.help.is_empty() {
            let help = family
                .help
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
        }
        let sample = match family.kind {
            Kind::Counter => format!("{name}_total"),
            Kind::Gauge | Kind::Histogram => name.clone(),
        };
        for point in &family.points {
            let plain = labels(&family.label_names, &point.labels, None);
            match &point.value {
                Value::Int(value) => {
                    let _ = writeln!(out, "{sample}{plain} {value}");
                }
                Value::Float(value) => {
                    let _ = writeln!(out, "{sample}{plain} {}", number(*value));
                }
                Value::Histogram {
                    buckets,
                    count,
                    sum_seconds,
                } => {
                    for (bound, cumulative) in buckets {
                        #[allow(clippy::cast_precision_loss)] // bounds are small round numbers
                        let le = canonical(*bound as f64 / 1e6);
                        let bucket = labels(&family.label_names, &point.labels, Some(&le));
                        let _ = writeln!(out, "{name}_bucket{bucket} {cumulative}");
                    }
                    let inf = labels(&family.label_names, &point.labels, Some("+Inf"));
                    let _ = writeln!(out, "{name}_bucket{inf} {count}");
                    let _ = writeln!(out, "{name}_count{plain} {count}");
                    let _ = writeln!(out, "{name}_sum{plain} {}", number(*sum_seconds));
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A canonical number (OpenMetrics, "Canonical Numbers"): Go's shortest `%g`,
/// with `.0` added when there is neither a point nor an exponent.
fn canonical(value: f64) -> String {
    if !value.is_finite() {
        return number(value);
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if value != 0.0 && !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    } else {
        let plain = format!("{value}");
        if plain.contains('.') {
            plain
        } else {
            plain + ".0"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_canonical_numbers() {
        // The standard's own examples.
        let spell = |values: &[f64]| values.iter().map(|v| canonical(*v)).collect::<Vec<_>>();
        assert_eq!(
            spell(&[
                0.0, 0.001, 0.002, 0.01, 0.1, 0.9, 0.95, 0.99, 0.999, 1.0, 1.7, 10.0
            ]),
            [
                "0.0", "0.001", "0.002", "0.01", "0.1", "0.9", "0.95", "0.99", "0.999", "1.0",
                "1.7", "10.0"
            ]
        );
        assert_eq!(
            spell(&[
                1e-10, 1e-9, 1e-5, 1e-4, 0.1, 1.0, 1e5, 1e6, 1e10, 1e23, 1.1e23
            ]),
            [
                "1e-10", "1e-09", "1e-05", "0.0001", "0.1", "1.0", "100000.0", "1e+06", "1e+10",
                "1e+23", "1.1e+23"
            ]
        );
        assert_eq!(canonical(0.0005), "0.0005");
        assert_eq!(canonical(2.5), "2.5");
        assert_eq!(canonical(f64::INFINITY), "+Inf");
    }
}
