//! `seawall-scenarios`: the product brief's load scenarios, run with goose
//! against a running seawall-api (one process, or a fleet's load
//! balancer).
//!
//! - `coupon`: 100 virtual users issue coupons of one campaign, a fresh user
//!   per request and every tenth a repeat (who must get no second coupon).
//! - `points`: 100 users earn (idempotently; every fifth key sent twice),
//!   read their balance three times, and use points; every tenth iteration
//!   also earns on one account all users share, where writes collide.
//! - `sale`: users ramp up to place orders in one time sale until its stock
//!   is gone.
//! - `full`: 100 users each take a coupon, earn points and place an order.
//! - `learning`: the reference workload's mix at 200 (and, in full runs,
//!   1,000) users.
//!
//! Every request is checked (status and body). After each scenario the
//! runner waits for the workers to write every acknowledged order, then
//! reads the service's audit and standings, which count coupons, ledgers,
//! stock and orders in the database and the store, and checks the
//! invariants against those counts. Thresholds are k6's kind (p95, error
//! rate, checks passed, rates): the brief's figures with `--quick` (the
//! default), the stricter targets with `--full`, which also runs the
//! brief's lengths. The exit status is 0 only when every threshold and
//! every invariant holds; with `--report-latency` the thresholds of speed
//! (latencies, rates) are printed but decide nothing, so a test run on a
//! busy machine fails only on a broken check or invariant. Each scenario writes goose's HTML report
//! (latency and throughput over time) and JSON, and `summary.json` holds
//! every figure.
//!
//! ```sh
//! seawall-scenarios --url http://127.0.0.1:8080 --token "$SEAWALL_ADMIN_TOKEN" \
//!     --deployment embedded --report-dir target/scenarios/embedded
//! ```

mod admin;
mod load;
mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use goose::config::GooseConfiguration;
use goose::prelude::*;
use serde_json::Value;

use admin::{Admin, standing};
use load::Run;
use summary::{Bound, Invariant, Outcome, Threshold, latencies};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "seawall-scenarios",
    about = "The product brief's load scenarios against seawall-api"
)]
struct Args {
    /// The service, or a fleet's load balancer.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin token (default: $SEAWALL_ADMIN_TOKEN).
    #[arg(long, env = "SEAWALL_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// The brief's lengths and the stricter targets.
    #[arg(long, conflicts_with = "quick")]
    full: bool,
    /// Every scenario briefly, against the brief's figures (the default).
    #[arg(long)]
    quick: bool,
    /// Report the latencies and rates without judging them: only the
    /// checks of every request, the error rate and the invariants decide
    /// the exit status (for a test run on a machine whose speed is not
    /// known).
    #[arg(long)]
    report_latency: bool,
    /// Scenarios to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "coupon,points,sale,full,learning"
    )]
    scenarios: Vec<String>,
    /// What the service runs on, for the summary (`embedded`, `redis`,
    /// `fleet`).
    #[arg(long, default_value = "service")]
    deployment: String,
    /// Where the reports go.
    #[arg(long, default_value = "target/scenarios")]
    report_dir: PathBuf,
}

/// The figures a scenario must meet: the brief's (quick runs) or the
/// targets (full runs).
#[derive(Debug, Clone, Copy)]
struct Limits {
    quick: f64,
    full: f64,
}

const fn limits(quick: f64, full: f64) -> Limits {
    Limits { quick, full }
}

impl Limits {
    fn pick(self, full: bool) -> f64 {
        if full { self.full } else { self.quick }
    }
}

