//! What the SQL backends share: the row shape, its conversion to and from
//! [`KeyRecord`], and the mapping of `sqlx` errors onto [`StoreError`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use time::OffsetDateTime;

use super::{
    from_millis, to_millis, AccountId, AccountRecord, Cause, KeyChange, KeyEntry, KeyId, KeyRecord,
    Rehash, Spend, StoreError,
};
use crate::credits::{Credits, Refill};
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityId};
use crate::metadata::Metadata;
use crate::ratelimit::Quota;

/// The record of a row read for `update_key`, with `change` applied:
/// [`StoreError::NotFound`] without a row, [`StoreError::Revoked`] for a
/// revoked key.
pub(crate) fn changed_record(
    row: Option<KeyRow>,
    change: &KeyChange,
) -> Result<KeyRecord, StoreError> {
    let mut record = row.ok_or(StoreError::NotFound)?.into_record()?;
    change.apply_unless_revoked(&mut record)?;
    Ok(record)
}

/// Counts keys usable at the bound time by pepper version (the one
/// placeholder is written `{now}`, in the dialect's own spelling).
pub(crate) fn count_by_pepper_query(now: &str) -> String {
    format!(
        "SELECT hash_version, COUNT(*) FROM api_keys WHERE revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > {now}) GROUP BY hash_version"
    )
}

/// The rows of [`count_by_pepper_query`] as a map.
pub(crate) fn pepper_counts(rows: Vec<(i64, i64)>) -> Result<BTreeMap<u32, u64>, StoreError> {
    rows.into_iter()
        .map(|(version, n)| {
            let version = u32::try_from(version)
                .map_err(|_| StoreError::Corrupt(Cause::new("pepper version out of range")))?;
            Ok((version, u64::try_from(n).unwrap_or(0)))
        })
        .collect()
}

/// A re-hash batch in id order with one entry per key (the first wins), so
/// concurrent flushers lock rows in the same order.
pub(crate) fn rehash_batch(batch: &[Rehash]) -> Vec<&Rehash> {
    let mut sorted: Vec<&Rehash> = batch.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    sorted.dedup_by(|a, b| a.id == b.id);
    sorted
}

/// One `api_keys` row as the database returns it.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) name: String,
    pub(crate) format: String,
    pub(crate) lookup: String,
    pub(crate) hash: Vec<u8>,
    pub(crate) hash_version: i64,
    pub(crate) bundle: Option<String>,
    pub(crate) scopes: String,
    pub(crate) rate_limits: String,
    pub(crate) created_at: i64,
    /// Read as `COALESCE(secret_set_at, created_at)`: rows written by a
    /// version without the column count from their creation.
    pub(crate) secret_set_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) replaced_by: Option<String>,
    pub(crate) lineage: Option<String>,
    pub(crate) disabled_at: Option<i64>,
    pub(crate) metadata: String,
    pub(crate) credits_remaining: Option<i64>,
    pub(crate) credits_refill_amount: Option<i64>,
    pub(crate) credits_refill_interval_ms: Option<i64>,
    pub(crate) credits_refilled_at: Option<i64>,
    pub(crate) identity_id: Option<String>,
}

