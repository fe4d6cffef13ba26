//! HTTP integration for axum and any tower service (feature `axum`).
//!
//! - [`ApiKeyLayer`]: a tower layer that reads the credential where the
//!   profile says, verifies it, takes a rate-limit token for the route's
//!   operation class, checks the route's scopes, and puts the
//!   [`Principal`](crate::Principal) in the request extensions.
//! - `Principal` (and `Option<Principal>`) as an axum extractor.
//! - [`extract_credential`]: the header parsing, as a pure function.
//! - `IntoResponse` for [`AuthError`](crate::AuthError) and
//!   [`Error`](crate::Error): JSON bodies `{"error": {"code", "message"}}`
//!   that never echo the key, `WWW-Authenticate` on 401, `RateLimit-*` and
//!   `Retry-After` headers; handlers can use `?` on both.
//! - [`HttpsOnlyLayer`]: refuses plain HTTP except from localhost.
//!
//! ```
//! use axum::{routing::{get, post}, Json, Router};
//! use keygate::http::ApiKeyLayer;
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

mod body;
mod extract;
mod extractor;
mod https;
mod layer;
mod response;

pub use body::{JsonBody, MAX_BODY_LEN};
pub use extract::{extract_credential, PresentedKey, MAX_CREDENTIAL_LEN};
pub use extractor::MissingLayer;
pub use https::{HttpsOnly, HttpsOnlyFuture, HttpsOnlyLayer};
pub use layer::{ApiKeyLayer, ApiKeyService, ResponseFuture};
pub use response::{
    error_response, insert_rate_limit_headers, CREDITS_REMAINING, RATELIMIT_LIMIT,
    RATELIMIT_REMAINING, RATELIMIT_RESET,
};
