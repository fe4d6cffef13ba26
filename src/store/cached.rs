//! [`CachedStore`]: a bounded cache of verify lookups in front of any
//! [`KeyStore`], so verifying a recently seen key needs no database round trip.
//!
//! The cache holds, per lookup id, the candidates the inner store returned
//! (and, for a short while, the fact that there were none). Changes made
//! through the cache evict the affected lookup ids at once; changes made by
//! other instances arrive through a change feed — with feature `postgres`,
//! `CachedStore::follow_postgres` — or through the public invalidation calls
//! ([`invalidate_lookup`](CachedStore::invalidate_lookup),
//! [`invalidate_all`](CachedStore::invalidate_all),
//! [`set_bypass`](CachedStore::set_bypass)). While a feed cannot promise to
//! deliver every change, the cache is bypassed: it never answers from memory
//! what it might have missed.

#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "postgres")]
pub use postgres::{ChangeFollower, FollowConfig};

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use time::OffsetDateTime;

use super::{
    AccountId, AccountRecord, KeyChange, KeyEntry, KeyId, KeyRecord, KeyStore, ListQuery, OldKey,
    Rehash, SecretAgeQuery, SharedSpend, Spend, StoreError,
};
use crate::clock::{Clock, SystemClock};
use crate::hash::SecretHash;
use crate::identity::{Identity, IdentityChange, IdentityId};

/// The most shards a cache is split into.
const MAX_SHARDS: usize = 32;

/// Small caches get fewer shards, so that each holds at least this many ids.
const MIN_PER_SHARD: usize = 64;

/// Bit of the bypass word set by [`CachedStore::set_bypass`].
const MANUAL_BYPASS: usize = 1;

/// What each change feed that is not listening adds to the bypass word.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
const FEED_DOWN: usize = 2;

/// Sizes and lifetimes of a [`CachedStore`].
///
/// ```
/// use std::time::Duration;
/// use keygate::CacheConfig;
///
/// let config = CacheConfig::default()
///     .with_max_entries(10_000)
///     .with_ttl(Duration::from_secs(30));
/// assert_eq!(config.negative_ttl, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The most lookup ids kept; past it, expired ids are evicted first, then
    /// arbitrary ones. Zero turns caching off. Default 100,000.
    pub max_entries: usize,
    /// How long a lookup that found keys is answered from memory. It bounds
    /// how stale an answer can get if a change is never announced (a store
    /// changed behind keygate's back). Default 60 s.
    pub ttl: Duration,
    /// How long a lookup that found nothing is answered from memory, so
    /// repeated unknown keys do not each cost a query. Zero disables negative
    /// caching. Default 5 s.
    pub negative_ttl: Duration,
}

impl CacheConfig {
    /// Sets [`max_entries`](Self::max_entries).
    #[must_use]
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Sets [`ttl`](Self::ttl).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`negative_ttl`](Self::negative_ttl).
    #[must_use]
    pub fn with_negative_ttl(mut self, negative_ttl: Duration) -> Self {
        self.negative_ttl = negative_ttl;
        self
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        }
    }
}

/// Counters of a [`CachedStore`], for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups sent to the inner store (including every lookup while bypassed).
    pub misses: u64,
    /// Lookup ids held now.
    pub entries: usize,
}

/// A [`KeyStore`] that caches [`find_by_lookup`](KeyStore::find_by_lookup)
/// in front of another store: the verify path of a recently seen key takes
/// one read lock and no I/O.
///
/// - **Bounded**: at most [`CacheConfig::max_entries`] lookup ids, in sharded
///   read-write locks; answers expire after [`CacheConfig::ttl`] (unknown
///   lookups after [`CacheConfig::negative_ttl`]), measured on the injected
///   [`Clock`]'s monotonic time.
/// - **In-process state survives**: rate-limit buckets and compiled scopes
///   live beside cached entries, and carry over when an entry is re-read
///   after it expired.
/// - **Local changes are immediate**: insert, revoke, secret replacement and
///   rotation go to the inner store, then evict the affected lookup ids —
///   also when the call fails or is dropped before it returns (a client
///   that disconnected, a timeout), since the write may have been committed
///   all the same. A write whose call was dropped, or failed with
///   [`StoreError::Unavailable`], may even land after that, so answers that
///   involve the keys it touched are not kept for one
///   [`ttl`](CacheConfig::ttl) afterwards: lookups of those keys ask the
///   inner store meanwhile.
///   Management reads ([`get_key`](KeyStore::get_key),
///   [`list_keys`](KeyStore::list_keys)) always go to the inner store.
/// - **Remote changes are immediate too**, given a change feed: with several
///   instances on one PostgreSQL database, call `follow_postgres`
///   (feature `postgres`). While
///   the feed is disconnected, the cache is emptied and bypassed.
///
/// Clones share one cache, so keep one to read [`stats`](Self::stats) and
/// hand another to [`ApiKeys`](crate::ApiKeys).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keygate::{profiles, AccountId, ApiKeys, CachedStore, CreateKey, MemoryStore};
///
/// let cached = CachedStore::new(Arc::new(MemoryStore::new()));
/// let api = ApiKeys::builder(profiles::mailjawn())
///     .store(Arc::new(cached.clone()))
///     .build()
///     .unwrap();
/// let org = AccountId::new("org_1").unwrap();
/// let key = api.operator().create(&org, CreateKey::new("ci").bundle("sdk")).await.unwrap();
/// api.verify(key.key.expose_secret()).await.unwrap(); // a miss: asks the inner store
/// api.verify(key.key.expose_secret()).await.unwrap(); // a hit
/// assert_eq!(cached.stats().hits, 1);
/// # });
/// ```
#[derive(Clone)]
pub struct CachedStore {
    shared: Arc<Shared>,
}

