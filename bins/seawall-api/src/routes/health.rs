//! Operations endpoints: `/livez`, `/readyz`, `/metrics`, and the admin
//! `/api/performance`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use seawall_perfmon::{CheckResult, HEALTH_JSON, HealthStatus, PROMETHEUS_CONTENT_TYPE, Snapshot};
use serde::Serialize;

use crate::app::AppState;
use crate::params::{Params, QueryPairs};
use crate::problem::Problem;
use crate::timeline::Point;

/// How long a readiness ping may take before the dependency counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Times `ping` against `component` (`database`, `redis`): passes with the
/// round trip in milliseconds, fails with the error or after a second.
pub(crate) async fn timed_ping<T, E: std::fmt::Display>(
    component: &str,
    ping: impl Future<Output = Result<T, E>>,
) -> CheckResult {
    let start = Instant::now();
    let outcome = tokio::time::timeout(PING_TIMEOUT, ping).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let result = match outcome {
        Ok(Ok(_)) => CheckResult::pass().observed(ms, "ms"),
        Ok(Err(error)) => CheckResult::fail(format!("{component}: {error}")),
        Err(_) => CheckResult::fail(format!("{component} did not answer within 1 s")),
    };
    result.component_type("datastore")
}

/// Most slow-log entries one request may ask for.
const MAX_SLOW_LIMIT: i64 = 1000;

/// Routes anyone may call: probes and Prometheus scraping.
pub(crate) fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Routes behind the admin token.
pub(crate) fn admin_routes() -> Router<AppState> {
    Router::new().route("/api/performance", get(performance))
}

fn health_json(status: StatusCode, body: &impl Serialize) -> Response {
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

/// The process is up and serving HTTP.
async fn livez() -> Response {
    health_json(
        StatusCode::OK,
        &serde_json::json!({ "status": HealthStatus::Healthy.as_draft() }),
    )
}

/// Every dependency answers: the database, and Redis when configured. 503
/// when one fails, so a load balancer stops sending traffic.
async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    let mut failed = Vec::new();
    for check in state.readiness_checks() {
        let key = check.key();
        let result = check.check().await;
        if result.status == HealthStatus::Unhealthy {
            failed.push(key.clone());
        }
        checks.entry(key).or_insert_with(Vec::new).push(result);
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
            checks,
        },
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.monitor().prometheus().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
    );
    response
}

#[derive(Serialize)]
struct Performance {
    #[serde(flatten)]
    snapshot: Snapshot,
    /// HTTP figures every few seconds over the last fifteen minutes, oldest first.
    timeline: Vec<Point>,
}

/// `GET /api/performance[?type=health|slow-queries|slow-apis][&limit=N]`:
/// without a type, every metric, window and slow log plus the timeline.
async fn performance(
    State(state): State<AppState>,
    query: QueryPairs,
) -> Result<Response, Problem> {
    let params = Params::from_query(query, &["type", "limit"])?;
    let kind = params.choice("type", &["health", "slow-queries", "slow-apis"])?;
    let limit = params.int("limit", 1..=MAX_SLOW_LIMIT, Some(20))?;
    let limit = usize::try_from(limit).unwrap_or(20);
    let monitor = state.monitor();
    Ok(match kind {
        None => Json(Performance {
            snapshot: monitor.snapshot(),
            timeline: state.timeline().points(),
        })
        .into_response(),
        // 200 whatever the health: this is a report for people, and a 503 here
        // would count as an error in the very error rate it reports. Probes
        // use /readyz.
        Some("health") => health_json(StatusCode::OK, &monitor.health().await),
        Some("slow-queries") => Json(monitor.slow_query_log(limit)).into_response(),
        Some(_) => Json(monitor.slow_api_log(limit)).into_response(),
    })
}
