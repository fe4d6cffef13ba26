//! Leased tokens: a Redis-shared quota spent at in-process speed.
//!
//! [`LeasedRateLimiter`] wraps a [`RedisRateLimiter`]. Instead of one round
//! trip per decision, it takes a *lease* of up to `L` tokens per key and
//! class from the shared Redis bucket in one round trip, then admits
//! requests from that lease in this process, with no round trip, until it
//! runs low. The details, and the bound on the overshoot, are on
//! [`LeasedRateLimiter`].

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use parking_lot::{RwLock, RwLockWriteGuard};
use redis::Script;
use time::OffsetDateTime;
use tokio::runtime::Handle;

use super::{Decision, LimiterUnavailable, Quota, RateLimiter, RedisRateLimiter};
use crate::store::{AccountId, SharedSpend};
use crate::{Clock, Credits, SystemClock};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const DEFAULT_LEASE: u32 = 16;
const DEFAULT_TTL: Duration = Duration::from_secs(1);
/// The most operation classes kept, as for the local limiter.
const MAX_CLASSES: usize = 64;
const SHARDS: usize = 32;
/// How many leases are created between two sweeps of lapsed ones.
const SWEEP_EVERY: u64 = 1 << 14;

/// Takes up to `want` tokens at once from the bucket the GCRA script of
/// `RedisRateLimiter` keeps, as if `want` requests arrived at one instant.
///
/// Times are (seconds, nanoseconds) pairs, as in the GCRA script, so that
/// nothing beyond 2^53 is ever formed. The backlog is `max(TAT, now) - now`;
/// `k` tokens fit when `backlog + k * interval <= tolerance`, the same test
/// the single-request script makes for `k = 1`.
///
/// KEYS[1]: the bucket. ARGV: interval and tolerance as pairs, then want.
/// Returns {k, backlog, ahead} with the times as pairs, where ahead is
/// `backlog + max(k, 1) * interval`: the new TAT - now
/// when k > 0, and what the next single request would need when k = 0.
const LEASE_LUA: &str = r#"
local B = 1000000000
local iv_s, iv_n = tonumber(ARGV[1]), tonumber(ARGV[2])
local tol_s, tol_n = tonumber(ARGV[3]), tonumber(ARGV[4])
local want = tonumber(ARGV[5])
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_s, now_n = tonumber(t[1]), tonumber(t[2]) * 1000
local function norm(s, n)
  local c = math.floor(n / B)
  return s + c, n - c * B
end
local function add(a_s, a_n, b_s, b_n) return norm(a_s + b_s, a_n + b_n) end
local function sub(a_s, a_n, b_s, b_n) return norm(a_s - b_s, a_n - b_n) end
local function le(a_s, a_n, b_s, b_n) return a_s < b_s or (a_s == b_s and a_n <= b_n) end
local function times(k) return norm(iv_s * k, iv_n * k) end
local bl_s, bl_n = 0, 0
local tat = redis.call('GET', KEYS[1])
if tat then
  local s, n = string.match(tat, '^(%d+) (%d+)$')
  s, n = tonumber(s), tonumber(n)
  -- Anything unreadable counts as a full bucket and is overwritten.
  if s and n and n < B and not le(s, n, now_s, now_n) then
    bl_s, bl_n = sub(s, n, now_s, now_n)
  end
end
local function fits(k)
  local s, n = add(bl_s, bl_n, times(k))
  return le(s, n, tol_s, tol_n)
end
-- An estimate in doubles, made exact by the steps after it.
local k = math.floor(((tol_s - bl_s) * B + (tol_n - bl_n)) / (iv_s * B + iv_n))
if k > want then k = want end
if k < 0 then k = 0 end
while k > 0 and not fits(k) do k = k - 1 end
while k < want and fits(k + 1) do k = k + 1 end
if k > 0 then
  -- Expire when the bucket is full again, as the GCRA script does.
  local st_s, st_n = add(bl_s, bl_n, times(k))
  local new_s, new_n = add(now_s, now_n, st_s, st_n)
  local px = st_s * 1000 + math.ceil(st_n / 1000000)
  redis.call('SET', KEYS[1], string.format('%d %d', new_s, new_n), 'PX', string.format('%d', px))
