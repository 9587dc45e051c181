//! The job queues' settings: which queues there are, and for each how many
//! jobs run at once, how often a job is tried, how long it waits between
//! tries and how long one try may take.
//!
//! A policy is written as `key=value` words, any of them left out:
//!
//! ```text
//! concurrency=8 attempts=5 backoff=2s..10m timeout=30s
//! ```
//!
//! `adaptive=on` makes `concurrency` the most jobs run at once: the number
//! follows a limit found from the runs' latency, as the API's in-flight
//! limit is, so a downstream that slows (a mail server, the database) gets
//! fewer jobs at once instead of runs that outlast their leases.
//!
//! `backoff` is `BASE..CAP` (exponential, doubling from `BASE` up to `CAP`,
//! with full jitter) or `fixed:DELAY`. A key left out takes that queue's
//! default, whichever layer (file, environment, flag) the text comes from.
//!
//! A recurring job's schedule ([`Recurring`]) is one of
//!
//! ```text
//! off
//! every 1h
//! cron 30 2 * * * Europe/Berlin
//! ```
//!
//! `every` takes a humantime duration from 1s to 1day, whose ticks fall on
//! its whole multiples since the Unix epoch (`every 1h` on the hour, UTC);
//! `cron` takes five cron fields (minute, hour, day of month, month, day of
//! week), or six with seconds first, then an IANA time zone as its last
//! word.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The nine queues the worker runs processors for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueName {
    /// Mail to users, written to the outbox table.
    Email,
    /// A learner's review report, aggregated from their history.
    Report,
    /// Review schedules: recomputed, or a completed review written behind.
    Schedule,
    /// Deliveries of notifications, recorded per channel.
    Notification,
    /// The daily statistics, refreshed; the cached stats are invalidated.
    Analytics,
    /// A consistent snapshot of the database, written to a file.
    Backup,
    /// A table written out as CSV.
    Export,
    /// Contents read from a CSV file, in batches.
    Import,
    /// Time-sale orders the service acknowledged, written to the database.
    Order,
}

impl QueueName {
    /// Every queue, in the order settings and the dashboard list them.
    pub const ALL: [Self; 9] = [
        Self::Email,
        Self::Report,
        Self::Schedule,
        Self::Notification,
        Self::Analytics,
        Self::Backup,
        Self::Export,
        Self::Import,
        Self::Order,
    ];