impl KeyRow {
    /// Checks and converts the row; anything out of range is [`StoreError::Corrupt`].
    pub(crate) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let message = |what: &str| format!("key {}: {what}", self.id);
        let corrupt = |what: &str| StoreError::Corrupt(message(what).into());
        let json = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(Cause::new(message(what)).with_source(e))
        };
        let version = u32::try_from(self.hash_version).map_err(|_| corrupt("hash version"))?;
        let hash = SecretHash::from_slice(version, &self.hash).ok_or_else(|| corrupt("hash"))?;
        let account = AccountId::new(self.account.as_str()).map_err(|_| corrupt("account id"))?;
        let scopes: Vec<String> =
            serde_json::from_str(&self.scopes).map_err(|e| json("scopes", e))?;
        let overrides: Vec<StoredQuota> =
            serde_json::from_str(&self.rate_limits).map_err(|e| json("rate limits", e))?;
        let created_at = from_millis(self.created_at).ok_or_else(|| corrupt("created_at"))?;
        let secret_set_at =
            from_millis(self.secret_set_at).ok_or_else(|| corrupt("secret_set_at"))?;
        let time = |ms: Option<i64>, what: &str| match ms {
            None => Ok(None),
            Some(ms) => from_millis(ms).map(Some).ok_or_else(|| corrupt(what)),
        };
        let metadata = Metadata::from_json(&self.metadata)
            .map_err(|e| StoreError::Corrupt(Cause::new(message("metadata")).with_source(e)))?;
        let credits = CreditColumns {
            remaining: self.credits_remaining,
            refill_amount: self.credits_refill_amount,
            refill_interval_ms: self.credits_refill_interval_ms,
            refilled_at: self.credits_refilled_at,
        }
        .decode()
        .ok_or_else(|| corrupt("credits"))?;
        Ok(KeyRecord {
            identity: self.identity_id.map(IdentityId::new),
            credits,
            disabled_at: time(self.disabled_at, "disabled_at")?,
            metadata,
            expires_at: time(self.expires_at, "expires_at")?,
            last_used_at: time(self.last_used_at, "last_used_at")?,
            revoked_at: time(self.revoked_at, "revoked_at")?,
            replaced_by: self.replaced_by.map(KeyId::new),
            lineage: self.lineage.map(KeyId::new),
            id: KeyId::new(self.id),
            account,
            name: self.name,
            format: self.format,
            lookup: self.lookup,
            hash,
            bundle: self.bundle,
            scopes,
            rate_limits: overrides.into_iter().map(|o| (o.class, o.quota)).collect(),
            created_at,
            secret_set_at,
        })
    }
}

/// One `accounts` row.
#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    pub(crate) id: String,
    pub(crate) parent: Option<String>,
    pub(crate) created_at: i64,
}

impl AccountRow {
    /// Checks and converts the row.
    pub(crate) fn into_record(self) -> Result<AccountRecord, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("account {}: {what}", self.id).into());
        let parent = match &self.parent {
            None => None,
            Some(p) => Some(AccountId::new(p.as_str()).map_err(|_| corrupt("parent id"))?),
        };
        Ok(AccountRecord {
            id: AccountId::new(self.id.as_str()).map_err(|_| corrupt("id"))?,
            parent,
            created_at: from_millis(self.created_at).ok_or_else(|| corrupt("created_at"))?,
        })
    }
}

/// A rate-limit override as stored in the `rate_limits` JSON array.
#[derive(Serialize, Deserialize)]
struct StoredQuota {
    class: String,
    quota: Quota,
}

/// The columns of a [`KeyRecord`] that need encoding before they are bound.
pub(crate) struct Encoded {
    pub(crate) hash_version: i64,
    pub(crate) scopes: String,
    pub(crate) rate_limits: String,
    pub(crate) created_at: i64,
    pub(crate) secret_set_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) disabled_at: Option<i64>,
    pub(crate) metadata: String,
    pub(crate) credits: CreditColumns,
    pub(crate) identity: Option<String>,
}

impl Encoded {
    pub(crate) fn new(r: &KeyRecord) -> Result<Self, StoreError> {
        let overrides: Vec<StoredQuota> = r
            .rate_limits
            .iter()
            .map(|(class, quota)| StoredQuota {
                class: class.clone(),
                quota: *quota,
            })
            .collect();
        let json = |e: serde_json::Error| {
            StoreError::Corrupt(Cause::new(format!("key {}: {e}", r.id)).with_source(e))
        };
        Ok(Self {
            hash_version: i64::from(r.hash.version()),
            scopes: serde_json::to_string(&r.scopes).map_err(json)?,
            rate_limits: serde_json::to_string(&overrides).map_err(json)?,
            created_at: to_millis(r.created_at),
            secret_set_at: to_millis(r.secret_set_at),
            expires_at: r.expires_at.map(to_millis),
            last_used_at: r.last_used_at.map(to_millis),
            revoked_at: r.revoked_at.map(to_millis),
            disabled_at: r.disabled_at.map(to_millis),
            metadata: r.metadata.to_json(),
            credits: CreditColumns::encode(r.credits.as_ref()),
            identity: r.identity.as_ref().map(|i| i.as_str().to_owned()),
        })
    }
}

