//! Changing a key in place over HTTP, on the demo router of
//! `examples/server_app`: `POST /v1/api-keys/{id}/disable` and `/enable`,
//! and `PATCH /v1/api-keys/{id}` (name, metadata, expiry, limits), as the
//! README's curl session shows them.
#![cfg(feature = "axum")]

mod http_support;

use http_support::{
    add_subscriber, create_key, expect_error, json, service, start, Options, Product,
};
use keygate::profiles;
use serde_json::{json, Value};

#[tokio::test]
async fn disable_answers_401_disabled_api_key_until_enabled() {
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let created = create_key(&server, &admin, json!({"name": "ci", "bundle": "sdk"})).await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    assert_eq!(add_subscriber(&server, key).await.status(), 201);

    let disabled = server
        .post(&format!("/v1/api-keys/{id}/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    assert!(json(disabled).await["disabled_at"].is_string());
    let (headers, _) = expect_error(
        add_subscriber(&server, key).await,
        401,
        "disabled_api_key",
        key,
    )
    .await;
    assert!(headers.contains_key("www-authenticate"));

    let enabled = server
        .post(&format!("/v1/api-keys/{id}/enable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 200);
    assert!(json(enabled).await["disabled_at"].is_null());
    assert_eq!(add_subscriber(&server, key).await.status(), 201);

    // Another tenant's key id is not found.
    let missing = server
        .post("/v1/api-keys/key_nope/disable")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "not_found", "").await;
}

#[tokio::test]
async fn patch_changes_name_and_metadata_and_refuses_oversized_metadata() {
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let created = create_key(
        &server,
        &admin,
        json!({"name": "ci", "bundle": "sdk", "metadata": {"team": "infra"}}),
    )
    .await;
    assert_eq!(created["metadata"], json!({"team": "infra"}));
    let id = created["id"].as_str().unwrap();
    let patch = |body: Value| {
        server
            .client
            .patch(server.url(&format!("/v1/api-keys/{id}")))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let updated = patch(json!({"name": "deploy", "metadata": {"team": "platform"}}))
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let updated = json(updated).await;
    assert_eq!(updated["name"], "deploy");
    assert_eq!(updated["metadata"], json!({"team": "platform"}));
    assert_eq!(updated["id"], created["id"]);

    let big = json!({"metadata": {"note": "x".repeat(5000)}});
    let (_, message) = expect_error(patch(big).await.unwrap(), 400, "invalid_json", "").await;
    assert!(message.contains("limit is 4096"), "{message}");
    let (_, message) =
        expect_error(patch(json!({})).await.unwrap(), 400, "invalid_request", "").await;
    assert!(message.contains("names no field"), "{message}");
}

/// `002_335bf4731ad6bd38.txt`: a MailChannels key's scope "cannot be changed
/// afterwards": a PATCH naming scopes is a clear 400.
#[tokio::test]
async fn mailchannels_refuses_a_patch_that_changes_scopes() {
    let (api, _) = service(profiles::mailchannels());
    let (server, admin) = start(Product::MailChannels, &api, Options::default()).await;
    let created = server
        .post("/v1/api-keys")
        .header("x-api-key", &admin)
        .json(&json!({"name": "sender", "scopes": ["api"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = json(created).await["id"].as_str().unwrap().to_owned();
    let response = server
        .client
        .patch(server.url(&format!("/v1/api-keys/{id}")))
        .header("x-api-key", &admin)
        .json(&json!({"scopes": ["inbound"]}))
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(response, 400, "invalid_request", "").await;
    assert!(message.contains("fixes a key's scopes"), "{message}");
}

#[tokio::test]
async fn credits_show_in_a_header_and_run_out_with_429_usage_exceeded() {
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let created = create_key(
        &server,
        &admin,
        json!({"name": "trial", "bundle": "sdk", "credits":
               {"remaining": 2, "refill": {"amount": 2, "interval_ms": 86_400_000}}}),
    )
    .await;
    assert_eq!(created["credits"]["remaining"], 2);
    let key = created["key"].as_str().unwrap();
    for left in ["1", "0"] {
        let ok = add_subscriber(&server, key).await;
        assert_eq!(ok.status(), 201);
        assert_eq!(ok.headers()["credits-remaining"], left);
    }
    let (headers, _) = expect_error(
        add_subscriber(&server, key).await,
        429,
        "usage_exceeded",
        key,
    )
    .await;
    assert_eq!(headers["credits-remaining"], "0");
    assert_eq!(headers["retry-after"], "86400");

    // PATCH tops the credits up without a new key; `credits` replaces them
    // whole, so a body naming no refill leaves none (README, Credits).
    let id = created["id"].as_str().unwrap();
    let patched = server
        .client
        .patch(server.url(&format!("/v1/api-keys/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"credits": {"remaining": 5}}))
        .send()
        .await
        .unwrap();
    let patched = json(patched).await;
    assert_eq!(patched["credits"]["remaining"], 5);
    assert!(patched["credits"].get("refill").is_none(), "{patched}");
    assert_eq!(
        add_subscriber(&server, key).await.headers()["credits-remaining"],
        "4"
    );
}

#[tokio::test]
async fn the_credits_header_reports_the_smaller_of_the_keys_and_the_identitys() {
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let identity = |external_id: &'static str, credits: Value| {
        let (server, admin) = (&server, &admin);
        async move {
            let created = server
                .post("/v1/identities")
                .bearer_auth(admin)
                .json(&json!({"external_id": external_id, "credits": credits}))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
            json(created).await["id"].as_str().unwrap().to_owned()
        }
    };
    let lean = identity("cus_lean", json!({"remaining": 2})).await;
    let rich = identity("cus_rich", json!({"remaining": 10})).await;
    let key_on = |identity: Option<&str>, credits: Option<u64>| {
        let mut body = json!({"name": "member", "bundle": "sdk"});
        if let Some(id) = identity {
            body["identity"] = json!(id);
        }
        if let Some(n) = credits {
            body["credits"] = json!({ "remaining": n });
        }
        let (server, admin) = (&server, &admin);
        async move {
            create_key(server, admin, body).await["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let header = |response: reqwest::Response| {
        assert_eq!(response.status(), 201);
        response
            .headers()
            .get("credits-remaining")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // The identity has fewer: its count is reported.
    let key = key_on(Some(&lean), Some(5)).await;
    assert_eq!(
        header(add_subscriber(&server, &key).await).as_deref(),
        Some("1")
    );
    // The key has fewer.
    let key = key_on(Some(&rich), Some(3)).await;
    assert_eq!(
        header(add_subscriber(&server, &key).await).as_deref(),
        Some("2")
    );
    // Only the identity is limited.
    let key = key_on(Some(&rich), None).await;
    assert_eq!(
        header(add_subscriber(&server, &key).await).as_deref(),
        Some("8")
    );
    // Neither is: no header.
    let key = key_on(None, None).await;
    assert_eq!(header(add_subscriber(&server, &key).await), None);
}
