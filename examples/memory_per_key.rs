//! How much memory the in-memory store takes per key: creates N keys
//! (default 1,000,000) on a `MemoryStore`, verifies each once (so every
//! key's in-process state exists, as on a busy server), and prints the
//! growth of the process's resident memory divided by N.
//!
//! ```console
//! cargo run --release --example memory_per_key -- 1000000
//! ```
//!
//! Resident memory is read from `/proc/self/statm`, so this reports only on
//! Linux.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use keygate::{profiles, AccountId, ApiKeys, CreateKey};

/// The output of a future that is ready at its first poll, as every call
/// on the memory store is.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the memory store never waits"),
    }
}

/// Resident memory in bytes, if the platform says.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // 4 KiB pages: the size on every Linux target keygate is tested on.
    Some(pages * 4096)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1_000_000,
    };
    let api = ApiKeys::in_memory(profiles::mailjawn())?;
    let org = AccountId::new("org_1")?;
    let keys = api.operator();
    // Warm up allocator and runtime state before the baseline.
    let first = ready(keys.create(&org, CreateKey::new("warm-up").bundle("sdk")))?;
    ready(api.verify(first.key.expose_secret()))?;
    let Some(before) = resident_bytes() else {
        println!("resident memory is only read on Linux (/proc/self/statm)");
        return Ok(());
    };
    for i in 0..n {
        let new = ready(keys.create(&org, CreateKey::new(format!("key {i}")).bundle("sdk")))?;
        ready(api.verify(new.key.expose_secret()))?;
    }
    let after = resident_bytes().unwrap_or(before);
    let grown = after.saturating_sub(before);
    println!(
        "{n} keys: resident memory grew by {:.1} MiB, {} bytes per key",
        grown as f64 / (1024.0 * 1024.0),
        grown / n.max(1) as u64
    );
    Ok(())
}
