//! Circuit breakers per Redis node: the Redis store's, shared by every
//! clone of the store and so by every limiter on it, and seawall-queue's
//! (which uses this module rather than keep one of its own). One per
//! Redis node a client calls (on a Cluster, each master; on a standalone
//! server or behind Sentinel, the one server). Once a call finds a node
//! down, calls to that node are not sent until a probe, one call at a
//! time and at most one per interval, finds it up again; calls to the
//! other nodes go on as before. A breaker is a few atomics; a call while
//! it is closed reads one, after finding its node's breaker by its key's
//! slot.
//!
//! ```
//! use std::time::Duration;
//! use seawall_ratelimit::breaker::Breakers;
//!
//! let breakers = Breakers::new(Duration::from_secs(1));
//! let client = fred::prelude::Builder::default_centralized().build()?;
//! let breaker = breakers.of(&client, Some("{queue}:meta"));
//! let permit = breaker.permit().expect("closed");
//! // ... the call finds no connection ...
//! assert!(permit.down(), "this call opened it");
//! assert!(breaker.permit().is_none(), "the next is not sent");
//! # Ok::<(), fred::error::Error>(())
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fred::error::ErrorKind;
use fred::prelude::{Client, ClientLike as _, ClusterInterface as _};
use parking_lot::Mutex;

/// How long a Cluster's map of slots to nodes is used before it is read
/// again from the client (which follows the cluster's changes itself).
const ROUTES_TTL: Duration = Duration::from_millis(250);

/// The breakers of one client, one per node.
#[derive(Debug)]
pub struct Breakers {
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
    /// Breakers that send a probe `interval` after a call found their node
    /// down.
    pub fn new(interval: Duration) -> Self {
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
    pub fn of(&self, client: &Client, key: Option<&str>) -> NodeBreaker<'_> {
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
    pub fn any_open(&self) -> bool {
        self.default.is_open() || self.nodes.lock().values().any(|breaker| breaker.is_open())
    }

    /// The breaker of the Cluster node at `server` (`host:port`, as the
    /// client names it), or with `None` the default one (a client on one
    /// server has only that): for a caller that learns of a node's state
    /// outside a call, from the client's connection events. A node not
    /// mapped yet gets its breaker now, and its slots find it once they
    /// are mapped.
    pub fn node(&self, server: Option<&str>) -> NodeBreaker<'_> {
        match server {
            None => NodeBreaker::Default(&self.default),
            Some(server) => NodeBreaker::Node(Arc::clone(
                self.nodes
                    .lock()
                    .entry(server.to_owned())
                    .or_insert_with(|| Arc::new(Breaker::new(self.interval))),
            )),
        }
    }
}

/// The breaker a call passes: the one of a client on one server,
/// borrowed, or a Cluster node's, shared.
#[derive(Debug)]
pub enum NodeBreaker<'a> {
    /// The breaker of a client on one server, or of a call whose node is
    /// not known.
    Default(&'a Breaker),
    /// A Cluster node's breaker.
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

/// One node's breaker: closed, or open with the time the next probe may
/// go.
#[derive(Debug)]
pub struct Breaker {
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
#[must_use = "a permit reports how its call went, or frees a probe's slot when dropped"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    /// A closed breaker that sends a probe `interval` after a failure.
    pub fn new(interval: Duration) -> Self {
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
    pub fn permit(&self) -> Option<Permit<'_>> {
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
    pub fn is_open(&self) -> bool {
        self.next_probe_at.load(Ordering::Relaxed) != 0
    }

    /// Opens the breaker (or keeps it open) until a probe one interval
    /// from now, as a call that found the node down does; true when this
    /// opened it.
    pub fn open(&self) -> bool {
        let next = self.now_us().saturating_add(self.interval_us).max(1);
        self.next_probe_at.swap(next, Ordering::Relaxed) == 0
    }

    /// Closes the breaker, as a call the node answered does; true when
    /// this closed it.
    pub fn close(&self) -> bool {
        self.next_probe_at.load(Ordering::Relaxed) != 0
            && self.next_probe_at.swap(0, Ordering::Relaxed) != 0
    }

    /// How long until the next probe may go: zero while closed or once it
    /// is due.
    pub fn retry_in(&self) -> Duration {
        match self.next_probe_at.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            at => Duration::from_micros(at.saturating_sub(self.now_us())),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Permit<'_> {
    /// The node answered (an answer with an error included): the breaker
    /// closes; true when this call closed it.
    #[inline]
    pub fn answered(mut self) -> bool {
        let closed = self.breaker.close();
        self.release();
        closed
    }

    /// The node is down (no connection, no answer in time): the breaker
    /// opens, or stays open, until a probe one interval from now; true
    /// when this call opened it.
    pub fn down(mut self) -> bool {
        let opened = self.breaker.open();
        self.release();
        opened
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

/// Whether `error` says Redis is down (no connection, no answer, a server
/// that cannot serve any call now) rather than refusing this one call: a
/// call that failed with it reports [`Permit::down`], any other answer
/// [`Permit::answered`].
pub fn is_down(error: &fred::error::Error) -> bool {
    match error.kind() {
        ErrorKind::Unknown
        | ErrorKind::InvalidArgument
        | ErrorKind::InvalidCommand
        | ErrorKind::Parse
        | ErrorKind::Protocol
        | ErrorKind::NotFound => {
            // Errors a server answers with while it cannot serve anything.
            const DOWN: [&str; 8] = [
                "BUSY",
                "LOADING",
                "MASTERDOWN",
                "TRYAGAIN",
                "READONLY",
                "NOREPLICAS",
                "MISCONF",
                "OOM",
            ];
            let code = error.details().split_whitespace().next().unwrap_or("");
            DOWN.contains(&code)
        }
        _ => true,
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
        assert!(first.down());
        assert!(breaker.is_open());
        assert!(!second.down(), "it was open already");
        assert!(breaker.permit().is_none(), "no probe before the interval");
        let probe = wait::until_some("the probe once the interval has passed", || {
            breaker.permit()
        });
        assert!(breaker.permit().is_none(), "one probe at a time");
        assert!(breaker.permit().is_none(), "a refused call frees no slot");
        drop(probe);
        // A probe dropped unreported frees its slot.
        let probe = breaker.permit().expect("the next probe");
        assert!(!probe.down());
        assert!(breaker.permit().is_none(), "the interval starts again");
        assert!(
            wait::until_some("the probe once the interval has passed again", || {
                breaker.permit()
            })
            .answered()
        );
        assert!(!breaker.is_open());
        assert_eq!(breaker.retry_in(), Duration::ZERO);
        assert!(breaker.open() && breaker.retry_in() > Duration::ZERO);
        assert!(breaker.close() && !breaker.close());
        assert!(breaker.permit().is_some() && breaker.permit().is_some());
    }
}
