//! Ready-to-mount key-management routes for axum (feature `axum`): what a
//! service offers its users to manage their own API keys, with the rules of
//! [`ApiKeys::as_key`] (an account and its sub-accounts only, and no key
//! grants more than it holds).
//!
//! ```
//! use axum::Router;
//! use keygate::layer::ApiKeyLayer;
//! use keygate::routes::ManagementRoutes;
//! use keygate::{profiles, ApiKeys};
//!
//! # fn main() -> Result<(), keygate::Error> {
//! let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
//! let keys = ApiKeyLayer::new(api.clone());
//! let app: Router = Router::new()
//!     // ... your own routes, each behind `keys` ...
//!     .merge(ManagementRoutes::new(&keys).prefix("/v1").build()?);
//! # Ok(()) }
//! ```
//!
//! With the prefix `/v1`, the routes are (`{id}` is a key id, `{handle}` a
//! sub-account's handle; *read* and *write* are the profile's
//! [`management_scopes`](crate::Profile::management_scopes)):
//!
//! | route | scope | does | answers |
//! |---|---|---|---|
//! | `POST /v1/api-keys` | write | create a key for the caller's account | 201, [`NewKey::response`] |
//! | `GET /v1/api-keys?after=…&limit=…` | read | list the account's keys | 200, [`Page`] |
//! | `GET /v1/api-keys/{id}` | read | one key (a revoked key is 404, gone like a deleted one) | 200, [`KeyInfo`] |
//! | `DELETE /v1/api-keys/{id}` | write | revoke at once | 204 |
//! | `POST /v1/api-keys/{id}/rotate` | write | a successor; the old key stops now or after `{"grace_seconds": n}` | 201, [`NewKey::response`] |
//! | `POST /v1/api-keys/{id}/reset-secret` | write | a new secret under the same id (key pairs keep their public key) | 200, [`NewKey::response`] |
//! | `PATCH /v1/api-keys/{id}` | write | change name, metadata, expiry, rate limits, credits or scopes without reissuing ([`KeyUpdate`](crate::KeyUpdate)) | 200, [`KeyInfo`] |
//! | `POST /v1/api-keys/{id}/disable`, `…/enable` | write | refuse the key until enabled again (401 `disabled_api_key`) | 200, [`KeyInfo`] |
//! | `POST /v1/identities` | write | create an [identity](crate::Identity) of the caller's account ([`CreateIdentity`](crate::CreateIdentity)) | 201, [`Identity`](crate::Identity) |
//! | `GET /v1/identities?after=…&limit=…` | read | list the account's identities | 200, `{"data", "next"}` |
//! | `GET`, `PATCH`, `DELETE /v1/identities/{id}` | read, write, write | one identity; change its metadata, credits or rate limits ([`IdentityUpdate`](crate::IdentityUpdate)); delete it, detaching its keys | 200, 200, 204 |
//! | `POST /v1/sub-account` `{"handle": …}` | write | create a sub-account (profiles with sub-accounts) | 201, [`SubAccount`] |
//! | `POST`, `GET /v1/sub-account/{handle}/api-key` | write, read | create, list a sub-account's keys | as above |
//! | `GET`, `DELETE /v1/sub-account/{handle}/api-key/{id}` | read, write | get, revoke one | as above |
//! | `POST /v1/sub-account/{handle}/api-key/{id}/rotate`, `…/reset-secret`, `…/disable`, `…/enable`; `PATCH …/{id}` | write | rotate, reset, disable, enable, update one | as above |
//! | `GET`, `POST …/rotate` on [`current_key`](ManagementRoutes::current_key) | read, write | list the account's keys, rotate the calling key | as above |
//!
//! A create body is [`CreateKey`]'s JSON (`name` or `label`, `bundle`,
//! `scopes`, `expires_at`, `format`, `rate_limits`, `metadata`, `credits`, `identity`); every field may be left
//! out, and an empty body is `{}`. Lists take `after` (the previous page's
//! `next`), `limit` (1 to [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE), default
//! 100) and `include_revoked`. Bodies are read with
//! [`JsonBody`](crate::layer::JsonBody): over 64 KiB is 413, JSON of the wrong
//! shape is 400 `invalid_json`; a bad query is 400 `invalid_query`. Every
//! error has keygate's shape, `{"error": {"code", "message"}}`, and a key out
//! of the caller's reach is 404, exactly like a missing one. A response that
//! carries a new secret is sent with `Cache-Control: no-store`.
//!
//! Every size a request controls is bounded, and past it the answer is a
//! 4xx JSON error before anything is stored:
//!
//! | what | bound | past it |
//! |---|---|---|
//! | the credential header (`Authorization`, `X-Api-Key`, …) | [`MAX_PRESENTED_KEY_LEN`](crate::layer::MAX_PRESENTED_KEY_LEN) bytes | 401 `malformed_api_key`, without a store lookup |
//! | the whole header block | the HTTP server's (hyper: about 400 KiB) | 431, or the connection is closed, before any route runs |
//! | a JSON body | [`MAX_BODY_LEN`](crate::layer::MAX_BODY_LEN) (64 KiB) | 413 `body_too_large` |
//! | `limit` of a list | 1 to [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE) | 400 `invalid_request` (400 `invalid_query` when not a number) |
//! | a key's name | [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) characters | 400 `invalid_request` |
//! | its metadata | [`MAX_METADATA_BYTES`](crate::MAX_METADATA_BYTES) serialized | 400 `invalid_json` |
//! | its scopes, its rate limits | [`MAX_REQUEST_SCOPES`](crate::MAX_REQUEST_SCOPES), [`MAX_REQUEST_LIMITS`](crate::MAX_REQUEST_LIMITS) | 400 `invalid_request` |
//! | credits (`remaining`, refill `amount`, `interval_ms`) | `i64::MAX` | 400 `invalid_request` |

