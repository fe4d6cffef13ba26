//! What the SQL backends share: the row shape, its conversion to and from
//! [`KeyRecord`], and the mapping of `sqlx` errors onto [`StoreError`].

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    from_millis, to_millis, AccountId, AccountRecord, KeyEntry, KeyId, KeyRecord, StoreError,
};
use crate::hash::SecretHash;
use crate::ratelimit::Quota;

/// One `api_keys` row as the database returns it.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    id: String,
    account: String,
    name: String,
    format: String,
    lookup: String,
    hash: Vec<u8>,
    hash_version: i64,
    bundle: Option<String>,
    scopes: String,
    rate_limits: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    replaced_by: Option<String>,
    lineage: Option<String>,
}

impl KeyRow {
    /// Checks and converts the row; anything out of range is [`StoreError::Corrupt`].
    pub(crate) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("key {}: {what}", self.id));
        let version = u32::try_from(self.hash_version).map_err(|_| corrupt("hash version"))?;
        let hash = SecretHash::from_slice(version, &self.hash).ok_or_else(|| corrupt("hash"))?;
        let account = AccountId::new(self.account.as_str()).map_err(|_| corrupt("account id"))?;
        let scopes: Vec<String> =
            serde_json::from_str(&self.scopes).map_err(|_| corrupt("scopes"))?;
        let overrides: Vec<StoredQuota> =
            serde_json::from_str(&self.rate_limits).map_err(|_| corrupt("rate limits"))?;
        let created_at = from_millis(self.created_at).ok_or_else(|| corrupt("created_at"))?;
        let time = |ms: Option<i64>, what: &str| match ms {
            None => Ok(None),
            Some(ms) => from_millis(ms).map(Some).ok_or_else(|| corrupt(what)),
        };
        Ok(KeyRecord {
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
        })
    }
}

/// One `accounts` row.
#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    id: String,
    parent: Option<String>,
    created_at: i64,
}

impl AccountRow {
    /// Checks and converts the row.
    pub(crate) fn into_record(self) -> Result<AccountRecord, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("account {}: {what}", self.id));
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
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
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
        let json = |e: serde_json::Error| StoreError::Corrupt(format!("key {}: {e}", r.id));
        Ok(Self {
            hash_version: i64::from(r.hash.version()),
            scopes: serde_json::to_string(&r.scopes).map_err(json)?,
            rate_limits: serde_json::to_string(&overrides).map_err(json)?,
            created_at: to_millis(r.created_at),
            expires_at: r.expires_at.map(to_millis),
            last_used_at: r.last_used_at.map(to_millis),
            revoked_at: r.revoked_at.map(to_millis),
        })
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

/// Maps a `sqlx` error onto the store's error kinds: anything that means the
/// database cannot serve the request now is [`StoreError::Unavailable`] (so
/// verify answers 503, never success and never "invalid"), a duplicate is a
/// [`StoreError::Conflict`], and undecodable data is [`StoreError::Corrupt`].
/// Rows as the entries a store hands to the verify path.
pub(crate) fn entries(rows: Vec<KeyRow>) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
    rows.into_iter()
        .map(|row| Ok(Arc::new(KeyEntry::new(row.into_record()?))))
        .collect()
}

/// [`map_err`] for inserting an account: a conflict names the account.
pub(crate) fn account_err(e: sqlx::Error, account: &AccountId) -> StoreError {
    match map_err(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("account {account} exists")),
        other => other,
    }
}

pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().into()),
        E::Database(db) if is_corruption(db.code().as_deref()) => {
            StoreError::Corrupt(db.message().into())
        }
        E::RowNotFound => StoreError::NotFound,
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        // PoolTimedOut, PoolClosed, Io, Tls, Protocol, WorkerCrashed, any other
        // database error (a lost connection, a busy or read-only database, a
        // missing table) and the rest: the store cannot answer right now.
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// SQLite's `SQLITE_CORRUPT` (11) and `SQLITE_NOTADB` (26), with their
/// extended codes; Postgres's `XX001`/`XX002` (data or index corrupted).
fn is_corruption(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if let Ok(n) = code.parse::<i32>() {
        return matches!(n & 0xff, 11 | 26);
    }
    matches!(code, "XX001" | "XX002")
}

/// Maps a migration failure.
pub(crate) fn map_migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => map_err(e),
        other => StoreError::Unavailable(format!("migration failed: {other}")),
    }
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
    fn corruption_codes() {
        assert!(is_corruption(Some("11")));
        assert!(is_corruption(Some("267"))); // SQLITE_CORRUPT_VTAB
        assert!(is_corruption(Some("26")));
        assert!(is_corruption(Some("XX001")));
        assert!(!is_corruption(Some("5")));
        assert!(!is_corruption(Some("08006")));
        assert!(!is_corruption(None));
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
