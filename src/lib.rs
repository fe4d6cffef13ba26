//! # keygate
//!
//! API keys for Rust services: generate keys in your product's own format
//! (`mj_…`, `mk_live_…`, key + secret pairs), show them once, store only a
//! hash, verify them in well under a microsecond, enforce scopes and bundles,
//! and list, revoke, rotate, reset and expire them, for accounts and their
//! sub-accounts.
//!
//! ```
//! use keygate::{profiles, AccountId, ApiKeys, AuthError, CreateKey, ListOptions};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // One service per process; the in-memory store is the default.
//! let api = ApiKeys::in_memory(profiles::mailjawn())?;
//! let org = AccountId::new("org_42")?;
//!
//! // Manage keys as the account (e.g. a signed-in dashboard user); a request
//! // authenticated by a key would use `api.as_key(&principal)` instead.
//! let keys = api.as_account(&org);
//!
//! // Create: the plaintext is returned exactly once; only its hash is stored.
//! let new = keys.create(&org, CreateKey::new("Production SDK").bundle("sdk")).await?;
//! let presented = new.key.expose_secret().to_owned();
//! assert!(presented.starts_with("mj_"));
//!
//! // Verify: a Principal says which key, which account, which scopes.
//! let principal = api.verify(&presented).await?;
//! assert_eq!(principal.account(), &org);
//! assert!(api.check_scope(&principal, "events:write").is_ok());
//! assert_eq!(api.check_scope(&principal, "emails:send").unwrap_err().status(), 403);
//!
//! // List: names, bundles and redacted ids, never the secret.
//! let page = keys.list(&org, ListOptions::default()).await?;
//! assert_eq!(page.data[0].redacted, format!("{}…", &presented[..8]));
//!
//! // Revoke: the very next verify fails with 401.
//! keys.revoke(&new.info.id).await?;
//! let err = api.verify(&presented).await.unwrap_err();
//! assert_eq!(err, AuthError::Revoked);
//! assert_eq!(err.status(), 401);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Modules
//!
//! | module | job |
//! |---|---|
//! | [`key`] | key formats: generate, parse (with checksum), redact |
//! | [`hash`] | HMAC-SHA256 with a versioned pepper; why not a password hash |
//! | [`scope`] | scope catalogs, bundles, compiled bitsets |
//! | [`ratelimit`] | per-key, per-operation-class token buckets |
//! | [`store`] | the [`KeyStore`] trait and its backends |
//! | [`profiles`] | MailJawn, Mailjet, MailChannels, MailKite and a default |
//! | [`audit`] | audit events for management actions |
//! | `layer` | the tower layer that authenticates requests, HTTPS-only guard, error responses (feature `tower`); axum extractors (feature `axum`) |
//! | `routes` | ready-to-mount key-management routes: create, list, get, revoke, rotate, reset, sub-accounts (feature `axum`) |
//! | `smtp` | SMTP AUTH PLAIN/LOGIN for key pairs and a small submission listener (feature `smtp`) |
//! | `session` | short-lived JWT session tokens, a second credential kind (feature `sessions`) |
//! | [`telemetry`] | metric names and labels (feature `metrics`) and spans (feature `spans`) |
//! | `cli` | the `keygate` operator CLI (feature `cli`) |
//!
//! ## Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `memory` | yes | [`MemoryStore`] |
//! | `sqlite` | no | `SqliteStore` (sqlx, embedded migrations) |
//! | `postgres` | no | `PostgresStore` (sqlx, embedded migrations), and change notifications that [`CachedStore`] follows across instances |
//! | `redis` | no | `RedisRateLimiter`: one quota per key shared by every instance, through Redis or a Redis Cluster; `LeasedRateLimiter`: the same quota spent in leases of several tokens, at in-process speed |
//! | `tower` | no | `layer`: `ApiKeyLayer` for any tower service and body type, JSON error responses, an HTTPS-only guard |
//! | `axum` | no | `tower`, plus axum extractors (`Principal`, `Require`, `JsonBody`), `IntoResponse` for `AuthError` and `Error`, and `routes`: the key-management routes |
//! | `smtp` | no | `smtp`: Mailjet-style key pairs as SMTP AUTH PLAIN/LOGIN credentials, an SMTP submission state machine and listener |
//! | `sessions` | no | `session`: issue and verify JWT session tokens (EdDSA or HS256, `kid` rotation), end a user's sessions at once on every instance; the HTTP layer takes them beside keys |
//! | `metrics` | no | counters and histograms through the `metrics` facade: verifications, denials, store latency, cache lookups, flushes ([`telemetry`]) |
//! | `spans` | no | `tracing` spans on verify (`keygate.verify`) and on every management call (`keygate.manage`), never carrying a secret |
//! | `cli` | no | `sqlite` and `postgres`, plus the `keygate` binary: migrations and key management from the command line |
//!
//! ## Security
//!
//! Secrets never appear in `Debug` output, errors or serialized values; hashes
//! are compared in constant time; randomness comes from a CSPRNG seeded by
//! the OS (rand's `ThreadRng`); the crate forbids `unsafe`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
mod credits;
mod error;
#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "redis",
    feature = "tower"
))]
mod flusher;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
mod identity;
pub mod key;
#[cfg(feature = "tower")]
pub mod layer;
mod metadata;
pub mod profiles;
pub mod ratelimit;
#[cfg(feature = "axum")]
pub mod routes;
pub mod scope;
mod service;
#[cfg(feature = "sessions")]
pub mod session;
#[cfg(feature = "smtp")]
pub mod smtp;
pub mod store;
pub mod telemetry;

