//! Coupon campaigns: creating one, issuing its coupons, listing a user's.

use seawall_cache::{Class, Options};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::base::{Promotions, check_new, check_user, random_code};
use super::error::PromoError;
use super::pool::{Grant, PoolId, PoolKind, Take};
use super::writes::CouponRow;
use crate::ServiceError;
use crate::db::Timed as _;
use crate::db::caller;
use crate::db::replicas::Freshness;
use crate::json::{integer, optional_integer};
use crate::time::{now_ms, timestamp};

/// Issues a coupon tries before it gives up: each lost try found the
/// store behind the database (a unit or a user's count it had forgotten)
/// and corrected it.
const ISSUE_ATTEMPTS: usize = 4;
/// The most coupons a list shows, newest first.
const LIST_LIMIT: i64 = 100;

// A new coupon campaign. No doc comment: the OpenAPI contract shows this
// schema without a description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Black Friday", "quantity": 10000, "per_user": 1}))]
pub struct NewCampaign {
    /// What the campaign is called, 1 to 100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub name: String,
    /// Coupons to issue, 1 to 10,000,000.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub quantity: i64,
    /// Coupons one user may hold, 1 to 100 (default 1).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 100)]
    pub per_user: Option<i64>,
    /// When issuing opens, Unix ms (default now).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 0, maximum = 4_102_444_800_000_i64)]
    pub starts_at_ms: Option<i64>,
    /// How long it stays open, in ms: 1 to 3,650 days (default a day).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 315_360_000_000_i64)]
    pub duration_ms: Option<i64>,
}

/// A coupon campaign and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Campaign {
    /// The campaign.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Coupons it issues at most.
    pub quantity: i64,
    /// Coupons one user may hold.
    pub per_user: i64,
    /// When issuing opens (RFC 3339).
    pub starts_at: String,
    /// When issuing closes (RFC 3339).
    pub ends_at: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// An issued coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Coupon {
    /// The coupon's code, 12 characters.
    pub code: String,
    /// Its campaign.
    pub campaign_id: i64,
    /// Its holder.
    pub user_id: i64,
    /// Its number in the campaign, 1 to the quantity.
    pub number: i64,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
}

/// A user's coupons, newest first (at most 100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CouponList {
    /// The user.
    pub user_id: i64,
    /// The coupons.
    pub coupons: Vec<Coupon>,
}

/// What writing a granted coupon came to.
enum Written {
    Yes,
    /// The number is in the database already: the store went back.
    NumberTaken {
        next: i64,
    },
    /// The user holds `held` coupons in the database.
    UserHolds {
        held: i64,
    },
    /// Nothing explains the refusal (a code drawn twice): draw again.
    Retry,
}

impl Promotions {
    /// Creates a coupon campaign and loads its pool into the store.
    pub async fn create_campaign(&self, new: NewCampaign) -> Result<Campaign, PromoError> {
        let spec = check_new(
            &new.name,
            new.quantity,
            new.per_user,
            new.starts_at_ms,
            new.duration_ms,
            now_ms(),
        )?;
        let id = self.create_pool(PoolKind::Coupons, &spec).await?;
        Ok(Campaign {
            id,
            name: spec.name,
            quantity: spec.quantity,
            per_user: spec.per_user,
            starts_at: timestamp(spec.starts_at),
            ends_at: timestamp(spec.ends_at),
            created_at: timestamp(spec.created_at),
        })
    }

    /// Issues `user_id` a coupon of the campaign: the store decides, then
    /// the row is written; a refusal ([`PromoError::CouponsGone`],
    /// [`PromoError::AlreadyIssued`], [`PromoError::NotStarted`],
    /// [`PromoError::Ended`]) writes nothing, and a failed write gives the
    /// coupon back.
    pub async fn issue_coupon(&self, campaign_id: i64, user_id: i64) -> Result<Coupon, PromoError> {
        check_user(user_id)?;
        let (pool, spec) = self.pool(PoolKind::Coupons, campaign_id).await?;
        let pools = &self.0.pools;
        for _ in 0..ISSUE_ATTEMPTS {
            let code = random_code(12)?;
            let grant = match self.take(pool, user_id, &code, None).await? {
                Take::Taken(grant) => grant,
                Take::Gone => return Err(PromoError::CouponsGone(campaign_id)),
                Take::Limit { held } => {
                    return Err(PromoError::AlreadyIssued {
                        campaign_id,
                        user_id,
                        held,
                    });
                }
                take @ (Take::Early | Take::Ended) => {
                    return Err(self.window_error(pool, &take).await);
                }
                other => {
                    return Err(ServiceError::Internal(format!(
                        "a coupon pool answered {other:?} to an issue without a key"
                    ))
                    .into());
                }
            };
            let written = match self.write_coupon(campaign_id, spec.per_user, &grant).await {
                Ok(written) => written,
                Err(error) => {
                    self.give_back(pool, &grant, true).await;
                    return Err(error);
                }
            };
            match written {
                Written::Yes => {
                    self.db().wrote().await;
                    if let Some(cache) = &self.0.cache
                        && let Err(error) =
                            cache.cache().invalidate(&cache.coupons_key(user_id)).await
                    {
                        tracing::warn!(%error, user_id, "a user's coupon list was dropped on this instance only");
                    }
                    return Ok(Coupon {
                        code,
                        campaign_id,
                        user_id,
                        number: grant.unit,
                        issued_at: timestamp(grant.at_ms),
                    });
                }
                Written::NumberTaken { next } => {
                    self.give_back(pool, &grant, false).await;
                    pools.resync(pool, next).await.map_err(PromoError::Store)?;
                }
                Written::UserHolds { held } => {
                    self.give_back(pool, &grant, true).await;
                    if held >= spec.per_user {
                        return Err(PromoError::AlreadyIssued {
                            campaign_id,
                            user_id,
                            held,
                        });
                    }
                    pools
                        .hold(pool, user_id, held)
                        .await
                        .map_err(PromoError::Store)?;
                }
                Written::Retry => self.give_back(pool, &grant, true).await,
            }
        }
        Err(PromoError::Contention {
            attempts: u32::try_from(ISSUE_ATTEMPTS).unwrap_or(u32::MAX),
        })
    }

