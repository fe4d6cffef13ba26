//! What the SQL stores report when they fail: a store that cannot answer now
//! is `StoreError::Unavailable`, one that will not answer until its setup is
//! fixed (no tables, an unknown role or database) is
//! `StoreError::Misconfigured`, and both keep the `sqlx` error as their
//! source. Verify answers `AuthError::Unavailable` either way; management
//! calls answer 503 `unavailable` or 500 `store_misconfigured`. A duplicate
//! is a conflict that does not quote the database.
//!
//! The PostgreSQL tests skip when no server answers, unless
//! `KEYGATE_REQUIRE_SERVICES=1`.

#[path = "support/mod.rs"]
mod support;

use std::error::Error as _;
use std::sync::Arc;

use keygate::hash::SecretHash;
use keygate::store::KeyRecord;
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, Error, KeyId, KeyStore, ListOptions,
    Pepper, StoreError,
};
use time::OffsetDateTime;

fn service(store: Arc<dyn KeyStore>) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(Pepper::new(1, [42u8; 32]).unwrap())
        .build()
        .unwrap()
}

/// The `sqlx` error at the end of a store error's `source()` chain: the
/// store error's source is its `Cause`, whose source is the `sqlx` error.
fn sqlx_source(err: &StoreError) -> &sqlx::Error {
    let cause = err
        .source()
        .unwrap_or_else(|| panic!("{err:?} has no source"));
    assert!(err.to_string().contains(&cause.to_string()), "{err}");
    let source = cause
        .source()
        .unwrap_or_else(|| panic!("the cause of {err:?} has no source"));
    source
        .downcast_ref::<sqlx::Error>()
        .unwrap_or_else(|| panic!("the source of {err:?} is not a sqlx::Error"))
}

/// A key record with id `key_<n>` and a hash of its own.
fn key(n: u8) -> KeyRecord {
    let mut digest = [0u8; 32];
    digest[0] = n;
    KeyRecord {
        bundle: Some("sdk".into()),
        created_at: OffsetDateTime::UNIX_EPOCH,
        secret_set_at: OffsetDateTime::UNIX_EPOCH,
        ..support::key_record(
            KeyId::new(format!("key_{n:03}")),
            AccountId::new("org_dup").unwrap(),
            format!("key {n}"),
            format!("lk{n:03}"),
            SecretHash::from_parts(1, digest),
        )
    }
}

/// A duplicate is a conflict whose text, which can reach clients as
/// `ConflictKind::Other`, does not quote the database (its constraint,
/// table and column names).
async fn assert_duplicate_hides_the_database(store: &dyn KeyStore) {
    let now = OffsetDateTime::UNIX_EPOCH;
    store.insert_key(key(1), None, now).await.unwrap();
    let mut twin = key(2);
    twin.hash = key(1).hash;
    for dup in [key(1), twin] {
        let err = store.insert_key(dup, None, now).await.unwrap_err();
        let StoreError::Conflict(text) = &err else {
            panic!("{err:?}");
        };
        for quoted in ["api_keys", "UNIQUE", "violates", "constraint"] {
            assert!(!text.contains(quoted), "{text}");
        }
        let shown = Error::from(err).to_string();
        assert!(!shown.contains("api_keys"), "{shown}");
    }
}

