//! [`ApiKeysBuilder`]: checks a configuration and builds an [`ApiKeys`].

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{ApiKeys, Inner, Limiter};
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::hash::{Hasher, Pepper};
use crate::key::{FormatError, KeyFormat};
use crate::profiles::Profile;
use crate::ratelimit::{KeyedBuckets, LocalRateLimiter, RateLimiter};
use crate::store::{KeyStore, MemoryStore};

/// Builds an [`ApiKeys`]. See [`ApiKeys::builder`].
#[derive(Debug)]
pub struct ApiKeysBuilder {
    pub(super) profile: Profile,
    pub(super) store: Option<Arc<dyn KeyStore>>,
    pub(super) hasher: Option<Hasher>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) audit: Arc<dyn AuditSink>,
    pub(super) limiter: Option<Arc<dyn RateLimiter>>,
    #[cfg(feature = "sessions")]
    pub(super) sessions: Option<crate::session::Sessions>,
}

impl ApiKeysBuilder {
    /// Uses `store` instead of a fresh [`MemoryStore`]. A store other than a
    /// memory store needs a pepper ([`pepper`](Self::pepper) or [`hasher`](Self::hasher)).
    ///
    /// Pass a store by value, or an `Arc` of it to share it with other code or
    /// other services (`Arc<T>` and `Arc<dyn KeyStore>` are stores too):
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keygate::{profiles, ApiKeys, KeyStore, MemoryStore};
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let a = ApiKeys::builder(profiles::mailjawn()).store(Arc::clone(&store)).build().unwrap();
    /// let shared: Arc<dyn KeyStore> = store;
    /// let b = ApiKeys::builder(profiles::mailjawn()).store(shared).build().unwrap();
    /// ```
    pub fn store(mut self, store: impl KeyStore) -> Self {
        // An `Arc<dyn KeyStore>` is used as is rather than wrapped in a
        // second `Arc`, which would add a pointer hop to every store call.
        let any: &dyn std::any::Any = &store;
        self.store = Some(match any.downcast_ref::<Arc<dyn KeyStore>>() {
            Some(shared) => Arc::clone(shared),
            None => Arc::new(store),
        });
        self
    }

    /// Hashes with this pepper. Keep it outside the database.
    pub fn pepper(self, pepper: Pepper) -> Self {
        self.hasher(Hasher::new(pepper))
    }

    /// Hashes with this hasher (current pepper plus older ones).
    pub fn hasher(mut self, hasher: Hasher) -> Self {
        self.hasher = Some(hasher);
        self
    }

    /// Reads time from `clock` (use a [`ManualClock`](crate::ManualClock) in tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Takes rate-limit decisions from `limiter` (e.g. one shared through Redis)
    /// instead of the in-process [`LocalRateLimiter`].
    pub fn rate_limiter(mut self, limiter: impl RateLimiter + 'static) -> Self {
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// Sends audit events to `sink` instead of `tracing`.
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// Also accepts session tokens issued by `sessions` (feature `sessions`):
    /// [`ApiKeys::verify_session`] and the HTTP layer then take them beside
    /// API keys.
    #[cfg(feature = "sessions")]
    pub fn sessions(mut self, sessions: crate::session::Sessions) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Checks the configuration and builds the service.
    pub fn build(self) -> Result<ApiKeys, ConfigError> {
        let profile = self.profile;
        if profile.formats.is_empty() {
            return Err(FormatError::NoFormat.into());
        }
        for f in &profile.formats {
            f.validate()?;
        }
        let mut labels: Vec<&str> = profile.formats.iter().map(KeyFormat::label).collect();
        labels.sort_unstable();
        labels.dedup();
        if labels.len() != profile.formats.len() {
            return Err(ConfigError::Invalid("two key formats share a label".into()));
        }
        if let Some(b) = &profile.default_bundle {
            profile.catalog.bundle_set(b)?;
        }
        let management = profile.management_scopes();
        for scope in management.read.iter().chain(&management.write) {
            profile.catalog.requirement(scope)?;
        }
        if let Some(dup) = profile.rate_limits.duplicate() {
            return Err(ConfigError::Invalid(format!(
                "rate-limit class or method '{dup}' is defined twice"
            )));
        }
        let (store, hasher) = match (self.store, self.hasher) {
            (None, hasher) => (
                Arc::new(MemoryStore::new()) as Arc<dyn KeyStore>,
                hasher.unwrap_or_else(Hasher::ephemeral),
            ),
            (Some(store), Some(hasher)) => (store, hasher),
            (Some(store), None) if !store.is_persistent() => (store, Hasher::ephemeral()),
            (Some(_), None) => return Err(ConfigError::MissingPepper),
        };
        #[cfg(feature = "metrics")]
        let given_store = Arc::clone(&store);
        #[cfg(feature = "metrics")]
        let store: Arc<dyn KeyStore> = Arc::new(crate::store::metered::MeteredStore::new(store));
        let labels = crate::telemetry::Labels::new(&profile);
        let limiter = match self.limiter {
            Some(shared) => Limiter::Shared(shared),
            None => Limiter::Local(LocalRateLimiter::new(Arc::clone(&self.clock))),
        };
        Ok(ApiKeys {
            inner: Arc::new(Inner {
                catalog: Arc::new(profile.catalog.clone()),
                profile,
                store,
                #[cfg(feature = "metrics")]
                given_store,
                hasher,
                clock: self.clock,
                audit: self.audit,
                pending: Mutex::new(HashMap::new()),
                rehash: Mutex::new(HashMap::new()),
                limiter,
                detached: KeyedBuckets::new(),
                checks: AtomicU64::new(0),
                labels,
                #[cfg(feature = "sessions")]
                sessions: self.sessions,
            }),
        })
    }
}
