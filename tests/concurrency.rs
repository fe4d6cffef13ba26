//! Races between instances, enforced by the database rather than by a check
//! before the write: four instances importing one key store it once, four
//! instances creating against a key limit never exceed it (on PostgreSQL at
//! READ COMMITTED, REPEATABLE READ and SERIALIZABLE defaults), and a key is
//! rotated at most once however many rotations race.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use keygate::{
    profiles, AccountId, ApiKeys, CreateKey, Error, KeyStore, ListOptions, MemoryStore, Pepper,
    Profile, Rotation,
};

const INSTANCES: usize = 4;
const ROUNDS: usize = 10;

fn instance(profile: Profile, store: Arc<dyn KeyStore>) -> ApiKeys {
    ApiKeys::builder(profile)
        .store(store)
        .pepper(Pepper::new(1, [3u8; 32]).unwrap())
        .build()
        .unwrap()
}

/// Awaits racing calls and counts the successes; every failure must be
/// `refused`, the answer the losers of the race get.
async fn successes<T>(
    tasks: Vec<tokio::task::JoinHandle<Result<T, Error>>>,
    refused: Error,
) -> usize {
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e, refused),
        }
    }
    ok
}

/// Four instances (one store each, on one database) import the same key at
/// once, for each round: exactly one import succeeds, the rest get the same
/// `Conflict`, and the account holds one key.
async fn imports_store_a_key_once(stores: Vec<Arc<dyn KeyStore>>, profile: Profile) {
    let apis: Vec<ApiKeys> = stores
        .into_iter()
        .map(|s| instance(profile.clone(), s))
        .collect();
    for round in 0..ROUNDS {
        let account = AccountId::new(format!("imp_{round}")).unwrap();
        let kept = profile.formats()[0].generate().to_presented().to_string();
        let tasks: Vec<_> = apis
            .iter()
            .map(|api| {
                let (api, account, kept) = (api.clone(), account.clone(), kept.clone());
                tokio::spawn(async move {
                    api.operator()
                        .import(
                            &account,
                            &kept,
                            CreateKey::new("admin").bundle("full_access"),
                        )
                        .await
                })
            })
            .collect();
        let ok = successes(tasks, Error::Conflict(keygate::ConflictKind::KeyInUse)).await;
        assert_eq!(ok, 1, "round {round}: one import stores the key");
        let page = apis[0]
            .operator()
            .list(&account, ListOptions::default())
            .await
            .unwrap();
        assert_eq!(page.data.len(), 1, "round {round}");
        // Revoking that one record leaves no other copy verifying.
        apis[0].operator().revoke(&page.data[0].id).await.unwrap();
        assert!(apis[1].verify(&kept).await.is_err());
    }
}

/// Four instances race 40 creates against a limit of 3, for each round.
async fn creates_never_exceed_the_limit(stores: Vec<Arc<dyn KeyStore>>) {
    let mut profile = profiles::default();
    profile = profile.with_key_limit(Some(3));
    let apis: Vec<ApiKeys> = stores
        .into_iter()
        .map(|s| instance(profile.clone(), s))
        .collect();
    for round in 0..ROUNDS {
        let account = AccountId::new(format!("lim_{round}")).unwrap();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (api, account) = (apis[i % INSTANCES].clone(), account.clone());
                tokio::spawn(async move {
                    api.operator()
                        .create(&account, CreateKey::new(format!("k{i}")))
                        .await
                })
            })
            .collect();
        let ok = successes(tasks, Error::KeyLimitReached { limit: 3 }).await;
        assert_eq!(ok, 3, "round {round}");
    }
}

/// Four instances rotate one key with a grace period at once: one succeeds.
async fn a_key_is_rotated_once(stores: Vec<Arc<dyn KeyStore>>) {
    let apis: Vec<ApiKeys> = stores
        .into_iter()
        .map(|s| instance(profiles::mailkite(), s))
        .collect();
    for round in 0..ROUNDS {
        let account = AccountId::new(format!("rot_{round}")).unwrap();
        let first = apis[0]
            .operator()
            .create(&account, CreateKey::new("live"))
            .await
            .unwrap();
        let tasks: Vec<_> = apis
            .iter()
            .map(|api| {
                let (api, id) = (api.clone(), first.info.id.clone());
                tokio::spawn(async move {
                    api.operator()
                        .rotate(&id, Rotation::Grace(Duration::from_secs(60)))
                        .await
                })
            })
            .collect();
        let ok = successes(tasks, Error::AlreadyRotated).await;
        assert_eq!(ok, 1, "round {round}");
        let live = apis[0]
            .operator()
            .list(&account, ListOptions::default())
            .await
            .unwrap()
            .data
            .len();
        assert_eq!(live, 2, "round {round}: the old key and one successor");
    }
}

