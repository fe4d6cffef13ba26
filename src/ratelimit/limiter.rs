//! The seam between keygate and a rate-limit backend.

use std::borrow::Cow;

use time::OffsetDateTime;

use super::{Decision, Quota};
use crate::store::SharedSpend;
use crate::{AccountId, Credits};

/// A limiter's state could not be read or updated, so no decision was made.
///
/// Returned by shared limiters whose backend cannot be reached, and by a
/// limiter that cannot keep state for the request (such as a
/// [`LocalRateLimiter`](super::LocalRateLimiter) asked about more operation
/// classes than it keeps). Whether to fail open or closed on this error is
/// the caller's policy; [`ApiKeys`](crate::ApiKeys) fails closed, with
/// [`AuthError::Unavailable`](crate::AuthError::Unavailable).
///
/// ```
/// use keygate::LimiterUnavailable;
///
/// let err = LimiterUnavailable::new("connection refused");
/// assert_eq!(err.reason(), "connection refused");
/// assert_eq!(err.to_string(), "rate limiter unavailable: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limiter unavailable: {reason}")]
#[non_exhaustive]
pub struct LimiterUnavailable {
    reason: Cow<'static, str>,
}

impl LimiterUnavailable {
    /// An error with a short, lowercase explanation.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The explanation given when the error was made.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Decides whether a request made with an API key is within its quota.
///
/// A limiter keeps its own state, by key and operation class: the caller
/// names both and passes the quota that applies, and the limiter answers
/// with a [`Decision`], consuming a token if the request is admitted.
/// [`ApiKeys`](crate::ApiKeys) uses an in-process
/// [`LocalRateLimiter`](super::LocalRateLimiter) unless given another with
/// [`ApiKeysBuilder::rate_limiter`](crate::ApiKeysBuilder::rate_limiter),
/// e.g. a `RedisRateLimiter` (feature `redis`) that shares each key's quota
/// between service instances.
///
/// ```
/// use keygate::{LocalRateLimiter, ManualClock, Quota, RateLimiter};
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter: Arc<dyn RateLimiter> = Arc::new(LocalRateLimiter::new(Arc::new(ManualClock::new())));
/// let quota = Quota::per_minute(NonZeroU32::MIN); // one per minute
/// let first = limiter.check("key_123", "default", &quota).await.unwrap();
/// let second = limiter.check("key_123", "default", &quota).await.unwrap();
/// assert!(first.allowed && !second.allowed);
///
/// // Forgetting the key (e.g. once it is revoked) drops its state.
/// limiter.forget("key_123");
/// assert!(limiter.check("key_123", "default", &quota).await.unwrap().allowed);
/// # });
/// ```
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Checks one request by key `key_id` in the operation class named
    /// `class` against `quota`, consuming a token if it is admitted.
    ///
    /// `key_id` is the key's rate-limit identity. [`ApiKeys`](crate::ApiKeys)
    /// passes its lineage ([`KeyRecord::lineage`](crate::store::KeyRecord::lineage())):
    /// the id of the first key of its rotation chain, so that rotating a key
    /// or resetting its secret keeps its buckets. `class` is a class name of
    /// the profile's [`RatePolicy`](super::RatePolicy), and `quota` the one
    /// that applies to this key in that class (its own override, or the
    /// class's).
    async fn check(
        &self,
        key_id: &str,
        class: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable>;

    /// Drops any state held for `key_id`, in every class, e.g. once the key
    /// is revoked.
    fn forget(&self, key_id: &str);

    /// Spends `cost` of a key's credits and of its identity's in one atomic
    /// step kept by this limiter, shared by every instance that uses it:
    /// both or neither, by the rule of [`Credits::spend`] for each. `key`
    /// and `identity` name a ledger (the key's lineage, the identity's id)
    /// and give the credits its record holds, which seed the ledger and
    /// re-seed it whenever they change (an update of the credits).
    /// `account` is the account of the key, to which its identity belongs
    /// too: a limiter may keep all of an account's ledgers together (a
    /// `RedisRateLimiter` keeps them in one Redis Cluster slot, so one
    /// script can update both).
    ///
    /// `Ok(None)` means this limiter keeps no credits, and the store spends
    /// them instead: the default, and what a limiter that falls back to
    /// local decisions answers while its backend is unreachable. An error
    /// means no decision could be made, and the request is refused as
    /// unavailable.
    async fn spend_credits(
        &self,
        account: &AccountId,
        key: Option<(&str, &Credits)>,
        identity: Option<(&str, &Credits)>,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Option<SharedSpend>, LimiterUnavailable> {
        let _ = (account, key, identity, cost, now);
        Ok(None)
    }
}
