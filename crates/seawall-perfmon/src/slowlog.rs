//! A bounded log of the slowest operations.
//!
//! [`SlowLog`] keeps the `capacity` slowest operations over a threshold. They
//! sit in a min-heap so the fastest kept entry is the one to evict and an offer
//! costs O(log N). Texts are redacted with [`crate::sanitize`] before they are
//! stored, and only for entries that will be kept, so an operation under the
//! threshold costs one comparison and a slow one that does not make the cut
//! costs an atomic increment and a short lock.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{self, AtomicU64};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::sanitize::{mask_secrets, sanitize_sql};

/// Longest stored text in bytes, counting the `…` that marks a truncated one.
pub const MAX_TEXT_BYTES: usize = 2048;

/// Raw text beyond this is dropped before sanitising: it bounds the work for
/// a huge statement (a bulk `INSERT`) while leaving plenty to fill
/// [`MAX_TEXT_BYTES`] once literals have shrunk to `?`.
const MAX_RAW_BYTES: usize = 64 * 1024;

const ELLIPSIS: char = '…';

/// What kind of operation an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowKind {
    /// A database query; its text is SQL.
    Query,
    /// An API call; its text is a request summary.
    Api,
}

/// One slow operation.
///
/// Serialises as `{"kind": "query", "text": "…", "duration_ms": 12.345,
/// "at": "2026-11-21T08:15:30.123Z"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowEntry {
    /// What kind of operation this was.
    pub kind: SlowKind,
    /// Sanitised text: for a query, the SQL with literals as `?`; for an API
    /// call, e.g. `GET /api/users/{id} -> 500`.
    pub text: String,
    /// How long it took; serialised as `duration_ms`, a float with
    /// microsecond precision.
    #[serde(rename = "duration_ms", serialize_with = "serialize_duration_ms")]
    pub duration: Duration,
    /// When it finished (wall clock); serialised as an RFC 3339 UTC string
    /// with milliseconds.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub at: SystemTime,
}

fn serialize_duration_ms<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    // Precision loss only beyond 2^53 µs (285 years), so the cast is fine.
    serializer.serialize_f64(duration.as_micros() as f64 / 1000.0)
}

fn serialize_rfc3339<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*at))
}

/// Formats a time as RFC 3339 in UTC with milliseconds, rounding towards
/// the past, e.g. `2026-11-21T08:15:30.123Z`. The slow logs and the snapshot
/// use it, so a service that shows times beside them can match their format.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let at = UNIX_EPOCH + Duration::from_millis(951_825_600_250);
/// assert_eq!(seawall_perfmon::slowlog::rfc3339(at), "2000-02-29T12:00:00.250Z");
/// ```
pub fn rfc3339(at: SystemTime) -> String {
    let (secs, millis) = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_millis(),
        ),
        Err(err) => {
            let before = err.duration();
            let secs = i64::try_from(before.as_secs()).map_or(i64::MIN, |s| -s);
            match before.subsec_nanos() {
                0 => (secs, 0),
                // -0.25 s is 0.75 s into second -1.
                nanos => (secs.saturating_sub(1), (1_000_000_000 - nanos) / 1_000_000),
            }
        }
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let secs_of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60,
    )
}

/// Year, month and day of a count of days since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`): days are counted
/// in 400-year eras starting on 0000-03-01, so the leap day ends a year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A kept entry, ordered by how slow it was.
#[derive(Debug)]
struct Kept {
    /// Offer order: the last tie-break, so the order is total.
    seq: u64,
    entry: SlowEntry,
}

/// Ranking key: slower is greater; on equal durations the newer finish time
/// and then the later offer rank higher, so the older entry is evicted first.
type Rank = (Duration, SystemTime, u64);

