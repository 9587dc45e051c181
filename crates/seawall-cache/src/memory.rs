//! The in-process tier (L1): moka, bounded by entries or by bytes, holding
//! decoded values so a hit costs no decoding.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use parking_lot::Mutex;
use smol_str::SmolStr;

use crate::codec::Meta;
use crate::glob;
use crate::stats::{ClassCounters, bump};

/// How L1 is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum L1Capacity {
    /// At most this many entries.
    Entries(u64),
    /// At most about this many bytes: each entry weighs its key, its encoded
    /// value and a fixed overhead.
    Bytes(u64),
}

/// The fixed weight of an entry besides its key and value.
const ENTRY_OVERHEAD: usize = 96;

/// A decoded value (or a cached "not found") with its header. moka holds it
/// inline and a read clones it out: the header is read where moka keeps the
/// entry, and the one pointer followed is the value's, so a hit touches two
/// places in memory, not three as an `Arc` around the header would.
#[derive(Clone)]
pub(crate) struct Entry {
    /// `None` for a cached "not found".
    pub(crate) value: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) meta: Meta,
    /// Until when L1 may answer with it without asking L2 (Unix ms): the
    /// value's freshness, capped by the class's L1 TTL.
    pub(crate) l1_fresh_until_ms: u64,
    /// `None` when untagged, so that a read of an untagged entry touches no
    /// tag list.
    tags: Option<Arc<[String]>>,
    weight: u32,
}

impl Entry {
    pub(crate) fn new(
        value: Option<Arc<dyn Any + Send + Sync>>,
        meta: Meta,
        l1_fresh_until_ms: u64,
        tags: Vec<String>,
        encoded_len: usize,
    ) -> Self {
        let tag_bytes: usize = tags.iter().map(String::len).sum();
        let weight = u32::try_from(encoded_len + tag_bytes + ENTRY_OVERHEAD).unwrap_or(u32::MAX);
        Self {
            value,
            meta,
            l1_fresh_until_ms: l1_fresh_until_ms.min(meta.fresh_until_ms),
            tags: (!tags.is_empty()).then(|| Arc::from(tags)),
            weight,
        }
    }

    /// The tags it was stored with.
    pub(crate) fn tags(&self) -> &[String] {
        self.tags.as_deref().unwrap_or_default()
    }
}

/// A key as L1 holds it: up to 23 bytes inline, so that comparing it during
/// a lookup reads the allocation moka keeps the key in and nothing further
/// (a `String` would point to a second one).
type Key = SmolStr;

/// Seeded per cache, as keys may come from clients; cheaper per lookup than
/// the standard library's SipHash.
type Hasher = foldhash::quality::RandomState;

pub(crate) struct MemoryTier {
    cache: moka::sync::Cache<Key, Entry, Hasher>,
    by_bytes: bool,
    tags: Mutex<TagIndex>,
}

/// moka refuses a time to live above a thousand years; no window is meant
/// to last a century.
const LONGEST_KEEP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Listed (tag, key) pairs below which the index is never pruned.
const PRUNE_FLOOR: usize = 4_096;

/// The keys inserted with each tag, so that dropping a tag removes just
/// those keys. (moka's `invalidate_entries_if` would register a predicate
/// that every read then checks until a scan of the whole cache retires
/// it: with a tag dropped on every write, reads slowed down with the write
/// rate.) It lists a superset: a key evicted, or replaced by an entry
/// without the tag, stays listed until its tag is dropped or the index is
/// pruned, which happens whenever the pairs listed have doubled since the
/// last prune.
#[derive(Default)]
struct TagIndex {
    keys: HashMap<String, HashSet<String>>,
    listed: usize,
    listed_after_prune: usize,
}

