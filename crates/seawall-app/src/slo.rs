//! The service level objectives per route class, judged by this instance
//! as the alert rules judge the fleet: the budgets and burn rates the
//! dashboard and `GET /api/performance` show.
//!
//! The objectives are those of `deploy/observability/rules.yaml`: per
//! route class ([`CLASSES`]), 99.9 % of requests answer without a 5xx
//! ([`AVAILABILITY`]) and 95 % within the class's latency bound
//! ([`LATENCY`]). Every [`SAMPLE_EVERY`], and at each report, the
//! monitor's lifetime counts per route are read
//! ([`Monitor::http_totals`]: nothing on the request path), and what
//! changed goes to the minute it falls in; three days of minutes are
//! kept. [`Slo::report`] gives, per class and
//! objective, the bad share and the *burn rate* (that share over the share
//! the objective allows: 1 spends a 30-day budget in 30 days) over each
//! window of the SRE workbook's alerts, the budget the kept days spent,
//! and whether a burn-rate alert's condition holds ([`Burning`]), with the
//! same minimum-traffic gate (10 bad requests in the long window).
//!
//! One instance sees its own requests only; Prometheus's rules judge the
//! fleet together, and page.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use seawall_perfmon::Monitor;
use serde::Serialize;
use tokio::task::JoinHandle;

/// How often the monitor's counts are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The availability objective: the share of requests answered without a
/// 5xx.
pub const AVAILABILITY: f64 = 0.999;

/// The latency objective: the share of requests answered within the
/// class's bound.
pub const LATENCY: f64 = 0.95;

/// The period a budget is counted over.
pub const PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// A burn-rate alert's condition needs this many bad requests in its long
/// window: a class with little traffic is not judged on one failure.
pub const MIN_BAD: u64 = 10;

/// The windows reported, in minutes: the workbook's alert windows.
pub const WINDOWS_MIN: [u32; 7] = [5, 30, 60, 120, 360, 1440, 4320];

/// How many minutes are kept: the longest window.
const KEPT_MIN: usize = 4320;

/// A route class and its latency bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// `public`, `statistics` or `admin`.
    pub name: &'static str,
    /// A request slower than this counts against the latency objective.
    pub latency_bound: Duration,
}

/// The route classes, as the alert rules have them.
pub const CLASSES: [Class; 3] = [
    Class {
        name: "public",
        latency_bound: Duration::from_millis(250),
    },
    Class {
        name: "statistics",
        latency_bound: Duration::from_secs(1),
    },
    Class {
        name: "admin",
        latency_bound: Duration::from_secs(1),
    },
];

/// The admin API's route prefixes (the rules' `/api/(queue|cache|...)`),
/// as adaptive admission classes them too.
pub const ADMIN_ROUTES: [&str; 6] = [
    "/api/queue",
    "/api/cache",
    "/api/rate-limit",
    "/api/keys",
    "/api/performance",
    "/api/promotions",
];

/// The index in [`CLASSES`] of a route template's class; `None` for the
/// probes and `/metrics`, which no objective counts.
pub fn class_of(route: &str) -> Option<usize> {
    if matches!(route, "/livez" | "/readyz" | "/metrics") {
        return None;
    }
    if route == "/api/analytics/stats" {
        return Some(1);
    }
    Some(if is_admin_route(route) { 2 } else { 0 })
}

/// Whether `path` is under one of the [`ADMIN_ROUTES`] (a whole segment:
/// `/api/keysets` is not `/api/keys`).
pub fn is_admin_route(path: &str) -> bool {
    ADMIN_ROUTES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// One class's counts: requests, those answered with a 5xx, and those
/// slower than the class's bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    errors: u64,
    slow: u64,
}

impl Counts {
    fn add(&mut self, other: Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.slow = self.slow.saturating_add(other.slow);
    }

    /// What was added since `before` (0 where a count went down: a series
    /// the monitor folded away).
    fn since(self, before: Self) -> Self {
        Self {
            requests: self.requests.saturating_sub(before.requests),
            errors: self.errors.saturating_sub(before.errors),
            slow: self.slow.saturating_sub(before.slow),
        }
    }
}

/// The counts of one minute (Unix seconds / 60), per class.
#[derive(Debug, Clone, Copy)]
struct Minute {
    minute: i64,
    classes: [Counts; 3],
}

#[derive(Debug, Default)]
struct State {
    /// The last reading's lifetime counts, per class.
    last: Option<[Counts; 3]>,
    /// The first reading's minute: how much of a window is covered.
    since: Option<i64>,
    /// The minutes with counts, oldest first.
    minutes: VecDeque<Minute>,
}

