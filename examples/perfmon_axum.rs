//! An axum service monitored with seawall-perfmon: every route is timed by the
//! tower layer, SQLite queries are timed into the slow-query log, and the
//! service exposes `/metrics` (Prometheus), `/livez`, `/readyz`
//! (`application/health+json`) and `/api/performance` (a JSON snapshot).
//!
//! Run: `cargo run -p seawall-examples --example perfmon_axum`, then
//! `curl localhost:8080/api/items/7` a few times and `curl localhost:8080/metrics`.
//! `SEAWALL_LISTEN` changes the address (default `127.0.0.1:8080`).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use seawall_perfmon::sqlx::TimedQuery;
use seawall_perfmon::{
    CheckResult, HEALTH_JSON, HealthCheck, Monitor, PROMETHEUS_CONTENT_TYPE, PerfmonLayer,
};
use serde::Deserialize;
use sqlx::SqlitePool;

#[derive(Clone)]
struct App {
    monitor: Monitor,
    db: SqlitePool,
}

/// Reports the database's response time as `database:responseTime`.
struct DatabaseCheck(SqlitePool);

#[async_trait]
impl HealthCheck for DatabaseCheck {
    fn key(&self) -> String {
        "database:responseTime".to_owned()
    }

    async fn check(&self) -> CheckResult {
        let start = Instant::now();
        let ping = tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT 1").execute(&self.0),
        )
        .await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        match ping {
            Ok(Ok(_)) => CheckResult::pass()
                .observed(ms, "ms")
                .component_type("datastore"),
            Ok(Err(error)) => CheckResult::fail(error.to_string()).component_type("datastore"),
            Err(_) => CheckResult::fail("timed out after 1 s").component_type("datastore"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let monitor = Monitor::builder()
        .slow_query_threshold(Duration::from_millis(200))
        .slow_api_threshold(Duration::from_millis(500))
        .build()?;
    let db = SqlitePool::connect("sqlite::memory:").await?;
    sqlx::query("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&db)
        .await?;
    sqlx::query("INSERT INTO items (id, name) SELECT value, 'item ' || value FROM json_each('[1,2,3,4,5,6,7,8,9]')")
        .execute(&db)
        .await?;
    monitor.register_check(DatabaseCheck(db.clone()));

    let app = Router::new()
        .route("/api/items/{id}", get(item))
        .route("/api/slow", get(slow))
        .route("/api/performance", get(performance))
        // Routes above are timed; the probes and the scrape endpoint below are not.
        .layer(PerfmonLayer::new(monitor.clone()))
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(App { monitor, db });

    let listen = std::env::var("SEAWALL_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(
        "listening on http://{}: try /api/items/7, /api/slow, /metrics, /readyz, /api/performance",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn item(State(app): State<App>, Path(id): Path<i64>) -> Result<String, StatusCode> {
    const SQL: &str = "SELECT name FROM items WHERE id = ?";
    let row: Option<(String,)> = sqlx::query_as(SQL)
        .bind(id)
        .fetch_optional(&app.db)
        .timed(&app.monitor, SQL)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    row.map(|(name,)| name).ok_or(StatusCode::NOT_FOUND)
}

#[derive(Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

/// Runs ever larger recursive queries until `ms` have passed, so the last ones
/// land in the slow-query log and the request in the slow-API log.
async fn slow(
    State(app): State<App>,
    Query(query): Query<SlowQuery>,
) -> Result<&'static str, StatusCode> {
    let ms = query.ms.unwrap_or(600).min(5_000);
    const SQL: &str = "WITH RECURSIVE spin(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM spin WHERE n < ?) SELECT count(*) FROM spin";
    let start = Instant::now();
    let mut rounds = 100_000_i64;
    while start.elapsed() < Duration::from_millis(ms) {
        sqlx::query(SQL)
            .bind(rounds)
            .execute(&app.db)
            .timed(&app.monitor, SQL)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        rounds = rounds.saturating_mul(2);
    }
    Ok("done")
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        app.monitor.prometheus(),
    )
        .into_response()
}

async fn readyz(State(app): State<App>) -> Response {
    let report = app.monitor.health().await;
    let status =
        StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (
        status,
        [(header::CONTENT_TYPE, HEALTH_JSON)],
        report.to_json(),
    )
        .into_response()
}

async fn performance(State(app): State<App>) -> Json<seawall_perfmon::Snapshot> {
    Json(app.monitor.snapshot())
}