mod extract;
mod handlers;
#[cfg(feature = "openapi")]
pub mod openapi;

use std::sync::Arc;

use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use axum::Router;
use http::StatusCode;
use serde::Serialize;

use crate::error::Error;
use crate::layer::{error_response, ApiKeyLayer};
use crate::service::ApiKeys;
use crate::store::AccountId;

#[cfg(doc)]
use crate::service::{CreateKey, KeyInfo, NewKey, Page};

/// A sub-account as the create route answers it: `{"handle", "account",
/// "parent"}`, where `account` is `parent/handle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SubAccount {
    /// The handle the parent chose.
    pub handle: String,
    /// The sub-account's id, `parent/handle`.
    pub account: AccountId,
    /// The parent account.
    pub parent: AccountId,
}

/// Builds the key-management [`Router`]; see the [module docs](self) for the
/// routes. Each route sits behind the given [`ApiKeyLayer`] (so credentials,
/// HTTPS policy and rate-limit classes are the profile's) with the profile's
/// [`management_scopes`](crate::Profile::management_scopes).
#[derive(Debug, Clone)]
pub struct ManagementRoutes {
    layer: ApiKeyLayer,
    prefix: String,
    own_keys: bool,
    sub_accounts: bool,
    current_key: Option<String>,
    default_scopes: Vec<String>,
}

/// State shared by the handlers.
#[derive(Clone)]
struct RouteState {
    api: ApiKeys,
    /// Scopes for a new key whose request names no grant, when the profile
    /// has no default bundle.
    default_scopes: Arc<[String]>,
}

impl ManagementRoutes {
    /// Routes for the service `layer` checks: the caller's own keys at
    /// `/api-keys`, and sub-accounts at `/sub-account` when the profile
    /// allows them.
    pub fn new(layer: &ApiKeyLayer) -> Self {
        Self {
            sub_accounts: layer.api().profile().max_sub_account_depth() > 0,
            layer: layer.clone(),
            prefix: String::new(),
            own_keys: true,
            current_key: None,
            default_scopes: Vec::new(),
        }
    }

    /// Puts every route under `prefix`, e.g. `/v1`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// Mounts (or not) the `/api-keys` routes for the caller's own account.
    #[must_use]
    pub fn own_keys(mut self, on: bool) -> Self {
        self.own_keys = on;
        self
    }

    /// Mounts (or not) the `/sub-account` routes (default: when the profile
    /// allows sub-accounts).
    #[must_use]
    pub fn sub_accounts(mut self, on: bool) -> Self {
        self.sub_accounts = on;
        self
    }

    /// Also mounts `GET {path}` (the caller's account's keys) and `POST
    /// {path}/rotate` (rotates the calling key itself, at once unless the
    /// body gives `grace_seconds`), for products with one key per account
    /// (MailKite's `/api/api-key`). `path` is under the prefix.
    #[must_use]
    pub fn current_key(mut self, path: impl Into<String>) -> Self {
        self.current_key = Some(path.into());
        self
    }

