//! Conformance cases for changing a key in place: disable and enable,
//! metadata, and updates without reissuing. Run on every backend by
//! `main.rs` through `suite.rs`.

use std::sync::Arc;

use keygate::ratelimit::Quota;
use keygate::store::{KeyChange, KeyRecord};
use keygate::{
    profiles, AccountId, ApiKeys, AuditKind, AuthError, CreateKey, Error, InvalidRequest, KeyId,
    KeyStore, KeyUpdate, ManualClock, MemoryAudit, Metadata, Pepper, StoreError,
};
use serde_json::json;

use crate::support::at;

fn account(id: &str) -> AccountId {
    AccountId::new(id).expect("valid account id")
}

fn quota(limit: u32, period_ms: u64) -> Quota {
    serde_json::from_value(json!({ "limit": limit, "period_ms": period_ms, "burst": limit }))
        .expect("valid quota")
}

fn meta(value: serde_json::Value) -> Metadata {
    Metadata::from_value(value).expect("valid metadata")
}

fn record(account_id: &str, n: u32) -> KeyRecord {
    let mut digest = [0u8; 32];
    digest[..4].copy_from_slice(&n.to_be_bytes());
    digest[31] = 0x5a;
    KeyRecord {
        bundle: Some("sdk".into()),
        rate_limits: vec![("read".into(), quota(7, 60_000))],
        created_at: at(i64::from(n)),
        secret_set_at: at(i64::from(n)),
        expires_at: Some(at(1_000_000)),
        metadata: meta(json!({ "n": n })),
        ..crate::support::key_record(
            KeyId::new(format!("key_u{n:05}")),
            account(account_id),
            format!("key {n}"),
            format!("lu{n:06}"),
            keygate::hash::SecretHash::from_parts(1, digest),
        )
    }
}

async fn stored(store: &Arc<dyn KeyStore>, id: &KeyId) -> KeyRecord {
    store
        .get_key(id)
        .await
        .expect("get")
        .expect("key exists")
        .record()
        .clone()
}

async fn found(store: &Arc<dyn KeyStore>, lookup: &str) -> KeyRecord {
    let found = store.find_by_lookup(lookup).await.expect("find");
    assert_eq!(found.len(), 1);
    found[0].record().clone()
}

// ----- the store ---------------------------------------------------------------

pub async fn update_changes_only_the_named_fields(store: Arc<dyn KeyStore>) {
    let original = record("org_upd", 1);
    store
        .insert_key(original.clone(), None, at(0))
        .await
        .unwrap();
    // Metadata reads back exactly, floats and nesting included.
    let metadata = meta(json!({
        "plan": "pro", "ratio": 1.5, "big": 1e2, "nested": {"a": [1, true, null]}, "ünï": "ç"
    }));
    let change = KeyChange::default()
        .with_name("renamed")
        .with_metadata(metadata.clone())
        .with_expires_at(Some(at(5_000)))
        .with_rate_limits(vec![("send".into(), quota(5, 60_000))])
        .with_grant(Some("mcp".into()), vec!["emails:send".into()]);
    let updated = store.update_key(&original.id, &change).await.unwrap();
    let mut expected = original.clone();
    expected.name = "renamed".into();
    expected.metadata = metadata;
    expected.expires_at = Some(at(5_000));
    expected.rate_limits = vec![("send".into(), quota(5, 60_000))];
    expected.bundle = Some("mcp".into());
    expected.scopes = vec!["emails:send".into()];
    assert_eq!(updated, expected);
    assert_eq!(stored(&store, &original.id).await, expected);
    assert_eq!(found(&store, &original.lookup).await, expected);

    // Removing the expiry leaves everything else.
    let updated = store
        .update_key(&original.id, &KeyChange::default().with_expires_at(None))
        .await
        .unwrap();
    expected.expires_at = None;
    assert_eq!(updated, expected);
    assert_eq!(found(&store, &original.lookup).await, expected);

    let missing = store
        .update_key(
            &KeyId::new("key_none"),
            &KeyChange::default().with_name("x"),
        )
        .await;
    assert_eq!(missing, Err(StoreError::NotFound));
    store.revoke_key(&original.id, at(9)).await.unwrap();
    let revoked = store
        .update_key(&original.id, &KeyChange::default().with_name("x"))
        .await;
    assert_eq!(revoked, Err(StoreError::Revoked));
    assert_eq!(stored(&store, &original.id).await.name, "renamed");
}

