//! Session tokens: a second credential kind beside API keys (feature
//! `sessions`).
//!
//! A dashboard signs a user in with a password (your code checks it) and
//! gets a short-lived JWT from [`Sessions::issue`]; requests then carry it as
//! `Authorization: Bearer eyJ…`. [`Sessions::verify`] checks it:
//!
//! - the header's `alg` must be the algorithm of the key its `kid` names
//!   (`none` and algorithm confusion are refused), and the signature must
//!   match ([`SessionKey`]: Ed25519 by default, HS256 as an option);
//! - `iss` and `aud` must be this service's, `exp` in the future, `nbf` and
//!   `iat` not in the future (by the injected [`Clock`]);
//! - the token's session epoch must be its user's current one
//!   ([`SessionStore`]): [`Sessions::end_all`] (logout, password change)
//!   raises it, so every older token of that user is refused on every
//!   instance sharing the store, at once.
//!
//! Tokens are signed with `jsonwebtoken`. Verification checks the signature
//! against state prepared once per key (the HMAC key block, the decoded
//! Ed25519 point) rather than rebuilding it per token, which keeps an HS256
//! check to a few SHA-256 compressions and one JSON parse.
//!
//! Every refusal is [`AuthError::Session`] (401) with a [`SessionReason`];
//! no input makes it panic. Signing keys rotate without ending live sessions:
//! [`Sessions::rotate`] signs with a new `kid` and keeps accepting the old
//! one until [`Sessions::retire`].
//!
//! ```
//! use keygate::session::{SessionKey, Sessions};
//! use keygate::{AccountId, AuthError, SessionReason};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let sessions = Sessions::builder("https://api.example.com", "dashboard")
//!     .signing_key(SessionKey::generate_ed25519("k1")?)
//!     .build()?;
//! let account = AccountId::new("acct_1")?;
//! let issued = sessions.issue("usr_1", &account).await?;
//! assert!(issued.token.expose_secret().starts_with("eyJ"));
//!
//! let claims = sessions.verify(issued.token.expose_secret()).await?;
//! assert_eq!(claims.subject(), "usr_1");
//! assert_eq!(claims.account(), &account);
//!
//! // Logout: the same token is refused at once.
//! sessions.end_all("usr_1").await?;
//! let err = sessions.verify(issued.token.expose_secret()).await.unwrap_err();
//! assert_eq!(err, AuthError::Session { reason: SessionReason::Ended });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod keys;
mod store;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, ConfigError, Error, InvalidRequest, SessionReason};
use crate::store::AccountId;

pub use keys::{SessionAlgorithm, SessionKey, MAX_KID_LEN, MIN_HMAC_SECRET_LEN};
pub use store::{MemorySessionStore, SessionStore, MAX_SUBJECT_LEN};

/// The longest token accepted, in bytes (8 KiB); longer ones are refused
/// before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The default session lifetime: 15 minutes.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// True when `presented` has a JWT's shape: three base64url segments, the
/// first starting `eyJ` (a JSON object). No API key format keygate
/// generates has this shape, so a request's credential can be routed to the
/// right verifier before any work.
///
/// ```
/// use keygate::session::looks_like_jwt;
/// assert!(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"));
/// assert!(!looks_like_jwt("mk_live_AbC123"));
/// assert!(!looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0"));
/// ```
pub fn looks_like_jwt(presented: &str) -> bool {
    presented.starts_with("eyJ")
        && presented.bytes().filter(|&b| b == b'.').count() == 2
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A session token as issued: the compact JWT, wiped from memory on drop and
/// redacted in `Debug`.
#[derive(Clone)]
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// The token text, to send to the client once. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken([redacted])")
    }
}

/// What [`Sessions::issue`] returns: the token and its claims.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IssuedSession {
    /// The token to hand to the client.
    pub token: SessionToken,
    /// What it says.
    pub claims: SessionClaims,
}

/// The verified contents of a session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    subject: String,
    account: AccountId,
    id: String,
    kid: String,
    epoch: u64,
    issued_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

impl SessionClaims {
    /// The user the session belongs to (`sub`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The account the user acts for (`acct`).
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The token's unique id (`jti`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `kid` of the key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The user's session epoch when the token was issued.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When it was issued (`iat`).
    pub fn issued_at(&self) -> OffsetDateTime {
        self.issued_at
    }

    /// When it expires (`exp`).
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }
}

