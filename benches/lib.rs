//! Criterion benchmarks for the seawall crates; run `cargo bench -p seawall-benches`.
//! Figures and the commands that produced them are in `docs/benchmarks.md`.

/// Awaits `each()` `iterations` times, each answer kept from the
/// optimiser, and answers how long that took: the body of a criterion
/// `iter_custom` over an async call (`runtime.block_on(timed(iters, ...))`).
pub async fn timed<T, F, Fut>(iterations: u64, mut each: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let began = std::time::Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(each().await);
    }
    began.elapsed()
}

/// What the cache benchmarks store and the order they read it in, shared by
/// `benches/cache.rs` and the `seawall-l1-reads` program, so the counts
/// `scripts/l1-reads` makes are of the reads `cache/l1_hit` times.
pub mod cards {
    use serde::{Deserialize, Serialize};

    /// The keys `cache/l1_hit` reads among.
    pub const KEYS: usize = 100_000;

    /// A small cached value: a review card's schedule.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Card {
        /// The card.
        pub id: u64,
        /// When it is due (Unix ms).
        pub due_ms: u64,
        /// Days until the review after.
        pub interval_days: u32,
        /// Its ease factor, in hundredths.
        pub ease: u16,
    }

    /// The card stored under the key of index `id`.
    pub fn card(id: usize) -> Card {
        Card {
            id: id as u64,
            due_ms: 1_750_000_000_000 + id as u64,
            interval_days: 3,
            ease: 250,
        }
    }

    /// The first `count` keys: `card:0`, `card:1`, …
    pub fn keys(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("card:{i}")).collect()
    }

    /// Each of `keys` with the card of its index, to store.
    pub fn entries(keys: &[String]) -> Vec<(String, Card)> {
        keys.iter()
            .enumerate()
            .map(|(i, key)| (key.clone(), card(i)))
            .collect()
    }

    /// The index of the next key to read among [`KEYS`]: it steps by a
    /// number coprime with `KEYS`, so it visits every key once per round,
    /// in an order unrelated to insertion.
    #[derive(Debug, Default)]
    pub struct Rotation(usize);

    impl Rotation {
        /// The next index.
        pub fn next_index(&mut self) -> usize {
            const STEP: usize = 48_271;
            self.0 = (self.0 + STEP) % KEYS;
            self.0
        }
    }
}
pub mod nab;
