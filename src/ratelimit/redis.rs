//! A rate limiter shared by many service instances through Redis.
//!
//! [`RedisRateLimiter`] runs the same GCRA as the in-process
//! [`LocalRateLimiter`], with the theoretical arrival time of each bucket kept
//! in Redis instead of process memory, so every instance of a service
//! draws on one quota per key and class. A decision is one round trip: one
//! `EVALSHA` of a Lua script that reads the bucket, decides with the Redis
//! server's clock (`TIME`, so instances need no clock agreement) and, on
//! admission, writes the new state with an expiry at the moment the bucket
//! is full again, so idle buckets disappear on their own. The details are on
//! [`RedisRateLimiter`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Script, Value};

use time::OffsetDateTime;

use super::{Decision, LimiterUnavailable, LocalRateLimiter, Quota, RateLimiter};
use crate::store::{SharedSpend, Spend};
use crate::{AccountId, Clock, Credits, SystemClock};

const DEFAULT_PREFIX: &str = "keygate:rl:";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The least time between two background connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// Class names remembered for `forget`; profiles have a handful, and the cap
/// keeps memory bounded whatever callers pass.
const MAX_REMEMBERED_CLASSES: usize = 64;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The GCRA of the in-process bucket (`gcra::Bucket::check`), in Lua.
///
/// Lua numbers are doubles, exact only up to 2^53, and nanoseconds since the
/// epoch are beyond that, so every time is a pair (whole seconds,
/// nanoseconds below one second) and the script only adds, subtracts and
/// compares pairs; the division for `remaining` happens in Rust.
///
/// KEYS[1]: the bucket. ARGV: emission interval and burst tolerance as
/// pairs; tests may append a fixed "now" pair in place of `TIME`.
/// Returns {admitted (1 or 0), start - now, new TAT - now} with the times as
/// pairs, where start = max(TAT, now) and new TAT = start + interval.
const GCRA_LUA: &str = r#"
local B = 1000000000
local iv_s, iv_n = tonumber(ARGV[1]), tonumber(ARGV[2])
local tol_s, tol_n = tonumber(ARGV[3]), tonumber(ARGV[4])
local now_s, now_n
if ARGV[6] then
  now_s, now_n = tonumber(ARGV[5]), tonumber(ARGV[6])
else
  -- Redis 5+ replicates scripts by their effects, so reading the clock
  -- before a write is allowed; this opts in on older servers.
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now_s, now_n = tonumber(t[1]), tonumber(t[2]) * 1000
end
local start_s, start_n = now_s, now_n
local tat = redis.call('GET', KEYS[1])
if tat then
  local s, n = string.match(tat, '^(%d+) (%d+)$')
  s, n = tonumber(s), tonumber(n)
  -- Anything unreadable counts as a full bucket and is overwritten.
  if s and n and n < B and (s > now_s or (s == now_s and n > now_n)) then
    start_s, start_n = s, n
  end
end
local new_s, new_n = start_s + iv_s, start_n + iv_n
if new_n >= B then new_s, new_n = new_s + 1, new_n - B end
local ahead_s, ahead_n = new_s - now_s, new_n - now_n
if ahead_n < 0 then ahead_s, ahead_n = ahead_s - 1, ahead_n + B end
local reset_s, reset_n = start_s - now_s, start_n - now_n
if reset_n < 0 then reset_s, reset_n = reset_s - 1, reset_n + B end
if ahead_s > tol_s or (ahead_s == tol_s and ahead_n > tol_n) then
  return {0, reset_s, reset_n, ahead_s, ahead_n}
end
-- Expire when the bucket is full again (rounded up to a millisecond): from
-- then on an absent key and the stored state mean the same thing.
local px = ahead_s * 1000 + math.ceil(ahead_n / 1000000)
redis.call('SET', KEYS[1], string.format('%d %d', new_s, new_n), 'PX', string.format('%d', px))
return {1, reset_s, reset_n, ahead_s, ahead_n}
"#;

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_LUA));

/// Spends credits from one or two ledgers (a key's, then its identity's),
/// both or neither, by the rule of `Credits::spend` with times in whole
/// milliseconds since the epoch.
///
/// KEYS: the ledgers, each a hash {g: fingerprint of the record's credits,
/// r: remaining, t: last refill}. ARGV: cost, now, then per ledger its
/// record's fingerprint, remaining, refill amount, refill interval (0 for
/// none) and last refill. A ledger whose fingerprint differs from its
/// record's (or that is missing) starts again from the record.
/// Returns {0, remaining...} when spent, or {i, next refill or -1} when
/// ledger i has too few credits (then nothing is written).
const CREDITS_LUA: &str = r#"
local cost, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local left = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 5
  local fp = ARGV[a + 1]
  local r, amt = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local iv, t = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local h = redis.call('HMGET', KEYS[i], 'g', 'r', 't')
  if h[1] == fp then
    local hr, ht = tonumber(h[2]), tonumber(h[3])
    if hr and ht then r, t = hr, ht end
  end
  local since = now - t
  if iv > 0 and since >= iv then
    local periods = math.floor(since / iv)
    if periods * iv > since then periods = periods - 1 end
    r = amt
    t = t + periods * iv
  end
  if r < cost then
    if iv > 0 and amt >= cost then return {i, t + iv} end
    return {i, -1}
  end
  left[i] = {fp, r - cost, t}
end
local out = {0}
for i = 1, #KEYS do
  local l = left[i]
  redis.call('HSET', KEYS[i], 'g', l[1], 'r', string.format('%d', l[2]), 't', string.format('%d', l[3]))
  out[i + 1] = l[2]
end
return out
"#;

static CREDITS: LazyLock<Script> = LazyLock::new(|| Script::new(CREDITS_LUA));

