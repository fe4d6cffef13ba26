//! The generic cell rate algorithm (GCRA) on a single atomic word.
//!
//! A bucket stores one number, the *theoretical arrival time* (TAT): the
//! monotonic instant, in nanoseconds, at which the bucket would be full again.
//! Any TAT at or before now means "full", so the initial value 0 is a fresh
//! bucket at every instant, including time 0 itself. A request at `now` is
//! admitted when `max(TAT, now) + interval - now <= tolerance`, where
//! `interval = period / limit` and `tolerance = interval * burst`; admitting
//! moves TAT to `max(TAT, now) + interval`. A denial leaves the state alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Decision, Quota};

/// One rate-limit bucket: GCRA state in a single `AtomicU64`.
///
/// Checks are lock-free (a compare-and-swap loop) and take the current time
/// from the caller as monotonic nanoseconds (see
/// [`Clock::monotonic_nanos`](crate::Clock::monotonic_nanos)), so a bucket
/// never reads a clock itself. A fresh bucket admits exactly `burst` requests
/// at one instant, then one per emission interval.
///
/// The bucket does not remember its quota: always check it against the same
/// one (changing quotas is allowed and takes effect from the next check).
///
/// [`ApiKeys`](crate::ApiKeys) keeps one per key and operation class; it is
/// public so that a single limit (one client, one endpoint) can use the same
/// eight bytes and the same arithmetic, like `governor`'s direct limiter:
///
/// ```
/// use keygate::ratelimit::Bucket;
/// use keygate::{Clock, Quota, SystemClock};
/// use std::num::NonZeroU32;
///
/// let clock = SystemClock::new();
/// let bucket = Bucket::new();
/// let quota = Quota::per_second(NonZeroU32::new(2).unwrap()).unwrap();
/// let now = clock.monotonic_nanos();
/// assert!(bucket.check(&quota, now).allowed);
/// assert!(bucket.check(&quota, now).allowed);
/// let denied = bucket.check(&quota, now);
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after, Some(std::time::Duration::from_millis(500)));
/// ```
#[derive(Debug, Default)]
pub struct Bucket {
    /// Theoretical arrival time in monotonic nanoseconds; at or before now
    /// means the bucket is full, so 0 is always fresh.
    tat: AtomicU64,
}

impl Bucket {
    /// A full bucket.
    pub const fn new() -> Self {
        Self {
            tat: AtomicU64::new(0),
        }
    }

    /// Checks one request at monotonic time `now_nanos` against `quota`,
    /// consuming a token if it is admitted.
    ///
    /// Times should not run backwards for one bucket; if they do, the earlier
    /// time is judged against the later state, which can only deny more.
    /// A request whose new state would lie beyond `u64::MAX` nanoseconds (the
    /// end of the monotonic clock, some 584 years in) is denied, with a
    /// `retry_after` of [`Duration::MAX`]: time cannot reach it.
    #[inline]
    pub fn check(&self, quota: &Quota, now_nanos: u64) -> Decision {
        let interval = quota.interval_nanos();
        let tolerance = quota.tolerance_nanos();
        // Relaxed is enough: the bucket is a single word and publishes no
        // other memory; the compare-and-swap alone makes each admission count.
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now_nanos);
            let backlog = start - now_nanos;
            // Admitted when backlog + interval <= tolerance. Compared as
            // backlog <= tolerance - interval (burst >= 1 makes that
            // non-negative) so that no sum is formed that could overflow.
            let slack = tolerance - interval;
            if backlog > slack {
                return deny(quota, backlog, Duration::from_nanos(backlog - slack));
            }
            let ahead = backlog + interval;
            let Some(new_tat) = now_nanos.checked_add(ahead) else {
                // Admissible, but the state cannot be stored past the end of
                // the clock; denying is the only answer that stays in quota.
                return deny(quota, backlog, Duration::MAX);
            };
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    // (tolerance - ahead) / interval < burst, so it fits in u32.
                    let remaining = ((tolerance - ahead) / interval) as u32;
                    return Decision {
                        allowed: true,
                        limit: quota.burst(),
                        remaining,
                        reset: Duration::from_nanos(ahead),
                        retry_after: None,
                    };
                }
                Err(current) => tat = current,
            }
        }
    }

    /// Whether the bucket is full at `now_nanos`, i.e. indistinguishable from
    /// a fresh [`Bucket::new`] for every quota.
    pub fn is_idle(&self, now_nanos: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now_nanos
    }

    /// The monotonic time at which the bucket is full again (0 for a fresh
    /// one).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // used by the HTTP layer
    pub(crate) fn full_at(&self) -> u64 {
        self.tat.load(Ordering::Relaxed)
    }

    /// Gives back up to one token an earlier admitted [`check`](Self::check)
    /// against `quota` took: `unspent` nanoseconds of it, at most one
    /// emission interval (the whole token).
    ///
    /// A token taken at `then` with a decision whose `reset` was `r` still
    /// holds `then + r - now` nanoseconds of the bucket at `now`: pass that
    /// (saturating at 0), so a token that has lapsed meanwhile gives nothing
    /// back. The state never moves below 0 (full).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // used by the HTTP layer
    pub(crate) fn refund(&self, quota: &Quota, unspent: u64) {
        let back = unspent.min(quota.interval_nanos());
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.saturating_sub(back))
            });
    }
}

