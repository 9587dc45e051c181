//! Why a job ran more than once. Each repeat needs a run that was lost, and
//! a fault on that run's path that lost it:
//!
//! - a run's path is the worker that ran it and the Redis masters that held
//!   its queue; a fault is on it when it takes one of them out (a kill,
//!   pause, stop, restart or isolation) or cuts two of them apart (a
//!   partition or a one-way link between them). A row that does not name
//!   its worker has only the masters on its path; a fault of any other
//!   host (a worker that did not run the job, one the fleet does not have,
//!   a host merely on the same side as the worker) explains nothing;
//! - the lost runs are the rows but the last: a worker aborts a run whose
//!   lease it could not renew before the lease ends, and the queue hands
//!   the job out again only after that, so a lost run's row is written
//!   before its rerun's. A paused worker is the exception (a frozen
//!   process cannot abort anything): the last row may be a lost run after
//!   a pause of its own worker;
//! - the fault is near the lost run: the row is at most the lease and the
//!   margin ([`DEFAULT_LEASE_MARGIN`](super::DEFAULT_LEASE_MARGIN)) from
//!   the fault (from its start to its end, for a pause: the run goes on
//!   once resumed), the fault came before another run's row and did not
//!   end before the job was enqueued;
//! - each repeat is one lost lease or one lost acknowledgement: a stall the
//!   queue counted, or a fault that can lose what a master acknowledged (it
//!   takes a master out, or cuts two masters that held the queue apart, so
//!   one took over without it). One such fault explains one repeat.

use std::time::Duration;

use crate::history::Fault;
use crate::state::{OutboxRow, QueuePath};

/// What the repeats of one job came to.
pub(super) struct Verdict<'h> {
    /// The repeats (rows but one).
    pub repeats: usize,
    /// Those a cause explains.
    pub explained: usize,
    /// The first fault that may have lost each run, in row order, for the
    /// runs that have one.
    pub faults: Vec<&'h Fault>,
    /// Why the rest are not explained, when some are not.
    pub why_not: Option<String>,
}

/// One job's rows, judged against the faults.
pub(super) struct Job<'s> {
    /// Its rows, any order.
    pub rows: Vec<&'s OutboxRow>,
    /// What its queue's runs go through, if the state says.
    pub path: Option<&'s QueuePath>,
    /// Stalls the queue counted.
    pub stalls: u32,
    /// When the job was first enqueued (µs), if a recorded enqueue names it.
    pub enqueued: Option<u64>,
}

impl Job<'_> {
    /// Explains as many of the job's repeats as `faults` and its stalls
    /// can, `margin` beyond its lease.
    pub(super) fn judge<'h>(&self, faults: &'h [Fault], margin: Duration) -> Verdict<'h> {
        let repeats = self.rows.len().saturating_sub(1);
        let none = |why: String| Verdict {
            repeats,
            explained: 0,
            faults: Vec::new(),
            why_not: Some(why),
        };
        let Some(path) = self.path else {
            return none("the state gives its queue no lease or masters".to_owned());
        };
        let Some(mut rows) = self
            .rows
            .iter()
            .map(|row| Some((micros(row.at_ms?), *row)))
            .collect::<Option<Vec<(u64, &OutboxRow)>>>()
        else {
            return none("a row has no time".to_owned());
        };
        rows.sort_by_key(|&(at, _)| at);
        let reach = micros_of(Duration::from_millis(path.lease_ms).saturating_add(margin));

        // Per row: the faults that may have lost its run.
        let last = rows.len() - 1;
        let mut candidates: Vec<Vec<usize>> = Vec::with_capacity(rows.len());
        for (index, &(written, row)) in rows.iter().enumerate() {
            // A run of the job after the fault: the last row, or for the
            // last row itself the one before it.
            let after = rows[if index < last { last } else { last - 1 }].0;
            let hosts: Vec<&str> = row
                .worker
                .iter()
                .map(String::as_str)
                .chain(path.masters.iter().map(String::as_str))
                .collect();
            let paused = |fault: &Fault| {
                fault.op == "pause" && row.worker.as_deref().is_some_and(|w| fault.takes_out(w))
            };
            candidates.push(
                faults
                    .iter()
                    .enumerate()
                    .filter(|&(at, fault)| {
                        let end = span_end(faults, at);
                        on_path(fault, &hosts)
                            && (index < last || paused(fault))
                            && fault.t < after
                            && self.enqueued.is_none_or(|enqueued| end >= enqueued)
                            && fault.t.saturating_sub(reach) <= written
                            && written <= end.saturating_add(reach)
                    })
                    .map(|(at, _)| at)
                    .collect(),
            );
        }
        let near = candidates.iter().filter(|found| !found.is_empty()).count();
        let losing: Vec<Vec<usize>> = candidates
            .iter()
            .map(|found| {
                found
                    .iter()
                    .copied()
                    .filter(|&index| loses_acknowledgements(&faults[index], &path.masters))
                    .collect()
            })
            .collect();
        let lost_acknowledgements = most_matched(&losing);
        let stalls = usize::try_from(self.stalls).unwrap_or(usize::MAX);
        let explained = near
            .min(repeats)
            .min(stalls.saturating_add(lost_acknowledgements));
        let why_not = (explained < repeats).then(|| {
            let workers: Vec<&str> = rows
                .iter()
                .map(|(_, row)| row.worker.as_deref().unwrap_or("unknown"))
                .collect();
            format!(
                "{near} run(s) near a fault on their path (workers {workers:?}, \
                 masters {:?}), {stalls} stall(s) counted, {lost_acknowledgements} \
                 acknowledgement(s) a master fault could lose",
                path.masters,
            )
        });
        Verdict {
            repeats,
            explained,
            faults: candidates
                .iter()
                .filter_map(|found| found.first().map(|&index| &faults[index]))
                .collect(),
            why_not,
        }
    }
}

