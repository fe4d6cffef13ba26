//! Revocation latency across instances: the time from `revoke` returning on
//! instance A to the first refusal of the key on instance B, both of which
//! had it cached.
//!
//! ```text
//! cargo run --release --features postgres --example revocation_latency -- \
//!     [--revocations 1000] [--poll-us 100] [--two-process] [--strict]
//! ```
//!
//! With `--strict`, A's follower uses strict revocation
//! (`FollowConfig::strict_revocation`): each revoke returns only after the
//! lease plus one heartbeat (1.25 s with the default `FollowConfig`), so B
//! refuses before it returns and the stale answers (below) must be 0. Use
//! fewer revocations then, such as `--revocations 100`.
//!
//! The database is `KEYGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the program works in a schema
//! of its own and drops it at the end.
//!
//! The two instances are two [`ApiKeys`], each on its own `PostgresStore`
//! pool on the same schema, behind its own `CachedStore` that follows the
//! store's change notifications (`follow_postgres`, default `FollowConfig`).
//! Each runs on a Tokio runtime of its own with one worker thread. By
//! default both live in this process; with `--two-process`, B runs in a
//! child process (this program, started again) that talks to A over its
//! standard input and output.
//!
//! For every revocation:
//!
//! 1. A creates a key; once B has heard of every creation (a sentinel key
//!    revoked on A is refused on B), A and B verify the key until each
//!    answers it from its cache.
//! 2. B verifies the key once more and checks that the answer came from its
//!    cache, then verifies it in a loop, sleeping `--poll-us` microseconds
//!    (default 100) between verifies, until it is refused.
//! 3. Meanwhile A revokes the key. The latency is the time from `revoke`
//!    returning on A to the end of B's first refusing verify (which, after
//!    B's cache dropped the key, reads PostgreSQL once). Times are taken on
//!    the system clock in both processes. The commit notifies B and answers
//!    A at the same moment, so B may refuse before A's call has returned: a
//!    latency can be negative.
//! 4. Stale answers: B's verifies that started after `revoke` returned and
//!    still succeeded.
//!
//! It prints p50, p90, p99, p99.9, the maximum and the mean of the latency;
//! of its first part, until B's refusing verify began (within one poll of
//! B's cache dropping the key on the notification); of the revoke calls on
//! A and of the refusing verifies on B; the stale answers; and the load
//! average before and after.

use std::collections::VecDeque;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygate::store::{ChangeFollower, FollowConfig};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CachedStore, CreateKey, Pepper, PostgresStore,
};
use rand::Rng;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::runtime::Runtime;

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

/// Where the database lives unless `KEYGATE_TEST_POSTGRES_URL` says otherwise.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Keys created (and warmed) at a time, well inside the cache's 60 s TTL.
const BATCH: usize = 100;

/// How long anything that should take milliseconds may take before the run
/// counts as failed.
const BOUND: Duration = Duration::from_secs(10);

/// The pepper both instances share (a benchmark's, not a production one).
const PEPPER: [u8; 32] = *b"revocation-latency-bench-pepper!";

/// Wall-clock nanoseconds, comparable between the two processes.
fn now_ns() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_nanos()).expect("clock before 2262")
}

fn org() -> AccountId {
    AccountId::new("org_latency").expect("a valid account id")
}

/// One service instance: its own pool, cache, follower and runtime.
struct Instance {
    rt: Runtime,
    api: ApiKeys,
    cached: CachedStore,
    store: Arc<PostgresStore>,
    follower: ChangeFollower,
}

