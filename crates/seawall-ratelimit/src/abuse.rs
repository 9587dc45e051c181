//! Abuse detection: the clients whose behaviour departs from their own
//! past or from what a person does, found from a stream of answered
//! requests in fixed memory, each with a reason, and graduated actions that
//! expire.
//!
//! An [`AbuseWatch`] is fed one call of [`record`](AbuseWatch::record) per
//! answered request: the client's key (an address, an API key, a tenant:
//! whatever the service counts callers by), the route, the path and the
//! status. That call touches only atomics (count-min sketches of requests
//! and errors, a small HyperLogLog of paths per key bucket) and, for one
//! request in 16, the space-saving ranking of the heaviest keys.
//!
//! Every [`interval`](AbuseWatchBuilder::interval) (20 s),
//! [`judge`](AbuseWatch::judge) closes the interval and judges each key
//! it ranked, and each key it judged before (up to
//! [`tracked`](AbuseWatchBuilder::tracked) of them), on what the sketches
//! counted for it:
//!
//! - **Rate**: its share of all requests in the interval against its own
//!   baseline (an [`anomaly::Detector`](seawall_perfmon::anomaly::Detector)
//!   per key): a sudden burst, once the key has a baseline (ten intervals
//!   by default), of at least [three times](AbuseWatchBuilder::burst) its
//!   usual share. An alarm raised by a drop is no finding, nor the recovery
//!   after it.
//! - **Paths**: the share of its requests that went to distinct paths:
//!   a scraper walks a catalogue, a person reads a few pages again and again.
//! - **Errors**: the share of its requests answered 401, 403, 404 or 429:
//!   credential stuffing, enumeration, hammering past a limit.
//!
//! Each route is judged too, on the share of its requests answered with
//! those errors against the route's own baseline (a slow creep of errors
//! shows as a level shift); a route's finding is observed only, never acted
//! on. A key is judged only above a minimum of traffic in the interval
//! ([`min_requests`](AbuseWatchBuilder::min_requests)), so that light
//! clients never raise anything.
//!
//! **Actions** are graduated and expire: in [`Mode::Observe`] (the
//! default, a shadow mode) a finding is only recorded, logged and counted;
//! in [`Mode::Act`] a key's first finding tightens it (its requests
//! [`cost`](AbuseWatch::cost) more of its limit: a factor of 4 by default,
//! for 10 minutes), and a finding while it is tightened, on evidence
//! gathered after it was, asks for a block ([`Action::Block`]: the
//! caller blocks the key on its limiter, for 15 minutes by default). A key
//! on the [allow-list](AbuseWatchBuilder::allow) is observed, never acted
//! on. The refusals an action causes are not evidence: a key under an
//! action records no 403 or 429 as an error, so a block never feeds itself.
//!
//! **Fleet-wide**: with a [`RedisStore`] ([`AbuseWatchBuilder::exchange`])
//! each instance adds what it counted in an interval to a hash of that
//! interval in Redis and judges the interval before, merged from every
//! instance; so one instance's evidence counts on all of them, and every
//! instance reaches the same findings from the same numbers. A key's
//! interval is the wall clock's (`unix time / interval`), so the instances
//! agree on it within their clocks' skew. Without Redis, or while it cannot
//! be reached, an instance judges what it counted itself.
//!
//! ```
//! use std::time::Duration;
//! use seawall_ratelimit::abuse::{AbuseWatch, Mode, Signal};
//!
//! let watch = AbuseWatch::builder()
//!     .interval(Duration::from_secs(10))
//!     .mode(Mode::Act)
//!     .build()?;
//! let start: i64 = 1_800_000_000_000; // unix ms
//! // A scraper: 200 requests in ten seconds, each to another page.
//! for page in 0..200 {
//!     watch.record("203.0.113.9", "/api/contents/{id}", &format!("/api/contents/{page}"), 200);
//! }
//! let findings = watch.judge_local_at(start);
//! let finding = findings.iter().find(|f| f.key == "203.0.113.9").expect("found");
//! assert_eq!(finding.signal, Signal::Paths);
//! assert!(finding.reason.contains("distinct paths"), "{}", finding.reason);
//! // Its requests now cost four times as much of its limit.
//! assert_eq!(watch.cost("203.0.113.9"), 4);
//! assert_eq!(watch.cost("198.51.100.1"), 1);
//! # Ok::<(), seawall_ratelimit::Error>(())
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::types::Value;
use fred::types::scripts::Script;
use parking_lot::{Mutex, RwLock};
use seawall_perfmon::anomaly::{AnomalyOptions, Detector, Season};
use seawall_perfmon::{CounterVec, Monitor, TopKeys, one_in};

use crate::error::{Error, Result};
use crate::net::IpNet;
use crate::redis::RedisStore;

/// Rows of each count-min sketch.
const ROWS: usize = 4;
/// The bits of a key's hash that pick its counter in one row: each row
/// takes bits of its own.
const COLUMN_BITS: u32 = 13;
/// Counters in each row.
const WIDTH: usize = 1 << COLUMN_BITS;
/// Buckets of path registers: each key counts its paths in one.
const BUCKETS: usize = 4096;
/// HyperLogLog registers per bucket (a standard error of about 13 %).
const REGISTERS: usize = 64;
/// One request in this many is added to the ranking of heavy keys.
const SAMPLE: u32 = 16;
/// How many findings the watch keeps for [`AbuseWatch::findings`].
const KEPT_FINDINGS: usize = 200;
/// The most routes judged; requests of further routes are judged by key
/// only.
const ROUTES: usize = 128;
/// The most keys (clients and routes together) one instance sends to Redis
/// per interval, and the script accepts.
const MAX_EXCHANGED: usize = 2048;
/// The path hash's seed: every instance must hash a path alike, so that
/// their registers merge.
const PATH_SEED: u64 = 0x5ea_3a11_0ab5_e5ed;
/// How many intervals a tracked key may go unseen before it is forgotten.
const FORGET_AFTER: u32 = 30;

const SCRIPT: &str = include_str!("abuse.lua");

/// What the watch does about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Record, log and count findings; act on none (the default).
    Observe,
    /// Tighten a key on its first finding, block it on a finding while
    /// tightened.
    Act,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// A key's request rate far above its own baseline.
    Rate,
    /// A key's requests going to many distinct paths.
    Paths,
    /// A key's requests answered 401, 403, 404 or 429.
    Errors,
    /// A route's share of those errors above its own baseline.
    RouteErrors,
}

impl Signal {
    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Paths => "paths",
            Self::Errors => "errors",
            Self::RouteErrors => "route_errors",
        }
    }
}

/// What was done about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing: observe mode, an allow-listed key, a route, or a key
    /// already blocked.
    Observe,
    /// The key's requests cost more of its limit until `until`.
    Tighten,
    /// The key is to be blocked until `until` (the caller blocks it on its
    /// limiter).
    Block,
}

impl Action {
    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Tighten => "tighten",
            Self::Block => "block",
        }
    }
}

/// One finding: a key or a route, what was found, what was done, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// The client key, or the route for [`Signal::RouteErrors`].
    pub key: String,
    /// What was found.
    pub signal: Signal,
    /// What was done.
    pub action: Action,
    /// A sentence a person can read.
    pub reason: String,
    /// The start of the interval judged, in Unix milliseconds.
    pub interval_start_ms: i64,
    /// When the action ends, in Unix milliseconds (none for
    /// [`Action::Observe`]).
    pub until_ms: Option<i64>,
    /// The key's requests in the interval.
    pub requests: u64,
    /// Of them, answered 401, 403, 404 or 429 (not counting an action's own
    /// refusals).
    pub errors: u64,
    /// The distinct paths among them (an estimate).
    pub distinct_paths: u64,
}

