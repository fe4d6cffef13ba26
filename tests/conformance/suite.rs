//! The store conformance suite: every case is written once against
//! `Arc<dyn KeyStore>` and run on every backend by `main.rs`. The expected
//! outcomes are `MemoryStore`'s.

use std::sync::Arc;
use std::time::Duration;

use keygate::hash::SecretHash;
use keygate::ratelimit::Quota;
use keygate::store::{AccountRecord, KeyRecord, ListQuery, OldKey, SecretAgeQuery};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, Error, KeyId, KeyStore, ListOptions,
    ManualClock, Pepper, Rotation, StoreError,
};
use time::OffsetDateTime;

pub use crate::credits::*;
pub use crate::identities::*;
pub use crate::lifecycle::*;
pub use crate::peppers::*;

// ----- fixtures -------------------------------------------------------------

pub use crate::support::at;

fn account(id: &str) -> AccountId {
    AccountId::new(id).expect("valid account id")
}

fn quota(limit: u32, period_ms: u64) -> Quota {
    serde_json::from_value(serde_json::json!({
        "limit": limit, "period_ms": period_ms, "burst": limit
    }))
    .expect("valid quota")
}

fn hash(n: u32) -> SecretHash {
    let mut digest = [0u8; 32];
    digest[..4].copy_from_slice(&n.to_be_bytes());
    digest[31] = 0xa5;
    SecretHash::from_parts(1, digest)
}

/// A plain active key: id `key_<n>`, lookup `lk<n>`, format `mj_`.
fn key(account_id: &str, n: u32) -> KeyRecord {
    KeyRecord {
        bundle: Some("sdk".into()),
        created_at: at(i64::from(n)),
        secret_set_at: at(i64::from(n)),
        ..crate::support::key_record(
            KeyId::new(format!("key_{n:06}")),
            account(account_id),
            format!("key {n}"),
            format!("lk{n:06}"),
            hash(n),
        )
    }
}

async fn ids(store: &Arc<dyn KeyStore>, account_id: &str, include_revoked: bool) -> Vec<String> {
    let query = ListQuery {
        include_revoked,
        after: None,
        limit: 100_000,
    };
    store
        .list_keys(&account(account_id), &query)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id.as_str().to_owned())
        .collect()
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

async fn insert(store: &Arc<dyn KeyStore>, record: KeyRecord) {
    store.insert_key(record, None, at(0)).await.expect("insert");
}

// ----- accounts -------------------------------------------------------------

