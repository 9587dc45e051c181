//! The checker: one pass per workload over the history's operations and
//! the final state's section, each in its own module.

mod cache;
mod coupon;
mod options;
mod points;
mod queue;
mod ratelimit;
mod reruns;
mod rows;
mod sale;
mod schedule;

use crate::error::{Error, Result};
use crate::event::Workload;
use crate::history::{History, Op};
use crate::report::{FaultLine, Report};
use crate::state::FinalState;

use options::micros_as_secs;
pub use options::{DEFAULT_LEASE_MARGIN, DEFAULT_SCHEDULE_LEAD, Options};

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
    let schedule = of(Workload::Schedule);
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
        schedule: section(&schedule, state.schedule.as_ref(), Workload::Schedule)?
            .map(|section| schedule::check(&schedule, history, section, options)),
    })
}

/// Every host the faults, the outbox rows, the queues' masters and the
/// schedulers' runners name is one of the fleet's `hosts`.
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
    if let Some(schedule) = &state.schedule {
        for (name, masters) in &schedule.masters {
            for master in masters {
                known(master, &|| format!("the masters of queue {name}"))?;
            }
        }
        for runner in &schedule.runners {
            known(runner, &|| "the schedulers' runners".to_owned())?;
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
