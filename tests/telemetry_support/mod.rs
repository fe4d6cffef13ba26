//! The scripted requests the metrics and spans tests run.
#![allow(dead_code)]

use std::sync::Arc;

use keygate::hash::Pepper;
use keygate::{profiles, AccountId, ApiKeys, AuthError, CachedStore, CreateKey, SqliteStore};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// MailJawn on a cached in-memory SQLite store (so there is a cache to hit
/// and last-used times to flush).
async fn service() -> (ApiKeys, Arc<CachedStore>) {
    let sqlite = SqliteStore::in_memory().await.unwrap();
    let cached = Arc::new(CachedStore::new(Arc::new(sqlite)));
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(Arc::clone(&cached))
        .pepper(Pepper::new(1, [9u8; 32]).unwrap())
        .build()
        .unwrap();
    (api, cached)
}

/// What the script shows to the outside: every plaintext it made.
pub struct Script {
    pub secrets: Vec<String>,
}

/// The scripted requests both tests run.
pub async fn script() -> Script {
    let (api, cached) = service().await;
    let org = AccountId::new("org_tel").unwrap();
    let manager = api.operator();
    let a = manager
        .create(&org, CreateKey::new("a").bundle("sdk"))
        .await
        .unwrap();
    let b = manager
        .create(&org, CreateKey::new("b").bundle("sdk"))
        .await
        .unwrap();
    let c = manager
        .create(&org, CreateKey::new("c").bundle("sdk").credits(1))
        .await
        .unwrap();
    manager.revoke(&b.info.id).await.unwrap();
    let key_a = a.key.expose_secret();

    // verify: 2 ok (a miss, then a hit), 1 malformed, 1 invalid, 1 revoked.
    api.verify(key_a).await.unwrap();
    api.verify(key_a).await.unwrap();
    assert!(matches!(
        api.verify("nope").await,
        Err(AuthError::Malformed { .. })
    ));
    let stranger = api.profile().formats()[0].generate();
    assert_eq!(
        api.verify(stranger.expose_secret()).await.unwrap_err(),
        AuthError::Invalid
    );
    assert_eq!(
        api.verify(b.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );

    // verify_for send: 10 per minute, the 11th is rate limited.
    let send = api.operation("send").unwrap();
    for _ in 0..10 {
        api.verify_for(key_a, &send).await.unwrap();
    }
    assert!(matches!(
        api.verify_for(key_a, &send).await,
        Err(AuthError::RateLimited { .. })
    ));

    // One credit: the second read is refused.
    let read = api.operation("read").unwrap();
    api.verify_for(c.key.expose_secret(), &read).await.unwrap();
    assert!(matches!(
        api.verify_for(c.key.expose_secret(), &read).await,
        Err(AuthError::UsageExceeded { .. })
    ));

    // A bypassed cache goes to the store.
    cached.set_bypass(true);
    api.verify(key_a).await.unwrap();
    cached.set_bypass(false);

    assert_eq!(api.flush_last_used().await.unwrap(), 2);
    Script {
        secrets: vec![
            key_a.to_owned(),
            b.key.expose_secret().to_owned(),
            c.key.expose_secret().to_owned(),
        ],
    }
}
