//! `ApiKeyLayer` and `HttpsOnlyLayer` on a plain tower service, with no axum:
//! the inner service's body type (`String` here) carries the JSON errors, and
//! the inner response is passed through with its `RateLimit-*` headers. This
//! file builds with `--no-default-features --features tower`.
#![cfg(feature = "tower")]

use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use keygate::layer::{ApiKeyLayer, HttpsOnlyLayer, RATELIMIT_LIMIT, RATELIMIT_REMAINING};
use keygate::{profiles, AccountId, ApiKeys, CreateKey, Principal};
use tower::{service_fn, Layer, Service, ServiceExt};

/// Answers with the caller's key name, as the layer left it.
async fn echo(request: Request<()>) -> Result<Response<String>, Infallible> {
    let name = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.name().to_owned())
        .unwrap_or_default();
    Ok(Response::new(name))
}

fn get(key: Option<&str>) -> Request<()> {
    let mut request = Request::builder()
        .uri("/v1/subscribers")
        .header("host", "localhost");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(()).unwrap()
}

fn error_code(response: &Response<String>) -> String {
    let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_layer_serves_any_tower_service_and_body() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = AccountId::new("org").unwrap();
    let sdk = api
        .operator()
        .create(&org, CreateKey::new("sdk key").bundle("sdk"))
        .await
        .unwrap();
    let sdk = sdk.key.expose_secret().to_owned();
    let keys = ApiKeyLayer::new(api.clone());
    let mut service = keys.layer(service_fn(echo));

    let r = service
        .ready()
        .await
        .unwrap()
        .call(get(None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"api\"");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(error_code(&r), "missing_api_key");
    assert!(!r.body().contains(&sdk));

    let r = service
        .ready()
        .await
        .unwrap()
        .call(get(Some(&sdk)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.body(), "sdk key");
    assert_eq!(r.headers()[RATELIMIT_LIMIT], "100");
    assert_eq!(r.headers()[RATELIMIT_REMAINING], "99");

    // The sdk bundle has no `subscribers:read`: 403 in the same body type.
    let reading = keys
        .require("subscribers:read")
        .unwrap()
        .layer(service_fn(echo));
    let r = reading.oneshot(get(Some(&sdk))).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&r), "insufficient_scope");
}

#[tokio::test]
async fn the_https_guard_keeps_the_inner_body_type() {
    let guard = HttpsOnlyLayer::new();
    let remote = Request::builder()
        .uri("/signup")
        .header("host", "api.example.com")
        .body(())
        .unwrap();
    let r = guard.layer(service_fn(echo)).oneshot(remote).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&r), "https_required");
    // A peer address any server can record: a remote peer is refused even
    // when the Host header says localhost.
    let mut spoofed = get(None);
    spoofed
        .extensions_mut()
        .insert("203.0.113.7:5000".parse::<std::net::SocketAddr>().unwrap());
    let r = guard
        .layer(service_fn(echo))
        .oneshot(spoofed)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = guard
        .layer(service_fn(echo))
        .oneshot(get(None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
