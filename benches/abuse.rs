//! What abuse detection adds to a request, beside what the request path
//! already pays for a rate-limit check.
//!
//! - `abuse/request/limiter_check`: one check of a GCRA limiter in process
//!   memory (`Limiter::check_now`), the DDoS limiter's check on every
//!   request, over 1,024 client keys in turn: the cheapest limiter check the
//!   service makes.
//! - `abuse/request/watch_cost_and_record`: what the workload gate adds per
//!   request with `ratelimit.abuse` on: `AbuseWatch::cost` (what the
//!   request takes of its limits) and `AbuseWatch::record` (the answered
//!   request counted), over the same keys, 64 paths and one route.
//! - `abuse/request/watch_cost_and_record_acting`: the same while 16 keys
//!   are tightened (the cost then reads the actions' map).
//!
//! The intervals are never closed here: the judging runs apart from
//! requests, every 20 s by default.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seawall_ratelimit::abuse::{AbuseWatch, Mode};
use seawall_ratelimit::{Limit, Limiter, MemoryStore};

const KEYS: usize = 1024;

fn request(c: &mut Criterion) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("2001:db8::{i:x}")).collect();
    let paths: Vec<String> = (0..64).map(|i| format!("/api/content?page={i}")).collect();
    let limiter = Limiter::builder("ddos")
        .limit(Limit::gcra(1_000_000, Duration::from_secs(1), 1_000_000_000).expect("limit"))
        .store(MemoryStore::new())
        .build()
        .expect("limiter");
    let watch = AbuseWatch::builder()
        .mode(Mode::Act)
        .build()
        .expect("watch");
    let acting = AbuseWatch::builder()
        .mode(Mode::Act)
        .min_requests(10)
        .build()
        .expect("watch");
    // Sixteen scrapers, found and tightened.
    for scraper in 0..16 {
        for page in 0..200 {
            acting.record(
                &format!("scraper-{scraper}"),
                "/api/content",
                &format!("/p/{page}"),
                200,
            );
        }
    }
    let _ = acting.judge_local_at(1_800_000_000_000);
    assert_eq!(acting.actions().len(), 16, "the scrapers are tightened");

    let mut group = c.benchmark_group("abuse/request");
    group.throughput(Throughput::Elements(1));
    let mut i = 0_usize;
    group.bench_function("limiter_check", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let key = black_box(keys[i % KEYS].as_str());
            black_box(limiter.check_now(key, 1));
        });
    });
    for (name, watch) in [
        ("watch_cost_and_record", &watch),
        ("watch_cost_and_record_acting", &acting),
    ] {
        let mut i = 0_usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let key = black_box(keys[i % KEYS].as_str());
                let cost = watch.cost(key);
                watch.record(key, "/api/content", black_box(paths[i % 64].as_str()), 200);
                black_box(cost);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, request);
criterion_main!(benches);