pub use audit::{AuditEvent, AuditKind, AuditSink, MemoryAudit, TracingAudit};
pub use clock::{Clock, ManualClock, SystemClock};
pub use credits::{Credits, Refill};
pub use error::{AuthError, ConfigError, ConflictKind, Error, InvalidRequest, SessionReason};
#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "redis",
    feature = "tower"
))]
pub use flusher::LastUsedFlusher;
pub use hash::{Hasher, Pepper};
pub use identity::{Identity, IdentityChange, IdentityId, MAX_EXTERNAL_ID_LEN};
pub use key::{IssuedKey, KeyFormat, MalformedReason, PairFormat, ParsedKey, TokenFormat};
pub use metadata::{Metadata, MetadataError, MAX_METADATA_BYTES};
pub use profiles::{KeyLocation, Profile};
pub use ratelimit::{
    Decision, LimiterUnavailable, LocalRateLimiter, Quota, QuotaError, RateLimiter, RatePolicy,
};
#[cfg(feature = "redis")]
pub use ratelimit::{LeasedRateLimiter, LeasedRateLimiterBuilder};
#[cfg(feature = "redis")]
pub use ratelimit::{RedisConnectError, RedisFailure, RedisRateLimiter, RedisRateLimiterBuilder};
/// The `redis` crate keygate is built against, to make the
/// [`ConnectionManager`](redis::aio::ConnectionManager) that
/// [`RedisRateLimiter::new`] takes (or the cluster connection that
/// [`RedisRateLimiterBuilder::build_cluster`] takes) without a version
/// mismatch.
#[cfg(feature = "redis")]
pub use redis;
pub use scope::{Requirement, ScopeCatalog, ScopeSet};
pub use service::{
    Actor, ApiKeys, ApiKeysBuilder, BootstrapKey, CreateIdentity, CreateKey, CredentialKind,
    IdentityUpdate, KeyInfo, KeyUpdate, ListOptions, Manager, NewKey, NewKeyResponse, Operation,
    Page, Principal, Rotation, MAX_NAME_LEN, MAX_PAGE_SIZE, MAX_REQUEST_LIMITS, MAX_REQUEST_SCOPES,
};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{AccountId, CacheConfig, CachedStore, KeyId, KeyStore, MemoryStore, StoreError};
/// The `time` crate keygate's timestamps come from (`OffsetDateTime` in
/// [`KeyInfo`], [`CreateKey::expires_at`]), re-exported so callers need no
/// version of their own.
pub use time;

/// The README's examples, compiled and run as doc tests (they use every feature).
#[cfg(all(
    doctest,
    feature = "sqlite",
    feature = "postgres",
    feature = "axum",
    feature = "redis",
    feature = "smtp",
    feature = "sessions"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
