use std::time::Duration;

use seawall_perfmon::Monitor;
use seawall_perfmon::sqlx::TimedQuery;
use sqlx::SqlitePool;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn timed_queries_feed_the_histogram_and_the_sanitised_slow_log() -> TestResult {
    // Every query counts as slow, so each one reaches the slow-query log.
    let monitor = Monitor::builder()
        .slow_query_threshold(Duration::ZERO)
        .build()?;
    let pool = SqlitePool::connect("sqlite::memory:").await?;
    const CREATE: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, password TEXT)";
    sqlx::query(CREATE)
        .execute(&pool)
        .timed(&monitor, CREATE)
        .await?;
    const INSERT: &str =
        "INSERT INTO users (id, name, password) VALUES (42, 'Ada', 'password=hunter2')";
    sqlx::query(INSERT)
        .execute(&pool)
        .timed(&monitor, INSERT)
        .await?;
    const SELECT: &str = "SELECT name FROM users WHERE id = 42";
    let (name,): (String,) = sqlx::query_as(SELECT)
        .fetch_one(&pool)
        .timed(&monitor, SELECT)
        .await?;
    assert_eq!(name, "Ada");
    const BROKEN: &str = "SELECT * FROM missing_table WHERE token = 'abc'";
    assert!(
        sqlx::query(BROKEN)
            .fetch_all(&pool)
            .timed(&monitor, BROKEN)
            .await
            .is_err()
    );

    let window = monitor.query_window(Duration::from_secs(60));
    assert_eq!(window.stats.latency.count, 4);
    assert_eq!(window.errors, 1);
    let text = monitor.prometheus();
    assert!(
        text.contains("db_query_duration_seconds_count{operation=\"SELECT\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("db_query_duration_seconds_count{operation=\"SELECT\",outcome=\"error\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("db_query_duration_seconds_count{operation=\"INSERT\",outcome=\"ok\"} 1"),
        "{text}"
    );

    let logged: Vec<String> = monitor
        .slow_queries(10)
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(logged.len(), 4);
    for text in &logged {
        for secret in ["hunter2", "Ada", "42", "abc"] {
            assert!(
                !text.contains(secret),
                "`{secret}` survived in the slow log: {text}"
            );
        }
    }
    assert!(
        logged
            .iter()
            .any(|t| t == "SELECT name FROM users WHERE id = ?"),
        "{logged:?}"
    );
    Ok(())
}
