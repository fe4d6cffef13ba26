//! The in-process store: the default backend, for tests, demos and services
//! that keep keys for the life of the process.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use hashbrown::HashTable;
use parking_lot::RwLock;
use time::OffsetDateTime;

use super::record::SharedParts;
use super::{
    AccountId, AccountRecord, KeyChange, KeyEntry, KeyId, KeyRecord, KeyStore, ListQuery, OldKey,
    Rehash, SecretAgeQuery, SharedSpend, Spend, StoreError,
};
use crate::credits::Credits;
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityChange, IdentityId};

/// Keys and accounts in memory, behind one reader-writer lock. Reads (every
/// verify) share the lock; writes are short.
///
/// ```
/// # tokio_test_block_on(async {
/// use keygate::{profiles, AccountId, ApiKeys, CreateKey, MemoryStore};
///
/// let api = ApiKeys::builder(profiles::mailjawn()).store(MemoryStore::new()).build().unwrap();
/// let org = AccountId::new("org_1").unwrap();
/// let key = api.operator().create(&org, CreateKey::new("ci").bundle("sdk")).await.unwrap();
/// assert!(api.verify(key.key.expose_secret()).await.is_ok());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashSet<ById, Seeded>,
    /// Every entry, under the hash of its lookup id. Lookup ids need not be
    /// unique, so one lookup id may have several entries (almost never).
    by_lookup: HashTable<Arc<KeyEntry>>,
    lookup_hasher: Seeded,
    /// Each account's keys in id order (the listing order).
    by_account: HashMap<AccountId, BTreeSet<ById>, Seeded>,
    accounts: HashMap<AccountId, AccountRecord, Seeded>,
    /// Active (not revoked) keys by secret digest, as the SQL stores'
    /// unique index on active hashes.
    active_hashes: HashSet<ByHash, Seeded>,
    /// One copy of each account, format and bundle the entries share.
    parts: SharedParts,
    /// Identities by id, as handed to the entries of their keys. Their
    /// credits are kept apart, in `identity_credits`, so a spend does not
    /// rebuild the entries of every key of the identity.
    identities: HashMap<IdentityId, Arc<Identity>, Seeded>,
    /// Each identity's current credits.
    identity_credits: HashMap<IdentityId, Credits, Seeded>,
}

/// The hasher of the indexes: foldhash, seeded at random per process. Stored
/// lookup ids and key ids are random (a client cannot place entries where it
/// likes), so a fast seeded hash is as safe here as SipHash, at a fifth of
/// the cost of hashing a lookup id on every verify.
type Seeded = foldhash::quality::RandomState;

/// An entry in the by-id index and an account's key set, hashed, compared
/// and ordered by its key id, so the id is not stored again as a key.
#[derive(Debug)]
struct ById(Arc<KeyEntry>);

impl ById {
    fn id(&self) -> &str {
        self.0.id().as_str()
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.id()
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Bytewise by id, as `KeyId` and `str` order (so `Borrow<str>` ranges work).
impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id().cmp(other.id())
    }
}

/// An active entry, hashed and compared by its secret digest, so the digest
/// is not stored again.
#[derive(Debug)]
struct ByHash(Arc<KeyEntry>);

impl Borrow<[u8; 32]> for ByHash {
    fn borrow(&self) -> &[u8; 32] {
        self.0.hash().digest()
    }
}

impl Hash for ByHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash().digest().hash(state);
    }
}

impl PartialEq for ByHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.hash().digest() == other.0.hash().digest()
    }
}

