//! The algorithms as pure functions of a state, the time and a cost.
//!
//! Every store runs these same steps: the memory store calls them directly,
//! and the Redis store's Lua script (`redis.lua`) is a line-by-line mirror of
//! them that the conformance suite holds to the same answers. All arithmetic
//! is on integer microseconds and integer units, with every product kept
//! below 2^53 by [`Limit`]'s validation so that Lua's doubles compute exactly
//! what Rust does.
//!
//! A step first brings the state up to `now` (refills tokens, drains the
//! bucket, forgets log entries and windows that have passed), which changes
//! nothing a caller could observe, then decides; it consumes `cost` only when
//! the request is admitted and `commit` is set. A rejected request never
//! consumes anything.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::{Error, Result};

/// Largest value every intermediate product stays below: 2^53, the last
/// integer a double holds exactly.
pub(crate) const EXACT: u64 = 1 << 53;

/// [`MAX_DURATION`](crate::MAX_DURATION) in µs: no state is kept longer. A
/// sliding window's state matters for two windows, which for a window of
/// over half a century would outlive it; the scripts (check/sliding.lua,
/// redis.lua) hold the same number.
pub(crate) const LONGEST_US: u64 = 100 * 365 * 24 * 3600 * 1_000_000;

/// The largest limit of a sliding log. It keeps one entry per admitted
/// unit, on Redis a sorted-set member each, so a subject's log never holds
/// more than this many, and no call removes or frees more: about a
/// millisecond of the server's time. A larger limit is a sliding window's
/// work ([`Limit::sliding_window`]: two counters, within a fraction of a
/// percent of exact).
pub const MAX_LOG_LIMIT: u64 = 10_000;

/// The most units one check of a sliding log may cost: each is a member
/// added in the same script, and a script holds every other client of that
/// Redis (limiters, cache, queue) until it ends. A thousand take the server
/// about a millisecond; a larger cost is [`Error::CostTooHigh`](crate::Error::CostTooHigh).
pub const MAX_LOG_COST: u64 = 1_000;

/// Which algorithm a [`Limit`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// A counter per fixed window. Cheap; admits up to twice the limit across
    /// a window boundary.
    FixedWindow,
    /// A log of admitted units: exact, never more than the limit in any
    /// window of its length; memory grows with the limit.
    SlidingLog,
    /// The current window's counter plus the previous one's, weighted by how
    /// much of it still overlaps the sliding window: close to exact, two
    /// counters of memory.
    SlidingWindow,
    /// A bucket of tokens refilled at a steady rate; a request takes `cost`
    /// tokens. Allows bursts up to the capacity.
    TokenBucket,
    /// A bucket that fills with each request and drains at a steady rate
    /// (leaky bucket as a meter); a request that would overflow is rejected.
    LeakyBucket,
    /// A queue drained at a steady rate (leaky bucket as a queue): a request
    /// is admitted with a delay that spaces it from the one before, or
    /// rejected when the queue is full.
    LeakyQueue,
    /// The generic cell rate algorithm: one timestamp per key, equivalent to
    /// a token bucket.
    Gcra,
}

impl Algorithm {
    /// The short name used in metrics, keys and the Redis script.
    pub fn name(self) -> &'static str {
        match self {
            Self::FixedWindow => "fixed_window",
            Self::SlidingLog => "sliding_log",
            Self::SlidingWindow => "sliding_window",
            Self::TokenBucket => "token_bucket",
            Self::LeakyBucket => "leaky_bucket",
            Self::LeakyQueue => "leaky_queue",
            Self::Gcra => "gcra",
        }
    }

    /// The code the Redis script dispatches on.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::FixedWindow => 1,
            Self::SlidingLog => 2,
            Self::SlidingWindow => 3,
            Self::TokenBucket => 4,
            Self::LeakyBucket => 5,
            Self::LeakyQueue => 6,
            Self::Gcra => 7,
        }
    }

    /// Every algorithm, for suites that run them all.
    pub const ALL: [Self; 7] = [
        Self::FixedWindow,
        Self::SlidingLog,
        Self::SlidingWindow,
        Self::TokenBucket,
        Self::LeakyBucket,
        Self::LeakyQueue,
        Self::Gcra,
    ];
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule: an algorithm with its quota.
///
/// Window algorithms admit `limit` units per `window`. Rate algorithms
/// (buckets and GCRA) admit `rate` units per `period` on average with bursts
/// of up to `capacity` units; the time per unit is `period / rate`, rounded
/// up to a whole microsecond so that rounding never admits more.
///
/// ```
/// use std::time::Duration;
/// use seawall_ratelimit::Limit;
///
/// let api = Limit::sliding_window(100, Duration::from_secs(60))?;
/// let burst = Limit::gcra(10, Duration::from_secs(1), 20)?; // 10/s, bursts of 20
/// assert_eq!(burst.capacity(), 20);
/// # Ok::<(), seawall_ratelimit::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    algorithm: Algorithm,
    /// Window algorithms: the limit. Rate algorithms: the capacity (burst,
    /// bucket size, queue depth).
    capacity: u64,
    /// Window algorithms: the window. Rate algorithms: the time per unit.
    step_us: u64,
    /// What the caller asked for, for headers and display.
    period: Duration,
    rate: u64,
}

