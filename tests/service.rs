//! Service-level behaviour of `ApiKeys` on the in-memory store.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate::hash::SecretHash;
use keygate::store::{AccountRecord, KeyChange, KeyEntry, KeyRecord, ListQuery, OldKey, Spend};
use keygate::{
    profiles, AccountId, ApiKeys, AuditKind, AuthError, Clock, CreateKey, Error, KeyId, KeyStore,
    ListOptions, MalformedReason, ManualClock, MemoryAudit, MemoryStore, Rotation, StoreError,
};
use time::OffsetDateTime;

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn mailjawn(clock: &ManualClock) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn())
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn created_key_verifies_and_its_secret_is_never_shown_again() {
    let clock = ManualClock::new();
    let api = mailjawn(&clock);
    let org = acct("org_1");
    let new = api
        .as_account(&org)
        .create(&org, CreateKey::new("Production SDK").bundle("sdk"))
        .await
        .unwrap();
    let secret = new.key.expose_secret().to_owned();

    let p = api.verify(&secret).await.unwrap();
    assert_eq!(p.key_id(), &new.info.id);
    assert_eq!(p.account(), &org);
    assert_eq!(p.bundle(), Some("sdk"));
    assert_eq!(p.name(), "Production SDK");

    // Neither Debug output nor serialized info nor the listing contain the secret.
    assert!(!format!("{new:?}").contains(&secret));
    assert!(!format!("{p:?}").contains(&secret));
    let json = serde_json::to_string(&new.info).unwrap();
    assert!(!json.contains(&secret[8..]));
    let page = api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap();
    let listed = serde_json::to_string(&page).unwrap();
    assert!(!listed.contains(&secret[8..]));
    assert_eq!(page.data[0].redacted, format!("{}…", &secret[..8]));
}

#[tokio::test]
async fn unknown_well_formed_key_is_invalid() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let stranger = keygate::TokenFormat::new("mj_").lookup_len(8).generate();
    assert_eq!(
        api.verify(stranger.expose_secret()).await.unwrap_err(),
        AuthError::Invalid
    );
}

#[tokio::test]
async fn malformed_keys_are_rejected_before_the_store() {
    let store = Arc::new(support::Counting::default());
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store.clone())
        .build()
        .unwrap();
    let good = api
        .as_account(&acct("o"))
        .create(&acct("o"), CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let good = good.key.expose_secret().to_owned();
    let mut typo = good.clone().into_bytes();
    typo[12] = if typo[12] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let cases: Vec<(String, MalformedReason)> = vec![
        (String::new(), MalformedReason::Empty),
        ("x".repeat(1 << 20), MalformedReason::Length),
        (format!("sk_{}", &good[3..]), MalformedReason::Prefix),
        ("é".repeat(good.len() / 2), MalformedReason::Length),
        (typo, MalformedReason::Checksum),
        (good.replace("mj_", "mj-"), MalformedReason::Prefix),
    ];
    for (input, reason) in cases {
        assert_eq!(
            api.verify(&input).await.unwrap_err(),
            AuthError::Malformed { reason },
            "input of {} bytes",
            input.len()
        );
    }
    assert_eq!(store.finds(), 0);
    api.verify(&good).await.unwrap();
    assert_eq!(store.finds(), 1);
}

#[tokio::test]
async fn revoked_key_is_rejected_immediately_and_kept_for_audit() {
    let audit = MemoryAudit::new();
    let api = ApiKeys::builder(profiles::mailjawn())
        .audit(audit.clone())
        .build()
        .unwrap();
    let org = acct("org");
    let k = api
        .as_account(&org)
        .create(&org, CreateKey::new("ci").bundle("full_access"))
        .await
        .unwrap();
    api.verify(k.key.expose_secret()).await.unwrap();
    api.as_account(&org).revoke(&k.info.id).await.unwrap();
    let err = api.verify(k.key.expose_secret()).await.unwrap_err();
    assert_eq!(err, AuthError::Revoked);
    assert_eq!(err.status(), 401);
    // Revoking again is harmless; the record is kept and listed on request.
    api.as_account(&org).revoke(&k.info.id).await.unwrap();
    assert!(api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap()
        .data
        .is_empty());
    let all = api
        .as_account(&org)
        .list(&org, ListOptions::default().with_include_revoked(true))
        .await
        .unwrap();
    assert_eq!(all.data.len(), 1);
    assert!(all.data[0].revoked_at.is_some());
    let events = audit.events();
    let kinds: Vec<AuditKind> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(kinds, [AuditKind::Created, AuditKind::Revoked]);
    for e in &events {
        assert_eq!(e.key_id, k.info.id);
        assert_eq!(e.account, org);
        assert_eq!(e.actor, Some(org.clone()));
        assert_eq!(e.actor_key, None);
    }
}

