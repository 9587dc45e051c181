//! `seawall-queue-bench`: job-queue throughput on one throwaway redis-server on
//! loopback, for every system in the same run.
//!
//! - `baseline`: the ceiling of a list-based queue. To enqueue one at a time
//!   (`enqueue_single`), one client pushes ids with a bare `RPUSH`, each
//!   awaited: one command and one round trip per job through the client and
//!   runtime seawall uses. End to end, `--jobs` ids are pushed to a list
//!   beforehand (not timed); then C tasks, each on its own connection, loop
//!   `BLMOVE wait processing LEFT RIGHT` and `LREM processing 1 <id>` until the
//!   list is drained: the two commands a reliable list queue needs per job, and
//!   nothing else (no payload, no retries, no events, no bookkeeping).
//! - `seawall`: seawall-queue with its default settings (events on, the last
//!   1,000 completed jobs kept): `enqueue_single` and `enqueue_bulk` (bulks of
//!   100) as for BullMQ, and one worker with a no-op handler draining
//!   pre-filled jobs (`e2e`); that again under a rate limit too high to bind
//!   (`e2e_rate_limited`, 1,000,000 starts a second), with a note under the
//!   table of what counting the starts costs against the run without it;
//!   and flows (`flows`: `--jobs` / 10 flows, at most 10,000, of a parent and
//!   10 children added one after another while a worker of each queue, 8 at
//!   once, runs them, the parent summing its children's results); and, in a
//!   note, how late 10,000 schedulers that tick every second get their jobs
//!   enqueued by one process running them, with the server's time per tick.
//! - `bullmq`: BullMQ, the most used Node.js queue, through
//!   `benches/queue/bullmq.mjs`, one Node.js process per measurement: enqueueing
//!   one job at a time (`enqueue_single`, at most 20,000 jobs), enqueueing with
//!   `addBulk` in chunks of 100 (`enqueue_bulk`), and one `Worker` with a no-op
//!   processor draining pre-filled jobs (`e2e`), and the same flows through
//!   `FlowProducer` (`getChildrenValues` in the parent). It is skipped, with a message,
//!   when `node` or the BullMQ install (`scripts/queue-bench` makes it) is missing.
//! - `apalis`: apalis with apalis-redis, its default configuration, in this
//!   process on the same runtime as seawall (`queue/apalis.rs`): enqueueing one
//!   job at a time (`enqueue_single`, `TaskSink::push`, at most 20,000 jobs),
//!   and one worker with a no-op handler draining pre-filled jobs (`e2e`), its
//!   concurrency set with apalis's `WorkerBuilder::concurrency`.
//!
//! Every measurement starts from an empty database (`FLUSHALL`) and, for each
//! concurrency C, from a fresh fill. Around the timed part the server's
//! statistics are reset (`CONFIG RESETSTAT`) and read (`INFO commandstats`),
//! which gives the Redis commands per job, the top-level commands per job and
//! the server's time in those per job (see [`CommandStats`]).
//!
//! The Rust clients run on one thread (a current-thread Tokio runtime), as
//! BullMQ's Node.js process does, which leaves the other cores to redis-server.
//!
//! Output: one JSON line per measurement on stdout as it completes, then a
//! table. Progress and skipped parts go to stderr.
//!
//! With `--single-rounds N`, the run measures only `enqueue_single`, N rounds
//! of it with every system in turn within a round, and notes under the
//! table each ratio of seawall to another system (jobs a second, server µs
//! per job) as its median and range over the rounds: on a machine whose
//! speed drifts from one minute to the next, a ratio within one round
//! compares runs seconds apart.
//!
//! ```sh
//! scripts/queue-bench --jobs 100000 --concurrency 1,8,32 [--only seawall]
//! scripts/queue-bench --jobs 20000 --single-rounds 9
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::builder::PossibleValuesParser;
use clap::{Arg, ArgAction, Command, value_parser};
use fred::prelude::{Builder, Client, ClientLike, Config, ListInterface};
use fred::types::Value;
use fred::types::lists::LMoveDirection;
use seawall_queue::{Flow, Job, JobOptions, Queues};
use seawall_testkit::{Conn, RedisServer};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

#[path = "queue/apalis.rs"]
mod apalis;

/// Any failure; a benchmark binary only reports it.
type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// The systems measured, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum System {
    /// A bare RPUSH per job to enqueue, a bare BLMOVE + LREM loop end to
    /// end: what Redis allows at best.
    Baseline,
    /// seawall-queue with its default settings.
    Seawall,
    /// BullMQ on Node.js.
    Bullmq,
    /// apalis with apalis-redis, default settings.
    Apalis,
}

impl System {
    const ALL: [Self; 4] = [Self::Baseline, Self::Seawall, Self::Bullmq, Self::Apalis];

    /// The name used by `--only`, in the JSON lines and in the table.
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Seawall => "seawall",
            Self::Bullmq => "bullmq",
            Self::Apalis => "apalis",
        }
    }

    /// Runs every measurement of this system, handing each to `report`.
    fn measure(self, bench: &mut Bench, report: &mut Report) -> Result<()> {
        match self {
            Self::Baseline => {
                report.add(baseline_enqueue(bench)?)?;
                for concurrency in bench.concurrency.clone() {
                    report.add(baseline(bench, concurrency)?)?;
                }
            }
            Self::Seawall => {
                report.add(seawall_enqueue(bench, Scenario::EnqueueSingle)?)?;
                report.add(seawall_enqueue(bench, Scenario::EnqueueBulk)?)?;
                for concurrency in bench.concurrency.clone() {
                    // Runs with and without the limit alternate, three
                    // pairs, so that the machine's drift falls on both.
                    let mut pairs = Vec::new();
                    for _ in 0..RATE_LIMIT_PAIRS {
                        let open = seawall_end_to_end(bench, concurrency, false)?;
                        let limited = seawall_end_to_end(bench, concurrency, true)?;
                        pairs.push((open, limited));
                    }
                    let median = |ratio: &dyn Fn(&(Measurement, Measurement)) -> f64| {
                        let mut ratios: Vec<f64> = pairs.iter().map(ratio).collect();
                        ratios.sort_by(f64::total_cmp);
                        (ratios[ratios.len() / 2] - 1.0) * 100.0
                    };
                    report.note(format!(
                        "seawall at concurrency {concurrency}, under a rate limit that never \
                         binds (median of {RATE_LIMIT_PAIRS} alternating pairs): jobs/s {:+.1} %, \
                         server time per job {:+.1} %",
                        median(&|(open, limited)| limited.jobs_per_sec / open.jobs_per_sec),
                        median(
                            &|(open, limited)| limited.server_us_per_job / open.server_us_per_job
                        ),
                    ));
                    for (open, limited) in pairs {
                        report.add(open)?;
                        report.add(limited)?;
                    }
                }
                report.add(seawall_flows(bench)?)?;
                report.note(seawall_scheduler_lateness(bench)?);
            }
            Self::Bullmq => {
                let bullmq = match Bullmq::find() {
                    Ok(bullmq) => bullmq,
                    Err(why) => {
                        eprintln!("skipping bullmq: {why}");
                        report.note(format!("bullmq skipped: {why}"));
                        return Ok(());
                    }
                };
                report.note(format!(
                    "bullmq {} on Node.js {}, from {}",
                    bullmq.version,
                    bullmq.node_version,
                    bullmq.dir.display()
                ));
                report.add(bullmq.measure(bench, Scenario::EnqueueSingle, 1)?)?;
                report.add(bullmq.measure(bench, Scenario::EnqueueBulk, 1)?)?;
                for concurrency in bench.concurrency.clone() {
                    report.add(bullmq.measure(bench, Scenario::EndToEnd, concurrency)?)?;
                }
                report.add(bullmq.measure(bench, Scenario::Flows, FLOW_CONCURRENCY)?)?;
                report.note(bullmq.scheduler_lateness(bench)?);
            }
            Self::Apalis => apalis::measure(bench, report)?,
        }
        Ok(())
    }
}

