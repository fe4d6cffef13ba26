//! Every size a request controls has a limit, and past it the answer is a
//! 4xx JSON error that never reaches the store: credential headers, the
//! JSON body of a management route, the page size, and a new key's name,
//! metadata, scopes and rate limits. Checked over HTTP on a real socket
//! against the demo routers of `examples/server_app`.
#![cfg(feature = "axum")]

mod http_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_support::{expect_error, json, start, FlakyStore, Options, Product, Server};
use keygate::layer::{MAX_BODY_LEN, MAX_PRESENTED_KEY_LEN};
use keygate::{
    AccountId, ApiKeys, CreateKey, MAX_METADATA_BYTES, MAX_NAME_LEN, MAX_PAGE_SIZE,
    MAX_REQUEST_LIMITS, MAX_REQUEST_SCOPES,
};
use serde_json::{json, Value};

/// A demo server for `product` on a store whose lookups can be switched off,
/// its admin key, and a key of the admin account that has never been
/// verified (so no cache holds it: verifying it needs the store).
struct Limits {
    server: Server,
    product: Product,
    admin: String,
    unseen: String,
    lookups_down: Arc<AtomicBool>,
}

impl Limits {
    async fn new(product: Product) -> Self {
        let store = FlakyStore::default();
        let lookups_down = store.lookups_down.clone();
        let api = ApiKeys::builder(product.profile())
            .store(store)
            .build()
            .unwrap();
        let (server, admin) = start(product, &api, Options::default()).await;
        let account = AccountId::new(http_support::app::ADMIN_ACCOUNT).unwrap();
        let request = match product {
            Product::MailChannels => CreateKey::new("unseen").scopes(["api"]),
            _ => CreateKey::new("unseen").all_scopes(),
        };
        let unseen = api.operator().create(&account, request).await.unwrap();
        Self {
            server,
            product,
            admin,
            unseen: unseen.key.expose_secret().to_owned(),
            lookups_down,
        }
    }

