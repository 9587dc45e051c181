//! Adaptive concurrency limits: how many operations may be in flight at
//! once, found from what the operations themselves show rather than typed
//! by hand. Each finished operation is a sample (how long it took, how
//! many were in flight, whether it was dropped for overload), and an
//! algorithm moves the limit: [`Gradient`] from latency (the limit shrinks
//! as the short-term latency rises above the long-term one, Netflix's
//! Gradient2), [`Aimd`] from loss (one more per sample while the limit is
//! in use, a tenth less per drop).
//!
//! An operation with no room may wait a bounded time for one
//! ([`AdaptiveLimiter::acquire_share`] and [`Wait::within`]): a finished
//! operation hands its place straight to a waiter, the highest share first
//! and the newest first within a share (Facebook's adaptive LIFO: under
//! overload the oldest waiters are the ones refused, and an admitted
//! operation carries little of the wait), so a client that re-sends a
//! refused request at once is slowed by the wait instead of spinning.
//!
//! Written here rather than taken from a crate: the limiter sits in front
//! of every request, so an admission is one compare-and-swap and the
//! algorithm runs once per finished operation under a short lock, and its
//! limit, in-flight count and rejections are seawall-perfmon metrics. The
//! crates that do this (congestion-limiter, tower-resilience-adaptive,
//! tower-acc) take an async lock per sample or carry their own metrics.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use seawall_perfmon::{Counter, Gauge, Monitor};
use tokio::sync::oneshot;

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

/// Latency-based, after Netflix's Gradient2: compares the latest latency
/// with a long-term average. The next limit aims at the limit times the
/// gradient `tolerance × average / latest` (between 0.5 and 2) plus a
/// queue allowance (the square root of the limit, at least 1), and each
/// step is smoothed (by 0.2, so a sample moves the limit by at most a fifth
/// up or a tenth down). While the latest is below `tolerance` times the
/// average the limit grows, in proportion to how far below it is (about a
/// tenth per sample at the average itself); past it, the limit shrinks in
/// proportion. Gradient2 caps the gradient at 1 and grows by the allowance
/// alone; letting it reach 2 brings a limit back as fast as it fell once a
/// slowdown of what the operations call has ended (the average still
/// remembers it), and under a steady load it takes the limit to its
/// ceiling unless latency rises past the tolerance. A drop cuts the limit
/// by a tenth. A limit not in use (fewer than half of it in
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
        let gradient = (self.tolerance * long / latest).clamp(0.5, 2.0);
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

/// How long a window of samples stays open at least, by default.
const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// How many samples a window holds at least, by default.
const DEFAULT_WINDOW_SAMPLES: u64 = 10;

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
    /// The algorithm, the exact (fractional) limit it moves and the
    /// window of samples it is fed.
    control: Mutex<Control>,
    min: u64,
    max: u64,
    metrics: Option<Metrics>,
    /// Operations in `queue`: read after every release, so the queue's
    /// lock is taken only when someone waits.
    waiting: AtomicUsize,
    queue: Mutex<Queue>,
}

struct Control {
    algorithm: Box<dyn LimitAlgorithm>,
    exact: f64,
    window: Window,
}

/// Samples gathered until the window closes: at least `min_samples`, over
/// at least `every`. The algorithm then sees one sample: their mean
/// latency, the most in flight, and a drop if any was dropped. A window
/// smooths the mix of fast and slow operations one limit serves (a cached
/// read next to a report), which sample by sample would swing the limit
/// from bound to bound.
struct Window {
    every: Duration,
    min_samples: u64,
    opened: Option<quanta::Instant>,
    count: u64,
    latency: Duration,
    in_flight: u64,
    dropped: bool,
}

impl Window {
    /// Adds `sample`; the window's one sample when it closes with it.
    fn add(&mut self, sample: Sample) -> Option<Sample> {
        let opened = *self.opened.get_or_insert_with(quanta::Instant::now);
        self.count += 1;
        self.latency = self.latency.saturating_add(sample.latency);
        self.in_flight = self.in_flight.max(sample.in_flight);
        self.dropped |= sample.dropped;
        if self.count < self.min_samples || (!self.every.is_zero() && opened.elapsed() < self.every)
        {
            return None;
        }
        let count = u32::try_from(self.count).unwrap_or(u32::MAX);
        let closed = Sample {
            latency: self.latency / count,
            in_flight: self.in_flight,
            dropped: self.dropped,
        };
        *self = Self {
            every: self.every,
            min_samples: self.min_samples,
            opened: None,
            count: 0,
            latency: Duration::ZERO,
            in_flight: 0,
            dropped: false,
        };
        Some(closed)
    }
}

