//! Hot keys: which keys the readers of each class ask for most, learned
//! from a sample of [`get_or_load`](crate::TieredCache::get_or_load) calls
//! into a space-saving ranking per class, merged every few seconds into a
//! ranking whose counts decay with a half-life, kept in process and, with
//! Redis, in a sorted set per class that every instance adds to and that
//! outlives them. A warm-up after a start, a failover or a clear loads the
//! top of it (see [`TieredCache::hot_keys`](crate::TieredCache::hot_keys)).
//!
//! # Candidates
//!
//! A ranking that kept only its `capacity` hottest keys would let no new
//! key in once full: each merge brings a newcomer one interval's reads,
//! compared with the decayed reads the tail gathered over many intervals
//! (a key read steadily holds about 520 intervals' worth at the defaults,
//! a half-life of 30 minutes and a merge every 5 seconds), so the newcomer
//! would be trimmed at every merge and never gather more.
//!
//! The ranking therefore holds up to twice its capacity and reports the
//! `capacity` keys with the most decayed reads; the others are candidates,
//! kept by a second score, their recent reads. Every merge that brings
//! reads halves every key's recent reads, then raises each key it counted
//! to what it brought for the key if that is more: about what a key gets
//! in one interval now, whatever it gathered before. When the ranking
//! holds more than twice its capacity, a merge keeps the `capacity` keys
//! with the most decayed reads and, of the others, the `capacity` with the
//! most recent reads. Memory stays bounded, and a key among the hottest
//! by either measure is never dropped: a key read a lot now stays a
//! candidate, gathering decayed reads from merge to merge until it passes
//! the tail of the reported keys, while a candidate read long ago and not
//! since gives its place to a newcomer within a few merges. A newcomer passes a
//! key that went cold once its gathered reads exceed the cold key's
//! decayed ones (1,000 reads by 100 a merge: the 11th merge); it passes a
//! key still read, at a lower rate, the later the closer the rates, as
//! decayed counts do (at twice the rate, after about a half-life).
//!
//! With Redis the shared sorted set keeps its candidates the same way (see
//! the `HOT` script of the Redis tier), its recent reads halving at every
//! instance's addition.

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
    /// The most keys reported per class (1 to 100,000). The ranking holds
    /// up to twice as many, the others being candidates (keys read lately
    /// that have yet to gather the reads of the reported ones; see
    /// [`HotKey`]).
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
    /// forgets, so a key that went cold gives way to one that is hot now,
    /// once the newcomer's reads (gathered while it is a candidate) pass
    /// the cold key's decayed ones.
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
///
/// A class's ranking reports its `capacity` keys with the most reads, and
/// holds up to as many candidates besides: keys read a lot in the last few
/// merges, which gather reads there until they pass the reported keys'
/// tail (see [`HotKeyOptions::capacity`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HotKey {
    /// The key.
    pub key: String,
    /// Reads estimated for it (sampled reads times the sampling interval),
    /// each counting half after a half-life.
    pub reads: f64,
}

/// What one class's ranking knows of a key.
#[derive(Debug, Clone, Copy, Default)]
struct Score {
    /// Reads, decayed by the half-life: what the ranking reports.
    reads: f64,
    /// The most reads one merge brought for the key lately, halved at
    /// every merge that brings reads: what keeps a candidate.
    recent: f64,
}

/// One class's ranking with decayed counts: at most twice the capacity
/// after a merge or an addition.
#[derive(Debug)]
struct Learned {
    scores: HashMap<String, Score>,
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
                        scores: HashMap::new(),
                        at: now,
                    })
                })
                .collect(),
            options,
        }
    }

    /// Adds `keys` (reads that are neither finite nor positive are left
    /// out) to the class's ranking here, as reads but not recent ones: what
    /// an earlier process learned.
    pub(crate) fn add(&self, class: usize, keys: &[HotKey]) {
        let Some(learned) = self.learned.get(class) else {
            return;
        };
        let mut learned = learned.lock();
        for hot in keys
            .iter()
            .filter(|hot| hot.reads.is_finite() && hot.reads > 0.0)
        {
            learned.scores.entry(hot.key.clone()).or_default().reads += hot.reads;
        }
        trim(&mut learned.scores, self.options.capacity);
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
    /// ranking here, as decayed and as recent reads (see the module's
    /// docs); returns them, for Redis.
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
        if factor < 1.0 || !counts.is_empty() {
            let recent = if counts.is_empty() { 1.0 } else { 0.5 };
            learned.scores.values_mut().for_each(|score| {
                score.reads *= factor;
                score.recent *= recent;
            });
        }
        for count in &counts {
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            let reads = count.count as f64;
            let score = learned.scores.entry(count.key.clone()).or_default();
            score.reads += reads;
            score.recent = score.recent.max(reads);
        }
        trim(&mut learned.scores, self.options.capacity);
        counts
    }

    /// The class's `n` hottest keys learned here (at most the capacity:
    /// candidates are never reported), the hottest first.
    pub(crate) fn top(&self, class: usize, n: usize) -> Vec<HotKey> {
        let Some(learned) = self.learned.get(class) else {
            return Vec::new();
        };
        let learned = learned.lock();
        let mut ranked: Vec<HotKey> = learned
            .scores
            .iter()
            .map(|(key, score)| HotKey {
                key: key.clone(),
                reads: score.reads,
            })
            .collect();
        ranked.sort_by(|a, b| b.reads.total_cmp(&a.reads).then_with(|| a.key.cmp(&b.key)));
        ranked.truncate(n.min(self.options.capacity));
        ranked
    }

    /// How many classes it learns for.
    pub(crate) fn classes(&self) -> usize {
        self.fresh.len()
    }
}

