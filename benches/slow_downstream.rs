//! `seawall-slow-downstream`: a worker in front of a downstream that serves
//! fewer calls at once than the worker runs jobs, with a fixed concurrency
//! against an adaptive limit (seawall-ratelimit's `AdaptiveLimiter` as the
//! worker's `concurrency_limit`), in one run.
//!
//! The downstream stands for a mail server or a database: it serves
//! `--capacity` calls at once, each taking `--service` (`--slowdown` times
//! that from `--slow-from` to `--slow-until` after the worker starts), in
//! arrival order, and a call whose caller has given up is still served (a
//! server does not know its client left), so the capacity it spends on it
//! is lost. Every job makes one call; a run that takes longer than the
//! job's `--timeout` is stopped and retried after 10 ms. The jobs
//! (`--jobs`) are enqueued beforehand on one throwaway redis-server on
//! loopback (not timed), in a queue of each configuration's own; a worker
//! then runs them until all are completed or `--limit` has passed.
//!
//! For each configuration it prints the jobs completed per second, the
//! runs stopped by their timeout, the downstream calls served for a caller
//! that had gone, and the adaptive limit's median and lowest (read every
//! 50 ms while the worker runs).
//!
//! ```sh
//! cargo run --release -p seawall-benches --bin seawall-slow-downstream -- \
//!     --jobs 4000 --capacity 8 --service 20ms --timeout 500ms \
//!     --slowdown 5 --slow-from 2s --slow-until 8s
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Arg, Command, value_parser};
use fred::prelude::{Builder, Config};
use seawall_queue::{Backoff, Job, JobError, JobOptions, Queues};
use seawall_ratelimit::{AdaptiveLimiter, Aimd, Gradient};
use seawall_testkit::RedisServer;
use tokio::sync::{Semaphore, oneshot};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A server of `capacity` calls at once, `service` each, first come first
/// served; a call given up by its caller is served all the same.
struct Downstream {
    permits: Arc<Semaphore>,
    service: Duration,
    /// `slowdown` times slower from `slow.0` to `slow.1` after `started`.
    slowdown: u32,
    slow: (Duration, Duration),
    started: Instant,
    /// Calls served after their caller had gone.
    wasted: AtomicU64,
}

impl Downstream {
    async fn call(self: &Arc<Self>) {
        let (done, answer) = oneshot::channel();
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_permit) = server.permits.acquire().await else {
                return;
            };
            tokio::time::sleep(server.service_now()).await;
            if done.send(()).is_err() {
                server.wasted.fetch_add(1, Ordering::Relaxed);
            }
        });
        // The sender goes without sending only when the downstream closes,
        // after the configuration's worker has stopped.
        let _ = answer.await;
    }

    fn service_now(&self) -> Duration {
        let now = self.started.elapsed();
        if (self.slow.0..self.slow.1).contains(&now) {
            self.service * self.slowdown
        } else {
            self.service
        }
    }
}

/// How the worker's concurrency is set.
#[derive(Clone, Copy)]
enum Setting {
    Fixed(usize),
    Gradient(usize),
    Aimd(usize),
}

impl Setting {
    fn label(self) -> String {
        match self {
            Self::Fixed(n) => format!("fixed {n}"),
            Self::Gradient(n) => format!("adaptive, Gradient (1 to {n})"),
            Self::Aimd(n) => format!("adaptive, AIMD (1 to {n})"),
        }
    }

    /// Its queue's name, before the configuration's place in the run.
    fn queue(self) -> String {
        match self {
            Self::Fixed(n) => format!("fixed-{n}"),
            Self::Gradient(n) => format!("gradient-{n}"),
            Self::Aimd(n) => format!("aimd-{n}"),
        }
    }
}

struct Row {
    setting: Setting,
    completed: u64,
    seconds: f64,
    timed_out: u64,
    wasted: u64,
    /// Median and lowest of the limit while the worker ran.
    limit: Option<(u64, u64)>,
}

struct Run {
    jobs: u64,
    capacity: usize,
    service: Duration,
    slowdown: u32,
    slow: (Duration, Duration),
    timeout: Duration,
    limit: Duration,
}

