//! The Redis backend: one Lua script per transition, every key of a queue
//! under one hash tag, and blocking fetches on dedicated connections.
//!
//! Keys of queue `q` under prefix `p` (all in the slot of `{q}`; with
//! [`one_slot`](crate::RedisQueues::one_slot) they are `{p}:q:…`, every
//! queue in the slot of `{p}`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p:{q}:meta` | hash | `paused`, `gcap` (group cap), `waiting` (count), `rlm` and `rlp` (the rate limit: starts per ms), `rlc` (the jobs `rlog` lists), `hold` (no start before this ms), `uc` (1 once a job had a deduplication key other than a window: completions then look for keys to free), `dft` (a time at or before the oldest kept completed job's finish: until it is past `keep_completed_for`, no call looks for completed jobs to remove by age) |
//! | `p:{q}:rg:<group>` | sorted set | a group's runs started within the group rate limit's window (meta `grm`, `grp`) |
//! | `p:{q}:parked` | sorted set | named groups out of the fetch rotation until a time: held, or at the group rate limit |
//! | `p:{q}:rlog` | list | the fetches that started jobs within the rate limit's window, oldest first: `<ms> <jobs>` |
//! | `p:{q}:jid` | string | the last job id's sequence: the next is above it even when the server's clock is behind |
//! | `p:{q}:id` | string | the order counter of jobs enqueued at a priority other than the default (a ranked set's score; default-priority jobs keep the order of their list, and an enqueue of those alone does not count) |
//! | `p:{q}:j:<id>` | hash | one job's record |
//! | `p:{q}:g:<group>` | list | a group's waiting jobs at the default priority, in line (`g:` for no group) |
//! | `p:{q}:z:<group>` | sorted set | a group's waiting jobs at other priorities, by priority, then id |
//! | `p:{q}:ring`, `p:{q}:ringed` | list, set | groups with jobs they may start now, in fetch rotation |
//! | `p:{q}:groups`, `p:{q}:gact` | set, hash | named groups with waiting jobs; running jobs per group |
//! | `p:{q}:delayed` | sorted set | delayed and retry-scheduled jobs by due time |
//! | `p:{q}:active` | sorted set | running jobs as `id:token` by lease deadline |
//! | `p:{q}:done` | list | kept completed jobs, newest first |
//! | `p:{q}:dead` | sorted set | kept dead jobs by finish time |
//! | `p:{q}:u:<key>` | string | a deduplication key's job id, and the digest of its job for a window key or `=<mode>` (`s` until started, `c` until completed, `d` debounce), for its window; a key of the other modes goes when its job completes, dies or is removed, at most `MAX_KEY_HOLD` after the enqueue |
//! | `p:{q}:r:<request>` | string | an enqueue call's answer, for 30 s, so a re-sent call answers the same |
//! | `p:{q}:x:<id>` | string | the lease token of a run that ended cancelled, for 30 s, so a re-sent failure answers the same |
//! | `p:{q}:w:<caller>` | string | a worker's last fetch call (request id, rejections, leases given) |
//! | `p:{q}:mark` | sorted set | the wake-up marker blocked workers pop |
//! | `p:{q}:ev` | stream | events |
//! | `p:{q}:wc` | sorted set | flow jobs waiting for their children, by when they were added |
//! | `p:{q}:kids:<id>` | hash | a flow job's children (`<their key prefix> <id>`): `-` pending, `c<result>` completed, `f<error>` failed; kept 30 days once the parent is released or failed |
//! | `p:{q}:fc` | set | this queue's flow jobs that have a parent to tell when they finish |
//! | `p:{q}:inbox` | list | notes other queues' scripts leave: `r <id>` release a flow job, `f <id> <error>` fail a parent, `x <id>` cancel a cancelled parent's child; read by the queue's next script |
//! | `p:{q}:s:<id>` | hash | a scheduler: `sch` (its schedule), `tpl` (its job template), `rev`, `next` (its planned tick, 0 for none), `paused`, `lt` and `lj` (its last tick and job) |
//! | `p:{q}:sids` | sorted set | every scheduler's id, at score 0 (listed in the order of their ids) |
//! | `p:{q}:sdue` | sorted set | schedulers not paused, by planned tick (0: to be planned) |
//!
//! Worker processes announce themselves under `{p}:processes` (a hash of
//! reports by process id) and `{p}:processes:at` (a sorted set of when each
//! last did, on the server's clock).
//!
//! A queue pays per call only for the features its keys show it uses. A
//! fetch asks once, in one `EXISTS`, whether any of `fc`, `inbox`, `parked`,
//! `gact`, `groups` and `z:` (the default group's ranked set) exists; when
//! none does, it skips the flow, group and priority look-ups (the running
//! groups' counts, the children's set, the inbox and parked groups, the
//! ranked set on either side of the default list, the rotation's length),
//! unless its own upkeep has just lined a job up in a ranked set or a named
//! group. The keys, not a setting, decide, so a producer of the release
//! before that writes them is seen at once. An enqueue of default-priority
//! jobs alone leaves the order counter (`id`) alone, and completions look up
//! deduplication keys only once `meta` `uc` says the queue has had one.
//!
//! A call of one job at the default priority, in the default group, without
//! a deduplication key or a delay (the call most producers make) runs
//! `enqueue_one.lua`: enqueue.lua's path for that job written out, with
//! fewer arguments and the id sequence read and written by one `SET … GET`.
//! It stores, answers and replays as enqueue.lua does (a test holds the
//! two to the same keys and fields); the job's own options pick it, so
//! every producer of a release writes such a job alike.
//!
//! The default group stays in the fetch rotation for as long as its line
//! has jobs: a plain queue's fetch takes from the line without popping and
//! pushing the rotation, and an enqueue that puts a job behind others in
//! that line neither rings the group nor wakes a worker (the push that
//! started the line did both). Completed jobs past `keep_completed_for`
//! are looked for only once meta `dft` says the oldest one may be: each
//! look writes down when the oldest kept job finished.

mod blocking;
mod lua;
mod reply;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::cmd;
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface};
use fred::prelude::{Client, Options};
use fred::types::scripts::Script;
use fred::types::{Builder, ClusterHash, CustomCommand, Value};
use seawall_ratelimit::breaker::{Breakers, NodeBreaker, is_down};

use crate::error::{Error, Result};
use crate::job::{
    Backlog, Cancelled, ChildInfo, ChildOutcome, Counts, Event, Finished, JobId, JobInfo, JobState,
    Limits, RateLimit, sort_children,
};
use crate::store::{
    AfterFailure, DeadJobs, DueSchedulers, Failure, FetchCall, Fetched, FlowNode, KeyHold, Lease,
    MAX_SCHEDULERS, MAX_SETTING, NewJob, Renewed, Settings, Store, StoredScheduler, TickGuard,
    TicksAdded, bounded_message, millis, random_id,
};

