//! Per-check cost of keygate's rate limiter next to governor's keyed limiter,
//! on the same workload: 10,000 keys checked round-robin under a quota high
//! enough that every check is admitted.
//!
//! `keygate_local` is a `LocalRateLimiter` on its own, through the
//! `RateLimiter` trait: like governor's keyed limiter, it finds each key's
//! state in a map of its own. `keygate_admit` is the whole step `ApiKeys`
//! takes for an already verified key with its default in-process limiter
//! (`ApiKeys::admit`: the operation's class, the key's quota for it, and the
//! check on the buckets kept beside the cached key record, with no map
//! lookup), so it costs more than the check alone.
//!
//! `lease/hit99` (feature `redis`) is a `LeasedRateLimiter` on the same
//! workload, at the same rate, through the same trait, with leases of 200
//! tokens lasting 10 s:
//! each key's lease is topped up by a round trip to real Redis once half of
//! it is spent, so one decision in 100 starts a refill (in the background)
//! and 99 in 100 are local hits. A check that finds its lease empty waits
//! for Redis, and is counted in the time. After the run it prints the round
//! trips and the slow checks it saw. `KEYGATE_BENCH_LEASE` and
//! `KEYGATE_BENCH_LEASE_TTL_SECS` change the lease size and lifetime (200
//! and 10 s); e.g. `KEYGATE_BENCH_LEASE=1000000
//! KEYGATE_BENCH_LEASE_TTL_SECS=60` takes no round trip after the warm-up,
//! which measures the local path alone.
//!
//! The `ratelimit_redis` group (feature `redis`) measures the shared
//! `RedisRateLimiter` on the Redis at `KEYGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`): one check at a time, then 64 in flight over
//! the one multiplexed connection. Without the feature or without a
//! reachable Redis the group is skipped with a message saying why.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use keygate::{
    profiles, AccountId, ApiKeys, CreateKey, LocalRateLimiter, Operation, Principal, Quota,
    RateLimiter, SystemClock,
};

const KEYS: usize = 10_000;
const PER_SECOND: NonZeroU32 = NonZeroU32::new(1_000_000).unwrap();

fn quota() -> Quota {
    Quota::per_second(PER_SECOND).expect("valid quota")
}

/// The output of a future that is ready at its first poll, as every check
/// of the in-process limiter is.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-process limiter never waits"),
    }
}

/// A service with the default limiter, `KEYS` verified keys whose `read`
/// quota is `quota()`, and the `read` operation.
fn service_setup() -> (ApiKeys, Vec<Principal>, Operation) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    let principals = rt.block_on(async {
        let mut principals = Vec::with_capacity(KEYS);
        for i in 0..KEYS {
            let key = api
                .operator()
                .create(
                    &org,
                    CreateKey::new(format!("bench {i}"))
                        .bundle("sdk")
                        .rate_limit("read", quota()),
                )
                .await
                .expect("create");
            principals.push(api.verify(key.key.expose_secret()).await.expect("verify"));
        }
        principals
    });
    let read = api.operation("read").expect("class");
    (api, principals, read)
}

fn admit_check(api: &ApiKeys, principal: &Principal, operation: &Operation) -> bool {
    ready(api.admit(black_box(principal.clone()), operation)).is_ok()
}

