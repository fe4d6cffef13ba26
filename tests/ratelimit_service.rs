//! Rate limiting through `ApiKeys::verify_for`: classes, overrides, headers data,
//! revocation and concurrency.

#[path = "support/mod.rs"]
mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, Error, ListOptions, ManualClock, Quota,
};

fn org() -> AccountId {
    AccountId::new("org").unwrap()
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn api(clock: &ManualClock) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn())
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn decisions_carry_header_values() {
    let clock = ManualClock::new();
    let api = api(&clock);
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let send = api.operation("send").unwrap();
    let p = api.verify_for(k.key.expose_secret(), &send).await.unwrap();
    let d = p.rate_limit().unwrap();
    assert_eq!((d.limit, d.remaining), (10, 9));
    assert_eq!(d.reset_secs(), 6);
    for _ in 0..9 {
        api.verify_for(k.key.expose_secret(), &send).await.unwrap();
    }
    match api.verify_for(k.key.expose_secret(), &send).await {
        Err(AuthError::RateLimited { decision }) => {
            assert!(!decision.allowed);
            assert_eq!(decision.remaining, 0);
            assert_eq!(decision.retry_after_secs(), Some(6));
            assert_eq!(AuthError::RateLimited { decision }.status(), 429);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn scope_is_checked_after_the_token_is_taken() {
    let clock = ManualClock::new();
    let api = api(&clock);
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let op = api
        .operation("send")
        .unwrap()
        .require("emails:send")
        .unwrap();
    assert_eq!(
        api.verify_for(k.key.expose_secret(), &op)
            .await
            .unwrap_err(),
        AuthError::Forbidden {
            required: "emails:send".into()
        }
    );
}

#[tokio::test]
async fn per_key_overrides_replace_the_profile_quota() {
    let clock = ManualClock::new();
    let api = api(&clock);
    let k = api
        .as_account(&org())
        .create(
            &org(),
            CreateKey::new("bulk")
                .bundle("full_access")
                .rate_limit("send", Quota::per_minute(nz(2))),
        )
        .await
        .unwrap();
    let info = api.as_account(&org()).get(&k.info.id).await.unwrap();
    assert_eq!(info.rate_limits["send"].limit(), 2);
    let listed = api
        .as_account(&org())
        .list(&org(), ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.data[0].rate_limits["send"], Quota::per_minute(nz(2)));
    let send = api.operation("send").unwrap();
    api.verify_for(k.key.expose_secret(), &send).await.unwrap();
    api.verify_for(k.key.expose_secret(), &send).await.unwrap();
    assert!(matches!(
        api.verify_for(k.key.expose_secret(), &send).await,
        Err(AuthError::RateLimited { .. })
    ));
    // Other classes keep the profile's quota.
    let read = api.operation_for_method("GET");
    let d = *api
        .verify_for(k.key.expose_secret(), &read)
        .await
        .unwrap()
        .rate_limit()
        .unwrap();
    assert_eq!(d.limit, 100);
}

#[tokio::test]
async fn unknown_classes_are_errors() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    assert_eq!(
        api.operation("sned").unwrap_err(),
        Error::Invalid(keygate::InvalidRequest::UnknownClass("sned".into()))
    );
    let e = api
        .as_account(&org())
        .create(
            &org(),
            CreateKey::new("k")
                .bundle("sdk")
                .rate_limit("sned", Quota::per_minute(nz(1))),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)));
    // A profile without limits limits nothing, whatever the class.
    let plain = ApiKeys::in_memory(profiles::mailkite()).unwrap();
    let k = plain
        .as_account(&org())
        .create(&org(), CreateKey::new("default"))
        .await
        .unwrap();
    let op = plain.operation("anything").unwrap();
    let p = plain.verify_for(k.key.expose_secret(), &op).await.unwrap();
    assert!(p.rate_limit().is_none());
}

#[tokio::test]
async fn revoking_drops_the_keys_limiter_state() {
    let clock = ManualClock::new();
    let api = api(&clock);
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let send = api.operation("send").unwrap();
    api.verify_for(k.key.expose_secret(), &send).await.unwrap();
    api.as_account(&org()).revoke(&k.info.id).await.unwrap();
    let entry = api.store().get_key(&k.info.id).await.unwrap().unwrap();
    assert!(entry.record().revoked_at.is_some());
    assert_eq!(
        api.verify_for(k.key.expose_secret(), &send)
            .await
            .unwrap_err(),
        AuthError::Revoked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_one_key_admit_exactly_the_burst() {
    let clock = ManualClock::new();
    let api = api(&clock);
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let key: Arc<str> = k.key.expose_secret().into();
    let read = api.operation_for_method("GET");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (api, key, read) = (api.clone(), key.clone(), read.clone());
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..50 {
                if api.verify_for(&key, &read).await.is_ok() {
                    admitted += 1;
                }
            }
            admitted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 100);
}

/// A store that hands out fresh entries on every lookup, like a database
/// without a cache: limits must still hold.
#[tokio::test]
async fn limits_hold_when_the_store_does_not_keep_entries() {
    let clock = ManualClock::new();
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(support::Counting {
            fresh_entries: true,
            ..support::Counting::default()
        })
        .pepper(keygate::Pepper::new(1, [5u8; 32]).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let send = api.operation("send").unwrap();
    for _ in 0..10 {
        api.verify_for(k.key.expose_secret(), &send).await.unwrap();
    }
    assert!(matches!(
        api.verify_for(k.key.expose_secret(), &send).await,
        Err(AuthError::RateLimited { .. })
    ));
    clock.advance(Duration::from_secs(60));
    api.verify_for(k.key.expose_secret(), &send).await.unwrap();
}
