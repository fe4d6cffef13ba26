//! Rate-limit state cannot be shed: rotating a key, resetting its secret,
//! churning the cache with unknown keys, or sending a method no class names
//! never buys a fresh bucket. Rate-limit state belongs to a key's rotation
//! chain and lives apart from the store's and the cache's entries.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CacheConfig, CachedStore, CreateKey, KeyStore,
    ManualClock, MemoryStore, Pepper, Rotation,
};

fn service(store: Arc<dyn KeyStore>, clock: &ManualClock) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(Pepper::new(1, [5u8; 32]).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Sends until refused; returns how many were admitted.
async fn spend(api: &ApiKeys, key: &str, class: &str) -> usize {
    let op = api.operation(class).unwrap();
    let mut admitted = 0;
    loop {
        match api.verify_for(key, &op).await {
            Ok(_) => admitted += 1,
            Err(AuthError::RateLimited { .. }) => return admitted,
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(admitted <= 1000, "never limited");
    }
}

async fn rotation_and_reset_keep_the_bucket(store: Arc<dyn KeyStore>) {
    let clock = ManualClock::new();
    let api = service(store, &clock);
    let org = AccountId::new("org").unwrap();
    let keys = api.as_account(&org);
    let first = keys
        .create(&org, CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    assert_eq!(spend(&api, first.key.expose_secret(), "send").await, 10);

    // Five immediate rotations: each successor is as spent as its predecessor.
    let mut current = first;
    for _ in 0..5 {
        let next = keys
            .rotate(&current.info.id, Rotation::Immediate)
            .await
            .unwrap();
        assert_eq!(spend(&api, next.key.expose_secret(), "send").await, 0);
        current = next;
    }
    // A secret reset keeps the key, and so its bucket.
    let reset = keys.reset_secret(&current.info.id).await.unwrap();
    assert_eq!(spend(&api, reset.key.expose_secret(), "send").await, 0);

    // During a grace period the old and the new key draw on one bucket.
    clock.advance(Duration::from_secs(60));
    let graced = keys
        .rotate(&current.info.id, Rotation::Grace(Duration::from_secs(3600)))
        .await
        .unwrap();
    let old = spend(&api, reset.key.expose_secret(), "send").await;
    let new = spend(&api, graced.key.expose_secret(), "send").await;
    assert_eq!((old, new), (10, 0));
}

pub(crate) async fn rotation_and_reset_keep_the_bucket_on_memory() {
    rotation_and_reset_keep_the_bucket(Arc::new(MemoryStore::new())).await;
}

pub(crate) async fn rotation_and_reset_keep_the_bucket_behind_a_cache() {
    let cached = CachedStore::new(Arc::new(MemoryStore::new()));
    rotation_and_reset_keep_the_bucket(Arc::new(cached)).await;
}

#[cfg(feature = "sqlite")]
pub(crate) async fn rotation_and_reset_keep_the_bucket_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = keygate::SqliteStore::open(dir.path().join("keys.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    rotation_and_reset_keep_the_bucket(Arc::new(store.clone())).await;
    let cached = CachedStore::new(Arc::new(store));
    rotation_and_reset_keep_the_bucket(Arc::new(cached)).await;
}

#[cfg(feature = "postgres")]
pub(crate) async fn rotation_and_reset_keep_the_bucket_on_postgres() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    rotation_and_reset_keep_the_bucket(pg.store()).await;
    pg.cleanup().await;
}

pub(crate) async fn unknown_keys_filling_the_cache_do_not_refill_a_bucket() {
    let clock = ManualClock::new();
    let cached = CachedStore::builder(Arc::new(MemoryStore::new()))
        .config(CacheConfig::default().with_max_entries(4))
        .clock(clock.clone())
        .build();
    let api = service(Arc::new(cached.clone()), &clock);
    let org = AccountId::new("org").unwrap();
    let key = api
        .operator()
        .create(&org, CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let text = key.key.expose_secret();
    assert_eq!(spend(&api, text, "send").await, 10);
    let format = &api.profile().formats()[0];
    for _ in 0..64 {
        let unknown = format.generate();
        assert_eq!(
            api.verify(unknown.expose_secret()).await.unwrap_err(),
            AuthError::Invalid
        );
    }
    assert!(cached.len() <= 4 + 1);
    assert_eq!(spend(&api, text, "send").await, 0);
}

pub(crate) async fn methods_no_class_names_fall_into_the_strictest_class() {
    let clock = ManualClock::new();
    let api = service(Arc::new(MemoryStore::new()), &clock);
    let org = AccountId::new("org").unwrap();
    let key = api
        .operator()
        .create(&org, CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    for method in ["OPTIONS", "TRACE", "PROPFIND", "QUERY"] {
        assert_eq!(api.operation_for_method(method).class(), Some("write"));
    }
    let op = api.operation_for_method("PROPFIND");
    let mut admitted = 0;
    while api.verify_for(key.key.expose_secret(), &op).await.is_ok() {
        admitted += 1;
        assert!(admitted <= 30);
    }
    assert_eq!(admitted, 30, "write: 30/min");
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::CURRENT) rotation_and_reset_keep_the_bucket_on_memory,
        tokio(Rt::CURRENT) rotation_and_reset_keep_the_bucket_behind_a_cache,
        tokio(Rt::CURRENT) rotation_and_reset_keep_the_bucket_on_sqlite,
        tokio(Rt::CURRENT) rotation_and_reset_keep_the_bucket_on_postgres,
        tokio(Rt::CURRENT) unknown_keys_filling_the_cache_do_not_refill_a_bucket,
        tokio(Rt::CURRENT) methods_no_class_names_fall_into_the_strictest_class,
    ]);
    support::harness::run(trials)
}
