//! Rate-limit quotas: how many requests, over what period, with what burst.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// Why a [`Quota`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The limit was zero; a quota must admit at least one request per period.
    #[error("quota limit must be greater than zero")]
    ZeroLimit,
    /// The period was zero.
    #[error("quota period must be greater than zero")]
    ZeroPeriod,
    /// The period was longer than [`Quota::MAX_PERIOD`] (366 days).
    #[error("quota period must be at most 366 days")]
    PeriodTooLong,
    /// The burst was zero; a quota must admit at least one request at once.
    #[error("quota burst must be greater than zero")]
    ZeroBurst,
    /// The period is shorter than `limit` nanoseconds: more than one request
    /// per nanosecond (10^9 per second), faster than the limiter can count.
    #[error("quota emission interval (period / limit) is less than one nanosecond")]
    ZeroEmissionInterval,
    /// The burst tolerance (`emission interval * burst`) does not fit in a
    /// `u64` number of nanoseconds (about 584 years).
    #[error("quota burst tolerance (period / limit * burst) overflows u64 nanoseconds")]
    BurstToleranceOverflow,
}

/// A rate: `limit` requests per `period`, admitting up to `burst` at once.
///
/// Requests are spread evenly: one is admitted every *emission interval*
/// (`period / limit`, rounded up to whole nanoseconds), and an idle key may
/// spend up to `burst` requests at a single instant. `burst` defaults to
/// `limit`.
///
/// Rounding up means the steady rate is never above `limit` per `period`;
/// when `period` is not a multiple of `limit` nanoseconds it is slightly
/// below. The error is under one nanosecond per request, which only matters
/// for very high rates: 600 million per second, for instance, runs at 500
/// million (a 2 ns interval). The period is at most [`Quota::MAX_PERIOD`]
/// and the rate at most one request per nanosecond, so the interval is
/// always a whole number of nanoseconds between 1 and `MAX_PERIOD`.
///
/// Serialized as `{"limit": u32, "period_ms": u64, "burst": u32}`;
/// deserializing validates the values and treats a missing `burst` as `limit`.
///
/// [`per_minute`](Self::per_minute) and [`per_hour`](Self::per_hour) take a
/// [`NonZeroU32`] and cannot fail; [`per_second`](Self::per_second) refuses
/// more than 10^9 per second; [`new`](Self::new) takes any limit and period
/// and says what is wrong with them.
///
/// ```
/// use keygate::{Quota, QuotaError};
/// use std::num::NonZeroU32;
/// use std::time::Duration;
///
/// // Checked when the program is compiled.
/// const HUNDRED: NonZeroU32 = NonZeroU32::new(100).unwrap();
///
/// let quota = Quota::per_minute(HUNDRED).with_burst(10)?;
/// assert_eq!(quota.limit(), 100);
/// assert_eq!(quota.period(), Duration::from_secs(60));
/// assert_eq!(quota.burst(), 10);
/// assert_eq!(quota.emission_interval(), Duration::from_millis(600));
///
/// // Limits read at run time go through `new`.
/// let limit: u32 = "0".parse().unwrap();
/// assert_eq!(Quota::new(limit, Duration::from_secs(60)), Err(QuotaError::ZeroLimit));
///
/// let json = r#"{"limit": 5, "period_ms": 1000, "burst": 20}"#;
/// let parsed: Quota = serde_json::from_str(json).unwrap();
/// assert_eq!(parsed, Quota::new(5, Duration::from_secs(1))?.with_burst(20)?);
/// # Ok::<(), QuotaError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "QuotaRepr")]
pub struct Quota {
    limit: u32,
    burst: u32,
    period: Duration,
    /// `period / limit` in nanoseconds, rounded up; between 1 and
    /// `MAX_PERIOD`.
    interval_nanos: u64,
    /// `interval_nanos * burst`; how far the theoretical arrival time may run
    /// ahead of now.
    tolerance_nanos: u64,
}

