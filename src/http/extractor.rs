//! The [`Principal`] as an axum extractor.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::error::AuthError;
use crate::service::Principal;

/// The caller authenticated by [`ApiKeyLayer`](super::ApiKeyLayer), read from
/// the request extensions. On a route the layer does not cover it rejects
/// with [`AuthError::Missing`] (401); use `Option<Principal>` where a key is
/// optional.
///
/// ```
/// use keygate::Principal;
///
/// async fn whoami(principal: Principal) -> String {
///     format!("{} ({})", principal.name(), principal.account())
/// }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            tracing::debug!(target: "keygate", "no principal: is the route behind an ApiKeyLayer?");
            AuthError::Missing
        })
    }
}

/// `Option<Principal>`: `None` on routes without a verified key.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}
