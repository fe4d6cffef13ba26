//! Requirements from `shared/seeds/002_335bf4731ad6bd38.txt` (MailChannels API keys),
//! checked against `profiles::mailchannels()`.

use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, Error, KeyLocation, ListOptions,
};

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn api() -> ApiKeys {
    ApiKeys::in_memory(profiles::mailchannels()).unwrap()
}

// "-H "X-Api-Key: $MAILCHANNELS_API_KEY""
#[test]
fn keys_are_sent_in_the_x_api_key_header() {
    assert_eq!(
        profiles::mailchannels().key_locations(),
        [KeyLocation::Header("x-api-key".into())]
    );
}

// "Add a descriptive label." "The full key is shown exactly once at the moment it is
// created. The redacted version is available via the Console and API, but never the
// original key."
#[tokio::test]
async fn labelled_key_shown_once_then_only_redacted() {
    let api = api();
    let me = acct("acme");
    let k = api
        .as_account(&me)
        .create(&me, CreateKey::new("billing service").scopes(["api"]))
        .await
        .unwrap();
    let page = api
        .as_account(&me)
        .list(&me, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.data[0].name, "billing service");
    assert_eq!(page.data[0].redacted, k.key.redacted());
    assert!(page.data[0].redacted.ends_with('…'));
    let json = serde_json::to_string(&page).unwrap();
    assert!(!json.contains(k.key.expose_secret()));
}

// "Scope is assigned when the key is created ... and cannot be changed afterwards":
// `api` (Sending Email) or `inbound` (Managing Inbound Filtering).
#[tokio::test]
async fn scope_is_api_or_inbound_and_fixed_at_creation() {
    let api = api();
    let me = acct("acme");
    let sending = api
        .as_account(&me)
        .create(&me, CreateKey::new("send").scopes(["api"]))
        .await
        .unwrap();
    let inbound = api
        .as_account(&me)
        .create(&me, CreateKey::new("filter").scopes(["inbound"]))
        .await
        .unwrap();
    let p = api.verify(sending.key.expose_secret()).await.unwrap();
    assert!(api.check_scope(&p, "api").is_ok());
    assert_eq!(api.check_scope(&p, "inbound").unwrap_err().status(), 403);
    let p = api.verify(inbound.key.expose_secret()).await.unwrap();
    assert!(api.check_scope(&p, "inbound").is_ok());
    assert_eq!(api.check_scope(&p, "api").unwrap_err().status(), 403);
    // No other scope exists.
    assert_eq!(
        api.as_account(&me)
            .create(&me, CreateKey::new("x").scopes(["admin"]))
            .await
            .unwrap_err()
            .to_string(),
        "unknown scope 'admin'"
    );
    // A key without a scope is refused: the scope must be chosen at creation.
    assert!(matches!(
        api.as_account(&me)
            .create(&me, CreateKey::new("none"))
            .await
            .unwrap_err(),
        Error::Invalid(_)
    ));
    // Rotation keeps the scope exactly.
    let rotated = api
        .as_account(&me)
        .rotate(&inbound.info.id, keygate::Rotation::Immediate)
        .await
        .unwrap();
    assert_eq!(rotated.info.scopes, ["inbound"]);
}

// "click Revoke ... All subsequent requests that use the key will fail."
#[tokio::test]
async fn revoked_keys_fail_on_every_subsequent_request() {
    let api = api();
    let me = acct("acme");
    let k = api
        .as_account(&me)
        .create(&me, CreateKey::new("k").scopes(["api"]))
        .await
        .unwrap();
    api.as_account(&me).revoke(&k.info.id).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            api.verify(k.key.expose_secret()).await.unwrap_err(),
            AuthError::Revoked
        );
    }
}

