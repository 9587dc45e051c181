//! `seawall-overload`: a closed-loop load generator for seawall-api under
//! overload, measuring what the service admits, what it sheds and how its
//! admission limit moves, with an optional database slowdown mid-run.
//!
//! Each of `--connections` keep-alive HTTP/1.1 connections is a closed loop,
//! like wrk: it sends a request, reads the whole answer, records it and sends
//! the next at once (a 503's `Retry-After` is not honoured). A broken
//! connection is opened again and counted as an error; a request unanswered
//! after 30 s counts as a timeout and its connection is replaced. The mix is
//! the service's mixed workload (`mixed.lua` in `scripts/cache-workload`):
//! a uniformly random user of 1,000; 30 % `GET /api/review/today`, 30 %
//! `GET /api/analytics/stats`, 30 % `GET /api/content` (a uniform page of
//! 250) and 10 % `POST /api/review/complete` of one of the 200 contents the
//! demo dataset schedules for that user.
//!
//! Beside the load, on connections of their own: a probe sends `GET /livez`
//! then `GET /readyz` every 100 ms (any answer but 200 is a shed probe, and
//! the target is none), and a sampler reads `/metrics` every 250 ms for
//! `adaptive_limit{limiter="http"}` (absent under static admission) and
//! `http_requests_in_flight`.
//!
//! All connections are opened first, 64 at a time; then `--warmup` seconds
//! of load are not recorded, and the `--duration` seconds after are. Time 0
//! is the start of that measured window. A response is recorded in the second
//! it finished: its status class (2xx admitted, 503 shed, 4xx, other 5xx) and,
//! for a 2xx, its latency from sending to the end of the body. With
//! `--slowdown-pid`, `kill -USR1 <pid>` is sent at `--slowdown-at` seconds to
//! switch the service's database slowdown on and again `--slowdown-for`
//! seconds later to switch it off.
//!
//! Derived: goodput (2xx per second), the shed share (503s over all
//! responses), admitted p50/p99/max, probe answers and failures, the limit's
//! min/median/max; with a slowdown, goodput before, during and after it and
//! the recovery (seconds from its end until three seconds in a row reach
//! 90 % of the goodput before). The limit has settled after a change (the
//! measured start, the slowdown on, off) once its samples stay within ±10 %
//! of their own mean for 3 s; the settle time is when that stretch starts.
//!
//! It prints a summary and a Markdown table row (a second with a slowdown);
//! `--json` writes every figure, the per-second timeline and the limit
//! samples.
//!
//! ```sh
//! cargo run --release -p seawall-benches --bin seawall-overload -- \
//!     --url http://127.0.0.1:8080 --connections 1000 --warmup 5 --duration 60 \
//!     --slowdown-pid "$server_pid" --slowdown-at 20 --slowdown-for 20
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command, value_parser};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::{Serialize, Serializer};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// A request unanswered this long counts as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection not established this long counts as a connect error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once before the warm-up: a saturated service
/// accepts slowly, and a thousand at once would overflow its backlog.
const CONNECTING_AT_ONCE: usize = 64;
/// A loop whose connect failed waits this long before trying again, so a
/// refusing service does not turn the generator into a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const PROBE_EVERY: Duration = Duration::from_millis(100);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The longest latency a histogram holds, in microseconds (above the
/// request timeout).
const LATENCY_MAX_US: u64 = 60_000_000;

/// The demo dataset `mixed.lua` is written for.
const USERS: u64 = 1000;
const CONTENTS: u64 = 5000;
const SCHEDULES_PER_USER: u64 = 200;
const PAGES: u64 = 250;
const PAGE_SIZE: u64 = 20;

/// Goodput has recovered once this share of the goodput before the
/// slowdown is reached for [`RECOVERED_FOR`] seconds in a row.
const RECOVERED_SHARE: f64 = 0.9;
const RECOVERED_FOR: usize = 3;
/// The limit has settled once its samples stay within this share of their
/// own mean for [`SETTLED_FOR`].
const SETTLED_BAND: f64 = 0.10;
const SETTLED_FOR: f64 = 3.0;

