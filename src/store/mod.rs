//! Storage: the [`KeyStore`] trait every backend implements, and its records.
//!
//! A store keeps accounts and key records; it never sees a plaintext secret.
//! [`MemoryStore`] is the default, embedded backend. Lookup ids need not be
//! unique: [`KeyStore::find_by_lookup`] returns every candidate (revoked ones
//! too, so verify can say why a key fails) and the hash decides.
//! [`CachedStore`] wraps any store to answer repeated lookups from memory.

mod cached;
mod memory;
#[cfg(feature = "metrics")]
pub(crate) mod metered;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use cached::{CacheConfig, CacheStats, CachedStore, CachedStoreBuilder};
#[cfg(feature = "postgres")]
pub use cached::{ChangeFollower, FollowConfig};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, DEFAULT_CHANNEL};
pub(crate) use record::from_unix_nanos;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use record::{from_millis, to_millis};
pub use record::{
    AccountId, AccountRecord, InvalidAccountId, KeyEntry, KeyId, KeyRecord, MAX_ACCOUNT_ID_LEN,
    MAX_HANDLE_LEN, MAX_KEY_ID_LEN,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::credits::Credits;
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityChange, IdentityId};
use crate::metadata::Metadata;
use crate::ratelimit::Quota;

/// What a store operation can fail with.
///
/// The failures of the backend itself ([`Unavailable`](Self::Unavailable),
/// [`Misconfigured`](Self::Misconfigured) and [`Corrupt`](Self::Corrupt))
/// carry a [`Cause`]: a message for logs and, from the SQL stores, the
/// underlying `sqlx` error as [`source`](std::error::Error::source). Their
/// text may name hosts, tables or rows; log it, never show it to clients.
///
/// ```
/// use std::error::Error as _;
/// use keygate::StoreError;
///
/// let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// let err = StoreError::Unavailable(keygate::store::Cause::from_error(io));
/// assert!(matches!(err, StoreError::Unavailable(_)));
/// let cause = err.source().unwrap();
/// assert!(cause.source().unwrap().is::<std::io::Error>());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot answer now (connection lost, pool timeout, closed
    /// pool, a busy database): worth retrying later. Verify answers
    /// [`AuthError::Unavailable`](crate::AuthError::Unavailable) and
    /// management calls 503.
    #[error("key store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The backend will not answer until its configuration is fixed: an
    /// invalid URL or schema name, failed authentication, missing tables
    /// (the migrations were not run) or missing privileges. Retrying does
    /// not help. Verify still answers
    /// [`AuthError::Unavailable`](crate::AuthError::Unavailable); management
    /// calls answer 500 `store_misconfigured`.
    #[error("key store misconfigured: {0}")]
    Misconfigured(#[source] Cause),
    /// The account already has `limit` active keys of this format.
    #[error("key limit of {limit} reached")]
    LimitReached {
        /// The per-account limit that applies.
        limit: u32,
    },
    /// No key or account with that id.
    #[error("not found")]
    NotFound,
    /// The record conflicts with an existing one (duplicate id or account).
    /// The text may reach clients (as
    /// [`ConflictKind::Other`](crate::ConflictKind::Other)), so it
    /// never quotes the database.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operation does not apply to a revoked key.
    #[error("key is revoked")]
    Revoked,
    /// The key was already rotated: it has a successor (and may still work
    /// for a grace period), so it cannot be rotated again.
    #[error("key was already rotated")]
    Rotated,
    /// Stored data could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(#[source] Cause),
}

