//! seawall-cache against moka (its L1 tier alone) and against raw fred
//! commands on the same Redis (its L2 tier alone), in the same run.
//!
//! Run: `cargo bench -p seawall-benches --bench cache`
//!
//! - `cache/l1_hit`: one read of a key present in L1, over 100,000 keys
//!   visited in a scattered order: `TieredCache::get` on an L1-only cache
//!   beside `moka::sync::Cache::get` holding the same keys and values. Both
//!   clone a small struct out, and both run in the same loop on a Tokio
//!   current-thread runtime (a hit completes on its first poll). Before the
//!   group, fifteen paired rounds read every key once through each in turn
//!   and print the median ratio, which the machine's drift affects less.
//! - `cache/l2_hit`: one read of a present key from a cache without L1 on a
//!   throwaway redis-server, beside a raw fred `GET` of the same stored
//!   bytes (one round trip, no decoding).
//! - `cache/get_many`: 100 present keys from the same cache without L1, in
//!   one `get_many` (one `MGET`) beside 100 sequential `get`s, with a raw
//!   fred `MGET` of the same keys as the floor.
//!
//! Before the Redis groups, it prints the Redis commands each row sends per
//! call, from the server's `INFO commandstats`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface};
use fred::types::{Key, Value};
use seawall_benches::cards::{Card, KEYS, Rotation, entries, keys};
use seawall_cache::{Class, HotKeyOptions, L1Capacity, Policy, TieredCache};
use tokio::runtime::Runtime;

const PREFIX: &str = "bench:cache";
const BATCH: usize = 100;

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A builder whose API class outlives any run, so no entry expires while
/// it is measured.
fn builder() -> seawall_cache::TieredCacheBuilder {
    TieredCache::builder()
        .prefix(PREFIX)
        .class(Class::API, Policy::new(Duration::from_secs(24 * 3600)))
}

