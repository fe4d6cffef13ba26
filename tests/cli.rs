//! The `keygate` binary end to end, against a real SQLite file and a real
//! PostgreSQL schema of its own (skipped, or failed with
//! `KEYGATE_REQUIRE_SERVICES=1`, when no server answers), and the README's
//! operator session replayed command by command. Runs on the harness in
//! `support/harness.rs`, so a skipped PostgreSQL test shows as ignored with
//! the reason.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use keygate::hash::{Hasher, Pepper};
use keygate::{profiles, ApiKeys, AuthError, KeyStore, PostgresStore, SqliteStore};
use serde_json::Value;

const PEPPER_1: &str = "1:0101010101010101010101010101010101010101010101010101010101010101";
const PEPPER_2: &str = "2:0202020202020202020202020202020202020202020202020202020202020202";

/// `keygate` with a clean environment: only what the test sets.
fn keygate(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.env_clear()
        .env("DATABASE_URL", url)
        .env("KEYGATE_PROFILE", "mailjawn")
        .env("KEYGATE_PEPPER", PEPPER_1);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs and checks the exit code; returns stdout parsed as JSON when it is.
fn expect(cmd: &mut Command, code: i32) -> Output {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    if code != 0 {
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
        assert!(err.starts_with("keygate: error: "), "{err}");
        assert!(stdout(&out).is_empty(), "nothing on stdout on failure");
    }
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

/// A service over the same database, as the operator's application would
/// build it, to check that what the CLI made works.
fn app(store: impl KeyStore, hasher: Hasher) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .hasher(hasher)
        .build()
        .unwrap()
}

fn hasher(current: u8, previous: Option<u8>) -> Hasher {
    let pepper = |v: u8| Pepper::new(u32::from(v), [v; 32]).unwrap();
    let h = Hasher::new(pepper(current));
    match previous {
        Some(p) => h.with_previous(pepper(p)).unwrap(),
        None => h,
    }
}

/// The whole life of an admin key through the CLI, then checked through the
/// library on the same database.
async fn operator_life_cycle<S: KeyStore + Clone>(url: &str, open: impl Fn() -> S) {
    // Not migrated yet: a configuration failure, one line.
    expect(
        keygate(url).args(["keys", "list", "--account", "org_admin"]),
        3,
    );
    expect(keygate(url).arg("migrate"), 0);
    expect(keygate(url).arg("migrate"), 0);

    // The first admin key: its plaintext on stdout, once, never on stderr.
    let created = expect(
        keygate(url).args([
            "--json",
            "keys",
            "create",
            "--account",
            "org_admin",
            "--name",
            "admin",
            "--bundle",
            "full_access",
        ]),
        0,
    );
    let shown = json(&created);
    let admin = shown["key"].as_str().unwrap().to_owned();
    let admin_id = shown["id"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("mj_"), "{admin}");
    assert!(!stderr(&created).contains(&admin));
    let principal = app(open(), hasher(1, None)).verify(&admin).await.unwrap();
    assert_eq!(principal.key_id().as_str(), admin_id);
    assert_eq!(principal.bundle(), Some("full_access"));

    // Text output too, with an expiry.
    let text = expect(
        keygate(url).args([
            "keys",
            "create",
            "--account",
            "org_admin",
            "--name",
            "ci",
            "--scope",
            "subscribers:read",
            "--scope",
            "emails:send",
            "--expires",
            "90d",
        ]),
        0,
    );
    let ci = stdout(&text)
        .lines()
        .find_map(|l| l.strip_prefix("key:").map(|k| k.trim().to_owned()))
        .expect("the key line");
    assert!(stderr(&text).contains("shown only once"));
    assert!(!stderr(&text).contains(&ci));
    let ci_principal = app(open(), hasher(1, None)).verify(&ci).await.unwrap();
    assert!(ci_principal.expires_at().is_some());

    // Listing and getting never show a plaintext.
    let listed = expect(
        keygate(url).args(["--json", "keys", "list", "--account", "org_admin"]),
        0,
    );
    let page = json(&listed);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(!stdout(&listed).contains(&admin) && !stdout(&listed).contains(&ci));
    let text = stdout(&expect(
        keygate(url).args(["keys", "list", "--account", "org_admin"]),
        0,
    ));
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains(&admin_id) && text.contains("active"));
    let got = expect(keygate(url).args(["--json", "keys", "get", &admin_id]), 0);
    assert_eq!(json(&got)["name"], "admin");
    expect(keygate(url).args(["keys", "get", "key_nope"]), 4);

    // Rotation with grace: both work until the old one expires.
    let rotated = json(&expect(
        keygate(url).args(["--json", "keys", "rotate", &admin_id, "--grace", "24h"]),
        0,
    ));
    let new_admin = rotated["key"].as_str().unwrap().to_owned();
    let api = app(open(), hasher(1, None));
    api.verify(&admin).await.unwrap();
    api.verify(&new_admin).await.unwrap();
    expect(keygate(url).args(["keys", "rotate", &admin_id]), 5);

    // Revocation is immediate.
    let ci_id = ci_principal.key_id().as_str().to_owned();
    expect(keygate(url).args(["keys", "revoke", &ci_id]), 0);
    assert_eq!(
        app(open(), hasher(1, None)).verify(&ci).await.unwrap_err(),
        AuthError::Revoked
    );

    // Import reads the key from stdin; a second import is refused.
    let kept = profiles::mailjawn().formats()[0].generate();
    let imported = expect(
        keygate(url)
            .args([
                "--json",
                "keys",
                "import",
                "--account",
                "org_ops",
                "--name",
                "kept",
            ])
            .args(["--bundle", "sdk"])
            .write_stdin(format!("{}\n", kept.expose_secret())),
        0,
    );
    assert!(!stdout(&imported).contains(kept.expose_secret()));
    app(open(), hasher(1, None))
        .verify(kept.expose_secret())
        .await
        .unwrap();
    expect(
        keygate(url)
            .args(["keys", "import", "--account", "org_ops", "--name", "kept"])
            .args(["--bundle", "sdk"])
            .write_stdin(kept.expose_secret().to_owned()),
        5,
    );

    // Refused requests and missing configuration.
    expect(
        keygate(url).args(["keys", "create", "--account", "org_admin", "--name", "x"]),
        5,
    );
    expect(
        keygate(url).args([
            "keys",
            "create",
            "--account",
            "org_admin",
            "--name",
            "x",
            "--bundle",
            "nope",
        ]),
        5,
    );
    let no_pepper = expect(
        keygate(url)
            .env_remove("KEYGATE_PEPPER")
            .args(["keys", "list", "--account", "org_admin"]),
        3,
    );
    assert!(stderr(&no_pepper).contains("KEYGATE_PEPPER"));
    // There is no flag for the pepper.
    let flag = run(keygate(url).args(["--pepper", "x", "keys", "list", "--account", "a"]));
    assert_eq!(flag.status.code(), Some(2));
    expect(
        keygate(url)
            .env_remove("KEYGATE_PROFILE")
            .args(["keys", "list", "--account", "org_admin"]),
        3,
    );

    // Sub-accounts (MailJawn allows none, MailChannels one level).
    expect(
        keygate(url).args([
            "accounts",
            "create-sub",
            "--parent",
            "org_admin",
            "--handle",
            "eu",
        ]),
        5,
    );
    let sub = expect(
        keygate(url).env("KEYGATE_PROFILE", "mailchannels").args([
            "accounts",
            "create-sub",
            "--parent",
            "acme",
            "--handle",
            "eu",
        ]),
        0,
    );
    assert_eq!(stdout(&sub), "acme/eu\n");

    // Keys due for a secret reset: none is 90 days old.
    let due = json(&expect(
        keygate(url)
            .env("KEYGATE_PROFILE", "mailjet")
            .args(["--json", "keys", "due-for-reset"]),
        0,
    ));
    assert_eq!(due["data"], Value::Array(Vec::new()));

    // Pepper rotation: move to pepper 2, verify once, retire pepper 1.
    let status = json(&expect(
        keygate(url).args(["--json", "peppers", "status"]),
        0,
    ));
    assert_eq!(status["current"], 1);
    assert_eq!(status["keys"], serde_json::json!({ "1": 3 }));
    let rotated_app = app(open(), hasher(2, Some(1)));
    rotated_app.verify(&new_admin).await.unwrap();
    assert_eq!(rotated_app.flush_rehashes().await.unwrap(), 1);
    let status = json(&expect(
        keygate(url)
            .env("KEYGATE_PEPPER", PEPPER_2)
            .env("KEYGATE_PREVIOUS_PEPPERS", PEPPER_1)
            .args(["--json", "peppers", "status"]),
        0,
    ));
    assert_eq!(status["current"], 2);
    assert_eq!(status["keys"], serde_json::json!({ "1": 2, "2": 1 }));
    let text = stdout(&expect(
        keygate(url)
            .env("KEYGATE_PEPPER", PEPPER_2)
            .args(["peppers", "status"]),
        0,
    ));
    assert_eq!(text, "version 1: 2 keys\nversion 2: 1 keys (current)\n");
    app(open(), hasher(2, None))
        .verify(&new_admin)
        .await
        .unwrap();
}

