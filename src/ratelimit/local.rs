//! The in-process limiter.

use std::fmt;
use std::sync::Arc;

use super::keyed::ClassBuckets;
use super::{Decision, KeyBuckets, LimiterUnavailable, Quota, RateLimiter};
use crate::Clock;

/// A [`RateLimiter`] that keeps its buckets in this process.
///
/// Each check reads the clock's monotonic time and runs the generic cell
/// rate algorithm (GCRA) on one atomic word per key and operation class:
/// lock-free, exact to the nanosecond. Limits are per process; several
/// instances of a service each enforce the full quota (see
/// `RedisRateLimiter`, feature `redis`, for one quota shared between them).
///
/// [`ApiKeys`](crate::ApiKeys) uses one by default, keeping each key's
/// buckets beside its cached record so that a check needs no map lookup.
/// Passed to [`ApiKeysBuilder::rate_limiter`](crate::ApiKeysBuilder::rate_limiter)
/// (e.g. to read another clock), or used on its own through [`RateLimiter`],
/// it keeps buckets by key id and class name itself, and drops those that
/// are full again as new ones are made, so memory stays bounded by the keys
/// in recent use. It keeps state for at most 64 distinct class names; a
/// check in a further one is [`LimiterUnavailable`]. Clones share state.
///
/// ```
/// use keygate::{LocalRateLimiter, ManualClock, Quota, QuotaError, RateLimiter};
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let clock = ManualClock::new();
/// let limiter = LocalRateLimiter::new(Arc::new(clock.clone()));
/// let quota = Quota::per_second(NonZeroU32::new(2).unwrap())?;
///
/// assert!(limiter.check("key_1", "send", &quota).await.unwrap().allowed);
/// assert!(limiter.check("key_1", "send", &quota).await.unwrap().allowed);
/// let denied = limiter.check("key_1", "send", &quota).await.unwrap();
/// assert_eq!(denied.retry_after, Some(Duration::from_millis(500)));
/// // Other keys and classes have buckets of their own.
/// assert!(limiter.check("key_2", "send", &quota).await.unwrap().allowed);
/// assert!(limiter.check("key_1", "read", &quota).await.unwrap().allowed);
///
/// clock.advance(Duration::from_millis(500));
/// assert!(limiter.check("key_1", "send", &quota).await.unwrap().allowed);
/// # Ok::<(), QuotaError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct LocalRateLimiter {
    clock: Arc<dyn Clock>,
    /// State for checks through [`RateLimiter`], which bring no slot.
    keyed: Arc<ClassBuckets>,
}

impl LocalRateLimiter {
    /// A limiter reading monotonic time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            keyed: Arc::new(ClassBuckets::new()),
        }
    }

    /// Checks one request in operation class `class_index` of `slot` against
    /// `quota` at the clock's current time: the service's hot path, on the
    /// slot it keeps beside the cached key record.
    ///
    /// A `class_index` outside the slot is a programming error; it is
    /// reported as [`LimiterUnavailable`] rather than a panic or a guess.
    #[inline]
    pub(crate) fn check_slot(
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

    /// Checks one request by `key_id` in class `class` against `quota` on
    /// the limiter's own state, at the clock's current time.
    pub(crate) fn check_keyed(
        &self,
        key_id: &str,
        class: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        self.keyed
            .check(key_id, class, quota, self.clock.monotonic_nanos())
    }
}

#[cold]
fn class_out_of_range() -> LimiterUnavailable {
    LimiterUnavailable::new("operation class index is out of range for this key's rate-limit slot")
}

