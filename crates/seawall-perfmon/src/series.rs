//! One latency series: per-thread shards for the current interval, a ring of
//! closed intervals for the rolling windows, and lifetime totals.
//!
//! Recording touches only the calling thread's shard, with plain relaxed loads
//! and stores (the shard has a single writer, see [`crate::slot`]). When a
//! thread records into a new interval, it first moves its shard's counts into
//! the ring under the series lock; readers take the same lock, so a count is
//! never seen twice or lost between shard and ring.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::counts::Counts;
use crate::layout::Layout;
use crate::slot::{self, PRIVATE_SLOTS};

/// Shard interval marker for "holds nothing yet".
const EMPTY: u64 = u64::MAX;

/// Tells clocks apart in the per-thread interval cache.
static CLOCK_IDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The interval this thread last recorded in: clock id, interval, and its
    /// bounds. `Instant` subtraction is an out-of-line call in std, so the hot
    /// path compares against these bounds instead of dividing elapsed time.
    static LAST_INTERVAL: Cell<Option<(u64, u64, Instant, Instant)>> = const { Cell::new(None) };
}

/// Time, cut into fixed intervals counted from the monitor's start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    id: u64,
    start: Instant,
    interval_nanos: u64,
}

impl Clock {
    pub(crate) fn new(start: Instant, interval: Duration) -> Self {
        let interval_nanos = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            id: CLOCK_IDS.fetch_add(1, Relaxed),
            start,
            interval_nanos,
        }
    }

    /// The interval that `at` falls in, from the thread's cache when it can.
    #[inline]
    pub(crate) fn interval_at(&self, at: Instant) -> u64 {
        if let Some((id, interval, from, until)) = LAST_INTERVAL.get()
            && id == self.id
            && at >= from
            && at < until
        {
            return interval;
        }
        self.interval_uncached(at)
    }

    #[cold]
    fn interval_uncached(&self, at: Instant) -> u64 {
        let interval = self.interval_of(at);
        let from = self.start + Duration::from_nanos(interval.saturating_mul(self.interval_nanos));
        let until = from + Duration::from_nanos(self.interval_nanos);
        LAST_INTERVAL.set(Some((self.id, interval, from, until)));
        interval
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    pub(crate) fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// Nanoseconds from the start to `at` (0 before the start).
    #[inline]
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start);
        // u64 nanoseconds last 584 years; plain u64 arithmetic keeps the hot path cheap.
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }

    /// The interval that `at` falls in.
    #[inline]
    pub(crate) fn interval_of(&self, at: Instant) -> u64 {
        self.nanos(at) / self.interval_nanos
    }

    /// How many whole intervals fit in `span` (at least one), so that a window
    /// never reaches further back than its span.
    pub(crate) fn intervals_in(&self, span: Duration) -> u64 {
        u64::try_from(span.as_nanos() / u128::from(self.interval_nanos))
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The time covered by the last `intervals` intervals as of `now`: whole
    /// intervals before the current one plus the elapsed part of the current one,
    /// never more than the time since the start.
    pub(crate) fn covered(&self, intervals: u64, now: Instant) -> Duration {
        let elapsed = self.nanos(now);
        let into_current = elapsed % self.interval_nanos;
        let whole = intervals
            .saturating_sub(1)
            .saturating_mul(self.interval_nanos);
        Duration::from_nanos(whole.saturating_add(into_current).min(elapsed))
    }
}

/// Counts recorded by one thread during one interval.
///
/// Aligned to 128 bytes (two cache lines, for adjacent-line prefetch) so that
/// shards of different threads, which sit side by side in one array, never
/// share a line: each thread writes `sum` on every record.
#[repr(align(128))]
struct Shard {
    /// The interval the counts belong to, or [`EMPTY`].
    interval: AtomicU64,
    sum: AtomicU64,
    chunks: Box<[OnceLock<Box<[AtomicU32]>>]>,
}

