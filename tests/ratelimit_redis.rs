//! `RedisRateLimiter` against a real Redis: the same decisions as the local
//! limiter, one quota shared by several instances, expiring buckets, the
//! failure policies, and one round trip per decision; and usage credits
//! spent in Redis, shared exactly by instances with separate stores.
//!
//! Redis is found at `KEYGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`). Without one, each test that needs it is
//! reported as ignored, with the reason, unless `KEYGATE_REQUIRE_SERVICES=1`
//! makes it fail. Every test
//! works under a random key prefix of its own and deletes its keys at the end,
//! so tests (and test runs) can share one Redis in parallel.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::redis::aio::ConnectionManager;
use keygate::redis::{self, ConnectionAddr, ConnectionInfo};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, KeyId, KeyStore, LocalRateLimiter,
    ManualClock, MemoryStore, Pepper, Quota, RateLimiter, RedisFailure, RedisRateLimiter,
};
use parking_lot::Mutex;
use support::TestRedis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A port nothing listens on.
const DEAD_URL: &str = "redis://127.0.0.1:1/";

fn org() -> AccountId {
    AccountId::new("org").unwrap()
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Polls `done` every 20 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub(crate) async fn decisions_match_the_local_limiter_for_a_burst() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let limiter = redis.limiter().await;
    let local = LocalRateLimiter::new(Arc::new(ManualClock::new()));
    // Twelve minutes between tokens: nothing refills while the test runs.
    let quota = Quota::per_hour(nz(5));
    let started = Instant::now();
    for i in 0..7u32 {
        let expected = local.check("key_a", "send", &quota).await.unwrap();
        let got = limiter.check("key_a", "send", &quota).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(got.allowed, i < 5, "request {i}");
        assert_eq!(
            (got.allowed, got.limit, got.remaining),
            (expected.allowed, expected.limit, expected.remaining),
            "request {i}"
        );
        assert_eq!(got.remaining, 4u32.saturating_sub(i));
        // The local clock stood still while Redis's ran on, by less than
        // the time the test took so far.
        assert!(got.reset <= expected.reset, "request {i}: {got:?}");
        assert!(
            got.reset + elapsed >= expected.reset,
            "request {i}: {got:?}"
        );
        match (got.retry_after, expected.retry_after) {
            (None, None) => {}
            (Some(got), Some(expected)) => {
                assert!(got > Duration::ZERO);
                assert!(got <= expected && got + elapsed >= expected, "request {i}");
            }
            other => panic!("request {i}: retry_after {other:?}"),
        }
    }
    assert_eq!(redis.cleanup().await, 1);
}