/// What a [`RedisRateLimiter`] does when Redis cannot be reached, fails or
/// does not answer within the timeout.
///
/// ```
/// use keygate::RedisFailure;
///
/// assert_eq!(RedisFailure::default(), RedisFailure::FailClosed);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisFailure {
    /// Make no decision: the check returns [`LimiterUnavailable`], which
    /// [`ApiKeys::verify_for`](crate::ApiKeys::verify_for) reports as
    /// [`AuthError::Unavailable`](crate::AuthError::Unavailable) (503). The
    /// default: an outage never lifts the limits.
    #[default]
    FailClosed,
    /// Decide in this process, as a [`LocalRateLimiter`] would, on buckets
    /// the limiter keeps by key and class for the purpose (those full again
    /// are dropped as new ones are made): each process enforces the full
    /// quota by itself until Redis answers again, so a fleet of `n`
    /// instances admits up to `n` times the quota meanwhile.
    FallBackToLocal,
}

/// Why [`RedisRateLimiter::connect`] (or [`RedisRateLimiterBuilder::connect`])
/// returned no limiter.
///
/// Redis being unreachable is not among them: the limiter is returned anyway
/// and keeps trying to connect in the background, applying its
/// [`RedisFailure`] policy meanwhile.
///
/// ```
/// use keygate::{RedisConnectError, RedisRateLimiter};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let err = RedisRateLimiter::connect("http://127.0.0.1/").await.unwrap_err();
/// assert!(matches!(err, RedisConnectError::InvalidConnectionInfo(_)));
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConnectError {
    /// The URL or connection info could not be parsed, or names a scheme
    /// the `redis` crate does not support.
    #[error("invalid redis connection info: {0}")]
    InvalidConnectionInfo(#[source] RedisError),
    /// Called outside a Tokio runtime, which the limiter needs for its
    /// connection and for reconnecting in the background.
    #[error("a redis rate limiter must be connected inside a tokio runtime")]
    NoRuntime,
}

/// A [`RateLimiter`] whose buckets live in Redis, shared by every service
/// instance that uses the same Redis and key prefix.
///
/// Decisions are the same as [`LocalRateLimiter`]'s for the same sequence of
/// requests (same `limit`, `remaining`, `reset` and `retry_after`), each
/// taken in one round trip: one `EVALSHA` of a Lua script. Cloning is cheap
/// and clones share one connection. Every call needs a Tokio runtime (with
/// time enabled).
///
/// # Keys
///
/// Each bucket is one string key, `<prefix>{<key id>}:<class>` — with the
/// default prefix `keygate:rl:`, key `key_01` in class `send` lives at
/// `keygate:rl:{key_01}:send` and holds `"<seconds> <nanoseconds>"` of its
/// theoretical arrival time on the server's clock. The braces are a Redis
/// Cluster hash tag: the script only ever touches one key, so it would be
/// cluster-safe without them, but the tag puts all classes of one API key in
/// one slot so that [`forget`](RateLimiter::forget) can delete them with a
/// single `DEL`. Credit ledgers are tagged with the account instead (see
/// [Credits](#credits)). Choose a prefix without braces, or the hash tags
/// move.
///
/// # Time
///
/// Decisions read the Redis server's wall clock, so service instances need
/// not agree on the time. If that clock is stepped back, buckets only deny
/// more (as [`LocalRateLimiter`]'s do with a clock that runs backwards);
/// if it is stepped forward, buckets refill early by that much.
///
/// # Credits
///
/// With this limiter set, [`ApiKeys`](crate::ApiKeys) spends usage credits
/// in Redis too ([`RateLimiter::spend_credits`]), so instances share them
/// exactly even when each has a store of its own: a key's credits and its
/// identity's are spent together, both or neither, by one script, with the
/// lazy refill of [`Credits::spend`] (months are 30 days). A key's ledger is
/// a hash at `<prefix>{<account>}#credits:<lineage>` (its lineage, like its
/// buckets, so rotation keeps it), an identity's at
/// `<prefix>{<account>}#credits:<identity id>`;
/// [`credits_key_for`](Self::credits_key_for) names them. The hash tag is
/// the key's account (braces in an account id are left out of the tag), to
/// which its identity always belongs too: the two ledgers one script
/// touches are in one Redis Cluster slot, whatever identity the key is
/// attached to. All ledgers of one account share that slot.
///
/// Redis is the source of truth for what remains; the store's record holds
/// the credits as last *set* (at creation or by an update), which the
/// spends no longer rewrite. Each ledger keeps a fingerprint of the
/// record's credits (remaining, refill amount and interval, and the time
/// they were set, to the nanosecond). Whenever the record's fingerprint
/// differs, the ledger starts again from the record: that is how an update
/// of a key's or an identity's credits reaches Redis, on the first request
/// any instance admits after it sees the updated record. A ledger that is
/// lost (flushed, evicted) also starts again from the record, i.e. from the
/// credits as last set. Ledgers do not expire. Times are the service
/// clock's, in whole milliseconds; amounts above 2^53 count as 2^53.
///
/// The remaining credits a request left are on its
/// [`Principal`](crate::Principal) and in its response header; the store's
/// [`KeyInfo`](crate::KeyInfo) shows the credits as last set.
///
/// # Redis Cluster
///
/// [`RedisRateLimiterBuilder::connect_cluster`] connects through the `redis`
/// crate's cluster-aware client: each script runs on the master that owns
/// its keys' slot (every script touches keys of one slot only, thanks to
/// the hash tags above), and the client follows redirections as slots
/// move. Limits and credits are as exact as on one server.
///
/// When a master fails, the keys of its slots cannot be decided until a
/// replica is promoted (after the cluster's `cluster-node-timeout`, or at
/// once with `CLUSTER FAILOVER TAKEOVER` on the replica); while the cluster
/// state is `fail`, the other masters refuse commands too (unless
/// `cluster-require-full-coverage no`). Meanwhile every call fails or times
/// out and the [`RedisFailure`] policy applies: with
/// [`FailClosed`](RedisFailure::FailClosed) no request is admitted without a
/// decision of the master that owns the bucket. Once the replica is master,
/// the client learns the new owner from the cluster (a `MOVED` reply or a
/// fresh slot map) and decisions succeed again, within a few calls. That
/// needs the failed master's connections to close (a crashed process or a
/// lost host), or the master to answer again (it then redirects): a master
/// that hangs with its connections open keeps its slots' calls timing out
/// until one of those happens.
///
/// Redis replicates asynchronously, so what the failed master had written
/// but not yet sent to its replica is lost: a bucket returns to an older
/// state and refills early by what was admitted in that replication lag, at
/// most its burst plus the lag times its rate; credits spent in the lag
/// are given back. The lag is usually below a millisecond on a LAN; Redis's
/// `min-replicas-to-write 1` with `min-replicas-max-lag <seconds>` caps it
/// (a master whose replicas lag further refuses writes, and the policy
/// applies).
///
/// # When Redis cannot be reached
///
/// Every call is bounded by a timeout (50 ms unless set). A call that fails
/// or times out is handled by the [`RedisFailure`] policy: by default
/// [`FailClosed`](RedisFailure::FailClosed), which reports
/// [`LimiterUnavailable`] (so [`ApiKeys::verify_for`](crate::ApiKeys::verify_for)
/// answers [`AuthError::Unavailable`](crate::AuthError::Unavailable), 503);
/// or [`FallBackToLocal`](RedisFailure::FallBackToLocal), which decides in
/// this process on local buckets, i.e. per-process limits until Redis
/// answers again. Credits follow the same policy: refused as unavailable,
/// or spent by the store until Redis answers again. The connection manager reconnects by itself; a
/// limiter made by [`RedisRateLimiterBuilder::connect`] while Redis is down
/// keeps trying to connect in the background and starts using Redis as soon
/// as it succeeds.
///
/// ```no_run
/// use keygate::{profiles, ApiKeys, RedisFailure, RedisRateLimiter};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisRateLimiter::builder()
///     .prefix("myapp:rl:")
///     .timeout(Duration::from_millis(50))
///     .on_failure(RedisFailure::FailClosed)
///     .connect("redis://127.0.0.1:6379/")
///     .await?;
/// // Every instance built like this shares each key's quota.
/// let api = ApiKeys::builder(profiles::mailjawn())
///     .rate_limiter(limiter)
///     .build()?;
/// let send = api.operation("send")?;
/// # let presented = "";
/// match api.verify_for(presented, &send).await {
///     Ok(principal) => println!("{:?}", principal.rate_limit()),
///     Err(e) => println!("{} {e}", e.status()), // 429 over quota, 503 if Redis is down
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set once connected; the connection then reconnects by itself.
    conn: OnceLock<Conn>,
    prefix: String,
    timeout: Duration,
    on_failure: RedisFailure,
    /// Decides for [`RedisFailure::FallBackToLocal`], on its own buckets.
    local: LocalRateLimiter,
    /// Class names seen by `check`, so `forget` knows which keys to delete.
    classes: RwLock<Vec<Box<str>>>,
    /// Whether the last call failed; logs only the changes.
    failing: AtomicBool,
}

