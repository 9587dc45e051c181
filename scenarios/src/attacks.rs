//! `seawall-attacks`: a day of traffic compressed into minutes, with
//! attacks injected, against a running seawall-api whose abuse watch acts
//! (`ratelimit.abuse = act`); it reports, per attack, whether and when the
//! watch found it and what it did, and every finding on normal traffic.
//!
//! The service must believe the runner's `X-Forwarded-For` (it names each
//! client's address: `ratelimit.trusted_proxies` holds 127.0.0.1/32) and is
//! run by `scripts/attacks` with a short interval (the day is compressed,
//! so the watch's clock is too) and an API limit of 1,200 a minute.
//!
//! The traffic, over `--seconds` (300):
//! - 40 readers and 10 heavy users (addresses in 10.0.0.0/8), each reading
//!   its own three views (its reviews, its balance, the catalogue's first
//!   page) at a rate that follows a day (a sine from a third of the peak to
//!   the peak and back over the run): readers at 0.5 a second at the peak,
//!   heavy users at 6;
//! - a promotion (not an attack): from 0.33 to 0.43 of the run, every
//!   normal client three times as often;
//! - a scraper at 80 % of the API limit (16 a second), walking the
//!   catalogue page by page, from 0.47 to 0.67;
//! - credential stuffing: 200 made-up API keys from 50 addresses, one
//!   attempt a second from each, on the reviews route, from 0.67 to 0.83;
//! - a slow creep of errors on the balance route: a share of its requests,
//!   from 0 at half the run to 40 % at its end, sends a key that is not
//!   valid (a client rolled out with a bad key), each from another address;
//! - a sudden burst: one heavy user ten times as often, from 0.8 to 0.9.
//!
//! An attack is detected by a finding on one of its clients (or, for the
//! stuffing and the creep, on its route) from its start to 60 s after it;
//! a false positive is any action on a normal client. The exit status is 0
//! only when every attack is detected within 60 s and no normal client is
//! acted on. `--report` writes the findings and the verdicts as JSON.

use std::collections::{BTreeMap, HashSet};
use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use serde_json::Value;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "seawall-attacks",
    about = "A compressed day of traffic with injected attacks, against seawall-api's abuse watch"
)]
struct Args {
    /// The service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin token (default: $SEAWALL_ADMIN_TOKEN).
    #[arg(long, env = "SEAWALL_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// How long the compressed day lasts, in seconds.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Where to write the findings and verdicts (JSON).
    #[arg(long)]
    report: Option<PathBuf>,
}

/// How long an attack may go unseen.
const DEADLINE: Duration = Duration::from_secs(60);
const READERS: u32 = 40;
const HEAVY: u32 = 10;

/// One request: its path and query, the API key it sends, and the address
/// it comes from when not the client's own.
struct Ask {
    path: String,
    key: Option<String>,
    from: Option<String>,
}

impl Ask {
    fn get(path: String) -> Self {
        Self {
            path,
            key: None,
            from: None,
        }
    }
}

/// One client's traffic: who it is, what it asks for, how often.
#[derive(Clone)]
struct Client {
    address: String,
    /// Requests a second at time `t` (a share of the run, 0 to 1); 0: idle.
    rate: Arc<dyn Fn(f64) -> f64 + Send + Sync>,
    /// The `n`-th request, at time `t`.
    request: Arc<dyn Fn(u64, f64) -> Ask + Send + Sync>,
}

/// The day's shape: a third of the peak at the ends, the peak in the middle.
fn day(t: f64) -> f64 {
    let low = 1.0 / 3.0;
    low + (1.0 - low) * (0.5 - 0.5 * (2.0 * PI * t).cos())
}

/// The promotion's window, as shares of the run.
const PROMOTION: (f64, f64) = (0.33, 0.43);
const SCRAPE: (f64, f64) = (0.47, 0.67);
const STUFFING: (f64, f64) = (0.67, 0.83);
const CREEP: (f64, f64) = (0.5, 1.0);
const BURST: (f64, f64) = (0.8, 0.9);

fn within(t: f64, (from, to): (f64, f64)) -> bool {
    t >= from && t < to
}

fn normal(address: String, user: u32, peak: f64, burst: bool) -> Client {
    Client {
        address,
        rate: Arc::new(move |t| {
            let mut rate = peak * day(t);
            if within(t, PROMOTION) {
                rate *= 3.0;
            }
            if burst && within(t, BURST) {
                rate *= 10.0;
            }
            rate
        }),
        request: Arc::new(move |n, _| {
            Ask::get(match n % 3 {
                0 => format!("/api/review/today?user_id={user}"),
                1 => format!("/api/points/balance?user_id={user}"),
                _ => "/api/content?page=1".to_owned(),
            })
        }),
    }
}

