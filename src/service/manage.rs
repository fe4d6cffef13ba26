//! Key management through a [`Manager`]: create, import, list, get, revoke,
//! rotate and reset, each checked against the manager's [`Actor`].

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Actor, ApiKeys};
use crate::audit::AuditKind;
use crate::credits::{Credits, Refill};
use crate::error::{AuthError, ConflictKind, Error, InvalidRequest};
use crate::identity::IdentityId;
use crate::key::{IssuedKey, KeyFormat, ParsedKey};
use crate::metadata::Metadata;
use crate::ratelimit::Quota;
use crate::store::{AccountId, KeyId, KeyRecord, ListQuery, OldKey, SecretAgeQuery};

/// Longest key name accepted, in characters.
pub const MAX_NAME_LEN: usize = 200;

/// Most keys one list page returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// How many times creation retries when a profile wants unique lookup ids.
const LOOKUP_RETRIES: usize = 8;

/// Most scopes one create request may name.
pub const MAX_REQUEST_SCOPES: usize = 128;

/// Most rate-limit overrides one create request may carry.
pub const MAX_REQUEST_LIMITS: usize = 32;

/// What a new key should be: its name and what it may do.
///
/// It deserializes from a request body such as
/// `{"name": "CI", "bundle": "sdk", "expires_at": "2030-01-01T00:00:00Z",
/// "rate_limits": {"send": {"limit": 5, "period_ms": 60000}}}` (`label` is
/// accepted for `name`; unknown fields are refused). What it asks for is
/// checked when the key is created: at most [`MAX_REQUEST_SCOPES`] scopes
/// and [`MAX_REQUEST_LIMITS`] overrides, known names only.
///
/// ```
/// use keygate::CreateKey;
/// let request = CreateKey::new("Production SDK").bundle("sdk");
/// let parsed: CreateKey = serde_json::from_str(r#"{"name": "Production SDK", "bundle": "sdk"}"#).unwrap();
/// assert_eq!(parsed.name(), request.name());
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    // The routes name a key that comes without one.
    #[serde(alias = "label")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = false,
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    name: String,
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 128))]
    scopes: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default, deserialize_with = "limits_from_map")]
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::HashMap<String, Quota>))]
    rate_limits: Vec<(String, Quota)>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    credits: Option<CreditsRequest>,
    #[serde(default)]
    identity: Option<IdentityId>,
    #[serde(skip)]
    all_scopes: bool,
}

/// Credits as a request names them: `{"remaining": 100, "refill": {"amount":
/// 100, "interval_ms": 86400000}}` (`refill` optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct CreditsRequest {
    pub(super) remaining: u64,
    #[serde(default)]
    pub(super) refill: Option<Refill>,
}

impl CreditsRequest {
    /// The credits, counting refills from `now`.
    pub(super) fn at(self, now: OffsetDateTime) -> Result<Credits, Error> {
        if self.refill.is_some_and(|r| r.interval_ms == 0) {
            return Err(InvalidRequest::RefillInterval.into());
        }
        // The API's integers are int64: what every store keeps exactly.
        let counts = [
            ("credits.remaining", Some(self.remaining)),
            ("credits.refill.amount", self.refill.map(|r| r.amount)),
            (
                "credits.refill.interval_ms",
                self.refill.map(|r| r.interval_ms),
            ),
        ];
        for (field, value) in counts {
            if value.is_some_and(|v| i64::try_from(v).is_err()) {
                return Err(InvalidRequest::TooLarge { field }.into());
            }
        }
        Ok(Credits {
            remaining: self.remaining,
            refill: self.refill,
            refilled_at: now,
        })
    }
}

/// Rate-limit overrides as a JSON object: class name → quota.
pub(super) fn limits_from_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Quota)>, D::Error> {
    let map: std::collections::BTreeMap<String, Quota> = serde::Deserialize::deserialize(d)?;
    Ok(map.into_iter().collect())
}

impl CreateKey {
    /// The requested name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when the request names neither a bundle nor a scope (the
    /// profile's default bundle then applies).
    pub fn has_grant(&self) -> bool {
        self.bundle.is_some() || !self.scopes.is_empty()
    }

