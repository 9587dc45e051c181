//! Where campaigns and sales stand, the invariants checked against the
//! database and the store, and the reconciliation health check.

use async_trait::async_trait;
use seawall_perfmon::{CheckResult, HealthCheck, HealthStatus};
use serde::Serialize;
use utoipa::ToSchema;

use super::base::Promotions;
use super::error::PromoError;
use super::pool::{PoolId, PoolKind, PoolStatus};
use crate::ServiceError;
use crate::config::QueueName;
use crate::db::Timed as _;
use crate::time::{now_ms, timestamp};

/// The most campaigns or sales a listing shows, newest first.
const LIST_LIMIT: i64 = 50;
/// Sales the reconciliation check looks at: those open or closed within
/// this long.
const RECONCILE_AFTER_END_MS: i64 = crate::time::DAY_MS;

/// A coupon campaign and where it stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CampaignStanding {
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
    /// Coupons handed out by the store (the database's count when the
    /// store does not hold the campaign).
    pub issued: i64,
    /// Coupons left.
    pub remaining: i64,
    /// Coupon rows in the database.
    pub written: i64,
}

/// A time sale and where it stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SaleStanding {
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
    /// Units reserved by the store (the database's count when the store
    /// does not hold the sale).
    pub sold: i64,
    /// Units left.
    pub remaining: i64,
    /// Orders the store acknowledged.
    pub acknowledged: i64,
    /// Order rows in the database.
    pub written: i64,
}

/// The promotions' invariants, counted in the database and the store. Every
/// count named as a fault is 0 when all holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Audit {
    /// Coupon campaigns.
    pub campaigns: i64,
    /// Coupon rows.
    pub coupons: i64,
    /// Fault: coupons beyond their campaign's quantity.
    pub over_issued_coupons: i64,
    /// Fault: coupons beyond the per-user limit of their campaign.
    pub duplicate_coupons: i64,
    /// Point accounts.
    pub point_accounts: i64,
    /// Ledger entries.
    pub ledger_entries: i64,
    /// Fault: accounts whose balance is not the sum of their ledger, or
    /// whose version is not its length (and ledgers without an account).
    pub ledger_mismatches: i64,
    /// Fault: balances, or balances after an entry, below zero.
    pub negative_balances: i64,
    /// Time sales.
    pub sales: i64,
    /// Units the store reserved, over every sale it holds.
    pub sold: i64,
    /// Orders the store acknowledged.
    pub orders_acknowledged: i64,
    /// Order rows.
    pub orders_written: i64,
    /// Order jobs waiting, delayed or running: acknowledged orders on their
    /// way to the database.
    pub orders_queued: i64,
    /// Fault: units sold beyond a sale's stock (store or rows).
    pub oversold: i64,
    /// Fault: acknowledged orders neither written nor queued.
    pub lost_orders: i64,
    /// Fault: order rows beyond the acknowledged orders or the per-user
    /// limit.
    pub duplicate_orders: i64,
    /// Fault: units the store reserved with no acknowledged order.
    pub unaccounted_units: i64,
}

impl Audit {
    /// The faults, by name, with their counts.
    pub fn faults(&self) -> [(&'static str, i64); 8] {
        [
            ("over-issued coupons", self.over_issued_coupons),
            ("duplicate coupons", self.duplicate_coupons),
            ("ledger mismatches", self.ledger_mismatches),
            ("negative balances", self.negative_balances),
            ("oversold", self.oversold),
            ("lost orders", self.lost_orders),
            ("duplicate orders", self.duplicate_orders),
            ("unaccounted units", self.unaccounted_units),
        ]
    }

    /// Whether every invariant holds.
    pub fn holds(&self) -> bool {
        self.faults().iter().all(|(_, count)| *count == 0)
    }
}

type SaleRow = (i64, i64, String, i64, i64, i64, i64);
/// A campaign's row and its coupon rows' count.
type CampaignRow = (i64, i64, String, i64, i64, i64, i64, i64);

impl Promotions {
    /// The newest campaigns (at most 50) and where each stands.
    pub async fn campaigns(&self) -> Result<Vec<CampaignStanding>, PromoError> {
        const SQL: &str = "SELECT c.id, c.salt, c.name, c.quantity, c.per_user, c.starts_at, \
             c.ends_at, (SELECT COUNT(*) FROM coupons WHERE campaign_id = c.id) \
             FROM coupon_campaigns c ORDER BY c.id DESC LIMIT $1";
        let db = self.db();
        let rows: Vec<CampaignRow> = sqlx::query_as(SQL)
            .bind(LIST_LIMIT)
            .fetch_all(&mut *db.acquire().await.map_err(PromoError::database)?)
            .timed(db, SQL)
            .await
            .map_err(PromoError::database)?;
        let mut standings = Vec::with_capacity(rows.len());
        for (id, salt, name, quantity, per_user, starts_at, ends_at, written) in rows {
            let pool = PoolId {
                kind: PoolKind::Coupons,
                id,
                salt,
            };
            let issued = self
                .pool_status(pool)
                .await?
                .map_or(written, |status| status.taken);
            standings.push(CampaignStanding {
                id,
                name,
                quantity,
                per_user,
                starts_at: timestamp(starts_at),
                ends_at: timestamp(ends_at),
                issued,
                remaining: (quantity - issued).max(0),
                written,
            });
        }
        Ok(standings)
    }

