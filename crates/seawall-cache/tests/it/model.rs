//! A model test of the cache's promise across two instances on one Redis
//! (standalone and Cluster): a seeded schedule of loads, reads, sets and
//! invalidations of every kind (key, tag, pattern, clear), started at
//! random moments from either instance and overlapping freely, against a
//! source of truth that numbers every write.
//!
//! On odd seeds both instances have an L1 and follow the stream; on even
//! seeds the second has no L1 (every read goes to Redis, so it is held to
//! the promise with no propagation window, and its loads, which nothing
//! but Redis can refuse, race the first instance's writes).
//!
//! Writers change the source, then the cache (`set` with the new version,
//! or an invalidation); writes to one key do not overlap, so a key's
//! versions reach the cache in order. Loads read the source at some moment
//! of their own and then dawdle, so they race the writers. Every read is
//! checked: it may not return a version older than that of a write that
//! returned before the read began (on the other instance, with an L1: whose
//! stream entries that instance had applied when the read began, however
//! long the stream took to bring them). After the schedule, once each L1
//! has applied every entry the other instance sent, every read on either
//! instance is the source's version or a miss.
//!
//! Whether an instance had applied a write's entries is told by counts:
//! the instance counts each entry of the other's it applies, in stream
//! order, and a write notes, when it returns, how many entries its
//! instance can have sent up to its own: those counted as sent, and those
//! of its instance's writes still running, which may come before it in the
//! stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use seawall_cache::{Class, Options, TieredCache};
use seawall_testkit::wait;
use tokio::time::Instant;

use crate::support::{Backend, Ready, unique_prefix};

/// Keys `m:a0`..`m:b2`: tag `t:<digit>`, patterns `m:a*` and `m:b*`.
const KEYS: [&str; 6] = ["m:a0", "m:a1", "m:a2", "m:b0", "m:b1", "m:b2"];

fn tag_of(key: &str) -> String {
    format!("t:{}", &key[3..])
}

fn options(key: &str) -> Options {
    Options::new(Class::SCHEDULE).tag(tag_of(key))
}

