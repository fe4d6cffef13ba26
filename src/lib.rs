//! keygate: API keys for Rust services.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub use clock::{Clock, ManualClock, SystemClock};
