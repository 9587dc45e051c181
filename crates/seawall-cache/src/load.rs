//! Cache-aside loading: one load per key per process (single flight), the
//! distributed lock across processes, early refresh, stale-while-revalidate
//! and fail-safe values.
//!
//! A load runs in its own task, so a caller that is cancelled, a loader
//! that panics and a loader that never ends (the hard timeout aborts it)
//! all leave the key free for the next caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{Instrument as _, Span};

use crate::class::{Class, Policy};
use crate::codec::{self, Codec, Meta};
use crate::error::{BoxError, Error, Result, share};
use crate::flight::{Flight, Outcome, Shared};
use crate::inner::{Decoded, Inner, Since, encode, ms, now_ms, typed};
use crate::lock::LockGuard;
use crate::options::Options;
use crate::redis::Seen;
use crate::refresh::refresh_early;
use crate::stats::bump;
use crate::trace::{self, Tier};

/// Removes the flight from the map and fails its waiters if the leader
/// unwinds (its loader closure panicked) before the load task started.
struct Leading {
    inner: Arc<Inner>,
    key: String,
    flight: Arc<Flight>,
    armed: bool,
}

impl Drop for Leading {
    fn drop(&mut self) {
        if self.armed {
            let failed = Outcome::Failed(Arc::new(Error::LoaderPanicked {
                key: self.key.clone(),
            }));
            complete(&self.inner, &self.key, &self.flight, failed);
        }
    }
}

/// Ends `flight`: removes it from the map (if it is still the key's
/// flight) and publishes its outcome, under the map's lock, so a caller
/// that saw the outcome never joins the finished flight.
fn complete(inner: &Inner, key: &str, flight: &Arc<Flight>, outcome: Outcome) {
    let mut flights = inner.flights.lock();
    if flights
        .get(key)
        .is_some_and(|current| Arc::ptr_eq(current, flight))
    {
        flights.remove(key);
    }
    flight.publish(outcome);
}

/// A previous value that may stand in for a load.
#[derive(Clone)]
struct Fallback {
    value: Option<Shared>,
    created_ms: u64,
    stale_until_ms: u64,
    /// The value is still fresh and being refreshed early: only a newer
    /// value in Redis replaces it without a load.
    early: bool,
}

impl Fallback {
    fn of(entry: &crate::memory::Entry, early: bool) -> Self {
        Self {
            value: entry.value.clone(),
            created_ms: entry.meta.created_ms,
            stale_until_ms: entry.meta.stale_until_ms,
            early,
        }
    }
}

/// The façade's `get_or_load` on the cache whose shared state is
/// `inner`: L1, else a load (joined if one of the key is running).
pub(crate) async fn get_or_load<T, C, F, Fut, E>(
    inner: &Arc<Inner>,
    key: &str,
    options: Options,
    loader: F,
) -> Result<Option<T>>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    C: Codec,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    options.validate()?;
    let policy = inner.policy_of(options.class);
    let counters = inner.counters_of(options.class);
    let now = now_ms();
    let mut fallback = None;
    if let Some(l1) = &inner.l1 {
        if let Some(entry) = l1.get(key)
            && let Some(value) = typed::<T>(&entry.value)
        {
            if !inner.l1_answers(key, &entry.meta, now) {
                // Cut off from other instances' invalidations for longer
                // than the degraded TTL allows this copy: it may be stale,
                // so it only stands in for a failed load.
                if now < entry.meta.stale_until_ms {
                    fallback = Some(Fallback::of(&entry, false));
                }
            } else if now < entry.l1_fresh_until_ms {
                bump(&counters.l1_hits);
                let refresh = options.early_refresh.unwrap_or(policy.early_refresh);
                if refresh_early(refresh, &entry.meta, now, 1.0 - fastrand::f64()) {
                    let fallback = Fallback::of(&entry, true);
                    if lead::<T, C, _, _, _>(inner, key, &options, loader, Some(fallback)).1 {
                        bump(&counters.early_refreshes);
                    }
                }
                return Ok(value);
            }
            let expired = now >= entry.meta.fresh_until_ms;
            if expired && now < entry.meta.stale_until_ms {
                let revalidate = policy.stale_while_revalidate.min(policy.fail_safe);
                if now < entry.meta.fresh_until_ms.saturating_add(ms(revalidate)) {
                    inner.missed(options.class, Tier::L1);
                    bump(&counters.stale_serves);
                    let fallback = Fallback::of(&entry, false);
                    lead::<T, C, _, _, _>(inner, key, &options, loader, Some(fallback));
                    return Ok(value);
                }
            }
            if now < entry.meta.stale_until_ms {
                fallback = Some(Fallback::of(&entry, false));
            }
        }
        inner.missed(options.class, Tier::L1);
    }
    let (mut outcome, _) = lead::<T, C, _, _, _>(inner, key, &options, loader, fallback);
    let outcome = match outcome.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone(),
        Err(_) => None,
    };
    match outcome {
        Some(Outcome::Value { value, stale }) => {
            if stale {
                bump(&counters.stale_serves);
            }
            typed::<T>(&value).ok_or_else(|| {
                Error::Invalid(format!(
                    "{key:?} was loaded as another type by a concurrent caller"
                ))
            })
        }
        Some(Outcome::Failed(error)) => Err(share(&error)),
        None => Err(Error::LoaderPanicked {
            key: key.to_owned(),
        }),
    }
}