impl fmt::Debug for LocalRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRateLimiter")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(
        &self,
        key_id: &str,
        class: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        self.check_keyed(key_id, class, quota)
    }

    /// Drops the key's buckets in every class.
    fn forget(&self, key_id: &str) {
        self.keyed.forget(key_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::nz;
    use crate::ManualClock;

    fn limiter() -> (ManualClock, LocalRateLimiter) {
        let clock = ManualClock::new();
        (clock.clone(), LocalRateLimiter::new(Arc::new(clock)))
    }

    #[test]
    fn hundred_per_minute() {
        let (clock, limiter) = limiter();
        let slot = KeyBuckets::new(1);
        let quota = Quota::per_minute(nz(100));
        let mut last = None;
        for i in 0..100u32 {
            let d = limiter.check_slot(&slot, 0, &quota).unwrap();
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 99 - i);
            last = Some(d);
        }
        let denied = limiter.check_slot(&slot, 0, &quota).unwrap();
        assert!(!denied.allowed);
        assert_eq!(denied.limit, 100);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(600)));
        assert_eq!(denied.retry_after_secs(), Some(1));
        assert_eq!(denied.reset, Duration::from_secs(60));

        clock.advance(last.unwrap().reset);
        assert!(slot.is_idle(clock.monotonic_nanos()));
        for _ in 0..100 {
            assert!(limiter.check_slot(&slot, 0, &quota).unwrap().allowed);
        }
        assert!(!limiter.check_slot(&slot, 0, &quota).unwrap().allowed);
    }

    #[test]
    fn retry_after_is_exact() {
        let (clock, limiter) = limiter();
        let slot = KeyBuckets::new(1);
        let quota = Quota::per_second(nz(3)).unwrap().with_burst(1).unwrap();
        clock.advance(Duration::from_millis(10));
        assert!(limiter.check_slot(&slot, 0, &quota).unwrap().allowed);
        clock.advance(Duration::from_millis(10));
        let d = limiter.check_slot(&slot, 0, &quota).unwrap();
        let retry = d.retry_after.unwrap();
        // 1 s / 3, rounded up to whole nanoseconds.
        assert_eq!(retry, Duration::from_nanos(333_333_334 - 10_000_000));
        clock.advance(retry - Duration::from_nanos(1));
        assert!(!limiter.check_slot(&slot, 0, &quota).unwrap().allowed);
        clock.advance(Duration::from_nanos(1));
        assert!(limiter.check_slot(&slot, 0, &quota).unwrap().allowed);
    }

    #[test]
    fn out_of_range_class_is_an_error() {
        let (_, limiter) = limiter();
        let slot = KeyBuckets::new(2);
        let quota = Quota::per_second(nz(1)).unwrap();
        let err = limiter.check_slot(&slot, 2, &quota).unwrap_err();
        assert!(err.reason().contains("out of range"));
        assert!(err.to_string().starts_with("rate limiter unavailable: "));
        assert!(limiter.check_slot(&KeyBuckets::new(0), 0, &quota).is_err());
    }

    #[tokio::test]
    async fn trait_checks_keep_state_by_key_and_class() {
        let (clock, limiter) = limiter();
        let shared: Arc<dyn RateLimiter> = Arc::new(limiter.clone());
        let quota = Quota::per_hour(nz(2));
        for expected in [true, true, false] {
            let d = shared.check("k", "write", &quota).await.unwrap();
            assert_eq!(d.allowed, expected);
        }
        // The same decisions as on a slot, field for field.
        let slot = KeyBuckets::new(1);
        clock.advance(Duration::from_secs(7));
        let on_slot = [(); 3].map(|_| limiter.check_slot(&slot, 0, &quota).unwrap());
        for expected in on_slot {
            assert_eq!(
                shared.check("fresh", "write", &quota).await.unwrap(),
                expected
            );
        }
        // Other classes and keys are untouched; clones share the state.
        assert!(shared.check("k", "read", &quota).await.unwrap().allowed);
        assert!(shared.check("k2", "write", &quota).await.unwrap().allowed);
        assert!(!limiter.check_keyed("k", "write", &quota).unwrap().allowed);
        // Forgetting a key drops its buckets in every class, and only its.
        shared.forget("k");
        assert_eq!(
            shared.check("k", "write", &quota).await.unwrap().remaining,
            1
        );
        assert_eq!(
            shared.check("k", "read", &quota).await.unwrap().remaining,
            1
        );
        assert_eq!(
            shared.check("k2", "write", &quota).await.unwrap().remaining,
            0
        );
    }

    #[test]
    fn debug_shows_no_state() {
        let (_, limiter) = limiter();
        let _ = limiter.check_keyed("key_secretive", "send", &Quota::per_hour(nz(1)));
        let shown = format!("{limiter:?}");
        assert!(shown.starts_with("LocalRateLimiter"), "{shown}");
        assert!(!shown.contains("key_secretive"), "{shown}");
    }

    #[test]
    fn concurrent_checks_at_one_instant_admit_exactly_burst() {
        let (_, limiter) = limiter();
        for burst in [1u32, 7, 100, 1000] {
            let slot = KeyBuckets::new(1);
            let quota = Quota::per_hour(nz(10)).with_burst(burst).unwrap();
            let admitted = AtomicU32::new(0);
            let denied = AtomicU32::new(0);
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        barrier.wait();
                        for _ in 0..(burst / 4 + 50) {
                            let d = limiter.check_slot(&slot, 0, &quota).unwrap();
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