#[tokio::test]
async fn audit_events_name_the_operator_account_or_key_that_acted() {
    let audit = MemoryAudit::new();
    let api = ApiKeys::builder(profiles::mailjawn())
        .audit(audit.clone())
        .build()
        .unwrap();
    let org = acct("org");
    let admin = api
        .operator()
        .create(&org, CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    let principal = api.verify(admin.key.expose_secret()).await.unwrap();
    let sdk = api
        .as_key(&principal)
        .create(&org, CreateKey::new("sdk").bundle("sdk"))
        .await
        .unwrap();
    api.as_account(&org).revoke(&sdk.info.id).await.unwrap();
    let actors: Vec<_> = audit
        .events()
        .into_iter()
        .map(|e| (e.kind, e.key_id, e.actor, e.actor_key))
        .collect();
    assert_eq!(
        actors,
        [
            (AuditKind::Created, admin.info.id.clone(), None, None),
            (
                AuditKind::Created,
                sdk.info.id.clone(),
                Some(org.clone()),
                Some(admin.info.id.clone())
            ),
            (AuditKind::Revoked, sdk.info.id.clone(), Some(org), None),
        ]
    );
}

#[tokio::test]
async fn keys_expire_at_their_expiry_time() {
    let clock = ManualClock::new();
    let api = mailjawn(&clock);
    let org = acct("org");
    let past = CreateKey::new("old").bundle("sdk").expires_at(clock.now());
    assert!(matches!(
        api.as_account(&org).create(&org, past).await.unwrap_err(),
        Error::Invalid(_)
    ));
    let k = api
        .as_account(&org)
        .create(
            &org,
            CreateKey::new("temp")
                .bundle("sdk")
                .expires_at(clock.now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    api.verify(k.key.expose_secret()).await.unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        api.verify(k.key.expose_secret()).await.unwrap_err(),
        AuthError::Expired
    );
}

#[tokio::test]
async fn rotation_keeps_name_scopes_and_revokes_the_old_key() {
    let clock = ManualClock::new();
    let api = mailjawn(&clock);
    let org = acct("org");
    let old = api
        .as_account(&org)
        .create(&org, CreateKey::new("agent").bundle("mcp"))
        .await
        .unwrap();
    let new = api
        .as_account(&org)
        .rotate(&old.info.id, Rotation::Immediate)
        .await
        .unwrap();
    assert_ne!(new.info.id, old.info.id);
    assert_eq!(new.info.name, "agent");
    assert_eq!(new.info.bundle.as_deref(), Some("mcp"));
    assert_eq!(
        api.verify(old.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
    let p = api.verify(new.key.expose_secret()).await.unwrap();
    assert!(api.check_scope(&p, "campaigns:write").is_ok());
    // A revoked key cannot be rotated again.
    assert_eq!(
        api.as_account(&org)
            .rotate(&old.info.id, Rotation::Immediate)
            .await
            .unwrap_err(),
        Error::Revoked
    );
    // The old key names its successor.
    let old_info = api.as_account(&org).get(&old.info.id).await.unwrap();
    assert_eq!(old_info.replaced_by, Some(new.info.id.clone()));
    assert_eq!(new.info.replaced_by, None);
}

#[tokio::test]
async fn a_key_is_rotated_once_and_grace_is_bounded_by_the_profile() {
    let clock = ManualClock::new();
    let api = mailjawn(&clock);
    let org = acct("org");
    let keys = api.as_account(&org);
    let old = keys
        .create(&org, CreateKey::new("ios").bundle("sdk"))
        .await
        .unwrap();
    let max = api.profile().max_grace();
    assert_eq!(max, Duration::from_secs(30 * 24 * 60 * 60));
    let too_long = keys
        .rotate(&old.info.id, Rotation::Grace(max + Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(too_long, Error::Invalid(_)), "{too_long:?}");
    assert_eq!(keys.get(&old.info.id).await.unwrap().replaced_by, None);
    let new = keys
        .rotate(&old.info.id, Rotation::Grace(max))
        .await
        .unwrap();
    // Still in its grace period, the old key has its successor: a second
    // rotation, with or without grace, is refused and creates nothing.
    for rotation in [
        Rotation::Grace(Duration::from_secs(60)),
        Rotation::Immediate,
    ] {
        let again = keys.rotate(&old.info.id, rotation).await.unwrap_err();
        assert_eq!(again, Error::AlreadyRotated);
        assert_eq!(again.status(), 409);
    }
    let listed = keys.list(&org, ListOptions::default()).await.unwrap();
    let mut ids: Vec<_> = listed.data.iter().map(|k| k.id.clone()).collect();
    let mut expected = vec![old.info.id.clone(), new.info.id.clone()];
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    api.verify(old.key.expose_secret()).await.unwrap();
    clock.advance(max);
    assert_eq!(
        api.verify(old.key.expose_secret()).await.unwrap_err(),
        AuthError::Expired
    );
    api.verify(new.key.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn sub_accounts_are_named_by_their_parent_and_exist_before_their_keys() {
    let api = ApiKeys::in_memory(profiles::default()).unwrap();
    let acme = acct("acme");
    let keys = api.as_account(&acme);
    // Keys for a sub-account that was never created: not found, for anyone.
    let unknown = acct("acme/eu");
    for manager in [keys.clone(), api.operator()] {
        assert_eq!(
            manager
                .create(&unknown, CreateKey::new("k").scopes(["read"]))
                .await
                .unwrap_err(),
            Error::NotFound
        );
        assert_eq!(
            manager
                .list(&unknown, ListOptions::default())
                .await
                .unwrap_err(),
            Error::NotFound
        );
    }
    let eu = keys.create_sub_account(&acme, "eu").await.unwrap();
    assert_eq!(eu, unknown);
    assert_eq!(eu.parent(), Some(acme.clone()));
    let k = keys
        .create(&eu, CreateKey::new("k").scopes(["read"]))
        .await
        .unwrap();
    assert_eq!(k.info.account, eu);
    // The handle is the parent's: taken once, and only well-formed.
    let twice = keys.create_sub_account(&acme, "eu").await.unwrap_err();
    assert!(matches!(twice, Error::Conflict(_)), "{twice:?}");
    for bad in ["", "EU", "-eu", "e/u", "e u", "../x", &"x".repeat(64)] {
        let err = keys.create_sub_account(&acme, bad).await.unwrap_err();
        assert!(matches!(err, Error::Account(_)), "{bad:?}: {err:?}");
        assert_eq!(err.status(), 400);
    }
    keys.create_sub_account(&acme, &"x".repeat(63))
        .await
        .unwrap();
    // Another account cannot create sub-accounts under acme.
    assert_eq!(
        api.as_account(&acct("globex"))
            .create_sub_account(&acme, "x")
            .await
            .unwrap_err(),
        Error::NotFound
    );
    // The default profile nests one level deep; MailJawn has no sub-accounts.
    assert_eq!(
        keys.create_sub_account(&eu, "deeper").await.unwrap_err(),
        Error::SubAccountDepth { max: 1 }
    );
    let mailjawn = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let err = mailjawn
        .as_account(&acme)
        .create_sub_account(&acme, "eu")
        .await
        .unwrap_err();
    assert_eq!(err, Error::SubAccountDepth { max: 0 });
    assert_eq!(err.status(), 403);
}

#[test]
fn account_ids_have_no_empty_parts() {
    for bad in ["", "/", "a/", "/a", "a//b"] {
        assert!(AccountId::new(bad).is_err(), "{bad:?}");
    }
    let sub = AccountId::new("a/b").unwrap();
    assert_eq!(sub.parent(), Some(acct("a")));
    assert_eq!(sub.handle(), "b");
    assert!(!sub.is_top_level());
    assert!(acct("a").is_top_level());
}

#[tokio::test]
async fn rotation_with_grace_keeps_both_keys_working_until_it_ends() {
    let clock = ManualClock::new();
    let api = mailjawn(&clock);
    let org = acct("org");
    let old = api
        .as_account(&org)
        .create(&org, CreateKey::new("ios").bundle("sdk"))
        .await
        .unwrap();
    let new = api
        .as_account(&org)
        .rotate(&old.info.id, Rotation::Grace(Duration::from_secs(600)))
        .await
        .unwrap();
    api.verify(old.key.expose_secret()).await.unwrap();
    api.verify(new.key.expose_secret()).await.unwrap();
    clock.advance(Duration::from_secs(601));
    assert_eq!(
        api.verify(old.key.expose_secret()).await.unwrap_err(),
        AuthError::Expired
    );
    api.verify(new.key.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn verify_checks_every_candidate_sharing_a_lookup_id() {
    let store = Arc::new(MemoryStore::new());
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store.clone())
        .build()
        .unwrap();
    let org = acct("org");
    let real = api
        .as_account(&org)
        .create(&org, CreateKey::new("real").bundle("sdk"))
        .await
        .unwrap();
    // A decoy that shares the lookup id but hashes something else, inserted first.
    let now = OffsetDateTime::now_utc();
    let decoy = KeyRecord {
        bundle: Some("full_access".into()),
        created_at: now,
        secret_set_at: now,
        ..support::key_record(
            KeyId::new("key_decoy"),
            acct("other"),
            "decoy".into(),
            real.key.lookup().to_owned(),
            SecretHash::sha256("something else"),
        )
    };
    store.insert_key(decoy, None, now).await.unwrap();
    assert_eq!(
        store.find_by_lookup(real.key.lookup()).await.unwrap().len(),
        2
    );
    let p = api.verify(real.key.expose_secret()).await.unwrap();
    assert_eq!(p.key_id(), &real.info.id);
}

#[tokio::test]
async fn unknown_scopes_and_bundles_are_named_in_the_error() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = acct("org");
    let e = api
        .as_account(&org)
        .create(&org, CreateKey::new("x").bundle("admin"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "unknown bundle 'admin'");
    let e = api
        .as_account(&org)
        .create(&org, CreateKey::new("x").scopes(["subscribers:delete"]))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "unknown scope 'subscribers:delete'");
    let e = api
        .as_account(&org)
        .create(&org, CreateKey::new("   ").bundle("sdk"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)));
    let e = api
        .as_account(&org)
        .create(&org, CreateKey::new("no scopes"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)));
}

#[tokio::test]
async fn explicit_scopes_and_wildcards_are_enforced() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = acct("org");
    let k = api
        .as_account(&org)
        .create(
            &org,
            CreateKey::new("reader").scopes(["subscribers:read", "stats:*"]),
        )
        .await
        .unwrap();
    let p = api.verify(k.key.expose_secret()).await.unwrap();
    assert!(api.check_scope(&p, "subscribers:read").is_ok());
    assert!(api.check_scope(&p, "stats:read").is_ok());
    assert_eq!(
        api.check_scope(&p, "subscribers:write").unwrap_err(),
        AuthError::Forbidden {
            required: "subscribers:write".into()
        }
    );
    assert_eq!(api.check_scope(&p, "no:such").unwrap_err().status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_exceed_the_key_limit() {
    let mut profile = profiles::mailchannels();
    profile = profile.with_key_limit(Some(10));
    let api = ApiKeys::in_memory(profile).unwrap();
    let org = acct("org");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let api = api.clone();
        let org = org.clone();
        tasks.push(tokio::spawn(async move {
            api.as_account(&org)
                .create(&org, CreateKey::new(format!("k{i}")).scopes(["api"]))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e, Error::KeyLimitReached { limit: 10 }),
        }
    }
    assert_eq!(ok, 10);
    let page = api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.data.len(), 10);
}

#[tokio::test]
async fn last_used_is_stamped_on_verify() {
    let clock = ManualClock::new();
    let api = mailjawn(&clock);
    let org = acct("org");
    let k = api
        .as_account(&org)
        .create(&org, CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    assert_eq!(
        api.as_account(&org)
            .get(&k.info.id)
            .await
            .unwrap()
            .last_used_at,
        None
    );
    clock.advance(Duration::from_secs(5));
    api.verify(k.key.expose_secret()).await.unwrap();
    let info = api.as_account(&org).get(&k.info.id).await.unwrap();
    assert_eq!(info.last_used_at, Some(clock.now()));
}

#[tokio::test]
async fn listing_paginates_in_creation_order() {
    let clock = ManualClock::new();
    let api = mailjawn(&clock);
    let org = acct("org");
    let mut ids = Vec::new();
    for i in 0..25 {
        clock.advance(Duration::from_millis(2));
        let k = api
            .as_account(&org)
            .create(&org, CreateKey::new(format!("key {i} ✓")).bundle("sdk"))
            .await
            .unwrap();
        ids.push(k.info.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = api
            .as_account(&org)
            .list(
                &org,
                ListOptions::default().with_after(after).with_limit(10),
            )
            .await
            .unwrap();
        seen.extend(page.data.iter().map(|k| k.id.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bad = ListOptions::default().with_limit(0);
    assert!(matches!(
        api.as_account(&org).list(&org, bad).await.unwrap_err(),
        Error::Invalid(_)
    ));
}

#[tokio::test]
async fn other_accounts_see_not_found() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let a = acct("a");
    let b = acct("b");
    let k = api
        .as_account(&a)
        .create(&a, CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    assert_eq!(
        api.as_account(&b).get(&k.info.id).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&b).revoke(&k.info.id).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&b)
            .rotate(&k.info.id, Rotation::Immediate)
            .await
            .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&b)
            .reset_secret(&k.info.id)
            .await
            .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&a)
            .get(&KeyId::new("key_nope"))
            .await
            .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&b)
            .list(&a, ListOptions::default())
            .await
            .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&b)
            .create(&a, CreateKey::new("x").bundle("sdk"))
            .await
            .unwrap_err(),
        Error::NotFound
    );
    // Still works for its owner.
    api.verify(k.key.expose_secret()).await.unwrap();
}

/// A store whose backend is down.
#[derive(Debug)]
struct DownStore;

#[async_trait]
impl KeyStore for DownStore {
    async fn create_account(&self, _: AccountRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn get_account(&self, _: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn insert_key(
        &self,
        _: KeyRecord,
        _: Option<u32>,
        _: OffsetDateTime,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn find_by_lookup(&self, _: &str) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn get_key(&self, _: &KeyId) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn list_keys(&self, _: &AccountId, _: &ListQuery) -> Result<Vec<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn revoke_key(&self, _: &KeyId, _: OffsetDateTime) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn replace_secret(
        &self,
        _: &KeyId,
        _: &str,
        _: SecretHash,
        _: OffsetDateTime,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn rotate_key(&self, _: &KeyId, _: KeyRecord, _: OldKey) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn update_key(&self, _: &KeyId, _: &KeyChange) -> Result<KeyRecord, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn spend_credits(
        &self,
        _: &KeyId,
        _: u64,
        _: OffsetDateTime,
    ) -> Result<Spend, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn record_last_used(&self, _: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn an_unavailable_store_is_503_never_a_principal() {
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(DownStore)
        .pepper(keygate::Pepper::new(1, [3u8; 32]).unwrap())
        .build()
        .unwrap();
    let key = keygate::TokenFormat::new("mj_").lookup_len(8).generate();
    let err = api.verify(key.expose_secret()).await.unwrap_err();
    assert_eq!(err, AuthError::Unavailable);
    assert_eq!(err.status(), 503);
    let e = api
        .as_account(&acct("o"))
        .create(&acct("o"), CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), 503);
}

#[tokio::test]
async fn persistent_stores_require_a_pepper() {
    let err = ApiKeys::builder(profiles::mailjawn())
        .store(DownStore)
        .build()
        .unwrap_err();
    assert_eq!(err, keygate::ConfigError::MissingPepper);
}

#[tokio::test]
async fn keys_made_with_an_old_pepper_verify_after_pepper_rotation() {
    let store = Arc::new(MemoryStore::new());
    let old = keygate::Pepper::new(1, [1u8; 32]).unwrap();
    let before = ApiKeys::builder(profiles::mailjawn())
        .store(store.clone())
        .pepper(old.clone())
        .build()
        .unwrap();
    let k = before
        .as_account(&acct("o"))
        .create(&acct("o"), CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let hasher = keygate::Hasher::new(keygate::Pepper::new(2, [2u8; 32]).unwrap())
        .with_previous(old)
        .unwrap();
    let after = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .hasher(hasher)
        .build()
        .unwrap();
    after.verify(k.key.expose_secret()).await.unwrap();
}
