//! [`PostgresStore`]: keys in PostgreSQL through `sqlx`, shared by any number
//! of service instances.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres};
use time::OffsetDateTime;

use super::sql::{self, AccountRow, Encoded, KeyRow};
use super::{
    to_millis, AccountId, AccountRecord, KeyEntry, KeyId, KeyRecord, KeyStore, ListQuery, OldKey,
    StoreError,
};
use crate::hash::SecretHash;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The key columns, JSON read back as text.
const KEY_COLUMNS: &str = "id, account, name, format, lookup, hash, hash_version, bundle, \
     scopes::text AS scopes, rate_limits::text AS rate_limits, \
     created_at, expires_at, last_used_at, revoked_at";

/// First half of the advisory lock key that serialises key creation per
/// account (`'kg'`); the second half is the account id's hash.
const LOCK_CLASS: i32 = 0x6b67;

/// How long a call waits for a pooled connection before the store reports
/// itself unavailable (verify then answers 503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest schema name PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_SCHEMA_LEN: usize = 63;

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// A [`KeyStore`] on PostgreSQL (feature `postgres`): the backend for many
/// instances sharing one database.
///
/// Per-account key limits hold across instances: the count and the insert run
/// in one transaction under a transaction-scoped advisory lock on the account
/// (`pg_advisory_xact_lock`). Call [`migrate`](Self::migrate) at startup; it
/// takes sqlx's migration lock, so every instance may call it.
///
/// keygate's tables are `accounts` and `api_keys`, and migrations are tracked
/// in `_sqlx_migrations`; give keygate its own schema
/// ([`connect_with_schema`](Self::connect_with_schema)) when the database is
/// shared with an application that has tables or sqlx migrations of its own.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use keygate::{profiles, ApiKeys, Pepper, PostgresStore};
///
/// let store = PostgresStore::connect_with_schema("postgres://app@db/app", "keygate").await?;
/// store.migrate().await?;
/// let api = ApiKeys::builder(profiles::mailjawn())
///     .store(store)
///     .pepper(Pepper::new(1, std::env::var("KEYGATE_PEPPER")?.into_bytes())?)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (e.g. `postgres://user:pass@host/db`),
    /// with tables in the connection's default `search_path`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keygate::StoreError> {
    /// let store = keygate::PostgresStore::connect("postgres://app@localhost/app").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = parse_url(url)?;
        Ok(Self::from_pool(open_pool(options).await?))
    }

    /// Connects with every table in `schema`, creating the schema if missing
    /// (every connection's `search_path` is set to it). Schema names are ASCII
    /// letters, digits and `_`, not starting with a digit, at most 63 bytes;
    /// case is kept.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keygate::StoreError> {
    /// let url = "postgres://app@localhost/app";
    /// let store = keygate::PostgresStore::connect_with_schema(url, "keygate").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        let quoted = quote_schema(schema)?;
        let options = parse_url(url)?.options([("search_path", quoted.as_str())]);
        let pool = open_pool(options).await?;
        let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
            .execute(&pool)
            .await;
        match created {
            Ok(_) => {}
            // Two instances creating the schema at once: the loser sees a
            // duplicate, which is the outcome it wanted.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("23505" | "42P06")) => {}
            Err(e) => return Err(sql::map_err(e)),
        }
        Ok(Self::from_pool(pool))
    }

    /// Uses an existing pool (for your own pool or connection options, such as
    /// a `search_path`).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use sqlx::postgres::PgPoolOptions;
    ///
    /// let pool = PgPoolOptions::new()
    ///     .max_connections(20)
    ///     .acquire_timeout(std::time::Duration::from_secs(2))
    ///     .connect("postgres://app@localhost/app")
    ///     .await?;
    /// let store = keygate::PostgresStore::from_pool(pool);
    /// # Ok(()) }
    /// ```
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The connection pool, e.g. to close it at shutdown.
    ///
    /// ```no_run
    /// # async fn run(store: keygate::PostgresStore) {
    /// store.pool().close().await;
    /// # }
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates or updates keygate's tables. Idempotent; instances running it
    /// at once wait for each other on sqlx's migration lock.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keygate::StoreError> {
    /// let store = keygate::PostgresStore::connect("postgres://app@localhost/app").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(sql::map_err)?;
        // `run_direct` on the connection itself: `run` through `Acquire` makes
        // a future that is not `Send` (a known sqlx limitation).
        match MIGRATOR.run_direct(&mut *conn).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // A failed run can leave the session-level migration lock held
                // by this connection; close it rather than return it to the pool.
                let _ = conn.close().await;
                Err(sql::map_migrate_err(e))
            }
        }
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid postgres url: {e}")))
}

