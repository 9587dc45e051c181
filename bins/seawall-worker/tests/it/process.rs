//! The `seawall-worker` binary as an operator runs it, beside an API on the
//! same database and Redis: it takes the jobs the API enqueues, serves its
//! probes and metrics, drains on SIGTERM and exits with status 0.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use seawall_api::{App, Config};
use seawall_testkit::RedisServer;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_seawall-worker");
const TOKEN: &str = "worker-test-admin-token-01";

/// The configuration both processes share.
fn shared_config(dir: &Path, redis: &str) -> Config {
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.join("seawall.db").display());
    config.database.max_connections = 4;
    config.redis.url = Some(redis.to_owned());
    config.admin.token = Some(TOKEN.to_owned());
    config.demo.users = 5;
    config.demo.contents = 20;
    config.demo.schedules_per_user = 10;
    config.demo.history_per_user = 20;
    config.queue.files = dir.join("files");
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// The worker binary with a clean environment and `config`'s settings.
fn worker(config: &Config) -> Command {
    let mut command = Command::new(BINARY);
    for name in seawall_api::config::env_vars() {
        command.env_remove(name);
    }
    command
        .env("SEAWALL_DATABASE_URL", &config.database.url)
        .env("SEAWALL_FILES", &config.queue.files)
        .args(["--worker-listen", "127.0.0.1:0", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = &config.redis.url {
        command.env("REDIS_URL", url);
    }
    command
}

/// A running worker, the address of its probes and its log lines.
struct Worker {
    child: Child,
    probes: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Worker {
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("the worker starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let probes = loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the worker says where its probes are");
            let line: Value = serde_json::from_str(&line).expect("JSON log lines");
            if let Some(addr) = line["fields"]["addr"].as_str() {
                break addr.parse().expect("an address");
            }
        };
        Self { child, probes, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.probes)
    }

    /// Sends SIGTERM and waits for the exit status, with the log lines.
    fn terminate(mut self) -> (i32, Vec<String>) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waits") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let lines = self.log.try_iter().collect();
        (status.code().unwrap_or(-1), lines)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `url` until `check` holds on the status and body, or 30 s pass.
async fn until(client: &reqwest::Client, url: &str, check: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = client.get(url).bearer_auth(TOKEN).send().await;
        if let Ok(response) = request {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            if check(status, &body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{url}: {status} {body}");
        } else {
            assert!(Instant::now() < deadline, "{url} does not answer");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_what_the_api_enqueues_and_drains_on_sigterm() {
    let redis = RedisServer::start().expect("redis-server starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = shared_config(dir.path(), &redis.url());
    // The API first: it writes the demo dataset the worker's jobs read.
    let app = App::build(config.clone()).await.expect("the API builds");
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .expect("binds");
    let api = format!("http://{}", listener.local_addr().expect("an address"));
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.serve(listener, async {
        let _ = api_stopped.await;
    }));

    let worker = Worker::start(worker(&config));
    let client = reqwest::Client::new();
    assert_eq!(
        until(&client, &worker.url("/livez"), |status, _| status == 200).await,
        r#"{"status":"pass"}"#
    );
    until(&client, &worker.url("/readyz"), |status, _| status == 200).await;

    let overview = until(&client, &format!("{api}/api/queue"), |status, _| {
        status == 200
    })
    .await;
    let overview: Value = serde_json::from_str(&overview).expect("JSON");
    assert_eq!(overview["processors"], "seawall-worker");
    let enqueued = client
        .post(format!("{api}/api/queue/email"))
        .bearer_auth(TOKEN)
        .json(&json!({"user_id": 2, "template": "reminder"}))
        .send()
        .await
        .expect("enqueues");
    assert_eq!(enqueued.status().as_u16(), 202);
    let id = enqueued.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let job = until(
        &client,
        &format!("{api}/api/queue/email/jobs/{id}"),
        |_, body| body.contains(r#""state":"completed""#),
    )
    .await;
    assert!(job.contains("queued for"), "{job}");
    let metrics = until(&client, &worker.url("/metrics"), |_, body| {
        body.contains(r#"queue_jobs_total{queue="email",outcome="completed"} 1"#)
    })
    .await;
    assert!(metrics.contains("db_pool_connections"), "{metrics}");

    let (status, log) = worker.terminate();
    assert_eq!(status, 0, "{}", log.join("\n"));
    assert!(
        log.iter().any(|line| line.contains("draining")),
        "{}",
        log.join("\n")
    );
    let _ = stop_api.send(());
    serving
        .await
        .expect("joins")
        .expect("the API stops cleanly");
}

#[test]
fn without_a_redis_url_the_worker_exits_two_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    config.queue.files = dir.path().join("files");
    let output = worker(&config).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("seawall-worker takes jobs from Redis"),
        "{stderr}"
    );
}
