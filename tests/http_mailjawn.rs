//! MailJawn over HTTP, end to end on a real socket: the statements of
//! `shared/seeds/000_b47e423a44e43425.txt` (MailJawn API keys) that concern
//! requests, checked against the demo router of `examples/server_app`.
#![cfg(feature = "axum")]

mod http_support;

use std::time::Duration;

use http_support::{
    add_subscriber, create_key, expect_error, header, json, service, start, Options, Product,
    Server,
};
use keygate::{profiles, ApiKeys, ManualClock};
use serde_json::{json, Value};

async fn mailjawn() -> (Server, String, ApiKeys, ManualClock) {
    let (api, clock) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    (server, admin, api, clock)
}

// "MailJawn generates a key that starts with mj_ and displays it exactly once"
// and "Include the API key in the Authorization header ... Bearer".
#[tokio::test]
async fn created_key_is_shown_once_and_authenticates_as_bearer() {
    let (server, admin, _, _) = mailjawn().await;
    let created = create_key(&server, &admin, json!({"name": "ios app", "bundle": "sdk"})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("mj_"));
    assert_eq!(created["name"], "ios app");
    assert_eq!(created["bundle"], "sdk");
    assert_eq!(created["redacted"], format!("{}…", &key[..8]));
    assert!(created["id"].as_str().unwrap().starts_with("key_"));
    assert!(created["created_at"].is_string());

    let response = add_subscriber(&server, &key).await;
    assert_eq!(response.status(), 201);

    // The list never shows the key again: name, bundle, dates and the prefix only.
    let listed = server
        .get("/v1/api-keys")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let text = listed.text().await.unwrap();
    assert!(!text.contains(&key[8..]), "list leaks the key");
    let list: Value = serde_json::from_str(&text).unwrap();
    let entry = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == created["id"])
        .unwrap();
    assert!(entry.get("key").is_none());
    assert_eq!(entry["redacted"], created["redacted"]);
    assert_eq!(entry["bundle"], "sdk");
    assert!(entry["last_used_at"].is_string(), "the key was used once");
}