impl Limit {
    /// A counter per fixed window of `window`: at most `limit` units per
    /// window, up to `2 × limit` across a boundary.
    pub fn fixed_window(limit: u64, window: Duration) -> Result<Self> {
        Self::windowed(Algorithm::FixedWindow, limit, window)
    }

    /// A log of admitted units: at most `limit` units in any `window`; the
    /// limit is at most [`MAX_LOG_LIMIT`].
    pub fn sliding_log(limit: u64, window: Duration) -> Result<Self> {
        Self::windowed(Algorithm::SlidingLog, limit, window)
    }

    /// The sliding window counter: at most `limit` units in the weighted
    /// estimate of the last `window`.
    pub fn sliding_window(limit: u64, window: Duration) -> Result<Self> {
        Self::windowed(Algorithm::SlidingWindow, limit, window)
    }

    /// A token bucket of `capacity` tokens, refilled with `rate` tokens per
    /// `period`.
    pub fn token_bucket(rate: u64, period: Duration, capacity: u64) -> Result<Self> {
        Self::rated(Algorithm::TokenBucket, rate, period, capacity)
    }

    /// A leaky bucket (meter) holding `capacity` units, draining `rate`
    /// units per `period`.
    pub fn leaky_bucket(rate: u64, period: Duration, capacity: u64) -> Result<Self> {
        Self::rated(Algorithm::LeakyBucket, rate, period, capacity)
    }

    /// A leaky bucket as a queue: requests leave at `rate` units per
    /// `period`, each delayed behind the ones before; at most `capacity`
    /// units wait or pass at once, the rest are rejected.
    pub fn leaky_queue(rate: u64, period: Duration, capacity: u64) -> Result<Self> {
        Self::rated(Algorithm::LeakyQueue, rate, period, capacity)
    }

    /// GCRA: `rate` units per `period` with bursts of up to `burst` units.
    pub fn gcra(rate: u64, period: Duration, burst: u64) -> Result<Self> {
        Self::rated(Algorithm::Gcra, rate, period, burst)
    }

    fn windowed(algorithm: Algorithm, limit: u64, window: Duration) -> Result<Self> {
        let window_us = micros(algorithm, window)?;
        if limit == 0 {
            return Err(Error::InvalidLimit(format!(
                "{algorithm}: the limit must be at least 1"
            )));
        }
        if window_us == 0 {
            return Err(Error::InvalidLimit(format!(
                "{algorithm}: the window must be at least 1 µs"
            )));
        }
        // The sliding window counter weighs in milliseconds (see `sliding_window`).
        let product = match algorithm {
            Algorithm::SlidingWindow => (window_us / 1000 + 1).checked_mul(limit),
            _ => Some(window_us.max(limit)),
        };
        if product.is_none_or(|p| p >= EXACT / 4) {
            return Err(Error::InvalidLimit(format!(
                "{algorithm}: {limit} per {window:?} is too large to compute exactly"
            )));
        }
        if algorithm == Algorithm::SlidingLog && limit > MAX_LOG_LIMIT {
            return Err(Error::InvalidLimit(format!(
                "{algorithm}: a log keeps one entry per unit, at most {MAX_LOG_LIMIT}, not {limit}"
            )));
        }
        Ok(Self {
            algorithm,
            capacity: limit,
            step_us: window_us,
            period: window,
            rate: limit,
        })
    }

    fn rated(algorithm: Algorithm, rate: u64, period: Duration, capacity: u64) -> Result<Self> {
        let period_us = micros(algorithm, period)?;
        if rate == 0 || capacity == 0 {
            return Err(Error::InvalidLimit(format!(
                "{algorithm}: the rate and the capacity must be at least 1"
            )));
        }
        if period_us == 0 {
            return Err(Error::InvalidLimit(format!(
                "{algorithm}: the period must be at least 1 µs"
            )));
        }
        let step_us = period_us.div_ceil(rate);
        if capacity.checked_mul(step_us).is_none_or(|p| p >= EXACT / 4) {
            return Err(Error::InvalidLimit(format!(
                "{algorithm}: {rate} per {period:?} with capacity {capacity} is too large to compute exactly"
            )));
        }
        Ok(Self {
            algorithm,
            capacity,
            step_us,
            period,
            rate,
        })
    }

    /// This limit with its rate and capacity divided by `by` (at least one
    /// unit each): one instance's share.
    pub(crate) fn divided(&self, by: u64) -> Result<Self> {
        let by = by.max(1);
        if self.is_windowed() {
            Self::windowed(self.algorithm, (self.capacity / by).max(1), self.period)
        } else {
            Self::rated(
                self.algorithm,
                (self.rate / by).max(1),
                self.period,
                (self.capacity / by).max(1),
            )
        }
    }