/// What a measurement times, in the order the table shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Scenario {
    /// Jobs added one at a time, each awaited before the next.
    EnqueueSingle,
    /// Jobs added in batches, each batch awaited before the next.
    EnqueueBulk,
    /// Pre-filled jobs taken, run (a no-op) and completed by the workers.
    #[serde(rename = "e2e")]
    EndToEnd,
    /// The same under a rate limit too high to bind (1,000,000 a second):
    /// what counting the starts in the fetch script costs.
    #[serde(rename = "e2e_rate_limited")]
    EndToEndRateLimited,
    /// Flows of a parent and [`FLOW_CHILDREN`] children added one after
    /// another while a worker of each queue runs them; the parent sums its
    /// children's results. Timed from the first add to the last parent's
    /// completion; the jobs counted are all of every flow's.
    Flows,
}

impl Scenario {
    /// The name in the JSON lines and the table; also the peer script's `--scenario`.
    fn name(self) -> &'static str {
        match self {
            Self::EnqueueSingle => "enqueue_single",
            Self::EnqueueBulk => "enqueue_bulk",
            Self::EndToEnd => "e2e",
            Self::EndToEndRateLimited => "e2e_rate_limited",
            Self::Flows => "flows",
        }
    }
}

/// One timed run of one scenario on one system.
#[derive(Debug, Clone, Serialize)]
struct Measurement {
    system: System,
    scenario: Scenario,
    /// Jobs in flight at once (workers, or tasks with a connection each).
    concurrency: usize,
    /// Jobs timed.
    jobs: usize,
    seconds: f64,
    jobs_per_sec: f64,
    /// Every Redis command run per job, inside scripts included.
    commands_per_job: f64,
    /// Commands sent by clients per job, see [`CommandStats::top_level`]. Each is a
    /// round trip unless the client pipelines them (BullMQ's `addBulk` does).
    round_trips_per_job: f64,
    /// The server's time per job in those commands, see
    /// [`CommandStats::top_level_usec`].
    server_us_per_job: f64,
    /// Calls of each command per job, inside scripts included (the name as
    /// Redis gives it, `evalsha`, `hset`): where [`commands_per_job`] goes.
    ///
    /// [`commands_per_job`]: Measurement::commands_per_job
    calls_per_job: BTreeMap<String, f64>,
}

impl Measurement {
    /// A measurement of `jobs` jobs in `seconds`, with the counts from `stats`;
    /// `direct` names the commands `system` sends itself and never runs from a
    /// script (see [`CommandStats::top_level`]).
    fn new(
        system: System,
        scenario: Scenario,
        concurrency: usize,
        jobs: usize,
        seconds: f64,
        stats: &CommandStats,
        direct: &[&str],
    ) -> Self {
        let per_job = |count: u64| count as f64 / jobs as f64;
        Self {
            system,
            scenario,
            concurrency,
            jobs,
            seconds,
            jobs_per_sec: jobs as f64 / seconds,
            commands_per_job: per_job(stats.total()),
            round_trips_per_job: per_job(stats.top_level(direct)),
            server_us_per_job: per_job(stats.top_level_usec(direct)),
            calls_per_job: stats
                .calls
                .iter()
                .filter(|(name, _)| name.as_str() != RESETSTAT)
                .map(|(name, calls)| (name.clone(), per_job(*calls)))
                .collect(),
        }
    }
}

/// Collects measurements, writing each as a JSON line as it arrives.
#[derive(Debug, Default)]
struct Report {
    measurements: Vec<Measurement>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, measurement: Measurement) -> Result<()> {
        let line = serde_json::to_string(&measurement)?;
        writeln!(std::io::stdout().lock(), "{line}")?;
        self.measurements.push(measurement);
        Ok(())
    }

    /// A line printed under the table (versions, skipped parts).
    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The measurements as an aligned table, grouped by scenario and concurrency,
    /// then the notes. "of ceiling" is the share of the baseline's jobs/s at the
    /// same scenario and concurrency.
    fn table(&self) -> String {
        let mut rows: Vec<&Measurement> = self.measurements.iter().collect();
        rows.sort_by_key(|m| (m.scenario, m.concurrency));
        let ceiling = |m: &Measurement| {
            let baseline = self.measurements.iter().find(|b| {
                b.system == System::Baseline
                    && b.scenario == m.scenario
                    && b.concurrency == m.concurrency
            })?;
            (m.system != System::Baseline).then(|| m.jobs_per_sec / baseline.jobs_per_sec)
        };
        let mut table = format!(
            "{:<10} {:<15} {:>5} {:>9} {:>9} {:>10} {:>10} {:>9} {:>12} {:>13}\n",
            "system",
            "scenario",
            "conc",
            "jobs",
            "seconds",
            "jobs/s",
            "of ceiling",
            "cmds/job",
            "round trips",
            "server µs/job"
        );
        let mut group = None;
        for m in rows {
            if group.is_some_and(|group| group != (m.scenario, m.concurrency)) {
                table.push('\n');
            }
            group = Some((m.scenario, m.concurrency));
            let of_ceiling =
                ceiling(m).map_or_else(String::new, |share| format!("{:.1} %", share * 100.0));
            let _ = writeln!(
                table,
                "{:<10} {:<15} {:>5} {:>9} {:>9.3} {:>10.0} {:>10} {:>9.2} {:>12.2} {:>13.1}",
                m.system.name(),
                m.scenario.name(),
                m.concurrency,
                m.jobs,
                m.seconds,
                m.jobs_per_sec,
                of_ceiling,
                m.commands_per_job,
                m.round_trips_per_job,
                m.server_us_per_job
            );
        }
        table.push('\n');
        for note in &self.notes {
            let _ = writeln!(table, "{note}");
        }
        table
    }
}

