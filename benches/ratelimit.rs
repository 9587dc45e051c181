//! seawall-ratelimit against governor (memory) and against a minimal GCRA
//! script on the same Redis client (Redis), in the same run.
//!
//! Run: `cargo bench -p seawall-benches --bench ratelimit`
//!
//! - `ratelimit/memory_hot_key` and `ratelimit/memory_100k_keys`: one check
//!   per iteration on one thread, seawall's GCRA and token bucket on the
//!   memory store (monotonic clock) beside governor's keyed limiter (its
//!   default clock), every check admitted. `seawall_*` call the synchronous
//!   `Limiter::check_now`, as governor's `check_key` is; `seawall_gcra_async`
//!   polls the async `Limiter::check` once, as an async caller gets it.
//! - `ratelimit/memory_2_threads`: two threads checking the 100k keys.
//! - `ratelimit/redis_64_tasks`: checks per second from 64 concurrent tasks
//!   over 100k keys on one fred client against a throwaway redis-server:
//!   seawall's GCRA, token bucket, fixed window and sliding window, and a
//!   minimal GCRA script (one GET, one SET) as the baseline.
//!
//! Before the groups, it prints the keys each memory limiter holds and the
//! resident memory it grew by after a million distinct keys, and the Redis
//! commands and server microseconds per check from `INFO commandstats` for
//! every algorithm and a quota of two rules, beside the minimal script's:
//! the median of fifteen rounds that take turns, each script's ratio taken
//! to the minimal script's passes just before and after it.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fred::prelude::{Builder, Client, ClientLike, Config, LuaInterface};
use fred::types::scripts::Script;
use governor::{DefaultKeyedRateLimiter, Quota as GovernorQuota, RateLimiter as Governor};
use seawall_ratelimit::{Limit, Limiter, MemoryStore, Quota, RedisStore};

const KEYS: usize = 100_000;
const RATE: u32 = 1_000_000;
/// A burst no run exhausts (a check takes well over 10 ns, and a run lasts
/// under a minute), so every check in the memory groups is admitted and the
/// groups compare the admitting path.
const BURST: u32 = 1_000_000_000;

/// Runs a future that never waits (the memory store) to completion.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the memory store never waits"),
    }
}

/// One check on a memory store, synchronously (as governor's `check_key`).
fn check_now(limiter: &Limiter, key: &str) -> bool {
    limiter
        .check_now(key, 1)
        .and_then(Result::ok)
        .is_some_and(|decision| decision.allowed)
}

/// Says whether the group compared admitting checks only, as it means to.
fn report_admitted(group: &str, limiters: &[&Limiter]) {
    for limiter in limiters {
        let counts = limiter.counts();
        eprintln!(
            "{group}: {} admitted {} checks, rejected {}",
            limiter
                .quota()
                .rules()
                .map(|(_, l)| l.algorithm().name())
                .collect::<Vec<_>>()
                .join("+"),
            counts.allowed,
            counts.rejected
        );
    }
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("2001:db8::{i:x}")).collect()
}

