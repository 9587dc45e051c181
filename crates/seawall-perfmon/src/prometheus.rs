//! The Prometheus text exposition (format 0.0.4). A counter's family is named
//! after its samples, `<name>_total`; families without series still get
//! their `# HELP` and `# TYPE` lines.

use std::fmt::Write as _;

use crate::exposition::{Exposed, Kind, Value, labels, number};

/// The content type of [`Monitor::prometheus`](crate::Monitor::prometheus).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn write(families: &[Exposed]) -> String {
    let mut out = String::with_capacity(4096);
    for family in families {
        let name = match family.kind {
            Kind::Counter => format!("{}_total", family.name),
            Kind::Gauge | Kind::Histogram => family.name.clone(),
        };
        let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
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
                        let le = seconds(*bound);
                        let bucket = labels(&family.label_names, &point.labels, Some(&le));
                        let _ = writeln!(out, "{name}_bucket{bucket} {cumulative}");
                    }
                    let inf = labels(&family.label_names, &point.labels, Some("+Inf"));
                    let _ = writeln!(out, "{name}_bucket{inf} {count}");
                    let _ = writeln!(out, "{name}_sum{plain} {}", number(*sum_seconds));
                    let _ = writeln!(out, "{name}_count{plain} {count}");
                }
            }
        }
    }
    out
}

/// A bucket bound in seconds, as plain decimals (`0.0025`, `10`).
fn seconds(micros: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // bounds are small round numbers
    let value = micros as f64 / 1e6;
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_plain_seconds() {
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(10_000_000), "10");
    }
}
