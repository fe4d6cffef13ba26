//! Identities: the customer or organisation behind a group of keys.
//!
//! An identity belongs to exactly one account and is named there by an
//! external id the application chooses (unique within the account). It has
//! its own [metadata](Metadata), its own [credits](Credits) and its own
//! per-class rate limits, all shared by every key attached to it: making
//! more keys never multiplies a customer's quota.
//!
//! A request by a key on an identity must pass both the key's checks and
//! the identity's; the stricter decides:
//!
//! - **Rate limits.** The key's token is taken first, then the identity's
//!   (only for classes the identity limits). A key over its own limit never
//!   takes an identity token, so one key cannot drain its siblings' quota
//!   past its own. A denial by the identity keeps the key's token spent.
//! - **Credits.** The key's credits and the identity's are spent in one
//!   atomic step of the store ([`KeyStore::spend_shared_credits`](crate::KeyStore::spend_shared_credits)):
//!   when either has too few, neither is spent.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use crate::credits::Credits;
use crate::metadata::Metadata;
use crate::ratelimit::Quota;
use crate::store::AccountId;

/// The longest external id accepted, in bytes.
pub const MAX_EXTERNAL_ID_LEN: usize = 255;

/// An identity's stable id, e.g. `idn_0193a0c2f1e2Xk3…`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct IdentityId(String);

/// 1 to 128 visible ASCII characters, as deserializing checks.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for IdentityId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(128))
            .pattern(Some("^[!-~]+$"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for IdentityId {
    fn name() -> std::borrow::Cow<'static, str> {
        "IdentityId".into()
    }
}

impl<'de> Deserialize<'de> for IdentityId {
    /// Accepts 1 to 128 bytes of visible ASCII; anything else is refused
    /// before it reaches a store.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || text.len() > 128 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(serde::de::Error::custom(
                "identity id must be 1 to 128 visible ASCII characters",
            ));
        }
        Ok(Self(text))
    }
}

impl IdentityId {
    /// A new id: `idn_`, 12 hex digits of the creation time in milliseconds,
    /// then 16 random base62 characters.
    ///
    /// ```
    /// let id = keygate::IdentityId::generate(time::OffsetDateTime::now_utc());
    /// assert!(id.as_str().starts_with("idn_"));
    /// assert_eq!(id.as_str().len(), 32);
    /// ```
    pub fn generate(now: OffsetDateTime) -> Self {
        let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let mut s = format!("idn_{:012x}", millis & 0xffff_ffff_ffff);
        crate::key::push_random_base62(&mut s, 16);
        Self(s)
    }

    /// Wraps an id read from storage or a request path. An id that names no
    /// identity is simply not found.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityId({})", self.0)
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An identity as stored: its account, external id, metadata, credits and
/// rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Identity {
    /// The identity's id.
    pub id: IdentityId,
    /// The one account it belongs to; only keys of this account attach.
    pub account: AccountId,
    /// The application's id for it (a customer or organisation id), unique
    /// within the account.
    pub external_id: String,
    /// The application's JSON object for it.
    pub metadata: Metadata,
    /// Credits shared by its keys; `None` for no shared usage limit.
    /// `remaining` is as last written (see [`Credits::at`]).
    pub credits: Option<Credits>,
    /// Per-class rate limits shared by its keys, by operation class name.
    #[serde(serialize_with = "limits_as_map")]
    pub rate_limits: Vec<(String, Quota)>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Identity {
    /// A new identity of `account` named `external_id`, with a fresh id and
    /// nothing else set.
    ///
    /// ```
    /// use keygate::{AccountId, Identity};
    /// let now = time::OffsetDateTime::now_utc();
    /// let identity = Identity::new(AccountId::new("org").unwrap(), "cus_42", now);
    /// assert_eq!(identity.external_id, "cus_42");
    /// assert!(identity.credits.is_none());
    /// ```
    pub fn new(account: AccountId, external_id: impl Into<String>, now: OffsetDateTime) -> Self {
        Self {
            id: IdentityId::generate(now),
            account,
            external_id: external_id.into(),
            metadata: Metadata::default(),
            credits: None,
            rate_limits: Vec::new(),
            created_at: now,
        }
    }

    /// The identity's own quota for an operation class, if it limits it.
    pub fn quota(&self, class: &str) -> Option<&Quota> {
        self.rate_limits
            .iter()
            .find(|(c, _)| c == class)
            .map(|(_, q)| q)
    }
}

fn limits_as_map<S: Serializer>(limits: &[(String, Quota)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(limits.iter().map(|(c, q)| (c, q)))
}

/// Changes to a stored identity, for
/// [`KeyStore::update_identity`](crate::KeyStore::update_identity). A `None`
/// field is left as it is; the id, account and external id never change.
///
/// ```
/// use keygate::{Credits, IdentityChange};
/// let change = IdentityChange::default().with_credits(Some(Credits::new(10)));
/// assert!(!change.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityChange {
    /// New metadata (replaces the whole object).
    pub metadata: Option<Metadata>,
    /// New credits; `Some(None)` removes the shared usage limit.
    pub credits: Option<Option<Credits>>,
    /// New rate limits (replace all of them).
    pub rate_limits: Option<Vec<(String, Quota)>>,
}

impl IdentityChange {
    /// Sets [`metadata`](Self::metadata).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets [`credits`](Self::credits).
    #[must_use]
    pub fn with_credits(mut self, credits: Option<Credits>) -> Self {
        self.credits = Some(credits);
        self
    }

    /// Sets [`rate_limits`](Self::rate_limits).
    #[must_use]
    pub fn with_rate_limits(mut self, limits: Vec<(String, Quota)>) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// True when the change changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the change to an identity (what every store does under its
    /// row lock).
    pub fn apply(&self, identity: &mut Identity) {
        if let Some(metadata) = &self.metadata {
            identity.metadata = metadata.clone();
        }
        if let Some(credits) = self.credits {
            identity.credits = credits;
        }
        if let Some(limits) = &self.rate_limits {
            identity.rate_limits.clone_from(limits);
        }
    }
}

/// Checks an external id: 1 to [`MAX_EXTERNAL_ID_LEN`] bytes, no control
/// characters.
pub(crate) fn valid_external_id(external_id: &str) -> bool {
    !external_id.is_empty()
        && external_id.len() <= MAX_EXTERNAL_ID_LEN
        && !external_id.chars().any(char::is_control)
}
