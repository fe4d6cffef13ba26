//! `verify_store`: one `ApiKeys::verify` of a valid key with 10,000 keys
//! stored, per backend; `cached_postgres` is a `CachedStore` over Postgres,
//! following its change notifications, with the key's answer cached. Postgres
//! reads `KEYGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and is skipped when unreachable.
//!
//! ```text
//! cargo bench --bench stores --features sqlite,postgres -- --warm-up-time 1 --measurement-time 3
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use keygate::hash::Hasher;
use keygate::store::{KeyRecord, KeyStore};
use keygate::{
    profiles, AccountId, ApiKeys, CachedStore, CreateKey, KeyId, MemoryStore, Pepper,
    PostgresStore, SqliteStore,
};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

const KEYS: usize = 10_000;

fn pepper() -> Pepper {
    Pepper::new(1, [42u8; 32]).expect("valid pepper")
}

/// Stores `KEYS - 1` filler keys spread over 100 accounts, then creates the
/// key the bench verifies through the service.
async fn prepare(store: Arc<dyn KeyStore>) -> (ApiKeys, String) {
    let profile = profiles::mailjawn();
    let hasher = Hasher::new(pepper());
    let now = OffsetDateTime::now_utc();
    let records: Vec<KeyRecord> = (0..KEYS - 1)
        .map(|i| {
            let key = profile.formats()[0].generate();
            KeyRecord {
                id: KeyId::generate(now),
                account: AccountId::new(format!("org_{}", i % 100)).expect("account id"),
                name: format!("filler {i}"),
                format: profile.formats()[0].label().to_owned(),
                lookup: key.lookup().to_owned(),
                hash: hasher.hash(key.expose_secret()),
                bundle: Some("sdk".into()),
                scopes: Vec::new(),
                rate_limits: Vec::new(),
                created_at: now,
                secret_set_at: now,
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
                replaced_by: None,
                lineage: None,
                disabled_at: None,
                metadata: Default::default(),
                credits: None,
                identity: None,
            }
        })
        .collect();
    store.insert_keys(records).await.expect("bulk insert");
    let api = ApiKeys::builder(profile)
        .store(store)
        .pepper(pepper())
        .build()
        .expect("service");
    let org = AccountId::new("org_bench").expect("account id");
    let key = api
        .operator()
        .create(&org, CreateKey::new("bench").bundle("sdk"))
        .await
        .expect("create");
    let presented = key.key.expose_secret().to_owned();
    api.verify(&presented).await.expect("the key verifies");
    (api, presented)
}

async fn api_verify((api, presented): &(ApiKeys, String)) {
    api.verify(presented).await.expect("the key verifies");
}

fn bench_verify(c: &mut Criterion, rt: &Runtime, name: &str, api: &ApiKeys, presented: &str) {
    let mut group = c.benchmark_group("verify_store");
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let principal = api.verify(presented).await.expect("valid key");
            std::hint::black_box(principal);
        })
    });
    group.finish();
}

fn verify_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let (api, key) = rt.block_on(prepare(Arc::new(MemoryStore::new())));
    bench_verify(c, &rt, "memory", &api, &key);

    let dir = tempfile::tempdir().expect("temp dir");
    let (api, key) = rt.block_on(async {
        let store = SqliteStore::open(dir.path().join("bench.db"))
            .await
            .expect("sqlite");
        store.migrate().await.expect("migrate");
        prepare(Arc::new(store)).await
    });
    bench_verify(c, &rt, "sqlite", &api, &key);

    let url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("keygate_bench_{}", std::process::id());
    let connected = rt.block_on(async {
        let store = PostgresStore::connect_with_schema(&url, &schema).await?;
        store.migrate().await?;
        Ok::<_, keygate::StoreError>(store)
    });
    match connected {
        Ok(store) => {
            let pool = store.pool().clone();
            let store = Arc::new(store);
            let (api, key) = rt.block_on(prepare(store.clone()));
            bench_verify(c, &rt, "postgres", &api, &key);
            rt.block_on(async {
                sqlx::query("TRUNCATE api_keys")
                    .execute(&pool)
                    .await
                    .expect("empty the bench table");
            });

            let cached = CachedStore::new(store.clone());
            let (follower, (api, key)) = rt.block_on(async {
                let follower = cached.follow_postgres(&store);
                let start = Instant::now();
                while cached.is_bypassed() {
                    assert!(start.elapsed() < Duration::from_secs(10), "never listened");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let prepared = prepare(Arc::new(cached.clone())).await;
                // The notifications of the inserts may still evict the key's
                // answer: verify until it is served from the cache.
                let start = Instant::now();
                loop {
                    let hits = cached.stats().hits;
                    api_verify(&prepared).await;
                    if cached.stats().hits > hits {
                        break;
                    }
                    assert!(start.elapsed() < Duration::from_secs(10), "never cached");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (follower, prepared)
            });
            bench_verify(c, &rt, "cached_postgres", &api, &key);
            rt.block_on(async {
                follower.shutdown().await;
                sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                    .execute(&pool)
                    .await
                    .expect("drop bench schema");
            });
        }
        Err(e) => eprintln!("skipping verify_store/postgres: {e}"),
    }
}

criterion_group!(benches, verify_store);
criterion_main!(benches);
