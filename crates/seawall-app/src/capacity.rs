//! Capacity forecasts: when Redis's memory reaches its `maxmemory`, the
//! service's request rate an hour ahead, and (for the dashboard) each job
//! queue's waiting jobs an hour ahead and when they pass its backlog bound.
//!
//! Every [`SAMPLE_EVERY`] a task reads `INFO memory` of each Redis primary
//! the service uses (every master of a Cluster) and this instance's HTTP
//! request rate over the interval. Each minute's mean feeds a
//! seawall-perfmon [`Forecaster`] (Holt's level and trend beside hour-of-day
//! offsets, a 90 % interval; it learns for 50 minutes, and its offsets once
//! it has seen two days). At every scrape:
//!
//! - `redis_memory_used_bytes{node}` and `redis_memory_max_bytes{node}`
//!   (`maxmemory`; 0 for no limit), as last read;
//! - `redis_memory_forecast_bytes{node,bound}`: the used memory an hour
//!   ahead (`bound="value"`) and its interval (`"low"`, `"high"`); the
//!   latest minute's mean while the forecaster learns;
//! - `redis_memory_runs_out_seconds{node}`: how long until the forecast
//!   reaches `maxmemory`, looked for up to a week ahead: `0` once the used
//!   memory is at the limit, `+Inf` while the forecast stays under it
//!   within the week, while it learns, and for a node without a limit;
//! - `http_requests_forecast_per_second{bound}`: this instance's request
//!   rate an hour ahead, as above.
//!
//! The queues' forecasts ([`Capacity::watch_queues`]) are read every
//! [`SAMPLE_EVERY`] from each queue's backlog (one round trip per queue)
//! with the forecaster the queue's own metrics use (a level and a trend, no
//! season) and the queue's backlog bound (`queue.policies`'s `backlog`).
//! They are reported ([`Capacity::backlog_outlook`], the queue overview of
//! the admin API and its dashboard panel) but not exported: the processes
//! that run the queue's jobs (seawall-worker, or this service on embedded
//! defaults) export `queue_waiting_forecast` and
//! `queue_backlog_runs_out_seconds` already, and the same series from every
//! API instance too would count each queue many times. So an API instance
//! whose queues a seawall-worker fleet runs still shows where their
//! backlogs are heading.
//!
//! It forecasts; it drives nothing (no scaling, no shedding). The alerts
//! `SeawallRedisMemoryRunsOut` and the dashboard read it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::interfaces::{ClientLike, ClusterInterface};
use fred::prelude::Client;
use fred::types::{ClusterHash, CustomCommand};
use parking_lot::Mutex;
use seawall_perfmon::anomaly::Season;
use seawall_perfmon::forecast::{ForecastOptions, Forecaster};
use seawall_perfmon::{CollectedFamily, Monitor};

use crate::redis::Redis;
use crate::setup::QueueHandle;

/// How often Redis's memory and the request rate are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How far ahead the forecasts look.
pub const AHEAD: Duration = Duration::from_secs(3600);

/// How far ahead `redis_memory_runs_out_seconds` (and a queue's backlog
/// outlook) looks for the limit.
pub const RUNS_OUT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// The forecasters take one observation a minute: its readings' mean.
const STEP_S: i64 = 60;

/// How many minutes of the request rate are kept beside their baselines.
pub const HISTORY_MINUTES: usize = 120;

/// How long one `INFO memory` may take.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// One series read every [`SAMPLE_EVERY`] and forecast from its minutes'
/// means.
struct MinuteMeans {
    forecaster: Forecaster,
    /// The minute being read (Unix seconds / 60), the sum of its readings
    /// and how many there were.
    minute: i64,
    sum: f64,
    readings: u32,
    /// The last closed minute's mean.
    closed: Option<f64>,
    /// The closed minutes, newest last, each beside what the forecaster
    /// expected of it a minute before (its baseline), for at most this
    /// many minutes: kept for a series a person looks at (the request
    /// rate), 0 for the others.
    history: VecDeque<MinutePoint>,
    keep: usize,
}

impl MinuteMeans {
    fn new() -> Self {
        Self::with_options(ForecastOptions::default())
    }

