//! Gauges and build information.

use openmetrics_parser::PrometheusValue;
use openmetrics_parser::prometheus::parse_prometheus;
use seawall_perfmon::{Error, Monitor, OVERFLOW_LABEL};

use crate::openmetrics::{parse, value};

/// The value of the gauge `family{label="value"}` in the Prometheus text format.
fn prometheus_gauge(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    let exposition = parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let found = exposition
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no {family}"));
    let sample = found.iter_samples().find(|s| {
        s.get_labelset().is_ok_and(|set| {
            labels
                .iter()
                .all(|(n, v)| set.get_label_value(n) == Some(*v))
        })
    });
    match sample.map(|s| &s.value) {
        Some(PrometheusValue::Gauge(number)) => number.as_f64(),
        other => panic!("no gauge {family}{labels:?}: {other:?}"),
    }
}

#[test]
fn gauges_set_inc_dec_and_add() -> Result<(), Error> {
    let monitor = Monitor::builder().namespace("app").build()?;
    let pool = monitor.gauge("db_pool_connections", "Connections.", &["state"])?;
    let idle = pool.with_labels(&["idle"])?;
    let busy = pool.with_labels(&["in_use"])?;
    assert_eq!(idle.get(), 0.0);
    idle.set(5.0);
    idle.inc();
    idle.dec();
    idle.dec();
    busy.add(2.5);
    busy.add(-0.5);
    assert_eq!(idle.get(), 4.0);
    assert_eq!(busy.get(), 2.0);
    // The same labels give the same gauge.
    assert_eq!(pool.with_labels(&["idle"])?.get(), 4.0);

    let text = monitor.prometheus();
    assert!(text.contains("# TYPE app_db_pool_connections gauge\n"));
    assert!(text.contains("\napp_db_pool_connections{state=\"idle\"} 4\n"));
    assert_eq!(
        prometheus_gauge(&text, "app_db_pool_connections", &[("state", "in_use")]),
        2.0
    );
    let exposition = parse(&monitor.openmetrics());
    assert_eq!(
        value(&exposition, "app_db_pool_connections", &[("state", "idle")]),
        4.0
    );

    busy.set(-1.25);
    assert_eq!(
        value(
            &parse(&monitor.openmetrics()),
            "app_db_pool_connections",
            &[("state", "in_use")]
        ),
        -1.25
    );
    Ok(())
}

#[test]
fn requests_in_flight_return_to_zero() -> Result<(), Error> {
    let monitor = Monitor::new();
    let in_flight = monitor
        .gauge("http_requests_in_flight", "Requests being served.", &[])?
        .with_labels(&[])?;
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let in_flight = in_flight.clone();
            scope.spawn(move || {
                for _ in 0..10_000 {
                    in_flight.inc();
                    in_flight.dec();
                }
            });
        }
    });
    assert_eq!(in_flight.get(), 0.0);
    Ok(())
}

#[test]
fn gauges_share_the_rules_of_other_metrics() -> Result<(), Error> {
    let monitor = Monitor::builder().max_series_per_metric(2).build()?;
    let queue = monitor.gauge("queue_depth", "Jobs waiting.", &["queue"])?;
    assert!(matches!(
        queue.with_labels(&[]),
        Err(Error::LabelCount { got: 0, .. })
    ));
    assert!(matches!(
        monitor.gauge("queue_depth", "", &["other"]),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        monitor.counter("queue_depth", "", &["queue"]),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        monitor.gauge("2fast", "", &[]),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        monitor.gauge("ok", "", &["bad-label"]),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        monitor.gauge("perfmon_mine", "", &[]),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        monitor.gauge("http_server_request_duration_seconds_count", "", &[]),
        Err(Error::Conflict { .. })
    ));

    for name in ["a", "b", "c", "d"] {
        queue.with_labels(&[name])?.inc();
    }
    let text = monitor.prometheus();
    assert!(
        text.contains(&format!("queue_depth{{queue=\"{OVERFLOW_LABEL}\"}} 2\n")),
        "{text}"
    );
    assert!(text.contains("perfmon_folded_series_total{metric=\"queue_depth\"} 2\n"));
    parse(&monitor.openmetrics());
    Ok(())
}

#[test]
fn the_snapshot_lists_gauges() -> Result<(), Error> {
    let monitor = Monitor::new();
    monitor
        .gauge("redis_connected", "1 when connected.", &[])?
        .with_labels(&[])?
        .set(1.0);
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.gauges.len(), 1);
    assert_eq!(snapshot.gauges[0].name, "redis_connected");
    assert_eq!(snapshot.gauges[0].series[0].value, 1.0);
    assert!(
        monitor
            .snapshot_json()
            .contains("\"gauges\":[{\"name\":\"redis_connected\"")
    );
    Ok(())
}

#[test]
fn build_info_is_a_gauge_of_one() -> Result<(), Error> {
    let monitor = Monitor::builder().namespace("seawall").build()?;
    monitor.build_info(&[("version", "1.2.3"), ("revision", "abc\"def")])?;
    let text = monitor.prometheus();
    assert!(text.contains("# TYPE seawall_build_info gauge\n"));
    assert!(
        text.contains("seawall_build_info{version=\"1.2.3\",revision=\"abc\\\"def\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        prometheus_gauge(&text, "seawall_build_info", &[("version", "1.2.3")]),
        1.0
    );
    let exposition = parse(&monitor.openmetrics());
    assert_eq!(
        value(
            &exposition,
            "seawall_build_info",
            &[("revision", "abc\"def")]
        ),
        1.0
    );
    // Its label names are set by the first call.
    assert!(matches!(
        monitor.build_info(&[("version", "1.2.4")]),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        Monitor::new().build_info(&[("bad-label", "x")]),
        Err(Error::InvalidName { .. })
    ));
    Ok(())
}