impl Instance {
    fn start(url: &str, schema: &str, name: &str, follow: FollowConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("instance-{name}"))
            .enable_all()
            .build()?;
        let (api, cached, store, follower) = rt.block_on(async {
            let store = Arc::new(PostgresStore::connect_with_schema(url, schema).await?);
            let cached = CachedStore::new(store.clone());
            let follower = cached.follow_postgres_with(&store, follow);
            let start = Instant::now();
            while cached.is_bypassed() {
                if start.elapsed() > BOUND {
                    return Err("the change follower never listened".into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let api = ApiKeys::builder(profiles::mailjawn().with_key_limit(None))
                .store(Arc::new(cached.clone()))
                .pepper(Pepper::new(1, PEPPER.to_vec())?)
                .build()?;
            Ok::<_, Box<dyn Error + Send + Sync>>((api, cached, store, follower))
        })?;
        Ok(Self {
            rt,
            api,
            cached,
            store,
            follower,
        })
    }

    /// One verify; `Ok(true)` when it succeeded from the cache.
    fn verify_hit(&self, secret: &str) -> Result<bool> {
        let before = self.cached.stats();
        self.rt.block_on(self.api.verify(secret))?;
        let after = self.cached.stats();
        Ok(after.hits > before.hits && after.misses == before.misses)
    }

    /// Verifies until an answer comes from the cache.
    fn warm(&self, secret: &str) -> Result<()> {
        let start = Instant::now();
        while !self.verify_hit(secret)? {
            if start.elapsed() > BOUND {
                return Err("a key is never answered from the cache".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Verifies until refused as revoked.
    fn until_revoked(&self, secret: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            match self.rt.block_on(self.api.verify(secret)) {
                Err(AuthError::Revoked) => return Ok(()),
                Ok(_) => {}
                Err(other) => return Err(format!("verify: {other}").into()),
            }
            if start.elapsed() > BOUND {
                return Err("a revocation never arrived".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(self) {
        let Self {
            rt,
            store,
            follower,
            ..
        } = self;
        rt.block_on(async {
            follower.shutdown().await;
            store.pool().close().await;
        });
    }
}

/// What A asks of B.
enum Request {
    /// Verify until answered from the cache.
    Warm(String),
    /// Verify until refused as revoked (a sentinel: B has then applied every
    /// notification committed before its revocation).
    Sync(String),
    /// Check the key is cached, answer `Polling`, then poll until refused.
    Poll(String),
    Quit,
}

impl Request {
    fn encode(&self) -> String {
        match self {
            Self::Warm(s) => format!("warm {s}"),
            Self::Sync(s) => format!("sync {s}"),
            Self::Poll(s) => format!("poll {s}"),
            Self::Quit => "quit".into(),
        }
    }

    fn decode(line: &str) -> Result<Self> {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        Ok(match verb {
            "warm" => Self::Warm(arg.into()),
            "sync" => Self::Sync(arg.into()),
            "poll" => Self::Poll(arg.into()),
            "quit" => Self::Quit,
            _ => return Err(format!("unknown request {verb:?}").into()),
        })
    }
}

/// What B answers.
#[derive(Debug)]
enum Reply {
    Done,
    /// The key was answered from B's cache just now; B polls from here on.
    Polling,
    Refused(Refusal),
    Failed(String),
}

/// B's account of one poll loop.
#[derive(Debug)]
struct Refusal {
    /// When the first refusing verify returned.
    at_ns: i64,
    /// How long that verify took.
    call_ns: i64,
    /// Whether B's cache was bypassed then (lease lapsed or follower down).
    bypassed: bool,
    /// Start times of the last successful verifies.
    ok_starts: Vec<i64>,
}

impl Reply {
    fn encode(&self) -> String {
        match self {
            Self::Done => "done".into(),
            Self::Polling => "polling".into(),
            Self::Failed(why) => format!("failed {}", why.replace('\n', " ")),
            Self::Refused(r) => {
                let starts: Vec<String> = r.ok_starts.iter().map(|s| s.to_string()).collect();
                format!(
                    "refused {} {} {} {}",
                    r.at_ns,
                    r.call_ns,
                    u8::from(r.bypassed),
                    starts.join(",")
                )
            }
        }
    }

    fn decode(line: &str) -> Result<Self> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        Ok(match verb {
            "done" => Self::Done,
            "polling" => Self::Polling,
            "failed" => Self::Failed(rest.into()),
            "refused" => {
                let mut parts = rest.split(' ');
                let mut next = || parts.next().ok_or("a short refusal");
                let at_ns = next()?.parse()?;
                let call_ns = next()?.parse()?;
                let bypassed = next()? == "1";
                let starts = parts.next().unwrap_or("");
                let ok_starts = starts
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                Self::Refused(Refusal {
                    at_ns,
                    call_ns,
                    bypassed,
                    ok_starts,
                })
            }
            _ => return Err(format!("unknown reply {verb:?}").into()),
        })
    }
}

/// Instance B's side: answers requests until `Quit` or until A is gone.
fn serve_b(
    b: &Instance,
    poll: Duration,
    mut recv: impl FnMut() -> Option<Request>,
    mut send: impl FnMut(Reply),
) {
    while let Some(request) = recv() {
        let result = match request {
            Request::Quit => break,
            Request::Warm(secret) => b.warm(&secret).map(|()| Reply::Done),
            Request::Sync(secret) => b.until_revoked(&secret).map(|()| Reply::Done),
            Request::Poll(secret) => poll_b(b, &secret, poll, &mut send),
        };
        send(result.unwrap_or_else(|e| Reply::Failed(e.to_string())));
    }
}

/// Checks that `secret` is cached on B, says so, and verifies it every
/// `poll` until it is refused.
fn poll_b(
    b: &Instance,
    secret: &str,
    poll: Duration,
    send: &mut impl FnMut(Reply),
) -> Result<Reply> {
    if !b.verify_hit(secret)? {
        b.warm(secret)?;
    }
    send(Reply::Polling);
    // The polls of the last few seconds are plenty: a revocation that takes
    // longer fails the run.
    let mut ok_starts = VecDeque::new();
    let begun = Instant::now();
    loop {
        let start = now_ns();
        let result = b.rt.block_on(b.api.verify(secret));
        let end = now_ns();
        match result {
            Ok(_) => {
                if ok_starts.len() == 100_000 {
                    ok_starts.pop_front();
                }
                ok_starts.push_back(start);
            }
            Err(AuthError::Revoked) => {
                return Ok(Reply::Refused(Refusal {
                    at_ns: end,
                    call_ns: end - start,
                    bypassed: b.cached.is_bypassed(),
                    ok_starts: ok_starts.into(),
                }))
            }
            Err(other) => return Err(format!("verify on B: {other}").into()),
        }
        if begun.elapsed() > BOUND {
            return Err("B never refused the revoked key".into());
        }
        if poll.is_zero() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(poll);
        }
    }
}

/// A's handle on B, wherever B runs.
enum Peer {
    Thread {
        requests: mpsc::Sender<Request>,
        replies: mpsc::Receiver<Reply>,
        thread: Option<JoinHandle<Result<()>>>,
    },
    Process {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    },
}

impl Peer {
    fn thread(url: String, schema: String, poll: Duration) -> Self {
        let (requests, requests_rx) = mpsc::channel();
        let (replies_tx, replies) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("instance-b-poller".into())
            .spawn(move || {
                let b = match Instance::start(&url, &schema, "b", FollowConfig::default()) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = replies_tx.send(Reply::Failed(e.to_string()));
                        return Err(e);
                    }
                };
                let _ = replies_tx.send(Reply::Done);
                serve_b(
                    &b,
                    poll,
                    || requests_rx.recv().ok(),
                    |reply| {
                        let _ = replies_tx.send(reply);
                    },
                );
                b.stop();
                Ok(())
            })
            .expect("spawning B's thread");
        Self::Thread {
            requests,
            replies,
            thread: Some(thread),
        }
    }

    fn process(url: &str, schema: &str, poll: Duration) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--instance-b")
            .arg(schema)
            .arg("--poll-us")
            .arg(poll.as_micros().to_string())
            .env("KEYGATE_TEST_POSTGRES_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Self::Process {
            child,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, request: Request) -> Result<()> {
        match self {
            Self::Thread { requests, .. } => requests.send(request).map_err(|_| "B is gone")?,
            Self::Process { stdin, .. } => {
                writeln!(stdin, "{}", request.encode())?;
                stdin.flush()?;
            }
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Reply> {
        let reply = match self {
            Self::Thread { replies, .. } => replies.recv().map_err(|_| "B is gone")?,
            Self::Process { stdout, .. } => {
                let mut line = String::new();
                if stdout.read_line(&mut line)? == 0 {
                    return Err("B exited".into());
                }
                Reply::decode(line.trim_end())?
            }
        };
        match reply {
            Reply::Failed(why) => Err(format!("B: {why}").into()),
            reply => Ok(reply),
        }
    }

    fn ask(&mut self, request: Request) -> Result<()> {
        self.send(request)?;
        match self.recv()? {
            Reply::Done => Ok(()),
            other => Err(format!("B answered {other:?}").into()),
        }
    }

    fn stop(mut self) -> Result<()> {
        let _ = self.send(Request::Quit);
        match self {
            Self::Thread { mut thread, .. } => match thread.take().map(JoinHandle::join) {
                Some(Ok(result)) => result,
                Some(Err(_)) => Err("B's thread panicked".into()),
                None => Ok(()),
            },
            Self::Process {
                mut child, stdin, ..
            } => {
                drop(stdin);
                let status = child.wait()?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("B exited with {status}").into())
                }
            }
        }
    }
}

/// The child process of `--two-process`: instance B on stdin and stdout.
fn run_child(schema: &str, poll: Duration) -> Result<()> {
    let b = Instance::start(&url(), schema, "b", FollowConfig::default())?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{}", Reply::Done.encode())?;
    out.flush()?;
    serve_b(
        &b,
        poll,
        || {
            let line = lines.next()?.ok()?;
            Request::decode(&line).ok()
        },
        |reply| {
            let _ = writeln!(out, "{}", reply.encode());
            let _ = out.flush();
        },
    );
    b.stop();
    Ok(())
}

fn url() -> String {
    std::env::var("KEYGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// One measured revocation.
struct Sample {
    latency_ns: i64,
    revoke_ns: i64,
    refusing_call_ns: i64,
    stale: usize,
    bypassed: bool,
}

struct Options {
    revocations: usize,
    poll: Duration,
    two_process: bool,
    strict: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        revocations: 1000,
        poll: Duration::from_micros(100),
        two_process: false,
        strict: false,
    };
    let mut child_schema = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--revocations" => options.revocations = args.next().ok_or("a count")?.parse()?,
            "--poll-us" => {
                options.poll = Duration::from_micros(args.next().ok_or("microseconds")?.parse()?)
            }
            "--two-process" => options.two_process = true,
            "--strict" => options.strict = true,
            "--instance-b" => child_schema = Some(args.next().ok_or("a schema")?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if let Some(schema) = child_schema {
        return run_child(&schema, options.poll);
    }
    if options.revocations == 0 {
        return Err("--revocations must be at least 1".into());
    }

    let url = url();
    let schema = format!("keygate_revlat_{:016x}", rand::thread_rng().gen::<u64>());
    let before = load_average();
    let result = measure(&url, &schema, &options);
    let dropped = drop_schema(&url, &schema);
    let after = load_average();
    let samples = result?;
    dropped?;
    report(&options, &samples, &before, &after);
    Ok(())
}

/// Runs the revocations in a fresh `schema`.
fn measure(url: &str, schema: &str, options: &Options) -> Result<Vec<Sample>> {
    let follow = FollowConfig::default().with_strict_revocation(options.strict);
    let a = Instance::start(url, schema, "a", follow)?;
    a.rt.block_on(a.store.migrate())?;
    let mut b = if options.two_process {
        Peer::process(url, schema, options.poll)?
    } else {
        Peer::thread(url.to_owned(), schema.to_owned(), options.poll)
    };
    match b.recv()? {
        Reply::Done => {}
        other => return Err(format!("B answered {other:?}").into()),
    }
    let result = revocations(&a, &mut b, options);
    let stopped = b.stop();
    a.stop();
    let samples = result?;
    stopped?;
    Ok(samples)
}

fn revocations(a: &Instance, b: &mut Peer, options: &Options) -> Result<Vec<Sample>> {
    let org = org();
    let manager = a.api.operator();
    let create = |name: &str| {
        a.rt.block_on(manager.create(&org, CreateKey::new(name).bundle("sdk")))
    };
    let mut samples = Vec::with_capacity(options.revocations);
    while samples.len() < options.revocations {
        let batch = BATCH.min(options.revocations - samples.len());
        let keys = (0..batch)
            .map(|n| create(&format!("k{n}")))
            .collect::<Result<Vec<_>, _>>()?;
        // Notifications arrive in commit order: once B refuses the sentinel,
        // it has applied the creation of every key above, and none of them
        // can be evicted from its cache by anything but its revocation.
        let sentinel = create("sentinel")?;
        b.ask(Request::Warm(sentinel.key.expose_secret().to_owned()))?;
        a.rt.block_on(manager.revoke(&sentinel.info.id))?;
        b.ask(Request::Sync(sentinel.key.expose_secret().to_owned()))?;
        for key in &keys {
            a.warm(key.key.expose_secret())?;
            b.ask(Request::Warm(key.key.expose_secret().to_owned()))?;
        }

        for key in &keys {
            let secret = key.key.expose_secret();
            b.send(Request::Poll(secret.to_owned()))?;
            match b.recv()? {
                Reply::Polling => {}
                other => return Err(format!("B answered {other:?}").into()),
            }
            let start = now_ns();
            a.rt.block_on(manager.revoke(&key.info.id))?;
            let returned = now_ns();
            let refusal = match b.recv()? {
                Reply::Refused(r) => r,
                other => return Err(format!("B answered {other:?}").into()),
            };
            match a.rt.block_on(a.api.verify(secret)) {
                Err(AuthError::Revoked) => {}
                other => return Err(format!("A answers its own revoked key {other:?}").into()),
            }
            samples.push(Sample {
                latency_ns: refusal.at_ns - returned,
                revoke_ns: returned - start,
                refusing_call_ns: refusal.call_ns,
                stale: refusal.ok_starts.iter().filter(|&&s| s > returned).count(),
                bypassed: refusal.bypassed,
            });
        }
    }
    Ok(samples)
}

/// Drops `schema` and everything in it.
fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut conn = url.parse::<PgConnectOptions>()?.connect().await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    })
}

/// `/proc/loadavg`'s first three fields, or `?` elsewhere.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The nearest-rank `p`-th percentile of sorted `values`.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    // The rank is computed in per mille, exactly: 99.9 % of 1000 is 999.
    let per_mille = (p * 10.0).round() as usize;
    let rank = (per_mille * sorted.len()).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: i64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

fn summary(label: &str, values: &mut [i64]) {
    values.sort_unstable();
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    println!(
        "{label:<26} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}  min {}",
        ms(percentile(values, 50.0)),
        ms(percentile(values, 90.0)),
        ms(percentile(values, 99.0)),
        ms(percentile(values, 99.9)),
        ms(values[values.len() - 1]),
        ms(mean as i64),
        ms(values[0]),
    );
}

fn report(options: &Options, samples: &[Sample], before: &str, after: &str) {
    let n = samples.len();
    println!(
        "revocation latency, {} instances A and B on one PostgreSQL schema, default FollowConfig{}",
        if options.two_process {
            "two processes:"
        } else {
            "one process:"
        },
        if options.strict {
            ", strict revocation on A"
        } else {
            ""
        }
    );
    println!(
        "{n} revocations; B polls every {} µs; load average {before} before, {after} after",
        options.poll.as_micros()
    );
    let mut latency: Vec<i64> = samples.iter().map(|s| s.latency_ns).collect();
    let mut revoke: Vec<i64> = samples.iter().map(|s| s.revoke_ns).collect();
    let mut refusing: Vec<i64> = samples.iter().map(|s| s.refusing_call_ns).collect();
    // The refusing verify began within one poll of B's cache dropping the
    // key: this is the notification's share of the latency.
    let mut evicted: Vec<i64> = samples
        .iter()
        .map(|s| s.latency_ns - s.refusing_call_ns)
        .collect();
    summary("revoke returned -> refusal", &mut latency);
    summary("  -> refusing verify began", &mut evicted);
    summary("revoke call on A", &mut revoke);
    summary("refusing verify on B", &mut refusing);
    let early = samples.iter().filter(|s| s.latency_ns <= 0).count();
    let stale: Vec<usize> = samples.iter().map(|s| s.stale).collect();
    println!(
        "refused before revoke returned: {early} of {n}; over 50 ms: {}",
        samples.iter().filter(|s| s.latency_ns > 50_000_000).count()
    );
    println!(
        "successful verifies on B after revoke returned: {} in all, at most {} for one key, for {} of {n} keys",
        stale.iter().sum::<usize>(),
        stale.iter().max().copied().unwrap_or(0),
        stale.iter().filter(|&&s| s > 0).count()
    );
    println!(
        "refusals while B's cache was bypassed: {} of {n}",
        samples.iter().filter(|s| s.bypassed).count()
    );
}
