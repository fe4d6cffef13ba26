//! MailKite's dashboard sign-in: accounts with an email and a password
//! (Argon2id, PHC strings), session tokens from keygate's [`Sessions`], and
//! failed logins limited per email and per client address with keygate's
//! GCRA limiter.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /api/auth/signup` | `{email, password}` | 201 `{token, user: {id, email, isAdmin}, key}` |
//! | `POST /api/auth/login` | `{email, password}` | 200 `{token, user}` |
//! | `POST /api/auth/logout` | (session token) | 204; every session of the user ends at once |
//!
//! A wrong password and an unknown email get the same 401 body after the
//! same work (an unknown email is checked against a dummy hash).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keygate::layer::{error_response, ApiKeyLayer, JsonBody};
use keygate::session::Sessions;
use keygate::{
    AccountId, ApiKeys, CreateKey, CredentialKind, Error, LocalRateLimiter, Principal, Quota,
    RateLimiter,
};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

/// Password length bounds, in bytes.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=1024;

/// Failed logins allowed per email and per client address.
pub const FAILED_LOGINS_PER_MINUTE: u32 = 5;

/// One dashboard user.
struct User {
    id: String,
    email: String,
    account: AccountId,
    phc: String,
}

/// The sign-in state: users by email, the session service, the limiter.
#[derive(Clone)]
pub struct Auth {
    api: ApiKeys,
    sessions: Sessions,
    users: Arc<Mutex<HashMap<String, Arc<User>>>>,
    ids: Arc<AtomicU64>,
    limiter: LocalRateLimiter,
    quota: Quota,
    /// Until when (monotonic nanoseconds) an email or address is refused.
    blocked: Arc<Mutex<HashMap<String, u64>>>,
    /// A hash of a random password, verified for unknown emails so they
    /// cost what a wrong password costs.
    dummy: Arc<str>,
}

/// The sign-in routes, on `api` (which must have sessions configured).
pub fn routes<S: Clone + Send + Sync + 'static>(
    api: &ApiKeys,
    keys: &ApiKeyLayer,
) -> Option<Router<S>> {
    let sessions = api.sessions()?.clone();
    let quota = Quota::per_minute(FAILED_LOGINS_PER_MINUTE.try_into().ok()?);
    let dummy = hash_password("dummy password never used").ok()?;
    let auth = Auth {
        api: api.clone(),
        sessions,
        users: Arc::default(),
        ids: Arc::default(),
        limiter: LocalRateLimiter::new(Arc::clone(api.clock())),
        quota,
        blocked: Arc::default(),
        dummy: dummy.into(),
    };
    Some(
        Router::new()
            .route("/api/auth/signup", post(signup))
            .route("/api/auth/login", post(login))
            .route("/api/auth/logout", post(logout).route_layer(keys.clone()))
            .with_state(auth),
    )
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .and_then(|hash| Argon2::default().verify_password(password.as_bytes(), &hash))
        .is_ok()
}

/// The email as stored: trimmed and lower-cased; `None` if it is not one.
fn normal_email(email: &str) -> Option<String> {
    let email = email.trim().to_ascii_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(email)
}

fn invalid_credentials() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "invalid email or password",
    )
}

fn too_many(retry_after: Duration) -> Response {
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failed_logins",
        "too many failed logins; try again later",
    );
    let secs = retry_after.as_secs().max(1);
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn user_json(user: &User) -> Value {
    json!({ "id": user.id, "email": user.email, "isAdmin": false })
}

/// Runs Argon2 off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

async fn signup(State(auth): State<Auth>, JsonBody(body): JsonBody<Credentials>) -> Response {
    let Some(email) = normal_email(&body.email) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "email must be an email address",
        );
    };
    if !PASSWORD_LEN.contains(&body.password.len()) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "password must be 8 to 1024 bytes",
        );
    }
    let password = body.password;
    let Some(Ok(phc)) = blocking(move || hash_password(&password)).await else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not hash the password",
        );
    };
    let n = auth.ids.fetch_add(1, Ordering::Relaxed) + 1;
    let Ok(account) = AccountId::new(format!("acct_u{n}")) else {
        return Error::NotFound.into_response();
    };
    let user = Arc::new(User {
        id: format!("usr_{n}"),
        email: email.clone(),
        account,
        phc,
    });
    {
        let mut users = auth.users.lock();
        if users.contains_key(&email) {
            return error_response(StatusCode::CONFLICT, "conflict", "email already registered");
        }
        users.insert(email.clone(), Arc::clone(&user));
    }
    // The account's one full-scope live key, made by server code at sign-up.
    let key = match auth
        .api
        .operator()
        .create(&user.account, CreateKey::new("live"))
        .await
    {
        Ok(new) => new.key.to_presented().to_string(),
        Err(e) => {
            auth.users.lock().remove(&email);
            return e.into_response();
        }
    };
    match auth.sessions.issue(&user.id, &user.account).await {
        Ok(issued) => (
            StatusCode::CREATED,
            Json(json!({
                "token": issued.token.expose_secret(),
                "user": user_json(&user),
                "key": key,
            })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

impl Auth {
    /// How long `who` is still refused, if it is.
    fn blocked_for(&self, who: &[String]) -> Option<Duration> {
        let now = self.api.clock().monotonic_nanos();
        let blocked = self.blocked.lock();
        who.iter()
            .filter_map(|w| blocked.get(w))
            .filter(|&&until| until > now)
            .max()
            .map(|until| Duration::from_nanos(until - now))
    }

    /// Counts a failed login against each of `who` with keygate's GCRA;
    /// one whose allowance is spent is refused until a failure fits again.
    async fn record_failure(&self, who: &[String]) {
        for w in who {
            let Ok(decision) = self.limiter.check(w, "failed_login", &self.quota).await else {
                continue;
            };
            if !decision.allowed || decision.remaining == 0 {
                let wait = decision
                    .retry_after
                    .unwrap_or_else(|| self.quota.emission_interval());
                let until = self.api.clock().monotonic_nanos()
                    + u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
                self.blocked.lock().insert(w.clone(), until);
            }
        }
    }
}

async fn login(
    State(auth): State<Auth>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<Credentials>,
) -> Response {
    let email = normal_email(&body.email).unwrap_or_default();
    let who = [format!("email:{email}"), format!("addr:{}", peer.ip())];
    if let Some(wait) = auth.blocked_for(&who) {
        return too_many(wait);
    }
    if body.password.len() > *PASSWORD_LEN.end() {
        auth.record_failure(&who).await;
        return invalid_credentials();
    }
    let user = auth.users.lock().get(&email).cloned();
    // Unknown emails are checked against the dummy hash: the same work.
    let phc = user
        .as_ref()
        .map_or_else(|| auth.dummy.to_string(), |u| u.phc.clone());
    let password = body.password;
    let matches = blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| matches) else {
        auth.record_failure(&who).await;
        return invalid_credentials();
    };
    match auth.sessions.issue(&user.id, &user.account).await {
        Ok(issued) => Json(json!({
            "token": issued.token.expose_secret(),
            "user": user_json(&user),
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn logout(State(auth): State<Auth>, principal: Principal) -> Response {
    let (CredentialKind::Session, Some(user)) = (principal.credential(), principal.subject())
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "logout takes a session token, not an api key",
        );
    };
    match auth.sessions.end_all(user).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
