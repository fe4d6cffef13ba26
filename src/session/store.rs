//! Where each user's session epoch is kept: [`SessionStore`] and its
//! backends. A token carries the epoch its user had when it was issued;
//! ending the user's sessions raises the epoch, and every verify reads the
//! current one, so a logout on one instance is refused on every other at once.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::store::StoreError;

/// The longest subject (user id) a session names, in bytes.
pub const MAX_SUBJECT_LEN: usize = 255;

/// Keeps one session epoch per subject (user). Implemented by
/// [`MemorySessionStore`], and by `SqliteStore` and `PostgresStore` on the
/// same tables as their keys (migration `20261125000004_keygate_sessions`).
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// The subject's current epoch: 0 until its sessions are first ended.
    async fn session_epoch(&self, subject: &str) -> Result<u64, StoreError>;

    /// Raises the subject's epoch by one, atomically, and returns the new
    /// value: every token issued before is refused from now on.
    async fn end_sessions(&self, subject: &str) -> Result<u64, StoreError>;
}

/// Session epochs in process memory: for one instance, or several services
/// in one process sharing it through an `Arc`.
#[derive(Default)]
pub struct MemorySessionStore {
    epochs: Mutex<HashMap<String, u64>>,
}

impl MemorySessionStore {
    /// An empty store: every subject at epoch 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySessionStore")
            .field("subjects", &self.epochs.lock().len())
            .finish()
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn session_epoch(&self, subject: &str) -> Result<u64, StoreError> {
        Ok(self.epochs.lock().get(subject).copied().unwrap_or(0))
    }

    async fn end_sessions(&self, subject: &str) -> Result<u64, StoreError> {
        let mut epochs = self.epochs.lock();
        let epoch = epochs.entry(subject.to_owned()).or_insert(0);
        *epoch += 1;
        Ok(*epoch)
    }
}

/// The one statement both SQL dialects share: raise or create the row.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const BUMP: &str = "INSERT INTO session_epochs (subject, epoch) VALUES ($1, 1) \
     ON CONFLICT (subject) DO UPDATE SET epoch = session_epochs.epoch + 1 RETURNING epoch";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
const READ: &str = "SELECT epoch FROM session_epochs WHERE subject = $1";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn epoch(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(crate::store::Cause::new("negative session epoch")))
}

/// Implements [`SessionStore`] on a SQL store with [`READ`] and [`BUMP`],
/// which both dialects accept as they are.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! sql_session_store {
    ($store:ty) => {
        #[async_trait]
        impl SessionStore for $store {
            async fn session_epoch(&self, subject: &str) -> Result<u64, StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(READ)
                    .bind(subject)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(crate::store::sql::map_err)?;
                row.map_or(Ok(0), |(e,)| epoch(e))
            }

            async fn end_sessions(&self, subject: &str) -> Result<u64, StoreError> {
                let (e,): (i64,) = sqlx::query_as(BUMP)
                    .bind(subject)
                    .fetch_one(self.pool())
                    .await
                    .map_err(crate::store::sql::map_err)?;
                epoch(e)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_session_store!(crate::store::SqliteStore);

#[cfg(feature = "postgres")]
sql_session_store!(crate::store::PostgresStore);