pub(crate) async fn two_service_instances_share_one_quota() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let store = Arc::new(MemoryStore::new());
    let pepper = Pepper::random(1).unwrap();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let api = ApiKeys::builder(profiles::mailjawn())
            .store(store.clone())
            .pepper(pepper.clone())
            .rate_limiter(redis.limiter().await)
            .build()
            .unwrap();
        instances.push(api);
    }
    let key = instances[0]
        .as_account(&org())
        .create(
            &org(),
            CreateKey::new("bulk")
                .bundle("full_access")
                .rate_limit("send", Quota::per_minute(nz(10))),
        )
        .await
        .unwrap();
    let presented = key.key.expose_secret();
    let send = instances[0].operation("send").unwrap();
    let mut admitted = 0;
    for i in 0..40 {
        match instances[i % 2].verify_for(presented, &send).await {
            Ok(principal) => {
                admitted += 1;
                let d = principal.rate_limit().unwrap();
                assert_eq!(d.limit, 10);
                assert_eq!(d.remaining, 10 - admitted);
            }
            Err(AuthError::RateLimited { decision }) => {
                assert_eq!(decision.remaining, 0);
                assert!(decision.retry_after.unwrap() > Duration::ZERO);
            }
            Err(other) => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(admitted, 10);
    // Other classes have buckets of their own.
    let read = instances[1].operation_for_method("GET");
    let p = instances[1].verify_for(presented, &read).await.unwrap();
    assert_eq!(p.rate_limit().unwrap().remaining, 99);
    assert_eq!(redis.cleanup().await, 2);
}

pub(crate) async fn concurrent_load_from_two_instances_never_exceeds_the_quota() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    // One made by `connect`, one on a connection manager of the caller's.
    let client = redis::Client::open(redis.info.clone()).unwrap();
    let manager = ConnectionManager::new(client).await.unwrap();
    let limiters = [redis.limiter().await, redis.builder().build(manager)];
    // 36 s between tokens: the quota is exactly the burst while this runs.
    let quota = Quota::per_hour(nz(100));
    let admitted = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let limiter = limiters[t % 2].clone();
        let admitted = admitted.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let d = limiter.check("key_hot", "write", &quota).await.unwrap();
                if d.allowed {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // 400 checks; more than 100 admitted would be a lost update.
    assert_eq!(admitted.load(Ordering::Relaxed), 100);
    assert_eq!(redis.cleanup().await, 1);
}

pub(crate) async fn buckets_expire_when_they_would_be_full_again() {
    let Some(mut redis) = TestRedis::get().await else {
        return;
    };
    let limiter = redis.limiter().await;
    let quota = Quota::per_minute(nz(10));
    let key = limiter.key_for("key_ttl", "send");
    assert!(key.starts_with(&redis.prefix) && key.ends_with("{key_ttl}:send"));

    let d = limiter.check("key_ttl", "send", &quota).await.unwrap();
    let ttl = redis.pttl(&key).await;
    assert!(ttl > 0 && ttl <= 6_000, "one token out: {ttl} ms");
    assert!(u128::try_from(ttl).unwrap() <= d.reset.as_millis() + 1);

    for _ in 0..10 {
        let _ = limiter.check("key_ttl", "send", &quota).await.unwrap();
    }
    let ttl = redis.pttl(&key).await;
    assert!(ttl > 54_000 && ttl <= 60_000, "empty bucket: {ttl} ms");

    // A bucket that refills in 50 ms is gone soon after.
    let fast = Quota::new(1, Duration::from_millis(50)).unwrap();
    let d = limiter.check("key_fast", "send", &fast).await.unwrap();
    assert!(d.allowed);
    let fast_key = limiter.key_for("key_fast", "send");
    let gone = eventually(Duration::from_secs(5), || {
        let mut admin = redis.admin.clone();
        let key = fast_key.clone();
        async move {
            let n: i64 = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut admin)
                .await
                .unwrap();
            n == 0
        }
    })
    .await;
    assert!(gone, "the refilled bucket was not expired");
    assert_eq!(redis.cleanup().await, 1);
}

pub(crate) async fn forget_deletes_the_buckets_of_a_revoked_key() {
    let Some(mut redis) = TestRedis::get().await else {
        return;
    };
    let api = ApiKeys::builder(profiles::mailjawn())
        .rate_limiter(redis.limiter().await)
        .build()
        .unwrap();
    let key = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let id = key.info.id.as_str().to_owned();
    let presented = key.key.expose_secret();
    api.verify_for(presented, &api.operation("send").unwrap())
        .await
        .unwrap();
    api.verify_for(presented, &api.operation_for_method("POST"))
        .await
        .unwrap();
    let limiter = redis.limiter().await;
    let keys = [limiter.key_for(&id, "send"), limiter.key_for(&id, "write")];
    assert_eq!(redis.exists(&keys).await, 2);

    api.as_account(&org()).revoke(&key.info.id).await.unwrap();
    let admin = redis.admin.clone();
    let deleted = eventually(Duration::from_secs(5), || {
        let mut admin = admin.clone();
        let keys = keys.clone();
        async move {
            let n: i64 = redis::cmd("EXISTS")
                .arg(&keys)
                .query_async(&mut admin)
                .await
                .unwrap();
            n == 0
        }
    })
    .await;
    assert!(deleted, "revocation left the buckets in redis");
    assert_eq!(redis.cleanup().await, 0);
}

