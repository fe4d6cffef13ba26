//! Ready-made configurations reproducing four products' API-key systems, and
//! the [`Profile`] type to build your own.
//!
//! | profile | keys | sent as | scopes | limits |
//! |---|---|---|---|---|
//! | [`mailjawn`] | `mj_…`, lookup = first 8 chars | `Authorization: Bearer` | bundles `sdk`, `mcp`, `full_access` | read 100/min, write 30/min, mcp 60/min, send 10/min; unlimited keys |
//! | [`mailjet`] | public API key + secret key (32 hex each) | HTTP Basic `apikey:secret` | `full_access` | sub-accounts, secret reset |
//! | [`mailchannels`] | 46-char base62 token (40 + checksum) | `X-Api-Key` | `api` or `inbound`, fixed at creation | 100 active keys per account and per sub-account |
//! | [`mailkite`] | `mk_live_…` / `mk_test_…` | `Authorization: Bearer` | one full-scope key | one key per account and mode; HTTPS only but localhost |
//! | [`default()`] | `kg_…` | Bearer or `X-Api-Key` | `read`, `write`, `admin` | none |

use std::time::Duration;

use crate::key::{KeyFormat, PairFormat, TokenFormat};
use crate::ratelimit::{Quota, RatePolicy};
use crate::scope::ScopeCatalog;

/// Where in an HTTP request a client puts its key (a profile lists the
/// locations it reads, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyLocation {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A header holding the bare key, e.g. `X-Api-Key: <key>` (name case-insensitive).
    Header(String),
    /// `Authorization: Basic base64(apikey:secret)` for key pairs.
    Basic,
}

/// Everything that defines one product's API keys: start from one of the
/// functions in this module (or [`Profile::new`]), adjust it with the
/// `with_*` methods, then pass it to [`ApiKeys::builder`](crate::ApiKeys::builder),
/// which checks it. The fields are private so that new settings can be added
/// without breaking callers.
///
/// ```
/// use keygate::{profiles, ApiKeys};
/// let profile = profiles::mailchannels().with_key_limit(Some(10));
/// assert_eq!(profile.key_limit(), Some(10));
/// let api = ApiKeys::in_memory(profile).unwrap();
/// assert_eq!(api.profile().name(), "mailchannels");
/// ```
#[derive(Debug, Clone)]
pub struct Profile {
    pub(crate) name: String,
    pub(crate) formats: Vec<KeyFormat>,
    pub(crate) key_locations: Vec<KeyLocation>,
    pub(crate) catalog: ScopeCatalog,
    pub(crate) default_bundle: Option<String>,
    pub(crate) key_limit: Option<u32>,
    pub(crate) unique_lookup: bool,
    pub(crate) https_only: bool,
    pub(crate) rate_limits: RatePolicy,
    pub(crate) max_sub_account_depth: usize,
    pub(crate) max_grace: Duration,
    pub(crate) management_scopes: ManagementScopes,
    pub(crate) max_secret_age: Option<Duration>,
    pub(crate) one_scope_per_key: bool,
    pub(crate) fixed_scopes: bool,
}

/// The scopes a key needs to manage keys through the HTTP key-management
/// routes (`keygate::routes`, feature `axum`): `read` to list and read keys,
/// `write` to create, rotate, reset and revoke them and to create
/// sub-accounts. `None` lets any valid key of the account do it (MailKite,
/// whose one key has every scope). Whatever the scope, a key never grants
/// more than it holds.
///
/// ```
/// use keygate::profiles::{self, ManagementScopes};
/// let scopes = profiles::mailjawn().management_scopes().clone();
/// assert_eq!(scopes, ManagementScopes::new("api_keys:read", "api_keys:write"));
/// assert_eq!(profiles::mailkite().management_scopes(), &ManagementScopes::any_key());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagementScopes {
    /// Needed to list and read keys; `None` = any valid key.
    pub read: Option<String>,
    /// Needed to create, rotate, reset and revoke keys and to create
    /// sub-accounts; `None` = any valid key.
    pub write: Option<String>,
}

