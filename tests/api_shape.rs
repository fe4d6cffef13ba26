//! The API is hard to misuse: each case here was a trap a reviewer fell into
//! (nested layers charging twice, a method added after `route_layer` served
//! without a key, a `Principal` on an unlayered route answering 401, account
//! ids deserialized unchecked, `?` not mixing auth and management errors, a
//! shared store that could not be passed as one, the last-used flusher
//! missing without the SQL features, two time types, a bootstrap key that
//! could not be imported twice). It builds with `--no-default-features
//! --features axum` as well as with every feature.
#![cfg(feature = "axum")]

mod http_support;
mod support;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use http_support::{expect_error, header, serve};
use keygate::layer::{ApiKeyLayer, Require};
use keygate::{
    profiles, AccountId, ApiKeys, CreateKey, Error, ListOptions, MemoryStore, Page, Principal,
    Quota,
};
use serde_json::json;

async fn whoami(principal: Principal) -> String {
    principal.name().to_owned()
}

async fn open() -> &'static str {
    "open"
}

async fn admin(api: &ApiKeys) -> String {
    let org = AccountId::new("org").unwrap();
    let key = api
        .operator()
        .create(&org, CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    key.key.expose_secret().to_owned()
}

#[tokio::test]
async fn nested_layers_verify_and_charge_once() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let key = admin(&api).await;
    let keys = ApiKeyLayer::new(api.clone());
    let app = Router::new()
        .route(
            "/v1/subscribers",
            get(whoami).route_layer(keys.require("subscribers:read").unwrap()),
        )
        .route(
            "/v1/emails/send",
            post(whoami).route_layer(keys.operation("send").unwrap()),
        )
        .route(
            "/v1/campaigns",
            get(whoami).route_layer(keys.require("campaigns:write").unwrap()),
        )
        .route_layer(keys.clone());
    let server = serve(app).await;
    for expected in ["99", "98", "97"] {
        let r = server
            .get("/v1/subscribers")
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(r.headers(), "ratelimit-remaining"), expected);
    }
    // An inner route class is charged once, in its own bucket; the outer
    // method class is charged once too.
    let r = server
        .post("/v1/emails/send")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "ratelimit-limit"), "10");
    assert_eq!(header(r.headers(), "ratelimit-remaining"), "9");
    // The inner layer's scope still applies.
    let sdk = api
        .operator()
        .create(
            &AccountId::new("org").unwrap(),
            CreateKey::new("sdk").scopes(["subscribers:read"]),
        )
        .await
        .unwrap();
    let sdk = sdk.key.expose_secret().to_owned();
    let r = server
        .get("/v1/campaigns")
        .bearer_auth(&sdk)
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "insufficient_scope", &sdk).await;
}

