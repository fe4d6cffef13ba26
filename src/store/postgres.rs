//! [`PostgresStore`]: keys in PostgreSQL through `sqlx`, shared by any number
//! of service instances.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres};
use time::OffsetDateTime;

use super::sql::{self, AccountRow, Encoded, EncodedIdentity, IdentityRow, KeyRow};
use super::{
    to_millis, AccountId, AccountRecord, KeyChange, KeyEntry, KeyId, KeyRecord, KeyStore,
    ListQuery, OldKey, Rehash, SecretAgeQuery, SharedSpend, Spend, StoreError,
};
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityChange, IdentityId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The key columns, JSON read back as text.
const KEY_COLUMNS: &str = "id, account, name, format, lookup, hash, hash_version, bundle, \
     scopes::text AS scopes, rate_limits::text AS rate_limits, \
     created_at, COALESCE(secret_set_at, created_at) AS secret_set_at, \
     expires_at, last_used_at, revoked_at, replaced_by, lineage, disabled_at, \
     metadata, credits_remaining, credits_refill_amount, credits_refill_interval_ms, \
     credits_refilled_at, identity_id";

/// How long a call waits for a pooled connection before the store reports
/// itself unavailable (verify then answers 503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`): schema and
/// notification channel names.
const MAX_IDENT_LEN: usize = 63;

/// The notification channel of a store without a schema of its own; a store
/// made by [`PostgresStore::connect_with_schema`] appends `.` and the schema.
pub const DEFAULT_CHANNEL: &str = "keygate_changes";

/// The payload of the notification sent for each changed `api_keys` row: its
/// key id and lookup id, as JSON.
macro_rules! change {
    () => {
        "json_build_object('id', id, 'lookups', json_build_array(lookup))::text"
    };
}

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// A [`KeyStore`] on PostgreSQL (feature `postgres`): the backend for many
/// instances sharing one database.
///
/// Per-account key limits hold across instances and under any default
/// isolation level: the count and the insert run in one READ COMMITTED
/// transaction holding a row lock on the account's record. Call [`migrate`](Self::migrate) at startup; it
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
///
/// Every change to a key (creation, revocation, secret reset, rotation) also
/// sends a notification (`pg_notify`, in the same transaction) on
/// [`channel`](Self::channel), naming the key id and the lookup ids whose
/// verify answers changed. A [`CachedStore`](crate::CachedStore) on each
/// instance follows them ([`CachedStore::follow_postgres`](crate::CachedStore::follow_postgres)),
/// so such changes reach every instance at once.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    channel: Arc<str>,
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
        let channel = schema_channel(schema);
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
        Ok(Self {
            pool,
            channel: channel.into(),
        })
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
        Self {
            pool,
            channel: DEFAULT_CHANNEL.into(),
        }
    }

    /// Notifies changes on `channel` instead: give every instance sharing
    /// the same tables the same channel, and stores on other tables (another
    /// `search_path`) another one. Channel names are 1 to 63 bytes without
    /// NUL; case is kept.
    ///
    /// ```no_run
    /// # async fn run(pool: sqlx::PgPool) -> Result<(), keygate::StoreError> {
    /// let store = keygate::PostgresStore::from_pool(pool).with_channel("tenant_7_keys")?;
    /// assert_eq!(store.channel(), "tenant_7_keys");
    /// # Ok(()) }
    /// ```
    pub fn with_channel(mut self, channel: &str) -> Result<Self, StoreError> {
        if channel.is_empty() || channel.len() > MAX_IDENT_LEN || channel.contains('\0') {
            return Err(StoreError::Misconfigured(super::Cause::new(format!(
                "invalid channel name {channel:?}: use 1 to {MAX_IDENT_LEN} bytes without NUL"
            ))));
        }
        self.channel = channel.into();
        Ok(self)
    }

    /// The channel changes are notified on: [`DEFAULT_CHANNEL`], or
    /// `keygate_changes.<schema>` for a store made by
    /// [`connect_with_schema`](Self::connect_with_schema) (shortened with a
    /// checksum of the schema name when that would exceed 63 bytes).
    pub fn channel(&self) -> &str {
        &self.channel
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
    PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Misconfigured(
            super::Cause::new(format!("invalid postgres url: {e}")).with_source(e),
        )
    })
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
    let valid = schema.len() <= MAX_IDENT_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(StoreError::Misconfigured(super::Cause::new(format!(
            "invalid schema name {schema:?}: use 1 to {MAX_IDENT_LEN} ASCII letters, digits \
             or '_', not starting with a digit"
        ))));
    }
    Ok(format!("\"{schema}\""))
}