    /// Scopes for a sub-account key created through these routes with
    /// neither bundle nor scopes, when the profile has no default bundle
    /// (MailChannels: `api`, as a sub-account key created with no body
    /// has). Without it, and always for the caller's own keys, such a
    /// request is 400 `invalid_request`: a key's scope is chosen when it is
    /// made.
    #[must_use]
    pub fn default_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The router, ready to [`merge`](Router::merge) into an application of
    /// any state type. Fails when a management scope or a default scope is
    /// not in the profile's catalog.
    pub fn build<S: Clone + Send + Sync + 'static>(self) -> Result<Router<S>, Error> {
        let api = self.layer.api().clone();
        let catalog = api.profile().catalog();
        catalog.compile(self.default_scopes.iter().map(String::as_str))?;
        let scopes = api.profile().management_scopes();
        let scoped = |scope: &Option<String>| match scope {
            Some(s) => self.layer.require(s),
            None => Ok(self.layer.clone()),
        };
        let (read, write) = (scoped(&scopes.read)?, scoped(&scopes.write)?);
        let p = &self.prefix;
        let mut router = Router::new();
        if self.own_keys {
            let keys = format!("{p}/api-keys");
            router = router
                .route(&keys, post(handlers::create_key).route_layer(write.clone()))
                .route(&keys, get(handlers::list_keys).route_layer(read.clone()))
                .route(
                    &format!("{keys}/{{id}}"),
                    get(handlers::get_key).route_layer(read.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}"),
                    delete(handlers::revoke_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/rotate"),
                    post(handlers::rotate_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/reset-secret"),
                    post(handlers::reset_secret).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}"),
                    patch(handlers::update_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/disable"),
                    post(handlers::disable_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/enable"),
                    post(handlers::enable_key).route_layer(write.clone()),
                );
            let identities = format!("{p}/identities");
            let one = format!("{identities}/{{id}}");
            router = router
                .route(
                    &identities,
                    post(handlers::create_identity).route_layer(write.clone()),
                )
                .route(
                    &identities,
                    get(handlers::list_identities).route_layer(read.clone()),
                )
                .route(&one, get(handlers::get_identity).route_layer(read.clone()))
                .route(
                    &one,
                    patch(handlers::update_identity).route_layer(write.clone()),
                )
                .route(
                    &one,
                    delete(handlers::delete_identity).route_layer(write.clone()),
                );
        }
        if self.sub_accounts {
            let subs = format!("{p}/sub-account");
            let keys = format!("{subs}/{{handle}}/api-key");
            router = router
                .route(
                    &subs,
                    post(handlers::create_sub_account).route_layer(write.clone()),
                )
                .route(
                    &keys,
                    post(handlers::create_sub_key).route_layer(write.clone()),
                )
                .route(
                    &keys,
                    get(handlers::list_sub_keys).route_layer(read.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}"),
                    get(handlers::get_sub_key).route_layer(read.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}"),
                    delete(handlers::revoke_sub_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/rotate"),
                    post(handlers::rotate_sub_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/reset-secret"),
                    post(handlers::reset_sub_secret).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}"),
                    patch(handlers::update_sub_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/disable"),
                    post(handlers::disable_sub_key).route_layer(write.clone()),
                )
                .route(
                    &format!("{keys}/{{id}}/enable"),
                    post(handlers::enable_sub_key).route_layer(write.clone()),
                );
        }
        if let Some(path) = &self.current_key {
            let own = format!("{p}{path}");
            router = router
                .route(&own, get(handlers::list_keys).route_layer(read.clone()))
                .route(
                    &format!("{own}/rotate"),
                    post(handlers::rotate_current_key).route_layer(write.clone()),
                );
        }
        Ok(router.with_state(RouteState {
            api,
            default_scopes: self.default_scopes.into(),
        }))
    }
}

/// The key-management routes for `api` with default settings: a plain
/// [`ApiKeyLayer`], no prefix. See [`ManagementRoutes`] to configure them.
///
/// ```
/// use keygate::{profiles, ApiKeys};
/// let api = ApiKeys::in_memory(profiles::mailchannels()).unwrap();
/// let app: axum::Router = keygate::routes::management(&api).unwrap();
/// ```
pub fn management<S: Clone + Send + Sync + 'static>(api: &ApiKeys) -> Result<Router<S>, Error> {
    ManagementRoutes::new(&ApiKeyLayer::new(api.clone())).build()
}

/// A fallback answering 404 `not_found` in keygate's JSON error shape, for
/// [`Router::fallback`], so unknown paths answer like everything else.
pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// A fallback answering 405 `method_not_allowed` in keygate's JSON error
/// shape, for [`Router::method_not_allowed_fallback`].
pub async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
