//! How long a session token takes to check: `decode` (signature and claims,
//! no I/O) and `verify` (plus the user's epoch from the memory store), for
//! HS256 and EdDSA (Ed25519) tokens, and issuing one.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate::session::{SessionKey, Sessions};
use keygate::AccountId;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn sessions(c: &mut Criterion) {
    let rt = runtime();
    let account = AccountId::new("acct_bench").expect("account");
    let mut group = c.benchmark_group("sessions");
    for (name, key) in [
        ("hs256", SessionKey::generate_hs256("h1").expect("key")),
        ("eddsa", SessionKey::generate_ed25519("e1").expect("key")),
    ] {
        let sessions = Sessions::builder("https://api.example.com", "dashboard")
            .signing_key(key)
            .build()
            .expect("sessions");
        let token = rt
            .block_on(sessions.issue("usr_bench", &account))
            .expect("issue")
            .token;
        let token = token.expose_secret().to_owned();
        group.bench_function(format!("{name}_decode"), |b| {
            b.iter(|| sessions.decode(black_box(&token)).expect("valid"))
        });
        group.bench_function(format!("{name}_verify"), |b| {
            b.to_async(&rt)
                .iter(|| async { sessions.verify(black_box(&token)).await.expect("valid") })
        });
        group.bench_function(format!("{name}_issue"), |b| {
            b.to_async(&rt)
                .iter(|| async { sessions.issue("usr_bench", &account).await.expect("issue") })
        });
    }
    group.finish();
}

criterion_group!(benches, sessions);
criterion_main!(benches);
