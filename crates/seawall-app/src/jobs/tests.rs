//! Every processor against a seeded SQLite file and a files directory, on
//! the memory backend; and the failures that must end as failed jobs with
//! a clear error, retried per policy, never a crashed worker.

use std::path::PathBuf;
use std::time::Duration;

use seawall_perfmon::Monitor;
use seawall_queue::{JobId, JobInfo, JobState, Queues};
use seawall_testkit::wait;
use serde_json::json;

use super::*;
use crate::config::{DatabaseConfig, DemoConfig, QueuePolicy, Recurring};
use crate::db::Db;
use crate::reviews::DAY_MS;

struct Rig {
    _dir: tempfile::TempDir,
    files: PathBuf,
    db: Db,
    queues: Queues,
    config: QueueConfig,
    monitor: Monitor,
    running: Option<Running>,
}

impl Rig {
    /// A seeded database, every queue at two attempts 10 ms apart, no
    /// recurring job, and the processors running.
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Same, after `tweak` changes the queues' configuration. The
    /// processors' tests count their own jobs, so no recurring job adds
    /// one (the hourly one at the turn of an hour) unless `tweak` turns it
    /// on.
    async fn start_with(tweak: impl FnOnce(&mut QueueConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = DatabaseConfig {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display()),
            max_connections: Some(4),
            ..DatabaseConfig::default()
        };
        let monitor = Monitor::new();
        let db = Db::connect(&database, monitor.clone())
            .await
            .expect("connects");
        let demo = DemoConfig {
            seed: true,
            users: 3,
            contents: 20,
            schedules_per_user: 10,
            history_per_user: 30,
        };
        crate::seed::ensure(&db, &demo, crate::time::now_ms())
            .await
            .expect("seeds");
        let files = dir.path().join("files");
        let mut config = QueueConfig {
            files: files.clone(),
            ..QueueConfig::default()
        };
        for queue in QueueName::ALL {
            let fast =
                QueuePolicy::parse_over(queue.default_policy(), "attempts=2 backoff=fixed:10ms")
                    .expect("valid");
            match queue {
                QueueName::Email => config.email = fast,
                QueueName::Report => config.report = fast,
                QueueName::Schedule => config.schedule = fast,
                QueueName::Notification => config.notification = fast,
                QueueName::Analytics => config.analytics = fast,
                QueueName::Backup => config.backup = fast,
                QueueName::Export => config.export = fast,
                QueueName::Import => config.import = fast,
                QueueName::Order => config.order = fast,
            }
        }
        config.nightly_backup = Recurring::Off;
        config.hourly_analytics = Recurring::Off;
        config.daily_report = Recurring::Off;
        tweak(&mut config);
        let queues = Queues::memory();
        let processors = Processors::new(db.clone(), None, files.clone());
        let running = Running::start(&queues, &config, &monitor, &processors).expect("starts");
        Self {
            _dir: dir,
            files,
            db,
            queues,
            config,
            monitor,
            running: Some(running),
        }
    }

    async fn enqueue(&self, queue: QueueName, payload: serde_json::Value) -> JobId {
        match enqueue(&self.queues, &self.config, queue, payload, None).await {
            Ok(id) => id,
            Err(refusal) => panic!("{refusal:?}"),
        }
    }

    /// The job once it has completed or died.
    async fn finished(&self, queue: QueueName, id: &JobId) -> JobInfo {
        let began = tokio::time::Instant::now();
        loop {
            let job = self.queues.job(queue.as_str(), id).await.expect("reads");
            let state = job.as_ref().map(|job| job.state);
            if let Some(job) =
                job.filter(|job| matches!(job.state, JobState::Completed | JobState::Dead))
            {
                return job;
            }
            assert!(
                began.elapsed() < wait::patience(),
                "waited {:?} for {queue} job {id} to finish; last state {state:?}",
                wait::patience()
            );
            tokio::time::sleep(wait::POLL).await;
        }
    }