    /// The queue's name, as in Redis keys, URLs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Report => "report",
            Self::Schedule => "schedule",
            Self::Notification => "notification",
            Self::Analytics => "analytics",
            Self::Backup => "backup",
            Self::Export => "export",
            Self::Import => "import",
            Self::Order => "order",
        }
    }

    /// The queue a name names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|queue| queue.as_str() == name)
    }

    /// The queue's policy when nothing is configured.
    pub fn default_policy(self) -> QueuePolicy {
        let exponential = |base_ms, cap_secs| RetryBackoff::Exponential {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_secs(cap_secs),
        };
        let fixed = |secs| RetryBackoff::Fixed(Duration::from_secs(secs));
        let (concurrency, attempts, backoff, timeout_secs) = match self {
            Self::Email => (8, 5, exponential(2_000, 600), 30),
            Self::Report => (2, 3, exponential(10_000, 600), 300),
            Self::Schedule => (8, 10, exponential(500, 60), 30),
            Self::Notification => (8, 5, exponential(1_000, 300), 30),
            Self::Analytics => (1, 3, fixed(30), 300),
            Self::Backup => (1, 2, fixed(60), 1_800),
            Self::Export => (2, 3, exponential(5_000, 300), 600),
            Self::Import => (1, 3, exponential(5_000, 300), 600),
            // An acknowledged order must reach the database: many tries,
            // none waiting longer than a minute.
            Self::Order => (16, 100, exponential(200, 60), 30),
        };
        QueuePolicy {
            concurrency,
            adaptive: false,
            attempts,
            backoff,
            timeout: Duration::from_secs(timeout_secs),
            backlog: seawall_queue::DEFAULT_BACKLOG_BOUND,
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most jobs of one queue a process runs at once.
pub const MAX_CONCURRENCY: usize = 256;
/// The most tries of one job.
pub const MAX_ATTEMPTS: u32 = 100;
/// The longest wait between tries, and the longest try.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// The largest backlog bound.
pub const MAX_BACKLOG: u64 = 1_000_000_000;

/// How the wait between tries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryBackoff {
    /// The same wait every time.
    Fixed(Duration),
    /// Doubling from `base`, at most `cap`, with full jitter.
    Exponential {
        /// The first wait's ceiling.
        base: Duration,
        /// The largest wait.
        cap: Duration,
    },
}

impl RetryBackoff {
    /// The queue library's backoff.
    pub fn to_backoff(self) -> seawall_queue::Backoff {
        match self {
            Self::Fixed(delay) => seawall_queue::Backoff::fixed(delay),
            Self::Exponential { base, cap } => seawall_queue::Backoff::exponential(base)
                .cap(cap)
                // Checked when the policy was read: the cap is at least the base.
                .unwrap_or_else(|_| seawall_queue::Backoff::exponential(base))
                .full_jitter(),
        }
    }
}

/// How one queue's jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct QueuePolicy {
    /// Jobs one process runs at once, 1 to [`MAX_CONCURRENCY`]; with
    /// `adaptive`, the most it runs.
    pub concurrency: usize,
    /// Whether the jobs run at once follow an adaptive limit found from
    /// their run time (up to `concurrency`), so a downstream that slows
    /// gets fewer at once (`adaptive=on`; off by default).
    pub adaptive: bool,
    /// Tries per job before it goes to the dead set, 1 to [`MAX_ATTEMPTS`].
    pub attempts: u32,
    /// The wait between tries.
    pub backoff: RetryBackoff,
    /// How long one try may take before it is aborted and counts as failed.
    pub timeout: Duration,
    /// The waiting jobs the queue is meant to hold at most, 1 to
    /// [`MAX_BACKLOG`]: `queue_backlog_runs_out_seconds` forecasts when
    /// the backlog passes it, and `SeawallQueueBacklogForecast` tells
    /// within the hour (`backlog=N`; 10,000 by default). It refuses no
    /// job.
    pub backlog: u64,
}

impl QueuePolicy {
    /// Reads `text` (`key=value` words) over `defaults`: keys left out keep
    /// the default's value.
    pub fn parse_over(defaults: Self, text: &str) -> Result<Self, String> {
        let mut policy = defaults;
        for word in text.split([' ', ',']).filter(|word| !word.is_empty()) {
            let Some((key, value)) = word.split_once('=') else {
                return Err(format!(
                    "{word:?} is not key=value; the keys are concurrency, adaptive, attempts, backoff, timeout and backlog"
                ));
            };
            match key {
                "concurrency" => {
                    policy.concurrency = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
                        .ok_or_else(|| {
                            format!("concurrency must be 1 to {MAX_CONCURRENCY}, got {value:?}")
                        })?;
                }
                "adaptive" => {
                    policy.adaptive = match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => return Err(format!("adaptive must be on or off, got {value:?}")),
                    };
                }
                "attempts" => {
                    policy.attempts = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_ATTEMPTS).contains(n))
                        .ok_or_else(|| {
                            format!("attempts must be 1 to {MAX_ATTEMPTS}, got {value:?}")
                        })?;
                }
                "backoff" => policy.backoff = parse_backoff(value)?,
                "timeout" => {
                    policy.timeout = duration(value)
                        .filter(|timeout| *timeout >= Duration::from_secs(1))
                        .ok_or_else(|| format!("timeout must be 1s to 1day, got {value:?}"))?;
                }
                "backlog" => {
                    policy.backlog = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_BACKLOG).contains(n))
                        .ok_or_else(|| {
                            format!("backlog must be 1 to {MAX_BACKLOG}, got {value:?}")
                        })?;
                }
                other => {
                    return Err(format!(
                        "unknown key {other:?}; the keys are concurrency, adaptive, attempts, backoff, timeout and backlog"
                    ));
                }
            }
        }
        Ok(policy)
    }

    /// The options of a job enqueued on a queue with this policy.
    pub fn job_options(&self) -> seawall_queue::JobOptions {
        let options = seawall_queue::JobOptions::new();
        // Every value was checked against the queue library's bounds when
        // the policy was read.
        options
            .clone()
            .attempts(self.attempts)
            .and_then(|options| options.backoff(self.backoff.to_backoff()))
            .and_then(|options| options.timeout(self.timeout))
            .unwrap_or(options)
    }
}