impl ManagementScopes {
    /// Reading needs `read`, changing needs `write` (they may be the same scope).
    pub fn new(read: impl Into<String>, write: impl Into<String>) -> Self {
        Self {
            read: Some(read.into()),
            write: Some(write.into()),
        }
    }

    /// Any valid key of the account may manage its keys.
    pub fn any_key() -> Self {
        Self::default()
    }
}

/// Mailjet's advice: reset the secret key once every 90 days
/// ([`Profile::max_secret_age`] of [`mailjet`]).
pub const MAILJET_MAX_SECRET_AGE: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// The default [`Profile::max_grace`]: 30 days.
pub const DEFAULT_MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

impl Profile {
    /// A profile called `name` with no key format yet (add one with
    /// [`with_formats`](Self::with_formats)), credentials read from
    /// `Authorization: Bearer`, an empty scope catalog, no default bundle,
    /// no key limit, no rate limits, no sub-accounts, a 30-day maximum
    /// grace period and no maximum secret age.
    ///
    /// ```
    /// use keygate::{KeyFormat, Profile, ScopeCatalog, TokenFormat};
    /// let profile = Profile::new("acme")
    ///     .with_formats(vec![KeyFormat::Token(TokenFormat::new("acme_"))])
    ///     .with_catalog(ScopeCatalog::new().scopes(["read", "write"]).unwrap());
    /// assert_eq!(profile.formats().len(), 1);
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            formats: Vec::new(),
            key_locations: vec![KeyLocation::Bearer],
            catalog: ScopeCatalog::new(),
            default_bundle: None,
            key_limit: None,
            unique_lookup: false,
            https_only: false,
            rate_limits: RatePolicy::new(),
            max_sub_account_depth: 0,
            max_grace: DEFAULT_MAX_GRACE,
            management_scopes: ManagementScopes::any_key(),
            max_secret_age: None,
            one_scope_per_key: false,
            fixed_scopes: false,
        }
    }

    /// The format with this label (token prefix, or `pair`).
    pub fn format(&self, label: &str) -> Option<(usize, &KeyFormat)> {
        self.formats
            .iter()
            .enumerate()
            .find(|(_, f)| f.label() == label)
    }

    /// A short name, e.g. `mailjawn`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key formats accepted; new keys use the first unless a request names another.
    pub fn formats(&self) -> &[KeyFormat] {
        &self.formats
    }

    /// Where in a request the presented key is read, in order.
    pub fn key_locations(&self) -> &[KeyLocation] {
        &self.key_locations
    }

    /// Scopes and bundles.
    pub fn catalog(&self) -> &ScopeCatalog {
        &self.catalog
    }

    /// Bundle given to keys created without a bundle or scopes.
    pub fn default_bundle(&self) -> Option<&str> {
        self.default_bundle.as_deref()
    }

    /// Most active keys per account and key format (`None` = unlimited).
    /// Sub-account keys count toward the sub-account, not its parent.
    pub fn key_limit(&self) -> Option<u32> {
        self.key_limit
    }

    /// Whether a new key's lookup id must be unused (key pairs' public keys
    /// are unique in any case).
    pub fn unique_lookup(&self) -> bool {
        self.unique_lookup
    }

    /// Whether plain HTTP is refused except from localhost (enforced by the
    /// HTTP layer).
    pub fn https_only(&self) -> bool {
        self.https_only
    }

    /// Per-key rate limits by operation class (empty = no limits).
    pub fn rate_limits(&self) -> &RatePolicy {
        &self.rate_limits
    }

    /// How deep sub-accounts may nest: 0 = no sub-accounts, 1 = sub-accounts
    /// that cannot have their own, and so on.
    pub fn max_sub_account_depth(&self) -> usize {
        self.max_sub_account_depth
    }

    /// True when a key's scopes are fixed at creation (MailChannels): no
    /// update may change them.
    pub fn fixed_scopes(&self) -> bool {
        self.fixed_scopes
    }

    /// Fixes (or frees) a key's scopes at creation: with `true`, an update
    /// that changes a key's bundle or scopes is
    /// [`InvalidRequest::ScopesFixed`](crate::InvalidRequest::ScopesFixed).
    #[must_use]
    pub fn with_fixed_scopes(mut self, on: bool) -> Self {
        self.fixed_scopes = on;
        self
    }

    /// The longest grace period a rotation may give the old key.
    pub fn max_grace(&self) -> Duration {
        self.max_grace
    }

    /// The scopes a key needs for the key-management routes.
    pub fn management_scopes(&self) -> &ManagementScopes {
        &self.management_scopes
    }

    /// How old a key's secret may get before a reset is recommended
    /// (`None`: never). Past it, [`KeyInfo::reset_recommended`](crate::KeyInfo::reset_recommended)
    /// is true and [`Manager::due_for_reset`](crate::Manager::due_for_reset)
    /// lists the key. Nothing stops working: it is advice to the key's owner.
    pub fn max_secret_age(&self) -> Option<Duration> {
        self.max_secret_age
    }

    /// Whether every key carries exactly one scope of the catalog
    /// (MailChannels: `api` or `inbound`). A request for none, several, a
    /// wildcard or a bundle covering more than one is refused with
    /// [`InvalidRequest::OneScopePerKey`](crate::InvalidRequest::OneScopePerKey).
    pub fn one_scope_per_key(&self) -> bool {
        self.one_scope_per_key
    }

    /// Renames the profile.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the key formats (the first is used for new keys).
    pub fn with_formats(mut self, formats: Vec<KeyFormat>) -> Self {
        self.formats = formats;
        self
    }

    /// Sets where in a request the presented key is read, in order.
    pub fn with_key_locations(mut self, locations: Vec<KeyLocation>) -> Self {
        self.key_locations = locations;
        self
    }

    /// Sets the scope catalog.
    pub fn with_catalog(mut self, catalog: ScopeCatalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Sets the bundle given to keys created without a bundle or scopes.
    pub fn with_default_bundle(mut self, bundle: Option<String>) -> Self {
        self.default_bundle = bundle;
        self
    }

    /// Sets the most active keys per account and key format.
    pub fn with_key_limit(mut self, limit: Option<u32>) -> Self {
        self.key_limit = limit;
        self
    }

    /// Requires new keys' lookup ids to be unused.
    pub fn with_unique_lookup(mut self, on: bool) -> Self {
        self.unique_lookup = on;
        self
    }

    /// Refuses plain HTTP except from localhost.
    pub fn with_https_only(mut self, on: bool) -> Self {
        self.https_only = on;
        self
    }

    /// Sets the per-key rate limits.
    pub fn with_rate_limits(mut self, policy: RatePolicy) -> Self {
        self.rate_limits = policy;
        self
    }

    /// Sets how deep sub-accounts may nest (0 = none).
    pub fn with_max_sub_account_depth(mut self, depth: usize) -> Self {
        self.max_sub_account_depth = depth;
        self
    }

    /// Sets the longest grace period a rotation may give.
    pub fn with_max_grace(mut self, max: Duration) -> Self {
        self.max_grace = max;
        self
    }

    /// Sets the scopes a key needs for the key-management routes (checked
    /// against the catalog when the service is built).
    pub fn with_management_scopes(mut self, scopes: ManagementScopes) -> Self {
        self.management_scopes = scopes;
        self
    }

    /// Requires every key to carry exactly one scope.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey, Error, InvalidRequest};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailchannels())?;
    /// assert!(api.profile().one_scope_per_key());
    /// let org = AccountId::new("org")?;
    /// let both = api.operator().create(&org, CreateKey::new("x").scopes(["api", "inbound"])).await;
    /// assert!(matches!(both.unwrap_err(), Error::Invalid(InvalidRequest::OneScopePerKey { .. })));
    /// let relaxed = ApiKeys::in_memory(profiles::mailchannels().with_one_scope_per_key(false))?;
    /// relaxed.operator().create(&org, CreateKey::new("x").scopes(["api", "inbound"])).await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn with_one_scope_per_key(mut self, on: bool) -> Self {
        self.one_scope_per_key = on;
        self
    }

    /// Sets how old a secret may get before a reset is recommended
    /// (`None`: never).
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate::profiles;
    /// let weekly = profiles::mailjawn().with_max_secret_age(Some(Duration::from_secs(7 * 86_400)));
    /// assert_eq!(weekly.max_secret_age(), Some(Duration::from_secs(604_800)));
    /// assert_eq!(profiles::mailjet().max_secret_age(), Some(profiles::MAILJET_MAX_SECRET_AGE));
    /// ```
    pub fn with_max_secret_age(mut self, max: Option<Duration>) -> Self {
        self.max_secret_age = max;
        self
    }
}