use self::blocking::{Blocker, BlockingPool};
use self::reply::{
    added_ids, array, count, enqueued_ids, job_info, mismatch, number, stored_scheduler,
    stream_events, taken, text, tick_ids, unsigned,
};

/// The prelude: the definitions the scripts share, one file per concern,
/// in an order in which each file uses only what those before it define
/// (see lua.rs, which keeps of them what a script names).
pub(crate) const PRELUDE: [(&str, &str); 10] = [
    ("prelude/base.lua", include_str!("prelude/base.lua")),
    ("prelude/ids.lua", include_str!("prelude/ids.lua")),
    ("prelude/events.lua", include_str!("prelude/events.lua")),
    ("prelude/groups.lua", include_str!("prelude/groups.lua")),
    ("prelude/flows.lua", include_str!("prelude/flows.lua")),
    ("prelude/finish.lua", include_str!("prelude/finish.lua")),
    ("prelude/cancel.lua", include_str!("prelude/cancel.lua")),
    ("prelude/inbox.lua", include_str!("prelude/inbox.lua")),
    ("prelude/limits.lua", include_str!("prelude/limits.lua")),
    ("prelude/upkeep.lua", include_str!("prelude/upkeep.lua")),
];

/// The prelude's files joined, in their order.
pub(crate) fn prelude() -> String {
    PRELUDE.iter().map(|(_, text)| *text).collect()
}

pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    /// A call of one plain job (see [`plain_one`]).
    pub(crate) enqueue_one: Script,
    pub(crate) fetch: Script,
    fail: Script,
    renew: Script,
    progress: Script,
    control: Script,
    schedule: Script,
    tick: Script,
    processes: Script,
    flow: Script,
}

/// Every script's source, by file name (the prelude's are in [`PRELUDE`]).
#[cfg(test)]
pub(crate) const SCRIPT_SOURCES: [(&str, &str); 11] = [
    ("enqueue.lua", include_str!("enqueue.lua")),
    ("enqueue_one.lua", include_str!("enqueue_one.lua")),
    ("fetch.lua", include_str!("fetch.lua")),
    ("fail.lua", include_str!("fail.lua")),
    ("renew.lua", include_str!("renew.lua")),
    ("progress.lua", include_str!("progress.lua")),
    ("control.lua", include_str!("control.lua")),
    ("schedule.lua", include_str!("schedule.lua")),
    ("tick.lua", include_str!("tick.lua")),
    ("processes.lua", include_str!("processes.lua")),
    ("flow.lua", include_str!("flow.lua")),
];

impl Scripts {
    fn new() -> Self {
        // The caps go first: the prelude's definitions and the scripts
        // name them.
        let prelude = format!("{}{}", crate::caps::lua_definitions(), prelude());
        let script = |body: &str| Script::from_lua(lua::assemble(&prelude, body));
        Self {
            enqueue: script(include_str!("enqueue.lua")),
            enqueue_one: script(include_str!("enqueue_one.lua")),
            fetch: script(include_str!("fetch.lua")),
            fail: script(include_str!("fail.lua")),
            renew: script(include_str!("renew.lua")),
            progress: script(include_str!("progress.lua")),
            control: script(include_str!("control.lua")),
            schedule: script(include_str!("schedule.lua")),
            tick: script(include_str!("tick.lua")),
            processes: Script::from_lua(include_str!("processes.lua")),
            flow: script(include_str!("flow.lua")),
        }
    }
}

/// How the Redis backend connects: the fred client builder it makes every
/// connection from, and its blocking-connection pool.
pub(crate) struct RedisOptions {
    pub(crate) prefix: String,
    pub(crate) blocking_connections: u32,
    pub(crate) acquire_timeout: Duration,
    /// Replicas an enqueue waits for, and how long.
    pub(crate) replicas: Option<(u32, Duration)>,
    /// Every queue's keys in one Cluster slot (`{p}:q:` rather than
    /// `p:{q}:`), so a flow may span queues.
    pub(crate) one_slot: bool,
}

/// The longest a command of the queue's client may take (the builder's own
/// timeout when it is shorter): a command that timed out is never re-sent
/// by the client, so a re-sent call comes within this time, well inside how
/// long an enqueue's answer is kept for it (30 s).
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a fetch asks for each job's trace context: only a build that
/// can continue the trace (the `opentelemetry` feature) reads it, so one
/// without reads and parses nothing more than before jobs carried one.
pub(crate) const TRACED: bool = cfg!(feature = "opentelemetry");

/// How long after a call found a Redis node down the next call to it is
/// let through as a probe.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct RedisStore {
    client: Client,
    /// One circuit breaker per Redis node (seawall-ratelimit's, as its
    /// store uses them): a producer's call to a node found down moments
    /// ago fails at once ([`Error::Unavailable`]) instead of waiting for
    /// the client's reconnection.
    pub(crate) breakers: Arc<Breakers>,
    blocking: BlockingPool,
    prefix: String,
    settings: Settings,
    pub(crate) scripts: Scripts,
    round_trips: AtomicU64,
    replicas: Option<(u32, Duration)>,
    reconnections: tokio::sync::watch::Receiver<u64>,
    one_slot: bool,
}

impl RedisStore {
    /// Connects the shared client and builds the blocking pool (whose
    /// connections open on first use).
    pub(crate) async fn connect(
        builder: Builder,
        options: RedisOptions,
        settings: Settings,
    ) -> Result<Self> {
        let mut builder = builder;
        builder.with_performance_config(|performance| {
            let timeout = performance.default_command_timeout;
            if timeout.is_zero() || timeout > MAX_CALL_TIMEOUT {
                performance.default_command_timeout = MAX_CALL_TIMEOUT;
            }
        });
        let client = builder.build()?;
        let breakers = Arc::new(Breakers::new(PROBE_INTERVAL));
        watch_connections(&client, &breakers);
        let (reconnected, reconnections) = tokio::sync::watch::channel(0_u64);
        client.on_reconnect(move |_| {
            reconnected.send_modify(|count| *count += 1);
            async { Ok(()) }
        });
        client.init().await?;
        let info: Value = client
            .custom(cmd!("INFO"), vec![Value::from("server")])
            .await?;
        check_version(&info.as_string().unwrap_or_default())?;
        let blocking = BlockingPool::new(
            builder,
            options.blocking_connections,
            options.acquire_timeout,
        );
        Ok(Self {
            client,
            breakers,
            blocking,
            prefix: options.prefix,
            settings,
            scripts: Scripts::new(),
            round_trips: AtomicU64::new(0),
            replicas: options.replicas,
            reconnections,
            one_slot: options.one_slot,
        })
    }

    /// The key prefix of `queue`: `p:{q}:`, each queue in a slot of its
    /// own, or `{p}:q:` with every queue in the prefix's slot.
    fn base(&self, queue: &str) -> String {
        if self.one_slot {
            format!("{{{}}}:{queue}:", self.prefix)
        } else {
            format!("{}:{{{queue}}}:", self.prefix)
        }
    }