impl MemoryTier {
    /// An L1 of `capacity` whose entries are dropped at the latest `keep`
    /// after they were stored: the longest any class's value may stand in
    /// for a failed load. Every read checks an entry's own freshness and
    /// stale window, so this bound only frees memory. (A per-entry expiry
    /// would free an entry at the end of its own window, but moka then runs
    /// an expiry callback on every read, which cost a seventh of an L1 hit.)
    pub(crate) fn new(
        capacity: L1Capacity,
        counters: Arc<[ClassCounters]>,
        keep: Duration,
    ) -> Self {
        let listener = move |_: Arc<Key>, entry: Entry, cause: RemovalCause| {
            if cause == RemovalCause::Size
                && let Some(class) = counters.get(usize::from(entry.meta.class))
            {
                bump(&class.evictions);
            }
        };
        let builder = moka::sync::Cache::builder()
            .time_to_live(keep.clamp(Duration::from_millis(1), LONGEST_KEEP))
            .eviction_listener(listener);
        let (cache, by_bytes) = match capacity {
            L1Capacity::Entries(entries) => (
                builder
                    .max_capacity(entries)
                    .build_with_hasher(Hasher::default()),
                false,
            ),
            L1Capacity::Bytes(bytes) => (
                builder
                    .max_capacity(bytes)
                    .weigher(|key: &Key, entry: &Entry| {
                        u32::try_from(key.len())
                            .unwrap_or(u32::MAX)
                            .saturating_add(entry.weight)
                    })
                    .build_with_hasher(Hasher::default()),
                true,
            ),
        };
        Self {
            cache,
            by_bytes,
            tags: Mutex::new(TagIndex::default()),
        }
    }