    /// This limit with its rate and capacity multiplied by `factor`, from
    /// 0 (exclusive) to 1, rounded to the nearest unit and at least one;
    /// the algorithm and the period stay. A factor of 1 is the limit itself,
    /// and so is the scaled form of a rate limit so close to the bounds of
    /// integer microseconds that a rounded-down rate would leave them (a
    /// limit built near those bounds does not shrink).
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_ratelimit::Limit;
    ///
    /// let limit = Limit::sliding_window(100, Duration::from_secs(60))?;
    /// assert_eq!(limit.scaled(0.25)?.capacity(), 25);
    /// assert_eq!(limit.scaled(0.001)?.capacity(), 1);
    /// assert!(limit.scaled(0.0).is_err());
    /// # Ok::<(), seawall_ratelimit::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] when `factor` is not in (0, 1].
    pub fn scaled(&self, factor: f64) -> Result<Self> {
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(Error::InvalidLimit(format!(
                "a limit is scaled by a factor in (0, 1], not {factor}"
            )));
        }
        if factor == 1.0 {
            return Ok(*self);
        }
        // Exact for any count below 2^53; a larger count is beyond what a
        // limit can hold in integer microseconds anyway.
        // A factor in (0, 1] keeps the product within 0..=n, and a float
        // cast saturates.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let times = |n: u64| ((n as f64 * factor).round() as u64).clamp(1, n);
        let scaled = if self.is_windowed() {
            Self::windowed(self.algorithm, times(self.capacity), self.period)
        } else {
            Self::rated(
                self.algorithm,
                times(self.rate),
                self.period,
                times(self.capacity),
            )
        };
        Ok(scaled.unwrap_or(*self))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The most units admitted at once: the limit of a window algorithm, the
    /// capacity (burst) of a rate algorithm.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The most one request may cost: the capacity, and for a sliding log
    /// at most [`MAX_LOG_COST`].
    pub fn max_cost(&self) -> u64 {
        match self.algorithm {
            Algorithm::SlidingLog => self.capacity.min(MAX_LOG_COST),
            _ => self.capacity,
        }
    }

    /// The window, or the period the rate is given per.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Units per period (the limit, for window algorithms).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The span a policy header names: the window, or the time a rate
    /// algorithm takes to recover its whole capacity.
    pub fn policy_window(&self) -> Duration {
        if self.is_windowed() {
            self.period
        } else {
            Duration::from_micros(self.capacity * self.step_us)
        }
    }

    fn is_windowed(&self) -> bool {
        matches!(
            self.algorithm,
            Algorithm::FixedWindow | Algorithm::SlidingLog | Algorithm::SlidingWindow
        )
    }

    /// Window length, or time per unit, in microseconds.
    pub(crate) fn step_us(&self) -> u64 {
        self.step_us
    }

    /// An empty state for this limit.
    pub(crate) fn fresh_state(&self) -> State {
        match self.algorithm {
            Algorithm::FixedWindow | Algorithm::SlidingWindow => State::Window {
                index: 0,
                current: 0,
                previous: 0,
                of: self.algorithm,
            },
            Algorithm::SlidingLog => State::Log(Log::default()),
            Algorithm::TokenBucket
            | Algorithm::LeakyBucket
            | Algorithm::LeakyQueue
            | Algorithm::Gcra => State::Tat {
                at: 0,
                of: self.algorithm,
            },
        }
    }

    /// Brings `state` up to `now`, decides on `cost`, and consumes it when
    /// admitted and `commit` is set.
    pub(crate) fn step(&self, state: &mut State, now: u64, cost: u64, commit: bool) -> Step {
        match (self.algorithm, state) {
            (
                Algorithm::FixedWindow,
                State::Window {
                    index,
                    current,
                    of: Algorithm::FixedWindow,
                    ..
                },
            ) => fixed_window(self, index, current, now, cost, commit),
            (
                Algorithm::SlidingWindow,
                State::Window {
                    index,
                    current,
                    previous,
                    of: Algorithm::SlidingWindow,
                },
            ) => sliding_window(self, index, current, previous, now, cost, commit),
            (Algorithm::SlidingLog, State::Log(log)) => sliding_log(self, log, now, cost, commit),
            (
                Algorithm::LeakyQueue,
                State::Tat {
                    at,
                    of: Algorithm::LeakyQueue,
                },
            ) => leaky_queue(self, at, now, cost, commit),
            (
                algorithm @ (Algorithm::Gcra | Algorithm::TokenBucket | Algorithm::LeakyBucket),
                State::Tat { at, of },
            ) if *of == algorithm => {
                // GCRA, and the buckets, which are GCRA (see `gcra`).
                gcra(self, at, now, cost, commit)
            }
            (_, state) => {
                // A state of another algorithm (the limit changed), even one
                // of the same shape: start afresh.
                *state = self.fresh_state();
                self.step(state, now, cost, commit)
            }
        }
    }
}

/// A window or period in µs; one too long for a `u64` of them is refused
/// (a saturated count would compute another limit than the one asked for).
fn micros(algorithm: Algorithm, duration: Duration) -> Result<u64> {
    u64::try_from(duration.as_micros()).map_err(|_| {
        Error::InvalidLimit(format!(
            "{algorithm}: a window or period of {duration:?} is too long"
        ))
    })
}

