//! The demo dataset: users, contents, review schedules and review history,
//! generated inside the database by recursive CTEs so that a million rows take
//! seconds, not minutes, on either engine.
//!
//! The data is deterministic for given sizes and anchor day: pseudo-random
//! fields come from an integer hash of the row number, not from a random
//! generator. It is written in one transaction, so an interrupted seed leaves
//! nothing behind and the next start writes it again.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::DemoConfig;
use crate::db::{Backend, Db, Timed as _};

/// The content categories, in the order the generator assigns them.
pub const CATEGORIES: [&str; 8] = [
    "language",
    "math",
    "science",
    "history",
    "programming",
    "music",
    "geography",
    "art",
];

const DAY_MS: i64 = 86_400_000;
/// Rows per generated INSERT: big enough to amortise a statement, small
/// enough to report progress every few percent.
const ROWS_PER_STATEMENT: u64 = 100_000;
const META_KEY: &str = "demo_dataset";

/// What the seed wrote, as recorded in `seawall_meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoDataset {
    /// Start of the UTC day the data is anchored to, Unix milliseconds: history
    /// covers the 180 days before it, schedules fall due from a week before to
    /// two months after it.
    pub anchor_ms: i64,
    /// Users written.
    pub users: u32,
    /// Contents written.
    pub contents: u32,
    /// Schedules per user.
    pub schedules_per_user: u32,
    /// History rows per user.
    pub history_per_user: u32,
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedOutcome {
    /// Seeding is turned off.
    Disabled,
    /// A demo dataset was already there.
    Present(DemoDataset),
    /// The database holds users that the seed did not write; it was left alone.
    ForeignData,
    /// The dataset was written now.
    Written(DemoDataset),
}

/// Writes the demo dataset unless seeding is off or the database already
/// holds data.
pub async fn ensure(db: &Db, demo: &DemoConfig, now_ms: i64) -> Result<SeedOutcome, sqlx::Error> {
    if !demo.seed {
        return Ok(SeedOutcome::Disabled);
    }
    const FIND: &str = "SELECT value FROM seawall_meta WHERE key = $1";
    let recorded: Option<(String,)> = sqlx::query_as(FIND)
        .bind(META_KEY)
        .fetch_optional(&db.pool())
        .timed(db, FIND)
        .await?;
    if let Some((json,)) = recorded {
        let dataset = serde_json::from_str(&json).map_err(|error| {
            sqlx::Error::Protocol(format!("seawall_meta.{META_KEY} is not valid: {error}"))
        })?;
        return Ok(SeedOutcome::Present(dataset));
    }
    const COUNT_USERS: &str = "SELECT COUNT(*) FROM users";
    let (users,): (i64,) = sqlx::query_as(COUNT_USERS)
        .fetch_one(&db.pool())
        .timed(db, COUNT_USERS)
        .await?;
    if users > 0 {
        return Ok(SeedOutcome::ForeignData);
    }
    let dataset = DemoDataset {
        anchor_ms: now_ms - now_ms.rem_euclid(DAY_MS),
        users: demo.users,
        contents: demo.contents,
        schedules_per_user: demo.schedules_per_user,
        history_per_user: demo.history_per_user,
    };
    if write(db, &dataset).await? {
        return Ok(SeedOutcome::Written(dataset));
    }
    // Another process (an instance started beside this one) wrote it first.
    let recorded: Option<(String,)> = sqlx::query_as(FIND)
        .bind(META_KEY)
        .fetch_optional(&db.pool())
        .timed(db, FIND)
        .await?;
    match recorded.and_then(|(json,)| serde_json::from_str(&json).ok()) {
        Some(dataset) => Ok(SeedOutcome::Present(dataset)),
        None => Ok(SeedOutcome::ForeignData),
    }
}

