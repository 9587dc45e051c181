//! Points: a ledger per user, written with optimistic locking, its balance
//! read through the cache.

use std::time::Duration;

use seawall_cache::Options;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::base::{Promotions, check_user};
use super::error::PromoError;
use super::writes::{MAX_BALANCE, PointsRow, PointsWritten};
use crate::ServiceError;
use crate::db::Timed as _;
use crate::db::caller;
use crate::db::replicas::Freshness;
use crate::json::integer;
use crate::time::{now_ms, timestamp};

/// Tries of one change before it gives up ([`PromoError::Contention`]).
const ATTEMPTS: u32 = 12;
/// The most points one change moves.
pub const MAX_AMOUNT: i64 = 1_000_000_000;
/// The longest reason, in characters.
const MAX_REASON_CHARS: usize = 100;
/// The longest idempotency key, in characters.
pub const MAX_KEY_CHARS: usize = 255;

// Points to earn or use. No doc comment: the OpenAPI contract shows this
// schema without a description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": 7, "amount": 500, "reason": "order 1042"}))]
pub struct PointsChange {
    /// The user.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// Points to add or take, 1 to 1,000,000,000.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub amount: i64,
    /// Why, up to 100 characters, no control characters (default `earn` or
    /// `use`).
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: Option<String>,
}

/// One change of a balance, as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PointsEntry {
    /// The user.
    pub user_id: i64,
    /// The account's version after this change (its place in the ledger).
    pub version: i64,
    /// Points added (positive) or taken (negative).
    pub delta: i64,
    /// The balance after this change.
    pub balance: i64,
    /// Why.
    pub reason: String,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// Whether this answers a repeated idempotency key (nothing changed).
    #[serde(skip)]
    pub replayed: bool,
}

/// A user's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Balance {
    /// The user.
    pub user_id: i64,
    /// Points held (0 for a user with no ledger).
    pub balance: i64,
    /// Changes so far.
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Earn,
    Use,
}

impl Promotions {
    /// Adds points to the user's balance. With `idempotency_key`, a repeat
    /// of the same change answers the first one's entry and changes
    /// nothing.
    pub async fn earn_points(
        &self,
        change: PointsChange,
        idempotency_key: Option<&str>,
    ) -> Result<PointsEntry, PromoError> {
        self.change_points(Operation::Earn, change, idempotency_key)
            .await
    }

    /// Takes points from the user's balance; a balance never goes below
    /// zero ([`PromoError::InsufficientPoints`], nothing written). With
    /// `idempotency_key`, as [`Promotions::earn_points`].
    pub async fn use_points(
        &self,
        change: PointsChange,
        idempotency_key: Option<&str>,
    ) -> Result<PointsEntry, PromoError> {
        self.change_points(Operation::Use, change, idempotency_key)
            .await
    }

    /// The user's balance, through the cache when it is on (every change
    /// invalidates it; with Redis every read asks Redis, so a read on any
    /// instance after a change sees the change).
    pub async fn balance(&self, user_id: i64) -> Result<Balance, PromoError> {
        check_user(user_id)?;
        let Some(cache) = &self.0.cache else {
            return account(self, user_id, caller::freshness().await).await;
        };
        let promotions = self.clone();
        cache
            .cache()
            .get_or_load(
                &cache.points_key(user_id),
                Options::new(cache.balance_class()),
                // A fill: as of now, so that no balance older than the
                // last change is cached, wherever it reads.
                move || async move {
                    account(&promotions, user_id, Freshness::NOW)
                        .await
                        .map(Some)
                },
            )
            .await
            .map_err(ServiceError::Cache)?
            .ok_or_else(|| ServiceError::Internal("a balance loaded as nothing".to_owned()).into())
    }

