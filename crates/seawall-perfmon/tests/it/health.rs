use std::time::Duration;

use async_trait::async_trait;
use seawall_perfmon::{CheckResult, HealthCheck, HealthRules, HealthStatus, Monitor};

struct Redis {
    up: bool,
}

#[async_trait]
impl HealthCheck for Redis {
    fn key(&self) -> String {
        "redis:responseTime".to_owned()
    }

    async fn check(&self) -> CheckResult {
        if self.up {
            CheckResult::pass()
                .observed(1.5, "ms")
                .component_type("datastore")
        } else {
            CheckResult::fail("connection refused").component_type("datastore")
        }
    }
}

#[tokio::test]
async fn an_idle_service_passes() {
    let report = Monitor::new().health().await;
    assert_eq!(report.status, HealthStatus::Healthy);
    assert_eq!(report.http_status(), 200);
}

/// 100 requests: 30 probes answered 503, 70 of `/x` answered 200.
fn not_ready_30_of_100(monitor: &Monitor) {
    for i in 0..100 {
        let (route, status) = if i < 30 {
            ("/readyz", 503)
        } else {
            ("/x", 200)
        };
        monitor.record_request("GET", route, status, Duration::from_millis(3));
    }
}

/// The routes the rules ignore count toward no rule, and are still in the
/// window that the dashboard reads.
#[tokio::test]
async fn ignored_routes_count_toward_no_rule() -> seawall_perfmon::Result<()> {
    let monitor = Monitor::builder()
        .health_rules(HealthRules {
            ignored_routes: vec!["/readyz".to_owned()],
            ..HealthRules::default()
        })
        .build()?;
    not_ready_30_of_100(&monitor);
    assert_eq!(monitor.health().await.status, HealthStatus::Healthy);
    assert_eq!(monitor.http_window(Duration::from_secs(60)).errors, 30);
    // Not ignored, the same answers make the service unhealthy.
    let counted = Monitor::new();
    not_ready_30_of_100(&counted);
    assert_eq!(counted.health().await.status, HealthStatus::Unhealthy);
    Ok(())
}

/// The load health is the rules' verdict alone: a failing component check
/// leaves it healthy, failing requests do not.
#[tokio::test]
async fn load_health_is_the_rules_alone() {
    let monitor = Monitor::new();
    monitor.register_check(Redis { up: false });
    assert_eq!(monitor.health().await.status, HealthStatus::Unhealthy);
    assert_eq!(monitor.load_health(), HealthStatus::Healthy);
    for i in 0..100 {
        let status = if i < 8 { 500 } else { 200 };
        monitor.record_request("GET", "/x", status, Duration::from_millis(3));
    }
    assert_eq!(monitor.load_health(), HealthStatus::Degraded);
}

#[tokio::test]
async fn error_rate_above_five_percent_degrades_and_a_failed_component_fails()
-> Result<(), serde_json::Error> {
    let monitor = Monitor::new();
    for i in 0..100 {
        let status = if i < 8 { 500 } else { 200 };
        monitor.record_request("GET", "/x", status, Duration::from_millis(3));
    }
    let report = monitor.health().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.http_status(), 200);
    let json: serde_json::Value = serde_json::from_str(&report.to_json())?;
    assert_eq!(json["status"], "warn");
    assert_eq!(json["checks"]["http:errorRate"][0]["observedValue"], 8.0);

    monitor.register_check(Redis { up: true });
    assert_eq!(
        monitor.health().await.checks["redis:responseTime"][0].status,
        HealthStatus::Healthy
    );
    monitor.register_check(Redis { up: false });
    let report = monitor.health().await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.http_status(), 503);
    assert_eq!(report.checks["redis:responseTime"].len(), 2);
    Ok(())
}

#[tokio::test]
async fn slow_queries_and_slow_p99_degrade() -> Result<(), seawall_perfmon::Error> {
    let monitor = Monitor::builder()
        .slow_query_threshold(Duration::from_millis(10))
        .build()?;
    for i in 0..50 {
        let latency = if i % 4 == 0 {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(1)
        };
        monitor.record_query("SELECT * FROM t WHERE id = 7", latency, true);
    }
    let report = monitor.health().await;
    assert_eq!(
        report.checks["database:slowRate"][0].status,
        HealthStatus::Degraded
    );
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(
        monitor.slow_queries(5)[0].text,
        "SELECT * FROM t WHERE id = ?"
    );

    let slow = Monitor::new();
    for _ in 0..30 {
        slow.record_request("GET", "/report", 200, Duration::from_secs(6));
    }
    let report = slow.health().await;
    assert_eq!(
        report.checks["http:latencyP99"][0].status,
        HealthStatus::Degraded
    );
    // Every request is over the 2 s slow-API threshold, which is unhealthy on its own.
    assert_eq!(
        report.checks["http:slowRate"][0].status,
        HealthStatus::Unhealthy
    );
    Ok(())
}
