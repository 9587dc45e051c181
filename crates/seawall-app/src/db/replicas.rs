//! Reads on PostgreSQL streaming replicas, never from the past.
//!
//! A monitor task looks at the primary and every replica in rounds, every
//! [`POLL_INTERVAL`] while reads choose among them (every
//! [`IDLE_POLL_INTERVAL`] after a second without one, until the next read
//! wakes it): it reads the primary's WAL position
//! (`pg_current_wal_insert_lsn()`, less the header of a page no record is
//! on yet), then each replica's replayed position
//! (`pg_last_wal_replay_lsn()`). A replica whose replayed position has
//! reached the primary's position of a recent round (the last quarter of a
//! second) is *current as of* the latest such round's start: every
//! transaction committed before that round began is visible on it.
//! All requests share what the rounds found; a read makes no round trip of
//! its own to choose where it goes.
//!
//! A read says how fresh it must be ([`Freshness`]):
//! - [`Freshness::NOW`]: it sees everything committed before it began, as a
//!   read of the primary would. A replica serves it once a round that began
//!   after the read did found the replica current; the read waits up to
//!   `database.replica_wait` for one, then goes to the primary. It waits
//!   only while a replica in rotation has lately caught up within the wait
//!   (its [catch-up](ReplicaState::catch_up)); otherwise it goes to the
//!   primary at once. Replicas receive only WAL the primary has flushed, so
//!   a primary with `synchronous_commit = off`, which flushes every
//!   `wal_writer_delay`, keeps every replica's catch-up past the wait.
//!   Cache fills read this way, so that no value older than the last write
//!   of its key is ever cached, whatever a replica's lag.
//! - [`Freshness::after`] a WAL position (a caller's own last write): any
//!   replica that has replayed past it, without waiting;
//!   [`caller::freshness`](super::caller::freshness) is this for the
//!   current caller.
//! - [`Freshness::ANY`]: any replica in rotation.
//!
//! A replica is in rotation while it answered within [`DOWN_AFTER`], is
//! fewer than `database.replica_max_lag_bytes` of WAL behind the primary,
//! and was current as of at most `database.replica_max_lag` ago. A replica
//! that fails, stalls or is cut off therefore leaves it within a second,
//! and comes back by itself once rounds find it answering and current
//! again. With no replica in rotation every read goes to the primary.
//!
//! **Failover.** The rounds also find a replica that has been promoted
//! (`pg_promote()`, or an operator's tool): it answers a look as a primary,
//! with its timeline. One of `database.replicas` that a round has seen
//! replaying and that now takes writes on a newer timeline than the
//! primary's becomes the primary, without a restart: what the rounds know
//! changes first, then a pool to the promoted replica takes the place of
//! the service's pool to the old primary ([`Db::pool`](super::Db::pool)),
//! which is closed, so every statement after that goes there. A newer
//! timeline wins even while the old primary still answers: whatever the
//! old primary takes after the promotion is on a branch the new one never
//! sees, and keeping it from taking writes (fencing) is the failover
//! manager's part. While a replica is the primary the rounds look at
//! `database.url` too, and a later promotion there (a Service that follows
//! the primary, say) brings the writes back to it. While the primary's
//! timeline is not yet known (no round has reached it), a promoted replica
//! takes over only once the primary has not answered for [`DOWN_AFTER`].
//!
//! A replica takes reads only while a round has found it receiving WAL on
//! the primary's timeline (`pg_stat_wal_receiver.received_tli`): one left
//! on an old timeline by a failover, here or before this process started,
//! may have replayed writes the new primary never had, and receives
//! nothing, or that old timeline. A database user without
//! `pg_read_all_stats` (or superuser) cannot see the timeline; its
//! replicas are then trusted until this process sees a failover, after
//! which none takes reads until a restart, and the log says so once.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use seawall_perfmon::CollectedFamily;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};

use super::pool::{PrimaryPool, connect_options, primary_pool_options};

/// How often the monitor looks at the primary and the replicas while
/// reads choose among them.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How often it looks while no read has chosen for [`BUSY_FOR`]: enough
/// for the lag limits, the health (a replica that stops answering leaves
/// rotation within [`DOWN_AFTER`]) and the metrics. The first read after
/// such a lull wakes the monitor at once.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long after a read chose the monitor keeps looking every
/// [`POLL_INTERVAL`].
pub const BUSY_FOR: Duration = Duration::from_secs(1);

/// A read notes when it chose only once this much later than the last
/// note (µs).
const CHOSEN_AT_STEP_US: u64 = 100_000;

/// How long one look at a server may take before it counts as no answer.
const LOOK_TIMEOUT: Duration = Duration::from_millis(250);

/// A read on a replica that has not finished in this long is abandoned
/// and run on the primary, and the replica leaves rotation until a round
/// finds it answering: a replica cut off mid-read costs the read this
/// wait, not a failure.
pub const REPLICA_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A replica that has not answered a look for this long takes no reads.
pub const DOWN_AFTER: Duration = Duration::from_millis(500);

/// How many rounds' primary positions are kept to find a replica current
/// (a quarter of a second at [`POLL_INTERVAL`]).
const RECENT_ROUNDS: usize = 50;

/// The look at the primary: its WAL insert position, and the name of the
/// WAL file it writes, whose first eight hexadecimal digits are its
/// timeline. A server in recovery refuses both (no answer).
const PRIMARY_LOOK: &str = "SELECT CAST(pg_current_wal_insert_lsn() AS TEXT) || ' ' || \
                            pg_walfile_name(pg_current_wal_insert_lsn())";

/// The primary's WAL insert position, for [`Replicas::settled`].
pub(crate) const POSITION_SQL: &str = "SELECT CAST(pg_current_wal_insert_lsn() AS TEXT)";

/// The WAL's page and file sizes, in bytes (fixed when the cluster was
/// made, so the same on its replicas): `<page> <file>`.
const WAL_SIZES: &str = "SELECT string_agg(setting, ' ' ORDER BY name) FROM pg_settings \
                         WHERE name IN ('wal_block_size', 'wal_segment_size')";

/// PostgreSQL's default WAL page and file sizes, assumed until read.
const DEFAULT_WAL_PAGE: u64 = 8192;
const DEFAULT_WAL_FILE: u64 = 16 << 20;

/// The sizes of a WAL page's header: at a WAL file's first page, and at
/// every other page.
const LONG_PAGE_HEADER: u64 = 40;
const SHORT_PAGE_HEADER: u64 = 24;

/// The look at a replica: `replica <replayed position> <timeline it
/// receives>`, the timeline `0` while it has no WAL receiver and `?` when
/// the user may not see it (`pg_read_all_stats`); or, once it has been
/// promoted, `primary <WAL file name>`.
const REPLICA_LOOK: &str = "SELECT CASE WHEN pg_is_in_recovery() THEN 'replica ' || \
     CAST(pg_last_wal_replay_lsn() AS TEXT) || ' ' || COALESCE((SELECT \
     COALESCE(CAST(received_tli AS TEXT), '?') FROM pg_stat_wal_receiver), '0') \
     ELSE 'primary ' || pg_walfile_name(pg_current_wal_insert_lsn()) END";

/// A replica's timeline when its WAL receiver is hidden from the user.
const HIDDEN: u32 = u32::MAX;

/// No replica promoted: the primary is `database.url`.
const NOT_PROMOTED: usize = usize::MAX;

/// How long a failover waits for the old primary's pools to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How long a replica's pooled connection may stay idle.
const REPLICA_IDLE: Duration = Duration::from_secs(30);

/// A position in PostgreSQL's write-ahead log (a `pg_lsn`), as a number of
/// bytes; printed and parsed as PostgreSQL does (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A text that is not a WAL position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a WAL position (two hexadecimal numbers of at most 8 digits, as in 16/B374D848): {0:?}"
)]
pub struct LsnError(String);

impl FromStr for Lsn {
    type Err = LsnError;

