//! Adaptive concurrency limits: how many operations may be in flight at
//! once, found from what the operations themselves show rather than typed
//! by hand. Each finished operation is a sample (how long it took, how
//! many were in flight, whether it was dropped for overload), and an
//! algorithm moves the limit: [`Gradient`] from latency (the limit shrinks
//! as the short-term latency rises above the long-term one, Netflix's
//! Gradient2), [`Aimd`] from loss (one more per sample while the limit is
//! in use, a tenth less per drop).
//!
//! Written here rather than taken from a crate: the limiter sits in front
//! of every request, so an admission is one compare-and-swap and the
//! algorithm runs once per finished operation under a short lock, and its
//! limit, in-flight count and rejections are seawall-perfmon metrics. The
//! crates that do this (congestion-limiter, tower-resilience-adaptive,
//! tower-acc) take an async lock per sample or carry their own metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use seawall_perfmon::{Counter, Gauge, Monitor};

use crate::error::{Error, Result};

/// What one finished operation showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// How long it took.
    pub latency: Duration,
    /// Operations in flight when it started, itself included.
    pub in_flight: u64,
    /// Whether it was dropped for overload: it timed out, or what it
    /// called answered that it is overloaded.
    pub dropped: bool,
}

/// An algorithm that moves a concurrency limit from samples.
pub trait LimitAlgorithm: Send + 'static {
    /// The limit after `sample`, from `limit` (the caller keeps it within
    /// its bounds).
    fn update(&mut self, limit: f64, sample: Sample) -> f64;
}

/// Latency-based (Netflix's Gradient2): compares the latest latency with a
/// long-term average. While the latest is within `tolerance` times the
/// average the limit grows by a queue allowance (the square root of the
/// limit, at least 1); as it rises past that, the limit shrinks in
/// proportion (by half at most per sample); each step is smoothed. A drop
/// cuts the limit by a tenth. A limit not in use (fewer than half of it in
/// flight) does not grow: an idle service learns nothing about its
/// capacity.
#[derive(Debug, Clone)]
pub struct Gradient {
    tolerance: f64,
    smoothing: f64,
    long_window: f64,
    long: Option<f64>,
    samples: u64,
}

impl Default for Gradient {
    fn default() -> Self {
        Self {
            tolerance: 1.5,
            smoothing: 0.2,
            long_window: 600.0,
            long: None,
            samples: 0,
        }
    }
}

impl Gradient {
    /// A tolerance of 1.5, a smoothing of 0.2 and a long-term average over
    /// about 600 samples.
    pub fn new() -> Self {
        Self::default()
    }

    /// How much slower than the long-term average the latest latency may
    /// be before the limit shrinks (at least 1).
    pub fn tolerance(mut self, tolerance: f64) -> Result<Self> {
        if !(tolerance.is_finite() && tolerance >= 1.0) {
            return Err(Error::InvalidConfig(format!(
                "a gradient's tolerance must be at least 1, got {tolerance}"
            )));
        }
        self.tolerance = tolerance;
        Ok(self)
    }

    /// How far each sample moves the limit toward its new value (more
    /// than 0, at most 1).
    pub fn smoothing(mut self, smoothing: f64) -> Result<Self> {
        if !(smoothing > 0.0 && smoothing <= 1.0) {
            return Err(Error::InvalidConfig(format!(
                "a gradient's smoothing must be more than 0 and at most 1, got {smoothing}"
            )));
        }
        self.smoothing = smoothing;
        Ok(self)
    }
}

impl LimitAlgorithm for Gradient {
    fn update(&mut self, limit: f64, sample: Sample) -> f64 {
        if sample.dropped {
            return limit * AIMD_BACKOFF;
        }
        let latest = sample.latency.as_secs_f64().max(MIN_LATENCY);
        self.samples += 1;
        // A plain mean until the window fills, then an exponential one.
        let weight = 1.0 / (self.samples as f64).min(self.long_window);
        let mut long = self
            .long
            .map_or(latest, |long| long + (latest - long) * weight);
        // After a lasting rise the average catches up slowly: when it is
        // far behind, it decays toward the latest so the limit recovers.
        if long / latest > 2.0 {
            long *= 0.95;
        }
        self.long = Some(long);
        if (sample.in_flight as f64) < limit / 2.0 {
            return limit;
        }
        let gradient = (self.tolerance * long / latest).clamp(0.5, 1.0);
        let queue = limit.sqrt().max(1.0);
        let target = limit * gradient + queue;
        limit * (1.0 - self.smoothing) + target * self.smoothing
    }
}

