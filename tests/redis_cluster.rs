//! `RedisRateLimiter` on a real Redis Cluster: limits and credits are as
//! exact across the cluster's masters as on one server, and when a master
//! fails the limiter fails closed until its replica has taken over, then
//! decides again.
//!
//! Each test starts a cluster of its own from the installed `redis-server`
//! and `redis-cli`: three masters with one replica each, on free local
//! ports, in a temporary directory, without persistence; every process is
//! killed when the test ends, passed or not. Without `redis-server` (or
//! `redis-cli`) the tests are ignored with the reason, unless
//! `KEYGATE_REQUIRE_SERVICES=1` makes that a failure.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::redis::{self, cluster::ClusterClient};
use keygate::store::Spend;
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateIdentity, CreateKey, Credits, MemoryStore,
    Operation, Pepper, Quota, RateLimiter, RedisFailure, RedisRateLimiter,
};
use support::free_port;
use support::harness::{self, Rt};

/// How long a node may be unreachable before the others mark it failed. Long
/// enough that the failover test promotes the replica itself, first.
const NODE_TIMEOUT_MS: u32 = 5_000;
/// The most a cluster may take to start, and a failover to be followed.
const BOUND: Duration = Duration::from_secs(20);

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// One node of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeInfo {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    /// The master's id, for a replica.
    replica_of: Option<String>,
    slots: Vec<(u16, u16)>,
}

/// A Redis Cluster of this test: three masters and three replicas, killed
/// on drop (also when the test panics).
struct Cluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a cluster, or ends the test as ignored (failed with
    /// `KEYGATE_REQUIRE_SERVICES=1`) when none can be started.
    fn start() -> Cluster {
        // A port found free may be taken before the node binds it: try
        // again on other ports then.
        let mut why = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(e) if e.contains("could not be started") => {
                    why = e;
                    break;
                }
                Err(e) => why = e,
            }
        }
        support::skip_or_fail("redis cluster", &why);
        panic!("{why}");
    }

    fn try_start() -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let path = |name: String| -> PathBuf { cluster.dir.path().join(name) };
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .arg("--cluster-config-file")
                .arg(path(format!("nodes-{port}.conf")))
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--logfile")
                .arg(path(format!("{port}.log")))
                .arg("--dir")
                .arg(cluster.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("redis-server could not be started: {e}"))?;
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + BOUND;
        for i in 0..cluster.nodes.len() {
            let port = cluster.nodes[i].port;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                let exited = cluster.nodes[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() || Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(cluster.dir.path().join(format!("{port}.log")))
                            .unwrap_or_default();
                    return Err(format!(
                        "redis-server did not start on port {port} ({exited:?}): {log}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli could not be run: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        // Every node sees the whole cluster, with every slot served and
        // every master replicated.
        for node in &cluster.nodes {
            loop {
                let info: String = query(node.port, &["CLUSTER", "INFO"]).unwrap_or_default();
                let nodes: String = query(node.port, &["CLUSTER", "NODES"]).unwrap_or_default();
                if info.contains("cluster_state:ok")
                    && info.contains("cluster_known_nodes:6")
                    && nodes.matches("slave").count() == 3
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {} never saw the cluster: {info}", node.port));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }

    fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// The cluster as a live node sees it.
    fn topology(&self) -> Vec<NodeInfo> {
        let text: String = query(self.live_port(), &["CLUSTER", "NODES"]).unwrap();
        text.lines()
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                let addr = f[1].split('@').next().unwrap();
                let port = addr.rsplit(':').next().unwrap().parse().unwrap();
                let flags: Vec<&str> = f[2].split(',').collect();
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .map(|s| match s.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (s.parse().unwrap(), s.parse().unwrap()),
                    })
                    .collect();
                NodeInfo {
                    id: f[0].to_owned(),
                    port,
                    master: flags.contains(&"master"),
                    failed: flags.contains(&"fail") || flags.contains(&"fail?"),
                    replica_of: (f[3] != "-").then(|| f[3].to_owned()),
                    slots,
                }
            })
            .collect()
    }

    fn masters(&self) -> Vec<NodeInfo> {
        self.topology()
            .into_iter()
            .filter(|n| n.master && !n.slots.is_empty())
            .collect()
    }

    /// The port of the master serving `key`'s slot.
    fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot(key);
        self.masters()
            .into_iter()
            .find(|m| m.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|m| m.port)
            .expect("every slot is served")
    }

    fn slot(&self, key: &str) -> u16 {
        query(self.live_port(), &["CLUSTER", "KEYSLOT", key]).unwrap()
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node")
            .port
    }

    /// The port of a replica of the master on `port`.
    fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.topology();
        let master = nodes.iter().find(|n| n.port == port).unwrap();
        nodes
            .iter()
            .find(|n| n.replica_of.as_deref() == Some(&master.id) && !n.failed)
            .map(|n| n.port)
            .expect("each master has a replica")
    }

    /// Kills the node on `port` at once (SIGKILL: no shutdown, no save).
    fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        if let Some(mut child) = node.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One command to the node on `port` itself (not routed by slot).
fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn)
}

