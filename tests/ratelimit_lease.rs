//! `LeasedRateLimiter` against a real Redis: four instances sharing one
//! quota stay within `limit + 4 × L` and reach the limit when demand is
//! even; a lapsed lease is not spent and leaves the budget to others once
//! the bucket refills; with Redis down, leased tokens are spent and then the
//! failure policy applies.
//!
//! Redis is found at `KEYGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`); the failure test starts a `redis-server` of
//! its own on a free port. Without them the tests show as ignored with the
//! reason, unless `KEYGATE_REQUIRE_SERVICES=1` makes them fail. Every test
//! works under a random key prefix of its own.

#[path = "support/mod.rs"]
mod support;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::{LeasedRateLimiter, ManualClock, Quota, RateLimiter, RedisFailure, RedisRateLimiter};
use support::{RedisServer, TestRedis};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Four leased instances on one Redis, each with four tasks, all asking for
/// one key; no token refills while the test runs (a day's quota).
async fn four_instances_admit_the_limit_and_at_most_4_l_more() {
    const LIMIT: u32 = 200;
    const L: u32 = 8;
    const INSTANCES: u32 = 4;
    const TASKS: u32 = 4;
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let quota = Quota::new(LIMIT, Duration::from_secs(86_400)).unwrap();
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(
            LeasedRateLimiter::builder(redis.limiter().await)
                .lease_size(nz(L))
                .build(),
        );
    }
    let admitted = Arc::new(AtomicU32::new(0));
    let per_instance: Arc<Vec<AtomicU32>> =
        Arc::new((0..INSTANCES).map(|_| AtomicU32::new(0)).collect());
    let mut tasks = Vec::new();
    // Even demand: every instance asks for the whole limit, four times the
    // quota in all.
    for (i, limiter) in instances.iter().enumerate() {
        for _ in 0..TASKS {
            let limiter = limiter.clone();
            let admitted = Arc::clone(&admitted);
            let per_instance = Arc::clone(&per_instance);
            tasks.push(tokio::spawn(async move {
                for _ in 0..LIMIT / TASKS {
                    let decision = limiter.check("key_even", "send", &quota).await.unwrap();
                    if decision.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        per_instance[i].fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert!(decision.retry_after.is_some());
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed);
    let shares: Vec<u32> = per_instance
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    assert!(
        admitted >= LIMIT,
        "even demand must reach the limit: {admitted} ({shares:?})"
    );
    assert!(
        admitted <= LIMIT + INSTANCES * L,
        "beyond limit + 4 L: {admitted} ({shares:?})"
    );
    // Nothing refilled, so the shared bucket admitted exactly its burst.
    assert_eq!(admitted, LIMIT, "{shares:?}");
    // Most decisions took no round trip. (How the limit splits between the
    // instances is up to the scheduler: on a loaded machine one instance's
    // tasks can find the bucket already spent.)
    let round_trips: u64 = instances.iter().map(LeasedRateLimiter::round_trips).sum();
    let decisions = u64::from(INSTANCES * LIMIT);
    assert!(
        round_trips * 4 <= decisions,
        "{round_trips} round trips for {decisions} decisions"
    );
    // A plain Redis limiter on the same buckets finds them spent.
    let plain = redis.limiter().await;
    assert!(
        !plain
            .check("key_even", "send", &quota)
            .await
            .unwrap()
            .allowed
    );
    redis.cleanup().await;
}

/// Four leased instances under steady demand while the bucket refills:
/// in every window of one period, admissions stay within what the bucket
/// allows in it (`burst + period / interval`) plus `4 × L`.
///
/// Admissions are timed here, decisions on the Redis server's clock; the
/// two differ by a round trip at most, which could move one or two more
/// tokens into a window at this rate, hence the slack of 2.
async fn with_refills_every_window_stays_within_4_l_of_the_quota() {
    const L: u32 = 5;
    const SLACK: usize = 2;
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    // 40 per second, a burst of 40: a token every 25 ms.
    let quota = Quota::per_second(nz(40)).unwrap();
    let period = Duration::from_secs(1);
    let run = Duration::from_millis(2_500);
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(
            LeasedRateLimiter::builder(redis.limiter().await)
                .lease_size(nz(L))
                .build(),
        );
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for limiter in &instances {
        for _ in 0..2 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = Vec::new();
                while started.elapsed() < run {
                    let d = limiter.check("key_steady", "send", &quota).await.unwrap();
                    if d.allowed {
                        admitted.push(started.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                admitted
            }));
        }
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.unwrap());
    }
    times.sort();
    let allowed_in_window = 40 + 40 + 4 * L as usize + SLACK;
    let mut busiest = 0;
    for (i, &t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|&&u| u < t + period).count();
        busiest = busiest.max(in_window);
    }
    eprintln!(
        "steady demand: {} admitted in {run:?}, at most {busiest} within one period",
        times.len()
    );
    assert!(
        busiest <= allowed_in_window,
        "{busiest} admitted within one period, bound {allowed_in_window}"
    );
    // Demand never stopped, so the bucket was drained all along: at least
    // its burst and the tokens it refilled, less what the instances still
    // held at the end and the refills of the last round trips.
    let total = times.len();
    assert!(
        total >= 40 + 2 * 40 - 4 * L as usize,
        "only {total} admitted in {run:?} of steady demand"
    );
    assert!(
        total <= 40 + 100 + 4 * L as usize + SLACK,
        "{total} admitted"
    );
    redis.cleanup().await;
}

/// Instance A leases a whole bucket and goes idle. Within its TTL it still
/// admits from the lease; after it, the stale tokens are refused. Once the
/// bucket has refilled, another instance gets the whole budget.
async fn a_lapsed_lease_is_not_spent_and_the_budget_comes_back() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    // Five per five seconds: one token a second, a burst of five.
    let quota = Quota::new(5, Duration::from_secs(5)).unwrap();
    let clock = ManualClock::new();
    let a = LeasedRateLimiter::builder(redis.limiter().await)
        .lease_size(nz(5))
        .ttl(Duration::from_millis(200))
        .clock(clock.clone())
        .build();
    let b = redis.limiter().await;
    let leased_at = Instant::now();
    let first = a.check("key_idle", "send", &quota).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.remaining, 4, "the lease took the whole bucket");
    assert!(!b.check("key_idle", "send", &quota).await.unwrap().allowed);
    // Within the TTL, A admits from its lease without a round trip.
    let second = a.check("key_idle", "send", &quota).await.unwrap();
    assert!(second.allowed);
    assert_eq!(second.remaining, 3);
    assert_eq!(a.round_trips(), 1);
    // Past the TTL, the three tokens left are no longer spent: A asks
    // Redis, which has nothing yet (its next token is a second away).
    clock.advance(Duration::from_millis(200));
    let stale = a.check("key_idle", "send", &quota).await.unwrap();
    assert!(
        leased_at.elapsed() < Duration::from_secs(1),
        "too slow to tell a lapsed lease from a refill: {:?}",
        leased_at.elapsed()
    );
    assert!(!stale.allowed, "a lapsed lease was spent: {stale:?}");
    assert_eq!(a.round_trips(), 2);
    // Once the bucket has refilled, the budget is whole again for the
    // others: A's lapsed tokens hold none of it.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(leased_at.elapsed())).await;
    let refilled_at = Instant::now();
    for i in 0..5 {
        let d = b.check("key_idle", "send", &quota).await.unwrap();
        assert!(d.allowed, "request {i} after the window: {d:?}");
    }
    assert!(!b.check("key_idle", "send", &quota).await.unwrap().allowed);
    clock.advance(Duration::from_secs(5));
    assert!(!a.check("key_idle", "send", &quota).await.unwrap().allowed);
    assert!(
        refilled_at.elapsed() < Duration::from_secs(1),
        "too slow to rule out a refill: {:?}",
        refilled_at.elapsed()
    );
    redis.cleanup().await;
}