    fn from_str(text: &str) -> Result<Self, LsnError> {
        let error = || LsnError(text.chars().take(40).collect());
        let (high, low) = text.split_once('/').ok_or_else(error)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(error());
            }
            u64::from_str_radix(part, 16).map_err(|_| error())
        };
        Ok(Self((half(high)? << 32) | half(low)?))
    }
}

/// How fresh a read must be; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The replica must have replayed up to here.
    after: Option<Lsn>,
    /// Everything committed before this moment must be visible.
    now: bool,
}

impl Freshness {
    /// Everything committed before the read began is visible.
    pub const NOW: Self = Self {
        after: None,
        now: true,
    };

    /// Any replica in rotation.
    pub const ANY: Self = Self {
        after: None,
        now: false,
    };

    /// Every transaction up to `position` is visible.
    pub fn after(position: Lsn) -> Self {
        Self {
            after: Some(position),
            now: false,
        }
    }
}

/// The replica-lag limits and the wait of [`Freshness::NOW`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A replica not current as of this long ago takes no reads.
    pub max_lag: Duration,
    /// A replica this many bytes behind takes no reads.
    pub max_lag_bytes: u64,
    /// How long a [`Freshness::NOW`] read waits for a current replica.
    pub wait: Duration,
}

/// One replica and what the rounds found of it. Times are µs since the
/// set's epoch, 0 for never.
#[derive(Debug)]
struct Replica {
    /// How metrics and logs name it: its host and port.
    name: String,
    /// How to connect to it, should it become the primary.
    options: AnyConnectOptions,
    pool: AnyPool,
    replayed: AtomicU64,
    /// The timeline it last said it receives: 0 while no round has found
    /// it receiving, [`HIDDEN`] when the user may not see it.
    timeline: AtomicU32,
    /// Whether a round has found it replaying: only such a server is
    /// failed over to.
    seen_replaying: AtomicBool,
    /// The timeline it took writes on at the last round, 0 when that
    /// round found it replaying or had no answer.
    promoted_on: AtomicU32,
    answered_at: AtomicU64,
    current_as_of: AtomicU64,
    /// How far behind the start of each round the replica was current as
    /// of, smoothed over the last rounds (µs): how long a read that must
    /// be current can expect to wait for it. A primary that flushes its
    /// WAL late (`synchronous_commit = off` flushes every
    /// `wal_writer_delay`) keeps this high, however fast the replay.
    catch_up_us: AtomicU64,
    behind_bytes: AtomicU64,
    reads: AtomicU64,
    /// Whether it was in rotation at the last round, for the log.
    in_rotation: AtomicBool,
}

/// Where a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The primary.
    Primary,
    /// The replica of this index in `database.replicas`.
    Replica(usize),
}

/// The primary, as the rounds know it.
#[derive(Debug)]
struct Primary {
    /// The service's pool to it, which a failover replaces.
    pool: PrimaryPool,
    /// That pool's size.
    pool_size: u32,
    /// The monitor's own connection to it, which a failover replaces.
    look: parking_lot::Mutex<AnyPool>,
    /// `host:port`.
    name: parking_lot::Mutex<String>,
    /// The replica now the primary, [`NOT_PROMOTED`] for `database.url`.
    promoted: AtomicUsize,
    /// Its timeline, 0 until a round has read it.
    timeline: AtomicU32,
    /// When it last answered a look (µs since the set's epoch).
    answered_at: AtomicU64,
    /// Whether its timeline has changed since the start (a failover, here
    /// or behind this process's back): from then on a replica whose
    /// timeline is hidden takes no reads.
    forked: AtomicBool,
    /// Failovers this process made.
    failovers: AtomicU64,
    /// `database.url`, which a failover may come back to.
    configured: Configured,
    /// Whether the log has said that a replica's timeline is hidden.
    hidden_said: AtomicBool,
}

/// The primary `database.url` names, looked at while a replica is the
/// primary instead: a later promotion may make it (or what it names, a
/// Service that follows the primary, say) the primary again.
#[derive(Debug)]
struct Configured {
    options: AnyConnectOptions,
    name: String,
    /// A connection of its own, opened once a failover has left it.
    look: AnyPool,
    /// The timeline it took writes on at the last round, 0 when that
    /// round did not find it taking writes.
    promoted_on: AtomicU32,
}

/// The replicas of one primary, and the monitor that looks at them.
#[derive(Debug)]
pub struct Replicas {
    replicas: Vec<Replica>,
    primary: Primary,
    limits: Limits,
    epoch: Instant,
    /// The primary's position at the last round that read it.
    primary_at: AtomicU64,
    /// The WAL's page and file sizes ([`WAL_SIZES`]), read once.
    wal_page: AtomicU64,
    wal_file: AtomicU64,
    wal_sizes_read: AtomicBool,
    /// The last rounds' starts and the primary's positions then, oldest
    /// first: a replica is current as of the latest round whose position
    /// it has replayed. Under steady writes the primary's position has
    /// always moved on by the time a replica is looked at, so comparing
    /// with the same round's position alone would almost never find one
    /// current.
    recent: parking_lot::Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// Counts rounds; a [`Freshness::NOW`] read waits on it.
    rounds: tokio::sync::watch::Sender<u64>,
    /// When a read last chose (µs since the epoch): the monitor looks
    /// every [`POLL_INTERVAL`] for [`BUSY_FOR`] after it.
    chosen_at: AtomicU64,
    /// Whether the monitor waits out an [`IDLE_POLL_INTERVAL`], which a
    /// read then cuts short through `wake`.
    idle: AtomicBool,
    wake: Arc<tokio::sync::Notify>,
    next: AtomicUsize,
    primary_reads: AtomicU64,
    /// Reads that had to be current and went to the primary without
    /// waiting: no replica in rotation had lately caught up within the
    /// wait.
    waits_skipped: AtomicU64,
}

/// A connection a read runs on, and where it goes.
#[derive(Debug)]
pub struct ReadConnection {
    /// The pooled connection.
    pub connection: PoolConnection<Any>,
    /// The server it is to.
    pub target: Target,
}

