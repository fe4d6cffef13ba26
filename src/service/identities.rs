//! Identity management through a [`Manager`]: create, get, list, update and
//! delete the identities of accounts the actor reaches, and the rules for
//! attaching keys to them.
//!
//! A key actor never gets a budget outside its own:
//!
//! - a key on identity X creates keys on X only (naming none means X; naming
//!   another identity, or a key in an account other than X's, is refused);
//! - it may create or update an identity only within what it may grant
//!   itself: credits no more than its own (and its identity's), rate limits
//!   no more generous than its own (and its identity's);
//! - a key with a budget (credits, or an identity) may not delete
//!   identities, nor move a key to another identity or off one. A key
//!   without a budget is bounded by nothing an identity adds, so it may.

use time::OffsetDateTime;

use super::manage::{limits_from_map, CreditsRequest, MAX_PAGE_SIZE, MAX_REQUEST_LIMITS};
use super::Manager;
use crate::credits::{Credits, Refill};
use crate::error::{Error, InvalidRequest};
use crate::identity::{valid_external_id, Identity, IdentityChange, IdentityId};
use crate::metadata::Metadata;
use crate::ratelimit::Quota;
use crate::store::AccountId;

/// What a new identity should be. It deserializes from a request body such
/// as `{"external_id": "cus_42", "metadata": {"plan": "pro"}, "credits":
/// {"remaining": 1000, "refill": {"amount": 1000, "interval_ms": 86400000}},
/// "rate_limits": {"send": {"limit": 50, "period_ms": 60000}}}`; unknown
/// fields are refused.
///
/// ```
/// use keygate::CreateIdentity;
/// let request = CreateIdentity::new("cus_42").credits(1000);
/// let parsed: CreateIdentity = serde_json::from_str(r#"{"external_id": "cus_42"}"#).unwrap();
/// assert_eq!(parsed.external_id(), request.external_id());
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    external_id: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    credits: Option<CreditsRequest>,
    #[serde(default, deserialize_with = "limits_from_map")]
    rate_limits: Vec<(String, Quota)>,
}

impl CreateIdentity {
    /// A request for an identity named `external_id` in its account.
    pub fn new(external_id: impl Into<String>) -> Self {
        Self {
            external_id: external_id.into(),
            ..Self::default()
        }
    }

    /// The requested external id.
    pub fn external_id(&self) -> &str {
        &self.external_id
    }

    /// Sets the identity's metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Gives the identity `remaining` credits shared by its keys.
    pub fn credits(mut self, remaining: u64) -> Self {
        let refill = self.credits.and_then(|c| c.refill);
        self.credits = Some(CreditsRequest { remaining, refill });
        self
    }

    /// Refills the identity's credits (without a starting amount, it starts
    /// full).
    pub fn refill(mut self, refill: Refill) -> Self {
        let remaining = self.credits.map_or(refill.amount, |c| c.remaining);
        self.credits = Some(CreditsRequest {
            remaining,
            refill: Some(refill),
        });
        self
    }

    /// Limits operation class `class` for all the identity's keys together.
    pub fn rate_limit(mut self, class: impl Into<String>, quota: Quota) -> Self {
        let class = class.into();
        self.rate_limits.retain(|(c, _)| *c != class);
        self.rate_limits.push((class, quota));
        self
    }
}

/// Changes to an identity; fields left out stay as they are. It
/// deserializes from a `PATCH` body with any of `metadata`, `credits` (or
/// `null` for no shared usage limit) and `rate_limits` (replaces all).
///
/// ```
/// use keygate::IdentityUpdate;
/// let parsed: IdentityUpdate = serde_json::from_str(r#"{"credits": null}"#).unwrap();
/// assert!(!parsed.is_empty());
/// assert!(IdentityUpdate::new().is_empty());
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityUpdate {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "present_credits")]
    credits: Option<Option<CreditsRequest>>,
    #[serde(default, deserialize_with = "present_limits")]
    rate_limits: Option<Vec<(String, Quota)>>,
}

fn present_credits<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<CreditsRequest>>, D::Error> {
    <Option<CreditsRequest> as serde::Deserialize>::deserialize(d).map(Some)
}

fn present_limits<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, Quota)>>, D::Error> {
    limits_from_map(d).map(Some)
}

impl IdentityUpdate {
    /// An update that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the shared credits (refills counting from now).
    pub fn credits(mut self, remaining: u64, refill: Option<Refill>) -> Self {
        self.credits = Some(Some(CreditsRequest { remaining, refill }));
        self
    }

    /// Removes the shared usage limit.
    pub fn unlimited(mut self) -> Self {
        self.credits = Some(None);
        self
    }

