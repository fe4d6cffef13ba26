//! The authorization matrix: every management call, by every kind of actor
//! (an account acting with full rights, and a full-access key of that
//! account), against a target that is the actor's own account, its child, its
//! parent, its sibling or an unrelated account. Allowed cells succeed; every
//! denied cell answers exactly as a missing resource does (`NotFound`), and
//! the victim's keys keep working. The README's authorization table lists the
//! same cells. Runs on memory, SQLite and PostgreSQL.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;

use keygate::{
    profiles, AccountId, Actor, ApiKeys, CreateKey, Error, KeyId, KeyStore, ListOptions,
    MemoryStore, Pepper, Rotation,
};

/// How the actor stands to the target account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Owner,
    Parent,
    Child,
    Sibling,
    Unrelated,
}

impl Relation {
    const ALL: [Self; 5] = [
        Self::Owner,
        Self::Parent,
        Self::Child,
        Self::Sibling,
        Self::Unrelated,
    ];

    fn allowed(self) -> bool {
        matches!(self, Self::Owner | Self::Parent)
    }
}

/// The accounts: `p` with sub-accounts `p/c` and `p/s`, and an unrelated `u`.
struct World {
    api: ApiKeys,
    p: AccountId,
    c: AccountId,
    s: AccountId,
    u: AccountId,
}

impl World {
    async fn new(store: Arc<dyn KeyStore>) -> Self {
        let api = ApiKeys::builder(profiles::default())
            .store(store)
            .pepper(Pepper::new(1, [9u8; 32]).unwrap())
            .build()
            .unwrap();
        let p = AccountId::new("p").unwrap();
        let u = AccountId::new("u").unwrap();
        let op = api.operator();
        let c = op.create_sub_account(&p, "c").await.unwrap();
        let s = op.create_sub_account(&p, "s").await.unwrap();
        Self { api, p, c, s, u }
    }

    /// (actor account, target account) for a relation.
    fn pair(&self, relation: Relation) -> (&AccountId, &AccountId) {
        match relation {
            Relation::Owner => (&self.c, &self.c),
            Relation::Parent => (&self.p, &self.c),
            Relation::Child => (&self.c, &self.p),
            Relation::Sibling => (&self.s, &self.c),
            Relation::Unrelated => (&self.u, &self.c),
        }
    }

    /// The actor of `kind` for `account`: the account itself, or a fresh
    /// full-access key of it, verified.
    async fn actor(&self, account: &AccountId, as_key: bool) -> Actor {
        if !as_key {
            return Actor::Account(account.clone());
        }
        let key = self
            .api
            .operator()
            .create(account, CreateKey::new("actor").bundle("full_access"))
            .await
            .unwrap();
        Actor::Key(self.api.verify(key.key.expose_secret()).await.unwrap())
    }

    /// A fresh victim key in `account`, returning its id and plaintext.
    async fn victim(&self, account: &AccountId) -> (KeyId, String) {
        let key = self
            .api
            .operator()
            .create(account, CreateKey::new("victim").bundle("read_only"))
            .await
            .unwrap();
        (key.info.id, key.key.expose_secret().to_owned())
    }
}

/// What a refused cell must look like: the same answer as a missing resource.
async fn missing_answer(w: &World, actor: &Actor) -> Error {
    w.api
        .manage(actor.clone())
        .get(&KeyId::new("key_000000000000doesnotexist00"))
        .await
        .unwrap_err()
}

