//! Forecasting one series with its season, and when it passes a bound:
//! "the queue's backlog passes 10,000 in about 2 h".
//!
//! A [`Forecaster`] learns online, in fixed memory, with no allocation per
//! observation:
//!
//! - **Season.** Each slot of its [`Season`] learns how far the series
//!   usually is in it from its slow mean (an exponentially weighted average
//!   of many seasons' worth of observations), by a weighted average over
//!   the slot's own observations. The offsets are used once the series has
//!   been seen over two whole seasons (two days for the hour of the day):
//!   before, a slot's offset would hold as much of the series' growth over
//!   those hours as of its season.
//! - **Level and trend.** With the season taken out, Holt's linear method:
//!   a level and a trend per observation step, each an exponentially
//!   weighted correction by the last one-step error.
//! - **Intervals.** The one-step errors' weighted variance, widened for a
//!   forecast `h` steps ahead as Holt's method widens it
//!   (`σ² · (1 + Σ_{j<h} α²(1 + jβ)²)`), at the coverage asked
//!   ([`ForecastOptions::coverage`]), assuming normal errors.
//! - **Steps.** Observations need not come at a fixed interval: the step is
//!   the weighted average of the gaps between them.
//!
//! It forecasts; it drives nothing. Prometheus's `predict_linear` is the
//! same without the season and without an interval.
//!
//! ```
//! use std::time::Duration;
//! use seawall_perfmon::anomaly::Season;
//! use seawall_perfmon::forecast::{ForecastOptions, Forecaster};
//!
//! let mut depth = Forecaster::new(ForecastOptions::default().season(Season::None));
//! // A backlog growing by 10 jobs a minute, from 1,000.
//! for minute in 0..600_i32 {
//!     depth.observe(i64::from(minute) * 60, 1000.0 + 10.0 * f64::from(minute));
//! }
//! let in_an_hour = depth.forecast(Duration::from_secs(3600)).expect("learned");
//! assert!((in_an_hour.value - 7590.0).abs() < 50.0, "{in_an_hour:?}");
//! assert!(in_an_hour.low <= in_an_hour.value && in_an_hour.value <= in_an_hour.high);
//! // 10,000 is reached at minute 900: 301 minutes after the last observation.
//! let when = depth.passes(10_000.0, Duration::from_secs(24 * 3600)).expect("it does");
//! assert!((when.as_secs_f64() / 60.0 - 301.0).abs() < 5.0, "{when:?}");
//! ```

use std::time::Duration;

use crate::anomaly::Season;

/// How a [`Forecaster`] learns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastOptions {
    pub(crate) season: Season,
    pub(crate) level_weight: f64,
    pub(crate) trend_weight: f64,
    pub(crate) season_weight: f64,
    pub(crate) slow_weight: f64,
    pub(crate) error_weight: f64,
    pub(crate) coverage: f64,
    pub(crate) learning: u32,
}

impl Default for ForecastOptions {
    /// Hour-of-day season (each hour's offset follows ~65 of its
    /// observations, against a mean of the last ~2,000); level weight 0.1
    /// and trend weight 0.01 per step; the errors' variance over ~200
    /// steps; 90 % intervals; 50 observations before any forecast.
    fn default() -> Self {
        Self {
            season: Season::HourOfDay,
            level_weight: 0.1,
            trend_weight: 0.01,
            season_weight: 0.03,
            slow_weight: 0.001,
            error_weight: 0.01,
            coverage: 0.9,
            learning: 50,
        }
    }
}

impl ForecastOptions {
    /// The season.
    pub fn season(mut self, season: Season) -> Self {
        self.season = season;
        self
    }

    /// Holt's weights: how much one step's error moves the level, and the
    /// trend (each above 0, at most 1).
    pub fn weights(mut self, level: f64, trend: f64) -> Self {
        self.level_weight = level;
        self.trend_weight = trend;
        self
    }

