//! Per-check cost of keygate's rate limiter next to governor's keyed limiter,
//! on the same workload: 10,000 keys checked round-robin under a quota high
//! enough that every check is admitted.

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

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
