//! Streaming anomaly detection for one series: a robust, seasonal baseline
//! learned online, and a verdict per observation with a score and a reason a
//! person can read.
//!
//! A [`Detector`] holds a fixed amount of state (a level, a shift, a scale,
//! one profile and scale per slot of its season, the range of its values,
//! two 48-bin histograms per kind of evidence) and allocates nothing per
//! observation. For each observation it answers
//! a [`Verdict`]:
//!
//! - **Baseline.** In its [`Season`] (the hour of the day, or of the week)
//!   each slot learns what the series is in it from its own observations (a
//!   profile); the expected value is the slot's profile plus the series'
//!   recent shift from its profiles. Without a season, or while the slot is
//!   still learning, it is the series' recent level. Every part is an
//!   exponentially weighted average of observations, so none can run away
//!   from the series. The spread is a scale: the weighted mean absolute
//!   deviation from the baseline, times 1.2533 (the standard deviation, for
//!   normal noise); once a slot has learned, the geometric mean of the
//!   series' and the slot's own (a busy hour is noisier than a quiet
//!   one). The updates are robust: an observation moves the
//!   baseline by at most [`AnomalyOptions::clip`] scales, so a spike does
//!   not drag it (Huber's M-estimate; the streaming equivalent of a median
//!   and a MAD over the recent past).
//! - **Evidence.** Each observation's distance from the baseline in scales
//!   (its *z*), and that distance averaged over a short and a long window
//!   (exponentially weighted), each made a z of its own by the noise an
//!   average of that length has. A spike shows in the first, a level shift
//!   in the windows: a shift of two scales is ordinary for one observation
//!   and unmistakable over fifteen.
//! - **Rarity.** For each kind of evidence, how often evidence that strong
//!   came for this series, lately and over the long run (the larger
//!   share): a series whose noise is heavy-tailed raises no alarm for what
//!   is ordinary for it ([`AnomalyOptions::rarity`]). A prior of a few
//!   dozen observations with a tail of `exp(-z)` stands in for the history
//!   a young series lacks.
//! - **Range.** An observation beyond every value the series has shown (by
//!   a margin), and at least half the raising threshold from the baseline,
//!   is a new high or low: an alarm however rare its evidence
//!   ([`AnomalyOptions::range_margin`]).
//! - **Score.** Each kind's strength and rarity make a score from 0 to 1
//!   (1/2 at the raising threshold and the rarity that raises an alarm,
//!   the rarity weighing the more); the observation scores its best
//!   kind's, at least 0.99 beyond the range. Scores are comparable across
//!   series: one threshold on them means about the same rarity anywhere.
//! - **Confirmation with hysteresis.** An alarm is raised when some
//!   evidence reaches the raising threshold and is rarer than the rarity
//!   asks (or at a new high or low), and lowered once the strongest
//!   evidence stays under the clearing threshold for the short window
//!   ([`AnomalyOptions::thresholds`]). The observation that raises it
//!   scores its evidence; one during it scores a tenth of that, so that a
//!   consumer acting on a threshold acts once per episode, unless the
//!   episode gets worse or turns: alarming evidence during it that scores
//!   1.4 times what raised it, or that is on the other side of the
//!   baseline (a rise after a drop), escalates it (scored in full, and
//!   reported as raised).
//! - **Cold start.** Until it has seen the observations
//!   [`AnomalyOptions::learning`] asks for (and while the slot of its season
//!   has seen fewer than that asks per slot), the verdict says it is
//!   learning; it raises no alarm and scores 0 before the first.
//!
//! ```
//! use seawall_perfmon::anomaly::{AnomalyOptions, Detector, Season};
//!
//! let mut detector = Detector::new(AnomalyOptions::default().season(Season::None));
//! let minute = 60;
//! for i in 0..600_i32 {
//!     // About 100 requests a minute, give or take a few.
//!     let value = 100.0 + f64::from(i % 7) - 3.0;
//!     let verdict = detector.observe(i64::from(i) * minute, value);
//!     assert!(!verdict.alarm);
//! }
//! let verdict = detector.observe(600 * minute, 160.0);
//! assert!(verdict.alarm && verdict.raised);
//! let reason = verdict.reason("requests per minute of key k").expect("an alarm has a reason");
//! // "requests per minute of key k are 160 (27.7 scales above the
//! // baseline of 100 ± 2.17, beyond every value before) for 1 observation"
//! assert!(reason.starts_with("requests per minute of key k are 160 ("), "{reason}");
//! assert!(reason.contains("scales above the baseline of 100 ±"), "{reason}");
//! assert!(reason.contains("beyond every value before"), "{reason}");
//! ```

use std::fmt;

/// The normal distribution's standard deviation over its mean absolute
/// deviation: `sqrt(pi / 2)`.
const SCALE_OF_DEVIATION: f64 = 1.253_314_137_315_500_3;

/// The share of its evidence an observation scores while an alarm it did
/// not raise is up.
const DURING_ALARM: f64 = 0.1;

/// How many times the score that raised an alarm (or last escalated it)
/// evidence during the alarm must score to escalate it: to be scored, and
/// reported as raised, again.
const ESCALATION: f64 = 1.4;

