//! `CachedStore` in one process: hits ask the inner store nothing, unknown
//! lookups are remembered briefly, answers expire, the cache stays bounded,
//! and changes made through it (or announced to it) take effect at once.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use keygate::hash::SecretHash;
use keygate::store::{AccountRecord, KeyChange, KeyEntry, KeyRecord, ListQuery, OldKey, Spend};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CacheConfig, CachedStore, Clock, CreateKey, KeyId,
    KeyStore, ManualClock, Pepper, Profile, Quota, Rotation, StoreError,
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
        .store(Arc::new(cached.clone()))
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
    CacheConfig::default()
        .with_max_entries(1_000)
        .with_ttl(TTL)
        .with_negative_ttl(NEGATIVE_TTL)
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
        created_at: OffsetDateTime::UNIX_EPOCH,
        secret_set_at: OffsetDateTime::UNIX_EPOCH,
        ..support::key_record(
            KeyId::new(format!("key_{n:06}")),
            org(),
            format!("key {n}"),
            lookup.into(),
            SecretHash::from_parts(1, [n as u8; 32]),
        )
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
    let stranger = s.api.profile().formats()[0].generate();
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
        config().with_max_entries(8),
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
        config().with_max_entries(4),
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
        config().with_max_entries(0),
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
        config().with_ttl(Duration::from_secs(1)),
    );
    let key = s
        .api
        .as_account(&org())
        .create(
            &org(),
            CreateKey::new("sender").bundle("mcp").rate_limit(
                "send",
                Quota::per_minute(std::num::NonZeroU32::new(2).unwrap()),
            ),
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

/// A `MemoryStore` whose next revocation lands only when the test says so,
/// after the caller has given up on it: a statement the database finishes
/// although the client has gone.
#[derive(Debug, Default)]
struct LandsLate {
    store: Arc<keygate::MemoryStore>,
    next: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl LandsLate {
    /// Holds the next revocation until the returned sender fires.
    fn hold_next_revoke(&self) -> tokio::sync::oneshot::Sender<()> {
        let (land, held) = tokio::sync::oneshot::channel();
        *self.next.lock().unwrap() = Some(held);
        land
    }
}

#[async_trait::async_trait]
impl KeyStore for LandsLate {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        self.store.create_account(account).await
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.store.get_account(id).await
    }

    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.store.insert_key(record, limit, now).await
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        self.store.find_by_lookup(lookup).await
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        self.store.get_key(id).await
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.store.list_keys(account, query).await
    }

    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        let held = self.next.lock().unwrap().take();
        let Some(held) = held else {
            return self.store.revoke_key(id, at).await;
        };
        let (store, id) = (self.store.clone(), id.clone());
        tokio::spawn(async move {
            if held.await.is_ok() {
                store.revoke_key(&id, at).await.unwrap();
            }
        });
        std::future::pending().await
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.store.replace_secret(id, lookup, hash, at).await
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        self.store.rotate_key(old, new, old_key).await
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError> {
        self.store.update_key(id, change).await
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        self.store.spend_credits(id, cost, now).await
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.store.record_last_used(uses).await
    }
}

#[tokio::test]
async fn a_cancelled_revocation_that_lands_later_is_not_hidden_by_the_cache() {
    let inner = Arc::new(LandsLate::default());
    let clock = ManualClock::new();
    let cached = CachedStore::builder(inner.clone())
        .config(config())
        .clock(clock.clone())
        .build();
    let key = record(1, "lk_late");
    cached
        .insert_key(key.clone(), None, clock.now())
        .await
        .unwrap();
    let revoked = |found: Vec<Arc<KeyEntry>>| found[0].record().revoked_at.is_some();
    assert!(!revoked(cached.find_by_lookup("lk_late").await.unwrap()));

    let land = inner.hold_next_revoke();
    let call = cached.revoke_key(&key.id, clock.now());
    let gave_up = tokio::time::timeout(Duration::from_millis(10), call).await;
    assert!(gave_up.is_err(), "the revocation was to be cancelled");
    // A lookup between the cancellation and the write landing reads the key
    // as it still is; that answer must not be kept.
    assert!(!revoked(cached.find_by_lookup("lk_late").await.unwrap()));
    land.send(()).unwrap();
    while inner
        .get_key(&key.id)
        .await
        .unwrap()
        .unwrap()
        .record()
        .revoked_at
        .is_none()
    {
        tokio::task::yield_now().await;
    }
    assert!(revoked(cached.find_by_lookup("lk_late").await.unwrap()));

    // For one TTL only: then the key is cached again.
    clock.advance(TTL);
    cached.find_by_lookup("lk_late").await.unwrap();
    let hits = cached.stats().hits;
    assert!(revoked(cached.find_by_lookup("lk_late").await.unwrap()));
    assert_eq!(cached.stats().hits, hits + 1);
}
