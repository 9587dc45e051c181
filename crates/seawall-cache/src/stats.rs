//! What a cache counts, per tier and TTL class, and its export through
//! seawall-perfmon.

use std::sync::atomic::{AtomicU64, Ordering};

use seawall_perfmon::CollectedFamily;

/// One class's counters, on their own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ClassCounters {
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l1_misses: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) l2_misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) stale_serves: AtomicU64,
    pub(crate) early_refreshes: AtomicU64,
    pub(crate) evictions: AtomicU64,
}

/// Counters of the cache as a whole.
#[derive(Debug, Default)]
pub(crate) struct CacheCounters {
    pub(crate) redis_errors: AtomicU64,
    pub(crate) breaker_opened: AtomicU64,
    pub(crate) invalidations_sent: AtomicU64,
    pub(crate) invalidations_received: AtomicU64,
    pub(crate) l1_clears: AtomicU64,
    pub(crate) refused_fills: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Hits and misses of one tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TierCounts {
    /// Reads answered by the tier.
    pub hits: u64,
    /// Reads the tier could not answer.
    pub misses: u64,
}

/// What one TTL class saw since the cache was built.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassStats {
    /// The class's name.
    pub class: String,
    /// The in-process tier.
    pub l1: TierCounts,
    /// The Redis tier (reads that missed L1).
    pub l2: TierCounts,
    /// Loader runs.
    pub loads: u64,
    /// Loader runs that failed, panicked or timed out.
    pub load_errors: u64,
    /// Reads answered with a value past its TTL (fail-safe and
    /// stale-while-revalidate).
    pub stale_serves: u64,
    /// Background refreshes started before expiry (XFetch, refresh-ahead).
    pub early_refreshes: u64,
    /// L1 entries evicted for room.
    pub evictions: u64,
    /// Reads answered by either tier, over all reads; 0 with no reads.
    pub hit_ratio: f64,
}

/// Whether the cache currently uses Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// The cache has no Redis tier.
    Absent,
    /// Redis is used.
    Closed,
    /// Redis failed repeatedly; the cache serves L1 and the loader until a
    /// background probe succeeds.
    Open,
}

/// A snapshot of a cache's counters and sizes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Per TTL class.
    pub classes: Vec<ClassStats>,
    /// Entries in L1 (approximate: moka applies writes in batches).
    pub l1_entries: u64,
    /// L1's weighted size: bytes when it is bounded by bytes, else entries.
    pub l1_weighted_size: u64,
    /// The Redis tier's circuit breaker.
    pub breaker: BreakerState,
    /// Whether L1 may answer: true when this instance follows other
    /// instances' invalidations (or has no Redis tier to follow), false from
    /// a disconnection until it has caught up.
    pub following: bool,
    /// Whether invalidations of writes this instance answered wait to reach
    /// Redis.
    pub invalidations_pending: bool,
    /// Redis calls that failed or timed out, and connections to Redis the
    /// client found lost.
    pub redis_errors: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Invalidations this instance announced: entries it added to the
    /// stream (a pattern or a clear adds two, before and after its sweep).
    pub invalidations_sent: u64,
    /// Invalidations from other instances applied to L1.
    pub invalidations_received: u64,
    /// Times L1 was cleared because missed invalidations could not be replayed.
    pub l1_clears: u64,
    /// Loads not written back because the key was invalidated meanwhile.
    pub refused_fills: u64,
}

impl Stats {
    /// The hit ratio over every class.
    pub fn hit_ratio(&self) -> f64 {
        let (hits, reads) = self.classes.iter().fold((0, 0), |(hits, reads), class| {
            (hits + class.l1.hits + class.l2.hits, reads + class.reads())
        });
        ratio(hits, reads)
    }
}

/// Reads of a class: those L1 saw, or L2's without L1.
fn reads(l1: TierCounts, l2: TierCounts) -> u64 {
    match l1.hits + l1.misses {
        0 => l2.hits + l2.misses,
        reads => reads,
    }
}

impl ClassStats {
    /// Reads of the class (through L1, or through L2 without L1).
    pub fn reads(&self) -> u64 {
        reads(self.l1, self.l2)
    }
}

fn ratio(hits: u64, reads: u64) -> f64 {
    if reads == 0 {
        0.0
    } else {
        hits as f64 / reads as f64
    }
}

