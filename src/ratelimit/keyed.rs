//! Rate-limit slots looked up by key id, for callers without a cache beside
//! which to keep them.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::RwLock;

use super::KeyBuckets;

const SHARDS: usize = 32;

type Shard = RwLock<HashMap<Box<str>, Arc<KeyBuckets>>>;

/// A concurrent map from key id to that key's [`KeyBuckets`].
///
/// Sharded over 32 read-write locks so that concurrent lookups of different
/// keys rarely meet. Entries are created on first use and dropped by
/// [`evict_idle`](Self::evict_idle) once all their buckets are full again, so
/// memory stays bounded by the keys active within roughly one quota period.
///
/// ```
/// use keygate::{Clock, KeyedBuckets, LocalRateLimiter, ManualClock, Quota};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = LocalRateLimiter::new(Arc::new(clock.clone()));
/// let slots = KeyedBuckets::new();
/// let quota = Quota::per_second(10)?;
///
/// let slot = slots.get_or_insert("key_a", 1);
/// assert!(limiter.check_now(&slot, 0, &quota).unwrap().allowed);
/// drop(slot);
/// assert_eq!(slots.len(), 1);
///
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(slots.evict_idle(clock.monotonic_nanos()), 1);
/// assert!(slots.is_empty());
/// # Ok::<(), keygate::QuotaError>(())
/// ```
#[derive(Debug)]
pub struct KeyedBuckets {
    hasher: RandomState,
    shards: Box<[Shard]>,
}

impl KeyedBuckets {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key_id: &str) -> &Shard {
        let hash = self.hasher.hash_one(key_id);
        // The high bits: the shard maps use their own hashers, so any bits do.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The slot for `key_id`, creating one with `n_classes` fresh buckets if
    /// there is none.
    ///
    /// An existing slot is returned as it is, even if it was created with a
    /// different number of classes.
    pub fn get_or_insert(&self, key_id: &str, n_classes: usize) -> Arc<KeyBuckets> {
        let shard = self.shard(key_id);
        if let Some(slot) = shard.read().get(key_id) {
            return Arc::clone(slot);
        }
        let mut map = shard.write();
        Arc::clone(
            map.entry(Box::from(key_id))
                .or_insert_with(|| Arc::new(KeyBuckets::new(n_classes))),
        )
    }

    /// The slot for `key_id`, if there is one.
    pub fn get(&self, key_id: &str) -> Option<Arc<KeyBuckets>> {
        self.shard(key_id).read().get(key_id).cloned()
    }

    /// Drops the slot for `key_id` (e.g. once the key is revoked), returning it.
    pub fn remove(&self, key_id: &str) -> Option<Arc<KeyBuckets>> {
        self.shard(key_id).write().remove(key_id)
    }

    /// Drops every slot whose buckets are all full at `now_nanos`, returning
    /// how many were dropped.
    ///
    /// A slot is kept while anyone else still holds its `Arc`, so a check in
    /// progress is never lost to a concurrent eviction. Run this periodically
    /// (e.g. once per longest quota period); it locks one shard at a time.
    pub fn evict_idle(&self, now_nanos: u64) -> usize {
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write();
            let before = map.len();
            map.retain(|_, slot| Arc::strong_count(slot) > 1 || !slot.is_idle(now_nanos));
            evicted += before - map.len();
        }
        evicted
    }

    /// The number of keys with a slot.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no key has a slot.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.read().is_empty())
    }
}

impl Default for KeyedBuckets {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn get_or_insert_returns_the_same_slot() {
        let slots = KeyedBuckets::new();
        let a = slots.get_or_insert("a", 2);
        let again = slots.get_or_insert("a", 5);
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.len(), 2);
        assert!(Arc::ptr_eq(&a, &slots.get("a").unwrap()));
        assert!(slots.get("b").is_none());
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn remove_drops_state() {
        let slots = KeyedBuckets::new();
        let q = Quota::per_hour(1).unwrap();
        assert!(
            slots
                .get_or_insert("a", 1)
                .bucket(0)
                .unwrap()
                .check(&q, 0)
                .allowed
        );
        assert!(
            !slots
                .get_or_insert("a", 1)
                .bucket(0)
                .unwrap()
                .check(&q, 0)
                .allowed
        );
        assert!(slots.remove("a").is_some());
        assert!(slots.remove("a").is_none());
        assert!(slots.is_empty());
        assert!(
            slots
                .get_or_insert("a", 1)
                .bucket(0)
                .unwrap()
                .check(&q, 0)
                .allowed
        );
    }

    #[test]
    fn evict_idle_keeps_active_keys() {
        let slots = KeyedBuckets::new();
        let per_sec = Quota::per_second(1).unwrap();
        let per_min = Quota::per_minute(1).unwrap();
        for i in 0..100 {
            let slot = slots.get_or_insert(&format!("fast{i}"), 2);
            let _ = slot.bucket(1).unwrap().check(&per_sec, 0);
            let slot = slots.get_or_insert(&format!("slow{i}"), 2);
            let _ = slot.bucket(0).unwrap().check(&per_sec, 0);
            let _ = slot.bucket(1).unwrap().check(&per_min, 0);
        }
        // Never-checked slots are idle from the start.
        drop(slots.get_or_insert("untouched", 2));
        assert_eq!(slots.len(), 201);

        assert_eq!(slots.evict_idle(0), 1);
        assert_eq!(slots.evict_idle(SEC - 1), 0);
        assert_eq!(slots.len(), 200);

        assert_eq!(slots.evict_idle(SEC), 100);
        assert_eq!(slots.len(), 100);
        assert!(slots.get("fast0").is_none());
        assert!(slots.get("slow99").is_some());

        // A slot someone still holds survives even when idle.
        let held = slots.get_or_insert("slow0", 2);
        assert_eq!(slots.evict_idle(60 * SEC), 99);
        assert_eq!(slots.len(), 1);
        drop(held);
        assert_eq!(slots.evict_idle(60 * SEC), 1);
        assert!(slots.is_empty());
    }

    #[test]
    fn concurrent_get_or_insert_shares_one_slot() {
        let slots = KeyedBuckets::new();
        let q = Quota::per_hour(1).unwrap().with_burst(10).unwrap();
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let slot = slots.get_or_insert("shared", 1);
                        if slot.bucket(0).unwrap().check(&q, 0).allowed {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 10);
        assert_eq!(slots.len(), 1);
    }
}
