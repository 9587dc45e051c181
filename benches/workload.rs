//! `seawall-workload`: an open-loop load generator for seawall-api's
//! reference workload, used to compare the service with and without its cache
//! at the same offered traffic (`scripts/cache-workload` drives it).
//!
//! Requests leave at a fixed rate whatever the service answers, so both
//! variants receive the same requests and the database queries per minute can
//! be compared directly. The mix is 30 % `GET /api/review/today`, 30 %
//! `GET /api/analytics/stats`, 30 % `GET /api/content` and 10 %
//! `POST /api/review/complete`. Reads pick their user (and content page) from
//! a Zipf distribution: a few learners are much more active than the rest.
//! Writes pick their user uniformly by default (`--zipf-writes` draws them from
//! the same Zipf distribution as reads) and one of the contents the demo
//! dataset schedules for that user.
//!
//! A warm-up phase runs first; the measured phase follows without a pause.
//! Latency is timed per request from the moment it is sent to the end of its
//! body; requests sent more than 5 ms after their scheduled time are counted
//! as late, so a generator that falls behind is visible rather than hidden.
//! At most 4,096 requests are in flight: past that, a request is not sent
//! and counts as an error, so the `count` column holds the requests sent and
//! `errors` may include some that never were.
//! Database queries and cache reads are the differences of the service's
//! `/metrics` counters across the measured phase.
//!
//! ```sh
//! cargo run --release -p seawall-benches --bin seawall-workload -- \
//!     --url http://127.0.0.1:8080 --rate 200 --warmup 20 --duration 60
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command, value_parser};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A request sent this long after its scheduled time is counted as late.
const LATE: Duration = Duration::from_millis(5);
/// Requests in flight at most: past it, a request is not sent but counted
/// as an error ("not sent"), so a service that cannot keep up shows as
/// errors rather than as a generator that runs out of memory.
const MAX_IN_FLIGHT: usize = 4096;

/// What one request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Today,
    Stats,
    Content,
    Complete,
}

impl Kind {
    const ALL: [Self; 4] = [Self::Today, Self::Stats, Self::Content, Self::Complete];

    fn label(self) -> &'static str {
        match self {
            Self::Today => "GET /api/review/today",
            Self::Stats => "GET /api/analytics/stats",
            Self::Content => "GET /api/content",
            Self::Complete => "POST /api/review/complete",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Ranks `1..=n` drawn with probability proportional to `1 / rank^s`.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                #[allow(clippy::cast_precision_loss)] // ranks are small
                let weight = 1.0 / (rank as f64).powf(s);
                total += weight;
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Self { cumulative }
    }

    /// A rank in `1..=n`.
    fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        let u = rng.f64();
        let index = self.cumulative.partition_point(|&c| c < u);
        u64::try_from(index.min(self.cumulative.len() - 1)).unwrap_or(0) + 1
    }
}

/// The demo dataset's shape, which the requests must match.
#[derive(Debug, Clone, Copy)]
struct Dataset {
    users: u64,
    contents: u64,
    schedules_per_user: u64,
    page_size: u64,
}

impl Dataset {
    /// Spreads ranks over user ids with a fixed permutation, so the most
    /// active learners are not simply the first rows of the table.
    fn user_of_rank(self, rank: u64) -> u64 {
        (rank.wrapping_mul(7919) % self.users) + 1
    }

    /// One of the contents the seed schedules for `user` (see the demo
    /// dataset's `schedules_sql`).
    fn scheduled_content(self, user: u64, k: u64) -> u64 {
        (user * 37 + k % self.schedules_per_user) % self.contents + 1
    }

    fn pages(self) -> u64 {
        self.contents.div_ceil(self.page_size).max(1)
    }
}

/// Picks the requests of the mix.
struct Mix {
    dataset: Dataset,
    readers: Zipf,
    pages: Zipf,
    zipf_writes: bool,
    rng: fastrand::Rng,
}