/// How a scenario is loaded and judged.
struct Spec {
    name: &'static str,
    users: usize,
    /// goose's test plan: `users,duration;…`.
    plan: String,
    think: Option<(Duration, Duration)>,
    transaction: TransactionFunction,
    /// Request name → its p95 limit in ms.
    p95: Vec<(&'static str, Limits)>,
    error_rate: Limits,
}

type TransactionFunction =
    fn(
        &mut GooseUser,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = TransactionResult> + Send + '_>>;

fn spec(name: &str, full: bool, learning_users: usize) -> Option<Spec> {
    let plan = |users: usize, ramp: u64, hold: u64| format!("{users},{ramp}s;{users},{hold}s;0,0s");
    let lengths = |quick: u64, full_length: u64| if full { full_length } else { quick };
    let tiny = Some((Duration::ZERO, Duration::from_millis(5)));
    Some(match name {
        "coupon" => Spec {
            name: "coupon",
            users: 100,
            plan: plan(100, 2, lengths(10, 300)),
            think: tiny,
            transaction: |user| Box::pin(load::issue(user)),
            p95: vec![("coupon issue", limits(180.0, 50.0))],
            error_rate: limits(0.005, 0.001),
        },
        "points" => Spec {
            name: "points",
            users: 100,
            plan: plan(100, 2, lengths(10, 300)),
            think: Some((Duration::from_millis(5), Duration::from_millis(20))),
            transaction: |user| Box::pin(load::points(user)),
            p95: vec![
                ("points earn", limits(90.0, 50.0)),
                ("points balance", limits(15.0, 5.0)),
                ("points use", limits(100.0, 50.0)),
            ],
            error_rate: limits(0.01, 0.001),
        },
        "sale" => Spec {
            name: "sale",
            users: if full { 1_000 } else { 500 },
            plan: if full {
                plan(1_000, 20, 40)
            } else {
                plan(500, 3, 7)
            },
            think: tiny,
            transaction: |user| Box::pin(load::order(user)),
            p95: vec![("sale order", limits(85.0, 50.0))],
            error_rate: limits(0.01, 0.001),
        },
        "full" => Spec {
            name: "full",
            users: 100,
            plan: plan(100, 2, lengths(10, 300)),
            think: tiny,
            transaction: |user| Box::pin(load::journey(user)),
            p95: vec![
                ("journey coupon", limits(185.0, 50.0)),
                ("journey points", limits(90.0, 50.0)),
                ("journey order", limits(88.0, 50.0)),
            ],
            error_rate: limits(0.008, 0.001),
        },
        "learning" => Spec {
            name: "learning",
            users: learning_users,
            plan: plan(learning_users, 2, lengths(10, 60)),
            think: None,
            transaction: |user| Box::pin(load::learning(user)),
            p95: vec![],
            error_rate: limits(0.01, 0.01),
        },
        _ => return None,
    })
}

/// The stock of the sale, and the quantity of the campaigns.
fn stock(full: bool) -> u64 {
    if full { 10_000 } else { 2_000 }
}
const CAMPAIGN_QUANTITY: u64 = 5_000_000;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let admin = Admin::new(&args.url, &args.token);
    // The first start seeds the demo dataset: seconds on a quiet machine,
    // many more on a busy one.
    if let Err(failure) = admin.wait_ready(Duration::from_secs(180)).await {
        eprintln!("{failure}");
        return ExitCode::from(2);
    }
    if let Err(error) = std::fs::create_dir_all(&args.report_dir) {
        eprintln!("cannot create {}: {error}", args.report_dir.display());
        return ExitCode::from(2);
    }
    let mut runs = Vec::new();
    for name in &args.scenarios {
        let learning_runs: Vec<usize> = if name == "learning" && args.full {
            vec![200, 1_000]
        } else {
            vec![200]
        };
        for learning_users in learning_runs {
            let Some(spec) = spec(name, args.full, learning_users) else {
                eprintln!(
                    "no scenario {name:?}; the scenarios are coupon, points, sale, full, learning"
                );
                return ExitCode::from(2);
            };
            let outcome = scenario(&args, &admin, &spec).await;
            outcome.print();
            runs.push(outcome);
        }
    }
    let path = args.report_dir.join("summary.json");
    match serde_json::to_vec_pretty(&runs) {
        Ok(json) => {
            if let Err(error) = std::fs::write(&path, json) {
                eprintln!("cannot write {}: {error}", path.display());
            }
        }
        Err(error) => eprintln!("the summary did not serialise: {error}"),
    }
    let failed: Vec<&str> = runs
        .iter()
        .filter(|outcome| !outcome.passed())
        .map(|outcome| outcome.scenario.as_str())
        .collect();
    println!();
    if failed.is_empty() {
        println!(
            "every scenario passed on {} ({} in all); reports in {}",
            args.deployment,
            runs.len(),
            args.report_dir.display()
        );
        ExitCode::SUCCESS
    } else {
        println!("FAILED on {}: {}", args.deployment, failed.join(", "));
        ExitCode::FAILURE
    }
}

/// Sets up, runs and judges one scenario.
async fn scenario(args: &Args, admin: &Admin, spec: &Spec) -> Outcome {
    let label = if spec.name == "learning" {
        format!("learning-{}", spec.users)
    } else {
        spec.name.to_owned()
    };
    let mut outcome = Outcome {
        scenario: label.clone(),
        deployment: args.deployment.clone(),
        users: spec.users,
        seconds: 0.0,
        requests: 0,
        requests_per_second: 0.0,
        checks_passed: 0,
        checks_failed: 0,
        error_rate: 0.0,
        latency: BTreeMap::new(),
        figures: BTreeMap::new(),
        thresholds: Vec::new(),
        invariants: Vec::new(),
        failures: Vec::new(),
        judge_speed: !args.report_latency,
    };
    let tag = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() % 1_000_000),
    )
    .unwrap_or(0)
        * 10_000_000;
    let mut run = Run {
        tag,
        ..Run::default()
    };
    // Fresh users of this run: past the points scenario's accounts (tag + 1
    // to tag + its users), before the next run's tag (10,000,000 on).
    run.next_user.store(tag + 5_000_001, Ordering::Relaxed);
    let stock = stock(args.full);
    let setup = async {
        if matches!(spec.name, "coupon" | "full") {
            run.campaign = admin
                .campaign(&format!("{label} {tag}"), CAMPAIGN_QUANTITY)
                .await?;
        }
        if spec.name == "sale" {
            run.sale = admin.sale(&format!("{label} {tag}"), stock).await?;
        }
        if spec.name == "full" {
            run.sale = admin
                .sale(&format!("{label} {tag}"), CAMPAIGN_QUANTITY)
                .await?;
        }
        Ok::<(), admin::Failure>(())
    };
    if let Err(failure) = setup.await {
        outcome.failures.push(format!("setup: {failure}"));
        return outcome;
    }
    let retries_before = admin
        .counter("promotions_points_retries_total")
        .await
        .unwrap_or(0.0);
    run.started = Some(Instant::now());
    let run = Arc::new(run);
    load::install(Arc::clone(&run));
    let started = Instant::now();
    let metrics = match attack(args, spec, &label).await {
        Ok(metrics) => metrics,
        Err(error) => {
            outcome.failures.push(format!("goose: {error}"));
            return outcome;
        }
    };
    outcome.seconds = started.elapsed().as_secs_f64();
    judge(&mut outcome, spec, args.full, &metrics);
    let audit = match admin.drained_audit(Duration::from_secs(120)).await {
        Ok(audit) => audit,
        Err(failure) => {
            outcome.failures.push(format!("audit: {failure}"));
            return outcome;
        }
    };
    let standings = admin.standings().await.unwrap_or(Value::Null);
    invariants(
        &mut outcome,
        spec,
        args.full,
        &run,
        &audit,
        &standings,
        stock,
    );
    if spec.name == "points" {
        let retries = admin
            .counter("promotions_points_retries_total")
            .await
            .unwrap_or(0.0)
            - retries_before;
        outcome.figures.insert(
            "point write retries (this instance's count)".to_owned(),
            retries,
        );
        #[allow(clippy::cast_precision_loss)]
        let replays = run.replays.load(Ordering::Relaxed) as f64;
        outcome
            .figures
            .insert("idempotent replays".to_owned(), replays);
        outcome.invariants.push(Invariant {
            name: "idempotent replays answered".to_owned(),
            observed: i64::try_from(run.replays.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            expected: 1,
            passed: run.replays.load(Ordering::Relaxed) > 0,
        });
    }
    outcome
}