async fn open_pool(options: PgConnectOptions) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(sql::map_err)
}

/// Checks a schema name and returns it as a quoted identifier.
fn quote_schema(schema: &str) -> Result<String, StoreError> {
    let mut chars = schema.chars();
    let valid = schema.len() <= MAX_SCHEMA_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(StoreError::Unavailable(format!(
            "invalid schema name {schema:?}: use 1 to {MAX_SCHEMA_LEN} ASCII letters, digits \
             or '_', not starting with a digit"
        )));
    }
    Ok(format!("\"{schema}\""))
}

fn insert_query<'q>(r: &'q KeyRecord, e: &'q Encoded) -> Query<'q> {
    sqlx::query(
        "INSERT INTO api_keys (id, account, name, format, lookup, hash, hash_version, bundle, \
         scopes, rate_limits, created_at, expires_at, last_used_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13, $14)",
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
}

async fn insert(conn: &mut PgConnection, record: &KeyRecord) -> Result<(), StoreError> {
    let encoded = Encoded::new(record)?;
    insert_query(record, &encoded)
        .execute(conn)
        .await
        .map_err(sql::map_err)?;
    Ok(())
}

/// Rows per statement in a bulk insert.
const BULK_CHUNK: usize = 1_000;

/// Inserts `records` with one statement: each column is bound as an array.
async fn bulk_insert(conn: &mut PgConnection, records: &[KeyRecord]) -> Result<(), StoreError> {
    let encoded = records
        .iter()
        .map(Encoded::new)
        .collect::<Result<Vec<_>, _>>()?;
    let text = |f: fn(&KeyRecord) -> &str| records.iter().map(f).collect::<Vec<&str>>();
    let millis = |f: fn(&Encoded) -> Option<i64>| encoded.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO api_keys (id, account, name, format, lookup, hash, hash_version, bundle, \
         scopes, rate_limits, created_at, expires_at, last_used_at, revoked_at) \
         SELECT id, account, name, format, lookup, hash, hash_version, bundle, \
         scopes::jsonb, rate_limits::jsonb, created_at, expires_at, last_used_at, revoked_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], \
         $7::bigint[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], \
         $13::bigint[], $14::bigint[]) AS t(id, account, name, format, lookup, hash, \
         hash_version, bundle, scopes, rate_limits, created_at, expires_at, last_used_at, \
         revoked_at)",
    )
    .bind(text(|r| r.id.as_str()))
    .bind(text(|r| r.account.as_str()))
    .bind(text(|r| r.name.as_str()))
    .bind(text(|r| r.format.as_str()))
    .bind(text(|r| r.lookup.as_str()))
    .bind(
        records
            .iter()
            .map(|r| r.hash.digest().to_vec())
            .collect::<Vec<_>>(),
    )
    .bind(encoded.iter().map(|e| e.hash_version).collect::<Vec<_>>())
    .bind(
        records
            .iter()
            .map(|r| r.bundle.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        encoded
            .iter()
            .map(|e| e.scopes.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        encoded
            .iter()
            .map(|e| e.rate_limits.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(encoded.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .bind(millis(|e| e.expires_at))
    .bind(millis(|e| e.last_used_at))
    .bind(millis(|e| e.revoked_at))
    .execute(conn)
    .await
    .map_err(sql::map_err)?;
    Ok(())
}

fn entries(rows: Vec<KeyRow>) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
    rows.into_iter()
        .map(|row| Ok(Arc::new(KeyEntry::new(row.into_record()?))))
        .collect()
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO accounts (id, parent, created_at) VALUES ($1, $2, $3)")
            .bind(account.id.as_str())
            .bind(account.parent.as_ref().map(AccountId::as_str))
            .bind(to_millis(account.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| match sql::map_err(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("account {} exists", account.id))
                }
                other => other,
            })?;
        Ok(())
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        sqlx::query_as::<_, AccountRow>("SELECT id, parent, created_at FROM accounts WHERE id = $1")
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
        let Some(limit) = limit else {
            let mut conn = self.pool.acquire().await.map_err(sql::map_err)?;
            return insert(&mut conn, &record).await;
        };
        let mut tx = self.pool.begin().await.map_err(sql::map_err)?;
        // Creations for one account queue here until the holder commits, so
        // each count sees every key committed before it.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(record.account.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE account = $1 AND format = $2 \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
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
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(sql::map_err)?;
        for chunk in records.chunks(BULK_CHUNK) {
            bulk_insert(&mut tx, chunk).await?;
        }
        tx.commit().await.map_err(sql::map_err)
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        let rows = sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE lookup = $1 ORDER BY id"
        ))
        .bind(lookup)
        .fetch_all(&self.pool)
        .await
        .map_err(sql::map_err)?;
        entries(rows)
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        let row = sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql::map_err)?;
        Ok(entries(row.into_iter().collect())?.pop())
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut text = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE account = $1");
        let mut n = 1;
        if query.after.is_some() {
            n += 1;
            text.push_str(&format!(" AND id > ${n}"));
        }
        if !query.include_revoked {
            text.push_str(" AND revoked_at IS NULL");
        }
        text.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
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
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
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
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET lookup = $1, hash = $2, hash_version = $3 \
             WHERE id = $4 AND revoked_at IS NULL",
        )
        .bind(lookup)
        .bind(hash.digest().as_slice())
        .bind(i64::from(hash.version()))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(sql::map_err)?;
        if done.rows_affected() > 0 {
            return Ok(());
        }
        // Nothing changed: tell a missing key from a revoked one (revocation
        // is final, so this answer cannot go stale).
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM api_keys WHERE id = $1")
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

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(sql::map_err)?;
        let revoked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM api_keys WHERE id = $1 FOR UPDATE")
                .bind(old.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql::map_err)?;
        match revoked {
            None => return Err(StoreError::NotFound),
            Some(Some(_)) => return Err(StoreError::Revoked),
            Some(None) => {}
        }
        let update = match old_key {
            OldKey::RevokeAt(at) => {
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2").bind(to_millis(at))
            }
            OldKey::ExpireAt(at) => {
                sqlx::query("UPDATE api_keys SET expires_at = LEAST(expires_at, $1) WHERE id = $2")
                    .bind(to_millis(at))
            }
        };
        update
            .bind(old.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        insert(&mut tx, &new).await?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let uses = sql::latest_uses(uses);
        if uses.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<&str>, Vec<i64>) = uses.into_iter().unzip();
        // One statement for the whole batch; GREATEST skips NULL, so the
        // later of the stored and the new time wins.
        sqlx::query(
            "UPDATE api_keys AS k SET last_used_at = GREATEST(k.last_used_at, u.at) \
             FROM UNNEST($1::text[], $2::bigint[]) AS u(id, at) WHERE k.id = u.id",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await
        .map_err(sql::map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_and_quoted() {
        assert_eq!(quote_schema("keygate").unwrap(), "\"keygate\"");
        assert_eq!(quote_schema("Tenant_7").unwrap(), "\"Tenant_7\"");
        for bad in ["", "7up", "a-b", "a\"b", "a b", "é", &"x".repeat(64)] {
            assert!(
                matches!(quote_schema(bad), Err(StoreError::Unavailable(_))),
                "{bad:?}"
            );
        }
    }
}