/// Starts a load of `key` unless one is running; returns a receiver of
/// the running load's outcome, and whether this call started it.
fn lead<T, C, F, Fut, E>(
    inner: &Arc<Inner>,
    key: &str,
    options: &Options,
    loader: F,
    fallback: Option<Fallback>,
) -> (watch::Receiver<Option<Outcome>>, bool)
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    C: Codec,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    let flight = {
        let mut flights = inner.flights.lock();
        // A load overtaken by an invalidation is not joined: it may
        // return what the invalidation replaced. A new one takes its
        // place; the old one still answers its own callers.
        if let Some(running) = flights.get(key).filter(|running| !running.invalidated()) {
            return (running.subscribe(), false);
        }
        let flight = Arc::new(Flight::new(options.tags(), inner.epoch()));
        flights.insert(key.to_owned(), Arc::clone(&flight));
        flight
    };
    let receiver = flight.subscribe();
    let mut leading = Leading {
        inner: Arc::clone(inner),
        key: key.to_owned(),
        flight: Arc::clone(&flight),
        armed: true,
    };
    let load = loader();
    leading.armed = false;
    let inner = Arc::clone(inner);
    let (key, options) = (key.to_owned(), options.clone());
    // The load's spans (its Redis calls, the loader's own) belong to
    // the trace of the caller that started it.
    let caller = tracing::Span::current();
    tokio::spawn(
        async move {
            let outcome =
                drive::<T, C, Fut, E>(&inner, &key, &options, &flight, load, fallback).await;
            complete(&inner, &key, &flight, outcome);
        }
        .instrument(caller),
    );
    (receiver, true)
}

/// The load: Redis first, then the lock, then the loader; caches the
/// result and returns the outcome.
async fn drive<T, C, Fut, E>(
    inner: &Arc<Inner>,
    key: &str,
    options: &Options,
    flight: &Flight,
    load: Fut,
    mut fallback: Option<Fallback>,
) -> Outcome
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    C: Codec,
    Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    let policy = inner.policy_of(options.class);
    let counters = inner.counters_of(options.class);
    // What the key must still hold for the load's value to be written to
    // Redis; `None`: Redis is not written (it could not be read first).
    let mut seen = None;
    // The lease this load left in an absent key, if it did: removed again
    // if the load ends with nothing to store.
    let mut held = None;
    if let Some(l2) = inner.usable_l2() {
        let lease = codec::lease();
        match l2.lease(key, &lease, inner.tombstone_ttl).await {
            Ok(Some(bytes)) if bytes == lease => {
                inner.missed(options.class, Tier::L2);
                seen = Some(Seen::Marker(lease.clone()));
                held = Some(lease);
            }
            Ok(Some(bytes)) => match inner.decode::<T, C>(&bytes) {
                Some(Decoded::Value(value, meta, tags))
                    if now_ms() < meta.fresh_until_ms && replaces(fallback.as_ref(), &meta) =>
                {
                    bump(&counters.l2_hits);
                    let value = value.map(|value| Arc::new(value) as Shared);
                    inner.fill_l1(
                        key,
                        options.class,
                        value.clone(),
                        meta,
                        tags,
                        bytes.len(),
                        Since::Flight(flight),
                    );
                    return Outcome::Value {
                        value,
                        stale: false,
                    };
                }
                Some(Decoded::Value(value, meta, _)) => {
                    inner.missed(options.class, Tier::L2);
                    seen = Some(Seen::Value(sha1_hex(&bytes)));
                    if now_ms() < meta.stale_until_ms
                        && fallback
                            .as_ref()
                            .is_none_or(|f| f.stale_until_ms < meta.stale_until_ms)
                    {
                        fallback = Some(Fallback {
                            value: value.map(|value| Arc::new(value) as Shared),
                            created_ms: meta.created_ms,
                            stale_until_ms: meta.stale_until_ms,
                            early: false,
                        });
                    }
                }
                Some(Decoded::Marker(marker)) => {
                    inner.missed(options.class, Tier::L2);
                    seen = Some(Seen::Marker(marker));
                }
                None => {
                    inner.missed(options.class, Tier::L2);
                    seen = Some(Seen::Value(sha1_hex(&bytes)));
                }
            },
            Ok(None) => inner.missed(options.class, Tier::L2),
            Err(_) => {}
        }
        // The value joins its tags' sets before the loader reads the
        // source: a tag invalidation that misses the key finished before
        // the load began, and one that finds it tombstones the lease.
        if seen.is_some()
            && !options.tags.is_empty()
            && l2
                .tag(
                    key,
                    &options.tags,
                    policy.ttl.saturating_add(policy.fail_safe),
                )
                .await
                .is_err()
        {
            seen = None;
        }
    }
    let mut guard = None;
    if options.distributed_lock.unwrap_or(policy.distributed_lock)
        && let (Some(locks), Some(_)) = (&inner.locks, inner.usable_l2())
    {
        let name = format!("load:{key}");
        match locks
            .try_acquire(&name, policy.hard_timeout + Duration::from_secs(1))
            .await
        {
            Ok(Some(acquired)) => guard = Some(acquired),
            Ok(None) => {
                if let Some(stale) = fallback {
                    return Outcome::Value {
                        value: stale.value,
                        stale: true,
                    };
                }
                if let Some(outcome) =
                    wait_for_other::<T, C>(inner, key, options.class, flight).await
                {
                    return outcome;
                }
            }
            Err(_) => {}
        }
    }
    let span = trace::load_span(&inner.name, inner.class_name(options.class));
    run_loader::<T, C, Fut, E>(
        inner, key, options, flight, load, fallback, seen, held, guard, &span,
    )
    .instrument(span.clone())
    .await
}

