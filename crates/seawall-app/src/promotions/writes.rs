//! The promotions' hot writes as group-commit jobs ([`crate::group`]): a
//! coupon's row, and a change of points (the account and its ledger entry).
//! On a SQLite file concurrent writes share one transaction; on PostgreSQL
//! each is atomic on its own in as few round trips as it can be.

use sqlx::AnyConnection;

use crate::db::{Backend, Db, Timed as _};
use crate::group::{GroupJob, GroupWriter, WriteFuture, in_transaction};

/// The most points one account holds.
pub const MAX_BALANCE: i64 = 1_000_000_000_000_000;

/// The writers the workload shares.
#[derive(Debug, Clone)]
pub(super) struct Writers {
    pub(super) coupons: GroupWriter<CouponRow>,
    pub(super) points: GroupWriter<PointsRow>,
}

impl Writers {
    pub(super) fn start(db: &Db) -> Self {
        Self {
            coupons: GroupWriter::start(db.clone()),
            points: GroupWriter::start(db.clone()),
        }
    }
}

/// A granted coupon's row. Answers the rows inserted: 0 when the
/// database refuses it (its number or its user's place is taken, or either
/// is past the campaign's limits).
#[derive(Debug, Clone)]
pub(super) struct CouponRow {
    pub(super) campaign_id: i64,
    pub(super) number: i64,
    pub(super) user_id: i64,
    pub(super) nth: i64,
    pub(super) code: String,
    pub(super) issued_at: i64,
}

impl GroupJob for CouponRow {
    type Output = u64;

    fn write<'c>(&'c self, connection: &'c mut AnyConnection, db: &'c Db) -> WriteFuture<'c, u64> {
        const INSERT: &str = "INSERT INTO coupons \
             (campaign_id, number, user_id, nth, code, issued_at) \
             SELECT id, $2, $3, $4, $5, $6 FROM coupon_campaigns \
             WHERE id = $1 AND $2 <= quantity AND $4 <= per_user \
             ON CONFLICT DO NOTHING";
        Box::pin(async move {
            let done = sqlx::query(INSERT)
                .bind(self.campaign_id)
                .bind(self.number)
                .bind(self.user_id)
                .bind(self.nth)
                .bind(self.code.clone())
                .bind(self.issued_at)
                .execute(connection)
                .timed(db, INSERT)
                .await?;
            Ok(done.rows_affected())
        })
    }

    /// One statement, atomic on its own: no transaction around it.
    fn write_alone<'a>(&'a self, db: &'a Db) -> WriteFuture<'a, u64> {
        Box::pin(async move {
            let mut connection = db.acquire_write().await?;
            self.write(&mut connection, db).await
        })
    }
}

/// A change of a user's points.
#[derive(Debug, Clone)]
pub(super) struct PointsRow {
    pub(super) user_id: i64,
    pub(super) delta: i64,
    pub(super) reason: String,
    pub(super) key: Option<String>,
    pub(super) now: i64,
}

/// What a change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PointsWritten {
    /// The account is at `version` with `balance`.
    Applied { version: i64, balance: i64 },
    /// Another change moved the account first, or used the key: try again.
    Lost,
    /// The balance is below what the change takes.
    Short { balance: i64 },
    /// The balance would pass [`MAX_BALANCE`].
    Ceiling,
}

impl GroupJob for PointsRow {
    type Output = PointsWritten;

