//! The one backoff policy: how long to wait before attempt n of something that keeps
//! failing. The GitHub client, the delivery worker and the reporter each hold a
//! [`Backoff`] with their own numbers; the arithmetic lives only here. Pure: the caller
//! brings the randomness.

use std::time::Duration;

/// Exponential backoff: `base × factor^(n − 1)` before attempt n + 1 (after n failures),
/// never above `cap`. A `jitter` share of each delay is left to chance, so many clients
/// that failed together do not retry together; the rest is fixed, so a delay never
/// collapses to zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    factor: u32,
    cap: Duration,
    jitter: f64,
}

impl Backoff {
    /// A policy without jitter. A `factor` below 1 counts as 1 (a constant delay).
    pub const fn new(base: Duration, factor: u32, cap: Duration) -> Self {
        Self {
            base,
            factor: if factor == 0 { 1 } else { factor },
            cap,
            jitter: 0.0,
        }
    }

    /// The share of each delay (0 to 1) that is random: ½ is "equal jitter", half fixed
    /// and half random.
    pub const fn with_jitter(self, share: f64) -> Self {
        Self {
            jitter: unit(share),
            ..self
        }
    }

    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// The delay after `failures` consecutive failures (1 for the first; 0 counts as 1)
    /// before jitter: the most [`Backoff::delay`] can be.
    pub fn nominal(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1);
        let grown = self
            .factor
            .checked_pow(exponent)
            .and_then(|growth| self.base.checked_mul(growth))
            .unwrap_or(Duration::MAX);
        grown.min(self.cap)
    }

    /// The delay after `failures` consecutive failures, `random` being a uniform sample
    /// from `[0, 1]` (out-of-range values are clamped): between `(1 − jitter) × nominal`
    /// and the nominal delay.
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let nominal = self.nominal(failures);
        let fixed = scale(nominal, 1.0 - self.jitter);
        let random = scale(nominal.saturating_sub(fixed), unit(random));
        // Float rounding must not lift a delay past the nominal one (or the cap).
        fixed.saturating_add(random).min(nominal)
    }
}

/// `duration × share` for a share in `[0, 1]`; total, unlike `Duration::mul_f64`, which
/// panics when the float product rounds past `Duration::MAX`.
fn scale(duration: Duration, share: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * share)
        .map_or(duration, |scaled| scaled.min(duration))
}

/// `value` within `[0, 1]`; NaN counts as 0 (a `Duration` cannot be multiplied by it).
const fn unit(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn grows_by_the_factor_from_the_base() {
        let policy = Backoff::new(2 * SECOND, 3, 100 * SECOND);
        let delays: Vec<u64> = (1..=6).map(|n| policy.nominal(n).as_secs()).collect();
        assert_eq!(delays, [2, 6, 18, 54, 100, 100]);
        assert_eq!(policy.nominal(0), policy.nominal(1));
        // Without jitter the random sample does not matter.
        assert_eq!(policy.delay(3, 0.0), 18 * SECOND);
        assert_eq!(policy.delay(3, 1.0), 18 * SECOND);
    }

    #[test]
    fn huge_attempt_counts_stay_at_the_cap() {
        let policy = Backoff::new(SECOND, 2, 30 * SECOND).with_jitter(0.5);
        assert_eq!(policy.nominal(u32::MAX), 30 * SECOND);
        assert_eq!(policy.delay(u32::MAX, 1.0), 30 * SECOND);
        assert_eq!(policy.delay(u32::MAX, 0.0), 15 * SECOND);
        let huge_base = Backoff::new(Duration::MAX, 2, 5 * SECOND);
        assert_eq!(huge_base.nominal(40), 5 * SECOND);
        let uncapped = Backoff::new(SECOND, 2, Duration::MAX).with_jitter(0.5);
        assert_eq!(uncapped.delay(u32::MAX, 1.0), Duration::MAX);
        assert!(uncapped.delay(u32::MAX, 0.0) < Duration::MAX);
    }

    #[test]
    fn equal_jitter_is_half_fixed_half_random() {
        let policy = Backoff::new(SECOND, 2, 30 * SECOND).with_jitter(0.5);
        assert_eq!(policy.delay(3, 0.0), 2 * SECOND);
        assert_eq!(policy.delay(3, 0.5), 3 * SECOND);
        assert_eq!(policy.delay(3, 1.0), 4 * SECOND);
        // Out-of-range and NaN samples are clamped, never a panic.
        assert_eq!(policy.delay(3, 7.0), 4 * SECOND);
        assert_eq!(policy.delay(3, -1.0), 2 * SECOND);
        assert_eq!(policy.delay(3, f64::NAN), 2 * SECOND);
        // So is the share itself.
        let all_random = Backoff::new(SECOND, 2, 30 * SECOND).with_jitter(3.0);
        assert_eq!(all_random.delay(3, 0.0), Duration::ZERO);
        let no_jitter = Backoff::new(SECOND, 2, 30 * SECOND).with_jitter(f64::NAN);
        assert_eq!(no_jitter.delay(3, 0.0), 4 * SECOND);
    }

    proptest! {
        #[test]
        fn nominal_delays_never_shrink_and_never_pass_the_cap(
            base_ms in 1u64..10_000,
            factor in 0u32..5,
            cap_ms in 0u64..1_000_000,
            failures in 0u32..200,
        ) {
            let policy = Backoff::new(
                Duration::from_millis(base_ms),
                factor,
                Duration::from_millis(cap_ms),
            );
            let (now, next) = (policy.nominal(failures), policy.nominal(failures + 1));
            prop_assert!(now <= next, "{now:?} then {next:?}");
            prop_assert!(next <= policy.cap());
        }

        #[test]
        fn jittered_delays_stay_within_their_bounds(
            base_ms in 1u64..10_000,
            cap_ms in 0u64..1_000_000,
            share in 0.0f64..=1.0,
            failures in 0u32..200,
            random in 0.0f64..=1.0,
        ) {
            let policy = Backoff::new(
                Duration::from_millis(base_ms),
                2,
                Duration::from_millis(cap_ms),
            )
            .with_jitter(share);
            let nominal = policy.nominal(failures);
            let delay = policy.delay(failures, random);
            prop_assert!(delay <= nominal, "{delay:?} above {nominal:?}");
            prop_assert!(delay <= policy.cap());
            // The fixed part, allowing for float rounding of a nanosecond.
            let floor = nominal
                .mul_f64(1.0 - share)
                .saturating_sub(Duration::from_nanos(1));
            prop_assert!(delay >= floor, "{delay:?} below {floor:?}");
        }
    }
}