/// Builds a [`CachedStore`]. See [`CachedStore::builder`].
#[derive(Debug)]
pub struct CachedStoreBuilder {
    inner: Arc<dyn KeyStore>,
    config: CacheConfig,
    clock: Arc<dyn Clock>,
}

impl CachedStoreBuilder {
    /// Sets sizes and lifetimes (default [`CacheConfig::default`]).
    pub fn config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Measures lifetimes on `clock` (use a [`ManualClock`](crate::ManualClock)
    /// in tests). Default [`SystemClock`].
    pub fn clock(self, clock: impl Clock) -> Self {
        self.shared_clock(Arc::new(clock))
    }

    /// Measures lifetimes on a clock shared with other code.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the cache, empty and not bypassed.
    pub fn build(self) -> CachedStore {
        let max = self.config.max_entries;
        let wanted = (max / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        // A power of two, so a shard is picked with a mask.
        let shards = 1usize << wanted.ilog2();
        let carry_state = !self.inner.keeps_entries();
        CachedStore {
            shared: Arc::new(Shared {
                per_shard: max / shards,
                ttl: nanos(self.config.ttl),
                negative_ttl: nanos(self.config.negative_ttl),
                carry_state,
                inner: self.inner,
                clock: self.clock,
                config: self.config,
                hasher: RandomState::new(),
                shards: (0..shards).map(|_| Shard::default()).collect(),
                bypass: AtomicUsize::new(0),
                lease: AtomicU64::new(0),
                leased_until: AtomicU64::new(0),
                strict_wait: AtomicU64::new(0),
                unsettled: Mutex::default(),
                unsettled_until: AtomicU64::new(0),
            }),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl CachedStore {
    /// A cache with the default [`CacheConfig`] and the system clock in front
    /// of `inner`.
    pub fn new(inner: Arc<dyn KeyStore>) -> Self {
        Self::builder(inner).build()
    }

    /// Starts building a cache in front of `inner`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use keygate::{CacheConfig, CachedStore, ManualClock, MemoryStore};
    ///
    /// let cached = CachedStore::builder(Arc::new(MemoryStore::new()))
    ///     .config(CacheConfig::default().with_ttl(Duration::from_secs(10)))
    ///     .clock(ManualClock::new())
    ///     .build();
    /// assert!(cached.is_empty());
    /// ```
    pub fn builder(inner: Arc<dyn KeyStore>) -> CachedStoreBuilder {
        CachedStoreBuilder {
            inner,
            config: CacheConfig::default(),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &Arc<dyn KeyStore> {
        &self.shared.inner
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// Hit and miss counts and the number of lookup ids held.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.shared.shards.iter() {
            stats.hits += shard.hits.load(Ordering::Relaxed);
            stats.misses += shard.misses.load(Ordering::Relaxed);
            stats.entries += shard.slots.read().by_lookup.len();
        }
        stats
    }

    /// Number of lookup ids held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.slots.read().by_lookup.len())
            .sum()
    }

    /// True when no lookup id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while every lookup goes to the inner store: after
    /// [`set_bypass(true)`](Self::set_bypass), and while a change feed is not
    /// listening (before its first `LISTEN`, after a lost connection until it
    /// has listened again, and for good once it has stopped).
    pub fn is_bypassed(&self) -> bool {
        self.shared.is_bypassed()
    }

    /// Forgets what is cached for `lookup`; the next lookup asks the inner
    /// store. For change feeds: call it when a key with this lookup id was
    /// created, changed or revoked elsewhere. A lookup already on its way to
    /// the inner store when this is called does not put its answer back in
    /// the cache as fresh.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let cached = keygate::CachedStore::new(Arc::new(keygate::MemoryStore::new()));
    /// // On a message from your own change feed:
    /// cached.invalidate_lookup("mj_Ab3dE");
    /// ```
    pub fn invalidate_lookup(&self, lookup: &str) {
        self.shared.invalidate_lookup(lookup);
    }

    /// Forgets what is cached for key `id`, whatever its lookup id. This
    /// scans the whole cache; prefer [`invalidate_lookup`](Self::invalidate_lookup)
    /// when the lookup id is known.
    pub fn invalidate_key(&self, id: &KeyId) {
        self.shared.invalidate_key(id);
    }

    /// Forgets every cached answer, e.g. when a change feed may have missed
    /// changes. In-process state (rate-limit buckets, last-used stamps) is
    /// carried over to the entries read next.
    pub fn invalidate_all(&self) {
        self.shared.invalidate_all();
    }

    /// Turns the manual bypass on or off. While bypassed, every lookup goes
    /// to the inner store and nothing is answered from memory. Both switches
    /// also [`invalidate_all`](Self::invalidate_all): entering, because what
    /// is cached may go stale unnoticed; leaving, because changes made while
    /// bypassed may have been missed. A change feed that is not listening
    /// keeps the cache bypassed whatever this switch says.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let cached = keygate::CachedStore::new(Arc::new(keygate::MemoryStore::new()));
    /// cached.set_bypass(true); // your change feed lost its connection
    /// assert!(cached.is_bypassed());
    /// cached.set_bypass(false); // it is listening again
    /// assert!(!cached.is_bypassed());
    /// ```
    pub fn set_bypass(&self, on: bool) {
        let shared = &self.shared;
        if on {
            shared.bypass.fetch_or(MANUAL_BYPASS, Ordering::SeqCst);
            shared.invalidate_all();
        } else {
            shared.invalidate_all();
            shared.bypass.fetch_and(!MANUAL_BYPASS, Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.shared.inner)
            .field("config", &self.shared.config)
            .field("bypassed", &self.is_bypassed())
            .field("stats", &self.stats())
            .finish()
    }
}

/// The cache itself; change feeds hold it weakly.
pub(crate) struct Shared {
    inner: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    config: CacheConfig,
    ttl: u64,
    negative_ttl: u64,
    per_shard: usize,
    /// The inner store hands out fresh entries per lookup, so the cache must
    /// carry in-process state from one entry of a key to the next.
    carry_state: bool,
    hasher: RandomState,
    shards: Box<[Shard]>,
    /// [`MANUAL_BYPASS`] plus [`FEED_DOWN`] per feed not listening.
    bypass: AtomicUsize,
    /// How long a change feed's confirmation lets the cache serve, in
    /// nanoseconds; 0 when no feed asked for a lease.
    lease: AtomicU64,
    /// The monotonic time until which the feed's last confirmation holds.
    leased_until: AtomicU64,
    /// How long a write that takes a credential's effect away waits after
    /// its commit before returning, in nanoseconds; 0 for not at all. See
    /// [`FollowConfig::strict_revocation`](crate::store::FollowConfig::strict_revocation).
    strict_wait: AtomicU64,
    /// What writes that may still land have touched; see [`Unsettled`].
    unsettled: Mutex<Unsettled>,
    /// The latest expiry in `unsettled` (monotonic nanoseconds), so that a
    /// miss need not take its lock when nothing is unsettled.
    unsettled_until: AtomicU64,
}

/// Lookup ids and key ids touched by writes through the cache that were
/// cancelled or failed. Such a write may still land afterwards (the database
/// finishes a statement whose caller has gone), after the cache was
/// invalidated for it; a lookup answered in between would then stay cached
/// with what the write replaced. So, for one TTL, answers that involve these
/// ids are passed through but not kept as fresh.
#[derive(Default)]
struct Unsettled {
    lookups: HashMap<Box<str>, u64>,
    keys: HashMap<KeyId, u64>,
}

/// One shard, on cache lines of its own so hit counters do not false-share.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    slots: RwLock<Slots>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Slots {
    by_lookup: HashMap<Box<str>, Slot>,
    /// Bumped by every invalidation in this shard. A lookup that missed
    /// stores its answer as fresh only if no invalidation happened while it
    /// was asking the inner store.
    generation: u64,
}

struct Slot {
    entries: Vec<Arc<KeyEntry>>,
    /// Served while the monotonic clock is before this; 0 marks an entry kept
    /// only to carry in-process state to its successor.
    fresh_until: u64,
}

impl Shared {
    fn shard(&self, lookup: &str) -> &Shard {
        let hash = self.hasher.hash_one(lookup);
        // The high half: the shard maps use hashers of their own.
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    fn is_bypassed(&self) -> bool {
        self.bypass.load(Ordering::SeqCst) != 0 || !self.leased(self.clock.monotonic_nanos())
    }

    /// True unless a change feed holds a lease that has lapsed: the feed has
    /// not confirmed its connection recently enough to vouch for the cache.
    fn leased(&self, now: u64) -> bool {
        self.lease.load(Ordering::Acquire) == 0 || now < self.leased_until.load(Ordering::Acquire)
    }

    /// Makes the cache serve only within `lease` of the feed's last
    /// [`confirm`](Self::confirm).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn require_lease(&self, lease: Duration) {
        self.lease.store(nanos(lease).max(1), Ordering::Release);
    }

    /// The feed has proven that every change committed before the monotonic
    /// time `sent` has been applied to the cache (a heartbeat sent at `sent`
    /// came back, and the notifications delivered before its result were
    /// applied): the cache may serve until `sent` plus the lease. After a
    /// lapse the cache is emptied first, since changes may have been missed.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn confirm(&self, sent: u64) {
        let now = self.clock.monotonic_nanos();
        if !self.leased(now) {
            self.invalidate_all();
        }
        let lease = self.lease.load(Ordering::Acquire);
        self.leased_until
            .store(sent.saturating_add(lease), Ordering::Release);
    }

    /// The cache's monotonic time, for stamping confirmations.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn monotonic_nanos(&self) -> u64 {
        self.clock.monotonic_nanos()
    }

    /// Makes writes that take a credential's effect away wait `wait` after
    /// their commit before returning.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn require_strict_wait(&self, wait: Duration) {
        self.strict_wait
            .fetch_max(nanos(wait).max(1), Ordering::AcqRel);
    }

    /// Waits out the strict-revocation delay, if one is required, after a
    /// write that succeeded. Dropping the future cuts only the wait short:
    /// the write is committed and this cache already invalidated.
    async fn settle<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        #[cfg(feature = "postgres")]
        if result.is_ok() {
            let wait = self.strict_wait.load(Ordering::Acquire);
            if wait > 0 {
                tokio::time::sleep(Duration::from_nanos(wait)).await;
            }
        }
        result
    }

    /// Marks a change feed as not listening: bypasses and empties the cache.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn feed_down(&self) {
        self.bypass.fetch_add(FEED_DOWN, Ordering::SeqCst);
        self.invalidate_all();
    }

