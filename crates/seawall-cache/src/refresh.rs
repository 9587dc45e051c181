//! When a read refreshes a value before it expires.

use crate::class::EarlyRefresh;
use crate::codec::Meta;

/// Whether a read at `now_ms` of a fresh value refreshes it early.
/// `random` is uniform in (0, 1]; XFetch refreshes when
/// `now − δ·β·ln(random) ≥ expiry`, δ being the last load's duration.
pub(crate) fn refresh_early(refresh: EarlyRefresh, meta: &Meta, now_ms: u64, random: f64) -> bool {
    let age_ms = now_ms.saturating_sub(meta.created_ms);
    match refresh {
        EarlyRefresh::Off => false,
        EarlyRefresh::XFetch { beta, floor } => {
            if u128::from(age_ms) < floor.as_millis() || !(random > 0.0 && random <= 1.0) {
                return false;
            }
            let gap = f64::from(meta.delta_ms) * beta * -random.ln();
            now_ms as f64 + gap >= meta.fresh_until_ms as f64
        }
        EarlyRefresh::Ahead { at } => {
            let lifetime = meta.fresh_until_ms.saturating_sub(meta.created_ms);
            age_ms as f64 >= lifetime as f64 * at
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn meta(created_ms: u64, ttl_ms: u64, delta_ms: u32) -> Meta {
        Meta {
            created_ms,
            fresh_until_ms: created_ms + ttl_ms,
            stale_until_ms: created_ms + 2 * ttl_ms,
            delta_ms,
            class: 0,
            negative: false,
        }
    }

    proptest! {
        /// XFetch never refreshes a value younger than its floor, however
        /// slow its load was and however unlucky the draw.
        #[test]
        fn xfetch_never_refreshes_below_its_floor(
            created in 0..1_000_000_000_u64, ttl in 1..10_000_000_u64,
            delta in any::<u32>(), beta in 0.01..100.0_f64,
            floor_ms in 1..10_000_000_u64, age in any::<u64>(),
            random in 1e-300..=1.0_f64,
        ) {
            let age = age % floor_ms;
            let refresh = EarlyRefresh::XFetch { beta, floor: Duration::from_millis(floor_ms) };
            prop_assert!(!refresh_early(refresh, &meta(created, ttl, delta), created + age, random));
        }

        /// Past the floor, the chance only grows as expiry nears: if a draw
        /// refreshes at some moment, it refreshes at every later one.
        #[test]
        fn xfetch_is_monotone_in_time(
            ttl in 1..10_000_000_u64, delta in any::<u32>(), random in 1e-12..=1.0_f64,
            first in 0..20_000_000_u64, later in 0..20_000_000_u64,
        ) {
            let refresh = EarlyRefresh::XFetch { beta: 1.0, floor: Duration::ZERO };
            let meta = meta(0, ttl, delta);
            if refresh_early(refresh, &meta, first, random) {
                prop_assert!(refresh_early(refresh, &meta, first + later, random));
            }
        }
    }

    #[test]
    fn an_expired_value_always_refreshes_and_a_quick_load_rarely_early() {
        let refresh = EarlyRefresh::XFetch {
            beta: 1.0,
            floor: Duration::ZERO,
        };
        let meta = meta(0, 60_000, 10);
        assert!(refresh_early(refresh, &meta, 60_000, 0.5));
        // 10 ms loads, a minute before expiry: e^-6000 is never drawn.
        let early =
            (1..1000).filter(|i| refresh_early(refresh, &meta, 1_000, f64::from(*i) / 1000.0));
        assert_eq!(early.count(), 0);
        let ahead = EarlyRefresh::Ahead { at: 0.8 };
        assert!(!refresh_early(ahead, &meta, 47_999, 1.0));
        assert!(refresh_early(ahead, &meta, 48_000, 1.0));
    }
}
