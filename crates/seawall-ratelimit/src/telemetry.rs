//! What a limiter reports: decision counters through seawall-perfmon, the
//! keys it has seen blocked, and the keys rejected most and checked most
//! (bounded memory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_perfmon::{Counter, Gauge, Monitor, TopKeys, one_in};

use crate::decision::Decision;
use crate::error::{Error, Result};

/// How many keys the rejection ranking tracks.
const TOP_KEYS: usize = 32;
/// One check in this many, drawn at random on each thread, counts toward
/// the ranking of the keys checked most, with this weight: the ranking
/// costs an admitted check one thread-local random draw.
pub(crate) const CALLER_SAMPLE: u32 = 32;
/// How many blocked keys one limiter remembers.
const MAX_BLOCKED: usize = 10_000;

/// A key with how often it was rejected (an upper bound: see
/// [`Limiter::top_rejected`](crate::Limiter::top_rejected)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectedKey {
    /// The key.
    pub key: String,
    /// Rejections counted for it.
    pub rejections: u64,
    /// How much of `rejections` may belong to keys it displaced.
    pub overcount: u64,
}

/// A key with about how often it was checked (see
/// [`Limiter::top_callers`](crate::Limiter::top_callers)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeavyCaller {
    /// The key.
    pub key: String,
    /// Checks estimated for it: sampled ones times the sampling interval.
    pub checks: u64,
    /// How much of `checks` may belong to keys it displaced.
    pub overcount: u64,
}

/// How many decisions a limiter made, by outcome, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecisionCounts {
    /// Admitted.
    pub allowed: u64,
    /// Rejected.
    pub rejected: u64,
    /// Rejected by a shadow-mode limiter, and let through.
    pub shadow_rejected: u64,
    /// Admitted with less than 20 % of the limit left.
    pub near_limit: u64,
    /// Decided by the failure policy because the store failed.
    pub degraded: u64,
}

/// A key seen blocked, and for how much longer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockedKey {
    /// The key.
    pub key: String,
    /// Time left on the block.
    pub remaining: Duration,
}

/// Slots of the decision counts.
const ALLOWED: usize = 0;
const REJECTED: usize = 1;
const SHADOW_REJECTED: usize = 2;
const NEAR_LIMIT: usize = 3;
const DEGRADED: usize = 4;

#[derive(Debug)]
struct Counters {
    /// Indexed by the slots above.
    by_slot: [Counter; 5],
    blocked: Gauge,
}

/// The decision counts, striped: each thread adds to its own stripe, on its
/// own cache line, so threads deciding at once never contend on a counter.
#[derive(Debug)]
struct Counts {
    stripes: Box<[Stripe]>,
}

/// One stripe: a count per slot.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; 5]);

impl Counts {
    fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, usize::from);
        Self {
            stripes: (0..(2 * threads).next_power_of_two().min(64))
                .map(|_| Stripe::default())
                .collect(),
        }
    }

    fn add(&self, slot: usize) {
        static THREADS: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static THREAD: usize = THREADS.fetch_add(1, Ordering::Relaxed);
        }
        let stripe = THREAD.with(|thread| *thread) % self.stripes.len();
        self.stripes[stripe].0[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, slot: usize) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0[slot].load(Ordering::Relaxed))
            .sum()
    }
}

/// One limiter's reporting.
#[derive(Debug)]
pub(crate) struct Telemetry {
    counters: Option<Counters>,
    counts: Counts,
    top: Mutex<TopKeys>,
    /// The keys checked most, from one check in [`CALLER_SAMPLE`].
    callers: Mutex<TopKeys>,
    blocked: Mutex<HashMap<String, Instant>>,
    /// The earliest block end among `blocked` (µs since `epoch`), so a check
    /// knows without a lock when to drop ended blocks.
    next_unblock: AtomicU64,
    epoch: Instant,
}

impl Telemetry {
    pub(crate) fn new(limiter: &str, monitor: Option<&Monitor>) -> Result<Self> {
        let counters = monitor
            .map(|monitor| Counters::register(limiter, monitor))
            .transpose()
            .map_err(Error::Metrics)?;
        Ok(Self {
            counters,
            counts: Counts::new(),
            top: Mutex::new(TopKeys::new(TOP_KEYS)),
            callers: Mutex::new(TopKeys::new(TOP_KEYS)),
            blocked: Mutex::new(HashMap::new()),
            next_unblock: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        })
    }

    /// Counts a check's decision (of `cost`), and tells a subscriber of a
    /// refusal; true when it shows a block this instance had not seen on
    /// `key`.
    pub(crate) fn record(&self, key: &str, cost: u64, decision: &Decision) -> bool {
        let outcome = if decision.would_reject {
            SHADOW_REJECTED
        } else if decision.allowed {
            ALLOWED
        } else {
            REJECTED
        };
        self.count(outcome);
        if outcome == ALLOWED && decision.remaining.saturating_mul(5) < decision.limit {
            self.count(NEAR_LIMIT);
        }
        if decision.degraded {
            self.count(DEGRADED);
        }
        if outcome != ALLOWED {
            self.top.lock().add(key, 1);
            crate::trace::refused(decision, cost);
        }
        if one_in(CALLER_SAMPLE) {
            self.callers.lock().add(key, u64::from(CALLER_SAMPLE));
        }
        self.saw_block(key, decision.blocked_for)
    }

    fn count(&self, slot: usize) {
        self.counts.add(slot);
        if let Some(counters) = &self.counters {
            counters.by_slot[slot].inc();
        }
    }