impl Replicas {
    /// Opens a pool of `pool_size` to each replica (its connections open
    /// lazily, so a replica down at start does not stop the service) and
    /// starts the monitor, which looks at the primary at `primary_url`
    /// through a connection of its own (never waiting behind the requests
    /// for one of theirs) and ends once the set is dropped. `primary` is
    /// the service's pool to the primary, which a failover replaces;
    /// statements slower than `slow` are logged as warnings, as on it.
    pub(crate) fn start(
        primary: PrimaryPool,
        primary_url: &str,
        urls: &[String],
        pool_size: u32,
        slow: Duration,
        limits: Limits,
    ) -> Result<Arc<Self>, sqlx::Error> {
        let configured_options = connect_options(primary_url, slow)?;
        let look = look_pool().connect_lazy_with(configured_options.clone());
        let replicas = urls
            .iter()
            .map(|url| {
                let options = connect_options(url, slow)?;
                // Idle connections go soon, so that a replica promoted to
                // primary is not left holding a pool of reads beside the
                // writes' own.
                let pool = AnyPoolOptions::new()
                    .max_connections(pool_size)
                    .acquire_timeout(LOOK_TIMEOUT)
                    .idle_timeout(REPLICA_IDLE)
                    .connect_lazy_with(options.clone());
                Ok(Replica {
                    name: host_of(url),
                    options,
                    pool,
                    replayed: AtomicU64::new(0),
                    timeline: AtomicU32::new(0),
                    seen_replaying: AtomicBool::new(false),
                    promoted_on: AtomicU32::new(0),
                    answered_at: AtomicU64::new(0),
                    current_as_of: AtomicU64::new(0),
                    catch_up_us: AtomicU64::new(0),
                    behind_bytes: AtomicU64::new(u64::MAX),
                    reads: AtomicU64::new(0),
                    in_rotation: AtomicBool::new(false),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let (rounds, _) = tokio::sync::watch::channel(0);
        let epoch = Instant::now();
        let set = Arc::new(Self {
            replicas,
            primary: Primary {
                pool: primary,
                pool_size,
                look: parking_lot::Mutex::new(look),
                name: parking_lot::Mutex::new(host_of(primary_url)),
                promoted: AtomicUsize::new(NOT_PROMOTED),
                timeline: AtomicU32::new(0),
                // The service has just reached it (the migrations ran).
                answered_at: AtomicU64::new(1),
                forked: AtomicBool::new(false),
                failovers: AtomicU64::new(0),
                configured: Configured {
                    look: look_pool().connect_lazy_with(configured_options.clone()),
                    options: configured_options,
                    name: host_of(primary_url),
                    promoted_on: AtomicU32::new(0),
                },
                hidden_said: AtomicBool::new(false),
            },
            limits,
            epoch,
            primary_at: AtomicU64::new(0),
            wal_page: AtomicU64::new(DEFAULT_WAL_PAGE),
            wal_file: AtomicU64::new(DEFAULT_WAL_FILE),
            wal_sizes_read: AtomicBool::new(false),
            recent: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(
                RECENT_ROUNDS,
            )),
            rounds,
            chosen_at: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            next: AtomicUsize::new(0),
            primary_reads: AtomicU64::new(0),
            waits_skipped: AtomicU64::new(0),
        });
        let (weak, wake) = (Arc::downgrade(&set), Arc::clone(&set.wake));
        tokio::spawn(async move {
            loop {
                let began = tokio::time::Instant::now();
                let Some(set) = weak.upgrade() else {
                    return;
                };
                set.round().await;
                let chosen_at = set.chosen_at.load(Ordering::Relaxed);
                let busy_for = u64::try_from(BUSY_FOR.as_micros()).unwrap_or(u64::MAX);
                let mut busy = chosen_at != 0 && set.now_us().saturating_sub(chosen_at) < busy_for;
                if !busy {
                    set.idle.store(true, Ordering::Relaxed);
                    // A read that chose before that store saw the monitor
                    // busy and did not wake it: no lull then.
                    busy = set.chosen_at.load(Ordering::Relaxed) != chosen_at;
                    if busy {
                        set.idle.store(false, Ordering::Relaxed);
                    }
                }
                // Not held while waiting: the set ends when its owners drop it.
                drop(set);
                if busy {
                    tokio::time::sleep_until(began + POLL_INTERVAL).await;
                } else {
                    tokio::select! {
                        () = tokio::time::sleep_until(began + IDLE_POLL_INTERVAL) => {}
                        () = wake.notified() => {}
                    }
                }
            }
        });
        Ok(set)
    }

    /// Closes the replicas' pools and the monitor's connection.
    pub async fn close(&self) {
        for replica in &self.replicas {
            replica.pool.close().await;
        }
        let look = self.primary.look.lock().clone();
        look.close().await;
        self.primary.configured.look.close().await;
    }

    /// How many replicas there are.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The position every transaction committed before the primary was
    /// at `insert` is within (see `settle`): `insert`, or the start of
    /// the WAL page it is at when no record is on that page yet.
    pub fn settled(&self, insert: Lsn) -> Lsn {
        settle(
            insert,
            self.wal_page.load(Ordering::Relaxed),
            self.wal_file.load(Ordering::Relaxed),
        )
    }

    /// One look at the primary, then at every replica at once; then, if a
    /// replica has been promoted, the failover to it.
    async fn round(&self) {
        let began = self.now_us();
        let look_pool = self.primary.look.lock().clone();
        if !self.wal_sizes_read.load(Ordering::Relaxed)
            && let Some((page, file)) = look(&look_pool, WAL_SIZES)
                .await
                .and_then(|text| parse_wal_sizes(&text))
        {
            self.wal_page.store(page, Ordering::Relaxed);
            self.wal_file.store(file, Ordering::Relaxed);
            self.wal_sizes_read.store(true, Ordering::Relaxed);
        }
        let primary = look(&look_pool, PRIMARY_LOOK)
            .await
            .and_then(|text| parse_primary(&text))
            .map(|(position, timeline)| (self.settled(position), timeline));
        // Stored, not raised to the highest seen: after a failover to a
        // replica that had not replayed the old primary's last writes, the
        // new primary's position is lower, and replicas are compared with
        // it. Rounds never overlap, so a store is never an older look's.
        if let Some((position, timeline)) = primary {
            self.primary.answered_at.store(began, Ordering::Relaxed);
            let known = self.primary.timeline.swap(timeline, Ordering::Relaxed);
            if known != 0 && known != timeline {
                // Failed over behind this process's back (the URL names
                // whichever server is the primary now).
                self.primary.forked.store(true, Ordering::Relaxed);
                tracing::warn!(
                    from = known,
                    to = timeline,
                    "the database primary's timeline changed: it was failed over"
                );
            }
            self.primary_at.store(position.0, Ordering::Relaxed);
            let mut recent = self.recent.lock();
            if recent.len() == RECENT_ROUNDS {
                recent.pop_front();
            }
            recent.push_back((began, position.0));
        }
        let primary_at = primary.map(|(position, _)| position);
        let looks = self.replicas.iter().map(|replica| async move {
            let seen = look(&replica.pool, REPLICA_LOOK)
                .await
                .and_then(|text| parse_replica(&text));
            (replica, seen)
        });
        // While a replica is the primary, `database.url` too.
        let configured = async {
            if self.primary.promoted.load(Ordering::Relaxed) == NOT_PROMOTED {
                return 0;
            }
            match look(&self.primary.configured.look, REPLICA_LOOK)
                .await
                .and_then(|text| parse_replica(&text))
            {
                Some(Seen::Primary { timeline }) => timeline,
                _ => 0,
            }
        };
        let (seen, configured) = tokio::join!(futures_util::future::join_all(looks), configured);
        self.primary
            .configured
            .promoted_on
            .store(configured, Ordering::Relaxed);
        for (replica, seen) in seen {
            match seen {
                Some(Seen::Replaying { replayed, timeline }) => {
                    replica.seen_replaying.store(true, Ordering::Relaxed);
                    replica.promoted_on.store(0, Ordering::Relaxed);
                    if timeline != 0 {
                        replica.timeline.store(timeline, Ordering::Relaxed);
                    }
                    if timeline == HIDDEN && !self.primary.hidden_said.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(
                            replica = %replica.name,
                            "the database user may not see which timeline the replicas receive \
                             (grant it pg_read_all_stats): a replica left on an old timeline by a \
                             failover before this process started cannot be told apart, and after \
                             a failover no replica takes reads"
                        );
                    }
                    self.replayed(replica, replayed, primary_at, began);
                }
                Some(Seen::Primary { timeline }) => {
                    replica.promoted_on.store(timeline, Ordering::Relaxed);
                }
                None => replica.promoted_on.store(0, Ordering::Relaxed),
            }
            let in_rotation = self.in_rotation(replica, self.now_us());
            if replica.in_rotation.swap(in_rotation, Ordering::Relaxed) != in_rotation {
                if in_rotation {
                    tracing::info!(replica = %replica.name, "the database replica takes reads again");
                } else {
                    tracing::warn!(
                        replica = %replica.name,
                        behind_bytes = replica.behind_bytes.load(Ordering::Relaxed),
                        "the database replica takes no reads: it did not answer, it is behind the lag limits, or it is not on the primary's timeline"
                    );
                }
            }
        }
        if let Some((at, timeline)) = self.promoted_replica() {
            self.fail_over(at, timeline);
        }
        self.rounds.send_modify(|rounds| *rounds += 1);
    }

    /// Records that `replica` has replayed up to `replayed`, and what that
    /// says of it beside the primary's position `primary_at`, read by the
    /// round that began at `began`.
    fn replayed(&self, replica: &Replica, replayed: Lsn, primary_at: Option<Lsn>, began: u64) {
        replica.replayed.store(replayed.0, Ordering::Relaxed);
        replica.answered_at.store(self.now_us(), Ordering::Relaxed);
        if let Some(primary_at) = primary_at {
            replica
                .behind_bytes
                .store(primary_at.0.saturating_sub(replayed.0), Ordering::Relaxed);
            // Everything committed before a round began is at or before
            // the primary's position then: replayed past it, the replica
            // shows all of it.
            let current_as_of = self
                .recent
                .lock()
                .iter()
                .rev()
                .find(|(_, position)| *position <= replayed.0)
                .map(|(began, _)| *began);
            if let Some(current_as_of) = current_as_of {
                replica
                    .current_as_of
                    .fetch_max(current_as_of, Ordering::Relaxed);
            }
            let current = replica.current_as_of.load(Ordering::Relaxed);
            if current != 0 {
                // An average over about the last eight rounds; only the
                // monitor writes it, and rounds never overlap.
                let sample = began.saturating_sub(current);
                let smoothed = replica.catch_up_us.load(Ordering::Relaxed);
                let smoothed = smoothed - smoothed / 8 + sample / 8;
                replica.catch_up_us.store(smoothed, Ordering::Relaxed);
            }
        }
    }

    /// The server to fail over to ([`NOT_PROMOTED`] for `database.url`),
    /// and its timeline: of the replicas a round has seen replaying, and
    /// `database.url` while a replica is the primary, the one taking
    /// writes on the newest timeline, if that is newer than the primary's
    /// (or the primary's is unknown and it has not answered for
    /// [`DOWN_AFTER`]).
    fn promoted_replica(&self) -> Option<(usize, u32)> {
        let current = self.primary.promoted.load(Ordering::Relaxed);
        let configured = (current != NOT_PROMOTED).then(|| {
            (
                NOT_PROMOTED,
                self.primary.configured.promoted_on.load(Ordering::Relaxed),
            )
        });
        let (at, timeline) = self
            .replicas
            .iter()
            .enumerate()
            .filter(|&(at, replica)| {
                at != current && replica.seen_replaying.load(Ordering::Relaxed)
            })
            .map(|(at, replica)| (at, replica.promoted_on.load(Ordering::Relaxed)))
            .chain(configured)
            .filter(|&(_, timeline)| timeline != 0)
            .max_by_key(|&(_, timeline)| timeline)?;
        let newer = match self.primary.timeline.load(Ordering::Relaxed) {
            0 => {
                let silent = self
                    .now_us()
                    .saturating_sub(self.primary.answered_at.load(Ordering::Relaxed));
                silent > u64::try_from(DOWN_AFTER.as_micros()).unwrap_or(u64::MAX)
            }
            known => timeline > known,
        };
        newer.then_some((at, timeline))
    }

    /// Makes the server at `at` (a replica, or [`NOT_PROMOTED`] for
    /// `database.url`), promoted onto `timeline`, the primary: what the
    /// rounds know is set first, then pools to the new primary take the
    /// place of the service's pool and the monitor's connection, and the
    /// old ones are closed (waiting at most [`CLOSE_WAIT`] for their
    /// connections in use). The replicas' findings of currency, made
    /// against the old primary's positions, are dropped.
    fn fail_over(&self, at: usize, timeline: u32) {
        let (options, name) = match self.replicas.get(at) {
            Some(replica) => {
                // It takes writes now, and no reads as a replica.
                replica.answered_at.store(0, Ordering::Relaxed);
                (replica.options.clone(), replica.name.clone())
            }
            None => (
                self.primary.configured.options.clone(),
                self.primary.configured.name.clone(),
            ),
        };
        self.primary.promoted.store(at, Ordering::Relaxed);
        self.primary.timeline.store(timeline, Ordering::Relaxed);
        self.primary
            .answered_at
            .store(self.now_us(), Ordering::Relaxed);
        self.primary.forked.store(true, Ordering::Relaxed);
        self.recent.lock().clear();
        for replica in &self.replicas {
            replica.current_as_of.store(0, Ordering::Relaxed);
        }
        let old_name = std::mem::replace(&mut *self.primary.name.lock(), name.clone());
        let look = look_pool().connect_lazy_with(options.clone());
        let old_look = std::mem::replace(&mut *self.primary.look.lock(), look);
        let pool = primary_pool_options(self.primary.pool_size).connect_lazy_with(options);
        let old_pool = self.primary.pool.replace(pool);
        self.primary.failovers.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let closed = tokio::time::timeout(CLOSE_WAIT, async {
                tokio::join!(old_look.close(), old_pool.close())
            })
            .await;
            if closed.is_err() {
                tracing::warn!(
                    "connections to the old database primary were still in use {CLOSE_WAIT:?} after the failover; they end when their statements do"
                );
            }
        });
        tracing::warn!(
            from = %old_name,
            to = %name,
            timeline,
            "the database failed over: a promoted server takes the writes now"
        );
    }

