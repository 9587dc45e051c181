//! One running load of a key: what its waiters receive, and which
//! invalidations overtake it (its value then goes in neither tier).

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::error::Error;

pub(crate) type Shared = Arc<dyn Any + Send + Sync>;

/// What a load gave its waiters.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// A value (`None`: "not found"); `stale` if it is past its TTL and
    /// stands in for a failed or slow load.
    Value {
        value: Option<Shared>,
        stale: bool,
    },
    Failed(Arc<Error>),
}

/// One running load of a key.
pub(crate) struct Flight {
    outcome: watch::Sender<Option<Outcome>>,
    invalidated: AtomicBool,
    /// The tags the loaded value will carry: an invalidation of another tag
    /// cannot overtake this load.
    tags: Box<[String]>,
    /// The invalidation epoch when the load started.
    epoch: u64,
}

impl Flight {
    pub(crate) fn new(tags: &[String], epoch: u64) -> Self {
        Self {
            outcome: watch::Sender::new(None),
            invalidated: AtomicBool::new(false),
            tags: tags.into(),
            epoch,
        }
    }

    /// Whether the value this load will cache carries `tag`.
    pub(crate) fn tagged(&self, tag: &str) -> bool {
        self.tags.iter().any(|own| own == tag)
    }

    /// Whether an invalidation since the start may have removed a value
    /// tagged `tags` had it been cached then: one marked this flight or,
    /// for a value with tags the flight did not announce (found in Redis,
    /// written by a caller with other options), any invalidation at all.
    pub(crate) fn overtaken(&self, tags: &[String], epoch: u64) -> bool {
        self.invalidated() || (tags.iter().any(|tag| !self.tagged(tag)) && epoch != self.epoch)
    }

    pub(crate) fn invalidate(&self) {
        self.invalidated.store(true, Ordering::Relaxed);
    }

    pub(crate) fn invalidated(&self) -> bool {
        self.invalidated.load(Ordering::Relaxed)
    }

    /// A receiver of the load's outcome.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Outcome>> {
        self.outcome.subscribe()
    }

    pub(crate) fn publish(&self, outcome: Outcome) {
        self.outcome.send_replace(Some(outcome));
    }
}
