//! TTL classes: how long each kind of value lives and how it is refreshed.

use std::time::Duration;

/// A TTL class: a handle to one [`Policy`] of a cache.
///
/// Five classes exist in every cache, with the product's lifetimes; a cache
/// may redefine them and add its own with
/// [`TieredCacheBuilder::class`](crate::TieredCacheBuilder::class).
///
/// ```
/// use seawall_cache::Class;
///
/// assert_ne!(Class::SESSION, Class::API);
/// assert_eq!(Class::API.index(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class(pub(crate) u16);

impl Class {
    /// Review schedules: 2 hours.
    pub const SCHEDULE: Self = Self(0);
    /// Sessions: 24 hours.
    pub const SESSION: Self = Self(1);
    /// Computed results (aggregates, reports): 1 hour.
    pub const COMPUTATION: Self = Self(2);
    /// API responses: 5 minutes.
    pub const API: Self = Self(3);
    /// User preferences: 7 days.
    pub const PREFERENCES: Self = Self(4);

    /// The built-in classes, with their names.
    pub const BUILT_IN: [(Self, &'static str, Duration); 5] = [
        (Self::SCHEDULE, "schedule", Duration::from_secs(2 * 3600)),
        (Self::SESSION, "session", Duration::from_secs(24 * 3600)),
        (Self::COMPUTATION, "computation", Duration::from_secs(3600)),
        (Self::API, "api", Duration::from_secs(5 * 60)),
        (
            Self::PREFERENCES,
            "preferences",
            Duration::from_secs(7 * 24 * 3600),
        ),
    ];

    /// The class's index in its cache's table (its name belongs to the
    /// cache: [`TieredCache::class_name`](crate::TieredCache::class_name)).
    pub fn index(self) -> u16 {
        self.0
    }
}

/// What a cache does when a value of a class is read after it was loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum EarlyRefresh {
    /// Values are reloaded only once they expire.
    Off,
    /// XFetch (Vattani et al., VLDB 2015): a read refreshes the value in the
    /// background with a probability that rises as expiry nears, weighted by
    /// how long the last load took (`beta` > 1 refreshes earlier). A value
    /// younger than `floor` is never refreshed early.
    XFetch {
        /// The eagerness factor; 1.0 is the paper's optimum.
        beta: f64,
        /// The age below which a value is never refreshed early.
        floor: Duration,
    },
    /// Refresh-ahead: the first read after `at` (a fraction of the TTL, in
    /// (0, 1)) has passed refreshes the value in the background.
    Ahead {
        /// The fraction of the TTL after which a read refreshes.
        at: f64,
    },
}

/// What [`TieredCache::write`](crate::TieredCache::write) does to the cache
/// after the write to the source succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteStrategy {
    /// Invalidate the key everywhere; the next read loads it.
    #[default]
    Invalidate,
    /// Write-through: store the written value in both tiers at once.
    Through,
}

/// How values of one class live, load and refresh.
///
/// ```
/// use std::time::Duration;
/// use seawall_cache::{EarlyRefresh, Policy};
///
/// let policy = Policy::new(Duration::from_secs(300))
///     .l1_ttl(Duration::from_secs(30))
///     .jitter(0.1)
///     .fail_safe(Duration::from_secs(3600))
///     .early_refresh(EarlyRefresh::XFetch { beta: 1.0, floor: Duration::from_secs(60) });
/// assert_eq!(policy.ttl(), Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub(crate) ttl: Duration,
    pub(crate) l1_ttl: Option<Duration>,
    pub(crate) jitter: f64,
    pub(crate) negative_ttl: Duration,
    pub(crate) fail_safe: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) early_refresh: EarlyRefresh,
    pub(crate) write: WriteStrategy,
    pub(crate) distributed_lock: bool,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Duration,
    pub(crate) degraded_ttl: Option<Duration>,
}

