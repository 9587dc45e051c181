//! A durable Redis job queue for Rust services; in progress. This release
//! holds what a producer will say about a job ([`JobOptions`]: delay,
//! priority, attempts, backoff, timeout, group, idempotency key) and the
//! retry policies its workers will apply ([`Backoff`]).
//!
//! ```
//! use std::time::Duration;
//! use seawall_queue::Backoff;
//!
//! # fn main() -> seawall_queue::Result<()> {
//! // 1 s, 2 s, 4 s, … never more than a minute, each drawn uniformly
//! // between zero and that ceiling ("full jitter").
//! let backoff = Backoff::exponential(Duration::from_secs(1))
//!     .factor(2.0)?
//!     .cap(Duration::from_secs(60))?
//!     .full_jitter();
//! assert_eq!(backoff.ceiling(3), Duration::from_secs(4));
//! assert!(backoff.delay(3) <= Duration::from_secs(4));
//! assert_eq!(backoff.ceiling(30), Duration::from_secs(60));
//! # Ok(())
//! # }
//! ```

mod backoff;
mod error;
mod options;

pub use backoff::Backoff;
pub use error::{Error, Result};
pub use options::{DEFAULT_PRIORITY, JobOptions, LOWEST_PRIORITY, MAX_DELAY, MAX_KEY_BYTES};
