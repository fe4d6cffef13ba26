//! Fresh stores for one test each.

use std::sync::Arc;

use keygate::{KeyStore, MemoryStore};

pub fn memory() -> Arc<dyn KeyStore> {
    Arc::new(MemoryStore::new())
}

/// A migrated store in a new temp file; keep the directory alive for the test.
#[cfg(feature = "sqlite")]
pub async fn sqlite_file() -> (Arc<dyn KeyStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = keygate::SqliteStore::open(dir.path().join("keys.db"))
        .await
        .expect("open sqlite file");
    store.migrate().await.expect("migrate");
    (Arc::new(store), dir)
}

#[cfg(feature = "sqlite")]
pub async fn sqlite_memory() -> Arc<dyn KeyStore> {
    Arc::new(
        keygate::SqliteStore::in_memory()
            .await
            .expect("in-memory sqlite"),
    )
}
