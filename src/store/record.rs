//! Identifiers and the records a [`KeyStore`](super::KeyStore) keeps.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::credits::Credits;
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityId};
use crate::metadata::Metadata;
use crate::ratelimit::{KeyBuckets, Quota};
use crate::scope::ScopeSet;

/// The longest account id accepted, in bytes.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// A key's stable id, e.g. `key_0193a0c2f1e2Xk3…`. Ids sort roughly by creation time.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyId(Box<str>);

/// 1 to [`MAX_KEY_ID_LEN`] visible ASCII characters, as deserializing checks.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for KeyId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_KEY_ID_LEN))
            .pattern(Some("^[!-~]+$"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for KeyId {
    fn name() -> std::borrow::Cow<'static, str> {
        "KeyId".into()
    }
}

/// The longest key id accepted from outside, in bytes.
pub const MAX_KEY_ID_LEN: usize = 128;

impl<'de> Deserialize<'de> for KeyId {
    /// Accepts 1 to [`MAX_KEY_ID_LEN`] bytes of visible ASCII, the shape
    /// every id keygate generates has; anything else is refused before it
    /// reaches a store.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty()
            || text.len() > MAX_KEY_ID_LEN
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(serde::de::Error::custom(format!(
                "key id must be 1 to {MAX_KEY_ID_LEN} visible ASCII characters"
            )));
        }
        Ok(Self(text.into_boxed_str()))
    }
}

impl KeyId {
    /// A new id: `key_`, 12 hex digits of the creation time in milliseconds, then
    /// 16 random base62 characters.
    pub fn generate(now: OffsetDateTime) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let mut s = String::with_capacity(4 + 12 + 16);
        s.push_str("key_");
        // 12 lowercase hex digits, as `{:012x}` of the low 48 bits, without
        // the formatting machinery.
        for shift in (0..12).rev() {
            s.push(char::from(HEX[((millis >> (shift * 4)) & 0xf) as usize]));
        }
        crate::key::push_random_base62(&mut s, 16);
        Self(s.into_boxed_str())
    }

    /// Wraps an id read from storage or a request path. Any string is accepted;
    /// an id that names no key is simply not found.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into().into_boxed_str())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account (organisation, user, tenant) a key belongs to.
///
/// A top-level account's id is chosen by the application (keygate never
/// invents one). A sub-account's id is derived from its parent's id and a
/// handle the parent picks, as `parent/handle`
/// ([`AccountId::child`]): handles belong to their parent, so two tenants'
/// sub-account names never collide and nobody can claim or probe another
/// tenant's names. The `/` separator is therefore reserved: an id containing
/// it names a sub-account.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct AccountId(String);

/// The longest sub-account handle accepted, in bytes.
pub const MAX_HANDLE_LEN: usize = 63;

/// An account id or sub-account handle that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAccountId {
    /// The whole id is empty, too long, has control characters or an empty
    /// `/`-separated segment.
    #[error(
        "account id must be 1 to {MAX_ACCOUNT_ID_LEN} bytes without control characters, \
         with no empty '/'-separated part"
    )]
    Id,
    /// A sub-account handle is not 1 to 63 of `a-z`, `0-9`, `-`, `_`
    /// starting with a letter or digit.
    #[error(
        "sub-account handle must be 1 to {MAX_HANDLE_LEN} characters of a-z, 0-9, '-' and '_', \
         starting with a letter or digit"
    )]
    Handle,
}

impl AccountId {
    /// Validates and wraps an account id: 1 to [`MAX_ACCOUNT_ID_LEN`] bytes,
    /// no control characters. `/` separates a sub-account's handle from its
    /// parent, so every `/`-separated part must be non-empty.
    ///
    /// ```
    /// use keygate::AccountId;
    /// assert!(AccountId::new("org_42").is_ok());
    /// assert!(AccountId::new("").is_err());
    /// assert!(AccountId::new("org_42/").is_err());
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidAccountId> {
        let id = id.into();
        if id.is_empty()
            || id.len() > MAX_ACCOUNT_ID_LEN
            || id.chars().any(char::is_control)
            || id.split('/').any(str::is_empty)
        {
            return Err(InvalidAccountId::Id);
        }
        Ok(Self(id))
    }