    fn with_options(options: ForecastOptions) -> Self {
        Self {
            forecaster: Forecaster::new(options),
            minute: i64::MIN,
            sum: 0.0,
            readings: 0,
            closed: None,
            history: VecDeque::new(),
            keep: 0,
        }
    }

    /// Like [`new`](Self::new), keeping the last `keep` minutes beside
    /// their baselines.
    fn with_history(keep: usize) -> Self {
        Self {
            history: VecDeque::with_capacity(keep),
            keep,
            ..Self::new()
        }
    }

    /// Takes a reading at `time` (Unix seconds); a reading in a new minute
    /// closes the one before and feeds its mean to the forecaster.
    fn record(&mut self, time: i64, value: f64) {
        let minute = time.div_euclid(STEP_S);
        if minute != self.minute {
            if self.readings > 0 {
                let mean = self.sum / f64::from(self.readings);
                let at = self.minute.saturating_mul(STEP_S);
                if self.keep > 0 {
                    // What the forecaster expected of this minute, from
                    // what it had seen before it.
                    let expected = self.forecaster.last_time().and_then(|last| {
                        let ahead = u64::try_from(at.saturating_sub(last)).ok()?;
                        self.forecaster.forecast(Duration::from_secs(ahead))
                    });
                    if self.history.len() == self.keep {
                        self.history.pop_front();
                    }
                    self.history.push_back(MinutePoint {
                        at_ms: at.saturating_mul(1000),
                        observed: mean,
                        expected: expected.map(|forecast| forecast.value.max(0.0)),
                        low: expected.map(|forecast| forecast.low.max(0.0)),
                        high: expected.map(|forecast| forecast.high.max(0.0)),
                    });
                }
                self.forecaster.observe(at, mean);
                self.closed = Some(mean);
            }
            self.minute = minute;
            self.sum = 0.0;
            self.readings = 0;
        }
        self.sum += value;
        self.readings += 1;
    }

    /// The latest mean: the last closed minute's, else the minute's so far.
    fn latest(&self) -> Option<f64> {
        self.closed
            .or_else(|| (self.readings > 0).then(|| self.sum / f64::from(self.readings)))
    }

    /// Seconds until the forecast reaches `bound`, looked for within
    /// [`RUNS_OUT_HORIZON`]: 0 once `now` (the latest reading) is at it;
    /// `None` while the forecast stays under it, and while it learns.
    fn runs_out(&self, now: u64, bound: u64) -> Option<f64> {
        if now >= bound {
            return Some(0.0);
        }
        #[allow(clippy::cast_precision_loss)] // bytes and depths, compared as floats
        let bound = bound as f64;
        self.forecaster
            .passes(bound, RUNS_OUT_HORIZON)
            .map(|when| when.as_secs_f64())
    }

    /// `[value, low, high]` an hour ahead; the latest mean thrice while the
    /// forecaster learns; `None` before any reading.
    fn ahead(&self) -> Option<[f64; 3]> {
        match self.forecaster.forecast(AHEAD) {
            Some(forecast) => Some([forecast.value, forecast.low, forecast.high]),
            None => self.latest().map(|mean| [mean; 3]),
        }
    }
}

/// One Redis primary's memory.
struct NodeMemory {
    used: MinuteMeans,
    /// The latest reading of `used_memory` and `maxmemory`.
    used_now: u64,
    max: u64,
}

impl NodeMemory {
    /// Seconds until the forecast reaches `maxmemory` (see the module).
    fn runs_out(&self) -> f64 {
        if self.max == 0 {
            return f64::INFINITY;
        }
        self.used
            .runs_out(self.used_now, self.max)
            .unwrap_or(f64::INFINITY)
    }
}

/// One queue's waiting jobs.
struct QueueBacklog {
    waiting: MinuteMeans,
    /// The latest reading, and the bound it is forecast against.
    waiting_now: u64,
    bound: u64,
}

impl QueueBacklog {
    /// Seconds until the forecast passes the bound, as
    /// [`BacklogOutlook::runs_out_seconds`] says.
    fn runs_out(&self) -> Option<f64> {
        self.waiting.runs_out(self.waiting_now, self.bound)
    }
}