end
local ah_s, ah_n = add(bl_s, bl_n, times(math.max(k, 1)))
return {k, bl_s, bl_n, ah_s, ah_n}
"#;

static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE_LUA));

/// A [`RateLimiter`] that spends a [`RedisRateLimiter`]'s shared quota in
/// leases: up to `L` tokens per key and class taken from Redis in one round
/// trip, then spent in this process without one.
///
/// # How it works
///
/// The first check of a key in a class takes a lease: one `EVALSHA` of a
/// script that takes `min(L, available)` tokens at once from the same GCRA
/// bucket the wrapped limiter keeps (`<prefix>{<key id>}:<class>`), as if
/// that many requests had arrived at one instant. The request is admitted
/// from the lease, and the next ones too, each by an atomic decrement in
/// this process. When half the lease is spent, a background task tops it up
/// to `L` tokens (again one round trip, while requests go on being admitted
/// from what is left), so under steady load almost every decision is local:
/// one round trip per `L / 2` decisions. A check that finds the lease empty
/// waits for the refill in flight, or makes one; one refill at a time per
/// key and class. When Redis has no token left, the check is denied with the
/// bucket's `Retry-After`, and further checks of that key and class are
/// denied in this process until then (at most one lease lifetime), without
/// asking Redis again: no token can appear in the bucket before that.
///
/// Leased and unleased instances share one budget: a plain
/// [`RedisRateLimiter`] with the same prefix takes tokens from the same
/// buckets, one at a time.
///
/// # The bound
///
/// Every request admitted anywhere spends a token that was taken from the
/// Redis bucket, whose GCRA admits at most `burst + t / interval` tokens in
/// any window of length `t` (`burst` and `interval` being the quota's). A
/// token is taken before it is spent, so the requests admitted in a window
/// are at most the tokens taken in that window plus those already held by
/// the instances when it began. An instance holds at most `L` unspent
/// tokens per key and class (a refill only tops it up to `L`), so with `n`
/// leased instances:
///
/// > admitted in any window ≤ `burst + t / interval + n × L`
///
/// that is, the overshoot beyond the quota is at most `n × L` over a window
/// (instances without leases count with `L = 0`). The window's length is
/// measured on the Redis server's clock, as every decision in Redis is.
/// The other way, tokens held by an instance that gets no more requests are
/// lost to the others until its lease lapses and they refill, so a fleet
/// with uneven demand may admit up to `n × L` fewer than the quota; with
/// demand spread evenly every leased token is spent.
///
/// # Lapsing
///
/// A lease lapses `ttl` after it was last taken or topped up (default 1 s,
/// and never longer than the quota's period): its unspent tokens are no
/// longer admitted, so an instance that went idle does not keep spending a
/// stale budget. Lapsed tokens are dropped, not returned: they were taken
/// from the bucket, which refills them at its normal rate (within `L`
/// emission intervals of the lease). Returning them exactly would need to
/// know how much of the bucket has refilled since, and which of its
/// tokens others took meanwhile; dropping them can only admit less. Lapsed
/// leases are dropped from memory as new ones are made.
///
/// # When Redis cannot be reached
///
/// Tokens already leased in this process are still spent while they last
/// (they were taken from the shared bucket, so the bound holds). A check
/// that needs a new lease follows the wrapped limiter's [`RedisFailure`](super::RedisFailure)
/// policy: [`LimiterUnavailable`] with `FailClosed`, or a decision on the
/// wrapped limiter's local fallback buckets with `FallBackToLocal`, which
/// gives up the bound for per-process limits until Redis answers again. A
/// failed background refill changes nothing; the next check that finds the
/// lease empty tries again.
///
/// # Decisions
///
/// An admitted request's [`Decision::remaining`] counts the tokens left in
/// this instance's lease (what it can still admit without asking Redis),
/// and its [`Decision::reset`] is the time until the Redis bucket is full
/// again as of the last round trip. Denials are the bucket's own. Credits
/// ([`RateLimiter::spend_credits`]) and [`RateLimiter::forget`] go to the
/// wrapped limiter; `forget` also drops this instance's leases of the key.
///
/// ```no_run
/// use keygate::{profiles, ApiKeys, LeasedRateLimiter, RedisRateLimiter};
/// use std::num::NonZeroU32;
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisRateLimiter::connect("redis://127.0.0.1:6379/").await?;
/// // Up to 32 tokens per key and class at a time, lapsing after 500 ms:
/// // with 8 instances, at most 256 requests beyond a key's quota.
/// let limiter = LeasedRateLimiter::builder(redis)
///     .lease_size(NonZeroU32::new(32).unwrap())
///     .ttl(Duration::from_millis(500))
///     .build();
/// let api = ApiKeys::builder(profiles::mailjawn())
///     .rate_limiter(limiter)
///     .build()?;
/// # let _ = api;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeasedRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisRateLimiter,
    lease: u32,
    /// A refill is started once a lease holds this many tokens or fewer.
    low_water: u32,
    ttl: u64,
    clock: Arc<dyn Clock>,
    leases: Leases,
    /// The runtime of the first check that went to Redis, for refills in
    /// the background.
    runtime: OnceLock<Handle>,
    round_trips: AtomicU64,
}