fn command() -> Command {
    Command::new("seawall-overload")
        .about("Drives seawall-api with closed-loop connections (the mixed workload) and reports goodput, shedding, probe answers and the adaptive limit, optionally across a database slowdown")
        .arg(Arg::new("url").long("url").required(true).help("The service, e.g. http://127.0.0.1:8080"))
        .arg(Arg::new("connections").long("connections").default_value("1000")
            .value_parser(value_parser!(u64).range(1..=100_000))
            .help("Closed-loop keep-alive connections"))
        .arg(Arg::new("warmup").long("warmup").default_value("5").value_parser(value_parser!(u64))
            .help("Seconds of load before the measured window"))
        .arg(Arg::new("duration").long("duration").default_value("60")
            .value_parser(value_parser!(u64).range(1..=86_400))
            .help("Seconds measured"))
        .arg(Arg::new("threads").long("threads").default_value("2")
            .value_parser(value_parser!(u64).range(1..=256))
            .help("Worker threads of the generator's runtime"))
        .arg(Arg::new("label").long("label").default_value("run").help("A name for the report"))
        .arg(Arg::new("json").long("json").value_parser(value_parser!(PathBuf))
            .help("Write every figure, the per-second timeline and the limit samples as JSON to this file"))
        .arg(Arg::new("timeline").long("timeline").action(ArgAction::SetTrue)
            .help("Also print the per-second timeline"))
        .arg(Arg::new("seed").long("seed").default_value("1").value_parser(value_parser!(u64))
            .help("Seed of the connections' request sequences"))
        .arg(Arg::new("slowdown-pid").long("slowdown-pid").value_parser(value_parser!(u32))
            .help("The service's pid: `kill -USR1` switches its database slowdown on, then off"))
        .arg(Arg::new("slowdown-at").long("slowdown-at").value_parser(value_parser!(u64))
            .requires("slowdown-pid")
            .help("Seconds into the measured window the slowdown starts [default: 20]"))
        .arg(Arg::new("slowdown-for").long("slowdown-for").value_parser(value_parser!(u64))
            .requires("slowdown-pid")
            .help("Seconds the slowdown lasts [default: 20]"))
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let plan = match Plan::from_matches(&matches) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("seawall-overload: {error}");
            return ExitCode::from(2);
        }
    };
    warn_if_few_descriptors(plan.connections);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("seawall-overload: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(&plan));
    // Connection drivers of abandoned requests may still wait on the service.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            eprintln!("seawall-overload: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = std::io::stdout().write_all(render(&report, plan.timeline).as_bytes()) {
        eprintln!("seawall-overload: cannot write the report: {error}");
        return ExitCode::FAILURE;
    }
    if let Some(path) = &plan.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|error| error.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|error| error.to_string()));
        if let Err(error) = written {
            eprintln!("seawall-overload: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// What to run, from the command line.
struct Plan {
    url: String,
    addr: SocketAddr,
    host: HeaderValue,
    connections: u64,
    threads: usize,
    warmup: Duration,
    duration: u64,
    label: String,
    json: Option<PathBuf>,
    timeline: bool,
    seed: u64,
    slowdown: Option<Slowdown>,
}

/// When the service's database slowdown is switched on and off.
#[derive(Debug, Clone, Copy)]
struct Slowdown {
    pid: u32,
    /// Seconds into the measured window.
    at: u64,
    lasting: u64,
}

impl Slowdown {
    fn end(self) -> u64 {
        self.at + self.lasting
    }
}

impl Plan {
    fn from_matches(matches: &clap::ArgMatches) -> Result<Self, String> {
        let url = matches
            .get_one::<String>("url")
            .expect("required")
            .trim_end_matches('/')
            .to_owned();
        let (addr, authority) = resolve(&url)?;
        let host =
            HeaderValue::from_str(&authority).map_err(|error| format!("--url {url}: {error}"))?;
        let duration = *matches.get_one::<u64>("duration").expect("defaulted");
        let slowdown = match matches.get_one::<u32>("slowdown-pid") {
            None => None,
            Some(&pid) => {
                let slowdown = Slowdown {
                    pid,
                    at: matches.get_one::<u64>("slowdown-at").copied().unwrap_or(20),
                    lasting: matches
                        .get_one::<u64>("slowdown-for")
                        .copied()
                        .unwrap_or(20),
                };
                if slowdown.at == 0 || slowdown.lasting == 0 || slowdown.end() > duration {
                    return Err(format!(
                        "the slowdown (from {} s for {} s) must start after 0 and end by --duration ({duration} s)",
                        slowdown.at, slowdown.lasting
                    ));
                }
                signal(pid, "-0").map_err(|error| format!("--slowdown-pid {pid}: {error}"))?;
                Some(slowdown)
            }
        };
        Ok(Self {
            url,
            addr,
            host,
            connections: *matches.get_one::<u64>("connections").expect("defaulted"),
            threads: usize::try_from(*matches.get_one::<u64>("threads").expect("defaulted"))
                .unwrap_or(1),
            warmup: Duration::from_secs(*matches.get_one::<u64>("warmup").expect("defaulted")),
            duration,
            label: matches
                .get_one::<String>("label")
                .expect("defaulted")
                .clone(),
            json: matches.get_one::<PathBuf>("json").cloned(),
            timeline: matches.get_flag("timeline"),
            seed: *matches.get_one::<u64>("seed").expect("defaulted"),
            slowdown,
        })
    }
}

/// The socket address and the `Host` of an `http://host:port` URL.
fn resolve(url: &str) -> Result<(SocketAddr, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|error| format!("--url {url}: {error}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {url}: only http:// is supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--url {url}: no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))
        .map_err(|error| format!("--url {url}: {error}"))?
        .next()
        .ok_or_else(|| format!("--url {url}: the host has no address"))?;
    Ok((addr, authority.as_str().to_owned()))
}

/// Sends `kill <flag> <pid>`.
fn signal(pid: u32, flag: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .arg(flag)
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|error| format!("cannot run kill: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {flag} {pid} failed ({status})"))
    }
}

/// Each connection holds a descriptor; too few fail as connect errors.
fn warn_if_few_descriptors(connections: u64) {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<u64>().ok())
        });
    if let Some(limit) = limit.filter(|&limit| limit < connections + 32) {
        eprintln!(
            "seawall-overload: warning: {limit} open files allowed for {connections} connections; raise it with `ulimit -n`"
        );
    }
}

// ---------------------------------------------------------------------------
// The requests

/// Picks the requests of the mixed workload for one connection.
struct Mix {
    rng: fastrand::Rng,
    host: HeaderValue,
}

impl Mix {
    fn next(&mut self) -> Request<Full<Bytes>> {
        let user = self.rng.u64(1..=USERS);
        let (method, path, body) = match self.rng.u32(0..100) {
            0..30 => (
                Method::GET,
                format!("/api/review/today?user_id={user}"),
                None,
            ),
            30..60 => (
                Method::GET,
                format!("/api/analytics/stats?user_id={user}"),
                None,
            ),
            60..90 => {
                let page = self.rng.u64(1..=PAGES);
                (
                    Method::GET,
                    format!("/api/content?page={page}&page_size={PAGE_SIZE}"),
                    None,
                )
            }
            _ => {
                let content = (user * 37 + self.rng.u64(0..SCHEDULES_PER_USER)) % CONTENTS + 1;
                let rating = self.rng.u8(0..=5);
                let duration = self.rng.u32(1_500..=60_000);
                let body = format!(
                    r#"{{"user_id":{user},"content_id":{content},"rating":{rating},"duration_ms":{duration}}}"#
                );
                (Method::POST, "/api/review/complete".to_owned(), Some(body))
            }
        };
        let is_post = body.is_some();
        let mut request = Request::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = Uri::try_from(path).expect("the mix writes valid paths");
        request.headers_mut().insert(HOST, self.host.clone());
        if is_post {
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request
    }
}

fn get(path: &'static str, host: &HeaderValue) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = Uri::from_static(path);
    request.headers_mut().insert(HOST, host.clone());
    request
}

// ---------------------------------------------------------------------------
// Connections and exchanges

type Sender = SendRequest<Full<Bytes>>;

/// Opens a keep-alive HTTP/1.1 connection, giving up at `deadline`.
async fn connect(addr: SocketAddr, deadline: Instant) -> Result<Sender, String> {
    let deadline = deadline.min(Instant::now() + CONNECT_TIMEOUT);
    let stream = tokio::time::timeout_at(deadline.into(), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|error| error.to_string())?;
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(async move {
        // Ends with an error only when the service goes away, which the
        // next request on the connection reports.
        let _ = connection.await;
    });
    Ok(sender)
}

/// How one request ended.
enum Exchange {
    Answered {
        status: StatusCode,
        sent: Instant,
        done: Instant,
        /// The service will close the connection (`Connection: close`).
        closing: bool,
        body: Bytes,
    },
    /// The connection broke.
    Failed(hyper::Error),
    /// No answer within [`REQUEST_TIMEOUT`].
    TimedOut,
    /// Still unanswered when the run ended: not counted.
    Cut,
}

/// Sends `request` and reads the whole answer (keeping the body only when
/// `keep_body`, so the load's bodies are dropped frame by frame).
async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
    end: Instant,
    keep_body: bool,
) -> Exchange {
    let deadline = (Instant::now() + REQUEST_TIMEOUT).min(end);
    let attempt = async {
        sender.ready().await?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let closing = response
            .headers()
            .get(CONNECTION)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut body = response.into_body();
        let body = if keep_body {
            body.collect().await?.to_bytes()
        } else {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Bytes::new()
        };
        Ok::<_, hyper::Error>((status, sent, closing, body))
    };
    match tokio::time::timeout_at(deadline.into(), attempt).await {
        Ok(Ok((status, sent, closing, body))) => Exchange::Answered {
            status,
            sent,
            done: Instant::now(),
            closing,
            body,
        },
        Ok(Err(error)) => Exchange::Failed(error),
        Err(_) if deadline >= end => Exchange::Cut,
        Err(_) => Exchange::TimedOut,
    }
}

