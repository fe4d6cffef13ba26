//! Entry points for the fuzz targets in `fuzz/`: the decoding the SQL stores
//! apply to the rows they read, reachable without a database. Not part of the
//! public API; it may change in any release.

use crate::credits::Credits;
use crate::store::sql::{AccountRow, CreditColumns, Encoded, KeyRow};
use crate::store::{AccountRecord, KeyRecord, StoreError};

/// The columns of one `api_keys` row, as a database could return them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KeyColumns {
    pub id: String,
    pub account: String,
    pub name: String,
    pub format: String,
    pub lookup: String,
    pub hash: Vec<u8>,
    pub hash_version: i64,
    pub bundle: Option<String>,
    pub scopes: String,
    pub rate_limits: String,
    pub created_at: i64,
    pub secret_set_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub replaced_by: Option<String>,
    pub lineage: Option<String>,
    pub disabled_at: Option<i64>,
    pub metadata: String,
    pub credits_remaining: Option<i64>,
    pub credits_refill_amount: Option<i64>,
    pub credits_refill_interval_ms: Option<i64>,
    pub credits_refilled_at: Option<i64>,
    pub identity_id: Option<String>,
}

/// Decodes a key row the way both SQL stores do.
pub fn decode_key_row(c: KeyColumns) -> Result<KeyRecord, StoreError> {
    KeyRow {
        id: c.id,
        account: c.account,
        name: c.name,
        format: c.format,
        lookup: c.lookup,
        hash: c.hash,
        hash_version: c.hash_version,
        bundle: c.bundle,
        scopes: c.scopes,
        rate_limits: c.rate_limits,
        created_at: c.created_at,
        secret_set_at: c.secret_set_at,
        expires_at: c.expires_at,
        last_used_at: c.last_used_at,
        revoked_at: c.revoked_at,
        replaced_by: c.replaced_by,
        lineage: c.lineage,
        disabled_at: c.disabled_at,
        metadata: c.metadata,
        credits_remaining: c.credits_remaining,
        credits_refill_amount: c.credits_refill_amount,
        credits_refill_interval_ms: c.credits_refill_interval_ms,
        credits_refilled_at: c.credits_refilled_at,
        identity_id: c.identity_id,
    }
    .into_record()
}

/// Encodes a record into the columns the SQL stores write.
pub fn encode_key_record(r: &KeyRecord) -> Result<KeyColumns, StoreError> {
    let e = Encoded::new(r)?;
    Ok(KeyColumns {
        id: r.id.as_str().to_owned(),
        account: r.account.as_str().to_owned(),
        name: r.name.clone(),
        format: r.format.clone(),
        lookup: r.lookup.clone(),
        hash: r.hash.digest().to_vec(),
        hash_version: e.hash_version,
        bundle: r.bundle.clone(),
        scopes: e.scopes,
        rate_limits: e.rate_limits,
        created_at: e.created_at,
        secret_set_at: e.secret_set_at,
        expires_at: e.expires_at,
        last_used_at: e.last_used_at,
        revoked_at: e.revoked_at,
        replaced_by: r.replaced_by.as_ref().map(|k| k.as_str().to_owned()),
        lineage: r.lineage.as_ref().map(|k| k.as_str().to_owned()),
        disabled_at: e.disabled_at,
        metadata: e.metadata,
        credits_remaining: e.credits.remaining,
        credits_refill_amount: e.credits.refill_amount,
        credits_refill_interval_ms: e.credits.refill_interval_ms,
        credits_refilled_at: e.credits.refilled_at,
        identity_id: r.identity.as_ref().map(|i| i.as_str().to_owned()),
    })
}

/// Decodes an `accounts` row.
pub fn decode_account_row(
    id: String,
    parent: Option<String>,
    created_at: i64,
) -> Result<AccountRecord, StoreError> {
    AccountRow {
        id,
        parent,
        created_at,
    }
    .into_record()
}

/// Decodes the four credit columns: `Some(None)` for no usage limit, `None`
/// when they do not make sense together.
pub fn decode_credits(columns: [Option<i64>; 4]) -> Option<Option<Credits>> {
    let [remaining, refill_amount, refill_interval_ms, refilled_at] = columns;
    CreditColumns {
        remaining,
        refill_amount,
        refill_interval_ms,
        refilled_at,
    }
    .decode()
}

/// Encodes credits into their four columns.
pub fn encode_credits(credits: Option<&Credits>) -> [Option<i64>; 4] {
    let c = CreditColumns::encode(credits);
    [
        c.remaining,
        c.refill_amount,
        c.refill_interval_ms,
        c.refilled_at,
    ]
}
