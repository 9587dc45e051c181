//! Counters: monotonic `u64`s, one `AtomicU64` per series.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::Result;
use crate::registry::Family;

/// A counter metric with labels; pick a series with [`with_labels`](Self::with_labels).
#[derive(Clone)]
pub struct CounterVec {
    pub(crate) family: Arc<Family<AtomicU64>>,
}

impl fmt::Debug for CounterVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterVec")
            .field("name", &self.family.name())
            .finish_non_exhaustive()
    }
}

impl CounterVec {
    /// The counter for these label values (in the order of the label names).
    pub fn with_labels(&self, values: &[&str]) -> Result<Counter> {
        Ok(Counter {
            value: self.family.get(values, || AtomicU64::new(0))?,
        })
    }
}

/// A monotonic counter.
#[derive(Debug, Clone)]
pub struct Counter {
    value: Arc<AtomicU64>,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.value.fetch_add(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.value.load(Relaxed)
    }
}
