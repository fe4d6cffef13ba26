//! Runs one operation N times, for counting its instructions with
//! `valgrind --tool=callgrind`, which gives the same count on a loaded
//! machine as on an idle one (wall-clock benches do not).
//!
//! ```text
//! cargo build --release --features axum --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --toggle-collect='instructions::measured*' \
//!     target/release/examples/instructions verify 20000
//! ```
//!
//! The operations run inside `measured`, so with `--toggle-collect` only
//! they are counted, not the setup (10,000 keys on a memory store, MailJawn
//! profile): the total (`Collected`) divided by N is the cost of one
//! operation. Operations:
//!
//! - `verify`: a valid key; `unknown`: a well-formed key that is not
//!   stored; `bad_checksum`: a key whose last character was changed;
//! - `admit`: `ApiKeys::admit` for a verified principal (class `read`);
//! - `hmac`: one HMAC-SHA256 of a key (the floor of a keyed-hash verify);
//! - `create`: `create` on the memory store; `generate`: a key and its
//!   hash, no store; `pak_generate`: `prefixed-api-key`'s
//!   `generate_key_and_hash` (its OS random source is a system call,
//!   which callgrind does not count);
//! - `http_bare`, `http_keygate` (feature `axum`): one request through
//!   an axum router, bare and behind `ApiKeyLayer`, as `benches/http.rs`.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Poll, Waker};

use keygate::hash::Hasher;
use keygate::{profiles, AccountId, ApiKeys, CreateKey, Quota, TokenFormat};

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

/// A quota so large that nothing is refused.
fn huge_quota() -> Quota {
    Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero")).expect("quota")
}

/// 10,000 keys on a fresh memory store and the plaintext of one in the middle.
fn store() -> (ApiKeys, String) {
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    let keys = api.operator();
    let mut middle = String::new();
    for i in 0..10_000 {
        let request = CreateKey::new("bench")
            .bundle("sdk")
            .scopes(["subscribers:read"])
            .rate_limit("read", huge_quota());
        let key = ready(keys.create(&org, request)).expect("create");
        if i == 5_000 {
            middle = key.key.expose_secret().to_owned();
        }
    }
    (api, middle)
}

/// Runs `op` `n` times; the only function callgrind is told to count.
#[inline(never)]
fn measured(n: usize, mut op: impl FnMut()) {
    for _ in 0..n {
        op();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(op), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: instructions <operation> <count>");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("count");
    let (api, valid) = store();
    let org = AccountId::new("org_bench").expect("account");
    match op.as_str() {
        "verify" => {
            measured(n, || {
                black_box(ready(api.verify(black_box(&valid))).expect("valid"));
            });
        }
        "unknown" => {
            let unknown = api.profile().formats()[0].generate();
            measured(n, || {
                black_box(ready(api.verify(black_box(unknown.expose_secret()))).expect_err("x"));
            });
        }
        "bad_checksum" => {
            let mut bad = valid.clone().into_bytes();
            let last = bad.len() - 1;
            bad[last] = if bad[last] == b'a' { b'b' } else { b'a' };
            let bad = String::from_utf8(bad).expect("ascii");
            measured(n, || {
                black_box(ready(api.verify(black_box(&bad))).expect_err("malformed"));
            });
        }
        "admit" => {
            let principal = ready(api.verify(&valid)).expect("valid");
            let read = api.operation("read").expect("class");
            measured(n, || {
                black_box(ready(api.admit(black_box(principal.clone()), &read)).expect("admit"));
            });
        }
        "hmac" => {
            let hasher = Hasher::ephemeral();
            measured(n, || {
                black_box(hasher.hash(black_box(&valid)));
            });
        }
        "create" => {
            let keys = api.operator();
            measured(n, || {
                let request = CreateKey::new("bench").bundle("sdk");
                black_box(ready(keys.create(&org, request)).expect("create"));
            });
        }
        "generate" => {
            let hasher = Hasher::ephemeral();
            let format = TokenFormat::new("mj_").lookup_len(8);
            measured(n, || {
                let key = format.generate();
                black_box(hasher.hash(key.expose_secret()));
                black_box(key);
            });
        }
        "pak_generate" => {
            let controller = prefixed_api_key::PrefixedApiKeyController::<
                rand::rngs::OsRng,
                sha2::Sha256,
            >::configure()
            .prefix("mj".to_owned())
            .seam_defaults()
            .finalize()
            .expect("controller");
            measured(n, || {
                black_box(controller.generate_key_and_hash());
            });
        }
        #[cfg(feature = "axum")]
        "http_bare" | "http_keygate" => http::run(&api, &valid, op == "http_keygate", n),
        other => {
            eprintln!("unknown operation {other}");
            std::process::exit(2);
        }
    }
}

#[cfg(feature = "axum")]
mod http {
    use std::hint::black_box;

    use axum::body::Body;
    use axum::routing::get;
    use axum::{Json, Router};
    use http::Request;
    use keygate::layer::ApiKeyLayer;
    use keygate::ApiKeys;
    use tower::ServiceExt;

    async fn subscribers() -> Json<&'static [&'static str]> {
        Json(&[])
    }

    /// `n` requests through the router, bare or behind the layer.
    pub(super) fn run(api: &ApiKeys, key: &str, guarded: bool, n: usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let authorization = format!("Bearer {key}");
        let router = if guarded {
            let keys = ApiKeyLayer::new(api.clone())
                .require("subscribers:read")
                .expect("scope");
            Router::new()
                .route("/v1/subscribers", get(subscribers).route_layer(keys))
                .with_state(())
        } else {
            Router::new()
                .route("/v1/subscribers", get(subscribers))
                .with_state(())
        };
        super::measured(n, || {
            let request = Request::get("/v1/subscribers")
                .header("authorization", authorization.as_str())
                .body(Body::empty())
                .expect("request");
            let response = rt
                .block_on(router.clone().oneshot(request))
                .expect("infallible");
            assert_eq!(response.status(), 200);
            black_box(response);
        });
    }
}