    /// The newest sales (at most 50) and where each stands.
    pub async fn sales(&self) -> Result<Vec<SaleStanding>, PromoError> {
        const SQL: &str = "SELECT id, salt, name, stock, per_user, starts_at, ends_at \
                           FROM time_sales ORDER BY id DESC LIMIT $1";
        let rows = self.sale_rows(SQL, LIST_LIMIT).await?;
        let mut standings = Vec::with_capacity(rows.len());
        for row in rows {
            standings.push(self.sale_standing(row).await?);
        }
        Ok(standings)
    }

    async fn sale_rows(&self, sql: &'static str, bind: i64) -> Result<Vec<SaleRow>, PromoError> {
        let db = self.db();
        sqlx::query_as(sql)
            .bind(bind)
            .fetch_all(&mut *db.acquire().await.map_err(PromoError::database)?)
            .timed(db, sql)
            .await
            .map_err(PromoError::database)
    }

    async fn sale_standing(&self, row: SaleRow) -> Result<SaleStanding, PromoError> {
        const WRITTEN: &str = "SELECT COUNT(*) FROM sale_orders WHERE sale_id = $1";
        let (id, salt, name, stock, per_user, starts_at, ends_at) = row;
        let db = self.db();
        let written: i64 = sqlx::query_scalar(WRITTEN)
            .bind(id)
            .fetch_one(&mut *db.acquire().await.map_err(PromoError::database)?)
            .timed(db, WRITTEN)
            .await
            .map_err(PromoError::database)?;
        let pool = PoolId {
            kind: PoolKind::Stock,
            id,
            salt,
        };
        let status = self.pool_status(pool).await?;
        let (sold, acknowledged) =
            status.map_or((written, written), |status| (status.taken, status.grants));
        Ok(SaleStanding {
            id,
            name,
            stock,
            per_user,
            starts_at: timestamp(starts_at),
            ends_at: timestamp(ends_at),
            sold,
            remaining: (stock - sold).max(0),
            acknowledged,
            written,
        })
    }

    async fn pool_status(&self, pool: PoolId) -> Result<Option<PoolStatus>, PromoError> {
        self.0.pools.status(pool).await.map_err(PromoError::Store)
    }

    /// Order jobs on their way: waiting, delayed or running.
    pub(super) async fn orders_queued(&self) -> Result<i64, PromoError> {
        // Just after start the queues may still be connecting: give them
        // a moment rather than fail the count.
        let queues =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.0.queues.connected())
                .await
                .map_err(|_| ServiceError::QueuesConnecting)?;
        let counts = queues
            .counts(QueueName::Order.as_str())
            .await
            .map_err(ServiceError::Queue)?;
        Ok(i64::try_from(counts.waiting + counts.delayed + counts.active).unwrap_or(i64::MAX))
    }

