//! keygate: API keys for Rust services.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod ratelimit;
pub use clock::{Clock, ManualClock, SystemClock};
pub use ratelimit::{
    Bucket, Decision, KeyBuckets, KeyedBuckets, LimiterUnavailable, LocalRateLimiter, Quota,
    QuotaError, RateLimiter,
};