// "SDK: Add subscribers and track events"; Full Access: "Everything".
#[tokio::test]
async fn bundles_decide_which_routes_a_key_reaches() {
    let (server, admin, _, _) = mailjawn().await;
    let sdk = create_key(&server, &admin, json!({"name": "sdk", "bundle": "sdk"})).await;
    let sdk = sdk["key"].as_str().unwrap();

    let tracked = server
        .post("/v1/events")
        .bearer_auth(sdk)
        .json(&json!({"name": "app_opened"}))
        .send()
        .await
        .unwrap();
    assert_eq!(tracked.status(), 202);

    for (method, path, scope) in [
        ("GET", "/v1/subscribers", "subscribers:read"),
        ("GET", "/v1/campaigns", "campaigns:read"),
        ("POST", "/v1/emails/send", "emails:send"),
        ("GET", "/v1/api-keys", "api_keys:read"),
        ("POST", "/v1/api-keys", "api_keys:write"),
    ] {
        let request = match method {
            "GET" => server.get(path),
            _ => server
                .post(path)
                .json(&json!({"name": "x", "bundle": "sdk"})),
        };
        let response = request.bearer_auth(sdk).send().await.unwrap();
        let (headers, message) = expect_error(response, 403, "insufficient_scope", sdk).await;
        assert!(message.contains(scope), "{message}");
        assert!(headers.get("www-authenticate").is_none());
    }

    let mcp = create_key(&server, &admin, json!({"name": "claude", "bundle": "mcp"})).await;
    let mcp = mcp["key"].as_str().unwrap();
    let sent = server
        .post("/v1/emails/send")
        .bearer_auth(mcp)
        .json(&json!({"to": "ada@example.com", "subject": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let call = server
        .post("/mcp")
        .bearer_auth(mcp)
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    assert_eq!(json(call).await["id"], 7);
}

// "Read (GET requests) 100 requests/minute ... If you exceed a rate limit,
// you'll receive an HTTP 429 response. Wait and retry after the limit window
// resets."
#[tokio::test]
async fn the_101st_get_in_a_minute_is_429_with_retry_after() {
    let (server, admin, _, clock) = mailjawn().await;
    for i in 0..100u32 {
        let response = server
            .get("/v1/subscribers")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {}", i + 1);
        let headers = response.headers();
        assert_eq!(header(headers, "ratelimit-limit"), "100");
        assert_eq!(header(headers, "ratelimit-remaining"), (99 - i).to_string());
        assert!(headers.get("retry-after").is_none());
    }
    let denied = server
        .get("/v1/subscribers")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (headers, _) = expect_error(denied, 429, "rate_limited", &admin).await;
    assert_eq!(header(&headers, "ratelimit-limit"), "100");
    assert_eq!(header(&headers, "ratelimit-remaining"), "0");
    assert_eq!(header(&headers, "ratelimit-reset"), "60");
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert_eq!(retry, 1, "one request refills every 0.6 s");

    // HEAD counts as a read too.
    let head = server
        .head("/v1/subscribers")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 429);

    // Writes have their own bucket.
    let write = server
        .post("/v1/subscribers")
        .bearer_auth(&admin)
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 201);
    assert_eq!(header(write.headers(), "ratelimit-limit"), "30");

    clock.advance(Duration::from_secs(retry));
    let again = server
        .get("/v1/subscribers")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

// "Email send 10 requests/minute", "MCP 60 requests/minute": a route's own
// class, not its method's.
#[tokio::test]
async fn send_and_mcp_routes_count_against_their_own_classes() {
    let (server, admin, _, _) = mailjawn().await;
    for _ in 0..10 {
        let sent = server
            .post("/v1/emails/send")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 202);
        assert_eq!(header(sent.headers(), "ratelimit-limit"), "10");
    }
    let denied = server
        .post("/v1/emails/send")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (headers, _) = expect_error(denied, 429, "rate_limited", &admin).await;
    assert_eq!(header(&headers, "retry-after"), "6");

    // Ten sends took nothing from the write bucket.
    let write = server
        .post("/v1/events")
        .bearer_auth(&admin)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 202);
    assert_eq!(header(write.headers(), "ratelimit-remaining"), "29");

    let call = server
        .post("/mcp")
        .bearer_auth(&admin)
        .json(&json!({"id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    assert_eq!(header(call.headers(), "ratelimit-limit"), "60");
    assert_eq!(header(call.headers(), "ratelimit-remaining"), "59");
}

// "Revoking is immediate — any request using that key will start failing
// with a 401 error."
#[tokio::test]
async fn revoked_key_gets_401_on_its_next_request() {
    let (server, admin, _, _) = mailjawn().await;
    let created = create_key(
        &server,
        &admin,
        json!({"name": "tmp", "bundle": "full_access"}),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap();
    let ok = server
        .get("/v1/campaigns")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let revoked = server
        .delete(&format!("/v1/api-keys/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);

    let after = server
        .get("/v1/campaigns")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (headers, _) = expect_error(after, 401, "revoked_api_key", &key).await;
    assert_eq!(header(&headers, "www-authenticate"), "Bearer realm=\"api\"");

    // Soft delete: still listed for audit when asked... but not by default.
    let list = json(
        server
            .get("/v1/api-keys")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"] != id));
}

// "To rotate a key: create a new key ... revoke the old key"; the demo's
// rotate route does both at once.
#[tokio::test]
async fn rotation_returns_a_new_key_and_the_old_one_stops() {
    let (server, admin, _, _) = mailjawn().await;
    let created = create_key(&server, &admin, json!({"name": "ci", "bundle": "mcp"})).await;
    let old = created["key"].as_str().unwrap().to_owned();
    let rotated = server
        .post(&format!(
            "/v1/api-keys/{}/rotate",
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 201);
    let rotated = json(rotated).await;
    let new = rotated["key"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(rotated["name"], "ci");
    assert_eq!(rotated["bundle"], "mcp");

    let old_use = server
        .get("/v1/campaigns")
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    expect_error(old_use, 401, "revoked_api_key", &old).await;
    let new_use = server
        .get("/v1/campaigns")
        .bearer_auth(new)
        .send()
        .await
        .unwrap();
    assert_eq!(new_use.status(), 200);
}

// "Keys are scoped to your organization": another organisation's key id is
// not found.
#[tokio::test]
async fn another_organisations_key_is_404() {
    let (server, admin, api, _) = mailjawn().await;
    let other = keygate::AccountId::new("org_other").unwrap();
    let theirs = api
        .as_account(&other)
        .create(&other, keygate::CreateKey::new("theirs").bundle("sdk"))
        .await
        .unwrap();
    let id = theirs.info.id.as_str();
    let delete = server
        .delete(&format!("/v1/api-keys/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(delete, 404, "not_found", &admin).await;
    let rotate = server
        .post(&format!("/v1/api-keys/{id}/rotate"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(rotate, 404, "not_found", &admin).await;
    // Their key still works.
    assert!(api.verify(theirs.key.expose_secret()).await.is_ok());
}

#[tokio::test]
async fn bad_bodies_are_400_in_the_json_error_shape() {
    let (server, admin, _, _) = mailjawn().await;
    let cases = [
        ("{\"name\":", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ("{\"name\": \"x\", \"colour\": \"red\"}", "invalid_json"),
        (
            "{\"name\": \"x\", \"bundle\": \"everything\"}",
            "unknown_bundle",
        ),
        (
            "{\"name\": \"x\", \"scopes\": [\"subscribers:delete\"]}",
            "invalid_scope",
        ),
        ("{\"name\": \"x\"}", "invalid_request"),
        ("{\"name\": \"  \", \"bundle\": \"sdk\"}", "invalid_request"),
    ];
    for (body, code) in cases {
        let response = server
            .post("/v1/api-keys")
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(response, 400, code, &admin).await;
    }
}

#[tokio::test]
async fn keys_created_with_granular_scopes_work() {
    let (server, admin, _, _) = mailjawn().await;
    let created = create_key(
        &server,
        &admin,
        json!({"name": "reader", "scopes": ["subscribers:read", "campaigns:*"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(
        created["scopes"],
        json!(["subscribers:read", "campaigns:*"])
    );
    let ok = server
        .get("/v1/subscribers")
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let no = server
        .post("/v1/subscribers")
        .bearer_auth(key)
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap();
    expect_error(no, 403, "insufficient_scope", key).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (server, admin, _, _) = mailjawn().await;
    let missing = server
        .get("/v1/nothing")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "not_found", &admin).await;
    let wrong = server
        .delete("/v1/subscribers")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(wrong, 405, "method_not_allowed", &admin).await;
}
