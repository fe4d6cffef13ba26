//! The serde types a request can carry: `CreateKey`, `KeyUpdate`, `Quota`,
//! `Metadata`, `Credits`, then creating and updating a key with what parsed.
//!
//! Asserts: no panic; `Quota` and `Metadata` round-trip through their JSON;
//! metadata stays within `MAX_METADATA_BYTES`; a key created from a parsed
//! request verifies, and an update either applies or is refused with an error.
#![no_main]

use keygate::{
    profiles, AccountId, ApiKeys, AuthError, CreateKey, Credits, KeyUpdate, Metadata, Quota,
    MAX_METADATA_BYTES,
};
use keygate_fuzz::RUNTIME;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = serde_json::from_str::<Quota>(text) {
        let json = serde_json::to_string(&q).expect("a parsed quota serializes");
        assert_eq!(serde_json::from_str::<Quota>(&json).unwrap(), q);
        assert!(q.limit() > 0 && q.burst() > 0);
        assert!(q.period() <= Quota::MAX_PERIOD);
    }
    if let Ok(m) = serde_json::from_str::<Metadata>(text) {
        let json = m.to_json();
        assert!(json.len() <= MAX_METADATA_BYTES);
        assert_eq!(Metadata::from_json(&json).unwrap(), m);
    }
    if let Ok(c) = serde_json::from_str::<Credits>(text) {
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Credits>(&json).unwrap(), c);
    }
    let create = serde_json::from_str::<CreateKey>(text).ok();
    let update = serde_json::from_str::<KeyUpdate>(text).ok();
    if create.is_none() && update.is_none() {
        return;
    }
    RUNTIME.block_on(async {
        let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
        let org = AccountId::new("org_fuzz").unwrap();
        let manager = api.operator();
        if let Some(request) = create {
            if let Ok(created) = manager.create(&org, request).await {
                // A key created already past its expiry is the one refusal allowed.
                match api.verify(created.key.expose_secret()).await {
                    Ok(_) | Err(AuthError::Expired) => {}
                    Err(e) => panic!("a created key does not verify: {e:?}"),
                }
            }
        }
        if let Some(update) = update {
            let base = manager
                .create(&org, CreateKey::new("base").bundle("sdk"))
                .await
                .unwrap();
            if let Ok(info) = manager.update(&base.info.id, update).await {
                assert_eq!(info.id, base.info.id);
            }
        }
    });
});