#[derive(Default)]
struct State {
    /// By `host:port`.
    memory: BTreeMap<String, NodeMemory>,
    requests: Option<MinuteMeans>,
    /// By queue name.
    queues: BTreeMap<String, QueueBacklog>,
}

/// The forecasts, fed by [`Capacity::start`]'s task or by hand
/// ([`record_memory`](Self::record_memory),
/// [`record_request_rate`](Self::record_request_rate)).
#[derive(Clone, Default)]
pub struct Capacity {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capacity")
            .field("redis_nodes", &self.state.lock().memory.len())
            .finish()
    }
}

impl Capacity {
    /// Registers the forecasts' collector on `monitor`, takes a first
    /// reading (so that the series are there from the first scrape), and
    /// starts the task that reads Redis (when there is one) and the request
    /// rate every [`SAMPLE_EVERY`]; the task ends once `monitor` and every
    /// clone of the returned handle are gone.
    ///
    /// # Errors
    ///
    /// When `monitor` already has families of these names.
    pub async fn start(
        monitor: &Monitor,
        redis: Option<&Redis>,
    ) -> Result<Self, seawall_perfmon::Error> {
        let capacity = Self::default();
        let collecting = capacity.clone();
        monitor.register_collector(move || collecting.collect())?;
        let client = redis.map(|redis| redis.client().clone());
        capacity.sample(monitor, client.as_ref()).await;
        let (weak, monitor) = (Arc::downgrade(&capacity.state), monitor.clone());
        tokio::spawn(run(weak, monitor, client));
        Ok(capacity)
    }

    /// Takes one reading of every node's memory and of the request rate.
    async fn sample(&self, monitor: &Monitor, client: Option<&Client>) {
        let time = unix_now();
        if let Some(client) = client {
            for (node, used, max) in read_memory(client).await {
                self.record_memory(&node, time, used, max);
            }
        }
        self.record_request_rate(time, monitor.http_window(SAMPLE_EVERY).stats.rate_per_sec);
    }

    /// Records that Redis node `node` used `used` bytes of its `max`
    /// (`maxmemory`, 0 for none) at `time` (Unix seconds).
    pub fn record_memory(&self, node: &str, time: i64, used: u64, max: u64) {
        let mut state = self.state.lock();
        let memory = state
            .memory
            .entry(node.to_owned())
            .or_insert_with(|| NodeMemory {
                used: MinuteMeans::new(),
                used_now: 0,
                max: 0,
            });
        #[allow(clippy::cast_precision_loss)] // bytes, forecast as a float
        memory.used.record(time, used as f64);
        memory.used_now = used;
        memory.max = max;
    }

    /// Records this instance's request rate (per second) at `time` (Unix
    /// seconds).
    pub fn record_request_rate(&self, time: i64, rate: f64) {
        self.state
            .lock()
            .requests
            .get_or_insert_with(|| MinuteMeans::with_history(HISTORY_MINUTES))
            .record(time, rate);
    }

    /// Records that `queue` had `waiting` jobs waiting at `time` (Unix
    /// seconds), forecast against its backlog bound `bound` (at least 1).
    pub fn record_backlog(&self, queue: &str, time: i64, waiting: u64, bound: u64) {
        let mut state = self.state.lock();
        let backlog = state
            .queues
            .entry(queue.to_owned())
            .or_insert_with(|| QueueBacklog {
                // A backlog's next hour is its trend's, as in the queue's
                // own metrics (seawall_queue::QueueMetrics).
                waiting: MinuteMeans::with_options(ForecastOptions::default().season(Season::None)),
                waiting_now: 0,
                bound: 1,
            });
        #[allow(clippy::cast_precision_loss)] // depths far below 2^53
        backlog.waiting.record(time, waiting as f64);
        backlog.waiting_now = waiting;
        backlog.bound = bound.max(1);
    }

