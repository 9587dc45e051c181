//! The `seawall-api` binary as an operator runs it: flags and environment,
//! the generated admin token, exit codes, and graceful shutdown on SIGTERM
//! and SIGINT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use seawall_testkit::wait;

const BINARY: &str = env!("CARGO_BIN_EXE_seawall-api");

/// The binary with a clean environment (none of the caller's `SEAWALL_*`,
/// `DATABASE_URL` or `REDIS_URL`), a small dataset in `dir`, a free port,
/// and JSON log lines.
fn command(dir: &Path) -> Command {
    command_logging(dir, "json")
}

/// Same, with log lines in `format` (`json` or `text`).
fn command_logging(dir: &Path, format: &str) -> Command {
    let mut command = Command::new(BINARY);
    for name in seawall_app::config::env_vars() {
        command.env_remove(name);
    }
    command
        .current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", format])
        .args(["--demo-users", "5", "--demo-contents", "20"])
        .args([
            "--demo-schedules-per-user",
            "10",
            "--demo-history-per-user",
            "20",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A running service: its address, and its stdout and stderr lines as they
/// arrive.
struct Running {
    child: Child,
    addr: SocketAddr,
    /// Log lines before the one that says where it listens.
    startup: Vec<String>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
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

fn start(mut command: Command) -> Running {
    let mut child = command.spawn().expect("the binary starts");
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + wait::patience();
    let mut seen = Vec::new();
    let addr = loop {
        let line = stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "waited {:?} for the 'listening' line; stderr so far:\n{}",
                    wait::patience(),
                    seen.join("\n")
                )
            });
        if let Some(addr) = listening_on(&line) {
            break addr;
        }
        seen.push(line);
    };
    Running {
        child,
        addr,
        startup: seen,
        stdout,
        stderr,
    }
}

/// The address a "listening" log line gives, as JSON (`fields.addr`) or as
/// text (`addr=`).
fn listening_on(line: &str) -> Option<SocketAddr> {
    let addr = if line.starts_with('{') {
        let log: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("a log line starting with `{{` is JSON: {line}"));
        log["fields"]["addr"].as_str()?.to_owned()
    } else {
        line.split(' ')
            .find_map(|field| field.strip_prefix("addr="))?
            .to_owned()
    };
    Some(addr.parse().expect("a socket address"))
}

impl Running {
    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, signal).expect("signal the service");
    }

    /// Waits for the service to exit; its exit code and its whole log.
    fn wait(mut self) -> (i32, Vec<String>) {
        let status = wait::until_some("the service to exit", || {
            self.child.try_wait().expect("wait")
        });
        // The reader thread ends at end of file: read until it does, so no
        // line written before exit is missed.
        let mut log = std::mem::take(&mut self.startup);
        while let Ok(line) = self.stderr.recv_timeout(wait::patience()) {
            log.push(line);
        }
        (status.code().unwrap_or(-1), log)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    send(addr, "GET", path, "", None)
}

/// Waits until the service has taken up a request whose body is still
/// arriving: `http_requests_in_flight` reads 1 (`/metrics` itself is not
/// counted).
fn wait_until_in_flight(addr: SocketAddr) {
    wait::until("the service to take up the request", || {
        get(addr, "/metrics").contains("\nhttp_requests_in_flight 1\n")
    });
}

/// Polls `/readyz` until its answer starts with `status` and holds `text`;
/// returns that answer.
fn wait_for_readiness(addr: SocketAddr, status: &str, text: &str) -> String {
    wait::until_some(format!("/readyz to answer {status} with {text:?}"), || {
        let ready = get(addr, "/readyz");
        (ready.starts_with(status) && ready.contains(text)).then_some(ready)
    })
}

