//! Conformance cases for usage credits: exact atomic spends, lazy refill,
//! and the service's `verify_for` spending them. Run on every backend by
//! `main.rs` through `suite.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keygate::store::{KeyChange, KeyRecord, Spend};
use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, Credits, KeyId, KeyStore, KeyUpdate,
    ManualClock, Pepper, Refill, StoreError,
};

use crate::support::{at, key_record};

fn record(n: u32, credits: Option<Credits>) -> KeyRecord {
    let mut digest = [0u8; 32];
    digest[..4].copy_from_slice(&n.to_be_bytes());
    digest[31] = 0xc3;
    KeyRecord {
        bundle: Some("sdk".into()),
        credits,
        ..key_record(
            KeyId::new(format!("key_c{n:05}")),
            AccountId::new("org_credits").unwrap(),
            format!("key {n}"),
            format!("lc{n:06}"),
            keygate::hash::SecretHash::from_parts(1, digest),
        )
    }
}

async fn insert(store: &Arc<dyn KeyStore>, r: &KeyRecord) {
    store.insert_key(r.clone(), None, at(0)).await.unwrap();
}

async fn credits_of(store: &Arc<dyn KeyStore>, id: &KeyId) -> Option<Credits> {
    store.get_key(id).await.unwrap().unwrap().record().credits
}

/// Spends `cost` `n` times at once at `now`; the remaining counts of the
/// spends that succeeded, and how many were refused.
async fn spend_concurrently(
    store: &Arc<dyn KeyStore>,
    id: &KeyId,
    n: usize,
    cost: u64,
    now: time::OffsetDateTime,
) -> (Vec<u64>, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (store, id) = (Arc::clone(store), id.clone());
            tokio::spawn(async move { store.spend_credits(&id, cost, now).await.unwrap() })
        })
        .collect();
    let (mut spent, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Spend::Spent { remaining } => spent.push(remaining),
            Spend::Exhausted { .. } => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    spent.sort_unstable();
    (spent, refused)
}

// ----- the store ---------------------------------------------------------------

pub async fn credits_round_trip_and_change_through_update(store: Arc<dyn KeyStore>) {
    let credits = Credits::new(40).with_refill(Refill::monthly(50), at(5));
    let r = record(1, Some(credits));
    insert(&store, &r).await;
    assert_eq!(credits_of(&store, &r.id).await, Some(credits));
    let plain = record(2, None);
    insert(&store, &plain).await;
    assert_eq!(credits_of(&store, &plain.id).await, None);
    assert_eq!(
        store.spend_credits(&plain.id, 1, at(9)).await,
        Ok(Spend::Unlimited)
    );
    assert_eq!(
        store.spend_credits(&KeyId::new("key_none"), 1, at(9)).await,
        Err(StoreError::NotFound)
    );

    let reset = Credits::new(3);
    let updated = store
        .update_key(&r.id, &KeyChange::default().with_credits(Some(reset)))
        .await
        .unwrap();
    assert_eq!(updated.credits, Some(reset));
    assert_eq!(credits_of(&store, &r.id).await, Some(reset));
    // An update of another field keeps what a spend left.
    store.spend_credits(&r.id, 2, at(10)).await.unwrap();
    store
        .update_key(&r.id, &KeyChange::default().with_name("renamed"))
        .await
        .unwrap();
    assert_eq!(credits_of(&store, &r.id).await.unwrap().remaining, 1);
    store
        .update_key(&r.id, &KeyChange::default().with_credits(None))
        .await
        .unwrap();
    assert_eq!(
        store.spend_credits(&r.id, 1, at(11)).await,
        Ok(Spend::Unlimited)
    );
}

