//! Session tokens, the MailKite dashboard's second credential kind
//! (`shared/seeds/003_ce8d37cf50e3a0d1.txt`: "a short-lived JWT session
//! token"): issue and verify, expiry by the injected clock, `kid` rotation,
//! every refusal typed, logout followed across instances on the memory,
//! SQLite and PostgreSQL session stores.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keygate::session::{
    MemorySessionStore, SessionAlgorithm, SessionKey, SessionStore, Sessions, MAX_TOKEN_LEN,
};
use keygate::{
    profiles, AccountId, Actor, ApiKeys, AuthError, CredentialKind, ManualClock, SessionReason,
};
use proptest::prelude::*;
use serde_json::json;

const ISS: &str = "https://api.mailkite.test";
const AUD: &str = "dashboard";

fn acct() -> AccountId {
    AccountId::new("acct_1").unwrap()
}

fn sessions_with(key: SessionKey, store: Arc<dyn SessionStore>, clock: &ManualClock) -> Sessions {
    Sessions::builder(ISS, AUD)
        .signing_key(key)
        .store(store)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn sessions(key: SessionKey, clock: &ManualClock) -> Sessions {
    sessions_with(key, Arc::new(MemorySessionStore::new()), clock)
}

fn refused(reason: SessionReason) -> AuthError {
    AuthError::Session { reason }
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Claims as `Sessions::issue` writes them, at `now` seconds.
fn claims(now: i64) -> serde_json::Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "usr_1", "acct": "acct_1",
        "iat": now, "nbf": now, "exp": now + 900, "jti": "j1", "sep": 0
    })
}

/// A token signed by hand with HS256 and `secret`, with header `kid`.
fn hs256(kid: &str, secret: &[u8], claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn now(clock: &ManualClock) -> i64 {
    use keygate::Clock as _;
    clock.now().unix_timestamp()
}

/// 003_ce8d37cf50e3a0d1.txt: "a short-lived JWT session token" — 15 minutes
/// by default, refused from the second it expires (by a manual clock).
pub(crate) async fn session_expires_after_fifteen_minutes_by_the_clock() {
    let clock = ManualClock::new();
    let s = sessions(SessionKey::generate_ed25519("k1").unwrap(), &clock);
    let issued = s.issue("usr_1", &acct()).await.unwrap();
    let token = issued.token.expose_secret();
    assert_eq!(
        issued.claims.expires_at() - issued.claims.issued_at(),
        time::Duration::minutes(15)
    );
    clock.advance(Duration::from_secs(15 * 60 - 1));
    assert_eq!(s.verify(token).await.unwrap().subject(), "usr_1");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        s.verify(token).await.unwrap_err(),
        refused(SessionReason::Expired)
    );
}

/// Signing keys rotate without ending live sessions: a token signed with the
/// old `kid` verifies until that key is retired.
pub(crate) async fn kid_rotation_keeps_live_sessions_until_the_old_key_is_retired() {
    let clock = ManualClock::new();
    let s = sessions(SessionKey::generate_ed25519("k1").unwrap(), &clock);
    let old = s.issue("usr_1", &acct()).await.unwrap();
    assert_eq!(old.claims.kid(), "k1");

    s.rotate(SessionKey::generate_ed25519("k2").unwrap())
        .unwrap();
    assert_eq!(s.signing_kid(), "k2");
    let new = s.issue("usr_1", &acct()).await.unwrap();
    assert_eq!(new.claims.kid(), "k2");
    assert_eq!(
        s.verify(old.token.expose_secret()).await.unwrap().kid(),
        "k1"
    );
    assert_eq!(
        s.verify(new.token.expose_secret()).await.unwrap().kid(),
        "k2"
    );

    assert!(!s.retire("k2"), "the signing key cannot be retired");
    assert!(s.retire("k1"));
    assert_eq!(
        s.verify(old.token.expose_secret()).await.unwrap_err(),
        refused(SessionReason::UnknownKey)
    );
    assert!(s.verify(new.token.expose_secret()).await.is_ok());
}

/// Another instance verifies with the Ed25519 public key only.
pub(crate) async fn a_public_key_verifies_what_the_private_key_signed() {
    let clock = ManualClock::new();
    let key = SessionKey::generate_ed25519("k1").unwrap();
    let public = SessionKey::ed25519_public("k1", key.public_key().unwrap()).unwrap();
    assert!(!public.can_sign());
    let signer = sessions(key, &clock);
    let verifier = Sessions::builder(ISS, AUD)
        .signing_key(SessionKey::generate_ed25519("other").unwrap())
        .accept_key(public)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let issued = signer.issue("usr_1", &acct()).await.unwrap();
    let claims = verifier.decode(issued.token.expose_secret()).unwrap();
    assert_eq!(claims.account(), &acct());
}

