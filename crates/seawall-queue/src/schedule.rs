//! Schedules: when a scheduler's ticks fall, and what the ticks missed
//! while no process ran the schedulers make.
//!
//! Cron expressions are read by [croner]: it takes the usual five fields
//! and an optional leading seconds field, finds each next time on the
//! absolute time line in the schedule's zone, and is explicit about
//! daylight-saving transitions (below). The `cron` crate was the other
//! candidate; it requires the seconds field, numbers weekdays from 1 for
//! Sunday, and on a transition day can skip a run, run one twice or
//! answer times out of order, which a scheduler that compares instants
//! cannot use.
//!
//! [croner]: https://docs.rs/croner

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone as _};
use chrono_tz::Tz;
use croner::Cron;

use crate::error::{Error, Result};
use crate::store::millis;

/// The shortest interval of [`Schedule::every`].
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

pub use crate::caps::MAX_CATCH_UP;

/// The latest time a tick can be planned for, in ms since the epoch (the
/// end of year 9999): a schedule with no tick left plans this one, which
/// never falls due.
pub(crate) const NEVER_MS: u64 = 253_402_300_799_999;

/// How long after its time a tick still runs under [`Missed::Skip`].
pub const ON_TIME: Duration = Duration::from_secs(60);

/// When a scheduler's ticks fall, and what the ticks it missed make.
///
/// Two kinds: a fixed interval ([`every`](Self::every)), whose ticks fall
/// on whole multiples of it since the Unix epoch, so every process agrees
/// on them; and a cron expression in a time zone ([`cron`](Self::cron)).
///
/// # Daylight-saving time
///
/// A cron time is a wall-clock time in the schedule's zone. When the clock
/// jumps forward past it, the tick falls at the first instant after the
/// jump; when the clock goes back over it, a fixed time runs once, in the
/// first pass, while a wildcard field runs in both passes, in the order
/// they happen. In `Europe/Berlin`, where 2026-03-29 has no 02:30 and
/// 2026-10-25 has two:
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use seawall_queue::Schedule;
///
/// let nightly = Schedule::cron("30 2 * * *", "Europe/Berlin")?;
/// // After noon on the 28th of March (11:00 UTC)…
/// let noon = UNIX_EPOCH + Duration::from_secs(1_774_695_600);
/// let runs = nightly.next_runs(noon, 2);
/// // …03:00 CEST on the 29th (01:00 UTC), then 02:30 CEST on the 30th.
/// assert_eq!(runs[0], UNIX_EPOCH + Duration::from_secs(1_774_746_000));
/// assert_eq!(runs[1], UNIX_EPOCH + Duration::from_secs(1_774_830_600));
/// # Ok::<(), seawall_queue::Error>(())
/// ```
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
    missed: Missed,
}

#[derive(Clone)]
enum Kind {
    /// Every this many ms.
    Every(u64),
    Cron {
        expression: String,
        zone: Tz,
        cron: Box<Cron>,
    },
}

/// What the ticks a scheduler missed make: those that passed while no
/// process ran the schedulers (a deployment, an outage, a paused fleet).
/// A scheduler that is itself paused makes no job for its ticks meanwhile,
/// whatever this says; it plans anew when it is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Missed {
    /// One job, for the latest tick that passed (the default): a nightly
    /// backup missed for three nights runs once.
    #[default]
    Latest,
    /// No job for a tick found more than [`ON_TIME`] after its time, or
    /// after the tick that follows it fell due.
    Skip,
    /// One job for each tick that passed, the newest `most` of them (1 to
    /// [`MAX_CATCH_UP`]).
    Each {
        /// How many missed ticks at most make a job.
        most: u32,
    },
}

impl Schedule {
    /// A tick every `interval`, on its whole multiples since the Unix
    /// epoch (`every(1 hour)` ticks on the hour, UTC). From
    /// [`MIN_INTERVAL`] to 366 days.
    pub fn every(interval: Duration) -> Result<Self> {
        if interval < MIN_INTERVAL || interval > crate::backoff::MAX_DELAY {
            return Err(Error::InvalidSchedule(format!(
                "an interval must be from {MIN_INTERVAL:?} to {:?}, got {interval:?}",
                crate::backoff::MAX_DELAY
            )));
        }
        Ok(Self {
            kind: Kind::Every(millis(interval)),
            missed: Missed::default(),
        })
    }