    /// The id of this account's sub-account named `handle` (`self/handle`).
    /// Handles are 1 to [`MAX_HANDLE_LEN`] characters of `a-z`, `0-9`, `-`
    /// and `_`, starting with a letter or digit, so they are safe in URL
    /// paths.
    ///
    /// ```
    /// use keygate::AccountId;
    /// let parent = AccountId::new("acme").unwrap();
    /// let eu = parent.child("eu").unwrap();
    /// assert_eq!(eu.as_str(), "acme/eu");
    /// assert_eq!(eu.parent(), Some(parent.clone()));
    /// assert!(eu.is_within(&parent));
    /// assert!(parent.child("../x").is_err());
    /// assert!(parent.child("T 1").is_err());
    /// ```
    pub fn child(&self, handle: &str) -> Result<Self, InvalidAccountId> {
        let valid = !handle.is_empty()
            && handle.len() <= MAX_HANDLE_LEN
            && handle
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && handle
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !valid {
            return Err(InvalidAccountId::Handle);
        }
        Self::new(format!("{}/{handle}", self.0))
    }

    /// The parent of a sub-account; `None` for a top-level account.
    pub fn parent(&self) -> Option<AccountId> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| Self(parent.to_owned()))
    }

    /// The sub-account's handle (the last `/`-separated part), or the whole
    /// id for a top-level account.
    pub fn handle(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, h)| h)
    }

    /// True for an account that is not a sub-account.
    pub fn is_top_level(&self) -> bool {
        !self.0.contains('/')
    }

    /// How many levels below a top-level account this one is (0 for a
    /// top-level account, 1 for its sub-accounts).
    pub fn depth(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'/').count()
    }

    /// True when this account is `ancestor` itself or one of its
    /// descendants (a sub-account, a sub-account's sub-account, …).
    pub fn is_within(&self, ancestor: &AccountId) -> bool {
        match self.0.strip_prefix(ancestor.as_str()) {
            Some("") => true,
            Some(rest) => rest.starts_with('/'),
            None => false,
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.0)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account known to the store. A top-level account is registered with its
/// first key; a sub-account by [`create_sub_account`](crate::Manager::create_sub_account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// The account id.
    pub id: AccountId,
    /// The parent account, for sub-accounts.
    pub parent: Option<AccountId>,
    /// When the account was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Everything stored about one key. The secret itself is never stored: only
/// its [`SecretHash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's id.
    pub id: KeyId,
    /// The account that owns the key.
    pub account: AccountId,
    /// The label given at creation.
    pub name: String,
    /// The key format's label (the token prefix, or `pair`).
    pub format: String,
    /// The lookup id: the token's first characters or a pair's public key.
    pub lookup: String,
    /// The hash of the secret.
    pub hash: SecretHash,
    /// The scope bundle chosen at creation, if any.
    pub bundle: Option<String>,
    /// Scopes granted in addition to the bundle (names or wildcards).
    pub scopes: Vec<String>,
    /// Per-class rate-limit overrides, by operation class name.
    pub rate_limits: Vec<(String, Quota)>,
    /// When the key was created.
    pub created_at: OffsetDateTime,
    /// When the key's current secret was set: at creation (or import), at
    /// the last [secret reset](crate::Manager::reset_secret), and for a key
    /// made by rotation, when it was made. The profile's
    /// [`max_secret_age`](crate::Profile::max_secret_age) counts from here.
    pub secret_set_at: OffsetDateTime,
    /// When the key stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When the key last verified successfully, as last flushed to the store.
    pub last_used_at: Option<OffsetDateTime>,
    /// When the key was revoked; revoked keys are kept for audit.
    pub revoked_at: Option<OffsetDateTime>,
    /// The key that replaced this one in a rotation. A key is rotated at most
    /// once, so a grace period cannot be used to multiply keys.
    pub replaced_by: Option<KeyId>,
    /// The first key of this key's rotation chain, for a key made by
    /// rotation; `None` for a key created or imported. Rate-limit state
    /// belongs to the chain, so a rotation never refills a bucket.
    pub lineage: Option<KeyId>,
    /// When the key was disabled; a disabled key fails verify with
    /// [`AuthError::Disabled`](crate::AuthError::Disabled) until it is
    /// enabled again. Unlike revocation, this is reversible.
    pub disabled_at: Option<OffsetDateTime>,
    /// The application's JSON object for this key.
    pub metadata: Metadata,
    /// The key's usage credits; `None` for a key without a usage limit.
    /// Spent through [`KeyStore::spend_credits`](super::KeyStore::spend_credits),
    /// so in a cached record `remaining` may be stale.
    pub credits: Option<Credits>,
    /// The [identity](crate::Identity) the key belongs to, if any: one of
    /// the key's own account. Its rate limits and credits are shared by all
    /// its keys.
    pub identity: Option<IdentityId>,
}

