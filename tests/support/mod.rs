//! Helpers shared by integration tests: a counting wrapper around a real
//! `MemoryStore`, and a PostgreSQL store (or Redis) of its
//! own, skipped (or failed, with `KEYGATE_REQUIRE_SERVICES=1`) when no server
//! answers.
#![allow(dead_code, unused_imports)]

#[cfg(feature = "postgres")]
pub use postgres::*;

pub use counting::*;

pub mod harness;

pub mod redis_server;
pub use redis_server::{free_port, RedisServer};

/// Reports a service that cannot be used: fails the test when services are
/// required; otherwise ends it as ignored, with the reason, under the
/// harness (see [`harness`]). A test binary on the default harness cannot
/// show a test as ignored at run time, so there it fails rather than pass
/// without having run: such binaries must use `harness = false` and
/// [`harness::run`].
pub fn skip_or_fail(service: &str, why: &str) {
    if std::env::var("KEYGATE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{service} is required (KEYGATE_REQUIRE_SERVICES=1) but unusable: {why}");
    }
    if harness::active() {
        harness::skip(format!("{service} unavailable: {why}"));
    }
    panic!(
        "{service} unavailable ({why}), and this test binary is not on support::harness, \
         which would report the test as ignored"
    );
}

/// 2025-01-01T00:00:00Z in Unix milliseconds; stores keep millisecond precision.
const BASE_MS: i64 = 1_735_689_600_000;

/// `BASE_MS + offset` milliseconds as a time: the fixed clock of store tests.
pub fn at(offset_ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(BASE_MS + offset_ms) * 1_000_000)
        .expect("in range")
}

