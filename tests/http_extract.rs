//! Key extraction and error responses over HTTP, end to end on a real
//! socket with the `default()` profile (Bearer or `X-Api-Key`): every
//! credential shape, every 401 cause, 403, 404, 503, and the layer on a plain
//! tower service.
#![cfg(feature = "axum")]

mod http_support;

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use http_support::{expect_error, json, serve, FlakyStore, Server};
use keygate::layer::ApiKeyLayer;
use keygate::{profiles, AccountId, ApiKeys, CreateKey, ListOptions, Principal};
use reqwest::header::HeaderValue;
use tower::{ServiceBuilder, ServiceExt};

async fn whoami(principal: Principal) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "key": principal.name(), "account": principal.account() }))
}

async fn my_keys(
    State(api): State<ApiKeys>,
    principal: Principal,
) -> Result<Json<keygate::Page>, keygate::Error> {
    Ok(Json(
        api.as_account(principal.account())
            .list(principal.account(), ListOptions::default())
            .await?,
    ))
}

async fn admin_only(
    State(api): State<ApiKeys>,
    principal: Principal,
) -> Result<&'static str, keygate::AuthError> {
    api.check_scope(&principal, "admin")?;
    Ok("welcome")
}

async fn maybe(principal: Option<Principal>) -> String {
    principal.map_or_else(|| "anonymous".to_owned(), |p| p.name().to_owned())
}

fn router(api: &ApiKeys) -> Router {
    let keys = ApiKeyLayer::new(api.clone());
    Router::new()
        .route("/whoami", get(whoami))
        .route("/keys", get(my_keys))
        .route("/admin", get(admin_only))
        .route_layer(keys.clone())
        .route("/maybe", get(maybe).route_layer(keys.clone()))
        .route("/open", get(whoami))
        .route("/open/maybe", get(maybe))
        .with_state(api.clone())
}

async fn setup() -> (Server, ApiKeys, String) {
    let api = ApiKeys::in_memory(profiles::default()).unwrap();
    let key = api
        .as_account(&AccountId::new("acct_1").unwrap())
        .create(
            &AccountId::new("acct_1").unwrap(),
            CreateKey::new("reader").bundle("read_only"),
        )
        .await
        .unwrap();
    let server = serve(router(&api)).await;
    (server, api, key.key.expose_secret().to_owned())
}

#[tokio::test]
async fn every_accepted_credential_shape_authenticates() {
    let (server, _, key) = setup().await;
    let shapes = [
        ("authorization", format!("Bearer {key}")),
        ("authorization", format!("bearer {key}")),
        ("authorization", format!("BEARER    {key}")),
        ("authorization", format!("\tBearer {key}  ")),
        ("x-api-key", key.clone()),
        ("X-API-KEY", format!(" {key} ")),
    ];
    for (name, value) in shapes {
        let response = server
            .get("/whoami")
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}: {value:?}");
        assert_eq!(json(response).await["key"], "reader");
    }
}

#[tokio::test]
async fn a_missing_credential_is_401_with_every_challenge() {
    let (server, _, key) = setup().await;
    let response = server.get("/whoami").send().await.unwrap();
    let (headers, message) = expect_error(response, 401, "missing_api_key", &key).await;
    assert_eq!(message, "missing api key");
    let challenges: Vec<_> = headers.get_all("www-authenticate").iter().collect();
    assert_eq!(
        challenges,
        [
            HeaderValue::from_static("Bearer realm=\"api\""),
            HeaderValue::from_static("ApiKey header=\"X-Api-Key\""),
        ]
    );
}

#[tokio::test]
async fn two_credentials_are_refused() {
    let (server, _, key) = setup().await;
    let cases: [&[(&str, String)]; 3] = [
        &[
            ("authorization", format!("Bearer {key}")),
            ("authorization", format!("Bearer {key}")),
        ],
        &[
            ("authorization", format!("Bearer {key}")),
            ("x-api-key", key.clone()),
        ],
        &[("x-api-key", key.clone()), ("x-api-key", key.clone())],
    ];
    for headers in cases {
        let mut request = server.get("/whoami");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let (_, message) = expect_error(response, 401, "malformed_api_key", &key).await;
        assert!(message.contains("more than one credential"), "{message}");
    }
}

#[tokio::test]
async fn malformed_values_are_401_and_never_echoed() {
    let (server, _, key) = setup().await;
    let mut typo = key.clone().into_bytes();
    typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let long = format!("{key}{}", "x".repeat(1100));
    let cases: Vec<(&str, HeaderValue, &str)> = vec![
        (
            "authorization",
            format!("Bearer {typo}").parse().unwrap(),
            "checksum",
        ),
        (
            "authorization",
            format!("Basic {key}").parse().unwrap(),
            "scheme",
        ),
        (
            "authorization",
            format!("Token {key}").parse().unwrap(),
            "scheme",
        ),
        ("authorization", key.parse().unwrap(), "scheme"),
        ("authorization", "Bearer".parse().unwrap(), "empty"),
        (
            "authorization",
            format!("Bearer {long}").parse().unwrap(),
            "too long",
        ),
        ("x-api-key", long.parse().unwrap(), "too long"),
        (
            "x-api-key",
            HeaderValue::from_bytes(b"kg_\xff\xfe").unwrap(),
            "not valid text",
        ),
        (
            "authorization",
            HeaderValue::from_bytes(format!("Bearer {key}\u{e9}").as_bytes()).unwrap(),
            "not valid text",
        ),
        (
            "x-api-key",
            format!("{key} {key}").parse().unwrap(),
            "length",
        ),
    ];
    for (name, value, reason) in cases {
        let response = server
            .get("/whoami")
            .header(name, value)
            .send()
            .await
            .unwrap();
        let (_, message) = expect_error(response, 401, "malformed_api_key", &key).await;
        assert!(message.contains(reason), "{message} should say {reason}");
        assert!(!message.contains(&typo[8..]));
    }
}

