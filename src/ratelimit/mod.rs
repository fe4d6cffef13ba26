//! Per-key rate limiting.
//!
//! This module decides whether a request made with an API key fits that key's
//! [`Quota`] for an operation class ([`RatePolicy`]), using the generic cell
//! rate algorithm (GCRA): each key keeps, per class, a single atomic word
//! holding a theoretical arrival time, which [`LocalRateLimiter`] checks
//! lock-free against a [`Clock`](crate::Clock), returning a [`Decision`] with
//! everything the `RateLimit-*` and `Retry-After` headers need.
//! [`ApiKeys`](crate::ApiKeys) keeps those words beside its cached key
//! records, so a check needs no map lookup. The [`RateLimiter`] trait is the
//! seam for limiters shared between service instances. Nothing here does
//! I/O, except the Redis-backed `RedisRateLimiter` (feature `redis`), which
//! shares buckets between instances, and `LeasedRateLimiter`, which spends
//! those shared buckets in leases of several tokens at a time.

mod decision;
mod gcra;
mod keyed;
#[cfg(feature = "redis")]
mod leased;
mod limiter;
mod local;
mod policy;
#[cfg(test)]
mod props;
mod quota;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::leased::{LeasedRateLimiter, LeasedRateLimiterBuilder};
#[cfg(feature = "redis")]
pub use self::redis::{RedisConnectError, RedisFailure, RedisRateLimiter, RedisRateLimiterBuilder};
pub use decision::Decision;
pub use gcra::Bucket;
pub(crate) use gcra::KeyBuckets;
pub(crate) use keyed::KeyedBuckets;
#[cfg(feature = "tower")]
pub(crate) use keyed::SHARDS;
pub use limiter::{LimiterUnavailable, RateLimiter};
pub use local::LocalRateLimiter;
pub use policy::{OpClass, RatePolicy};
pub use quota::{Quota, QuotaError};

/// `n` as a [`NonZeroU32`](std::num::NonZeroU32), for tests.
#[cfg(test)]
pub(crate) fn nz(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("a non-zero limit")
}
