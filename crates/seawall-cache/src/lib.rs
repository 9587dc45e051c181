//! A tiered cache for Rust services: an in-process L1 (moka) in front of a
//! Redis L2 (fred), each usable alone.
//!
//! ```
//! use std::time::Duration;
//! use seawall_cache::{Class, Options, TieredCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seawall_cache::Error> {
//! // L1 only; add `.redis(client)` for the shared tier.
//! let cache = TieredCache::builder().build()?;
//!
//! // Cache-aside: the loader runs on a miss, once however many callers
//! // miss together, and its result is cached for the class's TTL.
//! let options = Options::new(Class::SCHEDULE).tag("user:42");
//! let today: Option<Vec<u32>> = cache
//!     .get_or_load("review:today:42", options.clone(), || async {
//!         Ok::<_, std::io::Error>(Some(vec![3, 5, 8])) // the database query
//!     })
//!     .await?;
//! assert_eq!(today, Some(vec![3, 5, 8]));
//!
//! // A write elsewhere invalidates every entry of the user, on every
//! // instance that shares the Redis tier.
//! cache.invalidate_tag("user:42").await?;
//! assert_eq!(cache.get::<Vec<u32>>("review:today:42", Class::SCHEDULE).await, None);
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//!
//! - **TTL classes** ([`Class`], [`Policy`]): schedule 2 h, session 24 h,
//!   computation 1 h, API response 5 min, user preferences 7 days; each
//!   redefinable, more can be added. L1 never keeps an entry longer than L2
//!   does; optional jitter spreads expiries.
//! - **Stampede protection**: concurrent misses of a key run the loader once
//!   per process; with a class's distributed lock, once across instances
//!   ([`RedisLocks`] is public too: token-owned, compare-and-delete release,
//!   extend, fencing tokens).
//! - **Early refresh**: XFetch or refresh-ahead ([`EarlyRefresh`]), and
//!   stale-while-revalidate.
//! - **Fail-safe**: a failed, panicking or slow load returns the previous
//!   value, kept past its TTL up to the class's fail-safe window; a hard
//!   timeout bounds every load.
//! - **Invalidation** by key, tag or glob pattern, in Redis first (a
//!   tombstone, so a load that started earlier cannot write back its old
//!   value; it lives no longer than what it replaced), then announced on a
//!   Redis stream that every instance follows to drop its L1 copies. A
//!   pattern or a clear, which scans every key (seconds over a large
//!   keyspace), is announced before its sweep as well, so no L1 serves the
//!   old values meanwhile. An instance cut off from Redis replays what it
//!   missed on reconnect before its L1 answers again, or clears its L1 when
//!   the stream no longer holds it or another server holds the stream (a
//!   failover or a restart may have lost its last entries); so does one
//!   that stays connected but falls further behind than the stream keeps.
//!   [`TieredCache::readiness_check`] fails until it follows again.
//! - **Degrades, never fails a read**: every Redis call has a timeout; after
//!   repeated failures, or as soon as the client finds a connection to
//!   Redis lost, a circuit breaker stops calling Redis, the cache
//!   serves L1 and the loader, and a background probe closes the breaker
//!   once every server it writes to answers (each master of a Cluster).
//!   Invalidations that could not reach Redis are sent once it answers;
//!   [`TieredCache::readiness_check`] fails while any waits, or while the
//!   breaker is open.
//!   While an instance cannot hear other instances' invalidations (cut off,
//!   or just started), its L1 answers only within a bounded staleness,
//!   [`TieredCacheBuilder::degraded_ttl`] (1 s by default; zero: no read),
//!   of the later of a value's creation and the last moment it followed
//!   the stream, so an instance whose Redis died does not hand every read
//!   to the loader; a class can ask for less ([`Policy::degraded_ttl`]).
//!   Call [`TieredCache::wait_following`] once at start.
//! - **Batches**: [`TieredCache::get_many`] sends one `MGET` per hash slot,
//!   together, so Redis Cluster never sees a cross-slot command.
//! - **Hot keys** ([`TieredCacheBuilder::learn_hot_keys`]): a sample of
//!   the reads counted per class in a space-saving ranking, merged into
//!   counts that halve every half-life, in Redis for every instance
//!   together. Besides the keys it reports, the ranking keeps as many
//!   candidates, the keys read most in the last few merges, so a key hot
//!   now gathers reads until it passes one that went cold;
//!   [`TieredCache::hot_keys`] gives the hottest for a warm-up
//!   after a start, and [`TieredCache::l1_clears`] says when L1 was
//!   cleared (a failover, a clear) and wants it again.
//! - **Stats** per tier and class ([`Stats`]), exported through
//!   seawall-perfmon with [`TieredCache::register_metrics`].
//! - **Keys**: [`KeyBuilder`] escapes parts so distinct part lists never
//!   collide, and hashes keys over 200 characters.
//!
//! # What a write or an invalidation promises
//!
//! Once [`set`](TieredCache::set), [`write`](TieredCache::write) or an
//! invalidation ([`invalidate`](TieredCache::invalidate),
//! [`invalidate_tag`](TieredCache::invalidate_tag),
//! [`invalidate_pattern`](TieredCache::invalidate_pattern),
//! [`clear`](TieredCache::clear)) has returned `Ok`, no later read on any
//! instance sharing the Redis tier returns a value written or loaded
//! before it, with one exception: another instance's L1 may still answer
//! with its copy until the invalidation stream reaches it (on the fleet
//! drills, p50 2.4 ms and p99 6.1 ms from the write's answer to each other
//! instance's first fresh read; `docs/operations.md`).
//!
//! It holds because every value's place in Redis tells loads apart: a
//! load that misses leaves a lease in the empty key, a `set` writes its
//! value, and every invalidation replaces whatever the key holds with a
//! tombstone (a pattern or a clear scans for the keys, leases included;
//! nothing is unlinked). A load writes its value only if the key still
//! holds what it saw before its loader ran, in one script on the key's own
//! hash slot, so it costs no round trip and runs on Redis Cluster. A key
//! joins its tags' sets before its value is written. In process, a write
//! or an invalidation overtakes the reads and loads of the key in
//! progress, and an L1 fill checks that nothing overtook it.
//!
//! The exceptions, by design:
//! - A cache built with [`follow_invalidations(false)`](TieredCacheBuilder::follow_invalidations)
//!   hears no other instance: its L1 is bounded by TTLs only.
//! - An operation that returned an error may not have reached Redis. The
//!   cache retries the Redis part (a tombstone and an announcement) once
//!   Redis answers, from process memory: if the process stops before then,
//!   it is lost, and the key keeps its old value in Redis until that
//!   value's TTL (plus the fail-safe window) ends. At most 10,000 wait;
//!   past that, the whole cache is cleared once Redis answers. A service
//!   that cannot afford this retries the write, or fails it.
//! - What an instance's L1 takes while it cannot follow the stream is kept
//!   at most [`cut_off_l1_ttl`](TieredCacheBuilder::cut_off_l1_ttl) (5 s by
//!   default), or its degraded TTL where that is longer, once it follows
//!   again: an invalidation lost as above never reaches the stream, so
//!   nothing else would drop it.
//!
//! Values pass through a [`Codec`] ([`Binary`], the default, or [`Json`])
//! inside an envelope that records the codec and the cache's format
//! version: a value of another shape is a miss, never garbage.
//!
//! # Tracing
//!
//! The cache tells a [`tracing`](https://docs.rs/tracing) subscriber of
//! its loads, misses, Redis calls and refusals, with OpenTelemetry's
//! field names where its conventions have them:
//!
//! - `cache.load`, a span at `info` around each loader run that a miss
//!   starts (one per load, however many callers wait for it) and the
//!   caching of its result: `seawall.cache.name`, `seawall.cache.class`,
//!   `seawall.cache.outcome` (`loaded`, `not_found`, or the errors
//!   `failed`, `panicked`, `timed_out`, which also set `error.type` and
//!   `otel.status_code` `ERROR`), and `seawall.cache.stale_served` when a
//!   previous value stood in for a failed load. It is `info` because a
//!   load, unlike a read, is the expensive part of a request (it runs the
//!   query the cache saves) and there is one per miss, not one per read.
//!   The load runs in the span that was current where the miss happened,
//!   so its spans join the caller's trace, and the loader's own spans are
//!   children of `cache.load`.
//! - `cache.redis`, a span at `debug` around each Redis round trip of the
//!   tier: `otel.kind` `client`, `db.system.name` `redis`,
//!   `db.operation.name` (`GET`, `MGET`, `SET`, `SCAN`, `DBSIZE`, `XADD`,
//!   or `EVALSHA` for the cache's scripts), `otel.name` and
//!   `db.query.summary` (the command, or `EVALSHA` and the script's
//!   purpose: `EVALSHA lease`, `EVALSHA fill`, `EVALSHA tag`, …, and
//!   [`RedisLocks`]' `EVALSHA lock_acquire`, `lock_extend`,
//!   `lock_release`), and `seawall.cache.prefix`; a failed call sets
//!   `error.type` (`timeout`, or the client's kind of error),
//!   `otel.status_code` `ERROR` and `otel.status_message`. The invalidation
//!   feed's stream reads, a background loop that belongs to no request,
//!   have no span.
//! - `cache.miss`, an event at `debug` per counted miss, with
//!   `seawall.cache.tier` (`l1` or `l2`) beside the cache's name and class.
//! - `cache.breaker_refused`, an event at `debug` each time the open
//!   circuit breaker keeps a call from Redis; the breaker's opening (`warn`)
//!   and closing (`info`) are logged as before.
//!
//! Keys are in no span or event field: they often carry a user's id, and
//! traces are kept longer and read more widely than logs. The class says
//! which data a load is about; a failed load's `debug` log line still
//! names its key. An L1 hit tells the subscriber nothing (unless it starts
//! an early refresh, which is a load). Where nothing
//! listens at a level, each of these is a disabled callsite, one relaxed
//! atomic load, with no field evaluated (`docs/benchmarks.md` counts an
//! L1 hit's instructions before and after they were added).
//!
//! # Features
//!
//! The crate has no optional features: moka (L1), `fred` (L2, with
//! scripts and Cluster support) and seawall-perfmon are always built.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.95.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod cache;
mod class;
mod codec;
mod error;
mod feed;
mod flight;
mod glob;
mod hot;
mod inner;
mod key;
mod load;
mod lock;
mod memory;
mod options;
mod redis;
mod refresh;
mod stats;
mod trace;
mod warm;

pub use cache::{
    DEFAULT_DEGRADED_TTL, DEFAULT_PREFIX, FollowingCheck, TieredCache, TieredCacheBuilder,
};
pub use class::{Class, EarlyRefresh, Policy, WriteStrategy};
pub use codec::{Binary, Codec, CodecError, Json};
pub use error::{BoxError, Error, Result};
pub use hot::{HotKey, HotKeyOptions};
pub use key::{KeyBuilder, KeyParts, MAX_KEY_LEN};
pub use lock::{LockGuard, RedisLocks};
pub use memory::L1Capacity;
pub use options::{MAX_PATTERN_LEN, MAX_TAG_LEN, MAX_TAGS, Options};
pub use stats::{BreakerState, ClassStats, Stats, TierCounts};
pub use warm::WarmUpProgress;

/// The README's quick start, compiled and run with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