async fn attack(args: &Args, spec: &Spec, label: &str) -> Result<GooseMetrics, GooseError> {
    let html = args.report_dir.join(format!("{label}.html"));
    let json = args.report_dir.join(format!("{label}.json"));
    let (html, json) = (html.display().to_string(), json.display().to_string());
    let configuration = GooseConfiguration::parse_args_default(&[
        "--host",
        args.url.as_str(),
        "--test-plan",
        spec.plan.as_str(),
        "--report-file",
        html.as_str(),
        "--report-file",
        json.as_str(),
        "--no-telnet",
        "--quiet",
        "--no-print-metrics",
    ])
    .map_err(|error| GooseError::InvalidOption {
        option: "configuration".to_owned(),
        value: String::new(),
        detail: error.to_string(),
    })?;
    let mut scenario = scenario!("users")
        .register_transaction(Transaction::new(Arc::new(spec.transaction)).set_name(spec.name));
    if let Some((min, max)) = spec.think {
        scenario = scenario.set_wait_time(min, max)?;
    }
    GooseAttack::initialize_with_config(configuration)?
        .register_scenario(scenario)
        .execute()
        .await
}

/// The thresholds: p95 per request, error rate, checks passed, and the
/// scenario's rate.
fn judge(outcome: &mut Outcome, spec: &Spec, full: bool, metrics: &GooseMetrics) {
    let latency = latencies(metrics);
    let requests: usize = latency.values().map(|l| l.count).sum();
    let errors: usize = latency.values().map(|l| l.errors).sum();
    outcome.checks_passed = latency.values().map(|l| l.passed).sum();
    outcome.checks_failed = latency.values().map(|l| l.failed).sum();
    outcome.requests = requests;
    #[allow(clippy::cast_precision_loss)]
    {
        outcome.requests_per_second = requests as f64 / outcome.seconds.max(0.001);
        outcome.error_rate = errors as f64 / requests.max(1) as f64;
        let checks = outcome.checks_passed as f64 / requests.max(1) as f64;
        outcome.thresholds.push(Threshold::new(
            "checks passed",
            checks * 100.0,
            Bound::AtLeast,
            99.9,
            "%",
        ));
    }
    outcome.thresholds.push(Threshold::new(
        "http errors (5xx, no answer)",
        outcome.error_rate * 100.0,
        Bound::Below,
        spec.error_rate.pick(full) * 100.0,
        "%",
    ));
    for (name, limit) in &spec.p95 {
        let observed = latency.get(*name).map_or(f64::INFINITY, |l| l.p95_ms);
        outcome.thresholds.push(Threshold::speed(
            format!("p95 {name}"),
            observed,
            Bound::Below,
            limit.pick(full),
            "ms",
        ));
    }
    if spec.name == "learning" {
        let count = requests.max(1);
        #[allow(clippy::cast_precision_loss)]
        let mean = latency
            .values()
            .map(|l| l.mean_ms * l.count as f64)
            .sum::<f64>()
            / count as f64;
        let p95 = latency.values().map(|l| l.p95_ms).fold(0.0, f64::max);
        outcome.thresholds.push(Threshold::speed(
            "requests per second",
            outcome.requests_per_second,
            Bound::AtLeast,
            1_000.0,
            "/s",
        ));
        outcome.thresholds.push(Threshold::speed(
            "mean, all requests",
            mean,
            Bound::Below,
            100.0,
            "ms",
        ));
        outcome.thresholds.push(Threshold::speed(
            "p95, slowest request kind",
            p95,
            Bound::Below,
            200.0,
            "ms",
        ));
    }
    outcome.latency = latency;
}

