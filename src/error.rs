//! The two error types, by audience: [`AuthError`] for callers of verify (each
//! variant maps to one HTTP status) and [`Error`] for management calls.
//! No message ever contains a secret.

use crate::key::{FormatError, MalformedReason};
use crate::metadata::MetadataError;
use crate::ratelimit::Decision;
use crate::scope::ScopeError;
use crate::store::{InvalidAccountId, StoreError};

/// Why a request could not be authenticated or authorised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was presented. HTTP 401.
    #[error("missing api key")]
    Missing,
    /// The credential is not shaped like a key of this product (wrong prefix,
    /// length, alphabet or checksum); nothing was looked up. HTTP 401.
    #[error("malformed api key: {reason}")]
    Malformed {
        /// What was wrong with it.
        reason: MalformedReason,
    },
    /// Well formed, but no stored key matches. HTTP 401.
    #[error("invalid api key")]
    Invalid,
    /// The key was revoked. HTTP 401.
    #[error("api key revoked")]
    Revoked,
    /// The key has expired. HTTP 401.
    #[error("api key expired")]
    Expired,
    /// The key is disabled; unlike revocation, enabling it makes it work
    /// again. HTTP 401.
    #[error("api key disabled")]
    Disabled,
    /// The key is valid but lacks a required scope. HTTP 403.
    #[error("api key lacks required scope: {required}")]
    Forbidden {
        /// The requirement that was not met, e.g. `subscribers:read`.
        required: String,
    },
    /// The key exceeded its rate limit for this operation class. HTTP 429.
    #[error("rate limit exceeded")]
    RateLimited {
        /// The limiter's decision, with the values for `RateLimit-*` and
        /// `Retry-After` headers.
        decision: Decision,
    },
    /// The key has spent its usage credits. HTTP 429 with code
    /// `usage_exceeded`, and `Retry-After` when a refill will allow the
    /// request.
    #[error("usage credits exhausted")]
    UsageExceeded {
        /// How long until the next refill that allows the request; `None`
        /// when none will.
        retry_after: Option<std::time::Duration>,
    },
    /// The key store or shared rate limiter cannot be reached. HTTP 503.
    /// Never treated as success.
    #[error("authentication temporarily unavailable")]
    Unavailable,
    /// A session token (a JWT) was refused; the reason says why. HTTP 401.
    #[error("invalid session token: {reason}")]
    Session {
        /// Why the token was refused.
        reason: SessionReason,
    },
    /// A valid session token was presented to a route that takes API keys
    /// only. HTTP 403.
    #[error("this route does not accept session tokens: use an api key")]
    SessionNotAccepted,
}

/// Why a session token was refused ([`AuthError::Session`], 401). No reason
/// carries any part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionReason {
    /// Longer than the longest token accepted (8 KiB); not decoded.
    #[error("token too long")]
    TooLong,
    /// Not three base64url segments of JSON, or a claim missing or of the
    /// wrong type.
    #[error("token is not a well-formed jwt")]
    Malformed,
    /// The header's `alg` is not the algorithm of the key its `kid` names
    /// (`none`, or an HMAC token against an Ed25519 key and the reverse).
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The header names no `kid`, or one this service does not know.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed.
    #[error("session expired")]
    Expired,
    /// `nbf` (or `iat`) is in the future.
    #[error("session not yet valid")]
    NotYetValid,
    /// `iss` is not this service's issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not name this service's audience.
    #[error("wrong audience")]
    Audience,
    /// The user's sessions were ended (logout or password change) after
    /// this token was issued.
    #[error("session ended")]
    Ended,
}

impl AuthError {
    /// The HTTP status code this error maps to.
    ///
    /// ```
    /// use keygate::AuthError;
    /// assert_eq!(AuthError::Revoked.status(), 401);
    /// assert_eq!(AuthError::Unavailable.status(), 503);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            Self::Missing
            | Self::Malformed { .. }
            | Self::Invalid
            | Self::Revoked
            | Self::Expired
            | Self::Session { .. }
            | Self::Disabled => 401,
            Self::Forbidden { .. } | Self::SessionNotAccepted => 403,
            Self::RateLimited { .. } | Self::UsageExceeded { .. } => 429,
            Self::Unavailable => 503,
        }
    }

    /// A stable machine-readable code, e.g. `invalid_api_key`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_api_key",
            Self::Malformed { .. } => "malformed_api_key",
            Self::Invalid => "invalid_api_key",
            Self::Revoked => "revoked_api_key",
            Self::Expired => "expired_api_key",
            Self::Disabled => "disabled_api_key",
            Self::Forbidden { .. } => "insufficient_scope",
            Self::RateLimited { .. } => "rate_limited",
            Self::UsageExceeded { .. } => "usage_exceeded",
            Self::Unavailable => "unavailable",
            Self::Session { .. } => "invalid_session",
            Self::SessionNotAccepted => "session_not_accepted",
        }
    }
}

