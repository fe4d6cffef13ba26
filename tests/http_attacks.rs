//! The attacks of the security review, replayed over HTTP against the demo
//! routers: a sub-account taking over its parent, a tenant claiming another's
//! names, weaker keys minting or hijacking stronger ones, and a crafted Basic
//! header. Each now fails with the right status while the victim's keys keep
//! working.
#![cfg(feature = "axum")]

mod http_support;

use base64::Engine as _;
use http_support::{expect_error, json, service, start, Options, Product, Server};
use keygate::profiles;
use serde_json::{json, Value};

/// A request authenticated the way `product` expects.
fn auth(
    server: &Server,
    product: Product,
    method: &str,
    path: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    let request = match method {
        "GET" => server.get(path),
        "DELETE" => server.delete(path),
        _ => server.post(path),
    };
    match product {
        Product::Mailjet => {
            let (public, secret) = key.split_once(':').unwrap();
            request.basic_auth(public, Some(secret))
        }
        Product::MailChannels => request.header("x-api-key", key),
        _ => request.bearer_auth(key),
    }
}

/// The text a client sends for a key in a create response.
fn presented(product: Product, created: &Value) -> String {
    let key = created["key"].as_str().unwrap();
    match product {
        Product::Mailjet => format!("{}:{key}", created["public_key"].as_str().unwrap()),
        _ => key.to_owned(),
    }
}

