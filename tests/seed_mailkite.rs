//! Requirements from `shared/seeds/003_ce8d37cf50e3a0d1.txt` (MailKite authentication),
//! checked against `profiles::mailkite()`.

use keygate::{profiles, AccountId, ApiKeys, AuthError, CreateKey, Error, KeyLocation, Rotation};

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

// "Your account has a single mk_live_… API key from the moment you sign up. It's scoped
// to all your domains and authenticates every endpoint."
#[tokio::test]
async fn one_full_scope_live_key_per_account() {
    let api = ApiKeys::in_memory(profiles::mailkite()).unwrap();
    let me = acct("usr_1");
    // Signup creates the key with the profile's default (full) scope.
    let k = api
        .as_account(&me)
        .create(&me, CreateKey::new("default"))
        .await
        .unwrap();
    assert!(k.key.expose_secret().starts_with("mk_live_"));
    let p = api.verify(k.key.expose_secret()).await.unwrap();
    for s in ["send", "domains", "webhooks", "routes", "inbound"] {
        assert!(api.check_scope(&p, s).is_ok(), "{s}");
    }
    // A second live key is refused: one key per account.
    assert_eq!(
        api.as_account(&me)
            .create(&me, CreateKey::new("another"))
            .await
            .unwrap_err(),
        Error::KeyLimitReached { limit: 1 }
    );
    // A test-mode key lives beside it.
    let t = api
        .as_account(&me)
        .create(&me, CreateKey::new("test").format("mk_test_"))
        .await
        .unwrap();
    assert!(t.key.expose_secret().starts_with("mk_test_"));
    assert_eq!(
        api.verify(t.key.expose_secret()).await.unwrap().format(),
        "mk_test_"
    );
}

// "it goes out as Authorization: Bearer mk_live_… on every request"
#[test]
fn keys_are_sent_as_bearer_tokens() {
    assert_eq!(profiles::mailkite().key_locations(), [KeyLocation::Bearer]);
}

// "Rotate it in the dashboard; rotating invalidates the old key immediately."
#[tokio::test]
async fn rotation_invalidates_the_old_key_immediately() {
    let api = ApiKeys::in_memory(profiles::mailkite()).unwrap();
    let me = acct("usr_1");
    let old = api
        .as_account(&me)
        .create(&me, CreateKey::new("default"))
        .await
        .unwrap();
    let new = api
        .as_account(&me)
        .rotate(&old.info.id, Rotation::Immediate)
        .await
        .unwrap();
    assert_eq!(
        api.verify(old.key.expose_secret())
            .await
            .unwrap_err()
            .status(),
        401
    );
    assert!(new.key.expose_secret().starts_with("mk_live_"));
    api.verify(new.key.expose_secret()).await.unwrap();
    // Still exactly one live key.
    assert_eq!(
        api.as_account(&me)
            .create(&me, CreateKey::new("another"))
            .await
            .unwrap_err(),
        Error::KeyLimitReached { limit: 1 }
    );
}

// "Session token | JWT (eyJ…) | The dashboard's own browser session": a separate
// credential kind that is never accepted as an API key.
#[tokio::test]
async fn session_tokens_are_not_api_keys() {
    let api = ApiKeys::in_memory(profiles::mailkite()).unwrap();
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJl";
    assert!(matches!(
        api.verify(jwt).await.unwrap_err(),
        AuthError::Malformed { .. }
    ));
}

// "A missing or invalid credential returns 401 Unauthorized. A valid credential that
// lacks access to a resource returns 403 Forbidden, and an unknown or non-owned
// resource returns 404 Not Found."
#[tokio::test]
async fn status_codes_follow_the_documented_errors() {
    let api = ApiKeys::in_memory(profiles::mailkite()).unwrap();
    let me = acct("usr_1");
    let other = acct("usr_2");
    let k = api
        .as_account(&me)
        .create(&me, CreateKey::new("default"))
        .await
        .unwrap();
    assert_eq!(AuthError::Missing.status(), 401);
    let stranger = keygate::TokenFormat::new("mk_live_").generate();
    assert_eq!(
        api.verify(stranger.expose_secret())
            .await
            .unwrap_err()
            .status(),
        401
    );
    assert_eq!(
        AuthError::Forbidden {
            required: "x".into()
        }
        .status(),
        403
    );
    let e = api.as_account(&other).get(&k.info.id).await.unwrap_err();
    assert_eq!(e, Error::NotFound);
    assert_eq!(e.status(), 404);
    assert_eq!(
        api.as_account(&me)
            .get(&keygate::KeyId::new("key_unknown"))
            .await
            .unwrap_err()
            .status(),
        404
    );
}

// "All requests must use HTTPS. Requests over plain HTTP are rejected (except
// http://localhost for local webhook testing)." The HTTP layer enforces the flag.
#[test]
fn the_profile_is_https_only() {
    assert!(profiles::mailkite().https_only());
    assert!(!profiles::mailjawn().https_only());
}
