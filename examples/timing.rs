//! A dudect-style timing check of verify: can the time a wrong secret takes
//! to be refused tell where it differs from the right one?
//!
//! For a single-token key (MailJawn) and a key pair (Mailjet) it measures
//! verifies of two classes of wrong secret under the right lookup id,
//! interleaved in random order so drift and noise fall on both alike:
//!
//! - *first vs last*: one secret differs from the key in the first hidden
//!   character, the other in the last (tokens keep a valid checksum, so both
//!   reach the hash comparison);
//! - *fixed vs random*: one fixed wrong secret against a fresh random one each
//!   time (dudect's classic pair of classes).
//!
//! Each class gets `SAMPLES` measurements (100 000 unless the first argument
//! says otherwise); the slowest 5 % of the pooled samples are cropped as
//! preemption noise, and Welch's t compares the rest. |t| >= 4.5 means the
//! classes can be told apart, and the program exits with status 1.
//!
//! Run it with `cargo run --example timing` (or `--release` for the
//! optimised code; the comparison is constant-time in both).

use std::hint::black_box;
use std::time::Instant;

use keygate::{profiles, AccountId, ApiKeys, CreateKey, Profile};
use rand::Rng;

/// The dudect threshold: above it the two classes differ.
const THRESHOLD: f64 = 4.5;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_LEN: usize = 6;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut worst: f64 = 0.0;
    for (kind, profile) in [
        ("token", profiles::mailjawn()),
        ("pair", profiles::mailjet()),
    ] {
        let key = rt.block_on(issue(profile.clone()))?;
        let (api, right) = key;
        let wrong_at = |i: usize| -> String { change(&right, kind, i) };
        let hidden = hidden_range(&right, kind, &api);
        let first = wrong_at(hidden.start);
        let last = wrong_at(hidden.end - 1);
        for f in [&first, &last] {
            if rt.block_on(api.verify(f)).is_ok() || api.parse(f).is_err() {
                return Err("a changed secret must parse and be refused".into());
            }
        }
        let t = measure(&rt, &api, samples, |class, _| {
            if class == 0 {
                first.clone()
            } else {
                last.clone()
            }
        });
        println!(
            "{kind:<5} first vs last hidden character: t = {t:+.2} ({samples} samples per class)"
        );
        worst = worst.max(t.abs());

        let t = measure(&rt, &api, samples, |class, rng| {
            if class == 0 {
                first.clone()
            } else {
                let i = rng.gen_range(hidden.clone());
                let mut s = right.clone();
                // A random secret under the same lookup id.
                for j in i..hidden.end {
                    s = change_with(&s, kind, j, rng.gen());
                }
                s
            }
        });
        println!(
            "{kind:<5} fixed vs random wrong secret:   t = {t:+.2} ({samples} samples per class)"
        );
        worst = worst.max(t.abs());
    }
    if worst >= THRESHOLD {
        println!("timing differs: |t| = {worst:.2} >= {THRESHOLD}");
        std::process::exit(1);
    }
    println!("no timing difference found: max |t| = {worst:.2} < {THRESHOLD}");
    Ok(())
}

/// A service on `profile` and one key, in the text `verify` takes.
async fn issue(profile: Profile) -> Result<(ApiKeys, String), Box<dyn std::error::Error>> {
    let api = ApiKeys::in_memory(profile)?;
    let org = AccountId::new("org_timing")?;
    let created = api
        .operator()
        .create(&org, CreateKey::new("timing").all_scopes())
        .await?;
    let text = if created.info.format == "pair" {
        format!("{}:{}", created.key.lookup(), created.key.expose_secret())
    } else {
        created.key.expose_secret().to_owned()
    };
    api.verify(&text).await?;
    Ok((api, text))
}

/// The byte positions of the secret that are not part of the lookup id (and,
/// for tokens, not the checksum).
fn hidden_range(key: &str, kind: &str, api: &ApiKeys) -> std::ops::Range<usize> {
    let lookup = api.parse(key).expect("the key parses").lookup().len();
    match kind {
        "pair" => lookup + 1..key.len(),
        _ => lookup..key.len() - CHECKSUM_LEN,
    }
}

/// `key` with the character at `i` replaced by the next one in its alphabet.
fn change(key: &str, kind: &str, i: usize) -> String {
    change_with(key, kind, i, 1)
}

/// `key` with the character at `i` moved `step` places along its alphabet
/// (never onto itself), the checksum recomputed for tokens.
fn change_with(key: &str, kind: &str, i: usize, step: u8) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let alphabet: &[u8] = if kind == "pair" {
        b"0123456789abcdef"
    } else {
        BASE62
    };
    let at = alphabet
        .iter()
        .position(|&c| c == bytes[i])
        .expect("key alphabet");
    let step = 1 + usize::from(step) % (alphabet.len() - 1);
    bytes[i] = alphabet[(at + step) % alphabet.len()];
    if kind != "pair" {
        let data_len = bytes.len() - CHECKSUM_LEN;
        let sum = checksum(&bytes[..data_len]);
        bytes[data_len..].copy_from_slice(&sum);
    }
    String::from_utf8(bytes).expect("ASCII")
}

/// The token checksum: CRC32 as 6 base62 digits, most significant first.
fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Welch's t between the verify times of class 0 and class 1, each measured
/// `samples` times in random order.
fn measure(
    rt: &tokio::runtime::Runtime,
    api: &ApiKeys,
    samples: usize,
    mut input: impl FnMut(usize, &mut rand::rngs::ThreadRng) -> String,
) -> f64 {
    let mut rng = rand::thread_rng();
    let mut classes: Vec<usize> = (0..samples)
        .map(|_| 0)
        .chain((0..samples).map(|_| 1))
        .collect();
    rand::seq::SliceRandom::shuffle(&mut classes[..], &mut rng);
    // Every input is made before the clock starts, each in its own
    // allocation, so both classes read their text from memory alike.
    let inputs: Vec<String> = classes.iter().map(|&c| input(c, &mut rng)).collect();
    // Warm up caches and branch predictors.
    for text in inputs.iter().take(2_000) {
        let _ = black_box(rt.block_on(api.verify(black_box(text))));
    }
    let mut times: Vec<(usize, u64)> = Vec::with_capacity(classes.len());
    for (&class, text) in classes.iter().zip(&inputs) {
        let start = Instant::now();
        let result = rt.block_on(api.verify(black_box(text)));
        let elapsed = start.elapsed().as_nanos() as u64;
        assert!(result.is_err(), "a wrong secret verified");
        times.push((class, elapsed));
    }
    let mut sorted: Vec<u64> = times.iter().map(|&(_, t)| t).collect();
    sorted.sort_unstable();
    let cut = sorted[sorted.len() * 95 / 100];
    let mut stats = [Welford::default(), Welford::default()];
    for (class, t) in times {
        if t <= cut {
            stats[class].push(t as f64);
        }
    }
    welch_t(&stats[0], &stats[1])
}

/// Running mean and variance (Welford).
#[derive(Default)]
struct Welford {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }

    fn variance(&self) -> f64 {
        self.m2 / (self.n - 1.0)
    }
}

fn welch_t(a: &Welford, b: &Welford) -> f64 {
    (a.mean - b.mean) / (a.variance() / a.n + b.variance() / b.n).sqrt()
}
