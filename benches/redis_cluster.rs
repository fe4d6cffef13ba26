//! `RedisRateLimiter` decisions on a Redis Cluster next to one Redis server:
//! one check at a time over 10,000 keys (spread over every master of the
//! cluster), then 64 checks in flight.
//!
//! The cluster is the one whose nodes `KEYGATE_BENCH_REDIS_CLUSTER` lists
//! (comma-separated URLs, e.g. `redis://127.0.0.1:7000/`), the single server
//! the one at `KEYGATE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/`).
//! A target that cannot be reached is skipped with a message saying why.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keygate::{Quota, RateLimiter, RedisRateLimiter};

const KEYS: usize = 10_000;
/// Checks in flight at once in the concurrent variant.
const IN_FLIGHT: u64 = 64;

async fn admitted(limiter: &RedisRateLimiter, key_id: &str, quota: &Quota) {
    let decision = limiter
        .check(key_id, "bench", quota)
        .await
        .expect("redis answers");
    assert!(decision.allowed, "the bench quota admits every check");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // A prefix of its own; buckets under this quota expire within a second
    // of their last check, so nothing is left behind.
    let prefix = format!("kgbench:{:016x}:", rand::random::<u64>());
    let builder = RedisRateLimiter::builder()
        .prefix(prefix)
        .timeout(Duration::from_secs(1));
    let single = std::env::var("KEYGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let mut targets = vec![(
        "single",
        rt.block_on(builder.clone().connect(single.as_str())),
    )];
    match std::env::var("KEYGATE_BENCH_REDIS_CLUSTER") {
        Ok(nodes) => targets.push((
            "cluster",
            rt.block_on(builder.connect_cluster(nodes.split(',').map(str::to_owned))),
        )),
        Err(_) => eprintln!("redis_cluster: cluster skipped, KEYGATE_BENCH_REDIS_CLUSTER is unset"),
    }
    // One token per nanosecond, a second's worth of burst: never denies.
    let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))
        .expect("valid quota")
        .with_burst(1_000_000_000)
        .expect("valid burst");
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("key_{i:05}")).collect());

    let mut group = c.benchmark_group("redis_cluster");
    group.throughput(Throughput::Elements(1));
    for (name, limiter) in targets {
        let limiter = match limiter {
            Ok(limiter) if limiter.is_connected() => limiter,
            Ok(_) => {
                eprintln!("redis_cluster: {name} skipped, unreachable");
                continue;
            }
            Err(e) => {
                eprintln!("redis_cluster: {name} skipped, {e}");
                continue;
            }
        };
        let mut i = 0;
        group.bench_function(format!("{name}_10k_keys"), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                admitted(&limiter, &keys[i], &quota)
            })
        });
        // One iteration is one check; IN_FLIGHT tasks share the iterations,
        // so the time per iteration is the inverse of the throughput.
        group.bench_function(format!("{name}_10k_keys_64_in_flight"), |b| {
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
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