/// Why a backend failed: a message, and the error that caused it if there
/// is one, kept as [`source`](std::error::Error::source) so callers can walk
/// the chain or downcast it (to a `sqlx::Error`, say).
///
/// Cheap to clone (the source is shared). Two causes are equal when their
/// messages are, whatever their sources. A `String` or `&str` converts into
/// a cause without a source:
///
/// ```
/// use keygate::store::Cause;
/// use keygate::StoreError;
///
/// let down = StoreError::Unavailable("connection refused".into());
/// assert_eq!(down.to_string(), "key store unavailable: connection refused");
///
/// let io = std::io::Error::other("disk on fire");
/// let cause = Cause::new("cannot read keys.db").with_source(io);
/// assert_eq!(cause.message(), "cannot read keys.db");
/// assert_eq!(cause, Cause::from("cannot read keys.db"));
/// ```
#[derive(Clone)]
pub struct Cause {
    message: Arc<str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// A cause with this message and no source.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Arc::from(message.into()),
            source: None,
        }
    }

    /// A cause whose message is `error`'s text and whose source is `error`.
    pub fn from_error(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(error.to_string()).with_source(error)
    }

    /// This cause with `source` as the error that caused it.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The message, as [`Display`](std::fmt::Display) shows it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Cause");
        d.field("message", &&*self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Compares the messages only: sources are rarely comparable.
impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// Which keys a listing returns and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Include revoked keys (kept for audit).
    pub include_revoked: bool,
    /// Return keys whose id sorts after this one (the previous page's last id).
    pub after: Option<KeyId>,
    /// The most keys to return.
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            include_revoked: false,
            after: None,
            limit: 100,
        }
    }
}

/// Which keys [`KeyStore::list_stale_secrets`] returns: active keys whose
/// secret was set at or before a time, in id order, a page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretAgeQuery {
    /// Keys whose secret was set at or before this time.
    pub set_before: OffsetDateTime,
    /// Only keys active at this time (not revoked, not expired).
    pub active_at: OffsetDateTime,
    /// Only keys of this account and its sub-accounts; `None` for every
    /// account.
    pub within: Option<AccountId>,
    /// Return keys whose id sorts after this one (the previous page's last id).
    pub after: Option<KeyId>,
    /// The most keys to return.
    pub limit: usize,
}

impl SecretAgeQuery {
    /// True when `record` belongs in this query's answer (ignoring paging).
    pub fn matches(&self, record: &KeyRecord) -> bool {
        record.secret_set_at <= self.set_before
            && record.is_active(self.active_at)
            && self
                .within
                .as_ref()
                .is_none_or(|w| record.account.is_within(w))
    }

    /// [`matches`](Self::matches) for a stored entry, without building its
    /// record.
    pub(crate) fn matches_entry(&self, entry: &KeyEntry) -> bool {
        entry.secret_set_at() <= self.set_before
            && entry.is_active(self.active_at)
            && self
                .within
                .as_ref()
                .is_none_or(|w| entry.account().is_within(w))
    }
}

/// What happens to the old key in [`KeyStore::rotate_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OldKey {
    /// Revoke it at this time (normally now).
    RevokeAt(OffsetDateTime),
    /// Keep it working until this time (a grace period), then it expires.
    ExpireAt(OffsetDateTime),
}

/// Changes to a stored key's mutable fields, for [`KeyStore::update_key`].
/// A `None` field is left as it is. The secret, lookup id, account, format
/// and history (created, revoked, rotated) never change through it.
///
/// ```
/// use keygate::store::KeyChange;
/// let rename = KeyChange::default().with_name("CI (old)");
/// assert_eq!(rename.name.as_deref(), Some("CI (old)"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyChange {
    /// A new name.
    pub name: Option<String>,
    /// New metadata (replaces the whole object).
    pub metadata: Option<Metadata>,
    /// A new expiry; `Some(None)` removes it.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// New per-class rate-limit overrides (replace all of them).
    pub rate_limits: Option<Vec<(String, Quota)>>,
    /// A new grant: bundle and scopes (replace both).
    pub grant: Option<(Option<String>, Vec<String>)>,
    /// `Some(Some(at))` disables the key (a key already disabled keeps its
    /// first time); `Some(None)` enables it.
    pub disabled: Option<Option<OffsetDateTime>>,
    /// New credits (remaining and refill); `Some(None)` removes the usage
    /// limit.
    pub credits: Option<Option<Credits>>,
    /// A new identity; `Some(None)` detaches the key from its identity. The
    /// identity must belong to the key's account (the SQL stores enforce it
    /// with a foreign key on `(identity_id, account)`), else
    /// [`StoreError::NotFound`].
    pub identity: Option<Option<IdentityId>>,
}