impl Quota {
    /// The longest period a quota may have: 366 days, so a quota per year
    /// fits in leap years too. Longer periods are refused.
    pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 60 * 60);

    /// `limit` requests per `period`, with a burst of `limit`; for limits and
    /// periods that come from configuration or requests, checked here.
    ///
    /// ```
    /// use keygate::{Quota, QuotaError};
    /// use std::time::Duration;
    ///
    /// let q = Quota::new(3, Duration::from_millis(1500))?;
    /// assert_eq!(q.emission_interval(), Duration::from_millis(500));
    /// assert_eq!(Quota::new(1, Duration::ZERO), Err(QuotaError::ZeroPeriod));
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn new(limit: u32, period: Duration) -> Result<Self, QuotaError> {
        Self::build(limit, period, limit)
    }

    /// `limit` requests per second, with a burst of `limit`.
    ///
    /// Unlike [`per_minute`](Self::per_minute) and
    /// [`per_hour`](Self::per_hour) this can fail: a limit above 10^9 (more
    /// than one request per nanosecond, faster than the limiter counts) is
    /// refused with [`QuotaError::ZeroEmissionInterval`] rather than rounded
    /// to a different rate. Every limit up to 10^9 is accepted.
    ///
    /// ```
    /// use keygate::{Quota, QuotaError};
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    ///
    /// let q = Quota::per_second(NonZeroU32::new(4).unwrap())?;
    /// assert_eq!(q.emission_interval(), Duration::from_millis(250));
    /// assert_eq!(
    ///     Quota::per_second(NonZeroU32::MAX),
    ///     Err(QuotaError::ZeroEmissionInterval)
    /// );
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn per_second(limit: NonZeroU32) -> Result<Self, QuotaError> {
        Self::new(limit.get(), Duration::from_secs(1))
    }

    /// `limit` requests per minute, with a burst of `limit`.
    ///
    /// Every non-zero limit is a valid rate per minute, so this cannot fail.
    pub fn per_minute(limit: NonZeroU32) -> Self {
        Self::per_long_period(limit, Duration::from_secs(60))
    }

    /// `limit` requests per hour, with a burst of `limit`.
    ///
    /// Every non-zero limit is a valid rate per hour, so this cannot fail.
    pub fn per_hour(limit: NonZeroU32) -> Self {
        Self::per_long_period(limit, Duration::from_secs(3600))
    }

    /// `limit` per `period` with a burst of `limit`, for a `period` of at
    /// least `u32::MAX` nanoseconds (4.3 s) and at most
    /// [`MAX_PERIOD`](Self::MAX_PERIOD): every non-zero limit then gives an
    /// interval of at least one nanosecond, and the tolerance
    /// (`interval * limit`, less than `period + limit`) fits in a `u64`, so
    /// none of the checks in `build` can fail.
    fn per_long_period(limit: NonZeroU32, period: Duration) -> Self {
        debug_assert!(period.as_nanos() >= u128::from(u32::MAX) && period <= Self::MAX_PERIOD);
        let limit = limit.get();
        // At most MAX_PERIOD, about 3.2e16 ns.
        let period_nanos = period.as_nanos() as u64;
        let interval_nanos = period_nanos.div_ceil(u64::from(limit));
        Self {
            limit,
            burst: limit,
            period,
            interval_nanos,
            tolerance_nanos: interval_nanos * u64::from(limit),
        }
    }

    /// The same rate, admitting up to `burst` requests at once instead of `limit`.
    ///
    /// A burst larger than the limit lets an idle key spend more than one
    /// period's worth at once; a smaller one smooths traffic out.
    pub fn with_burst(self, burst: u32) -> Result<Self, QuotaError> {
        Self::build(self.limit, self.period, burst)
    }

    fn build(limit: u32, period: Duration, burst: u32) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        if period > Self::MAX_PERIOD {
            return Err(QuotaError::PeriodTooLong);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        // MAX_PERIOD is about 3.2e16 ns, well within u64.
        let period_nanos = period.as_nanos() as u64;
        if period_nanos < u64::from(limit) {
            return Err(QuotaError::ZeroEmissionInterval);
        }
        // Rounded up: a shorter interval than period / limit would admit
        // more than `limit` per period (up to twice as many near 10^9/s).
        let interval_nanos = period_nanos.div_ceil(u64::from(limit));
        let tolerance_nanos = interval_nanos
            .checked_mul(u64::from(burst))
            .ok_or(QuotaError::BurstToleranceOverflow)?;
        Ok(Self {
            limit,
            burst,
            period,
            interval_nanos,
            tolerance_nanos,
        })
    }

    /// Requests admitted per [`period`](Self::period) in the long run.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The period over which [`limit`](Self::limit) requests are admitted.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Requests an idle key may make at one instant.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time between two admitted requests at the steady rate
    /// (`period / limit`, rounded up to whole nanoseconds).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// The emission interval in nanoseconds; never zero.
    pub(crate) fn interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    /// `emission interval * burst` in nanoseconds: how long an empty bucket
    /// takes to fill up again.
    pub(crate) fn tolerance_nanos(&self) -> u64 {
        self.tolerance_nanos
    }
}