/// Polls `done` every 20 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn connect(cluster: &Cluster, seeds: &[usize]) -> RedisRateLimiter {
    let urls = cluster.urls();
    let limiter = RedisRateLimiter::builder()
        .timeout(Duration::from_secs(2))
        .connect_cluster(seeds.iter().map(|i| urls[*i].clone()))
        .await
        .unwrap();
    assert!(limiter.is_connected());
    limiter
}

async fn quotas_hold_exactly_across_the_cluster() {
    let cluster = Cluster::start();
    // Two instances, each knowing the cluster from other seed nodes.
    let limiters = [
        connect(&cluster, &[0]).await,
        connect(&cluster, &[4, 2]).await,
    ];
    // 15 minutes between tokens: the quota is exactly the burst meanwhile.
    let quota = Quota::per_hour(nz(4));
    let keys = 120;
    let mut tasks = Vec::new();
    for k in 0..keys {
        for i in 0..7 {
            let limiter = limiters[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let d = limiter
                    .check(&format!("key_{k}"), "send", &quota)
                    .await
                    .unwrap();
                (k, d)
            }));
        }
    }
    let mut admitted: HashMap<usize, Vec<u32>> = HashMap::new();
    for task in tasks {
        let (k, d) = task.await.unwrap();
        if d.allowed {
            admitted.entry(k).or_default().push(d.remaining);
        } else {
            assert_eq!(d.remaining, 0);
            assert!(d.retry_after.unwrap() > Duration::ZERO);
        }
    }
    for k in 0..keys {
        let mut remaining = admitted.remove(&k).unwrap_or_default();
        remaining.sort_unstable();
        assert_eq!(remaining, [0, 1, 2, 3], "key_{k}: each token taken once");
    }
    // The buckets are spread over every master.
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for master in &masters {
        let size: u64 = query(master.port, &["DBSIZE"]).unwrap();
        assert!(size > 10, "master {} holds {size} buckets", master.port);
    }
    let total: u64 = masters
        .iter()
        .map(|m| query::<u64>(m.port, &["DBSIZE"]).unwrap())
        .sum();
    assert_eq!(total, keys as u64);

    // `forget` deletes a key's buckets on whichever master holds them.
    limiters[0].forget("key_7");
    let bucket = limiters[1].key_for("key_7", "send");
    let owner = cluster.master_of(&bucket);
    let fresh = eventually(Duration::from_secs(5), || {
        let bucket = bucket.clone();
        async move { query::<u64>(owner, &["EXISTS", &bucket]).unwrap() == 0 }
    })
    .await;
    assert!(fresh, "the bucket was not deleted");
    let d = limiters[1].check("key_7", "send", &quota).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 3);
    drop(cluster);
}

/// Accounts whose credit ledgers lie on each master in turn.
fn accounts_on_every_master(cluster: &Cluster, limiter: &RedisRateLimiter) -> Vec<AccountId> {
    let mut found: HashMap<u16, AccountId> = HashMap::new();
    for i in 0..100 {
        let account = AccountId::new(format!("org_{i}")).unwrap();
        let port = cluster.master_of(&limiter.credits_key_for(&account, "x"));
        found.entry(port).or_insert(account);
        if found.len() == 3 {
            return found.into_values().collect();
        }
    }
    panic!("the ledgers of 100 accounts are on {} masters", found.len());
}

