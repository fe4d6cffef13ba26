//! A store wrapper that times every call for the `metrics` feature
//! (`keygate_store_call_seconds`, by `op`). The builder puts it around the
//! service's store when the feature is on; the in-memory fast path
//! ([`KeyStore::find_now`]) is forwarded untimed.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    AccountId, AccountRecord, KeyChange, KeyEntry, KeyId, KeyRecord, KeyStore, ListQuery, OldKey,
    Rehash, SecretAgeQuery, SharedSpend, Spend, StoreError,
};
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityChange, IdentityId};
use crate::telemetry::timed;

/// Times every call to the store it wraps.
#[derive(Debug)]
pub(crate) struct MeteredStore {
    inner: Arc<dyn KeyStore>,
}

impl MeteredStore {
    pub(crate) fn new(inner: Arc<dyn KeyStore>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl KeyStore for MeteredStore {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        timed("create_account", self.inner.create_account(account)).await
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        timed("get_account", self.inner.get_account(id)).await
    }

    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        timed("insert_key", self.inner.insert_key(record, limit, now)).await
    }

    async fn insert_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        timed("insert_keys", self.inner.insert_keys(records)).await
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        timed("find_by_lookup", self.inner.find_by_lookup(lookup)).await
    }

    fn find_now(
        &self,
        lookup: &str,
        accept: &mut dyn FnMut(&KeyEntry) -> bool,
    ) -> Option<Option<Arc<KeyEntry>>> {
        self.inner.find_now(lookup, accept)
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        timed("get_key", self.inner.get_key(id)).await
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        timed("list_keys", self.inner.list_keys(account, query)).await
    }

    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        timed("revoke_key", self.inner.revoke_key(id, at)).await
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        timed(
            "replace_secret",
            self.inner.replace_secret(id, lookup, hash, at),
        )
        .await
    }

    async fn list_stale_secrets(
        &self,
        query: &SecretAgeQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        timed("list_stale_secrets", self.inner.list_stale_secrets(query)).await
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError> {
        timed("update_key", self.inner.update_key(id, change)).await
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        timed("spend_credits", self.inner.spend_credits(id, cost, now)).await
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        timed("rotate_key", self.inner.rotate_key(old, new, old_key)).await
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        timed("record_last_used", self.inner.record_last_used(uses)).await
    }

    fn needs_last_used_flush(&self) -> bool {
        self.inner.needs_last_used_flush()
    }

    fn keeps_entries(&self) -> bool {
        self.inner.keeps_entries()
    }

    fn is_persistent(&self) -> bool {
        self.inner.is_persistent()
    }

    async fn rehash_secrets(&self, batch: &[Rehash]) -> Result<usize, StoreError> {
        timed("rehash_secrets", self.inner.rehash_secrets(batch)).await
    }

    async fn count_by_pepper(&self, now: OffsetDateTime) -> Result<BTreeMap<u32, u64>, StoreError> {
        timed("count_by_pepper", self.inner.count_by_pepper(now)).await
    }

    async fn create_identity(&self, identity: Identity) -> Result<(), StoreError> {
        timed("create_identity", self.inner.create_identity(identity)).await
    }

    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>, StoreError> {
        timed("get_identity", self.inner.get_identity(id)).await
    }

    async fn list_identities(
        &self,
        account: &AccountId,
        after: Option<&IdentityId>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        timed(
            "list_identities",
            self.inner.list_identities(account, after, limit),
        )
        .await
    }

    async fn update_identity(
        &self,
        id: &IdentityId,
        change: &IdentityChange,
    ) -> Result<Identity, StoreError> {
        timed("update_identity", self.inner.update_identity(id, change)).await
    }

    async fn delete_identity(&self, id: &IdentityId) -> Result<(), StoreError> {
        timed("delete_identity", self.inner.delete_identity(id)).await
    }

    async fn spend_shared_credits(
        &self,
        key: &KeyId,
        identity: &IdentityId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<SharedSpend, StoreError> {
        timed(
            "spend_shared_credits",
            self.inner.spend_shared_credits(key, identity, cost, now),
        )
        .await
    }
}
