//! Two service instances on one PostgreSQL schema, each with its own
//! connection pool and its own `CachedStore` following the store's change
//! notifications: a revocation, secret reset or rotation on one fails the old
//! credential on the other within 100 ms, though the other had it cached; and
//! a lost notification connection bypasses the cache until it is back. With
//! the `redis` feature, both instances also share one Redis rate limiter and
//! together admit exactly one key's quota.
//!
//! Skipped when PostgreSQL (or Redis) is unreachable, unless
//! `KEYGATE_REQUIRE_SERVICES=1`.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use keygate::store::{ChangeFollower, FollowConfig, KeyRecord};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CachedStore, CreateIdentity, CreateKey,
    IdentityUpdate, KeyId, KeyStore, NewKey, Pepper, PostgresStore, Principal, Profile, Rotation,
};
use rand::Rng;
use time::OffsetDateTime;
use tokio::time::Instant;

/// How soon a change on one instance must be seen on the other.
const PROPAGATION: Duration = Duration::from_millis(100);

/// Generous bounds for things that only guard a hung test.
const LISTEN_BOUND: Duration = Duration::from_secs(10);

struct Instance {
    api: ApiKeys,
    cached: CachedStore,
    store: Arc<PostgresStore>,
    follower: ChangeFollower,
}

impl Instance {
    /// A service on its own pool and cache, listening for changes.
    async fn start(pg: &support::TestPostgres, profile: Profile, follow: FollowConfig) -> Self {
        Self::start_with(pg, profile, follow, None::<keygate::LocalRateLimiter>).await
    }

    /// Like [`start`](Self::start), taking rate-limit decisions from `limiter`.
    async fn start_with(
        pg: &support::TestPostgres,
        profile: Profile,
        follow: FollowConfig,
        limiter: Option<impl keygate::RateLimiter + 'static>,
    ) -> Self {
        let store = Arc::new(
            PostgresStore::connect_with_schema(pg.url(), pg.schema())
                .await
                .expect("connect"),
        );
        let cached = CachedStore::new(store.clone());
        let follower = cached.follow_postgres_with(&store, follow);
        assert!(cached.is_bypassed(), "bypassed until the first LISTEN");
        wait_until("the follower listens", || !cached.is_bypassed()).await;
        let mut builder = ApiKeys::builder(profile)
            .store(Arc::new(cached.clone()))
            .pepper(Pepper::new(1, [9u8; 32]).unwrap());
        if let Some(limiter) = limiter {
            builder = builder.rate_limiter(limiter);
        }
        let api = builder.build().unwrap();
        Self {
            api,
            cached,
            store,
            follower,
        }
    }

    async fn stop(self) {
        self.follower.shutdown().await;
        assert!(
            self.cached.is_bypassed(),
            "a stopped follower leaves it bypassed"
        );
        self.store.pool().close().await;
    }
}

/// Two instances on the schema of `pg`.
async fn pair(pg: &support::TestPostgres, profile: Profile) -> (Instance, Instance) {
    let a = Instance::start(pg, profile.clone(), FollowConfig::default()).await;
    let b = Instance::start(pg, profile, FollowConfig::default()).await;
    (a, b)
}

/// A credential as a client presents it.
enum Presented {
    Token(String),
    Pair(String, String),
}

impl Presented {
    fn of(key: &NewKey) -> Self {
        match key.key.public_key() {
            Some(public) => Self::Pair(public.to_owned(), key.key.expose_secret().to_owned()),
            None => Self::Token(key.key.expose_secret().to_owned()),
        }
    }

    async fn verify(&self, api: &ApiKeys) -> Result<Principal, AuthError> {
        match self {
            Self::Token(t) => api.verify(t).await,
            Self::Pair(public, secret) => api.verify_pair(public, secret).await,
        }
    }
}

fn org() -> AccountId {
    AccountId::new("org_multi").unwrap()
}

/// Creates a key for [`org`] on `instance`.
async fn create(instance: &Instance, request: CreateKey) -> NewKey {
    instance
        .api
        .as_account(&org())
        .create(&org(), request)
        .await
        .unwrap()
}

