//! Hot keys: which keys the readers of each class ask for most, learned
//! from a sample of [`get_or_load`](crate::TieredCache::get_or_load) calls
//! into a space-saving ranking per class, merged every few seconds into a
//! ranking whose counts decay with a half-life, kept in process and, with
//! Redis, in a sorted set per class that every instance adds to and that
//! outlives them. A warm-up after a start, a failover or a clear loads the
//! top of it (see [`TieredCache::hot_keys`](crate::TieredCache::hot_keys)).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_perfmon::{KeyCount, TopKeys, one_in};

use crate::class::Class;
use crate::error::{Error, Result};

/// How a cache learns its hot keys; see
/// [`TieredCacheBuilder::learn_hot_keys`](crate::TieredCacheBuilder::learn_hot_keys).
///
/// ```
/// use std::time::Duration;
/// use seawall_cache::HotKeyOptions;
///
/// let options = HotKeyOptions::default()
///     .capacity(2_000)
///     .sample(4)
///     .half_life(Duration::from_secs(600));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct HotKeyOptions {
    pub(crate) capacity: usize,
    pub(crate) sample: u32,
    pub(crate) half_life: Duration,
    pub(crate) merge_every: Duration,
}

impl Default for HotKeyOptions {
    /// 1,000 keys per class, one read in 8, a half-life of 30 minutes,
    /// merged every 5 seconds.
    fn default() -> Self {
        Self {
            capacity: 1_000,
            sample: 8,
            half_life: Duration::from_secs(30 * 60),
            merge_every: Duration::from_secs(5),
        }
    }
}

impl HotKeyOptions {
    /// The most keys learned per class (1 to 100,000).
    #[must_use]
    pub fn capacity(mut self, keys: usize) -> Self {
        self.capacity = keys;
        self
    }

    /// Counts one read in `n` (at random; 1 counts every read): the cost
    /// on a read is one thread-local random draw, and a lock on the
    /// class's ranking for the sampled ones.
    #[must_use]
    pub fn sample(mut self, n: u32) -> Self {
        self.sample = n.max(1);
        self
    }

    /// How long until a key's learned reads count half: what the ranking
    /// forgets, so a key that went cold gives way to one that is hot now.
    #[must_use]
    pub fn half_life(mut self, half_life: Duration) -> Self {
        self.half_life = half_life;
        self
    }