    /// The queue whose key prefix is `base`.
    fn queue_of<'a>(&self, base: &'a str) -> Option<&'a str> {
        let inner = if self.one_slot {
            base.strip_prefix(&format!("{{{}}}:", self.prefix))?
                .strip_suffix(':')?
        } else {
            base.strip_prefix(&format!("{}:{{", self.prefix))?
                .strip_suffix("}:")?
        };
        Some(inner)
    }

    /// The arguments every script starts with: the key prefix and the
    /// queue's settings.
    pub(crate) fn prelude(&self, queue: &str, capacity: usize) -> (Vec<String>, Vec<Value>) {
        let base = self.base(queue);
        let keys = vec![format!("{base}meta")];
        let settings = &self.settings;
        let mut args = Vec::with_capacity(6 + capacity);
        args.push(Value::from(base));
        args.push(int(settings.events_max_len));
        args.push(int(settings.keep_completed));
        args.push(int(millis(settings.keep_completed_for)));
        args.push(int(settings.keep_dead));
        args.push(int(u64::from(settings.max_stalls)));
        (keys, args)
    }

    /// Runs a script by its hash, loading it first when the server does not
    /// know it (a NOSCRIPT reply means it did not run, so sending it again
    /// is safe), through the breaker of the node its first key is on.
    pub(crate) async fn run(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value> {
        // The node's breaker is found before the keys move into the call; on
        // one server it is the one breaker, found without reading the key.
        let breaker = self
            .breakers
            .of(&self.client, keys.first().map(String::as_str));
        self.guarded(breaker, self.run_past_breaker(script, keys, args))
            .await
    }

    /// Runs a script as [`run`](Self::run) does, but past the breaker, whose
    /// state it leaves as it is: for a worker's own transitions (a fetch,
    /// an acknowledgement, a renewal, progress, its presence), which wait
    /// for the client's reconnection so that they reach Redis the moment
    /// it is back, while a run's lease still holds.
    pub(crate) async fn run_past_breaker(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        // fred's future for the call is about 14 KiB: boxed, it is made
        // once on the heap rather than moved through every future that
        // awaits it (each move a copy of it).
        Ok(Box::pin(script.evalsha_with_reload::<Value, _, _>(&self.client, keys, args)).await?)
    }

    /// Sends `call` through `breaker`, its node's (from [`Breakers::of`]):
    /// while it is open the call is not sent ([`Error::Unavailable`], at
    /// once), but for one probe per interval; a call that finds the node
    /// down (no connection, no answer in time) opens it, and one the node
    /// answers closes it.
    async fn guarded<T>(
        &self,
        breaker: NodeBreaker<'_>,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(permit) = breaker.permit() else {
            return Err(Error::Unavailable {
                retry_in: breaker.retry_in(),
            });
        };
        let answer = call.await;
        match &answer {
            Err(Error::Redis(error)) if is_down(error) => {
                if permit.down() {
                    opened(error);
                }
            }
            // What a call cannot tell (a pooled connection not had in time,
            // a reply not understood) leaves the breaker as it is.
            Err(Error::PoolTimeout(_) | Error::Protocol(_)) => drop(permit),
            _ => {
                if permit.answered() {
                    closed();
                }
            }
        }
        answer
    }
    /// Runs the enqueue script, then `WAIT`s for `wanted` replicas, both on
    /// one pooled connection held for the two: `WAIT` counts the writes of
    /// its own connection, and it blocks that connection until it answers,
    /// so it must never run on the shared, multiplexed one.
    ///
    /// When `WAIT` falls short (or fails), the jobs the call added are
    /// taken back on the same connection, all of them or none, and only
    /// while no worker took one. The take-back is a write like the
    /// enqueue: a replica that got the jobs but not the take-back brings
    /// them back if it is promoted, so the take-back is `WAIT`ed for too,
    /// for as many replicas and as long. [`Error::NotReplicated`] then
    /// means nothing is queued, and that this holds across a failover as
    /// an acknowledged enqueue does; [`Error::EnqueueOutcomeUnknown`] that
    /// the jobs could not be taken back, or that the take-back was not
    /// confirmed in time.
    async fn enqueue_replicated(
        &self,
        queue: &str,
        request: &str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
        (wanted, timeout): (u32, Duration),
    ) -> Result<Value> {
        let connection = self.blocking.get().await?;
        self.round_trips.fetch_add(2, Ordering::Relaxed);
        let reply: Value = script
            .evalsha_with_reload(&connection.client, keys, args)
            .await?;
        let added = added_ids(&reply)?;
        if added.is_empty() {
            // A refused call (an idempotency mismatch), or one whose jobs
            // all existed already: nothing of this call's to wait for.
            return Ok(reply);
        }
        let acked = match wait_for_replicas(&connection, &self.base(queue), wanted, timeout).await {
            Ok(acked) => acked,
            Err(error) => {
                tracing::warn!(%error, queue, "WAIT failed after an enqueue; taking its jobs back");
                0
            }
        };
        if acked >= wanted {
            return Ok(reply);
        }
        let (keys, mut args) = self.prelude(queue, 3 + added.len());
        args.push(Value::from("take_back"));
        args.push(Value::from(request));
        args.push(int(added.len() as u64));
        args.extend(added.into_iter().map(Value::from));
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let taken_back: Result<Value> = self
            .scripts
            .control
            .evalsha_with_reload(&connection.client, keys, args)
            .await
            .map_err(Error::from);
        match taken_back.and_then(|reply| number(&reply)) {
            Ok(1) => {}
            Ok(_) => return Err(Error::EnqueueOutcomeUnknown { acked, wanted }),
            Err(error) => {
                tracing::warn!(%error, queue, "taking back an unreplicated enqueue failed");
                return Err(Error::EnqueueOutcomeUnknown { acked, wanted });
            }
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match wait_for_replicas(&connection, &self.base(queue), wanted, timeout).await {
            Ok(confirmed) if confirmed >= wanted => Err(Error::NotReplicated { acked, wanted }),
            Ok(confirmed) => {
                tracing::warn!(
                    confirmed,
                    wanted,
                    queue,
                    "too few replicas confirmed the take-back of an unreplicated enqueue"
                );
                Err(Error::EnqueueOutcomeUnknown { acked, wanted })
            }
            Err(error) => {
                tracing::warn!(%error, queue, "WAIT failed after a take-back");
                Err(Error::EnqueueOutcomeUnknown { acked, wanted })
            }
        }
    }

    /// Sets or (with `max` 0) removes a rate limit through control.lua's
    /// `op` (`rate_limit` or `group_rate_limit`).
    async fn limit_rate(&self, queue: &str, op: &str, max: u32, per: Duration) -> Result<()> {
        let args = vec![int(u64::from(max)), int(millis(per).max(1))];
        self.control(queue, op, args).await?;
        Ok(())
    }

    /// Runs one operation of `schedule.lua`.
    async fn schedule(&self, queue: &str, op: &str, rest: Vec<Value>) -> Result<Value> {
        let (keys, mut args) = self.prelude(queue, 1 + rest.len());
        args.push(Value::from(op));
        args.extend(rest);
        self.run(&self.scripts.schedule, keys, args).await
    }

    /// Runs `processes.lua`: past the breaker for a worker's own presence
    /// (`own`: its announcement and its withdrawal), through it for a
    /// listing, which every producer's wire version is read from and which
    /// would otherwise hold each enqueue behind a call that waits for its
    /// timeout while Redis is down.
    async fn presence(&self, args: Vec<Value>, own: bool) -> Result<Value> {
        let reports = format!("{{{}}}:processes", self.prefix);
        let keys = vec![reports.clone(), format!("{reports}:at")];
        if own {
            self.run_past_breaker(&self.scripts.processes, keys, args)
                .await
        } else {
            self.run(&self.scripts.processes, keys, args).await
        }
    }

    pub(crate) async fn control(&self, queue: &str, op: &str, rest: Vec<Value>) -> Result<Value> {
        let (keys, mut args) = self.prelude(queue, 1 + rest.len());
        args.push(Value::from(op));
        args.extend(rest);
        self.run(&self.scripts.control, keys, args).await
    }
}

