//! Counts per histogram index, allocated one HDR bucket at a time, so memory
//! follows the range of values actually seen rather than the configured range.

use crate::layout::Layout;

/// Non-negative counts per index, stored in chunks of `layout.chunk_len()`.
#[derive(Debug, Clone)]
pub(crate) struct Counts {
    chunks: Vec<Option<Box<[u64]>>>,
    shift: u32,
}

impl Counts {
    pub(crate) fn new(layout: &Layout) -> Self {
        Self {
            chunks: vec![None; layout.chunks()],
            shift: layout.chunk_shift(),
        }
    }

    /// Adds `count` at `index`; indices past the layout are ignored.
    pub(crate) fn add(&mut self, index: usize, count: u64) {
        let chunk_len = 1_usize << self.shift;
        let Some(chunk) = self.chunks.get_mut(index >> self.shift) else {
            return;
        };
        let counters = chunk.get_or_insert_with(|| vec![0; chunk_len].into_boxed_slice());
        if let Some(slot) = counters.get_mut(index & (chunk_len - 1)) {
            *slot = slot.saturating_add(count);
        }
    }

    /// Adds every count of `other`.
    pub(crate) fn merge(&mut self, other: &Self) {
        for (index, count) in other.iter() {
            self.add(index, count);
        }
    }

    /// Non-zero counts as `(index, count)`, by ascending index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let shift = self.shift;
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(chunk, counters)| {
                counters.iter().flat_map(move |counters| {
                    counters
                        .iter()
                        .enumerate()
                        .filter(|(_, count)| **count > 0)
                        .map(move |(offset, count)| ((chunk << shift) + offset, *count))
                })
            })
    }

    /// The number of samples.
    pub(crate) fn total(&self) -> u64 {
        self.iter()
            .fold(0, |total, (_, count)| total.saturating_add(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_only_touched_chunks_and_iterates_in_order() -> crate::Result<()> {
        let layout = Layout::new(3, 3_600_000_000)?;
        let mut counts = Counts::new(&layout);
        counts.add(layout.index(5_000_000), 2);
        counts.add(layout.index(7), 1);
        counts.add(usize::MAX, 9);
        assert_eq!(counts.chunks.iter().filter(|c| c.is_some()).count(), 2);
        let seen: Vec<_> = counts.iter().collect();
        assert_eq!(seen, [(layout.index(7), 1), (layout.index(5_000_000), 2)]);
        let mut merged = Counts::new(&layout);
        merged.merge(&counts);
        merged.merge(&counts);
        assert_eq!(merged.total(), 6);
        Ok(())
    }
}