    /// Replaces every shared rate limit.
    pub fn rate_limits(mut self, limits: Vec<(String, Quota)>) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// True when the update names nothing.
    pub fn is_empty(&self) -> bool {
        self.metadata.is_none() && self.credits.is_none() && self.rate_limits.is_none()
    }
}

impl Manager<'_> {
    /// Creates an identity in `account`, which the actor must reach.
    ///
    /// Fails with [`Error::NotFound`] out of reach, [`Error::Conflict`] when
    /// the account already has an identity with this external id,
    /// [`InvalidRequest::ExternalId`] for a bad external id, and
    /// [`Error::InsufficientScope`] when a key actor asks for more credits
    /// or looser rate limits than it has.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateIdentity, CreateKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// let org = AccountId::new("org")?;
    /// let acme = api.operator().create_identity(&org, CreateIdentity::new("acme").credits(2)).await?;
    /// let send = api.operation("send")?;
    /// let a = api.operator().create(&org, CreateKey::new("a").bundle("sdk").identity(acme.id.clone())).await?;
    /// let b = api.operator().create(&org, CreateKey::new("b").bundle("sdk").identity(acme.id.clone())).await?;
    /// // Two credits shared by both keys.
    /// assert!(api.verify_for(a.key.expose_secret(), &send).await.is_ok());
    /// assert!(api.verify_for(b.key.expose_secret(), &send).await.is_ok());
    /// assert!(api.verify_for(a.key.expose_secret(), &send).await.is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn create_identity(
        &self,
        account: &AccountId,
        request: CreateIdentity,
    ) -> Result<Identity, Error> {
        self.reach(account).await?;
        if !valid_external_id(&request.external_id) {
            return Err(InvalidRequest::ExternalId.into());
        }
        let now = self.api.inner.clock.now();
        let credits = request.credits.map(|c| c.at(now)).transpose()?;
        let limits = self.checked_limits(request.rate_limits)?;
        self.check_identity_grant(credits.as_ref(), &limits, now, true)?;
        let identity = Identity {
            metadata: request.metadata,
            credits,
            rate_limits: limits,
            ..Identity::new(account.clone(), request.external_id, now)
        };
        self.api
            .inner
            .store
            .create_identity(identity.clone())
            .await?;
        Ok(identity)
    }

    /// An identity the actor reaches; [`Error::NotFound`] otherwise (the same
    /// answer whether it exists elsewhere or not at all).
    pub async fn get_identity(&self, id: &IdentityId) -> Result<Identity, Error> {
        self.own_actor()?;
        let identity = self
            .api
            .inner
            .store
            .get_identity(id)
            .await?
            .ok_or(Error::NotFound)?;
        if !self.actor.reaches(&identity.account) {
            return Err(Error::NotFound);
        }
        Ok(identity)
    }

    /// An account's identities in id order, `limit` (1 to
    /// [`MAX_PAGE_SIZE`]) at a time after `after`.
    pub async fn list_identities(
        &self,
        account: &AccountId,
        after: Option<&IdentityId>,
        limit: usize,
    ) -> Result<Vec<Identity>, Error> {
        self.reach(account).await?;
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(InvalidRequest::PageSize { max: MAX_PAGE_SIZE }.into());
        }
        Ok(self
            .api
            .inner
            .store
            .list_identities(account, after, limit)
            .await?)
    }

    /// Changes an identity's metadata, shared credits or shared rate limits;
    /// every instance's next verify of its keys sees the change. A key actor
    /// may not raise them past what it may grant itself
    /// ([`Error::InsufficientScope`]).
    pub async fn update_identity(
        &self,
        id: &IdentityId,
        update: IdentityUpdate,
    ) -> Result<Identity, Error> {
        if update.is_empty() {
            return Err(InvalidRequest::EmptyUpdate.into());
        }
        let current = self.get_identity(id).await?;
        let now = self.api.inner.clock.now();
        let mut change = IdentityChange {
            metadata: update.metadata,
            ..IdentityChange::default()
        };
        if let Some(credits) = update.credits {
            let credits = credits.map(|c| c.at(now)).transpose()?;
            self.check_identity_grant(credits.as_ref(), &[], now, true)?;
            change.credits = Some(credits);
        }
        if let Some(limits) = update.rate_limits {
            let limits = self.checked_limits(limits)?;
            self.check_identity_grant(None, &limits, now, false)?;
            change.rate_limits = Some(limits);
        }
        Ok(self
            .api
            .inner
            .store
            .update_identity(&current.id, &change)
            .await?)
    }

    /// Deletes an identity; its keys are detached and keep working on their
    /// own limits. A key actor with a budget (credits or an identity) may
    /// not ([`Error::InsufficientScope`]): detaching keys would lift the
    /// identity's shared budget.
    pub async fn delete_identity(&self, id: &IdentityId) -> Result<(), Error> {
        let current = self.get_identity(id).await?;
        if self.has_budget() {
            return Err(Error::InsufficientScope);
        }
        Ok(self.api.inner.store.delete_identity(&current.id).await?)
    }

    /// The identity a new key in `account` gets: for a key actor on an
    /// identity, that identity (naming another is refused); otherwise the
    /// one requested, which must be an identity of `account`.
    pub(super) async fn identity_for_new_key(
        &self,
        account: &AccountId,
        requested: Option<&IdentityId>,
    ) -> Result<Option<IdentityId>, Error> {
        let own = self.actor.key().and_then(|p| p.identity_id().cloned());
        let wanted = match (own, requested) {
            (Some(own), Some(r)) if own != *r => return Err(Error::InsufficientScope),
            (Some(own), _) => own,
            (None, Some(r)) => r.clone(),
            (None, None) => return Ok(None),
        };
        // The store refuses another account's identity too (a key's
        // identity is of its account).
        Ok(Some(self.identity_of(account, &wanted).await?))
    }

    /// The identity a key of `account` is moved to by an update. A key
    /// actor with a budget may not move keys between identities.
    pub(super) async fn identity_for_update(
        &self,
        account: &AccountId,
        wanted: Option<IdentityId>,
    ) -> Result<Option<IdentityId>, Error> {
        if self.has_budget() {
            return Err(Error::InsufficientScope);
        }
        let Some(wanted) = wanted else {
            return Ok(None);
        };
        Ok(Some(self.identity_of(account, &wanted).await?))
    }

    /// `wanted` if it is an identity of `account` the actor reaches. A
    /// missing one and another tenant's get the same 400: the request names
    /// a bad reference, while the key it creates or updates is fine.
    async fn identity_of(
        &self,
        account: &AccountId,
        wanted: &IdentityId,
    ) -> Result<IdentityId, Error> {
        let unknown = || InvalidRequest::UnknownIdentity(wanted.to_string()).into();
        match self.get_identity(wanted).await {
            Ok(identity) if identity.account == *account => Ok(identity.id),
            Ok(_) | Err(Error::NotFound) => Err(unknown()),
            Err(other) => Err(other),
        }
    }

    /// True for a key actor with credits or an identity.
    fn has_budget(&self) -> bool {
        self.actor
            .key()
            .is_some_and(|p| p.entry.record().credits.is_some() || p.identity_id().is_some())
    }

    /// Checks rate-limit classes against the profile.
    fn checked_limits(&self, limits: Vec<(String, Quota)>) -> Result<Vec<(String, Quota)>, Error> {
        if limits.len() > MAX_REQUEST_LIMITS {
            return Err(InvalidRequest::TooManyLimits {
                max: MAX_REQUEST_LIMITS,
            }
            .into());
        }
        let policy = &self.api.inner.profile.rate_limits;
        for (class, _) in &limits {
            if policy.index_of(class).is_none() {
                return Err(InvalidRequest::UnknownClass(class.clone()).into());
            }
        }
        Ok(limits)
    }

    /// For a key actor: identity credits and limits no more than it may
    /// grant itself. `credits_named` says whether the credits were part of
    /// the request (`None` then means "no shared usage limit").
    fn check_identity_grant(
        &self,
        credits: Option<&Credits>,
        limits: &[(String, Quota)],
        now: OffsetDateTime,
        credits_named: bool,
    ) -> Result<(), Error> {
        let Some(p) = self.actor.key() else {
            return Ok(());
        };
        self.check_limits(limits)?;
        if let Some(identity) = p.identity() {
            for (class, wanted) in limits {
                if let Some(own) = identity.quota(class) {
                    if wanted.burst() > own.burst()
                        || wanted.emission_interval() < own.emission_interval()
                    {
                        return Err(Error::InsufficientScope);
                    }
                }
            }
        }
        if !credits_named {
            return Ok(());
        }
        let owns = [
            p.entry.record().credits,
            p.identity().and_then(|i| i.credits),
        ];
        for own in owns.into_iter().flatten() {
            let own = own.at(now);
            let Some(wanted) = credits else {
                // No limit at all is more than a limited key may grant.
                return Err(Error::InsufficientScope);
            };
            if !within(wanted, &own) {
                return Err(Error::InsufficientScope);
            }
        }
        Ok(())
    }
}

/// True when `wanted` grants no more than `own`: no more remaining, and no
/// refill unless `own` refills at least as much at least as often.
fn within(wanted: &Credits, own: &Credits) -> bool {
    let refill_ok = match (wanted.refill, own.refill) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(w), Some(o)) => w.amount <= o.amount && w.interval_ms >= o.interval_ms,
    };
    wanted.remaining <= own.remaining && refill_ok
}