impl State {
    /// Takes a reading of lifetime counts at `now` (Unix seconds).
    fn take(&mut self, now: i64, totals: [Counts; 3]) {
        let minute = now.div_euclid(60);
        self.since.get_or_insert(minute);
        let Some(last) = self.last.replace(totals) else {
            // The first reading: what came before it is the start-up's.
            return;
        };
        let added: [Counts; 3] = std::array::from_fn(|at| totals[at].since(last[at]));
        if added.iter().all(|counts| counts.requests == 0) {
            return;
        }
        match self.minutes.back_mut() {
            Some(back) if back.minute == minute => {
                for (counts, more) in back.classes.iter_mut().zip(added) {
                    counts.add(more);
                }
            }
            _ => self.minutes.push_back(Minute {
                minute,
                classes: added,
            }),
        }
        while self
            .minutes
            .front()
            .is_some_and(|front| front.minute <= minute - KEPT_MIN as i64)
        {
            self.minutes.pop_front();
        }
    }

    /// Class `at`'s counts over the last `minutes` minutes up to `now`'s
    /// (the minute in progress included).
    fn window(&self, at: usize, minutes: u32, now: i64) -> Counts {
        let first = now.div_euclid(60) - i64::from(minutes) + 1;
        let mut counts = Counts::default();
        for minute in self.minutes.iter().rev() {
            if minute.minute < first {
                break;
            }
            counts.add(minute.classes[at]);
        }
        counts
    }
}

/// Judges the route classes' objectives from the monitor's counts; stops
/// reading when dropped.
#[derive(Debug)]
pub struct Slo {
    state: Arc<Mutex<State>>,
    sampler: Option<JoinHandle<()>>,
}

impl Slo {
    /// Reads `monitor` now (what it counted before is not judged) and
    /// then every [`SAMPLE_EVERY`], in a Tokio task.
    pub fn start(monitor: Monitor) -> Self {
        let mut slo = Self::manual();
        slo.read(&monitor);
        slo.sampler = Some(tokio::spawn(sample(monitor, Arc::clone(&slo.state))));
        slo
    }

    /// A judge that reads only when [`read`](Self::read) or
    /// [`report`](Self::report) is called; its first reading is where it
    /// starts counting.
    pub fn manual() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            sampler: None,
        }
    }

    /// Reads `monitor` once, now.
    pub fn read(&self, monitor: &Monitor) {
        let totals = totals(monitor);
        self.state.lock().take(unix_now(), totals);
    }

    /// Reads `monitor`, then reports each class's objectives over the
    /// workbook's windows as of now.
    pub fn report(&self, monitor: &Monitor) -> Vec<ClassReport> {
        self.read(monitor);
        self.report_at(unix_now())
    }

    fn report_at(&self, now: i64) -> Vec<ClassReport> {
        let state = self.state.lock();
        let covered_min = state
            .since
            .map_or(0, |since| now.div_euclid(60) - since + 1)
            .max(0);
        CLASSES
            .iter()
            .enumerate()
            .map(|(at, class)| {
                let windows: Vec<(u32, Counts)> = WINDOWS_MIN
                    .iter()
                    .map(|&minutes| (minutes, state.window(at, minutes, now)))
                    .collect();
                let judge = |objective: f64, bad: fn(&Counts) -> u64| {
                    objective_report(objective, &windows, bad, covered_min)
                };
                ClassReport {
                    class: class.name,
                    latency_bound_ms: u64::try_from(class.latency_bound.as_millis())
                        .unwrap_or(u64::MAX),
                    availability: judge(AVAILABILITY, |counts| counts.errors),
                    latency: judge(LATENCY, |counts| counts.slow),
                }
            })
            .collect()
    }
}

impl Drop for Slo {
    fn drop(&mut self) {
        if let Some(sampler) = &self.sampler {
            sampler.abort();
        }
    }
}

/// One class's two objectives.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClassReport {
    /// `public`, `statistics` or `admin`.
    pub class: &'static str,
    /// The latency objective's bound, in milliseconds.
    pub latency_bound_ms: u64,
    /// 99.9 % of requests without a 5xx.
    pub availability: ObjectiveReport,
    /// 95 % of requests within the bound.
    pub latency: ObjectiveReport,
}

/// One objective over the workbook's windows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ObjectiveReport {
    /// The share of good requests it asks for.
    pub objective: f64,
    /// Each window, shortest first.
    pub windows: Vec<WindowReport>,
    /// The share of a 30-day budget the longest window spent: its burn
    /// rate times the part of 30 days it covers.
    pub budget_spent: f64,
    /// How much of the longest window this instance has seen, in seconds.
    pub covered_seconds: u64,
    /// Which burn-rate alert's condition holds now, if any.
    pub burning: Burning,
}

/// One window's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WindowReport {
    /// The window, in minutes.
    pub minutes: u32,
    /// Requests in it.
    pub requests: u64,
    /// Of them, those that broke the objective.
    pub bad: u64,
    /// The bad share over the share the objective allows; 0 without
    /// requests.
    pub burn_rate: f64,
}

