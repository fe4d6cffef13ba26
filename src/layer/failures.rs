//! The failure limiter: a budget of failed verifications per client address,
//! spent ahead of the key store, so that a flood of well-formed unknown keys
//! from one address stops reaching the store.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Request};

use super::https::peer;
use crate::clock::Clock;
use crate::error::AuthError;
use crate::ratelimit::{KeyBuckets, KeyedBuckets, Quota, SHARDS};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The settings of [`ApiKeyLayer::limit_failures`](super::ApiKeyLayer::limit_failures):
/// how many failed verifications a client address may make, how many
/// addresses are tracked at most, and where the address is read from.
///
/// A `Quota` converts into one with the defaults (100 000 addresses, the
/// peer address only), so `layer.limit_failures(quota)` is the short form.
///
/// ```
/// use keygate::layer::FailureLimit;
/// use keygate::Quota;
/// use std::num::NonZeroU32;
///
/// // 20 failures at once, then one every 3 seconds (20 per minute).
/// let quota = Quota::per_minute(NonZeroU32::new(20).unwrap());
/// let limit = FailureLimit::new(quota)
///     .max_addresses(10_000)
///     // Behind one reverse proxy that appends the client to X-Forwarded-For.
///     .trust_forwarded_for(1);
/// assert_eq!(limit.quota(), &quota);
/// assert_eq!(limit.max_addresses_held(), 10_016);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    quota: Quota,
    max_addresses: usize,
    trusted_proxies: usize,
}

impl FailureLimit {
    /// The number of addresses tracked unless
    /// [`max_addresses`](Self::max_addresses) says otherwise.
    pub const DEFAULT_MAX_ADDRESSES: usize = 100_000;

    /// `quota` failed verifications per client address, at most
    /// [`DEFAULT_MAX_ADDRESSES`](Self::DEFAULT_MAX_ADDRESSES) addresses
    /// tracked, addresses read from the connection only.
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            max_addresses: Self::DEFAULT_MAX_ADDRESSES,
            trusted_proxies: 0,
        }
    }

    /// Tracks at most `max` client addresses (rounded up to a multiple of
    /// 32, the limiter's number of shards; at least 32). When a new address
    /// would pass the bound, addresses whose budget is whole again are
    /// forgotten first; if there are none, those whose blocks end soonest
    /// are (a few at a time; they start afresh when next seen). Each address
    /// costs about 100 bytes.
    pub fn max_addresses(mut self, max: usize) -> Self {
        self.max_addresses = max;
        self
    }

    /// Reads the client address from `X-Forwarded-For`, as written by
    /// `proxies` reverse proxies in front of the server (default 0: the
    /// header is ignored).
    ///
    /// Each proxy appends the address it received the request from, so the
    /// client is the `proxies`-th entry from the right; entries to its left
    /// were written by the client and are never read. When the header has
    /// fewer entries, or that entry is not an IP address, the peer address
    /// is used. Only set this behind proxies that always append to the
    /// header: otherwise a client picks its own address, and with it a fresh
    /// budget per request.
    pub fn trust_forwarded_for(mut self, proxies: usize) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The failure budget of one address.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The most addresses tracked: [`max_addresses`](Self::max_addresses)
    /// rounded up to a multiple of 32.
    pub fn max_addresses_held(&self) -> usize {
        self.max_addresses
            .div_ceil(SHARDS)
            .max(1)
            .saturating_mul(SHARDS)
    }

    /// How many trusted proxies append to `X-Forwarded-For` (0: the header
    /// is not read).
    pub fn trusted_proxies(&self) -> usize {
        self.trusted_proxies
    }
}

impl From<Quota> for FailureLimit {
    fn from(quota: Quota) -> Self {
        Self::new(quota)
    }
}

/// The failure budgets of the client addresses one layer (and the layers
/// derived from it) has seen.
pub(crate) struct FailureLimiter {
    limit: FailureLimit,
    /// Hashed with foldhash, seeded at random: an address is 16 bytes, and
    /// SipHash, run twice per lookup (shard, then map), was half the
    /// limiter's cost. Shards hold a bounded number of addresses, so even
    /// colliding ones cost a bounded probe.
    slots: KeyedBuckets<u128, foldhash::quality::RandomState>,
    warned: AtomicBool,
}

/// A failure token taken ahead of one verification; given back when the
/// verification succeeds, kept when it fails or never finishes.
pub(crate) struct Reservation<'a> {
    limiter: &'a FailureLimiter,
    slot: Arc<KeyBuckets>,
    /// When the token lapses by itself: the bucket's state it moved, in
    /// monotonic nanoseconds.
    lapses_at: u64,
}

impl FailureLimiter {
    pub(crate) fn new(limit: FailureLimit) -> Self {
        Self {
            slots: KeyedBuckets::with_max_slots(limit.max_addresses),
            limit,
            warned: AtomicBool::new(false),
        }
    }

    pub(crate) fn limit(&self) -> &FailureLimit {
        &self.limit
    }

