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
        let step = every * 1000;
        let lead = u64::try_from(options.schedule_lead.as_micros()).unwrap_or(u64::MAX);
        let outages = Outages::new(
            history
                .faults()
                .iter()
                .filter(|fault| outage(fault, masters(queue), &state.runners)),
            &ticks.map_or_else(Vec::new, |ticks| on_schedule(ticks, every)),
            step,
            lead,
            end,
        );
        // One finding per outage (its ticks counted), one per tick otherwise.
        let mut held_up: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for &(from, to) in &judged.running {
            let mut tick = (from / step + 1) * step;
            while tick < to {
                report.ticks += 1;
                if !has_job(tick) {
                    match outages.explaining(tick) {
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
            let (fault, next) = outages.explained[n];
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

/// The outages of one scheduler's queue, in time order, each with the
/// first tick at least the lead after it that made a job. Each is worked
/// out once, and since both grow with the fault's time, the outage that
/// explains a missing tick is found by one binary search: a long history
/// is judged in time that grows with its ticks, jobs and outages, not with
/// their product.
struct Outages<'f> {
    /// Each outage, and the first tick (µs) at least the lead after it
    /// that made a job (`None`: none up to one interval past the
    /// history's end did).
    explained: Vec<(&'f Fault, Option<u64>)>,
    /// The scheduler's interval, µs.
    step: u64,
}

impl<'f> Outages<'f> {
    /// `faults` are the outages in time order, as [`History::faults`]
    /// gives them; `jobs` are the ticks on the schedule (µs) that made a
    /// job, in order (see [`on_schedule`]).
    fn new(
        faults: impl IntoIterator<Item = &'f Fault>,
        jobs: &[u64],
        step: u64,
        lead: u64,
        end: u64,
    ) -> Self {
        let next = |fault: &Fault| next_job(jobs, fault.t.saturating_add(lead), step, end);
        let explained: Vec<_> = faults
            .into_iter()
            .map(|fault| (fault, next(fault)))
            .collect();
        debug_assert!(explained.is_sorted_by_key(|(fault, _)| fault.t));
        Self { explained, step }
    }

    /// The first outage (by index) that explains the missing `tick`: the
    /// tick is due from one interval before it up to the first tick at
    /// least the lead after it that made a job.
    ///
    /// The outages whose next job came at or before `tick` are a prefix: a
    /// later outage's next job never comes earlier, and once none comes,
    /// none comes for any later one. The first outage past that prefix
    /// came the earliest of the rest, so it explains the tick if any does.
    fn explaining(&self, tick: u64) -> Option<usize> {
        let n = self.explained.partition_point(|&(_, next)| {
            step_taken();
            next.is_some_and(|next| next <= tick)
        });
        let &(fault, next) = self.explained.get(n)?;
        (next.is_some() && tick.saturating_add(self.step) >= fault.t).then_some(n)
    }
}

/// The ticks (µs) of a schedule every `every` ms that made a job, in
/// order, from every job per tick (ms) in `made`: a tick off the schedule,
/// or before the epoch, is none of them.
fn on_schedule(made: &BTreeMap<i64, BTreeSet<&str>>, every: u64) -> Vec<u64> {
    made.keys()
        .filter_map(|&ms| u64::try_from(ms).ok())
        .filter(|ms| ms % every == 0)
        .filter_map(|ms| ms.checked_mul(1000))
        .collect()
}

/// The first tick from `from` (µs) on that made a job, of `jobs` (see
/// [`on_schedule`]), looking no further than one interval past `end`.
fn next_job(jobs: &[u64], from: u64, step: u64, end: u64) -> Option<u64> {
    let first = from.div_ceil(step).checked_mul(step)?;
    let n = jobs.partition_point(|&tick| {
        step_taken();
        tick < first
    });
    jobs.get(n)
        .copied()
        .filter(|&tick| tick <= end.saturating_add(step))
}

#[cfg(test)]
thread_local! {
    /// Counts the steps the explanations take, for the tests that hold
    /// them in proportion to the history's length.
    static STEPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One step of a search for an explanation: a job's tick or an outage
/// looked at.
fn step_taken() {
    #[cfg(test)]
    STEPS.with(|steps| steps.set(steps.get() + 1));
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{Options, Outages, STEPS, check, millis, on_schedule};
    use crate::history::{Fault, History};
    use crate::state::{ScheduleState, TickJob};

    /// The history's start, ms since the epoch: a whole second, so tick
    /// `n` of an every-second scheduler falls `n` s after it.
    const START_MS: u64 = 1_764_000_000_000;

    /// Scheduler `beat` of `analytics`, every second, resumed just before
    /// tick 1 and paused just after tick `last`, with `redis-1`, the
    /// queue's master, killed at each of `kills` (ms after the start).
    fn history(last: u64, kills: &[u64]) -> History {
        let at = |ms: u64| (START_MS + ms) * 1000;
        let line = |t: u64, id: u64, kind: &str, op: &str, value: Value| {
            json!({"t": t, "process": "schedule-1", "type": kind, "id": id,
                   "workload": "schedule", "op": op, "value": value})
            .to_string()
        };
        let beat = json!({"queue": "analytics", "scheduler": "beat"});
        let mut resume = beat.clone();
        resume["every_ms"] = json!(1000);
        let mut lines = vec![
            line(at(50), 0, "invoke", "resume", resume),
            line(at(100), 0, "ok", "resume", json!({})),
            line(at(last * 1000 + 500), 1, "invoke", "pause", beat),
            line(at(last * 1000 + 600), 1, "ok", "pause", json!({})),
        ];
        lines.extend(kills.iter().map(|&ms| {
            json!({"t": at(ms), "process": "nemesis", "type": "fault", "op": "kill",
                   "value": {"host": "redis-1"}})
            .to_string()
        }));
        History::parse("test.jsonl", &lines.join("\n")).expect("a well-formed history")
    }

    /// One job per tick of `ticks`, the queue on `redis-1`.
    fn state(ticks: impl IntoIterator<Item = u64>) -> ScheduleState {
        ScheduleState {
            masters: [("analytics".to_owned(), vec!["redis-1".to_owned()])].into(),
            runners: vec!["worker-1".to_owned()],
            jobs: ticks
                .into_iter()
                .map(|n| TickJob {
                    job: format!("analytics:{n}"),
                    scheduler: "beat".to_owned(),
                    tick_ms: i64::try_from(START_MS + n * 1000).expect("a tick in range"),
                })
                .collect(),
        }
    }

    /// Checks `history` against `state`: the report, and the steps its
    /// explanations took.
    fn checked(history: &History, state: &ScheduleState) -> (crate::report::ScheduleReport, usize) {
        let ops: Vec<_> = history.ops().iter().collect();
        STEPS.with(|steps| steps.set(0));
        let report = check(&ops, history, state, &Options::default());
        (report, STEPS.with(std::cell::Cell::get))
    }

    #[test]
    fn a_long_outage_is_explained_in_steps_proportional_to_its_ticks() {
        // The master killed just after tick 1; ticks 2 to 10,001 made no
        // job, and the catch-up made tick 10,002's.
        let missed = 10_000;
        let last = missed + 2;
        let (report, steps) = checked(&history(last, &[1_300]), &state([1, last]));
        assert_eq!(report.ticks, usize::try_from(last).expect("ticks"));
        assert_eq!(
            report.missed_in_outage.count,
            usize::try_from(missed).expect("ticks")
        );
        assert_eq!(report.missing.count, 0);
        let size = report.ticks + report.jobs + 1;
        assert!(
            steps <= 4 * size,
            "{steps} steps for {size} ticks, jobs and outages"
        );
    }

    #[test]
    fn many_outages_are_explained_in_steps_proportional_to_the_history() {
        // The master killed just after every tenth tick; the tick after
        // each made no job, and every other tick made one.
        let last = 20_000;
        let kills: Vec<u64> = (1..last / 10).map(|n| n * 10_000 + 500).collect();
        let jobs = (1..=last).filter(|n| n % 10 != 1);
        let (report, steps) = checked(&history(last, &kills), &state(jobs));
        assert_eq!(report.missed_in_outage.count, kills.len());
        assert_eq!(report.missing.count, 1, "tick 1: before every outage");
        let size = report.ticks + report.jobs + kills.len();
        assert!(
            steps <= 4 * size,
            "{steps} steps for {size} ticks, jobs and outages"
        );
    }

    /// The explanation worked out directly: every outage tried from the
    /// first, and each one's next job sought tick by tick.
    fn explaining_directly(
        outages: &[Fault],
        tick: u64,
        step: u64,
        lead: u64,
        has_job: &dyn Fn(u64) -> bool,
        end: u64,
    ) -> Option<usize> {
        outages.iter().position(|fault| {
            tick + step >= fault.t
                && next_job_directly(fault.t.saturating_add(lead), step, has_job, end)
                    .is_some_and(|next| tick < next)
        })
    }

    fn next_job_directly(
        from: u64,
        step: u64,
        has_job: &dyn Fn(u64) -> bool,
        end: u64,
    ) -> Option<u64> {
        let mut tick = from.div_ceil(step) * step;
        while tick <= end.saturating_add(step) {
            if has_job(tick) {
                return Some(tick);
            }
            tick += step;
        }
        None
    }

    /// A time below `below` µs, on a whole millisecond half the time, so
    /// that faults fall on ticks and leads end on them.
    fn time_below(below: u64) -> impl Strategy<Value = u64> {
        prop_oneof![0..below, (0..below / 1000).prop_map(|ms| ms * 1000)]
    }

    proptest! {
        #[test]
        fn the_search_finds_what_trying_every_outage_finds(
            every in 1_u64..4,
            lead in time_below(6_000),
            end in time_below(40_000),
            mut times in prop::collection::vec(time_below(40_000), 0..8),
            made in prop::collection::btree_set(-3_i64..45, 0..24),
        ) {
            times.sort_unstable();
            let outages: Vec<Fault> = times
                .into_iter()
                .map(|t| Fault { t, op: "kill".to_owned(), value: json!({"host": "redis-1"}) })
                .collect();
            let made: BTreeMap<i64, BTreeSet<&str>> =
                made.into_iter().map(|ms| (ms, BTreeSet::from(["analytics:1"]))).collect();
            let has_job = |tick: u64| made.contains_key(&millis(tick));
            let step = every * 1000;
            let searched = Outages::new(&outages, &on_schedule(&made, every), step, lead, end);
            for (n, &(fault, next)) in searched.explained.iter().enumerate() {
                prop_assert_eq!(fault, &outages[n]);
                let directly = next_job_directly(fault.t.saturating_add(lead), step, &has_job, end);
                prop_assert_eq!(next, directly);
            }
            for tick in (0..50_000).step_by(usize::try_from(step).expect("a small step")) {
                let directly = explaining_directly(&outages, tick, step, lead, &has_job, end);
                prop_assert_eq!(searched.explaining(tick), directly, "tick {}", tick);
            }
        }
    }
}