/// The loader's run and the caching of its result, in the load's
/// `cache.load` span (which the loader's own spans are children of).
#[allow(clippy::too_many_arguments)]
async fn run_loader<T, C, Fut, E>(
    inner: &Arc<Inner>,
    key: &str,
    options: &Options,
    flight: &Flight,
    load: Fut,
    fallback: Option<Fallback>,
    seen: Option<Seen>,
    held: Option<Vec<u8>>,
    guard: Option<LockGuard>,
    span: &Span,
) -> Outcome
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    C: Codec,
    Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    let policy = inner.policy_of(options.class);
    let counters = inner.counters_of(options.class);
    bump(&counters.loads);
    let started = Instant::now();
    let mut task = tokio::spawn(load.instrument(span.clone()));
    let deadline = tokio::time::Instant::now() + policy.hard_timeout;
    // The load's result when it came within the soft timeout: a finished
    // task is never polled again.
    let mut early = None;
    if let (Some(soft), Some(stale)) = (policy.soft_timeout, &fallback) {
        tokio::select! {
            _ = tokio::time::sleep(soft) => {
                flight.publish(Outcome::Value { value: stale.value.clone(), stale: true });
            }
            joined = &mut task => early = Some(joined),
        }
    }
    let joined = match early {
        Some(joined) => Ok(joined),
        None => tokio::time::timeout_at(deadline, &mut task).await,
    };
    let result = match joined {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(Error::Load {
            key: key.to_owned(),
            source: error.into(),
        }),
        Ok(Err(_)) => Err(Error::LoaderPanicked {
            key: key.to_owned(),
        }),
        Err(_) => {
            task.abort();
            Err(Error::Timeout {
                key: key.to_owned(),
                timeout: policy.hard_timeout,
            })
        }
    };
    trace::loaded(span, &result);
    match result {
        Ok(value) => {
            let delta = started.elapsed();
            let shared = value.clone().map(|value| Arc::new(value) as Shared);
            // Stored before it is published: a caller that got the value
            // finds it cached.
            store::<T, C>(
                inner,
                key,
                options,
                policy,
                flight,
                value.as_ref(),
                shared.clone(),
                delta,
                seen.as_ref(),
                held.as_deref(),
            )
            .await;
            if let Some(guard) = guard {
                let _ = guard.release().await;
            }
            Outcome::Value {
                value: shared,
                stale: false,
            }
        }
        Err(error) => {
            if let Some(guard) = guard {
                let _ = guard.release().await;
            }
            drop_lease(inner, key, held.as_deref()).await;
            bump(&counters.load_errors);
            tracing::debug!(key, %error, "cache load failed");
            match fallback.filter(|stale| now_ms() < stale.stale_until_ms) {
                Some(stale) => {
                    trace::stale_served(span);
                    Outcome::Value {
                        value: stale.value,
                        stale: true,
                    }
                }
                None => Outcome::Failed(Arc::new(error)),
            }
        }
    }
}

