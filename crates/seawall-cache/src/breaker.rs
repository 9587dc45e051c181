//! The Redis tier's circuit breaker: after repeated failures the cache
//! stops calling Redis, and a background probe closes it again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Consecutive failures counted; open once they reach the threshold.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    failures: AtomicU32,
    open: AtomicBool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; true when this one opened the breaker (the caller
    /// then starts the probe).
    pub(crate) fn failure(&self) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        failures >= self.threshold && !self.open.swap(true, Ordering::AcqRel)
    }

    /// Opens it whatever the count (the connection was lost); true when
    /// this call opened it (the caller then starts the probe).
    pub(crate) fn trip(&self) -> bool {
        !self.open.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn close(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn opens_once_after_the_threshold_and_a_success_resets_the_count() {
        let breaker = Breaker::new(3);
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        breaker.success();
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        assert!(breaker.failure(), "the third in a row opens it");
        assert!(breaker.is_open());
        assert!(!breaker.failure(), "only one caller starts the probe");
        breaker.close();
        assert!(!breaker.is_open());
        assert!(breaker.trip(), "a lost connection opens it at once");
        assert!(!breaker.trip(), "once");
        assert!(breaker.is_open());
    }
}