/// Which of the workbook's burn-rate alerts would fire on this instance's
/// requests (each pair of windows over its rate, with at least
/// [`MIN_BAD`] bad requests in the long one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Burning {
    /// None.
    No,
    /// 14.4× over 1 h and 5 min, or 6× over 6 h and 30 min: the page.
    Fast,
    /// 3× over 1 d and 2 h, or 1× over 3 d and 6 h: the ticket.
    Steady,
}

fn objective_report(
    objective: f64,
    windows: &[(u32, Counts)],
    bad: fn(&Counts) -> u64,
    covered_min: i64,
) -> ObjectiveReport {
    let allowed = 1.0 - objective;
    let windows: Vec<WindowReport> = windows
        .iter()
        .map(|(minutes, counts)| {
            let bad = bad(counts);
            #[allow(clippy::cast_precision_loss)] // ratios of counts
            let burn_rate = if counts.requests == 0 {
                0.0
            } else {
                bad as f64 / counts.requests as f64 / allowed
            };
            WindowReport {
                minutes: *minutes,
                requests: counts.requests,
                bad,
                burn_rate,
            }
        })
        .collect();
    let at = |minutes: u32| {
        windows
            .iter()
            .find(|window| window.minutes == minutes)
            .copied()
            .unwrap_or(WindowReport {
                minutes,
                requests: 0,
                bad: 0,
                burn_rate: 0.0,
            })
    };
    let pair = |long: u32, short: u32, rate: f64| {
        let (long, short) = (at(long), at(short));
        long.burn_rate > rate && short.burn_rate > rate && long.bad >= MIN_BAD
    };
    let burning = if pair(60, 5, 14.4) || pair(360, 30, 6.0) {
        Burning::Fast
    } else if pair(1440, 120, 3.0) || pair(4320, 360, 1.0) {
        Burning::Steady
    } else {
        Burning::No
    };
    let longest = WINDOWS_MIN[WINDOWS_MIN.len() - 1];
    let covered_min = u64::try_from(covered_min.min(i64::from(longest))).unwrap_or(0);
    #[allow(clippy::cast_precision_loss)] // minutes, as a share of the period
    let budget_spent = at(longest).burn_rate * (covered_min * 60) as f64 / PERIOD.as_secs_f64();
    ObjectiveReport {
        objective,
        windows,
        budget_spent,
        covered_seconds: covered_min * 60,
        burning,
    }
}