impl Shard {
    fn new(layout: &Layout) -> Self {
        Self {
            interval: AtomicU64::new(EMPTY),
            sum: AtomicU64::new(0),
            chunks: (0..layout.chunks()).map(|_| OnceLock::new()).collect(),
        }
    }

    #[inline]
    fn counter(&self, layout: &Layout, index: usize) -> Option<&AtomicU32> {
        let chunk = self.chunks.get(index >> layout.chunk_shift())?;
        let counters =
            chunk.get_or_init(|| (0..layout.chunk_len()).map(|_| AtomicU32::new(0)).collect());
        counters.get(index & (layout.chunk_len() - 1))
    }

    /// Adds one sample. `exclusive` means the caller is the shard's only writer.
    #[inline]
    fn add(&self, layout: &Layout, value: u64, exclusive: bool) {
        let value = value.min(layout.highest());
        let Some(counter) = self.counter(layout, layout.index(value)) else {
            return;
        };
        if exclusive {
            counter.store(counter.load(Relaxed).saturating_add(1), Relaxed);
            self.sum
                .store(self.sum.load(Relaxed).saturating_add(value), Relaxed);
        } else {
            // Several writers: saturate rather than wrap, as the private shards do.
            let _ = counter.fetch_update(Relaxed, Relaxed, |c| c.checked_add(1));
            let _ = self
                .sum
                .fetch_update(Relaxed, Relaxed, |s| s.checked_add(value));
        }
    }

    /// Non-zero counts as `(index, count)`.
    fn counts(&self, layout: &Layout) -> impl Iterator<Item = (usize, u64)> + '_ {
        let shift = layout.chunk_shift();
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(chunk, counters)| {
                counters.get().into_iter().flat_map(move |counters| {
                    counters
                        .iter()
                        .enumerate()
                        .filter_map(move |(offset, count)| {
                            let count = count.load(Relaxed);
                            (count > 0).then_some(((chunk << shift) + offset, u64::from(count)))
                        })
                })
            })
    }

    /// Takes every count out of the shard, leaving it empty. Swapping rather
    /// than reading and then zeroing loses nothing that a concurrent writer of
    /// the shared shard adds meanwhile.
    fn drain(&self, layout: &Layout) -> (Vec<(u32, u64)>, u64) {
        let shift = layout.chunk_shift();
        let mut counts = Vec::new();
        for (chunk, counters) in self.chunks.iter().enumerate() {
            let Some(counters) = counters.get() else {
                continue;
            };
            for (offset, count) in counters.iter().enumerate() {
                if count.load(Relaxed) > 0 {
                    let taken = count.swap(0, Relaxed);
                    if let Ok(index) = u32::try_from((chunk << shift) + offset) {
                        counts.push((index, u64::from(taken)));
                    }
                }
            }
        }
        (counts, self.sum.swap(0, Relaxed))
    }
}

/// Counts with their index, sorted by index, holding only non-zero entries.
#[derive(Debug, Default, Clone)]
struct Sparse {
    counts: Vec<(u32, u64)>,
    sum: u64,
}

impl Sparse {
    fn add(&mut self, counts: &[(u32, u64)], sum: u64) {
        self.counts.extend_from_slice(counts);
        self.counts.sort_unstable_by_key(|(index, _)| *index);
        self.counts.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = earlier.1.saturating_add(later.1);
            }
            same
        });
        self.sum = self.sum.saturating_add(sum);
    }
}

/// Closed intervals and lifetime totals, guarded by the series lock.
struct Closed {
    /// Closed intervals, oldest first; only the last `keep` intervals are kept.
    ring: Vec<(u64, Sparse)>,
    lifetime: Counts,
    lifetime_sum: u64,
}

/// Counts gathered from a series for one read.
#[derive(Debug, Clone)]
pub(crate) struct Gathered {
    /// Counts per index.
    pub(crate) counts: Counts,
    /// Sum of recorded values.
    pub(crate) sum: u64,
}

impl Gathered {
    pub(crate) fn empty(layout: &Layout) -> Self {
        Self {
            counts: Counts::new(layout),
            sum: 0,
        }
    }

