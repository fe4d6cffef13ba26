//! Per-key rate limiting.
//!
//! This module decides whether a request made with an API key fits that key's
//! [`Quota`] for an operation class, using the generic cell rate algorithm
//! (GCRA): each key keeps one [`Bucket`] per class — a single atomic word
//! holding a theoretical arrival time — inside a [`KeyBuckets`] slot that the
//! service stores beside its cached key record, and [`LocalRateLimiter`]
//! checks it lock-free against a [`Clock`](crate::Clock), returning a
//! [`Decision`] with everything the `RateLimit-*` and `Retry-After` headers
//! need. The [`RateLimiter`] trait is the seam for limiters shared between
//! service instances; [`KeyedBuckets`] holds slots by key id for callers with
//! no cache of their own. Nothing here does I/O, except the Redis-backed
//! `RedisRateLimiter` (feature `redis`), which shares buckets between
//! instances.

mod decision;
mod gcra;
mod keyed;
mod limiter;
mod local;
mod policy;
mod quota;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::{RedisFailure, RedisRateLimiter, RedisRateLimiterBuilder};
pub use decision::Decision;
pub use gcra::{Bucket, KeyBuckets};
pub use keyed::KeyedBuckets;
pub use limiter::{LimiterUnavailable, RateLimiter};
pub use local::LocalRateLimiter;
pub use policy::{OpClass, RatePolicy};
pub use quota::{Quota, QuotaError};