#[derive(Debug, Clone)]
enum Op {
    Load(&'static str),
    Get(&'static str),
    Set(&'static str),
    SetMany(&'static str, &'static str),
    Invalidate(&'static str),
    Tag(String),
    Pattern(&'static str),
    Clear,
}

impl Op {
    /// The keys whose source versions this write changes.
    fn writes(&self) -> Vec<&'static str> {
        match self {
            Self::Load(_) | Self::Get(_) => Vec::new(),
            Self::Set(key) | Self::Invalidate(key) => vec![key],
            Self::SetMany(first, second) => vec![first, second],
            Self::Tag(tag) => KEYS
                .iter()
                .copied()
                .filter(|key| tag_of(key) == *tag)
                .collect(),
            Self::Pattern(pattern) => KEYS
                .iter()
                .copied()
                .filter(|key| key.starts_with(pattern.trim_end_matches('*')))
                .collect(),
            Self::Clear => KEYS.to_vec(),
        }
    }

    /// The stream entries the write adds: one per key a `set_many`
    /// announces, one for any other write.
    /// The stream entries it adds: a pattern or a clear announces itself
    /// before and after its sweep.
    fn entries(&self) -> u64 {
        match self {
            Self::SetMany(..) | Self::Pattern(_) | Self::Clear => 2,
            _ => 1,
        }
    }
}

/// The source of truth: each key's version, and a lock per key that
/// writers hold while they change the source and then the cache.
struct Source {
    versions: Mutex<HashMap<&'static str, u64>>,
    locks: HashMap<&'static str, tokio::sync::Mutex<()>>,
}

/// A write that returned: its instance, the versions it made, when, and
/// how many entries its instance can have sent up to its own.
struct Written {
    op: String,
    instance: usize,
    versions: Vec<(&'static str, u64)>,
    at: Instant,
    announced: u64,
}

/// A read that returned a version, and how many of the other instance's
/// entries its instance had applied when it began.
struct Read {
    op: &'static str,
    ended: Instant,
    instance: usize,
    key: &'static str,
    began: Instant,
    applied: u64,
    version: u64,
}

#[derive(Default)]
struct History {
    writes: Vec<Written>,
    reads: Vec<Read>,
}

fn schedule(seed: u64, length: usize) -> Vec<(u64, usize, Op)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..length)
        .map(|_| {
            let key = KEYS[rng.usize(..KEYS.len())];
            let other = KEYS[rng.usize(..KEYS.len())];
            let op = match rng.u32(..100) {
                0..35 => Op::Load(key),
                35..50 => Op::Get(key),
                50..65 => Op::Set(key),
                65..70 if other != key => Op::SetMany(key, other),
                65..78 => Op::Invalidate(key),
                78..88 => Op::Tag(tag_of(key)),
                88..97 => Op::Pattern(if rng.bool() { "m:a*" } else { "m:b*" }),
                _ => Op::Clear,
            };
            (rng.u64(..1500), rng.usize(..2), op)
        })
        .collect()
}

/// One operation of the schedule. `writing` counts the stream entries of
/// the instance's writes that are running.
async fn run(
    cache: TieredCache,
    instance: usize,
    op: Op,
    source: Arc<Source>,
    history: Arc<Mutex<History>>,
    writing: Arc<AtomicU64>,
    dawdle: u64,
) {
    let began = Instant::now();
    let applied = cache.stats().invalidations_received;
    let record_read = |op: &'static str, key: &'static str, version: u64| {
        history.lock().reads.push(Read {
            op,
            ended: Instant::now(),
            instance,
            key,
            began,
            applied,
            version,
        });
    };
    match &op {
        Op::Load(key) => {
            let loader_source = Arc::clone(&source);
            let key = *key;
            let loaded = cache
                .get_or_load(key, options(key), move || async move {
                    let version = loader_source.versions.lock()[key];
                    tokio::time::sleep(Duration::from_micros(dawdle)).await;
                    Ok::<_, std::io::Error>(Some(version))
                })
                .await
                .expect("loads");
            record_read(
                "load",
                key,
                loaded.expect("the loader always finds the key"),
            );
        }
        Op::Get(key) => {
            if let Some(version) = cache.get::<u64>(key, Class::SCHEDULE).await {
                record_read("get", key, version);
            }
        }
        write => {
            let mut keys = write.writes();
            keys.sort_unstable();
            keys.dedup();
            let mut guards = Vec::with_capacity(keys.len());
            for key in &keys {
                guards.push(source.locks[key].lock().await);
            }
            let versions: Vec<(&'static str, u64)> = {
                let mut versions = source.versions.lock();
                keys.iter()
                    .map(|key| {
                        let version = versions.get_mut(key).expect("a known key");
                        *version += 1;
                        (*key, *version)
                    })
                    .collect()
            };
            writing.fetch_add(write.entries(), Ordering::SeqCst);
            match write {
                Op::Set(key) => cache
                    .set(key, options(key), versions[0].1)
                    .await
                    .expect("sets"),
                Op::SetMany(first, second) => {
                    // Each key carries both tags: a tag invalidation may
                    // drop more than the model's writes, never less.
                    let both = options(first).tag(tag_of(second));
                    let entries = versions
                        .iter()
                        .map(|(key, version)| ((*key).to_owned(), *version))
                        .collect();
                    cache.set_many(entries, both).await.expect("sets");
                }
                Op::Invalidate(key) => cache.invalidate(key).await.expect("invalidates"),
                Op::Tag(tag) => cache.invalidate_tag(tag).await.expect("invalidates"),
                Op::Pattern(pattern) => cache
                    .invalidate_pattern(pattern)
                    .await
                    .expect("invalidates"),
                Op::Clear => cache.clear().await.expect("clears"),
                Op::Load(_) | Op::Get(_) => unreachable!("reads are handled above"),
            }
            let at = Instant::now();
            // An entry before this write's in the stream was added by a
            // write that began before: one that has returned counted it as
            // sent (before it returned), one still running is in `writing`.
            // Read in that order, the two cannot both miss it.
            let running = writing.load(Ordering::SeqCst);
            let announced = cache.stats().invalidations_sent + running;
            writing.fetch_sub(write.entries(), Ordering::SeqCst);
            history.lock().writes.push(Written {
                op: format!("{write:?}"),
                instance,
                versions,
                at,
                announced,
            });
            drop(guards);
        }
    }
}

/// Every read against the writes that returned before it began; `lags`
/// says which instance's L1 may lag behind the other's writes, until it has
/// applied their entries.
fn check(history: &History, start: Instant, lags: [bool; 2]) -> Vec<String> {
    let mut stale = Vec::new();
    for read in &history.reads {
        let floor = history
            .writes
            .iter()
            .filter(|write| {
                write.at < read.began
                    && (write.instance == read.instance
                        || !lags[read.instance]
                        || read.applied >= write.announced)
            })
            .flat_map(|write| write.versions.iter())
            .filter(|(key, _)| *key == read.key)
            .map(|(_, version)| *version)
            .max()
            .unwrap_or(0);
        if read.version < floor {
            let at = |instant: Instant| instant.duration_since(start).as_micros();
            let writes: Vec<String> = history
                .writes
                .iter()
                .filter(|write| write.versions.iter().any(|(key, _)| *key == read.key))
                .map(|write| {
                    format!(
                        "{} on {} returned at {} µs, entry {} at the latest: {:?}",
                        write.op,
                        write.instance,
                        at(write.at),
                        write.announced,
                        write.versions
                    )
                })
                .collect();
            stale.push(format!(
                "instance {} {} of {} from {} to {} µs (having applied {} entries) = {} after version {floor} was written; writes of the key: {writes:#?}",
                read.instance,
                read.op,
                read.key,
                at(read.began),
                at(read.ended),
                read.applied,
                read.version
            ));
        }
    }
    stale
}

async fn interleavings_of_two_instances_hold_the_promise(backend: &Backend) {
    for seed in 1..=8_u64 {
        let prefix = unique_prefix();
        let both_l1 = seed % 2 == 1;
        let second = backend.instance(&prefix).await;
        let second = if both_l1 { second } else { second.without_l1() };
        let caches = [
            backend.instance(&prefix).await.ready().await,
            second.ready().await,
        ];
        let lags = [true, both_l1];
        let writing = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let source = Arc::new(Source {
            versions: Mutex::new(KEYS.iter().map(|key| (*key, 0)).collect()),
            locks: KEYS
                .iter()
                .map(|key| (*key, tokio::sync::Mutex::new(())))
                .collect(),
        });
        let history = Arc::new(Mutex::new(History::default()));
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        let start = Instant::now();
        let tasks: Vec<_> = schedule(seed, 200)
            .into_iter()
            .map(|(at_us, instance, op)| {
                let (cache, source, history, writing) = (
                    caches[instance].clone(),
                    Arc::clone(&source),
                    Arc::clone(&history),
                    Arc::clone(&writing[instance]),
                );
                let dawdle = rng.u64(..3000);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(at_us * 400)).await;
                    run(cache, instance, op, source, history, writing, dawdle).await;
                })
            })
            .collect();
        for task in futures_util::future::join_all(tasks).await {
            task.expect("no operation panics");
        }
        let history = Arc::into_inner(history)
            .expect("every task ended")
            .into_inner();
        let stale = check(&history, start, lags);
        assert!(
            stale.is_empty(),
            "seed {seed}: {} stale reads of {}: {stale:#?}",
            stale.len(),
            history.reads.len()
        );
        // Settled once each L1 has applied every entry the other instance
        // sent: then every read is the source's version or a miss.
        for (reader, lagging) in lags.into_iter().enumerate() {
            if !lagging {
                continue;
            }
            let sent = caches[1 - reader].stats().invalidations_sent;
            wait::until_async(
                format!("seed {seed}: instance {reader} to apply the other's {sent} entries"),
                async || caches[reader].stats().invalidations_received >= sent,
            )
            .await;
        }
        let versions = source.versions.lock().clone();
        for cache in &caches {
            for key in KEYS {
                let read = cache.get::<u64>(key, Class::SCHEDULE).await;
                assert!(
                    read.is_none_or(|version| version == versions[key]),
                    "seed {seed}: {key} reads {read:?} once settled, the source has {}",
                    versions[key]
                );
            }
        }
    }
}

crate::on_redis_backends!(interleavings_of_two_instances_hold_the_promise);