#[tokio::test]
async fn a_principal_without_a_layer_is_a_loud_configuration_error() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let key = admin(&api).await;
    let keys = ApiKeyLayer::new(api.clone());
    let app = Router::new()
        // The pitfall: POST is added after the layer, so the layer does not
        // wrap it. A handler that wants a Principal fails loudly...
        .route(
            "/v1/subscribers",
            get(whoami)
                .route_layer(keys.require("subscribers:read").unwrap())
                .post(whoami),
        )
        // ...as does one on a route with no layer at all.
        .route("/v1/me", get(whoami))
        .route("/v1/open", get(open));
    let server = serve(app).await;
    for (method, path) in [("POST", "/v1/subscribers"), ("GET", "/v1/me")] {
        for with_key in [false, true] {
            let request = if method == "POST" {
                server.post(path)
            } else {
                server.get(path)
            };
            let request = if with_key {
                request.bearer_auth(&key)
            } else {
                request
            };
            let r = request.send().await.unwrap();
            expect_error(r, 500, "api_key_layer_missing", &key).await;
        }
    }
    let r = server.get("/v1/subscribers").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = server.get("/v1/open").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn account_ids_deserialize_through_their_validation() {
    for bad in [
        json!(""),
        json!("a\u{0}b"),
        json!("line\nbreak"),
        json!("x".repeat(500)),
        json!("a//b"),
        json!("/a"),
    ] {
        assert!(
            serde_json::from_value::<AccountId>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    let ok: AccountId = serde_json::from_value(json!("org_1/eu")).unwrap();
    assert_eq!(ok.parent(), Some(AccountId::new("org_1").unwrap()));
}

/// Verification and management errors mix with `?` in one handler.
async fn list_with(api: &ApiKeys, presented: &str) -> Result<Page, Error> {
    let principal = api.verify(presented).await?;
    let page = api
        .as_key(&principal)
        .list(principal.account(), ListOptions::default())
        .await?;
    Ok(page)
}

#[tokio::test]
async fn auth_and_management_errors_share_one_type() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let key = admin(&api).await;
    assert_eq!(list_with(&api, &key).await.unwrap().data.len(), 1);
    let err = list_with(&api, "mj_garbage").await.unwrap_err();
    assert_eq!(err.status(), 401);
    assert_eq!(err.code(), "malformed_api_key");
}

#[tokio::test]
async fn a_shared_store_is_passed_as_a_store() {
    let store = Arc::new(MemoryStore::new());
    let a = ApiKeys::builder(profiles::mailjawn())
        .store(Arc::clone(&store))
        .build()
        .unwrap();
    let b = ApiKeys::builder(profiles::mailjawn())
        .store(Arc::clone(&store))
        .build()
        .unwrap();
    let org = AccountId::new("org").unwrap();
    a.operator()
        .create(&org, CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    assert_eq!(store.len(), 1);
    assert_eq!(
        b.operator()
            .list(&org, ListOptions::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    // A store already shared as `Arc<dyn KeyStore>` is taken as is, not
    // wrapped again.
    let shared: Arc<dyn keygate::KeyStore> = store;
    let c = ApiKeys::builder(profiles::mailjawn())
        .store(Arc::clone(&shared))
        .build()
        .unwrap();
    assert!(Arc::ptr_eq(c.store(), &shared));
    assert_eq!(
        c.operator()
            .list(&org, ListOptions::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
}

#[tokio::test]
async fn create_requests_deserialize_with_limits() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = AccountId::new("org").unwrap();
    let request: CreateKey = serde_json::from_value(json!({
        "label": "CI",
        "bundle": "sdk",
        "expires_at": "2100-01-01T00:00:00Z",
        "rate_limits": {"write": {"limit": 5, "period_ms": 60000}}
    }))
    .unwrap();
    let new = api.operator().create(&org, request).await.unwrap();
    assert_eq!(new.info.name, "CI");
    assert_eq!(
        new.info.rate_limits.get("write"),
        Some(&Quota::per_minute(std::num::NonZeroU32::new(5).unwrap()))
    );
    let body = serde_json::to_value(new.response()).unwrap();
    assert_eq!(body["key"], new.key.expose_secret());
    assert_eq!(body["id"], new.info.id.as_str());
    assert!(!format!("{:?}", new.response()).contains(new.key.expose_secret()));
    // Unknown fields are refused; too many scopes are refused at creation.
    assert!(serde_json::from_value::<CreateKey>(json!({"name": "x", "admin": true})).is_err());
    let many: Vec<String> = (0..200).map(|_| "subscribers:read".to_owned()).collect();
    let request: CreateKey = serde_json::from_value(json!({"name": "x", "scopes": many})).unwrap();
    assert!(matches!(
        api.operator().create(&org, request).await,
        Err(Error::Invalid(_))
    ));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_bootstrap_key_is_ensured_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let kept = profiles::mailjawn().formats()[0]
        .generate()
        .expose_secret()
        .to_owned();
    let org = AccountId::new("org_admin").unwrap();
    let grant = || CreateKey::new("admin").bundle("full_access");
    let mut ids = Vec::new();
    // Three "starts" of a service on one database.
    for _ in 0..3 {
        let store = keygate::SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        let api = ApiKeys::builder(profiles::mailjawn())
            .store(store)
            .pepper(keygate::Pepper::new(1, [8u8; 32]).unwrap())
            .build()
            .unwrap();
        ids.push(
            api.operator()
                .ensure_key(&org, &kept, grant())
                .await
                .unwrap()
                .id,
        );
        assert_eq!(
            api.operator()
                .list(&org, ListOptions::default())
                .await
                .unwrap()
                .data
                .len(),
            1
        );
        // Another grant or account is a conflict, never a silent change.
        assert!(matches!(
            api.operator()
                .ensure_key(&org, &kept, CreateKey::new("admin").bundle("sdk"))
                .await,
            Err(Error::Conflict(_))
        ));
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn json_bodies_are_bounded_and_refused_in_one_shape() {
    use keygate::layer::{JsonBody, MAX_BODY_LEN};
    async fn create(JsonBody(request): JsonBody<CreateKey>) -> String {
        request.name().to_owned()
    }
    let server = serve(Router::new().route("/keys", post(create))).await;
    let ok = server
        .post("/keys")
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "ci");
    let huge = "x".repeat(MAX_BODY_LEN + 1);
    let r = server
        .post("/keys")
        .json(&json!({ "name": huge }))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "body_too_large", "").await;
    for bad in [
        &b"{\"name\": 5}"[..],
        b"{\"name\": \"x\", \"root\": true}",
        b"\xff\xfe",
        b"[1, 2",
    ] {
        let r = server
            .post("/keys")
            .body(bad.to_vec())
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "invalid_json", "").await;
    }
}

#[test]
fn key_ids_deserialize_through_their_validation() {
    for bad in [
        json!(""),
        json!("key with space"),
        json!("é"),
        json!("k".repeat(200)),
    ] {
        assert!(
            serde_json::from_value::<keygate::KeyId>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    let id: keygate::KeyId = serde_json::from_value(json!("key_0193a0c2f1e2abc")).unwrap();
    assert_eq!(id.as_str(), "key_0193a0c2f1e2abc");
}

#[tokio::test]
async fn all_scopes_uses_the_all_bundle_or_every_scope() {
    let org = AccountId::new("org").unwrap();
    let jawn = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let admin = jawn
        .operator()
        .create(&org, CreateKey::new("admin").all_scopes())
        .await
        .unwrap();
    assert_eq!(admin.info.bundle.as_deref(), Some("full_access"));
    let channels =
        ApiKeys::in_memory(profiles::mailchannels().with_one_scope_per_key(false)).unwrap();
    let admin = channels
        .operator()
        .create(&org, CreateKey::new("admin").all_scopes())
        .await
        .unwrap();
    assert_eq!(admin.info.bundle, None);
    assert_eq!(admin.info.scopes, ["api", "inbound"]);
    // A weaker key cannot ask for everything.
    let weak = channels
        .operator()
        .create(&org, CreateKey::new("api").scopes(["api"]))
        .await
        .unwrap();
    let weak = channels.verify(weak.key.expose_secret()).await.unwrap();
    assert_eq!(
        channels
            .as_key(&weak)
            .create(&org, CreateKey::new("x").all_scopes())
            .await
            .map(drop),
        Err(Error::InsufficientScope)
    );
}

#[tokio::test]
async fn an_inner_layer_of_another_service_never_trusts_the_outer_principal() {
    // Two services whose catalogs number their scopes differently: bit 0 is
    // `read` for the outer one and `admin` for the inner one.
    let outer = ApiKeys::in_memory(profiles::default()).unwrap();
    let catalog = keygate::ScopeCatalog::new()
        .scopes(["admin", "write", "read"])
        .and_then(|c| c.bundle("read_only", ["read"]))
        .and_then(|c| c.bundle_all("full_access"))
        .unwrap();
    let inner = ApiKeys::in_memory(profiles::default().with_catalog(catalog)).unwrap();
    let reader = outer
        .operator()
        .create(
            &AccountId::new("org").unwrap(),
            CreateKey::new("r").bundle("read_only"),
        )
        .await
        .unwrap();
    let reader = reader.key.expose_secret().to_owned();
    let app = Router::new()
        .route(
            "/admin",
            get(whoami).route_layer(ApiKeyLayer::new(inner.clone()).require("admin").unwrap()),
        )
        .route_layer(ApiKeyLayer::new(outer.clone()));
    let server = serve(app).await;
    let r = server
        .get("/admin")
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    // The inner service verifies the key itself, and does not know it.
    expect_error(r, 401, "invalid_api_key", &reader).await;
    let principal = outer.verify(&reader).await.unwrap();
    assert!(outer.issued(&principal));
    assert!(!inner.issued(&principal));
    assert_eq!(
        inner
            .refine(
                principal,
                &inner.operation("x").unwrap().require("admin").unwrap()
            )
            .await
            .unwrap_err(),
        keygate::AuthError::Invalid
    );
}

keygate::required_scope!(SubscribersWrite = "subscribers:write");
keygate::required_scope!(NotInCatalog = "subscribers:delete");

async fn add_subscriber(caller: Require<SubscribersWrite>) -> String {
    format!("added by {}", caller.name())
}

async fn misdeclared(_: Require<NotInCatalog>) -> &'static str {
    "never"
}

/// The [tried] trap: `get(h).route_layer(keys.require(..)?).post(h2)` served
/// POST with no key. With `Require<…>` in the POST handler, the requirement
/// travels with the handler: POST is never served without the scope.
#[tokio::test]
async fn a_method_added_after_route_layer_is_refused_when_its_handler_requires() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let full = admin(&api).await;
    let org = AccountId::new("org").unwrap();
    let reader = api
        .operator()
        .create(&org, CreateKey::new("reader").scopes(["subscribers:read"]))
        .await
        .unwrap();
    let reader = reader.key.expose_secret().to_owned();
    let keys = ApiKeyLayer::new(api.clone());

    // The trap as written: POST added after the method's layer.
    let trap = Router::new()
        .route(
            "/v1/subscribers",
            get(whoami)
                .route_layer(keys.require("subscribers:read").unwrap())
                .post(add_subscriber),
        )
        .with_state(api.clone());
    let server = serve(trap).await;
    for key in [None, Some(&reader), Some(&full)] {
        let request = server.post("/v1/subscribers");
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let r = request.send().await.unwrap();
        expect_error(r, 500, "api_key_layer_missing", &full).await;
    }

    // The shape to use: one layer over the router, requirements in handlers.
    let app = Router::new()
        .route("/v1/subscribers", get(whoami).post(add_subscriber))
        .route("/v1/misdeclared", get(misdeclared))
        .route_layer(keys.clone())
        .with_state(api.clone());
    let server = serve(app).await;
    let r = server.post("/v1/subscribers").send().await.unwrap();
    expect_error(r, 401, "missing_api_key", &full).await;
    let r = server
        .post("/v1/subscribers")
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "insufficient_scope", &reader).await;
    let r = server
        .get("/v1/subscribers")
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .post("/v1/subscribers")
        .bearer_auth(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The requirement charged nothing: the write bucket (30/min) lost one
    // token for one request.
    assert_eq!(header(r.headers(), "ratelimit-limit"), "30");
    assert_eq!(header(r.headers(), "ratelimit-remaining"), "29");
    assert_eq!(r.text().await.unwrap(), "added by admin");
    // A scope the catalog lacks is a configuration error, not a 403.
    let r = server
        .get("/v1/misdeclared")
        .bearer_auth(&full)
        .send()
        .await
        .unwrap();
    expect_error(r, 500, "unknown_scope", &full).await;
}

/// `Require` trusts only a principal verified by the service in the state:
/// one from a layer of another service is a missing layer, not a grant.
#[tokio::test]
async fn require_ignores_a_principal_of_another_service() {
    let other = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let key = admin(&other).await;
    let app = Router::new()
        .route("/v1/subscribers", post(add_subscriber))
        .route_layer(ApiKeyLayer::new(other.clone()))
        .with_state(api);
    let server = serve(app).await;
    let r = server
        .post("/v1/subscribers")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_error(r, 500, "api_key_layer_missing", &key).await;
}

/// The [tried] E0599: `spawn_last_used_flusher` existed only with the SQL
/// features. It exists with `tower`/`axum` too, and runs for a custom store
/// whose entries need flushing (this file builds with
/// `--no-default-features --features axum`).
#[tokio::test]
async fn the_last_used_flusher_runs_for_a_custom_store_under_the_layer_features() {
    let store = Arc::new(support::Counting {
        fresh_entries: true,
        ..Default::default()
    });
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(Arc::clone(&store))
        .pepper(keygate::Pepper::new(1, [7u8; 32]).unwrap())
        .build()
        .unwrap();
    let flusher = api.spawn_last_used_flusher(std::time::Duration::from_secs(3600));
    let key = admin(&api).await;
    let principal = api.verify(&key).await.unwrap();
    // The stamp is in memory only until the flusher's final flush writes it.
    assert_eq!(flusher.shutdown().await.unwrap(), 1);
    let stored = api.operator().get(principal.key_id()).await.unwrap();
    assert!(stored.last_used_at.is_some());
}

/// The [tried] item "two time types in one API": instants are
/// `keygate::time::OffsetDateTime` (re-exported, so no `time` dependency of
/// one's own), and every duration, `Rotation::Grace` included, is
/// `std::time::Duration`.
#[tokio::test]
async fn one_instant_type_and_one_duration_type() {
    use keygate::time::OffsetDateTime;
    use keygate::Rotation;
    use std::time::Duration;

    let day = Duration::from_secs(24 * 60 * 60);
    let api = ApiKeys::in_memory(profiles::mailjawn().with_max_grace(day)).unwrap();
    let org = AccountId::new("org").unwrap();
    let expires: OffsetDateTime = OffsetDateTime::now_utc() + day;
    let old = api
        .operator()
        .create(
            &org,
            CreateKey::new("k")
                .bundle("sdk")
                .expires_at(expires)
                .rate_limit("write", Quota::new(5, Duration::from_secs(60)).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(api.profile().max_grace(), day);
    assert_eq!(
        api.operator()
            .rotate(&old.info.id, Rotation::Grace(day + Duration::from_secs(1)))
            .await
            .map(drop)
            .unwrap_err()
            .code(),
        "invalid_request"
    );
    let grace = Duration::from_secs(60 * 60);
    let before = OffsetDateTime::now_utc();
    api.operator()
        .rotate(&old.info.id, Rotation::Grace(grace))
        .await
        .unwrap();
    let old = api.operator().get(&old.info.id).await.unwrap();
    let ends: OffsetDateTime = old.expires_at.unwrap();
    assert!(ends >= before + grace && ends <= OffsetDateTime::now_utc() + grace);
}
