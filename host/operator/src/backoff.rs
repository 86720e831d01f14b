//! Retry delays after a recorded failure.
//!
//! The delay doubles with every consecutive failure, from one minute up to a cap of 2^9 minutes,
//! and a random share of up to half of it is taken off so that many hosts failing together do
//! not retry in lock step.

use std::time::Duration;

/// The exponent at which the delay stops growing (2^9 minutes, about eight and a half hours).
const MAX_EXPONENT: u32 = 9;

/// The largest share of the delay that jitter may remove.
const MAX_JITTER_SHARE: f64 = 0.5;

/// A source of jitter: a value in `[0, 1)` drawn for each backoff computation.
///
/// Production code uses [`RandomJitter`]; tests inject a fixed value so delays are exact.
pub trait Jitter: Send + Sync {
    /// Returns a value in `[0, 1)`. Values outside that range are clamped.
    fn sample(&self) -> f64;
}

/// Jitter drawn from the thread-local random generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn sample(&self) -> f64 {
        rand::random::<f64>()
    }
}

/// Jitter that always returns the same value; used by tests and benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn sample(&self) -> f64 {
        self.0
    }
}

/// The delay before retrying after `error_count` consecutive failures.
///
/// `2^min(n, 9)` minutes reduced by `jitter * 50%`, so the result lies in
/// `[2^(n-1), 2^n]` minutes. An error count of zero yields 30 to 60 seconds.
pub fn backoff(error_count: u32, jitter: &dyn Jitter) -> Duration {
    let base_seconds = 60.0 * f64::from(1u32 << error_count.min(MAX_EXPONENT));
    let share = jitter.sample().clamp(0.0, 1.0) * MAX_JITTER_SHARE;

    Duration::from_secs_f64(base_seconds * (1.0 - share))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes(value: f64) -> Duration {
        Duration::from_secs_f64(value * 60.0)
    }

    #[test]
    fn backoff_doubles_per_failure_without_jitter() {
        let none = FixedJitter(0.0);

        assert_eq!(backoff(1, &none), minutes(2.0));
        assert_eq!(backoff(2, &none), minutes(4.0));
        assert_eq!(backoff(5, &none), minutes(32.0));
    }

    #[test]
    fn backoff_is_capped_at_the_ninth_power() {
        let none = FixedJitter(0.0);

        assert_eq!(backoff(9, &none), minutes(512.0));
        assert_eq!(backoff(40, &none), minutes(512.0));
    }

    #[test]
    fn jitter_removes_at_most_half() {
        assert_eq!(backoff(1, &FixedJitter(1.0)), minutes(1.0));
        assert_eq!(backoff(3, &FixedJitter(0.5)), minutes(6.0));
        assert_eq!(backoff(3, &FixedJitter(7.0)), minutes(4.0));
    }

    #[test]
    fn zero_errors_wait_under_a_minute() {
        assert_eq!(backoff(0, &FixedJitter(0.0)), Duration::from_secs(60));
        assert_eq!(backoff(0, &FixedJitter(1.0)), Duration::from_secs(30));
    }

    #[test]
    fn random_jitter_stays_within_bounds() {
        for _ in 0..100 {
            let delay = backoff(2, &RandomJitter);
            assert!(delay >= minutes(2.0) && delay <= minutes(4.0), "{delay:?}");
        }
    }
}