fn local_check(limiter: &LocalRateLimiter, key_id: &str, quota: &Quota) -> bool {
    ready(limiter.check(black_box(key_id), "read", quota))
        .expect("the local limiter decides")
        .allowed
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    let (api, principals, read) = service_setup();

    {
        let mut i = 0;
        group.bench_function("keygate_admit", |b| {
            b.iter(|| {
                let allowed = admit_check(&api, &principals[i], &read);
                i += 1;
                if i == KEYS {
                    i = 0;
                }
                black_box(allowed)
            })
        });
        assert!(principals.iter().all(|p| admit_check(&api, p, &read)));
    }

    {
        let limiter = LocalRateLimiter::new(Arc::new(SystemClock::new()));
        let quota = quota();
        let keys: Vec<String> = (0..KEYS).map(|i| format!("key_{i:05}")).collect();
        // Create every key's state up front, as governor's is below.
        assert!(keys.iter().all(|key| local_check(&limiter, key, &quota)));
        let mut i = 0;
        group.bench_function("keygate_local", |b| {
            b.iter(|| {
                let allowed = local_check(&limiter, &keys[i], &quota);
                i += 1;
                if i == KEYS {
                    i = 0;
                }
                black_box(allowed)
            })
        });
        assert!(keys.iter().all(|key| local_check(&limiter, key, &quota)));
    }

    {
        let limiter = governor::DefaultKeyedRateLimiter::<u64>::keyed(governor::Quota::per_second(
            PER_SECOND,
        ));
        let keys: Vec<u64> = (0..KEYS as u64).collect();
        // Create every key's state up front, as keygate's is above.
        for key in &keys {
            assert!(limiter.check_key(key).is_ok());
        }
        let mut i = 0;
        group.bench_function("governor", |b| {
            b.iter(|| {
                let allowed = limiter.check_key(black_box(&keys[i])).is_ok();
                i += 1;
                if i == KEYS {
                    i = 0;
                }
                black_box(allowed)
            })
        });
        assert!(keys.iter().all(|key| limiter.check_key(key).is_ok()));
    }

    {
        // Two threads walk the same keys in step; one iteration is one check
        // on each thread, so the time per iteration is the per-check latency
        // under contention.
        group.bench_function("keygate_admit_contended_2_threads", |b| {
            b.iter_custom(|iters| {
                let barrier = Barrier::new(3);
                std::thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(|| {
                            barrier.wait();
                            let mut i = 0;
                            let mut admitted = 0u64;
                            for _ in 0..iters {
                                admitted += u64::from(admit_check(&api, &principals[i], &read));
                                i += 1;
                                if i == KEYS {
                                    i = 0;
                                }
                            }
                            assert_eq!(admitted, iters);
                        });
                    }
                    barrier.wait();
                    let start = Instant::now();
                    // Leaving the scope joins both threads.
                    start
                })
                .elapsed()
            })
        });
    }

    group.finish();
}

fn bench_redis(c: &mut Criterion) {
    #[cfg(feature = "redis")]
    {
        redis_group::bench_lease(c);
        redis_group::bench(c);
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = c;
        eprintln!("ratelimit_redis: skipped, built without the `redis` feature");
    }
}

#[cfg(feature = "redis")]
mod redis_group {
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use std::future::Future;
    use std::hint::black_box;
    use std::task::{Context, Poll, Waker};

    use criterion::{Criterion, Throughput};
    use keygate::{LeasedRateLimiter, Quota, RateLimiter, RedisRateLimiter};

    use super::KEYS;

    /// Checks in flight at once in the concurrent variant.
    const IN_FLIGHT: u64 = 64;

    async fn admitted(limiter: &RedisRateLimiter, key_id: &str, quota: &Quota) {
        let decision = limiter
            .check(key_id, "bench", quota)
            .await
            .expect("redis answers");
        assert!(decision.allowed, "the bench quota admits every check");
    }

