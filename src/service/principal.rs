//! The request-side types: [`Operation`] (what a route does) and
//! [`Principal`] (who is calling, after verification).

use std::fmt;
use std::sync::Arc;

use super::ApiKeys;
use crate::error::{AuthError, Error};
use crate::ratelimit::Decision;
use crate::scope::{Requirement, ScopeSet};
use crate::store::{AccountId, KeyEntry, KeyId};

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
    pub(super) class: Option<(usize, String)>,
    pub(super) requirement: Option<Requirement>,
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
    pub(super) entry: Arc<KeyEntry>,
    pub(super) scopes: ScopeSet,
    pub(super) rate_limit: Option<Decision>,
    /// The operation class a token was taken from for this request, if any.
    pub(super) charged: Option<usize>,
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

    /// When the key expires, if ever.
    pub fn expires_at(&self) -> Option<time::OffsetDateTime> {
        self.entry.record().expires_at
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
