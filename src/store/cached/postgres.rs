//! The PostgreSQL change feed: a task that `LISTEN`s on the channel
//! [`PostgresStore`] notifies on every change, and evicts the lookup ids each
//! notification names from a [`CachedStore`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{CachedStore, Shared};
use crate::store::PostgresStore;

/// How long connecting and `LISTEN` may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest heartbeat and reconnect delay; shorter ones are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// How a [`CachedStore`] follows PostgreSQL notifications
/// ([`CachedStore::follow_postgres_with`]).
///
/// ```
/// use std::time::Duration;
/// use keygate::store::FollowConfig;
///
/// let config = FollowConfig::default().with_application_name("keygate_listener_web_1".into());
/// assert_eq!(config.lease, Duration::from_secs(1));
/// assert_eq!(config.heartbeat, Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowConfig {
    /// How long each confirmation of the listener's connection lets the
    /// cache serve from memory. A confirmation is a heartbeat round trip,
    /// and it counts from when the heartbeat was sent: PostgreSQL delivers
    /// the notifications pending on a connection before the result of a
    /// later query on it, so once those are applied, every change committed
    /// before the send is in the cache. Past the lease the cache is bypassed
    /// until the connection is confirmed again, so a change made on another
    /// instance is refused here within this bound even when the connection
    /// hangs without closing. Default 1 s.
    pub lease: Duration,
    /// The interval between heartbeats, sent whether or not notifications
    /// arrive; a round trip that takes longer counts as a lost connection.
    /// Keep it well inside [`lease`](Self::lease) (it is capped at half of
    /// it). Default 250 ms.
    pub heartbeat: Duration,
    /// The wait before reconnecting after the connection was lost; it doubles
    /// after each failed attempt. Default 100 ms.
    pub reconnect_delay: Duration,
    /// The longest wait between reconnect attempts. Default 5 s.
    pub max_reconnect_delay: Duration,
    /// The listener connection's `application_name`, to tell it apart in
    /// `pg_stat_activity`. Default `keygate_listener`.
    pub application_name: String,
    /// Strict revocation: a write through this cache that can refuse a
    /// credential accepted before (a revocation, a secret reset, a rotation,
    /// disabling a key or changing its expiry, grant, limits, credits or
    /// identity, changing or deleting an identity) waits [`lease`](Self::lease)
    /// plus one [`heartbeat`](Self::heartbeat) after its commit before
    /// returning. By then every other instance has either applied the change
    /// or stopped answering from memory, so once such a call has returned,
    /// no instance accepts the old credential. Default off.
    ///
    /// This holds when every instance follows with the same lease or a
    /// shorter one, and each process's monotonic clock runs at the real
    /// rate (the heartbeat covers small drift). A caller that drops the
    /// future during the wait gets no such guarantee: the change is
    /// committed and this instance's cache invalidated, but other instances
    /// may still answer from memory until their lease runs out. With the
    /// default lease such a call takes over a second; a lease of 250 ms with
    /// a 50 ms heartbeat makes it about 300 ms, at the cost of a heartbeat
    /// query every 50 ms per instance, and of a reconnect (with the cache
    /// bypassed meanwhile) whenever a round trip takes longer than 50 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate::store::FollowConfig;
    ///
    /// let config = FollowConfig::default()
    ///     .with_lease(Duration::from_millis(250))
    ///     .with_heartbeat(Duration::from_millis(50))
    ///     .with_strict_revocation(true);
    /// assert_eq!(config.strict_wait(), Some(Duration::from_millis(300)));
    /// assert_eq!(FollowConfig::default().strict_wait(), None);
    /// ```
    pub strict_revocation: bool,
}

impl FollowConfig {
    /// Sets [`lease`](Self::lease).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets [`reconnect_delay`](Self::reconnect_delay).
    #[must_use]
    pub fn with_reconnect_delay(mut self, reconnect_delay: Duration) -> Self {
        self.reconnect_delay = reconnect_delay;
        self
    }

