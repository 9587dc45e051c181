//! Integration tests of seawall-ratelimit: the conformance suite on every
//! store, and what each store must show on its own.

mod conformance;
mod stores;
mod support;
