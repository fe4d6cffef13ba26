//! [`ApiKeys`]: the facade a service calls to create, verify, list, revoke,
//! rotate and reset keys.
//!
//! Verify parses the presented key (no I/O for garbage), finds the stored
//! candidates by lookup id, compares hashes in constant time, checks revocation
//! and expiry, and returns a [`Principal`]. Management calls take the *actor*,
//! the account asking: an account manages its own keys, and a parent account
//! manages its sub-accounts' keys; anything else is [`Error::NotFound`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditKind, AuditSink, TracingAudit};
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, ConfigError, Error};
use crate::hash::{Hasher, Pepper};
use crate::key::{Credential, FormatError, KeyFormat, MalformedReason, PlaintextKey};
use crate::profiles::Profile;
use crate::ratelimit::{Decision, KeyBuckets, KeyedBuckets, LocalRateLimiter, Quota, RateLimiter};
use crate::scope::{Requirement, ScopeSet};
use crate::store::{
    AccountId, AccountRecord, KeyEntry, KeyId, KeyRecord, KeyStore, ListQuery, MemoryStore, OldKey,
};

/// Longest key name accepted, in characters.
pub const MAX_NAME_LEN: usize = 200;

/// Most keys one list page returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// How many times creation retries when a profile wants unique lookup ids.
const LOOKUP_RETRIES: usize = 8;

/// What a new key should be: its name and what it may do.
///
/// ```
/// use keygate::CreateKey;
/// let request = CreateKey::new("Production SDK").bundle("sdk");
/// ```
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    name: String,
    bundle: Option<String>,
    scopes: Vec<String>,
    expires_at: Option<OffsetDateTime>,
    format: Option<String>,
    rate_limits: Vec<(String, Quota)>,
}

impl CreateKey {
    /// A request for a key labelled `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Grants a named bundle of scopes.
    pub fn bundle(mut self, bundle: impl Into<String>) -> Self {
        self.bundle = Some(bundle.into());
        self
    }

    /// Grants scopes by name or wildcard, in addition to any bundle.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Makes the key stop working at `at`.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Chooses a key format by label (e.g. `mk_test_`) instead of the profile's first.
    pub fn format(mut self, label: impl Into<String>) -> Self {
        self.format = Some(label.into());
        self
    }

    /// Overrides the profile's rate limit for one operation class on this key.
    pub fn rate_limit(mut self, class: impl Into<String>, quota: Quota) -> Self {
        self.rate_limits.push((class.into(), quota));
        self
    }
}

/// What happens to the old key when a key is rotated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rotation {
    /// The old key stops working at once.
    #[default]
    Immediate,
    /// The old key keeps working for this long, then expires.
    Grace(Duration),
}