    /// Sets [`max_reconnect_delay`](Self::max_reconnect_delay).
    #[must_use]
    pub fn with_max_reconnect_delay(mut self, max_reconnect_delay: Duration) -> Self {
        self.max_reconnect_delay = max_reconnect_delay;
        self
    }

    /// Sets [`application_name`](Self::application_name).
    #[must_use]
    pub fn with_application_name(mut self, application_name: String) -> Self {
        self.application_name = application_name;
        self
    }

    /// Sets [`strict_revocation`](Self::strict_revocation).
    #[must_use]
    pub fn with_strict_revocation(mut self, strict: bool) -> Self {
        self.strict_revocation = strict;
        self
    }

    /// The interval between heartbeats actually used: [`heartbeat`](Self::heartbeat)
    /// capped at half the lease, and at least 1 ms.
    pub fn effective_heartbeat(&self) -> Duration {
        self.heartbeat.min(self.lease / 2).max(MIN_INTERVAL)
    }

    /// How long a write that takes a credential's effect away waits after
    /// its commit: the lease plus one heartbeat, or `None` without
    /// [`strict_revocation`](Self::strict_revocation).
    pub fn strict_wait(&self) -> Option<Duration> {
        self.strict_revocation
            .then(|| self.lease.saturating_add(self.effective_heartbeat()))
    }
}

impl Default for FollowConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(1),
            heartbeat: Duration::from_millis(250),
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(5),
            application_name: "keygate_listener".into(),
            strict_revocation: false,
        }
    }
}

