//! Audit events: who created, revoked, rotated or reset which key, and when.
//!
//! Every management call emits one [`AuditEvent`] through an [`AuditSink`].
//! The default sink, [`TracingAudit`], writes a `tracing` event at INFO level
//! with target `keygate::audit`. Events carry ids only, never a secret.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{AccountId, KeyId};

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum AuditKind {
    /// A key was created.
    Created,
    /// A key was revoked.
    Revoked,
    /// A key was rotated; `replacement` is the new key.
    Rotated {
        /// The key that replaces it.
        replacement: KeyId,
    },
    /// A key's secret was reset under the same id.
    SecretReset,
    /// A key was disabled (reversible).
    Disabled,
    /// A disabled key was enabled again.
    Enabled,
    /// A key's name, metadata, expiry, limits or scopes changed.
    Updated,
}

/// One management action on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// What happened.
    #[serde(flatten)]
    pub kind: AuditKind,
    /// The key it happened to.
    pub key_id: KeyId,
    /// The account that owns the key.
    pub account: AccountId,
    /// The account that asked for it (the parent, for sub-account keys);
    /// `None` when a trusted operator acted ([`Actor::Operator`](crate::Actor::Operator)).
    pub actor: Option<AccountId>,
    /// The key that asked for it, when a key acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_key: Option<KeyId>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Receives audit events. Implement it to ship events to your own log or table.
pub trait AuditSink: Send + Sync + std::fmt::Debug + 'static {
    /// Records one event. Must not block for long: it runs inside management calls.
    fn record(&self, event: &AuditEvent);

    /// False when the sink would discard every event, so none is built.
    /// The default is true; [`TracingAudit`] answers whether its `tracing`
    /// event is enabled.
    fn enabled(&self) -> bool {
        true
    }
}

/// The default sink: one `tracing` INFO event per audit event.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn enabled(&self) -> bool {
        tracing::enabled!(target: "keygate::audit", tracing::Level::INFO)
    }

    fn record(&self, event: &AuditEvent) {
        tracing::info!(
            target: "keygate::audit",
            kind = ?event.kind,
            key_id = %event.key_id,
            account = %event.account,
            actor = event.actor.as_ref().map_or("operator", AccountId::as_str),
            actor_key = event.actor_key.as_ref().map(KeyId::as_str),
            at = %event.at,
            "api key event"
        );
    }
}

/// A sink that keeps events in memory; handy in tests and small services.
#[derive(Debug, Clone, Default)]
pub struct MemoryAudit {
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

impl MemoryAudit {
    /// An empty log. Clones share the same events.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events recorded so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().clone()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, event: &AuditEvent) {
        self.events.lock().push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{profiles, AccountId, ApiKeys, CreateKey};

    #[test]
    fn the_tracing_sink_is_enabled_only_when_its_event_is_wanted() {
        let quiet = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::with_default(quiet, || assert!(!TracingAudit.enabled()));
        let listening = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(listening, || assert!(TracingAudit.enabled()));
    }

    #[test]
    fn a_created_key_is_audited_at_its_creation_time() {
        let audit = MemoryAudit::new();
        let api = ApiKeys::builder(profiles::mailjawn())
            .audit(audit.clone())
            .build()
            .unwrap();
        let org = AccountId::new("org_audit").unwrap();
        let created = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(
                api.operator()
                    .create(&org, CreateKey::new("ci").bundle("sdk")),
            )
            .unwrap();
        let events = audit.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, AuditKind::Created);
        assert_eq!(events[0].key_id, created.info.id);
        assert_eq!(events[0].account, org);
        assert_eq!(events[0].at, created.info.created_at);
    }
}