/// Configures a [`LeasedRateLimiter`]. See [`LeasedRateLimiter::builder`].
#[must_use]
#[derive(Debug)]
pub struct LeasedRateLimiterBuilder {
    redis: RedisRateLimiter,
    lease: u32,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl LeasedRateLimiterBuilder {
    /// The most tokens an instance holds per key and class, `L` (default
    /// 16, at most [`LeasedRateLimiter::MAX_LEASE`]; larger values are taken as that). The
    /// overshoot of a fleet of `n` instances is at most `n × L` per window;
    /// the round trips are about one per `L / 2` decisions.
    pub fn lease_size(mut self, tokens: NonZeroU32) -> Self {
        self.lease = tokens.get().min(LeasedRateLimiter::MAX_LEASE);
        self
    }

    /// How long a lease stays spendable after it was taken or last topped
    /// up (default 1 s; never longer than the quota's period). With zero,
    /// every check takes one token in one round trip, as the wrapped
    /// limiter does.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock that times leases out (default [`SystemClock`]; its
    /// monotonic time is read). Redis decisions use the server's clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The limiter.
    pub fn build(self) -> LeasedRateLimiter {
        LeasedRateLimiter {
            inner: Arc::new(Inner {
                redis: self.redis,
                lease: self.lease,
                low_water: self.lease / 2,
                ttl: u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX),
                clock: self.clock,
                leases: Leases::new(),
                runtime: OnceLock::new(),
                round_trips: AtomicU64::new(0),
            }),
        }
    }
}

impl LeasedRateLimiter {
    /// The most tokens one lease takes. Keeps the script's arithmetic exact:
    /// an emission interval's nanoseconds times the tokens stay below 2^53,
    /// where Lua's numbers are exact integers.
    pub const MAX_LEASE: u32 = 1_000_000;

    /// A leased limiter on `redis` with the default settings: leases of 16
    /// tokens lapsing after 1 s.
    pub fn new(redis: RedisRateLimiter) -> Self {
        Self::builder(redis).build()
    }

