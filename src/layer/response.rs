//! Errors as HTTP responses: a JSON body `{"error": {"code", "message"}}`,
//! `WWW-Authenticate` on 401, `RateLimit-*` and `Retry-After` headers.
//!
//! Responses are built in any body type that can be made from a `String`
//! (`axum::body::Body`, `http_body_util::Full<Bytes>`, `String`), so the
//! layer fits any tower stack; with the `axum` feature, [`AuthError`] and
//! [`Error`] are also `IntoResponse`.

use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};

use crate::error::AuthError;
use crate::profiles::KeyLocation;
use crate::ratelimit::Decision;

/// `RateLimit-Limit`: requests a full bucket admits at once.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: requests still admitted right now.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the bucket is full again.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `Credits-Remaining`: the usage credits left after this request, on
/// responses to keys with a usage limit or whose identity has one: the
/// smaller of the key's and the identity's
/// ([`Principal::spendable_credits`](crate::Principal::spendable_credits)).
pub const CREDITS_REMAINING: HeaderName = HeaderName::from_static("credits-remaining");

/// The challenge [`AuthError`]'s own `IntoResponse` sends on 401. The
/// [`ApiKeyLayer`](super::ApiKeyLayer) sends the profile's own instead.
#[cfg(feature = "axum")]
const DEFAULT_CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"api\"");

/// A JSON error response in keygate's shape:
/// `{"error": {"code": "<code>", "message": "<message>"}}`, in any body type
/// that can be made from a `String` (the body type of the service the
/// response stands in for).
///
/// Use it for your own errors so clients see one shape everywhere.
///
/// ```
/// use http::StatusCode;
/// let response: http::Response<String> = keygate::layer::error_response(
///     StatusCode::BAD_REQUEST, "invalid_json", "expected a JSON object");
/// assert_eq!(response.status(), 400);
/// assert_eq!(response.headers()["content-type"], "application/json");
/// assert_eq!(
///     response.body(),
///     r#"{"error":{"code":"invalid_json","message":"expected a JSON object"}}"#,
/// );
/// ```
pub fn error_response<B: From<String>>(
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<B> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = Response::new(B::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and, when
/// the decision is a denial, `Retry-After` (whole seconds, rounded up).
///
/// The [`ApiKeyLayer`](super::ApiKeyLayer) does this for every response of a
/// rate-limited route; call it yourself when you use
/// [`ApiKeys::verify_for`](crate::ApiKeys::verify_for) directly.
pub fn insert_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATELIMIT_LIMIT, number(u64::from(decision.limit)));
    insert_rate_limit_headers_after_limit(headers, decision);
}

/// [`insert_rate_limit_headers`] but for `RateLimit-Limit`.
pub(crate) fn insert_rate_limit_headers_after_limit(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATELIMIT_REMAINING, number(u64::from(decision.remaining)));
    headers.insert(RATELIMIT_RESET, number(decision.reset_secs()));
    if let Some(secs) = decision.retry_after_secs() {
        headers.insert(RETRY_AFTER, number(secs));
    }
}

/// Numbers below this are served from a shared table of header values.
const SMALL_NUMBERS: u64 = 1024;

/// A limit as a header value. A class's limit is the same on most
/// responses, so the last one formatted on this thread is kept and cloned
/// (a reference count) while it repeats; other numbers go to [`number`].
pub(crate) fn limit_number(n: u32) -> HeaderValue {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(u32, HeaderValue)>> = const { RefCell::new(None) };
    }
    if u64::from(n) < SMALL_NUMBERS {
        return number(u64::from(n));
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((cached, value)) if *cached == n => value.clone(),
            _ => {
                let value = number(u64::from(n));
                *last = Some((n, value.clone()));
                value
            }
        }
    })
}

