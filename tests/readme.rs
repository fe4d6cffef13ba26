//! The README's claims, under test: each table row is a test named after it
//! (`readme_<table>_<row>`), reading the row from README.md itself where it
//! states something checkable (a status, a code, a route), and the README's
//! curl sessions are parsed and replayed against the demo router.
//!
//! Rows checked elsewhere, by tests whose docs cite them: the "Running
//! several instances" rows on a lost, hung or stopped notification
//! connection and on Redis (`tests/multi_instance.rs`, `tests/cache_lease.rs`,
//! `tests/ratelimit_redis.rs`), and the authorization matrix on SQLite and
//! PostgreSQL (`tests/authorization.rs`).

mod http_support;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http_support::{expect_error, serve, service, start, FlakyStore, Options, Product, Server};
use keygate::layer::{ApiKeyLayer, MAX_PRESENTED_KEY_LEN};
use keygate::routes::ManagementRoutes;
use keygate::session::{SessionKey, Sessions};
use keygate::{
    profiles, AccountId, Actor, ApiKeys, AuthError, CacheConfig, CachedStore, CreateKey, Error,
    KeyFormat, KeyId, KeyLocation, KeyStore, ListOptions, MalformedReason, ManualClock,
    MemoryStore, Pepper, PostgresStore, Rotation, SqliteStore,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

const README: &str = include_str!("../README.md");

// ----- reading the README ------------------------------------------------------

/// The rows (cells, trimmed) of the table whose header row starts with `header`.
fn table(header: &str) -> Vec<Vec<String>> {
    let mut lines = README.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "README has no table {header:?}");
    lines
        .skip(1) // the |---| line
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The row of `header`'s table whose first cell is `first`.
fn row(header: &str, first: &str) -> Vec<String> {
    table(header)
        .into_iter()
        .find(|r| r[0] == first)
        .unwrap_or_else(|| panic!("README table {header:?} has no row {first:?}"))
}

/// The `backticked` parts of a cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The first three-digit HTTP status in a cell.
fn status_in(cell: &str) -> u16 {
    cell.split(|c: char| !c.is_ascii_digit())
        .find(|n| n.len() == 3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no status in {cell:?}"))
}

// ----- HTTP with axum: the outcome table -----------------------------------------

const OUTCOMES: &str = "| outcome | status |";

/// The status and codes the README promises for an outcome row.
fn outcome(first: &str) -> (u16, Vec<String>) {
    let r = row(OUTCOMES, first);
    (status_in(&r[1]), ticked(&r[2]))
}

/// README, HTTP with axum, outcome row "no credential": 401
/// `missing_api_key` with the profile's challenge.
pub(crate) async fn readme_outcome_no_credential() {
    let (status, codes) = outcome("no credential");
    let challenges = &codes[1..];
    for (product, path, challenge) in [
        (Product::MailJawn, "/v1/subscribers", "Bearer realm=\"api\""),
        (Product::Mailjet, "/v3/send", "Basic realm=\"api\""),
        (
            Product::MailChannels,
            "/tx/v1/send",
            "ApiKey header=\"X-Api-Key\"",
        ),
    ] {
        assert!(
            challenges.iter().any(|c| c.ends_with(challenge)),
            "{challenge}"
        );
        let (api, _) = service(product.profile());
        let (server, admin) = start(product, &api, Options::default()).await;
        let r = if path == "/v1/subscribers" {
            server.get(path)
        } else {
            server.post(path)
        };
        let (headers, _) = expect_error(r.send().await.unwrap(), status, &codes[0], &admin).await;
        assert_eq!(headers["www-authenticate"], challenge);
    }
}

/// README, HTTP with axum, outcome row "two credentials, over 1 KiB, not
/// ASCII, bad base64, wrong scheme or shape": 401 `malformed_api_key`.
pub(crate) async fn readme_outcome_malformed_credentials() {
    let (status, codes) =
        outcome("two credentials, over 1 KiB, not ASCII, bad base64, wrong scheme or shape");
    let (api, _) = service(profiles::mailjawn());
    let (jawn, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let (api, _) = service(profiles::mailjet());
    let (jet, _) = start(Product::Mailjet, &api, Options::default()).await;
    let long = format!("mj_{}", "a".repeat(MAX_PRESENTED_KEY_LEN));
    let bearer = |s: &Server, v: &str| {
        s.get("/v1/subscribers")
            .header("authorization", format!("Bearer {v}"))
    };
    let cases = [
        bearer(&jawn, &admin).header("authorization", format!("Bearer {admin}")),
        bearer(&jawn, &long),
        jawn.get("/v1/subscribers").header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes("Bearer mj_\u{e9}t\u{e9}".as_bytes()).unwrap(),
        ),
        jet.post("/v3/send").header("authorization", "Basic %%%"),
        jet.post("/v3/send").bearer_auth("public:secret"),
        bearer(&jawn, "mj_short"),
    ];
    for request in cases {
        expect_error(request.send().await.unwrap(), status, &codes[0], &admin).await;
    }
}

/// README, HTTP with axum, outcome row "unknown, revoked, expired key": 401
/// `invalid_api_key`, `revoked_api_key`, `expired_api_key`, in that order.
pub(crate) async fn readme_outcome_unknown_revoked_expired() {
    let (status, codes) = outcome("unknown, revoked, expired key");
    let (api, clock) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let org = AccountId::new("org").unwrap();
    let unknown = api.profile().formats()[0].generate();
    let revoked = api
        .operator()
        .create(&org, CreateKey::new("r").bundle("full_access"))
        .await
        .unwrap();
    api.operator().revoke(&revoked.info.id).await.unwrap();
    let expiring = api
        .operator()
        .create(
            &org,
            CreateKey::new("e")
                .bundle("full_access")
                .expires_at(keygate::Clock::now(&clock) + Duration::from_secs(60)),
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(61));
    for (key, code) in [
        (unknown.expose_secret(), &codes[0]),
        (revoked.key.expose_secret(), &codes[1]),
        (expiring.key.expose_secret(), &codes[2]),
    ] {
        let r = server.get("/v1/subscribers").bearer_auth(key).send().await;
        expect_error(r.unwrap(), status, code, &admin).await;
    }
}

/// README, HTTP with axum, outcome row "missing scope": 403 `insufficient_scope`.
pub(crate) async fn readme_outcome_missing_scope() {
    let (status, codes) = outcome("missing scope");
    let (api, _) = service(profiles::mailjawn());
    let (server, _) = start(Product::MailJawn, &api, Options::default()).await;
    let sdk = api
        .operator()
        .create(
            &AccountId::new("org").unwrap(),
            CreateKey::new("sdk").bundle("sdk"),
        )
        .await
        .unwrap();
    let sdk = sdk.key.expose_secret();
    let r = server.get("/v1/campaigns").bearer_auth(sdk).send().await;
    expect_error(r.unwrap(), status, &codes[0], sdk).await;
}

/// README, HTTP with axum, outcome row "plain HTTP to an HTTPS-only profile,
/// not from localhost": 403 `https_required`.
pub(crate) async fn readme_outcome_plain_http() {
    let (status, codes) = outcome("plain HTTP to an HTTPS-only profile, not from localhost");
    let (api, _) = service(profiles::mailkite());
    let (server, admin) = start(Product::MailKite, &api, Options::default()).await;
    let r = server
        .get("/api/domains")
        .header("host", "api.example.com")
        .bearer_auth(&admin)
        .send()
        .await;
    expect_error(r.unwrap(), status, &codes[0], &admin).await;
    let local = server.get("/api/domains").bearer_auth(&admin).send().await;
    assert_eq!(local.unwrap().status(), 200, "localhost is allowed");
}

/// README, HTTP with axum, outcome row "another account's resource": 404
/// `not_found`, through the key-management routes.
pub(crate) async fn readme_outcome_another_accounts_resource() {
    let (status, codes) = outcome("another account's resource");
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let theirs = api
        .operator()
        .create(
            &AccountId::new("other").unwrap(),
            CreateKey::new("x").bundle("sdk"),
        )
        .await
        .unwrap();
    let path = format!("/v1/api-keys/{}", theirs.info.id);
    let r = server.get(&path).bearer_auth(&admin).send().await;
    expect_error(r.unwrap(), status, &codes[0], &admin).await;
}

/// README, HTTP with axum, outcome row "over the limit": 429 `rate_limited`
/// with `Retry-After`.
pub(crate) async fn readme_outcome_over_the_limit() {
    let (status, codes) = outcome("over the limit");
    let (api, _) = service(profiles::mailjawn());
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let send = || {
        server
            .post("/v1/emails/send")
            .bearer_auth(&admin)
            .json(&json!({}))
    };
    for _ in 0..10 {
        assert_eq!(send().send().await.unwrap().status(), 202);
    }
    let (headers, _) = expect_error(send().send().await.unwrap(), status, &codes[0], &admin).await;
    assert_eq!(codes[1], "Retry-After");
    assert_eq!(headers["retry-after"], "6");
}

/// README, HTTP with axum, outcome row "store unreachable": 503 `unavailable`.
pub(crate) async fn readme_outcome_store_unreachable() {
    let (status, codes) = outcome("store unreachable");
    let store = FlakyStore::default();
    let down = store.lookups_down.clone();
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .build()
        .unwrap();
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = server
        .get("/v1/subscribers")
        .bearer_auth(&admin)
        .send()
        .await;
    expect_error(r.unwrap(), status, &codes[0], &admin).await;
}

// ----- HTTP with axum: the key-management routes table --------------------------

/// README, Key-management routes: every row of the table, run against
/// `ManagementRoutes` on the `default()` profile, answers the status its row
/// promises.
pub(crate) async fn readme_management_routes_table_every_row() {
    let api = ApiKeys::in_memory(profiles::default()).unwrap();
    let acme = AccountId::new("acme").unwrap();
    let op = api.operator();
    let admin = op
        .create(&acme, CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    let admin = admin.key.expose_secret().to_owned();
    let eu = op.create_sub_account(&acme, "eu").await.unwrap();
    let router: Router = ManagementRoutes::new(&ApiKeyLayer::new(api.clone()))
        .prefix("/v1")
        .build()
        .unwrap();
    let server = serve(router).await;
    let rows = table("| route | does | answers |");
    assert_eq!(rows.len(), 13);
    for (n, r) in rows.iter().enumerate() {
        let route = &ticked(&r[0])[0];
        let (method, path) = route.split_once(' ').unwrap();
        let account = if path.contains("{handle}") {
            &eu
        } else {
            &acme
        };
        let key = op
            .create(account, CreateKey::new("row").bundle("read_only"))
            .await
            .unwrap();
        let path = path
            .replace("{handle}", "eu")
            .replace("{id}", key.info.id.as_str())
            .replace("?after=…&limit=…", "?limit=10");
        let url = server.url(&path);
        let request = match method {
            "GET" => server.client.get(url),
            "DELETE" => server.client.delete(url),
            "POST" => server.client.post(url).json(&if path == "/v1/sub-account" {
                json!({ "handle": format!("row{n}") })
            } else {
                json!({})
            }),
            other => panic!("method {other}"),
        };
        let response = request.bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status_in(&r[2]), "{route}");
    }
}

// ----- the demo server: its routes table and the curl session ----------------------

/// README, The demo server, each row of the routes table: every route listed
/// for a profile is served by the demo router (no "no such route", no 405),
/// and the routes with their own class are limited by it.
pub(crate) async fn readme_demo_routes_table_every_row() {
    for r in table("| profile | routes |") {
        let name = ticked(&r[0])[0].clone();
        let product = Product::parse(&name).unwrap();
        // MailKite's row lists the sign-in routes, served with sessions on.
        let (api, _) = match product {
            Product::MailKite => http_support::mailkite_service(),
            _ => service(product.profile()),
        };
        let (server, admin) = start(product, &api, Options::default()).await;
        let mut checked = 0;
        for route in ticked(&r[1]) {
            let Some((methods, path)) = route.split_once(' ') else {
                continue;
            };
            if !path.starts_with('/') {
                continue;
            }
            let path = path
                .replace("{id}", "key_000000000000readmetable00")
                .replace("{handle}", "eu");
            for method in methods.split('/') {
                let url = server.url(&path);
                let request = match method {
                    "GET" => server.client.get(url),
                    "POST" => server.client.post(url).json(&json!({})),
                    "DELETE" => server.client.delete(url),
                    "PATCH" => server.client.patch(url).json(&json!({})),
                    other => panic!("{other}"),
                };
                let request = match product {
                    Product::Mailjet => {
                        let (p, s) = admin.split_once(':').unwrap();
                        request.basic_auth(p, Some(s))
                    }
                    Product::MailChannels => request.header("x-api-key", &admin),
                    _ => request.bearer_auth(&admin),
                };
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                assert_ne!(status, 405, "{name}: {method} {path}");
                assert!(
                    !text.contains("no such route"),
                    "{name}: {method} {path} is not served"
                );
                checked += 1;
            }
        }
        assert!(checked >= 4, "{name}: {checked} routes");
        if product == Product::MailJawn {
            assert!(r[1].contains("`POST /v1/emails/send` (class `send`)"));
            // The bundle rule itself is replayed in `seeds_verbatim.rs`
            // (`mailjawn_bearer_header_and_mcp_needs_the_mcp_bundle`).
            assert!(r[1].contains("`POST /mcp` (class `mcp`, MCP or Full Access keys)"));
            for (path, limit) in [("/v1/emails/send", "10"), ("/mcp", "60")] {
                let response = server
                    .post(path)
                    .bearer_auth(&admin)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.headers()["ratelimit-limit"], limit, "{path}");
            }
        }
    }
}

/// A curl command line, as far as the README's sessions use curl.
struct Curl {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    data: Option<String>,
    include_headers: bool,
}

/// Splits a shell command line into words: single quotes literal, double
/// quotes and bare words with `$VAR` expanded.
fn shell_words(line: &str, vars: &HashMap<String, String>) -> Vec<String> {
    fn expand(text: &str, vars: &HashMap<String, String>) -> String {
        let mut out = text.to_owned();
        let mut names: Vec<_> = vars.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for name in names {
            out = out.replace(&format!("${name}"), &vars[name]);
        }
        out
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                let mut quoted = String::new();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    quoted.push(c);
                }
                word.push_str(&expand(&quoted, vars));
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                let mut bare = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || n == '\'' || n == '"' {
                        break;
                    }
                    bare.push(n);
                    chars.next();
                }
                word.push_str(&expand(&bare, vars));
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_curl(words: &[String]) -> Curl {
    let mut curl = Curl {
        method: String::new(),
        url: String::new(),
        headers: Vec::new(),
        data: None,
        include_headers: false,
    };
    let mut words = words.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "-s" => {}
            "-si" | "-is" | "-i" => curl.include_headers = true,
            "-X" => curl.method = words.next().unwrap().clone(),
            "-H" => {
                let (name, value) = words.next().unwrap().split_once(':').unwrap();
                curl.headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "-d" => curl.data = Some(words.next().unwrap().clone()),
            flag if flag.starts_with('-') => panic!("curl flag {flag} is not replayed"),
            url => curl.url = url.to_owned(),
        }
    }
    if curl.method.is_empty() {
        curl.method = if curl.data.is_some() { "POST" } else { "GET" }.into();
    }
    curl
}

