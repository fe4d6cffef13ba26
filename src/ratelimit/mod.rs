//! placeholder
#![allow(missing_docs)]
use serde::{Deserialize, Serialize};
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    limit: u32,
}
#[derive(Debug)]
pub struct KeyBuckets;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
}
