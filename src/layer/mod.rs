//! The tower layer that authenticates requests with API keys (feature
//! `tower`), and axum extractors on top of it (feature `axum`).
//!
//! With `tower` (no axum needed; any tower service and body type):
//!
//! - [`ApiKeyLayer`]: a tower layer that reads the credential where the
//!   profile says, verifies it, takes a rate-limit token for the route's
//!   operation class, checks the route's scopes, and puts the
//!   [`Principal`](crate::Principal) in the request extensions. Its error
//!   responses are built in the inner service's body type (any
//!   `From<String>` body).
//! - [`extract_key`]: the header parsing, as a pure function.
//! - [`error_response`]: JSON bodies `{"error": {"code", "message"}}` that
//!   never echo the key, `WWW-Authenticate` on 401, `RateLimit-*` and
//!   `Retry-After` headers.
//! - [`HttpsOnlyLayer`]: refuses plain HTTP except from localhost.
//! - [`FailureLimit`]: an optional budget of failed verifications per client
//!   address ([`ApiKeyLayer::limit_failures`]), so floods of made-up keys
//!   stop reaching the key store.
//!
//! With `axum`, in addition:
//!
//! - `Principal` and `Option<Principal>` as extractors, and `Require<R>`, a
//!   `Principal` that holds the scope `R` names.
//! - `IntoResponse` for [`AuthError`](crate::AuthError) and
//!   [`Error`](crate::Error), so handlers can use `?` on both.
//! - `JsonBody`, a size-limited JSON body with the same error shape.
//!
#![cfg_attr(feature = "axum", doc = "```")]
#![cfg_attr(not(feature = "axum"), doc = "```ignore")]
//! use axum::{routing::{get, post}, Json, Router};
//! use keygate::layer::ApiKeyLayer;
//! use keygate::{profiles, AccountId, ApiKeys, CreateKey, ListOptions, Principal};
//!
//! async fn list_keys(
//!     axum::extract::State(api): axum::extract::State<ApiKeys>,
//!     principal: Principal,
//! ) -> Result<Json<keygate::Page>, keygate::Error> {
//!     // Act as the calling key: its own account and sub-accounts only.
//!     let keys = api.as_key(&principal);
//!     Ok(Json(keys.list(principal.account(), ListOptions::default()).await?))
//! }
//!
//! # fn main() -> Result<(), keygate::Error> {
//! let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
//! let keys = ApiKeyLayer::new(api.clone());
//! let app: Router = Router::new()
//!     .route("/v1/api-keys", get(list_keys).route_layer(keys.require("api_keys:read")?))
//!     .route(
//!         "/v1/emails/send",
//!         post(|p: Principal| async move { format!("queued for {}", p.account()) })
//!             .route_layer(keys.operation("send")?.require("emails:send")?),
//!     )
//!     .with_state(api);
//! # Ok(()) }
//! ```

#[cfg(feature = "axum")]
mod body;
mod extract;
#[cfg(feature = "axum")]
mod extractor;
mod failures;
mod https;
mod response;
mod service;

#[cfg(feature = "axum")]
pub use body::{JsonBody, MAX_BODY_LEN};
pub use extract::{extract_key, PresentedKey, MAX_PRESENTED_KEY_LEN};
#[cfg(feature = "axum")]
pub use extractor::{MissingLayer, Require, RequireRejection, RequiredScope};
pub use failures::FailureLimit;
pub use https::{HttpsOnly, HttpsOnlyFuture, HttpsOnlyLayer};
pub use response::{
    error_response, insert_rate_limit_headers, CREDITS_REMAINING, RATELIMIT_LIMIT,
    RATELIMIT_REMAINING, RATELIMIT_RESET,
};
pub use service::{ApiKeyLayer, ApiKeyService, ResponseFuture};
