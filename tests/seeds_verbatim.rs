//! The requests the seed documents show, run as they are written against the
//! demo routers of `examples/server_app` with only the host changed (and
//! `https` to `http`: the demo serves plain HTTP on loopback).
//!
//! The shell scripts and curl commands are copied verbatim from the seed
//! files and run with `bash` and `curl`; a `.curlrc` of the test's own adds
//! `--write-out` (to read the status) and `--noproxy`, so not one character
//! of a script changes. Each request cites its seed file. Statements that
//! show a header rather than a whole request (MailJawn's `Authorization:
//! Bearer`) are sent with the same header by reqwest. Mailjet's seed
//! (`001_1096317fca88c73a.txt`) shows no request; the MailKite session
//! requests (`/api/auth/*` and a JWT on `/api/domains`) are tested with
//! sessions.
#![cfg(feature = "axum")]

mod http_support;

use std::process::Command;

use http_support::{app, json, service, start, Options, Product, Server};
use keygate::{profiles, AccountId, ApiKeys, CreateKey};
use serde_json::{json, Value};

/// The host every seed script names, and what it becomes here.
fn localize(script: &str, real_host: &str, server: &Server, local_name: &str) -> String {
    let local = format!("http://{local_name}:{}", server.addr.port());
    script.replace(real_host, &local)
}

/// What a run of a seed script answered: the status of its (last) request
/// and the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs `script` with bash, `env` as its environment variables and curl
/// reading a `.curlrc` that only adds the status line and `--noproxy`.
async fn run(script: String, env: Vec<(&'static str, String)>) -> Answer {
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join(".curlrc"),
            "silent\nshow-error\nnoproxy = \"*\"\nwrite-out = \"\\n%{http_code}\"\n",
        )
        .unwrap();
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CURL_HOME", home.path())
            .env("HOME", home.path())
            .envs(env)
            .output()
            .expect("bash and curl are installed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "script failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Answer {
            status: status.trim().parse().expect("curl wrote the status"),
            body: body.to_owned(),
        }
    })
    .await
    .unwrap()
}

// ----- 002_335bf4731ad6bd38.txt (MailChannels) ------------------------------

const MAILCHANNELS_HOST: &str = "https://api.mailchannels.net";

/// `002_335bf4731ad6bd38.txt`, "Authenticating a request".
const SEND: &str = r#"#!/usr/bin/env bash
set -u
: "${MAILCHANNELS_API_KEY:?Set MAILCHANNELS_API_KEY before running}"
: "${FROM_EMAIL:?Set FROM_EMAIL (must be on a Domain-Lockdown-authorized domain)}"
: "${TO_EMAIL:?Set TO_EMAIL}"
curl -X POST https://api.mailchannels.net/tx/v1/send \
-H "Content-Type: application/json" \
-H "X-Api-Key: $MAILCHANNELS_API_KEY" \
-d @- <<JSON
{
"personalizations": [
{ "to": [{ "email": "$TO_EMAIL", "name": "Recipient" }] }
],
"from": {
"email": "$FROM_EMAIL",
"name": "Your Name"
},
"subject": "Hello from MailChannels",
"content": [
{
"type": "text/plain",
"value": "Hello! This is a plain-text email."
}
]
}
JSON
"#;

/// `002_335bf4731ad6bd38.txt`, "Sub-account key management", "Creating a key".
const CREATE_SUB_KEY: &str = r#"#!/usr/bin/env bash
set -u
: "${PARENT_API_KEY:?Set PARENT_API_KEY before running}"
: "${SUB_ACCOUNT_HANDLE:?Set SUB_ACCOUNT_HANDLE (the sub-account to create a key for)}"
curl -X POST \
"https://api.mailchannels.net/tx/v1/sub-account/$SUB_ACCOUNT_HANDLE/api-key" \
-H "X-Api-Key: $PARENT_API_KEY"
"#;

/// `002_335bf4731ad6bd38.txt`, "Listing keys".
const LIST_SUB_KEYS: &str = r#"#!/usr/bin/env bash
set -u
: "${PARENT_API_KEY:?Set PARENT_API_KEY before running}"
: "${SUB_ACCOUNT_HANDLE:?Set SUB_ACCOUNT_HANDLE (the sub-account whose keys you want to list)}"
curl "https://api.mailchannels.net/tx/v1/sub-account/$SUB_ACCOUNT_HANDLE/api-key" \
-H "X-Api-Key: $PARENT_API_KEY"
"#;

