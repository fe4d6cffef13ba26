//! A store that cannot answer makes verify fail with `AuthError::Unavailable`
//! (503), never success and never `Invalid`, and management calls fail with
//! `Error::Store(StoreError::Unavailable(_))`, or `Misconfigured` when the
//! store cannot work until its setup is fixed (no tables, say).

use std::sync::Arc;

use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, Error, KeyStore, ListOptions, Pepper,
    StoreError,
};

fn service(store: Arc<dyn KeyStore>) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(Pepper::new(1, [42u8; 32]).unwrap())
        .build()
        .unwrap()
}

fn org() -> AccountId {
    AccountId::new("org_down").unwrap()
}

/// Every entry point of a service whose store is down reports it as such.
async fn assert_unavailable(api: &ApiKeys, presented: &str) {
    assert_eq!(
        api.verify(presented).await.unwrap_err(),
        AuthError::Unavailable
    );
    let created = api
        .as_account(&org())
        .create(&org(), CreateKey::new("x").bundle("sdk"))
        .await;
    assert!(
        matches!(created, Err(Error::Store(StoreError::Unavailable(_)))),
        "{created:?}"
    );
    let listed = api
        .as_account(&org())
        .list(&org(), ListOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(listed, Error::Store(StoreError::Unavailable(_))),
        "{listed:?}"
    );
    assert_eq!(listed.status(), 503);
}

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    use super::*;
    use keygate::SqliteStore;

    pub(crate) async fn closed_pool_makes_verify_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
        store.migrate().await.unwrap();
        let api = service(Arc::new(store.clone()));
        let key = api
            .as_account(&org())
            .create(&org(), CreateKey::new("ci").bundle("sdk"))
            .await
            .unwrap();
        assert!(api.verify(key.key.expose_secret()).await.is_ok());
        store.pool().close().await;
        assert_unavailable(&api, key.key.expose_secret()).await;
    }

    pub(crate) async fn missing_tables_make_verify_unavailable_not_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
        let api = service(Arc::new(store));
        let presented = api.profile().formats()[0].generate();
        assert_eq!(
            api.verify(presented.expose_secret()).await.unwrap_err(),
            AuthError::Unavailable
        );
        let listed = api
            .as_account(&org())
            .list(&org(), ListOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(listed, Error::Store(StoreError::Misconfigured(_))),
            "{listed:?}"
        );
        assert_eq!(listed.status(), 500);
    }

    pub(crate) async fn unopenable_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no_such_dir").join("keys.db");
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use std::str::FromStr;
    use std::time::Duration;

    use super::*;
    use keygate::PostgresStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    pub(crate) async fn closed_pool_makes_verify_unavailable() {
        let Some(pg) = crate::support::postgres_store().await else {
            return;
        };
        let api = service(pg.store());
        let key = api
            .as_account(&org())
            .create(&org(), CreateKey::new("ci").bundle("sdk"))
            .await
            .unwrap();
        assert!(api.verify(key.key.expose_secret()).await.is_ok());
        pg.postgres().pool().close().await;
        assert_unavailable(&api, key.key.expose_secret()).await;
        pg.cleanup().await;
    }

    pub(crate) async fn dead_port_makes_verify_unavailable() {
        let options = PgConnectOptions::from_str("postgres://postgres@127.0.0.1:1/test").unwrap();
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(300))
            .connect_lazy_with(options);
        let api = service(Arc::new(PostgresStore::from_pool(pool)));
        let presented = api.profile().formats()[0].generate();
        assert_unavailable(&api, presented.expose_secret()).await;
    }

    pub(crate) async fn invalid_schema_names_are_refused_before_connecting() {
        let dead = "postgres://postgres@127.0.0.1:1/test";
        for bad in ["a b", "x\"; DROP TABLE api_keys; --", "", "1st"] {
            let err = PostgresStore::connect_with_schema(dead, bad)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, StoreError::Misconfigured(m) if m.message().contains("invalid schema name")),
                "{err:?}"
            );
        }
    }
}
