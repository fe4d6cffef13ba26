//! No secret leaves keygate except where it is handed over on purpose (the
//! one response or return value that carries a new key). One test per store
//! drives every public path (create, verify, list, get, update, disable,
//! rotate, reset, revoke, their errors, the management routes over HTTP with
//! Bearer and Basic, audit events, session tokens) with tracing captured at
//! TRACE, which includes sqlx's statement logging. Everything emitted (the
//! capture, every value's `Debug`/`Display`/JSON, every HTTP status line,
//! header and body) is searched for the plaintext of every key, secret,
//! pepper and session token. A marker planted in the capture proves the
//! search sees what the subscriber records.

mod http_support;
#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use keygate::layer::ApiKeyLayer;
use keygate::routes::ManagementRoutes;
use keygate::session::{SessionKey, Sessions};
use keygate::{
    profiles, AccountId, ApiKeys, AuditSink, CreateKey, KeyStore, KeyUpdate, ListOptions,
    MemoryAudit, Pepper, Profile, Rotation, TracingAudit,
};
use serde_json::{json, Value};
use support::harness::{self, Rt};

const PEPPER: &[u8] = b"leak-test-pepper-0123456789abcdef";
const SESSION_SECRET: &[u8] = b"leak-test-session-secret-0123456789";

/// Everything the subscriber wrote, at every level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The process-wide capture (one subscriber per process).
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(capture.clone())
            .init();
        capture
    })
}

/// What must never be emitted, and what was.
#[derive(Default)]
struct Audit {
    secrets: Vec<(String, String)>,
    emitted: Vec<(String, String)>,
}

impl Audit {
    fn secret(&mut self, what: impl Into<String>, plaintext: impl Into<String>) {
        let plaintext = plaintext.into();
        assert!(
            plaintext.len() >= 8,
            "a secret to search for is long enough to be unique"
        );
        self.secrets.push((what.into(), plaintext));
    }

    /// A key as handed over: the whole text, its part after the lookup id,
    /// and (for pairs) the secret and the Basic credential.
    fn key(&mut self, what: &str, api: &ApiKeys, presented: &str) {
        let lookup = api
            .parse(presented)
            .expect("an issued key parses")
            .lookup()
            .len();
        self.secret(format!("{what} (whole)"), presented);
        let hidden = presented[lookup..].trim_start_matches(':');
        self.secret(format!("{what} (hidden part)"), hidden);
        if presented.contains(':') {
            let basic = base64::engine::general_purpose::STANDARD.encode(presented);
            self.secret(format!("{what} (Basic)"), basic);
        }
    }

    fn emit(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.emitted.push((place.into(), text.into()));
    }

    fn debug<T: std::fmt::Debug>(&mut self, place: &str, value: &T) {
        self.emit(place, format!("{value:?}"));
    }

    fn result<T: std::fmt::Debug, E: std::fmt::Debug + std::fmt::Display>(
        &mut self,
        place: &str,
        value: &Result<T, E>,
    ) {
        match value {
            Ok(v) => self.debug(place, v),
            Err(e) => {
                self.emit(place, format!("{e:?}"));
                self.emit(place, e.to_string());
            }
        }
    }

    /// Every (place, secret description) where a secret appears.
    fn hits(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut hits = Vec::new();
        for (place, text) in self.emitted.iter().chain(extra) {
            for (what, secret) in &self.secrets {
                if text.contains(secret.as_str()) {
                    hits.push((place.clone(), what.clone()));
                }
            }
        }
        hits
    }
}

fn pepper() -> Pepper {
    Pepper::new(1, PEPPER).unwrap()
}

fn sessions() -> Sessions {
    Sessions::builder("https://leaks.example", "dashboard")
        .signing_key(SessionKey::hs256("k1", SESSION_SECRET).unwrap())
        .build()
        .unwrap()
}

fn service(profile: Profile, store: Arc<dyn KeyStore>, audit: &MemoryAudit) -> ApiKeys {
    ApiKeys::builder(profile)
        .store(store)
        .pepper(pepper())
        .audit(audit.clone())
        .sessions(sessions())
        .build()
        .unwrap()
}