impl Eq for ByHash {}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys stored, revoked ones included.
    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Registers a top-level account on first use; a sub-account must exist.
    fn ensure_account(&mut self, id: &AccountId, now: OffsetDateTime) -> Result<(), StoreError> {
        if self.accounts.contains_key(id) {
            return Ok(());
        }
        if !id.is_top_level() {
            return Err(StoreError::NotFound);
        }
        self.accounts.insert(
            id.clone(),
            AccountRecord {
                id: id.clone(),
                parent: None,
                created_at: now,
            },
        );
        Ok(())
    }

    /// The entries whose lookup id is `lookup`.
    fn lookup<'a>(&'a self, lookup: &'a str) -> impl Iterator<Item = &'a Arc<KeyEntry>> + 'a {
        self.by_lookup
            .iter_hash(self.lookup_hasher.hash_one(lookup))
            .filter(move |e| e.lookup() == lookup)
    }

    /// Refuses a record whose id, secret or (for key pairs) public key is
    /// already held by an active key.
    fn check_unique(&self, record: &KeyRecord) -> Result<(), StoreError> {
        if self.by_id.contains(record.id.as_str()) {
            return Err(StoreError::Conflict(format!("key {} exists", record.id)));
        }
        let active = record.revoked_at.is_none();
        let pair_clash = record.format == "pair"
            && self
                .lookup(&record.lookup)
                .any(|e| !e.is_revoked() && e.format() == "pair");
        let clash = active && (self.active_hashes.contains(record.hash.digest()) || pair_clash);
        if clash {
            return Err(StoreError::Conflict("the key is already stored".into()));
        }
        Ok(())
    }

    fn count_active(&self, account: &AccountId, format: &str, now: OffsetDateTime) -> usize {
        self.by_account.get(account).map_or(0, |ids| {
            ids.iter()
                .map(|e| &e.0)
                .filter(|e| e.format() == format && e.is_active(now))
                .count()
        })
    }

    /// The identity a record names, which must be one of the record's own
    /// account: [`StoreError::NotFound`] otherwise, as the SQL stores'
    /// foreign key answers.
    fn identity_of(&self, record: &KeyRecord) -> Result<Option<Arc<Identity>>, StoreError> {
        let Some(id) = &record.identity else {
            return Ok(None);
        };
        match self.identities.get(id) {
            Some(identity) if identity.account == record.account => Ok(Some(Arc::clone(identity))),
            _ => Err(StoreError::NotFound),
        }
    }

    /// The ids of an identity's keys.
    fn keys_of(&self, identity: &IdentityId) -> Vec<KeyId> {
        self.by_id
            .iter()
            .filter(|e| e.0.record().identity.as_ref() == Some(identity))
            .map(|e| e.0.record().id.clone())
            .collect()
    }

    /// An identity with its current credits.
    fn identity_now(&self, id: &IdentityId) -> Option<Identity> {
        let mut identity = Identity::clone(self.identities.get(id)?);
        identity.credits = self.identity_credits.get(id).copied();
        Some(identity)
    }

    fn add(&mut self, record: KeyRecord) -> Result<(), StoreError> {
        self.check_unique(&record)?;
        let identity = self.identity_of(&record)?;
        let mut entry = KeyEntry::new_in(record, &mut self.parts);
        entry.set_identity(identity);
        let entry = Arc::new(entry);
        self.index(entry);
        Ok(())
    }

    /// Puts `entry` in every index.
    fn index(&mut self, entry: Arc<KeyEntry>) {
        if !entry.is_revoked() {
            self.active_hashes.insert(ByHash(Arc::clone(&entry)));
        }
        // The account's set exists after its first key: no clone of its id.
        let in_account = ById(Arc::clone(&entry));
        match self.by_account.get_mut(entry.account()) {
            Some(keys) => {
                keys.insert(in_account);
            }
            None => {
                self.by_account
                    .insert(entry.account().clone(), BTreeSet::from([in_account]));
            }
        }
        let hasher = &self.lookup_hasher;
        self.by_lookup
            .insert_unique(hasher.hash_one(entry.lookup()), Arc::clone(&entry), |e| {
                hasher.hash_one(e.lookup())
            });
        self.by_id.insert(ById(entry));
    }

    /// Takes the entry of key `id` out of every index.
    fn unindex(&mut self, id: &KeyId) -> Option<Arc<KeyEntry>> {
        let ById(entry) = self.by_id.take(id.as_str())?;
        if !entry.is_revoked() {
            self.active_hashes.remove(entry.hash().digest());
        }
        if let Some(keys) = self.by_account.get_mut(entry.account()) {
            keys.remove(id.as_str());
        }
        let hash = self.lookup_hasher.hash_one(entry.lookup());
        if let Ok(found) = self.by_lookup.find_entry(hash, |e| Arc::ptr_eq(e, &entry)) {
            found.remove();
        }
        Some(entry)
    }

    /// Applies `change` to a key's record, swapping in a successor entry that
    /// keeps the in-process state.
    fn update(
        &mut self,
        id: &KeyId,
        change: impl FnOnce(&mut KeyRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let old = &self.by_id.get(id.as_str()).ok_or(StoreError::NotFound)?.0;
        let mut record = old.record();
        change(&mut record)?;
        let identity = self.identity_of(&record)?;
        if record.revoked_at.is_none()
            && &record.hash != old.hash()
            && self.active_hashes.contains(record.hash.digest())
        {
            return Err(StoreError::Conflict("the key is already stored".into()));
        }
        let old = self.unindex(id).ok_or(StoreError::NotFound)?;
        let next = Arc::new(old.succeed_in(record, identity, &mut self.parts));
        drop(old);
        self.index(next);
        Ok(())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        if inner.accounts.contains_key(&account.id) {
            return Err(StoreError::Conflict(format!(
                "account {} exists",
                account.id
            )));
        }
        let parent = account.id.parent();
        if let Some(parent) = &parent {
            inner.ensure_account(parent, account.created_at)?;
        }
        inner
            .accounts
            .insert(account.id.clone(), AccountRecord { parent, ..account });
        Ok(())
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.inner.read().accounts.get(id).cloned())
    }

    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        inner.ensure_account(&record.account, record.created_at)?;
        if let Some(limit) = limit {
            if inner.count_active(&record.account, &record.format, now) >= limit as usize {
                return Err(StoreError::LimitReached { limit });
            }
        }
        inner.add(record)
    }

    async fn insert_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        let mut ids = std::collections::HashSet::with_capacity(records.len());
        let mut secrets = std::collections::HashSet::with_capacity(records.len());
        for r in &records {
            if !ids.insert(&r.id) || (r.revoked_at.is_none() && !secrets.insert(&r.hash)) {
                return Err(StoreError::Conflict(format!("key {} exists", r.id)));
            }
            inner.check_unique(r)?;
            if !r.account.is_top_level() && !inner.accounts.contains_key(&r.account) {
                return Err(StoreError::NotFound);
            }
        }
        for r in records {
            inner.ensure_account(&r.account, r.created_at)?;
            inner.add(r)?;
        }
        Ok(())
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        Ok(self.inner.read().lookup(lookup).cloned().collect())
    }

    fn find_now(
        &self,
        lookup: &str,
        accept: &mut dyn FnMut(&KeyEntry) -> bool,
    ) -> Option<Option<Arc<KeyEntry>>> {
        let inner = self.inner.read();
        let found = inner.lookup(lookup).find(|e| accept(e)).cloned();
        Some(found)
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        Ok(self
            .inner
            .read()
            .by_id
            .get(id.as_str())
            .map(|e| Arc::clone(&e.0)))
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let inner = self.inner.read();
        let Some(ids) = inner.by_account.get(account) else {
            return Ok(Vec::new());
        };
        let start = match &query.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        Ok(ids
            .range::<str, _>((start, Bound::Unbounded))
            .map(|e| &e.0)
            .filter(|e| query.include_revoked || !e.is_revoked())
            .take(query.limit)
            .map(|e| e.snapshot())
            .collect())
    }

    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.inner.write().update(id, |r| {
            r.revoked_at.get_or_insert(at);
            Ok(())
        })
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.inner.write().update(id, |r| {
            if r.revoked_at.is_some() {
                return Err(StoreError::Revoked);
            }
            r.lookup = lookup.to_owned();
            r.hash = hash;
            r.secret_set_at = at;
            Ok(())
        })
    }

    async fn list_stale_secrets(
        &self,
        query: &SecretAgeQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let inner = self.inner.read();
        let mut found: Vec<KeyRecord> = inner
            .by_id
            .iter()
            .map(|e| &e.0)
            .filter(|e| query.after.as_ref().is_none_or(|a| e.id() > a))
            .filter(|e| query.matches_entry(e))
            .map(|e| e.snapshot())
            .collect();
        found.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        found.truncate(query.limit);
        Ok(found)
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError> {
        let mut inner = self.inner.write();
        inner.update(id, |r| change.apply_unless_revoked(r))?;
        let entry = inner
            .by_id
            .get(id.as_str())
            .map(|e| &e.0)
            .ok_or(StoreError::NotFound)?;
        Ok(entry.snapshot())
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        // Under the write lock: the read, the refill and the spend are one
        // step, however many tasks spend at once.
        let mut inner = self.inner.write();
        let entry = inner
            .by_id
            .get(id.as_str())
            .map(|e| &e.0)
            .ok_or(StoreError::NotFound)?;
        let Some(mut credits) = entry.credits() else {
            return Ok(Spend::Unlimited);
        };
        match credits.spend(cost, now) {
            Ok(remaining) => {
                inner.update(id, |r| {
                    r.credits = Some(credits);
                    Ok(())
                })?;
                Ok(Spend::Spent { remaining })
            }
            Err(next_refill) => Ok(Spend::Exhausted { next_refill }),
        }
    }

    async fn create_identity(&self, identity: Identity) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        inner.ensure_account(&identity.account, identity.created_at)?;
        let taken = inner.identities.contains_key(&identity.id)
            || inner
                .identities
                .values()
                .any(|i| i.account == identity.account && i.external_id == identity.external_id);
        if taken {
            return Err(StoreError::Conflict(
                "an identity with this external id exists".into(),
            ));
        }
        if let Some(credits) = identity.credits {
            inner.identity_credits.insert(identity.id.clone(), credits);
        }
        inner
            .identities
            .insert(identity.id.clone(), Arc::new(identity));
        Ok(())
    }

    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>, StoreError> {
        Ok(self.inner.read().identity_now(id))
    }

    async fn list_identities(
        &self,
        account: &AccountId,
        after: Option<&IdentityId>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        let inner = self.inner.read();
        let mut ids: Vec<&IdentityId> = inner
            .identities
            .values()
            .filter(|i| &i.account == account && after.is_none_or(|a| &i.id > a))
            .map(|i| &i.id)
            .collect();
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .take(limit)
            .filter_map(|id| inner.identity_now(id))
            .collect())
    }

    async fn update_identity(
        &self,
        id: &IdentityId,
        change: &IdentityChange,
    ) -> Result<Identity, StoreError> {
        let mut inner = self.inner.write();
        let mut identity = inner.identity_now(id).ok_or(StoreError::NotFound)?;
        change.apply(&mut identity);
        match identity.credits {
            Some(c) => inner.identity_credits.insert(id.clone(), c),
            None => inner.identity_credits.remove(id),
        };
        inner
            .identities
            .insert(id.clone(), Arc::new(identity.clone()));
        // The identity's keys get entries holding the new identity.
        for key in inner.keys_of(id) {
            inner.update(&key, |_| Ok(()))?;
        }
        Ok(identity)
    }

    async fn delete_identity(&self, id: &IdentityId) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        if !inner.identities.contains_key(id) {
            return Err(StoreError::NotFound);
        }
        for key in inner.keys_of(id) {
            inner.update(&key, |r| {
                r.identity = None;
                Ok(())
            })?;
        }
        inner.identities.remove(id);
        inner.identity_credits.remove(id);
        Ok(())
    }

    async fn spend_shared_credits(
        &self,
        key: &KeyId,
        identity: &IdentityId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<SharedSpend, StoreError> {
        // Under the write lock: both reads, refills and spends are one step.
        let mut inner = self.inner.write();
        let entry = inner
            .by_id
            .get(key.as_str())
            .map(|e| &e.0)
            .ok_or(StoreError::NotFound)?;
        let mut key_credits = entry.record().credits;
        let key_spend = match &mut key_credits {
            None => Spend::Unlimited,
            Some(c) => match c.spend(cost, now) {
                Ok(remaining) => Spend::Spent { remaining },
                Err(next_refill) => {
                    let refused = Spend::Exhausted { next_refill };
                    return Ok(SharedSpend::new(refused, Spend::Unlimited));
                }
            },
        };
        // Only the identity the key is attached to now.
        let attached = entry.record().identity.as_ref() == Some(identity);
        let mut shared = inner
            .identity_credits
            .get(identity)
            .copied()
            .filter(|_| attached);
        let identity_spend = match &mut shared {
            None => Spend::Unlimited,
            Some(c) => match c.spend(cost, now) {
                Ok(remaining) => Spend::Spent { remaining },
                Err(next_refill) => {
                    let refused = Spend::Exhausted { next_refill };
                    return Ok(SharedSpend::new(key_spend, refused));
                }
            },
        };
        if let Some(c) = shared {
            inner.identity_credits.insert(identity.clone(), c);
        }
        if key_credits.is_some() {
            inner.update(key, |r| {
                r.credits = key_credits;
                Ok(())
            })?;
        }
        Ok(SharedSpend::new(key_spend, identity_spend))
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        match inner.by_id.get(old.as_str()).map(|e| &e.0) {
            None => return Err(StoreError::NotFound),
            Some(e) if e.is_revoked() => return Err(StoreError::Revoked),
            Some(e) if e.replaced_by().is_some() => return Err(StoreError::Rotated),
            Some(_) => {}
        }
        inner.check_unique(&new)?;
        let successor = new.id.clone();
        inner.update(old, |r| {
            r.replaced_by = Some(successor);
            match old_key {
                OldKey::RevokeAt(at) => r.revoked_at = Some(at),
                OldKey::ExpireAt(at) => {
                    r.expires_at = Some(r.expires_at.map_or(at, |e| e.min(at)));
                }
            }
            Ok(())
        })?;
        inner.add(new)
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let inner = self.inner.read();
        for (id, at) in uses {
            if let Some(ById(e)) = inner.by_id.get(id.as_str()) {
                e.touch(*at);
            }
        }
        Ok(())
    }

    fn needs_last_used_flush(&self) -> bool {
        false
    }

    fn keeps_entries(&self) -> bool {
        true
    }

    fn is_persistent(&self) -> bool {
        false
    }

    async fn rehash_secrets(&self, batch: &[Rehash]) -> Result<usize, StoreError> {
        let mut inner = self.inner.write();
        let mut changed = 0;
        for rehash in batch {
            let current = inner.by_id.get(rehash.id.as_str()).map(|e| e.0.record());
            if current.is_none_or(|r| r.revoked_at.is_some() || r.hash != rehash.from) {
                continue;
            }
            inner.update(&rehash.id, |r| {
                r.hash = rehash.to.clone();
                Ok(())
            })?;
            changed += 1;
        }
        Ok(changed)
    }

    async fn count_by_pepper(&self, now: OffsetDateTime) -> Result<BTreeMap<u32, u64>, StoreError> {
        let inner = self.inner.read();
        let mut counts = BTreeMap::new();
        for ById(e) in inner.by_id.iter() {
            let record = e.record();
            if record.revoked_at.is_none() && record.expires_at.is_none_or(|x| x > now) {
                *counts.entry(record.hash.version()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }
}