    fn in_rotation(&self, replica: &Replica, now: u64) -> bool {
        let answered = replica.answered_at.load(Ordering::Relaxed);
        let current = replica.current_as_of.load(Ordering::Relaxed);
        let within = |since: u64, limit: Duration| {
            since != 0
                && now.saturating_sub(since) <= u64::try_from(limit.as_micros()).unwrap_or(u64::MAX)
        };
        // A replica must show that it follows the primary's history: one
        // left on an old timeline by a failover (here, or before this
        // process started) may have replayed writes the primary never had,
        // and has no WAL receiver, or one on that timeline. One whose
        // receiver is hidden from the user is trusted until a failover.
        let timeline = replica.timeline.load(Ordering::Relaxed);
        let primary_timeline = self.primary.timeline.load(Ordering::Relaxed);
        let same_history = match timeline {
            0 => false,
            HIDDEN => !self.primary.forked.load(Ordering::Relaxed),
            timeline => primary_timeline == 0 || timeline == primary_timeline,
        };
        within(answered, DOWN_AFTER)
            && within(current, self.limits.max_lag)
            && replica.behind_bytes.load(Ordering::Relaxed) < self.limits.max_lag_bytes
            && same_history
    }

    /// A replica that serves a read of `freshness` begun at `began` (µs),
    /// taken in turn among those that do.
    fn pick(&self, freshness: Freshness, began: u64) -> Option<usize> {
        let now = self.now_us();
        let count = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&at| {
                let replica = &self.replicas[at];
                self.in_rotation(replica, now)
                    && freshness
                        .after
                        .is_none_or(|after| replica.replayed.load(Ordering::Relaxed) >= after.0)
                    && (!freshness.now || replica.current_as_of.load(Ordering::Relaxed) > began)
            })
    }

    /// Where a read of `freshness` beginning now goes: a replica that
    /// serves it (for [`Freshness::NOW`], waiting up to the set's wait for
    /// a round to find one current), else the primary.
    pub async fn choose(&self, freshness: Freshness) -> Target {
        let began = self.now_us();
        // Stored a few times a second at most, not by every read.
        if began.saturating_sub(self.chosen_at.load(Ordering::Relaxed)) > CHOSEN_AT_STEP_US {
            self.chosen_at.store(began, Ordering::Relaxed);
        }
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::Relaxed) {
            // The first read after a lull: a round now, and every
            // POLL_INTERVAL while reads go on.
            self.wake.notify_one();
        }
        // Subscribed before the first pick, so that a round ending between
        // the two is not missed by the wait below.
        let mut rounds = freshness.now.then(|| self.rounds.subscribe());
        if let Some(at) = self.pick(freshness, began) {
            return Target::Replica(at);
        }
        let worth_waiting = freshness.now && !self.limits.wait.is_zero() && {
            let now = self.now_us();
            let wait_us = u64::try_from(self.limits.wait.as_micros()).unwrap_or(u64::MAX);
            let (mut in_rotation, mut catches_up) = (false, false);
            for replica in &self.replicas {
                if self.in_rotation(replica, now) {
                    in_rotation = true;
                    catches_up |= replica.catch_up_us.load(Ordering::Relaxed) < wait_us;
                }
            }
            // A wait that none of the replicas has lately been able to
            // end would only add itself to the read.
            if in_rotation && !catches_up {
                self.waits_skipped.fetch_add(1, Ordering::Relaxed);
            }
            catches_up
        };
        if let (true, Some(rounds)) = (worth_waiting, rounds.as_mut()) {
            let deadline = tokio::time::Instant::now() + self.limits.wait;
            while tokio::time::timeout_at(deadline, rounds.changed())
                .await
                .is_ok_and(|changed| changed.is_ok())
            {
                if let Some(at) = self.pick(freshness, began) {
                    return Target::Replica(at);
                }
            }
        }
        Target::Primary
    }

    /// A connection to the replica at `at`, counting the read; `None` when
    /// none can be had (the replica is then out of rotation until a round
    /// finds it answering).
    pub async fn acquire(&self, at: usize) -> Option<PoolConnection<Any>> {
        let replica = &self.replicas[at];
        let connection = match replica.pool.try_acquire() {
            Some(connection) => Some(connection),
            None => replica.pool.acquire().await.ok(),
        };
        match connection {
            Some(connection) => {
                replica.reads.fetch_add(1, Ordering::Relaxed);
                Some(connection)
            }
            None => {
                replica.answered_at.store(0, Ordering::Relaxed);
                None
            }
        }
    }

    /// Whether the monitor rests: no read has chosen for [`BUSY_FOR`], so
    /// it looks every [`IDLE_POLL_INTERVAL`] until the next read wakes it.
    pub fn resting(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }

    /// Reads that had to be current and went to the primary at once,
    /// since no replica in rotation had lately caught up within
    /// `database.replica_wait`.
    pub fn waits_skipped(&self) -> u64 {
        self.waits_skipped.load(Ordering::Relaxed)
    }

    /// Counts a read sent to the primary.
    pub fn count_primary_read(&self) {
        self.primary_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the replica at `at` out of rotation until a round finds it
    /// answering again: a statement on it failed for want of the server.
    pub fn found_down(&self, at: usize) {
        if let Some(replica) = self.replicas.get(at) {
            replica.answered_at.store(0, Ordering::Relaxed);
        }
    }

    /// Each replica's state, in the order of `database.replicas`.
    pub fn states(&self) -> Vec<ReplicaState> {
        let now = self.now_us();
        let ago =
            |since: u64| (since != 0).then(|| Duration::from_micros(now.saturating_sub(since)));
        self.replicas
            .iter()
            .map(|replica| ReplicaState {
                name: replica.name.clone(),
                in_rotation: self.in_rotation(replica, now),
                replayed: Lsn(replica.replayed.load(Ordering::Relaxed)),
                behind_bytes: match replica.behind_bytes.load(Ordering::Relaxed) {
                    u64::MAX => None,
                    bytes => Some(bytes),
                },
                current_as_of_ago: ago(replica.current_as_of.load(Ordering::Relaxed)),
                catch_up: Duration::from_micros(replica.catch_up_us.load(Ordering::Relaxed)),
                answered_ago: ago(replica.answered_at.load(Ordering::Relaxed)),
                reads: replica.reads.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The primary now, as the rounds know it.
    pub fn primary(&self) -> PrimaryState {
        let promoted = self.primary.promoted.load(Ordering::Relaxed);
        PrimaryState {
            name: self.primary.name.lock().clone(),
            promoted_replica: (promoted != NOT_PROMOTED).then_some(promoted),
            timeline: match self.primary.timeline.load(Ordering::Relaxed) {
                0 => None,
                timeline => Some(timeline),
            },
            answered_ago: Duration::from_micros(
                self.now_us()
                    .saturating_sub(self.primary.answered_at.load(Ordering::Relaxed)),
            ),
            failovers: self.primary.failovers.load(Ordering::Relaxed),
        }
    }

    /// Reads sent to the primary.
    pub fn primary_reads(&self) -> u64 {
        self.primary_reads.load(Ordering::Relaxed)
    }

    /// The primary's WAL position at the monitor's last look.
    pub fn primary_position(&self) -> Lsn {
        Lsn(self.primary_at.load(Ordering::Relaxed))
    }

    /// The replicas' metrics, for a scrape-time collector.
    #[allow(clippy::cast_precision_loss)] // counts and bytes, shown as floats
    pub fn collect(&self) -> Vec<CollectedFamily> {
        let states = self.states();
        let mut reads = CollectedFamily::counter(
            "db_reads",
            "Reads of the database that may go to a replica, by the server they went to.",
            &["target"],
        )
        .sample(&["primary"], self.primary_reads() as f64);
        let mut up = CollectedFamily::gauge(
            "db_replica_in_rotation",
            "1 while the replica takes reads: it answers, and is within both lag limits.",
            &["replica"],
        );
        let mut bytes = CollectedFamily::gauge(
            "db_replica_lag_bytes",
            "How far the replica's replay is behind the primary's WAL position, in bytes.",
            &["replica"],
        );
        let mut seconds = CollectedFamily::gauge(
            "db_replica_lag_seconds",
            "How long ago the replica was last found current (everything committed before then visible on it).",
            &["replica"],
        );
        let mut catch_up = CollectedFamily::gauge(
            "db_replica_catch_up_seconds",
            "How far behind each look's start the replica has lately been current as of: what a read that must be current can expect to wait for it.",
            &["replica"],
        );
        let not_waited = CollectedFamily::counter(
            "db_reads_not_waited",
            "Reads that had to be current and went to the primary at once: no replica in rotation had lately caught up within database.replica_wait.",
            &[],
        )
        .sample(&[], self.waits_skipped() as f64);
        for state in &states {
            let name = [state.name.as_str()];
            catch_up = catch_up.sample(&name, state.catch_up.as_secs_f64());
            reads = reads.sample(&name, state.reads as f64);
            up = up.sample(&name, if state.in_rotation { 1.0 } else { 0.0 });
            if let Some(behind) = state.behind_bytes {
                bytes = bytes.sample(&name, behind as f64);
            }
            if let Some(ago) = state.current_as_of_ago {
                seconds = seconds.sample(&name, ago.as_secs_f64());
            }
        }
        let primary = self.primary();
        let failovers = CollectedFamily::counter(
            "db_failovers",
            "Failovers to a promoted replica this process made.",
            &[],
        )
        .sample(&[], primary.failovers as f64);
        let timeline = CollectedFamily::gauge(
            "db_primary_timeline",
            "The PostgreSQL timeline of the primary writes go to (it grows by one at each promotion).",
            &[],
        )
        .sample(&[], f64::from(primary.timeline.unwrap_or(0)));
        vec![
            reads, not_waited, up, bytes, seconds, catch_up, failovers, timeline,
        ]
    }
}

/// What the monitor knows of the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryState {
    /// Its host and port.
    pub name: String,
    /// The index in `database.replicas` of the replica promoted to it;
    /// `None` while it is `database.url`.
    pub promoted_replica: Option<usize>,
    /// Its timeline, once a look has read it.
    pub timeline: Option<u32>,
    /// How long ago it last answered a look (or was failed over to).
    pub answered_ago: Duration,
    /// Failovers this process made.
    pub failovers: u64,
}

/// What the monitor knows of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// Its host and port.
    pub name: String,
    /// Whether it takes reads.
    pub in_rotation: bool,
    /// How far it has replayed.
    pub replayed: Lsn,
    /// How far behind the primary it was at the last round that reached
    /// both.
    pub behind_bytes: Option<u64>,
    /// How long ago it was last found current.
    pub current_as_of_ago: Option<Duration>,
    /// How far behind a round's start it has lately been current as of
    /// (an average over about the last eight rounds): what a read that
    /// must be current can expect to wait for it. A read waits for a
    /// replica only while one's is under `database.replica_wait`.
    pub catch_up: Duration,
    /// How long ago it last answered.
    pub answered_ago: Option<Duration>,
    /// Reads it took.
    pub reads: u64,
}

/// Runs `sql` (one text column) on `pool` within [`LOOK_TIMEOUT`]; `None`
/// for no answer, an error, or no row.
async fn look(pool: &AnyPool, sql: &'static str) -> Option<String> {
    let row: Option<(String,)> =
        tokio::time::timeout(LOOK_TIMEOUT, sqlx::query_as(sql).fetch_optional(pool))
            .await
            .ok()?
            .ok()?;
    Some(row?.0)
}

/// The pool of the monitor's own connection to the primary.
fn look_pool() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(LOOK_TIMEOUT)
}