/// Loss-based: one more per sample while at least half the limit is in
/// use, a tenth less per drop (or per sample slower than an optional
/// latency threshold).
#[derive(Debug, Clone, Default)]
pub struct Aimd {
    slow: Option<Duration>,
}

/// What a drop leaves of a limit.
const AIMD_BACKOFF: f64 = 0.9;

/// The shortest latency a sample counts with, so a zero never divides.
const MIN_LATENCY: f64 = 1e-6;

impl Aimd {
    /// Drops alone move the limit down.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sample slower than `threshold` counts as a drop too.
    pub fn slower_than(mut self, threshold: Duration) -> Self {
        self.slow = Some(threshold);
        self
    }
}

impl LimitAlgorithm for Aimd {
    fn update(&mut self, limit: f64, sample: Sample) -> f64 {
        if sample.dropped || self.slow.is_some_and(|slow| sample.latency > slow) {
            limit * AIMD_BACKOFF
        } else if sample.in_flight as f64 * 2.0 >= limit {
            limit + 1.0
        } else {
            limit
        }
    }
}

/// A concurrency limit that adapts; cheap to clone (the clones share it).
///
/// ```
/// use std::time::Duration;
/// use seawall_ratelimit::{AdaptiveLimiter, Gradient};
///
/// let limiter = AdaptiveLimiter::builder(Gradient::new())
///     .bounds(4, 512)
///     .initial(20)
///     .build()
///     .expect("valid bounds");
/// let token = limiter.try_acquire().expect("room for one");
/// assert_eq!(limiter.in_flight(), 1);
/// // ... the operation runs ...
/// token.success();
/// assert_eq!(limiter.in_flight(), 0);
/// assert!((4..=512).contains(&limiter.limit()));
/// ```
#[derive(Clone)]
pub struct AdaptiveLimiter(Arc<Shared>);

struct Shared {
    in_flight: AtomicU64,
    /// The whole limit, read on every admission.
    limit: AtomicU64,
    rejected: AtomicU64,
    /// The algorithm and the exact (fractional) limit it moves.
    control: Mutex<(Box<dyn LimitAlgorithm>, f64)>,
    min: u64,
    max: u64,
    metrics: Option<Metrics>,
}

struct Metrics {
    limit: Gauge,
    in_flight: Gauge,
    rejected: Counter,
}

/// Configures an [`AdaptiveLimiter`]; from [`AdaptiveLimiter::builder`].
#[must_use]
pub struct AdaptiveLimiterBuilder {
    algorithm: Box<dyn LimitAlgorithm>,
    min: u64,
    max: u64,
    initial: Option<u64>,
    metrics: Option<(Monitor, String)>,
}

impl AdaptiveLimiter {
    /// A limiter moved by `algorithm`, between 1 and 1,000 by default,
    /// starting at 20.
    pub fn builder(algorithm: impl LimitAlgorithm) -> AdaptiveLimiterBuilder {
        AdaptiveLimiterBuilder {
            algorithm: Box::new(algorithm),
            min: 1,
            max: 1_000,
            initial: None,
            metrics: None,
        }
    }

    /// Admits one operation if fewer than the limit are in flight; the
    /// token releases its place and reports how it went. `None` counts a
    /// rejection.
    pub fn try_acquire(&self) -> Option<Token> {
        self.try_acquire_below(self.limit())
    }

    /// Admits one operation if fewer than `share` (0 to 1) of the limit
    /// are in flight: lower classes of work take a share, so they are
    /// refused first as the service fills.
    pub fn try_acquire_share(&self, share: f64) -> Option<Token> {
        let limit = self.limit() as f64 * share.clamp(0.0, 1.0);
        self.try_acquire_below(whole(limit.floor()))
    }

