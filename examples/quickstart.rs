//! The whole life of an API key on the in-memory store, MailJawn style:
//! create, verify, scope check, list, zero-downtime rotation, revoke.
//!
//! Run it with `cargo run --example quickstart`.

use keygate::{profiles, AccountId, ApiKeys, CreateKey, ListOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let api = ApiKeys::in_memory(profiles::mailjawn())?;
    let org = AccountId::new("org_acme")?;
    // Key management acts as someone: here the organisation itself (say, a
    // signed-in user of its dashboard). A request made with a key would use
    // `api.as_key(&principal)`, and trusted server code `api.operator()`.
    let keys = api.as_account(&org);

    println!("1. Create a key named \"Production SDK\" with the SDK bundle");
    let sdk = keys
        .create(&org, CreateKey::new("Production SDK").bundle("sdk"))
        .await?;
    println!(
        "   key (shown once, copy it now): {}",
        sdk.key.expose_secret()
    );
    println!("   how lists show it:             {}", sdk.info.redacted);

    println!("2. Verify it, as a request with `Authorization: Bearer <key>` would");
    let principal = api.verify(sdk.key.expose_secret()).await?;
    println!(
        "   ok: key {} of account {} (bundle {})",
        principal.key_id(),
        principal.account(),
        principal.bundle().unwrap_or("-")
    );

    println!("3. Check scopes: the SDK bundle may track events but not send email");
    api.check_scope(&principal, "events:write")?;
    println!("   events:write -> allowed");
    match api.check_scope(&principal, "emails:send") {
        Ok(()) => return Err("an SDK key must not send email".into()),
        Err(e) => println!("   emails:send  -> {} {}", e.status(), e),
    }

    println!("4. List the organisation's keys (never the secret)");
    for k in keys.list(&org, ListOptions::default()).await?.data {
        println!(
            "   {:<16} {:<6} {}  created {}  last used {}",
            k.name,
            k.bundle.as_deref().unwrap_or("-"),
            k.redacted,
            k.created_at.date(),
            k.last_used_at
                .map_or("never".into(), |t| t.time().to_string()),
        );
    }

    println!("5. Rotate with zero downtime: create the new key, deploy it, then revoke the old");
    let next = keys
        .create(&org, CreateKey::new("Production SDK (2)").bundle("sdk"))
        .await?;
    api.verify(sdk.key.expose_secret()).await?;
    api.verify(next.key.expose_secret()).await?;
    println!("   old key and new key both verify");
    keys.revoke(&sdk.info.id).await?;
    println!("   old key revoked");

    println!("6. The revoked key fails on its very next use");
    match api.verify(sdk.key.expose_secret()).await {
        Ok(_) => return Err("a revoked key must not verify".into()),
        Err(e) => println!("   old key -> {} {}", e.status(), e),
    }
    api.verify(next.key.expose_secret()).await?;
    println!("   new key -> ok");
    Ok(())
}
