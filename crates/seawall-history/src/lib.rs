//! Records what the clients of a drill did, and checks that
//! history, with the state the fleet ended in, for anomalies: acknowledged
//! jobs that never ran, jobs that ran twice, orders and coupons beyond the
//! stock, points applied twice, limits exceeded across the fleet, stale
//! cache reads, scheduler ticks that made no job or two.
//!
//! ```
//! use seawall_history::{FinalState, History, Options, Recorder, Workload, check};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("cache-1.jsonl");
//! {
//!     let recorder = Recorder::create(&path)?;
//!     let write = recorder.invoke("cache-1", Workload::Cache, "write", json!({"key": "k", "value": 1}))?;
//!     write.ok(json!({}))?;
//!     recorder.fault("partition", json!({"sides": [["api-1"], ["api-2", "redis-1"]]}))?;
//!     let read = recorder.invoke("cache-1", Workload::Cache, "read", json!({"key": "k"}))?;
//!     read.ok(json!({"value": 1}))?;
//! } // the last clone of the recorder flushes the file
//!
//! let history = History::read(&[&path])?;
//! let state = FinalState::parse("state.json", r#"{"cache": {"k": 1}}"#)?;
//! let report = check(&history, &state, &Options::default())?;
//! assert_eq!(report.anomalies(), 0);
//! assert_eq!(report.counts()["cache.stale"], 0);
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! # The history
//!
//! JSON lines, one event each, in any number of files (each client may
//! write its own, the nemesis its `faults.jsonl`); [`History::read`] merges
//! them by time. Every event has:
//!
//! | field | |
//! |---|---|
//! | `t` | integer, microseconds since the Unix epoch (every recorder on one machine) |
//! | `process` | the recording client (`sale-3`), or `nemesis` |
//! | `type` | `invoke`, `ok`, `fail` (certainly did nothing), `info` (unknown: a timeout, a lost connection, a 5xx that says the outcome is unknown) or `fault` |
//! | `id` | integer, unique per file; a completion carries its invoke's (and repeats its `process`, `workload` and `op`); none on faults |
//! | `workload` | `queue`, `sale`, `coupon`, `points`, `ratelimit`, `cache` or `schedule`; none on faults |
//! | `op` | the operation (below), or the fault |
//! | `value` | the invoke's inputs, the completion's answer, the fault's targets |
//!
//! An invoke without a completion counts as `info`. Only the values of
//! invokes and of `ok` completions are read; `fail` and `info` may carry
//! anything (the status, the problem's detail).
//!
//! | workload / op | invoke `value` | `ok` `value` |
//! |---|---|---|
//! | `queue` / `enqueue` | `{"queue": "notification", "key": "<Idempotency-Key>"}` (`queue` optional) | `{"job": "notification:<id>"}`: the queue and the answer's `id`, as the outbox's `job` column names it |
//! | `sale` / `order` | `{"sale": 1, "user": 7, "key": "<Idempotency-Key>"}` (`key` optional) | `{"order": "<order_id>", "unit": 3}` (`unit` optional) |
//! | `coupon` / `issue` | `{"campaign": 1, "user": 7}` | `{"coupon": "<code>", "number": 12}` (`number` optional) |
//! | `points` / `change` | `{"user": 7, "key": "<Idempotency-Key>", "amount": 50}` (negative: `/api/points/use`) | `{"balance": 150}` (optional) |
//! | `ratelimit` / `check` | `{"key": "user:7", "limit": 100, "window_ms": 60000}` | `{"admitted": true}` (a 429 is `ok` with `false`) |
//! | `cache` / `write` | `{"key": "k", "value": 5}` | anything |
//! | `cache` / `read` | `{"key": "k"}` | `{"value": 5}` or `{"value": null}` (absent) |
//! | `schedule` / `resume` | `{"queue": "analytics", "scheduler": "hourly-analytics", "every_ms": 1000}` | anything |
//! | `schedule` / `pause` | `{"queue": "analytics", "scheduler": "hourly-analytics"}` | anything |
//!
//! Cache values are versions: integers that grow with every write of a
//! key, and the writes of one key never overlap (one writer per key), so a
//! higher version is a newer write.
//!
//! A scheduler ticks on the whole multiples of `every_ms` since the epoch.
//! It certainly runs from a `resume`'s `ok` (resuming a running scheduler
//! changes nothing) to the next `pause`'s invoke, and every tick due in
//! between must make exactly one job; from a `pause`'s `ok` on, none may.
//!
//! Faults: `op` is `partition`, `isolate`, `one-way`, `heal`, `kill`,
//! `pause`, `resume`, `restart`, `start` or `stop`; `value` names the
//! hosts as `{"sides": [["redis-1", "api-1"], ["redis-2", "worker-1"]]}`,
//! `{"host": "worker-1"}` or `{"from": "api-1", "to": "redis-1"}`. A job
//! that ran twice is explained only by a fault on the path of the run it
//! lost: one that takes out (kills, pauses, stops, restarts, isolates) the
//! worker that ran it or a Redis master that held its queue, or cuts two
//! of them apart, within the job's lease and [`DEFAULT_LEASE_MARGIN`] of
//! the run's row; one repeat per stall the queue counted or per
//! acknowledgement a master fault could lose.
//!
//! # The final state
//!
//! One JSON document the drill writes once the fleet is healed and quiet,
//! rows named after the tables' columns (extra columns are ignored; times
//! are Unix milliseconds, as in the database). Each workload the history
//! ran needs its section, and the cache section a final version of every
//! key the history wrote (`ratelimit` needs none): [`check`] refuses a
//! state without them ([`Error::Incomplete`]) rather than judge nothing:
//!
//! ```json
//! {
//!   "hosts": ["redis-1", "redis-2", "postgres", "api-1", "worker-1", "worker-2"],
//!   "queue": {
//!     "queues": {"notification": {"lease_ms": 5000, "masters": ["redis-2"]}},
//!     "rows": [{"job": "notification:42", "idempotency_key": "drill-17",
//!               "at_ms": 1764000000123, "worker": "worker-1"}],
//!     "jobs": [{"job": "notification:42", "runs": 2, "stalls": 1}]
//!   },
//!   "sale": [{"id": 1, "stock": 100, "per_user": 1, "remaining": 0,
//!             "orders": [{"id": "7QH2M0C4WX9TZK3P5R8N", "unit": 1, "user_id": 7, "nth": 1}]}],
//!   "coupon": [{"id": 1, "quantity": 50, "per_user": 1,
//!               "coupons": [{"code": "C-1", "number": 1, "user_id": 7, "nth": 1}]}],
//!   "points": [{"user_id": 7, "balance": 150,
//!               "ledger": [{"version": 1, "delta": 150, "idempotency_key": "pts-7-1"}]}],
//!   "cache": {"k": 5, "gone": null},
//!   "schedule": {
//!     "masters": {"analytics": ["redis-2", "redis-5"]},
//!     "runners": ["worker-1", "worker-2", "worker-3"],
//!     "jobs": [{"job": "analytics:17", "scheduler": "hourly-analytics",
//!               "tick_ms": 1764000001000}]
//!   }
//! }
//! ```
//!
//! `hosts` lists the fleet's hosts: given, a fault, a row or a master
//! naming any other is an error ([`Error::UnknownHost`]).
//! `queue.queues` says, per queue, the lease its jobs run under and the
//! Redis masters that held it during the drill (the first, and any that
//! took over); `queue.rows` are the rows of the outbox table the drill's
//! jobs write (`notification_deliveries`, whose `message` can carry the
//! key), each with when the run wrote it and the host of the worker that
//! ran it; `queue.jobs` what `GET /api/queue/{queue}/jobs/{id}` says
//! (`runs`, `stalls`: a lease that ran out). A repeat of a job whose queue
//! has no entry, or one of whose rows has no time, is explained by
//! nothing. `sale` is `time_sales` with its `sale_orders` and the units
//! the store says remain (required: the stock less the store's `sold`, not
//! clamped at zero); `coupon` is `coupon_campaigns` with its `coupons`;
//! `points` is `point_accounts` with its `point_ledger`; `cache` the
//! version each key ends at, as a read serves it. `schedule` lists every
//! job a scheduler's tick made (`GET /api/queue/{queue}/jobs` names its
//! tick), with the Redis masters that held each queue and the hosts that
//! ran the schedulers.
//!
//! # The checks
//!
//! See [`Report`]'s sections for what each kind of finding means. Kinds
//! marked tolerated (an `info` enqueue that ran, a job run twice after the
//! worker that ran it was killed) are listed but are not anomalies. A read
//! concurrent with a write may return either version; only a read that
//! starts more than [`Options::stale_window`] after a newer version's `ok`
//! is stale.

mod check;
mod error;
mod event;
mod history;
mod record;
mod report;
mod state;

pub use check::{DEFAULT_LEASE_MARGIN, DEFAULT_SCHEDULE_LEAD, Options, check};
pub use error::{Error, Result};
pub use event::{Event, EventType, Workload};
pub use history::{Call, Fault, History, Op, Outcome};
pub use record::{OpHandle, Recorder};
pub use report::{
    CacheReport, CouponReport, FaultLine, Findings, LimiterKey, PointsReport, QueueReport,
    RateLimitReport, Report, SaleReport, ScheduleReport, Tally,
};
pub use state::{
    AccountState, CampaignState, CouponRow, FinalState, JobState, LedgerRow, OrderRow, OutboxRow,
    QueuePath, QueueState, SaleState, ScheduleState, TickJob,
};