// ---------------------------------------------------------------------------
// Recording

/// The run's clock: load starts at `start`, is recorded from `measure_from`
/// and stops at `end`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    measure_from: Instant,
    end: Instant,
}

impl Clock {
    /// The measured second `at` falls in, if any.
    fn second(self, at: Instant) -> Option<usize> {
        if at < self.measure_from || at >= self.end {
            return None;
        }
        usize::try_from(at.duration_since(self.measure_from).as_secs()).ok()
    }

    /// Seconds since the measured window started, negative before it.
    fn offset(self, at: Instant) -> f64 {
        if at >= self.measure_from {
            at.duration_since(self.measure_from).as_secs_f64()
        } else {
            -self.measure_from.duration_since(at).as_secs_f64()
        }
    }
}

/// What happened to the load in one measured second.
#[derive(Debug, Clone)]
struct Second {
    ok: u64,
    shed: u64,
    client_errors: u64,
    server_errors: u64,
    other_statuses: u64,
    connect_errors: u64,
    io_errors: u64,
    timeouts: u64,
    ok_latency: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            ok: 0,
            shed: 0,
            client_errors: 0,
            server_errors: 0,
            other_statuses: 0,
            connect_errors: 0,
            io_errors: 0,
            timeouts: 0,
            // Two digits suffice for a second's percentiles and keep an
            // hour's seconds small; the whole window's histogram has three.
            ok_latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid bounds"),
        }
    }
}

/// The load's record: one histogram of admitted latency and the seconds.
struct Book {
    admitted: Histogram<u64>,
    seconds: Vec<Second>,
}

/// A transport failure of the load.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Connect,
    Io,
    Timeout,
}

/// The load's record behind one lock. All responses of a moment land in the
/// same second, so a lock per second would not spread the contention; the
/// lock counts how often it was found taken, which the report shows.
struct Recorder {
    clock: Clock,
    book: Mutex<Book>,
    records: AtomicU64,
    contended: AtomicU64,
    reconnects: AtomicU64,
}

