//! A management call cancelled at any point (an HTTP client that
//! disconnects, a timeout) never leaves the store and its follow-ups
//! disagreeing: when the write happened, its audit event was recorded too.
//! Each call is cancelled at increasing timeouts until it completes.
#![cfg(feature = "sqlite")]

use std::time::Duration;

use keygate::{
    profiles, AccountId, ApiKeys, AuditKind, CreateKey, KeyId, MemoryAudit, Pepper, Rotation,
    SqliteStore,
};

struct Setup {
    api: ApiKeys,
    audit: MemoryAudit,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
    store.migrate().await.unwrap();
    let audit = MemoryAudit::new();
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(Pepper::new(1, [4u8; 32]).unwrap())
        .audit(audit.clone())
        .build()
        .unwrap();
    Setup {
        api,
        audit,
        _dir: dir,
    }
}

fn audited(audit: &MemoryAudit, id: &KeyId, what: fn(&AuditKind) -> bool) -> bool {
    audit
        .events()
        .iter()
        .any(|e| &e.key_id == id && what(&e.kind))
}

/// A new key to cancel a call on, and its id.
async fn fresh_key(s: &Setup, org: &AccountId) -> (keygate::NewKey, KeyId) {
    let key = s
        .api
        .operator()
        .create(org, CreateKey::new("k").bundle("sdk"))
        .await
        .unwrap();
    let id = key.info.id.clone();
    (key, id)
}

/// Lets a write that outlived its caller finish.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

/// Cancels `call` after `budget`; true when it finished in time.
async fn cancel_after<F: std::future::Future>(budget: Duration, call: F) -> bool {
    tokio::time::timeout(budget, call).await.is_ok()
}

/// Timeouts from 0 up in 25 µs steps, so some land inside the write.
fn budgets() -> impl Iterator<Item = Duration> {
    (0..2_000u64).map(|n| Duration::from_micros(n * 25))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_revoke_is_audited_whenever_it_happened() {
    let s = setup().await;
    let org = AccountId::new("org").unwrap();
    let mut cancelled_after_write = 0;
    for budget in budgets() {
        let (key, id) = fresh_key(&s, &org).await;
        let finished = cancel_after(budget, s.api.operator().revoke(&id)).await;
        settle().await;
        let revoked = s.api.verify(key.key.expose_secret()).await.is_err();
        let logged = audited(&s.audit, &id, |k| *k == AuditKind::Revoked);
        assert_eq!(
            revoked, logged,
            "budget {budget:?}: store and audit disagree"
        );
        if revoked && !finished {
            cancelled_after_write += 1;
        }
        if finished {
            eprintln!("revoke finished within {budget:?}");
            break;
        }
    }
    eprintln!("revokes cancelled after the write began: {cancelled_after_write}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_rotate_or_reset_is_audited_whenever_it_happened() {
    let s = setup().await;
    let org = AccountId::new("org").unwrap();
    for budget in budgets() {
        let (_, id) = fresh_key(&s, &org).await;
        let finished =
            cancel_after(budget, s.api.operator().rotate(&id, Rotation::Immediate)).await;
        settle().await;
        let info = s.api.operator().get(&id).await.unwrap();
        let logged = audited(&s.audit, &id, |k| matches!(k, AuditKind::Rotated { .. }));
        assert_eq!(
            info.replaced_by.is_some(),
            logged,
            "rotate, budget {budget:?}"
        );
        assert_eq!(
            info.revoked_at.is_some(),
            logged,
            "rotate, budget {budget:?}"
        );
        if finished {
            break;
        }
    }
    for budget in budgets() {
        let (key, id) = fresh_key(&s, &org).await;
        let finished = cancel_after(budget, s.api.operator().reset_secret(&id)).await;
        settle().await;
        let reset = s.api.verify(key.key.expose_secret()).await.is_err();
        let logged = audited(&s.audit, &id, |k| *k == AuditKind::SecretReset);
        assert_eq!(reset, logged, "reset, budget {budget:?}");
        if finished {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_is_audited_whenever_it_happened() {
    let s = setup().await;
    for (n, budget) in budgets().enumerate() {
        let org = AccountId::new(format!("org{n}")).unwrap();
        let finished = cancel_after(
            budget,
            s.api
                .operator()
                .create(&org, CreateKey::new("k").bundle("sdk")),
        )
        .await;
        settle().await;
        let stored = s
            .api
            .operator()
            .list(&org, keygate::ListOptions::default())
            .await
            .unwrap()
            .data;
        let logged: Vec<KeyId> = s
            .audit
            .events()
            .iter()
            .filter(|e| e.account == org && e.kind == AuditKind::Created)
            .map(|e| e.key_id.clone())
            .collect();
        let stored: Vec<KeyId> = stored.into_iter().map(|k| k.id).collect();
        assert_eq!(stored, logged, "create, budget {budget:?}");
        if finished {
            break;
        }
    }
}