    /// Whether entries need their encoded size to be weighed.
    pub(crate) fn by_bytes(&self) -> bool {
        self.by_bytes
    }

    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        self.cache.get(key)
    }

    pub(crate) fn insert(&self, key: &str, entry: Entry) {
        if entry.tags.is_none() {
            self.cache.insert(Key::new(key), entry);
            return;
        }
        // The entry goes in under the index's lock, so that a prune (which
        // keeps only keys the cache holds) never meets a key listed but
        // not inserted yet.
        let mut index = self.tags.lock();
        if index.listed >= 2 * index.listed_after_prune.max(PRUNE_FLOOR) {
            let cache = &self.cache;
            index.keys.retain(|_, keys| {
                keys.retain(|key| cache.contains_key(key.as_str()));
                !keys.is_empty()
            });
            index.listed = index.keys.values().map(HashSet::len).sum();
            index.listed_after_prune = index.listed;
        }
        for tag in entry.tags() {
            if index
                .keys
                .entry(tag.clone())
                .or_default()
                .insert(key.to_owned())
            {
                index.listed += 1;
            }
        }
        self.cache.insert(Key::new(key), entry);
    }

    pub(crate) fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Removes every entry inserted with `tag` before this call. An entry
    /// inserted while it runs may stay: the caller's load guards (the
    /// invalidation epoch) keep a value read before the invalidation out.
    pub(crate) fn remove_tagged(&self, tag: &str) {
        let keys = {
            let mut index = self.tags.lock();
            let keys = index.keys.remove(tag).unwrap_or_default();
            index.listed -= keys.len();
            keys
        };
        for key in keys {
            if self
                .cache
                .get(key.as_str())
                .is_some_and(|entry| entry.tags().iter().any(|t| t == tag))
            {
                self.cache.invalidate(key.as_str());
            }
        }
    }

    /// Removes every entry whose key matches `pattern` that the cache
    /// holds when this runs, one by one: a pass over L1, so a sweep costs
    /// time in proportion to L1's size. (moka's `invalidate_entries_if`
    /// costs nothing up front, but an entry written just before, or while
    /// its housekeeping ran, now and then stayed readable after the call:
    /// about 1 in 600 sweeps under traffic on other keys.) An entry
    /// inserted while it runs may stay, as with [`remove_tagged`](Self::remove_tagged).
    pub(crate) fn remove_matching(&self, pattern: &str) {
        let pattern = pattern.as_bytes();
        for (key, _) in &self.cache {
            if glob::matches(pattern, key.as_bytes()) {
                self.cache.invalidate(key.as_str());
            }
        }
    }

    pub(crate) fn clear(&self) {
        self.cache.invalidate_all();
        *self.tags.lock() = TagIndex::default();
    }

    pub(crate) fn sizes(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// Applies pending writes and evictions now (moka batches them).
    pub(crate) fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ClassCounters;

    fn tier() -> MemoryTier {
        let counters: Arc<[ClassCounters]> = (0..1).map(|_| ClassCounters::default()).collect();
        MemoryTier::new(
            L1Capacity::Entries(100_000),
            counters,
            Duration::from_secs(3600),
        )
    }

    fn entry(tags: &[&str]) -> Entry {
        let now = crate::inner::now_ms();
        let meta = Meta {
            created_ms: now,
            fresh_until_ms: now + 60_000,
            stale_until_ms: now + 120_000,
            delta_ms: 0,
            class: 0,
            negative: false,
        };
        let tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
        Entry::new(Some(Arc::new(1_u8)), meta, now + 60_000, tags, 1)
    }

    #[test]
    fn a_tag_removes_its_entries_and_no_other() {
        let tier = tier();
        tier.insert("a", entry(&["user:1"]));
        tier.insert("b", entry(&["user:1", "stats"]));
        tier.insert("c", entry(&["user:2"]));
        tier.insert("d", entry(&[]));
        // Replaced without the tag: the listing is stale, the entry stays.
        tier.insert("e", entry(&["user:1"]));
        tier.insert("e", entry(&["user:2"]));
        tier.remove_tagged("user:1");
        for (key, kept) in [
            ("a", false),
            ("b", false),
            ("c", true),
            ("d", true),
            ("e", true),
        ] {
            assert_eq!(tier.get(key).is_some(), kept, "{key}");
        }
        // Listed again once inserted again with the tag.
        tier.insert("a", entry(&["user:1"]));
        tier.remove_tagged("user:1");
        assert!(tier.get("a").is_none());
        tier.remove_tagged("user:2");
        assert!(tier.get("c").is_none() && tier.get("e").is_none());
        tier.remove_tagged("no such tag");
    }

    #[test]
    fn keys_inline_or_not_are_found_removed_and_dropped_by_tag_and_pattern() {
        let tier = tier();
        let short = "user:7";
        let long = "review:today:user:7:category:mathematics:limit:20";
        assert!(short.len() <= 23 && long.len() > 23);
        for key in [short, long] {
            tier.insert(key, entry(&[]));
            assert!(tier.get(key).is_some(), "{key}");
            tier.remove(key);
            assert!(tier.get(key).is_none(), "{key}");
            tier.insert(key, entry(&["user:7"]));
        }
        tier.remove_tagged("user:7");
        assert!(tier.get(short).is_none() && tier.get(long).is_none());
        tier.insert(short, entry(&[]));
        tier.insert(long, entry(&[]));
        tier.remove_matching("review:*");
        tier.sync();
        assert!(tier.get(short).is_some() && tier.get(long).is_none());
    }

    /// A pattern drops every matching entry the cache holds when it is
    /// applied, whatever the cache's housekeeping is doing meanwhile (other
    /// threads inserting and reading other keys).
    #[test]
    fn a_pattern_drops_every_matching_entry_under_concurrent_traffic() {
        let tier = Arc::new(tier());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..2)
            .map(|thread| {
                let (tier, stop) = (Arc::clone(&tier), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut i = 0_u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let key = format!("other:{thread}:{}", i % 512);
                        tier.insert(&key, entry(&[]));
                        let _ = tier.get(&key);
                        i += 1;
                    }
                })
            })
            .collect();
        let mut missed = Vec::new();
        for round in 0..3000 {
            let key = format!("today:{round}:\\*:100");
            tier.insert(&key, entry(&["user:5"]));
            for _ in 0..5 {
                assert!(tier.get(&key).is_some());
            }
            tier.remove_matching("today:*");
            if tier.get(&key).is_some() {
                missed.push(round);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in busy {
            thread.join().expect("the busy thread ends");
        }
        assert!(
            missed.is_empty(),
            "{} of 3000 sweeps left their entry: {missed:?}",
            missed.len()
        );
    }

    #[test]
    fn the_index_is_pruned_of_keys_the_cache_no_longer_holds() {
        let tier = tier();
        for i in 0..3 * PRUNE_FLOOR {
            let key = format!("k{i}");
            tier.insert(&key, entry(&[&format!("tag:{i}")]));
            tier.remove(&key);
        }
        let index = tier.tags.lock();
        assert!(
            index.listed < 2 * PRUNE_FLOOR && index.keys.len() == index.listed,
            "{} pairs listed for {} tags",
            index.listed,
            index.keys.len()
        );
    }
}