/// A lease takes at once what single requests at one instant would be
/// admitted, from the bucket a plain `RedisRateLimiter` draws on: random
/// bursts, tokens already taken and lease sizes, with no refill meanwhile.
async fn a_lease_takes_what_single_checks_would_admit() {
    use rand::{Rng, SeedableRng};
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let plain = redis.limiter().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for case in 0..40 {
        let burst = rng.gen_range(1..=40u32);
        // At least a minute between tokens: nothing refills meanwhile.
        let quota = Quota::per_hour(nz(rng.gen_range(1..=60)))
            .with_burst(burst)
            .unwrap();
        let before = rng.gen_range(0..=burst + 2);
        let lease = rng.gen_range(1..=50u32);
        let key = format!("case{case}");
        for _ in 0..before {
            let _ = plain.check(&key, "c", &quota).await.unwrap();
        }
        let limiter = LeasedRateLimiter::builder(redis.limiter().await)
            .lease_size(nz(lease))
            .build();
        let d = limiter.check(&key, "c", &quota).await.unwrap();
        let available = burst.saturating_sub(before);
        let taken = lease.min(available);
        assert_eq!(d.allowed, taken > 0, "case {case}: {d:?}");
        if taken > 0 {
            assert_eq!(d.remaining, taken - 1, "case {case}");
        } else {
            assert!(
                d.retry_after.unwrap() > Duration::from_secs(50),
                "case {case}: {d:?}"
            );
        }
        // The plain limiter admits exactly what the lease left.
        for i in 0..available - taken {
            let d = plain.check(&key, "c", &quota).await.unwrap();
            assert!(d.allowed, "case {case}, request {i} after the lease");
        }
        assert!(
            !plain.check(&key, "c", &quota).await.unwrap().allowed,
            "case {case}"
        );
    }
    redis.cleanup().await;
}

