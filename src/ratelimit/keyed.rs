//! Rate-limit state looked up by key id (or any other hashable key, such as
//! a client address), for callers with no slot of their own beside a cached
//! key record.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{RwLock, RwLockWriteGuard};

use super::{Decision, KeyBuckets, LimiterUnavailable, Quota};

pub(crate) const SHARDS: usize = 32;

type Shard<K, S> = RwLock<HashMap<K, Arc<KeyBuckets>, S>>;

/// A concurrent map from key id (by default; any hashable key `K`) to that
/// key's [`KeyBuckets`].
///
/// Sharded over 32 read-write locks so that concurrent lookups of different
/// keys rarely meet. Entries are created on first use and dropped by
/// [`evict_idle`](Self::evict_idle) once all their buckets are full again, so
/// memory stays bounded by the keys active within roughly one quota period.
/// A map made [`with_max_slots`](Self::with_max_slots) also has a hard bound,
/// kept by [`get_or_insert_bounded`](Self::get_or_insert_bounded).
///
/// `S` hashes keys, for the choice of shard and in each shard's map (each
/// with its own `S::default()`; both hashers used here seed themselves at
/// random).
#[derive(Debug)]
pub(crate) struct KeyedBuckets<K = Box<str>, S = RandomState> {
    hasher: S,
    shards: Box<[Shard<K, S>]>,
    /// The most slots one shard holds through `get_or_insert_bounded`.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // used by the HTTP layer
    per_shard: usize,
}

impl<K: Hash + Eq, S: BuildHasher + Default> KeyedBuckets<K, S> {
    /// An empty map with no bound but the one idle eviction keeps.
    pub(crate) fn new() -> Self {
        Self {
            hasher: S::default(),
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(S::default())))
                .collect(),
            per_shard: usize::MAX,
        }
    }

    /// An empty map that [`get_or_insert_bounded`](Self::get_or_insert_bounded)
    /// keeps at or below `max` slots, rounded up to a multiple of 32 (the
    /// number of shards; each holds at most `max / 32`, rounded up, and at
    /// least one).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // used by the HTTP layer
    pub(crate) fn with_max_slots(max: usize) -> Self {
        Self {
            per_shard: max.div_ceil(SHARDS).max(1),
            ..Self::new()
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, S> {
        let hash = self.hasher.hash_one(key);
        // The high bits: the shard maps use their own hashers, so any bits do.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The slot for `key`, creating one with `n_classes` fresh buckets if
    /// there is none.
    ///
    /// An existing slot is returned as it is, even if it was created with a
    /// different number of classes.
    pub(crate) fn get_or_insert<Q>(&self, key: &Q, n_classes: usize) -> Arc<KeyBuckets>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: Hash + Eq + ToOwned + ?Sized,
    {
        let shard = self.shard(key);
        if let Some(slot) = shard.read().get(key) {
            return Arc::clone(slot);
        }
        let mut map = shard.write();
        Arc::clone(
            map.entry(K::from(key.to_owned()))
                .or_insert_with(|| Arc::new(KeyBuckets::new(n_classes))),
        )
    }

    /// The slot for `key` as [`get_or_insert`](Self::get_or_insert) finds or
    /// makes it, keeping the map within the bound it was made with.
    ///
    /// When a new slot would overfill its shard, the shard's idle slots
    /// (full again at `now_nanos`) are dropped first; if none is, the
    /// sixteenth of the shard's slots that will be full again soonest is
    /// dropped (their keys start afresh when next seen). Slots someone else still holds are never dropped;
    /// when every slot of the shard is held, there is no room and the answer
    /// is `None`.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // used by the HTTP layer
    pub(crate) fn get_or_insert_bounded<Q>(
        &self,
        key: &Q,
        n_classes: usize,
        now_nanos: u64,
    ) -> Option<Arc<KeyBuckets>>
    where
        K: Borrow<Q> + From<Q::Owned>,
        Q: Hash + Eq + ToOwned + ?Sized,
    {
        let shard = self.shard(key);
        if let Some(slot) = shard.read().get(key) {
            return Some(Arc::clone(slot));
        }
        let mut map = shard.write();
        if let Some(slot) = map.get(key) {
            return Some(Arc::clone(slot));
        }
        if map.len() >= self.per_shard {
            map.retain(|_, slot| Arc::strong_count(slot) > 1 || !slot.is_idle(now_nanos));
        }
        if map.len() >= self.per_shard {
            // Still full: drop the slots that will be full again soonest, a
            // sixteenth of the shard at a time, so that a stream of new
            // keys pays for one scan per batch rather than per key.
            let mut times: Vec<u64> = map
                .values()
                .filter(|slot| Arc::strong_count(slot) == 1)
                .map(|slot| slot.full_at())
                .collect();
            let batch = (self.per_shard / 16).clamp(1, times.len().max(1));
            if times.is_empty() {
                return None;
            }
            let (_, &mut threshold, _) = times.select_nth_unstable(batch - 1);
            let mut left = batch;
            map.retain(|_, slot| {
                let drop_this =
                    left > 0 && Arc::strong_count(slot) == 1 && slot.full_at() <= threshold;
                left -= usize::from(drop_this);
                !drop_this
            });
        }
        let slot = Arc::new(KeyBuckets::new(n_classes));
        map.insert(K::from(key.to_owned()), Arc::clone(&slot));
        Some(slot)
    }

    /// The slot for `key`, if there is one.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<Arc<KeyBuckets>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).read().get(key).cloned()
    }

    /// Drops the slot for `key` (e.g. once the key is revoked), returning it.
    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<Arc<KeyBuckets>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).write().remove(key)
    }

    /// Drops every slot whose buckets are all full at `now_nanos`, returning
    /// how many were dropped.
    ///
    /// A slot is kept while anyone else still holds its `Arc`, so a check in
    /// progress is never lost to a concurrent eviction. Run this periodically
    /// (e.g. once per longest quota period); it locks one shard at a time.
    pub(crate) fn evict_idle(&self, now_nanos: u64) -> usize {
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
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // used by the HTTP layer
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no key has a slot.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.read().is_empty())
    }
}

