//! Integration tests for the `seawall-worker` binary: one test binary, one
//! module per area.

mod drill;
mod end_to_end;
mod process;
mod support;
mod traces;