/// An action in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActionInForce {
    /// The key.
    pub key: String,
    /// Tighten or block.
    pub action: Action,
    /// What a request of the key costs of its limit while tightened (1 while
    /// blocked: the limiter's block refuses it).
    pub cost: u64,
    /// When it ends, in Unix milliseconds.
    pub until_ms: i64,
    /// How long it still has, read by [`AbuseWatch::actions`].
    pub remaining: Duration,
    /// The finding's reason.
    pub reason: String,
}

/// What one interval counted for one key or route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    errors: u64,
    /// HyperLogLog registers of its paths (empty for a route).
    registers: Vec<u8>,
}

impl Counts {
    fn distinct(&self) -> u64 {
        distinct_of(&self.registers)
    }
}

/// The HyperLogLog estimate of `registers` (with the small-range
/// correction: linear counting while many registers are empty).
fn distinct_of(registers: &[u8]) -> u64 {
    if registers.is_empty() {
        return 0;
    }
    #[allow(clippy::cast_precision_loss)] // at most REGISTERS
    let m = registers.len() as f64;
    let sum: f64 = registers.iter().map(|&r| (-f64::from(r)).exp2()).sum();
    let alpha = 0.709; // for 64 registers
    let raw = alpha * m * m / sum;
    #[allow(clippy::cast_precision_loss)]
    let zeros = registers.iter().filter(|&&r| r == 0).count() as f64;
    let estimate = if raw <= 2.5 * m && zeros > 0.0 {
        m * (m / zeros).ln()
    } else {
        raw
    };
    // Rounded to a whole count; never negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = estimate.round().max(0.0) as u64;
    whole
}

/// One interval's sketches.
struct Sketch {
    requests: Box<[AtomicU32]>,
    errors: Box<[AtomicU32]>,
    paths: Box<[AtomicU8]>,
}