async fn run_matrix(store: Arc<dyn KeyStore>) {
    let w = World::new(store).await;
    for as_key in [false, true] {
        for relation in Relation::ALL {
            let (actor_account, target) = w.pair(relation);
            let actor = w.actor(actor_account, as_key).await;
            let keys = w.api.manage(actor.clone());
            let missing = missing_answer(&w, &actor).await;
            assert_eq!(missing, Error::NotFound);
            let cell = |call: &str| format!("{call} by {relation:?} (key actor: {as_key})");
            let check = |call: &str, result: Result<(), Error>| {
                if relation.allowed() {
                    assert_eq!(result, Ok(()), "{}", cell(call));
                } else {
                    assert_eq!(result, Err(missing.clone()), "{}", cell(call));
                }
            };

            let created = keys
                .create(target, CreateKey::new("new").bundle("read_only"))
                .await;
            check("create", created.as_ref().map(drop).map_err(Clone::clone));
            let listed = keys.list(target, ListOptions::default()).await;
            check("list", listed.as_ref().map(drop).map_err(Clone::clone));
            if let Ok(page) = &listed {
                assert!(page.data.iter().all(|k| &k.account == target));
            }

            let (id, plaintext) = w.victim(target).await;
            check("get", keys.get(&id).await.map(drop));
            check(
                "reset_secret",
                keys.reset_secret(&id).await.map(|new| {
                    assert_eq!(new.info.id, id);
                }),
            );
            if !relation.allowed() {
                // Refused: the victim's key is untouched and still works.
                let p = w.api.verify(&plaintext).await.expect("victim key verifies");
                assert_eq!(p.key_id(), &id, "{}", cell("reset_secret"));
            }

            let (id, plaintext) = w.victim(target).await;
            check(
                "rotate",
                keys.rotate(&id, Rotation::Immediate).await.map(drop),
            );
            if !relation.allowed() {
                assert!(w.api.verify(&plaintext).await.is_ok(), "{}", cell("rotate"));
            }

            let (id, plaintext) = w.victim(target).await;
            check("revoke", keys.revoke(&id).await);
            let verified = w.api.verify(&plaintext).await;
            assert_eq!(
                verified.is_ok(),
                !relation.allowed(),
                "{}",
                cell("revoke takes effect only when allowed")
            );

            // Sub-accounts under the target: the default profile allows one
            // level, so under a sub-account the allowed cells hit the depth
            // limit (403) while refused cells still answer NotFound.
            let sub = keys.create_sub_account(target, "h").await;
            match (relation.allowed(), target.is_top_level()) {
                (true, true) => assert!(sub.is_ok(), "{}", cell("create_sub_account")),
                (true, false) => assert_eq!(
                    sub,
                    Err(Error::SubAccountDepth { max: 1 }),
                    "{}",
                    cell("create_sub_account")
                ),
                (false, _) => {
                    assert_eq!(sub, Err(missing.clone()), "{}", cell("create_sub_account"))
                }
            }

            // Importing is for the operator only, whoever the target is.
            let kept = w.api.profile().formats()[0].generate();
            assert_eq!(
                keys.import(target, kept.expose_secret(), CreateKey::new("i"))
                    .await,
                Err(Error::OperatorOnly),
                "{}",
                cell("import")
            );
        }
    }

    // The unrelated account's sub-account creation under the victim: refused
    // with NotFound even when the victim's handle exists.
    let u = w.api.as_account(&w.u);
    assert_eq!(u.create_sub_account(&w.p, "c").await, Err(Error::NotFound));
    assert_eq!(
        u.create_sub_account(&w.p, "never-made").await,
        Err(Error::NotFound)
    );
    // Its own sub-account of the same name is a different account.
    let own = u.create_sub_account(&w.u, "c").await.unwrap();
    assert_ne!(own, w.c);
}

pub(crate) async fn matrix_on_memory() {
    run_matrix(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "sqlite")]
pub(crate) async fn matrix_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = keygate::SqliteStore::open(dir.path().join("keys.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    run_matrix(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
pub(crate) async fn matrix_on_postgres() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    run_matrix(pg.store()).await;
    pg.cleanup().await;
}

pub(crate) async fn operator_reaches_every_account() {
    let w = World::new(Arc::new(MemoryStore::new())).await;
    let op = w.api.operator();
    for account in [&w.p, &w.c, &w.s, &w.u] {
        let (id, _) = w.victim(account).await;
        op.get(&id).await.unwrap();
        op.rotate(&id, Rotation::Immediate).await.unwrap();
    }
}

pub(crate) async fn a_sub_account_never_reaches_its_parent_through_a_handle() {
    // The Mailjet/MailChannels takeover: a sub-account naming its parent as
    // its own "sub-account" gets a new account below itself, never the parent.
    let w = World::new(Arc::new(MemoryStore::new())).await;
    let parent_admin = w
        .api
        .operator()
        .create(&w.p, CreateKey::new("admin").bundle("full_access"))
        .await
        .unwrap();
    let child_key = w
        .api
        .operator()
        .create(&w.c, CreateKey::new("child").bundle("full_access"))
        .await
        .unwrap();
    let child = w.api.verify(child_key.key.expose_secret()).await.unwrap();
    let keys = w.api.as_key(&child);
    // Depth 1: a sub-account cannot nest at all.
    assert_eq!(
        keys.create_sub_account(child.account(), "p").await,
        Err(Error::SubAccountDepth { max: 1 })
    );
    assert_eq!(keys.get(&parent_admin.info.id).await, Err(Error::NotFound));
    assert_eq!(
        keys.reset_secret(&parent_admin.info.id).await.map(drop),
        Err(Error::NotFound)
    );
    assert_eq!(
        keys.list(&w.p, ListOptions::default()).await.map(drop),
        Err(Error::NotFound)
    );
    assert!(w.api.verify(parent_admin.key.expose_secret()).await.is_ok());
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::multi(2)) matrix_on_memory,
        tokio(Rt::multi(2)) matrix_on_sqlite,
        tokio(Rt::multi(2)) matrix_on_postgres,
        tokio(Rt::multi(2)) operator_reaches_every_account,
        tokio(Rt::multi(2)) a_sub_account_never_reaches_its_parent_through_a_handle,
    ]);
    support::harness::run(trials)
}
