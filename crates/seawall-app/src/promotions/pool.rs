//! Pools of numbered units: a campaign's coupons and a sale's stock. A pool
//! hands out unit 1, 2, … up to its quantity, at most `per_user` to a user,
//! inside its window, remembering idempotency keys; a unit whose write
//! failed is given back and handed out again first.
//!
//! On Redis the whole decision is one script ([`pool.lua`](pool.lua)) on one
//! node: all keys of a pool share a hash tag. In memory (embedded defaults,
//! one process) the same rules run under a mutex. Either way the database
//! stays the source of truth: a pool whose state is gone (a Redis restart
//! without persistence, a flush) answers [`Take::Unloaded`] and is loaded
//! again from the rows.
//!
//! With `queue.wait_replicas` set, a sale's reservation is not answered
//! until that many replicas hold it (`WAIT` after the script, on a
//! connection of its own), so a failover cannot forget a unit whose order
//! was acknowledged and hand it out again. Coupons need no wait: their rows
//! are written before the answer, and the rows' unique numbers catch a
//! store that went back in time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::prelude::{Client, Options};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

/// The script of every pool operation.
const SCRIPT: &str = include_str!("pool.lua");
/// The Redis key prefix of the pools.
const PREFIX: &str = "seawall:promo";

/// What kind of units a pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PoolKind {
    /// A coupon campaign's coupons.
    Coupons,
    /// A time sale's stock.
    Stock,
}

/// One pool: a campaign's or a sale's, with the row's random salt (so a
/// reused id of another database never meets this pool's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolId {
    pub(crate) kind: PoolKind,
    pub(crate) id: i64,
    pub(crate) salt: i64,
}

impl PoolId {
    /// The pool's five Redis keys, one hash tag.
    pub(crate) fn keys(self) -> Vec<String> {
        let kind = match self.kind {
            PoolKind::Coupons => "coupons",
            PoolKind::Stock => "stock",
        };
        let tag = format!("{PREFIX}:{{{kind}:{}:{:x}}}", self.id, self.salt);
        ["state", "users", "grants", "idem", "free"]
            .iter()
            .map(|part| format!("{tag}:{part}"))
            .collect()
    }
}

/// What a pool is loaded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolSpec {
    pub(crate) quantity: i64,
    pub(crate) per_user: i64,
    pub(crate) starts_at: i64,
    pub(crate) ends_at: i64,
    /// The next unit never handed out: 1, or the database's highest + 1.
    pub(crate) next: i64,
    /// When the pool's keys expire (Unix ms).
    pub(crate) expires_at: i64,
}

/// A unit handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) id: String,
    pub(crate) unit: i64,
    pub(crate) user_id: i64,
    /// The user's first, second, … unit of the pool.
    pub(crate) nth: i64,
    pub(crate) at_ms: i64,
}

/// What asking a pool for a unit came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Take {
    /// A new unit.
    Taken(Grant),
    /// The idempotency key was used before, for this grant (`None` when
    /// the grant was given back since).
    Replay { id: String, grant: Option<Grant> },
    /// Every unit is out.
    Gone,
    /// The user holds `held` units, the most a user may.
    Limit { held: i64 },
    /// The window has not opened.
    Early,
    /// The window has closed.
    Ended,
    /// The pool's state is not in the store: load it and ask again.
    Unloaded,
    /// The unit reached `acked` of the `wanted` replicas in time; it was
    /// given back (a sale's stock with `queue.wait_replicas` set).
    Unreplicated { acked: u32, wanted: u32 },
}

/// Where a pool stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PoolStatus {
    pub(crate) quantity: i64,
    /// Units handed out and not given back.
    pub(crate) taken: i64,
    /// Grants recorded, plus the units the rows held when the pool was
    /// loaded (equal to `taken` when the pool is consistent).
    pub(crate) grants: i64,
    /// Users holding at least one unit.
    pub(crate) holders: i64,
}

/// Where pools live.
#[derive(Clone)]
pub(crate) enum Pools {
    Memory(Arc<Mutex<HashMap<PoolId, MemoryPool>>>),
    Redis {
        client: Client,
        script: Arc<Script>,
        /// Set when sale reservations wait for replicas.
        replicated: Option<Arc<Replicated>>,
    },
}

/// Connections that run a sale's reservation and then `WAIT` on it.
/// `WAIT` counts the writes of its own connection and holds that
/// connection until it answers, so it never runs on the shared client.
pub(crate) struct Replicated {
    /// The shared client, whose settings the connections copy.
    template: Client,
    clients: OnceCell<Vec<Client>>,
    turn: AtomicUsize,
    wanted: u32,
    timeout: Duration,
}

