//! The Redis tier (L2): values as strings with the envelope of
//! [`codec`](crate::codec), tag sets, tombstones, the invalidation stream,
//! and the circuit breaker every call goes through.
//!
//! Keys, under the cache's prefix `<p>`: `<p>:k:<key>` values, tombstones
//! and leases (what an absent key holds while a load runs), `<p>:t:<tag>`
//! a tag's set of value keys, `<p>:inv` the invalidation stream,
//! `<p>:h:{h:<class>}` a class's learned hot keys (a sorted set of decayed
//! read counts), `<p>:h:{h:<class>}:at` when they last decayed, and
//! `<p>:h:{h:<class>}:recent` and `<p>:h:{h:<class>}:gen` their recent
//! reads, which keep the candidates among them (see [`HOT`]). No command
//! spans two keys except within one hash slot, so the tier runs unchanged
//! on Redis Cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fred::cmd;
use fred::interfaces::{ClusterInterface, EventInterface as _};
use fred::prelude::{Client, ClientLike};
use fred::types::Value;
use fred::types::scripts::Script;
use futures_util::future::join_all;
use tracing::Instrument as _;

use crate::breaker::Breaker;
use crate::error::{Error, Result, no_answer, unexpected_reply};
use crate::stats::{CacheCounters, bump};
use crate::trace::{self, Command};

