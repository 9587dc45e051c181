//! Limits that follow a service's health: tightened at once when its
//! health falls, loosened step by step once it has held better for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_perfmon::{Counter, Gauge, HealthStatus, Monitor};

use crate::error::{Error, Result};
use crate::limiter::Limiter;

/// Scales a set of [`Limiter`]s by a service's health, seawall-perfmon's
/// [`HealthStatus`]: while it is degraded each limiter admits the
/// [`degraded`](TighteningBuilder::degraded) share of its quota (half by
/// default), while it is unhealthy the [`unhealthy`](TighteningBuilder::unhealthy)
/// share (a quarter). A fall takes effect at the first reading that shows
/// it. The way back has hysteresis: only once every reading for
/// [`recover_after`](TighteningBuilder::recover_after) (30 s) has been
/// better than the level the limits are set for do they loosen, by one
/// level (unhealthy to degraded, degraded to healthy), and the next level
/// takes as long again; a reading as bad as the level starts the wait over.
/// So a health that flaps tightens the limits once and keeps them tight,
/// rather than moving them with every reading.
///
/// Each change is a `tracing` event (`ratelimit.tightened` at `warn`,
/// `ratelimit.loosened` at `info`, with `seawall.ratelimit.health`,
/// `seawall.ratelimit.from`, `seawall.ratelimit.to` and
/// `seawall.ratelimit.scale`); with [`metrics`](TighteningBuilder::metrics),
/// the scale is the gauge `ratelimit_health_scale` and the changes the
/// counter `ratelimit_health_changes_total{direction="tighten"|"loosen"}`.
///
/// Feed it readings with [`observe`](Self::observe), or let
/// [`watch`](Self::watch) read a [`Monitor`]'s load health on a timer.
///
/// ```
/// use std::time::{Duration, Instant};
/// use seawall_perfmon::HealthStatus;
/// use seawall_ratelimit::{Limit, Limiter, Tightening};
///
/// let api = Limiter::builder("api")
///     .limit(Limit::sliding_window(100, Duration::from_secs(60))?)
///     .build()?;
/// let tightening = Tightening::builder()
///     .degraded(0.5)
///     .recover_after(Duration::from_secs(30))
///     .limiter(&api)
///     .build()?;
///
/// let start = Instant::now();
/// tightening.observe_at(HealthStatus::Degraded, start);
/// assert_eq!(api.scale(), 0.5);
/// // Healthy again, but not for long enough yet.
/// tightening.observe_at(HealthStatus::Healthy, start + Duration::from_secs(1));
/// assert_eq!(api.scale(), 0.5);
/// tightening.observe_at(HealthStatus::Healthy, start + Duration::from_secs(31));
/// assert_eq!(api.scale(), 1.0);
/// # Ok::<(), seawall_ratelimit::Error>(())
/// ```
#[derive(Clone)]
pub struct Tightening(Arc<Shared>);

struct Shared {
    degraded: f64,
    unhealthy: f64,
    recover_after: Duration,
    limiters: Vec<Limiter>,
    state: Mutex<State>,
    metrics: Option<Metrics>,
}

struct State {
    /// The health the limits are set for.
    level: HealthStatus,
    /// Since when every reading has been better than `level`.
    better_since: Option<Instant>,
    /// The latest reading.
    latest: HealthStatus,
    tightened: u64,
    loosened: u64,
}

struct Metrics {
    scale: Gauge,
    tightened: Counter,
    loosened: Counter,
}

/// A change [`Tightening::observe`] made to the limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The health the limits were set for.
    pub from: HealthStatus,
    /// The health they are set for now.
    pub to: HealthStatus,
    /// The share of its quota each limiter admits now.
    pub scale: f64,
}

impl Change {
    /// Whether the limits got tighter.
    pub fn is_tighter(&self) -> bool {
        self.to > self.from
    }
}

/// Where a [`Tightening`] stands, for a dashboard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TighteningState {
    /// The health the limits are set for.
    pub level: HealthStatus,
    /// The latest reading.
    pub health: HealthStatus,
    /// The share of its quota each limiter admits now.
    pub scale: f64,
    /// How long until the limits loosen by a level, if every reading until
    /// then stays better than `level`; none while there is nothing to
    /// loosen or the latest reading is no better.
    pub loosens_in: Option<Duration>,
    /// How many times the limits tightened (a move that changed no share
    /// is not counted).
    pub tightened: u64,
    /// How many times they loosened.
    pub loosened: u64,
}

