//! Property tests for the GCRA rate limiter through the public API: a
//! `LocalRateLimiter` checked through the `RateLimiter` trait, on a clock the
//! test sets anywhere, with several keys and classes interleaved. (The
//! bucket's own properties, with its idleness observed, are unit tests in
//! `src/ratelimit/props.rs`.)

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use keygate::time::OffsetDateTime;
use keygate::{Clock, Decision, LocalRateLimiter, Quota, QuotaError, RateLimiter};
use proptest::prelude::*;

#[path = "support/quota_model.rs"]
mod quota_model;
use quota_model::*;

/// A clock whose monotonic time the test sets.
#[derive(Debug, Clone, Default)]
struct SetClock(Arc<AtomicU64>);

impl SetClock {
    fn set(&self, nanos: u64) {
        self.0.store(nanos, Ordering::SeqCst);
    }
}

impl Clock for SetClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    fn monotonic_nanos(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A limiter on a clock the test sets, checking synchronously: the local
/// limiter's future is ready at its first poll.
struct Limiter {
    clock: SetClock,
    limiter: LocalRateLimiter,
}

impl Limiter {
    fn new() -> Self {
        let clock = SetClock::default();
        let limiter = LocalRateLimiter::new(Arc::new(clock.clone()));
        Self { clock, limiter }
    }

    fn check(&self, key: &str, class: &str, quota: &Quota, at: u64) -> Decision {
        self.clock.set(at);
        let mut check = self.limiter.check(key, class, quota);
        match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(decision) => decision.expect("the local limiter decides"),
            Poll::Pending => panic!("the local limiter never waits"),
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

/// Keys and classes the scenarios spread their requests over.
const KEYS: [&str; 3] = ["key_a", "key_b", "key_c"];
const CLASSES: [&str; 2] = ["read", "send"];

/// A quota, a start time, and requests as (gap since the previous request,
/// key index, class index), gaps scaled to the quota so that bursts, steady
/// traffic and idle periods all occur.
fn scenario() -> impl Strategy<Value = (Quota, u64, Vec<(u64, usize, usize)>)> {
    quota().prop_flat_map(|q| {
        let interval = nanos(q.emission_interval());
        let tolerance = interval * u64::from(q.burst());
        let gap = prop_oneof![
            3 => Just(0u64),
            3 => 0..=interval,
            2 => 0..=tolerance + interval,
            1 => 0..=3 * tolerance,
        ];
        let request = (gap, 0..KEYS.len(), 0..CLASSES.len());
        let start = prop_oneof![Just(0u64), 0..=2 * tolerance];
        (Just(q), start, prop::collection::vec(request, 1..300))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every decision, for each key and class, matches that pair's own
    /// reference model and is self-consistent; retry_after is exact: earlier
    /// is denied, at it admitted. Forgetting a key starts it afresh in every
    /// class and leaves the others alone.
    #[test]
    fn decisions_match_a_reference_model_per_key_and_class(
        (q, start, requests) in scenario(),
        forget_at in any::<prop::sample::Index>(),
    ) {
        let limiter = Limiter::new();
        let fresh = LeakyBucket::new(&q);
        let mut models = vec![vec![fresh.clone(); CLASSES.len()]; KEYS.len()];
        let mut admissible_at = vec![vec![None::<u64>; CLASSES.len()]; KEYS.len()];
        let forget_at = forget_at.index(requests.len());
        let mut t = start;
        for (i, (gap, k, c)) in requests.into_iter().enumerate() {
            if i == forget_at {
                limiter.limiter.forget(KEYS[k]);
                models[k] = vec![fresh.clone(); CLASSES.len()];
                admissible_at[k] = vec![None; CLASSES.len()];
            }
            t += gap;
            let d = limiter.check(KEYS[k], CLASSES[c], &q, t);
            check_invariants(&q, &d);
            let (allowed, remaining) = models[k][c].check(t);
            prop_assert_eq!(d.allowed, allowed, "{} {} at {}", KEYS[k], CLASSES[c], t);
            prop_assert_eq!(u64::from(d.remaining), remaining, "at {}", t);
            if let Some(at) = admissible_at[k][c] {
                prop_assert_eq!(d.allowed, t >= at, "retry_after said {}, now {}", at, t);
            }
            admissible_at[k][c] = d.retry_after.map(|retry| t + nanos(retry));
        }
    }

    /// No window [t, t + w] ever holds more than burst + floor(w / interval)
    /// admissions for one key and class, however the others are used.
    #[test]
    fn admissions_in_any_window_are_bounded((q, start, requests) in scenario()) {
        let interval = nanos(q.emission_interval());
        let limiter = Limiter::new();
        let mut admitted = vec![Vec::new(); KEYS.len() * CLASSES.len()];
        let mut t = start;
        for (gap, k, c) in requests {
            t += gap;
            if limiter.check(KEYS[k], CLASSES[c], &q, t).allowed {
                admitted[k * CLASSES.len() + c].push(t);
            }
        }
        for admitted in admitted {
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let window = admitted[j] - admitted[i];
                    let count = (j - i + 1) as u64;
                    let bound = u64::from(q.burst()) + window / interval;
                    prop_assert!(
                        count <= bound,
                        "{count} admissions in {window} ns, bound {bound}"
                    );
                }
            }
        }
    }

    /// At one instant a fresh key admits exactly burst requests, remaining
    /// counting down from burst - 1 to 0; the next is denied, and a request
    /// exactly retry_after later is admitted.
    #[test]
    fn burst_then_retry_after(q in quota(), now in 0u64..1_000_000_000_000) {
        let limiter = Limiter::new();
        for expected in (0..q.burst()).rev() {
            let d = limiter.check("key", "send", &q, now);
            prop_assert!(d.allowed);
            prop_assert_eq!(d.remaining, expected);
        }
        let denied = limiter.check("key", "send", &q, now);
        prop_assert!(!denied.allowed);
        let retry = denied.retry_after.unwrap();
        prop_assert_eq!(retry, q.emission_interval());
        prop_assert_eq!(denied.reset, q.emission_interval() * q.burst());
        prop_assert!(!limiter.check("key", "send", &q, now + nanos(retry) - 1).allowed);
        let d = limiter.check("key", "send", &q, now + nanos(retry));
        prop_assert!(d.allowed);
        prop_assert_eq!(d.remaining, 0);
    }

    /// Serializing and deserializing a quota gives it back.
    #[test]
    fn quota_serde_round_trip(q in quota()) {
        let json = serde_json::to_string(&q).unwrap();
        let back: Quota = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, q);
    }

    /// The constructors agree with `Quota::new` for every limit: per minute
    /// and per hour never fail, per second fails exactly above 10^9.
    #[test]
    fn constructors_agree_with_new(limit in prop_oneof![1u32..=1_000, 1u32..=u32::MAX]) {
        let n = nz(limit);
        prop_assert_eq!(Ok(Quota::per_minute(n)), Quota::new(limit, Duration::from_secs(60)));
        prop_assert_eq!(Ok(Quota::per_hour(n)), Quota::new(limit, Duration::from_secs(3600)));
        let per_second = Quota::per_second(n);
        prop_assert_eq!(per_second, Quota::new(limit, Duration::from_secs(1)));
        prop_assert_eq!(per_second.is_ok(), limit <= 1_000_000_000);
    }
}

#[test]
fn quota_with_a_period_near_u64_max_nanoseconds_is_refused() {
    // Used to pass validation and then admit every request.
    assert_eq!(
        Quota::new(1, Duration::from_nanos(u64::MAX)),
        Err(QuotaError::PeriodTooLong)
    );
}

#[test]
fn deserialized_quota_with_a_huge_period_is_refused() {
    // About u64::MAX nanoseconds, in milliseconds.
    let err = serde_json::from_str::<Quota>(r#"{"limit":1,"period_ms":18446744073709}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("quota period must be at most 366 days"),
        "{err}"
    );
}

#[test]
fn rates_above_a_billion_per_second_are_refused_not_rounded() {
    assert!(Quota::per_second(nz(1_000_000_000)).is_ok());
    assert_eq!(
        Quota::per_second(nz(1_000_000_001)),
        Err(QuotaError::ZeroEmissionInterval)
    );
    assert_eq!(
        Quota::per_second(NonZeroU32::MAX),
        Err(QuotaError::ZeroEmissionInterval)
    );
}

#[test]
fn rates_above_five_hundred_million_per_second_do_not_double() {
    // The exact interval is 1.67 ns; rounded down to 1 ns it admitted 10^9/s.
    let q = Quota::per_second(nz(600_000_000))
        .unwrap()
        .with_burst(1)
        .unwrap();
    let limiter = Limiter::new();
    let admitted = (0..1_000u64)
        .filter(|&t| limiter.check("key", "send", &q, t).allowed)
        .count();
    assert!(admitted <= 600, "{admitted} admissions in 1 µs");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the key saw before, one instant never admits more than the
    /// burst (the limit unless set), and a fresh key admits exactly that
    /// many as long as the state fits on the clock.
    #[test]
    fn one_instant_never_admits_more_than_the_burst(
        q in any_quota(),
        now in any_time(),
        earlier in prop::collection::vec(any::<u64>(), 0..20),
    ) {
        let limiter = Limiter::new();
        for back in earlier {
            let at = now - back % (now.min(3 * nanos(q.period())) + 1);
            let _ = limiter.check("used", "send", &q, at);
        }
        let burst = q.burst();
        let fits = now.checked_add(nanos(q.emission_interval()) * u64::from(burst)).is_some();
        for key in ["used", "fresh"] {
            let admitted = (0..=burst)
                .filter(|_| limiter.check(key, "send", &q, now).allowed)
                .count() as u64;
            prop_assert!(admitted <= u64::from(burst), "{}: {} admitted, burst {}", key, admitted, burst);
            if key == "fresh" && fits {
                prop_assert_eq!(admitted, u64::from(burst));
            }
        }
    }

    /// No window [t, t + w] ever holds more than burst + w * limit / period
    /// admissions, for any valid quota at any time on the clock.
    #[test]
    fn admissions_never_outpace_the_quota(
        q in any_quota(),
        start in any_time(),
        steps in prop::collection::vec((0u8..4, any::<u64>()), 1..300),
    ) {
        let limiter = Limiter::new();
        let admitted: Vec<u64> = request_times(&q, start, &steps)
            .into_iter()
            .filter(|&t| limiter.check("key", "send", &q, t).allowed)
            .collect();
        let over = window_over_bound(&q, &admitted);
        prop_assert!(over.is_none(), "(admissions, window ns, bound): {:?}", over);
    }
}
