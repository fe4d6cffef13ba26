//! `CachedStore` in one process: hits ask the inner store nothing, unknown
//! lookups are remembered briefly, answers expire, the cache stays bounded,
//! and changes made through it (or announced to it) take effect at once.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use keygate::hash::SecretHash;
use keygate::store::{KeyRecord, ListQuery};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CacheConfig, CachedStore, Clock, CreateKey, KeyId,
    KeyStore, ManualClock, Pepper, Profile, Quota, Rotation,
};
use support::Counting;
use time::OffsetDateTime;

const TTL: Duration = Duration::from_secs(60);
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

struct Setup {
    api: ApiKeys,
    cached: CachedStore,
    inner: Arc<Counting>,
    clock: ManualClock,
}

fn setup_with(profile: Profile, inner: Counting, config: CacheConfig) -> Setup {
    let inner = Arc::new(inner);
    let clock = ManualClock::new();
    let cached = CachedStore::builder(inner.clone())
        .config(config)
        .clock(clock.clone())
        .build();
    let api = ApiKeys::builder(profile)
        .shared_store(Arc::new(cached.clone()))
        .pepper(Pepper::new(1, [7u8; 32]).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    Setup {
        api,
        cached,
        inner,
        clock,
    }
}

fn config() -> CacheConfig {
    CacheConfig {
        max_entries: 1_000,
        ttl: TTL,
        negative_ttl: NEGATIVE_TTL,
    }
}

fn setup(profile: Profile) -> Setup {
    setup_with(profile, Counting::default(), config())
}

fn org() -> AccountId {
    AccountId::new("org_cache").unwrap()
}

async fn new_key(api: &ApiKeys) -> keygate::NewKey {
    api.as_account(&org())
        .create(&org(), CreateKey::new("ci").bundle("sdk"))
        .await
        .unwrap()
}

/// A stored key with lookup id `lookup`.
fn record(n: u32, lookup: &str) -> KeyRecord {
    KeyRecord {
        id: KeyId::new(format!("key_{n:06}")),
        account: org(),
        name: format!("key {n}"),
        format: "mj_".into(),
        lookup: lookup.into(),
        hash: SecretHash::from_parts(1, [n as u8; 32]),
        bundle: None,
        scopes: Vec::new(),
        rate_limits: Vec::new(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        replaced_by: None,
        lineage: None,
    }
}

#[tokio::test]
async fn a_cache_hit_asks_the_inner_store_nothing() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    let presented = key.key.expose_secret();
    s.api.verify(presented).await.unwrap();
    let after_miss = s.inner.finds();
    for _ in 0..5 {
        let p = s.api.verify(presented).await.unwrap();
        assert_eq!(p.key_id(), &key.info.id);
    }
    assert_eq!(s.inner.finds(), after_miss);
    let stats = s.cached.stats();
    assert_eq!(stats.hits, 5);
    assert_eq!(stats.misses as usize, after_miss);
    assert!(s.cached.keeps_entries());
    assert!(!s.cached.needs_last_used_flush());
}

#[tokio::test]
async fn unknown_lookups_are_remembered_for_the_negative_ttl() {
    let s = setup(profiles::mailjawn());
    let stranger = s.api.profile().formats[0].generate();
    let presented = stranger.expose_secret();
    assert_eq!(
        s.api.verify(presented).await.unwrap_err(),
        AuthError::Invalid
    );
    assert_eq!(s.inner.finds(), 1);
    s.clock.advance(NEGATIVE_TTL - Duration::from_millis(1));
    assert_eq!(
        s.api.verify(presented).await.unwrap_err(),
        AuthError::Invalid
    );
    assert_eq!(s.inner.finds(), 1);
    s.clock.advance(Duration::from_millis(1));
    assert_eq!(
        s.api.verify(presented).await.unwrap_err(),
        AuthError::Invalid
    );
    assert_eq!(s.inner.finds(), 2);
}

#[tokio::test]
async fn a_key_inserted_through_the_cache_clears_its_negative_answer() {
    let s = setup(profiles::mailjawn());
    assert!(s.cached.find_by_lookup("lk_new").await.unwrap().is_empty());
    s.cached
        .insert_key(record(1, "lk_new"), None, OffsetDateTime::UNIX_EPOCH)
        .await
        .unwrap();
    let found = s.cached.find_by_lookup("lk_new").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].record().id, KeyId::new("key_000001"));
}

