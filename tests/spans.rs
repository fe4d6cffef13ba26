//! Spans (feature `spans`): the same scripted requests under a
//! span-capturing `tracing` subscriber, checked name by name and field by
//! field, and never a secret in a field. Its own test binary, so no other
//! test's dispatcher shares the callsites' cached interest.
#![cfg(all(feature = "sqlite", feature = "spans"))]

mod telemetry_support;

use std::sync::Arc;

use telemetry_support::{runtime, script};

mod spans {
    use std::fmt;

    use parking_lot::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use super::*;

    /// One span: its id, name and fields (as recorded, in order).
    type Captured = (u64, String, Vec<(String, String)>);

    /// Every span.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Captured>>>);

    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
            let mut fields = Vec::new();
            attrs.record(&mut Fields(&mut fields));
            let name = attrs.metadata().name().to_owned();
            self.0.lock().push((id.into_u64(), name, fields));
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            let mut spans = self.0.lock();
            if let Some(span) = spans.iter_mut().rev().find(|s| s.0 == id.into_u64()) {
                values.record(&mut Fields(&mut span.2));
            }
        }
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn spans_name_every_verify_and_management_call_without_secrets() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let script = tracing::subscriber::with_default(subscriber, || runtime().block_on(script()));
        let spans = capture.0.lock().clone();

        let verifies: Vec<_> = spans.iter().filter(|s| s.1 == "keygate.verify").collect();
        assert_eq!(verifies.len(), 19);
        let outcomes: Vec<&str> = verifies
            .iter()
            .map(|s| field(&s.2, "outcome").expect("every verify span records its outcome"))
            .collect();
        assert_eq!(outcomes.iter().filter(|o| **o == "ok").count(), 14);
        assert_eq!(outcomes.iter().filter(|o| **o == "rate_limited").count(), 1);
        for (_, _, fields) in &verifies {
            assert_eq!(field(fields, "profile"), Some("mailjawn"));
            assert_eq!(field(fields, "kind"), Some("api_key"));
            if field(fields, "outcome") == Some("ok") {
                assert!(field(fields, "key_id").is_some_and(|k| k.starts_with("key_")));
                assert_eq!(field(fields, "account"), Some("org_tel"));
            }
        }
        let classes: Vec<&str> = verifies
            .iter()
            .filter_map(|s| field(&s.2, "class"))
            .collect();
        assert_eq!(classes.iter().filter(|c| **c == "send").count(), 11);
        assert_eq!(classes.iter().filter(|c| **c == "read").count(), 2);

        let manages: Vec<(&str, &[(String, String)])> = spans
            .iter()
            .filter(|s| s.1 == "keygate.manage")
            .map(|s| (field(&s.2, "op").unwrap(), s.2.as_slice()))
            .collect();
        let ops: Vec<&str> = manages.iter().map(|(op, _)| *op).collect();
        assert_eq!(ops, ["create", "create", "create", "revoke"]);
        assert_eq!(field(manages[0].1, "account"), Some("org_tel"));
        assert!(field(manages[3].1, "key_id").is_some_and(|k| k.starts_with("key_")));

        // No span field holds a secret, or the secret part of one.
        for (_, name, fields) in &spans {
            for (k, v) in fields {
                for secret in &script.secrets {
                    assert!(!v.contains(secret.as_str()), "{name} {k}");
                    assert!(!v.contains(&secret[8..]), "{name} {k}");
                }
            }
        }
    }
}
