//! The quickstart flow on SQLite: create → verify → list → rotate → revoke,
//! with keys kept in a database file.
//!
//! ```text
//! cargo run --example sqlite --features sqlite -- /tmp/keys.db
//! ```
//!
//! Without an argument the database goes to a new temp file. The pepper comes
//! from `KEYGATE_PEPPER` (at least 32 bytes); without it a fixed demo pepper is
//! used, which is fine for trying things out and never for production.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use keygate::{
    profiles, AccountId, ApiKeys, CreateKey, KeyInfo, ListOptions, Pepper, Rotation, SqliteStore,
};

const DEMO_PEPPER: &[u8; 32] = b"demo-pepper-not-for-production!!";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => std::env::temp_dir().join(format!("keygate-example-{}.db", std::process::id())),
    };
    let pepper = match std::env::var("KEYGATE_PEPPER") {
        Ok(p) => Pepper::new(1, p.into_bytes())?,
        Err(_) => {
            println!("(KEYGATE_PEPPER not set: using the demo pepper)");
            Pepper::new(1, DEMO_PEPPER.to_vec())?
        }
    };

    println!("1. open   {}", path.display());
    let store = SqliteStore::open(&path).await?;
    store.migrate().await?;
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(pepper)
        .build()?;
    // Last-used times are written in batches, not on every verify.
    let flusher = api.spawn_last_used_flusher(Duration::from_secs(1));
    let org = AccountId::new("org_demo")?;
    // Manage the keys as the organisation itself.
    let keys = api.as_account(&org);

    let created = keys
        .create(&org, CreateKey::new("Production SDK").bundle("sdk"))
        .await?;
    println!("2. create {} for {org}", created.info.id);
    println!(
        "          key (shown once): {}",
        created.key.expose_secret()
    );

    let principal = api.verify(created.key.expose_secret()).await?;
    println!(
        "3. verify ok: key {} of {} with bundle {}",
        principal.key_id(),
        principal.account(),
        principal.bundle().unwrap_or("-")
    );
    api.flush_last_used().await?;

    println!("4. list");
    print_keys(&keys.list(&org, ListOptions::default()).await?.data);

    let rotated = keys.rotate(&created.info.id, Rotation::Immediate).await?;
    println!("5. rotate {} -> {}", created.info.id, rotated.info.id);
    println!(
        "          new key (shown once): {}",
        rotated.key.expose_secret()
    );
    match api.verify(created.key.expose_secret()).await {
        Err(e) => println!("          old key: {e} (HTTP {})", e.status()),
        Ok(_) => println!("          old key still verifies (unexpected)"),
    }
    api.verify(rotated.key.expose_secret()).await?;
    println!("          new key: ok");

    keys.revoke(&rotated.info.id).await?;
    println!("6. revoke {}", rotated.info.id);
    match api.verify(rotated.key.expose_secret()).await {
        Err(e) => println!("          verify: {e} (HTTP {})", e.status()),
        Ok(_) => println!("          verify: still ok (unexpected)"),
    }

    flusher.shutdown().await?;
    println!("7. all keys, revoked included (kept for audit)");
    let all = ListOptions::default().with_include_revoked(true);
    print_keys(&keys.list(&org, all).await?.data);
    println!("keys are in {}", path.display());
    Ok(())
}

fn print_keys(keys: &[KeyInfo]) {
    if keys.is_empty() {
        println!("          (none)");
    }
    let when = |t: Option<OffsetDateTime>| {
        t.and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "-".to_owned())
    };
    for k in keys {
        println!("          {}  {:?}  {}", k.id, k.name, k.redacted);
        println!(
            "              created {}, last used {}, revoked {}",
            when(Some(k.created_at)),
            when(k.last_used_at),
            when(k.revoked_at)
        );
    }
}