    async fn change_points(
        &self,
        operation: Operation,
        change: PointsChange,
        key: Option<&str>,
    ) -> Result<PointsEntry, PromoError> {
        check_user(change.user_id)?;
        if !(1..=MAX_AMOUNT).contains(&change.amount) {
            return Err(PromoError::invalid(
                "amount",
                format!("must be 1 to {MAX_AMOUNT}, got {}", change.amount),
            ));
        }
        let reason = match change.reason {
            Some(reason) => {
                if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control)
                {
                    return Err(PromoError::invalid(
                        "reason",
                        format!(
                            "must be at most {MAX_REASON_CHARS} characters, none a control character"
                        ),
                    ));
                }
                reason
            }
            None => match operation {
                Operation::Earn => "earn".to_owned(),
                Operation::Use => "use".to_owned(),
            },
        };
        if let Some(key) = key {
            check_key(key)?;
        }
        let delta = match operation {
            Operation::Earn => change.amount,
            Operation::Use => -change.amount,
        };
        let user_id = change.user_id;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                match operation {
                    Operation::Earn => self.0.earn_retries.inc(),
                    Operation::Use => self.0.use_retries.inc(),
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
            if let Some(key) = key
                && let Some(first) = self.ledger_entry(user_id, key).await?
            {
                if first.delta != delta || first.reason != reason {
                    return Err(PromoError::IdempotencyMismatch(format!(
                        "it changed user {user_id}'s points by {} for {:?}",
                        first.delta, first.reason
                    )));
                }
                self.db().wrote().await;
                return Ok(first);
            }
            let now = now_ms();
            let row = PointsRow {
                user_id,
                delta,
                reason: reason.clone(),
                key: key.map(str::to_owned),
                now,
            };
            match self
                .0
                .writers
                .points
                .write(row)
                .await
                .map_err(ServiceError::Database)?
            {
                PointsWritten::Applied { version, balance } => {
                    // The caller reads its change back (from a replica
                    // only once it has replayed it).
                    self.db().wrote().await;
                    if let Some(cache) = &self.0.cache
                        && let Err(error) =
                            cache.cache().invalidate(&cache.points_key(user_id)).await
                    {
                        tracing::warn!(%error, user_id, "a balance was dropped on this instance only");
                    }
                    return Ok(PointsEntry {
                        user_id,
                        version,
                        delta,
                        balance,
                        reason,
                        created_at: timestamp(now),
                        replayed: false,
                    });
                }
                PointsWritten::Lost => {}
                PointsWritten::Short { balance } => {
                    return Err(PromoError::InsufficientPoints {
                        user_id,
                        balance,
                        wanted: change.amount,
                    });
                }
                PointsWritten::Ceiling => {
                    return Err(PromoError::invalid(
                        "amount",
                        format!("would take the balance past {MAX_BALANCE}"),
                    ));
                }
            }
        }
        Err(PromoError::Contention { attempts: ATTEMPTS })
    }

    /// The entry `key` wrote for the user, if any.
    async fn ledger_entry(
        &self,
        user_id: i64,
        key: &str,
    ) -> Result<Option<PointsEntry>, PromoError> {
        const SQL: &str = "SELECT version, delta, balance_after, reason, created_at \
                           FROM point_ledger WHERE user_id = $1 AND idempotency_key = $2";
        let db = self.db();
        let row: Option<(i64, i64, i64, String, i64)> = sqlx::query_as(SQL)
            .bind(user_id)
            .bind(key.to_owned())
            .fetch_optional(&mut *db.acquire().await.map_err(PromoError::database)?)
            .timed(db, SQL)
            .await
            .map_err(PromoError::database)?;
        Ok(row.map(
            |(version, delta, balance, reason, created_at)| PointsEntry {
                user_id,
                version,
                delta,
                balance,
                reason,
                created_at: timestamp(created_at),
                replayed: true,
            },
        ))
    }
}

/// The account as the database holds it, read as fresh as `freshness`.
async fn account(
    promotions: &Promotions,
    user_id: i64,
    freshness: Freshness,
) -> Result<Balance, PromoError> {
    const SQL: &str = "SELECT balance, version FROM point_accounts WHERE user_id = $1";
    let db = promotions.db();
    let row: Option<(i64, i64)> = db
        .read(freshness, |connection| {
            let db = db.clone();
            Box::pin(async move {
                sqlx::query_as(SQL)
                    .bind(user_id)
                    .fetch_optional(connection)
                    .timed(&db, SQL)
                    .await
            })
        })
        .await
        .map_err(PromoError::database)?;
    let (balance, version) = row.unwrap_or((0, 0));
    Ok(Balance {
        user_id,
        balance,
        version,
    })
}

/// An idempotency key: 1 to 255 visible ASCII characters.
pub(crate) fn check_key(key: &str) -> Result<(), PromoError> {
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PromoError::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// The wait before try `attempt` (1, 2, …): half to all of 1, 2, 4, 8, then
/// 16 ms, so writers that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let ceiling_us = 1_000_u64 << attempt.saturating_sub(1).min(4);
    let mut byte = [0_u8; 2];
    let jitter = if getrandom::fill(&mut byte).is_ok() {
        u64::from(u16::from_le_bytes(byte))
    } else {
        u64::from(attempt) * 7_919
    };
    Duration::from_micros(ceiling_us / 2 + jitter % (ceiling_us / 2))
}