    /// A request for a key labelled `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Grants every scope the profile defines: its all-scopes bundle when it
    /// has one (which also covers scopes added later), else each scope by
    /// name. For an admin key; a key actor may grant it only if it holds
    /// every scope itself.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// // MailChannels without its one-scope rule: no all-scopes bundle, so
    /// // each scope by name.
    /// let profile = profiles::mailchannels().with_one_scope_per_key(false);
    /// let api = ApiKeys::in_memory(profile)?;
    /// let org = AccountId::new("org")?;
    /// let admin = api.operator().create(&org, CreateKey::new("admin").all_scopes()).await?;
    /// assert_eq!(admin.info.scopes, ["api", "inbound"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn all_scopes(mut self) -> Self {
        self.all_scopes = true;
        self
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

    /// Limits the key to `remaining` uses: each
    /// [`verify_for`](crate::ApiKeys::verify_for) spends its operation's
    /// [cost](crate::Operation::cost), and at zero the key gets
    /// [`AuthError::UsageExceeded`] (429) until a [refill](Self::refill).
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, AuthError, CreateKey, Refill};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let org = AccountId::new("org")?;
    /// let trial = CreateKey::new("trial").bundle("sdk").credits(2).refill(Refill::daily(2));
    /// let key = api.operator().create(&org, trial).await?;
    /// let read = api.operation("read")?;
    /// let p = api.verify_for(key.key.expose_secret(), &read).await?;
    /// assert_eq!(p.credits_remaining(), Some(1));
    /// api.verify_for(key.key.expose_secret(), &read).await?;
    /// let err = api.verify_for(key.key.expose_secret(), &read).await.unwrap_err();
    /// assert!(matches!(err, AuthError::UsageExceeded { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn credits(mut self, remaining: u64) -> Self {
        let refill = self.credits.and_then(|c| c.refill);
        self.credits = Some(CreditsRequest { remaining, refill });
        self
    }

    /// Refills the key's credits (see [`credits`](Self::credits); without a
    /// starting amount, the key starts full).
    pub fn refill(mut self, refill: Refill) -> Self {
        let remaining = self.credits.map_or(refill.amount, |c| c.remaining);
        self.credits = Some(CreditsRequest {
            remaining,
            refill: Some(refill),
        });
        self
    }

    /// Attaches the key to an [identity](crate::Identity) of the key's own
    /// account: the identity's credits and rate limits are shared by all its
    /// keys. A key actor on an identity creates keys on that identity only
    /// (the default when none is named); naming another is
    /// [`Error::InsufficientScope`]. An id that is not an identity of the
    /// key's account (missing, or another tenant's) is 400
    /// [`InvalidRequest::UnknownIdentity`](crate::InvalidRequest::UnknownIdentity).
    pub fn identity(mut self, identity: IdentityId) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Attaches metadata, returned on every [`Principal`](crate::Principal)
    /// the key verifies to and in its [`KeyInfo`].
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// What happens to the old key when a key is rotated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotation {
    /// The old key stops working at once.
    #[default]
    Immediate,
    /// The old key keeps working for this long, then expires. At most the
    /// profile's [`max_grace`](crate::Profile::max_grace).
    Grace(Duration),
}

/// A key as shown to its owner: never the secret, only the redacted lookup id
/// (and, for key pairs, the public API key, which is always visible).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
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
    /// When its current secret was set: at creation, at the last secret
    /// reset, or by the rotation that made it.
    #[serde(with = "time::serde::rfc3339")]
    pub secret_set_at: OffsetDateTime,
    /// When a secret reset becomes recommended: `secret_set_at` plus the
    /// profile's [`max_secret_age`](crate::Profile::max_secret_age) (absent
    /// when the profile sets none).
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub reset_due_at: Option<OffsetDateTime>,
    /// True when the key is active and `reset_due_at` has come (Mailjet:
    /// the secret is 90 days old): reset it with
    /// [`Manager::reset_secret`].
    pub reset_recommended: bool,
    /// When it expires, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it last verified successfully.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The key that replaced it in a rotation, if it was rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<KeyId>,
    /// When it was disabled, while it is.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// The application's JSON object for the key.
    pub metadata: Metadata,
    /// Its usage credits, if it has a usage limit (`remaining` as last
    /// written to the store).
    pub credits: Option<Credits>,
    /// The identity it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityId>,
}

