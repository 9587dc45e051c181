//! The API and two `seawall-worker` processes on one Redis and one SQLite
//! database, through crashes: 1,000 jobs across the eight queues, one
//! worker killed with SIGKILL while its jobs are mid-write, the other
//! stopped with SIGTERM midway, both started again. Every job must end
//! completed or dead with its reason; none may be lost or completed twice;
//! reviews written behind the cache must reach the database exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use seawall_app::Config;
use seawall_app::config::{QueueName, QueuePolicy, ReviewWrites};
use seawall_queue::Queues;
use seawall_queue::fred::prelude::{Builder, Config as RedisConfig};
use seawall_testkit::{RedisServer, wait};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Connection as _, Executor as _};

use crate::support::{ServedApi, TOKEN, Worker, shared_config, until, worker};

/// Jobs enqueued per queue through `/api/queue`; the schedule queue also
/// gets one job per review written behind, up to 1,000 in all.
const JOBS: [(QueueName, usize); 7] = [
    (QueueName::Email, 350),
    (QueueName::Notification, 300),
    (QueueName::Report, 100),
    (QueueName::Analytics, 20),
    (QueueName::Backup, 10),
    (QueueName::Export, 40),
    (QueueName::Import, 30),
];
const TOTAL: usize = 1_000;
/// Learners in the demo dataset; ids above it do not exist.
const USERS: u32 = 20;
/// Every so many email, notification and report jobs name a learner that
/// does not exist, and every so many imports a file that is not there:
/// those must end dead, with the reason.
const DOOMED_EVERY: usize = 25;
const IMPORT_ROWS: usize = 40;
/// Renewed every third of it: a renewal held up on a loaded machine for a
/// second or two must not lose a live worker its job (a second write no
/// kill explains), and the killed worker's jobs still come back within
/// seconds.
const LEASE: Duration = Duration::from_secs(5);

/// One job the test enqueued, and how it must end.
#[derive(Debug, Clone)]
struct Expected {
    queue: QueueName,
    id: String,
    /// `Some(reason)`: it must end dead with an error containing `reason`.
    dies: Option<&'static str>,
}

fn config(dir: &std::path::Path, redis: &str) -> Config {
    let mut config = shared_config(dir, redis);
    config.demo.users = USERS;
    config.demo.contents = 60;
    config.demo.schedules_per_user = 12;
    config.demo.history_per_user = 30;
    config.cache.review_writes = ReviewWrites::WriteBehind;
    config.queue.lease = LEASE;
    config.worker.shutdown_timeout = Duration::from_secs(20);
    for queue in QueueName::ALL {
        // Quick retries, and room for the failures a locked database causes.
        let policy = QueuePolicy::parse_over(
            *config.queue.policy(queue),
            "attempts=4 backoff=fixed:200ms timeout=60s",
        )
        .expect("a valid policy");
        *policy_mut(&mut config, queue) = policy;
    }
    config
}

fn policy_mut(config: &mut Config, queue: QueueName) -> &mut QueuePolicy {
    let queues = &mut config.queue;
    match queue {
        QueueName::Email => &mut queues.email,
        QueueName::Report => &mut queues.report,
        QueueName::Schedule => &mut queues.schedule,
        QueueName::Notification => &mut queues.notification,
        QueueName::Analytics => &mut queues.analytics,
        QueueName::Backup => &mut queues.backup,
        QueueName::Export => &mut queues.export,
        QueueName::Import => &mut queues.import,
        QueueName::Order => &mut queues.order,
    }
}

/// The API's client, with the admin token.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn enqueue(&self, queue: QueueName, body: &Value) -> String {
        let (status, reply) = self.post(&format!("/api/queue/{queue}"), body).await;
        assert_eq!(status, 202, "enqueue {queue} {body}: {reply}");
        reply["id"].as_str().expect("an id").to_owned()
    }

    /// Depth per queue and state: `(name, row)`.
    async fn overview(&self) -> Vec<(String, Value)> {
        let (status, overview) = self.get("/api/queue").await;
        assert_eq!(status, 200, "{overview}");
        overview["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .map(|row| {
                (
                    row["name"].as_str().unwrap_or_default().to_owned(),
                    row.clone(),
                )
            })
            .collect()
    }

    /// Jobs of `state`, over every queue: `(queue, id)`.
    async fn listed(&self, state: &str) -> BTreeSet<(String, String)> {
        let mut jobs = BTreeSet::new();
        for queue in QueueName::ALL {
            let (status, list) = self
                .get(&format!("/api/queue/{queue}/jobs?state={state}&limit=200"))
                .await;
            assert_eq!(status, 200, "{list}");
            for job in list["jobs"].as_array().expect("jobs") {
                jobs.insert((
                    queue.to_string(),
                    job["id"].as_str().expect("id").to_owned(),
                ));
            }
        }
        jobs
    }
}