/// Writes a loaded value only if the key still holds what the load saw
/// before its loader ran: its own lease or a tombstone (ARGV[3], compared
/// whole), or a value past its freshness (ARGV[4], the SHA-1 of its bytes).
/// A `set` or an invalidation of any kind in between replaced it, and the
/// load's value, read before them, must not be written over theirs.
const FILL: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
if current == ARGV[3] or (ARGV[4] ~= '' and redis.sha1hex(current) == ARGV[4]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Removes a key if it still holds what a load saw when it began (the
/// marker ARGV[1], or a value whose SHA-1 is ARGV[2]): the source answered
/// "not found" and the class caches no such answer, so the old value must
/// not outlive it as a fail-safe copy.
const FORGET: &str = r"
local current = redis.call('GET', KEYS[1])
if current and (current == ARGV[1] or (ARGV[2] ~= '' and redis.sha1hex(current) == ARGV[2])) then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Replaces a key with a tombstone (ARGV[1]) that lives no longer than
/// what it replaces (a value, a lease, an earlier tombstone) had left, and
/// at most ARGV[2] ms; an absent key is left absent: no load holds it, and
/// one that held it and lost it is refused its fill all the same (a fill
/// needs the key to hold what its load saw). Returns 1 when it wrote one.
const TOMBSTONE: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left == -2 then
  return 0
end
local ttl = tonumber(ARGV[2])
if left > 0 and left < ttl then
  ttl = left
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', string.format('%d', ttl))
return 1
";

/// Reads a key for a load: an absent key takes the load's lease (ARGV[1],
/// for ARGV[2] ms), so that whatever replaces it before the load is done
/// (a `set`, an invalidation) refuses the load's fill. Returns what the key
/// holds then, the new lease included.
const LEASE: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Takes a tag's set of value keys and removes it in one step, so that no
/// key joins it between the read and the removal unseen.
const TAKE_TAG: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
";

/// Adds a value key to a tag's set and makes the set live at least as
/// long as the value.
const TAG: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// Adds reads to a class's hot keys (KEYS[1], a sorted set), first
/// decaying every count by the time since the last decay (KEYS[2], Redis's
/// own clock in ms) at a half-life of ARGV[1] ms. The set holds up to
/// twice ARGV[2] members: the ARGV[2] hottest, which are reported, and
/// candidates kept by their recent reads (KEYS[3], a sorted set of the
/// ARGV[2] members with the most), as the in-process ranking keeps them
/// (see the `hot` module's docs). Every addition halves the recent reads,
/// then raises each member added to its reads in this addition if that
/// is more: rather than rewrite the set, it writes them scaled by 2^gen,
/// gen (KEYS[4]) growing by one per addition, and rescales the set once
/// every 256 additions. Past twice ARGV[2] members, those neither among
/// the ARGV[2] hottest nor candidates leave. Every key lives ARGV[3] ms
/// past the last addition. ARGV[4..] are pairs of member and reads. Any
/// instance may add: the decay goes by the time between additions, not by
/// how many instances add, while recent reads halve at each instance's
/// addition.
const HOT: &str = r"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local at = tonumber(redis.call('GET', KEYS[2]) or now)
if now - at >= 1000 then
  local factor = math.pow(0.5, (now - at) / tonumber(ARGV[1]))
  redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[1], 'WEIGHTS', tostring(factor))
  at = now
end
local gen = tonumber(redis.call('GET', KEYS[4]) or '0') + 1
if gen > 256 then
  redis.call('ZUNIONSTORE', KEYS[3], 1, KEYS[3], 'WEIGHTS', tostring(math.pow(0.5, 256)))
  gen = 1
end
local scale = math.pow(2, gen)
for i = 4, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('ZADD', KEYS[3], 'GT', tostring(tonumber(ARGV[i + 1]) * scale), ARGV[i])
end
local keep = tonumber(ARGV[2])
local size = redis.call('ZCARD', KEYS[3])
if size > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, size - keep - 1)
end
size = redis.call('ZCARD', KEYS[1])
if size > 2 * keep then
  local gone = {}
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, size - keep - 1)) do
    if not redis.call('ZSCORE', KEYS[3], member) then
      gone[#gone + 1] = member
      if #gone == 1000 then
        redis.call('ZREM', KEYS[1], unpack(gone))
        gone = {}
      end
    end
  end
  if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
  end
end
redis.call('SET', KEYS[2], at, 'PX', ARGV[3])
redis.call('SET', KEYS[4], gen, 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return size
";

/// How long a class's hot keys outlive the last instance that added to
/// them: long enough for a service stopped over a weekend.
const HOT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many keys one `SCAN` asks for, and one `UNLINK` removes.
const SCAN_BATCH: usize = 500;

pub(crate) struct RedisTier {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    probe_interval: Duration,
    breaker: Arc<Breaker>,
    counters: Arc<CacheCounters>,
    fill: Script,
    lease: Script,
    drop_lease: Script,
    forget: Script,
    tombstone: Script,
    tag: Script,
    take_tag: Script,
    hot: Script,
}

/// What a load requires of a key for its value to be written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The lease or tombstone the key held when the load began.
    Marker(Vec<u8>),
    /// A value past its freshness (or of another format), by its SHA-1.
    Value(String),
}

impl Seen {
    /// The marker and the digest a script compares the key with, one of
    /// them empty.
    fn as_args(&self) -> (Value, Value) {
        let (marker, digest) = match self {
            Self::Marker(marker) => (marker.clone(), String::new()),
            Self::Value(digest) => (Vec::new(), digest.clone()),
        };
        (Value::Bytes(marker.into()), Value::from(digest))
    }
}

/// What an opened breaker needs to say so and to close again.
struct Probe {
    client: Client,
    prefix: String,
    breaker: Arc<Breaker>,
    counters: Arc<CacheCounters>,
    interval: Duration,
    timeout: Duration,
}

impl Probe {
    /// The breaker was just opened (`why`): counted, said once, and probed
    /// every interval until every server answers, then closed. Outside a
    /// runtime, with nothing to probe, it is closed at once.
    fn opened(self, why: &str) {
        bump(&self.counters.breaker_opened);
        tracing::warn!(prefix = %self.prefix, "{why}: the cache serves L1 and loaders until it answers");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.breaker.close();
            return;
        };
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(self.interval).await;
                if answers_everywhere(&self.client, self.timeout).await {
                    self.breaker.close();
                    tracing::info!("redis answers again: the cache uses it");
                    return;
                }
            }
        });
    }
}

impl RedisTier {
    pub(crate) fn new(
        client: Client,
        prefix: String,
        timeout: Duration,
        probe_interval: Duration,
        failures_to_open: u32,
        counters: Arc<CacheCounters>,
    ) -> Self {
        Self {
            client,
            prefix,
            timeout,
            probe_interval,
            breaker: Arc::new(Breaker::new(failures_to_open)),
            counters,
            fill: Script::from_lua(FILL),
            lease: Script::from_lua(LEASE),
            drop_lease: Script::from_lua(crate::lock::COMPARE_AND_DELETE),
            forget: Script::from_lua(FORGET),
            tombstone: Script::from_lua(TOMBSTONE),
            tag: Script::from_lua(TAG),
            take_tag: Script::from_lua(TAKE_TAG),
            hot: Script::from_lua(HOT),
        }
    }

