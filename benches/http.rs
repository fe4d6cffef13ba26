//! What the HTTP layer adds to a request: the same axum handler served bare
//! and behind `ApiKeyLayer` (MailJawn profile, a valid key with a read quota
//! so large nothing is denied), in process through `tower::ServiceExt::oneshot`;
//! and behind an `ApiKeyLayer` with a failure limit per client address
//! (`limit_failures`), on the same success path. The failure limit reads the
//! client address from a `SocketAddr` request extension (as a server with
//! connect info records it), so `keygate_peer` is the plain layer given the
//! same requests, with the extension: the figure to compare it with.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use axum::body::Body;
use axum::routing::get;
use axum::{Json, Router};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Request;
use keygate::layer::ApiKeyLayer;
use keygate::{profiles, AccountId, ApiKeys, CreateKey, Quota};
use tower::ServiceExt;

async fn subscribers() -> Json<&'static [&'static str]> {
    Json(&[])
}

fn request(authorization: &str) -> Request<Body> {
    Request::get("/v1/subscribers")
        .header("authorization", authorization)
        .body(Body::empty())
        .expect("request")
}

/// `request` from a client address, as a server with connect info sees it.
fn request_from_peer(authorization: &str) -> Request<Body> {
    let mut request = request(authorization);
    request
        .extensions_mut()
        .insert(SocketAddr::from(([192, 0, 2, 1], 40_000)));
    request
}

fn http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let api = ApiKeys::in_memory(profiles::mailjawn()).expect("profile");
    let org = AccountId::new("org_bench").expect("account");
    let key = rt
        .block_on(
            api.operator().create(
                &org,
                CreateKey::new("bench")
                    .bundle("sdk")
                    .scopes(["subscribers:read"])
                    .rate_limit(
                        "read",
                        Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))
                            .expect("quota"),
                    ),
            ),
        )
        .expect("create");
    let authorization = format!("Bearer {}", key.key.expose_secret());

    // `with_state` turns the handlers into services once, as a real app's
    // router is; all routers get the same treatment.
    let bare = Router::new()
        .route("/v1/subscribers", get(subscribers))
        .with_state(());
    let keys = ApiKeyLayer::new(api.clone())
        .require("subscribers:read")
        .expect("scope");
    let limited_keys =
        keys.limit_failures(Quota::per_minute(NonZeroU32::new(10).expect("non-zero")));
    let guarded = Router::new()
        .route("/v1/subscribers", get(subscribers).route_layer(keys))
        .with_state(());
    let limited = Router::new()
        .route(
            "/v1/subscribers",
            get(subscribers).route_layer(limited_keys.clone()),
        )
        .with_state(());

    // All answer 200 before anything is measured.
    for router in [&bare, &guarded, &limited] {
        let response = rt
            .block_on(router.clone().oneshot(request_from_peer(&authorization)))
            .expect("infallible");
        assert_eq!(response.status(), 200);
    }
    // The limited layer took (and gave back) a token for the client.
    assert_eq!(limited_keys.failure_limited_addresses(), Some(1));

    let mut group = c.benchmark_group("http");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let response = bare
                .clone()
                .oneshot(black_box(request(&authorization)))
                .await
                .expect("infallible");
            black_box(response)
        })
    });
    group.bench_function("keygate", |b| {
        b.to_async(&rt).iter(|| async {
            let response = guarded
                .clone()
                .oneshot(black_box(request(&authorization)))
                .await
                .expect("infallible");
            debug_assert_eq!(response.status(), 200);
            black_box(response)
        })
    });
    group.bench_function("keygate_peer", |b| {
        b.to_async(&rt).iter(|| async {
            let response = guarded
                .clone()
                .oneshot(black_box(request_from_peer(&authorization)))
                .await
                .expect("infallible");
            debug_assert_eq!(response.status(), 200);
            black_box(response)
        })
    });
    group.bench_function("keygate_failure_limit", |b| {
        b.to_async(&rt).iter(|| async {
            let response = limited
                .clone()
                .oneshot(black_box(request_from_peer(&authorization)))
                .await
                .expect("infallible");
            debug_assert_eq!(response.status(), 200);
            black_box(response)
        })
    });
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