/// A key as shown to its owner: never the secret, only the redacted lookup id
/// (and, for key pairs, the public API key, which is always visible).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: KeyId,
    /// The owning account.
    pub account: AccountId,
    /// The label given at creation.
    pub name: String,
    /// The lookup id followed by an ellipsis.
    pub redacted: String,
    /// For key pairs, the public API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The key format's label.
    pub format: String,
    /// The bundle chosen at creation.
    pub bundle: Option<String>,
    /// Extra scopes granted at creation.
    pub scopes: Vec<String>,
    /// Per-class rate-limit overrides.
    pub rate_limits: HashMap<String, Quota>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it expires, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it last verified successfully.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl KeyInfo {
    fn from_record(r: KeyRecord) -> Self {
        let public_key = (r.format == "pair").then(|| r.lookup.clone());
        Self {
            redacted: r.redacted(),
            public_key,
            id: r.id,
            account: r.account,
            name: r.name,
            format: r.format,
            bundle: r.bundle,
            scopes: r.scopes,
            rate_limits: r.rate_limits.into_iter().collect(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }

    /// True when the key is neither revoked nor expired at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A newly created (or reset) key: the plaintext, shown this once, and its info.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The plaintext. Hand it to the user now; it cannot be recovered.
    pub key: PlaintextKey,
    /// The stored key's public view.
    pub info: KeyInfo,
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    /// The keys on this page.
    pub data: Vec<KeyInfo>,
    /// Pass as [`ListOptions::after`] to get the next page; `None` on the last page.
    pub next: Option<KeyId>,
}

/// Options for [`ApiKeys::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// Include revoked keys.
    pub include_revoked: bool,
    /// Continue after this key id (from [`Page::next`]).
    pub after: Option<KeyId>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`].
    pub limit: usize,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            include_revoked: false,
            after: None,
            limit: 100,
        }
    }
}

/// What a request does, for [`ApiKeys::verify_for`]: the operation class it
/// counts against and, optionally, the scopes it needs. Build it once per route.
///
/// ```
/// # fn main() -> Result<(), keygate::Error> {
/// let api = keygate::ApiKeys::in_memory(keygate::profiles::mailjawn()).unwrap();
/// let send = api.operation("send")?.require(&api, "emails:send")?;
/// let list = api.operation_for_method("GET").require(&api, "subscribers:read")?;
/// assert_eq!(send.class(), Some("send"));
/// assert_eq!(list.class(), Some("read"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    class: Option<(usize, String)>,
    requirement: Option<Requirement>,
}

impl Operation {
    /// An operation that is neither rate limited nor scope checked.
    pub fn unrestricted() -> Self {
        Self {
            class: None,
            requirement: None,
        }
    }

    /// Adds a scope requirement from `api`'s catalog.
    pub fn require(self, api: &ApiKeys, scope: &str) -> Result<Self, Error> {
        Ok(self.with_requirement(api.requirement(scope)?))
    }

    /// Adds a prepared requirement (one scope, all of, any of).
    pub fn with_requirement(mut self, requirement: Requirement) -> Self {
        self.requirement = Some(requirement);
        self
    }

    /// The operation class name, if the request is rate limited.
    pub fn class(&self) -> Option<&str> {
        self.class.as_ref().map(|(_, n)| n.as_str())
    }

    /// The scope requirement, if any.
    pub fn requirement(&self) -> Option<&Requirement> {
        self.requirement.as_ref()
    }
}

/// The authenticated caller: which key, which account, what it may do.
#[derive(Clone)]
pub struct Principal {
    entry: Arc<KeyEntry>,
    scopes: ScopeSet,
    rate_limit: Option<Decision>,
}

impl Principal {
    /// The key that authenticated.
    pub fn key_id(&self) -> &KeyId {
        &self.entry.record().id
    }

    /// The account the key belongs to.
    pub fn account(&self) -> &AccountId {
        &self.entry.record().account
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.entry.record().name
    }

    /// The bundle chosen at creation, if any.
    pub fn bundle(&self) -> Option<&str> {
        self.entry.record().bundle.as_deref()
    }

    /// The key format's label (e.g. `mk_live_`).
    pub fn format(&self) -> &str {
        &self.entry.record().format
    }

    /// The compiled scopes.
    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }

    /// The rate-limit decision taken for this request, if its operation class
    /// is limited: the values for `RateLimit-*` response headers.
    pub fn rate_limit(&self) -> Option<&Decision> {
        self.rate_limit.as_ref()
    }

    /// Checks a requirement; [`AuthError::Forbidden`] (403) when unmet.
    pub fn require(&self, requirement: &Requirement) -> Result<(), AuthError> {
        if self.scopes.satisfies(requirement) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                required: requirement.label().to_owned(),
            })
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("key_id", self.key_id())
            .field("account", self.account())
            .field("bundle", &self.bundle())
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Builds an [`ApiKeys`]. See [`ApiKeys::builder`].
#[derive(Debug)]
pub struct ApiKeysBuilder {
    profile: Profile,
    store: Option<Arc<dyn KeyStore>>,
    hasher: Option<Hasher>,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditSink>,
    limiter: Option<Arc<dyn RateLimiter>>,
}

