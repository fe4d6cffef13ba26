//! Per-check cost of keygate's rate limiter next to governor's keyed limiter,
//! on the same workload: 10,000 keys checked round-robin under a quota high
//! enough that every check is admitted.
//!
//! The `ratelimit_redis` group (feature `redis`) measures the shared
//! `RedisRateLimiter` on the Redis at `KEYGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`): one check at a time, then 64 in flight over
//! the one multiplexed connection. Without the feature or without a
//! reachable Redis the group is skipped with a message saying why.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use keygate::{KeyBuckets, LocalRateLimiter, Quota, SystemClock};

const KEYS: usize = 10_000;
const PER_SECOND: u32 = 1_000_000;

fn keygate_setup() -> (LocalRateLimiter, Vec<KeyBuckets>, Quota) {
    let limiter = LocalRateLimiter::new(Arc::new(SystemClock::new()));
    // One slot per key, held beside the key records as the service does.
    let slots: Vec<KeyBuckets> = (0..KEYS).map(|_| KeyBuckets::new(1)).collect();
    let quota = Quota::per_second(PER_SECOND).expect("valid quota");
    (limiter, slots, quota)
}

fn keygate_check(limiter: &LocalRateLimiter, slot: &KeyBuckets, quota: &Quota) -> bool {
    limiter
        .check_now(black_box(slot), 0, quota)
        .expect("class 0 exists")
        .allowed
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");

    {
        let (limiter, slots, quota) = keygate_setup();
        let mut i = 0;
        group.bench_function("keygate", |b| {
            b.iter(|| {
                let allowed = keygate_check(&limiter, &slots[i], &quota);
                i += 1;
                if i == KEYS {
                    i = 0;
                }
                black_box(allowed)
            })
        });
        assert!(slots
            .iter()
            .all(|slot| keygate_check(&limiter, slot, &quota)));
    }

    {
        let per_second = NonZeroU32::new(PER_SECOND).expect("non-zero");
        let limiter = governor::DefaultKeyedRateLimiter::<u64>::keyed(governor::Quota::per_second(
            per_second,
        ));
        let keys: Vec<u64> = (0..KEYS as u64).collect();
        // Create every key's state up front, as keygate's slots are.
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
        let (limiter, slots, quota) = keygate_setup();
        group.bench_function("keygate_contended_2_threads", |b| {
            b.iter_custom(|iters| {
                let barrier = Barrier::new(3);
                std::thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(|| {
                            barrier.wait();
                            let mut i = 0;
                            let mut admitted = 0u64;
                            for _ in 0..iters {
                                admitted += u64::from(keygate_check(&limiter, &slots[i], &quota));
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
    redis_group::bench(c);
    #[cfg(not(feature = "redis"))]
    {
        let _ = c;
        eprintln!("ratelimit_redis: skipped, built without the `redis` feature");
    }
}

#[cfg(feature = "redis")]
mod redis_group {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use criterion::{Criterion, Throughput};
    use keygate::{KeyBuckets, Quota, RateLimiter, RedisRateLimiter};

    use super::KEYS;

    /// Checks in flight at once in the concurrent variant.
    const IN_FLIGHT: u64 = 64;

    async fn admitted(limiter: &RedisRateLimiter, key_id: &str, slot: &KeyBuckets, quota: &Quota) {
        let decision = limiter
            .check(key_id, slot, 0, "bench", quota)
            .await
            .expect("redis answers");
        assert!(decision.allowed, "the bench quota admits every check");
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
        let quota = Quota::per_second(1_000_000_000)
            .expect("valid quota")
            .with_burst(1_000_000_000)
            .expect("valid burst");
        let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("key_{i:05}")).collect());
        let slot = KeyBuckets::new(1);

        let mut group = c.benchmark_group("ratelimit_redis");
        group.throughput(Throughput::Elements(1));

        group.bench_function("keygate_redis_one_key", |b| {
            b.to_async(&rt)
                .iter(|| admitted(&limiter, &keys[0], &slot, &quota))
        });

        let mut i = 0;
        group.bench_function("keygate_redis_10k_keys", |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                admitted(&limiter, &keys[i], &slot, &quota)
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
                                let slot = KeyBuckets::new(1);
                                for j in 0..n {
                                    let key = &keys[((t + j * IN_FLIGHT) as usize) % KEYS];
                                    admitted(&limiter, key, &slot, &quota).await;
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