/// The operations waiting for a place, by share.
#[derive(Default)]
struct Queue {
    next_id: u64,
    /// Highest share first; few (one per class of work).
    groups: Vec<Group>,
}

struct Group {
    share: f64,
    /// In arrival order: an id, and where to send the in-flight count
    /// when a place is handed over.
    waiters: VecDeque<(u64, oneshot::Sender<u64>)>,
}

impl Queue {
    fn push(&mut self, share: f64, sender: oneshot::Sender<u64>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let at = self.groups.iter().position(|group| group.share <= share);
        let group = match at {
            Some(at) if self.groups[at].share == share => &mut self.groups[at],
            _ => {
                let at = at.unwrap_or(self.groups.len());
                self.groups.insert(
                    at,
                    Group {
                        share,
                        waiters: VecDeque::new(),
                    },
                );
                &mut self.groups[at]
            }
        };
        group.waiters.push_back((id, sender));
        id
    }

    /// Takes waiter `id` out; false when it is no longer here (a place was
    /// handed to it).
    fn remove(&mut self, share: f64, id: u64) -> bool {
        let Some(group) = self.groups.iter_mut().find(|group| group.share == share) else {
            return false;
        };
        // The oldest time out first, and they are at the front.
        match group.waiters.iter().position(|(waiter, _)| *waiter == id) {
            Some(at) => {
                group.waiters.remove(at);
                true
            }
            None => false,
        }
    }
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
    window: (Duration, u64),
    metrics: Option<(Monitor, String)>,
}

impl AdaptiveLimiter {
    /// A limiter moved by `algorithm`, between 1 and 1,000 by default,
    /// starting at 20, fed windows of at least 10 samples over at least
    /// 100 ms.
    pub fn builder(algorithm: impl LimitAlgorithm) -> AdaptiveLimiterBuilder {
        AdaptiveLimiterBuilder {
            algorithm: Box::new(algorithm),
            min: 1,
            max: 1_000,
            initial: None,
            window: (DEFAULT_WINDOW, DEFAULT_WINDOW_SAMPLES),
            metrics: None,
        }
    }

    /// Admits one operation if fewer than the limit are in flight; the
    /// token releases its place and reports how it went. `None` counts a
    /// rejection.
    pub fn try_acquire(&self) -> Option<Token> {
        self.try_acquire_share(1.0)
    }

    /// Admits one operation if fewer than `share` (0 to 1) of the limit
    /// are in flight (rounded down, but at least one place for any share
    /// above 0): lower classes of work take a share, so they are refused
    /// first as the service fills.
    pub fn try_acquire_share(&self, share: f64) -> Option<Token> {
        self.acquire_share(share).ok()
    }

