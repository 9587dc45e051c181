//! The Redis store: one `EVALSHA` per operation. A check of one rule, the
//! common case, runs its algorithm's own script (`check/`), which only
//! decides whether to consume and answers with the state it read; the
//! decision's numbers are then computed here by the memory store's own steps
//! ([`check_one`]). Everything else (a quota of several rules, peeks,
//! resets and blocks) runs `redis.lua`, which holds every algorithm. Every
//! script reads the server's `TIME`, so instances whose clocks disagree
//! still agree on every decision; every key they write expires once its
//! state equals a fresh one; and all keys of one limiter and subject share
//! a hash tag, so the store works unchanged on Redis Cluster.
//!
//! Every call is bounded by the store's timeout and passes the circuit
//! breaker of the node it goes to ([`crate::breaker`]), which every clone
//! of the store shares. A call that finds its node down (no connection, no
//! answer in time) opens it; an error Redis answers with (a script's
//! refusal of one call) does not.

use std::sync::Arc;
use std::time::Duration;

use fred::error::ErrorKind;
use fred::prelude::Client;
use fred::types::scripts::Script;
use fred::types::{FromValue, Value};
use tracing::Instrument as _;

use crate::algorithm::{Algorithm, Limit, Log, State, Step};
use crate::breaker::{Breakers, Permit, is_down};
use crate::error::{Error, Result};
use crate::store::{Entry, Op, Outcome, Rules, check_one};
use crate::trace;

/// The script of every operation, embedded.
const SCRIPT: &str = include_str!("redis.lua");
/// The script of a check of one rule of an algorithm: the line that reads
/// the time argument (`$now`, one past the body's arguments), `check/head.lua`,
/// the algorithm's body and `check/tail.lua`.
macro_rules! check_script {
    ($now:literal, $body:literal) => {
        concat!(
            "local now = tonumber(ARGV[",
            $now,
            "])\n",
            include_str!("check/head.lua"),
            include_str!(concat!("check/", $body)),
            include_str!("check/tail.lua"),
        )
    };
}
/// GCRA, the leaky queue and the buckets: penalty, the cost's span, the
/// tolerance.
const TAT_SCRIPT: &str = check_script!(4, "tat.lua");
/// Fixed window: penalty, cost, limit, window.
const FIXED_WINDOW_SCRIPT: &str = check_script!(5, "fixed.lua");
/// Sliding log, a script of its own (its state is a sorted set): penalty,
/// cost, limit, window.
const SLIDING_LOG_SCRIPT: &str = include_str!("check/log.lua");
/// Sliding window: penalty, cost, limit, window.
const SLIDING_WINDOW_SCRIPT: &str = check_script!(5, "sliding.lua");
/// The registry of blocked keys.
const BLOCKED_SCRIPT: &str = include_str!("blocked.lua");
/// How many blocks a limiter's registry keeps: those that end last.
const MAX_REGISTERED: u64 = 10_000;

/// The default prefix of every key.
pub const DEFAULT_PREFIX: &str = "seawall:rl";