/// What one limit keeps per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Window counters: the window's index, its count and the previous
    /// window's count (the fixed window ignores `previous`), and which of
    /// the two algorithms counted them.
    Window {
        index: u64,
        current: u64,
        previous: u64,
        of: Algorithm,
    },
    /// Admitted units with their times, oldest first.
    Log(Log),
    /// The theoretical arrival time: when the next unit is due. For the
    /// token and the leaky bucket, the time their level is back to zero, a
    /// full bucket of tokens or an empty one of water (see [`gcra`]). And
    /// which algorithm keeps it: four share this shape, each its own.
    Tat { at: u64, of: Algorithm },
}

/// The sliding log: admitted units by time, never more than the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Log {
    entries: VecDeque<(u64, u64)>,
    units: u64,
}

impl Log {
    /// A log that a step answers from exactly as from the full one it
    /// stands for, given what the step reads of it: the `units` in the
    /// window, the newest one's time, and `stop`, the time of the unit whose
    /// leaving frees enough for the request (the newest's when no other
    /// one is). So a Redis check reads three numbers, not every member.
    pub(crate) fn summarized(units: u64, newest: u64, stop: u64) -> Self {
        let entries = match units {
            0 => VecDeque::new(),
            1 => VecDeque::from([(newest, 1)]),
            _ if stop == newest => VecDeque::from([(newest, units)]),
            _ => VecDeque::from([(stop, units - 1), (newest, 1)]),
        };
        Self { entries, units }
    }
}

/// One limit's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) allowed: bool,
    /// Units left after this decision.
    pub(crate) remaining: u64,
    /// Microseconds until the limit is back to its full capacity.
    pub(crate) reset_after: u64,
    /// Rejected: microseconds until the same cost would be admitted.
    pub(crate) retry_after: u64,
    /// Admitted by the leaky queue: microseconds to wait before going on.
    pub(crate) wait: u64,
    /// Microseconds the state must be kept; after that it equals a fresh one.
    pub(crate) ttl: u64,
}

impl Step {
    /// Admitted without a store: the whole capacity left.
    pub(crate) fn open(limit: &Limit) -> Self {
        Self::decided(true, limit.capacity, 0, 0)
    }

    /// Rejected without a store: retry in a second.
    pub(crate) fn closed() -> Self {
        Self::decided(false, 0, 0, 1_000_000)
    }

    fn decided(allowed: bool, remaining: u64, reset_after: u64, retry_after: u64) -> Self {
        Self {
            allowed,
            remaining,
            reset_after,
            retry_after: if allowed { 0 } else { retry_after.max(1) },
            wait: 0,
            ttl: reset_after,
        }
    }
}

fn fixed_window(
    limit: &Limit,
    index: &mut u64,
    count: &mut u64,
    now: u64,
    cost: u64,
    commit: bool,
) -> Step {
    let window = limit.step_us;
    let current = now / window;
    if *index != current {
        *index = current;
        *count = 0;
    }
    let allowed = *count + cost <= limit.capacity;
    if allowed && commit {
        *count += cost;
    }
    let used = if allowed && !commit {
        *count + cost
    } else {
        *count
    };
    let until_next = (current + 1) * window - now;
    let reset_after = if used == 0 { 0 } else { until_next };
    Step::decided(
        allowed,
        limit.capacity - used.min(limit.capacity),
        reset_after,
        until_next,
    )
}

/// The previous window's count weighs by the share of it the sliding window
/// still covers, in whole milliseconds (rounded in the limiter's favour), so
/// that the product stays exact for day-long windows too.
fn weighted_previous(previous: u64, window_us: u64, elapsed_us: u64) -> u64 {
    let window_ms = window_us.div_ceil(1000);
    let left_ms = (window_us - elapsed_us).div_ceil(1000).min(window_ms);
    (previous * left_ms).div_ceil(window_ms)
}

fn sliding_window(
    limit: &Limit,
    index: &mut u64,
    current: &mut u64,
    previous: &mut u64,
    now: u64,
    cost: u64,
    commit: bool,
) -> Step {
    let window = limit.step_us;
    let capacity = limit.capacity;
    let this = now / window;
    if *index != this {
        *previous = if *index + 1 == this { *current } else { 0 };
        *current = 0;
        *index = this;
    }
    let elapsed = now - this * window;
    let used = weighted_previous(*previous, window, elapsed) + *current;
    let allowed = used + cost <= capacity;
    if allowed && commit {
        *current += cost;
    }
    let used_after = if allowed { used + cost } else { used };
    let current_after = if allowed {
        *current + u64::from(!commit) * cost
    } else {
        *current
    };
    let window_end = (this + 1) * window - now;
    let reset_after = if current_after > 0 {
        (window_end + window).min(LONGEST_US)
    } else if *previous > 0 {
        window_end
    } else {
        0
    };
    let retry_after = if allowed {
        0
    } else {
        sliding_window_retry(capacity, window, *previous, *current, elapsed, cost)
    };
    Step::decided(
        allowed,
        capacity - used_after.min(capacity),
        reset_after,
        retry_after,
    )
}