async fn cli_manages_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = SqliteStore::open(&path).await.unwrap();
    let shared = std::sync::Arc::new(store);
    operator_life_cycle(&url, || std::sync::Arc::clone(&shared)).await;
}

async fn cli_manages_keys_on_postgres() {
    let url = support::postgres_url();
    // A store in a schema of its own, not migrated: the CLI migrates it.
    let schema = support::random_schema();
    let reach = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        PostgresStore::connect_with_schema(&url, &schema),
    )
    .await;
    let store = match reach {
        Ok(Ok(store)) => std::sync::Arc::new(store),
        Ok(Err(e)) => return support::skip_or_fail("postgres", &e.to_string()),
        Err(_) => return support::skip_or_fail("postgres", "no answer within 5 s"),
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let cli_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    operator_life_cycle(&cli_url, || std::sync::Arc::clone(&store)).await;
    store.pool().close().await;
    support::drop_schema(&url, &schema).await.unwrap();
}

fn cli_reports_an_unreachable_database_as_unavailable() {
    let out = expect(
        keygate("postgres://keygate@127.0.0.1:1/none").args(["keys", "list", "--account", "a"]),
        6,
    );
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
}

fn cli_refuses_an_unknown_database_scheme_and_profile() {
    expect(keygate("mysql://x/y").arg("migrate"), 3);
    expect(keygate("").arg("migrate"), 3);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    expect(keygate(&url).arg("migrate"), 0);
    let out = expect(
        keygate(&url)
            .env("KEYGATE_PROFILE", "acme")
            .args(["keys", "list", "--account", "a"]),
        3,
    );
    assert!(stderr(&out).contains("unknown profile"));
}