fn catalog(scopes: &[&str]) -> ScopeCatalog {
    ScopeCatalog::new()
        .scopes(scopes.iter().copied())
        .expect("built-in scope names are valid")
}

/// MailJawn: `mj_` keys scoped to an organisation, chosen bundle of granular
/// scopes, `Authorization: Bearer`, lookup by the first 8 characters, per-key
/// limits per operation class, unlimited active keys.
pub fn mailjawn() -> Profile {
    let catalog = catalog(&[
        "subscribers:read",
        "subscribers:write",
        "events:write",
        "campaigns:read",
        "campaigns:write",
        "sequences:read",
        "sequences:write",
        "assets:read",
        "assets:write",
        "stats:read",
        "emails:send",
        "api_keys:read",
        "api_keys:write",
    ])
    .bundle("sdk", ["subscribers:write", "events:write"])
    .and_then(|c| {
        c.bundle(
            "mcp",
            [
                "subscribers:*",
                "campaigns:*",
                "sequences:*",
                "assets:*",
                "stats:read",
                "emails:send",
            ],
        )
    })
    .and_then(|c| c.bundle_all("full_access"))
    .expect("built-in bundles are valid");
    Profile {
        name: "mailjawn".into(),
        formats: vec![KeyFormat::Token(TokenFormat::new("mj_").lookup_len(8))],
        key_locations: vec![KeyLocation::Bearer],
        catalog,
        default_bundle: None,
        key_limit: None,
        unique_lookup: false,
        https_only: false,
        rate_limits: mailjawn_limits(),
        max_sub_account_depth: 0,
        max_grace: DEFAULT_MAX_GRACE,
        management_scopes: ManagementScopes::new("api_keys:read", "api_keys:write"),
        max_secret_age: None,
        one_scope_per_key: false,
        fixed_scopes: false,
    }
}

