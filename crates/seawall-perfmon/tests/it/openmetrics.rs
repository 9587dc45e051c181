//! The OpenMetrics 1.0 exposition, read back with openmetrics-parser.

use std::collections::HashSet;
use std::time::Duration;

use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use seawall_perfmon::{Monitor, OPENMETRICS_CONTENT_TYPE};

pub(crate) type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// Parses an OpenMetrics exposition, panicking with the text if it does not parse.
///
/// openmetrics-parser 0.5 refuses a `# UNIT` line on a histogram family, which
/// OpenMetrics 1.0 allows (only info and stateset families must have no unit):
/// those lines are checked by the tests themselves and dropped before parsing.
pub(crate) fn parse(text: &str) -> Exposition {
    let histograms: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .collect();
    let kept: String = text
        .lines()
        .filter(|line| {
            !line
                .strip_prefix("# UNIT ")
                .and_then(|rest| rest.split_once(' '))
                .is_some_and(|(name, _)| histograms.contains(name))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    match parse_openmetrics(&kept) {
        Ok(exposition) => exposition,
        Err(error) => panic!("the exposition does not parse: {error:?}\n{text}"),
    }
}

/// The value of the counter or gauge sample of family `family` whose labels
/// include all of `labels`.
pub(crate) fn value(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(found) = exposition.families.get(family) else {
        panic!("no family {family}")
    };
    let sample = found.iter_samples().find(|s| {
        s.get_labelset().is_ok_and(|set| {
            labels
                .iter()
                .all(|(name, value)| set.get_label_value(name) == Some(*value))
        })
    });
    match sample.map(|s| &s.value) {
        Some(OpenMetricsValue::Counter(counter)) => counter.value.as_f64(),
        Some(OpenMetricsValue::Gauge(gauge)) => gauge.as_f64(),
        other => panic!("no counter or gauge {family}{labels:?}: {other:?}"),
    }
}

#[test]
fn histograms_counters_and_gauges_parse_as_openmetrics() -> Result<(), seawall_perfmon::Error> {
    let monitor = Monitor::builder().namespace("app").build()?;
    for ms in [1_u64, 2, 3, 30, 300, 3000] {
        monitor.record_request("GET", "/api/items/{id}", 200, Duration::from_millis(ms));
    }
    let jobs = monitor.counter("jobs_processed", "Jobs done.", &["queue"])?;
    jobs.with_labels(&["email"])?.inc_by(3);
    jobs.with_labels(&["quote\"and\\slash\nnewline"])?.inc();
    monitor
        .gauge("queue_depth", "Jobs waiting.", &["queue"])?
        .with_labels(&["email"])?
        .set(7.5);

    let text = monitor.openmetrics();
    assert!(OPENMETRICS_CONTENT_TYPE.starts_with("application/openmetrics-text; version=1.0.0"));
    let exposition = parse(&text);

    // A histogram: cumulative `le` buckets in canonical numbers, `+Inf`, count, sum, unit.
    let http = "app_http_server_request_duration_seconds";
    assert!(text.contains(&format!(
        "# TYPE {http} histogram\n# UNIT {http} seconds\n# HELP {http} Latency of HTTP requests served.\n"
    )));
    let labels = "method=\"GET\",route=\"/api/items/{id}\",status_class=\"2xx\"";
    for (le, count) in [
        ("0.0005", 0),
        ("0.001", 1),
        ("0.005", 3),
        ("1.0", 5),
        ("2.5", 5),
        ("5.0", 6),
        ("10.0", 6),
        ("+Inf", 6),
    ] {
        let line = format!("{http}_bucket{{{labels},le=\"{le}\"}} {count}\n");
        assert!(text.contains(&line), "no {line}in\n{text}");
    }
    assert!(text.contains(&format!(
        "{http}_count{{{labels}}} 6\n{http}_sum{{{labels}}} 3.336\n"
    )));
    let Some(family) = exposition.families.get(http) else {
        panic!("no {http}")
    };
    let Some(OpenMetricsValue::Histogram(histogram)) =
        family.iter_samples().next().map(|s| &s.value)
    else {
        panic!("not a histogram")
    };
    assert_eq!(histogram.count, Some(6));
    assert_eq!(
        histogram.buckets.last().map(|b| b.upper_bound),
        Some(f64::INFINITY)
    );

    // A counter: the family has no `_total`, its samples do.
    assert!(text.contains("# TYPE app_jobs_processed counter\n"));
    assert!(text.contains("\napp_jobs_processed_total{queue=\"email\"} 3\n"));
    assert!(!text.contains("# TYPE app_jobs_processed_total"));
    assert!((value(&exposition, "app_jobs_processed", &[("queue", "email")]) - 3.0).abs() < 1e-12);
    assert!(
        (value(
            &exposition,
            "app_jobs_processed",
            &[("queue", "quote\"and\\slash\nnewline")]
        ) - 1.0)
            .abs()
            < 1e-12
    );
    assert!(text.contains(r#"app_jobs_processed_total{queue="quote\"and\\slash\nnewline"} 1"#));

    // A gauge.
    assert!(text.contains("# TYPE app_queue_depth gauge\n"));
    assert!((value(&exposition, "app_queue_depth", &[("queue", "email")]) - 7.5).abs() < 1e-12);

    // The crate's own counters.
    assert!(text.contains("# TYPE app_perfmon_slow_operations counter\n"));
    assert!(
        (value(
            &exposition,
            "app_perfmon_slow_operations",
            &[("kind", "api")]
        ) - 1.0)
            .abs()
            < 1e-12
    );

    // No query was recorded: a family without series is left out.
    assert!(!text.contains("# TYPE app_db_query_duration_seconds"));
    assert!(!text.contains("app_db_query_duration_seconds_count"));
    assert!(text.ends_with("\n# EOF\n"));
    assert_eq!(text.matches("# EOF").count(), 1);
    Ok(())
}

#[test]
fn counters_are_one_family_with_or_without_total() -> Result<(), seawall_perfmon::Error> {
    let monitor = Monitor::new();
    monitor
        .counter("retries_total", "Retries.", &[])?
        .with_labels(&[])?
        .inc();
    monitor
        .counter("retries", "Retries.", &[])?
        .with_labels(&[])?
        .inc();
    let openmetrics = monitor.openmetrics();
    assert!(
        openmetrics.contains("# TYPE retries counter\n# HELP retries Retries.\nretries_total 2\n"),
        "{openmetrics}"
    );
    let prometheus = monitor.prometheus();
    assert!(
        prometheus.contains(
            "# HELP retries_total Retries.\n# TYPE retries_total counter\nretries_total 2\n"
        ),
        "{prometheus}"
    );
    parse(&openmetrics);
    Ok(())
}

#[test]
fn units_are_declared_where_the_name_ends_in_one() -> Result<(), seawall_perfmon::Error> {
    let monitor = Monitor::new();
    monitor
        .gauge("cache_size_bytes", "Bytes cached.", &[])?
        .with_labels(&[])?
        .set(1024.0);
    monitor
        .gauge("cache_entries", "Entries cached.", &[])?
        .with_labels(&[])?
        .set(3.0);
    monitor
        .counter("busy_seconds_total", "Time spent busy.", &[])?
        .with_labels(&[])?
        .inc();
    let text = monitor.openmetrics();
    let exposition = parse(&text);
    let unit = |family: &str| exposition.families.get(family).map(|f| f.unit.clone());
    assert_eq!(unit("cache_size_bytes").as_deref(), Some("bytes"));
    assert_eq!(unit("busy_seconds").as_deref(), Some("seconds"));
    assert_eq!(unit("cache_entries").as_deref(), Some(""));
    assert!(text.contains("# TYPE busy_seconds counter\n# UNIT busy_seconds seconds\n"));
    assert!(!text.contains("# UNIT cache_entries"));
    // The Prometheus text format has no units.
    assert!(!monitor.prometheus().contains("# UNIT"));
    Ok(())
}

#[test]
fn help_text_is_escaped_and_read_back() -> Result<(), seawall_perfmon::Error> {
    let monitor = Monitor::new();
    let help = "Say \"hi\" \\ twice\nor more.";
    monitor
        .gauge("greetings", help, &[])?
        .with_labels(&[])?
        .set(2.0);
    let text = monitor.openmetrics();
    assert!(
        text.contains(r#"# HELP greetings Say \"hi\" \\ twice\nor more."#),
        "{text}"
    );
    let exposition = parse(&text);
    assert_eq!(
        exposition
            .families
            .get("greetings")
            .map(|f| f.help.as_str()),
        Some(help)
    );
    Ok(())
}

#[test]
fn a_fresh_monitor_is_a_valid_exposition() {
    let monitor = Monitor::new();
    let text = monitor.openmetrics();
    let exposition = parse(&text);
    assert!(exposition.families.contains_key("perfmon_collector_errors"));
    assert!(text.ends_with("# EOF\n"));
}