/// Connections kept for reservations that wait for replicas.
const REPLICATED_CONNECTIONS: usize = 4;

impl Replicated {
    /// The next connection, connecting them all on first use.
    async fn client(&self) -> Result<&Client, PoolError> {
        let clients = self
            .clients
            .get_or_try_init(|| async {
                let mut clients = Vec::with_capacity(REPLICATED_CONNECTIONS);
                for _ in 0..REPLICATED_CONNECTIONS {
                    let client = self.template.clone_new();
                    client.init().await?;
                    clients.push(client);
                }
                Ok::<_, PoolError>(clients)
            })
            .await?;
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Ok(&clients[turn % clients.len()])
    }
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory(_) => "Pools::Memory",
            Self::Redis { .. } => "Pools::Redis",
        })
    }
}

/// A store failure.
pub(crate) type PoolError = fred::error::Error;

impl Pools {
    pub(crate) fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// Pools on Redis; with `wait_replicas` above zero a sale's reservation
    /// waits up to `wait_timeout` for that many replicas.
    pub(crate) fn redis(client: Client, wait_replicas: u32, wait_timeout: Duration) -> Self {
        let replicated = (wait_replicas > 0).then(|| {
            Arc::new(Replicated {
                template: client.clone(),
                clients: OnceCell::new(),
                turn: AtomicUsize::new(0),
                wanted: wait_replicas,
                timeout: wait_timeout,
            })
        });
        Self::Redis {
            client,
            script: Arc::new(Script::from_lua(SCRIPT)),
            replicated,
        }
    }

