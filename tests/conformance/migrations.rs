//! `migrate()` is idempotent and safe to run from several instances at once,
//! and upgrades a database made by an earlier version with its data.

/// A migrator with only the migrations of `backend` (`sqlite` or `postgres`)
/// before `first_missing`, as an earlier version of keygate shipped them.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn earlier_migrator(
    backend: &str,
    first_missing: &str,
) -> (sqlx::migrate::Migrator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < first_missing {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    (migrator, dir)
}

/// The `api_keys` row an earlier version stored: no `secret_set_at` column.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const OLD_ROW: &str = "INSERT INTO api_keys (id, account, name, format, lookup, hash, \
    hash_version, created_at) VALUES ('key_old', 'org_old', 'old', 'pair', 'lk_old', \
    '0123456789abcdef0123456789abcdef', 1, 1735689600000)";

/// The migration that adds secret ages.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const SECRET_AGE: &str = "20261125000002";

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    use keygate::store::KeyStore;
    use keygate::SqliteStore;

    pub(crate) async fn concurrent_migrations_on_one_file_all_succeed() {
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

    /// Keys stored before secret ages were recorded count from their
    /// creation (`001_1096317fca88c73a.txt`'s 90-day advice needs a start).
    pub(crate) async fn secret_age_migration_backfills_from_created_at() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
        let (earlier, _files) = super::earlier_migrator("sqlite", super::SECRET_AGE).await;
        earlier.run(store.pool()).await.unwrap();
        sqlx::query(&super::OLD_ROW.replace(
            "'0123456789abcdef0123456789abcdef'",
            "x'0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'",
        ))
        .execute(store.pool())
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let old = store
            .get_key(&keygate::KeyId::new("key_old"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old.record().secret_set_at, old.record().created_at);
        assert_eq!(old.record().created_at.unix_timestamp(), 1_735_689_600);
    }

    pub(crate) async fn connect_accepts_urls_and_paths() {
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
pub(crate) mod postgres {
    use std::sync::Arc;

    use keygate::store::{AccountRecord, KeyStore};
    use keygate::{AccountId, PostgresStore};

    use crate::support;

    pub(crate) async fn concurrent_migrations_in_one_schema_all_succeed() {
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

    /// Keys stored before secret ages were recorded count from their
    /// creation (`001_1096317fca88c73a.txt`'s 90-day advice needs a start).
    pub(crate) async fn secret_age_migration_backfills_from_created_at() {
        let Some(probe) = support::postgres_store().await else {
            return;
        };
        probe.cleanup().await;
        let (url, schema) = (support::postgres_url(), support::random_schema());
        let store = PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap();
        let (earlier, _files) = super::earlier_migrator("postgres", super::SECRET_AGE).await;
        earlier.run(store.pool()).await.unwrap();
        let row = super::OLD_ROW.replace(
            "'0123456789abcdef0123456789abcdef'",
            "'\\x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'",
        );
        sqlx::query(&row).execute(store.pool()).await.unwrap();
        store.migrate().await.unwrap();
        let old = store.get_key(&keygate::KeyId::new("key_old")).await;
        store.pool().close().await;
        support::drop_schema(&url, &schema).await.unwrap();
        let old = old.unwrap().unwrap();
        assert_eq!(old.record().secret_set_at, old.record().created_at);
        assert_eq!(old.record().created_at.unix_timestamp(), 1_735_689_600);
    }

    pub(crate) async fn schemas_keep_their_keys_apart() {
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
