//! [`SqliteStore`]: keys in a SQLite database through `sqlx`, for a single
//! machine (one file, any number of processes on it).

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection};
use time::OffsetDateTime;

use super::sql::{self, AccountRow, Encoded, EncodedIdentity, IdentityRow, KeyRow};
use super::{
    to_millis, AccountId, AccountRecord, KeyChange, KeyEntry, KeyId, KeyRecord, KeyStore,
    ListQuery, OldKey, Rehash, SecretAgeQuery, SharedSpend, Spend, StoreError,
};
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityChange, IdentityId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The key columns, in the order [`KeyRow`] reads them.
const KEY_COLUMNS: &str = "id, account, name, format, lookup, hash, hash_version, bundle, \
     scopes, rate_limits, created_at, COALESCE(secret_set_at, created_at) AS secret_set_at, \
     expires_at, last_used_at, revoked_at, replaced_by, lineage, \
     disabled_at, metadata, credits_remaining, credits_refill_amount, \
     credits_refill_interval_ms, credits_refilled_at, identity_id";

/// How long a writer waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a write transaction holding SQLite's write lock from the first
/// statement, so a read-then-write (count, then insert) cannot interleave with
/// another writer, in this process or any other.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// A [`KeyStore`] on SQLite (feature `sqlite`).
///
/// Per-account key limits hold across processes sharing the file: the count
/// and the insert run in one `BEGIN IMMEDIATE` transaction. File databases use
/// WAL mode, so verifies (reads) never wait for writers. Call
/// [`migrate`](Self::migrate) once at startup.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use keygate::{profiles, ApiKeys, Pepper, SqliteStore};
///
/// let store = SqliteStore::open("keys.db").await?;
/// store.migrate().await?;
/// let api = ApiKeys::builder(profiles::mailjawn())
///     .store(store)
///     .pepper(Pepper::new(1, std::env::var("KEYGATE_PEPPER")?.into_bytes())?)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by a `sqlite:` URL such
    /// as `sqlite://keys.db?mode=rwc` or `sqlite::memory:`, or by a plain file
    /// path. An in-memory URL behaves like [`in_memory`](Self::in_memory).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keygate::StoreError> {
    /// let store = keygate::SqliteStore::connect("sqlite://keys.db").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url_or_path: &str) -> Result<Self, StoreError> {
        if !url_or_path.starts_with("sqlite:") {
            return Self::open(url_or_path).await;
        }
        if url_or_path.contains(":memory:") || url_or_path.contains("mode=memory") {
            return Self::in_memory().await;
        }
        let options = SqliteConnectOptions::from_str(url_or_path).map_err(|e| {
            StoreError::Misconfigured(
                super::Cause::new(format!("invalid sqlite url: {e}")).with_source(e),
            )
        })?;
        Self::connect_file(options.create_if_missing(true)).await
    }

    /// Opens (creating if missing) the database file at `path`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keygate::StoreError> {
    /// let store = keygate::SqliteStore::open("/var/lib/myapp/keys.db").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect_file(options).await
    }

    /// A private, already migrated in-memory database: one connection that
    /// lives as long as the store. For tests and demos.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey, Pepper, SqliteStore};
    ///
    /// let store = SqliteStore::in_memory().await.unwrap();
    /// let api = ApiKeys::builder(profiles::mailjawn())
    ///     .store(store)
    ///     .pepper(Pepper::new(1, [7u8; 32]).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let org = AccountId::new("org_1").unwrap();
    /// let key = api.operator().create(&org, CreateKey::new("ci").bundle("sdk")).await.unwrap();
    /// assert!(api.verify(key.key.expose_secret()).await.is_ok());
    /// # });
    /// ```
    pub async fn in_memory() -> Result<Self, StoreError> {
        // Every SQLite connection to `:memory:` is its own database, so the pool
        // keeps exactly one connection and never lets it idle out.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .map_err(sql::map_err)?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Uses an existing pool (for your own pool or connection options). Set a
    /// busy timeout on it so concurrent writers wait instead of failing.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    ///
    /// let options = SqliteConnectOptions::new()
    ///     .filename("keys.db")
    ///     .create_if_missing(true)
    ///     .busy_timeout(std::time::Duration::from_secs(10));
    /// let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
    /// let store = keygate::SqliteStore::from_pool(pool);
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The connection pool, e.g. to close it at shutdown.
    ///
    /// ```no_run
    /// # async fn run(store: keygate::SqliteStore) {
    /// store.pool().close().await;
    /// # }
    /// ```
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates or updates keygate's tables (`accounts`, `api_keys`). Idempotent,
    /// and safe to call from several processes at once.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keygate::StoreError> {
    /// let store = keygate::SqliteStore::open("keys.db").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // SQLite has no migration lock: two processes can both see a migration
        // as pending, and the loser's bookkeeping insert then fails. The
        // migrations are idempotent, so running again settles it.
        let mut attempt = 0;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                // A lost race shows up as a failed statement (`Execute`) or,
                // for a migration the winner just applied, as a failed
                // migration (`ExecuteMigration`, e.g. a duplicate column).
                Err(
                    sqlx::migrate::MigrateError::Execute(_)
                    | sqlx::migrate::MigrateError::ExecuteMigration(..),
                ) if attempt < 4 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => return Err(sql::map_migrate_err(e)),
            }
        }
    }

    async fn connect_file(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(sql::map_err)?;
        Ok(Self::from_pool(pool))
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(sql::map_err)
    }
}