/// The timeline a WAL file's name (`000000020000000000000003`) starts
/// with.
fn timeline_of(wal_file: &str) -> Option<u32> {
    let digits = wal_file.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16)
        .ok()
        .filter(|&timeline| timeline != 0)
}

/// The primary's answer to [`PRIMARY_LOOK`]: its position and timeline.
fn parse_primary(text: &str) -> Option<(Lsn, u32)> {
    let (position, wal_file) = text.split_once(' ')?;
    Some((position.parse().ok()?, timeline_of(wal_file)?))
}

/// The position every transaction committed so far is within, from the
/// primary's insert position and its WAL's page and file sizes.
///
/// The insert position is where the next record goes. When the last
/// record ended at a WAL page's end (often: a WAL file switched, as at a
/// start-up or `pg_switch_wal()`), it is past the next page's header,
/// which no record is in, and a replica that has replayed everything
/// reports the page's start: the position is then the page's start, or a
/// replica would never be found current until the next write.
fn settle(insert: Lsn, page: u64, file: u64) -> Lsn {
    let header = if file > 0 && insert.0 % file == LONG_PAGE_HEADER {
        LONG_PAGE_HEADER
    } else if page > 0 && insert.0 % page == SHORT_PAGE_HEADER {
        SHORT_PAGE_HEADER
    } else {
        0
    };
    Lsn(insert.0 - header)
}

