//! `Manager::import`: storing a key issued elsewhere so it verifies like one
//! created here. Only the operator imports.

use keygate::{profiles, AccountId, ApiKeys, CreateKey, Error, KeyFormat};

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

#[tokio::test]
async fn imported_token_verifies_with_its_grant() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = acct("org_admin");
    let kept = api.profile().formats()[0].generate();
    let info = api
        .operator()
        .import(
            &org,
            kept.expose_secret(),
            CreateKey::new("admin").bundle("full_access"),
        )
        .await
        .unwrap();
    assert_eq!(info.account, org);
    assert_eq!(info.redacted, kept.redacted());
    let p = api.verify(kept.expose_secret()).await.unwrap();
    assert_eq!(p.key_id(), &info.id);
    assert!(api.check_scope(&p, "api_keys:write").is_ok());
    // The stored view never carries the secret.
    let json = serde_json::to_string(&info).unwrap();
    assert!(!json.contains(kept.expose_secret()));
}

#[tokio::test]
async fn imported_pair_verifies_as_public_colon_secret() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let kept = KeyFormat::Pair(keygate::PairFormat::new()).generate();
    let presented = kept.to_presented();
    let info = api
        .operator()
        .import(&acct("acct_1"), &presented, CreateKey::new("main"))
        .await
        .unwrap();
    assert_eq!(info.public_key.as_deref(), Some(kept.lookup()));
    assert!(api.verify(&presented).await.is_ok());
    assert!(api
        .verify_pair(kept.lookup(), kept.expose_secret())
        .await
        .is_ok());
}

#[tokio::test]
async fn malformed_keys_are_refused_without_echoing_them() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let bogus = "mj_not-a-real-key-at-all-but-secret-ish";
    let err = api
        .operator()
        .import(&acct("org_1"), bogus, CreateKey::new("x").bundle("sdk"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert_eq!(err.status(), 400);
    assert!(!err.to_string().contains(bogus));
}

#[tokio::test]
async fn importing_the_same_key_twice_is_a_conflict() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let kept = api.profile().formats()[0].generate();
    let org = acct("org_1");
    api.operator()
        .import(
            &org,
            kept.expose_secret(),
            CreateKey::new("a").bundle("sdk"),
        )
        .await
        .unwrap();
    let err = api
        .operator()
        .import(
            &org,
            kept.expose_secret(),
            CreateKey::new("b").bundle("sdk"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn import_checks_the_request_like_create() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let kept = api.profile().formats()[0].generate();
    let err = api
        .operator()
        .import(
            &acct("org_1"),
            kept.expose_secret(),
            CreateKey::new("x").bundle("nope"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_bundle");
    // No bundle and no default bundle: refused, and nothing was stored.
    let err = api
        .operator()
        .import(&acct("org_1"), kept.expose_secret(), CreateKey::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert!(api.verify(kept.expose_secret()).await.is_err());
}

#[tokio::test]
async fn import_respects_the_key_limit() {
    let api = ApiKeys::in_memory(profiles::mailkite()).unwrap();
    let org = acct("acct_1");
    api.as_account(&org)
        .create(&org, CreateKey::new("live"))
        .await
        .unwrap();
    let kept = api.profile().formats()[0].generate();
    let err = api
        .operator()
        .import(&org, kept.expose_secret(), CreateKey::new("second"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::KeyLimitReached { limit: 1 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn only_the_operator_imports() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = acct("org_1");
    let kept = api.profile().formats()[0].generate();
    let err = api
        .as_account(&org)
        .import(
            &org,
            kept.expose_secret(),
            CreateKey::new("x").bundle("sdk"),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::OperatorOnly);
    assert_eq!(err.status(), 403);
    // A verified key of the account is refused just the same.
    let admin = api
        .operator()
        .create(&org, CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    let principal = api.verify(admin.key.expose_secret()).await.unwrap();
    let err = api
        .as_key(&principal)
        .import(
            &org,
            kept.expose_secret(),
            CreateKey::new("x").bundle("sdk"),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::OperatorOnly);
    assert!(api.verify(kept.expose_secret()).await.is_err());
}

#[tokio::test]
async fn a_stored_key_and_a_public_key_in_use_get_one_conflict_message() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let org = acct("acct_1");
    let pairs = KeyFormat::Pair(keygate::PairFormat::new());
    let kept = pairs.generate();
    let info = api
        .operator()
        .import(&org, &kept.to_presented(), CreateKey::new("main"))
        .await
        .unwrap();
    // The same key again.
    let same = api
        .operator()
        .import(&org, &kept.to_presented(), CreateKey::new("again"))
        .await
        .unwrap_err();
    // Another secret under the public key an active key holds, even for
    // another account.
    let other_secret = pairs.generate();
    let reused = format!("{}:{}", kept.lookup(), other_secret.expose_secret());
    let taken = api
        .operator()
        .import(&acct("acct_2"), &reused, CreateKey::new("theirs"))
        .await
        .unwrap_err();
    assert!(matches!(same, Error::Conflict(_)), "{same:?}");
    assert_eq!(same.status(), 409);
    assert_eq!(taken, same);
    assert!(!same.to_string().contains(kept.lookup()));
    assert!(api.verify(&reused).await.is_err());
    assert_eq!(
        api.as_account(&org)
            .list(&org, keygate::ListOptions::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );

    // Once revoked, the public key is free again, but the revoked secret
    // is never stored again.
    api.as_account(&org).revoke(&info.id).await.unwrap();
    let revoked = api
        .operator()
        .import(&org, &kept.to_presented(), CreateKey::new("back"))
        .await
        .unwrap_err();
    assert_eq!(revoked, same);
    api.operator()
        .import(&acct("acct_2"), &reused, CreateKey::new("theirs"))
        .await
        .unwrap();
    assert!(api.verify(&reused).await.is_ok());
}