/// A job's fields as the adding scripts take them: payload, priority, max
/// attempts, backoff, timeout ms, group, delay ms.
fn job_fields(job: &NewJob) -> [Value; 7] {
    [
        Value::Bytes(job.payload.clone().into()),
        int(u64::from(job.priority)),
        int(u64::from(job.max_attempts)),
        Value::from(job.backoff.as_str()),
        int(job.timeout_ms),
        Value::from(job.group.as_str()),
        int(job.delay_ms),
    ]
}

/// Whether a call of `jobs` is one job that enqueue_one.lua writes: at
/// the default priority, in the default group, without an idempotency key
/// or a delay. Decided by the call's own job alone: the script writes what
/// enqueue.lua would.
fn plain_one(jobs: &[NewJob]) -> Option<&NewJob> {
    match jobs {
        [job]
            if job.priority == crate::options::DEFAULT_PRIORITY
                && job.group.is_empty()
                && job.delay_ms == 0
                && job.idempotency.is_none() =>
        {
            Some(job)
        }
        _ => None,
    }
}

/// enqueue_one.lua's keys and arguments: the queue's meta hash; the key
/// prefix, the events' setting, the call, and the job's fields, its trace
/// context and context left out when they and those after them are empty.
fn enqueue_one_args(
    base: String,
    events_max_len: u64,
    request: &str,
    job: &NewJob,
    wire: u32,
) -> (Vec<String>, Vec<Value>) {
    let keys = vec![format!("{base}meta")];
    let mut args = Vec::with_capacity(10);
    args.extend([
        Value::from(base),
        int(events_max_len),
        Value::from(request),
        int(u64::from(wire)),
        Value::Bytes(job.payload.clone().into()),
        int(u64::from(job.max_attempts)),
        Value::from(job.backoff.as_str()),
        int(job.timeout_ms),
    ]);
    if !job.trace.is_empty() || !job.context.is_empty() {
        args.push(Value::from(job.trace.as_str()));
    }
    if !job.context.is_empty() {
        args.push(Value::from(job.context.as_str()));
    }
    (keys, args)
}

/// The enqueue script's keys and arguments after the prelude's: the call,
/// then each job's fields (see enqueue.lua).
pub(crate) fn enqueue_args(
    (keys, mut args): (Vec<String>, Vec<Value>),
    request: &str,
    jobs: &[NewJob],
    wire: u32,
) -> (Vec<String>, Vec<Value>) {
    // A job's trace context is sent only when one of the call's jobs has
    // one, and its context only when one has that: the script takes 9
    // fields a job, 10 with the trace context, or 11 with both.
    let with_context = jobs.iter().any(|job| !job.context.is_empty());
    let traced = with_context || jobs.iter().any(|job| !job.trace.is_empty());
    let fields = 9 + usize::from(traced) + usize::from(with_context);
    args.reserve(8 + jobs.len() * (fields + 1));
    args.push(Value::from(request));
    args.push(int(jobs.len() as u64));
    args.push(int(u64::from(wire)));
    for job in jobs {
        // The key's hold as the script reads it: a window in ms, or `s`
        // (until started), `c` (until completed), `d` (debounce).
        let (key, hold) = match &job.idempotency {
            None => (String::new(), Value::from("0")),
            Some((key, hold)) => (
                key.clone(),
                match hold {
                    KeyHold::Window(ms) => int(*ms),
                    KeyHold::UntilStarted => Value::from("s"),
                    KeyHold::UntilCompleted => Value::from("c"),
                    KeyHold::Debounce => Value::from("d"),
                },
            ),
        };
        args.extend(job_fields(job));
        args.extend([Value::from(key), hold]);
        if traced {
            args.push(Value::from(job.trace.as_str()));
        }
        if with_context {
            args.push(Value::from(job.context.as_str()));
        }
    }
    (keys, args)
}

#[async_trait]
impl Store for RedisStore {
    async fn enqueue(
        &self,
        queue: &str,
        request: &str,
        jobs: Vec<NewJob>,
        wire: u32,
    ) -> Result<Vec<(JobId, bool)>> {
        let (script, (keys, args)) = match plain_one(&jobs) {
            Some(job) => (
                &self.scripts.enqueue_one,
                enqueue_one_args(
                    self.base(queue),
                    self.settings.events_max_len,
                    request,
                    job,
                    wire,
                ),
            ),
            None => (
                &self.scripts.enqueue,
                enqueue_args(self.prelude(queue, 0), request, &jobs, wire),
            ),
        };
        let reply = match self.replicas {
            None => self.run(script, keys, args).await?,
            Some(replicas) => {
                let breaker = self
                    .breakers
                    .of(&self.client, keys.first().map(String::as_str));
                self.guarded(
                    breaker,
                    // Boxed: its fred calls are large futures, which the
                    // unreplicated path would otherwise carry too.
                    Box::pin(self.enqueue_replicated(queue, request, script, keys, args, replicas)),
                )
                .await?
            }
        };
        if let Some(index) = mismatch(&reply)? {
            // The key is read only here: most calls carry none.
            let key = index
                .checked_sub(1)
                .and_then(|index| jobs.get(index))
                .map(|job| {
                    job.idempotency
                        .as_ref()
                        .map(|(key, _)| key.clone())
                        .unwrap_or_default()
                })
                .ok_or_else(|| {
                    Error::Protocol(format!("enqueue named job {index} as a mismatch"))
                })?;
            return Err(Error::IdempotencyMismatch { key });
        }
        enqueued_ids(reply)
    }