/// `n` as a header value. Formatting a number allocates; the common small
/// ones (limits, remaining counts, seconds) are cloned from a table instead,
/// which only bumps a reference count.
pub(crate) fn number(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Box<[HeaderValue]>> = OnceLock::new();
    if n >= SMALL_NUMBERS {
        return HeaderValue::from(n);
    }
    let table = TABLE.get_or_init(|| (0..SMALL_NUMBERS).map(HeaderValue::from).collect());
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// The `WWW-Authenticate` challenges for a profile's credential sources:
/// `Bearer realm="api"`, `Basic realm="api"`, `ApiKey header="X-Api-Key"`.
pub(crate) fn challenges(sources: &[KeyLocation]) -> Vec<HeaderValue> {
    sources
        .iter()
        .filter_map(|s| {
            let text = match s {
                KeyLocation::Bearer => "Bearer realm=\"api\"".to_owned(),
                KeyLocation::Basic => "Basic realm=\"api\"".to_owned(),
                KeyLocation::Header(name) => {
                    format!("ApiKey header=\"{}\"", title_case(name))
                }
            };
            HeaderValue::try_from(text).ok()
        })
        .collect()
}

/// `x-api-key` → `X-Api-Key`, the way such headers are usually written.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The answer to a request from a client address that has spent its budget
/// of failed verifications: `429`, code `too_many_failures`, and
/// `Retry-After` in whole seconds, rounded up.
pub(crate) fn failures_refusal<B: From<String>>(retry_after: std::time::Duration) -> Response<B> {
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "too many failed authentications from this address",
    );
    let secs = retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
    response.headers_mut().insert(RETRY_AFTER, number(secs));
    response
}

/// An [`AuthError`] as a response, with these challenges on 401.
pub(crate) fn auth_error_response<B: From<String>>(
    error: &AuthError,
    challenges: &[HeaderValue],
) -> Response<B> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = error_response(status, error.code(), &error.to_string());
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        for challenge in challenges {
            headers.append(WWW_AUTHENTICATE, challenge.clone());
        }
    }
    match error {
        AuthError::RateLimited { decision } => insert_rate_limit_headers(headers, decision),
        AuthError::UsageExceeded { retry_after } => {
            headers.insert(CREDITS_REMAINING, number(0));
            if let Some(wait) = retry_after {
                // Whole seconds, rounded up, so a client never retries early.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(RETRY_AFTER, number(secs));
            }
        }
        _ => {}
    }
    response
}

/// The error's status and a JSON body with its [`code`](AuthError::code) and
/// message, `WWW-Authenticate: Bearer realm="api"` on 401, the
/// `RateLimit-*` and `Retry-After` headers on 429 `rate_limited`, and
/// `Credits-Remaining: 0` with `Retry-After` (when a refill will come) on 429
/// `usage_exceeded`. The message never contains
/// the presented key.
///
/// Handlers can return `Result<_, AuthError>` and use `?`, e.g. on
/// [`ApiKeys::check_scope`](crate::ApiKeys::check_scope).
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for AuthError {
    fn into_response(self) -> axum::response::Response {
        auth_error_response(&self, std::slice::from_ref(&DEFAULT_CHALLENGE))
    }
}

