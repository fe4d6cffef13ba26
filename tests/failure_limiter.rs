//! `ApiKeyLayer::limit_failures`: a flood of well-formed unknown keys from
//! one client address reaches the store only as often as the address's
//! failure budget allows, then gets 429 with `Retry-After` without a store
//! query; other addresses, and the same address once the budget refills,
//! are served; memory stays bounded however many addresses flood.
//!
//! Requests go through the layer on a plain tower service with the client
//! address as a `SocketAddr` extension, and through a real axum server with
//! `ConnectInfo<SocketAddr>`. Store queries are counted by a wrapper around
//! the in-memory store; time is a `ManualClock`.
#![cfg(feature = "axum")]

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use keygate::layer::{ApiKeyLayer, FailureLimit};
use keygate::{profiles, AccountId, ApiKeys, CreateKey, ManualClock, Pepper, Principal, Quota};
use support::Counting;
use tower::{service_fn, Layer, ServiceExt};

/// The failure budget of these tests: 10 at once, then one per 6 s.
const BURST: usize = 10;
const INTERVAL: Duration = Duration::from_secs(6);

fn budget() -> Quota {
    Quota::per_minute(NonZeroU32::new(BURST as u32).unwrap())
}

struct Setup {
    api: ApiKeys,
    store: Arc<Counting>,
    clock: ManualClock,
    /// A valid key's secret.
    key: String,
}

async fn setup() -> Setup {
    setup_with(Counting::default()).await
}

async fn setup_with(store: Counting) -> Setup {
    let store = Arc::new(store);
    let clock = ManualClock::new();
    let (api, key) = api_with_key(Arc::clone(&store), &clock).await;
    Setup {
        api,
        store,
        clock,
        key,
    }
}

/// keygate on `store` and `clock`, with one valid key, named "good", whose
/// secret comes second.
async fn api_with_key(store: impl keygate::KeyStore, clock: &ManualClock) -> (ApiKeys, String) {
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(Pepper::new(1, [7u8; 32]).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let org = AccountId::new("org_flood").unwrap();
    let key = api
        .operator()
        .create(&org, CreateKey::new("good").bundle("sdk"))
        .await
        .unwrap()
        .key
        .expose_secret()
        .to_owned();
    (api, key)
}

/// Answers 200 with the caller's key name.
async fn echo(request: Request<()>) -> Result<Response<String>, Infallible> {
    let name = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.name().to_owned())
        .unwrap_or_default();
    Ok(Response::new(name))
}

fn layer(api: &ApiKeys, limit: impl Into<FailureLimit>) -> ApiKeyLayer {
    ApiKeyLayer::new(api.clone())
        .https_only(false)
        .limit_failures(limit)
}

/// A GET from `from` presenting `key` (none when `None`).
fn get(from: &str, key: Option<&str>) -> Request<()> {
    let mut request = Request::builder()
        .uri("/v1/me")
        .header("host", "api.example.com");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let mut request = request.body(()).unwrap();
    let ip: IpAddr = from.parse().unwrap();
    request.extensions_mut().insert(SocketAddr::new(ip, 40_000));
    request
}

/// A fresh random key of the profile's format: valid checksum, unknown.
fn made_up_key(api: &ApiKeys) -> String {
    api.profile().formats()[0]
        .generate()
        .to_presented()
        .to_string()
}

async fn call(layer: &ApiKeyLayer, request: Request<()>) -> Response<String> {
    layer
        .layer(service_fn(echo))
        .oneshot(request)
        .await
        .unwrap()
}

fn code(response: &Response<String>) -> String {
    let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

fn assert_blocked(response: &Response<String>, retry_after: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(response), "too_many_failures");
    assert_eq!(response.headers()["retry-after"], retry_after);
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn a_flood_of_unknown_keys_reaches_the_store_only_within_the_budget() {
    let s = setup().await;
    let keys = layer(&s.api, budget());
    let before = s.store.finds();
    let attacker = "192.0.2.66";
    let mut answers = Vec::new();
    for _ in 0..500 {
        let key = made_up_key(&s.api);
        answers.push(call(&keys, get(attacker, Some(&key))).await);
    }
    // Exactly the burst was looked up, and answered 401.
    assert_eq!(s.store.finds() - before, BURST);
    for response in &answers[..BURST] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(code(response), "invalid_api_key");
    }
    // The rest: 429 until the next failure fits, one interval away.
    for response in &answers[BURST..] {
        assert_blocked(response, "6");
    }

    // A valid key from the blocked address is refused too, unasked.
    let finds = s.store.finds();
    assert_blocked(&call(&keys, get(attacker, Some(&s.key))).await, "6");
    assert_eq!(s.store.finds(), finds);

    // Other addresses are served meanwhile, with their own budgets.
    let response = call(&keys, get("198.51.100.7", Some(&s.key))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "good");
    let response = call(&keys, get("198.51.100.8", Some(&made_up_key(&s.api)))).await;
    assert_eq!(code(&response), "invalid_api_key");

    // One interval later, one more failure is looked up; then blocked again.
    s.clock.advance(INTERVAL);
    let finds = s.store.finds();
    let response = call(&keys, get(attacker, Some(&made_up_key(&s.api)))).await;
    assert_eq!(code(&response), "invalid_api_key");
    assert_blocked(
        &call(&keys, get(attacker, Some(&made_up_key(&s.api)))).await,
        "6",
    );
    assert_eq!(s.store.finds(), finds + 1);

    // Once the window has passed, the address is admitted again: a valid
    // key works, and the whole budget is back.
    s.clock.advance(Duration::from_secs(60));
    let response = call(&keys, get(attacker, Some(&s.key))).await;
    assert_eq!(response.status(), StatusCode::OK);
    for _ in 0..BURST {
        let response = call(&keys, get(attacker, Some(&made_up_key(&s.api)))).await;
        assert_eq!(code(&response), "invalid_api_key");
    }
    assert_blocked(
        &call(&keys, get(attacker, Some(&made_up_key(&s.api)))).await,
        "6",
    );
}