    /// A tick at each time `expression` matches in `zone`, an IANA time
    /// zone name (`"UTC"`, `"Europe/Berlin"`). The expression has the usual
    /// five fields (minute, hour, day of month, month, day of week, Sunday
    /// 0 or 7), or six with seconds first; an expression that does not
    /// parse, or that matches no time from now on, is refused.
    pub fn cron(expression: &str, zone: &str) -> Result<Self> {
        let zone = Tz::from_str(zone)
            .map_err(|_| Error::InvalidSchedule(format!("unknown time zone {zone:?}")))?;
        let expression = expression.trim();
        if expression.is_empty() || expression.len() > 256 {
            return Err(Error::InvalidSchedule(
                "a cron expression must be 1 to 256 bytes".to_owned(),
            ));
        }
        let cron = Cron::from_str(expression).map_err(|error| {
            Error::InvalidSchedule(format!("cron expression {expression:?}: {error}"))
        })?;
        let schedule = Self {
            kind: Kind::Cron {
                expression: expression.to_owned(),
                zone,
                cron: Box::new(cron),
            },
            missed: Missed::default(),
        };
        if schedule.after(millis_since_epoch(SystemTime::now())) >= NEVER_MS {
            return Err(Error::InvalidSchedule(format!(
                "cron expression {expression:?} matches no time from now on"
            )));
        }
        Ok(schedule)
    }

    /// What the ticks missed make (see [`Missed`]).
    pub fn missed(mut self, missed: Missed) -> Result<Self> {
        if let Missed::Each { most } = missed
            && !(1..=MAX_CATCH_UP).contains(&most)
        {
            return Err(Error::InvalidSchedule(format!(
                "Missed::Each makes jobs for 1 to {MAX_CATCH_UP} ticks, got {most}"
            )));
        }
        self.missed = missed;
        Ok(self)
    }

    /// What the ticks missed make.
    pub fn missed_ticks(&self) -> Missed {
        self.missed
    }

    /// The next `count` ticks after `after`.
    pub fn next_runs(&self, after: SystemTime, count: usize) -> Vec<SystemTime> {
        let mut runs = Vec::with_capacity(count.min(100));
        let mut at = millis_since_epoch(after);
        while runs.len() < count {
            at = self.after(at);
            if at >= NEVER_MS {
                break;
            }
            runs.push(UNIX_EPOCH + Duration::from_millis(at));
        }
        runs
    }

    /// The first tick strictly after `ms`, or [`NEVER_MS`].
    pub(crate) fn after(&self, ms: u64) -> u64 {
        match &self.kind {
            Kind::Every(interval) => (ms / interval + 1).saturating_mul(*interval).min(NEVER_MS),
            Kind::Cron { zone, cron, .. } => instant(zone, ms)
                .and_then(|at| cron.find_next_occurrence(&at, false).ok())
                .and_then(|next| u64::try_from(next.timestamp_millis()).ok())
                .map_or(NEVER_MS, |next| next.min(NEVER_MS)),
        }
    }