/// Why a management call (create, list, revoke, rotate, …) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key or account does not exist, or the caller does not own it.
    #[error("not found")]
    NotFound,
    /// The account already has as many active keys as its profile allows.
    #[error("key limit reached: an account may hold {limit} active keys; revoke one first")]
    KeyLimitReached {
        /// The limit that applies.
        limit: u32,
    },
    /// A scope or bundle name is unknown (the message names it).
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// The key is revoked, so it cannot be rotated or reset.
    #[error("key is revoked")]
    Revoked,
    /// The key was already rotated (its successor exists and it may still
    /// be in its grace period), so it cannot be rotated again. HTTP 409.
    #[error("key was already rotated")]
    AlreadyRotated,
    /// The acting key asked for more than it holds: scopes it lacks, a larger
    /// rate limit, or a key stronger than itself to rotate, reset or revoke.
    /// HTTP 403.
    #[error("the acting key lacks the scopes or limits this needs")]
    InsufficientScope,
    /// The profile allows no sub-account at this depth (MailChannels and
    /// Mailjet: a sub-account cannot have sub-accounts). HTTP 403.
    #[error("sub-accounts may nest at most {max} level(s) deep")]
    SubAccountDepth {
        /// The profile's [`max_sub_account_depth`](crate::Profile::max_sub_account_depth).
        max: usize,
    },
    /// Only the trusted operator may do this (importing keys). HTTP 403.
    #[error("only the operator may do this")]
    OperatorOnly,
    /// A request field is invalid; match on [`InvalidRequest`] for which.
    #[error("invalid request: {0}")]
    Invalid(InvalidRequest),
    /// The account id is not acceptable.
    #[error(transparent)]
    Account(#[from] InvalidAccountId),
    /// The account or key already exists; match on [`ConflictKind`] for what.
    #[error("conflict: {0}")]
    Conflict(ConflictKind),
    /// The key store failed or cannot be reached: 503 `unavailable` when
    /// [`StoreError::Unavailable`], 500 `store_misconfigured` when
    /// [`StoreError::Misconfigured`], 500 `store_error` otherwise.
    #[error("key store error: {0}")]
    Store(StoreError),
    /// Authentication or authorisation failed (a handler that verifies and
    /// then manages keys can use `?` on both). Status and code are the
    /// [`AuthError`]'s own.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl Error {
    /// The HTTP status code this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::KeyLimitReached { .. }
            | Self::Conflict(_)
            | Self::Revoked
            | Self::AlreadyRotated => 409,
            Self::InsufficientScope | Self::SubAccountDepth { .. } | Self::OperatorOnly => 403,
            Self::Scope(_) | Self::Invalid(_) | Self::Account(_) => 400,
            Self::Store(StoreError::Unavailable(_)) => 503,
            Self::Store(_) => 500,
            Self::Auth(e) => e.status(),
        }
    }

    /// A stable machine-readable code, e.g. `key_limit_reached`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::KeyLimitReached { .. } => "key_limit_reached",
            Self::Scope(ScopeError::UnknownBundle(_)) => "unknown_bundle",
            Self::Scope(_) => "invalid_scope",
            Self::Revoked => "key_revoked",
            Self::AlreadyRotated => "key_already_rotated",
            Self::InsufficientScope => "insufficient_scope",
            Self::SubAccountDepth { .. } => "sub_account_depth",
            Self::OperatorOnly => "operator_only",
            Self::Invalid(_) => "invalid_request",
            Self::Account(_) => "invalid_account",
            Self::Conflict(_) => "conflict",
            Self::Store(StoreError::Unavailable(_)) => "unavailable",
            Self::Store(StoreError::Misconfigured(_)) => "store_misconfigured",
            Self::Store(_) => "store_error",
            Self::Auth(e) => e.code(),
        }
    }
}