impl KeyInfo {
    /// The public view of `r` at `now`, for a profile whose secrets should
    /// be reset once they are `max_secret_age` old.
    fn from_record(r: KeyRecord, max_secret_age: Option<Duration>, now: OffsetDateTime) -> Self {
        let public_key = (r.format == "pair").then(|| r.lookup.clone());
        let reset_due_at = max_secret_age
            .and_then(|max| time::Duration::try_from(max).ok())
            .and_then(|max| r.secret_set_at.checked_add(max));
        let reset_recommended = r.is_active(now) && reset_due_at.is_some_and(|due| due <= now);
        Self {
            secret_set_at: r.secret_set_at,
            reset_due_at,
            reset_recommended,
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
            replaced_by: r.replaced_by,
            disabled_at: r.disabled_at,
            metadata: r.metadata,
            credits: r.credits,
            identity: r.identity,
        }
    }

    /// True when the key is neither revoked nor expired at `now`. A disabled
    /// key is active (it counts toward limits) but does not verify.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A newly created (or reset) key: the plaintext, shown this once, and its info.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The plaintext. Hand it to the user now; it cannot be recovered.
    pub key: IssuedKey,
    /// The stored key's public view.
    pub info: KeyInfo,
}

impl NewKey {
    /// The one-time response body for this key: its [`KeyInfo`] fields plus
    /// `key`, the plaintext (for key pairs the secret key; `public_key` is in
    /// the info). This is the only serialized form that carries a secret:
    /// send it once, to the client that asked, and never log it.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let org = AccountId::new("org")?;
    /// let new = api.operator().create(&org, CreateKey::new("ci").bundle("sdk")).await?;
    /// let body = serde_json::to_value(new.response())?;
    /// assert_eq!(body["key"], new.key.expose_secret());
    /// assert_eq!(body["name"], "ci");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn response(&self) -> NewKeyResponse<'_> {
        NewKeyResponse {
            info: &self.info,
            key: self.key.expose_secret(),
        }
    }
}

/// The serialized one-time response for a [`NewKey`]; see [`NewKey::response`].
#[derive(Serialize)]
pub struct NewKeyResponse<'a> {
    #[serde(flatten)]
    info: &'a KeyInfo,
    key: &'a str,
}

impl std::fmt::Debug for NewKeyResponse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKeyResponse")
            .field("info", self.info)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Page {
    /// The keys on this page.
    pub data: Vec<KeyInfo>,
    /// Pass as [`ListOptions::after`] to get the next page; `None` on the last page.
    pub next: Option<KeyId>,
}

/// Options for [`Manager::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// Include revoked keys.
    pub include_revoked: bool,
    /// Continue after this key id (from [`Page::next`]).
    pub after: Option<KeyId>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`].
    pub limit: usize,
}

impl ListOptions {
    /// Sets [`include_revoked`](Self::include_revoked).
    #[must_use]
    pub fn with_include_revoked(mut self, include_revoked: bool) -> Self {
        self.include_revoked = include_revoked;
        self
    }

    /// Sets [`after`](Self::after).
    #[must_use]
    pub fn with_after(mut self, after: Option<KeyId>) -> Self {
        self.after = after;
        self
    }

    /// Sets [`limit`](Self::limit).
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
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

/// Management calls made by one [`Actor`]. Get one from
/// [`ApiKeys::operator`], [`ApiKeys::as_account`], [`ApiKeys::as_key`] or
/// [`ApiKeys::manage`]; it borrows the service and is cheap to make per
/// request.
///
/// ```
/// use keygate::{profiles, AccountId, ApiKeys, CreateKey, ListOptions, Rotation};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let api = ApiKeys::in_memory(profiles::mailjawn())?;
/// let org = AccountId::new("org_1")?;
/// let keys = api.as_account(&org);
/// let ci = keys.create(&org, CreateKey::new("CI").bundle("sdk")).await?;
/// assert_eq!(keys.list(&org, ListOptions::default()).await?.data.len(), 1);
/// let next = keys.rotate(&ci.info.id, Rotation::Immediate).await?;
/// keys.revoke(&next.info.id).await?;
/// assert!(api.verify(next.key.expose_secret()).await.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Manager<'a> {
    pub(super) api: &'a ApiKeys,
    pub(super) actor: Actor,
}