/// One request on its own connection; `headers` are whole lines, each
/// ending in CRLF; a `body` is sent as JSON.
fn send(addr: SocketAddr, method: &str, path: &str, headers: &str, body: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(wait::patience()))
        .expect("timeout");
    let body = body.map_or_else(String::new, |body| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    let body = if body.is_empty() {
        "\r\n".to_owned()
    } else {
        body
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}{body}"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn prints_a_generated_token_once_and_accepts_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let running = start(command(dir.path()));
    let line = running
        .stdout
        .recv_timeout(wait::patience())
        .expect("the token is printed on stdout");
    let token = line.rsplit(' ').next().expect("token").to_owned();
    assert!(line.contains("SEAWALL_ADMIN_TOKEN"), "{line}");
    assert!(token.len() >= 32, "{line}");

    let mut stream = TcpStream::connect(running.addr).expect("connect");
    write!(
        stream,
        "GET /api/performance?type=health HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    running.signal(Signal::SIGTERM);
    let (code, log) = running.wait();
    assert_eq!(code, 0);
    assert!(
        log.iter().any(|line| line.contains("stopped")),
        "the whole log was read: {log:?}"
    );
    assert!(
        log.iter().all(|line| !line.contains(&token)),
        "the token is never logged: {log:?}"
    );
}

#[test]
fn sigterm_drains_a_request_in_flight_then_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    // Far longer than the steps below take on a busy machine: the request
    // must end by draining, not by the deadline.
    command
        .env("SEAWALL_ADMIN_TOKEN", "a-configured-admin-token")
        .args(["--shutdown-timeout", "10m"]);
    let running = start(command);
    assert!(get(running.addr, "/livez").starts_with("HTTP/1.1 200"));

    // A request whose body is still arriving when the signal comes.
    let body = br#"{"user_id": 1, "content_id": 18, "rating": 4}"#;
    let mut stream = TcpStream::connect(running.addr).expect("connect");
    stream
        .set_read_timeout(Some(wait::patience()))
        .expect("timeout");
    write!(
        stream,
        "POST /api/review/complete HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write head");
    stream
        .write_all(&body[..10])
        .expect("write part of the body");
    stream.flush().expect("flush");
    wait_until_in_flight(running.addr);

    running.signal(Signal::SIGTERM);
    // New connections are refused once the listener is closed.
    wait::until("the listener to close after SIGTERM", || {
        TcpStream::connect(running.addr).is_err()
    });

    stream
        .write_all(&body[10..])
        .expect("the in-flight request may finish");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    // Content 18 is user 1's first scheduled content: (1 × 37 + 0) mod 20 + 1.
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
    assert!(
        log.iter().any(|line| line.contains("SIGTERM received")),
        "{log:?}"
    );
    assert!(log.iter().any(|line| line.contains("stopped")), "{log:?}");
}

#[test]
fn a_request_past_the_shutdown_deadline_does_not_hold_the_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    // The request timeout, which would otherwise end the request and let
    // the service exit, is far off: only the shutdown deadline can.
    command
        .env("SEAWALL_ADMIN_TOKEN", "a-configured-admin-token")
        .env("SEAWALL_REQUEST_TIMEOUT", "10m")
        .args(["--shutdown-timeout", "1s"]);
    let running = start(command);
    // A body that never finishes arriving.
    let mut stream = TcpStream::connect(running.addr).expect("connect");
    write!(
        stream,
        "POST /api/review/complete HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .expect("write");
    stream.flush().expect("flush");
    wait_until_in_flight(running.addr);

    let started = Instant::now();
    running.signal(Signal::SIGTERM);
    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
    // Held by the request, the exit would wait ten minutes: a busy machine
    // takes nowhere near a minute past the 1 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        log.iter().any(|line| line.contains("still in flight")),
        "{log:?}"
    );
    drop(stream);
}

#[test]
fn serves_on_one_runtime_thread_when_told_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    command
        .env("SEAWALL_ADMIN_TOKEN", "a-configured-admin-token")
        .env("SEAWALL_THREADS", "1");
    let running = start(command);
    assert!(get(running.addr, "/livez").starts_with("HTTP/1.1 200"));
    running.signal(Signal::SIGTERM);
    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
}