pub async fn accounts_round_trip_with_their_parent(store: Arc<dyn KeyStore>) {
    let parent = AccountRecord {
        id: account("org_parent"),
        parent: None,
        created_at: at(1),
    };
    let sub = AccountRecord {
        id: account("org_parent/sub"),
        parent: Some(account("org_parent")),
        created_at: at(2),
    };
    store.create_account(parent.clone()).await.unwrap();
    store.create_account(sub.clone()).await.unwrap();
    assert_eq!(
        store.get_account(&parent.id).await.unwrap(),
        Some(parent.clone())
    );
    assert_eq!(store.get_account(&sub.id).await.unwrap(), Some(sub.clone()));
    assert_eq!(store.get_account(&account("org_none")).await.unwrap(), None);
    let again = store.create_account(sub).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let again = store.create_account(parent).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    // The stored parent is always the one the id names, whatever the record says.
    let claims = [None, Some(account("org_none")), Some(account("org_other"))];
    for (n, claimed) in claims.into_iter().enumerate() {
        let id = account("org_parent").child(&format!("h{n}")).unwrap();
        store
            .create_account(AccountRecord {
                id: id.clone(),
                parent: claimed,
                created_at: at(3),
            })
            .await
            .unwrap();
        let stored = store.get_account(&id).await.unwrap().unwrap();
        assert_eq!(stored.parent, Some(account("org_parent")), "{id}");
    }
    assert_eq!(
        store.get_account(&account("org_other")).await.unwrap(),
        None
    );

    // A top-level parent is registered with its first sub-account.
    let implicit = AccountRecord {
        id: account("org_implicit/eu"),
        parent: Some(account("org_implicit")),
        created_at: at(4),
    };
    store.create_account(implicit.clone()).await.unwrap();
    assert_eq!(
        store.get_account(&implicit.id).await.unwrap(),
        Some(implicit)
    );
    let top = store.get_account(&account("org_implicit")).await.unwrap();
    assert_eq!(top.map(|a| a.parent), Some(None));

    // A sub-account's sub-account needs its parent registered first.
    let orphan = store
        .create_account(AccountRecord {
            id: account("org_parent/missing/deep"),
            parent: Some(account("org_parent/missing")),
            created_at: at(5),
        })
        .await;
    assert_eq!(orphan, Err(StoreError::NotFound));
    assert_eq!(
        store
            .get_account(&account("org_parent/missing/deep"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_account(&account("org_parent/missing"))
            .await
            .unwrap(),
        None
    );
    let deep = AccountRecord {
        id: account("org_parent/sub/deep"),
        parent: Some(account("org_parent/sub")),
        created_at: at(6),
    };
    store.create_account(deep.clone()).await.unwrap();
    assert_eq!(store.get_account(&deep.id).await.unwrap(), Some(deep));
}

pub async fn sub_account_keys_count_toward_the_sub_account(store: Arc<dyn KeyStore>) {
    store
        .create_account(AccountRecord {
            id: account("org_main/sub"),
            parent: Some(account("org_main")),
            created_at: at(0),
        })
        .await
        .unwrap();
    let now = at(1_000);
    for n in 0..2 {
        store
            .insert_key(key("org_main", n), Some(2), now)
            .await
            .unwrap();
    }
    // The parent is full; its sub-account is not.
    assert_eq!(
        store.insert_key(key("org_main", 2), Some(2), now).await,
        Err(StoreError::LimitReached { limit: 2 })
    );
    for n in 10..12 {
        store
            .insert_key(key("org_main/sub", n), Some(2), now)
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .insert_key(key("org_main/sub", 12), Some(2), now)
            .await,
        Err(StoreError::LimitReached { limit: 2 })
    );
    assert_eq!(
        ids(&store, "org_main", true).await,
        ["key_000000", "key_000001"]
    );
    assert_eq!(
        ids(&store, "org_main/sub", true).await,
        ["key_000010", "key_000011"]
    );
}

// ----- keys -----------------------------------------------------------------

pub async fn inserted_keys_round_trip_every_field(store: Arc<dyn KeyStore>) {
    let full = KeyRecord {
        id: KeyId::new("key_full"),
        account: account("org_1"),
        name: "Production SDK".into(),
        format: "mk_live_".into(),
        lookup: "mk_live_AbCd".into(),
        hash: SecretHash::from_parts(7, [0xfe; 32]),
        bundle: Some("mcp".into()),
        scopes: vec!["subscribers:*".into(), "emails:send".into()],
        rate_limits: vec![
            ("send".into(), quota(5, 60_000)),
            ("read".into(), quota(1_000, 1_000)),
        ],
        created_at: at(10),
        secret_set_at: at(15),
        expires_at: Some(at(86_400_000)),
        last_used_at: Some(at(20)),
        revoked_at: None,
        replaced_by: None,
        lineage: None,
        disabled_at: None,
        metadata: Default::default(),
        credits: None,
        identity: None,
    };
    let bare = KeyRecord {
        id: KeyId::new("key_bare"),
        bundle: None,
        scopes: Vec::new(),
        rate_limits: Vec::new(),
        expires_at: None,
        last_used_at: None,
        hash: SecretHash::sha256("imported"),
        ..full.clone()
    };
    insert(&store, full.clone()).await;
    insert(&store, bare.clone()).await;
    assert_eq!(stored(&store, &full.id).await, full);
    assert_eq!(stored(&store, &bare.id).await, bare);
    assert!(store
        .get_key(&KeyId::new("key_none"))
        .await
        .unwrap()
        .is_none());
    let listed = store
        .list_keys(&account("org_1"), &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(listed, vec![bare, full]);
}

pub async fn duplicate_key_ids_conflict(store: Arc<dyn KeyStore>) {
    insert(&store, key("org_1", 1)).await;
    // Only the id clashes: another account, lookup and secret.
    let mut twin = key("org_2", 1);
    twin.lookup = "other".into();
    twin.hash = hash(1_001);
    let result = store.insert_key(twin.clone(), None, at(0)).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let limited = store.insert_key(twin, Some(5), at(0)).await;
    assert!(
        matches!(limited, Err(StoreError::Conflict(_))),
        "{limited:?}"
    );
    assert_eq!(
        stored(&store, &KeyId::new("key_000001")).await,
        key("org_1", 1)
    );
    assert!(ids(&store, "org_2", true).await.is_empty());
}

pub async fn find_by_lookup_returns_every_colliding_candidate(store: Arc<dyn KeyStore>) {
    let a = key("org_1", 1);
    let mut b = key("org_2", 2);
    b.lookup = a.lookup.clone();
    b.revoked_at = Some(at(5));
    let c = key("org_1", 3);
    for r in [&a, &b, &c] {
        insert(&store, r.clone()).await;
    }
    let mut found: Vec<KeyRecord> = store
        .find_by_lookup(&a.lookup)
        .await
        .unwrap()
        .iter()
        .map(|e| e.record().clone())
        .collect();
    found.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(found, vec![a, b]);
    let single = store.find_by_lookup(&c.lookup).await.unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].record(), c);
    assert!(store.find_by_lookup("lk_nothing").await.unwrap().is_empty());
    assert!(store.find_by_lookup("").await.unwrap().is_empty());
}

/// `find_now`, where a store answers it, picks the same entry as the first
/// accepted candidate of `find_by_lookup`, before and after the entries
/// sharing a lookup id change (the memory store keeps them as one group).
pub async fn find_now_agrees_with_find_by_lookup(store: Arc<dyn KeyStore>) {
    /// The id of the entry `find_by_lookup` gives for `lookup` whose id is
    /// `want`, after checking that `find_now`, when it answers, agrees.
    async fn found(store: &Arc<dyn KeyStore>, lookup: &str, want: Option<&KeyId>) -> Option<KeyId> {
        let mut accept = |e: &keygate::store::KeyEntry| Some(&e.record().id) == want;
        let slow = store
            .find_by_lookup(lookup)
            .await
            .unwrap()
            .iter()
            .find(|e| accept(e))
            .map(|e| e.record().id.clone());
        // A cache answers from memory only once it has seen the lookup, so
        // ask again after a `find_by_lookup`.
        for _ in 0..2 {
            if let Some(now) = store.find_now(lookup, &mut accept) {
                assert_eq!(now.map(|e| e.record().id.clone()), slow, "{lookup}");
            }
            let _ = store.find_by_lookup(lookup).await.unwrap();
        }
        slow
    }
    let a = key("org_1", 1);
    let mut b = key("org_2", 2);
    b.lookup = a.lookup.clone();
    for r in [&a, &b] {
        insert(&store, r.clone()).await;
    }
    assert_eq!(
        found(&store, &a.lookup, Some(&a.id)).await,
        Some(a.id.clone())
    );
    assert_eq!(
        found(&store, &a.lookup, Some(&b.id)).await,
        Some(b.id.clone())
    );
    assert_eq!(found(&store, &a.lookup, None).await, None);
    assert_eq!(found(&store, "lk_nothing", Some(&a.id)).await, None);
    // Revoked entries stay candidates (verify says why they fail).
    store.revoke_key(&a.id, at(5)).await.unwrap();
    assert_eq!(
        found(&store, &a.lookup, Some(&a.id)).await,
        Some(a.id.clone())
    );
    assert_eq!(
        found(&store, &a.lookup, Some(&b.id)).await,
        Some(b.id.clone())
    );
    // A secret reset moves b to a lookup id of its own.
    store
        .replace_secret(&b.id, "lk_moved", b.hash.clone(), at(70))
        .await
        .unwrap();
    assert_eq!(found(&store, &a.lookup, Some(&b.id)).await, None);
    assert_eq!(
        found(&store, "lk_moved", Some(&b.id)).await,
        Some(b.id.clone())
    );
    assert_eq!(
        found(&store, &a.lookup, Some(&a.id)).await,
        Some(a.id.clone())
    );
}

pub async fn list_excludes_revoked_keys_unless_asked(store: Arc<dyn KeyStore>) {
    for n in 1..=4 {
        insert(&store, key("org_1", n)).await;
    }
    store
        .revoke_key(&KeyId::new("key_000002"), at(50))
        .await
        .unwrap();
    assert_eq!(
        ids(&store, "org_1", false).await,
        ["key_000001", "key_000003", "key_000004"]
    );
    assert_eq!(
        ids(&store, "org_1", true).await,
        ["key_000001", "key_000002", "key_000003", "key_000004"]
    );
}

pub async fn list_is_per_account_in_id_order(store: Arc<dyn KeyStore>) {
    // Inserted out of order, across two accounts; ids sort bytewise.
    for (n, (acct, id)) in [
        ("org_a", "key_b"),
        ("org_b", "key_c"),
        ("org_a", "key_B"),
        ("org_a", "key_a"),
        ("org_a", "key_aa"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = key(acct, 0);
        r.id = KeyId::new(id);
        r.lookup = format!("lk_{id}");
        r.hash = hash(100 + n as u32);
        insert(&store, r).await;
    }
    assert_eq!(
        ids(&store, "org_a", false).await,
        ["key_B", "key_a", "key_aa", "key_b"]
    );
    assert_eq!(ids(&store, "org_b", false).await, ["key_c"]);
    assert!(ids(&store, "org_c", true).await.is_empty());
    let page = store
        .list_keys(
            &account("org_a"),
            &ListQuery {
                include_revoked: false,
                after: Some(KeyId::new("key_a")),
                limit: 2,
            },
        )
        .await
        .unwrap();
    let page: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(page, ["key_aa", "key_b"]);
    let empty = store
        .list_keys(
            &account("org_a"),
            &ListQuery {
                include_revoked: true,
                after: None,
                limit: 0,
            },
        )
        .await
        .unwrap();
    assert!(empty.is_empty());
}

pub async fn revoke_is_soft_and_keeps_the_first_time(store: Arc<dyn KeyStore>) {
    let r = key("org_1", 1);
    insert(&store, r.clone()).await;
    store.revoke_key(&r.id, at(100)).await.unwrap();
    store.revoke_key(&r.id, at(200)).await.unwrap();
    let revoked = stored(&store, &r.id).await;
    assert_eq!(
        revoked,
        KeyRecord {
            revoked_at: Some(at(100)),
            ..r.clone()
        }
    );
    // Still found by lookup, so verify can say "revoked" rather than "invalid".
    let found = store.find_by_lookup(&r.lookup).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].record().revoked_at, Some(at(100)));
    assert_eq!(
        store.revoke_key(&KeyId::new("key_none"), at(1)).await,
        Err(StoreError::NotFound)
    );
}

