//! Time sales: creating one, ordering (a unit reserved in the store, the
//! order carried by the durable queue, its row written by a worker), and
//! looking an order up.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::base::{Promotions, check_new, check_user, random_code};
use super::error::PromoError;
use super::points::check_key;
use super::pool::{Grant, PoolKind, Take};
use crate::ServiceError;
use crate::config::QueueName;
use crate::db::Timed as _;
use crate::db::replicas::Freshness;
use crate::jobs::{self, OrderJob, Refusal};
use crate::json::{integer, optional_integer};
use crate::time::{now_ms, timestamp};

// A new time sale. No doc comment: the OpenAPI contract shows this schema
// without a description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Noon sale", "stock": 10000, "per_user": 1}))]
pub struct NewSale {
    /// What the sale is called, 1 to 100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub name: String,
    /// Units for sale, 1 to 10,000,000.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub stock: i64,
    /// Orders one user may place, 1 to 100 (default 1).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 100)]
    pub per_user: Option<i64>,
    /// When the sale opens, Unix ms (default now).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 0, maximum = 4_102_444_800_000_i64)]
    pub starts_at_ms: Option<i64>,
    /// How long it stays open, in ms: 1 to 3,650 days (default a day).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 315_360_000_000_i64)]
    pub duration_ms: Option<i64>,
}

/// A time sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Sale {
    /// The sale.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Units it sells at most.
    pub stock: i64,
    /// Orders one user may place.
    pub per_user: i64,
    /// When it opens (RFC 3339).
    pub starts_at: String,
    /// When it closes (RFC 3339).
    pub ends_at: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

// An order of one unit. No doc comment: the OpenAPI contract shows this
// schema without a description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": 7}))]
pub struct OrderRequest {
    /// The buyer.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub user_id: i64,
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Acknowledged: its unit is reserved and its job is queued.
    Accepted,
    /// Its row is in the database.
    Written,
}

/// An order of one unit of a time sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    /// The order, 20 characters.
    pub order_id: String,
    /// Its sale.
    pub sale_id: i64,
    /// The buyer.
    pub user_id: i64,
    /// The unit it holds, 1 to the stock.
    pub unit: i64,
    // Plain comment where the OpenAPI contract has no description.
    #[allow(missing_docs)]
    pub state: OrderState,
    /// When it was acknowledged (RFC 3339).
    pub ordered_at: String,
    /// Whether this answers a repeated idempotency key (nothing changed).
    #[serde(skip)]
    pub replayed: bool,
}

impl Order {
    fn of(sale_id: i64, grant: &Grant, state: OrderState) -> Self {
        Self {
            order_id: grant.id.clone(),
            sale_id,
            user_id: grant.user_id,
            unit: grant.unit,
            state,
            ordered_at: timestamp(grant.at_ms),
            replayed: false,
        }
    }
}

impl Promotions {
    /// Creates a time sale and loads its stock into the store.
    pub async fn create_sale(&self, new: NewSale) -> Result<Sale, PromoError> {
        let spec = check_new(
            &new.name,
            new.stock,
            new.per_user,
            new.starts_at_ms,
            new.duration_ms,
            now_ms(),
        )
        .map_err(|error| match error {
            PromoError::Invalid {
                field: "quantity",
                reason,
            } => PromoError::Invalid {
                field: "stock",
                reason,
            },
            other => other,
        })?;
        let id = self.create_pool(PoolKind::Stock, &spec).await?;
        Ok(Sale {
            id,
            name: spec.name,
            stock: spec.quantity,
            per_user: spec.per_user,
            starts_at: timestamp(spec.starts_at),
            ends_at: timestamp(spec.ends_at),
            created_at: timestamp(spec.created_at),
        })
    }

