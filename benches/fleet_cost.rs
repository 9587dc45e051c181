//! `seawall-fleet-cost`: what scale costs, measured on one machine.
//!
//! Part "http": the mixed workload (wrk, the Lua script of
//! `scripts/cache-workload`) against one process on a standalone Redis, and
//! against fleets of three API instances on a standalone Redis and on a
//! Redis Cluster of three masters with replicas, through HAProxy and
//! straight to one instance. For each: requests per second, latency (mean,
//! p50, p99), and Redis commands and Redis server time per request, from
//! `INFO commandstats` of every master before and after.
//!
//! Part "queue": email jobs (each reads the database and writes an outbox
//! row) enqueued in bulk, then drained by one and by two worker processes,
//! on a standalone Redis and on the Cluster: jobs per second.
//!
//! Part "replicas": the mixed workload through HAProxy on three instances
//! and a standalone Redis, with 0, 1 and 2 PostgreSQL streaming replicas:
//! requests per second, latency, the primary's CPU time per request (its
//! postmaster and every process it started, from `/proc`: the client
//! backends, the WAL senders and the rest apart) and where the reads that
//! may go to a replica went (the instances' `GET /api/performance`), once
//! per `synchronous_commit` of the primary (`--synchronous-commit`, `off`
//! and `on` by default): replicas receive only the WAL the primary has
//! flushed, and with it `off` that is every `wal_writer_delay` (200 ms).
//! `--reads-only` runs the workload's reads alone (the primary's CPU per
//! read request, writes apart); `--statements` lists the primary's
//! statements of each run by execution time (`pg_stat_statements`).
//!
//! Every fleet is the testkit's (as `scripts/fleet` starts it) on release
//! binaries, with the demo dataset in a PostgreSQL data dir written once
//! and reused (`target/fleet-cost/postgres`). Run through
//! `scripts/fleet-cost`.

// A command-line report: its output is what it is for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{Arg, value_parser};
use seawall_queue::{JobOptions, Queues};
use seawall_testkit::{Fleet, FleetBuilder, FleetRedis, RedisServer, Role};

struct Args {
    /// `http`, `queue`, `replicas` or `both` (`http` and `queue`).
    part: String,
    /// How long wrk runs per configuration (after a warm-up of a third of it).
    duration: String,
    /// wrk's connections.
    connections: u32,
    /// Email jobs per queue run.
    jobs: usize,
    /// Where the kept PostgreSQL data dir and wrk's script live.
    dir: PathBuf,
    /// The primary's `synchronous_commit` settings the replicas part runs
    /// under, each with 0, 1 and 2 replicas.
    synchronous_commit: Vec<String>,
    /// Whether the replicas part also lists the primary's statements
    /// (`pg_stat_statements`) of each measured run.
    statements: bool,
    /// Whether the replicas part runs the mixed workload without its
    /// writes (its reads alone, in the same shares).
    reads_only: bool,
}

fn args() -> Args {
    let matches = clap::Command::new("seawall-fleet-cost")
        .about("What scale costs: the mixed workload and the queues on one process and on fleets")
        .arg(
            Arg::new("part")
                .long("part")
                .default_value("both")
                .value_parser(["http", "queue", "replicas", "both"]),
        )
        .arg(Arg::new("duration").long("duration").default_value("15s"))
        .arg(
            Arg::new("connections")
                .long("connections")
                .default_value("32")
                .value_parser(value_parser!(u32).range(1..=10_000)),
        )
        .arg(
            Arg::new("jobs")
                .long("jobs")
                .default_value("4000")
                .value_parser(value_parser!(usize)),
        )
        .arg(
            Arg::new("dir")
                .long("dir")
                .default_value("target/fleet-cost"),
        )
        .arg(
            Arg::new("synchronous-commit")
                .long("synchronous-commit")
                .help("the primary's synchronous_commit for --part replicas, each in turn")
                .default_value("off,on")
                .value_delimiter(',')
                .value_parser(["off", "local", "on"]),
        )
        .arg(
            Arg::new("reads-only")
                .long("reads-only")
                .help("--part replicas: the mixed workload's reads alone, without its review writes")
                .action(clap::ArgAction::SetTrue),
        )
        .arg(
            Arg::new("statements")
                .long("statements")
                .help("--part replicas: also list the primary's statements of each run (pg_stat_statements)")
                .action(clap::ArgAction::SetTrue),
        )
        .get_matches();
    let text = |name: &str| matches.get_one::<String>(name).cloned().unwrap_or_default();
    Args {
        part: text("part"),
        duration: text("duration"),
        connections: matches.get_one::<u32>("connections").copied().unwrap_or(32),
        jobs: matches.get_one::<usize>("jobs").copied().unwrap_or(4000),
        dir: PathBuf::from(text("dir")),
        synchronous_commit: matches
            .get_many::<String>("synchronous-commit")
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        statements: matches.get_flag("statements"),
        reads_only: matches.get_flag("reads-only"),
    }
}