/// The error's [`status`](crate::Error::status) and a JSON body with its
/// [`code`](crate::Error::code) and message. Store failures are logged and answered
/// without their details (`503` when unavailable, `500` otherwise; a
/// misconfigured store is logged as an error).
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for crate::error::Error {
    fn into_response(self) -> axum::response::Response {
        use crate::error::Error;
        use crate::store::StoreError;
        if let Error::Auth(e) = self {
            return e.into_response();
        }
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &self {
            Error::Store(e) => match e {
                StoreError::Misconfigured(_) => {
                    tracing::error!(target: "keygate", error = %e, "key store misconfigured");
                    "key store misconfigured".to_owned()
                }
                StoreError::Unavailable(_) => {
                    tracing::warn!(target: "keygate", error = %e, "key store failed");
                    "key store unavailable".to_owned()
                }
                _ => {
                    tracing::warn!(target: "keygate", error = %e, "key store failed");
                    "key store error".to_owned()
                }
            },
            other => other.to_string(),
        };
        error_response(status, self.code(), &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "axum")]
    use crate::key::MalformedReason;
    #[cfg(feature = "axum")]
    use std::time::Duration;

    #[test]
    fn numbers_format_in_and_beyond_the_table() {
        for n in [0, 1, 9, 10, 99, 100, 1023, 1024, 65_536, u64::MAX] {
            assert_eq!(number(n), n.to_string().as_str());
        }
        // The kept limit is replaced when another one comes.
        for n in [
            0,
            5_000,
            5_000,
            1_000_000_000,
            5_000,
            1_000_000_000,
            u32::MAX,
        ] {
            assert_eq!(limit_number(n), n.to_string().as_str());
        }
    }

    #[test]
    fn challenges_follow_the_sources() {
        let c = challenges(&[
            KeyLocation::Bearer,
            KeyLocation::Basic,
            KeyLocation::Header("x-api-key".into()),
        ]);
        assert_eq!(c[0], "Bearer realm=\"api\"");
        assert_eq!(c[1], "Basic realm=\"api\"");
        assert_eq!(c[2], "ApiKey header=\"X-Api-Key\"");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn auth_errors_map_to_their_status_and_headers() {
        use axum::response::IntoResponse;
        let r = AuthError::Malformed {
            reason: MalformedReason::Checksum,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"api\"");

        let r = AuthError::Forbidden {
            required: "emails:send".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());

        let r = AuthError::RateLimited {
            decision: Decision {
                allowed: false,
                limit: 10,
                remaining: 0,
                reset: Duration::from_millis(59_500),
                retry_after: Some(Duration::from_millis(5_100)),
            },
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RATELIMIT_LIMIT], "10");
        assert_eq!(r.headers()[RATELIMIT_REMAINING], "0");
        assert_eq!(r.headers()[RATELIMIT_RESET], "60");
        assert_eq!(r.headers()[RETRY_AFTER], "6");

        assert_eq!(AuthError::Unavailable.into_response().status(), 503);
    }

    #[cfg(feature = "axum")]
    #[test]
    fn exhausted_credits_are_429_usage_exceeded_with_retry_after_to_the_refill() {
        use axum::response::IntoResponse;
        let r = AuthError::UsageExceeded {
            retry_after: Some(Duration::from_millis(3_600_001)),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "3601");
        assert_eq!(r.headers()[CREDITS_REMAINING], "0");
        assert!(r.headers().get(RATELIMIT_LIMIT).is_none());
        let never = AuthError::UsageExceeded { retry_after: None }.into_response();
        assert_eq!(never.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(never.headers().get(RETRY_AFTER).is_none());
    }

    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn a_disabled_key_is_401_disabled_api_key_with_a_challenge() {
        use axum::response::IntoResponse;
        let r = AuthError::Disabled.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"api\"");
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "disabled_api_key");
        assert_eq!(body["error"]["message"], "api key disabled");
    }

    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn store_errors_hide_their_details() {
        use crate::error::Error;
        use crate::store::StoreError;
        use axum::response::IntoResponse;
        async fn answer(e: StoreError) -> (StatusCode, serde_json::Value) {
            let r = Error::Store(e).into_response();
            let status = r.status();
            let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
            (status, serde_json::from_slice(&body).unwrap())
        }
        let (status, body) = answer(StoreError::Unavailable("db at 10.0.0.5 refused".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(body["error"]["message"], "key store unavailable");
        let (status, body) = answer(StoreError::Corrupt("row 7".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "store_error");
        assert_eq!(body["error"]["message"], "key store error");
        let (status, body) = answer(StoreError::Misconfigured(
            "relation \"api_keys\" does not exist".into(),
        ))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "store_misconfigured");
        assert_eq!(body["error"]["message"], "key store misconfigured");
        assert_eq!(Error::NotFound.into_response().status(), 404);
    }
}