    /// Admits one operation at once if fewer than `share` (0 to 1) of the
    /// limit are in flight; otherwise the [`Wait`] for a place, which the
    /// caller may spend ([`Wait::within`]) or drop (a refusal either way
    /// is counted once).
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_ratelimit::{AdaptiveLimiter, Aimd};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limiter = AdaptiveLimiter::builder(Aimd::new())
    ///     .bounds(1, 1)
    ///     .initial(1)
    ///     .build()
    ///     .expect("valid bounds");
    /// let first = limiter.acquire_share(1.0).expect("room for one");
    /// let wait = limiter.acquire_share(1.0).expect_err("full");
    /// let finish = async move {
    ///     tokio::task::yield_now().await;
    ///     first.success(); // hands its place to the waiter
    /// };
    /// let (second, ()) = tokio::join!(wait.within(Duration::from_secs(60)), finish);
    /// assert!(second.is_some());
    /// # }
    /// ```
    pub fn acquire_share(&self, share: f64) -> Result<Token, Wait> {
        // A NaN share is no share (and never a group of its own).
        let share = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        match self.0.take(share) {
            Some(in_flight) => Ok(self.0.token(in_flight)),
            None => Err(Wait {
                limiter: Some(self.clone()),
                share,
            }),
        }
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

    /// Adds one sample to the window, as a token does when it is reported;
    /// for tests and for callers that time operations themselves. The
    /// algorithm moves the limit when the window closes.
    pub fn record(&self, sample: Sample) {
        let shared = &self.0;
        let mut control = shared.control.lock();
        let Control {
            algorithm,
            exact,
            window,
        } = &mut *control;
        if let Some(sample) = window.add(sample) {
            let next = algorithm.update(*exact, sample);
            let next = if next.is_finite() { next } else { *exact };
            *exact = next.clamp(shared.min as f64, shared.max as f64);
            let whole = whole(exact.round()).clamp(shared.min, shared.max);
            // Sequentially consistent, as `hand_over` reads `waiting`
            // after it: a waiter that read the old limit is seen.
            shared.limit.store(whole, Ordering::SeqCst);
            if let Some(metrics) = &shared.metrics {
                metrics.limit.set(whole as f64);
            }
        }
        drop(control);
        // The place given back, or a limit that grew, has room for
        // waiters.
        shared.hand_over();
    }
}

impl Shared {
    /// The most in flight a share of the limit allows: at least one for
    /// any share above 0, so a small limit starves no class.
    fn ceiling(&self, share: f64) -> u64 {
        let ceiling = whole((self.limit.load(Ordering::SeqCst) as f64 * share).floor());
        if share > 0.0 { ceiling.max(1) } else { ceiling }
    }

    /// Takes a place if fewer than `share` of the limit are in flight; the
    /// count in flight with it.
    fn take(&self, share: f64) -> Option<u64> {
        let ceiling = self.ceiling(share);
        let mut now = self.in_flight.load(Ordering::SeqCst);
        loop {
            if now >= ceiling {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                now,
                now + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.in_flight.inc();
        }
        Some(now + 1)
    }

    fn token(self: &Arc<Self>, in_flight: u64) -> Token {
        Token {
            limiter: Some(Arc::clone(self)),
            started: quanta::Instant::now(),
            in_flight,
        }
    }

    fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.rejected.inc();
        }
    }

    /// Gives a place back, and hands what room there is to the waiters.
    fn release(&self) {
        self.give_back();
        self.hand_over();
    }

    fn give_back(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(metrics) = &self.metrics {
            metrics.in_flight.dec();
        }
    }

    /// Hands free places to waiters, the highest share first, while the
    /// limit has room for them. Runs after every release and every change
    /// of the limit; the lock is taken only when someone waits. A waiter
    /// counts itself in `waiting` before it looks for room a last time
    /// under the lock, and a release lowers `in_flight` before it reads
    /// `waiting` (all sequentially consistent), so either the waiter sees
    /// the room or the release sees the waiter.
    fn hand_over(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut queue = self.queue.lock();
        while let Some(group) = queue
            .groups
            .iter_mut()
            .find(|group| !group.waiters.is_empty())
        {
            let Some(in_flight) = self.take(group.share) else {
                return;
            };
            // The newest first: under overload the oldest would be served
            // only as its wait ran out, and every answer would carry the
            // whole wait (the oldest are shed instead, as their waits end).
            let Some((_, waiter)) = group.waiters.pop_back() else {
                // Not reached: the group was found with a waiter.
                self.give_back();
                return;
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if waiter.send(in_flight).is_err() {
                // It stopped waiting without taking itself out (it was
                // cancelled while we held the lock): the place goes on.
                self.give_back();
            }
        }
    }
}

/// An operation refused a place for now, from
/// [`AdaptiveLimiter::acquire_share`]: [`within`](Wait::within) waits a
/// bounded time for one. Dropped unspent, it counts one refusal.
#[must_use = "a refused operation waits with `within`, or is refused when dropped"]
pub struct Wait {
    limiter: Option<AdaptiveLimiter>,
    share: f64,
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

impl Wait {
    /// Waits up to `wait` for a place: the first place a finished operation
    /// gives back goes to the waiter with the highest share, the newest
    /// first among equals (so under overload an admitted operation has
    /// waited little, and the oldest are the ones refused). `None` (one
    /// refusal counted) when none came in time.
    pub async fn within(mut self, wait: Duration) -> Option<Token> {
        let limiter = self.limiter.take()?;
        let shared = &limiter.0;
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut queue = shared.queue.lock();
            shared.waiting.fetch_add(1, Ordering::SeqCst);
            if let Some(in_flight) = shared.take(self.share) {
                shared.waiting.fetch_sub(1, Ordering::SeqCst);
                return Some(shared.token(in_flight));
            }
            if wait.is_zero() {
                shared.waiting.fetch_sub(1, Ordering::SeqCst);
                drop(queue);
                shared.reject();
                return None;
            }
            queue.push(self.share, sender)
        };
        let mut queued = Queued {
            shared,
            share: self.share,
            id,
            receiver,
            done: false,
        };
        let handed = match tokio::time::timeout(wait, &mut queued.receiver).await {
            Ok(Ok(in_flight)) => Some(in_flight),
            // The sender is dropped only after a send.
            Ok(Err(_)) => None,
            Err(_) => queued.leave(),
        };
        queued.done = true;
        match handed {
            Some(in_flight) => Some(shared.token(in_flight)),
            None => {
                shared.reject();
                None
            }
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.0.reject();
        }
    }
}

/// A waiter in the queue; cancelled (dropped while it waits), it takes
/// itself out, or gives back a place handed to it meanwhile.
struct Queued<'a> {
    shared: &'a Arc<Shared>,
    share: f64,
    id: u64,
    receiver: oneshot::Receiver<u64>,
    done: bool,
}

