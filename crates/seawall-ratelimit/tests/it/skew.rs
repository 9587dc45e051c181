//! Two instances whose clocks disagree by 45 seconds share one Redis limit
//! and agree on every decision: the Redis store reads the server's `TIME`,
//! never the process clock. The second instance is this test binary run
//! again under faketime (`scripts/setup` installs it).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seawall_ratelimit::{Limit, Limiter, RedisStore};

use crate::support::steady_store;

const ROLE: &str = "SEAWALL_SKEW_ROLE";
const URL: &str = "SEAWALL_SKEW_REDIS";
const TEST: &str = "skew::two_instances_with_skewed_clocks_agree";
const SKEW_SECONDS: i64 = 45;

fn limiter(store: RedisStore) -> Limiter {
    Limiter::builder("skew")
        .limit(Limit::gcra(6, Duration::from_secs(3600), 6).expect("limit"))
        .store(store)
        .build()
        .expect("limiter")
}

fn unix_seconds() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)] // the second instance reports to the first on stdout
async fn two_instances_with_skewed_clocks_agree() {
    // Run again under faketime, this test is the second instance: it takes
    // three units and reports what it saw and what time it thinks it is.
    if let Ok(url) = std::env::var(URL) {
        let limiter = limiter(steady_store(&url).await);
        for _ in 0..3 {
            let decision = limiter.check("shared", 1).await.expect("check");
            println!(
                "{ROLE} allowed={} remaining={} reset_ms={}",
                decision.allowed,
                decision.remaining,
                decision.reset_after.as_millis()
            );
        }
        println!("{ROLE} clock={}", unix_seconds());
        return;
    }

    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let output = Command::new("faketime")
        .arg("-f")
        .arg(format!("+{SKEW_SECONDS}s"))
        .arg(std::env::current_exe().expect("the test binary"))
        .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
        .env(URL, redis.url())
        .output()
        .expect("faketime runs (scripts/setup installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The test harness may print its own words before a line of ours.
    let marker = format!("{ROLE} ");
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.find(&marker).map(|at| &line[at + marker.len()..]))
        .collect();

    // The child's clock really was ahead.
    let child_clock: i64 = lines
        .iter()
        .find_map(|line| line.strip_prefix("clock="))
        .and_then(|clock| clock.parse().ok())
        .expect("the child's clock");
    let skew = child_clock - unix_seconds();
    assert!(
        (SKEW_SECONDS - 10..=SKEW_SECONDS + 5).contains(&skew),
        "skew {skew} s"
    );
    let child: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| line.starts_with("allowed="))
        .collect();
    assert_eq!(child.len(), 3, "{stdout}");
    assert!(
        child[2].starts_with("allowed=true remaining=3 "),
        "{child:?}"
    );

    // This instance sees exactly what is left, and the same time horizon.
    let limiter = limiter(steady_store(&redis.url()).await);
    let peek = limiter.peek("shared").await.expect("peek");
    assert_eq!(peek.remaining, 3);
    let child_reset: u128 = child[2]
        .rsplit("reset_ms=")
        .next()
        .and_then(|ms| ms.parse().ok())
        .expect("reset");
    // Apart by the time between the two reads (the child's exit, a new
    // connection here), which a loaded machine stretches: the bound stays
    // well under the 45 s that reading a process clock would add.
    let difference = peek.reset_after.as_millis().abs_diff(child_reset);
    assert!(
        difference < 20_000,
        "reset {} ms here, {child_reset} ms there",
        peek.reset_after.as_millis()
    );
    let mut admitted = 0;
    while limiter.check("shared", 1).await.expect("check").allowed {
        admitted += 1;
    }
    assert_eq!(
        admitted, 3,
        "both instances together admit exactly the limit"
    );
}