pub async fn disable_is_reversible_and_keeps_the_first_time(store: Arc<dyn KeyStore>) {
    let key = record("org_dis", 2);
    store.insert_key(key.clone(), None, at(0)).await.unwrap();
    let disable = |t| KeyChange::default().with_disabled(Some(at(t)));
    let r = store.update_key(&key.id, &disable(10)).await.unwrap();
    assert_eq!(r.disabled_at, Some(at(10)));
    let r = store.update_key(&key.id, &disable(20)).await.unwrap();
    assert_eq!(r.disabled_at, Some(at(10)), "the first time is kept");
    assert_eq!(found(&store, &key.lookup).await.disabled_at, Some(at(10)));

    // A disabled key is still active: it counts toward the key limit.
    let next = record("org_dis", 3);
    let refused = store.insert_key(next, Some(1), at(30)).await;
    assert_eq!(refused, Err(StoreError::LimitReached { limit: 1 }));

    let enable = KeyChange::default().with_disabled(None);
    let r = store.update_key(&key.id, &enable).await.unwrap();
    assert_eq!(r.disabled_at, None);
    let mut expected = key.clone();
    expected.disabled_at = None;
    assert_eq!(stored(&store, &key.id).await, expected);
    assert_eq!(found(&store, &key.lookup).await, expected);
}

