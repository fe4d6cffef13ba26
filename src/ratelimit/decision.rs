//! The outcome of one rate-limit check.

use std::time::Duration;

/// Whether a request was admitted, and what to tell the client.
///
/// Carries everything needed for the `RateLimit-Limit`, `RateLimit-Remaining`,
/// `RateLimit-Reset` and (on denial) `Retry-After` response headers.
///
/// ```
/// use keygate::{LocalRateLimiter, ManualClock, Quota, RateLimiter};
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = LocalRateLimiter::new(Arc::new(ManualClock::new()));
/// let quota = Quota::per_minute(NonZeroU32::new(2).unwrap());
/// let first = limiter.check("key_1", "send", &quota).await.unwrap();
/// assert!(first.allowed);
/// assert_eq!((first.limit, first.remaining), (2, 1));
/// assert_eq!(first.reset, Duration::from_secs(30));
///
/// let _ = limiter.check("key_1", "send", &quota).await.unwrap();
/// let denied = limiter.check("key_1", "send", &quota).await.unwrap();
/// assert!(!denied.allowed);
/// assert_eq!(denied.remaining, 0);
/// assert_eq!(denied.retry_after, Some(Duration::from_secs(30)));
/// assert_eq!(denied.retry_after_secs(), Some(30));
/// assert_eq!(denied.reset_secs(), 60);
/// # });
/// ```
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The number of requests a full bucket admits at once (the quota's burst);
    /// the value to advertise as `RateLimit-Limit`.
    pub limit: u32,
    /// Whole requests that could still be admitted right now, after this one.
    pub remaining: u32,
    /// Time until the bucket is full again if no further requests arrive.
    pub reset: Duration,
    /// On denial, the time until one request would be admitted; `None` when
    /// the request was admitted.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// [`reset`](Self::reset) in whole seconds, rounded up (so any non-zero
    /// time is at least 1); the value for a `RateLimit-Reset` header.
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset)
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up (so any
    /// non-zero time is at least 1); the value for a `Retry-After` header.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(ceil_secs)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(reset: Duration, retry_after: Option<Duration>) -> Decision {
        Decision {
            allowed: retry_after.is_none(),
            limit: 10,
            remaining: 0,
            reset,
            retry_after,
        }
    }

    #[test]
    fn seconds_round_up() {
        let d = decision(Duration::ZERO, None);
        assert_eq!(d.reset_secs(), 0);
        assert_eq!(d.retry_after_secs(), None);

        let d = decision(Duration::from_nanos(1), Some(Duration::from_millis(600)));
        assert_eq!(d.reset_secs(), 1);
        assert_eq!(d.retry_after_secs(), Some(1));

        let d = decision(Duration::from_secs(2), Some(Duration::from_millis(2001)));
        assert_eq!(d.reset_secs(), 2);
        assert_eq!(d.retry_after_secs(), Some(3));

        let d = decision(Duration::MAX, None);
        assert_eq!(d.reset_secs(), u64::MAX);
    }
}