    /// How often the sampled reads are merged into the ranking (and, with
    /// Redis, sent there): at least 10 ms.
    #[must_use]
    pub fn merge_every(mut self, every: Duration) -> Self {
        self.merge_every = every;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(1..=100_000).contains(&self.capacity) {
            return Err(Error::Config(format!(
                "a hot-key capacity is 1 to 100,000 keys, not {}",
                self.capacity
            )));
        }
        if self.half_life < Duration::from_secs(1) || self.merge_every < Duration::from_millis(10) {
            return Err(Error::Config(
                "a hot-key half-life is at least a second, and the merge interval at least 10 ms"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A key and about how often it was read, decayed by the half-life.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HotKey {
    /// The key.
    pub key: String,
    /// Reads estimated for it (sampled reads times the sampling interval),
    /// each counting half after a half-life.
    pub reads: f64,
}

/// One class's ranking with decayed counts.
#[derive(Debug)]
struct Learned {
    reads: HashMap<String, f64>,
    at: Instant,
}

/// What a cache learns, per class (by the class's index).
pub(crate) struct Learner {
    pub(crate) options: HotKeyOptions,
    /// Sampled reads since the last merge.
    fresh: Box<[Mutex<TopKeys>]>,
    learned: Box<[Mutex<Learned>]>,
}

impl Learner {
    pub(crate) fn new(options: HotKeyOptions, classes: usize) -> Self {
        let now = Instant::now();
        Self {
            fresh: (0..classes)
                .map(|_| Mutex::new(TopKeys::new(options.capacity)))
                .collect(),
            learned: (0..classes)
                .map(|_| {
                    Mutex::new(Learned {
                        reads: HashMap::new(),
                        at: now,
                    })
                })
                .collect(),
            options,
        }
    }

    /// Adds `keys` (reads that are neither finite nor positive are left
    /// out) to the class's ranking here.
    pub(crate) fn add(&self, class: usize, keys: &[HotKey]) {
        let Some(learned) = self.learned.get(class) else {
            return;
        };
        let mut learned = learned.lock();
        for hot in keys
            .iter()
            .filter(|hot| hot.reads.is_finite() && hot.reads > 0.0)
        {
            *learned.reads.entry(hot.key.clone()).or_default() += hot.reads;
        }
        trim(&mut learned.reads, self.options.capacity);
    }

    /// Counts a read of `key` in `class`, one in the sampling interval. A
    /// ranking another thread holds skips this sample rather than wait.
    #[inline]
    pub(crate) fn record(&self, class: Class, key: &str) {
        if !one_in(self.options.sample) {
            return;
        }
        if let Some(mut fresh) = self
            .fresh
            .get(usize::from(class.0))
            .and_then(Mutex::try_lock)
        {
            fresh.add(key, u64::from(self.options.sample));
        }
    }

    /// Merges the reads sampled since the last merge into the class's
    /// ranking here; returns them, for Redis.
    pub(crate) fn merge(&self, class: usize) -> Vec<KeyCount> {
        let Some(fresh) = self.fresh.get(class) else {
            return Vec::new();
        };
        // What each key surely had: a key that took a counter over
        // inherited the count of the one it displaced.
        let counts: Vec<KeyCount> = fresh
            .lock()
            .take()
            .into_iter()
            .filter_map(|mut count| {
                count.count -= count.overcount;
                count.overcount = 0;
                (count.count > 0).then_some(count)
            })
            .collect();
        let mut learned = self.learned[class].lock();
        let now = Instant::now();
        let factor = decay(now.duration_since(learned.at), self.options.half_life);
        learned.at = now;
        if factor < 1.0 {
            learned
                .reads
                .values_mut()
                .for_each(|reads| *reads *= factor);
        }
        for count in &counts {
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            let reads = count.count as f64;
            *learned.reads.entry(count.key.clone()).or_default() += reads;
        }
        trim(&mut learned.reads, self.options.capacity);
        counts
    }

    /// The class's `n` hottest keys learned here, the hottest first.
    pub(crate) fn top(&self, class: usize, n: usize) -> Vec<HotKey> {
        let Some(learned) = self.learned.get(class) else {
            return Vec::new();
        };
        let learned = learned.lock();
        let mut ranked: Vec<HotKey> = learned
            .reads
            .iter()
            .map(|(key, &reads)| HotKey {
                key: key.clone(),
                reads,
            })
            .collect();
        ranked.sort_by(|a, b| b.reads.total_cmp(&a.reads).then_with(|| a.key.cmp(&b.key)));
        ranked.truncate(n);
        ranked
    }

    /// How many classes it learns for.
    pub(crate) fn classes(&self) -> usize {
        self.fresh.len()
    }
}

/// Keeps the `capacity` keys with the most reads.
fn trim(reads: &mut HashMap<String, f64>, capacity: usize) {
    if reads.len() > capacity {
        let mut ranked: Vec<(String, f64)> = reads.drain().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(capacity);
        *reads = ranked.into_iter().collect();
    }
}

/// What a count keeps of itself after `elapsed` at `half_life`.
fn decay(elapsed: Duration, half_life: Duration) -> f64 {
    (-elapsed.as_secs_f64() / half_life.as_secs_f64()).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_ranks_the_sampled_reads_and_keeps_the_capacity() {
        let options = HotKeyOptions::default().capacity(2).sample(1);
        let learner = Learner::new(options, 2);
        for key in ["x", "y", "x", "z", "x", "y"] {
            learner.record(Class(0), key);
        }
        learner.record(Class(1), "other");
        // Two counters: z took y's over (count 2, 1 of it y's), then y took
        // z's (count 3, 2 of it z's). Only what each key surely had is
        // merged: x 3, y 1.
        let sent = learner.merge(0);
        let sent: Vec<(&str, u64)> = sent.iter().map(|c| (c.key.as_str(), c.count)).collect();
        assert_eq!(sent, [("x", 3), ("y", 1)]);
        let top = learner.top(0, 10);
        assert_eq!(top.len(), 2, "{top:?}");
        assert_eq!(top[0].key, "x");
        assert!((top[0].reads - 3.0).abs() < 1e-6, "{top:?}");
        assert_eq!(learner.top(1, 10), []);
        learner.merge(1);
        assert_eq!(learner.top(1, 10)[0].key, "other");
    }

    #[test]
    fn added_keys_join_the_ranking_and_counts_decay_by_the_half_life() {
        let learner = Learner::new(HotKeyOptions::default().capacity(2), 1);
        let hot = |key: &str, reads| HotKey {
            key: key.into(),
            reads,
        };
        learner.add(
            0,
            &[
                hot("old", 100.0),
                hot("bad", f64::NAN),
                hot("cold", 1.0),
                hot("gone", -1.0),
            ],
        );
        learner.add(0, &[hot("new", 50.0)]);
        let top = learner.top(0, 10);
        assert_eq!(top, [hot("old", 100.0), hot("new", 50.0)]);
        assert!((decay(Duration::from_secs(60), Duration::from_secs(60)) - 0.5).abs() < 1e-9);
        assert!((decay(Duration::ZERO, Duration::from_secs(60)) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn options_out_of_range_are_refused() {
        assert!(HotKeyOptions::default().capacity(0).validate().is_err());
        assert!(
            HotKeyOptions::default()
                .half_life(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(HotKeyOptions::default().validate().is_ok());
    }
}