/// Writes the dataset in one transaction; false when another process had
/// written users by the time this one held the write lock (on PostgreSQL
/// an advisory lock, so instances started together seed once).
async fn write(db: &Db, dataset: &DemoDataset) -> Result<bool, sqlx::Error> {
    let started = Instant::now();
    let users = u64::from(dataset.users);
    let schedules = users * u64::from(dataset.schedules_per_user);
    let history = users * u64::from(dataset.history_per_user);
    tracing::info!(
        users,
        contents = dataset.contents,
        schedules,
        history,
        "writing the demo dataset (once; set demo.seed = false to skip)"
    );
    let mut tx = db.begin_write().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('seawall demo dataset'))")
            .execute(&mut *tx)
            .await?;
    }
    let (users_now,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(&mut *tx)
        .await?;
    if users_now > 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    let steps = [
        (
            "users",
            users,
            users_sql as fn(&DemoDataset, u64, u64) -> String,
        ),
        ("contents", u64::from(dataset.contents), contents_sql),
        ("review schedules", schedules, schedules_sql),
        ("review history", history, history_sql),
    ];
    for (table, total, sql) in steps {
        let mut done = 0;
        while done < total {
            let end = (done + ROWS_PER_STATEMENT).min(total);
            sqlx::query(sqlx::AssertSqlSafe(sql(dataset, done, end)))
                .execute(&mut *tx)
                .await?;
            done = end;
            tracing::info!(
                "demo dataset: {table} {done}/{total} ({}%), {:.1} s",
                done * 100 / total,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let json = serde_json::to_string(dataset)
        .map_err(|error| sqlx::Error::Protocol(format!("demo dataset record: {error}")))?;
    sqlx::query("INSERT INTO seawall_meta (key, value) VALUES ($1, $2)")
        .bind(META_KEY)
        .bind(json)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // Fresh statistics, so the planners pick the indexes for the workload.
    sqlx::query("ANALYZE").execute(&db.pool()).await?;
    if db.backend() == Backend::Sqlite {
        // Move the seed out of the write-ahead log now, rather than leaving
        // every reader to look pages up in a log of a million rows.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&db.pool())
            .await?;
    }
    tracing::info!(
        "demo dataset written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// Row numbers `start..end` as a recursive CTE `seq(n)`, then three rounds of
/// an integer hash of `n` as `h1`, `h2`, `h3` (each below 2^31, so products
/// stay inside BIGINT). Low bits of the hash are weak; callers divide by 16
/// before taking a remainder.
fn numbered(start: u64, end: u64) -> String {
    let last = end.saturating_sub(1);
    format!(
        "WITH RECURSIVE seq(n) AS (\
             SELECT CAST({start} AS BIGINT) UNION ALL SELECT n + 1 FROM seq WHERE n < {last}\
         ), \
         r1(n, h1) AS (SELECT n, (n * 1103515245 + 12345) % 2147483648 FROM seq), \
         r2(n, h1, h2) AS (SELECT n, h1, (h1 * 1103515245 + 12345) % 2147483648 FROM r1), \
         r(n, h1, h2, h3) AS (SELECT n, h1, h2, (h2 * 1103515245 + 12345) % 2147483648 FROM r2) "
    )
}

fn users_sql(dataset: &DemoDataset, start: u64, end: u64) -> String {
    let created_from = dataset.anchor_ms - 400 * DAY_MS;
    format!(
        "INSERT INTO users (id, name, email, created_at) {} \
         SELECT n + 1, 'User ' || (n + 1), 'user' || (n + 1) || '@example.test', \
                {created_from} + ((h1 / 16) % 200) * {DAY_MS} FROM r",
        numbered(start, end)
    )
}

fn contents_sql(dataset: &DemoDataset, start: u64, end: u64) -> String {
    let created_from = dataset.anchor_ms - 400 * DAY_MS;
    let category = category_case("n");
    format!(
        "INSERT INTO contents (id, title, category, difficulty, created_at) {} \
         SELECT n + 1, {category} || ' lesson ' || (n + 1), {category}, 1 + (h1 / 16) % 5, \
                {created_from} + ((h2 / 16) % 200) * {DAY_MS} FROM r",
        numbered(start, end)
    )
}

/// Row `n` is schedule `k = n % S` of user `u = n / S + 1`, for content
/// `(37u + k) % C + 1`: distinct per user because `k < S <= C`.
fn schedules_sql(dataset: &DemoDataset, start: u64, end: u64) -> String {
    let per_user = dataset.schedules_per_user;
    let contents = dataset.contents;
    let week_before = dataset.anchor_ms - 7 * DAY_MS;
    format!(
        "INSERT INTO review_schedules \
             (user_id, content_id, due_at, interval_days, ease_permille, repetitions, last_reviewed_at) {} \
         SELECT n / {per_user} + 1, ((n / {per_user} + 1) * 37 + n % {per_user}) % {contents} + 1, \
                {week_before} + ((h1 / 16) % 86400) * 60000, \
                1 + (h2 / 16) % 30, 1300 + (h2 / 16) % 1500, (h3 / 16) % 10, \
                {week_before} - ((h3 / 16) % 43200) * 60000 FROM r",
        numbered(start, end)
    )
}

/// Row `n` is review `n % H` of user `u = n / H + 1`, of one of that user's
/// scheduled contents, at a time in the 180 days before the anchor. Ratings
/// lean towards passing, more so for some users than others.
fn history_sql(dataset: &DemoDataset, start: u64, end: u64) -> String {
    let per_user = dataset.history_per_user;
    let schedules = dataset.schedules_per_user;
    let contents = dataset.contents;
    let history_from = dataset.anchor_ms - 180 * DAY_MS;
    format!(
        "INSERT INTO review_history (user_id, content_id, reviewed_at, rating, duration_ms) {} \
         SELECT u, (u * 37 + (h1 / 16) % {schedules}) % {contents} + 1, \
                {history_from} + ((h2 / 16) % 15552000) * 1000, \
                CASE WHEN score < 8 THEN 0 WHEN score < 18 THEN 1 WHEN score < 32 THEN 2 \
                     WHEN score < 62 THEN 3 WHEN score < 86 THEN 4 ELSE 5 END, \
                1500 + (h3 / 16) % 58500 \
         FROM (SELECT n / {per_user} + 1 AS u, h1, h2, h3, \
                      (h3 / 16) % 100 + ((n / {per_user}) * 7) % 21 - 10 AS score FROM r) AS rows",
        numbered(start, end)
    )
}

/// `CASE expr % 8 WHEN 0 THEN 'language' … END`.
fn category_case(expr: &str) -> String {
    let arms: String = CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, name)| format!(" WHEN {i} THEN '{name}'"))
        .collect();
    format!("(CASE {expr} % {}{arms} END)", CATEGORIES.len())
}

#[cfg(test)]
mod tests {
    use seawall_perfmon::Monitor;

    use super::*;
    use crate::config::DatabaseConfig;

    async fn seeded(dir: &std::path::Path, name: &str, now_ms: i64) -> (Db, SeedOutcome) {
        let config = DatabaseConfig {
            url: format!("sqlite://{}?mode=rwc", dir.join(name).display()),
            max_connections: Some(2),
            ..DatabaseConfig::default()
        };
        let db = Db::connect(&config, Monitor::new()).await.expect("connect");
        let demo = DemoConfig {
            seed: true,
            users: 7,
            contents: 30,
            schedules_per_user: 12,
            history_per_user: 40,
        };
        let outcome = ensure(&db, &demo, now_ms).await.expect("seed");
        (db, outcome)
    }

    /// Every column of every table, folded into a few numbers.
    async fn fingerprint(db: &Db) -> Vec<(i64, i64, i64)> {
        let queries = [
            "SELECT COUNT(*), SUM(id), SUM(created_at % 1000003 + LENGTH(name) + LENGTH(email)) FROM users",
            "SELECT COUNT(*), SUM(difficulty * id), SUM(created_at % 1000003 + LENGTH(title) + LENGTH(category)) FROM contents",
            "SELECT COUNT(*), SUM(content_id * user_id + interval_days + repetitions), \
                    SUM(due_at % 1000003 + ease_permille + last_reviewed_at % 1000003) FROM review_schedules",
            "SELECT COUNT(*), SUM(content_id * user_id + rating), SUM(reviewed_at % 1000003 + duration_ms) FROM review_history",
        ];
        let mut prints = Vec::new();
        for sql in queries {
            prints.push(
                sqlx::query_as(sql)
                    .fetch_one(&db.pool())
                    .await
                    .expect("fingerprint"),
            );
        }
        prints
    }

    #[tokio::test]
    async fn the_dataset_is_deterministic_and_written_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = 1_795_000_000_000;
        let (a, first) = seeded(dir.path(), "a.db", now).await;
        let (b, _) = seeded(dir.path(), "b.db", now + 1_000).await;
        assert!(matches!(first, SeedOutcome::Written(_)), "{first:?}");
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&a.pool())
            .await
            .expect("journal mode");
        assert_eq!(mode, "wal", "readers and the writer don't block each other");
        let print = fingerprint(&a).await;
        assert_eq!(
            print,
            fingerprint(&b).await,
            "same sizes and day, same data"
        );
        assert_eq!(print[0].0, 7);
        assert_eq!(print[2].0, 7 * 12);
        assert_eq!(print[3].0, 7 * 40);

        let (again, outcome) = seeded(dir.path(), "a.db", now).await;
        assert!(matches!(outcome, SeedOutcome::Present(_)), "{outcome:?}");
        assert_eq!(
            fingerprint(&again).await,
            print,
            "a second start writes nothing"
        );
    }

    #[tokio::test]
    async fn every_history_row_belongs_to_a_schedule_and_ratings_are_valid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _) = seeded(dir.path(), "c.db", 1_795_000_000_000).await;
        let (orphans,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM review_history h WHERE NOT EXISTS \
             (SELECT 1 FROM review_schedules s WHERE s.user_id = h.user_id AND s.content_id = h.content_id)",
        )
        .fetch_one(&db.pool())
        .await
        .expect("query");
        assert_eq!(orphans, 0);
        let (distinct_ratings,): (i64,) =
            sqlx::query_as("SELECT COUNT(DISTINCT rating) FROM review_history")
                .fetch_one(&db.pool())
                .await
                .expect("query");
        assert!(distinct_ratings >= 4, "ratings vary: {distinct_ratings}");
    }
}