async fn measure(
    server: &RedisServer,
    run: &Run,
    setting: Setting,
    index: usize,
) -> Result<Row, Error> {
    let builder = Builder::from_config(Config::from_url(&server.url())?);
    let queues = Queues::redis(builder).connect().await?;
    let queue = &format!("{}-{index}", setting.queue());
    let options = JobOptions::new()
        .attempts(u32::MAX)?
        .backoff(Backoff::fixed(Duration::from_millis(10)))?
        .timeout(run.timeout)?;
    for first in (0..run.jobs).step_by(500) {
        let last = (first + 500).min(run.jobs);
        queues
            .enqueue_many(queue, (first..last).map(|n| (n, options.clone())))
            .await?;
    }
    let started = Instant::now();
    let downstream = Arc::new(Downstream {
        permits: Arc::new(Semaphore::new(run.capacity)),
        service: run.service,
        slowdown: run.slowdown,
        slow: run.slow,
        started,
        wasted: AtomicU64::new(0),
    });
    let (ceiling, limiter) = match setting {
        Setting::Fixed(n) => (n, None),
        Setting::Gradient(n) => (n, Some(adaptive(Gradient::new(), n)?)),
        Setting::Aimd(n) => (n, Some(adaptive(Aimd::new(), n)?)),
    };
    let mut builder = queues.worker(queue)?.concurrency(ceiling)?;
    if let Some(limiter) = &limiter {
        builder = builder.concurrency_limit(limiter.clone());
    }
    let worker = {
        let downstream = Arc::clone(&downstream);
        builder.start(move |_job: Job<u64>| {
            let downstream = Arc::clone(&downstream);
            async move {
                downstream.call().await;
                Ok::<_, JobError>(())
            }
        })
    };
    let mut limits = Vec::new();
    while worker.stats().completed < run.jobs && started.elapsed() < run.limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(limiter) = &limiter {
            limits.push(limiter.limit());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    // The calls still queued at the downstream end here, so that they take
    // nothing from the next configuration.
    downstream.permits.close();
    limits.sort_unstable();
    Ok(Row {
        setting,
        completed: stats.completed,
        seconds,
        // The handler never fails: every failed attempt is a timeout.
        timed_out: stats.failed,
        wasted: downstream.wasted.load(Ordering::Relaxed),
        limit: (!limits.is_empty()).then(|| (limits[limits.len() / 2], limits[0])),
    })
}

/// A limit from 1 to `ceiling`, starting at it, as the worker binary
/// builds one for a queue whose policy says `adaptive=on`.
fn adaptive(
    algorithm: impl seawall_ratelimit::LimitAlgorithm,
    ceiling: usize,
) -> Result<AdaptiveLimiter, Error> {
    let ceiling = u64::try_from(ceiling)?;
    Ok(AdaptiveLimiter::builder(algorithm)
        .bounds(1, ceiling)
        .initial(ceiling)
        .build()?)
}

fn main() -> Result<(), Error> {
    let matches = Command::new("seawall-slow-downstream")
        .about(
            "A worker's fixed concurrency against an adaptive limit, in front of a slow downstream",
        )
        .arg(
            Arg::new("jobs")
                .long("jobs")
                .value_parser(value_parser!(u64).range(1..=1_000_000))
                .default_value("4000"),
        )
        .arg(
            Arg::new("capacity")
                .long("capacity")
                .help("Calls the downstream serves at once")
                .value_parser(value_parser!(usize))
                .default_value("8"),
        )
        .arg(
            Arg::new("service")
                .long("service")
                .help("How long the downstream takes per call")
                .value_parser(humantime::parse_duration)
                .default_value("20ms"),
        )
        .arg(
            Arg::new("slowdown")
                .long("slowdown")
                .help("How many times slower the downstream is while slow")
                .value_parser(value_parser!(u32).range(1..=1000))
                .default_value("5"),
        )
        .arg(
            Arg::new("slow-from")
                .long("slow-from")
                .value_parser(humantime::parse_duration)
                .default_value("2s"),
        )
        .arg(
            Arg::new("slow-until")
                .long("slow-until")
                .value_parser(humantime::parse_duration)
                .default_value("8s"),
        )
        .arg(
            Arg::new("timeout")
                .long("timeout")
                .help("A job's timeout per run")
                .value_parser(humantime::parse_duration)
                .default_value("500ms"),
        )
        .arg(
            Arg::new("limit")
                .long("limit")
                .help("The longest one configuration runs")
                .value_parser(humantime::parse_duration)
                .default_value("30s"),
        )
        .get_matches();
    let run = Run {
        jobs: *matches.get_one("jobs").ok_or("jobs")?,
        capacity: *matches.get_one("capacity").ok_or("capacity")?,
        service: *matches.get_one("service").ok_or("service")?,
        slowdown: *matches.get_one("slowdown").ok_or("slowdown")?,
        slow: (
            *matches.get_one("slow-from").ok_or("slow-from")?,
            *matches.get_one("slow-until").ok_or("slow-until")?,
        ),
        timeout: *matches.get_one("timeout").ok_or("timeout")?,
        limit: *matches.get_one("limit").ok_or("limit")?,
    };
    if run.capacity == 0 || run.service.is_zero() {
        return Err("the downstream needs a capacity and a service time above zero".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = RedisServer::start()?;
    let ideal = run.capacity as f64 / run.service.as_secs_f64();
    let settings = [
        Setting::Fixed(run.capacity),
        Setting::Fixed(32),
        Setting::Fixed(128),
        Setting::Gradient(128),
        Setting::Aimd(128),
    ];
    let mut rows = Vec::new();
    for (index, setting) in settings.into_iter().enumerate() {
        let row = runtime.block_on(measure(&server, &run, setting, index))?;
        eprintln!(
            "{}: {} jobs in {:.1} s",
            row.setting.label(),
            row.completed,
            row.seconds
        );
        rows.push(row);
    }
    let mut table = format!(
        "{} jobs; the downstream serves {} at once, {:?} each (at most {ideal:.0} calls/s), \
         {}× slower from {:?} to {:?}; a run's timeout {:?}; a configuration stops after {:?}\n\n",
        run.jobs,
        run.capacity,
        run.service,
        run.slowdown,
        run.slow.0,
        run.slow.1,
        run.timeout,
        run.limit
    );
    table.push_str(
        "| worker | completed | in s | jobs/s | runs timed out | calls served for no one | limit (median / lowest) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let rate = row.completed as f64 / row.seconds;
        let limit = row.limit.map_or_else(
            || "-".to_owned(),
            |(median, lowest)| format!("{median} / {lowest}"),
        );
        writeln!(
            table,
            "| {} | {} of {} | {:.1} | {rate:.0} | {} | {} | {limit} |",
            row.setting.label(),
            row.completed,
            run.jobs,
            row.seconds,
            row.timed_out,
            row.wasted,
        )?;
    }
    std::io::stdout().write_all(table.as_bytes())?;
    Ok(())
}
