//! The demo's API-keys page (`/keys`) in a real browser: headless Chromium
//! driven through chromedriver. Reported as ignored, with the reason, when
//! Chromium or chromedriver is missing, and failed then with
//! `KEYGATE_REQUIRE_SERVICES=1` unless `KEYGATE_BROWSER_UNAVAILABLE` says
//! why they could not be installed (then ignored with that reason).
//!
//! With `KEYGATE_KEYS_PAGE_SCREENSHOT=PATH` the test also saves a
//! screenshot of the page (the README's `docs/keys-page.png`).
mod http_support;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use http_support::{app, mailkite_service, start, Options, Product};
use hyper_util::client::legacy::connect::HttpConnector;
use keygate::{profiles, ApiKeys};
use serde_json::json;

/// The key name that must render as text, never run.
const SCRIPT_NAME: &str = "<script>alert(1)</script>";

/// The first of `names` found on `PATH` or as an absolute path.
fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        let direct = Path::new(name);
        if direct.is_absolute() && direct.is_file() {
            return Some(direct.to_path_buf());
        }
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver; else the test ends as ignored, saying why (a
/// failure when the browser is required).
fn browser() -> (PathBuf, PathBuf) {
    if let Ok(why) = std::env::var("KEYGATE_BROWSER_UNAVAILABLE") {
        support::harness::skip(format!("browser unavailable: {why}"));
    }
    let chromium = find_binary(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_binary(&["chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => {
            let why = format!(
                "chromium {} and chromedriver {} (apt-get install chromium chromium-driver)",
                if c.is_some() { "found" } else { "missing" },
                if d.is_some() { "found" } else { "missing" },
            );
            if std::env::var("KEYGATE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("the browser test is required (KEYGATE_REQUIRE_SERVICES=1): {why}");
            }
            support::harness::skip(format!("browser unavailable: {why}"))
        }
    }
}

/// chromedriver on a free local port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn launch(chromium: &Path, driver: &Path) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1200,800"],
        }),
    );
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not reach chromedriver: {last:?}");
}

async fn text(c: &Client, locator: Locator<'_>) -> String {
    c.find(locator).await.unwrap().text().await.unwrap()
}