    /// The number in the environment variable `name`, or `default`.
    fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// `lease/hit99`: see the file's documentation.
    pub fn bench_lease(c: &mut Criterion) {
        let url = std::env::var("KEYGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let prefix = format!("kgbench:{:016x}:", rand::random::<u64>());
        let redis = match rt.block_on(
            RedisRateLimiter::builder()
                .prefix(prefix)
                .timeout(Duration::from_secs(1))
                .connect(url.as_str()),
        ) {
            Ok(limiter) if limiter.is_connected() => limiter,
            Ok(_) => {
                eprintln!("lease: skipped, redis at {url} is unreachable");
                return;
            }
            Err(e) => {
                eprintln!("lease: skipped, {e}");
                return;
            }
        };
        // Leases of 200, topped up at 100 left: a round trip per 100
        // decisions. Each of the 10,000 keys comes round only some hundred
        // times a second here, so a lease lapsing after the default second
        // would often lapse before half of it is spent; they last 10 s. A
        // lease never outlives its quota's period, so the quota is
        // `quota()`'s rate (one token per microsecond, never denying) over a
        // minute instead of a second.
        let limiter = LeasedRateLimiter::builder(redis)
            .lease_size(NonZeroU32::new(env_or("KEYGATE_BENCH_LEASE", 200)).expect("non-zero"))
            .ttl(Duration::from_secs(env_or(
                "KEYGATE_BENCH_LEASE_TTL_SECS",
                10,
            )))
            .build();
        let quota = Quota::per_minute(NonZeroU32::new(60_000_000).expect("non-zero"));
        assert_eq!(
            quota.emission_interval(),
            super::quota().emission_interval()
        );
        let keys: Vec<String> = (0..KEYS).map(|i| format!("key_{i:05}")).collect();
        // Checks are polled on this thread, in the runtime's context (a check
        // that goes to Redis sets its timeout there).
        let _context = rt.enter();
        let slow = std::cell::Cell::new(0u64);
        let decisions = std::cell::Cell::new(0u64);
        let check = |key: &str| -> bool {
            decisions.set(decisions.get() + 1);
            let mut future = std::pin::pin!(limiter.check(black_box(key), "read", &quota));
            let decision = match future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(decision) => decision,
                Poll::Pending => {
                    slow.set(slow.get() + 1);
                    rt.block_on(future)
                }
            };
            decision.expect("redis answers").allowed
        };
        // Every key's first lease, up front.
        rt.block_on(async {
            let tasks: Vec<_> = keys
                .chunks(KEYS / 64)
                .map(|chunk| {
                    let (limiter, chunk) = (limiter.clone(), chunk.to_vec());
                    tokio::spawn(async move {
                        for key in &chunk {
                            let d = limiter.check(key, "read", &quota).await;
                            assert!(d.expect("redis answers").allowed);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("warm-up task");
            }
        });
        let warm_trips = limiter.round_trips();
        let mut i = 0;
        c.benchmark_group("lease").bench_function("hit99", |b| {
            b.iter(|| {
                let allowed = check(&keys[i]);
                i += 1;
                if i == KEYS {
                    i = 0;
                }
                black_box(allowed)
            })
        });
        let decisions = decisions.get();
        let trips = limiter.round_trips() - warm_trips;
        eprintln!(
            "lease/hit99: {decisions} decisions, {trips} lease round trips ({:.2}% local), \
             {} checks waited for redis ({:.4}%)",
            100.0 - 100.0 * trips as f64 / decisions as f64,
            slow.get(),
            100.0 * slow.get() as f64 / decisions as f64,
        );
    }

    pub fn bench(c: &mut Criterion) {
        let url = std::env::var("KEYGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        // A prefix of its own; buckets under this quota expire within a
        // second of their last check, so nothing is left behind.
        let prefix = format!("kgbench:{:016x}:", rand::random::<u64>());
        let limiter = match rt.block_on(
            RedisRateLimiter::builder()
                .prefix(prefix)
                .timeout(Duration::from_secs(1))
                .connect(url.as_str()),
        ) {
            Ok(limiter) if limiter.is_connected() => limiter,
            Ok(_) => {
                eprintln!("ratelimit_redis: skipped, redis at {url} is unreachable");
                return;
            }
            Err(e) => {
                eprintln!("ratelimit_redis: skipped, {e}");
                return;
            }
        };
        // One token per nanosecond, a second's worth of burst: never denies.
        let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))
            .expect("valid quota")
            .with_burst(1_000_000_000)
            .expect("valid burst");
        let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("key_{i:05}")).collect());

        let mut group = c.benchmark_group("ratelimit_redis");
        group.throughput(Throughput::Elements(1));

        group.bench_function("keygate_redis_one_key", |b| {
            b.to_async(&rt)
                .iter(|| admitted(&limiter, &keys[0], &quota))
        });

        let mut i = 0;
        group.bench_function("keygate_redis_10k_keys", |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                admitted(&limiter, &keys[i], &quota)
            })
        });

        // One iteration is one check; IN_FLIGHT tasks share the iterations
        // and the connection, so the time per iteration is the inverse of
        // the pipelined throughput.
        group.bench_function("keygate_redis_10k_keys_64_in_flight", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let limiter = limiter.clone();
                let keys = Arc::clone(&keys);
                async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..IN_FLIGHT)
                        .map(|t| {
                            let limiter = limiter.clone();
                            let keys = Arc::clone(&keys);
                            let n = iters / IN_FLIGHT + u64::from(t < iters % IN_FLIGHT);
                            tokio::spawn(async move {
                                for j in 0..n {
                                    let key = &keys[((t + j * IN_FLIGHT) as usize) % KEYS];
                                    admitted(&limiter, key, &quota).await;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("bench task");
                    }
                    start.elapsed()
                }
            })
        });

        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench, bench_redis
}
criterion_main!(benches);
