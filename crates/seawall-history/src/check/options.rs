//! How the checker judges: its options, and the units its examples are
//! told in. Every workload's check reads them; this module reads none.

use std::time::Duration;

/// How far from the time a fault's line was logged a lost run's row may
/// be, beyond the job's lease, for the fault to explain the repeat: 1 s.
///
/// The lease bounds the rest: a worker aborts a run no renewal reached by
/// the end of its lease, and stops retrying an acknowledgement then too.
/// What the margin covers is the slack of one machine's clocks and logs:
/// the fault's line is written once the fault took effect, the row's time
/// is taken when the run reaches its write (before the statement runs),
/// and a renewal or acknowledgement in flight when the fault hit is
/// answered within its own timeout. Each is well under a second even on a
/// loaded machine; a second leaves room for them without letting a fault
/// excuse runs more than a lease and a second away from it.
pub const DEFAULT_LEASE_MARGIN: Duration = Duration::from_secs(1);

/// How far ahead of its tick a scheduler may make the tick's job: 1 s, as
/// seawall-queue's runner does by default (`Queues::run_schedulers`).
///
/// A job made ahead of a fault can come through it (a replica had it when
/// it took over), so the ticks after an outage that made no job are
/// explained up to the first job made after it: the first tick at least
/// this long after the fault that made one.
pub const DEFAULT_SCHEDULE_LEAD: Duration = Duration::from_secs(1);

/// How the checker judges. Built from [`Options::default`] with setters.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub(super) stale_window: Duration,
    pub(super) examples: usize,
    pub(super) rate_limit_multiple: f64,
    pub(super) lease_margin: Duration,
    pub(super) schedule_lead: Duration,
    /// The history's first event, which examples time from; set by
    /// [`check`](super::check).
    pub(super) origin: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stale_window: Duration::from_millis(10),
            examples: 5,
            rate_limit_multiple: 1.0,
            lease_margin: DEFAULT_LEASE_MARGIN,
            schedule_lead: DEFAULT_SCHEDULE_LEAD,
            origin: 0,
        }
    }
}

impl Options {
    /// The defaults: a 10 ms propagation window, 5 examples per kind, no
    /// admissions above the limit, a lease margin of
    /// [`DEFAULT_LEASE_MARGIN`], a scheduler lead of
    /// [`DEFAULT_SCHEDULE_LEAD`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How long after a write's `ok` a read elsewhere may still return the
    /// version before it (the cache's documented propagation window).
    pub fn stale_window(mut self, window: Duration) -> Self {
        self.stale_window = window;
        self
    }

    /// How many examples each kind of finding keeps.
    pub fn examples(mut self, examples: usize) -> Self {
        self.examples = examples;
        self
    }

    /// The multiple of a limit that admissions in one window may reach
    /// before a key counts as over its limit (1.0: none above the limit).
    pub fn rate_limit_multiple(mut self, multiple: f64) -> Self {
        self.rate_limit_multiple = multiple;
        self
    }

    /// How much further than the job's lease from a fault a lost run's row
    /// may be for the fault to explain the job's repeat (see
    /// [`DEFAULT_LEASE_MARGIN`]).
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.lease_margin = margin;
        self
    }

    /// How far ahead of its tick a scheduler may make the tick's job (see
    /// [`DEFAULT_SCHEDULE_LEAD`]).
    pub fn schedule_lead(mut self, lead: Duration) -> Self {
        self.schedule_lead = lead;
        self
    }
}

impl Options {
    /// `t` as seconds after the history's first event, for examples.
    pub(super) fn since(&self, t: u64) -> String {
        format!("+{:.3}s", micros_as_secs(t.saturating_sub(self.origin)))
    }
}

#[allow(clippy::cast_precision_loss)] // exact below 2^53 µs, some 285 years
pub(super) fn micros_as_secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[allow(clippy::cast_precision_loss)]
pub(super) fn micros_as_ms(micros: u64) -> f64 {
    micros as f64 / 1e3
}