    /// The latest tick at or before `ms`, if any.
    fn at_or_before(&self, ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Every(interval) => Some(ms / interval * interval),
            Kind::Cron { zone, cron, .. } => instant(zone, ms)
                .and_then(|at| cron.find_previous_occurrence(&at, true).ok())
                .and_then(|previous| u64::try_from(previous.timestamp_millis()).ok()),
        }
    }

    /// The latest tick strictly before `ms`, if any.
    fn before(&self, ms: u64) -> Option<u64> {
        self.at_or_before(ms.checked_sub(1)?)
    }

    /// What a scheduler whose next tick was planned for `next_ms` (0: none
    /// planned yet) makes when it is found at `now_ms`: the ticks to enqueue,
    /// oldest first, and the next tick to plan.
    pub(crate) fn plan(&self, next_ms: u64, now_ms: u64) -> Plan {
        let following = self.after(now_ms);
        if next_ms == 0 || next_ms > now_ms {
            // Nothing planned: a new, changed or resumed scheduler starts
            // from its first tick after now.
            let next_ms = if next_ms == 0 { following } else { next_ms };
            return Plan {
                ticks: Vec::new(),
                next_ms,
                due_ms: next_ms,
            };
        }
        let latest = self
            .at_or_before(now_ms)
            .map_or(next_ms, |latest| latest.max(next_ms));
        let ticks = match self.missed {
            Missed::Latest => vec![latest],
            Missed::Skip => {
                let late = now_ms - latest;
                let on_time = late < millis(ON_TIME) && now_ms < following;
                if on_time { vec![latest] } else { Vec::new() }
            }
            Missed::Each { most } => {
                let mut ticks = vec![latest];
                while ticks.len() < most as usize {
                    match ticks.last().and_then(|last| self.before(*last)) {
                        Some(earlier) if earlier >= next_ms => ticks.push(earlier),
                        _ => break,
                    }
                }
                ticks.reverse();
                ticks
            }
        };
        Plan {
            ticks,
            next_ms: following,
            due_ms: following,
        }
    }

    /// [`Schedule::plan`], and then the tick after now as well when it
    /// comes within `lead_ms`: its job is enqueued ahead, delayed until
    /// the tick, so it is in the queue when due however many schedulers
    /// tick at once. `due_ms` is when to look at the scheduler again:
    /// `lead_ms` before its next tick, but not before the tick enqueued
    /// ahead (so at most one tick to come has a job).
    pub(crate) fn plan_ahead(&self, next_ms: u64, now_ms: u64, lead_ms: u64) -> Plan {
        let mut plan = self.plan(next_ms, now_ms);
        let horizon = now_ms.saturating_add(lead_ms);
        let mut ahead = None;
        if plan.next_ms > now_ms && plan.next_ms <= horizon && plan.next_ms < NEVER_MS {
            ahead = Some(plan.next_ms);
            plan.ticks.push(plan.next_ms);
            plan.next_ms = self.after(plan.next_ms);
        }
        plan.due_ms = if plan.next_ms >= NEVER_MS {
            NEVER_MS
        } else {
            plan.next_ms.saturating_sub(lead_ms).max(ahead.unwrap_or(0))
        };
        plan
    }

    /// The schedule as stored: `every <ms> <missed>` or
    /// `cron <missed> <zone> <expression>`.
    pub(crate) fn encode(&self) -> String {
        let missed = match self.missed {
            Missed::Latest => "latest".to_owned(),
            Missed::Skip => "skip".to_owned(),
            Missed::Each { most } => format!("each:{most}"),
        };
        match &self.kind {
            Kind::Every(interval) => format!("every {interval} {missed}"),
            Kind::Cron {
                expression, zone, ..
            } => format!("cron {missed} {} {expression}", zone.name()),
        }
    }

    /// Reads [`Schedule::encode`]'s text.
    pub(crate) fn decode(text: &str) -> Result<Self> {
        let bad = || Error::Protocol(format!("a stored schedule reads {text:?}"));
        let parse_missed = |word: &str| -> Result<Missed> {
            Ok(match word {
                "latest" => Missed::Latest,
                "skip" => Missed::Skip,
                other => Missed::Each {
                    most: other
                        .strip_prefix("each:")
                        .and_then(|most| most.parse().ok())
                        .ok_or_else(bad)?,
                },
            })
        };
        let mut words = text.splitn(4, ' ');
        let schedule = match (words.next(), words.next(), words.next(), words.next()) {
            (Some("every"), Some(interval), Some(missed), None) => {
                let interval = interval.parse().map_err(|_| bad())?;
                Self::every(Duration::from_millis(interval))?.missed(parse_missed(missed)?)?
            }
            (Some("cron"), Some(missed), Some(zone), Some(expression)) => {
                let zone = Tz::from_str(zone).map_err(|_| bad())?;
                let cron = Cron::from_str(expression).map_err(|_| bad())?;
                Self {
                    kind: Kind::Cron {
                        expression: expression.to_owned(),
                        zone,
                        cron: Box::new(cron),
                    },
                    missed: Missed::default(),
                }
                .missed(parse_missed(missed)?)?
            }
            _ => return Err(bad()),
        };
        Ok(schedule)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.encode()).finish()
    }
}

/// `every 1h`, `cron "30 2 * * *" in Europe/Berlin`, with `, missed: …`
/// when not [`Missed::Latest`].
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Every(interval) => write!(f, "every {}", Interval(*interval))?,
            Kind::Cron {
                expression, zone, ..
            } => write!(f, "cron {expression:?} in {}", zone.name())?,
        }
        match self.missed {
            Missed::Latest => Ok(()),
            Missed::Skip => f.write_str(", missed ticks skipped"),
            Missed::Each { most } => write!(f, ", each missed tick (at most {most})"),
        }
    }
}

/// An interval in ms in the largest unit that divides it (`1h`, `90s`,
/// `250ms`).
struct Interval(u64);

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ];
        let (size, unit) = UNITS
            .into_iter()
            .find(|(size, _)| self.0.is_multiple_of(*size))
            .unwrap_or((1, "ms"));
        write!(f, "{}{unit}", self.0 / size)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.encode() == other.encode()
    }
}