impl Kept {
    fn rank(&self) -> Rank {
        (self.entry.duration, self.entry.at, self.seq)
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Kept {}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// A bounded top-N log of slow operations of one [`SlowKind`].
///
/// Safe to share between threads. Of operations with equal durations the
/// newer one (later `at`, then later offer) is kept.
#[derive(Debug)]
pub struct SlowLog {
    kind: SlowKind,
    threshold: Duration,
    capacity: usize,
    /// Slow operations offered so far; atomic so reading it takes no lock.
    total: AtomicU64,
    /// Min-heap: the top is the fastest kept entry, the next to be evicted.
    kept: Mutex<BinaryHeap<Reverse<Kept>>>,
}

impl SlowLog {
    /// Creates an empty log. Operations strictly slower than `threshold` are
    /// slow; the `capacity` slowest of them are kept (with capacity 0 none
    /// are kept, but they are still counted).
    #[must_use]
    pub fn new(kind: SlowKind, threshold: Duration, capacity: usize) -> Self {
        Self {
            kind,
            threshold,
            capacity,
            total: AtomicU64::new(0),
            kept: Mutex::new(BinaryHeap::new()),
        }
    }

    /// Operations strictly slower than this are slow.
    #[must_use]
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// How many of the slowest operations are kept.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The kind of operation this log records.
    #[must_use]
    pub fn kind(&self) -> SlowKind {
        self.kind
    }

    /// Offers an operation that took `duration` and finished `at`; returns
    /// whether it was slow (strictly over the threshold).
    ///
    /// `text` is called only when the operation is slow and will be kept
    /// (there is room, or it beats the fastest kept entry), and outside the
    /// lock; a concurrent offer can still displace the entry before it is
    /// inserted, in which case it is dropped. Its result is redacted
    /// ([`sanitize_sql`] for [`SlowKind::Query`], [`mask_secrets`] for
    /// [`SlowKind::Api`]) and, if longer than [`MAX_TEXT_BYTES`], cut on a char
    /// boundary to at most that many bytes ending in `…`.
    pub fn offer(&self, duration: Duration, at: SystemTime, text: impl FnOnce() -> String) -> bool {
        if duration <= self.threshold {
            return false;
        }
        let seq = self.total.fetch_add(1, atomic::Ordering::Relaxed);
        let rank = (duration, at, seq);
        if !self.has_place_for(rank) {
            return true;
        }
        let entry = Kept {
            seq,
            entry: SlowEntry {
                kind: self.kind,
                text: self.redact(&text()),
                duration,
                at,
            },
        };
        let mut kept = self.lock();
        // Other threads may have filled the log while the text was prepared.
        if kept.len() < self.capacity {
            kept.push(Reverse(entry));
        } else if let Some(mut fastest) = kept.peek_mut()
            && fastest.0.rank() < rank
        {
            // Replacing through `PeekMut` sifts down once: O(log N).
            *fastest = Reverse(entry);
        }
        true
    }

    /// The kept entries, slowest first, at most `limit` of them.
    #[must_use]
    pub fn top(&self, limit: usize) -> Vec<SlowEntry> {
        let kept = self.lock();
        let mut sorted: Vec<&Kept> = kept.iter().map(|Reverse(k)| k).collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted
            .into_iter()
            .take(limit)
            .map(|k| k.entry.clone())
            .collect()
    }

    /// How many slow operations were offered since creation, kept or not.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total.load(atomic::Ordering::Relaxed)
    }

    /// Drops all kept entries; [`total`](Self::total) is unchanged.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn has_place_for(&self, rank: Rank) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let kept = self.lock();
        kept.len() < self.capacity
            || kept
                .peek()
                .is_some_and(|Reverse(fastest)| fastest.rank() < rank)
    }

