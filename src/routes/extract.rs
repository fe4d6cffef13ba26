//! Path and query extractors whose rejections have keygate's JSON error
//! shape (axum's own answer in plain text).

use axum::extract::{FromRequestParts, Path, Query};
use axum::response::Response;
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::layer::error_response;

/// Path parameters; a rejection is 400 `invalid_path`.
pub(super) struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(e) => Err(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                &e.body_text(),
            )),
        }
    }
}

/// The query string; a rejection is 400 `invalid_query`.
pub(super) struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(e) => Err(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                &e.body_text(),
            )),
        }
    }
}