pub async fn replace_secret_swaps_lookup_and_hash(store: Arc<dyn KeyStore>) {
    let r = key("org_1", 1);
    insert(&store, r.clone()).await;
    let new_hash = SecretHash::from_parts(2, [0x11; 32]);
    store
        .replace_secret(&r.id, "lk_new", new_hash.clone(), at(50))
        .await
        .unwrap();
    assert!(store.find_by_lookup(&r.lookup).await.unwrap().is_empty());
    let found = store.find_by_lookup("lk_new").await.unwrap();
    assert_eq!(found.len(), 1);
    let expected = KeyRecord {
        lookup: "lk_new".into(),
        hash: new_hash,
        secret_set_at: at(50),
        ..r.clone()
    };
    assert_eq!(found[0].record(), expected);
    assert_eq!(stored(&store, &r.id).await, expected);

    store.revoke_key(&r.id, at(5)).await.unwrap();
    assert_eq!(
        store
            .replace_secret(&r.id, "lk_newer", hash(9), at(60))
            .await,
        Err(StoreError::Revoked)
    );
    assert_eq!(
        store
            .replace_secret(&KeyId::new("key_none"), "lk_x", hash(9), at(60))
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(stored(&store, &r.id).await.lookup, "lk_new");
}

// ----- limits ---------------------------------------------------------------

pub async fn limit_counts_active_keys_per_account_and_format(store: Arc<dyn KeyStore>) {
    let now = at(1_000);
    for n in 1..=2 {
        store
            .insert_key(key("org_1", n), Some(2), now)
            .await
            .unwrap();
    }
    assert_eq!(
        store.insert_key(key("org_1", 3), Some(2), now).await,
        Err(StoreError::LimitReached { limit: 2 })
    );
    // Another format and another account have limits of their own.
    let mut test_mode = key("org_1", 4);
    test_mode.format = "mk_test_".into();
    store.insert_key(test_mode, Some(2), now).await.unwrap();
    store
        .insert_key(key("org_2", 5), Some(2), now)
        .await
        .unwrap();
    // No limit, no check.
    store.insert_key(key("org_1", 6), None, now).await.unwrap();
    // Revoking one frees a slot only when it brings the count under the limit.
    store
        .revoke_key(&KeyId::new("key_000001"), now)
        .await
        .unwrap();
    assert_eq!(
        store.insert_key(key("org_1", 7), Some(2), now).await,
        Err(StoreError::LimitReached { limit: 2 })
    );
    store
        .revoke_key(&KeyId::new("key_000006"), now)
        .await
        .unwrap();
    store
        .insert_key(key("org_1", 8), Some(2), now)
        .await
        .unwrap();
    assert_eq!(
        ids(&store, "org_1", false).await,
        ["key_000002", "key_000004", "key_000008"]
    );
    assert_eq!(
        store.insert_key(key("org_3", 9), Some(0), now).await,
        Err(StoreError::LimitReached { limit: 0 })
    );
}

pub async fn limit_ignores_expired_keys(store: Arc<dyn KeyStore>) {
    let now = at(10_000);
    let mut expired = key("org_1", 1);
    expired.expires_at = Some(at(9_999));
    let mut expiring_now = key("org_1", 2);
    expiring_now.expires_at = Some(now);
    let mut later = key("org_1", 3);
    later.expires_at = Some(at(10_001));
    for r in [expired, expiring_now, later] {
        insert(&store, r).await;
    }
    // Only `later` is active at `now`: an expiry equal to now has passed.
    store
        .insert_key(key("org_1", 4), Some(2), now)
        .await
        .unwrap();
    assert_eq!(
        store.insert_key(key("org_1", 5), Some(2), now).await,
        Err(StoreError::LimitReached { limit: 2 })
    );
    // Once `later` expires too, there is room again.
    store
        .insert_key(key("org_1", 6), Some(2), at(10_001))
        .await
        .unwrap();
    assert_eq!(ids(&store, "org_1", false).await.len(), 5);
}

pub async fn concurrent_creates_never_exceed_the_limit(store: Arc<dyn KeyStore>) {
    let now = at(1_000);
    let mut tasks = Vec::new();
    for n in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.insert_key(key("org_busy", n), Some(10), now).await
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => created += 1,
            Err(StoreError::LimitReached { limit: 10 }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, refused), (10, 22));
    assert_eq!(ids(&store, "org_busy", true).await.len(), 10);
}

