//! Spending a key's usage credits for a request, through the store's atomic
//! [`spend_credits`](crate::KeyStore::spend_credits). Only keys with a usage
//! limit get here: the verify path checks the cached record first, so keys
//! without credits never touch the store for them.

use super::{ApiKeys, Principal};
use crate::error::AuthError;
use crate::store::Spend;

impl ApiKeys {
    /// Spends `cost` credits of the principal's key; what remains, or
    /// [`AuthError::UsageExceeded`] with the time to the next refill (`None`
    /// when the key's usage limit was removed meanwhile).
    pub(super) async fn spend_credits(
        &self,
        principal: &Principal,
        cost: u64,
    ) -> Result<Option<u64>, AuthError> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let spent = inner
            .store
            .spend_credits(principal.key_id(), cost, now)
            .await
            .map_err(|e| {
                tracing::warn!(target: "keygate", error = %e, "key store failed spending credits");
                AuthError::Unavailable
            })?;
        match spent {
            Spend::Spent { remaining } => Ok(Some(remaining)),
            Spend::Exhausted { next_refill } => Err(AuthError::UsageExceeded {
                retry_after: next_refill
                    .map(|at| std::time::Duration::try_from(at - now).unwrap_or_default()),
            }),
            // The limit was removed since this entry was read: nothing to spend.
            Spend::Unlimited => Ok(None),
        }
    }

    /// Spends `cost` of the key's credits and its identity's together (both
    /// or neither); what remains of each, or [`AuthError::UsageExceeded`]
    /// when either has too few.
    pub(super) async fn spend_shared(
        &self,
        principal: &Principal,
        cost: u64,
    ) -> Result<(Option<u64>, Option<u64>), AuthError> {
        let inner = &*self.inner;
        let Some(identity) = principal.identity_id() else {
            return Ok((self.spend_credits(principal, cost).await?, None));
        };
        let now = inner.clock.now();
        let spent = inner
            .store
            .spend_shared_credits(principal.key_id(), identity, cost, now)
            .await
            .map_err(|e| {
                tracing::warn!(target: "keygate", error = %e, "key store failed spending credits");
                AuthError::Unavailable
            })?;
        let left = |spend: Spend| -> Result<Option<u64>, AuthError> {
            match spend {
                Spend::Spent { remaining } => Ok(Some(remaining)),
                Spend::Exhausted { next_refill } => Err(AuthError::UsageExceeded {
                    retry_after: next_refill
                        .map(|at| std::time::Duration::try_from(at - now).unwrap_or_default()),
                }),
                _ => Ok(None),
            }
        };
        Ok((left(spent.key)?, left(spent.identity)?))
    }
}