impl Mix {
    fn next(&mut self) -> (Kind, Method, String, Option<String>) {
        let roll = self.rng.u32(0..100);
        let kind = match roll {
            0..30 => Kind::Today,
            30..60 => Kind::Stats,
            60..90 => Kind::Content,
            _ => Kind::Complete,
        };
        let reader = self
            .dataset
            .user_of_rank(self.readers.sample(&mut self.rng));
        match kind {
            Kind::Today => (
                kind,
                Method::GET,
                format!("/api/review/today?user_id={reader}"),
                None,
            ),
            Kind::Stats => (
                kind,
                Method::GET,
                format!("/api/analytics/stats?user_id={reader}"),
                None,
            ),
            Kind::Content => {
                let page = self.pages.sample(&mut self.rng);
                let size = self.dataset.page_size;
                (
                    kind,
                    Method::GET,
                    format!("/api/content?page={page}&page_size={size}"),
                    None,
                )
            }
            Kind::Complete => {
                let user = if self.zipf_writes {
                    reader
                } else {
                    self.rng.u64(1..=self.dataset.users)
                };
                let content = self
                    .dataset
                    .scheduled_content(user, self.rng.u64(0..self.dataset.schedules_per_user));
                let rating = self.rng.u8(0..=5);
                let duration = self.rng.u32(1_500..60_000);
                let body = format!(
                    r#"{{"user_id":{user},"content_id":{content},"rating":{rating},"duration_ms":{duration}}}"#
                );
                (
                    kind,
                    Method::POST,
                    "/api/review/complete".to_owned(),
                    Some(body),
                )
            }
        }
    }
}

/// What the measured phase recorded.
struct Recorded {
    latency: Vec<Histogram<u64>>,
    errors: Vec<u64>,
    statuses: BTreeMap<String, u64>,
    late: u64,
}

impl Recorded {
    fn new() -> Self {
        Self {
            latency: Kind::ALL
                .iter()
                .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"))
                .collect(),
            errors: vec![0; Kind::ALL.len()],
            statuses: BTreeMap::new(),
            late: 0,
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn command() -> Command {
    Command::new("seawall-workload")
        .about("Offers seawall-api the reference workload at a fixed rate and reports latency, database queries and cache hits")
        .arg(Arg::new("url").long("url").required(true).help("The service, e.g. http://127.0.0.1:8080"))
        .arg(Arg::new("rate").long("rate").default_value("200").value_parser(value_parser!(f64))
            .help("Requests per second offered"))
        .arg(Arg::new("warmup").long("warmup").default_value("20").value_parser(value_parser!(u64))
            .help("Seconds of traffic before the measured phase"))
        .arg(Arg::new("duration").long("duration").default_value("60").value_parser(value_parser!(u64))
            .help("Seconds measured"))
        .arg(Arg::new("zipf").long("zipf").default_value("1.0").value_parser(value_parser!(f64))
            .help("Zipf exponent of the readers' users and the content pages"))
        .arg(Arg::new("zipf-writes").long("zipf-writes").action(ArgAction::SetTrue)
            .help("Draw the writers from the readers' Zipf distribution instead of uniformly"))
        .arg(Arg::new("users").long("users").default_value("1000").value_parser(value_parser!(u64)))
        .arg(Arg::new("contents").long("contents").default_value("5000").value_parser(value_parser!(u64)))
        .arg(Arg::new("schedules-per-user").long("schedules-per-user").default_value("200")
            .value_parser(value_parser!(u64)))
        .arg(Arg::new("seed").long("seed").default_value("1").value_parser(value_parser!(u64))
            .help("Seed of the request sequence: the same seed sends the same requests"))
        .arg(Arg::new("label").long("label").default_value("run").help("A name for the report"))
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let url = matches
        .get_one::<String>("url")
        .expect("required")
        .trim_end_matches('/')
        .to_owned();
    let rate = *matches.get_one::<f64>("rate").expect("defaulted");
    if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
        eprintln!("--rate must be between 0 and 100000 requests per second");
        return ExitCode::from(2);
    }
    let dataset = Dataset {
        users: *matches.get_one::<u64>("users").expect("defaulted"),
        contents: *matches.get_one::<u64>("contents").expect("defaulted"),
        schedules_per_user: *matches
            .get_one::<u64>("schedules-per-user")
            .expect("defaulted"),
        page_size: 20,
    };
    if dataset.users == 0 || dataset.contents == 0 || dataset.schedules_per_user == 0 {
        eprintln!("--users, --contents and --schedules-per-user must be positive");
        return ExitCode::from(2);
    }
    let s = *matches.get_one::<f64>("zipf").expect("defaulted");
    if !(s.is_finite() && s >= 0.0) {
        eprintln!("--zipf must be a non-negative number");
        return ExitCode::from(2);
    }
    let mix = Mix {
        dataset,
        readers: Zipf::new(dataset.users, s),
        pages: Zipf::new(dataset.pages(), s),
        zipf_writes: matches.get_flag("zipf-writes"),
        rng: fastrand::Rng::with_seed(*matches.get_one::<u64>("seed").expect("defaulted")),
    };
    let plan = Plan {
        url,
        rate,
        warmup: Duration::from_secs(*matches.get_one::<u64>("warmup").expect("defaulted")),
        measured: Duration::from_secs(*matches.get_one::<u64>("duration").expect("defaulted")),
        label: matches
            .get_one::<String>("label")
            .expect("defaulted")
            .clone(),
    };
    // One thread: the generator leaves the other core to the service.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(plan, mix)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("seawall-workload: {error}");
            ExitCode::FAILURE
        }
    }
}