impl Tightening {
    /// A builder: half the quota while degraded, a quarter while unhealthy,
    /// back a level after 30 s better.
    pub fn builder() -> TighteningBuilder {
        TighteningBuilder {
            degraded: 0.5,
            unhealthy: 0.25,
            recover_after: Duration::from_secs(30),
            limiters: Vec::new(),
            metrics: None,
        }
    }

    /// [`observe_at`](Self::observe_at) now.
    pub fn observe(&self, health: HealthStatus) -> Option<Change> {
        self.observe_at(health, Instant::now())
    }

    /// Takes a reading of the service's health at `now` and scales the
    /// limiters when it calls for a change, which it returns. A move between
    /// levels of the same share (both shares 1, say, to watch the levels
    /// without tightening) changes no limit: it is neither returned, nor
    /// counted, nor logged. Readings are expected in time order; one
    /// earlier than the last does not shorten a wait.
    pub fn observe_at(&self, health: HealthStatus, now: Instant) -> Option<Change> {
        let shared = &*self.0;
        let mut state = shared.state.lock();
        state.latest = health;
        let from = state.level;
        let to = if health >= from {
            state.better_since = None;
            health
        } else {
            let since = *state.better_since.get_or_insert(now);
            if now.saturating_duration_since(since) < shared.recover_after {
                return None;
            }
            let to = one_better(from).max(health);
            // The next level waits its own while.
            state.better_since = (health < to).then_some(now);
            to
        };
        if to == from {
            return None;
        }
        state.level = to;
        let scale = self.scale_of(to);
        if scale == self.scale_of(from) {
            return None;
        }
        let change = Change { from, to, scale };
        if change.is_tighter() {
            state.tightened += 1;
        } else {
            state.loosened += 1;
        }
        // Applied under the lock: two readings at once apply in the order
        // they changed the level, so the limiters end at the level's share.
        self.apply(change, health);
        drop(state);
        Some(change)
    }

    /// The share of its quota each limiter admits now.
    pub fn scale(&self) -> f64 {
        self.scale_of(self.0.state.lock().level)
    }

    /// Where the limits stand at `now`.
    pub fn state_at(&self, now: Instant) -> TighteningState {
        let state = self.0.state.lock();
        TighteningState {
            level: state.level,
            health: state.latest,
            scale: self.scale_of(state.level),
            loosens_in: state.better_since.map(|since| {
                let waited = now.saturating_duration_since(since);
                self.0.recover_after.saturating_sub(waited)
            }),
            tightened: state.tightened,
            loosened: state.loosened,
        }
    }

    /// [`state_at`](Self::state_at) now.
    pub fn state(&self) -> TighteningState {
        self.state_at(Instant::now())
    }

    /// Reads `monitor`'s [load health](Monitor::load_health) every `every`
    /// and [observes](Self::observe) it, until the task is aborted: its
    /// health rules over the latest window (error rate, p99, slow requests
    /// and queries), not its component checks, whose warnings about a
    /// dependency's configuration say nothing of load. To follow the whole
    /// report, or another signal, call [`observe`](Self::observe) yourself.
    /// Needs a Tokio runtime.
    pub fn watch(&self, monitor: &Monitor, every: Duration) -> tokio::task::JoinHandle<()> {
        let (tightening, monitor) = (self.clone(), monitor.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                tightening.observe(monitor.load_health());
            }
        })
    }

    fn scale_of(&self, level: HealthStatus) -> f64 {
        match level {
            HealthStatus::Healthy => 1.0,
            HealthStatus::Degraded => self.0.degraded,
            HealthStatus::Unhealthy => self.0.unhealthy,
        }
    }

    /// Scales every limiter for `change`, counts and logs it.
    fn apply(&self, change: Change, health: HealthStatus) {
        let shared = &*self.0;
        for limiter in &shared.limiters {
            // The scales were checked when the tightening was built.
            if let Err(error) = limiter.set_scale(change.scale) {
                tracing::error!(%error, limiter = limiter.name(), "a limiter could not be scaled");
            }
        }
        if let Some(metrics) = &shared.metrics {
            metrics.scale.set(change.scale);
            if change.is_tighter() {
                metrics.tightened.inc();
            } else {
                metrics.loosened.inc();
            }
        }
        crate::trace::health_change(change.from, change.to, change.scale, health);
    }
}

impl std::fmt::Debug for Tightening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tightening")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// The level one step healthier than `level`.
fn one_better(level: HealthStatus) -> HealthStatus {
    match level {
        HealthStatus::Unhealthy => HealthStatus::Degraded,
        HealthStatus::Degraded | HealthStatus::Healthy => HealthStatus::Healthy,
    }
}