/// The runtime is built with the threads asked for: more than this
/// machine's cores, so tokio's default (one per core) would not make them.
#[test]
fn the_runtime_has_the_worker_threads_asked_for() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let asked = cores + 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    command
        .env("SEAWALL_ADMIN_TOKEN", "a-configured-admin-token")
        .env("SEAWALL_THREADS", asked.to_string());
    let running = start(command);
    assert!(get(running.addr, "/livez").starts_with("HTTP/1.1 200"));
    // tokio names its worker threads `tokio-rt-worker`; blocking threads
    // may share the name, so the count is at least the workers.
    let tasks = format!("/proc/{}/task", running.child.id());
    let names: Vec<String> = std::fs::read_dir(&tasks)
        .expect("the process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    let workers = names
        .iter()
        .filter(|name| *name == "tokio-rt-worker")
        .count();
    assert!(workers >= asked, "{workers} runtime threads: {names:?}");
    running.signal(Signal::SIGTERM);
    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
}

#[test]
fn sigint_with_an_idle_connection_exits_promptly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    // Were the idle connection waited for, the exit would take ten minutes.
    command
        .env("SEAWALL_ADMIN_TOKEN", "a-configured-admin-token")
        .env("SEAWALL_HEADER_READ_TIMEOUT", "10m")
        .args(["--shutdown-timeout", "10m"]);
    let running = start(command);
    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = TcpStream::connect(running.addr).expect("connect");
    write!(idle, "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
    let mut first = [0_u8; 12];
    idle.read_exact(&mut first).expect("a response");
    running.signal(Signal::SIGINT);
    let started = Instant::now();
    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        log.iter().any(|line| line.contains("SIGINT received")),
        "{log:?}"
    );
}

#[test]
fn bad_configuration_exits_two_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bad_env = command(dir.path());
    bad_env.env("SEAWALL_SHUTDOWN_TIMEOUT", "soon");
    let output = bad_env.output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SEAWALL_SHUTDOWN_TIMEOUT") && stderr.contains("soon"),
        "{stderr}"
    );

    let mut bad_url = command(dir.path());
    bad_url.args(["--database-url", "mysql://root@localhost/db"]);
    let output = bad_url.output().expect("run");
    assert_eq!(output.status.code(), Some(2));

    for (flag, env) in [(Some("0"), None), (None, Some("5000"))] {
        let mut bad_threads = command(dir.path());
        if let Some(threads) = flag {
            bad_threads.args(["--threads", threads]);
        }
        if let Some(threads) = env {
            bad_threads.env("SEAWALL_THREADS", threads);
        }
        let output = bad_threads.output().expect("run");
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("server.threads") && stderr.contains("between 1 and 1024"),
            "{stderr}"
        );
    }

    let mut bad_flag = command(dir.path());
    bad_flag.arg("--lisen");
    let output = bad_flag.output().expect("run");
    assert_eq!(output.status.code(), Some(2));

    let output = Command::new(BINARY).arg("--help").output().expect("run");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "SEAWALL_LISTEN",
        "DATABASE_URL",
        "REDIS_URL",
        "SEAWALL_ADMIN_TOKEN",
    ] {
        assert!(help.contains(name), "--help names {name}");
    }
}

#[test]
fn secrets_are_masked_in_the_log_and_readiness_follows_redis() {
    let mut redis = seawall_testkit::RedisServer::builder()
        .password("redis-password-123")
        .start()
        .expect("a throwaway redis-server starts (scripts/setup installs it)");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    command
        .env("SEAWALL_ADMIN_TOKEN", "super-secret-admin-token")
        .env(
            "REDIS_URL",
            format!("redis://:redis-password-123@{}/0", redis.addr()),
        );
    let running = start(command);
    let startup = running.startup.join("\n");
    assert!(startup.contains("effective configuration"), "{startup}");
    assert!(startup.contains("redis://:***@"), "{startup}");
    assert!(!startup.contains("redis-password-123"), "{startup}");
    assert!(!startup.contains("super-secret-admin-token"), "{startup}");

    // Start-up goes on without Redis after a few seconds, and a PING on a
    // busy machine can miss the check's 1 s: ready once it answers.
    wait_for_readiness(running.addr, "HTTP/1.1 200", "redis:responseTime");

    redis.kill().expect("kill redis");
    wait_for_readiness(running.addr, "HTTP/1.1 503", "failing: redis:responseTime");

    running.signal(Signal::SIGTERM);
    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
}