/// How long a call waits for Redis by default before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// How long after a failure the store sends its next probe.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// State kept in Redis (standalone, Sentinel or Cluster), shared by every
/// instance that uses the same prefix. Cheap to clone.
///
/// A call waits at most the store's [timeout](Self::with_timeout) (default
/// [`DEFAULT_TIMEOUT`]) whatever the client's own. A call that finds its
/// Redis node down, no connection or no answer in time, opens that node's
/// circuit breaker: from then on calls to the node are not sent, and each
/// limiter decides them at once by its
/// [`FailurePolicy`](crate::FailurePolicy), but for one call at a time, at
/// most one a second, let through as a probe; the first call the node
/// answers closes it. There is one breaker per node: on a Cluster, each
/// master's (a call finds it by its key's hash slot), so one master that
/// stops answering degrades only the checks of the keys it holds; on a
/// standalone server or behind Sentinel, one. Clones share the breakers, so
/// limiters built on clones of one store (build one store per Redis and
/// clone it) find a stalled node out together, and a request that passes
/// several of them waits for it at most once. An error Redis answers with (a script's
/// refusal of one call) is [`Error::Refused`] and leaves the breaker as it
/// is.
///
/// Keys, each a string unless said otherwise, each expiring once what it
/// holds equals a fresh state: per limiter and subject, with `{<prefix>:<limiter>:<key>}`
/// as `S`, `S:b` (blocked until, µs), `S:<code>:<rule>` (one rule's state:
/// its numbers joined by `:`; the algorithm's code in the name, so a rule
/// whose algorithm changed starts afresh; `4t` and `5t` for the buckets,
/// whose state is one time) and, for a sliding log, instead,
/// `S:log:<rule>` (a sorted set with at most the limit's number of members);
/// per limiter, `{<prefix>:<limiter>}:blocked` (a sorted set of the keys
/// blocked now, by when their block ends, expiring with the last one).
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: Arc<str>,
    script: Arc<Script>,
    check_scripts: Arc<CheckScripts>,
    blocked_script: Arc<Script>,
    timeout: Duration,
    breakers: Arc<Breakers>,
}

/// The scripts of a check of one rule, one per kind of state.
struct CheckScripts {
    tat: Script,
    fixed_window: Script,
    sliding_window: Script,
    sliding_log: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("breaker_open", &self.breakers.any_open())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `client` (connected, or connecting: a call waits for the
    /// client's own reconnection and times out as the client is configured)
    /// with the key prefix [`DEFAULT_PREFIX`].
    pub fn new(client: Client) -> Self {
        Self::with_prefix(client, DEFAULT_PREFIX)
    }

    /// Same, with keys under `prefix`.
    pub fn with_prefix(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: Arc::from(prefix.into()),
            script: Arc::new(Script::from_lua(SCRIPT)),
            check_scripts: Arc::new(CheckScripts {
                tat: Script::from_lua(TAT_SCRIPT),
                fixed_window: Script::from_lua(FIXED_WINDOW_SCRIPT),
                sliding_window: Script::from_lua(SLIDING_WINDOW_SCRIPT),
                sliding_log: Script::from_lua(SLIDING_LOG_SCRIPT),
            }),
            blocked_script: Arc::new(Script::from_lua(BLOCKED_SCRIPT)),
            timeout: DEFAULT_TIMEOUT,
            breakers: Arc::new(Breakers::new(PROBE_INTERVAL)),
        }
    }

