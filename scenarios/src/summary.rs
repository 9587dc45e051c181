//! Thresholds and invariants, and the k6-like summary of a scenario.

use std::collections::BTreeMap;

use goose::metrics::GooseMetrics;
use serde::Serialize;

/// How an observed value must compare with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Bound {
    /// Strictly below.
    Below,
    /// At least.
    AtLeast,
}

/// One threshold, observed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Threshold {
    pub(crate) name: String,
    pub(crate) observed: f64,
    pub(crate) bound: Bound,
    pub(crate) limit: f64,
    pub(crate) unit: &'static str,
    pub(crate) passed: bool,
    /// A figure of speed (a latency, a rate) rather than of correctness
    /// (checks passed, errors): a run with `--report-latency` reports it
    /// without judging it.
    pub(crate) speed: bool,
}

impl Threshold {
    /// A threshold of correctness, always judged.
    pub(crate) fn new(
        name: impl Into<String>,
        observed: f64,
        bound: Bound,
        limit: f64,
        unit: &'static str,
    ) -> Self {
        Self::with_kind(name, observed, bound, limit, unit, false)
    }

    /// A threshold of speed (a latency or a rate), judged unless the run
    /// only reports speed.
    pub(crate) fn speed(
        name: impl Into<String>,
        observed: f64,
        bound: Bound,
        limit: f64,
        unit: &'static str,
    ) -> Self {
        Self::with_kind(name, observed, bound, limit, unit, true)
    }

    fn with_kind(
        name: impl Into<String>,
        observed: f64,
        bound: Bound,
        limit: f64,
        unit: &'static str,
        speed: bool,
    ) -> Self {
        let passed = match bound {
            Bound::Below => observed < limit,
            Bound::AtLeast => observed >= limit,
        };
        Self {
            name: name.into(),
            observed,
            bound,
            limit,
            unit,
            passed,
            speed,
        }
    }
}

/// One invariant, counted by the service in its database and store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Invariant {
    pub(crate) name: String,
    pub(crate) observed: i64,
    pub(crate) expected: i64,
    pub(crate) passed: bool,
}

impl Invariant {
    pub(crate) fn equal(name: impl Into<String>, observed: i64, expected: i64) -> Self {
        Self {
            name: name.into(),
            observed,
            expected,
            passed: observed == expected,
        }
    }
}

/// One request name's figures, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: usize,
    pub(crate) passed: usize,
    pub(crate) failed: usize,
    pub(crate) errors: usize,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) statuses: BTreeMap<u16, usize>,
}

/// Per request name (without goose's method prefix), and all together.
pub(crate) fn latencies(metrics: &GooseMetrics) -> BTreeMap<String, Latency> {
    let mut out = BTreeMap::new();
    for (key, aggregate) in &metrics.requests {
        let name = key.split_once(' ').map_or(key.as_str(), |(_, name)| name);
        let data = &aggregate.raw_data;
        let ms = |us: u64| {
            #[allow(clippy::cast_precision_loss)] // microseconds far below 2^52
            let ms = us as f64 / 1000.0;
            ms
        };
        let statuses: BTreeMap<u16, usize> = aggregate
            .status_code_counts
            .iter()
            .map(|(status, count)| (*status, *count))
            .collect();
        let errors = statuses
            .iter()
            .filter(|(status, _)| **status == 0 || **status >= 500)
            .map(|(_, count)| count)
            .sum();
        out.insert(
            name.to_owned(),
            Latency {
                count: data.counter,
                passed: aggregate.success_count,
                failed: aggregate.fail_count,
                errors,
                mean_ms: if data.counter == 0 {
                    0.0
                } else {
                    data.average_ms()
                },
                p50_ms: ms(data.percentile_us(0.50)),
                p95_ms: ms(data.percentile_us(0.95)),
                p99_ms: ms(data.percentile_us(0.99)),
                max_ms: ms(data.maximum_time_us),
                statuses,
            },
        );
    }
    out
}

/// What one scenario came to.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    pub(crate) scenario: String,
    pub(crate) deployment: String,
    pub(crate) users: usize,
    pub(crate) seconds: f64,
    pub(crate) requests: usize,
    pub(crate) requests_per_second: f64,
    pub(crate) checks_passed: usize,
    pub(crate) checks_failed: usize,
    pub(crate) error_rate: f64,
    pub(crate) latency: BTreeMap<String, Latency>,
    pub(crate) figures: BTreeMap<String, f64>,
    pub(crate) thresholds: Vec<Threshold>,
    pub(crate) invariants: Vec<Invariant>,
    pub(crate) failures: Vec<String>,
    /// Whether the thresholds of speed count towards [`Outcome::passed`]
    /// (`--report-latency` reports them only).
    pub(crate) judge_speed: bool,
}

impl Outcome {
    /// Whether `threshold` decides this run's outcome.
    fn judges(&self, threshold: &Threshold) -> bool {
        self.judge_speed || !threshold.speed
    }

    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
            && self.thresholds.iter().all(|t| t.passed || !self.judges(t))
            && self.invariants.iter().all(|i| i.passed)
    }

    /// Prints the summary, the way k6 ends a run.
    pub(crate) fn print(&self) {
        let mark = |ok: bool| if ok { "✓" } else { "✗" };
        println!();
        println!(
            "scenario {} on {} — {} virtual users, {:.1} s{}",
            self.scenario,
            self.deployment,
            self.users,
            self.seconds,
            if self.judge_speed {
                ""
            } else {
                " (latencies and rates reported, not judged: ·)"
            }
        );
        for threshold in &self.thresholds {
            let op = match threshold.bound {
                Bound::Below => "<",
                Bound::AtLeast => ">=",
            };
            let marker = if self.judges(threshold) {
                mark(threshold.passed)
            } else {
                "·"
            };
            println!(
                "  {} {:<44} {:>10.2} {} {op} {} {}",
                marker,
                threshold.name,
                threshold.observed,
                threshold.unit,
                threshold.limit,
                threshold.unit
            );
        }
        for (name, latency) in &self.latency {
            println!(
                "    {:<30} count={:<7} avg={:.2}ms p50={:.2}ms p95={:.2}ms p99={:.2}ms max={:.2}ms statuses={:?}",
                name,
                latency.count,
                latency.mean_ms,
                latency.p50_ms,
                latency.p95_ms,
                latency.p99_ms,
                latency.max_ms,
                latency.statuses
            );
        }
        let total = self.checks_passed + self.checks_failed;
        #[allow(clippy::cast_precision_loss)]
        let share = if total == 0 {
            100.0
        } else {
            100.0 * self.checks_passed as f64 / total as f64
        };
        println!(
            "    requests ........ {} ({:.1}/s)   checks ........ {share:.2}% ✓ {} ✗ {}   http errors ... {:.3}%",
            self.requests,
            self.requests_per_second,
            self.checks_passed,
            self.checks_failed,
            self.error_rate * 100.0
        );
        for (name, value) in &self.figures {
            println!("    {name} {value:.1}");
        }
        let invariants: Vec<String> = self
            .invariants
            .iter()
            .map(|i| {
                if i.passed {
                    format!("{} {}", i.name, i.observed)
                } else {
                    format!("{} {} (expected {}) ✗", i.name, i.observed, i.expected)
                }
            })
            .collect();
        println!("  invariants: {}", invariants.join(", "));
        for failure in &self.failures {
            println!("  ✗ {failure}");
        }
        println!(
            "  {} {}",
            mark(self.passed()),
            if self.passed() { "passed" } else { "FAILED" }
        );
    }
}
