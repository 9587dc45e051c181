//! A worker's concurrency that moves while it runs.

use std::time::Duration;

/// A limit on how many jobs a worker runs at once that moves while it runs,
/// set with [`WorkerBuilder::concurrency_limit`](crate::WorkerBuilder::concurrency_limit):
/// the worker asks it for the limit before each fetch and tells it how each
/// run went, so a downstream that slows (a mail server, a database) gets
/// fewer jobs at once instead of a pile of runs that outlast their leases.
/// The worker's [`concurrency`](crate::WorkerBuilder::concurrency) stays
/// the ceiling.
///
/// With the `adaptive` feature, seawall-ratelimit's `AdaptiveLimiter` is
/// one: its limit moves from the runs' latency (`Gradient`) or their
/// overloads (`Aimd`).
pub trait ConcurrencyLimit: Send + Sync + 'static {
    /// The most jobs to run at once now. The worker runs at least one and
    /// at most its own concurrency whatever this says; a limit below the
    /// jobs running now lets them finish and takes no more until fewer run.
    fn limit(&self) -> usize;

    /// A run of a job finished (or stopped): what it showed.
    fn finished(&self, run: RunSample);
}

/// What one run of a job showed, for a [`ConcurrencyLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSample {
    /// How long the handler ran.
    pub took: Duration,
    /// Jobs this worker ran when this one started, itself included.
    pub running: usize,
    /// Whether the run says the work is overloaded: it ran past its
    /// timeout, was stopped because its lease could not be renewed, or its
    /// handler [held](crate::JobError::rate_limited) the queue or its group
    /// because a downstream said to wait.
    pub overloaded: bool,
}

#[cfg(feature = "adaptive")]
impl ConcurrencyLimit for seawall_ratelimit::AdaptiveLimiter {
    fn limit(&self) -> usize {
        usize::try_from(seawall_ratelimit::AdaptiveLimiter::limit(self)).unwrap_or(usize::MAX)
    }

    fn finished(&self, run: RunSample) {
        self.record(seawall_ratelimit::Sample {
            latency: run.took,
            in_flight: u64::try_from(run.running).unwrap_or(u64::MAX),
            dropped: run.overloaded,
        });
    }
}