/// The long memory of the evidence, in half-lives of the recent one.
const LONG_MEMORY: u32 = 20;

/// The prior of the evidence's distribution, in observations per
/// half-life of the recent memory: what a series with little history is
/// judged against (a tail of `exp(-e)`, heavier than normal noise's).
const PRIOR_PER_HALF_LIFE: f64 = 0.2;

/// The weight of the evidence's rarity in the score; its strength weighs
/// the rest.
const RARITY_WEIGHT: f64 = 0.7;

/// How fast a slot's own scale learns, as a share of its profile's weight.
const SLOT_SCALE_WEIGHT: f64 = 0.3;

/// The score of an observation beyond the series' range (at least).
const BEYOND_RANGE_SCORE: f64 = 0.99;

/// What an observation's time says about its expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Season {
    /// No season: the baseline is a level alone.
    None,
    /// One profile per hour of the day (UTC).
    HourOfDay,
    /// One profile per hour of the week (UTC).
    HourOfWeek,
}

impl Season {
    /// Its slots.
    pub(crate) const fn slots(self) -> usize {
        match self {
            Season::None => 1,
            Season::HourOfDay => 24,
            Season::HourOfWeek => 168,
        }
    }

    /// The slot of a time (seconds since the Unix epoch).
    pub(crate) fn slot(self, time: i64) -> usize {
        let hour = time.div_euclid(3600);
        // The epoch fell on a Thursday: shifted so that slot 0 is Monday.
        let slot = match self {
            Season::None => 0,
            Season::HourOfDay => hour.rem_euclid(24),
            Season::HourOfWeek => (hour + 72).rem_euclid(168),
        };
        usize::try_from(slot).unwrap_or(0)
    }
}

/// How a [`Detector`] learns and when it raises an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyOptions {
    pub(crate) season: Season,
    pub(crate) level_weight: f64,
    pub(crate) scale_weight: f64,
    pub(crate) season_weight: f64,
    pub(crate) learning: u32,
    pub(crate) season_learning: u32,
    pub(crate) clip: f64,
    pub(crate) threshold: f64,
    pub(crate) clear: f64,
    pub(crate) short: u32,
    pub(crate) long: u32,
    pub(crate) floor: f64,
    pub(crate) rarity: f64,
    pub(crate) rarity_half_life: u32,
    pub(crate) range_margin: f64,
}

impl Default for AnomalyOptions {
    /// Hour-of-day season; the level and the shift follow the last ~200
    /// observations (weight 0.01), the scale the last ~800 (0.0025), each
    /// hour's profile its last ~100 observations in that hour (0.02); one
    /// observation moves the baseline by at most 6 scales; an alarm at 4
    /// scales of evidence that at most 0.1 % of the series' observations
    /// reached, lately (a half-life of 300) and over the long run (6,000),
    /// or at an observation beyond the series' range by 2 % of its width;
    /// lowered once the evidence has stayed under 1.3 scales for the short
    /// window; windows of 5 and 15 observations; 100 observations (and 5
    /// in the slot) to learn. These are the settings scored on NAB
    /// (docs/benchmarks.md).
    fn default() -> Self {
        Self {
            season: Season::HourOfDay,
            level_weight: 0.01,
            scale_weight: 0.0025,
            season_weight: 0.02,
            learning: 100,
            season_learning: 5,
            clip: 6.0,
            threshold: 4.0,
            clear: 1.3,
            short: 5,
            long: 15,
            floor: 1e-9,
            rarity: 0.001,
            rarity_half_life: 300,
            range_margin: 0.02,
        }
    }
}

impl AnomalyOptions {
    /// The season of the baseline.
    pub fn season(mut self, season: Season) -> Self {
        self.season = season;
        self
    }

    /// How much each observation moves the level and the shift, and the scale (0 to 1;
    /// about 2 / (n + 1) follows the last n observations).
    pub fn weights(mut self, level: f64, scale: f64) -> Self {
        self.level_weight = level;
        self.scale_weight = scale;
        self
    }

    /// How much each observation in a slot moves that slot's profile.
    pub fn season_weight(mut self, weight: f64) -> Self {
        self.season_weight = weight;
        self
    }

    /// Observations before any alarm, and per slot before the slot's
    /// profile is used.
    pub fn learning(mut self, observations: u32, per_slot: u32) -> Self {
        self.learning = observations;
        self.season_learning = per_slot;
        self
    }

    /// The most scales one observation moves the baseline by.
    pub fn clip(mut self, scales: f64) -> Self {
        self.clip = scales;
        self
    }

    /// The evidence (in scales) that raises an alarm, and the level it must
    /// stay under for the short window to lower it again.
    pub fn thresholds(mut self, raise: f64, clear: f64) -> Self {
        self.threshold = raise;
        self.clear = clear;
        self
    }

    /// The short and the long window, in observations.
    pub fn windows(mut self, short: u32, long: u32) -> Self {
        self.short = short;
        self.long = long;
        self
    }

