//! Integration tests of seawall-ratelimit: the conformance suite on every
//! store, and what each store must show on its own.

mod abuse;
#[cfg(feature = "axum")]
mod adaptive;
mod bounds;
mod concurrency;
mod conformance;
mod faults;
#[cfg(feature = "axum")]
mod http;
mod nodes;
mod skew;
mod stores;
mod support;
mod telemetry;