/// Drives every path of the service API on `store` (a MailJawn-style token
/// profile) and `pair_store` (Mailjet key pairs).
async fn drive(audit: &mut Audit, store: Arc<dyn KeyStore>, pair_store: Arc<dyn KeyStore>) {
    audit.secret("pepper", String::from_utf8(PEPPER.to_vec()).unwrap());
    audit.secret("pepper (hex)", hex(PEPPER));
    audit.secret(
        "pepper (base64)",
        base64::engine::general_purpose::STANDARD.encode(PEPPER),
    );
    audit.secret(
        "session secret",
        String::from_utf8(SESSION_SECRET.to_vec()).unwrap(),
    );
    audit.debug("Pepper", &pepper());

    let events = MemoryAudit::new();
    let api = service(profiles::mailjawn(), store, &events);
    let org = AccountId::new("org_leaks").unwrap();
    let ops = api.operator();

    // Create, verify, and the refusals of verify.
    let created = ops
        .create(&org, CreateKey::new("leak sdk").bundle("sdk"))
        .await
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    audit.key("created key", &api, &key);
    audit.debug("NewKey", &created);
    audit.debug("IssuedKey", &created.key);
    audit.emit(
        "KeyInfo JSON",
        serde_json::to_string(&created.info).unwrap(),
    );
    let admin = ops
        .create(&org, CreateKey::new("leak admin").all_scopes())
        .await
        .unwrap();
    let admin_key = admin.key.expose_secret().to_owned();
    audit.key("admin key", &api, &admin_key);

    let ok = api.verify(&key).await;
    audit.result("verify ok", &ok);
    let mut wrong = key.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    audit.result("verify bad checksum", &api.verify(&wrong).await);
    audit.result("parse", &api.parse(&key));
    let truncated = &key[..key.len() - 1];
    audit.result("verify truncated", &api.verify(truncated).await);
    let principal = ok.unwrap();
    audit.result(
        "check_scope denied",
        &api.check_scope(&principal, "emails:send"),
    );

    // List, get, update, disable, enable.
    audit.result("list", &ops.list(&org, ListOptions::default()).await);
    audit.result("get", &ops.get(&created.info.id).await);
    let update = KeyUpdate::new().name("renamed");
    audit.result("update", &ops.update(&created.info.id, update).await);
    audit.result("disable", &ops.disable(&created.info.id).await);
    audit.result("verify disabled", &api.verify(&key).await);
    audit.result("enable", &ops.enable(&created.info.id).await);

    // Rotate with grace and at once; revoke; the refusals that follow.
    let rotated = ops
        .rotate(&created.info.id, Rotation::Grace(Duration::from_secs(60)))
        .await
        .unwrap();
    audit.key("rotated key", &api, rotated.key.expose_secret());
    audit.debug("rotated", &rotated);
    let again = ops
        .rotate(&rotated.info.id, Rotation::Immediate)
        .await
        .unwrap();
    audit.key("rotated again", &api, again.key.expose_secret());
    audit.result(
        "verify rotated-away",
        &api.verify(rotated.key.expose_secret()).await,
    );
    audit.result(
        "rotate twice",
        &ops.rotate(&rotated.info.id, Rotation::Immediate).await,
    );
    audit.result("revoke", &ops.revoke(&again.info.id).await);
    audit.result(
        "verify revoked",
        &api.verify(again.key.expose_secret()).await,
    );
    audit.result(
        "create refused",
        &ops.create(&org, CreateKey::new("x").scopes(["nope:nope"]))
            .await,
    );
    audit.result(
        "get missing",
        &ops.get(&keygate::KeyId::new("missing")).await,
    );
    if let Ok(f) = api.flush_last_used().await {
        audit.debug("flush", &f);
    }

    // Key pairs: create, verify_pair, reset.
    let pair_events = MemoryAudit::new();
    let pairs = service(profiles::mailjet(), pair_store, &pair_events);
    let pair = pairs
        .operator()
        .create(&org, CreateKey::new("leak pair").all_scopes())
        .await
        .unwrap();
    let pair_text = format!("{}:{}", pair.key.lookup(), pair.key.expose_secret());
    audit.key("pair", &pairs, &pair_text);
    audit.debug("pair NewKey", &pair);
    audit.result(
        "verify_pair",
        &pairs
            .verify_pair(pair.key.lookup(), pair.key.expose_secret())
            .await,
    );
    let reset = pairs.operator().reset_secret(&pair.info.id).await.unwrap();
    let reset_text = format!("{}:{}", reset.key.lookup(), reset.key.expose_secret());
    audit.key("reset pair", &pairs, &reset_text);
    audit.debug("reset", &reset);
    audit.result(
        "verify_pair old secret",
        &pairs
            .verify_pair(pair.key.lookup(), pair.key.expose_secret())
            .await,
    );

    // Sessions.
    let sessions = api.sessions().unwrap();
    let issued = sessions.issue("user_leaks", &org).await.unwrap();
    let token = issued.token.expose_secret().to_owned();
    audit.secret("session token", token.clone());
    audit.secret(
        "session signature",
        token.rsplit('.').next().unwrap().to_owned(),
    );
    audit.debug("IssuedSession", &issued);
    audit.result("verify_session", &api.verify_session(&token).await);
    sessions.end_all("user_leaks").await.unwrap();
    audit.result("verify ended session", &api.verify_session(&token).await);
    let mut forged = token.clone();
    forged.push('x');
    audit.result("verify forged session", &api.verify_session(&forged).await);

    // HTTP: the management routes with Bearer (tokens) and Basic (pairs).
    http(audit, &api, &admin_key).await;
    http_pairs(audit, &pairs, &reset_text).await;

    // Audit events: Debug, JSON, and through the tracing sink.
    for event in events.events().iter().chain(pair_events.events().iter()) {
        audit.debug("AuditEvent", event);
        audit.emit("AuditEvent JSON", serde_json::to_string(event).unwrap());
        TracingAudit.record(event);
    }
}