/// The serialized shape of a [`Quota`].
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct QuotaRepr {
    // The bounds keep every combination valid: at most one request per
    // microsecond, at most 366 days, and a burst tolerance that fits in u64
    // nanoseconds.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    limit: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31_622_400_000_u64))]
    period_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 500))]
    burst: Option<u32>,
}

/// A quota's JSON shape: `{"limit", "period_ms", "burst"}`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Quota {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        QuotaRepr::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Quota {
    fn name() -> std::borrow::Cow<'static, str> {
        "Quota".into()
    }
}

impl TryFrom<QuotaRepr> for Quota {
    type Error = QuotaError;

    fn try_from(repr: QuotaRepr) -> Result<Self, Self::Error> {
        let period = Duration::from_millis(repr.period_ms);
        Quota::build(repr.limit, period, repr.burst.unwrap_or(repr.limit))
    }
}

impl Serialize for Quota {
    /// Fails if the period is not a whole number of milliseconds, which
    /// `period_ms` could not represent.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.period.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(serde::ser::Error::custom(
                "quota period is not a whole number of milliseconds",
            ));
        }
        let period_ms = u64::try_from(self.period.as_millis())
            .map_err(|_| serde::ser::Error::custom("quota period in milliseconds overflows u64"))?;
        QuotaRepr {
            limit: self.limit,
            period_ms,
            burst: Some(self.burst),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::nz;

    #[test]
    fn constructors() {
        let q = Quota::per_second(nz(10)).unwrap();
        assert_eq!((q.limit(), q.burst()), (10, 10));
        assert_eq!(q.period(), Duration::from_secs(1));
        assert_eq!(q.interval_nanos(), 100_000_000);
        assert_eq!(q.tolerance_nanos(), 1_000_000_000);

        let q = Quota::per_minute(nz(100));
        assert_eq!(q.emission_interval(), Duration::from_millis(600));

        let q = Quota::per_hour(nz(3600)).with_burst(5).unwrap();
        assert_eq!(q.emission_interval(), Duration::from_secs(1));
        assert_eq!(q.burst(), 5);
        assert_eq!(q.tolerance_nanos(), 5_000_000_000);
    }

    #[test]
    fn infallible_constructors_match_new() {
        for limit in [1, 7, 100, 3600, 1_000_000_000, u32::MAX - 1, u32::MAX] {
            let n = nz(limit);
            assert_eq!(
                Ok(Quota::per_minute(n)),
                Quota::new(limit, Duration::from_secs(60)),
                "{limit}/min"
            );
            assert_eq!(
                Ok(Quota::per_hour(n)),
                Quota::new(limit, Duration::from_secs(3600)),
                "{limit}/h"
            );
        }
        // The fastest rates per minute and per hour: 14 ns and 839 ns
        // between requests, rounded up, with a tolerance that fits.
        let q = Quota::per_minute(NonZeroU32::MAX);
        assert_eq!(q.interval_nanos(), 14);
        assert_eq!(q.tolerance_nanos(), 14 * u64::from(u32::MAX));
        assert!(u128::from(q.interval_nanos()) * u128::from(u32::MAX) >= q.period().as_nanos());
        assert_eq!(Quota::per_hour(NonZeroU32::MAX).interval_nanos(), 839);
    }

    #[test]
    fn validation() {
        assert_eq!(
            Quota::new(0, Duration::from_secs(1)),
            Err(QuotaError::ZeroLimit)
        );
        assert_eq!(Quota::new(1, Duration::ZERO), Err(QuotaError::ZeroPeriod));
        assert_eq!(
            Quota::per_second(nz(1)).unwrap().with_burst(0),
            Err(QuotaError::ZeroBurst)
        );
        // 1 ns / 2 rounds down to zero.
        assert_eq!(
            Quota::new(2, Duration::from_nanos(1)),
            Err(QuotaError::ZeroEmissionInterval)
        );
        // u32::MAX per second is under a nanosecond apart.
        assert_eq!(
            Quota::per_second(NonZeroU32::MAX),
            Err(QuotaError::ZeroEmissionInterval)
        );
        assert!(Quota::per_second(nz(1_000_000_000)).is_ok());
        assert_eq!(
            Quota::per_second(nz(1_000_000_001)),
            Err(QuotaError::ZeroEmissionInterval)
        );
        assert_eq!(Quota::new(1, Duration::MAX), Err(QuotaError::PeriodTooLong));
        assert_eq!(
            Quota::new(1, Duration::from_nanos(u64::MAX)),
            Err(QuotaError::PeriodTooLong)
        );
        assert_eq!(
            Quota::new(u32::MAX, Quota::MAX_PERIOD + Duration::from_nanos(1)),
            Err(QuotaError::PeriodTooLong)
        );
        let longest = Quota::new(1, Quota::MAX_PERIOD).unwrap();
        assert_eq!(longest.emission_interval(), Quota::MAX_PERIOD);
        // 583 periods of 366 days fit in u64 nanoseconds, 584 do not.
        assert_eq!(longest.with_burst(583).map(|q| q.burst()), Ok(583));
        assert_eq!(
            longest.with_burst(584),
            Err(QuotaError::BurstToleranceOverflow)
        );
        assert_eq!(
            Quota::per_second(nz(1_000_000_000))
                .unwrap()
                .with_burst(u32::MAX)
                .map(|q| q.burst()),
            Ok(u32::MAX)
        );
    }

    #[test]
    fn intervals_round_up_so_the_rate_never_exceeds_the_limit() {
        // 60 s / 7 = 8_571_428_571.4 ns.
        let q = Quota::per_minute(nz(7));
        assert_eq!(q.interval_nanos(), 8_571_428_572);
        assert!(u128::from(q.interval_nanos()) * 7 >= q.period().as_nanos());
        // Just above 5e8/s the exact interval is just under 2 ns: 2 ns, not 1.
        let q = Quota::per_second(nz(500_000_001)).unwrap();
        assert_eq!(q.interval_nanos(), 2);
        let q = Quota::per_second(nz(600_000_000)).unwrap();
        assert_eq!(q.interval_nanos(), 2);
        assert_eq!(
            Quota::per_second(nz(500_000_000)).unwrap().interval_nanos(),
            2
        );
        assert_eq!(
            Quota::per_second(nz(1_000_000_000))
                .unwrap()
                .interval_nanos(),
            1
        );
        assert_eq!(
            Quota::new(u32::MAX, Duration::from_nanos(u64::from(u32::MAX)))
                .unwrap()
                .interval_nanos(),
            1
        );
    }

    #[test]
    fn error_messages_are_lowercase_without_period() {
        for e in [
            QuotaError::ZeroLimit,
            QuotaError::ZeroPeriod,
            QuotaError::PeriodTooLong,
            QuotaError::ZeroBurst,
            QuotaError::ZeroEmissionInterval,
            QuotaError::BurstToleranceOverflow,
        ] {
            let msg = e.to_string();
            assert!(msg.starts_with(char::is_lowercase), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let q = Quota::per_minute(nz(100)).with_burst(7).unwrap();
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(json, r#"{"limit":100,"period_ms":60000,"burst":7}"#);
        let back: Quota = serde_json::from_str(&json).unwrap();
        assert_eq!(back, q);
    }

    #[test]
    fn serde_burst_defaults_to_limit() {
        let q: Quota = serde_json::from_str(r#"{"limit":5,"period_ms":1000}"#).unwrap();
        assert_eq!(q, Quota::per_second(nz(5)).unwrap());
    }

    #[test]
    fn serde_validates() {
        for bad in [
            r#"{"limit":0,"period_ms":1000,"burst":1}"#,
            r#"{"limit":1,"period_ms":0,"burst":1}"#,
            r#"{"limit":1,"period_ms":1000,"burst":0}"#,
            r#"{"limit":1,"period_ms":1000,"burst":1,"extra":1}"#,
            r#"{"limit":1,"period_ms":18446744073709551615,"burst":4294967295}"#,
            r#"{"limit":1,"period_ms":18446744073709}"#,
            r#"{"limit":1,"period_ms":31622400001}"#,
            r#"{"limit":1000000001,"period_ms":1000}"#,
        ] {
            assert!(serde_json::from_str::<Quota>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Quota>(r#"{"limit":0,"period_ms":1000}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quota limit must be greater than zero"),
            "{err}"
        );
        let year: Quota = serde_json::from_str(r#"{"limit":1,"period_ms":31622400000}"#).unwrap();
        assert_eq!(year.period(), Quota::MAX_PERIOD);
    }

    #[test]
    fn serialize_rejects_sub_millisecond_periods() {
        let q = Quota::new(1, Duration::from_micros(1500)).unwrap();
        assert!(serde_json::to_string(&q).is_err());
    }
}