/// The claims on the wire.
#[derive(Serialize, Deserialize)]
struct Wire {
    iss: String,
    aud: Audience,
    sub: String,
    acct: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    /// The user's session epoch at issue.
    sep: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(a) => a == aud,
            Self::Many(all) => all.iter().any(|a| a == aud),
        }
    }
}

/// The header as written.
#[derive(Serialize)]
struct WireHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Only the two header fields the key is chosen by.
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
}

/// Issues, verifies and ends session tokens. Cheap to clone (one `Arc`);
/// share one per process, and give every instance the same keys, issuer,
/// audience and [`SessionStore`].
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: String,
    lifetime: Duration,
    leeway: Duration,
    keys: RwLock<keys::KeyRing>,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.inner.keys.read();
        f.debug_struct("Sessions")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("lifetime", &self.inner.lifetime)
            .field("signing_kid", &keys.signing.kid())
            .field("verifying_kids", &keys.verifying.len())
            .field("store", &self.inner.store)
            .finish()
    }
}

/// Configures [`Sessions`]; start with [`Sessions::builder`].
#[derive(Debug)]
pub struct SessionsBuilder {
    issuer: String,
    audience: String,
    lifetime: Duration,
    leeway: Duration,
    signing: Option<SessionKey>,
    accepted: Vec<SessionKey>,
    store: Option<Arc<dyn SessionStore>>,
    clock: Arc<dyn Clock>,
}

impl SessionsBuilder {
    /// The key new tokens are signed with (default: a fresh Ed25519 key with
    /// `kid` `default`, fine for a single instance; give every instance the
    /// same key otherwise).
    pub fn signing_key(mut self, key: SessionKey) -> Self {
        self.signing = Some(key);
        self
    }

    /// A further key tokens may be signed with: a previous signing key, or
    /// another instance's Ed25519 public key.
    pub fn accept_key(mut self, key: SessionKey) -> Self {
        self.accepted.push(key);
        self
    }

    /// How long a token lives (default [`DEFAULT_LIFETIME`], 15 minutes).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Clock skew tolerated on `nbf` and `iat` between instances (default
    /// 5 seconds). Expiry is exact.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Where session epochs are kept (default: a fresh
    /// [`MemorySessionStore`], for one instance). Instances that must see
    /// each other's logouts share a SQL store.
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock tokens are issued and checked by (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the service. Fails on an empty issuer or audience, a lifetime
    /// of zero or over a day, a signing key that cannot sign, or two keys
    /// with the same `kid`.
    pub fn build(self) -> Result<Sessions, ConfigError> {
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(ConfigError::Invalid(
                "session issuer and audience must not be empty".into(),
            ));
        }
        if self.lifetime.is_zero() || self.lifetime > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Invalid(
                "session lifetime must be more than zero and at most a day".into(),
            ));
        }
        let signing = match self.signing {
            Some(key) => key,
            None => SessionKey::generate_ed25519("default")?,
        };
        let mut ring = keys::KeyRing::new(signing)?;
        for key in self.accepted {
            ring.accept(key)?;
        }
        Ok(Sessions {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                audience: self.audience,
                lifetime: self.lifetime,
                leeway: self.leeway,
                keys: RwLock::new(ring),
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(MemorySessionStore::new())),
                clock: self.clock,
            }),
        })
    }
}

fn refused(reason: SessionReason) -> AuthError {
    AuthError::Session { reason }
}