/// MailJawn's documented per-key limits: read (GET) 100/min, write
/// (POST/PUT/DELETE, and PATCH) 30/min, MCP 60/min, email send 10/min.
fn mailjawn_limits() -> RatePolicy {
    use std::num::NonZeroU32;
    // Constants, so a zero limit would not compile.
    const READ: NonZeroU32 = NonZeroU32::new(100).unwrap();
    const WRITE: NonZeroU32 = NonZeroU32::new(30).unwrap();
    const MCP: NonZeroU32 = NonZeroU32::new(60).unwrap();
    const SEND: NonZeroU32 = NonZeroU32::new(10).unwrap();
    RatePolicy::new()
        .method_class("read", Quota::per_minute(READ), ["GET", "HEAD"])
        .method_class(
            "write",
            Quota::per_minute(WRITE),
            ["POST", "PUT", "PATCH", "DELETE"],
        )
        .class("mcp", Quota::per_minute(MCP))
        .class("send", Quota::per_minute(SEND))
}

/// Mailjet: a public API key (always visible) and a secret key (shown once),
/// sent as HTTP Basic `apikey:secret` (also the SMTP username and password);
/// the secret can be reset under the same public key, and resetting it every
/// 90 days is recommended; sub-accounts have keys of their own.
pub fn mailjet() -> Profile {
    Profile {
        name: "mailjet".into(),
        formats: vec![KeyFormat::Pair(PairFormat::new())],
        key_locations: vec![KeyLocation::Basic],
        catalog: catalog(&["send", "smtp", "contacts", "statistics", "account"])
            .bundle_all("full_access")
            .expect("built-in bundles are valid"),
        default_bundle: Some("full_access".into()),
        key_limit: None,
        unique_lookup: true,
        https_only: false,
        rate_limits: RatePolicy::new(),
        max_sub_account_depth: 1,
        max_grace: DEFAULT_MAX_GRACE,
        management_scopes: ManagementScopes::new("account", "account"),
        max_secret_age: Some(MAILJET_MAX_SECRET_AGE),
        one_scope_per_key: false,
        fixed_scopes: false,
    }
}

