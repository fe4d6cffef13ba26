//! Changing a key without reissuing it: reversible [`disable`](Manager::disable)
//! and [`enable`](Manager::enable), and [`update`](Manager::update) of its
//! name, metadata, expiry, rate-limit overrides and (where the profile
//! allows) scopes. Each is checked against the manager's actor like the
//! other management calls, audited, and reaches every instance's cache the
//! way revocation does.

use time::OffsetDateTime;

use super::manage::{limits_from_map, to_completion, validate_name, CreditsRequest};
use super::{KeyInfo, Manager, MAX_REQUEST_LIMITS, MAX_REQUEST_SCOPES};
use crate::audit::AuditKind;
use crate::credits::Refill;
use crate::error::{Error, InvalidRequest};
use crate::identity::IdentityId;
use crate::metadata::Metadata;
use crate::ratelimit::Quota;
use crate::store::{KeyChange, KeyId};

/// What to change on a key, for [`Manager::update`]. Fields left unset stay
/// as they are.
///
/// It deserializes from a `PATCH` body such as
/// `{"name": "CI", "metadata": {"team": "infra"}, "expires_at": null,
/// "rate_limits": {"send": {"limit": 5, "period_ms": 60000}}}`: `expires_at`
/// set to `null` removes the expiry, `rate_limits` replaces every override,
/// `bundle` and `scopes` replace the grant, `credits` (`{"remaining": 100,
/// "refill": {"amount": 100, "interval_ms": 86400000}}`, or `null` for no
/// usage limit) replaces the credits, `identity` (an identity id, or `null`)
/// moves the key to an identity of its account or off one. Unknown fields
/// are refused.
///
/// ```
/// use keygate::{KeyUpdate, Metadata};
/// let update = KeyUpdate::new()
///     .name("CI (legacy)")
///     .metadata(Metadata::from_value(serde_json::json!({"team": "infra"})).unwrap());
/// let parsed: KeyUpdate = serde_json::from_str(r#"{"expires_at": null}"#).unwrap();
/// assert!(!parsed.is_empty());
/// assert!(KeyUpdate::new().is_empty());
/// # let _ = update;
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    #[serde(default, alias = "label")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "present_expiry")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<OffsetDateTime>))]
    expires_at: Option<Option<OffsetDateTime>>,
    #[serde(default, deserialize_with = "present_limits")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::HashMap<String, Quota>>))]
    rate_limits: Option<Vec<(String, Quota)>>,
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 128))]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present_credits")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<CreditsRequest>))]
    credits: Option<Option<CreditsRequest>>,
    #[serde(default, deserialize_with = "present_identity")]
    identity: Option<Option<IdentityId>>,
}

/// A present `identity` (an id, or `null` to detach the key).
fn present_identity<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<IdentityId>>, D::Error> {
    <Option<IdentityId> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A present `credits` (an object, or `null` to remove the usage limit).
fn present_credits<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<CreditsRequest>>, D::Error> {
    <Option<CreditsRequest> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A present `expires_at` (a time, or `null` to remove the expiry).
fn present_expiry<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

/// A present `rate_limits` object.
fn present_limits<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, Quota)>>, D::Error> {
    limits_from_map(d).map(Some)
}

impl KeyUpdate {
    /// An update that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Renames the key.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Replaces the key's metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the expiry (`None` removes it).
    #[must_use]
    pub fn expires_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Replaces every rate-limit override (an empty list removes them).
    #[must_use]
    pub fn rate_limits(mut self, limits: Vec<(String, Quota)>) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// Replaces the grant with this bundle (and the scopes given with
    /// [`scopes`](Self::scopes), if any). Refused where the profile fixes
    /// scopes at creation.
    #[must_use]
    pub fn bundle(mut self, bundle: impl Into<String>) -> Self {
        self.bundle = Some(bundle.into());
        self
    }

    /// Replaces the grant with these scopes (plus the bundle given with
    /// [`bundle`](Self::bundle), if any). Refused where the profile fixes
    /// scopes at creation.
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the key's credits to `remaining`, refilled by `refill` from now
    /// on (a key without credits gets a usage limit). Replaces what is left,
    /// whatever was spent meanwhile.
    #[must_use]
    pub fn credits(mut self, remaining: u64, refill: Option<Refill>) -> Self {
        self.credits = Some(Some(CreditsRequest { remaining, refill }));
        self
    }

    /// Removes the key's usage limit.
    #[must_use]
    pub fn unlimited(mut self) -> Self {
        self.credits = Some(None);
        self
    }

    /// True when the update names no field.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.metadata.is_none()
            && self.expires_at.is_none()
            && self.rate_limits.is_none()
            && self.bundle.is_none()
            && self.scopes.is_none()
            && self.credits.is_none()
            && self.identity.is_none()
    }

    /// Moves the key to an [identity](crate::Identity) of its account, or
    /// detaches it with `None`. A key actor with a budget (credits or an
    /// identity) gets [`Error::InsufficientScope`], since moving a key off
    /// an identity would escape the identity's shared budget. An id that is
    /// not an identity of the key's account is 400
    /// [`InvalidRequest::UnknownIdentity`](crate::InvalidRequest::UnknownIdentity).
    pub fn identity(mut self, identity: Option<IdentityId>) -> Self {
        self.identity = Some(identity);
        self
    }
}

