//! The promotions workload: coupon campaigns, point ledgers and time sales,
//! the load-test brief's promotion system built on seawall's parts.
//!
//! - **Coupons** ([`Promotions::issue_coupon`]): a campaign hands out at
//!   most its quantity, at most `per_user` to one user, inside its window.
//!   Who gets a coupon is decided by one atomic script on Redis (in memory
//!   on embedded defaults), not by a lock: a lock would make every issuer of
//!   a campaign wait for the one holding it, across its database write, so
//!   a campaign would issue one coupon per lock hold (the brief's Redlock
//!   reached 33 a second). The script decides in one round trip and the
//!   database write happens outside any lock. The database stays the source
//!   of truth: every coupon has a number from 1 to the quantity and is its
//!   user's first, second, … coupon, both unique, so even a store that lost
//!   its state (a failover that dropped the last writes) cannot issue more
//!   than the quantity or two to one user.
//! - **Points** ([`Promotions::earn_points`], [`Promotions::use_points`],
//!   [`Promotions::balance`]): a ledger per user. Writes are optimistic: they
//!   name the account version they read and retry (a bounded number of
//!   times, counted in `promotions_points_retries_total`) when another
//!   write got there first. A balance never goes below zero. The balance
//!   is read through the cache and invalidated on every change; with Redis
//!   every read asks Redis, so a read on any instance sees a change once
//!   it is answered. An
//!   idempotency key makes a repeated request answer the first result.
//! - **Time sales** ([`Promotions::order`]): one script reserves a unit of
//!   stock (check and take, per-user limit, idempotency key), the order
//!   goes onto the durable `order` queue, and only then does the service
//!   answer 201; a worker writes the order row (once per order id, however
//!   often the job runs). An acknowledged order is in the queue before the
//!   answer leaves, so it survives the API process dying right after. With
//!   `queue.wait_replicas`, the reservation and the job are each on that
//!   many replicas first, so a failover loses neither. A sale's stock that
//!   left the store is loaded from the rows once no order is queued
//!   ([`PromoError::StockReloading`] after 10 s), so no unit a queued order
//!   holds is handed out again. Each pool loads under a lock of its own: a
//!   sale waiting for its queued orders holds up only its own requests,
//!   never another campaign's or sale's.
//!   [`Promotions::audit`] and the reconciliation check compare the store's
//!   stock and acknowledged orders with the rows.
//! - **Scenarios** ([`Scenarios::start`]): a burst of virtual
//!   users calling these operations in this process, timed and audited;
//!   the dashboard's "run a scenario".
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use seawall_app::promotions::{NewCampaign, PromoError, Promotions};
//!
//! let dir = tempfile::tempdir()?;
//! let mut config = seawall_app::Config::default();
//! config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("promo.db").display());
//! config.demo.seed = false;
//! let monitor = seawall_app::setup::monitor(&config)?;
//! let db = seawall_app::setup::database(&config, &monitor).await?;
//! let queues = seawall_app::setup::QueueHandle::connect(&config)?;
//! let promotions = Promotions::new(db, None, None, queues, &config, &monitor)?;
//! let campaign = promotions
//!     .create_campaign(serde_json::from_value(serde_json::json!({
//!         "name": "launch", "quantity": 2
//!     }))?)
//!     .await?;
//! let first = promotions.issue_coupon(campaign.id, 7).await?;
//! assert_eq!(first.number, 1);
//! let again = promotions.issue_coupon(campaign.id, 7).await;
//! assert!(matches!(again, Err(PromoError::AlreadyIssued { held: 1, .. })));
//! promotions.issue_coupon(campaign.id, 8).await?;
//! let gone = promotions.issue_coupon(campaign.id, 9).await;
//! assert!(matches!(gone, Err(PromoError::CouponsGone(_))));
//! # Ok(())
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #     tokio::runtime::Runtime::new()?.block_on(demo())
//! # }
//! ```

mod audit;
mod base;
mod coupons;
mod error;
mod points;
mod pool;
mod sales;
mod scenario;
#[cfg(test)]
mod tests;
mod writes;

pub use audit::{Audit, CampaignStanding, ReconciliationCheck, SaleStanding};
pub use base::{
    MAX_DURATION_MS, MAX_NAME_CHARS, MAX_PER_USER, MAX_QUANTITY, MAX_START_MS, Promotions,
};
pub use coupons::{Campaign, Coupon, CouponList, NewCampaign};
pub use error::PromoError;
pub use points::{Balance, MAX_AMOUNT, MAX_KEY_CHARS, PointsChange, PointsEntry};
pub use sales::{NewSale, Order, OrderRequest, OrderState, Sale};
pub use scenario::{
    DEFAULT_ROUNDS, DEFAULT_USERS, MAX_ROUNDS, MAX_USERS, RunState, ScenarioKind, ScenarioReport,
    ScenarioRequest, ScenarioRun, Scenarios,
};
pub use writes::MAX_BALANCE;