struct Plan {
    url: String,
    rate: f64,
    warmup: Duration,
    measured: Duration,
    label: String,
}

async fn run(plan: Plan, mut mix: Mix) -> Result<(), String> {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    scrape(&client, &plan.url)
        .await
        .map_err(|error| format!("the service does not answer /metrics: {error}"))?;

    let recorded = Arc::new(Mutex::new(Recorded::new()));
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.measured;
    let mut before = None;
    let mut sent: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let at = start + interval.mul_f64(sent as f64);
        if at >= end {
            break;
        }
        if before.is_none() && at >= measure_from {
            before = Some(scrape(&client, &plan.url).await?);
        }
        tokio::time::sleep_until(at.into()).await;
        let measured = at >= measure_from;
        let (kind, method, path, body) = mix.next();
        // Reap finished requests so the set stays small.
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= MAX_IN_FLIGHT {
            if measured {
                let mut recorded = recorded.lock().expect("not poisoned");
                recorded.errors[kind.index()] += 1;
                *recorded
                    .statuses
                    .entry(format!("not sent ({MAX_IN_FLIGHT} in flight)"))
                    .or_default() += 1;
            }
            sent += 1;
            continue;
        }
        let client = client.clone();
        let url = format!("{}{path}", plan.url);
        let recorded = Arc::clone(&recorded);
        tasks.spawn(async move {
            let sent_at = Instant::now();
            let outcome = send(&client, method, &url, body).await;
            let took = sent_at.elapsed();
            if !measured {
                return;
            }
            let mut recorded = recorded.lock().expect("not poisoned");
            if sent_at.duration_since(at) > LATE {
                recorded.late += 1;
            }
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
            recorded.latency[kind.index()].saturating_record(micros);
            let status = match outcome {
                Ok(status) => status.as_u16().to_string(),
                Err(error) => format!("transport: {error}"),
            };
            if status != "200" {
                recorded.errors[kind.index()] += 1;
            }
            *recorded.statuses.entry(status).or_default() += 1;
        });
        sent += 1;
    }
    let after = scrape(&client, &plan.url).await?;
    while tasks.join_next().await.is_some() {}
    let before = before.ok_or("the measured phase sent nothing")?;
    let recorded = recorded.lock().expect("not poisoned");
    let report = report(&plan, &recorded, &Counters::diff(&before, &after));
    std::io::stdout()
        .write_all(report.as_bytes())
        .map_err(|error| format!("cannot write the report: {error}"))
}

async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<String>,
) -> Result<StatusCode, String> {
    let mut request = Request::builder().method(method).uri(url);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?;
    Ok(status)
}

/// The service's counters this report uses, summed over their labels.
#[derive(Debug, Default, Clone)]
struct Counters {
    /// Timed database queries.
    queries: f64,
    /// `cache_requests` samples by (tier, class, result).
    cache: BTreeMap<(String, String, String), f64>,
}

impl Counters {
    fn diff(before: &Self, after: &Self) -> Self {
        Self {
            queries: after.queries - before.queries,
            cache: after
                .cache
                .iter()
                .map(|(key, value)| {
                    (
                        key.clone(),
                        value - before.cache.get(key).copied().unwrap_or(0.0),
                    )
                })
                .collect(),
        }
    }

    /// Reads answered by a tier over all reads, per class and in total.
    fn hit_ratios(&self) -> Vec<(String, f64, f64)> {
        let mut by_class: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for ((tier, class, result), value) in &self.cache {
            let entry = by_class.entry(class).or_default();
            if result == "hit" {
                entry.0 += value;
            }
            // Every read asks L1 first when there is one; with L1 off, L2.
            let first_tier = if self.cache.keys().any(|(t, _, _)| t == "l1") {
                "l1"
            } else {
                "l2"
            };
            if tier == first_tier {
                entry.1 += value;
            }
        }
        let (mut hits, mut reads) = (0.0, 0.0);
        let mut rows: Vec<_> = by_class
            .into_iter()
            .filter(|(_, (_, r))| *r > 0.0)
            .map(|(class, (h, r))| {
                hits += h;
                reads += r;
                (class.to_owned(), h, r)
            })
            .collect();
        if reads > 0.0 {
            rows.push(("all".to_owned(), hits, reads));
        }
        rows
    }
}