impl Recorder {
    fn new(clock: Clock, seconds: u64) -> Self {
        let seconds = usize::try_from(seconds).unwrap_or(0);
        Self {
            clock,
            book: Mutex::new(Book {
                admitted: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds"),
                seconds: vec![Second::new(); seconds],
            }),
            records: AtomicU64::new(0),
            contended: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    fn with_second(&self, at: Instant, record: impl FnOnce(&mut Book, usize)) {
        let Some(index) = self.clock.second(at) else {
            return;
        };
        self.records.fetch_add(1, Ordering::Relaxed);
        let mut book = match self.book.try_lock() {
            Ok(book) => book,
            Err(TryLockError::WouldBlock) => {
                self.contended.fetch_add(1, Ordering::Relaxed);
                self.book.lock().unwrap_or_else(PoisonError::into_inner)
            }
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        if index < book.seconds.len() {
            record(&mut book, index);
        }
    }

    fn response(&self, status: StatusCode, sent: Instant, done: Instant) {
        self.with_second(done, |book, index| {
            let second = &mut book.seconds[index];
            match status.as_u16() {
                200..=299 => {
                    let micros = u64::try_from(done.duration_since(sent).as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    second.ok += 1;
                    second.ok_latency.saturating_record(micros);
                    book.admitted.saturating_record(micros);
                }
                503 => second.shed += 1,
                400..=499 => second.client_errors += 1,
                500..=599 => second.server_errors += 1,
                _ => second.other_statuses += 1,
            }
        });
    }

    fn failure(&self, failure: Failure) {
        self.with_second(Instant::now(), |book, index| {
            let second = &mut book.seconds[index];
            match failure {
                Failure::Connect => second.connect_errors += 1,
                Failure::Io => second.io_errors += 1,
                Failure::Timeout => second.timeouts += 1,
            }
        });
    }
}

// ---------------------------------------------------------------------------
// The tasks

/// One closed loop: a request, its whole answer, the next, until the end.
async fn closed_loop(
    addr: SocketAddr,
    mut mix: Mix,
    mut sender: Option<Sender>,
    recorder: Arc<Recorder>,
) {
    let end = recorder.clock.end;
    while Instant::now() < end {
        let mut connection = match sender.take() {
            Some(connection) => connection,
            None => match connect(addr, end).await {
                Ok(connection) => connection,
                Err(_) => {
                    recorder.failure(Failure::Connect);
                    tokio::time::sleep_until((Instant::now() + RECONNECT_PAUSE).min(end).into())
                        .await;
                    continue;
                }
            },
        };
        match exchange(&mut connection, mix.next(), end, false).await {
            Exchange::Answered {
                status,
                sent,
                done,
                closing,
                body: _,
            } => {
                recorder.response(status, sent, done);
                if closing {
                    recorder.reconnects.fetch_add(1, Ordering::Relaxed);
                } else {
                    sender = Some(connection);
                }
            }
            Exchange::Failed(_) => recorder.failure(Failure::Io),
            Exchange::TimedOut => recorder.failure(Failure::Timeout),
            Exchange::Cut => break,
        }
    }
}

/// One probe's answer.
#[derive(Debug, Clone, Serialize)]
struct ProbeAnswer {
    /// Seconds since the measured window started.
    t: f64,
    path: &'static str,
    /// `None` when the connection failed or the probe timed out.
    status: Option<u16>,
    latency_us: u64,
}

/// `GET /livez` then `GET /readyz` every [`PROBE_EVERY`], as an orchestrator
/// would, on a connection of its own.
async fn probe(addr: SocketAddr, host: HeaderValue, clock: Clock) -> Vec<ProbeAnswer> {
    let mut answers = Vec::new();
    let mut sender: Option<Sender> = None;
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if Instant::now() >= clock.end {
            return answers;
        }
        for path in ["/livez", "/readyz"] {
            let began = Instant::now();
            let mut connection = match sender.take() {
                Some(connection) => connection,
                None => match connect(addr, clock.end).await {
                    Ok(connection) => connection,
                    Err(_) => {
                        answers.push(ProbeAnswer {
                            t: clock.offset(began),
                            path,
                            status: None,
                            latency_us: micros(began.elapsed()),
                        });
                        continue;
                    }
                },
            };
            let (status, sent, done) =
                match exchange(&mut connection, get(path, &host), clock.end, false).await {
                    Exchange::Answered {
                        status,
                        sent,
                        done,
                        closing,
                        body: _,
                    } => {
                        if !closing {
                            sender = Some(connection);
                        }
                        (Some(status.as_u16()), sent, done)
                    }
                    Exchange::Failed(_) | Exchange::TimedOut => (None, began, Instant::now()),
                    Exchange::Cut => return answers,
                };
            answers.push(ProbeAnswer {
                t: clock.offset(done),
                path,
                status,
                latency_us: micros(done.duration_since(sent)),
            });
        }
    }
}

/// One reading of the service's `/metrics`.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    /// Seconds since the measured window started (negative in the warm-up).
    t: f64,
    /// `adaptive_limit{limiter="http"}`; absent under static admission.
    limit: Option<f64>,
    in_flight: Option<f64>,
}

/// Reads `/metrics` every [`SAMPLE_EVERY`] on a connection of its own.
/// Returns the samples and how many reads failed.
async fn sample(addr: SocketAddr, host: HeaderValue, clock: Clock) -> (Vec<Sample>, u64) {
    let mut samples = Vec::new();
    let mut failures = 0;
    let mut sender: Option<Sender> = None;
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if Instant::now() >= clock.end {
            return (samples, failures);
        }
        let mut connection = match sender.take() {
            Some(connection) => connection,
            None => match connect(addr, clock.end).await {
                Ok(connection) => connection,
                Err(_) => {
                    failures += 1;
                    continue;
                }
            },
        };
        match exchange(&mut connection, get("/metrics", &host), clock.end, true).await {
            Exchange::Answered {
                status,
                done,
                closing,
                body,
                ..
            } => {
                if !closing {
                    sender = Some(connection);
                }
                if status == StatusCode::OK {
                    let (limit, in_flight) = parse_metrics(&String::from_utf8_lossy(&body));
                    samples.push(Sample {
                        t: clock.offset(done),
                        limit,
                        in_flight,
                    });
                } else {
                    failures += 1;
                }
            }
            Exchange::Failed(_) | Exchange::TimedOut => failures += 1,
            Exchange::Cut => return (samples, failures),
        }
    }
}

/// `adaptive_limit{limiter="http"}` and `http_requests_in_flight` from a
/// Prometheus text exposition.
fn parse_metrics(text: &str) -> (Option<f64>, Option<f64>) {
    let value = |rest: &str| {
        rest.split_whitespace()
            .next()
            .and_then(|value| value.parse::<f64>().ok())
    };
    let mut limit = None;
    let mut in_flight = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("adaptive_limit{") {
            if let Some((labels, rest)) = rest.split_once('}')
                && labels.split(',').any(|label| label == r#"limiter="http""#)
            {
                limit = value(rest);
            }
        } else if let Some(rest) = line.strip_prefix("http_requests_in_flight")
            && (rest.starts_with(' ') || rest.starts_with("{}"))
        {
            in_flight = value(rest.trim_start_matches("{}"));
        }
    }
    (limit, in_flight)
}

/// One `kill -USR1` sent.
#[derive(Debug, Clone, Serialize)]
struct Signal {
    /// Seconds since the measured window started.
    t: f64,
    /// `on` or `off`.
    switch: &'static str,
    error: Option<String>,
}

/// Switches the service's database slowdown on, then off.
async fn slow_down(slowdown: Slowdown, clock: Clock) -> Vec<Signal> {
    let mut signals = Vec::new();
    for (at, switch) in [(slowdown.at, "on"), (slowdown.end(), "off")] {
        tokio::time::sleep_until((clock.measure_from + Duration::from_secs(at)).into()).await;
        let sent = Instant::now();
        let error = tokio::task::spawn_blocking(move || signal(slowdown.pid, "-USR1"))
            .await
            .map_err(|error| error.to_string())
            .and_then(|sent| sent)
            .err();
        if let Some(error) = &error {
            eprintln!("seawall-overload: slowdown {switch}: {error}");
        }
        signals.push(Signal {
            t: clock.offset(sent),
            switch,
            error,
        });
    }
    signals
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// The run

/// What the tasks brought back, before anything is derived.
struct Raw {
    connected: u64,
    connect_s: f64,
    book: Book,
    records: u64,
    contended: u64,
    reconnects: u64,
    probes: Vec<ProbeAnswer>,
    samples: Vec<Sample>,
    sample_failures: u64,
    signals: Vec<Signal>,
}

async fn run(plan: &Plan) -> Result<Report, String> {
    // Unreachable at the start is an error, not a run of connect errors.
    let far = Instant::now() + REQUEST_TIMEOUT;
    let mut checker = connect(plan.addr, far)
        .await
        .map_err(|error| format!("{} is unreachable: {error}", plan.url))?;
    match exchange(&mut checker, get("/livez", &plan.host), far, false).await {
        Exchange::Answered { status, .. } if status == StatusCode::OK => {}
        Exchange::Answered { status, .. } => {
            return Err(format!("{}/livez answered {status}", plan.url));
        }
        Exchange::Failed(error) => return Err(format!("{} is unreachable: {error}", plan.url)),
        Exchange::TimedOut | Exchange::Cut => {
            return Err(format!("{}/livez did not answer", plan.url));
        }
    }
    drop(checker);

    eprintln!(
        "seawall-overload: opening {} connections to {}",
        plan.connections, plan.url
    );
    let connecting = Instant::now();
    let mut senders = Vec::new();
    let mut pending = JoinSet::new();
    let mut failed = 0_u64;
    for _ in 0..plan.connections {
        if pending.len() >= CONNECTING_AT_ONCE
            && let Some(opened) = pending.join_next().await
        {
            match opened {
                Ok(Ok(sender)) => senders.push(sender),
                _ => failed += 1,
            }
        }
        let addr = plan.addr;
        pending.spawn(async move { connect(addr, Instant::now() + CONNECT_TIMEOUT).await });
    }
    while let Some(opened) = pending.join_next().await {
        match opened {
            Ok(Ok(sender)) => senders.push(sender),
            _ => failed += 1,
        }
    }
    let connected = senders.len() as u64;
    let connect_s = connecting.elapsed().as_secs_f64();
    if connected == 0 {
        return Err(format!("no connection to {} could be opened", plan.url));
    }
    eprintln!(
        "seawall-overload: {connected} connected in {connect_s:.1} s ({failed} failed, retried in the loops); {} s warm-up, {} s measured",
        plan.warmup.as_secs(),
        plan.duration
    );

    let measure_from = Instant::now() + plan.warmup;
    let clock = Clock {
        measure_from,
        end: measure_from + Duration::from_secs(plan.duration),
    };
    let recorder = Arc::new(Recorder::new(clock, plan.duration));
    let mut loops = JoinSet::new();
    let mut senders = senders.into_iter();
    for id in 0..plan.connections {
        let mix = Mix {
            rng: fastrand::Rng::with_seed(plan.seed.wrapping_mul(1_000_003).wrapping_add(id)),
            host: plan.host.clone(),
        };
        loops.spawn(closed_loop(
            plan.addr,
            mix,
            senders.next(),
            Arc::clone(&recorder),
        ));
    }
    let probes = tokio::spawn(probe(plan.addr, plan.host.clone(), clock));
    let samples = tokio::spawn(sample(plan.addr, plan.host.clone(), clock));
    let signals = plan
        .slowdown
        .map(|slowdown| tokio::spawn(slow_down(slowdown, clock)));
    while loops.join_next().await.is_some() {}
    let probes = probes.await.map_err(|error| error.to_string())?;
    let (samples, sample_failures) = samples.await.map_err(|error| error.to_string())?;
    let signals = match signals {
        Some(signals) => signals.await.map_err(|error| error.to_string())?,
        None => Vec::new(),
    };
    let recorder = Arc::into_inner(recorder).ok_or("a loop outlived the run")?;
    let raw = Raw {
        connected,
        connect_s,
        book: recorder
            .book
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
        records: recorder.records.into_inner(),
        contended: recorder.contended.into_inner(),
        reconnects: recorder.reconnects.into_inner(),
        probes,
        samples,
        sample_failures,
        signals,
    };
    Ok(derive(plan, raw))
}

// ---------------------------------------------------------------------------
// Derived figures

/// When the limit settled after a change.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Settle {
    /// No adaptive limit (static admission).
    Static,
    /// Not within the stretch up to the next change.
    Never,
    /// Seconds after the change.
    After(f64),
}

impl Serialize for Settle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Static => serializer.serialize_none(),
            Self::Never => serializer.serialize_str("never"),
            Self::After(seconds) => serializer.serialize_f64(*seconds),
        }
    }
}