    /// Starts configuring a leased limiter on `redis`, whose connection,
    /// key prefix, timeout and failure policy it uses.
    pub fn builder(redis: RedisRateLimiter) -> LeasedRateLimiterBuilder {
        LeasedRateLimiterBuilder {
            redis,
            lease: DEFAULT_LEASE,
            ttl: DEFAULT_TTL,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// The most tokens held per key and class, `L`.
    pub fn lease_size(&self) -> u32 {
        self.inner.lease
    }

    /// The wrapped Redis limiter.
    pub fn redis(&self) -> &RedisRateLimiter {
        &self.inner.redis
    }

    /// How many lease round trips to Redis this limiter (and its clones)
    /// has made, successful or not: with the number of checks, the share
    /// of decisions taken locally.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LeasedRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedRateLimiter")
            .field("redis", &self.inner.redis)
            .field("lease", &self.inner.lease)
            .field("ttl", &Duration::from_nanos(self.inner.ttl))
            .finish_non_exhaustive()
    }
}

/// The tokens this instance holds for one key and class. The fields a
/// local decision reads come first, in one cache line.
#[derive(Debug, Default)]
#[repr(C)]
struct Lease {
    /// Monotonic nanoseconds at which the tokens lapse.
    expires: AtomicU64,
    /// Unspent tokens.
    tokens: AtomicU32,
    /// Monotonic nanoseconds at which the Redis bucket was full again, as of
    /// the last round trip.
    full_at: AtomicU64,
    /// Before this (monotonic nanoseconds), Redis has no token to give.
    denied_until: AtomicU64,
    /// A background refill has been started and has not finished.
    prefetching: AtomicBool,
    /// Held while a round trip for this lease is in flight.
    refill: tokio::sync::Mutex<()>,
}

/// What the lease alone can answer.
enum Local {
    /// Admitted from the lease; `true` when it should be topped up.
    Admitted(Decision, bool),
    /// Redis had nothing left, and still has nothing.
    Denied(Decision),
    /// Ask Redis.
    Miss,
}

impl Lease {
    #[inline]
    fn try_spend(&self, now: u64, quota: &Quota, low_water: u32) -> Local {
        if now < self.expires.load(Ordering::Acquire) {
            let mut tokens = self.tokens.load(Ordering::Relaxed);
            while tokens > 0 {
                match self.tokens.compare_exchange_weak(
                    tokens,
                    tokens - 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let left = tokens - 1;
                        let refill = left <= low_water && !self.prefetching.load(Ordering::Relaxed);
                        let decision = Decision {
                            allowed: true,
                            limit: quota.burst(),
                            remaining: left,
                            reset: Duration::from_nanos(
                                self.full_at.load(Ordering::Relaxed).saturating_sub(now),
                            ),
                            retry_after: None,
                        };
                        return Local::Admitted(decision, refill);
                    }
                    Err(current) => tokens = current,
                }
            }
        }
        let denied_until = self.denied_until.load(Ordering::Relaxed);
        if now < denied_until {
            return Local::Denied(Decision {
                allowed: false,
                limit: quota.burst(),
                remaining: 0,
                reset: Duration::from_nanos(
                    self.full_at.load(Ordering::Relaxed).saturating_sub(now),
                ),
                retry_after: Some(Duration::from_nanos(denied_until - now)),
            });
        }
        Local::Miss
    }
}

/// The script's reply: tokens taken, then the backlog and `ahead` as
/// (seconds, nanoseconds).
type Reply = (i64, i64, i64, i64, i64);

/// A reply checked and in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Taken {
    tokens: u32,
    backlog: u64,
    ahead: u64,
}

fn parse_reply(reply: Reply, want: u32, quota: &Quota) -> Result<Taken, LimiterUnavailable> {
    let (k, bl_s, bl_n, ah_s, ah_n) = reply;
    let malformed = || LimiterUnavailable::new("unexpected reply from the redis lease script");
    let join = |s: i64, n: i64| -> Option<u64> {
        let n = u64::try_from(n).ok().filter(|n| *n < NANOS_PER_SEC)?;
        u64::try_from(s)
            .ok()?
            .checked_mul(NANOS_PER_SEC)?
            .checked_add(n)
    };
    let tokens = u32::try_from(k)
        .ok()
        .filter(|k| *k <= want)
        .ok_or_else(malformed)?;
    let backlog = join(bl_s, bl_n).ok_or_else(malformed)?;
    let ahead = join(ah_s, ah_n).ok_or_else(malformed)?;
    let fits = ahead <= quota.tolerance_nanos();
    // Admitted when something was taken, and then within the tolerance;
    // otherwise the next request would not fit.
    if (tokens > 0) != fits || ahead < backlog {
        return Err(malformed());
    }
    Ok(Taken {
        tokens,
        backlog,
        ahead,
    })
}