impl Manager<'_> {
    /// Creates a key for `account` and returns its plaintext, this once.
    ///
    /// Fails with [`Error::NotFound`] when the actor does not reach `account`
    /// (or it is an unregistered sub-account), [`Error::InsufficientScope`]
    /// (403) when a key actor asks for more than it holds (the profile's
    /// default bundle included), [`Error::KeyLimitReached`] past the
    /// profile's per-account limit and [`Error::Scope`] naming an unknown
    /// scope or bundle. A key actor's own rate limits and expiry carry over:
    /// the new key never outlives or outpaces it.
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "create", account = %account)))]
    pub async fn create(&self, account: &AccountId, request: CreateKey) -> Result<NewKey, Error> {
        self.reach(account).await?;
        let api = self.api;
        let now = api.inner.clock.now();
        let mut checked = self.check_request(&request, now)?;
        checked.identity = self
            .identity_for_new_key(account, request.identity.as_ref())
            .await?;
        let format = match &request.format {
            Some(label) => api
                .inner
                .profile
                .format(label)
                .map(|(_, f)| f)
                .ok_or_else(|| InvalidRequest::UnknownFormat(label.clone()))?,
            None => &api.inner.profile.formats[0],
        };
        let key = api.generate(format).await?;
        let info = self
            .insert_new(account, checked, format, key.parsed(), now)
            .await
            .map_err(|e| match e {
                // A fresh random key cannot clash with a stored one, so a
                // clash here is a lookup id taken in a race.
                Error::Conflict(_) => Error::Conflict(ConflictKind::NoFreeLookup),
                other => other,
            })?;
        Ok(NewKey { key, info })
    }

    /// Builds the record for a validated request and a credential, inserts it
    /// under the profile's key limit and records the audit event. The record
    /// is built before the returned future, so the caller's future holds it
    /// once rather than beside the request it came from.
    fn insert_new(
        &self,
        account: &AccountId,
        checked: Checked,
        format: &KeyFormat,
        credential: ParsedKey<'_>,
        now: OffsetDateTime,
    ) -> impl std::future::Future<Output = Result<KeyInfo, Error>> + Send + 'static {
        let inner = &*self.api.inner;
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
            secret_set_at: now,
            expires_at: checked.expires_at,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
            lineage: None,
            disabled_at: None,
            metadata: checked.metadata,
            credits: checked.credits,
            identity: checked.identity,
        };
        let (api, actor, limit) = (
            self.api.clone(),
            self.actor.clone(),
            inner.profile.key_limit,
        );
        to_completion(async move {
            api.inner
                .store
                .insert_key(record.clone(), limit, now)
                .await?;
            // The event and the view take the creation time: the key was
            // created at `now`, and a second clock read would only cost.
            api.record_audit_at(&actor, AuditKind::Created, &record, now);
            Ok(api.info_at(record, now))
        })
    }

    /// Checks a create or import request against the profile and the actor:
    /// the name, the grant (the default bundle when none is chosen), the
    /// rate-limit classes and the expiry.
    fn check_request(&self, request: &CreateKey, now: OffsetDateTime) -> Result<Checked, Error> {
        let profile = &self.api.inner.profile;
        let name = validate_name(&request.name)?;
        if request.scopes.len() > MAX_REQUEST_SCOPES {
            return Err(InvalidRequest::TooManyScopes {
                max: MAX_REQUEST_SCOPES,
            }
            .into());
        }
        if request.rate_limits.len() > MAX_REQUEST_LIMITS {
            return Err(InvalidRequest::TooManyLimits {
                max: MAX_REQUEST_LIMITS,
            }
            .into());
        }
        let all_bundle = || {
            profile
                .catalog
                .bundle_names()
                .find(|b| profile.catalog.bundle_set(b).is_ok_and(|set| set.is_all()))
        };
        if profile.one_scope_per_key && !request.has_grant() && !request.all_scopes {
            return Err(one_scope(profile));
        }
        let (bundle, scopes) = match (&request.bundle, request.scopes.is_empty()) {
            _ if request.all_scopes => match all_bundle() {
                Some(b) => (Some(b.to_owned()), Vec::new()),
                None => (
                    None,
                    profile.catalog.scope_names().map(str::to_owned).collect(),
                ),
            },
            (None, true) => match &profile.default_bundle {
                Some(b) => (Some(b.clone()), Vec::new()),
                None => return Err(InvalidRequest::NoGrant.into()),
            },
            (bundle, _) => (bundle.clone(), request.scopes.clone()),
        };
        let grant = profile.catalog.compile_grant(bundle.as_deref(), &scopes)?;
        if profile.one_scope_per_key
            && (grant.is_all() || profile.catalog.names_in(&grant).len() != 1)
        {
            return Err(one_scope(profile));
        }
        self.check_grant(grant)?;
        for (class, _) in &request.rate_limits {
            if profile.rate_limits.index_of(class).is_none() {
                return Err(InvalidRequest::UnknownClass(class.clone()).into());
            }
        }
        self.check_limits(&request.rate_limits)?;
        if request.expires_at.is_some_and(|e| e <= now) {
            return Err(InvalidRequest::ExpiryInPast.into());
        }
        let mut rate_limits = request.rate_limits.clone();
        let mut expires_at = request.expires_at;
        self.inherit(&mut rate_limits, &mut expires_at);
        Ok(Checked {
            name,
            bundle,
            scopes,
            rate_limits,
            expires_at,
            metadata: request.metadata.clone(),
            credits: self.check_credits(request.credits.map(|c| c.at(now)).transpose()?, now)?,
            identity: None,
        })
    }

    /// Stores a key issued elsewhere (kept in a secret manager, or migrated
    /// from another system) for `account`, so it verifies like a key created
    /// here. `plaintext` must parse with one of the profile's formats (a key
    /// pair as `public:secret`); only its hash is stored, and the plaintext is
    /// never returned. Only the [operator](ApiKeys::operator) may import:
    /// anyone else gets [`Error::OperatorOnly`] (403), so no tenant can probe
    /// which keys exist.
    ///
    /// Fails with [`Error::Invalid`] when the key is malformed (the message
    /// gives the reason, never the key), [`Error::Conflict`] when the key
    /// cannot be stored because it (or, for a key pair, its public key) is
    /// already in use — one answer that names nothing — and like
    /// [`create`](Self::create) otherwise. Concurrent imports of one key
    /// store it once: the database refuses the others with the same
    /// [`Error::Conflict`].
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey, KeyFormat};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let admin = AccountId::new("org_admin")?;
    /// let kept = api.profile().formats()[0].generate(); // e.g. read from a secret manager
    /// let info = api
    ///     .operator()
    ///     .import(&admin, kept.expose_secret(), CreateKey::new("admin").bundle("full_access"))
    ///     .await?;
    /// assert_eq!(api.verify(kept.expose_secret()).await?.key_id(), &info.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "import", account = %account)))]
    pub async fn import(
        &self,
        account: &AccountId,
        plaintext: &str,
        request: CreateKey,
    ) -> Result<KeyInfo, Error> {
        if !matches!(self.actor, Actor::Operator) {
            return Err(Error::OperatorOnly);
        }
        self.reach(account).await?;
        let inner = &*self.api.inner;
        let now = inner.clock.now();
        let credential = self.api.parse(plaintext).map_err(|e| match e {
            AuthError::Malformed { reason } => Error::from(InvalidRequest::MalformedKey(reason)),
            other => Error::Auth(other),
        })?;
        let mut checked = self.check_request(&request, now)?;
        checked.identity = self
            .identity_for_new_key(account, request.identity.as_ref())
            .await?;
        let format = &inner.profile.formats[credential.format_index()];
        if let Some(label) = &request.format {
            if label != format.label() {
                return Err(InvalidRequest::FormatMismatch(label.clone()).into());
            }
        }
        let cannot = || Error::Conflict(ConflictKind::KeyInUse);
        let secret = credential.expose_secret();
        let candidates = inner.store.find_by_lookup(credential.lookup()).await?;
        // A revoked key stays revoked: its secret is never stored again.
        if candidates
            .iter()
            .any(|e| inner.hasher.verify(secret, e.hash()))
        {
            return Err(cannot());
        }
        if inner.profile.unique_lookup && candidates.iter().any(|e| !e.is_revoked()) {
            return Err(cannot());
        }
        self.insert_new(account, checked, format, credential, now)
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => cannot(),
                other => other,
            })
    }

    /// Makes sure a key kept elsewhere (e.g. an admin key in a secret manager,
    /// read at every start) is stored for `account`: imports it when absent,
    /// and succeeds without change when it is already stored, active, for
    /// `account` with the same grant. Any other state (revoked, another
    /// account, another grant) is [`Error::Conflict`]; a revoked key is never
    /// brought back. Operator only, like [`import`](Self::import). Safe to
    /// call from several instances at once.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let admin = AccountId::new("org_admin")?;
    /// let kept = api.profile().formats()[0].generate();
    /// let grant = || CreateKey::new("admin").bundle("full_access");
    /// let first = api.operator().ensure_key(&admin, kept.expose_secret(), grant()).await?;
    /// let again = api.operator().ensure_key(&admin, kept.expose_secret(), grant()).await?;
    /// assert_eq!(first.id, again.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "ensure_key", account = %account)))]
    pub async fn ensure_key(
        &self,
        account: &AccountId,
        plaintext: &str,
        request: CreateKey,
    ) -> Result<KeyInfo, Error> {
        let (bundle, scopes) = (request.bundle.clone(), request.scopes.clone());
        let default = self.api.inner.profile.default_bundle.clone();
        let same_grant = |info: &KeyInfo| match (&bundle, scopes.is_empty()) {
            (None, true) => info.bundle == default && info.scopes.is_empty(),
            _ => info.bundle == bundle && info.scopes == scopes,
        };
        for _ in 0..2 {
            match self.import(account, plaintext, request.clone()).await {
                Err(Error::Conflict(message)) => match self.api.stored_info(plaintext).await {
                    Some(info)
                        if &info.account == account
                            && info.revoked_at.is_none()
                            && same_grant(&info) =>
                    {
                        return Ok(info)
                    }
                    // Taken by a concurrent import that was then revoked, or
                    // held by something else: nothing to reconcile.
                    Some(_) => return Err(Error::Conflict(message)),
                    // The clash went away (a racing import failed): try again.
                    None => continue,
                },
                other => return other,
            }
        }
        Err(Error::Conflict(ConflictKind::KeyInUse))
    }

    /// A page of `records`, read with `limit`: a full page names its last
    /// key as where the next one starts.
    fn page(&self, records: Vec<KeyRecord>, limit: usize) -> Page {
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| r.id.clone()))
            .flatten();
        Page {
            data: records.into_iter().map(|r| self.api.info(r)).collect(),
            next,
        }
    }

    /// Lists `account`'s keys (redacted, never the secret).
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "list", account = %account)))]
    pub async fn list(&self, account: &AccountId, options: ListOptions) -> Result<Page, Error> {
        self.reach(account).await?;
        if options.limit == 0 || options.limit > MAX_PAGE_SIZE {
            return Err(InvalidRequest::PageSize { max: MAX_PAGE_SIZE }.into());
        }
        let query = ListQuery {
            include_revoked: options.include_revoked,
            after: options.after,
            limit: options.limit,
        };
        let records = self.api.inner.store.list_keys(account, &query).await?;
        Ok(self.page(records, options.limit))
    }

    /// One key's info, if the actor reaches its account.
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "get", key_id = %id)))]
    pub async fn get(&self, id: &KeyId) -> Result<KeyInfo, Error> {
        let entry = self.reach_key(id).await?;
        Ok(self.api.info(entry.snapshot()))
    }

    /// Active keys whose secret is at least the profile's
    /// [`max_secret_age`](crate::Profile::max_secret_age) old (Mailjet: 90
    /// days), in id order, a page at a time: for the operator in every
    /// account, for an account or key within its own account and
    /// sub-accounts. Empty when the profile sets no maximum.
    /// [`include_revoked`](ListOptions::include_revoked) is ignored: a
    /// revoked key needs no reset.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey, ListOptions, ManualClock};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let clock = ManualClock::new();
    /// let api = ApiKeys::builder(profiles::mailjet()).clock(clock.clone()).build()?;
    /// let acme = AccountId::new("acme")?;
    /// let key = api.as_account(&acme).create(&acme, CreateKey::new("smtp")).await?;
    /// assert!(!key.info.reset_recommended);
    ///
    /// clock.advance(Duration::from_secs(90 * 86_400));
    /// let due = api.as_account(&acme).due_for_reset(ListOptions::default()).await?;
    /// assert_eq!(due.data[0].id, key.info.id);
    /// assert!(due.data[0].reset_recommended);
    ///
    /// api.as_account(&acme).reset_secret(&key.info.id).await?;
    /// assert!(api.as_account(&acme).due_for_reset(ListOptions::default()).await?.data.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[cfg_attr(
        feature = "spans",
        tracing::instrument(name = "keygate.manage", skip_all, fields(op = "due_for_reset"))
    )]
    pub async fn due_for_reset(&self, options: ListOptions) -> Result<Page, Error> {
        self.own_actor()?;
        if options.limit == 0 || options.limit > MAX_PAGE_SIZE {
            return Err(InvalidRequest::PageSize { max: MAX_PAGE_SIZE }.into());
        }
        let inner = &*self.api.inner;
        let now = inner.clock.now();
        let cutoff = inner
            .profile
            .max_secret_age
            .and_then(|max| time::Duration::try_from(max).ok())
            .and_then(|max| now.checked_sub(max));
        let Some(set_before) = cutoff else {
            return Ok(Page {
                data: Vec::new(),
                next: None,
            });
        };
        let query = SecretAgeQuery {
            set_before,
            active_at: now,
            within: self.actor.account().cloned(),
            after: options.after,
            limit: options.limit,
        };
        let records = inner.store.list_stale_secrets(&query).await?;
        Ok(self.page(records, options.limit))
    }

    /// Revokes a key at once: the next verify fails with [`AuthError::Revoked`].
    /// The record is kept for audit. Revoking twice is not an error.
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "revoke", key_id = %id)))]
    pub async fn revoke(&self, id: &KeyId) -> Result<(), Error> {
        let entry = self.reach_key(id).await?;
        let record = entry.record();
        self.check_target(&record)?;
        if record.revoked_at.is_some() {
            return Ok(());
        }
        let (api, actor, id) = (self.api.clone(), self.actor.clone(), id.clone());
        to_completion(async move {
            api.inner
                .store
                .revoke_key(&id, api.inner.clock.now())
                .await?;
            if record.lineage.is_none() && record.replaced_by.is_none() {
                // No other key shares this key's rate-limit state.
                api.forget_limits(&id);
            }
            api.record_audit(&actor, AuditKind::Revoked, &record);
            Ok(())
        })
        .await
    }

    /// Replaces a key with a new one of the same name, format, scopes, limits
    /// and expiry. The old key stops working at once or after a grace period
    /// of at most the profile's [`max_grace`](crate::Profile::max_grace).
    ///
    /// A key is rotated once: rotating a key that already has a successor
    /// (one still in its grace period) is [`Error::AlreadyRotated`] (409), so
    /// rotations cannot multiply keys past the profile's limit.
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "rotate", key_id = %id)))]
    pub async fn rotate(&self, id: &KeyId, rotation: Rotation) -> Result<NewKey, Error> {
        let api = self.api;
        let inner = &*api.inner;
        let now = inner.clock.now();
        let old_key = match rotation {
            Rotation::Immediate => OldKey::RevokeAt(now),
            Rotation::Grace(d) => {
                let max = inner.profile.max_grace;
                if d > max {
                    return Err(InvalidRequest::GraceTooLong { max }.into());
                }
                let until = time::Duration::try_from(d)
                    .ok()
                    .and_then(|d| now.checked_add(d))
                    .ok_or(InvalidRequest::GraceTooLong {
                        max: inner.profile.max_grace,
                    })?;
                OldKey::ExpireAt(until)
            }
        };
        let entry = self.reach_key(id).await?;
        let old = entry.record();
        self.check_target(&old)?;
        if old.revoked_at.is_some() {
            return Err(Error::Revoked);
        }
        if old.replaced_by.is_some() {
            return Err(Error::AlreadyRotated);
        }
        let format = api.configured_format(&old.format)?;
        let key = api.generate(format).await?;
        let record = KeyRecord {
            id: KeyId::generate(now),
            lookup: key.lookup().to_owned(),
            hash: inner.hasher.hash(key.expose_secret()),
            created_at: now,
            secret_set_at: now,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
            // The successor draws on its predecessor's buckets: during a grace
            // period both share them, and a rotation never refills them.
            lineage: Some(old.lineage().clone()),
            ..old.clone()
        };
        let (api, actor, id) = (self.api.clone(), self.actor.clone(), id.clone());
        let info = to_completion(async move {
            api.inner
                .store
                .rotate_key(&id, record.clone(), old_key)
                .await?;
            let replacement = record.id.clone();
            api.record_audit(&actor, AuditKind::Rotated { replacement }, &old);
            Ok(api.info(record))
        })
        .await?;
        Ok(NewKey { key, info })
    }

    /// Issues a new secret under the same key id; the old secret fails at once.
    /// Key pairs keep their public key (Mailjet's "reset secret key"); single
    /// tokens get a whole new token.
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "reset_secret", key_id = %id)))]
    pub async fn reset_secret(&self, id: &KeyId) -> Result<NewKey, Error> {
        let api = self.api;
        let entry = self.reach_key(id).await?;
        let record = entry.record();
        self.check_target(&record)?;
        if record.revoked_at.is_some() {
            return Err(Error::Revoked);
        }
        let format = api.configured_format(&record.format)?;
        let key = match format {
            KeyFormat::Pair(p) => IssuedKey::pair(record.lookup.clone(), p.generate_secret_text()),
            KeyFormat::Token(_) => api.generate(format).await?,
        };
        let hash = api.inner.hasher.hash(key.expose_secret());
        let mut updated = entry.snapshot();
        updated.lookup = key.lookup().to_owned();
        updated.hash = hash;
        updated.secret_set_at = api.inner.clock.now();
        let (api, actor) = (self.api.clone(), self.actor.clone());
        let info = to_completion(async move {
            api.inner
                .store
                .replace_secret(
                    &updated.id,
                    &updated.lookup,
                    updated.hash.clone(),
                    updated.secret_set_at,
                )
                .await?;
            api.record_audit(&actor, AuditKind::SecretReset, &record);
            Ok(api.info(updated))
        })
        .await?;
        Ok(NewKey { key, info })
    }
}