impl KeyChange {
    /// Sets [`name`](Self::name).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`metadata`](Self::metadata).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets [`expires_at`](Self::expires_at).
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: Option<OffsetDateTime>) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets [`rate_limits`](Self::rate_limits).
    #[must_use]
    pub fn with_rate_limits(mut self, rate_limits: Vec<(String, Quota)>) -> Self {
        self.rate_limits = Some(rate_limits);
        self
    }

    /// Sets [`grant`](Self::grant).
    #[must_use]
    pub fn with_grant(mut self, bundle: Option<String>, scopes: Vec<String>) -> Self {
        self.grant = Some((bundle, scopes));
        self
    }

    /// Sets [`disabled`](Self::disabled): disabled since `at`, or enabled
    /// with `None`.
    #[must_use]
    pub fn with_disabled(mut self, at: Option<OffsetDateTime>) -> Self {
        self.disabled = Some(at);
        self
    }

    /// Sets [`credits`](Self::credits).
    #[must_use]
    pub fn with_credits(mut self, credits: Option<Credits>) -> Self {
        self.credits = Some(credits);
        self
    }

    /// Sets [`identity`](Self::identity).
    #[must_use]
    pub fn with_identity(mut self, identity: Option<IdentityId>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// True when the change changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the change to a record that is not revoked, as every store's
    /// `update_key` does under its row lock; a revoked record is left as it
    /// is and answers [`StoreError::Revoked`].
    pub(crate) fn apply_unless_revoked(&self, record: &mut KeyRecord) -> Result<(), StoreError> {
        if record.revoked_at.is_some() {
            return Err(StoreError::Revoked);
        }
        self.apply(record);
        Ok(())
    }

    /// Applies the change to a record (what every store does under its
    /// row lock).
    pub fn apply(&self, record: &mut KeyRecord) {
        if let Some(name) = &self.name {
            record.name.clone_from(name);
        }
        if let Some(metadata) = &self.metadata {
            record.metadata = metadata.clone();
        }
        if let Some(expires_at) = self.expires_at {
            record.expires_at = expires_at;
        }
        if let Some(limits) = &self.rate_limits {
            record.rate_limits.clone_from(limits);
        }
        if let Some((bundle, scopes)) = &self.grant {
            record.bundle.clone_from(bundle);
            record.scopes.clone_from(scopes);
        }
        match self.disabled {
            Some(Some(at)) => {
                record.disabled_at.get_or_insert(at);
            }
            Some(None) => record.disabled_at = None,
            None => {}
        }
        if let Some(credits) = self.credits {
            record.credits = credits;
        }
        if let Some(identity) = &self.identity {
            record.identity.clone_from(identity);
        }
    }
}

/// What [`KeyStore::spend_shared_credits`] did: the key's spend and its
/// identity's, made together. When either is
/// [`Exhausted`](Spend::Exhausted), neither was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedSpend {
    /// The key's own credits.
    pub key: Spend,
    /// The identity's credits ([`Spend::Unlimited`] when it has none, or
    /// when the key's spend was refused and the identity was not tried).
    pub identity: Spend,
}

impl SharedSpend {
    /// The outcome of the two spends.
    pub fn new(key: Spend, identity: Spend) -> Self {
        Self { key, identity }
    }
}

/// What a store without identities answers to identity calls.
fn no_identities() -> StoreError {
    StoreError::Misconfigured(Cause::new("this store does not keep identities"))
}

/// What [`KeyStore::spend_credits`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Spend {
    /// The cost was spent; this many credits remain.
    Spent {
        /// Credits left after the spend.
        remaining: u64,
    },
    /// Too few credits remain; nothing was spent.
    Exhausted {
        /// When the next refill that would allow the spend lands; `None`
        /// when no refill ever will.
        next_refill: Option<OffsetDateTime>,
    },
    /// The key has no usage limit.
    Unlimited,
}

