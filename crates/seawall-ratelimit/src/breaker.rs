//! The Redis store's circuit breakers, shared by every clone of the store
//! and so by every limiter on it: one per Redis node the store calls (on a
//! Cluster, each master; on a standalone server or behind Sentinel, the
//! one server). Once a call finds a node down, calls to that node are not
//! sent until a probe, one call at a time and at most one per interval,
//! finds it up again; calls to the other nodes go on as before. A breaker
//! is a few atomics; a call while it is closed reads one, after finding
//! its node's breaker by its key's slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fred::prelude::{Client, ClientLike as _, ClusterInterface as _};
use parking_lot::Mutex;

/// How long a Cluster's map of slots to nodes is used before it is read
/// again from the client (which follows the cluster's changes itself).
const ROUTES_TTL: Duration = Duration::from_millis(250);

/// The breakers of one store, one per node.
#[derive(Debug)]
pub(crate) struct Breakers {
    interval: Duration,
    /// The breaker of a store on one server, and of a call whose node is
    /// not known (no key, or a Cluster not mapped yet).
    default: Arc<Breaker>,
    /// Each Cluster node's breaker, by `host:port`, kept for the store's
    /// life: a node that comes back after a failover finds its own.
    nodes: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Slot ranges (first, last) and the breaker of the node serving each.
    routes: ArcSwap<Vec<(u16, u16, Arc<Breaker>)>>,
    /// When `routes` was last read (µs since `epoch`; 0: never).
    routed_at_us: AtomicU64,
    epoch: Instant,
}

impl Breakers {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            default: Arc::new(Breaker::new(interval)),
            nodes: Mutex::new(HashMap::new()),
            routes: ArcSwap::from_pointee(Vec::new()),
            routed_at_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The breaker of the node `client` sends `key` to: by its hash slot on
    /// a Cluster, else the one breaker (borrowed: no reference count is
    /// touched on a store of one server).
    #[inline]
    pub(crate) fn of(&self, client: &Client, key: Option<&str>) -> NodeBreaker<'_> {
        let Some(key) = key.filter(|_| client.is_clustered()) else {
            return NodeBreaker::Default(&self.default);
        };
        self.route(client);
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let routes = self.routes.load();
        let at = routes.partition_point(|(_, last, _)| *last < slot);
        match routes.get(at) {
            Some((first, _, breaker)) if *first <= slot => NodeBreaker::Node(Arc::clone(breaker)),
            _ => NodeBreaker::Default(&self.default),
        }
    }

    /// Reads the client's map of slots again once it is older than
    /// [`ROUTES_TTL`]; one caller at a time does.
    fn route(&self, client: &Client) {
        let now = u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let at = self.routed_at_us.load(Ordering::Relaxed);
        let ttl = u64::try_from(ROUTES_TTL.as_micros()).unwrap_or(u64::MAX);
        if at != 0 && now.saturating_sub(at) < ttl {
            return;
        }
        if self
            .routed_at_us
            .compare_exchange(at, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let Some(state) = client.cached_cluster_state() else {
            return;
        };
        let mut nodes = self.nodes.lock();
        // `slots` is sorted by its first slot (fred sorts it on every
        // rebuild), as the lookup's binary search needs.
        let routes = state
            .slots()
            .iter()
            .map(|range| {
                let node = format!("{}:{}", range.primary.host, range.primary.port);
                let breaker = nodes
                    .entry(node)
                    .or_insert_with(|| Arc::new(Breaker::new(self.interval)));
                (range.start, range.end, Arc::clone(breaker))
            })
            .collect::<Vec<_>>();
        drop(nodes);
        self.routes.store(Arc::new(routes));
    }

    /// Whether any node's breaker is open.
    pub(crate) fn any_open(&self) -> bool {
        self.default.is_open() || self.nodes.lock().values().any(|breaker| breaker.is_open())
    }
}

/// The breaker a call passes: the store's one, borrowed, or a Cluster
/// node's, shared.
#[derive(Debug)]
pub(crate) enum NodeBreaker<'a> {
    Default(&'a Breaker),
    Node(Arc<Breaker>),
}

impl std::ops::Deref for NodeBreaker<'_> {
    type Target = Breaker;

    fn deref(&self) -> &Breaker {
        match self {
            Self::Default(breaker) => breaker,
            Self::Node(breaker) => breaker,
        }
    }
}

/// Closed, or open with the time the next probe may go.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// 0 while closed; while open, when the next probe may start (µs since
    /// `epoch`, at least 1).
    next_probe_at: AtomicU64,
    /// Whether a probe is out.
    probing: AtomicBool,
    /// How long after a failure the next probe goes.
    interval_us: u64,
    epoch: Instant,
}

/// Leave to send one call; the call reports how it went through it. A
/// probe that is dropped unreported (its future cancelled) frees the probe
/// slot for the next call.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            next_probe_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            interval_us: u64::try_from(interval.as_micros()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
        }
    }

    /// Leave to send a call, or `None` while the breaker is open and this
    /// call is not the probe.
    #[inline]
    pub(crate) fn permit(&self) -> Option<Permit<'_>> {
        let next_probe_at = self.next_probe_at.load(Ordering::Relaxed);
        if next_probe_at == 0 {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        let due = self.now_us() >= next_probe_at;
        // `then`, not `then_some`: a probe's permit built and dropped would
        // free the slot of the probe that is out.
        (due && !self.probing.swap(true, Ordering::AcqRel)).then(|| Permit {
            breaker: self,
            probe: true,
        })
    }

    /// Whether calls are held back now.
    pub(crate) fn is_open(&self) -> bool {
        self.next_probe_at.load(Ordering::Relaxed) != 0
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Permit<'_> {
    /// The store answered (an answer with an error included): the breaker
    /// closes.
    #[inline]
    pub(crate) fn answered(mut self) {
        let breaker = self.breaker;
        if breaker.next_probe_at.load(Ordering::Relaxed) != 0 {
            breaker.next_probe_at.store(0, Ordering::Relaxed);
            crate::trace::breaker_closed();
        }
        self.release();
    }

    /// The store is down (no connection, no answer in time): the breaker
    /// opens, or stays open, until a probe one interval from now.
    pub(crate) fn down(mut self) {
        let breaker = self.breaker;
        let next = breaker.now_us().saturating_add(breaker.interval_us).max(1);
        if breaker.next_probe_at.swap(next, Ordering::Relaxed) == 0 {
            crate::trace::breaker_opened();
        }
        self.release();
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use seawall_testkit::wait;

    use super::*;

    #[test]
    fn one_probe_at_a_time_once_the_interval_has_passed() {
        // An interval of a second: the checks just after a failure come long
        // before it ends, however loaded the machine.
        let breaker = Breaker::new(Duration::from_secs(1));
        let first = breaker.permit().expect("closed");
        let second = breaker.permit().expect("closed");
        first.down();
        assert!(breaker.is_open());
        second.down();
        assert!(breaker.permit().is_none(), "no probe before the interval");
        let probe = wait::until_some("the probe once the interval has passed", || {
            breaker.permit()
        });
        assert!(breaker.permit().is_none(), "one probe at a time");
        assert!(breaker.permit().is_none(), "a refused call frees no slot");
        drop(probe);
        // A probe dropped unreported frees its slot.
        let probe = breaker.permit().expect("the next probe");
        probe.down();
        assert!(breaker.permit().is_none(), "the interval starts again");
        wait::until_some("the probe once the interval has passed again", || {
            breaker.permit()
        })
        .answered();
        assert!(!breaker.is_open());
        assert!(breaker.permit().is_some() && breaker.permit().is_some());
    }
}