    /// A request with `key` where the profile reads it.
    fn with_key(&self, request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        match self.product {
            Product::MailChannels => request.header("x-api-key", key),
            _ => request.bearer_auth(key),
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_key(self.server.post(path), &self.admin)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_key(self.server.get(path), &self.admin)
    }

    /// The ids of the admin account's keys, revoked ones included.
    async fn key_ids(&self) -> Vec<String> {
        let page = self
            .get("/v1/api-keys?include_revoked=true&limit=1000")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let page = json(page).await;
        assert!(page["next"].is_null());
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Creates a key with `body` on `/v1/api-keys`, expecting `status` and
    /// `code`, and checks that no key was stored. Returns the message.
    async fn refused_create(&self, body: &Value, status: u16, code: &str) -> String {
        let before = self.key_ids().await;
        let response = self.post("/v1/api-keys").json(body).send().await.unwrap();
        let (_, message) = expect_error(response, status, code, &self.admin).await;
        assert_eq!(
            self.key_ids().await,
            before,
            "a refused create stored a key"
        );
        message
    }
}

/// A credential header over [`MAX_PRESENTED_KEY_LEN`] is refused by the
/// layer as malformed (401, keygate's JSON error) without a store lookup:
/// with lookups down, a key that needs the store answers 503, and the
/// over-long one still 401.
async fn over_long_credential_headers_never_reach_the_store(product: Product) {
    let limits = Limits::new(product).await;
    let server = &limits.server;
    limits.lookups_down.store(true, Ordering::SeqCst);
    let probe = limits
        .with_key(server.get("/v1/api-keys"), &limits.unseen)
        .send()
        .await
        .unwrap();
    expect_error(probe, 503, "unavailable", &limits.unseen).await;

    for len in [MAX_PRESENTED_KEY_LEN + 1, 16 * 1024] {
        let long = format!("{}{}", limits.unseen, "A".repeat(len));
        let response = limits
            .with_key(server.get("/v1/api-keys"), &long)
            .send()
            .await
            .unwrap();
        let (headers, message) = expect_error(response, 401, "malformed_api_key", &long).await;
        assert!(message.contains("too long"), "{message}");
        assert!(headers.get("www-authenticate").is_some());
        // The same on a route that writes.
        let response = limits
            .with_key(server.post("/v1/api-keys"), &long)
            .json(&json!({"name": "never", "scopes": ["api"]}))
            .send()
            .await
            .unwrap();
        expect_error(response, 401, "malformed_api_key", &long).await;
    }
    limits.lookups_down.store(false, Ordering::SeqCst);
    // Nothing was created by the refused writes: the admin's key and the
    // unseen one only.
    assert_eq!(limits.key_ids().await.len(), 2);
}

#[tokio::test]
async fn an_over_long_bearer_token_is_401_without_a_lookup() {
    over_long_credential_headers_never_reach_the_store(Product::MailJawn).await;
}

#[tokio::test]
async fn an_over_long_x_api_key_is_401_without_a_lookup() {
    over_long_credential_headers_never_reach_the_store(Product::MailChannels).await;
}

/// A header block larger than the HTTP server reads (hyper's buffer,
/// about 400 KiB) is refused before any route or layer runs: 431, or the
/// connection is closed while the client is still sending. Never a success,
/// never a lookup.
#[tokio::test]
async fn a_one_mebibyte_credential_header_is_refused_by_the_server() {
    for product in [Product::MailJawn, Product::MailChannels] {
        let limits = Limits::new(product).await;
        limits.lookups_down.store(true, Ordering::SeqCst);
        let huge = "A".repeat(1024 * 1024);
        let sent = limits
            .with_key(limits.server.get("/v1/api-keys"), &huge)
            .send()
            .await;
        match sent {
            Ok(response) => assert_eq!(response.status(), 431),
            Err(e) => assert!(
                !e.is_timeout() && (e.is_request() || e.is_connect() || e.is_body()),
                "{e:?}"
            ),
        }
        limits.lookups_down.store(false, Ordering::SeqCst);
        // The server still serves.
        let ok = limits.get("/v1/api-keys").send().await.unwrap();
        assert_eq!(ok.status(), 200);
    }
}

#[tokio::test]
async fn a_name_over_the_limit_is_400_naming_it() {
    let limits = Limits::new(Product::MailJawn).await;
    let longest = "n".repeat(MAX_NAME_LEN);
    let ok = limits
        .post("/v1/api-keys")
        .json(&json!({"name": longest, "bundle": "full_access"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201, "a name of exactly {MAX_NAME_LEN} is fine");

    let over = json!({"name": "n".repeat(MAX_NAME_LEN + 1), "bundle": "full_access"});
    let message = limits.refused_create(&over, 400, "invalid_request").await;
    assert!(message.contains(&MAX_NAME_LEN.to_string()), "{message}");
    // Characters, not bytes: 200 two-byte characters are within the limit.
    let wide = json!({"name": "é".repeat(MAX_NAME_LEN), "bundle": "full_access"});
    let ok = limits
        .post("/v1/api-keys")
        .json(&wide)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn metadata_over_the_limit_is_400() {
    let limits = Limits::new(Product::MailJawn).await;
    // `{"k":"…"}` serialises to the value's length plus 8 bytes.
    let fits = json!({"k": "v".repeat(MAX_METADATA_BYTES - 8)});
    assert_eq!(
        serde_json::to_string(&fits).unwrap().len(),
        MAX_METADATA_BYTES
    );
    let ok = limits
        .post("/v1/api-keys")
        .json(&json!({"name": "fits", "bundle": "full_access", "metadata": fits}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);

    let over = json!({"k": "v".repeat(MAX_METADATA_BYTES - 7)});
    let body = json!({"name": "over", "bundle": "full_access", "metadata": over});
    // Metadata is checked as the body is read: 400 `invalid_json`.
    let message = limits.refused_create(&body, 400, "invalid_json").await;
    assert!(
        message.contains(&MAX_METADATA_BYTES.to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn too_many_scopes_or_rate_limits_are_400() {
    let limits = Limits::new(Product::MailJawn).await;
    let scopes: Vec<String> = (0..=MAX_REQUEST_SCOPES).map(|i| format!("s{i}")).collect();
    let message = limits
        .refused_create(
            &json!({"name": "scopes", "scopes": scopes}),
            400,
            "invalid_request",
        )
        .await;
    assert!(
        message.contains(&MAX_REQUEST_SCOPES.to_string()),
        "{message}"
    );

    let classes: serde_json::Map<String, Value> = (0..=MAX_REQUEST_LIMITS)
        .map(|i| (format!("c{i}"), json!({"limit": 1, "period_ms": 1000})))
        .collect();
    let body = json!({"name": "limits", "bundle": "full_access", "rate_limits": classes});
    let message = limits.refused_create(&body, 400, "invalid_request").await;
    assert!(
        message.contains(&MAX_REQUEST_LIMITS.to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let limits = Limits::new(Product::MailJawn).await;
    let body = json!({"name": "big", "bundle": "full_access", "metadata": {"k": "v".repeat(MAX_BODY_LEN)}});
    let message = limits.refused_create(&body, 413, "body_too_large").await;
    assert!(message.contains(&MAX_BODY_LEN.to_string()), "{message}");
    // Also on a sub-account create (MailChannels), an update and a rotate.
    let mail = Limits::new(Product::MailChannels).await;
    let made = mail
        .post("/tx/v1/sub-account")
        .json(&json!({"handle": "eu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let id = mail.key_ids().await[0].clone();
    let padded = json!({"name": "x".repeat(MAX_BODY_LEN)});
    for (method, path) in [
        ("POST", "/tx/v1/sub-account/eu/api-key".to_owned()),
        ("POST", "/tx/v1/sub-account".to_owned()),
        ("PATCH", format!("/v1/api-keys/{id}")),
        ("POST", format!("/v1/api-keys/{id}/rotate")),
    ] {
        let request = match method {
            "PATCH" => mail.server.client.patch(mail.server.url(&path)),
            _ => mail.server.post(&path),
        };
        let response = mail
            .with_key(request, &mail.admin)
            .json(&padded)
            .send()
            .await
            .unwrap();
        expect_error(response, 413, "body_too_large", &mail.admin).await;
    }
    let listed = json(
        mail.get("/tx/v1/sub-account/eu/api-key?include_revoked=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["data"], json!([]));
    assert_eq!(mail.key_ids().await.len(), 2);
}

#[tokio::test]
async fn a_page_size_outside_1_to_the_maximum_is_400() {
    let limits = Limits::new(Product::MailJawn).await;
    let largest = limits
        .get(&format!("/v1/api-keys?limit={MAX_PAGE_SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(largest.status(), 200);
    let one = limits.get("/v1/api-keys?limit=1").send().await.unwrap();
    assert_eq!(json(one).await["data"].as_array().unwrap().len(), 1);

    for limit in ["0".to_owned(), (MAX_PAGE_SIZE + 1).to_string()] {
        for path in ["/v1/api-keys", "/v1/identities"] {
            let response = limits
                .get(&format!("{path}?limit={limit}"))
                .send()
                .await
                .unwrap();
            let (_, message) = expect_error(response, 400, "invalid_request", &limits.admin).await;
            assert!(
                message.contains(&MAX_PAGE_SIZE.to_string()),
                "{path}?limit={limit}: {message}"
            );
        }
    }
    // Not a number that fits: the query is malformed.
    for limit in ["-1", "99999999999999999999999", "ten"] {
        let response = limits
            .get(&format!("/v1/api-keys?limit={limit}"))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_query", &limits.admin).await;
    }
}

#[tokio::test]
async fn credits_over_int64_are_400() {
    let limits = Limits::new(Product::MailJawn).await;
    let too_big = u64::try_from(i64::MAX).unwrap() + 1;
    for credits in [
        json!({"remaining": too_big}),
        json!({"remaining": 1, "refill": {"amount": too_big, "interval_ms": 1000}}),
        json!({"remaining": 1, "refill": {"amount": 1, "interval_ms": too_big}}),
    ] {
        let body = json!({"name": "credits", "bundle": "full_access", "credits": credits});
        let message = limits.refused_create(&body, 400, "invalid_request").await;
        assert!(message.contains(&i64::MAX.to_string()), "{message}");
    }
    let largest =
        json!({"remaining": i64::MAX, "refill": {"amount": i64::MAX, "interval_ms": i64::MAX}});
    let ok = limits
        .post("/v1/api-keys")
        .json(&json!({"name": "largest", "bundle": "full_access", "credits": largest}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
}