/// The connection a limiter speaks through: one server (or primary) through
/// a connection manager, or a Redis Cluster through the cluster-aware
/// client, which sends each command to the master of its key's slot and
/// follows the cluster's redirections (`MOVED`, `ASK`) and failovers.
// Held once and cloned for each call: boxing the manager would allocate on
// every clone.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// How to (re)connect: the client and settings of either kind of connection.
#[derive(Clone)]
enum Connector {
    Single(Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

impl Connector {
    async fn connect(&self) -> Result<Conn, RedisError> {
        match self {
            Connector::Single(client, config) => {
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(Conn::Single)
            }
            Connector::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

/// Configures a [`RedisRateLimiter`]. See [`RedisRateLimiter::builder`].
#[must_use]
#[derive(Clone, Debug)]
pub struct RedisRateLimiterBuilder {
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    on_failure: RedisFailure,
    clock: Arc<dyn Clock>,
}

impl Default for RedisRateLimiterBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            on_failure: RedisFailure::default(),
            clock: Arc::new(SystemClock::new()),
        }
    }
}

impl RedisRateLimiterBuilder {
    /// Prefixes every Redis key with `prefix` (default `keygate:rl:`), e.g. to
    /// keep two services or test runs apart in one Redis. Avoid braces: they
    /// would change the keys' cluster hash tag.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Gives up on a check after `timeout` (default 50 ms) and applies the
    /// failure policy. A check that timed out may still have taken its token
    /// in Redis.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds each attempt to connect (default 1 s), including the first one
    /// made by [`connect`](Self::connect).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What to do when Redis cannot be reached (default
    /// [`RedisFailure::FailClosed`]).
    pub fn on_failure(mut self, policy: RedisFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// The clock of the local limiter used by
    /// [`RedisFailure::FallBackToLocal`] (default [`SystemClock`]). Redis
    /// decisions always use the Redis server's clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Connects to the Redis at `info` (a URL such as
    /// `redis://:password@host:6379/0`, or a [`redis::ConnectionInfo`]).
    ///
    /// Waits at most the connect timeout. If Redis cannot be reached by then,
    /// the limiter is returned anyway: its checks follow the failure policy
    /// while it keeps trying to connect in the background (for as long as a
    /// clone of it exists). Fails only for an invalid URL or when called
    /// outside a Tokio runtime; see [`RedisConnectError`].
    pub async fn connect(
        self,
        info: impl IntoConnectionInfo,
    ) -> Result<RedisRateLimiter, RedisConnectError> {
        let client = Client::open(info).map_err(RedisConnectError::InvalidConnectionInfo)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.connect_timeout)
            // One retry, a second or two later, per reconnection; the next
            // failing command starts another. Keeps a fleet from hammering a
            // Redis that is down, and notices one that is back within seconds.
            .set_number_of_retries(1)
            .set_factor(1)
            .set_max_delay(1_000);
        self.connect_with(Connector::Single(client, config)).await
    }

    /// Connects to the Redis Cluster that `nodes` belong to (URLs such as
    /// `redis://127.0.0.1:7000/`, or [`redis::ConnectionInfo`]s; one
    /// reachable node is enough, the client learns the others from it).
    ///
    /// Each bucket's script then runs on the master of the bucket's slot,
    /// and each credits script on the master of the account's slot (see
    /// [Redis Cluster](RedisRateLimiter#redis-cluster)). Waiting, failing
    /// and reconnecting work as for [`connect`](Self::connect): a cluster
    /// that cannot be reached in time is connected to in the background.
    /// Fails for invalid connection info, an empty list of nodes, nodes
    /// with different credentials, or when called outside a Tokio runtime.
    ///
    /// ```no_run
    /// use keygate::RedisRateLimiter;
    ///
    /// # async fn run() -> Result<(), keygate::RedisConnectError> {
    /// let limiter = RedisRateLimiter::builder()
    ///     .prefix("myapp:rl:")
    ///     .connect_cluster(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"])
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_cluster<T: IntoConnectionInfo>(
        self,
        nodes: impl IntoIterator<Item = T>,
    ) -> Result<RedisRateLimiter, RedisConnectError> {
        let client = ClusterClient::builder(nodes)
            .connection_timeout(self.connect_timeout)
            // Retry within a call's timeout: a redirection at once, a
            // cluster that is failing over after 10 ms and more. A call that
            // times out is dropped, with its retries.
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(250)
            .build()
            .map_err(RedisConnectError::InvalidConnectionInfo)?;
        self.connect_with(Connector::Cluster(client)).await
    }

    async fn connect_with(
        self,
        connector: Connector,
    ) -> Result<RedisRateLimiter, RedisConnectError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisConnectError::NoRuntime);
        }
        let connect_timeout = self.connect_timeout;
        let limiter = self.limiter();
        match connect_once(&connector, connect_timeout).await {
            Ok(conn) => limiter.install(conn).await,
            Err(e) => {
                tracing::warn!(target: "keygate", error = %e,
                    "redis rate limiter could not connect; retrying in the background");
                limiter.inner.failing.store(true, Ordering::Relaxed);
                tokio::spawn(connect_in_background(
                    Arc::downgrade(&limiter.inner),
                    connector,
                    connect_timeout,
                ));
            }
        }
        Ok(limiter)
    }

    /// A limiter on an existing connection manager (made with
    /// [`ConnectionManager::new`] or [`ConnectionManager::new_with_config`]).
    /// The connect timeout does not apply.
    pub fn build(self, manager: ConnectionManager) -> RedisRateLimiter {
        RedisRateLimiter {
            inner: Arc::new(self.inner(OnceLock::from(Conn::Single(manager)))),
        }
    }

    /// A limiter on an existing Redis Cluster connection (made with
    /// [`ClusterClient::get_async_connection`]). The connect timeout does not
    /// apply.
    pub fn build_cluster(self, conn: ClusterConnection) -> RedisRateLimiter {
        RedisRateLimiter {
            inner: Arc::new(self.inner(OnceLock::from(Conn::Cluster(conn)))),
        }
    }

    fn limiter(self) -> RedisRateLimiter {
        RedisRateLimiter {
            inner: Arc::new(self.inner(OnceLock::new())),
        }
    }

    fn inner(self, conn: OnceLock<Conn>) -> Inner {
        Inner {
            conn,
            prefix: self.prefix,
            timeout: self.timeout,
            on_failure: self.on_failure,
            local: LocalRateLimiter::new(self.clock),
            classes: RwLock::new(Vec::new()),
            failing: AtomicBool::new(false),
        }
    }
}

