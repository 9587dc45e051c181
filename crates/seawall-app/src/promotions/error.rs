//! Why a promotions operation did not answer.

use crate::ServiceError;

/// Why a promotions operation did not answer. Every refusal changes
/// nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromoError {
    /// There is no such coupon campaign.
    #[error("no coupon campaign with id {0}")]
    NoSuchCampaign(i64),
    /// There is no such time sale.
    #[error("no time sale with id {0}")]
    NoSuchSale(i64),
    /// The sale has no order with this id.
    #[error("time sale {sale_id} has no order {order_id}")]
    NoSuchOrder {
        /// The sale.
        sale_id: i64,
        /// The order id asked for.
        order_id: String,
    },
    /// Every coupon of the campaign is issued.
    #[error("every coupon of campaign {0} is issued")]
    CouponsGone(i64),
    /// The user holds as many coupons of the campaign as one user may.
    #[error(
        "user {user_id} already holds {held} coupon(s) of campaign {campaign_id}, the most one user may"
    )]
    AlreadyIssued {
        /// The campaign.
        campaign_id: i64,
        /// The user.
        user_id: i64,
        /// Coupons the user holds.
        held: i64,
    },
    /// The sale's stock is sold.
    #[error("time sale {0} is sold out")]
    SoldOut(i64),
    /// The user placed as many orders in the sale as one user may.
    #[error(
        "user {user_id} already placed {held} order(s) in time sale {sale_id}, the most one user may"
    )]
    OrderLimit {
        /// The sale.
        sale_id: i64,
        /// The user.
        user_id: i64,
        /// Orders the user placed.
        held: i64,
    },
    /// The campaign or sale has not started.
    #[error("{what} has not started: it opens at {starts_at}")]
    NotStarted {
        /// `coupon campaign 3`, `time sale 4`.
        what: String,
        /// When it opens (RFC 3339).
        starts_at: String,
    },
    /// The campaign or sale has ended.
    #[error("{what} has ended: it closed at {ends_at}")]
    Ended {
        /// `coupon campaign 3`, `time sale 4`.
        what: String,
        /// When it closed (RFC 3339).
        ends_at: String,
    },
    /// Using the points would take the balance below zero.
    #[error("user {user_id} has {balance} points, fewer than the {wanted} asked for")]
    InsufficientPoints {
        /// The user.
        user_id: i64,
        /// Their balance.
        balance: i64,
        /// Points asked for.
        wanted: i64,
    },
    /// The idempotency key was first used for a different request.
    #[error("the Idempotency-Key was first used for a different request: {0}")]
    IdempotencyMismatch(String),
    /// An input breaks a rule; nothing was written.
    #[error("field `{field}` {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Concurrent writers kept changing the account; every retry lost.
    #[error("the account kept changing under {attempts} attempts; try again")]
    Contention {
        /// Attempts made.
        attempts: u32,
    },
    /// The store of coupons and stock (Redis) failed.
    #[error("the promotions store failed")]
    Store(#[source] fred::error::Error),
    /// The sale's stock left the store (a Redis restart without
    /// persistence, a flush) and is loaded again from the rows once every
    /// queued order is written; `queued` orders were still on the queue.
    #[error(
        "time sale {sale_id}'s stock is being loaded again; {queued} queued order(s) are still being written"
    )]
    StockReloading {
        /// The sale.
        sale_id: i64,
        /// Orders on the queue when the wait ended.
        queued: i64,
    },
    /// A unit of stock was reserved on the store's primary but reached
    /// fewer replicas than `queue.wait_replicas` asks for in time; it was
    /// given back and nothing was ordered.
    #[error("the order reached {acked} of {wanted} Redis replicas in time; nothing was ordered")]
    NotReplicated {
        /// Replicas that acknowledged the reservation.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// A scenario run is at work in this process; one runs at a time.
    #[error("scenario run {0} is still running; one runs at a time")]
    ScenarioRunning(u64),
    /// The service failed beneath the operation: its database, job
    /// queues or cache, or itself.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl PromoError {
    /// A failed statement.
    #[allow(clippy::needless_pass_by_value)] // used as `map_err(PromoError::database)`
    pub fn database(error: sqlx::Error) -> Self {
        Self::Service(ServiceError::database(error))
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