#[test]
fn every_log_line_of_a_request_carries_its_id_and_no_credential() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    // sqlx logs every statement at trace: lines written inside the request.
    command
        .args(["--log", "info,seawall_api=debug,sqlx::query=trace"])
        .env("SEAWALL_ADMIN_TOKEN", "admin-token-for-the-log-test");
    let running = start(command);
    let mut stream = TcpStream::connect(running.addr).expect("connect");
    stream
        .set_read_timeout(Some(wait::patience()))
        .expect("timeout");
    write!(
        stream,
        "GET /api/review/today?user_id=1 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         x-request-id: log-test-7\r\nAuthorization: Bearer credential-never-logged\r\n\
         Cookie: session=cookie-never-logged\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    running.signal(Signal::SIGTERM);
    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
    let text = log.join("\n");
    assert!(!text.contains("never-logged"), "{text}");

    // Every line written under the request's span: the statements and the
    // closing line with status and latency.
    let lines: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["span"]["name"] == "request")
        .collect();
    assert!(
        lines.iter().any(|line| line["target"] == "sqlx::query"),
        "no statement logged inside the request: {text}"
    );
    for line in &lines {
        assert_eq!(line["span"]["request_id"], "log-test-7", "{line}");
        assert_eq!(line["span"]["route"], "/api/review/today", "{line}");
    }
    let finished = lines
        .iter()
        .find(|line| line["fields"]["message"] == "request finished")
        .unwrap_or_else(|| panic!("no closing line: {text}"));
    assert_eq!(finished["fields"]["status"], 200, "{finished}");
    assert!(finished["fields"]["latency_ms"].is_number(), "{finished}");
}

/// The closing lines of the requests to `/livez` that `headers` (whole
/// lines) went with, on a service that trusts `proxies` (none when empty),
/// logging requests at debug as JSON.
fn closing_lines(proxies: &str, headers: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = command(dir.path());
    command.args(["--log", "info,seawall_api=debug"]);
    if !proxies.is_empty() {
        command.env("SEAWALL_TRUSTED_PROXIES", proxies);
    }
    let running = start(command);
    let response = send(running.addr, "GET", "/livez", headers, None);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    running.signal(Signal::SIGTERM);
    let (code, log) = running.wait();
    assert_eq!(code, 0, "{log:?}");
    log.iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["fields"]["message"] == "request finished")
        .collect()
}

#[test]
fn a_trusted_proxys_trace_id_is_in_every_line_of_the_request_and_no_one_elses_is() {
    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let headers = format!("traceparent: 00-{TRACE}-b7ad6b7169203331-01\r\n");
    // Not exporting: the caller's trace id is all there is, and is logged.
    let trusted = closing_lines("127.0.0.1/32", &headers);
    let [line] = trusted.as_slice() else {
        panic!("one closing line: {trusted:?}");
    };
    assert_eq!(line["span"]["trace_id"], TRACE, "{line}");
    assert!(line["span"]["request_id"].is_string(), "{line}");
    // The same request from an address no one trusts: ignored.
    let untrusted = closing_lines("10.0.0.0/8", &headers);
    let [line] = untrusted.as_slice() else {
        panic!("one closing line: {untrusted:?}");
    };
    assert!(line["span"].get("trace_id").is_none(), "{line}");
    // A malformed traceparent from a trusted proxy: ignored too.
    let malformed = closing_lines("127.0.0.1/32", "traceparent: 00-not-a-trace-01\r\n");
    let [line] = malformed.as_slice() else {
        panic!("one closing line: {malformed:?}");
    };
    assert!(line["span"].get("trace_id").is_none(), "{line}");
}

