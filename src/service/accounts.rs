//! Who may act on what: the [`Actor`] of a management call, the reach rule
//! (an account and its sub-accounts), the "no key grants more than it holds"
//! rule, and sub-account creation.
//!
//! | actor | reaches | may grant |
//! |---|---|---|
//! | [`Actor::Operator`] (server code, the CLI) | every account | anything |
//! | [`Actor::Account`] (e.g. a signed-in dashboard user) | its account and its sub-accounts | anything |
//! | [`Actor::Key`] (a verified API key) | its account and its sub-accounts | only scopes, limits and lifetimes it holds itself |
//!
//! A target out of reach answers [`Error::NotFound`], exactly as a missing
//! one does, so no actor learns what another tenant holds.

use time::OffsetDateTime;

use super::{ApiKeys, CredentialKind, Manager, Principal};
use crate::audit::{AuditEvent, AuditKind};
use crate::credits::Credits;
use crate::error::{AuthError, ConflictKind, Error};
use crate::ratelimit::Quota;
use crate::scope::ScopeSet;
use crate::store::{AccountId, AccountRecord, KeyEntry, KeyId, KeyRecord};

/// Who makes a management call.
///
/// ```
/// use keygate::{profiles, AccountId, Actor, ApiKeys, CreateKey};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let api = ApiKeys::in_memory(profiles::mailjawn())?;
/// let org = AccountId::new("org_1")?;
/// // Server code bootstrapping the first key acts as the operator.
/// let admin = api.operator().create(&org, CreateKey::new("admin").bundle("full_access")).await?;
/// // A request authenticated by that key acts as the key.
/// let principal = api.verify(admin.key.expose_secret()).await?;
/// let sdk = api.as_key(&principal).create(&org, CreateKey::new("sdk").bundle("sdk")).await?;
/// let weak = api.verify(sdk.key.expose_secret()).await?;
/// // The SDK key cannot mint a full-access key.
/// let refused = api.as_key(&weak).create(&org, CreateKey::new("x").bundle("full_access")).await;
/// assert_eq!(refused.unwrap_err().code(), "insufficient_scope");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Actor {
    /// Trusted server code or an operator's tool: reaches every account and
    /// may grant anything. Never derive it from a request.
    Operator,
    /// An authenticated account acting with its full rights (e.g. a user
    /// signed in to a dashboard): reaches the account and its sub-accounts.
    Account(AccountId),
    /// A verified API key: reaches its account and its sub-accounts, and
    /// grants, rotates, resets or revokes only keys no stronger than itself.
    Key(Principal),
}

/// A key principal acts as [`Actor::Key`]; a session principal (a
/// signed-in user) as [`Actor::Account`].
impl From<Principal> for Actor {
    fn from(p: Principal) -> Self {
        match p.credential() {
            CredentialKind::Session => Self::Account(p.account().clone()),
            _ => Self::Key(p),
        }
    }
}

impl From<&Principal> for Actor {
    fn from(p: &Principal) -> Self {
        match p.credential() {
            CredentialKind::Session => Self::Account(p.account().clone()),
            _ => Self::Key(p.clone()),
        }
    }
}

impl From<AccountId> for Actor {
    fn from(a: AccountId) -> Self {
        Self::Account(a)
    }
}

impl From<&AccountId> for Actor {
    fn from(a: &AccountId) -> Self {
        Self::Account(a.clone())
    }
}

impl Actor {
    /// The account the actor belongs to; `None` for the operator.
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            Self::Operator => None,
            Self::Account(a) => Some(a),
            Self::Key(p) => Some(p.account()),
        }
    }

    /// True when the actor may act on `account`: the operator everywhere,
    /// others on their own account and its sub-accounts.
    pub fn reaches(&self, account: &AccountId) -> bool {
        self.account().is_none_or(|own| account.is_within(own))
    }

    /// The key acting, if a key acts.
    pub(super) fn key(&self) -> Option<&Principal> {
        match self {
            Self::Key(p) => Some(p),
            _ => None,
        }
    }
}

