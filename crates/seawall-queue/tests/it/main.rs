//! Integration tests of seawall-queue: the conformance suite on memory,
//! Redis and Redis Cluster, and the fault tests that need real processes
//! (worker processes SIGKILLed, Redis killed and restarted).

mod breaker;
mod conformance;
mod crash;
mod dedup;
mod edges;
mod failover;
mod flow_drill;
mod flows;
mod leases;
mod pace;
mod rate_drill;
mod ratelimit;
mod replication;
mod restart;
mod scheduler_drill;
mod schedulers;
mod sentinel;
mod support;
mod upgrade;