impl std::fmt::Display for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static => f.write_str("-"),
            Self::Never => f.write_str("never"),
            Self::After(seconds) => write!(f, "{seconds:.2}"),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    url: String,
    connections: u64,
    threads: usize,
    warmup_s: u64,
    duration_s: u64,
    /// Connections open when the warm-up started, and how long opening took.
    connected_at_start: u64,
    connect_s: f64,
    /// Answers in the measured window, by class.
    responses: u64,
    ok: u64,
    shed: u64,
    client_errors: u64,
    server_errors: u64,
    other_statuses: u64,
    /// Transport failures in the measured window.
    connect_errors: u64,
    io_errors: u64,
    timeouts: u64,
    /// Connections the service closed (`Connection: close`), opened again.
    reconnects: u64,
    /// 2xx per second.
    goodput: f64,
    /// 503s over all responses, in percent.
    shed_percent: f64,
    /// Everything but 2xx and 503: 4xx, other 5xx, other statuses and
    /// transport failures.
    other_errors: u64,
    admitted: Latency,
    probes: Probes,
    limit: Option<Spread>,
    in_flight: Option<Spread>,
    settle_start_s: Settle,
    slowdown: Option<SlowdownReport>,
    /// Records taken by the recorder's lock, and how many found it taken.
    recorder_records: u64,
    recorder_contended: u64,
    metrics_failures: u64,
    timeline: Vec<SecondRow>,
    samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