#[tokio::test]
async fn answers_expire_after_the_ttl() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    let presented = key.key.expose_secret();
    s.api.verify(presented).await.unwrap();
    let finds = s.inner.finds();
    s.clock.advance(TTL - Duration::from_millis(1));
    s.api.verify(presented).await.unwrap();
    assert_eq!(s.inner.finds(), finds);
    s.clock.advance(Duration::from_millis(1));
    s.api.verify(presented).await.unwrap();
    assert_eq!(s.inner.finds(), finds + 1);
    s.api.verify(presented).await.unwrap();
    assert_eq!(s.inner.finds(), finds + 1);
}

#[tokio::test]
async fn the_cache_holds_at_most_max_entries() {
    let s = setup_with(
        profiles::mailjawn(),
        Counting::default(),
        CacheConfig {
            max_entries: 8,
            ..config()
        },
    );
    for n in 0..50 {
        let lookup = format!("lk{n:03}");
        s.inner
            .insert_key(record(n, &lookup), None, OffsetDateTime::UNIX_EPOCH)
            .await
            .unwrap();
        assert_eq!(s.cached.find_by_lookup(&lookup).await.unwrap().len(), 1);
        assert!(s.cached.len() <= 8, "{} entries", s.cached.len());
    }
    assert_eq!(s.cached.len(), 8);
    assert_eq!(s.cached.stats().entries, 8);
    // The latest answer is among those kept.
    let finds = s.inner.finds();
    s.cached.find_by_lookup("lk049").await.unwrap();
    assert_eq!(s.inner.finds(), finds);
}

#[tokio::test]
async fn expired_answers_are_evicted_before_fresh_ones() {
    let s = setup_with(
        profiles::mailjawn(),
        Counting::default(),
        CacheConfig {
            max_entries: 4,
            ..config()
        },
    );
    for n in 0..4 {
        let lookup = format!("lk{n}");
        s.inner
            .insert_key(record(n, &lookup), None, OffsetDateTime::UNIX_EPOCH)
            .await
            .unwrap();
    }
    for lookup in ["lk0", "lk1", "lk2", "lk_unknown"] {
        s.cached.find_by_lookup(lookup).await.unwrap();
    }
    assert_eq!(s.cached.len(), 4);
    // The negative answer expires; the three positive ones do not.
    s.clock.advance(NEGATIVE_TTL);
    s.cached.find_by_lookup("lk3").await.unwrap();
    let finds = s.inner.finds();
    for lookup in ["lk0", "lk1", "lk2", "lk3"] {
        assert_eq!(s.cached.find_by_lookup(lookup).await.unwrap().len(), 1);
    }
    assert_eq!(s.inner.finds(), finds);
    assert_eq!(s.cached.len(), 4);
}

#[tokio::test]
async fn a_zero_max_entries_caches_nothing() {
    let s = setup_with(
        profiles::mailjawn(),
        Counting::default(),
        CacheConfig {
            max_entries: 0,
            ..config()
        },
    );
    let key = new_key(&s.api).await;
    let finds = s.inner.finds();
    for _ in 0..3 {
        s.api.verify(key.key.expose_secret()).await.unwrap();
    }
    assert_eq!(s.inner.finds(), finds + 3);
    assert!(s.cached.is_empty());
}