/// Once `scores` holds more than twice `capacity` keys, keeps the
/// `capacity` with the most reads and, of the others, the `capacity` with
/// the most recent reads (ties go to the smaller key).
fn trim(scores: &mut HashMap<String, Score>, capacity: usize) {
    if capacity == 0 || scores.len() <= capacity.saturating_mul(2) {
        return;
    }
    let mut ranked: Vec<(String, Score)> = scores.drain().collect();
    ranked.select_nth_unstable_by(capacity - 1, |a, b| {
        b.1.reads.total_cmp(&a.1.reads).then_with(|| a.0.cmp(&b.0))
    });
    ranked[capacity..].select_nth_unstable_by(capacity - 1, |a, b| {
        b.1.recent
            .total_cmp(&a.1.recent)
            .then_with(|| a.0.cmp(&b.0))
    });
    ranked.truncate(2 * capacity);
    *scores = ranked.into_iter().collect();
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

    /// Records `key` `times` times in class 0.
    fn read(learner: &Learner, key: &str, times: u32) {
        for _ in 0..times {
            learner.record(Class(0), key);
        }
    }

    /// The keys class 0 reports, the hottest first.
    fn ranked(learner: &Learner) -> Vec<String> {
        learner
            .top(0, usize::MAX)
            .into_iter()
            .map(|hot| hot.key)
            .collect()
    }

    /// How many keys class 0's ranking holds, candidates included.
    fn held(learner: &Learner) -> usize {
        learner.learned[0].lock().scores.len()
    }

    #[test]
    fn a_key_hot_now_enters_a_full_ranking() {
        let learner = Learner::new(HotKeyOptions::default().capacity(2).sample(1), 1);
        read(&learner, "a", 1_000);
        read(&learner, "b", 1_000);
        learner.merge(0);
        for _ in 0..20 {
            read(&learner, "c", 100);
            learner.merge(0);
        }
        let top = learner.top(0, 2);
        assert_eq!(top[0].key, "c", "{top:?}");
        assert!((1_990.0..=2_000.0).contains(&top[0].reads), "{top:?}");
    }

    #[test]
    fn keys_read_long_ago_do_not_keep_a_key_hot_now_out() {
        // Twelve keys read before, two of them reported; the ten others
        // gathered five times what the newcomer gets in one merge.
        let learner = Learner::new(HotKeyOptions::default().capacity(2).sample(1), 1);
        read(&learner, "a", 1_000);
        read(&learner, "b", 1_000);
        learner.merge(0);
        for tail in 0..10 {
            read(&learner, &format!("tail:{tail}"), 500);
            learner.merge(0);
        }
        assert_eq!(held(&learner), 4);
        for _ in 0..20 {
            read(&learner, "c", 100);
            learner.merge(0);
            assert!(held(&learner) <= 4, "{}", held(&learner));
        }
        let top = learner.top(0, 2);
        assert_eq!(top[0].key, "c", "{top:?}");
        assert!(!ranked(&learner).iter().any(|key| key.starts_with("tail:")));
    }

    #[test]
    fn a_key_that_stays_hot_stays_while_newcomers_and_one_off_keys_come() {
        let learner = Learner::new(HotKeyOptions::default().capacity(4).sample(1), 1);
        for key in ["old:1", "old:2", "old:3"] {
            read(&learner, key, 1_000);
        }
        read(&learner, "steady", 300);
        learner.merge(0);
        for _ in 0..4 {
            read(&learner, "steady", 300);
            learner.merge(0);
        }
        assert_eq!(ranked(&learner)[0], "steady");
        // Four keys a merge, as many as the sample counts: the steady key
        // read less than before, a newcomer read more, two keys read once.
        for round in 0..20 {
            read(&learner, "new", 200);
            read(&learner, "steady", 100);
            read(&learner, &format!("once:{round}:a"), 1);
            read(&learner, &format!("once:{round}:b"), 1);
            learner.merge(0);
            let ranked = ranked(&learner);
            assert!(ranked.contains(&"steady".to_owned()), "{ranked:?}");
            assert!(!ranked.iter().any(|key| key.starts_with("once:")));
            assert!(held(&learner) <= 8, "{}", held(&learner));
        }
        let top = learner.top(0, 2);
        let keys: Vec<&str> = top.iter().map(|hot| hot.key.as_str()).collect();
        assert_eq!(keys, ["new", "steady"], "{top:?}");
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
