//! seawall-history's tests: hand-written histories, one per kind of
//! finding and the legal cases beside it, the recorder and the reader, the
//! binary, and histories of simulated correct systems.

mod cache;
mod check_bin;
mod coupon;
mod model;
mod points;
mod queue;
mod ratelimit;
mod record;
mod sale;
mod schedule;
mod state;
mod support;