pub async fn concurrent_spends_admit_exactly_the_credits(store: Arc<dyn KeyStore>) {
    let r = record(3, Some(Credits::new(25)));
    insert(&store, &r).await;
    let (spent, refused) = spend_concurrently(&store, &r.id, 60, 1, at(1)).await;
    // Exactly 25 succeed, each seeing a different remaining count.
    assert_eq!(spent, (0..25).collect::<Vec<u64>>());
    assert_eq!(refused, 35);
    assert_eq!(credits_of(&store, &r.id).await.unwrap().remaining, 0);
    assert_eq!(
        store.spend_credits(&r.id, 1, at(2)).await,
        Ok(Spend::Exhausted { next_refill: None })
    );
}

pub async fn refill_is_lazy_keeps_its_phase_and_applies_once_under_races(store: Arc<dyn KeyStore>) {
    let every = Refill::every(3, Duration::from_millis(100));
    let r = record(4, Some(Credits::new(2).with_refill(every, at(0))));
    insert(&store, &r).await;
    let spend = |cost, t| {
        let (store, id) = (Arc::clone(&store), r.id.clone());
        async move { store.spend_credits(&id, cost, at(t)).await.unwrap() }
    };
    assert_eq!(spend(1, 10).await, Spend::Spent { remaining: 1 });
    assert_eq!(spend(1, 20).await, Spend::Spent { remaining: 0 });
    assert_eq!(
        spend(1, 99).await,
        Spend::Exhausted {
            next_refill: Some(at(100))
        }
    );
    // 3.5 intervals later: one refill to 3 (not 4 × 3), phase kept at 300.
    assert_eq!(spend(1, 350).await, Spend::Spent { remaining: 2 });
    let stored = credits_of(&store, &r.id).await.unwrap();
    assert_eq!((stored.remaining, stored.refilled_at), (2, at(300)));
    // A cost no refill can cover is never admitted, and says so.
    assert_eq!(spend(4, 360).await, Spend::Exhausted { next_refill: None });

    // Many spends racing at a due refill: it applies once.
    let (spent, refused) = spend_concurrently(&store, &r.id, 12, 1, at(420)).await;
    assert_eq!(spent, vec![0, 1, 2]);
    assert_eq!(refused, 9);
    let stored = credits_of(&store, &r.id).await.unwrap();
    assert_eq!((stored.remaining, stored.refilled_at), (0, at(400)));
}

// ----- through the service ------------------------------------------------------

fn service(store: Arc<dyn KeyStore>) -> (ApiKeys, ManualClock) {
    let clock = ManualClock::starting_at(at(0));
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(Pepper::new(1, [44u8; 32]).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    (api, clock)
}

pub async fn service_verify_for_spends_credits_and_answers_usage_exceeded(
    store: Arc<dyn KeyStore>,
) {
    let (api, clock) = service(store);
    let org = AccountId::new("org_svc_credits").unwrap();
    let hourly = Refill::every(3, Duration::from_secs(3600));
    let key = api
        .operator()
        .create(
            &org,
            CreateKey::new("trial")
                .bundle("sdk")
                .credits(3)
                .refill(hourly),
        )
        .await
        .unwrap();
    let credits = key.info.credits.unwrap();
    assert_eq!((credits.remaining, credits.refill), (3, Some(hourly)));
    let presented = key.key.expose_secret();
    let read = api.operation("read").unwrap();

    // Plain verify and a zero-cost operation spend nothing.
    api.verify(presented).await.unwrap();
    let free = api.verify_for(presented, &read.clone().with_cost(0)).await;
    assert_eq!(free.unwrap().credits_remaining(), Some(3));
    let p = api.verify_for(presented, &read).await.unwrap();
    assert_eq!(p.credits_remaining(), Some(2));
    let p = api
        .verify_for(presented, &read.clone().with_cost(2))
        .await
        .unwrap();
    assert_eq!(p.credits_remaining(), Some(0));
    clock.advance(Duration::from_secs(600));
    let err = api.verify_for(presented, &read).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::UsageExceeded {
            retry_after: Some(Duration::from_secs(3000))
        }
    );
    assert_eq!((err.status(), err.code()), (429, "usage_exceeded"));
    let info = api.operator().get(&key.info.id).await.unwrap();
    assert_eq!(info.credits.unwrap().remaining, 0);

    // The refill comes lazily at the hour.
    clock.advance(Duration::from_secs(3000));
    let p = api.verify_for(presented, &read).await.unwrap();
    assert_eq!(p.credits_remaining(), Some(2));

    // An update resets the credits without reissuing the key.
    api.operator()
        .update(&key.info.id, KeyUpdate::new().credits(1, None))
        .await
        .unwrap();
    api.verify_for(presented, &read).await.unwrap();
    assert_eq!(
        api.verify_for(presented, &read).await.unwrap_err(),
        AuthError::UsageExceeded { retry_after: None }
    );
    api.operator()
        .update(&key.info.id, KeyUpdate::new().unlimited())
        .await
        .unwrap();
    let p = api.verify_for(presented, &read).await.unwrap();
    assert_eq!(p.credits_remaining(), None);
}