#[tokio::test]
async fn successes_and_missing_credentials_spend_nothing() {
    let s = setup().await;
    let keys = layer(&s.api, budget());
    let from = "192.0.2.1";
    for _ in 0..100 {
        let response = call(&keys, get(from, Some(&s.key))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = call(&keys, get(from, None)).await;
        assert_eq!(code(&response), "missing_api_key");
    }
    for _ in 0..BURST {
        let response = call(&keys, get(from, Some(&made_up_key(&s.api)))).await;
        assert_eq!(code(&response), "invalid_api_key");
    }
    // Blocked for keys; a request without one still gets its 401.
    assert_blocked(&call(&keys, get(from, Some(&s.key))).await, "6");
    let response = call(&keys, get(from, None)).await;
    assert_eq!(code(&response), "missing_api_key");
}

#[tokio::test]
async fn malformed_and_revoked_keys_spend_the_budget_too() {
    let s = setup().await;
    let keys = layer(&s.api, budget());
    let org = AccountId::new("org_flood").unwrap();
    let revoked = s
        .api
        .operator()
        .create(&org, CreateKey::new("gone").bundle("sdk"))
        .await
        .unwrap();
    s.api.operator().revoke(&revoked.info.id).await.unwrap();
    let revoked = revoked.key.expose_secret().to_owned();

    let from = "192.0.2.2";
    // A broken checksum is refused without a lookup, and still counts.
    let mut broken = made_up_key(&s.api);
    let last = broken.pop().unwrap();
    broken.push(if last == 'A' { 'B' } else { 'A' });
    let finds = s.store.finds();
    for _ in 0..BURST / 2 {
        let response = call(&keys, get(from, Some(&broken))).await;
        assert_eq!(code(&response), "malformed_api_key");
    }
    assert_eq!(s.store.finds(), finds);
    for _ in 0..BURST / 2 {
        let response = call(&keys, get(from, Some(&revoked))).await;
        assert_eq!(code(&response), "revoked_api_key");
    }
    assert_blocked(&call(&keys, get(from, Some(&revoked))).await, "6");
}

#[tokio::test]
async fn an_ipv6_slash_64_shares_one_budget() {
    let s = setup().await;
    let keys = layer(&s.api, budget());
    for i in 0..BURST {
        let from = format!("2001:db8:7:7::{:x}", i + 1);
        let response = call(&keys, get(&from, Some(&made_up_key(&s.api)))).await;
        assert_eq!(code(&response), "invalid_api_key");
    }
    let same_64 = "2001:db8:7:7:ffff:ffff:ffff:ffff";
    assert_blocked(
        &call(&keys, get(same_64, Some(&made_up_key(&s.api)))).await,
        "6",
    );
    let next_64 = "2001:db8:7:8::1";
    let response = call(&keys, get(next_64, Some(&s.key))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_floods_never_pass_the_budget() {
    // Slow lookups: hundreds are in flight at once.
    let s = setup_with(Counting {
        lookup_delay: Some(Duration::from_millis(50)),
        ..Counting::default()
    })
    .await;
    let keys = layer(&s.api, budget());
    let before = s.store.finds();
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let keys = keys.clone();
        let key = made_up_key(&s.api);
        tasks.push(tokio::spawn(async move {
            call(&keys, get("192.0.2.9", Some(&key))).await.status()
        }));
    }
    let mut unauthorized = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            status => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
        }
    }
    // Tokens are taken before the lookup, so concurrency cannot overrun.
    assert_eq!(unauthorized, BURST);
    assert_eq!(s.store.finds() - before, BURST);
}