/// Values the README shows that differ on every run (ids, keys) mapped to
/// this run's, learned as they appear.
#[derive(Default)]
struct Learned(HashMap<String, String>);

impl Learned {
    fn learn(&mut self, shown: &str, actual: &str) {
        self.0.insert(shown.to_owned(), actual.to_owned());
        // A key's redacted form is its first eight characters and an ellipsis.
        if shown.len() > 8 && actual.len() > 8 {
            self.0
                .insert(format!("{}…", &shown[..8]), format!("{}…", &actual[..8]));
        }
    }

    fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (shown, actual) in &self.0 {
            out = out.replace(shown, actual);
        }
        out
    }

    /// Checks `actual` against the README's `shown` JSON: objects may show
    /// only some fields; generated ids and keys are learned, timestamps must
    /// be timestamps, everything else equal.
    fn check(&mut self, shown: &Value, actual: &Value, at: &str) {
        match (shown, actual) {
            (Value::Object(s), Value::Object(a)) => {
                // Keys first, so redacted forms are known before they are compared.
                let mut fields: Vec<_> = s.iter().collect();
                fields.sort_by_key(|(k, _)| k.as_str() != "key" && k.as_str() != "id");
                for (k, v) in fields {
                    let got = a
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}: no field {k} in {actual}"));
                    self.check(v, got, &format!("{at}.{k}"));
                }
            }
            (Value::Array(s), Value::Array(a)) => {
                assert_eq!(s.len(), a.len(), "{at}: {actual}");
                for (i, (s, a)) in s.iter().zip(a).enumerate() {
                    self.check(s, a, &format!("{at}[{i}]"));
                }
            }
            // A session token shown cut short (`eyJhbGci…`): this run's token
            // starts the same way and is what the shortened form means from
            // here on (the most recent token shown so).
            (Value::String(s), Value::String(a)) if at.ends_with(".token") && s.ends_with('…') => {
                let prefix = s.trim_end_matches('…');
                assert!(a.starts_with(prefix), "{at}: {a} does not start {prefix}");
                assert!(a.len() > prefix.len(), "{at}: {a} is not cut short");
                self.0.insert(s.clone(), a.clone());
            }
            (Value::String(s), got) if self.0.contains_key(s) => {
                assert_eq!(got.as_str(), Some(self.0[s].as_str()), "{at}");
            }
            (Value::String(s), Value::String(a))
                if s.starts_with("key_")
                    || s.starts_with("idn_")
                    || (at.ends_with(".key") && s.len() > 20) =>
            {
                assert_eq!(s.len(), a.len(), "{at}: {a} is not shaped like {s}");
                self.learn(s, a);
            }
            (Value::String(s), got)
                if OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .is_ok() =>
            {
                let got = got
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: {got} is not a time"));
                OffsetDateTime::parse(got, &time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|_| panic!("{at}: {got} is not a time"));
            }
            (s, a) => assert_eq!(s, a, "{at}"),
        }
    }
}

