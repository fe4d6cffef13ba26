//! The demo server (`examples/server.rs`) as a real process on SQLite: after
//! a request, SIGTERM (or SIGINT) stops it with exit status 0, and the key's
//! last-used time, held in memory until then, is in the database afterwards.
//!
//! The example binary is the one `cargo test --all-features` builds next to
//! the test binaries; the test runs `cargo build --example server
//! --all-features` first, a no-op then, and a build when the binary is missing
//! or stale (a single `--test` run).
#![cfg(all(unix, feature = "axum", feature = "sqlite"))]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use keygate::store::ListQuery;
use keygate::{AccountId, KeyStore, SqliteStore};

/// How long the server may take to start or to stop; only guards a hung test.
const BOUND: Duration = Duration::from_secs(60);

/// `target/<profile>/examples/server`, brought up to date.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/server
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let binary = profile_dir.join("examples").join("server");
    // Always: a no-op when the binary is fresh, a rebuild when it is stale.
    {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "server", "--all-features"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --example server failed");
    }
    assert!(binary.exists(), "no example binary at {}", binary.display());
    binary
}

/// A running demo server and the lines it printed at start.
struct Running {
    child: Child,
    admin: String,
    addr: String,
    lines: mpsc::Receiver<String>,
}

fn start(db: &std::path::Path) -> Running {
    let mut child = Command::new(server_binary())
        .args([
            "--profile",
            "mailjawn",
            "--listen",
            "127.0.0.1:0",
            "--store",
        ])
        .arg(format!("sqlite:{}", db.display()))
        .env("KEYGATE_PEPPER", "graceful-shutdown-test-pepper-32-bytes!")
        .env_remove("KEYGATE_ADMIN_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo server");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut admin, mut addr) = (None, None);
    while admin.is_none() || addr.is_none() {
        let line = lines
            .recv_timeout(BOUND)
            .expect("the server prints its admin key and address");
        if let Some(key) = line.strip_prefix("admin key: ") {
            admin = Some(key.to_owned());
        } else if let Some(a) = line.strip_prefix("listening on ") {
            addr = Some(a.to_owned());
        }
    }
    Running {
        child,
        admin: admin.unwrap(),
        addr: addr.unwrap(),
        lines,
    }
}

impl Running {
    /// Sends `signal` (e.g. `TERM`) and waits for the exit; returns the exit
    /// code and what the server printed after the signal.
    fn stop(mut self, signal: &str) -> (Option<i32>, Vec<String>) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not stop within {BOUND:?} of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let printed = self.lines.try_iter().collect();
        (status.code(), printed)
    }
}

/// Starts the server, authenticates one request with the admin key, stops it
/// with `signal`, and checks the exit and the admin key's last-used time.
async fn request_then_signal_keeps_last_used(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.db");
    let server = start(&db);
    let started = std::time::Instant::now();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{}/v1/api-keys", server.addr))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The flusher's interval is 5 s: nothing is written before the signal.
    let admin_account = AccountId::new("acct_admin").unwrap();
    let before_first_tick = started.elapsed() < Duration::from_secs(4);
    let (code, printed) = server.stop(signal);
    assert_eq!(code, Some(0), "exit status after SIG{signal}");
    // The final flush wrote the key, unless a slow machine let the periodic
    // flush (every 5 s) get there first.
    let stopped = printed
        .iter()
        .find_map(|l| l.strip_prefix("stopped; flushed last-used times of "))
        .unwrap_or_else(|| panic!("no shutdown line in {printed:?}"));
    if before_first_tick {
        assert_eq!(stopped, "1 keys");
    }

    let store = SqliteStore::open(&db).await.unwrap();
    let keys = store
        .list_keys(&admin_account, &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "the admin key");
    assert!(
        keys[0].last_used_at.is_some(),
        "the last-used time was flushed at shutdown"
    );
}

#[tokio::test]
async fn sigterm_stops_the_demo_server_and_flushes_last_used() {
    request_then_signal_keeps_last_used("TERM").await;
}

#[tokio::test]
async fn sigint_stops_the_demo_server_and_flushes_last_used() {
    request_then_signal_keeps_last_used("INT").await;
}
