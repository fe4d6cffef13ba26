//! Usage credits: a budget of requests a key may make, with an optional
//! refill. Pure arithmetic, no I/O: the stores spend credits atomically with
//! the same rule ([`Credits::spend`]), in one conditional statement.
//!
//! Refill is lazy: no job runs. A key's credits remember when they were last
//! refilled; when a whole refill interval has passed, the next spend first
//! tops them up to the refill amount (remaining becomes `amount`, it does not
//! grow past it) and moves the refill time on by whole intervals, so a key
//! idle for a week refills once, not seven times.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How often credits refill. Months are 30 days, so refills stay exact
/// intervals that every store can compute the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Refill {
    /// What remaining credits are set to at each refill.
    pub amount: u64,
    /// The time between refills, in milliseconds (at least one).
    pub interval_ms: u64,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Refill {
    /// Back to `amount` every day.
    pub fn daily(amount: u64) -> Self {
        Self {
            amount,
            interval_ms: DAY_MS,
        }
    }

    /// Back to `amount` every 30 days.
    pub fn monthly(amount: u64) -> Self {
        Self {
            amount,
            interval_ms: 30 * DAY_MS,
        }
    }

    /// Back to `amount` every `interval` (at least a millisecond).
    pub fn every(amount: u64, interval: Duration) -> Self {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Self {
            amount,
            interval_ms: ms.max(1),
        }
    }

    /// The interval as a [`Duration`].
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// A key's credits: what remains and how it refills.
///
/// ```
/// use keygate::{Credits, Refill};
/// let t0 = time::OffsetDateTime::UNIX_EPOCH;
/// let mut credits = Credits::new(2).with_refill(Refill::daily(2), t0);
/// assert_eq!(credits.spend(1, t0), Ok(1));
/// assert_eq!(credits.spend(1, t0), Ok(0));
/// // Empty: the answer says when the next refill is.
/// assert_eq!(credits.spend(1, t0), Err(Some(t0 + time::Duration::days(1))));
/// assert_eq!(credits.spend(1, t0 + time::Duration::days(1)), Ok(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credits {
    /// Credits left now (as last written).
    pub remaining: u64,
    /// The refill, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
    /// When the credits were last refilled (or set).
    #[serde(with = "time::serde::rfc3339")]
    pub refilled_at: OffsetDateTime,
}

impl Credits {
    /// `remaining` credits that never refill.
    pub fn new(remaining: u64) -> Self {
        Self {
            remaining,
            refill: None,
            refilled_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// These credits, refilled by `refill` counting from `from`.
    #[must_use]
    pub fn with_refill(mut self, refill: Refill, from: OffsetDateTime) -> Self {
        self.refill = Some(refill);
        self.refilled_at = from;
        self
    }

    /// The credits as they are at `now`: refilled if a whole interval has
    /// passed since the last refill.
    #[must_use]
    pub fn at(mut self, now: OffsetDateTime) -> Self {
        if let Some(refill) = self.refill {
            let since = millis_between(self.refilled_at, now);
            if since >= refill.interval_ms {
                let periods = since / refill.interval_ms;
                self.remaining = refill.amount;
                self.refilled_at += ms_duration(periods.saturating_mul(refill.interval_ms));
            }
        }
        self
    }

    /// Spends `cost` at `now` (refilling first if due): the remaining credits
    /// after the spend, or, when too few are left, the time of the next
    /// refill that would allow it (`None` if none ever will).
    pub fn spend(&mut self, cost: u64, now: OffsetDateTime) -> Result<u64, Option<OffsetDateTime>> {
        let current = self.at(now);
        if current.remaining >= cost {
            *self = current;
            self.remaining -= cost;
            return Ok(self.remaining);
        }
        Err(current.next_refill_for(cost))
    }

    /// When the next refill lands, if it brings at least `cost` credits.
    pub fn next_refill_for(&self, cost: u64) -> Option<OffsetDateTime> {
        let refill = self.refill?;
        (refill.amount >= cost).then(|| self.refilled_at + ms_duration(refill.interval_ms))
    }
}

/// Whole milliseconds from `from` to `to`, zero if `to` is earlier.
fn millis_between(from: OffsetDateTime, to: OffsetDateTime) -> u64 {
    u64::try_from((to - from).whole_milliseconds()).unwrap_or(0)
}

fn ms_duration(ms: u64) -> time::Duration {
    time::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms)
    }

    #[test]
    fn refill_tops_up_once_per_elapsed_stretch_and_keeps_the_phase() {
        let mut c = Credits::new(0).with_refill(Refill::every(5, Duration::from_millis(100)), t(0));
        assert_eq!(c.spend(1, t(99)), Err(Some(t(100))));
        // 3.5 intervals later: one top-up to 5, phase kept at 300.
        assert_eq!(c.spend(2, t(350)), Ok(3));
        assert_eq!(c.refilled_at, t(300));
        assert_eq!(c.spend(4, t(399)), Err(Some(t(400))));
        assert_eq!(c.spend(4, t(400)), Ok(1));
    }

    #[test]
    fn a_cost_above_the_refill_amount_never_fits() {
        let mut c = Credits::new(1).with_refill(Refill::daily(3), t(0));
        assert_eq!(c.spend(4, t(0)), Err(None));
        let mut none = Credits::new(0);
        assert_eq!(none.spend(1, t(0)), Err(None));
        assert_eq!(none.spend(0, t(0)), Ok(0));
    }
}
