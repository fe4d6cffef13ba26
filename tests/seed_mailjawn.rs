//! Requirements from `shared/seeds/000_b47e423a44e43425.txt` (MailJawn API keys),
//! checked against `profiles::mailjawn()`.

use std::time::Duration;

use keygate::{
    profiles, AccountId, ApiKeys, AuthError, Clock, CreateKey, ListOptions, ManualClock, Rotation,
};

fn org() -> AccountId {
    AccountId::new("org_acme").unwrap()
}

fn api() -> (ApiKeys, ManualClock) {
    let clock = ManualClock::new();
    let api = ApiKeys::builder(profiles::mailjawn())
        .clock(clock.clone())
        .build()
        .unwrap();
    (api, clock)
}

// "MailJawn generates a key that starts with mj_ and displays it exactly once."
#[tokio::test]
async fn keys_start_with_mj_and_are_displayed_once() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("Production SDK").bundle("sdk"))
        .await
        .unwrap();
    assert!(k.key.expose_secret().starts_with("mj_"));
    // Afterwards only the info is available: list and get carry no key field.
    let listed =
        serde_json::to_value(api.as_account(&org()).get(&k.info.id).await.unwrap()).unwrap();
    assert!(listed.get("key").is_none());
    assert!(!listed.to_string().contains(&k.key.expose_secret()[8..]));
}

// "MailJawn stores a hash of the key, not the key itself."
#[tokio::test]
async fn only_a_hash_is_stored() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let entry = api.store().get_key(&k.info.id).await.unwrap().unwrap();
    let stored = format!("{:?}", entry.record());
    assert!(!stored.contains(&k.key.expose_secret()[8..]));
    assert_eq!(entry.record().hash.digest().len(), 32);
}

// "Give it a name (e.g., "Production SDK" or "Claude MCP")" and "Keys are scoped to
// your organization".
#[tokio::test]
async fn keys_have_a_name_and_belong_to_the_organisation() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("Claude MCP").bundle("mcp"))
        .await
        .unwrap();
    let p = api.verify(k.key.expose_secret()).await.unwrap();
    assert_eq!(p.name(), "Claude MCP");
    assert_eq!(p.account(), &org());
}

// SDK: "Add subscribers and track events".
#[tokio::test]
async fn sdk_bundle_adds_subscribers_and_tracks_events_only() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("ios").bundle("sdk"))
        .await
        .unwrap();
    let p = api.verify(k.key.expose_secret()).await.unwrap();
    for s in ["subscribers:write", "events:write"] {
        assert!(api.check_scope(&p, s).is_ok(), "{s}");
    }
    for s in [
        "subscribers:read",
        "campaigns:read",
        "emails:send",
        "api_keys:write",
    ] {
        assert_eq!(api.check_scope(&p, s).unwrap_err().status(), 403, "{s}");
    }
}

// MCP: "Read/write subscribers, campaigns, sequences, assets, stats, and send emails".
#[tokio::test]
async fn mcp_bundle_reads_and_writes_content_and_sends_email() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("agent").bundle("mcp"))
        .await
        .unwrap();
    let p = api.verify(k.key.expose_secret()).await.unwrap();
    for s in [
        "subscribers:read",
        "subscribers:write",
        "campaigns:read",
        "campaigns:write",
        "sequences:read",
        "sequences:write",
        "assets:read",
        "assets:write",
        "stats:read",
        "emails:send",
    ] {
        assert!(api.check_scope(&p, s).is_ok(), "{s}");
    }
    assert!(api.check_scope(&p, "api_keys:write").is_err());
}

// Full Access: "Everything".
#[tokio::test]
async fn full_access_bundle_grants_everything() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    let p = api.verify(k.key.expose_secret()).await.unwrap();
    for s in api.profile().catalog().scope_names() {
        assert!(api.check_scope(&p, s).is_ok(), "{s}");
    }
    assert!(p.scopes().is_all());
}

// "Include the API key in the Authorization header: Authorization: Bearer mj_…".
#[test]
fn keys_are_sent_as_bearer_tokens() {
    assert_eq!(
        profiles::mailjawn().key_locations(),
        [keygate::KeyLocation::Bearer]
    );
}

// "The key is validated by matching its prefix (first 8 characters) to find the
// record, then verifying the full key against the stored hash."
#[tokio::test]
async fn lookup_uses_the_first_8_characters_then_the_hash() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let secret = k.key.expose_secret();
    let entry = api.store().get_key(&k.info.id).await.unwrap().unwrap();
    assert_eq!(entry.record().lookup, &secret[..8]);
    // Same first 8 characters, different rest, valid checksum: found, then rejected by the hash.
    let other = keygate::TokenFormat::new("mj_").lookup_len(8).generate();
    let forged = with_checksum(&format!(
        "{}{}",
        &secret[..8],
        &other.expose_secret()[8..35]
    ));
    assert_ne!(forged, secret);
    assert_eq!(api.verify(&forged).await.unwrap_err(), AuthError::Invalid);
}

/// Appends the documented checksum: CRC32 of everything before it, as 6 base62 digits.
fn with_checksum(body: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n = crc32fast::hash(body.as_bytes());
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    format!("{body}{}", std::str::from_utf8(&sum).unwrap())
}

