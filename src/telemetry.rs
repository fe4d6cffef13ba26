//! Metrics and spans: what keygate reports to the `metrics` facade (feature
//! `metrics`) and as `tracing` spans (feature `spans`). Every function here
//! compiles to nothing when its feature is off, so the verify hot path pays
//! nothing for them; no label or field ever carries a secret or a lookup id.
//!
//! The names and labels are listed in the README's "Metrics and spans".

#[cfg(feature = "metrics")]
use std::sync::Arc;

use crate::error::AuthError;
use crate::profiles::Profile;
use crate::service::{CredentialKind, Principal};

/// Verifications, by `outcome`, `profile`, `kind` and `class`.
pub const VERIFICATIONS: &str = "keygate_verifications_total";
/// Requests refused by a rate limit, by `profile` and `class`.
pub const RATE_LIMITED: &str = "keygate_rate_limited_total";
/// Requests refused for want of credits, by `profile`.
pub const CREDITS_EXHAUSTED: &str = "keygate_credits_exhausted_total";
/// Store call latency in seconds (histogram), by `op`.
pub const STORE_CALL_SECONDS: &str = "keygate_store_call_seconds";
/// Cache lookups, by `result`: `hit`, `miss` or `bypass`.
pub const CACHE_LOOKUPS: &str = "keygate_cache_lookups_total";
/// Write-behind flushes, by `kind` (`last_used`, `rehash`) and `outcome`
/// (`ok`, `error`).
pub const FLUSH_BATCHES: &str = "keygate_flush_batches_total";
/// Keys per write-behind flush (histogram), by `kind`.
pub const FLUSH_BATCH_KEYS: &str = "keygate_flush_batch_keys";

/// Label values computed once per service, so recording clones an `Arc`
/// rather than allocating.
#[derive(Debug, Clone, Default)]
pub(crate) struct Labels {
    #[cfg(feature = "metrics")]
    profile: Option<Arc<str>>,
    #[cfg(feature = "metrics")]
    classes: Vec<Arc<str>>,
}

impl Labels {
    pub(crate) fn new(profile: &Profile) -> Self {
        #[cfg(feature = "metrics")]
        {
            let classes = (0..profile.rate_limits.len())
                .filter_map(|i| profile.rate_limits.get(i))
                .map(|c| Arc::from(c.name()))
                .collect();
            Self {
                profile: Some(Arc::from(profile.name.as_str())),
                classes,
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = profile;
            Self {}
        }
    }

    #[cfg(feature = "metrics")]
    fn profile(&self) -> metrics::SharedString {
        match &self.profile {
            Some(p) => metrics::SharedString::from(Arc::clone(p)),
            None => metrics::SharedString::const_str("unknown"),
        }
    }

    #[cfg(feature = "metrics")]
    fn class(&self, index: Option<usize>) -> metrics::SharedString {
        match index.and_then(|i| self.classes.get(i)) {
            Some(c) => metrics::SharedString::from(Arc::clone(c)),
            None => metrics::SharedString::const_str("none"),
        }
    }
}

#[cfg(feature = "metrics")]
fn kind_label(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::ApiKey => "api_key",
        #[allow(unreachable_patterns)]
        _ => "session",
    }
}

/// Records one verification's outcome (metric and span fields).
#[inline(always)]
pub(crate) fn verification(
    labels: &Labels,
    kind: CredentialKind,
    class: Option<usize>,
    result: &Result<Principal, AuthError>,
) {
    #[cfg(any(feature = "metrics", feature = "spans"))]
    {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        #[cfg(feature = "metrics")]
        metrics::counter!(VERIFICATIONS,
            "outcome" => outcome,
            "profile" => labels.profile(),
            "kind" => kind_label(kind),
            "class" => labels.class(class))
        .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = (labels, kind, class);
        #[cfg(feature = "spans")]
        {
            let span = tracing::Span::current();
            span.record("outcome", outcome);
            if let Ok(p) = result {
                span.record("key_id", p.key_id().as_str());
                span.record("account", p.account().as_str());
            }
        }
    }
    #[cfg(not(any(feature = "metrics", feature = "spans")))]
    let _ = (labels, kind, class, result);
}

/// Records a request refused by a rate limit.
#[inline(always)]
pub(crate) fn rate_limited(labels: &Labels, class: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!(RATE_LIMITED, "profile" => labels.profile(), "class" => labels.class(Some(class)))
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (labels, class);
}

/// Records a request refused for want of credits.
#[inline(always)]
pub(crate) fn credits_exhausted(labels: &Labels) {
    #[cfg(feature = "metrics")]
    metrics::counter!(CREDITS_EXHAUSTED, "profile" => labels.profile()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = labels;
}

/// Records one store call's latency.
#[cfg(feature = "metrics")]
fn store_call(op: &'static str, took: std::time::Duration) {
    metrics::histogram!(STORE_CALL_SECONDS, "op" => op).record(took.as_secs_f64());
}

/// Records a cache lookup: `hit`, `miss` or `bypass`.
#[inline(always)]
pub(crate) fn cache_lookup(result: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(CACHE_LOOKUPS, "result" => result).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// Records a write-behind flush of `keys` keys of `kind`.
#[inline(always)]
pub(crate) fn flush(kind: &'static str, keys: usize, ok: bool) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if ok { "ok" } else { "error" };
        metrics::counter!(FLUSH_BATCHES, "kind" => kind, "outcome" => outcome).increment(1);
        metrics::histogram!(FLUSH_BATCH_KEYS, "kind" => kind).record(keys as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, keys, ok);
}

/// Times a store call when metrics are on.
#[cfg(feature = "metrics")]
pub(crate) async fn timed<T>(op: &'static str, call: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = call.await;
    store_call(op, started.elapsed());
    out
}