/// The notification channel for a store in `schema` (a valid schema name).
fn schema_channel(schema: &str) -> String {
    let channel = format!("{DEFAULT_CHANNEL}.{schema}");
    if channel.len() <= MAX_IDENT_LEN {
        return channel;
    }
    // Keep a prefix and tell long names apart by a checksum. Schema names
    // are ASCII, so any byte index is a character boundary.
    let keep = MAX_IDENT_LEN - DEFAULT_CHANNEL.len() - ".".len() - "_00000000".len();
    let crc = crc32fast::hash(schema.as_bytes());
    format!("{DEFAULT_CHANNEL}.{}_{crc:08x}", &schema[..keep])
}

fn insert_query<'q>(r: &'q KeyRecord, e: &'q Encoded, channel: &'q str) -> Query<'q> {
    sqlx::query(concat!(
        "WITH inserted AS (INSERT INTO api_keys (id, account, name, format, lookup, hash, \
         hash_version, bundle, scopes, rate_limits, created_at, expires_at, last_used_at, \
         revoked_at, replaced_by, lineage, secret_set_at, disabled_at, metadata, \
         credits_remaining, credits_refill_amount, credits_refill_interval_ms, \
         credits_refilled_at, identity_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13, $14, $16, \
         $17, $18, $19, $20, $21, $22, $23, $24, $25) \
         RETURNING id, lookup) \
         SELECT pg_notify($15, ",
        change!(),
        ") FROM inserted"
    ))
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
    .bind(channel)
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

/// Starts a transaction at READ COMMITTED whatever the database's default
/// isolation level, so each statement after a lock sees every row committed
/// before the lock was granted (under REPEATABLE READ the snapshot would date
/// from the first statement, and a count after the lock could miss keys).
async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
    pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(sql::map_err)
}

