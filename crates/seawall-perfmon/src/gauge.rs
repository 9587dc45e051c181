//! Gauges: values that go up and down, kept as the bits of an `f64` in an
//! `AtomicU64`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::Result;
use crate::registry::Family;

/// The value of one gauge series.
#[derive(Debug)]
pub(crate) struct GaugeCell(AtomicU64);

impl GaugeCell {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(0.0_f64.to_bits()))
    }

    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Relaxed);
    }

    fn add(&self, delta: f64) {
        // The closure always answers `Some`, so the update always succeeds.
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + delta).to_bits())
        });
    }
}

/// A gauge metric with labels; pick a series with [`with_labels`](Self::with_labels).
#[derive(Clone)]
pub struct GaugeVec {
    pub(crate) family: Arc<Family<GaugeCell>>,
}

impl fmt::Debug for GaugeVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GaugeVec")
            .field("name", &self.family.name())
            .finish_non_exhaustive()
    }
}

impl GaugeVec {
    /// The gauge for these label values (in the order of the label names).
    /// Keep the handle: updating it takes no lookup.
    pub fn with_labels(&self, values: &[&str]) -> Result<Gauge> {
        Ok(Gauge {
            cell: self.family.get(values, GaugeCell::new)?,
        })
    }
}

/// A value that goes up and down (requests in flight, a queue's length),
/// starting at 0. Updates are atomic: concurrent `add`s are never lost.
#[derive(Debug, Clone)]
pub struct Gauge {
    cell: Arc<GaugeCell>,
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.cell.set(value);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.cell.add(1.0);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.cell.add(-1.0);
    }

    /// Adds `delta`, which may be negative.
    pub fn add(&self, delta: f64) {
        self.cell.add(delta);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        self.cell.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_add_up_across_threads() {
        let cell = Arc::new(GaugeCell::new());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let cell = Arc::clone(&cell);
                scope.spawn(move || {
                    for _ in 0..1_000 {
                        cell.add(1.0);
                        cell.add(-0.5);
                    }
                });
            }
        });
        assert!((cell.get() - 2_000.0).abs() < f64::EPSILON);
        cell.set(-3.25);
        assert!((cell.get() + 3.25).abs() < f64::EPSILON);
    }
}
