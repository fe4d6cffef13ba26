//! Conformance cases for identities: stored in one account, keys attach
//! only within it, shared credits spent exactly and both-or-neither, and the
//! service's shared limits and attack refusals. Run on every backend by
//! `main.rs` through `suite.rs`.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::Arc;

use keygate::ratelimit::Quota;
use keygate::store::{KeyChange, KeyRecord, SharedSpend, Spend};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateIdentity, CreateKey, Credits, Error, Identity,
    IdentityChange, IdentityId, IdentityUpdate, InvalidRequest, KeyId, KeyStore, KeyUpdate,
    ManualClock, Metadata, Pepper, StoreError,
};

use crate::support::{at, key_record};

fn account(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

fn key(n: u32, account: &AccountId, identity: Option<&IdentityId>) -> KeyRecord {
    let mut digest = [0u8; 32];
    digest[..4].copy_from_slice(&n.to_be_bytes());
    digest[31] = 0x1d;
    KeyRecord {
        bundle: Some("sdk".into()),
        identity: identity.cloned(),
        ..key_record(
            KeyId::new(format!("key_i{n:05}")),
            account.clone(),
            format!("key {n}"),
            format!("li{n:06}"),
            keygate::hash::SecretHash::from_parts(1, digest),
        )
    }
}

fn identity(account: &AccountId, external_id: &str, credits: Option<Credits>) -> Identity {
    let mut identity = Identity::new(account.clone(), external_id, at(0));
    identity.credits = credits;
    identity
}

fn meta(value: serde_json::Value) -> Metadata {
    Metadata::from_value(value).unwrap()
}

// ----- the store ---------------------------------------------------------------

pub async fn identities_belong_to_one_account_and_keys_attach_only_within_it(
    store: Arc<dyn KeyStore>,
) {
    let (a, b) = (account("org_ida"), account("org_idb"));
    let mut acme = identity(&a, "acme", Some(Credits::new(9)));
    acme.metadata = meta(serde_json::json!({"plan": "pro"}));
    store.create_identity(acme.clone()).await.unwrap();
    assert_eq!(
        store.get_identity(&acme.id).await.unwrap(),
        Some(acme.clone())
    );
    // One external id per account; another account may reuse it.
    let twin = identity(&a, "acme", None);
    assert!(matches!(
        store.create_identity(twin).await,
        Err(StoreError::Conflict(_))
    ));
    let other = identity(&b, "acme", None);
    store.create_identity(other.clone()).await.unwrap();
    let listed = store.list_identities(&a, None, 10).await.unwrap();
    assert_eq!(listed, vec![acme.clone()]);

    // A key of account B never attaches to A's identity: not at insert,
    // not through an update.
    assert_eq!(
        store
            .insert_key(key(1, &b, Some(&acme.id)), None, at(0))
            .await,
        Err(StoreError::NotFound)
    );
    assert!(store
        .get_key(&KeyId::new("key_i00001"))
        .await
        .unwrap()
        .is_none());
    let stranger = key(2, &b, None);
    store
        .insert_key(stranger.clone(), None, at(0))
        .await
        .unwrap();
    assert_eq!(
        store
            .update_key(
                &stranger.id,
                &KeyChange::default().with_identity(Some(acme.id.clone()))
            )
            .await,
        Err(StoreError::NotFound)
    );
    let unknown = IdentityId::new("idn_missing");
    assert_eq!(
        store
            .insert_key(key(3, &a, Some(&unknown)), None, at(0))
            .await,
        Err(StoreError::NotFound)
    );

    // A key of A attaches, and verify's lookup brings the identity along.
    let member = key(4, &a, Some(&acme.id));
    store.insert_key(member.clone(), None, at(0)).await.unwrap();
    let found = store.find_by_lookup(&member.lookup).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].record().identity.as_ref(), Some(&acme.id));
    let carried = found[0].identity().expect("identity read with the key");
    assert_eq!(carried.external_id, "acme");
    assert_eq!(carried.metadata, acme.metadata);
}