    /// This store with calls waiting at most `timeout` for Redis (default
    /// [`DEFAULT_TIMEOUT`]); longer than [`MAX_DURATION`](crate::MAX_DURATION)
    /// is that long. Zero is refused: no call could succeed. The store's
    /// clones made before this call keep the timeout they had, and share
    /// the breaker with it.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "a Redis store's timeout must be longer than zero".into(),
            ));
        }
        self.timeout = timeout.min(crate::MAX_DURATION);
        Ok(self)
    }

    /// How long a call waits for Redis.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a circuit breaker is open: a Redis node (on a Cluster, any
    /// master) failed moments ago, and calls to it are decided by each
    /// limiter's failure policy until a probe finds it up.
    pub fn is_breaker_open(&self) -> bool {
        self.breakers.any_open()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `script` (named for its span by `purpose`) for `limiter`
    /// through the breaker, bounded by the timeout, in a `ratelimit.redis`
    /// span.
    pub(crate) async fn call<R: FromValue>(
        &self,
        limiter: &str,
        script: (&'static str, &Script),
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R> {
        let breaker = self
            .breakers
            .of(&self.client, keys.first().map(String::as_str));
        let Some(permit) = breaker.permit() else {
            return Err(Error::Unavailable);
        };
        self.send(limiter, script, keys, args, Some(permit)).await
    }

    /// Runs `script` as [`call`](Self::call) does, but past the breaker,
    /// whose state it leaves as it is: for a call that frees what Redis
    /// holds (a concurrency lease's release), which an open breaker would
    /// otherwise leave held until it expires.
    pub(crate) async fn call_past_breaker<R: FromValue>(
        &self,
        limiter: &str,
        script: (&'static str, &Script),
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R> {
        self.send(limiter, script, keys, args, None).await
    }

    async fn send<R: FromValue>(
        &self,
        limiter: &str,
        (purpose, script): (&'static str, &Script),
        keys: Vec<String>,
        args: Vec<Value>,
        permit: Option<Permit<'_>>,
    ) -> Result<R> {
        let span = trace::redis_span(limiter, purpose);
        let call = script.evalsha_with_reload(&self.client, keys, args);
        let answer = tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await;
        let (error, kind) = match answer {
            Ok(Ok(reply)) => {
                if let Some(permit) = permit
                    && permit.answered()
                {
                    trace::breaker_closed();
                }
                return Ok(reply);
            }
            Ok(Err(error)) if is_down(&error) => {
                if let Some(permit) = permit
                    && permit.down()
                {
                    trace::breaker_opened();
                }
                let kind = error.kind().to_str();
                (Error::Redis(error), kind)
            }
            Ok(Err(error)) => {
                if let Some(permit) = permit
                    && permit.answered()
                {
                    trace::breaker_closed();
                }
                let kind = error.kind().to_str();
                (Error::Refused(error), kind)
            }
            Err(_) => {
                if let Some(permit) = permit
                    && permit.down()
                {
                    trace::breaker_opened();
                }
                let error = Error::Redis(fred::error::Error::new(
                    ErrorKind::Timeout,
                    format!("no answer from Redis within {:?}", self.timeout),
                ));
                (error, "timeout")
            }
        };
        trace::redis_failed(&span, kind, &error);
        Err(error)
    }

    /// The hash tag every key of a subject starts with.
    pub(crate) fn subject_key(&self, limiter: &str, key: &str) -> String {
        format!("{{{}:{limiter}:{key}}}", self.prefix)
    }

    /// The keys of a subject's block and of one rule's state (its log, for
    /// a sliding log).
    fn check_keys(&self, limiter: &str, key: &str, name: &str, limit: &Limit) -> Vec<String> {
        let subject = self.subject_key(limiter, key);
        let state = match limit.algorithm() {
            Algorithm::SlidingLog => log_key(&subject, name),
            _ => state_key(&subject, name, limit),
        };
        vec![block_key(&subject), state]
    }

    /// The key of a limiter's registry of blocked keys.
    pub(crate) fn registry_key(&self, limiter: &str) -> String {
        format!("{{{}:{limiter}}}:blocked", self.prefix)
    }

    /// Lists `key` in the registry as blocked for `blocked_for` (extending
    /// a longer listed block, or with `replace` setting it), or takes it out
    /// with `None`.
    pub(crate) async fn note_block(
        &self,
        limiter: &str,
        key: &str,
        blocked_for: Option<std::time::Duration>,
        replace: bool,
    ) -> Result<()> {
        // A century is longer than any block anyone means, and keeps the
        // end's score an exact integer in Lua.
        const LONGEST_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
        let args: Vec<Value> = match blocked_for {
            Some(duration) => vec![
                Value::from(if replace { "set" } else { "add" }),
                Value::from(key),
                integer(
                    u64::try_from(duration.as_millis())
                        .unwrap_or(u64::MAX)
                        .clamp(1, LONGEST_MS),
                ),
                integer(MAX_REGISTERED),
            ],
            None => vec![Value::from("remove"), Value::from(key)],
        };
        let _: Value = self
            .call(
                limiter,
                ("blocked", &self.blocked_script),
                vec![self.registry_key(limiter)],
                args,
            )
            .await?;
        Ok(())
    }

    /// The keys blocked now, the block that ends last first, at most `limit`.
    pub(crate) async fn blocked(
        &self,
        limiter: &str,
        limit: usize,
    ) -> Result<Vec<crate::telemetry::BlockedKey>> {
        let args = vec![
            Value::from("list"),
            Value::from(""),
            integer(u64::try_from(limit).unwrap_or(u64::MAX)),
        ];
        let reply: Vec<String> = self
            .call(
                limiter,
                ("blocked", &self.blocked_script),
                vec![self.registry_key(limiter)],
                args,
            )
            .await?;
        let number = |text: &str| {
            text.parse::<f64>()
                .map_err(|_| Error::Protocol(format!("{text:?} is not a time")))
        };
        let (now, pairs) = reply
            .split_first()
            .ok_or_else(|| Error::Protocol(String::from("no server time")))?;
        let now = number(now)?;
        pairs
            .chunks_exact(2)
            .map(|pair| {
                let remaining_ms = (number(&pair[1])? - now).max(0.0);
                Ok(crate::telemetry::BlockedKey {
                    key: pair[0].clone(),
                    remaining: std::time::Duration::from_secs_f64(remaining_ms / 1000.0),
                })
            })
            .collect()
    }

    pub(crate) async fn apply(
        &self,
        limiter: &str,
        key: &str,
        rules: &Rules,
        op: Op,
    ) -> Result<Outcome> {
        self.apply_at(limiter, key, rules, op, None).await
    }

    /// `apply`, with `now` replacing the server's `TIME` when given: only the
    /// differential tests against the Rust steps give it.
    async fn apply_at(
        &self,
        limiter: &str,
        key: &str,
        rules: &Rules,
        op: Op,
        now: Option<u64>,
    ) -> Result<Outcome> {
        if let (Op::Check { cost, penalty_us }, [(name, limit)]) = (op, rules) {
            return self
                .check_at(limiter, key, name, limit, cost, penalty_us, now)
                .await;
        }
        let subject = self.subject_key(limiter, key);
        let mut keys = Vec::with_capacity(1 + 2 * rules.len());
        keys.push(block_key(&subject));
        for (name, limit) in rules {
            keys.push(state_key(&subject, name, limit));
        }
        for (name, _) in rules {
            keys.push(log_key(&subject, name));
        }
        let (code, cost, extra) = match op {
            Op::Check { cost, penalty_us } => ("c", cost, penalty_us),
            Op::Peek => ("p", 0, 0),
            Op::Reset => ("r", 0, 0),
            Op::Block(duration) => ("b", 0, duration),
            Op::Unblock => ("u", 0, 0),
        };
        let mut args: Vec<Value> = Vec::with_capacity(5 + 3 * rules.len());
        args.push(Value::from(code));
        args.push(integer(cost));
        args.push(integer(extra));
        args.push(integer(rules.len() as u64));
        args.push(now.map_or_else(|| Value::from(""), integer));
        for (_, limit) in rules {
            args.push(integer(u64::from(limit.algorithm().code())));
            args.push(integer(limit.capacity()));
            args.push(integer(limit.step_us()));
        }
        let reply: Vec<i64> = self
            .call(limiter, ("apply", &self.script), keys, args)
            .await?;
        parse(&reply, rules.len())
    }

    /// A check of one rule: the script consumes or not and answers with what
    /// it read; the numbers come from [`check_one`] on that, as in the memory
    /// store.
    #[allow(clippy::too_many_arguments)]
    async fn check_at(
        &self,
        limiter: &str,
        key: &str,
        name: &'static str,
        limit: &Limit,
        cost: u64,
        penalty_us: u64,
        now: Option<u64>,
    ) -> Result<Outcome> {
        let keys = self.check_keys(limiter, key, name, limit);
        let scripts = &*self.check_scripts;
        let step_us = limit.step_us();
        let mut args: Vec<Value> = Vec::with_capacity(6);
        args.push(integer(penalty_us));
        let counts = || [integer(cost), integer(limit.capacity()), integer(step_us)];
        let script = match limit.algorithm() {
            Algorithm::Gcra
            | Algorithm::LeakyQueue
            | Algorithm::TokenBucket
            | Algorithm::LeakyBucket => {
                // The products the step compares, so the script multiplies
                // nothing (the tolerance stays below 2^51 by validation).
                args.push(integer(cost.saturating_mul(step_us)));
                args.push(integer(limit.capacity() * step_us));
                ("check_tat", &scripts.tat)
            }
            Algorithm::FixedWindow => {
                args.extend(counts());
                ("check_fixed_window", &scripts.fixed_window)
            }
            Algorithm::SlidingWindow => {
                args.extend(counts());
                ("check_sliding_window", &scripts.sliding_window)
            }
            Algorithm::SlidingLog => {
                args.extend(counts());
                // The log's time to live in ms, which the script passes on
                // as it is rather than format a number.
                args.push(integer(step_us.div_ceil(1000)));
                ("check_sliding_log", &scripts.sliding_log)
            }
        };
        args.extend(now.map(integer));
        let reply: Value = self.call(limiter, script, keys, args).await?;
        let (now, blocked_until, state) = match reply {
            // Not blocked, one number the step depends on alone, so the step
            // runs at time 0: for a time-based state, how far the arrival
            // time stood ahead of the server's time; for a sliding log that
            // admitted, the units in the window before, standing at time 0.
            Value::Integer(read) => {
                let read = u64::try_from(read)
                    .map_err(|_| Error::Protocol(format!("negative count {read}")))?;
                let state = match limit.algorithm() {
                    Algorithm::SlidingLog => State::Log(Log::summarized(read, 0, 0)),
                    of => State::Tat { at: read, of },
                };
                (0, 0, state)
            }
            reply => {
                let text = reply.as_str().ok_or_else(|| {
                    Error::Protocol(format!("{reply:?} is not the state a check read"))
                })?;
                parse_read(&text, limit)?
            }
        };
        let mut entry = Entry {
            states: smallvec::smallvec![(name, state)],
            blocked_until,
            expires_at: u64::MAX,
        };
        let (step, blocked_for_us) = check_one(&mut entry, name, limit, now, cost, penalty_us);
        Ok(Outcome {
            steps: smallvec::smallvec![step],
            blocked_for_us,
        })
    }
}

/// The key of a subject's block.
fn block_key(subject: &str) -> String {
    format!("{subject}:b")
}

/// The key of a sliding-log rule's sorted set.
fn log_key(subject: &str, name: &str) -> String {
    format!("{subject}:log:{name}")
}

/// The key of one rule's state under a subject's hash tag. It names the
/// algorithm, and the layout of the value where that changed: the buckets
/// keep one time under `4t` and `5t`, where earlier builds kept
/// `level:since` under `4` and `5`. Builds of both layouts running at once
/// (a rolling deploy, a rollback) keep a bucket each and never misread the
/// other's; the old keys expire on their own.
fn state_key(subject: &str, name: &str, limit: &Limit) -> String {
    let algorithm = limit.algorithm();
    match algorithm {
        Algorithm::TokenBucket | Algorithm::LeakyBucket => {
            format!("{subject}:{}t:{name}", algorithm.code())
        }
        _ => format!("{subject}:{}:{name}", algorithm.code()),
    }
}

/// A check script's answer in full: the server's time, the block and the rule's
/// state as the script read them.
fn parse_read(reply: &str, limit: &Limit) -> Result<(u64, u64, State)> {
    let malformed = || Error::Protocol(format!("{reply:?} is not a time, a block and a state"));
    let mut parts = reply.splitn(3, ' ');
    let number = |text: Option<&str>| -> Result<u64> {
        text.and_then(|text| text.parse().ok())
            .ok_or_else(malformed)
    };
    let now = number(parts.next())?;
    let blocked_until = number(parts.next())?;
    let state = parts.next().ok_or_else(malformed)?;
    if state.is_empty() {
        return Ok((now, blocked_until, limit.fresh_state()));
    }
    // A state's numbers are joined by ':'; a sliding log's summary (units,
    // newest, stop) by spaces.
    let separator = match limit.algorithm() {
        Algorithm::SlidingLog => ' ',
        _ => ':',
    };
    let mut numbers = state.split(separator).map(str::parse::<u64>);
    let mut next = || -> Result<u64> {
        numbers
            .next()
            .and_then(std::result::Result::ok)
            .ok_or_else(malformed)
    };
    let state = match limit.algorithm() {
        of @ Algorithm::FixedWindow => State::Window {
            index: next()?,
            current: next()?,
            previous: 0,
            of,
        },
        of @ Algorithm::SlidingWindow => State::Window {
            index: next()?,
            current: next()?,
            previous: next()?,
            of,
        },
        of @ (Algorithm::Gcra
        | Algorithm::LeakyQueue
        | Algorithm::TokenBucket
        | Algorithm::LeakyBucket) => State::Tat { at: next()?, of },
        Algorithm::SlidingLog => State::Log(Log::summarized(next()?, next()?, next()?)),
    };
    Ok((now, blocked_until, state))
}

/// Every value the script takes is below 2^53, so it fits an `i64`.
fn integer(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

fn parse(reply: &[i64], rules: usize) -> Result<Outcome> {
    if reply.len() != 1 + 5 * rules {
        return Err(Error::Protocol(format!(
            "{} values for {rules} rules",
            reply.len()
        )));
    }
    let non_negative = |value: i64| {
        u64::try_from(value).map_err(|_| Error::Protocol(format!("negative value {value}")))
    };
    let steps = reply[1..]
        .chunks_exact(5)
        .map(|values| {
            let reset_after = non_negative(values[2])?;
            Ok(Step {
                allowed: values[0] == 1,
                remaining: non_negative(values[1])?,
                reset_after,
                retry_after: non_negative(values[3])?,
                wait: non_negative(values[4])?,
                ttl: reset_after,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Outcome {
        steps,
        blocked_for_us: non_negative(reply[0])?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fred::prelude::{ClientLike, Config};
    use proptest::prelude::*;

    use super::*;
    use crate::name::intern;
    use crate::store::decide;

    /// The scripts cap a sliding window's state at the crate's longest
    /// duration, written out as a number: the same number.
    #[test]
    fn the_scripts_keep_no_state_longer_than_the_longest_duration() {
        let longest = crate::MAX_DURATION.as_micros();
        assert_eq!(u128::from(crate::algorithm::LONGEST_US), longest);
        let written = format!("math.min(window_end + window, {longest})");
        assert!(SCRIPT.contains(&written), "redis.lua: {written}");
        let written = format!("math.min(window_end + unit, {longest})");
        assert!(
            SLIDING_WINDOW_SCRIPT.contains(&written),
            "sliding.lua: {written}"
        );
    }

    /// One operation of a generated sequence.
    #[derive(Debug, Clone)]
    enum Action {
        Check(u64, u64),
        Peek,
        Reset,
        Block(u64),
        Unblock,
    }

    fn action() -> impl Strategy<Value = (u64, Action)> {
        let gap = prop_oneof![3 => Just(0_u64), 3 => 0..3_000_u64, 3 => 0..400_000_u64, 1 => 0..5_000_000_u64];
        let op = prop_oneof![
            12 => (1..4_u64, prop_oneof![4 => Just(0_u64), 1 => 1..2_000_000_u64])
                .prop_map(|(cost, penalty)| Action::Check(cost, penalty)),
            2 => Just(Action::Peek),
            1 => Just(Action::Reset),
            1 => (1..1_000_000_u64).prop_map(Action::Block),
            1 => Just(Action::Unblock),
        ];
        (gap, op)
    }

    fn limit(algorithm: Algorithm, capacity: u64, period_ms: u64) -> Limit {
        let period = Duration::from_millis(period_ms);
        let rate = capacity.div_ceil(2);
        match algorithm {
            Algorithm::FixedWindow => Limit::fixed_window(capacity, period),
            Algorithm::SlidingLog => Limit::sliding_log(capacity, period),
            Algorithm::SlidingWindow => Limit::sliding_window(capacity, period),
            Algorithm::TokenBucket => Limit::token_bucket(rate, period, capacity),
            Algorithm::LeakyBucket => Limit::leaky_bucket(rate, period, capacity),
            Algorithm::LeakyQueue => Limit::leaky_queue(rate, period, capacity),
            Algorithm::Gcra => Limit::gcra(rate, period, capacity),
        }
        .expect("a valid limit")
    }

    fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop::sample::select(Algorithm::ALL.to_vec())
    }

    struct Server {
        _redis: seawall_testkit::RedisServer,
        store: RedisStore,
        runtime: tokio::runtime::Runtime,
    }

    fn server() -> &'static Server {
        static SERVER: std::sync::OnceLock<Server> = std::sync::OnceLock::new();
        SERVER.get_or_init(|| {
            let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = runtime.block_on(async {
                let client = fred::prelude::Builder::from_config(
                    Config::from_url(&redis.url()).expect("url"),
                )
                .build()
                .expect("client");
                client.init().await.expect("connect");
                client
            });
            // A loaded machine can take longer than the default timeout to
            // answer; here a late answer is still the answer.
            let store = RedisStore::new(client)
                .with_timeout(Duration::from_secs(10))
                .expect("a valid timeout");
            Server {
                _redis: redis,
                store,
                runtime,
            }
        })
    }

    /// Removes the expiry of every key of `subject`'s states and blocks.
    async fn persist(store: &RedisStore, subject: &str) {
        let keys: Vec<String> = store
            .client
            .custom(fred::cmd!("KEYS"), vec![format!("*{subject}*")])
            .await
            .expect("KEYS");
        for key in keys {
            let _: i64 = store
                .client
                .custom(fred::cmd!("PERSIST"), vec![key])
                .await
                .expect("PERSIST");
        }
    }

    /// How many keys Redis has expired so far (`INFO stats`).
    async fn expired_keys(store: &RedisStore) -> u64 {
        let info: String = store
            .client
            .custom(fred::cmd!("INFO"), vec!["stats"])
            .await
            .expect("INFO");
        info.lines()
            .find_map(|line| line.strip_prefix("expired_keys:"))
            .and_then(|count| count.trim().parse().ok())
            .expect("INFO stats counts expired_keys")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        /// The script and the Rust steps give the same answer to every
        /// operation of any sequence, for every algorithm, alone and in a
        /// quota of two rules.
        #[test]
        fn the_script_mirrors_the_rust_steps(
            first in algorithm(), second in algorithm(), two_rules in any::<bool>(),
            capacity in 1..9_u64, period_ms in 1..2_000_u64, second_period_ms in 1..2_000_u64,
            actions in prop::collection::vec(action(), 1..40),
        ) {
            static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut rules = vec![(intern("a"), limit(first, capacity, period_ms))];
            if two_rules {
                rules.push((intern("b"), limit(second, capacity + 2, second_period_ms)));
            }
            let server = server();
            let key = format!("case-{case}");
            let mut entry = Entry::default();
            let mut now = 1_700_000_000_000_000_u64 + case * 100_000_000_000;
            for (step, (gap, action)) in actions.into_iter().enumerate() {
                now += gap;
                let op = match action {
                    Action::Check(cost, penalty_us) => Op::Check {
                        cost: cost.min(capacity),
                        penalty_us,
                    },
                    Action::Peek => Op::Peek,
                    Action::Reset => Op::Reset,
                    Action::Block(duration) => Op::Block(duration),
                    Action::Unblock => Op::Unblock,
                };
                let expected = decide(&mut entry, &rules, now, op);
                let expired_before = server.runtime.block_on(expired_keys(&server.store));
                let actual = server
                    .runtime
                    .block_on(server.store.apply_at("diff", &key, &rules, op, Some(now)))
                    .expect("the script runs");
                // The script is handed this simulated time, but Redis expires
                // keys by its own clock: a slow step (a busy machine) would
                // let a key expire before its state is fresh in simulated
                // time. The keys are kept, so the script's own reading of a
                // state past its freshness is what is compared.
                server.runtime.block_on(persist(&server.store, &key));
                // Every key is kept between steps, so a key Redis expired
                // meanwhile is one the script wrote that ran out, by the
                // server's clock, before it could be kept: the machine was
                // slower than the shortest expiry written (1 ms). What this
                // case compares next would be the machine's speed, not the
                // script: it is set aside.
                let expired_after = server.runtime.block_on(expired_keys(&server.store));
                prop_assume!(
                    expired_after == expired_before,
                    "a key expired by the server's clock before it was kept"
                );
                // Rust drops a state once it is fresh again; Redis may keep it
                // a little longer (expiry in whole ms), which changes nothing.
                let strip = |outcome: &Outcome| {
                    outcome.steps.iter().map(|s| (s.allowed, s.remaining, s.reset_after, s.retry_after, s.wait)).collect::<Vec<_>>()
                };
                prop_assert_eq!(
                    (actual.blocked_for_us, strip(&actual)),
                    (expected.blocked_for_us, strip(&expected)),
                    "step {} ({:?}) of {:?}", step, op, rules
                );
            }
        }
    }

    /// A clock that steps back to a time whose members were numbered when
    /// the window held more: the next member's name is taken, and it is
    /// passed over rather than overwritten, by either script.
    #[test]
    fn a_clock_that_steps_back_loses_no_admitted_unit() {
        use fred::prelude::SortedSetsInterface;

        let server = server();
        let second = 1_000_000_u64;
        let limit = Limit::sliding_log(5, Duration::from_secs(10)).expect("a valid limit");
        let one = vec![(intern("a"), limit)];
        let two = vec![
            (intern("a"), limit),
            (
                intern("b"),
                Limit::fixed_window(100, Duration::from_secs(60)).expect("a valid limit"),
            ),
        ];
        for (case, rules) in [one, two].iter().enumerate() {
            let key = format!("stepped-back-{case}");
            let start = 1_800_000_000 * second;
            let check = |at: u64, cost: u64| {
                let op = Op::Check {
                    cost,
                    penalty_us: 0,
                };
                server
                    .runtime
                    .block_on(
                        server
                            .store
                            .apply_at("back", &key, rules, op, Some(start + at)),
                    )
                    .expect("the script runs")
            };
            assert!(check(95 * second, 1).steps[0].allowed);
            // "100 s:2", after the one at 95 s.
            assert!(check(100 * second, 1).steps[0].allowed);
            // At 106 s the unit of 95 s leaves; nothing is admitted.
            assert!(!check(106 * second, 5).steps[0].allowed);
            // Back at 100 s the window holds one unit, so the count names
            // the next one "100 s:2" again.
            let again = check(100 * second, 1);
            assert!(again.steps[0].allowed, "{again:?}");
            assert_eq!(again.steps[0].remaining, 3, "{again:?}");
            let log = format!("{{{}:back:{key}}}:log:a", server.store.prefix());
            let members: i64 = server
                .runtime
                .block_on(server.store.client.zcard(&log))
                .expect("ZCARD");
            assert_eq!(members, 2, "two units stand at 100 s");
        }
    }
}