impl Sketch {
    fn new() -> Self {
        let counters = || (0..ROWS * WIDTH).map(|_| AtomicU32::new(0)).collect();
        Self {
            requests: counters(),
            errors: counters(),
            paths: (0..BUCKETS * REGISTERS).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    fn add(&self, hash: u64, error: bool, path: u64) {
        for at in cells(hash) {
            self.requests[at].fetch_add(1, Ordering::Relaxed);
            if error {
                self.errors[at].fetch_add(1, Ordering::Relaxed);
            }
        }
        let bucket = bucket(hash);
        #[allow(clippy::cast_possible_truncation)] // under REGISTERS
        let register = (path % REGISTERS as u64) as usize;
        // The rank of the first set bit of the rest of the hash, from 1.
        #[allow(clippy::cast_possible_truncation)] // at most 59
        let rank = ((path >> 6).trailing_zeros().min(57) + 1) as u8;
        self.paths[bucket * REGISTERS + register].fetch_max(rank, Ordering::Relaxed);
    }

    /// The key's counts: the least of its counters (count-min), and its
    /// bucket's registers.
    fn counts(&self, hash: u64) -> Counts {
        let least = |counters: &[AtomicU32]| {
            cells(hash)
                .map(|at| counters[at].load(Ordering::Relaxed))
                .min()
                .map_or(0, u64::from)
        };
        let bucket = bucket(hash);
        Counts {
            requests: least(&self.requests),
            errors: least(&self.errors),
            registers: self.paths[bucket * REGISTERS..(bucket + 1) * REGISTERS]
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .collect(),
        }
    }

    fn clear(&self) {
        for counter in self.requests.iter().chain(self.errors.iter()) {
            counter.store(0, Ordering::Relaxed);
        }
        for register in &self.paths {
            register.store(0, Ordering::Relaxed);
        }
    }
}

/// The counter of each row for a key's hash: row `r` reads bits
/// `r * COLUMN_BITS` to `(r + 1) * COLUMN_BITS` of it, so two keys share
/// every row only when 52 bits of their hashes agree, and a key shares
/// each row with another independently of the rest.
fn cells(hash: u64) -> impl Iterator<Item = usize> {
    (0..ROWS).map(move |row| {
        // Under WIDTH, so it fits.
        #[allow(clippy::cast_possible_truncation)]
        let column = ((hash >> (row as u32 * COLUMN_BITS)) & (WIDTH as u64 - 1)) as usize;
        row * WIDTH + column
    })
}

fn bucket(hash: u64) -> usize {
    #[allow(clippy::cast_possible_truncation)] // under BUCKETS
    let bucket = ((hash >> 17) % BUCKETS as u64) as usize;
    bucket
}

/// One route's counters in an interval.
struct RouteSlot {
    name: std::sync::OnceLock<Box<str>>,
    requests: [AtomicU32; 2],
    errors: [AtomicU32; 2],
}

/// Whether `status` is evidence of abuse: a failed authentication, a
/// refusal, a path that does not exist, a limit reached.
fn is_error(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 429)
}

/// What the watch keeps of a key it judges.
struct Tracked {
    rate: Detector,
    /// Intervals in a row it was not seen.
    unseen: u32,
}

/// An action on a key, in force until `until_ms` (Unix ms).
#[derive(Clone)]
struct Acted {
    action: Action,
    until_ms: i64,
    /// When it began: a block needs evidence from after this.
    since_ms: i64,
    reason: String,
}

struct State {
    keys: HashMap<String, Tracked>,
    routes: HashMap<String, Detector>,
    findings: VecDeque<Finding>,
}

struct Shared {
    options: Options,
    /// Which sketch takes this interval's requests (0 or 1).
    current: AtomicUsize,
    sketches: [Sketch; 2],
    routes: Box<[RouteSlot]>,
    ranking: Mutex<TopKeys>,
    /// The ranking of the interval being judged (taken at its close).
    state: Mutex<State>,
    acted: RwLock<HashMap<String, Acted>>,
    /// When each key lately pardoned was (Unix ms): evidence from before
    /// its pardon acts on it no more.
    pardoned: Mutex<HashMap<String, i64>>,
    /// How many keys are acted on: the request path's check is one load
    /// while there are none.
    acting: AtomicUsize,
    keys_hasher: foldhash::quality::FixedState,
    paths_hasher: foldhash::quality::FixedState,
    exchange: Option<(RedisStore, Arc<Script>)>,
    metrics: Option<Metrics>,
}

#[derive(Clone)]
struct Options {
    mode: Mode,
    interval: Duration,
    tracked: usize,
    ranked: usize,
    min_requests: u64,
    burst: f64,
    path_share: f64,
    min_errors: u64,
    error_share: f64,
    tighten: u64,
    tighten_for: Duration,
    block_for: Duration,
    detector: AnomalyOptions,
    route_detector: AnomalyOptions,
    allow_keys: HashSet<String>,
    allow_nets: Vec<IpNet>,
}

struct Metrics {
    findings: CounterVec,
}

/// Finds abusive clients from their answered requests. Cheap to clone; see
/// the [module](self).
#[derive(Clone)]
pub struct AbuseWatch(Arc<Shared>);

impl std::fmt::Debug for AbuseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbuseWatch")
            .field("mode", &self.0.options.mode)
            .field("interval", &self.0.options.interval)
            .field("acting", &self.0.acting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AbuseWatch {
    /// A builder with the defaults: observe only, intervals of 20 s.
    pub fn builder() -> AbuseWatchBuilder {
        AbuseWatchBuilder::default()
    }

    /// The mode it runs in.
    pub fn mode(&self) -> Mode {
        self.0.options.mode
    }

    /// The length of an interval.
    pub fn interval(&self) -> Duration {
        self.0.options.interval
    }

    /// Records one answered request of `key` on `route` (the route's
    /// pattern, e.g. `/api/contents/{id}`) to `path` (what was asked for:
    /// the path, and the query where pages or searches differ by it),
    /// answered with `status`. A 403 or 429 of a key under an action is the
    /// action's own and not counted as an error.
    pub fn record(&self, key: &str, route: &str, path: &str, status: u16) {
        let (current, error) = self.record_key(key, path, status);
        if let Some(slot) = self.route_slot(route) {
            slot.requests[current].fetch_add(1, Ordering::Relaxed);
            if error {
                slot.errors[current].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records the request [`record`](Self::record) recorded once more, for
    /// a key that groups callers (a tenant, whose users each have a key of
    /// their own): judged as a key of its own on its rate and its errors,
    /// while the request counts once for its route and in the total a key's
    /// rate is a share of. Not on its distinct paths: a group's many users
    /// read many pages as a matter of course. A tenant whose users each stay
    /// under [`min_requests`](AbuseWatchBuilder::min_requests) is judged on
    /// what they do together.
    pub fn record_group(&self, key: &str, status: u16) {
        self.record_key(key, "", status);
    }

    /// Counts one request of `key` to `path` in the current interval's
    /// sketches (and, one time in [`SAMPLE`], the ranking): the interval's
    /// parity and whether it counted as an error.
    fn record_key(&self, key: &str, path: &str, status: u16) -> (usize, bool) {
        let shared = &*self.0;
        let mut error = is_error(status);
        if error && matches!(status, 403 | 429) && shared.acting.load(Ordering::Relaxed) > 0 {
            error = !shared.acted.read().contains_key(key);
        }
        let current = shared.current.load(Ordering::Relaxed) & 1;
        let hash = shared.keys_hasher.hash_one(key);
        let path = shared.paths_hasher.hash_one(path);
        shared.sketches[current].add(hash, error, path);
        if one_in(SAMPLE) {
            shared.ranking.lock().add(key, u64::from(SAMPLE));
        }
        (current, error)
    }

    /// The slot of `route`, claimed on its first request; `None` once every
    /// slot is taken by other routes.
    fn route_slot(&self, route: &str) -> Option<&RouteSlot> {
        let slots = &self.0.routes;
        #[allow(clippy::cast_possible_truncation)] // under ROUTES
        let start = (self.0.keys_hasher.hash_one(route) % ROUTES as u64) as usize;
        for probe in 0..ROUTES {
            let slot = &slots[(start + probe) % ROUTES];
            match slot.name.get() {
                Some(name) if &**name == route => return Some(slot),
                Some(_) => {}
                None => {
                    let name = slot.name.get_or_init(|| Box::from(route));
                    if &**name == route {
                        return Some(slot);
                    }
                }
            }
        }
        None
    }

    /// What one request of `key` costs of its limit: 1, or the tightening's
    /// factor while the key is tightened. One atomic load while no key is.
    pub fn cost(&self, key: &str) -> u64 {
        if self.0.acting.load(Ordering::Relaxed) == 0 {
            return 1;
        }
        self.0
            .acted
            .read()
            .get(key)
            .filter(|acted| acted.action == Action::Tighten)
            .map_or(1, |_| self.0.options.tighten)
    }

    /// The actions in force, the one that ends last first.
    pub fn actions(&self) -> Vec<ActionInForce> {
        let now_ms = unix_ms();
        let mut actions: Vec<ActionInForce> = self
            .0
            .acted
            .read()
            .iter()
            .map(|(key, acted)| ActionInForce {
                key: key.clone(),
                action: acted.action,
                cost: if acted.action == Action::Tighten {
                    self.0.options.tighten
                } else {
                    1
                },
                until_ms: acted.until_ms,
                remaining: Duration::from_millis(
                    u64::try_from(acted.until_ms.saturating_sub(now_ms)).unwrap_or(0),
                ),
                reason: acted.reason.clone(),
            })
            .collect();
        actions.sort_by(|a, b| b.until_ms.cmp(&a.until_ms).then(a.key.cmp(&b.key)));
        actions
    }

    /// Ends the action on `key`, if any (an operator's pardon); whether
    /// there was one. Evidence from before the pardon acts on the key no
    /// more (a finding on it is observed only); what it does after, does.
    /// A block on a limiter is the caller's to lift.
    pub fn pardon(&self, key: &str) -> bool {
        self.pardon_at(key, unix_ms())
    }

    /// [`pardon`](Self::pardon) at `now_ms` (Unix milliseconds).
    pub fn pardon_at(&self, key: &str, now_ms: i64) -> bool {
        {
            let mut pardoned = self.0.pardoned.lock();
            // Ten intervals on, the evidence before it has been judged.
            let forget = now_ms.saturating_sub(self.interval_ms().saturating_mul(10));
            pardoned.retain(|_, at| *at > forget);
            pardoned.insert(key.to_owned(), now_ms);
        }
        let removed = self.0.acted.write().remove(key).is_some();
        if removed {
            self.0.acting.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// The latest findings, the newest first (at most 200 are kept).
    pub fn findings(&self) -> Vec<Finding> {
        self.0.state.lock().findings.iter().rev().cloned().collect()
    }

    /// Closes the interval now and judges it: through Redis when the watch
    /// has an [exchange](AbuseWatchBuilder::exchange) (the interval before,
    /// merged from every instance), else from this instance's counts. Call
    /// it once per interval, soon after the interval's end (see
    /// [`next_close`](Self::next_close)).
    pub async fn judge(&self) -> Vec<Finding> {
        self.judge_at(unix_ms()).await
    }

    /// [`judge`](Self::judge) at `now_ms` (Unix milliseconds).
    pub async fn judge_at(&self, now_ms: i64) -> Vec<Finding> {
        let interval_ms = self.interval_ms();
        // The interval that just closed.
        let window = now_ms.div_euclid(interval_ms) - 1;
        let local = self.close();
        let Some((store, script)) = &self.0.exchange else {
            return self.judge_counts(window * interval_ms, now_ms, local);
        };
        match exchange(store, script, window, interval_ms, &local).await {
            Ok(merged) => self.judge_counts((window - 1) * interval_ms, now_ms, merged),
            Err(error) => {
                tracing::warn!(%error, "the abuse watch could not reach Redis; judging this instance's counts alone");
                self.judge_counts(window * interval_ms, now_ms, local)
            }
        }
    }

    /// Closes the interval and judges this instance's counts, at `now_ms`
    /// (Unix milliseconds): [`judge`](Self::judge) without Redis, for tests
    /// and single instances.
    pub fn judge_local_at(&self, now_ms: i64) -> Vec<Finding> {
        let interval_ms = self.interval_ms();
        let window = now_ms.div_euclid(interval_ms) - 1;
        let local = self.close();
        self.judge_counts(window * interval_ms, now_ms, local)
    }

    /// How long from `now_ms` until the next interval closes, plus a tenth
    /// of an interval, so that every instance has sent its counts of the
    /// interval before when one reads them.
    pub fn next_close(&self, now_ms: i64) -> Duration {
        let interval_ms = self.interval_ms();
        let into = now_ms.rem_euclid(interval_ms);
        let wait = interval_ms - into + interval_ms / 10;
        Duration::from_millis(u64::try_from(wait).unwrap_or(0))
    }

    /// [`next_close`](Self::next_close) from now: how long a task that
    /// judges each interval sleeps before its next [`judge`](Self::judge).
    pub fn until_next_close(&self) -> Duration {
        self.next_close(unix_ms())
    }

    fn interval_ms(&self) -> i64 {
        i64::try_from(self.0.options.interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Swaps the sketches and reads what the closed one counted for every
    /// ranked and tracked key and every route; clears it.
    fn close(&self) -> HashMap<String, Counts> {
        let shared = &*self.0;
        let closed = shared.current.fetch_xor(1, Ordering::AcqRel) & 1;
        let ranked = shared.ranking.lock().take();
        let sketch = &shared.sketches[closed];
        let mut counts: HashMap<String, Counts> = HashMap::new();
        {
            let state = shared.state.lock();
            let keys = ranked
                .iter()
                .take(shared.options.ranked)
                .map(|ranked| ranked.key.as_str())
                .chain(state.keys.keys().map(String::as_str));
            for key in keys {
                if counts.len() >= MAX_EXCHANGED - ROUTES {
                    break;
                }
                let found = sketch.counts(shared.keys_hasher.hash_one(key));
                if found.requests > 0 {
                    counts.insert(client_field(key), found);
                }
            }
        }
        for slot in shared.routes.iter() {
            let Some(name) = slot.name.get() else {
                continue;
            };
            let requests = slot.requests[closed].swap(0, Ordering::Relaxed);
            let errors = slot.errors[closed].swap(0, Ordering::Relaxed);
            if requests > 0 {
                counts.insert(
                    route_field(name),
                    Counts {
                        requests: u64::from(requests),
                        errors: u64::from(errors),
                        registers: Vec::new(),
                    },
                );
            }
        }
        sketch.clear();
        counts
    }

    /// Judges one interval's counts (keys as [`client_field`] and
    /// [`route_field`] name them), acts, and records the findings.
    fn judge_counts(
        &self,
        start_ms: i64,
        now_ms: i64,
        counts: HashMap<String, Counts>,
    ) -> Vec<Finding> {
        let shared = &*self.0;
        let options = &shared.options;
        self.expire(now_ms);
        let seconds = start_ms.div_euclid(1000);
        let mut findings = Vec::new();
        let mut state = shared.state.lock();
        let state = &mut *state;
        for tracked in state.keys.values_mut() {
            tracked.unseen += 1;
        }
        let mut counts: Vec<(String, Counts)> = counts.into_iter().collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        // Every request of the interval, as the routes counted them.
        let total: u64 = counts
            .iter()
            .filter(|(field, _)| field.starts_with('r'))
            .map(|(_, found)| found.requests)
            .sum();
        for (field, found) in counts {
            if let Some(route) = field.strip_prefix('r') {
                if let Some(finding) = self.judge_route(state, route, &found, start_ms, seconds) {
                    findings.push(finding);
                }
                continue;
            }
            let Some(key) = field.strip_prefix('c') else {
                continue;
            };
            if state.keys.len() >= options.tracked && !state.keys.contains_key(key) {
                continue;
            }
            let tracked = state.keys.entry(key.to_owned()).or_insert_with(|| Tracked {
                rate: Detector::new(options.detector),
                unseen: 0,
            });
            tracked.unseen = 0;
            // A key's rate is its share of all requests (per thousand): a
            // promotion that brings everyone back more often moves no share,
            // one key's burst moves its own.
            #[allow(clippy::cast_precision_loss)] // counts of one interval
            let share = if total == 0 {
                f64::NAN
            } else {
                found.requests as f64 * 1000.0 / total.max(found.requests) as f64
            };
            let rate = tracked.rate.observe(seconds, share);
            if found.requests < options.min_requests {
                continue;
            }
            let distinct = found.distinct().min(found.requests);
            #[allow(clippy::cast_precision_loss)]
            let (path_share, error_share) = (
                distinct as f64 / found.requests as f64,
                found.errors as f64 / found.requests as f64,
            );
            let every = humanize(options.interval);
            let signal = if found.errors >= options.min_errors && error_share >= options.error_share
            {
                Some((
                    Signal::Errors,
                    format!(
                        "{} of the {} requests of {key} in {every} ({:.0} %) were answered 401, 403, 404 or 429",
                        found.errors,
                        found.requests,
                        error_share * 100.0
                    ),
                ))
            } else if path_share >= options.path_share {
                Some((
                    Signal::Paths,
                    format!(
                        "{key} asked for about {distinct} distinct paths in {} requests in {every} ({:.0} % distinct; a person's share is under {:.0} %)",
                        found.requests,
                        path_share * 100.0,
                        options.path_share * 100.0
                    ),
                ))
            } else if rate.alarm
                // Only an alarm raised by a rise: not one raised by a drop,
                // nor the recovery after it.
                && rate.rising
                && rate.strength > 0.0
                && share >= options.burst * rate.expected
            {
                rate.reason(&format!(
                    "the requests of {key} per thousand of all requests in {every}"
                ))
                .map(|reason| (Signal::Rate, reason))
            } else {
                None
            };
            if let Some((signal, reason)) = signal {
                let (action, until_ms) = self.act(key, now_ms, start_ms, &reason);
                findings.push(Finding {
                    key: key.to_owned(),
                    signal,
                    action,
                    reason,
                    interval_start_ms: start_ms,
                    until_ms,
                    requests: found.requests,
                    errors: found.errors,
                    distinct_paths: distinct,
                });
            }
        }
        state
            .keys
            .retain(|_, tracked| tracked.unseen < FORGET_AFTER);
        for finding in &findings {
            if let Some(metrics) = &shared.metrics
                && let Ok(counter) = metrics
                    .findings
                    .with_labels(&[finding.signal.as_str(), finding.action.as_str()])
            {
                counter.inc();
            }
            log_finding(finding);
            state.findings.push_back(finding.clone());
            if state.findings.len() > KEPT_FINDINGS {
                state.findings.pop_front();
            }
        }
        findings
    }

    fn judge_route(
        &self,
        state: &mut State,
        route: &str,
        found: &Counts,
        start_ms: i64,
        seconds: i64,
    ) -> Option<Finding> {
        let options = &self.0.options;
        if !state.routes.contains_key(route) && state.routes.len() >= ROUTES {
            return None;
        }
        if found.requests < options.min_requests {
            return None;
        }
        let detector = state
            .routes
            .entry(route.to_owned())
            .or_insert_with(|| Detector::new(options.route_detector));
        #[allow(clippy::cast_precision_loss)]
        let share = found.errors as f64 / found.requests as f64;
        let verdict = detector.observe(seconds, share);
        if !(verdict.raised && verdict.strength > 0.0) {
            return None;
        }
        let reason = verdict.reason(&format!(
            "the share of requests to {route} answered 401, 403, 404 or 429"
        ))?;
        Some(Finding {
            key: route.to_owned(),
            signal: Signal::RouteErrors,
            action: Action::Observe,
            reason,
            interval_start_ms: start_ms,
            until_ms: None,
            requests: found.requests,
            errors: found.errors,
            distinct_paths: 0,
        })
    }

    /// What to do about a finding on `key` in the interval that began at
    /// `start_ms`: the graduated action, put in force.
    fn act(&self, key: &str, now_ms: i64, start_ms: i64, reason: &str) -> (Action, Option<i64>) {
        let shared = &*self.0;
        let options = &shared.options;
        if options.mode == Mode::Observe || self.allowed(key) {
            return (Action::Observe, None);
        }
        // Evidence from before an operator's pardon does not undo it.
        if shared
            .pardoned
            .lock()
            .get(key)
            .is_some_and(|&at| start_ms < at)
        {
            return (Action::Observe, None);
        }
        let mut acted = shared.acted.write();
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let (action, until_ms) = match acted.get(key) {
            Some(current) if current.action == Action::Block => return (Action::Observe, None),
            // Evidence from before the tightening does not escalate it.
            Some(current) if start_ms < current.since_ms => return (Action::Observe, None),
            Some(_) => (
                Action::Block,
                now_ms.saturating_add(millis(options.block_for)),
            ),
            None => (
                Action::Tighten,
                now_ms.saturating_add(millis(options.tighten_for)),
            ),
        };
        let fresh = acted
            .insert(
                key.to_owned(),
                Acted {
                    action,
                    until_ms,
                    since_ms: now_ms,
                    reason: reason.to_owned(),
                },
            )
            .is_none();
        if fresh {
            shared.acting.fetch_add(1, Ordering::Relaxed);
        }
        (action, Some(until_ms))
    }

    /// Ends the actions whose time is up.
    fn expire(&self, now_ms: i64) {
        let mut acted = self.0.acted.write();
        let before = acted.len();
        acted.retain(|_, acted| acted.until_ms > now_ms);
        let gone = before - acted.len();
        if gone > 0 {
            self.0.acting.fetch_sub(gone, Ordering::Relaxed);
        }
    }

    /// Whether `key` is on the allow-list: by name, or as an address in an
    /// allowed network.
    fn allowed(&self, key: &str) -> bool {
        let options = &self.0.options;
        options.allow_keys.contains(key)
            || key
                .parse::<IpAddr>()
                .is_ok_and(|ip| options.allow_nets.iter().any(|net| net.contains(ip)))
    }
}

/// The abuse watch found something, and did what `finding.action` says: a
/// warning when it acted, information when it only observed (a finding that
/// lasts repeats every interval).
fn log_finding(finding: &Finding) {
    if finding.action == Action::Observe {
        tracing::info!(
            name: "ratelimit.abuse",
            {
                seawall.ratelimit.key = %finding.key,
                seawall.ratelimit.signal = finding.signal.as_str(),
                seawall.ratelimit.action = finding.action.as_str(),
            },
            "abuse observed: {}", finding.reason
        );
    } else {
        tracing::warn!(
            name: "ratelimit.abuse",
            {
                seawall.ratelimit.key = %finding.key,
                seawall.ratelimit.signal = finding.signal.as_str(),
                seawall.ratelimit.action = finding.action.as_str(),
            },
            "abuse acted on ({}): {}", finding.action.as_str(), finding.reason
        );
    }
}

fn client_field(key: &str) -> String {
    format!("c{key}")
}

fn route_field(route: &str) -> String {
    format!("r{route}")
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// "10 s", "1 min": an interval as the reasons say it.
fn humanize(interval: Duration) -> String {
    let secs = interval.as_secs_f64();
    if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{} min", secs / 60.0)
    } else {
        format!("{secs} s")
    }
}

/// Adds this instance's counts of `window` to Redis and reads every
/// instance's counts of the window before.
async fn exchange(
    store: &RedisStore,
    script: &Script,
    window: i64,
    interval_ms: i64,
    local: &HashMap<String, Counts>,
) -> Result<HashMap<String, Counts>> {
    let prefix = format!("{{{}:abuse}}", store.prefix());
    let keys = vec![
        format!("{prefix}:{window}"),
        format!("{prefix}:{}", window - 1),
    ];
    // Kept three intervals: the one judged next is the oldest read.
    let mut args: Vec<Value> = Vec::with_capacity(1 + local.len() * 4);
    args.push(Value::from(interval_ms.saturating_mul(3)));
    for (field, counts) in local.iter().take(MAX_EXCHANGED) {
        args.push(Value::from(field.as_str()));
        args.push(Value::from(
            i64::try_from(counts.requests).unwrap_or(i64::MAX),
        ));
        args.push(Value::from(
            i64::try_from(counts.errors).unwrap_or(i64::MAX),
        ));
        args.push(Value::from(fred::bytes::Bytes::from(
            counts.registers.clone(),
        )));
    }
    let reply: Vec<Value> = store.call("abuse", ("abuse", script), keys, args).await?;
    let mut merged: HashMap<String, Counts> = HashMap::new();
    let text = |value: &Value| -> Result<Vec<u8>> {
        match value {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Bytes(b) => Ok(b.to_vec()),
            Value::Integer(i) => Ok(i.to_string().into_bytes()),
            other => Err(Error::Protocol(format!(
                "the abuse script answered {other:?} where a field was due"
            ))),
        }
    };
    for pair in reply.chunks_exact(2) {
        let name = text(&pair[0])?;
        let value = text(&pair[1])?;
        let Some((&kind, field)) = name.split_first() else {
            continue;
        };
        let field = String::from_utf8_lossy(field).into_owned();
        let number = || -> Result<u64> {
            std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Protocol(format!("{field:?} has no count")))
        };
        let entry = merged.entry(field.clone()).or_default();
        match kind {
            b'n' => entry.requests = number()?,
            b'e' => entry.errors = number()?,
            b'h' => entry.registers = value,
            _ => {}
        }
    }
    Ok(merged)
}

/// Builds an [`AbuseWatch`].
#[derive(Debug, Clone)]
pub struct AbuseWatchBuilder {
    mode: Mode,
    interval: Duration,
    tracked: usize,
    ranked: usize,
    min_requests: u64,
    burst: f64,
    path_share: f64,
    min_errors: u64,
    error_share: f64,
    tighten: u64,
    tighten_for: Duration,
    block_for: Duration,
    detector: AnomalyOptions,
    route_detector: AnomalyOptions,
    allow: Vec<String>,
    exchange: Option<RedisStore>,
    metrics: Option<Monitor>,
}

impl Default for AbuseWatchBuilder {
    fn default() -> Self {
        Self {
            mode: Mode::Observe,
            interval: Duration::from_secs(20),
            tracked: 512,
            ranked: 64,
            min_requests: 20,
            burst: 3.0,
            path_share: 0.5,
            min_errors: 20,
            error_share: 0.5,
            tighten: 4,
            tighten_for: Duration::from_secs(600),
            block_for: Duration::from_secs(900),
            // A key's share of the requests: no season (a key's day is
            // rarely regular enough), a baseline from ten intervals on,
            // following about the last 40, windows of 3 and 12 intervals;
            // an alarm needs evidence that strong in under a tenth of the
            // key's judged intervals. A new
            // high of a key's share is no alarm of its own: a young key
            // reaches one in most of its first intervals, and a client's
            // share drifts up as its day does; only rarity judges it.
            detector: AnomalyOptions::default()
                .season(Season::None)
                .learning(10, 1)
                .weights(0.05, 0.05)
                .windows(3, 12)
                .rarity(0.1, 100)
                .range_margin(f64::INFINITY),
            // A route's error share: no season, following about the last
            // 200 intervals, so that a creep over minutes shows as a shift;
            // a baseline from 20 intervals on, an alarm once evidence that
            // strong came in under a tenth of them; a scale of at least a
            // point of the share (a route without errors is not alarmed by
            // its first 404). A new high of the share, two scales (two
            // points at least) over its baseline, is an alarm: a creep
            // passes every share the route has had.
            route_detector: AnomalyOptions::default()
                .season(Season::None)
                .learning(20, 1)
                .weights(0.01, 0.01)
                .windows(3, 12)
                .floor(0.01)
                .rarity(0.1, 200),
            allow: Vec::new(),
            exchange: None,
            metrics: None,
        }
    }
}

impl AbuseWatchBuilder {
    /// Observe only (the default) or act.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How long an interval is (20 s by default; 1 s to 1 h).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How many keys it judges at most at once (512), and how many of the
    /// heaviest of an interval it starts judging (64).
    pub fn tracked(mut self, tracked: usize, ranked: usize) -> Self {
        self.tracked = tracked;
        self.ranked = ranked;
        self
    }

    /// The fewest requests in an interval for a key (or a route) to be
    /// judged (20: a client at one request a second; a person reading
    /// pages asks for fewer).
    pub fn min_requests(mut self, requests: u64) -> Self {
        self.min_requests = requests;
        self
    }

    /// How many times its usual share of all requests a key must send for
    /// an alarm on its rate to be a finding (3): the rate's detector says
    /// a share is unusual for the key, this says it is a burst. Everyone's
    /// share moves when a crowd comes or goes (a promotion, an attack's
    /// traffic that ends), by a half or so; a burst multiplies one key's.
    pub fn burst(mut self, factor: f64) -> Self {
        self.burst = factor;
        self
    }

    /// The share of distinct paths among a key's requests that is a
    /// finding (0.5).
    pub fn path_share(mut self, share: f64) -> Self {
        self.path_share = share;
        self
    }

    /// The fewest errors, and the share of errors among a key's requests,
    /// that is a finding (20 and 0.5).
    pub fn errors(mut self, least: u64, share: f64) -> Self {
        self.min_errors = least;
        self.error_share = share;
        self
    }

    /// What a tightened key's request costs of its limit (4: a quarter of
    /// its limit), and for how long (10 minutes).
    pub fn tighten(mut self, factor: u64, duration: Duration) -> Self {
        self.tighten = factor;
        self.tighten_for = duration;
        self
    }

    /// How long a block lasts (15 minutes).
    pub fn block_for(mut self, duration: Duration) -> Self {
        self.block_for = duration;
        self
    }

    /// How a key's rate is judged against its baseline.
    pub fn detector(mut self, options: AnomalyOptions) -> Self {
        self.detector = options;
        self
    }

    /// How a route's error share is judged against its baseline.
    pub fn route_detector(mut self, options: AnomalyOptions) -> Self {
        self.route_detector = options;
        self
    }

    /// A key never acted on: the key itself, or a network (`10.0.0.0/8`)
    /// whose addresses are keys.
    pub fn allow(mut self, entry: impl Into<String>) -> Self {
        self.allow.push(entry.into());
        self
    }

    /// Shares evidence with every instance through Redis.
    pub fn exchange(mut self, store: RedisStore) -> Self {
        self.exchange = Some(store);
        self
    }

    /// Counts findings as `ratelimit_abuse_findings_total` by `signal` and
    /// `action` on `monitor`.
    pub fn metrics(mut self, monitor: &Monitor) -> Self {
        self.metrics = Some(monitor.clone());
        self
    }

    /// Builds the watch.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a setting out of its range or an
    /// allow-list entry that looks like a network but is not one;
    /// [`Error::Metrics`] when the metrics cannot be registered.
    pub fn build(self) -> Result<AbuseWatch> {
        let invalid = |what: String| Err(Error::InvalidConfig(format!("abuse watch: {what}")));
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(3600) {
            return invalid(format!(
                "the interval must be 1 s to 1 h, not {:?}",
                self.interval
            ));
        }
        if self.tracked == 0 || self.ranked == 0 || self.tracked > 100_000 || self.ranked > 1024 {
            return invalid(format!(
                "keys tracked must be 1 to 100000 ({}) and ranked 1 to 1024 ({})",
                self.tracked, self.ranked
            ));
        }
        let share = |x: f64| x > 0.0 && x <= 1.0;
        if !share(self.path_share) || !share(self.error_share) {
            return invalid(format!(
                "the path share ({}) and the error share ({}) must be above 0 and at most 1",
                self.path_share, self.error_share
            ));
        }
        if self.min_requests == 0 {
            return invalid("the minimum of requests must be at least 1".to_owned());
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            return invalid(format!(
                "the burst factor must be a number of at least 1, not {}",
                self.burst
            ));
        }
        if !(2..=1000).contains(&self.tighten) {
            return invalid(format!(
                "the tightening factor must be 2 to 1000, not {}",
                self.tighten
            ));
        }
        for (what, duration) in [("tightening", self.tighten_for), ("block", self.block_for)] {
            if duration < Duration::from_secs(1) || duration > crate::limiter::MAX_DURATION {
                return invalid(format!(
                    "a {what} must last 1 s to 100 years, not {duration:?}"
                ));
            }
        }
        for (what, options) in [
            ("the key detector", &self.detector),
            ("the route detector", &self.route_detector),
        ] {
            if let Err(problem) = options.check() {
                return invalid(format!("{what}: {problem}"));
            }
        }
        let mut allow_keys = HashSet::new();
        let mut allow_nets = Vec::new();
        for entry in self.allow {
            if entry.contains('/') {
                allow_nets.push(entry.parse::<IpNet>().map_err(|_| {
                    Error::InvalidConfig(format!(
                        "abuse watch: the allow-list entry {entry:?} is not a network"
                    ))
                })?);
            } else {
                allow_keys.insert(entry);
            }
        }
        let metrics = self
            .metrics
            .as_ref()
            .map(|monitor| {
                monitor
                    .counter(
                        "ratelimit_abuse_findings",
                        "Abuse findings, by what was found and what was done.",
                        &["signal", "action"],
                    )
                    .and_then(|findings| {
                        // Every finding there can be, at zero from the
                        // start: a series that appears only with its first
                        // finding would make a rate over it miss that one.
                        for signal in [Signal::Rate, Signal::Paths, Signal::Errors] {
                            for action in [Action::Observe, Action::Tighten, Action::Block] {
                                findings.with_labels(&[signal.as_str(), action.as_str()])?;
                            }
                        }
                        findings.with_labels(&[
                            Signal::RouteErrors.as_str(),
                            Action::Observe.as_str(),
                        ])?;
                        Ok(Metrics { findings })
                    })
                    .map_err(Error::Metrics)
            })
            .transpose()?;
        let routes = (0..ROUTES)
            .map(|_| RouteSlot {
                name: std::sync::OnceLock::new(),
                requests: [AtomicU32::new(0), AtomicU32::new(0)],
                errors: [AtomicU32::new(0), AtomicU32::new(0)],
            })
            .collect();
        Ok(AbuseWatch(Arc::new(Shared {
            options: Options {
                mode: self.mode,
                interval: self.interval,
                tracked: self.tracked,
                ranked: self.ranked,
                min_requests: self.min_requests,
                burst: self.burst,
                path_share: self.path_share,
                min_errors: self.min_errors,
                error_share: self.error_share,
                tighten: self.tighten,
                tighten_for: self.tighten_for,
                block_for: self.block_for,
                detector: self.detector,
                route_detector: self.route_detector,
                allow_keys,
                allow_nets,
            },
            current: AtomicUsize::new(0),
            sketches: [Sketch::new(), Sketch::new()],
            routes,
            ranking: Mutex::new(TopKeys::new(self.ranked.max(16) * 2)),
            state: Mutex::new(State {
                keys: HashMap::new(),
                routes: HashMap::new(),
                findings: VecDeque::new(),
            }),
            acted: RwLock::new(HashMap::new()),
            pardoned: Mutex::new(HashMap::new()),
            acting: AtomicUsize::new(0),
            keys_hasher: foldhash::quality::FixedState::with_seed(unix_ms().unsigned_abs()),
            paths_hasher: foldhash::quality::FixedState::with_seed(PATH_SEED),
            exchange: self
                .exchange
                .map(|store| (store, Arc::new(Script::from_lua(SCRIPT)))),
            metrics,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_800_000_000_000;
    const TEN_S: i64 = 10_000;

    fn watch(mode: Mode) -> AbuseWatch {
        AbuseWatch::builder()
            .mode(mode)
            .interval(Duration::from_secs(10))
            .build()
            .expect("watch")
    }

    /// `n` requests of `key`, each to the same few paths, answered 200.
    fn reads(watch: &AbuseWatch, key: &str, n: usize) {
        for i in 0..n {
            watch.record(
                key,
                "/api/reviews/due",
                &format!("/api/reviews/due?page={}", i % 3),
                200,
            );
        }
    }

    /// A key is counted on its own requests, not on another's whose hash
    /// shares part of its bits: each row's counter comes from bits of the
    /// hash no other row uses, so two keys share every row only when 52
    /// bits of their hashes agree. (Rows derived as `a + row * b` from two
    /// halves of the hash used 22 bits: keys whose hashes agreed there
    /// were one key to the sketch, and a light client could be judged on a
    /// heavy one's requests.)
    #[test]
    fn keys_whose_hashes_differ_are_counted_apart() {
        let sketch = Sketch::new();
        let one = 0x0123_4567_89ab_cdef_u64;
        // Differing in one bit, each bit in turn: every row's column is
        // made of some of the first ROWS * COLUMN_BITS bits.
        let used = u32::try_from(ROWS).expect("few") * COLUMN_BITS;
        for bit in 0..used {
            let other = one ^ (1 << bit);
            assert!(
                cells(one).zip(cells(other)).any(|(a, b)| a != b),
                "bit {bit}: every row the same"
            );
        }
        for _ in 0..10 {
            sketch.add(one, false, 1);
        }
        for _ in 0..10 {
            sketch.add(one ^ (1 << 20), true, 2);
        }
        let counts = sketch.counts(one);
        assert_eq!((counts.requests, counts.errors), (10, 0));
    }

    /// Normal traffic: 40 users of 60 requests each to three paths.
    fn crowd(watch: &AbuseWatch, per_user: usize) {
        for user in 0..40 {
            reads(watch, &format!("key:{user}"), per_user);
        }
    }

    fn about<'a>(findings: &'a [Finding], key: &str) -> Option<&'a Finding> {
        findings.iter().find(|f| f.key == key)
    }

    #[test]
    fn a_person_reading_a_few_pages_again_and_again_is_no_finding() {
        let watch = watch(Mode::Act);
        for i in 0..20 {
            crowd(&watch, 60);
            let findings = watch.judge_local_at(START + i * TEN_S);
            assert!(findings.is_empty(), "interval {i}: {findings:?}");
        }
        assert_eq!(watch.cost("key:1"), 1);
    }

    #[test]
    fn a_scraper_walking_the_catalogue_is_found_by_its_distinct_paths() {
        let watch = watch(Mode::Observe);
        crowd(&watch, 60);
        for page in 0..300 {
            watch.record(
                "key:scraper",
                "/api/contents/{id}",
                &format!("/api/contents/{page}"),
                200,
            );
        }
        let findings = watch.judge_local_at(START);
        let finding = about(&findings, "key:scraper").expect("the scraper is found");
        assert_eq!(finding.signal, Signal::Paths);
        assert_eq!(
            finding.action,
            Action::Observe,
            "observe mode acts on nothing"
        );
        assert!((200..=300).contains(&finding.distinct_paths), "{finding:?}");
        assert_eq!(finding.requests, 300);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(watch.cost("key:scraper"), 1);
        assert_eq!(watch.findings()[0], *finding);
    }

    #[test]
    fn failed_authentications_are_found_by_their_error_share() {
        let watch = watch(Mode::Act);
        crowd(&watch, 60);
        for attempt in 0..200 {
            // One login path, key after key: few distinct paths.
            let status = if attempt % 10 == 0 { 200 } else { 401 };
            watch.record("198.51.100.7", "/api/me", "/api/me", status);
        }
        let findings = watch.judge_local_at(START);
        let finding = about(&findings, "198.51.100.7").expect("found");
        assert_eq!(finding.signal, Signal::Errors);
        assert_eq!((finding.requests, finding.errors), (200, 180));
        assert!(
            finding
                .reason
                .starts_with("180 of the 200 requests of 198.51.100.7 in 10 s (90 %)"),
            "{}",
            finding.reason
        );
        assert_eq!(finding.action, Action::Tighten);
    }

    #[test]
    fn light_clients_are_never_judged_whatever_they_do() {
        let watch = watch(Mode::Act);
        for i in 0..10 {
            crowd(&watch, 60);
            for key in 0..100 {
                // Ten requests each, every one a 404 on a new path.
                for page in 0..10 {
                    watch.record(
                        &format!("203.0.113.{key}"),
                        "/api/contents/{id}",
                        &format!("/api/contents/{i}-{page}"),
                        404,
                    );
                }
            }
            let findings = watch.judge_local_at(START + i * TEN_S);
            assert!(
                findings.iter().all(|f| f.signal == Signal::RouteErrors),
                "interval {i}: {findings:?}"
            );
        }
    }

    /// A client whose share of the requests drops (its alarm raised by
    /// the drop) and then comes back a little above its usual share is no
    /// burst: the drop's alarm is no finding while it lasts, nor is the
    /// recovery after it. (With the burst factor at 1, so that this rule
    /// is what is tested: a recovery to a little above the usual share is
    /// under three times it anyway.)
    #[test]
    fn a_drop_and_the_recovery_after_it_are_no_burst() {
        let watch = AbuseWatch::builder()
            .mode(Mode::Act)
            .interval(Duration::from_secs(10))
            .burst(1.0)
            .build()
            .expect("watch");
        let mut at = START;
        for i in 0..30 {
            crowd(&watch, 60);
            // 56 to 64 requests an interval.
            reads(&watch, "key:dip", 56 + (i % 5) * 2);
            assert!(watch.judge_local_at(at).is_empty());
            at += TEN_S;
        }
        let mut findings = Vec::new();
        for interval in 0..14 {
            crowd(&watch, 60);
            let requests = if interval < 2 { 25 } else { 70 };
            reads(&watch, "key:dip", requests);
            if interval < 2 {
                // Someone new takes up the rest, so that the crowd's shares
                // (constant here, so with no noise at all) stay put.
                reads(&watch, "key:new", 35);
            }
            findings.extend(watch.judge_local_at(at));
            at += TEN_S;
        }
        assert!(findings.is_empty(), "{findings:?}");
    }

    /// When a crowd's traffic ends (an attack's, say), every other key's
    /// share of the requests rises at once, by two thirds here: unusual
    /// for each key's detector, but no key sent three times its share, so
    /// no burst. (On the attack traces the heavy users were tightened and
    /// then blocked so, when the stuffing ended.)
    #[test]
    fn shares_that_rise_together_when_a_crowd_leaves_are_no_burst() {
        let watch = watch(Mode::Act);
        let heavy = |watch: &AbuseWatch, i: usize| {
            for user in 0..10 {
                // 56 to 64 requests an interval, each user in its own turn.
                reads(watch, &format!("key:heavy{user}"), 56 + (i + user) % 5 * 2);
            }
        };
        let mut at = START;
        let mut findings = Vec::new();
        for i in 0..60 {
            heavy(&watch, i);
            // A crowd of light clients (under the minimum, never judged)
            // with two fifths of the requests, then gone, then back.
            if !(30..45).contains(&i) {
                for user in 0..40 {
                    reads(&watch, &format!("key:light{user}"), 10);
                }
            }
            findings.extend(watch.judge_local_at(at));
            at += TEN_S;
        }
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn one_keys_burst_is_found_and_a_crowd_that_comes_back_more_often_is_not() {
        let watch = watch(Mode::Act);
        let mut at = START;
        for _ in 0..20 {
            crowd(&watch, 60);
            reads(&watch, "key:burst", 60);
            assert!(watch.judge_local_at(at).is_empty());
            at += TEN_S;
        }
        // A promotion: everyone three times as often.
        for _ in 0..3 {
            crowd(&watch, 180);
            reads(&watch, "key:burst", 180);
            let findings = watch.judge_local_at(at);
            assert!(findings.is_empty(), "{findings:?}");
            at += TEN_S;
        }
        // One key ten times as often.
        crowd(&watch, 60);
        reads(&watch, "key:burst", 600);
        let findings = watch.judge_local_at(at);
        let finding = about(&findings, "key:burst").expect("the burst is found");
        assert_eq!(finding.signal, Signal::Rate);
        assert!(
            finding
                .reason
                .starts_with("the requests of key:burst per thousand of all requests in 10 s are "),
            "{}",
            finding.reason
        );
        assert_eq!(findings.len(), 1, "{findings:?}");
    }

    /// A pardoned key is not acted on again for what it did before its
    /// pardon, only for what it does after.
    #[test]
    fn a_pardon_holds_against_the_evidence_before_it() {
        let watch = watch(Mode::Act);
        let walk = |from: usize| {
            for page in from..from + 200 {
                watch.record(
                    "203.0.113.9",
                    "/api/contents/{id}",
                    &format!("/api/contents/{page}"),
                    200,
                );
            }
        };
        walk(0);
        watch.judge_local_at(START);
        assert_eq!(watch.cost("203.0.113.9"), 4, "tightened");
        // It walked on before the operator pardoned it; that interval is
        // judged after the pardon.
        walk(200);
        assert!(watch.pardon_at("203.0.113.9", START + TEN_S / 2));
        let findings = watch.judge_local_at(START + TEN_S);
        let finding = about(&findings, "203.0.113.9").expect("still found");
        assert_eq!(finding.action, Action::Observe, "{finding:?}");
        assert_eq!(watch.cost("203.0.113.9"), 1, "pardoned");
        // What it does after the pardon counts.
        walk(400);
        let findings = watch.judge_local_at(START + 2 * TEN_S);
        let finding = about(&findings, "203.0.113.9").expect("found again");
        assert_eq!(finding.action, Action::Tighten, "{finding:?}");
    }

    #[test]
    fn a_key_is_tightened_then_blocked_on_new_evidence_and_both_expire() {
        let watch = AbuseWatch::builder()
            .mode(Mode::Act)
            .interval(Duration::from_secs(10))
            .tighten(4, Duration::from_secs(60))
            .block_for(Duration::from_secs(120))
            .build()
            .expect("watch");
        let scrape = |watch: &AbuseWatch, round: i64| {
            for page in 0..300 {
                watch.record(
                    "key:s",
                    "/api/contents/{id}",
                    &format!("/api/contents/{round}/{page}"),
                    200,
                );
            }
        };
        scrape(&watch, 0);
        let first = watch.judge_local_at(START + TEN_S + 1000);
        assert_eq!(
            about(&first, "key:s").map(|f| f.action),
            Some(Action::Tighten)
        );
        assert_eq!(first[0].until_ms, Some(START + TEN_S + 1000 + 60_000));
        assert_eq!(watch.cost("key:s"), 4);
        assert_eq!(watch.actions().len(), 1);
        // The next interval began before the tightening: its evidence does
        // not escalate it.
        scrape(&watch, 1);
        let second = watch.judge_local_at(START + 2 * TEN_S + 1000);
        assert_eq!(
            about(&second, "key:s").map(|f| f.action),
            Some(Action::Observe)
        );
        // Evidence gathered while tightened asks for a block.
        scrape(&watch, 2);
        let third = watch.judge_local_at(START + 3 * TEN_S + 1000);
        let block = about(&third, "key:s").expect("a finding");
        assert_eq!(block.action, Action::Block);
        assert_eq!(block.until_ms, Some(START + 3 * TEN_S + 1000 + 120_000));
        assert_eq!(
            watch.cost("key:s"),
            1,
            "a blocked key is refused by its limiter"
        );
        // While blocked, more findings change nothing.
        scrape(&watch, 3);
        let fourth = watch.judge_local_at(START + 4 * TEN_S + 1000);
        assert_eq!(
            about(&fourth, "key:s").map(|f| f.action),
            Some(Action::Observe)
        );
        assert_eq!(watch.actions()[0].action, Action::Block);
        // The block ends in its time.
        assert!(
            watch
                .judge_local_at(START + 3 * TEN_S + 1000 + 120_001)
                .is_empty()
        );
        assert!(watch.actions().is_empty());
    }

    #[test]
    fn an_actions_own_refusals_are_not_evidence() {
        let watch = watch(Mode::Act);
        for attempt in 0..200 {
            watch.record(
                "198.51.100.7",
                "/api/me",
                "/api/me",
                if attempt < 150 { 401 } else { 200 },
            );
        }
        assert_eq!(
            about(&watch.judge_local_at(START), "198.51.100.7").map(|f| f.action),
            Some(Action::Tighten)
        );
        // Tightened, it is refused with 429s: not errors of its own.
        for _ in 0..200 {
            watch.record("198.51.100.7", "/api/me", "/api/me", 429);
        }
        let findings = watch.judge_local_at(START + TEN_S);
        assert!(about(&findings, "198.51.100.7").is_none(), "{findings:?}");
        // Another key's 429s are.
        for _ in 0..200 {
            watch.record("198.51.100.8", "/api/me", "/api/me", 429);
        }
        let findings = watch.judge_local_at(START + 2 * TEN_S);
        assert_eq!(
            about(&findings, "198.51.100.8").map(|f| f.signal),
            Some(Signal::Errors)
        );
    }

    #[test]
    fn allow_listed_keys_and_networks_are_observed_never_acted_on() {
        let watch = AbuseWatch::builder()
            .mode(Mode::Act)
            .interval(Duration::from_secs(10))
            .allow("key:partner")
            .allow("10.0.0.0/8")
            .build()
            .expect("watch");
        for key in ["key:partner", "10.1.2.3", "192.0.2.1"] {
            for page in 0..300 {
                watch.record(
                    key,
                    "/api/contents/{id}",
                    &format!("/api/contents/{page}"),
                    200,
                );
            }
        }
        let findings = watch.judge_local_at(START);
        assert_eq!(
            about(&findings, "key:partner").map(|f| f.action),
            Some(Action::Observe)
        );
        assert_eq!(
            about(&findings, "10.1.2.3").map(|f| f.action),
            Some(Action::Observe)
        );
        assert_eq!(
            about(&findings, "192.0.2.1").map(|f| f.action),
            Some(Action::Tighten)
        );
        assert!(watch.pardon("192.0.2.1"));
        assert_eq!(watch.cost("192.0.2.1"), 1);
        assert!(!watch.pardon("192.0.2.1"));
    }

    #[test]
    fn a_routes_errors_creeping_up_are_found_as_a_level_shift() {
        let watch = watch(Mode::Act);
        let mut at = START;
        let interval = |watch: &AbuseWatch, errors_per_thousand: usize| {
            for i in 0..1000 {
                let status = if i % 1000 < errors_per_thousand {
                    404
                } else {
                    200
                };
                watch.record(
                    &format!("key:{}", i % 50),
                    "/api/contents/{id}",
                    "/api/contents/1",
                    status,
                );
            }
        };
        // Quiet: 1 % errors, give or take.
        for i in 0..60 {
            interval(&watch, 8 + i % 5);
            assert!(watch.judge_local_at(at).is_empty(), "quiet interval {i}");
            at += TEN_S;
        }
        // A creep: a tenth of a point more each interval.
        let mut found = None;
        for step in 1..=60 {
            interval(&watch, 10 + step);
            let findings = watch.judge_local_at(at);
            at += TEN_S;
            if let Some(finding) = findings
                .into_iter()
                .find(|f| f.signal == Signal::RouteErrors)
            {
                found = Some((step, finding));
                break;
            }
        }
        let (step, finding) = found.expect("the creep is found");
        assert!(step <= 20, "found only at step {step}");
        assert_eq!(finding.key, "/api/contents/{id}");
        assert_eq!(finding.action, Action::Observe, "a route is never acted on");
        assert!(
            finding.reason.starts_with(
                "the share of requests to /api/contents/{id} answered 401, 403, 404 or 429 are"
            ),
            "{}",
            finding.reason
        );
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let refused = [
            AbuseWatch::builder()
                .interval(Duration::from_millis(10))
                .build(),
            AbuseWatch::builder().path_share(0.0).build(),
            AbuseWatch::builder().errors(1, 1.5).build(),
            AbuseWatch::builder()
                .tighten(1, Duration::from_secs(1))
                .build(),
            AbuseWatch::builder().block_for(Duration::ZERO).build(),
            AbuseWatch::builder().tracked(0, 1).build(),
            AbuseWatch::builder().allow("10.0.0.0/99").build(),
            AbuseWatch::builder()
                .detector(AnomalyOptions::default().windows(0, 1))
                .build(),
        ];
        for (i, result) in refused.into_iter().enumerate() {
            assert!(
                matches!(result, Err(Error::InvalidConfig(_))),
                "case {i}: {result:?}"
            );
        }
    }

    #[test]
    fn the_next_close_is_a_tenth_past_the_intervals_end() {
        let watch = watch(Mode::Observe);
        assert_eq!(watch.next_close(START + 4000), Duration::from_millis(7000));
        assert_eq!(watch.next_close(START), Duration::from_millis(11_000));
    }

    #[test]
    fn the_distinct_estimate_is_within_a_fifth() {
        let hasher = foldhash::quality::FixedState::with_seed(PATH_SEED);
        for n in [10_u64, 50, 200, 1000] {
            let sketch = Sketch::new();
            for i in 0..n {
                sketch.add(7, false, hasher.hash_one(format!("/api/contents/{i}")));
            }
            let found = sketch.counts(7).distinct();
            #[allow(clippy::cast_precision_loss)]
            let error = (found as f64 - n as f64).abs() / n as f64;
            assert!(error < 0.2, "{n} distinct estimated as {found}");
        }
    }
}