impl ApiKeys {
    /// The stored key whose secret is `plaintext`, if any (revoked included).
    async fn stored_info(&self, plaintext: &str) -> Option<KeyInfo> {
        let credential = self.parse(plaintext).ok()?;
        let secret = credential.expose_secret();
        self.inner
            .store
            .find_by_lookup(credential.lookup())
            .await
            .ok()?
            .into_iter()
            .find(|e| self.inner.hasher.verify(secret, e.hash()))
            .map(|e| self.info(e.snapshot()))
    }

    /// The public view of a stored key now, with this profile's secret-age
    /// advice.
    pub(super) fn info(&self, record: KeyRecord) -> KeyInfo {
        self.info_at(record, self.inner.clock.now())
    }

    /// The public view of `record` as of `now`.
    pub(super) fn info_at(&self, record: KeyRecord, now: OffsetDateTime) -> KeyInfo {
        KeyInfo::from_record(record, self.inner.profile.max_secret_age, now)
    }

    /// The configured format a stored key was made with.
    fn configured_format(&self, label: &str) -> Result<&KeyFormat, Error> {
        self.inner
            .profile
            .format(label)
            .map(|(_, f)| f)
            .ok_or_else(|| InvalidRequest::UnknownFormat(label.to_owned()).into())
    }