    /// Marks a change feed as listening again: empties the cache (changes
    /// may have been missed while it was down), then stops bypassing it
    /// unless something else still asks for it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn feed_up(&self) {
        self.invalidate_all();
        self.bypass.fetch_sub(FEED_DOWN, Ordering::SeqCst);
    }

    /// The entry `accept` takes from a fresh cached answer, counted as a
    /// hit; `None` (nothing counted) when the lookup must go to `find`.
    fn find_now(
        &self,
        lookup: &str,
        accept: &mut dyn FnMut(&KeyEntry) -> bool,
    ) -> Option<Option<Arc<KeyEntry>>> {
        let now = self.clock.monotonic_nanos();
        if self.bypass.load(Ordering::SeqCst) != 0 || !self.leased(now) {
            return None;
        }
        let shard = self.shard(lookup);
        let slots = shard.slots.read();
        let slot = slots.by_lookup.get(lookup)?;
        if slot.fresh_until <= now {
            return None;
        }
        shard.hits.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::cache_lookup("hit");
        Some(slot.entries.iter().find(|e| accept(e)).cloned())
    }

    async fn find(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        let shard = self.shard(lookup);
        let now = self.clock.monotonic_nanos();
        let generation = if self.bypass.load(Ordering::SeqCst) != 0 || !self.leased(now) {
            None
        } else {
            let slots = shard.slots.read();
            if let Some(slot) = slots.by_lookup.get(lookup) {
                if slot.fresh_until > now {
                    shard.hits.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::cache_lookup("hit");
                    return Ok(slot.entries.clone());
                }
            }
            Some(slots.generation)
        };
        shard.misses.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::cache_lookup(if generation.is_some() {
            "miss"
        } else {
            "bypass"
        });
        let found = self.inner.find_by_lookup(lookup).await?;
        Ok(self.fill(shard, lookup, found, generation))
    }

    /// Stores what the inner store answered and returns the entries to use.
    fn fill(
        &self,
        shard: &Shard,
        lookup: &str,
        found: Vec<Arc<KeyEntry>>,
        generation: Option<u64>,
    ) -> Vec<Arc<KeyEntry>> {
        if self.per_shard == 0 || (found.is_empty() && !self.carry_state && self.negative_ttl == 0)
        {
            return found;
        }
        let now = self.clock.monotonic_nanos();
        let mut slots = shard.slots.write();
        let fresh = generation == Some(slots.generation)
            && !self.is_bypassed()
            && !self.is_unsettled(lookup, &found, now);
        let previous = slots.by_lookup.get(lookup);
        let entries = match previous {
            Some(p) if self.carry_state => carry_over(&p.entries, found),
            _ => found,
        };
        let ttl = if entries.is_empty() {
            self.negative_ttl
        } else {
            self.ttl
        };
        let fresh_until = if fresh && ttl > 0 {
            now.saturating_add(ttl)
        } else if self.carry_state && !entries.is_empty() {
            // Not to be served, but the next lookup inherits its state.
            0
        } else {
            if previous.is_some_and(|p| p.fresh_until <= now) {
                slots.by_lookup.remove(lookup);
            }
            return entries;
        };
        if !fresh && previous.is_some_and(|p| p.fresh_until > now) {
            // A later lookup already stored a fresh answer; keep it.
            return entries;
        }
        if previous.is_none() {
            self.make_room(&mut slots, now);
        }
        slots.by_lookup.insert(
            lookup.into(),
            Slot {
                entries: entries.clone(),
                fresh_until,
            },
        );
        entries
    }

    /// Evicts until there is room for one more id: expired ids first, else
    /// an arbitrary one.
    fn make_room(&self, slots: &mut Slots, now: u64) {
        if slots.by_lookup.len() < self.per_shard {
            return;
        }
        slots.by_lookup.retain(|_, slot| slot.fresh_until > now);
        while slots.by_lookup.len() >= self.per_shard {
            let Some(victim) = slots.by_lookup.keys().next().cloned() else {
                break;
            };
            slots.by_lookup.remove(&victim);
        }
    }

    /// Stops serving a slot: keeps it as a state carrier or drops it.
    fn retire(&self, slot: &mut Slot) -> bool {
        slot.fresh_until = 0;
        self.carry_state && !slot.entries.is_empty()
    }

    /// Keeps answers involving `lookups` or `keys` from being cached as fresh
    /// for the longer of the two TTLs.
    fn unsettle<'a>(
        &self,
        lookups: impl IntoIterator<Item = &'a str>,
        keys: impl IntoIterator<Item = &'a KeyId>,
    ) {
        let now = self.clock.monotonic_nanos();
        let until = now.saturating_add(self.ttl.max(self.negative_ttl));
        let mut unsettled = self.unsettled.lock();
        unsettled.lookups.retain(|_, t| *t > now);
        unsettled.keys.retain(|_, t| *t > now);
        for lookup in lookups {
            unsettled.lookups.insert(lookup.into(), until);
        }
        for key in keys {
            unsettled.keys.insert(key.clone(), until);
        }
        self.unsettled_until.fetch_max(until, Ordering::SeqCst);
    }

    /// Whether an answer for `lookup` holding `found` may yet be changed by a
    /// write that was cancelled or failed.
    fn is_unsettled(&self, lookup: &str, found: &[Arc<KeyEntry>], now: u64) -> bool {
        if self.unsettled_until.load(Ordering::SeqCst) <= now {
            return false;
        }
        let unsettled = self.unsettled.lock();
        let live = |until: Option<&u64>| until.is_some_and(|t| *t > now);
        live(unsettled.lookups.get(lookup))
            || found.iter().any(|e| live(unsettled.keys.get(e.id())))
    }

    fn invalidate_lookup(&self, lookup: &str) {
        let mut slots = self.shard(lookup).slots.write();
        slots.generation += 1;
        if let Some(slot) = slots.by_lookup.get_mut(lookup) {
            if !self.retire(slot) {
                slots.by_lookup.remove(lookup);
            }
        }
    }

    fn invalidate_key(&self, id: &KeyId) {
        for shard in self.shards.iter() {
            let mut slots = shard.slots.write();
            slots.generation += 1;
            slots
                .by_lookup
                .retain(|_, slot| !slot.entries.iter().any(|e| e.id() == id) || self.retire(slot));
        }
    }

    fn invalidate_all(&self) {
        for shard in self.shards.iter() {
            let mut slots = shard.slots.write();
            slots.generation += 1;
            slots.by_lookup.retain(|_, slot| self.retire(slot));
        }
    }
}