/// The README's JSON output, with its `...` elisions removed.
fn shown_json(text: &str) -> Value {
    let mut cleaned = text.replace('\n', " ");
    while let Some(i) = cleaned.find("...") {
        // Drop the elision and the comma before it.
        let before = cleaned[..i].trim_end();
        let before = before.strip_suffix(',').unwrap_or(before);
        cleaned = format!("{before}{}", &cleaned[i + 3..]);
    }
    serde_json::from_str(&cleaned).unwrap_or_else(|e| panic!("README JSON ({e}): {cleaned}"))
}

/// README, The demo server, Sessions and Changing keys in place: every
/// `console` session is replayed step by step against the demo router. A
/// session starts the demo server (`cargo run --example server … --profile
/// X`, with sessions for MailKite when its features name `sessions`) and
/// learns the admin key it prints; a later block of the same `##` section
/// that starts no server goes on with the same server, variables and
/// learned values. Each curl command is sent as curl sends it (`-d` as a
/// form body unless a `Content-Type` is given), and its answer must match
/// what the README shows: the status line, each header shown, and the JSON
/// body (fields the README elides with `...` are not compared; ids, keys,
/// tokens and times vary by run).
pub(crate) async fn readme_curl_sessions_replay_against_the_demo() {
    let mut replayed: HashMap<&str, usize> = HashMap::new();
    let mut session: Option<Session> = None;
    for (at, _) in README.match_indices("```console\n") {
        let block = &README[at + "```console\n".len()..];
        let block = block.split("```").next().unwrap();
        if !block.contains("$ curl") || block.contains("smtp://") {
            // The SMTP session is replayed by `readme_smtp_curl_session_sends_as_the_account`.
            continue;
        }
        let section = README[..at]
            .rfind("\n## ")
            .map(|h| README[h + 1..].lines().next().unwrap())
            .unwrap_or_default();
        if session.as_ref().is_some_and(|s| s.section != section) {
            session = None;
        }
        *replayed.entry(section).or_insert(0) += 1;
        replay(block, section, &mut session).await;
    }
    // The demo session, MailKite's sign-in, and the five blocks of changing
    // keys in place are all replayed (none left as unchecked text).
    for (section, blocks) in [
        ("## HTTP with tower and axum", 1),
        ("## Sessions", 1),
        ("## Changing keys in place", 5),
    ] {
        assert_eq!(
            replayed.get(section),
            Some(&blocks),
            "{section}: {replayed:?}"
        );
    }
}