/// One re-hash for [`KeyStore::rehash_secrets`]: give key `id` the hash `to`
/// (made under the current pepper) in place of `from`, only if the key still
/// has `from` and is not revoked.
///
/// The condition makes re-hashing safe when instances race: the first write
/// wins, and a later one for a hash that already changed (re-hashed by another
/// instance, or replaced by a secret reset) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rehash {
    /// The key.
    pub id: KeyId,
    /// The hash the key must still have.
    pub from: SecretHash,
    /// Its replacement.
    pub to: SecretHash,
}

/// The storage seam. Every backend passes the same conformance suite.
///
/// Implementations must make [`insert_key`](Self::insert_key)'s limit check and
/// insert one atomic step, so concurrent creates never exceed the limit.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug + 'static {
    /// Registers an account. For a sub-account (an id `parent/handle`, see
    /// [`AccountId::child`]) the parent must be registered, except a top-level
    /// parent, which is registered with it; a missing sub-account parent is
    /// [`StoreError::NotFound`]. The stored parent is always the one the id
    /// names. Fails with [`StoreError::Conflict`] if the account exists.
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError>;

    /// Reads an account; `None` if it was never registered.
    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError>;

    /// Inserts a key. A top-level account is registered with its first key in
    /// the same step; a sub-account must already be registered
    /// ([`StoreError::NotFound`] otherwise). With `limit`, first counts the
    /// account's active keys of the same format (not revoked, not expired at
    /// `now`) and fails with [`StoreError::LimitReached`] if there are already
    /// `limit`, atomically. A second active key with the same secret hash, or
    /// a second active key pair with the same public key, is
    /// [`StoreError::Conflict`].
    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Inserts many keys in one step without limit checks, for imports and bulk
    /// setup. The built-in stores are all or nothing: on a duplicate id
    /// ([`StoreError::Conflict`]) none is inserted. This default inserts one
    /// at a time and stops at the first failure.
    async fn insert_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        for record in records {
            self.insert_key(record, None, OffsetDateTime::UNIX_EPOCH)
                .await?;
        }
        Ok(())
    }

    /// Every key whose lookup id equals `lookup`, revoked ones included.
    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError>;

    /// Answers a lookup from memory without waiting, when the store can:
    /// `Some(found)`, where `found` is the first of
    /// [`find_by_lookup`](Self::find_by_lookup)'s candidates that `accept`
    /// takes (verify passes the hash check), or `None` when only
    /// `find_by_lookup` can answer. The default is `None`.
    ///
    /// Verify tries this first: it costs no allocation and no boxed future,
    /// which is most of a verify's cost beyond its one hash on an in-memory
    /// store or a cache hit.
    fn find_now(
        &self,
        lookup: &str,
        accept: &mut dyn FnMut(&KeyEntry) -> bool,
    ) -> Option<Option<Arc<KeyEntry>>> {
        let _ = (lookup, accept);
        None
    }

    /// One key by id.
    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError>;

    /// An account's keys ordered by id (creation order), paginated.
    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// Soft-deletes a key: sets `revoked_at` and keeps the record. Revoking an
    /// already revoked key changes nothing and succeeds.
    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Replaces a key's lookup id and secret hash (secret reset) and records
    /// `at` as its [`secret_set_at`](KeyRecord::secret_set_at). The old
    /// secret stops verifying at once. Fails with [`StoreError::Revoked`] on
    /// revoked keys.
    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Active keys whose secret is older than the query says, in id order
    /// (keys due for a secret reset). The built-in stores answer it; this
    /// default answers [`StoreError::Misconfigured`], for stores written
    /// before it existed.
    async fn list_stale_secrets(
        &self,
        query: &SecretAgeQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let _ = query;
        Err(StoreError::Misconfigured(Cause::new(
            "this store cannot list keys by secret age",
        )))
    }

    /// Applies `change` to a key atomically (under the key's row lock, so
    /// concurrent updates never lose one another's fields) and returns the
    /// updated record. Fails with [`StoreError::NotFound`] for an unknown key
    /// and [`StoreError::Revoked`] for a revoked one. Like revocation, the
    /// change reaches every instance's cache (the Postgres store notifies the
    /// key's lookup id).
    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError>;

    /// Spends `cost` of a key's credits at `now`, refilling them first when
    /// a refill is due ([`Credits::spend`] is the rule), as one atomic step:
    /// N concurrent spends against k credits succeed exactly k times, on one
    /// instance or many. Never read-modify-write outside the database's own
    /// statement. [`StoreError::NotFound`] for an unknown key.
    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError>;

    /// Stores a new identity. A top-level account is registered with it; a
    /// sub-account must be registered ([`StoreError::NotFound`]). A second
    /// identity with the same external id in the same account is
    /// [`StoreError::Conflict`]. The built-in stores keep identities; this
    /// default answers [`StoreError::Misconfigured`].
    async fn create_identity(&self, identity: Identity) -> Result<(), StoreError> {
        let _ = identity;
        Err(no_identities())
    }

    /// One identity by id.
    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>, StoreError> {
        let _ = id;
        Err(no_identities())
    }

    /// An account's identities ordered by id, after `after`, at most `limit`.
    async fn list_identities(
        &self,
        account: &AccountId,
        after: Option<&IdentityId>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        let _ = (account, after, limit);
        Err(no_identities())
    }

    /// Applies `change` to an identity atomically and returns it; every
    /// instance's cached keys of the identity see the change, as with
    /// [`update_key`](Self::update_key). [`StoreError::NotFound`] for an
    /// unknown identity.
    async fn update_identity(
        &self,
        id: &IdentityId,
        change: &IdentityChange,
    ) -> Result<Identity, StoreError> {
        let _ = (id, change);
        Err(no_identities())
    }

    /// Deletes an identity, detaching its keys (revoked ones included) in
    /// the same step: they keep working on their own limits.
    /// [`StoreError::NotFound`] for an unknown identity.
    async fn delete_identity(&self, id: &IdentityId) -> Result<(), StoreError> {
        let _ = id;
        Err(no_identities())
    }

    /// Spends `cost` of a key's credits and of its identity's in one atomic
    /// step ([`Credits::spend`] is the rule for each): both or neither. N
    /// concurrent spends against an identity with k credits succeed exactly
    /// k times, whichever of its keys they come through.
    /// [`StoreError::NotFound`] for an unknown key.
    async fn spend_shared_credits(
        &self,
        key: &KeyId,
        identity: &IdentityId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<SharedSpend, StoreError> {
        let _ = (key, identity, cost, now);
        Err(no_identities())
    }

    /// Inserts `new`, records it as `old`'s successor and revokes or schedules
    /// the expiry of `old`, atomically. The account's key limit is not
    /// checked: a rotation replaces a key, and a key has at most one
    /// successor. Fails with [`StoreError::Revoked`] if `old` is revoked and
    /// [`StoreError::Rotated`] if it already has a successor.
    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError>;

    /// Records last-used times in one batch; later times win.
    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError>;

    /// False when the entries this store hands out are its own storage, so a
    /// stamp on the entry is already persisted and no flush is needed.
    fn needs_last_used_flush(&self) -> bool {
        true
    }

    /// True when keys outlive the process (a database), so they must be
    /// hashed with a pepper kept across restarts: building an
    /// [`ApiKeys`](crate::ApiKeys) on a persistent store without one is
    /// [`ConfigError::MissingPepper`](crate::ConfigError::MissingPepper).
    fn is_persistent(&self) -> bool {
        true
    }

    /// True when the entries [`find_by_lookup`](Self::find_by_lookup) returns
    /// live on between calls (in memory or in a cache), so in-process state
    /// such as rate-limit buckets can be kept beside them.
    fn keeps_entries(&self) -> bool {
        false
    }

    /// Replaces secret hashes made under an older pepper, each only if the
    /// key still has the hash it is replacing and is not revoked (see
    /// [`Rehash`]); returns how many keys changed. The built-in stores answer
    /// it; this default answers [`StoreError::Misconfigured`], for stores
    /// written before it existed.
    async fn rehash_secrets(&self, batch: &[Rehash]) -> Result<usize, StoreError> {
        let _ = batch;
        Err(StoreError::Misconfigured(Cause::new(
            "this store cannot re-hash secrets",
        )))
    }

    /// How many keys still usable at `now` (not revoked, not expired) each
    /// pepper version holds, by version (0 is plain SHA-256 from imports).
    /// A version absent from the answer holds no key. The built-in stores
    /// answer it; this default answers [`StoreError::Misconfigured`].
    async fn count_by_pepper(&self, now: OffsetDateTime) -> Result<BTreeMap<u32, u64>, StoreError> {
        let _ = now;
        Err(StoreError::Misconfigured(Cause::new(
            "this store cannot count keys by pepper version",
        )))
    }
}