fn split_nanos(nanos: u64) -> (u64, u64) {
    (nanos / NANOS_PER_SEC, nanos % NANOS_PER_SEC)
}

impl Inner {
    fn ttl_for(&self, quota: &Quota) -> u64 {
        let period = u64::try_from(quota.period().as_nanos()).unwrap_or(u64::MAX);
        self.ttl.min(period)
    }

    /// One round trip: takes up to `want` tokens.
    async fn take(
        &self,
        key_id: &str,
        class: &str,
        quota: &Quota,
        want: u32,
    ) -> Result<Taken, LimiterUnavailable> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let (iv_s, iv_n) = split_nanos(quota.interval_nanos());
        let (tol_s, tol_n) = split_nanos(quota.tolerance_nanos());
        let args = [iv_s, iv_n, tol_s, tol_n, u64::from(want)];
        let reply: Reply = self
            .redis
            .run_on_bucket(&LEASE, key_id, class, &args)
            .await?;
        parse_reply(reply, want, quota)
    }

    /// How many tokens to ask for with `held` in hand.
    fn want(&self, held: u32, quota: &Quota) -> u32 {
        self.lease.saturating_sub(held).min(quota.burst()).max(1)
    }

    /// Records what a round trip at `now` said.
    fn record(&self, lease: &Lease, taken: Taken, now: u64, quota: &Quota) {
        let ttl = self.ttl_for(quota);
        if taken.tokens > 0 {
            lease
                .full_at
                .store(now.saturating_add(taken.ahead), Ordering::Relaxed);
            lease.denied_until.store(0, Ordering::Relaxed);
        } else {
            lease
                .full_at
                .store(now.saturating_add(taken.backlog), Ordering::Relaxed);
            let retry = taken.ahead - quota.tolerance_nanos();
            lease
                .denied_until
                .store(now.saturating_add(retry.min(ttl)), Ordering::Relaxed);
        }
    }

    /// The slow path: no token in hand, so ask Redis (or wait for the
    /// refill already asking).
    async fn check_remote(
        &self,
        key_id: &str,
        class: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        let lease = self
            .leases
            .get_or_insert(key_id, class, self.clock.monotonic_nanos())?;
        let _guard = lease.refill.lock().await;
        let now = self.clock.monotonic_nanos();
        match lease.try_spend(now, quota, self.low_water) {
            Local::Admitted(decision, _) => return Ok(decision),
            Local::Denied(decision) => return Ok(decision),
            Local::Miss => {}
        }
        // Holding the guard, no one else adds tokens: the lease is empty or
        // has lapsed, and lapsed tokens are dropped.
        lease.tokens.store(0, Ordering::Relaxed);
        // A lease that lapses at once would waste all but one token.
        let want = if self.ttl_for(quota) == 0 {
            1
        } else {
            self.want(0, quota)
        };
        if let Ok(runtime) = Handle::try_current() {
            let _ = self.runtime.set(runtime);
        }
        match self.take(key_id, class, quota, want).await {
            Ok(taken) => {
                self.record(&lease, taken, now, quota);
                if taken.tokens == 0 {
                    return Ok(Decision {
                        allowed: false,
                        limit: quota.burst(),
                        remaining: 0,
                        reset: Duration::from_nanos(taken.backlog),
                        retry_after: Some(Duration::from_nanos(
                            taken.ahead - quota.tolerance_nanos(),
                        )),
                    });
                }
                // One token for this request, the rest for the next ones.
                let left = taken.tokens - 1;
                lease.tokens.store(left, Ordering::Relaxed);
                lease
                    .expires
                    .store(now.saturating_add(self.ttl_for(quota)), Ordering::Release);
                Ok(Decision {
                    allowed: true,
                    limit: quota.burst(),
                    remaining: left,
                    reset: Duration::from_nanos(taken.ahead),
                    retry_after: None,
                })
            }
            Err(e) => self.redis.after_failure(e, key_id, class, quota),
        }
    }

    /// Tops the lease up to `L` tokens, unless a round trip for it is
    /// already in flight.
    async fn top_up(&self, lease: &Lease, key_id: &str, class: &str, quota: &Quota) {
        let Ok(_guard) = lease.refill.try_lock() else {
            lease.prefetching.store(false, Ordering::Relaxed);
            return;
        };
        let now = self.clock.monotonic_nanos();
        if now < lease.expires.load(Ordering::Acquire) {
            let held = lease.tokens.load(Ordering::Relaxed);
            // Spends only lower `held` meanwhile, so the lease stays within L.
            let want = self.lease.saturating_sub(held).min(quota.burst());
            if want > 0 {
                match self.take(key_id, class, quota, want).await {
                    Ok(taken) => {
                        self.record(lease, taken, now, quota);
                        if taken.tokens > 0 {
                            lease.tokens.fetch_add(taken.tokens, Ordering::Relaxed);
                            lease
                                .expires
                                .store(now.saturating_add(self.ttl_for(quota)), Ordering::Release);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(target: "keygate", error = %e, "refilling a rate-limit lease failed");
                    }
                }
            }
        }
        lease.prefetching.store(false, Ordering::Relaxed);
    }

    /// Starts a background top-up of the lease of `key_id` in `class`.
    #[cold]
    fn start_top_up(self: &Arc<Self>, key_id: &str, class: &str, quota: &Quota) {
        let Some(runtime) = self.runtime.get() else {
            return;
        };
        let Some(lease) = self.leases.with_arc(key_id, class) else {
            return;
        };
        if lease.prefetching.swap(true, Ordering::Relaxed) {
            return;
        }
        let inner = Arc::clone(self);
        let (key_id, class, quota) = (key_id.to_owned(), class.to_owned(), *quota);
        runtime.spawn(async move {
            inner.top_up(&lease, &key_id, &class, &quota).await;
        });
    }
}

