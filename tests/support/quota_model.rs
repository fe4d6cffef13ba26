//! Quota strategies and a reference model of the GCRA, shared by the
//! bucket-level property tests inside the crate (`src/ratelimit/props.rs`)
//! and the limiter-level ones in `tests/ratelimit_props.rs`. The including
//! module brings `Decision` and `Quota` into scope.
#![allow(dead_code)]

use std::time::Duration;

use proptest::prelude::*;

use super::{Decision, Quota};

/// Small quotas: limit 1..=20 per 1 ms..=10 s, burst 1..=50.
pub fn quota() -> impl Strategy<Value = Quota> {
    (1u32..=20, 1u64..=10_000, 1u32..=50).prop_map(|(limit, period_ms, burst)| {
        Quota::new(limit, Duration::from_millis(period_ms))
            .and_then(|q| q.with_burst(burst))
            .expect("valid quota")
    })
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("fits")
}

/// The continuous-state leaky bucket form of GCRA, as a reference model.
#[derive(Clone)]
pub struct LeakyBucket {
    interval: u64,
    tolerance: u64,
    /// Bucket content in nanoseconds of "debt".
    level: u64,
    last: u64,
}

impl LeakyBucket {
    pub fn new(q: &Quota) -> Self {
        let interval = nanos(q.emission_interval());
        Self {
            interval,
            tolerance: interval * u64::from(q.burst()),
            level: 0,
            last: 0,
        }
    }

    /// Whether a request at `t` is admitted, and the remaining count if so.
    pub fn check(&mut self, t: u64) -> (bool, u64) {
        let drained = self.level.saturating_sub(t - self.last);
        if drained + self.interval > self.tolerance {
            (false, 0)
        } else {
            self.level = drained + self.interval;
            self.last = t;
            (true, (self.tolerance - self.level) / self.interval)
        }
    }
}

pub fn check_invariants(q: &Quota, d: &Decision) {
    let interval = q.emission_interval();
    assert_eq!(d.limit, q.burst());
    assert!(d.remaining < q.burst());
    assert!(d.reset <= interval * q.burst());
    if d.allowed {
        assert_eq!(d.retry_after, None);
        assert!(d.reset >= interval);
    } else {
        assert_eq!(d.remaining, 0);
        let retry = d.retry_after.expect("denial carries retry_after");
        assert!(retry > Duration::ZERO && retry <= interval, "{retry:?}");
        assert!(d.retry_after_secs().unwrap() >= 1);
    }
}

/// The longest period a quota may have, in nanoseconds.
pub fn max_period_nanos() -> u64 {
    nanos(Quota::MAX_PERIOD)
}

/// Any valid quota: rates from one per 366 days to 10^9 per second, with a
/// burst small enough to spend one request at a time (or the default, the
/// limit, when that is small enough).
pub fn any_quota() -> impl Strategy<Value = Quota> {
    let limit = prop_oneof![1u32..=100, 1u32..=u32::MAX];
    (limit, any::<u64>(), 0u32..=2_000, 0u8..3).prop_filter_map(
        "tolerance overflows",
        |(limit, raw_period, burst, shape)| {
            let min = u64::from(limit);
            let max = max_period_nanos();
            let period = match shape {
                // Near the fastest rate for this limit, where rounding the
                // interval matters most.
                0 => min + raw_period % (3 * min),
                // Whole seconds.
                1 => (1 + raw_period % (max / 1_000_000_000)) * 1_000_000_000,
                _ => min + raw_period % (max - min + 1),
            };
            let quota = Quota::new(limit, Duration::from_nanos(period)).ok()?;
            match burst {
                0 if limit <= 2_000 => Some(quota),
                0 => quota.with_burst(limit % 2_000 + 1).ok(),
                b => quota.with_burst(b).ok(),
            }
        },
    )
}

/// A time anywhere on the clock, often near either end.
pub fn any_time() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=1_000_000_000_000,
        any::<u64>(),
        (u64::MAX - 2 * max_period_nanos())..=u64::MAX,
    ]
}

/// `burst` plus the requests the quota's rate earns in `window` nanoseconds
/// (`window * limit / period`, rounded down).
pub fn rate_bound(q: &Quota, window: u64) -> u128 {
    u128::from(q.burst()) + u128::from(window) * u128::from(q.limit()) / q.period().as_nanos()
}

/// Request times from `start` by `steps` of (kind, raw): bursts at one
/// instant, gaps within an interval, nanosecond gaps, and idle stretches up
/// to twice the burst's worth; stops before the clock would overflow.
pub fn request_times(q: &Quota, start: u64, steps: &[(u8, u64)]) -> Vec<u64> {
    let interval = nanos(q.emission_interval());
    let mut times = Vec::with_capacity(steps.len());
    let mut t = start;
    for &(kind, raw) in steps {
        let gap = match kind {
            0 => 0,
            1 => raw % (interval + 1),
            2 => raw % 3,
            _ => {
                raw % interval
                    .saturating_mul(2 * u64::from(q.burst()))
                    .saturating_add(1)
            }
        };
        let Some(next) = t.checked_add(gap) else {
            break;
        };
        t = next;
        times.push(t);
    }
    times
}

/// The first window `[admitted[i], admitted[j]]` holding more admissions
/// than [`rate_bound`] allows, as (count, window, bound).
pub fn window_over_bound(q: &Quota, admitted: &[u64]) -> Option<(u128, u64, u128)> {
    for i in 0..admitted.len() {
        for j in i..admitted.len() {
            let window = admitted[j] - admitted[i];
            let count = (j - i + 1) as u128;
            let bound = rate_bound(q, window);
            if count > bound {
                return Some((count, window, bound));
            }
        }
    }
    None
}