impl Eq for Schedule {}

/// What one look at a due scheduler makes: see [`Schedule::plan`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) ticks: Vec<u64>,
    pub(crate) next_ms: u64,
    /// When to look at the scheduler again (see [`Schedule::plan_ahead`]);
    /// `next_ms` from [`Schedule::plan`].
    pub(crate) due_ms: u64,
}

fn instant(zone: &Tz, ms: u64) -> Option<DateTime<Tz>> {
    zone.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}

fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn every_hour() -> Schedule {
        Schedule::every(Duration::from_secs(3600)).expect("valid")
    }

    #[test]
    fn interval_ticks_fall_on_its_multiples() {
        let hourly = every_hour();
        assert_eq!(hourly.after(0), HOUR);
        assert_eq!(hourly.after(HOUR - 1), HOUR);
        assert_eq!(hourly.after(HOUR), 2 * HOUR);
        assert_eq!(hourly.at_or_before(2 * HOUR), Some(2 * HOUR));
        assert_eq!(hourly.before(2 * HOUR), Some(HOUR));
    }

    #[test]
    fn a_new_scheduler_plans_its_first_tick_after_now_and_makes_no_job() {
        let plan = every_hour().plan(0, 10 * HOUR + 5);
        assert_eq!(
            plan,
            Plan {
                ticks: vec![],
                next_ms: 11 * HOUR,
                due_ms: 11 * HOUR,
            }
        );
    }

    #[test]
    fn the_tick_within_the_lead_is_planned_ahead_and_looked_at_again_when_due() {
        const SECOND: u64 = 1_000;
        let every_second = Schedule::every(Duration::from_secs(1)).expect("valid");
        // Looked at 200 ms before 10:00:01, with 10:00:00 due.
        let now = 10 * HOUR + 800;
        let plan = every_second.plan_ahead(10 * HOUR, now, SECOND);
        assert_eq!(plan.ticks, vec![10 * HOUR, 10 * HOUR + SECOND]);
        assert_eq!(plan.next_ms, 10 * HOUR + 2 * SECOND);
        // Not before the tick enqueued ahead: one tick to come has a job.
        assert_eq!(plan.due_ms, 10 * HOUR + SECOND);
        // A new scheduler's first tick is enqueued ahead at once.
        let first = every_second.plan_ahead(0, now, SECOND);
        assert_eq!(first.ticks, vec![10 * HOUR + SECOND]);
        assert_eq!(first.due_ms, 10 * HOUR + SECOND);
        // Ticks more often than the lead: still one tick ahead at a time.
        let often = Schedule::every(Duration::from_millis(100)).expect("valid");
        let plan = often.plan_ahead(10 * HOUR + 800, 10 * HOUR + 850, SECOND);
        assert_eq!(plan.ticks, vec![10 * HOUR + 800, 10 * HOUR + 900]);
        assert_eq!(
            (plan.next_ms, plan.due_ms),
            (10 * HOUR + 1_000, 10 * HOUR + 900)
        );
        // A tick beyond the lead waits: looked at again a lead before it.
        let hourly = every_hour().plan_ahead(11 * HOUR, 10 * HOUR + 5, SECOND);
        assert_eq!(hourly.ticks, Vec::<u64>::new());
        assert_eq!(
            (hourly.next_ms, hourly.due_ms),
            (11 * HOUR, 11 * HOUR - SECOND)
        );
    }

    /// The most ticks a plan makes, every missed one caught up and the one
    /// to come ahead, is what one call to a store may carry.
    #[test]
    fn the_longest_catch_up_fits_one_call() {
        let often = Schedule::every(Duration::from_millis(100))
            .expect("valid")
            .missed(Missed::Each { most: MAX_CATCH_UP })
            .expect("valid");
        let plan = often.plan_ahead(10 * HOUR, 11 * HOUR + 50, 1_000);
        assert_eq!(plan.ticks.len(), MAX_CATCH_UP as usize + 1);
        assert_eq!(plan.ticks.len(), crate::caps::MAX_TICKS);
    }

    #[test]
    fn an_on_time_tick_makes_one_job_under_every_policy() {
        for missed in [Missed::Latest, Missed::Skip, Missed::Each { most: 5 }] {
            let schedule = every_hour().missed(missed).expect("valid");
            let plan = schedule.plan(10 * HOUR, 10 * HOUR + 250);
            assert_eq!(plan.ticks, vec![10 * HOUR], "{missed:?}");
            assert_eq!(plan.next_ms, 11 * HOUR, "{missed:?}");
        }
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        // Planned for 10:00, found at 13:30: 10, 11, 12 and 13 passed.
        let now = 13 * HOUR + HOUR / 2;
        let plan = |missed| {
            every_hour()
                .missed(missed)
                .expect("valid")
                .plan(10 * HOUR, now)
        };
        assert_eq!(plan(Missed::Latest).ticks, vec![13 * HOUR]);
        assert_eq!(plan(Missed::Skip).ticks, Vec::<u64>::new());
        assert_eq!(
            plan(Missed::Each { most: 10 }).ticks,
            vec![10 * HOUR, 11 * HOUR, 12 * HOUR, 13 * HOUR]
        );
        assert_eq!(
            plan(Missed::Each { most: 2 }).ticks,
            vec![12 * HOUR, 13 * HOUR]
        );
        for missed in [Missed::Latest, Missed::Skip, Missed::Each { most: 2 }] {
            assert_eq!(plan(missed).next_ms, 14 * HOUR);
        }
        // Found 30 s late, with the next tick not due: on time.
        let skip = every_hour().missed(Missed::Skip).expect("valid");
        assert_eq!(
            skip.plan(10 * HOUR, 10 * HOUR + 30_000).ticks,
            vec![10 * HOUR]
        );
    }

    #[test]
    fn cron_ticks_follow_the_zone_across_daylight_saving() {
        let nightly = Schedule::cron("30 2 * * *", "Europe/Berlin").expect("valid");
        // 2026-10-24 12:00 local (10:00 UTC): 02:30 happens twice on the
        // 25th, and runs once, in the first pass (00:30 UTC).
        let saturday = 1_792_836_000_000;
        let runs = nightly.next_runs(UNIX_EPOCH + Duration::from_millis(saturday), 2);
        assert_eq!(
            runs,
            vec![
                UNIX_EPOCH + Duration::from_secs(1_792_888_200),
                UNIX_EPOCH + Duration::from_secs(1_792_978_200),
            ]
        );
    }

    #[test]
    fn a_schedule_reads_as_its_interval_or_expression() {
        let every = |ms| Schedule::every(Duration::from_millis(ms)).expect("valid");
        assert_eq!(every(3_600_000).to_string(), "every 1h");
        assert_eq!(every(90_000).to_string(), "every 90s");
        assert_eq!(every(86_400_000).to_string(), "every 1d");
        assert_eq!(every(250).to_string(), "every 250ms");
        let skipping = every(60_000).missed(Missed::Skip).expect("valid");
        assert_eq!(skipping.to_string(), "every 1m, missed ticks skipped");
        let nightly = Schedule::cron("30 2 * * *", "Europe/Berlin").expect("valid");
        assert_eq!(nightly.to_string(), r#"cron "30 2 * * *" in Europe/Berlin"#);
    }

    #[test]
    fn bad_schedules_are_typed_errors() {
        let refused = [
            Schedule::every(Duration::from_millis(99)),
            Schedule::every(Duration::from_secs(400 * 24 * 3600)),
            Schedule::cron("61 * * * *", "UTC"),
            Schedule::cron("* * * * *", "Mars/Olympus"),
            Schedule::cron("", "UTC"),
            Schedule::cron("0 0 30 2 *", "UTC"),
            every_hour().missed(Missed::Each { most: 0 }),
            every_hour().missed(Missed::Each {
                most: MAX_CATCH_UP + 1,
            }),
        ];
        for result in refused {
            assert!(
                matches!(result, Err(Error::InvalidSchedule(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_schedule_reads_back_as_it_was_stored() {
        let schedules = [
            every_hour(),
            every_hour().missed(Missed::Skip).expect("valid"),
            Schedule::cron("0 */5 * * * *", "Asia/Seoul")
                .expect("valid")
                .missed(Missed::Each { most: 3 })
                .expect("valid"),
        ];
        for schedule in schedules {
            let decoded = Schedule::decode(&schedule.encode()).expect("decodes");
            assert_eq!(decoded, schedule);
            assert_eq!(decoded.after(HOUR * 500), schedule.after(HOUR * 500));
        }
        assert!(matches!(
            Schedule::decode("hourly"),
            Err(Error::Protocol(_))
        ));
    }
}