impl ApiKeysBuilder {
    /// Uses `store` instead of a fresh [`MemoryStore`]. A store other than a
    /// memory store needs a pepper ([`pepper`](Self::pepper) or [`hasher`](Self::hasher)).
    pub fn store(self, store: impl KeyStore) -> Self {
        self.shared_store(Arc::new(store))
    }

    /// Uses a store shared with other code (or other `ApiKeys`).
    pub fn shared_store(mut self, store: Arc<dyn KeyStore>) -> Self {
        self.store = Some(store);
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
            (Some(store), None) if !store.needs_last_used_flush() => (store, Hasher::ephemeral()),
            (Some(_), None) => return Err(ConfigError::MissingPepper),
        };
        let limiter = match self.limiter {
            Some(shared) => Limiter::Shared(shared),
            None => Limiter::Local(LocalRateLimiter::new(Arc::clone(&self.clock))),
        };
        Ok(ApiKeys {
            inner: Arc::new(Inner {
                profile,
                store,
                hasher,
                clock: self.clock,
                audit: self.audit,
                pending: Mutex::new(HashMap::new()),
                limiter,
                detached: KeyedBuckets::new(),
                checks: AtomicU64::new(0),
            }),
        })
    }
}

/// The API-key service: create, verify, list, revoke, rotate, reset.
///
/// Cheap to clone (one `Arc`); share one per process.
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

struct Inner {
    profile: Profile,
    store: Arc<dyn KeyStore>,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditSink>,
    pending: Mutex<HashMap<KeyId, OffsetDateTime>>,
    limiter: Limiter,
    /// Rate-limit slots for stores whose entries do not outlive one lookup.
    detached: KeyedBuckets,
    checks: AtomicU64,
}

/// The in-process limiter is called directly (no boxed future on the hot path).
enum Limiter {
    Local(LocalRateLimiter),
    Shared(Arc<dyn RateLimiter>),
}