impl<K: Hash + Eq, S: BuildHasher + Default> Default for KeyedBuckets<K, S> {
    fn default() -> Self {
        Self::new()
    }
}

/// The most operation classes [`ClassBuckets`] keeps state for. Profiles have
/// a handful; the cap keeps memory bounded whatever callers pass.
pub(crate) const MAX_CLASSES: usize = 64;

/// How many slots are created between two sweeps of idle ones.
const SWEEP_EVERY: u64 = 1 << 16;

/// Rate-limit state by key id and class name, for limiters the caller hands
/// no slot: one [`KeyedBuckets`] of one-bucket slots per class.
///
/// Each check looks its class up in a short list and its key in that class's
/// map, creating either on first use. Every [`SWEEP_EVERY`] new slots, the
/// slots that are idle (full again) are dropped, so memory stays bounded by
/// the keys in recent use. At most [`MAX_CLASSES`] classes are kept; a check
/// in a further class is an error rather than unbounded growth.
#[derive(Debug)]
pub(crate) struct ClassBuckets {
    classes: RwLock<Vec<(Box<str>, KeyedBuckets)>>,
    created: AtomicU64,
    sweep_every: u64,
}

impl ClassBuckets {
    /// No state yet.
    pub(crate) fn new() -> Self {
        Self::sweeping_every(SWEEP_EVERY)
    }

    /// Sweeps idle slots once every `created` new ones.
    pub(crate) fn sweeping_every(created: u64) -> Self {
        Self {
            classes: RwLock::new(Vec::new()),
            created: AtomicU64::new(0),
            sweep_every: created.max(1),
        }
    }

    /// Checks one request by `key_id` in class `class` at monotonic time
    /// `now_nanos` against `quota`, consuming a token if it is admitted.
    pub(crate) fn check(
        &self,
        key_id: &str,
        class: &str,
        quota: &Quota,
        now_nanos: u64,
    ) -> Result<Decision, LimiterUnavailable> {
        {
            let classes = self.classes.read();
            if let Some(index) = classes.iter().position(|(name, _)| **name == *class) {
                return self.check_in(&classes, index, key_id, quota, now_nanos);
            }
        }
        let mut classes = self.classes.write();
        let index = match classes.iter().position(|(name, _)| **name == *class) {
            Some(index) => index,
            None if classes.len() >= MAX_CLASSES => return Err(too_many_classes()),
            None => {
                classes.push((class.into(), KeyedBuckets::new()));
                classes.len() - 1
            }
        };
        let classes = RwLockWriteGuard::downgrade(classes);
        self.check_in(&classes, index, key_id, quota, now_nanos)
    }

