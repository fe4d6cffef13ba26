//! [`ApiKeys`]: the facade a service calls to create, verify, list, revoke,
//! rotate and reset keys.
//!
//! The module is split by concern: [`builder`](ApiKeysBuilder) configuration,
//! the verify hot path (`verify.rs`, small and alone), the principal and
//! operation types, key management through an actor-scoped [`Manager`], and
//! accounts and the authorization rules ([`Actor`]).
//!
//! Verify parses the presented key (no I/O for garbage), finds the stored
//! candidates by lookup id, compares hashes in constant time, checks revocation
//! and expiry, and returns a [`Principal`]. Every management call has an
//! [`Actor`]: a trusted operator, an account, or a verified key. An account or
//! key reaches only its own account and its sub-accounts (anything else is
//! [`Error::NotFound`], exactly like a missing resource), and a key never
//! grants more than it holds.

mod accounts;
mod bootstrap;
mod builder;
mod identities;
mod manage;
mod principal;
mod rehash;
#[cfg(feature = "sessions")]
mod session;
mod update;
mod usage;
mod verify;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;
use time::OffsetDateTime;

use crate::audit::{AuditSink, TracingAudit};
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::hash::Hasher;
use crate::profiles::Profile;
use crate::ratelimit::{KeyedBuckets, LocalRateLimiter, RateLimiter};
use crate::store::{KeyId, KeyStore};

pub use accounts::Actor;
pub use bootstrap::BootstrapKey;
pub use builder::ApiKeysBuilder;
pub use identities::{CreateIdentity, IdentityUpdate};
pub use manage::{
    CreateKey, KeyInfo, ListOptions, Manager, NewKey, NewKeyResponse, Page, Rotation, MAX_NAME_LEN,
    MAX_PAGE_SIZE, MAX_REQUEST_LIMITS, MAX_REQUEST_SCOPES,
};
pub use principal::{CredentialKind, Operation, Principal};
pub use update::KeyUpdate;

/// The API-key service: create, verify, list, revoke, rotate, reset.
///
/// Cheap to clone (one `Arc`); share one per process.
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

struct Inner {
    profile: Profile,
    /// The profile's catalog, shared with the operations made from it.
    catalog: Arc<crate::scope::ScopeCatalog>,
    store: Arc<dyn KeyStore>,
    /// The store as given to the builder (`store` times it with `metrics`).
    #[cfg(feature = "metrics")]
    given_store: Arc<dyn KeyStore>,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditSink>,
    pending: Mutex<HashMap<KeyId, OffsetDateTime>>,
    /// Re-hashes under the current pepper, written behind like `pending`.
    rehash: Mutex<HashMap<KeyId, crate::store::Rehash>>,
    limiter: Limiter,
    /// Rate-limit slots for stores whose entries do not outlive one lookup.
    detached: KeyedBuckets,
    checks: AtomicU64,
    /// Metric label values, computed once.
    labels: crate::telemetry::Labels,
    /// Session tokens accepted beside keys.
    #[cfg(feature = "sessions")]
    sessions: Option<crate::session::Sessions>,
}

/// The in-process limiter is called directly (no boxed future on the hot path).
enum Limiter {
    Local(LocalRateLimiter),
    Shared(Arc<dyn RateLimiter>),
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("profile", &self.inner.profile.name)
            .field("store", &self.inner.store)
            .field("hasher", &self.inner.hasher)
            .finish_non_exhaustive()
    }
}

/// How many rate-limit checks pass between sweeps of idle detached slots.
const SWEEP_EVERY: u64 = 1 << 16;

impl ApiKeys {
    /// Starts building a service for `profile`. Defaults: a
    /// [`MemoryStore`](crate::MemoryStore), a random pepper (fine for memory;
    /// set one for persistent stores), the system clock and `tracing` audit
    /// events.
    pub fn builder(profile: Profile) -> ApiKeysBuilder {
        ApiKeysBuilder {
            profile,
            store: None,
            hasher: None,
            clock: Arc::new(SystemClock::new()),
            audit: Arc::new(TracingAudit),
            limiter: None,
            #[cfg(feature = "sessions")]
            sessions: None,
        }
    }

    /// A service for `profile` on a fresh [`MemoryStore`](crate::MemoryStore).
    pub fn in_memory(profile: Profile) -> Result<Self, ConfigError> {
        Self::builder(profile).build()
    }

    /// The profile this service enforces.
    pub fn profile(&self) -> &Profile {
        &self.inner.profile
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        #[cfg(feature = "metrics")]
        return &self.inner.given_store;
        #[cfg(not(feature = "metrics"))]
        &self.inner.store
    }

    /// The clock this service reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
}