fn seawall(limit: Limit) -> Limiter {
    Limiter::builder("bench")
        .limit(limit)
        .store(MemoryStore::new())
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn seawall_gcra() -> Limiter {
    seawall(
        Limit::gcra(u64::from(RATE), Duration::from_secs(1), u64::from(BURST))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn seawall_token_bucket() -> Limiter {
    seawall(
        Limit::token_bucket(u64::from(RATE), Duration::from_secs(1), u64::from(BURST))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn governor() -> DefaultKeyedRateLimiter<String> {
    let rate = NonZeroU32::new(RATE).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN);
    Governor::keyed(GovernorQuota::per_second(rate).allow_burst(burst))
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Keys held and memory grown after a million distinct keys, each checked once.
fn report_memory() {
    let flood = |check: &mut dyn FnMut(&str)| {
        let before = resident_kib();
        for i in 0..1_000_000_u32 {
            check(&format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff));
        }
        resident_kib().saturating_sub(before)
    };
    let store = MemoryStore::builder().max_keys(100_000).build();
    let limiter = Limiter::builder("flood")
        .limit(Limit::gcra(100, Duration::from_secs(3600), 100).unwrap_or_else(|e| panic!("{e}")))
        .store(store.clone())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let grown = flood(&mut |key| {
        black_box(now(limiter.check(key, 1)).unwrap_or_else(|e| panic!("{e}")));
    });
    eprintln!(
        "memory flood: seawall (max_keys 100,000) holds {} keys, RSS +{} KiB",
        store.len(),
        grown
    );
    let governor = governor();
    let grown = flood(&mut |key| {
        black_box(governor.check_key(&key.to_owned()).is_ok());
    });
    eprintln!(
        "memory flood: governor holds {} keys, RSS +{} KiB",
        governor.len(),
        grown
    );
}

fn memory(c: &mut Criterion) {
    report_memory();
    let keys = keys();
    let mut hot = c.benchmark_group("ratelimit/memory_hot_key");
    hot.throughput(Throughput::Elements(1));
    let gcra = seawall_gcra();
    hot.bench_function("seawall_gcra", |b| {
        b.iter(|| check_now(&gcra, black_box("2001:db8::1")))
    });
    hot.bench_function("seawall_gcra_async", |b| {
        b.iter(|| now(gcra.check(black_box("2001:db8::1"), 1)).map(|d| d.allowed))
    });
    let bucket = seawall_token_bucket();
    hot.bench_function("seawall_token_bucket", |b| {
        b.iter(|| check_now(&bucket, black_box("2001:db8::1")))
    });
    let gov = governor();
    let hot_key = "2001:db8::1".to_owned();
    hot.bench_function("governor_keyed", |b| {
        b.iter(|| gov.check_key(black_box(&hot_key)).is_ok())
    });
    hot.finish();
    report_admitted("memory_hot_key", &[&gcra, &bucket]);

    let mut many = c.benchmark_group("ratelimit/memory_100k_keys");
    many.throughput(Throughput::Elements(1));
    let gcra = seawall_gcra();
    let mut i = 0;
    many.bench_function("seawall_gcra", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            check_now(&gcra, black_box(&keys[i]))
        })
    });
    many.bench_function("seawall_gcra_async", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            now(gcra.check(black_box(&keys[i]), 1)).map(|d| d.allowed)
        })
    });
    let bucket = seawall_token_bucket();
    many.bench_function("seawall_token_bucket", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            check_now(&bucket, black_box(&keys[i]))
        })
    });
    let gov = governor();
    many.bench_function("governor_keyed", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            gov.check_key(black_box(&keys[i])).is_ok()
        })
    });
    many.finish();
    report_admitted("memory_100k_keys", &[&gcra, &bucket]);

    let keys = Arc::new(keys);
    let mut threads = c.benchmark_group("ratelimit/memory_2_threads");
    const PER_THREAD: usize = 20_000;
    threads.throughput(Throughput::Elements(2 * PER_THREAD as u64));
    let two_threads = |check: Arc<dyn Fn(&str) + Send + Sync>| {
        let keys = keys.clone();
        move |iterations: u64| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..2 {
                        let check = check.clone();
                        let keys = keys.clone();
                        scope.spawn(move || {
                            for n in 0..PER_THREAD {
                                check(&keys[(t * 50_000 + n * 7) % KEYS]);
                            }
                        });
                    }
                });
                total += started.elapsed();
            }
            total
        }
    };
    let gcra = seawall_gcra();
    let run = two_threads(Arc::new(move |key| {
        black_box(check_now(&gcra, key));
    }));
    threads.bench_function("seawall_gcra", |b| b.iter_custom(&run));
    let gov = governor();
    let run = two_threads(Arc::new(move |key| {
        black_box(gov.check_key(&key.to_owned()).is_ok());
    }));
    threads.bench_function("governor_keyed_with_key_alloc", |b| b.iter_custom(&run));
    threads.finish();
}

