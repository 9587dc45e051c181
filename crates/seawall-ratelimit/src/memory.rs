//! The in-process store: keys spread over mutex-guarded shards (no global
//! lock), a monotonic clock, and idle keys evicted so that memory stays
//! bounded under a flood of distinct keys. Only a key whose state equals a
//! fresh one is ever evicted: a blocked key, or one over its limit, stays.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hashbrown::HashTable;
use parking_lot::Mutex;

use smallvec::SmallVec;

use crate::store::{Entry, Op, Outcome, Rules, decide};

/// The process's monotonic clock, calibrated once: read from the CPU's
/// time-stamp counter where that is reliable, else from the OS.
static MONOTONIC: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// Keys the store keeps at most, by default: about 200 MB of state for
/// short keys such as IP addresses.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Where the memory store reads the time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The process's monotonic clock (the default): the CPU's time-stamp
    /// counter where it is invariant, calibrated against the OS's monotonic
    /// clock (the `quanta` crate), else the OS's monotonic clock itself.
    #[default]
    Monotonic,
    /// A clock that moves only when told to: for tests of time-dependent
    /// behaviour, here and in services that use the limiter.
    Manual(ManualClock),
}

/// A store's running clock.
#[derive(Debug)]
enum Time {
    /// The monotonic clock, counted from the store's creation.
    Monotonic(quanta::Instant),
    Manual(ManualClock),
}

impl Time {
    fn now_us(&self) -> u64 {
        match self {
            Self::Monotonic(start) => {
                let elapsed = MONOTONIC.now().saturating_duration_since(*start);
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
            }
            Self::Manual(clock) => clock.now_us(),
        }
    }
}

/// A clock for tests: starts at an arbitrary time and moves by
/// [`advance`](Self::advance), never past [`ManualClock::MAX_US`]. Clones
/// share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// The latest time the clock shows, in µs (2^60, some 36,000 years):
    /// times and durations added to it still fit a `u64`.
    pub const MAX_US: u64 = 1 << 60;

    /// A clock at one hour past its zero (so windows do not all start at 0).
    pub fn new() -> Self {
        Self(Arc::new(AtomicU64::new(3_600_000_000)))
    }

    /// Moves the clock forward, at most to [`MAX_US`](Self::MAX_US).
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(micros).min(Self::MAX_US))
            });
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
    /// Seeded per store; keys come from clients, so the seed keeps them
    /// from choosing collisions.
    hasher: foldhash::quality::RandomState,
    time: Time,
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
    /// Keys inserted since the last sweep of expired entries.
    inserted: usize,
    /// The latest time an operation on this shard used: time never goes
    /// back for a key, even if the clock read on another core lagged.
    now: u64,
}

impl std::fmt::Debug for ShardMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardMap")
            .field("keys", &self.map.len())
            .finish_non_exhaustive()
    }
}

/// One key's state, with what it is found by: 128 bytes, aligned so that a
/// lookup reads one aligned pair of cache lines.
#[repr(align(128))]
struct Slot {
    hash: u64,
    /// The limiter's interned name's address, then the key's bytes: inline
    /// up to 24 bytes of key (an IPv4 address, most IPv6 ones), so a short
    /// key is compared without reading another cache line.
    id: SmallVec<[u8; 32]>,
    entry: Entry,
}

/// What a slot is found by: the limiter, by the address of its interned
/// name, and the key.
#[derive(Clone, Copy)]
struct Id<'a> {
    limiter: [u8; 8],
    key: &'a [u8],
}

impl<'a> Id<'a> {
    fn new(limiter: &'static str, key: &'a str) -> Self {
        Self {
            limiter: (limiter.as_ptr() as u64).to_le_bytes(),
            key: key.as_bytes(),
        }
    }

    fn matches(self, id: &[u8]) -> bool {
        id.len() == 8 + self.key.len() && id[..8] == self.limiter && &id[8..] == self.key
    }

    fn to_owned(self) -> SmallVec<[u8; 32]> {
        let mut id = SmallVec::with_capacity(8 + self.key.len());
        id.extend_from_slice(&self.limiter);
        id.extend_from_slice(self.key);
        id
    }
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

    /// Applies `op` for `key` of `limiter` (an interned name); `None` when
    /// the key is new, its state would differ from a fresh one, and the
    /// store is full of keys it cannot forget.
    pub(crate) fn apply(
        &self,
        limiter: &'static str,
        key: &str,
        rules: &Rules,
        op: Op,
    ) -> Option<Outcome> {
        self.with_entry(limiter, key, |entry, now| decide(entry, rules, now, op))
    }