    /// Counts every invariant of the workload in the database and the
    /// store, over every campaign, account and sale.
    pub async fn audit(&self) -> Result<Audit, PromoError> {
        const COUPONS: &str = "SELECT \
             (SELECT COUNT(*) FROM coupon_campaigns), \
             (SELECT COUNT(*) FROM coupons), \
             (SELECT CAST(COALESCE(SUM(n - q), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n, MAX(cc.quantity) AS q \
                 FROM coupons c JOIN coupon_campaigns cc ON cc.id = c.campaign_id \
                 GROUP BY c.campaign_id) AS per_campaign WHERE n > q), \
             (SELECT CAST(COALESCE(SUM(n - p), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n, MAX(cc.per_user) AS p \
                 FROM coupons c JOIN coupon_campaigns cc ON cc.id = c.campaign_id \
                 GROUP BY c.campaign_id, c.user_id) AS per_user WHERE n > p)";
        const POINTS: &str = "SELECT \
             (SELECT COUNT(*) FROM point_accounts), \
             (SELECT COUNT(*) FROM point_ledger), \
             (SELECT COUNT(*) FROM point_accounts a LEFT JOIN \
                 (SELECT user_id, SUM(delta) AS total, COUNT(*) AS entries \
                  FROM point_ledger GROUP BY user_id) l ON l.user_id = a.user_id \
                 WHERE l.user_id IS NULL OR l.total <> a.balance OR l.entries <> a.version) \
             + (SELECT COUNT(DISTINCT l.user_id) FROM point_ledger l WHERE NOT EXISTS \
                 (SELECT 1 FROM point_accounts a WHERE a.user_id = l.user_id)), \
             (SELECT COUNT(*) FROM point_accounts WHERE balance < 0) \
             + (SELECT COUNT(*) FROM point_ledger WHERE balance_after < 0)";
        const ORDERS: &str = "SELECT \
             (SELECT CAST(COALESCE(SUM(n - p), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n, MAX(s.per_user) AS p \
                 FROM sale_orders o JOIN time_sales s ON s.id = o.sale_id \
                 GROUP BY o.sale_id, o.user_id) AS per_user WHERE n > p)";
        const SALES: &str = "SELECT id, salt, name, stock, per_user, starts_at, ends_at \
                             FROM time_sales WHERE id > $1 ORDER BY id";
        let db = self.db();
        let mut connection = db.acquire().await.map_err(PromoError::database)?;
        let (campaigns, coupons, over_issued_coupons, duplicate_coupons): (i64, i64, i64, i64) =
            sqlx::query_as(COUPONS)
                .fetch_one(&mut *connection)
                .timed(db, COUPONS)
                .await
                .map_err(PromoError::database)?;
        let (point_accounts, ledger_entries, ledger_mismatches, negative_balances): (
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(POINTS)
            .fetch_one(&mut *connection)
            .timed(db, POINTS)
            .await
            .map_err(PromoError::database)?;
        let over_limit_orders: i64 = sqlx::query_scalar(ORDERS)
            .fetch_one(&mut *connection)
            .timed(db, ORDERS)
            .await
            .map_err(PromoError::database)?;
        drop(connection);
        let orders_queued = self.orders_queued().await?;
        let mut audit = Audit {
            campaigns,
            coupons,
            over_issued_coupons,
            duplicate_coupons,
            point_accounts,
            ledger_entries,
            ledger_mismatches,
            negative_balances,
            orders_queued,
            duplicate_orders: over_limit_orders,
            ..Audit::default()
        };
        let mut unexplained = 0;
        for row in self.sale_rows(SALES, 0).await? {
            let stock = row.3;
            let standing = self.sale_standing(row).await?;
            audit.sales += 1;
            audit.sold += standing.sold;
            audit.orders_acknowledged += standing.acknowledged;
            audit.orders_written += standing.written;
            audit.oversold += (standing.sold - stock).max(0) + (standing.written - stock).max(0);
            audit.duplicate_orders += (standing.written - standing.acknowledged).max(0);
            audit.unaccounted_units += (standing.sold - standing.acknowledged).abs();
            unexplained += (standing.acknowledged - standing.written).max(0);
        }
        audit.lost_orders = (unexplained - orders_queued).max(0);
        Ok(audit)
    }

    /// The health check that reconciles the sales open now or closed within
    /// a day: store stock, acknowledged orders, queued jobs and order rows.
    pub fn reconciliation_check(&self) -> ReconciliationCheck {
        ReconciliationCheck(self.clone())
    }

    async fn reconcile(&self) -> Result<(Vec<String>, bool), PromoError> {
        const SQL: &str = "SELECT id, salt, name, stock, per_user, starts_at, ends_at \
                           FROM time_sales WHERE ends_at > $1 ORDER BY id DESC LIMIT 20";
        let rows = self
            .sale_rows(SQL, now_ms().saturating_sub(RECONCILE_AFTER_END_MS))
            .await?;
        if rows.is_empty() {
            return Ok((Vec::new(), true));
        }
        let queued = self.orders_queued().await?;
        let mut lines = Vec::with_capacity(rows.len());
        let mut unexplained = 0;
        let mut consistent = true;
        for row in rows {
            let stock = row.3;
            let sale = self.sale_standing(row).await?;
            if sale.sold > stock || sale.written > stock || sale.sold != sale.acknowledged {
                consistent = false;
            }
            if sale.written > sale.acknowledged {
                consistent = false;
            }
            unexplained += (sale.acknowledged - sale.written).max(0);
            lines.push(format!(
                "sale {}: stock {stock}, sold {}, acknowledged {}, written {}",
                sale.id, sale.sold, sale.acknowledged, sale.written
            ));
        }
        if unexplained > queued {
            consistent = false;
        }
        lines.push(format!("order jobs queued {queued}"));
        Ok((lines, consistent))
    }
}

/// `promotions:reconciliation` in the health report: passes when every
/// recent sale's store stock, acknowledged orders and order rows agree
/// (acknowledged orders not yet written are covered by queued jobs); warns
/// with the figures otherwise, or when the store or database cannot be
/// read.
#[derive(Debug, Clone)]
pub struct ReconciliationCheck(Promotions);

#[async_trait]
impl HealthCheck for ReconciliationCheck {
    fn key(&self) -> String {
        "promotions:reconciliation".to_owned()
    }

    async fn check(&self) -> CheckResult {
        let result = match self.0.reconcile().await {
            Ok((lines, true)) if lines.is_empty() => {
                CheckResult::pass().output("no recent time sale")
            }
            Ok((lines, true)) => CheckResult::pass().output(lines.join("; ")),
            Ok((lines, false)) => CheckResult::with_status(HealthStatus::Degraded)
                .output(format!("the figures disagree: {}", lines.join("; "))),
            Err(error) => CheckResult::with_status(HealthStatus::Degraded)
                .output(format!("not reconciled: {}", crate::error_chain(&error))),
        };
        result.component_type("component")
    }
}
