//! Prometheus text exposition (format 0.0.4).
//!
//! Histograms are exposed with lifetime (monotonic) counts in fixed `le`
//! buckets, in seconds. A sample counts in a bucket when the lowest value of
//! its HDR bucket is at or below the bound: with the default 3 significant
//! digits, bounds under 2 ms (where HDR buckets are one microsecond wide) are
//! exact and larger ones are within 0.1 %.

use std::fmt::Write as _;

use crate::monitor::Inner;
use crate::registry::Family;
use crate::series::Series;

/// The content type of [`Monitor::prometheus`](crate::Monitor::prometheus).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds in microseconds: 0.5 ms to 10 s.
const BOUNDS_US: [u64; 15] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_000_000, 2_500_000, 5_000_000, 10_000_000,
];

pub(crate) fn render(inner: &Inner) -> String {
    let mut out = String::with_capacity(4096);
    let name = |base: &str| match &inner.namespace {
        Some(namespace) => format!("{namespace}_{base}"),
        None => base.to_owned(),
    };
    for family in inner.histogram_families() {
        render_histogram(&mut out, inner, &name(family.name()), &family);
    }
    for family in inner.counter_families() {
        let base = name(family.name());
        let full = if base.ends_with("_total") {
            base
        } else {
            format!("{base}_total")
        };
        header(&mut out, &full, family.help(), "counter");
        for (values, value) in family.all() {
            let labels = labels(family.label_names(), &values, None);
            let _ = writeln!(
                out,
                "{full}{labels} {}",
                value.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }

    let folded = name("perfmon_folded_series_total");
    header(
        &mut out,
        &folded,
        "Series lookups folded into an overflow series because a metric reached its series cap.",
        "counter",
    );
    for family in inner.histogram_families() {
        let _ = writeln!(
            out,
            "{folded}{{metric=\"{}\"}} {}",
            family.name(),
            family.folded()
        );
    }
    for family in inner.counter_families() {
        let _ = writeln!(
            out,
            "{folded}{{metric=\"{}\"}} {}",
            family.name(),
            family.folded()
        );
    }

    let slow = name("perfmon_slow_operations_total");
    header(
        &mut out,
        &slow,
        "Operations slower than their slow-log threshold.",
        "counter",
    );
    let _ = writeln!(
        out,
        "{slow}{{kind=\"query\"}} {}",
        inner.slow_queries.total()
    );
    let _ = writeln!(out, "{slow}{{kind=\"api\"}} {}", inner.slow_apis.total());
    out
}

fn render_histogram(out: &mut String, inner: &Inner, name: &str, family: &Family<Series>) {
    header(out, name, family.help(), "histogram");
    for (values, series) in family.all() {
        let gathered = series.lifetime();
        let mut cumulative = 0_u64;
        let mut counts = gathered.counts.iter().peekable();
        for bound in BOUNDS_US {
            while let Some((_, count)) =
                counts.next_if(|(index, _)| inner.layout.value_at(*index) <= bound)
            {
                cumulative = cumulative.saturating_add(count);
            }
            let le = seconds(bound);
            let _ = writeln!(
                out,
                "{name}_bucket{} {cumulative}",
                labels(family.label_names(), &values, Some(&le))
            );
        }
        let total = gathered.total();
        let _ = writeln!(
            out,
            "{name}_bucket{} {total}",
            labels(family.label_names(), &values, Some("+Inf"))
        );
        let plain = labels(family.label_names(), &values, None);
        #[allow(clippy::cast_precision_loss)] // exposition value
        let sum = gathered.sum as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{plain} {sum}");
        let _ = writeln!(out, "{name}_count{plain} {total}");
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn seconds(micros: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // bounds are small round numbers
    let value = micros as f64 / 1e6;
    format!("{value}")
}

fn labels(names: &[String], values: &[String], le: Option<&str>) -> String {
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

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(10_000_000), "10");
    }
}