async fn credits_are_spent_both_or_neither_on_the_cluster() {
    let cluster = Cluster::start();
    let limiter = connect(&cluster, &[1]).await;
    let store = Arc::new(MemoryStore::new());
    let pepper = Pepper::random(1).unwrap();
    let mut apis = Vec::new();
    for seeds in [[0], [5]] {
        let api = ApiKeys::builder(profiles::mailjawn())
            .store(store.clone())
            .pepper(pepper.clone())
            .rate_limiter(connect(&cluster, &seeds).await)
            .build()
            .unwrap();
        apis.push(api);
    }
    let accounts = accounts_on_every_master(&cluster, &limiter);
    let mut admin = ClusterClient::new(cluster.urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    for account in &accounts {
        let identity = apis[0]
            .operator()
            .create_identity(account, CreateIdentity::new("acme").credits(20))
            .await
            .unwrap();
        // The key's own credits outlast the identity's.
        let key = apis[0]
            .operator()
            .create(
                account,
                CreateKey::new("k")
                    .bundle("sdk")
                    .credits(50)
                    .identity(identity.id.clone()),
            )
            .await
            .unwrap();
        let presented = key.key.expose_secret().to_owned();
        let mut tasks = Vec::new();
        for i in 0..32 {
            let api = apis[i % 2].clone();
            let presented = presented.clone();
            tasks.push(tokio::spawn(async move {
                api.verify_for(&presented, &Operation::unrestricted()).await
            }));
        }
        let (mut left, mut refused) = (Vec::new(), 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(p) => left.push((p.credits_remaining(), p.identity_credits_remaining())),
                Err(AuthError::UsageExceeded { .. }) => refused += 1,
                Err(e) => panic!("{account:?}: {e:?}"),
            }
        }
        left.sort_unstable();
        let expected: Vec<_> = (0..20).map(|r| (Some(30 + r), Some(r))).collect();
        assert_eq!(left, expected, "{account:?}: both spent together, once");
        assert_eq!(refused, 12);
        // The refusals spent none of the key's credits.
        for (id, remaining) in [(key.info.id.as_str(), 30u64), (identity.id.as_str(), 0)] {
            let r: u64 = redis::cmd("HGET")
                .arg(limiter.credits_key_for(account, id))
                .arg("r")
                .query_async(&mut admin)
                .await
                .unwrap();
            assert_eq!(r, remaining, "{account:?} {id}");
        }
    }

    // A refused spend leaves both ledgers alone, on the limiter too.
    let account = &accounts[0];
    let t0 = keygate::time::OffsetDateTime::now_utc();
    let (key_set, idn_set) = (Credits::new(5), Credits::new(2));
    let mut spent = Vec::new();
    for _ in 0..4 {
        let s = limiter
            .spend_credits(
                account,
                Some(("key_direct", &key_set)),
                Some(("idn_direct", &idn_set)),
                1,
                t0,
            )
            .await
            .unwrap()
            .expect("redis keeps credits");
        spent.push((s.key, s.identity));
    }
    assert_eq!(
        spent,
        [
            (Spend::Spent { remaining: 4 }, Spend::Spent { remaining: 1 }),
            (Spend::Spent { remaining: 3 }, Spend::Spent { remaining: 0 }),
            (Spend::Unlimited, Spend::Exhausted { next_refill: None }),
            (Spend::Unlimited, Spend::Exhausted { next_refill: None }),
        ]
    );
    let s = limiter
        .spend_credits(account, Some(("key_direct", &key_set)), None, 3, t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.key, Spend::Spent { remaining: 0 });
    drop(cluster);
}