    /// Reads the account, and moves it only if it is still at the version
    /// read (optimistic: on PostgreSQL a concurrent change makes the update
    /// miss; on SQLite writers take turns, so it never misses); the ledger
    /// entry is keyed by (user, version) and by the idempotency key. A
    /// refusal writes nothing.
    fn write<'c>(
        &'c self,
        connection: &'c mut AnyConnection,
        db: &'c Db,
    ) -> WriteFuture<'c, PointsWritten> {
        const READ: &str = "SELECT balance, version FROM point_accounts WHERE user_id = $1";
        const KEYED: &str =
            "SELECT COUNT(*) FROM point_ledger WHERE user_id = $1 AND idempotency_key = $2";
        const OPEN: &str = "INSERT INTO point_accounts (user_id, balance, version, updated_at) \
                            VALUES ($1, $2, 1, $3) ON CONFLICT DO NOTHING";
        const MOVE: &str = "UPDATE point_accounts SET balance = $2, version = $3, updated_at = $4 \
                            WHERE user_id = $1 AND version = $5";
        const ENTRY: &str = "INSERT INTO point_ledger \
             (user_id, version, delta, balance_after, reason, idempotency_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)";
        Box::pin(async move {
            if let Some(key) = &self.key {
                let used: i64 = sqlx::query_scalar(KEYED)
                    .bind(self.user_id)
                    .bind(key.clone())
                    .fetch_one(&mut *connection)
                    .timed(db, KEYED)
                    .await?;
                if used > 0 {
                    return Ok(PointsWritten::Lost);
                }
            }
            let current: Option<(i64, i64)> = sqlx::query_as(READ)
                .bind(self.user_id)
                .fetch_optional(&mut *connection)
                .timed(db, READ)
                .await?;
            let (balance, version) = current.unwrap_or((0, 0));
            let after = match self.balance_after(balance) {
                Ok(after) => after,
                Err(refused) => return Ok(refused),
            };
            let moved = if version == 0 {
                sqlx::query(OPEN)
                    .bind(self.user_id)
                    .bind(after)
                    .bind(self.now)
                    .execute(&mut *connection)
                    .timed(db, OPEN)
                    .await?
            } else {
                sqlx::query(MOVE)
                    .bind(self.user_id)
                    .bind(after)
                    .bind(version + 1)
                    .bind(self.now)
                    .bind(version)
                    .execute(&mut *connection)
                    .timed(db, MOVE)
                    .await?
            };
            if moved.rows_affected() == 0 {
                return Ok(PointsWritten::Lost);
            }
            // Unique by (user, version) and (user, key): an entry that
            // collides fails the statement, and the transaction with it.
            sqlx::query(ENTRY)
                .bind(self.user_id)
                .bind(version + 1)
                .bind(self.delta)
                .bind(after)
                .bind(self.reason.clone())
                .bind(self.key.clone())
                .bind(self.now)
                .execute(&mut *connection)
                .timed(db, ENTRY)
                .await?;
            Ok(PointsWritten::Applied {
                version: version + 1,
                balance: after,
            })
        })
    }

    /// On PostgreSQL, two round trips and no transaction: one read of the
    /// account and the key, then one statement that moves the account if
    /// it is still at the version read and writes the entry of that move
    /// (a statement is atomic on its own; the move's row lock makes a
    /// concurrent change of the account wait, then miss). The connection
    /// is held for those two statements only, not for a `BEGIN` and a
    /// `COMMIT` besides.
    fn write_alone<'a>(&'a self, db: &'a Db) -> WriteFuture<'a, PointsWritten> {
        const READ: &str = "SELECT a.balance, a.version, \
             (SELECT COUNT(*) FROM point_ledger WHERE user_id = $1 AND idempotency_key = $2) \
             FROM (SELECT 1) AS one LEFT JOIN point_accounts a ON a.user_id = $1";
        const OPEN: &str = "WITH opened AS (\
               INSERT INTO point_accounts (user_id, balance, version, updated_at) \
               VALUES ($1, $2, 1, $3) ON CONFLICT DO NOTHING RETURNING version) \
             INSERT INTO point_ledger \
             (user_id, version, delta, balance_after, reason, idempotency_key, created_at) \
             SELECT $1, version, $4, $2, $5, $6, $3 FROM opened";
        const MOVE: &str = "WITH moved AS (\
               UPDATE point_accounts SET balance = $2, version = version + 1, updated_at = $3 \
               WHERE user_id = $1 AND version = $7 RETURNING version) \
             INSERT INTO point_ledger \
             (user_id, version, delta, balance_after, reason, idempotency_key, created_at) \
             SELECT $1, version, $4, $2, $5, $6, $3 FROM moved";
        if db.backend() != Backend::Postgres {
            return Box::pin(in_transaction(self, db));
        }
        Box::pin(async move {
            let mut connection = db.acquire_write().await?;
            let (balance, version, used): (Option<i64>, Option<i64>, i64) = sqlx::query_as(READ)
                .bind(self.user_id)
                .bind(self.key.clone())
                .fetch_one(&mut *connection)
                .timed(db, READ)
                .await?;
            if used > 0 {
                return Ok(PointsWritten::Lost);
            }
            let (balance, version) = (balance.unwrap_or(0), version.unwrap_or(0));
            let after = match self.balance_after(balance) {
                Ok(after) => after,
                Err(refused) => return Ok(refused),
            };
            let statement = if version == 0 { OPEN } else { MOVE };
            let mut query = sqlx::query(statement)
                .bind(self.user_id)
                .bind(after)
                .bind(self.now)
                .bind(self.delta)
                .bind(self.reason.clone())
                .bind(self.key.clone());
            if version > 0 {
                query = query.bind(version);
            }
            let moved = query.execute(&mut *connection).timed(db, statement).await?;
            Ok(if moved.rows_affected() == 0 {
                PointsWritten::Lost
            } else {
                PointsWritten::Applied {
                    version: version + 1,
                    balance: after,
                }
            })
        })
    }
}

impl PointsRow {
    /// The balance after this change of `balance`, or why it is refused.
    fn balance_after(&self, balance: i64) -> Result<i64, PointsWritten> {
        match balance.checked_add(self.delta) {
            Some(after) if after > MAX_BALANCE => Err(PointsWritten::Ceiling),
            Some(after) if after < 0 => Err(PointsWritten::Short { balance }),
            Some(after) => Ok(after),
            None => Err(PointsWritten::Ceiling),
        }
    }
}
