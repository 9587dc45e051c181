//! Integration tests for the `seawall-worker` binary: one test binary, one
//! module per area.

mod process;
