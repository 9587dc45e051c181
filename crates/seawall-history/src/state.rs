//! The final state a drill reads from the database (and the queue's API)
//! once the fleet is healed and quiet. Field names follow the tables'
//! columns; rows may carry more columns than these, which are ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Every section is optional, but a workload the history ran needs its
/// section ([`check`](crate::check) refuses to judge it without): a drill
/// fills those of the workloads it ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalState {
    /// The fleet's hosts (`redis-1`, `worker-2`, …). When given, a fault,
    /// a row or a queue's master naming any other host makes the history
    /// malformed ([`Error::UnknownHost`](crate::Error::UnknownHost)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// The outbox rows the queue's jobs wrote, and what the queue says of
    /// each job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueState>,
    /// Per time sale: its stock and its order rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<Vec<SaleState>>,
    /// Per coupon campaign: its quantity and its coupon rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<Vec<CampaignState>>,
    /// Per user: the points account and its ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<AccountState>>,
    /// The final version per cache key (`null`: absent); every key the
    /// history wrote needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<BTreeMap<String, Option<i64>>>,
    /// The jobs the schedulers' ticks made, and what their runs went
    /// through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleState>,
}

impl FinalState {
    /// Reads a final state from JSON text; `name` names it in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|source| Error::State {
            file: name.to_owned(),
            source,
        })
    }

    /// Reads a final state from a file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }
}

/// The queue's side: outbox rows (one per run that got as far as writing),
/// the queue's own account of each job, and what a run of each queue
/// depended on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Per queue (`notification`): its lease and the Redis masters that
    /// held it. A job of a queue without them has no repeat explained.
    #[serde(default)]
    pub queues: BTreeMap<String, QueuePath>,
    /// One per row of the outbox table the drill's queue writes
    /// (`notification_deliveries`, say).
    #[serde(default)]
    pub rows: Vec<OutboxRow>,
    /// What `GET /api/queue/{queue}/jobs/{id}` said of the jobs, if read.
    #[serde(default)]
    pub jobs: Vec<JobState>,
}

/// What every run of a queue's jobs goes through: the lease it runs
/// under, and the Redis masters that held the queue during the drill (the
/// one at the start, and any that took over from it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePath {
    /// How long a worker holds a job without renewing its lease, in
    /// milliseconds.
    pub lease_ms: u64,
    /// The hosts of the masters that held the queue (`redis-3`).
    #[serde(default)]
    pub masters: Vec<String>,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// The job that wrote it, as `queue:id` (the table's `job` column).
    pub job: String,
    /// The idempotency key the job carries (the drill puts it in the
    /// payload, e.g. as the notification's `message`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// When the run wrote it, Unix milliseconds (`delivered_at`). A row
    /// without one cannot be placed among the faults: a repeat of its job
    /// is explained by none.
    #[serde(default)]
    pub at_ms: Option<i64>,
    /// The host of the worker that ran it (`worker-1`). Without it only a
    /// fault of the queue's masters can explain a repeat.
    #[serde(default)]
    pub worker: Option<String>,
}

/// What the queue says of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// `queue:id`.
    pub job: String,
    /// Times a worker took it (reported; a failover may lose count).
    #[serde(default)]
    pub runs: u32,
    /// Times a worker lost it without finishing (its lease ran out: the
    /// worker died, paused or was cut off).
    #[serde(default)]
    pub stalls: u32,
}

/// The schedulers' side: every job their ticks made, read from the queue
/// once the fleet is quiet, and what the ticks depended on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Per queue (`analytics`): the hosts of the Redis masters that held
    /// it during the drill (the first, and any that took over). Only a
    /// fault that takes one of them out, or cuts it off from every runner,
    /// explains a tick with no job.
    #[serde(default)]
    pub masters: BTreeMap<String, Vec<String>>,
    /// The hosts of the processes that ran the schedulers (`worker-1`).
    #[serde(default)]
    pub runners: Vec<String>,
    /// Every job of the schedulers' queues that a tick made, in any state
    /// (a job a pause or a removal cancelled is gone, and not listed).
    #[serde(default)]
    pub jobs: Vec<TickJob>,
}

/// One job a scheduler's tick made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickJob {
    /// `queue:id`.
    pub job: String,
    /// The scheduler whose tick made it.
    pub scheduler: String,
    /// When that tick was due, Unix milliseconds.
    pub tick_ms: i64,
}

/// One time sale (`time_sales` and its `sale_orders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleState {
    /// The sale.
    pub id: i64,
    /// Units it sells at most.
    pub stock: i64,
    /// Orders one user may place (default 1).
    #[serde(default)]
    pub per_user: Option<i64>,
    /// Units the store says are left: the stock less the units it says it
    /// sold (`GET /api/promotions`'s `sold`), not clamped at zero, so an
    /// oversold store shows below it.
    pub remaining: i64,
    /// Its order rows.
    #[serde(default)]
    pub orders: Vec<OrderRow>,
}

/// One row of `sale_orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    /// The order id it was acknowledged with.
    pub id: String,
    /// The unit it holds.
    pub unit: i64,
    /// The buyer.
    pub user_id: i64,
    /// The buyer's first, second, … order of the sale.
    #[serde(default)]
    pub nth: Option<i64>,
}

/// One coupon campaign (`coupon_campaigns` and its `coupons`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignState {
    /// The campaign.
    pub id: i64,
    /// Coupons it issues at most.
    pub quantity: i64,
    /// Coupons one user may hold (default 1).
    #[serde(default)]
    pub per_user: Option<i64>,
    /// Its coupon rows.
    #[serde(default)]
    pub coupons: Vec<CouponRow>,
}

/// One row of `coupons`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponRow {
    /// The coupon's code.
    pub code: String,
    /// Its number, 1 to the quantity.
    pub number: i64,
    /// Its holder.
    pub user_id: i64,
    /// The holder's first, second, … coupon of the campaign.
    #[serde(default)]
    pub nth: Option<i64>,
}

/// One user's points (`point_accounts` and its `point_ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The user.
    pub user_id: i64,
    /// The balance.
    pub balance: i64,
    /// The ledger, any order.
    #[serde(default)]
    pub ledger: Vec<LedgerRow>,
}

/// One row of `point_ledger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// The account version this change took it to.
    pub version: i64,
    /// Points added (negative: taken).
    pub delta: i64,
    /// The idempotency key of the change, if it had one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}
