//! The file processors: backup (a consistent snapshot of the database as
//! JSON lines), export (a table as CSV) and import (contents from CSV, in
//! batches). Files live under the configured files directory: backups in
//! `backups/`, exports in `exports/`, imports are read from `imports/`.
//! Output is written to a temporary file beside the target and renamed
//! into place, so a reader never sees half a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt as _;
use seawall_queue::{Job, JobError};
use sqlx::{Column as _, Row as _};

use super::payload::{BackupJob, ExportJob, ImportJob, file_name};
use super::processors::{BATCH, Processors, database, percent, write_in_batches};
use crate::db::{Backend, Timed as _};
use crate::time::now_ms;

/// The tables a backup holds, parents before children, with the query
/// that reads each.
const BACKUP_TABLES: [(&str, &str); 12] = [
    ("seawall_meta", "SELECT * FROM seawall_meta"),
    ("tiers", "SELECT * FROM tiers"),
    ("tenants", "SELECT * FROM tenants"),
    ("users", "SELECT * FROM users"),
    ("contents", "SELECT * FROM contents"),
    ("review_schedules", "SELECT * FROM review_schedules"),
    ("review_history", "SELECT * FROM review_history"),
    ("applied_reviews", "SELECT * FROM applied_reviews"),
    ("email_outbox", "SELECT * FROM email_outbox"),
    (
        "notification_deliveries",
        "SELECT * FROM notification_deliveries",
    ),
    ("reports", "SELECT * FROM reports"),
    ("analytics_daily", "SELECT * FROM analytics_daily"),
];

/// The import file's header.
const IMPORT_HEADER: [&str; 4] = ["id", "title", "category", "difficulty"];
/// How many bad rows an import names in its report.
const REPORTED_ROWS: usize = 5;

/// A file being written: a temporary file in the target's directory,
/// renamed onto the target by [`Output::finish`], removed if dropped first.
struct Output {
    target: PathBuf,
    temporary: PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
}

impl Output {
    /// Creates `dir` if needed and a temporary file for `name` in it.
    fn create(dir: &Path, name: &str) -> Result<Self, JobError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| JobError::new(format!("cannot create {}: {error}", dir.display())))?;
        let target = dir.join(name);
        let temporary = dir.join(format!(".{name}.partial"));
        let file = std::fs::File::create(&temporary).map_err(|error| {
            JobError::new(format!("cannot write {}: {error}", temporary.display()))
        })?;
        Ok(Self {
            target,
            temporary,
            writer: Some(std::io::BufWriter::new(file)),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), JobError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        writer.write_all(bytes).map_err(|error| {
            JobError::new(format!(
                "cannot write {}: {error}",
                self.temporary.display()
            ))
        })
    }

    /// Flushes, syncs and renames the file into place.
    fn finish(mut self) -> Result<PathBuf, JobError> {
        let failed = |error: std::io::Error| {
            JobError::new(format!("cannot write {}: {error}", self.target.display()))
        };
        if let Some(writer) = self.writer.take() {
            let file = writer
                .into_inner()
                .map_err(|error| failed(error.into_error()))?;
            file.sync_all().map_err(failed)?;
        }
        std::fs::rename(&self.temporary, &self.target).map_err(failed)?;
        Ok(self.target.clone())
    }
}

