//! The families a scrape exposes, as both text formats read them: gathered by
//! `exposition.rs`, written by `text.rs` with `prometheus.rs` or
//! `openmetrics.rs`.

use crate::collector::Kind;

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

/// The value of one series.
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
