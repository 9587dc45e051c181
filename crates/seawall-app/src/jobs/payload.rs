//! What a job of each queue carries, and the rules a payload must follow
//! before it is enqueued: a payload that breaks one is refused (422 at the
//! API) and nothing is enqueued.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::QueueName;
use crate::json::integer;
use crate::reviews::{MAX_INTERVAL_DAYS, Review, SchedulePoint};

/// The longest notification message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// The longest report or analytics period, in days.
pub const MAX_PERIOD_DAYS: i64 = 365;
/// The longest file name of an export or import.
const MAX_FILE_NAME: usize = 128;
/// The longest review id of a write-behind review.
const MAX_REVIEW_ID: usize = 64;

/// A mail to a user, written to the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailJob {
    /// The recipient.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// Which mail.
    pub template: EmailTemplate,
}

/// The mails there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmailTemplate {
    /// A greeting for a new learner.
    Welcome,
    /// How many reviews are due now.
    Reminder,
    /// The last week's reviews.
    Digest,
}

/// A learner's review report over the last `days` days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportJob {
    /// The learner.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// The period, 1 to 365 days.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 365)]
    pub days: i64,
}

/// Work on review schedules. Fields a variant does not have are ignored
/// (and not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleJob {
    /// Recompute every due time of a learner from their last review and
    /// interval, repairing any that drifted.
    Recompute {
        /// The learner.
        #[serde(deserialize_with = "integer")]
        #[schema(minimum = 1)]
        user_id: i64,
    },
    /// Write a review completed behind the cache: its history row and its
    /// schedule, once however often the job runs.
    Review(ReviewWrite),
}

/// A completed review and the schedule it leads to, as the API computed
/// them when it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewWrite {
    /// Unique per review: a replayed job finds it applied and does nothing.
    #[schema(pattern = "^[A-Za-z0-9-]{1,64}$")]
    pub review_id: String,
    /// The learner.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// The content reviewed.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub content_id: i64,
    /// SM-2 quality, 0 to 5.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0, maximum = 5)]
    pub rating: i64,
    /// Time spent, in milliseconds.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0)]
    pub duration_ms: i64,
    /// When the review was completed (Unix ms).
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0)]
    pub at_ms: i64,
    /// The next interval, in days.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 36500)]
    pub interval_days: i64,
    /// The next ease factor, in thousandths.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1300, maximum = 10000)]
    pub ease_permille: i64,
    /// Successful repetitions in a row.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0)]
    pub repetitions: i64,
}

/// A notification handed to a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationJob {
    /// The recipient.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// Where it goes.
    pub channel: Channel,
    /// What it says, 1 to 500 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub message: String,
}

/// The notification channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A push notification.
    Push,
    /// A text message.
    Sms,
    /// The app's own inbox.
    InApp,
}

impl Channel {
    /// The channel's name, as the payload spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Sms => "sms",
            Self::InApp => "in_app",
        }
    }
}

/// Refresh the daily statistics of the last `days` days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsJob {
    /// The period, 1 to 365 days.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 365)]
    pub days: i64,
}

/// A consistent snapshot of the database, written as JSON lines to
/// `backups/` under the files directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupJob {}

/// A table written as CSV to `exports/<file>` under the files directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportJob {
    /// Which table.
    pub table: ExportTable,
    /// The file name: letters, digits, `.`, `_` and `-`, not starting with
    /// a dot.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    pub file: String,
}

/// The tables that can be exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportTable {
    /// Learners.
    Users,
    /// Contents.
    Contents,
    /// Review schedules.
    ReviewSchedules,
    /// Review history.
    ReviewHistory,
}

impl ExportTable {
    /// The table's name, as the payload spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Contents => "contents",
            Self::ReviewSchedules => "review_schedules",
            Self::ReviewHistory => "review_history",
        }
    }

    /// The queries that count and read the table.
    pub fn queries(self) -> (&'static str, &'static str) {
        match self {
            Self::Users => (
                "SELECT COUNT(*) FROM users",
                "SELECT * FROM users ORDER BY id",
            ),
            Self::Contents => (
                "SELECT COUNT(*) FROM contents",
                "SELECT * FROM contents ORDER BY id",
            ),
            Self::ReviewSchedules => (
                "SELECT COUNT(*) FROM review_schedules",
                "SELECT * FROM review_schedules ORDER BY user_id, content_id",
            ),
            Self::ReviewHistory => (
                "SELECT COUNT(*) FROM review_history",
                "SELECT * FROM review_history ORDER BY user_id, reviewed_at",
            ),
        }
    }
}

/// Contents read from the CSV file `imports/<file>` under the files
/// directory (header `id,title,category,difficulty`), in batches: good rows
/// are inserted or updated, bad rows reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportJob {
    /// The file name, as for exports.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    pub file: String,
}