    /// How much an observation moves its slot's offset, and the slow mean
    /// the offsets are measured from.
    pub fn season_weights(mut self, slot: f64, slow: f64) -> Self {
        self.season_weight = slot;
        self.slow_weight = slow;
        self
    }

    /// The share of observations an interval should hold (0.5 to 0.999).
    pub fn coverage(mut self, coverage: f64) -> Self {
        self.coverage = coverage;
        self
    }

    /// Observations before any forecast.
    pub fn learning(mut self, observations: u32) -> Self {
        self.learning = observations;
        self
    }

    /// What is wrong with these options, if anything.
    pub fn check(&self) -> Result<(), String> {
        for (name, weight) in [
            ("the level's weight", self.level_weight),
            ("the trend's weight", self.trend_weight),
            ("the season's weight", self.season_weight),
            ("the slow mean's weight", self.slow_weight),
        ] {
            if !(weight > 0.0 && weight <= 1.0) {
                return Err(format!(
                    "{name} must be above 0 and at most 1, not {weight}"
                ));
            }
        }
        if !(0.5..=0.999).contains(&self.coverage) {
            return Err(format!(
                "the coverage must be from 0.5 to 0.999, not {}",
                self.coverage
            ));
        }
        Ok(())
    }
}

/// A forecast of the series at some time ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The expected value.
    pub value: f64,
    /// The interval's lower end.
    pub low: f64,
    /// The interval's upper end.
    pub high: f64,
}

/// An online seasonal forecaster for one series. See the [module](self).
#[derive(Debug, Clone)]
pub struct Forecaster {
    options: ForecastOptions,
    /// The slow mean the slots' offsets are measured from.
    slow: f64,
    offsets: Box<[(f64, u32)]>,
    level: f64,
    trend: f64,
    variance: f64,
    /// The average gap between observations, seconds.
    step: f64,
    last_time: Option<i64>,
    /// The first observation's time: the season is used once the series
    /// has been seen over it twice.
    first_time: Option<i64>,
    seen: u64,
    /// The z of the coverage.
    z: f64,
}

impl Forecaster {
    /// A forecaster with `options`; options that [`ForecastOptions::check`]
    /// refuses are replaced by the defaults.
    pub fn new(options: ForecastOptions) -> Self {
        let options = if options.check().is_ok() {
            options
        } else {
            ForecastOptions::default()
        };
        Self {
            options,
            slow: 0.0,
            offsets: vec![(0.0, 0); options.season.slots()].into_boxed_slice(),
            level: 0.0,
            trend: 0.0,
            variance: 0.0,
            step: 0.0,
            last_time: None,
            first_time: None,
            seen: 0,
            z: normal_quantile(0.5 + options.coverage / 2.0),
        }
    }

    /// The season's offset at `time`: none until the series has been seen
    /// over two whole seasons (two days for the hour of the day). Before,
    /// each slot's offset from the slow mean would be as much the series'
    /// growth over those hours as its season, and a steady growth would be
    /// taken for the hours' differences; the slots learn meanwhile.
    fn offset(&self, time: i64) -> f64 {
        let period = match self.options.season {
            Season::HourOfDay => 2 * 86_400,
            Season::HourOfWeek => 2 * 7 * 86_400,
            _ => return 0.0,
        };
        let seen_for = match (self.first_time, self.last_time) {
            (Some(first), Some(last)) => last - first,
            _ => 0,
        };
        if seen_for < period {
            return 0.0;
        }
        let (offset, seen) = self.offsets[self.options.season.slot(time)];
        if seen > 0 { offset } else { 0.0 }
    }