/// The monitor's lifetime counts per class.
fn totals(monitor: &Monitor) -> [Counts; 3] {
    let bound = |route: &str| class_of(route).map_or(Duration::MAX, |at| CLASSES[at].latency_bound);
    let mut classes = [Counts::default(); 3];
    for total in monitor.http_totals(bound) {
        let Some(at) = class_of(&total.route) else {
            continue;
        };
        let counts = &mut classes[at];
        counts.requests = counts.requests.saturating_add(total.requests);
        if total.status_class == "5xx" {
            counts.errors = counts.errors.saturating_add(total.requests);
        }
        counts.slow = counts
            .slow
            .saturating_add(total.requests.saturating_sub(total.within));
    }
    classes
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

async fn sample(monitor: Monitor, state: Arc<Mutex<State>>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // immediate: `start` took that reading
    loop {
        ticks.tick().await;
        let totals = totals(&monitor);
        state.lock().take(unix_now(), totals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_the_classes_the_rules_give_them() {
        assert_eq!(class_of("/api/review/today"), Some(0));
        assert_eq!(class_of("/api/content"), Some(0));
        assert_eq!(class_of("/api/analytics/stats"), Some(1));
        assert_eq!(class_of("/api/queue"), Some(2));
        assert_eq!(class_of("/api/queue/{name}/jobs"), Some(2));
        assert_eq!(class_of("/api/rate-limit/abuse"), Some(2));
        assert_eq!(class_of("/api/performance"), Some(2));
        // A prefix is a whole segment: this is not the admin API.
        assert_eq!(class_of("/api/keysets"), Some(0));
        assert_eq!(class_of("/livez"), None);
        assert_eq!(class_of("/metrics"), None);
    }

    fn counts(requests: u64, errors: u64, slow: u64) -> [Counts; 3] {
        [
            Counts {
                requests,
                errors,
                slow,
            },
            Counts::default(),
            Counts::default(),
        ]
    }

    /// Feeds `State` lifetime counts a minute at a time: `per_minute`
    /// requests, `errors` and `slow` of them bad, for `minutes` minutes
    /// from `start` (Unix seconds), on top of `lifetime`.
    fn feed(
        slo: &Slo,
        start: i64,
        minutes: i64,
        lifetime: &mut Counts,
        per_minute: (u64, u64, u64),
    ) -> i64 {
        let mut now = start;
        for _ in 0..minutes {
            now += 60;
            lifetime.add(Counts {
                requests: per_minute.0,
                errors: per_minute.1,
                slow: per_minute.2,
            });
            slo.state.lock().take(
                now,
                counts(lifetime.requests, lifetime.errors, lifetime.slow),
            );
        }
        now
    }

    #[test]
    fn a_steady_error_rate_over_the_objective_burns_fast_and_spends_its_budget() {
        let slo = Slo::manual();
        let start = 1_800_000_000 / 60 * 60;
        let mut lifetime = Counts::default();
        slo.state.lock().take(start, counts(0, 0, 0));
        // Two hours of 1,000 requests a minute, 2 % of them 5xx and 1 %
        // slow: 20× the availability budget's rate, 0.2× the latency's.
        let now = feed(&slo, start, 120, &mut lifetime, (1000, 20, 10));
        let report = slo.report_at(now);
        let public = &report[0];
        assert_eq!(public.class, "public");
        let hour = public
            .availability
            .windows
            .iter()
            .find(|window| window.minutes == 60)
            .expect("the hour");
        assert_eq!((hour.requests, hour.bad), (60_000, 1200));
        assert!((hour.burn_rate - 20.0).abs() < 1e-9, "{}", hour.burn_rate);
        assert_eq!(public.availability.burning, Burning::Fast);
        assert_eq!(public.latency.burning, Burning::No);
        // Two hours at 20× spend 20 × 2 h / 30 d of the budget.
        let spent = 20.0 * 121.0 * 60.0 / PERIOD.as_secs_f64();
        assert!((public.availability.budget_spent - spent).abs() < 1e-9);
        // The other classes saw nothing.
        assert_eq!(report[1].availability.windows[6].requests, 0);
        assert_eq!(report[1].availability.burning, Burning::No);
    }

    #[test]
    fn a_burst_too_small_for_the_traffic_gate_does_not_burn() {
        let slo = Slo::manual();
        let start = 1_800_000_000 / 60 * 60;
        let mut lifetime = Counts::default();
        slo.state.lock().take(start, counts(0, 0, 0));
        // Little traffic: 2 requests a minute for an hour, 5 of them 5xx
        // in all; a burn rate of thousands, but under 10 bad requests.
        let now = feed(&slo, start, 55, &mut lifetime, (2, 0, 0));
        let now = feed(&slo, now, 5, &mut lifetime, (2, 1, 0));
        let public = &slo.report_at(now)[0];
        assert!(public.availability.windows[0].burn_rate > 14.4);
        assert_eq!(public.availability.burning, Burning::No);
    }

    #[test]
    fn minutes_older_than_three_days_are_let_go_and_a_short_burst_ages_out() {
        let slo = Slo::manual();
        let start = 1_800_000_000 / 60 * 60;
        let mut lifetime = Counts::default();
        slo.state.lock().take(start, counts(0, 0, 0));
        let now = feed(&slo, start, 10, &mut lifetime, (100, 50, 0));
        // An error burst, then three days and an hour of clean traffic.
        let now = feed(&slo, now, 4380, &mut lifetime, (100, 0, 0));
        let state = slo.state.lock();
        assert_eq!(state.minutes.len(), KEPT_MIN);
        drop(state);
        let public = &slo.report_at(now)[0];
        assert!(
            public
                .availability
                .windows
                .iter()
                .all(|window| window.bad == 0)
        );
        assert_eq!(public.availability.covered_seconds, 4320 * 60);
    }

    #[tokio::test]
    async fn the_monitor_s_requests_are_counted_by_class_and_bound() {
        let monitor = Monitor::new();
        let slo = Slo::manual();
        slo.read(&monitor);
        for _ in 0..8 {
            monitor.record_request("GET", "/api/content", 200, Duration::from_millis(10));
        }
        monitor.record_request("GET", "/api/content", 200, Duration::from_millis(400));
        monitor.record_request("GET", "/api/content", 503, Duration::from_millis(5));
        // Within the statistics' bound of 1 s, past the public one.
        monitor.record_request(
            "GET",
            "/api/analytics/stats",
            200,
            Duration::from_millis(400),
        );
        monitor.record_request("GET", "/livez", 500, Duration::from_millis(1));
        let report = slo.report(&monitor);
        let public = report[0].availability.windows[0];
        assert_eq!((public.requests, public.bad), (10, 1));
        assert_eq!(report[0].latency.windows[0].bad, 1);
        let statistics = report[1].latency.windows[0];
        assert_eq!((statistics.requests, statistics.bad), (1, 0));
        assert_eq!(report[2].availability.windows[0].requests, 0);
    }
}