    /// Undoes a grant whose row was not written; a store failure leaves the
    /// unit out (never issued twice; the reconciliation counts it).
    async fn give_back(&self, pool: PoolId, grant: &Grant, free: bool) {
        if let Err(error) = self.0.pools.release(pool, &grant.id, None, free).await {
            tracing::warn!(%error, ?pool, unit = grant.unit, "a granted unit was not given back");
        }
    }

    /// Writes a granted coupon's row, unless the database refuses it.
    async fn write_coupon(
        &self,
        campaign_id: i64,
        per_user: i64,
        grant: &Grant,
    ) -> Result<Written, PromoError> {
        const WHY: &str = "SELECT \
             (SELECT COUNT(*) FROM coupons WHERE campaign_id = $1 AND number = $2), \
             (SELECT COUNT(*) FROM coupons WHERE campaign_id = $1 AND user_id = $3), \
             (SELECT COALESCE(MAX(number), 0) + 1 FROM coupons WHERE campaign_id = $1)";
        let db = self.db();
        let row = CouponRow {
            campaign_id,
            number: grant.unit,
            user_id: grant.user_id,
            nth: grant.nth,
            code: grant.id.clone(),
            issued_at: grant.at_ms,
        };
        let inserted = self
            .0
            .writers
            .coupons
            .write(row)
            .await
            .map_err(ServiceError::Database)?;
        if inserted == 1 {
            return Ok(Written::Yes);
        }
        let (number_taken, held, next): (i64, i64, i64) = sqlx::query_as(WHY)
            .bind(campaign_id)
            .bind(grant.unit)
            .bind(grant.user_id)
            .fetch_one(&mut *db.acquire().await.map_err(PromoError::database)?)
            .timed(db, WHY)
            .await
            .map_err(PromoError::database)?;
        Ok(if held >= per_user || (held > 0 && number_taken == 0) {
            Written::UserHolds { held }
        } else if number_taken > 0 {
            Written::NumberTaken { next }
        } else {
            // A code drawn twice, or a number past the quantity (the insert
            // checks it; the store never hands one out).
            Written::Retry
        })
    }

    /// A user's coupons, newest first, through the cache when it is on.
    pub async fn coupons(&self, user_id: i64) -> Result<CouponList, PromoError> {
        check_user(user_id)?;
        let Some(cache) = &self.0.cache else {
            return load_coupons(self.clone(), user_id, caller::freshness().await).await;
        };
        let promotions = self.clone();
        cache
            .cache()
            .get_or_load(
                &cache.coupons_key(user_id),
                Options::new(Class::API),
                // A fill: as of now, so that no list older than the last
                // coupon issued is cached, wherever it reads.
                move || async move {
                    load_coupons(promotions, user_id, Freshness::NOW)
                        .await
                        .map(Some)
                },
            )
            .await
            .map_err(ServiceError::Cache)?
            .ok_or_else(|| {
                ServiceError::Internal("a coupon list loaded as nothing".to_owned()).into()
            })
    }
}

/// The user's coupons, read as fresh as `freshness`.
async fn load_coupons(
    promotions: Promotions,
    user_id: i64,
    freshness: Freshness,
) -> Result<CouponList, PromoError> {
    const SQL: &str = "SELECT code, campaign_id, number, issued_at FROM coupons \
                       WHERE user_id = $1 ORDER BY issued_at DESC, campaign_id LIMIT $2";
    let db = promotions.db();
    let rows: Vec<(String, i64, i64, i64)> = db
        .read(freshness, |connection| {
            let db = db.clone();
            Box::pin(async move {
                sqlx::query_as(SQL)
                    .bind(user_id)
                    .bind(LIST_LIMIT)
                    .fetch_all(connection)
                    .timed(&db, SQL)
                    .await
            })
        })
        .await
        .map_err(PromoError::database)?;
    Ok(CouponList {
        user_id,
        coupons: rows
            .into_iter()
            .map(|(code, campaign_id, number, issued_at)| Coupon {
                code,
                campaign_id,
                user_id,
                number,
                issued_at: timestamp(issued_at),
            })
            .collect(),
    })
}