async fn connect_once(connector: &Connector, timeout: Duration) -> Result<Conn, String> {
    match tokio::time::timeout(timeout, connector.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

/// Tries to connect until it succeeds or the limiter is dropped.
async fn connect_in_background(limiter: Weak<Inner>, connector: Connector, timeout: Duration) {
    loop {
        tokio::time::sleep(RECONNECT_PAUSE).await;
        if limiter.strong_count() == 0 {
            return;
        }
        if let Ok(conn) = connect_once(&connector, timeout).await {
            if let Some(inner) = limiter.upgrade() {
                RedisRateLimiter { inner }.install(conn).await;
            }
            return;
        }
    }
}

impl RedisRateLimiter {
    /// Connects to the Redis at `url` with the default settings: key prefix
    /// `keygate:rl:`, 50 ms timeout, [`RedisFailure::FailClosed`]. See
    /// [`RedisRateLimiterBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, RedisConnectError> {
        Self::builder().connect(url).await
    }

    /// A limiter with the default settings on an existing connection manager.
    pub fn new(manager: ConnectionManager) -> Self {
        Self::builder().build(manager)
    }

    /// Connects to the Redis Cluster that `nodes` belong to with the default
    /// settings. See [`RedisRateLimiterBuilder::connect_cluster`].
    pub async fn connect_cluster(nodes: &[&str]) -> Result<Self, RedisConnectError> {
        Self::builder().connect_cluster(nodes.iter().copied()).await
    }

    /// Starts configuring a limiter.
    pub fn builder() -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder::default()
    }

    /// The Redis key holding the bucket of `key_id` in class `class_name`,
    /// e.g. to inspect it with `redis-cli`.
    ///
    /// ```
    /// use keygate::RedisRateLimiter;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// // Reachable or not, the limiter names its keys the same way.
    /// let limiter = RedisRateLimiter::builder()
    ///     .connect_timeout(Duration::from_millis(100))
    ///     .connect("redis://127.0.0.1:6379/")
    ///     .await?;
    /// assert_eq!(limiter.key_for("key_01", "send"), "keygate:rl:{key_01}:send");
    /// # Ok::<(), keygate::RedisConnectError>(())
    /// # }).unwrap();
    /// ```
    pub fn key_for(&self, key_id: &str, class_name: &str) -> String {
        bucket_key(&self.inner.prefix, key_id, class_name)
    }

    /// Whether a connection to Redis has been established (it may have been
    /// lost since; the manager then reconnects by itself).
    pub fn is_connected(&self) -> bool {
        self.inner.conn.get().is_some()
    }

    /// The policy applied when Redis cannot be reached.
    pub fn on_failure(&self) -> RedisFailure {
        self.inner.on_failure
    }

    /// Stores the connection and loads the scripts (on every node of a
    /// cluster), so that the first check already takes a single `EVALSHA`.
    async fn install(&self, mut conn: Conn) {
        // Best effort: `EVALSHA` falls back to loading the script itself.
        for script in [&*GCRA, &*CREDITS] {
            let _ = tokio::time::timeout(
                self.inner.timeout.max(Duration::from_millis(500)),
                script.prepare_invoke().load_async(&mut conn),
            )
            .await;
        }
        if self.inner.conn.set(conn).is_ok() {
            self.inner.recovered();
        }
    }

    /// Runs the script, with `now` (seconds, nanoseconds) in place of the
    /// server's clock when given.
    async fn run(
        &self,
        key: &str,
        quota: &Quota,
        now: Option<(u64, u32)>,
    ) -> Result<Decision, LimiterUnavailable> {
        let Some(conn) = self.inner.conn.get() else {
            return Err(LimiterUnavailable::new("not connected to redis"));
        };
        let mut conn = conn.clone();
        let (interval_s, interval_n) = split_nanos(quota.interval_nanos());
        let (tolerance_s, tolerance_n) = split_nanos(quota.tolerance_nanos());
        let mut invocation = GCRA.key(key);
        invocation
            .arg(interval_s)
            .arg(interval_n)
            .arg(tolerance_s)
            .arg(tolerance_n);
        if let Some((s, n)) = now {
            invocation.arg(s).arg(n);
        }
        let reply = tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| LimiterUnavailable::new("redis did not answer within the timeout"))?
            .map_err(redis_error)?;
        decision_from_reply(reply, quota)
    }

    /// The Redis key holding the shared credits of `id` (a key's lineage or
    /// an identity's id) of `account`. Its hash tag is the account (without
    /// any braces it has), so all ledgers of an account share a Redis Cluster
    /// slot.
    ///
    /// ```
    /// use keygate::{AccountId, RedisRateLimiter};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let limiter = RedisRateLimiter::builder()
    ///     .connect_timeout(Duration::from_millis(100))
    ///     .connect("redis://127.0.0.1:6379/")
    ///     .await?;
    /// let org = AccountId::new("org_42").unwrap();
    /// assert_eq!(
    ///     limiter.credits_key_for(&org, "idn_01"),
    ///     "keygate:rl:{org_42}#credits:idn_01"
    /// );
    /// # Ok::<(), keygate::RedisConnectError>(())
    /// # }).unwrap();
    /// ```
    pub fn credits_key_for(&self, account: &AccountId, id: &str) -> String {
        credits_key(&self.inner.prefix, account, id)
    }

    /// Runs the credits script on the ledgers given, key first.
    async fn run_credits(
        &self,
        account: &AccountId,
        key: Option<(&str, &Credits)>,
        identity: Option<(&str, &Credits)>,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<SharedSpend, LimiterUnavailable> {
        let Some(conn) = self.inner.conn.get() else {
            return Err(LimiterUnavailable::new("not connected to redis"));
        };
        let ledgers: Vec<(&str, &Credits)> = key.into_iter().chain(identity).collect();
        if ledgers.is_empty() {
            return Ok(SharedSpend::new(Spend::Unlimited, Spend::Unlimited));
        }
        let mut conn = conn.clone();
        let mut invocation = CREDITS.prepare_invoke();
        invocation.arg(cost.min(MAX_LUA_INT)).arg(unix_ms(now));
        for (id, credits) in &ledgers {
            let refill = credits.refill;
            invocation
                .key(credits_key(&self.inner.prefix, account, id))
                .arg(fingerprint(credits))
                .arg(credits.remaining.min(MAX_LUA_INT))
                .arg(refill.map_or(0, |r| r.amount.min(MAX_LUA_INT)))
                .arg(refill.map_or(0, |r| r.interval_ms.min(MAX_LUA_INT)))
                .arg(unix_ms(credits.refilled_at));
        }
        let reply: Vec<i64> =
            tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| LimiterUnavailable::new("redis did not answer within the timeout"))?
                .map_err(redis_error)?;
        let bad = || LimiterUnavailable::new("redis: unexpected reply from the credits script");
        let status = *reply.first().ok_or_else(bad)?;
        let has_key = key.is_some();
        if status == 0 {
            if reply.len() != ledgers.len() + 1 {
                return Err(bad());
            }
            let spent = |i: usize| Spend::Spent {
                remaining: u64::try_from(reply[i]).unwrap_or(0),
            };
            return Ok(match (has_key, ledgers.len()) {
                (true, 2) => SharedSpend::new(spent(1), spent(2)),
                (true, _) => SharedSpend::new(spent(1), Spend::Unlimited),
                (false, _) => SharedSpend::new(Spend::Unlimited, spent(1)),
            });
        }
        let next = *reply.get(1).ok_or_else(bad)?;
        let refused = Spend::Exhausted {
            next_refill: u64::try_from(next).ok().map(from_unix_ms),
        };
        // Ledger `status` refused: the key's when the key has one and it is
        // the first, else the identity's.
        Ok(if has_key && status == 1 {
            SharedSpend::new(refused, Spend::Unlimited)
        } else {
            SharedSpend::new(Spend::Unlimited, refused)
        })
    }

    /// Runs `script` on the bucket of `key_id` in `class_name` (its only
    /// key) with `args`, within the timeout, noting failures and recoveries
    /// as [`check`](RateLimiter::check) does: the seam for the leased mode,
    /// whose script works on the same buckets.
    pub(super) async fn run_on_bucket<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key_id: &str,
        class_name: &str,
        args: &[u64],
    ) -> Result<T, LimiterUnavailable> {
        let inner = &*self.inner;
        inner.remember_class(class_name);
        let result = async {
            let Some(conn) = inner.conn.get() else {
                return Err(LimiterUnavailable::new("not connected to redis"));
            };
            let mut conn = conn.clone();
            let mut invocation = script.key(bucket_key(&inner.prefix, key_id, class_name));
            for arg in args {
                invocation.arg(*arg);
            }
            tokio::time::timeout(inner.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| LimiterUnavailable::new("redis did not answer within the timeout"))?
                .map_err(redis_error)
        }
        .await;
        match &result {
            Ok(_) => inner.recovered(),
            Err(e) => inner.failed(e),
        }
        result
    }

    /// The answer the failure policy gives after `error`: the error itself
    /// ([`RedisFailure::FailClosed`]), or a decision on the local fallback
    /// buckets ([`RedisFailure::FallBackToLocal`]).
    pub(super) fn after_failure(
        &self,
        error: LimiterUnavailable,
        key_id: &str,
        class_name: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        match self.inner.on_failure {
            RedisFailure::FailClosed => Err(error),
            RedisFailure::FallBackToLocal => {
                self.inner.local.check_keyed(key_id, class_name, quota)
            }
        }
    }

    /// [`RateLimiter::check`] at a given time instead of Redis's `TIME`, in
    /// nanoseconds since the Unix epoch, with no fallback: for tests that
    /// compare the script with the in-process [`Bucket`](super::Bucket)
    /// exactly. Not part of the public API; it may change in any release.
    /// Instances sharing buckets must share one clock, so never mix it with
    /// [`check`](RateLimiter::check) on the same keys.
    #[doc(hidden)]
    pub async fn check_at(
        &self,
        key_id: &str,
        class_name: &str,
        quota: &Quota,
        now_nanos: u64,
    ) -> Result<Decision, LimiterUnavailable> {
        let (s, n) = split_nanos(now_nanos);
        let key = self.key_for(key_id, class_name);
        self.run(&key, quota, Some((s, n))).await
    }
}