    fn try_acquire_below(&self, ceiling: u64) -> Option<Token> {
        let shared = &self.0;
        let mut now = shared.in_flight.load(Ordering::Relaxed);
        loop {
            if now >= ceiling {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some(metrics) = &shared.metrics {
                    metrics.rejected.inc();
                }
                return None;
            }
            match shared.in_flight.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        if let Some(metrics) = &shared.metrics {
            metrics.in_flight.inc();
        }
        Some(Token {
            limiter: Some(Arc::clone(&self.0)),
            started: quanta::Instant::now(),
            in_flight: now + 1,
        })
    }

    /// The limit now.
    pub fn limit(&self) -> u64 {
        self.0.limit.load(Ordering::Relaxed)
    }

    /// Operations in flight now.
    pub fn in_flight(&self) -> u64 {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    /// Operations refused since the limiter was built.
    pub fn rejected(&self) -> u64 {
        self.0.rejected.load(Ordering::Relaxed)
    }

    /// The limit's bounds.
    pub fn bounds(&self) -> (u64, u64) {
        (self.0.min, self.0.max)
    }

    /// Feeds one sample to the algorithm, as a token does when it is
    /// reported; for tests and for callers that time operations
    /// themselves.
    pub fn record(&self, sample: Sample) {
        let shared = &self.0;
        let mut control = shared.control.lock();
        let (algorithm, exact) = &mut *control;
        let next = algorithm.update(*exact, sample);
        let next = if next.is_finite() { next } else { *exact };
        *exact = next.clamp(shared.min as f64, shared.max as f64);
        let whole = whole(exact.round()).clamp(shared.min, shared.max);
        shared.limit.store(whole, Ordering::Relaxed);
        if let Some(metrics) = &shared.metrics {
            metrics.limit.set(whole as f64);
        }
    }
}

impl AdaptiveLimiterBuilder {
    /// The limit never goes below `min` (at least 1) nor above `max`.
    pub fn bounds(mut self, min: u64, max: u64) -> Self {
        self.min = min;
        self.max = max;
        self
    }

    /// The limit to start from (default: `min` and 20, whichever is more,
    /// within the bounds).
    pub fn initial(mut self, initial: u64) -> Self {
        self.initial = Some(initial);
        self
    }

    /// Its limit, in-flight count and rejections as metrics on `monitor`,
    /// labelled `limiter="<name>"`: `adaptive_limit`,
    /// `adaptive_in_flight` and `adaptive_rejected_total`.
    pub fn metrics(mut self, monitor: &Monitor, name: &str) -> Self {
        self.metrics = Some((monitor.clone(), name.to_owned()));
        self
    }

    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `min` is 0 or above `max`, or the
    /// initial limit is outside the bounds; [`Error::Metrics`] when the
    /// metrics cannot be registered.
    pub fn build(self) -> Result<AdaptiveLimiter> {
        if self.min == 0 || self.min > self.max {
            return Err(Error::InvalidConfig(format!(
                "an adaptive limit's bounds must be 1 <= min <= max, got {}..={}",
                self.min, self.max
            )));
        }
        let initial = self
            .initial
            .unwrap_or_else(|| 20_u64.clamp(self.min, self.max));
        if !(self.min..=self.max).contains(&initial) {
            return Err(Error::InvalidConfig(format!(
                "an adaptive limit's initial value {initial} is outside {}..={}",
                self.min, self.max
            )));
        }
        let metrics = match &self.metrics {
            Some((monitor, name)) => Some(register(monitor, name, initial)?),
            None => None,
        };
        Ok(AdaptiveLimiter(Arc::new(Shared {
            in_flight: AtomicU64::new(0),
            limit: AtomicU64::new(initial),
            rejected: AtomicU64::new(0),
            control: Mutex::new((self.algorithm, initial as f64)),
            min: self.min,
            max: self.max,
            metrics,
        })))
    }
}

fn register(monitor: &Monitor, name: &str, initial: u64) -> Result<Metrics> {
    let metrics = (|| -> seawall_perfmon::Result<Metrics> {
        let limit = monitor
            .gauge(
                "adaptive_limit",
                "The adaptive concurrency limit now, by limiter.",
                &["limiter"],
            )?
            .with_labels(&[name])?;
        let in_flight = monitor
            .gauge(
                "adaptive_in_flight",
                "Operations an adaptive limiter admitted that have not finished, by limiter.",
                &["limiter"],
            )?
            .with_labels(&[name])?;
        let rejected = monitor
            .counter(
                "adaptive_rejected",
                "Operations an adaptive limiter refused because its limit was reached, by limiter.",
                &["limiter"],
            )?
            .with_labels(&[name])?;
        Ok(Metrics {
            limit,
            in_flight,
            rejected,
        })
    })()
    .map_err(Error::Metrics)?;
    metrics.limit.set(initial as f64);
    Ok(metrics)
}

/// One admitted operation's place. Report how it went with
/// [`success`](Token::success), [`dropped`](Token::dropped) or
/// [`ignore`](Token::ignore); dropped unreported, it only gives its place
/// back (as `ignore`).
pub struct Token {
    limiter: Option<Arc<Shared>>,
    started: quanta::Instant,
    in_flight: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// The operation finished normally: its latency is a sample.
    pub fn success(self) {
        self.finish(Some(false));
    }

    /// The operation was dropped for overload (it timed out, or what it
    /// called said it is overloaded): the limit backs off.
    pub fn dropped(self) {
        self.finish(Some(true));
    }

    /// The operation says nothing about capacity (the caller's own
    /// mistake, say): its place is given back, and nothing learned.
    pub fn ignore(self) {
        self.finish(None);
    }

    fn finish(mut self, dropped: Option<bool>) {
        let Some(shared) = self.limiter.take() else {
            return;
        };
        release(&shared);
        if let Some(dropped) = dropped {
            AdaptiveLimiter(shared).record(Sample {
                latency: self.started.elapsed(),
                in_flight: self.in_flight,
                dropped,
            });
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if let Some(shared) = self.limiter.take() {
            release(&shared);
        }
    }
}

/// `count` as a whole number: saturates at 0 and at `u64::MAX`, as the
/// cast does (a NaN is 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // saturating by definition
fn whole(count: f64) -> u64 {
    count as u64
}

fn release(shared: &Shared) {
    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    if let Some(metrics) = &shared.metrics {
        metrics.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(latency_ms: u64, in_flight: u64, dropped: bool) -> Sample {
        Sample {
            latency: Duration::from_millis(latency_ms),
            in_flight,
            dropped,
        }
    }

    fn limiter(
        algorithm: impl LimitAlgorithm,
        min: u64,
        max: u64,
        initial: u64,
    ) -> AdaptiveLimiter {
        AdaptiveLimiter::builder(algorithm)
            .bounds(min, max)
            .initial(initial)
            .build()
            .expect("valid")
    }

    fn any_sample() -> impl Strategy<Value = Sample> {
        (0_u64..10_000, 0_u64..2_000, any::<bool>())
            .prop_map(|(latency, in_flight, dropped)| sample(latency, in_flight, dropped))
    }

    proptest! {
        /// Whatever the samples, the limit stays within its bounds.
        #[test]
        fn the_limit_stays_within_its_bounds(
            gradient in any::<bool>(),
            min in 1_u64..50,
            span in 0_u64..500,
            samples in proptest::collection::vec(any_sample(), 0..300),
        ) {
            let max = min + span;
            let limiter = if gradient {
                limiter(Gradient::new(), min, max, min)
            } else {
                limiter(Aimd::new().slower_than(Duration::from_millis(500)), min, max, max)
            };
            for sample in samples {
                limiter.record(sample);
                prop_assert!((min..=max).contains(&limiter.limit()), "{}", limiter.limit());
            }
        }

        /// A steady latency with the limit in use: it grows (to its
        /// ceiling, given time).
        #[test]
        fn an_uncongested_load_raises_the_limit(
            gradient in any::<bool>(),
            latency in 1_u64..1_000,
            initial in 1_u64..100,
        ) {
            let limiter = if gradient {
                limiter(Gradient::new(), 1, 1_000, initial)
            } else {
                limiter(Aimd::new(), 1, 1_000, initial)
            };
            for _ in 0..200 {
                limiter.record(sample(latency, limiter.limit(), false));
            }
            prop_assert!(limiter.limit() > initial, "{} from {initial}", limiter.limit());
        }

        /// After a steady latency, one that rises well past the tolerance
        /// and stays: the gradient brings the limit down.
        #[test]
        fn a_rising_latency_lowers_the_gradient_limit(
            latency in 1_u64..500,
            rise in 3_u64..10,
        ) {
            let limiter = limiter(Gradient::new(), 1, 1_000, 100);
            for _ in 0..100 {
                limiter.record(sample(latency, limiter.limit(), false));
            }
            let before = limiter.limit();
            for _ in 0..20 {
                limiter.record(sample(latency * rise, limiter.limit(), false));
            }
            prop_assert!(limiter.limit() < before, "{} from {before}", limiter.limit());
        }

        /// Drops bring either algorithm's limit down.
        #[test]
        fn drops_lower_the_limit(gradient in any::<bool>(), initial in 20_u64..1_000) {
            let limiter = if gradient {
                limiter(Gradient::new(), 1, 1_000, initial)
            } else {
                limiter(Aimd::new(), 1, 1_000, initial)
            };
            for _ in 0..5 {
                limiter.record(sample(10, limiter.limit(), true));
            }
            prop_assert!(limiter.limit() < initial, "{} from {initial}", limiter.limit());
        }
    }

    #[test]
    fn an_idle_limit_does_not_grow() {
        for idle in [
            limiter(Gradient::new(), 1, 1_000, 100),
            limiter(Aimd::new(), 1, 1_000, 100),
        ] {
            for _ in 0..200 {
                idle.record(sample(5, 10, false));
            }
            assert_eq!(idle.limit(), 100);
        }
    }

    #[test]
    fn admissions_stop_at_the_limit_and_tokens_give_places_back() {
        let limiter = limiter(Aimd::new(), 2, 2, 2);
        let first = limiter.try_acquire().expect("room");
        let second = limiter.try_acquire().expect("room");
        assert!(limiter.try_acquire().is_none());
        assert_eq!((limiter.in_flight(), limiter.rejected()), (2, 1));
        // A lower class takes half the limit: none while it is full.
        drop(first);
        assert!(limiter.try_acquire_share(0.5).is_none());
        second.ignore();
        let low = limiter.try_acquire_share(0.5).expect("room for the share");
        assert!(limiter.try_acquire_share(0.5).is_none());
        low.success();
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn bad_bounds_are_refused() {
        for (min, max, initial) in [(0, 10, 5), (10, 5, 7), (1, 10, 11)] {
            let built = AdaptiveLimiter::builder(Aimd::new())
                .bounds(min, max)
                .initial(initial)
                .build();
            assert!(
                matches!(built, Err(Error::InvalidConfig(_))),
                "{min}..={max} at {initial}"
            );
        }
        assert!(Gradient::new().tolerance(0.5).is_err());
        assert!(Gradient::new().smoothing(0.0).is_err());
    }

    #[test]
    fn the_metrics_follow_the_limiter() {
        let monitor = Monitor::new();
        let limiter = AdaptiveLimiter::builder(Aimd::new())
            .bounds(1, 10)
            .initial(1)
            .metrics(&monitor, "api")
            .build()
            .expect("valid");
        let token = limiter.try_acquire().expect("room");
        assert!(limiter.try_acquire().is_none());
        token.success();
        let text = monitor.render(seawall_perfmon::ExpositionFormat::Prometheus);
        for line in [
            "adaptive_limit{limiter=\"api\"} 2",
            "adaptive_in_flight{limiter=\"api\"} 0",
            "adaptive_rejected_total{limiter=\"api\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