impl Queued<'_> {
    /// Leaves the queue; a place handed over before it left, if any.
    fn leave(&mut self) -> Option<u64> {
        let mut queue = self.shared.queue.lock();
        if queue.remove(self.share, self.id) {
            self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        drop(queue);
        // Out of the queue but not by us: a place was sent under the lock.
        self.receiver.try_recv().ok()
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if !self.done && self.leave().is_some() {
            self.shared.release();
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

    /// How many samples the algorithm sees at once: a window closes once
    /// it holds at least `min_samples` (at least 1) and has been open at
    /// least `every`, and the algorithm sees their mean latency, the most
    /// in flight and whether any was dropped (default: 10 samples, 100 ms).
    /// `(Duration::ZERO, 1)` feeds it every sample alone.
    pub fn window(mut self, every: Duration, min_samples: u64) -> Self {
        self.window = (every, min_samples.max(1));
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
            control: Mutex::new(Control {
                algorithm: self.algorithm,
                exact: initial as f64,
                window: Window {
                    every: self.window.0,
                    min_samples: self.window.1,
                    opened: None,
                    count: 0,
                    latency: Duration::ZERO,
                    in_flight: 0,
                    dropped: false,
                },
            }),
            min: self.min,
            max: self.max,
            metrics,
            waiting: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
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

/// What a finished operation tells an adaptive limit about capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It finished and was served: its latency is a sample.
    Served,
    /// It was dropped for overload: it timed out, or the service refused
    /// it for want of room. The limit backs off.
    Overloaded,
    /// It says nothing about this service's capacity: the caller's own
    /// mistake, or a dependency that failed fast (a dead Redis is no
    /// reason to admit fewer of the requests that do not need it).
    Ignored,
}

/// One admitted operation's place. Report how it went with
/// [`success`](Token::success), [`dropped`](Token::dropped),
/// [`ignore`](Token::ignore) or [`report`](Token::report); dropped
/// unreported, it only gives its place back (as `ignore`).
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

    /// Reports `outcome`: [`success`](Token::success),
    /// [`dropped`](Token::dropped) or [`ignore`](Token::ignore) by its
    /// variant.
    pub fn report(self, outcome: Outcome) {
        match outcome {
            Outcome::Served => self.success(),
            Outcome::Overloaded => self.dropped(),
            Outcome::Ignored => self.ignore(),
        }
    }

    fn finish(mut self, dropped: Option<bool>) {
        let Some(shared) = self.limiter.take() else {
            return;
        };
        shared.give_back();
        match dropped {
            // Recording hands over what room there is.
            Some(dropped) => AdaptiveLimiter(shared).record(Sample {
                latency: self.started.elapsed(),
                in_flight: self.in_flight,
                dropped,
            }),
            None => shared.hand_over(),
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if let Some(shared) = self.limiter.take() {
            shared.release();
        }
    }
}

/// `count` as a whole number: saturates at 0 and at `u64::MAX`, as the
/// cast does (a NaN is 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // saturating by definition
fn whole(count: f64) -> u64 {
    count as u64
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
            .window(Duration::ZERO, 1)
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

    fn fixed(limit: u64) -> AdaptiveLimiter {
        limiter(Aimd::new(), limit, limit, limit)
    }

    const LONG: Duration = Duration::from_secs(3_600);

    #[tokio::test]
    async fn a_finished_operation_hands_its_place_to_a_waiter() {
        let limiter = fixed(1);
        let first = limiter.try_acquire().expect("room");
        let wait = limiter.acquire_share(1.0).expect_err("full");
        let waiting = tokio::spawn(wait.within(LONG));
        while limiter.0.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        first.success();
        let second = waiting.await.expect("joined").expect("handed a place");
        // Handed over, never given back in between: still one in flight.
        assert_eq!((limiter.in_flight(), limiter.rejected()), (1, 0));
        drop(second);
        assert_eq!(limiter.in_flight(), 0);
    }

    /// With the default window, a finished operation hands over its place
    /// whether or not its sample closes a window.
    #[tokio::test]
    async fn a_place_is_handed_over_between_windows_too() {
        let limiter = AdaptiveLimiter::builder(Gradient::new())
            .bounds(1, 1)
            .initial(1)
            .build()
            .expect("valid");
        for _ in 0..3 {
            let first = limiter.try_acquire().expect("room");
            let waiting = tokio::spawn(limiter.acquire_share(1.0).expect_err("full").within(LONG));
            while limiter.0.waiting.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            first.success();
            waiting
                .await
                .expect("joined")
                .expect("handed a place")
                .ignore();
        }
        assert_eq!((limiter.in_flight(), limiter.rejected()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_runs_out_is_one_refusal_and_leaves_nothing_behind() {
        let limiter = fixed(1);
        let held = limiter.try_acquire().expect("room");
        let wait = limiter.acquire_share(1.0).expect_err("full");
        assert!(wait.within(Duration::from_millis(100)).await.is_none());
        assert_eq!(limiter.rejected(), 1);
        assert_eq!(limiter.0.waiting.load(Ordering::SeqCst), 0);
        // A refusal dropped without waiting counts once too.
        drop(limiter.acquire_share(1.0).expect_err("full"));
        assert_eq!(limiter.rejected(), 2);
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
        assert!(limiter.try_acquire().is_some());
    }

    #[tokio::test]
    async fn the_highest_share_is_handed_a_place_first() {
        // A limit of 4: the half share fits 2, the whole 4.
        let limiter = fixed(4);
        let held: Vec<Token> = (0..4)
            .map(|_| limiter.try_acquire().expect("room"))
            .collect();
        let low = tokio::spawn(limiter.acquire_share(0.5).expect_err("full").within(LONG));
        while limiter.0.waiting.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let high = tokio::spawn(limiter.acquire_share(1.0).expect_err("full").within(LONG));
        while limiter.0.waiting.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let waiting = || limiter.0.waiting.load(Ordering::SeqCst);
        let mut held = held.into_iter();
        // One place: the whole share takes it though it came second.
        held.next().expect("held").success();
        assert_eq!((waiting(), limiter.in_flight()), (1, 4));
        let high = high.await.expect("joined").expect("handed");
        // Two in flight: the half share still has no room (it fits below 2).
        held.next().expect("held").ignore();
        held.next().expect("held").ignore();
        assert_eq!((waiting(), limiter.in_flight()), (1, 2));
        drop(high);
        assert_eq!((waiting(), limiter.in_flight()), (0, 2));
        let low = low.await.expect("joined").expect("handed at 1 in flight");
        drop((low, held));
        assert_eq!((limiter.in_flight(), limiter.rejected()), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let limiter = fixed(1);
        let held = limiter.try_acquire().expect("room");
        let waiting = tokio::spawn(limiter.acquire_share(1.0).expect_err("full").within(LONG));
        while limiter.0.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        assert!(waiting.await.expect_err("aborted").is_cancelled());
        assert_eq!(limiter.0.waiting.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
        assert!(limiter.try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_limit_that_grows_hands_its_room_to_the_waiters() {
        let limiter = limiter(Aimd::new(), 1, 10, 1);
        let held = limiter.try_acquire().expect("room");
        let waiting = tokio::spawn(limiter.acquire_share(1.0).expect_err("full").within(LONG));
        while limiter.0.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // In use and fast: AIMD adds one, and the waiter gets it.
        limiter.record(sample(1, 1, false));
        let second = waiting.await.expect("joined").expect("handed");
        assert_eq!(limiter.in_flight(), 2);
        drop((held, second));
    }

    /// Many tasks on many threads take, wait for and give back places:
    /// the count in flight never passes the limit, every place comes back,
    /// and nobody is left in the queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiting_under_contention_keeps_the_count_exact() {
        let limiter = fixed(3);
        let peak = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..32_u32)
            .map(|task| {
                let limiter = limiter.clone();
                let peak = Arc::clone(&peak);
                tokio::spawn(async move {
                    let share = [1.0, 0.7, 0.4][task as usize % 3];
                    let mut admitted = 0_u32;
                    for round in 0..200_u32 {
                        let token = match limiter.acquire_share(share) {
                            Ok(token) => Some(token),
                            Err(wait) => {
                                wait.within(Duration::from_micros(u64::from(round % 50)))
                                    .await
                            }
                        };
                        if let Some(token) = token {
                            admitted += 1;
                            peak.fetch_max(limiter.in_flight(), Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            if round % 7 == 0 {
                                drop(token)
                            } else {
                                token.ignore()
                            }
                        }
                    }
                    admitted
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.expect("joined");
        }
        assert!(admitted > 0);
        assert!(
            peak.load(Ordering::SeqCst) <= 3,
            "peak {}",
            peak.load(Ordering::SeqCst)
        );
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.0.waiting.load(Ordering::SeqCst), 0);
        assert!(
            limiter
                .0
                .queue
                .lock()
                .groups
                .iter()
                .all(|group| group.waiters.is_empty())
        );
        assert_eq!(u64::from(32 * 200 - admitted), limiter.rejected());
    }

    #[test]
    fn a_window_feeds_the_algorithm_its_mean_latency_most_in_flight_and_any_drop() {
        /// Remembers what it was fed.
        struct Seen(Arc<Mutex<Vec<Sample>>>);
        impl LimitAlgorithm for Seen {
            fn update(&mut self, limit: f64, sample: Sample) -> f64 {
                self.0.lock().push(sample);
                limit
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let limiter = AdaptiveLimiter::builder(Seen(Arc::clone(&seen)))
            .window(Duration::ZERO, 3)
            .build()
            .expect("valid");
        for (latency, in_flight, dropped) in [(10, 5, false), (40, 9, true), (10, 2, false)] {
            limiter.record(sample(latency, in_flight, dropped));
        }
        limiter.record(sample(1, 1, false));
        assert_eq!(*seen.lock(), [sample(20, 9, true)]);
        // A window that must stay open longer does not close on its count.
        let long = AdaptiveLimiter::builder(Seen(Arc::clone(&seen)))
            .window(Duration::from_secs(3_600), 1)
            .build()
            .expect("valid");
        for _ in 0..100 {
            long.record(sample(1, 1, false));
        }
        assert_eq!(seen.lock().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nan_share_is_no_share_and_leaves_no_waiter_behind() {
        let limiter = fixed(2);
        assert!(limiter.try_acquire_share(f64::NAN).is_none());
        let wait = limiter.acquire_share(f64::NAN).expect_err("no share");
        assert!(wait.within(Duration::from_millis(10)).await.is_none());
        assert_eq!(limiter.0.waiting.load(Ordering::SeqCst), 0);
        assert!(
            limiter
                .0
                .queue
                .lock()
                .groups
                .iter()
                .all(|group| group.waiters.is_empty())
        );
    }

    #[test]
    fn every_share_above_zero_has_one_place_however_small_the_limit() {
        let limiter = fixed(1);
        let low = limiter.try_acquire_share(0.1).expect("its one place");
        assert!(limiter.try_acquire_share(1.0).is_none());
        drop(low);
        assert!(limiter.try_acquire_share(0.0).is_none());
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
            .window(Duration::ZERO, 1)
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
