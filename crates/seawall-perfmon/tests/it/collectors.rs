//! Collectors: families read at every scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use openmetrics_parser::prometheus::parse_prometheus;
use seawall_perfmon::{CollectedFamily, Collector, Error, Monitor};

use crate::openmetrics::{parse, value};

/// A pool that reports its state like a database pool would.
struct Pool {
    idle: AtomicU64,
    waits: AtomicU64,
}

impl Collector for Pool {
    #[allow(clippy::cast_precision_loss)]
    fn collect(&self) -> Vec<CollectedFamily> {
        vec![
            CollectedFamily::gauge(
                "db_pool_connections",
                "Connections in the pool.",
                &["state"],
            )
            .sample(&["idle"], self.idle.load(Relaxed) as f64)
            .sample(&["in_use"], 2.0),
            CollectedFamily::counter("db_pool_waits", "Acquires that had to wait.", &[])
                .sample(&[], self.waits.load(Relaxed) as f64),
        ]
    }
}

#[test]
fn collected_families_are_read_at_every_scrape() -> Result<(), Error> {
    let monitor = Monitor::builder().namespace("app").build()?;
    let pool = Arc::new(Pool {
        idle: AtomicU64::new(3),
        waits: AtomicU64::new(0),
    });
    let shared = Arc::clone(&pool);
    monitor.register_collector(move || shared.collect())?;
    let connected = Arc::new(AtomicBool::new(true));
    let redis = Arc::clone(&connected);
    monitor.register_collector(move || {
        vec![
            CollectedFamily::gauge("redis_connected", "1 when Redis is connected.", &[])
                .sample(&[], if redis.load(Relaxed) { 1.0 } else { 0.0 }),
        ]
    })?;

    let text = monitor.prometheus();
    assert!(
        text.contains("# TYPE app_db_pool_connections gauge\n"),
        "{text}"
    );
    assert!(text.contains("\napp_db_pool_connections{state=\"idle\"} 3\n"));
    assert!(text.contains("# TYPE app_db_pool_waits_total counter\napp_db_pool_waits_total 0\n"));
    assert!(text.contains("\napp_redis_connected 1\n"));
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));

    pool.idle.store(1, Relaxed);
    pool.waits.store(4, Relaxed);
    connected.store(false, Relaxed);
    let text = monitor.openmetrics();
    assert!(text.contains("# TYPE app_db_pool_waits counter\n"));
    assert!(text.contains("\napp_db_pool_waits_total 4\n"));
    let exposition = parse(&text);
    assert_eq!(
        value(&exposition, "app_db_pool_connections", &[("state", "idle")]),
        1.0
    );
    assert_eq!(
        value(
            &exposition,
            "app_db_pool_connections",
            &[("state", "in_use")]
        ),
        2.0
    );
    assert_eq!(value(&exposition, "app_db_pool_waits", &[]), 4.0);
    assert_eq!(value(&exposition, "app_redis_connected", &[]), 0.0);
    assert_eq!(value(&exposition, "app_perfmon_collector_errors", &[]), 0.0);
    Ok(())
}

#[test]
fn families_may_opt_out_of_the_namespace() -> Result<(), Error> {
    let monitor = Monitor::builder().namespace("app").build()?;
    monitor.register_collector(|| {
        vec![
            CollectedFamily::gauge("node_widgets", "Widgets.", &[])
                .sample(&[], 1.0)
                .without_namespace(),
        ]
    })?;
    let text = monitor.prometheus();
    assert!(text.contains("\nnode_widgets 1\n"));
    assert!(!text.contains("app_node_widgets"));
    Ok(())
}

#[test]
fn special_values_are_exposed() -> Result<(), Error> {
    let monitor = Monitor::new();
    monitor.register_collector(|| {
        vec![
            CollectedFamily::gauge("limits", "Limits.", &["which"])
                .sample(&["none"], f64::INFINITY)
                .sample(&["unknown"], f64::NAN)
                .sample(&["tiny"], 1.5e-9)
                .sample(&["huge"], 2.0e20),
        ]
    })?;
    let text = monitor.openmetrics();
    for line in [
        "limits{which=\"none\"} +Inf\n",
        "limits{which=\"unknown\"} NaN\n",
        "limits{which=\"tiny\"} 1.5e-9\n",
        "limits{which=\"huge\"} 2e20\n",
    ] {
        assert!(text.contains(line), "no {line}in {text}");
    }
    let exposition = parse(&text);
    assert_eq!(
        value(&exposition, "limits", &[("which", "none")]),
        f64::INFINITY
    );
    assert!(value(&exposition, "limits", &[("which", "unknown")]).is_nan());
    assert!((value(&exposition, "limits", &[("which", "huge")]) - 2.0e20).abs() < 1.0);
    let prometheus = monitor.prometheus();
    parse_prometheus(&prometheus).unwrap_or_else(|e| panic!("{e:?}\n{prometheus}"));
    Ok(())
}

