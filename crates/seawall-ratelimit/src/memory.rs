//! The in-process store: keys spread over mutex-guarded shards (no global
//! lock), a monotonic clock, and idle keys evicted so that memory stays
//! bounded under a flood of distinct keys.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::store::{Entry, Op, Outcome, Rules, decide};

/// Keys the store keeps at most, by default: about 200 MB of state for
/// short keys such as IP addresses.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Where the memory store reads the time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The process's monotonic clock (the default).
    Monotonic(Instant),
    /// A clock that moves only when told to: for tests of time-dependent
    /// behaviour, here and in services that use the limiter.
    Manual(ManualClock),
}

impl Clock {
    fn now_us(&self) -> u64 {
        match self {
            Self::Monotonic(start) => {
                u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
            }
            Self::Manual(clock) => clock.now_us(),
        }
    }
}

/// A clock for tests: starts at an arbitrary time and moves by
/// [`advance`](Self::advance). Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at one hour past its zero (so windows do not all start at 0).
    pub fn new() -> Self {
        Self(Arc::new(AtomicU64::new(3_600_000_000)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    /// The time in microseconds since the clock's zero.
    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// State kept in process memory. Cheap to clone; clones share the state.
///
/// ```
/// use std::time::Duration;
/// use seawall_ratelimit::{Limit, Limiter, MemoryStore};
///
/// use seawall_ratelimit::{Clock, ManualClock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), seawall_ratelimit::Error> {
/// let clock = ManualClock::new();
/// let store = MemoryStore::builder().clock(Clock::Manual(clock.clone())).build();
/// let limiter = Limiter::builder("api")
///     .limit(Limit::fixed_window(1, Duration::from_secs(60))?)
///     .store(store)
///     .build()?;
/// assert!(limiter.check("client-1", 1).await?.allowed);
/// assert!(!limiter.check("client-1", 1).await?.allowed);
/// clock.advance(Duration::from_secs(60));
/// assert!(limiter.check("client-1", 1).await?.allowed);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Shard]>,
    hasher: RandomState,
    clock: Clock,
    max_keys_per_shard: usize,
}

/// One shard, on its own cache line so that two threads on two shards do
/// not slow each other down.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<ShardMap>);

#[derive(Default)]
struct ShardMap {
    /// Entries by limiter and key, found by a hash computed once per call.
    map: HashTable<Slot>,
    /// Operations since the last sweep of expired entries.
    since_sweep: usize,
}

impl std::fmt::Debug for ShardMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardMap")
            .field("keys", &self.map.len())
            .finish_non_exhaustive()
    }
}

/// One key's state, with what it is found by.
struct Slot {
    hash: u64,
    limiter: Box<str>,
    key: Box<str>,
    entry: Entry,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store on the monotonic clock keeping at most [`DEFAULT_MAX_KEYS`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for the clock, the key bound and the shard count.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// Keys held now, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| shard.0.lock().map.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn apply(&self, limiter: &str, key: &str, rules: &Rules, op: Op) -> Outcome {
        let inner = &*self.inner;
        let mut hasher = inner.hasher.build_hasher();
        limiter.hash(&mut hasher);
        key.hash(&mut hasher);
        let hash = hasher.finish();
        // The high bits pick the shard; the table uses the low ones.
        #[allow(clippy::cast_possible_truncation)] // below the shard count
        let shard = &inner.shards[((hash >> 40) % inner.shards.len() as u64) as usize];
        let now = inner.clock.now_us();
        let mut shard = shard.0.lock();
        shard.since_sweep += 1;
        if shard.since_sweep >= shard.map.len().max(1024) {
            shard.sweep(now);
        }
        let matches =
            |slot: &Slot| slot.hash == hash && &*slot.key == key && &*slot.limiter == limiter;
        if let Ok(mut found) = shard.map.find_entry(hash, matches) {
            let outcome = decide(&mut found.get_mut().entry, rules, now, op);
            if found.get().entry.expires_at <= now {
                found.remove();
            }
            return outcome;
        }
        let mut entry = Entry::default();
        let outcome = decide(&mut entry, rules, now, op);
        if entry.expires_at > now {
            if shard.map.len() >= inner.max_keys_per_shard {
                // A full shard is swept at most once per quarter of its size
                // in operations, so a flood of new keys costs amortised O(1)
                // per key; between sweeps each new key evicts one.
                if shard.since_sweep >= shard.map.len() / 4 {
                    shard.sweep(now);
                }
                if shard.map.len() >= inner.max_keys_per_shard {
                    shard.evict_one();
                }
            }
            shard.map.insert_unique(
                hash,
                Slot {
                    hash,
                    limiter: limiter.into(),
                    key: key.into(),
                    entry,
                },
                |slot| slot.hash,
            );
        }
        outcome
    }
}

impl ShardMap {
    fn sweep(&mut self, now: u64) {
        self.map.retain(|slot| slot.entry.expires_at > now);
        self.since_sweep = 0;
    }

    /// Drops the entry closest to expiry among a few: a full shard forgets
    /// the key that would have been forgotten soonest anyway.
    fn evict_one(&mut self) {
        let victim = self
            .map
            .iter()
            .take(8)
            .min_by_key(|slot| slot.entry.expires_at)
            .map(|slot| (slot.hash, slot.limiter.clone(), slot.key.clone()));
        if let Some((hash, limiter, key)) = victim
            && let Ok(found) = self
                .map
                .find_entry(hash, |slot| slot.limiter == limiter && slot.key == key)
        {
            found.remove();
        }
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    clock: Clock,
    max_keys: usize,
    shards: usize,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, usize::from);
        Self {
            clock: Clock::Monotonic(Instant::now()),
            max_keys: DEFAULT_MAX_KEYS,
            shards: (threads * 16).next_power_of_two(),
        }
    }
}

impl MemoryStoreBuilder {
    /// The clock (default: monotonic).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The most keys kept; when full, the key closest to expiry among a
    /// sample is forgotten to make room (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The number of shards (default: 16 per CPU, a power of two).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let shards: Box<[Shard]> = (0..self.shards).map(|_| Shard::default()).collect();
        MemoryStore {
            inner: Arc::new(Inner {
                max_keys_per_shard: self.max_keys.div_ceil(self.shards).max(1),
                shards,
                hasher: RandomState::new(),
                clock: self.clock,
            }),
        }
    }
}