/// README, Running several instances, row "Redis is unreachable": fail
/// closed by default (503).
pub(crate) async fn fail_closed_on_a_dead_port_is_unavailable() {
    let limiter = RedisRateLimiter::builder()
        .connect_timeout(Duration::from_millis(100))
        .connect(DEAD_URL)
        .await
        .unwrap();
    assert!(!limiter.is_connected());
    assert_eq!(limiter.on_failure(), RedisFailure::FailClosed);
    let api = ApiKeys::builder(profiles::mailjawn())
        .rate_limiter(limiter)
        .build()
        .unwrap();
    let key = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let presented = key.key.expose_secret();
    let err = api
        .verify_for(presented, &api.operation("send").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::Unavailable);
    assert_eq!(err.status(), 503);
    // Verification without a rate-limited operation does not need Redis.
    assert!(api.verify(presented).await.is_ok());
}

/// README, Running several instances, row "Redis is unreachable": or, if
/// configured, fall back to the in-process limiter.
pub(crate) async fn fall_back_to_local_on_a_dead_port_enforces_the_local_quota() {
    let clock = ManualClock::new();
    let limiter = RedisRateLimiter::builder()
        .connect_timeout(Duration::from_millis(100))
        .on_failure(RedisFailure::FallBackToLocal)
        .clock(clock.clone())
        .connect(DEAD_URL)
        .await
        .unwrap();
    let api = ApiKeys::builder(profiles::mailjawn())
        .clock(clock.clone())
        .rate_limiter(limiter)
        .build()
        .unwrap();
    let key = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let presented = key.key.expose_secret();
    let send = api.operation("send").unwrap();
    for i in 0..10u32 {
        let p = api.verify_for(presented, &send).await.unwrap();
        assert_eq!(p.rate_limit().unwrap().remaining, 9 - i);
    }
    match api.verify_for(presented, &send).await {
        Err(AuthError::RateLimited { decision }) => {
            assert_eq!(decision.retry_after, Some(Duration::from_secs(6)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    clock.advance(Duration::from_secs(6));
    assert!(api.verify_for(presented, &send).await.is_ok());
}

/// A TCP proxy in front of Redis that records the name of every command a
/// client sends, and can simulate an outage by cutting its connections and
/// refusing to relay new ones.
struct Proxy {
    addr: SocketAddr,
    commands: Arc<Mutex<Vec<String>>>,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    /// Connections being relayed.
    open: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(target: ConnectionInfo) -> Self {
        let ConnectionAddr::Tcp(host, port) = &target.addr else {
            panic!("the proxy relays TCP only, not {:?}", target.addr);
        };
        let target = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0);
        let open = Arc::new(AtomicUsize::new(0));
        let proxy = Self {
            addr,
            commands: commands.clone(),
            up: up.clone(),
            cut: cut.clone(),
            open: open.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !up.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                open.fetch_add(1, Ordering::SeqCst);
                let (commands, cut, open) = (commands.clone(), cut.subscribe(), open.clone());
                tokio::spawn(async move {
                    relay(client, server, commands, cut).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        proxy
    }

    /// The connection info of `target` with the proxy's address.
    fn info(&self, target: &ConnectionInfo) -> ConnectionInfo {
        ConnectionInfo {
            addr: ConnectionAddr::Tcp(self.addr.ip().to_string(), self.addr.port()),
            redis: target.redis.clone(),
        }
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().clone()
    }

    /// Cuts every relayed connection, and relays no new ones until
    /// [`come_back`](Self::come_back).
    async fn go_down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
        let open = self.open.clone();
        let closed = eventually(Duration::from_secs(5), || {
            let open = open.clone();
            async move { open.load(Ordering::SeqCst) == 0 }
        })
        .await;
        assert!(closed, "the proxy did not cut its connections");
    }

    fn come_back(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    commands: Arc<Mutex<Vec<String>>>,
    mut cut: watch::Receiver<u64>,
) {
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = async {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some((name, used)) = parse_command(&pending) {
                commands.lock().push(name);
                pending.drain(..used);
            }
            server_write.write_all(&chunk[..n]).await?;
        }
    };
    let replies = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        _ = requests => {}
        _ = replies => {}
        _ = cut.changed() => {}
    }
}

/// The upper-cased name of the first complete RESP command in `buf`, and the
/// bytes it takes; `None` until a whole command has arrived.
fn parse_command(buf: &[u8]) -> Option<(String, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    }
    let (header, mut at) = line(buf, 0)?;
    let count: usize = std::str::from_utf8(header.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut name = String::new();
    for i in 0..count {
        let (len, start) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let arg = buf.get(start..start + len)?;
        if i == 0 {
            name = String::from_utf8_lossy(arg).to_uppercase();
        }
        at = start + len + 2;
        if buf.len() < at {
            return None;
        }
    }
    Some((name, at))
}

pub(crate) async fn each_decision_is_one_round_trip() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let proxy = Proxy::start(redis.info.clone()).await;
    let limiter = redis
        .builder()
        .connect(proxy.info(&redis.info))
        .await
        .unwrap();
    assert!(limiter.is_connected());
    let setup = proxy.commands();
    assert!(
        setup.contains(&"SCRIPT".to_owned()),
        "connecting loads the script: {setup:?}"
    );

    // Admissions and denials, over several keys and classes.
    let quota = Quota::per_hour(nz(3));
    let mut outcomes = [0u32; 2];
    for i in 0..60 {
        let key_id = format!("key_{}", i % 5);
        let class = ["send", "write"][i % 2];
        let d = limiter.check(&key_id, class, &quota).await.unwrap();
        outcomes[usize::from(d.allowed)] += 1;
    }
    assert_eq!(outcomes, [60 - 30, 30]);
    let sent = proxy.commands()[setup.len()..].to_vec();
    assert_eq!(sent.len(), 60, "{sent:?}");
    assert!(sent.iter().all(|c| c == "EVALSHA"), "{sent:?}");
    assert_eq!(redis.cleanup().await, 10);
}

pub(crate) async fn an_outage_fails_closed_and_redis_is_used_again_once_back() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let proxy = Proxy::start(redis.info.clone()).await;
    let limiter = RedisRateLimiter::builder()
        .prefix(redis.prefix.clone())
        .timeout(Duration::from_millis(200))
        .connect(proxy.info(&redis.info))
        .await
        .unwrap();
    let quota = Quota::per_hour(nz(10));
    let d = limiter.check("key_o", "send", &quota).await.unwrap();
    assert_eq!(d.remaining, 9);

    proxy.go_down().await;
    let err = limiter.check("key_o", "send", &quota).await.unwrap_err();
    assert!(err.reason().starts_with("redis"), "{err}");

    proxy.come_back();
    let start = Instant::now();
    let d = loop {
        if let Ok(d) = limiter.check("key_o", "send", &quota).await {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the limiter did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The bucket kept its state through the outage.
    assert_eq!(d.remaining, 8);
    assert_eq!(redis.cleanup().await, 1);
}

pub(crate) async fn a_limiter_made_while_redis_is_down_connects_once_it_is_up() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let proxy = Proxy::start(redis.info.clone()).await;
    proxy.go_down().await;
    let limiter = RedisRateLimiter::builder()
        .prefix(redis.prefix.clone())
        .connect_timeout(Duration::from_millis(200))
        .on_failure(RedisFailure::FallBackToLocal)
        .connect(proxy.info(&redis.info))
        .await
        .unwrap();
    assert!(!limiter.is_connected());
    // Meanwhile, the local fallback decides.
    let quota = Quota::per_hour(nz(2));
    assert!(
        limiter
            .check("key_l", "send", &quota)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        limiter
            .check("key_l", "send", &quota)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !limiter
            .check("key_l", "send", &quota)
            .await
            .unwrap()
            .allowed
    );

    proxy.come_back();
    let connected = eventually(Duration::from_secs(15), || {
        let limiter = limiter.clone();
        async move { limiter.is_connected() }
    })
    .await;
    assert!(connected, "the limiter never connected");
    // Redis has a fresh bucket for the key, whatever the local one says.
    let d = limiter.check("key_l", "send", &quota).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    assert_eq!(redis.cleanup().await, 1);
}

/// Two instances on one Redis, each with a `MemoryStore` of its own holding
/// the same key (and identity): credits are shared through Redis alone.
fn separate_stores(limiter: &RedisRateLimiter) -> (ApiKeys, ApiKeys, Stores, Stores) {
    let pepper = Pepper::random(1).unwrap();
    let (store_a, store_b) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let build = |store: &Stores| {
        ApiKeys::builder(profiles::mailjawn())
            .store(store.clone())
            .pepper(pepper.clone())
            .rate_limiter(limiter.clone())
            .build()
            .unwrap()
    };
    (build(&store_a), build(&store_b), store_a, store_b)
}

type Stores = Arc<MemoryStore>;

/// Copies a key (and its identity, if any) from one store to another.
async fn copy_key(from: &Stores, to: &Stores, id: &KeyId) {
    let record = from.get_key(id).await.unwrap().unwrap().record().clone();
    if let Some(identity) = &record.identity {
        if to.get_identity(identity).await.unwrap().is_none() {
            let identity = from.get_identity(identity).await.unwrap().unwrap();
            to.create_identity(identity).await.unwrap();
        }
    }
    to.insert_key(record, None, keygate::time::OffsetDateTime::now_utc())
        .await
        .unwrap();
}

/// Sends `n` concurrent requests, alternating between the instances: the
/// remaining credits each admitted request reported (key's, identity's),
/// and how many were refused for usage.
async fn spend_concurrently(
    apis: [&ApiKeys; 2],
    presented: &str,
    n: usize,
) -> (Vec<(Option<u64>, Option<u64>)>, usize) {
    let op = keygate::Operation::unrestricted();
    let mut tasks = Vec::new();
    for i in 0..n {
        let api = apis[i % 2].clone();
        let (op, presented) = (op.clone(), presented.to_owned());
        tasks.push(tokio::spawn(async move {
            api.verify_for(&presented, &op).await
        }));
    }
    let (mut left, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => left.push((p.credits_remaining(), p.identity_credits_remaining())),
            Err(AuthError::UsageExceeded { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    left.sort_unstable();
    (left, refused)
}

pub(crate) async fn two_instances_with_separate_stores_share_a_keys_credits_exactly() {
    let Some(mut redis) = TestRedis::get().await else {
        return;
    };
    let limiter = redis.limiter().await;
    let (a, b, store_a, store_b) = separate_stores(&limiter);
    let key = a
        .operator()
        .create(&org(), CreateKey::new("trial").bundle("sdk").credits(30))
        .await
        .unwrap();
    copy_key(&store_a, &store_b, &key.info.id).await;
    let presented = key.key.expose_secret().to_owned();

    let (left, refused) = spend_concurrently([&a, &b], &presented, 80).await;
    let expected: Vec<_> = (0..30).map(|r| (Some(r), None)).collect();
    assert_eq!(left, expected, "each credit spent once");
    assert_eq!(refused, 50);
    // Redis holds what remains; the stores keep the credits as set.
    let ledger = limiter.credits_key_for(&org(), key.info.id.as_str());
    let r: u64 = redis::cmd("HGET")
        .arg(&ledger)
        .arg("r")
        .query_async(&mut redis.admin)
        .await
        .unwrap();
    assert_eq!(r, 0);
    let stored = store_b.get_key(&key.info.id).await.unwrap().unwrap();
    assert_eq!(stored.record().credits.unwrap().remaining, 30);

    // An update of the credits re-seeds the ledger from the record.
    a.operator()
        .update(&key.info.id, keygate::KeyUpdate::new().credits(5, None))
        .await
        .unwrap();
    let op = keygate::Operation::unrestricted();
    let p = a.verify_for(&presented, &op).await.unwrap();
    assert_eq!(p.credits_remaining(), Some(4));
    let p = a.verify_for(&presented, &op).await.unwrap();
    assert_eq!(p.credits_remaining(), Some(3));
    assert_eq!(redis.exists(&[ledger]).await, 1);
    assert_eq!(redis.cleanup().await, 1);
}

pub(crate) async fn an_identitys_credits_are_shared_through_redis_both_or_neither() {
    let Some(mut redis) = TestRedis::get().await else {
        return;
    };
    let limiter = redis.limiter().await;
    let (a, b, store_a, store_b) = separate_stores(&limiter);
    let acme = a
        .operator()
        .create_identity(&org(), keygate::CreateIdentity::new("acme").credits(20))
        .await
        .unwrap();
    // The key's own credits outlast the identity's.
    let key = a
        .operator()
        .create(
            &org(),
            CreateKey::new("k")
                .bundle("sdk")
                .credits(50)
                .identity(acme.id.clone()),
        )
        .await
        .unwrap();
    copy_key(&store_a, &store_b, &key.info.id).await;
    let presented = key.key.expose_secret().to_owned();

    let (left, refused) = spend_concurrently([&a, &b], &presented, 60).await;
    let expected: Vec<_> = (0..20).map(|r| (Some(30 + r), Some(r))).collect();
    assert_eq!(left, expected, "both spent together, each credit once");
    assert_eq!(refused, 40);
    // The 40 refusals spent none of the key's credits.
    let r: u64 = redis::cmd("HGET")
        .arg(limiter.credits_key_for(&org(), key.info.id.as_str()))
        .arg("r")
        .query_async(&mut redis.admin)
        .await
        .unwrap();
    assert_eq!(r, 30);
    let r: u64 = redis::cmd("HGET")
        .arg(limiter.credits_key_for(&org(), acme.id.as_str()))
        .arg("r")
        .query_async(&mut redis.admin)
        .await
        .unwrap();
    assert_eq!(r, 0);

    // Refilling the identity by an update reaches Redis.
    a.operator()
        .update_identity(&acme.id, keygate::IdentityUpdate::new().credits(2, None))
        .await
        .unwrap();
    let op = keygate::Operation::unrestricted();
    let p = a.verify_for(&presented, &op).await.unwrap();
    assert_eq!(
        (p.credits_remaining(), p.identity_credits_remaining()),
        (Some(29), Some(1))
    );
    assert_eq!(redis.cleanup().await, 2);
}

pub(crate) async fn credits_follow_the_failure_policy_when_redis_is_down() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    for (policy, fallback) in [
        (RedisFailure::FailClosed, false),
        (RedisFailure::FallBackToLocal, true),
    ] {
        let limiter = redis
            .builder()
            .connect_timeout(Duration::from_millis(100))
            .on_failure(policy)
            .connect(DEAD_URL)
            .await
            .unwrap();
        let api = ApiKeys::builder(profiles::mailjawn())
            .rate_limiter(limiter)
            .build()
            .unwrap();
        let key = api
            .operator()
            .create(&org(), CreateKey::new("k").bundle("sdk").credits(3))
            .await
            .unwrap();
        let presented = key.key.expose_secret();
        let op = keygate::Operation::unrestricted();
        let outcome = api.verify_for(presented, &op).await;
        if fallback {
            // The store spends them meanwhile.
            assert_eq!(outcome.unwrap().credits_remaining(), Some(2));
            let info = api.operator().get(&key.info.id).await.unwrap();
            assert_eq!(info.credits.unwrap().remaining, 2);
        } else {
            assert!(
                matches!(outcome, Err(AuthError::Unavailable)),
                "{policy:?}: {outcome:?}"
            );
        }
    }
}

pub(crate) async fn redis_credits_follow_the_in_process_rule_with_refills() {
    use keygate::store::Spend;
    use keygate::{Credits, Refill};
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let limiter = redis.limiter().await;
    let t0 = keygate::time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let ms = |n: i64| keygate::time::Duration::milliseconds(n);
    // Records as set; the models are spent by `Credits::spend`.
    let key_set = Credits::new(5).with_refill(Refill::every(4, Duration::from_millis(700)), t0);
    let idn_set = Credits::new(3).with_refill(Refill::every(6, Duration::from_millis(1_100)), t0);
    let (mut key_model, mut idn_model) = (key_set, idn_set);
    let mut now = t0;
    let mut seen = [0u32; 3];
    // A fixed pseudo-random walk: steps of 0..450 ms, costs 0..=4.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        now += ms(i64::try_from(x % 450).unwrap());
        let cost = (x >> 20) % 5;
        let got = limiter
            .spend_credits(
                &org(),
                Some(("key_walk", &key_set)),
                Some(("idn_walk", &idn_set)),
                cost,
                now,
            )
            .await
            .unwrap()
            .expect("redis keeps credits");
        // The model: both or neither.
        let (mut k, mut i) = (key_model, idn_model);
        let expected = match k.spend(cost, now) {
            Err(next_refill) => (Spend::Exhausted { next_refill }, Spend::Unlimited),
            Ok(kr) => match i.spend(cost, now) {
                Err(next_refill) => (Spend::Unlimited, Spend::Exhausted { next_refill }),
                Ok(ir) => {
                    (key_model, idn_model) = (k, i);
                    (
                        Spend::Spent { remaining: kr },
                        Spend::Spent { remaining: ir },
                    )
                }
            },
        };
        assert_eq!((got.key, got.identity), expected, "at {now}, cost {cost}");
        seen[match expected {
            (Spend::Spent { .. }, _) => 0,
            (Spend::Exhausted { .. }, _) => 1,
            _ => 2,
        }] += 1;
    }
    // The walk went through spends, and refusals by each ledger.
    assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
    assert_eq!(redis.cleanup().await, 2);
}

/// The script and `Bucket::check` agree on every field for random sequences
/// of quotas and request times, at times beyond 2^53 ns (where Lua's doubles
/// would lose nanoseconds).
pub(crate) async fn script_decides_exactly_as_the_local_bucket() {
    use keygate::ratelimit::Bucket;
    use rand::{Rng, SeedableRng};

    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let limiter = redis.limiter().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut checked = 0;
    for case in 0..40 {
        let limit = rng.gen_range(1..=20u32);
        let period = Duration::from_nanos(rng.gen_range(1_000..=5_000_000_000u64));
        let Ok(quota) = Quota::new(limit, period) else {
            continue;
        };
        let quota = quota.with_burst(rng.gen_range(1..=8)).unwrap();
        let interval = u64::try_from(quota.emission_interval().as_nanos()).unwrap();
        let bucket = Bucket::new();
        // About now since the epoch, where nanoseconds exceed 2^53.
        let base = 1_764_000_000_000_000_000 + rng.gen_range(0..1_000_000_000u64);
        let key_id = format!("case{case}");
        // Redis expires keys in real time, so the test's clock never runs
        // slower than real time: a key Redis dropped is one the local
        // bucket also sees as full, however slowly the test runs.
        let started = Instant::now();
        let mut ahead = 0u64;
        for _ in 0..30 {
            ahead += rng.gen_range(0..=interval * 2);
            let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap();
            let now = base + elapsed + ahead;
            let local = bucket.check(&quota, now);
            let remote = limiter.check_at(&key_id, "c", &quota, now).await.unwrap();
            assert_eq!(remote, local, "case {case} at {now}: {quota:?}");
            checked += 1;
        }
    }
    assert!(checked >= 600);
    // The keys expire within seconds anyway; at most one per case is left.
    assert!(redis.cleanup().await <= 40);
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::CURRENT) decisions_match_the_local_limiter_for_a_burst,
        tokio(Rt::CURRENT) script_decides_exactly_as_the_local_bucket,
        tokio(Rt::CURRENT) two_service_instances_share_one_quota,
        tokio(Rt::multi(2)) concurrent_load_from_two_instances_never_exceeds_the_quota,
        tokio(Rt::CURRENT) buckets_expire_when_they_would_be_full_again,
        tokio(Rt::CURRENT) forget_deletes_the_buckets_of_a_revoked_key,
        tokio(Rt::CURRENT) fail_closed_on_a_dead_port_is_unavailable,
        tokio(Rt::CURRENT) fall_back_to_local_on_a_dead_port_enforces_the_local_quota,
        tokio(Rt::CURRENT) each_decision_is_one_round_trip,
        tokio(Rt::CURRENT) an_outage_fails_closed_and_redis_is_used_again_once_back,
        tokio(Rt::CURRENT) a_limiter_made_while_redis_is_down_connects_once_it_is_up,
        tokio(Rt::multi(2)) two_instances_with_separate_stores_share_a_keys_credits_exactly,
        tokio(Rt::multi(2)) an_identitys_credits_are_shared_through_redis_both_or_neither,
        tokio(Rt::CURRENT) credits_follow_the_failure_policy_when_redis_is_down,
        tokio(Rt::CURRENT) redis_credits_follow_the_in_process_rule_with_refills,
    ]);
    support::harness::run(trials)
}
