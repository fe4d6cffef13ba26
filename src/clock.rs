//! Time as keygate sees it.
//!
//! Everything that reads the clock (expiry checks, last-used stamps, rate-limit
//! buckets) takes a [`Clock`], so production uses [`SystemClock`] and tests use a
//! [`ManualClock`] they advance by hand and never sleep.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// The current wall-clock time in nanoseconds since the Unix epoch,
    /// saturated to the `i64` range (years 1677 to 2262): what verify reads
    /// for expiry and last-used stamps. The default converts
    /// [`now`](Self::now); a clock may answer from a cheaper source as long
    /// as it stays within a documented distance of `now`.
    fn unix_nanos(&self) -> i64 {
        saturate(self.now().unix_timestamp_nanos())
    }
}

fn saturate(nanos: i128) -> i64 {
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// How often [`SystemClock::unix_nanos`] re-reads the system wall clock.
const WALL_RESYNC_NANOS: u64 = 1_000_000_000;

/// The production clock: the system's wall clock, and a monotonic clock from
/// the `quanta` crate (the CPU's time-stamp counter where it is invariant,
/// scaled to nanoseconds; the OS monotonic clock elsewhere), which reads in a
/// few nanoseconds without a system call. `governor` uses the same source.
///
/// [`unix_nanos`](Clock::unix_nanos), read on every verify, is the monotonic
/// time plus an offset taken from the system wall clock at most once a
/// second: it follows the wall clock except for steps and slews applied to
/// it within the last second (NTP slews by at most 0.5 ms per second), and
/// it never costs a system call. [`now`](Clock::now) reads the system clock
/// itself. Clones share the monotonic origin and the offset.
#[derive(Debug, Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin: u64,
    wall: Arc<WallAnchor>,
}

/// The system wall clock minus the monotonic clock, as last read.
#[derive(Debug)]
struct WallAnchor {
    /// Wall nanoseconds since the Unix epoch minus monotonic nanoseconds.
    offset: AtomicI64,
    /// The monotonic time of the last read.
    read_at: AtomicU64,
}

impl SystemClock {
    /// A clock whose monotonic origin is the moment of this call. The first
    /// clock of a process calibrates the time-stamp counter against the OS
    /// clock (a few milliseconds, 200 ms at most).
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        let this = Self {
            clock,
            origin,
            wall: Arc::new(WallAnchor {
                offset: AtomicI64::new(0),
                read_at: AtomicU64::new(0),
            }),
        };
        this.resync(this.monotonic_nanos());
        this
    }

    /// Reads the system wall clock and records its offset from `mono`.
    #[cold]
    fn resync(&self, mono: u64) -> i64 {
        let wall = saturate(OffsetDateTime::now_utc().unix_timestamp_nanos());
        let offset = wall.saturating_sub(i64::try_from(mono).unwrap_or(i64::MAX));
        self.wall.offset.store(offset, Ordering::Relaxed);
        self.wall.read_at.store(mono, Ordering::Relaxed);
        wall
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

    #[inline]
    fn monotonic_nanos(&self) -> u64 {
        // Zero for a counter read behind the origin (another core's counter
        // a hair behind); after that it never decreases.
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }

    #[inline]
    fn unix_nanos(&self) -> i64 {
        let mono = self.monotonic_nanos();
        let read_at = self.wall.read_at.load(Ordering::Relaxed);
        // Also true for a `mono` behind the last read (another thread's
        // later read raced ahead): it reads the system clock itself.
        if mono.wrapping_sub(read_at) >= WALL_RESYNC_NANOS {
            return self.resync(mono);
        }
        let mono = i64::try_from(mono).unwrap_or(i64::MAX);
        mono.saturating_add(self.wall.offset.load(Ordering::Relaxed))
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

    fn unix_nanos(&self) -> i64 {
        let elapsed = i128::from(self.elapsed_nanos.load(Ordering::SeqCst));
        saturate(self.start.unix_timestamp_nanos() + elapsed)
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
        std::thread::sleep(Duration::from_millis(20));
        let c2 = c.clone();
        let elapsed = c2.monotonic_nanos() - b;
        assert!(elapsed >= 15_000_000, "{elapsed} ns");
    }

    #[test]
    fn system_unix_nanos_follows_the_system_clock() {
        let c = SystemClock::new();
        for _ in 0..3 {
            let before = saturate(OffsetDateTime::now_utc().unix_timestamp_nanos());
            let fast = c.unix_nanos();
            let after = saturate(OffsetDateTime::now_utc().unix_timestamp_nanos());
            // Within the calibration error of the counter (well under 1 ms
            // over a second) of the system clock read around it.
            assert!(fast >= before - 1_000_000, "{fast} < {before}");
            assert!(fast <= after + 1_000_000, "{fast} > {after}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn manual_unix_nanos_is_now() {
        let c = ManualClock::new();
        c.advance(Duration::from_nanos(1_500));
        assert_eq!(i128::from(c.unix_nanos()), c.now().unix_timestamp_nanos());
        let far =
            ManualClock::starting_at(OffsetDateTime::from_unix_timestamp(253_370_764_800).unwrap());
        assert_eq!(far.unix_nanos(), i64::MAX);
    }
}
