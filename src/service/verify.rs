//! The verify hot path: parse, look up, compare in constant time, check
//! revocation and expiry, take a rate-limit token, check scopes. Nothing here
//! allocates beyond the store's answer, and malformed input never reaches the
//! store.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{ApiKeys, CredentialKind, Limiter, Operation, Principal, SWEEP_EVERY};
use crate::error::{AuthError, Error, InvalidRequest};
use crate::key::{KeyFormat, MalformedReason, ParsedKey};
use crate::ratelimit::{Decision, LocalRateLimiter, Quota};
use crate::scope::{Requirement, ScopeSet};
use crate::store::{from_unix_nanos, KeyEntry, KeyId};
use crate::telemetry;

impl ApiKeys {
    /// Parses a presented key against the profile's formats, without I/O.
    /// Pairs are given as `public:secret`.
    pub fn parse<'a>(&self, presented: &'a str) -> Result<ParsedKey<'a>, AuthError> {
        let formats = &self.inner.profile.formats;
        // Most profiles have one format: its reason is the one reported.
        if let [format] = formats.as_slice() {
            return format
                .parse(presented)
                .map_err(|reason| AuthError::Malformed { reason });
        }
        let mut reason = MalformedReason::Empty;
        for (i, format) in formats.iter().enumerate() {
            match format.parse(presented) {
                Ok(c) => return Ok(c.with_format(i)),
                Err(r) => {
                    // Report the most specific reason: one past the prefix check wins.
                    if i == 0 || !matches!(r, MalformedReason::Prefix | MalformedReason::Length) {
                        reason = r;
                    }
                }
            }
        }
        Err(AuthError::Malformed { reason })
    }

    /// Verifies a presented key and returns who it belongs to.
    ///
    /// Malformed input is rejected before any hashing or store access; an
    /// unreachable store is [`AuthError::Unavailable`], never success.
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.verify", skip_all,
        fields(profile = %self.inner.profile.name, kind = "api_key", class = "none",
               outcome = tracing::field::Empty, key_id = tracing::field::Empty,
               account = tracing::field::Empty)))]
    pub async fn verify(&self, presented: &str) -> Result<Principal, AuthError> {
        let result = self.verify_key(presented).await;
        telemetry::verification(&self.inner.labels, CredentialKind::ApiKey, None, &result);
        result
    }

    /// [`verify`](Self::verify) without recording it.
    async fn verify_key(&self, presented: &str) -> Result<Principal, AuthError> {
        let credential = self.parse(presented)?;
        self.verify_credential(credential).await
    }

    /// Verifies a key pair given as two values (e.g. SMTP username and password).
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.verify", skip_all,
        fields(profile = %self.inner.profile.name, kind = "api_key", class = "none",
               outcome = tracing::field::Empty, key_id = tracing::field::Empty,
               account = tracing::field::Empty)))]
    pub async fn verify_pair(&self, public: &str, secret: &str) -> Result<Principal, AuthError> {
        let result = self.verify_pair_unrecorded(public, secret).await;
        telemetry::verification(&self.inner.labels, CredentialKind::ApiKey, None, &result);
        result
    }

    async fn verify_pair_unrecorded(
        &self,
        public: &str,
        secret: &str,
    ) -> Result<Principal, AuthError> {
        let mut reason = MalformedReason::Prefix;
        for (i, format) in self.inner.profile.formats.iter().enumerate() {
            if let KeyFormat::Pair(p) = format {
                match p.parse_parts(public, secret) {
                    Ok(c) => return self.verify_credential(c.with_format(i)).await,
                    Err(r) => reason = r,
                }
            }
        }
        Err(AuthError::Malformed { reason })
    }

    /// Verifies a key already parsed with [`parse`](Self::parse).
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.verify", skip_all,
        fields(profile = %self.inner.profile.name, kind = "api_key", class = "none",
               outcome = tracing::field::Empty, key_id = tracing::field::Empty,
               account = tracing::field::Empty)))]
    pub async fn verify_parsed(&self, credential: ParsedKey<'_>) -> Result<Principal, AuthError> {
        let result = self.verify_credential(credential).await;
        telemetry::verification(&self.inner.labels, CredentialKind::ApiKey, None, &result);
        result
    }

    /// [`verify_parsed`](Self::verify_parsed) without recording it.
    async fn verify_credential(&self, credential: ParsedKey<'_>) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        let secret = credential.expose_secret();
        let mut accept = |e: &KeyEntry| inner.hasher.verify(secret, e.hash());
        // From memory when the store can answer so (no allocation), else
        // through the store's future.
        let found = match inner.store.find_now(credential.lookup(), &mut accept) {
            Some(found) => found,
            None => inner
                .store
                .find_by_lookup(credential.lookup())
                .await
                .map_err(|e| {
                    tracing::warn!(target: "keygate", error = %e, "key store failed during verify");
                    AuthError::Unavailable
                })?
                .into_iter()
                .find(|e| accept(e)),
        };
        self.principal_for(found, secret)
    }

    /// The checks after the store's answer `found` for a presented `secret`:
    /// revocation, disabling, expiry; then the last-used stamp and the
    /// principal with its compiled scopes.
    // Inlined so the principal is built in the caller's future, not
    // returned through a copy.
    #[inline(always)]
    fn principal_for(
        &self,
        found: Option<Arc<KeyEntry>>,
        secret: &str,
    ) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        let entry = found.ok_or(AuthError::Invalid)?;
        // One clock read, as integer nanoseconds (see `Clock::unix_nanos`).
        let now = inner.clock.unix_nanos();
        if entry.is_revoked() {
            return Err(AuthError::Revoked);
        }
        if entry.is_disabled() {
            return Err(AuthError::Disabled);
        }
        if entry.expired_at(now) {
            return Err(AuthError::Expired);
        }
        if self.needs_rehash(entry.hash().version()) {
            self.queue_rehash(&entry, secret);
        }
        if entry.touch_at(now) && inner.store.needs_last_used_flush() {
            inner
                .pending
                .lock()
                .insert(entry.id().clone(), from_unix_nanos(now));
        }
        let scopes = entry.compiled_scopes(|| {
            inner
                .profile
                .catalog
                .compile_grant(entry.bundle(), entry.scopes())
                .unwrap_or_else(|e| {
                    tracing::warn!(target: "keygate", key_id = %entry.id(), error = %e,
                        "stored scopes no longer compile; granting none");
                    ScopeSet::EMPTY
                })
        });
        Ok(Principal {
            entry,
            scopes,
            rate_limit: None,
            charged: None,
            credits: None,
            identity_credits: None,
            issuer: self.id(),
            kind: super::CredentialKind::ApiKey,
            subject: None,
        })
    }

    /// The operation for a named class (e.g. `send`, `mcp`). A profile without
    /// rate limits accepts any name and limits nothing; otherwise an unknown
    /// name is an error, so a typo cannot switch limiting off.
    pub fn operation(&self, class: &str) -> Result<Operation, Error> {
        let policy = &self.inner.profile.rate_limits;
        if policy.is_empty() {
            return Ok(Operation::unrestricted().with_catalog(&self.inner.catalog));
        }
        let index = policy
            .index_of(class)
            .ok_or_else(|| InvalidRequest::UnknownClass(class.to_owned()))?;
        Ok(Operation {
            class: Some((index, class.to_owned())),
            requirement: None,
            cost: 1,
            catalog: Some(Arc::clone(&self.inner.catalog)),
        })
    }

    /// The operation an HTTP method falls into by default (GET → `read`,
    /// POST → `write` for MailJawn). A method no class names falls into the
    /// most restrictive method class ([`RatePolicy::class_for_method`](crate::RatePolicy::class_for_method)),
    /// never unlimited; only a profile without method classes leaves it
    /// unlimited.
    pub fn operation_for_method(&self, method: &str) -> Operation {
        let policy = &self.inner.profile.rate_limits;
        Operation {
            class: policy
                .class_for_method(method)
                .and_then(|i| Some((i, policy.get(i)?.name().to_owned()))),
            requirement: None,
            cost: 1,
            catalog: Some(Arc::clone(&self.inner.catalog)),
        }
    }

    /// Verifies a key, checks the operation's scopes, then takes one
    /// rate-limit token from its bucket for the operation's class (a refused
    /// request spends no token).
    ///
    /// Over the limit is [`AuthError::RateLimited`] (429) with the decision for
    /// the response headers; an unreachable shared limiter is
    /// [`AuthError::Unavailable`] (503). On success the decision is on the
    /// principal ([`Principal::rate_limit`]).
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.verify", skip_all,
        fields(profile = %self.inner.profile.name, kind = "api_key",
               class = operation.class.as_ref().map_or("none", |(_, c)| c.as_str()),
               outcome = tracing::field::Empty, key_id = tracing::field::Empty,
               account = tracing::field::Empty)))]
    pub async fn verify_for(
        &self,
        presented: &str,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        let result = match self.verify_key(presented).await {
            Ok(principal) => self.admit(principal, operation).await,
            Err(e) => Err(e),
        };
        let class = operation.class.as_ref().map(|(i, _)| *i);
        telemetry::verification(&self.inner.labels, CredentialKind::ApiKey, class, &result);
        result
    }

    /// [`verify_for`](Self::verify_for) for an already verified principal:
    /// takes the rate-limit token and checks scopes.
    pub async fn admit(
        &self,
        principal: Principal,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        let principal = match &self.inner.limiter {
            Limiter::Local(local) => self.charge_local(principal, operation, local)?,
            Limiter::Shared(_) => self.charge_shared(principal, operation).await?,
        };
        // Most keys have no usage limit: they spend nothing and never reach
        // the spending code, whose future lives on the heap so that every
        // other request's future stays small (it is moved into the caller's
        // future, and into the HTTP layer's box).
        if !Self::spends_credits(&principal.entry, operation) {
            return Ok(principal);
        }
        Box::pin(self.admit_credits(principal, operation)).await
    }

    /// The scope check and the rate-limit tokens of [`admit`](Self::admit)
    /// on a shared limiter.
    async fn charge_shared(
        &self,
        mut principal: Principal,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        // Scopes first: a request the key may not make spends no token.
        if let Some(req) = &operation.requirement {
            principal.check(req)?;
        }
        if let Some((index, name)) = &operation.class {
            let decision = self.take_token(&principal.entry, *index, name).await?;
            if !decision.allowed {
                telemetry::rate_limited(&self.inner.labels, *index);
                return Err(AuthError::RateLimited { decision });
            }
            // Then the identity's shared bucket, for a class it limits: a key
            // over its own limit never takes a token its siblings share. The
            // stricter answer is the one reported.
            let mut reported = decision;
            if let Some(identity) = principal.entry.identity() {
                if let Some(quota) = identity.quota(name) {
                    let shared = self
                        .take_identity_token(identity, *index, name, quota)
                        .await?;
                    if !shared.allowed {
                        return Err(AuthError::RateLimited { decision: shared });
                    }
                    if shared.remaining < reported.remaining {
                        reported = shared;
                    }
                }
            }
            principal.rate_limit = Some(reported);
            principal.charged = Some(*index);
        }
        Ok(principal)
    }

    /// The scope check and the rate-limit tokens of [`admit`](Self::admit)
    /// on the in-process limiter, which never waits: the same steps as
    /// [`charge_shared`](Self::charge_shared), without a future.
    #[inline(always)]
    fn charge_local(
        &self,
        mut principal: Principal,
        operation: &Operation,
        local: &LocalRateLimiter,
    ) -> Result<Principal, AuthError> {
        if let Some(req) = &operation.requirement {
            principal.check(req)?;
        }
        if let Some((index, name)) = &operation.class {
            let quota = self
                .quota_of(principal.entry.rate_limits(), *index, name)
                .ok_or(AuthError::Unavailable)?;
            let decision = self.take_local_token(local, &principal.entry, *index, quota)?;
            if !decision.allowed {
                telemetry::rate_limited(&self.inner.labels, *index);
                return Err(AuthError::RateLimited { decision });
            }
            let mut reported = decision;
            if let Some(identity) = principal.entry.identity() {
                if let Some(quota) = identity.quota(name) {
                    let shared = self.take_local_identity_token(local, identity, *index, quota)?;
                    if !shared.allowed {
                        return Err(AuthError::RateLimited { decision: shared });
                    }
                    if shared.remaining < reported.remaining {
                        reported = shared;
                    }
                }
            }
            principal.rate_limit = Some(reported);
            principal.charged = Some(*index);
        }
        Ok(principal)
    }

    /// True when admitting `entry` for `operation` spends usage credits
    /// (through the store or the shared limiter).
    fn spends_credits(entry: &KeyEntry, operation: &Operation) -> bool {
        operation.cost != 0
            && (entry.credits().is_some() || entry.identity().is_some_and(|i| i.credits.is_some()))
    }

    /// [`verify_for`](Self::verify_for) when it can finish without waiting:
    /// the in-process limiter, a store that answers from memory and a key
    /// that spends no credits. `None`, before anything with an effect was
    /// done, when it cannot; the caller then awaits `verify_for`.
    #[cfg(feature = "tower")]
    pub(crate) fn verify_for_now(
        &self,
        presented: &str,
        operation: &Operation,
    ) -> Option<Result<Principal, AuthError>> {
        // With spans on and a subscriber that wants them, `verify_for`
        // opens the span this would skip.
        #[cfg(feature = "spans")]
        if tracing::span_enabled!(tracing::Level::INFO) {
            return None;
        }
        let inner = &*self.inner;
        let Limiter::Local(local) = &inner.limiter else {
            return None;
        };
        let result = match self.parse(presented) {
            Err(e) => Err(e),
            Ok(credential) => {
                let secret = credential.expose_secret();
                let mut accept = |e: &KeyEntry| inner.hasher.verify(secret, e.hash());
                let found = inner.store.find_now(credential.lookup(), &mut accept)?;
                if found
                    .as_deref()
                    .is_some_and(|e| Self::spends_credits(e, operation))
                {
                    return None;
                }
                self.principal_for(found, secret)
                    .and_then(|principal| self.charge_local(principal, operation, local))
            }
        };
        let class = operation.class.as_ref().map(|(i, _)| *i);
        telemetry::verification(&inner.labels, CredentialKind::ApiKey, class, &result);
        Some(result)
    }

    /// Spends the request's credits, last: only a request that passed every
    /// other check spends (one store write), and only once per request.
    async fn admit_credits(
        &self,
        mut principal: Principal,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        if operation.cost == 0
            || principal.credits.is_some()
            || principal.identity_credits.is_some()
        {
            return Ok(principal);
        }
        if let Some((key, identity)) = self.spend_in_limiter(&principal, operation.cost).await? {
            principal.credits = key;
            principal.identity_credits = identity;
            return Ok(principal);
        }
        let shared = principal
            .entry
            .identity()
            .is_some_and(|i| i.credits.is_some());
        let spent = if shared {
            self.spend_shared(&principal, operation.cost)
                .await
                .map(|(key, identity)| {
                    principal.credits = key;
                    principal.identity_credits = identity;
                })
        } else if principal.entry.credits().is_some() {
            self.spend_credits(&principal, operation.cost)
                .await
                .map(|key| principal.credits = key)
        } else {
            Ok(())
        };
        if let Err(e) = spent {
            if matches!(e, AuthError::UsageExceeded { .. }) {
                telemetry::credits_exhausted(&self.inner.labels);
            }
            return Err(e);
        }
        Ok(principal)
    }

    /// This service's identity, as recorded on the principals it verifies.
    pub(super) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// True when `principal` was verified by this service (not by another
    /// `ApiKeys` with its own profile and store).
    pub fn issued(&self, principal: &Principal) -> bool {
        principal.issuer == self.id()
    }

    /// Refines a principal already admitted for this request (by an outer
    /// layer) with a narrower operation: checks its scopes, and takes a token
    /// only if its class differs from the one already charged, so nested
    /// checks never verify or charge the same bucket twice. A principal
    /// another service verified is refused as [`AuthError::Invalid`]: its
    /// scopes were compiled against another catalog.
    pub async fn refine(
        &self,
        principal: Principal,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        if !self.issued(&principal) {
            return Err(AuthError::Invalid);
        }
        match &operation.class {
            Some((index, _)) if principal.charged != Some(*index) => {
                self.admit(principal, operation).await
            }
            _ => {
                if let Some(req) = &operation.requirement {
                    principal.check(req)?;
                }
                Ok(principal)
            }
        }
    }

    async fn take_token(
        &self,
        entry: &Arc<KeyEntry>,
        index: usize,
        class: &str,
    ) -> Result<Decision, AuthError> {
        let inner = &*self.inner;
        let quota = self
            .quota_of(entry.rate_limits(), index, class)
            .ok_or(AuthError::Unavailable)?;
        // State is keyed by the key's lineage, apart from the store's or
        // cache's entries: evicting a cached entry, resetting a secret or
        // rotating the key never refills a bucket.
        let lineage = entry.lineage().as_str();
        let result = match &inner.limiter {
            Limiter::Local(local) => return self.take_local_token(local, entry, index, quota),
            Limiter::Shared(shared) => shared.check(lineage, class, quota).await,
        };
        result.map_err(limiter_failed)
    }

    /// [`take_token`](Self::take_token) on the in-process limiter.
    fn take_local_token(
        &self,
        local: &LocalRateLimiter,
        entry: &Arc<KeyEntry>,
        index: usize,
        quota: &Quota,
    ) -> Result<Decision, AuthError> {
        let inner = &*self.inner;
        // The default limiter's buckets for this key are in one map here (a
        // shared limiter keeps its own); the entry keeps a handle so
        // repeated checks skip the map.
        let slot = entry.buckets.get_or_init(|| {
            self.sweep_detached();
            inner
                .detached
                .get_or_insert(entry.lineage().as_str(), inner.profile.rate_limits.len())
        });
        local.check_slot(slot, index, quota).map_err(limiter_failed)
    }

    /// Takes a token from an identity's shared bucket for a class, kept
    /// under the identity's id (ids start `idn_`, never a key's `key_`).
    async fn take_identity_token(
        &self,
        identity: &crate::Identity,
        index: usize,
        class: &str,
        quota: &Quota,
    ) -> Result<Decision, AuthError> {
        let inner = &*self.inner;
        let id = identity.id.as_str();
        let result = match &inner.limiter {
            Limiter::Local(local) => {
                return self.take_local_identity_token(local, identity, index, quota)
            }
            Limiter::Shared(shared) => shared.check(id, class, quota).await,
        };
        result.map_err(limiter_failed)
    }

    /// [`take_identity_token`](Self::take_identity_token) on the in-process limiter.
    fn take_local_identity_token(
        &self,
        local: &LocalRateLimiter,
        identity: &crate::Identity,
        index: usize,
        quota: &Quota,
    ) -> Result<Decision, AuthError> {
        let inner = &*self.inner;
        let slot = inner
            .detached
            .get_or_insert(identity.id.as_str(), inner.profile.rate_limits.len());
        local
            .check_slot(&slot, index, quota)
            .map_err(limiter_failed)
    }

    /// The quota a key with overrides `rate_limits` has for the class at
    /// `index` (named `class`): its own override, else the profile's.
    pub(super) fn quota_of<'a>(
        &'a self,
        rate_limits: &'a [(String, Quota)],
        index: usize,
        class: &str,
    ) -> Option<&'a Quota> {
        rate_limits
            .iter()
            .find(|(name, _)| name == class)
            .map(|(_, q)| q)
            .or_else(|| self.inner.profile.rate_limits.get(index).map(|c| c.quota()))
    }

    /// Drops idle detached slots now and then, so memory stays bounded by the
    /// keys in recent use.
    fn sweep_detached(&self) {
        let inner = &*self.inner;
        if inner.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            inner.detached.evict_idle(inner.clock.monotonic_nanos());
        }
    }

    /// Builds a requirement for one scope from the profile's catalog.
    pub fn requirement(&self, scope: &str) -> Result<Requirement, Error> {
        Ok(self.inner.profile.catalog.requirement(scope)?)
    }

    /// Checks that `principal` holds `scope`: [`AuthError::Forbidden`] (403) if not.
    /// A scope the catalog does not define is never held.
    pub fn check_scope(&self, principal: &Principal, scope: &str) -> Result<(), AuthError> {
        match self.inner.profile.catalog.requirement(scope) {
            Ok(req) => principal.check(&req),
            Err(_) => Err(AuthError::Forbidden {
                required: scope.to_owned(),
            }),
        }
    }

    /// Writes the last-used times recorded since the previous flush to the
    /// store in one batch; returns how many keys were written. Call it on an
    /// interval and at shutdown (the memory store needs no flush).
    pub async fn flush_last_used(&self) -> Result<usize, Error> {
        let batch: Vec<(KeyId, OffsetDateTime)> = self.inner.pending.lock().drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let written = self.inner.store.record_last_used(&batch).await;
        telemetry::flush("last_used", batch.len(), written.is_ok());
        if let Err(e) = written {
            // Put them back so the next flush retries; newer stamps win.
            let mut pending = self.inner.pending.lock();
            for (id, at) in batch {
                let slot = pending.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }
}

/// A limiter failure as the caller sees it: unavailable, never success.
fn limiter_failed(e: impl std::fmt::Display) -> AuthError {
    tracing::warn!(target: "keygate", error = %e, "rate limiter failed");
    AuthError::Unavailable
}