    async fn enqueue_ticks(
        &self,
        queue: &str,
        request: &str,
        guards: &[TickGuard],
        wire: u32,
    ) -> Result<TicksAdded> {
        // Not waited for by replicas, as other enqueues may be: a tick a
        // failover loses is lost with the plan that its scheduler moved on,
        // so the new primary enqueues that tick again.
        let fields: usize = guards.iter().map(|guard| 13 + guard.ticks.len()).sum();
        let (keys, mut args) = self.prelude(queue, 3 + fields);
        args.push(Value::from(request));
        args.push(int(u64::from(wire)));
        args.push(int(guards.len() as u64));
        for guard in guards {
            args.extend([
                Value::from(guard.scheduler.as_str()),
                int(guard.revision),
                int(guard.next_ms),
                int(guard.new_next_ms),
                int(guard.due_ms),
                int(guard.ticks.len() as u64),
            ]);
            args.extend(guard.ticks.iter().map(|tick| int(*tick)));
            args.extend(job_fields(&guard.job));
        }
        let reply = self.run(&self.scripts.tick, keys, args).await?;
        tick_ids(reply, guards.len())
    }

    async fn enqueue_flow(
        &self,
        request: &str,
        nodes: &[FlowNode],
        wire: u32,
    ) -> Result<Vec<JobId>> {
        let root = nodes
            .first()
            .ok_or_else(|| Error::InvalidOption("a flow needs a job".to_owned()))?;
        let bases: Vec<String> = nodes.iter().map(|node| self.base(&node.queue)).collect();
        if self.client.is_clustered() {
            let slot = fred::util::redis_keyslot(bases[0].as_bytes());
            if let Some(node) = (0..nodes.len())
                .find(|&index| fred::util::redis_keyslot(bases[index].as_bytes()) != slot)
            {
                return Err(Error::InvalidOption(format!(
                    "queue {:?} of this flow is in another Cluster slot than queue {:?}: a flow that spans queues needs RedisQueues::one_slot on a Cluster",
                    nodes[node].queue, root.queue
                )));
            }
        }
        let (keys, mut args) = self.prelude(&root.queue, 3 + nodes.len() * 11);
        args.push(Value::from(request));
        args.push(int(u64::from(wire)));
        args.push(int(nodes.len() as u64));
        for (node, base) in nodes.iter().zip(bases) {
            args.extend([
                Value::from(base),
                Value::from(node.queue.as_str()),
                int(node.parent.map_or(0, |parent| parent as u64 + 1)),
                Value::from(node.on_failure.as_str()),
            ]);
            args.extend(job_fields(&node.job));
        }
        let reply = self.run(&self.scripts.flow, keys, args).await?;
        array(reply)?
            .iter()
            .map(|id| Ok(JobId::from(text(id)?)))
            .collect()
    }

