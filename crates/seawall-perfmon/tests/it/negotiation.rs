//! Choosing the exposition format from the `Accept` header.

use openmetrics_parser::prometheus::parse_prometheus;
use seawall_perfmon::ExpositionFormat::{self, OpenMetrics, Prometheus};
use seawall_perfmon::{Monitor, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};

#[test]
fn the_accept_header_picks_the_format() {
    let cases: [(Option<&str>, ExpositionFormat); 18] = [
        (None, Prometheus),
        (Some(""), Prometheus),
        (Some("*/*"), Prometheus),
        (Some("text/plain"), Prometheus),
        (Some("text/plain; version=0.0.4"), Prometheus),
        (Some("application/json"), Prometheus),
        (Some("application/openmetrics-text"), OpenMetrics),
        (
            Some("APPLICATION/OpenMetrics-Text; Version=1.0.0"),
            OpenMetrics,
        ),
        (
            Some("application/openmetrics-text; version=\"1.0.0\""),
            OpenMetrics,
        ),
        // What Prometheus 2 sends.
        (
            Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
            OpenMetrics,
        ),
        // What Prometheus 3 sends, with protobuf (which this crate does not speak) first.
        (
            Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            ),
            OpenMetrics,
        ),
        // q=0 means "not this".
        (Some("application/openmetrics-text;q=0"), Prometheus),
        (
            Some("application/openmetrics-text; q=0.000, text/plain"),
            Prometheus,
        ),
        // The client prefers plain text.
        (
            Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
            Prometheus,
        ),
        (
            Some("*/*;q=1, application/openmetrics-text;q=0.5"),
            Prometheus,
        ),
        (
            Some("text/plain;q=0.5, application/openmetrics-text;q=0.9"),
            OpenMetrics,
        ),
        // A version this crate does not write, and a weight that is not one.
        (
            Some("application/openmetrics-text; version=2.0.0"),
            Prometheus,
        ),
        (Some("application/openmetrics-text; q=high"), Prometheus),
    ];
    for (accept, expected) in cases {
        assert_eq!(
            ExpositionFormat::from_accept(accept),
            expected,
            "Accept: {accept:?}"
        );
    }
    assert_eq!(Prometheus.content_type(), PROMETHEUS_CONTENT_TYPE);
    assert_eq!(OpenMetrics.content_type(), OPENMETRICS_CONTENT_TYPE);
}

#[test]
fn negotiate_answers_in_the_format_it_names() {
    let monitor = Monitor::new();
    let (content_type, body) = monitor.negotiate(Some(
        "application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1",
    ));
    assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
    crate::openmetrics::parse(&body);

    let (content_type, body) = monitor.negotiate(Some("*/*"));
    assert_eq!(content_type, PROMETHEUS_CONTENT_TYPE);
    assert!(!body.contains("# EOF"));
    parse_prometheus(&body).unwrap_or_else(|e| panic!("{e:?}\n{body}"));
}