impl Sessions {
    /// Starts configuring sessions whose tokens name `issuer` (`iss`) and
    /// `audience` (`aud`).
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> SessionsBuilder {
        SessionsBuilder {
            issuer: issuer.into(),
            audience: audience.into(),
            lifetime: DEFAULT_LIFETIME,
            leeway: Duration::from_secs(5),
            signing: None,
            accepted: Vec::new(),
            store: None,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// The lifetime of new tokens.
    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }

    /// The store session epochs are kept in.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    /// The `kid` new tokens are signed with.
    pub fn signing_kid(&self) -> String {
        self.inner.keys.read().signing.kid().to_owned()
    }

    /// Issues a token for `subject` (the user) acting for `account`, signed
    /// with the current key, valid from now for the configured lifetime.
    /// Reads the user's epoch from the store (503 when unreachable).
    pub async fn issue(&self, subject: &str, account: &AccountId) -> Result<IssuedSession, Error> {
        check_subject(subject)?;
        let epoch = self.inner.store.session_epoch(subject).await?;
        let now = self.inner.clock.now();
        let lifetime = i64::try_from(self.inner.lifetime.as_secs()).unwrap_or(i64::MAX);
        let iat = now.unix_timestamp();
        let exp = iat.saturating_add(lifetime);
        let mut jti = String::with_capacity(22);
        crate::key::push_random_base62(&mut jti, 22);
        let wire = Wire {
            iss: self.inner.issuer.clone(),
            aud: Audience::One(self.inner.audience.clone()),
            sub: subject.to_owned(),
            acct: account.as_str().to_owned(),
            exp,
            iat,
            nbf: iat,
            jti,
            sep: epoch,
        };
        let key = self.inner.keys.read().signing.clone();
        let encoding = key.encoding().ok_or_else(signing_failed)?;
        // `alg` first, so every token starts `eyJhbGci`, as MailKite's do.
        let header = WireHeader {
            alg: key.algorithm().name(),
            typ: "JWT",
            kid: key.kid(),
        };
        let mut token = String::with_capacity(512);
        for part in [serde_json::to_vec(&header), serde_json::to_vec(&wire)] {
            let part = part.map_err(|_| signing_failed())?;
            if !token.is_empty() {
                token.push('.');
            }
            URL_SAFE_NO_PAD.encode_string(part, &mut token);
        }
        let signature =
            jsonwebtoken::crypto::sign(token.as_bytes(), encoding, key.algorithm().jwt()).map_err(
                |e| {
                    tracing::error!(target: "keygate", error = %e, "session token signing failed");
                    signing_failed()
                },
            )?;
        token.push('.');
        token.push_str(&signature);
        let claims = SessionClaims {
            subject: wire.sub,
            account: account.clone(),
            id: wire.jti,
            kid: key.kid().to_owned(),
            epoch,
            issued_at: from_unix(iat),
            expires_at: from_unix(exp),
        };
        Ok(IssuedSession {
            token: SessionToken(Zeroizing::new(token)),
            claims,
        })
    }

    /// Checks a token's signature and claims against the keys and the clock,
    /// without asking the store whether the user's sessions were ended (use
    /// [`verify`](Self::verify) for requests). No I/O.
    pub fn decode(&self, token: &str) -> Result<SessionClaims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(refused(SessionReason::TooLong));
        }
        let malformed = || refused(SessionReason::Malformed);
        let (signed, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (head, payload) = signed.split_once('.').ok_or_else(malformed)?;
        if payload.contains('.') {
            return Err(malformed());
        }
        let head = URL_SAFE_NO_PAD.decode(head).map_err(|_| malformed())?;
        let head: RawHeader = serde_json::from_slice(&head).map_err(|_| malformed())?;
        let algorithm = match &*head.alg {
            "EdDSA" => SessionAlgorithm::EdDsa,
            "HS256" => SessionAlgorithm::Hs256,
            _ => return Err(refused(SessionReason::Algorithm)),
        };
        let kid = head.kid.ok_or(refused(SessionReason::UnknownKey))?;
        // Both signatures fit in 64 bytes; anything longer is not one.
        let mut sig = [0u8; 64];
        let sig_len = URL_SAFE_NO_PAD
            .decode_slice(signature, &mut sig)
            .map_err(|_| refused(SessionReason::Signature))?;
        {
            let keys = self.inner.keys.read();
            let key = keys
                .verifying
                .get(&*kid)
                .ok_or(refused(SessionReason::UnknownKey))?;
            if key.algorithm() != algorithm {
                return Err(refused(SessionReason::Algorithm));
            }
            if !key.verifies(signed.as_bytes(), &sig[..sig_len]) {
                return Err(refused(SessionReason::Signature));
            }
        }
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
        let wire: Wire = serde_json::from_slice(&payload).map_err(|_| malformed())?;
        self.check(wire, kid.into_owned())
    }