impl KeyRecord {
    /// True when the key is neither revoked nor expired at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// The id rate-limit state is kept under: the first key of its rotation
    /// chain ([`lineage`](Self::lineage)), or its own id.
    pub fn lineage(&self) -> &KeyId {
        self.lineage.as_ref().unwrap_or(&self.id)
    }

    /// The redacted form shown in lists: the lookup id and an ellipsis.
    pub fn redacted(&self) -> String {
        crate::key::redact(&self.lookup)
    }
}

/// The parts many keys have in common: the account, the format and the
/// bundle. A [`MemoryStore`](super::MemoryStore) keeps one copy of each
/// distinct triple ([`SharedParts`]), so a key carries a pointer to it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Shared {
    account: AccountId,
    format: Box<str>,
    bundle: Option<Box<str>>,
}

/// One copy of each distinct [`Shared`] triple, for a store that holds many
/// entries. The triples come from stored records, not from a lookup by a
/// client, so the set uses the stores' fast seeded hash.
#[derive(Debug, Default)]
pub(crate) struct SharedParts(
    std::collections::HashSet<Arc<Shared>, foldhash::quality::RandomState>,
);

impl SharedParts {
    fn get(&mut self, parts: Shared) -> Arc<Shared> {
        if let Some(shared) = self.0.get(&parts) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(parts);
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

/// Declares the record fields most keys leave at their default: they live in
/// one optional box of the entry ([`Rare`]), absent for a plain key. Adding
/// such a field to [`KeyRecord`] is one line here.
macro_rules! rare_fields {
    ($($field:ident: $ty:ty,)*) => {
        /// The fields most keys leave at their default, boxed apart.
        #[derive(Debug, Default)]
        struct Rare {
            /// `secret_set_at`, when it differs from `created_at`.
            secret_set_at: Option<OffsetDateTime>,
            $($field: $ty,)*
        }

        impl Rare {
            /// Moves the rare fields out of `record`; `None` when all are
            /// at their default.
            fn take(record: &mut KeyRecord) -> Option<Box<Self>> {
                let created = record.created_at;
                let set = record.secret_set_at;
                let rare = Self {
                    secret_set_at: (set != created || set.offset() != created.offset())
                        .then_some(set),
                    $($field: std::mem::take(&mut record.$field),)*
                };
                let plain = rare.secret_set_at.is_none()
                    $(&& rare.$field == <$ty>::default())*;
                (!plain).then(|| Box::new(rare))
            }

            /// The record with the core fields given and the rare ones from
            /// `rare` (or their defaults).
            fn record(core: Core, rare: Option<&Self>) -> KeyRecord {
                KeyRecord {
                    id: core.id,
                    account: core.account,
                    name: core.name,
                    format: core.format,
                    lookup: core.lookup,
                    hash: core.hash,
                    bundle: core.bundle,
                    created_at: core.created_at,
                    secret_set_at: rare
                        .and_then(|r| r.secret_set_at)
                        .unwrap_or(core.created_at),
                    $($field: rare.map(|r| r.$field.clone()).unwrap_or_default(),)*
                }
            }
        }
    };
}

rare_fields! {
    scopes: Vec<String>,
    rate_limits: Vec<(String, Quota)>,
    expires_at: Option<OffsetDateTime>,
    last_used_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    replaced_by: Option<KeyId>,
    lineage: Option<KeyId>,
    disabled_at: Option<OffsetDateTime>,
    metadata: Metadata,
    credits: Option<Credits>,
    identity: Option<IdentityId>,
}

/// The fields every key has, as [`Rare::record`] takes them.
struct Core {
    id: KeyId,
    account: AccountId,
    name: String,
    format: String,
    lookup: String,
    hash: SecretHash,
    bundle: Option<String>,
    created_at: OffsetDateTime,
}

/// The compiled scopes as kept on an entry: a [`ScopeSet`] without its
/// 16-byte alignment, so the entry stays small.
#[derive(Clone, Copy)]
pub(crate) struct PackedScopes([u64; 2], bool);

impl From<ScopeSet> for PackedScopes {
    fn from(set: ScopeSet) -> Self {
        let (bits, all) = set.into_parts();
        Self([bits as u64, (bits >> 64) as u64], all)
    }
}

impl From<PackedScopes> for ScopeSet {
    fn from(p: PackedScopes) -> Self {
        ScopeSet::from_parts(u128::from(p.0[0]) | (u128::from(p.0[1]) << 64), p.1)
    }
}

/// A stored key as handed to the verify path: the record, kept compactly,
/// plus in-process state kept beside it (compiled scopes, rate-limit
/// buckets, the latest last-used stamp), so a verify needs no second lookup.
///
/// The account, format and bundle are shared with other keys, the name and
/// lookup id share one allocation, and the fields most keys leave empty
/// (revocation, rotation, metadata, credits, rate-limit overrides, extra
/// scopes, expiry) sit in one box that a plain key does not have. The
/// accessors read single fields without building anything;
/// [`record`](Self::record) builds the whole [`KeyRecord`].
///
/// ```
/// use keygate::hash::SecretHash;
/// use keygate::store::{AccountId, KeyEntry, KeyId, KeyRecord};
/// use keygate::Metadata;
/// use time::OffsetDateTime;
///
/// let record = KeyRecord {
///     id: KeyId::new("key_1"),
///     account: AccountId::new("acme").unwrap(),
///     name: "ci".into(),
///     format: "mk_".into(),
///     lookup: "mk_abcdef".into(),
///     hash: SecretHash::from_parts(1, [7; 32]),
///     bundle: Some("sdk".into()),
///     scopes: Vec::new(),
///     rate_limits: Vec::new(),
///     created_at: OffsetDateTime::UNIX_EPOCH,
///     secret_set_at: OffsetDateTime::UNIX_EPOCH,
///     expires_at: None,
///     last_used_at: None,
///     revoked_at: None,
///     replaced_by: None,
///     lineage: None,
///     disabled_at: None,
///     metadata: Metadata::default(),
///     credits: None,
///     identity: None,
/// };
/// let entry = KeyEntry::new(record.clone());
/// assert_eq!(entry.id().as_str(), "key_1");
/// assert_eq!(entry.lookup(), "mk_abcdef");
/// assert_eq!(entry.bundle(), Some("sdk"));
/// assert_eq!(entry.record(), record);
/// ```
pub struct KeyEntry {
    id: KeyId,
    shared: Arc<Shared>,
    /// The lookup id, then the name.
    text: Box<str>,
    lookup_len: u32,
    hash: SecretHash,
    created_at: OffsetDateTime,
    /// The expiry in Unix nanoseconds (saturated), so the verify path
    /// compares two integers; [`NO_EXPIRY`] for a key that never expires.
    expires_nanos: i64,
    last_used_ms: AtomicI64,
    compiled: OnceLock<PackedScopes>,
    pub(crate) buckets: OnceLock<Arc<KeyBuckets>>,
    rare: Option<Box<Rare>>,
    /// The key's identity as the store read it with the key, so verify
    /// needs no second lookup.
    identity: Option<Arc<Identity>>,
}

const NEVER: i64 = i64::MIN;

/// [`KeyEntry::expires_nanos`] of a key without an expiry.
const NO_EXPIRY: i64 = i64::MAX;

/// The rare fields of a plain key.
static PLAIN: std::sync::LazyLock<Rare> = std::sync::LazyLock::new(Rare::default);

impl KeyEntry {
    /// Wraps a record with fresh in-process state.
    pub fn new(record: KeyRecord) -> Self {
        Self::build(record, None)
    }

    /// [`new`](Self::new), sharing the account, format and bundle with the
    /// other entries of `parts`.
    pub(crate) fn new_in(record: KeyRecord, parts: &mut SharedParts) -> Self {
        Self::build(record, Some(parts))
    }

    fn build(mut record: KeyRecord, parts: Option<&mut SharedParts>) -> Self {
        let last = record.last_used_at.map_or(NEVER, to_millis);
        let expires_nanos = record.expires_at.map_or(NO_EXPIRY, |e| {
            i64::try_from(e.unix_timestamp_nanos()).unwrap_or(if e.year() < 1970 {
                i64::MIN
            } else {
                i64::MAX
            })
        });
        let rare = Rare::take(&mut record);
        let KeyRecord {
            id,
            account,
            name,
            format,
            lookup,
            hash,
            bundle,
            created_at,
            ..
        } = record;
        let shared = Shared {
            account,
            format: format.into_boxed_str(),
            bundle: bundle.map(String::into_boxed_str),
        };
        let shared = match parts {
            Some(parts) => parts.get(shared),
            None => Arc::new(shared),
        };
        let lookup_len = u32::try_from(lookup.len()).expect("a lookup id under 4 GiB");
        // One allocation of the exact size: no growth, no shrink below.
        let mut text = String::with_capacity(lookup.len() + name.len());
        text.push_str(&lookup);
        text.push_str(&name);
        Self {
            id,
            shared,
            text: text.into_boxed_str(),
            lookup_len,
            hash,
            created_at,
            expires_nanos,
            last_used_ms: AtomicI64::new(last),
            compiled: OnceLock::new(),
            buckets: OnceLock::new(),
            rare,
            identity: None,
        }
    }

    /// Wraps a record and the identity it belongs to, read with it.
    pub fn with_identity(record: KeyRecord, identity: Option<Arc<Identity>>) -> Self {
        let mut entry = Self::new(record);
        entry.identity = identity;
        entry
    }

    /// Sets the identity read with the key.
    pub(crate) fn set_identity(&mut self, identity: Option<Arc<Identity>>) {
        self.identity = identity;
    }

    /// The key's identity, as read with the key.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// A new entry for an updated record that keeps this entry's last-used
    /// stamp and, unless the key is now revoked, its rate-limit state.
    pub fn succeed(&self, record: KeyRecord) -> Self {
        self.succeed_with(record, self.identity.clone())
    }

    /// [`succeed`](Self::succeed) with the identity read with the new record.
    pub fn succeed_with(&self, record: KeyRecord, identity: Option<Arc<Identity>>) -> Self {
        self.carry_into(Self::with_identity(record, identity))
    }

    /// [`succeed_with`](Self::succeed_with), sharing parts as
    /// [`new_in`](Self::new_in).
    pub(crate) fn succeed_in(
        &self,
        record: KeyRecord,
        identity: Option<Arc<Identity>>,
        parts: &mut SharedParts,
    ) -> Self {
        let mut next = Self::new_in(record, parts);
        next.identity = identity;
        self.carry_into(next)
    }

    fn carry_into(&self, next: Self) -> Self {
        next.last_used_ms
            .fetch_max(self.last_used_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        if let (false, Some(b)) = (next.is_revoked(), self.buckets.get()) {
            let _ = next.buckets.set(Arc::clone(b));
        }
        next
    }

    fn rare(&self) -> &Rare {
        self.rare.as_deref().unwrap_or(&PLAIN)
    }

    /// The stored record, built from the entry's compact form (its
    /// `last_used_at` is as stored; see [`snapshot`](Self::snapshot)).
    pub fn record(&self) -> KeyRecord {
        Rare::record(
            Core {
                id: self.id.clone(),
                account: self.shared.account.clone(),
                name: self.name().to_owned(),
                format: self.shared.format.to_string(),
                lookup: self.lookup().to_owned(),
                hash: self.hash.clone(),
                bundle: self.shared.bundle.as_deref().map(str::to_owned),
                created_at: self.created_at,
            },
            self.rare.as_deref(),
        )
    }

    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The account that owns the key.
    pub fn account(&self) -> &AccountId {
        &self.shared.account
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.text[self.lookup_len as usize..]
    }

    /// The key format's label.
    pub fn format(&self) -> &str {
        &self.shared.format
    }

    /// The lookup id.
    pub fn lookup(&self) -> &str {
        &self.text[..self.lookup_len as usize]
    }

    /// The hash of the secret.
    pub fn hash(&self) -> &SecretHash {
        &self.hash
    }

    /// The scope bundle chosen at creation, if any.
    pub fn bundle(&self) -> Option<&str> {
        self.shared.bundle.as_deref()
    }

    /// Scopes granted in addition to the bundle.
    pub fn scopes(&self) -> &[String] {
        &self.rare().scopes
    }

    /// Per-class rate-limit overrides, by operation class name.
    pub fn rate_limits(&self) -> &[(String, Quota)] {
        &self.rare().rate_limits
    }

    /// When the key was created.
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// When the key's current secret was set.
    pub fn secret_set_at(&self) -> OffsetDateTime {
        self.rare().secret_set_at.unwrap_or(self.created_at)
    }

    /// The key that replaced this one in a rotation, if any.
    pub fn replaced_by(&self) -> Option<&KeyId> {
        self.rare().replaced_by.as_ref()
    }

    /// When the key was disabled, if it is.
    pub fn disabled_at(&self) -> Option<OffsetDateTime> {
        self.rare().disabled_at
    }

    /// When the key stops working, if ever.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.rare().expires_at
    }

    /// When the key was revoked, if it was.
    pub fn revoked_at(&self) -> Option<OffsetDateTime> {
        self.rare().revoked_at
    }

    /// True when the key is revoked.
    #[inline]
    pub fn is_revoked(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.revoked_at.is_some())
    }

    /// True when the key is disabled.
    #[inline]
    pub fn is_disabled(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.disabled_at.is_some())
    }

