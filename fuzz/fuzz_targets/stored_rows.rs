//! Decoding of stored rows as the SQL stores read them: key rows (scopes,
//! rate-limit and metadata JSON, hash, times, credits), account rows and the
//! credit columns. The input is a JSON object of column values, so the seeds
//! are real rows.
//!
//! Asserts: decoding never panics; a decoded record encodes to columns that
//! decode to the same record, and encoding that record again gives the same
//! columns (a fixed point); the same for credits.
#![no_main]

use keygate::fuzzing::{
    decode_account_row, decode_credits, decode_key_row, encode_credits, encode_key_record,
    KeyColumns,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn string(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn opt_string(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn int(v: &Value, k: &str) -> i64 {
    opt_int(v, k).unwrap_or(0)
}

fn opt_int(v: &Value, k: &str) -> Option<i64> {
    let n = v.get(k)?;
    n.as_i64().or_else(|| n.as_u64().map(|u| u as i64))
}

fn bytes(v: &Value, k: &str) -> Vec<u8> {
    match v.get(k) {
        Some(Value::Array(a)) => a.iter().map(|b| b.as_u64().unwrap_or(0) as u8).collect(),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(row) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let columns = KeyColumns {
        id: string(&row, "id"),
        account: string(&row, "account"),
        name: string(&row, "name"),
        format: string(&row, "format"),
        lookup: string(&row, "lookup"),
        hash: bytes(&row, "hash"),
        hash_version: int(&row, "hash_version"),
        bundle: opt_string(&row, "bundle"),
        scopes: string(&row, "scopes"),
        rate_limits: string(&row, "rate_limits"),
        created_at: int(&row, "created_at"),
        secret_set_at: int(&row, "secret_set_at"),
        expires_at: opt_int(&row, "expires_at"),
        last_used_at: opt_int(&row, "last_used_at"),
        revoked_at: opt_int(&row, "revoked_at"),
        replaced_by: opt_string(&row, "replaced_by"),
        lineage: opt_string(&row, "lineage"),
        disabled_at: opt_int(&row, "disabled_at"),
        metadata: string(&row, "metadata"),
        credits_remaining: opt_int(&row, "credits_remaining"),
        credits_refill_amount: opt_int(&row, "credits_refill_amount"),
        credits_refill_interval_ms: opt_int(&row, "credits_refill_interval_ms"),
        credits_refilled_at: opt_int(&row, "credits_refilled_at"),
        identity_id: opt_string(&row, "identity_id"),
    };
    let credit_columns = [
        columns.credits_remaining,
        columns.credits_refill_amount,
        columns.credits_refill_interval_ms,
        columns.credits_refilled_at,
    ];
    if let Some(credits) = decode_credits(credit_columns) {
        let again = encode_credits(credits.as_ref());
        assert_eq!(decode_credits(again), Some(credits));
    }
    if let Ok(record) = decode_key_row(columns) {
        let encoded = encode_key_record(&record).expect("a decoded record encodes");
        let decoded = decode_key_row(encoded.clone()).expect("encoded columns decode");
        assert_eq!(decoded, record);
        assert_eq!(encode_key_record(&decoded).unwrap(), encoded);
    }
    let _ = decode_account_row(
        string(&row, "id"),
        opt_string(&row, "parent"),
        int(&row, "created_at"),
    )
    .map(|a| {
        let again = decode_account_row(
            a.id.as_str().to_owned(),
            a.parent.as_ref().map(|p| p.as_str().to_owned()),
            (a.created_at.unix_timestamp_nanos() / 1_000_000) as i64,
        )
        .expect("a decoded account decodes again");
        assert_eq!(again, a);
    });
});
