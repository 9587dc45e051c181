//! How long a failed job waits before its next attempt.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::millis;

/// The longest duration any option takes (a year): a delay, an attempt's
/// timeout, an idempotency window; retry waits are capped at it too.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The default cap of an exponential backoff.
const DEFAULT_CAP: Duration = Duration::from_secs(3600);

/// A retry policy: the wait before each retry of a failed job.
///
/// Attempts are numbered from 1: [`ceiling(1)`](Backoff::ceiling) is the wait
/// after the first failure. Without jitter a policy waits exactly its
/// ceiling; with [full jitter](Backoff::full_jitter) it waits a uniformly
/// drawn time between zero and the ceiling, so retries of jobs that failed
/// together spread out instead of arriving together. Every ceiling is at most
/// the policy's [cap](Backoff::cap) and at most [`MAX_DELAY`] (a year, so an
/// absurd policy cannot park a job for ever), and ceilings never decrease from one
/// attempt to the next for the built-in shapes.
#[derive(Clone)]
pub struct Backoff {
    shape: Shape,
    cap: Duration,
    jitter: bool,
}

#[derive(Clone)]
enum Shape {
    Fixed(Duration),
    Exponential { base: Duration, factor: f64 },
    Custom(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
}

impl Backoff {
    /// The same wait before every retry.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            shape: Shape::Fixed(delay),
            cap: Duration::MAX,
            jitter: false,
        }
    }

    /// `base`, then `base × factor`, `base × factor²`, … (factor 2 unless
    /// [set](Backoff::factor)), capped at one hour unless [set](Backoff::cap).
    pub fn exponential(base: Duration) -> Self {
        Self {
            shape: Shape::Exponential { base, factor: 2.0 },
            cap: DEFAULT_CAP.max(base),
            jitter: false,
        }
    }

    /// The wait `f(attempt)` returns, capped like any other policy. Nothing
    /// checks that `f` never decreases.
    pub fn custom(f: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        Self {
            shape: Shape::Custom(Arc::new(f)),
            cap: Duration::MAX,
            jitter: false,
        }
    }

    /// The growth factor of an exponential backoff: finite and at least 1.
    pub fn factor(mut self, factor: f64) -> Result<Self> {
        let Shape::Exponential { factor: own, .. } = &mut self.shape else {
            return Err(Error::InvalidBackoff(
                "a factor applies to exponential backoff only".to_owned(),
            ));
        };
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(Error::InvalidBackoff(format!(
                "the factor must be a finite number of at least 1, got {factor}"
            )));
        }
        *own = factor;
        Ok(self)
    }

    /// The longest wait; for an exponential backoff, not below its base.
    pub fn cap(mut self, cap: Duration) -> Result<Self> {
        if let Shape::Exponential { base, .. } = &self.shape
            && cap < *base
        {
            return Err(Error::InvalidBackoff(format!(
                "the cap ({cap:?}) is below the first wait ({base:?})"
            )));
        }
        self.cap = cap;
        Ok(self)
    }

    /// Waits a uniformly drawn time between zero and the ceiling.
    #[must_use]
    pub fn full_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The wait before retry `attempt` without jitter (attempt 0 counts as 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        let raw = match &self.shape {
            Shape::Fixed(delay) => *delay,
            Shape::Exponential { base, factor } => {
                let exponent = i32::try_from(attempt - 1).unwrap_or(i32::MAX);
                let seconds = base.as_secs_f64() * factor.powi(exponent);
                // Past the cap (or past what a Duration holds), the cap.
                Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
            }
            Shape::Custom(f) => f(attempt),
        };
        raw.min(self.cap).min(MAX_DELAY)
    }

    /// The wait before retry `attempt`, with jitter drawn from the thread's
    /// generator when the policy has it.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut fastrand::Rng::new())
    }

    /// [`delay`](Backoff::delay) with a generator of the caller's, for
    /// reproducible sequences.
    pub fn delay_with(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=nanos))
    }
}

impl Backoff {
    /// The policy as text a job record can carry, or `None` for a custom
    /// function, which cannot travel with a job.
    pub(crate) fn encode(&self) -> Option<String> {
        let cap = millis(self.cap);
        let jitter = u8::from(self.jitter);
        match &self.shape {
            Shape::Fixed(delay) => Some(format!("f:{}:{cap}:{jitter}", millis(*delay))),
            Shape::Exponential { base, factor } => {
                Some(format!("e:{}:{factor}:{cap}:{jitter}", millis(*base)))
            }
            Shape::Custom(_) => None,
        }
    }

