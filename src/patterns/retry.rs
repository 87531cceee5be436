//! Retry policy: how many deliveries a record gets and how long a failed
//! one waits before the next.

use std::time::Duration;

/// Delay before a failed record is delivered again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay after every failure (zero: redeliver at once).
    Fixed(Duration),
    /// `initial * 2^(failures - 1)`, capped at `max`. With `jitter`, the
    /// delay is drawn uniformly from its upper half ("equal jitter"), so
    /// records that failed together do not return together.
    Exponential {
        /// Delay after the first failure.
        initial: Duration,
        /// Upper bound on any delay.
        max: Duration,
        /// Randomize the delay within `[d/2, d]`.
        jitter: bool,
    },
}

impl Backoff {
    /// The delay after the `failures`-th failure (from 1).
    pub fn delay(&self, failures: u32, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Backoff::Fixed(delay) => delay,
            Backoff::Exponential { initial, max, jitter } => {
                let doublings = failures.saturating_sub(1).min(32);
                let full = initial.saturating_mul(1u32 << doublings.min(31)).min(max);
                if !jitter || full.is_zero() {
                    return full;
                }
                let half = full / 2;
                half + Duration::from_nanos(rng.u64(0..=(full - half).as_nanos() as u64))
            }
        }
    }
}

/// Deliveries allowed per record and the backoff between them.
/// Builder-style: start from [`RetryPolicy::default`]. The fields are
/// public to read; more may be added, so build with the methods.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Backoff, RetryPolicy};
///
/// let retry = RetryPolicy::default().max_attempts(10).backoff(Backoff::Exponential {
///     initial: Duration::from_millis(100),
///     max: Duration::from_secs(30),
///     jitter: true,
/// });
/// assert_eq!(retry.max_attempts, 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Deliveries before a record is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// Delay after each failure.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 5 attempts, exponential backoff from 1 s to 60 s with jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                jitter: true,
            },
        }
    }
}

impl RetryPolicy {
    /// Deliveries before a record is dead-lettered; must be at least 1.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Delay after each failure.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let backoff = Backoff::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: false,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let delays: Vec<u128> = (1..=6).map(|n| backoff.delay(n, &mut rng).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX, &mut rng), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let backoff = Backoff::Exponential {
            initial: Duration::from_millis(400),
            max: Duration::from_secs(10),
            jitter: true,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let delay = backoff.delay(1, &mut rng);
            assert!(delay >= Duration::from_millis(200) && delay <= Duration::from_millis(400));
        }
    }
}
