//! Serves the demo routers of `examples/server_app` on a real TCP socket on
//! 127.0.0.1 for the HTTP tests, and checks error responses.
#![allow(dead_code)]

#[path = "../../examples/server_app/mod.rs"]
pub mod app;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request};
use axum::Router;
use keygate::hash::SecretHash;
use keygate::store::{AccountRecord, KeyChange, KeyEntry, KeyRecord, ListQuery, OldKey, Spend};
use keygate::{AccountId, ApiKeys, KeyId, KeyStore, ManualClock, MemoryStore, Profile, StoreError};
use reqwest::header::HeaderMap;
use serde_json::Value;
use time::OffsetDateTime;
use tower::util::MapRequestLayer;

pub use app::{Options, Product};

/// A demo server listening on 127.0.0.1 and a client for it.
pub struct Server {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn head(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.head(self.url(path))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path))
    }
}

/// Serves `router` on 127.0.0.1 (port chosen by the OS) with `ConnectInfo`.
pub async fn serve(router: Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    Server { addr, client }
}

/// Serves `router` as if every peer were `peer` (e.g. a non-loopback
/// address): the real `ConnectInfo` is replaced before routing.
pub async fn serve_as_peer(router: Router, peer: SocketAddr) -> Server {
    let router = router.layer(MapRequestLayer::new(move |mut request: Request| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }));
    serve(router).await
}

/// A service for `profile` on the memory store with a manual clock.
pub fn service(profile: Profile) -> (ApiKeys, ManualClock) {
    let clock = ManualClock::new();
    let api = ApiKeys::builder(profile)
        .clock(clock.clone())
        .build()
        .unwrap();
    (api, clock)
}

/// A MailKite service on the memory store whose keys and session tokens
/// read one manual clock.
#[cfg(feature = "sessions")]
pub fn mailkite_service() -> (ApiKeys, ManualClock) {
    let clock = ManualClock::new();
    let sessions = keygate::session::Sessions::builder("keygate-test", "mailkite-dashboard")
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let api = ApiKeys::builder(keygate::profiles::mailkite())
        .clock(clock.clone())
        .sessions(sessions)
        .build()
        .unwrap();
    (api, clock)
}

/// Serves the demo router of `product` on `api`; returns the server and the
/// admin key.
pub async fn start(product: Product, api: &ApiKeys, options: Options) -> (Server, String) {
    let admin = app::admin_key(api, None).await.unwrap();
    let router = app::router(product, api.clone(), options).unwrap();
    (serve(router).await, admin)
}

/// Reads a JSON body.
pub async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Creates a key on the demo router as the bearer `admin`, expecting 201, and
/// returns the body.
pub async fn create_key(server: &Server, admin: &str, body: Value) -> Value {
    let response = server
        .post("/v1/api-keys")
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    json(response).await
}

/// Adds the subscriber `ada@example.com` with the bearer `key`.
pub async fn add_subscriber(server: &Server, key: &str) -> reqwest::Response {
    server
        .post("/v1/subscribers")
        .bearer_auth(key)
        .json(&serde_json::json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap()
}

/// Asserts that `response` is keygate's JSON error with this status and code,
/// that its body does not contain `presented` (nor its secret part), and
/// returns its headers and message.
pub async fn expect_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
    presented: &str,
) -> (HeaderMap, String) {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(response.headers()["content-type"], "application/json");
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    if presented.len() > 12 {
        assert!(
            !text.contains(presented) && !text.contains(&presented[8..]),
            "error body echoes the key: {text}"
        );
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], code, "{text}");
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    (headers, message)
}

/// A header as text.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// A memory store that can be switched to "unreachable" for verify (lookups)
/// and for management calls (everything else), to check 503 answers.
#[derive(Debug, Default)]
pub struct FlakyStore {
    inner: MemoryStore,
    pub lookups_down: Arc<AtomicBool>,
    pub management_down: Arc<AtomicBool>,
}

impl FlakyStore {
    fn check(flag: &AtomicBool) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "connection refused by 10.0.0.9".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn manage(&self) -> Result<(), StoreError> {
        Self::check(&self.management_down)
    }
}

#[async_trait]
impl KeyStore for FlakyStore {
    async fn create_account(&self, account: AccountRecord) -> Result<(), StoreError> {
        self.manage()?;
        self.inner.create_account(account).await
    }

    async fn get_account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.manage()?;
        self.inner.get_account(id).await
    }

    async fn insert_key(
        &self,
        record: KeyRecord,
        limit: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.manage()?;
        self.inner.insert_key(record, limit, now).await
    }

    async fn find_by_lookup(&self, lookup: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        Self::check(&self.lookups_down)?;
        self.inner.find_by_lookup(lookup).await
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        self.manage()?;
        self.inner.get_key(id).await
    }

    async fn list_keys(
        &self,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.manage()?;
        self.inner.list_keys(account, query).await
    }

    async fn revoke_key(&self, id: &KeyId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.manage()?;
        self.inner.revoke_key(id, at).await
    }

    async fn replace_secret(
        &self,
        id: &KeyId,
        lookup: &str,
        hash: SecretHash,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.manage()?;
        self.inner.replace_secret(id, lookup, hash, at).await
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: KeyRecord,
        old_key: OldKey,
    ) -> Result<(), StoreError> {
        self.manage()?;
        self.inner.rotate_key(old, new, old_key).await
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<KeyRecord, StoreError> {
        self.manage()?;
        self.inner.update_key(id, change).await
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
        now: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        self.inner.spend_credits(id, cost, now).await
    }

    async fn record_last_used(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.record_last_used(uses).await
    }

    fn needs_last_used_flush(&self) -> bool {
        self.inner.needs_last_used_flush()
    }

    fn keeps_entries(&self) -> bool {
        self.inner.keeps_entries()
    }

    fn is_persistent(&self) -> bool {
        self.inner.is_persistent()
    }
}