pub async fn service_concurrent_requests_admit_exactly_the_credits(store: Arc<dyn KeyStore>) {
    let (api, _) = service(store);
    let org = AccountId::new("org_svc_race").unwrap();
    let key = api
        .operator()
        .create(&org, CreateKey::new("trial").bundle("sdk").credits(20))
        .await
        .unwrap();
    // An operation without a rate-limit class, so only credits refuse.
    let op = keygate::Operation::unrestricted();
    let presented = key.key.expose_secret().to_owned();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (api, op, presented) = (api.clone(), op.clone(), presented.clone());
            tokio::spawn(async move { api.verify_for(&presented, &op).await })
        })
        .collect();
    let mut left = BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => assert!(left.insert(p.credits_remaining().unwrap())),
            Err(AuthError::UsageExceeded { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(left, (0..20).collect());
    assert_eq!(refused, 30);
}

/// A key never grants more than it holds: a key with a usage limit hands out
/// at most what it has left, never a more generous refill, never no limit.
pub async fn service_a_key_with_credits_grants_no_more_than_it_holds(store: Arc<dyn KeyStore>) {
    let (api, _) = service(store);
    let org = AccountId::new("org_svc_grant").unwrap();
    let daily = Refill::daily(10);
    let admin = api
        .operator()
        .create(
            &org,
            CreateKey::new("limited admin")
                .bundle("full_access")
                .credits(10)
                .refill(daily),
        )
        .await
        .unwrap();
    let actor = api.verify(admin.key.expose_secret()).await.unwrap();
    let manager = api.as_key(&actor);
    // Asking for nothing inherits the actor's terms.
    let inherited = manager
        .create(&org, CreateKey::new("child").bundle("sdk"))
        .await
        .unwrap();
    let credits = inherited.info.credits.unwrap();
    assert_eq!((credits.remaining, credits.refill), (10, Some(daily)));
    for refused in [
        CreateKey::new("more").bundle("sdk").credits(11),
        CreateKey::new("faster")
            .bundle("sdk")
            .credits(5)
            .refill(Refill::every(10, Duration::from_secs(60))),
        CreateKey::new("bigger")
            .bundle("sdk")
            .credits(5)
            .refill(Refill::daily(11)),
    ] {
        let err = manager.create(&org, refused).await.unwrap_err();
        assert_eq!(err, keygate::Error::InsufficientScope);
    }
    let fewer = manager
        .create(&org, CreateKey::new("fewer").bundle("sdk").credits(3))
        .await
        .unwrap();
    assert_eq!(fewer.info.credits.unwrap().remaining, 3);
    let lift = manager
        .update(&fewer.info.id, KeyUpdate::new().unlimited())
        .await;
    assert_eq!(lift.unwrap_err(), keygate::Error::InsufficientScope);
    // The operator may.
    api.operator()
        .update(&fewer.info.id, KeyUpdate::new().unlimited())
        .await
        .unwrap();
}