#[tokio::test]
async fn memory_stays_bounded_under_a_flood_from_many_addresses() {
    let s = setup().await;
    let limit = FailureLimit::new(budget()).max_addresses(1_000);
    assert_eq!(limit.max_addresses_held(), 1_024);
    let keys = layer(&s.api, limit);
    assert_eq!(keys.failure_limited_addresses(), Some(0));
    let mut most = 0;
    // Every address spends its whole budget, so none is ever idle.
    for i in 0..5_000u32 {
        let from = std::net::Ipv4Addr::from(u32::from_be_bytes([10, 0, 0, 0]) + i).to_string();
        for _ in 0..BURST {
            let response = call(&keys, get(&from, Some(&made_up_key(&s.api)))).await;
            assert_eq!(code(&response), "invalid_api_key");
        }
        most = most.max(keys.failure_limited_addresses().unwrap());
    }
    // Never above the bound; full shards drop a sixteenth (2 of their 32)
    // at a time, so the map stays near it.
    assert!(most <= 1_024, "{most}");
    let held = keys.failure_limited_addresses().unwrap();
    assert!(held >= 32 * 30, "{held}");
    // The latest address is still tracked, and blocked.
    assert_blocked(
        &call(&keys, get("10.0.19.135", Some(&made_up_key(&s.api)))).await,
        "6",
    );
    // Without a failure limit there is nothing to count.
    assert_eq!(
        ApiKeyLayer::new(s.api.clone()).failure_limited_addresses(),
        None
    );
}

#[tokio::test]
async fn forwarded_for_is_read_only_when_trusted() {
    let s = setup().await;
    let proxy = "10.0.0.1";
    let via = |client: &str, key: &str| {
        let mut request = get(proxy, Some(key));
        request.headers_mut().insert(
            "x-forwarded-for",
            format!("6.6.6.6, {client}").parse().unwrap(),
        );
        request
    };
    let trusting = layer(&s.api, FailureLimit::new(budget()).trust_forwarded_for(1));
    for _ in 0..BURST + 5 {
        let _ = call(&trusting, via("203.0.113.5", &made_up_key(&s.api))).await;
    }
    assert_blocked(
        &call(&trusting, via("203.0.113.5", &made_up_key(&s.api))).await,
        "6",
    );
    // Another client behind the same proxy is served.
    let response = call(&trusting, via("203.0.113.6", &s.key)).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Untrusted, the header is ignored: every client is the proxy.
    let untrusting = layer(&s.api, budget());
    for i in 0..BURST {
        let client = format!("203.0.113.{}", 10 + i);
        let response = call(&untrusting, via(&client, &made_up_key(&s.api))).await;
        assert_eq!(code(&response), "invalid_api_key");
    }
    assert_blocked(&call(&untrusting, via("203.0.113.6", &s.key)).await, "6");
}

#[tokio::test]
async fn layers_derived_from_one_share_its_budget() {
    let s = setup().await;
    let keys = layer(&s.api, budget());
    let read = keys.require("subscribers:read").unwrap();
    for _ in 0..BURST {
        let response = call(&keys, get("192.0.2.3", Some(&made_up_key(&s.api)))).await;
        assert_eq!(code(&response), "invalid_api_key");
    }
    assert_blocked(
        &call(&read, get("192.0.2.3", Some(&made_up_key(&s.api)))).await,
        "6",
    );
    assert_eq!(keys.failure_limit().unwrap().quota(), &budget());
    assert!(format!("{keys:?}").contains("failure_limit: Some"));
}

/// The same through a real server: the client address is axum's
/// `ConnectInfo<SocketAddr>`, and a second client connects from 127.0.0.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_limits_by_the_connection_address() {
    let s = setup().await;
    let keys = layer(&s.api, budget());
    let app = axum::Router::new()
        .route(
            "/v1/me",
            axum::routing::get(|p: Principal| async move { p.name().to_owned() }),
        )
        .route_layer(keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let url = format!("http://{addr}/v1/me");
    let client = |from: &str| {
        reqwest::Client::builder()
            .local_address(from.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let attacker = client("127.0.0.1");
    let before = s.store.finds();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..50 {
        let response = attacker
            .get(&url)
            .bearer_auth(made_up_key(&s.api))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "too_many_failures");
        }
    }
    assert_eq!(s.store.finds() - before, BURST);
    assert!(statuses[..BURST].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(statuses[BURST..].iter().all(|&s| s == 429), "{statuses:?}");
    assert_eq!(retry_after.unwrap(), "6");

    let neighbour = client("127.0.0.2");
    let response = neighbour
        .get(&url)
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "good");
    let response = attacker.get(&url).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(response.status(), 429);
    server.abort();
}

/// On the in-memory store the layer can answer without waiting; a failure
/// limit must hold there too, not only on stores that make it wait.
#[tokio::test]
async fn the_limit_holds_on_a_store_that_answers_from_memory() {
    let clock = ManualClock::new();
    let (api, good) = api_with_key(keygate::MemoryStore::new(), &clock).await;
    let keys = layer(&api, budget());
    for _ in 0..BURST {
        let response = call(&keys, get("203.0.113.9", Some(&made_up_key(&api)))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = call(&keys, get("203.0.113.9", Some(&made_up_key(&api)))).await;
    assert_blocked(&response, "6");
    let response = call(&keys, get("203.0.113.9", Some(&good))).await;
    assert_blocked(&response, "6");
    // Another address is untouched, and without a limit the same layer's
    // requests are answered as before.
    let response = call(&keys, get("198.51.100.7", Some(&good))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "good");
}