/// A zero TTL takes one token per check, wasting none.
async fn a_zero_ttl_takes_one_token_per_check() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let quota = Quota::per_hour(nz(10));
    let limiter = LeasedRateLimiter::builder(redis.limiter().await)
        .lease_size(nz(8))
        .ttl(Duration::ZERO)
        .build();
    for _ in 0..3 {
        let d = limiter.check("key_zero", "send", &quota).await.unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 0));
    }
    assert_eq!(limiter.round_trips(), 3);
    // Seven of the ten are left for a plain limiter.
    let plain = redis.limiter().await;
    for i in 0..7 {
        assert!(
            plain
                .check("key_zero", "send", &quota)
                .await
                .unwrap()
                .allowed,
            "{i}"
        );
    }
    assert!(
        !plain
            .check("key_zero", "send", &quota)
            .await
            .unwrap()
            .allowed
    );
    redis.cleanup().await;
}

/// With Redis down, each instance spends the tokens it leased, then
/// follows the wrapped limiter's policy: fail closed, or decide locally.
/// Once Redis is back, leases are taken again.
async fn with_redis_down_leased_tokens_are_spent_then_the_policy_applies() {
    let Some(mut server) = RedisServer::start() else {
        support::skip_or_fail("redis", "redis-server is not installed");
        return;
    };
    let quota = Quota::per_hour(nz(100));
    let leased = |policy: RedisFailure| {
        let url = server.url();
        async move {
            let redis = RedisRateLimiter::builder()
                .prefix(format!("kgtest:{:016x}:", rand::random::<u64>()))
                .timeout(Duration::from_millis(500))
                .on_failure(policy)
                .connect(url)
                .await
                .unwrap();
            assert!(redis.is_connected());
            LeasedRateLimiter::builder(redis)
                .lease_size(nz(4))
                .ttl(Duration::from_secs(60))
                .build()
        }
    };
    let closed = leased(RedisFailure::FailClosed).await;
    let open = leased(RedisFailure::FallBackToLocal).await;
    for limiter in [&closed, &open] {
        let d = limiter.check("key_down", "send", &quota).await.unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 3));
    }
    server.stop();

    // The three leased tokens are still admitted...
    for limiter in [&closed, &open] {
        for left in [2, 1, 0] {
            let d = limiter.check("key_down", "send", &quota).await.unwrap();
            assert_eq!((d.allowed, d.remaining), (true, left));
        }
    }
    // ...then fail closed is unavailable, never admitted,
    let err = closed.check("key_down", "send", &quota).await.unwrap_err();
    assert!(err.reason().contains("redis"), "{err}");
    assert!(closed.check("key_down", "send", &quota).await.is_err());
    // and the fallback decides on a local bucket of its own (a fresh one:
    // 99 of 100 left).
    let d = open.check("key_down", "send", &quota).await.unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 99));

    server.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match closed.check("key_down", "send", &quota).await {
            Ok(d) => {
                // A new lease from the restarted Redis: one token for
                // this request, three left in the lease.
                assert!(d.allowed, "{d:?}");
                assert_eq!(d.remaining, 3);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("redis back, still unavailable: {e}"),
        }
    }
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let trials = trials![
        tokio(Rt::CURRENT) a_lease_takes_what_single_checks_would_admit,
        tokio(Rt::CURRENT) a_zero_ttl_takes_one_token_per_check,
        tokio(Rt::multi(2)) four_instances_admit_the_limit_and_at_most_4_l_more,
        tokio(Rt::multi(2)) with_refills_every_window_stays_within_4_l_of_the_quota,
        tokio(Rt::CURRENT) a_lapsed_lease_is_not_spent_and_the_budget_comes_back,
        tokio(Rt::CURRENT) with_redis_down_leased_tokens_are_spent_then_the_policy_applies,
    ];
    support::harness::run(trials)
}
