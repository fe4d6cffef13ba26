//! The key-management routes of `keygate::routes`, over HTTP on a real
//! socket, on the memory store, SQLite and PostgreSQL: every route, cursor
//! pagination while keys are added, refusals (a stranger, a sub-account, a
//! sibling, a weaker key) and malformed requests, which answer with keygate's
//! JSON error and never a 5xx.

mod http_support;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use http_support::{expect_error, json, serve, Server};
use keygate::layer::{ApiKeyLayer, MAX_BODY_LEN};
use keygate::routes::ManagementRoutes;
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, KeyStore, MemoryStore, Pepper, SqliteStore,
    MAX_PAGE_SIZE,
};
use serde_json::{json, Value};

/// A served router on one store, and what keeps the store alive.
struct Harness {
    server: Server,
    api: ApiKeys,
    /// A full-access key of `acme`.
    admin: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<support::TestPostgres>,
}

impl Harness {
    async fn new(store: Arc<dyn KeyStore>) -> Self {
        let api = ApiKeys::builder(profiles::default())
            .store(store)
            .pepper(Pepper::new(1, [7u8; 32]).unwrap())
            .build()
            .unwrap();
        let keys = ApiKeyLayer::new(api.clone());
        let router: Router = Router::new()
            .merge(ManagementRoutes::new(&keys).prefix("/v1").build().unwrap())
            .fallback(keygate::routes::not_found);
        let admin =
            Self::key_for(&api, "acme", CreateKey::new("admin").bundle("full_access")).await;
        Self {
            server: serve(router).await,
            api,
            admin,
            _dir: None,
            postgres: None,
        }
    }

    async fn key_for(api: &ApiKeys, account: &str, request: CreateKey) -> String {
        let account = AccountId::new(account).unwrap();
        let new = api.operator().create(&account, request).await.unwrap();
        new.key.expose_secret().to_owned()
    }

    async fn memory() -> Self {
        Self::new(Arc::new(MemoryStore::new())).await
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
        store.migrate().await.unwrap();
        let mut h = Self::new(Arc::new(store)).await;
        h._dir = Some(dir);
        h
    }

    async fn postgres() -> Option<Self> {
        let pg = support::postgres_store().await?;
        let mut h = Self::new(pg.store()).await;
        h.postgres = Some(pg);
        Some(h)
    }

    async fn cleanup(self) {
        if let Some(pg) = self.postgres {
            pg.cleanup().await;
        }
    }

    fn call(&self, method: &str, path: &str, key: &str) -> reqwest::RequestBuilder {
        let url = self.server.url(path);
        let c = &self.server.client;
        let request = match method {
            "GET" => c.get(url),
            "DELETE" => c.delete(url),
            "PATCH" => c.patch(url),
            _ => c.post(url),
        };
        request.bearer_auth(key)
    }