pub(crate) async fn hs256_is_an_option() {
    let clock = ManualClock::new();
    let key = SessionKey::hs256("h1", &[42; 32]).unwrap();
    assert_eq!(key.algorithm(), SessionAlgorithm::Hs256);
    assert!(SessionKey::hs256("h1", &[42; 31]).is_err());
    let s = sessions(key, &clock);
    let issued = s.issue("usr_1", &acct()).await.unwrap();
    let header = issued.token.expose_secret().split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], "h1");
    assert!(s.verify(issued.token.expose_secret()).await.is_ok());
}

/// Each attack gets its own typed 401, never a panic.
pub(crate) async fn forged_and_misconfigured_tokens_get_typed_refusals() {
    let clock = ManualClock::new();
    let ed = SessionKey::generate_ed25519("ed").unwrap();
    let public = ed.public_key().unwrap();
    let secret = [9u8; 32];
    let s = Sessions::builder(ISS, AUD)
        .signing_key(ed)
        .accept_key(SessionKey::hs256("hs", &secret).unwrap())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let t = now(&clock);
    let good = claims(t);
    assert!(s.decode(&hs256("hs", &secret, &good)).is_ok());

    // alg: none, with a known kid and no signature.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "hs"})),
        b64(&good)
    );
    assert_eq!(
        s.decode(&none).unwrap_err(),
        refused(SessionReason::Algorithm)
    );
    // Algorithm confusion: HS256 keyed with the Ed25519 public key, sent to
    // the Ed25519 kid; and an EdDSA header sent to the HMAC kid.
    let confused = hs256("ed", &public, &good);
    assert_eq!(
        s.decode(&confused).unwrap_err(),
        refused(SessionReason::Algorithm)
    );
    let parts: Vec<&str> = confused.split('.').collect();
    let reverse = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "EdDSA", "kid": "hs"})),
        parts[1],
        parts[2]
    );
    assert_eq!(
        s.decode(&reverse).unwrap_err(),
        refused(SessionReason::Algorithm)
    );
    // Unknown or missing kid.
    assert_eq!(
        s.decode(&hs256("nope", &secret, &good)).unwrap_err(),
        refused(SessionReason::UnknownKey)
    );
    let no_kid = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert_eq!(
        s.decode(&no_kid).unwrap_err(),
        refused(SessionReason::UnknownKey)
    );
    // Bad signature: another secret, or a payload changed after signing.
    assert_eq!(
        s.decode(&hs256("hs", &[8u8; 32], &good)).unwrap_err(),
        refused(SessionReason::Signature)
    );
    let signed = hs256("hs", &secret, &good);
    let parts: Vec<&str> = signed.split('.').collect();
    let mut admin = good.clone();
    admin["acct"] = json!("acct_admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(&admin), parts[2]);
    assert_eq!(
        s.decode(&tampered).unwrap_err(),
        refused(SessionReason::Signature)
    );
    // Claims.
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[field] = value;
        s.decode(&hs256("hs", &secret, &c)).unwrap_err()
    };
    assert_eq!(
        with("iss", json!("https://evil")),
        refused(SessionReason::Issuer)
    );
    assert_eq!(
        with("aud", json!("mobile")),
        refused(SessionReason::Audience)
    );
    assert_eq!(with("exp", json!(t)), refused(SessionReason::Expired));
    assert_eq!(
        with("nbf", json!(t + 60)),
        refused(SessionReason::NotYetValid)
    );
    assert_eq!(
        with("iat", json!(t + 60)),
        refused(SessionReason::NotYetValid)
    );
    assert_eq!(
        with("exp", json!("soon")),
        refused(SessionReason::Malformed)
    );
    assert_eq!(with("acct", json!("")), refused(SessionReason::Malformed));
    // Over 8 KiB: refused before decoding.
    let long = format!("eyJ{}.a.b", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(
        s.decode(&long).unwrap_err(),
        refused(SessionReason::TooLong)
    );
    for e in [
        refused(SessionReason::TooLong),
        refused(SessionReason::Ended),
    ] {
        assert_eq!(e.status(), 401);
        assert_eq!(e.code(), "invalid_session");
    }
}

