//! The checker: one pass per workload over the history's operations and
//! the final state's section, each in its own module.

mod cache;
mod coupon;
mod points;
mod queue;
mod ratelimit;
mod rows;
mod sale;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::event::Workload;
use crate::history::{History, Op};
use crate::report::{FaultLine, Report};
use crate::state::FinalState;

/// How the checker judges. Built from [`Options::default`] with setters.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    stale_window: Duration,
    examples: usize,
    rate_limit_multiple: f64,
    worker_prefix: String,
    /// The history's first event, which examples time from; set by [`check`].
    origin: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stale_window: Duration::from_millis(10),
            examples: 5,
            rate_limit_multiple: 1.0,
            worker_prefix: "worker".to_owned(),
            origin: 0,
        }
    }
}

impl Options {
    /// The defaults: a 10 ms propagation window, 5 examples per kind, no
    /// admissions above the limit, workers named `worker…`.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long after a write's `ok` a read elsewhere may still return the
    /// version before it (the cache's documented propagation window).
    pub fn stale_window(mut self, window: Duration) -> Self {
        self.stale_window = window;
        self
    }

    /// How many examples each kind of finding keeps.
    pub fn examples(mut self, examples: usize) -> Self {
        self.examples = examples;
        self
    }

    /// The multiple of a limit that admissions in one window may reach
    /// before a key counts as over its limit (1.0: none above the limit).
    pub fn rate_limit_multiple(mut self, multiple: f64) -> Self {
        self.rate_limit_multiple = multiple;
        self
    }

    /// How the hosts of worker processes begin (`worker` for `worker-1`),
    /// for outbox rows that do not name their worker.
    pub fn worker_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.worker_prefix = prefix.into();
        self
    }
}

/// Checks `history` against `state` and reports, per workload, what it
/// found. A workload is reported when the history has its operations or
/// the state has its section.
///
/// # Errors
///
/// [`Error::Incomplete`] when the history has operations of a workload
/// whose section the state lacks (every workload but `ratelimit` needs
/// one), or wrote a cache key the `cache` section does not give.
pub fn check(history: &History, state: &FinalState, options: &Options) -> Result<Report> {
    let of = |workload: Workload| -> Vec<&Op> {
        history
            .ops()
            .iter()
            .filter(|op| op.call.workload() == workload)
            .collect()
    };
    let start = history.start().unwrap_or(0);
    let options = &Options {
        origin: start,
        ..options.clone()
    };
    let faults = history
        .faults()
        .iter()
        .map(|fault| FaultLine {
            at_s: micros_as_secs(fault.t.saturating_sub(start)),
            op: fault.op.clone(),
            value: fault.value.clone(),
        })
        .collect();
    let queue = of(Workload::Queue);
    let sale = of(Workload::Sale);
    let coupon = of(Workload::Coupon);
    let points = of(Workload::Points);
    let ratelimit = of(Workload::Ratelimit);
    let cache = of(Workload::Cache);
    Ok(Report {
        events: history.events(),
        ops: history.ops().len(),
        faults,
        queue: section(&queue, state.queue.as_ref(), Workload::Queue)?
            .map(|section| queue::check(&queue, history, section, options)),
        sale: section(&sale, state.sale.as_deref(), Workload::Sale)?
            .map(|section| sale::check(&sale, section, options)),
        coupon: section(&coupon, state.coupon.as_deref(), Workload::Coupon)?
            .map(|section| coupon::check(&coupon, section, options)),
        points: section(&points, state.points.as_deref(), Workload::Points)?
            .map(|section| points::check(&points, section, options)),
        ratelimit: (!ratelimit.is_empty()).then(|| ratelimit::check(&ratelimit, options)),
        cache: section(&cache, state.cache.as_ref(), Workload::Cache)?
            .map(|section| cache::check(&cache, section, options))
            .transpose()?,
    })
}

/// A workload's section of the state, when it is to be judged: `None`
/// when neither the history nor the state has the workload, an error when
/// only the history has it.
fn section<'s, T: ?Sized>(
    ops: &[&Op],
    section: Option<&'s T>,
    workload: Workload,
) -> Result<Option<&'s T>> {
    match section {
        None if !ops.is_empty() => Err(Error::Incomplete {
            what: format!("{workload} section"),
        }),
        section => Ok(section),
    }
}

impl Options {
    /// `t` as seconds after the history's first event, for examples.
    fn since(&self, t: u64) -> String {
        format!("+{:.3}s", micros_as_secs(t.saturating_sub(self.origin)))
    }
}

#[allow(clippy::cast_precision_loss)] // exact below 2^53 µs, some 285 years
fn micros_as_secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[allow(clippy::cast_precision_loss)]
fn micros_as_ms(micros: u64) -> f64 {
    micros as f64 / 1e3
}
