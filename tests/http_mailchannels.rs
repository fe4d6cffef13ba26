//! MailChannels over HTTP, end to end on a real socket: the statements of
//! `shared/seeds/002_335bf4731ad6bd38.txt` (MailChannels API keys) that
//! concern requests, checked against the demo router of `examples/server_app`.
#![cfg(feature = "axum")]

mod http_support;

use http_support::{expect_error, header, json, service, start, Options, Product, Server};
use keygate::{profiles, AccountId, ApiKeys, CreateKey};
use serde_json::{json, Value};

async fn mailchannels() -> (Server, String, ApiKeys) {
    let (api, _) = service(profiles::mailchannels());
    let (server, admin) = start(Product::MailChannels, &api, Options::default()).await;
    (server, admin, api)
}

/// Creates the sub-account `handle` of the admin account and returns its id,
/// which derives from the parent's: `parent/handle`.
async fn sub_account(server: &Server, parent: &str, handle: &str) -> String {
    let response = server
        .post("/v1/sub-account")
        .header("x-api-key", parent)
        .json(&json!({ "handle": handle }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    let admin = http_support::app::ADMIN_ACCOUNT;
    assert_eq!(body["handle"], handle);
    assert_eq!(body["parent"], admin);
    let account = body["account"].as_str().unwrap().to_owned();
    assert_eq!(account, format!("{admin}/{handle}"));
    account
}

// "Every request to the Email API must include your API key" as `X-Api-Key`.
#[tokio::test]
async fn the_key_goes_in_x_api_key() {
    let (server, admin, _) = mailchannels().await;
    let sent = server
        .post("/tx/v1/send")
        .header("X-Api-Key", &admin)
        .json(&json!({"subject": "Hello from MailChannels"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let padded = server
        .post("/tx/v1/send")
        .header("x-api-key", format!("  {admin}\t"))
        .send()
        .await
        .unwrap();
    assert_eq!(padded.status(), 202);

    // A bearer token is not where this API looks.
    let bearer = server
        .post("/tx/v1/send")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (headers, _) = expect_error(bearer, 401, "missing_api_key", &admin).await;
    assert_eq!(
        header(&headers, "www-authenticate"),
        "ApiKey header=\"X-Api-Key\""
    );

    let twice = server
        .post("/tx/v1/send")
        .header("x-api-key", &admin)
        .header("x-api-key", &admin)
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(twice, 401, "malformed_api_key", &admin).await;
    assert!(message.contains("more than one"), "{message}");
}

// "Scope ... Sending Email (api) and Managing Inbound Filtering (inbound)":
// an inbound key cannot send. Inbound keys are made in the Console (the
// account acting with its full rights), since no `api` key can grant `inbound`.
#[tokio::test]
async fn an_inbound_key_cannot_send() {
    let (server, _, api) = mailchannels().await;
    let admin = AccountId::new(http_support::app::ADMIN_ACCOUNT).unwrap();
    let created = api
        .as_account(&admin)
        .create(&admin, CreateKey::new("filtering").scopes(["inbound"]))
        .await
        .unwrap();
    let created = serde_json::to_value(created.response()).unwrap();
    let key = created["key"].as_str().unwrap();
    assert_eq!(created["name"], "filtering");
    assert_eq!(created["redacted"], format!("{}…", &key[..12]));
    let sent = server
        .post("/tx/v1/send")
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(sent, 403, "insufficient_scope", key).await;
    assert!(message.contains("api"));
}

// "The parent account can create, list, and delete keys for each
// sub-account it owns."
#[tokio::test]
async fn a_parent_manages_its_sub_accounts_keys() {
    let (server, parent, _) = mailchannels().await;
    let shop = sub_account(&server, &parent, "shop").await;

    // Created with no body, as in the seed's curl example: scope `api`.
    let created = server
        .post("/v1/sub-account/shop/api-key")
        .header("x-api-key", &parent)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = json(created).await;
    let sub_key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["account"], shop.as_str());
    assert_eq!(created["scopes"], json!(["api"]));

    let sent = server
        .post("/tx/v1/send")
        .header("x-api-key", &sub_key)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);

    // "The full key is shown exactly once ... The redacted version is
    // available via the Console and API".
    let listed = server
        .get("/v1/sub-account/shop/api-key")
        .header("x-api-key", &parent)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let text = listed.text().await.unwrap();
    assert!(!text.contains(&sub_key));
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["redacted"], format!("{}…", &sub_key[..12]));

    let deleted = server
        .delete(&format!("/v1/sub-account/shop/api-key/{id}"))
        .header("x-api-key", &parent)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // "All subsequent requests that use the key will fail."
    let after = server
        .post("/tx/v1/send")
        .header("x-api-key", &sub_key)
        .send()
        .await
        .unwrap();
    expect_error(after, 401, "revoked_api_key", &sub_key).await;
}

// Only the parent owns a sub-account: anyone else gets 404, as if it did not
// exist, and a sub-account cannot manage its parent.
#[tokio::test]
async fn another_account_gets_404_for_a_sub_account_it_does_not_own() {
    let (server, parent, api) = mailchannels().await;
    sub_account(&server, &parent, "shop").await;
    let created = json(
        server
            .post("/v1/sub-account/shop/api-key")
            .header("x-api-key", &parent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let sub_key = created["key"].as_str().unwrap();

    let stranger = api
        .as_account(&AccountId::new("acct_stranger").unwrap())
        .create(
            &AccountId::new("acct_stranger").unwrap(),
            CreateKey::new("theirs").scopes(["api"]),
        )
        .await
        .unwrap();
    let stranger = stranger.key.expose_secret();
    let create = server
        .post("/v1/sub-account/shop/api-key")
        .header("x-api-key", stranger)
        .send()
        .await
        .unwrap();
    expect_error(create, 404, "not_found", stranger).await;
    let list = server
        .get("/v1/sub-account/shop/api-key")
        .header("x-api-key", stranger)
        .send()
        .await
        .unwrap();
    expect_error(list, 404, "not_found", stranger).await;
    let delete = server
        .delete(&format!("/v1/sub-account/shop/api-key/{id}"))
        .header("x-api-key", stranger)
        .send()
        .await
        .unwrap();
    expect_error(delete, 404, "not_found", stranger).await;
    // The parent's own keys are not reachable through another sub-account path.
    sub_account(&server, &parent, "blog").await;
    let wrong_path = server
        .delete(&format!("/v1/sub-account/blog/api-key/{id}"))
        .header("x-api-key", &parent)
        .send()
        .await
        .unwrap();
    expect_error(wrong_path, 404, "not_found", &parent).await;
    // A sub-account does not manage its parent's keys.
    let upward = server
        .get(&format!(
            "/v1/sub-account/{}/api-key",
            http_support::app::ADMIN_ACCOUNT
        ))
        .header("x-api-key", sub_key)
        .send()
        .await
        .unwrap();
    expect_error(upward, 404, "not_found", sub_key).await;
    // And the key survived all of that.
    let sent = server
        .post("/tx/v1/send")
        .header("x-api-key", sub_key)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
}

// "Each account can have 100 API keys. Each sub-account can have 100 API
// keys. Sub-account keys do not count towards the parent account's limit.
// Attempting to create another key past that limit returns an error."
#[tokio::test]
async fn the_101st_key_is_refused_and_sub_account_keys_do_not_count() {
    let (server, parent, _) = mailchannels().await;
    sub_account(&server, &parent, "shop").await;
    for _ in 0..3 {
        let response = server
            .post("/v1/sub-account/shop/api-key")
            .header("x-api-key", &parent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // The admin key is the first of 100.
    for i in 1..100 {
        let response = server
            .post("/v1/api-keys")
            .header("x-api-key", &parent)
            .json(&json!({"name": format!("k{i}"), "scopes": ["api"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "key {}", i + 1);
    }
    let refused = server
        .post("/v1/api-keys")
        .header("x-api-key", &parent)
        .json(&json!({"name": "one too many", "scopes": ["api"]}))
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(refused, 409, "key_limit_reached", &parent).await;
    assert!(message.contains("100"), "{message}");
}

// The seed's paths: a key created with `POST /tx/v1/sub-account/{handle}/api-key`
// is found at `GET /tx/v1/sub-account/{handle}/api-key/{id}` with the `id` the
// create answered. `/v1/sub-account/…` names the same key, so revoking it
// there makes both paths answer 404, as for any revoked key.
#[tokio::test]
async fn a_sub_account_key_created_under_the_seed_paths_is_found_there() {
    let (server, parent, _) = mailchannels().await;

    // The sub-account must exist before it has keys.
    let early = server
        .post("/tx/v1/sub-account/1h/api-key")
        .header("x-api-key", &parent)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(early, 404, "not_found", &parent).await;
    let made = server
        .post("/tx/v1/sub-account")
        .header("x-api-key", &parent)
        .json(&json!({ "handle": "1h" }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);

    // Unusual but valid metadata keys, as schemathesis sends them.
    let metadata = json!({"\u{8e}\u{f7d39}": null, "\u{2fd15}\u{e3}": [], "n": 87_907_856_314_u64});
    let created = server
        .post("/tx/v1/sub-account/1h/api-key")
        .header("x-api-key", &parent)
        .json(&json!({ "metadata": metadata, "rate_limits": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = json(created).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["account"],
        format!("{}/1h", http_support::app::ADMIN_ACCOUNT)
    );

    let seed_path = format!("/tx/v1/sub-account/1h/api-key/{id}");
    let alias_path = format!("/v1/sub-account/1h/api-key/{id}");
    for path in [&seed_path, &alias_path] {
        let found = server
            .get(path)
            .header("x-api-key", &parent)
            .send()
            .await
            .unwrap();
        assert_eq!(found.status(), 200, "{path}");
        let found = json(found).await;
        assert_eq!(found["id"], id.as_str());
        assert_eq!(found["metadata"], metadata);
        assert!(found.get("key").is_none(), "the secret is shown once only");
    }

    // Revoked through the alias: gone under both paths.
    let revoked = server
        .delete(&alias_path)
        .header("x-api-key", &parent)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    for path in [&seed_path, &alias_path] {
        let gone = server
            .get(path)
            .header("x-api-key", &parent)
            .send()
            .await
            .unwrap();
        expect_error(gone, 404, "not_found", &parent).await;
    }
    let listed = server
        .get("/tx/v1/sub-account/1h/api-key?include_revoked=true")
        .header("x-api-key", &parent)
        .send()
        .await
        .unwrap();
    let listed = json(listed).await;
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0]["revoked_at"].is_string());
}

// `/openapi.json` describes each sub-account key operation once, under the
// seed's `/tx/v1` paths; `/v1/sub-account/…` is an undocumented alias (a
// document listing both would present one key as two resources).
#[cfg(feature = "openapi")]
#[tokio::test]
async fn the_openapi_document_names_each_sub_account_route_once() {
    let (server, _, _) = mailchannels().await;
    let doc = json(server.get("/openapi.json").send().await.unwrap()).await;
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/tx/v1/sub-account",
        "/tx/v1/sub-account/{handle}/api-key",
        "/tx/v1/sub-account/{handle}/api-key/{id}",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    let aliases: Vec<&String> = paths
        .keys()
        .filter(|p| p.starts_with("/v1/sub-account"))
        .collect();
    assert!(aliases.is_empty(), "documented twice: {aliases:?}");
    assert!(!paths.keys().any(|p| p.starts_with("/tx/v1/api-keys")));
}