/// `002_335bf4731ad6bd38.txt`, "Deleting a key".
const DELETE_SUB_KEY: &str = r#"#!/usr/bin/env bash
set -u
: "${PARENT_API_KEY:?Set PARENT_API_KEY before running}"
: "${SUB_ACCOUNT_HANDLE:?Set SUB_ACCOUNT_HANDLE}"
: "${API_KEY_ID:?Set API_KEY_ID (the id of the key to delete)}"
curl -X DELETE \
"https://api.mailchannels.net/tx/v1/sub-account/$SUB_ACCOUNT_HANDLE/api-key/$API_KEY_ID" \
-H "X-Api-Key: $PARENT_API_KEY"
"#;

struct MailChannels {
    server: Server,
    api: ApiKeys,
    parent: String,
}

impl MailChannels {
    async fn start() -> Self {
        let (api, _) = service(profiles::mailchannels());
        let (server, parent) = start(Product::MailChannels, &api, Options::default()).await;
        Self {
            server,
            api,
            parent,
        }
    }

    /// Registers the admin account's sub-account `handle` (done in the
    /// Console; the seed shows no request for it).
    async fn sub_account(&self, handle: &str) -> AccountId {
        let admin = AccountId::new(app::ADMIN_ACCOUNT).unwrap();
        self.api
            .as_account(&admin)
            .create_sub_account(&admin, handle)
            .await
            .unwrap()
    }

    async fn run(&self, script: &str, env: Vec<(&'static str, String)>) -> Answer {
        let script = localize(script, MAILCHANNELS_HOST, &self.server, "127.0.0.1");
        run(script, env).await
    }

    async fn send(&self, key: &str) -> Answer {
        let env = vec![
            ("MAILCHANNELS_API_KEY", key.to_owned()),
            ("FROM_EMAIL", "sender@example.com".to_owned()),
            ("TO_EMAIL", "recipient@example.net".to_owned()),
        ];
        self.run(SEND, env).await
    }

    async fn sub_key_script(&self, script: &str, handle: &str, id: Option<&str>) -> Answer {
        let mut env = vec![
            ("PARENT_API_KEY", self.parent.clone()),
            ("SUB_ACCOUNT_HANDLE", handle.to_owned()),
        ];
        if let Some(id) = id {
            env.push(("API_KEY_ID", id.to_owned()));
        }
        self.run(script, env).await
    }
}

/// `002_335bf4731ad6bd38.txt`: the send script, with a key of scope `api`,
/// is accepted; without the right key it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchannels_send_script_runs_verbatim() {
    let mc = MailChannels::start().await;
    let sent = mc.send(&mc.parent).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.json()["status"], "queued");

    // "Every request to the Email API must include your API key": a key
    // that was never issued is refused.
    let stranger = mc.api.profile().formats()[0].generate();
    let refused = mc.send(stranger.expose_secret()).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "invalid_api_key");
}

/// `002_335bf4731ad6bd38.txt`, "Sub-account key management": the create,
/// list and delete scripts, run as written, do what the seed says: the
/// parent creates a key for its sub-account (shown once), lists the
/// sub-account's keys (redacted), and deletes one; "all subsequent requests
/// that use the key will fail".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchannels_sub_account_key_scripts_run_verbatim() {
    let mc = MailChannels::start().await;
    let shop = mc.sub_account("shop").await;

    let created = mc.sub_key_script(CREATE_SUB_KEY, "shop", None).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["account"], shop.as_str());
    // No body, as in the script: a Sending Email (`api`) key.
    assert_eq!(created["scopes"], json!(["api"]));
    assert_eq!(mc.send(&key).await.status, 202);

    let listed = mc.sub_key_script(LIST_SUB_KEYS, "shop", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    // "The redacted version is available via the Console and API, but
    // never the original key."
    assert!(!listed.body.contains(&key));
    let listed = listed.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(listed["data"][0]["redacted"], format!("{}…", &key[..12]));

    let deleted = mc.sub_key_script(DELETE_SUB_KEY, "shop", Some(&id)).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let after = mc.send(&key).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.json()["error"]["code"], "revoked_api_key");
    let listed = mc.sub_key_script(LIST_SUB_KEYS, "shop", None).await;
    assert_eq!(listed.json()["data"], json!([]));

    // A handle the parent does not own, and a key of another sub-account,
    // are not found.
    let missing = mc.sub_key_script(LIST_SUB_KEYS, "nobody", None).await;
    assert_eq!(missing.status, 404);
    mc.sub_account("other").await;
    let elsewhere = mc.sub_key_script(DELETE_SUB_KEY, "other", Some(&id)).await;
    assert_eq!(elsewhere.status, 404);
}

