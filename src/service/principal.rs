//! The request-side types: [`Operation`] (what a route does) and
//! [`Principal`] (who is calling, after verification).

use std::fmt;
use std::sync::Arc;

use crate::error::{AuthError, Error};
use crate::identity::{Identity, IdentityId};
use crate::ratelimit::Decision;
use crate::scope::{Requirement, ScopeCatalog, ScopeError, ScopeSet};
use crate::store::{AccountId, KeyEntry, KeyId};

/// What a request does, for [`ApiKeys::verify_for`](super::ApiKeys::verify_for): the operation class it
/// counts against and, optionally, the scopes it needs. Build it once per route.
///
/// ```
/// # fn main() -> Result<(), keygate::Error> {
/// let api = keygate::ApiKeys::in_memory(keygate::profiles::mailjawn()).unwrap();
/// let send = api.operation("send")?.require("emails:send")?;
/// let list = api.operation_for_method("GET").require("subscribers:read")?;
/// assert_eq!(send.class(), Some("send"));
/// assert_eq!(list.class(), Some("read"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Operation {
    pub(super) class: Option<(usize, String)>,
    pub(super) requirement: Option<Requirement>,
    /// Credits a request spends from a key that has a usage limit.
    pub(super) cost: u64,
    /// The catalog [`require`](Self::require) resolves scope names in.
    pub(super) catalog: Option<Arc<ScopeCatalog>>,
}

impl PartialEq for Operation {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.requirement == other.requirement
            && self.cost == other.cost
    }
}

impl Eq for Operation {}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("class", &self.class())
            .field("requirement", &self.requirement)
            .field("cost", &self.cost)
            .finish()
    }
}

impl Operation {
    /// An operation that is neither rate limited nor scope checked. It knows
    /// no scope catalog: add requirements with
    /// [`with_requirement`](Self::with_requirement).
    pub fn unrestricted() -> Self {
        Self {
            class: None,
            requirement: None,
            cost: 1,
            catalog: None,
        }
    }

    pub(super) fn with_catalog(mut self, catalog: &Arc<ScopeCatalog>) -> Self {
        self.catalog = Some(Arc::clone(catalog));
        self
    }

    /// Requires one scope from the profile's catalog (that of the
    /// [`ApiKeys`](super::ApiKeys) that made this operation); an unknown
    /// scope is an error.
    pub fn require(self, scope: &str) -> Result<Self, Error> {
        let requirement = match &self.catalog {
            Some(catalog) => catalog.requirement(scope)?,
            None => return Err(ScopeError::UnknownScope(scope.to_owned()).into()),
        };
        Ok(self.with_requirement(requirement))
    }

    /// Requires a permission query such as
    /// `emails:send AND (subscribers:read OR subscribers:write)`, compiled
    /// once against the profile's catalog ([`ScopeCatalog::query`]).
    ///
    /// ```
    /// let api = keygate::ApiKeys::in_memory(keygate::profiles::mailjawn()).unwrap();
    /// let op = api.operation("send").unwrap()
    ///     .require_query("emails:send AND (subscribers:read OR subscribers:write)").unwrap();
    /// assert_eq!(op.requirement().unwrap().label(), "emails:send AND (subscribers:read OR subscribers:write)");
    /// assert!(api.operation("send").unwrap().require_query("emails:send AND (").is_err());
    /// ```
    pub fn require_query(self, query: &str) -> Result<Self, Error> {
        let requirement = match &self.catalog {
            Some(catalog) => catalog.query(query)?,
            None => return Err(ScopeError::UnknownScope(query.to_owned()).into()),
        };
        Ok(self.with_requirement(requirement))
    }

    /// Adds a prepared requirement (one scope, all of, any of, a query).
    pub fn with_requirement(mut self, requirement: Requirement) -> Self {
        self.requirement = Some(requirement);
        self
    }