fn l1_hit(c: &mut Criterion) {
    let runtime = current_thread();
    let keys = keys(KEYS);
    let entries = entries(&keys);

    let cache = builder()
        .l1(L1Capacity::Entries(KEYS as u64))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime
        .block_on(cache.set_many(entries.clone(), Class::API))
        .unwrap_or_else(|e| panic!("{e}"));
    cache.sync();
    let moka = moka::sync::Cache::<String, Card>::new(KEYS as u64);
    for (key, value) in entries {
        moka.insert(key, value);
    }
    moka.run_pending_tasks();

    // Every read below must be a hit, or the rows compare misses.
    let present = runtime.block_on(async {
        let mut present = (0, 0);
        for key in &keys {
            present.0 += usize::from(cache.get::<Card>(key, Class::API).await.is_some());
            present.1 += usize::from(moka.get(key.as_str()).is_some());
        }
        present
    });
    assert_eq!(present, (KEYS, KEYS), "every key is in both caches");

    // Paired rounds: each round reads every key once through each cache in
    // turn, so that the machine's drift falls on both alike; the median of
    // the rounds' ratios is the comparable figure.
    let mut rotation = Rotation::default();
    let mut ratios = Vec::new();
    for round in 1..=15 {
        let (seawall_ns, moka_ns) = runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..KEYS {
                let key = black_box(keys[rotation.next_index()].as_str());
                black_box(cache.get::<Card>(key, Class::API).await);
            }
            let seawall = started.elapsed();
            let started = Instant::now();
            for _ in 0..KEYS {
                let key = black_box(keys[rotation.next_index()].as_str());
                black_box(moka.get(key));
            }
            (seawall, started.elapsed())
        });
        #[allow(clippy::cast_precision_loss)]
        let per_read = |elapsed: Duration| elapsed.as_nanos() as f64 / KEYS as f64;
        let (seawall_ns, moka_ns) = (per_read(seawall_ns), per_read(moka_ns));
        ratios.push(seawall_ns / moka_ns);
        eprintln!(
            "l1_hit paired round {round}: seawall {seawall_ns:.0} ns, moka {moka_ns:.0} ns, {:.3}×",
            seawall_ns / moka_ns
        );
    }
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "l1_hit paired: median seawall / moka {:.3}× (quartiles {:.3}–{:.3}×)",
        ratios[ratios.len() / 2],
        ratios[ratios.len() / 4],
        ratios[3 * ratios.len() / 4]
    );

    let mut group = c.benchmark_group("cache/l1_hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seawall", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let key = black_box(keys[rotation.next_index()].as_str());
                    black_box(cache.get::<Card>(key, Class::API).await);
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("moka", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let key = black_box(keys[rotation.next_index()].as_str());
                    black_box(moka.get(key));
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    let hits: u64 = cache
        .stats()
        .classes
        .iter()
        .map(|class| class.l1.hits)
        .sum();
    let misses: u64 = cache
        .stats()
        .classes
        .iter()
        .map(|class| class.l1.misses)
        .sum();
    eprintln!("l1_hit: seawall answered {hits} reads from L1, missed {misses}");
}

/// What learning the hot keys costs a read: `get_or_load` hits on L1, the
/// same cache with and without `learn_hot_keys` (its defaults: one read in
/// 8 counted), in paired rounds as `l1_hit` does.
fn hot_keys(c: &mut Criterion) {
    let runtime = current_thread();
    let keys = keys(KEYS);
    let entries = entries(&keys);
    let build = |learning: bool| {
        let builder = builder().l1(L1Capacity::Entries(KEYS as u64));
        let builder = if learning {
            builder.learn_hot_keys(HotKeyOptions::default())
        } else {
            builder
        };
        let cache = builder.build().unwrap_or_else(|e| panic!("{e}"));
        runtime
            .block_on(cache.set_many(entries.clone(), Class::API))
            .unwrap_or_else(|e| panic!("{e}"));
        cache.sync();
        cache
    };
    let (plain, learning) = (build(false), build(true));
    let mut rotation = Rotation::default();
    let mut ratios = Vec::new();
    for round in 1..=15 {
        let (plain_ns, learning_ns) = runtime.block_on(async {
            let mut elapsed = [Duration::ZERO; 2];
            for (at, cache) in [&plain, &learning].into_iter().enumerate() {
                let started = Instant::now();
                for _ in 0..KEYS {
                    let key = black_box(keys[rotation.next_index()].as_str());
                    black_box(hit(cache, key).await);
                }
                elapsed[at] = started.elapsed();
            }
            (elapsed[0], elapsed[1])
        });
        #[allow(clippy::cast_precision_loss)]
        let per_read = |elapsed: Duration| elapsed.as_nanos() as f64 / KEYS as f64;
        let (plain_ns, learning_ns) = (per_read(plain_ns), per_read(learning_ns));
        ratios.push(learning_ns / plain_ns);
        eprintln!(
            "hot_keys paired round {round}: learning {learning_ns:.0} ns, plain {plain_ns:.0} ns, {:.3}×",
            learning_ns / plain_ns
        );
    }
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "hot_keys paired: median learning / plain {:.3}× (quartiles {:.3}–{:.3}×)",
        ratios[ratios.len() / 2],
        ratios[ratios.len() / 4],
        ratios[3 * ratios.len() / 4]
    );
    let mut group = c.benchmark_group("cache/get_or_load_hit");
    group.throughput(Throughput::Elements(1));
    for (name, cache) in [("plain", &plain), ("learning", &learning)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        let key = black_box(keys[rotation.next_index()].as_str());
                        black_box(hit(cache, key).await);
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
    let learned = runtime.block_on(learning.hot_keys(Class::API, 10));
    assert!(!learned.is_empty(), "the learning cache learned its reads");
}

/// A read every key of which is cached: its loader is never run.
async fn hit(cache: &TieredCache, key: &str) -> Option<Card> {
    cache
        .get_or_load(key, Class::API, || async {
            Err::<Option<Card>, _>(std::io::Error::other("every key is cached"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Commands the server has run, `INFO` itself left out.
async fn commands_so_far(client: &Client) -> u64 {
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    info.lines()
        .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Prints the commands one call of `call` sends, over 1,000 calls.
fn report_commands<F: Future<Output = ()>>(
    runtime: &Runtime,
    client: &Client,
    name: &str,
    mut call: impl FnMut() -> F,
) {
    const CALLS: u32 = 1_000;
    runtime.block_on(async {
        let before = commands_so_far(client).await;
        for _ in 0..CALLS {
            call().await;
        }
        let sent = commands_so_far(client).await.saturating_sub(before);
        eprintln!(
            "redis per call, {name}: {:.2} commands",
            sent as f64 / f64::from(CALLS)
        );
    });
}

/// Times `iterations` sequential calls of `call` on `runtime`.
fn timed<F: Future<Output = ()>>(
    runtime: &Runtime,
    iterations: u64,
    mut call: impl FnMut() -> F,
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..iterations {
            call().await;
        }
        started.elapsed()
    })
}

fn redis(c: &mut Criterion) {
    let server = seawall_testkit::RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let runtime = current_thread();
    let (client, cache) = runtime.block_on(async {
        let client =
            Builder::from_config(Config::from_url(&server.url()).unwrap_or_else(|e| panic!("{e}")))
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
        client.init().await.unwrap_or_else(|e| panic!("{e}"));
        // Without L1 there is nothing for other instances' invalidations to
        // drop, and the feed's XREADs would blur the command counts.
        let cache = builder()
            .without_l1()
            .redis(client.clone())
            .follow_invalidations(false)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        (client, cache)
    });
    let keys = keys(BATCH);
    let entries = entries(&keys);
    runtime
        .block_on(cache.set_many(entries, Class::API))
        .unwrap_or_else(|e| panic!("{e}"));

    // The raw rows read the bytes the cache stored, under its key layout
    // (`<prefix>:k:<key>`): the same sizes, without the envelope's decoding.
    let raw_keys: Vec<String> = keys.iter().map(|key| format!("{PREFIX}:k:{key}")).collect();
    let stored: Option<Vec<u8>> = runtime
        .block_on(client.get::<Option<Vec<u8>>, _>(&raw_keys[0]))
        .unwrap_or_else(|e| panic!("{e}"));
    let stored =
        stored.unwrap_or_else(|| panic!("the cache stores {} under {}", keys[0], raw_keys[0]));
    eprintln!("l2_hit: a stored value is {} bytes", stored.len());
    let found = runtime.block_on(cache.get_many::<Card, _>(&keys, Class::API));
    assert!(found.iter().all(Option::is_some), "every key is in Redis");

    let seawall_get = || async {
        black_box(cache.get::<Card>(black_box(&keys[0]), Class::API).await);
    };
    let raw_get = || async {
        black_box(client.get::<Value, _>(black_box(&raw_keys[0])).await.ok());
    };
    let seawall_get_many = || async {
        black_box(
            cache
                .get_many::<Card, _>(black_box(&keys), Class::API)
                .await,
        );
    };
    let seawall_sequential = || async {
        for key in &keys {
            black_box(cache.get::<Card>(black_box(key), Class::API).await);
        }
    };
    let raw_batch: Vec<Key> = raw_keys.iter().map(|key| Key::from(key.as_str())).collect();
    let raw_mget = || async {
        black_box(
            client
                .mget::<Value, _>(black_box(raw_batch.clone()))
                .await
                .ok(),
        );
    };

    report_commands(&runtime, &client, "l2_hit/fred_get", raw_get);
    report_commands(&runtime, &client, "l2_hit/seawall_get", seawall_get);
    report_commands(&runtime, &client, "get_many/fred_mget_100", raw_mget);
    report_commands(
        &runtime,
        &client,
        "get_many/seawall_get_many_100",
        seawall_get_many,
    );
    report_commands(
        &runtime,
        &client,
        "get_many/seawall_get_100_sequential",
        seawall_sequential,
    );

    let mut group = c.benchmark_group("cache/l2_hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("fred_get", |b| {
        b.iter_custom(|iterations| timed(&runtime, iterations, raw_get))
    });
    group.bench_function("seawall_get", |b| {
        b.iter_custom(|iterations| timed(&runtime, iterations, seawall_get))
    });
    group.finish();

    let mut group = c.benchmark_group("cache/get_many");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("fred_mget_100", |b| {
        b.iter_custom(|iterations| timed(&runtime, iterations, raw_mget))
    });
    group.bench_function("seawall_get_many_100", |b| {
        b.iter_custom(|iterations| timed(&runtime, iterations, seawall_get_many))
    });
    group.bench_function("seawall_get_100_sequential", |b| {
        b.iter_custom(|iterations| timed(&runtime, iterations, seawall_sequential))
    });
    group.finish();

    let stats = cache.stats();
    eprintln!(
        "redis rows: seawall L2 hits {}, misses {}, Redis errors {}",
        stats.classes.iter().map(|class| class.l2.hits).sum::<u64>(),
        stats
            .classes
            .iter()
            .map(|class| class.l2.misses)
            .sum::<u64>(),
        stats.redis_errors,
    );
}

criterion_group!(benches, l1_hit, hot_keys, redis);
criterion_main!(benches);