/// Sends `request`, records its status, headers and body (minus the `key`
/// field of a response that hands over a new key, which becomes a secret).
async fn send(
    audit: &mut Audit,
    api: &ApiKeys,
    place: &str,
    request: reqwest::RequestBuilder,
) -> Value {
    let response = request.send().await.unwrap();
    let mut head = format!("{:?} {}\n", response.version(), response.status());
    for (name, value) in response.headers() {
        head.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    audit.emit(format!("{place} (head)"), head);
    let text = response.text().await.unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if let Some(key) = body.get("key").and_then(Value::as_str).map(str::to_owned) {
        audit.key(&format!("{place} key"), api, &key);
        body["key"] = Value::Null;
    }
    audit.emit(format!("{place} (body)"), body.to_string());
    body
}

async fn http(audit: &mut Audit, api: &ApiKeys, admin: &str) {
    let layer = ApiKeyLayer::new(api.clone());
    let router = ManagementRoutes::new(&layer).prefix("/v1").build().unwrap();
    let server = http_support::serve(router).await;
    let bearer = |r: reqwest::RequestBuilder| r.bearer_auth(admin);
    let created = send(
        audit,
        api,
        "POST /v1/api-keys",
        bearer(server.post("/v1/api-keys")).json(&json!({"name": "http", "bundle": "sdk"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    send(
        audit,
        api,
        "GET /v1/api-keys",
        bearer(server.get("/v1/api-keys")),
    )
    .await;
    send(
        audit,
        api,
        "GET one",
        bearer(server.get(&format!("/v1/api-keys/{id}"))),
    )
    .await;
    let rotated = send(
        audit,
        api,
        "rotate",
        bearer(server.post(&format!("/v1/api-keys/{id}/rotate"))).json(&json!({})),
    )
    .await;
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    send(
        audit,
        api,
        "reset",
        bearer(server.post(&format!("/v1/api-keys/{new_id}/reset-secret"))),
    )
    .await;
    send(
        audit,
        api,
        "revoke",
        bearer(server.delete(&format!("/v1/api-keys/{new_id}"))),
    )
    .await;
    send(
        audit,
        api,
        "bad json",
        bearer(server.post("/v1/api-keys")).body("{\"name\":"),
    )
    .await;
    let mut wrong = admin.to_owned();
    wrong.replace_range(10..11, if &admin[10..11] == "A" { "B" } else { "A" });
    send(
        audit,
        api,
        "wrong key",
        server.get("/v1/api-keys").bearer_auth(&wrong),
    )
    .await;
    send(
        audit,
        api,
        "malformed key",
        server.get("/v1/api-keys").bearer_auth(&admin[..20]),
    )
    .await;
    send(audit, api, "missing key", server.get("/v1/api-keys")).await;
}

async fn http_pairs(audit: &mut Audit, api: &ApiKeys, pair: &str) {
    let layer = ApiKeyLayer::new(api.clone());
    let router = ManagementRoutes::new(&layer).prefix("/v1").build().unwrap();
    let server = http_support::serve(router).await;
    let (public, secret) = pair.split_once(':').unwrap();
    send(
        audit,
        api,
        "pair list",
        server.get("/v1/api-keys").basic_auth(public, Some(secret)),
    )
    .await;
    let mut wrong = secret.to_owned();
    wrong.replace_range(0..1, if &secret[0..1] == "a" { "b" } else { "a" });
    send(
        audit,
        api,
        "pair wrong",
        server.get("/v1/api-keys").basic_auth(public, Some(&wrong)),
    )
    .await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `drive` on the stores and checks the capture and everything emitted.
async fn no_secret_leaks(stores: (Arc<dyn KeyStore>, Arc<dyn KeyStore>), statements: bool) {
    let capture = capture();
    let mut audit = Audit::default();
    drive(&mut audit, stores.0, stores.1).await;

    // The self-check: a secret-shaped marker written at TRACE under sqlx's
    // statement target must be found.
    let marker = format!("planted_{:032x}", rand::random::<u128>());
    tracing::trace!(target: "sqlx::query", "{marker}");
    let log = capture.text();
    let mut planted = Audit::default();
    planted.secret("planted marker", marker.clone());
    let found = planted.hits(&[("tracing capture".into(), log.clone())]);
    assert_eq!(found, [("tracing capture".into(), "planted marker".into())]);
    if statements {
        assert!(
            log.contains("sqlx::query"),
            "sqlx statement logging is captured"
        );
    }
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the capture records low levels"
    );

    let hits = audit.hits(&[("tracing capture".into(), log)]);
    assert!(
        audit.secrets.len() > 20 && audit.emitted.len() > 50,
        "the test drove the paths: {} secrets, {} outputs",
        audit.secrets.len(),
        audit.emitted.len()
    );
    assert!(hits.is_empty(), "secrets leaked: {hits:?}");
}

async fn memory() {
    no_secret_leaks(
        (
            Arc::new(keygate::MemoryStore::new()),
            Arc::new(keygate::MemoryStore::new()),
        ),
        false,
    )
    .await;
}

async fn sqlite() {
    let a = keygate::SqliteStore::in_memory().await.unwrap();
    let b = keygate::SqliteStore::in_memory().await.unwrap();
    no_secret_leaks((Arc::new(a), Arc::new(b)), true).await;
}

async fn postgres() {
    let Some(a) = support::postgres_store().await else {
        return;
    };
    let Some(b) = support::postgres_store().await else {
        return;
    };
    no_secret_leaks((a.store(), b.store()), true).await;
    a.cleanup().await;
    b.cleanup().await;
}

fn main() -> ExitCode {
    harness::run(vec![
        harness::async_test("no_secret_leaks_on_memory", Rt::multi(2), memory),
        harness::async_test("no_secret_leaks_on_sqlite", Rt::multi(2), sqlite),
        harness::async_test("no_secret_leaks_on_postgres", Rt::multi(2), postgres),
    ])
}
