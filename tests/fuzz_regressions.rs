//! Inputs the fuzz targets in `fuzz/` found, kept as tests.

use keygate::{profiles, AccountId, ApiKeys, CreateKey, Metadata};

/// From `fuzz/` target `request_json`: an integer too large for 64 bits is
/// read as a float, and the float's text must read back as the same float,
/// or a key's metadata changes between the request and the stored row.
#[test]
fn metadata_numbers_survive_their_own_json() {
    let metadata = Metadata::from_json(r#"{"limit": 1055555555555555555555555550000}"#).unwrap();
    assert_eq!(Metadata::from_json(&metadata.to_json()).unwrap(), metadata);
    for text in [
        "0.1",
        "1e300",
        "2.2250738585072014e-308",
        "123456789012345678901234567890.5",
    ] {
        let m = Metadata::from_json(&format!(r#"{{"n": {text}}}"#)).unwrap();
        assert_eq!(Metadata::from_json(&m.to_json()).unwrap(), m, "{text}");
    }
}

/// The same through a SQL row: what a key is created with is what `get` reads back.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn metadata_numbers_are_stored_exactly() {
    let store = keygate::SqliteStore::in_memory().await.unwrap();
    let api = ApiKeys::builder(profiles::mailjawn())
        .store(store)
        .pepper(keygate::Pepper::new(1, [7u8; 32]).unwrap())
        .build()
        .unwrap();
    let org = AccountId::new("org_meta").unwrap();
    let metadata = Metadata::from_json(r#"{"limit": 1055555555555555555555555550000}"#).unwrap();
    let created = api
        .operator()
        .create(
            &org,
            CreateKey::new("m").bundle("sdk").metadata(metadata.clone()),
        )
        .await
        .unwrap();
    let info = api.operator().get(&created.info.id).await.unwrap();
    assert_eq!(info.metadata, metadata);
}