impl ApiKeys {
    /// Management calls made by trusted server code (bootstrap, the CLI, jobs):
    /// every account, any grant. Never use it for a request's caller.
    pub fn operator(&self) -> Manager<'_> {
        self.manage(Actor::Operator)
    }

    /// Management calls made by `account` with its full rights (a signed-in
    /// user): its own account and its sub-accounts.
    pub fn as_account(&self, account: &AccountId) -> Manager<'_> {
        self.manage(Actor::Account(account.clone()))
    }

    /// Management calls made by a verified key: its own account and its
    /// sub-accounts, and never more than the key holds. A session principal
    /// (a signed-in user) acts as its account instead, as
    /// [`as_account`](Self::as_account) would.
    pub fn as_key(&self, principal: &Principal) -> Manager<'_> {
        self.manage(principal)
    }

    /// Management calls made by `actor`.
    pub fn manage(&self, actor: impl Into<Actor>) -> Manager<'_> {
        Manager {
            api: self,
            actor: actor.into(),
        }
    }
}

impl Manager<'_> {
    /// Who this manager acts as.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Registers a sub-account of `parent` named `handle` and returns its id,
    /// `parent/handle` ([`AccountId::child`]). The actor must reach `parent`.
    /// The parent (or an actor of it) can then create, list, rotate and revoke
    /// the sub-account's keys; the sub-account never reaches its parent.
    ///
    /// Fails with [`Error::NotFound`] when the actor does not reach `parent`,
    /// [`Error::SubAccountDepth`] (403) when the profile allows no deeper
    /// nesting, [`Error::Account`] for a bad handle, and [`Error::Conflict`]
    /// when the parent already has a sub-account of that name. Handles belong
    /// to their parent, so nobody else can probe or claim them.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailchannels())?;
    /// let acme = AccountId::new("acme")?;
    /// let eu = api.as_account(&acme).create_sub_account(&acme, "eu").await?;
    /// assert_eq!(eu.as_str(), "acme/eu");
    /// let key = api.as_account(&acme).create(&eu, CreateKey::new("eu").scopes(["api"])).await?;
    /// assert_eq!(key.info.account, eu);
    /// // One level only for MailChannels: the sub-account cannot nest further.
    /// let nested = api.as_account(&eu).create_sub_account(&eu, "x").await;
    /// assert_eq!(nested.unwrap_err().status(), 403);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "create_sub_account", account = %parent)))]
    pub async fn create_sub_account(
        &self,
        parent: &AccountId,
        handle: &str,
    ) -> Result<AccountId, Error> {
        self.reach(parent).await?;
        let max = self.api.inner.profile.max_sub_account_depth;
        if parent.depth() >= max {
            return Err(Error::SubAccountDepth { max });
        }
        let sub = parent.child(handle)?;
        self.api
            .inner
            .store
            .create_account(AccountRecord {
                id: sub.clone(),
                parent: Some(parent.clone()),
                created_at: self.api.inner.clock.now(),
            })
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => {
                    Error::Conflict(ConflictKind::SubAccountExists(handle.to_owned()))
                }
                other => other,
            })?;
        Ok(sub)
    }

    /// Checks that the actor reaches `account`, and that a sub-account is
    /// registered; [`Error::NotFound`] otherwise, the same answer either way.
    pub(super) async fn reach(&self, account: &AccountId) -> Result<(), Error> {
        self.own_actor()?;
        if !self.actor.reaches(account) {
            return Err(Error::NotFound);
        }
        if account.is_top_level() {
            return Ok(());
        }
        match self.api.inner.store.get_account(account).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound),
        }
    }

    /// Loads a key the actor reaches; [`Error::NotFound`] otherwise.
    pub(super) async fn reach_key(&self, id: &KeyId) -> Result<std::sync::Arc<KeyEntry>, Error> {
        self.own_actor()?;
        let entry = self
            .api
            .inner
            .store
            .get_key(id)
            .await?
            .ok_or(Error::NotFound)?;
        if !self.actor.reaches(entry.account()) {
            return Err(Error::NotFound);
        }
        Ok(entry)
    }

    /// Refuses a key actor that another `ApiKeys` verified: its scopes were
    /// compiled against another catalog, so comparing them here means
    /// nothing.
    pub(super) fn own_actor(&self) -> Result<(), Error> {
        match self.actor.key() {
            Some(p) if !self.api.issued(p) => Err(AuthError::Invalid.into()),
            _ => Ok(()),
        }
    }

    /// Checks that a key actor holds every scope of `grant`.
    pub(super) fn check_grant(&self, grant: ScopeSet) -> Result<(), Error> {
        match self.actor.key() {
            Some(p) if !grant.is_subset_of(&p.scopes()) => Err(Error::InsufficientScope),
            _ => Ok(()),
        }
    }

    /// Checks that a key actor is at least as strong as the stored key it
    /// wants to rotate, reset or revoke.
    pub(super) fn check_target(&self, target: &KeyRecord) -> Result<(), Error> {
        if self.actor.key().is_none() {
            return Ok(());
        }
        let grant = self
            .api
            .inner
            .profile
            .catalog
            .compile_grant(target.bundle.as_deref(), &target.scopes)
            // Scopes that no longer compile are treated as everything, so
            // only an actor holding every scope may touch the key.
            .unwrap_or(ScopeSet::ALL);
        self.check_grant(grant)?;
        self.check_limits(&target.rate_limits)
    }

    /// Checks that a key actor's rate limits are no tighter than `limits`
    /// (a key cannot hand out a larger quota than its own).
    pub(super) fn check_limits(&self, limits: &[(String, Quota)]) -> Result<(), Error> {
        let Some(p) = self.actor.key() else {
            return Ok(());
        };
        for (class, wanted) in limits {
            if let Some(own) = self.api.effective_quota(p, class) {
                if !no_more_generous(wanted, &own) {
                    return Err(Error::InsufficientScope);
                }
            }
        }
        Ok(())
    }

    /// For a key actor with a usage limit: the credits a key it creates or
    /// updates may have. None requested means the actor's own terms (as last
    /// read); more than it has left, no limit at all, or a more generous
    /// refill is [`Error::InsufficientScope`]. Other actors pass `wanted`
    /// through.
    pub(super) fn check_credits(
        &self,
        wanted: Option<Credits>,
        now: OffsetDateTime,
    ) -> Result<Option<Credits>, Error> {
        let Some(own) = self.actor.key().and_then(|p| p.entry.credits()) else {
            return Ok(wanted);
        };
        let own = own.at(now);
        let Some(wanted) = wanted else {
            return Ok(Some(Credits {
                refilled_at: now,
                ..own
            }));
        };
        let refill_ok = match (wanted.refill, own.refill) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(w), Some(o)) => w.amount <= o.amount && w.interval_ms >= o.interval_ms,
        };
        if wanted.remaining > own.remaining || !refill_ok {
            return Err(Error::InsufficientScope);
        }
        Ok(Some(wanted))
    }

    /// For a key actor: the rate limits and expiry a new key inherits, so
    /// it never outlives or outpaces the key that made it.
    pub(super) fn inherit(
        &self,
        limits: &mut Vec<(String, Quota)>,
        expires_at: &mut Option<OffsetDateTime>,
    ) {
        let Some(p) = self.actor.key() else {
            return;
        };
        for (class, quota) in p.entry.rate_limits() {
            if !limits.iter().any(|(c, _)| c == class) {
                limits.push((class.clone(), *quota));
            }
        }
        if let Some(own) = p.expires_at() {
            *expires_at = Some(expires_at.map_or(own, |e| e.min(own)));
        }
    }
}