    async fn children(&self, queue: &str, id: &JobId) -> Result<Vec<ChildInfo>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}kids:{id}", self.base(queue));
        let reply: Value = self
            .guarded(self.breakers.of(&self.client, Some(&key)), async {
                Ok(self
                    .client
                    .custom(cmd!("HGETALL"), vec![Value::from(key.as_str())])
                    .await?)
            })
            .await?;
        let pairs: Vec<(Value, Value)> = match reply {
            Value::Map(map) => map
                .inner()
                .into_iter()
                .map(|(key, value)| (Value::from(key), value))
                .collect(),
            other => {
                let values = array(other)?;
                values
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect()
            }
        };
        let mut children = Vec::with_capacity(pairs.len());
        for (field, value) in pairs {
            let field = text(&field)?;
            let (base, child) = field
                .split_once(' ')
                .ok_or_else(|| Error::Protocol(format!("a flow child reads {field:?}")))?;
            let child_queue = self
                .queue_of(base)
                .ok_or_else(|| Error::Protocol(format!("a flow child's queue reads {base:?}")))?;
            let value = value.as_bytes().map(<[u8]>::to_vec).unwrap_or_default();
            let outcome = match value.split_first() {
                Some((b'c', result)) => {
                    ChildOutcome::Completed((!result.is_empty()).then(|| result.to_vec()))
                }
                Some((b'f', error)) => {
                    ChildOutcome::Failed(String::from_utf8_lossy(error).into_owned())
                }
                _ => ChildOutcome::Pending,
            };
            children.push(ChildInfo {
                queue: child_queue.to_owned(),
                id: JobId::from(child),
                outcome,
            });
        }
        sort_children(&mut children);
        Ok(children)
    }

    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: &str,
        template: &[u8],
    ) -> Result<u64> {
        let reply = self
            .schedule(
                queue,
                "upsert",
                vec![
                    Value::from(id),
                    Value::from(schedule),
                    Value::Bytes(template.to_vec().into()),
                    int(MAX_SCHEDULERS),
                ],
            )
            .await?;
        unsigned(&reply)
    }

    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        let reply = self
            .schedule(queue, "remove", vec![Value::from(id)])
            .await?;
        Ok(number(&reply)? == 1)
    }

    async fn pause_scheduler(&self, queue: &str, id: &str, paused: bool) -> Result<bool> {
        let op = if paused { "pause" } else { "resume" };
        let reply = self.schedule(queue, op, vec![Value::from(id)]).await?;
        Ok(number(&reply)? == 1)
    }

    async fn scheduler(&self, queue: &str, id: &str) -> Result<Option<StoredScheduler>> {
        let reply = self.schedule(queue, "get", vec![Value::from(id)]).await?;
        if matches!(reply, Value::Null) {
            return Ok(None);
        }
        stored_scheduler(reply).map(Some)
    }

    async fn schedulers(
        &self,
        queue: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredScheduler>> {
        let reply = self
            .schedule(queue, "list", vec![Value::from(after), int(limit as u64)])
            .await?;
        array(reply)?.into_iter().map(stored_scheduler).collect()
    }

    async fn due_schedulers(&self, queue: &str, limit: usize) -> Result<DueSchedulers> {
        let reply = self.schedule(queue, "due", vec![int(limit as u64)]).await?;
        let mut values = array(reply)?.into_iter();
        let now_ms = values.next().map_or(Ok(0), |value| unsigned(&value))?;
        let next_due = values.next().map_or(Ok(-1), |value| number(&value))?;
        Ok(DueSchedulers {
            now_ms,
            next_due_ms: u64::try_from(next_due).ok(),
            due: values.map(stored_scheduler).collect::<Result<_>>()?,
        })
    }

    async fn fetch(&self, queue: &str, call: &FetchCall) -> Result<Fetched> {
        let (keys, mut args) = self.prelude(queue, 7 + call.acks.len() * 3);
        args.push(Value::from(call.caller.as_str()));
        args.push(Value::from(call.request.as_str()));
        args.push(int(millis(call.lease)));
        args.push(int(call.want as u64));
        args.push(int((call.max_bytes as u64).min(MAX_SETTING)));
        args.push(int(call.acks.len() as u64));
        for (index, ack) in call.acks.iter().enumerate() {
            args.push(Value::from(ack.id.as_str()));
            args.push(Value::from(ack.token.as_str()));
            let result = call.results.get(index).map_or(&[][..], Vec::as_slice);
            args.push(Value::Bytes(result.to_vec().into()));
        }
        args.push(int(u64::from(TRACED)));
        let per_job = if TRACED { 12 } else { 11 };
        let reply = array(
            self.run_past_breaker(&self.scripts.fetch, keys, args)
                .await?,
        )?;
        if reply.len() < 5 || (reply.len() - 5) % per_job != 0 {
            return Err(Error::Protocol(format!(
                "fetch answered {} values",
                reply.len()
            )));
        }
        let next_wake = number(&reply[1])?;
        Ok(Fetched {
            now_ms: number(&reply[0])?.unsigned_abs(),
            next_wake: (next_wake >= 0).then(|| Duration::from_millis(next_wake.unsigned_abs())),
            rejected: count(&reply[2])?,
            lease_left: Duration::from_millis(unsigned(&reply[4])?),
            jobs: reply[5..]
                .chunks_exact(per_job)
                .map(taken)
                .collect::<Result<_>>()?,
        })
    }

    async fn wait(&self, queue: &str, timeout: Duration) -> Result<()> {
        let connection = self.blocking.get().await?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        // Redis takes the timeout in seconds, with decimals; zero would
        // block for ever.
        let seconds = timeout.as_secs_f64().max(0.01);
        let options = Options {
            timeout: Some(timeout + Duration::from_secs(5)),
            ..Options::default()
        };
        let marker = format!("{}mark", self.base(queue));
        let blocked = connection.client.with_options(&options);
        // Sent as a custom blocking command: fred's own `bzpopmin` turns the
        // nil of a wait that saw nothing into a timeout error.
        let bzpopmin = CustomCommand::new_static("BZPOPMIN", ClusterHash::FirstKey, true);
        connection
            .run(
                blocked
                    .custom::<Value, _>(bzpopmin, vec![Value::from(marker), Value::from(seconds)]),
            )
            .await?;
        Ok(())
    }

    async fn fail(
        &self,
        queue: &str,
        lease: &Lease,
        failure: Failure,
        error: &str,
    ) -> Result<AfterFailure> {
        let (kind, delay) = match failure {
            Failure::Retry(delay) => ("retry", millis(delay)),
            Failure::Dead => ("dead", 0),
            Failure::Requeue => ("requeue", 0),
            Failure::Stalled => ("stalled", 0),
            Failure::Hold(delay) => ("hold", millis(delay)),
            Failure::HoldGroup(delay) => ("hold_group", millis(delay)),
            Failure::Cancelled => ("cancelled", 0),
        };
        let (keys, mut args) = self.prelude(queue, 5);
        args.extend([
            Value::from(lease.id.as_str()),
            Value::from(lease.token.as_str()),
            Value::from(kind),
            Value::from(bounded_message(error).as_ref()),
            int(delay),
        ]);
        let reply = self
            .run_past_breaker(&self.scripts.fail, keys, args)
            .await?;
        AfterFailure::parse(&text(&reply)?)
    }

    async fn renew(&self, queue: &str, lease: Duration, held: &[Lease]) -> Result<Renewed> {
        let (keys, mut args) = self.prelude(queue, 2 + held.len() * 2);
        args.push(int(millis(lease)));
        args.push(int(held.len() as u64));
        for lease in held {
            args.push(Value::from(lease.id.as_str()));
            args.push(Value::from(lease.token.as_str()));
        }
        let reply = array(
            self.run_past_breaker(&self.scripts.renew, keys, args)
                .await?,
        )?;
        let mut lists = reply.into_iter().map(|list| {
            array(list)?
                .iter()
                .map(|position| {
                    let position = usize::try_from(number(position)?).unwrap_or(0);
                    position.checked_sub(1).ok_or_else(|| {
                        Error::Protocol(format!("renew answered position {position}"))
                    })
                })
                .collect::<Result<Vec<_>>>()
        });
        let (Some(lost), Some(cancel)) = (lists.next(), lists.next()) else {
            return Err(Error::Protocol(
                "renew answered fewer than two lists".to_owned(),
            ));
        };
        Ok(Renewed {
            lost: lost?,
            cancel: cancel?,
        })
    }

    async fn progress(
        &self,
        queue: &str,
        lease: &Lease,
        percent: u8,
        message: &str,
    ) -> Result<bool> {
        let (keys, mut args) = self.prelude(queue, 4);
        args.extend([
            Value::from(lease.id.as_str()),
            Value::from(lease.token.as_str()),
            int(u64::from(percent)),
            Value::from(bounded_message(message).as_ref()),
        ]);
        Ok(number(
            &self
                .run_past_breaker(&self.scripts.progress, keys, args)
                .await?,
        )? == 1)
    }

    async fn check_enqueue(&self, queue: &str) -> Result<()> {
        let request = random_id();
        let Some((wanted, timeout)) = self.replicas.filter(|(wanted, _)| *wanted > 0) else {
            self.control(queue, "probe", vec![Value::from(request)])
                .await?;
            return Ok(());
        };
        // As an enqueue that waits for replicas: the write and its `WAIT`
        // on one pooled connection, through the breaker of the node the
        // enqueue would go to, so that the check is held back exactly when
        // an enqueue would be.
        let (keys, mut args) = self.prelude(queue, 2);
        args.push(Value::from("probe"));
        args.push(Value::from(request));
        let breaker = self
            .breakers
            .of(&self.client, keys.first().map(String::as_str));
        let acked = self
            .guarded(breaker, async {
                let connection = self.blocking.get().await?;
                self.round_trips.fetch_add(2, Ordering::Relaxed);
                let _: Value = self
                    .scripts
                    .control
                    .evalsha_with_reload(&connection.client, keys, args)
                    .await?;
                wait_for_replicas(&connection, &self.base(queue), wanted, timeout).await
            })
            .await?;
        if acked < wanted {
            return Err(Error::NotReplicated { acked, wanted });
        }
        Ok(())
    }

    fn reconnections(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.reconnections.clone())
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let op = if paused { "pause" } else { "resume" };
        self.control(queue, op, Vec::new()).await?;
        Ok(())
    }

    async fn counts(&self, queue: &str) -> Result<Counts> {
        let reply = array(self.control(queue, "counts", Vec::new()).await?)?;
        counts_of(queue, "counts", &reply)
    }

    async fn backlog(&self, queue: &str, most_groups: usize) -> Result<Backlog> {
        let args = vec![int(most_groups as u64)];
        let reply = array(self.control(queue, "backlog", args).await?)?;
        let [counted @ .., now, oldest] = reply.as_slice() else {
            return Err(Error::Protocol(format!(
                "backlog answered {} values",
                reply.len()
            )));
        };
        let (now, oldest) = (number(now)?, number(oldest)?);
        Ok(Backlog {
            counts: counts_of(queue, "backlog", counted)?,
            oldest_waiting: (oldest >= 0)
                .then(|| Duration::from_millis(now.saturating_sub(oldest).max(0).unsigned_abs())),
        })
    }

    async fn cancel(&self, queue: &str, id: &JobId) -> Result<Cancelled> {
        let reply = text(
            &self
                .control(queue, "cancel", vec![Value::from(id.as_str())])
                .await?,
        )?;
        Ok(match reply.as_str() {
            "cancelled" => Cancelled::Removed,
            "requested" => Cancelled::Requested,
            "missing" => Cancelled::NotFound,
            state => match JobState::parse(state) {
                Some(state) => Cancelled::AlreadyFinished(state),
                None => return Err(Error::Protocol(format!("cancel answered {state:?}"))),
            },
        })
    }

    async fn retry_dead(&self, queue: &str, which: DeadJobs<'_>) -> Result<u64> {
        let reply = match which {
            DeadJobs::One(id) => {
                self.control(queue, "retry_one", vec![Value::from(id.as_str())])
                    .await?
            }
            DeadJobs::Oldest(limit) => {
                self.control(queue, "retry_oldest", vec![int(limit)])
                    .await?
            }
        };
        Ok(number(&reply)?.unsigned_abs())
    }

    async fn clean(
        &self,
        queue: &str,
        state: Finished,
        older_than: Duration,
        keep: u64,
        limit: u64,
    ) -> Result<u64> {
        let state = match state {
            Finished::Completed => "completed",
            Finished::Dead => "dead",
        };
        let args = vec![
            Value::from(state),
            int(millis(older_than).min(MAX_SETTING)),
            int(keep),
            int(limit),
        ];
        Ok(number(&self.control(queue, "clean", args).await?)?.unsigned_abs())
    }

    async fn set_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()> {
        self.limit_rate(queue, "rate_limit", max, per).await
    }

    async fn set_group_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()> {
        self.limit_rate(queue, "group_rate_limit", max, per).await
    }

    async fn limits(&self, queue: &str) -> Result<Limits> {
        let reply = array(self.control(queue, "limits", Vec::new()).await?)?;
        let field = |index: usize| -> Result<u64> {
            let value = reply
                .get(index)
                .ok_or_else(|| Error::Protocol(format!("the limits answer lacks field {index}")))?;
            Ok(number(value)?.unsigned_abs())
        };
        let rate_limit = |max: u64, per: u64| {
            (max > 0).then(|| RateLimit {
                max: u32::try_from(max).unwrap_or(u32::MAX),
                per: Duration::from_millis(per),
            })
        };
        let (hold, now) = (field(6)?, field(7)?);
        Ok(Limits {
            rate: rate_limit(field(0)?, field(1)?),
            started_in_window: field(2)?,
            group_rate: rate_limit(field(3)?, field(4)?),
            group_concurrency: u32::try_from(field(5)?).ok().filter(|cap| *cap > 0),
            held_for: (hold > now).then(|| Duration::from_millis(hold - now)),
        })
    }

    async fn set_group_limit(&self, queue: &str, limit: u32) -> Result<()> {
        self.control(queue, "group_limit", vec![int(u64::from(limit))])
            .await?;
        Ok(())
    }

    async fn job(&self, queue: &str, id: &JobId) -> Result<Option<JobInfo>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}j:{id}", self.base(queue));
        let reply: Value = self
            .guarded(self.breakers.of(&self.client, Some(&key)), async {
                Ok(self
                    .client
                    .custom(cmd!("HGETALL"), vec![Value::from(key.as_str())])
                    .await?)
            })
            .await?;
        job_info(id, reply)
    }

    async fn list(&self, queue: &str, state: JobState, limit: usize) -> Result<Vec<JobId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let base = self.base(queue);
        let last = Value::Integer(i64::try_from(limit - 1).unwrap_or(i64::MAX));
        let (command, key, reverse) = match state {
            JobState::Active => (cmd!("ZRANGE"), "active", false),
            JobState::Delayed => (cmd!("ZRANGE"), "delayed", false),
            JobState::Completed => (cmd!("LRANGE"), "done", false),
            JobState::Dead => (cmd!("ZRANGE"), "dead", true),
            JobState::WaitingChildren => (cmd!("ZRANGE"), "wc", false),
            JobState::Waiting => return Ok(Vec::new()),
        };
        let mut args = vec![Value::from(format!("{base}{key}")), int(0), last];
        if reverse {
            args.push(Value::from("REV"));
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: Value = self
            .guarded(self.breakers.of(&self.client, Some(&base)), async {
                Ok(self.client.custom(command, args).await?)
            })
            .await?;
        array(reply)?
            .iter()
            .map(|member| {
                // Active members are `id:token`.
                let member = text(member)?;
                let id = member.split_once(':').map_or(member.as_str(), |(id, _)| id);
                Ok(JobId::from(id))
            })
            .collect()
    }

    async fn events(&self, queue: &str, after: Option<&str>, count: usize) -> Result<Vec<Event>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let start = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let args = vec![
            Value::from(format!("{}ev", self.base(queue))),
            Value::from(start),
            Value::from("+"),
            Value::from("COUNT"),
            int(count as u64),
        ];
        let reply: Value = self.client.custom(cmd!("XRANGE"), args).await?;
        stream_events(reply)
    }

    async fn durability_warning(&self) -> Result<Option<String>> {
        // On a Cluster every primary holds some queue: ask each of them.
        let primaries = self
            .client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes());
        let mut policies = Vec::new();
        match primaries {
            Some(primaries) if !primaries.is_empty() => {
                for server in primaries {
                    let node = self.client.with_cluster_node(&server);
                    let policy = maxmemory_policy(node.custom(config_get(), policy_args()).await?)?;
                    policies.push((Some(server.to_string()), policy));
                }
            }
            _ => {
                let reply = self.client.custom(config_get(), policy_args()).await?;
                policies.push((None, maxmemory_policy(reply)?));
            }
        }
        Ok(policies
            .into_iter()
            .find(|(_, policy)| policy != "noeviction")
            .map(|(server, policy)| {
                let on = server.map(|server| format!(" on {server}")).unwrap_or_default();
                format!(
                    "redis{on} evicts keys under memory pressure (maxmemory-policy {policy}); queue data needs noeviction"
                )
            }))
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn announce(&self, id: &str, report: &[u8]) -> Result<()> {
        let forget = u64::try_from(crate::store::FORGET_AFTER.as_millis()).unwrap_or(u64::MAX);
        self.presence(
            vec![
                Value::from("announce"),
                Value::from(id),
                Value::Bytes(report.to_vec().into()),
                int(forget),
            ],
            true,
        )
        .await?;
        Ok(())
    }

    async fn withdraw(&self, id: &str) -> Result<()> {
        self.presence(vec![Value::from("withdraw"), Value::from(id)], true)
            .await?;
        Ok(())
    }

    async fn processes(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        let reply = self.presence(vec![Value::from("list")], false).await?;
        let items = reply.into_array();
        let number = |value: &Value| {
            value
                .as_string()
                .and_then(|text| text.parse::<f64>().ok())
                .ok_or_else(|| Error::Protocol("a process time that is not a number".to_owned()))
        };
        let (now, rest) = items
            .split_first()
            .ok_or_else(|| Error::Protocol("no server time".to_owned()))?;
        let now = number(now)?;
        rest.chunks_exact(2)
            .map(|pair| {
                let report = pair[0].as_bytes().map(<[u8]>::to_vec).unwrap_or_default();
                let at = number(&pair[1])?;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let since = (now - at).max(0.0) as u64;
                Ok((report, since))
            })
            .collect()
    }
}