/// A duration of at most [`MAX_DELAY`].
fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .filter(|value| *value <= MAX_DELAY)
}

fn parse_backoff(text: &str) -> Result<RetryBackoff, String> {
    let malformed = || {
        format!(
            "backoff is BASE..CAP (such as 1s..5m) or fixed:DELAY, each at most 1day, got {text:?}"
        )
    };
    if let Some(delay) = text.strip_prefix("fixed:") {
        return duration(delay)
            .map(RetryBackoff::Fixed)
            .ok_or_else(malformed);
    }
    let (base, cap) = text.split_once("..").ok_or_else(malformed)?;
    let (base, cap) = (
        duration(base).ok_or_else(malformed)?,
        duration(cap).ok_or_else(malformed)?,
    );
    if base < Duration::from_millis(1) || cap < base {
        return Err(format!(
            "backoff {text:?}: the base must be at least 1ms and the cap at least the base"
        ));
    }
    Ok(RetryBackoff::Exponential { base, cap })
}

impl fmt::Display for QueuePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let human = |value| {
            humantime::format_duration(value)
                .to_string()
                .replace(' ', "")
        };
        let backoff = match self.backoff {
            RetryBackoff::Fixed(delay) => format!("fixed:{}", human(delay)),
            RetryBackoff::Exponential { base, cap } => format!("{}..{}", human(base), human(cap)),
        };
        write!(f, "concurrency={}", self.concurrency)?;
        if self.adaptive {
            f.write_str(" adaptive=on")?;
        }
        write!(
            f,
            " attempts={} backoff={backoff} timeout={}",
            self.attempts,
            human(self.timeout)
        )?;
        if self.backlog != seawall_queue::DEFAULT_BACKLOG_BOUND {
            write!(f, " backlog={}", self.backlog)?;
        }
        Ok(())
    }
}

impl From<QueuePolicy> for String {
    fn from(policy: QueuePolicy) -> Self {
        policy.to_string()
    }
}

/// The shortest interval of [`Recurring::Every`].
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// When a recurring job runs, as configured: not at all, at a fixed
/// interval, or at the times a cron expression matches in a time zone (see
/// the [module docs](self) for the text). Reading the text builds the
/// queue's [`Schedule`](seawall_queue::Schedule), so text the queue would
/// refuse is refused here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Recurring {
    /// No such job: its scheduler is removed.
    Off,
    /// Every this long, [`MIN_EVERY`] to [`MAX_DELAY`], on its whole
    /// multiples since the Unix epoch.
    Every(Duration),
    /// At each time `expression` matches in `zone`.
    Cron {
        /// Five cron fields, or six with seconds first, one space apart.
        expression: String,
        /// An IANA time zone name (`UTC`, `Europe/Berlin`).
        zone: String,
    },
}