/// Registers a top-level account on first use (a sub-account must exist) and
/// locks its row until the transaction ends, so creations for one account
/// queue here and each limit count sees every key committed before it.
async fn lock_account(
    conn: &mut PgConnection,
    id: &AccountId,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if id.is_top_level() {
        sqlx::query(
            "INSERT INTO accounts (id, parent, created_at) VALUES ($1, NULL, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(to_millis(now))
        .execute(&mut *conn)
        .await
        .map_err(sql::map_err)?;
    }
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(sql::map_err)?;
    found.map(drop).ok_or(StoreError::NotFound)
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

/// Inserts one key and notifies its lookup id (a cache may hold "unknown").
async fn insert(
    conn: &mut PgConnection,
    record: &KeyRecord,
    channel: &str,
) -> Result<(), StoreError> {
    let encoded = Encoded::new(record)?;
    insert_query(record, &encoded, channel)
        .execute(conn)
        .await
        .map_err(sql::map_err)?;
    Ok(())
}

/// Rows per statement in a bulk insert.
const BULK_CHUNK: usize = 1_000;

/// Inserts `records` with one statement: each column is bound as an array.
/// Notifies every new lookup id.
async fn bulk_insert(
    conn: &mut PgConnection,
    records: &[KeyRecord],
    channel: &str,
) -> Result<(), StoreError> {
    let encoded = records
        .iter()
        .map(Encoded::new)
        .collect::<Result<Vec<_>, _>>()?;
    let text = |f: fn(&KeyRecord) -> &str| records.iter().map(f).collect::<Vec<&str>>();
    let millis = |f: fn(&Encoded) -> Option<i64>| encoded.iter().map(f).collect::<Vec<_>>();
    sqlx::query(concat!(
        "WITH inserted AS (INSERT INTO api_keys (id, account, name, format, lookup, hash, \
         hash_version, bundle, scopes, rate_limits, created_at, expires_at, last_used_at, \
         revoked_at, replaced_by, lineage, secret_set_at, disabled_at, metadata, \
         credits_remaining, credits_refill_amount, credits_refill_interval_ms, \
         credits_refilled_at, identity_id) \
         SELECT id, account, name, format, lookup, hash, hash_version, bundle, \
         scopes::jsonb, rate_limits::jsonb, created_at, expires_at, last_used_at, revoked_at, \
         replaced_by, lineage, secret_set_at, disabled_at, metadata, credits_remaining, \
         credits_refill_amount, credits_refill_interval_ms, credits_refilled_at, identity_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], \
         $7::bigint[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], \
         $13::bigint[], $14::bigint[], $16::text[], $17::text[], $18::bigint[], $19::bigint[], \
         $20::text[], $21::bigint[], $22::bigint[], $23::bigint[], $24::bigint[], \
         $25::text[]) \
         AS t(id, account, name, format, lookup, hash, hash_version, bundle, scopes, \
         rate_limits, created_at, expires_at, last_used_at, revoked_at, replaced_by, lineage, \
         secret_set_at, disabled_at, metadata, credits_remaining, credits_refill_amount, \
         credits_refill_interval_ms, credits_refilled_at, identity_id) \
         RETURNING id, lookup) \
         SELECT pg_notify($15, ",
        change!(),
        ") FROM inserted"
    ))
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
    .bind(channel)
    .bind(
        records
            .iter()
            .map(|r| r.replaced_by.as_ref().map(KeyId::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.lineage.as_ref().map(KeyId::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(encoded.iter().map(|e| e.secret_set_at).collect::<Vec<_>>())
    .bind(millis(|e| e.disabled_at))
    .bind(
        encoded
            .iter()
            .map(|e| e.metadata.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(millis(|e| e.credits.remaining))
    .bind(millis(|e| e.credits.refill_amount))
    .bind(millis(|e| e.credits.refill_interval_ms))
    .bind(millis(|e| e.credits.refilled_at))
    .bind(
        encoded
            .iter()
            .map(|e| e.identity.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await
    .map_err(sql::map_err)?;
    Ok(())
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        let mut tx = begin(&self.pool).await?;
        let parent = account.id.parent();
        if let Some(parent) = &parent {
            lock_account(&mut tx, parent, account.created_at).await?;
        }
        sqlx::query("INSERT INTO accounts (id, parent, created_at) VALUES ($1, $2, $3)")
            .bind(account.id.as_str())
            .bind(parent.as_ref().map(AccountId::as_str))
            .bind(to_millis(account.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| sql::account_err(e, &account.id))?;
        tx.commit().await.map_err(sql::map_err)
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
        let mut tx = begin(&self.pool).await?;
        lock_account(&mut tx, &record.account, record.created_at).await?;
        let Some(limit) = limit else {
            insert(&mut tx, &record, &self.channel).await?;
            return tx.commit().await.map_err(sql::map_err);
        };
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
        insert(&mut tx, &record, &self.channel).await?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn insert_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = begin(&self.pool).await?;
        let mut accounts: Vec<(&AccountId, OffsetDateTime)> =
            records.iter().map(|r| (&r.account, r.created_at)).collect();
        // Lock in id order, as every other writer does, so two bulk inserts
        // cannot deadlock.
        accounts.sort_by(|a, b| a.0.cmp(b.0));
        accounts.dedup_by(|a, b| a.0 == b.0);
        for (account, at) in accounts {
            lock_account(&mut tx, account, at).await?;
        }
        for chunk in records.chunks(BULK_CHUNK) {
            bulk_insert(&mut tx, chunk, &self.channel).await?;
        }
        tx.commit().await.map_err(sql::map_err)
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        // The key and its identity in one statement.
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, ident.* FROM {} WHERE lookup = $1 ORDER BY id",
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
            "SELECT {KEY_COLUMNS}, ident.* FROM {} WHERE id = $1",
            sql::keys_with_identity()
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql::map_err)?;
        row.as_ref().map(sql::joined_entry).transpose()
    }

    async fn create_identity(&self, identity: Identity) -> Result<(), StoreError> {
        let mut tx = begin(&self.pool).await?;
        lock_account(&mut tx, &identity.account, identity.created_at).await?;
        let e = EncodedIdentity::new(&identity)?;
        sqlx::query(
            "INSERT INTO identities (id, account, external_id, metadata, rate_limits, \
             credits_remaining, credits_refill_amount, credits_refill_interval_ms, \
             credits_refilled_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            "SELECT {} FROM identities WHERE id = $1",
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
            "SELECT {} FROM identities WHERE account = $1 AND ($2::text IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
            sql::IDENTITY_COLUMNS
        ))
        .bind(account.as_str())
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
        let mut tx = begin(&self.pool).await?;
        let row = sqlx::query_as::<_, IdentityRow>(&format!(
            "SELECT {} FROM identities WHERE id = $1 FOR UPDATE",
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
            "UPDATE identities SET metadata = $1, rate_limits = $2, credits_remaining = $3, \
             credits_refill_amount = $4, credits_refill_interval_ms = $5, \
             credits_refilled_at = $6 WHERE id = $7",
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
        // Every key of the identity: caches drop their entries, which hold
        // the identity as it was.
        sqlx::query(concat!(
            "SELECT pg_notify($1, ",
            change!(),
            ") FROM api_keys WHERE identity_id = $2"
        ))
        .bind(&*self.channel)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        tx.commit().await.map_err(sql::map_err)?;
        Ok(identity)
    }

    async fn delete_identity(&self, id: &IdentityId) -> Result<(), StoreError> {
        let mut tx = begin(&self.pool).await?;
        sqlx::query(concat!(
            "WITH detached AS (UPDATE api_keys SET identity_id = NULL WHERE identity_id = $2 \
             RETURNING id, lookup) SELECT pg_notify($1, ",
            change!(),
            ") FROM detached"
        ))
        .bind(&*self.channel)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        let deleted = sqlx::query("DELETE FROM identities WHERE id = $1")
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
        // One READ COMMITTED transaction: each conditional UPDATE waits for
        // a concurrent one on its row and re-checks on the row it left; the
        // two commit together, or dropping the transaction rolls both back.
        let mut tx = begin(&self.pool).await?;
        let spent: Option<i64> = sqlx::query_scalar(sql::SPEND_CREDITS)
            .bind(key.as_str())
            .bind(now_ms)
            .bind(cost_i)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        let key_spend = match spent {
            Some(remaining) => sql::spent(remaining),
            None => {
                let columns = sqlx::query_as::<_, sql::CreditColumns>(sql::READ_CREDITS)
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
        let spent: Option<i64> = sqlx::query_scalar(&sql::spend_identity_credits().replace(
            "WHERE id = $1",
            "WHERE id = $1 AND id = (SELECT identity_id FROM api_keys WHERE id = $4)",
        ))
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
                let columns =
                    sqlx::query_as::<_, sql::CreditColumns>(&sql::read_identity_credits().replace(
                        "WHERE id = $1",
                        "WHERE id = $1 AND id = (SELECT identity_id FROM api_keys WHERE id = $2)",
                    ))
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
        // One statement: the update and its notification commit together. It
        // runs at READ COMMITTED whatever the default, so a revocation racing
        // another write waits for it instead of failing to serialize.
        let mut tx = begin(&self.pool).await?;
        let done = sqlx::query(concat!(
            "WITH revoked AS (UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 RETURNING id, lookup) \
             SELECT pg_notify($3, ",
            change!(),
            ") FROM revoked"
        ))
        .bind(to_millis(at))
        .bind(id.as_str())
        .bind(&*self.channel)
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(sql::map_err)
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = begin(&self.pool).await?;
        // The row lock makes the lookup id read here the one being replaced,
        // even when two resets race: both are announced.
        let current: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT lookup, revoked_at FROM api_keys WHERE id = $1 FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql::map_err)?;
        let old_lookup = match current {
            None => return Err(StoreError::NotFound),
            Some((_, Some(_))) => return Err(StoreError::Revoked),
            Some((old_lookup, None)) => old_lookup,
        };
        sqlx::query(
            "UPDATE api_keys SET lookup = $1, hash = $2, hash_version = $3, secret_set_at = $5 \
             WHERE id = $4",
        )
        .bind(lookup)
        .bind(hash.digest().as_slice())
        .bind(i64::from(hash.version()))
        .bind(id.as_str())
        .bind(to_millis(at))
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        sqlx::query(
            "SELECT pg_notify($1, json_build_object('id', $2::text, \
             'lookups', json_build_array($3::text, $4::text))::text)",
        )
        .bind(&*self.channel)
        .bind(id.as_str())
        .bind(old_lookup)
        .bind(lookup)
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn list_stale_secrets(
        &self,
        query: &SecretAgeQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE COALESCE(secret_set_at, created_at) <= $1 \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
             AND ($3::text IS NULL OR account = $3 OR starts_with(account, $3 || '/')) \
             AND ($4::text IS NULL OR id > $4) ORDER BY id LIMIT $5"
        ))
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
        // The row lock makes read, change and write one step: a concurrent
        // update of the same key waits and then sees this one.
        let mut tx = begin(&self.pool).await?;
        let row = sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        let record = sql::changed_record(row, change)?;
        let e = Encoded::new(&record)?;
        // One statement: the update and its notification commit together.
        sqlx::query(concat!(
            "WITH updated AS (UPDATE api_keys SET name = $1, bundle = $2, scopes = $3::jsonb, \
             rate_limits = $4::jsonb, expires_at = $5, disabled_at = $6, metadata = $7, \
             credits_remaining = $10, credits_refill_amount = $11, \
             credits_refill_interval_ms = $12, credits_refilled_at = $13, identity_id = $14 \
             WHERE id = $8 RETURNING id, lookup) \
             SELECT pg_notify($9, ",
            change!(),
            ") FROM updated"
        ))
        .bind(record.name.as_str())
        .bind(record.bundle.as_deref())
        .bind(e.scopes.as_str())
        .bind(e.rate_limits.as_str())
        .bind(e.expires_at)
        .bind(e.disabled_at)
        .bind(e.metadata.as_str())
        .bind(id.as_str())
        .bind(&*self.channel)
        .bind(e.credits.remaining)
        .bind(e.credits.refill_amount)
        .bind(e.credits.refill_interval_ms)
        .bind(e.credits.refilled_at)
        .bind(e.identity.as_deref())
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
        // One statement at READ COMMITTED whatever the default: a concurrent
        // spend on the same row waits for this one and re-checks the
        // condition on the row it left, so no spend is lost or doubled (and
        // none fails to serialize).
        let mut tx = begin(&self.pool).await?;
        let spent: Option<i64> = sqlx::query_scalar(sql::SPEND_CREDITS)
            .bind(id.as_str())
            .bind(to_millis(now))
            .bind(i64::try_from(cost).unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        tx.commit().await.map_err(sql::map_err)?;
        if let Some(remaining) = spent {
            return Ok(Spend::Spent {
                remaining: u64::try_from(remaining).unwrap_or(0),
            });
        }
        let columns = sqlx::query_as::<_, sql::CreditColumns>(sql::READ_CREDITS)
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
        let mut tx = begin(&self.pool).await?;
        let state: Option<(Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT revoked_at, replaced_by FROM api_keys WHERE id = $1 FOR UPDATE")
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
            OldKey::RevokeAt(at) => {
                sqlx::query("UPDATE api_keys SET revoked_at = $1, replaced_by = $2 WHERE id = $3")
                    .bind(to_millis(at))
            }
            OldKey::ExpireAt(at) => sqlx::query(
                "UPDATE api_keys SET expires_at = LEAST(expires_at, $1), replaced_by = $2 \
                 WHERE id = $3",
            )
            .bind(to_millis(at)),
        };
        update
            .bind(new.id.as_str())
            .bind(old.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        sqlx::query(concat!(
            "SELECT pg_notify($1, ",
            change!(),
            ") FROM api_keys WHERE id = $2"
        ))
        .bind(&*self.channel)
        .bind(old.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        insert(&mut tx, &new, &self.channel).await?;
        tx.commit().await.map_err(sql::map_err)
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let uses = sql::latest_uses(uses);
        if uses.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<&str>, Vec<i64>) = uses.into_iter().unzip();
        // The UPDATE alone locks rows in whatever order its join produces
        // them, so two instances flushing overlapping batches could each hold
        // a row the other wants (deadlock, 40P01). Locking the batch in id
        // order first gives every flusher the same order.
        let mut tx = self.pool.begin().await.map_err(sql::map_err)?;
        sqlx::query("SELECT id FROM api_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        // GREATEST skips NULL, so the later of the stored and the new time
        // wins.
        sqlx::query(
            "UPDATE api_keys AS k SET last_used_at = GREATEST(k.last_used_at, u.at) \
             FROM UNNEST($1::text[], $2::bigint[]) AS u(id, at) WHERE k.id = u.id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        tx.commit().await.map_err(sql::map_err)
    }
    async fn rehash_secrets(&self, batch: &[Rehash]) -> Result<usize, StoreError> {
        let batch = sql::rehash_batch(batch);
        if batch.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        let from: Vec<&[u8]> = batch.iter().map(|r| r.from.digest().as_slice()).collect();
        let from_version: Vec<i64> = batch.iter().map(|r| i64::from(r.from.version())).collect();
        let to: Vec<&[u8]> = batch.iter().map(|r| r.to.digest().as_slice()).collect();
        let to_version: Vec<i64> = batch.iter().map(|r| i64::from(r.to.version())).collect();
        // Rows are locked in id order first, as the last-used flush does, so
        // instances flushing overlapping batches cannot deadlock. The update
        // changes a row only while it still has the hash being replaced: of
        // two instances racing, the first wins and the second changes nothing.
        // No change notification: the old hash keeps verifying wherever the
        // old pepper is still configured.
        let mut tx = self.pool.begin().await.map_err(sql::map_err)?;
        sqlx::query("SELECT id FROM api_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(sql::map_err)?;
        let done = sqlx::query(
            "UPDATE api_keys AS k SET hash = u.to_hash, hash_version = u.to_version \
             FROM UNNEST($1::text[], $2::bytea[], $3::bigint[], $4::bytea[], $5::bigint[]) \
               AS u(id, from_hash, from_version, to_hash, to_version) \
             WHERE k.id = u.id AND k.hash = u.from_hash AND k.hash_version = u.from_version \
               AND k.revoked_at IS NULL",
        )
        .bind(&ids)
        .bind(&from)
        .bind(&from_version)
        .bind(&to)
        .bind(&to_version)
        .execute(&mut *tx)
        .await
        .map_err(sql::map_err)?;
        tx.commit().await.map_err(sql::map_err)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn count_by_pepper(&self, now: OffsetDateTime) -> Result<BTreeMap<u32, u64>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(&sql::count_by_pepper_query("$1"))
            .bind(to_millis(now))
            .fetch_all(&self.pool)
            .await
            .map_err(sql::map_err)?;
        sql::pepper_counts(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channels_follow_the_schema_and_fit_an_identifier() {
        assert_eq!(schema_channel("keygate"), "keygate_changes.keygate");
        let long = "s".repeat(MAX_IDENT_LEN);
        let channel = schema_channel(&long);
        assert_eq!(channel.len(), MAX_IDENT_LEN);
        assert!(channel.starts_with("keygate_changes.sss"));
        assert_ne!(channel, schema_channel(&"s".repeat(MAX_IDENT_LEN - 1)));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .unwrap();
        let store = PostgresStore::from_pool(pool);
        assert_eq!(store.channel(), DEFAULT_CHANNEL);
        for bad in ["", "a\0b", &"c".repeat(64)] {
            assert!(store.clone().with_channel(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            store.with_channel("Mixed.Case").unwrap().channel(),
            "Mixed.Case"
        );
    }

    #[test]
    fn schema_names_are_checked_and_quoted() {
        assert_eq!(quote_schema("keygate").unwrap(), "\"keygate\"");
        assert_eq!(quote_schema("Tenant_7").unwrap(), "\"Tenant_7\"");
        for bad in ["", "7up", "a-b", "a\"b", "a b", "é", &"x".repeat(64)] {
            assert!(
                matches!(quote_schema(bad), Err(StoreError::Misconfigured(_))),
                "{bad:?}"
            );
        }
    }
}