/// A key's credits as its four nullable columns.
#[derive(sqlx::FromRow, Debug, Clone, Copy, Default)]
pub(crate) struct CreditColumns {
    #[sqlx(rename = "credits_remaining")]
    pub(crate) remaining: Option<i64>,
    #[sqlx(rename = "credits_refill_amount")]
    pub(crate) refill_amount: Option<i64>,
    #[sqlx(rename = "credits_refill_interval_ms")]
    pub(crate) refill_interval_ms: Option<i64>,
    #[sqlx(rename = "credits_refilled_at")]
    pub(crate) refilled_at: Option<i64>,
}

/// Counts beyond `i64::MAX` are stored as `i64::MAX` (never reached in practice).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl CreditColumns {
    pub(crate) fn encode(credits: Option<&Credits>) -> Self {
        let Some(c) = credits else {
            return Self::default();
        };
        Self {
            remaining: Some(count(c.remaining)),
            refill_amount: c.refill.map(|r| count(r.amount)),
            refill_interval_ms: c.refill.map(|r| count(r.interval_ms)),
            refilled_at: Some(to_millis(c.refilled_at)),
        }
    }

    /// The credits, `Some(None)` when there is no usage limit, `None` when
    /// the columns do not make sense together.
    pub(crate) fn decode(self) -> Option<Option<Credits>> {
        let Some(remaining) = self.remaining else {
            return Some(None);
        };
        let refill = match (self.refill_amount, self.refill_interval_ms) {
            (None, None) => None,
            (Some(amount), Some(interval)) if interval > 0 => Some(Refill {
                amount: u64::try_from(amount).ok()?,
                interval_ms: u64::try_from(interval).ok()?,
            }),
            _ => return None,
        };
        Some(Some(Credits {
            remaining: u64::try_from(remaining).ok()?,
            refill,
            refilled_at: from_millis(self.refilled_at?)?,
        }))
    }
}

/// The spend of [`KeyStore::spend_credits`](super::KeyStore::spend_credits)
/// as one conditional statement, in PostgreSQL's placeholders (`$1` the key
/// id, `$2` now in milliseconds, `$3` the cost); SQLite takes the same text
/// with `?` for `$`. Every right-hand side reads the row as it was before
/// the statement, and the database applies concurrent statements to a row
/// one after another, re-checking the condition each time: exactly as many
/// spends succeed as the credits allow, with no read-modify-write.
pub(crate) const SPEND_CREDITS: &str = "UPDATE api_keys SET \
     credits_remaining = (CASE WHEN credits_refill_interval_ms IS NOT NULL \
       AND $2 - credits_refilled_at >= credits_refill_interval_ms \
       THEN credits_refill_amount ELSE credits_remaining END) - $3, \
     credits_refilled_at = CASE WHEN credits_refill_interval_ms IS NOT NULL \
       AND $2 - credits_refilled_at >= credits_refill_interval_ms \
       THEN credits_refilled_at + (($2 - credits_refilled_at) / credits_refill_interval_ms) \
         * credits_refill_interval_ms \
       ELSE credits_refilled_at END \
     WHERE id = $1 AND credits_remaining IS NOT NULL \
       AND (CASE WHEN credits_refill_interval_ms IS NOT NULL \
         AND $2 - credits_refilled_at >= credits_refill_interval_ms \
         THEN credits_refill_amount ELSE credits_remaining END) >= $3 \
     RETURNING credits_remaining";

/// Reads a key's credits after a refused spend, to say why.
pub(crate) const READ_CREDITS: &str = "SELECT credits_remaining, credits_refill_amount, \
     credits_refill_interval_ms, credits_refilled_at FROM api_keys WHERE id = $1";

/// What a refused spend means, from the key's credit columns (`None` when
/// the key does not exist).
pub(crate) fn refused_spend(
    columns: Option<CreditColumns>,
    id: &KeyId,
    cost: u64,
    now: OffsetDateTime,
) -> Result<Spend, StoreError> {
    let columns = columns.ok_or(StoreError::NotFound)?;
    let credits = columns
        .decode()
        .ok_or_else(|| StoreError::Corrupt(format!("key {id}: credits").into()))?;
    Ok(match credits {
        None => Spend::Unlimited,
        Some(c) => Spend::Exhausted {
            next_refill: c.at(now).next_refill_for(cost),
        },
    })
}