impl Recurring {
    /// Reads `off`, `every DURATION` or `cron FIELDS… ZONE`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let malformed = || {
            format!(
                "expected off, every DURATION (1s to 1day) or cron FIELDS ZONE (5 or 6 cron \
                 fields, then an IANA time zone such as UTC), got {text:?}"
            )
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let recurring = match words.split_first() {
            Some((&"off", [])) => Self::Off,
            Some((&"every", rest)) if !rest.is_empty() => {
                let interval = humantime::parse_duration(&rest.join(" "))
                    .ok()
                    .filter(|interval| (MIN_EVERY..=MAX_DELAY).contains(interval))
                    .ok_or_else(|| {
                        format!("every takes a duration from 1s to 1day, got {text:?}")
                    })?;
                Self::Every(interval)
            }
            Some((&"cron", [fields @ .., zone])) => {
                if !(5..=6).contains(&fields.len()) {
                    return Err(format!(
                        "cron takes 5 or 6 fields, then an IANA time zone, got {} words in {text:?}",
                        fields.len() + 1
                    ));
                }
                Self::Cron {
                    expression: fields.join(" "),
                    zone: (*zone).to_owned(),
                }
            }
            _ => return Err(malformed()),
        };
        recurring
            .schedule()
            .map_err(|error| format!("{text:?}: {error}"))?;
        Ok(recurring)
    }

    /// The queue's schedule; `None` when off. An error for a value the
    /// queue refuses, which [`Recurring::parse`] never gives.
    pub fn schedule(&self) -> Result<Option<seawall_queue::Schedule>, seawall_queue::Error> {
        match self {
            Self::Off => Ok(None),
            Self::Every(interval) => {
                if !(MIN_EVERY..=MAX_DELAY).contains(interval) {
                    return Err(seawall_queue::Error::InvalidSchedule(format!(
                        "an interval must be from 1s to 1day, got {interval:?}"
                    )));
                }
                seawall_queue::Schedule::every(*interval).map(Some)
            }
            Self::Cron { expression, zone } => {
                seawall_queue::Schedule::cron(expression, zone).map(Some)
            }
        }
    }
}

impl fmt::Display for Recurring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Every(interval) => write!(
                f,
                "every {}",
                humantime::format_duration(*interval)
                    .to_string()
                    .replace(' ', "")
            ),
            Self::Cron { expression, zone } => write!(f, "cron {expression} {zone}"),
        }
    }
}

impl From<Recurring> for String {
    fn from(recurring: Recurring) -> Self {
        recurring.to_string()
    }
}

impl TryFrom<String> for Recurring {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_left_out_keep_the_queues_default() {
        let defaults = QueueName::Email.default_policy();
        let policy =
            QueuePolicy::parse_over(defaults, "attempts=9, backoff=fixed:3s").expect("reads");
        assert_eq!(policy.attempts, 9);
        assert_eq!(policy.backoff, RetryBackoff::Fixed(Duration::from_secs(3)));
        assert_eq!(policy.concurrency, defaults.concurrency);
        assert_eq!(policy.timeout, defaults.timeout);
    }

    #[test]
    fn every_default_reads_back_from_its_text() {
        for queue in QueueName::ALL {
            let policy = queue.default_policy();
            let text = policy.to_string();
            let other = QueueName::Backup.default_policy();
            assert_eq!(QueuePolicy::parse_over(other, &text), Ok(policy), "{text}");
            assert_eq!(QueueName::parse(queue.as_str()), Some(queue));
        }
    }

    #[test]
    fn recurring_schedules_read_back_from_their_text() {
        for (text, shown) in [
            ("off", "off"),
            ("every 1h", "every 1h"),
            ("  every   90m ", "every 1h30m"),
            ("every 1h 30m", "every 1h30m"),
            ("every 1s", "every 1s"),
            ("every 1day", "every 1day"),
            ("cron 0 3 * * * UTC", "cron 0 3 * * * UTC"),
            (
                "cron  30 2 * * 1-5   Europe/Berlin",
                "cron 30 2 * * 1-5 Europe/Berlin",
            ),
            (
                "cron */10 * * * * * Asia/Seoul",
                "cron */10 * * * * * Asia/Seoul",
            ),
        ] {
            let recurring = Recurring::parse(text).expect(text);
            assert_eq!(recurring.to_string(), shown, "{text}");
            assert_eq!(Recurring::parse(shown), Ok(recurring.clone()), "{shown}");
            assert_eq!(
                recurring.schedule().expect("valid").is_some(),
                recurring != Recurring::Off
            );
        }
        let every = Recurring::parse("every 15m").expect("valid");
        assert_eq!(every, Recurring::Every(Duration::from_secs(900)));
        let json = serde_json::to_string(&every).expect("serialises");
        assert_eq!(json, "\"every 15m\"");
        assert_eq!(serde_json::from_str::<Recurring>(&json).ok(), Some(every));
    }