/// The entries to use for `found`, keeping each key's in-process state
/// (rate-limit buckets, last-used stamp, compiled scopes) from `previous`.
fn carry_over(previous: &[Arc<KeyEntry>], found: Vec<Arc<KeyEntry>>) -> Vec<Arc<KeyEntry>> {
    found
        .into_iter()
        .map(|new| {
            let Some(old) = previous.iter().find(|old| old.id() == new.id()) else {
                return new;
            };
            let new_record = new.record();
            if same_but_last_used(&old.record(), &new_record) && old.identity() == new.identity() {
                if let Some(at) = new_record.last_used_at {
                    old.touch(at);
                }
                Arc::clone(old)
            } else {
                // `succeed` drops the buckets of a key that is now revoked.
                Arc::new(old.succeed_with(new_record, new.identity().cloned()))
            }
        })
        .collect()
}

/// Whether a key change can refuse a credential that was accepted before:
/// anything but a new name or new metadata (which authentication never
/// reads).
fn takes_effect_away(change: &KeyChange) -> bool {
    let KeyChange {
        name: _,
        metadata: _,
        expires_at,
        rate_limits,
        grant,
        disabled,
        credits,
        identity,
    } = change;
    expires_at.is_some()
        || rate_limits.is_some()
        || grant.is_some()
        || matches!(disabled, Some(Some(_)))
        || credits.is_some()
        || identity.is_some()
}

