//! MailKite's dashboard sessions over HTTP, on the demo router: the requests
//! `shared/seeds/003_ce8d37cf50e3a0d1.txt` shows (`POST /api/auth/signup`,
//! `POST /api/auth/login`, `GET /api/domains` with `Authorization: Bearer
//! eyJhbGci…`), with only the host changed, and what the seed says of them.
#![cfg(all(feature = "axum", feature = "sessions"))]

mod http_support;

use std::time::Duration;

use http_support::{expect_error, json, mailkite_service, start, Options, Product, Server};
use keygate::ManualClock;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

async fn mailkite() -> (Server, ManualClock) {
    let (api, clock) = mailkite_service();
    let (server, _) = start(Product::MailKite, &api, Options::default()).await;
    (server, clock)
}

async fn post_json(server: &Server, path: &str, body: Value) -> reqwest::Response {
    server.post(path).json(&body).send().await.unwrap()
}

/// Signs up and returns the body: `{token, user, key}`.
async fn signup(server: &Server, email: &str) -> Value {
    let response = post_json(
        server,
        "/api/auth/signup",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(response.status(), 201);
    json(response).await
}

async fn login(server: &Server, email: &str, password: &str) -> reqwest::Response {
    post_json(
        server,
        "/api/auth/login",
        json!({ "email": email, "password": password }),
    )
    .await
}

async fn logout(server: &Server, token: &str) -> reqwest::Response {
    server
        .post("/api/auth/logout")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Sends mail to `a@example.com` with the bearer `credential`.
async fn send_mail(server: &Server, credential: &str) -> reqwest::Response {
    server
        .post("/v1/send")
        .bearer_auth(credential)
        .json(&json!({"to": "a@example.com"}))
        .send()
        .await
        .unwrap()
}

async fn domains(server: &Server, token: &str) -> reqwest::Response {
    server
        .get("/api/domains")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// 003_ce8d37cf50e3a0d1.txt: "To create an account programmatically, POST
/// /api/auth/signup with { email, password } — it returns a token too"; the
/// login curl returns `{"token": "eyJhbGci…", "user": {"id": "usr_…",
/// "email", "isAdmin": false}}`; "Send the token on subsequent management
/// requests" (`/api/domains`). Logout ends it at once.
#[tokio::test]
async fn signup_login_token_on_domains_then_logout_is_401() {
    let (server, _) = mailkite().await;
    let created = signup(&server, "You@Example.com").await;
    assert!(created["token"].as_str().unwrap().starts_with("eyJhbGci"));
    assert!(created["key"].as_str().unwrap().starts_with("mk_live_"));
    assert_eq!(created["user"]["email"], "you@example.com");
    assert_eq!(created["user"]["isAdmin"], false);
    assert!(created["user"]["id"].as_str().unwrap().starts_with("usr_"));

    let response = login(&server, "you@example.com", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("eyJhbGci"));
    assert_eq!(body["user"], created["user"]);
    assert!(body.get("key").is_none(), "login never shows the key again");

    let listed = domains(&server, &token).await;
    assert_eq!(listed.status(), 200);
    assert_eq!(json(listed).await["data"], json!([]));
    let added = server
        .post("/api/domains")
        .bearer_auth(&token)
        .json(&json!({"name": "you.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);

    let out = logout(&server, &token).await;
    assert_eq!(out.status(), 204);
    let after = domains(&server, &token).await;
    let (_, message) = expect_error(after, 401, "invalid_session", &token).await;
    assert!(message.contains("ended"), "{message}");
    // Logout ends every session of the user, the sign-up token too.
    let signup_token = created["token"].as_str().unwrap();
    expect_error(
        domains(&server, signup_token).await,
        401,
        "invalid_session",
        signup_token,
    )
    .await;
    // The API key is another credential: it still works.
    assert_eq!(
        domains(&server, created["key"].as_str().unwrap())
            .await
            .status(),
        200
    );
    // Logging in again gives a working token.
    let again = json(login(&server, "you@example.com", PASSWORD).await).await;
    assert_eq!(
        domains(&server, again["token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

/// 003_ce8d37cf50e3a0d1.txt: "a short-lived JWT session token": refused
/// with 401 once its 15 minutes are over.
#[tokio::test]
async fn session_token_expires_after_fifteen_minutes() {
    let (server, clock) = mailkite().await;
    let token = signup(&server, "short@example.com").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(Duration::from_secs(14 * 60));
    assert_eq!(domains(&server, &token).await.status(), 200);
    clock.advance(Duration::from_secs(60));
    let (_, message) = expect_error(
        domains(&server, &token).await,
        401,
        "invalid_session",
        &token,
    )
    .await;
    assert!(message.contains("expired"), "{message}");
}

/// 003_ce8d37cf50e3a0d1.txt: "You can use it against the management API
/// too": the token lists and rotates the account's API key; sending takes
/// the key only.
#[tokio::test]
async fn session_token_lists_and_rotates_the_key_but_cannot_send() {
    let (server, _) = mailkite().await;
    let created = signup(&server, "keys@example.com").await;
    let token = created["token"].as_str().unwrap();
    let old = created["key"].as_str().unwrap();

    let listed = server
        .get("/api/api-key")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed = json(listed).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["format"], "mk_live_");

    let rotated = server
        .post("/api/api-key/rotate")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 201);
    let new = json(rotated).await["key"].as_str().unwrap().to_owned();
    assert!(new.starts_with("mk_live_") && new != old);
    expect_error(domains(&server, old).await, 401, "revoked_api_key", old).await;
    assert_eq!(domains(&server, &new).await.status(), 200);

    let send = send_mail(&server, token).await;
    expect_error(send, 403, "session_not_accepted", token).await;
    let send = send_mail(&server, &new).await;
    assert_eq!(send.status(), 202);

    // After logout the token is refused on key management too.
    let out = logout(&server, token).await;
    assert_eq!(out.status(), 204);
    let listed = server
        .get("/api/api-key")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    expect_error(listed, 401, "invalid_session", token).await;
}

/// A wrong password and an unknown email get the same 401 body.
#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let (server, _) = mailkite().await;
    signup(&server, "known@example.com").await;
    let wrong = login(&server, "known@example.com", "not the password").await;
    let (_, wrong_message) = expect_error(wrong, 401, "invalid_credentials", PASSWORD).await;
    let unknown = login(&server, "nobody@example.com", PASSWORD).await;
    let (_, unknown_message) = expect_error(unknown, 401, "invalid_credentials", PASSWORD).await;
    assert_eq!(wrong_message, unknown_message);
}

#[tokio::test]
async fn passwords_outside_8_to_1024_bytes_and_bad_bodies_are_json_errors() {
    let (server, _) = mailkite().await;
    for password in ["short".to_owned(), "x".repeat(1025)] {
        let r = post_json(
            &server,
            "/api/auth/signup",
            json!({"email": "p@example.com", "password": password}),
        )
        .await;
        expect_error(r, 400, "invalid_request", "").await;
    }
    let ok = post_json(
        &server,
        "/api/auth/signup",
        json!({"email": "p@example.com", "password": "x".repeat(1024)}),
    )
    .await;
    assert_eq!(ok.status(), 201);
    let refused = [
        // A bad email.
        (
            "/api/auth/signup",
            json!({"email": "not-an-email", "password": PASSWORD}),
            400,
            "invalid_request",
        ),
        // No password.
        (
            "/api/auth/login",
            json!({"email": "p@example.com"}),
            400,
            "invalid_json",
        ),
        // The email is taken, whatever its case.
        (
            "/api/auth/signup",
            json!({"email": "P@example.com", "password": PASSWORD}),
            409,
            "conflict",
        ),
    ];
    for (path, body, status, code) in refused {
        expect_error(post_json(&server, path, body).await, status, code, "").await;
    }
    let anonymous = server.post("/api/auth/logout").send().await.unwrap();
    expect_error(anonymous, 401, "missing_api_key", "").await;
}

/// Failed logins are limited to 5 a minute per email (then even the right
/// password waits) and per client address (across emails).
#[tokio::test]
async fn failed_logins_are_limited_per_email_and_per_address() {
    let (server, clock) = mailkite().await;
    signup(&server, "target@example.com").await;
    for _ in 0..5 {
        let r = login(&server, "target@example.com", "guess guess").await;
        expect_error(r, 401, "invalid_credentials", "").await;
    }
    let r = login(&server, "target@example.com", PASSWORD).await;
    let (headers, _) = expect_error(r, 429, "too_many_failed_logins", "").await;
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // The address is spent too: another email from it waits as well.
    let r = login(&server, "other@example.com", "guess guess").await;
    expect_error(r, 429, "too_many_failed_logins", "").await;

    clock.advance(Duration::from_secs(retry));
    let r = login(&server, "target@example.com", PASSWORD).await;
    assert_eq!(r.status(), 200);
}