impl Inner {
    fn remember_class(&self, class_name: &str) {
        if self.classes.read().iter().any(|c| **c == *class_name) {
            return;
        }
        let mut classes = self.classes.write();
        if classes.len() < MAX_REMEMBERED_CLASSES && !classes.iter().any(|c| **c == *class_name) {
            classes.push(class_name.into());
        }
    }

    fn failed(&self, error: &LimiterUnavailable) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "keygate", error = %error, policy = ?self.on_failure,
                "redis rate limiter unavailable");
        }
    }

    fn recovered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(target: "keygate", "redis rate limiter available again");
        }
    }
}

impl fmt::Debug for RedisRateLimiter {
    /// Shows the settings, never the connection details (which may hold a
    /// password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("on_failure", &self.inner.on_failure)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    /// Takes the decision in Redis, keyed by `key_id` and `class_name`; or,
    /// with [`RedisFailure::FallBackToLocal`] while Redis cannot answer, in
    /// this process.
    async fn check(
        &self,
        key_id: &str,
        class_name: &str,
        quota: &Quota,
    ) -> Result<Decision, LimiterUnavailable> {
        let inner = &*self.inner;
        inner.remember_class(class_name);
        let key = bucket_key(&inner.prefix, key_id, class_name);
        match self.run(&key, quota, None).await {
            Ok(decision) => {
                inner.recovered();
                Ok(decision)
            }
            Err(e) => {
                inner.failed(&e);
                match inner.on_failure {
                    RedisFailure::FailClosed => Err(e),
                    RedisFailure::FallBackToLocal => {
                        inner.local.check_keyed(key_id, class_name, quota)
                    }
                }
            }
        }
    }

