//! Rate limiting for Rust services: every classic algorithm behind one
//! trait, each in process memory and on Redis, correct under concurrency and
//! clock skew.
//!
//! ```
//! use std::time::Duration;
//! use seawall_ratelimit::{Limit, Limiter};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seawall_ratelimit::Error> {
//! // 100 requests a minute per client, counted over a sliding window.
//! let api = Limiter::builder("api")
//!     .limit(Limit::sliding_window(100, Duration::from_secs(60))?)
//!     .build()?; // in process memory; `.store(RedisStore::new(client))` to share it
//!
//! let decision = api.check("203.0.113.7", 1).await?;
//! assert!(decision.allowed);
//! assert_eq!(decision.remaining, 99);
//! # Ok(())
//! # }
//! ```
//!
//! # Algorithms
//!
//! | [`Algorithm`] | admits | state per key |
//! |---|---|---|
//! | fixed window | `limit` per window; up to 2 × `limit` across a boundary | 2 integers |
//! | sliding log | at most `limit` in any window | one entry per admitted unit, at most `limit` (at most [`MAX_LOG_LIMIT`], 10,000) |
//! | sliding window | `limit` in the weighted estimate of the last window | 3 integers |
//! | token bucket | `rate` per period, bursts up to the capacity | 1 integer: when the bucket is full again |
//! | leaky bucket | same as the token bucket, counted as water that drains | 1 integer: when the bucket is empty again |
//! | leaky queue | `rate` per period, each request delayed behind the ones before | 1 integer |
//! | GCRA | `rate` per period, bursts up to the burst | 1 integer |
//!
//! The buckets drain by whole units, one per step, which makes them GCRA
//! under another name: the time the level is back to zero plays the
//! theoretical arrival time, and they decide and answer exactly as GCRA does
//! with a burst of the capacity.
//!
//! A rejected request consumes nothing in any algorithm. Arithmetic is on
//! integer microseconds; a limit too large for that to be exact is refused
//! when it is built. Every duration and cost has a bound: a block, a
//! penalty, a lease time or a timeout longer than [`MAX_DURATION`] (a
//! century) is that long, and anything else out of range is refused with a
//! typed [`Error`].
//!
//! No call gives Redis more than about a millisecond of work, so a caller
//! with any input cannot hold up the other clients of its Redis (limiters,
//! caches, queues): every state is a few integers but a sliding log's,
//! whose log holds at most [`MAX_LOG_LIMIT`] entries (so no check or reset
//! removes or frees more) and gains at most [`MAX_LOG_COST`] (1,000) in one
//! check; a larger cost is [`Error::CostTooHigh`]. A limit beyond that is a
//! sliding window's work: two counters, within a fraction of a percent of
//! exact.
//!
//! # Stores
//!
//! [`MemoryStore`] keeps state in sharded maps on the monotonic clock and
//! forgets idle keys, so memory stays bounded under a flood of keys; it
//! never forgets a key that is blocked or has used any of its limit, and a
//! new key that finds it full is decided by the [`FailurePolicy`]. Its
//! [`Limiter::check_now`] decides synchronously without allocating, in
//! 0.9–2.0× the time of governor's keyed limiter (figures and the command in
//! `docs/benchmarks.md`).
//! [`RedisStore`] runs one `EVALSHA` per check; the script reads Redis's
//! `TIME`, never the caller's clock, gives every key an expiry, and keeps all
//! keys of one subject in one hash slot, so it runs unchanged on Redis
//! Cluster. A call waits at most the store's timeout (250 ms by default);
//! a call that finds its Redis node down opens that node's circuit
//! breaker, which every clone of the store shares, and until a probe (one
//! call at a time, at most one a second, to that node) finds it up, every
//! limiter on the store decides the calls to that node at once by its
//! [`FailurePolicy`]. The breakers are per node: on a Cluster, one master
//! that stops answering never degrades a check of a key another master
//! holds. A block an instance saw holds while its check is decided without
//! Redis, whatever the policy. An error Redis answers one call with leaves
//! the breaker closed.
//!
//! # Quotas, penalties, shadow mode
//!
//! A [`Quota`] checks several rules together (per minute, hour and day),
//! consuming in all of them or in none, in one round trip; a limiter's quota
//! can be replaced at run time, and [`Limiter::check_quota`] checks a
//! per-tenant quota. A [`penalty`](LimiterBuilder::penalty) blocks a key for
//! a while after a rejection; [`Limiter::block`] and [`Limiter::unblock`] do
//! it by hand. A limiter in [shadow mode](LimiterBuilder::shadow) decides and
//! reports but always admits.
//!
//! # HTTP
//!
//! With the `tower` feature, [`RateLimitLayer`] limits requests by a key
//! ([`ClientIp`] with trusted proxies, [`HeaderKey`], `RouteKey` with the
//! `axum` feature, or any closure), answers 429 with a problem body and a
//! `Retry-After` rounded up to whole seconds, and sets `RateLimit-Policy` and
//! `RateLimit` on every response it decided. It holds a request a leaky
//! queue delays, up to its [`max_wait`](RateLimitLayer::max_wait).
//! [`ClientIp`] reads one header (`X-Forwarded-For` unless told otherwise)
//! from the right, past trusted proxies only; keys IPv6 clients by their
//! /64; and refuses a request whose peer address the server did not record,
//! rather than leave it unlimited.
//!
//! # Concurrency
//!
//! A [`ConcurrencyLimiter`] holds at most N operations in flight per key as
//! [`Lease`]s, released on drop and expiring if their holder dies. On Redis
//! its calls go through a [`RedisStore`]: bounded by its timeout and held
//! back by its circuit breaker, shared with the limiters on clones of it
//! ([`ConcurrencyLimiterBuilder::redis_store`]).
//!
//! # Limits that follow health
//!
//! [`Limiter::set_scale`] makes a limiter admit a share of its quota (and
//! of each per-tenant quota it checks) without losing its state. A
//! [`Tightening`] sets that share from seawall-perfmon's health: at once to
//! half when the service turns degraded and to a quarter when it turns
//! unhealthy, and back a level at a time once its health has held better
//! for a while (30 s by default), with every change logged and counted.
//!
//! # Abuse detection
//!
//! [`abuse::AbuseWatch`] finds the clients whose traffic departs from their
//! own past or from what a person does: a key's share of the requests far
//! above its baseline (a burst), requests spread over many distinct paths
//! (scraping), a high share answered 401, 403, 404 or 429 (credential
//! stuffing, enumeration), and a route whose errors creep up. Fed one call
//! per answered request (atomics: count-min sketches and HyperLogLog
//! registers), it judges every 20 s, gives each finding a reason, and in
//! its acting mode tightens a key, then asks for a block, each for a while;
//! it observes only by default. Through a [`RedisStore`] the instances
//! share their evidence.
//!
//! # Adaptive concurrency
//!
//! An [`AdaptiveLimiter`] finds how many operations a process can have in
//! flight, between bounds, instead of being told: each finished operation
//! is a [`Sample`] (its latency, how many were in flight, whether it was
//! dropped for overload) that a [`LimitAlgorithm`] turns into the next
//! limit. [`Gradient`] is latency-based (Netflix's Gradient2: the limit
//! shrinks as the latest latency rises past a tolerance of the long-term
//! average, and grows by a queue allowance while it does not); [`Aimd`] is
//! loss-based. Admission is one compare-and-swap; a lower class of work can
//! be held to a share of the limit ([`AdaptiveLimiter::try_acquire_share`]),
//! so it is refused first. An operation with no room may wait a bounded
//! time for one ([`AdaptiveLimiter::acquire_share`], [`Wait::within`]): a
//! finished operation hands its place to the waiter with the highest
//! share. With the `tower` feature, [`AdaptiveLayer`]
//! admits HTTP requests by class and answers the rest 503 with
//! `Retry-After` at once. The limit, the in-flight count and the refusals
//! are seawall-perfmon metrics ([`AdaptiveLimiterBuilder::metrics`]).
//! Written here rather than taken from congestion-limiter or
//! tower-resilience-adaptive, which take an async lock per sample and keep
//! metrics of their own; the admission path costs well under a
//! microsecond (`benches/adaptive.rs`).
//!
//! # Tracing
//!
//! A limiter tells a [`tracing`](https://docs.rs/tracing) subscriber of
//! what it refuses and of what its store could not decide, with
//! OpenTelemetry's field names where its conventions have them:
//!
//! - `ratelimit.refused`, an event at `debug` per refused check (and per
//!   check a limiter in shadow mode would have refused):
//!   `seawall.ratelimit.name` (the limiter), `seawall.ratelimit.cost`,
//!   `seawall.ratelimit.retry_after_ms` and `seawall.ratelimit.blocked_for_ms`
//!   when the decision has them, `seawall.ratelimit.shadow` and
//!   `seawall.ratelimit.degraded`.
//! - `ratelimit.degraded`, an event at `debug` per decision the store could
//!   not make: the limiter's name, `seawall.ratelimit.failure_policy`
//!   (`open`, `closed`, `insurance`, `error`) and `error.message`. The Redis
//!   store's breaker logs its opening (`ratelimit.breaker_opened`, `warn`)
//!   and its closing (`ratelimit.breaker_closed`, `info`) once each, however
//!   many decisions it degrades meanwhile.
//! - `ratelimit.redis`, a span at `debug` around each script call of
//!   [`RedisStore`]: `otel.kind` `client`, `db.system.name` `redis`,
//!   `db.operation.name` `EVALSHA`, `otel.name` and `db.query.summary`
//!   (`EVALSHA` and the script: `check_tat`, `check_fixed_window`,
//!   `check_sliding_window`, `check_sliding_log`, `apply` for `redis.lua`,
//!   `blocked` for the registry of blocked keys), the limiter's name; a
//!   failed call sets `error.type` (`timeout`, or the client's kind of
//!   error), `otel.status_code` `ERROR` and `otel.status_message`. A call
//!   the open breaker keeps back has no span (its decision's
//!   `ratelimit.degraded` event says so). A [`ConcurrencyLimiter`]'s
//!   lease calls on Redis are `EVALSHA concurrency` spans of the same
//!   kind; one the breaker keeps back has none, and its caller gets
//!   [`Error::Unavailable`].
//!
//! Keys are in no field: a limit's key is most often a client's address or
//! a user's id; [`Limiter::top_rejected`] names the keys refused most, and
//! [`Limiter::top_callers`] the keys checked most, in process. An admitted check tells nothing. Where nothing listens at a
//! level, each of these is a disabled callsite, one relaxed atomic load,
//! with no field evaluated; an admitted check on the memory store reaches
//! none (`docs/benchmarks.md` counts its instructions before and after).
//!
//! # Features
//!
//! None is on by default; the Redis store (on `fred`) is always built.
//!
//! - `tower`: [`RateLimitLayer`] and its key extractors ([`ClientIp`],
//!   [`HeaderKey`]). Pulls in `http`, `tower-layer`, `tower-service` and
//!   `serde_json`.
//! - `axum`: `RouteKey`, keys from axum's `MatchedPath`, and peer addresses
//!   from axum's `ConnectInfo`. Turns on `tower` and pulls in `axum` (its
//!   `matched-path` and `tokio` features).
//!
//! # Minimum supported Rust version
//!
//! Rust 1.95.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod abuse;
mod adaptive;
#[cfg(feature = "tower")]
mod adaptive_layer;
mod algorithm;
pub mod breaker;
#[cfg(feature = "tower")]
mod client_ip;
mod concurrency;
mod decision;
mod error;
#[cfg(feature = "tower")]
mod layer;
mod limiter;
mod memory;
mod name;
mod net;
mod policy;
mod redis;
mod store;
mod telemetry;
mod tighten;
mod trace;