    /// Sends and checks the status; returns the JSON body (Null when empty).
    async fn ok(&self, request: reqwest::RequestBuilder, status: u16) -> Value {
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    async fn create(&self, key: &str, body: Value) -> Value {
        self.ok(self.call("POST", "/v1/api-keys", key).json(&body), 201)
            .await
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

/// Create, get, list, rotate (immediate and with grace), reset and revoke on
/// the caller's own account.
async fn own_key_life_cycle(h: &Harness) {
    let response = h
        .call("POST", "/v1/api-keys", &h.admin)
        .json(&json!({"name": "ci", "bundle": "read_only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let created = json(response).await;
    let (id, key) = (s(&created["id"]), s(&created["key"]));
    assert_eq!(created["name"], "ci");
    assert_eq!(created["account"], "acme");
    assert_eq!(created["bundle"], "read_only");
    assert_eq!(h.api.verify(&key).await.unwrap().key_id().as_str(), id);

    let got = h
        .ok(h.call("GET", &format!("/v1/api-keys/{id}"), &h.admin), 200)
        .await;
    assert_eq!(got["id"], id.as_str());
    assert!(got.get("key").is_none(), "get never shows the secret");
    let list = h.ok(h.call("GET", "/v1/api-keys", &h.admin), 200).await;
    let text = list.to_string();
    assert!(!text.contains(&key[8..]));
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // Rotate at once: the old key is revoked, the new one works.
    let rotated = h
        .ok(
            h.call("POST", &format!("/v1/api-keys/{id}/rotate"), &h.admin),
            201,
        )
        .await;
    let (id2, key2) = (s(&rotated["id"]), s(&rotated["key"]));
    assert_ne!(id2, id);
    assert_eq!(rotated["name"], "ci");
    assert_eq!(h.api.verify(&key).await.unwrap_err(), AuthError::Revoked);
    h.api.verify(&key2).await.unwrap();

    // Rotate with grace: the old key keeps working until it expires.
    let graced = h
        .ok(
            h.call("POST", &format!("/v1/api-keys/{id2}/rotate"), &h.admin)
                .json(&json!({"grace_seconds": 3600})),
            201,
        )
        .await;
    let key3 = s(&graced["key"]);
    h.api.verify(&key2).await.unwrap();
    h.api.verify(&key3).await.unwrap();
    let old = h
        .ok(h.call("GET", &format!("/v1/api-keys/{id2}"), &h.admin), 200)
        .await;
    assert!(old["expires_at"].is_string());
    assert_eq!(old["replaced_by"], graced["id"]);
    // A key is rotated once.
    let again = h
        .call("POST", &format!("/v1/api-keys/{id2}/rotate"), &h.admin)
        .send()
        .await
        .unwrap();
    expect_error(again, 409, "key_already_rotated", &h.admin).await;

    // Reset: same id, new secret, the old secret dead at once.
    let id3 = s(&graced["id"]);
    let response = h
        .call(
            "POST",
            &format!("/v1/api-keys/{id3}/reset-secret"),
            &h.admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let reset = json(response).await;
    assert_eq!(reset["id"], id3.as_str());
    let key4 = s(&reset["key"]);
    assert_eq!(h.api.verify(&key3).await.unwrap_err(), AuthError::Invalid);
    h.api.verify(&key4).await.unwrap();

    // Revoke: 204, then the key fails; revoked keys are listed on request.
    h.ok(
        h.call("DELETE", &format!("/v1/api-keys/{id3}"), &h.admin),
        204,
    )
    .await;
    assert_eq!(h.api.verify(&key4).await.unwrap_err(), AuthError::Revoked);
    let active = h.ok(h.call("GET", "/v1/api-keys", &h.admin), 200).await;
    let all = h
        .ok(
            h.call("GET", "/v1/api-keys?include_revoked=true", &h.admin),
            200,
        )
        .await;
    assert!(all["data"].as_array().unwrap().len() > active["data"].as_array().unwrap().len());

    let missing = h
        .call(
            "GET",
            "/v1/api-keys/key_000000000000doesnotexist00",
            &h.admin,
        )
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "not_found", &h.admin).await;
}

/// Sub-account creation and the parent's management of its keys.
async fn sub_account_keys(h: &Harness) {
    let made = h
        .ok(
            h.call("POST", "/v1/sub-account", &h.admin)
                .json(&json!({"handle": "eu"})),
            201,
        )
        .await;
    assert_eq!(
        made,
        json!({"handle": "eu", "account": "acme/eu", "parent": "acme"})
    );
    let again = h
        .call("POST", "/v1/sub-account", &h.admin)
        .json(&json!({"handle": "eu"}))
        .send()
        .await
        .unwrap();
    expect_error(again, 409, "conflict", &h.admin).await;

    // No body: the profile's default bundle and a default name.
    let created = h
        .ok(h.call("POST", "/v1/sub-account/eu/api-key", &h.admin), 201)
        .await;
    assert_eq!(created["account"], "acme/eu");
    assert_eq!(created["name"], "sub-account key");
    let (id, key) = (s(&created["id"]), s(&created["key"]));
    let base = format!("/v1/sub-account/eu/api-key/{id}");

    let list = h
        .ok(h.call("GET", "/v1/sub-account/eu/api-key", &h.admin), 200)
        .await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    let got = h.ok(h.call("GET", &base, &h.admin), 200).await;
    assert_eq!(got["account"], "acme/eu");
    let reset = h
        .ok(
            h.call("POST", &format!("{base}/reset-secret"), &h.admin),
            200,
        )
        .await;
    assert_eq!(h.api.verify(&key).await.unwrap_err(), AuthError::Invalid);
    let rotated = h
        .ok(h.call("POST", &format!("{base}/rotate"), &h.admin), 201)
        .await;
    assert_eq!(
        h.api.verify(&s(&reset["key"])).await.unwrap_err(),
        AuthError::Revoked
    );
    let new_id = s(&rotated["id"]);
    // The parent's own routes do not reach a sub-account's key.
    let own_route = h
        .call("GET", &format!("/v1/api-keys/{new_id}"), &h.admin)
        .send()
        .await
        .unwrap();
    expect_error(own_route, 404, "not_found", &h.admin).await;
    h.ok(
        h.call(
            "DELETE",
            &format!("/v1/sub-account/eu/api-key/{new_id}"),
            &h.admin,
        ),
        204,
    )
    .await;
    assert_eq!(
        h.api.verify(&s(&rotated["key"])).await.unwrap_err(),
        AuthError::Revoked
    );
    // An unregistered sub-account and a bad handle.
    let unknown = h
        .call("GET", "/v1/sub-account/nope/api-key", &h.admin)
        .send()
        .await
        .unwrap();
    expect_error(unknown, 404, "not_found", &h.admin).await;
    let bad = h
        .call("POST", "/v1/sub-account", &h.admin)
        .json(&json!({"handle": "../x"}))
        .send()
        .await
        .unwrap();
    expect_error(bad, 400, "invalid_account", &h.admin).await;
}

/// Every key that exists for the whole walk is seen exactly once, whatever
/// is created between pages, and no key is seen twice.
async fn pagination_while_keys_are_added(h: &Harness) {
    let mut before = HashSet::new();
    let first = h.ok(h.call("GET", "/v1/api-keys", &h.admin), 200).await;
    for k in first["data"].as_array().unwrap() {
        before.insert(s(&k["id"]));
    }
    for i in 0..23 {
        let k = h
            .create(
                &h.admin,
                json!({"name": format!("k{i}"), "bundle": "read_only"}),
            )
            .await;
        before.insert(s(&k["id"]));
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/api-keys?limit=5&after={a}"),
            None => "/v1/api-keys?limit=5".to_owned(),
        };
        let page = h.ok(h.call("GET", &path, &h.admin), 200).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 5);
        seen.extend(data.iter().map(|k| s(&k["id"])));
        pages += 1;
        // Keys added mid-walk may or may not show up, never twice.
        h.create(
            &h.admin,
            json!({"name": format!("mid{pages}"), "bundle": "read_only"}),
        )
        .await;
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a key was listed twice");
    for id in &before {
        assert!(unique.contains(id), "{id} was never listed");
    }
    assert!(pages >= 5);

    // The page size is bounded, and bad parameters answer 400 in JSON.
    let max = h
        .ok(
            h.call(
                "GET",
                &format!("/v1/api-keys?limit={MAX_PAGE_SIZE}"),
                &h.admin,
            ),
            200,
        )
        .await;
    assert!(max["data"].as_array().unwrap().len() <= MAX_PAGE_SIZE);
    for (query, code) in [
        (format!("limit={}", MAX_PAGE_SIZE + 1), "invalid_request"),
        ("limit=0".to_owned(), "invalid_request"),
        ("limit=-1".to_owned(), "invalid_query"),
        ("limit=ten".to_owned(), "invalid_query"),
        ("colour=blue".to_owned(), "invalid_query"),
        ("include_revoked=maybe".to_owned(), "invalid_query"),
    ] {
        let r = h
            .call("GET", &format!("/v1/api-keys?{query}"), &h.admin)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, code, &h.admin).await;
    }
}

/// A stranger, a sub-account (towards its parent), a sibling and a weaker
/// key are refused; the victim's key keeps working.
async fn strangers_siblings_and_weaker_keys_are_refused(h: &Harness) {
    let victim = h
        .create(&h.admin, json!({"name": "victim", "bundle": "full_access"}))
        .await;
    let (victim_id, victim_key) = (s(&victim["id"]), s(&victim["key"]));
    let stranger =
        Harness::key_for(&h.api, "globex", CreateKey::new("x").bundle("full_access")).await;
    let op = h.api.operator();
    let acme = AccountId::new("acme").unwrap();
    let (us, asia) = (
        op.create_sub_account(&acme, "us").await.unwrap(),
        op.create_sub_account(&acme, "asia").await.unwrap(),
    );
    let child = Harness::key_for(
        &h.api,
        us.as_str(),
        CreateKey::new("c").bundle("full_access"),
    )
    .await;
    let sibling_key = op
        .create(&asia, CreateKey::new("s").bundle("read_only"))
        .await
        .unwrap();
    let sibling_id = sibling_key.info.id.as_str().to_owned();

    for key in [&stranger, &child] {
        for (method, path) in [
            ("GET", format!("/v1/api-keys/{victim_id}")),
            ("DELETE", format!("/v1/api-keys/{victim_id}")),
            ("POST", format!("/v1/api-keys/{victim_id}/rotate")),
            ("POST", format!("/v1/api-keys/{victim_id}/reset-secret")),
            ("GET", "/v1/sub-account/us/api-key".to_owned()),
            ("POST", "/v1/sub-account/asia/api-key".to_owned()),
        ] {
            let r = h.call(method, &path, key).send().await.unwrap();
            expect_error(r, 404, "not_found", key).await;
        }
    }
    // A sub-account cannot reach its sibling through its own (nested) paths.
    for (method, path) in [
        ("GET", "/v1/sub-account/asia/api-key".to_owned()),
        (
            "DELETE",
            format!("/v1/sub-account/asia/api-key/{sibling_id}"),
        ),
        ("GET", format!("/v1/api-keys/{sibling_id}")),
    ] {
        let r = h.call(method, &path, &child).send().await.unwrap();
        expect_error(r, 404, "not_found", &child).await;
    }
    // Without the management scope: refused by the layer.
    let reader = h
        .create(&h.admin, json!({"name": "reader", "bundle": "read_only"}))
        .await;
    let reader = s(&reader["key"]);
    let r = h.call("GET", "/v1/api-keys", &reader).send().await.unwrap();
    let (_, message) = expect_error(r, 403, "insufficient_scope", &reader).await;
    assert!(message.contains("admin"), "{message}");
    // With it but weaker than the target: no minting or touching stronger keys.
    let manager = h
        .create(&h.admin, json!({"name": "manager", "scopes": ["admin"]}))
        .await;
    let manager = s(&manager["key"]);
    let mint = h
        .call("POST", "/v1/api-keys", &manager)
        .json(&json!({"name": "x", "bundle": "full_access"}))
        .send()
        .await
        .unwrap();
    expect_error(mint, 403, "insufficient_scope", &manager).await;
    for (method, path) in [
        ("DELETE", format!("/v1/api-keys/{victim_id}")),
        ("POST", format!("/v1/api-keys/{victim_id}/rotate")),
        ("POST", format!("/v1/api-keys/{victim_id}/reset-secret")),
    ] {
        let r = h.call(method, &path, &manager).send().await.unwrap();
        expect_error(r, 403, "insufficient_scope", &manager).await;
    }
    h.api.verify(&victim_key).await.unwrap();
    h.api.verify(sibling_key.key.expose_secret()).await.unwrap();
}

/// Oversized bodies are 413, bodies of the wrong shape 400, all in JSON and
/// Identities of the caller's account: create, list, get, update, put keys
/// on them, delete; another tenant's key sees none of it, and a key on an
/// identity mints keys only on it.
async fn identity_routes(h: &Harness) {
    let created = h
        .ok(
            h.call("POST", "/v1/identities", &h.admin).json(&json!({
                "external_id": "cus_42",
                "metadata": {"plan": "pro"},
                "credits": {"remaining": 100}
            })),
            201,
        )
        .await;
    let id = s(&created["id"]);
    assert_eq!(created["account"], "acme");
    assert_eq!(created["credits"]["remaining"], 100);
    assert_eq!(created["metadata"]["plan"], "pro");
    let duplicate = h
        .call("POST", "/v1/identities", &h.admin)
        .json(&json!({"external_id": "cus_42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let list = h.ok(h.call("GET", "/v1/identities", &h.admin), 200).await;
    assert_eq!(list["data"][0]["id"], id.as_str());

    // A key on the identity shows it, and shares its credits.
    let key = h
        .create(
            &h.admin,
            json!({"name": "member", "bundle": "full_access", "identity": id}),
        )
        .await;
    assert_eq!(key["identity"], id.as_str());
    let got = h
        .ok(
            h.call("GET", &format!("/v1/api-keys/{}", s(&key["id"])), &h.admin),
            200,
        )
        .await;
    assert_eq!(got["identity"], id.as_str());
    let member = s(&key["key"]);
    let p = h.api.verify(&member).await.unwrap();
    assert_eq!(p.identity().unwrap().external_id, "cus_42");

    // The member key mints keys on the identity only.
    let minted = h
        .create(&member, json!({"name": "minted", "bundle": "read_only"}))
        .await;
    assert_eq!(minted["identity"], id.as_str());
    let other = h
        .ok(
            h.call("POST", "/v1/identities", &h.admin)
                .json(&json!({"external_id": "cus_43"})),
            201,
        )
        .await;
    let escape = h
        .call("POST", "/v1/api-keys", &member)
        .json(&json!({"name": "escape", "bundle": "read_only", "identity": other["id"]}))
        .send()
        .await
        .unwrap();
    expect_error(escape, 403, "insufficient_scope", &member).await;
    let raise = h
        .call("PATCH", &format!("/v1/identities/{id}"), &member)
        .json(&json!({"credits": {"remaining": 1000}}))
        .send()
        .await
        .unwrap();
    expect_error(raise, 403, "insufficient_scope", &member).await;

    // Another tenant's key: 404 for all of it, exactly like a missing id.
    let stranger =
        Harness::key_for(&h.api, "globex", CreateKey::new("g").bundle("full_access")).await;
    for (method, path) in [
        ("GET", format!("/v1/identities/{id}")),
        ("PATCH", format!("/v1/identities/{id}")),
        ("DELETE", format!("/v1/identities/{id}")),
    ] {
        let r = h
            .call(method, &path, &stranger)
            .json(&json!({"metadata": {}}))
            .send()
            .await
            .unwrap();
        expect_error(r, 404, "not_found", &stranger).await;
    }
    // Naming it in a key is a bad reference: 400, exactly like a missing id.
    let cross = h
        .call("POST", "/v1/api-keys", &stranger)
        .json(&json!({"name": "x", "bundle": "read_only", "identity": id}))
        .send()
        .await
        .unwrap();
    let (_, cross) = expect_error(cross, 400, "invalid_request", &stranger).await;
    let missing = h
        .call("POST", "/v1/api-keys", &stranger)
        .json(&json!({"name": "x", "bundle": "read_only", "identity": "idn_missing"}))
        .send()
        .await
        .unwrap();
    let (_, missing) = expect_error(missing, 400, "invalid_request", &stranger).await;
    assert_eq!(cross.replace(&id, "idn_missing"), missing);
    // An update of an existing key naming a missing identity: 400 too, not
    // 404 (the key is there).
    let own = h
        .create(&stranger, json!({"name": "own", "bundle": "read_only"}))
        .await;
    let moved = h
        .call(
            "PATCH",
            &format!("/v1/api-keys/{}", s(&own["id"])),
            &stranger,
        )
        .json(&json!({"identity": id}))
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(moved, 400, "invalid_request", &stranger).await;
    assert!(message.contains("unknown identity"), "{message}");
    let theirs = h.ok(h.call("GET", "/v1/identities", &stranger), 200).await;
    assert_eq!(theirs["data"], json!([]));

    // The owner updates and deletes it; its keys are detached.
    let updated = h
        .ok(
            h.call("PATCH", &format!("/v1/identities/{id}"), &h.admin)
                .json(&json!({"metadata": {"plan": "team"}, "credits": null})),
            200,
        )
        .await;
    assert_eq!(updated["metadata"]["plan"], "team");
    assert!(updated["credits"].is_null());
    h.ok(
        h.call("DELETE", &format!("/v1/identities/{id}"), &h.admin),
        204,
    )
    .await;
    let gone = h
        .call("GET", &format!("/v1/identities/{id}"), &h.admin)
        .send()
        .await
        .unwrap();
    expect_error(gone, 404, "not_found", &h.admin).await;
    assert!(h.api.verify(&member).await.unwrap().identity().is_none());
}

/// never a 5xx.
async fn malformed_requests_answer_json_errors(h: &Harness) {
    let big = json!({"name": "x".repeat(MAX_BODY_LEN)});
    let r = h
        .call("POST", "/v1/api-keys", &h.admin)
        .json(&big)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "body_too_large", &h.admin).await;

    let bodies: [(&str, &str, &str); 10] = [
        ("/v1/api-keys", r#"{"name": 5}"#, "invalid_json"),
        (
            "/v1/api-keys",
            r#"{"name": "x", "scopes": "admin"}"#,
            "invalid_json",
        ),
        (
            "/v1/api-keys",
            r#"{"name": "x", "unknown": 1}"#,
            "invalid_json",
        ),
        ("/v1/api-keys", r#"[1, 2]"#, "invalid_json"),
        ("/v1/api-keys", "not json", "invalid_json"),
        (
            "/v1/api-keys",
            r#"{"name": "x", "expires_at": "tomorrow"}"#,
            "invalid_json",
        ),
        (
            "/v1/api-keys",
            r#"{"name": "", "bundle": "read_only"}"#,
            "invalid_request",
        ),
        (
            "/v1/api-keys",
            r#"{"name": "x", "bundle": "nope"}"#,
            "unknown_bundle",
        ),
        ("/v1/sub-account", r#"{"handle": 7}"#, "invalid_json"),
        ("/v1/sub-account/eu/api-key", r#""text""#, "invalid_json"),
    ];
    for (path, body, code) in bodies {
        let r = h
            .call("POST", path, &h.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, code, &h.admin).await;
    }
    let key = h
        .create(&h.admin, json!({"name": "g", "bundle": "read_only"}))
        .await;
    let rotate = format!("/v1/api-keys/{}/rotate", s(&key["id"]));
    for (body, code) in [
        (r#"{"grace_seconds": "soon"}"#, "invalid_json"),
        (r#"{"grace_seconds": -1}"#, "invalid_json"),
        (
            r#"{"grace_seconds": 18446744073709551615}"#,
            "invalid_request",
        ),
    ] {
        let r = h
            .call("POST", &rotate, &h.admin)
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, code, &h.admin).await;
    }
    // Ids that no key could have, and unknown routes.
    let long = format!("/v1/api-keys/{}", "k".repeat(300));
    let r = h.call("GET", &long, &h.admin).send().await.unwrap();
    expect_error(r, 400, "invalid_path", &h.admin).await;
    let r = h
        .call("GET", "/v1/api-keys/%FF", &h.admin)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_path", &h.admin).await;
    let r = h.call("GET", "/v1/nothing", &h.admin).send().await.unwrap();
    expect_error(r, 404, "not_found", &h.admin).await;
}

/// One test per (store, scenario), named `store::scenario`.
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        fn every_store() -> Vec<libtest_mimic::Trial> {
            use support::harness::{async_test, Rt};
            let mut trials = Vec::new();
            $(
                trials.push(async_test(concat!("memory::", stringify!($scenario)), Rt::CURRENT, || async {
                    let h = Harness::memory().await;
                    $scenario(&h).await;
                    h.cleanup().await;
                }));
                trials.push(async_test(concat!("sqlite::", stringify!($scenario)), Rt::CURRENT, || async {
                    let h = Harness::sqlite().await;
                    $scenario(&h).await;
                    h.cleanup().await;
                }));
                trials.push(async_test(concat!("postgres::", stringify!($scenario)), Rt::CURRENT, || async {
                    let Some(h) = Harness::postgres().await else { return };
                    $scenario(&h).await;
                    h.cleanup().await;
                }));
            )*
            trials
        }
    };
}

on_every_store!(
    own_key_life_cycle,
    sub_account_keys,
    pagination_while_keys_are_added,
    strangers_siblings_and_weaker_keys_are_refused,
    malformed_requests_answer_json_errors,
    identity_routes,
);

/// `keygate::routes::management` mounts the defaults (no prefix) and a
/// profile without sub-accounts gets no sub-account routes.
pub(crate) async fn management_mounts_the_defaults() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let admin = Harness::key_for(&api, "org", CreateKey::new("admin").bundle("full_access")).await;
    let router: Router = keygate::routes::management(&api).unwrap();
    let server = serve(router.fallback(keygate::routes::not_found)).await;
    let listed = server
        .get("/api-keys")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let sub = server
        .post("/sub-account")
        .bearer_auth(&admin)
        .json(&json!({"handle": "eu"}))
        .send()
        .await
        .unwrap();
    expect_error(sub, 404, "not_found", &admin).await;
}

/// A management or default scope the catalog does not define is a
/// configuration error when the routes are built.
pub(crate) async fn unknown_scopes_are_refused_when_building() {
    let api = ApiKeys::in_memory(profiles::mailchannels()).unwrap();
    let keys = ApiKeyLayer::new(api);
    let built = ManagementRoutes::new(&keys)
        .default_scopes(["sending"])
        .build::<()>();
    assert_eq!(built.unwrap_err().code(), "invalid_scope");
    let profile = profiles::mailchannels().with_management_scopes(
        keygate::profiles::ManagementScopes::new("api", "keys:write"),
    );
    assert!(ApiKeys::in_memory(profile).is_err());
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = every_store();
    trials.extend(trials![
        tokio(Rt::CURRENT) management_mounts_the_defaults,
        tokio(Rt::CURRENT) unknown_scopes_are_refused_when_building,
    ]);
    support::harness::run(trials)
}