    /// Generates a key, retrying while its lookup id is taken if the profile
    /// asks for unique lookups.
    async fn generate(&self, format: &KeyFormat) -> Result<IssuedKey, Error> {
        for _ in 0..LOOKUP_RETRIES {
            let key = format.generate();
            if !self.inner.profile.unique_lookup {
                return Ok(key);
            }
            let taken = match self.inner.store.find_now(key.lookup(), &mut |_| true) {
                Some(found) => found.is_some(),
                None => !self
                    .inner
                    .store
                    .find_by_lookup(key.lookup())
                    .await?
                    .is_empty(),
            };
            if !taken {
                return Ok(key);
            }
        }
        Err(Error::Conflict(ConflictKind::NoFreeLookup))
    }

    fn forget_limits(&self, id: &KeyId) {
        self.inner.detached.remove(id.as_str());
        if let super::Limiter::Shared(shared) = &self.inner.limiter {
            shared.forget(id.as_str());
        }
    }
}

/// Runs a store write and its follow-ups (audit event, rate-limit state) to
/// the end even when the caller's future is dropped halfway, as an axum
/// handler's is when its client disconnects: on a tokio runtime the write runs
/// as a task the caller awaits, so dropping the caller leaves the task
/// running. Without a runtime (the default build, whose memory store never
/// suspends) it runs inline.
pub(super) async fn to_completion<T: Send + 'static>(
    write: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    #[cfg(any(
        feature = "sqlite",
        feature = "postgres",
        feature = "redis",
        feature = "tower"
    ))]
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        return match runtime.spawn(write).await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Store(crate::store::StoreError::Unavailable(
                "the runtime is shutting down".into(),
            ))),
        };
    }
    write.await
}

/// A create request after validation, ready to become a record.
struct Checked {
    name: String,
    bundle: Option<String>,
    scopes: Vec<String>,
    rate_limits: Vec<(String, Quota)>,
    expires_at: Option<OffsetDateTime>,
    metadata: Metadata,
    credits: Option<Credits>,
    identity: Option<IdentityId>,
}

/// The error for a request that breaks a one-scope-per-key profile.
fn one_scope(profile: &crate::Profile) -> Error {
    let choices = profile.catalog.scope_names().collect::<Vec<_>>().join(", ");
    InvalidRequest::OneScopePerKey { choices }.into()
}

pub(super) fn validate_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(InvalidRequest::EmptyName.into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(InvalidRequest::NameTooLong { max: MAX_NAME_LEN }.into());
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidRequest::NameControlCharacters.into());
    }
    Ok(name.to_owned())
}