/// True when two records differ at most in their flushed last-used time.
fn same_but_last_used(a: &KeyRecord, b: &KeyRecord) -> bool {
    a.id == b.id
        && a.lookup == b.lookup
        && a.hash == b.hash
        && a.revoked_at == b.revoked_at
        && a.expires_at == b.expires_at
        && a.account == b.account
        && a.format == b.format
        && a.name == b.name
        && a.bundle == b.bundle
        && a.scopes == b.scopes
        && a.rate_limits == b.rate_limits
        && a.created_at == b.created_at
        && a.secret_set_at == b.secret_set_at
        && a.replaced_by == b.replaced_by
        && a.lineage == b.lineage
        && a.disabled_at == b.disabled_at
        && a.metadata == b.metadata
        && a.credits == b.credits
        && a.identity == b.identity
}

/// Invalidates what a write through the cache touches when it is dropped:
/// at the end of the call, or wherever the caller's future was dropped (a
/// client that disconnected, a timeout) — the inner store may have committed
/// by then. Unless the store answered for the write, it may still land
/// later, so the ids are also [unsettled](Shared::unsettle).
struct Invalidation<'a> {
    shared: &'a Shared,
    lookups: Vec<String>,
    keys: Vec<&'a KeyId>,
    settled: bool,
}

