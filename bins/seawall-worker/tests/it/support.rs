//! What the tests share: the configuration of an API and its workers, the
//! API's and the worker's binaries as child processes, and
//! polling an HTTP endpoint. Every wait here is for something the test can
//! see (a log line, an exit, an answer), for up to [`wait::patience`].

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use seawall_app::Config;
use seawall_app::config::{QueueName, Recurring, SETTINGS};
use seawall_testkit::wait;
use serde_json::Value;

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_seawall-worker");
pub(crate) const TOKEN: &str = "worker-test-admin-token-01";

/// The configuration both processes share. No recurring job: the tests
/// count every job they enqueue, and an hourly one would add one at the
/// turn of an hour.
pub(crate) fn shared_config(dir: &Path, redis: &str) -> Config {
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", dir.join("seawall.db").display());
    config.database.max_connections = Some(4);
    config.redis.url = Some(redis.to_owned());
    config.admin.token = Some(TOKEN.to_owned());
    config.demo.users = 5;
    config.demo.contents = 20;
    config.demo.schedules_per_user = 10;
    config.demo.history_per_user = 20;
    config.queue.files = dir.join("files");
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.queue.nightly_backup = Recurring::Off;
    config.queue.hourly_analytics = Recurring::Off;
    config.queue.daily_report = Recurring::Off;
    config
}

/// The `seawall-api` binary beside this package's, which `cargo test
/// --workspace` builds for the API's own tests.
fn api_binary() -> PathBuf {
    seawall_testkit::workspace_binary("seawall-api").unwrap_or_else(|error| {
        panic!(
            "{error}: these tests run the API's binary beside the worker's; run them with \
             `cargo test --workspace` (or `cargo build -p seawall-api` first)"
        )
    })
}

/// The API as its binary runs it, configured with every setting of
/// `config` (through the environment, as an operator would).
pub(crate) struct ServedApi {
    /// `http://<address>`.
    pub(crate) base: String,
    /// Taken by [`ServedApi::stop`]; killed on drop otherwise.
    child: Option<Child>,
    log: mpsc::Receiver<String>,
}

impl Drop for ServedApi {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ServedApi {
    /// Starts the API (which writes the demo dataset its jobs read) and
    /// waits until it listens.
    pub(crate) async fn start(config: &Config) -> Self {
        let mut command = Command::new(api_binary());
        for name in seawall_app::config::env_vars() {
            command.env_remove(name);
        }
        for setting in SETTINGS {
            if let (Some(value), Some(name)) = (setting.show(config), setting.env.first()) {
                command.env(name, value);
            }
        }
        command
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the API starts");
        let log = lines(child.stderr.take().expect("stderr"));
        let addr = listening_addr(&log, "the API");
        Self {
            base: format!("http://{addr}"),
            child: Some(child),
            log,
        }
    }

    /// Stops the API with SIGTERM and checks it exits with status 0.
    pub(crate) async fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
        kill(pid, Signal::SIGTERM).expect("signal the API");
        let status = tokio::task::spawn_blocking(move || child.wait().expect("wait for the API"))
            .await
            .expect("joins");
        let log: Vec<String> = self.log.try_iter().collect();
        assert!(status.success(), "the API stops cleanly: {log:?}");
    }
}

/// The address in the first log line of `log` that names one (`what`
/// says where it listens), waiting for it up to [`wait::patience`].
fn listening_addr(log: &mpsc::Receiver<String>, what: &str) -> SocketAddr {
    let deadline = Instant::now() + wait::patience();
    loop {
        let line = match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "waited {:?} for {what} to say where it listens",
                wait::patience()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{what} closed its log before saying where it listens")
            }
        };
        let line: Value = serde_json::from_str(&line).expect("JSON log lines");
        if let Some(addr) = line["fields"]["addr"].as_str() {
            return addr.parse().expect("an address");
        }
    }
}

/// The lines `stream` writes, as they come.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The worker binary with a clean environment and `config`'s settings
/// (database, Redis, files, lease, queue policies, recurring jobs).
pub(crate) fn worker(config: &Config) -> Command {
    let mut command = Command::new(BINARY);
    for name in seawall_app::config::env_vars() {
        command.env_remove(name);
    }
    for queue in QueueName::ALL {
        command.env(
            format!("SEAWALL_QUEUE_{}", queue.as_str().to_ascii_uppercase()),
            config.queue.policy(queue).to_string(),
        );
    }
    let recurring = [
        "queue.nightly_backup",
        "queue.hourly_analytics",
        "queue.daily_report",
    ];
    for setting in SETTINGS
        .iter()
        .filter(|setting| recurring.contains(&setting.key))
    {
        if let (Some(value), Some(name)) = (setting.show(config), setting.env.first()) {
            command.env(name, value);
        }
    }
    command
        .env("SEAWALL_DATABASE_URL", &config.database.url)
        .env("SEAWALL_FILES", &config.queue.files)
        .env("SEAWALL_QUEUE_LEASE", humantime_text(config.queue.lease))
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
pub(crate) struct Worker {
    child: Child,
    probes: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Worker {
    pub(crate) fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("the worker starts");
        let log = lines(child.stderr.take().expect("stderr"));
        let probes = listening_addr(&log, "the worker");
        Self { child, probes, log }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.probes)
    }

    /// Sends SIGTERM and waits for the exit status, with the log lines.
    pub(crate) fn terminate(mut self) -> (i32, Vec<String>) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        // It drains first: up to its shutdown timeout, and longer on a
        // loaded machine.
        let status = wait::until_some(format!("worker {pid} to exit after SIGTERM"), || {
            self.child.try_wait().expect("waits")
        });
        let lines = self.log.try_iter().collect();
        (status.code().unwrap_or(-1), lines)
    }
}

impl Worker {
    /// Sends SIGSTOP: the process holds its jobs and does nothing more.
    pub(crate) fn freeze(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// Sends SIGCONT: a frozen process goes on where it stopped.
    pub(crate) fn thaw(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        kill(pid, Signal::SIGCONT).expect("SIGCONT");
    }

    /// Sends SIGKILL, as a crash would, and reaps the process.
    pub(crate) fn crash(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaps the worker");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `url` until `check` holds on the status and body, for up to
/// [`wait::patience`]; a failure names the last answer.
pub(crate) async fn until(
    client: &reqwest::Client,
    url: &str,
    check: impl Fn(u16, &str) -> bool,
) -> String {
    let began = Instant::now();
    loop {
        let last = match client.get(url).bearer_auth(TOKEN).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if check(status, &body) {
                    return body;
                }
                format!("{status} {body}")
            }
            Err(error) => format!("no answer: {error}"),
        };
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for {url} to answer as expected; it last answered {last}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A duration as the settings read it: whole milliseconds.
fn humantime_text(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}
