//! `/metrics` in both exposition formats, parsed by a real parser: Python's
//! prometheus-client (installed by `scripts/setup` into the project's venv),
//! with Prometheus naming conventions checked by `metrics_check.py`.

use std::path::PathBuf;
use std::process::Command;

use crate::support::TestServer;

/// Families the service must expose, beyond whatever else it has.
const REQUIRED: &[&str] = &[
    "build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds",
    "process_open_fds",
    "process_threads",
    "http_server_request_duration_seconds",
    "db_query_duration_seconds",
    "http_requests_in_flight",
    "http_shed_requests",
    "db_pool_connections",
    "db_pool_max_connections",
    "db_pool_acquire_wait_seconds",
];

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("SEAWALL_VENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/seawall/venv")
        },
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup, which installs prometheus-client there",
        python.display()
    );
    python
}

async fn scrape(server: &TestServer, accept: Option<&str>) -> (String, String) {
    let mut request = server.client.get(format!("{}/metrics", server.base_url));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let reply = request.send().await.expect("GET /metrics");
    assert_eq!(reply.status(), 200);
    let content_type = reply.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    (content_type, reply.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_formats_parse_and_follow_the_naming_conventions() {
    let server = TestServer::start().await;
    // Traffic, so the request and query histograms have series.
    for path in ["/api/content", "/api/review/today?user_id=1", "/nowhere"] {
        server
            .client
            .get(format!("{}{path}", server.base_url))
            .send()
            .await
            .expect("request");
    }

    let (text_type, text) = scrape(&server, None).await;
    assert!(
        text_type.starts_with("text/plain; version=0.0.4"),
        "{text_type}"
    );
    let (om_type, openmetrics) = scrape(
        &server,
        Some("application/openmetrics-text; version=1.0.0, text/plain;q=0.5"),
    )
    .await;
    assert!(
        om_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{om_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));

    let dir = tempfile::tempdir().expect("temp dir");
    let text_path = dir.path().join("metrics.txt");
    let om_path = dir.path().join("metrics.om");
    std::fs::write(&text_path, &text).expect("write");
    std::fs::write(&om_path, &openmetrics).expect("write");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/metrics_check.py");
    let output = Command::new(venv_python())
        .arg(script)
        .arg(&text_path)
        .arg(&om_path)
        .args(REQUIRED)
        .output()
        .expect("run the checker");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The checker must see a broken exposition as broken.
    let broken = text.replacen(
        "# TYPE http_shed_requests_total counter",
        "# TYPE http_shed_requests_total gauge",
        1,
    );
    assert_ne!(broken, text, "the exposition changed its shed counter");
    std::fs::write(&text_path, broken).expect("write");
    let output = Command::new(venv_python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/metrics_check.py"))
        .arg(&text_path)
        .arg(&om_path)
        .output()
        .expect("run the checker");
    assert!(!output.status.success(), "a gauge named _total passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_database_connection_are_counted() {
    let app =
        crate::support::TestApp::sqlite_with(|config| config.database.max_connections = Some(1))
            .await;
    let count = |exposition: &str| -> u64 {
        exposition
            .lines()
            .find_map(|line| line.strip_prefix("db_pool_acquire_wait_seconds_count "))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no wait count in {exposition}"))
    };
    let before = count(&app.get("/metrics").await.text());
    // One connection, several requests of four concurrent queries each.
    let replies = tokio::join!(
        app.get("/api/analytics/stats?user_id=1"),
        app.get("/api/analytics/stats?user_id=2"),
        app.get("/api/analytics/stats?user_id=3"),
        app.get("/api/analytics/stats?user_id=4"),
    );
    for reply in [replies.0, replies.1, replies.2, replies.3] {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let after = count(&app.get("/metrics").await.text());
    assert!(after > before, "no wait counted: {before} -> {after}");
}
