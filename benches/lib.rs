//! Criterion benchmarks for the seawall crates; run `cargo bench -p seawall-benches`.
//! Figures and the commands that produced them are in `docs/benchmarks.md`.