    /// The least scale: a series that never moved makes any change some
    /// number of these away, not infinitely many.
    pub fn floor(mut self, floor: f64) -> Self {
        self.floor = floor;
        self
    }

    /// How rare the evidence must be, as the share of the series'
    /// observations that had evidence at least as strong, for an alarm: a
    /// series whose noise is heavy-tailed raises none for what is ordinary
    /// for it. The share is the larger of two: among the recent
    /// observations (about `half_life` × 1.44 of them, weighted) and over
    /// the long run (twenty times that); each also counts a prior of
    /// `half_life` / 5 observations, so that a series with little history
    /// needs stronger evidence.
    pub fn rarity(mut self, share: f64, half_life: u32) -> Self {
        self.rarity = share;
        self.rarity_half_life = half_life;
        self
    }

    /// An observation beyond the range of every value the series has shown
    /// (widened by `margin` times its width on each side), and at least
    /// half the raising threshold from the baseline, raises an alarm
    /// however rare its evidence: a new high or low. `f64::INFINITY` turns
    /// this off.
    pub fn range_margin(mut self, margin: f64) -> Self {
        self.range_margin = margin;
        self
    }

    /// What is wrong with these options, if anything.
    pub fn check(&self) -> Result<(), String> {
        let weight = |name: &str, w: f64| {
            if w > 0.0 && w <= 1.0 {
                Ok(())
            } else {
                Err(format!("{name} must be above 0 and at most 1, not {w}"))
            }
        };
        weight("the level's weight", self.level_weight)?;
        weight("the scale's weight", self.scale_weight)?;
        weight("the season's weight", self.season_weight)?;
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(format!(
                "the clip must be a positive number, not {}",
                self.clip
            ));
        }
        if !(self.clear.is_finite() && self.clear > 0.0 && self.clear <= self.threshold) {
            return Err(format!(
                "the thresholds must be 0 < clear ({}) <= raise ({})",
                self.clear, self.threshold
            ));
        }
        if self.short == 0 || self.long < self.short {
            return Err(format!(
                "the windows must be 1 <= short ({}) <= long ({})",
                self.short, self.long
            ));
        }
        if !(self.rarity > 0.0 && self.rarity <= 1.0) || self.rarity_half_life == 0 {
            return Err(format!(
                "the rarity must be above 0 and at most 1 ({}), its half-life at least 1 ({})",
                self.rarity, self.rarity_half_life
            ));
        }
        if self.range_margin.is_nan() || self.range_margin < 0.0 {
            return Err(format!(
                "the range's margin must be at least 0, not {}",
                self.range_margin
            ));
        }
        if !(self.floor.is_finite() && self.floor > 0.0) {
            return Err(format!(
                "the floor must be a positive number, not {}",
                self.floor
            ));
        }
        Ok(())
    }
}

/// Which deviation raised or keeps an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// One observation far from the baseline.
    Spike,
    /// The short window's average.
    Short,
    /// The long window's average: a level shift.
    Long,
}

/// What the detector makes of one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The observation.
    pub value: f64,
    /// What the baseline expected of it.
    pub expected: f64,
    /// The baseline's scale.
    pub scale: f64,
    /// The observation's distance from the baseline, in scales (signed).
    pub z: f64,
    /// The strongest evidence, in scales (signed): the observation's own,
    /// or a window's, as `evidence` says.
    pub strength: f64,
    /// Which deviation that is.
    pub evidence: Evidence,
    /// For how many observations the evidence has been over the clearing
    /// level (the episode so far).
    pub for_observations: u32,
    /// A score from 0 to 1 that grows with the evidence and its rarity (at
    /// least 0.99 beyond the series' range); an observation during an alarm
    /// it did not raise or escalate scores a tenth of it.
    pub score: f64,
    /// Whether an alarm is up after this observation.
    pub alarm: bool,
    /// Whether this observation raised it, or escalated it: alarming
    /// evidence during the alarm that scored 1.4 times what raised it (or
    /// last escalated it), or that is on the other side of the baseline,
    /// so that a consumer acts again when an episode gets worse or turns.
    pub raised: bool,
    /// Whether the alarm that is up was raised, or last escalated, by
    /// evidence above the baseline (false while none is up): a consumer
    /// that cares about rises only (a burst, not a drop or the recovery
    /// after one) reads this, not the observation's own side.
    pub rising: bool,
    /// Whether the observation was beyond the range of every value before
    /// it (by the options' margin).
    pub beyond_range: bool,
    /// Still learning: too few observations overall, or in this slot of the
    /// season.
    pub learning: bool,
    /// Whether the expectation was the slot's own (its profile), not the
    /// level: what the reason calls "this hour's baseline".
    hourly: bool,
}

impl Verdict {
    /// A sentence about this observation of `what`, when it is anomalous
    /// (an alarm is up): "requests per minute of key k are 160 (6.1 scales
    /// above this hour's baseline of 100 ± 10) for 3 observations".
    pub fn reason(&self, what: &str) -> Option<String> {
        self.alarm.then(|| self.sentence(what))
    }