    /// The check in `classes[index]`, under the caller's read lock of the
    /// class list (which a sweep uses too: taking it again could deadlock).
    fn check_in(
        &self,
        classes: &[(Box<str>, KeyedBuckets)],
        index: usize,
        key_id: &str,
        quota: &Quota,
        now_nanos: u64,
    ) -> Result<Decision, LimiterUnavailable> {
        let slots = &classes[index].1;
        let slot = match slots.get(key_id) {
            Some(slot) => slot,
            None => {
                let created = self.created.fetch_add(1, Ordering::Relaxed);
                if created % self.sweep_every == self.sweep_every - 1 {
                    for (_, slots) in classes {
                        slots.evict_idle(now_nanos);
                    }
                }
                slots.get_or_insert(key_id, 1)
            }
        };
        // Slots here are made with one bucket, so this never fails.
        match slot.bucket(0) {
            Some(bucket) => Ok(bucket.check(quota, now_nanos)),
            None => Err(LimiterUnavailable::new("rate-limit slot has no bucket")),
        }
    }

    /// Drops the state of `key_id` in every class.
    pub(crate) fn forget(&self, key_id: &str) {
        for (_, slots) in self.classes.read().iter() {
            slots.remove(key_id);
        }
    }

    /// The number of (key, class) slots held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.classes.read().iter().map(|(_, s)| s.len()).sum()
    }
}

