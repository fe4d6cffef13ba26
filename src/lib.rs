//! keygate: API keys for Rust services.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod clock;
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod flusher;
pub mod hash;
pub mod key;
pub mod profiles;
pub mod ratelimit;
pub mod scope;
mod service;
pub mod store;

pub use audit::{AuditEvent, AuditKind, AuditSink, MemoryAudit, TracingAudit};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AuthError, ConfigError, Error};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use flusher::LastUsedFlusher;
pub use hash::{Hasher, Pepper};
pub use key::{Credential, KeyFormat, MalformedReason, PairFormat, PlaintextKey, TokenFormat};
pub use profiles::{CredentialSource, Profile};
pub use scope::{Requirement, ScopeCatalog, ScopeSet};
pub use service::{
    ApiKeys, ApiKeysBuilder, CreateKey, KeyInfo, ListOptions, NewKey, Page, Principal, Rotation,
    MAX_NAME_LEN, MAX_PAGE_SIZE,
};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{AccountId, KeyId, KeyStore, MemoryStore, StoreError};