/// A running demo and what a README session has shown of it so far.
struct Session {
    section: &'static str,
    server: Server,
    clock: ManualClock,
    vars: HashMap<String, String>,
    learned: Learned,
}

/// The service the demo server builds for `command` (its `--profile` and
/// `--features`): MailKite with sessions signs tokens as the demo does
/// (`EdDSA`, kid `demo-1`), on the replay's manual clock.
fn demo_service(command: &[String]) -> (Product, ApiKeys, ManualClock) {
    let flag = |name: &str| {
        command
            .iter()
            .skip_while(|w| *w != name)
            .nth(1)
            .map(String::as_str)
    };
    let product = Product::parse(flag("--profile").expect("--profile")).unwrap();
    let with_sessions = flag("--features").is_some_and(|f| f.split(',').any(|f| f == "sessions"));
    if product != Product::MailKite || !with_sessions {
        let (api, clock) = service(product.profile());
        return (product, api, clock);
    }
    let clock = ManualClock::new();
    let sessions = Sessions::builder("keygate-demo", "mailkite-dashboard")
        .signing_key(SessionKey::generate_ed25519("demo-1").unwrap())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let api = ApiKeys::builder(product.profile())
        .clock(clock.clone())
        .sessions(sessions)
        .build()
        .unwrap();
    (product, api, clock)
}

/// The block's commands (continuation lines joined, a single-quoted word
/// spanning lines kept whole) and the output each shows.
fn steps(block: &str) -> Vec<(String, Vec<&str>)> {
    let mut steps: Vec<(String, Vec<&str>)> = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if let Some(command) = line.strip_prefix("$ ") {
            let mut command = command.to_owned();
            loop {
                if command.matches('\'').count() % 2 == 1 {
                    command.push('\n');
                    command.push_str(lines.next().expect("a closing quote"));
                } else if command.ends_with('\\') {
                    command.pop();
                    command.push(' ');
                    command.push_str(lines.next().unwrap().trim());
                } else {
                    break;
                }
            }
            steps.push((command, Vec::new()));
        } else if let Some((_, output)) = steps.last_mut() {
            output.push(line);
        }
    }
    steps
}

async fn replay(block: &str, section: &'static str, session: &mut Option<Session>) {
    for (command, output) in steps(block) {
        let output = output.join("\n").trim().to_owned();
        if command.starts_with("cargo run --example server") {
            let (product, api, clock) = demo_service(&shell_words(&command, &HashMap::new()));
            let (server, admin) = start(product, &api, Options::default()).await;
            let shown = output
                .lines()
                .find_map(|l| l.strip_prefix("admin key: "))
                .expect("the session shows the admin key");
            let mut learned = Learned::default();
            learned.learn(shown, &admin);
            *session = Some(Session {
                section,
                server,
                clock,
                vars: HashMap::new(),
                learned,
            });
            continue;
        }
        let Session {
            server,
            clock,
            vars,
            learned,
            ..
        } = session
            .as_mut()
            .unwrap_or_else(|| panic!("{section}: the session starts the server first"));
        if let Some((name, value)) = command
            .split_once('=')
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        {
            let value = value.split(" #").next().unwrap().trim();
            vars.insert(name.to_owned(), learned.apply(value));
            continue;
        }
        assert!(command.starts_with("curl "), "unknown step {command}");
        // A person types commands seconds apart.
        clock.advance(Duration::from_secs(1));
        let curl = parse_curl(&shell_words(&learned.apply(&command), vars));
        let url = curl.url.replace("localhost:8080", &server.addr.to_string());
        let mut request = server
            .client
            .request(curl.method.parse().unwrap(), format!("http://{url}"));
        for (name, value) in &curl.headers {
            request = request.header(name, value);
        }
        if let Some(data) = &curl.data {
            // curl's own content type, unless the command names one.
            if !curl
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                request = request.header("content-type", "application/x-www-form-urlencoded");
            }
            request = request.body(data.clone());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        let shown_body = if curl.include_headers {
            let (head, rest) = output.split_once("\n\n").unwrap_or((&output, ""));
            let mut head = head.lines();
            let status_line = head.next().unwrap();
            assert_eq!(status_in(status_line), status, "{command}: {body}");
            for line in head {
                let (name, value) = line.split_once(": ").unwrap();
                let got = headers
                    .get(name)
                    .unwrap_or_else(|| panic!("{command}: no header {name}"));
                assert_eq!(got, value, "{command}: header {name}");
            }
            rest.trim().to_owned()
        } else {
            assert!((200..300).contains(&status), "{command}: {status} {body}");
            output
        };
        if shown_body.is_empty() {
            assert!(body.is_empty(), "{command}: {body}");
        } else {
            let actual: Value = serde_json::from_str(&body).unwrap();
            learned.check(&shown_json(&shown_body), &actual, &command);
        }
    }
}

// ----- Profiles table ---------------------------------------------------------------

const PROFILES: &str = "| profile | keys | sent as | scopes | limits |";

async fn first_key(api: &ApiKeys, request: CreateKey) -> keygate::NewKey {
    api.operator()
        .create(&AccountId::new("org").unwrap(), request)
        .await
        .unwrap()
}

