//! Requirements from `shared/seeds/001_1096317fca88c73a.txt` (Mailjet API key and
//! secret key), checked against `profiles::mailjet()`.

use keygate::{profiles, AccountId, ApiKeys, AuthError, CreateKey, KeyLocation, ListOptions};

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

// "you will authenticate using your API Key and Secret key, much like you would use a
// username and password"; SMTP uses the same pair.
#[tokio::test]
async fn a_key_is_a_public_api_key_plus_a_secret_used_like_username_and_password() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let k = api
        .as_account(&acct("main"))
        .create(&acct("main"), CreateKey::new("Main key"))
        .await
        .unwrap();
    let public = k
        .key
        .public_key()
        .expect("pairs have a public key")
        .to_owned();
    let secret = k.key.expose_secret();
    assert_eq!(public.len(), 32);
    assert!(public.bytes().all(|b| b.is_ascii_hexdigit()));
    // As SMTP username/password:
    let p = api.verify_pair(&public, secret).await.unwrap();
    assert_eq!(p.key_id(), &k.info.id);
    // As HTTP Basic apikey:secret (decoded):
    api.verify(&format!("{public}:{secret}")).await.unwrap();
    assert_eq!(profiles::mailjet().key_locations(), [KeyLocation::Basic]);
    // The public key alone, or with a wrong secret, is not enough.
    let wrong = "0".repeat(32);
    assert_eq!(
        api.verify_pair(&public, &wrong).await.unwrap_err(),
        AuthError::Invalid
    );
    assert!(matches!(
        api.verify(&public).await.unwrap_err(),
        AuthError::Malformed { .. }
    ));
}

// "Your API Key is always accessible" / "Your Secret Key is displayed only once".
#[tokio::test]
async fn the_public_key_is_always_visible_the_secret_only_once() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let main = acct("main");
    let k = api
        .as_account(&main)
        .create(&main, CreateKey::new("Main key"))
        .await
        .unwrap();
    let public = k.key.public_key().unwrap().to_owned();
    let page = api
        .as_account(&main)
        .list(&main, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.data[0].public_key.as_deref(), Some(public.as_str()));
    let json = serde_json::to_string(&page).unwrap();
    assert!(json.contains(&public));
    assert!(!json.contains(k.key.expose_secret()));
    let got = serde_json::to_string(&api.as_account(&main).get(&k.info.id).await.unwrap()).unwrap();
    assert!(!got.contains(k.key.expose_secret()));
}

// "you can reset your API Secret Key"; "If you suspect your credentials have been
// compromised, reset your Secret Key immediately. Resetting your Secret Key requires
// updating the authentication for all active API connections."
#[tokio::test]
async fn resetting_the_secret_keeps_the_public_key_and_kills_the_old_secret_at_once() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let main = acct("main");
    let k = api
        .as_account(&main)
        .create(&main, CreateKey::new("Main key"))
        .await
        .unwrap();
    let public = k.key.public_key().unwrap().to_owned();
    let old_secret = k.key.expose_secret().to_owned();
    let reset = api
        .as_account(&main)
        .reset_secret(&k.info.id)
        .await
        .unwrap();
    assert_eq!(reset.key.public_key(), Some(public.as_str()));
    assert_eq!(reset.info.id, k.info.id);
    assert_ne!(reset.key.expose_secret(), old_secret);
    assert_eq!(
        api.verify_pair(&public, &old_secret).await.unwrap_err(),
        AuthError::Invalid
    );
    let p = api
        .verify_pair(&public, reset.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(p.key_id(), &k.info.id);
}

// "A subaccount is an account nested under your primary Mailjet account, identified by
// a different API key."
#[tokio::test]
async fn sub_accounts_have_their_own_api_keys() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let main = acct("main");
    let sub = api
        .as_account(&main)
        .create_sub_account(&main, "newsletters")
        .await
        .unwrap();
    assert_eq!(sub, acct("main/newsletters"));
    let main_key = api
        .as_account(&main)
        .create(&main, CreateKey::new("Main"))
        .await
        .unwrap();
    let sub_key = api
        .as_account(&main)
        .create(&sub, CreateKey::new("Newsletters"))
        .await
        .unwrap();
    assert_ne!(main_key.key.public_key(), sub_key.key.public_key());
    let p = api
        .verify_pair(
            sub_key.key.public_key().unwrap(),
            sub_key.key.expose_secret(),
        )
        .await
        .unwrap();
    assert_eq!(p.account(), &sub);
    // The parent sees the sub-account's keys; the sub-account's listing is its own.
    let listed = api
        .as_account(&main)
        .list(&sub, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    assert_eq!(listed.data[0].account, sub);
    let own = api
        .as_account(&main)
        .list(&main, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(own.data.len(), 1);
    assert_eq!(own.data[0].account, main);
}

// "it is recommended the Secret key be reset once every 90 days": keys may carry an
// expiry so a service can enforce a reset interval.
#[tokio::test]
async fn keys_can_expire_to_enforce_a_reset_interval() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let in_90_days = time::OffsetDateTime::now_utc() + time::Duration::days(90);
    let k = api
        .as_account(&acct("main"))
        .create(
            &acct("main"),
            CreateKey::new("Main key").expires_at(in_90_days),
        )
        .await
        .unwrap();
    assert_eq!(k.info.expires_at, Some(in_90_days));
}
