//! Pepper rotation that finishes: keys hashed under an older pepper are
//! re-hashed under the current one when they verify, written behind in
//! batches like last-used times, and the keys each pepper version still
//! holds can be counted, so an old pepper can be retired once it holds none.

use std::collections::BTreeMap;

use super::ApiKeys;
use crate::error::Error;
use crate::hash::SHA256_VERSION;
use crate::store::{KeyEntry, Rehash};

impl ApiKeys {
    /// Queues a re-hash of a key that just verified under an older pepper
    /// (verify calls it; the secret is the one that verified). The new hash
    /// is computed once per key per flush.
    #[cold]
    pub(super) fn queue_rehash(&self, entry: &KeyEntry, secret: &str) {
        let mut pending = self.inner.rehash.lock();
        if !pending.contains_key(entry.id()) {
            let to = self.inner.hasher.hash(secret);
            pending.insert(
                entry.id().clone(),
                Rehash {
                    id: entry.id().clone(),
                    from: entry.hash().clone(),
                    to,
                },
            );
        }
    }

    /// True when a key verified with this hash should be re-hashed under the
    /// current pepper: it was made under another pepper version. Plain
    /// SHA-256 hashes of imported keys (version 0) stay as they were
    /// imported.
    #[inline]
    pub(super) fn needs_rehash(&self, version: u32) -> bool {
        version != self.inner.hasher.current_version() && version != SHA256_VERSION
    }

    /// Writes the re-hashes queued since the previous flush in one batch:
    /// every key that verified under an older pepper gets its hash under the
    /// current one. Returns how many keys changed. The flusher
    /// ([`spawn_last_used_flusher`](Self::spawn_last_used_flusher)) calls it
    /// on every tick; call it yourself if you flush by hand.
    ///
    /// Safe when instances race: a key changes only while it still has the
    /// hash it verified with, so a key another instance re-hashed first (or
    /// whose secret was reset since) is left alone. A failed batch is dropped,
    /// not retried: the keys queue again the next time they verify.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use keygate::{profiles, store::AccountId, ApiKeys, CreateKey, Hasher, MemoryStore, Pepper};
    /// use std::sync::Arc;
    ///
    /// let (old, new) = (Pepper::new(1, [1u8; 32]).unwrap(), Pepper::new(2, [2u8; 32]).unwrap());
    /// let store = Arc::new(MemoryStore::new());
    /// let before = ApiKeys::builder(profiles::mailjawn())
    ///     .store(Arc::clone(&store))
    ///     .pepper(old.clone())
    ///     .build()
    ///     .unwrap();
    /// let org = AccountId::new("org_1").unwrap();
    /// let key = before.operator().create(&org, CreateKey::new("ci").bundle("sdk")).await.unwrap();
    ///
    /// // Pepper 2 becomes current; pepper 1 stays for verification.
    /// let after = ApiKeys::builder(profiles::mailjawn())
    ///     .store(Arc::clone(&store))
    ///     .hasher(Hasher::new(new.clone()).with_previous(old).unwrap())
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(after.keys_per_pepper().await.unwrap().get(&1), Some(&1));
    /// after.verify(key.key.expose_secret()).await.unwrap();
    /// assert_eq!(after.flush_rehashes().await.unwrap(), 1);
    /// assert_eq!(after.keys_per_pepper().await.unwrap().get(&1), None);
    /// # });
    /// ```
    pub async fn flush_rehashes(&self) -> Result<usize, Error> {
        let batch: Vec<Rehash> = self.inner.rehash.lock().drain().map(|(_, r)| r).collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let written = self.inner.store.rehash_secrets(&batch).await;
        crate::telemetry::flush("rehash", batch.len(), written.is_ok());
        Ok(written?)
    }

    /// How many keys each pepper version still holds, by version: keys
    /// usable now (not revoked, not expired). Version 0 counts imported
    /// plain SHA-256 hashes. A version absent from the map holds no key, and
    /// its pepper can be removed (see the README's "Rotating the pepper").
    ///
    /// This reads the whole key table (one `GROUP BY`): an operator's query,
    /// not something to call per request.
    pub async fn keys_per_pepper(&self) -> Result<BTreeMap<u32, u64>, Error> {
        let now = self.inner.clock.now();
        Ok(self.inner.store.count_by_pepper(now).await?)
    }
}