/// README, Profiles, row `mailjawn()`: `mj_…` keys looked up by their first
/// 8 characters, Bearer, bundles `sdk`, `mcp`, `full_access`, unlimited keys.
pub(crate) async fn readme_profiles_mailjawn() {
    let r = row(PROFILES, "`mailjawn()`").join(" | ");
    for claim in [
        "`mj_…`",
        "first 8 characters",
        "`Authorization: Bearer`",
        "`sdk`, `mcp`, `full_access`",
        "unlimited keys",
    ] {
        assert!(r.contains(claim), "{claim}");
    }
    let p = profiles::mailjawn();
    assert_eq!(p.key_locations(), [KeyLocation::Bearer]);
    assert_eq!(p.key_limit(), None);
    let bundles: Vec<_> = p.catalog().bundle_names().collect();
    for b in ["sdk", "mcp", "full_access"] {
        assert!(bundles.contains(&b), "{b}");
    }
    let api = ApiKeys::in_memory(p).unwrap();
    let key = first_key(&api, CreateKey::new("k").bundle("sdk")).await;
    assert!(key.key.expose_secret().starts_with("mj_"));
    assert_eq!(key.key.lookup(), &key.key.expose_secret()[..8]);
}

/// README, Profiles, row `mailjet()`: a 32-hex public key and a 32-hex
/// secret, reset keeps the public key, HTTP Basic, `full_access`,
/// sub-accounts with their own keys.
pub(crate) async fn readme_profiles_mailjet() {
    let r = row(PROFILES, "`mailjet()`").join(" | ");
    for claim in [
        "32 hex each",
        "reset secret keeps the public key",
        "HTTP Basic",
        "`full_access`",
        "sub-accounts",
    ] {
        assert!(r.contains(claim), "{claim}");
    }
    let p = profiles::mailjet();
    assert_eq!(p.key_locations(), [KeyLocation::Basic]);
    assert_eq!(p.default_bundle(), Some("full_access"));
    assert_eq!(p.max_sub_account_depth(), 1);
    let api = ApiKeys::in_memory(p).unwrap();
    let key = first_key(&api, CreateKey::new("k")).await;
    let public = key.key.public_key().unwrap().to_owned();
    for part in [public.as_str(), key.key.expose_secret()] {
        assert_eq!(part.len(), 32);
        assert!(part.bytes().all(|b| b.is_ascii_hexdigit()), "{part}");
    }
    let reset = api.operator().reset_secret(&key.info.id).await.unwrap();
    assert_eq!(reset.key.public_key(), Some(public.as_str()));
    let org = AccountId::new("org").unwrap();
    let sub = api.operator().create_sub_account(&org, "eu").await.unwrap();
    let sub_key = api
        .operator()
        .create(&sub, CreateKey::new("s"))
        .await
        .unwrap();
    assert_ne!(sub_key.key.public_key(), Some(public.as_str()));
}

/// README, Profiles, row `mailchannels()`: 46-character base62 tokens (40
/// random, 6 checksum), `X-Api-Key`, `api` or `inbound`, 100 active keys per
/// account and per sub-account, parents manage sub-account keys.
pub(crate) async fn readme_profiles_mailchannels() {
    let r = row(PROFILES, "`mailchannels()`").join(" | ");
    for claim in [
        "46-character base62 token (40 random, 6 checksum)",
        "`X-Api-Key`",
        "`api` or `inbound`",
        "100 active keys per account and per sub-account",
    ] {
        assert!(r.contains(claim), "{claim}");
    }
    let p = profiles::mailchannels();
    assert_eq!(p.key_locations(), [KeyLocation::Header("x-api-key".into())]);
    assert_eq!(p.key_limit(), Some(100));
    assert_eq!(
        p.catalog().scope_names().collect::<Vec<_>>(),
        ["api", "inbound"]
    );
    let api = ApiKeys::in_memory(p).unwrap();
    let key = first_key(&api, CreateKey::new("k").scopes(["api"])).await;
    let text = key.key.expose_secret();
    assert_eq!(text.len(), 46);
    assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()));
    // The last 6 are a checksum: changing one of the first 40 is caught.
    let mut typo = text.as_bytes().to_vec();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(
        api.verify(&typo).await.unwrap_err(),
        AuthError::Malformed {
            reason: MalformedReason::Checksum
        }
    );
    let org = AccountId::new("org").unwrap();
    let sub = api
        .as_account(&org)
        .create_sub_account(&org, "eu")
        .await
        .unwrap();
    api.as_account(&org)
        .create(&sub, CreateKey::new("s").scopes(["api"]))
        .await
        .unwrap();
}