struct Latency {
    count: u64,
    p50_ms: f64,
    p90_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

#[derive(Debug, Serialize)]
struct Probes {
    answers: u64,
    /// Answers other than 200, and failed probes.
    non_200: u64,
    /// `"<path> <status>"` (or `"<path> error"`) → count.
    by_status: BTreeMap<String, u64>,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
    mean: f64,
    samples: usize,
}

#[derive(Debug, Serialize)]
struct SlowdownReport {
    pid: u32,
    at_s: u64,
    for_s: u64,
    signals: Vec<Signal>,
    goodput_before: f64,
    goodput_during: f64,
    goodput_after: Option<f64>,
    /// Seconds after the slowdown's end; `None`: never.
    recovery_s: Option<u64>,
    settle_on_s: Settle,
    settle_off_s: Settle,
}

#[derive(Debug, Serialize)]
struct SecondRow {
    t: u64,
    ok: u64,
    shed: u64,
    /// Answers neither 2xx nor 503.
    other: u64,
    /// Transport failures.
    errors: u64,
    ok_p50_ms: Option<f64>,
    ok_p99_ms: Option<f64>,
    /// The last limit and in-flight count sampled in the second.
    limit: Option<f64>,
    in_flight: Option<f64>,
    probes_failed: u64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn derive(plan: &Plan, raw: Raw) -> Report {
    let Raw {
        connected,
        connect_s,
        book,
        records,
        contended,
        reconnects,
        probes,
        samples,
        sample_failures,
        signals,
    } = raw;
    let seconds = &book.seconds;
    let sum = |field: fn(&Second) -> u64| seconds.iter().map(field).sum::<u64>();
    let (ok, shed) = (sum(|s| s.ok), sum(|s| s.shed));
    let (client_errors, server_errors, other_statuses) = (
        sum(|s| s.client_errors),
        sum(|s| s.server_errors),
        sum(|s| s.other_statuses),
    );
    let (connect_errors, io_errors, timeouts) = (
        sum(|s| s.connect_errors),
        sum(|s| s.io_errors),
        sum(|s| s.timeouts),
    );
    let responses = ok + shed + client_errors + server_errors + other_statuses;
    let measured: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.t >= 0.0 && sample.t < plan.duration as f64)
        .collect();
    let limits: Vec<(f64, f64)> = measured
        .iter()
        .filter_map(|sample| sample.limit.map(|limit| (sample.t, limit)))
        .collect();
    let mut timeline: Vec<SecondRow> = seconds
        .iter()
        .zip(0..)
        .map(|(second, t)| {
            let quantile =
                |q: f64| (second.ok > 0).then(|| ms(second.ok_latency.value_at_quantile(q)));
            SecondRow {
                t,
                ok: second.ok,
                shed: second.shed,
                other: second.client_errors + second.server_errors + second.other_statuses,
                errors: second.connect_errors + second.io_errors + second.timeouts,
                ok_p50_ms: quantile(0.50),
                ok_p99_ms: quantile(0.99),
                limit: None,
                in_flight: None,
                probes_failed: 0,
            }
        })
        .collect();
    for sample in &measured {
        if let Some(row) = timeline.get_mut(whole_second(sample.t)) {
            row.limit = sample.limit.or(row.limit);
            row.in_flight = sample.in_flight.or(row.in_flight);
        }
    }
    let mut probe_latency =
        Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds");
    let mut by_status = BTreeMap::new();
    let mut non_200 = 0;
    let mut answers = 0;
    for answer in probes
        .iter()
        .filter(|answer| answer.t >= 0.0 && answer.t < plan.duration as f64)
    {
        answers += 1;
        probe_latency.saturating_record(answer.latency_us.max(1));
        let status = answer
            .status
            .map_or_else(|| "error".to_owned(), |status| status.to_string());
        *by_status
            .entry(format!("{} {status}", answer.path))
            .or_default() += 1;
        if answer.status != Some(200) {
            non_200 += 1;
            if let Some(row) = timeline.get_mut(whole_second(answer.t)) {
                row.probes_failed += 1;
            }
        }
    }
    let duration = plan.duration as f64;
    let per_second: Vec<u64> = seconds.iter().map(|second| second.ok).collect();
    let first_change = plan
        .slowdown
        .map_or(duration, |slowdown| slowdown.at as f64);
    let slowdown = plan.slowdown.map(|slowdown| {
        let (at, end) = (
            usize::try_from(slowdown.at).unwrap_or(0),
            usize::try_from(slowdown.end()).unwrap_or(0),
        );
        let before = mean(&per_second[..at.min(per_second.len())]);
        SlowdownReport {
            pid: slowdown.pid,
            at_s: slowdown.at,
            for_s: slowdown.lasting,
            signals,
            goodput_before: before,
            goodput_during: mean(per_second.get(at..end).unwrap_or_default()),
            goodput_after: (end < per_second.len()).then(|| mean(&per_second[end..])),
            recovery_s: recovery(&per_second, end, before)
                .and_then(|seconds| u64::try_from(seconds).ok()),
            settle_on_s: settle(&limits, slowdown.at as f64, slowdown.end() as f64),
            settle_off_s: settle(&limits, slowdown.end() as f64, duration),
        }
    });
    let admitted = &book.admitted;
    Report {
        label: plan.label.clone(),
        url: plan.url.clone(),
        connections: plan.connections,
        threads: plan.threads,
        warmup_s: plan.warmup.as_secs(),
        duration_s: plan.duration,
        connected_at_start: connected,
        connect_s,
        responses,
        ok,
        shed,
        client_errors,
        server_errors,
        other_statuses,
        connect_errors,
        io_errors,
        timeouts,
        reconnects,
        goodput: ok as f64 / duration,
        shed_percent: if responses > 0 {
            100.0 * shed as f64 / responses as f64
        } else {
            0.0
        },
        other_errors: client_errors
            + server_errors
            + other_statuses
            + connect_errors
            + io_errors
            + timeouts,
        admitted: Latency {
            count: admitted.len(),
            p50_ms: ms(admitted.value_at_quantile(0.50)),
            p90_ms: ms(admitted.value_at_quantile(0.90)),
            p95_ms: ms(admitted.value_at_quantile(0.95)),
            p99_ms: ms(admitted.value_at_quantile(0.99)),
            max_ms: ms(admitted.max()),
            mean_ms: admitted.mean() / 1000.0,
        },
        probes: Probes {
            answers,
            non_200,
            by_status,
            p99_ms: ms(probe_latency.value_at_quantile(0.99)),
            max_ms: ms(probe_latency.max()),
        },
        limit: spread(limits.iter().map(|&(_, limit)| limit)),
        in_flight: spread(measured.iter().filter_map(|sample| sample.in_flight)),
        settle_start_s: settle(&limits, 0.0, first_change),
        slowdown,
        recorder_records: records,
        recorder_contended: contended,
        metrics_failures: sample_failures,
        timeline,
        samples,
    }
}

/// The second `t` (≥ 0) falls in.
fn whole_second(t: f64) -> usize {
    // Truncation is the point; the value is small and non-negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let second = t.floor() as usize;
    second
}

fn mean(values: &[u64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<u64>() as f64 / values.len() as f64
}

fn spread(values: impl Iterator<Item = f64>) -> Option<Spread> {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(Spread {
        min: values[0],
        median: values[values.len() / 2],
        max: values[values.len() - 1],
        mean: values.iter().sum::<f64>() / values.len() as f64,
        samples: values.len(),
    })
}

/// Seconds from `from` until the first of [`RECOVERED_FOR`] seconds in a row
/// whose 2xx count reaches [`RECOVERED_SHARE`] of `before`.
fn recovery(per_second: &[u64], from: usize, before: f64) -> Option<usize> {
    let enough = RECOVERED_SHARE * before;
    (from..per_second.len())
        .find(|&start| {
            per_second
                .get(start..start + RECOVERED_FOR)
                .is_some_and(|run| run.iter().all(|&ok| ok as f64 >= enough))
        })
        .map(|start| start - from)
}

/// When the limit samples `(t, limit)` after a change at `from` first stay
/// within [`SETTLED_BAND`] of their own mean for [`SETTLED_FOR`] seconds,
/// looking no further than `until` (the next change or the end).
fn settle(limits: &[(f64, f64)], from: f64, until: f64) -> Settle {
    if limits.is_empty() {
        return Settle::Static;
    }
    // A stretch must reach this close to its end: the sampler's period.
    let slack = SAMPLE_EVERY.as_secs_f64();
    let after: Vec<(f64, f64)> = limits
        .iter()
        .copied()
        .filter(|&(t, _)| t >= from && t <= until)
        .collect();
    for (i, &(start, _)) in after.iter().enumerate() {
        if start + SETTLED_FOR > until + 1e-9 {
            break;
        }
        let stretch: Vec<f64> = after[i..]
            .iter()
            .take_while(|&&(t, _)| t <= start + SETTLED_FOR)
            .map(|&(_, limit)| limit)
            .collect();
        let reaches = after[i..]
            .iter()
            .take_while(|&&(t, _)| t <= start + SETTLED_FOR)
            .last()
            .is_some_and(|&(t, _)| t >= start + SETTLED_FOR - slack);
        if stretch.len() < 2 || !reaches {
            continue;
        }
        let centre = stretch.iter().sum::<f64>() / stretch.len() as f64;
        if stretch
            .iter()
            .all(|limit| (limit - centre).abs() <= SETTLED_BAND * centre.abs())
        {
            return Settle::After(start - from);
        }
    }
    Settle::Never
}

// ---------------------------------------------------------------------------
// The report

fn render(report: &Report, with_timeline: bool) -> String {
    let mut lines = vec![
        format!(
            "## {}: {} closed-loop connections, {} threads, {} s warm-up, {} s measured",
            report.label, report.connections, report.threads, report.warmup_s, report.duration_s
        ),
        String::new(),
        format!(
            "- connected {} of {} in {:.1} s before the warm-up",
            report.connected_at_start, report.connections, report.connect_s
        ),
        format!(
            "- responses: {} ({:.0}/s): 2xx {}, 503 shed {} ({:.1} %), 4xx {}, other 5xx {}, other {}",
            report.responses,
            report.responses as f64 / report.duration_s as f64,
            report.ok,
            report.shed,
            report.shed_percent,
            report.client_errors,
            report.server_errors,
            report.other_statuses
        ),
        format!(
            "- transport errors: connect {}, io {}, timeouts (> {} s) {}; reopened after Connection: close {}",
            report.connect_errors,
            report.io_errors,
            REQUEST_TIMEOUT.as_secs(),
            report.timeouts,
            report.reconnects
        ),
        format!(
            "- goodput {:.0} 2xx/s; admitted latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms",
            report.goodput,
            report.admitted.p50_ms,
            report.admitted.p99_ms,
            report.admitted.max_ms,
            report.admitted.mean_ms
        ),
        format!(
            "- probes: {} answers, {} non-200 ({}); latency p99 {:.2} ms, max {:.2} ms",
            report.probes.answers,
            report.probes.non_200,
            report
                .probes
                .by_status
                .iter()
                .map(|(status, count)| format!("{status} × {count}"))
                .collect::<Vec<_>>()
                .join(", "),
            report.probes.p99_ms,
            report.probes.max_ms
        ),
        match &report.limit {
            Some(limit) => format!(
                "- adaptive limit: min {:.0}, median {:.0}, max {:.0}, mean {:.1} ({} samples); {} the start",
                limit.min,
                limit.median,
                limit.max,
                limit.mean,
                limit.samples,
                settled(report.settle_start_s)
            ),
            None => "- adaptive limit: none sampled (static admission)".to_owned(),
        },
        match &report.in_flight {
            Some(in_flight) => format!(
                "- requests in flight: median {:.0}, mean {:.1}, max {:.0} ({} samples; {} /metrics reads failed)",
                in_flight.median,
                in_flight.mean,
                in_flight.max,
                in_flight.samples,
                report.metrics_failures
            ),
            None => format!(
                "- requests in flight: not sampled ({} /metrics reads failed)",
                report.metrics_failures
            ),
        },
    ];
    if let Some(slowdown) = &report.slowdown {
        let signals = slowdown
            .signals
            .iter()
            .map(|signal| match &signal.error {
                None => format!("{} at {:.2} s", signal.switch, signal.t),
                Some(error) => format!("{} at {:.2} s FAILED: {error}", signal.switch, signal.t),
            })
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!(
            "- slowdown (pid {}, {} s from {} s): {signals}; goodput before {:.0}, during {:.0}, after {} 2xx/s; recovery {}; limit {} on, {} off",
            slowdown.pid,
            slowdown.for_s,
            slowdown.at_s,
            slowdown.goodput_before,
            slowdown.goodput_during,
            optional(slowdown.goodput_after, 0),
            slowdown
                .recovery_s
                .map_or_else(|| "never".to_owned(), |seconds| format!("after {seconds} s")),
            settled(slowdown.settle_on_s),
            settled(slowdown.settle_off_s)
        ));
    }
    lines.push(format!(
        "- recorder lock: {} records, {} found it taken ({:.2} %)",
        report.recorder_records,
        report.recorder_contended,
        if report.recorder_records > 0 {
            100.0 * report.recorder_contended as f64 / report.recorder_records as f64
        } else {
            0.0
        }
    ));
    if with_timeline {
        lines.push(String::new());
        lines.push(
            "| s | 2xx | 503 | other | errors | 2xx p50 ms | 2xx p99 ms | limit | in flight | probes failed |"
                .to_owned(),
        );
        lines.push("|---|---|---|---|---|---|---|---|---|---|".to_owned());
        for row in &report.timeline {
            lines.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.t,
                row.ok,
                row.shed,
                row.other,
                row.errors,
                optional(row.ok_p50_ms, 2),
                optional(row.ok_p99_ms, 2),
                optional(row.limit, 0),
                optional(row.in_flight, 0),
                row.probes_failed
            ));
        }
    }
    lines.push(String::new());
    lines.push("| label | goodput 2xx/s | admitted p50 ms | admitted p99 ms | shed % | other errors | probes non-200 | limit (min/median/max) | settle s |".to_owned());
    lines.push("|---|---|---|---|---|---|---|---|---|".to_owned());
    lines.push(format!(
        "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} |",
        report.label,
        report.goodput,
        report.admitted.p50_ms,
        report.admitted.p99_ms,
        report.shed_percent,
        report.other_errors,
        report.probes.non_200,
        report.limit.map_or_else(
            || "-".to_owned(),
            |limit| format!("{:.0}/{:.0}/{:.0}", limit.min, limit.median, limit.max)
        ),
        report.settle_start_s
    ));
    if let Some(slowdown) = &report.slowdown {
        lines.push(String::new());
        lines.push(
            "| label | before 2xx/s | during 2xx/s | after 2xx/s | recovery s | settle on / off s |"
                .to_owned(),
        );
        lines.push("|---|---|---|---|---|---|".to_owned());
        lines.push(format!(
            "| {} | {:.0} | {:.0} | {} | {} | {} / {} |",
            report.label,
            slowdown.goodput_before,
            slowdown.goodput_during,
            optional(slowdown.goodput_after, 0),
            recovery_text(slowdown.recovery_s),
            slowdown.settle_on_s,
            slowdown.settle_off_s
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
}

/// The summary's words for a settle time.
fn settled(settle: Settle) -> String {
    match settle {
        Settle::Static => "no limit after".to_owned(),
        Settle::Never => "did not settle after".to_owned(),
        Settle::After(seconds) => format!("settled {seconds:.2} s after"),
    }
}

fn recovery_text(seconds: Option<u64>) -> String {
    seconds.map_or_else(|| "never".to_owned(), |seconds| seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_mixed_lua() {
        let mut mix = Mix {
            rng: fastrand::Rng::with_seed(3),
            host: HeaderValue::from_static("127.0.0.1:8080"),
        };
        let mut counts = BTreeMap::<&str, u32>::new();
        for _ in 0..20_000 {
            let request = mix.next();
            assert_eq!(request.headers()[HOST], "127.0.0.1:8080");
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let kind = match path.as_str() {
                "/api/review/today" | "/api/analytics/stats" => {
                    let user: u64 = query
                        .strip_prefix("user_id=")
                        .and_then(|user| user.parse().ok())
                        .unwrap_or(0);
                    assert!((1..=USERS).contains(&user), "{query}");
                    if path.ends_with("today") {
                        "today"
                    } else {
                        "stats"
                    }
                }
                "/api/content" => {
                    let page: u64 = query
                        .strip_prefix("page=")
                        .and_then(|rest| rest.strip_suffix("&page_size=20"))
                        .and_then(|page| page.parse().ok())
                        .unwrap_or(0);
                    assert!((1..=PAGES).contains(&page), "{query}");
                    "content"
                }
                "/api/review/complete" => {
                    assert_eq!(request.method(), Method::POST);
                    assert_eq!(request.headers()[CONTENT_TYPE], "application/json");
                    "complete"
                }
                other => panic!("unexpected path {other}"),
            };
            *counts.entry(kind).or_default() += 1;
        }
        for (kind, share) in [
            ("today", 30),
            ("stats", 30),
            ("content", 30),
            ("complete", 10),
        ] {
            let expected = 200 * share;
            let got = counts[kind];
            assert!(got.abs_diff(expected) < expected / 10, "{kind}: {got}");
        }
    }

    #[test]
    fn writes_complete_a_scheduled_content() {
        let mut mix = Mix {
            rng: fastrand::Rng::with_seed(5),
            host: HeaderValue::from_static("h"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut writes = 0;
        while writes < 200 {
            let request = mix.next();
            if request.method() != Method::POST {
                continue;
            }
            writes += 1;
            let body = runtime
                .block_on(request.into_body().collect())
                .unwrap_or_else(|e| match e {})
                .to_bytes();
            let json: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
            let field = |name: &str| json[name].as_u64().unwrap_or(u64::MAX);
            let (user, content) = (field("user_id"), field("content_id"));
            let k = (0..SCHEDULES_PER_USER).find(|k| (user * 37 + k) % CONTENTS + 1 == content);
            assert!(k.is_some(), "{json}");
            assert!(field("rating") <= 5);
            assert!((1_500..=60_000).contains(&field("duration_ms")));
        }
    }

    #[test]
    fn metrics_lines_are_read_by_name_and_label() {
        let text = "# HELP adaptive_limit The limit.\n\
                    adaptive_limit{limiter=\"db\"} 7\n\
                    adaptive_limit{limiter=\"http\"} 42.5\n\
                    http_requests_in_flight_total 9\n\
                    http_requests_in_flight 17\n";
        assert_eq!(parse_metrics(text), (Some(42.5), Some(17.0)));
        assert_eq!(
            parse_metrics("http_requests_in_flight 3\n"),
            (None, Some(3.0))
        );
    }

    #[test]
    fn recovery_needs_three_good_seconds_in_a_row() {
        let per_second = [100, 100, 10, 10, 95, 50, 91, 92, 95, 99];
        assert_eq!(recovery(&per_second, 4, 100.0), Some(2));
        assert_eq!(recovery(&per_second, 4, 200.0), None);
        // Two good seconds at the end are not three.
        assert_eq!(recovery(&[10, 95, 95], 0, 100.0), None);
    }

    #[test]
    fn settle_is_the_start_of_the_first_stable_stretch() {
        // Falling until 2 s, then flat at 50 ± 2.
        let limits: Vec<(f64, f64)> = (0..40)
            .map(|i| {
                let t = f64::from(i) * 0.25;
                let limit = if t < 2.0 {
                    200.0 - 75.0 * t
                } else {
                    50.0 + if i % 2 == 0 { 2.0 } else { -2.0 }
                };
                (t, limit)
            })
            .collect();
        assert_eq!(settle(&limits, 0.0, 10.0), Settle::After(2.0));
        // The stable stretch must fit before the next change.
        assert_eq!(settle(&limits, 0.0, 4.0), Settle::Never);
        assert_eq!(settle(&[], 0.0, 10.0), Settle::Static);
        // Oscillating by ±30 % never settles.
        let swinging: Vec<(f64, f64)> = (0..40)
            .map(|i| (f64::from(i) * 0.25, if i % 2 == 0 { 130.0 } else { 70.0 }))
            .collect();
        assert_eq!(settle(&swinging, 0.0, 10.0), Settle::Never);
    }
}
