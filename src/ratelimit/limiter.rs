//! The seam between keygate and a rate-limit backend.

use std::borrow::Cow;

use super::{Decision, KeyBuckets, Quota};

/// A limiter's state could not be read or updated, so no decision was made.
///
/// Returned by shared limiters whose backend cannot be reached, and by any
/// limiter asked about an operation class its slot does not have. Whether to
/// fail open or closed on this error is the caller's policy.
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
/// [`LocalRateLimiter`](super::LocalRateLimiter) keeps state in the
/// [`KeyBuckets`] slot the caller holds beside its cached key record; a shared
/// limiter (e.g. one backed by Redis, for many service instances) may instead
/// key its state by `key_id` and `class_name` and ignore the slot.
///
/// ```
/// use keygate::{KeyBuckets, LocalRateLimiter, ManualClock, Quota, RateLimiter};
/// use std::sync::Arc;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter: Arc<dyn RateLimiter> = Arc::new(LocalRateLimiter::new(Arc::new(ManualClock::new())));
/// let slot = KeyBuckets::new(1);
/// let quota = Quota::per_minute(1)?;
/// let first = limiter.check("key_123", &slot, 0, "default", &quota).await.unwrap();
/// let second = limiter.check("key_123", &slot, 0, "default", &quota).await.unwrap();
/// assert!(first.allowed && !second.allowed);
/// assert!(limiter.check("key_123", &slot, 1, "missing", &quota).await.is_err());
/// # Ok::<(), keygate::QuotaError>(())
/// # }).unwrap();
/// ```
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Checks one request by key `key_id` in operation class `class_index`
    /// (named `class_name`) against `quota`, consuming a token if admitted.
    ///
    /// `slot` is the key's local state; `class_index` must be below
    /// `slot.len()` for limiters that use it.
    async fn check(
        &self,
        key_id: &str,
        slot: &KeyBuckets,
        class_index: usize,
        class_name: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable>;

    /// Drops any state held for `key_id`, e.g. once the key is revoked.
    ///
    /// A no-op for limiters whose state lives only in the caller's slot.
    fn forget(&self, key_id: &str);
}