    fn add(&mut self, index: usize, count: u64) {
        self.counts.add(index, count);
    }

    /// Adds another gathering's counts and sum.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.counts.merge(&other.counts);
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Number of samples.
    pub(crate) fn total(&self) -> u64 {
        self.counts.total()
    }
}

/// Whole microseconds, saturating: what a series records.
#[inline]
pub(crate) fn micros(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(duration.subsec_micros()))
}

/// One latency series.
pub(crate) struct Series {
    layout: Layout,
    clock: Clock,
    /// How many closed intervals the ring keeps (the longest window).
    keep: u64,
    private: Box<[OnceLock<Shard>]>,
    shared: Shard,
    closed: Mutex<Closed>,
}

impl Series {
    pub(crate) fn new(layout: Layout, clock: Clock, keep: u64) -> Self {
        Self {
            layout,
            clock,
            keep: keep.max(1),
            private: (0..PRIVATE_SLOTS).map(|_| OnceLock::new()).collect(),
            shared: Shard::new(&layout),
            closed: Mutex::new(Closed {
                ring: Vec::new(),
                lifetime: Counts::new(&layout),
                lifetime_sum: 0,
            }),
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    fn lock(&self) -> MutexGuard<'_, Closed> {
        self.closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `value` as observed at `at`.
    #[inline(always)] // one call frame is a measurable share of a ~7 ns record
    pub(crate) fn record(&self, value: u64, at: Instant) {
        let slot = slot::current();
        let (shard, exclusive) = match self.private.get(slot) {
            Some(cell) => (cell.get_or_init(|| Shard::new(&self.layout)), true),
            None => (&self.shared, false),
        };
        let interval = self.clock.interval_at(at);
        let current = shard.interval.load(Relaxed);
        // A sample stamped before the shard's interval (a caller's late `at`)
        // counts in the shard's interval: shards only move forward.
        if interval != current && (current == EMPTY || interval > current) {
            self.roll(shard, interval, exclusive);
        }
        shard.add(&self.layout, value, exclusive);
    }

    /// Moves a shard's counts into the ring and starts `interval`.
    #[cold]
    fn roll(&self, shard: &Shard, interval: u64, exclusive: bool) {
        let mut closed = self.lock();
        let previous = shard.interval.load(Relaxed);
        // Another writer of the shared shard may have rolled it meanwhile.
        if !exclusive && previous != EMPTY && previous >= interval {
            return;
        }
        if previous != EMPTY {
            let (counts, sum) = shard.drain(&self.layout);
            self.close(&mut closed, previous, &counts, sum);
        }
        shard.interval.store(interval, Relaxed);
    }

    fn close(&self, closed: &mut Closed, interval: u64, counts: &[(u32, u64)], sum: u64) {
        for &(index, count) in counts {
            closed.lifetime.add(index as usize, count);
        }
        closed.lifetime_sum = closed.lifetime_sum.saturating_add(sum);
        let newest = closed
            .ring
            .last()
            .map_or(interval, |(last, _)| (*last).max(interval));
        if interval.saturating_add(self.keep) <= newest {
            return; // Too old for any window; lifetime totals have it.
        }
        match closed.ring.binary_search_by_key(&interval, |(i, _)| *i) {
            Ok(position) => closed.ring[position].1.add(counts, sum),
            Err(position) => {
                let mut sparse = Sparse::default();
                sparse.add(counts, sum);
                closed.ring.insert(position, (interval, sparse));
            }
        }
        let keep_from = newest.saturating_add(1).saturating_sub(self.keep);
        closed.ring.retain(|(i, _)| *i >= keep_from);
    }

    fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.private
            .iter()
            .filter_map(OnceLock::get)
            .chain(std::iter::once(&self.shared))
    }

    /// Counts from the last `intervals` intervals (at most as many as the ring
    /// keeps) up to and including the one holding `now`.
    pub(crate) fn window(&self, intervals: u64, now: Instant) -> Gathered {
        let intervals = intervals.min(self.keep);
        let current = self.clock.interval_of(now);
        let oldest = current.saturating_add(1).saturating_sub(intervals);
        // Intervals after `current` hold samples stamped ahead of this reader's
        // clock (a caller's `at`); they are the newest samples, so they count.
        let within = |interval: u64| interval != EMPTY && interval >= oldest;
        let mut gathered = Gathered::empty(&self.layout);
        let closed = self.lock();
        for (_, sparse) in closed.ring.iter().filter(|(interval, _)| within(*interval)) {
            for &(index, count) in &sparse.counts {
                gathered.add(index as usize, count);
            }
            gathered.sum = gathered.sum.saturating_add(sparse.sum);
        }
        for shard in self
            .shards()
            .filter(|shard| within(shard.interval.load(Relaxed)))
        {
            for (index, count) in shard.counts(&self.layout) {
                gathered.add(index, count);
            }
            gathered.sum = gathered.sum.saturating_add(shard.sum.load(Relaxed));
        }
        drop(closed);
        gathered
    }

    /// Every count since the series was created.
    pub(crate) fn lifetime(&self) -> Gathered {
        let closed = self.lock();
        let mut gathered = Gathered {
            counts: closed.lifetime.clone(),
            sum: closed.lifetime_sum,
        };
        for shard in self
            .shards()
            .filter(|shard| shard.interval.load(Relaxed) != EMPTY)
        {
            for (index, count) in shard.counts(&self.layout) {
                gathered.add(index, count);
            }
            gathered.sum = gathered.sum.saturating_add(shard.sum.load(Relaxed));
        }
        drop(closed);
        gathered
    }

    /// The counts within the last `span` as of `now`, and the time they cover.
    pub(crate) fn window_span(&self, span: Duration, now: Instant) -> (Gathered, Duration) {
        let intervals = self.clock.intervals_in(span).min(self.keep);
        (
            self.window(intervals, now),
            self.clock.covered(intervals, now),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(interval: Duration, keep: u64) -> (Series, Instant) {
        let start = Instant::now();
        let layout = Layout::new(3, 3_600_000_000).unwrap_or_else(|e| panic!("{e}"));
        (
            Series::new(layout, Clock::new(start, interval), keep),
            start,
        )
    }

    #[test]
    fn window_and_lifetime_see_current_and_closed_intervals() {
        let second = Duration::from_secs(1);
        let (series, start) = series(second, 3);
        series.record(10, start);
        series.record(20, start + second);
        series.record(30, start + 2 * second);
        let now = start + 2 * second;
        assert_eq!(series.window(1, now).total(), 1);
        assert_eq!(series.window(3, now).total(), 3);
        assert_eq!(series.window(3, now).sum, 60);
        assert_eq!(series.lifetime().total(), 3);
        // Three intervals later the first two fall out of a 3-interval window.
        let later = start + 4 * second;
        assert_eq!(series.window(3, later).total(), 1);
        assert_eq!(series.lifetime().total(), 3);
    }

    #[test]
    fn samples_from_other_threads_are_merged_on_read() {
        let (series, start) = series(Duration::from_secs(60), 2);
        std::thread::scope(|scope| {
            for value in 1..=4_u64 {
                let series = &series;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        series.record(value * 100, start);
                    }
                });
            }
        });
        let gathered = series.window(1, start);
        assert_eq!(gathered.total(), 4000);
        assert_eq!(gathered.sum, 1000 * (100 + 200 + 300 + 400));
    }

    #[test]
    fn covered_time_is_bounded_by_uptime_and_window() {
        let clock = Clock::new(Instant::now(), Duration::from_secs(10));
        let start = clock.start();
        assert_eq!(
            clock.covered(6, start + Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(
            clock.covered(6, start + Duration::from_secs(125)),
            Duration::from_secs(55)
        );
        assert_eq!(clock.intervals_in(Duration::from_secs(60)), 6);
        assert_eq!(clock.intervals_in(Duration::from_secs(61)), 6);
        assert_eq!(clock.intervals_in(Duration::from_secs(1)), 1);
    }
}
