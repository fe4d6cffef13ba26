//! No key grants more than it holds: a key creates, rotates, resets and
//! revokes only keys no stronger than itself (scopes, rate limits, lifetime),
//! the profile's default bundle never widens a weaker key's request, and
//! rotation cannot multiply keys past a profile's limit.

use std::time::Duration;

use keygate::Clock;

use keygate::{
    profiles, AccountId, ApiKeys, CreateKey, Error, ListOptions, ManualClock, Principal, Quota,
    Rotation,
};

async fn principal(api: &ApiKeys, account: &AccountId, request: CreateKey) -> (Principal, String) {
    let key = api.operator().create(account, request).await.unwrap();
    let text = key.key.to_presented().to_string();
    (api.verify(&text).await.unwrap(), text)
}

#[tokio::test]
async fn mailjawn_key_manager_cannot_mint_or_hijack_full_access() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = AccountId::new("org").unwrap();
    let (_, admin_text) =
        principal(&api, &org, CreateKey::new("admin").bundle("full_access")).await;
    let admin_id = api.verify(&admin_text).await.unwrap().key_id().clone();
    let (manager, _) = principal(
        &api,
        &org,
        CreateKey::new("keys").scopes(["api_keys:read", "api_keys:write"]),
    )
    .await;
    let keys = api.as_key(&manager);
    for request in [
        CreateKey::new("x").bundle("full_access"),
        CreateKey::new("x").bundle("sdk"),
        CreateKey::new("x").scopes(["emails:send"]),
        CreateKey::new("x").scopes(["api_keys:*", "stats:read"]),
    ] {
        assert_eq!(
            keys.create(&org, request).await.map(drop),
            Err(Error::InsufficientScope)
        );
    }
    // What it holds, it may hand out.
    keys.create(&org, CreateKey::new("reader").scopes(["api_keys:read"]))
        .await
        .unwrap();
    assert_eq!(
        keys.rotate(&admin_id, Rotation::Immediate).await.map(drop),
        Err(Error::InsufficientScope)
    );
    assert_eq!(
        keys.reset_secret(&admin_id).await.map(drop),
        Err(Error::InsufficientScope)
    );
    assert_eq!(keys.revoke(&admin_id).await, Err(Error::InsufficientScope));
    assert_eq!(Error::InsufficientScope.status(), 403);
    assert_eq!(Error::InsufficientScope.code(), "insufficient_scope");
    // Listing and reading are not escalation.
    assert!(keys.get(&admin_id).await.is_ok());
    assert_eq!(
        keys.list(&org, ListOptions::default())
            .await
            .unwrap()
            .data
            .len(),
        3
    );
    assert!(api.verify(&admin_text).await.is_ok());
}

#[tokio::test]
async fn mailjet_default_bundle_never_widens_a_weaker_key() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let org = AccountId::new("org").unwrap();
    let (admin, admin_text) = principal(&api, &org, CreateKey::new("admin")).await;
    let (account_only, _) = principal(&api, &org, CreateKey::new("acct").scopes(["account"])).await;
    let keys = api.as_key(&account_only);
    // No grant named: the profile default (full_access) would widen it.
    assert_eq!(
        keys.create(&org, CreateKey::new("x")).await.map(drop),
        Err(Error::InsufficientScope)
    );
    assert_eq!(
        keys.reset_secret(admin.key_id()).await.map(drop),
        Err(Error::InsufficientScope)
    );
    assert!(api.verify(&admin_text).await.is_ok());
    // The admin itself may.
    assert!(api
        .as_key(&admin)
        .create(&org, CreateKey::new("y"))
        .await
        .is_ok());
}

#[tokio::test]
async fn mailchannels_api_keys_cannot_create_inbound_keys_even_for_sub_accounts() {
    let api = ApiKeys::in_memory(profiles::mailchannels()).unwrap();
    let org = AccountId::new("org").unwrap();
    let (api_only, _) = principal(&api, &org, CreateKey::new("send").scopes(["api"])).await;
    let keys = api.as_key(&api_only);
    assert_eq!(
        keys.create(&org, CreateKey::new("in").scopes(["inbound"]))
            .await
            .map(drop),
        Err(Error::InsufficientScope)
    );
    let sub = keys.create_sub_account(&org, "eu").await.unwrap();
    assert_eq!(
        keys.create(&sub, CreateKey::new("in").scopes(["inbound"]))
            .await
            .map(drop),
        Err(Error::InsufficientScope)
    );
    let given = keys
        .create(&sub, CreateKey::new("eu").scopes(["api"]))
        .await
        .unwrap();
    let sub_key = api.verify(given.key.expose_secret()).await.unwrap();
    assert_eq!(
        api.as_key(&sub_key)
            .create(&sub, CreateKey::new("in").scopes(["inbound"]))
            .await
            .map(drop),
        Err(Error::InsufficientScope)
    );
}