    fn sentence(self, what: &str) -> String {
        let side = if self.strength >= 0.0 {
            "above"
        } else {
            "below"
        };
        let how = match self.evidence {
            Evidence::Spike => String::new(),
            Evidence::Short => " on a short average".to_owned(),
            Evidence::Long => " on a long average (a level shift)".to_owned(),
        };
        let plural = if self.for_observations == 1 { "" } else { "s" };
        let range = if self.beyond_range {
            ", beyond every value before"
        } else {
            ""
        };
        format!(
            "{what} are {} ({:.1} scales {side} {} baseline of {} ± {}{how}{range}) for {} observation{plural}",
            Rounded(self.value),
            self.strength.abs(),
            if self.hourly { "this hour's" } else { "the" },
            Rounded(self.expected),
            Rounded(self.scale),
            self.for_observations,
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sentence("the values"))
    }
}

/// A number with about three significant digits, no trailing zeros.
struct Rounded(f64);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        let magnitude = value.abs();
        let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
            0
        } else if magnitude >= 10.0 {
            1
        } else if magnitude >= 1.0 {
            2
        } else {
            // Clamped to 0..=12 first.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let decimals = (2.0 - magnitude.log10().floor()).clamp(0.0, 12.0) as usize;
            decimals
        };
        let text = format!("{value:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        f.write_str(text)
    }
}

/// Bins of the evidence's distribution: four per doubling of `1 + e`.
const BINS: usize = 48;
const BINS_PER_DOUBLING: f64 = 4.0;

/// How often evidence of each strength came lately: an exponentially
/// decayed histogram, so that "rarer than 1 in 100 of this series' recent
/// observations" costs a fixed few dozen numbers per series. The decay is
/// applied by growing the weight of each new observation instead of
/// shrinking the old ones (rescaled now and then).
#[derive(Debug, Clone)]
struct Rarity {
    weights: [f64; BINS],
    total: f64,
    increment: f64,
    growth: f64,
}

impl Rarity {
    fn new(half_life: u32) -> Self {
        Self {
            weights: [0.0; BINS],
            total: 0.0,
            increment: 1.0,
            growth: 2f64.powf(1.0 / f64::from(half_life.max(1))),
        }
    }

    fn bin(evidence: f64) -> usize {
        let bin = (1.0 + evidence.max(0.0)).log2() * BINS_PER_DOUBLING;
        if bin.is_finite() {
            // Not negative (1 + e is at least 1), and saturating.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let bin = bin as usize;
            bin.min(BINS - 1)
        } else {
            BINS - 1
        }
    }

    /// The share of recent observations whose evidence was in the bin of
    /// `evidence` or above, `prior` observations (of today's weight) of
    /// the prior `tail` among them.
    fn share_at_least(&self, evidence: f64, prior: f64, tail: f64) -> f64 {
        let prior = prior * self.increment;
        let all = self.total + prior;
        if all <= 0.0 {
            return 1.0;
        }
        let bin = Self::bin(evidence);
        // Summed over the fewer bins.
        let above: f64 = if bin < BINS / 2 {
            (self.total - self.weights[..bin].iter().sum::<f64>()).max(0.0)
        } else {
            self.weights[bin..].iter().sum()
        };
        ((above + prior * tail) / all).min(1.0)
    }

    fn add(&mut self, evidence: f64) {
        self.increment *= self.growth;
        if self.increment > 1e200 {
            for weight in &mut self.weights {
                *weight /= self.increment;
            }
            self.total /= self.increment;
            self.increment = 1.0;
        }
        self.weights[Self::bin(evidence)] += self.increment;
        self.total += self.increment;
    }
}

/// How often evidence of each strength came for one kind of evidence:
/// lately and over the long run.
#[derive(Debug, Clone)]
struct Memory {
    recent: Rarity,
    long: Rarity,
    /// The prior's observations.
    prior: f64,
}

impl Memory {
    fn new(half_life: u32) -> Self {
        Self {
            recent: Rarity::new(half_life),
            long: Rarity::new(half_life.saturating_mul(LONG_MEMORY)),
            prior: PRIOR_PER_HALF_LIFE * f64::from(half_life),
        }
    }

    /// The share of observations with evidence at least this strong: the
    /// larger of the recent and the long-run share.
    fn share_at_least(&self, evidence: f64) -> f64 {
        let tail = (-evidence).exp();
        let recent = self.recent.share_at_least(evidence, self.prior, tail);
        let long = self.long.share_at_least(evidence, self.prior, tail);
        recent.max(long)
    }

    fn add(&mut self, evidence: f64) {
        self.recent.add(evidence);
        self.long.add(evidence);
    }
}

/// One slot of the season: what the series is in it (learned from its own
/// observations alone), how far from it the series strays (a mean
/// absolute deviation), and how many observations shaped that.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    profile: f64,
    deviation: f64,
    seen: u32,
}