/// Calls per command from one `INFO commandstats` reply, keyed by the name Redis
/// gives (`blmove`, `client|setname`).
///
/// Redis counts a command run by a Lua script (`redis.call`) in commandstats just
/// like one a client sent, so the sum of calls is every command the server ran.
/// Commands a client sent are told apart by name: see [`CommandStats::top_level`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct CommandStats {
    calls: BTreeMap<String, u64>,
    /// Microseconds the server spent per command, inside scripts included.
    usec: BTreeMap<String, u64>,
}

/// Commands only a client can send: in Redis 7 these carry the `noscript` flag
/// (scripts and functions themselves, transactions, connection, client and server
/// management, the blocking list and sorted-set pops), plus `blmpop` and `bzmpop`,
/// which scripts may call (where they never block) but no measured system's
/// scripts do. A container command (`client`) stands for its subcommands.
const TOP_LEVEL_ONLY: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "script",
    "function",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "hello",
    "auth",
    "quit",
    "reset",
    "client",
    "config",
    "wait",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "blpop",
    "brpop",
    "blmove",
    "brpoplpush",
    "bzpopmin",
    "bzpopmax",
    "blmpop",
    "bzmpop",
];

/// The measurement's own command: it resets the statistics, and is counted in them.
const RESETSTAT: &str = "config|resetstat";

impl CommandStats {
    /// Parses `cmdstat_<name>:calls=<n>,...` lines; other lines are ignored.
    fn parse(info: &str) -> Self {
        let mut stats = Self::default();
        for line in info.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|line| line.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| -> Option<u64> {
                fields
                    .split(',')
                    .find_map(|field| field.strip_prefix(key))?
                    .parse()
                    .ok()
            };
            let (Some(calls), Some(usec)) = (field("calls="), field("usec=")) else {
                continue;
            };
            stats.calls.insert(name.to_ascii_lowercase(), calls);
            stats.usec.insert(name.to_ascii_lowercase(), usec);
        }
        stats
    }

    /// Calls of `command`, or of all its subcommands when it is a container.
    fn calls_of(&self, command: &str) -> u64 {
        Self::sum_of(&self.calls, command)
    }

    /// `command`'s entry of `per_command`, summed over its subcommands, the
    /// measurement's own reset left out.
    fn sum_of(per_command: &BTreeMap<String, u64>, command: &str) -> u64 {
        per_command
            .iter()
            .filter(|(name, _)| name.as_str() != RESETSTAT)
            .filter(|(name, _)| name.split('|').next() == Some(command))
            .map(|(_, value)| value)
            .sum()
    }

    /// Every command the server ran, inside scripts included, except the
    /// measurement's own `CONFIG RESETSTAT`.
    fn total(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(name, _)| name.as_str() != RESETSTAT)
            .map(|(_, calls)| calls)
            .sum()
    }

    /// Commands clients sent, as far as commandstats tells: those in
    /// [`TOP_LEVEL_ONLY`], plus `direct`, the commands the measured system sends
    /// itself and never runs from a script (for the baseline, `lrem`). A command a
    /// system both sends and runs from scripts cannot be split and is left out.
    /// Pipelined commands count one each, so this is an upper bound on round trips.
    fn top_level(&self, direct: &[&str]) -> u64 {
        TOP_LEVEL_ONLY
            .iter()
            .chain(direct)
            .map(|command| self.calls_of(command))
            .sum()
    }

    /// The server's time in the commands clients sent (see
    /// [`top_level`](Self::top_level)), in microseconds: a script's time
    /// includes the commands it ran. A blocking command's time is its
    /// work, not its wait.
    fn top_level_usec(&self, direct: &[&str]) -> u64 {
        TOP_LEVEL_ONLY
            .iter()
            .chain(direct)
            .map(|command| Self::sum_of(&self.usec, command))
            .sum()
    }
}

/// The throwaway server every system runs against, with what was asked of the run.
struct Bench {
    server: RedisServer,
    /// A blocking connection for setup and statistics, outside the timed parts.
    admin: Conn,
    runtime: Runtime,
    jobs: usize,
    concurrency: Vec<usize>,
}

impl Bench {
    fn start(jobs: usize, concurrency: Vec<usize>) -> Result<Self> {
        let server = RedisServer::start()?;
        let admin = server.connect()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            server,
            admin,
            runtime,
            jobs,
            concurrency,
        })
    }

    /// Runs one command on the admin connection; an error reply is an error.
    fn cmd(&mut self, args: &[&str]) -> Result<seawall_testkit::Reply> {
        Ok(self.admin.cmd(args)?.into_result()?)
    }

    /// Empties every database, so a measurement starts from nothing.
    fn flush(&mut self) -> Result<()> {
        self.cmd(&["FLUSHALL"])?;
        Ok(())
    }

    /// Zeroes the server's statistics, right before a timed part.
    fn reset_stats(&mut self) -> Result<()> {
        self.cmd(&["CONFIG", "RESETSTAT"])?;
        Ok(())
    }

    /// The command counts since [`Bench::reset_stats`], right after a timed part.
    fn command_stats(&mut self) -> Result<CommandStats> {
        let info = self.cmd(&["INFO", "commandstats"])?;
        let info = info
            .as_str()
            .ok_or("INFO commandstats did not answer text")?;
        Ok(CommandStats::parse(info))
    }

    /// The server's `redis_version`.
    fn redis_version(&mut self) -> Result<String> {
        let info = self.cmd(&["INFO", "server"])?;
        let version = info
            .as_str()
            .and_then(|info| info.lines().find_map(|l| l.strip_prefix("redis_version:")))
            .ok_or("INFO server has no redis_version")?;
        Ok(version.trim().to_owned())
    }

    fn list_len(&mut self, key: &str) -> Result<i64> {
        Ok(self
            .cmd(&["LLEN", key])?
            .as_int()
            .ok_or("LLEN answered no integer")?)
    }
}

/// The baseline's queue: ids wait in one list and sit in the other while they run.
const WAIT: &str = "bench:baseline:wait";
const PROCESSING: &str = "bench:baseline:processing";
/// Ids per RPUSH while filling (not timed).
const FILL_BATCH: usize = 1_000;
/// BLMOVE's timeout: every BLMOVE is sent only for an id known to be waiting, so
/// it never blocks; the timeout only turns a lost id into an error, not a hang.
const BLOCK_SECONDS: f64 = 5.0;

