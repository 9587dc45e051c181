//! The Prometheus text exposition (format 0.0.4). A counter's family is named
//! after its samples, `<name>_total`; families without series still get
//! their `# HELP` and `# TYPE` lines; bucket bounds are plain decimals
//! (`0.0025`, `10`); a histogram's `_sum` comes before its `_count`.

use std::fmt::Write as _;

use crate::exposed::Exposed;
use crate::text::{self, Dialect, sample_name};

/// The content type of [`Monitor::prometheus`](crate::Monitor::prometheus).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text format, as a [`Dialect`].
struct Prometheus;

impl Dialect for Prometheus {
    const EMPTY_FAMILIES: bool = true;
    const COUNT_BEFORE_SUM: bool = false;

    fn metadata(out: &mut String, family: &Exposed) {
        let name = sample_name(family);
        let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
    }

    fn bound(micros: u64) -> String {
        seconds(micros)
    }
}

pub(crate) fn write(families: &[Exposed]) -> String {
    text::write::<Prometheus>(families)
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
