//! What reading on PostgreSQL replicas costs a read: the choice of where a
//! read goes (`Replicas::choose`, the caller's position checked against
//! what the monitor found: no round trip), against the read it routes
//! (`SELECT 1` through `Db::read`, on the replica), and that read against
//! the same one on a pool without replicas. A primary and a streaming
//! replica run on this machine, from the testkit.
//!
//! Before criterion's figures, the choice's own latency distribution is
//! printed to stderr (p50, p99, max over 200,000 choices, each timed
//! alone): the target is 50 µs at p99.
//!
//! Run: `cargo bench -p seawall-benches --bench replicas`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use seawall_app::config::DatabaseConfig;
use seawall_app::db::Db;
use seawall_app::db::caller::{self, Caller};
use seawall_app::db::replicas::{Freshness, Lsn};
use seawall_benches::timed;
use seawall_perfmon::Monitor;
use seawall_testkit::Postgres;

/// The servers and the two pools: one with the replica, one without.
struct Setup {
    _primary: Postgres,
    _replica: Postgres,
    with_replica: Db,
    primary_only: Db,
    /// A position the replica has replayed (a write's).
    position: Lsn,
}

async fn setup() -> Setup {
    let primary = Postgres::start().unwrap_or_else(|e| panic!("the primary starts: {e}"));
    let replica = Postgres::builder()
        .replica_of(&primary)
        .start()
        .unwrap_or_else(|e| panic!("the replica starts: {e}"));
    let config = DatabaseConfig {
        url: primary.url(),
        max_connections: Some(4),
        replicas: vec![replica.url()],
        ..DatabaseConfig::default()
    };
    let with_replica = Db::connect(&config, Monitor::new())
        .await
        .unwrap_or_else(|e| panic!("connects: {e}"));
    let primary_only = Db::connect(
        &DatabaseConfig {
            replicas: Vec::new(),
            ..config
        },
        Monitor::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("connects: {e}"));
    // A position the replica has replayed: the primary's, once a look
    // found it and the replica in rotation past it. A bench set-up, not a
    // test: a plain poll.
    let replicas = with_replica
        .replicas()
        .unwrap_or_else(|| panic!("replicas"));
    let position = loop {
        let position = replicas.primary_position();
        let state = replicas.states().remove(0);
        if position > Lsn(0) && state.in_rotation && state.replayed >= position {
            break position;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Setup {
        _primary: primary,
        _replica: replica,
        with_replica,
        primary_only,
        position,
    }
}

async fn select_one(db: &Db, freshness: Freshness) -> i64 {
    db.read(freshness, |connection| {
        Box::pin(async move {
            sqlx::query_scalar::<_, i64>("SELECT CAST(1 AS BIGINT)")
                .fetch_one(connection)
                .await
        })
    })
    .await
    .unwrap_or_else(|e| panic!("reads: {e}"))
}

/// The choice's latency, each timed alone: p50, p99 and the most.
async fn choice_percentiles(setup: &Setup) {
    let replicas = setup
        .with_replica
        .replicas()
        .unwrap_or_else(|| panic!("replicas"));
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)
        .unwrap_or_else(|e| panic!("{e}"));
    let freshness = Freshness::after(setup.position);
    for _ in 0..200_000 {
        let began = Instant::now();
        black_box(replicas.choose(black_box(freshness)).await);
        let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let _ = histogram.record(took.max(1));
    }
    eprintln!(
        "replicas/choice after a position, each timed alone (ns): p50 {}, p99 {}, max {}",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
}

fn replicas(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let setup = runtime.block_on(setup());
    runtime.block_on(choice_percentiles(&setup));
    let replicas = setup
        .with_replica
        .replicas()
        .unwrap_or_else(|| panic!("replicas"));

    let mut group = c.benchmark_group("replicas/choice");
    group.bench_function("after_position", |b| {
        let freshness = Freshness::after(setup.position);
        b.iter_custom(|iters| {
            runtime.block_on(timed(iters, || replicas.choose(black_box(freshness))))
        });
    });
    group.bench_function("caller_scope_and_choice", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(timed(iters, || {
                Caller::new(Some(setup.position))
                    .scope(async { replicas.choose(caller::freshness().await).await })
            }))
        });
    });
    group.finish();

    let mut group = c.benchmark_group("replicas/read_select_1");
    group.bench_function("replica_after_position", |b| {
        let freshness = Freshness::after(setup.position);
        b.iter_custom(|iters| {
            runtime.block_on(timed(iters, || select_one(&setup.with_replica, freshness)))
        });
    });
    group.bench_function("pool_without_replicas", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(timed(iters, || {
                select_one(&setup.primary_only, Freshness::ANY)
            }))
        });
    });
    group.finish();
}

criterion_group!(benches, replicas);
criterion_main!(benches);
