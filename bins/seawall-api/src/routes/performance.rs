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
    /// With `database.replicas`: the primary writes go to, where the reads
    /// that may go to a replica went, and each replica's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<DatabaseReport>,
    /// The forecasts an hour ahead: each Redis primary's memory (and, when
    /// within a week, how long until it reaches `maxmemory`) and this
    /// instance's request rate.
    capacity: seawall_app::capacity::CapacityReport,
    /// Per route class, its availability and latency objectives over the
    /// SRE workbook's windows as this instance sees them: the burn rates,
    /// the budget the last three days spent, and whether a burn-rate
    /// alert's condition holds.
    slo: Vec<seawall_app::slo::ClassReport>,
}

#[derive(Serialize)]
struct DatabaseReport {
    /// The primary writes go to.
    primary: PrimaryReport,
    /// Reads that could have gone to a replica and went to the primary.
    primary_reads: u64,
    /// Of those, reads that had to be current and went to the primary at
    /// once: no replica had lately caught up within `database.replica_wait`.
    primary_reads_not_waited: u64,
    replicas: Vec<ReplicaReport>,
}

#[derive(Serialize)]
struct PrimaryReport {
    /// `host:port`.
    name: String,
    /// The index in `database.replicas` of the replica promoted to
    /// primary, absent while the primary is `database.url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    promoted_replica: Option<usize>,
    /// Its PostgreSQL timeline, once a look has read it.
    timeline: Option<u32>,
    /// How long ago it last answered a look, in seconds.
    answered_seconds_ago: f64,
    /// Failovers this instance made.
    failovers: u64,
}

#[derive(Serialize)]
struct ReplicaReport {
    /// `host:port`.
    name: String,
    /// It takes reads: it answers, and is within both lag limits.
    in_rotation: bool,
    /// The WAL position it has replayed up to, as PostgreSQL prints it.
    replayed: String,
    /// How far behind the primary it was at the last look at both.
    behind_bytes: Option<u64>,
    /// How long ago it was last found current, in seconds.
    current_seconds_ago: Option<f64>,
    /// How long a read that must be current can expect to wait for it, in
    /// seconds: how far behind each look's start it has lately been
    /// current as of, averaged over about the last eight looks.
    catch_up_seconds: f64,
    /// How long ago it last answered a look, in seconds.
    answered_seconds_ago: Option<f64>,
    /// Reads it took.
    reads: u64,
}

fn database_report(state: &AppState) -> Option<DatabaseReport> {
    let replicas = state.db().replicas()?;
    let primary = replicas.primary();
    Some(DatabaseReport {
        primary: PrimaryReport {
            name: primary.name,
            promoted_replica: primary.promoted_replica,
            timeline: primary.timeline,
            answered_seconds_ago: primary.answered_ago.as_secs_f64(),
            failovers: primary.failovers,
        },
        primary_reads: replicas.primary_reads(),
        primary_reads_not_waited: replicas.waits_skipped(),
        replicas: replicas
            .states()
            .into_iter()
            .map(|replica| ReplicaReport {
                name: replica.name,
                in_rotation: replica.in_rotation,
                replayed: replica.replayed.to_string(),
                behind_bytes: replica.behind_bytes,
                current_seconds_ago: replica.current_as_of_ago.map(|ago| ago.as_secs_f64()),
                catch_up_seconds: replica.catch_up.as_secs_f64(),
                answered_seconds_ago: replica.answered_ago.map(|ago| ago.as_secs_f64()),
                reads: replica.reads,
            })
            .collect(),
    })
}

/// The performance report: windows, histograms, counters, slow logs and a
/// timeline, or one part of it.
///
/// Without `type`: every metric and window, both slow logs, a 15-minute
/// timeline of HTTP figures, the forecasts an hour ahead (each Redis
/// primary's memory and when it reaches its limit, the request rate) and,
/// with database replicas, each replica's
/// state and where the reads went. `type=health` answers the health evaluation as
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
            database: database_report(&state),
            capacity: state.capacity().report(),
            slo: state.slo().report(monitor),
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