/// MailChannels: `X-Api-Key`, exactly one scope per key, `api` (sending) or
/// `inbound` (inbound filtering), fixed at creation, 100 active keys per account and per
/// sub-account, parents manage their sub-accounts' keys.
pub fn mailchannels() -> Profile {
    Profile {
        name: "mailchannels".into(),
        formats: vec![KeyFormat::Token(
            TokenFormat::new("").body_len(40).lookup_len(12),
        )],
        key_locations: vec![KeyLocation::Header("x-api-key".into())],
        catalog: catalog(&["api", "inbound"]),
        default_bundle: None,
        key_limit: Some(100),
        unique_lookup: false,
        https_only: false,
        rate_limits: RatePolicy::new(),
        max_sub_account_depth: 1,
        max_grace: DEFAULT_MAX_GRACE,
        management_scopes: ManagementScopes::new("api", "api"),
        max_secret_age: None,
        one_scope_per_key: true,
        fixed_scopes: true,
    }
}

/// MailKite: one full-scope `mk_live_…` key per account from signup (plus a
/// `mk_test_…` key), `Authorization: Bearer`, rotation revokes the old key at
/// once, HTTPS only except `http://localhost`.
pub fn mailkite() -> Profile {
    Profile {
        name: "mailkite".into(),
        formats: vec![
            KeyFormat::Token(TokenFormat::new("mk_live_")),
            KeyFormat::Token(TokenFormat::new("mk_test_")),
        ],
        key_locations: vec![KeyLocation::Bearer],
        catalog: catalog(&["send", "domains", "webhooks", "routes", "inbound"])
            .bundle_all("full_access")
            .expect("built-in bundles are valid"),
        default_bundle: Some("full_access".into()),
        key_limit: Some(1),
        unique_lookup: false,
        https_only: true,
        rate_limits: RatePolicy::new(),
        max_sub_account_depth: 0,
        max_grace: DEFAULT_MAX_GRACE,
        management_scopes: ManagementScopes::any_key(),
        max_secret_age: None,
        one_scope_per_key: false,
        fixed_scopes: false,
    }
}

/// A general-purpose profile: `kg_` keys with a checksum, Bearer or
/// `X-Api-Key`, scopes `read`, `write`, `admin`, bundles `read_only` and
/// `full_access`.
pub fn default() -> Profile {
    Profile {
        name: "default".into(),
        formats: vec![KeyFormat::Token(TokenFormat::new("kg_"))],
        key_locations: vec![KeyLocation::Bearer, KeyLocation::Header("x-api-key".into())],
        catalog: catalog(&["read", "write", "admin"])
            .bundle("read_only", ["read"])
            .and_then(|c| c.bundle_all("full_access"))
            .expect("built-in bundles are valid"),
        default_bundle: Some("full_access".into()),
        key_limit: None,
        unique_lookup: false,
        https_only: false,
        rate_limits: RatePolicy::new(),
        max_sub_account_depth: 1,
        max_grace: DEFAULT_MAX_GRACE,
        management_scopes: ManagementScopes::new("admin", "admin"),
        max_secret_age: None,
        one_scope_per_key: false,
        fixed_scopes: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_has_safe_formats() {
        for p in [mailjawn(), mailjet(), mailchannels(), mailkite(), default()] {
            assert!(!p.formats.is_empty(), "{}", p.name);
            for f in &p.formats {
                assert_eq!(f.validate(), Ok(()), "{}", p.name);
            }
        }
    }
}