/// README, Profiles, row `mailkite()`: `mk_live_…` and `mk_test_…`, Bearer,
/// one full-scope key per account and mode, rotation revokes at once, HTTPS
/// only except localhost.
pub(crate) async fn readme_profiles_mailkite() {
    let r = row(PROFILES, "`mailkite()`").join(" | ");
    for claim in [
        "`mk_live_…` (and `mk_test_…`)",
        "`Authorization: Bearer`",
        "one full-scope key",
        "one key per account and mode",
        "rotation revokes at once",
        "HTTPS only except localhost",
    ] {
        assert!(r.contains(claim), "{claim}");
    }
    let p = profiles::mailkite();
    assert_eq!(p.key_locations(), [KeyLocation::Bearer]);
    assert!(p.https_only());
    let api = ApiKeys::in_memory(p).unwrap();
    let live = first_key(&api, CreateKey::new("live")).await;
    assert!(live.key.expose_secret().starts_with("mk_live_"));
    assert!(api
        .verify(live.key.expose_secret())
        .await
        .unwrap()
        .scopes()
        .is_all());
    let test = first_key(&api, CreateKey::new("test").format("mk_test_")).await;
    assert!(test.key.expose_secret().starts_with("mk_test_"));
    let org = AccountId::new("org").unwrap();
    let second = api.operator().create(&org, CreateKey::new("again")).await;
    assert_eq!(second.unwrap_err().code(), "key_limit_reached");
    let next = api
        .operator()
        .rotate(&live.info.id, Rotation::Immediate)
        .await
        .unwrap();
    assert_eq!(
        api.verify(live.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
    api.verify(next.key.expose_secret()).await.unwrap();
}

/// README, Profiles, row `default()`: `kg_…` with a checksum, Bearer or
/// `X-Api-Key`, scopes `read`, `write`, `admin`, no limits.
pub(crate) async fn readme_profiles_default() {
    let r = row(PROFILES, "`default()`");
    assert_eq!(r[1], "`kg_…` with checksum");
    assert_eq!(r[2], "Bearer or `X-Api-Key`");
    assert_eq!(r[3], "`read`, `write`, `admin`");
    assert_eq!(r[4], "none");
    let p = profiles::default();
    assert_eq!(
        p.key_locations(),
        [KeyLocation::Bearer, KeyLocation::Header("x-api-key".into())]
    );
    assert_eq!(
        p.catalog().scope_names().collect::<Vec<_>>(),
        ["read", "write", "admin"]
    );
    assert_eq!(p.key_limit(), None);
    assert!(p.rate_limits().is_empty());
    assert!(matches!(&p.formats()[0], KeyFormat::Token(_)));
    let api = ApiKeys::in_memory(p).unwrap();
    let key = first_key(&api, CreateKey::new("k")).await;
    let text = key.key.expose_secret();
    assert!(text.starts_with("kg_"));
    let mut typo = text.as_bytes().to_vec();
    typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
    assert_eq!(
        api.verify(std::str::from_utf8(&typo).unwrap())
            .await
            .unwrap_err(),
        AuthError::Malformed {
            reason: MalformedReason::Checksum
        }
    );
}

// ----- Storage table ------------------------------------------------------------------

const STORES: &str = "| feature | store | notes |";

fn pepper() -> Pepper {
    Pepper::new(1, [5u8; 32]).unwrap()
}

/// README, Storage, row `memory`: `MemoryStore`, one process; keys live as
/// long as it does (no pepper needed, nothing shared between services).
pub(crate) async fn readme_storage_memory() {
    let r = row(STORES, "`memory` (default)");
    assert_eq!(r[1], "`MemoryStore`");
    assert!(!MemoryStore::new().is_persistent());
    let a = ApiKeys::builder(profiles::mailjawn())
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let key = first_key(&a, CreateKey::new("k").bundle("sdk")).await;
    a.verify(key.key.expose_secret()).await.unwrap();
    let b = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    assert_eq!(
        b.verify(key.key.expose_secret()).await.unwrap_err(),
        AuthError::Invalid
    );
}

/// README, Storage, row `sqlite`: `SqliteStore::open(path)` keeps keys on one
/// machine across restarts, and the example command the row gives exists.
pub(crate) async fn readme_storage_sqlite() {
    let r = row(STORES, "`sqlite`");
    assert_eq!(r[1], "`SqliteStore::open(path)`");
    assert!(r[2].contains("`cargo run --example sqlite --features sqlite -- keys.db`"));
    let manifest = include_str!("../Cargo.toml");
    assert!(manifest.contains("[[example]]\nname = \"sqlite\"\nrequired-features = [\"sqlite\"]"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let presented = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        let api = ApiKeys::builder(profiles::mailjawn())
            .store(store)
            .pepper(pepper())
            .build()
            .unwrap();
        let key = first_key(&api, CreateKey::new("k").bundle("sdk")).await;
        key.key.expose_secret().to_owned()
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(pepper())
        .build()
        .unwrap();
    api.verify(&presented).await.unwrap();
}

/// README, Storage, row `postgres`: `PostgresStore::connect(url)`, many
/// instances; key limits hold across them (two instances creating at once
/// never pass the limit).
pub(crate) async fn readme_storage_postgres() {
    let r = row(STORES, "`postgres`");
    assert_eq!(r[1], "`PostgresStore::connect(url)`");
    assert_eq!(r[2], "many instances; key limits hold across them");
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    PostgresStore::connect(pg.url())
        .await
        .unwrap()
        .pool()
        .close()
        .await;
    let profile = profiles::mailchannels().with_key_limit(Some(5));
    let instance = |store: Arc<dyn KeyStore>| {
        ApiKeys::builder(profile.clone())
            .store(store)
            .pepper(pepper())
            .build()
            .unwrap()
    };
    let other = PostgresStore::connect_with_schema(pg.url(), pg.schema())
        .await
        .unwrap();
    let (a, b) = (instance(pg.store()), instance(Arc::new(other)));
    let org = AccountId::new("org").unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let api = if i % 2 == 0 { a.clone() } else { b.clone() };
        let org = org.clone();
        tasks.push(tokio::spawn(async move {
            api.operator()
                .create(&org, CreateKey::new(format!("k{i}")).scopes(["api"]))
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => assert_eq!(e, Error::KeyLimitReached { limit: 5 }),
        }
    }
    assert_eq!(created, 5);
    let page = a
        .operator()
        .list(&org, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.data.len(), 5);
    pg.cleanup().await;
}

// ----- Running several instances: the failure table ------------------------------------

const FAILURES: &str = "| failure | what happens |";

/// README, Running several instances, row "PostgreSQL is unreachable": the
/// notification connection cannot be made, so the cache is bypassed and
/// verify answers 503, never success.
pub(crate) async fn readme_several_instances_postgres_unreachable() {
    let r = row(FAILURES, "PostgreSQL is unreachable");
    assert!(r[1].contains("503 (`AuthError::Unavailable`), never success"));
    let options: sqlx::postgres::PgConnectOptions =
        "postgres://postgres@127.0.0.1:1/test".parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with(options);
    let store = Arc::new(PostgresStore::from_pool(pool));
    let cached = CachedStore::builder(store.clone())
        .config(CacheConfig::default())
        .build();
    let follower = cached.follow_postgres(&store);
    assert!(cached.is_bypassed());
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(Arc::new(cached.clone()))
        .pepper(pepper())
        .build()
        .unwrap();
    let key = api.profile().formats()[0].generate();
    assert_eq!(
        api.verify(key.expose_secret()).await.unwrap_err(),
        AuthError::Unavailable
    );
    follower.shutdown().await;
}

/// README, Running several instances, row "the follower is stopped": its
/// cache stays bypassed, so every verify reads the store.
pub(crate) async fn readme_several_instances_follower_stopped() {
    let r = row(FAILURES, "the follower is stopped");
    assert!(r[1].contains("its cache stays bypassed"));
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let store = pg.postgres().clone();
    let cached = CachedStore::builder(store.clone()).build();
    let follower = cached.follow_postgres(&store);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cached.is_bypassed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never listened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(Arc::new(cached.clone()))
        .pepper(pepper())
        .build()
        .unwrap();
    let key = first_key(&api, CreateKey::new("k").bundle("sdk")).await;
    follower.shutdown().await;
    assert!(cached.is_bypassed());
    for _ in 0..3 {
        let misses = cached.stats().misses;
        api.verify(key.key.expose_secret()).await.unwrap();
        assert!(cached.stats().misses > misses, "answered from memory");
    }
    pg.cleanup().await;
}

// ----- Authorization table ------------------------------------------------------------

const AUTHORIZATION: &str = "| call | owner | parent | child | sibling | unrelated |";

/// `p` with sub-accounts `p/c` and `p/s`, an unrelated `u`; sub-accounts may
/// nest two deep so that creating one under `p/c` is allowed by depth.
struct World {
    api: ApiKeys,
    accounts: HashMap<&'static str, AccountId>,
}

impl World {
    async fn new(depth: usize) -> Self {
        let api =
            ApiKeys::in_memory(profiles::default().with_max_sub_account_depth(depth)).unwrap();
        let p = AccountId::new("p").unwrap();
        let c = api.operator().create_sub_account(&p, "c").await.unwrap();
        let s = api.operator().create_sub_account(&p, "s").await.unwrap();
        let u = AccountId::new("u").unwrap();
        let accounts = HashMap::from([("p", p), ("c", c), ("s", s), ("u", u)]);
        Self { api, accounts }
    }

    /// (actor, target) for a column of the table.
    fn column(&self, relation: &str) -> (&AccountId, &AccountId) {
        let a = |n| &self.accounts[n];
        match relation {
            "owner" => (a("c"), a("c")),
            "parent" => (a("p"), a("c")),
            "child" => (a("c"), a("p")),
            "sibling" => (a("s"), a("c")),
            "unrelated" => (a("u"), a("c")),
            other => panic!("{other}"),
        }
    }

    async fn actor(&self, account: &AccountId, as_key: bool) -> Actor {
        if !as_key {
            return Actor::Account(account.clone());
        }
        let key = self
            .api
            .operator()
            .create(account, CreateKey::new("actor").bundle("full_access"))
            .await
            .unwrap();
        Actor::Key(self.api.verify(key.key.expose_secret()).await.unwrap())
    }

    async fn victim(&self, account: &AccountId) -> KeyId {
        self.api
            .operator()
            .create(account, CreateKey::new("victim").bundle("read_only"))
            .await
            .unwrap()
            .info
            .id
    }

    async fn attempt(
        &self,
        call: &str,
        actor: Actor,
        target: &AccountId,
        n: usize,
    ) -> Result<(), Error> {
        let m = self.api.manage(actor);
        match call {
            "`create`" => m
                .create(target, CreateKey::new("x").bundle("read_only"))
                .await
                .map(drop),
            "`list`" => m.list(target, ListOptions::default()).await.map(drop),
            "`get`" => m.get(&self.victim(target).await).await.map(drop),
            "`revoke`" => m.revoke(&self.victim(target).await).await,
            "`rotate`" => m
                .rotate(&self.victim(target).await, Rotation::Immediate)
                .await
                .map(drop),
            "`reset_secret`" => m.reset_secret(&self.victim(target).await).await.map(drop),
            "`create_sub_account`" => m
                .create_sub_account(target, &format!("h{n}"))
                .await
                .map(drop),
            other => panic!("{other}"),
        }
    }
}

/// Runs one row of the authorization table as written: "yes" cells succeed
/// and "404" cells answer `NotFound`, for an account actor and a
/// full-access key actor alike.
async fn authorization_row(call: &str) {
    let r = row(AUTHORIZATION, call);
    let world = World::new(2).await;
    let mut n = 0;
    for (relation, cell) in ["owner", "parent", "child", "sibling", "unrelated"]
        .iter()
        .zip(&r[1..])
    {
        for as_key in [false, true] {
            n += 1;
            let (actor, target) = world.column(relation);
            let actor = world.actor(actor, as_key).await;
            let result = world.attempt(call, actor, target, n).await;
            if cell.starts_with("yes") {
                assert_eq!(result, Ok(()), "{call} {relation} key={as_key}");
            } else {
                assert_eq!(status_in(cell), 404);
                assert_eq!(
                    result,
                    Err(Error::NotFound),
                    "{call} {relation} key={as_key}"
                );
            }
        }
    }
}

/// README, Authorization, row `create`.
pub(crate) async fn readme_authorization_create() {
    authorization_row("`create`").await;
}

/// README, Authorization, row `list`.
pub(crate) async fn readme_authorization_list() {
    authorization_row("`list`").await;
}

/// README, Authorization, row `get`.
pub(crate) async fn readme_authorization_get() {
    authorization_row("`get`").await;
}

/// README, Authorization, row `revoke`.
pub(crate) async fn readme_authorization_revoke() {
    authorization_row("`revoke`").await;
}

/// README, Authorization, row `rotate`.
pub(crate) async fn readme_authorization_rotate() {
    authorization_row("`rotate`").await;
}

/// README, Authorization, row `reset_secret`.
pub(crate) async fn readme_authorization_reset_secret() {
    authorization_row("`reset_secret`").await;
}

/// README, Authorization, row `create_sub_account`: "yes, within the
/// profile's depth (else 403)": allowed within the depth, 403
/// `sub_account_depth` past it.
pub(crate) async fn readme_authorization_create_sub_account() {
    authorization_row("`create_sub_account`").await;
    let r = row(AUTHORIZATION, "`create_sub_account`");
    assert_eq!(r[1], "yes, within the profile's depth (else 403)");
    let world = World::new(1).await;
    let (actor, target) = world.column("owner");
    let refused = world
        .attempt(
            "`create_sub_account`",
            Actor::Account(actor.clone()),
            target,
            0,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (403, "sub_account_depth")
    );
}

/// README, Authorization, row `import`, `ensure_key`: operator only, 403 for
/// every other actor.
pub(crate) async fn readme_authorization_import_and_ensure_key() {
    let r = row(AUTHORIZATION, "`import`, `ensure_key`");
    assert_eq!(r[1], "operator only (403 for others)");
    let world = World::new(1).await;
    let c = &world.accounts["c"];
    for as_key in [false, true] {
        let actor = world.actor(c, as_key).await;
        let kept = world.api.profile().formats()[0].generate();
        let m = world.api.manage(actor);
        let grant = || CreateKey::new("k").bundle("read_only");
        for result in [
            m.import(c, kept.expose_secret(), grant()).await,
            m.ensure_key(c, kept.expose_secret(), grant()).await,
        ] {
            let e = result.unwrap_err();
            assert_eq!((e.status(), e.code()), (403, "operator_only"));
        }
    }
    let kept = world.api.profile().formats()[0].generate();
    world
        .api
        .operator()
        .import(
            c,
            kept.expose_secret(),
            CreateKey::new("k").bundle("read_only"),
        )
        .await
        .unwrap();
}

/// README, Security: a `IssuedKey` prints as `IssuedKey(mj_Ab3dE…)`,
/// its lookup id and an ellipsis.
pub(crate) fn readme_security_plaintext_key_debug() {
    assert!(README.contains("prints as\n  `IssuedKey(mj_Ab3dE…)`"));
    let key = profiles::mailjawn().formats()[0].generate();
    let shown = format!("{key:?}");
    assert_eq!(shown, format!("IssuedKey({}…)", &key.expose_secret()[..8]));
}

/// README, Security: key pairs have no checksum, so a well-shaped pair is
/// looked up and hashed (invalid), while a single-token typo fails the
/// checksum before any lookup.
pub(crate) async fn readme_security_typos_and_pairs() {
    assert!(README.contains("Key pairs (Mailjet) have no\n  checksum"));
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let garbage = format!("{}:{}", "a".repeat(32), "b".repeat(32));
    assert_eq!(api.verify(&garbage).await.unwrap_err(), AuthError::Invalid);
}

/// README, The demo server: "It prints a Full Access admin key, or imports
/// the one in `KEYGATE_ADMIN_KEY`", on every start: a second start on the
/// same SQLite file with the same kept key succeeds and adds no key.
pub(crate) async fn readme_demo_server_imports_the_admin_key_on_every_start() {
    assert!(README
        .contains("It prints a Full Access admin key, or imports the one in\n`KEYGATE_ADMIN_KEY`"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let start = || async {
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        ApiKeys::builder(profiles::mailjet())
            .store(store)
            .pepper(pepper())
            .build()
            .unwrap()
    };
    let api = start().await;
    let printed = http_support::app::admin_key(&api, None).await.unwrap();
    let (public, secret) = printed.split_once(':').unwrap();
    api.verify_pair(public, secret).await.unwrap();
    drop(api);
    for _ in 0..2 {
        let api = start().await;
        let again = http_support::app::admin_key(&api, Some(&printed))
            .await
            .unwrap();
        assert_eq!(again, printed);
        let admin = AccountId::new(http_support::app::ADMIN_ACCOUNT).unwrap();
        let keys = api
            .operator()
            .list(&admin, ListOptions::default())
            .await
            .unwrap();
        assert_eq!(keys.data.len(), 1);
        assert_eq!(keys.data[0].bundle.as_deref(), Some("full_access"));
    }
}

/// README, SMTP: the console session. The demo's admin key pair is the
/// SMTP username and password; the README's own `printf` and `curl`
/// commands run as shown (curl speaks SMTP), with only the port changed,
/// and the listener hands over a 41-byte message from `acct_admin` for
/// `r@example.net`, as the README says the server prints.
#[cfg(feature = "smtp")]
pub(crate) async fn readme_smtp_curl_session_sends_as_the_account() {
    use keygate::smtp::{SmtpConfig, SmtpServer};
    let block = README
        .split("```console\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("smtp://"))
        .expect("the README shows an SMTP session");
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let admin = http_support::app::admin_key(&api, None).await.unwrap();
    let shown = block
        .lines()
        .find_map(|l| l.strip_prefix("admin key: "))
        .expect("the session shows the admin key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let delivered = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = Arc::clone(&delivered);
    let server = SmtpServer::new(api, SmtpConfig::default());
    tokio::spawn(async move {
        server
            .serve(listener, move |m| {
                sink.lock().push((
                    m.principal.account().to_string(),
                    m.data.len(),
                    m.recipients.join(", "),
                ))
            })
            .await
    });
    let dir = std::env::temp_dir().join(format!("keygate-readme-smtp-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut commands = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("$ ") else {
            continue;
        };
        let mut command = command.to_owned();
        while command.ends_with('\\') {
            command.pop();
            command.push_str(lines.next().unwrap().trim());
        }
        if !command.starts_with("cargo run") {
            commands.push(
                command
                    .replace("127.0.0.1:2525", &format!("127.0.0.1:{port}"))
                    .replace(shown, &admin),
            );
        }
    }
    assert_eq!(commands.len(), 2, "printf and curl: {commands:?}");
    let script = commands.join(" && ");
    let (cwd, command) = (dir.clone(), script.clone());
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(&command)
            .current_dir(&cwd)
            .env("NO_PROXY", "*")
            .output()
    })
    .await
    .unwrap()
    .expect("bash and curl are installed");
    assert!(
        run.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let delivered = delivered.lock().clone();
    assert_eq!(
        delivered,
        [("acct_admin".to_owned(), 41, "r@example.net".to_owned())]
    );
    assert!(README.contains(
        "the server prints `smtp: message from acct_admin (41 bytes) for r@example.net`"
    ));
    std::fs::remove_dir_all(&dir).ok();
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::CURRENT) readme_outcome_no_credential,
        tokio(Rt::CURRENT) readme_outcome_malformed_credentials,
        tokio(Rt::CURRENT) readme_outcome_unknown_revoked_expired,
        tokio(Rt::CURRENT) readme_outcome_missing_scope,
        tokio(Rt::CURRENT) readme_outcome_plain_http,
        tokio(Rt::CURRENT) readme_outcome_another_accounts_resource,
        tokio(Rt::CURRENT) readme_outcome_over_the_limit,
        tokio(Rt::CURRENT) readme_outcome_store_unreachable,
        tokio(Rt::CURRENT) readme_management_routes_table_every_row,
        tokio(Rt::CURRENT) readme_demo_routes_table_every_row,
        tokio(Rt::CURRENT) readme_curl_sessions_replay_against_the_demo,
        tokio(Rt::CURRENT) readme_profiles_mailjawn,
        tokio(Rt::CURRENT) readme_profiles_mailjet,
        tokio(Rt::CURRENT) readme_profiles_mailchannels,
        tokio(Rt::CURRENT) readme_profiles_mailkite,
        tokio(Rt::CURRENT) readme_profiles_default,
        tokio(Rt::CURRENT) readme_storage_memory,
        tokio(Rt::CURRENT) readme_storage_sqlite,
        tokio(Rt::multi(2)) readme_storage_postgres,
        tokio(Rt::CURRENT) readme_several_instances_postgres_unreachable,
        tokio(Rt::multi(2)) readme_several_instances_follower_stopped,
        tokio(Rt::CURRENT) readme_authorization_create,
        tokio(Rt::CURRENT) readme_authorization_list,
        tokio(Rt::CURRENT) readme_authorization_get,
        tokio(Rt::CURRENT) readme_authorization_revoke,
        tokio(Rt::CURRENT) readme_authorization_rotate,
        tokio(Rt::CURRENT) readme_authorization_reset_secret,
        tokio(Rt::CURRENT) readme_authorization_create_sub_account,
        tokio(Rt::CURRENT) readme_authorization_import_and_ensure_key,
        sync readme_security_plaintext_key_debug,
        tokio(Rt::CURRENT) readme_security_typos_and_pairs,
        tokio(Rt::CURRENT) readme_demo_server_imports_the_admin_key_on_every_start,
        tokio(Rt::CURRENT) readme_smtp_curl_session_sends_as_the_account,
    ]);
    support::harness::run(trials)
}