/// The mixed workload: 30 % today, 30 % stats, 30 % content, 10 % review
/// writes, uniformly random users of the demo dataset's 1,000 (rolls up to
/// `ROLL_MAX`: 100, or 90 for its reads alone).
const MIXED_LUA: &str = r#"
local threads = {}
function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end
function init(args)
    math.randomseed(os.time() * 1000 + id)
end
request = function()
    local roll = math.random(1, ROLL_MAX)
    local user = math.random(1, 1000)
    if roll <= 30 then
        return wrk.format("GET", "/api/review/today?user_id=" .. user)
    elseif roll <= 60 then
        return wrk.format("GET", "/api/analytics/stats?user_id=" .. user)
    elseif roll <= 90 then
        return wrk.format("GET", "/api/content?page=" .. math.random(1, 250) .. "&page_size=20")
    end
    local content = (user * 37 + math.random(0, 199)) % 5000 + 1
    local body = string.format('{"user_id":%d,"content_id":%d,"rating":%d,"duration_ms":%d}',
        user, content, math.random(0, 5), math.random(1500, 60000))
    return wrk.format("POST", "/api/review/complete", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
    local failed = summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.timeout + summary.errors.status
    io.write(string.format("RESULT %d %.3f %.3f %.3f %.3f %d\n",
        summary.requests, summary.duration / 1e6, latency.mean / 1000,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, failed))
end
"#;

struct Wrk {
    requests: u64,
    seconds: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

fn wrk(script: &Path, url: &str, connections: u32, duration: &str) -> Wrk {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{duration}")])
        .args(["--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("wrk printed no result: {text}"));
    let fields: Vec<f64> = line
        .split_whitespace()
        .map(|field| field.parse().expect("a number"))
        .collect();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Wrk {
        requests: fields[0] as u64,
        seconds: fields[1],
        mean_ms: fields[2],
        p50_ms: fields[3],
        p99_ms: fields[4],
        failed: fields[5] as u64,
    }
}

/// Commands and server µs over every master (replication, cluster and
/// introspection commands left out).
fn redis_work(servers: &[&RedisServer]) -> (u64, u64) {
    const SKIP: [&str; 10] = [
        "info", "cluster", "ping", "replconf", "psync", "config", "client", "command", "hello",
        "readonly",
    ];
    let (mut calls, mut usec) = (0, 0);
    for server in servers {
        if !server.is_running() || server.role().ok() != Some(Role::Master) {
            continue;
        }
        let Ok(reply) = server
            .connect()
            .and_then(|mut conn| conn.cmd(&["INFO", "commandstats"]))
        else {
            continue;
        };
        for line in reply.as_str().unwrap_or_default().lines() {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            if SKIP.iter().any(|skip| name.starts_with(skip)) {
                continue;
            }
            for field in stats.split(',') {
                match field.split_once('=') {
                    Some(("calls", n)) => calls += n.parse::<u64>().unwrap_or(0),
                    Some(("usec", n)) => usec += n.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    (calls, usec)
}

fn servers(fleet: &Fleet) -> Vec<&RedisServer> {
    match (fleet.cluster(), fleet.redis_server()) {
        (Some(cluster), _) => cluster.nodes().iter().collect(),
        (_, Some(server)) => vec![server],
        _ => Vec::new(),
    }
}

fn builder(args: &Args, redis: FleetRedis, instances: usize, workers: usize) -> FleetBuilder {
    Fleet::builder()
        .redis(redis)
        .redis_proxies(false)
        .instances(instances)
        .workers(workers)
        .postgres_data(args.dir.join("postgres"))
        .env("SEAWALL_RATELIMIT", "false")
        .env("SEAWALL_LOG", "warn")
        .env("SEAWALL_DB_MAX_CONNECTIONS", "32")
}

/// wrk's script of the mixed workload, written into the run dir, and the
/// warm-up before each measured run: a third of it, at least 2 s.
fn mixed_workload(args: &Args) -> (PathBuf, String) {
    let script = args.dir.join("mixed.lua");
    // Rolls over 90 are the review writes.
    let roll_max = if args.reads_only { "90" } else { "100" };
    std::fs::write(&script, MIXED_LUA.replace("ROLL_MAX", roll_max))
        .expect("writes the wrk script");
    let warm = format!(
        "{}s",
        (humantime::parse_duration(&args.duration)
            .expect("a duration")
            .as_secs()
            / 3)
        .max(2)
    );
    (script, warm)
}

fn http(args: &Args) {
    let (script, warm) = mixed_workload(args);
    println!(
        "| configuration | requests/s | mean ms | p50 ms | p99 ms | failed | Redis commands / request | Redis server µs / request |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let configurations: [(&str, FleetRedis, usize, bool); 5] = [
        (
            "1 instance, standalone Redis, direct",
            FleetRedis::Standalone,
            1,
            false,
        ),
        (
            "3 instances, standalone Redis, HAProxy",
            FleetRedis::Standalone,
            3,
            true,
        ),
        (
            "3 instances, Cluster (3 masters + 3 replicas), HAProxy",
            FleetRedis::Cluster,
            3,
            true,
        ),
        (
            "3 instances, Cluster, straight to instance 1",
            FleetRedis::Cluster,
            3,
            false,
        ),
        ("1 instance, Cluster, direct", FleetRedis::Cluster, 1, false),
    ];
    for (name, redis, instances, through_haproxy) in configurations {
        let fleet = builder(args, redis, instances, 0)
            .start()
            .unwrap_or_else(|error| panic!("{name}: the fleet starts: {error}"));
        let url = if through_haproxy {
            fleet.url()
        } else {
            fleet.instance_urls()[0].clone()
        };
        wrk(&script, &url, args.connections, &warm);
        let before = redis_work(&servers(&fleet));
        let run = wrk(&script, &url, args.connections, &args.duration);
        let after = redis_work(&servers(&fleet));
        #[allow(clippy::cast_precision_loss)]
        let (commands, usec) = (
            (after.0 - before.0) as f64 / run.requests.max(1) as f64,
            (after.1 - before.1) as f64 / run.requests.max(1) as f64,
        );
        #[allow(clippy::cast_precision_loss)]
        let rate = run.requests as f64 / run.seconds;
        println!(
            "| {name} | {rate:.0} | {:.2} | {:.2} | {:.2} | {} | {commands:.2} | {usec:.1} |",
            run.mean_ms, run.p50_ms, run.p99_ms, run.failed
        );
    }
}

fn queue(args: &Args) {
    println!("| Redis | workers | jobs | seconds | jobs/s |");
    println!("|---|---|---|---|---|");
    for redis in [FleetRedis::Standalone, FleetRedis::Cluster] {
        for workers in [1, 2] {
            // The workers start once the jobs wait, so both counts drain the
            // same backlog from the start.
            let mut fleet = builder(args, redis, 1, workers)
                .start()
                .unwrap_or_else(|error| panic!("the fleet starts: {error}"));
            for n in 1..=workers {
                fleet.stop_worker(n).expect("stops a worker");
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let url = fleet.redis_url();
            runtime.block_on(async {
                let config = seawall_queue::fred::prelude::Config::from_url(&url).expect("a URL");
                let queues =
                    Queues::redis(seawall_queue::fred::prelude::Builder::from_config(config))
                        .connect()
                        .await
                        .expect("connects");
                let payloads: Vec<(serde_json::Value, JobOptions)> = (0..args.jobs)
                    .map(|n| {
                        let payload =
                            serde_json::json!({"user_id": 1 + n % 1000, "template": "welcome"});
                        (payload, JobOptions::default())
                    })
                    .collect();
                for batch in payloads.chunks(500) {
                    queues
                        .enqueue_many("email", batch.iter().cloned())
                        .await
                        .expect("enqueues");
                }
            });
            let count = |fleet: &Fleet| -> usize {
                fleet
                    .postgres()
                    .psql("SELECT COUNT(*) FROM email_outbox")
                    .expect("psql")
                    .parse()
                    .expect("a count")
            };
            let before = count(&fleet);
            let began = Instant::now();
            for n in 1..=workers {
                fleet.start_worker(n).expect("starts a worker");
            }
            while count(&fleet) < before + args.jobs {
                assert!(
                    began.elapsed() < Duration::from_secs(600),
                    "the jobs never drained"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let seconds = began.elapsed().as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let rate = args.jobs as f64 / seconds;
            let name = match redis {
                FleetRedis::Cluster => "Cluster",
                _ => "standalone",
            };
            println!(
                "| {name} | {workers} | {} | {seconds:.1} | {rate:.0} |",
                args.jobs
            );
        }
    }
}

fn main() {
    let args = args();
    std::fs::create_dir_all(&args.dir).expect("creates the dir");
    if matches!(args.part.as_str(), "http" | "both") {
        http(&args);
        println!();
    }
    if matches!(args.part.as_str(), "queue" | "both") {
        queue(&args);
    }
    if args.part == "replicas" {
        replicas(&args);
    }
}

/// CPU seconds a PostgreSQL server has used, by kind of process.
#[derive(Debug, Clone, Copy, Default)]
struct PostgresCpu {
    /// Client backends: the statements of the service's connections.
    backends: f64,
    /// WAL senders: streaming to the replicas.
    walsenders: f64,
    /// The postmaster and its auxiliary processes (WAL writer,
    /// checkpointer, background writer, autovacuum, ...).
    other: f64,
}

impl PostgresCpu {
    fn total(&self) -> f64 {
        self.backends + self.walsenders + self.other
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            backends: self.backends - before.backends,
            walsenders: self.walsenders - before.walsenders,
            other: self.other - before.other,
        }
    }
}

/// CPU time of PostgreSQL's server in `data_dir`: the postmaster named in
/// its `postmaster.pid` and every process it started, from
/// `/proc/<pid>/stat`, told apart by the title each sets
/// (`/proc/<pid>/cmdline`: `postgres: walsender ...`, `postgres: <user>
/// <database> <address> ...` for a client backend).
fn postgres_cpu(data_dir: &Path) -> PostgresCpu {
    let mut cpu = PostgresCpu::default();
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap_or_default();
    let Some(postmaster) = text
        .lines()
        .next()
        .and_then(|line| line.trim().parse::<u32>().ok())
    else {
        return cpu;
    };
    let ticks_per_second: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, then
        // utime and stime as the 12th and 13th fields.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields.get(1).and_then(|field| field.parse::<u32>().ok());
        if pid != postmaster && ppid != Some(postmaster) {
            continue;
        }
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&at| fields.get(at).and_then(|field| field.parse::<u64>().ok()))
            .sum();
        #[allow(clippy::cast_precision_loss)]
        let seconds = ticks as f64 / ticks_per_second;
        let title = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let title = String::from_utf8_lossy(&title);
        let kind = title.strip_prefix("postgres: ").unwrap_or("");
        const AUXILIARY: [&str; 8] = [
            "checkpointer",
            "background writer",
            "walwriter",
            "autovacuum",
            "logical replication",
            "archiver",
            "stats",
            "startup",
        ];
        if pid == postmaster || kind.is_empty() || AUXILIARY.iter().any(|aux| kind.starts_with(aux))
        {
            cpu.other += seconds;
        } else if kind.starts_with("walsender") {
            cpu.walsenders += seconds;
        } else {
            cpu.backends += seconds;
        }
    }
    cpu
}

/// The primary's statements that took the most execution time since
/// `pg_stat_statements_reset()`, as table rows: calls per request, mean
/// and total execution time per request, and the statement's first words.
fn statements(fleet: &Fleet, requests: u64) -> String {
    const SQL: &str = "SELECT calls, total_exec_time, \
                       regexp_replace(left(query, 90), '\\s+', ' ', 'g') \
                       FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10";
    let text = fleet
        .postgres()
        .psql(SQL)
        .unwrap_or_else(|error| format!("pg_stat_statements: {error}"));
    let mut rows = String::new();
    #[allow(clippy::cast_precision_loss)]
    let requests = requests.max(1) as f64;
    for line in text.lines() {
        let mut parts = line.splitn(3, '|');
        let (Some(calls), Some(total), Some(query)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let calls: f64 = calls.parse().unwrap_or(0.0);
        let total_ms: f64 = total.parse().unwrap_or(0.0);
        rows.push_str(&format!(
            "|  | {:.3} | {:.1} | {:.1} | `{}` |\n",
            calls / requests,
            total_ms * 1e3 / calls.max(1.0),
            total_ms * 1e3 / requests,
            query.replace('|', "\\|"),
        ));
    }
    rows
}

/// Reads sent to the primary, to the replicas, and to the primary without
/// waiting for a replica, summed over `fleet`'s instances (`GET
/// /api/performance`), of the reads that may go to a replica.
fn reads_by_server(fleet: &Fleet) -> [u64; 3] {
    let mut reads = [0; 3];
    for base in fleet.instance_urls() {
        let output = Command::new("curl")
            .args(["-fsS", "-H"])
            .arg(format!("authorization: Bearer {}", fleet.token()))
            .arg(format!("{base}/api/performance"))
            .output()
            .expect("curl runs");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let database = &report["database"];
        reads[0] += database["primary_reads"].as_u64().unwrap_or(0);
        reads[1] += database["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|replica| replica["reads"].as_u64().unwrap_or(0))
            .sum::<u64>();
        reads[2] += database["primary_reads_not_waited"].as_u64().unwrap_or(0);
    }
    reads
}

fn replicas(args: &Args) {
    let (script, warm) = mixed_workload(args);
    println!(
        "| synchronous_commit | PostgreSQL replicas | requests/s | mean ms | p50 ms | p99 ms | failed | primary CPU µs / request (backends + walsenders + other) | reads on the primary (not waited) | reads on replicas |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut listed = Vec::new();
    for commit in &args.synchronous_commit {
        for count in 0..=2 {
            let mut builder = builder(args, FleetRedis::Standalone, 3, 0)
                .postgres_replicas(count)
                .postgres_setting("synchronous_commit", commit.as_str());
            if args.statements {
                builder =
                    builder.postgres_setting("shared_preload_libraries", "pg_stat_statements");
            }
            let fleet = builder
                .start()
                .unwrap_or_else(|error| panic!("{count} replicas: the fleet starts: {error}"));
            wrk(&script, &fleet.url(), args.connections, &warm);
            if args.statements {
                fleet
                    .postgres()
                    .psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()")
                    .expect("pg_stat_statements is reset");
            }
            let data = fleet.postgres().data_dir();
            let (cpu, reads) = (postgres_cpu(&data), reads_by_server(&fleet));
            let run = wrk(&script, &fleet.url(), args.connections, &args.duration);
            let (cpu_after, reads_after) = (postgres_cpu(&data), reads_by_server(&fleet));
            let used = cpu_after.since(&cpu);
            #[allow(clippy::cast_precision_loss)]
            let (rate, per_request) = (run.requests as f64 / run.seconds, |seconds: f64| {
                seconds * 1e6 / run.requests.max(1) as f64
            });
            let [primary, replicas, not_waited] =
                [0, 1, 2].map(|at| reads_after[at].saturating_sub(reads[at]));
            println!(
                "| {commit} | {count} | {rate:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} ({:.1} + {:.1} + {:.1}) | {primary} ({not_waited}) | {replicas} |",
                run.mean_ms,
                run.p50_ms,
                run.p99_ms,
                run.failed,
                per_request(used.total()),
                per_request(used.backends),
                per_request(used.walsenders),
                per_request(used.other),
            );
            if args.statements {
                listed.push((
                    format!("{commit}, {count} replicas"),
                    statements(&fleet, run.requests),
                ));
            }
        }
    }
    for (row, statements) in listed {
        println!("\nThe primary's statements, {row}:\n");
        println!("| | calls / request | mean µs | µs / request | statement |");
        println!("|---|---|---|---|---|");
        print!("{statements}");
    }
}