    /// Spends credits in Redis, shared by every instance on this Redis and
    /// prefix (see [Credits](RedisRateLimiter#credits)); or, with
    /// [`RedisFailure::FallBackToLocal`] while Redis cannot answer, leaves
    /// the spend to the store (`Ok(None)`).
    async fn spend_credits(
        &self,
        account: &AccountId,
        key: Option<(&str, &Credits)>,
        identity: Option<(&str, &Credits)>,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Option<SharedSpend>, LimiterUnavailable> {
        let inner = &*self.inner;
        match self.run_credits(account, key, identity, cost, now).await {
            Ok(spend) => {
                inner.recovered();
                Ok(Some(spend))
            }
            Err(e) => {
                inner.failed(&e);
                match inner.on_failure {
                    RedisFailure::FailClosed => Err(e),
                    RedisFailure::FallBackToLocal => Ok(None),
                }
            }
        }
    }

    /// Deletes the key's buckets in every class this limiter has checked, in
    /// a background task, best effort: if Redis is unreachable, or this
    /// process never checked a class the key used, the buckets simply expire
    /// once full (at most one quota period). Deleting in Redis does nothing
    /// outside a Tokio runtime. The key's local fallback buckets are dropped
    /// at once.
    fn forget(&self, key_id: &str) {
        let inner = &*self.inner;
        inner.local.forget(key_id);
        let Some(conn) = inner.conn.get() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let keys: Vec<String> = inner
            .classes
            .read()
            .iter()
            .map(|class| bucket_key(&inner.prefix, key_id, class))
            .collect();
        if keys.is_empty() {
            return;
        }
        let mut conn = conn.clone();
        let timeout = inner.timeout;
        runtime.spawn(async move {
            // One slot for all of them, thanks to the hash tag.
            let mut del = redis::cmd("DEL");
            del.arg(&keys);
            if let Ok(Err(e)) = tokio::time::timeout(timeout, del.exec_async(&mut conn)).await {
                tracing::debug!(target: "keygate", error = %e, "forgetting rate-limit buckets failed");
            }
        });
    }
}

/// Lua numbers are doubles: integers are exact up to 2^53.
const MAX_LUA_INT: u64 = 1 << 53;

/// The ledger of `id` (a key's lineage or an identity's id) in `account`:
/// `<prefix>{<account>}#credits:<id>`. The account is the Redis Cluster hash
/// tag, so a key's ledger and its identity's (always of the key's account)
/// share a slot and one script can spend both.
fn credits_key(prefix: &str, account: &AccountId, id: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + account.as_str().len() + id.len() + 12);
    key.push_str(prefix);
    key.push('{');
    push_hash_tag(&mut key, account.as_str());
    key.push_str("}#credits:");
    key.push_str(id);
    key
}

/// Appends `tag` for use between braces as a hash tag: without braces of its
/// own (which would end or move the tag), and never empty (Redis hashes the
/// whole key for `{}`). Tags that differ only there share a slot, which
/// is harmless: the full key names still differ.
fn push_hash_tag(key: &mut String, tag: &str) {
    let start = key.len();
    key.extend(tag.chars().filter(|c| !matches!(c, '{' | '}')));
    if key.len() == start {
        key.push('_');
    }
}

