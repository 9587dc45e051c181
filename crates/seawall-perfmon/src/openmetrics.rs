//! The OpenMetrics 1.0 text exposition.
//!
//! Metadata comes in the order the standard recommends, `# TYPE`, `# UNIT`,
//! `# HELP`. A counter's family name has no `_total` (its samples do); a
//! family whose name ends in a base unit gets a `# UNIT` line; `le` bounds
//! are canonical numbers (`0.5`, `1.0`, `10.0`); families without series are
//! left out; a histogram's `_count` comes before its `_sum`; the exposition
//! ends with `# EOF`.

use std::fmt::Write as _;

use crate::exposed::Exposed;
use crate::text::{self, Dialect, number};

/// The content type of [`Monitor::openmetrics`](crate::Monitor::openmetrics).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// OpenMetrics 1.0 text, as a [`Dialect`].
struct OpenMetrics;

impl Dialect for OpenMetrics {
    const EMPTY_FAMILIES: bool = false;
    const COUNT_BEFORE_SUM: bool = true;

    fn metadata(out: &mut String, family: &Exposed) {
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
    }

    fn bound(micros: u64) -> String {
        #[allow(clippy::cast_precision_loss)] // bounds are small round numbers
        canonical(micros as f64 / 1e6)
    }
}

pub(crate) fn write(families: &[Exposed]) -> String {
    let mut out = text::write::<OpenMetrics>(families);
    out.push_str("# EOF\n");
    out
}

/// Base units (OpenMetrics, "Units and Base Units"): a family whose name ends
/// in `_<unit>` declares that unit.
const BASE_UNITS: [&str; 9] = [
    "seconds", "bytes", "joules", "grams", "meters", "ratio", "volts", "amperes", "celsius",
];

/// The unit a family name declares by its suffix, if any.
fn unit_of(family: &str) -> Option<&'static str> {
    BASE_UNITS.into_iter().find(|unit| {
        family
            .strip_suffix(unit)
            .and_then(|rest| rest.strip_suffix('_'))
            .is_some_and(|rest| !rest.is_empty())
    })
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
}