    /// Reads every queue's backlog every [`SAMPLE_EVERY`] once `queues`
    /// are connected, each forecast against its bound in `bounds` (queue
    /// name, bound); the task ends with the last clone of this handle. A
    /// queue whose read fails is read again at the next tick.
    pub fn watch_queues(&self, queues: QueueHandle, bounds: Vec<(String, u64)>) {
        let state = Arc::downgrade(&self.state);
        tokio::spawn(async move {
            let queues = queues.connected().await;
            let mut ticks = tokio::time::interval(SAMPLE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Every queue at once: one round trip's wait, not nine.
                let reads = futures_util::future::join_all(
                    bounds.iter().map(|(queue, _)| queues.backlog(queue)),
                )
                .await;
                let time = unix_now();
                let Some(state) = state.upgrade() else {
                    return;
                };
                let capacity = Capacity { state };
                for ((queue, bound), read) in bounds.iter().zip(reads) {
                    match read {
                        Ok(backlog) => {
                            capacity.record_backlog(queue, time, backlog.counts.waiting, *bound);
                        }
                        Err(error) => {
                            tracing::debug!(%queue, %error, "the queue's backlog not read for its forecast");
                        }
                    }
                }
            }
        });
    }

    /// What the forecast of `queue`'s waiting jobs says now; `None` for a
    /// queue never read.
    pub fn backlog_outlook(&self, queue: &str) -> Option<BacklogOutlook> {
        let state = self.state.lock();
        let backlog = state.queues.get(queue)?;
        Some(BacklogOutlook {
            in_an_hour: ahead_of(&backlog.waiting)?,
            bound: backlog.bound,
            runs_out_seconds: backlog.runs_out(),
        })
    }

    /// Seconds until `node`'s memory is forecast at its limit (see the
    /// module); `None` for a node never read.
    pub fn redis_runs_out(&self, node: &str) -> Option<f64> {
        self.state.lock().memory.get(node).map(NodeMemory::runs_out)
    }

    /// The request rate an hour ahead, `[value, low, high]`; the latest
    /// minute's mean thrice while learning.
    pub fn request_rate_ahead(&self) -> Option<[f64; 3]> {
        self.state.lock().requests.as_ref()?.ahead()
    }

    /// What the forecasts say now, for a report.
    pub fn report(&self) -> CapacityReport {
        let state = self.state.lock();
        CapacityReport {
            redis: state
                .memory
                .iter()
                .map(|(node, memory)| NodeReport {
                    node: node.clone(),
                    used_bytes: memory.used_now,
                    max_bytes: memory.max,
                    in_an_hour: ahead_of(&memory.used),
                    runs_out_seconds: Some(memory.runs_out()).filter(|seconds| seconds.is_finite()),
                })
                .collect(),
            requests_per_second_in_an_hour: state.requests.as_ref().and_then(ahead_of),
            request_rate_minutes: state
                .requests
                .as_ref()
                .map(|means| means.history.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// The families described in the module.
    #[allow(clippy::cast_precision_loss)] // bytes, shown as floats
    pub fn collect(&self) -> Vec<CollectedFamily> {
        let state = self.state.lock();
        let mut used = CollectedFamily::gauge(
            "redis_memory_used_bytes",
            "Memory the Redis node uses (used_memory), as last read.",
            &["node"],
        );
        let mut max = CollectedFamily::gauge(
            "redis_memory_max_bytes",
            "The Redis node's maxmemory, as last read; 0 for no limit.",
            &["node"],
        );
        let mut forecast = CollectedFamily::gauge(
            "redis_memory_forecast_bytes",
            "The Redis node's used memory forecast an hour ahead, and its 90 % interval (bound=low, high).",
            &["node", "bound"],
        );
        let mut runs_out = CollectedFamily::gauge(
            "redis_memory_runs_out_seconds",
            "How long until the Redis node's used memory is forecast at its maxmemory, looked for a week ahead: 0 at the limit, +Inf when not within the week, while learning, or without a limit.",
            &["node"],
        );
        for (node, memory) in &state.memory {
            let node = node.as_str();
            used = used.sample(&[node], memory.used_now as f64);
            max = max.sample(&[node], memory.max as f64);
            if let Some(ahead) = memory.used.ahead() {
                for (bound, value) in ["value", "low", "high"].into_iter().zip(ahead) {
                    forecast = forecast.sample(&[node, bound], value.max(0.0));
                }
            }
            runs_out = runs_out.sample(&[node], memory.runs_out());
        }
        let mut requests = CollectedFamily::gauge(
            "http_requests_forecast_per_second",
            "This instance's HTTP request rate forecast an hour ahead, and its 90 % interval (bound=low, high).",
            &["bound"],
        );
        if let Some(ahead) = state.requests.as_ref().and_then(MinuteMeans::ahead) {
            for (bound, value) in ["value", "low", "high"].into_iter().zip(ahead) {
                requests = requests.sample(&[bound], value.max(0.0));
            }
        }
        // Without Redis (or before a node answered) no empty families.
        let mut families = if state.memory.is_empty() {
            Vec::new()
        } else {
            vec![used, max, forecast, runs_out]
        };
        if !requests.samples().is_empty() {
            families.push(requests);
        }
        families
    }
}

/// What the forecasts say now ([`Capacity::report`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CapacityReport {
    /// Each Redis primary read, by `host:port`.
    pub redis: Vec<NodeReport>,
    /// This instance's request rate an hour ahead.
    pub requests_per_second_in_an_hour: Option<Ahead>,
    /// This instance's request rate per second, each of the last two
    /// hours' minutes (oldest first) beside its baseline: what the
    /// forecaster expected of that minute from the minutes before it.
    pub request_rate_minutes: Vec<MinutePoint>,
}

/// A forecast of one queue's waiting jobs.
// Capacity::backlog_outlook answers it. Plain comments where a doc comment
// would become the OpenAPI contract's description.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct BacklogOutlook {
    /// The waiting jobs an hour ahead.
    pub in_an_hour: Ahead,
    /// The waiting jobs the queue is meant to hold at most (the `backlog=`
    /// key of its policy, 10,000 by default).
    pub bound: u64,
    /// How long until the forecast passes `bound`, in seconds, looked for
    /// a week ahead: 0 once as many wait; null while the forecast stays
    /// under it within the week, and while the forecaster learns.
    pub runs_out_seconds: Option<f64>,
}

/// One minute's mean beside what was expected of it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MinutePoint {
    /// The minute's start, Unix milliseconds.
    pub at_ms: i64,
    /// The minute's mean.
    pub observed: f64,
    /// The forecast of the minute made a minute before, and its 90 %
    /// interval; `None` while the forecaster learns.
    pub expected: Option<f64>,
    /// The interval's lower end.
    pub low: Option<f64>,
    /// The interval's upper end.
    pub high: Option<f64>,
}