/// A service on a store without tables still never verifies a key (503), and
/// management calls say the store is misconfigured (500) without details.
async fn assert_misconfigured_service(store: Arc<dyn KeyStore>) {
    let api = service(store);
    let presented = api.profile().formats()[0].generate();
    assert_eq!(
        api.verify(presented.expose_secret()).await.unwrap_err(),
        AuthError::Unavailable
    );
    let org = AccountId::new("org_unset").unwrap();
    let created = api
        .as_account(&org)
        .create(&org, CreateKey::new("x").bundle("sdk"))
        .await
        .unwrap_err();
    assert!(
        matches!(created, Error::Store(StoreError::Misconfigured(_))),
        "{created:?}"
    );
    let listed = api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(listed, Error::Store(StoreError::Misconfigured(_))),
        "{listed:?}"
    );
    assert_eq!(listed.status(), 500);
    assert_eq!(listed.code(), "store_misconfigured");
}

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    use super::*;
    use keygate::SqliteStore;

    pub(crate) async fn missing_tables_are_misconfigured_with_the_sqlx_error_as_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("empty.db"))
            .await
            .unwrap();
        let err = store.find_by_lookup("abc").await.unwrap_err();
        assert!(matches!(err, StoreError::Misconfigured(_)), "{err:?}");
        let db = sqlx_source(&err)
            .as_database_error()
            .unwrap_or_else(|| panic!("not a database error: {err:?}"));
        assert!(db.message().contains("no such table"), "{}", db.message());

        assert_misconfigured_service(Arc::new(store)).await;
    }

    pub(crate) async fn closed_pool_is_unavailable_with_the_sqlx_error_as_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
        store.migrate().await.unwrap();
        store.pool().close().await;
        let err = store.find_by_lookup("abc").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            matches!(sqlx_source(&err), sqlx::Error::PoolClosed),
            "{err:?}"
        );
    }

    pub(crate) async fn duplicates_do_not_quote_the_database() {
        let store = SqliteStore::in_memory().await.unwrap();
        assert_duplicate_hides_the_database(&store).await;
    }

    pub(crate) async fn invalid_url_is_misconfigured() {
        let err = SqliteStore::connect("sqlite://keys.db?mode=sideways")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Misconfigured(_)), "{err:?}");
        assert!(err.source().and_then(|c| c.source()).is_some(), "{err:?}");
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use std::str::FromStr;
    use std::time::Duration;

    use super::*;
    use crate::support::{drop_schema, postgres_url, random_schema, skip_or_fail};
    use keygate::PostgresStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{ConnectOptions, Connection};

    /// The test database's URL, or `None` (after skipping or failing as
    /// `KEYGATE_REQUIRE_SERVICES` says) when it does not answer.
    async fn reachable_url() -> Option<String> {
        let url = postgres_url();
        let options = PgConnectOptions::from_str(&url).expect("test database url");
        match tokio::time::timeout(Duration::from_secs(3), options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Some(url)
            }
            Ok(Err(e)) => {
                skip_or_fail("postgres", &format!("{url}: {e}"));
                None
            }
            Err(_) => {
                skip_or_fail("postgres", &format!("{url}: no answer within 3 s"));
                None
            }
        }
    }

    /// Drops the schema when the test ends, however it ends.
    struct Schema {
        url: String,
        name: String,
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let (url, name) = (self.url.clone(), self.name.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let _ = rt.block_on(drop_schema(&url, &name));
            })
            .join();
        }
    }

    pub(crate) async fn schema_without_tables_is_misconfigured_with_the_sqlx_error_as_source() {
        let Some(url) = reachable_url().await else {
            return;
        };
        let schema = Schema {
            url: url.clone(),
            name: random_schema(),
        };
        // Connected (which creates the schema) but never migrated.
        let store = PostgresStore::connect_with_schema(&url, &schema.name)
            .await
            .unwrap();
        let err = store.find_by_lookup("abc").await.unwrap_err();
        assert!(matches!(err, StoreError::Misconfigured(_)), "{err:?}");
        let db = sqlx_source(&err)
            .as_database_error()
            .unwrap_or_else(|| panic!("not a database error: {err:?}"));
        assert_eq!(db.code().as_deref(), Some("42P01"), "{err:?}");

        assert_misconfigured_service(Arc::new(store.clone())).await;
        store.pool().close().await;
    }

    pub(crate) async fn unknown_role_or_database_is_misconfigured() {
        let Some(url) = reachable_url().await else {
            return;
        };
        let options = PgConnectOptions::from_str(&url).unwrap();
        for (bad, code) in [
            (options.clone().username("keygate_no_such_role"), "28000"),
            (options.clone().database("keygate_no_such_db"), "3D000"),
        ] {
            let pool = PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(bad);
            let err = PostgresStore::from_pool(pool)
                .find_by_lookup("abc")
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Misconfigured(_)), "{err:?}");
            let db = sqlx_source(&err)
                .as_database_error()
                .unwrap_or_else(|| panic!("not a database error: {err:?}"));
            assert_eq!(db.code().as_deref(), Some(code), "{err:?}");
        }
    }

    pub(crate) async fn invalid_url_is_misconfigured() {
        let err = PostgresStore::connect("postgres://127.0.0.1:notaport/test")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Misconfigured(_)), "{err:?}");
        assert!(err.source().and_then(|c| c.source()).is_some(), "{err:?}");
    }

    pub(crate) async fn duplicates_do_not_quote_the_database() {
        let Some(pg) = crate::support::postgres_store().await else {
            return;
        };
        assert_duplicate_hides_the_database(pg.postgres().as_ref()).await;
        pg.cleanup().await;
    }

    pub(crate) async fn closed_pool_is_unavailable_with_the_sqlx_error_as_source() {
        let Some(pg) = crate::support::postgres_store().await else {
            return;
        };
        pg.postgres().pool().close().await;
        let err = pg.postgres().find_by_lookup("abc").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            matches!(sqlx_source(&err), sqlx::Error::PoolClosed),
            "{err:?}"
        );
        pg.cleanup().await;
    }
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    #[cfg(feature = "sqlite")]
    trials.extend(trials![
        tokio(Rt::CURRENT) sqlite::missing_tables_are_misconfigured_with_the_sqlx_error_as_source,
        tokio(Rt::CURRENT) sqlite::closed_pool_is_unavailable_with_the_sqlx_error_as_source,
        tokio(Rt::CURRENT) sqlite::duplicates_do_not_quote_the_database,
        tokio(Rt::CURRENT) sqlite::invalid_url_is_misconfigured,
    ]);
    #[cfg(feature = "postgres")]
    trials.extend(trials![
        tokio(Rt::CURRENT) postgres::schema_without_tables_is_misconfigured_with_the_sqlx_error_as_source,
        tokio(Rt::CURRENT) postgres::unknown_role_or_database_is_misconfigured,
        tokio(Rt::CURRENT) postgres::invalid_url_is_misconfigured,
        tokio(Rt::CURRENT) postgres::duplicates_do_not_quote_the_database,
        tokio(Rt::CURRENT) postgres::closed_pool_is_unavailable_with_the_sqlx_error_as_source,
    ]);
    support::harness::run(trials)
}
