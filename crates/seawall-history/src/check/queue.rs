//! The queue: every acknowledged job runs, none runs twice unless a fault
//! on its path took a run from it (see [`reruns`](super::reruns)), none
//! that was refused runs, and no job is acknowledged to two enqueues but
//! retries of one key.
//!
//! Runs are grouped by the idempotency key the rows carry (by job where a
//! row carries none), so a key that ran as two jobs (its idempotency lost)
//! shows up as well as a job that ran twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::options::{Options, micros_as_secs};
use super::reruns;
use crate::history::{Call, History, Op, Outcome};
use crate::report::QueueReport;
use crate::state::{OutboxRow, QueueState};

/// How the enqueues of one key ended, taken together.
#[derive(Default)]
struct Ended {
    ok: bool,
    info: bool,
    fail: bool,
    first_invoke: Option<u64>,
}

pub(super) fn check(
    ops: &[&Op],
    history: &History,
    state: &QueueState,
    options: &Options,
) -> QueueReport {
    let keep = options.examples;
    let mut report = QueueReport::default();
    let mut keys: HashMap<&str, Ended> = HashMap::new();
    // Job → (first invoke of an op acknowledged with it, that op).
    let mut acknowledged: BTreeMap<&str, (u64, &Op)> = BTreeMap::new();
    for op in ops {
        report.enqueues.count(op.outcome);
        let Call::Enqueue { key, job, .. } = &op.call else {
            continue;
        };
        if let Some(key) = key.as_deref() {
            let ended = keys.entry(key).or_default();
            ended.first_invoke = Some(ended.first_invoke.map_or(op.invoke, |t| t.min(op.invoke)));
            match op.outcome {
                Outcome::Ok(_) => ended.ok = true,
                Outcome::Fail(_) => ended.fail = true,
                Outcome::Info(_) => ended.info = true,
            }
        }
        if let (Outcome::Ok(_), Some(job)) = (op.outcome, job.as_deref()) {
            let (_, first) = *acknowledged.entry(job).or_insert((op.invoke, op));
            // Only a retry of one key may be answered with its job again.
            if !std::ptr::eq(first, *op) && (key.is_none() || enqueue_key(first) != key.as_deref())
            {
                report.shared_job.add(keep, || {
                    format!(
                        "job {job} acknowledged to {} (key {}) and to {} (key {})",
                        first.process,
                        enqueue_key(first).unwrap_or("none"),
                        op.process,
                        key.as_deref().unwrap_or("none"),
                    )
                });
            }
        }
    }
    report.rows = state.rows.len();

    let mut by_job: HashMap<&str, usize> = HashMap::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    // Key (or job, for rows without one) → its rows.
    let mut runs: BTreeMap<&str, Vec<&OutboxRow>> = BTreeMap::new();
    for row in &state.rows {
        *by_job.entry(row.job.as_str()).or_default() += 1;
        if let Some(key) = row.idempotency_key.as_deref() {
            *by_key.entry(key).or_default() += 1;
        }
        let unit = row.idempotency_key.as_deref().unwrap_or(row.job.as_str());
        runs.entry(unit).or_default().push(row);
    }

    for (job, (_, op)) in &acknowledged {
        let key = enqueue_key(op);
        let ran_by_key = key.is_some_and(|key| by_key.contains_key(key));
        if !by_job.contains_key(job) && !ran_by_key {
            report.lost.add(keep, || {
                format!(
                    "job {job} (key {}), acknowledged at {} to {}, never ran",
                    key.unwrap_or("none"),
                    options.since(op.outcome.at().unwrap_or(op.invoke)),
                    op.process
                )
            });
        }
    }

    let stalls: HashMap<&str, u32> = state
        .jobs
        .iter()
        .map(|job| (job.job.as_str(), job.stalls))
        .collect();
    let start = history.start().unwrap_or(0);
    for (unit, rows) in &runs {
        let jobs: BTreeSet<&str> = rows.iter().map(|row| row.job.as_str()).collect();
        let key = rows.iter().find_map(|row| row.idempotency_key.as_deref());
        let ended = key.and_then(|key| keys.get(key));
        let acked = jobs.iter().any(|job| acknowledged.contains_key(job))
            || ended.is_some_and(|ended| ended.ok);
        if !acked {
            let describe = || format!("{unit}: {} run(s) of job(s) {jobs:?}", rows.len());
            match ended {
                Some(Ended { info: true, .. }) => report.unacknowledged_ran.add(keep, describe),
                Some(Ended { fail: true, .. }) => report.never_acknowledged.add(keep, || {
                    format!("{}, though every enqueue failed", describe())
                }),
                _ => report.unrecorded.add(keep, describe),
            }
        }
        if jobs.len() > 1 {
            report.run_twice_unexplained.add(keep, || {
                format!("key {unit} ran as {} jobs: {jobs:?}", jobs.len())
            });
            continue;
        }
        if rows.len() < 2 {
            continue;
        }
        let job = rows[0].job.as_str();
        let verdict = reruns::Job {
            rows: rows.clone(),
            path: job
                .split_once(':')
                .and_then(|(queue, _)| state.queues.get(queue)),
            stalls: stalls.get(job).copied().unwrap_or(0),
            enqueued: ended
                .and_then(|ended| ended.first_invoke)
                .or_else(|| acknowledged.get(job).map(|&(invoke, _)| invoke)),
        }
        .judge(history.faults(), options.lease_margin);
        let describe = || format!("job {job} (key {unit}) ran {} times", rows.len());
        if let Some(why) = &verdict.why_not {
            report.run_twice_unexplained.add(keep, || {
                format!(
                    "{}: {} of {} repeat(s) explained; {why}",
                    describe(),
                    verdict.explained,
                    verdict.repeats
                )
            });
        } else {
            report.run_twice_explained.add(keep, || {
                let faults: Vec<String> = verdict
                    .faults
                    .iter()
                    .map(|fault| {
                        format!(
                            "{} {} at {:.3}s",
                            fault.op,
                            fault.value,
                            micros_as_secs(fault.t.saturating_sub(start))
                        )
                    })
                    .collect();
                format!("{}, after {}", describe(), faults.join("; "))
            });
        }
    }
    report
}

/// The idempotency key an enqueue sent, if any.
fn enqueue_key(op: &Op) -> Option<&str> {
    match &op.call {
        Call::Enqueue { key, .. } => key.as_deref(),
        _ => None,
    }
}