// ----- last used ------------------------------------------------------------

pub async fn last_used_batches_keep_the_latest_time(store: Arc<dyn KeyStore>) {
    let (a, b, c) = (key("org_1", 1), key("org_1", 2), key("org_1", 3));
    for r in [&a, &b, &c] {
        insert(&store, r.clone()).await;
    }
    store
        .record_last_used(&[
            (a.id.clone(), at(300)),
            (b.id.clone(), at(100)),
            (a.id.clone(), at(200)),
            (KeyId::new("key_none"), at(100)),
        ])
        .await
        .unwrap();
    // An older time never moves the stamp back.
    store
        .record_last_used(&[(a.id.clone(), at(250)), (b.id.clone(), at(150))])
        .await
        .unwrap();
    store.record_last_used(&[]).await.unwrap();
    let last_used = |id: &KeyId| {
        let store = Arc::clone(&store);
        let id = id.clone();
        async move { store.get_key(&id).await.unwrap().unwrap().last_used() }
    };
    assert_eq!(last_used(&a.id).await, Some(at(300)));
    assert_eq!(last_used(&b.id).await, Some(at(150)));
    assert_eq!(last_used(&c.id).await, None);
    let listed: Vec<_> = store
        .list_keys(&account("org_1"), &ListQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.last_used_at)
        .collect();
    assert_eq!(listed, [Some(at(300)), Some(at(150)), None]);
}

// ----- text -----------------------------------------------------------------