/// Removes the lease a load left, if it left one and the key still holds
/// it; best effort (the lease expires anyway).
async fn drop_lease(inner: &Inner, key: &str, held: Option<&[u8]>) {
    if let Some(lease) = held
        && let Some(l2) = inner.usable_l2()
    {
        let _ = l2.drop_lease(key, lease).await;
    }
}

/// The SHA-1 of `bytes` in hex, as Redis's `redis.sha1hex` gives it.
fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether a fresh L2 value answers the load: always, unless the load is
/// an early refresh, which only a newer value answers.
fn replaces(fallback: Option<&Fallback>, meta: &Meta) -> bool {
    fallback.is_none_or(|f| !f.early || meta.created_ms > f.created_ms)
}

/// Waits for the instance holding the load's lock to store the value;
/// its outcome if it did.
async fn wait_for_other<T, C>(
    inner: &Arc<Inner>,
    key: &str,
    class: Class,
    flight: &Flight,
) -> Option<Outcome>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
    C: Codec,
{
    let deadline = tokio::time::Instant::now() + inner.lock_wait;
    let mut pause = Duration::from_millis(5);
    while tokio::time::Instant::now() + pause < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        let l2 = inner.usable_l2()?;
        let Ok(Some(bytes)) = l2.get(key).await else {
            continue;
        };
        if let Some((value, meta, tags)) = inner.decode_fresh::<T, C>(&bytes, now_ms()) {
            bump(&inner.counters_of(class).l2_hits);
            let value = value.map(|value| Arc::new(value) as Shared);
            inner.fill_l1(
                key,
                class,
                value.clone(),
                meta,
                tags,
                bytes.len(),
                Since::Flight(flight),
            );
            return Some(Outcome::Value {
                value,
                stale: false,
            });
        }
    }
    None
}

/// Caches a loaded value (or "not found") in both tiers, unless an
/// invalidation overtook the load.
#[allow(clippy::too_many_arguments)]
async fn store<T, C>(
    inner: &Inner,
    key: &str,
    options: &Options,
    policy: &Policy,
    flight: &Flight,
    value: Option<&T>,
    shared: Option<Shared>,
    delta: Duration,
    seen: Option<&Seen>,
    held: Option<&[u8]>,
) where
    T: Serialize + Send + Sync + 'static,
    C: Codec,
{
    let now = now_ms();
    let ttl = match value {
        Some(_) => policy.jittered(policy.ttl),
        None => policy.negative_ttl,
    };
    let keep = match value {
        Some(_) => ttl.saturating_add(policy.fail_safe),
        None => ttl,
    };
    if ttl.is_zero() {
        // Nothing is cached, but a "not found" is still an answer: a copy
        // of what the source no longer has must not stand in for a later
        // failed load (an instance cut off from invalidations keeps its L1
        // copies as fallbacks).
        if value.is_none() {
            if let Some(l1) = &inner.l1 {
                l1.remove(key);
            }
            if let (Some(seen @ Seen::Value(_)), Some(l2)) = (seen, inner.usable_l2()) {
                let _ = l2.forget(key, seen).await;
            }
        }
        drop_lease(inner, key, held).await;
        return;
    }
    let meta = Meta {
        created_ms: now,
        fresh_until_ms: now.saturating_add(ms(ttl)),
        stale_until_ms: now.saturating_add(ms(keep)),
        delta_ms: u32::try_from(delta.as_millis()).unwrap_or(u32::MAX),
        class: options.class.index(),
        negative: value.is_none(),
    };
    let l2 = inner.usable_l2();
    let needs_bytes = l2.is_some() || inner.l1.as_ref().is_some_and(|l1| l1.by_bytes());
    let bytes = if needs_bytes {
        match encode::<C, T>(key, value, &meta, &options.tags, inner) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(key, %error, "a loaded value could not be encoded; it is not cached");
                drop_lease(inner, key, held).await;
                return;
            }
        }
    } else {
        Vec::new()
    };
    let len = bytes.len();
    if let (Some(l2), Some(seen)) = (l2, seen) {
        if flight.invalidated() {
            bump(&inner.cache_counters.refused_fills);
            drop_lease(inner, key, held).await;
            return;
        }
        match l2.fill(key, bytes, keep, seen).await {
            Ok(true) | Err(_) => {}
            Ok(false) => {
                bump(&inner.cache_counters.refused_fills);
                return;
            }
        }
    }
    if flight.invalidated() {
        bump(&inner.cache_counters.refused_fills);
        return;
    }
    inner.fill_l1(
        key,
        options.class,
        shared,
        meta,
        options.tags.clone(),
        len,
        Since::Flight(flight),
    );
}