/// The invariants, from the service's audit and standings.
fn invariants(
    outcome: &mut Outcome,
    spec: &Spec,
    full: bool,
    run: &Run,
    audit: &Value,
    standings: &Value,
    stock: u64,
) {
    let count = |value: &Value| value.as_i64().unwrap_or(-1);
    for (name, key) in [
        ("over-issued coupons", "over_issued_coupons"),
        ("duplicate coupons", "duplicate_coupons"),
        ("ledger mismatches", "ledger_mismatches"),
        ("negative balances", "negative_balances"),
        ("oversold", "oversold"),
        ("lost orders", "lost_orders"),
        ("duplicate orders", "duplicate_orders"),
        ("unaccounted units", "unaccounted_units"),
    ] {
        outcome
            .invariants
            .push(Invariant::equal(name, count(&audit[key]), 0));
    }
    let issued = i64::try_from(run.issued.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    let ordered = i64::try_from(run.ordered.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    if run.campaign > 0 {
        let row = standing(standings, "campaigns", run.campaign)
            .cloned()
            .unwrap_or(Value::Null);
        outcome.invariants.push(Invariant::equal(
            "coupon rows = coupons answered 201",
            count(&row["written"]),
            issued,
        ));
        outcome.invariants.push(Invariant::equal(
            "coupons issued by the store = rows",
            count(&row["issued"]),
            count(&row["written"]),
        ));
        #[allow(clippy::cast_precision_loss)]
        outcome.figures.insert(
            "coupons issued per second".to_owned(),
            issued as f64 / outcome.seconds.max(0.001),
        );
        if spec.name == "coupon" {
            #[allow(clippy::cast_precision_loss)]
            let rate = issued as f64 / outcome.seconds.max(0.001);
            let limit = limits(33.0, 1_000.0).pick(full);
            outcome.thresholds.push(Threshold::speed(
                "coupons issued per second",
                rate,
                Bound::AtLeast,
                limit,
                "/s",
            ));
        }
    }
    if run.sale > 0 {
        let row = standing(standings, "sales", run.sale)
            .cloned()
            .unwrap_or(Value::Null);
        let (sold, written, acknowledged) = (
            count(&row["sold"]),
            count(&row["written"]),
            count(&row["acknowledged"]),
        );
        outcome.invariants.push(Invariant::equal(
            "order rows = orders answered 201",
            written,
            ordered,
        ));
        outcome.invariants.push(Invariant::equal(
            "order rows = acknowledged",
            written,
            acknowledged,
        ));
        outcome
            .invariants
            .push(Invariant::equal("stock sold = order rows", sold, written));
        if spec.name == "sale" {
            let stock = i64::try_from(stock).unwrap_or(i64::MAX);
            outcome.invariants.push(Invariant::equal(
                "initial stock - final stock = sold",
                stock - count(&row["remaining"]),
                sold,
            ));
            if run.sold_out.load(Ordering::Relaxed) > 0 {
                outcome.invariants.push(Invariant::equal(
                    "stock sold out = initial stock",
                    sold,
                    stock,
                ));
            }
            let first = run.first_order_us.load(Ordering::Relaxed);
            let last = run.last_order_us.load(Ordering::Relaxed);
            #[allow(clippy::cast_precision_loss)]
            let window = (last.saturating_sub(first)) as f64 / 1e6;
            #[allow(clippy::cast_precision_loss)]
            let rate = ordered as f64 / window.max(0.001);
            outcome
                .figures
                .insert("selling window (s)".to_owned(), window);
            let limit = limits(357.0, 3_000.0).pick(full);
            outcome.thresholds.push(Threshold::speed(
                "orders per second while stock lasted",
                rate,
                Bound::AtLeast,
                limit,
                "/s",
            ));
        }
    }
}