// "The parent account can create, list, and delete keys for each sub-account it owns."
#[tokio::test]
async fn parent_creates_lists_and_deletes_sub_account_keys() {
    let api = api();
    let parent = acct("acme");
    let stranger = acct("globex");
    let sub = api
        .as_account(&parent)
        .create_sub_account(&parent, "eu")
        .await
        .unwrap();
    let k = api
        .as_account(&parent)
        .create(&sub, CreateKey::new("eu sender").scopes(["api"]))
        .await
        .unwrap();
    let p = api.verify(k.key.expose_secret()).await.unwrap();
    assert_eq!(p.account(), &sub);
    let listed = api
        .as_account(&parent)
        .list(&sub, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    // Another account cannot see or touch them: 404, not 403.
    assert_eq!(
        api.as_account(&stranger)
            .list(&sub, ListOptions::default())
            .await
            .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&stranger)
            .create(&sub, CreateKey::new("x").scopes(["api"]))
            .await
            .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&stranger)
            .revoke(&k.info.id)
            .await
            .unwrap_err(),
        Error::NotFound
    );
    // A sub-account cannot manage its parent's keys.
    let parent_key = api
        .as_account(&parent)
        .create(&parent, CreateKey::new("p").scopes(["api"]))
        .await
        .unwrap();
    assert_eq!(
        api.as_account(&sub)
            .revoke(&parent_key.info.id)
            .await
            .unwrap_err(),
        Error::NotFound
    );
    api.as_account(&parent).revoke(&k.info.id).await.unwrap();
    assert_eq!(
        api.verify(k.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
}

// "Each account can have 100 API keys. Each sub-account can have 100 API keys.
// Sub-account keys do not count towards the parent account's limit. Attempting to
// create another key past that limit returns an error. Delete an unused key before
// creating a new one."
#[tokio::test]
async fn one_hundred_keys_per_account_and_per_sub_account() {
    let api = api();
    let parent = acct("acme");
    let sub = api
        .as_account(&parent)
        .create_sub_account(&parent, "eu")
        .await
        .unwrap();
    let mut first = None;
    for i in 0..100 {
        let k = api
            .as_account(&parent)
            .create(&parent, CreateKey::new(format!("p{i}")).scopes(["api"]))
            .await
            .unwrap();
        first.get_or_insert(k.info.id);
        api.as_account(&parent)
            .create(&sub, CreateKey::new(format!("s{i}")).scopes(["api"]))
            .await
            .unwrap();
    }
    let err = api
        .as_account(&parent)
        .create(&parent, CreateKey::new("p100").scopes(["api"]))
        .await
        .unwrap_err();
    assert_eq!(err, Error::KeyLimitReached { limit: 100 });
    assert!(err.to_string().contains("100"));
    assert_eq!(
        api.as_account(&parent)
            .create(&sub, CreateKey::new("s100").scopes(["api"]))
            .await
            .unwrap_err(),
        Error::KeyLimitReached { limit: 100 }
    );
    api.as_account(&parent)
        .revoke(&first.unwrap())
        .await
        .unwrap();
    api.as_account(&parent)
        .create(&parent, CreateKey::new("again").scopes(["api"]))
        .await
        .unwrap();
}

// "The API currently supports the following scopes: Sending Email (api) and
// Managing Inbound Filtering (inbound)": a key has one of them. Both, neither,
// a wildcard, or all scopes are refused by the profile itself, for every actor.
#[tokio::test]
async fn a_key_carries_exactly_one_of_api_or_inbound() {
    let api = api();
    let me = acct("acme");
    for request in [
        CreateKey::new("both").scopes(["api", "inbound"]),
        CreateKey::new("neither"),
        CreateKey::new("wildcard").scopes(["*"]),
        CreateKey::new("all").all_scopes(),
    ] {
        let refused = api.operator().create(&me, request).await.map(drop);
        let Err(Error::Invalid(keygate::InvalidRequest::OneScopePerKey { choices })) = refused
        else {
            panic!("{refused:?}");
        };
        assert_eq!(choices, "api, inbound");
    }
    for scope in ["api", "inbound"] {
        let one = api
            .as_account(&me)
            .create(&me, CreateKey::new(scope).scopes([scope, scope]))
            .await
            .unwrap();
        assert_eq!(one.info.scopes, [scope, scope]);
    }
}
