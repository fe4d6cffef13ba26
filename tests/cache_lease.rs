//! The cache's validity is leased, not assumed: an instance whose change
//! notification connection hangs without closing (here a relay the test
//! freezes) stops answering from memory within the lease, so a key revoked on
//! another instance is refused within that bound. Once the connection is
//! confirmed again, the cache serves again. Only heartbeats confirm the
//! connection, so notifications that keep arriving while heartbeats do not
//! come back cannot keep the cache in use. And with strict revocation, a
//! revoke waits out the lease, so not even the hung instance accepts the key
//! once the revoke has returned.

#[path = "support/mod.rs"]
mod support;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate::store::FollowConfig;
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CachedStore, CreateKey, Pepper, PostgresStore,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A TCP relay to PostgreSQL that can be frozen: while frozen it keeps every
/// connection open but passes no byte either way, as a hung network path does.
/// Freezing only the upstream direction passes what the server sends (such
/// as notifications) but none of the client's queries.
struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
    upstream_frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(target: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let upstream_frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let upstream_flag = upstream_frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect((target.0.as_str(), target.1)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, [flag.clone(), upstream_flag.clone()]));
                tokio::spawn(pump(sr, cw, [flag.clone(), flag.clone()]));
            }
        });
        Self {
            port,
            frozen,
            upstream_frozen,
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }

    fn freeze_upstream(&self, on: bool) {
        self.upstream_frozen.store(on, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: [Arc<AtomicBool>; 2],
) {
    let mut buf = vec![0u8; 16 * 1024];
    // Bounded: a test relay never outlives its test by much.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = match tokio::time::timeout_at(deadline, from.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        while frozen.iter().any(|f| f.load(Ordering::SeqCst)) {
            if Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn pepper() -> Pepper {
    Pepper::new(1, [6u8; 32]).unwrap()
}

/// Instance B: reads through a cache whose notifications come through a
/// relay; its own queries go directly to the database.
struct Relayed {
    relay: Relay,
    feed_store: PostgresStore,
    cached: CachedStore,
    follower: keygate::store::ChangeFollower,
    api: ApiKeys,
}

impl Relayed {
    async fn start(pg: &support::TestPostgres, config: FollowConfig) -> Self {
        let options = PgConnectOptions::from_str(pg.url()).unwrap();
        let target = (options.get_host().to_owned(), options.get_port());
        let relay = Relay::start(target).await;
        let through_relay = options
            .host("127.0.0.1")
            .port(relay.port)
            .options([("search_path", format!("\"{}\"", pg.schema()))]);
        let feed_store = PostgresStore::from_pool(
            PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(through_relay),
        )
        .with_channel(pg.postgres().channel())
        .unwrap();
        let cached = CachedStore::new(pg.store());
        let follower = cached.follow_postgres_with(&feed_store, config);
        let api = ApiKeys::builder(profiles::mailjawn())
            .store(cached.clone())
            .pepper(pepper())
            .build()
            .unwrap();
        let listening = Instant::now() + Duration::from_secs(10);
        while cached.is_bypassed() {
            assert!(Instant::now() < listening, "the follower never listened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            relay,
            feed_store,
            cached,
            follower,
            api,
        }
    }

    async fn stop(self) {
        self.relay.freeze(false);
        self.relay.freeze_upstream(false);
        self.follower.shutdown().await;
        self.feed_store.pool().close().await;
    }
}

/// README, Running several instances, row "the notification connection
/// hangs without closing": the cache serves from memory only within the lease.
pub(crate) async fn a_hung_notification_connection_stops_the_cache_within_the_lease() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let org = AccountId::new("org_lease").unwrap();

    // Instance A: writes directly.
    let a = ApiKeys::builder(profiles::mailjawn())
        .store(pg.store())
        .pepper(pepper())
        .build()
        .unwrap();

    let config = FollowConfig::default();
    let lease = config.lease;
    let Relayed {
        relay,
        feed_store,
        cached,
        follower,
        api: b,
    } = Relayed::start(&pg, config).await;

    let key = a
        .operator()
        .create(&org, CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let text = key.key.expose_secret().to_owned();
    // Let the creation's own notification reach B first, so what B serves
    // below comes from a cache entry no notification will evict.
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.verify(&text).await.unwrap();
    b.verify(&text).await.unwrap();
    assert!(cached.stats().hits >= 1, "B answers from its cache");

    // The notification path hangs; then A revokes the key.
    relay.freeze(true);
    a.operator().revoke(&key.info.id).await.unwrap();
    let revoked_at = Instant::now();
    let refused = loop {
        match b.verify(&text).await {
            Err(AuthError::Revoked) => break revoked_at.elapsed(),
            Ok(_) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(
            revoked_at.elapsed() < lease * 3,
            "a revoked key kept verifying from the cache past the lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("revocation refused on the hung instance after {refused:?} (lease {lease:?})");
    assert!(
        refused <= lease + Duration::from_millis(200),
        "refused after {refused:?}, past the {lease:?} lease"
    );

    // The path recovers: the cache is confirmed and used again.
    relay.freeze(false);
    let back = Instant::now() + Duration::from_secs(15);
    while cached.is_bypassed() {
        assert!(Instant::now() < back, "the cache never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = a
        .operator()
        .create(&org, CreateKey::new("k2").bundle("sdk"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hits = cached.stats().hits;
    b.verify(fresh.key.expose_secret()).await.unwrap();
    b.verify(fresh.key.expose_secret()).await.unwrap();
    assert!(cached.stats().hits > hits, "serving from memory again");

    Relayed {
        relay,
        feed_store,
        cached,
        follower,
        api: b,
    }
    .stop()
    .await;
    pg.cleanup().await;
}

/// Notifications keep arriving while no heartbeat comes back (the relay
/// passes what the server sends, but none of the listener's queries): only
/// heartbeats confirm the connection, and they are sent however busy the
/// channel is, so the cache stops answering from memory within two
/// heartbeats and stays so while the notifications go on.
pub(crate) async fn notifications_without_heartbeats_do_not_keep_the_cache_in_use() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let org = AccountId::new("org_lease").unwrap();
    let a = ApiKeys::builder(profiles::mailjawn())
        .store(pg.store())
        .pepper(pepper())
        .build()
        .unwrap();
    let lease = Duration::from_millis(600);
    let heartbeat = Duration::from_millis(150);
    let b = Relayed::start(
        &pg,
        FollowConfig::default()
            .with_lease(lease)
            .with_heartbeat(heartbeat),
    )
    .await;

    // A steady stream of notifications: a key created every 20 ms.
    let busy = Arc::new(AtomicBool::new(true));
    let writer = {
        let (a, busy, org) = (a.clone(), busy.clone(), org.clone());
        tokio::spawn(async move {
            let mut created = 0u32;
            while busy.load(Ordering::SeqCst) {
                a.operator()
                    .create(&org, CreateKey::new("busy").bundle("sdk"))
                    .await
                    .unwrap();
                created += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            created
        })
    };
    // The cache is in use while everything flows.
    tokio::time::sleep(lease).await;
    assert!(!b.cached.is_bypassed(), "in use before the relay hangs");

    b.relay.freeze_upstream(true);
    let frozen = Instant::now();
    let bypassed = loop {
        if b.cached.is_bypassed() {
            break frozen.elapsed();
        }
        assert!(
            frozen.elapsed() < 3 * lease,
            "notifications kept the cache in use without heartbeats"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("bypassed {bypassed:?} after the heartbeats stopped coming back");
    // Its next heartbeat was due within one interval and timed out after
    // another; the margin is for a loaded machine.
    assert!(
        bypassed <= 2 * heartbeat + Duration::from_millis(200),
        "bypassed only after {bypassed:?}"
    );
    for _ in 0..20 {
        tokio::time::sleep(lease / 10).await;
        assert!(b.cached.is_bypassed(), "notifications alone renewed it");
    }
    busy.store(false, Ordering::SeqCst);
    let created = writer.await.unwrap();
    assert!(
        created >= 20,
        "the channel was busy: {created} keys created"
    );

    b.stop().await;
    pg.cleanup().await;
}

/// Instance A (a cache following the store directly, strict or not) revokes
/// a key while the notification path of instance B hangs and a task on B
/// verifies the key in a tight loop. Returns how many of B's successes
/// started after the revoke returned, and how long the revoke took.
async fn successes_on_a_hung_instance_after_revoke(strict: bool) -> Option<(usize, Duration)> {
    let pg = support::postgres_store().await?;
    let org = AccountId::new("org_strict").unwrap();
    // Long heartbeats: the hung instance notices the hang only after one to
    // two of them, so without strictness it serves well after the revoke.
    let config = FollowConfig::default()
        .with_lease(Duration::from_secs(2))
        .with_heartbeat(Duration::from_secs(1))
        .with_strict_revocation(strict);
    let a_cache = CachedStore::new(pg.store());
    let a_follower = a_cache.follow_postgres_with(pg.postgres(), config.clone());
    let a = ApiKeys::builder(profiles::mailjawn())
        .store(a_cache.clone())
        .pepper(pepper())
        .build()
        .unwrap();
    let b = Relayed::start(&pg, config).await;

    let key = a
        .operator()
        .create(&org, CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let text = key.key.expose_secret().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.api.verify(&text).await.unwrap();
    b.api.verify(&text).await.unwrap();
    assert!(b.cached.stats().hits >= 1, "B answers from its cache");

    let started = Arc::new(parking_lot::Mutex::new(Vec::<Instant>::new()));
    let busy = Arc::new(AtomicBool::new(true));
    let hammer = {
        let (api, started, busy, text) =
            (b.api.clone(), started.clone(), busy.clone(), text.clone());
        tokio::spawn(async move {
            while busy.load(Ordering::SeqCst) {
                let start = Instant::now();
                if api.verify(&text).await.is_ok() {
                    started.lock().push(start);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    b.relay.freeze(true);
    let revoking = Instant::now();
    a.operator().revoke(&key.info.id).await.unwrap();
    let returned = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    busy.store(false, Ordering::SeqCst);
    hammer.await.unwrap();
    let late = started.lock().iter().filter(|s| **s > returned).count();

    b.stop().await;
    a_follower.shutdown().await;
    pg.cleanup().await;
    Some((late, returned - revoking))
}

/// Issue 15: with strict revocation the revoke returns only once the hung
/// instance has stopped answering from memory, so no success on it starts
/// after the revoke returned.
pub(crate) async fn a_strict_revocation_outlasts_a_hung_instances_cache() {
    let Some((late, took)) = successes_on_a_hung_instance_after_revoke(true).await else {
        return;
    };
    eprintln!("strict revoke took {took:?}; {late} successes on the hung instance after it");
    assert!(
        took >= Duration::from_secs(3),
        "waited lease + heartbeat: {took:?}"
    );
    assert_eq!(
        late, 0,
        "successes on the hung instance after the revoke returned"
    );
}

/// The same without strict revocation: the revoke returns at once and the
/// hung instance still accepts the key from memory, so the check above is
/// one that fails when the wait is missing.
pub(crate) async fn without_strict_revocation_a_hung_instance_accepts_the_key_after_the_revoke() {
    let Some((late, took)) = successes_on_a_hung_instance_after_revoke(false).await else {
        return;
    };
    eprintln!("revoke took {took:?}; {late} successes on the hung instance after it");
    assert!(took < Duration::from_secs(1), "no wait: {took:?}");
    assert!(late > 0, "the hung instance kept serving from memory");
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::multi(2)) a_hung_notification_connection_stops_the_cache_within_the_lease,
        tokio(Rt::multi(2)) notifications_without_heartbeats_do_not_keep_the_cache_in_use,
        tokio(Rt::multi(2)) a_strict_revocation_outlasts_a_hung_instances_cache,
        tokio(Rt::multi(2)) without_strict_revocation_a_hung_instance_accepts_the_key_after_the_revoke,
    ]);
    support::harness::run(trials)
}