/// The `identities` columns under the names [`IdentityRow`] reads, so they
/// can sit beside a key's columns in one row.
pub(crate) const IDENTITY_COLUMNS: &str = "id AS i_id, account AS i_account, \
     external_id AS i_external_id, metadata AS i_metadata, rate_limits AS i_rate_limits, \
     credits_remaining AS i_credits_remaining, credits_refill_amount AS i_credits_refill_amount, \
     credits_refill_interval_ms AS i_credits_refill_interval_ms, \
     credits_refilled_at AS i_credits_refilled_at, created_at AS i_created_at";

/// One `identities` row, alone or joined to a key's row (then every column
/// is NULL for a key without an identity).
#[derive(sqlx::FromRow)]
pub(crate) struct IdentityRow {
    i_id: Option<String>,
    i_account: Option<String>,
    i_external_id: Option<String>,
    i_metadata: Option<String>,
    i_rate_limits: Option<String>,
    i_credits_remaining: Option<i64>,
    i_credits_refill_amount: Option<i64>,
    i_credits_refill_interval_ms: Option<i64>,
    i_credits_refilled_at: Option<i64>,
    i_created_at: Option<i64>,
}

impl IdentityRow {
    /// The identity, `None` for a joined row without one.
    pub(crate) fn into_identity(self) -> Result<Option<Identity>, StoreError> {
        let Some(id) = self.i_id else {
            return Ok(None);
        };
        let corrupt = |what: &str| StoreError::Corrupt(format!("identity {id}: {what}").into());
        let account = self
            .i_account
            .as_deref()
            .and_then(|a| AccountId::new(a).ok())
            .ok_or_else(|| corrupt("account id"))?;
        let metadata = Metadata::from_json(self.i_metadata.as_deref().unwrap_or("{}"))
            .map_err(|_| corrupt("metadata"))?;
        let limits: Vec<StoredQuota> =
            serde_json::from_str(self.i_rate_limits.as_deref().unwrap_or("[]"))
                .map_err(|_| corrupt("rate limits"))?;
        let credits = CreditColumns {
            remaining: self.i_credits_remaining,
            refill_amount: self.i_credits_refill_amount,
            refill_interval_ms: self.i_credits_refill_interval_ms,
            refilled_at: self.i_credits_refilled_at,
        }
        .decode()
        .ok_or_else(|| corrupt("credits"))?;
        let created_at = self
            .i_created_at
            .and_then(from_millis)
            .ok_or_else(|| corrupt("created_at"))?;
        Ok(Some(Identity {
            external_id: self.i_external_id.ok_or_else(|| corrupt("external id"))?,
            id: IdentityId::new(id),
            account,
            metadata,
            credits,
            rate_limits: limits.into_iter().map(|o| (o.class, o.quota)).collect(),
            created_at,
        }))
    }
}

/// An identity's columns, encoded for binding.
pub(crate) struct EncodedIdentity {
    pub(crate) metadata: String,
    pub(crate) rate_limits: String,
    pub(crate) credits: CreditColumns,
    pub(crate) created_at: i64,
}

impl EncodedIdentity {
    pub(crate) fn new(i: &Identity) -> Result<Self, StoreError> {
        let limits: Vec<StoredQuota> = i
            .rate_limits
            .iter()
            .map(|(class, quota)| StoredQuota {
                class: class.clone(),
                quota: *quota,
            })
            .collect();
        Ok(Self {
            metadata: i.metadata.to_json(),
            rate_limits: serde_json::to_string(&limits).map_err(|e| {
                StoreError::Corrupt(Cause::new(format!("identity {}: {e}", i.id)).with_source(e))
            })?,
            credits: CreditColumns::encode(i.credits.as_ref()),
            created_at: to_millis(i.created_at),
        })
    }
}

/// A key row and the identity joined to it, as one entry.
pub(crate) fn joined_entry<'r, R: sqlx::Row>(row: &'r R) -> Result<Arc<KeyEntry>, StoreError>
where
    KeyRow: sqlx::FromRow<'r, R>,
    IdentityRow: sqlx::FromRow<'r, R>,
{
    let key = KeyRow::from_row(row).map_err(map_err)?.into_record()?;
    let identity = IdentityRow::from_row(row)
        .map_err(map_err)?
        .into_identity()?
        .map(Arc::new);
    Ok(Arc::new(KeyEntry::with_identity(key, identity)))
}