/// The baseline: `bench.jobs` ids drained by `concurrency` tasks with a
/// connection each, BLMOVE then LREM per job.
fn baseline(bench: &mut Bench, concurrency: usize) -> Result<Measurement> {
    let jobs = bench.jobs;
    bench.flush()?;
    let ids: Vec<String> = (0..jobs).map(|id| id.to_string()).collect();
    for batch in ids.chunks(FILL_BATCH) {
        let mut args = vec!["RPUSH", WAIT];
        args.extend(batch.iter().map(String::as_str));
        bench.cmd(&args)?;
    }
    let url = bench.server.url();
    let clients = bench.runtime.block_on(connect(&url, concurrency))?;

    bench.reset_stats()?;
    // Each BLMOVE is sent only after taking one of these tickets, so exactly
    // `jobs` are sent and none waits on an empty list at the end.
    let tickets = Arc::new(AtomicUsize::new(jobs));
    let started = Instant::now();
    bench.runtime.block_on(async {
        let mut tasks = JoinSet::new();
        for client in &clients {
            tasks.spawn(drain(client.clone(), Arc::clone(&tickets)));
        }
        while let Some(task) = tasks.join_next().await {
            task??;
        }
        Ok::<_, Error>(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = bench.command_stats()?;

    bench.runtime.block_on(async {
        for client in &clients {
            client.quit().await?;
        }
        Ok::<_, Error>(())
    })?;
    let left = (bench.list_len(WAIT)?, bench.list_len(PROCESSING)?);
    if left != (0, 0) {
        return Err(format!("baseline left {} waiting and {} processing", left.0, left.1).into());
    }
    // The baseline runs no scripts: everything it sends is top level.
    Ok(Measurement::new(
        System::Baseline,
        Scenario::EndToEnd,
        concurrency,
        jobs,
        seconds,
        &stats,
        &["lrem"],
    ))
}

/// The baseline of enqueueing one at a time: an id pushed to a list with a
/// bare `RPUSH`, each awaited before the next, through the client and
/// runtime seawall uses. One command and one round trip per job, so no
/// queue whose enqueue is one call can go faster on this machine.
fn baseline_enqueue(bench: &mut Bench) -> Result<Measurement> {
    let jobs = bench.jobs.min(SINGLE_JOBS);
    bench.flush()?;
    let url = bench.server.url();
    let client = bench
        .runtime
        .block_on(connect(&url, 1))?
        .pop()
        .ok_or("no client")?;
    bench.reset_stats()?;
    let started = Instant::now();
    bench.runtime.block_on(async {
        for n in 0..jobs {
            let _: i64 = client.rpush(WAIT, n).await?;
        }
        client.quit().await?;
        Ok::<_, Error>(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = bench.command_stats()?;
    let pushed = bench.list_len(WAIT)?;
    if pushed != jobs as i64 {
        return Err(format!("the baseline pushed {pushed} of {jobs} ids").into());
    }
    Ok(Measurement::new(
        System::Baseline,
        Scenario::EnqueueSingle,
        1,
        jobs,
        seconds,
        &stats,
        &["rpush"],
    ))
}

/// `count` connected clients, each with a connection of its own.
async fn connect(url: &str, count: usize) -> Result<Vec<Client>> {
    let config = Config::from_url(url)?;
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let client = Builder::from_config(config.clone()).build()?;
        client.init().await?;
        clients.push(client);
    }
    Ok(clients)
}

/// One baseline worker: takes a ticket, moves an id to `PROCESSING`, removes it.
async fn drain(client: Client, tickets: Arc<AtomicUsize>) -> Result<()> {
    while tickets
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
    {
        let id: Value = client
            .blmove(
                WAIT,
                PROCESSING,
                LMoveDirection::Left,
                LMoveDirection::Right,
                BLOCK_SECONDS,
            )
            .await?;
        if id.is_null() {
            return Err("BLMOVE timed out although an id was left to take".into());
        }
        let removed: i64 = client.lrem(PROCESSING, 1, id).await?;
        if removed != 1 {
            return Err(format!("LREM removed {removed} ids instead of 1").into());
        }
    }
    Ok(())
}

/// Children per flow in the `flows` scenario.
const FLOW_CHILDREN: usize = 10;
/// The most flows the `flows` scenario adds (`--jobs` / 10 if fewer).
const MAX_FLOWS: usize = 10_000;
/// Each queue's worker's concurrency in the `flows` scenario.
const FLOW_CONCURRENCY: usize = 8;

/// How many flows the `flows` scenario adds for `--jobs`.
fn flow_count(jobs: usize) -> usize {
    (jobs / FLOW_CHILDREN).clamp(1, MAX_FLOWS)
}

/// Flows added one after another while a worker of each queue runs them.
fn seawall_flows(bench: &mut Bench) -> Result<Measurement> {
    bench.flush()?;
    let flows = flow_count(bench.jobs);
    let queues = bench
        .runtime
        .block_on(seawall_queues(&bench.server.url()))?;
    let options = JobOptions::new();
    bench.reset_stats()?;
    let started = Instant::now();
    bench.runtime.block_on(async {
        let parts = queues
            .worker("parts")?
            .concurrency(FLOW_CONCURRENCY)?
            .start(|job: Job<usize>| std::future::ready(Ok(job.payload)));
        let parents = queues
            .worker("parents")?
            .concurrency(FLOW_CONCURRENCY)?
            .start(|job: Job<usize>| async move {
                let mut sum = 0;
                for child in job.children().await? {
                    sum += child.result_as::<usize>()?.unwrap_or(0);
                }
                Ok::<_, seawall_queue::JobError>(sum)
            });
        for n in 0..flows {
            let mut flow = Flow::new("parents", &n, &options)?;
            for k in 0..FLOW_CHILDREN {
                flow = flow.child(Flow::new("parts", &k, &options)?);
            }
            queues.enqueue_flow(flow).await?;
        }
        while parents.stats().completed < flows as u64 {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        parts.shutdown(std::time::Duration::from_secs(5)).await;
        parents.shutdown(std::time::Duration::from_secs(5)).await;
        Ok::<_, Error>(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let commands = bench.command_stats()?;
    for queue in ["parts", "parents"] {
        let counts = bench.runtime.block_on(queues.counts(queue))?;
        if counts.waiting + counts.active + counts.dead + counts.waiting_children > 0 {
            return Err(format!("seawall's flows left {queue} with {counts:?}").into());
        }
    }
    Ok(Measurement::new(
        System::Seawall,
        Scenario::Flows,
        FLOW_CONCURRENCY,
        flows * (FLOW_CHILDREN + 1),
        seconds,
        &commands,
        &[],
    ))
}

/// Schedulers in the lateness measurement, each every second.
const SCHEDULERS: usize = 10_000;
/// Ticks of every scheduler the lateness measurement waits for.
const SCHEDULER_TICKS: u64 = 3;
/// The worker's concurrency while the start lateness is measured.
const SCHEDULER_WORKER_CONCURRENCY: usize = 32;

/// Milliseconds since the epoch.
fn epoch_ms(at: std::time::SystemTime) -> Result<u64> {
    Ok(u64::try_from(
        at.duration_since(std::time::UNIX_EPOCH)?.as_millis(),
    )?)
}

/// The p50, p99 and max of `values`, sorted here.
fn quantiles(mut values: Vec<u64>) -> Result<(u64, u64, u64)> {
    values.sort_unstable();
    let at = |per_mille: usize| values[(values.len() - 1) * per_mille / 1_000];
    let max = *values.last().ok_or("no values")?;
    Ok((at(500), at(990), max))
}

/// [`SCHEDULERS`] schedulers every second, run by one process for
/// [`SCHEDULER_TICKS`] ticks of each, twice. First with the runner alone:
/// how late each tick's job was in the queue (its `enqueued` event, a
/// stream position on the server's clock, less the tick's time; a job
/// enqueued ahead of its tick, delayed until it, is 0 late) and the
/// server's time per tick. Then with one worker (concurrency
/// [`SCHEDULER_WORKER_CONCURRENCY`], no-op handler) beside it: how late each
/// tick's job started (its run's start on the server's clock less the
/// tick's time), which BullMQ's figure is measured as too. Every scheduler
/// ticks on the same second, so each second asks for [`SCHEDULERS`] jobs at
/// once.
fn seawall_scheduler_lateness(bench: &mut Bench) -> Result<String> {
    let queued = scheduler_run(bench, None)?;
    let (queue_p50, queue_p99, queue_max) = quantiles(queued.lateness)?;
    let stats = queued.stats;
    // The server's time went to every tick, those left out too.
    let per_tick = (queued.ticks + queued.early) as f64;
    let started = scheduler_run(bench, Some(SCHEDULER_WORKER_CONCURRENCY))?;
    let run_us = started.stats.top_level_usec(&[]) as f64 / (started.ticks + started.early) as f64;
    let (start_p50, start_p99, start_max) = quantiles(started.lateness)?;
    Ok(format!(
        "seawall schedulers: {SCHEDULERS} every second, {SCHEDULER_TICKS} ticks each. \
         In the queue (runner alone, {} ticks in {:.1} s, {} due before it had run a \
         second left out): lateness p50 {queue_p50} ms, p99 {queue_p99} ms, max {queue_max} ms; server \
         time per tick {:.1} µs, {:.2} commands per tick. Started (a worker at concurrency \
         {SCHEDULER_WORKER_CONCURRENCY} beside it, {} ticks in {:.1} s, {} left out): \
         lateness p50 {start_p50} ms, p99 {start_p99} ms, max {start_max} ms; server time \
         per tick (run included) {run_us:.1} µs",
        queued.ticks,
        queued.seconds,
        queued.early,
        stats.top_level_usec(&[]) as f64 / per_tick,
        stats.total() as f64 / per_tick,
        started.ticks,
        started.seconds,
        started.early,
    ))
}

/// What one run of the schedulers measured: per tick, how late its job was
/// (in the queue, or started), over how many ticks and seconds.
struct SchedulerRun {
    lateness: Vec<u64>,
    ticks: u64,
    /// Ticks due before the runner had run a second, left out of
    /// `lateness`.
    early: u64,
    seconds: f64,
    /// The server's statistics over the timed part.
    stats: CommandStats,
}

/// One run of [`seawall_scheduler_lateness`]: the runner alone (`worker`
/// `None`), timed from the server's statistics' reset; or with a worker of
/// that concurrency, measuring when each tick's job started.
fn scheduler_run(bench: &mut Bench, worker: Option<usize>) -> Result<SchedulerRun> {
    bench.flush()?;
    let url = bench.server.url();
    let queues = bench.runtime.block_on(async {
        let settings = seawall_queue::Settings {
            events_max_len: 1_000_000,
            keep_completed: 1_000_000,
            ..seawall_queue::Settings::default()
        };
        let builder = Builder::from_config(Config::from_url(&url)?);
        let queues = Queues::redis(builder).settings(settings).connect().await?;
        let every = seawall_queue::Schedule::every(std::time::Duration::from_secs(1))?;
        let options = JobOptions::new();
        for n in 0..SCHEDULERS {
            queues
                .upsert_scheduler("ticks", &format!("s{n}"), &every, &n, &options)
                .await?;
        }
        Ok::<_, Error>(queues)
    })?;
    bench.reset_stats()?;
    let began = Instant::now();
    // A scheduler's first tick is the first after its upsert, and the
    // upserts above take seconds: ticks due before the runner started, or
    // within its first second, when it catches up with those, measure the
    // set-up, not a running runner, and are left out.
    let runner_from = epoch_ms(std::time::SystemTime::now())? + 1_000;
    let wanted = SCHEDULERS as u64 * SCHEDULER_TICKS;
    bench.runtime.block_on(async {
        let runner = queues.run_schedulers("ticks")?;
        let worker = match worker {
            Some(concurrency) => Some(
                queues
                    .worker("ticks")?
                    .concurrency(concurrency)?
                    .start(|_job: Job<usize>| std::future::ready(Ok(()))),
            ),
            None => None,
        };
        loop {
            let done = match &worker {
                Some(worker) => worker.stats().completed,
                None => runner.stats().enqueued,
            };
            if done >= wanted {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        runner.shutdown().await;
        if let Some(worker) = worker {
            worker.shutdown(std::time::Duration::from_secs(5)).await;
        }
        Ok::<_, Error>(())
    })?;
    let seconds = began.elapsed().as_secs_f64();
    let stats = bench.command_stats()?;
    let lateness = bench.runtime.block_on(async {
        let mut lateness = Vec::new();
        let mut early = 0_u64;
        let mut after: Option<String> = None;
        loop {
            let events = queues.events("ticks", after.as_deref(), 1_000).await?;
            let Some(last) = events.last() else { break };
            after = Some(last.position.clone());
            for event in events.into_iter().filter(|event| event.kind == "enqueued") {
                let info = queues.job("ticks", &event.job).await?.ok_or("a job")?;
                let due = epoch_ms(info.tick.ok_or("a tick's job")?.at)?;
                if due < runner_from {
                    early += 1;
                    continue;
                }
                let at = match worker {
                    // Jobs enqueued ahead for ticks after the last counted
                    // have not started: they are left out.
                    Some(_) => match info.started_at {
                        Some(started) => epoch_ms(started)?,
                        None => continue,
                    },
                    None => event
                        .position
                        .split('-')
                        .next()
                        .and_then(|ms| ms.parse().ok())
                        .ok_or("an event position")?,
                };
                lateness.push(at.saturating_sub(due));
            }
        }
        Ok::<_, Error>((lateness, early))
    })?;
    let (lateness, early) = lateness;
    Ok(SchedulerRun {
        ticks: lateness.len() as u64,
        lateness,
        early,
        seconds,
        stats,
    })
}

/// Pairs of end-to-end runs with and without a rate limit, per concurrency.
const RATE_LIMIT_PAIRS: usize = 3;

/// Jobs `enqueue_single` times at most, as the BullMQ script does.
const SINGLE_JOBS: usize = 20_000;
/// Jobs per `enqueue_many` call in `enqueue_bulk`, as BullMQ's `addBulk` chunks.
const BULK: usize = 100;

/// seawall-queue's handle on the bench server, default settings.
async fn seawall_queues(url: &str) -> Result<Queues> {
    let builder = Builder::from_config(Config::from_url(url)?);
    Ok(Queues::redis(builder).connect().await?)
}

/// Enqueueing one job at a time (each awaited) or in bulks of [`BULK`].
fn seawall_enqueue(bench: &mut Bench, scenario: Scenario) -> Result<Measurement> {
    bench.flush()?;
    let jobs = match scenario {
        Scenario::EnqueueSingle => bench.jobs.min(SINGLE_JOBS),
        _ => bench.jobs,
    };
    let queues = bench
        .runtime
        .block_on(seawall_queues(&bench.server.url()))?;
    let options = JobOptions::new();
    bench.reset_stats()?;
    let started = Instant::now();
    bench.runtime.block_on(async {
        if scenario == Scenario::EnqueueSingle {
            for n in 0..jobs {
                queues.enqueue("bench", &n, &options).await?;
            }
        } else {
            for first in (0..jobs).step_by(BULK) {
                let last = (first + BULK).min(jobs);
                queues
                    .enqueue_many("bench", (first..last).map(|n| (n, options.clone())))
                    .await?;
            }
        }
        Ok::<_, Error>(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = bench.command_stats()?;
    let waiting = bench.runtime.block_on(queues.counts("bench"))?.waiting;
    if waiting != jobs as u64 {
        return Err(format!("seawall enqueued {waiting} of {jobs} jobs").into());
    }
    Ok(Measurement::new(
        System::Seawall,
        scenario,
        1,
        jobs,
        seconds,
        &stats,
        &[],
    ))
}

/// Pre-filled jobs (not timed) drained by one worker with a no-op handler;
/// `rate_limited`, under a limit of 1,000,000 starts a second, which the
/// worker never reaches.
fn seawall_end_to_end(
    bench: &mut Bench,
    concurrency: usize,
    rate_limited: bool,
) -> Result<Measurement> {
    bench.flush()?;
    let jobs = bench.jobs;
    let queues = bench.runtime.block_on(async {
        let queues = seawall_queues(&bench.server.url()).await?;
        if rate_limited {
            queues
                .set_rate_limit("bench", 1_000_000, std::time::Duration::from_secs(1))
                .await?;
        }
        let options = JobOptions::new();
        queues
            .enqueue_many("bench", (0..jobs).map(|n| (n, options.clone())))
            .await?;
        Ok::<_, Error>(queues)
    })?;
    bench.reset_stats()?;
    let started = Instant::now();
    let stats = bench.runtime.block_on(async {
        let worker = queues
            .worker("bench")?
            .concurrency(concurrency)?
            .start(|_job: Job<usize>| std::future::ready(Ok(())));
        while worker.stats().completed < jobs as u64 {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        Ok::<_, Error>(worker.shutdown(std::time::Duration::from_secs(5)).await)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let commands = bench.command_stats()?;
    let counts = bench.runtime.block_on(queues.counts("bench"))?;
    if stats.completed != jobs as u64 || counts.waiting + counts.active + counts.dead > 0 {
        return Err(format!("seawall ended with {stats:?} and {counts:?}").into());
    }
    let scenario = if rate_limited {
        Scenario::EndToEndRateLimited
    } else {
        Scenario::EndToEnd
    };
    Ok(Measurement::new(
        System::Seawall,
        scenario,
        concurrency,
        jobs,
        seconds,
        &commands,
        &[],
    ))
}

/// A BullMQ install that can run `benches/queue/bullmq.mjs`.
struct Bullmq {
    node: PathBuf,
    node_version: String,
    /// Holds `node_modules/bullmq`; `BULLMQ_DIR`, or `~/.cache/seawall/bullmq`.
    dir: PathBuf,
    version: String,
}

/// BullMQ's commands outside its scripts, as `MONITOR` shows them: `evalsha`
/// (`eval` after a NOSCRIPT) for every operation and `bzpopmin` when a worker
/// waits for jobs, all in [`TOP_LEVEL_ONLY`]; and, when a connection or queue is
/// set up, `hello`, `client`, `info` and one `hset`, outside the timed
/// parts (the `hset` may land in one; as its scripts run `hset` too, it is not
/// counted as a round trip). So nothing is added to [`TOP_LEVEL_ONLY`].
const BULLMQ_DIRECT: &[&str] = &[];

/// What `bullmq.mjs` prints for one measurement.
#[derive(Debug, Deserialize)]
struct PeerResult {
    scenario: String,
    concurrency: usize,
    jobs: usize,
    seconds: f64,
    failed: u64,
    /// The raw `INFO commandstats` reply, read right after the timed part.
    commandstats: String,
    /// The schedulers scenario's start lateness in ms: p50, p99, max.
    #[serde(default)]
    lateness_ms: Option<[u64; 3]>,
}

impl Bullmq {
    /// The `node` binary (`NODE`, or `node` on the PATH) and the BullMQ install,
    /// or why they cannot be used.
    fn find() -> Result<Self, String> {
        let node = PathBuf::from(std::env::var_os("NODE").unwrap_or_else(|| "node".into()));
        let output = Process::new(&node)
            .arg("--version")
            .stderr(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "`{}` could not be run ({e}); install Node.js 18 or newer (apt-get install -y nodejs npm) \
                     and run scripts/queue-bench",
                    node.display()
                )
            })?;
        if !output.status.success() {
            return Err(format!("`{} --version` failed", node.display()));
        }
        let node_version = String::from_utf8_lossy(&output.stdout).trim().to_owned();

        let dir = match std::env::var_os("BULLMQ_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?)
                .join(".cache/seawall/bullmq"),
        };
        let manifest = dir.join("node_modules/bullmq/package.json");
        let manifest = std::fs::read_to_string(&manifest).map_err(|e| {
            format!(
                "BullMQ is not installed in {} ({e}); scripts/queue-bench installs it",
                dir.display()
            )
        })?;
        let version = serde_json::from_str::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|manifest| manifest["version"].as_str().map(str::to_owned))
            .ok_or("node_modules/bullmq/package.json has no version")?;
        Ok(Self {
            node,
            node_version,
            dir,
            version,
        })
    }

    /// One run of `bullmq.mjs`, on a flushed server.
    fn measure(
        &self,
        bench: &mut Bench,
        scenario: Scenario,
        concurrency: usize,
    ) -> Result<Measurement> {
        let (result, line) = self.run(
            bench,
            scenario.name(),
            &[
                ("--jobs", bench.jobs.to_string()),
                ("--concurrency", concurrency.to_string()),
            ],
        )?;
        if result.scenario != scenario.name() || result.concurrency != concurrency {
            return Err(format!("asked bullmq.mjs for {scenario:?}, got {line}").into());
        }
        if result.failed > 0 {
            return Err(format!("{} BullMQ jobs failed in {scenario:?}", result.failed).into());
        }
        Ok(Measurement::new(
            System::Bullmq,
            scenario,
            concurrency,
            result.jobs,
            result.seconds,
            &CommandStats::parse(&result.commandstats),
            BULLMQ_DIRECT,
        ))
    }

    /// [`SCHEDULERS`] job schedulers every second, run by one worker at
    /// [`SCHEDULER_WORKER_CONCURRENCY`] for [`SCHEDULER_TICKS`] ticks each
    /// (bullmq.mjs's `schedulers`): how late each tick's job started, as
    /// [`seawall_scheduler_lateness`] measures seawall's.
    fn scheduler_lateness(&self, bench: &mut Bench) -> Result<String> {
        let (result, line) = self.run(
            bench,
            "schedulers",
            &[
                ("--jobs", SCHEDULERS.to_string()),
                ("--ticks", SCHEDULER_TICKS.to_string()),
                ("--concurrency", SCHEDULER_WORKER_CONCURRENCY.to_string()),
            ],
        )?;
        let [p50, p99, max] = result
            .lateness_ms
            .ok_or_else(|| format!("bullmq.mjs gave no lateness: {line}"))?;
        if result.failed > 0 {
            return Err(format!("{} BullMQ scheduler jobs failed", result.failed).into());
        }
        let stats = CommandStats::parse(&result.commandstats);
        Ok(format!(
            "bullmq job schedulers: {SCHEDULERS} every second (`pattern: '* * * * * *'`), \
             {SCHEDULER_TICKS} ticks each, a worker at concurrency \
             {SCHEDULER_WORKER_CONCURRENCY} ({} ticks in {:.1} s): started lateness p50 {p50} \
             ms, p99 {p99} ms, max {max} ms; server time per tick (run included) {:.1} µs",
            result.jobs,
            result.seconds,
            stats.top_level_usec(BULLMQ_DIRECT) as f64 / result.jobs as f64,
        ))
    }

    /// Runs `benches/queue/bullmq.mjs` for `scenario` with `args` on a
    /// flushed server: its result, and the line it was read from.
    fn run(
        &self,
        bench: &mut Bench,
        scenario: &str,
        args: &[(&str, String)],
    ) -> Result<(PeerResult, String)> {
        bench.flush()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("queue/bullmq.mjs");
        let mut process = Process::new(&self.node);
        process
            .arg(&script)
            .args(["--url", &bench.server.url(), "--scenario", scenario]);
        for (flag, value) in args {
            process.args([*flag, value.as_str()]);
        }
        let output = process
            .env("BULLMQ_DIR", &self.dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!("{} failed: {}", script.display(), output.status).into());
        }
        let stdout = String::from_utf8(output.stdout)?;
        let line = stdout
            .lines()
            .find(|line| line.starts_with('{'))
            .ok_or_else(|| format!("{} printed no result", script.display()))?
            .to_owned();
        Ok((serde_json::from_str(&line)?, line))
    }
}

fn command() -> Command {
    Command::new("seawall-queue-bench")
        .about(
            "Job-queue throughput on a throwaway redis-server: a bare BLMOVE + LREM \
             baseline, BullMQ and apalis, with Redis commands and round trips per job",
        )
        .arg(
            Arg::new("jobs")
                .long("jobs")
                .default_value("100000")
                .value_parser(value_parser!(usize))
                .help("Jobs per measurement (enqueue_single times at most 20,000)"),
        )
        .arg(
            Arg::new("concurrency")
                .long("concurrency")
                .default_value("1,8,32")
                .value_delimiter(',')
                .action(ArgAction::Set)
                .value_parser(value_parser!(usize))
                .help("Worker concurrencies to measure, comma-separated"),
        )
        .arg(
            Arg::new("only")
                .long("only")
                .value_parser(PossibleValuesParser::new(System::ALL.map(System::name)))
                .help("Measure one system only"),
        )
        .arg(
            Arg::new("single-rounds")
                .long("single-rounds")
                .value_parser(value_parser!(usize))
                .help(
                    "Instead of every scenario: this many rounds of enqueueing one job at a \
                     time, every system in turn within a round, with each round's ratios",
                ),
        )
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let jobs = *matches.get_one::<usize>("jobs").expect("defaulted");
    let concurrency: Vec<usize> = matches
        .get_many::<usize>("concurrency")
        .expect("defaulted")
        .copied()
        .collect();
    if jobs == 0 || concurrency.contains(&0) {
        eprintln!("--jobs and every --concurrency must be positive");
        return ExitCode::from(2);
    }
    let only = matches.get_one::<String>("only");
    let systems = System::ALL
        .into_iter()
        .filter(|system| only.is_none_or(|only| only == system.name()));
    let outcome = match matches.get_one::<usize>("single-rounds") {
        Some(0) => {
            eprintln!("--single-rounds must be positive");
            return ExitCode::from(2);
        }
        Some(&rounds) => run_single_rounds(jobs, rounds, &systems.collect::<Vec<_>>()),
        None => run(jobs, concurrency, systems),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seawall-queue-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(jobs: usize, concurrency: Vec<usize>, systems: impl Iterator<Item = System>) -> Result<()> {
    let mut bench = Bench::start(jobs, concurrency)?;
    let mut report = Report::default();
    report.note(
        "round trips: commands clients sent per job, not those run inside scripts; \
         pipelined commands (BullMQ's addBulk) count one each"
            .to_owned(),
    );
    report.note(format!(
        "redis-server {} on {}; {jobs} jobs per measurement",
        bench.redis_version()?,
        bench.server.addr()
    ));
    for system in systems {
        eprintln!("measuring {}", system.name());
        system.measure(&mut bench, &mut report)?;
    }
    write!(std::io::stdout().lock(), "\n{}", report.table())?;
    Ok(())
}

/// `rounds` rounds of enqueueing one job at a time (`enqueue_single`), each
/// system of `systems` in turn within a round: on a machine whose speed
/// drifts by tens of percent from one minute to the next, a ratio taken
/// within one round compares runs seconds apart. Notes each ratio's median
/// and range over the rounds.
fn run_single_rounds(jobs: usize, rounds: usize, systems: &[System]) -> Result<()> {
    let mut bench = Bench::start(jobs, vec![1])?;
    let mut report = Report::default();
    report.note(format!(
        "redis-server {} on {}; {} jobs per measurement; {rounds} rounds of {}",
        bench.redis_version()?,
        bench.server.addr(),
        jobs.min(SINGLE_JOBS),
        systems
            .iter()
            .map(|system| system.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let bullmq = if systems.contains(&System::Bullmq) {
        match Bullmq::find() {
            Ok(bullmq) => Some(bullmq),
            Err(why) => {
                eprintln!("skipping bullmq: {why}");
                report.note(format!("bullmq skipped: {why}"));
                None
            }
        }
    } else {
        None
    };
    // Per round, each system's jobs a second and server µs per job.
    let mut results: Vec<BTreeMap<&'static str, (f64, f64)>> = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        let mut this_round = BTreeMap::new();
        for &system in systems {
            let measurement = match system {
                System::Baseline => baseline_enqueue(&mut bench)?,
                System::Seawall => seawall_enqueue(&mut bench, Scenario::EnqueueSingle)?,
                System::Bullmq => match &bullmq {
                    Some(bullmq) => bullmq.measure(&mut bench, Scenario::EnqueueSingle, 1)?,
                    None => continue,
                },
                System::Apalis => apalis::enqueue(&mut bench)?,
            };
            this_round.insert(
                system.name(),
                (measurement.jobs_per_sec, measurement.server_us_per_job),
            );
            report.add(measurement)?;
        }
        results.push(this_round);
    }
    let ratios = |of: fn(&(f64, f64)) -> f64, numerator: &str, denominator: &str| {
        let mut ratios: Vec<f64> = results
            .iter()
            .filter_map(|round| Some(of(round.get(numerator)?) / of(round.get(denominator)?)))
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    };
    for (what, of, numerator, denominator) in [
        (
            "jobs/s",
            (|pair| pair.0) as fn(&(f64, f64)) -> f64,
            "seawall",
            "apalis",
        ),
        ("jobs/s", |pair| pair.0, "seawall", "bullmq"),
        ("jobs/s", |pair| pair.0, "seawall", "baseline"),
        ("server µs per job", |pair| pair.1, "seawall", "apalis"),
        ("server µs per job", |pair| pair.1, "seawall", "bullmq"),
    ] {
        let ratios = ratios(of, numerator, denominator);
        if let (Some(low), Some(high)) = (ratios.first(), ratios.last()) {
            report.note(format!(
                "{numerator} ÷ {denominator}, {what}: median {:.2} ({low:.2}–{high:.2}) over {} rounds",
                ratios[ratios.len() / 2],
                ratios.len()
            ));
        }
    }
    write!(std::io::stdout().lock(), "\n{}", report.table())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Redis 7.0 reply after a BullMQ worker ran 2,000 no-op jobs, cut down.
    const SAMPLE: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=2006,usec=242530,usec_per_call=120.90,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_eval:calls=3,usec=2427,usec_per_call=809.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_bzpopmin:calls=1,usec=15,usec_per_call=15.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hset:calls=2000,usec=2964,usec_per_call=1.48,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_lrem:calls=2000,usec=2975,usec_per_call=1.49,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_config|resetstat:calls=1,usec=87,usec_per_call=87.00,rejected_calls=0,failed_calls=0\r\n\
        \r\n";

    #[test]
    fn parses_calls_per_command() {
        let stats = CommandStats::parse(SAMPLE);
        assert_eq!(stats.calls.len(), 7);
        assert_eq!(stats.calls["evalsha"], 2006);
        assert_eq!(stats.calls["client|setname"], 2);
        assert_eq!(stats.calls_of("client"), 2);
        assert_eq!(stats.calls_of("config"), 0, "the measurement's own reset");
    }

    #[test]
    fn total_counts_script_commands_but_not_the_reset() {
        let stats = CommandStats::parse(SAMPLE);
        assert_eq!(stats.total(), 2006 + 3 + 1 + 2000 + 2000 + 2);
    }

    #[test]
    fn top_level_counts_client_only_commands_and_the_direct_ones() {
        let stats = CommandStats::parse(SAMPLE);
        // evalsha, eval, bzpopmin, client|setname; hset and lrem ran in scripts.
        assert_eq!(stats.top_level(&[]), 2006 + 3 + 1 + 2);
        // For a system that sends LREM itself.
        assert_eq!(stats.top_level(&["lrem"]), 2006 + 3 + 1 + 2 + 2000);
    }

    #[test]
    fn json_names_are_the_table_names() {
        for system in System::ALL {
            assert_eq!(serde_json::json!(system), system.name());
        }
        for scenario in [
            Scenario::EnqueueSingle,
            Scenario::EnqueueBulk,
            Scenario::EndToEnd,
            Scenario::EndToEndRateLimited,
            Scenario::Flows,
        ] {
            assert_eq!(serde_json::json!(scenario), scenario.name());
        }
    }

    #[test]
    fn top_level_time_is_the_time_of_the_commands_clients_sent() {
        let stats = CommandStats::parse(SAMPLE);
        assert_eq!(stats.top_level_usec(&[]), 242_530 + 2_427 + 15 + 3);
        assert_eq!(
            stats.top_level_usec(&["lrem"]),
            242_530 + 2_427 + 15 + 3 + 2_975
        );
    }

    #[test]
    fn ignores_other_lines() {
        let stats = CommandStats::parse("# Server\r\nredis_version:7.0.15\r\ncmdstat_get:bad\r\n");
        assert_eq!(stats, CommandStats::default());
    }
}