fn every_command_has_help() {
    let commands: [&[&str]; 13] = [
        &[],
        &["migrate"],
        &["keys"],
        &["keys", "create"],
        &["keys", "list"],
        &["keys", "get"],
        &["keys", "revoke"],
        &["keys", "rotate"],
        &["keys", "import"],
        &["keys", "due-for-reset"],
        &["accounts", "create-sub"],
        &["peppers", "status"],
        &["peppers"],
    ];
    for command in commands {
        let out = expect(
            Command::new(env!("CARGO_BIN_EXE_keygate"))
                .args(command)
                .arg("--help"),
            0,
        );
        let text = stdout(&out);
        assert!(text.contains("Usage: keygate"), "{command:?}: {text}");
        assert!(text.contains("--database-url"), "{command:?}: {text}");
        assert!(
            text.contains("--json") && text.contains("--profile"),
            "{command:?}"
        );
    }
    let top = stdout(&run(
        Command::new(env!("CARGO_BIN_EXE_keygate")).arg("--help")
    ));
    for code in [
        "0  success",
        "3  configuration",
        "4  the key",
        "5  the request",
        "6  the database",
    ] {
        assert!(top.contains(code), "{code}");
    }
}

// ----- the README's session ----------------------------------------------------

const README: &str = include_str!("../README.md");
const SECTION: &str = "## Operating keygate from the command line";