/// A streaming anomaly detector for one series. See the [module](self).
#[derive(Debug, Clone)]
pub struct Detector {
    options: AnomalyOptions,
    level: f64,
    /// The weighted mean absolute deviation (not yet a scale).
    deviation: f64,
    slots: Box<[Slot]>,
    /// How far the series is from its slots' profiles lately.
    shift: f64,
    seen: u64,
    short: f64,
    long: f64,
    short_weight: f64,
    long_weight: f64,
    /// The noise of each window's average, in scales.
    short_noise: f64,
    long_noise: f64,
    /// How often each kind of evidence (the observation's, the short and
    /// the long window's) came at each strength.
    rarity: [Memory; 3],
    /// The range of the values seen: the lowest and the highest.
    low: f64,
    high: f64,
    /// The score that raised the alarm that is up, or last escalated it.
    peak: f64,
    /// Whether that evidence was above the baseline.
    rising: bool,
    alarm: bool,
    /// Observations since the evidence last fell under the clearing level.
    over: u32,
    /// Consecutive observations under it during an alarm.
    under: u32,
}

impl Detector {
    /// A detector with `options`; options that [`AnomalyOptions::check`]
    /// refuses are replaced by the defaults.
    pub fn new(options: AnomalyOptions) -> Self {
        let options = if options.check().is_ok() {
            options
        } else {
            AnomalyOptions::default()
        };
        let weight = |window: u32| 2.0 / (f64::from(window) + 1.0);
        let (short_weight, long_weight) = (weight(options.short), weight(options.long));
        // An exponentially weighted average of unit noise has the variance
        // w / (2 - w).
        let noise = |w: f64| (w / (2.0 - w)).sqrt();
        Self {
            options,
            level: 0.0,
            deviation: 0.0,
            slots: vec![Slot::default(); options.season.slots()].into_boxed_slice(),
            shift: 0.0,
            seen: 0,
            short: 0.0,
            long: 0.0,
            short_weight,
            long_weight,
            short_noise: noise(short_weight),
            long_noise: noise(long_weight),
            rarity: [
                Memory::new(options.rarity_half_life),
                Memory::new(options.rarity_half_life),
                Memory::new(options.rarity_half_life),
            ],
            low: f64::INFINITY,
            high: f64::NEG_INFINITY,
            peak: 0.0,
            rising: false,
            alarm: false,
            over: 0,
            under: 0,
        }
    }

    /// The options in use.
    pub fn options(&self) -> &AnomalyOptions {
        &self.options
    }

    /// Observations seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether an alarm is up.
    pub fn alarm(&self) -> bool {
        self.alarm
    }

    /// What the baseline expects at `time` (seconds since the Unix epoch),
    /// and its scale.
    pub fn expected(&self, time: i64) -> (f64, f64) {
        let slot = self.options.season.slot(time);
        (self.expectation(slot), self.scale_at(slot))
    }

    /// A slot that has learned is expected at its profile plus the recent
    /// shift; one still learning (or no season) at the level.
    fn expectation(&self, slot: usize) -> f64 {
        if self.hourly(slot) {
            self.slots[slot].profile + self.shift
        } else {
            self.level
        }
    }

    /// Whether `slot` is expected at its own profile.
    fn hourly(&self, slot: usize) -> bool {
        self.options.season != Season::None && self.slots[slot].seen >= self.options.season_learning
    }

    /// The scale: the series', or for a slot that has learned, the
    /// geometric mean of the series' and the slot's own (a busy hour's
    /// noise is not a quiet one's).
    fn scale_at(&self, slot: usize) -> f64 {
        let floor = self.options.floor * self.level.abs().max(1.0);
        let scale = self.deviation * SCALE_OF_DEVIATION;
        let scale = if self.hourly(slot) {
            (scale * self.slots[slot].deviation * SCALE_OF_DEVIATION).sqrt()
        } else {
            scale
        };
        scale.max(floor)
    }