/// One Redis primary's memory and its forecast.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeReport {
    /// `host:port`.
    pub node: String,
    /// `used_memory`, as last read.
    pub used_bytes: u64,
    /// `maxmemory`, as last read; 0 for no limit.
    pub max_bytes: u64,
    /// The used memory an hour ahead.
    pub in_an_hour: Option<Ahead>,
    /// How long until the forecast reaches `max_bytes`, when within a week.
    pub runs_out_seconds: Option<f64>,
}

/// A forecast an hour ahead and its 90 % interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Ahead {
    /// The expected value.
    pub value: f64,
    /// The interval's lower end.
    pub low: f64,
    /// The interval's upper end.
    pub high: f64,
    /// Still learning (under 50 minutes seen): the three are the latest
    /// minute's mean.
    pub learning: bool,
}

/// `means`' forecast an hour ahead, none below zero (the series here never
/// are); `None` before any reading.
fn ahead_of(means: &MinuteMeans) -> Option<Ahead> {
    means.ahead().map(|[value, low, high]| Ahead {
        value: value.max(0.0),
        low: low.max(0.0),
        high: high.max(0.0),
        learning: means.forecaster.forecast(AHEAD).is_none(),
    })
}

async fn run(state: Weak<Mutex<State>>, monitor: Monitor, client: Option<Client>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // immediate: `start` took that reading
    loop {
        ticks.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        Capacity { state }.sample(&monitor, client.as_ref()).await;
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// `(node, used_memory, maxmemory)` of each primary that answered within
/// [`READ_TIMEOUT`], all asked at once: every master of a Cluster, else the
/// one server. Nothing while the client is not connected.
async fn read_memory(client: &Client) -> Vec<(String, u64, u64)> {
    if !client.is_connected() {
        return Vec::new();
    }
    let info = || CustomCommand::new_static("INFO", ClusterHash::Random, false);
    let answers = match client.cached_cluster_state() {
        Some(cluster) => {
            let reads = cluster.unique_primary_nodes().into_iter().map(|server| {
                let node = server.to_string();
                let on_node = client.with_cluster_node(server);
                async move {
                    let read = on_node.custom::<String, &str>(info(), vec!["memory"]);
                    (node, tokio::time::timeout(READ_TIMEOUT, read).await)
                }
            });
            futures_util::future::join_all(reads).await
        }
        None => {
            let node = client
                .active_connections()
                .first()
                .map_or_else(|| String::from("redis"), ToString::to_string);
            let read = client.custom::<String, &str>(info(), vec!["memory"]);
            vec![(node, tokio::time::timeout(READ_TIMEOUT, read).await)]
        }
    };
    answers
        .into_iter()
        .filter_map(|(node, answer)| {
            let (used, max) = parse_memory(&answer.ok()?.ok()?)?;
            Some((node, used, max))
        })
        .collect()
}

/// `used_memory` and `maxmemory` from an `INFO memory` answer.
fn parse_memory(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(name)?
                .strip_prefix(':')?
                .parse::<u64>()
                .ok()
        })
    };
    Some((field("used_memory")?, field("maxmemory")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use seawall_testkit::{RedisCluster, RedisServer, wait};

    fn family<'a>(families: &'a [CollectedFamily], name: &str) -> &'a CollectedFamily {
        families
            .iter()
            .find(|family| family.name() == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn sample(families: &[CollectedFamily], name: &str, labels: &[&str]) -> Option<f64> {
        family(families, name)
            .samples()
            .iter()
            .find(|(values, _)| values.iter().map(String::as_str).eq(labels.iter().copied()))
            .map(|(_, value)| *value)
    }

    /// Read every 10 s, a queue whose backlog grows by 10 jobs a minute
    /// from 1,000 towards a bound of 5,000 is forecast to pass it about 280
    /// minutes after the last reading; a steady one never does within the
    /// week; one at its bound has run out. While the forecaster learns the
    /// outlook is the latest minute's mean, and says so, and nothing runs
    /// out. Nothing of it is exported.
    #[test]
    fn a_queue_s_backlog_is_forecast_to_pass_its_bound() {
        let capacity = Capacity::default();
        assert_eq!(capacity.backlog_outlook("email"), None, "never read");
        let start = 1_800_000_000 - 1_800_000_000 % 86_400;
        for seconds in (0..120 * 60).step_by(10) {
            let time = start + seconds;
            let minutes = u64::try_from(seconds / 60).expect("positive");
            capacity.record_backlog("email", time, 1_000 + 10 * minutes, 5_000);
            capacity.record_backlog("report", time, 40, 5_000);
            capacity.record_backlog("export", time, 5_000, 5_000);
            if seconds == 10 * 60 {
                let learning = capacity.backlog_outlook("email").expect("read");
                assert!(learning.in_an_hour.learning, "{learning:?}");
                // Minute 9's mean, thrice.
                assert_eq!(learning.in_an_hour.value, 1_090.0, "{learning:?}");
                assert_eq!(learning.in_an_hour.low, 1_090.0, "{learning:?}");
                assert_eq!(learning.runs_out_seconds, None, "{learning:?}");
                assert_eq!(learning.bound, 5_000);
            }
        }
        let email = capacity.backlog_outlook("email").expect("read");
        assert!(!email.in_an_hour.learning, "{email:?}");
        // The last minute closed is minute 118 (2,180 waiting); an hour on,
        // 600 more.
        let ahead = email.in_an_hour;
        assert!((ahead.value - 2_780.0).abs() < 60.0, "{ahead:?}");
        assert!(
            ahead.low <= ahead.value && ahead.value <= ahead.high,
            "{ahead:?}"
        );
        // The bound is 2,820 jobs, 282 minutes, past minute 118.
        let minutes = email.runs_out_seconds.expect("within the week") / 60.0;
        assert!((minutes - 282.0).abs() < 15.0, "{minutes} minutes");
        let report = capacity.backlog_outlook("report").expect("read");
        assert_eq!(report.runs_out_seconds, None, "{report:?}");
        assert!((report.in_an_hour.value - 40.0).abs() < 1.0, "{report:?}");
        let export = capacity.backlog_outlook("export").expect("read");
        assert_eq!(export.runs_out_seconds, Some(0.0), "{export:?}");
        assert!(
            capacity
                .collect()
                .iter()
                .all(|family| !family.name().starts_with("queue")),
            "the queues' forecasts are their workers' to export"
        );
    }

    /// Read every 10 s, a node whose memory grows by 1 MiB a minute from
    /// 100 MiB towards a maxmemory of 500 MiB is forecast to reach it
    /// about 280 minutes after the last reading; one that holds steady
    /// never does; one at its limit has run out; one without a limit never
    /// runs out. Until the forecaster has learned, the forecast is the
    /// latest minute's mean and nothing runs out.
    #[test]
    fn redis_memory_is_forecast_to_run_out_when_its_growth_reaches_the_limit() {
        const MIB: u64 = 1 << 20;
        let capacity = Capacity::default();
        // A whole minute, at midnight UTC.
        let start = 1_800_000_000 - 1_800_000_000 % 86_400;
        for seconds in (0..120 * 60).step_by(10) {
            let time = start + seconds;
            let minutes = u64::try_from(seconds / 60).expect("positive");
            capacity.record_memory("growing:6379", time, 100 * MIB + minutes * MIB, 500 * MIB);
            capacity.record_memory("steady:6379", time, 100 * MIB, 500 * MIB);
            capacity.record_memory("unlimited:6379", time, 100 * MIB + minutes * MIB, 0);
            capacity.record_memory("full:6379", time, 500 * MIB, 500 * MIB);
            capacity.record_request_rate(time, 200.0);
            if seconds == 10 * 60 {
                let families = capacity.collect();
                assert_eq!(
                    capacity.redis_runs_out("growing:6379"),
                    Some(f64::INFINITY),
                    "learning"
                );
                let value = sample(
                    &families,
                    "redis_memory_forecast_bytes",
                    &["growing:6379", "value"],
                )
                .expect("a forecast while learning");
                #[allow(clippy::cast_precision_loss)]
                let minute_9 = (109 * MIB) as f64;
                assert!((value - minute_9).abs() < 1.0, "minute 9's mean: {value}");
            }
        }
        // The last minute closed is minute 118: its mean is 218 MiB, the
        // limit 282 MiB on, 282 minutes after it; the last reading is a
        // minute later.
        let growing = capacity.redis_runs_out("growing:6379").expect("read");
        let minutes = growing / 60.0;
        assert!((minutes - 282.0).abs() < 15.0, "{minutes} minutes");
        assert_eq!(capacity.redis_runs_out("steady:6379"), Some(f64::INFINITY));
        assert_eq!(
            capacity.redis_runs_out("unlimited:6379"),
            Some(f64::INFINITY)
        );
        assert_eq!(capacity.redis_runs_out("full:6379"), Some(0.0));
        assert_eq!(capacity.redis_runs_out("never-read:6379"), None);

        let families = capacity.collect();
        assert_eq!(
            sample(
                &families,
                "redis_memory_runs_out_seconds",
                &["growing:6379"]
            ),
            Some(growing)
        );
        #[allow(clippy::cast_precision_loss)]
        let limit = (500 * MIB) as f64;
        assert_eq!(
            sample(&families, "redis_memory_max_bytes", &["growing:6379"]),
            Some(limit)
        );
        let [low, value, high] = ["low", "value", "high"].map(|bound| {
            sample(
                &families,
                "redis_memory_forecast_bytes",
                &["growing:6379", bound],
            )
            .expect("a forecast")
        });
        #[allow(clippy::cast_precision_loss)]
        let in_an_hour = (278 * MIB) as f64;
        assert!(low <= value && value <= high, "{low} {value} {high}");
        assert!(
            (value - in_an_hour).abs() < 5.0 * 1_048_576.0,
            "{value} against {in_an_hour}"
        );
        let [value, low, high] = capacity.request_rate_ahead().expect("learned");
        assert!((value - 200.0).abs() < 1.0 && low <= value && value <= high);
    }

    /// The request rate's last two hours of minutes stand beside what
    /// was expected of each: nothing while the forecaster learns, then a
    /// baseline whose interval holds a steady rate, and not a step far
    /// above it.
    #[test]
    fn the_request_rate_s_minutes_are_kept_beside_their_baselines() {
        let capacity = Capacity::default();
        let start = 1_800_000_000 - 1_800_000_000 % 86_400;
        // Three hours at 200 requests a second (with a little wobble),
        // then a minute at 2,000; the last reading opens a minute more.
        for seconds in (0..=181 * 60).step_by(10) {
            let minute = seconds / 60;
            let rate = match minute {
                180 => 2000.0,
                _ if minute % 2 == 0 => 198.0,
                _ => 202.0,
            };
            capacity.record_request_rate(start + seconds, rate);
        }
        let minutes = capacity.report().request_rate_minutes;
        assert_eq!(minutes.len(), HISTORY_MINUTES);
        assert!(
            minutes
                .windows(2)
                .all(|pair| pair[1].at_ms - pair[0].at_ms == 60_000)
        );
        let (steady, step) = minutes.split_at(minutes.len() - 1);
        for point in steady {
            let (low, high) = (point.low.expect("learned"), point.high.expect("learned"));
            assert!(
                low <= point.observed && point.observed <= high,
                "{point:?} is within its baseline's interval"
            );
        }
        let step = step[0];
        assert_eq!(step.at_ms, (start + 180 * 60) * 1000);
        assert!((step.observed - 2000.0).abs() < 1e-9);
        assert!(step.high.expect("learned") < 1000.0, "{step:?}");

        // While learning, no baseline.
        let fresh = Capacity::default();
        for seconds in (0..=10 * 60).step_by(10) {
            fresh.record_request_rate(start + seconds, 50.0);
        }
        let minutes = fresh.report().request_rate_minutes;
        assert_eq!(minutes.len(), 10);
        assert!(minutes.iter().all(|point| point.expected.is_none()));
    }

    #[test]
    fn info_memory_is_read_as_redis_writes_it() {
        let text = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    used_memory_rss:4000000\r\nmaxmemory:104857600\r\nmaxmemory_human:100.00M\r\n";
        assert_eq!(parse_memory(text), Some((1_048_576, 104_857_600)));
        assert_eq!(parse_memory("used_memory:12\r\n"), None, "no maxmemory");
        assert_eq!(parse_memory("used_memory:x\r\nmaxmemory:0\r\n"), None);
    }

    /// Against real servers: a standalone Redis with a maxmemory set, and
    /// every master of a Cluster, each a series from the first reading on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_redis_primary_s_memory_is_read_from_the_first_scrape() {
        let server = RedisServer::builder()
            .config("maxmemory", "100mb")
            .start()
            .expect("redis starts");
        let cluster = RedisCluster::shared();
        for url in [server.url(), cluster.url()] {
            let redis = Redis::connect(&crate::config::RedisConfig::default(), &url)
                .await
                .expect("connects");
            let monitor = Monitor::new();
            wait::until_async("the client to know its nodes", async || {
                redis.client().cached_cluster_state().is_some() || !url.contains("cluster")
            })
            .await;
            let _capacity = Capacity::start(&monitor, Some(&redis))
                .await
                .expect("registers");
            let text = monitor.prometheus();
            let nodes = if url.contains("cluster") { 3 } else { 1 };
            for name in [
                "redis_memory_used_bytes{",
                "redis_memory_max_bytes{",
                "redis_memory_runs_out_seconds{",
            ] {
                assert_eq!(
                    text.lines().filter(|line| line.starts_with(name)).count(),
                    nodes,
                    "{name} on {url}:\n{text}"
                );
            }
            assert_eq!(
                text.lines()
                    .filter(|line| line.starts_with("redis_memory_forecast_bytes{"))
                    .count(),
                3 * nodes
            );
            if nodes == 1 {
                assert!(
                    text.contains(&format!(
                        "redis_memory_max_bytes{{node=\"{}\"}} 104857600",
                        server.addr()
                    )),
                    "{text}"
                );
                assert!(text.contains(&format!(
                    "redis_memory_runs_out_seconds{{node=\"{}\"}} +Inf",
                    server.addr()
                )));
            }
            assert_eq!(
                text.lines()
                    .filter(|line| line.starts_with("http_requests_forecast_per_second{"))
                    .count(),
                3
            );
            redis.close().await;
        }
    }
}