pub async fn identity_changes_reach_its_keys_and_delete_detaches_them(store: Arc<dyn KeyStore>) {
    let a = account("org_idc");
    let acme = identity(&a, "acme", None);
    store.create_identity(acme.clone()).await.unwrap();
    let member = key(10, &a, Some(&acme.id));
    store.insert_key(member.clone(), None, at(0)).await.unwrap();
    // Read once (a cache now holds it), then change the identity.
    store.find_by_lookup(&member.lookup).await.unwrap();
    let gold = meta(serde_json::json!({"tier": "gold"}));
    let changed = store
        .update_identity(
            &acme.id,
            &IdentityChange::default()
                .with_metadata(gold.clone())
                .with_credits(Some(Credits::new(5))),
        )
        .await
        .unwrap();
    assert_eq!(changed.credits, Some(Credits::new(5)));
    let found = store.find_by_lookup(&member.lookup).await.unwrap();
    assert_eq!(found[0].identity().unwrap().metadata, gold);
    assert_eq!(
        store
            .update_identity(&IdentityId::new("idn_x"), &IdentityChange::default())
            .await,
        Err(StoreError::NotFound)
    );

    store.delete_identity(&acme.id).await.unwrap();
    assert_eq!(store.get_identity(&acme.id).await.unwrap(), None);
    let found = store.find_by_lookup(&member.lookup).await.unwrap();
    assert_eq!(found[0].record().identity, None);
    assert!(found[0].identity().is_none());
    assert_eq!(
        store.delete_identity(&acme.id).await,
        Err(StoreError::NotFound)
    );
}

pub async fn shared_spends_take_both_or_neither(store: Arc<dyn KeyStore>) {
    let a = account("org_idd");
    let acme = identity(&a, "acme", Some(Credits::new(5)));
    store.create_identity(acme.clone()).await.unwrap();
    let poor = KeyRecord {
        credits: Some(Credits::new(1)),
        ..key(20, &a, Some(&acme.id))
    };
    let rich = KeyRecord {
        credits: Some(Credits::new(100)),
        ..key(21, &a, Some(&acme.id))
    };
    let free = key(22, &a, Some(&acme.id));
    for k in [&poor, &rich, &free] {
        store.insert_key(k.clone(), None, at(0)).await.unwrap();
    }
    let spend = |k: &KeyRecord, cost| {
        let (store, id, acme) = (Arc::clone(&store), k.id.clone(), acme.id.clone());
        async move {
            store
                .spend_shared_credits(&id, &acme, cost, at(1))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        spend(&poor, 1).await,
        SharedSpend::new(Spend::Spent { remaining: 0 }, Spend::Spent { remaining: 4 })
    );
    // The key refuses: the identity keeps its credits.
    let refused = spend(&poor, 1).await;
    assert!(matches!(refused.key, Spend::Exhausted { .. }));
    assert_eq!(
        spend(&free, 1).await.identity,
        Spend::Spent { remaining: 3 }
    );
    // The identity refuses a cost of 4: the key keeps its credits.
    let refused = spend(&rich, 4).await;
    assert_eq!(refused.identity, Spend::Exhausted { next_refill: None });
    let rich_now = store.get_key(&rich.id).await.unwrap().unwrap();
    assert_eq!(rich_now.record().credits.unwrap().remaining, 100);
    assert_eq!(
        spend(&rich, 3).await,
        SharedSpend::new(
            Spend::Spent { remaining: 97 },
            Spend::Spent { remaining: 0 }
        )
    );
    // A key spends only from the identity it is attached to.
    let other = identity(&a, "other", Some(Credits::new(5)));
    store.create_identity(other.clone()).await.unwrap();
    let through = store
        .spend_shared_credits(&free.id, &other.id, 1, at(2))
        .await
        .unwrap();
    assert_eq!(through.identity, Spend::Unlimited);
    let other_now = store.get_identity(&other.id).await.unwrap().unwrap();
    assert_eq!(other_now.credits.unwrap().remaining, 5);
}

pub async fn concurrent_shared_spends_admit_exactly_the_identity_credits(store: Arc<dyn KeyStore>) {
    let a = account("org_ide");
    let acme = identity(&a, "acme", Some(Credits::new(30)));
    store.create_identity(acme.clone()).await.unwrap();
    let keys: Vec<KeyRecord> = (0..4).map(|n| key(30 + n, &a, Some(&acme.id))).collect();
    for k in &keys {
        store.insert_key(k.clone(), None, at(0)).await.unwrap();
    }
    let tasks: Vec<_> = (0..80)
        .map(|n| {
            let (store, id, acme) = (Arc::clone(&store), keys[n % 4].id.clone(), acme.id.clone());
            tokio::spawn(async move { store.spend_shared_credits(&id, &acme, 1, at(1)).await })
        })
        .collect();
    let (mut left, mut refused) = (BTreeSet::new(), 0);
    for t in tasks {
        match t.await.unwrap().unwrap().identity {
            Spend::Spent { remaining } => assert!(left.insert(remaining)),
            Spend::Exhausted { .. } => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(left, (0..30).collect());
    assert_eq!(refused, 50);
}

// ----- through the service ------------------------------------------------------

fn service(store: Arc<dyn KeyStore>) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn().with_max_sub_account_depth(1))
        .store(store)
        .pepper(Pepper::new(1, [45u8; 32]).unwrap())
        .clock(ManualClock::starting_at(at(0)))
        .build()
        .unwrap()
}

pub async fn service_identity_credits_and_limits_are_shared_by_its_keys(store: Arc<dyn KeyStore>) {
    let api = service(store);
    let org = account("org_idsvc");
    let acme = api
        .operator()
        .create_identity(
            &org,
            CreateIdentity::new("acme")
                .metadata(meta(serde_json::json!({"plan": "pro"})))
                .credits(3)
                .rate_limit("send", Quota::per_minute(NonZeroU32::new(2).unwrap())),
        )
        .await
        .unwrap();
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let k = api
            .operator()
            .create(
                &org,
                CreateKey::new(name).bundle("sdk").identity(acme.id.clone()),
            )
            .await
            .unwrap();
        assert_eq!(k.info.identity.as_ref(), Some(&acme.id));
        keys.push(k.key.expose_secret().to_owned());
    }
    // The identity's rate limit is shared: two sends in the minute, by
    // either key (each key alone would allow far more).
    let send = api.operation("send").unwrap().with_cost(0);
    let p = api.verify_for(&keys[0], &send).await.unwrap();
    assert_eq!(p.identity().unwrap().external_id, "acme");
    assert_eq!(p.identity().unwrap().metadata, acme.metadata);
    assert_eq!(p.identity_id(), Some(&acme.id));
    // The stricter bucket is the one reported: the identity's.
    assert_eq!(p.rate_limit().unwrap().remaining, 1);
    api.verify_for(&keys[1], &send).await.unwrap();
    assert!(matches!(
        api.verify_for(&keys[0], &send).await,
        Err(AuthError::RateLimited { .. })
    ));
    // The identity's credits are shared: three requests in all.
    let read = api.operation("read").unwrap();
    let p = api.verify_for(&keys[0], &read).await.unwrap();
    assert_eq!(p.identity_credits_remaining(), Some(2));
    api.verify_for(&keys[1], &read).await.unwrap();
    api.verify_for(&keys[0], &read).await.unwrap();
    assert_eq!(
        api.verify_for(&keys[1], &read).await.unwrap_err(),
        AuthError::UsageExceeded { retry_after: None }
    );
    // Topping the identity up reaches verify at once.
    api.operator()
        .update_identity(&acme.id, IdentityUpdate::new().credits(1, None))
        .await
        .unwrap();
    api.verify_for(&keys[1], &read).await.unwrap();
    assert!(api.verify_for(&keys[0], &read).await.is_err());
}