/// A shared store is a store: `ApiKeys::builder(p).store(Arc::clone(&store))`
/// lets several services (or a service and your own code) use one store.
#[async_trait]
impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        (**self).create_account(account).await
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        (**self).get_account(id).await
    }

    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        (**self).insert_key(record, limit, now).await
    }

    async fn insert_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        (**self).insert_keys(records).await
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        (**self).find_by_lookup(lookup).await
    }

    fn find_now(
        &self,
        lookup: &str,
        accept: &mut dyn FnMut(&KeyEntry) -> bool,
    ) -> Option<Option<Arc<KeyEntry>>> {
        (**self).find_now(lookup, accept)
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        (**self).get_key(id).await
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        (**self).list_keys(account, query).await
    }

    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        (**self).revoke_key(id, at).await
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        (**self).replace_secret(id, lookup, hash, at).await
    }

    async fn list_stale_secrets(
        &self,
        query: &SecretAgeQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        (**self).list_stale_secrets(query).await
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError> {
        (**self).update_key(id, change).await
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        (**self).spend_credits(id, cost, now).await
    }

    async fn create_identity(&self, identity: Identity) -> Result<(), StoreError> {
        (**self).create_identity(identity).await
    }

    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>, StoreError> {
        (**self).get_identity(id).await
    }

    async fn list_identities(
        &self,
        account: &AccountId,
        after: Option<&IdentityId>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        (**self).list_identities(account, after, limit).await
    }

    async fn update_identity(
        &self,
        id: &IdentityId,
        change: &IdentityChange,
    ) -> Result<Identity, StoreError> {
        (**self).update_identity(id, change).await
    }

    async fn delete_identity(&self, id: &IdentityId) -> Result<(), StoreError> {
        (**self).delete_identity(id).await
    }

    async fn spend_shared_credits(
        &self,
        key: &KeyId,
        identity: &IdentityId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<SharedSpend, StoreError> {
        (**self)
            .spend_shared_credits(key, identity, cost, now)
            .await
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        (**self).rotate_key(old, new, old_key).await
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        (**self).record_last_used(uses).await
    }

    fn needs_last_used_flush(&self) -> bool {
        (**self).needs_last_used_flush()
    }

    fn keeps_entries(&self) -> bool {
        (**self).keeps_entries()
    }

    fn is_persistent(&self) -> bool {
        (**self).is_persistent()
    }

    async fn rehash_secrets(&self, batch: &[Rehash]) -> Result<usize, StoreError> {
        (**self).rehash_secrets(batch).await
    }

    async fn count_by_pepper(&self, now: OffsetDateTime) -> Result<BTreeMap<u32, u64>, StoreError> {
        (**self).count_by_pepper(now).await
    }
}