#[tokio::test]
async fn a_key_never_hands_out_a_larger_quota_or_a_longer_life() {
    let clock = ManualClock::new();
    let api = ApiKeys::builder(profiles::mailjawn())
        .clock(clock.clone())
        .build()
        .unwrap();
    let org = AccountId::new("org").unwrap();
    let expires = clock.now() + time::Duration::days(7);
    let (slow, _) = principal(
        &api,
        &org,
        CreateKey::new("slow")
            .bundle("full_access")
            .rate_limit(
                "send",
                Quota::per_minute(std::num::NonZeroU32::new(1).unwrap()),
            )
            .expires_at(expires),
    )
    .await;
    let keys = api.as_key(&slow);
    assert_eq!(
        keys.create(
            &org,
            CreateKey::new("fast").bundle("full_access").rate_limit(
                "send",
                Quota::per_minute(std::num::NonZeroU32::new(10).unwrap())
            )
        )
        .await
        .map(drop),
        Err(Error::InsufficientScope)
    );
    // Unset limits and expiry are inherited from the creating key.
    let child = keys
        .create(&org, CreateKey::new("child").bundle("full_access"))
        .await
        .unwrap();
    assert_eq!(
        child.info.rate_limits.get("send"),
        Some(&Quota::per_minute(std::num::NonZeroU32::new(1).unwrap()))
    );
    assert_eq!(child.info.expires_at, Some(expires));
    let later = keys
        .create(
            &org,
            CreateKey::new("later")
                .bundle("full_access")
                .expires_at(expires + time::Duration::days(30)),
        )
        .await
        .unwrap();
    assert_eq!(later.info.expires_at, Some(expires));
}

#[tokio::test]
async fn mailkite_grace_rotations_cannot_multiply_keys() {
    let api = ApiKeys::in_memory(profiles::mailkite()).unwrap();
    let acct = AccountId::new("acct").unwrap();
    let first = api
        .operator()
        .create(&acct, CreateKey::new("live"))
        .await
        .unwrap();
    let keys = api.as_account(&acct);
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    for too_long in [century, Duration::MAX, Duration::from_secs(31 * 24 * 3600)] {
        assert!(matches!(
            keys.rotate(&first.info.id, Rotation::Grace(too_long)).await,
            Err(Error::Invalid(_))
        ));
    }
    keys.rotate(&first.info.id, Rotation::Grace(Duration::from_secs(3600)))
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            keys.rotate(&first.info.id, Rotation::Grace(Duration::from_secs(3600)))
                .await
                .map(drop),
            Err(Error::AlreadyRotated)
        );
    }
    assert_eq!(Error::AlreadyRotated.status(), 409);
    let live = keys
        .list(&acct, ListOptions::default())
        .await
        .unwrap()
        .data
        .into_iter()
        .filter(|k| k.format == "mk_live_")
        .count();
    assert_eq!(live, 2, "the old key in its grace period and one successor");
}

#[tokio::test]
async fn a_scope_refusal_spends_no_token() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = AccountId::new("org").unwrap();
    let key = api
        .operator()
        .create(&org, CreateKey::new("reader").scopes(["subscribers:read"]))
        .await
        .unwrap();
    let text = key.key.expose_secret();
    let refused = api
        .operation("write")
        .unwrap()
        .require("subscribers:write")
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            api.verify_for(text, &refused).await,
            Err(keygate::AuthError::Forbidden { .. })
        ));
    }
    let allowed = api
        .operation("write")
        .unwrap()
        .require("subscribers:read")
        .unwrap();
    let principal = api.verify_for(text, &allowed).await.unwrap();
    let decision = principal.rate_limit().unwrap();
    assert_eq!(decision.limit, 30);
    assert_eq!(decision.remaining, 29, "the three 403s took no token");
}

#[tokio::test]
async fn a_key_of_another_service_cannot_act_here() {
    let a = ApiKeys::in_memory(profiles::default()).unwrap();
    let b = ApiKeys::in_memory(profiles::default()).unwrap();
    let org = AccountId::new("org").unwrap();
    let (foreign, _) = principal(&a, &org, CreateKey::new("admin").bundle("full_access")).await;
    let victim = b
        .operator()
        .create(&org, CreateKey::new("victim"))
        .await
        .unwrap();
    let keys = b.as_key(&foreign);
    let invalid = Error::Auth(keygate::AuthError::Invalid);
    assert_eq!(
        keys.create(&org, CreateKey::new("x")).await.map(drop),
        Err(invalid.clone())
    );
    assert_eq!(keys.revoke(&victim.info.id).await, Err(invalid.clone()));
    assert_eq!(
        keys.list(&org, ListOptions::default()).await.map(drop),
        Err(invalid)
    );
    assert!(b.verify(victim.key.expose_secret()).await.is_ok());
}
