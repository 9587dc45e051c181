//! Job ids after a failover to a replica that missed the old primary's
//! last enqueues, and whose clock is behind the old primary's.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use seawall_queue::{JobId, JobOptions, Queues};
use seawall_testkit::{RedisServer, wait};

use crate::support::{builder, unique_prefix};

/// How far the replica's clock is behind the primary's.
const LAG: Duration = Duration::from_secs(2);

/// A clock shim for `LD_PRELOAD`: the wall clock (`clock_gettime` of the
/// realtime clocks, `gettimeofday`, `time`) read by system call, less
/// `CLOCK_LAG_US`. libfaketime cannot stand in for it: its start-up
/// allocates, and the jemalloc that Debian's redis-server links reads the
/// clock while it initialises, so the server deadlocks before it listens.
const CLOCK_SHIM: &str = r#"
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long lag_ns(void) {
  const char *lag = getenv("CLOCK_LAG_US");
  return lag ? atoll(lag) * 1000LL : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
  int rc = (int)syscall(SYS_clock_gettime, id, ts);
  if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec - lag_ns();
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
  }
  return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
  struct timespec ts;
  (void)tz;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
  tv->tv_sec = ts.tv_sec;
  tv->tv_usec = ts.tv_nsec / 1000;
  return 0;
}

time_t time(time_t *out) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (out) *out = ts.tv_sec;
  return ts.tv_sec;
}
"#;

/// An executable in `dir` that runs `redis-server` with its wall clock
/// `lag` behind: the shim, built with the C compiler that links Rust, and
/// a wrapper that preloads it and `exec`s the server (so the pid the
/// testkit signals is the server's).
fn lagging_redis_server(dir: &Path, lag: Duration) -> PathBuf {
    let source = dir.join("lag.c");
    let shim = dir.join("lag.so");
    std::fs::write(&source, CLOCK_SHIM).expect("writes the shim");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .output()
        .expect("cc runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wrapper = dir.join("redis-server-lagging");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nLD_PRELOAD='{}' CLOCK_LAG_US={} exec redis-server \"$@\"\n",
            shim.display(),
            lag.as_micros()
        ),
    )
    .expect("writes the wrapper");
    let mut permissions = std::fs::metadata(&wrapper)
        .expect("the wrapper")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&wrapper, permissions).expect("makes it executable");
    wrapper
}

/// A server's `TIME` in microseconds since the Unix epoch.
fn server_time_us(server: &RedisServer) -> i64 {
    let reply = server
        .connect()
        .expect("connects")
        .cmd(&["TIME"])
        .expect("TIME");
    let parts: Vec<i64> = reply
        .as_array()
        .expect("an array")
        .iter()
        .map(|part| {
            part.as_str()
                .and_then(|text| text.parse().ok())
                .expect("a number")
        })
        .collect();
    parts[0] * 1_000_000 + parts[1]
}

async fn queues(url: &str, prefix: &str) -> Queues {
    Queues::redis(builder(url))
        .prefix(prefix)
        .connect()
        .await
        .expect("connects")
}

/// The old primary's last enqueues never reach the replica; the replica,
/// its clock 2 s behind, is promoted and enqueues on: none of its ids is
/// an id of a lost job, although the last id it knows is below the lost
/// ones and its clock is behind them (consecutive ids of bulk enqueues on
/// both sides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_with_a_clock_behind_never_reissues_a_lost_jobs_id() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let primary = RedisServer::start().expect("a primary");
    let replica = RedisServer::builder()
        .binary(lagging_redis_server(dir.path(), LAG))
        .config("replicaof", format!("127.0.0.1 {}", primary.port()))
        .start()
        .expect("a replica");
    wait::until_async("the replica to sync with its primary", async || {
        replica.is_linked_replica()
    })
    .await;
    // The replica's TIME read between two of the primary's: however long
    // the reads take, the lag lies between the two differences.
    let before = server_time_us(&primary);
    let lagging = server_time_us(&replica);
    let after = server_time_us(&primary);
    assert!(
        before - lagging <= 2_500_000 && after - lagging >= 1_500_000,
        "the replica's TIME is not about {LAG:?} behind the primary's: \
         {} to {} µs behind",
        before - lagging,
        after - lagging
    );

    let prefix = unique_prefix();
    let replicated = Queues::redis(builder(&primary.url()))
        .prefix(prefix.as_str())
        // WAIT answers as soon as the replica has the jobs: a long limit
        // costs nothing, and a replica slow on a loaded machine still
        // makes it.
        .replicated_enqueues(1, Duration::from_secs(30))
        .connect()
        .await
        .expect("connects");
    let old_primary = queues(&primary.url(), &prefix).await;
    let options = JobOptions::default();
    let kept = replicated
        .enqueue_many("mail", (0..100_u32).map(|n| (n, options.clone())))
        .await
        .expect("replicated");

    // The replica stops following: what the primary takes now is lost.
    replica
        .connect()
        .expect("connects")
        .cmd(&["REPLICAOF", "NO", "ONE"])
        .expect("REPLICAOF NO ONE");
    let lost: HashSet<JobId> = old_primary
        .enqueue_many("mail", (0..2_000_u32).map(|n| (n, options.clone())))
        .await
        .expect("enqueues")
        .into_iter()
        .collect();

    // The failover: producers now talk to the former replica.
    let promoted = queues(&replica.url(), &prefix).await;
    for id in &kept {
        assert!(
            promoted.job("mail", id).await.expect("reads").is_some(),
            "{id} was replicated"
        );
    }
    for id in lost.iter().take(10) {
        assert!(
            promoted.job("mail", id).await.expect("reads").is_none(),
            "{id} is lost"
        );
    }
    let mut fresh = Vec::new();
    for _ in 0..4 {
        fresh.extend(
            promoted
                .enqueue_many("mail", (0..10_000_u32).map(|n| (n, options.clone())))
                .await
                .expect("enqueues"),
        );
    }
    let reissued: Vec<&JobId> = fresh.iter().filter(|id| lost.contains(*id)).collect();
    assert!(
        reissued.is_empty(),
        "{} of {} new ids were ids of lost jobs, e.g. {:?}",
        reissued.len(),
        fresh.len(),
        reissued.first()
    );
    let unique: HashSet<&JobId> = kept.iter().chain(&fresh).collect();
    assert_eq!(
        unique.len(),
        kept.len() + fresh.len(),
        "ids on the new primary repeat"
    );
}
