//! Time limits as types: a rollout's deadline, and the retry policy for model requests.
//!
//! Below the wire edge nothing passes seconds around as numbers; a `Deadline` knows how much is
//! left and what it was, so every wait is bounded by it and errors can say which limit hit.

use std::time::Duration;

use tokio::time::Instant;

/// A point in time a rollout must finish by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    /// `total` from now.
    pub fn after(total: Duration) -> Self {
        Self {
            // A limit too large to add (years) is as good as none.
            at: Instant::now()
                .checked_add(total)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)),
            total,
        }
    }

    /// When it passes.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The whole allowance, as set.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// How transient model-server failures (429, 5xx, broken connections, request timeouts) are
/// retried: exponential backoff with full jitter, `Retry-After` honoured up to `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub max_retries: u32,
    /// The first backoff's ceiling; doubled per retry.
    pub initial_backoff: Duration,
    /// Backoff ceiling (also caps `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): a server's `Retry-After` if given, else a
    /// random share of `initial * 2^(retry-1)` (full jitter spreads a burst of 429s apart).
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_backoff);
        }
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        for _ in 0..100 {
            assert!(policy.backoff(1, None) <= Duration::from_millis(100));
            assert!(policy.backoff(2, None) <= Duration::from_millis(200));
            assert!(policy.backoff(9, None) <= Duration::from_millis(350));
        }
        assert_eq!(
            policy.backoff(1, Some(Duration::from_millis(250))),
            Duration::from_millis(250)
        );
        assert_eq!(
            policy.backoff(1, Some(Duration::from_secs(60))),
            Duration::from_millis(350)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_counts_down_and_passes() {
        let deadline = Deadline::after(Duration::from_secs(2));
        assert!(!deadline.passed());
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(deadline.remaining(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(deadline.passed());
        assert_eq!(deadline.total(), Duration::from_secs(2));
    }
}