/// [`Output::finish`] off the runtime's threads (it syncs the file).
async fn finish(output: Output) -> Result<PathBuf, JobError> {
    tokio::task::spawn_blocking(move || output.finish())
        .await
        .map_err(|error| JobError::new(format!("writing the file stopped: {error}")))?
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// One column's value as JSON: every column of the schema is an integer,
/// a float or text, any of them NULL.
fn column_value(row: &sqlx::any::AnyRow, index: usize) -> serde_json::Value {
    if let Ok(value) = row.try_get::<Option<i64>, _>(index) {
        return value.map_or(serde_json::Value::Null, Into::into);
    }
    if let Ok(value) = row.try_get::<Option<f64>, _>(index) {
        return value.map_or(serde_json::Value::Null, Into::into);
    }
    row.try_get::<Option<String>, _>(index)
        .ok()
        .flatten()
        .map_or(serde_json::Value::Null, Into::into)
}

/// Every table, read in one read-only transaction (one snapshot: SQLite
/// in WAL mode, PostgreSQL at repeatable read), one JSON object per row.
pub(super) async fn backup(processors: &Processors, job: Job<BackupJob>) -> Result<(), JobError> {
    let db = &processors.db;
    let name = format!("seawall-{}.jsonl", now_ms());
    let mut output = Output::create(&processors.files.join("backups"), &name)?;
    let begin = match db.backend() {
        Backend::Sqlite => "BEGIN",
        Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    };
    let mut transaction = db
        .pool()
        .begin_with(begin)
        .await
        .map_err(|error| database(&error))?;
    let mut rows_written = 0_u64;
    for (done, (table, sql)) in BACKUP_TABLES.iter().enumerate() {
        let mut rows = sqlx::query(*sql).fetch(&mut *transaction);
        while let Some(row) = rows.try_next().await.map_err(|error| database(&error))? {
            let columns: serde_json::Map<String, serde_json::Value> = row
                .columns()
                .iter()
                .map(|column| {
                    (
                        column.name().to_owned(),
                        column_value(&row, column.ordinal()),
                    )
                })
                .collect();
            let line = serde_json::json!({ "table": table, "row": columns });
            output.write(line.to_string().as_bytes())?;
            output.write(b"\n")?;
            rows_written += 1;
        }
        drop(rows);
        job.progress(
            percent(done + 1, BACKUP_TABLES.len()),
            &format!("{table}: {rows_written} rows so far"),
        )
        .await;
    }
    transaction
        .commit()
        .await
        .map_err(|error| database(&error))?;
    let path = finish(output).await?;
    job.progress(100, &format!("{rows_written} rows in {}", path.display()))
        .await;
    Ok(())
}

/// A table as CSV with a header row.
pub(super) async fn export(processors: &Processors, job: Job<ExportJob>) -> Result<(), JobError> {
    let ExportJob { table, file } = &job.payload;
    file_name(file).map_err(|refused| JobError::permanent(refused.to_string()))?;
    let db = &processors.db;
    let (count_sql, sql) = table.queries();
    let table = table.as_str();
    let total: i64 = sqlx::query_scalar(count_sql)
        .fetch_one(&db.pool())
        .timed(db, count_sql)
        .await
        .map_err(|error| database(&error))?;
    let total = usize::try_from(total).unwrap_or(0);
    let mut output = Output::create(&processors.files.join("exports"), file)?;
    let mut connection = db.acquire().await.map_err(|error| database(&error))?;
    let mut rows = sqlx::query(sql).fetch(&mut *connection);
    let mut written = 0_usize;
    let csv_error = |error: csv::Error| JobError::new(format!("csv: {error}"));
    let into_bytes = |writer: csv::Writer<Vec<u8>>| {
        writer
            .into_inner()
            .map_err(|error| JobError::new(format!("csv: {}", error.error())))
    };
    let mut line = csv::Writer::from_writer(Vec::new());
    while let Some(row) = rows.try_next().await.map_err(|error| database(&error))? {
        if written == 0 {
            let header: Vec<&str> = row.columns().iter().map(|column| column.name()).collect();
            line.write_record(&header).map_err(csv_error)?;
        }
        let fields: Vec<String> = (0..row.columns().len())
            .map(|index| match column_value(&row, index) {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            })
            .collect();
        line.write_record(&fields).map_err(csv_error)?;
        written += 1;
        if written.is_multiple_of(BATCH) {
            let full = std::mem::replace(&mut line, csv::Writer::from_writer(Vec::new()));
            output.write(&into_bytes(full)?)?;
            job.progress(
                percent(written, total),
                &format!("{written} of {total} rows"),
            )
            .await;
        }
    }
    drop(rows);
    output.write(&into_bytes(line)?)?;
    let path = finish(output).await?;
    job.progress(
        100,
        &format!("{written} rows of {table} in {}", path.display()),
    )
    .await;
    Ok(())
}

/// One row of an import file, checked.
struct Content {
    id: i64,
    title: String,
    category: String,
    difficulty: i64,
}

fn content(record: &csv::StringRecord) -> Result<Content, String> {
    if record.len() != IMPORT_HEADER.len() {
        return Err(format!(
            "{} fields, expected {}",
            record.len(),
            IMPORT_HEADER.len()
        ));
    }
    let id = record[0]
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("id {:?} is not a positive integer", &record[0]))?;
    let text = |index: usize, name: &str| {
        let value = record[index].trim();
        if value.is_empty() || value.chars().count() > 200 {
            return Err(format!("{name} must be 1 to 200 characters"));
        }
        Ok(value.to_owned())
    };
    let difficulty = record[3]
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|difficulty| (1..=5).contains(difficulty))
        .ok_or_else(|| format!("difficulty {:?} is not 1 to 5", &record[3]))?;
    Ok(Content {
        id,
        title: text(1, "title")?,
        category: text(2, "category")?,
        difficulty,
    })
}

/// Contents from a CSV file: the header must be `id,title,category,difficulty`
/// (a file without it is malformed, and the job fails); each good row is
/// inserted or updated, in transactions of [`BATCH`] rows; bad rows are
/// counted and the first few named in the final progress message.
pub(super) async fn import(processors: &Processors, job: Job<ImportJob>) -> Result<(), JobError> {
    const UPSERT: &str = "INSERT INTO contents (id, title, category, difficulty, created_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, \
             category = excluded.category, difficulty = excluded.difficulty";
    file_name(&job.payload.file).map_err(|refused| JobError::permanent(refused.to_string()))?;
    let path = processors.files.join("imports").join(&job.payload.file);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|error| JobError::new(format!("cannot read {}: {error}", path.display())))?;
    let malformed = |reason: String| {
        JobError::new(format!(
            "malformed import file {}: {reason}",
            path.display()
        ))
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let header = reader
        .headers()
        .map_err(|error| malformed(error.to_string()))?;
    let header: Vec<String> = header
        .iter()
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    if header != IMPORT_HEADER {
        return Err(malformed(format!(
            "line 1: the header is {:?}, expected {}",
            header.join(","),
            IMPORT_HEADER.join(",")
        )));
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut bad_count = 0_usize;
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let checked = record
            .map_err(|error| error.to_string())
            .and_then(|record| content(&record));
        match checked {
            Ok(row) => good.push(row),
            Err(reason) => {
                bad_count += 1;
                if bad.len() < REPORTED_ROWS {
                    bad.push(format!("line {line}: {reason}"));
                }
            }
        }
    }
    let now = now_ms();
    write_in_batches(
        processors,
        &job,
        &good,
        "rows imported",
        UPSERT,
        |row: &Content| {
            sqlx::query(UPSERT)
                .bind(row.id)
                .bind(&row.title)
                .bind(&row.category)
                .bind(row.difficulty)
                .bind(now)
        },
    )
    .await?;
    let total = good.len();
    let mut message = format!("{total} rows imported, {bad_count} bad");
    if !bad.is_empty() {
        message.push_str(": ");
        message.push_str(&bad.join("; "));
    }
    job.progress(100, &message).await;
    Ok(())
}
