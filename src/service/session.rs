//! Session tokens as a second credential kind (feature `sessions`): a
//! verified token becomes a [`Principal`] of kind
//! [`CredentialKind::Session`], rate limited per user and scoped like its
//! account (a signed-in user acts with the account's full rights).

use std::sync::Arc;

use super::{ApiKeys, CredentialKind, Operation, Principal};
use crate::error::{AuthError, SessionReason};
use crate::hash::SecretHash;
use crate::scope::ScopeSet;
use crate::session::{SessionClaims, Sessions};
use crate::store::{KeyEntry, KeyId, KeyRecord};

impl ApiKeys {
    /// The session service this one accepts tokens from, if configured
    /// ([`ApiKeysBuilder::sessions`](super::ApiKeysBuilder::sessions)).
    pub fn sessions(&self) -> Option<&Sessions> {
        self.inner.sessions.as_ref()
    }

    /// Verifies a session token ([`Sessions::verify`]) and returns its
    /// principal ([`CredentialKind::Session`]). Without configured sessions
    /// every token is [`SessionReason::UnknownKey`].
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.verify", skip_all,
        fields(profile = %self.inner.profile.name, kind = "session", class = "none",
               outcome = tracing::field::Empty, key_id = tracing::field::Empty,
               account = tracing::field::Empty)))]
    pub async fn verify_session(&self, token: &str) -> Result<Principal, AuthError> {
        let result = self.verify_session_token(token).await;
        crate::telemetry::verification(&self.inner.labels, CredentialKind::Session, None, &result);
        result
    }

    /// [`verify_session`](Self::verify_session) without recording it.
    async fn verify_session_token(&self, token: &str) -> Result<Principal, AuthError> {
        let sessions = self.sessions().ok_or(AuthError::Session {
            reason: SessionReason::UnknownKey,
        })?;
        let claims = sessions.verify(token).await?;
        Ok(self.session_principal(&claims))
    }

    /// [`verify_session`](Self::verify_session), then the operation's scope
    /// check and rate-limit token, as [`verify_for`](Self::verify_for) does
    /// for keys. A user's sessions share one bucket per class.
    pub async fn verify_session_for(
        &self,
        token: &str,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        let result = match self.verify_session_token(token).await {
            Ok(principal) => self.admit(principal, operation).await,
            Err(e) => Err(e),
        };
        let class = operation.class.as_ref().map(|(i, _)| *i);
        crate::telemetry::verification(&self.inner.labels, CredentialKind::Session, class, &result);
        result
    }

    /// The principal a verified session stands for.
    fn session_principal(&self, claims: &SessionClaims) -> Principal {
        // Never stored and never compared: the record only carries the
        // session's identity through the same paths as a key's.
        let record = KeyRecord {
            id: KeyId::new(format!("ses_{}", claims.id())),
            account: claims.account().clone(),
            name: "session".into(),
            format: "session".into(),
            lookup: String::new(),
            hash: SecretHash::from_parts(u32::MAX, [0; 32]),
            bundle: None,
            scopes: Vec::new(),
            rate_limits: Vec::new(),
            created_at: claims.issued_at(),
            secret_set_at: claims.issued_at(),
            expires_at: Some(claims.expires_at()),
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
            lineage: Some(KeyId::new(format!("session:{}", claims.subject()))),
            disabled_at: None,
            metadata: Default::default(),
            credits: None,
            identity: None,
        };
        Principal {
            entry: Arc::new(KeyEntry::new(record)),
            scopes: ScopeSet::ALL,
            rate_limit: None,
            charged: None,
            credits: None,
            identity_credits: None,
            issuer: self.id(),
            kind: CredentialKind::Session,
            subject: Some(claims.subject().into()),
        }
    }
}