    /// Orders one unit of the sale for the buyer: reserves it in the store,
    /// puts the order on the `order` queue, and answers once the queue
    /// holds it (a worker writes the row). With `idempotency_key`, a repeat
    /// answers the first order. Refusals ([`PromoError::SoldOut`],
    /// [`PromoError::OrderLimit`], [`PromoError::NotStarted`],
    /// [`PromoError::Ended`]) reserve nothing; an order the queue certainly
    /// did not take gives its unit back, one it may have taken (a lost
    /// answer, an unconfirmed take-back) keeps it out of stock: its job may
    /// still write the order, and the unit is never sold to another buyer
    /// (the reconciliation counts it if the job never comes).
    pub async fn order(
        &self,
        sale_id: i64,
        request: OrderRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Order, PromoError> {
        let user_id = request.user_id;
        check_user(user_id)?;
        if let Some(key) = idempotency_key {
            check_key(key)?;
        }
        let queues = self.0.queues.get().ok_or(ServiceError::QueuesConnecting)?;
        let (pool, _) = self.pool(PoolKind::Stock, sale_id).await?;
        let id = random_code(20)?;
        let grant = match self.take(pool, user_id, &id, idempotency_key).await? {
            Take::Taken(grant) => grant,
            Take::Replay { id, grant } => return self.replay(sale_id, user_id, &id, grant).await,
            Take::Gone => return Err(PromoError::SoldOut(sale_id)),
            Take::Limit { held } => {
                return Err(PromoError::OrderLimit {
                    sale_id,
                    user_id,
                    held,
                });
            }
            take @ (Take::Early | Take::Ended) => return Err(self.window_error(pool, &take).await),
            Take::Unloaded => {
                return Err(ServiceError::Internal(format!(
                    "sale {sale_id}'s stock answered that it is not loaded"
                ))
                .into());
            }
            Take::Unreplicated { acked, wanted } => {
                return Err(PromoError::NotReplicated { acked, wanted });
            }
        };
        let job = OrderJob {
            order_id: grant.id.clone(),
            sale_id,
            unit: grant.unit,
            user_id,
            nth: grant.nth,
            ordered_at_ms: grant.at_ms,
        };
        // Whether a failure left the order certainly unqueued.
        let mut queued_nothing = true;
        let enqueued = match serde_json::to_value(&job) {
            Ok(payload) => jobs::enqueue(
                queues,
                &self.0.queue_config,
                QueueName::Order,
                payload,
                Some(&grant.id),
            )
            .await
            .map_err(|refusal| match refusal {
                Refusal::Queue(error) => {
                    queued_nothing = error.queued_nothing();
                    ServiceError::Queue(error)
                }
                Refusal::Invalid(refused) => ServiceError::Internal(format!(
                    "an order broke the order queue's rules: {refused}"
                )),
            }),
            Err(error) => Err(ServiceError::Internal(format!(
                "an order did not serialise: {error}"
            ))),
        };
        if let Err(error) = enqueued {
            if !queued_nothing {
                tracing::warn!(%error, sale_id, unit = grant.unit, order = %grant.id,
                    "an order's enqueue may have gone through: its unit stays out of stock");
                return Err(error.into());
            }
            // Certainly not queued: the unit goes back. If the store fails
            // too, the unit stays out (never sold twice) and the
            // reconciliation counts it.
            if let Err(store) = self
                .0
                .pools
                .release(pool, &grant.id, idempotency_key, true)
                .await
            {
                tracing::warn!(error = %store, sale_id, unit = grant.unit, "an unqueued order's unit was not given back");
            }
            return Err(error.into());
        }
        Ok(Order::of(sale_id, &grant, OrderState::Accepted))
    }

    /// The first order of a repeated idempotency key.
    async fn replay(
        &self,
        sale_id: i64,
        user_id: i64,
        id: &str,
        grant: Option<Grant>,
    ) -> Result<Order, PromoError> {
        let mut order = match grant {
            Some(grant) => Order::of(sale_id, &grant, OrderState::Accepted),
            None => self.written_order(sale_id, id).await?.ok_or_else(|| {
                ServiceError::Internal(format!(
                    "an idempotency key of sale {sale_id} names order {id}, which is nowhere"
                ))
            })?,
        };
        if order.user_id != user_id {
            return Err(PromoError::IdempotencyMismatch(format!(
                "it ordered for user {}",
                order.user_id
            )));
        }
        if order.state == OrderState::Accepted && self.written_order(sale_id, id).await?.is_some() {
            order.state = OrderState::Written;
        }
        order.replayed = true;
        Ok(order)
    }

    /// An order of the sale: written, or acknowledged and on its way.
    pub async fn find_order(&self, sale_id: i64, order_id: &str) -> Result<Order, PromoError> {
        let missing = || PromoError::NoSuchOrder {
            sale_id,
            order_id: order_id.to_owned(),
        };
        if order_id.is_empty() || order_id.len() > 64 {
            return Err(missing());
        }
        if let Some(order) = self.written_order(sale_id, order_id).await? {
            return Ok(order);
        }
        let (pool, _) = self.pool(PoolKind::Stock, sale_id).await?;
        let grant = self
            .0
            .pools
            .grant(pool, order_id)
            .await
            .map_err(PromoError::Store)?;
        grant
            .map(|grant| Order::of(sale_id, &grant, OrderState::Accepted))
            .ok_or_else(missing)
    }

    async fn written_order(
        &self,
        sale_id: i64,
        order_id: &str,
    ) -> Result<Option<Order>, PromoError> {
        const SQL: &str = "SELECT user_id, unit, ordered_at FROM sale_orders \
                           WHERE id = $1 AND sale_id = $2";
        let db = self.db();
        // As of now: a worker writes the row, not the caller, and an order
        // once read as written must not read as only accepted after.
        let row: Option<(i64, i64, i64)> = db
            .read(Freshness::NOW, |connection| {
                let (db, order_id) = (db.clone(), order_id.to_owned());
                Box::pin(async move {
                    sqlx::query_as(SQL)
                        .bind(order_id)
                        .bind(sale_id)
                        .fetch_optional(connection)
                        .timed(&db, SQL)
                        .await
                })
            })
            .await
            .map_err(PromoError::database)?;
        Ok(row.map(|(user_id, unit, ordered_at)| Order {
            order_id: order_id.to_owned(),
            sale_id,
            user_id,
            unit,
            state: OrderState::Written,
            ordered_at: timestamp(ordered_at),
            replayed: false,
        }))
    }
}
