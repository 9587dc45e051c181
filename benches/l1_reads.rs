//! `seawall-l1-reads`: reads every one of 100,000 keys, in the scattered
//! order of the `cache/l1_hit` benchmark, through seawall's L1 or through
//! moka, so that `scripts/l1-reads` can count what one hit costs under
//! valgrind: instructions, and the reads that miss a simulated 1 MiB cache
//! (this machine's L2 per core). Only `read_seawall` and `read_moka` are
//! counted; filling the caches, and a first pass over the keys three times
//! (it runs moka's housekeeping of the fill), are not.
//!
//! Usage: `seawall-l1-reads seawall|moka READS`

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Duration;

use seawall_benches::cards::{Card, KEYS, Rotation, entries, keys};
use seawall_cache::{Class, L1Capacity, Policy, TieredCache};
use tokio::runtime::Runtime;

/// The counted reads through seawall; the number answered.
#[inline(never)]
fn read_seawall(runtime: &Runtime, cache: &TieredCache, keys: &[String], reads: usize) -> usize {
    black_box(seawall_pass(runtime, cache, keys, reads))
}

/// The counted reads through moka; the number answered.
#[inline(never)]
fn read_moka(
    runtime: &Runtime,
    moka: &moka::sync::Cache<String, Card>,
    keys: &[String],
    reads: usize,
) -> usize {
    black_box(moka_pass(runtime, moka, keys, reads))
}

/// `reads` hits through seawall; the number answered.
#[inline(never)]
fn seawall_pass(runtime: &Runtime, cache: &TieredCache, keys: &[String], reads: usize) -> usize {
    runtime.block_on(async {
        let (mut rotation, mut hits) = (Rotation::default(), 0);
        for _ in 0..reads {
            let key = black_box(keys[rotation.next_index()].as_str());
            hits += usize::from(cache.get::<Card>(key, Class::API).await.is_some());
        }
        hits
    })
}

/// `reads` hits through moka; the number answered.
#[inline(never)]
fn moka_pass(
    runtime: &Runtime,
    moka: &moka::sync::Cache<String, Card>,
    keys: &[String],
    reads: usize,
) -> usize {
    runtime.block_on(async {
        let (mut rotation, mut hits) = (Rotation::default(), 0);
        for _ in 0..reads {
            let key = black_box(keys[rotation.next_index()].as_str());
            hits += usize::from(moka.get(key).is_some());
        }
        hits
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(which), Some(Ok(reads))) = (args.first(), args.get(1).map(|n| n.parse::<usize>()))
    else {
        eprintln!("usage: seawall-l1-reads seawall|moka READS");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let keys = keys(KEYS);
    let entries = entries(&keys);
    let hits = match which.as_str() {
        "seawall" => {
            let built = TieredCache::builder()
                .prefix("bench:cache")
                .class(Class::API, Policy::new(Duration::from_secs(24 * 3600)))
                .l1(L1Capacity::Entries(KEYS as u64))
                .build();
            let cache = match built {
                Ok(cache) => cache,
                Err(error) => {
                    eprintln!("no cache: {error}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(error) = runtime.block_on(cache.set_many(entries, Class::API)) {
                eprintln!("not stored: {error}");
                return ExitCode::FAILURE;
            }
            cache.sync();
            seawall_pass(&runtime, &cache, &keys, 3 * KEYS);
            read_seawall(&runtime, &cache, &keys, reads)
        }
        "moka" => {
            let moka = moka::sync::Cache::<String, Card>::new(KEYS as u64);
            for (key, value) in entries {
                moka.insert(key, value);
            }
            moka.run_pending_tasks();
            moka_pass(&runtime, &moka, &keys, 3 * KEYS);
            read_moka(&runtime, &moka, &keys, reads)
        }
        _ => {
            eprintln!("usage: seawall-l1-reads seawall|moka READS");
            return ExitCode::from(2);
        }
    };
    if hits != reads {
        eprintln!("{which}: {hits} of {reads} reads were hits");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
