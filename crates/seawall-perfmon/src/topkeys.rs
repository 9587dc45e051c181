//! The keys seen most, in bounded memory: the space-saving algorithm
//! (Metwally, Agrawal and El Abbadi, 2005), and a cheap random sampler to
//! feed it from a hot path.

use std::cell::Cell;
use std::collections::HashMap;

/// A key with its estimated count in a [`TopKeys`] ranking.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyCount {
    /// The key.
    pub key: String,
    /// Its count: what was added for it, plus at most `overcount`.
    pub count: u64,
    /// How much of `count` it inherited from the key it displaced: the
    /// true count lies between `count - overcount` and `count`.
    pub overcount: u64,
}

/// The most frequent keys of a stream in a fixed number of counters (the
/// space-saving algorithm). A key not yet counted takes over the smallest
/// counter once all are in use and inherits its count as possible
/// overcount: a key whose true count exceeds the total over the number of
/// counters is always kept, and memory never grows past the capacity.
///
/// Adding a counted key is a hash lookup; a new key, once the counters are
/// full, scans them for the smallest. Not synchronised: wrap it in a lock,
/// and feed it a sample (see [`one_in`]) where every call is too many.
///
/// ```
/// use seawall_perfmon::TopKeys;
///
/// let mut top = TopKeys::new(2);
/// for key in ["a", "b", "a", "c", "a"] {
///     top.add(key, 1);
/// }
/// let ranking = top.ranking();
/// assert_eq!(ranking[0].key, "a");
/// assert_eq!(ranking[0].count, 3);
/// assert_eq!(ranking.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct TopKeys {
    capacity: usize,
    counters: Vec<KeyCount>,
    /// Key → its place in `counters`.
    index: HashMap<String, usize>,
}

impl TopKeys {
    /// An empty ranking of at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            counters: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// How many keys it keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether nothing was added since it was made or last taken.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Counts `weight` more for `key`.
    pub fn add(&mut self, key: &str, weight: u64) {
        if let Some(&at) = self.index.get(key) {
            let counter = &mut self.counters[at];
            counter.count = counter.count.saturating_add(weight);
            return;
        }
        if self.counters.len() < self.capacity {
            self.index.insert(key.to_owned(), self.counters.len());
            self.counters.push(KeyCount {
                key: key.to_owned(),
                count: weight,
                overcount: 0,
            });
            return;
        }
        let Some((at, _)) = self
            .counters
            .iter()
            .enumerate()
            .min_by_key(|(_, counter)| counter.count)
        else {
            return;
        };
        let smallest = &mut self.counters[at];
        self.index.remove(&smallest.key);
        smallest.overcount = smallest.count;
        smallest.count = smallest.count.saturating_add(weight);
        key.clone_into(&mut smallest.key);
        self.index.insert(key.to_owned(), at);
    }

    /// The keys, the most frequent first (ties by key).
    pub fn ranking(&self) -> Vec<KeyCount> {
        let mut ranking = self.counters.clone();
        sort(&mut ranking);
        ranking
    }

    /// The ranking, leaving this one empty: what was counted since the
    /// last take, for a caller that merges it elsewhere.
    pub fn take(&mut self) -> Vec<KeyCount> {
        self.index.clear();
        let mut ranking = std::mem::take(&mut self.counters);
        sort(&mut ranking);
        ranking
    }
}

fn sort(ranking: &mut [KeyCount]) {
    ranking.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
}

/// True about once in `n` calls (always for `n` ≤ 1), drawn at random on
/// a thread-local xorshift state: one multiply-free step, no lock, no
/// system call. Random rather than every `n`th call, so that a thread that
/// records several streams in a fixed order samples each of them.
///
/// ```
/// let sampled = (0..32_000).filter(|_| seawall_perfmon::one_in(32)).count();
/// assert!((500..1_500).contains(&sampled));
/// ```
#[inline]
pub fn one_in(n: u32) -> bool {
    thread_local! {
        static STATE: Cell<u32> = const { Cell::new(0x9E37_79B9) };
    }
    if n <= 1 {
        return true;
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        state.set(x);
        x % n == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranking_keeps_the_heavy_hitters_in_bounded_memory() {
        let mut top = TopKeys::new(32);
        for round in 0..1000 {
            top.add("heavy", 1);
            if round % 2 == 0 {
                top.add("medium", 1);
            }
            top.add(&format!("noise-{round}"), 1);
        }
        let ranking = top.ranking();
        assert_eq!(ranking.len(), 32);
        assert_eq!(ranking[0].key, "heavy");
        assert!(ranking[0].count >= 1000);
        assert!(ranking.iter().any(|k| k.key == "medium" && k.count >= 500));
        // The index follows every takeover.
        assert_eq!(top.index.len(), 32);
        for (at, counter) in top.counters.iter().enumerate() {
            assert_eq!(top.index[&counter.key], at);
        }
    }

    #[test]
    fn a_displaced_count_is_overcount_and_a_take_empties_it() {
        let mut top = TopKeys::new(1);
        top.add("a", 5);
        top.add("b", 2);
        assert_eq!(
            top.ranking(),
            [KeyCount {
                key: "b".into(),
                count: 7,
                overcount: 5
            }]
        );
        assert_eq!(top.take().len(), 1);
        assert!(top.is_empty());
        top.add("c", 1);
        assert_eq!(top.ranking()[0].overcount, 0);
    }
}