    /// The number of addresses with state.
    pub(crate) fn addresses(&self) -> usize {
        self.slots.len()
    }

    /// Takes a failure token for the request's client at `now_nanos`.
    ///
    /// `Ok(None)` when the client address is unknown (not limited);
    /// `Err(retry_after)` when the address has no budget left.
    pub(crate) fn reserve<B>(
        &self,
        request: &Request<B>,
        now_nanos: u64,
    ) -> Result<Option<Reservation<'_>>, Duration> {
        let Some(ip) = self.client(request) else {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "keygate",
                    "failure limiter: a request without a client address is not limited; \
                     serve with `into_make_service_with_connect_info::<SocketAddr>()` or \
                     insert a `SocketAddr` request extension"
                );
            }
            return Ok(None);
        };
        // When every slot of the address's shard is held by a verification
        // in flight there is no room to track it: refused, so the store stays
        // protected whatever the concurrency.
        let Some(slot) = self.slots.get_or_insert_bounded(&group(ip), 1, now_nanos) else {
            return Err(Duration::from_secs(1));
        };
        let decision = match slot.bucket(0) {
            Some(bucket) => bucket.check(&self.limit.quota, now_nanos),
            None => return Err(Duration::from_secs(1)),
        };
        if decision.allowed {
            let reset = u64::try_from(decision.reset.as_nanos()).unwrap_or(u64::MAX);
            Ok(Some(Reservation {
                limiter: self,
                slot,
                lapses_at: now_nanos.saturating_add(reset),
            }))
        } else {
            Err(decision.retry_after.unwrap_or(Duration::from_secs(1)))
        }
    }

    /// The client's IP address: from `X-Forwarded-For` when trusted and
    /// usable, else the peer address the server recorded.
    fn client<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        if self.limit.trusted_proxies > 0 {
            if let Some(ip) = forwarded_for(request, self.limit.trusted_proxies) {
                return Some(ip);
            }
        }
        peer(request).map(|addr| addr.ip())
    }
}

impl Reservation<'_> {
    /// Settles the token: given back when `verified` is a success or a
    /// refusal of a good credential (missing scope, the key's own limits),
    /// kept for a failed verification or an unavailable store. `clock` is
    /// read only to give a token back: what has lapsed of it meanwhile is not.
    pub(crate) fn settle<T>(self, verified: &Result<T, AuthError>, clock: &dyn Clock) {
        let spent = matches!(verified, Err(e) if spends_budget(e));
        if !spent {
            if let Some(bucket) = self.slot.bucket(0) {
                let unspent = self.lapses_at.saturating_sub(clock.monotonic_nanos());
                bucket.refund(&self.limiter.limit.quota, unspent);
            }
        }
    }
}

/// Whether a verification that ended in `error` keeps its token: when the
/// presented credential is no good (what a flood of made-up keys produces),
/// and when the store could not answer (a flood may be why, and the store
/// is then the last thing to send more lookups to). A good credential
/// refused for another reason gives its token back.
pub(crate) fn spends_budget(error: &AuthError) -> bool {
    match error {
        AuthError::Malformed { .. }
        | AuthError::Invalid
        | AuthError::Revoked
        | AuthError::Expired
        | AuthError::Disabled
        | AuthError::Session { .. }
        | AuthError::Unavailable => true,
        AuthError::Missing
        | AuthError::Forbidden { .. }
        | AuthError::RateLimited { .. }
        | AuthError::UsageExceeded { .. }
        | AuthError::SessionNotAccepted => false,
    }
}