impl<'a> Invalidation<'a> {
    fn new(shared: &'a Shared, lookups: Vec<String>, keys: Vec<&'a KeyId>) -> Self {
        Self {
            shared,
            lookups,
            keys,
            settled: false,
        }
    }

    /// Records how the inner write ended.
    fn finish<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        // The store's answer settles the write, unless it is one that a lost
        // connection or a failing database could give for a write that the
        // database still completes.
        self.settled = !matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::Corrupt(_))
        );
        result
    }
}

impl Drop for Invalidation<'_> {
    fn drop(&mut self) {
        let shared = self.shared;
        if !self.settled {
            // Before invalidating: a lookup that reads the store after the
            // invalidation must already find the ids unsettled.
            shared.unsettle(
                self.lookups.iter().map(String::as_str),
                self.keys.iter().copied(),
            );
        }
        for id in &self.keys {
            shared.invalidate_key(id);
        }
        for lookup in &self.lookups {
            shared.invalidate_lookup(lookup);
        }
    }
}

/// Drops every cached answer when it is dropped: for writes that change
/// entries the cache cannot name one by one (an identity's keys).
struct InvalidateAll<'a>(&'a Shared);

impl Drop for InvalidateAll<'_> {
    fn drop(&mut self) {
        self.0.invalidate_all();
    }
}

