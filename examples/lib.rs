//! Examples for the seawall crates; each file is a program a service author can
//! copy. Run one with `cargo run -p seawall-examples --example <name>`.
