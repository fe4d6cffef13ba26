//! keygate next to its peers, in one run, so every ratio the README and
//! BENCHMARKS.md quote is one command: `cargo bench --bench peers`.
//!
//! - `peers_verify/{keygate,prefixed_api_key}/N`: verify a valid key among N
//!   stored keys (1k, 10k, 100k, 1M). keygate: the MailJawn profile on the
//!   memory store (parse, checksum, map probe, HMAC-SHA256, constant-time
//!   compare, revocation and expiry, last-used stamp, scopes). The peer
//!   crate `prefixed-api-key` (its recommended setup): parse, a `HashMap`
//!   probe by its short token, SHA-256 of the long token and a
//!   constant-time compare. `peers_verify/hmac_floor` is one HMAC-SHA256 of
//!   a key from the cloned keyed state: the least a keyed-hash verify costs.
//! - `peers_reject`: a key with a bad checksum, and a well-formed key that is
//!   not stored (10k keys stored).
//! - `peers_limiter`: one rate-limit decision with the bucket in hand.
//!   `keygate_bucket`: a `ratelimit::Bucket` checked at `SystemClock`'s
//!   monotonic time, like `governor_direct`, a direct limiter's `check()`
//!   (one clock read and one GCRA step each). `keygate_admit` is the whole
//!   step `ApiKeys::admit` takes for a verified principal (the class's
//!   quota, the bucket kept beside the key record, the decision on the
//!   principal).
//! - `peers_create`: keygate's `create` on the memory store (a record with
//!   its id, name and grant, inserted into a store that grows with every
//!   iteration, and an audit event), and `keygate_generate`, a key and its
//!   HMAC-SHA256 with no store, against the peer's `generate_key_and_hash`
//!   (a key from the OS random source and its SHA-256, no store).
//!
//! `KEYGATE_BENCH_MAX_KEYS` (default 1000000) caps the largest store.

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use keygate::hash::Hasher;
use keygate::ratelimit::Bucket;
use keygate::{profiles, AccountId, ApiKeys, Clock, CreateKey, Quota, SystemClock, TokenFormat};
use prefixed_api_key::{PrefixedApiKey, PrefixedApiKeyController};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// The output of a future that is ready at its first poll, as every call
/// on the memory store is.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the memory store never waits"),
    }
}

fn max_keys() -> usize {
    std::env::var("KEYGATE_BENCH_MAX_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// `n` keys on a fresh memory store and the plaintext of one in the middle.
fn keygate_store(n: usize) -> (ApiKeys, String) {
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    let keys = api.operator();
    let mut middle = String::new();
    for i in 0..n {
        let key = ready(keys.create(&org, CreateKey::new("bench").bundle("sdk"))).expect("create");
        if i == n / 2 {
            middle = key.key.expose_secret().to_owned();
        }
    }
    (api, middle)
}

type Pak = PrefixedApiKeyController<rand::rngs::OsRng, sha2::Sha256>;

fn pak_controller() -> Pak {
    PrefixedApiKeyController::configure()
        .prefix("mj".to_owned())
        .seam_defaults()
        .finalize()
        .expect("controller")
}

/// The peer's verify: parse, probe the map by short token, hash and compare.
fn pak_verify(controller: &Pak, store: &HashMap<String, String>, presented: &str) -> bool {
    let Ok(key) = PrefixedApiKey::from_string(presented) else {
        return false;
    };
    store
        .get(key.short_token())
        .is_some_and(|hash| controller.check_hash(&key, hash))
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers_verify");
    let hasher = Hasher::ephemeral();
    let sample = TokenFormat::new("mj_").lookup_len(8).generate();
    let sample = sample.expose_secret().to_owned();
    group.bench_function("hmac_floor", |b| b.iter(|| hasher.hash(black_box(&sample))));
    let controller = pak_controller();
    for n in SIZES.into_iter().filter(|&n| n <= max_keys()) {
        {
            let (api, key) = keygate_store(n);
            assert!(ready(api.verify(&key)).is_ok());
            group.bench_with_input(BenchmarkId::new("keygate", n), &key, |b, key| {
                b.iter(|| ready(api.verify(black_box(key))).expect("valid"))
            });
        }
        {
            let mut store = HashMap::with_capacity(n);
            let mut middle = String::new();
            for i in 0..n {
                let (key, hash) = controller.generate_key_and_hash();
                if i == n / 2 {
                    middle = key.to_string();
                }
                store.insert(key.short_token().to_owned(), hash);
            }
            assert!(pak_verify(&controller, &store, &middle));
            group.bench_with_input(
                BenchmarkId::new("prefixed_api_key", n),
                &middle,
                |b, key| b.iter(|| pak_verify(&controller, &store, black_box(key))),
            );
        }
    }
    group.finish();
}

fn reject(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers_reject");
    let (api, valid) = keygate_store(10_000);
    let mut malformed = valid.clone().into_bytes();
    let last = malformed.len() - 1;
    malformed[last] = if malformed[last] == b'a' { b'b' } else { b'a' };
    let malformed = String::from_utf8(malformed).expect("ascii");
    let unknown = api.profile().formats()[0].generate();
    let unknown = unknown.expose_secret().to_owned();
    group.bench_function("keygate_bad_checksum", |b| {
        b.iter(|| ready(api.verify(black_box(&malformed))).expect_err("malformed"))
    });
    group.bench_function("keygate_unknown", |b| {
        b.iter(|| ready(api.verify(black_box(&unknown))).expect_err("unknown"))
    });
    group.finish();
}

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers_limiter");
    let per_second = NonZeroU32::new(1_000_000_000).expect("non-zero");
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    let quota = Quota::per_second(per_second).expect("quota");
    let key = ready(
        api.operator().create(
            &org,
            CreateKey::new("bench")
                .bundle("sdk")
                .rate_limit("read", quota),
        ),
    )
    .expect("create");
    let principal = ready(api.verify(key.key.expose_secret())).expect("verify");
    let read = api.operation("read").expect("class");
    group.bench_function("keygate_admit", |b| {
        b.iter(|| ready(api.admit(black_box(principal.clone()), &read)).is_ok())
    });
    let clock = SystemClock::new();
    let bucket = Bucket::new();
    group.bench_function("keygate_bucket", |b| {
        b.iter(|| {
            black_box(&bucket)
                .check(&quota, clock.monotonic_nanos())
                .allowed
        })
    });
    let direct = governor::RateLimiter::direct(governor::Quota::per_second(per_second));
    group.bench_function("governor_direct", |b| {
        b.iter(|| black_box(&direct).check().is_ok())
    });
    group.finish();
}

fn create(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers_create");
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    group.bench_function("keygate", |b| {
        b.iter(|| {
            ready(
                api.operator()
                    .create(&org, CreateKey::new("bench").bundle("sdk")),
            )
            .expect("create")
        })
    });
    // Like for like with the peer, which keeps no store: a key from the
    // profile's format and its keyed hash, nothing inserted.
    let format = api.profile().formats()[0].clone();
    let hasher = Hasher::ephemeral();
    group.bench_function("keygate_generate", |b| {
        b.iter(|| {
            let key = format.generate();
            let hash = hasher.hash(key.expose_secret());
            (key, hash)
        })
    });
    let controller = pak_controller();
    group.bench_function("prefixed_api_key", |b| {
        b.iter(|| controller.generate_key_and_hash())
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = verify, reject, limiter, create
}
criterion_main!(benches);