/// Whether `fault` takes out one of `hosts` or cuts two of them apart.
fn on_path(fault: &Fault, hosts: &[&str]) -> bool {
    hosts.iter().enumerate().any(|(i, a)| {
        fault.takes_out(a)
            || hosts[i + 1..]
                .iter()
                .any(|b| a != b && fault.separates(a, b))
    })
}

/// Whether `fault` can lose what a master of the queue acknowledged: it
/// takes one out, or cuts two that held the queue apart.
fn loses_acknowledgements(fault: &Fault, masters: &[String]) -> bool {
    masters.iter().enumerate().any(|(i, a)| {
        fault.takes_out(a)
            || masters[i + 1..]
                .iter()
                .any(|b| a != b && fault.separates(a, b))
    })
}

/// When the fault at `index` stops keeping its host from a run: a pause
/// holds until its host is resumed (or stopped, killed, restarted), every
/// other fault acts when it is logged (a cut-off worker aborts its runs by
/// the end of their lease, however long the cut holds).
fn span_end(faults: &[Fault], index: usize) -> u64 {
    let fault = &faults[index];
    let Some(host) = fault.value.get("host").and_then(serde_json::Value::as_str) else {
        return fault.t;
    };
    if fault.op != "pause" {
        return fault.t;
    }
    faults[index + 1..]
        .iter()
        .find(|later| {
            matches!(
                later.op.as_str(),
                "resume" | "kill" | "stop" | "restart" | "start"
            ) && later.value.get("host").and_then(serde_json::Value::as_str) == Some(host)
        })
        .map_or(fault.t, |later| later.t)
}

/// The most lost runs that can each be given a fault of their own from
/// `candidates` (per run, the faults that may have lost it): a bipartite
/// matching, by augmenting paths (a job's runs and faults are few).
fn most_matched(candidates: &[Vec<usize>]) -> usize {
    fn augment(
        run: usize,
        candidates: &[Vec<usize>],
        owner: &mut std::collections::HashMap<usize, usize>,
        visited: &mut std::collections::HashSet<usize>,
    ) -> bool {
        for &fault in &candidates[run] {
            if !visited.insert(fault) {
                continue;
            }
            let free = match owner.get(&fault) {
                None => true,
                Some(&other) => augment(other, candidates, owner, visited),
            };
            if free {
                owner.insert(fault, run);
                return true;
            }
        }
        false
    }
    let mut owner = std::collections::HashMap::new();
    (0..candidates.len())
        .filter(|&run| {
            let mut visited = std::collections::HashSet::new();
            augment(run, candidates, &mut owner, &mut visited)
        })
        .count()
}

/// Unix milliseconds as µs (a time before the epoch as the epoch).
fn micros(ms: i64) -> u64 {
    ms.max(0).unsigned_abs().saturating_mul(1000)
}

fn micros_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::most_matched;

    #[test]
    fn each_lost_run_gets_a_fault_of_its_own() {
        assert_eq!(most_matched(&[vec![0], vec![0]]), 1);
        assert_eq!(most_matched(&[vec![0, 1], vec![0]]), 2);
        assert_eq!(most_matched(&[vec![0, 1], vec![], vec![1]]), 2);
        assert_eq!(most_matched(&[]), 0);
    }
}