fn deny(quota: &Quota, backlog: u64, retry_after: Duration) -> Decision {
    Decision {
        allowed: false,
        limit: quota.burst(),
        remaining: 0,
        reset: Duration::from_nanos(backlog),
        retry_after: Some(retry_after),
    }
}

/// The rate-limit state of one API key: one [`Bucket`] per operation class.
///
/// The service keeps this beside its cached key record, so a rate-limit check
/// is an index into a slice and needs no second map lookup. All buckets are
/// allocated once, up front, in one allocation of one `AtomicU64` per class.
#[derive(Debug)]
pub(crate) struct KeyBuckets {
    buckets: Box<[Bucket]>,
}

impl KeyBuckets {
    /// `n_classes` fresh buckets, indexed `0..n_classes`.
    pub(crate) fn new(n_classes: usize) -> Self {
        Self {
            buckets: (0..n_classes).map(|_| Bucket::new()).collect(),
        }
    }

    /// The bucket for operation class `class_index`, or `None` if out of range.
    #[inline]
    pub(crate) fn bucket(&self, class_index: usize) -> Option<&Bucket> {
        self.buckets.get(class_index)
    }

    /// The number of operation classes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether there are no operation classes.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Whether every bucket is full at `now_nanos`, so dropping this state
    /// and starting afresh later would change nothing.
    pub(crate) fn is_idle(&self, now_nanos: u64) -> bool {
        self.buckets.iter().all(|b| b.is_idle(now_nanos))
    }

    /// The monotonic time at which every bucket is full again.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // used by the HTTP layer
    pub(crate) fn full_at(&self) -> u64 {
        self.buckets.iter().map(Bucket::full_at).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::nz;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_one_per_interval() {
        let quota = Quota::per_second(nz(10)).unwrap().with_burst(3).unwrap();
        let bucket = Bucket::new();
        let now = 5 * SEC;
        assert!(bucket.check(&quota, now).allowed);
        assert!(bucket.check(&quota, now).allowed);
        assert!(bucket.check(&quota, now).allowed);
        let denied = bucket.check(&quota, now);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(100)));

