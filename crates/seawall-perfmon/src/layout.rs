//! The bucket layout of an HDR histogram, computed the same way as the
//! `hdrhistogram` crate computes it.
//!
//! Recording threads count into plain atomic arrays laid out like an
//! `hdrhistogram::Histogram` with a lowest discernible value of 1, so that a
//! reader can rebuild an exact `hdrhistogram::Histogram` from the counts: every
//! index maps back to the lowest value of its bucket, and recording that value
//! lands in the same bucket of a histogram with the same precision.

use crate::{Error, Result};

/// Where values land in a histogram of a given precision and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    sigfig: u8,
    highest: u64,
    sub_bucket_half_count_magnitude: u32,
    sub_bucket_half_count: u64,
    sub_bucket_mask: u64,
    leading_zero_count_base: u32,
    len: usize,
}

impl Layout {
    /// A layout for values `0..=highest` kept to `sigfig` significant digits.
    pub(crate) fn new(sigfig: u8, highest: u64) -> Result<Self> {
        if !(1..=5).contains(&sigfig) {
            return Err(Error::InvalidConfig {
                field: "significant_digits",
                reason: format!("must be between 1 and 5, got {sigfig}"),
            });
        }
        // Single-unit resolution up to 2 * 10^sigfig, as in hdrhistogram.
        let single_unit_limit = 2 * 10_u64.pow(u32::from(sigfig));
        let sub_bucket_count_magnitude = 64 - (single_unit_limit - 1).leading_zeros();
        let sub_bucket_count = 1_u64 << sub_bucket_count_magnitude;
        if highest < 2 * sub_bucket_count {
            return Err(Error::InvalidConfig {
                field: "highest_trackable",
                reason: format!(
                    "must be at least {} for {sigfig} significant digits, got {highest}",
                    2 * sub_bucket_count
                ),
            });
        }
        let mut layout = Self {
            sigfig,
            highest,
            sub_bucket_half_count_magnitude: sub_bucket_count_magnitude - 1,
            sub_bucket_half_count: sub_bucket_count / 2,
            sub_bucket_mask: sub_bucket_count - 1,
            leading_zero_count_base: 64 - sub_bucket_count_magnitude,
            len: 0,
        };
        layout.len = layout.index(highest) + 1;
        Ok(layout)
    }

    /// Significant decimal digits kept.
    pub(crate) fn sigfig(&self) -> u8 {
        self.sigfig
    }

    /// The largest value kept; larger values are clamped to it.
    #[inline]
    pub(crate) fn highest(&self) -> u64 {
        self.highest
    }

    /// Number of counters needed to cover `0..=highest`.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Counters per chunk: chunk `k` holds indices `k * chunk_len .. (k + 1) * chunk_len`,
    /// which is exactly one HDR bucket (bucket 0 spans chunks 0 and 1).
    pub(crate) fn chunk_len(&self) -> usize {
        1 << self.sub_bucket_half_count_magnitude
    }

    /// `log2(chunk_len)`.
    pub(crate) fn chunk_shift(&self) -> u32 {
        self.sub_bucket_half_count_magnitude
    }

    /// Number of chunks covering `len`.
    pub(crate) fn chunks(&self) -> usize {
        self.len.div_ceil(self.chunk_len())
    }

    /// The counter index of `value` (clamped to `highest`).
    #[inline]
    pub(crate) fn index(&self, value: u64) -> usize {
        let value = value.min(self.highest);
        let bucket = self.leading_zero_count_base - (value | self.sub_bucket_mask).leading_zeros();
        let sub_bucket = value >> bucket;
        let base = u64::from(bucket + 1) << self.sub_bucket_half_count_magnitude;
        // `sub_bucket >= half` except in bucket 0, where the offset may go below `base`;
        // the sum never underflows because `base >= half` for every bucket.
        let index = base + sub_bucket - self.sub_bucket_half_count;
        usize::try_from(index).unwrap_or(usize::MAX)
    }

    /// The lowest value that lands at `index`.
    pub(crate) fn value_at(&self, index: usize) -> u64 {
        let chunk = index >> self.sub_bucket_half_count_magnitude;
        let offset = (index & (self.chunk_len() - 1)) as u64;
        if chunk == 0 {
            offset
        } else {
            let bucket = u32::try_from(chunk - 1).unwrap_or(u32::MAX);
            (offset + self.sub_bucket_half_count)
                .checked_shl(bucket)
                .unwrap_or(u64::MAX)
        }
    }

    /// The highest value that lands at `index`.
    #[cfg(test)]
    pub(crate) fn highest_at(&self, index: usize) -> u64 {
        let chunk = index >> self.sub_bucket_half_count_magnitude;
        let bucket = u32::try_from(chunk.saturating_sub(1)).unwrap_or(u32::MAX);
        let width = 1_u64.checked_shl(bucket).unwrap_or(u64::MAX);
        self.value_at(index).saturating_add(width - 1)
    }

    /// An empty `hdrhistogram::Histogram` with this layout's precision and range.
    pub(crate) fn histogram(&self) -> hdrhistogram::Histogram<u64> {
        match hdrhistogram::Histogram::new_with_bounds(1, self.highest, self.sigfig) {
            Ok(histogram) => histogram,
            Err(error) => unreachable!("Layout::new validated these bounds: {error}"),
        }
    }

    /// Builds a histogram from `(index, count)` pairs.
    pub(crate) fn build(
        &self,
        counts: impl IntoIterator<Item = (usize, u64)>,
    ) -> hdrhistogram::Histogram<u64> {
        let mut histogram = self.histogram();
        for (index, count) in counts {
            if count > 0 {
                // Values come from `value_at`, so they are within range.
                let _ = histogram.record_n(self.value_at(index), count);
            }
        }
        histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hdrhistogram_bucket_for_every_value_in_a_sweep() -> Result<()> {
        for sigfig in 1..=5 {
            let layout = Layout::new(sigfig, 3_600_000_000)?;
            let reference = layout.histogram();
            let mut value = 0_u64;
            while value < layout.highest() {
                let index = layout.index(value);
                assert!(index < layout.len());
                let low = layout.value_at(index);
                assert_eq!(
                    low,
                    reference.lowest_equivalent(value),
                    "sigfig {sigfig} value {value}"
                );
                assert_eq!(
                    layout.highest_at(index),
                    reference.highest_equivalent(value)
                );
                assert_eq!(layout.index(low), index);
                value = value + 1 + value / 97;
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_bad_precision_and_tiny_ranges() {
        assert!(Layout::new(0, 1_000_000).is_err());
        assert!(Layout::new(6, 1_000_000).is_err());
        assert!(Layout::new(3, 10).is_err());
    }

    #[test]
    fn clamps_values_above_highest() -> Result<()> {
        let layout = Layout::new(3, 1_000_000)?;
        assert_eq!(layout.index(u64::MAX), layout.index(1_000_000));
        assert_eq!(layout.len(), layout.index(1_000_000) + 1);
        Ok(())
    }
}