/// A plain active `mj_` key created and last given its secret at `at(0)`:
/// no bundle, scopes, limits, expiry, use, revocation, lineage, metadata or
/// credits. Tests change what they need with `KeyRecord { .., ..key_record() }`.
pub fn key_record(
    id: keygate::KeyId,
    account: keygate::AccountId,
    name: String,
    lookup: String,
    hash: keygate::hash::SecretHash,
) -> keygate::store::KeyRecord {
    keygate::store::KeyRecord {
        id,
        account,
        name,
        format: "mj_".into(),
        lookup,
        hash,
        bundle: None,
        scopes: Vec::new(),
        rate_limits: Vec::new(),
        created_at: at(0),
        secret_set_at: at(0),
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
}

mod counting {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use keygate::hash::SecretHash;
    use keygate::store::{AccountRecord, KeyChange, KeyEntry, KeyRecord, ListQuery, OldKey, Spend};
    use keygate::{AccountId, KeyId, KeyStore, MemoryStore, StoreError};
    use time::OffsetDateTime;
    use tokio::sync::oneshot;

    /// A real `MemoryStore` behind a wrapper that counts `find_by_lookup` calls,
    /// can hold one call after it has read the store (to race an invalidation
    /// against it), and can hand out fresh entries per call as the SQL stores do.
    #[derive(Debug, Default)]
    pub struct Counting {
        pub store: MemoryStore,
        pub finds: AtomicUsize,
        pub fresh_entries: bool,
        pub hold: Mutex<Option<Hold>>,
        /// How long each lookup takes, so that many can be in flight at once.
        pub lookup_delay: Option<std::time::Duration>,
    }

    #[derive(Debug)]
    pub struct Hold {
        read: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    }

    impl Counting {
        pub fn finds(&self) -> usize {
            self.finds.load(Ordering::SeqCst)
        }

        /// Makes the next lookup signal `read` once it has read the store, then
        /// wait for `release` before answering.
        pub fn hold_next(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
            let (read_tx, read_rx) = oneshot::channel();
            let (release_tx, release_rx) = oneshot::channel();
            *self.hold.lock().unwrap() = Some(Hold {
                read: read_tx,
                release: release_rx,
            });
            (read_rx, release_tx)
        }
    }

    #[async_trait]
    impl KeyStore for Counting {
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
            self.finds.fetch_add(1, Ordering::SeqCst);
            if let Some(delay) = self.lookup_delay {
                tokio::time::sleep(delay).await;
            }
            let mut found = self.store.find_by_lookup(lookup).await?;
            if self.fresh_entries {
                found = found
                    .iter()
                    .map(|e| Arc::new(KeyEntry::new(e.record().clone())))
                    .collect();
            }
            let hold = self.hold.lock().unwrap().take();
            if let Some(hold) = hold {
                let _ = hold.read.send(());
                let _ = hold.release.await;
            }
            Ok(found)
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
            self.store.revoke_key(id, at).await
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

        async fn update_key(
            &self,
            id: &KeyId,
            change: &KeyChange,
        ) -> Result<KeyRecord, StoreError> {
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

        async fn record_last_used(
            &self,
            uses: &[(KeyId, OffsetDateTime)],
        ) -> Result<(), StoreError> {
            self.store.record_last_used(uses).await
        }

        fn needs_last_used_flush(&self) -> bool {
            self.fresh_entries
        }

        fn keeps_entries(&self) -> bool {
            !self.fresh_entries
        }

        fn is_persistent(&self) -> bool {
            self.fresh_entries
        }
    }
}

#[cfg(feature = "redis")]
pub use redis_support::*;

#[cfg(feature = "redis")]
mod redis_support {
    use std::time::Duration;

    use keygate::redis::aio::MultiplexedConnection;
    use keygate::redis::{self, ConnectionInfo, IntoConnectionInfo};
    use keygate::RedisRateLimiter;

    pub fn redis_url() -> String {
        std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
    }

    /// The test Redis: its connection info, and a connection of the test's own
    /// for inspecting and deleting keys.
    pub struct TestRedis {
        pub info: ConnectionInfo,
        pub admin: MultiplexedConnection,
        pub prefix: String,
    }

    impl TestRedis {
        /// Connects, or returns `None` after printing why the test is skipped.
        /// With `KEYGATE_REQUIRE_SERVICES=1` an unreachable Redis fails the test.
        pub async fn get() -> Option<Self> {
            match Self::connect().await {
                Ok(redis) => Some(redis),
                Err(why) => {
                    let why = format!("redis at {} is unusable: {why}", redis_url());
                    super::skip_or_fail("redis", &why);
                    None
                }
            }
        }

        pub async fn connect() -> Result<Self, String> {
            let info = redis_url()
                .into_connection_info()
                .map_err(|e| e.to_string())?;
            let client = redis::Client::open(info.clone()).map_err(|e| e.to_string())?;
            let mut admin = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| "no connection within 2 s".to_owned())?
            .map_err(|e| e.to_string())?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
            if pong != "PONG" {
                return Err(format!("PING answered {pong}"));
            }
            Ok(Self {
                info,
                admin,
                prefix: format!("kgtest:{:016x}:", rand::random::<u64>()),
            })
        }

        /// A limiter on this Redis under the test's prefix. The timeout is
        /// generous so that a loaded test machine does not turn into failures.
        pub async fn limiter(&self) -> RedisRateLimiter {
            self.builder().connect(self.info.clone()).await.unwrap()
        }

        pub fn builder(&self) -> keygate::RedisRateLimiterBuilder {
            RedisRateLimiter::builder()
                .prefix(self.prefix.clone())
                .timeout(Duration::from_secs(5))
        }

        pub async fn pttl(&mut self, key: &str) -> i64 {
            redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut self.admin)
                .await
                .unwrap()
        }

        pub async fn exists(&mut self, keys: &[String]) -> i64 {
            redis::cmd("EXISTS")
                .arg(keys)
                .query_async(&mut self.admin)
                .await
                .unwrap()
        }

        /// Deletes every key under the test's prefix and returns how many there were.
        pub async fn cleanup(mut self) -> usize {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query_async(&mut self.admin)
                .await
                .unwrap();
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .exec_async(&mut self.admin)
                    .await
                    .unwrap();
            }
            keys.len()
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::str::FromStr;
    use std::sync::Arc;
    use std::time::Duration;

    use keygate::{KeyStore, PostgresStore};
    use rand::Rng;
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    /// Where the test database lives unless `KEYGATE_TEST_POSTGRES_URL` says otherwise.
    pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// The test database URL.
    pub fn postgres_url() -> String {
        std::env::var("KEYGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
    }

    /// True when missing services must fail tests instead of skipping them.
    pub fn services_required() -> bool {
        std::env::var("KEYGATE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
    }

    pub use super::skip_or_fail;

    /// A migrated [`PostgresStore`] in a fresh schema that is dropped again by
    /// [`cleanup`](Self::cleanup) or, if the test panics first, on drop.
    pub struct TestPostgres {
        store: Arc<PostgresStore>,
        schema: String,
        url: String,
        dropped: bool,
    }

    impl TestPostgres {
        /// The store.
        pub fn postgres(&self) -> &Arc<PostgresStore> {
            &self.store
        }

        /// The store as the trait object the suite takes.
        pub fn store(&self) -> Arc<dyn KeyStore> {
            self.store.clone()
        }

        /// The schema name.
        pub fn schema(&self) -> &str {
            &self.schema
        }

        /// The database URL.
        pub fn url(&self) -> &str {
            &self.url
        }

        /// Closes the pool and drops the schema.
        pub async fn cleanup(mut self) {
            self.store.pool().close().await;
            drop_schema(&self.url, &self.schema)
                .await
                .unwrap_or_else(|e| panic!("dropping schema {}: {e}", self.schema));
            self.dropped = true;
        }
    }

    impl Drop for TestPostgres {
        fn drop(&mut self) {
            if self.dropped {
                return;
            }
            // The test failed before cleanup: drop the schema from a thread with
            // a runtime of its own (this may run inside the test's runtime).
            let (url, schema) = (self.url.clone(), self.schema.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let _ = rt.block_on(drop_schema(&url, &schema));
            })
            .join();
        }
    }

    /// Drops `schema` and everything in it.
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), sqlx::Error> {
        let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await?;
        conn.close().await
    }

    /// A random schema name for one test.
    pub fn random_schema() -> String {
        let n: u64 = rand::thread_rng().gen();
        format!("keygate_test_{n:016x}")
    }

    /// Checks once per test process that the server answers, quickly.
    async fn reachable(url: &str) -> Result<(), String> {
        static CHECKED: tokio::sync::OnceCell<Result<(), String>> =
            tokio::sync::OnceCell::const_new();
        CHECKED
            .get_or_init(|| async {
                let options =
                    PgConnectOptions::from_str(url).map_err(|e| format!("bad url {url}: {e}"))?;
                match tokio::time::timeout(Duration::from_secs(3), options.connect()).await {
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("{url}: {e}")),
                    Err(_) => Err(format!("{url}: no answer within 3 s")),
                }
            })
            .await
            .clone()
    }

    /// A migrated store in its own new schema, or `None` (after saying why on
    /// stderr) when PostgreSQL is unreachable and services are not required.
    pub async fn postgres_store() -> Option<TestPostgres> {
        let url = postgres_url();
        if let Err(why) = reachable(&url).await {
            skip_or_fail("postgres", &why);
            return None;
        }
        let schema = random_schema();
        let store = PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url} with schema {schema}: {e}"));
        let test = TestPostgres {
            store: Arc::new(store),
            schema,
            url,
            dropped: false,
        };
        test.store.migrate().await.expect("migrations apply");
        Some(test)
    }
}