    fn check(&self, wire: Wire, kid: String) -> Result<SessionClaims, AuthError> {
        let inner = &*self.inner;
        let now = inner.clock.now().unix_timestamp();
        let leeway = i64::try_from(inner.leeway.as_secs()).unwrap_or(i64::MAX);
        if wire.iss != inner.issuer {
            return Err(refused(SessionReason::Issuer));
        }
        if !wire.aud.contains(&inner.audience) {
            return Err(refused(SessionReason::Audience));
        }
        if now >= wire.exp {
            return Err(refused(SessionReason::Expired));
        }
        if wire.nbf > now.saturating_add(leeway) || wire.iat > now.saturating_add(leeway) {
            return Err(refused(SessionReason::NotYetValid));
        }
        if check_subject(&wire.sub).is_err() {
            return Err(refused(SessionReason::Malformed));
        }
        let account = AccountId::new(wire.acct).map_err(|_| refused(SessionReason::Malformed))?;
        Ok(SessionClaims {
            subject: wire.sub,
            account,
            id: wire.jti,
            kid,
            epoch: wire.sep,
            issued_at: from_unix(wire.iat),
            expires_at: from_unix(wire.exp),
        })
    }

    /// Verifies a token for a request: [`decode`](Self::decode), then checks
    /// that its user's sessions were not ended since it was issued (one
    /// store read; [`AuthError::Unavailable`] when the store cannot answer).
    pub async fn verify(&self, token: &str) -> Result<SessionClaims, AuthError> {
        let claims = self.decode(token)?;
        let current = self
            .inner
            .store
            .session_epoch(&claims.subject)
            .await
            .map_err(|e| {
                tracing::warn!(target: "keygate", error = %e, "session store failed during verify");
                AuthError::Unavailable
            })?;
        if claims.epoch != current {
            return Err(refused(SessionReason::Ended));
        }
        Ok(claims)
    }

    /// Ends every session of `subject` at once, on every instance sharing
    /// the store: call it on logout and on a password change. Tokens issued
    /// afterwards are valid.
    pub async fn end_all(&self, subject: &str) -> Result<(), Error> {
        check_subject(subject)?;
        self.inner.store.end_sessions(subject).await?;
        Ok(())
    }

    /// Signs new tokens with `key` from now on; tokens signed with the
    /// previous key stay valid until they expire or that key is
    /// [`retire`](Self::retire)d.
    pub fn rotate(&self, key: SessionKey) -> Result<(), ConfigError> {
        self.inner.keys.write().rotate(key)
    }

    /// Accepts tokens signed with `key` (e.g. another instance's new key).
    pub fn accept(&self, key: SessionKey) -> Result<(), ConfigError> {
        self.inner.keys.write().accept(key)
    }

    /// Stops accepting tokens signed with `kid` (wait one lifetime after a
    /// rotation). The current signing key cannot be retired; returns whether
    /// a key was removed.
    pub fn retire(&self, kid: &str) -> bool {
        self.inner.keys.write().retire(kid)
    }
}

fn signing_failed() -> Error {
    Error::Store(crate::store::StoreError::Misconfigured(
        crate::store::Cause::new("the session signing key cannot sign"),
    ))
}

fn check_subject(subject: &str) -> Result<(), Error> {
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT_LEN
        || subject.chars().any(char::is_control)
    {
        return Err(InvalidRequest::SessionSubject.into());
    }
    Ok(())
}

fn from_unix(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn sessions(key: SessionKey, clock: &ManualClock) -> Sessions {
        Sessions::builder("iss", "aud")
            .signing_key(key)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    }

    #[test]
    fn shape_check_tells_tokens_from_keys() {
        assert!(looks_like_jwt("eyJa.eyJb.c"));
        assert!(!looks_like_jwt("eyJa.eyJb.c.d"));
        assert!(!looks_like_jwt("eyJa.eyJb.c=="));
        assert!(!looks_like_jwt("mj_eyJ.a.b"));
    }

    #[tokio::test]
    async fn tokens_carry_every_registered_claim() {
        let clock = ManualClock::new();
        let s = sessions(SessionKey::generate_hs256("h1").unwrap(), &clock);
        let issued = s
            .issue("usr_1", &AccountId::new("acct_1").unwrap())
            .await
            .unwrap();
        let payload = issued.token.expose_secret().split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        for claim in ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"] {
            assert!(json.get(claim).is_some(), "missing {claim}");
        }
        assert_eq!(
            json["exp"].as_i64().unwrap() - json["iat"].as_i64().unwrap(),
            900
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let secret = [7u8; 32];
        let key = SessionKey::hs256("k", &secret).unwrap();
        let clock = ManualClock::new();
        let s = sessions(key.clone(), &clock);
        for text in [format!("{key:?}"), format!("{s:?}")] {
            assert!(!text.contains("7, 7"), "{text}");
        }
    }
}