    /// The id rate-limit state is kept under: the first key of its rotation
    /// chain ([`KeyRecord::lineage`]), or its own id.
    pub fn lineage(&self) -> &KeyId {
        self.rare().lineage.as_ref().unwrap_or(&self.id)
    }

    /// The application's JSON object for this key.
    pub fn metadata(&self) -> &Metadata {
        &self.rare().metadata
    }

    /// The key's usage credits, as stored; `None` for a key without a usage
    /// limit.
    pub fn credits(&self) -> Option<Credits> {
        self.rare().credits
    }

    /// The id of the [identity](crate::Identity) the key belongs to, as
    /// stored.
    pub fn identity_id(&self) -> Option<&IdentityId> {
        self.rare().identity.as_ref()
    }

    /// True when the key is neither revoked nor expired at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        !self.is_revoked() && self.expires_at().is_none_or(|e| e > now)
    }

    /// The latest last-used time known in this process.
    pub fn last_used(&self) -> Option<OffsetDateTime> {
        from_millis(self.last_used_ms.load(Ordering::Relaxed))
    }

    /// The record with `last_used_at` brought up to date from this process.
    pub fn snapshot(&self) -> KeyRecord {
        let mut r = self.record();
        r.last_used_at = self.last_used();
        r
    }

    /// The compiled scopes, compiled by `compile` on first use.
    #[inline]
    pub(crate) fn compiled_scopes(&self, compile: impl FnOnce() -> ScopeSet) -> ScopeSet {
        (*self.compiled.get_or_init(|| compile().into())).into()
    }

    /// Stamps a use at `now`; returns true when the stamp moved to a new second,
    /// i.e. when it is worth recording in the store.
    pub(crate) fn touch(&self, now: OffsetDateTime) -> bool {
        self.touch_ms(to_millis(now))
    }

    /// [`touch`](Self::touch) at `now_nanos`, Unix nanoseconds.
    #[inline]
    pub(crate) fn touch_at(&self, now_nanos: i64) -> bool {
        self.touch_ms(now_nanos.div_euclid(1_000_000))
    }

    #[inline]
    fn touch_ms(&self, ms: i64) -> bool {
        // A plain load first: within the same millisecond (most verifies of
        // a busy key) the shared cache line is only read, never written.
        if self.last_used_ms.load(Ordering::Relaxed) >= ms {
            return false;
        }
        let prev = self.last_used_ms.fetch_max(ms, Ordering::Relaxed);
        prev == NEVER || prev.div_euclid(1000) < ms.div_euclid(1000)
    }

    /// True when the key has expired at `now_nanos` (Unix nanoseconds).
    #[inline]
    pub(crate) fn expired_at(&self, now_nanos: i64) -> bool {
        self.expires_nanos != NO_EXPIRY && self.expires_nanos <= now_nanos
    }
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("record", &self.record())
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch, the unit keygate stores times in.
pub(crate) fn to_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Unix nanoseconds as a time (the epoch for values out of `time`'s range,
/// which an `i64` of nanoseconds never is).
pub(crate) fn from_unix_nanos(nanos: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The inverse of [`to_millis`]; `None` for values outside the supported range.
pub(crate) fn from_millis(ms: i64) -> Option<OffsetDateTime> {
    if ms == NEVER {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_at: Option<OffsetDateTime>) -> KeyRecord {
        KeyRecord {
            id: KeyId::new("key_1"),
            account: AccountId::new("acct").unwrap(),
            name: "k".into(),
            format: "mj_".into(),
            lookup: "mj_abcde".into(),
            hash: SecretHash::from_parts(1, [0; 32]),
            bundle: None,
            scopes: Vec::new(),
            rate_limits: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            secret_set_at: OffsetDateTime::UNIX_EPOCH,
            expires_at,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
            lineage: None,
            disabled_at: None,
            metadata: Metadata::default(),
            credits: None,
            identity: None,
        }
    }

    #[test]
    fn generated_ids_start_with_the_creation_time_in_hex() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let id = KeyId::generate(at);
        let millis: u64 = 1_700_000_000_123;
        assert_eq!(
            &id.as_str()[..16],
            format!("key_{:012x}", millis & 0xffff_ffff_ffff)
        );
        assert_eq!(id.as_str().len(), 32);
        assert_ne!(id, KeyId::generate(at));
    }

    #[test]
    fn expiry_in_nanoseconds_matches_the_record() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let nanos = 1_700_000_000_123_456_789_i64;
        let entry = KeyEntry::new(record(Some(at)));
        assert!(!entry.expired_at(nanos - 1));
        assert!(entry.expired_at(nanos));
        assert!(entry.expired_at(nanos + 1));
        assert!(!KeyEntry::new(record(None)).expired_at(i64::MAX));
        // Past the i64 range of nanoseconds: never expired before 2262.
        let far = OffsetDateTime::from_unix_timestamp(253_370_764_800).unwrap();
        assert!(!KeyEntry::new(record(Some(far))).expired_at(i64::MAX - 1));
        let early = OffsetDateTime::from_unix_timestamp(-10_000_000_000).unwrap();
        assert!(KeyEntry::new(record(Some(early))).expired_at(i64::MIN));
    }

    #[test]
    fn touch_reports_each_new_second_once() {
        let entry = KeyEntry::new(record(None));
        let sec = 1_000_000_000_i64;
        assert!(entry.touch_at(5 * sec));
        assert!(!entry.touch_at(5 * sec));
        assert!(!entry.touch_at(5 * sec + 999_000_000));
        assert_eq!(entry.last_used(), from_millis(5_999));
        assert!(entry.touch_at(6 * sec));
        // An older stamp never moves it back.
        assert!(!entry.touch_at(sec));
        assert_eq!(entry.last_used(), from_millis(6_000));
    }

    fn id(s: &str) -> AccountId {
        AccountId::new(s).unwrap()
    }

    #[test]
    fn reach_is_by_whole_path_parts_not_by_text_prefix() {
        let acme = id("acme");
        assert!(acme.is_within(&acme));
        assert!(id("acme/eu").is_within(&acme));
        assert!(id("acme/eu/x").is_within(&acme));
        // A tenant whose id merely starts with another's is unrelated.
        assert!(!id("acme2").is_within(&acme));
        assert!(!id("acme2/eu").is_within(&acme));
        assert!(!id("acme/eu2").is_within(&id("acme/eu")));
        // A child never reaches its parent or a sibling.
        assert!(!acme.is_within(&id("acme/eu")));
        assert!(!id("acme/us").is_within(&id("acme/eu")));
    }

    #[test]
    fn handles_refuse_separators_case_space_multibyte_and_length() {
        let acme = id("acme");
        for bad in [
            "",
            "a/b",
            "..",
            "../x",
            "T1",
            "t 1",
            "é",
            "-x",
            &"a".repeat(64),
        ] {
            assert_eq!(acme.child(bad), Err(InvalidAccountId::Handle), "{bad:?}");
        }
        assert_eq!(acme.child(&"a".repeat(63)).unwrap().handle().len(), 63);
        // The derived id still obeys the overall length bound.
        let long = id(&"x".repeat(MAX_ACCOUNT_ID_LEN - 2));
        assert_eq!(long.child("ab"), Err(InvalidAccountId::Id));
        assert!(AccountId::new("x".repeat(1 << 20)).is_err());
    }
}
