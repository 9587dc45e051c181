//! The Redis store: one `EVALSHA` per operation of one script
//! (`redis.lua`) that holds every algorithm. The script reads the server's
//! `TIME`, so instances whose clocks disagree still agree on every decision;
//! every key it writes expires once its state equals a fresh one; and all
//! keys of one limiter and subject share a hash tag, so the store works
//! unchanged on Redis Cluster.

use std::sync::Arc;

use fred::prelude::Client;
use fred::types::Value;
use fred::types::scripts::Script;

use crate::algorithm::Step;
use crate::error::{Error, Result};
use crate::store::{Op, Outcome, Rules};

/// The script, embedded.
const SCRIPT: &str = include_str!("redis.lua");
/// The registry of blocked keys.
const BLOCKED_SCRIPT: &str = include_str!("blocked.lua");
/// How many blocks a limiter's registry keeps: those that end last.
const MAX_REGISTERED: u64 = 10_000;

/// The default prefix of every key.
pub const DEFAULT_PREFIX: &str = "seawall:rl";

/// State kept in Redis (standalone, Sentinel or Cluster), shared by every
/// instance that uses the same prefix. Cheap to clone.
///
/// Keys: `{<prefix>:<limiter>:<key>}` (a hash with the state of every rule
/// and the key's block) and, for a sliding log,
/// `{<prefix>:<limiter>:<key>}:log:<rule>` (a sorted set with at most the
/// limit's number of members); per limiter, `{<prefix>:<limiter>}:blocked`
/// (a sorted set of the keys blocked now, by when their block ends, expiring
/// with the last one).
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: Arc<str>,
    script: Arc<Script>,
    blocked_script: Arc<Script>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
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
            blocked_script: Arc::new(Script::from_lua(BLOCKED_SCRIPT)),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of a subject's hash.
    pub(crate) fn subject_key(&self, limiter: &str, key: &str) -> String {
        format!("{{{}:{limiter}:{key}}}", self.prefix)
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
            .blocked_script
            .evalsha_with_reload(&self.client, vec![self.registry_key(limiter)], args)
            .await
            .map_err(Error::Redis)?;
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
            .blocked_script
            .evalsha_with_reload(&self.client, vec![self.registry_key(limiter)], args)
            .await
            .map_err(Error::Redis)?;
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
        let hash = self.subject_key(limiter, key);
        let mut keys = Vec::with_capacity(1 + rules.len());
        keys.push(hash.clone());
        for (name, _) in rules {
            keys.push(format!("{hash}:log:{name}"));
        }
        let (code, cost, extra) = match op {
            Op::Check { cost, penalty_us } => ("c", cost, penalty_us),
            Op::Peek => ("p", 0, 0),
            Op::Reset => ("r", 0, 0),
            Op::Block(duration) => ("b", 0, duration),
            Op::Unblock => ("u", 0, 0),
        };
        let mut args: Vec<Value> = Vec::with_capacity(5 + 4 * rules.len());
        args.push(Value::from(code));
        args.push(integer(cost));
        args.push(integer(extra));
        args.push(integer(rules.len() as u64));
        args.push(now.map_or_else(|| Value::from(""), integer));
        for (name, limit) in rules {
            args.push(Value::from(*name));
            args.push(integer(u64::from(limit.algorithm().code())));
            args.push(integer(limit.capacity()));
            args.push(integer(limit.step_us()));
        }
        let reply: Vec<i64> = self
            .script
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(Error::Redis)?;
        parse(&reply, rules.len())
    }
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
    use crate::algorithm::{Algorithm, Limit};
    use crate::name::intern;
    use crate::store::{Entry, decide};

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
            Server {
                _redis: redis,
                store: RedisStore::new(client),
                runtime,
            }
        })
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
                let actual = server
                    .runtime
                    .block_on(server.store.apply_at("diff", &key, &rules, op, Some(now)))
                    .expect("the script runs");
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
}
