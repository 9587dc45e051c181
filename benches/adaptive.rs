//! The adaptive concurrency limiter's own cost on an unloaded request (one
//! admission and one release with its sample) against the static limit it
//! replaces: a tokio semaphore's permit taken and given back.
//!
//! Run: `cargo bench -p seawall-benches --bench adaptive`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use seawall_perfmon::Monitor;
use seawall_ratelimit::{AdaptiveLimiter, Aimd, Gradient, LimitAlgorithm};
use tokio::sync::Semaphore;

fn limiter(algorithm: impl LimitAlgorithm, monitor: &Monitor, name: &str) -> AdaptiveLimiter {
    AdaptiveLimiter::builder(algorithm)
        .bounds(4, 512)
        .initial(64)
        .metrics(monitor, name)
        .build()
        .unwrap_or_else(|error| panic!("{error}"))
}

fn unloaded_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("adaptive/unloaded_request");
    let semaphore = Arc::new(Semaphore::new(512));
    group.bench_function("static_semaphore", |b| {
        b.iter(|| {
            let permit = Arc::clone(&semaphore)
                .try_acquire_owned()
                .unwrap_or_else(|error| panic!("{error}"));
            drop(black_box(permit));
        });
    });
    let monitor = Monitor::new();
    for (name, limiter) in [
        ("gradient", limiter(Gradient::new(), &monitor, "gradient")),
        ("aimd", limiter(Aimd::new(), &monitor, "aimd")),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let token = limiter
                    .try_acquire()
                    .unwrap_or_else(|| panic!("room at {}", limiter.limit()));
                let token = black_box(token);
                token.success();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, unloaded_request);
criterion_main!(benches);