impl Manager<'_> {
    /// Disables a key: verify answers [`AuthError::Disabled`](crate::AuthError::Disabled)
    /// (401 `disabled_api_key`) until it is [enabled](Self::enable) again.
    /// Unlike [`revoke`](Self::revoke) this is reversible; the key keeps its
    /// secret, limits and rate-limit state, and still counts toward the
    /// profile's key limit. Disabling a disabled key changes nothing.
    ///
    /// Fails like [`revoke`](Self::revoke) for a key out of reach or
    /// stronger than a key actor, and with [`Error::Revoked`] for a revoked
    /// key.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, AuthError, CreateKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let org = AccountId::new("org")?;
    /// let key = api.operator().create(&org, CreateKey::new("ci").bundle("sdk")).await?;
    /// api.operator().disable(&key.info.id).await?;
    /// assert_eq!(api.verify(key.key.expose_secret()).await.unwrap_err(), AuthError::Disabled);
    /// api.operator().enable(&key.info.id).await?;
    /// assert!(api.verify(key.key.expose_secret()).await.is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "disable", key_id = %id)))]
    pub async fn disable(&self, id: &KeyId) -> Result<KeyInfo, Error> {
        self.set_disabled(id, true).await
    }

    /// Enables a disabled key again; enabling an enabled key changes nothing.
    /// Fails like [`disable`](Self::disable).
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "enable", key_id = %id)))]
    pub async fn enable(&self, id: &KeyId) -> Result<KeyInfo, Error> {
        self.set_disabled(id, false).await
    }

    async fn set_disabled(&self, id: &KeyId, disable: bool) -> Result<KeyInfo, Error> {
        let entry = self.reach_key(id).await?;
        self.check_target(&entry.record())?;
        if entry.is_revoked() {
            return Err(Error::Revoked);
        }
        if entry.is_disabled() == disable {
            return Ok(self.api.info(entry.snapshot()));
        }
        let now = self.api.inner.clock.now();
        let change = KeyChange::default().with_disabled(disable.then_some(now));
        let kind = if disable {
            AuditKind::Disabled
        } else {
            AuditKind::Enabled
        };
        self.write(id, change, kind).await
    }

    /// Changes a key's name, metadata, expiry, rate-limit overrides or (where
    /// the profile allows) scopes without reissuing it: the secret stays the
    /// same, and the next verify on any instance sees the change.
    ///
    /// Checked like [`create`](Self::create): a key actor may only update
    /// keys no stronger than itself, never into a key stronger than itself
    /// (scopes, limits, or an expiry past its own). Fails with
    /// [`InvalidRequest::ScopesFixed`] when the profile fixes scopes at
    /// creation (MailChannels) and the update names a bundle or scopes,
    /// [`InvalidRequest::EmptyUpdate`] when it names nothing, and
    /// [`Error::Revoked`] for a revoked key.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey, KeyUpdate, Metadata};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let org = AccountId::new("org")?;
    /// let key = api.operator().create(&org, CreateKey::new("ci").bundle("sdk")).await?;
    /// let meta = Metadata::from_value(serde_json::json!({"team": "infra"}))?;
    /// let info = api
    ///     .operator()
    ///     .update(&key.info.id, KeyUpdate::new().name("deploy").metadata(meta.clone()))
    ///     .await?;
    /// assert_eq!(info.name, "deploy");
    /// let principal = api.verify(key.key.expose_secret()).await?;
    /// assert_eq!(principal.metadata(), &meta);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "update", key_id = %id)))]
    pub async fn update(&self, id: &KeyId, update: KeyUpdate) -> Result<KeyInfo, Error> {
        if update.is_empty() {
            return Err(InvalidRequest::EmptyUpdate.into());
        }
        let entry = self.reach_key(id).await?;
        self.check_target(&entry.record())?;
        if entry.is_revoked() {
            return Err(Error::Revoked);
        }
        let identity = update.identity.clone();
        let mut change = self.check_update(update)?;
        if let Some(identity) = identity {
            change.identity = Some(
                self.identity_for_update(&entry.record().account, identity)
                    .await?,
            );
        }
        self.write(id, change, AuditKind::Updated).await
    }

    /// Checks an update against the profile and the actor and turns it into
    /// a store change.
    fn check_update(&self, update: KeyUpdate) -> Result<KeyChange, Error> {
        let profile = &self.api.inner.profile;
        let now = self.api.inner.clock.now();
        let mut change = KeyChange::default();
        if let Some(name) = &update.name {
            change.name = Some(validate_name(name)?);
        }
        change.metadata = update.metadata;
        if let Some(credits) = update.credits {
            let credits = credits.map(|c| c.at(now)).transpose()?;
            let limited_actor = self
                .actor
                .key()
                .is_some_and(|p| p.entry.credits().is_some());
            if credits.is_none() && limited_actor {
                // A key with a usage limit cannot lift another key's.
                return Err(Error::InsufficientScope);
            }
            change.credits = Some(self.check_credits(credits, now)?);
        }
        if update.bundle.is_some() || update.scopes.is_some() {
            if profile.fixed_scopes {
                return Err(InvalidRequest::ScopesFixed.into());
            }
            let scopes = update.scopes.unwrap_or_default();
            if scopes.len() > MAX_REQUEST_SCOPES {
                return Err(InvalidRequest::TooManyScopes {
                    max: MAX_REQUEST_SCOPES,
                }
                .into());
            }
            if update.bundle.is_none() && scopes.is_empty() {
                return Err(InvalidRequest::NoGrant.into());
            }
            let grant = profile
                .catalog
                .compile_grant(update.bundle.as_deref(), &scopes)?;
            self.check_grant(grant)?;
            change.grant = Some((update.bundle, scopes));
        }
        if let Some(mut limits) = update.rate_limits {
            if limits.len() > MAX_REQUEST_LIMITS {
                return Err(InvalidRequest::TooManyLimits {
                    max: MAX_REQUEST_LIMITS,
                }
                .into());
            }
            for (class, _) in &limits {
                if profile.rate_limits.index_of(class).is_none() {
                    return Err(InvalidRequest::UnknownClass(class.clone()).into());
                }
            }
            self.check_limits(&limits)?;
            let mut unused = None;
            self.inherit(&mut limits, &mut unused);
            change.rate_limits = Some(limits);
        }
        if let Some(mut expires_at) = update.expires_at {
            if expires_at.is_some_and(|e| e <= now) {
                return Err(InvalidRequest::ExpiryInPast.into());
            }
            let mut unused = Vec::new();
            self.inherit(&mut unused, &mut expires_at);
            change.expires_at = Some(expires_at);
        }
        Ok(change)
    }

    /// Writes a change and its audit event to the end, even if the caller's
    /// future is dropped.
    async fn write(
        &self,
        id: &KeyId,
        change: KeyChange,
        kind: AuditKind,
    ) -> Result<KeyInfo, Error> {
        let (api, actor, id) = (self.api.clone(), self.actor.clone(), id.clone());
        to_completion(async move {
            let record = api.inner.store.update_key(&id, &change).await?;
            api.record_audit(&actor, kind, &record);
            Ok(api.info(record))
        })
        .await
    }
}