proptest! {
    /// Malformed input of any shape is a typed refusal, never a panic.
    fn arbitrary_input_never_panics(
        input in prop_oneof![
            ".{0,300}",
            "eyJ[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,90}",
            "[A-Za-z0-9_.-]{0,200}",
        ]
    ) {
        let clock = ManualClock::new();
        let s = sessions(SessionKey::hs256("hs", &[1; 32]).unwrap(), &clock);
        match s.decode(&input) {
            Err(AuthError::Session { .. }) => {}
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// Any header or payload JSON (valid base64url) is refused cleanly.
    fn arbitrary_json_segments_never_panic(
        alg in prop_oneof![Just("HS256".to_owned()), Just("EdDSA".to_owned()), ".{0,10}"],
        kid in prop::option::of(".{0,10}"),
        payload in ".{0,60}",
        sig in "[A-Za-z0-9_-]{0,90}",
    ) {
        let clock = ManualClock::new();
        let s = sessions(SessionKey::hs256("hs", &[1; 32]).unwrap(), &clock);
        let token = format!(
            "{}.{}.{}",
            b64(&json!({"alg": alg, "kid": kid})),
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            sig
        );
        let refused_cleanly = matches!(s.decode(&token), Err(AuthError::Session { .. }));
        prop_assert!(refused_cleanly);
    }
}

/// Two instances on one session store: logout on A is refused on B at once;
/// a token issued after the logout works on both.
async fn logout_on_one_instance_ends_the_session_on_the_other(
    a: Arc<dyn SessionStore>,
    b: Arc<dyn SessionStore>,
) {
    let clock = ManualClock::new();
    let key = SessionKey::generate_ed25519("shared").unwrap();
    let on_a = sessions_with(key.clone(), a, &clock);
    let on_b = sessions_with(key, b, &clock);
    let first = on_a.issue("usr_1", &acct()).await.unwrap();
    let other_user = on_a.issue("usr_2", &acct()).await.unwrap();
    assert!(on_b.verify(first.token.expose_secret()).await.is_ok());

    on_a.end_all("usr_1").await.unwrap();
    for s in [&on_a, &on_b] {
        assert_eq!(
            s.verify(first.token.expose_secret()).await.unwrap_err(),
            refused(SessionReason::Ended)
        );
        assert!(s.verify(other_user.token.expose_secret()).await.is_ok());
    }
    let again = on_b.issue("usr_1", &acct()).await.unwrap();
    assert!(on_a.verify(again.token.expose_secret()).await.is_ok());
    // A password change ends it too, wherever it is made.
    on_b.end_all("usr_1").await.unwrap();
    assert_eq!(
        on_a.verify(again.token.expose_secret()).await.unwrap_err(),
        refused(SessionReason::Ended)
    );
}

pub(crate) async fn memory_store_follows_logout_across_services() {
    let store: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    logout_on_one_instance_ends_the_session_on_the_other(store.clone(), store).await;
}

#[cfg(feature = "sqlite")]
pub(crate) async fn sqlite_store_follows_logout_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let a = keygate::SqliteStore::open(&path).await.unwrap();
    a.migrate().await.unwrap();
    let b = keygate::SqliteStore::open(&path).await.unwrap();
    logout_on_one_instance_ends_the_session_on_the_other(Arc::new(a), Arc::new(b)).await;
}

#[cfg(feature = "postgres")]
pub(crate) async fn postgres_store_follows_logout_across_instances() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let b = keygate::PostgresStore::connect_with_schema(pg.url(), pg.schema())
        .await
        .unwrap();
    logout_on_one_instance_ends_the_session_on_the_other(pg.postgres().clone(), Arc::new(b)).await;
    pg.cleanup().await;
}

/// A verified session is a principal of its own kind that acts as its
/// account (a signed-in user), not as a key.
pub(crate) async fn a_session_principal_says_it_came_from_a_session() {
    let clock = ManualClock::new();
    let s = sessions(SessionKey::generate_ed25519("k1").unwrap(), &clock);
    let api = ApiKeys::builder(profiles::mailkite())
        .clock(clock.clone())
        .sessions(s.clone())
        .build()
        .unwrap();
    let issued = s.issue("usr_1", &acct()).await.unwrap();
    let p = api
        .verify_session(issued.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(p.credential(), CredentialKind::Session);
    assert_eq!(p.subject(), Some("usr_1"));
    assert_eq!(p.account(), &acct());
    assert!(matches!(Actor::from(&p), Actor::Account(a) if a == acct()));
    assert!(api.check_scope(&p, "domains").is_ok());
    assert!(!format!("{p:?}").contains(issued.token.expose_secret()));

    let key = api
        .operator()
        .create(&acct(), keygate::CreateKey::new("live"))
        .await
        .unwrap();
    let k = api.verify(key.key.expose_secret()).await.unwrap();
    assert_eq!(k.credential(), CredentialKind::ApiKey);
    assert_eq!(k.subject(), None);
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::CURRENT) session_expires_after_fifteen_minutes_by_the_clock,
        tokio(Rt::CURRENT) kid_rotation_keeps_live_sessions_until_the_old_key_is_retired,
        tokio(Rt::CURRENT) a_public_key_verifies_what_the_private_key_signed,
        tokio(Rt::CURRENT) hs256_is_an_option,
        tokio(Rt::CURRENT) forged_and_misconfigured_tokens_get_typed_refusals,
        sync arbitrary_input_never_panics,
        sync arbitrary_json_segments_never_panic,
        tokio(Rt::CURRENT) memory_store_follows_logout_across_services,
        tokio(Rt::CURRENT) sqlite_store_follows_logout_across_instances,
        tokio(Rt::CURRENT) postgres_store_follows_logout_across_instances,
        tokio(Rt::CURRENT) a_session_principal_says_it_came_from_a_session,
    ]);
    support::harness::run(trials)
}