/// Admin inputs that reach the log, in both formats: keys and patterns with
/// line breaks are refused before anything is written, and a key that is
/// accepted however it is spelt stays one field of one line.
#[test]
fn admin_inputs_cannot_forge_log_lines_or_fields() {
    // Accepted: no control characters, but quotes, spaces and `=` enough
    // to look like more fields, or a whole line, if written bare.
    let hostile = r#"x" 2026-01-01T00:00:00Z ERROR forged=yes msg="evil"#;
    let hostile_query: String = hostile.bytes().map(|byte| format!("%{byte:02X}")).collect();
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = command_logging(dir.path(), format);
        command.env("SEAWALL_ADMIN_TOKEN", "admin-token-for-the-log-test");
        let running = start(command);
        let auth = "Authorization: Bearer admin-token-for-the-log-test\r\n";
        let refused = [
            (
                "POST",
                "/api/rate-limit/block".to_owned(),
                Some(r#"{"limiter":"api","key":"x\nFORGED ERROR line","seconds":60}"#),
            ),
            (
                "DELETE",
                "/api/rate-limit/block?limiter=api&key=x%0AFORGED%20ERROR%20line".to_owned(),
                None,
            ),
            (
                "DELETE",
                "/api/rate-limit?limiter=api&key=x%0D%0AFORGED%20ERROR%20line".to_owned(),
                None,
            ),
            (
                "DELETE",
                "/api/cache".to_owned(),
                Some(r#"{"pattern":"x\nFORGED ERROR line","type":"all"}"#),
            ),
        ];
        for (method, path, body) in &refused {
            let response = send(running.addr, method, path, auth, *body);
            assert!(
                response.starts_with("HTTP/1.1 422"),
                "{method} {path}: {response}"
            );
        }
        let block =
            serde_json::json!({"limiter": "api", "key": hostile, "seconds": 60}).to_string();
        let accepted = [
            (
                "POST",
                "/api/rate-limit/block".to_owned(),
                Some(block.as_str()),
            ),
            (
                "DELETE",
                format!("/api/rate-limit/block?limiter=api&key={hostile_query}"),
                None,
            ),
        ];
        for (method, path, body) in &accepted {
            let response = send(running.addr, method, path, auth, *body);
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "{method} {path}: {response}"
            );
        }

        running.signal(Signal::SIGTERM);
        let (code, log) = running.wait();
        assert_eq!(code, 0, "{log:?}");
        let text = log.join("\n");
        assert!(
            !text.contains("FORGED"),
            "a refused input was logged: {text}"
        );
        let admin_lines: Vec<&String> = log
            .iter()
            .filter(|line| line.contains("by an admin"))
            .collect();
        assert_eq!(admin_lines.len(), 2, "blocked and unblocked: {text}");
        for line in &log {
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|_| panic!("one JSON record per line: {line}"));
            } else {
                let stamp = line.get(..20).unwrap_or_default();
                assert!(
                    stamp.starts_with("20") && stamp.as_bytes().get(10) == Some(&b'T'),
                    "every line starts with its own timestamp: {line}"
                );
            }
        }
        for line in admin_lines {
            let key = if format == "json" {
                let record: serde_json::Value = serde_json::from_str(line).expect("JSON");
                record["fields"]["key"]
                    .as_str()
                    .expect("a key field")
                    .to_owned()
            } else {
                // The value is quoted and escaped: it reads back as the key,
                // and nothing outside the quotes looks like its parts.
                let start = line.find(" key=\"").expect("a quoted key field") + 5;
                let end = quoted_end(&line[start..])
                    .map(|end| start + end)
                    .expect("a closing quote");
                assert!(
                    !line[..start].contains("forged") && !line[end..].contains("forged"),
                    "a forged field: {line}"
                );
                serde_json::from_str(&line[start..end]).expect("an escaped string")
            };
            assert_eq!(key, hostile, "{line}");
        }
    }
}

/// Where the quoted string that `text` starts with ends (past its closing
/// quote), skipping escaped characters.
fn quoted_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in text.char_indices().skip(1) {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return Some(at + 1),
            _ => {}
        }
    }
    None
}