/// Signs in by pasting `key`, and waits for the key list.
async fn sign_in(c: &Client, key: &str) {
    c.wait()
        .for_element(Locator::Id("admin-key"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
    c.find(Locator::Css("#key-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(c, "the key list", "!document.getElementById('keys').hidden").await;
}

/// Waits until `condition` (a JS expression) is true in the page.
async fn wait_until(c: &Client, what: &str, condition: &str) {
    for _ in 0..100 {
        let value = c
            .execute(&format!("return Boolean({condition});"), vec![])
            .await
            .unwrap();
        if value == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = text(c, Locator::Id("message")).await;
    panic!("timed out waiting for {what}; the page says: {message:?}");
}

/// The names in the key list, as the browser renders them.
async fn listed_names(c: &Client) -> Vec<String> {
    let cells = c.find_all(Locator::Css("#key-rows td.name")).await.unwrap();
    let mut names = Vec::new();
    for cell in cells {
        names.push(cell.text().await.unwrap());
    }
    names
}

async fn create(c: &Client, name: &str) -> String {
    c.execute(
        "document.getElementById('key-grant').value = 'bundle:full_access';",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Id("key-name"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    c.find(Locator::Css("#create-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(c, "the reveal", "!document.getElementById('reveal').hidden").await;
    text(c, Locator::Id("reveal-key")).await
}

async fn keys_page_shows_a_key_once_escapes_names_and_revokes() {
    let (chromium, driver) = browser();
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let (server, admin) = start(Product::MailJawn, &api, Options::default()).await;
    let page = server.url("/keys");

    // The page is served with a strict policy and no inline script.
    let response = server.get("/keys").send().await.unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(csp, app::keys_page::CSP);
    assert!(csp.starts_with("default-src 'none'"));
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script: {html}");

    let (_driver, c) = launch(&chromium, &driver).await;
    c.goto(&page).await.unwrap();
    sign_in(&c, &admin).await;
    assert_eq!(listed_names(&c).await, ["admin"]);

    // A created key is shown once, with the warning, and its name (a
    // script tag) renders as text and never runs.
    let secret = create(&c, SCRIPT_NAME).await;
    assert!(
        secret.starts_with("mj_"),
        "the reveal shows the key: {secret}"
    );
    assert!(text(&c, Locator::Css("#reveal .warning"))
        .await
        .contains("will not be shown again"));
    assert!(c.source().await.unwrap().contains(&secret));
    wait_until(
        &c,
        "the new row",
        "document.querySelectorAll('#key-rows tr').length === 2",
    )
    .await;
    let names = listed_names(&c).await;
    assert!(names.contains(&SCRIPT_NAME.to_owned()), "{names:?}");
    assert!(
        c.get_alert_text().await.is_err(),
        "the name ran as a script"
    );
    let injected = c
        .execute(
            "return document.querySelectorAll('#key-rows script').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(0));

    // Dismissed: the secret is nowhere in the page any more.
    c.find(Locator::Id("dismiss"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(!c.source().await.unwrap().contains(&secret));

    // The key works, and a reload forgets both it and the admin key.
    let used = server
        .get("/v1/campaigns")
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);
    c.refresh().await.unwrap();
    let source = c.source().await.unwrap();
    assert!(!source.contains(&secret));
    assert!(!source.contains(&admin));
    let stored = c
        .execute(
            "return localStorage.length + sessionStorage.length + document.cookie.length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!(0), "nothing kept in browser storage");
    sign_in(&c, &admin).await;
    assert!(!c.source().await.unwrap().contains(&secret));
    let mut names = listed_names(&c).await;
    names.sort();
    assert_eq!(names, ["<script>alert(1)</script>", "admin"]);

    if let Ok(path) = std::env::var("KEYGATE_KEYS_PAGE_SCREENSHOT") {
        create(&c, "Production SDK").await;
        wait_until(
            &c,
            "three rows",
            "document.querySelectorAll('#key-rows tr').length === 3",
        )
        .await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        c.find(Locator::Id("dismiss"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    // Revoke, after the confirmation: the row is gone and the key refused.
    let row = format!(
        "//tr[td[@class='name' and text()={}]]//button",
        "'<script>alert(1)</script>'"
    );
    c.find(Locator::XPath(&row))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = c.get_alert_text().await.unwrap();
    assert!(question.contains(SCRIPT_NAME), "{question}");
    c.accept_alert().await.unwrap();
    wait_until(
        &c,
        "the row to go",
        "![...document.querySelectorAll('#key-rows td.name')].some(td => td.textContent === '<script>alert(1)</script>')",
    )
    .await;
    assert!(!listed_names(&c).await.contains(&SCRIPT_NAME.to_owned()));
    let refused = server
        .get("/v1/campaigns")
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    c.close().await.unwrap();
}

/// MailKite signs in on the page with the dashboard's login (a session), not
/// a pasted key: a wrong password is refused, the right one lists the user's
/// key, the session token stays out of browser storage, and a reload forgets
/// it.
async fn keys_page_signs_mailkite_users_in_with_their_session() {
    let (chromium, driver) = browser();
    const EMAIL: &str = "page@example.com";
    const PASSWORD: &str = "correct horse battery staple";
    let (api, _clock) = mailkite_service();
    let (server, _) = start(Product::MailKite, &api, Options::default()).await;
    let signup = server
        .post("/api/auth/signup")
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let token = signup.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (_driver, c) = launch(&chromium, &driver).await;
    c.goto(&server.url("/keys")).await.unwrap();
    let log_in = |password: &'static str| {
        let c = c.clone();
        async move {
            let email = c.wait().for_element(Locator::Id("email")).await.unwrap();
            email.clear().await.unwrap();
            email.send_keys(EMAIL).await.unwrap();
            c.find(Locator::Id("password"))
                .await
                .unwrap()
                .send_keys(password)
                .await
                .unwrap();
            c.find(Locator::Css("#login-form button[type=submit]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };

    log_in("not the password").await;
    wait_until(
        &c,
        "the refusal",
        "document.getElementById('message').textContent.length > 0",
    )
    .await;
    assert!(c
        .execute("return document.getElementById('keys').hidden;", vec![])
        .await
        .unwrap()
        .as_bool()
        .unwrap());

    log_in(PASSWORD).await;
    wait_until(
        &c,
        "the key list",
        "!document.getElementById('keys').hidden",
    )
    .await;
    wait_until(
        &c,
        "the user's key",
        "document.querySelectorAll('#key-rows tr').length === 1",
    )
    .await;
    let stored = c
        .execute(
            "return localStorage.length + sessionStorage.length + document.cookie.length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!(0), "nothing kept in browser storage");

    c.refresh().await.unwrap();
    c.wait().for_element(Locator::Id("email")).await.unwrap();
    assert!(c
        .execute("return document.getElementById('keys').hidden;", vec![])
        .await
        .unwrap()
        .as_bool()
        .unwrap());
    assert!(!c.source().await.unwrap().contains(&token));

    c.close().await.unwrap();
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    support::harness::run(trials![
        tokio(Rt::multi(2)) keys_page_shows_a_key_once_escapes_names_and_revokes,
        tokio(Rt::multi(2)) keys_page_signs_mailkite_users_in_with_their_session,
    ])
}
