//! `seawall-ratelimit-checks`: checks of a memory-store limiter
//! (`Limiter::check_now`, GCRA), for valgrind's callgrind to count what one
//! check costs in instructions, a figure that does not move with the
//! machine's load. `admitted`: every check admitted, over 1,024 keys in
//! turn (the path the `ratelimit/memory_*` groups time); `refused`: one key
//! whose limit is spent, every check after the first refused. Only
//! `counted` runs under `--toggle-collect`; building the limiter and a
//! first pass over the keys are not counted.
//!
//! Usage: `seawall-ratelimit-checks admitted|refused CHECKS`

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Duration;

use seawall_ratelimit::{Limit, Limiter, MemoryStore};

const KEYS: usize = 1024;

/// The counted checks; the number admitted.
#[inline(never)]
fn counted(limiter: &Limiter, keys: &[String], checks: usize) -> usize {
    black_box(pass(limiter, keys, checks))
}

/// `checks` checks of one unit, the keys in turn; the number admitted.
#[inline(never)]
fn pass(limiter: &Limiter, keys: &[String], checks: usize) -> usize {
    let mut admitted = 0;
    for i in 0..checks {
        let key = black_box(keys[i % keys.len()].as_str());
        if let Some(Ok(decision)) = limiter.check_now(key, 1) {
            admitted += usize::from(decision.allowed);
        }
    }
    admitted
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(which), Some(Ok(checks))) = (args.first(), args.get(1).map(|n| n.parse::<usize>()))
    else {
        eprintln!("usage: seawall-ratelimit-checks admitted|refused CHECKS");
        return ExitCode::from(2);
    };
    let (limit, keys) = match which.as_str() {
        // Far more than the run checks: every check is admitted.
        "admitted" => (
            Limit::gcra(1_000_000, Duration::from_secs(1), 1_000_000_000),
            (0..KEYS).map(|i| format!("2001:db8::{i:x}")).collect(),
        ),
        "refused" => (
            Limit::gcra(1, Duration::from_secs(3600), 1),
            vec!["2001:db8::1".to_owned()],
        ),
        _ => {
            eprintln!("usage: seawall-ratelimit-checks admitted|refused CHECKS");
            return ExitCode::from(2);
        }
    };
    let built = limit.and_then(|limit| {
        Limiter::builder("bench")
            .limit(limit)
            .store(MemoryStore::new())
            .build()
    });
    let limiter = match built {
        Ok(limiter) => limiter,
        Err(error) => {
            eprintln!("no limiter: {error}");
            return ExitCode::FAILURE;
        }
    };
    let warm = pass(&limiter, &keys, KEYS);
    let admitted = counted(&limiter, &keys, checks);
    let expected = if which == "admitted" { checks } else { 0 };
    if admitted != expected || warm == 0 {
        eprintln!("{which}: {admitted} of {checks} checks admitted, {warm} in the first pass");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