/// `002_335bf4731ad6bd38.txt`, "Key limits": "Each sub-account can have 100
/// API keys ... Attempting to create another key past that limit returns an
/// error."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchannels_create_script_past_100_keys_returns_an_error() {
    let mc = MailChannels::start().await;
    let sub = mc.sub_account("bulk").await;
    // The first 99 through the library (quicker than 99 processes), the
    // 100th and 101st through the script.
    let admin = AccountId::new(app::ADMIN_ACCOUNT).unwrap();
    for n in 0..99 {
        mc.api
            .as_account(&admin)
            .create(&sub, CreateKey::new(format!("k{n}")).scopes(["api"]))
            .await
            .unwrap();
    }
    let hundredth = mc.sub_key_script(CREATE_SUB_KEY, "bulk", None).await;
    assert_eq!(hundredth.status, 201, "{}", hundredth.body);
    let past = mc.sub_key_script(CREATE_SUB_KEY, "bulk", None).await;
    assert_eq!(past.status, 409, "{}", past.body);
    let error = &past.json()["error"];
    assert_eq!(error["code"], "key_limit_reached");
    assert!(error["message"].as_str().unwrap().contains("100"));
}

/// `002_335bf4731ad6bd38.txt`, "Scope": a key has Sending Email (`api`) or
/// Managing Inbound Filtering (`inbound`), one of them. Asking for both or
/// neither is refused with a message naming the choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchannels_keys_carry_exactly_one_scope() {
    let mc = MailChannels::start().await;
    for body in [
        json!({ "label": "both", "scopes": ["api", "inbound"] }),
        json!({ "label": "neither" }),
        json!({ "label": "wildcard", "scopes": ["*"] }),
    ] {
        let refused = mc
            .server
            .post("/v1/api-keys")
            .header("X-Api-Key", &mc.parent)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body}");
        let error = json(refused).await["error"].clone();
        assert_eq!(error["code"], "invalid_request");
        assert_eq!(
            error["message"],
            "invalid request: a key carries exactly one scope: choose one of api, inbound"
        );
    }
    let one = mc
        .server
        .post("/v1/api-keys")
        .header("X-Api-Key", &mc.parent)
        .json(&json!({ "label": "sender", "scopes": ["api"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 201);
    assert_eq!(json(one).await["scopes"], json!(["api"]));
}

/// `002_335bf4731ad6bd38.txt`: sub-account handles appear in the scripts'
/// paths (`/tx/v1/sub-account/$SUB_ACCOUNT_HANDLE/api-key`), so a handle
/// that would make a path ambiguous is refused, with a message that says
/// what a handle may be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchannels_ambiguous_handles_are_refused_clearly() {
    let mc = MailChannels::start().await;
    for bad in ["../x", "T 1", "a/b", ""] {
        let made = mc
            .server
            .post("/tx/v1/sub-account")
            .header("X-Api-Key", &mc.parent)
            .json(&json!({ "handle": bad }))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 400, "{bad:?}");
        let error = json(made).await["error"].clone();
        assert_eq!(error["code"], "invalid_account");
        assert_eq!(
            error["message"],
            "sub-account handle must be 1 to 63 characters of a-z, 0-9, '-' and '_', \
             starting with a letter or digit"
        );
    }
    // The same answer when the bad handle is in a script's path.
    let listed = mc.sub_key_script(LIST_SUB_KEYS, "T%201", None).await;
    assert_eq!(listed.status, 400);
    assert_eq!(listed.json()["error"]["code"], "invalid_account");
}

// ----- 000_b47e423a44e43425.txt (MailJawn) -----------------------------------

/// Creates a key of `bundle` for the admin account and returns it.
async fn mailjawn_key(api: &ApiKeys, bundle: &str) -> String {
    let admin = AccountId::new(app::ADMIN_ACCOUNT).unwrap();
    let new = api
        .as_account(&admin)
        .create(&admin, CreateKey::new(bundle).bundle(bundle))
        .await
        .unwrap();
    new.key.expose_secret().to_owned()
}