/// Every client of the run, and the attacks' clients by attack.
fn clients() -> (Vec<Client>, BTreeMap<&'static str, Vec<String>>) {
    let mut clients = Vec::new();
    let mut attacks: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for user in 1..=READERS {
        clients.push(normal(format!("10.1.0.{user}"), user, 0.5, false));
    }
    for heavy in 1..=HEAVY {
        let address = format!("10.2.0.{heavy}");
        // The first heavy user bursts.
        if heavy == 1 {
            attacks.insert("burst", vec![address.clone()]);
        }
        clients.push(normal(address, 100 + heavy, 6.0, heavy == 1));
    }
    let scraper = "203.0.113.10".to_owned();
    clients.push(Client {
        address: scraper.clone(),
        rate: Arc::new(|t| if within(t, SCRAPE) { 16.0 } else { 0.0 }),
        request: Arc::new(|n, _| Ask::get(format!("/api/content?page={}", n + 1))),
    });
    attacks.insert("scraper at 80 % of its limit", vec![scraper]);
    let mut stuffers = Vec::new();
    for address in 1..=50_u32 {
        let ip = format!("198.51.100.{address}");
        stuffers.push(ip.clone());
        clients.push(Client {
            address: ip,
            rate: Arc::new(|t| if within(t, STUFFING) { 1.0 } else { 0.0 }),
            request: Arc::new(move |n, _| Ask {
                path: format!("/api/review/today?user_id={}", 1 + n % 40),
                // Four made-up keys per address: 200 in all.
                key: Some(format!("sw_stuffed_{address}_{}", n % 4)),
                from: None,
            }),
        });
    }
    stuffers.push("/api/review/today".to_owned());
    attacks.insert("credential stuffing", stuffers);
    // The creep: ten requests a second to the balance route from half the
    // run on, each from another address, a growing share of them (0 to
    // 40 %, spread evenly) with a key that is not valid.
    clients.push(Client {
        address: String::new(),
        rate: Arc::new(|t| if within(t, CREEP) { 10.0 } else { 0.0 }),
        request: Arc::new(|n, t| {
            let share = (0.4 * (t - CREEP.0) / (CREEP.1 - CREEP.0)).max(0.0);
            #[allow(clippy::cast_precision_loss)]
            let bad = ((n + 1) as f64 * share).floor() != (n as f64 * share).floor();
            Ask {
                path: format!("/api/points/balance?user_id={}", 1 + n % 40),
                key: bad.then(|| format!("sw_rolled_out_bad_{n}")),
                from: Some(format!("10.3.{}.{}", (n / 250) % 250, n % 250)),
            }
        }),
    });
    attacks.insert("error creep", vec!["/api/points/balance".to_owned()]);
    (clients, attacks)
}

/// Runs one client until the run ends, at its rate (each request on its
/// own task: a fixed arrival rate, whatever the answers take).
async fn drive(
    client: Client,
    http: reqwest::Client,
    url: String,
    start: Instant,
    run: Duration,
    sent: Arc<AtomicU64>,
) {
    let mut n: u64 = 0;
    loop {
        let t = start.elapsed().as_secs_f64() / run.as_secs_f64();
        if t >= 1.0 {
            return;
        }
        let rate = (client.rate)(t);
        if rate <= 0.0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let ask = (client.request)(n, t);
        n += 1;
        let from = ask.from.as_deref().unwrap_or(&client.address);
        let mut request = http
            .get(format!("{url}{}", ask.path))
            .header("x-forwarded-for", from);
        if let Some(key) = ask.key {
            request = request.header("x-api-key", key);
        }
        let counted = Arc::clone(&sent);
        tokio::spawn(async move {
            let _ = request.send().await;
            counted.fetch_add(1, Ordering::Relaxed);
        });
        tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
    }
}

/// A finding as the admin route lists it, with when the runner first saw
/// it.
#[derive(Debug, Clone, Serialize)]
struct Seen {
    key: String,
    signal: String,
    action: String,
    reason: String,
    /// Seconds from the start of the run.
    at: f64,
}