    async fn completed(&self, queue: QueueName, payload: serde_json::Value) -> JobInfo {
        let id = self.enqueue(queue, payload).await;
        let job = self.finished(queue, &id).await;
        assert_eq!(job.state, JobState::Completed, "{queue}: {:?}", job.errors);
        assert_eq!(
            job.progress.as_ref().map(|p| p.percent),
            Some(100),
            "{queue}"
        );
        job
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool())
            .await
            .expect("counts")
    }

    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Starts the processors again, on the same queues, with `config`: a
    /// process started after the last one stopped. Its metrics go to a
    /// monitor of its own.
    fn restart(&mut self, config: QueueConfig) {
        self.config = config;
        let processors = Processors::new(self.db.clone(), None, self.files.clone());
        self.monitor = Monitor::new();
        let running =
            Running::start(&self.queues, &self.config, &self.monitor, &processors).expect("starts");
        self.running = Some(running);
    }
}

fn message(job: &JobInfo) -> String {
    job.progress
        .as_ref()
        .map(|p| p.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_processor_does_its_work() {
    let mut rig = Rig::start().await;

    rig.completed(
        QueueName::Email,
        json!({"user_id": 1, "template": "reminder"}),
    )
    .await;
    let subject: String = sqlx::query_scalar("SELECT subject FROM email_outbox WHERE user_id = 1")
        .fetch_one(&rig.db.pool())
        .await
        .expect("an outbox row");
    assert!(subject.ends_with("reviews are due"), "{subject}");

    rig.completed(
        QueueName::Notification,
        json!({"user_id": 2, "channel": "push", "message": "hello"}),
    )
    .await;
    assert_eq!(
        rig.count("SELECT COUNT(*) FROM notification_deliveries WHERE channel = 'push'")
            .await,
        1
    );

    let report = rig
        .completed(QueueName::Report, json!({"user_id": 1, "days": 365}))
        .await;
    let body: String = sqlx::query_scalar("SELECT body FROM reports WHERE user_id = 1")
        .fetch_one(&rig.db.pool())
        .await
        .expect("a report");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let reviews = rig
        .count("SELECT COUNT(*) FROM review_history WHERE user_id = 1")
        .await;
    assert_eq!(body["reviews"], json!(reviews), "{}", message(&report));

    sqlx::query(
        "UPDATE review_schedules SET due_at = 5 WHERE user_id = 2 AND last_reviewed_at IS NOT NULL",
    )
    .execute(&rig.db.pool())
    .await
    .expect("drifts");
    rig.completed(
        QueueName::Schedule,
        json!({"kind": "recompute", "user_id": 2}),
    )
    .await;
    assert_eq!(
        rig.count("SELECT COUNT(*) FROM review_schedules WHERE user_id = 2 AND due_at = 5")
            .await,
        0
    );

    rig.completed(QueueName::Analytics, json!({"days": 365}))
        .await;
    let (days, reviews): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(SUM(reviews) AS BIGINT) FROM analytics_daily")
            .fetch_one(&rig.db.pool())
            .await
            .expect("refreshed");
    assert!(days > 0);
    assert_eq!(
        reviews,
        rig.count("SELECT COUNT(*) FROM review_history").await
    );

    let backup = rig.completed(QueueName::Backup, json!({})).await;
    let dir = rig.files.join("backups");
    let file = std::fs::read_dir(&dir)
        .expect("a backups dir")
        .next()
        .expect("a file")
        .expect("entry");
    let text = std::fs::read_to_string(file.path()).expect("reads");
    let history_lines = text
        .lines()
        .filter(|line| line.contains("\"table\":\"review_history\""))
        .count();
    assert_eq!(
        i64::try_from(history_lines).unwrap_or(0),
        rig.count("SELECT COUNT(*) FROM review_history").await,
        "{}",
        message(&backup)
    );
    assert!(
        text.lines()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok())
    );

    rig.completed(
        QueueName::Export,
        json!({"table": "contents", "file": "contents.csv"}),
    )
    .await;
    let csv = std::fs::read_to_string(rig.files.join("exports/contents.csv")).expect("exported");
    assert!(
        csv.starts_with("id,title,category,difficulty,created_at\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 21, "a header and 20 contents");

    let imports = rig.files.join("imports");
    std::fs::create_dir_all(&imports).expect("imports dir");
    std::fs::write(
        imports.join("more.csv"),
        "id,title,category,difficulty\n\
         101,Irregular verbs,language,2\n\
         102,,language,2\n\
         1,Renamed,math,5\n\
         103,Fractions,math,9\n\
         104,\"Commas, quoted\",math,3\n",
    )
    .expect("writes");
    let import = rig
        .completed(QueueName::Import, json!({"file": "more.csv"}))
        .await;
    assert_eq!(
        message(&import),
        "3 rows imported, 2 bad: line 3: title must be 1 to 200 characters; line 5: difficulty \"9\" is not 1 to 5"
    );
    assert_eq!(rig.count("SELECT COUNT(*) FROM contents").await, 22);
    let renamed: String = sqlx::query_scalar("SELECT title FROM contents WHERE id = 1")
        .fetch_one(&rig.db.pool())
        .await
        .expect("kept");
    assert_eq!(renamed, "Renamed");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_written_behind_is_applied_once() {
    let mut rig = Rig::start().await;
    let (content, last): (i64, Option<i64>) =
        sqlx::query_as("SELECT content_id, last_reviewed_at FROM review_schedules WHERE user_id = 3 ORDER BY content_id LIMIT 1")
            .fetch_one(&rig.db.pool())
            .await
            .expect("a schedule");
    let at = last.unwrap_or(0) + DAY_MS;
    let review = json!({"kind": "review", "review_id": "r-1", "user_id": 3, "content_id": content,
        "rating": 5, "duration_ms": 1200, "at_ms": at, "interval_days": 6,
        "ease_permille": 2600, "repetitions": 2});
    let history = "SELECT COUNT(*) FROM review_history WHERE user_id = 3";
    let before = rig.count(history).await;
    let first = rig.completed(QueueName::Schedule, review.clone()).await;
    assert_eq!(message(&first), "review written");
    let replay = rig.completed(QueueName::Schedule, review).await;
    assert_eq!(message(&replay), "review already written");
    assert_eq!(rig.count(history).await, before + 1);
    let due: i64 = sqlx::query_scalar(
        "SELECT due_at FROM review_schedules WHERE user_id = 3 AND content_id = $1",
    )
    .bind(content)
    .fetch_one(&rig.db.pool())
    .await
    .expect("moved");
    assert_eq!(due, at + 6 * DAY_MS);
    rig.stop().await;
}

/// The job ended dead after both attempts, each failing with `says`.
fn failed_twice_with(job: &JobInfo, says: &str) {
    assert_eq!(job.state, JobState::Dead, "{job:?}");
    assert_eq!(job.errors.len(), 2, "{:?}", job.errors);
    for error in &job.errors {
        assert!(
            error.error.contains(says),
            "{:?} should say {says:?}",
            error.error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_and_database_errors_fail_the_job_not_the_worker() {
    let mut rig = Rig::start().await;
    let imports = rig.files.join("imports");
    std::fs::create_dir_all(&imports).expect("imports dir");
    std::fs::write(imports.join("broken.csv"), "name;level\nx;1\n").expect("writes");
    let id = rig
        .enqueue(QueueName::Import, json!({"file": "broken.csv"}))
        .await;
    failed_twice_with(
        &rig.finished(QueueName::Import, &id).await,
        "malformed import file",
    );
    let id = rig
        .enqueue(QueueName::Import, json!({"file": "missing.csv"}))
        .await;
    failed_twice_with(&rig.finished(QueueName::Import, &id).await, "cannot read");

    // A file where the exports directory should be: no write can succeed,
    // whoever the process runs as.
    std::fs::create_dir_all(&rig.files).expect("files dir");
    std::fs::write(rig.files.join("exports"), "not a directory").expect("writes");
    let id = rig
        .enqueue(
            QueueName::Export,
            json!({"table": "users", "file": "users.csv"}),
        )
        .await;
    failed_twice_with(&rig.finished(QueueName::Export, &id).await, "cannot create");

    sqlx::query("DROP TABLE notification_deliveries")
        .execute(&rig.db.pool())
        .await
        .expect("drops");
    let payload = json!({"user_id": 1, "channel": "sms", "message": "hi"});
    let id = rig.enqueue(QueueName::Notification, payload).await;
    failed_twice_with(
        &rig.finished(QueueName::Notification, &id).await,
        "database error",
    );

    // The workers go on.
    rig.completed(
        QueueName::Email,
        json!({"user_id": 1, "template": "welcome"}),
    )
    .await;
    std::fs::write(
        imports.join("fine.csv"),
        "id,title,category,difficulty\n200,Ok,misc,1\n",
    )
    .expect("writes");
    rig.completed(QueueName::Import, json!({"file": "fine.csv"}))
        .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_does_not_exist_is_dead_at_once_and_bad_payloads_are_refused() {
    let mut rig = Rig::start().await;
    let id = rig
        .enqueue(QueueName::Report, json!({"user_id": 999, "days": 7}))
        .await;
    let job = rig.finished(QueueName::Report, &id).await;
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.errors.len(), 1, "not retried: {:?}", job.errors);
    assert!(job.errors[0].error.contains("no user 999"));

    let refused = enqueue(
        &rig.queues,
        &rig.config,
        QueueName::Export,
        json!({"table": "users", "file": "../x"}),
        None,
    )
    .await;
    assert!(
        matches!(refused, Err(Refusal::Invalid(ref why)) if why.field == "file"),
        "{refused:?}"
    );
    let counts = rig.queues.counts("export").await.expect("counts");
    assert_eq!(
        counts.waiting + counts.active + counts.completed + counts.dead,
        0,
        "nothing enqueued"
    );
    rig.stop().await;
}

/// The value `monitor` exports for `name{queue="<queue>"}`.
fn exported(monitor: &Monitor, name: &str, queue: QueueName) -> Option<f64> {
    let prefix = format!("{name}{{queue=\"{queue}\"}} ");
    monitor
        .prometheus()
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|value| value.parse().ok())
}

/// Every queue's pause and oldest waiting age are exported once the
/// workers start, and kept current from the queues' backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_export_each_queues_pause_and_oldest_waiting_age() {
    let mut rig = Rig::start().await;
    for queue in QueueName::ALL {
        for name in ["queue_paused", "queue_oldest_waiting_age_seconds"] {
            assert_eq!(
                exported(&rig.monitor, name, queue),
                Some(0.0),
                "{name} of {queue}"
            );
        }
    }
    rig.queues.pause("export").await.expect("pauses");
    rig.enqueue(
        QueueName::Export,
        json!({"table": "users", "file": "users.csv"}),
    )
    .await;
    // The gauges are refreshed every DEPTH_EVERY.
    let depth = "queue_depth{queue=\"export\",state=\"waiting\"} 1";
    let began = tokio::time::Instant::now();
    loop {
        let paused = exported(&rig.monitor, "queue_paused", QueueName::Export);
        let age = exported(
            &rig.monitor,
            "queue_oldest_waiting_age_seconds",
            QueueName::Export,
        );
        let counted = rig.monitor.prometheus().contains(depth);
        if paused == Some(1.0) && age.is_some_and(|age| age > 0.0) && counted {
            break;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for the export queue's gauges to be refreshed; \
             paused {paused:?}, oldest waiting {age:?}, one waiting counted: {counted}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.queues.resume("export").await.expect("resumes");
    rig.stop().await;
}

/// The configured recurring jobs are schedulers of their queues once the
/// processors start, each with its schedule, its job and its queue's
/// options; a process started with one `off` removes it, and a tick that
/// falls due is a job its processor runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recurring_jobs_are_kept_and_their_ticks_run() {
    let defaults = QueueConfig::default();
    let mut rig = Rig::start_with(|config| {
        config.nightly_backup = defaults.nightly_backup.clone();
        config.hourly_analytics = defaults.hourly_analytics.clone();
        config.daily_report = defaults.daily_report.clone();
        config.daily_report_user = 2;
    })
    .await;
    let queues = rig.queues.clone();
    let scheduler = async |queue: QueueName, id: &str| {
        queues.scheduler(queue.as_str(), id).await.expect("reads")
    };
    // Upserted by a task of their own: found once it has run.
    for (queue, id, schedule, payload) in [
        (
            QueueName::Backup,
            recurring::NIGHTLY_BACKUP,
            seawall_queue::Schedule::cron("0 3 * * *", "UTC").expect("valid"),
            json!({}),
        ),
        (
            QueueName::Analytics,
            recurring::HOURLY_ANALYTICS,
            seawall_queue::Schedule::every(Duration::from_secs(3600)).expect("valid"),
            json!({"days": 1}),
        ),
        (
            QueueName::Report,
            recurring::DAILY_REPORT,
            seawall_queue::Schedule::cron("0 6 * * *", "UTC").expect("valid"),
            json!({"user_id": 2, "days": 1}),
        ),
    ] {
        let info = wait::until_some_async(format!("the scheduler {id}"), async || {
            scheduler(queue, id).await
        })
        .await;
        assert_eq!(info.schedule, schedule, "{id}");
        let stored: serde_json::Value = serde_json::from_slice(&info.payload).expect("JSON");
        assert_eq!(stored, payload, "{id}");
        assert!(!info.paused, "{id}");
        assert_eq!(info.next_runs(3).len(), 3, "{id}");
    }
    let listed = rig.queues.schedulers("backup").await.expect("lists");
    assert_eq!(listed.len(), 1, "{listed:?}");
    rig.stop().await;

    // The next process is configured otherwise: the backup off, the
    // statistics refreshed every second.
    let mut config = rig.config.clone();
    config.nightly_backup = Recurring::Off;
    config.hourly_analytics = Recurring::parse("every 1s").expect("valid");
    rig.restart(config);
    wait::until_async("the backup's scheduler to be removed", async || {
        scheduler(QueueName::Backup, recurring::NIGHTLY_BACKUP)
            .await
            .is_none()
    })
    .await;
    let job = wait::until_some_async("a tick of the statistics' refresh to run", async || {
        queues
            .jobs("analytics", JobState::Completed, 10)
            .await
            .expect("lists")
            .into_iter()
            .find(|job| {
                job.tick
                    .as_ref()
                    .is_some_and(|tick| tick.scheduler == recurring::HOURLY_ANALYTICS)
            })
    })
    .await;
    let payload: serde_json::Value = job.payload_as().expect("JSON");
    assert_eq!(payload, json!({"days": 1}));
    assert_eq!(job.max_attempts, rig.config.analytics.attempts);
    assert_eq!(job.progress.map(|progress| progress.percent), Some(100));
    let analytics = scheduler(QueueName::Analytics, recurring::HOURLY_ANALYTICS)
        .await
        .expect("kept");
    assert_eq!(analytics.schedule.to_string(), "every 1s");
    assert!(
        analytics.last_run.is_some_and(|(_, id)| id == job.id),
        "the scheduler's last run is the job"
    );
    assert!(
        scheduler(QueueName::Report, recurring::DAILY_REPORT)
            .await
            .is_some(),
        "the report's scheduler is still kept"
    );
    rig.stop().await;
}

/// The reports' `reviews` as the job of `id` wrote them.
async fn reported(db: &Db, id: &JobId) -> i64 {
    let (body,): (String,) = sqlx::query_as("SELECT body FROM reports WHERE job = $1")
        .bind(format!("report:{id}"))
        .fetch_one(&db.pool())
        .await
        .expect("a report");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    body["reviews"].as_i64().expect("a count")
}

/// A job reads the writes of the caller that enqueued it, on a replica
/// when that one has replayed them: the caller's position travels in the
/// job's context. With the replica's replay paused behind the caller's
/// write, the job reads the primary and sees it; once the replica has
/// replayed it, the job reads the replica, without waiting. A job of a
/// caller that wrote nothing reads any replica in rotation (here the paused
/// one, kept in rotation by a long lag limit: the past, within the lag
/// limit, as a request of that caller would); a job enqueued outside any
/// caller reads as of when it runs, so it sees the write too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_the_writes_of_the_caller_that_enqueued_it() {
    use crate::db::caller::Caller;
    use crate::db::replicas::tests::{mark, primary_and_replica, state};

    let (_primary, replica, db) = primary_and_replica(
        Duration::from_secs(600),
        DatabaseConfig::default().replica_wait,
    )
    .await;
    let replicas = std::sync::Arc::clone(db.replicas().expect("replicas"));
    let demo = DemoConfig {
        seed: true,
        users: 2,
        contents: 5,
        schedules_per_user: 3,
        history_per_user: 4,
    };
    let now = crate::time::now_ms();
    crate::seed::ensure(&db, &demo, now).await.expect("seeds");
    let seeded = mark(&db).await;
    wait::until_async("the replica to replay the seed", async || {
        state(&db).replayed >= seeded
    })
    .await;
    replica.pause_replay().expect("pauses");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = QueueConfig {
        files: dir.path().to_owned(),
        nightly_backup: Recurring::Off,
        hourly_analytics: Recurring::Off,
        daily_report: Recurring::Off,
        ..QueueConfig::default()
    };
    let queues = Queues::memory();
    const HISTORY: &str = "SELECT COUNT(*) FROM review_history WHERE user_id = 1";
    let before: i64 = sqlx::query_scalar(HISTORY)
        .fetch_one(&db.pool())
        .await
        .expect("counts");
    let report = || json!({"user_id": 1, "days": 365});
    let enqueue_report = async || {
        enqueue(&queues, &config, QueueName::Report, report(), None)
            .await
            .expect("enqueues")
    };

    // A caller writes, then enqueues a report: the job carries its
    // position.
    let writer = Caller::new(None);
    let (position, after_write) = writer
        .scope(async {
            sqlx::query(
                "INSERT INTO review_history (user_id, content_id, reviewed_at, rating, duration_ms) \
                 VALUES (1, 1, $1, 4, 900)",
            )
            .bind(now)
            .execute(&db.pool())
            .await
            .expect("inserts");
            let position = db.wrote().await.expect("a position");
            (position, enqueue_report().await)
        })
        .await;
    let stored = queues
        .job("report", &after_write)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(stored.context, Some(format!("read-after={position}")));
    // A caller that wrote nothing, and no caller at all.
    let reader = Caller::new(None)
        .scope(async { enqueue_report().await })
        .await;
    let outside = enqueue_report().await;
    assert_eq!(
        queues
            .job("report", &outside)
            .await
            .expect("reads")
            .expect("kept")
            .context,
        None
    );

    let monitor = Monitor::new();
    let processors = Processors::new(db.clone(), None, dir.path().to_owned());
    let running = Running::start(&queues, &config, &monitor, &processors).expect("starts");
    let finish = async |id: &JobId| {
        wait::until_async(format!("report {id} to complete"), async || {
            queues
                .job("report", id)
                .await
                .expect("reads")
                .is_some_and(|job| job.state == JobState::Completed)
        })
        .await;
        reported(&db, id).await
    };
    assert_eq!(finish(&after_write).await, before + 1, "the caller's write");
    assert_eq!(finish(&reader).await, before, "the paused replica's past");
    assert_eq!(finish(&outside).await, before + 1, "as of the run");

    // Replayed: the job of the writer's position reads the replica.
    replica.resume_replay().expect("resumes");
    wait::until_async("the replica to replay the write", async || {
        state(&db).replayed >= position
    })
    .await;
    let (reads, primary_reads) = (state(&db).reads, replicas.primary_reads());
    let again = Caller::new(Some(position))
        .scope(async { enqueue_report().await })
        .await;
    assert_eq!(finish(&again).await, before + 1);
    // The learner, the totals and the categories; the report's row is
    // written on the primary.
    assert_eq!(
        (
            state(&db).reads - reads,
            replicas.primary_reads() - primary_reads
        ),
        (3, 0)
    );
    running.shutdown(Duration::from_secs(5)).await;
    db.close().await;
}