/// The join that reads a key with its identity: `FROM {KEYS_WITH_IDENTITY}`
/// then a `WHERE` on the key's columns.
pub(crate) fn keys_with_identity() -> String {
    format!(
        "api_keys LEFT JOIN (SELECT {IDENTITY_COLUMNS} FROM identities) ident \
         ON ident.i_id = api_keys.identity_id"
    )
}

/// The spend of an identity's credits: [`SPEND_CREDITS`] on the
/// `identities` table.
pub(crate) fn spend_identity_credits() -> String {
    SPEND_CREDITS.replace("UPDATE api_keys", "UPDATE identities")
}

/// Reads an identity's credits after a refused spend.
pub(crate) fn read_identity_credits() -> String {
    READ_CREDITS.replace("FROM api_keys", "FROM identities")
}

/// What a refused identity spend means (an identity gone meanwhile has no
/// limit left to enforce).
pub(crate) fn refused_identity_spend(
    columns: Option<CreditColumns>,
    cost: u64,
    now: OffsetDateTime,
) -> Result<Spend, StoreError> {
    let Some(columns) = columns else {
        return Ok(Spend::Unlimited);
    };
    let credits = columns
        .decode()
        .ok_or_else(|| StoreError::Corrupt("identity credits".into()))?;
    Ok(match credits {
        None => Spend::Unlimited,
        Some(c) => Spend::Exhausted {
            next_refill: c.at(now).next_refill_for(cost),
        },
    })
}

/// A spend's returned remaining credits as a [`Spend`].
pub(crate) fn spent(remaining: i64) -> Spend {
    Spend::Spent {
        remaining: u64::try_from(remaining).unwrap_or(0),
    }
}

/// Collapses a last-used batch to one time per key (the latest), sorted by id
/// so concurrent flushes touch rows in the same order.
pub(crate) fn latest_uses(uses: &[(KeyId, OffsetDateTime)]) -> Vec<(&str, i64)> {
    let mut latest: HashMap<&str, i64> = HashMap::with_capacity(uses.len());
    for (id, at) in uses {
        let ms = to_millis(*at);
        latest
            .entry(id.as_str())
            .and_modify(|t| *t = (*t).max(ms))
            .or_insert(ms);
    }
    let mut out: Vec<(&str, i64)> = latest.into_iter().collect();
    out.sort_unstable();
    out
}

/// A page size as a SQL `LIMIT`.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// [`map_err`] for inserting an account: a conflict names the account.
pub(crate) fn account_err(e: sqlx::Error, account: &AccountId) -> StoreError {
    match map_err(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("account {account} exists")),
        other => other,
    }
}

/// The message of SQLite's trigger that keeps a key's identity in its account.
const IDENTITY_ACCOUNT: &str = "keygate: identity of another account";

/// The text of a [`StoreError::Conflict`] from a unique violation. The
/// database's own message names tables, columns and constraints, and a
/// conflict's text can reach clients, so it is not used.
const DUPLICATE: &str = "a record with the same unique value is already stored";

/// Maps a `sqlx` error onto the store's error kinds, keeping it as the
/// [`Cause`]'s source:
///
/// - the database cannot serve the request now (pool timeout, closed pool,
///   lost connection, a busy or read-only database) is
///   [`StoreError::Unavailable`], so verify answers 503, never success and
///   never "invalid";
/// - it cannot serve any request until someone fixes its setup (invalid
///   options, failed authentication, a missing database, schema, table or
///   column, missing privileges) is [`StoreError::Misconfigured`];
/// - a unique violation is a [`StoreError::Conflict`] with a fixed text;
/// - undecodable data is [`StoreError::Corrupt`].
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(DUPLICATE.into())
        }
        // A key naming an identity that is not one of its account's: the
        // foreign key on (identity_id, account), or SQLite's trigger for it.
        sqlx::Error::Database(db)
            if db.is_foreign_key_violation() || db.message().contains(IDENTITY_ACCOUNT) =>
        {
            StoreError::NotFound
        }
        _ => failure(&e).with(Cause::from_error(e)),
    }
}