/// A time-sale order the service acknowledged: write its row (once per
/// order id, however often the job runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderJob {
    /// The order's id, as acknowledged: 1 to 64 letters or digits.
    #[schema(pattern = "^[A-Za-z0-9]{1,64}$")]
    pub order_id: String,
    /// The sale.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub sale_id: i64,
    /// The unit reserved for it, 1 to the sale's stock.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub unit: i64,
    /// The buyer.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// The buyer's first, second, … order of the sale.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub nth: i64,
    /// When it was acknowledged (Unix ms).
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0)]
    pub ordered_at_ms: i64,
}

impl OrderJob {
    /// The rules an order job follows.
    pub fn check(&self) -> Result<(), Refused> {
        if self.order_id.is_empty()
            || self.order_id.len() > 64
            || !self.order_id.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(Refused::new(
                "order_id",
                "must be 1 to 64 letters or digits",
            ));
        }
        positive("sale_id", self.sale_id)?;
        positive("unit", self.unit)?;
        positive("user_id", self.user_id)?;
        positive("nth", self.nth)?;
        if self.ordered_at_ms < 0 {
            return Err(Refused::new("ordered_at_ms", "must not be negative"));
        }
        Ok(())
    }
}

/// Why a payload is refused: the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The field at fault.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Refused {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn positive(field: &str, value: i64) -> Result<(), Refused> {
    if value < 1 {
        return Err(Refused::new(field, "must be a positive integer"));
    }
    Ok(())
}

fn period(days: i64) -> Result<(), Refused> {
    if !(1..=MAX_PERIOD_DAYS).contains(&days) {
        return Err(Refused::new(
            "days",
            format!("must be 1 to {MAX_PERIOD_DAYS}, got {days}"),
        ));
    }
    Ok(())
}

/// A plain file name: no directory, no leading dot, nothing a shell or a
/// path could read twice.
pub fn file_name(name: &str) -> Result<(), Refused> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > MAX_FILE_NAME
        || name.starts_with('.')
        || !name.chars().all(allowed)
    {
        return Err(Refused::new(
            "file",
            format!(
                "must be a file name of 1 to {MAX_FILE_NAME} letters, digits, '.', '_' or '-', not starting with '.'"
            ),
        ));
    }
    Ok(())
}

impl ReviewWrite {
    /// The review, and the schedule it moves to.
    pub(crate) fn split(&self) -> (Review, SchedulePoint) {
        let review = Review {
            user_id: self.user_id,
            content_id: self.content_id,
            rating: self.rating,
            duration_ms: self.duration_ms,
            at_ms: self.at_ms,
        };
        let next = SchedulePoint {
            interval_days: self.interval_days,
            ease_permille: self.ease_permille,
            repetitions: self.repetitions,
        };
        (review, next)
    }

    /// The rules a review written behind the cache must follow.
    pub fn check(&self) -> Result<(), Refused> {
        let id_ok = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if self.review_id.is_empty()
            || self.review_id.len() > MAX_REVIEW_ID
            || !self.review_id.chars().all(id_ok)
        {
            return Err(Refused::new(
                "review_id",
                format!("must be 1 to {MAX_REVIEW_ID} letters, digits or '-'"),
            ));
        }
        positive("user_id", self.user_id)?;
        positive("content_id", self.content_id)?;
        if !(0..=5).contains(&self.rating) {
            return Err(Refused::new("rating", "must be between 0 and 5"));
        }
        if self.duration_ms < 0 || self.at_ms < 0 {
            return Err(Refused::new(
                "duration_ms",
                "duration_ms and at_ms must not be negative",
            ));
        }
        if !(1..=MAX_INTERVAL_DAYS).contains(&self.interval_days) {
            return Err(Refused::new(
                "interval_days",
                format!("must be 1 to {MAX_INTERVAL_DAYS}"),
            ));
        }
        if self.ease_permille < 1300 || self.ease_permille > 10_000 {
            return Err(Refused::new("ease_permille", "must be 1300 to 10000"));
        }
        if self.repetitions < 0 {
            return Err(Refused::new("repetitions", "must not be negative"));
        }
        Ok(())
    }
}

