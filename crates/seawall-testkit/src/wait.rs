//! Waiting for a state a test can observe.
//!
//! A test that needs something to have happened (a replica synced, a key
//! written, a worker's job completed) polls for it with [`until`] or
//! [`until_async`], naming what it waits for. It does not race a short
//! deadline: a loaded machine can take many times longer than a quiet one
//! to get there, and that says nothing about whether the code is right. The
//! wait gives up only after [`PATIENCE`] (two minutes, or
//! `SEAWALL_TEST_PATIENCE_SECS`), a safety net against a state that never
//! comes, and then panics with what it was waiting for.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use seawall_testkit::wait;
//!
//! let polls = AtomicU32::new(0);
//! wait::until("the third poll", || polls.fetch_add(1, Ordering::Relaxed) == 2);
//! let answer = wait::until_some("an answer", || Some(42));
//! assert_eq!(answer, 42);
//! ```
//!
//! Waiting for something *not* to happen is another matter: there a short,
//! fixed window is the test's own choice, and load only makes the check
//! weaker, never a false failure.

use std::fmt::Display;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// The variable that overrides [`PATIENCE`], in whole seconds.
pub const PATIENCE_ENV: &str = "SEAWALL_TEST_PATIENCE_SECS";

/// How long a wait goes on before it gives up: two minutes, many times what
/// any state here takes on a quiet machine, unless [`PATIENCE_ENV`] says
/// otherwise.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// [`PATIENCE`], or what [`PATIENCE_ENV`] sets.
pub fn patience() -> Duration {
    static PATIENCE_SET: OnceLock<Duration> = OnceLock::new();
    *PATIENCE_SET.get_or_init(|| {
        std::env::var(PATIENCE_ENV)
            .ok()
            .and_then(|secs| secs.trim().parse().ok())
            .map_or(PATIENCE, Duration::from_secs)
    })
}

/// Polls `holds` until it returns `true`.
///
/// # Panics
///
/// When it has not held after [`patience`], naming `what` it waited for.
#[track_caller]
pub fn until(what: impl Display, mut holds: impl FnMut() -> bool) {
    until_some(what, || holds().then_some(()));
}

/// Polls `found` until it returns `Some`, and returns what it found.
///
/// # Panics
///
/// When it has found nothing after [`patience`], naming `what` it waited for.
#[track_caller]
pub fn until_some<T>(what: impl Display, mut found: impl FnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(value) = found() {
            return value;
        }
        give_up_after_patience(&what, began);
        std::thread::sleep(POLL);
    }
}

/// Polls `holds` until it returns `true`, sleeping on tokio's timer between
/// polls.
///
/// # Panics
///
/// When it has not held after [`patience`], naming `what` it waited for.
#[track_caller]
pub fn until_async<F>(what: impl Display, mut holds: F) -> impl Future<Output = ()>
where
    F: AsyncFnMut() -> bool,
{
    let caller = std::panic::Location::caller();
    async move {
        let began = Instant::now();
        while !holds().await {
            if began.elapsed() > patience() {
                panic!("{caller}: waited {:?} for {what}", patience());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Polls `found` until it returns `Some`, sleeping on tokio's timer between
/// polls, and returns what it found.
///
/// # Panics
///
/// When it has found nothing after [`patience`], naming `what` it waited for.
#[track_caller]
pub fn until_some_async<T, F>(what: impl Display, mut found: F) -> impl Future<Output = T>
where
    F: AsyncFnMut() -> Option<T>,
{
    let caller = std::panic::Location::caller();
    async move {
        let began = Instant::now();
        loop {
            if let Some(value) = found().await {
                return value;
            }
            if began.elapsed() > patience() {
                panic!("{caller}: waited {:?} for {what}", patience());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[track_caller]
fn give_up_after_patience(what: &impl Display, began: Instant) {
    let patience = patience();
    assert!(
        began.elapsed() <= patience,
        "waited {patience:?} for {what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_returns_as_soon_as_the_state_holds() {
        let mut polls = 0;
        let found = until_some("the third poll", || {
            polls += 1;
            (polls == 3).then_some(polls)
        });
        assert_eq!(found, 3);
    }

    #[tokio::test]
    async fn an_async_wait_returns_as_soon_as_the_state_holds() {
        let mut polls = 0;
        until_async("the second poll", async || {
            polls += 1;
            polls == 2
        })
        .await;
        assert_eq!(polls, 2);
    }
}
