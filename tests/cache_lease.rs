//! The cache's validity is leased, not assumed: an instance whose change
//! notification connection hangs without closing (here a relay the test
//! freezes) stops answering from memory within the lease, so a key revoked on
//! another instance is refused within that bound. Once the connection is
//! confirmed again, the cache serves again.

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
struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(target: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect((target.0.as_str(), target.1)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, flag.clone()));
                tokio::spawn(pump(sr, cw, flag.clone()));
            }
        });
        Self { port, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // Bounded: a test relay never outlives its test by much.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = match tokio::time::timeout_at(deadline, from.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        while frozen.load(Ordering::SeqCst) {
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

/// README, Running several instances, row "the notification connection
/// hangs without closing": the cache serves from memory only within the lease.
pub(crate) async fn a_hung_notification_connection_stops_the_cache_within_the_lease() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let pepper = || Pepper::new(1, [6u8; 32]).unwrap();
    let org = AccountId::new("org_lease").unwrap();

    // Instance A: writes directly.
    let a = ApiKeys::builder(profiles::mailjawn())
        .store(pg.store())
        .pepper(pepper())
        .build()
        .unwrap();

    // Instance B: reads through a cache whose notifications come through the
    // relay; its own queries go directly to the database.
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
    let config = FollowConfig::default();
    let lease = config.lease;
    let follower = cached.follow_postgres_with(&feed_store, config);
    let b = ApiKeys::builder(profiles::mailjawn())
        .store(cached.clone())
        .pepper(pepper())
        .build()
        .unwrap();
    let listening = Instant::now() + Duration::from_secs(10);
    while cached.is_bypassed() {
        assert!(Instant::now() < listening, "the follower never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

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

    follower.shutdown().await;
    feed_store.pool().close().await;
    pg.cleanup().await;
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::multi(2)) a_hung_notification_connection_stops_the_cache_within_the_lease,
    ]);
    support::harness::run(trials)
}
