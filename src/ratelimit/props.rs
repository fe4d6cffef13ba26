//! Property tests for the GCRA bucket, against its time arguments directly
//! (anywhere on the monotonic clock, with idleness observed). The public
//! limiter's properties are in `tests/ratelimit_props.rs`.

use std::time::Duration;

use proptest::prelude::*;

use super::gcra::Bucket;
use super::{nz, Decision, Quota, QuotaError};

#[path = "../../tests/support/quota_model.rs"]
mod quota_model;
use quota_model::*;

/// A quota, a start time, and gaps between consecutive requests, scaled to the
/// quota so that bursts, steady traffic and idle periods all occur.
fn scenario() -> impl Strategy<Value = (Quota, u64, Vec<u64>)> {
    quota().prop_flat_map(|q| {
        let interval = nanos(q.emission_interval());
        let tolerance = interval * u64::from(q.burst());
        let gap = prop_oneof![
            3 => Just(0u64),
            3 => 0..=interval,
            2 => 0..=tolerance + interval,
            1 => 0..=3 * tolerance,
        ];
        let start = prop_oneof![Just(0u64), 0..=2 * tolerance];
        (Just(q), start, prop::collection::vec(gap, 1..200))
    })
}

/// Request times: `start`, then each gap added in turn.
fn times(start: u64, gaps: &[u64]) -> Vec<u64> {
    gaps.iter()
        .scan(start, |t, gap| {
            *t += gap;
            Some(*t)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No window [t, t + w] ever holds more than burst + floor(w / interval)
    /// admissions.
    #[test]
    fn admissions_in_any_window_are_bounded((q, start, gaps) in scenario()) {
        let interval = nanos(q.emission_interval());
        let bucket = Bucket::new();
        let admitted: Vec<u64> = times(start, &gaps)
            .into_iter()
            .filter(|&t| bucket.check(&q, t).allowed)
            .collect();
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

    /// A full bucket never denies: not when idle, and not once burst * interval
    /// has passed since the last admission.
    #[test]
    fn full_bucket_never_denies((q, start, gaps) in scenario()) {
        let tolerance = nanos(q.emission_interval()) * u64::from(q.burst());
        let bucket = Bucket::new();
        let mut last_admitted: Option<u64> = None;
        for t in times(start, &gaps) {
            let idle = bucket.is_idle(t);
            let rested = last_admitted.is_none_or(|a| t - a >= tolerance);
            prop_assert!(!rested || idle, "rested bucket is not idle at {t}");
            let d = bucket.check(&q, t);
            if idle {
                prop_assert!(d.allowed, "idle bucket denied at {t}");
                prop_assert_eq!(d.remaining, q.burst() - 1);
                prop_assert_eq!(d.reset, q.emission_interval());
            }
            if d.allowed {
                last_admitted = Some(t);
            }
        }
    }

    /// Every decision matches the leaky-bucket reference model and is
    /// self-consistent; retry_after is exact: earlier is denied, at it admitted.
    #[test]
    fn decisions_match_reference_model((q, start, gaps) in scenario()) {
        let bucket = Bucket::new();
        let mut model = LeakyBucket::new(&q);
        let mut admissible_at: Option<u64> = None;
        for t in times(start, &gaps) {
            let d = bucket.check(&q, t);
            check_invariants(&q, &d);
            let (allowed, remaining) = model.check(t);
            prop_assert_eq!(d.allowed, allowed, "at {}", t);
            prop_assert_eq!(u64::from(d.remaining), remaining, "at {}", t);
            if let Some(at) = admissible_at {
                prop_assert_eq!(d.allowed, t >= at, "retry_after said {}, now {}", at, t);
            }
            admissible_at = d.retry_after.map(|retry| t + nanos(retry));
        }
    }

    /// At one instant a fresh bucket admits exactly burst requests, remaining
    /// counting down from burst - 1 to 0; the next is denied, and a request
    /// exactly retry_after later is admitted.
    #[test]
    fn burst_then_retry_after(q in quota(), now in 0u64..1_000_000_000_000) {
        let bucket = Bucket::new();
        for expected in (0..q.burst()).rev() {
            let d = bucket.check(&q, now);
            prop_assert!(d.allowed);
            prop_assert_eq!(d.remaining, expected);
        }
        let denied = bucket.check(&q, now);
        prop_assert!(!denied.allowed);
        let retry = denied.retry_after.unwrap();
        prop_assert_eq!(retry, q.emission_interval());
        prop_assert_eq!(denied.reset, q.emission_interval() * q.burst());
        prop_assert!(!bucket.check(&q, now + nanos(retry) - 1).allowed);
        let d = bucket.check(&q, now + nanos(retry));
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
fn rates_above_five_hundred_million_per_second_do_not_double() {
    // The exact interval is 1.67 ns; rounded down to 1 ns it admitted 10^9/s.
    let q = Quota::per_second(nz(600_000_000))
        .unwrap()
        .with_burst(1)
        .unwrap();
    let bucket = Bucket::new();
    let admitted = (0..1_000u64)
        .filter(|&t| bucket.check(&q, t).allowed)
        .count();
    assert!(admitted <= 600, "{admitted} admissions in 1 µs");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the bucket saw before, one instant never admits more than
    /// the burst (the limit unless set), and an idle bucket admits exactly
    /// that many as long as the state fits on the clock.
    #[test]
    fn one_instant_never_admits_more_than_the_burst(
        q in any_quota(),
        now in any_time(),
        earlier in prop::collection::vec(any::<u64>(), 0..20),
    ) {
        let bucket = Bucket::new();
        for back in earlier {
            let _ = bucket.check(&q, now - back % (now.min(3 * nanos(q.period())) + 1));
        }
        let idle = bucket.is_idle(now);
        let burst = q.burst();
        let admitted = (0..=burst).filter(|_| bucket.check(&q, now).allowed).count() as u64;
        prop_assert!(admitted <= u64::from(burst), "{} admitted, burst {}", admitted, burst);
        let fits = now.checked_add(nanos(q.emission_interval()) * u64::from(burst)).is_some();
        if idle && fits {
            prop_assert_eq!(admitted, u64::from(burst));
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
        let bucket = Bucket::new();
        let admitted: Vec<u64> = request_times(&q, start, &steps)
            .into_iter()
            .filter(|&t| bucket.check(&q, t).allowed)
            .collect();
        let over = window_over_bound(&q, &admitted);
        prop_assert!(over.is_none(), "(admissions, window ns, bound): {:?}", over);
    }
}