async fn scrape(client: &HttpClient, url: &str) -> Result<Counters, String> {
    let request = Request::get(format!("{url}/metrics"))
        .body(Full::new(Bytes::new()))
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| error.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("/metrics answered {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let mut counters = Counters::default();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if name.ends_with("db_query_duration_seconds_count") {
            counters.queries += value;
        } else if name.ends_with("cache_requests_total") || name.ends_with("cache_requests") {
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{key}=\"")))
                    .map(|rest| rest.trim_end_matches(['"', '}']).to_owned())
                    .unwrap_or_default()
            };
            *counters
                .cache
                .entry((label("tier"), label("class"), label("result")))
                .or_default() += value;
        }
    }
    Ok(counters)
}

/// The report in Markdown: a table of latency per request kind, then the
/// late sends, statuses, database queries and cache hit ratios.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn report(plan: &Plan, recorded: &Recorded, counters: &Counters) -> String {
    let ms = |micros: f64| micros / 1000.0;
    let row = |label: &str, histogram: &Histogram<u64>, errors: u64| {
        format!(
            "| {label} | {} | {errors} | {:.2} | {:.2} | {:.2} | {:.2} |",
            histogram.len(),
            ms(histogram.mean()),
            ms(histogram.value_at_quantile(0.50) as f64),
            ms(histogram.value_at_quantile(0.95) as f64),
            ms(histogram.value_at_quantile(0.99) as f64),
        )
    };
    let mut lines = vec![
        format!(
            "## {}: {:.0} requests/s offered, {} s warm-up, {} s measured",
            plan.label,
            plan.rate,
            plan.warmup.as_secs(),
            plan.measured.as_secs()
        ),
        String::new(),
        "| request | count | errors | mean ms | p50 ms | p95 ms | p99 ms |".to_owned(),
        "|---|---|---|---|---|---|---|".to_owned(),
    ];
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = 0;
    for kind in Kind::ALL {
        let histogram = &recorded.latency[kind.index()];
        all.add(histogram).expect("same bounds");
        errors += recorded.errors[kind.index()];
        lines.push(row(kind.label(), histogram, recorded.errors[kind.index()]));
    }
    lines.push(row("all", &all, errors));
    lines.push(String::new());
    let statuses = recorded
        .statuses
        .iter()
        .map(|(status, count)| format!("{status} × {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    lines.push(format!(
        "- sent late (> {} ms after schedule): {}; statuses: {statuses}",
        LATE.as_millis(),
        recorded.late,
    ));
    let seconds = plan.measured.as_secs_f64();
    let requests = all.len();
    lines.push(format!(
        "- database queries: {:.0} in {seconds:.0} s = {:.0} per minute, {:.2} per request",
        counters.queries,
        counters.queries * 60.0 / seconds,
        if requests > 0 {
            counters.queries / requests as f64
        } else {
            0.0
        }
    ));
    let ratios = counters.hit_ratios();
    if ratios.is_empty() {
        lines.push("- cache: no cache reads".to_owned());
    } else {
        let parts = ratios
            .iter()
            .map(|(class, hits, reads)| {
                format!(
                    "{class} {:.1} % ({hits:.0} of {reads:.0})",
                    100.0 * hits / reads
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!("- cache hit ratio: {parts}"));
    }
    lines.push(String::new());
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut first = 0;
        for _ in 0..100_000 {
            let rank = zipf.sample(&mut rng);
            assert!((1..=1000).contains(&rank));
            if rank == 1 {
                first += 1;
            }
        }
        // Rank 1 has probability 1 / H(1000) ≈ 0.134.
        assert!(
            (12_000..15_000).contains(&first),
            "rank 1 drawn {first} times"
        );
    }

    #[test]
    fn users_are_a_permutation_and_writes_hit_scheduled_contents() {
        let dataset = Dataset {
            users: 1000,
            contents: 5000,
            schedules_per_user: 200,
            page_size: 20,
        };
        let mut seen: Vec<u64> = (1..=1000).map(|rank| dataset.user_of_rank(rank)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
        assert!(seen.iter().all(|user| (1..=1000).contains(user)));
        assert_eq!(dataset.scheduled_content(1, 0), 38);
        assert_eq!(dataset.pages(), 250);
    }
}