/// Reads `payload` as a job of `queue` and checks its rules; answers the
/// payload as it will be stored (integers written as such: JSON Schema
/// counts `7.0` as an integer, and so does the contract).
pub fn validate(
    queue: QueueName,
    payload: serde_json::Value,
) -> Result<serde_json::Value, Refused> {
    fn read<T: serde::de::DeserializeOwned>(payload: serde_json::Value) -> Result<T, Refused> {
        serde_json::from_value(payload).map_err(|error| Refused::new("payload", error.to_string()))
    }
    fn stored<T: Serialize>(job: &T) -> Result<serde_json::Value, Refused> {
        serde_json::to_value(job).map_err(|error| Refused::new("payload", error.to_string()))
    }
    // serde reads a struct from an array too.
    if !payload.is_object() {
        return Err(Refused::new("payload", "must be a JSON object"));
    }
    match queue {
        QueueName::Email => {
            let job: EmailJob = read(payload)?;
            positive("user_id", job.user_id)?;
            stored(&job)
        }
        QueueName::Report => {
            let job: ReportJob = read(payload)?;
            positive("user_id", job.user_id)?;
            period(job.days)?;
            stored(&job)
        }
        QueueName::Schedule => {
            let job: ScheduleJob = read(payload)?;
            match &job {
                ScheduleJob::Recompute { user_id } => positive("user_id", *user_id)?,
                ScheduleJob::Review(review) => review.check()?,
            }
            stored(&job)
        }
        QueueName::Notification => {
            let job: NotificationJob = read(payload)?;
            positive("user_id", job.user_id)?;
            let chars = job.message.chars().count();
            if chars == 0 || chars > MAX_MESSAGE_CHARS || job.message.chars().any(char::is_control)
            {
                return Err(Refused::new(
                    "message",
                    format!(
                        "must be 1 to {MAX_MESSAGE_CHARS} characters without control characters"
                    ),
                ));
            }
            stored(&job)
        }
        QueueName::Analytics => {
            let job: AnalyticsJob = read(payload)?;
            period(job.days)?;
            stored(&job)
        }
        QueueName::Backup => stored(&read::<BackupJob>(payload)?),
        QueueName::Export => {
            let job: ExportJob = read(payload)?;
            file_name(&job.file)?;
            stored(&job)
        }
        QueueName::Import => {
            let job: ImportJob = read(payload)?;
            file_name(&job.file)?;
            stored(&job)
        }
        QueueName::Order => {
            let job: OrderJob = read(payload)?;
            job.check()?;
            stored(&job)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn good_payloads_of_every_queue_pass() {
        for (queue, payload) in [
            (
                QueueName::Email,
                json!({"user_id": 1, "template": "welcome"}),
            ),
            (QueueName::Report, json!({"user_id": 1, "days": 30})),
            (
                QueueName::Schedule,
                json!({"kind": "recompute", "user_id": 3}),
            ),
            (
                QueueName::Schedule,
                json!({"kind": "review", "review_id": "a1-b2", "user_id": 1, "content_id": 2,
                       "rating": 4, "duration_ms": 900, "at_ms": 1, "interval_days": 6,
                       "ease_permille": 2500, "repetitions": 2}),
            ),
            (
                QueueName::Notification,
                json!({"user_id": 1, "channel": "in_app", "message": "hi"}),
            ),
            (QueueName::Analytics, json!({"days": 7})),
            (QueueName::Backup, json!({})),
            (
                QueueName::Export,
                json!({"table": "review_history", "file": "history-1.csv"}),
            ),
            (QueueName::Import, json!({"file": "contents.csv"})),
        ] {
            assert_eq!(validate(queue, payload.clone()), Ok(payload), "{queue}");
        }
    }

    #[test]
    fn integral_floats_are_stored_as_integers() {
        let stored = validate(QueueName::Report, json!({"user_id": 7.0, "days": 30.0}));
        assert_eq!(stored, Ok(json!({"user_id": 7, "days": 30})));
    }

    #[test]
    fn bad_payloads_name_the_field() {
        for (queue, payload, field) in [
            (
                QueueName::Email,
                json!({"user_id": 0, "template": "welcome"}),
                "user_id",
            ),
            (
                QueueName::Email,
                json!({"user_id": 1, "template": "spam"}),
                "payload",
            ),
            (
                QueueName::Email,
                json!({"user_id": 1, "template": "welcome", "x": 1}),
                "payload",
            ),
            (QueueName::Report, json!({"user_id": 1, "days": 0}), "days"),
            (
                QueueName::Report,
                json!({"user_id": 1.5, "days": 3}),
                "payload",
            ),
            (QueueName::Schedule, json!({"kind": "explode"}), "payload"),
            (
                QueueName::Notification,
                json!({"user_id": 1, "channel": "sms", "message": ""}),
                "message",
            ),
            (QueueName::Analytics, json!({"days": 366}), "days"),
            (QueueName::Backup, json!({"full": true}), "payload"),
            (QueueName::Backup, json!([]), "payload"),
            (
                QueueName::Export,
                json!({"table": "users", "file": "../etc/passwd"}),
                "file",
            ),
            (
                QueueName::Export,
                json!({"table": "secrets", "file": "a.csv"}),
                "payload",
            ),
            (QueueName::Import, json!({"file": ".hidden"}), "file"),
            (QueueName::Import, json!("contents.csv"), "payload"),
        ] {
            let refused = validate(queue, payload.clone()).expect_err(&payload.to_string());
            assert_eq!(refused.field, field, "{queue} {payload}: {refused}");
        }
    }
}