pub async fn unicode_names_and_accounts_round_trip(store: Arc<dyn KeyStore>) {
    // A sub-account (registered before its keys) under a top-level account,
    // both with non-ASCII ids.
    let acct = "élternkonto/org_Zürich_東京";
    store
        .create_account(AccountRecord {
            id: account(acct),
            parent: Some(account("élternkonto")),
            created_at: at(0),
        })
        .await
        .unwrap();
    let mut r = key(acct, 1);
    r.name = "Clé de prod 🚀 — «ünïcödé» 日本語 \"quoted\" 'single' %_\\".into();
    r.scopes = vec!["naïve:read".into()];
    r.bundle = Some("bündel".into());
    insert(&store, r.clone()).await;
    let mut top = key("élternkonto", 2);
    top.name = "Schlüssel".into();
    insert(&store, top.clone()).await;
    assert_eq!(stored(&store, &r.id).await, r);
    assert_eq!(stored(&store, &top.id).await, top);
    let listed = store
        .list_keys(&account(acct), &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(listed, vec![r]);
    let listed = store
        .list_keys(&account("élternkonto"), &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(listed, vec![top]);
    let a = store.get_account(&account(acct)).await.unwrap().unwrap();
    assert_eq!(a.parent, Some(account("élternkonto")));
    let parent = store
        .get_account(&account("élternkonto"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parent.parent, None);
}

// ----- scale ----------------------------------------------------------------

pub async fn ten_thousand_keys_page_in_id_order(store: Arc<dyn KeyStore>) {
    const N: u32 = 10_000;
    let mut records: Vec<KeyRecord> = (0..N)
        .map(|n| {
            let mut r = key("org_big", n);
            if n % 10 == 3 {
                r.revoked_at = Some(at(5));
            }
            r
        })
        .collect();
    // A neighbour whose keys must not leak into the listing.
    records.extend((N..N + 50).map(|n| key("org_small", n)));
    records.reverse();
    store.insert_keys(records).await.unwrap();

    for include_revoked in [false, true] {
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = store
                .list_keys(
                    &account("org_big"),
                    &ListQuery {
                        include_revoked,
                        after: after.clone(),
                        limit: 1_000,
                    },
                )
                .await
                .unwrap();
            pages += 1;
            assert!(page.len() <= 1_000);
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            seen.extend(page.into_iter().map(|r| r.id));
        }
        let expected: Vec<KeyId> = (0..N)
            .filter(|n| include_revoked || n % 10 != 3)
            .map(|n| KeyId::new(format!("key_{n:06}")))
            .collect();
        assert_eq!(seen.len(), expected.len());
        assert_eq!(seen, expected);
        let full_pages = expected.len().div_ceil(1_000);
        assert_eq!(pages, full_pages + 1);
    }
    assert_eq!(ids(&store, "org_small", false).await.len(), 50);
}

pub async fn bulk_insert_is_all_or_nothing(store: Arc<dyn KeyStore>) {
    insert(&store, key("org_1", 1)).await;
    let batch = vec![key("org_1", 2), key("org_1", 1), key("org_1", 3)];
    let result = store.insert_keys(batch).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let within = store
        .insert_keys(vec![key("org_1", 4), key("org_1", 4)])
        .await;
    assert!(matches!(within, Err(StoreError::Conflict(_))), "{within:?}");
    assert_eq!(ids(&store, "org_1", true).await, ["key_000001"]);
    store.insert_keys(Vec::new()).await.unwrap();
}

// ----- rotation ---------------------------------------------------------------

pub async fn rotate_immediately_revokes_the_old_key(store: Arc<dyn KeyStore>) {
    let old = key("org_1", 1);
    insert(&store, old.clone()).await;
    let new = key("org_1", 2);
    store
        .rotate_key(&old.id, new.clone(), OldKey::RevokeAt(at(500)))
        .await
        .unwrap();
    assert_eq!(
        stored(&store, &old.id).await,
        KeyRecord {
            revoked_at: Some(at(500)),
            replaced_by: Some(new.id.clone()),
            ..old.clone()
        }
    );
    assert_eq!(stored(&store, &new.id).await, new);
    assert_eq!(ids(&store, "org_1", false).await, ["key_000002"]);
    // A revoked key cannot be rotated again; an unknown one is not found.
    assert_eq!(
        store
            .rotate_key(&old.id, key("org_1", 3), OldKey::RevokeAt(at(600)))
            .await,
        Err(StoreError::Revoked)
    );
    assert_eq!(
        store
            .rotate_key(
                &KeyId::new("key_none"),
                key("org_1", 4),
                OldKey::RevokeAt(at(600))
            )
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        ids(&store, "org_1", true).await,
        ["key_000001", "key_000002"]
    );
}

pub async fn rotate_with_grace_expires_the_old_key_later(store: Arc<dyn KeyStore>) {
    let old = key("org_1", 1);
    let mut soon = key("org_1", 2);
    soon.expires_at = Some(at(1_000));
    insert(&store, old.clone()).await;
    insert(&store, soon.clone()).await;
    store
        .rotate_key(&old.id, key("org_1", 3), OldKey::ExpireAt(at(5_000)))
        .await
        .unwrap();
    // A grace period never extends an earlier expiry.
    store
        .rotate_key(&soon.id, key("org_1", 4), OldKey::ExpireAt(at(5_000)))
        .await
        .unwrap();
    let old_now = stored(&store, &old.id).await;
    assert_eq!(
        old_now,
        KeyRecord {
            expires_at: Some(at(5_000)),
            replaced_by: Some(KeyId::new("key_000003")),
            ..old.clone()
        }
    );
    assert_eq!(
        stored(&store, &soon.id).await,
        KeyRecord {
            replaced_by: Some(KeyId::new("key_000004")),
            ..soon.clone()
        }
    );
    // During the grace period both keys count toward the limit; after it, only the new.
    assert_eq!(
        store.insert_key(key("org_1", 5), Some(3), at(4_999)).await,
        Err(StoreError::LimitReached { limit: 3 })
    );
    store
        .insert_key(key("org_1", 5), Some(3), at(5_000))
        .await
        .unwrap();
}

pub async fn rotate_is_atomic_when_the_new_id_exists(store: Arc<dyn KeyStore>) {
    let old = key("org_1", 1);
    let taken = key("org_1", 2);
    insert(&store, old.clone()).await;
    insert(&store, taken.clone()).await;
    // Only the id clashes: the lookup and secret are new.
    let mut clash = key("org_1", 2);
    clash.lookup = "lk_clash".into();
    clash.hash = hash(1_002);
    let result = store
        .rotate_key(&old.id, clash, OldKey::RevokeAt(at(500)))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(stored(&store, &old.id).await, old);
    assert_eq!(stored(&store, &taken.id).await, taken);
    assert!(store.find_by_lookup("lk_clash").await.unwrap().is_empty());
}

// ----- accounts and uniqueness --------------------------------------------------

pub async fn keys_need_their_account_and_active_keys_are_unique(store: Arc<dyn KeyStore>) {
    // A sub-account must be registered before it holds keys.
    let orphan = key("org_1/missing", 1);
    assert_eq!(
        store.insert_key(orphan.clone(), None, at(0)).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.insert_key(orphan.clone(), Some(5), at(0)).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.insert_keys(vec![key("org_2", 2), orphan]).await,
        Err(StoreError::NotFound)
    );
    for n in [1, 2] {
        let id = KeyId::new(format!("key_{n:06}"));
        assert!(store.get_key(&id).await.unwrap().is_none(), "{id}");
    }
    for id in ["org_1/missing", "org_1", "org_2"] {
        assert_eq!(store.get_account(&account(id)).await.unwrap(), None, "{id}");
    }

    // A first key registers its top-level account.
    insert(&store, key("org_1", 1)).await;
    let registered = store
        .get_account(&account("org_1"))
        .await
        .unwrap()
        .expect("registered with its first key");
    assert_eq!(registered.id, account("org_1"));
    assert_eq!(registered.parent, None);
    // Registering it again is a conflict and changes nothing.
    let again = store
        .create_account(AccountRecord {
            id: account("org_1"),
            parent: None,
            created_at: at(7),
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(
        store.get_account(&account("org_1")).await.unwrap(),
        Some(registered)
    );
    // Once registered, a sub-account holds keys of its own.
    let sub = AccountRecord {
        id: account("org_1/sub"),
        parent: Some(account("org_1")),
        created_at: at(8),
    };
    store.create_account(sub.clone()).await.unwrap();
    let again = store.create_account(sub).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    insert(&store, key("org_1/sub", 2)).await;
    assert_eq!(ids(&store, "org_1/sub", true).await, ["key_000002"]);
    assert_eq!(ids(&store, "org_1", true).await, ["key_000001"]);

    // One active key per secret, whatever the account, id or limit.
    let mut twin = key("org_3", 3);
    twin.hash = hash(1);
    twin.lookup = key("org_1", 1).lookup;
    for limit in [None, Some(5)] {
        let result = store.insert_key(twin.clone(), limit, at(0)).await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    }
    let result = store.insert_keys(vec![twin.clone()]).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    // The same secret under another lookup id is refused too.
    twin.lookup = "another_lookup".into();
    let result = store.insert_key(twin.clone(), None, at(0)).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    // Two new keys with one secret in one batch: neither is stored.
    let mut pair = (key("org_3", 4), key("org_3", 5));
    pair.1.hash = pair.0.hash.clone();
    pair.1.lookup = pair.0.lookup.clone();
    let result = store.insert_keys(vec![pair.0, pair.1]).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert!(ids(&store, "org_3", true).await.is_empty());
    // One active key pair per public key, whatever its secret.
    let mut public = key("org_3", 6);
    public.format = "pair".into();
    public.lookup = "0123456789abcdef0123456789abcdef".into();
    insert(&store, public.clone()).await;
    let mut same_public = key("org_4", 7);
    same_public.format = "pair".into();
    same_public.lookup = public.lookup.clone();
    let result = store.insert_key(same_public.clone(), None, at(0)).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    // A revoked key holds neither its secret nor its public key.
    store
        .revoke_key(&KeyId::new("key_000001"), at(9))
        .await
        .unwrap();
    store.revoke_key(&public.id, at(9)).await.unwrap();
    insert(&store, twin).await;
    insert(&store, same_public).await;
    assert_eq!(ids(&store, "org_3", false).await, ["key_000003"]);
    assert_eq!(ids(&store, "org_4", false).await, ["key_000007"]);

    // A key has one successor: rotating it twice is refused, grace or not.
    let old = key("org_5", 10);
    insert(&store, old.clone()).await;
    store
        .rotate_key(&old.id, key("org_5", 11), OldKey::ExpireAt(at(5_000)))
        .await
        .unwrap();
    for old_key in [OldKey::ExpireAt(at(6_000)), OldKey::RevokeAt(at(600))] {
        assert_eq!(
            store.rotate_key(&old.id, key("org_5", 12), old_key).await,
            Err(StoreError::Rotated)
        );
    }
    assert_eq!(
        stored(&store, &old.id).await,
        KeyRecord {
            expires_at: Some(at(5_000)),
            replaced_by: Some(KeyId::new("key_000011")),
            ..old
        }
    );
    assert_eq!(
        ids(&store, "org_5", true).await,
        ["key_000010", "key_000011"]
    );
    // The successor is rotated in its turn.
    store
        .rotate_key(
            &KeyId::new("key_000011"),
            key("org_5", 12),
            OldKey::RevokeAt(at(700)),
        )
        .await
        .unwrap();
    assert_eq!(
        stored(&store, &KeyId::new("key_000011")).await.replaced_by,
        Some(KeyId::new("key_000012"))
    );
}

// ----- secret age -------------------------------------------------------------

pub async fn stale_secrets_list_by_age_reach_and_activity(store: Arc<dyn KeyStore>) {
    store
        .create_account(AccountRecord {
            id: account("org_1/eu"),
            parent: Some(account("org_1")),
            created_at: at(0),
        })
        .await
        .unwrap();
    // (account, n, secret set at, revoked, expires at)
    let keys: [(&str, u32, i64, bool, Option<i64>); 8] = [
        ("org_1", 1, 100, false, None),
        ("org_1", 2, 200, false, None),
        ("org_1", 3, 300, false, None),      // too recent
        ("org_1", 4, 100, true, None),       // revoked
        ("org_1", 5, 100, false, Some(150)), // expired by then
        ("org_1/eu", 6, 100, false, None),
        ("org_10", 7, 100, false, None), // shares a text prefix, not a parent
        ("org_2", 8, 100, false, Some(10_000)),
    ];
    for (acct, n, set, revoked, expires) in keys {
        let mut r = key(acct, n);
        r.secret_set_at = at(set);
        r.revoked_at = revoked.then(|| at(5));
        r.expires_at = expires.map(at);
        insert(&store, r).await;
    }
    let query = |within: Option<&str>, after: Option<&str>, limit: usize| SecretAgeQuery {
        set_before: at(200),
        active_at: at(250),
        within: within.map(account),
        after: after.map(KeyId::new),
        limit,
    };
    let ids = |records: Vec<KeyRecord>| -> Vec<String> {
        records
            .into_iter()
            .map(|r| r.id.as_str().to_owned())
            .collect()
    };
    let all = store
        .list_stale_secrets(&query(None, None, 100))
        .await
        .unwrap();
    assert_eq!(all[0].secret_set_at, at(100));
    assert_eq!(
        ids(all),
        [
            "key_000001",
            "key_000002",
            "key_000006",
            "key_000007",
            "key_000008"
        ]
    );
    let org_1 = store
        .list_stale_secrets(&query(Some("org_1"), None, 100))
        .await
        .unwrap();
    assert_eq!(ids(org_1), ["key_000001", "key_000002", "key_000006"]);
    let eu = store
        .list_stale_secrets(&query(Some("org_1/eu"), None, 100))
        .await
        .unwrap();
    assert_eq!(ids(eu), ["key_000006"]);
    let page = store
        .list_stale_secrets(&query(None, Some("key_000002"), 2))
        .await
        .unwrap();
    assert_eq!(ids(page), ["key_000006", "key_000007"]);
    // A reset makes the secret new again.
    store
        .replace_secret(&KeyId::new("key_000001"), "lk_reset", hash(99), at(240))
        .await
        .unwrap();
    let org_1 = store
        .list_stale_secrets(&query(Some("org_1"), None, 100))
        .await
        .unwrap();
    assert_eq!(ids(org_1), ["key_000002", "key_000006"]);
}

// ----- through the service ----------------------------------------------------

fn service(store: Arc<dyn KeyStore>, profile: keygate::Profile) -> (ApiKeys, ManualClock) {
    let clock = ManualClock::starting_at(at(0));
    let api = ApiKeys::builder(profile)
        .store(store)
        .pepper(Pepper::new(1, [42u8; 32]).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    (api, clock)
}

pub async fn service_verifies_a_created_key(store: Arc<dyn KeyStore>) {
    let (api, _) = service(store, profiles::mailjawn());
    let org = account("org_svc");
    let key = api
        .as_account(&org)
        .create(&org, CreateKey::new("ci").bundle("sdk"))
        .await
        .unwrap();
    let principal = api.verify(key.key.expose_secret()).await.unwrap();
    assert_eq!(principal.key_id(), &key.info.id);
    assert_eq!(principal.account(), &org);
    assert_eq!(principal.bundle(), Some("sdk"));
    api.check_scope(&principal, "subscribers:write").unwrap();
    assert!(matches!(
        api.check_scope(&principal, "campaigns:read"),
        Err(AuthError::Forbidden { .. })
    ));
    // A well-formed key that was never issued is invalid.
    let stranger = api.profile().formats()[0].generate();
    assert_eq!(
        api.verify(stranger.expose_secret()).await.unwrap_err(),
        AuthError::Invalid
    );
    let presented = key.key.expose_secret().to_owned();
    let page = api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].id, key.info.id);
    assert_eq!(page.data[0].name, "ci");
    assert!(!page.data[0].redacted.contains(&presented));
}

pub async fn service_rejects_a_revoked_key(store: Arc<dyn KeyStore>) {
    let (api, _) = service(store, profiles::mailjawn());
    let org = account("org_svc");
    let key = api
        .as_account(&org)
        .create(&org, CreateKey::new("ci").bundle("sdk"))
        .await
        .unwrap();
    api.as_account(&org).revoke(&key.info.id).await.unwrap();
    assert_eq!(
        api.verify(key.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
    let listed = api
        .as_account(&org)
        .list(&org, ListOptions::default().with_include_revoked(true))
        .await
        .unwrap();
    assert_eq!(listed.data[0].revoked_at, Some(at(0)));
    assert!(api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap()
        .data
        .is_empty());
}

pub async fn service_rotates_immediately_and_with_grace(store: Arc<dyn KeyStore>) {
    let (api, clock) = service(store, profiles::mailjawn());
    let org = account("org_svc");
    let first = api
        .as_account(&org)
        .create(&org, CreateKey::new("ci").bundle("mcp"))
        .await
        .unwrap();
    let second = api
        .as_account(&org)
        .rotate(&first.info.id, Rotation::Immediate)
        .await
        .unwrap();
    assert_eq!(
        api.verify(first.key.expose_secret()).await.unwrap_err(),
        AuthError::Revoked
    );
    let p = api.verify(second.key.expose_secret()).await.unwrap();
    assert_eq!(p.bundle(), Some("mcp"));
    assert_eq!(p.name(), "ci");

    let third = api
        .as_account(&org)
        .rotate(&second.info.id, Rotation::Grace(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(api.verify(second.key.expose_secret()).await.is_ok());
    assert!(api.verify(third.key.expose_secret()).await.is_ok());
    // The key in its grace period already has a successor: no second one.
    assert_eq!(
        api.as_account(&org)
            .rotate(&second.info.id, Rotation::Grace(Duration::from_secs(60)))
            .await
            .unwrap_err(),
        Error::AlreadyRotated
    );
    assert_eq!(
        api.as_account(&org)
            .get(&second.info.id)
            .await
            .unwrap()
            .replaced_by,
        Some(third.info.id.clone())
    );
    assert_eq!(
        api.as_account(&org)
            .get(&first.info.id)
            .await
            .unwrap()
            .replaced_by,
        Some(second.info.id.clone())
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        api.verify(second.key.expose_secret()).await.unwrap_err(),
        AuthError::Expired
    );
    assert!(api.verify(third.key.expose_secret()).await.is_ok());
    assert_eq!(
        api.as_account(&org)
            .rotate(&first.info.id, Rotation::Immediate)
            .await
            .unwrap_err(),
        Error::Revoked
    );
}

pub async fn service_enforces_the_key_limit(store: Arc<dyn KeyStore>) {
    let mut profile = profiles::mailchannels();
    profile = profile.with_key_limit(Some(2));
    let (api, _) = service(store, profile);
    let org = account("org_mc");
    let a = api
        .as_account(&org)
        .create(&org, CreateKey::new("one").scopes(["api"]))
        .await
        .unwrap();
    api.as_account(&org)
        .create(&org, CreateKey::new("two").scopes(["api"]))
        .await
        .unwrap();
    assert_eq!(
        api.as_account(&org)
            .create(&org, CreateKey::new("three").scopes(["api"]))
            .await
            .unwrap_err(),
        Error::KeyLimitReached { limit: 2 }
    );
    api.as_account(&org).revoke(&a.info.id).await.unwrap();
    let c = api
        .as_account(&org)
        .create(&org, CreateKey::new("three").scopes(["api"]))
        .await
        .unwrap();
    assert!(api.verify(c.key.expose_secret()).await.is_ok());
}

pub async fn service_flush_writes_last_used(store: Arc<dyn KeyStore>) {
    let (api, clock) = service(store, profiles::mailjawn());
    let org = account("org_svc");
    let key = api
        .as_account(&org)
        .create(&org, CreateKey::new("ci").bundle("sdk"))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(1_500));
    api.verify(key.key.expose_secret()).await.unwrap();
    api.flush_last_used().await.unwrap();
    let listed = api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.data[0].last_used_at, Some(at(1_500)));
    assert_eq!(
        api.as_account(&org)
            .get(&key.info.id)
            .await
            .unwrap()
            .last_used_at,
        Some(at(1_500))
    );
}

/// `001_1096317fca88c73a.txt` (Mailjet): "it is recommended the Secret key be
/// reset once every 90 days". Every key records when its secret was set (at
/// creation, reset and rotation), `KeyInfo` says when a reset is due, and the
/// keys due are listed for the operator (all) and for an account (its reach).
pub async fn service_recommends_a_secret_reset_after_90_days(store: Arc<dyn KeyStore>) {
    const DAY: Duration = Duration::from_secs(86_400);
    let (api, clock) = service(store, profiles::mailjet());
    let acme = account("acme");
    let other = account("other");
    let keys = api.as_account(&acme);
    let eu = keys.create_sub_account(&acme, "eu").await.unwrap();
    let main = keys.create(&acme, CreateKey::new("main")).await.unwrap();
    let sub = keys.create(&eu, CreateKey::new("eu")).await.unwrap();
    let theirs = api
        .as_account(&other)
        .create(&other, CreateKey::new("theirs"))
        .await
        .unwrap();
    assert_eq!(main.info.secret_set_at, at(0));
    assert_eq!(main.info.reset_due_at, Some(at(0) + 90 * DAY));
    assert!(!main.info.reset_recommended);

    clock.advance(10 * DAY);
    let rotated = keys
        .rotate(&sub.info.id, Rotation::Immediate)
        .await
        .unwrap();
    assert_eq!(rotated.info.secret_set_at, at(0) + 10 * DAY);

    clock.advance(80 * DAY - Duration::from_millis(1));
    assert!(due(api.operator()).await.is_empty());
    assert!(!keys.get(&main.info.id).await.unwrap().reset_recommended);

    // 90 days after creation: the two untouched keys are due, the rotated one is not.
    clock.advance(Duration::from_millis(1));
    let info = keys.get(&main.info.id).await.unwrap();
    assert!(info.reset_recommended);
    let listed = keys.list(&acme, ListOptions::default()).await.unwrap();
    assert!(listed.data[0].reset_recommended);
    let mut everyone = vec![main.info.id.clone(), theirs.info.id.clone()];
    everyone.sort();
    assert_eq!(due(api.operator()).await, everyone);
    assert_eq!(
        due(api.as_account(&acme)).await,
        std::slice::from_ref(&main.info.id)
    );
    assert!(due(api.as_account(&eu)).await.is_empty());
    assert_eq!(
        due(api.as_account(&other)).await,
        std::slice::from_ref(&theirs.info.id)
    );

    // A reset keeps the public key, records the new time and clears the advice.
    let reset = keys.reset_secret(&main.info.id).await.unwrap();
    assert_eq!(reset.info.public_key, main.info.public_key);
    assert_eq!(reset.info.secret_set_at, at(0) + 90 * DAY);
    assert!(!reset.info.reset_recommended);
    assert_eq!(
        keys.get(&main.info.id).await.unwrap().secret_set_at,
        at(0) + 90 * DAY
    );
    assert!(due(api.as_account(&acme)).await.is_empty());

    // The rotated sub-account key comes due 90 days after its rotation; a
    // revoked key never does.
    clock.advance(10 * DAY);
    assert_eq!(
        due(api.as_account(&acme)).await,
        std::slice::from_ref(&rotated.info.id)
    );
    keys.revoke(&rotated.info.id).await.unwrap();
    assert!(!keys.get(&rotated.info.id).await.unwrap().reset_recommended);
    assert!(due(api.as_account(&acme)).await.is_empty());

    // A profile without a maximum never recommends a reset.
    let (plain, _) = service(
        Arc::clone(api.store()),
        profiles::mailjet().with_max_secret_age(None),
    );
    assert!(due(plain.operator()).await.is_empty());
    assert!(
        !plain
            .operator()
            .get(&theirs.info.id)
            .await
            .unwrap()
            .reset_recommended
    );
}

/// The ids of the keys `manager` sees due for a secret reset.
async fn due(manager: keygate::Manager<'_>) -> Vec<KeyId> {
    let page = manager.due_for_reset(ListOptions::default()).await.unwrap();
    page.data.into_iter().map(|k| k.id).collect()
}

/// Polls `api.list` until the key shows a last-used time; fails after `limit`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn wait_for_last_used(
    api: &ApiKeys,
    org: &AccountId,
    limit: Duration,
) -> Option<OffsetDateTime> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let page = api
            .as_account(org)
            .list(org, ListOptions::default())
            .await
            .unwrap();
        if let Some(t) = page.data[0].last_used_at {
            return Some(t);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub async fn flusher_writes_last_used_within_the_interval(store: Arc<dyn KeyStore>) {
    let needs_flush = store.needs_last_used_flush();
    let (api, clock) = service(store, profiles::mailjawn());
    let org = account("org_svc");
    let key = api
        .as_account(&org)
        .create(&org, CreateKey::new("ci").bundle("sdk"))
        .await
        .unwrap();
    let flusher = api.spawn_last_used_flusher(Duration::from_millis(50));
    clock.advance(Duration::from_millis(2_000));
    api.verify(key.key.expose_secret()).await.unwrap();
    if needs_flush {
        // Verify itself wrote nothing: the store still has no last-used time.
        let stored = api.store().get_key(&key.info.id).await.unwrap().unwrap();
        assert_eq!(stored.record().last_used_at, None);
    }
    // The flusher's next tick writes it (the bound only guards a hung test).
    let seen = wait_for_last_used(&api, &org, Duration::from_secs(10)).await;
    assert_eq!(seen, Some(at(2_000)));
    assert_eq!(flusher.shutdown().await.unwrap(), 0);
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub async fn flusher_shutdown_flushes_once_more(store: Arc<dyn KeyStore>) {
    let needs_flush = store.needs_last_used_flush();
    let (api, clock) = service(store, profiles::mailjawn());
    let org = account("org_svc");
    let key = api
        .as_account(&org)
        .create(&org, CreateKey::new("ci").bundle("sdk"))
        .await
        .unwrap();
    let flusher = api.spawn_last_used_flusher(Duration::from_secs(3_600));
    clock.advance(Duration::from_millis(7_000));
    api.verify(key.key.expose_secret()).await.unwrap();
    let written = flusher.shutdown().await.unwrap();
    assert_eq!(written, usize::from(needs_flush));
    let listed = api
        .as_account(&org)
        .list(&org, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.data[0].last_used_at, Some(at(7_000)));
}