/// What identifies a record's credits as set: any update of them changes it
/// (the set time is in nanoseconds), while spends in Redis leave the record
/// alone.
fn fingerprint(credits: &Credits) -> String {
    let refill = credits.refill.map_or_else(
        || "-".to_owned(),
        |r| format!("{}/{}", r.amount, r.interval_ms),
    );
    format!(
        "{}:{}:{}",
        credits.remaining,
        refill,
        credits.refilled_at.unix_timestamp_nanos()
    )
}

/// Whole milliseconds since the epoch, zero before it.
fn unix_ms(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0)
        .min(MAX_LUA_INT)
}

fn from_unix_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn bucket_key(prefix: &str, key_id: &str, class_name: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + key_id.len() + class_name.len() + 3);
    key.push_str(prefix);
    key.push('{');
    key.push_str(key_id);
    key.push_str("}:");
    key.push_str(class_name);
    key
}

fn split_nanos(nanos: u64) -> (u64, u32) {
    // The remainder is below 10^9, so it fits.
    (nanos / NANOS_PER_SEC, (nanos % NANOS_PER_SEC) as u32)
}

fn redis_error(e: RedisError) -> LimiterUnavailable {
    LimiterUnavailable::new(format!("redis: {e}"))
}

/// The script's reply: admitted, then `start - now` and `new TAT - now` as
/// (seconds, nanoseconds).
type Reply = (i64, i64, i64, i64, i64);

