//! The service as a fleet: several API instances and workers on one Redis
//! Cluster (or one Redis) and one PostgreSQL, behind HAProxy, started by the
//! testkit's [`Fleet`] as `scripts/fleet` starts it. Each test takes the
//! fleets in turn: a fleet is a dozen processes, and figures taken while
//! another fleet runs beside it would measure the other fleet too.

// The drills print the figures docs/operations.md records.
#![allow(clippy::print_stdout)]

mod cache;
mod drills;
mod queues;
mod shared;
mod support;