    /// Takes one observation at `time` (seconds since the Unix epoch).
    /// A value that is not finite, or a time not after the last one, is
    /// passed over.
    pub fn observe(&mut self, time: i64, value: f64) {
        if !value.is_finite() || self.last_time.is_some_and(|last| time <= last) {
            return;
        }
        let options = self.options;
        let mean_weight = |weight: f64, before: f64| weight.max(1.0 / (before + 1.0));
        let before = self.seen as f64;
        if let Some(last) = self.last_time {
            let gap = (time - last) as f64;
            self.step += mean_weight(options.error_weight, before - 1.0) * (gap - self.step);
        }
        self.last_time = Some(time);
        self.first_time.get_or_insert(time);
        self.slow += mean_weight(options.slow_weight, before) * (value - self.slow);
        let seasonal = self.offset(time);
        let adjusted = value - seasonal;
        if self.seen == 0 {
            self.level = adjusted;
        } else {
            let predicted = self.level + self.trend;
            let error = adjusted - predicted;
            if self.seen >= 2 {
                self.variance += mean_weight(options.error_weight, before - 2.0)
                    * (error * error - self.variance);
            }
            let level = predicted + options.level_weight * error;
            let trend_weight = mean_weight(options.trend_weight, before - 1.0).min(0.5);
            self.trend += trend_weight * options.level_weight * error;
            self.level = level;
        }
        if options.season != Season::None {
            let slot = &mut self.offsets[options.season.slot(time)];
            let weight = mean_weight(options.season_weight, f64::from(slot.1));
            slot.0 += weight * ((value - self.slow) - slot.0);
            slot.1 = slot.1.saturating_add(1);
        }
        self.seen += 1;
    }

    /// Observations taken.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The last observation's time, the one forecasts look ahead of.
    pub fn last_time(&self) -> Option<i64> {
        self.last_time
    }

    /// The forecast `ahead` of the last observation; `None` while learning.
    pub fn forecast(&self, ahead: Duration) -> Option<Forecast> {
        let last = self.last_time?;
        if self.seen < u64::from(self.options.learning.max(2)) || self.step <= 0.0 {
            return None;
        }
        let steps = (ahead.as_secs_f64() / self.step).max(1.0);
        let seconds = i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX);
        let time = last.saturating_add(seconds);
        let value = self.level + steps * self.trend + self.offset(time);
        let spread = self.z * (self.variance * widening(&self.options, steps)).sqrt();
        Some(Forecast {
            value,
            low: value - spread,
            high: value + spread,
        })
    }

    /// How long after the last observation the forecast first reaches
    /// `bound` (from below: a backlog passing its limit), looking at most
    /// `horizon` ahead, one step at a time; `None` if it does not within the
    /// horizon, or while learning. A bound already passed is passed now
    /// (`Duration::ZERO`).
    pub fn passes(&self, bound: f64, horizon: Duration) -> Option<Duration> {
        self.first_step(horizon, |forecast| forecast.value >= bound)
    }

    /// As [`passes`](Self::passes), but for the interval's upper end: when
    /// the series may pass `bound`, at the coverage asked.
    pub fn may_pass(&self, bound: f64, horizon: Duration) -> Option<Duration> {
        self.first_step(horizon, |forecast| forecast.high >= bound)
    }

    fn first_step(
        &self,
        horizon: Duration,
        reached: impl Fn(&Forecast) -> bool,
    ) -> Option<Duration> {
        self.forecast(Duration::ZERO)?;
        let step = Duration::from_secs_f64(self.step);
        // At most 100,000 steps are looked at.
        let steps = (horizon.as_secs_f64() / self.step).min(100_000.0).ceil();
        // At most 100,000, not negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let steps = steps as u64;
        let mut ahead = Duration::ZERO;
        for _ in 0..=steps {
            if ahead > horizon {
                return None;
            }
            if reached(&self.forecast(ahead)?) {
                return Some(ahead);
            }
            ahead += step;
        }
        None
    }
}

