//! Pepper rotation that finishes: a key that verifies under an older pepper
//! is re-hashed under the current one (written behind, conditionally), and
//! the store counts the keys each pepper version still holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use keygate::hash::Hasher;
use keygate::store::Rehash;
use keygate::{profiles, AccountId, ApiKeys, AuthError, CreateKey, KeyStore, ManualClock, Pepper};

use crate::support::at;

fn pepper(version: u32) -> Pepper {
    Pepper::new(version, [version as u8 + 40; 32]).unwrap()
}

fn service(store: &Arc<dyn KeyStore>, hasher: Hasher) -> ApiKeys {
    ApiKeys::builder(profiles::mailjawn())
        .store(Arc::clone(store))
        .hasher(hasher)
        .clock(ManualClock::starting_at(at(0)))
        .build()
        .unwrap()
}

fn counts(pairs: &[(u32, u64)]) -> BTreeMap<u32, u64> {
    pairs.iter().copied().collect()
}

pub async fn rehash_on_verify_lets_the_old_pepper_retire(store: Arc<dyn KeyStore>) {
    let org = AccountId::new("org_pep").unwrap();
    let v1 = service(&store, Hasher::new(pepper(1)));
    let used = v1
        .operator()
        .create(&org, CreateKey::new("used").bundle("sdk"))
        .await
        .unwrap();
    let unused = v1
        .operator()
        .create(&org, CreateKey::new("unused").bundle("sdk"))
        .await
        .unwrap();
    let revoked = v1
        .operator()
        .create(&org, CreateKey::new("revoked").bundle("sdk"))
        .await
        .unwrap();
    v1.operator().revoke(&revoked.info.id).await.unwrap();
    assert_eq!(v1.keys_per_pepper().await.unwrap(), counts(&[(1, 2)]));

    // Pepper 2 becomes current; pepper 1 is kept for verification.
    let v2 = service(
        &store,
        Hasher::new(pepper(2)).with_previous(pepper(1)).unwrap(),
    );
    let made_under_2 = v2
        .operator()
        .create(&org, CreateKey::new("new").bundle("sdk"))
        .await
        .unwrap();
    assert_eq!(
        v2.keys_per_pepper().await.unwrap(),
        counts(&[(1, 2), (2, 1)])
    );
    v2.verify(used.key.expose_secret()).await.unwrap();
    v2.verify(used.key.expose_secret()).await.unwrap();
    // A key already under the current pepper queues nothing.
    v2.verify(made_under_2.key.expose_secret()).await.unwrap();
    // Written behind: nothing changed before the flush.
    assert_eq!(
        v2.keys_per_pepper().await.unwrap(),
        counts(&[(1, 2), (2, 1)])
    );
    assert_eq!(v2.flush_rehashes().await.unwrap(), 1);
    assert_eq!(v2.flush_rehashes().await.unwrap(), 0);
    assert_eq!(
        v2.keys_per_pepper().await.unwrap(),
        counts(&[(1, 1), (2, 2)])
    );

    // With pepper 1 removed, the used key verifies; the never-used one
    // cannot (only reissuing re-hashes it), and the status said so.
    let only_2 = service(&store, Hasher::new(pepper(2)));
    only_2.verify(used.key.expose_secret()).await.unwrap();
    only_2
        .verify(made_under_2.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(
        only_2.verify(unused.key.expose_secret()).await.unwrap_err(),
        AuthError::Invalid
    );
    // Rotating the never-used key under pepper 2 retires pepper 1 entirely.
    v2.operator()
        .rotate(&unused.info.id, keygate::Rotation::Immediate)
        .await
        .unwrap();
    assert_eq!(only_2.keys_per_pepper().await.unwrap(), counts(&[(2, 3)]));
    assert_eq!(
        only_2
            .verify(revoked.key.expose_secret())
            .await
            .unwrap_err(),
        AuthError::Invalid
    );
}

/// Two instances verify the same old key and both flush: the first write
/// wins, the second changes nothing, and the key still verifies everywhere.
pub async fn racing_rehashes_change_a_key_once(store: Arc<dyn KeyStore>) {
    let org = AccountId::new("org_race").unwrap();
    let v1 = service(&store, Hasher::new(pepper(1)));
    let key = v1
        .operator()
        .create(&org, CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let a = service(
        &store,
        Hasher::new(pepper(2)).with_previous(pepper(1)).unwrap(),
    );
    let b = service(
        &store,
        Hasher::new(pepper(2)).with_previous(pepper(1)).unwrap(),
    );
    a.verify(key.key.expose_secret()).await.unwrap();
    b.verify(key.key.expose_secret()).await.unwrap();
    let (ra, rb) = tokio::join!(a.flush_rehashes(), b.flush_rehashes());
    assert_eq!(ra.unwrap() + rb.unwrap(), 1);
    assert_eq!(a.keys_per_pepper().await.unwrap(), counts(&[(2, 1)]));
    a.verify(key.key.expose_secret()).await.unwrap();
    b.verify(key.key.expose_secret()).await.unwrap();
    assert_eq!(b.flush_rehashes().await.unwrap(), 0);
    service(&store, Hasher::new(pepper(2)))
        .verify(key.key.expose_secret())
        .await
        .unwrap();
}

/// The store's conditional update: a re-hash whose `from` no longer
/// matches (the secret was reset, or another instance won) changes nothing,
/// and neither does one for a revoked or unknown key.
pub async fn rehash_changes_only_keys_that_still_have_the_old_hash(store: Arc<dyn KeyStore>) {
    let org = AccountId::new("org_cond").unwrap();
    let v1 = service(&store, Hasher::new(pepper(1)));
    let kept = v1
        .operator()
        .create(&org, CreateKey::new("a").bundle("sdk"))
        .await
        .unwrap();
    let gone = v1
        .operator()
        .create(&org, CreateKey::new("b").bundle("sdk"))
        .await
        .unwrap();
    v1.operator().revoke(&gone.info.id).await.unwrap();
    let h1 = Hasher::new(pepper(1));
    let h2 = Hasher::new(pepper(2));
    let secret = kept.key.expose_secret();
    let stale = Rehash {
        id: kept.info.id.clone(),
        from: h1.hash("not the secret"),
        to: h2.hash(secret),
    };
    let revoked = Rehash {
        id: gone.info.id.clone(),
        from: h1.hash(gone.key.expose_secret()),
        to: h2.hash(gone.key.expose_secret()),
    };
    let unknown = Rehash {
        id: keygate::KeyId::new("key_unknown"),
        from: h1.hash("x"),
        to: h2.hash("x"),
    };
    assert_eq!(
        store
            .rehash_secrets(&[stale, revoked, unknown])
            .await
            .unwrap(),
        0
    );
    let good = Rehash {
        id: kept.info.id.clone(),
        from: h1.hash(secret),
        to: h2.hash(secret),
    };
    assert_eq!(
        store
            .rehash_secrets(std::slice::from_ref(&good))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.rehash_secrets(&[good]).await.unwrap(), 0);
    let found = store.get_key(&kept.info.id).await.unwrap().unwrap();
    assert_eq!(found.record().hash.version(), 2);
    assert!(h2.verify(secret, &found.record().hash));
}
