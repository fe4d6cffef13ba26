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

/// Where a client puts its credential in an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A header holding the bare key, e.g. `X-Api-Key: <key>` (name case-insensitive).
    Header(String),
    /// `Authorization: Basic base64(apikey:secret)` for key pairs.
    Basic,
}

/// Everything that defines one product's API keys. Plain data: build one with
/// the functions in this module or by hand, then pass it to
/// [`ApiKeys::builder`](crate::ApiKeys::builder).
#[derive(Debug, Clone)]
pub struct Profile {
    /// A short name, e.g. `mailjawn`.
    pub name: String,
    /// Key formats accepted; new keys use the first unless a request names another.
    pub formats: Vec<KeyFormat>,
    /// Where credentials are read from, in order.
    pub credentials: Vec<CredentialSource>,
    /// Scopes and bundles.
    pub catalog: ScopeCatalog,
    /// Bundle given to keys created without a bundle or scopes.
    pub default_bundle: Option<String>,
    /// Most active keys per account and key format (`None` = unlimited).
    /// Sub-account keys count toward the sub-account, not its parent.
    pub key_limit: Option<u32>,
    /// Regenerate a new key whose lookup id is already in use.
    pub unique_lookup: bool,
    /// Refuse plain HTTP except from localhost (enforced by the HTTP layer).
    pub https_only: bool,
    /// Per-key rate limits by operation class (empty = no limits).
    pub rate_limits: RatePolicy,
    /// How deep sub-accounts may nest: 0 = no sub-accounts, 1 = sub-accounts
    /// that cannot have their own, and so on.
    pub max_sub_account_depth: usize,
    /// The longest grace period a rotation may give the old key.
    pub max_grace: Duration,
}

/// The default [`Profile::max_grace`]: 30 days.
pub const DEFAULT_MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

impl Profile {
    /// The format with this label (token prefix, or `pair`).
    pub fn format(&self, label: &str) -> Option<(usize, &KeyFormat)> {
        self.formats
            .iter()
            .enumerate()
            .find(|(_, f)| f.label() == label)
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
        credentials: vec![CredentialSource::Bearer],
        catalog,
        default_bundle: None,
        key_limit: None,
        unique_lookup: false,
        https_only: false,
        rate_limits: mailjawn_limits(),
        max_sub_account_depth: 0,
        max_grace: DEFAULT_MAX_GRACE,
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
/// the secret can be reset under the same public key; sub-accounts have keys
/// of their own.
pub fn mailjet() -> Profile {
    Profile {
        name: "mailjet".into(),
        formats: vec![KeyFormat::Pair(PairFormat::new())],
        credentials: vec![CredentialSource::Basic],
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
    }
}

/// MailChannels: `X-Api-Key`, scope `api` (sending) or `inbound` (inbound
/// filtering) fixed at creation, 100 active keys per account and per
/// sub-account, parents manage their sub-accounts' keys.
pub fn mailchannels() -> Profile {
    Profile {
        name: "mailchannels".into(),
        formats: vec![KeyFormat::Token(
            TokenFormat::new("").body_len(40).lookup_len(12),
        )],
        credentials: vec![CredentialSource::Header("x-api-key".into())],
        catalog: catalog(&["api", "inbound"]),
        default_bundle: None,
        key_limit: Some(100),
        unique_lookup: false,
        https_only: false,
        rate_limits: RatePolicy::new(),
        max_sub_account_depth: 1,
        max_grace: DEFAULT_MAX_GRACE,
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
        credentials: vec![CredentialSource::Bearer],
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
    }
}

/// A general-purpose profile: `kg_` keys with a checksum, Bearer or
/// `X-Api-Key`, scopes `read`, `write`, `admin`, bundles `read_only` and
/// `full_access`.
pub fn default() -> Profile {
    Profile {
        name: "default".into(),
        formats: vec![KeyFormat::Token(TokenFormat::new("kg_"))],
        credentials: vec![
            CredentialSource::Bearer,
            CredentialSource::Header("x-api-key".into()),
        ],
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