impl ClassCounters {
    pub(crate) fn snapshot(&self, class: &str) -> ClassStats {
        let l1 = TierCounts {
            hits: read(&self.l1_hits),
            misses: read(&self.l1_misses),
        };
        let l2 = TierCounts {
            hits: read(&self.l2_hits),
            misses: read(&self.l2_misses),
        };
        ClassStats {
            class: class.to_owned(),
            l1,
            l2,
            loads: read(&self.loads),
            load_errors: read(&self.load_errors),
            stale_serves: read(&self.stale_serves),
            early_refreshes: read(&self.early_refreshes),
            evictions: read(&self.evictions),
            hit_ratio: ratio(l1.hits + l2.hits, reads(l1, l2)),
        }
    }
}

impl CacheCounters {
    pub(crate) fn fill(&self, stats: &mut Stats) {
        stats.redis_errors = read(&self.redis_errors);
        stats.breaker_opened = read(&self.breaker_opened);
        stats.invalidations_sent = read(&self.invalidations_sent);
        stats.invalidations_received = read(&self.invalidations_received);
        stats.l1_clears = read(&self.l1_clears);
        stats.refused_fills = read(&self.refused_fills);
    }
}

/// The families a cache exposes, prefixed `cache_` and labelled with the
/// cache's name.
pub(crate) fn families(name: &str, stats: &Stats) -> Vec<CollectedFamily> {
    let mut requests = CollectedFamily::counter(
        "cache_requests",
        "Cache reads by tier, TTL class and result.",
        &["cache", "tier", "class", "result"],
    );
    let mut loads = CollectedFamily::counter(
        "cache_loads",
        "Loader runs by TTL class and outcome.",
        &["cache", "class", "outcome"],
    );
    let mut stale = CollectedFamily::counter(
        "cache_stale_serves",
        "Reads answered with a value past its TTL.",
        &["cache", "class"],
    );
    let mut refreshes = CollectedFamily::counter(
        "cache_early_refreshes",
        "Background refreshes started before expiry.",
        &["cache", "class"],
    );
    let mut evictions = CollectedFamily::counter(
        "cache_evictions",
        "L1 entries evicted for room.",
        &["cache", "class"],
    );
    let mut hit_ratio = CollectedFamily::gauge(
        "cache_hit_ratio",
        "Reads answered by a tier over all reads, since start.",
        &["cache", "class"],
    );
    for class in &stats.classes {
        let c = class.class.as_str();
        for (tier, counts) in [("l1", class.l1), ("l2", class.l2)] {
            requests = requests
                .sample(&[name, tier, c, "hit"], counts.hits as f64)
                .sample(&[name, tier, c, "miss"], counts.misses as f64);
        }
        let ok = class.loads.saturating_sub(class.load_errors);
        loads = loads
            .sample(&[name, c, "ok"], ok as f64)
            .sample(&[name, c, "error"], class.load_errors as f64);
        stale = stale.sample(&[name, c], class.stale_serves as f64);
        refreshes = refreshes.sample(&[name, c], class.early_refreshes as f64);
        evictions = evictions.sample(&[name, c], class.evictions as f64);
        hit_ratio = hit_ratio.sample(&[name, c], class.hit_ratio);
    }
    let breaker_open = match stats.breaker {
        BreakerState::Open => 1.0,
        BreakerState::Closed | BreakerState::Absent => 0.0,
    };
    vec![
        requests,
        loads,
        stale,
        refreshes,
        evictions,
        hit_ratio,
        CollectedFamily::gauge(
            "cache_l1_entries",
            "Entries in the in-process tier.",
            &["cache"],
        )
        .sample(&[name], stats.l1_entries as f64),
        CollectedFamily::gauge(
            "cache_l1_weighted_size",
            "The in-process tier's weighted size (bytes or entries).",
            &["cache"],
        )
        .sample(&[name], stats.l1_weighted_size as f64),
        CollectedFamily::gauge(
            "cache_breaker_open",
            "1 while the Redis tier's circuit breaker is open.",
            &["cache"],
        )
        .sample(&[name], breaker_open),
        CollectedFamily::gauge(
            "cache_following_invalidations",
            "1 while L1 follows other instances' invalidations (or there is no Redis tier).",
            &["cache"],
        )
        .sample(&[name], f64::from(u8::from(stats.following))),
        CollectedFamily::gauge(
            "cache_invalidations_pending",
            "1 while invalidations of this instance's writes wait to reach Redis.",
            &["cache"],
        )
        .sample(&[name], f64::from(u8::from(stats.invalidations_pending))),
        CollectedFamily::counter(
            "cache_redis_errors",
            "Redis calls that failed or timed out.",
            &["cache"],
        )
        .sample(&[name], stats.redis_errors as f64),
        CollectedFamily::counter(
            "cache_invalidations",
            "Invalidations announced and received.",
            &["cache", "direction"],
        )
        .sample(&[name, "sent"], stats.invalidations_sent as f64)
        .sample(&[name, "received"], stats.invalidations_received as f64),
    ]
}