/// README, Operating keygate from the command line: the console session
/// runs as shown, in an empty directory. `export` lines set the variables
/// (a `$(…)` value is replaced by a fresh pepper); each `$ keygate …` runs
/// the binary, must succeed, and must print the lines the README shows,
/// where a shown value that varies by run (ids, keys, times) is compared
/// by its field name only.
fn readme_operator_session_replays() {
    let section = README
        .split_once(SECTION)
        .expect("the README has the CLI section")
        .1;
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split("```console\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a console session");
    let dir = tempfile::tempdir().unwrap();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut steps = block.lines().peekable();
    let mut commands = 0;
    let mut key = None;
    while let Some(line) = steps.next() {
        let Some(command) = line.strip_prefix("$ ") else {
            continue;
        };
        let mut shown = Vec::new();
        while let Some(next) = steps.peek() {
            if next.starts_with("$ ") {
                break;
            }
            shown.push(steps.next().unwrap());
        }
        if let Some(assign) = command.strip_prefix("export ") {
            let (name, value) = assign.split_once('=').expect("NAME=value");
            let value = if value.starts_with("$(") {
                "ab".repeat(32)
            } else {
                value.trim_matches('"').to_owned()
            };
            vars.push((name.to_owned(), value));
            continue;
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[0], "keygate", "{command}");
        commands += 1;
        let out = expect(
            Command::new(env!("CARGO_BIN_EXE_keygate"))
                .env_clear()
                .envs(vars.iter().map(|(k, v)| (k, v)))
                .current_dir(dir.path())
                .args(&words[1..]),
            0,
        );
        let printed = stdout(&out) + &stderr(&out);
        for want in shown {
            let matched = printed.lines().any(|got| same_line(want, got));
            assert!(matched, "{command}: README shows {want:?}, got:\n{printed}");
        }
        if let Some(line) = stdout(&out).lines().find(|l| l.starts_with("key:")) {
            key = Some(line["key:".len()..].trim().to_owned());
        }
    }
    assert!(commands >= 3, "the session runs the CLI");
    // The session ends with a working admin key in the database it made.
    let key = key.expect("the session creates a key");
    let url = vars
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v.clone())
        .expect("the session sets DATABASE_URL");
    let path = dir.path().join(
        url.trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap(),
    );
    check_admin_key(&path, &key);
}

/// A README output line matches a printed one: equal, or (for `field: value`
/// lines and id-first list rows whose values vary) the same field name or
/// the same shape.
fn same_line(want: &str, got: &str) -> bool {
    if want == got {
        return true;
    }
    match (want.split_once(':'), got.split_once(':')) {
        (Some((wf, _)), Some((gf, _))) if !wf.contains(' ') || wf.ends_with(' ') => wf == gf,
        _ => {
            let (w, g): (Vec<&str>, Vec<&str>) =
                (want.split("  ").collect(), got.split("  ").collect());
            w.len() == g.len()
                && w[0].starts_with("key_")
                && g[0].starts_with("key_")
                && w[2..] == g[2..]
        }
    }
}

fn check_admin_key(path: &Path, key: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(path).await.unwrap();
        let api = ApiKeys::builder(profiles::mailjawn())
            .store(store)
            .pepper(Pepper::new(1, [0xab; 32]).unwrap())
            .build()
            .unwrap();
        let admin = api.verify(key).await.unwrap();
        assert_eq!(admin.bundle(), Some("full_access"));
    });
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    support::harness::run(trials![
        tokio(Rt::multi(2)) cli_manages_keys_on_sqlite,
        tokio(Rt::multi(2)) cli_manages_keys_on_postgres,
        sync cli_reports_an_unreachable_database_as_unavailable,
        sync cli_refuses_an_unknown_database_scheme_and_profile,
        sync every_command_has_help,
        sync readme_operator_session_replays,
    ])
}
