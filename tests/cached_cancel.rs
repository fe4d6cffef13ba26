//! Writes through a `CachedStore` that are cancelled part-way (a client that
//! disconnects, a timeout) must not leave the cache answering with what the
//! store no longer holds: whenever the store shows a change, a lookup
//! through the cache shows it too, right after the cancellation and once
//! whatever the cancelled call left in flight has landed.

mod support;

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use keygate::hash::SecretHash;
use keygate::store::{KeyRecord, OldKey};
use keygate::{AccountId, CachedStore, KeyId, KeyStore};
use support::at;

/// Budgets start at zero (one poll) and grow by an eighth, at least this much.
const MIN_STEP: Duration = Duration::from_micros(1);
/// Attempts per budget, since where a cancellation lands varies from run to
/// run.
const REPEATS: usize = 2;
/// Budgets never exceed this; a write that needs longer fails the test.
const MAX_BUDGET: Duration = Duration::from_secs(5);
/// How long lookups go on after the write returned or was cancelled.
const READING: Duration = Duration::from_millis(2);
/// Long enough for a statement sent before the cancellation to finish.
const SETTLE: Duration = Duration::from_millis(10);
/// Completed calls needed before the loop stops.
const COMPLETIONS: usize = 3;

fn hash(n: u64) -> SecretHash {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&n.to_be_bytes());
    SecretHash::from_parts(1, digest)
}

fn record(id: &str, lookup: &str, n: u64) -> KeyRecord {
    support::key_record(
        KeyId::new(id),
        AccountId::new("org_cancel").expect("valid account id"),
        format!("key {n}"),
        lookup.into(),
        hash(n),
    )
}

/// Runs `fut` until it completes or `budget` has passed, polling it again
/// at once after every `Pending` so that the cancellation lands within
/// microseconds of the budget rather than on a timer tick. `None` means it
/// was dropped unfinished.
async fn within<F: Future>(budget: Duration, fut: F) -> Option<F::Output> {
    let deadline = Instant::now() + budget;
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if Instant::now() >= deadline {
            return Poll::Ready(None);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Revoke,
    ReplaceSecret,
    Rotate,
}

/// One attempt's keys: the key written to, and the lookup id (and, for a
/// rotation, the key id) the write brings in.
struct Attempt {
    key: KeyRecord,
    new_lookup: String,
    new_id: KeyId,
    new_hash: u64,
}

impl Attempt {
    /// Ids and lookup ids unique to attempt `n` at `op`.
    fn new(op: Op, n: u64) -> Self {
        let tag = format!("{op:?}_{n:06}").to_lowercase();
        // Secrets differ across operations too: the store refuses a second
        // active key with the same secret, and the cases share a database.
        let salt = (op as u64) << 40;
        Self {
            key: record(&format!("key_{tag}"), &format!("lk_{tag}"), n + salt),
            new_lookup: format!("nx_{tag}"),
            new_id: KeyId::new(format!("new_{tag}")),
            new_hash: 1_000_000 + n + salt,
        }
    }

    async fn write(&self, cached: &CachedStore, op: Op) -> Result<(), keygate::StoreError> {
        match op {
            Op::Revoke => cached.revoke_key(&self.key.id, at(1)).await,
            Op::ReplaceSecret => {
                cached
                    .replace_secret(&self.key.id, &self.new_lookup, hash(self.new_hash), at(1))
                    .await
            }
            Op::Rotate => {
                let mut new = record(self.new_id.as_str(), &self.new_lookup, self.new_hash);
                new.created_at = at(1);
                cached
                    .rotate_key(&self.key.id, new, OldKey::RevokeAt(at(1)))
                    .await
            }
        }
    }

    /// If the store shows the write, the cache must show it too. The store
    /// is read first, so a write landing between the two reads can only make
    /// the cache look newer, never trip the check.
    async fn check(&self, inner: &Arc<dyn KeyStore>, cached: &CachedStore, op: Op, when: &str) {
        let id = &self.key.id;
        let ids = |entries: &[Arc<keygate::store::KeyEntry>]| -> Vec<KeyId> {
            entries.iter().map(|e| e.record().id.clone()).collect()
        };
        match op {
            Op::Revoke => {
                let stored = inner.get_key(id).await.unwrap().expect("key exists");
                if stored.record().revoked_at.is_none() {
                    return;
                }
                let seen = cached.find_by_lookup(&self.key.lookup).await.unwrap();
                let entry = seen.iter().find(|e| &e.record().id == id);
                let revoked = entry.is_some_and(|e| e.record().revoked_at.is_some());
                assert!(
                    revoked,
                    "{op:?} {when}: the cache still serves {id:?} unrevoked"
                );
            }
            Op::ReplaceSecret => {
                let stored = inner.get_key(id).await.unwrap().expect("key exists");
                if stored.record().lookup != self.new_lookup {
                    return;
                }
                let old = cached.find_by_lookup(&self.key.lookup).await.unwrap();
                assert!(
                    !ids(&old).contains(id),
                    "{op:?} {when}: the cache still finds {id:?} by its old lookup id"
                );
                let new = cached.find_by_lookup(&self.new_lookup).await.unwrap();
                let entry = new.iter().find(|e| &e.record().id == id);
                assert!(
                    entry.is_some_and(|e| e.record().hash == hash(self.new_hash)),
                    "{op:?} {when}: the cache does not find {id:?} by its new secret"
                );
            }
            Op::Rotate => {
                if inner.get_key(&self.new_id).await.unwrap().is_none() {
                    return;
                }
                let old = cached.find_by_lookup(&self.key.lookup).await.unwrap();
                let entry = old.iter().find(|e| &e.record().id == id);
                assert!(
                    entry.is_some_and(|e| e.record().revoked_at.is_some()),
                    "{op:?} {when}: the cache still serves the rotated-out {id:?} unrevoked"
                );
                let new = cached.find_by_lookup(&self.new_lookup).await.unwrap();
                assert!(
                    ids(&new).contains(&self.new_id),
                    "{op:?} {when}: the cache does not find the new key {:?}",
                    self.new_id
                );
            }
        }
    }
}

/// One database, opened afresh for every attempt.
///
/// sqlx 0.8 can leave a pooled connection inside its transaction when a
/// `BEGIN` is cancelled at the wrong moment (transact-rs/sqlx#4393 for
/// Postgres; SQLite's `BEGIN IMMEDIATE` through `begin_with` has a like
/// window), and that connection then holds its locks for whoever borrows it
/// next. A pool per attempt, closed after it, keeps one attempt's leftovers
/// from blocking the next; the checks within an attempt only read.
enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(std::path::PathBuf),
    #[cfg(feature = "postgres")]
    Postgres { url: String, schema: String },
}

enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(keygate::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(keygate::PostgresStore),
}

impl Db {
    async fn open(&self) -> Pool {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(path) => Pool::Sqlite(keygate::SqliteStore::open(path).await.expect("open")),
            #[cfg(feature = "postgres")]
            Db::Postgres { url, schema } => Pool::Postgres(
                keygate::PostgresStore::connect_with_schema(url, schema)
                    .await
                    .expect("connect"),
            ),
        }
    }
}

impl Pool {
    fn store(&self) -> Arc<dyn KeyStore> {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(store) => Arc::new(store.clone()),
            #[cfg(feature = "postgres")]
            Pool::Postgres(store) => Arc::new(store.clone()),
        }
    }

    async fn close(self) {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(store) => store.pool().close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(store) => store.pool().close().await,
        }
    }
}

/// Cancels `op` through a cache (with no change follower) after budgets
/// growing from zero until it has completed a few times, checking the cache
/// against the store after every attempt.
async fn cancelled_writes_leave_no_stale_answers(db: &Db, op: Op) {
    let (mut cancelled, mut completed) = (0, 0);
    let mut budget = Duration::ZERO;
    let mut n = 0;
    while completed < COMPLETIONS {
        assert!(
            budget <= MAX_BUDGET,
            "{op:?} never completed within {budget:?}"
        );
        n += 1;
        if n % REPEATS as u64 == 0 {
            budget += MIN_STEP.max(budget / 8);
        }
        let pool = db.open().await;
        let inner = pool.store();
        let cached = CachedStore::new(inner.clone());
        let attempt = Attempt::new(op, n);
        cached
            .insert_key(attempt.key.clone(), None, at(0))
            .await
            .expect("insert");
        // Cache the key as it is and the new lookup id as unknown.
        let found = cached.find_by_lookup(&attempt.key.lookup).await.unwrap();
        assert_eq!(found.len(), 1);
        let found = cached.find_by_lookup(&attempt.new_lookup).await.unwrap();
        assert!(found.is_empty());
        // Lookups through the cache all along, as verifies would make: any
        // of them may read the store between the write and its invalidation.
        let reading = Arc::new(AtomicBool::new(true));
        let reader = tokio::spawn({
            let (cached, reading) = (cached.clone(), reading.clone());
            let lookups = [attempt.key.lookup.clone(), attempt.new_lookup.clone()];
            async move {
                while reading.load(Ordering::Relaxed) {
                    for lookup in &lookups {
                        cached.find_by_lookup(lookup).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        match within(budget, attempt.write(&cached, op)).await {
            Some(result) => {
                result.unwrap_or_else(|e| panic!("{op:?} failed: {e}"));
                completed += 1;
            }
            None => cancelled += 1,
        }
        attempt.check(&inner, &cached, op, "at once").await;
        tokio::time::sleep(READING).await;
        reading.store(false, Ordering::Relaxed);
        reader.await.unwrap();
        tokio::time::sleep(SETTLE).await;
        attempt.check(&inner, &cached, op, "once settled").await;
        drop((cached, inner));
        pool.close().await;
    }
    eprintln!("{op:?}: {cancelled} cancelled, {completed} completed, last budget {budget:?}");
    assert!(cancelled > 0, "{op:?} completed even with no budget");
}

#[cfg(feature = "sqlite")]
pub(crate) async fn sqlite_cancelled_writes_leave_no_stale_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.db");
    let store = keygate::SqliteStore::open(&path).await.expect("open");
    store.migrate().await.expect("migrate");
    store.pool().close().await;
    let db = Db::Sqlite(path);
    for op in [Op::Revoke, Op::ReplaceSecret, Op::Rotate] {
        cancelled_writes_leave_no_stale_answers(&db, op).await;
    }
}

#[cfg(feature = "postgres")]
pub(crate) async fn postgres_cancelled_writes_leave_no_stale_answers() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let db = Db::Postgres {
        url: pg.url().to_owned(),
        schema: pg.schema().to_owned(),
    };
    for op in [Op::Revoke, Op::ReplaceSecret, Op::Rotate] {
        cancelled_writes_leave_no_stale_answers(&db, op).await;
    }
    pg.cleanup().await;
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::multi(2)) sqlite_cancelled_writes_leave_no_stale_answers,
        tokio(Rt::multi(2)) postgres_cancelled_writes_leave_no_stale_answers,
    ]);
    support::harness::run(trials)
}
