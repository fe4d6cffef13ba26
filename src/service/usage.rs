//! Spending a key's usage credits for a request, through the store's atomic
//! [`spend_credits`](crate::KeyStore::spend_credits). Only keys with a usage
//! limit get here: the verify path checks the cached record first, so keys
//! without credits never touch the store for them.
//!
//! With a shared limiter that keeps credits (a `RedisRateLimiter`), the
//! limiter spends them instead, so instances share them even with separate
//! stores; the store spends them only when the limiter keeps none.

use time::OffsetDateTime;

use super::{ApiKeys, Limiter, Principal};
use crate::error::AuthError;
use crate::store::Spend;

/// What remains after a spend, [`AuthError::UsageExceeded`] when it was
/// refused, `None` when there was no limit.
fn remaining(spend: Spend, now: OffsetDateTime) -> Result<Option<u64>, AuthError> {
    match spend {
        Spend::Spent { remaining } => Ok(Some(remaining)),
        Spend::Exhausted { next_refill } => Err(AuthError::UsageExceeded {
            retry_after: next_refill
                .map(|at| std::time::Duration::try_from(at - now).unwrap_or_default()),
        }),
        // The limit was removed since this entry was read: nothing to spend.
        _ => Ok(None),
    }
}

impl ApiKeys {
    /// Spends `cost` of the key's credits and of its identity's (when it has
    /// any) in the shared limiter: what remains of each, or `None` when
    /// there is no shared limiter or it keeps no credits (the store spends
    /// them then).
    pub(super) async fn spend_in_limiter(
        &self,
        principal: &Principal,
        cost: u64,
    ) -> Result<Option<(Option<u64>, Option<u64>)>, AuthError> {
        let inner = &*self.inner;
        let Limiter::Shared(shared) = &inner.limiter else {
            return Ok(None);
        };
        let record = principal.entry.record();
        let key = record
            .credits
            .as_ref()
            .map(|c| (record.lineage().as_str(), c));
        let identity = principal
            .entry
            .identity()
            .and_then(|i| Some((i.id.as_str(), i.credits.as_ref()?)));
        if key.is_none() && identity.is_none() {
            return Ok(None);
        }
        let now = inner.clock.now();
        let spent = shared
            .spend_credits(principal.entry.account(), key, identity, cost, now)
            .await
            .map_err(|e| {
                tracing::warn!(target: "keygate", error = %e, "rate limiter failed spending credits");
                AuthError::Unavailable
            })?;
        match spent {
            None => Ok(None),
            Some(spent) => Ok(Some((
                remaining(spent.key, now)?,
                remaining(spent.identity, now)?,
            ))),
        }
    }

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
        remaining(spent, now)
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
        Ok((remaining(spent.key, now)?, remaining(spent.identity, now)?))
    }
}