/// Another account's keys and actors never see, attach to or change an
/// identity: not a stranger, not a parent's or a child's or a sibling's.
pub async fn service_identities_never_cross_accounts(store: Arc<dyn KeyStore>) {
    let api = service(store);
    let (a, b) = (account("org_idx_a"), account("org_idx_b"));
    let op = api.operator();
    let secret = op
        .create_identity(&a, CreateIdentity::new("acme").credits(5))
        .await
        .unwrap();
    let child = op.create_sub_account(&a, "eu").await.unwrap();
    let sibling = op.create_sub_account(&a, "us").await.unwrap();
    let child_identity = op
        .create_identity(&child, CreateIdentity::new("acme-eu"))
        .await
        .unwrap();

    let stranger = api.as_account(&b);
    let create = CreateKey::new("x")
        .bundle("sdk")
        .identity(secret.id.clone());
    // Naming it in a key is a bad reference, the same answer as for a
    // missing identity.
    assert_eq!(
        stranger.create(&b, create.clone()).await.unwrap_err(),
        Error::Invalid(InvalidRequest::UnknownIdentity(secret.id.to_string()))
    );
    assert_eq!(
        stranger.get_identity(&secret.id).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        stranger
            .update_identity(&secret.id, IdentityUpdate::new().credits(1_000, None))
            .await
            .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        stranger.delete_identity(&secret.id).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        stranger.list_identities(&a, None, 10).await.unwrap_err(),
        Error::NotFound
    );
    let own = stranger
        .create(&b, CreateKey::new("own").bundle("sdk"))
        .await
        .unwrap();
    assert_eq!(
        stranger
            .update(
                &own.info.id,
                KeyUpdate::new().identity(Some(secret.id.clone()))
            )
            .await
            .unwrap_err(),
        Error::Invalid(InvalidRequest::UnknownIdentity(secret.id.to_string()))
    );
    // A key verified for account B cannot spend A's identity.
    let b_key = api.verify(own.key.expose_secret()).await.unwrap();
    assert_eq!(b_key.identity_id(), None);

    // The child never reaches its parent's identity, nor a sibling's; the
    // parent reaches the child's but cannot put a child key on its own.
    let as_child = api.as_account(&child);
    assert_eq!(
        as_child.get_identity(&secret.id).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.as_account(&sibling)
            .get_identity(&child_identity.id)
            .await
            .unwrap_err(),
        Error::NotFound
    );
    let parent = api.as_account(&a);
    assert_eq!(
        parent.get_identity(&child_identity.id).await.unwrap().id,
        child_identity.id
    );
    assert_eq!(
        parent
            .create(
                &child,
                CreateKey::new("y")
                    .bundle("sdk")
                    .identity(secret.id.clone())
            )
            .await
            .unwrap_err(),
        Error::Invalid(InvalidRequest::UnknownIdentity(secret.id.to_string()))
    );
    assert_eq!(
        parent
            .create(
                &a,
                CreateKey::new("z")
                    .bundle("sdk")
                    .identity(child_identity.id.clone())
            )
            .await
            .unwrap_err(),
        Error::Invalid(InvalidRequest::UnknownIdentity(
            child_identity.id.to_string()
        ))
    );
    let secret_now = op.get_identity(&secret.id).await.unwrap();
    assert_eq!(secret_now.credits.unwrap().remaining, 5);
}