#[tokio::test]
async fn unknown_revoked_and_expired_keys_are_401() {
    let (server, api, key) = setup().await;
    let org = AccountId::new("acct_1").unwrap();
    let unknown = api.profile().formats()[0].generate();
    let unknown = unknown.expose_secret();
    let response = server
        .get("/whoami")
        .bearer_auth(unknown)
        .send()
        .await
        .unwrap();
    let (headers, _) = expect_error(response, 401, "invalid_api_key", unknown).await;
    assert!(headers.get("www-authenticate").is_some());

    let doomed = api
        .as_account(&org)
        .create(&org, CreateKey::new("doomed"))
        .await
        .unwrap();
    api.as_account(&org).revoke(&doomed.info.id).await.unwrap();
    let doomed = doomed.key.expose_secret();
    let response = server
        .get("/whoami")
        .bearer_auth(doomed)
        .send()
        .await
        .unwrap();
    expect_error(response, 401, "revoked_api_key", doomed).await;

    // The valid key still works next to all that.
    let ok = server
        .get("/whoami")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn handlers_can_question_mark_auth_and_management_errors() {
    let (server, _, key) = setup().await;
    let forbidden = server.get("/admin").bearer_auth(&key).send().await.unwrap();
    let (_, message) = expect_error(forbidden, 403, "insufficient_scope", &key).await;
    assert_eq!(message, "api key lacks required scope: admin");
    let keys = server.get("/keys").bearer_auth(&key).send().await.unwrap();
    assert_eq!(keys.status(), 200);
}

// A handler that takes a `Principal` on a route no layer covers is a
// configuration error: 500, never served as authenticated, and not a 401
// that would send the client looking for a better key.
#[tokio::test]
async fn the_principal_extractor_answers_500_where_no_layer_ran() {
    let (server, _, key) = setup().await;
    let anonymous = server
        .get("/open/maybe")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.text().await.unwrap(), "anonymous");
    let known = server.get("/maybe").bearer_auth(&key).send().await.unwrap();
    assert_eq!(known.text().await.unwrap(), "reader");
    let response = server.get("/open").bearer_auth(&key).send().await.unwrap();
    let (headers, _) = expect_error(response, 500, "api_key_layer_missing", &key).await;
    assert!(headers.get("www-authenticate").is_none());
}

// "an unreachable store is 503, never success": during verify (the layer) and
// during a management call (a handler's `?`).
#[tokio::test]
async fn an_unreachable_store_is_503() {
    let store = FlakyStore::default();
    let lookups = store.lookups_down.clone();
    let management = store.management_down.clone();
    let api = ApiKeys::builder(profiles::default())
        .store(store)
        .build()
        .unwrap();
    let key = api
        .as_account(&AccountId::new("acct_1").unwrap())
        .create(&AccountId::new("acct_1").unwrap(), CreateKey::new("k"))
        .await
        .unwrap();
    let key = key.key.expose_secret();
    let server = serve(router(&api)).await;

    management.store(true, Ordering::SeqCst);
    let response = server.get("/keys").bearer_auth(key).send().await.unwrap();
    let (_, message) = expect_error(response, 503, "unavailable", key).await;
    assert!(
        !message.contains("10.0.0.9"),
        "store details leak: {message}"
    );

    lookups.store(true, Ordering::SeqCst);
    let response = server.get("/whoami").bearer_auth(key).send().await.unwrap();
    expect_error(response, 503, "unavailable", key).await;

    lookups.store(false, Ordering::SeqCst);
    management.store(false, Ordering::SeqCst);
    let response = server.get("/keys").bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

// The layer wraps any tower service, not only axum routers.
#[tokio::test]
async fn the_layer_wraps_a_plain_tower_service() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let key = api
        .as_account(&AccountId::new("org_1").unwrap())
        .create(
            &AccountId::new("org_1").unwrap(),
            CreateKey::new("svc").bundle("sdk"),
        )
        .await
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(
            ApiKeyLayer::new(api.clone())
                .require("events:write")
                .unwrap(),
        )
        .service_fn(|request: http::Request<Body>| async move {
            let principal = request.extensions().get::<Principal>().cloned();
            let name = principal.map(|p| p.name().to_owned()).unwrap_or_default();
            Ok::<_, Infallible>(http::Response::new(Body::from(name)))
        });

    let request = http::Request::post("/v1/events")
        .header(
            "authorization",
            format!("Bearer {}", key.key.expose_secret()),
        )
        .body(Body::empty())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ratelimit-limit"], "30");
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"svc");

    let request = http::Request::get("/v1/events")
        .body(Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"api\""
    );
}

#[tokio::test]
async fn the_layer_rejects_unknown_classes_and_scopes_at_construction() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let keys = ApiKeyLayer::new(api);
    assert!(keys.operation("sned").is_err());
    assert!(keys.require("emails:sned").is_err());
    let send = keys
        .operation("send")
        .unwrap()
        .require("emails:send")
        .unwrap();
    let op = send.operation_for(&http::Method::GET);
    assert_eq!(op.class(), Some("send"));
    assert_eq!(op.requirement().unwrap().label(), "emails:send");
    assert_eq!(
        keys.operation_for(&http::Method::PATCH).class(),
        Some("write")
    );
    assert_eq!(
        keys.operation_for(&http::Method::HEAD).class(),
        Some("read")
    );
}