    /// Runs `f` on the entry of `key` of `limiter` (an interned name) at the
    /// store's time; `f` leaves the entry's expiry set, and an entry that
    /// has expired is not kept. `None` when a new key's entry must be kept
    /// and the shard is full of entries that differ from a fresh one: what
    /// `f` did is then undone.
    #[inline]
    pub(crate) fn with_entry<R>(
        &self,
        limiter: &'static str,
        key: &str,
        f: impl FnOnce(&mut Entry, u64) -> R,
    ) -> Option<R> {
        let inner = &*self.inner;
        let id = Id::new(limiter, key);
        let mut hasher = inner.hasher.build_hasher();
        hasher.write(&id.limiter);
        hasher.write(id.key);
        let hash = hasher.finish();
        // The high bits pick the shard; the table uses the low ones.
        #[allow(clippy::cast_possible_truncation)] // masked to the shard count
        let shard = &inner.shards[(hash >> 40) as usize & (inner.shards.len() - 1)];
        let now = inner.time.now_us();
        let mut shard = shard.0.lock();
        let now = now.max(shard.now);
        shard.now = now;
        let matches = |slot: &Slot| slot.hash == hash && id.matches(&slot.id);
        if let Some(slot) = shard.map.find_mut(hash, matches) {
            // An entry that is fresh again stays until a sweep: a key that
            // comes back soon reuses it rather than allocating anew.
            return Some(f(&mut slot.entry, now));
        }
        let mut entry = Entry::default();
        let outcome = f(&mut entry, now);
        if entry.expires_at > now {
            if !shard.make_room(now, inner.max_keys_per_shard) {
                return None;
            }
            shard.map.insert_unique(
                hash,
                Slot {
                    hash,
                    id: id.to_owned(),
                    entry,
                },
                |slot| slot.hash,
            );
        }
        Some(outcome)
    }
}

impl ShardMap {
    /// Makes room for one more key; false when there is none. Only new keys
    /// make the table grow, so only they sweep it, and only when it is
    /// full: an expired entry stays while there is room (a key that comes
    /// back reuses it), and a table grows only when a sweep leaves it three
    /// quarters full. A shard at its key bound sweeps at most once per
    /// quarter of its size in new keys, and otherwise forgets one expired
    /// key among a few; it never forgets a key whose state differs from a
    /// fresh one (a blocked key, a key over its limit), so when none of
    /// those it looks at has expired there is no room. Either way a new key
    /// costs amortised O(1).
    fn make_room(&mut self, now: u64, max_keys: usize) -> bool {
        self.inserted += 1;
        let at_bound = self.map.len() >= max_keys;
        if at_bound {
            if self.inserted >= self.map.len() / 4 {
                self.sweep(now);
            }
            return self.map.len() < max_keys || self.evict_one(now);
        } else if self.map.len() == self.map.capacity() {
            self.sweep(now);
            let capacity = self.map.capacity();
            if self.map.len() > capacity - capacity / 4 {
                self.map.reserve(capacity / 4 + 1, |slot| slot.hash);
            }
        }
        true
    }

    fn sweep(&mut self, now: u64) {
        self.map.retain(|slot| slot.entry.expires_at > now);
        self.inserted = 0;
    }

    /// Drops an expired entry among a few, one that equals a fresh state
    /// and that a sweep would drop anyway; false when none of them has
    /// expired.
    fn evict_one(&mut self, now: u64) -> bool {
        let victim = self
            .map
            .iter()
            .take(8)
            .find(|slot| slot.entry.expires_at <= now)
            .map(|slot| (slot.hash, slot.id.clone()));
        let Some((hash, id)) = victim else {
            return false;
        };
        match self
            .map
            .find_entry(hash, |slot| slot.hash == hash && slot.id == id)
        {
            Ok(found) => {
                found.remove();
                true
            }
            Err(_) => false,
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
            clock: Clock::Monotonic,
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

    /// The most keys kept (default [`DEFAULT_MAX_KEYS`]). When full, a key
    /// whose state equals a fresh one is forgotten to make room; a key
    /// that is blocked or has used any of its limit is never forgotten
    /// before its state is fresh again. When no key can be forgotten, a new
    /// key's check is decided by the limiter's
    /// [`FailurePolicy`](crate::FailurePolicy) ([`Error::StoreFull`] with
    /// [`FailurePolicy::Error`](crate::FailurePolicy::Error)); keys already
    /// held are decided as always.
    ///
    /// [`Error::StoreFull`]: crate::Error::StoreFull
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The number of shards, rounded up to a power of two (default: 16 per
    /// CPU).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1).next_power_of_two();
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let shards: Box<[Shard]> = (0..self.shards).map(|_| Shard::default()).collect();
        MemoryStore {
            inner: Arc::new(Inner {
                max_keys_per_shard: self.max_keys.div_ceil(self.shards).max(1),
                shards,
                hasher: foldhash::quality::RandomState::default(),
                time: match self.clock {
                    Clock::Monotonic => Time::Monotonic(MONOTONIC.now()),
                    Clock::Manual(clock) => Time::Manual(clock),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limit, Limiter};

    #[test]
    fn a_full_table_drops_expired_keys_before_it_grows() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .clock(Clock::Manual(clock.clone()))
            .shards(1)
            .build();
        let limiter = Limiter::builder("sweep")
            .limit(Limit::fixed_window(5, Duration::from_secs(1)).expect("limit"))
            .store(store.clone())
            .build()
            .expect("limiter");
        let check = |key: &str| {
            let decision = limiter.check_now(key, 1).expect("a memory store");
            assert!(decision.expect("a valid check").allowed);
        };
        for i in 0..1_000 {
            check(&format!("old-{i}"));
        }
        assert_eq!(store.len(), 1_000);
        clock.advance(Duration::from_secs(2));
        // A known key's expired entry is reused, not added again.
        check("old-0");
        assert_eq!(store.len(), 1_000);
        for i in 0..1_000 {
            check(&format!("new-{i}"));
        }
        // Without the sweep the table would hold all 2,000.
        let held = store.len();
        assert!((1_000..2_000).contains(&held), "{held} keys held");
    }
}
