//! How long verify takes on the in-memory store: a valid key among 10,000, a
//! well-formed key that is not stored, a key with a bad checksum, and creation;
//! and `verify_for` on a key with usage credits beside one without.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate::{profiles, AccountId, ApiKeys, CreateKey, TokenFormat};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn verify(c: &mut Criterion) {
    let rt = runtime();
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    let keys: Vec<String> = rt.block_on(async {
        let mut keys = Vec::with_capacity(10_000);
        for i in 0..10_000 {
            let k = api
                .operator()
                .create(&org, CreateKey::new(format!("k{i}")).bundle("sdk"))
                .await
                .expect("create");
            keys.push(k.key.expose_secret().to_owned());
        }
        keys
    });
    let valid = keys[5_000].clone();
    let unknown = TokenFormat::new("mj_").lookup_len(8).generate();
    let unknown = unknown.expose_secret().to_owned();
    let mut malformed = valid.clone().into_bytes();
    let last = malformed.len() - 1;
    malformed[last] = if malformed[last] == b'a' { b'b' } else { b'a' };
    let malformed = String::from_utf8(malformed).expect("ascii");

    let mut group = c.benchmark_group("verify");
    group.bench_function("memory_valid", |b| {
        b.to_async(&rt)
            .iter(|| async { api.verify(black_box(&valid)).await.expect("valid") })
    });
    group.bench_function("memory_unknown", |b| {
        b.to_async(&rt)
            .iter(|| async { api.verify(black_box(&unknown)).await.expect_err("unknown") })
    });
    group.bench_function("reject_malformed", |b| {
        b.to_async(&rt).iter(|| async {
            api.verify(black_box(&malformed))
                .await
                .expect_err("malformed")
        })
    });
    let fresh = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    group.bench_function("create", |b| {
        b.to_async(&rt).iter(|| async {
            fresh
                .operator()
                .create(&org, CreateKey::new("bench").bundle("sdk"))
                .await
                .expect("create")
        })
    });
    group.finish();
}

/// `verify_for` with an operation that has no rate-limit class, so the only
/// difference between the two rows is spending a credit.
fn verify_for(c: &mut Criterion) {
    let rt = runtime();
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    let (plain, metered) = rt.block_on(async {
        let create = |request: CreateKey| async {
            let key = api.operator().create(&org, request).await.expect("create");
            key.key.expose_secret().to_owned()
        };
        (
            create(CreateKey::new("plain").bundle("sdk")).await,
            create(
                CreateKey::new("metered")
                    .bundle("sdk")
                    .credits(u64::MAX / 2),
            )
            .await,
        )
    });
    let op = keygate::Operation::unrestricted();
    let mut group = c.benchmark_group("verify_for");
    group.bench_function("no_credits", |b| {
        b.to_async(&rt)
            .iter(|| async { api.verify_for(black_box(&plain), &op).await.expect("ok") })
    });
    group.bench_function("credits", |b| {
        b.to_async(&rt)
            .iter(|| async { api.verify_for(black_box(&metered), &op).await.expect("ok") })
    });
    group.finish();
}

criterion_group!(benches, verify, verify_for);
criterion_main!(benches);
