//! MailKite over HTTP, end to end on a real socket: the statements of
//! `shared/seeds/003_ce8d37cf50e3a0d1.txt` (MailKite authentication) that
//! concern requests, checked against the demo router of `examples/server_app`.
#![cfg(all(feature = "axum", feature = "sessions"))]

mod http_support;

use std::net::SocketAddr;

use http_support::app;
use http_support::{
    expect_error, header, json, mailkite_service, serve, serve_as_peer, service, start, Options,
    Product, Server,
};
use keygate::profiles;
use serde_json::json;

async fn mailkite(options: Options) -> (Server, String) {
    let (api, _) = mailkite_service();
    start(Product::MailKite, &api, options).await
}

async fn signup(server: &Server, email: &str) -> String {
    let response = server
        .post("/api/auth/signup")
        .json(&json!({ "email": email, "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    assert_eq!(body["user"]["email"], email);
    body["key"].as_str().unwrap().to_owned()
}

// "Your account has a single mk_live_… API key from the moment you sign up"
// and it "authenticates every endpoint" as `Authorization: Bearer`.
#[tokio::test]
async fn signup_returns_one_full_scope_live_key() {
    let (server, _) = mailkite(Options::default()).await;
    let key = signup(&server, "you@example.com").await;
    assert!(key.starts_with("mk_live_"));

    let domains = server
        .get("/api/domains")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(domains.status(), 200);
    assert_eq!(json(domains).await["data"], json!([]));
    let sent = server
        .post("/v1/send")
        .bearer_auth(&key)
        .json(&json!({"to": "a@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);

    let again = server
        .post("/api/auth/signup")
        .json(&json!({"email": "you@example.com", "password": "another password"}))
        .send()
        .await
        .unwrap();
    expect_error(again, 409, "conflict", &key).await;
    let bad = server
        .post("/api/auth/signup")
        .json(&json!({"mail": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(bad, 400, "invalid_json", &key).await;
}

// "A missing or invalid credential returns 401 Unauthorized."
#[tokio::test]
async fn missing_or_invalid_keys_are_401() {
    let (server, admin) = mailkite(Options::default()).await;
    let missing = server.get("/api/domains").send().await.unwrap();
    let (headers, _) = expect_error(missing, 401, "missing_api_key", &admin).await;
    assert_eq!(header(&headers, "www-authenticate"), "Bearer realm=\"api\"");

    let mut typo = admin.clone().into_bytes();
    let i = typo.len() - 10;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let malformed = server
        .get("/api/domains")
        .bearer_auth(&typo)
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(malformed, 401, "malformed_api_key", &typo).await;
    assert!(message.contains("checksum"), "{message}");

    let unknown = keygate::KeyFormat::Token(keygate::TokenFormat::new("mk_live_")).generate();
    let unknown = unknown.expose_secret();
    let invalid = server
        .get("/api/domains")
        .bearer_auth(unknown)
        .send()
        .await
        .unwrap();
    expect_error(invalid, 401, "invalid_api_key", unknown).await;

    // A dashboard session token is a different credential kind: a forged
    // one is refused by the session verifier.
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlc2lnbmF0dXJl";
    let session = server
        .get("/api/domains")
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    expect_error(session, 401, "invalid_session", jwt).await;
}

// "Need a fresh one? Rotate it in the dashboard; rotating invalidates the old
// key immediately."
#[tokio::test]
async fn rotating_invalidates_the_old_key_at_once() {
    let (server, _) = mailkite(Options::default()).await;
    let old = signup(&server, "rotate@example.com").await;
    let rotated = server
        .post("/api/api-key/rotate")
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 201);
    let new = json(rotated).await["key"].as_str().unwrap().to_owned();
    assert!(new.starts_with("mk_live_"));
    assert_ne!(new, old);

    let stale = server
        .get("/api/domains")
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    expect_error(stale, 401, "revoked_api_key", &old).await;
    let fresh = server
        .get("/api/domains")
        .bearer_auth(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    // Still one active key.
    let keys = json(
        server
            .get("/api/api-key")
            .bearer_auth(&new)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
}

// "an unknown or non-owned resource returns 404 Not Found."
#[tokio::test]
async fn another_accounts_domain_is_404() {
    let (server, _) = mailkite(Options::default()).await;
    let alice = signup(&server, "alice@example.com").await;
    let bob = signup(&server, "bob@example.com").await;
    let domain = server
        .post("/api/domains")
        .bearer_auth(&alice)
        .json(&json!({"name": "alice.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(domain.status(), 201);
    let id = json(domain).await["id"].as_str().unwrap().to_owned();

    let own = server
        .get(&format!("/api/domains/{id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let theirs = server
        .get(&format!("/api/domains/{id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    expect_error(theirs, 404, "not_found", &bob).await;
    let unknown = server
        .get("/api/domains/dom_999")
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    expect_error(unknown, 404, "not_found", &bob).await;
    let listed = json(
        server
            .get("/api/domains")
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["data"], json!([]));
}

// "All requests must use HTTPS. Requests over plain HTTP are rejected (except
// http://localhost for local webhook testing)."
#[tokio::test]
async fn plain_http_to_a_public_host_is_refused() {
    let (server, admin) = mailkite(Options::default()).await;
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let local = server
            .get("/api/domains")
            .header("host", format!("{host}:{}", server.addr.port()))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(local.status(), 200, "{host}");
    }

    let public = server
        .get("/api/domains")
        .header("host", "api.example.com")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (headers, message) = expect_error(public, 403, "https_required", &admin).await;
    assert!(message.contains("https"));
    assert!(headers.get("www-authenticate").is_none());
    // Refused before the key is even looked at, and sign-up too.
    let no_key = server
        .get("/api/domains")
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    expect_error(no_key, 403, "https_required", &admin).await;
    let signup = server
        .post("/api/auth/signup")
        .header("host", "api.example.com")
        .json(&json!({"email": "x@example.com"}))
        .send()
        .await
        .unwrap();
    expect_error(signup, 403, "https_required", &admin).await;

    // A forwarded https is not believed unless configured.
    let forged = server
        .get("/api/domains")
        .header("host", "api.example.com")
        .header("x-forwarded-proto", "https")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(forged, 403, "https_required", &admin).await;
}

#[tokio::test]
async fn a_remote_peer_is_refused_even_when_it_claims_localhost() {
    let (api, _) = service(profiles::mailkite());
    let admin = app::admin_key(&api, None).await.unwrap();
    let router = app::router(Product::MailKite, api, Options::default()).unwrap();
    let peer: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let server = serve_as_peer(router, peer).await;
    let response = server
        .get("/api/domains")
        .header("host", "localhost")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(response, 403, "https_required", &admin).await;
}

// Behind a TLS-terminating proxy, X-Forwarded-Proto is trusted when
// configured.
#[tokio::test]
async fn forwarded_https_is_accepted_only_when_trusted() {
    let (server, admin) = mailkite(Options {
        trust_forwarded_proto: true,
    })
    .await;
    let proxied = server
        .get("/api/domains")
        .header("host", "api.example.com")
        .header("x-forwarded-proto", "https")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    let signup = server
        .post("/api/auth/signup")
        .header("host", "api.example.com")
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": "proxied@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);

    // The proxy says the client used plain HTTP: refused, whatever the Host.
    for host in ["api.example.com", "localhost"] {
        let plain = server
            .get("/api/domains")
            .header("host", host)
            .header("x-forwarded-proto", "http")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        expect_error(plain, 403, "https_required", &admin).await;
    }
}

#[tokio::test]
async fn the_admin_key_can_be_imported() {
    let (api, _) = service(profiles::mailkite());
    let kept = api.profile().formats()[0].generate();
    let admin = app::admin_key(&api, Some(kept.expose_secret()))
        .await
        .unwrap();
    assert_eq!(admin, kept.expose_secret());
    let router = app::router(Product::MailKite, api, Options::default()).unwrap();
    let server = serve(router).await;
    let ok = server
        .get("/api/domains")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
