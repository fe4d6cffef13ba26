//! What the HTTP layer adds to a request: the same axum handler served bare
//! and behind `ApiKeyLayer` (MailJawn profile, a valid key with a read quota
//! so large nothing is denied), in process through `tower::ServiceExt::oneshot`.

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
    // router is; both routers get the same treatment.
    let bare = Router::new()
        .route("/v1/subscribers", get(subscribers))
        .with_state(());
    let keys = ApiKeyLayer::new(api.clone())
        .require("subscribers:read")
        .expect("scope");
    let guarded = Router::new()
        .route("/v1/subscribers", get(subscribers).route_layer(keys))
        .with_state(());

    // Both answer 200 before anything is measured.
    for router in [&bare, &guarded] {
        let response = rt
            .block_on(router.clone().oneshot(request(&authorization)))
            .expect("infallible");
        assert_eq!(response.status(), 200);
    }

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
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
