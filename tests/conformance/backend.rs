//! Fresh stores for one test each.

use std::sync::Arc;

use keygate::{CachedStore, KeyStore, MemoryStore};

pub fn memory() -> Arc<dyn KeyStore> {
    Arc::new(MemoryStore::new())
}

/// A cache in front of `inner`, with no change feed: the suite checks that
/// changes made through the cache are seen at once without one.
pub fn cached(inner: Arc<dyn KeyStore>) -> Arc<dyn KeyStore> {
    Arc::new(CachedStore::new(inner))
}

pub fn cached_memory() -> Arc<dyn KeyStore> {
    cached(memory())
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