async fn a_failed_master_fails_closed_until_its_replica_takes_over() {
    let mut cluster = Cluster::start();
    let urls = cluster.urls();
    // The default 50 ms timeout, failing closed; and one falling back.
    let closed = RedisRateLimiter::builder()
        .connect_cluster(urls.clone())
        .await
        .unwrap();
    let fallback = RedisRateLimiter::builder()
        .on_failure(RedisFailure::FallBackToLocal)
        .connect_cluster(urls.clone())
        .await
        .unwrap();
    assert!(closed.is_connected() && fallback.is_connected());
    let quota = Quota::per_hour(nz(3));
    let key = "key_failover";
    let master = cluster.master_of(&closed.key_for(key, "send"));
    let replica = cluster.replica_of(master);

    // The key's quota is spent, and some credits of an account on the same
    // master.
    for remaining in [2, 1, 0] {
        let d = closed.check(key, "send", &quota).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, remaining);
    }
    assert!(!closed.check(key, "send", &quota).await.unwrap().allowed);
    let account = (0..100)
        .map(|i| AccountId::new(format!("org_{i}")).unwrap())
        .find(|a| cluster.master_of(&closed.credits_key_for(a, "key_c")) == master)
        .expect("an account on the master");
    let credits = Credits::new(10);
    let now = keygate::time::OffsetDateTime::now_utc();
    let spend = |limiter: &RedisRateLimiter| {
        let (limiter, account) = (limiter.clone(), account.clone());
        async move {
            limiter
                .spend_credits(&account, Some(("key_c", &credits)), None, 1, now)
                .await
        }
    };
    for _ in 0..5 {
        spend(&closed).await.unwrap().unwrap();
    }
    // Everything written so far has reached the replica.
    let acked: u64 = query(master, &["WAIT", "1", "5000"]).unwrap();
    assert_eq!(acked, 1);

    cluster.kill(master);
    // No node may decide for the master's slots now: every call fails, and
    // failing closed admits nothing.
    for _ in 0..5 {
        let err = closed.check(key, "send", &quota).await.unwrap_err();
        assert!(!err.reason().is_empty());
        assert!(spend(&closed).await.is_err());
    }
    // Falling back decides in this process, on a bucket of its own.
    let d = fallback.check(key, "send", &quota).await.unwrap();
    assert!(d.allowed && d.remaining == 2, "{d:?}");

    let _: String = query(replica, &["CLUSTER", "FAILOVER", "TAKEOVER"]).unwrap();
    let promoted = Instant::now();
    let mut failures = 0;
    let decided = loop {
        match closed.check(key, "send", &quota).await {
            Ok(d) => break d,
            Err(_) => failures += 1,
        }
        assert!(
            promoted.elapsed() < BOUND,
            "no decision {BOUND:?} after the takeover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let recovered = promoted.elapsed();
    // The spent quota was replicated: still spent.
    assert!(!decided.allowed, "{decided:?}");
    println!(
        "decisions again {recovered:?} after the replica took over ({failures} calls failed closed meanwhile)"
    );
    assert_eq!(cluster.master_of(&closed.key_for(key, "send")), replica);
    // Credits go on from what was replicated.
    let s = spend(&closed).await.unwrap().unwrap();
    assert_eq!(s.key, Spend::Spent { remaining: 4 });
    // The other limiter uses the cluster again too: its probes leave buckets
    // in Redis, and the key's spent quota there is what it decides on.
    let mut probe = 0;
    let back = eventually(BOUND, || {
        probe += 1;
        let (fallback, cluster) = (fallback.clone(), &cluster);
        async move {
            let id = format!("key_probe_{probe}");
            assert!(fallback.check(&id, "send", &quota).await.unwrap().allowed);
            let bucket = fallback.key_for(&id, "send");
            query::<u64>(cluster.master_of(&bucket), &["EXISTS", &bucket]).unwrap() == 1
        }
    })
    .await;
    assert!(back, "the fallback limiter never used the cluster again");
    let d = fallback.check(key, "send", &quota).await.unwrap();
    assert!(!d.allowed, "{d:?}");
    let d = closed.check("key_fresh", "send", &quota).await.unwrap();
    assert!(d.allowed);
    drop(cluster);
}

fn main() -> std::process::ExitCode {
    harness::run(trials![
        tokio(Rt::multi(2)) quotas_hold_exactly_across_the_cluster,
        tokio(Rt::multi(2)) credits_are_spent_both_or_neither_on_the_cluster,
        tokio(Rt::multi(2)) a_failed_master_fails_closed_until_its_replica_takes_over,
    ])
}