    #[test]
    fn bad_recurring_schedules_say_what_is_wrong() {
        for (text, says) in [
            ("", "expected off, every DURATION"),
            ("hourly", "expected off, every DURATION"),
            ("off now", "expected off, every DURATION"),
            ("every", "expected off, every DURATION"),
            ("every 500ms", "from 1s to 1day"),
            ("every 2days", "from 1s to 1day"),
            ("every soon", "from 1s to 1day"),
            ("cron 0 3 * * *", "5 or 6 fields"),
            ("cron 0 3 * * UTC", "5 or 6 fields"),
            ("cron 0 0 3 * * * * UTC", "5 or 6 fields"),
            ("cron 61 3 * * * UTC", "invalid schedule"),
            ("cron 0 3 * * * Mars/Olympus", "unknown time zone"),
            ("cron 0 0 30 2 * UTC", "matches no time"),
        ] {
            let error = Recurring::parse(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
        assert!(serde_json::from_str::<Recurring>("\"every 0s\"").is_err());
        assert!(
            Recurring::Every(Duration::from_millis(500))
                .schedule()
                .is_err()
        );
    }

    #[test]
    fn adaptive_is_off_by_default_and_shown_only_when_on() {
        let defaults = QueueName::Email.default_policy();
        assert!(!defaults.adaptive);
        let on = QueuePolicy::parse_over(defaults, "adaptive=on concurrency=32").expect("valid");
        assert!(on.adaptive && on.concurrency == 32);
        assert_eq!(
            on.to_string(),
            "concurrency=32 adaptive=on attempts=5 backoff=2s..10m timeout=30s"
        );
        assert_eq!(QueuePolicy::parse_over(defaults, &on.to_string()), Ok(on));
        let off = QueuePolicy::parse_over(on, "adaptive=off").expect("valid");
        assert!(!off.adaptive);
        assert!(!off.to_string().contains("adaptive"));
    }

    #[test]
    fn a_backlog_bound_reads_back_and_is_shown_only_when_set() {
        let defaults = QueueName::Report.default_policy();
        assert_eq!(defaults.backlog, 10_000);
        assert!(!defaults.to_string().contains("backlog"));
        let set = QueuePolicy::parse_over(defaults, "backlog=50000").expect("valid");
        assert_eq!(set.backlog, 50_000);
        assert!(set.to_string().ends_with(" backlog=50000"), "{set}");
        assert_eq!(QueuePolicy::parse_over(defaults, &set.to_string()), Ok(set));
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        let defaults = QueueName::Email.default_policy();
        for (text, says) in [
            ("concurrency=0", "concurrency must be 1 to 256"),
            ("concurrency=many", "concurrency must be"),
            ("attempts=101", "attempts must be 1 to 100"),
            ("backoff=5m..1s", "the cap at least the base"),
            ("backoff=0s..1s", "at least 1ms"),
            ("backoff=soon", "BASE..CAP"),
            ("backoff=fixed:2days", "BASE..CAP"),
            ("timeout=10ms", "timeout must be 1s"),
            ("retries=3", "unknown key \"retries\""),
            ("attempts", "is not key=value"),
            ("adaptive=maybe", "adaptive must be on or off"),
            ("backlog=0", "backlog must be 1 to 1000000000"),
            ("backlog=lots", "backlog must be"),
        ] {
            let error = QueuePolicy::parse_over(defaults, text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