    /// The policy [`encode`](Backoff::encode) wrote, or `None` for text it
    /// did not write.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let shape = parts.next()?;
        let first = Duration::from_millis(parts.next()?.parse().ok()?);
        let shape = match shape {
            "f" => Shape::Fixed(first),
            "e" => {
                let factor: f64 = parts.next()?.parse().ok()?;
                if !(factor.is_finite() && factor >= 1.0) {
                    return None;
                }
                Shape::Exponential {
                    base: first,
                    factor,
                }
            }
            _ => return None,
        };
        let cap = Duration::from_millis(parts.next()?.parse().ok()?);
        let jitter = parts.next()? == "1";
        parts
            .next()
            .is_none()
            .then_some(Self { shape, cap, jitter })
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Backoff");
        match &self.shape {
            Shape::Fixed(delay) => out.field("fixed", delay),
            Shape::Exponential { base, factor } => out.field("base", base).field("factor", factor),
            Shape::Custom(_) => out.field("custom", &"fn(attempt) -> Duration"),
        };
        out.field("cap", &self.cap)
            .field("jitter", &self.jitter)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exponential() -> impl Strategy<Value = Backoff> {
        (1_u64..10_000, 1.0_f64..4.0, 0_u64..100_000, any::<bool>()).prop_map(
            |(base_ms, factor, extra_ms, jitter)| {
                let base = Duration::from_millis(base_ms);
                let backoff = Backoff::exponential(base)
                    .factor(factor)
                    .and_then(|backoff| backoff.cap(base + Duration::from_millis(extra_ms)))
                    .expect("valid parameters");
                if jitter {
                    backoff.full_jitter()
                } else {
                    backoff
                }
            },
        )
    }

    proptest! {
        #[test]
        fn ceilings_never_decrease_and_stay_under_the_cap(
            backoff in exponential(),
            attempt in 1_u32..200,
        ) {
            prop_assert!(backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1));
            prop_assert!(backoff.ceiling(attempt) <= backoff.cap);
        }

        #[test]
        fn jittered_waits_stay_between_zero_and_the_ceiling(
            backoff in exponential(),
            attempt in 1_u32..200,
            seed in any::<u64>(),
        ) {
            let delay = backoff.delay_with(attempt, &mut fastrand::Rng::with_seed(seed));
            prop_assert!(delay <= backoff.ceiling(attempt));
        }

        #[test]
        fn huge_attempts_give_the_cap_not_a_panic(attempt in any::<u32>(), factor in 1.0_f64..1e6) {
            let backoff = Backoff::exponential(Duration::from_secs(1))
                .factor(factor)
                .expect("valid")
                .full_jitter();
            prop_assert!(backoff.ceiling(attempt) <= DEFAULT_CAP);
            prop_assert!(backoff.delay(attempt) <= DEFAULT_CAP);
        }
    }

    #[test]
    fn exponential_doubles_from_its_base_up_to_the_cap() {
        let backoff = Backoff::exponential(Duration::from_millis(100))
            .cap(Duration::from_secs(1))
            .expect("valid");
        let waits: Vec<_> = (1..=6).map(|attempt| backoff.ceiling(attempt)).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(backoff.delay(2), Duration::from_millis(200), "no jitter");
    }

    #[test]
    fn fixed_and_custom_waits_are_capped() {
        let fixed = Backoff::fixed(Duration::from_secs(5));
        // No policy parks a job for longer than the longest delay.
        assert_eq!(Backoff::fixed(Duration::MAX).ceiling(1), MAX_DELAY);
        assert_eq!(Backoff::custom(|_| Duration::MAX).delay(3), MAX_DELAY);
        assert_eq!(fixed.ceiling(1), Duration::from_secs(5));
        assert_eq!(fixed.ceiling(1000), Duration::from_secs(5));
        let custom = Backoff::custom(|attempt| Duration::from_secs(u64::from(attempt) * 10))
            .cap(Duration::from_secs(25))
            .expect("valid");
        assert_eq!(custom.ceiling(2), Duration::from_secs(20));
        assert_eq!(custom.ceiling(3), Duration::from_secs(25));
    }

    #[test]
    fn unusable_parameters_are_typed_errors() {
        let base = Duration::from_secs(2);
        for factor in [0.5, f64::NAN, f64::INFINITY, -1.0] {
            assert!(matches!(
                Backoff::exponential(base).factor(factor),
                Err(Error::InvalidBackoff(_))
            ));
        }
        assert!(matches!(
            Backoff::exponential(base).cap(Duration::from_secs(1)),
            Err(Error::InvalidBackoff(_))
        ));
        assert!(matches!(
            Backoff::fixed(base).factor(2.0),
            Err(Error::InvalidBackoff(_))
        ));
    }

    #[test]
    fn built_in_policies_survive_a_job_record_and_custom_ones_do_not_travel() {
        let policies = [
            Backoff::fixed(Duration::from_millis(250)),
            Backoff::exponential(Duration::from_secs(1))
                .factor(1.5)
                .and_then(|backoff| backoff.cap(Duration::from_secs(90)))
                .expect("valid")
                .full_jitter(),
        ];
        for policy in policies {
            let text = policy.encode().expect("built-in");
            let back = Backoff::decode(&text).expect("decodes");
            assert_eq!(back.encode().as_deref(), Some(text.as_str()));
            for attempt in 1..20 {
                assert_eq!(back.ceiling(attempt), policy.ceiling(attempt));
            }
        }
        assert!(Backoff::custom(|_| Duration::ZERO).encode().is_none());
        for bad in ["", "x:1:1:0", "e:1:0.5:10:0", "f:1:2:0:extra", "f:one:2:0"] {
            assert!(Backoff::decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_seeded_generator_repeats_its_waits() {
        let backoff = Backoff::exponential(Duration::from_secs(1)).full_jitter();
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (1..=5)
                .map(|attempt| backoff.delay_with(attempt, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }
}