    /// Notes that `key` is blocked for `blocked_for`, or not blocked; true
    /// when the block is one this instance had not seen: no block of `key`
    /// is on record (or the one on record has ended), or the recorded one
    /// ends more than a second earlier (a new penalty, or a block set again
    /// after an unblock elsewhere). Rejections within one block report it
    /// once.
    pub(crate) fn saw_block(&self, key: &str, blocked_for: Option<Duration>) -> bool {
        if blocked_for.is_none() && self.next_unblock.load(Ordering::Relaxed) == u64::MAX {
            // Nothing is blocked: nothing to forget, and no clock to read.
            return false;
        }
        let now = Instant::now();
        let micros = |at: Instant| {
            u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
        };
        match blocked_for {
            Some(duration) => {
                // A block longer than a century is one (the crate's bound).
                let until = now
                    .checked_add(duration.min(crate::MAX_DURATION))
                    .unwrap_or(now);
                let mut blocked = self.blocked.lock();
                let new = blocked.get(key).is_none_or(|recorded| {
                    *recorded <= now || until > *recorded + Duration::from_secs(1)
                });
                if blocked.len() < MAX_BLOCKED || blocked.contains_key(key) {
                    blocked.insert(key.to_owned(), until);
                    self.next_unblock
                        .fetch_min(micros(until), Ordering::Relaxed);
                }
                self.set_gauge(blocked.len());
                new
            }
            None => {
                if micros(now) >= self.next_unblock.load(Ordering::Relaxed) {
                    self.purge(now);
                }
                let mut blocked = self.blocked.lock();
                if blocked.remove(key).is_some() {
                    self.set_gauge(blocked.len());
                }
                false
            }
        }
    }

    /// How long `key` is still blocked, as far as this instance saw; `None`
    /// when it saw no block of it that has not ended.
    #[inline]
    pub(crate) fn blocked_for(&self, key: &str) -> Option<Duration> {
        if self.next_unblock.load(Ordering::Relaxed) == u64::MAX {
            return None;
        }
        let until = *self.blocked.lock().get(key)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    fn purge(&self, now: Instant) {
        let mut blocked = self.blocked.lock();
        blocked.retain(|_, until| *until > now);
        let next = blocked.values().min().map_or(u64::MAX, |until| {
            u64::try_from(until.saturating_duration_since(self.epoch).as_micros())
                .unwrap_or(u64::MAX)
        });
        self.next_unblock.store(next, Ordering::Relaxed);
        self.set_gauge(blocked.len());
    }

    #[allow(clippy::cast_precision_loss)] // at most MAX_BLOCKED
    fn set_gauge(&self, blocked: usize) {
        if let Some(counters) = &self.counters {
            counters.blocked.set(blocked as f64);
        }
    }

    pub(crate) fn blocked(&self) -> Vec<BlockedKey> {
        let now = Instant::now();
        self.purge(now);
        let mut keys: Vec<BlockedKey> = self
            .blocked
            .lock()
            .iter()
            .map(|(key, until)| BlockedKey {
                key: key.clone(),
                remaining: until.saturating_duration_since(now),
            })
            .collect();
        keys.sort_by(|a, b| {
            b.remaining
                .cmp(&a.remaining)
                .then_with(|| a.key.cmp(&b.key))
        });
        keys
    }

    pub(crate) fn counts(&self) -> DecisionCounts {
        let read = |slot: usize| self.counts.get(slot);
        DecisionCounts {
            allowed: read(ALLOWED),
            rejected: read(REJECTED),
            shadow_rejected: read(SHADOW_REJECTED),
            near_limit: read(NEAR_LIMIT),
            degraded: read(DEGRADED),
        }
    }

    pub(crate) fn top_rejected(&self) -> Vec<RejectedKey> {
        self.top
            .lock()
            .ranking()
            .into_iter()
            .map(|tally| RejectedKey {
                key: tally.key,
                rejections: tally.count,
                overcount: tally.overcount,
            })
            .collect()
    }

    pub(crate) fn top_callers(&self) -> Vec<HeavyCaller> {
        self.callers
            .lock()
            .ranking()
            .into_iter()
            .map(|tally| HeavyCaller {
                key: tally.key,
                checks: tally.count,
                overcount: tally.overcount,
            })
            .collect()
    }
}

impl Counters {
    fn register(limiter: &str, monitor: &Monitor) -> seawall_perfmon::Result<Self> {
        let decisions = monitor.counter(
            "ratelimit_decisions",
            "Rate-limit decisions by limiter and outcome (allowed, rejected, shadow_rejected: rejected by a shadow-mode limiter but let through).",
            &["limiter", "outcome"],
        )?;
        let near_limit = monitor.counter(
            "ratelimit_near_limit",
            "Admitted requests that left less than 20 % of the limit.",
            &["limiter"],
        )?;
        let degraded = monitor.counter(
            "ratelimit_degraded_decisions",
            "Decisions made by the failure policy because the store failed.",
            &["limiter"],
        )?;
        let blocked = monitor.gauge(
            "ratelimit_blocked_keys",
            "Keys this instance has seen blocked (penalty or manual block) whose block has not ended.",
            &["limiter"],
        )?;
        Ok(Self {
            by_slot: [
                decisions.with_labels(&[limiter, "allowed"])?,
                decisions.with_labels(&[limiter, "rejected"])?,
                decisions.with_labels(&[limiter, "shadow_rejected"])?,
                near_limit.with_labels(&[limiter])?,
                degraded.with_labels(&[limiter])?,
            ],
            blocked: blocked.with_labels(&[limiter])?,
        })
    }
}