// "Your API keys list shows the key name, scope bundle, creation date, and last used
// timestamp. The key itself is not shown — only the mj_ prefix is visible."
#[tokio::test]
async fn list_shows_name_bundle_created_last_used_and_prefix_only() {
    let (api, clock) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("Production SDK").bundle("sdk"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    api.verify(k.key.expose_secret()).await.unwrap();
    let page = api
        .as_account(&org())
        .list(&org(), ListOptions::default())
        .await
        .unwrap();
    let row = &page.data[0];
    assert_eq!(row.name, "Production SDK");
    assert_eq!(row.bundle.as_deref(), Some("sdk"));
    assert_eq!(row.created_at, k.info.created_at);
    assert_eq!(row.last_used_at, Some(clock.now()));
    assert!(row.redacted.starts_with("mj_"));
    assert_eq!(row.redacted, format!("{}…", &k.key.expose_secret()[..8]));
}

// "Revoking is immediate — any request using that key will start failing with a 401
// error. Revoked keys are soft-deleted and kept for audit purposes."
#[tokio::test]
async fn revoke_is_immediate_401_and_soft_deleted() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    api.as_account(&org()).revoke(&k.info.id).await.unwrap();
    assert_eq!(
        api.verify(k.key.expose_secret())
            .await
            .unwrap_err()
            .status(),
        401
    );
    let kept = api.store().get_key(&k.info.id).await.unwrap().unwrap();
    assert!(kept.record().revoked_at.is_some());
}

// "To rotate a key: create a new key with the same scope bundle, update, verify the
// new key works, revoke the old key" — zero downtime.
#[tokio::test]
async fn rotation_is_create_then_revoke_with_zero_downtime() {
    let (api, _) = api();
    let old = api
        .as_account(&org())
        .create(&org(), CreateKey::new("prod").bundle("mcp"))
        .await
        .unwrap();
    let new = api
        .as_account(&org())
        .create(&org(), CreateKey::new("prod (new)").bundle("mcp"))
        .await
        .unwrap();
    api.verify(old.key.expose_secret()).await.unwrap();
    api.verify(new.key.expose_secret()).await.unwrap();
    api.as_account(&org()).revoke(&old.info.id).await.unwrap();
    assert_eq!(
        api.verify(old.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
    api.verify(new.key.expose_secret()).await.unwrap();
    // The one-call equivalent keeps the old key alive for a grace period.
    let rotated = api
        .as_account(&org())
        .rotate(&new.info.id, Rotation::Grace(Duration::from_secs(60)))
        .await
        .unwrap();
    api.verify(new.key.expose_secret()).await.unwrap();
    api.verify(rotated.key.expose_secret()).await.unwrap();
}

// "You can create as many keys as you need."
#[tokio::test]
async fn active_keys_are_unlimited() {
    let (api, _) = api();
    for i in 0..250 {
        api.as_account(&org())
            .create(&org(), CreateKey::new(format!("dev {i}")).bundle("sdk"))
            .await
            .unwrap();
    }
    let page = api
        .as_account(&org())
        .list(&org(), ListOptions::default().with_limit(1000))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 250);
}

// "API requests are rate-limited per key: Read (GET requests) 100 requests/minute,
// Write (POST/PUT/DELETE) 30 requests/minute, MCP 60 requests/minute, Email send 10
// requests/minute. If you exceed a rate limit, you'll receive an HTTP 429 response.
// Wait and retry after the limit window resets."
#[tokio::test]
async fn the_101st_get_in_a_minute_is_429_while_writes_and_other_keys_pass() {
    let (api, clock) = api();
    let a = api
        .as_account(&org())
        .create(&org(), CreateKey::new("a").bundle("full_access"))
        .await
        .unwrap();
    let b = api
        .as_account(&org())
        .create(&org(), CreateKey::new("b").bundle("full_access"))
        .await
        .unwrap();
    let get = api.operation_for_method("GET");
    let post = api.operation_for_method("POST");
    // 100 requests in the same instant (the bucket refills continuously at
    // 100/min, so a burst is the strictest reading of "in a minute").
    for i in 0..100 {
        api.verify_for(a.key.expose_secret(), &get)
            .await
            .unwrap_or_else(|e| panic!("GET {} failed: {e}", i + 1));
    }
    let err = api
        .verify_for(a.key.expose_secret(), &get)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    let AuthError::RateLimited { decision } = err else {
        panic!("expected RateLimited")
    };
    assert!(decision.retry_after.is_some());
    // Writes on the same key and reads on another key are unaffected.
    api.verify_for(a.key.expose_secret(), &post).await.unwrap();
    api.verify_for(b.key.expose_secret(), &get).await.unwrap();
    // After the reset time passes, requests pass again.
    clock.advance(decision.reset);
    for _ in 0..100 {
        api.verify_for(a.key.expose_secret(), &get).await.unwrap();
    }
}

#[tokio::test]
async fn write_mcp_and_send_limits_match_the_table() {
    let (api, _) = api();
    let k = api
        .as_account(&org())
        .create(&org(), CreateKey::new("k").bundle("full_access"))
        .await
        .unwrap();
    let cases = [
        (api.operation_for_method("POST"), 30),
        (api.operation_for_method("PUT"), 0),
        (api.operation_for_method("DELETE"), 0),
        (api.operation("mcp").unwrap(), 60),
        (api.operation("send").unwrap(), 10),
    ];
    // POST, PUT and DELETE share the write class: 30 in all.
    for (op, n) in cases {
        for _ in 0..n {
            api.verify_for(k.key.expose_secret(), &op).await.unwrap();
        }
        assert_eq!(
            api.verify_for(k.key.expose_secret(), &op)
                .await
                .unwrap_err()
                .status(),
            429,
            "{:?}",
            op.class()
        );
    }
}
