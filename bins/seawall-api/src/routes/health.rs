//! Probes and scraping: `/livez`, `/readyz` and `/metrics`. Anyone may call
//! them; `/livez` and `/metrics` are also exempt from load shedding.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use seawall_perfmon::probes;
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
    /// When the reading was taken (RFC 3339), for a check whose answer is
    /// reused for a while (`queues:enqueue`, 250 ms).
    #[schema(format = DateTime)]
    time: Option<String>,
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
    probes::liveness()
}

/// Readiness: every dependency answers.
///
/// Pings the database, and Redis when configured, each within a second, and
/// checks that an enqueue on every job queue would be acknowledged (its
/// Redis primary takes a write, confirmed by as many replicas as
/// `queue.wait_replicas` asks); 503 when one fails, so a load balancer
/// stops sending traffic while the instance cannot enqueue. A primary that
/// takes the write but lacks those replicas is a `warn` (200): every
/// instance finds it alike, and taking them all out of rotation would
/// stop the reads too.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "Every dependency answers", body = HealthDocument,
        content_type = "application/health+json",
        example = json!({"status": "pass", "checks": {"database:responseTime": [
            {"status": "pass", "observedValue": 0.4, "observedUnit": "ms", "componentType": "datastore"}]}})),
    (status = 503, description = "A dependency fails", body = HealthDocument,
        content_type = "application/health+json"),
))]
async fn readyz(State(state): State<AppState>) -> Response {
    probes::readiness(state.readiness_checks()).await
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
    probes::metrics(state.monitor(), &headers)
}
