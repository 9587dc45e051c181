//! Worker processes announce themselves, so an operator sees every process
//! of a fleet (which are alive, what each runs, how fast) from any one of
//! them, not only what one process sees.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{FORGET_AFTER, Store};

/// What a worker process says of itself, announced every few seconds with
/// [`crate::Queues::announce`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    /// Unique per process run, e.g. `host:pid:start`; 1 to 128 bytes.
    pub id: String,
    /// The host the process runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started, in ms since the Unix epoch.
    pub started_ms: u64,
    /// How long after an announcement the process counts as gone if no
    /// other comes: a few of its announcement intervals.
    pub ttl_ms: u64,
    /// Jobs completed per second over its last minute, every queue together.
    pub completed_per_second: f64,
    /// What it runs, per queue.
    pub queues: Vec<QueueActivity>,
    /// The newest [wire version](crate::WIRE_VERSION) it reads: enqueues
    /// write no newer form while it is alive. A report without it, from
    /// the release before wire versions (whose ids are digits alone),
    /// reads as 1.
    #[serde(default = "first_wire_version")]
    pub wire_version: u32,
}

/// What a report without a wire version reads: the release that wrote it
/// knew ids of digits alone.
fn first_wire_version() -> u32 {
    1
}

/// One queue's worker in a [`ProcessReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueActivity {
    /// The queue.
    pub queue: String,
    /// The most jobs it runs at once.
    pub concurrency: usize,
    /// Jobs it runs now.
    pub running: usize,
    /// Jobs it completed since the process started.
    pub completed: u64,
    /// Attempts that failed since the process started.
    pub failed: u64,
}

/// A process as [`crate::Queues::processes`] lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenProcess {
    /// Its last report.
    pub report: ProcessReport,
    /// How long ago that report came, on the backend's clock.
    pub since: Duration,
    /// Whether it came within the report's own `ttl_ms`.
    pub alive: bool,
}

/// What [`crate::Queues::processes`] answers, read from `store`.
pub(crate) async fn seen(store: &dyn Store) -> Result<Vec<SeenProcess>> {
    let mut seen: Vec<SeenProcess> = store
        .processes()
        .await?
        .into_iter()
        .filter(|(_, since_ms)| u128::from(*since_ms) < FORGET_AFTER.as_millis())
        .filter_map(|(bytes, since_ms)| {
            let report: ProcessReport = serde_json::from_slice(&bytes).ok()?;
            Some(SeenProcess {
                alive: since_ms < report.ttl_ms,
                since: Duration::from_millis(since_ms),
                report,
            })
        })
        .collect();
    seen.sort_by(|a, b| {
        b.alive
            .cmp(&a.alive)
            .then_with(|| a.report.id.cmp(&b.report.id))
    });
    Ok(seen)
}

pub(crate) fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 {
        return Err(Error::InvalidSetting(format!(
            "a process id is 1 to 128 bytes, not {}",
            id.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as the release before wire versions wrote it reads as
    /// wire version 1; a report of this release names its own.
    #[test]
    fn a_report_without_a_wire_version_reads_as_the_first() {
        let previous = br#"{"id":"host-a:1:2","host":"host-a","pid":1,"started_ms":2,"ttl_ms":5000,"completed_per_second":0.5,"queues":[{"queue":"email","concurrency":8,"running":1,"completed":3,"failed":0}]}"#;
        let report: ProcessReport = serde_json::from_slice(previous).expect("decodes");
        assert_eq!(report.wire_version, 1);
        assert_eq!(report.queues[0].queue, "email");
        let current = ProcessReport {
            wire_version: crate::WIRE_VERSION,
            ..report
        };
        let written = serde_json::to_vec(&current).expect("encodes");
        let read: ProcessReport = serde_json::from_slice(&written).expect("decodes");
        assert_eq!(read.wire_version, crate::WIRE_VERSION);
    }
}