/// The first moment `cost` fits: later in this window as the previous
/// window's weight falls, or else in the next one, where this window's count
/// is the weighted one.
fn sliding_window_retry(
    capacity: u64,
    window: u64,
    previous: u64,
    current: u64,
    elapsed: u64,
    cost: u64,
) -> u64 {
    let first_fit = |weighted: u64, room: u64, from: u64| -> Option<u64> {
        // Smallest e in [from, window) with weighted_previous(weighted, window, e) <= room.
        if weighted_previous(weighted, window, from) <= room {
            return Some(from);
        }
        if weighted_previous(weighted, window, window - 1) > room {
            return None;
        }
        let (mut low, mut high) = (from, window - 1);
        while low + 1 < high {
            let middle = low + (high - low) / 2;
            if weighted_previous(weighted, window, middle) <= room {
                high = middle;
            } else {
                low = middle;
            }
        }
        Some(high)
    };
    if let Some(room) = capacity.checked_sub(current + cost)
        && let Some(at) = first_fit(previous, room, elapsed)
    {
        return at - elapsed;
    }
    let to_next = window - elapsed;
    let room = capacity - cost;
    match first_fit(current, room, 0) {
        Some(at) => to_next + at,
        None => to_next + window,
    }
}

fn sliding_log(limit: &Limit, log: &mut Log, now: u64, cost: u64, commit: bool) -> Step {
    let window = limit.step_us;
    let capacity = limit.capacity;
    while let Some(&(at, units)) = log.entries.front() {
        if at + window > now {
            break;
        }
        log.entries.pop_front();
        log.units -= units;
    }
    let allowed = log.units + cost <= capacity;
    if allowed && commit && cost > 0 {
        match log.entries.back_mut() {
            Some((at, units)) if *at == now => *units += cost,
            _ => log.entries.push_back((now, cost)),
        }
        log.units += cost;
    }
    let used = if allowed && !commit {
        log.units + cost
    } else {
        log.units
    };
    let newest = if allowed && cost > 0 {
        Some(now)
    } else {
        log.entries.back().map(|&(at, _)| at)
    };
    let reset_after = newest.map_or(0, |at| at + window - now);
    let retry_after = if allowed {
        0
    } else {
        // Wait until enough of the oldest units have left the window.
        let mut to_free = log.units + cost - capacity;
        let mut at_time = now;
        for &(at, units) in &log.entries {
            at_time = at;
            if units >= to_free {
                break;
            }
            to_free -= units;
        }
        at_time + window - now
    };
    Step::decided(
        allowed,
        capacity - used.min(capacity),
        reset_after,
        retry_after,
    )
}

/// GCRA: one theoretical arrival time per key.
///
/// The token bucket and the leaky bucket (meter) run this step too, for it
/// is the same computation. Their level (tokens spent, water in the bucket)
/// drains one unit per step, so the time the level is back to zero, `E`,
/// tells everything at any `now`: the level is `⌈(E − now) / step⌉`, and
/// the part of a step drained so far follows from the remainder. Admitting
/// `cost` units at level `L` moves `E` to `max(E, now) + cost × step`, and
/// is allowed when `L + cost ≤ capacity`, which is
/// `max(E, now) + cost × step − now ≤ capacity × step`: GCRA's test, with
/// `E` as the arrival time and `capacity × step` as the tolerance. The
/// headers' numbers agree as well (the tests hold this step against the
/// level-and-drain bucket on random arrivals). Only a clock that steps back
/// tells them apart: the level counts from the earlier `now`, as GCRA's
/// backlog does, where a bucket that drained up to a later time would hold.
fn gcra(limit: &Limit, tat: &mut u64, now: u64, cost: u64, commit: bool) -> Step {
    tat_step(limit, tat, now, cost, commit).0
}

/// The leaky bucket as a queue: GCRA, and an admitted request waits until
/// its turn.
fn leaky_queue(limit: &Limit, tat: &mut u64, now: u64, cost: u64, commit: bool) -> Step {
    let (mut step, start) = tat_step(limit, tat, now, cost, commit);
    if step.allowed {
        step.wait = start - now;
    }
    step
}