impl ApiKeys {
    /// Records an audit event for `actor` acting on `record`.
    pub(super) fn record_audit(&self, actor: &Actor, kind: AuditKind, record: &KeyRecord) {
        if self.inner.audit.enabled() {
            self.record_audit_at(actor, kind, record, self.inner.clock.now());
        }
    }

    /// Records an audit event that happened at `at`, unless the sink
    /// declines events.
    pub(super) fn record_audit_at(
        &self,
        actor: &Actor,
        kind: AuditKind,
        record: &KeyRecord,
        at: OffsetDateTime,
    ) {
        if !self.inner.audit.enabled() {
            return;
        }
        self.inner.audit.record(&AuditEvent {
            kind,
            key_id: record.id.clone(),
            account: record.account.clone(),
            actor: actor.account().cloned(),
            actor_key: actor.key().map(|p| p.key_id().clone()),
            at,
        });
    }

    /// The quota a key has for a class: its own override, else the profile's.
    pub(super) fn effective_quota(&self, principal: &Principal, class: &str) -> Option<Quota> {
        let index = self.inner.profile.rate_limits.index_of(class)?;
        self.quota_of(principal.entry.rate_limits(), index, class)
            .copied()
    }
}

/// True when `wanted` admits no more than `own`: no larger burst and no
/// shorter interval between tokens.
fn no_more_generous(wanted: &Quota, own: &Quota) -> bool {
    wanted.burst() <= own.burst() && wanted.emission_interval() >= own.emission_interval()
}