/// An answer to [`WAL_SIZES`]: the page size and the file size.
fn parse_wal_sizes(text: &str) -> Option<(u64, u64)> {
    let (page, file) = text.split_once(' ')?;
    let (page, file) = (page.parse().ok()?, file.parse().ok()?);
    (page > 0 && file >= page).then_some((page, file))
}

/// What a look found a replica doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Replaying, up to here, receiving this timeline (0: no receiver,
    /// [`HIDDEN`]: not visible to the user).
    Replaying { replayed: Lsn, timeline: u32 },
    /// Taking writes, on this timeline: it was promoted.
    Primary { timeline: u32 },
}

/// A replica's answer to [`REPLICA_LOOK`].
fn parse_replica(text: &str) -> Option<Seen> {
    let mut words = text.split(' ');
    let seen = match (words.next()?, words.next()?, words.next()) {
        ("replica", replayed, Some(timeline)) => Seen::Replaying {
            replayed: replayed.parse().ok()?,
            timeline: match timeline {
                "?" => HIDDEN,
                timeline => timeline
                    .parse()
                    .ok()
                    .filter(|&timeline| timeline != HIDDEN)?,
            },
        },
        ("primary", wal_file, None) => Seen::Primary {
            timeline: timeline_of(wal_file)?,
        },
        _ => return None,
    };
    words.next().is_none().then_some(seen)
}