/// Creates a key on `a` and warms both caches with it.
async fn warmed_on_both(a: &Instance, b: &Instance, request: CreateKey) -> (NewKey, Presented) {
    let key = create(a, request).await;
    let presented = Presented::of(&key);
    warm(a, &presented).await;
    warm(b, &presented).await;
    (key, presented)
}

/// Stops both instances and drops the schema.
async fn stop_both(pg: support::TestPostgres, a: Instance, b: Instance) {
    a.stop().await;
    b.stop().await;
    pg.cleanup().await;
}

/// Verifies on `instance` until an answer comes from its cache. (The first
/// answer may be evicted again by the notification of the key's creation.)
async fn warm(instance: &Instance, presented: &Presented) {
    let start = Instant::now();
    loop {
        let hits = instance.cached.stats().hits;
        presented.verify(&instance.api).await.expect("verifies");
        if instance.cached.stats().hits > hits {
            return;
        }
        assert!(
            start.elapsed() < LISTEN_BOUND,
            "never served from the cache"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `presented` on `instance` every few milliseconds until it fails
/// with `expected`; panics if it still does not after [`PROPAGATION`].
async fn fails_within_propagation(instance: &Instance, presented: &Presented, expected: AuthError) {
    let start = Instant::now();
    loop {
        let result = presented.verify(&instance.api).await;
        if result.as_ref().err() == Some(&expected) {
            return;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "after {:?} the other instance still answers {result:?}, expected {expected:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `condition` every 2 ms; panics if it does not hold after
/// [`PROPAGATION`].
async fn within_propagation<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < PROPAGATION,
            "after {:?} still not: {what}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `condition` every 5 ms; panics after [`LISTEN_BOUND`].
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < LISTEN_BOUND,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn a_revocation_on_one_instance_fails_the_key_on_the_other_within_100ms() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let (a, b) = pair(&pg, profiles::mailjawn()).await;
    let (key, presented) = warmed_on_both(&a, &b, CreateKey::new("ci").bundle("sdk")).await;

    a.api.as_account(&org()).revoke(&key.info.id).await.unwrap();
    assert_eq!(
        presented.verify(&a.api).await.unwrap_err(),
        AuthError::Revoked
    );
    fails_within_propagation(&b, &presented, AuthError::Revoked).await;

    stop_both(pg, a, b).await;
}

pub(crate) async fn a_disable_and_enable_on_one_instance_reach_the_other_within_100ms() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let (a, b) = pair(&pg, profiles::mailjawn()).await;
    let (key, presented) = warmed_on_both(&a, &b, CreateKey::new("ci").bundle("sdk")).await;

    a.api
        .as_account(&org())
        .disable(&key.info.id)
        .await
        .unwrap();
    assert_eq!(
        presented.verify(&a.api).await.unwrap_err(),
        AuthError::Disabled
    );
    fails_within_propagation(&b, &presented, AuthError::Disabled).await;

    a.api.as_account(&org()).enable(&key.info.id).await.unwrap();
    within_propagation("the other instance accepts the enabled key", || async {
        presented.verify(&b.api).await.is_ok()
    })
    .await;

    stop_both(pg, a, b).await;
}

pub(crate) async fn two_instances_spending_one_keys_credits_admit_exactly_the_credits() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let (a, b) = pair(&pg, profiles::mailjawn()).await;
    let (key, _) = warmed_on_both(&a, &b, CreateKey::new("trial").bundle("sdk").credits(30)).await;
    let presented = key.key.expose_secret().to_owned();
    // Plain verifies spend nothing; each request below spends one credit.
    let op = keygate::Operation::unrestricted();
    let mut tasks = Vec::new();
    for n in 0..80 {
        let api = if n % 2 == 0 {
            a.api.clone()
        } else {
            b.api.clone()
        };
        let (op, presented) = (op.clone(), presented.clone());
        tasks.push(tokio::spawn(async move {
            api.verify_for(&presented, &op).await
        }));
    }
    let mut left = std::collections::BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => assert!(
                left.insert(p.credits_remaining().unwrap()),
                "a credit spent twice"
            ),
            Err(AuthError::UsageExceeded { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(left, (0..30).collect());
    assert_eq!(refused, 50);

    stop_both(pg, a, b).await;
}

pub(crate) async fn two_instances_spending_one_identitys_credits_through_many_keys_admit_exactly_the_credits(
) {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let (a, b) = pair(&pg, profiles::mailjawn()).await;
    let acme = a
        .api
        .as_account(&org())
        .create_identity(&org(), CreateIdentity::new("acme").credits(30))
        .await
        .unwrap();
    let mut keys = Vec::new();
    for n in 0..4 {
        let request = CreateKey::new(format!("k{n}"))
            .bundle("sdk")
            .identity(acme.id.clone());
        let (key, _) = warmed_on_both(&a, &b, request).await;
        keys.push(key.key.expose_secret().to_owned());
    }
    let op = keygate::Operation::unrestricted();
    let mut tasks = Vec::new();
    for n in 0..80 {
        let api = if n % 2 == 0 {
            a.api.clone()
        } else {
            b.api.clone()
        };
        let (op, presented) = (op.clone(), keys[n % 4].clone());
        tasks.push(tokio::spawn(async move {
            api.verify_for(&presented, &op).await
        }));
    }
    let mut left = std::collections::BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => assert!(
                left.insert(p.identity_credits_remaining().unwrap()),
                "a credit spent twice"
            ),
            Err(AuthError::UsageExceeded { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(left, (0..30).collect());
    assert_eq!(refused, 50);

    // An identity change on one instance reaches the other's cached keys.
    let gold = keygate::Metadata::from_value(serde_json::json!({"tier": "gold"})).unwrap();
    a.api
        .operator()
        .update_identity(&acme.id, IdentityUpdate::new().metadata(gold.clone()))
        .await
        .unwrap();
    let presented = keys[0].clone();
    within_propagation("the identity change", || {
        let (api, presented, gold) = (b.api.clone(), presented.clone(), gold.clone());
        async move {
            api.verify(&presented)
                .await
                .is_ok_and(|p| p.identity().is_some_and(|i| i.metadata == gold))
        }
    })
    .await;

    stop_both(pg, a, b).await;
}

pub(crate) async fn a_secret_reset_on_one_instance_fails_the_old_secret_on_the_other_within_100ms()
{
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let (a, b) = pair(&pg, profiles::mailjet()).await;
    let (key, old) = warmed_on_both(&a, &b, CreateKey::new("main")).await;

    let reset = a
        .api
        .as_account(&org())
        .reset_secret(&key.info.id)
        .await
        .unwrap();
    assert_eq!(reset.key.public_key(), key.key.public_key());
    fails_within_propagation(&b, &old, AuthError::Invalid).await;
    let p = Presented::of(&reset).verify(&b.api).await.unwrap();
    assert_eq!(p.key_id(), &key.info.id);

    stop_both(pg, a, b).await;
}

pub(crate) async fn a_rotation_on_one_instance_fails_the_old_key_on_the_other_within_100ms() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let (a, b) = pair(&pg, profiles::mailjawn()).await;
    let (first, old) = warmed_on_both(&a, &b, CreateKey::new("ci").bundle("sdk")).await;

    let second = a
        .api
        .as_account(&org())
        .rotate(&first.info.id, Rotation::Immediate)
        .await
        .unwrap();
    fails_within_propagation(&b, &old, AuthError::Revoked).await;
    let p = Presented::of(&second).verify(&b.api).await.unwrap();
    assert_eq!(p.name(), "ci");

    stop_both(pg, a, b).await;
}

pub(crate) async fn a_key_created_on_one_instance_clears_the_others_negative_answer() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let (a, b) = pair(&pg, profiles::mailjawn()).await;
    let lookup = "lk_later";
    assert!(b.cached.find_by_lookup(lookup).await.unwrap().is_empty());
    let misses = b.cached.stats().misses;
    assert!(b.cached.find_by_lookup(lookup).await.unwrap().is_empty());
    assert_eq!(
        b.cached.stats().misses,
        misses,
        "the negative answer is cached"
    );

    let now = OffsetDateTime::now_utc();
    let record = KeyRecord {
        bundle: Some("sdk".into()),
        created_at: now,
        secret_set_at: now,
        ..support::key_record(
            KeyId::new("key_later"),
            org(),
            "later".into(),
            lookup.into(),
            keygate::hash::SecretHash::from_parts(1, [3; 32]),
        )
    };
    a.cached
        .insert_key(record, None, OffsetDateTime::now_utc())
        .await
        .unwrap();
    within_propagation("the new key is known", || async {
        !b.cached.find_by_lookup(lookup).await.unwrap().is_empty()
    })
    .await;

    stop_both(pg, a, b).await;
}

/// README, Running several instances, row "the notification connection is
/// lost": the cache is bypassed until the follower listens again.
pub(crate) async fn a_lost_notification_connection_bypasses_the_cache_until_it_is_back() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let name = format!("keygate_test_{:08x}", rand::thread_rng().gen::<u32>());
    let follow = FollowConfig::default()
        .with_application_name(name.clone())
        // Long enough to act while disconnected.
        .with_reconnect_delay(Duration::from_millis(300));
    let b = Instance::start(&pg, profiles::mailjawn(), follow).await;
    let store = pg.postgres();
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let key = create(&b, CreateKey::new(name).bundle("sdk")).await;
        warm(&b, &Presented::of(&key)).await;
        keys.push(key);
    }

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND query ILIKE 'LISTEN%' AND strpos(query, $2) > 0",
    )
    .bind(&name)
    .bind(b.follower.channel())
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(killed, [true], "exactly the listener's backend");
    wait_until("the cache is bypassed", || b.cached.is_bypassed()).await;

    // Revoked on the store, behind every cache, while nobody listens: the
    // notification is lost, yet the bypassed cache cannot answer from memory.
    let one = Presented::of(&keys[0]);
    let misses = b.cached.stats().misses;
    store
        .revoke_key(&keys[0].info.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(one.verify(&b.api).await.unwrap_err(), AuthError::Revoked);
    assert!(b.cached.stats().misses > misses);

    wait_until("the follower listens again", || !b.cached.is_bypassed()).await;
    let two = Presented::of(&keys[1]);
    warm(&b, &two).await;
    store
        .revoke_key(&keys[1].info.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    fails_within_propagation(&b, &two, AuthError::Revoked).await;

    b.stop().await;
    pg.cleanup().await;
}

/// README, Running several instances, row "the notification connection hangs
/// without closing": on a quiet channel only heartbeats confirm the
/// connection, so a cache that is still in use after several leases of
/// silence, on the same listener connection, was kept in use by them.
pub(crate) async fn heartbeats_on_a_quiet_connection_keep_the_cache_in_use() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    // A heartbeat round trip that takes longer than the heartbeat counts as
    // a lost connection, so the heartbeat is long enough for a round trip on
    // a loaded machine, and many times shorter than the lease.
    let lease = Duration::from_millis(400);
    let name = format!("keygate_test_{:08x}", rand::thread_rng().gen::<u32>());
    let follow = FollowConfig::default()
        .with_lease(lease)
        .with_heartbeat(Duration::from_millis(100))
        .with_application_name(name.clone());
    let a = Instance::start(&pg, profiles::mailjawn(), FollowConfig::default()).await;
    let key = create(&a, CreateKey::new("ci").bundle("sdk")).await;
    // Started after the key's creation committed, `b` never hears of it, so
    // nothing but a lapse can evict the key from its cache.
    let b = Instance::start(&pg, profiles::mailjawn(), follow).await;
    let presented = Presented::of(&key);
    warm(&b, &presented).await;
    let listener = listener_pid(&pg, &name).await;
    // Quiet for three leases: without a heartbeat round trip on the
    // listener's connection in each lease, the cache would be bypassed.
    tokio::time::sleep(3 * lease).await;
    assert!(!b.cached.is_bypassed(), "the heartbeats renewed the lease");
    assert_eq!(
        listener_pid(&pg, &name).await,
        listener,
        "the heartbeats kept the one listener connection"
    );
    let hits = b.cached.stats().hits;
    presented.verify(&b.api).await.unwrap();
    assert!(b.cached.stats().hits > hits, "answered from the cache");
    a.api.as_account(&org()).revoke(&key.info.id).await.unwrap();
    fails_within_propagation(&b, &presented, AuthError::Revoked).await;

    stop_both(pg, a, b).await;
}

/// Rounds of [`strict_revocation_leaves_no_success_on_the_other_instance_after_it_returns`].
const STRICT_ROUNDS: usize = 50;

/// Revokes a key on `a` while a task verifies it on `b` in a tight loop;
/// returns how many of `b`'s successes started after the revoke returned,
/// and how long the revoke took.
async fn successes_after_revoke(a: &Instance, b: &Instance) -> (usize, Duration) {
    let (key, presented) = warmed_on_both(a, b, CreateKey::new("ci").bundle("sdk")).await;
    let started = Arc::new(parking_lot::Mutex::new(Vec::<Instant>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (api, started, stop) = (b.api.clone(), started.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let start = Instant::now();
                if presented.verify(&api).await.is_ok() {
                    started.lock().push(start);
                }
                round += 1;
                if round.is_multiple_of(64) {
                    // Lets the runtime's other tasks run on a busy machine.
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // The hammer is running and answered from the cache.
    wait_until("the other instance verifies", || !started.lock().is_empty()).await;
    let revoking = Instant::now();
    a.api.as_account(&org()).revoke(&key.info.id).await.unwrap();
    let returned = Instant::now();
    // Long enough for the notification to reach `b` in any case.
    tokio::time::sleep(PROPAGATION).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    hammer.await.unwrap();
    let late = started.lock().iter().filter(|s| **s > returned).count();
    (late, returned - revoking)
}

/// Issue 15: with strict revocation, a revoked key never gets a success on
/// either instance after its revoke returned, though the other instance had
/// it cached and verifies it in a tight loop while the revoke runs.
pub(crate) async fn strict_revocation_leaves_no_success_on_the_other_instance_after_it_returns() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    // A short lease keeps the rounds short; heartbeats that come back late
    // only bypass the cache, which cannot make a success.
    let follow = FollowConfig::default()
        .with_lease(Duration::from_millis(250))
        .with_heartbeat(Duration::from_millis(60))
        .with_strict_revocation(true);
    let wait = follow.strict_wait().unwrap();
    let a = Instance::start(&pg, profiles::mailjawn(), follow.clone()).await;
    let b = Instance::start(&pg, profiles::mailjawn(), follow).await;
    let mut late = Vec::new();
    for round in 0..STRICT_ROUNDS {
        let (n, took) = successes_after_revoke(&a, &b).await;
        if n > 0 {
            late.push((round, n));
        }
        assert!(
            took >= wait,
            "the revoke returned after {took:?}, before {wait:?}"
        );
    }
    assert!(
        late.is_empty(),
        "(round, successes on the other instance after the revoke returned): {late:?}"
    );
    stop_both(pg, a, b).await;
}

/// The backend process id of the one connection named `application_name`.
async fn listener_pid(pg: &support::TestPostgres, application_name: &str) -> i32 {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(application_name)
            .fetch_all(pg.postgres().pool())
            .await
            .unwrap();
    assert_eq!(pids.len(), 1, "one listener connection: {pids:?}");
    pids[0]
}

/// Two instances on one Postgres schema sharing one Redis key prefix.
#[cfg(feature = "redis")]
async fn shared_pair() -> Option<(
    support::TestPostgres,
    support::TestRedis,
    Instance,
    Instance,
)> {
    let pg = support::postgres_store().await?;
    let redis = support::TestRedis::get().await?;
    let a = Instance::start_with(
        &pg,
        profiles::mailjawn(),
        FollowConfig::default(),
        Some(redis.limiter().await),
    )
    .await;
    let b = Instance::start_with(
        &pg,
        profiles::mailjawn(),
        FollowConfig::default(),
        Some(redis.limiter().await),
    )
    .await;
    Some((pg, redis, a, b))
}

/// A key whose `send` quota is 10 per minute, so no token refills during a test.
#[cfg(feature = "redis")]
async fn ten_per_minute(a: &Instance) -> String {
    let key = create(
        a,
        CreateKey::new("sender").bundle("full_access").rate_limit(
            "send",
            keygate::Quota::per_minute(std::num::NonZeroU32::new(10).unwrap()),
        ),
    )
    .await;
    key.key.expose_secret().to_owned()
}

#[cfg(feature = "redis")]
pub(crate) async fn forty_requests_over_two_instances_admit_exactly_the_quota_of_ten() {
    let Some((pg, redis, a, b)) = shared_pair().await else {
        return;
    };
    let key = ten_per_minute(&a).await;
    let (send_a, send_b) = (
        a.api.operation("send").unwrap(),
        b.api.operation("send").unwrap(),
    );
    let mut admitted = 0;
    for i in 0..40 {
        let (api, op) = if i % 2 == 0 {
            (&a.api, &send_a)
        } else {
            (&b.api, &send_b)
        };
        match api.verify_for(&key, op).await {
            Ok(_) => admitted += 1,
            Err(AuthError::RateLimited { decision }) => assert!(decision.retry_after.is_some()),
            Err(other) => panic!("request {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(admitted, 10);
    a.stop().await;
    b.stop().await;
    redis.cleanup().await;
    pg.cleanup().await;
}

#[cfg(feature = "redis")]
pub(crate) async fn concurrent_load_from_both_instances_never_exceeds_the_quota() {
    let Some((pg, redis, a, b)) = shared_pair().await else {
        return;
    };
    let key: Arc<str> = ten_per_minute(&a).await.into();
    let mut tasks = Vec::new();
    for api in [a.api.clone(), b.api.clone()] {
        for _ in 0..4 {
            let (api, key) = (api.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let send = api.operation("send").unwrap();
                let mut admitted = 0u32;
                for _ in 0..25 {
                    match api.verify_for(&key, &send).await {
                        Ok(_) => admitted += 1,
                        Err(AuthError::RateLimited { .. }) => {}
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
                admitted
            }));
        }
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 10, "200 concurrent requests over two instances");
    a.stop().await;
    b.stop().await;
    redis.cleanup().await;
    pg.cleanup().await;
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::multi(2)) a_revocation_on_one_instance_fails_the_key_on_the_other_within_100ms,
        tokio(Rt::multi(2)) a_disable_and_enable_on_one_instance_reach_the_other_within_100ms,
        tokio(Rt::multi(2)) two_instances_spending_one_keys_credits_admit_exactly_the_credits,
        tokio(Rt::multi(2)) two_instances_spending_one_identitys_credits_through_many_keys_admit_exactly_the_credits,
        tokio(Rt::multi(2)) a_secret_reset_on_one_instance_fails_the_old_secret_on_the_other_within_100ms,
        tokio(Rt::multi(2)) a_rotation_on_one_instance_fails_the_old_key_on_the_other_within_100ms,
        tokio(Rt::multi(2)) a_key_created_on_one_instance_clears_the_others_negative_answer,
        tokio(Rt::multi(2)) a_lost_notification_connection_bypasses_the_cache_until_it_is_back,
        tokio(Rt::multi(2)) heartbeats_on_a_quiet_connection_keep_the_cache_in_use,
        tokio(Rt::multi(2)) strict_revocation_leaves_no_success_on_the_other_instance_after_it_returns,
        tokio(Rt::multi(2)) forty_requests_over_two_instances_admit_exactly_the_quota_of_ten,
        tokio(Rt::multi(2)) concurrent_load_from_both_instances_never_exceeds_the_quota,
    ]);
    support::harness::run(trials)
}
