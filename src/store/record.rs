//! Identifiers and the records a [`KeyStore`](super::KeyStore) keeps.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::credits::Credits;
use crate::hash::SecretHash;
use crate::metadata::Metadata;
use crate::ratelimit::{KeyBuckets, Quota};
use crate::scope::ScopeSet;

/// The longest account id accepted, in bytes.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// A key's stable id, e.g. `key_0193a0c2f1e2Xk3…`. Ids sort roughly by creation time.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

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
        Ok(Self(text))
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
        Self(s)
    }

    /// Wraps an id read from storage or a request path. Any string is accepted;
    /// an id that names no key is simply not found.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
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

/// A stored key as handed to the verify path: the record plus in-process state
/// kept beside it (compiled scopes, rate-limit buckets, the latest last-used
/// stamp), so a verify needs no second lookup.
pub struct KeyEntry {
    record: KeyRecord,
    /// `record.expires_at` in Unix nanoseconds (saturated), so the verify
    /// path compares two integers.
    expires_nanos: Option<i64>,
    last_used_ms: AtomicI64,
    pub(crate) scopes: OnceLock<ScopeSet>,
    pub(crate) buckets: OnceLock<Arc<KeyBuckets>>,
}

const NEVER: i64 = i64::MIN;

impl KeyEntry {
    /// Wraps a record with fresh in-process state.
    pub fn new(record: KeyRecord) -> Self {
        let last = record.last_used_at.map_or(NEVER, to_millis);
        let expires_nanos = record.expires_at.map(|e| {
            i64::try_from(e.unix_timestamp_nanos()).unwrap_or(if e.year() < 1970 {
                i64::MIN
            } else {
                i64::MAX
            })
        });
        Self {
            record,
            expires_nanos,
            last_used_ms: AtomicI64::new(last),
            scopes: OnceLock::new(),
            buckets: OnceLock::new(),
        }
    }

    /// A new entry for an updated record that keeps this entry's last-used
    /// stamp and, unless the key is now revoked, its rate-limit state.
    pub fn succeed(&self, record: KeyRecord) -> Self {
        let revoked = record.revoked_at.is_some();
        let next = Self::new(record);
        next.last_used_ms
            .fetch_max(self.last_used_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        if let (false, Some(b)) = (revoked, self.buckets.get()) {
            let _ = next.buckets.set(Arc::clone(b));
        }
        next
    }

    /// The stored record.
    pub fn record(&self) -> &KeyRecord {
        &self.record
    }

    /// The latest last-used time known in this process.
    pub fn last_used(&self) -> Option<OffsetDateTime> {
        from_millis(self.last_used_ms.load(Ordering::Relaxed))
    }

    /// The record with `last_used_at` brought up to date from this process.
    pub fn snapshot(&self) -> KeyRecord {
        let mut r = self.record.clone();
        r.last_used_at = self.last_used();
        r
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
        self.expires_nanos.is_some_and(|e| e <= now_nanos)
    }
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("record", &self.record)
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