/// Which part of a management request is invalid ([`Error::Invalid`], 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRequest {
    /// The key name is empty (after trimming).
    #[error("name must not be empty")]
    EmptyName,
    /// The key name is longer than this many characters.
    #[error("name must be at most {max} characters")]
    NameTooLong {
        /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
        max: usize,
    },
    /// The key name contains control characters.
    #[error("name must not contain control characters")]
    NameControlCharacters,
    /// Neither a bundle nor a scope, and the profile has no default bundle.
    #[error("choose a bundle or at least one scope")]
    NoGrant,
    /// More scopes than one request may name.
    #[error("at most {max} scopes per key")]
    TooManyScopes {
        /// [`MAX_REQUEST_SCOPES`](crate::MAX_REQUEST_SCOPES).
        max: usize,
    },
    /// More rate-limit overrides than one request may carry.
    #[error("at most {max} rate-limit overrides per key")]
    TooManyLimits {
        /// [`MAX_REQUEST_LIMITS`](crate::MAX_REQUEST_LIMITS).
        max: usize,
    },
    /// An operation class the profile does not define.
    #[error("unknown operation class '{0}'")]
    UnknownClass(String),
    /// A key format label the profile does not define (or no longer does).
    #[error("unknown key format '{0}'")]
    UnknownFormat(String),
    /// An imported key is not in the format the request names.
    #[error("the key is not in the requested format '{0}'")]
    FormatMismatch(String),
    /// An imported key does not parse with the profile's formats.
    #[error("the key does not match this profile's key formats: {0}")]
    MalformedKey(MalformedReason),
    /// A session subject (user id) is empty, longer than 255 bytes or has
    /// control characters.
    #[error("session subject must be 1 to 255 bytes without control characters")]
    SessionSubject,
    /// `expires_at` is not in the future.
    #[error("expires_at must be in the future")]
    ExpiryInPast,
    /// A list page size outside 1 to [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE).
    #[error("page size must be 1 to {max}")]
    PageSize {
        /// The largest page.
        max: usize,
    },
    /// The profile gives every key exactly one scope
    /// ([`Profile::one_scope_per_key`](crate::Profile::one_scope_per_key)),
    /// and the request asks for none or several.
    #[error("a key carries exactly one scope: choose one of {choices}")]
    OneScopePerKey {
        /// The catalog's scopes, comma-separated.
        choices: String,
    },
    /// The metadata is not a JSON object or is too large.
    #[error("{0}")]
    Metadata(MetadataError),
    /// The profile fixes a key's scopes at creation (MailChannels), so an
    /// update cannot change them; create a new key instead.
    #[error("this profile fixes a key's scopes at creation; create a new key instead")]
    ScopesFixed,
    /// A credit refill with a zero interval.
    #[error("a refill interval must be at least one millisecond")]
    RefillInterval,
    /// An update that changes nothing.
    #[error("the update names no field to change")]
    EmptyUpdate,
    /// An identity's external id is empty, longer than
    /// [`MAX_EXTERNAL_ID_LEN`](crate::MAX_EXTERNAL_ID_LEN) bytes or has
    /// control characters.
    #[error("external id must be 1 to 255 bytes without control characters")]
    ExternalId,
    /// A number over `i64::MAX`, the largest integer of the API (and of a
    /// database column).
    #[error("{field} must be at most {}", i64::MAX)]
    TooLarge {
        /// The field, e.g. `credits.remaining`.
        field: &'static str,
    },
    /// A create or update names an identity that is not one of the key's
    /// account (missing, or another tenant's: one answer for both).
    #[error("unknown identity '{0}' for this key's account")]
    UnknownIdentity(String),
    /// A grace period longer than the profile's
    /// [`max_grace`](crate::Profile::max_grace).
    #[error("grace period must be at most {} seconds", max.as_secs())]
    GraceTooLong {
        /// The profile's maximum.
        max: std::time::Duration,
    },
}

/// What a management request clashed with ([`Error::Conflict`], 409).
/// None of these names another tenant's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConflictKind {
    /// An imported key (or, for a key pair, its public key) is already in
    /// use, or was revoked: one answer for every case.
    #[error("the key cannot be stored: it is already in use")]
    KeyInUse,
    /// No unused lookup id was found for a new key (astronomically rare).
    #[error("could not find an unused lookup id")]
    NoFreeLookup,
    /// The parent already has a sub-account with this handle.
    #[error("a sub-account named '{0}' exists")]
    SubAccountExists(String),
    /// Some other record clashed (the store's words).
    #[error("{0}")]
    Other(String),
}

impl From<InvalidRequest> for Error {
    fn from(e: InvalidRequest) -> Self {
        Self::Invalid(e)
    }
}

impl From<MetadataError> for Error {
    fn from(e: MetadataError) -> Self {
        Self::Invalid(InvalidRequest::Metadata(e))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::LimitReached { limit } => Self::KeyLimitReached { limit },
            StoreError::Revoked => Self::Revoked,
            StoreError::Rotated => Self::AlreadyRotated,
            StoreError::Conflict(m) => Self::Conflict(ConflictKind::Other(m)),
            other => Self::Store(other),
        }
    }
}

/// A configuration that cannot work, reported when an [`ApiKeys`](crate::ApiKeys) is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key format is unsafe or malformed.
    #[error("invalid key format: {0}")]
    Format(#[from] FormatError),
    /// The default bundle is not in the catalog.
    #[error("invalid scope configuration: {0}")]
    Scope(#[from] ScopeError),
    /// A persistent store was given without a pepper; keys would not verify
    /// after a restart.
    #[error("a pepper is required with a persistent store")]
    MissingPepper,
    /// Some other field is invalid (the message says which).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}