/// The task started by [`CachedStore::follow_postgres`].
///
/// Dropping the handle or calling [`shutdown`](Self::shutdown) stops the
/// task. A stopped follower leaves its cache bypassed for good: the cache can
/// no longer hear about changes made by other instances.
#[must_use = "dropping the follower stops it and leaves the cache bypassed"]
#[derive(Debug)]
pub struct ChangeFollower {
    channel: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ChangeFollower {
    /// The notification channel it listens on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Stops the task, closes its connection and waits for both.
    ///
    /// ```no_run
    /// # async fn run(follower: keygate::store::ChangeFollower) {
    /// follower.shutdown().await;
    /// # }
    /// ```
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ChangeFollower {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl CachedStore {
    /// Follows `store`'s change notifications with the default
    /// [`FollowConfig`]; see [`follow_postgres_with`](Self::follow_postgres_with).
    /// Keep the returned [`ChangeFollower`] for the life of the service.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use keygate::{profiles, ApiKeys, CacheConfig, CachedStore, Pepper, PostgresStore};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     // Every instance: a pool of its own on the same schema (and so the same
    ///     // notification channel).
    ///     let url = std::env::var("DATABASE_URL")?;
    ///     let store = Arc::new(PostgresStore::connect_with_schema(&url, "keygate").await?);
    ///     store.migrate().await?;
    ///
    ///     // A cache in front of the store, following its change notifications.
    ///     let cached = CachedStore::builder(store.clone())
    ///         .config(CacheConfig::default()) // 100,000 ids, 60 s, 5 s for unknown ids
    ///         .build();
    ///     let follower = cached.follow_postgres(&store);
    ///
    ///     let api = ApiKeys::builder(profiles::mailjawn())
    ///         .store(Arc::new(cached.clone()))
    ///         .pepper(Pepper::new(1, std::env::var("KEYGATE_PEPPER")?.into_bytes())?)
    ///         .build()?;
    ///     let flusher = api.spawn_last_used_flusher(Duration::from_secs(10));
    ///
    ///     // ... serve requests with `api`; `cached.stats()` has hits and misses ...
    ///
    ///     flusher.shutdown().await?;
    ///     follower.shutdown().await;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with time enabled, like `tokio::spawn`.
    pub fn follow_postgres(&self, store: &PostgresStore) -> ChangeFollower {
        self.follow_postgres_with(store, FollowConfig::default())
    }

    /// Starts a Tokio task that `LISTEN`s on `store`'s notification channel
    /// ([`PostgresStore::channel`]) over a connection of its own, and evicts
    /// the lookup ids each notification names. Every instance sharing the
    /// database should follow it, so a revocation, secret reset or rotation
    /// on one instance takes effect on all at once.
    ///
    /// The cache is bypassed (every lookup goes to the inner store) from this
    /// call until the first `LISTEN` has succeeded. When the connection is
    /// lost, or a heartbeat round trip fails, the cache is emptied and
    /// bypassed until the task has reconnected and listens again; then it is
    /// emptied once more and used again. And the cache's validity is leased:
    /// it answers from memory only within [`FollowConfig::lease`] of the
    /// sending of the last heartbeat that came back (after the notifications
    /// delivered ahead of it were applied), so even a connection that hangs
    /// without failing cannot keep a changed key served for longer. A change
    /// is either announced or read from the database within that bound. With
    /// [`FollowConfig::strict_revocation`], writes through this cache that
    /// can refuse a credential wait out that bound before returning.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with time enabled, like `tokio::spawn`.
    pub fn follow_postgres_with(
        &self,
        store: &PostgresStore,
        config: FollowConfig,
    ) -> ChangeFollower {
        let channel = store.channel().to_owned();
        let options = (*store.pool().connect_options())
            .clone()
            .application_name(&config.application_name);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options);
        self.shared.require_lease(config.lease);
        if let Some(wait) = config.strict_wait() {
            self.shared.require_strict_wait(wait);
        }
        self.shared.feed_down();
        let hold = Hold {
            cache: Arc::downgrade(&self.shared),
            down: true,
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(follow(hold, pool, channel.clone(), config, stopped));
        ChangeFollower {
            channel,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// The follower's share of its cache's bypass: taken while not listening.
struct Hold {
    cache: Weak<Shared>,
    down: bool,
}

impl Hold {
    /// Bypasses and empties the cache; false when the cache is gone.
    fn down(&mut self) -> bool {
        let Some(cache) = self.cache.upgrade() else {
            return false;
        };
        if !self.down {
            cache.feed_down();
            self.down = true;
        }
        true
    }

    /// Empties the cache and lets it serve again; false when it is gone.
    fn up(&mut self) -> bool {
        let Some(cache) = self.cache.upgrade() else {
            return false;
        };
        if self.down {
            cache.feed_up();
            self.down = false;
        }
        true
    }
}

/// What [`PostgresStore`] puts in a notification.
#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    lookups: Vec<String>,
}

/// Why the receive loop ended.
enum Ended {
    Stopped,
    Lost,
}

async fn follow(
    mut hold: Hold,
    pool: PgPool,
    channel: String,
    config: FollowConfig,
    mut stopped: oneshot::Receiver<()>,
) {
    let first_delay = config.reconnect_delay.max(MIN_INTERVAL);
    let max_delay = config.max_reconnect_delay.max(first_delay);
    let heartbeat = config.effective_heartbeat();
    let mut delay = first_delay;
    // Everything committed before LISTEN was sent is in the database when
    // the cache, emptied once listening, reads it again; everything after is
    // announced. So the first confirmation counts from before the attempt.
    while let Some(sent) = hold.cache.upgrade().map(|c| c.monotonic_nanos()) {
        let attempt = tokio::select! {
            biased;
            _ = &mut stopped => break,
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, listen(&pool, &channel)) => attempt,
        };
        let listener = match attempt {
            Ok(Ok(listener)) => listener,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(target: "keygate", %channel, %error,
                    "cannot listen for key changes; the key cache stays bypassed");
                if !pause(&mut stopped, delay).await {
                    break;
                }
                delay = (delay * 2).min(max_delay);
                continue;
            }
        };
        delay = first_delay;
        if !hold.up() {
            break;
        }
        if let Some(cache) = hold.cache.upgrade() {
            cache.confirm(sent);
        }
        tracing::info!(target: "keygate", %channel, "listening for key changes");
        match receive(listener, &hold.cache, &channel, heartbeat, &mut stopped).await {
            Ended::Stopped => break,
            Ended::Lost => {
                if !hold.down() {
                    break;
                }
                tracing::warn!(target: "keygate", %channel,
                    "lost the key change connection; the key cache is bypassed until it is back");
                if !pause(&mut stopped, delay).await {
                    break;
                }
            }
        }
    }
    // Nobody will announce changes any more: stay bypassed.
    hold.down();
    pool.close().await;
}

async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is re-established by `follow`, after bypassing the cache.
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    Ok(listener)
}

/// Evicts what each notification names until the connection is lost, the
/// follower is stopped or the cache is gone; and every `heartbeat`, whether
/// notifications arrive or not, confirms the connection with a round trip.
///
/// Only heartbeats confirm. A notification received says nothing about
/// changes committed after it; a heartbeat sent at `t` that comes back, once
/// the notifications delivered ahead of its result are applied, proves that
/// every change committed before `t` is in the cache.
async fn receive(
    mut listener: PgListener,
    cache: &Weak<Shared>,
    channel: &str,
    heartbeat: Duration,
    stopped: &mut oneshot::Receiver<()>,
) -> Ended {
    let relisten = format!("LISTEN \"{}\"", channel.replace('"', "\"\""));
    let mut beat = tokio::time::Instant::now() + heartbeat;
    loop {
        // Checked first, so a steady stream of notifications cannot starve
        // the heartbeat.
        if tokio::time::Instant::now() >= beat {
            let Some(sent) = cache.upgrade().map(|c| c.monotonic_nanos()) else {
                return Ended::Stopped;
            };
            // The next one is due an interval after this one's send, so
            // confirmations are at most two intervals (one lease) apart.
            beat = tokio::time::Instant::now() + heartbeat;
            // LISTEN again is a no-op round trip that keeps the
            // connection's last query recognisable in pg_stat_activity.
            let ping = sqlx::Executor::execute(&mut listener, relisten.as_str());
            let answered = tokio::select! {
                biased;
                _ = &mut *stopped => return Ended::Stopped,
                answered = tokio::time::timeout(heartbeat, ping) => answered,
            };
            if !matches!(answered, Ok(Ok(_))) {
                return Ended::Lost;
            }
            let Some(cache) = cache.upgrade() else {
                return Ended::Stopped;
            };
            // Notifications that arrived ahead of the result were buffered.
            while let Some(notification) = listener.next_buffered() {
                apply(&cache, notification.payload());
            }
            cache.confirm(sent);
            continue;
        }
        let next = tokio::select! {
            biased;
            _ = &mut *stopped => return Ended::Stopped,
            next = tokio::time::timeout_at(beat, listener.try_recv()) => next,
        };
        match next {
            Ok(Ok(Some(notification))) => {
                let Some(cache) = cache.upgrade() else {
                    return Ended::Stopped;
                };
                apply(&cache, notification.payload());
            }
            Ok(Ok(None)) => return Ended::Lost,
            Ok(Err(error)) => {
                tracing::warn!(target: "keygate", %channel, %error, "key change listener failed");
                return Ended::Lost;
            }
            Err(_heartbeat_due) => {}
        }
    }
}

/// Applies one notification; one that cannot be read empties the cache.
fn apply(cache: &Shared, payload: &str) {
    match serde_json::from_str::<Change>(payload) {
        Ok(change) => {
            for lookup in &change.lookups {
                cache.invalidate_lookup(lookup);
            }
        }
        Err(error) => {
            tracing::warn!(target: "keygate", %error, "unreadable key change notification");
            cache.invalidate_all();
        }
    }
}

/// Waits `delay`; false if the follower was stopped meanwhile.
async fn pause(stopped: &mut oneshot::Receiver<()>, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = stopped => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn notifications_evict_the_lookups_they_name_and_unreadable_ones_evict_all() {
        let cached = CachedStore::new(Arc::new(MemoryStore::new()));
        let shared = &cached.shared;
        for lookup in ["a", "b", "c"] {
            let slots = &mut shared.shard(lookup).slots.write();
            slots.by_lookup.insert(
                lookup.into(),
                super::super::Slot {
                    entries: Vec::new(),
                    fresh_until: u64::MAX,
                },
            );
        }
        apply(shared, r#"{"id":"key_1","lookups":["a","b"]}"#);
        assert_eq!(cached.len(), 1);
        apply(shared, "not json");
        assert!(cached.is_empty());
    }
}