/// `WAIT`s up to `timeout` for `wanted` replicas to have every write of
/// `connection` so far; returns how many have. Routed by the queue's slot:
/// on a Cluster, the primary that took the writes, over this connection's
/// link to it.
/// Opens and closes the breakers on the client's own connection events:
/// a connection to a node that ends (a server killed, a reset, a link
/// found unresponsive) opens that node's breaker at once, so the calls
/// after it fail in microseconds rather than each waiting for its
/// timeout; a reconnection closes it. Ends once the client is gone.
fn watch_connections(client: &Client, breakers: &Arc<Breakers>) {
    let clustered = client.is_clustered();
    let node = move |server: &fred::types::config::Server| {
        clustered.then(|| format!("{}:{}", server.host, server.port))
    };
    let mut errors = client.error_rx();
    let mut reconnections = client.reconnect_rx();
    let weak = Arc::downgrade(breakers);
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let event = tokio::select! {
                error = errors.recv() => error.map(|(error, server)| (Some(error), server)),
                server = reconnections.recv() => server.map(|server| (None, Some(server))),
            };
            let (error, server) = match event {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            let Some(breakers) = weak.upgrade() else {
                return;
            };
            let breaker = breakers.node(server.as_ref().and_then(node).as_deref());
            match error {
                Some(error) if is_down(&error) => {
                    if breaker.open() {
                        opened(&error);
                    }
                }
                Some(_) => {}
                None => {
                    if breaker.close() {
                        closed();
                    }
                }
            }
        }
    });
}