#[async_trait::async_trait]
impl RateLimiter for LeasedRateLimiter {
    /// Admits from this instance's lease of `key_id` in `class` when it
    /// holds a token, and otherwise takes a lease from Redis (see
    /// [`LeasedRateLimiter`]).
    async fn check(
        &self,
        key_id: &str,
        class: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        let inner = &self.inner;
        let now = inner.clock.monotonic_nanos();
        let local = inner.leases.with(key_id, class, |lease| {
            lease.try_spend(now, quota, inner.low_water)
        });
        match local {
            Some(Local::Admitted(decision, refill)) => {
                if refill {
                    inner.start_top_up(key_id, class, quota);
                }
                Ok(decision)
            }
            Some(Local::Denied(decision)) => Ok(decision),
            // Boxed apart, so that the hot path's future stays small.
            Some(Local::Miss) | None => Box::pin(inner.check_remote(key_id, class, quota)).await,
        }
    }

    /// Drops this instance's leases of `key_id` and lets the wrapped limiter
    /// forget the key (deleting its buckets in Redis).
    fn forget(&self, key_id: &str) {
        self.inner.leases.forget(key_id);
        self.inner.redis.forget(key_id);
    }

    /// Spends credits through the wrapped limiter.
    async fn spend_credits(
        &self,
        account: &AccountId,
        key: Option<(&str, &Credits)>,
        identity: Option<(&str, &Credits)>,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Option<SharedSpend>, LimiterUnavailable> {
        self.inner
            .redis
            .spend_credits(account, key, identity, cost, now)
            .await
    }
}

/// Key ids are hashed with foldhash, seeded at random per process.
type Seeded = foldhash::quality::RandomState;

type Shard = RwLock<HashMap<Box<str>, Arc<Lease>, Seeded>>;

/// One class's leases: its name, and its shards.
type Class = (Box<str>, Box<[Shard]>);

/// Leases by class name, then key id: a short list of classes, each with a
/// map sharded over read-write locks, as the local limiter keeps buckets.
struct Leases {
    hasher: Seeded,
    classes: RwLock<Vec<Class>>,
    created: AtomicU64,
}

impl Leases {
    fn new() -> Self {
        Self {
            hasher: Seeded::default(),
            classes: RwLock::new(Vec::new()),
            created: AtomicU64::new(0),
        }
    }

