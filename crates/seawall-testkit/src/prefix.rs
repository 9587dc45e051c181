//! Names that no other test of a run shares.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A key prefix (or a limiter's, a queue's name) that no other test uses,
/// on a server every test of a run shares: the process id, when the process
/// first asked (a pid comes round again in a long run), and a count.
///
/// ```
/// let (first, second) = (seawall_testkit::unique_prefix(), seawall_testkit::unique_prefix());
/// assert_ne!(first, second);
/// assert!(first.starts_with('t'));
/// ```
pub fn unique_prefix() -> String {
    static STARTED: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let started = STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros())
    });
    format!(
        "t{}-{started:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