pub async fn concurrent_updates_of_different_fields_all_land(store: Arc<dyn KeyStore>) {
    const KEYS: u32 = 12;
    for n in 0..KEYS {
        store
            .insert_key(record("org_race", 100 + n), None, at(0))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for n in 0..KEYS {
        let id = KeyId::new(format!("key_u{:05}", 100 + n));
        for which in 0..3 {
            let (store, id) = (Arc::clone(&store), id.clone());
            tasks.push(tokio::spawn(async move {
                let change = match which {
                    0 => KeyChange::default().with_name(format!("name {n}")),
                    1 => KeyChange::default().with_metadata(meta(json!({ "who": n }))),
                    _ => KeyChange::default().with_disabled(Some(at(77))),
                };
                store.update_key(&id, &change).await.unwrap();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for n in 0..KEYS {
        let r = stored(&store, &KeyId::new(format!("key_u{:05}", 100 + n))).await;
        assert_eq!(
            r.name,
            format!("name {n}"),
            "a concurrent update lost the name"
        );
        assert_eq!(r.metadata, meta(json!({ "who": n })));
        assert_eq!(r.disabled_at, Some(at(77)));
    }
}

// ----- through the service ------------------------------------------------------

fn service(
    store: Arc<dyn KeyStore>,
    profile: keygate::Profile,
) -> (ApiKeys, ManualClock, MemoryAudit) {
    let clock = ManualClock::starting_at(at(0));
    let audit = MemoryAudit::new();
    let api = ApiKeys::builder(profile)
        .store(store)
        .pepper(Pepper::new(1, [43u8; 32]).unwrap())
        .clock(clock.clone())
        .audit(audit.clone())
        .build()
        .unwrap();
    (api, clock, audit)
}

pub async fn service_disable_and_enable_reach_verify(store: Arc<dyn KeyStore>) {
    let (api, _, audit) = service(store, profiles::mailjawn());
    let org = account("org_svc_dis");
    let admin = api
        .operator()
        .create(&org, CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    let sdk = api
        .operator()
        .create(&org, CreateKey::new("sdk").bundle("sdk"))
        .await
        .unwrap();
    let presented = sdk.key.expose_secret();
    // Warm any cache first: the change must still be seen at once.
    api.verify(presented).await.unwrap();
    api.verify(presented).await.unwrap();

    let info = api.as_account(&org).disable(&sdk.info.id).await.unwrap();
    assert_eq!(info.disabled_at, Some(at(0)));
    let err = api.verify(presented).await.unwrap_err();
    assert_eq!(err, AuthError::Disabled);
    assert_eq!((err.status(), err.code()), (401, "disabled_api_key"));
    // Disabling twice changes nothing and records nothing.
    api.as_account(&org).disable(&sdk.info.id).await.unwrap();
    let listed = api.as_account(&org).get(&sdk.info.id).await.unwrap();
    assert_eq!(listed.disabled_at, Some(at(0)));

    // A key may enable a key no stronger than itself, never the reverse.
    let admin_principal = api.verify(admin.key.expose_secret()).await.unwrap();
    let strong_target = api
        .operator()
        .create(&org, CreateKey::new("full").bundle("full_access"))
        .await
        .unwrap();
    api.as_key(&admin_principal)
        .enable(&sdk.info.id)
        .await
        .unwrap();
    assert_eq!(api.verify(presented).await.unwrap().key_id(), &sdk.info.id);
    let sdk_principal = api.verify(presented).await.unwrap();
    let refused = api
        .as_key(&sdk_principal)
        .disable(&strong_target.info.id)
        .await;
    assert_eq!(refused.unwrap_err(), Error::InsufficientScope);
    // Out of reach is not found.
    let other = account("org_svc_other");
    let refused = api.as_account(&other).disable(&sdk.info.id).await;
    assert_eq!(refused.unwrap_err(), Error::NotFound);

    let kinds: Vec<AuditKind> = audit
        .events()
        .into_iter()
        .filter(|e| e.key_id == sdk.info.id)
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [AuditKind::Created, AuditKind::Disabled, AuditKind::Enabled]
    );

    // A revoked key cannot be enabled back.
    api.as_account(&org).revoke(&sdk.info.id).await.unwrap();
    let refused = api.as_account(&org).enable(&sdk.info.id).await;
    assert_eq!(refused.unwrap_err(), Error::Revoked);
    assert_eq!(api.verify(presented).await.unwrap_err(), AuthError::Revoked);
}

pub async fn service_update_changes_a_key_without_reissuing(store: Arc<dyn KeyStore>) {
    let (api, clock, audit) = service(store, profiles::mailjawn());
    let org = account("org_svc_upd");
    let key = api
        .as_account(&org)
        .create(
            &org,
            CreateKey::new("ci")
                .bundle("sdk")
                .metadata(meta(json!({"team": "infra"}))),
        )
        .await
        .unwrap();
    assert_eq!(key.info.metadata, meta(json!({"team": "infra"})));
    let presented = key.key.expose_secret();
    let principal = api.verify(presented).await.unwrap();
    assert_eq!(principal.metadata(), &meta(json!({"team": "infra"})));

    let send = api.operation("send").unwrap();
    let update = KeyUpdate::new()
        .name("deploy")
        .metadata(meta(json!({"team": "platform", "tier": 2})))
        .expires_at(Some(at(600_000)))
        .rate_limits(vec![("send".into(), quota(1, 60_000))]);
    let info = api
        .as_account(&org)
        .update(&key.info.id, update)
        .await
        .unwrap();
    assert_eq!(info.name, "deploy");
    assert_eq!(info.expires_at, Some(at(600_000)));
    assert_eq!(info.rate_limits.get("send"), Some(&quota(1, 60_000)));

    // The same secret verifies, and sees the change at once.
    let principal = api.verify(presented).await.unwrap();
    assert_eq!(principal.name(), "deploy");
    assert_eq!(
        principal.metadata().get("tier"),
        Some(&serde_json::json!(2))
    );
    api.verify_for(presented, &send).await.unwrap();
    assert!(matches!(
        api.verify_for(presented, &send).await.unwrap_err(),
        AuthError::RateLimited { .. }
    ));

    // Requests that cannot apply are refused with the reason.
    let upd = api.as_account(&org);
    assert_eq!(
        upd.update(&key.info.id, KeyUpdate::new())
            .await
            .unwrap_err(),
        Error::Invalid(InvalidRequest::EmptyUpdate)
    );
    clock.advance(std::time::Duration::from_secs(100));
    assert_eq!(
        upd.update(&key.info.id, KeyUpdate::new().expires_at(Some(at(50_000))))
            .await
            .unwrap_err(),
        Error::Invalid(InvalidRequest::ExpiryInPast)
    );
    let unknown = KeyUpdate::new().rate_limits(vec![("nope".into(), quota(1, 1000))]);
    assert_eq!(
        upd.update(&key.info.id, unknown).await.unwrap_err(),
        Error::Invalid(InvalidRequest::UnknownClass("nope".into()))
    );
    // The grant can change where the profile allows it.
    let info = upd
        .update(&key.info.id, KeyUpdate::new().bundle("mcp"))
        .await
        .unwrap();
    assert_eq!(info.bundle.as_deref(), Some("mcp"));
    // With the expiry removed, the key outlives its old expiry.
    upd.update(&key.info.id, KeyUpdate::new().expires_at(None))
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(600));
    assert_eq!(api.verify(presented).await.unwrap().name(), "deploy");

    let updates = audit
        .events()
        .iter()
        .filter(|e| e.kind == AuditKind::Updated)
        .count();
    assert_eq!(updates, 3);
}

/// `002_335bf4731ad6bd38.txt`: MailChannels fixes a key's scope at creation,
/// so an update that names scopes is refused; other fields still change.
pub async fn service_update_refuses_scope_changes_where_the_profile_fixes_them(
    store: Arc<dyn KeyStore>,
) {
    let (api, _, _) = service(store, profiles::mailchannels());
    let org = account("org_mc_upd");
    let key = api
        .operator()
        .create(&org, CreateKey::new("sender").scopes(["api"]))
        .await
        .unwrap();
    for update in [
        KeyUpdate::new().scopes(["inbound"]),
        KeyUpdate::new().scopes(["api"]).name("x"),
    ] {
        let err = api
            .operator()
            .update(&key.info.id, update)
            .await
            .unwrap_err();
        assert_eq!(err, Error::Invalid(InvalidRequest::ScopesFixed));
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("fixes a key's scopes"), "{err}");
    }
    let info = api
        .operator()
        .update(&key.info.id, KeyUpdate::new().name("renamed"))
        .await
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.scopes.as_slice()),
        ("renamed", &["api".to_owned()][..])
    );
}