/// Four instances reset one key's secret at once, and revoke races rotate:
/// exactly the last reset secret verifies, and a revoked key never works
/// (nor does a successor appear after its revocation was decided).
async fn resets_and_revokes_race_cleanly(stores: Vec<Arc<dyn KeyStore>>) {
    let apis: Vec<ApiKeys> = stores
        .into_iter()
        .map(|s| instance(profiles::mailjet(), s))
        .collect();
    for round in 0..ROUNDS {
        let account = AccountId::new(format!("rst_{round}")).unwrap();
        let first = apis[0]
            .operator()
            .create(&account, CreateKey::new("pair"))
            .await
            .unwrap();
        let tasks: Vec<_> = apis
            .iter()
            .map(|api| {
                let (api, id) = (api.clone(), first.info.id.clone());
                tokio::spawn(async move { api.operator().reset_secret(&id).await })
            })
            .collect();
        let mut secrets = Vec::new();
        for task in tasks {
            secrets.push(task.await.unwrap().unwrap().key.to_presented().to_string());
        }
        let mut working = 0;
        for secret in &secrets {
            if apis[1].verify(secret).await.is_ok() {
                working += 1;
            }
        }
        assert_eq!(working, 1, "round {round}: one reset wins");
        assert!(apis[2]
            .verify(first.key.to_presented().as_ref())
            .await
            .is_err());

        // Revoke and rotate race on one key.
        let key = apis[0]
            .operator()
            .create(&account, CreateKey::new("raced"))
            .await
            .unwrap();
        let (a, b) = (apis[1].clone(), apis[2].clone());
        let (id_a, id_b) = (key.info.id.clone(), key.info.id.clone());
        let revoke = tokio::spawn(async move { a.operator().revoke(&id_a).await });
        let rotate =
            tokio::spawn(async move { b.operator().rotate(&id_b, Rotation::Immediate).await });
        revoke.await.unwrap().unwrap();
        match rotate.await.unwrap() {
            Ok(next) => assert!(apis[3]
                .verify(next.key.to_presented().as_ref())
                .await
                .is_ok()),
            Err(e) => assert_eq!(e, Error::Revoked, "round {round}"),
        }
        assert!(apis[3]
            .verify(key.key.to_presented().as_ref())
            .await
            .is_err());
    }
}

fn memory() -> Vec<Arc<dyn KeyStore>> {
    let store: Arc<dyn KeyStore> = Arc::new(MemoryStore::new());
    vec![store; INSTANCES]
}

pub(crate) async fn memory_races() {
    imports_store_a_key_once(memory(), profiles::mailjawn()).await;
    imports_store_a_key_once(memory(), profiles::mailjet()).await;
    creates_never_exceed_the_limit(memory()).await;
    a_key_is_rotated_once(memory()).await;
    resets_and_revokes_race_cleanly(memory()).await;
}

#[cfg(feature = "sqlite")]
async fn sqlite(dir: &tempfile::TempDir) -> Vec<Arc<dyn KeyStore>> {
    let path = dir.path().join("keys.db");
    let mut stores: Vec<Arc<dyn KeyStore>> = Vec::new();
    for _ in 0..INSTANCES {
        let store = keygate::SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        stores.push(Arc::new(store));
    }
    stores
}

#[cfg(feature = "sqlite")]
pub(crate) async fn sqlite_races() {
    let dir = tempfile::tempdir().unwrap();
    imports_store_a_key_once(sqlite(&dir).await, profiles::mailjawn()).await;
    imports_store_a_key_once(sqlite(&dir).await, profiles::mailjet()).await;
    creates_never_exceed_the_limit(sqlite(&dir).await).await;
    a_key_is_rotated_once(sqlite(&dir).await).await;
    resets_and_revokes_race_cleanly(sqlite(&dir).await).await;
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    use super::*;

    /// Four stores, each with its own pool, on one fresh schema, with the
    /// connections' default isolation level set to `isolation`.
    async fn stores(isolation: &str) -> Option<(support::TestPostgres, Vec<Arc<dyn KeyStore>>)> {
        let pg = support::postgres_store().await?;
        let mut stores: Vec<Arc<dyn KeyStore>> = Vec::new();
        for _ in 0..INSTANCES {
            let options = PgConnectOptions::from_str(pg.url()).unwrap().options([
                ("search_path", format!("\"{}\"", pg.schema())),
                // Spaces in a startup option are escaped with a backslash.
                (
                    "default_transaction_isolation",
                    isolation.replace(' ', "\\ "),
                ),
            ]);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .unwrap();
            let level: String = sqlx::query_scalar("SHOW default_transaction_isolation")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(level, isolation);
            let store = keygate::PostgresStore::from_pool(pool)
                .with_channel(pg.postgres().channel())
                .unwrap();
            stores.push(Arc::new(store));
        }
        Some((pg, stores))
    }

    async fn races(isolation: &str) {
        let Some((pg, set)) = stores(isolation).await else {
            return;
        };
        imports_store_a_key_once(set.clone(), profiles::mailjawn()).await;
        imports_store_a_key_once(set.clone(), profiles::mailjet()).await;
        creates_never_exceed_the_limit(set.clone()).await;
        a_key_is_rotated_once(set.clone()).await;
        resets_and_revokes_race_cleanly(set).await;
        pg.cleanup().await;
    }

    pub(crate) async fn postgres_races_at_read_committed() {
        races("read committed").await;
    }

    pub(crate) async fn postgres_races_at_repeatable_read() {
        races("repeatable read").await;
    }

    pub(crate) async fn postgres_races_at_serializable() {
        races("serializable").await;
    }
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::multi(4)) memory_races,
        tokio(Rt::multi(4)) sqlite_races,
    ]);
    #[cfg(feature = "postgres")]
    trials.extend(trials![
        tokio(Rt::multi(4)) postgres::postgres_races_at_read_committed,
        tokio(Rt::multi(4)) postgres::postgres_races_at_repeatable_read,
        tokio(Rt::multi(4)) postgres::postgres_races_at_serializable,
    ]);
    support::harness::run(trials)
}
