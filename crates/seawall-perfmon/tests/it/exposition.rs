use std::time::Duration;

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue, Sample};
use seawall_perfmon::{Monitor, PROMETHEUS_CONTENT_TYPE};

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

fn parse(text: &str) -> Exposition {
    match parse_prometheus(text) {
        Ok(exposition) => exposition,
        Err(error) => panic!("the exposition does not parse: {error:?}\n{text}"),
    }
}

/// The sample of family `name` whose label `label` is `value`.
fn sample<'a>(
    exposition: &'a Exposition,
    name: &str,
    label: &str,
    value: &str,
) -> &'a Sample<PrometheusValue> {
    let Some(family) = exposition.families.get(name) else {
        panic!("no family {name}")
    };
    let found = family.iter_samples().find(|s| {
        s.get_labelset()
            .is_ok_and(|l| l.get_label_value(label) == Some(value))
    });
    found.unwrap_or_else(|| panic!("no {name}{{{label}=\"{value}\"}}"))
}

#[test]
fn histograms_and_counters_parse_as_prometheus_text() -> Result<(), seawall_perfmon::Error> {
    let monitor = Monitor::builder().namespace("app").build()?;
    for ms in [1_u64, 2, 3, 30, 300, 3000] {
        monitor.record_request("GET", "/api/items/{id}", 200, Duration::from_millis(ms));
    }
    monitor.record_request("POST", "/api/items", 500, Duration::from_micros(400));
    let jobs = monitor.counter("jobs_processed", "Jobs done.", &["queue"])?;
    jobs.with_labels(&["email"])?.inc_by(3);
    jobs.with_labels(&["quote\"and\\slash"])?.inc();

    let text = monitor.prometheus();
    assert!(PROMETHEUS_CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    let exposition = parse(&text);

    let get = sample(
        &exposition,
        "app_http_server_request_duration_seconds",
        "method",
        "GET",
    );
    let labels = get
        .get_labelset()
        .map_err(|e| seawall_perfmon::Error::InvalidConfig {
            field: "test",
            reason: format!("{e:?}"),
        })?;
    assert_eq!(labels.get_label_value("route"), Some("/api/items/{id}"));
    assert_eq!(labels.get_label_value("status_class"), Some("2xx"));
    let PrometheusValue::Histogram(histogram) = &get.value else {
        panic!("not a histogram: {:?}", get.value)
    };
    let le = |bound: f64| {
        histogram
            .buckets
            .iter()
            .find(|b| b.upper_bound == bound || (b.upper_bound - bound).abs() < 1e-12)
            .map(|b| b.count.as_f64())
    };
    assert_eq!(le(0.001), Some(1.0));
    assert_eq!(le(0.005), Some(3.0));
    assert_eq!(le(0.05), Some(4.0));
    assert_eq!(le(0.5), Some(5.0));
    assert_eq!(le(2.5), Some(5.0));
    assert_eq!(le(5.0), Some(6.0));
    assert_eq!(le(f64::INFINITY), Some(6.0));
    assert!(
        histogram
            .buckets
            .windows(2)
            .all(|w| w[0].count.as_f64() <= w[1].count.as_f64()),
        "buckets must be cumulative"
    );
    assert_eq!(histogram.count, Some(6));
    assert!(
        histogram
            .sum
            .as_ref()
            .is_some_and(|sum| (sum.as_f64() - 3.336).abs() < 1e-9)
    );
    assert!(text.contains("app_http_server_request_duration_seconds_count{method=\"GET\",route=\"/api/items/{id}\",status_class=\"2xx\"} 6"));
    assert!(text.contains("app_http_server_request_duration_seconds_sum{method=\"GET\",route=\"/api/items/{id}\",status_class=\"2xx\"} 3.336"));

    let counter = sample(&exposition, "app_jobs_processed_total", "queue", "email");
    assert!(
        matches!(&counter.value, PrometheusValue::Counter(c) if (c.value.as_f64() - 3.0).abs() < 1e-12)
    );
    let escaped = sample(
        &exposition,
        "app_jobs_processed_total",
        "queue",
        "quote\"and\\slash",
    );
    assert!(
        matches!(&escaped.value, PrometheusValue::Counter(c) if (c.value.as_f64() - 1.0).abs() < 1e-12)
    );
    assert!(text.contains("# TYPE app_jobs_processed_total counter"));
    assert!(text.contains("# TYPE app_http_server_request_duration_seconds histogram"));
    Ok(())
}

#[test]
fn every_histogram_line_ends_with_inf_sum_and_count() {
    let monitor = Monitor::new();
    monitor.record_query("SELECT 1", Duration::from_millis(2), true);
    let text = monitor.prometheus();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("db_query_duration_seconds"))
        .collect();
    let inf = lines
        .iter()
        .position(|l| l.contains("le=\"+Inf\""))
        .unwrap_or(usize::MAX);
    assert!(
        lines
            .get(inf + 1)
            .is_some_and(|l| l.starts_with("db_query_duration_seconds_sum{")),
        "{text}"
    );
    assert!(lines.get(inf + 2).is_some_and(|l| l.starts_with("db_query_duration_seconds_count{") && l.ends_with(" 1")), "{text}");
    parse(&text);
}
