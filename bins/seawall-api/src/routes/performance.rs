//! The admin performance report: `GET /api/performance`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use seawall_perfmon::Snapshot;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Json;
use crate::params::Params;
use crate::problem::Problem;
use crate::routes::health::HealthDocument;
use crate::state::AppState;
use crate::timeline::Point;
use seawall_perfmon::probes::health_json;

/// Most slow-log entries one request may ask for.
const MAX_SLOW_LIMIT: i64 = 1000;

/// The admin performance routes; the caller puts them behind the token.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(performance))
}

#[derive(Serialize)]
struct Performance {
    #[serde(flatten)]
    snapshot: Snapshot,
    /// HTTP figures every few seconds over the last fifteen minutes, oldest first.
    timeline: Vec<Point>,
}

/// The performance report: windows, histograms, counters, slow logs and a
/// timeline, or one part of it.
///
/// Without `type`: every metric and window, both slow logs and a 15-minute
/// timeline of HTTP figures. `type=health` answers the health evaluation as
/// `application/health+json` (always 200: probes use `/readyz`);
/// `type=slow-queries` and `type=slow-apis` answer one slow log, the
/// slowest `limit` entries first.
#[utoipa::path(get, path = "/api/performance", tag = "admin",
    security(("admin_token" = [])),
    params(
        ("type" = Option<String>, Query, description = "Which part to answer",
            pattern = "^(health|slow-queries|slow-apis)$", example = "slow-queries"),
        ("limit" = Option<i64>, Query, description = "Most slow-log entries (default 20)",
            minimum = 1, maximum = 1000, example = 10),
    ),
    responses(
        (status = 200, description = "The report, or the part asked for", content(
            (Object = "application/json"),
            (HealthDocument = "application/health+json"),
        )),
    ),
)]
async fn performance(State(state): State<AppState>, params: Params) -> Result<Response, Problem> {
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
