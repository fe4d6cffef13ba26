//! Metrics (feature `metrics`): a scripted sequence of requests with
//! `metrics-util`'s debugging recorder installed, checked count by count,
//! and never a secret in a label.
#![cfg(all(feature = "sqlite", feature = "metrics"))]

mod telemetry_support;

use telemetry_support::{runtime, script};

mod metrics_recorder {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;

    use super::*;

    type Rows = Vec<(MetricKind, String, Vec<(String, String)>, DebugValue)>;

    fn value<'a>(rows: &'a Rows, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.sort();
        rows.iter()
            .find(|(_, n, l, _)| n == name && *l == want)
            .map(|(_, _, _, v)| v)
    }

    fn counter(rows: &Rows, name: &str, labels: &[(&str, &str)]) -> u64 {
        match value(rows, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            Some(other) => panic!("{name} {labels:?} is not a counter: {other:?}"),
            None => 0,
        }
    }

    fn samples(rows: &Rows, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match value(rows, name, labels) {
            Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
            Some(other) => panic!("{name} {labels:?} is not a histogram: {other:?}"),
            None => Vec::new(),
        }
    }

    fn verifications(rows: &Rows, outcome: &str, class: &str) -> u64 {
        counter(
            rows,
            "keygate_verifications_total",
            &[
                ("outcome", outcome),
                ("profile", "mailjawn"),
                ("kind", "api_key"),
                ("class", class),
            ],
        )
    }

    #[test]
    fn metrics_count_a_scripted_sequence_of_requests() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let script = metrics::with_local_recorder(&recorder, || runtime().block_on(script()));
        let rows: Rows = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let (kind, key) = key.into_parts();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                (kind, key.name().to_owned(), labels, value)
            })
            .collect();

        assert_eq!(verifications(&rows, "ok", "none"), 3);
        assert_eq!(verifications(&rows, "malformed_api_key", "none"), 1);
        assert_eq!(verifications(&rows, "invalid_api_key", "none"), 1);
        assert_eq!(verifications(&rows, "revoked_api_key", "none"), 1);
        assert_eq!(verifications(&rows, "ok", "send"), 10);
        assert_eq!(verifications(&rows, "rate_limited", "send"), 1);
        assert_eq!(verifications(&rows, "ok", "read"), 1);
        assert_eq!(verifications(&rows, "usage_exceeded", "read"), 1);
        let all: u64 = rows
            .iter()
            .filter(|(_, n, _, _)| n == "keygate_verifications_total")
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(all, 19, "every verification counted once");

        let rate_limited = &[("profile", "mailjawn"), ("class", "send")];
        assert_eq!(
            counter(&rows, "keygate_rate_limited_total", rate_limited),
            1
        );
        let credits = &[("profile", "mailjawn")];
        assert_eq!(
            counter(&rows, "keygate_credits_exhausted_total", credits),
            1
        );

        // a misses once, then hits (12); the stranger, b and c miss once each,
        // c's second read hits; one lookup bypasses the cache.
        assert_eq!(
            counter(
                &rows,
                "keygate_cache_lookups_total",
                &[("result", "bypass")]
            ),
            1
        );
        assert_eq!(
            counter(&rows, "keygate_cache_lookups_total", &[("result", "miss")]),
            4
        );
        assert_eq!(
            counter(&rows, "keygate_cache_lookups_total", &[("result", "hit")]),
            13
        );

        let flushed = &[("kind", "last_used"), ("outcome", "ok")];
        assert_eq!(counter(&rows, "keygate_flush_batches_total", flushed), 1);
        assert_eq!(
            samples(&rows, "keygate_flush_batch_keys", &[("kind", "last_used")]),
            [2.0]
        );

        // Every store call is timed: three inserts, one revoke, the misses
        // and the bypassed lookup, one credit spend refused and one taken.
        let timed = |op: &str| samples(&rows, "keygate_store_call_seconds", &[("op", op)]);
        assert_eq!(timed("insert_key").len(), 3);
        assert_eq!(timed("revoke_key").len(), 1);
        assert_eq!(timed("find_by_lookup").len(), 5);
        assert_eq!(timed("spend_credits").len(), 2);
        assert_eq!(timed("record_last_used").len(), 1);
        assert!(timed("insert_key").iter().all(|s| *s >= 0.0 && *s < 60.0));

        // No label carries a secret or any part of one beyond its prefix.
        for (_, name, labels, _) in &rows {
            for (k, v) in labels {
                for secret in &script.secrets {
                    assert!(
                        !secret.contains(v.as_str()) || v.len() < 4,
                        "{name} {k}={v}"
                    );
                }
            }
        }
    }
}