impl Policy {
    /// A policy whose values are fresh for `ttl`, with these defaults: L1
    /// keeps them as long as L2, no jitter, "not found" cached for a tenth
    /// of the TTL (at most a minute), a value stands in for a failed load up
    /// to a TTL past its expiry (at most an hour), no stale-while-revalidate,
    /// XFetch with β = 1 and a floor of half the TTL, invalidate on write, no
    /// distributed lock, no soft timeout and a hard timeout of 30 s.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            l1_ttl: None,
            jitter: 0.0,
            negative_ttl: (ttl / 10).min(Duration::from_secs(60)),
            fail_safe: ttl.min(Duration::from_secs(3600)),
            stale_while_revalidate: Duration::ZERO,
            early_refresh: EarlyRefresh::XFetch {
                beta: 1.0,
                floor: ttl / 2,
            },
            write: WriteStrategy::Invalidate,
            distributed_lock: false,
            soft_timeout: None,
            hard_timeout: Duration::from_secs(30),
            degraded_ttl: None,
        }
    }

    /// The logical TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long L1 answers with a value (capped at the TTL: an L1 entry
    /// never answers past its L2 entry's freshness). A shorter L1 TTL bounds how long an instance
    /// that missed an invalidation can serve the old value.
    #[must_use]
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = Some(ttl);
        self
    }

    /// Spreads expiries: each write's TTL is shortened by a random part of
    /// up to `fraction` of it (clamped to [0, 0.5]), so keys written together
    /// do not expire together.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// How long a "not found" from the loader is cached. Zero: it is
    /// answered but not cached, in either tier, and it drops this process's
    /// copy of the key, which so never stands in for a later failed load.
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// How stale this class's L1 may answer while the instance cannot
    /// follow other instances' invalidations, in place of the cache's
    /// [`degraded_ttl`](crate::TieredCacheBuilder::degraded_ttl): zero for
    /// a class whose values must never be served after another instance
    /// dropped them (who a credential belongs to, say), however briefly.
    #[must_use]
    pub fn degraded_ttl(mut self, ttl: Duration) -> Self {
        self.degraded_ttl = Some(ttl);
        self
    }

    /// Fail-safe: how long past its TTL a value is kept to stand in when a
    /// load fails or exceeds its soft timeout. Zero turns it off.
    #[must_use]
    pub fn fail_safe(mut self, max: Duration) -> Self {
        self.fail_safe = max;
        self
    }

    /// Stale-while-revalidate: for this long after expiry, a read returns
    /// the old value at once and refreshes it once in the background.
    /// Capped at the fail-safe window (the value must still be kept).
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// How reads refresh a value before it expires.
    #[must_use]
    pub fn early_refresh(mut self, refresh: EarlyRefresh) -> Self {
        self.early_refresh = refresh;
        self
    }

    /// What [`TieredCache::write`](crate::TieredCache::write) does.
    #[must_use]
    pub fn write_strategy(mut self, strategy: WriteStrategy) -> Self {
        self.write = strategy;
        self
    }

    /// Whether a miss takes a distributed lock, so that across instances
    /// one loads while the others wait briefly or serve the old value.
    #[must_use]
    pub fn distributed_lock(mut self, enabled: bool) -> Self {
        self.distributed_lock = enabled;
        self
    }

    /// After this long, a load with an earlier value to stand in returns that
    /// value and finishes in the background.
    #[must_use]
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// The longest a load may run; past it the load is abandoned.
    #[must_use]
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = timeout;
        self
    }

    /// The policy with every duration at most `longest`.
    pub(crate) fn clamped(mut self, longest: Duration) -> Self {
        for duration in [
            &mut self.ttl,
            &mut self.negative_ttl,
            &mut self.fail_safe,
            &mut self.stale_while_revalidate,
            &mut self.hard_timeout,
        ] {
            *duration = (*duration).min(longest);
        }
        for duration in [&mut self.l1_ttl, &mut self.soft_timeout]
            .into_iter()
            .flatten()
        {
            *duration = (*duration).min(longest);
        }
        if let EarlyRefresh::XFetch { floor, .. } = &mut self.early_refresh {
            *floor = (*floor).min(longest);
        }
        self
    }

    pub(crate) fn validate(&self, name: &str) -> crate::Result<()> {
        let problem = if self.ttl.is_zero() {
            Some("a TTL of zero")
        } else if self.hard_timeout.is_zero() {
            Some("a hard timeout of zero")
        } else if self
            .soft_timeout
            .is_some_and(|soft| soft > self.hard_timeout)
        {
            Some("a soft timeout above the hard timeout")
        } else if let EarlyRefresh::Ahead { at } = self.early_refresh {
            (!(at > 0.0 && at < 1.0)).then_some("a refresh-ahead point outside (0, 1)")
        } else if let EarlyRefresh::XFetch { beta, .. } = self.early_refresh {
            (!(beta.is_finite() && beta > 0.0)).then_some("an XFetch beta that is not positive")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(crate::Error::Config(format!(
                "class {name:?} has {problem}"
            ))),
            None => Ok(()),
        }
    }

    /// The TTL of one write, with jitter taken off.
    pub(crate) fn jittered(&self, ttl: Duration) -> Duration {
        if self.jitter == 0.0 {
            return ttl;
        }
        ttl.mul_f64(1.0 - self.jitter * fastrand::f64())
    }
}