#[test]
fn registration_refuses_what_cannot_be_exposed() -> Result<(), Error> {
    let monitor = Monitor::builder().namespace("app").build()?;
    monitor.counter("jobs", "Jobs.", &[])?;
    monitor
        .register_collector(|| vec![CollectedFamily::gauge("taken", "", &[]).sample(&[], 1.0)])?;
    let attempts: Vec<(&str, CollectedFamily)> = vec![
        ("bad name", CollectedFamily::gauge("bad name", "", &[])),
        (
            "bad label",
            CollectedFamily::gauge("fine", "", &["bad-label"]),
        ),
        (
            "twice the label",
            CollectedFamily::gauge("fine", "", &["a", "a"]),
        ),
        (
            "a registered counter",
            CollectedFamily::gauge("jobs_total", "", &[]),
        ),
        (
            "a registered counter's family",
            CollectedFamily::counter("jobs", "", &[]),
        ),
        (
            "another collector's",
            CollectedFamily::counter("taken", "", &[]),
        ),
        (
            "a built-in histogram's",
            CollectedFamily::gauge("http_server_request_duration_seconds_sum", "", &[]),
        ),
        (
            "reserved",
            CollectedFamily::gauge("perfmon_anything", "", &[]),
        ),
        (
            "label count",
            CollectedFamily::gauge("fine", "", &["a"]).sample(&[], 1.0),
        ),
        (
            "twice the series",
            CollectedFamily::gauge("fine", "", &["a"])
                .sample(&["x"], 1.0)
                .sample(&["x"], 2.0),
        ),
        (
            "negative counter",
            CollectedFamily::counter("fine", "", &[]).sample(&[], -1.0),
        ),
        (
            "NaN counter",
            CollectedFamily::counter("fine", "", &[]).sample(&[], f64::NAN),
        ),
    ];
    for (what, family) in attempts {
        let result = monitor.register_collector(move || vec![family.clone()]);
        assert!(result.is_err(), "{what} was accepted");
    }
    // None of them was registered.
    let text = monitor.prometheus();
    assert!(!text.contains("fine"), "{text}");
    assert!(text.contains("app_perfmon_collector_errors_total 0\n"));
    Ok(())
}

#[test]
fn a_bad_family_at_scrape_time_is_left_out_and_counted() -> Result<(), Error> {
    let monitor = Monitor::new();
    let broken = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&broken);
    monitor.register_collector(move || {
        let mut families =
            vec![CollectedFamily::gauge("steady", "Always fine.", &[]).sample(&[], 1.0)];
        if flag.load(Relaxed) {
            families.push(CollectedFamily::gauge("steady", "A clash.", &[]).sample(&[], 2.0));
            families.push(
                CollectedFamily::counter("drift", "", &["k"])
                    .sample(&["a"], -3.0)
                    .sample(&["b"], 3.0),
            );
        }
        families
    })?;
    broken.store(true, Relaxed);
    let text = monitor.openmetrics();
    let exposition = parse(&text);
    assert_eq!(value(&exposition, "steady", &[]), 1.0);
    assert_eq!(value(&exposition, "drift", &[("k", "b")]), 3.0);
    assert!(!text.contains("k=\"a\""));
    // One family and one sample left out.
    assert_eq!(value(&exposition, "perfmon_collector_errors", &[]), 2.0);
    // A counter: it keeps counting.
    let text = monitor.prometheus();
    assert!(
        text.contains("\nperfmon_collector_errors_total 4\n"),
        "{text}"
    );
    Ok(())
}

#[test]
fn collectors_are_object_safe() -> Result<(), Error> {
    let pools: Vec<Box<dyn Collector>> = vec![
        Box::new(Pool {
            idle: AtomicU64::new(1),
            waits: AtomicU64::new(0),
        }),
        Box::new(Vec::<CollectedFamily>::new),
    ];
    let families: usize = pools.iter().map(|p| p.collect().len()).sum();
    assert_eq!(families, 2);
    let family = &pools[0].collect()[0];
    assert_eq!(family.name(), "db_pool_connections");
    assert_eq!(family.samples()[0], (vec!["idle".to_owned()], 1.0));
    Ok(())
}