async fn own_key_id(server: &Server, product: Product, key: &str) -> String {
    let page = json(
        auth(server, product, "GET", "/v1/api-keys", key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    page["data"][0]["id"].as_str().unwrap().to_owned()
}

async fn sub_account_cannot_take_over_its_parent(product: Product, send: &str) {
    let (api, _) = service(product.profile());
    let (server, admin) = start(product, &api, Options::default()).await;
    let admin_id = own_key_id(&server, product, &admin).await;

    let made = auth(&server, product, "POST", "/v1/sub-account", &admin)
        .json(&json!({ "handle": "eu" }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made = json(made).await;
    assert_eq!(made["account"], "acct_admin/eu");
    let sub = auth(
        &server,
        product,
        "POST",
        "/v1/sub-account/eu/api-key",
        &admin,
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert_eq!(sub.status(), 201);
    let sub = presented(product, &json(sub).await);

    // The sub-account names its parent as "its" sub-account: one level only.
    let claim = auth(&server, product, "POST", "/v1/sub-account", &sub)
        .json(&json!({ "handle": "acct_admin" }))
        .send()
        .await
        .unwrap();
    expect_error(claim, 403, "sub_account_depth", &sub).await;
    // Minting, listing, revoking or resetting on the parent's account finds
    // nothing, and the parent cannot mint on itself through the sub-account
    // routes either.
    let mut refused = vec![
        (
            "POST",
            "/v1/sub-account/acct_admin/api-key".to_owned(),
            &sub,
        ),
        ("GET", "/v1/sub-account/acct_admin/api-key".to_owned(), &sub),
        ("DELETE", format!("/v1/api-keys/{admin_id}"), &sub),
        (
            "POST",
            "/v1/sub-account/acct_admin/api-key".to_owned(),
            &admin,
        ),
    ];
    if product == Product::Mailjet {
        refused.push((
            "POST",
            format!("/v1/api-keys/{admin_id}/reset-secret"),
            &sub,
        ));
    }
    for (method, path, key) in refused {
        let response = auth(&server, product, method, &path, key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(response, 404, "not_found", key).await;
    }
    // The parent still works.
    let sent = auth(&server, product, "POST", send, &admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
}

#[tokio::test]
async fn mailjet_sub_account_cannot_take_over_its_parent() {
    sub_account_cannot_take_over_its_parent(Product::Mailjet, "/v3/send").await;
}

#[tokio::test]
async fn mailchannels_sub_account_cannot_take_over_its_parent() {
    sub_account_cannot_take_over_its_parent(Product::MailChannels, "/tx/v1/send").await;
}

#[tokio::test]
async fn sub_account_names_belong_to_their_parent() {
    let product = Product::MailChannels;
    let (api, _) = service(product.profile());
    let (server, admin) = start(product, &api, Options::default()).await;
    let other = api
        .operator()
        .create(
            &keygate::AccountId::new("other").unwrap(),
            keygate::CreateKey::new("other").scopes(["api"]),
        )
        .await
        .unwrap();
    let other = other.key.expose_secret().to_owned();
    // Both tenants get "eu": the same answer whether or not the name exists
    // elsewhere, and two different accounts.
    let mut accounts = Vec::new();
    for key in [&admin, &other] {
        let made = auth(&server, product, "POST", "/v1/sub-account", key)
            .json(&json!({ "handle": "eu" }))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 201);
        accounts.push(json(made).await["account"].clone());
    }
    assert_ne!(accounts[0], accounts[1]);
    // Handles that would make paths ambiguous are refused.
    for bad in ["../x", "T 1", "", "a/b"] {
        let made = auth(&server, product, "POST", "/v1/sub-account", &admin)
            .json(&json!({ "handle": bad }))
            .send()
            .await
            .unwrap();
        expect_error(made, 400, "invalid_account", &admin).await;
    }
}

#[tokio::test]
async fn mailjawn_key_manager_cannot_mint_or_hijack_full_access() {
    let product = Product::MailJawn;
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(product, &api, Options::default()).await;
    let admin_id = own_key_id(&server, product, &admin).await;
    let manager = auth(&server, product, "POST", "/v1/api-keys", &admin)
        .json(&json!({ "name": "keys", "scopes": ["api_keys:read", "api_keys:write"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(manager.status(), 201);
    let manager = presented(product, &json(manager).await);
    let send = auth(&server, product, "POST", "/v1/emails/send", &manager)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(send, 403, "insufficient_scope", &manager).await;

    let mint = auth(&server, product, "POST", "/v1/api-keys", &manager)
        .json(&json!({ "name": "x", "bundle": "full_access" }))
        .send()
        .await
        .unwrap();
    expect_error(mint, 403, "insufficient_scope", &manager).await;
    let hijack = auth(
        &server,
        product,
        "POST",
        &format!("/v1/api-keys/{admin_id}/rotate"),
        &manager,
    )
    .send()
    .await
    .unwrap();
    expect_error(hijack, 403, "insufficient_scope", &manager).await;
    let sent = auth(&server, product, "POST", "/v1/emails/send", &admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202, "the admin key still works");
}

#[tokio::test]
async fn mailjet_account_scope_key_cannot_reset_the_admin() {
    let product = Product::Mailjet;
    let (api, _) = service(profiles::mailjet());
    let (server, admin) = start(product, &api, Options::default()).await;
    let admin_id = own_key_id(&server, product, &admin).await;
    // Made by the operator: the admin could not hand out a narrower default.
    let weak = api
        .operator()
        .create(
            &keygate::AccountId::new("acct_admin").unwrap(),
            keygate::CreateKey::new("acct").scopes(["account"]),
        )
        .await
        .unwrap();
    let weak = weak.key.to_presented().to_string();
    let reset = auth(
        &server,
        product,
        "POST",
        &format!("/v1/api-keys/{admin_id}/reset-secret"),
        &weak,
    )
    .send()
    .await
    .unwrap();
    expect_error(reset, 403, "insufficient_scope", &weak).await;
    let sent = auth(&server, product, "POST", "/v3/send", &admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
}

#[tokio::test]
async fn mailchannels_api_key_cannot_create_inbound_keys() {
    let product = Product::MailChannels;
    let (api, _) = service(profiles::mailchannels());
    let (server, admin) = start(product, &api, Options::default()).await;
    let api_only = auth(&server, product, "POST", "/v1/api-keys", &admin)
        .json(&json!({ "name": "send", "scopes": ["api"] }))
        .send()
        .await
        .unwrap();
    let api_only = presented(product, &json(api_only).await);
    let inbound = auth(&server, product, "POST", "/v1/api-keys", &api_only)
        .json(&json!({ "name": "in", "scopes": ["inbound"] }))
        .send()
        .await
        .unwrap();
    expect_error(inbound, 403, "insufficient_scope", &api_only).await;
    // Nor for a sub-account it made.
    let made = auth(&server, product, "POST", "/v1/sub-account", &api_only)
        .json(&json!({ "handle": "eu" }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let sub_inbound = auth(
        &server,
        product,
        "POST",
        "/v1/sub-account/eu/api-key",
        &api_only,
    )
    .json(&json!({ "scopes": ["inbound"] }))
    .send()
    .await
    .unwrap();
    expect_error(sub_inbound, 403, "insufficient_scope", &api_only).await;
}

#[tokio::test]
async fn crafted_basic_header_is_malformed_not_a_panic() {
    let product = Product::Mailjet;
    let (api, _) = service(profiles::mailjet());
    let (server, admin) = start(product, &api, Options::default()).await;
    let crafted = format!("{}ʚ{}", "a".repeat(31), "b".repeat(32));
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&crafted)
    );
    for _ in 0..3 {
        let response = server
            .post("/v3/send")
            .header("authorization", &header)
            .json(&json!({}))
            .send()
            .await
            .expect("the server answers instead of dropping the connection");
        expect_error(response, 401, "malformed_api_key", &crafted).await;
    }
    let sent = auth(&server, product, "POST", "/v3/send", &admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202, "the server is still up");
}

#[tokio::test]
async fn mailjawn_rotation_does_not_refill_the_send_quota() {
    let product = Product::MailJawn;
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(product, &api, Options::default()).await;
    let send = |key: String| {
        auth(&server, product, "POST", "/v1/emails/send", &key)
            .json(&json!({}))
            .send()
    };
    let mut sent = 0;
    while send(admin.clone()).await.unwrap().status() == 202 {
        sent += 1;
        assert!(sent <= 10);
    }
    assert_eq!(sent, 10);
    let mut key = admin;
    for _ in 0..5 {
        let id = own_key_id(&server, product, &key).await;
        let rotated = auth(
            &server,
            product,
            "POST",
            &format!("/v1/api-keys/{id}/rotate"),
            &key,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(rotated.status(), 201);
        key = presented(product, &json(rotated).await);
        let refused = send(key.clone()).await.unwrap();
        let (headers, _) = expect_error(refused, 429, "rate_limited", &key).await;
        assert_eq!(headers["ratelimit-remaining"], "0");
    }
}