/// Says, once per outage of a node, that its breaker opened.
fn opened(error: &fred::error::Error) {
    tracing::warn!(
        %error,
        "the job queues' Redis is down: calls that need it fail at once until it answers again"
    );
}

/// Says that a node's breaker closed.
fn closed() {
    tracing::info!("the job queues' Redis answers again");
}

async fn wait_for_replicas(
    connection: &Blocker,
    base: &str,
    wanted: u32,
    timeout: Duration,
) -> Result<u32> {
    let slot = fred::util::redis_keyslot(base.as_bytes());
    let options = Options {
        timeout: Some(timeout + Duration::from_secs(1)),
        ..Options::default()
    };
    let waiting = connection.client.with_options(&options);
    let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), true);
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let acked: i64 = connection
        .run(waiting.custom(wait, vec![int(u64::from(wanted)), int(timeout_ms)]))
        .await?;
    Ok(u32::try_from(acked.max(0)).unwrap_or(u32::MAX))
}

fn config_get() -> CustomCommand {
    CustomCommand::new_static("CONFIG", ClusterHash::Random, false)
}

fn policy_args() -> Vec<Value> {
    vec![Value::from("GET"), Value::from("maxmemory-policy")]
}

/// The policy in a `CONFIG GET maxmemory-policy` reply.
fn maxmemory_policy(reply: Value) -> Result<String> {
    let policy = match reply {
        Value::Map(map) => map.inner().into_iter().next().map(|(_, value)| value),
        other => other.into_array().into_iter().nth(1),
    };
    policy
        .and_then(|value| value.as_string())
        .ok_or_else(|| Error::Protocol("CONFIG GET maxmemory-policy answered nothing".to_owned()))
}

/// The scripts use `ZMSCORE` and `LPOP`/`RPOP` with a count: Redis 6.2 or
/// newer. Fails with [`Error::Unsupported`] on an older server; a reply
/// without a version (a proxy that hides it) is let through.
fn check_version(info: &str) -> Result<()> {
    let Some(version) = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))
    else {
        return Ok(());
    };
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 2) {
        return Err(Error::Unsupported(format!(
            "redis {version}: the queue's scripts need Redis 6.2 or newer"
        )));
    }
    Ok(())
}

/// A number argument (fred takes signed integers).
pub(crate) fn int(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The counts a `counts` reply holds, or the first values of a `backlog`
/// reply (`op` names which).
fn counts_of(queue: &str, op: &str, counted: &[Value]) -> Result<Counts> {
    let [
        waiting,
        delayed,
        active,
        completed,
        dead,
        paused,
        waiting_children,
    ] = counted
    else {
        return Err(Error::Protocol(format!(
            "{op} answered {} counts",
            counted.len()
        )));
    };
    let unsigned = |value: &Value| {
        number(value).and_then(|count| {
            u64::try_from(count).map_err(|_| {
                Error::Protocol(format!(
                    "queue {queue:?} counts {count} jobs in a state: its counters were changed outside this crate's scripts"
                ))
            })
        })
    };
    Ok(Counts {
        waiting: unsigned(waiting)?,
        delayed: unsigned(delayed)?,
        active: unsigned(active)?,
        completed: unsigned(completed)?,
        dead: unsigned(dead)?,
        paused: number(paused)? == 1,
        waiting_children: unsigned(waiting_children)?,
    })
}

/// Checks a key prefix: the same rules as a queue name.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    crate::store::check_name("key prefix", prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_6_2_are_refused_with_their_version() {
        for old in ["5.0.14", "6.0.20", "6.1.0"] {
            let info = format!("# Server\r\nredis_version:{old}\r\nredis_mode:standalone\r\n");
            let refused = check_version(&info);
            assert!(
                matches!(&refused, Err(Error::Unsupported(why)) if why.contains(old)),
                "{refused:?}"
            );
        }
        for fine in ["6.2.0", "7.0.15", "7.2.4", "10.0.0"] {
            assert!(
                check_version(&format!("redis_version:{fine}\r\n")).is_ok(),
                "{fine}"
            );
        }
        assert!(
            check_version("# Server\r\n").is_ok(),
            "no version, no verdict"
        );
    }
}