/// `host:port` of a PostgreSQL URL, without its user or password.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use crate::db::Db;
    use seawall_perfmon::Monitor;
    use seawall_testkit::{Postgres, wait};

    /// The count of `marks`, read through `db` as `freshness` (on the
    /// primary or a replica).
    pub(crate) async fn marks(db: &Db, freshness: Freshness) -> i64 {
        db.read(freshness, |connection| {
            Box::pin(async move {
                sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM marks")
                    .fetch_one(connection)
                    .await
                    .map(|(count,)| count)
            })
        })
        .await
        .expect("reads")
    }

    pub(crate) async fn mark(db: &Db) -> Lsn {
        let mut connection = db.acquire().await.expect("a connection");
        sqlx::query("INSERT INTO marks VALUES (1)")
            .execute(&mut *connection)
            .await
            .expect("inserts");
        let (position,): (String,) = sqlx::query_as(POSITION_SQL)
            .fetch_one(&mut *connection)
            .await
            .expect("a position");
        let position = position.parse().expect("a position");
        db.replicas()
            .map_or(position, |replicas| replicas.settled(position))
    }

    pub(crate) fn state(db: &Db) -> ReplicaState {
        db.replicas().expect("replicas").states().remove(0)
    }

    pub(crate) async fn until_in_rotation(db: &Db, wanted: bool) {
        wait::until_async(format!("the replica in rotation: {wanted}"), async || {
            state(db).in_rotation == wanted
        })
        .await;
    }

    /// The configuration of a pool of 4 on the primary at `url` with
    /// `replicas`, `max_lag` and `wait`.
    fn config(
        url: &str,
        replicas: &[&Postgres],
        max_lag: Duration,
        wait: Duration,
    ) -> DatabaseConfig {
        DatabaseConfig {
            url: url.to_owned(),
            max_connections: Some(4),
            replicas: replicas.iter().map(|replica| replica.url()).collect(),
            replica_max_lag: max_lag,
            replica_wait: wait,
            ..DatabaseConfig::default()
        }
    }

    /// Connects with `config` and makes the table `marks`.
    async fn with_marks(config: &DatabaseConfig) -> Db {
        let db = Db::connect(config, Monitor::new()).await.expect("connects");
        sqlx::query("CREATE TABLE marks (n BIGINT)")
            .execute(&db.pool())
            .await
            .expect("creates");
        db
    }

    /// A primary and a streaming replica of it, and a pool on both with
    /// `max_lag` and `wait` (`database.replica_max_lag`, `replica_wait`),
    /// once the replica is in rotation, with a table `marks` to write to.
    pub(crate) async fn primary_and_replica(
        max_lag: Duration,
        wait: Duration,
    ) -> (Postgres, Postgres, Db) {
        let primary = Postgres::start().expect("the primary starts");
        let replica = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("the replica starts");
        let db = with_marks(&config(&primary.url(), &[&replica], max_lag, wait)).await;
        until_in_rotation(&db, true).await;
        (primary, replica, db)
    }

    /// A replica takes the reads it is current enough for, and no read
    /// ever sees the past: one that must see every write before it waits
    /// for a round to find the replica current, or goes to the primary
    /// while its replay is paused; one after a position goes where that
    /// position is replayed. Paused behind writes, killed, the replica
    /// leaves rotation, and comes back by itself once resumed, restarted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_go_to_a_replica_current_enough_and_never_see_the_past() {
        // A loaded machine's rounds may take a while; the wait is what lets
        // a read that must be current use the replica at all.
        let (_primary, mut replica, db) =
            primary_and_replica(Duration::from_millis(200), Duration::from_secs(1)).await;

        // Current: the write before the read is seen, on the replica.
        let position = mark(&db).await;
        wait::until_async("the replica to replay the write", async || {
            state(&db).replayed >= position
        })
        .await;
        assert_eq!(marks(&db, Freshness::NOW).await, 1);
        assert_eq!(state(&db).reads, 1, "{:?}", state(&db));
        let primary_reads = db.replicas().expect("replicas").primary_reads();

        // Paused: a read that must see the write goes to the primary.
        replica.pause_replay().expect("pauses");
        let position = mark(&db).await;
        assert_eq!(marks(&db, Freshness::NOW).await, 2);
        assert_eq!(marks(&db, Freshness::after(position)).await, 2);
        let replicas = db.replicas().expect("replicas");
        assert_eq!(replicas.primary_reads(), primary_reads + 2);
        // Behind the primary for longer than the lag limit: out.
        until_in_rotation(&db, false).await;
        assert!(state(&db).behind_bytes.is_some_and(|bytes| bytes > 0));
        assert_eq!(marks(&db, Freshness::ANY).await, 2, "the primary answers");
        replica.resume_replay().expect("resumes");
        until_in_rotation(&db, true).await;
        let reads = state(&db).reads;
        assert_eq!(marks(&db, Freshness::after(position)).await, 2);
        assert_eq!(
            state(&db).reads,
            reads + 1,
            "past the position, the replica reads"
        );

        // Killed: the reads sent its way go to the primary at once, then
        // it is out; restarted: back.
        replica.kill().expect("kills");
        for _ in 0..4 {
            assert_eq!(marks(&db, Freshness::ANY).await, 2);
        }
        until_in_rotation(&db, false).await;
        assert_eq!(marks(&db, Freshness::ANY).await, 2);
        replica.restart().expect("restarts");
        until_in_rotation(&db, true).await;
        db.close().await;
    }

    /// A primary that flushes its WAL late (`synchronous_commit` off, as
    /// the testkit runs it, and a `wal_writer_delay` of 10 s) under steady
    /// writes: its replicas receive only what is flushed, so a replica is
    /// current only as of the last flush, seconds ago, and a read that
    /// must be current would wait its whole wait in vain. It goes to the
    /// primary at once. Once the primary flushes every 10 ms, the replica
    /// catches up within the wait again, and the same read waits for it
    /// and is served there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_does_not_wait_for_a_replica_that_cannot_catch_up_in_time() {
        let primary = Postgres::builder()
            .setting("wal_writer_delay", "10s")
            .start()
            .expect("the primary starts");
        let replica = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("the replica starts");
        // Long enough for a loaded machine's rounds, as above.
        let wait = Duration::from_secs(1);
        let db = with_marks(&config(
            &primary.url(),
            &[&replica],
            Duration::from_secs(120),
            wait,
        ))
        .await;
        until_in_rotation(&db, true).await;
        let replicas = db.replicas().expect("replicas").clone();

        // Stopped between writes, not in one: a write cut off in flight
        // leaves WAL that no commit asks to be flushed.
        let stop = Arc::new(AtomicBool::new(false));
        let writes = tokio::spawn({
            let (db, stop) = (db.clone(), Arc::clone(&stop));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    mark(&db).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        wait::until_async("the replica's catch-up to pass the wait", async || {
            state(&db).catch_up > wait
        })
        .await;
        let (skipped, primary_reads) = (replicas.waits_skipped(), replicas.primary_reads());
        marks(&db, Freshness::NOW).await;
        assert_eq!(replicas.waits_skipped(), skipped + 1, "{:?}", state(&db));
        assert_eq!(replicas.primary_reads(), primary_reads + 1);
        // Flushing every 10 ms: the replica catches up within the wait
        // again, and is waited for.
        for statement in [
            "ALTER SYSTEM SET wal_writer_delay = '10ms'",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(statement)
                .execute(&db.pool())
                .await
                .expect("reconfigures");
        }
        stop.store(true, Ordering::Relaxed);
        writes.await.expect("the writes end");
        wait::until_async("the replica to catch up within the wait", async || {
            state(&db).catch_up < wait
        })
        .await;
        let (skipped, reads) = (replicas.waits_skipped(), state(&db).reads);
        let count = marks(&db, Freshness::NOW).await;
        assert_eq!(replicas.waits_skipped(), skipped);
        assert_eq!(state(&db).reads, reads + 1, "{:?}", state(&db));
        assert_eq!(count, marks(&db, Freshness::ANY).await);
        db.close().await;
    }

    /// After a WAL file switch the primary's insert position is past the
    /// new file's page header, where no record is, and a replica that has
    /// replayed everything reports the file's start. It is current all
    /// the same: a read that must be current is served there, as is a
    /// caller's read after a write that ended the last page. (Found
    /// measuring a fleet with no writes: every cache fill of a resting
    /// primary waited its whole wait and read the primary.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_is_current_while_the_primary_rests_at_a_page_start() {
        let (primary, replica, db) =
            primary_and_replica(Duration::from_secs(120), Duration::from_secs(5)).await;
        let replicas = db.replicas().expect("replicas").clone();
        let at_page_start = || {
            primary
                .psql("SELECT (pg_walfile_name_offset(pg_current_wal_insert_lsn())).file_offset")
                .expect("reads")
                == "40"
        };
        // Anything the server writes on its own (a checkpoint, a standby
        // snapshot) moves it off the page start: then once more.
        for _ in 0..5 {
            mark(&db).await;
            primary.psql("SELECT pg_switch_wal()").expect("switches");
            let start = primary
                .psql("SELECT pg_current_wal_insert_lsn() - 40")
                .expect("reads");
            wait::until("the replica to replay the switch", || {
                replica
                    .psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{start}'"))
                    .expect("reads")
                    == "t"
            });
            if !at_page_start() {
                continue;
            }
            let (reads, primary_reads) = (state(&db).reads, replicas.primary_reads());
            let count = marks(&db, Freshness::NOW).await;
            if !at_page_start() {
                continue;
            }
            assert_eq!(replicas.primary_reads(), primary_reads, "{:?}", state(&db));
            assert_eq!(state(&db).reads, reads + 1);
            assert_eq!(count, marks_on_primary(&db).await);
            db.close().await;
            return;
        }
        panic!("the primary never rested at a page start");
    }

    /// Without reads the monitor rests (it looks every
    /// IDLE_POLL_INTERVAL, not every POLL_INTERVAL); the first read after
    /// the lull wakes it and is served by the replica, current, and the
    /// monitor looks often again while reads go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_monitor_rests_while_no_read_chooses_and_a_read_wakes_it() {
        let (_primary, _replica, db) =
            primary_and_replica(Duration::from_secs(120), Duration::from_secs(5)).await;
        let replicas = db.replicas().expect("replicas").clone();
        mark(&db).await;
        wait::until_async("the monitor to rest", async || replicas.resting()).await;
        // Resting, it still keeps the replica in rotation.
        assert!(state(&db).in_rotation, "{:?}", state(&db));
        let (reads, primary_reads) = (state(&db).reads, replicas.primary_reads());
        assert_eq!(marks(&db, Freshness::NOW).await, 1);
        assert_eq!(replicas.primary_reads(), primary_reads, "{:?}", state(&db));
        assert_eq!(state(&db).reads, reads + 1);
        assert!(!replicas.resting(), "a read woke it");
        db.close().await;
    }

    #[test]
    fn a_position_at_a_page_start_is_the_page_s_start() {
        const PAGE: u64 = 8192;
        const FILE: u64 = 16 << 20;
        for (insert, settled) in [
            // Records on the page: as it is.
            (0x300_0148, 0x300_0148),
            // A WAL file's first page, nothing on it yet: its start.
            (0x300_0028, 0x300_0000),
            // Another page, nothing on it yet.
            (0x300_2018, 0x300_2000),
            // 40 bytes into a page that is not a file's first: a record
            // ends there.
            (0x300_2028, 0x300_2028),
            (0, 0),
        ] {
            assert_eq!(settle(Lsn(insert), PAGE, FILE), Lsn(settled), "{insert:X}");
        }
        // Other sizes, as PostgreSQL reports them.
        assert_eq!(parse_wal_sizes("8192 16777216"), Some((PAGE, FILE)));
        assert_eq!(settle(Lsn(0x10_0028), 32_768, 1 << 20), Lsn(0x10_0000));
        assert_eq!(settle(Lsn(0x10_8018), 32_768, 1 << 20), Lsn(0x10_8000));
        for bad in ["", "8192", "0 16777216", "8192 4096", "x 16777216"] {
            assert_eq!(parse_wal_sizes(bad), None, "{bad}");
        }
    }

    #[test]
    fn positions_read_and_print_as_postgres_does() {
        for (text, value) in [
            ("0/0", 0),
            ("0/3000148", 0x300_0148),
            ("16/B374D848", (0x16 << 32) | 0xB374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            let lsn: Lsn = text.parse().expect("a position");
            assert_eq!(lsn, Lsn(value));
            assert_eq!(lsn.to_string(), text);
        }
        for bad in [
            "",
            "0",
            "/",
            "0/",
            "/0",
            "1/2/3",
            "g/0",
            "100000000/0",
            "-1/0",
            " 0/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
        assert!(Lsn(1) < "0/2".parse().expect("a position"));
    }

    /// A pool on `primary` with `replicas`, with a table `marks`, once
    /// every replica is in rotation.
    async fn db_on(primary: &Postgres, replicas: &[&Postgres]) -> Db {
        db_at(&primary.url(), replicas).await
    }

    /// [`db_on`] the primary at `url`.
    async fn db_at(url: &str, replicas: &[&Postgres]) -> Db {
        let second = Duration::from_secs(1);
        let db = with_marks(&config(url, replicas, second, second)).await;
        wait::until_async("every replica in rotation", async || {
            db.replicas()
                .expect("replicas")
                .states()
                .iter()
                .all(|state| state.in_rotation)
        })
        .await;
        db
    }

    /// The count of `marks` on the primary, whichever server that is now.
    async fn marks_on_primary(db: &Db) -> i64 {
        sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM marks")
            .fetch_one(&db.pool())
            .await
            .expect("the primary reads")
            .0
    }

    async fn until_failed_over(db: &Db, failovers: u64) -> PrimaryState {
        let replicas = db.replicas().expect("replicas");
        wait::until_async("the service to fail over", async || {
            replicas.primary().failovers == failovers
        })
        .await;
        replicas.primary()
    }

    /// The primary killed and its replica promoted: the service finds the
    /// new primary by itself and writes there, and under synchronous
    /// replication (`synchronous_standby_names`, `synchronous_commit =
    /// on`) every write acknowledged before the kill is on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_promoted_replica_takes_the_writes_and_has_every_synchronous_one() {
        let mut primary = Postgres::builder()
            .setting("synchronous_standby_names", "*")
            .setting("synchronous_commit", "on")
            .start()
            .expect("the primary starts");
        let replica = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("the replica starts");
        let db = db_on(&primary, &[&replica]).await;
        let before = db.replicas().expect("replicas").primary();
        assert_eq!(
            (before.promoted_replica, before.failovers),
            (None, 0),
            "{before:?}"
        );
        const ACKNOWLEDGED: i64 = 20;
        for _ in 0..ACKNOWLEDGED {
            mark(&db).await;
        }

        primary.kill().expect("kills");
        replica.promote().expect("promotes");
        let after = until_failed_over(&db, 1).await;
        assert_eq!(after.promoted_replica, Some(0), "{after:?}");
        assert_eq!(after.name, replica.addr().to_string());
        assert_eq!(
            after.timeline,
            before.timeline.map(|timeline| timeline + 1),
            "{before:?} then {after:?}"
        );
        assert_eq!(
            marks_on_primary(&db).await,
            ACKNOWLEDGED,
            "every acknowledged write"
        );
        // The writes go to the new primary, which the replica now is: it
        // takes no reads as a replica.
        mark(&db).await;
        assert_eq!(marks_on_primary(&db).await, ACKNOWLEDGED + 1);
        assert!(!state(&db).in_rotation, "{:?}", state(&db));
        assert_eq!(marks(&db, Freshness::NOW).await, ACKNOWLEDGED + 1);
        db.close().await;
    }

    /// After a failover, a replica still on the old timeline takes no
    /// reads, though it answers and is past the new primary's position:
    /// it has replayed writes the new primary never had.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_left_on_the_old_timeline_takes_no_reads() {
        let mut primary = Postgres::start().expect("the primary starts");
        let mut promoted = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("a replica starts");
        let left = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("another replica starts");
        let db = db_on(&primary, &[&promoted, &left]).await;
        mark(&db).await;
        promoted.caught_up_with(&primary).expect("caught up");

        // Writes the replica to be promoted never gets, and the other does.
        promoted.kill().expect("kills");
        for _ in 0..100 {
            mark(&db).await;
        }
        left.caught_up_with(&primary).expect("caught up");
        primary.kill().expect("kills");
        promoted.restart().expect("restarts");
        promoted.promote().expect("promotes");
        until_failed_over(&db, 1).await;
        assert_eq!(marks_on_primary(&db).await, 1, "the new primary's history");

        // A round finds the other replica past the new primary's
        // position, and it answers; still it takes no reads.
        let replicas = db.replicas().expect("replicas");
        wait::until_async("a round to compare the left replica", async || {
            replicas.states()[1].current_as_of_ago.is_some()
        })
        .await;
        let left_state = replicas.states().remove(1);
        assert!(!left_state.in_rotation, "{left_state:?}");
        for freshness in [Freshness::ANY, Freshness::NOW] {
            assert_eq!(marks(&db, freshness).await, 1, "{freshness:?}");
        }
        assert_eq!(replicas.states()[1].reads, left_state.reads);
        db.close().await;

        // A process started after the failover, on the new primary with
        // the left replica: nothing tells it a failover happened, but the
        // left replica receives nothing, so it takes no reads either.
        let second = Duration::from_secs(1);
        let later = Db::connect(
            &config(&promoted.url(), &[&left], second, second),
            Monitor::new(),
        )
        .await
        .expect("connects");
        let replicas = later.replicas().expect("replicas");
        wait::until_async("a round to compare the left replica", async || {
            replicas.states()[0].current_as_of_ago.is_some()
        })
        .await;
        assert!(!replicas.states()[0].in_rotation, "{:?}", replicas.states());
        assert_eq!(marks(&later, Freshness::ANY).await, 1);
        assert_eq!(replicas.states()[0].reads, 0);
        later.close().await;
    }

    /// `database.url` names whatever is the primary (here a proxy, as a
    /// Service that follows the primary would): after a failover to a
    /// listed replica, a later promotion that the URL follows is found
    /// too, and the writes go back to the URL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_promotion_behind_the_configured_url_is_followed_back() {
        let mut primary = Postgres::start().expect("the primary starts");
        let replica = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("the replica starts");
        let service = seawall_testkit::Proxy::start(primary.addr()).expect("a proxy");
        let url = format!("postgres://postgres@{}/postgres", service.addr());
        let db = db_at(&url, &[&replica]).await;
        mark(&db).await;
        // Replication is asynchronous here: the mark survives the
        // promotion only once the replica has it.
        replica.caught_up_with(&primary).expect("caught up");
        primary.kill().expect("kills");
        replica.promote().expect("promotes");
        let first = until_failed_over(&db, 1).await;
        assert_eq!(first.promoted_replica, Some(0), "{first:?}");
        mark(&db).await;

        // The next primary: a replica of the promoted one, promoted in
        // turn, which the URL's proxy now leads to.
        let next = Postgres::builder()
            .replica_of(&replica)
            .start()
            .expect("the next replica starts");
        next.caught_up_with(&replica).expect("caught up");
        next.promote().expect("promotes");
        service.retarget(next.addr());
        let back = until_failed_over(&db, 2).await;
        assert_eq!(back.promoted_replica, None, "{back:?}");
        assert_eq!(back.name, service.addr().to_string());
        assert_eq!(back.timeline, first.timeline.map(|timeline| timeline + 1));
        mark(&db).await;
        let on_next = next.psql("SELECT COUNT(*) FROM marks").expect("psql");
        assert_eq!(
            on_next.trim(),
            "3",
            "every mark, the last on the next primary"
        );
        db.close().await;
    }

    #[test]
    fn looks_are_read_as_postgres_answers_them() {
        assert_eq!(
            parse_primary("0/3000148 000000020000000000000003"),
            Some((Lsn(0x300_0148), 2))
        );
        assert_eq!(
            parse_replica("replica 16/B374D848 3"),
            Some(Seen::Replaying {
                replayed: Lsn((0x16 << 32) | 0xB374_D848),
                timeline: 3
            })
        );
        assert_eq!(
            parse_replica("replica 0/1 0"),
            Some(Seen::Replaying {
                replayed: Lsn(1),
                timeline: 0
            })
        );
        assert_eq!(
            parse_replica("replica 0/1 ?"),
            Some(Seen::Replaying {
                replayed: Lsn(1),
                timeline: HIDDEN
            })
        );
        assert_eq!(
            parse_replica("primary 0000000A0000000000000003"),
            Some(Seen::Primary { timeline: 10 })
        );
        for bad in [
            "",
            "0/1",
            "0/1 x",
            "0/1 000000000000000000000001",
            "replica 0/1",
            "replica 0/1 2 3",
            "replica x 2",
            "primary 0/1",
            "primary 00000001 extra",
            "standby 0/1 1",
        ] {
            assert_eq!(parse_primary(bad), None, "{bad:?}");
            assert_eq!(parse_replica(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_replica_is_named_by_its_host_and_port_alone() {
        assert_eq!(
            host_of("postgres://app:s3cret@db-2:5433/app?sslmode=require"),
            "db-2:5433"
        );
        assert_eq!(host_of("postgresql://db-3/app"), "db-3");
    }
}