/// Builds the [`Decision`] exactly as the in-process bucket does from the
/// same times; a reply that could not come from the script is
/// an error, never a panic or a guess.
fn decision_from_reply(reply: Reply, quota: &Quota) -> Result<Decision, LimiterUnavailable> {
    let (admitted, reset_s, reset_n, ahead_s, ahead_n) = reply;
    let malformed = || LimiterUnavailable::new("unexpected reply from the redis rate-limit script");
    let join = |s: i64, n: i64| -> Option<u128> {
        let n = u64::try_from(n).ok().filter(|n| *n < NANOS_PER_SEC)?;
        let s = u64::try_from(s).ok()?;
        Some(u128::from(s) * u128::from(NANOS_PER_SEC) + u128::from(n))
    };
    let reset = join(reset_s, reset_n).ok_or_else(malformed)?;
    let ahead = join(ahead_s, ahead_n).ok_or_else(malformed)?;
    let interval = u128::from(quota.interval_nanos());
    let tolerance = u128::from(quota.tolerance_nanos());
    let nanos = |n: u128| u64::try_from(n).map(Duration::from_nanos).ok();
    match admitted {
        1 if ahead <= tolerance => Ok(Decision {
            allowed: true,
            limit: quota.burst(),
            // (tolerance - ahead) / interval < burst, so it fits in u32.
            remaining: u32::try_from((tolerance - ahead) / interval).unwrap_or(u32::MAX),
            reset: nanos(ahead).ok_or_else(malformed)?,
            retry_after: None,
        }),
        0 if ahead > tolerance => Ok(Decision {
            allowed: false,
            limit: quota.burst(),
            remaining: 0,
            reset: nanos(reset).ok_or_else(malformed)?,
            retry_after: Some(nanos(ahead - tolerance).ok_or_else(malformed)?),
        }),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ratelimit::gcra::Bucket;
    use crate::ratelimit::nz;

    #[test]
    fn keys_carry_the_key_id_as_hash_tag() {
        assert_eq!(
            bucket_key("keygate:rl:", "key_01", "send"),
            "keygate:rl:{key_01}:send"
        );
        assert_eq!(bucket_key("", "", ""), "{}:");
    }

    #[test]
    fn credit_ledgers_carry_the_account_as_hash_tag() {
        let account = |id: &str| AccountId::new(id).unwrap();
        assert_eq!(
            credits_key("keygate:rl:", &account("org_42"), "key_01"),
            "keygate:rl:{org_42}#credits:key_01"
        );
        assert_eq!(
            credits_key("p:", &account("acme/eu"), "idn_01"),
            "p:{acme/eu}#credits:idn_01"
        );
        // Braces would end or move the tag, and `{}` tags nothing.
        assert_eq!(
            credits_key("p:", &account("a{b}c"), "k"),
            "p:{abc}#credits:k"
        );
        assert_eq!(credits_key("p:", &account("}{"), "k"), "p:{_}#credits:k");
    }

    /// The slot Redis Cluster gives `key`: CRC16 (XMODEM) of its hash tag, or
    /// of the whole key when it has none, modulo 16384.
    fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = match bytes.iter().position(|b| *b == b'{') {
            Some(open) => match bytes[open + 1..].iter().position(|b| *b == b'}') {
                Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
                _ => bytes,
            },
            None => bytes,
        };
        let mut crc: u16 = 0;
        for byte in hashed {
            crc ^= u16::from(*byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn every_multi_key_command_stays_in_one_slot() {
        // Known values from the Redis Cluster specification.
        // CRC16/XMODEM("123456789") = 0x31C3, below 16384.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for _ in 0..2_000 {
            let text = |rng: &mut rand::rngs::StdRng| -> String {
                let len = rng.gen_range(1..12);
                (0..len)
                    .map(|_| *b"ab{}/_-09".get(rng.gen_range(0..9)).unwrap() as char)
                    .collect()
            };
            let account = AccountId::new(text(&mut rng).replace('/', "x")).unwrap();
            let prefix = ["keygate:rl:", "", "x:"][rng.gen_range(0..3)];
            let (key, identity) = (text(&mut rng), text(&mut rng));
            // The credits script's two ledgers.
            assert_eq!(
                slot(&credits_key(prefix, &account, &key)),
                slot(&credits_key(prefix, &account, &identity)),
                "{prefix} {account:?} {key} {identity}"
            );
            // `forget`'s `DEL` of one key's buckets in every class.
            let key_id = format!("key_{}", rng.gen::<u32>());
            assert_eq!(
                slot(&bucket_key(prefix, &key_id, "send")),
                slot(&bucket_key(prefix, &key_id, &text(&mut rng))),
            );
        }
    }

    #[test]
    fn nanos_split_into_seconds_and_nanoseconds() {
        assert_eq!(split_nanos(0), (0, 0));
        assert_eq!(split_nanos(1_500_000_001), (1, 500_000_001));
        assert_eq!(split_nanos(u64::MAX), (18_446_744_073, 709_551_615));
    }

    #[test]
    fn replies_become_the_buckets_decisions() {
        let quota = Quota::per_second(nz(5)).unwrap().with_burst(4).unwrap();
        // Admitted with 200 ms of the 800 ms tolerance used.
        let d = decision_from_reply((1, 0, 0, 0, 200_000_000), &quota).unwrap();
        assert_eq!(d, Bucket::new().check(&quota, 0));
        assert_eq!((d.limit, d.remaining), (4, 3));
        // Denied 100 ms before the next token.
        let d = decision_from_reply((0, 0, 700_000_000, 0, 900_000_000), &quota).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reset, Duration::from_millis(700));
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
    }

    #[test]
    fn impossible_replies_are_errors() {
        let quota = Quota::per_second(nz(5)).unwrap();
        for reply in [
            (1, 0, 0, 2, 0),                      // admitted beyond the tolerance
            (0, 0, 0, 0, 1),                      // denied within it
            (2, 0, 0, 0, 1),                      // not a flag
            (1, 0, 0, -1, 0),                     // negative time
            (1, 0, 0, 0, 1_000_000_000),          // nanoseconds out of range
            (0, i64::MAX, 0, i64::MAX, 0),        // beyond u64 nanoseconds
            (0, 0, 0, i64::MAX, 999_999_999),     // retry beyond u64 nanoseconds
            (1, 0, -5, 0, 1),                     // negative nanoseconds
            (0, -1, 999_999_999, 1, 500_000_000), // negative reset
        ] {
            let err = decision_from_reply(reply, &quota).unwrap_err();
            assert!(err.reason().contains("unexpected reply"), "{reply:?}");
        }
    }

    #[tokio::test]
    async fn unreachable_redis_fails_closed_by_default() {
        let limiter = RedisRateLimiter::builder()
            .connect_timeout(Duration::from_millis(100))
            .connect("redis://127.0.0.1:1/")
            .await
            .unwrap();
        assert!(!limiter.is_connected());
        assert_eq!(limiter.on_failure(), RedisFailure::FailClosed);
        let quota = Quota::per_second(nz(1)).unwrap();
        let err = limiter.check("k", "c", &quota).await.unwrap_err();
        assert_eq!(err.reason(), "not connected to redis");
        limiter.forget("k");
        let shown = format!("{limiter:?}");
        assert!(shown.contains("connected: false"), "{shown}");
    }

    #[tokio::test]
    async fn the_local_fallback_keeps_buckets_by_key_and_class() {
        let clock = crate::ManualClock::new();
        let limiter = RedisRateLimiter::builder()
            .connect_timeout(Duration::from_millis(100))
            .on_failure(RedisFailure::FallBackToLocal)
            .clock(clock.clone())
            .connect("redis://127.0.0.1:1/")
            .await
            .unwrap();
        let quota = Quota::per_hour(nz(2));
        let check = |key: &'static str, class: &'static str| {
            let limiter = limiter.clone();
            async move { limiter.check(key, class, &quota).await.unwrap() }
        };
        assert_eq!(check("a", "send").await.remaining, 1);
        assert_eq!(check("a", "send").await.remaining, 0);
        let denied = check("a", "send").await;
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(Duration::from_secs(1800)));
        assert_eq!(check("a", "read").await.remaining, 1);
        assert_eq!(check("b", "send").await.remaining, 1);
        // Forgetting the key drops its local buckets, whatever Redis does.
        limiter.forget("a");
        assert_eq!(check("a", "send").await.remaining, 1);
        assert_eq!(check("a", "read").await.remaining, 1);
        assert_eq!(check("b", "send").await.remaining, 0);
        assert!(!check("b", "send").await.allowed);
        // The fallback reads the builder's clock.
        clock.advance(Duration::from_secs(1800));
        assert_eq!(check("b", "send").await.remaining, 0);
    }

    #[tokio::test]
    async fn invalid_urls_are_configuration_errors() {
        let err = RedisRateLimiter::connect("http://127.0.0.1/")
            .await
            .unwrap_err();
        assert!(
            matches!(err, RedisConnectError::InvalidConnectionInfo(_)),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("invalid redis connection info: "));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn a_cluster_needs_valid_nodes_and_fails_closed_while_unreachable() {
        let err = RedisRateLimiter::connect_cluster(&[]).await.unwrap_err();
        assert!(
            matches!(err, RedisConnectError::InvalidConnectionInfo(_)),
            "{err:?}"
        );
        let err = RedisRateLimiter::connect_cluster(&["http://127.0.0.1/"])
            .await
            .unwrap_err();
        assert!(
            matches!(err, RedisConnectError::InvalidConnectionInfo(_)),
            "{err:?}"
        );
        let limiter = RedisRateLimiter::builder()
            .connect_timeout(Duration::from_millis(100))
            .connect_cluster(["redis://127.0.0.1:1/"])
            .await
            .unwrap();
        assert!(!limiter.is_connected());
        let quota = Quota::per_second(nz(1)).unwrap();
        let err = limiter.check("k", "c", &quota).await.unwrap_err();
        assert_eq!(err.reason(), "not connected to redis");
        let account = AccountId::new("org").unwrap();
        let credits = Credits::new(1);
        let err = limiter
            .spend_credits(
                &account,
                Some(("k", &credits)),
                None,
                1,
                OffsetDateTime::UNIX_EPOCH,
            )
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "not connected to redis");
    }

    #[test]
    fn connecting_outside_a_runtime_is_an_error() {
        let err = block_on_without_runtime(RedisRateLimiter::connect("redis://127.0.0.1:1/"));
        assert!(matches!(err, Err(RedisConnectError::NoRuntime)));
        assert_eq!(
            RedisConnectError::NoRuntime.to_string(),
            "a redis rate limiter must be connected inside a tokio runtime"
        );
    }

    /// Polls a future to completion on this thread, without a Tokio runtime.
    fn block_on_without_runtime<F: std::future::Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Wake, Waker};
        struct Noop;
        impl Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}