    pub(crate) fn value_key(&self, key: &str) -> String {
        format!("{}:k:{key}", self.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:t:{tag}", self.prefix)
    }

    /// The sorted set of a class's hot keys, and the key of its last
    /// decay, in one hash slot (with the keys of its recent reads, their
    /// name followed by `:recent` and `:gen`).
    fn hot_keys_of(&self, class: &str) -> (String, String) {
        // The tag is never empty, whatever the class's name.
        let set = format!("{}:h:{{h:{class}}}", self.prefix);
        let at = format!("{set}:at");
        (set, at)
    }

    /// Adds `counts` (key, reads) to the class's hot keys, decayed at
    /// `half_life`, keeping the `keep` hottest and up to `keep` candidates
    /// (see [`HOT`]).
    pub(crate) async fn learn_hot(
        &self,
        class: &str,
        counts: &[seawall_perfmon::KeyCount],
        half_life: Duration,
        keep: usize,
    ) -> Result<()> {
        let (set, at) = self.hot_keys_of(class);
        let (recent, generation) = (format!("{set}:recent"), format!("{set}:gen"));
        let keys = vec![set, at, recent, generation];
        let mut args: Vec<Value> = Vec::with_capacity(3 + 2 * counts.len());
        args.push(Value::from(
            crate::lock::millis(half_life).max(1).to_string(),
        ));
        args.push(Value::from(keep.to_string()));
        args.push(Value::from(crate::lock::millis(HOT_KEEP).to_string()));
        for count in counts {
            args.push(Value::from(count.key.as_str()));
            args.push(Value::from(count.count.to_string()));
        }
        self.call(
            Command::Script("hot"),
            self.hot
                .evalsha_with_reload::<i64, _, _>(&self.client, keys, args),
        )
        .await
        .map(drop)
    }

    /// The class's `n` hottest keys with their decayed reads (as of their
    /// last decay), the hottest first.
    pub(crate) async fn hot_keys(&self, class: &str, n: usize) -> Result<Vec<(String, f64)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (set, _) = self.hot_keys_of(class);
        let reply: Value = self
            .call(
                Command::Plain("ZRANGE"),
                self.client.custom(
                    cmd!("ZRANGE"),
                    vec![
                        Value::from(set),
                        Value::from("0"),
                        Value::from((n - 1).to_string()),
                        Value::from("REV"),
                        Value::from("WITHSCORES"),
                    ],
                ),
            )
            .await?;
        let Value::Array(items) = reply else {
            return Err(unexpected_reply("ZRANGE did not answer with an array"));
        };
        // RESP2 answers member, score, member, ...; RESP3 pairs them.
        let items: Vec<Value> = items
            .into_iter()
            .flat_map(|item| match item {
                Value::Array(pair) => pair,
                other => vec![other],
            })
            .collect();
        let mut ranked = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(member), Some(score)) = (items.next(), items.next()) {
            let score = match score {
                Value::Double(score) => Some(score),
                other => other.as_string().and_then(|text| text.parse().ok()),
            };
            if let (Some(member), Some(score)) = (member.into_string(), score) {
                ranked.push((member, score));
            }
        }
        Ok(ranked)
    }

    pub(crate) fn stream_key(&self) -> String {
        format!("{}:inv", self.prefix)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Tells a subscriber that the open breaker kept a call from Redis.
    pub(crate) fn refused(&self) {
        trace::breaker_refused(&self.prefix);
    }

    /// Runs one Redis call through the breaker and the timeout, in a
    /// `cache.redis` span named after `command`.
    async fn call<T>(
        &self,
        command: Command,
        call: impl Future<Output = std::result::Result<T, fred::error::Error>>,
    ) -> Result<T> {
        if self.breaker.is_open() {
            self.refused();
            return Err(Error::Unavailable("the circuit breaker is open"));
        }
        let span = trace::redis_span(&self.prefix, command);
        let answer = tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await;
        let (error_type, error) = match answer {
            Ok(Ok(value)) => {
                self.breaker.success();
                return Ok(value);
            }
            Ok(Err(error)) => (error.kind().to_str(), error),
            Err(_) => ("timeout", no_answer(self.timeout)),
        };
        trace::redis_failed(&span, error_type, &error.to_string());
        self.failed();
        Err(Error::Redis(error))
    }

    /// Counts a failure; the failure that opens the breaker starts the probe
    /// that will close it.
    fn failed(&self) {
        bump(&self.counters.redis_errors);
        if self.breaker.failure() {
            self.probe().opened("redis failed repeatedly");
        }
    }

    /// What opens the breaker and probes until it can close it.
    fn probe(&self) -> Probe {
        Probe {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            breaker: Arc::clone(&self.breaker),
            counters: Arc::clone(&self.counters),
            interval: self.probe_interval,
            timeout: self.timeout,
        }
    }

    /// Opens the breaker as soon as the client's own connection to a server
    /// is lost (its error events: the connection closed, refused or timed
    /// out), rather than once calls have failed often enough: each of those
    /// calls waited out the timeout first, so the first loads after Redis
    /// died each took 250 ms, and every reader of their keys with them (a
    /// burst of such answers a few seconds into an outage). The probe
    /// closes it again once every server answers. Runs on the current
    /// runtime, until the tier is dropped; outside one, failures alone open
    /// it.
    pub(crate) fn watch_connections(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut errors = self.client.error_rx();
        let breaker = Arc::downgrade(&self.breaker);
        let (client, prefix, counters) = (
            self.client.clone(),
            self.prefix.clone(),
            Arc::clone(&self.counters),
        );
        let (interval, timeout) = (self.probe_interval, self.timeout);
        runtime.spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let error = match errors.recv().await {
                    Ok((error, _server)) => error,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let Some(breaker) = breaker.upgrade() else {
                    return;
                };
                let lost = matches!(
                    error.kind(),
                    fred::error::ErrorKind::IO | fred::error::ErrorKind::Timeout
                );
                if !lost {
                    continue;
                }
                bump(&counters.redis_errors);
                if breaker.trip() {
                    Probe {
                        client: client.clone(),
                        prefix: prefix.clone(),
                        breaker,
                        counters: Arc::clone(&counters),
                        interval,
                        timeout,
                    }
                    .opened("the connection to redis was lost");
                }
            }
        });
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let value: Value = self
            .call(
                Command::Plain("GET"),
                self.client.custom(cmd!("GET"), vec![self.value_key(key)]),
            )
            .await?;
        Ok(bytes_of(value))
    }

    pub(crate) async fn mget(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut found = vec![None; keys.len()];
        let groups = by_slot(&self.client, keys.iter().map(|key| self.value_key(key)));
        let calls = groups.into_values().map(|(indices, keys)| async move {
            let values: Value = self
                .call(
                    Command::Plain("MGET"),
                    self.client.custom(cmd!("MGET"), keys),
                )
                .await?;
            Ok::<_, Error>((indices, values))
        });
        for reply in join_all(calls).await {
            let (indices, values) = reply?;
            let Value::Array(values) = values else {
                return Err(unexpected_reply("MGET did not answer with an array"));
            };
            for (index, value) in indices.into_iter().zip(values) {
                found[index] = bytes_of(value);
            }
        }
        Ok(found)
    }

    /// What `key` holds for a load that begins: an absent key takes
    /// `lease` for `ttl`, and the lease is returned.
    pub(crate) async fn lease(
        &self,
        key: &str,
        lease: &[u8],
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>> {
        let args: Vec<Value> = vec![
            Value::Bytes(lease.to_vec().into()),
            Value::from(crate::lock::millis(ttl).to_string()),
        ];
        let current: Value = self
            .call(
                Command::Script("lease"),
                self.lease
                    .evalsha_with_reload(&self.client, vec![self.value_key(key)], args),
            )
            .await?;
        Ok(bytes_of(current))
    }

    /// Removes `lease` from `key` if the key still holds it.
    pub(crate) async fn drop_lease(&self, key: &str, lease: &[u8]) -> Result<()> {
        let args: Vec<Value> = vec![Value::Bytes(lease.to_vec().into())];
        self.call(
            Command::Script("drop_lease"),
            self.drop_lease.evalsha_with_reload::<i64, _, _>(
                &self.client,
                vec![self.value_key(key)],
                args,
            ),
        )
        .await
        .map(drop)
    }

    /// Removes `key` if it still holds what the load saw.
    pub(crate) async fn forget(&self, key: &str, seen: &Seen) -> Result<()> {
        let (marker, digest) = seen.as_args();
        let args: Vec<Value> = vec![marker, digest];
        self.call(
            Command::Script("forget"),
            self.forget.evalsha_with_reload::<i64, _, _>(
                &self.client,
                vec![self.value_key(key)],
                args,
            ),
        )
        .await
        .map(drop)
    }

    /// Writes a loaded value if the key still holds what the load saw;
    /// false when refused.
    pub(crate) async fn fill(
        &self,
        key: &str,
        bytes: Vec<u8>,
        ttl: Duration,
        seen: &Seen,
    ) -> Result<bool> {
        let (marker, digest) = seen.as_args();
        let args: Vec<Value> = vec![
            Value::Bytes(bytes.into()),
            Value::from(crate::lock::millis(ttl).to_string()),
            marker,
            digest,
        ];
        let written: i64 = self
            .call(
                Command::Script("fill"),
                self.fill
                    .evalsha_with_reload(&self.client, vec![self.value_key(key)], args),
            )
            .await?;
        Ok(written == 1)
    }

    /// Writes values unconditionally (a write-through, a `set`).
    pub(crate) async fn set_many(&self, entries: Vec<(String, Vec<u8>, Duration)>) -> Result<()> {
        let calls = entries.into_iter().map(|(key, bytes, ttl)| {
            let args: Vec<Value> = vec![
                Value::from(self.value_key(&key)),
                Value::Bytes(bytes.into()),
                Value::from("PX"),
                Value::from(crate::lock::millis(ttl).to_string()),
            ];
            self.call(
                Command::Plain("SET"),
                self.client.custom::<Value, Value>(cmd!("SET"), args),
            )
        });
        join_all(calls)
            .await
            .into_iter()
            .try_for_each(|reply| reply.map(drop))
    }

    /// Records `key` under each tag, for at least `ttl`.
    pub(crate) async fn tag(&self, key: &str, tags: &[String], ttl: Duration) -> Result<()> {
        let member = self.value_key(key);
        let ttl = crate::lock::millis(ttl).to_string();
        let calls = tags.iter().map(|tag| {
            self.call(
                Command::Script("tag"),
                self.tag.evalsha_with_reload::<i64, _, _>(
                    &self.client,
                    vec![self.tag_key(tag)],
                    vec![member.clone(), ttl.clone()],
                ),
            )
        });
        join_all(calls)
            .await
            .into_iter()
            .try_for_each(|reply| reply.map(drop))
    }

    /// Replaces each key that exists with a tombstone that lives as long
    /// as what it replaces had left, and at most `ttl`.
    pub(crate) async fn tombstone(&self, value_keys: Vec<String>, ttl: Duration) -> Result<()> {
        let ttl = crate::lock::millis(ttl).to_string();
        let calls = value_keys.into_iter().map(|key| {
            let args: Vec<Value> = vec![
                Value::Bytes(crate::codec::tombstone().into()),
                Value::from(ttl.clone()),
            ];
            self.call(
                Command::Script("tombstone"),
                self.tombstone
                    .evalsha_with_reload::<i64, _, _>(&self.client, vec![key], args),
            )
        });
        join_all(calls)
            .await
            .into_iter()
            .try_for_each(|reply| reply.map(drop))
    }

    /// The value keys recorded under `tag`; the tag's set is removed in
    /// the same step.
    pub(crate) async fn take_tag(&self, tag: &str) -> Result<Vec<String>> {
        let members: Value = self
            .call(
                Command::Script("take_tag"),
                self.take_tag.evalsha_with_reload(
                    &self.client,
                    vec![self.tag_key(tag)],
                    Vec::<Value>::new(),
                ),
            )
            .await?;
        Ok(match members {
            Value::Array(members) => members
                .into_iter()
                .filter_map(|member| member.into_string())
                .collect(),
            _ => Vec::new(),
        })
    }

    /// Replaces every key matching `pattern` (a glob over the cache's
    /// keys) with a tombstone that lives for `ttl`, found with `SCAN` in
    /// batches on every master; returns how many were replaced. A key
    /// being loaded holds a lease, so the load's fill finds the tombstone
    /// and is refused; a key `SCAN` does not return was absent throughout
    /// and no load held it.
    pub(crate) async fn tombstone_matching(&self, pattern: &str, ttl: Duration) -> Result<u64> {
        let pattern = format!("{}:k:{pattern}", crate::glob::escape(&self.prefix));
        let nodes = self.primaries();
        let mut replaced = 0;
        if nodes.is_empty() {
            replaced += self.tombstone_on(&self.client, &pattern, ttl).await?;
        } else {
            for node in nodes {
                let client = self.client.with_cluster_node(node);
                replaced += self.tombstone_on(&client, &pattern, ttl).await?;
            }
        }
        Ok(replaced)
    }

    async fn tombstone_on(
        &self,
        node: &impl ClientLike,
        pattern: &str,
        ttl: Duration,
    ) -> Result<u64> {
        let mut cursor = "0".to_owned();
        let mut removed = 0;
        loop {
            let args = vec![
                cursor.clone(),
                "MATCH".to_owned(),
                pattern.to_owned(),
                "COUNT".to_owned(),
                SCAN_BATCH.to_string(),
            ];
            let reply: Value = self
                .call(Command::Plain("SCAN"), node.custom(cmd!("SCAN"), args))
                .await?;
            let (next, keys) = scan_page(reply)?;
            if !keys.is_empty() {
                removed += u64::try_from(keys.len()).unwrap_or(u64::MAX);
                self.tombstone(keys, ttl).await?;
            }
            if next == "0" {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Keys in the Redis databases the tier uses, summed over every master.
    pub(crate) async fn keys(&self) -> Result<u64> {
        let nodes = self.primaries();
        let mut keys = 0;
        if nodes.is_empty() {
            keys += self
                .call(
                    Command::Plain("DBSIZE"),
                    self.client.custom::<u64, Value>(cmd!("DBSIZE"), vec![]),
                )
                .await?;
        } else {
            for node in nodes {
                let client = self.client.with_cluster_node(node);
                keys += self
                    .call(
                        Command::Plain("DBSIZE"),
                        client.custom::<u64, Value>(cmd!("DBSIZE"), vec![]),
                    )
                    .await?;
            }
        }
        Ok(keys)
    }

    /// The cluster's masters; none on a standalone server.
    fn primaries(&self) -> Vec<fred::types::config::Server> {
        if self.client.is_clustered() {
            self.client
                .cached_cluster_state()
                .map(|state| state.unique_primary_nodes())
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    }

    /// Appends an invalidation to the stream, trimmed to `max_len`
    /// entries; returns its id.
    pub(crate) async fn announce(
        &self,
        origin: &str,
        kind: &str,
        target: &str,
        max_len: u64,
    ) -> Result<String> {
        let args = vec![
            self.stream_key(),
            "MAXLEN".to_owned(),
            max_len.to_string(),
            "*".to_owned(),
            "o".to_owned(),
            origin.to_owned(),
            kind.to_owned(),
            target.to_owned(),
        ];
        let id: Value = self
            .call(
                Command::Plain("XADD"),
                self.client.custom(cmd!("XADD"), args),
            )
            .await?;
        id.into_string()
            .ok_or_else(|| unexpected_reply("XADD returned no id"))
    }
}

/// Whether every server the cache writes to answers a `PING` within
/// `timeout`: on a Cluster each master, over the client's own link to it,
/// since one node answering says nothing of another (after a partition
/// heals, a link to one node can still be waiting out TCP's retransmission
/// back-off while the others answer).
async fn answers_everywhere(client: &Client, timeout: Duration) -> bool {
    async fn answered(
        ping: impl Future<Output = std::result::Result<Value, fred::error::Error>>,
        timeout: Duration,
    ) -> bool {
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }
    if !client.is_clustered() {
        return answered(client.custom(cmd!("PING"), Vec::<Value>::new()), timeout).await;
    }
    let Some(primaries) = client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .filter(|primaries| !primaries.is_empty())
    else {
        return false;
    };
    let pings = primaries.into_iter().map(|node| {
        let node = client.with_cluster_node(node);
        async move { answered(node.custom(cmd!("PING"), Vec::<Value>::new()), timeout).await }
    });
    join_all(pings).await.into_iter().all(|ok| ok)
}

/// Groups keys by hash slot (one group on a standalone server), keeping
/// each key's position.
fn by_slot(
    client: &Client,
    keys: impl IntoIterator<Item = String>,
) -> BTreeMap<u16, (Vec<usize>, Vec<String>)> {
    let clustered = client.is_clustered();
    let mut groups: BTreeMap<u16, (Vec<usize>, Vec<String>)> = BTreeMap::new();
    for (index, key) in keys.into_iter().enumerate() {
        let slot = if clustered {
            fred::util::redis_keyslot(key.as_bytes())
        } else {
            0
        };
        let group = groups.entry(slot).or_default();
        group.0.push(index);
        group.1.push(key);
    }
    groups
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::Bytes(bytes) => Some(bytes.to_vec()),
        Value::String(text) => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

fn scan_page(reply: Value) -> Result<(String, Vec<String>)> {
    let malformed = || unexpected_reply("SCAN answered in an unexpected shape");
    let Value::Array(mut parts) = reply else {
        return Err(malformed());
    };
    if parts.len() != 2 {
        return Err(malformed());
    }
    let keys = match parts.pop() {
        Some(Value::Array(keys)) => keys.into_iter().filter_map(Value::into_string).collect(),
        _ => return Err(malformed()),
    };
    let cursor = parts
        .pop()
        .and_then(Value::into_string)
        .ok_or_else(malformed)?;
    Ok((cursor, keys))
}