    /// Makes each request spend `cost` credits (1 by default) from keys with
    /// a usage limit; 0 spends none.
    ///
    /// ```
    /// let api = keygate::ApiKeys::in_memory(keygate::profiles::mailjawn()).unwrap();
    /// let bulk = api.operation("send").unwrap().with_cost(10);
    /// assert_eq!(bulk.cost(), 10);
    /// ```
    #[must_use]
    pub fn with_cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// The credits a request spends.
    pub fn cost(&self) -> u64 {
        self.cost
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

/// Which kind of credential a [`Principal`] was verified from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// An API key (a token or a key pair).
    ApiKey,
    /// A session token (a JWT from a signed-in user, feature `sessions`).
    /// Its principal acts with the account's full rights: [`key_id`](Principal::key_id)
    /// is `ses_` and the token's `jti`, [`name`](Principal::name) and
    /// [`format`](Principal::format) are `session`, and
    /// [`expires_at`](Principal::expires_at) is the token's expiry.
    Session,
}

/// The authenticated caller: which key, which account, what it may do.
#[derive(Clone)]
pub struct Principal {
    pub(super) entry: Arc<KeyEntry>,
    pub(super) scopes: ScopeSet,
    pub(super) rate_limit: Option<Decision>,
    /// The operation class a token was taken from for this request, if any.
    pub(super) charged: Option<usize>,
    /// Credits left after this request spent some, if it did.
    pub(super) credits: Option<u64>,
    /// The identity's credits left after this request spent some, if it did.
    pub(super) identity_credits: Option<u64>,
    /// Which service verified it (the address of its shared state), so a
    /// principal is only ever refined by the service whose catalog and
    /// buckets it was built against.
    pub(super) issuer: usize,
    /// Which kind of credential it came from.
    pub(super) kind: CredentialKind,
    /// The signed-in user, for a session.
    pub(super) subject: Option<Arc<str>>,
}

impl Principal {
    /// Which kind of credential authenticated: an API key or a session
    /// token.
    pub fn credential(&self) -> CredentialKind {
        self.kind
    }

    /// The signed-in user a session token names (its `sub`); `None` for an
    /// API key.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The key that authenticated.
    pub fn key_id(&self) -> &KeyId {
        self.entry.id()
    }

    /// The account the key belongs to.
    pub fn account(&self) -> &AccountId {
        self.entry.account()
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        self.entry.name()
    }

    /// When the key expires, if ever.
    pub fn expires_at(&self) -> Option<time::OffsetDateTime> {
        self.entry.expires_at()
    }

    /// The bundle chosen at creation, if any.
    pub fn bundle(&self) -> Option<&str> {
        self.entry.bundle()
    }

    /// The key's metadata, read from the record verify already loaded (no
    /// store round trip).
    pub fn metadata(&self) -> &crate::Metadata {
        self.entry.metadata()
    }

    /// The key format's label (e.g. `mk_live_`).
    pub fn format(&self) -> &str {
        self.entry.format()
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

    /// The key's remaining usage credits: after
    /// [`verify_for`](super::ApiKeys::verify_for) spent some, what is left;
    /// otherwise as last read from the store. `None` for a key without a
    /// usage limit.
    pub fn credits_remaining(&self) -> Option<u64> {
        self.credits
            .or_else(|| self.entry.credits().map(|c| c.remaining))
    }

    /// The identity the key belongs to, if any, as read with the key (no
    /// store round trip): its id, external id, metadata and shared limits.
    pub fn identity(&self) -> Option<&Identity> {
        self.entry.identity().map(|i| &**i)
    }

    /// The identity's id, if the key belongs to one.
    pub fn identity_id(&self) -> Option<&IdentityId> {
        self.entry.identity_id()
    }

    /// The identity's remaining shared credits: after
    /// [`verify_for`](super::ApiKeys::verify_for) spent some, what is left;
    /// otherwise as last read. `None` without an identity or when the
    /// identity has no usage limit.
    pub fn identity_credits_remaining(&self) -> Option<u64> {
        self.identity_credits.or_else(|| {
            self.entry
                .identity()
                .and_then(|i| i.credits.map(|c| c.remaining))
        })
    }

    /// What the key can still spend: the smaller of its own remaining
    /// credits and its identity's ([`credits_remaining`](Self::credits_remaining),
    /// [`identity_credits_remaining`](Self::identity_credits_remaining)),
    /// either one when only one is limited, `None` when neither is. The
    /// value of the `Credits-Remaining` response header.
    pub fn spendable_credits(&self) -> Option<u64> {
        match (self.credits_remaining(), self.identity_credits_remaining()) {
            (Some(key), Some(identity)) => Some(key.min(identity)),
            (key, identity) => key.or(identity),
        }
    }

    /// Checks a requirement; [`AuthError::Forbidden`] (403) when unmet.
    pub fn check(&self, requirement: &Requirement) -> Result<(), AuthError> {
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
            .field("credential", &self.kind)
            .field("key_id", self.key_id())
            .field("account", self.account())
            .field("bundle", &self.bundle())
            .field("scopes", &self.scopes)
            .finish()
    }
}