fn sum(overview: &[(String, Value)], state: &str) -> usize {
    overview
        .iter()
        .map(|(_, row)| {
            row[state]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Waits until `check` holds on the queues' overview. However long a
/// loaded machine takes over a thousand jobs, it gives up only once no job
/// has ended (completed or dead) for the whole of [`wait::patience`].
async fn wait_overview(
    api: &Api,
    what: &str,
    check: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let (mut ended, mut since) = (None, Instant::now());
    loop {
        let overview = api.overview().await;
        if check(&overview) {
            return overview;
        }
        let now_ended = sum(&overview, "completed") + sum(&overview, "dead");
        if ended != Some(now_ended) {
            (ended, since) = (Some(now_ended), Instant::now());
        }
        assert!(
            since.elapsed() < wait::patience(),
            "waited {:?} for {what}, and no job ended meanwhile: {overview:?}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reviews the due items of every learner through the API, written behind
/// the cache: each is a schedule job. Answers `(user, content)` pairs.
async fn review_due_items(api: &Api) -> Vec<(i64, i64)> {
    let mut reviewed = Vec::new();
    for user in 1..=i64::from(USERS) {
        let (status, due) = api
            .get(&format!("/api/review/today?user_id={user}&limit=4"))
            .await;
        assert_eq!(status, 200, "{due}");
        for item in due["items"].as_array().expect("items") {
            let content = item["content_id"].as_i64().expect("a content id");
            let (status, reply) = api
                .post(
                    "/api/review/complete",
                    &json!({"user_id": user, "content_id": content, "rating": 4, "duration_ms": 1500}),
                )
                .await;
            assert_eq!(status, 200, "{reply}");
            reviewed.push((user, content));
        }
    }
    reviewed
}

/// The body of the `n`th job of `queue`, and whether it must die.
fn job_body(queue: QueueName, n: usize) -> (Value, Option<&'static str>) {
    let doomed = n % DOOMED_EVERY == DOOMED_EVERY - 1;
    let user = if doomed {
        10_000 + n
    } else {
        1 + n % USERS as usize
    };
    let no_user = doomed.then_some("no user");
    match queue {
        QueueName::Email => {
            let template = ["welcome", "reminder", "digest"][n % 3];
            (json!({"user_id": user, "template": template}), no_user)
        }
        QueueName::Notification => {
            let channel = ["push", "sms", "in_app"][n % 3];
            (
                json!({"user_id": user, "channel": channel, "message": format!("message {n}")}),
                no_user,
            )
        }
        QueueName::Report => (json!({"user_id": user, "days": 30}), no_user),
        QueueName::Schedule => (
            json!({"kind": "recompute", "user_id": 1 + n % USERS as usize}),
            None,
        ),
        QueueName::Analytics => (json!({"days": 7}), None),
        QueueName::Backup => (json!({}), None),
        QueueName::Export => {
            let table = ["users", "contents", "review_schedules", "review_history"][n % 4];
            (
                json!({"table": table, "file": format!("export-{n}.csv")}),
                None,
            )
        }
        QueueName::Import => {
            if doomed || n % 10 == 9 {
                (
                    json!({"file": format!("missing-{n}.csv")}),
                    Some("cannot read"),
                )
            } else {
                (json!({"file": format!("import-{n}.csv")}), None)
            }
        }
        QueueName::Order => panic!("orders are placed through a time sale, not enqueued here"),
    }
}

/// The import files the import jobs read (the missing ones excepted).
fn write_import_files(files: &std::path::Path) {
    let imports = files.join("imports");
    std::fs::create_dir_all(&imports).expect("the imports directory");
    for n in 0..30 {
        let mut csv = String::from("id,title,category,difficulty\n");
        for row in 0..IMPORT_ROWS {
            let id = 100_000 + n * 1_000 + row;
            csv.push_str(&format!("{id},Imported {id},vocabulary,{}\n", 1 + row % 5));
        }
        std::fs::write(imports.join(format!("import-{n}.csv")), csv).expect("an import file");
    }
}

/// The `completed` events of every job, per queue, read from the streams.
async fn completions(queues: &Queues) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for queue in QueueName::ALL {
        let mut after: Option<String> = None;
        loop {
            let events = queues
                .events(queue.as_str(), after.as_deref(), 1_000)
                .await
                .expect("reads the events");
            let Some(last) = events.last() else { break };
            after = Some(last.position.clone());
            for event in events.iter().filter(|event| event.kind == "completed") {
                *seen
                    .entry((queue.to_string(), event.job.to_string()))
                    .or_insert(0) += 1;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_survive_a_killed_worker_and_a_stopped_one() {
    let redis = RedisServer::start().expect("redis-server starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), &redis.url());
    write_import_files(&config.queue.files);

    // The API, which only enqueues (the queues are on Redis).
    let served = ServedApi::start(&config).await;
    let api = Api {
        base: served.base.clone(),
        client: reqwest::Client::new(),
    };
    until(
        &api.client,
        &format!("{}/api/queue", api.base),
        |status, _| status == 200,
    )
    .await;
    sqlx::any::install_default_drivers();
    let mut db = AnyConnection::connect(&config.database.url)
        .await
        .expect("connects to the database");
    let history_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM review_history")
        .fetch_one(&mut db)
        .await
        .expect("counts");

    // Reviews written behind: read back at once, in the database not yet.
    let reviewed = review_due_items(&api).await;
    assert!(reviewed.len() >= 20, "only {} reviews", reviewed.len());
    let mut expected: Vec<Expected> = Vec::with_capacity(TOTAL);
    for &(user, content) in &reviewed {
        let (_, due) = api
            .get(&format!("/api/review/today?user_id={user}&limit=50"))
            .await;
        let listed = due["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|item| item["content_id"] == content);
        assert!(
            !listed,
            "user {user} still sees content {content} due: {due}"
        );
    }
    let overview = api.overview().await;
    assert_eq!(
        sum(&overview, "waiting"),
        reviewed.len(),
        "one schedule job per review"
    );
    // Their ids, from the schedule queue's stream.
    let queues = Queues::redis(Builder::from_config(
        RedisConfig::from_url(&redis.url()).expect("a URL"),
    ))
    .prefix(config.queue.prefix.clone())
    .connect()
    .await
    .expect("connects to the queues");
    let reviews = queues
        .events("schedule", None, 10_000)
        .await
        .expect("reads the events");
    for event in reviews.iter().filter(|event| event.kind == "enqueued") {
        expected.push(Expected {
            queue: QueueName::Schedule,
            id: event.job.to_string(),
            dies: None,
        });
    }
    assert_eq!(expected.len(), reviewed.len());

    // The other jobs, up to 1,000.
    let recompute = TOTAL - reviewed.len() - JOBS.iter().map(|(_, n)| n).sum::<usize>();
    for (queue, count) in JOBS.into_iter().chain([(QueueName::Schedule, recompute)]) {
        for n in 0..count {
            let (body, dies) = job_body(queue, n);
            let id = api.enqueue(queue, &body).await;
            expected.push(Expected { queue, id, dies });
        }
    }
    assert_eq!(expected.len(), TOTAL);
    let overview = api.overview().await;
    assert_eq!(sum(&overview, "waiting"), TOTAL, "{overview:?}");
    let history_now: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM review_history")
        .fetch_one(&mut db)
        .await
        .expect("counts");
    assert_eq!(history_now, history_before, "nothing was written yet");

    // Worker A starts, then the database is locked for writing: the jobs A
    // takes from then on wait mid-write, and it is killed with them. The
    // schedule queue, whose review jobs A must be holding then, is paused
    // until the lock is taken: a worker that started fast would otherwise
    // have written every review before the lock.
    let (status, paused) = api.post("/api/queue/schedule/pause", &json!({})).await;
    assert_eq!(status, 200, "{paused}");
    let a = Worker::start(worker(&config));
    until(&api.client, &a.url("/readyz"), |status, _| status == 200).await;
    db.execute("BEGIN IMMEDIATE")
        .await
        .expect("locks the database");
    let (status, resumed) = api.post("/api/queue/schedule/resume", &json!({})).await;
    assert_eq!(status, 200, "{resumed}");
    let overview = wait_overview(&api, "worker A to hold jobs", |rows| {
        rows.iter()
            .any(|(name, row)| name == "schedule" && row["active"].as_u64() > Some(0))
            && sum(rows, "active") >= 8
    })
    .await;
    // Frozen, A finishes nothing more: what is active now is what it loses.
    a.freeze();
    let held = api.listed("active").await;
    a.crash();
    db.execute("ROLLBACK").await.expect("unlocks the database");
    // The schedule queue is first in, first out: the review jobs came first.
    let lost_reviews = expected[..reviewed.len()]
        .iter()
        .filter(|job| held.contains(&(job.queue.to_string(), job.id.clone())))
        .count();
    assert!(
        lost_reviews > 0,
        "A held no review job: {held:?} ({overview:?})"
    );

    // Worker B runs part of the rest, and A's jobs once their leases run
    // out; then it is stopped and drains.
    let b = Worker::start(worker(&config));
    let overview = wait_overview(&api, "B to complete 300 jobs", |rows| {
        sum(rows, "completed") >= 300
    })
    .await;
    let (status, log) = b.terminate();
    assert_eq!(status, 0, "B after SIGTERM: {}", log.join("\n"));
    let left = sum(&overview, "waiting") + sum(&overview, "delayed") + sum(&overview, "active");
    assert!(
        left > 0,
        "B ran everything before it was stopped: {overview:?}"
    );

    // Both again, until every job has ended.
    let a = Worker::start(worker(&config));
    let b = Worker::start(worker(&config));
    wait_overview(&api, "every job to end", |rows| {
        sum(rows, "waiting") + sum(rows, "delayed") + sum(rows, "active") == 0
            && sum(rows, "completed") + sum(rows, "dead") == TOTAL
    })
    .await;

    // Every job ended as it must, none lost.
    let mut dead = 0;
    for job in &expected {
        let (status, view) = api
            .get(&format!("/api/queue/{}/jobs/{}", job.queue, job.id))
            .await;
        assert_eq!(status, 200, "{} job {} was lost: {view}", job.queue, job.id);
        match job.dies {
            None => assert_eq!(view["state"], "completed", "{view}"),
            Some(reason) => {
                dead += 1;
                assert_eq!(view["state"], "dead", "{view}");
                let error = view["errors"]
                    .as_array()
                    .and_then(|errors| errors.last())
                    .and_then(|error| error["error"].as_str())
                    .unwrap_or_default();
                assert!(
                    error.contains(reason),
                    "{} job {}: {view}",
                    job.queue,
                    job.id
                );
            }
        }
        if held.contains(&(job.queue.to_string(), job.id.clone())) {
            assert!(
                view["stalls"].as_u64() >= Some(1),
                "a job A held when killed counts a stall: {view}"
            );
        }
    }
    assert!(dead > 0, "some jobs were meant to die");

    // None completed twice: one `completed` event per completed job.
    let completed = completions(&queues).await;
    let twice: Vec<_> = completed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    assert_eq!(completed.len(), TOTAL - dead);

    // Every review reached the database once, as the API answered it.
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM applied_reviews")
        .fetch_one(&mut db)
        .await
        .expect("counts");
    assert_eq!(usize::try_from(applied).ok(), Some(reviewed.len()));
    let history_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM review_history")
        .fetch_one(&mut db)
        .await
        .expect("counts");
    assert_eq!(
        usize::try_from(history_after - history_before).ok(),
        Some(reviewed.len())
    );
    // Side effects are at least once: only a job A lost may have written twice.
    let repeated: Vec<String> = sqlx::query_scalar(
        "SELECT job FROM email_outbox GROUP BY job HAVING COUNT(*) > 1 \
         UNION ALL SELECT job FROM notification_deliveries GROUP BY job HAVING COUNT(*) > 1",
    )
    .fetch_all(&mut db)
    .await
    .expect("reads the outbox");
    for job in &repeated {
        let (queue, id) = job.split_once(':').expect("queue:id");
        assert!(
            held.contains(&(queue.to_owned(), id.to_owned())),
            "{job} wrote twice without having been lost"
        );
    }

    eprintln!(
        "{} jobs: {} reviews ({lost_reviews} lost mid-write), {} dead, {} lost by the killed worker, \
         {} side effects repeated",
        expected.len(),
        reviewed.len(),
        dead,
        held.len(),
        repeated.len()
    );
    for worker in [a, b] {
        let (status, log) = worker.terminate();
        assert_eq!(status, 0, "{}", log.join("\n"));
    }
    served.stop().await;
}