#[async_trait]
impl KeyStore for CachedStore {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        self.shared.inner.create_account(account).await
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.shared.inner.get_account(id).await
    }

    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let guard = Invalidation::new(&self.shared, vec![record.lookup.clone()], Vec::new());
        let result = self.shared.inner.insert_key(record, limit, now).await;
        guard.finish(result)
    }

    async fn insert_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        let lookups = records.iter().map(|r| r.lookup.clone()).collect();
        let guard = Invalidation::new(&self.shared, lookups, Vec::new());
        let result = self.shared.inner.insert_keys(records).await;
        guard.finish(result)
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        self.shared.find(lookup).await
    }

    /// A fresh cache hit, without waiting; a miss is left to
    /// [`find_by_lookup`](KeyStore::find_by_lookup).
    fn find_now(
        &self,
        lookup: &str,
        accept: &mut dyn FnMut(&KeyEntry) -> bool,
    ) -> Option<Option<Arc<KeyEntry>>> {
        self.shared.find_now(lookup, accept)
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        self.shared.inner.get_key(id).await
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.shared.inner.list_keys(account, query).await
    }

    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        let guard = Invalidation::new(&self.shared, Vec::new(), vec![id]);
        let result = self.shared.inner.revoke_key(id, at).await;
        let result = guard.finish(result);
        self.shared.settle(result).await
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let guard = Invalidation::new(&self.shared, vec![lookup.to_owned()], vec![id]);
        let result = self.shared.inner.replace_secret(id, lookup, hash, at).await;
        let result = guard.finish(result);
        self.shared.settle(result).await
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError> {
        let guard = Invalidation::new(&self.shared, Vec::new(), vec![id]);
        let result = self.shared.inner.update_key(id, change).await;
        let result = guard.finish(result);
        if takes_effect_away(change) {
            self.shared.settle(result).await
        } else {
            result
        }
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        // Credits live in the store only: a cached entry never answers for
        // them, and spending evicts nothing.
        self.shared.inner.spend_credits(id, cost, now).await
    }

    async fn create_identity(&self, identity: Identity) -> Result<(), StoreError> {
        self.shared.inner.create_identity(identity).await
    }

    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>, StoreError> {
        self.shared.inner.get_identity(id).await
    }

    async fn list_identities(
        &self,
        account: &AccountId,
        after: Option<&IdentityId>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        self.shared
            .inner
            .list_identities(account, after, limit)
            .await
    }

    async fn update_identity(
        &self,
        id: &IdentityId,
        change: &IdentityChange,
    ) -> Result<Identity, StoreError> {
        // Cached entries hold the identity as it was: drop them all when the
        // call ends, or wherever its future is dropped.
        let result = {
            let _guard = InvalidateAll(&self.shared);
            self.shared.inner.update_identity(id, change).await
        };
        self.shared.settle(result).await
    }

    async fn delete_identity(&self, id: &IdentityId) -> Result<(), StoreError> {
        let result = {
            let _guard = InvalidateAll(&self.shared);
            self.shared.inner.delete_identity(id).await
        };
        self.shared.settle(result).await
    }

    async fn spend_shared_credits(
        &self,
        key: &KeyId,
        identity: &IdentityId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<SharedSpend, StoreError> {
        // Credits live in the store only, as for `spend_credits`.
        self.shared
            .inner
            .spend_shared_credits(key, identity, cost, now)
            .await
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        let guard = Invalidation::new(&self.shared, vec![new.lookup.clone()], vec![old]);
        let result = self.shared.inner.rotate_key(old, new, old_key).await;
        // Waited out with a grace period too: the old key's new expiry must
        // reach every instance before that expiry could pass.
        let result = guard.finish(result);
        self.shared.settle(result).await
    }

    async fn list_stale_secrets(
        &self,
        query: &SecretAgeQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.shared.inner.list_stale_secrets(query).await
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.shared.inner.record_last_used(uses).await
    }

    fn needs_last_used_flush(&self) -> bool {
        self.shared.inner.needs_last_used_flush()
    }

    fn keeps_entries(&self) -> bool {
        self.shared.per_shard > 0 || self.shared.inner.keeps_entries()
    }

    fn is_persistent(&self) -> bool {
        self.shared.inner.is_persistent()
    }

    async fn rehash_secrets(&self, batch: &[Rehash]) -> Result<usize, StoreError> {
        // Every key in the batch is evicted, changed or not: a key another
        // instance re-hashed first is reloaded here rather than queued again.
        let guard = Invalidation::new(
            &self.shared,
            Vec::new(),
            batch.iter().map(|r| &r.id).collect(),
        );
        let result = self.shared.inner.rehash_secrets(batch).await;
        guard.finish(result)
    }

    async fn count_by_pepper(&self, now: OffsetDateTime) -> Result<BTreeMap<u32, u64>, StoreError> {
        self.shared.inner.count_by_pepper(now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn shard_counts_are_powers_of_two_and_never_exceed_the_bound() {
        for (max, shards, per_shard) in [
            (0, 1, 0),
            (1, 1, 1),
            (100, 1, 100),
            (128, 2, 64),
            (1_000, 8, 125),
            (100_000, 32, 3_125),
        ] {
            let cached = CachedStore::builder(Arc::new(MemoryStore::new()))
                .config(CacheConfig {
                    max_entries: max,
                    ..CacheConfig::default()
                })
                .build();
            assert_eq!(cached.shared.shards.len(), shards, "{max}");
            assert_eq!(cached.shared.per_shard, per_shard, "{max}");
        }
    }

    #[test]
    fn records_differing_only_in_last_used_are_the_same() {
        let record = KeyRecord {
            id: KeyId::new("key_1"),
            account: AccountId::new("org").unwrap(),
            name: "n".into(),
            format: "mj_".into(),
            lookup: "lk".into(),
            hash: SecretHash::from_parts(1, [1; 32]),
            bundle: None,
            scopes: Vec::new(),
            rate_limits: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            secret_set_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
            lineage: None,
            disabled_at: None,
            metadata: Default::default(),
            credits: None,
            identity: None,
        };
        let used = KeyRecord {
            last_used_at: Some(OffsetDateTime::UNIX_EPOCH),
            ..record.clone()
        };
        assert!(same_but_last_used(&record, &used));
        let revoked = KeyRecord {
            revoked_at: Some(OffsetDateTime::UNIX_EPOCH),
            ..record.clone()
        };
        assert!(!same_but_last_used(&record, &revoked));
    }

    #[test]
    fn a_confirmation_counts_from_when_its_heartbeat_was_sent() {
        let clock = crate::clock::ManualClock::new();
        let cached = CachedStore::builder(Arc::new(MemoryStore::new()))
            .clock(clock.clone())
            .build();
        let shared = &cached.shared;
        shared.require_lease(Duration::from_secs(1));
        let sent = shared.monotonic_nanos();
        // The round trip took 400 ms: the lease runs from the send.
        clock.advance(Duration::from_millis(400));
        shared.confirm(sent);
        assert!(!cached.is_bypassed());
        clock.advance(Duration::from_millis(599));
        assert!(!cached.is_bypassed());
        clock.advance(Duration::from_millis(1));
        assert!(
            cached.is_bypassed(),
            "lapsed one lease after the send, not after the answer"
        );
    }

    #[test]
    fn only_changes_that_can_refuse_a_credential_wait_for_strictness() {
        assert!(!takes_effect_away(&KeyChange::default()));
        assert!(!takes_effect_away(&KeyChange::default().with_name("n")));
        assert!(!takes_effect_away(&KeyChange {
            disabled: Some(None),
            ..KeyChange::default()
        }));
        for change in [
            KeyChange {
                disabled: Some(Some(OffsetDateTime::UNIX_EPOCH)),
                ..KeyChange::default()
            },
            KeyChange {
                expires_at: Some(Some(OffsetDateTime::UNIX_EPOCH)),
                ..KeyChange::default()
            },
            KeyChange {
                grant: Some((None, Vec::new())),
                ..KeyChange::default()
            },
            KeyChange {
                credits: Some(None),
                ..KeyChange::default()
            },
            KeyChange {
                identity: Some(None),
                ..KeyChange::default()
            },
            KeyChange {
                rate_limits: Some(Vec::new()),
                ..KeyChange::default()
            },
        ] {
            assert!(takes_effect_away(&change), "{change:?}");
        }
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn strict_writes_wait_after_committing_and_a_dropped_wait_keeps_the_write() {
        let wait = Duration::from_millis(200);
        let cached = CachedStore::new(Arc::new(MemoryStore::new()));
        cached.shared.require_strict_wait(wait);
        let api = crate::ApiKeys::builder(crate::profiles::mailjawn())
            .store(Arc::new(cached.clone()))
            .build()
            .unwrap();
        let org = AccountId::new("org_1").unwrap();
        let mut keys = Vec::new();
        for name in ["one", "two"] {
            let request = crate::CreateKey::new(name).bundle("sdk");
            keys.push(api.operator().create(&org, request).await.unwrap());
        }

        let started = std::time::Instant::now();
        cached
            .update_key(&keys[0].info.id, &KeyChange::default().with_name("renamed"))
            .await
            .unwrap();
        assert!(started.elapsed() < wait, "a rename does not wait");

        let started = std::time::Instant::now();
        api.operator().revoke(&keys[0].info.id).await.unwrap();
        assert!(started.elapsed() >= wait, "a revoke waits");

        // Cut short during the wait: the revoke stands.
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            cached.revoke_key(&keys[1].info.id, OffsetDateTime::now_utc()),
        )
        .await;
        assert!(cut.is_err(), "dropped while waiting");
        for key in &keys {
            assert_eq!(
                api.verify(key.key.expose_secret()).await.unwrap_err(),
                crate::AuthError::Revoked
            );
        }
    }

    #[tokio::test]
    async fn a_lapsed_lease_bypasses_the_cache_until_confirmed_again() {
        let clock = crate::clock::ManualClock::new();
        let cached = CachedStore::builder(Arc::new(MemoryStore::new()))
            .clock(clock.clone())
            .build();
        let shared = &cached.shared;
        assert!(
            !cached.is_bypassed(),
            "no lease asked for: the cache serves"
        );
        shared.require_lease(Duration::from_secs(1));
        assert!(cached.is_bypassed(), "never confirmed");
        shared.confirm(shared.monotonic_nanos());
        assert!(!cached.is_bypassed());
        clock.advance(Duration::from_millis(999));
        assert!(!cached.is_bypassed());
        clock.advance(Duration::from_millis(1));
        assert!(cached.is_bypassed(), "lapsed exactly at the lease");
        // Nothing is stored as fresh while lapsed.
        cached.find_by_lookup("mj_unknown").await.unwrap();
        cached.find_by_lookup("mj_unknown").await.unwrap();
        assert_eq!(cached.stats().hits, 0);
        shared.confirm(shared.monotonic_nanos());
        assert!(!cached.is_bypassed());
        cached.find_by_lookup("mj_unknown").await.unwrap();
        cached.find_by_lookup("mj_unknown").await.unwrap();
        assert_eq!(cached.stats().hits, 1);
    }
}