    pub(crate) fn is_memory(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    /// Runs the script on the pool's keys; the memory store has no script
    /// and answers a protocol error (its operations never get here).
    async fn call(&self, pool: PoolId, args: Vec<Value>) -> Result<Vec<String>, PoolError> {
        match self {
            Self::Memory(_) => Err(protocol(&["the memory store has no script".to_owned()])),
            Self::Redis { client, script, .. } => {
                script.evalsha_with_reload(client, pool.keys(), args).await
            }
        }
    }

    /// Hands `user_id` a unit as grant `id` at `now_ms`, or says why not.
    pub(crate) async fn take(
        &self,
        pool: PoolId,
        now_ms: i64,
        user_id: i64,
        id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Take, PoolError> {
        if let Self::Memory(pools) = self {
            let mut pools = pools.lock();
            let Some(state) = pools.get_mut(&pool) else {
                return Ok(Take::Unloaded);
            };
            return Ok(state.take(now_ms, user_id, id, idempotency_key));
        }
        let args: Vec<Value> = vec![
            "take".into(),
            now_ms.into(),
            user_id.into(),
            id.into(),
            idempotency_key.unwrap_or("").into(),
        ];
        let (replicated, script) = match self {
            Self::Redis {
                replicated: Some(replicated),
                script,
                ..
            } if pool.kind == PoolKind::Stock => (replicated, script),
            _ => return parse_take(&self.call(pool, args).await?, now_ms, user_id, id),
        };
        let client = replicated.client().await?;
        let keys = pool.keys();
        let slot = fred::util::redis_keyslot(keys[0].as_bytes());
        let reply: Vec<String> = script.evalsha_with_reload(client, keys, args).await?;
        let take = parse_take(&reply, now_ms, user_id, id)?;
        if !matches!(take, Take::Taken(_)) {
            return Ok(take);
        }
        let acked = wait(client, slot, replicated.timeout, replicated.wanted).await;
        match acked {
            Ok(acked) if acked >= replicated.wanted => Ok(take),
            acked => {
                // Not known to be on enough replicas: give the unit back
                // (a failover may have lost it anyway) and order nothing.
                self.release(pool, id, idempotency_key, true).await?;
                match acked {
                    Ok(acked) => Ok(Take::Unreplicated {
                        acked,
                        wanted: replicated.wanted,
                    }),
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Undoes grant `id` (its write failed): the user may take again, and
    /// with `free` its unit is handed out again (without, the database
    /// holds the unit already). False if there is no such grant.
    pub(crate) async fn release(
        &self,
        pool: PoolId,
        id: &str,
        idempotency_key: Option<&str>,
        free: bool,
    ) -> Result<bool, PoolError> {
        if let Self::Memory(pools) = self {
            let mut pools = pools.lock();
            return Ok(pools
                .get_mut(&pool)
                .is_some_and(|state| state.release(id, idempotency_key, free)));
        }
        let reply = self
            .call(
                pool,
                vec![
                    "release".into(),
                    id.into(),
                    idempotency_key.unwrap_or("").into(),
                    if free { "1" } else { "0" }.into(),
                ],
            )
            .await?;
        Ok(reply.first().is_some_and(|word| word == "1"))
    }

    /// Raises the units the store says `user_id` holds to `held` (the
    /// database's count, when the store lost writes).
    pub(crate) async fn hold(
        &self,
        pool: PoolId,
        user_id: i64,
        held: i64,
    ) -> Result<(), PoolError> {
        if let Self::Memory(pools) = self {
            if let Some(state) = pools.lock().get_mut(&pool) {
                let count = state.users.entry(user_id).or_insert(0);
                *count = (*count).max(held);
            }
            return Ok(());
        }
        self.call(pool, vec!["hold".into(), user_id.into(), held.into()])
            .await?;
        Ok(())
    }

    /// The grant recorded as `id`, if any.
    pub(crate) async fn grant(&self, pool: PoolId, id: &str) -> Result<Option<Grant>, PoolError> {
        if let Self::Memory(pools) = self {
            return Ok(pools
                .lock()
                .get(&pool)
                .and_then(|state| state.grants.get(id).cloned()));
        }
        let reply = self.call(pool, vec!["grant".into(), id.into()]).await?;
        match reply.first().map(String::as_str) {
            Some("found") => Ok(reply.get(1).and_then(|record| parse_grant(id, record))),
            _ => Ok(None),
        }
    }

    /// Loads a pool that is not loaded, with the units `holders` hold
    /// (user id, count) first; a loaded pool is left alone. True if this
    /// call loaded it.
    pub(crate) async fn load(
        &self,
        pool: PoolId,
        spec: PoolSpec,
        holders: &[(i64, i64)],
    ) -> Result<bool, PoolError> {
        if let Self::Memory(pools) = self {
            let mut pools = pools.lock();
            if pools.contains_key(&pool) {
                return Ok(false);
            }
            pools.insert(pool, MemoryPool::new(spec, holders));
            return Ok(true);
        }
        // Holders in slices, so no call carries an unbounded argument list.
        for slice in holders.chunks(1_000) {
            let mut args: Vec<Value> = Vec::with_capacity(2 + 2 * slice.len());
            args.push("holders".into());
            args.push(spec.expires_at.into());
            for (user, held) in slice {
                args.push((*user).into());
                args.push((*held).into());
            }
            self.call(pool, args).await?;
        }
        let reply = self
            .call(
                pool,
                vec![
                    "load".into(),
                    spec.quantity.into(),
                    spec.per_user.into(),
                    spec.starts_at.into(),
                    spec.ends_at.into(),
                    spec.next.into(),
                    spec.expires_at.into(),
                    settled(holders).into(),
                ],
            )
            .await?;
        Ok(reply.first().is_some_and(|word| word == "1"))
    }

    /// Moves the next unit up to `next` (the database already holds the
    /// units below it: the store's state went back in time).
    pub(crate) async fn resync(&self, pool: PoolId, next: i64) -> Result<(), PoolError> {
        if let Self::Memory(pools) = self {
            if let Some(state) = pools.lock().get_mut(&pool) {
                state.next = state.next.max(next);
            }
            return Ok(());
        }
        self.call(pool, vec!["resync".into(), next.into()]).await?;
        Ok(())
    }

    /// Where the pool stands; `None` when it is not loaded.
    pub(crate) async fn status(&self, pool: PoolId) -> Result<Option<PoolStatus>, PoolError> {
        if let Self::Memory(pools) = self {
            return Ok(pools.lock().get(&pool).map(MemoryPool::status));
        }
        let reply = self.call(pool, vec!["status".into()]).await?;
        if reply.first().is_none_or(|word| word != "loaded") {
            return Ok(None);
        }
        let number = |index: usize| -> Result<i64, PoolError> {
            reply
                .get(index)
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| protocol(&reply))
        };
        let (quantity, next, free) = (number(1)?, number(2)?, number(3)?);
        Ok(Some(PoolStatus {
            quantity,
            taken: next - 1 - free,
            grants: number(4)?,
            holders: number(5)?,
        }))
    }
}

/// `WAIT`s on `client`'s link to the primary of `slot` for `wanted`
/// replicas; how many acknowledged.
async fn wait(
    client: &Client,
    slot: u16,
    timeout: Duration,
    wanted: u32,
) -> Result<u32, PoolError> {
    let options = Options {
        timeout: Some(timeout + Duration::from_secs(1)),
        ..Options::default()
    };
    let command = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), true);
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let acked: i64 = client
        .with_options(&options)
        .custom(
            command,
            vec![Value::from(i64::from(wanted)), Value::from(timeout_ms)],
        )
        .await?;
    Ok(u32::try_from(acked.max(0)).unwrap_or(u32::MAX))
}

fn protocol(reply: &[String]) -> PoolError {
    PoolError::new(
        fred::error::ErrorKind::Parse,
        format!("the pool script answered {reply:?}"),
    )
}

fn parse_take(reply: &[String], now_ms: i64, user_id: i64, id: &str) -> Result<Take, PoolError> {
    let number = |index: usize| -> Result<i64, PoolError> {
        reply
            .get(index)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| protocol(reply))
    };
    let word = reply.first().map(String::as_str).unwrap_or_default();
    Ok(match word {
        "taken" => Take::Taken(Grant {
            id: id.to_owned(),
            unit: number(1)?,
            user_id,
            nth: number(2)?,
            at_ms: now_ms,
        }),
        "replay" => {
            let first = reply.get(1).cloned().ok_or_else(|| protocol(reply))?;
            let grant = reply.get(2).and_then(|record| parse_grant(&first, record));
            Take::Replay { id: first, grant }
        }
        "gone" => Take::Gone,
        "limit" => Take::Limit { held: number(1)? },
        "early" => Take::Early,
        "ended" => Take::Ended,
        "unloaded" => Take::Unloaded,
        _ => return Err(protocol(reply)),
    })
}

/// Units the rows hold: what `holders` (user id, count) add up to.
fn settled(holders: &[(i64, i64)]) -> i64 {
    holders
        .iter()
        .fold(0_i64, |sum, (_, held)| sum.saturating_add(*held))
}

/// A grant recorded as `unit:user:nth:at`.
fn parse_grant(id: &str, record: &str) -> Option<Grant> {
    let mut parts = record.split(':').map(str::parse::<i64>);
    let (Some(Ok(unit)), Some(Ok(user_id)), Some(Ok(nth)), Some(Ok(at_ms))) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(Grant {
        id: id.to_owned(),
        unit,
        user_id,
        nth,
        at_ms,
    })
}

/// A pool in this process's memory: the script's rules, in Rust.
#[derive(Debug)]
pub(crate) struct MemoryPool {
    spec: PoolSpec,
    next: i64,
    free: std::collections::VecDeque<i64>,
    users: HashMap<i64, i64>,
    /// Units the rows held when the pool was loaded.
    settled: i64,
    grants: HashMap<String, Grant>,
    idem: HashMap<String, String>,
}

impl MemoryPool {
    fn new(spec: PoolSpec, holders: &[(i64, i64)]) -> Self {
        Self {
            spec,
            next: spec.next,
            free: std::collections::VecDeque::new(),
            users: holders.iter().copied().collect(),
            settled: settled(holders),
            grants: HashMap::new(),
            idem: HashMap::new(),
        }
    }

    fn take(&mut self, now_ms: i64, user_id: i64, id: &str, key: Option<&str>) -> Take {
        if let Some(first) = key.and_then(|key| self.idem.get(key)) {
            return Take::Replay {
                id: first.clone(),
                grant: self.grants.get(first).cloned(),
            };
        }
        if now_ms < self.spec.starts_at {
            return Take::Early;
        }
        if now_ms >= self.spec.ends_at {
            return Take::Ended;
        }
        let held = self.users.get(&user_id).copied().unwrap_or(0);
        if held >= self.spec.per_user {
            return Take::Limit { held };
        }
        let unit = match self.free.pop_front() {
            Some(unit) => unit,
            None if self.next > self.spec.quantity => return Take::Gone,
            None => {
                self.next += 1;
                self.next - 1
            }
        };
        let nth = held + 1;
        self.users.insert(user_id, nth);
        let grant = Grant {
            id: id.to_owned(),
            unit,
            user_id,
            nth,
            at_ms: now_ms,
        };
        self.grants.insert(id.to_owned(), grant.clone());
        if let Some(key) = key {
            self.idem.insert(key.to_owned(), id.to_owned());
        }
        Take::Taken(grant)
    }

    fn release(&mut self, id: &str, key: Option<&str>, free: bool) -> bool {
        let Some(grant) = self.grants.remove(id) else {
            return false;
        };
        if let Some(held) = self.users.get_mut(&grant.user_id) {
            *held -= 1;
            if *held <= 0 {
                self.users.remove(&grant.user_id);
            }
        }
        if free {
            self.free.push_back(grant.unit);
        }
        if let Some(key) = key
            && self.idem.get(key).is_some_and(|first| first == id)
        {
            self.idem.remove(key);
        }
        true
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            quantity: self.spec.quantity,
            taken: self.next - 1 - i64::try_from(self.free.len()).unwrap_or(i64::MAX),
            grants: i64::try_from(self.grants.len())
                .unwrap_or(i64::MAX)
                .saturating_add(self.settled),
            holders: i64::try_from(self.users.len()).unwrap_or(i64::MAX),
        }
    }
}
