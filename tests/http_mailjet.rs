//! Mailjet over HTTP, end to end on a real socket: the statements of
//! `shared/seeds/001_1096317fca88c73a.txt` (Mailjet API and secret keys) that
//! concern requests, checked against the demo router of `examples/server_app`.
#![cfg(feature = "axum")]

mod http_support;

use base64::Engine as _;
use http_support::{expect_error, header, json, service, start, Options, Product, Server};
use keygate::profiles;
use serde_json::{json, Value};

async fn mailjet() -> (Server, String) {
    let (api, _) = service(profiles::mailjet());
    start(Product::Mailjet, &api, Options::default()).await
}

fn split(pair: &str) -> (&str, &str) {
    pair.split_once(':').unwrap()
}

fn basic(pair: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn create(server: &Server, admin: &str, name: &str) -> Value {
    let (public, secret) = split(admin);
    let response = server
        .post("/v1/api-keys")
        .basic_auth(public, Some(secret))
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    json(response).await
}

// "you will authenticate using your API Key and Secret key, much like you
// would use a username and password": HTTP Basic `apikey:secret`.
#[tokio::test]
async fn key_pairs_authenticate_with_http_basic() {
    let (server, admin) = mailjet().await;
    let (public, secret) = split(&admin);
    let sent = server
        .post("/v3/send")
        .basic_auth(public, Some(secret))
        .json(&json!({"Messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    // Scheme name in any case, padding optional.
    let encoded = &basic(&admin)["Basic ".len()..];
    for value in [
        format!("bAsIc {encoded}"),
        format!("  BASIC \t{}  ", encoded.trim_end_matches('=')),
    ] {
        let response = server
            .post("/v3/send")
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    // No rate limits in this profile: no RateLimit headers.
    let sent = server
        .post("/v3/send")
        .basic_auth(public, Some(secret))
        .send()
        .await
        .unwrap();
    assert!(sent.headers().get("ratelimit-limit").is_none());
}

#[tokio::test]
async fn wrong_secret_or_scheme_is_401_with_a_basic_challenge() {
    let (server, admin) = mailjet().await;
    let (public, secret) = split(&admin);
    let wrong = format!("{public}:{}", "0".repeat(secret.len()));
    let response = server
        .post("/v3/send")
        .header("authorization", basic(&wrong))
        .send()
        .await
        .unwrap();
    let (headers, _) = expect_error(response, 401, "invalid_api_key", &admin).await;
    assert_eq!(header(&headers, "www-authenticate"), "Basic realm=\"api\"");

    let bearer = server
        .post("/v3/send")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(bearer, 401, "malformed_api_key", &admin).await;
    assert!(message.contains("scheme"), "{message}");

    let missing = server.post("/v3/send").send().await.unwrap();
    let (headers, _) = expect_error(missing, 401, "missing_api_key", &admin).await;
    assert_eq!(header(&headers, "www-authenticate"), "Basic realm=\"api\"");

    // Only the public key, only a secret, garbage base64.
    for value in [
        basic(public),
        basic(&format!(":{secret}")),
        "Basic %%%".to_owned(),
    ] {
        let response = server
            .post("/v3/send")
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        expect_error(response, 401, "malformed_api_key", &admin).await;
    }
}

// "API Key visibility: always accessible"; "Secret Key ... displayed only once".
#[tokio::test]
async fn the_public_key_stays_visible_and_the_secret_is_shown_once() {
    let (server, admin) = mailjet().await;
    let created = create(&server, &admin, "newsletter").await;
    let public = created["public_key"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(public.len(), 32);
    assert_eq!(secret.len(), 32);

    let (admin_public, admin_secret) = split(&admin);
    let listed = server
        .get("/v1/api-keys")
        .basic_auth(admin_public, Some(admin_secret))
        .send()
        .await
        .unwrap();
    let text = listed.text().await.unwrap();
    assert!(!text.contains(&secret));
    let list: Value = serde_json::from_str(&text).unwrap();
    let entry = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == created["id"])
        .unwrap();
    assert_eq!(entry["public_key"], public.as_str());

    let sent = server
        .post("/v3/send")
        .basic_auth(&public, Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
}

// "you can reset your API Secret Key"; "If you suspect your credentials have
// been compromised, reset your Secret Key immediately": the old secret fails
// at once, the public key stays.
#[tokio::test]
async fn reset_secret_keeps_the_public_key_and_kills_the_old_secret() {
    let (server, admin) = mailjet().await;
    let created = create(&server, &admin, "smtp").await;
    let public = created["public_key"].as_str().unwrap().to_owned();
    let old_secret = created["key"].as_str().unwrap().to_owned();
    let (admin_public, admin_secret) = split(&admin);

    let reset = server
        .post(&format!(
            "/v1/api-keys/{}/reset-secret",
            created["id"].as_str().unwrap()
        ))
        .basic_auth(admin_public, Some(admin_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    let reset = json(reset).await;
    assert_eq!(reset["public_key"], public.as_str());
    assert_eq!(reset["id"], created["id"]);
    let new_secret = reset["key"].as_str().unwrap();
    assert_ne!(new_secret, old_secret);

    let old = server
        .post("/v3/send")
        .basic_auth(&public, Some(&old_secret))
        .send()
        .await
        .unwrap();
    expect_error(
        old,
        401,
        "invalid_api_key",
        &format!("{public}:{old_secret}"),
    )
    .await;
    let new = server
        .post("/v3/send")
        .basic_auth(&public, Some(new_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 202);
}

// "A subaccount is an account nested under your primary Mailjet account,
// identified by a different API key."
#[tokio::test]
async fn sub_accounts_get_keys_of_their_own() {
    let (server, admin) = mailjet().await;
    let (public, secret) = split(&admin);
    let sub = server
        .post("/v1/sub-account")
        .basic_auth(public, Some(secret))
        .json(&json!({"handle": "acct_marketing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sub.status(), 201);
    // A sub-account's id derives from its parent's: `parent/handle`.
    let sub = json(sub).await;
    assert_eq!(sub["handle"], "acct_marketing");
    let account = format!("{}/acct_marketing", http_support::app::ADMIN_ACCOUNT);
    assert_eq!(sub["account"], account.as_str());
    let key = server
        .post("/v1/sub-account/acct_marketing/api-key")
        .basic_auth(public, Some(secret))
        .json(&json!({"name": "marketing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), 201);
    let key = json(key).await;
    assert_eq!(key["account"], account.as_str());
    assert_ne!(key["public_key"].as_str().unwrap(), public);
    let sent = server
        .post("/v3/send")
        .basic_auth(
            key["public_key"].as_str().unwrap(),
            Some(key["key"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
}
