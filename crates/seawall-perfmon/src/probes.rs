//! The probes a service answers on `/livez`, `/readyz` and `/metrics`, as
//! axum responses: liveness, readiness over a set of [`HealthCheck`]s
//! (`application/health+json`, 503 when one fails), and the monitor's
//! metrics in the format `Accept` asks for.
//!
//! ```
//! use axum::{Router, http::HeaderMap, routing::get};
//! use seawall_perfmon::{Monitor, probes};
//!
//! let monitor = Monitor::new();
//! let router: Router = Router::new()
//!     .route("/livez", get(|| async { probes::liveness() }))
//!     .route("/readyz", get(|| async { probes::readiness(&[]).await }))
//!     .route(
//!         "/metrics",
//!         get(move |headers: HeaderMap| async move { probes::metrics(&monitor, &headers) }),
//!     );
//! ```

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::{CheckResult, HEALTH_JSON, HealthCheck, HealthStatus, Monitor};

/// `body` as `application/health+json` with `status`.
pub fn health_json(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON));
    response
}

/// The process answers: `{"status": "pass"}`.
pub fn liveness() -> Response {
    health_json(
        StatusCode::OK,
        &serde_json::json!({ "status": HealthStatus::Healthy.as_draft() }),
    )
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    checks: BTreeMap<String, Vec<CheckResult>>,
}

/// Runs every check in turn: 200 when none fails (`warn`, naming the
/// warning ones, when one warns), 503 naming the failing ones otherwise,
/// each check's result under its key.
pub async fn readiness(checks: &[Box<dyn HealthCheck>]) -> Response {
    let mut results = BTreeMap::new();
    let (mut failed, mut warned) = (Vec::new(), Vec::new());
    for check in checks {
        let key = check.key();
        let result = check.check().await;
        match result.status {
            HealthStatus::Unhealthy => failed.push(key.clone()),
            HealthStatus::Degraded => warned.push(key.clone()),
            HealthStatus::Healthy => {}
        }
        results.entry(key).or_insert_with(Vec::new).push(result);
    }
    let (status, code, output) = if !failed.is_empty() {
        (
            HealthStatus::Unhealthy,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(format!("failing: {}", failed.join(", "))),
        )
    } else if !warned.is_empty() {
        (
            HealthStatus::Degraded,
            StatusCode::OK,
            Some(format!("warning: {}", warned.join(", "))),
        )
    } else {
        (HealthStatus::Healthy, StatusCode::OK, None)
    };
    health_json(
        code,
        &Readiness {
            status: status.as_draft(),
            output,
            checks: results,
        },
    )
}

/// The monitor's metrics: OpenMetrics text when `Accept` asks for
/// `application/openmetrics-text`, Prometheus text 0.0.4 otherwise.
pub fn metrics(monitor: &Monitor, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let (content_type, body) = monitor.negotiate(accept);
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use http_body_util::BodyExt as _;

    use super::*;

    struct Fixed(&'static str, HealthStatus);

    #[async_trait]
    impl HealthCheck for Fixed {
        fn key(&self) -> String {
            self.0.to_owned()
        }

        async fn check(&self) -> CheckResult {
            match self.1 {
                HealthStatus::Healthy => CheckResult::pass(),
                HealthStatus::Degraded => {
                    CheckResult::with_status(HealthStatus::Degraded).output("short")
                }
                HealthStatus::Unhealthy => CheckResult::fail("down"),
            }
        }
    }

    async fn body(response: Response) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn readiness_fails_with_any_failing_check_and_names_it() {
        let up: Vec<Box<dyn HealthCheck>> = vec![Box::new(Fixed("db:ping", HealthStatus::Healthy))];
        let ready = readiness(&up).await;
        assert_eq!(ready.status(), StatusCode::OK);
        assert_eq!(ready.headers()[header::CONTENT_TYPE], HEALTH_JSON);
        assert_eq!(body(ready).await["status"], "pass");
        let down: Vec<Box<dyn HealthCheck>> = vec![
            Box::new(Fixed("db:ping", HealthStatus::Healthy)),
            Box::new(Fixed("queue:enqueue", HealthStatus::Degraded)),
            Box::new(Fixed("redis:ping", HealthStatus::Unhealthy)),
        ];
        let not_ready = readiness(&down).await;
        assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let json = body(not_ready).await;
        assert_eq!(json["status"], "fail");
        assert_eq!(json["output"], "failing: redis:ping");
        assert_eq!(json["checks"]["db:ping"][0]["status"], "pass");
    }

    /// A check that warns leaves the instance ready, and the whole report
    /// says so (the draft's `warn`: healthy, with concerns).
    #[tokio::test]
    async fn readiness_warns_with_a_warning_check_and_stays_ready() {
        let short: Vec<Box<dyn HealthCheck>> = vec![
            Box::new(Fixed("db:ping", HealthStatus::Healthy)),
            Box::new(Fixed("queue:enqueue", HealthStatus::Degraded)),
        ];
        let ready = readiness(&short).await;
        assert_eq!(ready.status(), StatusCode::OK);
        let json = body(ready).await;
        assert_eq!(json["status"], "warn");
        assert_eq!(json["output"], "warning: queue:enqueue");
        assert_eq!(json["checks"]["queue:enqueue"][0]["output"], "short");
    }

    #[tokio::test]
    async fn metrics_follow_accept() {
        let monitor = Monitor::new();
        let mut headers = HeaderMap::new();
        let text = metrics(&monitor, &headers);
        assert!(
            text.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ASCII")
                .starts_with("text/plain")
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/openmetrics-text"),
        );
        let open = metrics(&monitor, &headers);
        assert!(
            open.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ASCII")
                .starts_with("application/openmetrics-text")
        );
        assert_eq!(liveness().status(), StatusCode::OK);
    }
}