/// What became of one attack.
#[derive(Debug, Serialize)]
struct Verdict {
    attack: &'static str,
    /// Seconds from the start of the run.
    started_at: f64,
    /// Seconds from the attack's start to its first finding.
    detected_after: Option<f64>,
    signal: Option<String>,
    /// The strongest action on its clients.
    action: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let run = Duration::from_secs(args.seconds.max(60));
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            eprintln!("no HTTP client: {error}");
            return ExitCode::from(2);
        }
    };
    let url = args.url.trim_end_matches('/').to_owned();
    let (clients, attacks) = clients();
    let normal: HashSet<String> = clients
        .iter()
        .map(|client| client.address.clone())
        .filter(|address| address.starts_with("10."))
        .filter(|address| !attacks.values().flatten().any(|a| a == address))
        .collect();
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        tasks.push(tokio::spawn(drive(
            client,
            http.clone(),
            url.clone(),
            start,
            run,
            Arc::clone(&sent),
        )));
    }
    // Watch the findings until the run ends, and a deadline past it.
    let mut seen: Vec<Seen> = Vec::new();
    let mut known: HashSet<(String, String, i64)> = HashSet::new();
    let end = run + DEADLINE.min(Duration::from_secs(15));
    while start.elapsed() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reply = http
            .get(format!("{url}/api/rate-limit/abuse"))
            .bearer_auth(&args.token)
            .send()
            .await;
        let Ok(reply) = reply else { continue };
        let Ok(state) = reply.json::<Value>().await else {
            continue;
        };
        let at = start.elapsed().as_secs_f64();
        for finding in state["findings"].as_array().into_iter().flatten() {
            let text = |field: &str| finding[field].as_str().unwrap_or_default().to_owned();
            let id = (
                text("key"),
                text("signal"),
                finding["interval_start_ms"].as_i64().unwrap_or(0),
            );
            if known.insert(id) {
                seen.push(Seen {
                    key: text("key"),
                    signal: text("signal"),
                    action: text("action"),
                    reason: text("reason"),
                    at,
                });
            }
        }
    }
    for task in tasks {
        task.abort();
    }
    let seconds = run.as_secs_f64();
    let windows: BTreeMap<&str, (f64, f64)> = BTreeMap::from([
        ("scraper at 80 % of its limit", SCRAPE),
        ("credential stuffing", STUFFING),
        ("error creep", CREEP),
        ("burst", BURST),
    ]);
    let mut verdicts = Vec::new();
    let mut failed = false;
    for (attack, keys) in &attacks {
        let (from, _) = windows[attack];
        let started_at = from * seconds;
        let first = seen
            .iter()
            .filter(|s| keys.contains(&s.key) && s.at >= started_at)
            .min_by(|a, b| a.at.total_cmp(&b.at));
        let strongest = seen
            .iter()
            .filter(|s| keys.contains(&s.key))
            .map(|s| s.action.as_str())
            .max_by_key(|action| match *action {
                "block" => 2,
                "tighten" => 1,
                _ => 0,
            });
        let detected_after = first.map(|s| s.at - started_at);
        if detected_after.is_none_or(|after| after > DEADLINE.as_secs_f64()) {
            failed = true;
        }
        verdicts.push(Verdict {
            attack,
            started_at,
            detected_after,
            signal: first.map(|s| s.signal.clone()),
            action: strongest.map(str::to_owned),
        });
    }
    let on_normal: Vec<&Seen> = seen.iter().filter(|s| normal.contains(&s.key)).collect();
    let acted_on_normal = on_normal.iter().filter(|s| s.action != "observe").count();
    if acted_on_normal > 0 {
        failed = true;
    }
    println!(
        "attack traces: {} s, {} requests sent, {} findings",
        args.seconds,
        sent.load(Ordering::Relaxed),
        seen.len()
    );
    for verdict in &verdicts {
        match verdict.detected_after {
            Some(after) => println!(
                "  {:<30} started at {:>5.1} s: found after {:>5.1} s ({}), strongest action {}",
                verdict.attack,
                verdict.started_at,
                after,
                verdict.signal.as_deref().unwrap_or("-"),
                verdict.action.as_deref().unwrap_or("-"),
            ),
            None => println!(
                "  {:<30} started at {:>5.1} s: NOT FOUND",
                verdict.attack, verdict.started_at
            ),
        }
    }
    println!(
        "  findings on normal clients: {} ({} acted on); the promotion ran from {:.0} s to {:.0} s",
        on_normal.len(),
        acted_on_normal,
        PROMOTION.0 * seconds,
        PROMOTION.1 * seconds
    );
    for finding in &on_normal {
        println!(
            "    {:.1} s {} {}: {}",
            finding.at, finding.key, finding.action, finding.reason
        );
    }
    if let Some(path) = &args.report {
        let report = serde_json::json!({
            "seconds": args.seconds,
            "verdicts": verdicts,
            "findings": seen,
            "findings_on_normal_clients": on_normal.len(),
            "actions_on_normal_clients": acted_on_normal,
        });
        if let Err(error) =
            std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap_or_default())
        {
            eprintln!("cannot write {}: {error}", path.display());
        }
    }
    if failed {
        println!("attack traces: FAILED");
        ExitCode::from(1)
    } else {
        println!("attack traces: every attack found within 60 s, no normal client acted on");
        ExitCode::SUCCESS
    }
}