#[cold]
fn too_many_classes() -> LimiterUnavailable {
    LimiterUnavailable::new("more operation classes than the local rate limiter keeps (64)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::nz;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn get_or_insert_returns_the_same_slot() {
        let slots: KeyedBuckets = KeyedBuckets::new();
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
        let slots: KeyedBuckets = KeyedBuckets::new();
        let q = Quota::per_hour(nz(1));
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
        let slots: KeyedBuckets = KeyedBuckets::new();
        let per_sec = Quota::per_second(nz(1)).unwrap();
        let per_min = Quota::per_minute(nz(1));
        for i in 0..100 {
            let slot = slots.get_or_insert(format!("fast{i}").as_str(), 2);
            let _ = slot.bucket(1).unwrap().check(&per_sec, 0);
            let slot = slots.get_or_insert(format!("slow{i}").as_str(), 2);
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
        let slots: KeyedBuckets = KeyedBuckets::new();
        let q = Quota::per_hour(nz(1)).with_burst(10).unwrap();
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

    #[test]
    fn a_bounded_map_never_holds_more_than_its_bound() {
        let slots: KeyedBuckets<u128> = KeyedBuckets::with_max_slots(64);
        let q = Quota::per_hour(nz(1));
        // Every address spends its budget: none is idle, so each new one
        // pushes out the one whose block ends soonest.
        for i in 0..10_000u128 {
            let slot = slots.get_or_insert_bounded(&i, 1, i as u64).unwrap();
            assert!(slot.bucket(0).unwrap().check(&q, i as u64).allowed);
            assert!(slots.len() <= 64);
        }
        assert_eq!(slots.len(), 64);
        // The survivors are the latest ones: their blocks end last.
        assert!(slots.get(&0).is_none());
        assert!(slots.get(&9_999).is_some());
        // Idle slots go first, and held ones never.
        let slots: KeyedBuckets<u128> = KeyedBuckets::with_max_slots(1);
        assert_eq!(slots.per_shard, 1);
        let held = slots.get_or_insert_bounded(&7, 1, 0).unwrap();
        let _ = held.bucket(0).unwrap().check(&q, 0);
        // Find keys that land in 7's shard.
        let same: Vec<u128> = (8..10_000u128)
            .filter(|k| std::ptr::eq(slots.shard(k), slots.shard(&7u128)))
            .take(2)
            .collect();
        assert!(slots.get_or_insert_bounded(&same[0], 1, 0).is_none());
        drop(held);
        let other = slots.get_or_insert_bounded(&same[0], 1, 0).unwrap();
        assert!(slots.get(&7).is_none());
        drop(other);
        // An idle (never checked) slot is dropped for a new key.
        assert!(slots.get_or_insert_bounded(&same[1], 1, 0).is_some());
        assert!(slots.get(&same[0]).is_none());
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn a_slot_is_evicted_once_idle() {
        let slots: KeyedBuckets = KeyedBuckets::new();
        let quota = Quota::per_second(nz(10)).unwrap();
        let slot = slots.get_or_insert("key_a", 1);
        assert!(slot.bucket(0).unwrap().check(&quota, 0).allowed);
        drop(slot);
        assert_eq!(slots.len(), 1);
        // Full again one emission interval later.
        assert_eq!(slots.evict_idle(SEC / 10 - 1), 0);
        assert_eq!(slots.evict_idle(SEC / 10), 1);
        assert!(slots.is_empty());
    }

    #[test]
    fn class_buckets_keep_keys_and_classes_apart() {
        let state = ClassBuckets::new();
        let q = Quota::per_hour(nz(2));
        for _ in 0..2 {
            assert!(state.check("a", "send", &q, 0).unwrap().allowed);
        }
        let denied = state.check("a", "send", &q, 0).unwrap();
        assert!(!denied.allowed);
        assert_eq!(
            denied.retry_after,
            Some(std::time::Duration::from_secs(1800))
        );
        // Another class of the same key, and the same class of another key.
        assert_eq!(state.check("a", "read", &q, 0).unwrap().remaining, 1);
        assert_eq!(state.check("b", "send", &q, 0).unwrap().remaining, 1);
        assert_eq!(state.len(), 3);

        state.forget("a");
        assert_eq!(state.len(), 1);
        assert_eq!(state.check("a", "send", &q, 0).unwrap().remaining, 1);
        state.forget("nobody");
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn class_buckets_refuse_classes_beyond_the_cap() {
        let state = ClassBuckets::new();
        let q = Quota::per_hour(nz(1));
        for i in 0..MAX_CLASSES {
            assert!(state.check("k", &format!("c{i}"), &q, 0).unwrap().allowed);
        }
        let err = state.check("k", "one_more", &q, 0).unwrap_err();
        assert!(err.reason().contains("operation classes"), "{err}");
        // Known classes still work, with their state.
        assert!(!state.check("k", "c0", &q, 0).unwrap().allowed);
        assert!(state.check("other", "c63", &q, 0).unwrap().allowed);
    }

    #[test]
    fn class_buckets_sweep_idle_slots_as_new_ones_come() {
        let state = ClassBuckets::sweeping_every(4);
        let per_sec = Quota::per_second(nz(1)).unwrap();
        let per_hour = Quota::per_hour(nz(1));
        // Three new slots: one that refills within a second, two that do not.
        let _ = state.check("fast", "read", &per_sec, 0).unwrap();
        let _ = state.check("slow", "read", &per_hour, 0).unwrap();
        let _ = state.check("slow", "write", &per_hour, 0).unwrap();
        // Checks of existing slots create nothing and sweep nothing.
        for _ in 0..10 {
            let _ = state.check("fast", "read", &per_sec, 0).unwrap();
        }
        assert_eq!(state.len(), 3);
        // The fourth new slot sweeps first: "fast" is idle a second later.
        let _ = state.check("new", "read", &per_sec, SEC).unwrap();
        assert_eq!(state.len(), 3);
        // The sweep kept the state of keys still in use.
        assert!(!state.check("slow", "read", &per_hour, SEC).unwrap().allowed);
        assert_eq!(
            state
                .check("fast", "read", &per_sec, SEC)
                .unwrap()
                .remaining,
            0
        );
    }

    #[test]
    fn class_buckets_admit_exactly_the_burst_under_contention() {
        let state = ClassBuckets::sweeping_every(1);
        let q = Quota::per_hour(nz(10)).with_burst(25).unwrap();
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (state, q, admitted) = (&state, &q, &admitted);
                s.spawn(move || {
                    for i in 0..50 {
                        // New classes and keys, and sweeps, while others check.
                        let _ = state.check(&format!("k{t}_{i}"), "other", q, 0);
                        if state.check("shared", "send", q, 0).unwrap().allowed {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 25);
    }
}