    /// Takes one observation at `time` (seconds since the Unix epoch) and
    /// says what it makes of it. A value that is not finite is no evidence
    /// (it scores 0) and changes nothing: not the baseline, not the alarm.
    pub fn observe(&mut self, time: i64, value: f64) -> Verdict {
        let options = self.options;
        let slot_index = options.season.slot(time);
        if self.seen == 0 && value.is_finite() {
            self.level = value;
        }
        let (expected, scale) = self.expected(time);
        let hourly = self.hourly(slot_index);
        let slot = self.slots[slot_index];
        let learning =
            self.seen < u64::from(options.learning) || slot.seen < options.season_learning;
        if !value.is_finite() {
            // Judged as no evidence; nothing learned, nothing changed.
            return Verdict {
                value,
                expected,
                scale,
                z: 0.0,
                strength: 0.0,
                evidence: Evidence::Spike,
                for_observations: 1,
                score: 0.0,
                alarm: self.alarm,
                raised: false,
                rising: self.alarm && self.rising,
                beyond_range: false,
                learning,
                hourly,
            };
        }
        let z = (value - expected) / scale;
        let clipped = z.clamp(-options.clip, options.clip);
        // The windows average the clipped deviations: one spike moves them
        // by at most a few scales' worth.
        self.short += self.short_weight * (clipped - self.short);
        self.long += self.long_weight * (clipped - self.long);
        let candidates = [
            (z, Evidence::Spike),
            (self.short / self.short_noise, Evidence::Short),
            (self.long / self.long_noise, Evidence::Long),
        ];
        let (strength, evidence) = candidates
            .into_iter()
            .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))
            .unwrap_or((z, Evidence::Spike));
        let magnitude = if strength.is_finite() {
            strength.abs()
        } else {
            0.0
        };
        if magnitude >= options.clear {
            self.over = self.over.saturating_add(1);
        } else {
            self.over = 0;
        }
        let learning_overall = self.seen < u64::from(options.learning);
        // Each kind of evidence is judged against its own history (before
        // this observation is counted): how rare evidence this strong has
        // been for this series. Its score grows with its strength (1/2 at
        // the threshold) and its rarity (1/2 at the rarity that raises an
        // alarm), the rarity weighing the more; the observation scores its
        // best kind's.
        let mut rare_enough = false;
        let mut score: f64 = 0.0;
        for ((deviation, _), memory) in candidates.iter().zip(&mut self.rarity) {
            let strength = if deviation.is_finite() {
                deviation.abs()
            } else {
                0.0
            };
            let share = memory.share_at_least(strength);
            if !learning_overall {
                memory.add(strength);
            }
            rare_enough |= strength >= options.threshold && share <= options.rarity;
            let strong = strength / (strength + options.threshold);
            let rare = options.rarity / (options.rarity + share);
            // strong^(1 - w) × rare^w
            let weighted = (1.0 - RARITY_WEIGHT) * strong.ln() + RARITY_WEIGHT * rare.ln();
            score = score.max(weighted.exp());
        }
        // A new high or low, by the margin, that is evidence too.
        let width = self.high - self.low;
        let margin = options.range_margin * width;
        let beyond_range = !learning_overall
            && width > 0.0
            && magnitude >= options.threshold / 2.0
            && (value > self.high + margin || value < self.low - margin);
        self.low = self.low.min(value);
        self.high = self.high.max(value);
        if beyond_range {
            score = score.max(BEYOND_RANGE_SCORE);
        }
        let alarming = !learning_overall && (rare_enough || beyond_range);
        let mut raised = false;
        if self.alarm {
            if magnitude < options.clear {
                self.under += 1;
                if self.under >= options.short {
                    self.alarm = false;
                }
            } else {
                self.under = 0;
            }
            // Worse, or on the other side of the baseline (a rise after
            // a drop): raised anew.
            let turned = (strength > 0.0) != self.rising;
            if self.alarm && alarming && (turned || score > ESCALATION * self.peak) {
                raised = true;
                self.peak = score;
                self.rising = strength > 0.0;
            }
        } else if alarming {
            self.alarm = true;
            raised = true;
            self.under = 0;
            self.peak = score;
            self.rising = strength > 0.0;
        }
        // A tenth of that during an alarm this observation did not raise
        // (or escalate).
        if self.alarm && !raised {
            score *= DURING_ALARM;
        }
        if learning_overall {
            score = 0.0;
        }
        self.learn(slot_index, value, expected, scale);
        Verdict {
            value,
            expected,
            scale,
            z,
            strength,
            evidence,
            for_observations: self.over.max(1),
            score,
            alarm: self.alarm,
            raised,
            rising: self.alarm && self.rising,
            beyond_range,
            learning,
            hourly,
        }
    }

    /// Moves the baseline towards `value`, each part by at most `clip`
    /// scales. Every part is a weighted average of observations (or of
    /// their distances from a slot's profile), so none can run away from
    /// the series: the level of all observations, each slot's profile of
    /// its own, and the shift of the series from the profiles lately.
    fn learn(&mut self, slot_index: usize, value: f64, expected: f64, scale: f64) {
        let options = self.options;
        // Learning: no scale to trust yet.
        let bound = if self.seen < u64::from(options.learning) {
            f64::INFINITY
        } else {
            options.clip * scale
        };
        let clip = |residual: f64| residual.clamp(-bound, bound);
        // Weighted as a plain mean until the weights are the smaller: an
        // average of the first few observations, not a pull towards zero.
        let mean_weight = |weight: f64, before: f64| weight.max(1.0 / (before + 1.0));
        let before = self.seen as f64;
        let level = self.level;
        self.level += mean_weight(options.level_weight, before) * clip(value - self.level);
        if options.season != Season::None {
            let slot = &mut self.slots[slot_index];
            if slot.seen == 0 {
                // A slot starts where it was expected: at the level.
                slot.profile = level;
            }
            if slot.seen >= options.season_learning {
                self.shift += options.level_weight * clip(value - slot.profile - self.shift);
            }
            let weight = mean_weight(options.season_weight, f64::from(slot.seen));
            slot.profile += weight * clip(value - slot.profile);
        }
        let slot = &mut self.slots[slot_index];
        slot.seen = slot.seen.saturating_add(1);
        let deviation = clip(value - expected).abs();
        if self.seen > 0 {
            let weight = options.scale_weight.max(1.0 / before);
            self.deviation += weight * (deviation - self.deviation);
        }
        if options.season != Season::None {
            // A slot's scale starts at the series' and learns from the
            // slot's own deviations, slower than its profile.
            if slot.seen == 1 {
                slot.deviation = self.deviation;
            } else {
                let weight = mean_weight(
                    options.season_weight * SLOT_SCALE_WEIGHT,
                    f64::from(slot.seen),
                );
                slot.deviation += weight * (deviation - slot.deviation);
            }
        }
        self.seen += 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A uniform number in [0, 1) drawn from `i` (splitmix64); the
    /// forecaster's tests draw from it too.
    pub(crate) fn uniform(i: i64) -> f64 {
        let mut x = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Bounded, roughly normal noise around 100 (a spread of about 5),
    /// the same for the same `i`.
    fn noisy(i: i64) -> f64 {
        let sum: f64 = (0..3).map(|k| uniform(3 * i + k)).sum();
        100.0 + 10.0 * (sum - 1.5)
    }

    #[test]
    fn a_spike_raises_one_alarm_and_the_baseline_stays() {
        let mut detector = Detector::new(AnomalyOptions::default().season(Season::None));
        for i in 0..500 {
            assert!(!detector.observe(i * 60, noisy(i)).alarm, "at {i}");
        }
        let (before, _) = detector.expected(500 * 60);
        let spike = detector.observe(500 * 60, 1000.0);
        assert!(
            spike.raised && spike.evidence == Evidence::Spike,
            "{spike:?}"
        );
        assert!(spike.score > 0.8, "{spike:?}");
        let (after, _) = detector.expected(501 * 60);
        // Clipped: the spike moved the level by at most clip × scale × weight.
        let weight = detector.options().level_weight;
        assert!((after - before).abs() < 6.0 * spike.scale * weight + 1e-9);
        let mut raised = 0;
        for i in 501..600 {
            let verdict = detector.observe(i * 60, noisy(i));
            raised += u32::from(verdict.raised);
            assert!(verdict.score < 0.5, "{i}: {verdict:?}");
        }
        assert_eq!(raised, 0);
        assert!(
            !detector.alarm(),
            "the alarm clears once the series is back"
        );
    }

    #[test]
    fn a_level_shift_too_small_for_one_observation_is_found_over_the_window() {
        let mut detector = Detector::new(AnomalyOptions::default().season(Season::None));
        let mut scale = 0.0;
        for i in 0..500 {
            scale = detector.observe(i * 60, noisy(i)).scale;
        }
        // Two scales up: no single observation reaches the threshold.
        let mut found = None;
        for i in 500..600 {
            let verdict = detector.observe(i * 60, noisy(i) + 2.0 * scale);
            assert!(verdict.z.abs() < 5.0);
            if verdict.raised {
                found = Some((i, verdict));
                break;
            }
        }
        let (at, verdict) = found.expect("the shift raises an alarm");
        assert!(at < 530, "found after {} observations", at - 500);
        assert_ne!(verdict.evidence, Evidence::Spike);
        let reason = verdict.reason("latency").expect("a reason");
        assert!(reason.contains("above the baseline"), "{reason}");
    }

    #[test]
    fn a_new_high_raises_an_alarm_and_a_worse_episode_raises_it_again() {
        let mut detector = Detector::new(AnomalyOptions::default().season(Season::None));
        let mut scale = 0.0;
        for i in 0..2000 {
            scale = detector.observe(i * 60, noisy(i)).scale;
        }
        // A shift down of two scales, quieter, within the range
        // seen: raised once, on the windows' evidence.
        let mut raised = Vec::new();
        let mut last = None;
        for i in 2000..2040 {
            let value = 100.0 - 2.0 * scale + 0.1 * (noisy(i) - 100.0);
            let verdict = detector.observe(i * 60, value);
            if verdict.raised {
                raised.push((i, verdict));
            }
            last = Some(verdict);
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert!(!raised[0].1.beyond_range, "{raised:?}");
        assert!(last.is_some_and(|v| v.alarm), "{last:?}");
        // Far below anything seen, during it: escalated, scored in full.
        let verdict = detector.observe(2040 * 60, 0.0);
        assert!(verdict.raised && verdict.beyond_range, "{verdict:?}");
        assert!(verdict.score > 0.9, "{verdict:?}");
        let reason = verdict.reason("latency").expect("a reason");
        assert!(reason.contains("below the baseline"), "{reason}");
        assert!(reason.contains("beyond every value before"), "{reason}");
        // Once is enough: the same again is not raised again.
        let verdict = detector.observe(2041 * 60, 0.0);
        assert!(verdict.alarm && !verdict.raised, "{verdict:?}");
    }

    /// A drop raises an alarm below the baseline; a burst above it while
    /// that alarm is still up raises it anew, on its own side.
    #[test]
    fn a_rise_during_a_drop_s_alarm_raises_it_anew() {
        let mut detector = Detector::new(AnomalyOptions::default().season(Season::None));
        for i in 0..2000 {
            detector.observe(i * 60, noisy(i));
        }
        let drop = detector.observe(2000 * 60, 0.0);
        assert!(drop.raised && drop.strength < 0.0, "{drop:?}");
        assert!(!drop.rising, "{drop:?}");
        let rise = detector.observe(2001 * 60, 400.0);
        assert!(rise.alarm && rise.raised && rise.strength > 0.0, "{rise:?}");
        assert!(rise.rising, "{rise:?}");
        // The same again is not raised again.
        let again = detector.observe(2002 * 60, 400.0);
        assert!(again.alarm && !again.raised, "{again:?}");
    }

    #[test]
    fn the_season_learns_each_hour_and_says_when_it_is_learning() {
        let options = AnomalyOptions::default().season(Season::HourOfDay);
        let mut detector = Detector::new(options);
        // Busy days, quiet nights: 5-minute observations for 14 days; the
        // hours' profiles settle over the first week.
        let value = |t: i64| {
            let hour = t / 3600 % 24;
            let base = if (8..20).contains(&hour) {
                1000.0
            } else {
                100.0
            };
            base + noisy(t / 300) - 100.0
        };
        let first = detector.observe(0, value(0));
        assert!(first.learning);
        let mut alarms = 0;
        for step in 1..(14 * 288) {
            let t = step * 300;
            let verdict = detector.observe(t, value(t));
            if step > 288 {
                assert!(!verdict.learning, "{step}");
            }
            if step > 7 * 288 {
                alarms += u32::from(verdict.raised);
            }
        }
        assert_eq!(alarms, 0, "the day's shape is learned, not alarmed on");
        // The night's level in the day: an anomaly.
        let noon = 14 * 86_400 + 12 * 3600;
        let verdict = detector.observe(noon, 100.0);
        assert!(verdict.raised && verdict.strength < 0.0, "{verdict:?}");
        let reason = verdict.reason("requests per minute").expect("a reason");
        assert!(reason.contains("below this hour's baseline"), "{reason}");
    }

    /// A slot still learning is expected at the level: its reason names the
    /// baseline, not the hour's.
    #[test]
    fn a_reason_names_the_hours_baseline_only_once_the_hour_has_learned() {
        let mut detector = Detector::new(AnomalyOptions::default());
        for i in 0..300 {
            detector.observe(i * 30, noisy(i));
        }
        // Hour 10: never seen.
        let verdict = detector.observe(10 * 3600, 1000.0);
        assert!(verdict.raised && verdict.learning, "{verdict:?}");
        let reason = verdict.reason("latency").expect("a reason");
        assert!(reason.contains("above the baseline of"), "{reason}");
        // Hour 0 has: its reason is the hour's.
        for i in 0..200 {
            detector.observe(86_400 + i * 10, noisy(i));
        }
        // A new high: a second spike as strong as the first, in the ~500
        // observations since, is not rare enough for an alarm of its own.
        let verdict = detector.observe(86_400 + 2000, 2000.0);
        assert!(verdict.alarm && !verdict.learning, "{verdict:?}");
        let reason = verdict.reason("latency").expect("a reason");
        assert!(reason.contains("above this hour's baseline of"), "{reason}");
    }

    #[test]
    fn bad_values_and_options_teach_nothing_and_do_not_panic() {
        let mut detector = Detector::new(AnomalyOptions::default().weights(0.0, 2.0));
        assert_eq!(detector.options(), &AnomalyOptions::default());
        for i in 0..300 {
            detector.observe(i, 5.0);
        }
        let before = detector.expected(300);
        let untouched = detector.clone();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let verdict = detector.observe(300, bad);
            assert!(verdict.score.is_finite() && (0.0..=1.0).contains(&verdict.score));
        }
        assert_eq!(detector.expected(300), before);
        assert_eq!(
            detector.clone().observe(301, 5.0 + 1e-3),
            untouched.clone().observe(301, 5.0 + 1e-3)
        );
        // Nothing else moves either (the windows' averages among them): on a
        // noisy series, the next finite value is judged as if the bad ones
        // never came.
        let mut noisy_detector = Detector::new(AnomalyOptions::default().season(Season::None));
        for i in 0..300 {
            noisy_detector.observe(i * 60, noisy(i) + if i > 290 { 5.0 } else { 0.0 });
        }
        let untouched = noisy_detector.clone();
        for bad in [f64::NAN, f64::INFINITY] {
            noisy_detector.observe(300 * 60, bad);
        }
        assert_eq!(
            noisy_detector.observe(301 * 60, 104.0),
            untouched.clone().observe(301 * 60, 104.0)
        );
        // A series that never moved: the floor keeps the scale positive.
        let verdict = detector.observe(301, 5.0 + 1e-3);
        assert!(verdict.z.is_finite() && verdict.raised, "{verdict:?}");
        assert!(
            AnomalyOptions::default()
                .thresholds(2.0, 3.0)
                .check()
                .is_err()
        );
        assert!(AnomalyOptions::default().windows(0, 3).check().is_err());
    }

    #[test]
    fn a_reason_rounds_its_numbers_for_a_reader() {
        assert_eq!(Rounded(6.123_456).to_string(), "6.12");
        assert_eq!(Rounded(412.7).to_string(), "413");
        assert_eq!(Rounded(0.001_234_5).to_string(), "0.00123");
        assert_eq!(Rounded(20.0).to_string(), "20");
    }
}
