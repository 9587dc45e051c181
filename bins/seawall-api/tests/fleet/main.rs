//! The service as a fleet: several API instances and workers on one Redis
//! Cluster (or one Redis) and one PostgreSQL, behind HAProxy, started by the
//! testkit's [`Fleet`] as `scripts/fleet` starts it. Each test takes the
//! fleets in turn: a fleet is a dozen processes, and figures taken while
//! another fleet runs beside it would measure the other fleet too. The
//! `hosts` tests put each process on a network host of its own, so the
//! network between them can fail.

// The drills print the figures docs/operations.md records.
#![allow(clippy::print_stdout)]

mod cache;
mod drills;
mod hosts;
mod partitions;
mod queues;
mod readiness;
mod replica_drills;
mod replicas;
mod schedulers;
mod shared;
mod support;