/// Builds a [`Tightening`].
#[derive(Debug)]
pub struct TighteningBuilder {
    degraded: f64,
    unhealthy: f64,
    recover_after: Duration,
    limiters: Vec<Limiter>,
    metrics: Option<Monitor>,
}

impl TighteningBuilder {
    /// The share of its quota each limiter admits while the service is
    /// degraded, in (0, 1] (default 0.5).
    pub fn degraded(mut self, scale: f64) -> Self {
        self.degraded = scale;
        self
    }

    /// The share while it is unhealthy, in (0, 1] and at most the degraded
    /// share (default 0.25).
    pub fn unhealthy(mut self, scale: f64) -> Self {
        self.unhealthy = scale;
        self
    }

    /// How long every reading must be better than the level the limits are
    /// set for before they loosen by one level (default 30 s).
    pub fn recover_after(mut self, wait: Duration) -> Self {
        self.recover_after = wait;
        self
    }

    /// A limiter to scale (a clone: it shares the limiter's state).
    pub fn limiter(mut self, limiter: &Limiter) -> Self {
        self.limiters.push(limiter.clone());
        self
    }

    /// The scale and the changes as metrics on `monitor`:
    /// `ratelimit_health_scale` and `ratelimit_health_changes_total` by
    /// `direction`.
    pub fn metrics(mut self, monitor: &Monitor) -> Self {
        self.metrics = Some(monitor.clone());
        self
    }

    /// Builds it, with every limiter at its whole quota.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a share is outside (0, 1] or the
    /// unhealthy share is above the degraded one; [`Error::Metrics`] when
    /// the metrics cannot be registered.
    pub fn build(self) -> Result<Tightening> {
        let share = |x: f64| x > 0.0 && x <= 1.0;
        if !share(self.degraded) || !share(self.unhealthy) || self.unhealthy > self.degraded {
            return Err(Error::InvalidConfig(format!(
                "health scales need 0 < unhealthy ({}) <= degraded ({}) <= 1",
                self.unhealthy, self.degraded
            )));
        }
        let metrics = self.metrics.as_ref().map(register).transpose()?;
        for limiter in &self.limiters {
            limiter.set_scale(1.0)?;
        }
        Ok(Tightening(Arc::new(Shared {
            degraded: self.degraded,
            unhealthy: self.unhealthy,
            recover_after: self.recover_after,
            limiters: self.limiters,
            state: Mutex::new(State {
                level: HealthStatus::Healthy,
                better_since: None,
                latest: HealthStatus::Healthy,
                tightened: 0,
                loosened: 0,
            }),
            metrics,
        })))
    }
}