/// Holt's variance factor for a forecast `steps` ahead:
/// `1 + Σ_{j=1}^{h-1} α²(1 + jβ)²`, in closed form.
fn widening(options: &ForecastOptions, steps: f64) -> f64 {
    let h = (steps.round() - 1.0).max(0.0);
    let (alpha, beta) = (options.level_weight, options.trend_weight);
    // Σ (1 + jβ)² for j = 1..=h = h + β h(h+1) + β² h(h+1)(2h+1)/6.
    let sum = h + beta * h * (h + 1.0) + beta * beta * h * (h + 1.0) * (2.0 * h + 1.0) / 6.0;
    1.0 + alpha * alpha * sum
}

/// The standard normal quantile of `p` (Acklam's rational approximation,
/// relative error below 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roughly normal noise with a standard deviation of about 1, the
    /// same for the same `i` (the sum of twelve uniforms, less 6).
    fn noise(i: i64) -> f64 {
        (0..12)
            .map(|k| crate::anomaly::tests::uniform(12 * i + k))
            .sum::<f64>()
            - 6.0
    }

    #[test]
    fn the_quantiles_are_the_normals() {
        assert!((normal_quantile(0.95) - 1.644_853_626_951).abs() < 1e-8);
        assert!((normal_quantile(0.5)).abs() < 1e-12);
        assert!((normal_quantile(0.025) + 1.959_963_984_540).abs() < 1e-8);
    }

    /// On a day-shaped series with noise, the 90 % interval of a forecast
    /// an hour ahead holds the value observed then at least 85 % of the
    /// time, once a few days are learned.
    #[test]
    fn a_day_shaped_series_is_forecast_within_its_interval() {
        let day = |t: i64| {
            let hour = (t % 86_400) as f64 / 3600.0;
            500.0 + 300.0 * (std::f64::consts::TAU * (hour - 8.0) / 24.0).sin()
        };
        let step = 300;
        let mut forecaster = Forecaster::new(ForecastOptions::default());
        let (mut held, mut judged) = (0, 0);
        let ahead = Duration::from_secs(3600);
        let mut pending: std::collections::VecDeque<(i64, Forecast)> = Default::default();
        for i in 0..(14 * 288) {
            let t = i64::from(i) * step;
            let value = day(t) + 20.0 * noise(i64::from(i));
            while let Some(&(at, forecast)) = pending.front() {
                if at > t {
                    break;
                }
                if at == t {
                    judged += 1;
                    held += u32::from(forecast.low <= value && value <= forecast.high);
                }
                pending.pop_front();
            }
            forecaster.observe(t, value);
            if i > 4 * 288
                && let Some(forecast) = forecaster.forecast(ahead)
            {
                pending.push_back((t + 3600, forecast));
            }
        }
        let share = f64::from(held) / f64::from(judged);
        assert!(
            judged > 2000 && share >= 0.85,
            "{held} of {judged} ({share:.3})"
        );
        // And the intervals are not so wide that they say nothing: a tenth
        // of the day's swing at most.
        let forecast = forecaster.forecast(ahead).expect("learned");
        assert!(forecast.high - forecast.low < 120.0, "{forecast:?}");
    }

    /// The attack traces' day (`scenarios/src/attacks.rs`, `day` and the
    /// promotion): the normal clients' requests, a third of the peak at
    /// midnight and the peak at noon along a cosine, three times as many
    /// from 0.33 to 0.43 of the day (a promotion that recurs daily), 80 a
    /// second at the peak (40 readers at 0.5, 10 heavy users at 6), counted
    /// per minute with Poisson-like noise (a count's square root), as the
    /// request-rate forecast takes them. The 90 % interval of the forecast
    /// an hour ahead holds the count observed then at least 85 % of the
    /// time from the third day on.
    #[test]
    fn the_attack_traces_day_is_forecast_within_its_interval() {
        let share_of_day = |t: i64| (t % 86_400) as f64 / 86_400.0;
        let rate = |t: i64| {
            let d = share_of_day(t);
            let low = 1.0 / 3.0;
            let day = low + (1.0 - low) * (0.5 - 0.5 * (std::f64::consts::TAU * d).cos());
            let promotion = if (0.33..0.43).contains(&d) { 3.0 } else { 1.0 };
            80.0 * day * promotion
        };
        let step = 60;
        let mut forecaster = Forecaster::new(ForecastOptions::default());
        let (mut held, mut judged) = (0_u32, 0_u32);
        let ahead = Duration::from_secs(3600);
        let mut pending: std::collections::VecDeque<(i64, Forecast)> = Default::default();
        for i in 0..(7 * 1440) {
            let t = i64::from(i) * step;
            let mean = rate(t) * 60.0;
            let count = (mean + mean.sqrt() * noise(i64::from(i))).max(0.0);
            while let Some(&(at, forecast)) = pending.front() {
                if at > t {
                    break;
                }
                if at == t {
                    judged += 1;
                    held += u32::from(forecast.low <= count && count <= forecast.high);
                }
                pending.pop_front();
            }
            forecaster.observe(t, count);
            if i >= 2 * 1440
                && let Some(forecast) = forecaster.forecast(ahead)
            {
                pending.push_back((t + 3600, forecast));
            }
        }
        let share = f64::from(held) / f64::from(judged);
        assert!(
            judged > 5000 && share >= 0.85,
            "{held} of {judged} ({share:.3})"
        );
    }

    #[test]
    fn a_growing_backlog_passes_its_bound_when_the_trend_says() {
        let mut depth = Forecaster::new(ForecastOptions::default().season(Season::None));
        assert_eq!(depth.forecast(Duration::from_secs(60)), None, "learning");
        for minute in 0..300 {
            depth.observe(minute * 60, 200.0 + 5.0 * minute as f64 + noise(minute));
        }
        let when = depth
            .passes(3000.0, Duration::from_secs(6 * 3600))
            .expect("it passes");
        // 200 + 5 × minute reaches 3,000 at minute 560: 261 after the last.
        let minutes = when.as_secs_f64() / 60.0;
        assert!((minutes - 261.0).abs() < 10.0, "{minutes}");
        let may = depth
            .may_pass(3000.0, Duration::from_secs(6 * 3600))
            .expect("it may");
        assert!(may <= when);
        assert_eq!(depth.passes(1e9, Duration::from_secs(3600)), None);
        assert_eq!(
            depth.passes(0.0, Duration::from_secs(3600)),
            Some(Duration::ZERO)
        );
    }

    /// A series that has not yet been seen over its season twice is
    /// forecast without it: over a few hours, the hours' offsets from the
    /// slow mean are the growth itself, and taking them for the season
    /// forecast a backlog growing 10 a minute at less than it already was.
    #[test]
    fn a_season_is_used_only_once_it_was_seen_twice() {
        let mut depth = Forecaster::new(ForecastOptions::default());
        for minute in 0..300 {
            depth.observe(minute * 60, 1000.0 + 10.0 * minute as f64 + noise(minute));
        }
        let forecast = depth.forecast(Duration::from_secs(3600)).expect("learned");
        // The last observation, at minute 299, is about 3,990: an hour on,
        // about 4,590.
        assert!((forecast.value - 4590.0).abs() < 60.0, "{forecast:?}");
    }

    #[test]
    fn bad_input_is_passed_over() {
        let mut forecaster = Forecaster::new(ForecastOptions::default().coverage(2.0));
        assert_eq!(forecaster.options, ForecastOptions::default());
        for i in 0..100 {
            forecaster.observe(i * 60, 10.0);
        }
        let before = forecaster.forecast(Duration::from_secs(60));
        forecaster.observe(100 * 60, f64::NAN);
        forecaster.observe(50 * 60, 1e9);
        forecaster.observe(99 * 60, 1e9);
        assert_eq!(forecaster.forecast(Duration::from_secs(60)), before);
        assert_eq!(forecaster.seen(), 100);
    }
}