/// The step on a theoretical arrival time, and when this request's turn
/// starts.
fn tat_step(limit: &Limit, tat: &mut u64, now: u64, cost: u64, commit: bool) -> (Step, u64) {
    let unit = limit.step_us;
    let tolerance = limit.capacity * unit;
    let start = (*tat).max(now);
    let next = start + cost * unit;
    let allowed = next - now <= tolerance;
    if allowed && commit {
        *tat = next;
    }
    let horizon = if allowed { next } else { start };
    let reset_after = horizon - now;
    // The tolerance may be below the backlog when the limit's capacity was
    // lowered while its state was kept: nothing remains then.
    let remaining = tolerance.saturating_sub(reset_after) / unit;
    let step = Step::decided(
        allowed,
        remaining,
        reset_after,
        next - now - tolerance.min(next - now),
    );
    (step, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn run(limit: &Limit, arrivals: &[(u64, u64)]) -> Vec<bool> {
        let mut state = limit.fresh_state();
        arrivals
            .iter()
            .map(|&(at, cost)| limit.step(&mut state, at, cost, true).allowed)
            .collect()
    }

    #[test]
    fn fixed_window_resets_at_the_boundary() {
        let limit = Limit::fixed_window(2, Duration::from_secs(1)).expect("a valid limit");
        let t = 10 * SECOND;
        assert_eq!(
            run(&limit, &[(t, 1), (t + 1, 1), (t + 2, 1), (t + SECOND, 1)]),
            [true, true, false, true]
        );
    }

    #[test]
    fn sliding_log_counts_the_last_window_exactly() {
        let limit = Limit::sliding_log(2, Duration::from_secs(1)).expect("a valid limit");
        let t = 10 * SECOND;
        assert_eq!(
            run(
                &limit,
                &[(t, 1), (t + 500_000, 1), (t + 999_999, 1), (t + SECOND, 1)]
            ),
            [true, true, false, true]
        );
    }

    #[test]
    fn gcra_admits_the_burst_then_the_rate() {
        let limit = Limit::gcra(10, Duration::from_secs(1), 3).expect("a valid limit");
        let t = 10 * SECOND;
        assert_eq!(
            run(&limit, &[(t, 1), (t, 1), (t, 1), (t, 1), (t + 100_000, 1)]),
            [true, true, true, false, true]
        );
    }

    #[test]
    fn a_rejection_consumes_nothing_and_says_when_to_retry() {
        for algorithm in Algorithm::ALL {
            let limit = match algorithm {
                Algorithm::FixedWindow => Limit::fixed_window(3, Duration::from_secs(1)),
                Algorithm::SlidingLog => Limit::sliding_log(3, Duration::from_secs(1)),
                Algorithm::SlidingWindow => Limit::sliding_window(3, Duration::from_secs(1)),
                Algorithm::TokenBucket => Limit::token_bucket(3, Duration::from_secs(1), 3),
                Algorithm::LeakyBucket => Limit::leaky_bucket(3, Duration::from_secs(1), 3),
                Algorithm::LeakyQueue => Limit::leaky_queue(3, Duration::from_secs(1), 3),
                Algorithm::Gcra => Limit::gcra(3, Duration::from_secs(1), 3),
            }
            .expect("a valid limit");
            let mut state = limit.fresh_state();
            let t = 7 * SECOND + 123;
            assert!(limit.step(&mut state, t, 3, true).allowed, "{algorithm}");
            let before = state.clone();
            let rejected = limit.step(&mut state, t, 1, true);
            assert!(!rejected.allowed, "{algorithm}");
            assert_eq!(rejected.remaining, 0, "{algorithm}");
            assert!(rejected.retry_after > 0, "{algorithm}");
            assert_eq!(state, before, "{algorithm}: a rejection changed the state");
            // Exactly at retry_after it is admitted, one µs before it is not.
            let mut early = state.clone();
            assert!(
                !limit
                    .step(&mut early, t + rejected.retry_after - 1, 1, true)
                    .allowed,
                "{algorithm}: admitted before retry_after"
            );
            assert!(
                limit
                    .step(&mut state, t + rejected.retry_after, 1, true)
                    .allowed,
                "{algorithm}: not admitted at retry_after"
            );
        }
    }

    #[test]
    fn limits_that_cannot_be_exact_are_refused() {
        assert!(Limit::fixed_window(0, Duration::from_secs(1)).is_err());
        assert!(Limit::gcra(1, Duration::ZERO, 1).is_err());
        assert!(Limit::gcra(1, Duration::from_secs(1), 0).is_err());
        assert!(Limit::sliding_window(u64::MAX, Duration::from_secs(86_400)).is_err());
        assert!(Limit::gcra(1, Duration::from_secs(86_400 * 365), u64::MAX / 2).is_err());
        assert!(Limit::sliding_window(500_000, Duration::from_secs(86_400)).is_ok());
    }

    mod bounds {
        use proptest::prelude::*;

        use super::*;

        /// An arrival: microseconds after the previous one, and its cost.
        fn arrivals() -> impl Strategy<Value = Vec<(u64, u64)>> {
            prop::collection::vec(
                (
                    prop_oneof![Just(0_u64), 0..2_000_u64, 0..300_000_u64],
                    1..4_u64,
                ),
                1..120,
            )
        }

        pub(super) fn limit_of(algorithm: Algorithm, capacity: u64, period_ms: u64) -> Limit {
            let period = Duration::from_millis(period_ms);
            match algorithm {
                Algorithm::FixedWindow => Limit::fixed_window(capacity, period),
                Algorithm::SlidingLog => Limit::sliding_log(capacity, period),
                Algorithm::SlidingWindow => Limit::sliding_window(capacity, period),
                Algorithm::TokenBucket => Limit::token_bucket(capacity, period, capacity),
                Algorithm::LeakyBucket => Limit::leaky_bucket(capacity, period, capacity),
                Algorithm::LeakyQueue => Limit::leaky_queue(capacity, period, capacity),
                Algorithm::Gcra => Limit::gcra(capacity, period, capacity),
            }
            .expect("a valid limit")
        }

        /// Runs the arrivals; returns the admitted (time, cost) pairs, and
        /// checks on the way that a rejection changes nothing and that its
        /// retry-after is exact.
        fn admitted(limit: &Limit, arrivals: &[(u64, u64)]) -> Vec<(u64, u64)> {
            let mut state = limit.fresh_state();
            let mut now = 5_000_000_000_u64;
            let mut admitted = Vec::new();
            for &(gap, cost) in arrivals {
                now += gap;
                let cost = cost.min(limit.capacity());
                let before = state.clone();
                let step = limit.step(&mut state, now, cost, true);
                if step.allowed {
                    admitted.push((now, cost));
                    continue;
                }
                let mut probe = before.clone();
                limit.step(&mut probe, now, 0, false);
                let mut normalized = state.clone();
                limit.step(&mut normalized, now, 0, false);
                assert_eq!(
                    normalized, probe,
                    "{limit:?}: a rejection changed the state"
                );
                let mut early = state.clone();
                assert!(
                    !limit
                        .step(&mut early, now + step.retry_after - 1, cost, false)
                        .allowed
                );
                let mut on_time = state.clone();
                assert!(
                    limit
                        .step(&mut on_time, now + step.retry_after, cost, false)
                        .allowed
                );
            }
            admitted
        }

        /// The most units admitted in any half-open span `(t - span, t]`.
        fn most_in_any(admitted: &[(u64, u64)], span: u64) -> u64 {
            let mut most = 0;
            for (end, &(t, _)) in admitted.iter().enumerate() {
                let units: u64 = admitted[..=end]
                    .iter()
                    .filter(|&&(at, _)| at + span > t)
                    .map(|&(_, cost)| cost)
                    .sum();
                most = most.max(units);
            }
            most
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn windows_never_admit_more_than_documented(
                arrivals in arrivals(), capacity in 1..12_u64, period_ms in 1..1_000_u64,
            ) {
                let window = period_ms * 1000;
                let fixed = admitted(&limit_of(Algorithm::FixedWindow, capacity, period_ms), &arrivals);
                prop_assert!(most_in_any(&fixed, window) <= 2 * capacity);
                for w in fixed.chunk_by(|a, b| a.0 / window == b.0 / window) {
                    prop_assert!(w.iter().map(|a| a.1).sum::<u64>() <= capacity);
                }
                let log = admitted(&limit_of(Algorithm::SlidingLog, capacity, period_ms), &arrivals);
                prop_assert!(most_in_any(&log, window) <= capacity);
                let counter = admitted(&limit_of(Algorithm::SlidingWindow, capacity, period_ms), &arrivals);
                for w in counter.chunk_by(|a, b| a.0 / window == b.0 / window) {
                    prop_assert!(w.iter().map(|a| a.1).sum::<u64>() <= capacity);
                }
                prop_assert!(most_in_any(&counter, window) <= 2 * capacity);
            }

            #[test]
            fn rates_never_admit_more_than_burst_plus_rate_times_t(
                arrivals in arrivals(), capacity in 1..12_u64, period_ms in 1..1_000_u64,
            ) {
                for algorithm in [Algorithm::TokenBucket, Algorithm::LeakyBucket, Algorithm::Gcra, Algorithm::LeakyQueue] {
                    let limit = limit_of(algorithm, capacity, period_ms);
                    let unit = limit.step_us();
                    let admitted = admitted(&limit, &arrivals);
                    for (i, &(start, _)) in admitted.iter().enumerate() {
                        let mut units = 0;
                        for &(t, cost) in &admitted[i..] {
                            units += cost;
                            prop_assert!(
                                units <= capacity + (t - start) / unit,
                                "{algorithm}: {units} units in {} µs", t - start
                            );
                        }
                    }
                }
            }

            #[test]
            fn the_leaky_queue_spaces_what_it_admits(
                arrivals in arrivals(), capacity in 1..12_u64, period_ms in 1..1_000_u64,
            ) {
                let limit = limit_of(Algorithm::LeakyQueue, capacity, period_ms);
                let unit = limit.step_us();
                let mut state = limit.fresh_state();
                let mut now = 5_000_000_000_u64;
                let mut last_release: Option<(u64, u64)> = None;
                for &(gap, cost) in &arrivals {
                    now += gap;
                    let cost = cost.min(capacity);
                    let step = limit.step(&mut state, now, cost, true);
                    if step.allowed {
                        prop_assert!(step.wait <= capacity * unit);
                        let release = now + step.wait;
                        if let Some((previous, previous_cost)) = last_release {
                            prop_assert!(release >= previous + previous_cost * unit);
                        }
                        last_release = Some((release, cost));
                    }
                }
            }

            #[test]
            fn the_buckets_decide_as_a_level_that_drains_by_whole_steps(
                arrivals in prop::collection::vec(
                    (prop_oneof![Just(0_u64), 0..2_000_u64, 0..300_000_u64], 0..14_u64, any::<bool>()),
                    1..120,
                ),
                capacity in 1..12_u64,
                period_ms in 1..1_000_u64,
            ) {
                for algorithm in [Algorithm::TokenBucket, Algorithm::LeakyBucket] {
                    let limit = limit_of(algorithm, capacity, period_ms);
                    let mut state = limit.fresh_state();
                    let mut level = Level::default();
                    let mut now = 5_000_000_000_u64;
                    for &(gap, cost, commit) in &arrivals {
                        now += gap;
                        let step = limit.step(&mut state, now, cost, commit);
                        let expected = level.step(&limit, now, cost, commit);
                        prop_assert_eq!(step, expected, "{} at {}", algorithm, now);
                    }
                }
            }
        }

        /// What a Redis check of a sliding log reads of it, as
        /// check/log.lua picks it: the units, the newest one's time and
        /// where the retry's walk stops.
        fn summary(times: &[u64], capacity: u64, cost: u64) -> Log {
            let units = times.len() as u64;
            let newest = times.last().copied().unwrap_or(0);
            let rank = (units + cost).checked_sub(capacity + 1);
            let stop = match rank {
                Some(rank) if rank + 1 < units => times[usize::try_from(rank).expect("small")],
                _ => newest,
            };
            Log::summarized(units, newest, stop)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn a_summarized_log_answers_as_the_full_one(
                gaps in prop::collection::vec(prop_oneof![Just(0_u64), 1..50_000_u64], 0..12),
                capacity in 1..14_u64,
                cost in 0..16_u64,
                commit in any::<bool>(),
                since_last in 0..100_000_u64,
            ) {
                // Units admitted one at a time, possibly more than the
                // capacity (it was lowered), all within the window.
                let window = 1_000_000;
                let limit = Limit::sliding_log(capacity, Duration::from_micros(window))
                    .expect("a valid limit");
                let mut times = Vec::new();
                let mut at = 5_000_000_000_u64;
                for gap in gaps {
                    at += gap;
                    times.push(at);
                }
                let now = at + since_last;
                let mut full = Log::default();
                for &time in &times {
                    match full.entries.back_mut() {
                        Some((last, units)) if *last == time => *units += 1,
                        _ => full.entries.push_back((time, 1)),
                    }
                    full.units += 1;
                }
                let mut summarized = summary(&times, capacity, cost);
                let expected = sliding_log(&limit, &mut full, now, cost, commit);
                let step = sliding_log(&limit, &mut summarized, now, cost, commit);
                prop_assert_eq!(step, expected);
            }
        }

        /// The bucket as its definition reads, the model the buckets' step
        /// is held against: a level (tokens spent, water held) and the time
        /// up to which it has drained, one unit per step.
        #[derive(Default)]
        struct Level {
            level: u64,
            since: u64,
        }

        impl Level {
            fn step(&mut self, limit: &Limit, now: u64, cost: u64, commit: bool) -> Step {
                let (unit, capacity) = (limit.step_us(), limit.capacity());
                let now = now.max(self.since);
                let drained = (now - self.since) / unit;
                if drained >= self.level {
                    (self.level, self.since) = (0, now);
                } else {
                    self.level -= drained;
                    self.since += drained * unit;
                }
                let level = self.level;
                let allowed = level + cost <= capacity;
                if allowed && commit {
                    self.level += cost;
                }
                let level_after = if allowed { level + cost } else { level };
                let progress = if level == 0 { 0 } else { now - self.since };
                let excess = level + cost - capacity.min(level + cost);
                Step::decided(
                    allowed,
                    capacity - level_after.min(capacity),
                    (level_after * unit).saturating_sub(progress),
                    (excess * unit).saturating_sub(progress),
                )
            }
        }
    }

    /// A rate algorithm's limit of 10 units a second and `capacity`.
    fn rated(algorithm: Algorithm, capacity: u64) -> Limit {
        let second = Duration::from_secs(1);
        match algorithm {
            Algorithm::TokenBucket => Limit::token_bucket(10, second, capacity),
            Algorithm::LeakyBucket => Limit::leaky_bucket(10, second, capacity),
            Algorithm::LeakyQueue => Limit::leaky_queue(10, second, capacity),
            _ => Limit::gcra(10, second, capacity),
        }
        .expect("a valid limit")
    }

    const RATED: [Algorithm; 4] = [
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
        Algorithm::LeakyQueue,
        Algorithm::Gcra,
    ];

    #[test]
    fn a_capacity_lowered_under_a_kept_state_leaves_nothing_remaining() {
        let t = 10 * SECOND;
        for algorithm in RATED {
            let wide = rated(algorithm, 10);
            let mut state = wide.fresh_state();
            assert!(wide.step(&mut state, t, 8, true).allowed, "{algorithm}");
            // 800 ms of backlog against a tolerance of 200 ms.
            let narrow = rated(algorithm, 2);
            let step = narrow.step(&mut state, t, 1, true);
            assert!(!step.allowed, "{algorithm}: {step:?}");
            assert_eq!(step.remaining, 0, "{algorithm}: {step:?}");
            assert_eq!(step.retry_after, 700_000, "{algorithm}: {step:?}");
        }
    }

    #[test]
    fn a_rule_whose_algorithm_changed_starts_afresh() {
        let t = 10 * SECOND;
        for before in RATED {
            for after in RATED.into_iter().filter(|&after| after != before) {
                let mut state = rated(before, 10).fresh_state();
                assert!(rated(before, 10).step(&mut state, t, 10, true).allowed);
                let step = rated(after, 10).step(&mut state, t, 10, true);
                assert!(step.allowed, "{before} then {after}: {step:?}");
            }
        }
        let window = Duration::from_secs(1);
        let fixed = Limit::fixed_window(10, window).expect("a valid limit");
        let sliding = Limit::sliding_window(10, window).expect("a valid limit");
        let mut state = fixed.fresh_state();
        assert!(fixed.step(&mut state, t, 10, true).allowed);
        assert!(sliding.step(&mut state, t, 10, true).allowed);
    }
}
