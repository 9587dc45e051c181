//! Schedulers: every tick due while a scheduler certainly ran made exactly
//! one job, none made two, none was made off the schedule or while the
//! scheduler was certainly paused, and the only ticks with no job are
//! those an outage of the queue's Redis master explains.
//!
//! A scheduler certainly runs from a `resume`'s `ok` to the next `pause`'s
//! invoke, and is certainly paused from a `pause`'s `ok` to the next
//! `resume`'s invoke; an `info` leaves it uncertain until the next `ok`,
//! and a `fail` changes nothing. Its resumes and pauses are read in invoke
//! order: one client at a time is expected to change a scheduler.
//!
//! An outage is a fault that takes out a master that held the queue (a
//! kill, stop, pause, restart or isolation), or cuts one off from every
//! host that runs the schedulers. It explains the ticks from one interval
//! before it up to the first job made after it: the first tick at least
//! the schedulers' lead ([`Options::schedule_lead`]) after it that made a
//! job, since a job made ahead of the fault may come through it. A
//! failover loses what the old master had not passed on, and a queue's
//! missed-ticks policy makes one job for the latest of the ticks missed
//! (or none) once a runner gets through again. How long each outage held
//! the ticks up is in the example.

use std::collections::{BTreeMap, BTreeSet};

use super::options::Options;
use crate::history::{Call, Fault, History, Op, Outcome};
use crate::report::ScheduleReport;
use crate::state::ScheduleState;

/// A scheduler: its queue and its id.
type Name<'a> = (&'a str, &'a str);

/// What the history says of one scheduler.
#[derive(Default)]
struct Judged {
    /// Its interval in ms, from its resumes.
    every_ms: Option<u64>,
    /// (from, to) in µs, exclusive: it certainly ran.
    running: Vec<(u64, u64)>,
    /// (from, to) in µs, exclusive: it was certainly paused.
    paused: Vec<(u64, u64)>,
}

/// Where one scheduler stands as its operations are read.
#[derive(Clone, Copy)]
enum Standing {
    Unknown,
    Running(u64),
    Paused(u64),
}

pub(super) fn check(
    ops: &[&Op],
    history: &History,
    state: &ScheduleState,
    options: &Options,
) -> ScheduleReport {
    let keep = options.examples;
    let mut report = ScheduleReport {
        jobs: state.jobs.len(),
        ..ScheduleReport::default()
    };
    let end = history_end(history);
    let judged = windows(ops, end, &mut report);

    // Every job per scheduler and tick.
    let mut made: BTreeMap<Name<'_>, BTreeMap<i64, BTreeSet<&str>>> = BTreeMap::new();
    for job in &state.jobs {
        let queue = job.job.split_once(':').map_or("", |(queue, _)| queue);
        made.entry((queue, job.scheduler.as_str()))
            .or_default()
            .entry(job.tick_ms)
            .or_default()
            .insert(job.job.as_str());
    }

    for (&(queue, scheduler), ticks) in &made {
        let Some(judged) = judged.get(&(queue, scheduler)) else {
            report.unrecorded.add(keep, || {
                format!(
                    "{} job(s) of scheduler {scheduler} on {queue}, which no resume names",
                    ticks.values().map(BTreeSet::len).sum::<usize>()
                )
            });
            continue;
        };
        for (&tick_ms, jobs) in ticks {
            let tick = micros(tick_ms);
            if jobs.len() > 1 {
                report.duplicated.add(keep, || {
                    format!(
                        "tick {} of {scheduler} on {queue} made {} jobs: {jobs:?}",
                        options.since(tick),
                        jobs.len()
                    )
                });
            }
            if let Some(every) = judged.every_ms
                && tick_ms.rem_euclid(i64::try_from(every).unwrap_or(i64::MAX)) != 0
            {
                report.off_schedule.add(keep, || {
                    format!(
                        "job(s) {jobs:?} of {scheduler} on {queue} for {tick_ms} ms, not a whole \
                         multiple of its {every} ms"
                    )
                });
            }
            if within(&judged.paused, tick) {
                report.while_paused.add(keep, || {
                    format!(
                        "job(s) {jobs:?} of {scheduler} on {queue} for tick {}, while it was paused",
                        options.since(tick)
                    )
                });
            }
        }
    }

    let masters = |queue: &str| state.masters.get(queue).map_or(&[][..], Vec::as_slice);
    for (&(queue, scheduler), judged) in &judged {
        let Some(every) = judged.every_ms else {
            continue;
        };
        let ticks = made.get(&(queue, scheduler));
        let has_job = |tick: u64| ticks.is_some_and(|ticks| ticks.contains_key(&millis(tick)));
        let outages: Vec<&Fault> = history
            .faults()
            .iter()
            .filter(|fault| outage(fault, masters(queue), &state.runners))
            .collect();
        let step = every * 1000;
        let lead = u64::try_from(options.schedule_lead.as_micros()).unwrap_or(u64::MAX);
        // One finding per outage (its ticks counted), one per tick otherwise.
        let mut held_up: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for &(from, to) in &judged.running {
            let mut tick = (from / step + 1) * step;
            while tick < to {
                report.ticks += 1;
                if !has_job(tick) {
                    match explaining(&outages, tick, step, lead, &has_job, end) {
                        Some(n) => held_up.entry(n).or_default().push(tick),
                        None => report.missing.add(keep, || {
                            format!(
                                "tick {} of {scheduler} on {queue} made no job, and no outage of \
                                 its masters {:?} explains it",
                                options.since(tick),
                                masters(queue)
                            )
                        }),
                    }
                }
                tick += step;
            }
        }
        for (n, missed) in held_up {
            let fault = outages[n];
            let next = next_job(fault.t.saturating_add(lead), step, &has_job, end);
            report.missed_in_outage.count += missed.len();
            if report.missed_in_outage.examples.len() < keep {
                report.missed_in_outage.examples.push(format!(
                    "{} tick(s) of {scheduler} on {queue} from {} made no job: {} {} at {}; \
                     the next job's tick {}",
                    missed.len(),
                    options.since(missed[0]),
                    fault.op,
                    fault.value,
                    options.since(fault.t),
                    next.map_or_else(|| "never came".to_owned(), |next| options.since(next)),
                ));
            }
        }
    }
    report
}

