//! The checker: one pass per workload over the history's operations and
//! the final state's section, each in its own module.

mod cache;
mod coupon;
mod points;
mod queue;
mod ratelimit;
mod reruns;
mod rows;
mod sale;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::event::Workload;
use crate::history::{History, Op};
use crate::report::{FaultLine, Report};
use crate::state::FinalState;

/// How far from the time a fault's line was logged a lost run's row may
/// be, beyond the job's lease, for the fault to explain the repeat: 1 s.
///
/// The lease bounds the rest: a worker aborts a run no renewal reached by
/// the end of its lease, and stops retrying an acknowledgement then too.
/// What the margin covers is the slack of one machine's clocks and logs:
/// the fault's line is written once the fault took effect, the row's time
/// is taken when the run reaches its write (before the statement runs),
/// and a renewal or acknowledgement in flight when the fault hit is
/// answered within its own timeout. Each is well under a second even on a
/// loaded machine; a second leaves room for them without letting a fault
/// excuse runs more than a lease and a second away from it.
pub const DEFAULT_LEASE_MARGIN: Duration = Duration::from_secs(1);

/// How the checker judges. Built from [`Options::default`] with setters.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    stale_window: Duration,
    examples: usize,
    rate_limit_multiple: f64,
    lease_margin: Duration,
    /// The history's first event, which examples time from; set by [`check`].
    origin: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stale_window: Duration::from_millis(10),
            examples: 5,
            rate_limit_multiple: 1.0,
            lease_margin: DEFAULT_LEASE_MARGIN,
            origin: 0,
        }
    }
}

impl Options {
    /// The defaults: a 10 ms propagation window, 5 examples per kind, no
    /// admissions above the limit, a lease margin of
    /// [`DEFAULT_LEASE_MARGIN`].
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

    /// How much further than the job's lease from a fault a lost run's row
    /// may be for the fault to explain the job's repeat (see
    /// [`DEFAULT_LEASE_MARGIN`]).
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.lease_margin = margin;
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
/// one), or wrote a cache key the `cache` section does not give;
/// [`Error::UnknownHost`] when the state lists the fleet's hosts and a
/// fault, an outbox row or a queue's masters name another.
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
    if let Some(hosts) = &state.hosts {
        known_hosts(history, state, hosts, options)?;
    }
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

/// Every host the faults, the outbox rows and the queues' masters name is
/// one of the fleet's `hosts`.
fn known_hosts(
    history: &History,
    state: &FinalState,
    hosts: &[String],
    options: &Options,
) -> Result<()> {
    let known = |host: &str, named_by: &dyn Fn() -> String| {
        if hosts.iter().any(|known| known == host) {
            Ok(())
        } else {
            Err(Error::UnknownHost {
                host: host.to_owned(),
                named_by: named_by(),
            })
        }
    };
    for fault in history.faults() {
        for host in fault.hosts() {
            known(host, &|| {
                format!("a {} at {}", fault.op, options.since(fault.t))
            })?;
        }
    }
    if let Some(queue) = &state.queue {
        for row in &queue.rows {
            if let Some(worker) = &row.worker {
                known(worker, &|| format!("a row of {}", row.job))?;
            }
        }
        for (name, path) in &queue.queues {
            for master in &path.masters {
                known(master, &|| format!("the masters of queue {name}"))?;
            }
        }
    }
    Ok(())
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