/// `000_b47e423a44e43425.txt`: "Include the API key in the Authorization
/// header of your requests: `Authorization: Bearer mj_your_key_here`", for
/// the REST API and the MCP server. The MCP bundle is for "AI agent
/// integration": an MCP or Full Access key reaches `POST /mcp`, an SDK key
/// ("Add subscribers and track events") gets 403 there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailjawn_bearer_header_and_mcp_needs_the_mcp_bundle() {
    let (api, _) = service(profiles::mailjawn());
    let (server, _) = start(Product::MailJawn, &api, Options::default()).await;
    let call = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });
    for (bundle, status) in [("mcp", 200), ("full_access", 200), ("sdk", 403)] {
        let key = mailjawn_key(&api, bundle).await;
        let mcp = server
            .post("/mcp")
            .header("Authorization", format!("Bearer {key}"))
            .json(&call)
            .send()
            .await
            .unwrap();
        assert_eq!(mcp.status(), status, "{bundle}");
        let body = json(mcp).await;
        if status == 200 {
            assert_eq!(body["result"]["bundle"], bundle);
        } else {
            assert_eq!(body["error"]["code"], "insufficient_scope");
        }
    }
    // The SDK key works where the seed says it does.
    let sdk = mailjawn_key(&api, "sdk").await;
    let added = server
        .post("/v1/subscribers")
        .header("Authorization", format!("Bearer {sdk}"))
        .json(&json!({ "email": "ada@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
}

// ----- 003_ce8d37cf50e3a0d1.txt (MailKite), requests with the API key ---------

/// `003_ce8d37cf50e3a0d1.txt`: "pass -H "Authorization: Bearer
/// $MAILKITE_API_KEY" on each request", here on the seed's own
/// `curl https://api.mailkite.dev/api/domains` (the API key instead of the
/// session token), over `http://localhost`, which the seed allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailkite_api_key_on_the_domains_curl() {
    const DOMAINS: &str = r#"curl https://api.mailkite.dev/api/domains \
-H "Authorization: Bearer $MAILKITE_API_KEY""#;
    let (api, _) = service(profiles::mailkite());
    let (server, key) = start(Product::MailKite, &api, Options::default()).await;
    let script = localize(DOMAINS, "https://api.mailkite.dev", &server, "localhost");
    let listed = run(script.clone(), vec![("MAILKITE_API_KEY", key.clone())]).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["data"], json!([]));
    // "A missing or invalid credential returns 401 Unauthorized."
    let stranger = api.profile().formats()[0].generate();
    let refused = run(
        script,
        vec![("MAILKITE_API_KEY", stranger.expose_secret().to_owned())],
    )
    .await;
    assert_eq!(refused.status, 401);
}

/// `003_ce8d37cf50e3a0d1.txt`, "Session tokens (dashboard)": the seed's own
/// login curl (its body verbatim, the password `••••••••` included) and its
/// domains curl with the token in place of `eyJhbGci…`, after a sign-up
/// with `{ email, password }` ("it returns a token too"). The answer has the
/// shape the seed shows: `token` starting `eyJhbGci` and `user` with `id`
/// (`usr_…`), `email` and `isAdmin: false`.
#[cfg(feature = "sessions")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailkite_session_login_and_token_curls_run_verbatim() {
    const LOGIN: &str = r#"curl https://api.mailkite.dev/api/auth/login \
-H "Content-Type: application/json" \
-d '{ "email": "you@example.com", "password": "••••••••" }'"#;
    const DOMAINS: &str = r#"curl https://api.mailkite.dev/api/domains \
-H "Authorization: Bearer eyJhbGci…""#;
    let (api, _) = http_support::mailkite_service();
    let (server, _) = start(Product::MailKite, &api, Options::default()).await;
    let signup = server
        .post("/api/auth/signup")
        .json(&json!({ "email": "you@example.com", "password": "••••••••" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let signed_up = json(signup).await;
    assert!(signed_up["token"].as_str().unwrap().starts_with("eyJhbGci"));

    let login = localize(LOGIN, "https://api.mailkite.dev", &server, "localhost");
    let answer = run(login.clone(), vec![]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("eyJhbGci"), "{token}");
    assert!(body["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(body["user"]["email"], "you@example.com");
    assert_eq!(body["user"]["isAdmin"], false);

    let domains = localize(DOMAINS, "https://api.mailkite.dev", &server, "localhost")
        .replace("eyJhbGci…", &token);
    let listed = run(domains.clone(), vec![]).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["data"], json!([]));

    // The seed's login with another password is refused, and so is a
    // token that is not one.
    let wrong = run(login.replace("••••••••", "wrong password"), vec![]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let forged = run(domains.replace(&token, &format!("{token}x")), vec![]).await;
    assert_eq!(forged.status, 401, "{}", forged.body);
}
