//! The in-process limiter.

use std::sync::Arc;

use super::{Decision, KeyBuckets, LimiterUnavailable, Quota, RateLimiter};
use crate::Clock;

/// A [`RateLimiter`] whose state lives in each key's [`KeyBuckets`] slot.
///
/// Checks read the clock's monotonic time and run GCRA on the slot's bucket
/// for the operation class: no locks, no allocation, no map lookup. Limits
/// are per process; several instances of a service each enforce the full
/// quota.
///
/// ```
/// use keygate::{KeyBuckets, LocalRateLimiter, ManualClock, Quota};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = LocalRateLimiter::new(Arc::new(clock.clone()));
/// let slot = KeyBuckets::new(1);
/// let quota = Quota::per_second(2)?;
///
/// assert!(limiter.check_now(&slot, 0, &quota).unwrap().allowed);
/// assert!(limiter.check_now(&slot, 0, &quota).unwrap().allowed);
/// let denied = limiter.check_now(&slot, 0, &quota).unwrap();
/// assert_eq!(denied.retry_after, Some(Duration::from_millis(500)));
///
/// clock.advance(Duration::from_millis(500));
/// assert!(limiter.check_now(&slot, 0, &quota).unwrap().allowed);
/// # Ok::<(), keygate::QuotaError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalRateLimiter {
    clock: Arc<dyn Clock>,
}

impl LocalRateLimiter {
    /// A limiter reading monotonic time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }

    /// Checks one request in operation class `class_index` of `slot` against
    /// `quota` at the clock's current time; the synchronous hot path.
    ///
    /// A `class_index` outside the slot is a programming error; it is
    /// reported as [`LimiterUnavailable`] rather than a panic or a guess.
    #[inline]
    pub fn check_now(
        &self,
        slot: &KeyBuckets,
        class_index: usize,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        match slot.bucket(class_index) {
            Some(bucket) => Ok(bucket.check(quota, self.clock.monotonic_nanos())),
            None => Err(class_out_of_range()),
        }
    }
}

#[cold]
fn class_out_of_range() -> LimiterUnavailable {
    LimiterUnavailable::new("operation class index is out of range for this key's rate-limit slot")
}

#[async_trait::async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(
        &self,
        _key_id: &str,
        slot: &KeyBuckets,
        class_index: usize,
        _class_name: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        self.check_now(slot, class_index, quota)
    }

    /// Nothing to do: the state lives in the slot and goes with it.
    fn forget(&self, _key_id: &str) {}
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::ManualClock;

    fn limiter() -> (ManualClock, LocalRateLimiter) {
        let clock = ManualClock::new();
        (clock.clone(), LocalRateLimiter::new(Arc::new(clock)))
    }

    #[test]
    fn hundred_per_minute() {
        let (clock, limiter) = limiter();
        let slot = KeyBuckets::new(1);
        let quota = Quota::per_minute(100).unwrap();
        let mut last = None;
        for i in 0..100u32 {
            let d = limiter.check_now(&slot, 0, &quota).unwrap();
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 99 - i);
            last = Some(d);
        }
        let denied = limiter.check_now(&slot, 0, &quota).unwrap();
        assert!(!denied.allowed);
        assert_eq!(denied.limit, 100);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(600)));
        assert_eq!(denied.retry_after_secs(), Some(1));
        assert_eq!(denied.reset, Duration::from_secs(60));

        clock.advance(last.unwrap().reset);
        assert!(slot.is_idle(clock.monotonic_nanos()));
        for _ in 0..100 {
            assert!(limiter.check_now(&slot, 0, &quota).unwrap().allowed);
        }
        assert!(!limiter.check_now(&slot, 0, &quota).unwrap().allowed);
    }

    #[test]
    fn retry_after_is_exact() {
        let (clock, limiter) = limiter();
        let slot = KeyBuckets::new(1);
        let quota = Quota::per_second(3).unwrap().with_burst(1).unwrap();
        clock.advance(Duration::from_millis(10));
        assert!(limiter.check_now(&slot, 0, &quota).unwrap().allowed);
        clock.advance(Duration::from_millis(10));
        let d = limiter.check_now(&slot, 0, &quota).unwrap();
        let retry = d.retry_after.unwrap();
        // 1 s / 3, rounded up to whole nanoseconds.
        assert_eq!(retry, Duration::from_nanos(333_333_334 - 10_000_000));
        clock.advance(retry - Duration::from_nanos(1));
        assert!(!limiter.check_now(&slot, 0, &quota).unwrap().allowed);
        clock.advance(Duration::from_nanos(1));
        assert!(limiter.check_now(&slot, 0, &quota).unwrap().allowed);
    }

    #[test]
    fn out_of_range_class_is_an_error() {
        let (_, limiter) = limiter();
        let slot = KeyBuckets::new(2);
        let quota = Quota::per_second(1).unwrap();
        let err = limiter.check_now(&slot, 2, &quota).unwrap_err();
        assert!(err.reason().contains("out of range"));
        assert!(err.to_string().starts_with("rate limiter unavailable: "));
        assert!(limiter.check_now(&KeyBuckets::new(0), 0, &quota).is_err());
    }

    #[tokio::test]
    async fn trait_check_matches_check_now() {
        let (_, limiter) = limiter();
        let shared: Arc<dyn RateLimiter> = Arc::new(limiter);
        let slot = KeyBuckets::new(2);
        let quota = Quota::per_hour(2).unwrap();
        for expected in [true, true, false] {
            let d = shared.check("k", &slot, 1, "write", &quota).await.unwrap();
            assert_eq!(d.allowed, expected);
        }
        // Class 0 is untouched.
        assert!(
            shared
                .check("k", &slot, 0, "read", &quota)
                .await
                .unwrap()
                .allowed
        );
        assert!(shared.check("k", &slot, 5, "nope", &quota).await.is_err());
        shared.forget("k");
    }

    #[test]
    fn concurrent_checks_at_one_instant_admit_exactly_burst() {
        let (_, limiter) = limiter();
        for burst in [1u32, 7, 100, 1000] {
            let slot = KeyBuckets::new(1);
            let quota = Quota::per_hour(10).unwrap().with_burst(burst).unwrap();
            let admitted = AtomicU32::new(0);
            let denied = AtomicU32::new(0);
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        barrier.wait();
                        for _ in 0..(burst / 4 + 50) {
                            let d = limiter.check_now(&slot, 0, &quota).unwrap();
                            if d.allowed {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            } else {
                                denied.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            let total = 8 * (burst / 4 + 50);
            assert_eq!(admitted.load(Ordering::Relaxed), burst);
            assert_eq!(denied.load(Ordering::Relaxed), total - burst);
        }
    }
}
