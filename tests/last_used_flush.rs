//! Two service instances flushing last-used times for overlapping sets of
//! keys at the same moment, on one database: every flush must succeed (no
//! deadlock, no busy error) and every key must end with its latest time.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::hash::SecretHash;
use keygate::store::KeyRecord;
use keygate::{AccountId, KeyId, KeyStore};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use support::at;
use time::OffsetDateTime;

/// Keys in the table; each flusher's batches cover 200 of them, drawn from
/// ranges that overlap in the middle.
const KEYS: usize = 300;
const BATCH: usize = 200;
const RUN_FOR: Duration = Duration::from_secs(10);
/// Bounds the loop even on a machine fast enough to go on for a long time.
const MAX_ROUNDS: usize = 20_000;

fn key_id(n: usize) -> KeyId {
    KeyId::new(format!("key_{n:06}"))
}

fn key(n: usize) -> KeyRecord {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&(n as u64).to_be_bytes());
    support::key_record(
        key_id(n),
        AccountId::new("org_flush").expect("valid account id"),
        format!("key {n}"),
        format!("lk{n:06}"),
        SecretHash::from_parts(1, digest),
    )
}

/// What one flusher did: the errors it saw, and the latest time it wrote
/// successfully for each key.
struct Outcome {
    rounds: usize,
    errors: Vec<String>,
    latest: HashMap<usize, i64>,
}

/// Flushes batches of `BATCH` keys from `range` through `store`, each with
/// later times than the last (odd or even milliseconds, so that the two
/// flushers never write the same time), in a shuffled order with some keys
/// repeated, as a service's batch of uses would be.
async fn flusher(
    store: Arc<dyn KeyStore>,
    range: std::ops::Range<usize>,
    parity: i64,
    seed: u64,
) -> Outcome {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pool: Vec<usize> = range.collect();
    let mut outcome = Outcome {
        rounds: 0,
        errors: Vec::new(),
        latest: HashMap::new(),
    };
    let started = Instant::now();
    while started.elapsed() < RUN_FOR && outcome.rounds < MAX_ROUNDS {
        let round = outcome.rounds as i64;
        let mut batch: Vec<(usize, i64)> = pool
            .choose_multiple(&mut rng, BATCH)
            .map(|&n| {
                (
                    n,
                    1_000 + round * 1_000 + 2 * rng.gen_range(0..400) + parity,
                )
            })
            .collect();
        // A key used twice in one batch: the later use must win.
        let again = batch[0].0;
        batch.push((again, batch[0].1 - 2));
        batch.shuffle(&mut rng);
        let uses: Vec<(KeyId, OffsetDateTime)> =
            batch.iter().map(|&(n, ms)| (key_id(n), at(ms))).collect();
        match store.record_last_used(&uses).await {
            Ok(()) => {
                for (n, ms) in batch {
                    let latest = outcome.latest.entry(n).or_insert(ms);
                    *latest = (*latest).max(ms);
                }
            }
            Err(e) => outcome.errors.push(e.to_string()),
        }
        outcome.rounds += 1;
    }
    outcome
}

/// Runs two flushers at once, one per store (two pools on one database), and
/// checks that no flush failed and that each key holds the latest time
/// either of them wrote.
async fn two_flushers_agree(a: Arc<dyn KeyStore>, b: Arc<dyn KeyStore>) {
    for n in 0..KEYS {
        a.insert_key(key(n), None, at(0)).await.expect("insert");
    }
    let first = tokio::spawn(flusher(a.clone(), 0..KEYS - 50, 0, 1));
    let second = tokio::spawn(flusher(b, 50..KEYS, 1, 2));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    let errors: Vec<&String> = first.errors.iter().chain(&second.errors).collect();
    eprintln!(
        "{} + {} flushes of {BATCH} keys, {} failed",
        first.rounds,
        second.rounds,
        errors.len()
    );
    assert!(first.rounds > 0 && second.rounds > 0);
    assert!(
        errors.is_empty(),
        "{} of {} flushes failed, first: {}",
        errors.len(),
        first.rounds + second.rounds,
        errors[0]
    );
    for n in 0..KEYS {
        let expected = [first.latest.get(&n), second.latest.get(&n)]
            .into_iter()
            .flatten()
            .max()
            .map(|&ms| at(ms));
        let entry = a.get_key(&key_id(n)).await.unwrap().expect("key exists");
        assert_eq!(entry.last_used(), expected, "key {n}");
    }
}

/// `url` with every connection using the generic plan for prepared
/// statements. A pool switches to it by itself after a few executions of a
/// statement; for the batch UPDATE that plan scans the table and locks rows in
/// heap order, which is what let concurrent flushes deadlock. Forcing it makes
/// every run exercise that plan from the first flush.
#[cfg(feature = "postgres")]
fn with_generic_plans(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options[plan_cache_mode]=force_generic_plan")
}

#[cfg(feature = "postgres")]
pub(crate) async fn postgres_flushers_with_overlapping_batches_never_deadlock() {
    let Some(pg) = support::postgres_store().await else {
        return;
    };
    let url = with_generic_plans(pg.url());
    let mut stores = Vec::new();
    for _ in 0..2 {
        let store = keygate::PostgresStore::connect_with_schema(&url, pg.schema())
            .await
            .expect("a pool of its own on the test schema");
        let plan: String = sqlx::query_scalar("SHOW plan_cache_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(plan, "force_generic_plan");
        stores.push(store);
    }
    two_flushers_agree(Arc::new(stores[0].clone()), Arc::new(stores[1].clone())).await;
    for store in stores {
        store.pool().close().await;
    }
    pg.cleanup().await;
}

#[cfg(feature = "sqlite")]
pub(crate) async fn sqlite_flushers_with_overlapping_batches_never_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.db");
    let a = keygate::SqliteStore::open(&path).await.expect("open");
    a.migrate().await.expect("migrate");
    let b = keygate::SqliteStore::open(&path).await.expect("open again");
    two_flushers_agree(Arc::new(a), Arc::new(b)).await;
}

fn main() -> std::process::ExitCode {
    use support::harness::Rt;
    let mut trials = Vec::new();
    trials.extend(trials![
        tokio(Rt::multi(2)) postgres_flushers_with_overlapping_batches_never_deadlock,
        tokio(Rt::multi(2)) sqlite_flushers_with_overlapping_batches_never_fail,
    ]);
    support::harness::run(trials)
}