pub use adaptive::{
    AdaptiveLimiter, AdaptiveLimiterBuilder, Aimd, Gradient, LimitAlgorithm, Outcome, Sample,
    Token, Wait,
};
#[cfg(feature = "tower")]
pub use adaptive_layer::{Adaptive, AdaptiveLayer, Admission, Shed, outcome_of};
pub use algorithm::{Algorithm, Limit, MAX_LOG_COST, MAX_LOG_LIMIT};
#[cfg(feature = "tower")]
pub use client_ip::{ClientIp, DEFAULT_IPV6_PREFIX, PeerAddr, X_FORWARDED_FOR};
pub use concurrency::{ConcurrencyLimiter, ConcurrencyLimiterBuilder, Lease};
pub use decision::{Decision, RuleDecision, RuleDecisions};
pub use error::{Error, Result};
#[cfg(feature = "axum")]
pub use layer::RouteKey;
#[cfg(feature = "tower")]
pub use layer::{
    HeaderKey, KeyExtractor, RATELIMIT, RATELIMIT_POLICY, RateLimit, RateLimitLayer, ceil_seconds,
    set_headers,
};
pub use limiter::{
    Limiter, LimiterBuilder, MAX_DURATION, MAX_KEY_BYTES, MAX_RULES, Quota, QuotaBuilder,
    RateLimiter, Store,
};
pub use memory::{Clock, DEFAULT_MAX_KEYS, ManualClock, MemoryStore, MemoryStoreBuilder};
pub use net::IpNet;
pub use policy::FailurePolicy;
pub use redis::{DEFAULT_PREFIX, DEFAULT_TIMEOUT, RedisStore};
pub use telemetry::{BlockedKey, DecisionCounts, HeavyCaller, RejectedKey};
pub use tighten::{Change, Tightening, TighteningBuilder, TighteningState};

/// The README's quick start, compiled and run with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