        // One emission interval later, one more request fits.
        assert!(bucket.check(&quota, now + 100 * MS).allowed);
        assert!(!bucket.is_idle(now + 100 * MS));
        assert!(bucket.is_idle(now + 400 * MS));
    }

    #[test]
    fn fresh_bucket_admits_exactly_burst_at_time_zero() {
        for burst in [1, 2, 7, 100] {
            let q = Quota::per_second(nz(10))
                .unwrap()
                .with_burst(burst)
                .unwrap();
            let b = Bucket::new();
            for _ in 0..burst {
                assert!(b.check(&q, 0).allowed);
            }
            let d = b.check(&q, 0);
            assert!(!d.allowed);
            assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        }
    }

    #[test]
    fn remaining_counts_down_from_burst_minus_one() {
        let q = Quota::per_second(nz(5)).unwrap().with_burst(4).unwrap();
        let b = Bucket::new();
        let now = 3 * SEC;
        for expected in (0..4).rev() {
            let d = b.check(&q, now);
            assert!(d.allowed);
            assert_eq!(d.limit, 4);
            assert_eq!(d.remaining, expected);
            assert_eq!(d.retry_after, None);
            assert_eq!(d.reset, Duration::from_millis(200 * (4 - expected as u64)));
        }
        let d = b.check(&q, now);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset, Duration::from_millis(800));
    }

    #[test]
    fn admits_exactly_at_retry_after_and_not_before() {
        let q = Quota::per_second(nz(10)).unwrap().with_burst(2).unwrap();
        let b = Bucket::new();
        let _ = b.check(&q, 0);
        let _ = b.check(&q, 0);
        let d = b.check(&q, 30 * MS);
        let retry = d.retry_after.unwrap();
        assert_eq!(retry, Duration::from_millis(70));
        let at = 30 * MS + retry.as_nanos() as u64;
        assert!(!b.check(&q, at - 1).allowed);
        let d = b.check(&q, at);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn steady_rate_after_burst() {
        let q = Quota::per_second(nz(10)).unwrap().with_burst(1).unwrap();
        let b = Bucket::new();
        let mut admitted = 0;
        // Every 10 ms for one second: one admission per 100 ms.
        for i in 0..100 {
            if b.check(&q, i * 10 * MS).allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10);
    }

    #[test]
    fn refills_to_full_after_reset() {
        let q = Quota::per_minute(nz(100));
        let b = Bucket::new();
        let mut last = None;
        for _ in 0..100 {
            last = Some(b.check(&q, 0));
        }
        let reset = last.unwrap().reset;
        assert_eq!(reset, Duration::from_secs(60));
        let now = reset.as_nanos() as u64;
        assert!(!b.is_idle(now - 1));
        assert!(b.is_idle(now));
        for _ in 0..100 {
            assert!(b.check(&q, now).allowed);
        }
        assert!(!b.check(&q, now).allowed);
    }

    #[test]
    fn time_going_backwards_only_denies_more() {
        let q = Quota::per_second(nz(1)).unwrap();
        let b = Bucket::new();
        assert!(b.check(&q, 10 * SEC).allowed);
        let d = b.check(&q, 5 * SEC);
        assert!(!d.allowed);
        // Admissible again at 11 s, as for a request made at 10 s.
        assert_eq!(d.retry_after, Some(Duration::from_secs(6)));
    }

    #[test]
    fn denies_at_the_end_of_time() {
        let q = Quota::per_second(nz(1)).unwrap().with_burst(2).unwrap();
        let b = Bucket::new();
        // The new TAT would pass u64::MAX: denied, with no panic.
        let now = u64::MAX - 1;
        let d = b.check(&q, now);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::MAX));
        assert!(!b.check(&q, u64::MAX).allowed);
        assert!(b.is_idle(u64::MAX));
        // Up to the last nanosecond that can be stored, admissions are exact.
        let now = u64::MAX - 2 * SEC;
        assert!(b.check(&q, now).allowed);
        assert!(b.check(&q, now).allowed);
        let d = b.check(&q, now);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert!(!b.check(&q, now + 1).allowed);
    }

    #[test]
    fn longest_period_is_enforced_late_in_the_clock() {
        // Before quotas were bounded, a period near u64::MAX ns pinned the
        // TAT at u64::MAX and every request was admitted.
        let q = Quota::new(1, Quota::MAX_PERIOD).unwrap();
        let b = Bucket::new();
        let now = u64::MAX - Quota::MAX_PERIOD.as_nanos() as u64;
        assert!(b.check(&q, now).allowed);
        let admitted = (0..500).filter(|i| b.check(&q, now + i).allowed).count();
        assert_eq!(admitted, 0);
    }

    #[test]
    fn backlog_near_u64_max_is_denied_exactly() {
        // A TAT far ahead of now (a clock that ran backwards) and a long
        // interval: backlog + interval is past u64::MAX.
        let long = Quota::new(1, Quota::MAX_PERIOD).unwrap();
        let b = Bucket::new();
        let late = u64::MAX - Quota::MAX_PERIOD.as_nanos() as u64;
        assert!(b.check(&long, late).allowed);
        let d = b.check(&long, 0);
        assert!(!d.allowed);
        assert_eq!(d.reset, Duration::from_nanos(u64::MAX));
        assert_eq!(d.retry_after, Some(Duration::from_nanos(u64::MAX)));
    }

    #[test]
    fn a_refund_undoes_one_admission() {
        let q = Quota::per_second(nz(10)).unwrap().with_burst(2).unwrap();
        let b = Bucket::new();
        assert!(b.check(&q, SEC).allowed);
        assert!(b.check(&q, SEC).allowed);
        assert!(!b.check(&q, SEC).allowed);
        b.refund(&q, u64::MAX);
        assert_eq!(b.full_at(), SEC + 100 * MS);
        assert!(b.check(&q, SEC).allowed);
        assert!(!b.check(&q, SEC).allowed);
        b.refund(&q, 100 * MS);
        b.refund(&q, 100 * MS);
        assert!(b.is_idle(SEC));
        // Refunds past full add nothing: still exactly the burst.
        b.refund(&q, 100 * MS);
        assert!(b.check(&q, SEC).allowed);
        assert!(b.check(&q, SEC).allowed);
        assert!(!b.check(&q, SEC).allowed);
        // A token that has partly lapsed gives back only what is left of it.
        b.refund(&q, 30 * MS);
        assert_eq!(b.full_at(), SEC + 170 * MS);
        let fresh = Bucket::new();
        fresh.refund(&q, u64::MAX);
        assert_eq!(fresh.full_at(), 0);
    }

    #[test]
    fn key_buckets_are_independent() {
        let q = Quota::per_second(nz(1)).unwrap();
        let slot = KeyBuckets::new(3);
        assert_eq!(slot.len(), 3);
        assert!(!slot.is_empty());
        assert!(slot.is_idle(0));
        assert!(slot.bucket(0).unwrap().check(&q, 0).allowed);
        assert!(!slot.bucket(0).unwrap().check(&q, 0).allowed);
        assert!(slot.bucket(1).unwrap().check(&q, 0).allowed);
        assert!(slot.bucket(3).is_none());
        assert!(!slot.is_idle(SEC - 1));
        assert!(slot.is_idle(SEC));
        assert!(KeyBuckets::new(0).is_idle(0));
    }
}