/// The address the budget is kept under: an IPv4 address (also when written
/// IPv4-mapped) as itself, an IPv6 address by its /64 prefix, the block one
/// subscriber usually holds.
pub(crate) fn group(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        // The low 64 bits of a native IPv6 key are zero, those of an IPv4
        // key are not (they hold ffff:a.b.c.d), so the two never meet.
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

/// The entry `proxies` from the right of the request's `X-Forwarded-For`
/// headers, taken together in order, when it is an IP address (with or
/// without a port).
fn forwarded_for<B>(request: &Request<B>, proxies: usize) -> Option<IpAddr> {
    let mut entries = request
        .headers()
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
    let entry = entries.nth(proxies - 1)?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

impl fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureLimiter")
            .field("limit", &self.limit)
            .field("addresses", &self.addresses())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::nz;

    fn request(peer: Option<&str>, forwarded: &[&str]) -> Request<()> {
        let mut b = Request::builder();
        for f in forwarded {
            b = b.header("x-forwarded-for", *f);
        }
        let mut r = b.body(()).unwrap();
        if let Some(p) = peer {
            r.extensions_mut().insert(p.parse::<SocketAddr>().unwrap());
        }
        r
    }

    fn limiter(proxies: usize) -> FailureLimiter {
        FailureLimiter::new(FailureLimit::new(Quota::per_hour(nz(2))).trust_forwarded_for(proxies))
    }

    #[test]
    fn ipv6_groups_by_64_and_ipv4_stays_apart() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(group(a), group(b));
        assert_ne!(group(a), group(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(group(v4), group(mapped));
        assert_ne!(group(v4), group("192.0.2.8".parse().unwrap()));
        // 0.0.0.0 and the IPv6 prefix ::/64 are different clients.
        assert_ne!(
            group("0.0.0.0".parse().unwrap()),
            group("::1".parse().unwrap())
        );
    }

    #[test]
    fn the_client_is_the_peer_unless_forwarded_for_is_trusted() {
        let untrusted = limiter(0);
        let r = request(Some("10.0.0.1:5000"), &["203.0.113.9"]);
        assert_eq!(untrusted.client(&r), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(untrusted.client(&request(None, &["203.0.113.9"])), None);

        let one = limiter(1);
        let r = request(Some("10.0.0.1:5000"), &["1.1.1.1, 203.0.113.9"]);
        assert_eq!(one.client(&r), Some("203.0.113.9".parse().unwrap()));
        // Several header lines read as one list, in order.
        let two = limiter(2);
        let r = request(
            Some("10.0.0.1:5000"),
            &["6.6.6.6", "203.0.113.9, 10.0.0.2", "10.0.0.3"],
        );
        assert_eq!(two.client(&r), Some("10.0.0.2".parse().unwrap()));
        let r = request(Some("10.0.0.1:5000"), &["[2001:db8::5]:443, 10.0.0.3"]);
        assert_eq!(two.client(&r), Some("2001:db8::5".parse().unwrap()));
        // Too few entries, or garbage where the client should be: the peer.
        let r = request(Some("10.0.0.1:5000"), &["10.0.0.3"]);
        assert_eq!(two.client(&r), Some("10.0.0.1".parse().unwrap()));
        let r = request(Some("10.0.0.1:5000"), &["nonsense, 10.0.0.3"]);
        assert_eq!(two.client(&r), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(two.client(&request(None, &[])), None);
    }

    #[test]
    fn failures_spend_the_budget_and_successes_give_it_back() {
        let limiter = limiter(0);
        let clock = crate::ManualClock::new();
        let settle = |r: &Request<()>, outcome: Result<(), AuthError>| {
            let reservation = limiter.reserve(r, 0).unwrap().unwrap();
            reservation.settle(&outcome, &clock);
        };
        let r = request(Some("192.0.2.1:1"), &[]);
        for _ in 0..10 {
            settle(&r, Ok(()));
            let forbidden = AuthError::Forbidden {
                required: "emails:send".into(),
            };
            settle(&r, Err(forbidden));
        }
        settle(&r, Err(AuthError::Invalid));
        // An unavailable store keeps the token too.
        settle(&r, Err(AuthError::Unavailable));
        let retry = limiter.reserve(&r, 0).err().unwrap();
        assert_eq!(retry, Duration::from_secs(1800));
        // A verification that never finished keeps its token.
        let r = request(Some("192.0.2.3:1"), &[]);
        drop(limiter.reserve(&r, 0).unwrap().unwrap());
        settle(&r, Ok(()));
        settle(&r, Err(AuthError::Revoked));
        assert!(limiter.reserve(&r, 0).is_err());
        // Other addresses have their own budget; unknown ones are not limited.
        assert!(limiter
            .reserve(&request(Some("192.0.2.2:1"), &[]), 0)
            .unwrap()
            .is_some());
        assert!(limiter.reserve(&request(None, &[]), 0).unwrap().is_none());
        assert_eq!(limiter.addresses(), 3);
    }

    #[test]
    fn a_token_that_lapsed_during_verification_is_not_given_back() {
        let limiter = limiter(0);
        let clock = crate::ManualClock::new();
        let r = request(Some("192.0.2.1:1"), &[]);
        let slow = limiter.reserve(&r, 0).unwrap().unwrap();
        let failed: Result<(), AuthError> = Err(AuthError::Invalid);
        limiter
            .reserve(&r, 0)
            .unwrap()
            .unwrap()
            .settle(&failed, &clock);
        // The slow success finishes once its token has refilled by itself.
        clock.advance(Duration::from_secs(1800));
        let ok: Result<(), AuthError> = Ok(());
        slow.settle(&ok, &clock);
        let half = 1800 * 1_000_000_000;
        assert!(limiter.reserve(&r, half).unwrap().is_some());
        assert!(limiter.reserve(&r, half).is_err());
    }

    #[test]
    fn which_outcomes_spend_the_budget() {
        assert!(spends_budget(&AuthError::Invalid));
        assert!(spends_budget(&AuthError::Revoked));
        assert!(spends_budget(&AuthError::Malformed {
            reason: crate::key::MalformedReason::Checksum
        }));
        assert!(spends_budget(&AuthError::Unavailable));
        assert!(!spends_budget(&AuthError::Missing));
        assert!(!spends_budget(&AuthError::SessionNotAccepted));
        assert!(!spends_budget(&AuthError::Forbidden {
            required: "x".into()
        }));
    }
}