    fn shard<'a>(&self, shards: &'a [Shard], key_id: &str) -> &'a Shard {
        let hash = self.hasher.hash_one(key_id);
        &shards[(hash >> 32) as usize % SHARDS]
    }

    /// `f` on the lease of `key_id` in `class`, if there is one.
    #[inline]
    fn with<T>(&self, key_id: &str, class: &str, f: impl FnOnce(&Lease) -> T) -> Option<T> {
        let classes = self.classes.read();
        let (_, shards) = classes.iter().find(|(name, _)| **name == *class)?;
        let shard = self.shard(shards, key_id).read();
        shard.get(key_id).map(|lease| f(lease))
    }

    fn with_arc(&self, key_id: &str, class: &str) -> Option<Arc<Lease>> {
        let classes = self.classes.read();
        let (_, shards) = classes.iter().find(|(name, _)| **name == *class)?;
        let lease = self.shard(shards, key_id).read().get(key_id).cloned();
        lease
    }

    /// The lease of `key_id` in `class`, made empty if there is none.
    fn get_or_insert(
        &self,
        key_id: &str,
        class: &str,
        now: u64,
    ) -> Result<Arc<Lease>, LimiterUnavailable> {
        if let Some(lease) = self.with_arc(key_id, class) {
            return Ok(lease);
        }
        let index = {
            let classes = self.classes.read();
            classes.iter().position(|(name, _)| **name == *class)
        };
        let classes = match index {
            Some(_) => self.classes.read(),
            None => {
                let mut classes = self.classes.write();
                if !classes.iter().any(|(name, _)| **name == *class) {
                    if classes.len() >= MAX_CLASSES {
                        return Err(LimiterUnavailable::new(
                            "more operation classes than the leased rate limiter keeps (64)",
                        ));
                    }
                    let shards = (0..SHARDS)
                        .map(|_| RwLock::new(HashMap::with_hasher(Seeded::default())))
                        .collect();
                    classes.push((class.into(), shards));
                }
                RwLockWriteGuard::downgrade(classes)
            }
        };
        if self.created.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for (_, shards) in classes.iter() {
                for shard in shards.iter() {
                    shard.write().retain(|_, lease| {
                        Arc::strong_count(lease) > 1
                            || now < lease.expires.load(Ordering::Acquire)
                            || now < lease.denied_until.load(Ordering::Relaxed)
                    });
                }
            }
        }
        let (_, shards) = classes
            .iter()
            .find(|(name, _)| **name == *class)
            .ok_or_else(|| LimiterUnavailable::new("rate-limit lease class vanished"))?;
        let mut shard = self.shard(shards, key_id).write();
        Ok(Arc::clone(shard.entry(key_id.into()).or_default()))
    }

    fn forget(&self, key_id: &str) {
        for (_, shards) in self.classes.read().iter() {
            self.shard(shards, key_id).write().remove(key_id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.classes
            .read()
            .iter()
            .map(|(_, shards)| shards.iter().map(|s| s.read().len()).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::nz;

    #[test]
    fn replies_are_checked() {
        let quota = Quota::per_second(nz(10)).unwrap(); // 100 ms, burst 10
        let ms = 1_000_000;
        // Took 4 with 300 ms of backlog: 700 ms ahead.
        let taken = parse_reply((4, 0, 300 * ms, 0, 700 * ms), 4, &quota).unwrap();
        assert_eq!(
            taken,
            Taken {
                tokens: 4,
                backlog: 300_000_000,
                ahead: 700_000_000
            }
        );
        // Nothing left: the next request would be 50 ms beyond the tolerance.
        let taken = parse_reply((0, 0, 950 * ms, 1, 50 * ms), 4, &quota).unwrap();
        assert_eq!(taken.tokens, 0);
        for reply in [
            (5, 0, 0, 0, 500 * ms),        // more than asked for
            (-1, 0, 0, 0, 0),              // negative
            (1, 0, 0, 1, 1),               // taken beyond the tolerance
            (0, 0, 0, 0, 100 * ms),        // refused within it
            (1, 0, 500 * ms, 0, 100 * ms), // ahead before the backlog
            (1, 0, 0, 0, 1_000_000_000),   // nanoseconds out of range
            (1, i64::MAX, 0, 0, 0),        // beyond u64 nanoseconds
        ] {
            let err = parse_reply(reply, 4, &quota).unwrap_err();
            assert!(err.reason().contains("unexpected reply"), "{reply:?}");
        }
    }

    #[test]
    fn a_lease_spends_until_empty_or_lapsed() {
        let quota = Quota::per_hour(nz(100));
        let lease = Lease::default();
        // Fresh: nothing to spend.
        assert!(matches!(lease.try_spend(0, &quota, 2), Local::Miss));
        lease.tokens.store(4, Ordering::Relaxed);
        lease.expires.store(1_000, Ordering::Relaxed);
        lease.full_at.store(500, Ordering::Relaxed);
        let mut refills = Vec::new();
        for _ in 0..4 {
            match lease.try_spend(100, &quota, 2) {
                Local::Admitted(d, refill) => {
                    assert!(d.allowed);
                    assert_eq!(d.reset, Duration::from_nanos(400));
                    refills.push((d.remaining, refill));
                }
                _ => panic!("a token was held"),
            }
        }
        // A refill is asked for from the low-water mark on.
        assert_eq!(refills, [(3, false), (2, true), (1, true), (0, true)]);
        assert!(matches!(lease.try_spend(100, &quota, 2), Local::Miss));
        // Lapsed tokens are not spent.
        lease.tokens.store(4, Ordering::Relaxed);
        assert!(matches!(lease.try_spend(1_000, &quota, 2), Local::Miss));
        assert_eq!(lease.tokens.load(Ordering::Relaxed), 4);
        // Denied locally until Redis may have a token again.
        lease.denied_until.store(2_000, Ordering::Relaxed);
        match lease.try_spend(1_500, &quota, 2) {
            Local::Denied(d) => {
                assert!(!d.allowed);
                assert_eq!(d.retry_after, Some(Duration::from_nanos(500)));
            }
            _ => panic!("denied until 2000"),
        }
        assert!(matches!(lease.try_spend(2_000, &quota, 2), Local::Miss));
    }

    #[test]
    fn concurrent_spends_take_each_token_once() {
        let quota = Quota::per_hour(nz(100));
        let lease = Lease::default();
        lease.tokens.store(1_000, Ordering::Relaxed);
        lease.expires.store(u64::MAX, Ordering::Relaxed);
        let admitted = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..400 {
                        if let Local::Admitted(..) = lease.try_spend(1, &quota, 0) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 1_000);
    }

    #[test]
    fn leases_are_kept_by_key_and_class_and_forgotten() {
        let leases = Leases::new();
        let a = leases.get_or_insert("a", "send", 0).unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &leases.get_or_insert("a", "send", 0).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &leases.get_or_insert("a", "read", 0).unwrap()
        ));
        let _ = leases.get_or_insert("b", "send", 0).unwrap();
        assert_eq!(leases.len(), 3);
        assert!(leases.with("a", "nope", |_| ()).is_none());
        leases.forget("a");
        assert_eq!(leases.len(), 1);
        assert!(leases.with_arc("b", "send").is_some());
        for i in 0..MAX_CLASSES - 2 {
            leases.get_or_insert("k", &format!("c{i}"), 0).unwrap();
        }
        let err = leases.get_or_insert("k", "one_more", 0).unwrap_err();
        assert!(err.reason().contains("operation classes"), "{err}");
    }
}