fn register(monitor: &Monitor) -> Result<Metrics> {
    (|| -> seawall_perfmon::Result<Metrics> {
        let scale = monitor
            .gauge(
                "ratelimit_health_scale",
                "The share of their quota the health-scaled rate limiters admit now.",
                &[],
            )?
            .with_labels(&[])?;
        scale.set(1.0);
        let changes = monitor.counter(
            "ratelimit_health_changes",
            "Times the rate limits were tightened or loosened by the service's health.",
            &["direction"],
        )?;
        Ok(Metrics {
            scale,
            tightened: changes.with_labels(&["tighten"])?,
            loosened: changes.with_labels(&["loosen"])?,
        })
    })()
    .map_err(Error::Metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limit;
    use HealthStatus::{Degraded, Healthy, Unhealthy};

    const SECOND: Duration = Duration::from_secs(1);

    fn limiter() -> Limiter {
        Limiter::builder("api")
            .limit(Limit::sliding_window(100, Duration::from_secs(60)).expect("limit"))
            .build()
            .expect("limiter")
    }

    fn tightening(limiter: &Limiter) -> Tightening {
        Tightening::builder()
            .recover_after(10 * SECOND)
            .limiter(limiter)
            .build()
            .expect("tightening")
    }

    #[test]
    fn a_fall_tightens_at_once_and_the_way_back_waits_a_level_at_a_time() {
        let api = limiter();
        let t = tightening(&api);
        let at = Instant::now();
        assert_eq!(t.observe_at(Healthy, at), None);
        let change = t.observe_at(Unhealthy, at).expect("a change");
        assert!(change.is_tighter());
        assert_eq!(
            (change.from, change.to, change.scale),
            (Healthy, Unhealthy, 0.25)
        );
        assert_eq!(api.scale(), 0.25);
        assert_eq!(api.quota().rules().next().expect("a rule").1.capacity(), 25);

        // Healthy from 1 s on: a level back at 11 s, the next at 21 s.
        assert_eq!(t.observe_at(Healthy, at + SECOND), None);
        assert_eq!(t.observe_at(Healthy, at + 10 * SECOND), None);
        let change = t.observe_at(Healthy, at + 11 * SECOND).expect("a change");
        assert_eq!((change.from, change.to), (Unhealthy, Degraded));
        assert_eq!(api.scale(), 0.5);
        assert_eq!(t.observe_at(Healthy, at + 20 * SECOND), None);
        let change = t.observe_at(Healthy, at + 21 * SECOND).expect("a change");
        assert_eq!((change.from, change.to), (Degraded, Healthy));
        assert_eq!(api.scale(), 1.0);
        let state = t.state_at(at + 21 * SECOND);
        assert_eq!((state.tightened, state.loosened), (1, 2));
        assert_eq!(state.loosens_in, None);
    }

    #[test]
    fn a_reading_as_bad_as_the_level_starts_the_wait_over() {
        let api = limiter();
        let t = tightening(&api);
        let at = Instant::now();
        t.observe_at(Degraded, at);
        t.observe_at(Healthy, at + SECOND);
        assert_eq!(
            t.state_at(at + 4 * SECOND).loosens_in,
            Some(7 * SECOND),
            "10 s from the first better reading"
        );
        // Flapping: degraded again at 9 s, so 10 s from the next healthy one.
        assert_eq!(t.observe_at(Degraded, at + 9 * SECOND), None);
        assert_eq!(t.observe_at(Healthy, at + 10 * SECOND), None);
        assert_eq!(t.observe_at(Healthy, at + 19 * SECOND), None);
        assert_eq!(api.scale(), 0.5);
        assert!(t.observe_at(Healthy, at + 20 * SECOND).is_some());
        assert_eq!(api.scale(), 1.0);
        assert_eq!(t.state().tightened, 1, "the flap tightened nothing again");
    }

    #[test]
    fn unhealthy_to_degraded_loosens_one_level_and_stops_there() {
        let api = limiter();
        let t = tightening(&api);
        let at = Instant::now();
        t.observe_at(Unhealthy, at);
        t.observe_at(Degraded, at + SECOND);
        let change = t.observe_at(Degraded, at + 11 * SECOND).expect("a change");
        assert_eq!(change.to, Degraded);
        assert_eq!(t.observe_at(Degraded, at + 100 * SECOND), None);
        assert_eq!(api.scale(), 0.5);
        // Worse again while degraded: at once.
        assert_eq!(
            t.observe_at(Unhealthy, at + 101 * SECOND).map(|c| c.to),
            Some(Unhealthy)
        );
    }

    #[test]
    fn shares_of_one_watch_the_levels_and_change_nothing() {
        let api = limiter();
        let t = Tightening::builder()
            .degraded(1.0)
            .unhealthy(1.0)
            .limiter(&api)
            .build()
            .expect("tightening");
        let at = Instant::now();
        assert_eq!(t.observe_at(Unhealthy, at), None);
        assert_eq!(api.scale(), 1.0);
        let state = t.state_at(at);
        assert_eq!((state.level, state.scale), (Unhealthy, 1.0));
        assert_eq!((state.tightened, state.loosened), (0, 0));
    }

    #[test]
    fn the_scales_must_be_shares_in_order() {
        for (degraded, unhealthy) in [(0.0, 0.0), (0.5, 0.75), (1.5, 0.5), (f64::NAN, 0.5)] {
            let built = Tightening::builder()
                .degraded(degraded)
                .unhealthy(unhealthy)
                .build();
            assert!(
                matches!(built, Err(Error::InvalidConfig(_))),
                "{degraded}/{unhealthy}"
            );
        }
    }

    #[test]
    fn the_metrics_show_the_scale_and_count_the_changes() {
        let monitor = Monitor::new();
        let api = limiter();
        let t = Tightening::builder()
            .recover_after(Duration::ZERO)
            .limiter(&api)
            .metrics(&monitor)
            .build()
            .expect("tightening");
        let at = Instant::now();
        t.observe_at(Degraded, at);
        let text = monitor.prometheus();
        assert!(text.contains("ratelimit_health_scale 0.5\n"), "{text}");
        t.observe_at(Healthy, at + SECOND);
        let text = monitor.prometheus();
        assert!(text.contains("ratelimit_health_scale 1\n"), "{text}");
        assert!(
            text.contains("ratelimit_health_changes_total{direction=\"tighten\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ratelimit_health_changes_total{direction=\"loosen\"} 1\n"),
            "{text}"
        );
    }
}