#[tokio::test]
async fn revoking_through_the_cache_takes_effect_at_once() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    let presented = key.key.expose_secret();
    s.api.verify(presented).await.unwrap();
    s.api.verify(presented).await.unwrap();
    assert_eq!(s.cached.stats().hits, 1);
    s.api.as_account(&org()).revoke(&key.info.id).await.unwrap();
    assert_eq!(
        s.api.verify(presented).await.unwrap_err(),
        AuthError::Revoked
    );
}

#[tokio::test]
async fn a_secret_reset_through_the_cache_takes_effect_at_once() {
    let s = setup(profiles::mailjet());
    let key = s
        .api
        .as_account(&org())
        .create(&org(), CreateKey::new("main"))
        .await
        .unwrap();
    let public = key.key.public_key().unwrap().to_owned();
    let old = key.key.expose_secret().to_owned();
    s.api.verify_pair(&public, &old).await.unwrap();
    s.api.verify_pair(&public, &old).await.unwrap();
    assert_eq!(s.cached.stats().hits, 1);
    let reset = s
        .api
        .as_account(&org())
        .reset_secret(&key.info.id)
        .await
        .unwrap();
    assert_eq!(
        s.api.verify_pair(&public, &old).await.unwrap_err(),
        AuthError::Invalid
    );
    let p = s
        .api
        .verify_pair(&public, reset.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(p.key_id(), &key.info.id);
}

#[tokio::test]
async fn a_token_reset_through_the_cache_retires_the_old_lookup_at_once() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    let old = key.key.expose_secret();
    s.api.verify(old).await.unwrap();
    s.api.verify(old).await.unwrap();
    assert_eq!(s.cached.stats().hits, 1);
    let reset = s
        .api
        .as_account(&org())
        .reset_secret(&key.info.id)
        .await
        .unwrap();
    assert_ne!(reset.key.lookup(), key.key.lookup());
    assert_eq!(s.api.verify(old).await.unwrap_err(), AuthError::Invalid);
    let p = s.api.verify(reset.key.expose_secret()).await.unwrap();
    assert_eq!(p.key_id(), &key.info.id);
}

