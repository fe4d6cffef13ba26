//! The [`Principal`] as an axum extractor.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::service::Principal;

/// Why a [`Principal`] could not be extracted: no [`ApiKeyLayer`](super::ApiKeyLayer)
/// covers the route. The layer answers every unauthenticated request itself,
/// so reaching a handler without a principal is a configuration error: the
/// response is 500 `api_key_layer_missing`, and the request is never served
/// as if it were authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingLayer;

impl IntoResponse for MissingLayer {
    fn into_response(self) -> Response {
        tracing::error!(target: "keygate",
            "a handler takes a Principal but no ApiKeyLayer covers its route");
        super::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_key_layer_missing",
            "this route is not configured for API keys",
        )
    }
}

/// The caller authenticated by [`ApiKeyLayer`](super::ApiKeyLayer), read from
/// the request extensions. On a route the layer does not cover it rejects
/// with [`MissingLayer`] (500, a configuration error); use
/// `Option<Principal>` on routes where a key is optional.
///
/// ```
/// use keygate::Principal;
///
/// async fn whoami(principal: Principal) -> String {
///     format!("{} ({})", principal.name(), principal.account())
/// }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = MissingLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(MissingLayer)
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
