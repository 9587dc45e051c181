//! seawall-perfmon against raw `hdrhistogram`: record cost on one thread,
//! throughput with two threads recording into one series, and read cost.
//!
//! Also the anomaly detector's cost per observation, beside one
//! `hdrhistogram` record in the same run.
//!
//! Run: `cargo bench -p seawall-benches --bench perfmon`

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use seawall_perfmon::{Histogram, Monitor};

const HIGHEST_US: u64 = 3_600_000_000;

/// Latencies spread over typical request times (50 µs .. ~100 ms).
fn latencies() -> Vec<u64> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            50 + state % 100_000
        })
        .collect()
}

fn raw() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, HIGHEST_US, 3).unwrap_or_else(|e| panic!("{e}"))
}

fn series(monitor: &Monitor, name: &str) -> Histogram {
    monitor
        .histogram(name, "bench", &[])
        .and_then(|h| h.with_labels(&[]))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn record_single_thread(c: &mut Criterion) {
    let values = latencies();
    let mut group = c.benchmark_group("perfmon/record_1_thread");
    group.throughput(Throughput::Elements(values.len() as u64));

    group.bench_function("hdrhistogram_raw", |b| {
        let mut histogram = raw();
        b.iter(|| {
            for v in &values {
                let _ = histogram.record(black_box(*v));
            }
        });
    });

    let monitor = Monitor::new();
    let histogram = series(&monitor, "record_at_seconds");
    group.bench_function("seawall_record_at", |b| {
        // The caller's clock read (the one it computed the latency with) is reused.
        let now = Instant::now();
        b.iter(|| {
            for v in &values {
                histogram.record_at(Duration::from_micros(black_box(*v)), now);
            }
        });
    });

    let histogram = series(&monitor, "record_seconds");
    group.bench_function("seawall_record_with_clock_read", |b| {
        b.iter(|| {
            for v in &values {
                histogram.record(Duration::from_micros(black_box(*v)));
            }
        });
    });
    group.finish();
}

/// Each of `threads` threads records `per_thread` samples into one shared
/// recorder; returns the wall time from a common start to the last finish.
fn run_threads(threads: usize, per_thread: u64, record: &(dyn Fn(u64) + Sync)) -> Duration {
    let values = latencies();
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (barrier, values) = (&barrier, &values);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..per_thread {
                        record(values[(i & 4095) as usize]);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for handle in handles {
            let _ = handle.join();
        }
        start.elapsed()
    })
}

fn record_contended(c: &mut Criterion) {
    const PER_ITER: u64 = 10_000;
    let mut group = c.benchmark_group("perfmon/record_threads");
    for threads in [1_usize, 2] {
        group.throughput(Throughput::Elements(PER_ITER * threads as u64));

        let monitor = Monitor::new();
        let histogram = series(&monitor, "contended_seconds");
        let now = Instant::now();
        group.bench_with_input(
            BenchmarkId::new("seawall_record_at", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters * PER_ITER, &|v| {
                        histogram.record_at(Duration::from_micros(v), now)
                    })
                });
            },
        );

        // The ceiling: each thread records into its own hdrhistogram, sharing nothing.
        group.bench_with_input(BenchmarkId::new("hdrhistogram_per_thread", threads), &threads, |b, &threads| {
            b.iter_custom(|iters| {
                thread_local! {
                    static OWN: std::cell::RefCell<hdrhistogram::Histogram<u64>> = std::cell::RefCell::new(raw());
                }
                run_threads(threads, iters * PER_ITER, &|v| {
                    OWN.with_borrow_mut(|histogram| {
                        let _ = histogram.record(v);
                    });
                })
            });
        });

        // The obvious alternative: one hdrhistogram behind a mutex.
        let shared = Arc::new(Mutex::new(raw()));
        group.bench_with_input(
            BenchmarkId::new("hdrhistogram_mutex", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters * PER_ITER, &|v| {
                        if let Ok(mut histogram) = shared.lock() {
                            let _ = histogram.record(v);
                        }
                    })
                });
            },
        );
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let values = latencies();
    let mut group = c.benchmark_group("perfmon/read");

    let mut reference = raw();
    values.iter().for_each(|v| {
        let _ = reference.record(*v);
    });
    group.bench_function("hdrhistogram_raw_5_quantiles", |b| {
        b.iter(|| {
            [0.5, 0.9, 0.95, 0.99, 0.999].map(|q| black_box(&reference).value_at_quantile(q))
        });
    });

    let monitor = Monitor::new();
    let histogram = series(&monitor, "read_seconds");
    values
        .iter()
        .for_each(|v| histogram.record(Duration::from_micros(*v)));
    group.bench_function("seawall_lifetime_stats", |b| {
        b.iter(|| black_box(histogram.lifetime()))
    });
    group.bench_function("seawall_window_1m_stats", |b| {
        b.iter(|| black_box(histogram.window(Duration::from_secs(60))))
    });

    let monitor = Monitor::new();
    for route in 0..20 {
        for v in &values[..200] {
            monitor.record_request(
                "GET",
                &format!("/api/route{route}"),
                200,
                Duration::from_micros(*v),
            );
        }
    }
    group.bench_function("seawall_snapshot_20_routes", |b| {
        b.iter(|| black_box(monitor.snapshot()))
    });
    group.bench_function("seawall_prometheus_20_routes", |b| {
        b.iter(|| black_box(monitor.prometheus()))
    });
    group.finish();
}

/// The anomaly detector's cost per observation (target: ≤ 1 µs), with the
/// default options (an hour-of-day season), over a minute-by-minute series
/// of a week, beside one raw histogram record per value.
fn detect(c: &mut Criterion) {
    use seawall_perfmon::anomaly::{AnomalyOptions, Detector};
    let latencies = latencies();
    let values: Vec<f64> = latencies.iter().map(|&v| v as f64).collect();
    let mut group = c.benchmark_group("perfmon/anomaly");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("hdrhistogram_raw_record", |b| {
        let mut histogram = raw();
        b.iter(|| {
            for v in &latencies {
                let _ = histogram.record(black_box(*v));
            }
        });
    });
    group.bench_function("detector_observe", |b| {
        let mut detector = Detector::new(AnomalyOptions::default());
        let mut minute = 0_i64;
        b.iter(|| {
            for v in &values {
                minute = (minute + 1) % (7 * 24 * 60);
                black_box(detector.observe(minute * 60, black_box(*v)));
            }
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    record_single_thread,
    record_contended,
    read,
    detect
);
criterion_main!(benches);
