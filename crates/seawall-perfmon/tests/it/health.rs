use std::time::Duration;

use async_trait::async_trait;
use seawall_perfmon::{CheckResult, HealthCheck, HealthStatus, Monitor};

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