fn insert_query<'q>(r: &'q KeyRecord, e: &'q Encoded) -> Query<'q> {
    sqlx::query(
        "INSERT INTO api_keys (id, account, name, format, lookup, hash, hash_version, bundle, \
         scopes, rate_limits, created_at, expires_at, last_used_at, revoked_at, replaced_by, \
         lineage, secret_set_at, disabled_at, metadata, credits_remaining, credits_refill_amount, \
         credits_refill_interval_ms, credits_refilled_at, identity_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id.as_str())
    .bind(r.account.as_str())
    .bind(r.name.as_str())
    .bind(r.format.as_str())
    .bind(r.lookup.as_str())
    .bind(r.hash.digest().as_slice())
    .bind(e.hash_version)
    .bind(r.bundle.as_deref())
    .bind(e.scopes.as_str())
    .bind(e.rate_limits.as_str())
    .bind(e.created_at)
    .bind(e.expires_at)
    .bind(e.last_used_at)
    .bind(e.revoked_at)
    .bind(r.replaced_by.as_ref().map(KeyId::as_str))
    .bind(r.lineage.as_ref().map(KeyId::as_str))
    .bind(e.secret_set_at)
    .bind(e.disabled_at)
    .bind(e.metadata.as_str())
    .bind(e.credits.remaining)
    .bind(e.credits.refill_amount)
    .bind(e.credits.refill_interval_ms)
    .bind(e.credits.refilled_at)
    .bind(e.identity.as_deref())
}

/// Registers a top-level account on first use; a sub-account must exist.
/// Runs inside a write transaction, so the account cannot appear or vanish
/// between this check and the caller's insert.
async fn ensure_account(
    conn: &mut SqliteConnection,
    id: &AccountId,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if id.is_top_level() {
        sqlx::query(
            "INSERT INTO accounts (id, parent, created_at) VALUES (?, NULL, ?) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(to_millis(now))
        .execute(conn)
        .await
        .map_err(sql::map_err)?;
        return Ok(());
    }
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(sql::map_err)?;
    exists.map(drop).ok_or(StoreError::NotFound)
}

/// [`sql::map_err`] for inserting an identity: a duplicate names no row.
fn identity_err(e: sqlx::Error) -> StoreError {
    match sql::map_err(e) {
        StoreError::Conflict(_) => {
            StoreError::Conflict("an identity with this external id exists".into())
        }
        other => other,
    }
}

async fn insert(conn: &mut SqliteConnection, record: &KeyRecord) -> Result<(), StoreError> {
    let encoded = Encoded::new(record)?;
    insert_query(record, &encoded)
        .execute(conn)
        .await
        .map_err(sql::map_err)?;
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let parent = account.id.parent();
        if let Some(parent) = &parent {
            ensure_account(&mut tx, parent, account.created_at).await?;
        }
        sqlx::query("INSERT INTO accounts (id, parent, created_at) VALUES (?, ?, ?)")
            .bind(account.id.as_str())
            .bind(parent.as_ref().map(AccountId::as_str))
            .bind(to_millis(account.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| sql::account_err(e, &account.id))?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        sqlx::query_as::<_, AccountRow>("SELECT id, parent, created_at FROM accounts WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql::map_err)?
            .map(AccountRow::into_record)
            .transpose()
    }

    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        ensure_account(&mut tx, &record.account, record.created_at).await?;
        let Some(limit) = limit else {
            insert(&mut tx, &record).await?;
            return tx.commit().await.map_err(sql::map_err);
        };
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE account = ? AND format = ? \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(record.account.as_str())
        .bind(record.format.as_str())
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        if active >= i64::from(limit) {
            return Err(StoreError::LimitReached { limit });
        }
        insert(&mut tx, &record).await?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn insert_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for record in &records {
            ensure_account(&mut tx, &record.account, record.created_at).await?;
            insert(&mut tx, record).await?;
        }
        tx.commit().await.map_err(sql::map_err)
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        // The key and its identity in one statement.
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, ident.* FROM {} WHERE lookup = ? ORDER BY id",
            sql::keys_with_identity()
        ))
        .bind(lookup)
        .fetch_all(&self.pool)
        .await
        .map_err(sql::map_err)?;
        rows.iter().map(sql::joined_entry).collect()
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, ident.* FROM {} WHERE id = ?",
            sql::keys_with_identity()
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql::map_err)?;
        row.as_ref().map(sql::joined_entry).transpose()
    }

    async fn create_identity(&self, identity: Identity) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        ensure_account(&mut tx, &identity.account, identity.created_at).await?;
        let e = EncodedIdentity::new(&identity)?;
        sqlx::query(
            "INSERT INTO identities (id, account, external_id, metadata, rate_limits, \
             credits_remaining, credits_refill_amount, credits_refill_interval_ms, \
             credits_refilled_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(identity.id.as_str())
        .bind(identity.account.as_str())
        .bind(identity.external_id.as_str())
        .bind(e.metadata.as_str())
        .bind(e.rate_limits.as_str())
        .bind(e.credits.remaining)
        .bind(e.credits.refill_amount)
        .bind(e.credits.refill_interval_ms)
        .bind(e.credits.refilled_at)
        .bind(e.created_at)
        .execute(&mut *tx)
        .await
        .map_err(identity_err)?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>, StoreError> {
        let row = sqlx::query_as::<_, IdentityRow>(&format!(
            "SELECT {} FROM identities WHERE id = ?",
            sql::IDENTITY_COLUMNS
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql::map_err)?;
        Ok(row.map(IdentityRow::into_identity).transpose()?.flatten())
    }

    async fn list_identities(
        &self,
        account: &AccountId,
        after: Option<&IdentityId>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        let rows = sqlx::query_as::<_, IdentityRow>(&format!(
            "SELECT {} FROM identities WHERE account = ? AND (? IS NULL OR id > ?) \
             ORDER BY id LIMIT ?",
            sql::IDENTITY_COLUMNS
        ))
        .bind(account.as_str())
        .bind(after.map(IdentityId::as_str))
        .bind(after.map(IdentityId::as_str))
        .bind(sql::sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql::map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.extend(row.into_identity()?);
        }
        Ok(out)
    }

    async fn update_identity(
        &self,
        id: &IdentityId,
        change: &IdentityChange,
    ) -> Result<Identity, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query_as::<_, IdentityRow>(&format!(
            "SELECT {} FROM identities WHERE id = ?",
            sql::IDENTITY_COLUMNS
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        let mut identity = row
            .map(IdentityRow::into_identity)
            .transpose()?
            .flatten()
            .ok_or(StoreError::NotFound)?;
        change.apply(&mut identity);
        let e = EncodedIdentity::new(&identity)?;
        sqlx::query(
            "UPDATE identities SET metadata = ?, rate_limits = ?, credits_remaining = ?, \
             credits_refill_amount = ?, credits_refill_interval_ms = ?, credits_refilled_at = ? \
             WHERE id = ?",
        )
        .bind(e.metadata.as_str())
        .bind(e.rate_limits.as_str())
        .bind(e.credits.remaining)
        .bind(e.credits.refill_amount)
        .bind(e.credits.refill_interval_ms)
        .bind(e.credits.refilled_at)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        tx.commit().await.map_err(sql::map_err)?;
        Ok(identity)
    }

    async fn delete_identity(&self, id: &IdentityId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE api_keys SET identity_id = NULL WHERE identity_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        let deleted = sqlx::query("DELETE FROM identities WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(sql::map_err)
    }

    async fn spend_shared_credits(
        &self,
        key: &KeyId,
        identity: &IdentityId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<SharedSpend, StoreError> {
        let now_ms = to_millis(now);
        let cost_i = i64::try_from(cost).unwrap_or(i64::MAX);
        // One write transaction: both spends commit together or not at all
        // (dropping it rolls back).
        let mut tx = self.begin_write().await?;
        let spent: Option<i64> = sqlx::query_scalar(&sql::SPEND_CREDITS.replace('$', "?"))
            .bind(key.as_str())
            .bind(now_ms)
            .bind(cost_i)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        let key_spend = match spent {
            Some(remaining) => sql::spent(remaining),
            None => {
                let columns =
                    sqlx::query_as::<_, sql::CreditColumns>(&sql::READ_CREDITS.replace('$', "?"))
                        .bind(key.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(sql::map_err)?;
                let refused = sql::refused_spend(columns, key, cost, now)?;
                if refused != Spend::Unlimited {
                    return Ok(SharedSpend::new(refused, Spend::Unlimited));
                }
                refused
            }
        };
        // Only the identity the key is attached to now.
        let spent: Option<i64> = sqlx::query_scalar(
            &(sql::spend_identity_credits().replace('$', "?").replace(
                "WHERE id = ?1",
                "WHERE id = ?1 AND id = (SELECT identity_id FROM api_keys WHERE id = ?4)",
            )),
        )
        .bind(identity.as_str())
        .bind(now_ms)
        .bind(cost_i)
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        let identity_spend = match spent {
            Some(remaining) => sql::spent(remaining),
            None => {
                let columns = sqlx::query_as::<_, sql::CreditColumns>(
                    &(sql::read_identity_credits().replace('$', "?").replace(
                        "WHERE id = ?1",
                        "WHERE id = ?1 AND id = (SELECT identity_id FROM api_keys WHERE id = ?2)",
                    )),
                )
                .bind(identity.as_str())
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql::map_err)?;
                let refused = sql::refused_identity_spend(columns, cost, now)?;
                if refused != Spend::Unlimited {
                    return Ok(SharedSpend::new(key_spend, refused));
                }
                refused
            }
        };
        tx.commit().await.map_err(sql::map_err)?;
        Ok(SharedSpend::new(key_spend, identity_spend))
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut text = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE account = ?");
        if query.after.is_some() {
            text.push_str(" AND id > ?");
        }
        if !query.include_revoked {
            text.push_str(" AND revoked_at IS NULL");
        }
        text.push_str(" ORDER BY id LIMIT ?");
        let mut q = sqlx::query_as::<_, KeyRow>(&text).bind(account.as_str());
        if let Some(after) = &query.after {
            q = q.bind(after.as_str());
        }
        q.bind(sql::sql_limit(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sql::map_err)?
            .into_iter()
            .map(KeyRow::into_record)
            .collect()
    }

    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(to_millis(at))
                .bind(id.as_str())
                .execute(&self.pool)
                .await
                .map_err(sql::map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET lookup = ?, hash = ?, hash_version = ?, secret_set_at = ? \
             WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(lookup)
        .bind(hash.digest().as_slice())
        .bind(i64::from(hash.version()))
        .bind(to_millis(at))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(sql::map_err)?;
        if done.rows_affected() > 0 {
            return Ok(());
        }
        // Nothing changed: tell a missing key from a revoked one (revocation
        // is final, so this answer cannot go stale).
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM api_keys WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql::map_err)?;
        Err(if exists.is_some() {
            StoreError::Revoked
        } else {
            StoreError::NotFound
        })
    }

    async fn list_stale_secrets(
        &self,
        query: &SecretAgeQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut text = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE COALESCE(secret_set_at, created_at) <= ?1 \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)"
        );
        if query.within.is_some() {
            text.push_str(" AND (account = ?3 OR substr(account, 1, length(?3) + 1) = ?3 || '/')");
        }
        if query.after.is_some() {
            text.push_str(" AND id > ?4");
        }
        text.push_str(" ORDER BY id LIMIT ?5");
        sqlx::query_as::<_, KeyRow>(&text)
            .bind(to_millis(query.set_before))
            .bind(to_millis(query.active_at))
            .bind(query.within.as_ref().map(AccountId::as_str))
            .bind(query.after.as_ref().map(KeyId::as_str))
            .bind(sql::sql_limit(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sql::map_err)?
            .into_iter()
            .map(KeyRow::into_record)
            .collect()
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError> {
        // The write lock from the first statement makes read, change and
        // write one step: a concurrent update waits and then sees this one.
        let mut tx = self.begin_write().await?;
        let row = sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        let record = sql::changed_record(row, change)?;
        let e = Encoded::new(&record)?;
        sqlx::query(
            "UPDATE api_keys SET name = ?, bundle = ?, scopes = ?, rate_limits = ?, \
             expires_at = ?, disabled_at = ?, metadata = ?, credits_remaining = ?, \
             credits_refill_amount = ?, credits_refill_interval_ms = ?, credits_refilled_at = ?, \
             identity_id = ? WHERE id = ?",
        )
        .bind(record.name.as_str())
        .bind(record.bundle.as_deref())
        .bind(e.scopes.as_str())
        .bind(e.rate_limits.as_str())
        .bind(e.expires_at)
        .bind(e.disabled_at)
        .bind(e.metadata.as_str())
        .bind(e.credits.remaining)
        .bind(e.credits.refill_amount)
        .bind(e.credits.refill_interval_ms)
        .bind(e.credits.refilled_at)
        .bind(e.identity.as_deref())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        tx.commit().await.map_err(sql::map_err)?;
        Ok(record)
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        let now_ms = to_millis(now);
        let cost_i = i64::try_from(cost).unwrap_or(i64::MAX);
        let spent: Option<i64> = sqlx::query_scalar(&sql::SPEND_CREDITS.replace('$', "?"))
            .bind(id.as_str())
            .bind(now_ms)
            .bind(cost_i)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql::map_err)?;
        if let Some(remaining) = spent {
            return Ok(Spend::Spent {
                remaining: u64::try_from(remaining).unwrap_or(0),
            });
        }
        let columns = sqlx::query_as::<_, sql::CreditColumns>(&sql::READ_CREDITS.replace('$', "?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql::map_err)?;
        sql::refused_spend(columns, id, cost, now)
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let state: Option<(Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT revoked_at, replaced_by FROM api_keys WHERE id = ?")
                .bind(old.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql::map_err)?;
        match state {
            None => return Err(StoreError::NotFound),
            Some((Some(_), _)) => return Err(StoreError::Revoked),
            Some((None, Some(_))) => return Err(StoreError::Rotated),
            Some((None, None)) => {}
        }
        let update = match old_key {
            OldKey::RevokeAt(at) => sqlx::query(
                "UPDATE api_keys SET revoked_at = ?1, replaced_by = ?2 \
                 WHERE id = ?3 AND replaced_by IS NULL",
            )
            .bind(to_millis(at)),
            OldKey::ExpireAt(at) => sqlx::query(
                "UPDATE api_keys SET expires_at = MIN(COALESCE(expires_at, ?1), ?1), \
                 replaced_by = ?2 WHERE id = ?3 AND replaced_by IS NULL",
            )
            .bind(to_millis(at)),
        };
        let done = update
            .bind(new.id.as_str())
            .bind(old.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Rotated);
        }
        insert(&mut tx, &new).await?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let uses = sql::latest_uses(uses);
        if uses.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch, so the write lock is held for
        // one round trip rather than one per key: SQLite's lock is not fair,
        // and a writer that keeps it long can starve another instance's
        // flush past the busy timeout.
        let batch = serde_json::to_string(&uses)
            .map_err(|e| StoreError::Unavailable(super::Cause::from_error(e)))?;
        sqlx::query(
            "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, u.at), u.at) \
             FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at \
                   FROM json_each(?1)) AS u \
             WHERE api_keys.id = u.id",
        )
        .bind(batch)
        .execute(&self.pool)
        .await
        .map_err(sql::map_err)?;
        Ok(())
    }
    async fn rehash_secrets(&self, batch: &[Rehash]) -> Result<usize, StoreError> {
        let batch = sql::rehash_batch(batch);
        if batch.is_empty() {
            return Ok(0);
        }
        // One write transaction for the batch; each statement changes the
        // row only while it still has the hash being replaced.
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        for rehash in batch {
            let done = sqlx::query(
                "UPDATE api_keys SET hash = ?1, hash_version = ?2 \
                 WHERE id = ?3 AND hash = ?4 AND hash_version = ?5 AND revoked_at IS NULL",
            )
            .bind(rehash.to.digest().as_slice())
            .bind(i64::from(rehash.to.version()))
            .bind(rehash.id.as_str())
            .bind(rehash.from.digest().as_slice())
            .bind(i64::from(rehash.from.version()))
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
            changed += usize::try_from(done.rows_affected()).unwrap_or(usize::MAX);
        }
        tx.commit().await.map_err(sql::map_err)?;
        Ok(changed)
    }

    async fn count_by_pepper(&self, now: OffsetDateTime) -> Result<BTreeMap<u32, u64>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(&sql::count_by_pepper_query("?1"))
            .bind(to_millis(now))
            .fetch_all(&self.pool)
            .await
            .map_err(sql::map_err)?;
        sql::pepper_counts(rows)
    }
}
