//! Probes and scraping: `/livez`, `/readyz` and `/metrics`. Anyone may call
//! them; `/livez` and `/metrics` are also exempt from load shedding.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use seawall_perfmon::{CheckResult, HEALTH_JSON, HealthCheck, HealthStatus, Monitor};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The probes and `/metrics`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// An `application/health+json` document (draft-inadarei-api-health-check).
#[derive(ToSchema)]
#[allow(dead_code)] // describes what `health_json` writes
pub(crate) struct HealthDocument {
    /// `pass`, `warn` or `fail`.
    #[schema(pattern = "^(pass|warn|fail)$", example = "pass")]
    status: String,
    /// `healthy`, `degraded` or `unhealthy` (health reports only).
    health: Option<String>,
    /// Why the status is not `pass`.
    output: Option<String>,
    /// Checks keyed `component:measurement`, such as `database:responseTime`.
    checks: Option<BTreeMap<String, Vec<HealthCheckEntry>>>,
}

/// One check of a health document.
#[derive(ToSchema)]
#[allow(dead_code)] // describes what `health_json` writes
#[schema(rename_all = "camelCase")]
pub(crate) struct HealthCheckEntry {
    /// `pass`, `warn` or `fail`.
    #[schema(pattern = "^(pass|warn|fail)$")]
    status: String,
    /// The measured value, such as a round trip in milliseconds.
    #[schema(value_type = Option<f64>)]
    observed_value: Option<f64>,
    /// The unit of the value (`ms`, `percent`).
    observed_unit: Option<String>,
    /// Why the check does not pass.
    output: Option<String>,
    /// `datastore`, `component` or `system`.
    component_type: Option<String>,
}

pub(crate) fn health_json(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON));
    response
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    checks: BTreeMap<String, Vec<CheckResult>>,
}

/// Liveness: the process is up and serving HTTP.
///
/// Always `pass`; it checks no dependency, so an orchestrator restarts the
/// process only when it stops answering. Never shed under load.
#[utoipa::path(get, path = "/livez", tag = "probes", responses(
    (status = 200, description = "The process serves HTTP", body = HealthDocument,
        content_type = "application/health+json", example = json!({"status": "pass"})),
))]
async fn livez() -> Response {
    alive()
}

/// Readiness: every dependency answers.
///
/// Pings the database, and Redis when configured, each within a second; 503
/// when one fails, so a load balancer stops sending traffic.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "Every dependency answers", body = HealthDocument,
        content_type = "application/health+json",
        example = json!({"status": "pass", "checks": {"database:responseTime": [
            {"status": "pass", "observedValue": 0.4, "observedUnit": "ms", "componentType": "datastore"}]}})),
    (status = 503, description = "A dependency fails", body = HealthDocument,
        content_type = "application/health+json"),
))]
async fn readyz(State(state): State<AppState>) -> Response {
    readiness(state.readiness_checks()).await
}

/// Runs `checks`: 200 when every one passes, 503 naming those that fail.
pub(crate) async fn readiness(checks: &[Box<dyn HealthCheck>]) -> Response {
    let mut results = BTreeMap::new();
    let mut failed = Vec::new();
    for check in checks {
        let key = check.key();
        let result = check.check().await;
        if result.status == HealthStatus::Unhealthy {
            failed.push(key.clone());
        }
        results.entry(key).or_insert_with(Vec::new).push(result);
    }
    let (status, code, output) = if failed.is_empty() {
        (HealthStatus::Healthy, StatusCode::OK, None)
    } else {
        (
            HealthStatus::Unhealthy,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(format!("failing: {}", failed.join(", "))),
        )
    };
    let status = status.as_draft();
    health_json(
        code,
        &Readiness {
            status,
            output,
            checks: results,
        },
    )
}

/// The liveness answer: always `pass`.
pub(crate) fn alive() -> Response {
    health_json(
        StatusCode::OK,
        &serde_json::json!({ "status": HealthStatus::Healthy.as_draft() }),
    )
}

/// Metrics for Prometheus: HTTP and query latency histograms, counters,
/// process, pool, Redis and load-shedding gauges.
///
/// OpenMetrics text when `Accept` asks for `application/openmetrics-text`,
/// Prometheus text 0.0.4 otherwise. Never shed under load.
#[utoipa::path(get, path = "/metrics", tag = "probes", responses(
    (status = 200, description = "The exposition", content(
        (String = "text/plain; version=0.0.4; charset=utf-8"),
        (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    )),
))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    exposition(state.monitor(), &headers)
}

/// The monitor's metrics in the format `Accept` asks for.
pub(crate) fn exposition(monitor: &Monitor, headers: &HeaderMap) -> Response {
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