/// Reads each scheduler's resumes and pauses, in invoke order, into when
/// it certainly ran and when it was certainly paused; counts how they
/// ended. A window still open at the history's `end` closes there.
fn windows<'o>(
    ops: &[&'o Op],
    end: u64,
    report: &mut ScheduleReport,
) -> BTreeMap<Name<'o>, Judged> {
    let mut standing: BTreeMap<Name<'o>, Standing> = BTreeMap::new();
    let mut judged: BTreeMap<Name<'o>, Judged> = BTreeMap::new();
    for op in ops {
        report.changes.count(op.outcome);
        let (name, pausing) = match &op.call {
            Call::Resume {
                queue,
                scheduler,
                every_ms,
            } => {
                judged
                    .entry((queue.as_str(), scheduler.as_str()))
                    .or_default()
                    .every_ms = Some(*every_ms);
                ((queue.as_str(), scheduler.as_str()), false)
            }
            Call::Pause { queue, scheduler } => ((queue.as_str(), scheduler.as_str()), true),
            _ => continue,
        };
        let now = standing.entry(name).or_insert(Standing::Unknown);
        let windows = judged.entry(name).or_default();
        *now = match (*now, pausing, op.outcome) {
            (_, _, Outcome::Fail(_)) => *now,
            (Standing::Running(since), true, outcome) => {
                windows.running.push((since, op.invoke));
                settled(outcome, Standing::Paused)
            }
            (Standing::Paused(since), false, outcome) => {
                windows.paused.push((since, op.invoke));
                settled(outcome, Standing::Running)
            }
            // Resuming a running scheduler, or pausing a paused one,
            // changes nothing.
            (Standing::Running(_), false, _) | (Standing::Paused(_), true, _) => *now,
            (Standing::Unknown, pausing, outcome) => settled(
                outcome,
                if pausing {
                    Standing::Paused
                } else {
                    Standing::Running
                },
            ),
        };
    }
    for (name, now) in standing {
        let windows = judged.entry(name).or_default();
        match now {
            Standing::Running(since) if since < end => windows.running.push((since, end)),
            Standing::Paused(since) => windows.paused.push((since, u64::MAX)),
            _ => {}
        }
    }
    judged
}

/// Where a change that ended as `outcome` leaves its scheduler.
fn settled(outcome: Outcome, to: fn(u64) -> Standing) -> Standing {
    match outcome {
        Outcome::Ok(at) => to(at),
        Outcome::Fail(_) | Outcome::Info(_) => Standing::Unknown,
    }
}

/// Whether `fault` takes the queue's Redis out of the runners' reach: it
/// takes out one of its `masters`, or cuts one off from every runner.
fn outage(fault: &Fault, masters: &[String], runners: &[String]) -> bool {
    masters.iter().any(|master| {
        fault.takes_out(master)
            || (!runners.is_empty()
                && runners
                    .iter()
                    .all(|runner| fault.takes_out(runner) || fault.separates(runner, master)))
    })
}

/// The first of `outages` (by index) that explains the missing `tick`:
/// the tick is due from one interval (`step`, µs) before it up to the
/// first tick at least `lead` after it that made a job.
fn explaining(
    outages: &[&Fault],
    tick: u64,
    step: u64,
    lead: u64,
    has_job: &dyn Fn(u64) -> bool,
    end: u64,
) -> Option<usize> {
    outages.iter().position(|fault| {
        tick + step >= fault.t
            && next_job(fault.t.saturating_add(lead), step, has_job, end)
                .is_some_and(|next| tick < next)
    })
}

/// The first tick from `from` (µs) on that made a job, looking no further
/// than one interval past `end`.
fn next_job(from: u64, step: u64, has_job: &dyn Fn(u64) -> bool, end: u64) -> Option<u64> {
    let mut tick = from.div_ceil(step) * step;
    while tick <= end.saturating_add(step) {
        if has_job(tick) {
            return Some(tick);
        }
        tick += step;
    }
    None
}

/// Whether `at` falls inside one of `spans` (exclusive at both ends).
fn within(spans: &[(u64, u64)], at: u64) -> bool {
    spans.iter().any(|&(from, to)| from < at && at < to)
}

/// The last thing the history saw: an invoke, a completion or a fault.
fn history_end(history: &History) -> u64 {
    let ops = history
        .ops()
        .iter()
        .map(|op| op.outcome.at().unwrap_or(op.invoke).max(op.invoke));
    let faults = history.faults().iter().map(|fault| fault.t);
    ops.chain(faults).max().unwrap_or(0)
}

fn micros(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1000)
}

fn millis(micros: u64) -> i64 {
    i64::try_from(micros / 1000).unwrap_or(i64::MAX)
}
