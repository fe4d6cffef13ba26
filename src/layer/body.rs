//! [`JsonBody`]: a JSON request body read with a size limit, whose rejections
//! use keygate's JSON error shape.

use axum::extract::{FromRequest, Request};
use axum::response::Response;
use http::StatusCode;
use serde::de::DeserializeOwned;

use super::error_response;

/// The largest body [`JsonBody`] reads: 64 KiB.
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// A JSON request body, deserialized into `T`. An empty body reads as `{}`,
/// so a request type whose fields are all optional accepts it. A body over
/// [`MAX_BODY_LEN`] is 413 `body_too_large`; anything that is not valid JSON
/// for `T` (wrong types, unknown fields where `T` refuses them, invalid
/// UTF-8) is 400 `invalid_json`, with the same `{"error": {"code",
/// "message"}}` shape as keygate's other errors.
///
/// ```
/// use axum::{routing::post, Router};
/// use keygate::layer::JsonBody;
/// use keygate::CreateKey;
///
/// async fn create(JsonBody(request): JsonBody<CreateKey>) -> String {
///     request.name().to_owned()
/// }
/// let app: Router = Router::new().route("/keys", post(create));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_LEN)
            .await
            .map_err(|_| {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    &format!("the request body is over {MAX_BODY_LEN} bytes"),
                )
            })?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
            error_response(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("invalid JSON body: {e}"),
            )
        })
    }
}
