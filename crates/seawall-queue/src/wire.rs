//! Wire versions: which forms of the queue's data and script arguments a
//! release reads and writes, and which one an enqueue writes while
//! processes of the release before are still about.
//!
//! The rule: a release reads its own wire version and the one before, and
//! writes a newer form only once no live process that reads only an older
//! one is announced (see [`ProcessReport::wire_version`]). So a fleet can
//! be upgraded one process at a time, and a release may run beside the one
//! before it, never beside an older one.
//!
//! [`ProcessReport::wire_version`]: crate::ProcessReport::wire_version

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::presence::{self, SeenProcess};
use crate::store::Store;

/// The wire version of this release: job ids are `<sequence>-<epoch>`
/// (see [`JobId`](crate::JobId)). Version 1, the release before, reads and
/// writes ids of digits alone, and refuses the others.
pub const WIRE_VERSION: u32 = 2;

/// The oldest wire version this release reads, and so the oldest it can
/// write: the one before its own.
pub const OLDEST_WIRE_VERSION: u32 = WIRE_VERSION - 1;

/// How long past its report's ttl a process of an older release that went
/// silent without withdrawing still holds enqueues to the form it reads
/// (the default of [`RedisQueues::silent_reader_grace`]): a worker's
/// default lease. A worker frozen or cut off from Redis for up to this long
/// comes back to a queue it can still read.
///
/// [`RedisQueues::silent_reader_grace`]: crate::RedisQueues::silent_reader_grace
pub const SILENT_READER_GRACE: Duration = Duration::from_secs(30);

/// How long an enqueue goes by what it last read of the announced
/// processes before it reads them again: a process of an older release that
/// announces itself is heeded by every producer within this time (plus one
/// read of the list), and one that withdrew is no longer heeded within
/// this; one that went silent, within its report's `ttl_ms`, the silent
/// reader grace and this.
pub(crate) const VIEW_MAX_AGE: Duration = Duration::from_secs(2);

/// Which wire version enqueues write: the oldest that a live announced
/// process reads, read from the presence list at most every
/// [`VIEW_MAX_AGE`] (not once per enqueue), and never newer than
/// `newest`.
pub(crate) struct WireView {
    newest: u32,
    /// Whether the announced processes are read at all: not in memory,
    /// whose processes are all this one.
    follows: bool,
    /// How long past its ttl a silent process of an older release is
    /// still heeded.
    grace: Duration,
    /// The version last chosen, and when.
    last: Mutex<Option<(Instant, u32)>>,
    /// One read of the list at a time; other enqueues wait for its answer.
    reading: tokio::sync::Mutex<()>,
}

impl WireView {
    /// Always `version`.
    pub(crate) fn fixed(version: u32) -> Self {
        Self {
            newest: version,
            follows: false,
            grace: Duration::ZERO,
            last: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The oldest version an announced process that may still run reads,
    /// at most `newest`: one alive, or one of an older release silent for
    /// less than `grace` past its ttl.
    pub(crate) fn following(newest: u32, grace: Duration) -> Self {
        Self {
            follows: newest > OLDEST_WIRE_VERSION,
            grace,
            ..Self::fixed(newest)
        }
    }

    /// The wire version to write now.
    pub(crate) async fn version(&self, store: &dyn Store) -> u32 {
        if !self.follows {
            return self.newest;
        }
        if let Some(version) = self.fresh() {
            return version;
        }
        let _reading = self.reading.lock().await;
        if let Some(version) = self.fresh() {
            return version;
        }
        let version = match presence::seen(store).await {
            Ok(seen) => writable(
                seen.iter()
                    .filter(|process| self.may_run(process))
                    .map(|process| process.report.wire_version),
                self.newest,
            ),
            Err(error) => {
                // Every reader of this release or the one before reads the
                // oldest form.
                tracing::debug!(%error, "the announced processes could not be read; enqueues write the oldest form for now");
                OLDEST_WIRE_VERSION
            }
        };
        *self.last.lock() = Some((Instant::now(), version));
        version
    }

    /// Whether `process` may still take jobs: alive, or of an older
    /// release and silent for less than the grace past its ttl (silent is
    /// not gone: frozen, or cut off from Redis).
    fn may_run(&self, process: &SeenProcess) -> bool {
        process.alive
            || process.report.wire_version < self.newest
                && process.since
                    < Duration::from_millis(process.report.ttl_ms).saturating_add(self.grace)
    }

    fn fresh(&self) -> Option<u32> {
        self.last
            .lock()
            .filter(|(at, _)| at.elapsed() < VIEW_MAX_AGE)
            .map(|(_, version)| version)
    }
}

/// The newest version every one of `readers` reads, at most `newest` and
/// at least the oldest this release writes; `newest` when there are none.
fn writable(readers: impl Iterator<Item = u32>, newest: u32) -> u32 {
    readers
        .min()
        .map_or(newest, |oldest| oldest.min(newest))
        .max(OLDEST_WIRE_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_reader_decides_within_what_this_release_writes() {
        assert_eq!(writable([].into_iter(), WIRE_VERSION), WIRE_VERSION);
        assert_eq!(writable([2, 1, 2].into_iter(), 2), 1);
        assert_eq!(writable([2, 3].into_iter(), 2), 2);
        assert_eq!(writable([3].into_iter(), 1), 1);
        assert_eq!(writable([0].into_iter(), 2), OLDEST_WIRE_VERSION);
    }
}
