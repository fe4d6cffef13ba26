//! Time as keygate sees it.
//!
//! Everything that reads the clock (expiry checks, last-used stamps, rate-limit
//! buckets) takes a [`Clock`], so production uses [`SystemClock`] and tests use a
//! [`ManualClock`] they advance by hand and never sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// A source of wall-clock and monotonic time.
///
/// Wall-clock time stamps records (created, expires, last used); monotonic time
/// drives rate-limit buckets, which must never run backwards.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current wall-clock time in UTC.
    fn now(&self) -> OffsetDateTime;
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn monotonic_nanos(&self) -> u64;
}

/// The production clock: the system's wall clock and a monotonic [`Instant`].
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is the moment of this call.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn monotonic_nanos(&self) -> u64 {
        // Saturates after ~584 years of uptime.
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that only moves when told to; for tests.
///
/// Clones share the same time, so a test can keep one handle and give another to
/// the code under test.
///
/// ```
/// use keygate::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now() - start, time::Duration::seconds(60));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: OffsetDateTime,
    elapsed_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock starting at 2025-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::starting_at(
            OffsetDateTime::from_unix_timestamp(1_735_689_600).expect("valid fixed timestamp"),
        )
    }

    /// A manual clock whose wall time starts at `start`.
    pub fn starting_at(start: OffsetDateTime) -> Self {
        Self {
            start,
            elapsed_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves both the wall clock and the monotonic clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let elapsed = self.elapsed_nanos.load(Ordering::SeqCst);
        self.start + Duration::from_nanos(elapsed)
    }

    fn monotonic_nanos(&self) -> u64 {
        self.elapsed_nanos.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        a.advance(Duration::from_millis(1500));
        assert_eq!(b.monotonic_nanos(), 1_500_000_000);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let a = c.monotonic_nanos();
        let b = c.monotonic_nanos();
        assert!(b >= a);
    }
}