/// A key on an identity creates keys on that identity only, and never
/// raises an identity's budget past its own.
pub async fn service_a_key_on_an_identity_cannot_escape_its_budget(store: Arc<dyn KeyStore>) {
    let api = service(store);
    let org = account("org_idesc");
    let op = api.operator();
    let x = op
        .create_identity(&org, CreateIdentity::new("x").credits(10))
        .await
        .unwrap();
    let y = op
        .create_identity(&org, CreateIdentity::new("y").credits(1_000))
        .await
        .unwrap();
    let admin = op
        .create(
            &org,
            CreateKey::new("admin")
                .bundle("full_access")
                .identity(x.id.clone()),
        )
        .await
        .unwrap();
    let actor = api.verify(admin.key.expose_secret()).await.unwrap();
    let as_key = api.as_key(&actor);

    // Naming no identity lands on X; naming another is refused.
    let minted = as_key
        .create(&org, CreateKey::new("minted").bundle("sdk"))
        .await
        .unwrap();
    assert_eq!(minted.info.identity.as_ref(), Some(&x.id));
    assert_eq!(
        as_key
            .create(
                &org,
                CreateKey::new("escape")
                    .bundle("sdk")
                    .identity(y.id.clone())
            )
            .await
            .unwrap_err(),
        Error::InsufficientScope
    );
    // Nor can it move a key off X, or onto Y, or delete X.
    for target in [None, Some(y.id.clone())] {
        assert_eq!(
            as_key
                .update(&minted.info.id, KeyUpdate::new().identity(target))
                .await
                .unwrap_err(),
            Error::InsufficientScope
        );
    }
    assert_eq!(
        as_key.delete_identity(&x.id).await.unwrap_err(),
        Error::InsufficientScope
    );
    // It cannot raise X's credits, lift its limit, or make a richer identity.
    for update in [
        IdentityUpdate::new().credits(11, None),
        IdentityUpdate::new().unlimited(),
    ] {
        assert_eq!(
            as_key.update_identity(&x.id, update).await.unwrap_err(),
            Error::InsufficientScope
        );
    }
    assert_eq!(
        as_key
            .create_identity(&org, CreateIdentity::new("rich").credits(11))
            .await
            .unwrap_err(),
        Error::InsufficientScope
    );
    assert_eq!(
        as_key
            .create_identity(&org, CreateIdentity::new("boundless"))
            .await
            .unwrap_err(),
        Error::InsufficientScope
    );
    // Within its own budget it may.
    as_key
        .update_identity(&x.id, IdentityUpdate::new().credits(4, None))
        .await
        .unwrap();
    let stored = op.get_identity(&x.id).await.unwrap();
    assert_eq!(stored.credits.unwrap().remaining, 4);
    // Every key it minted draws on X: five requests, whichever key.
    let read = api.operation("read").unwrap();
    let mut admitted = 0;
    for presented in [minted.key.expose_secret(), admin.key.expose_secret()]
        .iter()
        .cycle()
        .take(8)
    {
        if api.verify_for(presented, &read).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 4);
}