#[tokio::test]
async fn a_rotation_through_the_cache_takes_effect_at_once() {
    let s = setup(profiles::mailjawn());
    let first = new_key(&s.api).await;
    s.api.verify(first.key.expose_secret()).await.unwrap();
    s.api.verify(first.key.expose_secret()).await.unwrap();
    let second = s
        .api
        .as_account(&org())
        .rotate(&first.info.id, Rotation::Immediate)
        .await
        .unwrap();
    assert_eq!(
        s.api.verify(first.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
    s.api.verify(second.key.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn management_reads_always_ask_the_inner_store() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    s.api.verify(key.key.expose_secret()).await.unwrap();
    // Revoked behind the cache's back: the cached verify answer is stale, but
    // get and list are not.
    s.inner
        .revoke_key(&key.info.id, s.clock.now())
        .await
        .unwrap();
    assert!(s.api.verify(key.key.expose_secret()).await.is_ok());
    let got = s.cached.get_key(&key.info.id).await.unwrap().unwrap();
    assert!(got.record().revoked_at.is_some());
    let listed = s
        .cached
        .list_keys(&org(), &ListQuery::default())
        .await
        .unwrap();
    assert!(listed.is_empty());
}

#[tokio::test]
async fn invalidations_make_the_next_lookup_ask_the_inner_store() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    let presented = key.key.expose_secret();
    s.api.verify(presented).await.unwrap();
    s.inner
        .revoke_key(&key.info.id, s.clock.now())
        .await
        .unwrap();
    // What a change feed does on a notification for this lookup id.
    s.cached.invalidate_lookup(key.key.lookup());
    assert_eq!(
        s.api.verify(presented).await.unwrap_err(),
        AuthError::Revoked
    );

    let other = new_key(&s.api).await;
    s.api.verify(other.key.expose_secret()).await.unwrap();
    s.inner
        .revoke_key(&other.info.id, s.clock.now())
        .await
        .unwrap();
    s.cached.invalidate_all();
    assert_eq!(
        s.api.verify(other.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );

    let third = new_key(&s.api).await;
    s.api.verify(third.key.expose_secret()).await.unwrap();
    s.inner
        .revoke_key(&third.info.id, s.clock.now())
        .await
        .unwrap();
    s.cached.invalidate_key(&third.info.id);
    assert_eq!(
        s.api.verify(third.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
}

#[tokio::test]
async fn a_bypassed_cache_sends_every_lookup_to_the_inner_store() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    let presented = key.key.expose_secret();
    s.api.verify(presented).await.unwrap();
    s.cached.set_bypass(true);
    assert!(s.cached.is_bypassed());
    let finds = s.inner.finds();
    let hits = s.cached.stats().hits;
    for _ in 0..3 {
        s.api.verify(presented).await.unwrap();
    }
    assert_eq!(s.inner.finds(), finds + 3);
    assert_eq!(s.cached.stats().hits, hits);
    s.cached.set_bypass(false);
    assert!(!s.cached.is_bypassed());
    s.api.verify(presented).await.unwrap();
    s.api.verify(presented).await.unwrap();
    assert_eq!(s.inner.finds(), finds + 4);
    assert_eq!(s.cached.stats().hits, hits + 1);
}

#[tokio::test]
async fn an_invalidation_during_a_lookup_is_not_undone_by_its_answer() {
    let s = setup(profiles::mailjawn());
    let key = new_key(&s.api).await;
    let presented = key.key.expose_secret().to_owned();
    let (read, release) = s.inner.hold_next();
    let api = s.api.clone();
    let lookup = tokio::spawn(async move { api.verify(&presented).await });
    // The lookup has read the key as active; now it is revoked and announced.
    read.await.unwrap();
    s.inner
        .revoke_key(&key.info.id, s.clock.now())
        .await
        .unwrap();
    s.cached.invalidate_lookup(key.key.lookup());
    release.send(()).unwrap();
    // That lookup answers what it read; the next one must not reuse it.
    assert!(lookup.await.unwrap().is_ok());
    assert_eq!(
        s.api.verify(key.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
}

#[tokio::test]
async fn rate_limits_survive_a_refresh_of_the_cached_entry() {
    // Entries fresh per lookup, as the SQL stores hand them out.
    let s = setup_with(
        profiles::mailjawn(),
        Counting {
            fresh_entries: true,
            ..Counting::default()
        },
        CacheConfig {
            ttl: Duration::from_secs(1),
            ..config()
        },
    );
    let key = s
        .api
        .as_account(&org())
        .create(
            &org(),
            CreateKey::new("sender")
                .bundle("mcp")
                .rate_limit("send", Quota::per_minute(2).unwrap()),
        )
        .await
        .unwrap();
    let send = s.api.operation("send").unwrap();
    let presented = key.key.expose_secret();
    for _ in 0..2 {
        s.api.verify_for(presented, &send).await.unwrap();
    }
    let over = |r: Result<keygate::Principal, AuthError>| {
        assert!(
            matches!(r, Err(AuthError::RateLimited { .. })),
            "expected 429, got {r:?}"
        )
    };
    over(s.api.verify_for(presented, &send).await);
    // The cached answer expires and is read again: the bucket carries over.
    let finds = s.inner.finds();
    s.clock.advance(Duration::from_secs(1));
    over(s.api.verify_for(presented, &send).await);
    assert_eq!(s.inner.finds(), finds + 1);
    // So it does across an invalidation and while bypassed.
    s.cached.invalidate_all();
    over(s.api.verify_for(presented, &send).await);
    s.cached.set_bypass(true);
    over(s.api.verify_for(presented, &send).await);
    over(s.api.verify_for(presented, &send).await);
    assert_eq!(s.inner.finds(), finds + 4);
}