/// What kind of backend failure `e` is, unique violations and missing rows
/// aside.
fn failure(e: &sqlx::Error) -> Failure {
    use sqlx::Error as E;
    match e {
        E::Database(db) => classify(db.code().as_deref(), db.message()),
        E::Configuration(_) | E::Migrate(_) => Failure::Misconfigured,
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => Failure::Corrupt,
        // PoolTimedOut, PoolClosed, Io, Tls, Protocol, WorkerCrashed and the
        // rest: the store cannot answer right now.
        _ => Failure::Unavailable,
    }
}

/// The kinds of backend failure a database error can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unavailable,
    Misconfigured,
    Corrupt,
}

impl Failure {
    fn with(self, cause: Cause) -> StoreError {
        match self {
            Self::Unavailable => StoreError::Unavailable(cause),
            Self::Misconfigured => StoreError::Misconfigured(cause),
            Self::Corrupt => StoreError::Corrupt(cause),
        }
    }
}

/// A database error's code, told apart by shape: PostgreSQL's SQLSTATEs are
/// five characters, SQLite's result codes are numbers of at most four digits.
enum Code<'a> {
    Sqlite(i32),
    SqlState(&'a str),
}

impl<'a> Code<'a> {
    fn parse(code: &'a str) -> Option<Self> {
        if code.len() == 5 {
            return Some(Self::SqlState(code));
        }
        code.parse().ok().map(Self::Sqlite)
    }
}

/// What a database error (other than a unique violation) means for the store.
///
/// Corruption: SQLite's `SQLITE_CORRUPT` (11) and `SQLITE_NOTADB` (26), with
/// their extended codes; PostgreSQL's `XX001`/`XX002` (data or index
/// corrupted).
///
/// Misconfiguration: SQLite's "no such table" and "no such column" errors and
/// `SQLITE_AUTH` (23); PostgreSQL's class 28 (invalid authorization, such as
/// a wrong password), `3D000` (no such database), `3F000` (no such schema)
/// and class 42 (a statement the schema cannot run: undefined table `42P01`
/// or column `42703`, insufficient privilege `42501`, …).
///
/// Anything else (busy, locked, read-only, out of resources, a server
/// shutting down, a serialization failure) is the database being unable to
/// answer now.
fn classify(code: Option<&str>, message: &str) -> Failure {
    match code.and_then(Code::parse) {
        Some(Code::Sqlite(n)) => match n & 0xff {
            11 | 26 => Failure::Corrupt,
            23 => Failure::Misconfigured,
            1 if message.starts_with("no such table")
                || message.starts_with("no such column")
                || message.contains("has no column named") =>
            {
                Failure::Misconfigured
            }
            _ => Failure::Unavailable,
        },
        Some(Code::SqlState(state)) => match state {
            "XX001" | "XX002" => Failure::Corrupt,
            "3D000" | "3F000" => Failure::Misconfigured,
            _ if state.starts_with("28") || state.starts_with("42") => Failure::Misconfigured,
            _ => Failure::Unavailable,
        },
        None => Failure::Unavailable,
    }
}

