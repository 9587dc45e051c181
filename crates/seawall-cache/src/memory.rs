//! The in-process tier (L1): moka, bounded by entries or by bytes, holding
//! decoded values so a hit costs no decoding.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;

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

/// A decoded value (or a cached "not found") with its header.
pub(crate) struct Entry {
    /// `None` for a cached "not found".
    pub(crate) value: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) meta: Meta,
    /// Until when L1 may answer with it without asking L2 (Unix ms): the
    /// value's freshness, capped by the class's L1 TTL.
    pub(crate) l1_fresh_until_ms: u64,
    pub(crate) tags: Box<[String]>,
    weight: u32,
}

impl Entry {
    pub(crate) fn new(
        value: Option<Arc<dyn Any + Send + Sync>>,
        meta: Meta,
        l1_fresh_until_ms: u64,
        tags: Box<[String]>,
        encoded_len: usize,
    ) -> Self {
        let tag_bytes: usize = tags.iter().map(String::len).sum();
        let weight = u32::try_from(encoded_len + tag_bytes + ENTRY_OVERHEAD).unwrap_or(u32::MAX);
        Self {
            value,
            meta,
            l1_fresh_until_ms: l1_fresh_until_ms.min(meta.fresh_until_ms),
            tags,
            weight,
        }
    }
}

/// Expires an entry when it may no longer stand in for a failed load.
struct UntilStale;

impl moka::Expiry<String, Arc<Entry>> for UntilStale {
    fn expire_after_create(&self, _: &String, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(Duration::from_millis(
            entry.meta.stale_until_ms.saturating_sub(crate::now_ms()),
        ))
    }

    fn expire_after_update(
        &self,
        key: &String,
        entry: &Arc<Entry>,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, entry, at)
    }
}

pub(crate) struct MemoryTier {
    cache: moka::sync::Cache<String, Arc<Entry>>,
    by_bytes: bool,
}

impl MemoryTier {
    pub(crate) fn new(capacity: L1Capacity, counters: Arc<[ClassCounters]>) -> Self {
        let listener = move |_: Arc<String>, entry: Arc<Entry>, cause: RemovalCause| {
            if cause == RemovalCause::Size
                && let Some(class) = counters.get(usize::from(entry.meta.class))
            {
                bump(&class.evictions);
            }
        };
        let builder = moka::sync::Cache::builder()
            .expire_after(UntilStale)
            .support_invalidation_closures()
            .eviction_listener(listener);
        let (cache, by_bytes) = match capacity {
            L1Capacity::Entries(entries) => (builder.max_capacity(entries).build(), false),
            L1Capacity::Bytes(bytes) => (
                builder
                    .max_capacity(bytes)
                    .weigher(|key: &String, entry: &Arc<Entry>| {
                        u32::try_from(key.len())
                            .unwrap_or(u32::MAX)
                            .saturating_add(entry.weight)
                    })
                    .build(),
                true,
            ),
        };
        Self { cache, by_bytes }
    }

    /// Whether entries need their encoded size to be weighed.
    pub(crate) fn by_bytes(&self) -> bool {
        self.by_bytes
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    pub(crate) fn insert(&self, key: &str, entry: Entry) {
        self.cache.insert(key.to_owned(), Arc::new(entry));
    }

    pub(crate) fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }

    pub(crate) fn remove_tagged(&self, tag: &str) {
        let tag = tag.to_owned();
        // Fails only without `support_invalidation_closures`, set above.
        let _ = self
            .cache
            .invalidate_entries_if(move |_, entry| entry.tags.contains(&tag));
    }

    pub(crate) fn remove_matching(&self, pattern: &str) {
        let pattern = pattern.as_bytes().to_vec();
        let _ = self
            .cache
            .invalidate_entries_if(move |key, _| glob::matches(&pattern, key.as_bytes()));
    }

    pub(crate) fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub(crate) fn sizes(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// Applies pending writes and evictions now (moka batches them).
    pub(crate) fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}
