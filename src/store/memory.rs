//! The in-process store: the default backend, for tests, demos and services
//! that keep keys for the life of the process.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use time::OffsetDateTime;

use super::{
    AccountId, AccountRecord, KeyChange, KeyEntry, KeyId, KeyRecord, KeyStore, ListQuery, OldKey,
    Rehash, SecretAgeQuery, Spend, StoreError,
};
use crate::hash::SecretHash;

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
    by_lookup: HashSet<ByLookup, Seeded>,
    /// Each account's keys in id order (the listing order).
    by_account: HashMap<AccountId, BTreeSet<ById>, Seeded>,
    accounts: HashMap<AccountId, AccountRecord, Seeded>,
    /// Secret digests of active (not revoked) keys, as the SQL stores'
    /// unique index on active hashes.
    active_hashes: HashSet<[u8; 32], Seeded>,
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
        self.0.record().id.as_str()
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

/// The entries sharing one lookup id (almost always one), hashed and
/// compared by that lookup id, which is read from the first entry rather
/// than stored again; no allocation beyond the first entry.
#[derive(Debug)]
struct ByLookup {
    first: Arc<KeyEntry>,
    rest: Vec<Arc<KeyEntry>>,
}

impl ByLookup {
    fn lookup(&self) -> &str {
        &self.first.record().lookup
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// The group without the entry of key `id`; `None` when nothing is left.
    fn without(self, id: &KeyId) -> Option<Self> {
        let mut left = std::iter::once(self.first)
            .chain(self.rest)
            .filter(|e| &e.record().id != id);
        let first = left.next()?;
        Some(Self {
            first,
            rest: left.collect(),
        })
    }
}

impl Borrow<str> for ByLookup {
    fn borrow(&self) -> &str {
        self.lookup()
    }
}

impl Hash for ByLookup {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.lookup().hash(state);
    }
}

impl PartialEq for ByLookup {
    fn eq(&self, other: &Self) -> bool {
        self.lookup() == other.lookup()
    }
}

impl Eq for ByLookup {}

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

    /// Refuses a record whose id, secret or (for key pairs) public key is
    /// already held by an active key.
    fn check_unique(&self, record: &KeyRecord) -> Result<(), StoreError> {
        if self.by_id.contains(record.id.as_str()) {
            return Err(StoreError::Conflict(format!("key {} exists", record.id)));
        }
        let active = record.revoked_at.is_none();
        let pair_clash = record.format == "pair"
            && self
                .by_lookup
                .get(record.lookup.as_str())
                .is_some_and(|list| {
                    list.iter()
                        .any(|e| e.record().revoked_at.is_none() && e.record().format == "pair")
                });
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
                .filter(|e| e.record().format == format && e.record().is_active(now))
                .count()
        })
    }

    fn add(&mut self, record: KeyRecord) -> Result<(), StoreError> {
        self.check_unique(&record)?;
        let entry = Arc::new(KeyEntry::new(record));
        let r = entry.record();
        if r.revoked_at.is_none() {
            self.active_hashes.insert(*r.hash.digest());
        }
        // The account's set exists after its first key: no clone of its id.
        let in_account = ById(Arc::clone(&entry));
        match self.by_account.get_mut(&r.account) {
            Some(keys) => {
                keys.insert(in_account);
            }
            None => {
                self.by_account
                    .insert(r.account.clone(), BTreeSet::from([in_account]));
            }
        }
        self.push_lookup(Arc::clone(&entry));
        self.by_id.insert(ById(entry));
        Ok(())
    }

    fn push_lookup(&mut self, entry: Arc<KeyEntry>) {
        let group = match self.by_lookup.take(entry.record().lookup.as_str()) {
            Some(mut group) => {
                group.rest.push(entry);
                group
            }
            None => ByLookup {
                first: entry,
                rest: Vec::new(),
            },
        };
        self.by_lookup.insert(group);
    }

    /// Applies `change` to a key's record, swapping in a successor entry that
    /// keeps the in-process state.
    fn update(
        &mut self,
        id: &KeyId,
        change: impl FnOnce(&mut KeyRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let old = &self.by_id.get(id.as_str()).ok_or(StoreError::NotFound)?.0;
        let mut record = old.record().clone();
        change(&mut record)?;
        if record.revoked_at.is_none()
            && record.hash != old.record().hash
            && self.active_hashes.contains(record.hash.digest())
        {
            return Err(StoreError::Conflict("the key is already stored".into()));
        }
        if old.record().revoked_at.is_none() {
            self.active_hashes.remove(old.record().hash.digest());
        }
        if record.revoked_at.is_none() {
            self.active_hashes.insert(*record.hash.digest());
        }
        let next = Arc::new(old.succeed(record));
        let old_lookup = old.record().lookup.clone();
        let old_account = old.record().account.clone();
        if let Some(rest) = self
            .by_lookup
            .take(old_lookup.as_str())
            .and_then(|group| group.without(id))
        {
            self.by_lookup.insert(rest);
        }
        self.push_lookup(Arc::clone(&next));
        // The account's set holds the successor in place of the old entry
        // (under its new account, should a change ever move it).
        if let Some(keys) = self.by_account.get_mut(&old_account) {
            keys.remove(id.as_str());
        }
        self.by_account
            .entry(next.record().account.clone())
            .or_default()
            .insert(ById(Arc::clone(&next)));
        self.by_id.replace(ById(next));
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
        Ok(self
            .inner
            .read()
            .by_lookup
            .get(lookup)
            .map(|group| group.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn find_now(
        &self,
        lookup: &str,
        accept: &mut dyn FnMut(&KeyEntry) -> bool,
    ) -> Option<Option<Arc<KeyEntry>>> {
        let inner = self.inner.read();
        let found = inner
            .by_lookup
            .get(lookup)
            .and_then(|list| list.iter().find(|e| accept(e)).cloned());
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
            .filter(|e| query.include_revoked || e.record().revoked_at.is_none())
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
            .filter(|e| query.after.as_ref().is_none_or(|a| &e.record().id > a))
            .filter(|e| query.matches(e.record()))
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
        let Some(mut credits) = entry.record().credits else {
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

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        match inner.by_id.get(old.as_str()).map(|e| &e.0) {
            None => return Err(StoreError::NotFound),
            Some(e) if e.record().revoked_at.is_some() => return Err(StoreError::Revoked),
            Some(e) if e.record().replaced_by.is_some() => return Err(StoreError::Rotated),
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