    /// Nothing panics while the lock is held, but should a poisoned heap ever
    /// be seen it is still consistent: every mutation is a single heap call.
    fn lock(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Kept>>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn redact(&self, raw: &str) -> String {
        let capped = raw.len() > MAX_RAW_BYTES;
        let raw = if capped {
            let cut = &raw[..raw.floor_char_boundary(MAX_RAW_BYTES)];
            // Drop the token the cut went through: a key or URL missing its
            // end (`postgres://u:pw` without `@host`) would not be recognised
            // as a secret.
            cut.rfind(|c: char| c.is_ascii_whitespace())
                .map_or("", |ws| &cut[..ws])
        } else {
            raw
        };
        let mut text = match self.kind {
            SlowKind::Query => sanitize_sql(raw),
            SlowKind::Api => mask_secrets(raw),
        };
        if capped || text.len() > MAX_TEXT_BYTES {
            let keep = MAX_TEXT_BYTES - ELLIPSIS.len_utf8();
            text.truncate(text.floor_char_boundary(keep));
            text.push(ELLIPSIS);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn epoch_plus(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn durations(entries: &[SlowEntry]) -> Vec<Duration> {
        entries.iter().map(|e| e.duration).collect()
    }

    #[test]
    fn threshold_is_strict() {
        let log = SlowLog::new(SlowKind::Api, ms(100), 10);
        assert!(!log.offer(ms(100), SystemTime::now(), || "at".into()));
        assert!(!log.offer(ms(5), SystemTime::now(), || "under".into()));
        assert_eq!(log.total(), 0);
        assert!(
            log.offer(ms(100) + Duration::from_nanos(1), SystemTime::now(), || {
                "over".into()
            })
        );
        assert_eq!(log.total(), 1);
        assert_eq!(log.top(10).len(), 1);
        assert_eq!(
            (log.kind(), log.threshold(), log.capacity()),
            (SlowKind::Api, ms(100), 10)
        );
    }

    #[test]
    fn keeps_exactly_the_slowest() {
        let log = SlowLog::new(SlowKind::Api, Duration::ZERO, 5);
        // 1..=100 ms in a scrambled order (37 is coprime with 100).
        for i in 0..100u64 {
            let d = ms((i * 37) % 100 + 1);
            assert!(log.offer(d, SystemTime::now(), || format!("op {}", d.as_millis())));
        }
        assert_eq!(log.total(), 100);
        let top = log.top(usize::MAX);
        assert_eq!(durations(&top), [ms(100), ms(99), ms(98), ms(97), ms(96)]);
        assert_eq!(top[0].text, "op 100");
    }

    #[test]
    fn top_is_sorted_and_limited() {
        let log = SlowLog::new(SlowKind::Api, Duration::ZERO, 10);
        for n in [3, 9, 1, 7, 5] {
            log.offer(ms(n), SystemTime::now(), String::new);
        }
        assert_eq!(durations(&log.top(3)), [ms(9), ms(7), ms(5)]);
        assert_eq!(
            durations(&log.top(100)),
            [ms(9), ms(7), ms(5), ms(3), ms(1)]
        );
        assert!(log.top(0).is_empty());
    }

    #[test]
    fn ties_keep_the_newer_entry() {
        let log = SlowLog::new(SlowKind::Api, Duration::ZERO, 1);
        log.offer(ms(10), epoch_plus(100, 0), || "old".into());
        log.offer(ms(10), epoch_plus(200, 0), || "new".into());
        log.offer(ms(10), epoch_plus(150, 0), || "older again".into());
        assert_eq!(log.top(1)[0].text, "new");
        log.offer(ms(10), epoch_plus(200, 0), || {
            "same time, later offer".into()
        });
        assert_eq!(log.top(1)[0].text, "same time, later offer");
    }

    #[test]
    fn text_is_only_built_for_kept_entries() {
        let called = Cell::new(false);
        let text = || {
            called.set(true);
            String::from("x")
        };
        let log = SlowLog::new(SlowKind::Query, ms(10), 1);
        assert!(!log.offer(ms(1), SystemTime::now(), text));
        assert!(!called.get(), "fast operation");
        assert!(log.offer(ms(50), SystemTime::now(), text));
        assert!(called.get(), "slow operation with room");
        called.set(false);
        assert!(log.offer(ms(20), SystemTime::now(), text));
        assert!(
            !called.get(),
            "slow operation that does not beat the kept one"
        );
        assert!(log.offer(ms(60), SystemTime::now(), text));
        assert!(called.get(), "slow operation that evicts");
        assert_eq!(log.total(), 3);
    }

    #[test]
    fn capacity_zero_counts_but_keeps_nothing() {
        let called = Cell::new(false);
        let log = SlowLog::new(SlowKind::Api, Duration::ZERO, 0);
        assert!(log.offer(ms(5), SystemTime::now(), || {
            called.set(true);
            String::new()
        }));
        assert_eq!(log.total(), 1);
        assert!(log.top(10).is_empty());
        assert!(!called.get());
    }

    #[test]
    fn texts_are_redacted() {
        let queries = SlowLog::new(SlowKind::Query, Duration::ZERO, 4);
        queries.offer(ms(1), SystemTime::now(), || {
            "SELECT * FROM users WHERE password = 'hunter2' AND id = 7 -- by bob".into()
        });
        queries.offer(ms(2), SystemTime::now(), || {
            "SELECT 1 FROM conn WHERE dsn = x AND token=abc123".into()
        });
        let texts: Vec<String> = queries.top(4).into_iter().map(|e| e.text).collect();
        assert_eq!(
            texts,
            [
                "SELECT ? FROM conn WHERE dsn = x AND token=***",
                "SELECT * FROM users WHERE password = ? AND id = ?",
            ]
        );

        let calls = SlowLog::new(SlowKind::Api, Duration::ZERO, 4);
        calls.offer(ms(1), SystemTime::now(), || {
            "GET /api/users/42?token=abc123&page=2 -> 500".into()
        });
        // API texts keep their numbers: only secrets are masked.
        assert_eq!(
            calls.top(1)[0].text,
            "GET /api/users/42?token=***&page=2 -> 500"
        );
        assert_eq!(calls.top(1)[0].kind, SlowKind::Api);
    }

    #[test]
    fn long_texts_are_truncated_on_a_char_boundary() {
        let log = SlowLog::new(SlowKind::Api, Duration::ZERO, 4);
        log.offer(ms(1), SystemTime::now(), || "é".repeat(3000));
        log.offer(ms(2), SystemTime::now(), || "a".repeat(MAX_TEXT_BYTES));
        let top = log.top(2);
        assert_eq!(top[0].text, "a".repeat(MAX_TEXT_BYTES), "fits exactly");
        let cut = &top[1].text;
        assert!(
            cut.len() <= MAX_TEXT_BYTES && cut.ends_with('…'),
            "{}",
            cut.len()
        );
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));

        // A huge statement is capped before sanitising but still marked as cut.
        let queries = SlowLog::new(SlowKind::Query, Duration::ZERO, 1);
        queries.offer(ms(1), SystemTime::now(), || {
            format!(
                "SELECT a FROM t WHERE b IN ({}) AND c = 'x'",
                "12345, ".repeat(20_000)
            )
        });
        let text = &queries.top(1)[0].text;
        assert!(
            text.starts_with("SELECT a FROM t WHERE b IN (?, ?, ?,"),
            "{text}"
        );
        assert!(
            text.len() <= MAX_TEXT_BYTES && text.ends_with('…'),
            "{text}"
        );
        assert!(!text.contains("12345"));
    }

    #[test]
    fn capped_raw_text_drops_the_token_it_cuts() {
        // A long literal shrinks to `?`, so text near the cap is kept; the cap
        // falls just before the `@` that marks the URL's userinfo.
        let tail = " AND dsn = postgres://u:hunter2";
        let literal = "x".repeat(MAX_RAW_BYTES - "SELECT '' ".len() - tail.len());
        let query = format!("SELECT '{literal}' {tail}@host/db");
        assert_eq!(query.find('@'), Some(MAX_RAW_BYTES));
        let log = SlowLog::new(SlowKind::Query, Duration::ZERO, 1);
        log.offer(ms(1), SystemTime::now(), || query);
        assert_eq!(log.top(1)[0].text, "SELECT ? AND dsn =…");
    }

    #[test]
    fn clear_keeps_the_total() {
        let log = SlowLog::new(SlowKind::Api, Duration::ZERO, 3);
        for n in 1..=5 {
            log.offer(ms(n), SystemTime::now(), String::new);
        }
        log.clear();
        assert!(log.top(10).is_empty());
        assert_eq!(log.total(), 5);
        log.offer(ms(1), SystemTime::now(), String::new);
        assert_eq!(
            durations(&log.top(10)),
            [ms(1)],
            "a cleared log has room again"
        );
    }

    #[test]
    fn entry_serialises_to_the_documented_shape() {
        let entry = SlowEntry {
            kind: SlowKind::Query,
            text: "SELECT ?".into(),
            duration: Duration::from_nanos(12_345_678),
            at: epoch_plus(1_795_248_930, 123_999_999),
        };
        let json = serde_json::to_value(&entry).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "query",
                "text": "SELECT ?",
                "duration_ms": 12.345,
                "at": "2026-11-21T08:15:30.123Z",
            })
        );
        assert_eq!(serde_json::json!(SlowKind::Api), serde_json::json!("api"));
    }

    #[test]
    fn rfc3339_formatting() {
        let cases = [
            (UNIX_EPOCH, "1970-01-01T00:00:00.000Z"),
            (epoch_plus(951_825_600, 0), "2000-02-29T12:00:00.000Z"),
            (
                epoch_plus(1_735_689_599, 999_000_000),
                "2024-12-31T23:59:59.999Z",
            ),
            (epoch_plus(4_107_542_400, 0), "2100-03-01T00:00:00.000Z"),
            (
                UNIX_EPOCH - Duration::from_millis(1),
                "1969-12-31T23:59:59.999Z",
            ),
            (
                UNIX_EPOCH - Duration::from_secs(14_182_940),
                "1969-07-20T20:17:40.000Z",
            ),
            (
                UNIX_EPOCH - Duration::from_secs(2_208_988_800),
                "1900-01-01T00:00:00.000Z",
            ),
        ];
        for (at, expected) in cases {
            assert_eq!(rfc3339(at), expected);
        }
    }

    #[test]
    fn civil_from_days_round_trips_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        // Extremes must not overflow.
        let _ = civil_from_days(i64::MAX / 86_400);
        let _ = civil_from_days(i64::MIN / 86_400);
    }

    #[test]
    fn concurrent_offers() {
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 1000;
        let log = Arc::new(SlowLog::new(SlowKind::Query, Duration::ZERO, 16));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        let micros = i * THREADS + t + 1; // distinct across threads
                        log.offer(Duration::from_micros(micros), SystemTime::now(), || {
                            format!("SELECT {micros}")
                        });
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("offering thread panicked");
        }
        assert_eq!(log.total(), THREADS * PER_THREAD);
        let top = log.top(usize::MAX);
        let expected: Vec<Duration> = (0..16)
            .map(|k| Duration::from_micros(THREADS * PER_THREAD - k))
            .collect();
        assert_eq!(durations(&top), expected);
        assert!(top.iter().all(|e| e.text == "SELECT ?"));
    }

    #[test]
    fn survives_a_poisoned_lock() {
        let log = Arc::new(SlowLog::new(SlowKind::Api, Duration::ZERO, 2));
        log.offer(ms(1), SystemTime::now(), String::new);
        let poisoner = Arc::clone(&log);
        let result = std::thread::spawn(move || {
            let _guard = poisoner.kept.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(result.is_err() && log.kept.is_poisoned());
        assert!(log.offer(ms(2), SystemTime::now(), String::new));
        assert_eq!(durations(&log.top(5)), [ms(2), ms(1)]);
        log.clear();
        assert!(log.top(5).is_empty());
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SlowLog>();
        assert_send_sync::<SlowEntry>();
    }
}
