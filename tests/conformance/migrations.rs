//! `migrate()` is idempotent and safe to run from several instances at once.

#[cfg(feature = "sqlite")]
mod sqlite {
    use keygate::store::KeyStore;
    use keygate::SqliteStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_on_one_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(SqliteStore::open(&path).await.unwrap());
        }
        let runs: Vec<_> = stores
            .iter()
            .cloned()
            .map(|s| tokio::spawn(async move { s.migrate().await }))
            .collect();
        for run in runs {
            run.await.unwrap().unwrap();
        }
        // And again, now that everything is applied.
        stores[0].migrate().await.unwrap();
        let account = keygate::AccountId::new("org_1").unwrap();
        assert_eq!(stores[3].get_account(&account).await.unwrap(), None);
    }

    #[tokio::test]
    async fn connect_accepts_urls_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("by_url.db");
        let url = format!("sqlite://{}", path.display());
        SqliteStore::connect(&url)
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap();
        assert!(path.exists());
        let plain = dir.path().join("by_path.db");
        SqliteStore::connect(plain.to_str().unwrap())
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap();
        assert!(plain.exists());
        let memory = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let account = keygate::AccountId::new("org_1").unwrap();
        assert_eq!(memory.get_account(&account).await.unwrap(), None);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;

    use keygate::store::{AccountRecord, KeyStore};
    use keygate::{AccountId, PostgresStore};

    use crate::support;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_in_one_schema_all_succeed() {
        // Reachability and skipping as for every Postgres test.
        let Some(probe) = support::postgres_store().await else {
            return;
        };
        probe.cleanup().await;
        let url = support::postgres_url();
        let schema = support::random_schema();
        let connects: Vec<_> = (0..4)
            .map(|_| {
                let (url, schema) = (url.clone(), schema.clone());
                tokio::spawn(async move { PostgresStore::connect_with_schema(&url, &schema).await })
            })
            .collect();
        let mut stores = Vec::new();
        for c in connects {
            stores.push(Arc::new(c.await.unwrap().unwrap()));
        }
        let runs: Vec<_> = stores
            .iter()
            .cloned()
            .map(|s| tokio::spawn(async move { s.migrate().await }))
            .collect();
        let mut results = Vec::new();
        for run in runs {
            results.push(run.await.unwrap());
        }
        stores[0].migrate().await.unwrap();
        let account = AccountRecord {
            id: AccountId::new("org_1").unwrap(),
            parent: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        stores[1].create_account(account.clone()).await.unwrap();
        let seen = stores[2].get_account(&account.id).await.unwrap();
        for s in &stores {
            s.pool().close().await;
        }
        support::drop_schema(&url, &schema).await.unwrap();
        for r in results {
            r.unwrap();
        }
        assert_eq!(seen, Some(account));
    }

    #[tokio::test]
    async fn schemas_keep_their_keys_apart() {
        let Some(a) = support::postgres_store().await else {
            return;
        };
        let Some(b) = support::postgres_store().await else {
            return;
        };
        let account = AccountRecord {
            id: AccountId::new("org_1").unwrap(),
            parent: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        a.store().create_account(account.clone()).await.unwrap();
        assert_eq!(
            a.store().get_account(&account.id).await.unwrap(),
            Some(account.clone())
        );
        assert_eq!(b.store().get_account(&account.id).await.unwrap(), None);
        a.cleanup().await;
        b.cleanup().await;
    }
}