/// The smallest GCRA a Redis limiter can run: one key holding the TAT.
/// The baseline script: `TIME`, `GET`, `SET … PX` (also measured by
/// `scripts/lua-instructions`).
const MINIMAL_GCRA: &str = include_str!("minimal_gcra.lua");

/// The middle value (the upper one of an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Commands the server has run (INFO itself left out), and the
/// microseconds it spent in EVALSHA, scripts' calls included.
async fn commands_so_far(client: &Client) -> (u64, u64) {
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .unwrap_or_default();
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split(name)
            .nth(1)?
            .split(',')
            .next()?
            .parse::<u64>()
            .ok()
    };
    let stats = || {
        info.lines()
            .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info"))
    };
    let calls = stats().filter_map(|line| field(line, "calls=")).sum();
    let evalsha_us = stats()
        .filter(|line| line.starts_with("cmdstat_evalsha:"))
        .find_map(|line| field(line, "usec="))
        .unwrap_or(0);
    (calls, evalsha_us)
}

fn redis(c: &mut Criterion) {
    let server = seawall_testkit::RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let client = runtime.block_on(async {
        let client =
            Builder::from_config(Config::from_url(&server.url()).unwrap_or_else(|e| panic!("{e}")))
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
        client.init().await.unwrap_or_else(|e| panic!("{e}"));
        client
    });
    let keys = Arc::new(keys());
    const TASKS: usize = 64;
    const PER_TASK: usize = 200;
    let checks = (TASKS * PER_TASK) as u64;

    let limit = |algorithm: &str| -> Limit {
        let hour = Duration::from_secs(3600);
        match algorithm {
            "gcra" => Limit::gcra(1_000_000, hour, 1_000_000),
            "token_bucket" => Limit::token_bucket(1_000_000, hour, 1_000_000),
            "leaky_bucket" => Limit::leaky_bucket(1_000_000, hour, 1_000_000),
            "leaky_queue" => Limit::leaky_queue(1_000_000, hour, 1_000_000),
            "fixed_window" => Limit::fixed_window(1_000_000, hour),
            "sliding_log" => Limit::sliding_log(seawall_ratelimit::MAX_LOG_LIMIT, hour),
            _ => Limit::sliding_window(1_000_000, hour),
        }
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let quota = |algorithm: &str| -> Quota {
        if algorithm == "quota" {
            Quota::builder()
                .rule("gcra", limit("gcra"))
                .and_then(|q| q.rule("window", limit("fixed_window")))
                .and_then(|q| q.build())
        } else {
            Ok(Quota::from(limit(algorithm)))
        }
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let minimal = Arc::new(Script::from_lua(MINIMAL_GCRA));
    runtime.block_on(async {
        minimal
            .load(&client)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });

    type Check =
        Arc<dyn Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
    let run = |check: Check| {
        let runtime = &runtime;
        move |iterations: u64| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let mut tasks = tokio::task::JoinSet::new();
                    for task in 0..TASKS {
                        let check = check.clone();
                        tasks.spawn(async move {
                            for n in 0..PER_TASK {
                                check((task * 1_543 + n * 97) % KEYS).await;
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                }
                started.elapsed()
            })
        }
    };
    let seawall_check = |algorithm: &str| -> Check {
        let limiter = Limiter::builder(&format!("bench_{algorithm}"))
            .quota(quota(algorithm))
            .store(RedisStore::new(client.clone()))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let keys = keys.clone();
        Arc::new(move |i| {
            let limiter = limiter.clone();
            let keys = keys.clone();
            Box::pin(async move {
                black_box(limiter.check(&keys[i], 1).await.map(|d| d.allowed).ok());
            })
        })
    };
    let minimal_check: Check = {
        let client = client.clone();
        let keys = keys.clone();
        let minimal = minimal.clone();
        Arc::new(move |i| {
            let (client, keys, minimal) = (client.clone(), keys.clone(), minimal.clone());
            Box::pin(async move {
                let reply: Result<i64, _> = minimal
                    .evalsha_with_reload(
                        &client,
                        format!("{{min}}:{}", keys[i]),
                        vec![3_600_u64, 1_000_000],
                    )
                    .await;
                black_box(reply.ok());
            })
        })
    };

    // Commands and server time per check, from the server's own counters:
    // a first pass creates the keys, then fifteen rounds take turns, one
    // pass (12,800 checks) per script each, so that the machine's drift
    // falls on every script alike. Within a round the minimal script runs
    // first and again after each other script, and each script's ratio is
    // taken to the mean of the minimal passes just before and after it, so
    // that no script's ratio depends on its place in the round; the median
    // of the rounds is reported.
    let measured: Vec<(&str, Check)> = [
        ("minimal_gcra_script", minimal_check.clone()),
        ("seawall_gcra", seawall_check("gcra")),
        ("seawall_token_bucket", seawall_check("token_bucket")),
        ("seawall_leaky_bucket", seawall_check("leaky_bucket")),
        ("seawall_leaky_queue", seawall_check("leaky_queue")),
        ("seawall_fixed_window", seawall_check("fixed_window")),
        ("seawall_sliding_window", seawall_check("sliding_window")),
        ("seawall_sliding_log", seawall_check("sliding_log")),
        ("seawall_quota_gcra_fixed_window", seawall_check("quota")),
    ]
    .into_iter()
    .collect();
    for (_, check) in &measured {
        run(check.clone())(1);
    }
    const ROUNDS: usize = 15;
    // Per script: commands per check, then per round µs and ratio.
    let mut commands = vec![0.0; measured.len()];
    let mut server_us = vec![Vec::with_capacity(ROUNDS); measured.len()];
    let mut ratios = vec![Vec::with_capacity(ROUNDS); measured.len()];
    // One pass of a script: commands and server µs per check.
    let pass = |check: &Check| {
        let before = runtime.block_on(commands_so_far(&client));
        run(check.clone())(1);
        let after = runtime.block_on(commands_so_far(&client));
        #[allow(clippy::cast_precision_loss)]
        let per_check =
            |after: u64, before: u64| after.saturating_sub(before) as f64 / checks as f64;
        (per_check(after.0, before.0), per_check(after.1, before.1))
    };
    for _ in 0..ROUNDS {
        let (minimal_commands, mut minimal_before) = pass(&measured[0].1);
        commands[0] = minimal_commands;
        server_us[0].push(minimal_before);
        ratios[0].push(1.0);
        for (index, (_, check)) in measured.iter().enumerate().skip(1) {
            let (per_check, us) = pass(check);
            let (_, minimal_after) = pass(&measured[0].1);
            commands[index] = per_check;
            server_us[index].push(us);
            ratios[index].push(us / f64::midpoint(minimal_before, minimal_after));
            minimal_before = minimal_after;
        }
    }
    for (index, (name, _)) in measured.iter().enumerate() {
        let (low, high) = (
            ratios[index].iter().copied().fold(f64::INFINITY, f64::min),
            ratios[index].iter().copied().fold(0.0, f64::max),
        );
        eprintln!(
            "redis per check, {name}: {:.2} commands (EVALSHA and the script's calls), median of {ROUNDS} rounds {:.2} µs in the server, {:.2}× the minimal script (rounds {low:.2}–{high:.2}×)",
            commands[index],
            median(&mut server_us[index]),
            median(&mut ratios[index]),
        );
    }

    let mut group = c.benchmark_group("ratelimit/redis_64_tasks");
    group.throughput(Throughput::Elements(checks));
    group.sample_size(20);
    group.bench_function("minimal_gcra_script", |b| {
        b.iter_custom(run(minimal_check.clone()))
    });
    for algorithm in ["gcra", "token_bucket", "fixed_window", "sliding_window"] {
        let check = seawall_check(algorithm);
        group.bench_function(format!("seawall_{algorithm}"), |b| {
            b.iter_custom(run(check.clone()))
        });
    }
    group.finish();
    let _ = runtime.block_on(client.script_flush(false));
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