/// How many rate-limit checks pass between sweeps of idle detached slots.
const SWEEP_EVERY: u64 = 1 << 16;

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("profile", &self.inner.profile.name)
            .field("store", &self.inner.store)
            .field("hasher", &self.inner.hasher)
            .finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// Starts building a service for `profile`. Defaults: a [`MemoryStore`], a
    /// random pepper (fine for memory; set one for persistent stores), the
    /// system clock and `tracing` audit events.
    pub fn builder(profile: Profile) -> ApiKeysBuilder {
        ApiKeysBuilder {
            profile,
            store: None,
            hasher: None,
            clock: Arc::new(SystemClock::new()),
            audit: Arc::new(TracingAudit),
            limiter: None,
        }
    }

    /// A service for `profile` on a fresh [`MemoryStore`].
    pub fn in_memory(profile: Profile) -> Result<Self, ConfigError> {
        Self::builder(profile).build()
    }

    /// The profile this service enforces.
    pub fn profile(&self) -> &Profile {
        &self.inner.profile
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// The clock this service reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    // ----- verify ---------------------------------------------------------

    /// Parses a presented key against the profile's formats, without I/O.
    /// Pairs are given as `public:secret`.
    pub fn parse<'a>(&self, presented: &'a str) -> Result<Credential<'a>, AuthError> {
        let mut reason = MalformedReason::Empty;
        for (i, format) in self.inner.profile.formats.iter().enumerate() {
            match format.parse(presented) {
                Ok(c) => return Ok(c.with_format(i)),
                Err(r) => {
                    // Report the most specific reason: one past the prefix check wins.
                    if i == 0 || !matches!(r, MalformedReason::Prefix | MalformedReason::Length) {
                        reason = r;
                    }
                }
            }
        }
        Err(AuthError::Malformed { reason })
    }

    /// Verifies a presented key and returns who it belongs to.
    ///
    /// Malformed input is rejected before any hashing or store access; an
    /// unreachable store is [`AuthError::Unavailable`], never success.
    pub async fn verify(&self, presented: &str) -> Result<Principal, AuthError> {
        let credential = self.parse(presented)?;
        self.verify_credential(credential).await
    }

    /// Verifies a key pair given as two values (e.g. SMTP username and password).
    pub async fn verify_pair(&self, public: &str, secret: &str) -> Result<Principal, AuthError> {
        let mut reason = MalformedReason::Prefix;
        for (i, format) in self.inner.profile.formats.iter().enumerate() {
            if let KeyFormat::Pair(p) = format {
                match p.parse_parts(public, secret) {
                    Ok(c) => return self.verify_credential(c.with_format(i)).await,
                    Err(r) => reason = r,
                }
            }
        }
        Err(AuthError::Malformed { reason })
    }

    /// Verifies an already parsed credential.
    pub async fn verify_credential(
        &self,
        credential: Credential<'_>,
    ) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        let candidates = inner
            .store
            .find_by_lookup(credential.lookup())
            .await
            .map_err(|e| {
                tracing::warn!(target: "keygate", error = %e, "key store failed during verify");
                AuthError::Unavailable
            })?;
        let secret = credential.expose_secret();
        let entry = candidates
            .into_iter()
            .find(|e| inner.hasher.verify(secret, &e.record().hash))
            .ok_or(AuthError::Invalid)?;
        let now = inner.clock.now();
        let record = entry.record();
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        if entry.touch(now) && inner.store.needs_last_used_flush() {
            inner.pending.lock().insert(record.id.clone(), now);
        }
        let scopes = *entry.scopes.get_or_init(|| {
            inner
                .profile
                .catalog
                .compile_grant(record.bundle.as_deref(), &record.scopes)
                .unwrap_or_else(|e| {
                    tracing::warn!(target: "keygate", key_id = %record.id, error = %e,
                        "stored scopes no longer compile; granting none");
                    ScopeSet::EMPTY
                })
        });
        Ok(Principal {
            entry,
            scopes,
            rate_limit: None,
        })
    }

    /// The operation for a named class (e.g. `send`, `mcp`). A profile without
    /// rate limits accepts any name and limits nothing; otherwise an unknown
    /// name is an error, so a typo cannot switch limiting off.
    pub fn operation(&self, class: &str) -> Result<Operation, Error> {
        let policy = &self.inner.profile.rate_limits;
        if policy.is_empty() {
            return Ok(Operation::unrestricted());
        }
        let index = policy
            .index_of(class)
            .ok_or_else(|| Error::Invalid(format!("unknown operation class '{class}'")))?;
        Ok(Operation {
            class: Some((index, class.to_owned())),
            requirement: None,
        })
    }

    /// The operation an HTTP method falls into by default (GET → `read`,
    /// POST → `write` for MailJawn); unlimited if no class claims the method.
    pub fn operation_for_method(&self, method: &str) -> Operation {
        let policy = &self.inner.profile.rate_limits;
        Operation {
            class: policy
                .class_for_method(method)
                .and_then(|i| Some((i, policy.get(i)?.name().to_owned()))),
            requirement: None,
        }
    }

    /// Verifies a key, takes one rate-limit token from its bucket for the
    /// operation's class, then checks the operation's scopes.
    ///
    /// Over the limit is [`AuthError::RateLimited`] (429) with the decision for
    /// the response headers; an unreachable shared limiter is
    /// [`AuthError::Unavailable`] (503). On success the decision is on the
    /// principal ([`Principal::rate_limit`]).
    pub async fn verify_for(
        &self,
        presented: &str,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        let principal = self.verify(presented).await?;
        self.admit(principal, operation).await
    }

    /// [`verify_for`](Self::verify_for) for an already verified principal:
    /// takes the rate-limit token and checks scopes.
    pub async fn admit(
        &self,
        mut principal: Principal,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        if let Some((index, name)) = &operation.class {
            let decision = self.take_token(&principal.entry, *index, name).await?;
            if !decision.allowed {
                return Err(AuthError::RateLimited { decision });
            }
            principal.rate_limit = Some(decision);
        }
        if let Some(req) = &operation.requirement {
            principal.require(req)?;
        }
        Ok(principal)
    }

    async fn take_token(
        &self,
        entry: &Arc<KeyEntry>,
        index: usize,
        class: &str,
    ) -> Result<Decision, AuthError> {
        let inner = &*self.inner;
        let policy = &inner.profile.rate_limits;
        let record = entry.record();
        let quota = record
            .rate_limits
            .iter()
            .find(|(name, _)| name == class)
            .map(|(_, q)| q)
            .or_else(|| policy.get(index).map(|c| c.quota()))
            .ok_or(AuthError::Unavailable)?;
        let slot = entry.buckets.get_or_init(|| {
            if inner.store.keeps_entries() {
                Arc::new(KeyBuckets::new(policy.len()))
            } else {
                self.sweep_detached();
                inner
                    .detached
                    .get_or_insert(record.id.as_str(), policy.len())
            }
        });
        let result = match &inner.limiter {
            Limiter::Local(local) => local.check_now(slot, index, quota),
            Limiter::Shared(shared) => {
                shared
                    .check(record.id.as_str(), slot, index, class, quota)
                    .await
            }
        };
        result.map_err(|e| {
            tracing::warn!(target: "keygate", error = %e, "rate limiter failed");
            AuthError::Unavailable
        })
    }

    /// Drops idle detached slots now and then, so memory stays bounded by the
    /// keys in recent use.
    fn sweep_detached(&self) {
        let inner = &*self.inner;
        if inner.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            inner.detached.evict_idle(inner.clock.monotonic_nanos());
        }
    }

    /// Builds a requirement for one scope from the profile's catalog.
    pub fn requirement(&self, scope: &str) -> Result<Requirement, Error> {
        Ok(self.inner.profile.catalog.require(scope)?)
    }

    /// Checks that `principal` holds `scope`: [`AuthError::Forbidden`] (403) if not.
    /// A scope the catalog does not define is never held.
    pub fn require(&self, principal: &Principal, scope: &str) -> Result<(), AuthError> {
        match self.inner.profile.catalog.require(scope) {
            Ok(req) => principal.require(&req),
            Err(_) => Err(AuthError::Forbidden {
                required: scope.to_owned(),
            }),
        }
    }

    /// Writes the last-used times recorded since the previous flush to the
    /// store in one batch; returns how many keys were written. Call it on an
    /// interval and at shutdown (the memory store needs no flush).
    pub async fn flush_last_used(&self) -> Result<usize, Error> {
        let batch: Vec<(KeyId, OffsetDateTime)> = self.inner.pending.lock().drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.inner.store.record_last_used(&batch).await {
            // Put them back so the next flush retries; newer stamps win.
            let mut pending = self.inner.pending.lock();
            for (id, at) in batch {
                let slot = pending.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }

    // ----- accounts -------------------------------------------------------

    /// Registers `sub` as a sub-account of `parent`. The parent can then create,
    /// list and revoke the sub-account's keys.
    pub async fn create_sub_account(
        &self,
        parent: &AccountId,
        sub: &AccountId,
    ) -> Result<(), Error> {
        if parent == sub {
            return Err(Error::Invalid(
                "an account cannot be its own sub-account".into(),
            ));
        }
        self.inner
            .store
            .create_account(AccountRecord {
                id: sub.clone(),
                parent: Some(parent.clone()),
                created_at: self.inner.clock.now(),
            })
            .await?;
        Ok(())
    }

    /// Checks that `actor` may manage `account`'s keys: itself or its parent.
    async fn authorize(&self, actor: &AccountId, account: &AccountId) -> Result<(), Error> {
        if actor == account {
            return Ok(());
        }
        match self.inner.store.get_account(account).await? {
            Some(a) if a.parent.as_ref() == Some(actor) => Ok(()),
            _ => Err(Error::NotFound),
        }
    }

    /// Loads a key that `actor` may manage; [`Error::NotFound`] otherwise.
    async fn owned_key(&self, actor: &AccountId, id: &KeyId) -> Result<Arc<KeyEntry>, Error> {
        let entry = self.inner.store.get_key(id).await?.ok_or(Error::NotFound)?;
        self.authorize(actor, &entry.record().account).await?;
        Ok(entry)
    }

    fn audit(&self, kind: AuditKind, record: &KeyRecord, actor: &AccountId) {
        self.inner.audit.record(&AuditEvent {
            kind,
            key_id: record.id.clone(),
            account: record.account.clone(),
            actor: actor.clone(),
            at: self.inner.clock.now(),
        });
    }

    // ----- management -----------------------------------------------------

    /// Creates a key for `account` and returns its plaintext, this once.
    ///
    /// Fails with [`Error::KeyLimitReached`] past the profile's per-account
    /// limit and with [`Error::Scope`] naming an unknown scope or bundle.
    pub async fn create(&self, account: &AccountId, request: CreateKey) -> Result<NewKey, Error> {
        self.create_for(account, account, request).await
    }

    /// Creates a key for `account` on behalf of `actor` (the account itself or
    /// its parent).
    pub async fn create_for(
        &self,
        actor: &AccountId,
        account: &AccountId,
        request: CreateKey,
    ) -> Result<NewKey, Error> {
        self.authorize(actor, account).await?;
        let inner = &*self.inner;
        let now = inner.clock.now();
        let checked = self.check_request(&request, now)?;
        let format = match &request.format {
            Some(label) => inner
                .profile
                .format(label)
                .map(|(_, f)| f)
                .ok_or_else(|| Error::Invalid(format!("unknown key format '{label}'")))?,
            None => &inner.profile.formats[0],
        };
        let key = self.generate(format).await?;
        let info = self
            .insert_new(actor, account, checked, format, key.credential(), now)
            .await?;
        Ok(NewKey { key, info })
    }

    /// Builds the record for a validated request and a credential, inserts it
    /// under the profile's key limit and records the audit event.
    async fn insert_new(
        &self,
        actor: &AccountId,
        account: &AccountId,
        checked: Checked,
        format: &KeyFormat,
        credential: Credential<'_>,
        now: OffsetDateTime,
    ) -> Result<KeyInfo, Error> {
        let inner = &*self.inner;
        let record = KeyRecord {
            id: KeyId::generate(now),
            account: account.clone(),
            name: checked.name,
            format: format.label().to_owned(),
            lookup: credential.lookup().to_owned(),
            hash: inner.hasher.hash(credential.expose_secret()),
            bundle: checked.bundle,
            scopes: checked.scopes,
            rate_limits: checked.rate_limits,
            created_at: now,
            expires_at: checked.expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        inner
            .store
            .insert_key(record.clone(), inner.profile.key_limit, now)
            .await?;
        self.audit(AuditKind::Created, &record, actor);
        Ok(KeyInfo::from_record(record))
    }

    /// Checks a create or import request against the profile: the name, the
    /// grant (the default bundle when none is chosen), the rate-limit classes
    /// and the expiry. Returns the name, bundle and scopes to store.
    fn check_request(&self, request: &CreateKey, now: OffsetDateTime) -> Result<Checked, Error> {
        let profile = &self.inner.profile;
        let name = validate_name(&request.name)?;
        let (bundle, scopes) = match (&request.bundle, request.scopes.is_empty()) {
            (None, true) => match &profile.default_bundle {
                Some(b) => (Some(b.clone()), Vec::new()),
                None => {
                    return Err(Error::Invalid(
                        "choose a bundle or at least one scope".into(),
                    ))
                }
            },
            (bundle, _) => (bundle.clone(), request.scopes.clone()),
        };
        profile.catalog.compile_grant(bundle.as_deref(), &scopes)?;
        for (class, _) in &request.rate_limits {
            if profile.rate_limits.index_of(class).is_none() {
                return Err(Error::Invalid(format!("unknown operation class '{class}'")));
            }
        }
        if request.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::Invalid("expires_at must be in the future".into()));
        }
        Ok(Checked {
            name,
            bundle,
            scopes,
            rate_limits: request.rate_limits.clone(),
            expires_at: request.expires_at,
        })
    }

    /// Stores a key issued elsewhere (kept in a secret manager, or migrated
    /// from another system) for `account`, so it verifies like a key created
    /// here. `plaintext` must parse with one of the profile's formats (a key
    /// pair as `public:secret`); only its hash is stored, and the plaintext is
    /// never returned.
    ///
    /// Fails with [`Error::Invalid`] when the key is malformed (the message
    /// gives the reason, never the key), [`Error::Conflict`] when it is already
    /// stored (or its lookup id is taken where the profile wants unique ones),
    /// and like [`create`](Self::create) otherwise.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey, KeyFormat};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let admin = AccountId::new("org_admin")?;
    /// let kept = api.profile().formats[0].generate(); // e.g. read from a secret manager
    /// let info = api
    ///     .import(&admin, kept.expose_secret(), CreateKey::new("admin").bundle("full_access"))
    ///     .await?;
    /// assert_eq!(api.verify(kept.expose_secret()).await?.key_id(), &info.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn import(
        &self,
        account: &AccountId,
        plaintext: &str,
        request: CreateKey,
    ) -> Result<KeyInfo, Error> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let credential = self.parse(plaintext).map_err(|e| match e {
            AuthError::Malformed { reason } => Error::Invalid(format!(
                "the key does not match this profile's key formats: {reason}"
            )),
            other => Error::Invalid(other.to_string()),
        })?;
        let checked = self.check_request(&request, now)?;
        let format = &inner.profile.formats[credential.format_index()];
        if let Some(label) = &request.format {
            if label != format.label() {
                return Err(Error::Invalid(format!(
                    "the key is not in the requested format '{label}'"
                )));
            }
        }
        let secret = credential.expose_secret();
        let candidates = inner.store.find_by_lookup(credential.lookup()).await?;
        if candidates
            .iter()
            .any(|e| inner.hasher.verify(secret, &e.record().hash))
        {
            return Err(Error::Conflict("this key is already stored".into()));
        }
        if inner.profile.unique_lookup && !candidates.is_empty() {
            return Err(Error::Conflict("the key's lookup id is in use".into()));
        }
        self.insert_new(account, account, checked, format, credential, now)
            .await
    }

    /// Generates a key, retrying while its lookup id is taken if the profile
    /// asks for unique lookups.
    async fn generate(&self, format: &KeyFormat) -> Result<PlaintextKey, Error> {
        for _ in 0..LOOKUP_RETRIES {
            let key = format.generate();
            if !self.inner.profile.unique_lookup
                || self
                    .inner
                    .store
                    .find_by_lookup(key.lookup())
                    .await?
                    .is_empty()
            {
                return Ok(key);
            }
        }
        Err(Error::Conflict("could not find an unused lookup id".into()))
    }

    /// Lists `account`'s keys (redacted, never the secret).
    pub async fn list(&self, account: &AccountId, options: ListOptions) -> Result<Page, Error> {
        self.list_for(account, account, options).await
    }

    /// Lists `account`'s keys on behalf of `actor` (itself or its parent).
    pub async fn list_for(
        &self,
        actor: &AccountId,
        account: &AccountId,
        options: ListOptions,
    ) -> Result<Page, Error> {
        self.authorize(actor, account).await?;
        if options.limit == 0 || options.limit > MAX_PAGE_SIZE {
            return Err(Error::Invalid(format!(
                "page size must be 1 to {MAX_PAGE_SIZE}"
            )));
        }
        let query = ListQuery {
            include_revoked: options.include_revoked,
            after: options.after,
            limit: options.limit,
        };
        let records = self.inner.store.list_keys(account, &query).await?;
        let next = (records.len() == options.limit)
            .then(|| records.last().map(|r| r.id.clone()))
            .flatten();
        Ok(Page {
            data: records.into_iter().map(KeyInfo::from_record).collect(),
            next,
        })
    }

    /// One key's info, if `actor` may see it.
    pub async fn get(&self, actor: &AccountId, id: &KeyId) -> Result<KeyInfo, Error> {
        let entry = self.owned_key(actor, id).await?;
        Ok(KeyInfo::from_record(entry.snapshot()))
    }

    /// Revokes a key at once: the next verify fails with [`AuthError::Revoked`].
    /// The record is kept for audit. Revoking twice is not an error.
    pub async fn revoke(&self, actor: &AccountId, id: &KeyId) -> Result<(), Error> {
        let entry = self.owned_key(actor, id).await?;
        if entry.record().revoked_at.is_some() {
            return Ok(());
        }
        self.inner
            .store
            .revoke_key(id, self.inner.clock.now())
            .await?;
        self.forget_limits(id);
        self.audit(AuditKind::Revoked, entry.record(), actor);
        Ok(())
    }

    fn forget_limits(&self, id: &KeyId) {
        self.inner.detached.remove(id.as_str());
        if let Limiter::Shared(shared) = &self.inner.limiter {
            shared.forget(id.as_str());
        }
    }

    /// Replaces a key with a new one of the same name, format, scopes, limits
    /// and expiry. The old key stops working at once or after a grace period.
    pub async fn rotate(
        &self,
        actor: &AccountId,
        id: &KeyId,
        rotation: Rotation,
    ) -> Result<NewKey, Error> {
        let old = self.owned_key(actor, id).await?;
        let old = old.record();
        if old.revoked_at.is_some() {
            return Err(Error::Revoked);
        }
        let inner = &*self.inner;
        let now = inner.clock.now();
        let format = inner
            .profile
            .format(&old.format)
            .map(|(_, f)| f)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "key format '{}' is no longer configured",
                    old.format
                ))
            })?;
        let key = self.generate(format).await?;
        let record = KeyRecord {
            id: KeyId::generate(now),
            lookup: key.lookup().to_owned(),
            hash: inner.hasher.hash(key.expose_secret()),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            ..old.clone()
        };
        let old_key = match rotation {
            Rotation::Immediate => OldKey::RevokeAt(now),
            Rotation::Grace(d) => OldKey::ExpireAt(now + d),
        };
        inner.store.rotate_key(id, record.clone(), old_key).await?;
        if rotation == Rotation::Immediate {
            self.forget_limits(id);
        }
        self.audit(
            AuditKind::Rotated {
                replacement: record.id.clone(),
            },
            old,
            actor,
        );
        Ok(NewKey {
            key,
            info: KeyInfo::from_record(record),
        })
    }

    /// Issues a new secret under the same key id; the old secret fails at once.
    /// Key pairs keep their public key (Mailjet's "reset secret key"); single
    /// tokens get a whole new token.
    pub async fn reset_secret(&self, actor: &AccountId, id: &KeyId) -> Result<NewKey, Error> {
        let entry = self.owned_key(actor, id).await?;
        let record = entry.record();
        if record.revoked_at.is_some() {
            return Err(Error::Revoked);
        }
        let format = self
            .inner
            .profile
            .format(&record.format)
            .map(|(_, f)| f)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "key format '{}' is no longer configured",
                    record.format
                ))
            })?;
        let key = match format {
            KeyFormat::Pair(p) => {
                PlaintextKey::pair(record.lookup.clone(), p.generate_secret_text())
            }
            KeyFormat::Token(_) => self.generate(format).await?,
        };
        let hash = self.inner.hasher.hash(key.expose_secret());
        self.inner
            .store
            .replace_secret(id, key.lookup(), hash.clone())
            .await?;
        self.audit(AuditKind::SecretReset, record, actor);
        let mut updated = entry.snapshot();
        updated.lookup = key.lookup().to_owned();
        updated.hash = hash;
        Ok(NewKey {
            key,
            info: KeyInfo::from_record(updated),
        })
    }
}

/// A create request after validation, ready to become a record.
struct Checked {
    name: String,
    bundle: Option<String>,
    scopes: Vec<String>,
    rate_limits: Vec<(String, Quota)>,
    expires_at: Option<OffsetDateTime>,
}

fn validate_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Invalid("name must not be empty".into()));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!(
            "name must be at most {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "name must not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}