/// Maps a migration failure. A failed statement is classified like any
/// other database error, except that one that will fail again (refused,
/// not merely interrupted) is [`StoreError::Misconfigured`]; so is a
/// database whose applied migrations do not match this version's (modified,
/// missing or partially applied ones).
pub(crate) fn map_migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError as M;
    let kind = match e {
        M::Execute(e) => return map_err(e),
        // A unique violation here is existing data that a new unique index
        // refuses: it needs fixing, not a retry.
        M::ExecuteMigration(ref inner, _)
            if failure(inner) == Failure::Unavailable
                && !inner
                    .as_database_error()
                    .is_some_and(|db| db.is_unique_violation()) =>
        {
            Failure::Unavailable
        }
        _ => Failure::Misconfigured,
    };
    let message = format!("migration failed: {e}");
    kind.with(Cause::new(message).with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_connection_failures_are_unavailable() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Protocol("eof".into()),
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            sqlx::Error::Tls("handshake".into()),
        ] {
            assert!(matches!(map_err(e), StoreError::Unavailable(_)));
        }
        assert!(matches!(
            map_err(sqlx::Error::Decode("bad".into())),
            StoreError::Corrupt(_)
        ));
        assert_eq!(map_err(sqlx::Error::RowNotFound), StoreError::NotFound);
    }

    #[test]
    fn mapped_failures_keep_the_sqlx_error_as_source() {
        use std::error::Error as _;
        let cases = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            sqlx::Error::Decode("bad".into()),
            sqlx::Error::Configuration("bad port".into()),
        ];
        for e in cases {
            let text = e.to_string();
            let mapped = map_err(e);
            let cause = match &mapped {
                StoreError::Unavailable(c)
                | StoreError::Corrupt(c)
                | StoreError::Misconfigured(c) => c,
                other => panic!("{other:?}"),
            };
            assert_eq!(cause.message(), text);
            let source = mapped.source().and_then(|c| c.source()).unwrap();
            assert_eq!(source.to_string(), text);
            assert!(source.downcast_ref::<sqlx::Error>().is_some());
        }
        // The I/O error itself is one level further down.
        let mapped = map_err(sqlx::Error::Io(std::io::Error::other("reset by peer")));
        let io = mapped
            .source()
            .and_then(|c| c.source())
            .and_then(|e| e.source())
            .unwrap();
        assert_eq!(io.to_string(), "reset by peer");
    }

    #[test]
    fn configuration_errors_are_misconfigured() {
        assert!(matches!(
            map_err(sqlx::Error::Configuration("bad url".into())),
            StoreError::Misconfigured(_)
        ));
    }

    #[test]
    fn database_codes() {
        use Failure::*;
        for (code, message, failure) in [
            // SQLite: corrupt, not a database, a corrupt virtual table.
            ("11", "", Corrupt),
            ("26", "", Corrupt),
            ("267", "", Corrupt),
            ("1", "no such table: api_keys", Misconfigured),
            ("1", "no such column: lineage", Misconfigured),
            (
                "1",
                "table api_keys has no column named lineage",
                Misconfigured,
            ),
            ("23", "authorization denied", Misconfigured),
            ("1", "near \"x\": syntax error", Unavailable),
            ("5", "database is locked", Unavailable),
            ("8", "attempt to write a readonly database", Unavailable),
            ("14", "unable to open database file", Unavailable),
            // PostgreSQL.
            ("XX001", "", Corrupt),
            ("XX002", "", Corrupt),
            (
                "42P01",
                "relation \"api_keys\" does not exist",
                Misconfigured,
            ),
            ("42703", "column \"lineage\" does not exist", Misconfigured),
            (
                "42501",
                "permission denied for table api_keys",
                Misconfigured,
            ),
            ("28P01", "password authentication failed", Misconfigured),
            ("28000", "role \"x\" does not exist", Misconfigured),
            ("3D000", "database \"x\" does not exist", Misconfigured),
            ("3F000", "schema \"x\" does not exist", Misconfigured),
            ("08006", "", Unavailable),
            ("40001", "", Unavailable),
            ("53300", "", Unavailable),
            ("57P01", "", Unavailable),
            // Numeric SQLSTATEs are not SQLite codes (22027 & 0xff == 11).
            ("22027", "", Unavailable),
        ] {
            assert_eq!(classify(Some(code), message), failure, "{code} {message}");
        }
        assert_eq!(classify(None, "no such table: x"), Unavailable);
    }

    #[test]
    fn migration_mismatches_are_misconfigured() {
        use sqlx::migrate::MigrateError as M;
        for e in [M::VersionMismatch(1), M::VersionMissing(2), M::Dirty(3)] {
            let text = e.to_string();
            let mapped = map_migrate_err(e);
            assert!(matches!(mapped, StoreError::Misconfigured(_)), "{mapped:?}");
            let source = std::error::Error::source(&mapped)
                .and_then(std::error::Error::source)
                .unwrap();
            assert_eq!(source.to_string(), text);
        }
        assert!(matches!(
            map_migrate_err(M::ExecuteMigration(sqlx::Error::PoolTimedOut, 1)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_migrate_err(M::Execute(sqlx::Error::PoolClosed)),
            StoreError::Unavailable(_)
        ));
    }

    #[test]
    fn last_used_batches_keep_the_latest_time_per_key() {
        let t = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let a = KeyId::new("a");
        let b = KeyId::new("b");
        let uses = [(b.clone(), t(5)), (a.clone(), t(9)), (a, t(3)), (b, t(7))];
        assert_eq!(latest_uses(&uses), vec![("a", 9000), ("b", 7000)]);
    }
}
